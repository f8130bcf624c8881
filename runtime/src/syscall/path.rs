//! System calls that name files by path: open/openat/creat, stat and
//! statx, access, readlink, chdir/fchdir/getcwd, mkdir, unlink/rmdir,
//! rename, symlink, link, truncate, utimensat, chmod, statfs.
//!
//! Each resolves its path with [`crate::fs::path::resolve`] (relative to
//! the working directory or to a directory descriptor, whose absolute path
//! the VFS keeps in a [`DirFile`]) and calls the [`Filesystem`] of the
//! mount it lands in with the path relative to that mount.
//!
//! [`Filesystem`]: crate::fs::vfs::Filesystem

use super::fs::*;
use super::SysResult;
use crate::errno::*;
use crate::fs::dirfile::DirFile;
use crate::fs::fdtable::{self, FdEntry};
use crate::fs::path::{self, Resolved, PATH_MAX};
use crate::fs::vfs::{OpenFlags, Timespec};
use crate::fs::{File, Stat, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFSOCK};
use crate::mm::user;
use alloc::string::String;
use alloc::sync::Arc;

const AT_REMOVEDIR: u64 = 0x200;
const AT_SYMLINK_FOLLOW: u64 = 0x400;
const AT_EACCESS: u64 = 0x200;
const UTIME_NOW: i64 = (1 << 30) - 1;
const UTIME_OMIT: i64 = (1 << 30) - 2;

/// The directory a relative path starts from: the working directory, or
/// the directory open at `dirfd`.
fn base_dir(dirfd: i64, path: &[u8]) -> Result<String, Errno> {
    if path.first() == Some(&b'/') || dirfd == AT_FDCWD {
        return Ok(path::cwd());
    }
    let e = fdtable::file(dirfd)?;
    e.file.dir_path().map(String::from).ok_or(ENOTDIR)
}

fn resolve_at(dirfd: i64, p: &[u8], follow: bool) -> Result<Resolved, Errno> {
    path::resolve(&base_dir(dirfd, p)?, p, follow)
}

fn umasked(mode: u64) -> u32 {
    mode as u32 & 0o7777 & !super::process::current_umask()
}

pub fn openat(dirfd: i64, path: u64, flags: u64, mode: u64) -> SysResult {
    let p = user::cstr(path, PATH_MAX)?;
    let acc = flags & O_ACCMODE;
    if acc == 3 {
        return Err(EINVAL);
    }
    let create = flags & O_CREAT != 0;
    let exclusive = create && flags & O_EXCL != 0;
    if create && p.ends_with(b"/") {
        return Err(EISDIR);
    }
    let nofollow = flags & O_NOFOLLOW != 0 || exclusive;
    let r = resolve_at(dirfd, p, !nofollow)?;
    if flags & O_NOFOLLOW != 0 && !exclusive {
        if let Ok(st) = r.mount.fs.stat(&r.rel) {
            if st.mode & S_IFMT == S_IFLNK {
                return Err(ELOOP);
            }
        }
    }
    let of = OpenFlags {
        read: acc != 1,
        write: acc != 0,
        create,
        exclusive,
        truncate: flags & O_TRUNC != 0,
        append: flags & O_APPEND != 0,
        directory: flags & O_DIRECTORY != 0,
        mode: umasked(mode),
    };
    let file = r.mount.fs.open(&r.rel, of)?;
    let is_dir = file.stat().mode & S_IFMT == S_IFDIR;
    if of.directory && !is_dir {
        return Err(ENOTDIR);
    }
    let file: Arc<dyn File> = if is_dir {
        Arc::new(DirFile {
            inner: file,
            path: r.abs,
        })
    } else {
        file
    };
    let entry = FdEntry {
        file,
        cloexec: flags & O_CLOEXEC != 0,
        flags: (flags & (O_ACCMODE | O_NONBLOCK | O_APPEND)) as u32,
    };
    Ok(fdtable::with(|t| t.install(entry))? as i64)
}

pub fn creat(path: u64, mode: u64) -> SysResult {
    openat(AT_FDCWD, path, O_CREAT | O_TRUNC | 1, mode)
}

/// The `stat` of `path`, or of `dirfd` itself with `AT_EMPTY_PATH` and "".
fn stat_at(dirfd: i64, path: u64, flags: u64) -> Result<Stat, Errno> {
    let p = user::cstr(path, PATH_MAX)?;
    if p.is_empty() && flags & AT_EMPTY_PATH != 0 {
        return Ok(fdtable::file(dirfd)?.file.stat());
    }
    let r = resolve_at(dirfd, p, flags & AT_SYMLINK_NOFOLLOW == 0)?;
    r.mount.fs.stat(&r.rel)
}

pub fn stat_path(dirfd: i64, path: u64, buf: u64, flags: u64) -> SysResult {
    if flags & !(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH | 0x800) != 0 {
        return Err(EINVAL);
    }
    user::write(buf, stat_at(dirfd, path, flags)?)?;
    Ok(0)
}

/// `struct statx_timestamp`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct StatxTime {
    sec: i64,
    nsec: u32,
    _reserved: i32,
}

/// `struct statx` (256 bytes).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Statx {
    mask: u32,
    blksize: u32,
    attributes: u64,
    nlink: u32,
    uid: u32,
    gid: u32,
    mode: u16,
    _spare0: u16,
    ino: u64,
    size: u64,
    blocks: u64,
    attributes_mask: u64,
    atime: StatxTime,
    btime: StatxTime,
    ctime: StatxTime,
    mtime: StatxTime,
    rdev_major: u32,
    rdev_minor: u32,
    dev_major: u32,
    dev_minor: u32,
    _spare: [u64; 14],
}

const _: () = assert!(core::mem::size_of::<Statx>() == 256);
/// `STATX_BASIC_STATS`: everything `struct stat` has (no birth time).
const STATX_BASIC_STATS: u32 = 0x7ff;

fn statx_time(sec: i64, nsec: i64) -> StatxTime {
    StatxTime {
        sec,
        nsec: nsec as u32,
        _reserved: 0,
    }
}

/// A `dev_t` as (major, minor), Linux's encoding.
fn split_dev(d: u64) -> (u32, u32) {
    (
        (((d >> 8) & 0xfff) | ((d >> 32) & !0xfff)) as u32,
        ((d & 0xff) | ((d >> 12) & !0xff)) as u32,
    )
}

pub fn statx(dirfd: i64, path: u64, flags: u64, _mask: u64, buf: u64) -> SysResult {
    let st = stat_at(dirfd, path, flags)?;
    let (dev_major, dev_minor) = split_dev(st.dev);
    let (rdev_major, rdev_minor) = split_dev(st.rdev);
    let sx = Statx {
        mask: STATX_BASIC_STATS,
        blksize: st.blksize as u32,
        nlink: st.nlink as u32,
        uid: st.uid,
        gid: st.gid,
        mode: st.mode as u16,
        ino: st.ino,
        size: st.size as u64,
        blocks: st.blocks as u64,
        atime: statx_time(st.atime, st.atime_nsec),
        ctime: statx_time(st.ctime, st.ctime_nsec),
        mtime: statx_time(st.mtime, st.mtime_nsec),
        rdev_major,
        rdev_minor,
        dev_major,
        dev_minor,
        ..Statx::default()
    };
    user::write(buf, sx)?;
    Ok(0)
}

pub fn faccessat(dirfd: i64, path: u64, mode: u64, flags: u64) -> SysResult {
    if mode & !7 != 0 || flags & !(AT_EACCESS | AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH) != 0 {
        return Err(EINVAL);
    }
    let p = user::cstr(path, PATH_MAX)?;
    let (st, read_only) = if p.is_empty() && flags & AT_EMPTY_PATH != 0 {
        (fdtable::file(dirfd)?.file.stat(), false)
    } else {
        let r = resolve_at(dirfd, p, flags & AT_SYMLINK_NOFOLLOW == 0)?;
        (r.mount.fs.stat(&r.rel)?, r.mount.fs.read_only())
    };
    let kind = st.mode & S_IFMT;
    let special = matches!(kind, S_IFCHR | S_IFIFO | S_IFSOCK);
    if mode & 2 != 0 && read_only && !special {
        return Err(EROFS);
    }
    // The app runs as root: only execute needs a bit (or a directory).
    if mode & 1 != 0 && kind != S_IFDIR && st.mode & 0o111 == 0 {
        return Err(EACCES);
    }
    Ok(0)
}

pub fn readlinkat(dirfd: i64, path: u64, buf: u64, len: u64) -> SysResult {
    let p = user::cstr(path, PATH_MAX)?;
    if (len as i64) <= 0 {
        return Err(EINVAL);
    }
    let r = resolve_at(dirfd, p, false)?;
    let target = r.mount.fs.readlink(&r.rel)?;
    let n = target.len().min(len as usize);
    user::bytes_mut(buf, n)?.copy_from_slice(&target.as_bytes()[..n]);
    Ok(n as i64)
}

pub fn getcwd(buf: u64, size: u64) -> SysResult {
    let path = path::cwd();
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
    let r = resolve_at(AT_FDCWD, p, true)?;
    if r.mount.fs.stat(&r.rel)?.mode & S_IFMT != S_IFDIR {
        return Err(ENOTDIR);
    }
    path::set_cwd(r.abs);
    Ok(0)
}

pub fn fchdir(fd: u64) -> SysResult {
    let e = fdtable::file(fd as i64)?;
    let dir = e.file.dir_path().ok_or(ENOTDIR)?;
    path::set_cwd(String::from(dir));
    Ok(0)
}

pub fn mkdirat(dirfd: i64, path: u64, mode: u64) -> SysResult {
    let p = user::cstr(path, PATH_MAX)?;
    let r = resolve_at(dirfd, p, false)?;
    r.mount.fs.mkdir(&r.rel, umasked(mode)).map(|_| 0)
}

/// The last component of a raw path (trailing slashes dropped).
fn last_component(p: &[u8]) -> &[u8] {
    let mut end = p.len();
    while end > 1 && p[end - 1] == b'/' {
        end -= 1;
    }
    let start = p[..end]
        .iter()
        .rposition(|&c| c == b'/')
        .map_or(0, |i| i + 1);
    &p[start..end]
}

pub fn unlinkat(dirfd: i64, path: u64, flags: u64) -> SysResult {
    if flags & !AT_REMOVEDIR != 0 {
        return Err(EINVAL);
    }
    let p = user::cstr(path, PATH_MAX)?;
    let rmdir = flags & AT_REMOVEDIR != 0;
    if rmdir {
        match last_component(p) {
            b"." => return Err(EINVAL),
            b".." => return Err(ENOTEMPTY),
            _ => {}
        }
    }
    let r = resolve_at(dirfd, p, false)?;
    if rmdir {
        r.mount.fs.rmdir(&r.rel).map(|_| 0)
    } else {
        r.mount.fs.unlink(&r.rel).map(|_| 0)
    }
}

pub fn renameat2(olddir: i64, old: u64, newdir: i64, new: u64, flags: u64) -> SysResult {
    let po = user::cstr(old, PATH_MAX)?;
    let pn = user::cstr(new, PATH_MAX)?;
    if matches!(last_component(po), b"." | b"..") || matches!(last_component(pn), b"." | b"..") {
        return Err(EBUSY);
    }
    let a = resolve_at(olddir, po, false)?;
    let b = resolve_at(newdir, pn, false)?;
    if a.mount.path != b.mount.path {
        return Err(EXDEV);
    }
    a.mount.fs.rename(&a.rel, &b.rel, flags as u32).map(|_| 0)
}

pub fn symlinkat(target: u64, dirfd: i64, path: u64) -> SysResult {
    let t = user::cstr(target, PATH_MAX)?;
    let t = core::str::from_utf8(t).map_err(|_| EINVAL)?;
    if t.is_empty() {
        return Err(ENOENT);
    }
    let p = user::cstr(path, PATH_MAX)?;
    let r = resolve_at(dirfd, p, false)?;
    r.mount.fs.symlink(t, &r.rel).map(|_| 0)
}

pub fn linkat(olddir: i64, old: u64, newdir: i64, new: u64, flags: u64) -> SysResult {
    if flags & !(AT_SYMLINK_FOLLOW | AT_EMPTY_PATH) != 0 {
        return Err(EINVAL);
    }
    let po = user::cstr(old, PATH_MAX)?;
    let pn = user::cstr(new, PATH_MAX)?;
    let a = resolve_at(olddir, po, flags & AT_SYMLINK_FOLLOW != 0)?;
    let b = resolve_at(newdir, pn, false)?;
    if a.mount.path != b.mount.path {
        return Err(EXDEV);
    }
    a.mount.fs.link(&a.rel, &b.rel).map(|_| 0)
}

pub fn truncate(path: u64, len: u64) -> SysResult {
    let p = user::cstr(path, PATH_MAX)?;
    if (len as i64) < 0 {
        return Err(EINVAL);
    }
    let r = resolve_at(AT_FDCWD, p, true)?;
    r.mount.fs.truncate(&r.rel, len).map(|_| 0)
}

/// One `utimensat` time: `None` for `UTIME_OMIT`.
fn utime(t: crate::time::Timespec) -> Result<Option<Timespec>, Errno> {
    match t.nsec {
        UTIME_OMIT => Ok(None),
        UTIME_NOW => Ok(Some(crate::fs::memfs::now())),
        n if (0..1_000_000_000).contains(&n) => Ok(Some(Timespec {
            sec: t.sec,
            nsec: n as u32,
        })),
        _ => Err(EINVAL),
    }
}

pub fn utimensat(dirfd: i64, path: u64, times: u64, flags: u64) -> SysResult {
    if flags & !(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH) != 0 {
        return Err(EINVAL);
    }
    let (atime, mtime) = if times == 0 {
        let now = Some(crate::fs::memfs::now());
        (now, now)
    } else {
        let ts = user::read::<[crate::time::Timespec; 2]>(times)?;
        (utime(ts[0])?, utime(ts[1])?)
    };
    // A null path (futimens) or "" with AT_EMPTY_PATH: the descriptor itself.
    let p = if path == 0 {
        &[][..]
    } else {
        user::cstr(path, PATH_MAX)?
    };
    if path == 0 || (p.is_empty() && flags & AT_EMPTY_PATH != 0) {
        let e = fdtable::file(dirfd)?;
        if atime.is_none() && mtime.is_none() {
            return Ok(0);
        }
        return e.file.set_times(atime, mtime).map(|_| 0);
    }
    let r = resolve_at(dirfd, p, flags & AT_SYMLINK_NOFOLLOW == 0)?;
    if atime.is_none() && mtime.is_none() {
        return r.mount.fs.stat(&r.rel).map(|_| 0);
    }
    r.mount.fs.set_times(&r.rel, atime, mtime).map(|_| 0)
}

pub fn fchmodat(dirfd: i64, path: u64, mode: u64, flags: u64) -> SysResult {
    if flags & !(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH) != 0 {
        return Err(EINVAL);
    }
    let p = user::cstr(path, PATH_MAX)?;
    if p.is_empty() && flags & AT_EMPTY_PATH != 0 {
        return super::fdctl::fchmod(dirfd as u64, mode);
    }
    let r = resolve_at(dirfd, p, flags & AT_SYMLINK_NOFOLLOW == 0)?;
    r.mount.fs.chmod(&r.rel, mode as u32 & 0o7777).map(|_| 0)
}

pub fn statfs(path: u64, buf: u64) -> SysResult {
    let p = user::cstr(path, PATH_MAX)?;
    let r = resolve_at(AT_FDCWD, p, true)?;
    r.mount.fs.stat(&r.rel)?;
    user::write(buf, r.mount.fs.statfs())?;
    Ok(0)
}
