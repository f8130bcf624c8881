//! A general in-memory filesystem: directories, regular files, symbolic
//! links and device nodes, with inode numbers, permission bits, wall-clock
//! timestamps, link counts and a size limit counted in 4 KiB pages.
//!
//! It serves twice: as the root `/` (built at boot by [`super::root`],
//! read-only to the app) and as `/tmp` (writable, limited by
//! `UNIKERNEL_TMP_SIZE`). The runtime fills a read-only instance through
//! the `add_*` methods, which ignore the read-only flag; the app changes
//! one only through [`Filesystem`] and the open files ([`file::MemFile`]).
//!
//! An inode lives while a directory entry names it or a file is open on
//! it: an unlinked file that is still open keeps its data (and its pages
//! count against the limit) until the last close, as on Linux.

mod data;
mod file;
mod table;
#[cfg(test)]
mod tests;
mod tree;

use data::Data;
pub use data::PAGE;

use super::vfs::{self, Filesystem, OpenFlags, StatFs, Timespec};
use super::{File, Stat, S_IFDIR, S_IFLNK, S_IFREG};
use crate::errno::*;
use alloc::string::String;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicU64, Ordering};
use spin::Mutex;
use table::{Entries, Nodes};

pub const TMPFS_MAGIC: i64 = 0x0102_1994;
pub const RAMFS_MAGIC: i64 = 0x8584_58f6;
const ROOT_INO: u64 = 2;
const NAME_MAX: usize = 255;

/// Device numbers for `st_dev`, one per filesystem instance.
static NEXT_DEV: AtomicU64 = AtomicU64::new(1);

pub(crate) enum Kind {
    /// Entries by name, and the parent's inode (the root is its own parent).
    Dir {
        entries: Entries,
        parent: u64,
    },
    File(Data),
    Symlink(String),
    /// A device file (`/dev/null`, ...): opening it gives this file; its
    /// `stat` is the device's.
    Device(Arc<dyn File>),
}

pub(crate) struct Inode {
    pub mode: u32,
    pub nlink: u32,
    /// Open files on this inode.
    pub opens: u32,
    pub atime: Timespec,
    pub mtime: Timespec,
    pub ctime: Timespec,
    pub kind: Kind,
}

pub(crate) struct Inner {
    pub nodes: Nodes,
    /// Pages of file data in use.
    pub used: u64,
}

/// The state shared by a [`MemFs`] and its open files.
pub(crate) struct Shared {
    pub inner: Mutex<Inner>,
    pub read_only: bool,
    pub dev: u64,
    /// Size limit in pages.
    pub limit: u64,
    pub magic: i64,
    pub fs_type: &'static str,
}

/// An in-memory filesystem.
pub struct MemFs {
    shared: Arc<Shared>,
}

/// The current wall-clock time (0 before the runtime started, in host tests).
pub(crate) fn now() -> Timespec {
    let ns = crate::try_platform().map_or(0, |p| p.wall_clock_ns());
    Timespec {
        sec: (ns / 1_000_000_000) as i64,
        nsec: (ns % 1_000_000_000) as u32,
    }
}

impl Inode {
    fn new(mode: u32, kind: Kind) -> Inode {
        let t = now();
        Inode {
            mode,
            nlink: 1,
            opens: 0,
            atime: t,
            mtime: t,
            ctime: t,
            kind,
        }
    }

    pub fn is_dir(&self) -> bool {
        matches!(self.kind, Kind::Dir { .. })
    }

    pub fn size(&self) -> u64 {
        match &self.kind {
            Kind::Dir { .. } => PAGE as u64,
            Kind::File(d) => d.len(),
            Kind::Symlink(t) => t.len() as u64,
            Kind::Device(_) => 0,
        }
    }

    pub fn stat(&self, dev: u64, ino: u64) -> Stat {
        if let Kind::Device(f) = &self.kind {
            return f.stat();
        }
        let pages = match &self.kind {
            Kind::File(d) => d.pages(),
            _ => 0,
        };
        Stat {
            dev,
            ino,
            nlink: self.nlink as u64,
            mode: self.mode,
            size: self.size() as i64,
            blksize: PAGE as i64,
            blocks: (pages * (PAGE as u64 / 512)) as i64,
            atime: self.atime.sec,
            atime_nsec: self.atime.nsec as i64,
            mtime: self.mtime.sec,
            mtime_nsec: self.mtime.nsec as i64,
            ctime: self.ctime.sec,
            ctime_nsec: self.ctime.nsec as i64,
            ..Stat::default()
        }
    }
}

impl MemFs {
    /// An empty filesystem of at most `limit_bytes` of file data
    /// (rounded up to whole pages).
    pub fn new(fs_type: &'static str, magic: i64, read_only: bool, limit_bytes: u64) -> MemFs {
        let mut nodes = Nodes::default();
        let mut root = Inode::new(
            S_IFDIR | 0o755,
            Kind::Dir {
                entries: Entries::default(),
                parent: ROOT_INO,
            },
        );
        root.nlink = 2;
        nodes.insert(ROOT_INO, root);
        MemFs {
            shared: Arc::new(Shared {
                inner: Mutex::new(Inner { nodes, used: 0 }),
                read_only,
                dev: NEXT_DEV.fetch_add(1, Ordering::Relaxed),
                limit: limit_bytes.div_ceil(PAGE as u64),
                magic,
                fs_type,
            }),
        }
    }

    fn writable(&self) -> Result<(), Errno> {
        if self.shared.read_only {
            Err(EROFS)
        } else {
            Ok(())
        }
    }

    /// Add a directory (its parents must exist; an existing directory is kept).
    pub fn add_dir(&self, path: &str, mode: u32) -> Result<(), Errno> {
        let mut g = self.shared.inner.lock();
        if let Ok(ino) = g.lookup(path) {
            return if g.node(ino)?.is_dir() {
                Ok(())
            } else {
                Err(EEXIST)
            };
        }
        let kind = Kind::Dir {
            entries: Entries::default(),
            parent: 0,
        };
        g.create(path, Inode::new(S_IFDIR | (mode & 0o7777), kind))
            .map(|_| ())
    }

    /// Add (or replace the contents of) a read-only-data file whose bytes
    /// are read in place.
    pub fn add_static_file(&self, path: &str, mode: u32, data: &'static [u8]) -> Result<(), Errno> {
        self.put_file(path, mode, Data::Static(data))
    }

    /// Add or replace a file whose contents the caller owns as a whole.
    pub fn set_shared_file(
        &self,
        path: &str,
        mode: u32,
        data: Arc<alloc::vec::Vec<u8>>,
    ) -> Result<(), Errno> {
        self.put_file(path, mode, Data::Shared(data))
    }

    fn put_file(&self, path: &str, mode: u32, data: Data) -> Result<(), Errno> {
        let mut g = self.shared.inner.lock();
        if let Ok(ino) = g.lookup(path) {
            let n = g.node_mut(ino)?;
            let Kind::File(d) = &mut n.kind else {
                return Err(EEXIST);
            };
            let old = d.pages();
            *d = data;
            n.mtime = now();
            g.used -= old;
            return Ok(());
        }
        g.create(
            path,
            Inode::new(S_IFREG | (mode & 0o7777), Kind::File(data)),
        )
        .map(|_| ())
    }

    pub fn add_symlink(&self, path: &str, target: &str) -> Result<(), Errno> {
        let mut g = self.shared.inner.lock();
        g.create(
            path,
            Inode::new(S_IFLNK | 0o777, Kind::Symlink(String::from(target))),
        )
        .map(|_| ())
    }

    pub fn add_device(&self, path: &str, dev: Arc<dyn File>) -> Result<(), Errno> {
        let mode = dev.stat().mode;
        let mut g = self.shared.inner.lock();
        g.create(path, Inode::new(mode, Kind::Device(dev)))
            .map(|_| ())
    }

    /// Set the permission bits of the root directory (`/tmp`: 1777).
    pub fn chmod_root(&self, mode: u32) -> Result<(), Errno> {
        let mut g = self.shared.inner.lock();
        let n = g.node_mut(ROOT_INO)?;
        n.mode = (n.mode & !0o7777) | (mode & 0o7777);
        Ok(())
    }

    /// Pages of file data in use.
    pub fn used_pages(&self) -> u64 {
        self.shared.inner.lock().used
    }
}

pub(crate) fn statfs_of(s: &Shared) -> StatFs {
    let used = s.inner.lock().used;
    let limit = if s.limit == u64::MAX / PAGE as u64 {
        used
    } else {
        s.limit
    };
    let free = limit.saturating_sub(used);
    StatFs {
        f_type: s.magic,
        f_bsize: PAGE as i64,
        f_blocks: limit,
        f_bfree: free,
        f_bavail: free,
        f_files: s.inner.lock().nodes.len() as u64 + free,
        f_ffree: free,
        f_fsid: [s.dev as i32, 0],
        f_namelen: NAME_MAX as i64,
        f_frsize: PAGE as i64,
        f_flags: if s.read_only { vfs::ST_RDONLY } else { 0 },
        f_spare: [0; 4],
    }
}

impl Filesystem for MemFs {
    fn fs_type(&self) -> &str {
        self.shared.fs_type
    }

    fn read_only(&self) -> bool {
        self.shared.read_only
    }

    fn stat(&self, path: &str) -> Result<Stat, Errno> {
        let g = self.shared.inner.lock();
        let ino = g.lookup(path)?;
        Ok(g.node(ino)?.stat(self.shared.dev, ino))
    }

    fn open(&self, path: &str, flags: OpenFlags) -> Result<Arc<dyn File>, Errno> {
        let ro = self.shared.read_only;
        let mut g = self.shared.inner.lock();
        let ino = match g.lookup(path) {
            Ok(_) if flags.create && flags.exclusive => return Err(EEXIST),
            Ok(ino) => ino,
            Err(ENOENT) if flags.create && !flags.directory => {
                if ro {
                    return Err(EROFS);
                }
                let inode =
                    Inode::new(S_IFREG | (flags.mode & 0o7777), Kind::File(Data::default()));
                g.create(path, inode)?
            }
            Err(e) => return Err(e),
        };
        let n = g.node_mut(ino)?;
        match &mut n.kind {
            Kind::Device(f) => return Ok(f.clone()),
            Kind::Dir { .. } if flags.write || flags.truncate || flags.create => {
                return Err(EISDIR)
            }
            Kind::Dir { .. } => {}
            _ if flags.directory => return Err(ENOTDIR),
            Kind::Symlink(_) => return Err(ELOOP),
            Kind::File(_) if ro && (flags.write || flags.truncate) => return Err(EROFS),
            Kind::File(_) => {}
        }
        if flags.truncate && flags.write {
            let (nodes, mut space) = g.space(self.shared.limit);
            if let Some(Inode {
                kind: Kind::File(d),
                mtime,
                ctime,
                ..
            }) = nodes.get_mut(&ino)
            {
                if d.len() != 0 {
                    d.set_len(0, &mut space)?;
                    let t = now();
                    *mtime = t;
                    *ctime = t;
                }
            }
        }
        g.node_mut(ino)?.opens += 1;
        Ok(Arc::new(file::MemFile::new(self.shared.clone(), ino)))
    }

    fn mkdir(&self, path: &str, mode: u32) -> Result<(), Errno> {
        let mut g = self.shared.inner.lock();
        if g.lookup(path).is_ok() {
            return Err(EEXIST);
        }
        self.writable()?;
        let kind = Kind::Dir {
            entries: Entries::default(),
            parent: 0,
        };
        g.create(path, Inode::new(S_IFDIR | (mode & 0o7777), kind))
            .map(|_| ())
    }

    fn unlink(&self, path: &str) -> Result<(), Errno> {
        self.writable()?;
        self.shared.inner.lock().remove(path, false)
    }

    fn rmdir(&self, path: &str) -> Result<(), Errno> {
        self.writable()?;
        self.shared.inner.lock().remove(path, true)
    }

    fn rename(&self, from: &str, to: &str, flags: u32) -> Result<(), Errno> {
        self.writable()?;
        self.shared.inner.lock().rename(from, to, flags)
    }

    fn truncate(&self, path: &str, len: u64) -> Result<(), Errno> {
        let ino = self.shared.inner.lock().lookup(path)?;
        file::set_len(&self.shared, ino, len)
    }

    fn set_times(
        &self,
        path: &str,
        atime: Option<Timespec>,
        mtime: Option<Timespec>,
    ) -> Result<(), Errno> {
        let ino = self.shared.inner.lock().lookup(path)?;
        file::set_times(&self.shared, ino, atime, mtime)
    }

    fn readlink(&self, path: &str) -> Result<String, Errno> {
        let g = self.shared.inner.lock();
        match &g.node(g.lookup(path)?)?.kind {
            Kind::Symlink(t) => Ok(t.clone()),
            _ => Err(EINVAL),
        }
    }

    fn symlink(&self, target: &str, path: &str) -> Result<(), Errno> {
        let mut g = self.shared.inner.lock();
        if g.lookup(path).is_ok() {
            return Err(EEXIST);
        }
        self.writable()?;
        g.create(
            path,
            Inode::new(S_IFLNK | 0o777, Kind::Symlink(String::from(target))),
        )
        .map(|_| ())
    }

    fn link(&self, from: &str, to: &str) -> Result<(), Errno> {
        self.writable()?;
        let mut g = self.shared.inner.lock();
        let src = g.lookup(from)?;
        if g.node(src)?.is_dir() {
            return Err(EPERM);
        }
        let (dir, name) = g.parent_of(to)?;
        if g.entries_mut(dir)?.contains_key(name) {
            return Err(EEXIST);
        }
        g.entries_mut(dir)?.insert(String::from(name), src);
        let t = now();
        let n = g.node_mut(src)?;
        n.nlink += 1;
        n.ctime = t;
        g.touch_dirs(dir, dir);
        Ok(())
    }

    fn chmod(&self, path: &str, mode: u32) -> Result<(), Errno> {
        let ino = self.shared.inner.lock().lookup(path)?;
        file::chmod(&self.shared, ino, mode)
    }

    fn statfs(&self) -> StatFs {
        statfs_of(&self.shared)
    }

    fn sync(&self) -> Result<(), Errno> {
        // Memory is as durable as it gets.
        Ok(())
    }
}
