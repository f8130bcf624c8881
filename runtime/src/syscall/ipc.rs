//! Pipes, eventfds and Unix socket pairs, and the socket calls that apply
//! to them (the network stack, and `socket(AF_INET)`, come as a component).

use super::fs::{read_waiting, write_waiting, O_CLOEXEC, O_NONBLOCK};
use super::SysResult;
use crate::errno::*;
use crate::fs::eventfd::EventFd;
use crate::fs::fdtable::{self, FdEntry};
use crate::fs::{pipe, File};
use crate::mm::user;
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

/// `socket`: no network stack is linked into this kernel.
pub fn socket(domain: u64, _ty: u64, _proto: u64) -> SysResult {
    let _ = domain;
    Err(EAFNOSUPPORT)
}

pub fn accept4() -> SysResult {
    Err(ENOTSOCK)
}

fn sock(fd: u64) -> Result<FdEntry, Errno> {
    let e = fdtable::file(fd as i64)?;
    if !e.file.is_socket() {
        return Err(ENOTSOCK);
    }
    Ok(e)
}

pub fn sendto(fd: u64, buf: u64, len: u64, flags: u64, addr: u64, _alen: u64) -> SysResult {
    let e = sock(fd)?;
    if addr != 0 {
        return Err(EISCONN);
    }
    let b = user::bytes(buf, len as usize)?;
    write_waiting(&e, b, flags & MSG_DONTWAIT != 0, flags & MSG_NOSIGNAL != 0).map(|n| n as i64)
}

pub fn recvfrom(fd: u64, buf: u64, len: u64, flags: u64, addr: u64, alen: u64) -> SysResult {
    let e = sock(fd)?;
    let b = user::bytes_mut(buf, len as usize)?;
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

pub fn sendmsg(fd: u64, msg: u64, flags: u64) -> SysResult {
    let e = sock(fd)?;
    let m = user::read::<MsgHdr>(msg)?;
    let mut total = 0usize;
    for i in 0..m.iovlen.min(1024) {
        let v = user::read::<Iovec>(m.iov + i * 16)?;
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
    let mut total = 0usize;
    for i in 0..m.iovlen.min(1024) {
        let v = user::read::<Iovec>(m.iov + i * 16)?;
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

/// getsockname/getpeername of a socket pair: an unnamed AF_UNIX address.
pub fn getsockname(fd: u64, addr: u64, alen: u64) -> SysResult {
    sock(fd)?;
    let len = user::read::<u32>(alen)?;
    if len >= 2 {
        user::write(addr, AF_UNIX as u16)?;
    }
    user::write(alen, 2u32)?;
    Ok(0)
}

pub fn setsockopt(fd: u64, _level: u64, _name: u64) -> SysResult {
    sock(fd).map(|_| 0)
}

const SOL_SOCKET: u64 = 1;
const SO_TYPE: u64 = 3;
const SO_ERROR: u64 = 4;

pub fn getsockopt(fd: u64, level: u64, name: u64, val: u64, len: u64) -> SysResult {
    sock(fd)?;
    let v: i32 = match (level, name) {
        (SOL_SOCKET, SO_ERROR) => 0,
        (SOL_SOCKET, SO_TYPE) => SOCK_STREAM as i32,
        _ => return Err(ENOPROTOOPT),
    };
    if user::read::<u32>(len)? < 4 {
        return Err(EINVAL);
    }
    user::write(val, v)?;
    user::write(len, 4u32)?;
    Ok(0)
}
