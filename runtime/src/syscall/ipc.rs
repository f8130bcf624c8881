//! Pipes, eventfds and Unix socket pairs, and the socket calls that apply
//! to them (the network stack, and `socket(AF_INET)`, come as a component).

use super::fs::{may_wait, read_waiting, write_waiting, O_CLOEXEC, O_NONBLOCK};
use super::SysResult;
use crate::errno::*;
use crate::fs::eventfd::EventFd;
use crate::fs::fdtable::{self, FdEntry};
use crate::fs::{pipe, File};
use crate::mm::user;
use crate::net::{self, Socket};
use crate::sched::Wake;
use alloc::sync::Arc;

const AF_UNIX: u64 = 1;
const SOCK_STREAM: u64 = 1;
const SOCK_NONBLOCK: u64 = 0o4000;
const SOCK_CLOEXEC: u64 = 0o2000000;
const MSG_DONTWAIT: u64 = 0x40;
const MSG_NOSIGNAL: u64 = 0x4000;

fn install_pair(
    a: Arc<dyn File>,
    b: Arc<dyn File>,
    flags: u64,
    fa: u32,
    fb: u32,
    out: u64,
) -> SysResult {
    let cloexec = flags & O_CLOEXEC != 0;
    let nb = (flags & O_NONBLOCK) as u32;
    let fds = fdtable::with(|t| {
        let x = t.install(FdEntry {
            file: a,
            cloexec,
            flags: fa | nb,
        })?;
        match t.install(FdEntry {
            file: b,
            cloexec,
            flags: fb | nb,
        }) {
            Ok(y) => Ok([x as i32, y as i32]),
            Err(e) => {
                let _ = t.close(x as i64);
                Err(e)
            }
        }
    })?;
    if let Err(e) = user::write(out, fds) {
        fdtable::with(|t| {
            let _ = t.close(fds[0] as i64);
            let _ = t.close(fds[1] as i64);
        });
        return Err(e);
    }
    Ok(0)
}

pub fn pipe2(fds: u64, flags: u64) -> SysResult {
    if flags & !(O_CLOEXEC | O_NONBLOCK | 0o40000) != 0 {
        return Err(EINVAL);
    }
    let (r, w) = pipe::pipe();
    install_pair(Arc::new(r), Arc::new(w), flags, 0, 1, fds)
}

pub fn eventfd2(initval: u64, flags: u64) -> SysResult {
    const EFD_SEMAPHORE: u64 = 1;
    if flags & !(O_CLOEXEC | O_NONBLOCK | EFD_SEMAPHORE) != 0 {
        return Err(EINVAL);
    }
    let file: Arc<dyn File> = Arc::new(EventFd::new(
        initval as u32 as u64,
        flags & EFD_SEMAPHORE != 0,
    ));
    let e = FdEntry {
        file,
        cloexec: flags & O_CLOEXEC != 0,
        flags: 2 | (flags & O_NONBLOCK) as u32,
    };
    Ok(fdtable::with(|t| t.install(e))? as i64)
}

pub fn socketpair(domain: u64, ty: u64, _proto: u64, sv: u64) -> SysResult {
    if domain != AF_UNIX {
        return Err(EAFNOSUPPORT);
    }
    if ty & !(SOCK_NONBLOCK | SOCK_CLOEXEC) != SOCK_STREAM {
        return Err(EOPNOTSUPP);
    }
    let (a, b) = pipe::socketpair();
    let flags = (if ty & SOCK_CLOEXEC != 0 { O_CLOEXEC } else { 0 }) | (ty & SOCK_NONBLOCK);
    install_pair(Arc::new(a), Arc::new(b), flags, 2, 2, sv)
}

/// `socket`: served by the network component's provider when the kernel
/// has one, `EAFNOSUPPORT` otherwise.
pub fn socket(domain: u64, ty: u64, proto: u64) -> SysResult {
    let flags = ty & (SOCK_NONBLOCK | SOCK_CLOEXEC);
    let base = ty & !(SOCK_NONBLOCK | SOCK_CLOEXEC);
    if base > u32::MAX as u64 || domain > u32::MAX as u64 || proto > u32::MAX as u64 {
        return Err(EINVAL);
    }
    let Some(p) = crate::component::socket_provider(domain as u32) else {
        return Err(EAFNOSUPPORT);
    };
    let file = p.socket(domain as u32, base as u32, proto as u32)?;
    let e = FdEntry {
        file,
        cloexec: flags & SOCK_CLOEXEC != 0,
        flags: 2 | (flags & SOCK_NONBLOCK) as u32,
    };
    Ok(fdtable::with(|t| t.install(e))? as i64)
}

/// The longest socket address accepted from the app (`sockaddr_storage`).
const MAX_ADDR: u64 = 128;

fn addr_in(addr: u64, len: u64) -> Result<alloc::vec::Vec<u8>, Errno> {
    if len > MAX_ADDR {
        return Err(EINVAL);
    }
    if addr == 0 {
        return if len == 0 {
            Ok(alloc::vec::Vec::new())
        } else {
            Err(EFAULT)
        };
    }
    Ok(user::bytes(addr, len as usize)?.to_vec())
}

/// Copy a socket address out as Linux does: truncated to the caller's
/// buffer, `*alen` set to the full length.
fn addr_out(addr: u64, alen: u64, bytes: &[u8]) -> Result<(), Errno> {
    if addr == 0 || alen == 0 {
        return Ok(());
    }
    let room = user::read::<u32>(alen)?;
    if (room as i32) < 0 {
        return Err(EINVAL);
    }
    let n = (room as usize).min(bytes.len());
    user::bytes_mut(addr, n)?.copy_from_slice(&bytes[..n]);
    user::write(alen, bytes.len() as u32)
}

fn net(e: &FdEntry) -> Result<&dyn Socket, Errno> {
    e.file.as_socket().ok_or(ENOTSOCK)
}

/// A socket timeout option (`SO_RCVTIMEO`/`SO_SNDTIMEO`) as a deadline.
fn timeout_deadline(s: &dyn Socket, name: i32) -> Option<u64> {
    let v = s.getsockopt(net::SOL_SOCKET, name).ok()?;
    if v.len() < 16 {
        return None;
    }
    let sec = i64::from_le_bytes(v[0..8].try_into().ok()?);
    let usec = i64::from_le_bytes(v[8..16].try_into().ok()?);
    if sec <= 0 && usec <= 0 {
        return None;
    }
    let ns = (sec as u64).saturating_mul(1_000_000_000) + (usec as u64) * 1000;
    Some(crate::platform().monotonic_ns().saturating_add(ns))
}

/// Wait for readiness on a blocking socket; EINTR on a signal, EAGAIN at
/// the socket's timeout.
fn wait(deadline: Option<u64>) -> Result<(), Errno> {
    match crate::sched::wait_io(deadline) {
        Wake::Interrupted => Err(EINTR),
        Wake::Timeout => Err(EAGAIN),
        Wake::Event => Ok(()),
    }
}

pub fn bind(fd: u64, addr: u64, len: u64) -> SysResult {
    let e = sock(fd)?;
    let a = addr_in(addr, len)?;
    net(&e)?.bind(&a).map(|_| 0)
}

pub fn listen(fd: u64, backlog: u64) -> SysResult {
    let e = sock(fd)?;
    net(&e)?.listen(backlog as i32).map(|_| 0)
}

pub fn connect(fd: u64, addr: u64, len: u64) -> SysResult {
    let e = sock(fd)?;
    let s = net(&e)?;
    let a = addr_in(addr, len)?;
    match s.connect(&a) {
        Err(EINPROGRESS) if may_wait(&e, false) => {
            let deadline = timeout_deadline(s, net::SO_SNDTIMEO);
            loop {
                match s.connect_result() {
                    Err(EAGAIN) => match wait(deadline) {
                        Ok(()) => {}
                        Err(EAGAIN) => return Err(EINPROGRESS),
                        Err(err) => return Err(err),
                    },
                    r => return r.map(|_| 0),
                }
            }
        }
        r => r.map(|_| 0),
    }
}

pub fn accept4(fd: u64, addr: u64, alen: u64, flags: u64) -> SysResult {
    if flags & !(SOCK_NONBLOCK | SOCK_CLOEXEC) != 0 {
        return Err(EINVAL);
    }
    let e = sock(fd)?;
    let s = net(&e)?;
    let deadline = timeout_deadline(s, net::SO_RCVTIMEO);
    let (file, peer) = loop {
        match s.accept() {
            Err(EAGAIN) if may_wait(&e, false) => wait(deadline)?,
            r => break r?,
        }
    };
    let entry = FdEntry {
        file,
        cloexec: flags & SOCK_CLOEXEC != 0,
        flags: 2 | (flags & SOCK_NONBLOCK) as u32,
    };
    let nfd = fdtable::with(|t| t.install(entry))?;
    if let Err(err) = addr_out(addr, alen, &peer) {
        fdtable::with(|t| {
            let _ = t.close(nfd as i64);
        });
        return Err(err);
    }
    Ok(nfd as i64)
}

fn sock(fd: u64) -> Result<FdEntry, Errno> {
    let e = fdtable::file(fd as i64)?;
    if !e.file.is_socket() {
        return Err(ENOTSOCK);
    }
    Ok(e)
}

/// Send on a network socket: a stream socket on a blocking descriptor
/// sends everything (waiting for room), like `write`; EPIPE raises
/// SIGPIPE unless MSG_NOSIGNAL.
pub(super) fn net_send(
    e: &FdEntry,
    s: &dyn Socket,
    b: &[u8],
    flags: u64,
    to: Option<&[u8]>,
) -> SysResult {
    let dontwait = flags & MSG_DONTWAIT != 0;
    let blocking = may_wait(e, dontwait);
    let deadline = if blocking {
        timeout_deadline(s, net::SO_SNDTIMEO)
    } else {
        None
    };
    let mut done = 0;
    loop {
        match s.send_to(&b[done..], flags as u32, to) {
            Ok(n) => {
                done += n;
                if done >= b.len() || !blocking || s.sock_type() != net::SOCK_STREAM {
                    return Ok(done as i64);
                }
            }
            Err(EAGAIN) if blocking => match wait(deadline) {
                Ok(()) => {}
                Err(err) if done > 0 => {
                    let _ = err;
                    return Ok(done as i64);
                }
                Err(err) => return Err(err),
            },
            Err(_) if done > 0 => return Ok(done as i64),
            Err(err) => {
                if err == EPIPE && flags & MSG_NOSIGNAL == 0 {
                    let tid = crate::sched::current_tid();
                    let _ = crate::signal::send_thread(
                        tid,
                        crate::signal::SIGPIPE,
                        crate::signal::SI_USER,
                    );
                }
                return Err(err);
            }
        }
    }
}

/// Receive on a network socket, waiting on a blocking descriptor;
/// MSG_WAITALL fills the whole buffer on stream sockets.
fn net_recv(
    e: &FdEntry,
    s: &dyn Socket,
    b: &mut [u8],
    flags: u64,
) -> Result<(usize, usize, Option<alloc::vec::Vec<u8>>), Errno> {
    let dontwait = flags & MSG_DONTWAIT != 0;
    let blocking = may_wait(e, dontwait);
    let deadline = if blocking {
        timeout_deadline(s, net::SO_RCVTIMEO)
    } else {
        None
    };
    let waitall = flags & net::MSG_WAITALL as u64 != 0
        && flags & net::MSG_PEEK as u64 == 0
        && s.sock_type() == net::SOCK_STREAM;
    let mut done = 0;
    loop {
        match s.recv_from(&mut b[done..], flags as u32) {
            Ok((n, full, from)) => {
                done += n;
                if !waitall || n == 0 || done >= b.len() {
                    return Ok((done, full.max(done), from));
                }
            }
            Err(EAGAIN) if blocking => match wait(deadline) {
                Ok(()) => {}
                Err(_) if done > 0 => return Ok((done, done, None)),
                Err(err) => return Err(err),
            },
            Err(_) if done > 0 => return Ok((done, done, None)),
            Err(err) => return Err(err),
        }
    }
}

pub fn sendto(fd: u64, buf: u64, len: u64, flags: u64, addr: u64, alen: u64) -> SysResult {
    let e = sock(fd)?;
    let b = user::bytes(buf, len as usize)?;
    if let Some(s) = e.file.as_socket() {
        let to = if addr != 0 {
            Some(addr_in(addr, alen)?)
        } else {
            None
        };
        return net_send(&e, s, b, flags, to.as_deref());
    }
    if addr != 0 {
        return Err(EISCONN);
    }
    write_waiting(&e, b, flags & MSG_DONTWAIT != 0, flags & MSG_NOSIGNAL != 0).map(|n| n as i64)
}

pub fn recvfrom(fd: u64, buf: u64, len: u64, flags: u64, addr: u64, alen: u64) -> SysResult {
    let e = sock(fd)?;
    let b = user::bytes_mut(buf, len as usize)?;
    if let Some(s) = e.file.as_socket() {
        let (n, full, from) = net_recv(&e, s, b, flags)?;
        if let Some(from) = from {
            addr_out(addr, alen, &from)?;
        } else if addr != 0 && alen != 0 {
            user::write(alen, 0u32)?;
        }
        return Ok(if flags & net::MSG_TRUNC as u64 != 0 {
            full
        } else {
            n
        } as i64);
    }
    let n = read_waiting(&e, b, flags & MSG_DONTWAIT != 0)?;
    if addr != 0 && alen != 0 {
        user::write(alen, 0u32)?;
    }
    Ok(n as i64)
}

#[repr(C)]
#[derive(Clone, Copy)]
struct MsgHdr {
    name: u64,
    namelen: u32,
    _pad: u32,
    iov: u64,
    iovlen: u64,
    control: u64,
    controllen: u64,
    flags: i32,
    _pad2: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Iovec {
    base: u64,
    len: u64,
}

/// The iovec array of a message, gathered (at most IOV_MAX entries).
fn iovecs(m: &MsgHdr) -> Result<alloc::vec::Vec<Iovec>, Errno> {
    if m.iovlen > 1024 {
        return Err(EMSGSIZE);
    }
    (0..m.iovlen)
        .map(|i| user::read::<Iovec>(m.iov + i * 16))
        .collect()
}

pub fn sendmsg(fd: u64, msg: u64, flags: u64) -> SysResult {
    let e = sock(fd)?;
    let m = user::read::<MsgHdr>(msg)?;
    if let Some(s) = e.file.as_socket() {
        // One send of the gathered bytes keeps datagrams whole.
        let mut data = alloc::vec::Vec::new();
        for v in iovecs(&m)? {
            data.extend_from_slice(user::bytes(v.base, v.len as usize)?);
        }
        let to = if m.name != 0 && m.namelen != 0 {
            Some(addr_in(m.name, m.namelen as u64)?)
        } else {
            None
        };
        return net_send(&e, s, &data, flags, to.as_deref());
    }
    let mut total = 0usize;
    for v in iovecs(&m)? {
        let b = user::bytes(v.base, v.len as usize)?;
        match write_waiting(&e, b, flags & MSG_DONTWAIT != 0, flags & MSG_NOSIGNAL != 0) {
            Ok(n) => {
                total += n;
                if n < b.len() {
                    break;
                }
            }
            Err(_) if total > 0 => break,
            Err(err) => return Err(err),
        }
    }
    Ok(total as i64)
}

pub fn recvmsg(fd: u64, msg: u64, flags: u64) -> SysResult {
    let e = sock(fd)?;
    let mut m = user::read::<MsgHdr>(msg)?;
    if let Some(s) = e.file.as_socket() {
        let vecs = iovecs(&m)?;
        let want: usize = vecs.iter().map(|v| v.len as usize).sum();
        let mut data = alloc::vec![0u8; want.min(1 << 20)];
        let (n, full, from) = net_recv(&e, s, &mut data, flags)?;
        let mut off = 0;
        for v in vecs {
            if off >= n {
                break;
            }
            let k = (v.len as usize).min(n - off);
            user::bytes_mut(v.base, k)?.copy_from_slice(&data[off..off + k]);
            off += k;
        }
        m.flags = if full > n { net::MSG_TRUNC as i32 } else { 0 };
        match from {
            Some(from) if m.name != 0 => {
                let k = (m.namelen as usize).min(from.len());
                user::bytes_mut(m.name, k)?.copy_from_slice(&from[..k]);
                m.namelen = from.len() as u32;
            }
            _ => m.namelen = 0,
        }
        m.controllen = 0;
        user::write(msg, m)?;
        return Ok(if flags & net::MSG_TRUNC as u64 != 0 {
            full
        } else {
            n
        } as i64);
    }
    let mut total = 0usize;
    for v in iovecs(&m)? {
        let b = user::bytes_mut(v.base, v.len as usize)?;
        match read_waiting(&e, b, flags & MSG_DONTWAIT != 0 || total > 0) {
            Ok(n) => {
                total += n;
                if n < b.len() {
                    break;
                }
            }
            Err(_) if total > 0 => break,
            Err(err) => return Err(err),
        }
    }
    m.namelen = 0;
    m.controllen = 0;
    m.flags = 0;
    user::write(msg, m)?;
    Ok(total as i64)
}

pub fn shutdown(fd: u64, how: u64) -> SysResult {
    sock(fd)?.file.shutdown(how as u32).map(|_| 0)
}

/// getsockname/getpeername: a network socket's addresses, or an unnamed
/// AF_UNIX address for a socket pair.
pub fn getsockname(fd: u64, addr: u64, alen: u64, peer: bool) -> SysResult {
    let e = sock(fd)?;
    if let Some(s) = e.file.as_socket() {
        let a = if peer {
            s.peer_addr()?
        } else {
            s.local_addr()?
        };
        addr_out(addr, alen, &a)?;
        return Ok(0);
    }
    let len = user::read::<u32>(alen)?;
    if len >= 2 {
        user::write(addr, AF_UNIX as u16)?;
    }
    user::write(alen, 2u32)?;
    Ok(0)
}

pub fn setsockopt(fd: u64, level: u64, name: u64, val: u64, len: u64) -> SysResult {
    let e = sock(fd)?;
    if let Some(s) = e.file.as_socket() {
        if len > 256 {
            return Err(EINVAL);
        }
        let v = if len == 0 {
            alloc::vec::Vec::new()
        } else {
            user::bytes(val, len as usize)?.to_vec()
        };
        return s.setsockopt(level as i32, name as i32, &v).map(|_| 0);
    }
    Ok(0)
}

const SO_TYPE: u64 = 3;
const SO_ERROR: u64 = 4;

pub fn getsockopt(fd: u64, level: u64, name: u64, val: u64, len: u64) -> SysResult {
    let e = sock(fd)?;
    if let Some(s) = e.file.as_socket() {
        let v = s.getsockopt(level as i32, name as i32)?;
        let room = user::read::<u32>(len)?;
        if (room as i32) < 0 {
            return Err(EINVAL);
        }
        let n = (room as usize).min(v.len());
        user::bytes_mut(val, n)?.copy_from_slice(&v[..n]);
        user::write(len, n as u32)?;
        return Ok(0);
    }
    let v: i32 = match (level, name) {
        (1, SO_ERROR) => 0,
        (1, SO_TYPE) => SOCK_STREAM as i32,
        _ => return Err(ENOPROTOOPT),
    };
    if user::read::<u32>(len)? < 4 {
        return Err(EINVAL);
    }
    user::write(val, v)?;
    user::write(len, 4u32)?;
    Ok(0)
}
