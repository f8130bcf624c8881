//! Descriptor control: ioctl, fcntl (flags, duplication and record
//! locks), flock, dup/dup2/dup3, and the calls that act on an open file as
//! a whole: fsync/fdatasync/syncfs/sync, ftruncate, fallocate, fstatfs,
//! fchmod.
//!
//! Locks: there is one process, so no lock can ever conflict. `F_SETLK`,
//! `F_SETLKW`, `F_OFD_SETLK(W)` and `flock` succeed after checking their
//! arguments as Linux does, and `F_GETLK`/`F_OFD_GETLK` answer `F_UNLCK`.

use super::fs::{readable, writable, O_CLOEXEC, O_NONBLOCK};
use super::SysResult;
use crate::errno::*;
use crate::fs::{fdtable, vfs};
use crate::mm::user;

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
        F_GETLK | F_SETLK | F_SETLKW | F_OFD_GETLK | F_OFD_SETLK | F_OFD_SETLKW => {
            record_lock(&t.get(fd)?, cmd, arg)
        }
        _ => Err(EINVAL),
    })
}

const F_GETLK: u64 = 5;
const F_SETLK: u64 = 6;
const F_SETLKW: u64 = 7;
const F_OFD_GETLK: u64 = 36;
const F_OFD_SETLK: u64 = 37;
const F_OFD_SETLKW: u64 = 38;
const F_RDLCK: i16 = 0;
const F_WRLCK: i16 = 1;
const F_UNLCK: i16 = 2;

/// `struct flock` (32 bytes on x86_64).
#[repr(C)]
#[derive(Clone, Copy)]
struct Flock {
    l_type: i16,
    l_whence: i16,
    l_start: i64,
    l_len: i64,
    l_pid: i32,
}

const _: () = assert!(core::mem::size_of::<Flock>() == 32);

fn record_lock(e: &fdtable::FdEntry, cmd: u64, arg: u64) -> SysResult {
    let mut l = user::read::<Flock>(arg)?;
    let ofd = matches!(cmd, F_OFD_GETLK | F_OFD_SETLK | F_OFD_SETLKW);
    if !matches!(l.l_type, F_RDLCK | F_WRLCK | F_UNLCK) || !(0..=2).contains(&l.l_whence) {
        return Err(EINVAL);
    }
    if ofd && l.l_pid != 0 {
        return Err(EINVAL);
    }
    if matches!(cmd, F_GETLK | F_OFD_GETLK) {
        if l.l_type == F_UNLCK {
            return Err(EINVAL);
        }
        // Nothing else holds a lock that would conflict.
        l.l_type = F_UNLCK;
        user::write(arg, l)?;
        return Ok(0);
    }
    match l.l_type {
        F_RDLCK => readable(e)?,
        F_WRLCK => writable(e)?,
        _ => {}
    }
    Ok(0)
}

const LOCK_SH: u64 = 1;
const LOCK_EX: u64 = 2;
const LOCK_NB: u64 = 4;
const LOCK_UN: u64 = 8;

pub fn flock(fd: u64, op: u64) -> SysResult {
    fdtable::file(fd as i64)?;
    match op & !LOCK_NB {
        LOCK_SH | LOCK_EX | LOCK_UN => Ok(0),
        _ => Err(EINVAL),
    }
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

/// `fsync` (`data_only`: `fdatasync`): the file's own answer (`EINVAL`
/// for pipes, sockets and devices, as on Linux).
pub fn fsync(fd: u64, data_only: bool) -> SysResult {
    let e = fdtable::file(fd as i64)?;
    e.file.sync(data_only).map(|_| 0)
}

/// Sync every mounted filesystem; the first error is returned.
fn sync_all() -> Result<(), Errno> {
    let mut first = Ok(());
    for m in vfs::mounts() {
        if let Err(e) = m.fs.sync() {
            if first.is_ok() {
                first = Err(e);
            }
        }
    }
    first
}

/// `syncfs`: every filesystem is synced (a superset of the one `fd` is on).
pub fn syncfs(fd: u64) -> SysResult {
    fdtable::file(fd as i64)?;
    sync_all().map(|_| 0)
}

/// `sync` cannot fail.
pub fn sync() -> SysResult {
    let _ = sync_all();
    Ok(0)
}

pub fn ftruncate(fd: u64, len: u64) -> SysResult {
    let e = fdtable::file(fd as i64)?;
    if (len as i64) < 0 || writable(&e).is_err() {
        return Err(EINVAL);
    }
    e.file.set_len(len).map(|_| 0)
}

pub fn fallocate(fd: u64, mode: u64, off: u64, len: u64) -> SysResult {
    let e = fdtable::file(fd as i64)?;
    if mode != 0 {
        return Err(EOPNOTSUPP);
    }
    if (off as i64) < 0 || (len as i64) <= 0 {
        return Err(EINVAL);
    }
    writable(&e)?;
    e.file.allocate(off, len).map(|_| 0)
}

pub fn fstatfs(fd: u64, buf: u64) -> SysResult {
    let e = fdtable::file(fd as i64)?;
    user::write(buf, e.file.statfs()?)?;
    Ok(0)
}

pub fn fchmod(fd: u64, mode: u64) -> SysResult {
    let e = fdtable::file(fd as i64)?;
    e.file.chmod(mode as u32 & 0o7777).map(|_| 0)
}
