//! The guest's page tables, built on the host before the first instruction.
//!
//! One 4-level hierarchy (4 KiB PML4/PDPT/PD/PT pages) that:
//!
//! * identity-maps all RAM `[0, mem)` except the low 64 KiB (the null
//!   guard, like Linux's `vm.mmap_min_addr`);
//! * gives every image page its ELF permissions (R: `P|U|NX`, RW:
//!   `P|U|W|NX`, RX: `P|U`; pages shared by two segments get the union,
//!   but never W+X), and all other RAM `P|U|W|NX`;
//! * uses 2 MiB pages for aligned chunks fully inside RAM that hold no image
//!   page (nor page 0), 4 KiB pages elsewhere;
//! * maps the hypercall MMIO page uncached (`PCD|PWT`), writable from ring 3;
//! * maps the top of the app's stack region (done by the caller via [`PageTables::map_4k`]).
//!
//! Every present entry carries `U`: the runtime runs at ring 3 (see
//! KVM-PVM.md). Table-pointing entries are `P|W|U` without NX, so the leaf
//! decides. Table pages are ordinary RAM, identity-mapped writable, so the
//! runtime can edit them later.
use std::collections::BTreeMap;

use hvt_abi::layout::{BOOT_AREA_START as LOW_GUARD_END, HYPERCALL_MMIO_BASE, PAGE_SIZE};

use crate::boot::{BootAllocator, BootError};
use crate::image::{Perms, Segment};
use crate::memory::GuestMemory;

/// Page-table entry bits.
pub mod pte {
    pub const PRESENT: u64 = 1 << 0;
    pub const WRITE: u64 = 1 << 1;
    pub const USER: u64 = 1 << 2;
    pub const PWT: u64 = 1 << 3;
    pub const PCD: u64 = 1 << 4;
    pub const ACCESSED: u64 = 1 << 5;
    pub const DIRTY: u64 = 1 << 6;
    pub const HUGE: u64 = 1 << 7;
    pub const NX: u64 = 1 << 63;
    /// Bits 12..51: the physical address of a frame or table.
    pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

    /// Accessed and dirty are set up front: the CPU (or a shadow MMU, as on
    /// kvm-pvm) then never has to write them back on first use, which saves
    /// a page-table update per page at boot.
    pub const AD: u64 = ACCESSED | DIRTY;
    /// Entries pointing to a lower-level table.
    pub const TABLE: u64 = PRESENT | WRITE | USER | ACCESSED;
    /// Plain data RAM.
    pub const DATA: u64 = PRESENT | WRITE | USER | NX | AD;
    /// The hypercall MMIO page.
    pub const MMIO: u64 = PRESENT | WRITE | USER | NX | PCD | PWT | AD;
}

const HUGE_PAGE: u64 = 2 << 20;

/// The leaf flags for a segment's permissions.
pub fn leaf_flags(p: Perms) -> u64 {
    let mut f = pte::PRESENT | pte::USER | pte::AD;
    if p.write {
        f |= pte::WRITE;
    }
    if !p.exec {
        f |= pte::NX;
    }
    f
}

/// Per-page permissions of the image's pages (union where segments share a page).
pub fn image_pages(segments: &[Segment]) -> Result<BTreeMap<u64, Perms>, BootError> {
    let mut pages: BTreeMap<u64, Perms> = BTreeMap::new();
    for s in segments {
        let first = s.gpa & !(PAGE_SIZE - 1);
        let mut page = first;
        while page < s.end() {
            let p = pages.entry(page).or_default();
            p.write |= s.perms.write;
            p.exec |= s.perms.exec;
            if p.write && p.exec {
                return Err(BootError::WriteAndExecute { page });
            }
            page += PAGE_SIZE;
        }
    }
    Ok(pages)
}

/// A page-table hierarchy being built in guest memory.
#[derive(Debug)]
pub struct PageTables {
    /// Guest-physical address of the PML4 (CR3).
    pub root: u64,
}

impl PageTables {
    /// Allocates an empty PML4.
    pub fn new(alloc: &mut BootAllocator) -> Result<PageTables, BootError> {
        Ok(PageTables {
            root: alloc.alloc_pages(1)?,
        })
    }

    /// Returns the table that entry `index` of `table` points to, creating it.
    fn next_table(
        &self,
        mem: &mut GuestMemory,
        alloc: &mut BootAllocator,
        table: u64,
        index: u64,
    ) -> Result<u64, BootError> {
        let slot = table + index * 8;
        let entry: u64 = mem.read_obj(slot)?;
        if entry & pte::PRESENT != 0 {
            if entry & pte::HUGE != 0 {
                return Err(BootError::Internal("page table walk hit a huge page"));
            }
            return Ok(entry & pte::ADDR_MASK);
        }
        let new = alloc.alloc_pages(1)?;
        mem.write_obj(slot, &(new | pte::TABLE))?;
        Ok(new)
    }

    /// Walks to the table at `depth` (1 = PDPT, 2 = PD, 3 = PT) for `va`.
    fn walk(
        &self,
        mem: &mut GuestMemory,
        alloc: &mut BootAllocator,
        va: u64,
        depth: u32,
    ) -> Result<u64, BootError> {
        let mut table = self.root;
        for level in 0..depth {
            let shift = 39 - 9 * level;
            table = self.next_table(mem, alloc, table, (va >> shift) & 511)?;
        }
        Ok(table)
    }

    /// Maps the 4 KiB page at `va` to frame `pa`.
    pub fn map_4k(
        &self,
        mem: &mut GuestMemory,
        alloc: &mut BootAllocator,
        va: u64,
        pa: u64,
        flags: u64,
    ) -> Result<(), BootError> {
        let pt = self.walk(mem, alloc, va, 3)?;
        mem.write_obj(pt + ((va >> 12) & 511) * 8, &(pa | flags))?;
        Ok(())
    }

    /// Maps the 2 MiB page at `va` to frame `pa`.
    pub fn map_2m(
        &self,
        mem: &mut GuestMemory,
        alloc: &mut BootAllocator,
        va: u64,
        pa: u64,
        flags: u64,
    ) -> Result<(), BootError> {
        let pd = self.walk(mem, alloc, va, 2)?;
        mem.write_obj(pd + ((va >> 21) & 511) * 8, &(pa | flags | pte::HUGE))?;
        Ok(())
    }

    /// Identity-maps RAM and the MMIO page as described in the module docs.
    pub fn map_ram(
        &self,
        mem: &mut GuestMemory,
        alloc: &mut BootAllocator,
        image: &BTreeMap<u64, Perms>,
    ) -> Result<(), BootError> {
        let size = mem.size();
        let mut chunk = 0;
        while chunk < size {
            let chunk_end = chunk + HUGE_PAGE;
            let has_image = image.range(chunk..chunk_end).next().is_some();
            if chunk != 0 && chunk_end <= size && !has_image {
                self.map_2m(mem, alloc, chunk, chunk, pte::DATA)?;
            } else {
                let mut page = chunk.max(LOW_GUARD_END);
                while page < chunk_end.min(size) {
                    let flags = image.get(&page).map_or(pte::DATA, |p| leaf_flags(*p));
                    self.map_4k(mem, alloc, page, page, flags)?;
                    page += PAGE_SIZE;
                }
            }
            chunk = chunk_end;
        }
        self.map_4k(
            mem,
            alloc,
            HYPERCALL_MMIO_BASE,
            HYPERCALL_MMIO_BASE,
            pte::MMIO,
        )
    }

    /// Translates `va` like the MMU would: `(physical address, leaf flags)`,
    /// or `None` if not present. Used by tests and crash reports.
    pub fn translate(&self, mem: &GuestMemory, va: u64) -> Option<(u64, u64)> {
        let mut table = self.root;
        for level in 0..4u32 {
            let shift = 39 - 9 * level;
            let entry: u64 = mem.read_obj(table + ((va >> shift) & 511) * 8).ok()?;
            if entry & pte::PRESENT == 0 {
                return None;
            }
            if level == 3 || (level == 2 && entry & pte::HUGE != 0) {
                let mask = (1u64 << shift) - 1;
                return Some(((entry & pte::ADDR_MASK & !mask) | (va & mask), entry));
            }
            table = entry & pte::ADDR_MASK;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hvt_abi::layout::KERNEL_BASE;

    fn seg(gpa: u64, memsz: u64, write: bool, exec: bool) -> Segment {
        Segment {
            gpa,
            memsz,
            file_offset: 0,
            filesz: 0,
            perms: Perms { write, exec },
        }
    }

    #[test]
    fn shared_pages_take_the_union_but_never_w_and_x() {
        let p = image_pages(&[
            seg(0x10_0000, 0x1800, false, true),
            seg(0x10_1800, 0x100, false, false),
        ])
        .unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(
            p[&0x10_1000],
            Perms {
                write: false,
                exec: true
            }
        );
        let e = image_pages(&[
            seg(0x10_0000, 0x1800, false, true),
            seg(0x10_1800, 0x100, true, false),
        ]);
        assert!(matches!(
            e,
            Err(BootError::WriteAndExecute { page: 0x10_1000 })
        ));
    }

    #[test]
    fn identity_map_has_the_right_flags() {
        let size = 8 << 20;
        let mut mem = GuestMemory::new(size).unwrap();
        let segs = [
            seg(KERNEL_BASE, 0x2000, false, true),
            seg(KERNEL_BASE + 0x2000, 0x1000, true, false),
            seg(0x40_0000, 0x1000, false, false),
        ];
        let mut alloc = BootAllocator::new(size, &segs);
        let pt = PageTables::new(&mut alloc).unwrap();
        pt.map_ram(&mut mem, &mut alloc, &image_pages(&segs).unwrap())
            .unwrap();

        assert_eq!(pt.translate(&mem, 0), None);
        assert_eq!(pt.translate(&mem, 0xfff), None);
        assert_eq!(pt.translate(&mem, 0x1234), None, "low 64 KiB stay unmapped");
        assert_eq!(pt.translate(&mem, 0xffff), None);
        let (pa, f) = pt.translate(&mem, 0x1_1234).unwrap();
        assert_eq!((pa, f & !pte::ADDR_MASK), (0x1_1234, pte::DATA));
        let (_, f) = pt.translate(&mem, KERNEL_BASE + 0x10).unwrap();
        assert_eq!(f & !pte::ADDR_MASK, pte::PRESENT | pte::USER | pte::AD);
        let (_, f) = pt.translate(&mem, KERNEL_BASE + 0x2010).unwrap();
        assert_eq!(f & !pte::ADDR_MASK, pte::DATA);
        let (_, f) = pt.translate(&mem, 0x40_0010).unwrap();
        assert_eq!(
            f & !pte::ADDR_MASK,
            pte::PRESENT | pte::USER | pte::NX | pte::AD
        );
        // 2 MiB chunk without image pages: a huge page.
        let (pa, f) = pt.translate(&mem, 0x20_1234).unwrap();
        assert_eq!(pa, 0x20_1234);
        assert_ne!(f & pte::HUGE, 0);
        // The chunk holding an app page uses 4 KiB pages.
        let (_, f) = pt.translate(&mem, 0x40_2000).unwrap();
        assert_eq!(f & pte::HUGE, 0);
        assert_eq!(pt.translate(&mem, size), None);
        assert_eq!(pt.translate(&mem, size - 1).unwrap().0, size - 1);
        let (pa, f) = pt.translate(&mem, HYPERCALL_MMIO_BASE + 8).unwrap();
        assert_eq!(
            (pa, f & !pte::ADDR_MASK),
            (HYPERCALL_MMIO_BASE + 8, pte::MMIO)
        );
    }

    #[test]
    fn ram_not_a_multiple_of_2m_ends_with_small_pages() {
        let size = (4 << 20) + 0x3000;
        let mut mem = GuestMemory::new(size).unwrap();
        let segs = [seg(KERNEL_BASE, 0x1000, false, true)];
        let mut alloc = BootAllocator::new(size, &segs);
        let pt = PageTables::new(&mut alloc).unwrap();
        pt.map_ram(&mut mem, &mut alloc, &image_pages(&segs).unwrap())
            .unwrap();
        assert!(pt.translate(&mem, size - 0x1000).is_some());
        assert_eq!(pt.translate(&mem, size), None);
        assert_eq!(pt.translate(&mem, (4 << 20) + 0x3000), None);
    }
}
