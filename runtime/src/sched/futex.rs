//! Futexes: wait on a 32-bit word of app memory, wake by address.
//!
//! One address space, so private and shared futexes are the same thing:
//! both are keyed by virtual address. Checking the word and blocking are
//! atomic here because nothing preempts the runtime (ticks that hit it are
//! deferred).

use super::{block, with, WaitOn, Wake};
use crate::errno::*;
use crate::mm::user;
use crate::time::Timespec;

pub const FUTEX_WAIT: u64 = 0;
pub const FUTEX_WAKE: u64 = 1;
pub const FUTEX_REQUEUE: u64 = 3;
pub const FUTEX_CMP_REQUEUE: u64 = 4;
pub const FUTEX_WAKE_OP: u64 = 5;
pub const FUTEX_WAIT_BITSET: u64 = 9;
pub const FUTEX_WAKE_BITSET: u64 = 10;
pub const FUTEX_PRIVATE_FLAG: u64 = 128;
pub const FUTEX_CLOCK_REALTIME: u64 = 256;
const BITSET_MATCH_ANY: u32 = u32::MAX;

/// Wake up to `n` waiters on `addr` whose bitset intersects `bitset`.
pub fn wake(addr: u64, bitset: u32, n: usize) -> usize {
    with(|s| {
        s.wake_where(
            n,
            |w| matches!(w, WaitOn::Futex { addr: a, bitset: b } if *a == addr && b & bitset != 0),
        )
    })
}

fn wait(addr: u64, val: u32, bitset: u32, deadline: Option<u64>) -> Result<i64, Errno> {
    if user::read::<u32>(addr)? != val {
        return Err(EAGAIN);
    }
    match block(WaitOn::Futex { addr, bitset }, deadline) {
        Wake::Event => Ok(0),
        Wake::Timeout => Err(ETIMEDOUT),
        Wake::Interrupted => Err(EINTR),
    }
}

/// `FUTEX_WAKE_OP`: `*addr2 = op(*addr2, oparg)`; wake `n` on addr, and
/// `n2` on addr2 if the old value passes the comparison.
fn wake_op(addr: u64, n: usize, addr2: u64, n2: usize, encoded: u32) -> Result<i64, Errno> {
    let op = (encoded >> 28) & 7;
    let shift = encoded & (8 << 28) != 0;
    let cmp = (encoded >> 24) & 15;
    let mut oparg = (encoded >> 12) & 0xfff;
    let cmparg = encoded & 0xfff;
    if shift {
        oparg = 1u32.checked_shl(oparg).unwrap_or(0);
    }
    let old = user::read::<u32>(addr2)?;
    let new = match op {
        0 => oparg,
        1 => old.wrapping_add(oparg),
        2 => old | oparg,
        3 => old & !oparg,
        4 => old ^ oparg,
        _ => return Err(ENOSYS),
    };
    user::write(addr2, new)?;
    let pass = match cmp {
        0 => old == cmparg,
        1 => old != cmparg,
        2 => old < cmparg,
        3 => old <= cmparg,
        4 => old > cmparg,
        5 => old >= cmparg,
        _ => return Err(ENOSYS),
    };
    let mut woken = wake(addr, BITSET_MATCH_ANY, n);
    if pass {
        woken += wake(addr2, BITSET_MATCH_ANY, n2);
    }
    Ok(woken as i64)
}

/// The `futex` system call.
pub fn futex(
    uaddr: u64,
    op: u64,
    val: u64,
    timeout: u64,
    uaddr2: u64,
    val3: u64,
) -> Result<i64, Errno> {
    if uaddr & 3 != 0 {
        return Err(EINVAL);
    }
    let cmd = op & !(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME);
    let count = |v: u64| (v as u32).min(i32::MAX as u32) as usize;
    match cmd {
        FUTEX_WAIT | FUTEX_WAIT_BITSET => {
            let bitset = if cmd == FUTEX_WAIT {
                BITSET_MATCH_ANY
            } else {
                val3 as u32
            };
            if bitset == 0 {
                return Err(EINVAL);
            }
            let deadline = if timeout == 0 {
                None
            } else {
                let t = user::read::<Timespec>(timeout)?.to_ns()?;
                Some(if cmd == FUTEX_WAIT {
                    // Relative, on CLOCK_MONOTONIC.
                    crate::platform().monotonic_ns().saturating_add(t)
                } else {
                    // Absolute, on CLOCK_MONOTONIC or (with the flag)
                    // CLOCK_REALTIME. The clock is read before the monotonic
                    // base (as clock_nanosleep does): time passing between
                    // the two reads makes the wait later, never earlier than
                    // asked (read the other way round, a vCPU descheduled
                    // between them woke the waiter early).
                    let clk = if op & FUTEX_CLOCK_REALTIME != 0 { 0 } else { 1 };
                    let now = crate::time::now(clk)?;
                    crate::platform()
                        .monotonic_ns()
                        .saturating_add(t.saturating_sub(now))
                })
            };
            wait(uaddr, val as u32, bitset, deadline)
        }
        FUTEX_WAKE | FUTEX_WAKE_BITSET => {
            let bitset = if cmd == FUTEX_WAKE {
                BITSET_MATCH_ANY
            } else {
                val3 as u32
            };
            if bitset == 0 {
                return Err(EINVAL);
            }
            Ok(wake(uaddr, bitset, count(val)) as i64)
        }
        FUTEX_REQUEUE | FUTEX_CMP_REQUEUE => {
            if cmd == FUTEX_CMP_REQUEUE && user::read::<u32>(uaddr)? != val3 as u32 {
                return Err(EAGAIN);
            }
            if uaddr2 & 3 != 0 {
                return Err(EINVAL);
            }
            // `timeout` carries the requeue count (val2).
            let woken = wake(uaddr, BITSET_MATCH_ANY, count(val));
            let moved = with(|s| {
                s.retarget_where(
                    count(timeout),
                    |w| matches!(w, WaitOn::Futex { addr, .. } if *addr == uaddr),
                    WaitOn::Futex {
                        addr: uaddr2,
                        bitset: BITSET_MATCH_ANY,
                    },
                )
            });
            // Linux returns the number woken plus the number requeued.
            Ok((woken + moved) as i64)
        }
        FUTEX_WAKE_OP => wake_op(uaddr, count(val), uaddr2, count(timeout), val3 as u32),
        _ => Err(ENOSYS),
    }
}
