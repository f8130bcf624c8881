//! Stops for a debugger (hvt `--gdb`, docs/debugging.md). Where the
//! hypervisor cannot trap breakpoints itself (the software KVM of our CI
//! machines ignores `KVM_SET_GUEST_DEBUG`'s breakpoints), the runtime does:
//! a breakpoint (`int3`, #BP), a finished single step (RFLAGS.TF, #DB), a
//! fault about to become a signal and the debugger's interrupt request
//! (checked at each timer tick) hand the app's registers to the platform,
//! which serves the debugger and says how to go on.
use core::sync::atomic::{AtomicBool, Ordering};

use crate::arch::x86_64::{cpu, TrapFrame};

/// The app's registers at a stop (gdb's amd64 order) and why it stopped.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stop {
    /// rax, rbx, rcx, rdx, rsi, rdi, rbp, rsp, r8-r15.
    pub gpr: [u64; 16],
    pub rip: u64,
    pub rflags: u64,
    pub cs: u64,
    pub ss: u64,
    pub fs_base: u64,
    /// The exception vector, or [`INTERRUPT`].
    pub vector: u32,
    /// The Linux signal the stop stands for.
    pub signal: u32,
}

/// [`Stop::vector`] of a stop the debugger asked for (not an exception).
pub const INTERRUPT: u32 = 0x100;

/// How the app goes on after a stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resume {
    Continue,
    /// One instruction, then stop again.
    Step,
}

const TF: u64 = 1 << 8;
/// The flags a debugger may change: CF, PF, AF, ZF, SF, DF, OF (never IF,
/// IOPL or TF: those are the runtime's).
const USER_FLAGS: u64 = 0x0cd5;

/// The runtime set TF for a step (so the #DB that follows is ours, and TF
/// comes off before the debugger sees the flags).
static STEPPING: AtomicBool = AtomicBool::new(false);

/// The trap in `f` (from the app) as a stop for the debugger, if one is
/// attached; `false` if none is (the trap goes on as without one).
/// Afterwards `f` holds the registers the debugger left.
pub fn stop(f: &mut TrapFrame, vector: u32, signal: u32) -> bool {
    let p = crate::platform();
    if !p.debugger() {
        return false;
    }
    if STEPPING.swap(false, Ordering::SeqCst) {
        f.rflags &= !TF;
    }
    let mut s = Stop {
        gpr: [
            f.rax, f.rbx, f.rcx, f.rdx, f.rsi, f.rdi, f.rbp, f.rsp, f.r8, f.r9, f.r10, f.r11,
            f.r12, f.r13, f.r14, f.r15,
        ],
        rip: f.rip,
        rflags: f.rflags,
        cs: f.cs,
        ss: f.ss,
        fs_base: cpu::fs_base(),
        vector,
        signal,
    };
    let resume = p.debug_stop(&mut s);
    let g = s.gpr;
    (f.rax, f.rbx, f.rcx, f.rdx, f.rsi, f.rdi, f.rbp, f.rsp) =
        (g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7]);
    (f.r8, f.r9, f.r10, f.r11, f.r12, f.r13, f.r14, f.r15) =
        (g[8], g[9], g[10], g[11], g[12], g[13], g[14], g[15]);
    f.rip = s.rip;
    f.rflags = (f.rflags & !USER_FLAGS) | (s.rflags & USER_FLAGS);
    if resume == Resume::Step {
        f.rflags |= TF;
        STEPPING.store(true, Ordering::SeqCst);
    }
    true
}
