//! Memory of a PV guest: pseudo-physical frames, machine frames, and page
//! tables the guest may read but only the hypervisor may write.
//!
//! * The guest's RAM is `nr_pages` *pseudo-physical* frames (pfns)
//!   `0..nr_pages`, each backed by some *machine* frame (mfn). The
//!   pfn -> mfn list (P2M) is `start_info.mfn_list`, the guest's own array;
//!   the mfn -> pfn table (M2P) is Xen's, mapped read-only at
//!   `MACH2PHYS_VIRT_START` in every 64-bit PV guest.
//! * Page-table entries hold machine frames. Page-table pages must never
//!   be writable in any mapping: the guest reads them directly but changes
//!   them with `mmu_update` (a PTE's machine address and its new value;
//!   Xen checks that the target frame belongs to us and that no page
//!   table becomes writable) or `update_va_mapping` (by virtual address).
//!   A new table page is zeroed (`MMUEXT_CLEAR_PAGE`), its own mapping made
//!   read-only, then linked into its parent (Xen validates it on link).
//! * With VIRT_BASE = 0 the builder maps the bootstrap region at
//!   virtual == pseudo-physical. [`map_all_ram`] extends that identity map
//!   to all `nr_pages`, so the runtime's "RAM is identity-mapped"
//!   assumption holds for pseudo-physical addresses.
//! * W^X: the builder maps the bootstrap region (image included)
//!   read-write-execute. Every mapping the platform makes is NX (RAM,
//!   page tables, foreign frames), and [`protect`] rewrites the builder's
//!   entries once the image's layout is known: image pages with their ELF
//!   permissions, everything else NX (the runtime calls it, `xen_main`).

use crate::abi::{self, MmuUpdate, StartInfo};
use crate::hypercall;

pub const PAGE_SIZE: u64 = 4096;
pub const P: u64 = 1;
pub const W: u64 = 1 << 1;
pub const U: u64 = 1 << 2;
pub const A: u64 = 1 << 5;
pub const D: u64 = 1 << 6;
pub const PS: u64 = 1 << 7;
/// No execute: valid because Xen runs with EFER.NXE ([`nx_enabled`]).
pub const NX: u64 = 1 << 63;
pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// Flags of a table entry above the leaves (no NX: the leaf decides).
const TABLE: u64 = P | W | U | A;
/// Flags of a RAM leaf (Xen adds U itself for 64-bit PV kernels): data,
/// never executable.
pub const RAM_RW: u64 = P | W | A | D | NX;
pub const RAM_RO: u64 = P | A | NX;

/// EFER (the MSR) and its no-execute enable bit.
const MSR_EFER: u32 = 0xc000_0080;
const EFER_NXE: u64 = 1 << 11;

/// Whether page-table entries may carry [`NX`]. A 64-bit PV guest runs
/// under Xen's own EFER, and Xen sets NXE whenever the CPU has NX (it then
/// accepts bit 63 in a guest's entries; without it, it refuses them). The
/// guest kernel's `rdmsr` traps to Xen, which emulates it for PV kernels.
pub fn nx_enabled() -> bool {
    let (lo, hi): (u32, u32);
    // SAFETY: reading EFER has no side effect; in PV guest kernel mode
    // Xen emulates the instruction (it shows its own EFER, known bits only).
    unsafe {
        core::arch::asm!("rdmsr", in("ecx") MSR_EFER, out("eax") lo, out("edx") hi,
            options(nomem, nostack, preserves_flags))
    };
    ((u64::from(hi) << 32) | u64::from(lo)) & EFER_NXE != 0
}

/// The P2M list and what the platform knows about RAM.
pub struct PhysMap {
    p2m: *const u64,
    pub nr_pages: u64,
}

// SAFETY: the P2M list is read-only after boot on one vCPU.
unsafe impl Sync for PhysMap {}

impl PhysMap {
    /// # Safety
    /// `si` must be the verified start_info of this boot.
    pub unsafe fn new(si: &StartInfo) -> PhysMap {
        PhysMap {
            p2m: si.mfn_list as *const u64,
            nr_pages: si.nr_pages,
        }
    }

    /// Machine frame behind pseudo-physical frame `pfn`.
    pub fn mfn(&self, pfn: u64) -> u64 {
        assert!(pfn < self.nr_pages, "pfn {pfn:#x} beyond nr_pages");
        // SAFETY: the P2M list has nr_pages entries and is mapped (bootstrap region).
        unsafe { self.p2m.add(pfn as usize).read_volatile() }
    }

    /// Machine address of the pseudo-physical (== virtual) address `va`.
    pub fn machine_addr(&self, va: u64) -> u64 {
        self.mfn(va / PAGE_SIZE) * PAGE_SIZE + va % PAGE_SIZE
    }
}

/// Pseudo-physical frame of machine frame `mfn` (Xen's M2P table).
pub fn m2p(mfn: u64) -> u64 {
    // SAFETY: Xen maps the M2P read-only at this address in every 64-bit PV guest.
    unsafe { ((abi::MACH2PHYS_VIRT_START as *const u64).add(mfn as usize)).read_volatile() }
}

fn index(va: u64, level: u32) -> usize {
    ((va >> (12 + 9 * level)) & 511) as usize
}

/// The live page tables, walked through the M2P.
pub struct PageTables<'a> {
    pub phys: &'a PhysMap,
    /// Virtual address of the L4 table.
    pub l4: u64,
    /// Frame allocator for new tables: next pfn and its limit.
    pub next_table_pfn: u64,
    pub table_pfn_limit: u64,
}

impl PageTables<'_> {
    /// Virtual address of the table an entry points to (identity map of its pfn).
    fn table_va(entry: u64) -> u64 {
        m2p((entry & ADDR_MASK) / PAGE_SIZE) * PAGE_SIZE
    }

    /// The L1 entry's virtual address for `va`, if all upper tables exist.
    pub fn leaf(&self, va: u64) -> Option<*const u64> {
        let mut table = self.l4;
        for level in (1..4).rev() {
            // SAFETY: `table` is a mapped page-table page (read-only is enough).
            let e = unsafe { (table as *const u64).add(index(va, level)).read_volatile() };
            if e & P == 0 || e & PS != 0 {
                return None;
            }
            table = Self::table_va(e);
        }
        // SAFETY: as above.
        Some(unsafe { (table as *const u64).add(index(va, 0)) })
    }

    /// Whether `va` is mapped present.
    pub fn is_mapped(&self, va: u64) -> bool {
        // SAFETY: `leaf` returns an entry in a mapped table.
        self.leaf(va)
            .is_some_and(|e| unsafe { e.read_volatile() } & P != 0)
    }

    /// Take a frame for a new page table: zero it through Xen, make its own
    /// mapping read-only if it has one. Returns its pfn.
    fn new_table(&mut self) -> Result<u64, &'static str> {
        if self.next_table_pfn >= self.table_pfn_limit {
            return Err("out of frames for page tables");
        }
        let pfn = self.next_table_pfn;
        self.next_table_pfn += 1;
        let mfn = self.phys.mfn(pfn);
        if self.is_mapped(pfn * PAGE_SIZE) {
            // SAFETY: the frame is free RAM nobody uses yet; it stays mapped, read-only.
            unsafe {
                hypercall::update_va_mapping(
                    pfn * PAGE_SIZE,
                    (mfn * PAGE_SIZE) | RAM_RO,
                    abi::mmu::UVMF_INVLPG,
                )
            }
            .map_err(|_| "cannot make a new page table read-only")?;
        }
        hypercall::clear_page(mfn).map_err(|_| "MMUEXT_CLEAR_PAGE failed")?;
        Ok(pfn)
    }

    /// Make sure the L1 table covering `va` exists, creating tables on the way.
    /// Returns the machine address of the L1 entry for `va`.
    pub fn ensure_leaf(&mut self, va: u64) -> Result<u64, &'static str> {
        let mut table = self.l4;
        for level in (1..4).rev() {
            let slot = (table as *const u64).wrapping_add(index(va, level));
            // SAFETY: `table` is a mapped page-table page.
            let e = unsafe { slot.read_volatile() };
            if e & PS != 0 {
                return Err("large page in the way");
            }
            if e & P == 0 {
                let pfn = self.new_table()?;
                let req = MmuUpdate {
                    ptr: self.phys.machine_addr(slot as u64) | abi::mmu::NORMAL_PT_UPDATE,
                    val: (self.phys.mfn(pfn) * PAGE_SIZE) | TABLE,
                };
                // SAFETY: links a zeroed table into an empty slot: nothing in use changes.
                unsafe { hypercall::mmu_update(core::slice::from_ref(&req)) }
                    .map_err(|_| "mmu_update refused a new page table")?;
                table = pfn * PAGE_SIZE;
            } else {
                table = Self::table_va(e);
            }
        }
        Ok(self.phys.machine_addr(table + index(va, 0) as u64 * 8))
    }
}

/// What [`map_all_ram`] did.
#[derive(Clone, Copy, Debug, Default)]
pub struct MapReport {
    /// First pfn that was not mapped by the builder.
    pub bootstrap_end_pfn: u64,
    /// Pages mapped here.
    pub mapped: u64,
    /// Frames used for new page tables `[tables_start, tables_end)`.
    pub tables_start: u64,
    pub tables_end: u64,
}

/// Map every pseudo-physical frame at its identity address (read-write,
/// except frames that hold page tables: read-only). New page tables come
/// from `first_free` upwards; the report says which frames they took.
///
/// # Safety
/// `first_free` must be the first frame not used by the bootstrap
/// elements; nothing may use frames at or above it yet.
pub unsafe fn map_all_ram(pt: &mut PageTables, first_free: u64) -> Result<MapReport, &'static str> {
    let nr = pt.phys.nr_pages;
    pt.next_table_pfn = first_free;
    pt.table_pfn_limit = nr;
    let mut r = MapReport {
        tables_start: first_free,
        ..Default::default()
    };
    let mut pfn = first_free;
    while pfn < nr && pt.is_mapped(pfn * PAGE_SIZE) {
        pfn += 1;
    }
    r.bootstrap_end_pfn = pfn;
    const BATCH: usize = 128;
    let mut batch = [MmuUpdate::default(); BATCH];
    let mut n = 0;
    while pfn < nr {
        let entry_ma = pt.ensure_leaf(pfn * PAGE_SIZE)?;
        let is_table = pfn >= r.tables_start && pfn < pt.next_table_pfn;
        let flags = if is_table { RAM_RO } else { RAM_RW };
        batch[n] = MmuUpdate {
            ptr: entry_ma | abi::mmu::NORMAL_PT_UPDATE,
            val: (pt.phys.mfn(pfn) * PAGE_SIZE) | flags,
        };
        n += 1;
        pfn += 1;
        // Flush before the next 2 MiB: its L1 may need to be read through the new mappings.
        if n == BATCH || pfn % 512 == 0 || pfn == nr {
            // SAFETY: maps frames nobody uses yet at their own addresses.
            let done = unsafe { hypercall::mmu_update(&batch[..n]) }
                .map_err(|_| "mmu_update refused a RAM mapping")?;
            if done as usize != n {
                return Err("mmu_update mapped only part of a batch");
            }
            r.mapped += n as u64;
            n = 0;
        }
    }
    r.tables_end = pt.next_table_pfn;
    Ok(r)
}

/// What [`protect`] did.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProtectReport {
    /// Present pages looked at.
    pub pages: u64,
    /// Entries rewritten, and the `mmu_update` calls that did it.
    pub changed: u64,
    pub hypercalls: u64,
}

/// Rewrite the leaf entry of every present page in `[0, end)`: a page for
/// which `flags(va)` names leaf flags gets them (its frame kept, W only
/// if it had W: a frame Xen or the platform mapped read-only, such as a
/// page table, stays read-only), every other page keeps its entry plus
/// [`NX`]. Entries that change are written with batched `mmu_update`s
/// (128 a call, in address order, so a batch stays inside few L1
/// tables), then the TLB is flushed.
///
/// # Safety
/// Nothing that runs afterwards may need what the new flags take away
/// (code on a page without execute, a store to a page without write).
pub unsafe fn protect(
    pt: &PageTables,
    end: u64,
    flags: &dyn Fn(u64) -> Option<u64>,
) -> Result<ProtectReport, &'static str> {
    const BATCH: usize = 128;
    let mut batch = [MmuUpdate::default(); BATCH];
    let mut n = 0;
    let mut r = ProtectReport::default();
    let flush = |batch: &[MmuUpdate], r: &mut ProtectReport| -> Result<(), &'static str> {
        // SAFETY: the caller vouches for the new permissions; the frames are unchanged.
        let done = unsafe { hypercall::mmu_update(batch) }
            .map_err(|_| "mmu_update refused an image permission")?;
        if done as usize != batch.len() {
            return Err("mmu_update changed only part of a batch of permissions");
        }
        r.changed += batch.len() as u64;
        r.hypercalls += 1;
        Ok(())
    };
    let mut va = 0;
    while va < end {
        let Some(e) = pt.leaf(va) else {
            // No L1 table: nothing mapped in this 2 MiB.
            va = (va | ((PAGE_SIZE << 9) - 1)) + 1;
            continue;
        };
        // SAFETY: `leaf` returns an entry of a mapped L1 table.
        let old = unsafe { e.read_volatile() };
        if old & P != 0 {
            r.pages += 1;
            let new = match flags(va) {
                Some(f) => (old & ADDR_MASK) | (f & !(W & !old)),
                None => old | NX,
            };
            if new != old {
                batch[n] = MmuUpdate {
                    ptr: pt.phys.machine_addr(e as u64) | abi::mmu::NORMAL_PT_UPDATE,
                    val: new,
                };
                n += 1;
                if n == BATCH {
                    flush(&batch[..n], &mut r)?;
                    n = 0;
                }
            }
        }
        va += PAGE_SIZE;
    }
    if n > 0 {
        flush(&batch[..n], &mut r)?;
    }
    hypercall::tlb_flush_local().map_err(|_| "TLB flush after the permission changes failed")?;
    Ok(r)
}

/// Map machine frame `mfn` (not ours: shared info, grant table) at `va`,
/// whose L1 table exists (a page-aligned spot in the kernel's .bss).
///
/// # Safety
/// Whatever was mapped at `va` is gone afterwards.
pub unsafe fn map_machine_frame(va: u64, mfn: u64) -> Result<(), abi::XenError> {
    // SAFETY: forwarded from the caller.
    unsafe { hypercall::update_va_mapping(va, (mfn * PAGE_SIZE) | RAM_RW, abi::mmu::UVMF_INVLPG) }
        .map(|_| ())
}
