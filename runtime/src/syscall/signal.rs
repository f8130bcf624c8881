//! kill, tkill, tgkill: signals the app sends to itself (there is no other process).

use super::SysResult;
use crate::errno::*;
use crate::signal::{self as sig, SI_TKILL};

fn is_self(pid: u64) -> bool {
    let pid = pid as i64;
    pid == super::process::PID || pid == 0 || pid == -1
}

pub fn kill(pid: u64, signo: u64) -> SysResult {
    if !is_self(pid) {
        return Err(ESRCH);
    }
    sig::send_process(u32::try_from(signo).map_err(|_| EINVAL)?).map(|_| 0)
}

pub fn tkill(tid: u64, signo: u64) -> SysResult {
    let tid = i32::try_from(tid as i64).map_err(|_| EINVAL)?;
    if tid <= 0 {
        return Err(EINVAL);
    }
    sig::send_thread(tid, u32::try_from(signo).map_err(|_| EINVAL)?, SI_TKILL).map(|_| 0)
}

pub fn tgkill(tgid: u64, tid: u64, signo: u64) -> SysResult {
    if tgid as i64 != super::process::PID {
        return Err(ESRCH);
    }
    tkill(tid, signo)
}
