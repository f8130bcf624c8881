//! The filesystem interface and the mount table.
//!
//! A filesystem (the in-memory `/tmp`, the `fs` component's volumes, the
//! root tree with the embedded files) implements [`Filesystem`] and is
//! mounted at an absolute path with [`mount`]. The system-call layer
//! resolves a path to the mount with the longest matching prefix and hands
//! the filesystem the rest, relative to its root.
//!
//! Paths a [`Filesystem`] sees are already normalized: components are
//! separated by single `/`, there is no leading or trailing `/`, no `.`
//! or `..` and no empty component; `""` is the filesystem's root. Symbolic
//! links inside a filesystem are the filesystem's business
//! ([`Filesystem::readlink`]); the VFS follows them.
//!
//! Errors are the Linux ones (`ENOENT`, `ENOTDIR`, `EISDIR`, `EEXIST`,
//! `ENOTEMPTY`, `EROFS`, `ENOSPC`, `ENAMETOOLONG`, `EINVAL`...).

use super::{File, Stat};
use crate::errno::*;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use spin::Mutex;

/// How a file is opened (the `open(2)` flags a filesystem must honour; the
/// VFS keeps `O_NONBLOCK`, `O_CLOEXEC` and the access check itself).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenFlags {
    pub read: bool,
    pub write: bool,
    pub create: bool,
    /// With `create`: fail with `EEXIST` when the file exists.
    pub exclusive: bool,
    pub truncate: bool,
    pub append: bool,
    /// The path must be a directory (`ENOTDIR` otherwise).
    pub directory: bool,
    /// Permission bits for a file `create` makes.
    pub mode: u32,
}

/// `struct statfs` as the x86_64 Linux ABI lays it out (120 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct StatFs {
    /// The filesystem's magic (`MSDOS_SUPER_MAGIC` 0x4d44, `TMPFS_MAGIC` 0x01021994).
    pub f_type: i64,
    pub f_bsize: i64,
    pub f_blocks: u64,
    pub f_bfree: u64,
    pub f_bavail: u64,
    pub f_files: u64,
    pub f_ffree: u64,
    pub f_fsid: [i32; 2],
    pub f_namelen: i64,
    pub f_frsize: i64,
    /// `ST_RDONLY` (1) for a read-only mount, `ST_NOSUID` etc.
    pub f_flags: i64,
    pub f_spare: [i64; 4],
}

const _: () = assert!(core::mem::size_of::<StatFs>() == 120);

pub const ST_RDONLY: i64 = 1;
pub const RENAME_NOREPLACE: u32 = 1;
pub const RENAME_EXCHANGE: u32 = 2;

/// A timestamp for [`Filesystem::set_times`]: `None` leaves it unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timespec {
    pub sec: i64,
    pub nsec: u32,
}

/// One mounted filesystem. Every path is relative to its root (see the
/// module documentation).
pub trait Filesystem: Send + Sync {
    /// The type shown in messages and `/proc/mounts` ("vfat", "tmpfs").
    fn fs_type(&self) -> &str;
    /// Mounted read-only: every change answers `EROFS`.
    fn read_only(&self) -> bool;
    /// `lstat` of `path` (a symbolic link is not followed).
    fn stat(&self, path: &str) -> Result<Stat, Errno>;
    /// Open (and with `flags.create` maybe create) `path`. A directory opens
    /// only for reading; its [`File::getdents64`] lists it.
    fn open(&self, path: &str, flags: OpenFlags) -> Result<Arc<dyn File>, Errno>;
    fn mkdir(&self, path: &str, mode: u32) -> Result<(), Errno>;
    /// Remove a file (not a directory: `EISDIR`).
    fn unlink(&self, path: &str) -> Result<(), Errno>;
    /// Remove an empty directory (`ENOTEMPTY`, `ENOTDIR`).
    fn rmdir(&self, path: &str) -> Result<(), Errno>;
    /// `renameat2` within this filesystem, with Linux's rules: a file
    /// replaces an existing file atomically, a directory an empty
    /// directory; `RENAME_NOREPLACE` gives `EEXIST`; unsupported flags
    /// `EINVAL`.
    fn rename(&self, from: &str, to: &str, flags: u32) -> Result<(), Errno>;
    /// `truncate(2)` by path.
    fn truncate(&self, path: &str, len: u64) -> Result<(), Errno>;
    /// `utimensat`: set the access and/or modification time.
    fn set_times(
        &self,
        path: &str,
        atime: Option<Timespec>,
        mtime: Option<Timespec>,
    ) -> Result<(), Errno>;
    /// The target of the symbolic link at `path` (`EINVAL`: not a link).
    fn readlink(&self, _path: &str) -> Result<String, Errno> {
        Err(EINVAL)
    }
    /// Create a symbolic link (`EPERM` where the format has none, as
    /// Linux's vfat answers).
    fn symlink(&self, _target: &str, _path: &str) -> Result<(), Errno> {
        Err(EPERM)
    }
    /// A hard link (`EPERM` where the format has none).
    fn link(&self, _from: &str, _to: &str) -> Result<(), Errno> {
        Err(EPERM)
    }
    /// `chmod(2)`: set the permission bits (`EPERM` where the format
    /// keeps none).
    fn chmod(&self, _path: &str, _mode: u32) -> Result<(), Errno> {
        Err(EPERM)
    }
    fn statfs(&self) -> StatFs;
    /// Make everything written so far durable (`sync`, `syncfs`).
    fn sync(&self) -> Result<(), Errno>;
}

/// A mount: its absolute path (`"/"`, `"/tmp"`, `"/data"`) and filesystem.
#[derive(Clone)]
pub struct Mount {
    pub path: String,
    pub fs: Arc<dyn Filesystem>,
}

static MOUNTS: Mutex<Vec<Mount>> = Mutex::new(Vec::new());

/// Mount `fs` at the absolute, normalized `path` (components mount their
/// volumes at boot, before the app starts). `EBUSY` when something is
/// mounted there already.
pub fn mount(path: &str, fs: Arc<dyn Filesystem>) -> Result<(), Errno> {
    let mut m = MOUNTS.lock();
    if m.iter().any(|x| x.path == path) {
        return Err(EBUSY);
    }
    m.push(Mount {
        path: String::from(path),
        fs,
    });
    Ok(())
}

/// Every mount, in mount order.
pub fn mounts() -> Vec<Mount> {
    MOUNTS.lock().clone()
}

/// The mount holding the absolute, normalized `path` (longest prefix) and
/// the rest of the path relative to it.
pub fn resolve_mount(path: &str) -> Option<(Mount, String)> {
    let m = MOUNTS.lock();
    let mut best: Option<&Mount> = None;
    for x in m.iter() {
        let inside = x.path == "/"
            || path == x.path
            || (path.starts_with(x.path.as_str())
                && path.as_bytes().get(x.path.len()) == Some(&b'/'));
        if inside && best.is_none_or(|b| b.path.len() < x.path.len()) {
            best = Some(x);
        }
    }
    let b = best?.clone();
    let rest = if b.path == "/" {
        path.trim_start_matches('/')
    } else {
        path.get(b.path.len()..)
            .unwrap_or("")
            .trim_start_matches('/')
    };
    Some((b.clone(), String::from(rest)))
}
