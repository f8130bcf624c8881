//! The boot of a PV kernel, from `_start` to `xen_main`, and the services
//! the rest of the kernel uses afterwards: console, clocks, sleeping,
//! xenstore, grant tables, user mode, shutdown.
//!
//! `_start` is entered by Xen in guest kernel mode with `%rsi` =
//! `start_info`, `%rsp` on a bootstrap stack and events masked. It records
//! the TSC (for the boot-time measurement), moves to our own stack and
//! calls [`xen_start`], which does steps 2-5 of the crate docs and hands
//! a `&'static Xen` to `xen_main`, defined by the kernel built on this
//! crate.

use crate::abi::{self, SharedInfo, StartInfo, XenstoreInterface};
use crate::console::ConsoleRing;
use crate::events::{self, PortKind};
use crate::fmtbuf::FmtBuf;
use crate::grant::{GrantTable, SharedGrants, GRANTS};
use crate::mm::{self, MapReport, PageTables, PhysMap, PAGE_SIZE};
use crate::start_info::{self, MagicError};
use crate::xenstore::{Transport, Xenstore};
use crate::{hypercall, time, traps, EXIT_KERNEL_FAULT};
use core::fmt::Write;
use core::sync::atomic::{AtomicPtr, AtomicU32, Ordering};

#[repr(C, align(4096))]
struct Page([u8; 4096]);

/// Virtual spots whose backing frame is replaced by a foreign one.
static mut SHARED_INFO_PAGE: Page = Page([0; 4096]);
const GNTTAB_FRAMES: usize = 1;
static mut GNTTAB_AREA: [Page; GNTTAB_FRAMES] = [const { Page([0; 4096]) }; GNTTAB_FRAMES];

#[repr(C, align(16))]
struct Stack([u8; 64 * 1024]);
#[no_mangle]
static mut XEN_BOOT_STACK: Stack = Stack([0; 64 * 1024]);
/// The stack Xen switches to when guest user mode traps or calls (stack_switch).
static mut XEN_KERNEL_STACK: Stack = Stack([0; 64 * 1024]);

/// The boot stack `(bottom, top)`: `xen_main` runs on it (the runtime makes
/// it its first thread's kernel stack).
pub fn boot_stack() -> (u64, u64) {
    let s = core::ptr::addr_of!(XEN_BOOT_STACK) as u64;
    (s, s + core::mem::size_of::<Stack>() as u64)
}

/// A spare stack `(bottom, top)` (the boot's `stack_switch` stack).
pub fn spare_stack() -> (u64, u64) {
    let s = core::ptr::addr_of!(XEN_KERNEL_STACK) as u64;
    (s, s + core::mem::size_of::<Stack>() as u64)
}

static SHARED: AtomicPtr<SharedInfo> = AtomicPtr::new(core::ptr::null_mut());
static CONSOLE: AtomicPtr<abi::ConsoleInterface> = AtomicPtr::new(core::ptr::null_mut());
static CONSOLE_PORT: AtomicU32 = AtomicU32::new(0);

/// The mapped shared-info page.
pub fn shared_info() -> *mut SharedInfo {
    SHARED.load(Ordering::Relaxed)
}

/// What the platform found and set up at boot.
pub struct Xen {
    pub start_info: &'static StartInfo,
    pub phys: PhysMap,
    pub memory: MapReport,
    pub timer_port: u32,
    pub store_port: u32,
    store_ring: *mut XenstoreInterface,
    /// TSC at `_start`, and at the first console line.
    pub entry_tsc: u64,
    pub first_print_tsc: u64,
}

// SAFETY: one vCPU; the raw pointers are to pages mapped for the whole run.
unsafe impl Sync for Xen {}

static mut XEN: Option<Xen> = None;

extern "Rust" {
    /// The kernel built on this crate (smoke kernel, later the runtime glue).
    fn xen_main(xen: &'static Xen) -> !;
}

fn rdtsc() -> u64 {
    // SAFETY: rdtsc is allowed in PV guest kernel mode (Xen leaves CR4.TSD clear).
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// The console: the ring once it is known, the hypervisor console before.
pub struct Console;

impl Console {
    pub fn write_bytes(data: &[u8]) {
        let ring = CONSOLE.load(Ordering::Relaxed);
        if ring.is_null() {
            let _ = hypercall::console_io_write(data);
            return;
        }
        // SAFETY: the ring page is mapped (bootstrap region) for the whole run.
        let c = unsafe { ConsoleRing::new(ring) };
        let port = CONSOLE_PORT.load(Ordering::Relaxed);
        c.write_all(
            data,
            &|| {
                let _ = hypercall::evtchn_send(port);
            },
            &hypercall::sched_yield,
        );
    }
}

impl core::fmt::Write for Console {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        Console::write_bytes(s.as_bytes());
        Ok(())
    }
}

/// Wait until the console daemon consumed everything, then stop the
/// domain with `code` as the shutdown reason (0 = poweroff).
pub fn shutdown(code: u32) -> ! {
    let ring = CONSOLE.load(Ordering::Relaxed);
    if !ring.is_null() {
        // SAFETY: as in `Console::write_bytes`.
        let c = unsafe { ConsoleRing::new(ring) };
        let port = CONSOLE_PORT.load(Ordering::Relaxed);
        c.drain(
            &|| {
                let _ = hypercall::evtchn_send(port);
            },
            &hypercall::sched_yield,
            1_000_000,
        );
    }
    loop {
        let _ = hypercall::sched_shutdown(code);
    }
}

/// Map the console ring page of `si` (its machine frame, through the M2P,
/// is a pfn in the identity-mapped bootstrap region).
fn console_ring(si: &StartInfo) -> *mut abi::ConsoleInterface {
    (mm::m2p(si.console_mfn) * PAGE_SIZE) as *mut abi::ConsoleInterface
}

/// The boot cannot go on: say why on every console we might have, stop.
fn bad_magic(si: &StartInfo, e: MagicError) -> ! {
    let mut msg = FmtBuf::<512>::new();
    let _ = writeln!(msg, "xen: cannot boot: {e}");
    let _ = hypercall::console_io_write(msg.as_bytes());
    // A Xen loader of another flavour keeps the same layout: try the ring,
    // if its frame is one of ours and mapped.
    let plausible = e.looks_like_xen()
        && si.nr_pages > 0
        && si.nr_pages < 1 << 28
        && si.pt_base % PAGE_SIZE == 0
        && si.pt_base < si.nr_pages * PAGE_SIZE;
    if plausible {
        let pfn = mm::m2p(si.console_mfn);
        // SAFETY: mfn_list is only read by `leaf` through the M2P; pt_base checked above.
        let phys = unsafe { PhysMap::new(si) };
        let pt = PageTables {
            phys: &phys,
            l4: si.pt_base,
            next_table_pfn: 0,
            table_pfn_limit: 0,
        };
        if pfn < si.nr_pages && pt.is_mapped(pfn * PAGE_SIZE) {
            CONSOLE_PORT.store(si.console_evtchn, Ordering::Relaxed);
            CONSOLE.store(console_ring(si), Ordering::Relaxed);
            Console::write_bytes(msg.as_bytes());
        }
    }
    shutdown(EXIT_KERNEL_FAULT)
}

fn fatal(what: &str, e: impl core::fmt::Display) -> ! {
    let _ = writeln!(Console, "xen: boot failed: {what}: {e}");
    shutdown(EXIT_KERNEL_FAULT)
}

/// Steps 2-6 of the boot (crate docs).
#[no_mangle]
extern "C" fn xen_start(si: *mut StartInfo, entry_tsc: u64) -> ! {
    // SAFETY: Xen passes a mapped start_info page; we only read it (but
    // for the test hook below, which rewrites the magic in place).
    let si: &'static mut StartInfo = unsafe { &mut *si };
    #[cfg(feature = "test-hooks")]
    if start_info::cmdline(si)
        .split(' ')
        .any(|w| w == "xen.test=bad-magic")
    {
        si.magic = [0; 32];
        si.magic[..15].copy_from_slice(b"xen-3.0-x86_32p");
    }
    let si: &'static StartInfo = si;
    if let Err(e) = start_info::check_magic(&si.magic) {
        bad_magic(si, e);
    }

    // Console first, so everything after can say what went wrong.
    CONSOLE_PORT.store(si.console_evtchn, Ordering::Relaxed);
    CONSOLE.store(console_ring(si), Ordering::Relaxed);
    let first_print_tsc = rdtsc();
    // Under the runtime the console is the app's stdout: the platform
    // speaks only when asked (UNIKERNEL_VERBOSE=1).
    let quiet = cfg!(feature = "runtime")
        && !start_info::cmdline(si)
            .split(' ')
            .any(|w| w == "UNIKERNEL_VERBOSE=1");
    if !quiet {
        let _ = writeln!(
            Console,
            "xen: PV guest starting ({} pages, console port {})",
            si.nr_pages, si.console_evtchn
        );
    }

    // The shared-info page replaces the frame behind a page of our .bss.
    let shared_va = core::ptr::addr_of_mut!(SHARED_INFO_PAGE) as u64;
    // SAFETY: the page is reserved for this and not used through Rust references.
    if let Err(e) = unsafe { mm::map_machine_frame(shared_va, si.shared_info / PAGE_SIZE) } {
        fatal("cannot map shared_info", e);
    }
    SHARED.store(shared_va as *mut SharedInfo, Ordering::Relaxed);

    if let Err(e) = traps::init() {
        fatal("cannot install the trap table and callbacks", e);
    }
    // The stack reserved for entries from guest user mode.
    let ktop = core::ptr::addr_of!(XEN_KERNEL_STACK) as u64 + core::mem::size_of::<Stack>() as u64;
    // SAFETY: as above.
    if let Err(e) = unsafe { hypercall::stack_switch(ktop) } {
        fatal("stack_switch", e);
    }

    // Timer: no periodic tick; VIRQ_TIMER drives the single-shot timer.
    let _ = hypercall::stop_periodic_timer();
    let timer_port = match hypercall::evtchn_bind_virq(abi::evtchn::VIRQ_TIMER) {
        Ok(p) => p,
        Err(e) => fatal("cannot bind VIRQ_TIMER", e),
    };
    events::set_kind(timer_port, PortKind::Timer);

    // All of RAM at its identity address, never executable (mm::RAM_RW):
    // NX must be on, or Xen refuses every such entry.
    if !mm::nx_enabled() {
        fatal(
            "no-execute is off",
            "EFER.NXE is clear under this Xen (a CPU without NX?): the image cannot be mapped W^X",
        );
    }
    // SAFETY: start_info verified above.
    let phys = unsafe { PhysMap::new(si) };
    let first_free = start_info::first_free_pfn(si);
    let mut pt = PageTables {
        phys: &phys,
        l4: si.pt_base,
        next_table_pfn: 0,
        table_pfn_limit: 0,
    };
    // SAFETY: frames from first_free up are unused so far.
    let memory = match unsafe { mm::map_all_ram(&mut pt, first_free) } {
        Ok(r) => r,
        Err(e) => fatal("cannot map RAM", e),
    };

    let store_ring = (mm::m2p(si.store_mfn) * PAGE_SIZE) as *mut XenstoreInterface;
    // SAFETY: single vCPU, written once here before xen_main reads it.
    let xen: &'static Xen = unsafe {
        let slot = &mut *core::ptr::addr_of_mut!(XEN);
        slot.insert(Xen {
            start_info: si,
            phys,
            memory,
            timer_port,
            store_port: si.store_evtchn,
            store_ring,
            entry_tsc,
            first_print_tsc,
        })
    };
    // SAFETY: provided by the kernel linked with this crate.
    unsafe { xen_main(xen) }
}

impl Xen {
    /// The command line from `start_info`.
    pub fn cmdline(&self) -> &'static str {
        start_info::cmdline(self.start_info)
    }

    /// vCPU 0's PV-clock snapshot.
    pub fn time_info(&self) -> abi::VcpuTimeInfo {
        // SAFETY: shared info mapped at boot.
        unsafe { time::snapshot(shared_info()) }
    }

    /// Xen system time in ns (monotonic; since the host booted).
    pub fn system_time_ns(&self) -> u64 {
        time::system_time_at(&self.time_info(), rdtsc())
    }

    /// Unix time in ns.
    pub fn wall_clock_ns(&self) -> u64 {
        // SAFETY: shared info mapped at boot.
        let (sec, nsec) = unsafe { time::wall_clock_base(shared_info()) };
        time::wall_ns(sec, nsec, self.system_time_ns())
    }

    /// Convert a TSC difference to ns with the PV clock's scale.
    pub fn tsc_delta_ns(&self, ticks: u64) -> u64 {
        let t = abi::VcpuTimeInfo {
            system_time: 0,
            tsc_timestamp: 0,
            ..self.time_info()
        };
        time::system_time_at(&t, ticks)
    }

    /// Block until Xen system time reaches `deadline_ns` (or an event other
    /// than the timer arrives, if `any_event`): single-shot timer + SCHEDOP_block.
    pub fn block_until(&self, deadline_ns: u64, any_event: bool) {
        let was_masked = events::mask();
        loop {
            if self.system_time_ns() >= deadline_ns {
                break;
            }
            match hypercall::set_singleshot_timer(deadline_ns, true) {
                Ok(_) => {}
                Err(_) => break, // ETIME: already past
            }
            events::block(); // unmasks; the upcall records what fired
            events::mask();
            let timer = events::take_fired(self.timer_port);
            if any_event && !timer {
                break;
            }
        }
        if !was_masked {
            events::unmask();
        }
    }

    /// A xenstore connection (one per kernel; call once).
    pub fn xenstore(&self) -> Xenstore {
        // SAFETY: the ring page is mapped (bootstrap region) and this is its only user.
        unsafe { Xenstore::new(self.store_ring) }
    }

    /// What the xenstore client uses to notify and wait.
    pub fn store_transport(&self) -> StoreTransport {
        StoreTransport {
            port: self.store_port,
        }
    }

    /// The guest's grant table (v1), shared by every split driver
    /// (netfront, blkfront): the first call sets up its frames
    /// (`GNTTABOP_setup_table`) and maps them; every call returns the same
    /// table, locked until the guard is dropped (see [`crate::grant`]).
    pub fn grant_table(&self) -> Result<SharedGrants, abi::GrantOpError> {
        GRANTS.get_or_init(|| {
            let (_cur, max) = hypercall::gnttab_query_size()?;
            let n = GNTTAB_FRAMES.min(max.max(1) as usize);
            let mut frames = [0u64; GNTTAB_FRAMES];
            hypercall::gnttab_setup_table(&mut frames[..n])?;
            let base = core::ptr::addr_of_mut!(GNTTAB_AREA) as u64;
            for (i, mfn) in frames[..n].iter().enumerate() {
                // SAFETY: the area is reserved for the grant table.
                unsafe { mm::map_machine_frame(base + i as u64 * PAGE_SIZE, *mfn)? };
            }
            let per_frame = (PAGE_SIZE as usize / core::mem::size_of::<abi::GrantEntryV1>()) as u32;
            // SAFETY: n frames of entries are now mapped there for the whole run.
            Ok(unsafe { GrantTable::new(base as *mut abi::GrantEntryV1, n as u32 * per_frame) })
        })
    }

    /// Machine frame of the page holding `va` (identity-mapped RAM).
    pub fn mfn_of(&self, va: u64) -> u64 {
        self.phys.mfn(va / PAGE_SIZE)
    }

    /// Enter guest user mode at `rip` on stack `rsp`, with the FS base set
    /// and the kernel's own page table also used in user mode. System calls
    /// from there reach the handler set with `traps::set_syscall_handler`.
    ///
    /// # Safety
    /// `rip`/`rsp` must be code and a stack the user code may use.
    pub unsafe fn enter_user_mode(
        &self,
        rip: u64,
        rsp: u64,
        fs_base: u64,
    ) -> Result<core::convert::Infallible, abi::XenError> {
        let l4_mfn = self.phys.mfn(self.start_info.pt_base / PAGE_SIZE);
        // SAFETY: the same L4 as the kernel's (already pinned by the builder as our base).
        unsafe { hypercall::new_user_baseptr(l4_mfn)? };
        hypercall::set_segment_base(abi::segbase::FS, fs_base)?;
        // SAFETY: forwarded from the caller.
        unsafe { traps::enter_user(rip, rsp) }
    }
}

/// Event-channel notify and wait for the xenstore ring.
pub struct StoreTransport {
    port: u32,
}

impl Transport for StoreTransport {
    fn notify(&self) {
        let _ = hypercall::evtchn_send(self.port);
    }
    fn wait(&self) {
        let was_masked = events::mask();
        if !events::take_fired(self.port) {
            events::block();
            events::mask();
            events::take_fired(self.port);
        }
        if !was_masked {
            events::unmask();
        }
    }
}

core::arch::global_asm!(
    r#"
    .section .text.xen_start, "ax"
    .global _start
_start:
    rdtsc
    shlq $32, %rdx
    orq %rdx, %rax
    leaq XEN_BOOT_STACK(%rip), %rsp
    addq ${stack_size}, %rsp
    movq %rsi, %rdi
    movq %rax, %rsi
    xorl %ebp, %ebp
    call xen_start
    ud2
"#,
    stack_size = const core::mem::size_of::<Stack>(),
    options(att_syntax)
);
