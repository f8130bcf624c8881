//! The contents of an in-memory regular file: 4 KiB pages allocated when
//! first written (a hole reads as zeros), or bytes that live elsewhere and
//! are read in place (an embedded file in the image, an `/etc` file a
//! component synthesized). Space is counted in pages by the caller through
//! the `Space` budget it passes in.

use crate::errno::*;
use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;

pub const PAGE: usize = 4096;

/// Pages a filesystem may still hand out (its size limit minus what it uses).
pub struct Space<'a> {
    pub used: &'a mut u64,
    pub limit: u64,
}

impl Space<'_> {
    fn take(&mut self) -> Result<(), Errno> {
        if *self.used >= self.limit {
            return Err(ENOSPC);
        }
        *self.used += 1;
        Ok(())
    }
}

pub enum Data {
    /// Written by the app: page `i` holds bytes `[i*PAGE, (i+1)*PAGE)`.
    Pages {
        pages: Vec<Option<Box<[u8]>>>,
        len: u64,
    },
    /// Read in place (embedded files; the root is read-only, so never written).
    Static(&'static [u8]),
    /// Replaced as a whole by its owner (`/etc` files).
    Shared(Arc<Vec<u8>>),
}

impl Default for Data {
    fn default() -> Self {
        Data::Pages {
            pages: Vec::new(),
            len: 0,
        }
    }
}

impl Data {
    pub fn len(&self) -> u64 {
        match self {
            Data::Pages { len, .. } => *len,
            Data::Static(s) => s.len() as u64,
            Data::Shared(s) => s.len() as u64,
        }
    }

    /// Pages counted against the filesystem's size limit.
    pub fn pages(&self) -> u64 {
        match self {
            Data::Pages { pages, .. } => pages.iter().filter(|p| p.is_some()).count() as u64,
            _ => 0,
        }
    }

    /// Copy bytes from `offset` into `buf`; 0 at or past the end.
    pub fn read(&self, buf: &mut [u8], offset: u64) -> usize {
        let len = self.len();
        if offset >= len {
            return 0;
        }
        let n = buf.len().min((len - offset) as usize);
        let off = offset as usize;
        match self {
            Data::Static(s) => buf[..n].copy_from_slice(&s[off..off + n]),
            Data::Shared(s) => buf[..n].copy_from_slice(&s[off..off + n]),
            Data::Pages { pages, .. } => {
                let mut done = 0;
                while done < n {
                    let pos = off + done;
                    let (pi, po) = (pos / PAGE, pos % PAGE);
                    let chunk = (PAGE - po).min(n - done);
                    match pages.get(pi).and_then(|p| p.as_ref()) {
                        Some(p) => buf[done..done + chunk].copy_from_slice(&p[po..po + chunk]),
                        None => buf[done..done + chunk].fill(0),
                    }
                    done += chunk;
                }
            }
        }
        n
    }

    /// Turn borrowed contents into pages the app may change.
    fn own(&mut self, space: &mut Space) -> Result<(), Errno> {
        if matches!(self, Data::Pages { .. }) {
            return Ok(());
        }
        let old_len = self.len();
        let mut bytes = alloc::vec![0u8; old_len as usize];
        self.read(&mut bytes, 0);
        let mut fresh = Data::default();
        fresh.write(&bytes, 0, space)?;
        *self = fresh;
        Ok(())
    }

    /// Write `src` at `offset`, allocating pages from `space`. A write that
    /// runs out of space stops at the page that did not fit: a short count,
    /// or `ENOSPC` when nothing was written.
    pub fn write(&mut self, src: &[u8], offset: u64, space: &mut Space) -> Result<usize, Errno> {
        let end = offset.checked_add(src.len() as u64).ok_or(EFBIG)?;
        if end > isize::MAX as u64 {
            return Err(EFBIG);
        }
        self.own(space)?;
        let Data::Pages { pages, len } = self else {
            return Err(EIO);
        };
        let mut done = 0usize;
        while done < src.len() {
            let pos = offset as usize + done;
            let (pi, po) = (pos / PAGE, pos % PAGE);
            let chunk = (PAGE - po).min(src.len() - done);
            if pages.len() <= pi {
                pages.resize_with(pi + 1, || None);
            }
            if pages[pi].is_none() {
                if let Err(e) = space.take() {
                    if done == 0 {
                        return Err(e);
                    }
                    break;
                }
                pages[pi] = Some(alloc::vec![0u8; PAGE].into_boxed_slice());
            }
            if let Some(p) = pages[pi].as_mut() {
                p[po..po + chunk].copy_from_slice(&src[done..done + chunk]);
            }
            done += chunk;
        }
        *len = (*len).max(offset + done as u64);
        Ok(done)
    }

    /// Change the size: shrinking frees the pages past the end (and zeroes
    /// the tail of the last one), growing leaves a hole.
    pub fn set_len(&mut self, new_len: u64, space: &mut Space) -> Result<(), Errno> {
        if new_len > isize::MAX as u64 {
            return Err(EFBIG);
        }
        self.own(space)?;
        let Data::Pages { pages, len } = self else {
            return Err(EIO);
        };
        if new_len < *len {
            let keep = (new_len as usize).div_ceil(PAGE);
            for p in pages.drain(keep.min(pages.len())..).flatten() {
                drop(p);
                *space.used -= 1;
            }
            let tail = new_len as usize % PAGE;
            if tail != 0 {
                if let Some(Some(p)) = pages.get_mut(keep - 1) {
                    p[tail..].fill(0);
                }
            }
            pages.shrink_to_fit();
        }
        *len = new_len;
        Ok(())
    }

    /// `fallocate` mode 0: allocate the pages of `[offset, offset+n)` and
    /// grow the size to cover it. All or nothing: `ENOSPC` allocates nothing.
    pub fn allocate(&mut self, offset: u64, n: u64, space: &mut Space) -> Result<(), Errno> {
        let end = offset.checked_add(n).ok_or(EFBIG)?;
        if end > isize::MAX as u64 {
            return Err(EFBIG);
        }
        self.own(space)?;
        let Data::Pages { pages, len } = self else {
            return Err(EIO);
        };
        let (first, last) = ((offset as usize) / PAGE, (end as usize).div_ceil(PAGE));
        let missing = (first..last)
            .filter(|&i| pages.get(i).is_none_or(|p| p.is_none()))
            .count() as u64;
        if *space.used + missing > space.limit {
            return Err(ENOSPC);
        }
        if pages.len() < last {
            pages.resize_with(last, || None);
        }
        for p in &mut pages[first..last] {
            if p.is_none() {
                *p = Some(alloc::vec![0u8; PAGE].into_boxed_slice());
                *space.used += 1;
            }
        }
        *len = (*len).max(end);
        Ok(())
    }

    /// Give every page back (the file is gone).
    pub fn release(&mut self, used: &mut u64) {
        *used -= self.pages();
        *self = Data::default();
    }
}
