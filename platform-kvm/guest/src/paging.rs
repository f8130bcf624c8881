//! The real page tables, built once at boot (ring 0) after the bootstrap
//! identity map: all RAM identity-mapped and user-accessible (the runtime
//! runs at ring 3 too), the low 64 KiB left out (null guard), the image
//! with each page's ELF permissions (W^X: the flags the caller gets from
//! `unikernel_runtime::mm::image`), 2 MiB pages where a 2 MiB chunk
//! holds no image page, and the device pages (LAPIC, virtio-mmio) uncached.
//! Table frames come from the runtime's frame allocator.

use unikernel_runtime::arch::x86_64::paging::{A, ADDR_MASK, D, NX, P, PS, U, W};

const PWT: u64 = 1 << 3;
const PCD: u64 = 1 << 4;
pub const DATA: u64 = P | W | U | NX | A | D;
pub const DEVICE: u64 = P | W | U | NX | PCD | PWT | A | D;
const TABLE: u64 = P | W | U | A;
const HUGE: u64 = 2 << 20;
const PAGE: u64 = 4096;
pub const LOW_GUARD_END: u64 = 0x1_0000;

pub struct Tables {
    pub root: u64,
}

fn alloc_table() -> u64 {
    match unikernel_runtime::mm::frame::alloc_frame() {
        Some(f) => f,
        None => crate::fatal("out of memory for page tables"),
    }
}

impl Tables {
    pub fn new() -> Tables {
        Tables {
            root: alloc_table(),
        }
    }

    /// The entry for `va` at `level` (3 = PML4 .. 0 = PT), creating tables above it.
    fn entry(&mut self, va: u64, level: u32) -> *mut u64 {
        let mut table = self.root;
        for l in (level + 1..4).rev() {
            let idx = (va >> (12 + 9 * l)) & 511;
            let e = (table + idx * 8) as *mut u64;
            // SAFETY: `table` is a zeroed, identity-mapped table frame we own.
            unsafe {
                if e.read() & P == 0 {
                    e.write(alloc_table() | TABLE);
                }
                table = e.read() & ADDR_MASK;
            }
        }
        (table + ((va >> (12 + 9 * level)) & 511) * 8) as *mut u64
    }

    pub fn map_4k(&mut self, va: u64, flags: u64) {
        let e = self.entry(va, 0);
        // SAFETY: a leaf entry of our tables.
        unsafe { e.write((va & ADDR_MASK) | flags) };
    }

    pub fn map_2m(&mut self, va: u64, flags: u64) {
        let e = self.entry(va, 1);
        // SAFETY: a level-1 entry of our tables (no table below it yet).
        unsafe { e.write((va & ADDR_MASK) | flags | PS) };
    }

    /// Identity-map RAM `[start, end)`; `perm` gives image pages their flags.
    pub fn map_ram(
        &mut self,
        start: u64,
        end: u64,
        perm: &dyn Fn(u64) -> Option<u64>,
        image: (u64, u64),
    ) {
        let mut va = (start.max(LOW_GUARD_END) + PAGE - 1) & !(PAGE - 1);
        let end = end & !(PAGE - 1);
        while va < end {
            let chunk_free = va.is_multiple_of(HUGE)
                && va + HUGE <= end
                && (va + HUGE <= image.0 || va >= image.1);
            if chunk_free {
                self.map_2m(va, DATA);
                va += HUGE;
            } else {
                self.map_4k(va, perm(va).unwrap_or(DATA));
                va += PAGE;
            }
        }
    }

    /// Switch to these tables.
    ///
    /// # Safety
    /// Ring 0; the tables map everything the running code touches.
    pub unsafe fn activate(&self) {
        // SAFETY: per the function contract.
        unsafe { core::arch::asm!("mov cr3, {}", in(reg) self.root, options(nostack)) };
    }
}
