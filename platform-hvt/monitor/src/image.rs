//! The unikernel image: an ELF64 x86_64 executable whose `PT_LOAD` segments
//! sit at their guest-physical addresses (kernel first, at `KERNEL_BASE`,
//! then the app), plus a `UNIKERNEL` note holding the [`Manifest`].
//!
//! This module checks everything about the file before any of it reaches
//! guest memory: ELF identity, segment ranges inside the file and inside the
//! allowed guest window, no overlaps, the manifest and its platform. Then it
//! copies the segments into [`GuestMemory`] and reads the [`KernelHeader`]
//! the kernel's linker script put at `KERNEL_BASE`.
//!
//! The image also carries a `PT_INTERP` of `/nonexistent/unikernel/` so that
//! running it directly on the host fails; the monitor ignores it.
use std::path::Path;

use hvt_abi::layout::{KERNEL_BASE, MAX_MEMORY, PAGE_SIZE};
use hvt_abi::{KernelHeader, ABI_VERSION, KERNEL_HEADER_MAGIC};
use object::elf::{FileHeader64, ProgramHeader64};
use object::read::elf::{FileHeader, ProgramHeader};
use object::{elf, LittleEndian};
use thiserror::Error;
use unikernel_image::manifest::{Manifest, ManifestError, Platform, NOTE_NAME, NOTE_TYPE};

use crate::memory::GuestMemory;

/// Why an image cannot be booted.
#[derive(Debug, Error)]
pub enum ImageError {
    #[error("cannot read image {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("not an ELF file (a unikernel image is built by `cargo unikernel build`)")]
    NotElf,
    #[error("image is truncated or its ELF headers are corrupt ({0})")]
    Corrupt(&'static str),
    #[error(
        "not a unikernel image: not a 64-bit x86_64 ET_EXEC ELF (a host program? build images with `cargo unikernel build`)"
    )]
    WrongKind,
    #[error("not a unikernel image (no UNIKERNEL manifest note)")]
    NoManifest,
    #[error("the image's manifest note is unreadable: {0}")]
    BadManifest(ManifestError),
    #[error("image was built for platform {0}; build it with `--platform hvt` to run it on unikernel-hvt")]
    WrongPlatform(&'static str),
    #[error("image segment at {gpa:#x}+{memsz:#x} lies outside guest memory [{KERNEL_BASE:#x}, {MAX_MEMORY:#x})")]
    SegmentOutOfRange { gpa: u64, memsz: u64 },
    #[error("image segment at {vaddr:#x} has physical address {paddr:#x}; hvt images need p_vaddr == p_paddr")]
    SegmentNotIdentity { vaddr: u64, paddr: u64 },
    #[error("image segment at {gpa:#x} has a file size ({filesz:#x}) larger than its memory size ({memsz:#x})")]
    FileLargerThanMemory { gpa: u64, filesz: u64, memsz: u64 },
    #[error("image segment at {gpa:#x} refers to bytes {offset:#x}+{filesz:#x} beyond the end of the file ({file_len:#x} bytes)")]
    SegmentOutOfFile {
        gpa: u64,
        offset: u64,
        filesz: u64,
        file_len: u64,
    },
    #[error("image segments at {a:#x} and {b:#x} overlap")]
    Overlap { a: u64, b: u64 },
    #[error("image has no loadable segment at KERNEL_BASE ({KERNEL_BASE:#x})")]
    NoKernel,
    #[error(
        "the manifest's embedded files at {addr:#x} ({len} bytes) lie outside the image's segments"
    )]
    FilesOutOfRange { addr: u64, len: u64 },
    #[error("kernel header at {KERNEL_BASE:#x} has magic {0:#x}, not the hvt kernel magic (is this really an hvt kernel?)")]
    BadKernelMagic(u64),
    #[error("kernel speaks hvt ABI version {found}, this monitor speaks version {ABI_VERSION}; rebuild the image with the matching toolchain")]
    AbiMismatch { found: u32 },
}

/// Permissions of a loadable segment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Perms {
    pub write: bool,
    pub exec: bool,
}

/// One `PT_LOAD` segment, already checked against the file and the guest window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Guest-physical (== virtual) start.
    pub gpa: u64,
    pub memsz: u64,
    pub file_offset: u64,
    pub filesz: u64,
    pub perms: Perms,
}

impl Segment {
    pub fn end(&self) -> u64 {
        self.gpa + self.memsz
    }
}

/// Where the segment bytes come from: the open file (read straight into
/// guest memory at [`Image::load`], so the image is never held twice), or
/// bytes already in memory (tests).
#[derive(Debug)]
enum Source {
    File(std::fs::File),
    Bytes(Vec<u8>),
}

/// A parsed, checked image.
#[derive(Debug)]
pub struct Image {
    source: Source,
    /// Loadable segments, sorted by address, non-overlapping.
    pub segments: Vec<Segment>,
    pub manifest: Manifest,
}

impl Image {
    /// Reads and checks the image file. Only the headers and the notes are
    /// read here; the segments go straight from the file into guest memory
    /// in [`Image::load`] (one copy instead of two: launch time counts).
    pub fn open(path: &Path) -> Result<Image, ImageError> {
        use std::io::Read;
        let read_err = |source| ImageError::Read {
            path: path.display().to_string(),
            source,
        };
        let mut file = std::fs::File::open(path).map_err(read_err)?;
        let len = file.metadata().map_err(read_err)?.len();
        // The headers: the ELF header and the program headers it points at
        // (the builder puts them first; a larger table is read in full).
        let mut head = Vec::with_capacity(4096);
        (&mut file)
            .take(4096)
            .read_to_end(&mut head)
            .map_err(read_err)?;
        if head.len() >= 64 {
            let phoff = u64::from_le_bytes(head[32..40].try_into().unwrap_or([0; 8]));
            let phnum = u64::from(u16::from_le_bytes([head[56], head[57]]));
            let want = phoff.saturating_add(phnum * 56).min(len);
            if want > head.len() as u64 {
                head.resize(want as usize, 0);
                std::os::unix::fs::FileExt::read_exact_at(&file, &mut head, 0).map_err(read_err)?;
            }
        }
        Image::check(head, len, |off, n| {
            let mut buf = vec![0; n as usize];
            std::os::unix::fs::FileExt::read_exact_at(&file, &mut buf, off).ok()?;
            Some(buf)
        })
        .map(|(segments, manifest)| Image {
            source: Source::File(file),
            segments,
            manifest,
        })
    }

    /// Checks an image held in memory.
    pub fn parse(data: Vec<u8>) -> Result<Image, ImageError> {
        let len = data.len() as u64;
        let (segments, manifest) = Image::check(data.clone(), len, |off, n| {
            data.get(off as usize..off.checked_add(n)? as usize)
                .map(<[u8]>::to_vec)
        })?;
        Ok(Image {
            source: Source::Bytes(data),
            segments,
            manifest,
        })
    }

    /// Everything about the file but the segment bytes: `data` holds (at
    /// least) the ELF header and program headers, `file_len` is the file's
    /// length, and `read(offset, len)` reads other parts (the notes).
    fn check(
        data: Vec<u8>,
        file_len: u64,
        read: impl Fn(u64, u64) -> Option<Vec<u8>>,
    ) -> Result<(Vec<Segment>, Manifest), ImageError> {
        if data.len() < 4 || data[..4] != elf::ELFMAG {
            return Err(ImageError::NotElf);
        }
        let e = LittleEndian;
        let header = FileHeader64::<LittleEndian>::parse(&*data).map_err(|_| {
            if data.len() < std::mem::size_of::<FileHeader64<LittleEndian>>() {
                ImageError::Corrupt("file shorter than the ELF header")
            } else {
                ImageError::WrongKind
            }
        })?;
        if !header.is_little_endian()
            || header.e_machine(e) != elf::EM_X86_64
            || header.e_type(e) != elf::ET_EXEC
        {
            return Err(ImageError::WrongKind);
        }
        let phdrs: &[ProgramHeader64<LittleEndian>] = header
            .program_headers(e, &*data)
            .map_err(|_| ImageError::Corrupt("program headers lie outside the file"))?;

        let mut manifest = None;
        let mut segments = Vec::new();
        for ph in phdrs {
            let p_type = ph.p_type(e);
            if p_type == elf::PT_NOTE {
                let (off, size) = (ph.p_offset(e), ph.p_filesz(e));
                if off.checked_add(size).is_none_or(|end| end > file_len) || size > 1 << 20 {
                    return Err(ImageError::Corrupt("a note segment lies outside the file"));
                }
                let bytes = read(off, size)
                    .ok_or(ImageError::Corrupt("a note segment lies outside the file"))?;
                for (name, n_type, desc) in notes(&bytes)? {
                    if name == NOTE_NAME.as_bytes() && n_type == NOTE_TYPE {
                        let m = Manifest::decode(desc).map_err(ImageError::BadManifest)?;
                        manifest = Some(m);
                    }
                }
            } else if p_type == elf::PT_LOAD {
                if let Some(seg) = check_load(ph, file_len)? {
                    segments.push(seg);
                }
            }
        }
        let manifest = manifest.ok_or(ImageError::NoManifest)?;
        if manifest.platform != Platform::Hvt {
            return Err(ImageError::WrongPlatform(manifest.platform.name()));
        }
        segments.sort_by_key(|s| s.gpa);
        for w in segments.windows(2) {
            if w[0].end() > w[1].gpa {
                return Err(ImageError::Overlap {
                    a: w[0].gpa,
                    b: w[1].gpa,
                });
            }
        }
        if segments.first().map(|s| s.gpa) != Some(KERNEL_BASE) {
            return Err(ImageError::NoKernel);
        }
        Ok((segments, manifest))
    }

    /// First byte after the highest segment, rounded up to a page: the least
    /// guest memory that can hold the image.
    pub fn end(&self) -> u64 {
        let end = self.segments.last().map_or(KERNEL_BASE, |s| s.end());
        end.next_multiple_of(PAGE_SIZE)
    }

    /// Copies the segments into guest memory. Bytes past `filesz` are left as
    /// they are: zero in a freshly mapped [`GuestMemory`].
    pub fn load(&self, mem: &mut GuestMemory) -> Result<(), LoadError> {
        for s in &self.segments {
            let dst = mem.slice_mut(s.gpa, s.filesz)?;
            match &self.source {
                // Ranges were checked against the file's length in `check`.
                Source::Bytes(data) => dst.copy_from_slice(
                    &data[s.file_offset as usize..(s.file_offset + s.filesz) as usize],
                ),
                Source::File(f) => {
                    std::os::unix::fs::FileExt::read_exact_at(f, dst, s.file_offset)?
                }
            }
        }
        Ok(())
    }
}

/// Why the segments could not be copied into guest memory.
#[derive(Debug, Error)]
pub enum LoadError {
    #[error(transparent)]
    Memory(#[from] crate::memory::OutOfBounds),
    #[error("reading the image's segments: {0} (did the file change?)")]
    Read(#[from] std::io::Error),
}

/// One ELF note: name (without its NUL), type, descriptor.
type Note<'a> = (&'a [u8], u32, &'a [u8]);

/// The notes of a note segment, with the 4-byte alignment the builder (and
/// the ELF spec's common use) gives.
fn notes(b: &[u8]) -> Result<Vec<Note<'_>>, ImageError> {
    let bad = ImageError::Corrupt("a note segment is malformed");
    let u32_at = |o: usize| {
        b.get(o..o + 4)
            .map(|x| u32::from_le_bytes([x[0], x[1], x[2], x[3]]))
    };
    let mut out = Vec::new();
    let mut at = 0usize;
    while at + 12 <= b.len() {
        let (namesz, descsz, n_type) = match (u32_at(at), u32_at(at + 4), u32_at(at + 8)) {
            (Some(a), Some(b), Some(c)) => (a as usize, b as usize, c),
            _ => return Err(bad),
        };
        let name_at = at + 12;
        let desc_at = name_at
            .checked_add(namesz.next_multiple_of(4))
            .ok_or(ImageError::Corrupt("a note segment is malformed"))?;
        let end = desc_at
            .checked_add(descsz.next_multiple_of(4))
            .ok_or(ImageError::Corrupt("a note segment is malformed"))?;
        let name = b
            .get(name_at..name_at + namesz)
            .ok_or(ImageError::Corrupt("a note segment is malformed"))?;
        let desc = b
            .get(desc_at..desc_at + descsz)
            .ok_or(ImageError::Corrupt("a note segment is malformed"))?;
        out.push((name.strip_suffix(&[0]).unwrap_or(name), n_type, desc));
        at = end;
    }
    Ok(out)
}

/// Checks one `PT_LOAD` header; `None` for an empty segment.
fn check_load(
    ph: &ProgramHeader64<LittleEndian>,
    file_len: u64,
) -> Result<Option<Segment>, ImageError> {
    let e = LittleEndian;
    let (vaddr, paddr) = (ph.p_vaddr(e), ph.p_paddr(e));
    let (memsz, filesz, offset) = (ph.p_memsz(e), ph.p_filesz(e), ph.p_offset(e));
    if memsz == 0 {
        return Ok(None);
    }
    if vaddr != paddr {
        return Err(ImageError::SegmentNotIdentity { vaddr, paddr });
    }
    match paddr.checked_add(memsz) {
        Some(end) if paddr >= KERNEL_BASE && end <= MAX_MEMORY => {}
        _ => return Err(ImageError::SegmentOutOfRange { gpa: paddr, memsz }),
    }
    if filesz > memsz {
        return Err(ImageError::FileLargerThanMemory {
            gpa: paddr,
            filesz,
            memsz,
        });
    }
    if offset.checked_add(filesz).is_none_or(|end| end > file_len) {
        return Err(ImageError::SegmentOutOfFile {
            gpa: paddr,
            offset,
            filesz,
            file_len,
        });
    }
    let flags = ph.p_flags(e).0;
    Ok(Some(Segment {
        gpa: paddr,
        memsz,
        file_offset: offset,
        filesz,
        perms: Perms {
            write: flags & elf::PF_W.0 != 0,
            exec: flags & elf::PF_X.0 != 0,
        },
    }))
}

/// Reads and checks the [`KernelHeader`] at `KERNEL_BASE` (after [`Image::load`]).
pub fn kernel_header(mem: &GuestMemory) -> Result<KernelHeader, ImageError> {
    let h: KernelHeader = mem
        .read_obj(KERNEL_BASE)
        .map_err(|_| ImageError::NoKernel)?;
    if h.magic != KERNEL_HEADER_MAGIC {
        return Err(ImageError::BadKernelMagic(h.magic));
    }
    if h.abi_version != ABI_VERSION {
        return Err(ImageError::AbiMismatch {
            found: h.abi_version,
        });
    }
    Ok(h)
}
