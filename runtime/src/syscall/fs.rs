//! File system calls: open/read/write/stat/... on the descriptor table and
//! the in-memory tree.

use super::SysResult;
use crate::errno::*;
use crate::fs::fdtable::{self, FdEntry};
use crate::fs::tree::{self, Node};
use crate::mm::user;
use crate::sched::Wake;
use spin::Mutex;

pub const AT_FDCWD: i64 = -100;
pub const AT_SYMLINK_NOFOLLOW: u64 = 0x100;
pub const AT_EMPTY_PATH: u64 = 0x1000;

const O_ACCMODE: u64 = 3;
const O_CREAT: u64 = 0o100;
const O_EXCL: u64 = 0o200;
const O_TRUNC: u64 = 0o1000;
pub const O_NONBLOCK: u64 = 0o4000;
const O_DIRECTORY: u64 = 0o200000;
const O_NOFOLLOW: u64 = 0o400000;
pub const O_CLOEXEC: u64 = 0o2000000;
const PATH_MAX: usize = 4096;

static CWD: Mutex<Node> = Mutex::new(Node::Root);

/// The directory a relative path starts from.
fn base_dir(dirfd: i64, path: &[u8]) -> Result<Node, Errno> {
    if path.first() == Some(&b'/') || dirfd == AT_FDCWD {
        return Ok(*CWD.lock());
    }
    let e = fdtable::file(dirfd)?;
    e.file.dir_node().ok_or(ENOTDIR)
}

pub fn openat(dirfd: i64, path: u64, flags: u64, _mode: u64) -> SysResult {
    let p = user::cstr(path, PATH_MAX)?;
    let node = match tree::lookup(base_dir(dirfd, p)?, p, flags & O_NOFOLLOW == 0) {
        Ok(n) => {
            if flags & O_CREAT != 0 && flags & O_EXCL != 0 {
                return Err(EEXIST);
            }
            n
        }
        Err(ENOENT) if flags & O_CREAT != 0 => return Err(EROFS),
        Err(e) => return Err(e),
    };
    if node == Node::ExeLink {
        return Err(ELOOP);
    }
    let acc = flags & O_ACCMODE;
    if node.is_dir() && acc != 0 {
        return Err(EISDIR);
    }
    if flags & O_DIRECTORY != 0 && !node.is_dir() {
        return Err(ENOTDIR);
    }
    if node == Node::Exe && (acc != 0 || flags & O_TRUNC != 0) {
        return Err(EROFS);
    }
    let entry = FdEntry {
        file: tree::open_node(node),
        cloexec: flags & O_CLOEXEC != 0,
        flags: (flags & (O_ACCMODE | O_NONBLOCK | 0o2000)) as u32,
    };
    Ok(fdtable::with(|t| t.install(entry))? as i64)
}

pub fn close(fd: u64) -> SysResult {
    fdtable::with(|t| t.close(fd as i64)).map(|_| 0)
}

fn readable(e: &FdEntry) -> Result<(), Errno> {
    if e.flags as u64 & O_ACCMODE == 1 {
        Err(EBADF)
    } else {
        Ok(())
    }
}

fn writable(e: &FdEntry) -> Result<(), Errno> {
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

pub fn write(fd: u64, buf: u64, len: u64) -> SysResult {
    let e = fdtable::file(fd as i64)?;
    writable(&e)?;
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

pub fn stat_path(dirfd: i64, path: u64, buf: u64, flags: u64) -> SysResult {
    let p = user::cstr(path, PATH_MAX)?;
    if p.is_empty() && flags & AT_EMPTY_PATH != 0 {
        return fstat(dirfd as u64, buf);
    }
    let node = tree::lookup(base_dir(dirfd, p)?, p, flags & AT_SYMLINK_NOFOLLOW == 0)?;
    user::write(buf, node.stat())?;
    Ok(0)
}

pub fn faccessat(dirfd: i64, path: u64, _mode: u64) -> SysResult {
    let p = user::cstr(path, PATH_MAX)?;
    tree::lookup(base_dir(dirfd, p)?, p, true)?;
    Ok(0)
}

pub fn readlinkat(dirfd: i64, path: u64, buf: u64, len: u64) -> SysResult {
    let p = user::cstr(path, PATH_MAX)?;
    let node = tree::lookup(base_dir(dirfd, p)?, p, false)?;
    let target = node.link_target().ok_or(EINVAL)?;
    if len == 0 {
        return Err(EINVAL);
    }
    let n = target.len().min(len as usize);
    user::bytes_mut(buf, n)?.copy_from_slice(&target.as_bytes()[..n]);
    Ok(n as i64)
}

pub fn getdents64(fd: u64, buf: u64, len: u64) -> SysResult {
    let e = fdtable::file(fd as i64)?;
    let b = user::bytes_mut(buf, len as usize)?;
    e.file.getdents64(b).map(|n| n as i64)
}

pub fn getcwd(buf: u64, size: u64) -> SysResult {
    let path = match *CWD.lock() {
        Node::Root => "/",
        Node::Dev => "/dev",
        Node::Proc => "/proc",
        Node::ProcSelf => "/proc/self",
        _ => "/",
    };
    if (size as usize) < path.len() + 1 {
        return Err(ERANGE);
    }
    let b = user::bytes_mut(buf, path.len() + 1)?;
    b[..path.len()].copy_from_slice(path.as_bytes());
    b[path.len()] = 0;
    Ok(path.len() as i64 + 1)
}

pub fn chdir(path: u64) -> SysResult {
    let p = user::cstr(path, PATH_MAX)?;
    let cwd = *CWD.lock();
    let node = tree::lookup(cwd, p, true)?;
    if !node.is_dir() {
        return Err(ENOTDIR);
    }
    *CWD.lock() = node;
    Ok(0)
}

const FIONBIO: u64 = 0x5421;
const FIONCLEX: u64 = 0x5450;
const FIOCLEX: u64 = 0x5451;

pub fn ioctl(fd: u64, req: u64, arg: u64) -> SysResult {
    let e = fdtable::file(fd as i64)?;
    match req {
        FIONBIO => {
            let on = user::read::<i32>(arg)? != 0;
            fdtable::with(|t| {
                let en = t.get_mut(fd as i64)?;
                if on {
                    en.flags |= O_NONBLOCK as u32;
                } else {
                    en.flags &= !(O_NONBLOCK as u32);
                }
                Ok(0)
            })
        }
        FIOCLEX | FIONCLEX => fdtable::with(|t| {
            t.get_mut(fd as i64)?.cloexec = req == FIOCLEX;
            Ok(0)
        }),
        _ => e.file.ioctl(req, arg),
    }
}

const F_DUPFD: u64 = 0;
const F_GETFD: u64 = 1;
const F_SETFD: u64 = 2;
const F_GETFL: u64 = 3;
const F_SETFL: u64 = 4;
const F_DUPFD_CLOEXEC: u64 = 1030;
const FD_CLOEXEC: u64 = 1;

pub fn fcntl(fd: u64, cmd: u64, arg: u64) -> SysResult {
    let fd = fd as i64;
    fdtable::with(|t| match cmd {
        F_DUPFD | F_DUPFD_CLOEXEC => {
            let mut e = t.get(fd)?;
            e.cloexec = cmd == F_DUPFD_CLOEXEC;
            if arg >= fdtable::MAX_FDS as u64 {
                return Err(EINVAL);
            }
            t.install_from(arg as usize, e).map(|v| v as i64)
        }
        F_GETFD => Ok(if t.get(fd)?.cloexec {
            FD_CLOEXEC as i64
        } else {
            0
        }),
        F_SETFD => {
            t.get_mut(fd)?.cloexec = arg & FD_CLOEXEC != 0;
            Ok(0)
        }
        F_GETFL => Ok(t.get(fd)?.flags as i64),
        F_SETFL => {
            let e = t.get_mut(fd)?;
            // Only O_APPEND and O_NONBLOCK may change.
            let changeable = (O_NONBLOCK | 0o2000) as u32;
            e.flags = (e.flags & !changeable) | (arg as u32 & changeable);
            Ok(0)
        }
        _ => Err(EINVAL),
    })
}

pub fn dup(fd: u64) -> SysResult {
    fdtable::with(|t| {
        let mut e = t.get(fd as i64)?;
        e.cloexec = false;
        t.install(e).map(|v| v as i64)
    })
}

/// dup2 (`legacy`: same fd allowed and returned) and dup3.
pub fn dup3(old: u64, new: u64, flags: u64, legacy: bool) -> SysResult {
    if flags & !O_CLOEXEC != 0 {
        return Err(EINVAL);
    }
    fdtable::with(|t| {
        let mut e = t.get(old as i64)?;
        if old == new {
            return if legacy { Ok(new as i64) } else { Err(EINVAL) };
        }
        if new >= fdtable::MAX_FDS as u64 {
            return Err(EBADF);
        }
        let _ = t.close(new as i64);
        e.cloexec = flags & O_CLOEXEC != 0;
        t.install_from(new as usize, e).map(|v| v as i64)
    })
}

pub fn fsync(fd: u64) -> SysResult {
    // Nothing here is buffered: the console writes through, devices keep nothing.
    fdtable::file(fd as i64).map(|_| 0)
}
