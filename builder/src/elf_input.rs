//! Reading the two inputs of the linker: the app (a static x86_64 Linux
//! executable) and the kernel (the glue crate's bare-metal ELF).
//!
//! [`check_app`] refuses, with one line each, everything the unikernel cannot
//! run: another architecture, a dynamically linked program, a segment both
//! writable and executable (pages are mapped W^X), a segment whose file offset
//! and address disagree modulo the page size, a truncated file. What survives
//! is described by an [`ElfInput`]: the loadable segments and where the
//! program headers sit in memory (the runtime passes them as AT_PHDR).
use object::elf;
use object::read::elf::{FileHeader, ProgramHeader};
use object::LittleEndian as LE;

use unikernel_image::layout::{KERNEL_BASE, PAGE_SIZE};

/// The ELF numbers the builder uses, as plain integers (`object` wraps them
/// in newtypes; segments here carry raw `p_type`/`p_flags`).
pub mod raw {
    pub use object::elf::ELFMAG;
    pub const EI_CLASS: usize = 4;
    pub const EI_DATA: usize = 5;
    pub const EI_VERSION: usize = 6;
    pub const EI_OSABI: usize = 7;
    pub const ELFCLASS32: u8 = 1;
    pub const ELFCLASS64: u8 = 2;
    pub const ELFDATA2LSB: u8 = 1;
    pub const EV_CURRENT: u8 = 1;
    pub const ELFOSABI_NONE: u8 = 0;
    pub const ET_EXEC: u16 = 2;
    pub const ET_DYN: u16 = 3;
    pub const EM_X86_64: u16 = 62;
    pub const PT_LOAD: u32 = 1;
    pub const PT_DYNAMIC: u32 = 2;
    pub const PT_INTERP: u32 = 3;
    pub const PT_NOTE: u32 = 4;
    pub const PT_PHDR: u32 = 6;
    pub const PT_TLS: u32 = 7;
    pub const PT_GNU_STACK: u32 = 0x6474_e551;
    pub const PF_X: u32 = 1;
    pub const PF_W: u32 = 2;
    pub const PF_R: u32 = 4;
    pub const DT_NULL: i64 = 0;
    pub const DT_NEEDED: i64 = 1;
}

/// One PT_LOAD of an input file, with its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadSegment {
    pub vaddr: u64,
    pub paddr: u64,
    pub offset: u64,
    pub filesz: u64,
    pub memsz: u64,
    /// `PF_R | PF_W | PF_X`.
    pub flags: u32,
}

impl LoadSegment {
    pub fn end(&self) -> u64 {
        self.vaddr + self.memsz
    }
}

/// One PT_NOTE of an input file (the kernel's PVH entry note, for kvm).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteSegment {
    pub offset: u64,
    pub filesz: u64,
    pub align: u64,
}

/// A checked input ELF.
#[derive(Clone, Debug)]
pub struct ElfInput {
    /// `ET_DYN` (static-pie, relocated by the linker) or `ET_EXEC`.
    pub position_independent: bool,
    pub entry: u64,
    pub loads: Vec<LoadSegment>,
    /// Address of the program header table (unrelocated), if it is loaded.
    pub phdr_vaddr: Option<u64>,
    pub phnum: u32,
    pub phent: u32,
    /// PT_NOTE segments, in file order (bounds checked).
    pub notes: Vec<NoteSegment>,
}

impl ElfInput {
    /// End of the highest segment (unrelocated).
    pub fn end(&self) -> u64 {
        self.loads.iter().map(LoadSegment::end).max().unwrap_or(0)
    }
    /// Lowest segment address (unrelocated).
    pub fn start(&self) -> u64 {
        self.loads.iter().map(|s| s.vaddr).min().unwrap_or(0)
    }
    /// Bytes of segment data in the file.
    pub fn file_bytes(&self) -> u64 {
        self.loads.iter().map(|s| s.filesz).sum()
    }
}

/// Rounds up to the next page boundary.
pub fn page_align_up(v: u64) -> u64 {
    v.div_ceil(PAGE_SIZE) * PAGE_SIZE
}

/// Check the app executable. `what` names it in messages (its path or name).
pub fn check_app(data: &[u8], what: &str) -> Result<ElfInput, String> {
    let input = parse_common(data, what)?;
    let header = elf::FileHeader64::<LE>::parse(data).map_err(|_| truncated(what))?;
    let phdrs = header
        .program_headers(LE, data)
        .map_err(|_| truncated(what))?;
    for ph in phdrs {
        match ph.p_type(LE).0 {
            raw::PT_INTERP => {
                let interp = ph
                    .data(LE, data)
                    .ok()
                    .map(|b| {
                        String::from_utf8_lossy(b.split(|&c| c == 0).next().unwrap_or(b))
                            .into_owned()
                    })
                    .filter(|s| !s.is_empty());
                return Err(match interp {
                    Some(i) => format!(
                        "{what} is dynamically linked (its interpreter is {i}); build it static (musl-gcc -static, CGO_ENABLED=0 go build, or the x86_64-unknown-linux-musl target)"
                    ),
                    None => dynamic(what),
                });
            }
            raw::PT_DYNAMIC => {
                let Ok(entries) = ph.data(LE, data) else {
                    return Err(truncated(what));
                };
                // 16-byte entries (d_tag, d_val) up to DT_NULL.
                let tags = entries
                    .chunks_exact(16)
                    .map(|e| i64::from_le_bytes(e[..8].try_into().unwrap_or_default()))
                    .take_while(|&tag| tag != raw::DT_NULL);
                for tag in tags {
                    if tag == raw::DT_NEEDED {
                        return Err(dynamic(what));
                    }
                }
            }
            _ => {}
        }
    }
    let entry_ok = input
        .loads
        .iter()
        .any(|s| s.flags & raw::PF_X != 0 && (s.vaddr..s.vaddr + s.filesz).contains(&input.entry));
    if !entry_ok {
        return Err(format!(
            "{what}: entry point {:#x} is not inside an executable segment; the file is damaged",
            input.entry
        ));
    }
    if input.phdr_vaddr.is_none() {
        return Err(format!(
            "{what}: its program headers are not inside a loaded segment, but the runtime must pass them to the program (AT_PHDR); link it with the default linker script"
        ));
    }
    Ok(input)
}

/// Check the kernel ELF: same shape rules, plus every segment at
/// [`KERNEL_BASE`] or above with physical == virtual addresses.
pub fn check_kernel(data: &[u8], what: &str) -> Result<ElfInput, String> {
    check_kernel_at(data, what, KERNEL_BASE)
}

/// [`check_kernel`] for a platform whose kernel starts at `base` (Xen PV:
/// 0, virtual == pseudo-physical from the first page).
pub fn check_kernel_at(data: &[u8], what: &str, base: u64) -> Result<ElfInput, String> {
    let input = parse_common(data, what)?;
    for s in &input.loads {
        if s.vaddr != s.paddr {
            return Err(format!(
                "{what}: kernel segment at {:#x} has physical address {:#x}; the kernel must be linked with physical == virtual addresses",
                s.vaddr, s.paddr
            ));
        }
        if s.vaddr < base {
            return Err(format!(
                "{what}: kernel segment at {:#x} lies below {base:#x}; link the kernel at {base:#x} (templates/kernel-glue/link-<platform>.ld)",
                s.vaddr
            ));
        }
    }
    Ok(input)
}

fn dynamic(what: &str) -> String {
    format!("{what} is dynamically linked; build it static (x86_64-unknown-linux-musl)")
}

fn truncated(what: &str) -> String {
    format!("{what} is truncated or damaged: its ELF headers point past the end of the file")
}

/// The checks both inputs share.
fn parse_common(data: &[u8], what: &str) -> Result<ElfInput, String> {
    if data.len() < 4 || data[..4] != raw::ELFMAG {
        return Err(format!("{what} is not an ELF file"));
    }
    if data.len() < 64 {
        return Err(truncated(what));
    }
    if data[raw::EI_CLASS] != raw::ELFCLASS64 {
        return Err(format!(
            "{what} is a 32-bit ELF file; build it for x86_64 (x86_64-unknown-linux-musl)"
        ));
    }
    if data[raw::EI_DATA] != raw::ELFDATA2LSB {
        return Err(format!(
            "{what} is a big-endian ELF file, not x86_64; build it for x86_64-unknown-linux-musl"
        ));
    }
    let header = elf::FileHeader64::<LE>::parse(data).map_err(|_| truncated(what))?;
    let machine = header.e_machine(LE).0;
    if machine != raw::EM_X86_64 {
        return Err(format!(
            "{what} is built for another architecture (ELF machine {machine}), not x86_64; build it for x86_64-unknown-linux-musl"
        ));
    }
    let position_independent = match header.e_type(LE).0 {
        raw::ET_EXEC => false,
        raw::ET_DYN => true,
        t => {
            return Err(format!(
                "{what} is not an executable (ELF type {t}); pass a program, not an object file or library"
            ))
        }
    };
    let phdrs = header
        .program_headers(LE, data)
        .map_err(|_| truncated(what))?;
    let phoff = header.e_phoff(LE);
    let mut loads = Vec::new();
    let mut notes = Vec::new();
    let mut pt_phdr = None;
    for ph in phdrs {
        match ph.p_type(LE).0 {
            raw::PT_PHDR => pt_phdr = Some(ph.p_vaddr(LE)),
            raw::PT_NOTE => {
                let (offset, filesz) = (ph.p_offset(LE), ph.p_filesz(LE));
                if offset
                    .checked_add(filesz)
                    .is_none_or(|end| end > data.len() as u64)
                {
                    return Err(truncated(what));
                }
                notes.push(NoteSegment {
                    offset,
                    filesz,
                    align: ph.p_align(LE).max(1),
                });
            }
            raw::PT_LOAD => {
                let s = LoadSegment {
                    vaddr: ph.p_vaddr(LE),
                    paddr: ph.p_paddr(LE),
                    offset: ph.p_offset(LE),
                    filesz: ph.p_filesz(LE),
                    memsz: ph.p_memsz(LE),
                    flags: ph.p_flags(LE).0,
                };
                check_segment(&s, data.len() as u64, what)?;
                loads.push(s);
            }
            _ => {}
        }
    }
    if loads.is_empty() {
        return Err(format!("{what} has no loadable segments"));
    }
    loads.sort_by_key(|s| s.vaddr);
    for pair in loads.windows(2) {
        if page_align_up(pair[0].end()) > pair[1].vaddr & !(PAGE_SIZE - 1) {
            return Err(format!(
                "{what}: segments at {:#x} and {:#x} share a page; link it with 4 KiB pages (-z max-page-size=4096)",
                pair[0].vaddr, pair[1].vaddr
            ));
        }
    }
    let phnum = u32::from(header.e_phnum(LE));
    let phent = u32::from(header.e_phentsize(LE));
    let phdr_vaddr = pt_phdr.or_else(|| {
        let table_end = phoff + u64::from(phnum) * u64::from(phent);
        loads
            .iter()
            .find(|s| phoff >= s.offset && table_end <= s.offset + s.filesz)
            .map(|s| s.vaddr + (phoff - s.offset))
    });
    Ok(ElfInput {
        position_independent,
        entry: header.e_entry(LE),
        loads,
        phdr_vaddr,
        phnum,
        phent,
        notes,
    })
}

fn check_segment(s: &LoadSegment, file_len: u64, what: &str) -> Result<(), String> {
    if s.flags & raw::PF_W != 0 && s.flags & raw::PF_X != 0 {
        return Err(format!(
            "{what} has a segment at {:#x} that is both writable and executable; the unikernel maps pages W^X: link code and data separately (no -N/--omagic, no RWX sections)",
            s.vaddr
        ));
    }
    if s.offset % PAGE_SIZE != s.vaddr % PAGE_SIZE {
        return Err(format!(
            "{what} has a segment at {:#x} whose file offset {:#x} is not congruent to its address modulo 4096; link it with 4 KiB pages",
            s.vaddr, s.offset
        ));
    }
    if s.filesz > s.memsz {
        return Err(format!(
            "{what} has a segment at {:#x} with more file bytes than memory bytes; the file is damaged",
            s.vaddr
        ));
    }
    let in_file = s
        .offset
        .checked_add(s.filesz)
        .is_some_and(|end| end <= file_len);
    if !in_file {
        return Err(format!(
            "{what} is truncated: its segment at {:#x} extends past the end of the file ({file_len} bytes)",
            s.vaddr
        ));
    }
    if s.vaddr.checked_add(s.memsz).is_none_or(|end| end > 1 << 47) {
        return Err(format!(
            "{what} has a segment at {:#x} outside the lower half of the address space",
            s.vaddr
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{musl_hello, synthetic_elf, SynthSegment};

    #[test]
    fn real_static_pie_is_accepted() {
        let data = musl_hello();
        let app = check_app(&data, "hello").unwrap();
        assert!(app.position_independent);
        assert_eq!(app.start(), 0);
        assert!(app.loads.len() >= 2);
        // No PT_PHDR in musl static-pie: found through e_phoff in the first segment.
        assert_eq!(app.phdr_vaddr, Some(64));
        assert_eq!(app.phent, 56);
    }

    #[test]
    fn dynamic_program_is_rejected() {
        let data = std::fs::read("/bin/true").unwrap();
        let e = check_app(&data, "/bin/true").unwrap_err();
        assert_eq!(
            e,
            "/bin/true is dynamically linked (its interpreter is /lib64/ld-linux-x86-64.so.2); build it static (musl-gcc -static, CGO_ENABLED=0 go build, or the x86_64-unknown-linux-musl target)"
        );
    }

    #[test]
    fn not_elf_and_truncated() {
        assert_eq!(
            check_app(b"#!/bin/sh\n", "s").unwrap_err(),
            "s is not an ELF file"
        );
        let data = musl_hello();
        assert!(check_app(&data[..40], "h")
            .unwrap_err()
            .contains("truncated"));
        assert!(check_app(&data[..200], "h")
            .unwrap_err()
            .contains("truncated"));
        let last = check_app(&data, "h").unwrap().loads.pop().unwrap();
        let cut = &data[..(last.offset + last.filesz - 1) as usize];
        assert!(check_app(cut, "h").unwrap_err().contains("truncated"));
    }

    #[test]
    fn wrong_architecture_and_class() {
        let mut data = musl_hello();
        data[18] = 183; // EM_AARCH64
        let e = check_app(&data, "h").unwrap_err();
        assert!(e.contains("another architecture (ELF machine 183)"), "{e}");
        let mut data = musl_hello();
        data[4] = raw::ELFCLASS32;
        assert!(check_app(&data, "h").unwrap_err().contains("32-bit"));
    }

    #[test]
    fn writable_and_executable_segment_is_rejected() {
        let data = synthetic_elf(
            raw::ET_EXEC,
            0x40_0000,
            &[SynthSegment::new(
                0x40_0000,
                raw::PF_R | raw::PF_W | raw::PF_X,
                0x100,
            )],
        );
        let e = check_app(&data, "h").unwrap_err();
        assert!(e.contains("both writable and executable"), "{e}");
    }

    #[test]
    fn incongruent_offset_is_rejected() {
        let mut data = synthetic_elf(
            raw::ET_EXEC,
            0x40_0000,
            &[SynthSegment::new(0x40_0000, raw::PF_R | raw::PF_X, 0x100)],
        );
        // Shift p_offset of the first PT_LOAD (phdr 0, at 64) by 16 bytes.
        let off = u64::from_le_bytes(data[64 + 8..64 + 16].try_into().unwrap()) + 16;
        data[64 + 8..64 + 16].copy_from_slice(&off.to_le_bytes());
        let e = check_app(&data, "h").unwrap_err();
        assert!(e.contains("not congruent"), "{e}");
    }

    #[test]
    fn synthetic_exec_is_accepted() {
        let data = synthetic_elf(
            raw::ET_EXEC,
            0x40_0000,
            &[
                SynthSegment::new(0x40_0000, raw::PF_R | raw::PF_X, 0x100),
                SynthSegment::new(0x40_2000, raw::PF_R | raw::PF_W, 0x10).bss(0x3000),
            ],
        );
        let app = check_app(&data, "h").unwrap();
        assert!(!app.position_independent);
        assert_eq!(app.end(), 0x40_5000);
        assert_eq!(app.phdr_vaddr, Some(0x40_0040));
    }

    #[test]
    fn kernel_below_base_is_rejected() {
        let data = synthetic_elf(
            raw::ET_EXEC,
            0x1000,
            &[SynthSegment::new(0x1000, raw::PF_R | raw::PF_X, 0x100)],
        );
        let e = check_kernel(&data, "k").unwrap_err();
        assert!(e.contains("below 0x100000"), "{e}");
    }
}
