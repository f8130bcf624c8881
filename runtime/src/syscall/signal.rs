//! Signals: dispositions, the mask and the alternate stack are recorded
//! (delivery comes with threads); a signal sent to ourselves takes its
//! default action, which for every signal we can be sent is to end the
//! process with 128 + the signal number.

use super::SysResult;
use crate::errno::*;
use crate::mm::user;
use spin::Mutex;

pub const NSIG: u64 = 64;
const SIGKILL: u64 = 9;
const SIGSTOP: u64 = 19;
const SIG_IGN: u64 = 1;

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct SigAction {
    pub handler: u64,
    pub flags: u64,
    pub restorer: u64,
    pub mask: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct StackT {
    pub sp: u64,
    pub flags: i32,
    pub _pad: i32,
    pub size: u64,
}

struct Signals {
    actions: [SigAction; NSIG as usize],
    mask: u64,
    altstack: StackT,
}

const SS_DISABLE: i32 = 2;
const MINSIGSTKSZ: u64 = 2048;

static SIGNALS: Mutex<Signals> = Mutex::new(Signals {
    actions: [SigAction {
        handler: 0,
        flags: 0,
        restorer: 0,
        mask: 0,
    }; NSIG as usize],
    mask: 0,
    altstack: StackT {
        sp: 0,
        flags: SS_DISABLE,
        _pad: 0,
        size: 0,
    },
});

pub fn rt_sigaction(sig: u64, act: u64, oact: u64, size: u64) -> SysResult {
    if size != 8 || sig == 0 || sig > NSIG {
        return Err(EINVAL);
    }
    let new = if act != 0 {
        Some(user::read::<SigAction>(act)?)
    } else {
        None
    };
    if new.is_some() && (sig == SIGKILL || sig == SIGSTOP) {
        return Err(EINVAL);
    }
    let mut s = SIGNALS.lock();
    let slot = &mut s.actions[sig as usize - 1];
    if oact != 0 {
        user::write(oact, *slot)?;
    }
    if let Some(n) = new {
        *slot = n;
    }
    Ok(0)
}

pub fn rt_sigprocmask(how: u64, set: u64, oset: u64, size: u64) -> SysResult {
    if size != 8 {
        return Err(EINVAL);
    }
    let mut s = SIGNALS.lock();
    if oset != 0 {
        user::write(oset, s.mask)?;
    }
    if set != 0 {
        let v = user::read::<u64>(set)?;
        let unblockable = (1 << (SIGKILL - 1)) | (1 << (SIGSTOP - 1));
        s.mask = match how {
            0 => s.mask | v,
            1 => s.mask & !v,
            2 => v,
            _ => return Err(EINVAL),
        } & !unblockable;
    }
    Ok(0)
}

pub fn sigaltstack(ss: u64, old: u64) -> SysResult {
    let mut s = SIGNALS.lock();
    if old != 0 {
        user::write(old, s.altstack)?;
    }
    if ss != 0 {
        let n = user::read::<StackT>(ss)?;
        if n.flags & !SS_DISABLE != 0 {
            return Err(EINVAL);
        }
        if n.flags & SS_DISABLE == 0 && n.size < MINSIGSTKSZ {
            return Err(ENOMEM);
        }
        s.altstack = n;
    }
    Ok(0)
}

/// Deliver `sig` to ourselves.
fn raise(sig: u64) -> SysResult {
    if sig == 0 {
        return Ok(0);
    }
    if sig > NSIG {
        return Err(EINVAL);
    }
    let handler = SIGNALS.lock().actions[sig as usize - 1].handler;
    // Ignored, or a default action of "ignore" (SIGCHLD, SIGURG, SIGWINCH, SIGCONT).
    if handler == SIG_IGN || (handler == 0 && matches!(sig, 17 | 18 | 23 | 28)) {
        return Ok(0);
    }
    crate::fault::killed_by_signal(sig as u32)
}

fn is_self(pid: u64) -> bool {
    pid as i64 == super::process::PID || pid == 0 || pid as i64 == -1
}

pub fn kill(pid: u64, sig: u64) -> SysResult {
    if !is_self(pid) {
        return Err(ESRCH);
    }
    raise(sig)
}

pub fn tkill(tid: u64, sig: u64) -> SysResult {
    if tid as i64 != super::process::PID {
        return Err(ESRCH);
    }
    raise(sig)
}

pub fn tgkill(tgid: u64, tid: u64, sig: u64) -> SysResult {
    if tgid as i64 != super::process::PID {
        return Err(ESRCH);
    }
    tkill(tid, sig)
}
