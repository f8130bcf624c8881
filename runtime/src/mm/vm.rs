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
//! [`AddressSpace::mmap`] populates a mapping at once or leaves its pages
//! to get frames on first touch (the system call leaves reservations,
//! PROT_NONE and MAP_NORESERVE, to first touch and populates the rest,
//! see `syscall::mem`); the stack reserve also grows on demand. A fault
//! populates its neighbours too, since on kvm-pvm a fault costs ~80 us (a
//! first touch ~5 us). The brk heap is populated at once. PROT_NONE pages
//! that have a frame keep it behind a non-present entry (contents survive
//! mprotect).
//! TLB flushes are batched (up to 8 pages, else one full flush). They are
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
        if self.all {
            p.flush_tlb_all();
        } else {
            for va in &self.pages[..self.n] {
                p.flush_tlb_page(*va);
            }
        }
    }
}

/// Pages populated with a faulting one (64 KiB with it).
pub const FAULT_AROUND: u64 = 15;

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
            Vma {
                end: top,
                prot: PROT_READ | PROT_WRITE,
                kind: VmaKind::Stack,
            },
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
        self.vmas.insert(
            start,
            Vma {
                end,
                prot,
                kind: VmaKind::Anon,
            },
        );
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
                pieces.push((
                    a,
                    Vma {
                        end: b,
                        prot,
                        kind: v.kind,
                    },
                ));
            }
        }
        self.carve(addr, end);
        for (a, v) in pieces {
            self.vmas.insert(a, v);
        }
        // Pages without a frame get one when first touched.
        Ok(())
    }

    /// Linux `brk`: returns the (possibly unchanged) break.
    pub fn brk(&mut self, new: u64) -> u64 {
        if !(BRK_BASE..=BRK_BASE + BRK_MAX).contains(&new) {
            return self.brk;
        }
        let (old_top, new_top) = (
            page_up(self.brk).unwrap_or(self.brk),
            page_up(new).unwrap_or(new),
        );
        if new_top > old_top {
            if self.overlaps(old_top, new_top) {
                return self.brk;
            }
            let mut va = old_top;
            while va < new_top {
                if self.populate(va, PROT_READ | PROT_WRITE).is_err() {
                    let mut fl = Flush::default();
                    self.unmap_pages(old_top, va, &mut fl);
                    fl.run();
                    return self.brk;
                }
                va += PAGE_SIZE;
            }
        } else if new_top < old_top {
            let mut fl = Flush::default();
            self.unmap_pages(new_top, old_top, &mut fl);
            fl.run();
        }
        self.carve(BRK_BASE, old_top.max(new_top));
        if new_top > BRK_BASE {
            self.vmas.insert(
                BRK_BASE,
                Vma {
                    end: new_top,
                    prot: PROT_READ | PROT_WRITE,
                    kind: VmaKind::Brk,
                },
            );
        }
        self.brk = new;
        self.brk
    }

    /// A page fault (or a system call about to touch `va`) found no usable
    /// entry: give the page a frame if its area allows the access, and its
    /// neighbours too ([`FAULT_AROUND`] pages, upwards; downwards in a
    /// stack), since a fault costs a trap to ring 0 (~80 us on kvm-pvm).
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
        // page that faulted has its frame).
        let window = FAULT_AROUND * PAGE_SIZE;
        let (lo, hi) = if v.kind == VmaKind::Stack {
            (page.saturating_sub(window).max(start), page)
        } else {
            (page + PAGE_SIZE, (page + PAGE_SIZE + window).min(v.end))
        };
        let mut p = lo;
        while p < hi && self.populate(p, v.prot).is_ok() {
            p += PAGE_SIZE;
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
