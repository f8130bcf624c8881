//! Descriptor I/O: read/write and their positioned and vectored forms,
//! lseek, fstat, getdents64, close (path calls are in `path.rs`, descriptor
//! control in `fdctl.rs`).

use super::SysResult;
use crate::errno::*;
use crate::fs::fdtable::{self, FdEntry};
use crate::fs::{S_IFMT, S_IFREG};
use crate::mm::user;
use crate::sched::Wake;

pub const AT_FDCWD: i64 = -100;
pub const AT_SYMLINK_NOFOLLOW: u64 = 0x100;
pub const AT_EMPTY_PATH: u64 = 0x1000;

pub const O_ACCMODE: u64 = 3;
pub const O_CREAT: u64 = 0o100;
pub const O_EXCL: u64 = 0o200;
pub const O_TRUNC: u64 = 0o1000;
pub const O_NONBLOCK: u64 = 0o4000;
pub const O_DIRECTORY: u64 = 0o200000;
pub const O_NOFOLLOW: u64 = 0o400000;
pub const O_CLOEXEC: u64 = 0o2000000;
pub const O_APPEND: u64 = 0o2000;

pub fn close(fd: u64) -> SysResult {
    fdtable::with(|t| t.close(fd as i64)).map(|_| 0)
}

pub fn readable(e: &FdEntry) -> Result<(), Errno> {
    if e.flags as u64 & O_ACCMODE == 1 {
        Err(EBADF)
    } else {
        Ok(())
    }
}

pub fn writable(e: &FdEntry) -> Result<(), Errno> {
    if e.flags as u64 & O_ACCMODE == 0 {
        Err(EBADF)
    } else {
        Ok(())
    }
}

/// Whether an operation on `e` may wait (blocking descriptor of a file that can block).
pub fn may_wait(e: &FdEntry, dontwait: bool) -> bool {
    e.file.can_block() && e.flags as u64 & O_NONBLOCK == 0 && !dontwait
}

/// Read into `b`, waiting for data on a blocking descriptor.
pub fn read_waiting(e: &FdEntry, b: &mut [u8], dontwait: bool) -> Result<usize, Errno> {
    loop {
        match e.file.read(b) {
            Err(EAGAIN) if may_wait(e, dontwait) => {
                if crate::sched::wait_io(None) == Wake::Interrupted {
                    return Err(EINTR);
                }
            }
            r => return r,
        }
    }
}

/// Write all of `b` on a blocking descriptor (waiting for room), as much
/// as fits on a non-blocking one. A closed reader raises SIGPIPE (unless
/// `nosignal`) and gives EPIPE.
pub fn write_waiting(
    e: &FdEntry,
    b: &[u8],
    dontwait: bool,
    nosignal: bool,
) -> Result<usize, Errno> {
    let mut done = 0;
    loop {
        match e.file.write(&b[done..]) {
            Ok(n) => {
                done += n;
                if done == b.len() || !may_wait(e, dontwait) {
                    return Ok(done);
                }
            }
            Err(EAGAIN) if may_wait(e, dontwait) => {
                if crate::sched::wait_io(None) == Wake::Interrupted {
                    return if done > 0 { Ok(done) } else { Err(EINTR) };
                }
            }
            Err(err) if done > 0 && err != EPIPE => return Ok(done),
            Err(err) => {
                if err == EPIPE && !nosignal {
                    let tid = crate::sched::current_tid();
                    let _ = crate::signal::send_thread(
                        tid,
                        crate::signal::SIGPIPE,
                        crate::signal::SI_USER,
                    );
                }
                return if done > 0 { Ok(done) } else { Err(err) };
            }
        }
    }
}

pub fn read(fd: u64, buf: u64, len: u64) -> SysResult {
    let e = fdtable::file(fd as i64)?;
    readable(&e)?;
    let b = user::bytes_mut(buf, len.min(isize::MAX as u64) as usize)?;
    read_waiting(&e, b, false).map(|n| n as i64)
}

/// With `O_APPEND`, put a regular file's position at its end before a
/// write (no other thread runs in between: the runtime is not preempted).
fn seek_if_append(e: &FdEntry) -> Result<(), Errno> {
    if e.flags as u64 & O_APPEND != 0 && e.file.stat().mode & S_IFMT == S_IFREG {
        e.file.seek(0, crate::fs::SEEK_END)?;
    }
    Ok(())
}

pub fn write(fd: u64, buf: u64, len: u64) -> SysResult {
    let e = fdtable::file(fd as i64)?;
    writable(&e)?;
    seek_if_append(&e)?;
    let b = user::bytes(buf, len.min(isize::MAX as u64) as usize)?;
    write_waiting(&e, b, false, false).map(|n| n as i64)
}

pub fn pread64(fd: u64, buf: u64, len: u64, off: u64) -> SysResult {
    let e = fdtable::file(fd as i64)?;
    readable(&e)?;
    if (off as i64) < 0 {
        return Err(EINVAL);
    }
    let b = user::bytes_mut(buf, len as usize)?;
    e.file.pread(b, off).map(|n| n as i64)
}

pub fn pwrite64(fd: u64, buf: u64, len: u64, off: u64) -> SysResult {
    let e = fdtable::file(fd as i64)?;
    writable(&e)?;
    if (off as i64) < 0 {
        return Err(EINVAL);
    }
    let b = user::bytes(buf, len as usize)?;
    e.file.pwrite(b, off).map(|n| n as i64)
}

/// `preadv`/`preadv2`: `off` -1 (preadv2 only) reads at the file position.
pub fn preadv(fd: u64, iov: u64, cnt: u64, off: u64, flags: u64, v2: bool) -> SysResult {
    if flags != 0 {
        return Err(EOPNOTSUPP);
    }
    if v2 && off as i64 == -1 {
        return readv(fd, iov, cnt);
    }
    let e = fdtable::file(fd as i64)?;
    readable(&e)?;
    if (off as i64) < 0 {
        return Err(EINVAL);
    }
    let mut total = 0u64;
    for v in iovecs(iov, cnt)? {
        let b = user::bytes_mut(v.base, v.len as usize)?;
        let n = match e.file.pread(b, off + total) {
            Ok(n) => n,
            Err(_) if total > 0 => break,
            Err(err) => return Err(err),
        };
        total += n as u64;
        if n < b.len() {
            break;
        }
    }
    Ok(total as i64)
}

/// `pwritev`/`pwritev2`: `off` -1 (pwritev2 only) writes at the file position.
pub fn pwritev(fd: u64, iov: u64, cnt: u64, off: u64, flags: u64, v2: bool) -> SysResult {
    if flags != 0 {
        return Err(EOPNOTSUPP);
    }
    if v2 && off as i64 == -1 {
        return writev(fd, iov, cnt);
    }
    let e = fdtable::file(fd as i64)?;
    writable(&e)?;
    if (off as i64) < 0 {
        return Err(EINVAL);
    }
    let mut total = 0u64;
    for v in iovecs(iov, cnt)? {
        let b = user::bytes(v.base, v.len as usize)?;
        let n = match e.file.pwrite(b, off + total) {
            Ok(n) => n,
            Err(_) if total > 0 => break,
            Err(err) => return Err(err),
        };
        total += n as u64;
        if n < b.len() {
            break;
        }
    }
    Ok(total as i64)
}

#[derive(Clone, Copy)]
#[repr(C)]
struct Iovec {
    base: u64,
    len: u64,
}

fn iovecs(iov: u64, cnt: u64) -> Result<alloc::vec::Vec<Iovec>, Errno> {
    if cnt > 1024 {
        return Err(EINVAL);
    }
    (0..cnt)
        .map(|i| user::read::<Iovec>(iov + i * 16))
        .collect()
}

pub fn readv(fd: u64, iov: u64, cnt: u64) -> SysResult {
    let e = fdtable::file(fd as i64)?;
    readable(&e)?;
    let mut total = 0i64;
    for v in iovecs(iov, cnt)? {
        if v.len == 0 {
            continue;
        }
        let b = user::bytes_mut(v.base, v.len as usize)?;
        let n = match read_waiting(&e, b, total > 0) {
            Ok(n) => n,
            Err(_) if total > 0 => break,
            Err(err) => return Err(err),
        };
        total += n as i64;
        if n < b.len() {
            break;
        }
    }
    Ok(total)
}

pub fn writev(fd: u64, iov: u64, cnt: u64) -> SysResult {
    let e = fdtable::file(fd as i64)?;
    writable(&e)?;
    if let Some(s) = e.file.as_socket() {
        // One send for the whole vector: a TCP stack with Nagle's algorithm
        // would otherwise hold the second part back until an ACK (which a
        // peer's delayed ACK makes 40 ms), and datagrams stay whole.
        let mut data = alloc::vec::Vec::new();
        for v in iovecs(iov, cnt)? {
            data.extend_from_slice(user::bytes(v.base, v.len as usize)?);
        }
        return super::ipc::net_send(&e, s, &data, 0, None);
    }
    seek_if_append(&e)?;
    let mut total = 0i64;
    for v in iovecs(iov, cnt)? {
        if v.len == 0 {
            continue;
        }
        let b = user::bytes(v.base, v.len as usize)?;
        let n = match write_waiting(&e, b, false, false) {
            Ok(n) => n,
            Err(_) if total > 0 => break,
            Err(err) => return Err(err),
        };
        total += n as i64;
        if n < b.len() {
            break;
        }
    }
    Ok(total)
}

pub fn lseek(fd: u64, off: u64, whence: u64) -> SysResult {
    let e = fdtable::file(fd as i64)?;
    e.file.seek(off as i64, whence as u32).map(|v| v as i64)
}

pub fn fstat(fd: u64, buf: u64) -> SysResult {
    let e = fdtable::file(fd as i64)?;
    user::write(buf, e.file.stat())?;
    Ok(0)
}

pub fn getdents64(fd: u64, buf: u64, len: u64) -> SysResult {
    let e = fdtable::file(fd as i64)?;
    let b = user::bytes_mut(buf, len as usize)?;
    e.file.getdents64(b).map(|n| n as i64)
}
