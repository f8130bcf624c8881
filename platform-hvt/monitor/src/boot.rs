//! The boot state: everything the guest finds in memory at its first
//! instruction, prepared natively on the host so that the guest runs almost
//! no ring-0 code (ring 0 is emulated and slow on kvm-pvm, see KVM-PVM.md).
//!
//! A boot, in order:
//!
//! 1. [`BootAllocator`] hands out zeroed pages from the boot area
//!    `[BOOT_AREA_START, KERNEL_BASE)`, then from above the image.
//! 2. One page holds the GDT, the TSS, the [`BootInfo`], the app's name,
//!    the runtime options string and the declared disks (each on pages of
//!    its own if it does not fit);
//!    another the IDT ([`crate::tables`]).
//! 3. The page tables identity-map RAM with the image's permissions
//!    ([`crate::paging`]).
//! 4. Stacks: the kernel stack (entry and system calls), the ring-0 stack
//!    (TSS RSP0), the IST1 stack (NMI/#DF/#MC) and the fault stack. Their
//!    pages are not touched by the monitor: fresh guest RAM is zero.
//! 5. The app's initial stack ([`crate::stack`]) is written at the top of the
//!    stack region, onto freshly allocated frames mapped there.
//! 6. [`BootInfo`] records all of it, plus what is still free.
//!
//! [`crate::vm`] then loads the registers and runs the vCPU.
use std::mem::offset_of;

use hvt_abi::layout::{
    BOOT_AREA_START, KERNEL_BASE, PAGE_SIZE, USER_STACK_RESERVE, USER_STACK_TOP,
};
use hvt_abi::{BootInfo, KernelHeader, MemRange, ABI_VERSION, BOOT_INFO_MAGIC, MAX_FREE_RANGES};
use thiserror::Error;

use crate::image::{Image, Segment};
use crate::memory::{GuestMemory, OutOfBounds};
use crate::paging::{self, pte, PageTables};
use crate::tables;
use unikernel_runtime::loader::{self as stack, StackInput};

/// Why the boot state could not be built.
#[derive(Debug, Error)]
pub enum BootError {
    #[error("--mem {mem_kib} KiB is too small: the image and its boot structures need more; try a larger --mem")]
    OutOfMemory { mem_kib: u64 },
    #[error("image page {page:#x} would be both writable and executable (two segments share it); fix the image's linker script")]
    WriteAndExecute { page: u64 },
    #[error("arguments and environment take {bytes} bytes, more than the {USER_STACK_RESERVE}-byte stack region")]
    ArgumentsTooLarge { bytes: u64 },
    #[error(transparent)]
    Guest(#[from] OutOfBounds),
    #[error("internal error: {0}")]
    Internal(&'static str),
}

/// Stack sizes.
pub const KERNEL_STACK_SIZE: u64 = 64 << 10;
pub const RING0_STACK_SIZE: u64 = 16 << 10;
pub const IST1_STACK_SIZE: u64 = 8 << 10;
/// Stack for external interrupts (IST2), e.g. the runtime's preemption timer.
pub const IST2_STACK_SIZE: u64 = 8 << 10;
pub const FAULT_STACK_SIZE: u64 = 16 << 10;
/// Room mapped below the initial app stack's contents.
pub const APP_STACK_HEADROOM: u64 = 16 << 10;

/// Offsets inside the descriptor page.
const GDT_OFFSET: u64 = 0;
const TSS_OFFSET: u64 = 128;
const BOOT_INFO_OFFSET: u64 = 256;

/// A bump allocator of zeroed guest pages: the boot area first, then the RAM above the image.
#[derive(Debug)]
pub struct BootAllocator {
    low: MemRange,
    high: MemRange,
    /// Holes between image segments (never allocated from; reported free).
    holes: Vec<MemRange>,
    mem_size: u64,
}

impl BootAllocator {
    /// `segments`: the image's segments, sorted by address, all inside `[0, mem_size)`.
    pub fn new(mem_size: u64, segments: &[Segment]) -> BootAllocator {
        let image_end = segments
            .last()
            .map_or(KERNEL_BASE, Segment::end)
            .next_multiple_of(PAGE_SIZE)
            .max(KERNEL_BASE);
        let holes = segments
            .windows(2)
            .map(|w| MemRange {
                start: w[0].end().next_multiple_of(PAGE_SIZE),
                end: w[1].gpa & !(PAGE_SIZE - 1),
            })
            .filter(|r| r.start < r.end)
            .collect();
        BootAllocator {
            low: MemRange {
                start: BOOT_AREA_START,
                end: KERNEL_BASE.min(mem_size),
            },
            high: MemRange {
                start: image_end.min(mem_size),
                end: mem_size,
            },
            holes,
            mem_size,
        }
    }

    /// Allocates `n` contiguous pages; returns the guest-physical address of the first.
    pub fn alloc_pages(&mut self, n: u64) -> Result<u64, BootError> {
        let bytes = n * PAGE_SIZE;
        for r in [&mut self.low, &mut self.high] {
            if r.end - r.start >= bytes {
                let at = r.start;
                r.start += bytes;
                return Ok(at);
            }
        }
        Err(BootError::OutOfMemory {
            mem_kib: self.mem_size >> 10,
        })
    }

    /// Allocates a stack of `size` bytes; returns `(bottom, top)`.
    pub fn alloc_stack(&mut self, size: u64) -> Result<(u64, u64), BootError> {
        let bottom = self.alloc_pages(size.div_ceil(PAGE_SIZE))?;
        Ok((bottom, bottom + size))
    }

    /// What is left: the largest `MAX_FREE_RANGES` free ranges, by address.
    pub fn free_ranges(&self) -> Vec<MemRange> {
        let mut all: Vec<MemRange> = [self.low, self.high]
            .into_iter()
            .chain(self.holes.iter().copied())
            .filter(|r| r.start < r.end)
            .collect();
        all.sort_by_key(|r| std::cmp::Reverse(r.end - r.start));
        all.truncate(MAX_FREE_RANGES);
        all.sort_by_key(|r| r.start);
        all
    }
}

/// Inputs of the boot state besides the image.
#[derive(Clone, Debug, Default)]
pub struct BootParams {
    pub argv: Vec<String>,
    pub envp: Vec<String>,
    /// CPUID.1:EDX as the guest sees it (AT_HWCAP).
    pub hwcap: u64,
    /// AT_RANDOM bytes.
    pub random: [u8; 16],
    pub tsc_khz: u64,
    pub flags: u64,
    /// Runtime options, `KEY=VALUE` each, none containing a space (the
    /// manifest's defaults merged with the command line's by [`crate::launch`]).
    pub options: Vec<String>,
}

/// Where the boot structures ended up; what `vm` loads into the registers.
#[derive(Clone, Copy, Debug)]
pub struct BootState {
    pub boot_info: u64,
    pub page_table_root: u64,
    pub gdt: u64,
    pub idt: u64,
    pub tss: u64,
    pub kernel_stack_top: u64,
}

impl BootState {
    /// Guest-physical addresses of the wall-clock fields, written just before entry.
    pub fn wall_clock_ns_gpa(&self) -> u64 {
        self.boot_info + offset_of!(BootInfo, wall_clock_ns) as u64
    }
    pub fn wall_clock_tsc_gpa(&self) -> u64 {
        self.boot_info + offset_of!(BootInfo, wall_clock_tsc) as u64
    }
}

/// Builds the whole boot state in guest memory (the image is already loaded).
pub fn prepare(
    mem: &mut GuestMemory,
    image: &Image,
    header: &KernelHeader,
    params: &BootParams,
) -> Result<BootState, BootError> {
    let m = &image.manifest;
    let mut alloc = BootAllocator::new(mem.size(), &image.segments);

    // Descriptor page: GDT, TSS, BootInfo, app name; then the IDT page.
    let desc = alloc.alloc_pages(1)?;
    let (gdt, tss, boot_info) = (
        desc + GDT_OFFSET,
        desc + TSS_OFFSET,
        desc + BOOT_INFO_OFFSET,
    );
    let name_in_page = boot_info + std::mem::size_of::<BootInfo>() as u64;
    let app_name = if name_in_page + m.name.len() as u64 <= desc + PAGE_SIZE {
        name_in_page
    } else {
        alloc.alloc_pages((m.name.len() as u64).div_ceil(PAGE_SIZE))?
    };
    mem.write(app_name, m.name.as_bytes())?;
    // The options string right after the name, or on pages of its own.
    let options = params.options.join(" ");
    let options_in_page = app_name + m.name.len() as u64;
    let options_addr = if options.is_empty() {
        0
    } else if app_name == name_in_page && options_in_page + options.len() as u64 <= desc + PAGE_SIZE
    {
        options_in_page
    } else {
        alloc.alloc_pages((options.len() as u64).div_ceil(PAGE_SIZE))?
    };
    if !options.is_empty() {
        mem.write(options_addr, options.as_bytes())?;
    }
    // The declared disks, NUL-separated, after the options or on pages of
    // their own.
    let disks = m.disks.join("\0");
    let disks_in_page = if options_addr == 0 {
        app_name + m.name.len() as u64
    } else {
        options_addr + options.len() as u64
    };
    let disks_addr = if disks.is_empty() {
        0
    } else if disks_in_page >= desc
        && disks_in_page < desc + PAGE_SIZE
        && disks_in_page + disks.len() as u64 <= desc + PAGE_SIZE
    {
        disks_in_page
    } else {
        alloc.alloc_pages((disks.len() as u64).div_ceil(PAGE_SIZE))?
    };
    if !disks.is_empty() {
        mem.write(disks_addr, disks.as_bytes())?;
    }
    let idt = alloc.alloc_pages(1)?;
    tables::write_idt(mem, idt, header)?;

    let pt = PageTables::new(&mut alloc)?;
    pt.map_ram(mem, &mut alloc, &paging::image_pages(&image.segments)?)?;

    let (kernel_stack_bottom, kernel_stack_top) = alloc.alloc_stack(KERNEL_STACK_SIZE)?;
    let (_, ring0_top) = alloc.alloc_stack(RING0_STACK_SIZE)?;
    let (_, ist1_top) = alloc.alloc_stack(IST1_STACK_SIZE)?;
    let (_, ist2_top) = alloc.alloc_stack(IST2_STACK_SIZE)?;
    let (_, fault_stack_top) = alloc.alloc_stack(FAULT_STACK_SIZE)?;
    tables::write_gdt(mem, gdt, tss)?;
    tables::write_tss(mem, tss, ring0_top, ist1_top, ist2_top)?;

    // The app's initial stack, on frames mapped at the top of its region.
    let app = stack::build(
        USER_STACK_TOP,
        &StackInput {
            argv: params.argv.clone(),
            envp: params.envp.clone(),
            phdr: m.app_phdr,
            phent: u64::from(m.app_phent),
            phnum: u64::from(m.app_phnum),
            entry: m.app_entry,
            hwcap: params.hwcap,
            random: params.random,
            // hvt's runtime runs at ring 3 (docs/hvt-abi.md): the app may
            // enter it with a jump, which on kvm-pvm saves the host round
            // trip of `syscall` (builder/app-shim/syscall.rs).
            sysinfo: header.syscall_entry,
        },
    );
    let mapped = (app.bytes.len() as u64 + APP_STACK_HEADROOM).next_multiple_of(PAGE_SIZE);
    if mapped > USER_STACK_RESERVE {
        return Err(BootError::ArgumentsTooLarge {
            bytes: app.bytes.len() as u64,
        });
    }
    let frames = alloc.alloc_pages(mapped / PAGE_SIZE)?;
    let stack_bottom = USER_STACK_TOP - mapped;
    for i in 0..mapped / PAGE_SIZE {
        let off = i * PAGE_SIZE;
        pt.map_4k(mem, &mut alloc, stack_bottom + off, frames + off, pte::DATA)?;
    }
    mem.write(frames + (app.rsp - stack_bottom), &app.bytes)?;

    let free = alloc.free_ranges();
    let mut info = BootInfo {
        magic: BOOT_INFO_MAGIC,
        abi_version: ABI_VERSION,
        mem_size: mem.size(),
        tsc_khz: params.tsc_khz,
        flags: params.flags,
        page_table_root: pt.root,
        free_count: free.len() as u64,
        kernel_stack_top,
        kernel_stack_bottom,
        fault_stack_top,
        app_entry: m.app_entry,
        app_stack_pointer: app.rsp,
        app_base: m.app_base,
        app_end: m.app_end,
        app_phdr: m.app_phdr,
        app_phent: u64::from(m.app_phent),
        app_phnum: u64::from(m.app_phnum),
        app_stack_mapped_bottom: stack_bottom,
        app_name,
        app_name_len: m.name.len() as u64,
        options: options_addr,
        options_len: options.len() as u64,
        disks: disks_addr,
        disks_len: disks.len() as u64,
        files_addr: m.files_addr,
        files_len: m.files_len,
        ..Default::default()
    };
    info.free[..free.len()].copy_from_slice(&free);
    mem.write_obj(boot_info, &info)?;

    Ok(BootState {
        boot_info,
        page_table_root: pt.root,
        gdt,
        idt,
        tss,
        kernel_stack_top,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::Perms;

    fn seg(gpa: u64, memsz: u64) -> Segment {
        Segment {
            gpa,
            memsz,
            file_offset: 0,
            filesz: 0,
            perms: Perms::default(),
        }
    }

    #[test]
    fn allocator_uses_the_boot_area_first_then_above_the_image() {
        let segs = [seg(KERNEL_BASE, 0x1800), seg(0x20_0000, 0x10)];
        let mut a = BootAllocator::new(0x40_0000, &segs);
        assert_eq!(a.alloc_pages(1).unwrap(), BOOT_AREA_START);
        assert_eq!(a.alloc_pages(2).unwrap(), BOOT_AREA_START + PAGE_SIZE);
        // Exhaust the boot area: the next allocation comes from above the image.
        let left = (KERNEL_BASE - BOOT_AREA_START) / PAGE_SIZE - 3;
        a.alloc_pages(left).unwrap();
        assert_eq!(a.alloc_pages(1).unwrap(), 0x20_1000);
        let free = a.free_ranges();
        assert_eq!(
            free,
            [
                MemRange {
                    start: 0x10_2000,
                    end: 0x20_0000
                },
                MemRange {
                    start: 0x20_2000,
                    end: 0x40_0000
                },
            ]
        );
        assert!(matches!(
            a.alloc_pages(0x1000),
            Err(BootError::OutOfMemory { .. })
        ));
    }

    #[test]
    fn free_ranges_keep_the_largest() {
        let segs = [
            seg(KERNEL_BASE, 0x1000),
            seg(0x10_2000, 0x1000),
            seg(0x10_4000, 0x1000),
            seg(0x10_6000, 0x1000),
            seg(0x11_0000, 0x1000),
        ];
        let a = BootAllocator::new(0x100_0000, &segs);
        let free = a.free_ranges();
        assert_eq!(free.len(), MAX_FREE_RANGES);
        assert!(free.windows(2).all(|w| w[0].end <= w[1].start));
        assert!(free
            .iter()
            .all(|r| r.start % PAGE_SIZE == 0 && r.end % PAGE_SIZE == 0));
        assert_eq!(
            free[0],
            MemRange {
                start: BOOT_AREA_START,
                end: KERNEL_BASE
            }
        );
        assert_eq!(
            free[3],
            MemRange {
                start: 0x11_1000,
                end: 0x100_0000
            }
        );
    }
}
