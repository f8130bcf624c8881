//! An open directory as the VFS hands it out: the filesystem's file plus
//! the directory's absolute path, which `*at` calls with this descriptor
//! and `fchdir` need. Everything else goes to the filesystem's file.

use super::vfs::{StatFs, Timespec};
use super::{File, Stat};
use crate::errno::Errno;
use alloc::string::String;
use alloc::sync::Arc;

pub struct DirFile {
    pub inner: Arc<dyn File>,
    pub path: String,
}

impl File for DirFile {
    fn read(&self, buf: &mut [u8]) -> Result<usize, Errno> {
        self.inner.read(buf)
    }
    fn pread(&self, buf: &mut [u8], offset: u64) -> Result<usize, Errno> {
        self.inner.pread(buf, offset)
    }
    fn seek(&self, offset: i64, whence: u32) -> Result<u64, Errno> {
        self.inner.seek(offset, whence)
    }
    fn sync(&self, data_only: bool) -> Result<(), Errno> {
        self.inner.sync(data_only)
    }
    fn set_times(&self, atime: Option<Timespec>, mtime: Option<Timespec>) -> Result<(), Errno> {
        self.inner.set_times(atime, mtime)
    }
    fn chmod(&self, mode: u32) -> Result<(), Errno> {
        self.inner.chmod(mode)
    }
    fn statfs(&self) -> Result<StatFs, Errno> {
        self.inner.statfs()
    }
    fn stat(&self) -> Stat {
        self.inner.stat()
    }
    fn getdents64(&self, buf: &mut [u8]) -> Result<usize, Errno> {
        self.inner.getdents64(buf)
    }
    fn dir_path(&self) -> Option<&str> {
        Some(&self.path)
    }
}
