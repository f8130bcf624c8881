//! The PVH `hvm_start_info` (Xen's public `arch-x86/hvm/start_info.h`
//! layout), read once at boot: magic, command line, memory map.

pub const MAGIC: u32 = 0x336e_c578;
pub const MEMMAP_RAM: u32 = 1;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct StartInfo {
    pub magic: u32,
    pub version: u32,
    pub flags: u32,
    pub nr_modules: u32,
    pub modlist_paddr: u64,
    pub cmdline_paddr: u64,
    pub rsdp_paddr: u64,
    pub memmap_paddr: u64,
    pub memmap_entries: u32,
    pub reserved: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MemmapEntry {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
    pub reserved: u32,
}

/// A RAM range `[start, end)`.
pub type Range = (u64, u64);

pub struct Boot {
    #[allow(dead_code)] // kept for diagnostics (flags, modules, RSDP)
    pub info: StartInfo,
    pub cmdline: &'static str,
    pub ram: [Range; 16],
    pub ram_count: usize,
}

/// Read the start info at guest-physical `pa` (identity-mapped).
///
/// # Safety
/// `pa` is what the VMM passed in %ebx; the first 4 GiB are mapped.
pub unsafe fn read(pa: u64) -> Result<Boot, u32> {
    // SAFETY: per the function contract.
    let info = unsafe { (pa as *const StartInfo).read_unaligned() };
    if info.magic != MAGIC {
        return Err(info.magic);
    }
    let cmdline = if info.cmdline_paddr == 0 {
        ""
    } else {
        // SAFETY: a NUL-terminated string the VMM placed in guest RAM.
        let bytes = unsafe {
            let p = info.cmdline_paddr as *const u8;
            let mut n = 0;
            while n < 4096 && *p.add(n) != 0 {
                n += 1;
            }
            core::slice::from_raw_parts(p, n)
        };
        core::str::from_utf8(bytes).unwrap_or("")
    };
    let mut ram = [(0, 0); 16];
    let mut ram_count = 0;
    if info.version >= 1 && info.memmap_paddr != 0 {
        for i in 0..info.memmap_entries as usize {
            // SAFETY: the VMM's memory map table, `memmap_entries` long.
            let e = unsafe {
                (info.memmap_paddr as *const MemmapEntry)
                    .add(i)
                    .read_unaligned()
            };
            if e.kind == MEMMAP_RAM && e.size > 0 && ram_count < ram.len() {
                ram[ram_count] = (e.addr, e.addr + e.size);
                ram_count += 1;
            }
        }
    }
    Ok(Boot {
        info,
        cmdline,
        ram,
        ram_count,
    })
}
