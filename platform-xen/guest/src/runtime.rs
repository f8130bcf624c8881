//! The runtime on Xen PV: `xen_main` for images built with
//! `cargo unikernel build --platform xen`, and the [`Platform`] the runtime
//! runs on.
//!
//! A boot continues here after `boot::xen_start` (console, shared info,
//! trap table, timer port, all of RAM mapped):
//!
//! 1. the free RAM above the new page tables goes to the runtime's frame
//!    allocator (the heap needs it for what follows);
//! 2. the manifest is read from the boot-manifest segment the builder put
//!    at `__kernel_end` (u32 length + bytes, as for kvm), the command line
//!    (`KEY=VALUE ... -- ARG ...`, the kvm format) from `start_info`;
//! 3. the syscall callback is re-registered with events masked, and the
//!    runtime starts: it builds the app's stack and enters it in guest user
//!    mode through [`xen_user_return`].
//!
//! How the runtime's assumptions map to PV (docs/xen.md, integration plan):
//! page-table entries hold machine frames and are written by `mmu_update`
//! (the `Platform` page-table hooks); a `syscall` from the app arrives at
//! [`xen_runtime_syscall`] on the thread's kernel stack (`stack_switch`),
//! which hands it to the runtime's ordinary entry; the app is resumed with
//! the `iret` hypercall; faults come through the trap table as the
//! runtime's `TrapFrame`; the runtime's one-shot timer is Xen's
//! single-shot timer, turned into the tick vector by the upcall. The runtime runs with events
//! masked throughout (trap entries, the syscall callback and the upcall all
//! mask them); they are unmasked in user mode and while blocked.

use crate::abi;
use crate::boot::{self, Xen};
use crate::events;
use crate::hypercall;
use crate::mm::{self, PAGE_SIZE, RAM_RO};
use crate::traps::XenFrame;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use unikernel_image::layout::{USER_STACK_RESERVE, USER_STACK_TOP};
use unikernel_image::manifest::Manifest;
use unikernel_runtime::arch::x86_64::TrapFrame;
use unikernel_runtime::{AppImage, AppSpec, BootInfo, MemRange, Platform, SegmentBase, Stream};

struct XenPlatform {
    xen: &'static Xen,
    /// Xen system time at `_start` (the runtime's clock starts there).
    boot_ns: u64,
    verbose: bool,
}

static PLATFORM: spin::Once<XenPlatform> = spin::Once::new();

/// The runtime's timer deadline (Xen time), u64::MAX when disarmed.
static TIMER_AT: AtomicU64 = AtomicU64::new(u64::MAX);
/// The deadline a `block_until` sleeps to (Xen time), u64::MAX when none.
static SLEEP_UNTIL: AtomicU64 = AtomicU64::new(u64::MAX);
static TIMER_PORT: AtomicU64 = AtomicU64::new(u64::MAX);
/// Highest monotonic time handed out (the PV clock may step back a little
/// when Xen refreshes its parameters).
static LAST_NS: AtomicU64 = AtomicU64::new(0);
/// Xen time of the app's first console write (boot-to-main figure).
static FIRST_OUTPUT_NS: AtomicU64 = AtomicU64::new(0);
static STARTED: AtomicBool = AtomicBool::new(false);

fn platform() -> &'static XenPlatform {
    match PLATFORM.get() {
        Some(p) => p,
        None => fatal("the Xen platform was used before it was set up"),
    }
}

fn fatal(msg: &str) -> ! {
    let _ = writeln!(crate::Console, "unikernel: boot failed: {msg}");
    crate::shutdown(crate::EXIT_KERNEL_FAULT)
}

/// Program the single-shot timer for the earlier of the runtime's timer and
/// a sleeper's deadline (a deadline already past is left to the sleeper),
/// or stop it when there is neither.
fn arm_timer(now: u64) {
    let timer = TIMER_AT.load(Ordering::Relaxed);
    let sleep = SLEEP_UNTIL.load(Ordering::Relaxed);
    let sleep = if sleep > now { sleep } else { u64::MAX };
    let at = timer.min(sleep);
    if at != u64::MAX {
        // Not "future only": a deadline already past fires at once.
        let _ = hypercall::set_singleshot_timer(at, false);
    } else {
        let _ = hypercall::stop_singleshot_timer();
    }
}

/// Xen system time (the clock blkfront's deadlines use).
#[cfg(feature = "block")]
pub(crate) fn xen_now() -> u64 {
    platform().xen.system_time_ns()
}

/// Idle until `port` fires (true) or Xen time reaches `deadline` (false):
/// blkfront's wait for a completion. As in `block_until`, the runtime's
/// own timer stays armed, and a tick that comes meanwhile is deferred to
/// its next safe point; the caller has unmasked `port`.
#[cfg(feature = "block")]
pub(crate) fn wait_port(port: u32, deadline: u64) -> bool {
    let p = platform();
    let timer_port = TIMER_PORT.load(Ordering::Relaxed) as u32;
    let was_masked = events::mask();
    SLEEP_UNTIL.store(deadline, Ordering::Relaxed);
    let fired = loop {
        if events::take_fired(port) {
            break true;
        }
        let now = p.xen.system_time_ns();
        if now >= deadline {
            break false;
        }
        events::take_fired(timer_port);
        arm_timer(now);
        events::block(); // unmasks atomically with the check; the upcall runs
        events::mask();
    };
    SLEEP_UNTIL.store(u64::MAX, Ordering::Relaxed);
    if !was_masked {
        events::unmask();
    }
    fired
}

/// After the upcall scanned the ports: the single-shot timer may be the
/// runtime's. From the app, the runtime takes the frame over as the timer
/// interrupt (like hvt's); from the runtime (only possible while it
/// blocks) it is recorded for its next safe point. Events stay masked
/// while the runtime runs, so no timer event can arrive on its way back
/// to the app and be left for a safe point that does not come.
pub(crate) fn after_upcall(frame: &mut XenFrame) {
    let port = TIMER_PORT.load(Ordering::Relaxed);
    if port > u32::MAX as u64 || !events::take_fired(port as u32) {
        return;
    }
    let p = platform();
    let now = p.xen.system_time_ns();
    let tick = now >= TIMER_AT.load(Ordering::Relaxed);
    if tick {
        TIMER_AT.store(u64::MAX, Ordering::Relaxed);
    }
    arm_timer(now);
    // Let a sleeper in `block_until` see that the timer fired.
    events::mark_fired(port as u32);
    if !tick {
        return;
    }
    let vector = unikernel_runtime::sched::TICK_VECTOR;
    if frame.from_user() {
        frame.vector = vector as u64;
        trap(frame);
    }
    unikernel_runtime::arch::x86_64::trap::defer_irq(vector);
}

extern "C" {
    fn unikernel_handle_trap(frame: *mut TrapFrame) -> !;
    fn xen_user_return();
    fn xen_runtime_syscall();
    fn xen_resume_user(frame: *const TrapFrame) -> !;
    static __kernel_end: u8;
    static __text_start: u8;
    static __text_end: u8;
    static __rodata_end: u8;
}

/// A trap (or the tick) for the runtime: the frame already has its layout.
pub(crate) fn trap(frame: &mut XenFrame) -> ! {
    if !STARTED.load(Ordering::Relaxed) {
        let _ = writeln!(
            crate::Console,
            "xen: {} at rip={:#x} address={:#x} before the runtime started",
            crate::traps::vector_name(frame.vector),
            frame.rip,
            frame.cr2
        );
        crate::shutdown(crate::EXIT_KERNEL_FAULT);
    }
    // SAFETY: XenFrame has TrapFrame's layout (checked below); the frame
    // lies on the current stack and nobody else uses it.
    unsafe { unikernel_handle_trap(frame as *mut XenFrame as *mut TrapFrame) }
}

const _: () = {
    assert!(core::mem::size_of::<XenFrame>() == core::mem::size_of::<TrapFrame>());
    assert!(core::mem::offset_of!(XenFrame, r15) == core::mem::offset_of!(TrapFrame, r15));
    assert!(core::mem::offset_of!(XenFrame, rax) == core::mem::offset_of!(TrapFrame, rax));
    assert!(core::mem::offset_of!(XenFrame, vector) == core::mem::offset_of!(TrapFrame, vector));
    assert!(core::mem::offset_of!(XenFrame, rip) == core::mem::offset_of!(TrapFrame, rip));
    assert!(core::mem::offset_of!(XenFrame, ss) == core::mem::offset_of!(TrapFrame, ss));
};

impl Platform for XenPlatform {
    fn name(&self) -> &'static str {
        "xen"
    }

    fn console_write(&self, stream: Stream, data: &[u8]) {
        if self.verbose && stream == Stream::Stdout && FIRST_OUTPUT_NS.load(Ordering::Relaxed) == 0
        {
            FIRST_OUTPUT_NS.store(self.xen.system_time_ns(), Ordering::Relaxed);
        }
        crate::Console::write_bytes(data);
    }

    fn console_read(&self, _buf: &mut [u8]) -> usize {
        0 // no console input on this platform yet: end of file
    }

    fn monotonic_ns(&self) -> u64 {
        let now = self.xen.system_time_ns().saturating_sub(self.boot_ns);
        LAST_NS.fetch_max(now, Ordering::Relaxed).max(now)
    }

    fn wall_clock_ns(&self) -> u64 {
        self.xen.wall_clock_ns()
    }

    /// The vDSO reads vCPU 0's `vcpu_time_info` in the shared-info page
    /// (mapped where the app can read it, as all of the kernel's pages are
    /// on Xen PV), while Xen marks it stable; the system calls read the same.
    fn vdso_clock(&self) -> Option<unikernel_runtime::platform::VdsoClock> {
        let shared = crate::shared_info();
        // SAFETY: the shared-info page is mapped at boot, before the app runs.
        let (sec, nsec) = unsafe { crate::time::wall_clock_base(shared) };
        Some(unikernel_runtime::platform::VdsoClock::PvClock {
            // SAFETY: only the field's address is taken.
            addr: unsafe { core::ptr::addr_of!((*shared).vcpu_info[0].time) } as u64,
            origin_ns: self.boot_ns,
            wall_offset_ns: crate::time::wall_ns(sec, nsec, self.boot_ns) as i64,
        })
    }

    fn block_until(&self, deadline_ns: u64) {
        let deadline = deadline_ns.saturating_add(self.boot_ns);
        let port = TIMER_PORT.load(Ordering::Relaxed) as u32;
        let was_masked = events::mask();
        SLEEP_UNTIL.store(deadline, Ordering::Relaxed);
        loop {
            let now = self.xen.system_time_ns();
            if now >= deadline {
                break;
            }
            // A netfront event (a frame, transmit slots back) ends the idle.
            #[cfg(feature = "net")]
            if crate::netfront::take_wakeup() {
                break;
            }
            events::take_fired(port);
            arm_timer(now);
            events::block(); // unmasks atomically with the check; the upcall runs
            events::mask();
            // A deferred tick means nothing to a sleeper; only time counts.
        }
        SLEEP_UNTIL.store(u64::MAX, Ordering::Relaxed);
        if !was_masked {
            events::unmask();
        }
    }

    fn halt(&self, exit_code: u32) -> ! {
        if self.verbose {
            let now = self.xen.system_time_ns();
            let first = FIRST_OUTPUT_NS.load(Ordering::Relaxed);
            let mut line = format!(
                "[unikernel] xen: _start -> exit {} us",
                now.saturating_sub(self.boot_ns) / 1000
            );
            if first != 0 {
                let _ = write!(
                    line,
                    ", _start -> first app output (main) {} us",
                    first.saturating_sub(self.boot_ns) / 1000
                );
            }
            line.push('\n');
            crate::Console::write_bytes(line.as_bytes());
        }
        crate::shutdown(exit_code & 0xff)
    }

    fn flush_tlb_page(&self, va: u64) {
        let _ = hypercall::invlpg_local(va);
    }

    fn flush_tlb_all(&self) {
        let _ = hypercall::tlb_flush_local();
    }

    fn set_timer(&self, deadline_ns: Option<u64>) {
        let at = deadline_ns.map_or(u64::MAX, |d| d.saturating_add(self.boot_ns));
        if at == TIMER_AT.swap(at, Ordering::Relaxed) {
            return;
        }
        arm_timer(self.xen.system_time_ns());
    }

    fn phys_to_pte(&self, phys: u64) -> u64 {
        self.xen.phys.mfn(phys / PAGE_SIZE) * PAGE_SIZE
    }

    fn pte_to_phys(&self, addr: u64) -> u64 {
        mm::m2p(addr / PAGE_SIZE) * PAGE_SIZE
    }

    unsafe fn write_pte(&self, entry: *mut u64, value: u64) {
        let req = abi::MmuUpdate {
            ptr: self.xen.phys.machine_addr(entry as u64) | abi::mmu::NORMAL_PT_UPDATE,
            val: value,
        };
        // SAFETY: the caller names a live entry and flushes; Xen checks
        // that the frame is ours and that no page table becomes writable.
        if unsafe { hypercall::mmu_update(core::slice::from_ref(&req)) } != Ok(1) {
            let _ = writeln!(
                crate::Console,
                "unikernel: Xen refused a page-table write ({value:#x} at {:#x})",
                entry as u64
            );
            crate::shutdown(crate::EXIT_KERNEL_FAULT);
        }
    }

    fn prepare_table_frame(&self, phys: u64) {
        // A page table may not be writable anywhere: its identity mapping
        // becomes read-only before it is linked (it is already zeroed).
        let pte = self.phys_to_pte(phys) | RAM_RO;
        // SAFETY: the frame is a fresh one from the allocator; only its
        // write permission changes.
        if unsafe { hypercall::update_va_mapping(phys, pte, abi::mmu::UVMF_INVLPG) }.is_err() {
            fatal("Xen refused to make a new page table read-only");
        }
    }

    fn set_kernel_stack(&self, top: u64) {
        // SAFETY: the runtime names the top of the current thread's kernel stack.
        let _ = unsafe { hypercall::stack_switch(top) };
    }

    fn set_segment_base(&self, which: SegmentBase, value: u64) -> bool {
        let which = match which {
            SegmentBase::Fs => abi::segbase::FS,
            // The runtime's GS is the guest-kernel GS (Xen swaps the two
            // on every mode switch: no swapgs).
            SegmentBase::Gs => abi::segbase::GS_KERNEL,
        };
        hypercall::set_segment_base(which, value).is_ok()
    }

    fn user_return_stub(&self) -> u64 {
        xen_user_return as *const () as u64
    }

    fn resume_user(&self, frame: &TrapFrame) -> ! {
        // SAFETY: the frame describes an app context (the runtime resumes
        // nothing else); the stub restores it with the iret hypercall.
        unsafe { xen_resume_user(frame) }
    }
}

/// The image starts at 64 KiB (the glue's link-xen.ld); Xen's domain
/// builder maps the pages below it all the same. Unmap them, as Linux keeps
/// them unmapped (`vm.mmap_min_addr`), so a null pointer faults.
fn unmap_low_pages() {
    let start = core::ptr::addr_of!(__text_start) as u64;
    let mut va = 0;
    while va < start.min(0x10000) {
        // SAFETY: nothing lives below the image; a zero entry unmaps the page.
        if unsafe { hypercall::update_va_mapping(va, 0, abi::mmu::UVMF_INVLPG) }.is_err() {
            fatal("Xen refused to unmap the low 64 KiB");
        }
        va += PAGE_SIZE;
    }
}

/// W^X on the image. Xen's domain builder maps the bootstrap region (the
/// kernel, the boot manifest, the app, then its own elements: P2M list,
/// start_info, xenstore and console pages, page tables, stack) read-write
/// and executable. Rewrite those entries as kvm and hvt map them: each
/// image page with its ELF segment's permissions (the runtime's rule,
/// `unikernel_runtime::mm::image`: kernel text R-X, read-only data R--,
/// data and bss RW-, the manifest and the guard page R--, the app's
/// segments as its program headers say), every other page of the region
/// as it was plus NX. (RAM beyond the region was mapped NX to begin with.)
/// Returns what it did and how long it took (ns).
fn protect_image(xen: &Xen, manifest: &Manifest) -> (mm::ProtectReport, u64) {
    use unikernel_runtime::mm::image;
    let t0 = xen.system_time_ns();
    let sym = |s: &u8| s as *const u8 as u64;
    // SAFETY: linker symbols of this kernel (the glue's link-xen.ld); only
    // their addresses are taken.
    let (text, rodata_end, kernel_end) = unsafe {
        (
            (sym(&__text_start), sym(&__text_end)),
            sym(&__rodata_end),
            sym(&__kernel_end),
        )
    };
    // SAFETY: the app's program headers lie in its first loaded segment
    // (checked by the builder), which xl loaded in the identity-mapped
    // bootstrap region.
    let app = unsafe {
        image::app_segments(
            manifest.app_base,
            manifest.app_phdr,
            manifest.app_phent as u64,
            manifest.app_phnum as u64,
        )
    };
    let segments = image::image_segments(text, rodata_end, kernel_end, manifest.app_base, &app);
    let image = text.0..manifest.app_end;
    // Refuse a page that would need W and X before changing anything.
    for page in image.clone().step_by(PAGE_SIZE as usize) {
        if let Err(e) = image::page_perms(&segments, page) {
            fatal(&format!("{e}"));
        }
    }
    let flags = |va: u64| -> Option<u64> {
        if !image.contains(&va) {
            return None;
        }
        // A page of the app's range no segment covers (the embedded files)
        // stays read-write, and becomes NX, as on kvm.
        image::page_perms(&segments, va)
            .ok()
            .flatten()
            .map(image::elf_flags)
    };
    let pt = mm::PageTables {
        phys: &xen.phys,
        l4: xen.start_info.pt_base,
        next_table_pfn: 0,
        table_pfn_limit: 0,
    };
    let end = xen.memory.bootstrap_end_pfn * PAGE_SIZE;
    // SAFETY: from here on the kernel runs its text, reads its read-only
    // data and writes its data, bss and RAM only, as the app (ELF
    // permissions) does; nothing executes outside the two text segments.
    match unsafe { mm::protect(&pt, end, &flags) } {
        Ok(r) => (r, xen.system_time_ns() - t0),
        Err(e) => fatal(e),
    }
}

/// The manifest the builder put at `__kernel_end` (u32 length + bytes).
fn manifest_bytes() -> &'static [u8] {
    // SAFETY: the boot-manifest segment is loaded there (bootstrap region,
    // identity-mapped); the length is bounded.
    unsafe {
        let at = core::ptr::addr_of!(__kernel_end) as u64;
        let len = (at as *const u32).read_unaligned() as usize;
        core::slice::from_raw_parts((at + 4) as *const u8, len.min(1 << 20))
    }
}

#[no_mangle]
fn xen_main(xen: &'static Xen) -> ! {
    let si = xen.start_info;
    let mem_size = si.nr_pages * PAGE_SIZE;
    let free = MemRange {
        start: xen.memory.tables_end * PAGE_SIZE,
        end: mem_size,
    };
    unikernel_runtime::mm::frame::FRAMES.lock().add_range(free);
    let m = manifest_bytes();
    if m.get(..8) != Some(b"UKMANIF1".as_slice()) {
        fatal("no manifest at the end of the kernel (image not linked by cargo-unikernel?)");
    }
    let manifest = match Manifest::decode(m) {
        Ok(x) => x,
        Err(e) => fatal(&format!("the image manifest is unreadable: {e}")),
    };
    if manifest.app_end > free.start {
        fatal("the app overlaps the boot page tables");
    }
    unmap_low_pages();
    let (protected, protect_ns) = protect_image(xen, &manifest);
    let cl = unikernel_runtime::cmdline::parse(xen.cmdline());
    let verbose = cl.option("VERBOSE") == Some("1");
    let boot_ns = xen.system_time_ns() - xen.tsc_delta_ns(boot_tsc_age(xen));
    TIMER_PORT.store(xen.timer_port as u64, Ordering::Relaxed);
    let p = PLATFORM.call_once(|| XenPlatform {
        xen,
        boot_ns,
        verbose,
    });

    // The vif (before the runtime starts the network component).
    #[cfg(feature = "net")]
    crate::netfront::init(xen, verbose);
    // The vbds (before the runtime starts the storage component), and the
    // platform's block self-test (`UNIKERNEL_BLOCK_SELFTEST=SEED`), which
    // ends the boot.
    #[cfg(feature = "block")]
    {
        crate::blkfront::init(xen, verbose, cl.option("XEN_BLK_INDIRECT") != Some("0"));
        if let Some(seed) = cl.option("BLOCK_SELFTEST") {
            let start = cl
                .option("BLOCK_SELFTEST_SECTOR")
                .and_then(|v| v.parse().ok());
            crate::blockcheck::run(xen, seed, start);
        }
    }

    // SAFETY: the stub moves to the thread's kernel stack before events
    // can be delivered (registered with events masked).
    if unsafe {
        hypercall::register_syscall_callback_masked(xen_runtime_syscall as *const () as u64)
    }
    .is_err()
    {
        fatal("cannot register the syscall callback");
    }
    // Guest user mode uses the kernel's page table (one address space).
    let l4_mfn = xen.phys.mfn(si.pt_base / PAGE_SIZE);
    // SAFETY: the kernel's own pinned L4.
    if unsafe { hypercall::new_user_baseptr(l4_mfn) }.is_err() {
        fatal("cannot set the user page table");
    }

    let mut argv = Vec::new();
    argv.push(format!("/{}", manifest.name));
    argv.extend(cl.args.clone().unwrap_or_else(|| manifest.args.clone()));
    let envp = unikernel_runtime::cmdline::merge_env(&manifest.env, &cl.env);
    // Runtime options: the manifest's defaults, the command line's
    // UNIKERNEL_* tokens replacing them by key.
    let options = unikernel_runtime::cmdline::merge_env(&manifest.options, &cl.options);
    let (stack_bottom, stack_top) = boot::boot_stack();
    let (_, fault_top) = boot::spare_stack();
    let name: &'static str = alloc::boxed::Box::leak(manifest.name.clone().into_boxed_str());
    let mut free_ranges = [MemRange::default(); unikernel_runtime::platform::MAX_FREE_RANGES];
    free_ranges[0] = free;
    let info = BootInfo {
        mem_size,
        free: free_ranges,
        free_count: 1,
        page_table_root: si.pt_base,
        kernel_stack_top: stack_top,
        kernel_stack_bottom: stack_bottom,
        fault_stack_top: fault_top,
        kernel_start: 0,
        // A linker-script symbol; only its address is taken. (Not the
        // app's base: a fixed-address app has base 0.)
        kernel_end: core::ptr::addr_of!(__kernel_end) as u64,
        trace_syscalls: cl.option("TRACE_SYSCALLS") == Some("1"),
        app: AppImage {
            entry: manifest.app_entry,
            stack_pointer: 0,
            base: manifest.app_base,
            end: manifest.app_end,
            stack_top: USER_STACK_TOP,
            stack_mapped_bottom: USER_STACK_TOP,
            stack_reserve_bottom: USER_STACK_TOP - USER_STACK_RESERVE,
            name,
        },
        app_spec: Some(AppSpec {
            argv,
            envp,
            phdr: manifest.app_phdr,
            phent: manifest.app_phent as u64,
            phnum: manifest.app_phnum as u64,
        }),
        options,
        disks: manifest.disks.clone(),
        files_addr: manifest.files_addr,
        files_len: manifest.files_len,
    };
    if verbose {
        let now = xen.system_time_ns();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "[unikernel] xen: {} pages, image 0..{:#x}, free RAM {:#x}..{:#x}, {} pages mapped at boot",
            si.nr_pages, manifest.app_end, free.start, free.end, xen.memory.mapped
        );
        let _ = writeln!(
            out,
            "[unikernel] xen: W^X: {} pages of the bootstrap region, {} entries rewritten in {} mmu_update calls, {} us",
            protected.pages,
            protected.changed,
            protected.hypercalls,
            protect_ns / 1000
        );
        let _ = writeln!(
            out,
            "[unikernel] xen: _start -> starting the runtime {} us (PV clock)",
            (now - boot_ns) / 1000
        );
        crate::Console::write_bytes(out.as_bytes());
    }
    STARTED.store(true, Ordering::Relaxed);
    unikernel_runtime::start(info, p)
}

/// TSC ticks since `_start`.
fn boot_tsc_age(xen: &Xen) -> u64 {
    // SAFETY: rdtsc is allowed in PV guest kernel mode.
    let now = unsafe { core::arch::x86_64::_rdtsc() };
    now.wrapping_sub(xen.entry_tsc)
}

core::arch::global_asm!(
    r#"
    .section .text.xen_runtime, "ax"
    /* A `syscall` from the app (guest user mode). Xen switched to guest
       kernel mode, the kernel GS base and the `stack_switch` stack (the
       thread's kernel stack), masked events (CALLBACKF_mask_events) and
       pushed rcx, r11, rip, cs, rflags, rsp, ss. rcx/r11 are what the
       `syscall` instruction set (rip, rflags); with the app's rsp back in
       place this is exactly the state the runtime's entry expects. */
    .balign 16
    .global xen_runtime_syscall
xen_runtime_syscall:
    popq %rcx
    popq %r11
    movq 24(%rsp), %rsp      /* the app's rsp (its red zone is not touched) */
    jmp unikernel_syscall_entry

    /* Return to the app (PerCpu.user_return): app registers restored,
       rcx = rip, r11 = rflags, %rsp -> the app's rsp. The iret hypercall
       with VGCF_in_syscall (sysret semantics) drops to guest user mode;
       IF in rflags unmasks events. */
    .balign 16
    .global xen_user_return
xen_user_return:
    popq %gs:8
    pushq ${user_ss}
    pushq %gs:8
    pushq %r11
    pushq ${user_cs}
    pushq %rcx
    pushq ${in_syscall}
    jmp hypercall_page + {iret} * 32

    /* Resume a TrapFrame (%rdi) in guest user mode with iret (all
       registers restored, rcx/r11 included: flags 0). */
    .balign 16
    .global xen_resume_user
xen_resume_user:
    movq %rdi, %rsp
    addq $8, %rsp            /* cr2 */
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %r11
    popq %r10
    popq %r9
    popq %r8
    popq %rbp
    popq %rdi
    popq %rsi
    popq %rdx
    popq %rcx
    popq %rbx
    popq %rax
    addq $8, %rsp            /* vector; the error code slot takes the flags */
    movq $0, (%rsp)          /* flags, rip, cs, rflags, rsp, ss */
    movq ${user_cs}, 16(%rsp)
    movq ${user_ss}, 40(%rsp)
    jmp hypercall_page + {iret} * 32
"#,
    user_cs = const abi::FLAT_USER_CS as u64,
    user_ss = const abi::FLAT_USER_SS as u64,
    in_syscall = const abi::VGCF_IN_SYSCALL,
    iret = const abi::nr::IRET,
    options(att_syntax)
);
