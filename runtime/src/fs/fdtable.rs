//! The file-descriptor table (one per process; there is one process).

use super::dev::Console;
use super::File;
use crate::errno::*;
use crate::platform::Stream;
use alloc::sync::Arc;
use alloc::vec::Vec;
use spin::Mutex;

pub const MAX_FDS: usize = 1024;

#[derive(Clone)]
pub struct FdEntry {
    pub file: Arc<dyn File>,
    pub cloexec: bool,
    /// Status flags given at open (O_APPEND, O_NONBLOCK, access mode).
    pub flags: u32,
}

pub struct FdTable {
    fds: Vec<Option<FdEntry>>,
}

impl FdTable {
    pub fn new() -> FdTable {
        FdTable { fds: Vec::new() }
    }

    /// fds 0, 1, 2 on the console.
    pub fn with_stdio() -> FdTable {
        let mut t = FdTable::new();
        for (i, s) in [None, Some(Stream::Stdout), Some(Stream::Stderr)]
            .into_iter()
            .enumerate()
        {
            let file: Arc<dyn File> = Arc::new(Console { stream: s });
            let flags = if i == 0 { 0 } else { 1 };
            t.install(FdEntry {
                file,
                cloexec: false,
                flags,
            })
            .ok();
        }
        t
    }

    /// Put `e` in the lowest free slot >= `min`.
    pub fn install_from(&mut self, min: usize, e: FdEntry) -> Result<usize, Errno> {
        let fd = (min..MAX_FDS)
            .find(|&i| self.fds.get(i).is_none_or(|s| s.is_none()))
            .ok_or(EMFILE)?;
        if fd >= self.fds.len() {
            self.fds.resize(fd + 1, None);
        }
        self.fds[fd] = Some(e);
        Ok(fd)
    }

    pub fn install(&mut self, e: FdEntry) -> Result<usize, Errno> {
        self.install_from(0, e)
    }

    pub fn get(&self, fd: i64) -> Result<FdEntry, Errno> {
        usize::try_from(fd)
            .ok()
            .and_then(|i| self.fds.get(i).cloned().flatten())
            .ok_or(EBADF)
    }

    pub fn get_mut(&mut self, fd: i64) -> Result<&mut FdEntry, Errno> {
        usize::try_from(fd)
            .ok()
            .and_then(|i| self.fds.get_mut(i))
            .and_then(|s| s.as_mut())
            .ok_or(EBADF)
    }

    pub fn close(&mut self, fd: i64) -> Result<(), Errno> {
        let i = usize::try_from(fd).map_err(|_| EBADF)?;
        match self.fds.get_mut(i) {
            Some(slot @ Some(_)) => {
                *slot = None;
                Ok(())
            }
            _ => Err(EBADF),
        }
    }
}

impl Default for FdTable {
    fn default() -> Self {
        Self::new()
    }
}

pub static FDS: Mutex<Option<FdTable>> = Mutex::new(None);

/// Run `f` on the descriptor table.
pub fn with<R>(f: impl FnOnce(&mut FdTable) -> R) -> R {
    let mut g = FDS.lock();
    f(g.get_or_insert_with(FdTable::with_stdio))
}

/// The file behind `fd` (the table lock is not held while it is used).
pub fn file(fd: i64) -> Result<FdEntry, Errno> {
    with(|t| t.get(fd))
}
