//! An open file of a [`super::MemFs`]: a regular file (read, write,
//! positioned I/O, size changes) or a directory (`getdents64`). It keeps
//! its inode alive until it is closed.

use super::{now, statfs_of, Inode, Kind, Shared};
use crate::errno::*;
use crate::fs::vfs::{StatFs, Timespec};
use crate::fs::{File, Stat, SEEK_CUR, SEEK_END, SEEK_SET};
use alloc::string::String;
use alloc::sync::Arc;
use spin::Mutex;

const SEEK_DATA: u32 = 3;
const SEEK_HOLE: u32 = 4;
const DT_CHR: u8 = 2;
const DT_DIR: u8 = 4;
const DT_REG: u8 = 8;
const DT_LNK: u8 = 10;

/// Where a directory listing stands.
#[derive(Clone)]
enum Cursor {
    Start,
    AfterDot,
    /// After `..` (`None`) or after the named entry.
    After(Option<String>),
}

pub struct MemFile {
    fs: Arc<Shared>,
    ino: u64,
    pos: Mutex<u64>,
    dir: Mutex<(Cursor, i64)>,
}

impl MemFile {
    pub(super) fn new(fs: Arc<Shared>, ino: u64) -> MemFile {
        MemFile {
            fs,
            ino,
            pos: Mutex::new(0),
            dir: Mutex::new((Cursor::Start, 0)),
        }
    }
}

impl Drop for MemFile {
    fn drop(&mut self) {
        let mut g = self.fs.inner.lock();
        if let Some(n) = g.nodes.get_mut(&self.ino) {
            n.opens -= 1;
        }
        g.maybe_free(self.ino);
    }
}

fn writable(fs: &Shared) -> Result<(), Errno> {
    if fs.read_only {
        Err(EROFS)
    } else {
        Ok(())
    }
}

/// Change a regular file's size (`truncate`, `ftruncate`).
pub(super) fn set_len(fs: &Shared, ino: u64, len: u64) -> Result<(), Errno> {
    let mut g = fs.inner.lock();
    match g.node(ino)?.kind {
        Kind::File(_) => writable(fs)?,
        Kind::Dir { .. } => return Err(EISDIR),
        _ => return Err(EINVAL),
    }
    let (nodes, mut space) = g.space(fs.limit);
    let n = nodes.get_mut(&ino).ok_or(ENOENT)?;
    if let Kind::File(d) = &mut n.kind {
        d.set_len(len, &mut space)?;
    }
    let t = now();
    n.mtime = t;
    n.ctime = t;
    Ok(())
}

pub(super) fn set_times(
    fs: &Shared,
    ino: u64,
    atime: Option<Timespec>,
    mtime: Option<Timespec>,
) -> Result<(), Errno> {
    writable(fs)?;
    let mut g = fs.inner.lock();
    let n = g.node_mut(ino)?;
    if let Some(t) = atime {
        n.atime = t;
    }
    if let Some(t) = mtime {
        n.mtime = t;
    }
    n.ctime = now();
    Ok(())
}

pub(super) fn chmod(fs: &Shared, ino: u64, mode: u32) -> Result<(), Errno> {
    writable(fs)?;
    let mut g = fs.inner.lock();
    let n = g.node_mut(ino)?;
    if matches!(n.kind, Kind::Symlink(_)) {
        return Err(EOPNOTSUPP);
    }
    n.mode = (n.mode & !0o7777) | (mode & 0o7777);
    n.ctime = now();
    Ok(())
}

fn dtype(n: &Inode) -> u8 {
    match n.kind {
        Kind::Dir { .. } => DT_DIR,
        Kind::File(_) => DT_REG,
        Kind::Symlink(_) => DT_LNK,
        Kind::Device(_) => DT_CHR,
    }
}

/// Put one `linux_dirent64` record at the start of `buf`; `None` when it
/// does not fit.
fn put_dirent(buf: &mut [u8], ino: u64, off: i64, dtype: u8, name: &str) -> Option<usize> {
    let reclen = (19 + name.len() + 1).div_ceil(8) * 8;
    let rec = buf.get_mut(..reclen)?;
    rec.fill(0);
    rec[0..8].copy_from_slice(&ino.to_le_bytes());
    rec[8..16].copy_from_slice(&off.to_le_bytes());
    rec[16..18].copy_from_slice(&(reclen as u16).to_le_bytes());
    rec[18] = dtype;
    rec[19..19 + name.len()].copy_from_slice(name.as_bytes());
    Some(reclen)
}

impl File for MemFile {
    fn read(&self, buf: &mut [u8]) -> Result<usize, Errno> {
        let mut pos = self.pos.lock();
        let n = self.pread(buf, *pos)?;
        *pos += n as u64;
        Ok(n)
    }

    fn write(&self, buf: &[u8]) -> Result<usize, Errno> {
        let mut pos = self.pos.lock();
        let n = self.pwrite(buf, *pos)?;
        *pos += n as u64;
        Ok(n)
    }

    fn pread(&self, buf: &mut [u8], offset: u64) -> Result<usize, Errno> {
        let mut g = self.fs.inner.lock();
        let n = g.node_mut(self.ino)?;
        match &n.kind {
            Kind::File(d) => Ok(d.read(buf, offset)),
            Kind::Dir { .. } => Err(EISDIR),
            _ => Err(EINVAL),
        }
    }

    fn pwrite(&self, buf: &[u8], offset: u64) -> Result<usize, Errno> {
        writable(&self.fs)?;
        if buf.is_empty() {
            return Ok(0);
        }
        let mut g = self.fs.inner.lock();
        let (nodes, mut space) = g.space(self.fs.limit);
        let n = nodes.get_mut(&self.ino).ok_or(ENOENT)?;
        let Kind::File(d) = &mut n.kind else {
            return Err(EISDIR);
        };
        let done = d.write(buf, offset, &mut space)?;
        let t = now();
        n.mtime = t;
        n.ctime = t;
        Ok(done)
    }

    fn seek(&self, offset: i64, whence: u32) -> Result<u64, Errno> {
        let (size, is_dir) = {
            let g = self.fs.inner.lock();
            let n = g.node(self.ino)?;
            (n.size() as i64, n.is_dir())
        };
        if is_dir {
            // Only a rewind is meaningful for a listing.
            if offset == 0 && whence == SEEK_SET {
                *self.dir.lock() = (Cursor::Start, 0);
                return Ok(0);
            }
            return Err(EINVAL);
        }
        let mut pos = self.pos.lock();
        let new = match whence {
            SEEK_SET => Some(offset),
            SEEK_CUR => (*pos as i64).checked_add(offset),
            SEEK_END => size.checked_add(offset),
            // No holes are reported: data runs to the end of the file.
            SEEK_DATA | SEEK_HOLE if offset < 0 => return Err(EINVAL),
            SEEK_DATA | SEEK_HOLE if offset >= size => return Err(ENXIO),
            SEEK_DATA => Some(offset),
            SEEK_HOLE => Some(size),
            _ => return Err(EINVAL),
        };
        match new {
            Some(v) if v >= 0 => {
                *pos = v as u64;
                Ok(v as u64)
            }
            _ => Err(EINVAL),
        }
    }

    fn set_len(&self, len: u64) -> Result<(), Errno> {
        set_len(&self.fs, self.ino, len)
    }

    fn allocate(&self, offset: u64, len: u64) -> Result<(), Errno> {
        writable(&self.fs)?;
        let mut g = self.fs.inner.lock();
        let (nodes, mut space) = g.space(self.fs.limit);
        let n = nodes.get_mut(&self.ino).ok_or(ENOENT)?;
        match &mut n.kind {
            Kind::File(d) => d.allocate(offset, len, &mut space)?,
            Kind::Dir { .. } => return Err(EISDIR),
            _ => return Err(ENODEV),
        }
        n.ctime = now();
        Ok(())
    }

    fn sync(&self, _data_only: bool) -> Result<(), Errno> {
        Ok(())
    }

    fn set_times(&self, atime: Option<Timespec>, mtime: Option<Timespec>) -> Result<(), Errno> {
        set_times(&self.fs, self.ino, atime, mtime)
    }

    fn chmod(&self, mode: u32) -> Result<(), Errno> {
        chmod(&self.fs, self.ino, mode)
    }

    fn statfs(&self) -> Result<StatFs, Errno> {
        Ok(statfs_of(&self.fs))
    }

    fn stat(&self) -> Stat {
        let g = self.fs.inner.lock();
        g.node(self.ino)
            .map(|n| n.stat(self.fs.dev, self.ino))
            .unwrap_or_default()
    }

    fn mappable(&self) -> bool {
        let g = self.fs.inner.lock();
        g.node(self.ino)
            .is_ok_and(|n| matches!(n.kind, Kind::File(_)))
    }

    fn getdents64(&self, buf: &mut [u8]) -> Result<usize, Errno> {
        let g = self.fs.inner.lock();
        let n = g.node(self.ino)?;
        let Kind::Dir { entries, parent } = &n.kind else {
            return Err(ENOTDIR);
        };
        let mut st = self.dir.lock();
        let (cursor, index) = &mut *st;
        let mut used = 0;
        loop {
            let (next, ino, dt, name): (Cursor, u64, u8, &str) = match cursor {
                Cursor::Start => (Cursor::AfterDot, self.ino, DT_DIR, "."),
                Cursor::AfterDot => (Cursor::After(None), *parent, DT_DIR, ".."),
                Cursor::After(last) => {
                    let Some((name, ino)) = entries.after(last.as_deref()) else {
                        break;
                    };
                    let dt = g.nodes.get(&ino).map_or(DT_REG, dtype);
                    (Cursor::After(Some(name.clone())), ino, dt, name.as_str())
                }
            };
            match put_dirent(&mut buf[used..], ino, *index + 1, dt, name) {
                Some(len) => used += len,
                None if used == 0 => return Err(EINVAL),
                None => break,
            }
            *cursor = next;
            *index += 1;
        }
        Ok(used)
    }
}
