//! Reading a built image back: recognizing one (an ELF with a `UKM`
//! manifest note, or a kvm/xen boot-manifest segment), and the report of
//! `cargo unikernel inspect`.
use std::fmt::Write as _;

use object::elf;
use unikernel_image::manifest::{Manifest, NOTE_NAME, NOTE_TYPE};

use crate::elf_input::raw;
use object::read::elf::{FileHeader, ProgramHeader};
use object::LittleEndian as LE;

use crate::config::format_size;

/// One program header of an image.
#[derive(Clone, Debug)]
pub struct ImageSegment {
    pub p_type: u32,
    pub vaddr: u64,
    pub offset: u64,
    pub filesz: u64,
    pub memsz: u64,
    pub flags: u32,
}

/// Who a loaded segment belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    Kernel,
    App,
    /// kvm: the loaded copy of the manifest after the kernel.
    BootManifest,
    /// Not loaded (PT_INTERP, PT_NOTE).
    None,
}

/// A parsed image.
#[derive(Clone, Debug)]
pub struct Image {
    pub entry: u64,
    pub segments: Vec<ImageSegment>,
    pub manifest: Manifest,
    pub file_size: u64,
    /// kvm: address of the boot manifest segment (u32 length + manifest).
    pub boot_manifest: Option<u64>,
    /// The embedded-files archive: Ok((files, bytes)) when the manifest
    /// names one and it parses, Err(why) when it names one that does not.
    pub files: Option<Result<(usize, u64), String>>,
}

/// Why a file is not a readable image.
#[derive(Debug, PartialEq, Eq)]
pub enum ImageError {
    /// Not an ELF64 little-endian file at all, or no manifest note: not an image.
    NotAnImage,
    /// It has a manifest note, but a bad one.
    BadManifest(String),
    /// A loaded segment extends past the end of the file.
    Truncated,
}

impl Image {
    /// Parse `data`. Never panics on malformed input.
    pub fn parse(data: &[u8]) -> Result<Image, ImageError> {
        let header = elf::FileHeader64::<LE>::parse(data).map_err(|_| ImageError::NotAnImage)?;
        if !header.is_little_endian() || header.e_machine(LE).0 != raw::EM_X86_64 {
            return Err(ImageError::NotAnImage);
        }
        let phdrs = header
            .program_headers(LE, data)
            .map_err(|_| ImageError::NotAnImage)?;
        let mut manifest = None;
        let mut segments = Vec::new();
        for ph in phdrs {
            segments.push(ImageSegment {
                p_type: ph.p_type(LE).0,
                vaddr: ph.p_vaddr(LE),
                offset: ph.p_offset(LE),
                filesz: ph.p_filesz(LE),
                memsz: ph.p_memsz(LE),
                flags: ph.p_flags(LE).0,
            });
            if ph.p_type(LE).0 == raw::PT_LOAD
                && ph
                    .p_offset(LE)
                    .checked_add(ph.p_filesz(LE))
                    .is_none_or(|end| end > data.len() as u64)
            {
                return Err(ImageError::Truncated);
            }
            let Ok(Some(mut notes)) = ph.notes(LE, data) else {
                continue;
            };
            while let Ok(Some(note)) = notes.next() {
                if note.name() == NOTE_NAME.as_bytes() && note.n_type(LE).0 == NOTE_TYPE {
                    let m = Manifest::decode(note.desc())
                        .map_err(|e| ImageError::BadManifest(e.to_string()))?;
                    manifest = Some(m);
                }
            }
        }
        // kvm images have no manifest note: read their boot-manifest segment.
        if manifest.is_none() {
            for s in segments.iter().filter(|s| s.p_type == raw::PT_LOAD) {
                let Some(bytes) = data.get(s.offset as usize..(s.offset + s.filesz) as usize)
                else {
                    continue;
                };
                if bytes.len() >= 12 && &bytes[4..12] == unikernel_image::manifest::MAGIC {
                    let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
                    let body = bytes.get(4..4 + len).ok_or(ImageError::Truncated)?;
                    let m = Manifest::decode(body)
                        .map_err(|e| ImageError::BadManifest(e.to_string()))?;
                    manifest = Some(m);
                    break;
                }
            }
        }
        let manifest = manifest.ok_or(ImageError::NotAnImage)?;
        // The boot manifest: a read-only PT_LOAD holding exactly the length
        // and the encoded manifest.
        let encoded = manifest.encode();
        let mut expected = (encoded.len() as u32).to_le_bytes().to_vec();
        expected.extend_from_slice(&encoded);
        let boot_manifest = segments
            .iter()
            .find(|s| {
                s.p_type == raw::PT_LOAD
                    && s.filesz == expected.len() as u64
                    && data.get(s.offset as usize..(s.offset + s.filesz) as usize)
                        == Some(&expected[..])
            })
            .map(|s| s.vaddr);
        let files = (manifest.files_len != 0).then(|| embedded_files(data, &segments, &manifest));
        Ok(Image {
            entry: header.e_entry(LE),
            segments,
            manifest,
            file_size: data.len() as u64,
            boot_manifest,
            files,
        })
    }

    /// Whose segment this is: app segments lie at or above `app_base`
    /// (static-pie) or the app's first segment (fixed address).
    pub fn owner(&self, s: &ImageSegment) -> Owner {
        if s.p_type != raw::PT_LOAD {
            return Owner::None;
        }
        if Some(s.vaddr) == self.boot_manifest {
            return Owner::BootManifest;
        }
        let app_start = self.app_start();
        if s.vaddr >= app_start {
            Owner::App
        } else {
            Owner::Kernel
        }
    }

    /// Lowest address of the app: the first PT_LOAD containing the app's
    /// program headers, which is the app's first segment.
    fn app_start(&self) -> u64 {
        let m = &self.manifest;
        if m.app_base != 0 {
            return m.app_base;
        }
        self.segments
            .iter()
            .filter(|s| s.p_type == raw::PT_LOAD && s.vaddr <= m.app_phdr)
            .map(|s| s.vaddr)
            .max()
            .unwrap_or(0)
    }

    /// (kernel, app) bytes of loaded data.
    pub fn sizes(&self) -> (u64, u64) {
        let mut sizes = (0, 0);
        for s in &self.segments {
            match self.owner(s) {
                Owner::Kernel => sizes.0 += s.filesz,
                Owner::App => sizes.1 += s.filesz,
                Owner::BootManifest | Owner::None => {}
            }
        }
        sizes
    }

    /// The text `cargo unikernel inspect` prints.
    pub fn report(&self) -> String {
        let m = &self.manifest;
        let mut out = String::new();
        let list = |l: &[String]| {
            if l.is_empty() {
                "(none)".to_string()
            } else {
                l.iter()
                    .map(|s| format!("{s:?}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            }
        };
        let memory = if m.memory == 0 {
            "monitor default".to_string()
        } else {
            format!("{} ({} bytes)", format_size(m.memory), m.memory)
        };
        let hex = crate::messages::hex(&m.build_id);
        let _ = writeln!(out, "manifest:");
        let _ = writeln!(out, "  name        {}", m.name);
        let _ = writeln!(out, "  platform    {}", m.platform.name());
        let _ = writeln!(out, "  memory      {memory}");
        let _ = writeln!(out, "  args        {}", list(&m.args));
        let _ = writeln!(out, "  env         {}", list(&m.env));
        if m.components.is_empty() {
            let _ = writeln!(out, "  components  (none)");
        } else {
            let _ = writeln!(out, "  components");
            for (c, why) in m.components.iter().zip(&m.component_reasons) {
                let _ = writeln!(out, "    {c}: {why}");
            }
        }
        let _ = writeln!(out, "  devices     {}", list(&m.devices));
        let _ = writeln!(out, "  ports       {}", list(&m.ports));
        let _ = writeln!(out, "  options     {}", list(&m.options));
        if m.disks.is_empty() {
            let _ = writeln!(out, "  disks       (none)");
        } else {
            let _ = writeln!(out, "  disks");
            for d in &m.disks {
                let (name, mount) = d.split_once('=').unwrap_or((d.as_str(), "?"));
                let _ = writeln!(out, "    {name}: mounted at {mount} (--disk {name}=FILE)");
            }
        }
        match &self.files {
            None => {
                let _ = writeln!(out, "  files       (none)");
            }
            Some(Ok((n, bytes))) => {
                let _ = writeln!(
                    out,
                    "  files       {n} embedded, {} at {:#x} ({} bytes of archive)",
                    human_bytes(*bytes),
                    m.files_addr,
                    m.files_len
                );
            }
            Some(Err(e)) => {
                let _ = writeln!(out, "  files       BAD: {e}");
            }
        }
        let _ = writeln!(out, "  kernel entry {:#x}", self.entry);
        let _ = writeln!(out, "  app entry   {:#x}", m.app_entry);
        let _ = writeln!(out, "  app base    {:#x}", m.app_base);
        let _ = writeln!(out, "  app end     {:#x}", m.app_end);
        let _ = writeln!(
            out,
            "  app phdr    {:#x} ({} entries of {} bytes)",
            m.app_phdr, m.app_phnum, m.app_phent
        );
        let _ = writeln!(out, "  build id    {hex}");
        let _ = writeln!(out, "segments:");
        let _ = writeln!(
            out,
            "  {:<8} {:>18} {:>10} {:>10}  {:<3}  owner",
            "type", "address", "file size", "mem size", "flg"
        );
        for s in &self.segments {
            let owner = match self.owner(s) {
                Owner::Kernel => "kernel",
                Owner::App => "app",
                Owner::BootManifest => "manifest",
                Owner::None => "-",
            };
            let _ = writeln!(
                out,
                "  {:<8} {:>#18x} {:>10} {:>10}  {}  {owner}",
                segment_type_name(s.p_type),
                s.vaddr,
                s.filesz,
                s.memsz,
                flags_rwx(s.flags)
            );
        }
        let (kernel, app) = self.sizes();
        let _ = writeln!(out, "sizes:");
        let _ = writeln!(out, "  kernel      {}", human_bytes(kernel));
        let _ = writeln!(out, "  app         {}", human_bytes(app));
        let _ = writeln!(out, "  image file  {}", human_bytes(self.file_size));
        out
    }
}

/// Find the archive the manifest names in a loaded segment and count it.
fn embedded_files(
    data: &[u8],
    segments: &[ImageSegment],
    m: &Manifest,
) -> Result<(usize, u64), String> {
    let seg = segments
        .iter()
        .find(|s| {
            s.p_type == raw::PT_LOAD
                && s.vaddr <= m.files_addr
                && m.files_addr
                    .checked_add(m.files_len)
                    .is_some_and(|end| end <= s.vaddr + s.filesz)
        })
        .ok_or("no loaded segment holds the archive the manifest names")?;
    let start = seg.offset + (m.files_addr - seg.vaddr);
    let bytes = data
        .get(start as usize..(start + m.files_len) as usize)
        .ok_or("the archive lies past the end of the file")?;
    let a = unikernel_image::files::Archive::parse(bytes).map_err(|e| e.to_string())?;
    let (mut n, mut total) = (0, 0u64);
    for e in a.entries().filter(|e| !e.is_dir()) {
        n += 1;
        total += e.data.len() as u64;
    }
    Ok((n, total))
}

/// `PF_R|PF_X` -> `"R-X"`.
pub fn flags_rwx(flags: u32) -> String {
    [(raw::PF_R, 'R'), (raw::PF_W, 'W'), (raw::PF_X, 'X')]
        .iter()
        .map(|&(bit, c)| if flags & bit != 0 { c } else { '-' })
        .collect()
}

fn segment_type_name(t: u32) -> String {
    match t {
        raw::PT_LOAD => "LOAD".into(),
        raw::PT_INTERP => "INTERP".into(),
        raw::PT_NOTE => "NOTE".into(),
        raw::PT_PHDR => "PHDR".into(),
        raw::PT_TLS => "TLS".into(),
        raw::PT_DYNAMIC => "DYNAMIC".into(),
        raw::PT_GNU_STACK => "STACK".into(),
        _ => format!("{t:#x}"),
    }
}

/// `565248` -> `"565248 bytes (552.0 KiB)"`.
pub fn human_bytes(n: u64) -> String {
    if n < 1024 {
        format!("{n} bytes")
    } else if n < 1 << 20 {
        format!("{n} bytes ({:.1} KiB)", n as f64 / 1024.0)
    } else {
        format!("{n} bytes ({:.1} MiB)", n as f64 / (1 << 20) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::{link, ImageSpec};
    use crate::testutil::{image_for, musl_hello, synthetic_kernel, synthetic_kvm_kernel};
    use unikernel_image::manifest::Platform;

    fn image() -> Vec<u8> {
        image_for(Platform::Hvt)
    }

    /// The v2 fields survive link -> parse on hvt (note) and kvm (boot
    /// manifest segment), and the report shows each component's reason.
    #[test]
    fn report_shows_components_devices_ports_options() {
        for platform in [Platform::Hvt, Platform::Kvm] {
            let spec = ImageSpec {
                components: vec!["net".into()],
                component_reasons: vec!["the app calls socket, bind, accept4".into()],
                devices: vec!["net".into()],
                ports: vec!["8080:80".into(), "udp:5353:53".into()],
                options: vec!["UNIKERNEL_IP=10.0.0.2/24".into()],
                disks: vec!["data=/data".into()],
                files: Some(unikernel_image::files::encode(&[
                    (
                        "static".into(),
                        unikernel_image::files::S_IFDIR | 0o555,
                        vec![],
                    ),
                    (
                        "static/a.txt".into(),
                        unikernel_image::files::S_IFREG | 0o444,
                        b"hello".to_vec(),
                    ),
                ])),
                ..ImageSpec::new(platform, "web")
            };
            let kernel = match platform {
                Platform::Kvm => synthetic_kvm_kernel(),
                _ => synthetic_kernel(),
            };
            let data = link(&kernel, &musl_hello(), &spec).unwrap().bytes;
            let img = Image::parse(&data).unwrap();
            assert_eq!(
                img.manifest.reason("net"),
                Some("the app calls socket, bind, accept4")
            );
            let r = img.report();
            assert!(
                r.contains("  components\n    net: the app calls socket, bind, accept4\n"),
                "{r}"
            );
            assert!(r.contains("  devices     \"net\"\n"), "{r}");
            assert!(
                r.contains("  ports       \"8080:80\" \"udp:5353:53\"\n"),
                "{r}"
            );
            assert!(
                r.contains("  options     \"UNIKERNEL_IP=10.0.0.2/24\"\n"),
                "{r}"
            );
            assert!(
                r.contains("  disks\n    data: mounted at /data (--disk data=FILE)\n"),
                "{r}"
            );
            assert!(r.contains("  files       1 embedded, 5 bytes at 0x"), "{r}");
            // The archive sits inside the app's range, after its segments.
            let m = &img.manifest;
            assert!(m.files_addr >= m.app_base && m.files_addr + m.files_len <= m.app_end);
        }
        let r = Image::parse(&image()).unwrap().report();
        assert!(r.contains("  components  (none)\n  devices     (none)\n  ports       (none)\n  options     (none)\n  disks       (none)\n  files       (none)\n"), "{r}");
    }

    #[test]
    fn report_names_owners_and_sizes() {
        let data = image();
        let img = Image::parse(&data).unwrap();
        let r = img.report();
        assert!(r.contains("platform    hvt"), "{r}");
        assert!(r.contains("memory      monitor default"), "{r}");
        assert!(r.contains("INTERP"), "{r}");
        let kernel_lines = r.lines().filter(|l| l.ends_with("kernel")).count();
        assert_eq!(kernel_lines, 2, "{r}");
        let (k, a) = img.sizes();
        assert_eq!(k, 0x1234 + 0x100);
        assert!(a > 100_000);
        assert!(r.contains(&format!("image file  {}", human_bytes(data.len() as u64))));
    }

    #[test]
    fn kvm_report_shows_the_boot_manifest() {
        let data = image_for(Platform::Kvm);
        let img = Image::parse(&data).unwrap();
        assert_eq!(img.boot_manifest, Some(0x10_8000));
        let r = img.report();
        assert!(r.contains("platform    kvm"), "{r}");
        assert_eq!(
            r.lines().filter(|l| l.ends_with("manifest")).count(),
            1,
            "{r}"
        );
        assert_eq!(r.lines().filter(|l| l.ends_with("kernel")).count(), 2);
        assert_eq!(Image::parse(&image()).unwrap().boot_manifest, None);
    }

    #[test]
    fn non_images() {
        assert_eq!(Image::parse(b"hello").unwrap_err(), ImageError::NotAnImage);
        assert_eq!(
            Image::parse(&musl_hello()).unwrap_err(),
            ImageError::NotAnImage
        );
        let data = image();
        for n in [10, 100, 1000, data.len() - 10] {
            assert!(Image::parse(&data[..n]).is_err(), "prefix {n}");
        }
    }

    #[test]
    fn flags() {
        assert_eq!(flags_rwx(raw::PF_R | raw::PF_X), "R-X");
        assert_eq!(flags_rwx(raw::PF_R | raw::PF_W), "RW-");
    }
}
