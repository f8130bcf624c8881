//! The image linker: one kernel ELF + one app ELF -> one bootable image.
//!
//! The image is an ELF64 x86_64 `ET_EXEC` without sections. Its program
//! headers, in order:
//!
//! 1. `PT_INTERP` "/nonexistent/unikernel/": the host kernel refuses to
//!    execute the image (Solo5 does the same with "/nonexistent/solo5/");
//!    VMM loaders (QEMU, Firecracker, cloud-hypervisor) ignore it;
//! 2. kvm and xen only: the kernel's `PT_NOTE`s, copied byte for byte (kvm:
//!    the PVH entry note `XEN_ELFNOTE_PHYS32_ENTRY`, which QEMU and
//!    Firecracker look up through the program headers; xen: the PV notes
//!    xl's loader reads: entry, hypercall page, VIRT_BASE...);
//! 3. the kernel's `PT_LOAD`s, unchanged (at `KERNEL_BASE` upward, entry = the
//!    image's `e_entry`);
//! 4. kvm and xen only: the boot manifest, a read-only `PT_LOAD` at
//!    `page_align_up(kernel end)` (the kernel's `__kernel_end`) holding a u32
//!    LE length N and the N bytes of the encoded manifest. A VMM loads only
//!    `PT_LOAD`s, so this is how the kvm kernel finds its manifest;
//! 5. the app's `PT_LOAD`s moved by a base `B`: for a static-pie app `B` is
//!    the first page after the kernel (after the boot manifest on kvm) plus
//!    one unmapped guard page, for a fixed-address app `B = 0` and its
//!    segments must already lie above that. The app's own ELF and program
//!    headers stay inside its first segment, untouched: musl's start-up finds
//!    them through AT_PHDR and relocates itself, so the linker processes no
//!    relocations;
//! 6. hvt only: `PT_NOTE` with the manifest (`unikernel_image::manifest`): where the app is,
//!    its default memory, args and env, components, devices, ports, runtime
//!    options, and a build id.
//!
//! Every loaded segment's data sits at a file offset congruent to its
//! address modulo 4096, so a monitor could even map the file directly.
use std::borrow::Cow;

use crate::elf_input::raw;
use sha2::{Digest, Sha256};
use unikernel_image::layout::{MAX_MEMORY, PAGE_SIZE};
use unikernel_image::manifest::{Manifest, Platform, NOTE_NAME, NOTE_TYPE};

use crate::elf_input::{check_app, check_kernel_at, page_align_up, ElfInput};

/// The string in the image's PT_INTERP.
pub const INTERP: &[u8] = b"/nonexistent/unikernel/\0";

/// Length of the build id in the manifest.
pub const BUILD_ID_LEN: usize = 20;

/// What goes into an image besides the two ELF files.
#[derive(Clone, Debug)]
pub struct ImageSpec {
    pub platform: Platform,
    /// Default guest memory in bytes, 0 = the monitor's default.
    pub memory: u64,
    /// The app's name (argv[0]).
    pub name: String,
    pub args: Vec<String>,
    /// `K=V` strings.
    pub env: Vec<String>,
    /// Linked components and, parallel to them, why each was chosen.
    pub components: Vec<String>,
    pub component_reasons: Vec<String>,
    /// Devices the image wants (`"net"`).
    pub devices: Vec<String>,
    /// Published ports as written (`"8080:80"`), already checked.
    pub ports: Vec<String>,
    /// Runtime option defaults (`UNIKERNEL_*=VALUE`), already checked.
    pub options: Vec<String>,
    /// Declared disks, `NAME=MOUNT` each, already checked.
    pub disks: Vec<String>,
    /// The embedded-files archive (`unikernel_image::files`), if any: a
    /// read-only segment right after the app, inside the app's range.
    pub files: Option<Vec<u8>>,
}

impl ImageSpec {
    /// An image of `name` for `platform` with nothing declared: the
    /// monitor's default memory, no arguments, environment, components,
    /// devices, ports, options, disks or files.
    pub fn new(platform: Platform, name: &str) -> Self {
        ImageSpec {
            platform,
            memory: 0,
            name: name.into(),
            args: vec![],
            env: vec![],
            components: vec![],
            component_reasons: vec![],
            devices: vec![],
            ports: vec![],
            options: vec![],
            disks: vec![],
            files: None,
        }
    }
}

/// A linked image.
#[derive(Clone, Debug)]
pub struct LinkedImage {
    pub bytes: Vec<u8>,
    pub manifest: Manifest,
    /// Bytes of loaded kernel and app data in the image.
    pub kernel_bytes: u64,
    pub app_bytes: u64,
}

/// The lowest address of a `platform` kernel: a Xen PV kernel starts at 0
/// (VIRT_BASE 0: virtual == pseudo-physical), the others at `KERNEL_BASE`.
pub fn kernel_base(platform: Platform) -> u64 {
    match platform {
        Platform::Xen => 0,
        _ => unikernel_image::layout::KERNEL_BASE,
    }
}

/// Link `kernel` and `app` (whole ELF files) into an image.
pub fn link(kernel: &[u8], app: &[u8], spec: &ImageSpec) -> Result<LinkedImage, String> {
    let kernel_base = kernel_base(spec.platform);
    let kernel_elf = check_kernel_at(kernel, "the kernel", kernel_base)?;
    // kvm and xen kernels are started by loaders that read their notes
    // and load only PT_LOADs: the notes are copied, and the manifest is a
    // loaded segment after the kernel.
    let loader_booted = matches!(spec.platform, Platform::Kvm | Platform::Xen);
    let app_elf = check_app(app, &format!("the app {}", spec.name))?;
    let kernel_end = page_align_up(kernel_elf.end());
    let phdr = app_elf
        .phdr_vaddr
        .ok_or_else(|| format!("the app {} has no loaded program headers", spec.name))?;
    let mut manifest = Manifest {
        platform: spec.platform,
        memory: spec.memory,
        app_entry: 0,
        app_base: 0,
        app_phdr: 0,
        app_end: 0,
        app_phnum: app_elf.phnum,
        app_phent: app_elf.phent,
        name: spec.name.clone(),
        args: spec.args.clone(),
        env: spec.env.clone(),
        components: spec.components.clone(),
        component_reasons: spec.component_reasons.clone(),
        devices: spec.devices.clone(),
        ports: spec.ports.clone(),
        options: spec.options.clone(),
        disks: spec.disks.clone(),
        files_addr: 0,
        files_len: 0,
        build_id: vec![0; BUILD_ID_LEN],
    };
    // kvm: the boot manifest segment sits right after the kernel. Its size
    // does not depend on the addresses still to be filled in.
    let boot_manifest_len = if loader_booted {
        4 + manifest.encode().len() as u64
    } else {
        0
    };
    let app_floor = page_align_up(kernel_end + boot_manifest_len);
    let what_is_below = if boot_manifest_len == 0 {
        "the kernel"
    } else {
        "the kernel and its boot manifest"
    };
    let base = if app_elf.position_independent {
        app_floor + PAGE_SIZE - (app_elf.start() & !(PAGE_SIZE - 1))
    } else {
        if app_elf.start() < app_floor {
            return Err(format!(
                "the app {} is linked at {:#x}-{:#x}, which collides with {what_is_below} at {kernel_base:#x}-{app_floor:#x}; link it at {app_floor:#x} or above (musl-gcc's and Go's default 0x400000 is), or build it as static-pie",
                spec.name,
                app_elf.start(),
                app_elf.end()
            ));
        }
        0
    };
    let mut app_end = page_align_up(base + app_elf.end());
    let files_addr = app_end;
    if let Some(files) = &spec.files {
        manifest.files_addr = files_addr;
        manifest.files_len = files.len() as u64;
        app_end = page_align_up(files_addr + files.len() as u64);
    }
    if app_end > MAX_MEMORY {
        return Err(format!(
            "the app {} ends at {app_end:#x}, above the largest guest memory ({MAX_MEMORY:#x})",
            spec.name
        ));
    }
    if spec.memory != 0 && app_end > spec.memory {
        return Err(format!(
            "the image needs {app_end:#x} bytes of memory for the kernel, the app and its embedded files alone but memory is {:#x}: raise `memory` in [package.metadata.unikernel]",
            spec.memory
        ));
    }
    manifest.app_entry = base + app_elf.entry;
    manifest.app_base = base;
    manifest.app_phdr = base + phdr;
    manifest.app_end = app_end;
    manifest.build_id = Vec::new();
    manifest.build_id = build_id(kernel, app, spec.files.as_deref().unwrap_or(&[]), &manifest);
    let encoded = manifest.encode();

    let mut segments = vec![OutSegment::not_loaded(
        raw::PT_INTERP,
        Cow::Borrowed(INTERP),
        1,
    )];
    if loader_booted {
        if kernel_elf.notes.is_empty() {
            return Err(match spec.platform {
                Platform::Xen => "the xen kernel has no PT_NOTE segment, so xl cannot find its Xen notes (no loader found: Invalid kernel); build it from templates/kernel-glue with link-xen.ld".to_string(),
                _ => "the kvm kernel has no PT_NOTE segment, so no VMM can find its PVH entry point; build it from templates/kernel-glue with link-kvm.ld".to_string(),
            });
        }
        for n in &kernel_elf.notes {
            // In bounds: checked by `check_kernel`.
            let bytes = &kernel[n.offset as usize..(n.offset + n.filesz) as usize];
            segments.push(OutSegment::not_loaded(
                raw::PT_NOTE,
                Cow::Borrowed(bytes),
                n.align,
            ));
        }
    }
    segments.extend(load_segments(kernel, &kernel_elf, 0));
    if loader_booted {
        let mut data = (encoded.len() as u32).to_le_bytes().to_vec();
        data.extend_from_slice(&encoded);
        segments.push(OutSegment {
            p_type: raw::PT_LOAD,
            flags: raw::PF_R,
            vaddr: kernel_end,
            memsz: data.len() as u64,
            align: PAGE_SIZE,
            data: Cow::Owned(data),
        });
    }
    segments.extend(load_segments(app, &app_elf, base));
    if let Some(files) = spec.files.as_deref().filter(|f| !f.is_empty()) {
        segments.push(OutSegment {
            p_type: raw::PT_LOAD,
            flags: raw::PF_R,
            vaddr: files_addr,
            memsz: files.len() as u64,
            align: PAGE_SIZE,
            data: Cow::Borrowed(files),
        });
    }
    // kvm images carry the manifest only in their boot-manifest segment:
    // with a second PT_NOTE next to the PVH note, QEMU's ELF loader crashed
    // in about a third of q35 boots (reproduced with QEMU 10.0 TCG).
    // xen images neither: xl needs nothing but its own notes.
    if !loader_booted {
        segments.push(OutSegment::not_loaded(
            raw::PT_NOTE,
            Cow::Owned(note(NOTE_NAME, NOTE_TYPE, &encoded)),
            4,
        ));
    }
    Ok(LinkedImage {
        bytes: write_elf(kernel_elf.entry, &segments),
        manifest,
        kernel_bytes: kernel_elf.file_bytes(),
        app_bytes: app_elf.file_bytes(),
    })
}

/// 20 bytes of SHA-256 over the kernel, the app, the embedded files and
/// the manifest fields.
fn build_id(kernel: &[u8], app: &[u8], files: &[u8], manifest: &Manifest) -> Vec<u8> {
    let mut h = Sha256::new();
    for part in [kernel, app, files, &manifest.encode()] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h.finalize()[..BUILD_ID_LEN].to_vec()
}

/// One program header of the output, with its data.
struct OutSegment<'a> {
    p_type: u32,
    flags: u32,
    vaddr: u64,
    memsz: u64,
    align: u64,
    data: Cow<'a, [u8]>,
}

impl<'a> OutSegment<'a> {
    fn not_loaded(p_type: u32, data: Cow<'a, [u8]>, align: u64) -> OutSegment<'a> {
        OutSegment {
            p_type,
            flags: raw::PF_R,
            vaddr: 0,
            memsz: data.len() as u64,
            align,
            data,
        }
    }
}

fn load_segments<'a>(file: &'a [u8], input: &ElfInput, base: u64) -> Vec<OutSegment<'a>> {
    input
        .loads
        .iter()
        .map(|s| OutSegment {
            p_type: raw::PT_LOAD,
            flags: s.flags,
            vaddr: base + s.vaddr,
            memsz: s.memsz,
            align: PAGE_SIZE,
            // In bounds: checked by `check_app`/`check_kernel`.
            data: Cow::Borrowed(&file[s.offset as usize..(s.offset + s.filesz) as usize]),
        })
        .collect()
}

/// A standard ELF note: namesz, descsz, type, name (NUL-terminated, padded to
/// 4), desc (zero-padded to 8, and descsz says so: with the manifest's
/// 4-byte name the note then reads the same under 4- and 8-byte alignment;
/// the manifest decoder ignores the trailing zeros).
fn note(name: &str, n_type: u32, desc: &[u8]) -> Vec<u8> {
    let desc_len = desc.len().next_multiple_of(8);
    let mut out = Vec::new();
    out.extend_from_slice(&(name.len() as u32 + 1).to_le_bytes());
    out.extend_from_slice(&(desc_len as u32).to_le_bytes());
    out.extend_from_slice(&n_type.to_le_bytes());
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    out.resize(out.len().next_multiple_of(4), 0);
    out.extend_from_slice(desc);
    out.resize(out.len() + desc_len - desc.len(), 0);
    out
}

/// Lay out the ELF header, the program headers and every segment's data.
fn write_elf(entry: u64, segments: &[OutSegment]) -> Vec<u8> {
    const EHDR: usize = 64;
    const PHDR: usize = 56;
    let mut out = vec![0u8; EHDR + PHDR * segments.len()];
    let mut offsets = Vec::with_capacity(segments.len());
    for s in segments {
        let mut off = out.len() as u64;
        if s.p_type == raw::PT_LOAD {
            // Next offset congruent to the address modulo the page size.
            let want = s.vaddr % PAGE_SIZE;
            off = (off - want).next_multiple_of(PAGE_SIZE) + want;
            if off < out.len() as u64 {
                off += PAGE_SIZE;
            }
        } else {
            off = off.next_multiple_of(s.align);
        }
        out.resize(off as usize, 0);
        out.extend_from_slice(&s.data);
        offsets.push(off);
    }

    let put16 =
        |out: &mut Vec<u8>, at: usize, v: u16| out[at..at + 2].copy_from_slice(&v.to_le_bytes());
    let put32 =
        |out: &mut Vec<u8>, at: usize, v: u32| out[at..at + 4].copy_from_slice(&v.to_le_bytes());
    let put64 =
        |out: &mut Vec<u8>, at: usize, v: u64| out[at..at + 8].copy_from_slice(&v.to_le_bytes());
    out[..4].copy_from_slice(&raw::ELFMAG);
    out[raw::EI_CLASS] = raw::ELFCLASS64;
    out[raw::EI_DATA] = raw::ELFDATA2LSB;
    out[raw::EI_VERSION] = raw::EV_CURRENT;
    out[raw::EI_OSABI] = raw::ELFOSABI_NONE;
    put16(&mut out, 16, raw::ET_EXEC);
    put16(&mut out, 18, raw::EM_X86_64);
    put32(&mut out, 20, u32::from(raw::EV_CURRENT));
    put64(&mut out, 24, entry);
    put64(&mut out, 32, EHDR as u64); // e_phoff
    put64(&mut out, 40, 0); // e_shoff: no sections
    put32(&mut out, 48, 0); // e_flags
    put16(&mut out, 52, EHDR as u16);
    put16(&mut out, 54, PHDR as u16);
    put16(&mut out, 56, segments.len() as u16);
    for (i, (s, off)) in segments.iter().zip(offsets).enumerate() {
        let p = EHDR + PHDR * i;
        put32(&mut out, p, s.p_type);
        put32(&mut out, p + 4, s.flags);
        put64(&mut out, p + 8, off);
        put64(&mut out, p + 16, s.vaddr); // p_vaddr
        put64(&mut out, p + 24, s.vaddr); // p_paddr
        put64(&mut out, p + 32, s.data.len() as u64);
        put64(&mut out, p + 40, s.memsz);
        put64(&mut out, p + 48, s.align);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf_input::check_kernel;
    use crate::image::Image;
    use crate::testutil::{
        musl_hello, pvh_note, synthetic_elf, synthetic_kernel, synthetic_kvm_kernel, SynthSegment,
    };
    use object::elf;
    use object::read::elf::{FileHeader, ProgramHeader};
    use object::LittleEndian as LE;

    fn spec() -> ImageSpec {
        ImageSpec {
            memory: 64 << 20,
            args: vec!["a".into()],
            env: vec!["K=V".into()],
            ..ImageSpec::new(Platform::Hvt, "hello")
        }
    }

    #[test]
    fn links_kernel_and_static_pie_app() {
        let kernel = synthetic_kernel();
        let app = musl_hello();
        let img = link(&kernel, &app, &spec()).unwrap();
        let data = &img.bytes;

        let header = elf::FileHeader64::<LE>::parse(&data[..]).unwrap();
        assert_eq!(header.e_type(LE).0, raw::ET_EXEC);
        assert_eq!(header.e_machine(LE).0, raw::EM_X86_64);
        assert_eq!(header.e_entry(LE), 0x10_00b0);
        let phdrs = header.program_headers(LE, &data[..]).unwrap();

        // PT_INTERP first.
        assert_eq!(phdrs[0].p_type(LE).0, raw::PT_INTERP);
        assert_eq!(phdrs[0].data(LE, &data[..]).unwrap(), INTERP);

        // Kernel segments unchanged, with their bytes.
        let k_in = check_kernel(&kernel, "k").unwrap();
        let loads: Vec<_> = phdrs
            .iter()
            .filter(|p| p.p_type(LE).0 == raw::PT_LOAD)
            .collect();
        for (out, s) in loads.iter().zip(&k_in.loads) {
            assert_eq!(out.p_vaddr(LE), s.vaddr);
            assert_eq!(out.p_paddr(LE), s.vaddr);
            assert_eq!(out.p_memsz(LE), s.memsz);
            assert_eq!(out.p_flags(LE).0, s.flags);
            let bytes = &kernel[s.offset as usize..][..s.filesz as usize];
            assert_eq!(out.data(LE, &data[..]).unwrap(), bytes);
        }

        // App segments moved past the kernel (ends at 0x107800 -> 0x108000) + a guard page.
        let base = 0x10_9000;
        let a_in = check_app(&app, "a").unwrap();
        assert_eq!(loads.len(), k_in.loads.len() + a_in.loads.len());
        for (out, s) in loads[k_in.loads.len()..].iter().zip(&a_in.loads) {
            assert_eq!(out.p_vaddr(LE), base + s.vaddr);
            assert_eq!(out.p_paddr(LE), base + s.vaddr);
            assert_eq!(out.p_filesz(LE), s.filesz);
            assert_eq!(out.p_memsz(LE), s.memsz);
            assert_eq!(out.p_flags(LE).0, s.flags);
            assert_eq!(out.p_offset(LE) % 4096, out.p_vaddr(LE) % 4096);
            let bytes = &app[s.offset as usize..][..s.filesz as usize];
            assert_eq!(out.data(LE, &data[..]).unwrap(), bytes);
        }

        // The note holds the manifest, and it round-trips.
        let last = phdrs.last().unwrap();
        assert_eq!(last.p_type(LE).0, raw::PT_NOTE);
        let image = Image::parse(data).unwrap();
        let m = image.manifest.clone();
        assert_eq!(m, img.manifest);
        assert_eq!(m.app_base, base);
        assert_eq!(m.app_entry, base + a_in.entry);
        assert_eq!(m.app_phdr, base + 64);
        assert_eq!(m.app_end, page_align_up(base + a_in.end()));
        assert_eq!(m.memory, 64 << 20);
        assert_eq!(
            (m.name.as_str(), m.args.clone(), m.env.clone()),
            ("hello", spec().args, spec().env)
        );
        assert_eq!(m.build_id.len(), BUILD_ID_LEN);

        // The app's own program headers are at app_phdr, untouched.
        let phdr_off = (m.app_phdr - base) as usize;
        let seg0 = loads[k_in.loads.len()];
        let placed = &data[seg0.p_offset(LE) as usize + phdr_off..][..56 * m.app_phnum as usize];
        assert_eq!(placed, &app[64..64 + 56 * m.app_phnum as usize]);
    }

    #[test]
    fn kvm_image_has_pvh_note_and_boot_manifest() {
        let kernel = synthetic_kvm_kernel();
        let app = musl_hello();
        let mut s = spec();
        s.platform = Platform::Kvm;
        let img = link(&kernel, &app, &s).unwrap();
        let data = &img.bytes[..];
        let header = elf::FileHeader64::<LE>::parse(data).unwrap();
        let phdrs = header.program_headers(LE, data).unwrap();
        let types: Vec<u32> = phdrs.iter().map(|p| p.p_type(LE).0).collect();
        let a_in = check_app(&app, "a").unwrap();
        let mut want = vec![raw::PT_INTERP, raw::PT_NOTE, raw::PT_LOAD, raw::PT_LOAD];
        want.push(raw::PT_LOAD); // the boot manifest
        want.extend(a_in.loads.iter().map(|_| raw::PT_LOAD));
        // No manifest note: the only PT_NOTE is the PVH one (see `link`).
        assert_eq!(types, want);

        // The kernel's PVH note, byte for byte, found where its header says.
        assert_eq!(phdrs[1].data(LE, data).unwrap(), pvh_note(0x10_0100));
        assert_eq!(phdrs[1].p_align(LE), 4);
        let mut notes = phdrs[1].notes(LE, data).unwrap().unwrap();
        let n = notes.next().unwrap().unwrap();
        assert_eq!((n.name(), n.n_type(LE).0), (&b"Xen"[..], 18));

        // The boot manifest: read-only, loaded at the kernel's page-aligned
        // end, u32 length + the manifest (what inspect and run read back).
        let m = &phdrs[4];
        assert_eq!(m.p_vaddr(LE), 0x10_8000);
        assert_eq!(m.p_paddr(LE), 0x10_8000);
        assert_eq!(m.p_flags(LE).0, raw::PF_R);
        assert_eq!(m.p_offset(LE) % 4096, 0);
        let bytes = m.data(LE, data).unwrap();
        let encoded = img.manifest.encode();
        assert_eq!(bytes[..4], (encoded.len() as u32).to_le_bytes());
        assert_eq!(&bytes[4..], &encoded[..]);
        assert_eq!(m.p_memsz(LE), bytes.len() as u64);
        assert_eq!(Image::parse(data).unwrap().manifest, img.manifest);
        assert_eq!(img.manifest.platform, Platform::Kvm);

        // The app starts after the boot manifest and a guard page.
        let base = page_align_up(0x10_8000 + bytes.len() as u64) + 4096;
        assert_eq!(img.manifest.app_base, base);
        assert_eq!(phdrs[5].p_vaddr(LE), base + a_in.loads[0].vaddr);
    }

    #[test]
    fn kvm_needs_the_kernel_note_and_hvt_gets_no_boot_manifest() {
        let mut s = spec();
        s.platform = Platform::Kvm;
        let e = link(&synthetic_kernel(), &musl_hello(), &s).unwrap_err();
        assert!(e.contains("no PT_NOTE"), "{e}");
        // hvt: a kernel note is not copied, and there is no boot manifest.
        let img = link(&synthetic_kvm_kernel(), &musl_hello(), &spec()).unwrap();
        let header = elf::FileHeader64::<LE>::parse(&img.bytes[..]).unwrap();
        let phdrs = header.program_headers(LE, &img.bytes[..]).unwrap();
        assert_eq!(
            phdrs
                .iter()
                .filter(|p| p.p_type(LE).0 == raw::PT_NOTE)
                .count(),
            1
        );
        assert_eq!(img.manifest.app_base, 0x10_9000);
    }

    #[test]
    fn xen_image_keeps_the_kernel_notes_and_a_boot_manifest() {
        let mut s = spec();
        s.platform = Platform::Xen;
        let e = link(&synthetic_kernel(), &musl_hello(), &s).unwrap_err();
        assert!(e.contains("xl cannot find its Xen notes"), "{e}");
        let img = link(&synthetic_kvm_kernel(), &musl_hello(), &s).unwrap();
        let header = elf::FileHeader64::<LE>::parse(&img.bytes[..]).unwrap();
        let phdrs = header.program_headers(LE, &img.bytes[..]).unwrap();
        // Only the kernel's note: no manifest note for xl to trip over.
        assert_eq!(
            phdrs
                .iter()
                .filter(|p| p.p_type(LE).0 == raw::PT_NOTE)
                .count(),
            1
        );
        let parsed = Image::parse(&img.bytes).unwrap();
        assert_eq!(parsed.manifest.platform, Platform::Xen);
        assert!(parsed.boot_manifest.is_some());
    }

    #[test]
    fn build_id_depends_on_inputs() {
        let kernel = synthetic_kernel();
        let app = musl_hello();
        let a = link(&kernel, &app, &spec()).unwrap().manifest.build_id;
        let mut s = spec();
        s.args.push("b".into());
        let b = link(&kernel, &app, &s).unwrap().manifest.build_id;
        assert_ne!(a, b);
        assert_eq!(a, link(&kernel, &app, &spec()).unwrap().manifest.build_id);
    }

    #[test]
    fn fixed_address_app() {
        let kernel = synthetic_kernel();
        let app = synthetic_elf(
            raw::ET_EXEC,
            0x40_0100,
            &[
                SynthSegment::new(0x40_0000, raw::PF_R | raw::PF_X, 0x200),
                SynthSegment::new(0x40_1000, raw::PF_R | raw::PF_W, 0x10).bss(0x100),
            ],
        );
        let img = link(&kernel, &app, &spec()).unwrap();
        assert_eq!(img.manifest.app_base, 0);
        assert_eq!(img.manifest.app_entry, 0x40_0100);
        assert_eq!(img.manifest.app_phdr, 0x40_0040);
        assert_eq!(img.manifest.app_end, 0x40_2000);

        let low = synthetic_elf(
            raw::ET_EXEC,
            0x10_1000,
            &[SynthSegment::new(0x10_1000, raw::PF_R | raw::PF_X, 0x200)],
        );
        let e = link(&kernel, &low, &spec()).unwrap_err();
        assert!(
            e.contains("collides with the kernel at 0x100000-0x108000"),
            "{e}"
        );
    }

    #[test]
    fn memory_too_small_for_image() {
        let mut s = spec();
        s.memory = 1 << 20;
        let e = link(&synthetic_kernel(), &musl_hello(), &s).unwrap_err();
        assert!(e.contains("raise `memory`"), "{e}");
    }

    #[test]
    fn dynamic_app_is_refused() {
        let e = link(
            &synthetic_kernel(),
            &std::fs::read("/bin/true").unwrap(),
            &spec(),
        )
        .unwrap_err();
        assert!(e.contains("dynamically linked"), "{e}");
    }

    #[test]
    fn note_layout() {
        let n = note("UKM", 7, &[1, 2, 3]);
        assert_eq!(&n[..12], &[4, 0, 0, 0, 8, 0, 0, 0, 7, 0, 0, 0]);
        assert_eq!(&n[12..16], b"UKM\0");
        assert_eq!(&n[16..], &[1, 2, 3, 0, 0, 0, 0, 0]);
        // Same reading under 8-byte alignment: name ends at 16, desc is 8-aligned.
        assert_eq!(n.len() % 8, 0);
    }
}
