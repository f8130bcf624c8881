//! What happens when code faults: the trap handler that the ring-0 stubs
//! hand over to (at ring 3, on the thread's kernel stack), and the reports
//! that end the app.
//!
//! Exit codes: a fatal signal N ends the app with 128 + N (SIGSEGV 139,
//! SIGBUS 135, SIGILL 132, SIGFPE 136, SIGTRAP 133, SIGABRT 134), as a
//! shell reports a killed process; a fault or panic inside the runtime
//! itself ends with [`EXIT_KERNEL_PANIC`].

use crate::arch::x86_64::{vector_name, TrapFrame};
use crate::mm::vm::Resolve;
use crate::signal::{self, SEGV_ACCERR, SEGV_MAPERR, SIGBUS, SIGFPE, SIGILL, SIGSEGV, SIGTRAP};
use core::sync::atomic::{AtomicBool, Ordering};

/// The runtime itself failed (panic, or a fault in its own code).
pub const EXIT_KERNEL_PANIC: u32 = 253;

/// A disk the image declares is missing, not a volume of ours, or unusable
/// (the `fs` component prints `unikernel: disk "NAME": ...` first).
pub const EXIT_DISK_UNUSABLE: u32 = 252;

pub fn signal_name(sig: u32) -> &'static str {
    match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        11 => "SIGSEGV",
        12 => "SIGUSR2",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        16 => "SIGSTKFLT",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        26 => "SIGVTALRM",
        27 => "SIGPROF",
        29 => "SIGIO",
        30 => "SIGPWR",
        31 => "SIGSYS",
        _ => "a real-time signal",
    }
}

/// The signal (and si_code) Linux sends for an exception vector.
fn signal_for(f: &TrapFrame) -> (u32, i32) {
    match f.vector {
        0 => (SIGFPE, 1),       // FPE_INTDIV
        16 | 19 => (SIGFPE, 0), // x87 / SIMD: the precise code needs the status word
        1 | 3 => (SIGTRAP, 1),  // TRAP_BRKPT
        6 => (SIGILL, 2),       // ILL_ILLOPN
        17 => (SIGBUS, 1),      // BUS_ADRALN
        14 if f.error_code & 1 != 0 => (SIGSEGV, SEGV_ACCERR),
        14 => (SIGSEGV, SEGV_MAPERR),
        _ => (SIGSEGV, 128), // SI_KERNEL (#GP and friends)
    }
}

static IN_KERNEL_FAULT: AtomicBool = AtomicBool::new(false);

fn in_runtime(rip: u64) -> bool {
    let (start, end) = crate::kernel_range();
    (start..end).contains(&rip)
}

/// Called at ring 3 by the trap stubs with the saved registers.
#[no_mangle]
extern "C" fn unikernel_handle_trap(frame: *mut TrapFrame) -> ! {
    // SAFETY: the stub built the frame just above our stack (the thread's
    // kernel stack, or the fault stack for a fault in the runtime); nothing
    // else uses it while we run.
    let f = unsafe { &mut *frame };
    if !f.from_user() || in_runtime(f.rip) {
        kernel_fault(f);
    }
    if f.vector >= 32 {
        crate::platform().end_of_interrupt(f.vector as u8);
    }
    match f.vector {
        v if v == crate::sched::TICK_VECTOR as u64 => {
            if crate::platform().debug_interrupt() {
                crate::debug::stop(f, crate::debug::INTERRUPT, crate::signal::SIGINT);
            }
            crate::sched::on_tick()
        }
        32.. => {} // no other interrupt source yet
        14 => {
            let write = f.error_code & 2 != 0;
            let exec = f.error_code & 16 != 0;
            let resolved = crate::mm::vm::ASPACE
                .lock()
                .as_mut()
                .map_or(Resolve::NotMapped, |a| a.resolve_fault(f.cr2, write, exec));
            match resolved {
                Resolve::Resolved => {}
                Resolve::OutOfMemory => out_of_memory(f.cr2),
                Resolve::NotMapped => {
                    let (sig, code) = signal_for(f);
                    crate::debug::stop(f, 14, sig);
                    signal::fault(f, sig, code);
                }
            }
        }
        // A breakpoint or a finished step, with a debugger: its business.
        v @ (1 | 3) if crate::platform().debugger() => {
            crate::debug::stop(f, v as u32, SIGTRAP);
        }
        _ => {
            let (sig, code) = signal_for(f);
            crate::debug::stop(f, f.vector as u32, sig);
            signal::fault(f, sig, code);
        }
    }
    crate::sched::safe_point();
    signal::deliver_at_trap_exit(f);
    crate::arch::x86_64::trap::resume(f)
}

fn print_registers(f: &TrapFrame) {
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
}

fn print_fault_detail(f: &TrapFrame) {
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
}

/// A fault in the app with no handler to run: report and end with 128 + sig.
pub fn report_app_fault(f: &TrapFrame, sig: u32) -> ! {
    let tid = crate::sched::current_tid();
    crate::kprintln!(
        "unikernel: app killed by {} ({}) at rip={:#x} in thread {}",
        signal_name(sig),
        vector_name(f.vector),
        f.rip,
        tid
    );
    print_fault_detail(f);
    print_registers(f);
    let app = crate::app_range();
    if (app.0..app.1).contains(&f.rip) {
        crate::kprintln!(
            "  rip is app offset {:#x} (symbolize with the image's .app.debug file)",
            f.rip - app.0
        );
    }
    crate::backtrace::report(&crate::backtrace::walk(true, f.rip, f.rbp, f.rsp));
    crate::exit(128 + sig)
}

/// A fault in the runtime itself: a bug. Report and halt.
fn kernel_fault(f: &TrapFrame) -> ! {
    if IN_KERNEL_FAULT.swap(true, Ordering::SeqCst) {
        crate::kprintln!(
            "unikernel: fault while reporting a fault: {} at rip={:#x}",
            vector_name(f.vector),
            f.rip
        );
        crate::platform().halt(EXIT_KERNEL_PANIC);
    }
    crate::kprintln!(
        "unikernel: kernel fault: {} (vector {}) at rip={:#x}",
        vector_name(f.vector),
        f.vector,
        f.rip
    );
    print_fault_detail(f);
    print_registers(f);
    crate::backtrace::report(&crate::backtrace::walk(true, f.rip, f.rbp, f.rsp));
    crate::platform().halt(EXIT_KERNEL_PANIC)
}

/// The app touched memory it had mapped but no frame is left: end it as
/// Linux's OOM killer would (SIGKILL, exit 137), saying how to give it more.
pub fn out_of_memory(va: u64) -> ! {
    let total = crate::mm::frame::FRAMES.lock().total() * crate::mm::frame::FRAME_SIZE;
    crate::kprintln!(
        "unikernel: out of memory: the app touched {va:#x} and all {} MiB of guest memory for pages is in use; give it more with --mem",
        total >> 20
    );
    crate::exit(128 + 9)
}

/// The app's signal `sig` takes its default action: end the app.
pub fn killed_by_signal(sig: u32) -> ! {
    crate::kprintln!("unikernel: app killed by {}", signal_name(sig));
    crate::exit(128 + sig)
}

#[cfg(target_os = "none")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    crate::kprintln!("unikernel: kernel panic: {}", info);
    crate::backtrace::report(&crate::backtrace::here());
    crate::platform().halt(EXIT_KERNEL_PANIC)
}
