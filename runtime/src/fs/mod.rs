//! Files: the `File` interface every open file implements, the
//! file-descriptor table, the VFS (mount table, path resolution), the
//! in-memory filesystem behind `/` and `/tmp`, and the device files.
//!
//! Filesystems (`memfs`, the `fs` component's volumes) implement
//! [`vfs::Filesystem`] and are mounted in the VFS; sockets, pipes, eventfd
//! and epoll implement [`File`] too.

pub mod dev;
pub mod dirfile;
pub mod epoll;
pub mod eventfd;
pub mod fdtable;
pub mod memfs;
pub mod path;
pub mod pipe;
pub mod root;
pub mod vfs;

/// The old home of [`root::set_etc_file`] (components call it by this path).
pub mod tree {
    pub use super::root::set_etc_file;
}

use crate::errno::*;

pub const S_IFMT: u32 = 0o170000;
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFCHR: u32 = 0o020000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFLNK: u32 = 0o120000;

/// `struct stat` as the x86_64 Linux ABI lays it out (144 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Stat {
    pub dev: u64,
    pub ino: u64,
    pub nlink: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub _pad0: u32,
    pub rdev: u64,
    pub size: i64,
    pub blksize: i64,
    pub blocks: i64,
    pub atime: i64,
    pub atime_nsec: i64,
    pub mtime: i64,
    pub mtime_nsec: i64,
    pub ctime: i64,
    pub ctime_nsec: i64,
    pub _unused: [i64; 3],
}

const _: () = assert!(core::mem::size_of::<Stat>() == 144);

pub const SEEK_SET: u32 = 0;
pub const SEEK_CUR: u32 = 1;
pub const SEEK_END: u32 = 2;

/// What an open file can do. Every method has the Linux answer for files
/// that do not support it.
pub trait File: Send + Sync {
    fn read(&self, _buf: &mut [u8]) -> Result<usize, Errno> {
        Err(EINVAL)
    }
    fn write(&self, _buf: &[u8]) -> Result<usize, Errno> {
        Err(EINVAL)
    }
    /// Read at an offset without moving the file position.
    fn pread(&self, _buf: &mut [u8], _offset: u64) -> Result<usize, Errno> {
        Err(ESPIPE)
    }
    fn seek(&self, _offset: i64, _whence: u32) -> Result<u64, Errno> {
        Err(ESPIPE)
    }
    /// Write at an offset without moving the file position (`pwrite64`).
    fn pwrite(&self, _buf: &[u8], _offset: u64) -> Result<usize, Errno> {
        Err(ESPIPE)
    }
    /// `ftruncate(2)`.
    fn set_len(&self, _len: u64) -> Result<(), Errno> {
        Err(EINVAL)
    }
    /// `fallocate(2)` mode 0: make `[offset, offset + len)` allocated (the
    /// size grows to cover it; `ENOSPC` when the volume is full).
    fn allocate(&self, _offset: u64, _len: u64) -> Result<(), Errno> {
        Err(ENODEV)
    }
    /// `fsync(2)` (`data_only`: `fdatasync(2)`): durable when it returns.
    fn sync(&self, _data_only: bool) -> Result<(), Errno> {
        Err(EINVAL)
    }
    /// `futimens(2)`: set the access and/or modification time.
    fn set_times(
        &self,
        _atime: Option<vfs::Timespec>,
        _mtime: Option<vfs::Timespec>,
    ) -> Result<(), Errno> {
        Err(EPERM)
    }
    /// `fchmod(2)`: set the permission bits.
    fn chmod(&self, _mode: u32) -> Result<(), Errno> {
        Err(EPERM)
    }
    /// `fstatfs(2)`: the filesystem this file is on.
    fn statfs(&self) -> Result<vfs::StatFs, Errno> {
        Err(ENOSYS)
    }
    fn stat(&self) -> Stat;
    /// Fill `buf` with `linux_dirent64` records; 0 at the end.
    fn getdents64(&self, _buf: &mut [u8]) -> Result<usize, Errno> {
        Err(ENOTDIR)
    }
    fn ioctl(&self, _request: u64, _arg: u64) -> Result<i64, Errno> {
        Err(ENOTTY)
    }
    /// Readiness for `poll`/`epoll` (POLL* bits) without blocking.
    fn poll_ready(&self) -> u16 {
        POLLIN | POLLOUT
    }
    /// Changes each time this file's readiness may have changed (edge-triggered epoll).
    fn event_seq(&self) -> u64 {
        0
    }
    /// Reads and writes may return `EAGAIN` and then need [`crate::sched::wait_io`].
    fn can_block(&self) -> bool {
        false
    }
    /// `shutdown(2)` for sockets.
    fn shutdown(&self, _how: u32) -> Result<(), Errno> {
        Err(ENOTSOCK)
    }
    fn is_socket(&self) -> bool {
        self.as_socket().is_some()
    }
    /// The socket operations of a network component's socket.
    fn as_socket(&self) -> Option<&dyn crate::net::Socket> {
        None
    }
    /// The epoll instance behind an epoll file descriptor.
    fn as_epoll(&self) -> Option<&epoll::Epoll> {
        None
    }
    /// Whether `mmap` may copy this file's contents.
    fn mappable(&self) -> bool {
        false
    }
    /// The absolute path of an open directory (for `*at` calls and
    /// `fchdir`); the VFS wraps every directory it opens to know it.
    fn dir_path(&self) -> Option<&str> {
        None
    }
}

/// Readiness scans (one `epoll_wait` collection, one pass of `poll` or
/// `select` over its descriptors): a file whose readiness comes from a
/// component (a socket of the network stack) may bring that component up
/// to date once per scan instead of once per file ([`scan`]).
static SCAN: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(1);

/// A readiness scan begins.
pub fn new_scan() {
    SCAN.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
}

/// The current scan's number (it changes at every [`new_scan`]).
pub fn scan() -> u64 {
    SCAN.load(core::sync::atomic::Ordering::Relaxed)
}

pub const POLLIN: u16 = 0x1;
pub const POLLPRI: u16 = 0x2;
pub const POLLOUT: u16 = 0x4;
pub const POLLERR: u16 = 0x8;
pub const POLLHUP: u16 = 0x10;
pub const POLLNVAL: u16 = 0x20;
pub const POLLRDHUP: u16 = 0x2000;
pub const S_IFIFO: u32 = 0o010000;
pub const S_IFSOCK: u32 = 0o140000;
