//! Test inputs: a real static-pie musl program (compiled once with rustc)
//! and hand-made ELF files with chosen segments.
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// A small `println!` program built for x86_64-unknown-linux-musl
/// (static-pie, as cargo builds apps by default).
pub fn musl_hello() -> Vec<u8> {
    std::fs::read(musl_hello_path()).unwrap()
}

pub fn musl_hello_path() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("cargo-unikernel-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("hello.rs");
        std::fs::write(&src, "fn main() { println!(\"hello from musl\"); }\n").unwrap();
        let out = dir.join("hello");
        let status = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
            .args([
                "--edition=2021",
                "-O",
                "--target",
                "x86_64-unknown-linux-musl",
                "-o",
            ])
            .arg(&out)
            .arg(&src)
            .status()
            .expect("run rustc");
        assert!(status.success(), "rustc for the musl test program failed");
        out
    })
    .clone()
}

/// One PT_LOAD of a synthetic ELF.
pub struct SynthSegment {
    pub vaddr: u64,
    pub flags: u32,
    pub filesz: u64,
    pub memsz: u64,
}

impl SynthSegment {
    pub fn new(vaddr: u64, flags: u32, filesz: u64) -> SynthSegment {
        SynthSegment {
            vaddr,
            flags,
            filesz,
            memsz: filesz,
        }
    }
    pub fn bss(mut self, memsz: u64) -> SynthSegment {
        self.memsz = memsz;
        self
    }
}

/// An x86_64 ELF with the given PT_LOADs. The first segment starts at file
/// offset 0 (so it holds the headers; its vaddr must be page-aligned); the
/// others follow at page-congruent offsets. Segment `i` is filled with byte
/// `0xA0 + i` after the headers.
pub fn synthetic_elf(e_type: u16, entry: u64, segs: &[SynthSegment]) -> Vec<u8> {
    synthetic_elf_with_note(e_type, entry, segs, None)
}

/// [`synthetic_elf`] plus, if `note` is given, a last PT_NOTE (align 4)
/// holding those bytes at the end of the file.
pub fn synthetic_elf_with_note(
    e_type: u16,
    entry: u64,
    segs: &[SynthSegment],
    note: Option<&[u8]>,
) -> Vec<u8> {
    let n = segs.len();
    let headers = 64 + 56 * (n + usize::from(note.is_some()));
    let mut out = vec![0u8; headers];
    let mut phdrs = Vec::new();
    for (i, s) in segs.iter().enumerate() {
        let offset = if i == 0 {
            0
        } else {
            let mut off = out.len() as u64;
            while off % 4096 != s.vaddr % 4096 {
                off += 1;
            }
            off
        };
        let filesz = if i == 0 {
            s.filesz.max(headers as u64)
        } else {
            s.filesz
        };
        out.resize(offset as usize, 0);
        let fill_from = out.len().max(headers);
        out.resize((offset + filesz) as usize, 0);
        out[fill_from..].fill(0xA0 + i as u8);
        phdrs.push((offset, filesz, s));
    }
    out[..4].copy_from_slice(b"\x7fELF");
    out[4] = 2; // ELFCLASS64
    out[5] = 1; // little-endian
    out[6] = 1; // EV_CURRENT
    out[16..18].copy_from_slice(&e_type.to_le_bytes());
    out[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    out[20..24].copy_from_slice(&1u32.to_le_bytes());
    out[24..32].copy_from_slice(&entry.to_le_bytes());
    out[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
    out[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
    out[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
    out[56..58].copy_from_slice(&((n + usize::from(note.is_some())) as u16).to_le_bytes());
    for (i, (offset, filesz, s)) in phdrs.into_iter().enumerate() {
        let p = 64 + 56 * i;
        out[p..p + 4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
        out[p + 4..p + 8].copy_from_slice(&s.flags.to_le_bytes());
        out[p + 8..p + 16].copy_from_slice(&offset.to_le_bytes());
        out[p + 16..p + 24].copy_from_slice(&s.vaddr.to_le_bytes());
        out[p + 24..p + 32].copy_from_slice(&s.vaddr.to_le_bytes());
        out[p + 32..p + 40].copy_from_slice(&filesz.to_le_bytes());
        out[p + 40..p + 48].copy_from_slice(&s.memsz.max(filesz).to_le_bytes());
        out[p + 48..p + 56].copy_from_slice(&4096u64.to_le_bytes());
    }
    if let Some(note) = note {
        let offset = out.len().next_multiple_of(4);
        out.resize(offset, 0);
        out.extend_from_slice(note);
        let p = 64 + 56 * n;
        out[p..p + 4].copy_from_slice(&4u32.to_le_bytes()); // PT_NOTE
        out[p + 4..p + 8].copy_from_slice(&4u32.to_le_bytes()); // PF_R
        out[p + 8..p + 16].copy_from_slice(&(offset as u64).to_le_bytes());
        out[p + 32..p + 40].copy_from_slice(&(note.len() as u64).to_le_bytes());
        out[p + 40..p + 48].copy_from_slice(&(note.len() as u64).to_le_bytes());
        out[p + 48..p + 56].copy_from_slice(&4u64.to_le_bytes());
    }
    out
}

/// A PVH entry note: name "Xen", type 18 (XEN_ELFNOTE_PHYS32_ENTRY), a
/// 4-byte entry address.
pub fn pvh_note(entry: u32) -> Vec<u8> {
    let mut n = Vec::new();
    n.extend_from_slice(&4u32.to_le_bytes());
    n.extend_from_slice(&4u32.to_le_bytes());
    n.extend_from_slice(&18u32.to_le_bytes());
    n.extend_from_slice(b"Xen\0");
    n.extend_from_slice(&entry.to_le_bytes());
    n
}

/// [`synthetic_kernel`] with a PVH entry note, as the kvm kernel has.
pub fn synthetic_kvm_kernel() -> Vec<u8> {
    use crate::elf_input::raw::{ET_EXEC, PF_R, PF_W, PF_X};
    synthetic_elf_with_note(
        ET_EXEC,
        0x10_0040 + 56 * 3,
        &[
            SynthSegment::new(0x10_0000, PF_R | PF_X, 0x1234),
            SynthSegment::new(0x10_2000, PF_R | PF_W, 0x100).bss(0x5800),
        ],
        Some(&pvh_note(0x10_0100)),
    )
}

/// A synthetic kernel: code at 0x100000, data and bss after it.
pub fn synthetic_kernel() -> Vec<u8> {
    use crate::elf_input::raw::{ET_EXEC, PF_R, PF_W, PF_X};
    synthetic_elf(
        ET_EXEC,
        0x10_0040 + 56 * 2,
        &[
            SynthSegment::new(0x10_0000, PF_R | PF_X, 0x1234),
            SynthSegment::new(0x10_2000, PF_R | PF_W, 0x100).bss(0x5800),
        ],
    )
}

/// musl_hello linked with a synthetic kernel into an image for `platform`
/// (named hello, nothing declared).
pub fn image_for(platform: unikernel_image::manifest::Platform) -> Vec<u8> {
    use unikernel_image::manifest::Platform;
    let spec = crate::link::ImageSpec::new(platform, "hello");
    let kernel = match platform {
        Platform::Kvm => synthetic_kvm_kernel(),
        _ => synthetic_kernel(),
    };
    crate::link::link(&kernel, &musl_hello(), &spec)
        .unwrap()
        .bytes
}
