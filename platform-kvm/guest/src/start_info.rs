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

/// The RSDP copied out of the Multiboot2 information (its memory is
/// ordinary RAM, handed out as frames later).
static mut MB2_RSDP: [u8; 36] = [0; 36];
/// The command line, likewise.
static mut MB2_CMDLINE: [u8; 4096] = [0; 4096];

/// The string of the Multiboot2 module that holds the command line
/// (`module2 /boot/cmdline unikernel-cmdline` in the disk's grub.cfg:
/// GRUB re-quotes words on the `multiboot2` line, a module arrives byte
/// for byte).
const CMDLINE_MODULE: &[u8] = b"unikernel-cmdline";

/// Reads the Multiboot2 information at `pa` into the same [`Boot`] the
/// PVH path gives: the command line (the `unikernel-cmdline` module, else
/// tag 1), the RAM ranges of the memory
/// map (tag 6, type 1) and the RSDP (tags 14, 15: copied, the newer one
/// preferred). Errors name what is wrong; every tag is bounds-checked
/// against the information's total size.
///
/// # Safety
/// `pa` is what the loader passed in %ebx; the first 4 GiB are mapped;
/// boot time, single CPU (the statics above are written).
pub unsafe fn from_multiboot2(pa: u64) -> Result<Boot, &'static str> {
    let rd32 = |a: u64| {
        // SAFETY: inside the information, checked by the callers.
        unsafe { (a as *const u32).read_unaligned() }
    };
    let rd64 = |a: u64| {
        // SAFETY: as above.
        unsafe { (a as *const u64).read_unaligned() }
    };
    if pa == 0 || !pa.is_multiple_of(8) || pa >= 1 << 32 {
        return Err("the Multiboot2 information is not 8-byte aligned below 4 GiB");
    }
    let total = u64::from(rd32(pa));
    if !(16..=1 << 20).contains(&total) {
        return Err("the Multiboot2 information has an implausible size");
    }
    let end = pa + total;
    let mut info = StartInfo {
        magic: MAGIC,
        version: 1,
        flags: 0,
        nr_modules: 0,
        modlist_paddr: 0,
        cmdline_paddr: 0,
        rsdp_paddr: 0,
        memmap_paddr: 0,
        memmap_entries: 0,
        reserved: 0,
    };
    let mut cmdline_len = 0;
    let mut from_module = false;
    let mut ram = [(0, 0); 16];
    let mut ram_count = 0;
    let mut rsdp_rev = 0;
    let mut tag = pa + 8;
    while tag + 8 <= end {
        let (ty, size) = (rd32(tag), u64::from(rd32(tag + 4)));
        if size < 8 || tag + size > end {
            return Err("a Multiboot2 tag runs past the information");
        }
        match ty {
            0 => break,
            3 if size >= 16 => {
                // A module: { mod_start, mod_end, string }.
                let (start, stop) = (u64::from(rd32(tag + 8)), u64::from(rd32(tag + 12)));
                let name_len = (size - 16) as usize;
                // SAFETY: inside the tag.
                let name =
                    unsafe { core::slice::from_raw_parts((tag + 16) as *const u8, name_len) };
                let name = name.split(|&b| b == 0).next().unwrap_or(&[]);
                if name == CMDLINE_MODULE && stop >= start {
                    // SAFETY: boot time, single CPU: the only writer.
                    let buf = unsafe { &mut *core::ptr::addr_of_mut!(MB2_CMDLINE) };
                    let n = ((stop - start) as usize).min(buf.len() - 1);
                    // SAFETY: the module GRUB loaded, below 4 GiB (u32 bounds).
                    let src = unsafe { core::slice::from_raw_parts(start as *const u8, n) };
                    buf[..n].copy_from_slice(src);
                    // A trailing newline (an editor's) is no part of the line.
                    cmdline_len = src.iter().rposition(|&b| b != b'\n').map_or(0, |p| p + 1);
                    from_module = true;
                }
            }
            1 if !from_module => {
                // SAFETY: boot time, single CPU: the only writer.
                let buf = unsafe { &mut *core::ptr::addr_of_mut!(MB2_CMDLINE) };
                let mut n = 0;
                while n < (size - 8) as usize && n < buf.len() - 1 {
                    // SAFETY: inside the tag.
                    let b = unsafe { *((tag + 8 + n as u64) as *const u8) };
                    if b == 0 {
                        break;
                    }
                    buf[n] = b;
                    n += 1;
                }
                cmdline_len = n;
            }
            6 => {
                let entry_size = u64::from(rd32(tag + 8));
                if entry_size < 24 {
                    return Err("the Multiboot2 memory map has entries under 24 bytes");
                }
                let mut e = tag + 16;
                while e + entry_size <= tag + size {
                    let (addr, len, kind) = (rd64(e), rd64(e + 8), rd32(e + 16));
                    if kind == MEMMAP_RAM && len > 0 && ram_count < ram.len() {
                        ram[ram_count] = (addr, addr.saturating_add(len));
                        ram_count += 1;
                    }
                    e += entry_size;
                }
            }
            14 | 15 => {
                let rev = if ty == 15 { 2 } else { 1 };
                let n = ((size - 8) as usize).min(36);
                if rev > rsdp_rev && n >= 20 {
                    // SAFETY: boot time, single CPU: the only writer.
                    let buf = unsafe { &mut *core::ptr::addr_of_mut!(MB2_RSDP) };
                    for (i, b) in buf.iter_mut().enumerate().take(n) {
                        // SAFETY: inside the tag.
                        *b = unsafe { *((tag + 8 + i as u64) as *const u8) };
                    }
                    info.rsdp_paddr = buf.as_ptr() as u64;
                    rsdp_rev = rev;
                }
            }
            _ => {}
        }
        tag += (size + 7) & !7;
    }
    if ram_count == 0 {
        return Err("the Multiboot2 information has no memory map");
    }
    // SAFETY: filled above; boot time, nothing writes it any more.
    let cmdline = unsafe {
        let buf = &*core::ptr::addr_of!(MB2_CMDLINE);
        core::str::from_utf8(&buf[..cmdline_len]).unwrap_or("")
    };
    Ok(Boot {
        info,
        cmdline,
        ram,
        ram_count,
    })
}
