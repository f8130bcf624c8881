//! Faults and fatal signals: what the app (or the runtime) did wrong, told
//! in one report, and the exit code a shell would show for it.
//!
//! Exit codes: a fatal signal N ends the app with 128 + N (SIGSEGV 139,
//! SIGBUS 135, SIGILL 132, SIGFPE 136, SIGTRAP 133, SIGABRT 134), as a
//! shell reports a killed process; a fault or panic inside the runtime
//! itself ends with [`EXIT_KERNEL_PANIC`].

use crate::arch::x86_64::{vector_name, TrapFrame};
use core::sync::atomic::{AtomicBool, Ordering};

/// The runtime itself failed (panic, or a fault in its own code).
pub const EXIT_KERNEL_PANIC: u32 = 253;

pub const SIGILL: u32 = 4;
pub const SIGTRAP: u32 = 5;
pub const SIGABRT: u32 = 6;
pub const SIGBUS: u32 = 7;
pub const SIGFPE: u32 = 8;
pub const SIGSEGV: u32 = 11;

pub fn signal_name(sig: u32) -> &'static str {
    match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        SIGILL => "SIGILL",
        SIGTRAP => "SIGTRAP",
        SIGABRT => "SIGABRT",
        SIGBUS => "SIGBUS",
        SIGFPE => "SIGFPE",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        SIGSEGV => "SIGSEGV",
        12 => "SIGUSR2",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        _ => "signal",
    }
}

/// The signal Linux sends for an exception vector.
fn signal_for(vector: u64) -> u32 {
    match vector {
        0 | 16 | 19 => SIGFPE,
        1 | 3 => SIGTRAP,
        6 => SIGILL,
        17 => SIGBUS,
        _ => SIGSEGV,
    }
}

static IN_FAULT: AtomicBool = AtomicBool::new(false);
/// The frame a resumed context is restored from (one CPU: one at a time).
static mut RESUME_FRAME: TrapFrame = TrapFrame {
    cr2: 0,
    r15: 0,
    r14: 0,
    r13: 0,
    r12: 0,
    r11: 0,
    r10: 0,
    r9: 0,
    r8: 0,
    rbp: 0,
    rdi: 0,
    rsi: 0,
    rdx: 0,
    rcx: 0,
    rbx: 0,
    rax: 0,
    vector: 0,
    error_code: 0,
    rip: 0,
    cs: 0,
    rflags: 0,
    rsp: 0,
    ss: 0,
};

fn in_kernel(rip: u64) -> bool {
    let app = crate::app_range();
    !(app.0..app.1).contains(&rip) && rip < crate::mem_size()
}

/// Called at ring 3 on the fault stack by the trap stubs.
#[no_mangle]
extern "C" fn unikernel_handle_fault(frame: *const TrapFrame) -> ! {
    // SAFETY: the stub passes the frame it just built on the ring-0 stack
    // (identity-mapped, user-accessible); copy it before anything can reuse that stack.
    let f = unsafe { frame.read() };
    if IN_FAULT.swap(true, Ordering::SeqCst) {
        crate::kprintln!(
            "unikernel: fault while handling a fault: {} at rip={:#x} addr={:#x}",
            vector_name(f.vector),
            f.rip,
            f.cr2
        );
        crate::platform().halt(EXIT_KERNEL_PANIC);
    }
    if f.vector == 14 {
        let write = f.error_code & 2 != 0;
        let exec = f.error_code & 16 != 0;
        let resolved = crate::mm::vm::ASPACE
            .try_lock()
            .and_then(|mut g| g.as_mut().map(|a| a.resolve_fault(f.cr2, write, exec)))
            .unwrap_or(false);
        if resolved {
            IN_FAULT.store(false, Ordering::SeqCst);
            // SAFETY: one CPU, and IN_FAULT kept anyone else out until now;
            // the frame is read by the resume code before any other fault.
            let r = unsafe {
                let p = core::ptr::addr_of_mut!(RESUME_FRAME);
                p.write(f);
                &*p
            };
            crate::arch::x86_64::trap::resume(r);
        }
    }
    report(&f);
}

fn report(f: &TrapFrame) -> ! {
    let kernel = !f.from_user() || in_kernel(f.rip);
    let sig = signal_for(f.vector);
    if kernel {
        crate::kprintln!(
            "unikernel: kernel fault: {} at rip={:#x}",
            vector_name(f.vector),
            f.rip
        );
    } else {
        crate::kprintln!(
            "unikernel: app killed by {} ({}) at rip={:#x}",
            signal_name(sig),
            vector_name(f.vector),
            f.rip
        );
    }
    if f.vector == 14 {
        let what = if f.error_code & 16 != 0 {
            "execute"
        } else if f.error_code & 2 != 0 {
            "write"
        } else {
            "read"
        };
        let why = if f.error_code & 1 != 0 {
            "protection violation"
        } else {
            "page not mapped"
        };
        crate::kprintln!("  faulting address: {:#x} ({what}, {why})", f.cr2);
    } else {
        crate::kprintln!("  error code: {:#x}", f.error_code);
    }
    crate::kprintln!(
        "  rax={:#018x} rbx={:#018x} rcx={:#018x} rdx={:#018x}",
        f.rax,
        f.rbx,
        f.rcx,
        f.rdx
    );
    crate::kprintln!(
        "  rsi={:#018x} rdi={:#018x} rbp={:#018x} rsp={:#018x}",
        f.rsi,
        f.rdi,
        f.rbp,
        f.rsp
    );
    crate::kprintln!(
        "  r8 ={:#018x} r9 ={:#018x} r10={:#018x} r11={:#018x}",
        f.r8,
        f.r9,
        f.r10,
        f.r11
    );
    crate::kprintln!(
        "  r12={:#018x} r13={:#018x} r14={:#018x} r15={:#018x}",
        f.r12,
        f.r13,
        f.r14,
        f.r15
    );
    crate::kprintln!(
        "  rip={:#018x} rflags={:#010x} cs={:#x} ss={:#x}",
        f.rip,
        f.rflags,
        f.cs,
        f.ss
    );
    let app = crate::app_range();
    if (app.0..app.1).contains(&f.rip) {
        crate::kprintln!(
            "  rip is app offset {:#x} (symbolize with the image's .app.debug file)",
            f.rip - app.0
        );
    }
    if kernel {
        crate::platform().halt(EXIT_KERNEL_PANIC);
    }
    crate::platform().halt(128 + sig)
}

/// The app sent itself a signal whose action is to terminate.
pub fn killed_by_signal(sig: u32) -> ! {
    crate::kprintln!(
        "unikernel: app killed by {} (sent by the app itself)",
        signal_name(sig)
    );
    crate::platform().halt(128 + sig)
}

#[cfg(target_os = "none")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    crate::kprintln!("unikernel: kernel panic: {}", info);
    crate::platform().halt(EXIT_KERNEL_PANIC)
}
