//! Time system calls.

use super::SysResult;
use crate::errno::*;
use crate::mm::user;
use crate::time::{self as clock, Timespec, CLOCK_REALTIME};

pub fn clock_gettime(clk: u64, tp: u64) -> SysResult {
    let ns = clock::now(clk)?;
    user::write(tp, Timespec::from_ns(ns))?;
    Ok(0)
}

pub fn clock_getres(clk: u64, tp: u64) -> SysResult {
    clock::now(clk)?;
    if tp != 0 {
        user::write(tp, Timespec { sec: 0, nsec: 1 })?;
    }
    Ok(0)
}

pub fn gettimeofday(tv: u64, _tz: u64) -> SysResult {
    if tv != 0 {
        let ns = clock::now(CLOCK_REALTIME)?;
        user::write(
            tv,
            [
                (ns / 1_000_000_000) as i64,
                ((ns % 1_000_000_000) / 1000) as i64,
            ],
        )?;
    }
    Ok(0)
}

pub fn time(tloc: u64) -> SysResult {
    let s = (clock::now(CLOCK_REALTIME)? / 1_000_000_000) as i64;
    if tloc != 0 {
        user::write(tloc, s)?;
    }
    Ok(s)
}

/// Sleep until `deadline`; on a signal, EINTR with the time left in `rem`.
fn sleep(deadline: u64, rem: u64) -> SysResult {
    if crate::sched::sleep_until(deadline) {
        return Ok(0);
    }
    if rem != 0 {
        let left = deadline.saturating_sub(crate::platform().monotonic_ns());
        user::write(rem, Timespec::from_ns(left))?;
    }
    Err(EINTR)
}

pub fn nanosleep(req: u64, rem: u64) -> SysResult {
    let d = user::read::<Timespec>(req)?.to_ns()?;
    let now = crate::platform().monotonic_ns();
    sleep(now.saturating_add(d), rem)
}

const TIMER_ABSTIME: u64 = 1;

pub fn clock_nanosleep(clk: u64, flags: u64, req: u64, rem: u64) -> SysResult {
    let t = user::read::<Timespec>(req)?.to_ns()?;
    let now = clock::now(clk)?;
    if clk > 7 || matches!(clk, 2 | 3) {
        return Err(EINVAL);
    }
    let mono = crate::platform().monotonic_ns();
    let deadline = if flags & TIMER_ABSTIME != 0 {
        // Convert an absolute time on `clk` into a monotonic deadline.
        mono.saturating_add(t.saturating_sub(now))
    } else {
        mono.saturating_add(t)
    };
    // The remaining time is reported only for relative sleeps.
    sleep(deadline, if flags & TIMER_ABSTIME != 0 { 0 } else { rem })
}
