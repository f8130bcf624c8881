//! The platform contract: what each platform (hvt, kvm, xen) gives the runtime.
//!
//! Kept small on purpose (DESIGN.md): console, clocks, a way to block until a
//! deadline, the memory map and app image (in [`BootInfo`]), shutdown, and the
//! few privileged operations the runtime cannot do itself when it runs at
//! ring 3 (TLB flushes). A new platform is a new folder implementing this.

/// Which console stream a write goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// A range of physical memory `[start, end)`, page aligned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemRange {
    pub start: u64,
    pub end: u64,
}

pub const MAX_FREE_RANGES: usize = 8;

/// Where the app was placed and how its first thread starts.
#[derive(Clone, Copy, Debug)]
pub struct AppImage {
    /// Entry point (absolute).
    pub entry: u64,
    /// Initial stack pointer, pointing at argc (the platform built argv/envp/auxv).
    pub stack_pointer: u64,
    /// `[base, end)` holds the app's segments (identity-mapped RAM).
    pub base: u64,
    pub end: u64,
    /// Main-thread stack region `[stack_reserve_bottom, stack_top)`; only
    /// `[stack_mapped_bottom, stack_top)` has frames at start, the rest grows on demand.
    pub stack_top: u64,
    pub stack_mapped_bottom: u64,
    pub stack_reserve_bottom: u64,
    /// The app's name (argv[0] without the leading '/').
    pub name: &'static str,
}

/// The app to start when no monitor prepared its stack: the runtime maps
/// the stack region and writes argc/argv/envp/auxv itself.
#[derive(Clone, Debug, Default)]
pub struct AppSpec {
    /// argv (argv[0] included) and envp ("KEY=VALUE").
    pub argv: alloc::vec::Vec<alloc::string::String>,
    pub envp: alloc::vec::Vec<alloc::string::String>,
    /// AT_PHDR, AT_PHENT, AT_PHNUM.
    pub phdr: u64,
    pub phent: u64,
    pub phnum: u64,
}

/// What the platform found at boot.
#[derive(Clone, Debug)]
pub struct BootInfo {
    /// RAM size; `[0, mem_size)` is identity-mapped (virtual == physical).
    pub mem_size: u64,
    /// Frames the runtime may use.
    pub free: [MemRange; MAX_FREE_RANGES],
    pub free_count: usize,
    /// Physical address of the root page table (PML4).
    pub page_table_root: u64,
    /// Stack the runtime runs system calls on (top, bottom).
    pub kernel_stack_top: u64,
    pub kernel_stack_bottom: u64,
    /// Stack the runtime reports its own faults on (at ring 3).
    pub fault_stack_top: u64,
    /// The kernel image `[kernel_start, kernel_end)`: code there is the runtime's.
    pub kernel_start: u64,
    pub kernel_end: u64,
    pub trace_syscalls: bool,
    pub app: AppImage,
    /// Set when the runtime must build the app's initial stack itself
    /// (`app.stack_pointer` and `app.stack_mapped_bottom` are then ignored).
    pub app_spec: Option<AppSpec>,
    /// Runtime options, `UNIKERNEL_<NAME>=VALUE` each (read with
    /// [`crate::option`]): the image manifest's defaults with the
    /// platform's overrides (kvm/xen: the command line's `UNIKERNEL_*`
    /// tokens; hvt: what the monitor passed) replacing them by key.
    pub options: alloc::vec::Vec<alloc::string::String>,
    /// The image's declared data volumes, `NAME=MOUNT` each, as the
    /// manifest keeps them (`unikernel_image::disks`).
    pub disks: alloc::vec::Vec<alloc::string::String>,
    /// Guest address and length of the embedded-files archive
    /// (`unikernel_image::files`; both 0: none). The platform loaded it
    /// with the app; the runtime checks it lies inside the app's range.
    pub files_addr: u64,
    pub files_len: u64,
}

/// A segment base the runtime sets (see [`Platform::set_segment_base`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentBase {
    /// The app's TLS pointer.
    Fs,
    /// The runtime's per-CPU block (the app never uses GS).
    Gs,
}

/// A clock the vDSO can read at user level ([`Platform::vdso_clock`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VdsoClock {
    /// TSC-linear: monotonic ns = `((rdtsc - boot_tsc) * mult) >> 32`.
    Tsc {
        /// The TSC value at which the monotonic clock reads 0.
        boot_tsc: u64,
        /// Nanoseconds per TSC tick, times 2^32.
        mult: u64,
        /// Realtime minus monotonic, in nanoseconds.
        wall_offset_ns: i64,
    },
    /// A pvclock structure (Xen's `vcpu_time_info`, KVM's kvmclock; one
    /// layout) the app can read at `addr`: monotonic ns = its reading
    /// minus `origin_ns`. The vDSO uses it only while its flags say
    /// `PVCLOCK_TSC_STABLE_BIT`.
    PvClock {
        addr: u64,
        origin_ns: u64,
        /// Realtime minus monotonic, in nanoseconds.
        wall_offset_ns: i64,
    },
}

/// Implemented once per platform; a `&'static dyn Platform` is handed to
/// [`crate::start`].
pub trait Platform: Sync {
    /// Short name ("hvt", "kvm", "xen").
    fn name(&self) -> &'static str;
    /// Write bytes to the console. `data` lies in identity-mapped kernel memory.
    fn console_write(&self, stream: Stream, data: &[u8]);
    /// Read console input into `buf` (identity-mapped), blocking; 0 = end of input.
    fn console_read(&self, buf: &mut [u8]) -> usize;
    /// Nanoseconds since boot; never goes backwards.
    fn monotonic_ns(&self) -> u64;
    /// Nanoseconds since the Unix epoch.
    fn wall_clock_ns(&self) -> u64;
    /// The clock as the vDSO may read it without the kernel:
    /// [`Platform::monotonic_ns`] must be exactly what the [`VdsoClock`]
    /// formula gives and [`Platform::wall_clock_ns`] that plus
    /// `wall_offset_ns`, so the app reads the same time either way. `None`
    /// (the default): the vDSO's functions make system calls.
    fn vdso_clock(&self) -> Option<VdsoClock> {
        None
    }
    /// Block until `monotonic_ns() >= deadline` or a device event arrives
    /// (may return early; callers re-check).
    fn block_until(&self, deadline_ns: u64);
    /// Stop the machine with an exit code.
    fn halt(&self, exit_code: u32) -> !;
    /// The stack of the fault or panic about to end the guest, innermost
    /// first (`frames[0]` the faulting instruction when `fault`; bit i of
    /// `guessed`: frame i came from a stack scan), and the app's load base.
    /// A platform whose host can take it (hvt: the halt call's crash
    /// record) keeps it for [`Platform::halt`]; the crash line on the
    /// console is printed either way.
    fn note_crash(&self, _fault: bool, _frames: &[u64], _guessed: u32, _app_base: u64) {}
    /// A debugger is attached (hvt `--gdb`): see [`crate::debug`].
    fn debugger(&self) -> bool {
        false
    }
    /// The debugger asked the app to stop (gdb's Ctrl-C); taking the
    /// request clears it.
    fn debug_interrupt(&self) -> bool {
        false
    }
    /// Hand a stop to the debugger and wait for it; `stop` then holds the
    /// registers it left.
    fn debug_stop(&self, _stop: &mut crate::debug::Stop) -> crate::debug::Resume {
        crate::debug::Resume::Continue
    }
    /// Drop the TLB entry for one virtual page (privileged).
    fn flush_tlb_page(&self, va: u64);
    /// Drop all non-global TLB entries (privileged).
    fn flush_tlb_all(&self);
    /// The most pages one operation invalidates one by one; beyond it, one
    /// [`Self::flush_tlb_all`] (at most 8). A platform where every
    /// privileged instruction is a trip through an emulated ring 0 (hvt on
    /// kvm-pvm) says 1: a full flush costs what one page's does.
    fn tlb_flush_pages_max(&self) -> usize {
        8
    }
    /// Arm the one-shot timer: interrupt [`crate::sched::TICK_VECTOR`] (32)
    /// once, when `monotonic_ns() >= deadline_ns` (at once if that has
    /// passed); `None` disarms it. Each call replaces the previous
    /// deadline. Called by the scheduler (never from an interrupt stub),
    /// only once the app has a reason to be interrupted: a lone thread that
    /// sleeps never arms it.
    ///
    /// The runtime re-checks the time on every timer interrupt, so a
    /// platform may deliver it late (its host's timer latency), early, or
    /// spuriously (a disarmed or replaced deadline that already fired);
    /// it must never lose one whose deadline passed. A platform whose
    /// [`Platform::block_until`] uses the same hardware timer may let it
    /// clobber the deadline: the scheduler re-arms after every idle wait.
    fn set_timer(&self, deadline_ns: Option<u64>);
    /// Acknowledge interrupt `vector`: the runtime has taken it (LAPIC EOI;
    /// on hvt, for the timer, it stops the monitor's resend); nothing where
    /// the platform needs no acknowledgement.
    fn end_of_interrupt(&self, _vector: u8) {}

    // Paravirtualised platforms (Xen PV) below: the defaults are what a
    // platform with real page tables, an IDT and `sysretq` needs (hvt, kvm).

    /// The page-table entry address field that names physical frame
    /// `phys` (Xen PV: its machine frame).
    fn phys_to_pte(&self, phys: u64) -> u64 {
        phys
    }
    /// The physical address of the frame an entry's address field names
    /// (`entry & ADDR_MASK`; Xen PV: through the machine-to-physical table).
    fn pte_to_phys(&self, addr: u64) -> u64 {
        addr
    }
    /// Store `value` in the page-table entry at `entry` (Xen PV: `mmu_update`).
    ///
    /// # Safety
    /// `entry` points at an entry of a live page table; the caller flushes
    /// the TLB as needed.
    unsafe fn write_pte(&self, entry: *mut u64, value: u64) {
        // SAFETY: forwarded from the caller.
        unsafe { entry.write_volatile(value) }
    }
    /// A zeroed frame is about to become a page table (Xen PV: its own
    /// mapping must become read-only first).
    fn prepare_table_frame(&self, _phys: u64) {}
    /// The current thread's kernel stack changed to `top` (Xen PV:
    /// `stack_switch`, where entries from user mode land).
    fn set_kernel_stack(&self, _top: u64) {}
    /// Set a segment base if the platform does it itself (Xen PV:
    /// `set_segment_base`); false = the runtime uses the instructions/MSRs.
    fn set_segment_base(&self, _which: SegmentBase, _value: u64) -> bool {
        false
    }
    /// Address of the platform's return-to-app stub, or 0 to return with
    /// `sysretq`/`jmp` (see `arch::x86_64::entry`). The stub is jumped to
    /// with the app's registers restored, rcx = rip, r11 = rflags and
    /// `%rsp` pointing at the app's stack pointer.
    fn user_return_stub(&self) -> u64 {
        0
    }
    /// Resume the app context `frame` (after a fault, an interrupt or a
    /// signal). The default works at ring 0 and ring 3 with an IDT.
    fn resume_user(&self, frame: &crate::arch::x86_64::TrapFrame) -> ! {
        crate::arch::x86_64::trap::resume_native(frame)
    }
}
