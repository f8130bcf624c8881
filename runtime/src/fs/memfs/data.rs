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
    /// A zeroed page counted against the limit: `ENOSPC` past the limit or
    /// when the kernel heap has no memory left (never a panic).
    fn take(&mut self) -> Result<Box<[u8]>, Errno> {
        if *self.used >= self.limit {
            return Err(ENOSPC);
        }
        // Exactly the layout a Box<[u8]> of PAGE bytes frees with.
        let layout = core::alloc::Layout::array::<u8>(PAGE).map_err(|_| ENOMEM)?;
        // SAFETY: the layout has a nonzero size.
        let p = unsafe { alloc::alloc::alloc_zeroed(layout) };
        if p.is_null() {
            return Err(ENOSPC);
        }
        *self.used += 1;
        // SAFETY: p is a fresh, zeroed allocation from the global allocator
        // with the layout of a [u8; PAGE], which is what dropping the Box
        // deallocates with.
        Ok(unsafe { Box::from_raw(core::ptr::slice_from_raw_parts_mut(p, PAGE)) })
    }
}

/// The allocated pages of a file, sorted by page number (appending, the
/// common case, adds at the end; a hole costs nothing).
#[derive(Default)]
pub struct PageMap(Vec<(u64, Box<[u8]>)>);

impl PageMap {
    fn find(&self, page: u64) -> Result<usize, usize> {
        self.0.binary_search_by_key(&page, |(i, _)| *i)
    }

    fn get(&self, page: u64) -> Option<&[u8]> {
        self.find(page).ok().map(|i| &*self.0[i].1)
    }

    fn get_mut(&mut self, page: u64) -> Option<&mut [u8]> {
        self.find(page).ok().map(|i| &mut *self.0[i].1)
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

pub enum Data {
    /// Written by the app: page `i` holds bytes `[i*PAGE, (i+1)*PAGE)`; a
    /// missing page is a hole.
    Pages { pages: PageMap, len: u64 },
    /// Read in place (embedded files; the root is read-only, so never written).
    Static(&'static [u8]),
    /// Replaced as a whole by its owner (`/etc` files).
    Shared(Arc<Vec<u8>>),
}

impl Default for Data {
    fn default() -> Self {
        Data::Pages {
            pages: PageMap::default(),
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
            Data::Pages { pages, .. } => pages.len() as u64,
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
                    match pages.get(pi as u64) {
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
            let page = match pages.find(pi as u64) {
                Ok(i) => &mut pages.0[i].1,
                Err(i) => match space.take() {
                    Ok(p) => {
                        pages.0.insert(i, (pi as u64, p));
                        &mut pages.0[i].1
                    }
                    Err(e) if done == 0 => return Err(e),
                    Err(_) => break,
                },
            };
            page[po..po + chunk].copy_from_slice(&src[done..done + chunk]);
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
            let keep = (new_len as usize).div_ceil(PAGE) as u64;
            let first_gone = pages.find(keep).unwrap_or_else(|i| i);
            *space.used -= (pages.0.len() - first_gone) as u64;
            pages.0.truncate(first_gone);
            pages.0.shrink_to_fit();
            let tail = new_len as usize % PAGE;
            if tail != 0 {
                if let Some(p) = pages.get_mut(keep - 1) {
                    p[tail..].fill(0);
                }
            }
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
        let (first, last) = (offset / PAGE as u64, end.div_ceil(PAGE as u64));
        let missing = (first..last).filter(|i| pages.find(*i).is_err()).count() as u64;
        if *space.used + missing > space.limit {
            return Err(ENOSPC);
        }
        let mut fresh = Vec::new();
        for i in (first..last).filter(|i| pages.find(*i).is_err()) {
            match space.take() {
                Ok(p) => fresh.push((i, p)),
                Err(e) => {
                    // All or nothing: give back what this call took.
                    *space.used -= fresh.len() as u64;
                    return Err(e);
                }
            }
        }
        for (i, p) in fresh {
            if let Err(at) = pages.find(i) {
                pages.0.insert(at, (i, p));
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
