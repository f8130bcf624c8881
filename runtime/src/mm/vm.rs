//! The app's address space: areas (VMAs) above RAM, backed frame by frame.
//!
//! RAM itself `[0, mem_size)` is identity-mapped by the platform and holds
//! the kernel, the app image and every frame; the app's anonymous mappings,
//! its brk heap and its stack live in virtual regions above it:
//!
//! | region | range |
//! |---|---|
//! | brk heap | `BRK_BASE ..+ BRK_MAX` |
//! | `mmap` without a hint | `MMAP_BASE .. MMAP_END`, first fit |
//! | main-thread stack | given by the platform (below `0x7000_0000_0000`) |
//!
//! Memory is given as Linux gives it: an anonymous mapping, the brk heap
//! and the stack reserve get frames when first touched
//! ([`AddressSpace::resolve_fault`]), so reservations cost nothing until
//! used; `MAP_POPULATE`, `mlock` and file contents populate at once. A fault
//! populates its neighbours too, since on kvm-pvm a fault costs ~80 us (a
//! first touch of a frame ~5 us): the aligned 64 KiB around it, and a run
//! of adjacent faults doubles that window up to 2 MiB. PROT_NONE pages
//! that have a frame keep it behind a non-present entry (contents survive
//! mprotect). `mremap` moves page-table entries, never bytes.
//! TLB flushes are batched (up to 8 pages, else one full flush; the
//! platform may set a lower limit, hvt 1: `Platform::tlb_flush_pages_max`). They are
//! not skipped for entries whose Accessed bit is clear: on kvm-pvm an entry
//! the app has used can still read as never accessed.

use crate::arch::x86_64::paging::{
    self, write_entry, PageTable, ADDR_MASK, NX, P, PAGE_SIZE, SW_PROTNONE, W,
};
use crate::errno::*;
use crate::mm::frame;
use alloc::collections::BTreeMap;
use spin::Mutex;

pub const BRK_BASE: u64 = 0x0000_0800_0000_0000;
pub const BRK_MAX: u64 = 1 << 32;
pub const MMAP_BASE: u64 = 0x0000_1000_0000_0000;
pub const MMAP_END: u64 = 0x0000_6000_0000_0000;
/// Highest user address + 1 (canonical lower half).
pub const USER_END: u64 = 0x0000_7fff_ffff_f000;

pub const PROT_READ: u32 = 1;
pub const PROT_WRITE: u32 = 2;
pub const PROT_EXEC: u32 = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmaKind {
    Anon,
    Stack,
    Brk,
}

#[derive(Clone, Copy, Debug)]
pub struct Vma {
    pub end: u64,
    pub prot: u32,
    pub kind: VmaKind,
    /// The pages the last fault in this area populated, and how many: a
    /// fault just past them (either way) doubles the window.
    stream: Stream,
}

#[derive(Clone, Copy, Debug, Default)]
struct Stream {
    lo: u64,
    hi: u64,
    pages: u64,
}

impl Vma {
    fn new(end: u64, prot: u32, kind: VmaKind) -> Vma {
        Vma {
            end,
            prot,
            kind,
            stream: Stream::default(),
        }
    }
}

/// Pending TLB invalidations of one operation.
#[derive(Default)]
struct Flush {
    pages: [u64; 8],
    n: usize,
    all: bool,
}

impl Flush {
    fn add(&mut self, va: u64) {
        if self.n < self.pages.len() {
            self.pages[self.n] = va;
            self.n += 1;
        } else {
            self.all = true;
        }
    }
    fn run(self) {
        let p = crate::platform();
        if self.all || self.n > p.tlb_flush_pages_max() {
            p.flush_tlb_all();
        } else {
            for va in &self.pages[..self.n] {
                p.flush_tlb_page(*va);
            }
        }
    }
}

/// Pages populated with a faulting one (64 KiB with it): the aligned
/// 16-page block around it.
pub const FAULT_AROUND: u64 = 15;
/// The largest window a run of adjacent faults grows to (2 MiB, what a
/// huge page would give).
pub const FAULT_AROUND_MAX: u64 = 512;

/// What [`AddressSpace::resolve_fault`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolve {
    /// The access can now succeed.
    Resolved,
    /// No area allows it: a segmentation fault.
    NotMapped,
    /// An area allows it but no frame is left: the guest's memory is full.
    OutOfMemory,
}

pub struct AddressSpace {
    pt: PageTable,
    mem_size: u64,
    vmas: BTreeMap<u64, Vma>,
    brk: u64,
}

pub static ASPACE: Mutex<Option<AddressSpace>> = Mutex::new(None);

/// The first address of the next page table's range (2 MiB).
fn next_table(va: u64) -> u64 {
    (va | ((1 << 21) - 1)).saturating_add(1)
}

fn page_up(v: u64) -> Option<u64> {
    v.checked_add(PAGE_SIZE - 1).map(|x| x & !(PAGE_SIZE - 1))
}

fn alloc_table_frame() -> Option<u64> {
    frame::alloc_frame()
}

impl AddressSpace {
    /// # Safety
    /// `root` is the live PML4 and `mem_size` the identity-mapped RAM size.
    pub unsafe fn new(root: u64, mem_size: u64) -> AddressSpace {
        AddressSpace {
            // SAFETY: forwarded from the caller.
            pt: unsafe { PageTable::new(root) },
            mem_size,
            vmas: BTreeMap::new(),
            brk: BRK_BASE,
        }
    }

    pub fn page_table(&self) -> &PageTable {
        &self.pt
    }

    /// Register the main-thread stack `[bottom, top)`; pages from `mapped_bottom` up already have frames.
    pub fn add_stack(&mut self, bottom: u64, top: u64) {
        self.vmas.insert(
            bottom,
            Vma::new(top, PROT_READ | PROT_WRITE, VmaKind::Stack),
        );
    }

    pub fn vma_at(&self, va: u64) -> Option<(u64, Vma)> {
        let (&s, v) = self.vmas.range(..=va).next_back()?;
        (va < v.end).then_some((s, *v))
    }

    fn overlaps(&self, start: u64, end: u64) -> bool {
        if let Some((_, v)) = self.vmas.range(..start).next_back() {
            if v.end > start {
                return true;
            }
        }
        self.vmas.range(start..end).next().is_some()
    }

    fn user_range_ok(&self, start: u64, end: u64) -> bool {
        start >= self.mem_size.max(1 << 32) && end <= USER_END && start < end
    }

    fn find_free(&self, len: u64) -> Option<u64> {
        let mut cand = MMAP_BASE;
        for (&s, v) in self.vmas.range(MMAP_BASE..) {
            if s >= cand && s - cand >= len {
                break;
            }
            cand = cand.max(v.end);
        }
        (cand.checked_add(len)? <= MMAP_END).then_some(cand)
    }

    /// Remove areas in `[start, end)`, splitting partial overlaps.
    fn carve(&mut self, start: u64, end: u64) {
        if let Some((&s, v)) = self.vmas.range(..start).next_back() {
            let v = *v;
            if v.end > start {
                self.vmas.insert(s, Vma { end: start, ..v });
                if v.end > end {
                    self.vmas.insert(end, v);
                }
            }
        }
        let inside: alloc::vec::Vec<u64> = self.vmas.range(start..end).map(|(&s, _)| s).collect();
        for s in inside {
            if let Some(v) = self.vmas.remove(&s) {
                if v.end > end {
                    self.vmas.insert(end, v);
                }
            }
        }
    }

    /// Give a page a frame (zeroed) with the flags for `prot`.
    fn populate(&mut self, va: u64, prot: u32) -> Result<(), Errno> {
        let e = self
            .pt
            .leaf(va, Some(&mut alloc_table_frame))
            .ok_or(ENOMEM)?;
        // SAFETY: `e` points at a live leaf entry.
        let old = unsafe { e.read_volatile() };
        if old & (P | SW_PROTNONE) != 0 {
            return Ok(());
        }
        let f = paging::entry_frame(frame::alloc_frame().ok_or(ENOMEM)?);
        let flags = paging::flags_for_prot(prot);
        let entry = if flags == 0 {
            f | SW_PROTNONE
        } else {
            f | flags
        };
        // SAFETY: as above; the entry was not present, so no flush is needed.
        unsafe { write_entry(e, entry) };
        Ok(())
    }

    /// Drop the frames of `[start, end)`.
    fn unmap_pages(&mut self, start: u64, end: u64, flush: &mut Flush) {
        let mut va = start;
        while va < end {
            let Some(e) = self.pt.leaf(va, None) else {
                // No page table here: nothing mapped up to the next 2 MiB
                // (a big reservation that was never touched is quick).
                va = next_table(va);
                continue;
            };
            // SAFETY: live leaf entry.
            let old = unsafe { e.read_volatile() };
            if old & (P | SW_PROTNONE) != 0 {
                // SAFETY: as above.
                unsafe { write_entry(e, 0) };
                // Always flushed: on kvm-pvm an entry the app used can
                // still read as never accessed (A clear), so skipping
                // those left stale translations to freed frames
                // (tests/apps-c/remap.c).
                if old & P != 0 {
                    flush.add(va);
                }
                frame::free_frame(paging::frame_of(old));
            }
            va += PAGE_SIZE;
        }
    }

    /// Map `len` bytes of anonymous memory. With `populate` every page gets
    /// its frame now (MAP_POPULATE, file contents, the vDSO); otherwise
    /// pages get frames when first touched ([`Self::resolve_fault`]), so a
    /// reservation costs no memory until it is used.
    pub fn mmap(
        &mut self,
        addr: u64,
        len: u64,
        prot: u32,
        fixed: bool,
        noreplace: bool,
        populate: bool,
    ) -> Result<u64, Errno> {
        let len = page_up(len).ok_or(ENOMEM)?;
        if len == 0 {
            return Err(EINVAL);
        }
        let start = if fixed || noreplace {
            if addr & (PAGE_SIZE - 1) != 0 {
                return Err(EINVAL);
            }
            let end = addr.checked_add(len).ok_or(ENOMEM)?;
            if !self.user_range_ok(addr, end) {
                return Err(if noreplace { EEXIST } else { EINVAL });
            }
            if self.overlaps(addr, end) {
                if noreplace {
                    return Err(EEXIST);
                }
                let mut fl = Flush::default();
                self.unmap_pages(addr, end, &mut fl);
                self.carve(addr, end);
                fl.run();
            }
            addr
        } else {
            let hint = addr & !(PAGE_SIZE - 1);
            match hint.checked_add(len) {
                Some(end)
                    if hint != 0 && self.user_range_ok(hint, end) && !self.overlaps(hint, end) =>
                {
                    hint
                }
                _ => self.find_free(len).ok_or(ENOMEM)?,
            }
        };
        let end = start + len;
        self.vmas.insert(start, Vma::new(end, prot, VmaKind::Anon));
        let mut va = start;
        while populate && va < end {
            if let Err(e) = self.populate(va, prot) {
                let mut fl = Flush::default();
                self.unmap_pages(start, end, &mut fl);
                self.carve(start, end);
                fl.run();
                return Err(e);
            }
            va += PAGE_SIZE;
        }
        Ok(start)
    }

    /// `madvise(MADV_DONTNEED)` on private anonymous memory: the pages of
    /// `[addr, addr+len)` inside areas give their frames back and read as
    /// zeros when next touched.
    pub fn discard(&mut self, addr: u64, len: u64) -> Result<(), Errno> {
        let end = page_up(addr.checked_add(len).ok_or(EINVAL)?).ok_or(EINVAL)?;
        let mut fl = Flush::default();
        for (s, e) in self.areas_in(addr, end) {
            self.unmap_pages(s, e, &mut fl);
        }
        fl.run();
        Ok(())
    }

    pub fn munmap(&mut self, addr: u64, len: u64) -> Result<(), Errno> {
        if addr & (PAGE_SIZE - 1) != 0 || len == 0 {
            return Err(EINVAL);
        }
        let end = page_up(addr.checked_add(len).ok_or(EINVAL)?).ok_or(EINVAL)?;
        if end > USER_END {
            return Err(EINVAL);
        }
        let mut fl = Flush::default();
        // Only pages inside areas belong to the app (RAM below is identity-mapped).
        let areas: alloc::vec::Vec<(u64, u64)> = self.areas_in(addr, end);
        for (s, e) in areas {
            self.unmap_pages(s, e, &mut fl);
        }
        self.carve(addr, end);
        fl.run();
        Ok(())
    }

    fn areas_in(&self, start: u64, end: u64) -> alloc::vec::Vec<(u64, u64)> {
        let mut out = alloc::vec::Vec::new();
        let first = self
            .vmas
            .range(..start)
            .next_back()
            .map(|(&s, _)| s)
            .unwrap_or(start);
        for (&s, v) in self.vmas.range(first..end) {
            let (a, b) = (s.max(start), v.end.min(end));
            if a < b {
                out.push((a, b));
            }
        }
        out
    }

    pub fn mprotect(&mut self, addr: u64, len: u64, prot: u32) -> Result<(), Errno> {
        if addr & (PAGE_SIZE - 1) != 0 {
            return Err(EINVAL);
        }
        let end = page_up(addr.checked_add(len).ok_or(ENOMEM)?).ok_or(ENOMEM)?;
        if end == addr {
            return Ok(());
        }
        // The whole range must be mapped.
        let areas = self.areas_in(addr, end);
        let covered: u64 = areas.iter().map(|(a, b)| b - a).sum();
        if covered != end - addr {
            return Err(ENOMEM);
        }
        let new = paging::flags_for_prot(prot);
        let mut fl = Flush::default();
        let mut va = addr;
        while va < end {
            let Some(e) = self.pt.leaf(va, None) else {
                va = next_table(va);
                continue;
            };
            // SAFETY: live leaf entry.
            let old = unsafe { e.read_volatile() };
            if old & (P | SW_PROTNONE) != 0 {
                let f = old & ADDR_MASK; // stays in entry form (a machine frame on Xen PV)
                let entry = if new == 0 { f | SW_PROTNONE } else { f | new };
                // SAFETY: as above.
                unsafe { write_entry(e, entry) };
                let lost = old & P != 0
                    && (new & P == 0
                        || (old & W != 0 && new & W == 0)
                        || (old & NX == 0 && new & NX != 0));
                if lost {
                    fl.add(va);
                }
            }
            va += PAGE_SIZE;
        }
        fl.run();
        // Re-describe the areas with the new protection.
        let mut pieces = alloc::vec::Vec::new();
        for (a, b) in areas {
            if let Some((_, v)) = self.vma_at(a) {
                pieces.push((a, Vma::new(b, prot, v.kind)));
            }
        }
        self.carve(addr, end);
        for (a, v) in pieces {
            self.vmas.insert(a, v);
        }
        // Pages without a frame get one when first touched.
        Ok(())
    }

    /// Linux `brk`: returns the (possibly unchanged) break. New pages get
    /// frames when first touched, as mappings do.
    pub fn brk(&mut self, new: u64) -> u64 {
        if !(BRK_BASE..=BRK_BASE + BRK_MAX).contains(&new) {
            return self.brk;
        }
        let (old_top, new_top) = (
            page_up(self.brk).unwrap_or(self.brk),
            page_up(new).unwrap_or(new),
        );
        if new_top > old_top && self.overlaps(old_top, new_top) {
            return self.brk;
        }
        if new_top < old_top {
            let mut fl = Flush::default();
            self.unmap_pages(new_top, old_top, &mut fl);
            fl.run();
        }
        let stream = self
            .vmas
            .get(&BRK_BASE)
            .map(|v| v.stream)
            .unwrap_or_default();
        self.carve(BRK_BASE, old_top.max(new_top));
        if new_top > BRK_BASE {
            let mut v = Vma::new(new_top, PROT_READ | PROT_WRITE, VmaKind::Brk);
            v.stream = stream;
            self.vmas.insert(BRK_BASE, v);
        }
        self.brk = new;
        self.brk
    }

    /// Give every page of `[addr, addr+len)` its frame now (`mlock`,
    /// `mlockall`): the whole range must be mapped (else `ENOMEM`, as on
    /// Linux), and running out of frames is `EAGAIN`.
    pub fn populate_range(&mut self, addr: u64, len: u64) -> Result<(), Errno> {
        let start = addr & !(PAGE_SIZE - 1);
        let end = page_up(addr.checked_add(len).ok_or(ENOMEM)?).ok_or(ENOMEM)?;
        let areas = self.areas_in(start, end);
        if areas.iter().map(|(a, b)| b - a).sum::<u64>() != end - start {
            return Err(ENOMEM);
        }
        for (a, b) in areas {
            let prot = self.vma_at(a).map_or(0, |(_, v)| v.prot);
            let mut va = a;
            while va < b {
                self.populate(va, prot).map_err(|_| EAGAIN)?;
                va += PAGE_SIZE;
            }
        }
        Ok(())
    }

    /// Every area's range (for `mlockall`).
    pub fn areas(&self) -> alloc::vec::Vec<(u64, u64)> {
        self.vmas.iter().map(|(&s, v)| (s, v.end)).collect()
    }

    /// Linux `mremap` of private anonymous memory: shrink in place, grow in
    /// place when the pages after the area are free, else (with
    /// `may_move`) move the page-table entries to a new range, frames and
    /// contents untouched, no copy. `fixed` names the new address
    /// (MREMAP_FIXED: whatever is there is unmapped first).
    pub fn mremap(
        &mut self,
        old: u64,
        old_len: u64,
        new_len: u64,
        may_move: bool,
        fixed: Option<u64>,
    ) -> Result<u64, Errno> {
        if old & (PAGE_SIZE - 1) != 0 {
            return Err(EINVAL);
        }
        let old_len = page_up(old_len).ok_or(EINVAL)?;
        let new_len = page_up(new_len).ok_or(EINVAL)?;
        if new_len == 0 || old_len == 0 {
            // old_len 0 duplicates a shared mapping on Linux; every
            // mapping here is private.
            return Err(EINVAL);
        }
        let old_end = old.checked_add(old_len).ok_or(EFAULT)?;
        // The old range lies inside one area.
        let (vstart, v) = self.vma_at(old).ok_or(EFAULT)?;
        if old_end > v.end {
            return Err(EFAULT);
        }
        if let Some(to) = fixed {
            if !may_move || to & (PAGE_SIZE - 1) != 0 {
                return Err(EINVAL);
            }
            let to_end = to.checked_add(new_len).ok_or(EINVAL)?;
            if !self.user_range_ok(to, to_end) || (to < old_end && old < to_end) {
                return Err(EINVAL);
            }
            let moved = old_len.min(new_len);
            if new_len < old_len {
                self.munmap(old + new_len, old_len - new_len)?;
            }
            self.munmap(to, new_len)?;
            self.move_range(old, moved, to, new_len, v);
            return Ok(to);
        }
        if new_len <= old_len {
            if new_len < old_len {
                self.munmap(old + new_len, old_len - new_len)?;
            }
            return Ok(old);
        }
        let grow_end = old.checked_add(new_len).ok_or(ENOMEM)?;
        // In place: the old range ends its area and the pages after it are free.
        if old_end == v.end
            && self.user_range_ok(old_end, grow_end)
            && !self.overlaps(old_end, grow_end)
        {
            if let Some(a) = self.vmas.get_mut(&vstart) {
                a.end = grow_end;
            }
            return Ok(old);
        }
        if !may_move {
            return Err(ENOMEM);
        }
        let to = self.find_free(new_len).ok_or(ENOMEM)?;
        self.move_range(old, old_len, to, new_len, v);
        Ok(to)
    }

    /// Move the entries of `[from, from+len)` to `to` (free, `new_len` long,
    /// the rest of it lazily filled) and describe `to` as an area like `v`.
    fn move_range(&mut self, from: u64, len: u64, to: u64, new_len: u64, v: Vma) {
        let mut fl = Flush::default();
        let mut off = 0;
        while off < len {
            let va = from + off;
            let Some(e) = self.pt.leaf(va, None) else {
                off = next_table(va) - from;
                continue;
            };
            // SAFETY: live leaf entry.
            let old = unsafe { e.read_volatile() };
            if old & (P | SW_PROTNONE) != 0 {
                match self.pt.leaf(to + off, Some(&mut alloc_table_frame)) {
                    Some(ne) => {
                        // SAFETY: `ne` is the live (empty: `to` is free)
                        // entry of the destination; the source entry is
                        // cleared and flushed, so the frame has one mapping.
                        unsafe {
                            write_entry(ne, old);
                            write_entry(e, 0);
                        }
                    }
                    None => {
                        // No frame for a page table: the page is dropped
                        // (it reads as zeros at its new place).
                        // SAFETY: as above.
                        unsafe { write_entry(e, 0) };
                        frame::free_frame(paging::frame_of(old));
                    }
                }
                if old & P != 0 {
                    fl.add(va);
                }
            }
            off += PAGE_SIZE;
        }
        fl.run();
        self.carve(from, from + len);
        self.vmas.insert(to, Vma::new(to + new_len, v.prot, v.kind));
    }

    /// A page fault (or a system call about to touch `va`) found no usable
    /// entry: give the page a frame if its area allows the access, and its
    /// neighbours too (the aligned block of [`FAULT_AROUND`]` + 1` pages
    /// around it; a run of adjacent faults doubles the window up to
    /// [`FAULT_AROUND_MAX`]), since a fault costs a trap to ring 0 (~80 us
    /// on kvm-pvm).
    pub fn resolve_fault(&mut self, va: u64, write: bool, exec: bool) -> Resolve {
        let Some((start, v)) = self.vma_at(va) else {
            return Resolve::NotMapped;
        };
        let needed = if exec {
            PROT_EXEC
        } else if write {
            PROT_WRITE
        } else {
            PROT_READ | PROT_WRITE | PROT_EXEC
        };
        if v.prot & needed == 0 {
            return Resolve::NotMapped;
        }
        let page = va & !(PAGE_SIZE - 1);
        if let Some(e) = self.pt.leaf(page, None) {
            // SAFETY: live leaf entry.
            let old = unsafe { e.read_volatile() };
            if old & SW_PROTNONE != 0 {
                return Resolve::NotMapped;
            }
            if old & P != 0 {
                // A stale TLB entry (permissions were widened): the fault
                // itself dropped it; the access succeeds when retried.
                return Resolve::Resolved;
            }
        }
        if self.populate(page, v.prot).is_err() {
            return Resolve::OutOfMemory;
        }
        // Neighbours while frames last (a failure here is no error: the
        // page that faulted has its frame): the aligned 16-page block
        // around the page, or, for a fault just past what the last fault in
        // this area populated (a stream, either way), twice that window.
        let s = v.stream;
        let (lo, hi, pages) = if s.pages != 0 && page == s.hi {
            let n = (s.pages * 2).min(FAULT_AROUND_MAX);
            (page, page + n * PAGE_SIZE, n)
        } else if s.pages != 0 && page + PAGE_SIZE == s.lo {
            let n = (s.pages * 2).min(FAULT_AROUND_MAX);
            (
                (page + PAGE_SIZE).saturating_sub(n * PAGE_SIZE),
                page + PAGE_SIZE,
                n,
            )
        } else {
            let block = (FAULT_AROUND + 1) * PAGE_SIZE;
            let lo = page & !(block - 1);
            (lo, lo + block, FAULT_AROUND + 1)
        };
        let (lo, hi) = (lo.max(start), hi.min(v.end));
        let mut p = lo;
        while p < hi && self.populate(p, v.prot).is_ok() {
            p += PAGE_SIZE;
        }
        if let Some(a) = self.vmas.get_mut(&start) {
            a.stream = Stream {
                lo,
                hi: p.max(page + PAGE_SIZE),
                pages,
            };
        }
        Resolve::Resolved
    }

    /// Is `[va, va+len)` accessible to the app (for `write`: writable)?
    /// Pages that may be populated on demand are populated.
    pub fn check_user(&mut self, va: u64, len: u64, write: bool) -> Result<(), Errno> {
        if len == 0 {
            return Ok(());
        }
        let end = va.checked_add(len).ok_or(EFAULT)?;
        if va < PAGE_SIZE || end > USER_END {
            return Err(EFAULT);
        }
        let mut page = va & !(PAGE_SIZE - 1);
        while page < end {
            let ok = match self.pt.translate(page) {
                Some((_, f)) => f & paging::U != 0 && (!write || f & W != 0),
                None => false,
            };
            if !ok && page >= self.mem_size {
                match self.resolve_fault(page, write, false) {
                    Resolve::Resolved => {}
                    Resolve::NotMapped => return Err(EFAULT),
                    Resolve::OutOfMemory => return Err(ENOMEM),
                }
            } else if !ok {
                return Err(EFAULT);
            }
            page += PAGE_SIZE;
        }
        Ok(())
    }

    /// Number of areas (for tests and reports).
    pub fn area_count(&self) -> usize {
        self.vmas.len()
    }
}

/// The guest-physical pieces of the app buffer `[va, va + len)`, for a
/// driver that lets its device (the monitor) move the bytes itself instead
/// of through a bounce buffer: physically contiguous runs of at most
/// `max_run` bytes, appended to `out` as (physical address, bytes). For a
/// device read into the buffer (`writable`), every page must be mapped
/// writable. Returns false, with `out` cleared, when a page is not mapped
/// present (or not writable), when a run would leave RAM, or when the
/// address space is in use by the caller's own call chain (its lock is
/// taken): the driver then falls back to its bounce buffer.
///
/// The runs stay valid only while nothing can unmap the buffer: the caller
/// must finish the transfer before any other thread of the app runs (the
/// hvt driver waits for its device without yielding).
pub fn physical_runs(
    va: u64,
    len: usize,
    writable: bool,
    max_run: usize,
    out: &mut alloc::vec::Vec<(u64, usize)>,
) -> bool {
    out.clear();
    let Some(guard) = ASPACE.try_lock() else {
        return false;
    };
    let Some(space) = guard.as_ref() else {
        return false;
    };
    let Some(end) = va.checked_add(len as u64) else {
        return false;
    };
    let mut at = va;
    while at < end {
        let page_end = ((at & !(PAGE_SIZE - 1)) + PAGE_SIZE).min(end);
        let ok = match space.pt.translate(at) {
            Some((phys, flags)) if flags & paging::U != 0 && (!writable || flags & W != 0) => {
                let n = (page_end - at) as usize;
                let in_ram = phys
                    .checked_add(n as u64)
                    .is_some_and(|e| e <= space.mem_size);
                if in_ram {
                    match out.last_mut() {
                        Some((p, l)) if *p + *l as u64 == phys && *l + n <= max_run => *l += n,
                        _ => out.push((phys, n)),
                    }
                }
                in_ram
            }
            _ => false,
        };
        if !ok {
            out.clear();
            return false;
        }
        at = page_end;
    }
    true
}
