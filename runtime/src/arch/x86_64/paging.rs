//! 4-level x86_64 page tables, edited in place.
//!
//! All RAM is identity-mapped, so a table's physical address is also a
//! pointer the runtime can use (at ring 3 too: the platform maps RAM
//! user-accessible). Only 4 KiB leaves are created or changed here; 2 MiB and
//! 1 GiB leaves (the platform's identity map) are understood by [`PageTable::translate`].
//!
//! Entries are read directly but written through [`write_entry`], and their
//! address fields are translated with [`frame_of`]/[`entry_frame`]: on Xen
//! PV they hold machine frames and only the hypervisor writes them (the
//! platform hooks in [`crate::Platform`]; identity and plain stores elsewhere).

pub const PAGE_SIZE: u64 = 4096;

pub const P: u64 = 1 << 0;
pub const W: u64 = 1 << 1;
pub const U: u64 = 1 << 2;
pub const A: u64 = 1 << 5;
pub const D: u64 = 1 << 6;
pub const PS: u64 = 1 << 7;
/// Software bit: the entry is not present because the page is PROT_NONE,
/// but it keeps its frame (contents survive an `mprotect` back).
pub const SW_PROTNONE: u64 = 1 << 9;
pub const NX: u64 = 1 << 63;
pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// A page-table entry pointer, valid while the table exists.
pub type EntryPtr = *mut u64;

/// The page-table hooks of the running platform (the defaults before start,
/// and in host tests).
fn hooks() -> Option<&'static dyn crate::Platform> {
    crate::PLATFORM.get().copied()
}

/// The address field an entry mapping physical frame `phys` holds.
pub fn entry_frame(phys: u64) -> u64 {
    hooks().map_or(phys, |p| p.phys_to_pte(phys))
}

/// The physical frame entry `entry` names.
pub fn frame_of(entry: u64) -> u64 {
    hooks().map_or(entry & ADDR_MASK, |p| p.pte_to_phys(entry & ADDR_MASK))
}

/// Store `value` in the entry at `e`.
///
/// # Safety
/// `e` points at an entry of a live page table; the caller flushes the TLB.
pub unsafe fn write_entry(e: EntryPtr, value: u64) {
    match hooks() {
        // SAFETY: forwarded from the caller.
        Some(p) => unsafe { p.write_pte(e, value) },
        // SAFETY: forwarded from the caller.
        None => unsafe { e.write_volatile(value) },
    }
}

pub struct PageTable {
    root: u64,
}

fn index(va: u64, level: u32) -> usize {
    ((va >> (12 + 9 * level)) & 511) as usize
}

impl PageTable {
    /// # Safety
    /// `root` must be the physical (== virtual) address of a valid PML4 in use.
    pub const unsafe fn new(root: u64) -> PageTable {
        PageTable { root }
    }

    pub fn root(&self) -> u64 {
        self.root
    }

    /// Find the 4 KiB leaf entry for `va`. With `alloc`, missing tables are
    /// created with frames from it (zeroed). Returns None if a table is missing
    /// (and no `alloc` or it failed) or `va` is inside a large page.
    pub fn leaf(
        &mut self,
        va: u64,
        alloc: Option<&mut dyn FnMut() -> Option<u64>>,
    ) -> Option<EntryPtr> {
        let mut alloc = alloc;
        let mut table = self.root;
        for level in (1..4).rev() {
            // SAFETY: `table` is a page-table page in identity-mapped RAM; index < 512.
            let e = unsafe { (table as *mut u64).add(index(va, level)) };
            // SAFETY: as above.
            let v = unsafe { e.read_volatile() };
            if v & P == 0 {
                let frame = alloc.as_mut()?()?;
                if let Some(p) = hooks() {
                    p.prepare_table_frame(frame);
                }
                // SAFETY: the new frame is zeroed and owned by the page table from now on.
                unsafe { write_entry(e, entry_frame(frame) | P | W | U) };
                table = frame;
            } else if v & PS != 0 {
                return None;
            } else {
                table = frame_of(v);
            }
        }
        // SAFETY: `table` is a valid PT page, index < 512.
        Some(unsafe { (table as *mut u64).add(index(va, 0)) })
    }

    /// Translate `va` to (physical address, leaf flags) if mapped present.
    pub fn translate(&self, va: u64) -> Option<(u64, u64)> {
        let mut table = self.root;
        for level in (0..4).rev() {
            // SAFETY: `table` is a page-table page in identity-mapped RAM; index < 512.
            let v = unsafe { ((table as *const u64).add(index(va, level))).read_volatile() };
            if v & P == 0 {
                return None;
            }
            if level == 0 || v & PS != 0 {
                let size_mask = (1u64 << (12 + 9 * level)) - 1;
                return Some(((frame_of(v) & !size_mask) | (va & size_mask), v));
            }
            table = frame_of(v);
        }
        None
    }
}

/// Leaf flags for Linux `PROT_*` bits (PROT_NONE -> not present).
pub fn flags_for_prot(prot: u32) -> u64 {
    const PROT_READ: u32 = 1;
    const PROT_WRITE: u32 = 2;
    const PROT_EXEC: u32 = 4;
    if prot & (PROT_READ | PROT_WRITE | PROT_EXEC) == 0 {
        return 0;
    }
    let mut f = P | U;
    if prot & PROT_WRITE != 0 {
        f |= W;
    }
    if prot & PROT_EXEC == 0 {
        f |= NX;
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn prot_flags() {
        assert_eq!(flags_for_prot(0), 0);
        assert_eq!(flags_for_prot(1), P | U | NX);
        assert_eq!(flags_for_prot(3), P | U | W | NX);
        assert_eq!(flags_for_prot(5), P | U);
    }
    #[test]
    fn indices() {
        let va = 0x0000_7000_0000_0000u64 - 4096;
        assert_eq!(index(va, 3), 223);
        assert_eq!(index(va, 0), 511);
    }
}
