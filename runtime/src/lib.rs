//! The unikernel runtime: a small kernel that runs one unmodified static
//! Linux x86_64 executable (Rust std via musl, or anything static).
//!
//! A boot, from the platform's entry to the app's `main`:
//!
//! 1. the platform (e.g. `platform-hvt`) is entered with the machine already
//!    prepared by its monitor, fills a [`BootInfo`] and calls [`start`];
//! 2. [`start`] records the platform, hands the free RAM to the frame
//!    allocator (`mm::frame`), which also feeds the kernel heap (`mm::heap`),
//!    creates the app's address space (`mm::vm`) with its stack area, sets up
//!    the per-CPU block for the `syscall` stub (`arch::x86_64::entry`) and the
//!    fault stack (`arch::x86_64::trap`);
//! 3. it starts the components the kernel was built with
//!    (`unikernel_components_init`, defined by the kernel's glue crate; the
//!    platform has registered its devices by then), then jumps to the app's
//!    entry at ring 3 with the initial stack the platform built (argc, argv,
//!    envp, auxv): musl's start-up code runs, relocates itself, and calls
//!    `main`;
//! 4. from then on the runtime runs only when the app makes a system call
//!    (`syscall` -> [`syscall`]), faults or is interrupted (`fault`), until
//!    `exit_group`; threads (`sched`) each have their own kernel stack.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod acpi;
pub mod arch;
pub mod backtrace;
pub mod cmdline;
pub mod component;
pub mod console;
pub mod debug;
pub mod device;
pub mod errno;
pub mod fault;
pub mod fmtbuf;
pub mod fs;
pub mod loader;
pub mod mm;
pub mod net;
pub mod platform;
pub mod random;
pub mod sched;
pub mod signal;
pub mod syscall;
pub mod time;
pub mod vdso;

pub use platform::{AppImage, AppSpec, BootInfo, MemRange, Platform, SegmentBase, Stream};

use spin::Once;

static PLATFORM: Once<&'static dyn Platform> = Once::new();
static BOOT: Once<BootInfo> = Once::new();

/// The platform the runtime was started on.
pub fn platform() -> &'static dyn Platform {
    match PLATFORM.get() {
        Some(p) => *p,
        None => panic!("runtime used before start"),
    }
}

/// The platform, or `None` before [`start`] (host unit tests).
pub(crate) fn try_platform() -> Option<&'static dyn Platform> {
    PLATFORM.get().copied()
}

pub(crate) fn app_name() -> &'static str {
    BOOT.get().map_or("app", |b| b.app.name)
}

pub(crate) fn app_range() -> (u64, u64) {
    BOOT.get().map_or((0, 0), |b| (b.app.base, b.app.end))
}

/// The runtime's own code and data (interrupts hitting it are deferred).
pub(crate) fn kernel_range() -> (u64, u64) {
    BOOT.get()
        .map_or((0, 0), |b| (b.kernel_start, b.kernel_end))
}

/// The value of runtime option `key` (the whole key, e.g. `"UNIKERNEL_IP"`),
/// from [`BootInfo::options`]; `None` before [`start`] or when it is not
/// set. The last entry with the key wins.
pub fn option(key: &str) -> Option<&'static str> {
    let boot = BOOT.get()?;
    boot.options.iter().rev().find_map(|o| {
        let (k, v) = o.split_once('=')?;
        (k == key).then_some(v)
    })
}

/// `UNIKERNEL_PANIC=1`: a runtime panic on purpose (docs/debugging.md).
#[inline(never)]
fn panic_on_request() -> ! {
    panic!("UNIKERNEL_PANIC=1: a runtime panic asked for (a check of the crash report)")
}

/// With `UNIKERNEL_VERBOSE=1`, print the options the runtime was given.
fn report_options(options: &[alloc::string::String]) {
    if option("UNIKERNEL_VERBOSE") != Some("1") {
        return;
    }
    let mut line = alloc::string::String::from("[unikernel] options:");
    for o in options {
        line.push(' ');
        line.push_str(o);
    }
    kprintln!("{line}");
}

#[cfg(target_os = "none")]
extern "Rust" {
    /// Defined by the kernel's glue crate (`templates/kernel-glue`): calls
    /// the `init` of every component linked in, nothing without components.
    fn unikernel_components_init();
}

/// Start the components (`unikernel_components_init` of the glue crate).
fn init_components() {
    // SAFETY: the glue crate of every kernel defines the function with this
    // signature (`#[no_mangle] pub fn unikernel_components_init()`); it is
    // called once, from the boot path, before the app runs.
    #[cfg(target_os = "none")]
    unsafe {
        unikernel_components_init()
    };
}

/// End the app with `code`. A unikernel's exit is its machine's power-off,
/// so what Linux would write back after the process ended must reach the
/// disk now: shared file mappings are written back and every mounted
/// filesystem is synced first (the console writes through).
pub fn exit(code: u32) -> ! {
    syscall::flush_shared_mappings();
    for m in fs::vfs::mounts() {
        if let Err(e) = m.fs.sync() {
            kprintln!(
                "unikernel: syncing {} at exit failed: {}",
                m.path,
                errno::name(e)
            );
        }
    }
    exit_without_sync(code)
}

/// End at once, syncing nothing: a deadlock or a runtime failure, where a
/// filesystem's lock may be held by a thread that will never run again.
pub fn exit_without_sync(code: u32) -> ! {
    if syscall::tracing() {
        syscall::report_unknown();
    }
    platform().halt(code)
}

#[cfg(target_os = "none")]
#[global_allocator]
static HEAP: mm::heap::KernelHeap = mm::heap::KernelHeap::new();

/// Start the runtime and the app. Never returns.
pub fn start(boot: BootInfo, platform: &'static dyn Platform) -> ! {
    PLATFORM.call_once(|| platform);
    let boot = BOOT.call_once(|| boot);
    {
        // A platform that needed memory before starting the runtime (kvm)
        // has registered the free ranges already.
        let mut frames = mm::frame::FRAMES.lock();
        if frames.total() == 0 {
            for r in &boot.free[..boot.free_count] {
                frames.add_range(*r);
            }
        }
    }
    arch::x86_64::entry::init(boot.kernel_stack_top);
    arch::x86_64::trap::init(boot.fault_stack_top, boot.kernel_start, boot.kernel_end);
    arch::x86_64::xstate::init();
    syscall::set_trace(boot.trace_syscalls);
    sched::init(boot.kernel_stack_top);
    // SAFETY: the platform's page table is live and maps RAM identity.
    let mut aspace = unsafe { mm::vm::AddressSpace::new(boot.page_table_root, boot.mem_size) };
    aspace.add_stack(boot.app.stack_reserve_bottom, boot.app.stack_top);
    *mm::vm::ASPACE.lock() = Some(aspace);
    report_options(&boot.options);
    if option(unikernel_image::options::PANIC) == Some("1") {
        panic_on_request();
    }
    fs::root::init(boot.mem_size);
    let vvar = match platform.vdso_clock() {
        None => vdso::Vvar::default(),
        Some(platform::VdsoClock::Tsc {
            boot_tsc,
            mult,
            wall_offset_ns,
        }) => vdso::Vvar {
            mode: vdso::MODE_TSC,
            boot_tsc,
            mult,
            wall_offset_ns,
            ..Default::default()
        },
        Some(platform::VdsoClock::PvClock {
            addr,
            origin_ns,
            wall_offset_ns,
        }) => vdso::Vvar {
            mode: vdso::MODE_PVCLOCK,
            pvclock: addr,
            origin_ns,
            wall_offset_ns,
            ..Default::default()
        },
    };
    if !vdso::install(vvar) {
        // AT_SYSINFO_EHDR names it: the app's libc would read unmapped memory.
        kprintln!("unikernel: not enough memory for the vDSO");
        platform.halt(fault::EXIT_KERNEL_PANIC);
    }
    init_components();
    let sp = match &boot.app_spec {
        Some(spec) => build_app_stack(&boot.app, spec),
        None => boot.app.stack_pointer,
    };
    arch::x86_64::entry::enter_user(boot.app.entry, sp)
}

/// Write the app's initial stack (Linux layout, see [`loader`]) at the top
/// of its stack region; returns the stack pointer (at argc).
fn build_app_stack(app: &AppImage, spec: &AppSpec) -> u64 {
    let mut random = [0u8; 16];
    random::fill(&mut random);
    let input = loader::StackInput {
        argv: spec.argv.clone(),
        envp: spec.envp.clone(),
        phdr: spec.phdr,
        phent: spec.phent,
        phnum: spec.phnum,
        entry: app.entry,
        hwcap: core::arch::x86_64::__cpuid(1).edx as u64,
        random,
        // The runtime may run at ring 0 here (kvm; Xen PV's guest kernel
        // mode): the app keeps the `syscall` instruction.
        sysinfo: 0,
    };
    let stack = loader::build(app.stack_top, &input);
    // Map what the strings and vectors need plus 16 KiB; the rest grows on demand.
    let bottom = (stack.rsp - 16 * 1024) & !0xfff;
    let ok = mm::vm::ASPACE
        .lock()
        .as_mut()
        .is_some_and(|a| a.check_user(bottom, app.stack_top - bottom, true).is_ok());
    match mm::user::bytes_mut(stack.rsp, stack.bytes.len()) {
        Ok(dst) if ok => dst.copy_from_slice(&stack.bytes),
        _ => {
            kprintln!("unikernel: not enough memory for the app's initial stack");
            platform().halt(fault::EXIT_KERNEL_PANIC);
        }
    }
    stack.rsp
}

/// The image's declared data volumes, `NAME=MOUNT` each (parse with
/// `unikernel_image::disks::DiskDecl::parse`); empty before [`start`].
pub fn declared_disks() -> &'static [alloc::string::String] {
    BOOT.get().map_or(&[], |b| b.disks.as_slice())
}

/// The embedded-files archive the image carries (`unikernel_image::files`),
/// empty when it carries none or when the platform's range for it does not
/// lie inside the app's loaded range.
pub fn embedded_files() -> &'static [u8] {
    let Some(b) = BOOT.get() else { return &[] };
    let (start, len) = (b.files_addr, b.files_len);
    let Some(end) = start.checked_add(len) else {
        return &[];
    };
    if len == 0 || start < b.app.base || end > b.app.end {
        return &[];
    }
    // SAFETY: [start, end) lies inside the app's range, which the platform
    // loaded and identity-mapped before starting the runtime and which the
    // frame allocator never hands out; the archive segment is read-only
    // data nobody writes.
    unsafe { core::slice::from_raw_parts(start as *const u8, len as usize) }
}
