//! Signals: dispositions (process-wide), masks, pending sets and alternate
//! stacks (per thread), and delivery.
//!
//! What can be delivered: the synchronous signals of faults (SIGSEGV,
//! SIGBUS, SIGILL, SIGFPE, SIGTRAP), and signals the app sends to itself
//! (`kill`, `tgkill`, `tkill`, `raise`, `abort`). There is no other process
//! to send any. A handler runs on a Linux-layout `rt_sigframe` (siginfo,
//! ucontext with the saved registers and extended state), on the
//! alternate stack if asked, and `rt_sigreturn` resumes the saved context.
//! Delivery happens at the thread's next return to the app: the end of a
//! system call or of a trap; a thread blocked in a wait is woken with EINTR.

use crate::arch::x86_64::{xstate, TrapFrame};
use crate::errno::*;
use crate::mm::user;
use crate::sched;
use crate::syscall::SyscallFrame;
use spin::Mutex;

pub const NSIG: u64 = 64;
pub const SIGINT: u32 = 2;
pub const SIGILL: u32 = 4;
pub const SIGTRAP: u32 = 5;
pub const SIGABRT: u32 = 6;
pub const SIGBUS: u32 = 7;
pub const SIGFPE: u32 = 8;
pub const SIGKILL: u32 = 9;
pub const SIGSEGV: u32 = 11;
pub const SIGPIPE: u32 = 13;
pub const SIGSTOP: u32 = 19;

const SIG_DFL: u64 = 0;
const SIG_IGN: u64 = 1;
const SA_SIGINFO: u64 = 4;
const SA_ONSTACK: u64 = 0x0800_0000;
const SA_RESTORER: u64 = 0x0400_0000;
const SA_NODEFER: u64 = 0x4000_0000;
const SA_RESETHAND: u64 = 0x8000_0000;
const SS_ONSTACK: i32 = 1;
const SS_DISABLE: i32 = 2;
const MINSIGSTKSZ: u64 = 2048;

/// `si_code` values.
pub const SI_USER: i32 = 0;
pub const SI_TKILL: i32 = -6;
pub const SEGV_MAPERR: i32 = 1;
pub const SEGV_ACCERR: i32 = 2;

#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct SigAction {
    pub handler: u64,
    pub flags: u64,
    pub restorer: u64,
    pub mask: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct StackT {
    pub sp: u64,
    pub flags: i32,
    pub _pad: i32,
    pub size: u64,
}

const NO_ALTSTACK: StackT = StackT {
    sp: 0,
    flags: SS_DISABLE,
    _pad: 0,
    size: 0,
};

/// Per-thread signal state.
#[derive(Clone, Copy, Debug)]
pub struct SigState {
    pub mask: u64,
    pub pending: u64,
    /// `si_code` of each pending signal (SI_USER or SI_TKILL).
    codes: [i8; NSIG as usize],
    pub altstack: StackT,
}

impl SigState {
    pub fn new() -> SigState {
        SigState {
            mask: 0,
            pending: 0,
            codes: [0; NSIG as usize],
            altstack: NO_ALTSTACK,
        }
    }
    /// A new thread: the creator's mask, nothing pending, no alternate stack.
    pub fn inherit(mask: u64) -> SigState {
        SigState {
            mask,
            ..SigState::new()
        }
    }
    /// Pending signals that are not blocked.
    pub fn deliverable(&self) -> u64 {
        self.pending & !self.mask
    }
}

impl Default for SigState {
    fn default() -> Self {
        Self::new()
    }
}

static ACTIONS: Mutex<[SigAction; NSIG as usize]> = Mutex::new(
    [SigAction {
        handler: 0,
        flags: 0,
        restorer: 0,
        mask: 0,
    }; NSIG as usize],
);

fn bit(sig: u32) -> u64 {
    1u64 << (sig - 1)
}

const UNBLOCKABLE: u64 = (1 << (SIGKILL - 1)) | (1 << (SIGSTOP - 1));

enum Disposition {
    Ignore,
    Terminate,
    Handler(SigAction),
}

fn disposition(sig: u32) -> Disposition {
    let act = ACTIONS.lock()[sig as usize - 1];
    match act.handler {
        SIG_IGN => Disposition::Ignore,
        // Default "ignore" (SIGCHLD, SIGCONT, SIGURG, SIGWINCH) and the job-control
        // stops, which mean nothing without a shell.
        SIG_DFL if matches!(sig, 17 | 18 | 19 | 20 | 21 | 22 | 23 | 28) => Disposition::Ignore,
        SIG_DFL => Disposition::Terminate,
        _ => Disposition::Handler(act),
    }
}

pub fn rt_sigaction(sig: u64, act: u64, oact: u64, size: u64) -> Result<i64, Errno> {
    if size != 8 || sig == 0 || sig > NSIG {
        return Err(EINVAL);
    }
    let new = if act != 0 {
        Some(user::read::<SigAction>(act)?)
    } else {
        None
    };
    if new.is_some() && (sig == SIGKILL as u64 || sig == SIGSTOP as u64) {
        return Err(EINVAL);
    }
    let old = ACTIONS.lock()[sig as usize - 1];
    if oact != 0 {
        user::write(oact, old)?;
    }
    if let Some(n) = new {
        ACTIONS.lock()[sig as usize - 1] = n;
        // Setting "ignore" discards what is pending (POSIX).
        if matches!(disposition(sig as u32), Disposition::Ignore) {
            sched::with(|s| {
                for tid in s.live_tids() {
                    if let Some(t) = s.thread(tid) {
                        t.sig.pending &= !bit(sig as u32);
                    }
                }
            });
        }
    }
    Ok(0)
}

pub fn rt_sigprocmask(how: u64, set: u64, oset: u64, size: u64) -> Result<i64, Errno> {
    if size != 8 {
        return Err(EINVAL);
    }
    let new = if set != 0 {
        Some(user::read::<u64>(set)?)
    } else {
        None
    };
    if new.is_some() && how > 2 {
        return Err(EINVAL);
    }
    let old = sched::with(|s| s.current().sig.mask);
    if oset != 0 {
        user::write(oset, old)?;
    }
    if let Some(v) = new {
        let mask = match how {
            0 => old | v,
            1 => old & !v,
            _ => v,
        } & !UNBLOCKABLE;
        sched::with(|s| s.current().sig.mask = mask);
    }
    Ok(0)
}

/// `rt_sigpending`: the current thread's pending signals.
pub fn rt_sigpending(set: u64, size: u64) -> Result<i64, Errno> {
    if size > 8 {
        return Err(EINVAL);
    }
    let p = sched::with(|s| s.current().sig.pending).to_le_bytes();
    user::bytes_mut(set, size as usize)?.copy_from_slice(&p[..size as usize]);
    Ok(0)
}

pub fn sigaltstack(ss: u64, old: u64, user_rsp: u64) -> Result<i64, Errno> {
    let cur = sched::with(|s| s.current().sig.altstack);
    let on = cur.flags & SS_DISABLE == 0 && user_rsp.wrapping_sub(cur.sp) < cur.size;
    if old != 0 {
        let mut o = cur;
        if on {
            o.flags |= SS_ONSTACK;
        }
        user::write(old, o)?;
    }
    if ss != 0 {
        let n = user::read::<StackT>(ss)?;
        if on {
            return Err(EPERM);
        }
        if n.flags & !SS_DISABLE != 0 {
            return Err(EINVAL);
        }
        let n = if n.flags & SS_DISABLE != 0 {
            NO_ALTSTACK
        } else if n.size < MINSIGSTKSZ {
            return Err(ENOMEM);
        } else {
            n
        };
        sched::with(|s| s.current().sig.altstack = n);
    }
    Ok(0)
}

/// Queue `sig` for thread `tid`, waking it if it waits.
pub fn send_thread(tid: sched::Tid, sig: u32, code: i32) -> Result<(), Errno> {
    if sig == 0 {
        return sched::with(|s| s.thread(tid).map(|_| ()).ok_or(ESRCH));
    }
    if sig as u64 > NSIG {
        return Err(EINVAL);
    }
    let ignored = matches!(disposition(sig), Disposition::Ignore);
    sched::with(|s| {
        let t = s.thread(tid).ok_or(ESRCH)?;
        if ignored {
            return Ok(());
        }
        t.sig.pending |= bit(sig);
        t.sig.codes[sig as usize - 1] = code as i8;
        if t.sig.deliverable() & bit(sig) != 0 && t.state == sched::State::Blocked {
            s.interrupt(tid);
        }
        Ok(())
    })
}

/// Queue `sig` for the process: the current thread if it does not block
/// it, else the first thread that does not (else it stays pending on the current one).
pub fn send_process(sig: u32) -> Result<(), Errno> {
    if sig as u64 > NSIG {
        return Err(EINVAL);
    }
    let target = sched::with(|s| {
        let cur = s.current_tid();
        if sig == 0 || s.current().sig.mask & bit(sig) == 0 {
            return cur;
        }
        s.live_tids()
            .into_iter()
            .find(|&t| s.thread(t).is_some_and(|th| th.sig.mask & bit(sig) == 0))
            .unwrap_or(cur)
    });
    send_thread(target, sig, SI_USER)
}

/// The app's registers in `struct sigcontext` order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct UserRegs {
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rbp: u64,
    pub rbx: u64,
    pub rdx: u64,
    pub rax: u64,
    pub rcx: u64,
    pub rsp: u64,
    pub rip: u64,
    pub rflags: u64,
}

impl UserRegs {
    pub fn from_syscall(f: &SyscallFrame) -> UserRegs {
        UserRegs {
            r8: f.r8,
            r9: f.r9,
            r10: f.r10,
            r11: f.r11,
            r12: f.r12,
            r13: f.r13,
            r14: f.r14,
            r15: f.r15,
            rdi: f.rdi,
            rsi: f.rsi,
            rbp: f.rbp,
            rbx: f.rbx,
            rdx: f.rdx,
            rax: f.rax,
            rcx: f.rcx,
            rsp: f.user_rsp,
            rip: f.rcx,
            rflags: f.r11,
        }
    }
    /// Back into a syscall frame: the return path takes RIP from rcx and RFLAGS from r11.
    pub fn to_syscall(&self, f: &mut SyscallFrame) {
        *f = SyscallFrame {
            rax: self.rax,
            rdi: self.rdi,
            rsi: self.rsi,
            rdx: self.rdx,
            r10: self.r10,
            r8: self.r8,
            r9: self.r9,
            rcx: self.rip,
            r11: self.rflags,
            rbx: self.rbx,
            rbp: self.rbp,
            r12: self.r12,
            r13: self.r13,
            r14: self.r14,
            r15: self.r15,
            user_rsp: self.rsp,
        };
    }
    pub fn from_trap(f: &TrapFrame) -> UserRegs {
        UserRegs {
            r8: f.r8,
            r9: f.r9,
            r10: f.r10,
            r11: f.r11,
            r12: f.r12,
            r13: f.r13,
            r14: f.r14,
            r15: f.r15,
            rdi: f.rdi,
            rsi: f.rsi,
            rbp: f.rbp,
            rbx: f.rbx,
            rdx: f.rdx,
            rax: f.rax,
            rcx: f.rcx,
            rsp: f.rsp,
            rip: f.rip,
            rflags: f.rflags,
        }
    }
    pub fn to_trap(&self, f: &mut TrapFrame) {
        f.r8 = self.r8;
        f.r9 = self.r9;
        f.r10 = self.r10;
        f.r11 = self.r11;
        f.r12 = self.r12;
        f.r13 = self.r13;
        f.r14 = self.r14;
        f.r15 = self.r15;
        f.rdi = self.rdi;
        f.rsi = self.rsi;
        f.rbp = self.rbp;
        f.rbx = self.rbx;
        f.rdx = self.rdx;
        f.rax = self.rax;
        f.rcx = self.rcx;
        f.rsp = self.rsp;
        f.rip = self.rip;
        f.rflags = self.rflags;
        f.cs = 0x33;
        f.ss = 0x2b;
    }
}

#[repr(C)]
#[derive(Clone, Copy)]
struct SigContext {
    regs: UserRegs,
    csgsfs: u64,
    err: u64,
    trapno: u64,
    oldmask: u64,
    cr2: u64,
    fpstate: u64,
    reserved: [u64; 8],
}

#[repr(C)]
#[derive(Clone, Copy)]
struct UContext {
    flags: u64,
    link: u64,
    stack: StackT,
    mcontext: SigContext,
    sigmask: u64,
}

/// What the handler's siginfo says.
#[derive(Clone, Copy, Debug, Default)]
pub struct Info {
    pub code: i32,
    /// si_addr (faults) or si_pid (kill).
    pub addr: u64,
    pub trapno: u64,
    pub err: u64,
}

const FRAME_SIZE: u64 = 8 + core::mem::size_of::<UContext>() as u64 + 128;
const _: () = assert!(core::mem::size_of::<UContext>() == 304);
const _: () = assert!(core::mem::size_of::<SigContext>() == 256);

/// Build the rt_sigframe for `sig` on the app's stack and point `regs` at
/// the handler. Err if the frame cannot be written (no usable stack).
fn setup_frame(regs: &mut UserRegs, sig: u32, act: &SigAction, info: Info) -> Result<(), Errno> {
    if act.flags & SA_RESTORER == 0 {
        // Without a restorer the handler cannot return (libc always sets one).
        return Err(EFAULT);
    }
    let (alt, mask) = sched::with(|s| {
        let t = s.current();
        (t.sig.altstack, t.sig.mask)
    });
    let alt_on = alt.flags & SS_DISABLE == 0;
    let on_alt = alt_on && regs.rsp.wrapping_sub(alt.sp) < alt.size;
    let mut sp = if act.flags & SA_ONSTACK != 0 && alt_on && !on_alt {
        alt.sp + alt.size
    } else {
        regs.rsp.wrapping_sub(128)
    };
    let xsize = xstate::area_size() as u64;
    sp = sp.wrapping_sub(xsize) & !63;
    let fpstate = sp;
    sp = (sp.wrapping_sub(FRAME_SIZE) & !15).wrapping_sub(8);
    let frame = sp;
    // Check the whole area first (this also grows a demand-paged stack).
    user::bytes_mut(frame, (fpstate + xsize - frame) as usize)?;
    // SAFETY: the area is mapped writable (checked above) and 64-byte aligned.
    unsafe { xstate::save_to(fpstate as *mut u8) };
    let uc = UContext {
        flags: 0x6 | if xsize > 512 { 1 } else { 0 },
        link: 0,
        stack: if alt_on {
            StackT {
                flags: if on_alt { SS_ONSTACK } else { 0 },
                ..alt
            }
        } else {
            NO_ALTSTACK
        },
        mcontext: SigContext {
            regs: *regs,
            csgsfs: 0x33 | (0x2b << 48),
            err: info.err,
            trapno: info.trapno,
            oldmask: mask,
            cr2: info.addr,
            fpstate,
            reserved: [0; 8],
        },
        sigmask: mask,
    };
    let mut si = [0u8; 128];
    si[0..4].copy_from_slice(&(sig as i32).to_le_bytes());
    si[8..12].copy_from_slice(&info.code.to_le_bytes());
    si[16..24].copy_from_slice(&info.addr.to_le_bytes());
    user::write(frame, act.restorer)?;
    user::write(frame + 8, uc)?;
    user::write(frame + 8 + core::mem::size_of::<UContext>() as u64, si)?;
    let mut new_mask = mask | act.mask;
    if act.flags & SA_NODEFER == 0 {
        new_mask |= bit(sig);
    }
    sched::with(|s| s.current().sig.mask = new_mask & !UNBLOCKABLE);
    if act.flags & SA_RESETHAND != 0 {
        ACTIONS.lock()[sig as usize - 1].handler = SIG_DFL;
    }
    let uc_addr = frame + 8;
    let si_addr = uc_addr + core::mem::size_of::<UContext>() as u64;
    regs.rdi = sig as u64;
    regs.rsi = if act.flags & SA_SIGINFO != 0 {
        si_addr
    } else {
        0
    };
    regs.rdx = if act.flags & SA_SIGINFO != 0 {
        uc_addr
    } else {
        0
    };
    regs.rax = 0;
    regs.rsp = frame;
    regs.rip = act.handler;
    // Clear TF, DF and RF for the handler, as Linux does.
    regs.rflags &= !(0x100 | 0x400 | 0x10000);
    Ok(())
}

/// Deliver pending, unblocked signals of the current thread to `regs`
/// (its context about to resume). Returns true if `regs` now enters a handler.
fn deliver(regs: &mut UserRegs) -> bool {
    loop {
        let next = sched::with(|s| {
            let t = s.current();
            let d = t.sig.deliverable();
            if d == 0 {
                return None;
            }
            let sig = d.trailing_zeros() + 1;
            t.sig.pending &= !bit(sig);
            Some((sig, t.sig.codes[sig as usize - 1] as i32))
        });
        let Some((sig, code)) = next else {
            return false;
        };
        match disposition(sig) {
            Disposition::Ignore => continue,
            Disposition::Terminate => crate::fault::killed_by_signal(sig),
            Disposition::Handler(act) => {
                let info = Info {
                    code,
                    addr: 1,
                    ..Info::default()
                }; // si_pid = 1
                if setup_frame(regs, sig, &act, info).is_err() {
                    crate::kprintln!(
                        "unikernel: cannot build the signal frame for signal {sig} (bad stack)"
                    );
                    crate::fault::killed_by_signal(SIGSEGV);
                }
                return true;
            }
        }
    }
}

/// Before a system call returns: deliver what is pending.
pub fn deliver_at_syscall_exit(f: &mut SyscallFrame) {
    if sched::with(|s| s.current().sig.deliverable()) == 0 {
        return;
    }
    let mut regs = UserRegs::from_syscall(f);
    if deliver(&mut regs) {
        regs.to_syscall(f);
    }
}

/// Before a trap resumes the app: deliver what is pending.
pub fn deliver_at_trap_exit(f: &mut TrapFrame) {
    if sched::with(|s| s.current().sig.deliverable()) == 0 {
        return;
    }
    let mut regs = UserRegs::from_trap(f);
    if deliver(&mut regs) {
        regs.to_trap(f);
    }
}

/// A fault in the app raised `sig`: run its handler, or end the app with a report.
pub fn fault(f: &mut TrapFrame, sig: u32, code: i32) {
    let blocked = sched::with(|s| s.current().sig.mask & bit(sig) != 0);
    if let (false, Disposition::Handler(act)) = (blocked, disposition(sig)) {
        let mut regs = UserRegs::from_trap(f);
        let addr = if f.vector == 14 { f.cr2 } else { f.rip };
        let info = Info {
            code,
            addr,
            trapno: f.vector,
            err: f.error_code,
        };
        if setup_frame(&mut regs, sig, &act, info).is_ok() {
            regs.to_trap(f);
            return;
        }
        crate::kprintln!("unikernel: cannot build the signal frame for signal {sig} (bad stack)");
    }
    crate::fault::report_app_fault(f, sig)
}

/// `rt_sigreturn`: restore the context saved by [`setup_frame`]. Never
/// returns through the normal system-call path: every register is restored.
pub fn rt_sigreturn(f: &SyscallFrame) -> ! {
    let uc_addr = f.user_rsp; // the handler's `ret` popped pretcode
    let uc = match user::read::<UContext>(uc_addr) {
        Ok(uc) => uc,
        Err(_) => {
            crate::kprintln!("unikernel: rt_sigreturn with a bad frame at {uc_addr:#x}");
            crate::fault::killed_by_signal(SIGSEGV)
        }
    };
    sched::with(|s| s.current().sig.mask = uc.sigmask & !UNBLOCKABLE);
    let fp = uc.mcontext.fpstate;
    if fp != 0 && fp & 63 == 0 && user::bytes(fp, xstate::area_size()).is_ok() {
        // SAFETY: mapped and aligned (checked); a corrupted area faults in
        // xrstor, which the app's handler caused (reported as a runtime fault).
        unsafe { xstate::restore_from(fp as *const u8) };
    }
    let mut regs = uc.mcontext.regs;
    // Only the flags an app may change (CF PF AF ZF SF TF DF OF AC, and RF).
    let user_flags = 0x1_0000 | 0x4_0000 | 0xdd5 | 0x100;
    regs.rflags = (regs.rflags & user_flags) | 0x202;
    let mut t = TrapFrame::default();
    regs.to_trap(&mut t);
    crate::sched::safe_point();
    deliver_at_trap_exit(&mut t);
    crate::arch::x86_64::trap::resume(&t)
}
