//! The page permissions of the image (W^X): the leaf flags each page of
//! the kernel and of the app gets from their ELF segments. Code is read +
//! execute, read-only data read-only + NX, data and bss read-write + NX.
//!
//! The platforms that map the image in the guest use it: kvm when it
//! builds its page tables, Xen PV when it remaps the pages Xen's domain
//! builder mapped read-write-execute. (hvt's monitor applies the same rule
//! on the host: `platform-hvt/monitor/src/paging.rs`.)
//!
//! The builder refuses segments that are writable and executable, and
//! segments that share a page (`builder/src/elf_input.rs`), and the
//! kernel's linker scripts (`templates/kernel-glue/link-*.ld`) start each
//! segment on a page; so no page should ever need two segments'
//! permissions. Should one (an image not made by the builder), it gets
//! the union of them, and a page that would be writable *and* executable
//! is an error ([`WriteAndExecute`]), never mapped.

use crate::arch::x86_64::paging::{A, D, NX, P, PAGE_SIZE, U, W};
use alloc::vec::Vec;

/// ELF `p_flags` bits.
pub const PF_X: u32 = 1;
pub const PF_W: u32 = 2;
pub const PF_R: u32 = 4;

/// A loaded segment `[start, end)` (bytes, not rounded) with its ELF flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub start: u64,
    pub end: u64,
    pub flags: u32,
}

/// A page two segments would make writable and executable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteAndExecute {
    pub page: u64,
}

impl core::fmt::Display for WriteAndExecute {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "image page {:#x} is shared by a writable and an executable segment; W^X refuses to map it (link with 4 KiB-aligned segments)",
            self.page
        )
    }
}

/// Leaf flags for ELF permissions: `P|U|A|D`, `W` with `PF_W`, `NX`
/// without `PF_X` (accessed and dirty set up front: nobody needs them).
pub fn elf_flags(pf: u32) -> u64 {
    let mut f = P | U | A | D;
    if pf & PF_W != 0 {
        f |= W;
    }
    if pf & PF_X == 0 {
        f |= NX;
    }
    f
}

/// The ELF flags of the page at `page`: the union of the segments that
/// touch it, `None` when none does.
pub fn page_perms(segments: &[Segment], page: u64) -> Result<Option<u32>, WriteAndExecute> {
    let page = page & !(PAGE_SIZE - 1);
    let mut perms = None;
    for s in segments {
        if s.start < page + PAGE_SIZE && page < s.end {
            let p = perms.get_or_insert(0);
            *p |= s.flags;
        }
    }
    match perms {
        Some(p) if p & PF_W != 0 && p & PF_X != 0 => Err(WriteAndExecute { page }),
        p => Ok(p),
    }
}

/// The whole image as segments: the kernel's three (text, read-only
/// data, data + bss: its linker symbols `__text_start`, `__text_end`,
/// `__rodata_end`, `__kernel_end`; each segment starts on a page), the
/// boot manifest the builder puts at `__kernel_end` and the guard page
/// below the app (read-only, up to `app_base`), then the app's loaded
/// segments.
pub fn image_segments(
    text: (u64, u64),
    rodata_end: u64,
    kernel_end: u64,
    app_base: u64,
    app: &[Segment],
) -> Vec<Segment> {
    let up = |a: u64| (a + PAGE_SIZE - 1) & !(PAGE_SIZE - 1);
    let mut v = Vec::with_capacity(4 + app.len());
    v.push(Segment {
        start: text.0,
        end: text.1,
        flags: PF_R | PF_X,
    });
    v.push(Segment {
        start: up(text.1),
        end: rodata_end,
        flags: PF_R,
    });
    v.push(Segment {
        start: up(rodata_end),
        end: kernel_end,
        flags: PF_R | PF_W,
    });
    if app_base > kernel_end {
        v.push(Segment {
            start: kernel_end,
            end: app_base,
            flags: PF_R,
        });
    }
    v.extend_from_slice(app);
    v
}

/// The app's PT_LOAD segments (at `base` + their addresses), read from its
/// program headers in memory.
///
/// # Safety
/// `phdr` must point at `phnum` readable program headers of `phent` bytes
/// each (the platform loaded them with the app).
pub unsafe fn app_segments(base: u64, phdr: u64, phent: u64, phnum: u64) -> Vec<Segment> {
    const PT_LOAD: u32 = 1;
    let mut out = Vec::new();
    for i in 0..phnum {
        let ph = phdr + i * phent;
        // SAFETY: inside the program header table (the caller's promise);
        // Elf64_Phdr: p_type at 0, p_flags at 4, p_vaddr at 16, p_memsz at 40.
        let (ty, flags, vaddr, memsz) = unsafe {
            (
                (ph as *const u32).read_unaligned(),
                ((ph + 4) as *const u32).read_unaligned(),
                ((ph + 16) as *const u64).read_unaligned(),
                ((ph + 40) as *const u64).read_unaligned(),
            )
        };
        if ty == PT_LOAD && memsz != 0 {
            out.push(Segment {
                start: base + vaddr,
                end: base + vaddr + memsz,
                flags,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(start: u64, len: u64, flags: u32) -> Segment {
        Segment {
            start,
            end: start + len,
            flags,
        }
    }

    #[test]
    fn flags_follow_the_elf_permissions() {
        assert_eq!(elf_flags(PF_R | PF_X), P | U | A | D);
        assert_eq!(elf_flags(PF_R), P | U | A | D | NX);
        assert_eq!(elf_flags(PF_R | PF_W), P | U | A | D | W | NX);
    }

    #[test]
    fn pages_take_their_segments_permissions() {
        let s = [
            seg(0x10_0000, 0x1800, PF_R | PF_X),
            seg(0x10_2000, 0x10, PF_R | PF_W),
        ];
        assert_eq!(page_perms(&s, 0x10_0000), Ok(Some(PF_R | PF_X)));
        assert_eq!(page_perms(&s, 0x10_1fff), Ok(Some(PF_R | PF_X)));
        assert_eq!(page_perms(&s, 0x10_2000), Ok(Some(PF_R | PF_W)));
        assert_eq!(page_perms(&s, 0x10_3000), Ok(None));
        assert_eq!(page_perms(&s, 0xf_f000), Ok(None));
    }

    /// hvt's rule (platform-hvt/monitor/src/paging.rs): a shared page gets
    /// the union, but never writable and executable at once.
    #[test]
    fn shared_pages_take_the_union_but_never_w_and_x() {
        let s = [
            seg(0x10_0000, 0x1800, PF_R | PF_X),
            seg(0x10_1800, 0x100, PF_R),
        ];
        assert_eq!(page_perms(&s, 0x10_1000), Ok(Some(PF_R | PF_X)));
        let s = [
            seg(0x10_0000, 0x1800, PF_R | PF_X),
            seg(0x10_1800, 0x100, PF_R | PF_W),
        ];
        assert_eq!(page_perms(&s, 0x10_0000), Ok(Some(PF_R | PF_X)));
        assert_eq!(
            page_perms(&s, 0x10_1000),
            Err(WriteAndExecute { page: 0x10_1000 })
        );
    }

    #[test]
    fn the_image_is_kernel_manifest_then_app() {
        let app = [
            seg(0x20_0000, 0x3000, PF_R | PF_X),
            seg(0x20_3000, 0x1234, PF_R | PF_W),
        ];
        // text ends mid-page; rodata and data start on the next pages.
        let v = image_segments((0x10000, 0x12345), 0x15100, 0x18000, 0x20_0000, &app);
        let at = |va| page_perms(&v, va).unwrap();
        assert_eq!(at(0x10000), Some(PF_R | PF_X));
        assert_eq!(
            at(0x12000),
            Some(PF_R | PF_X),
            "the text's last, partial page"
        );
        assert_eq!(at(0x13000), Some(PF_R));
        assert_eq!(at(0x15000), Some(PF_R));
        assert_eq!(at(0x16000), Some(PF_R | PF_W));
        assert_eq!(at(0x17000), Some(PF_R | PF_W));
        assert_eq!(at(0x18000), Some(PF_R), "the boot manifest");
        assert_eq!(at(0x1f_f000), Some(PF_R), "the guard page below the app");
        assert_eq!(at(0x20_2000), Some(PF_R | PF_X));
        assert_eq!(
            at(0x20_4000),
            Some(PF_R | PF_W),
            "the data's last, partial page"
        );
        assert_eq!(at(0x20_5000), None);
        assert_eq!(at(0xf000), None, "below the kernel");
    }

    #[test]
    fn app_segments_come_from_the_program_headers() {
        // Three headers: PT_PHDR (skipped), two PT_LOADs, as Elf64_Phdr bytes.
        let mut table = [0u8; 3 * 56];
        let mut put = |i: usize, ty: u32, flags: u32, vaddr: u64, memsz: u64| {
            let h = &mut table[i * 56..(i + 1) * 56];
            h[0..4].copy_from_slice(&ty.to_le_bytes());
            h[4..8].copy_from_slice(&flags.to_le_bytes());
            h[16..24].copy_from_slice(&vaddr.to_le_bytes());
            h[40..48].copy_from_slice(&memsz.to_le_bytes());
        };
        put(0, 6, PF_R, 0x40, 0xa8);
        put(1, 1, PF_R | PF_X, 0x1000, 0x2000);
        put(2, 1, PF_R | PF_W, 0x3000, 0x10);
        // SAFETY: a table of three headers of 56 bytes.
        let s = unsafe { app_segments(0x40_0000, table.as_ptr() as u64, 56, 3) };
        assert_eq!(
            s,
            [
                seg(0x40_1000, 0x2000, PF_R | PF_X),
                seg(0x40_3000, 0x10, PF_R | PF_W)
            ]
        );
    }
}
