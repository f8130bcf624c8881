//! Readiness: poll, ppoll, select, pselect6 and epoll. All of them scan
//! the files' readiness and, when nothing is ready, wait with the
//! scheduler's one I/O wait until something changes, a deadline passes or
//! a signal arrives.

use super::SysResult;
use crate::errno::*;
use crate::fs::epoll::{self, Epoll};
use crate::fs::fdtable::{self, FdEntry};
use crate::fs::{POLLERR, POLLHUP, POLLIN, POLLNVAL, POLLOUT, POLLPRI};
use crate::mm::user;
use crate::sched::{self, Wake};
use crate::time::Timespec;
use alloc::sync::Arc;
use alloc::vec::Vec;

/// Wait for I/O until `deadline`; Err(EINTR) on a signal, Ok(false) on timeout.
fn wait(deadline: Option<u64>) -> Result<bool, Errno> {
    if deadline.is_some_and(|d| crate::platform().monotonic_ns() >= d) {
        return Ok(false);
    }
    match sched::wait_io(deadline) {
        Wake::Interrupted => Err(EINTR),
        Wake::Timeout => Ok(false),
        Wake::Event => Ok(true),
    }
}

fn deadline_ms(ms: i64) -> Option<u64> {
    (ms >= 0).then(|| {
        crate::platform()
            .monotonic_ns()
            .saturating_add(ms as u64 * 1_000_000)
    })
}

fn deadline_ts(tsp: u64) -> Result<Option<u64>, Errno> {
    if tsp == 0 {
        return Ok(None);
    }
    let ts = user::read::<Timespec>(tsp)?;
    Ok(Some(
        crate::platform().monotonic_ns().saturating_add(ts.to_ns()?),
    ))
}

#[repr(C)]
#[derive(Clone, Copy)]
struct PollFd {
    fd: i32,
    events: i16,
    revents: i16,
}

fn poll_scan(fds: &mut [PollFd]) -> i64 {
    crate::fs::new_scan();
    let mut ready = 0;
    for p in fds.iter_mut() {
        p.revents = 0;
        if p.fd < 0 {
            continue;
        }
        p.revents = match fdtable::file(p.fd as i64) {
            Ok(e) => (e.file.poll_ready() & (p.events as u16 | POLLERR | POLLHUP)) as i16,
            Err(_) => POLLNVAL as i16,
        };
        if p.revents != 0 {
            ready += 1;
        }
    }
    ready
}

fn poll_common(ufds: u64, n: u64, deadline: Option<u64>) -> SysResult {
    if n > fdtable::MAX_FDS as u64 {
        return Err(EINVAL);
    }
    let mut fds: Vec<PollFd> = (0..n)
        .map(|i| user::read::<PollFd>(ufds + i * 8))
        .collect::<Result<_, _>>()?;
    loop {
        let ready = poll_scan(&mut fds);
        if ready > 0 || !wait(deadline)? {
            for (i, p) in fds.iter().enumerate() {
                user::write(ufds + i as u64 * 8, *p)?;
            }
            return Ok(ready);
        }
    }
}

pub fn poll(fds: u64, n: u64, timeout_ms: u64) -> SysResult {
    poll_common(fds, n, deadline_ms(timeout_ms as i32 as i64))
}

pub fn ppoll(fds: u64, n: u64, tsp: u64, _sigmask: u64) -> SysResult {
    poll_common(fds, n, deadline_ts(tsp)?)
}

const FD_SETSIZE: u64 = 1024;

fn read_set(p: u64, nfds: u64) -> Result<Vec<u64>, Errno> {
    let words = nfds.div_ceil(64);
    if p == 0 {
        return Ok(alloc::vec![0; words as usize]);
    }
    (0..words).map(|i| user::read::<u64>(p + i * 8)).collect()
}

fn select_common(nfds: u64, r: u64, w: u64, x: u64, deadline: Option<u64>) -> SysResult {
    if nfds > FD_SETSIZE {
        return Err(EINVAL);
    }
    let (rin, win, xin) = (read_set(r, nfds)?, read_set(w, nfds)?, read_set(x, nfds)?);
    let words = rin.len();
    loop {
        let (mut rout, mut wout, mut xout) = (
            alloc::vec![0u64; words],
            alloc::vec![0u64; words],
            alloc::vec![0u64; words],
        );
        let mut count = 0;
        crate::fs::new_scan();
        for fd in 0..nfds {
            let (wi, b) = ((fd / 64) as usize, 1u64 << (fd % 64));
            let wanted = (rin[wi] | win[wi] | xin[wi]) & b != 0;
            if !wanted {
                continue;
            }
            let ready = fdtable::file(fd as i64)
                .map_err(|_| EBADF)?
                .file
                .poll_ready();
            if rin[wi] & b != 0 && ready & (POLLIN | POLLHUP | POLLERR) != 0 {
                rout[wi] |= b;
                count += 1;
            }
            if win[wi] & b != 0 && ready & (POLLOUT | POLLERR) != 0 {
                wout[wi] |= b;
                count += 1;
            }
            if xin[wi] & b != 0 && ready & POLLPRI != 0 {
                xout[wi] |= b;
                count += 1;
            }
        }
        if count > 0 || !wait(deadline)? {
            for (p, set) in [(r, &rout), (w, &wout), (x, &xout)] {
                if p != 0 {
                    for (i, v) in set.iter().enumerate() {
                        user::write(p + i as u64 * 8, *v)?;
                    }
                }
            }
            return Ok(count);
        }
    }
}

pub fn select(nfds: u64, r: u64, w: u64, x: u64, tvp: u64) -> SysResult {
    let deadline = if tvp == 0 {
        None
    } else {
        let [sec, usec] = user::read::<[i64; 2]>(tvp)?;
        if sec < 0 || !(0..1_000_000).contains(&usec) {
            return Err(EINVAL);
        }
        let ns = (sec as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(usec as u64 * 1000);
        Some(crate::platform().monotonic_ns().saturating_add(ns))
    };
    select_common(nfds, r, w, x, deadline)
}

pub fn pselect6(nfds: u64, r: u64, w: u64, x: u64, tsp: u64) -> SysResult {
    select_common(nfds, r, w, x, deadline_ts(tsp)?)
}

pub fn epoll_create1(flags: u64) -> SysResult {
    let cloexec = super::fs::O_CLOEXEC;
    if flags & !cloexec != 0 {
        return Err(EINVAL);
    }
    let file: Arc<dyn crate::fs::File> = Arc::new(Epoll::new());
    let e = FdEntry {
        file,
        cloexec: flags & cloexec != 0,
        flags: 2,
    };
    Ok(fdtable::with(|t| t.install(e))? as i64)
}

fn epoll_of(epfd: u64) -> Result<FdEntry, Errno> {
    let e = fdtable::file(epfd as i64)?;
    if e.file.as_epoll().is_none() {
        return Err(EINVAL);
    }
    Ok(e)
}

/// `struct epoll_event` is packed on x86_64: u32 events, u64 data (12 bytes).
pub fn epoll_ctl(epfd: u64, op: u64, fd: u64, event: u64) -> SysResult {
    let ep = epoll_of(epfd)?;
    let target = fdtable::file(fd as i64)?;
    if fd == epfd {
        return Err(EINVAL);
    }
    let (events, data) = if op == epoll::EPOLL_CTL_DEL {
        (0, 0)
    } else {
        let raw = user::read::<[u8; 12]>(event)?;
        let ev = u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]);
        let mut d = [0u8; 8];
        d.copy_from_slice(&raw[4..12]);
        (ev, u64::from_le_bytes(d))
    };
    ep.file
        .as_epoll()
        .ok_or(EINVAL)?
        .ctl(op, fd as i32, &target.file, events, data)?;
    Ok(0)
}

pub fn epoll_wait(epfd: u64, events: u64, max: u64, timeout_ms: u64) -> SysResult {
    let max = max as i32;
    if max <= 0 {
        return Err(EINVAL);
    }
    let ep = epoll_of(epfd)?;
    user::bytes_mut(events, max as usize * 12)?;
    let deadline = deadline_ms(timeout_ms as i32 as i64);
    loop {
        let ready = ep.file.as_epoll().ok_or(EINVAL)?.collect(max as usize);
        if !ready.is_empty() || !wait(deadline)? {
            for (i, (ev, data)) in ready.iter().enumerate() {
                let mut raw = [0u8; 12];
                raw[..4].copy_from_slice(&ev.to_le_bytes());
                raw[4..].copy_from_slice(&data.to_le_bytes());
                user::write(events + i as u64 * 12, raw)?;
            }
            return Ok(ready.len() as i64);
        }
    }
}
