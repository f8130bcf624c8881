//! Bootable disk images of kvm images, for clouds and hypervisor managers
//! that boot only disks (docs/deploy.md): a GPT disk that boots with BIOS
//! and with UEFI through GRUB, written without privileges or loop devices.
//!
//! Layout (512-byte sectors):
//!
//! | LBA | what |
//! |---|---|
//! | 0 | protective MBR carrying GRUB's `boot.img` (it loads `core.img` from LBA 2048) |
//! | 1-33 | GPT header and partition entries |
//! | 2048-4095 | partition 1, BIOS boot: GRUB's i386-pc `core.img` |
//! | 4096- | partition 2, EFI system partition (FAT): `EFI/BOOT/BOOTX64.EFI` (GRUB x86_64-efi), `boot/grub/grub.cfg`, `boot/kernel` (the image) |
//! | after the ESP | partition 3, ...: a data volume per declared disk (`--data-size` each, seeded by `--data-from`) |
//! | last 33 | the backup GPT |
//!
//! GRUB (Debian's `grub-pc-bin` and `grub-efi-amd64-bin`, through
//! `grub-mkimage`) boots the image through its Multiboot2 header with the
//! command line in `grub.cfg`. Reproducible: GUIDs and the volume id come
//! from the build id, the FAT has no timestamps.
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest as _, Sha256};

const SECTOR: u64 = 512;
const BIOS_START: u64 = 2048;
const BIOS_SECTORS: u64 = 2048;
const ESP_START: u64 = BIOS_START + BIOS_SECTORS;
/// Partition entries: 128 of 128 bytes (32 sectors).
const ENTRIES: u64 = 128;
const ENTRY_SIZE: u64 = 128;
const ENTRY_SECTORS: u64 = ENTRIES * ENTRY_SIZE / SECTOR;
/// GPT partition type GUIDs.
const BIOS_BOOT_TYPE: &str = "21686148-6449-6e6f-744e-656564454649";
const ESP_TYPE: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
/// Where Debian's GRUB packages keep their modules.
const GRUB_PC: &str = "/usr/lib/grub/i386-pc";
const GRUB_EFI: &str = "/usr/lib/grub/x86_64-efi";
/// Modules in both core images: GPT, FAT, Multiboot2, and the config parser.
const GRUB_MODULES: &[&str] = &["part_gpt", "fat", "multiboot2", "normal", "configfile"];
/// The default size of each declared disk's data partition (`--data-size`).
pub const DATA_SIZE: u64 = 64 << 20;

/// The declared disks' data partitions: each `size` bytes, seeded from
/// the tree under `from` (every disk the same tree) if given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataOptions {
    pub size: u64,
    pub from: Option<PathBuf>,
}

impl Default for DataOptions {
    fn default() -> Self {
        DataOptions {
            size: DATA_SIZE,
            from: None,
        }
    }
}

/// `--data-size SIZE`: "64M", "1G" (binary units) or bytes; whole MiB
/// (partitions are MiB-aligned) and a size a volume of ours takes.
pub fn parse_data_size(s: &str) -> Result<u64, String> {
    let size = crate::config::parse_size_as(s, "--data-size")?;
    if !size.is_multiple_of(1 << 20) {
        return Err(format!(
            "bad --data-size \"{s}\": {size} bytes is not whole MiB (data partitions are MiB-aligned); give e.g. {}M",
            size.div_ceil(1 << 20)
        ));
    }
    unikernel_fs::host::layout(size).map_err(|e| format!("bad --data-size \"{s}\": {e}"))?;
    Ok(size)
}

/// Check `--data-size` (parsed by [`parse_data_size`]) and `--data-from`
/// against the rest of the command: they shape the disk `--emit disk`
/// writes and mean nothing without it; `--data-from` must be a directory.
pub fn data_options(
    emit_disk: bool,
    size: Option<u64>,
    from: Option<&Path>,
) -> Result<DataOptions, String> {
    if !emit_disk {
        if let Some(flag) = [
            (size.is_some(), "--data-size"),
            (from.is_some(), "--data-from"),
        ]
        .iter()
        .find(|(given, _)| *given)
        .map(|(_, f)| f)
        {
            return Err(format!(
                "{flag} shapes the disk `--emit disk` writes; give it with --emit disk"
            ));
        }
    }
    let size = size.unwrap_or(DATA_SIZE);
    if let Some(dir) = from {
        if !dir.is_dir() {
            return Err(format!("--data-from {}: not a directory", dir.display()));
        }
    }
    Ok(DataOptions {
        size,
        from: from.map(Path::to_path_buf),
    })
}

/// `--disk-format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DiskFormat {
    /// A raw disk: `<image>.raw`.
    Raw,
    /// qcow2 (through qemu-img): `<image>.qcow2`.
    Qcow2,
    /// A fixed VHD (Azure): `<image>.vhd`.
    Vhd,
    /// `disk.raw` in a gzipped GNU tar (GCE): `<image>.tar.gz`.
    Gce,
}

impl DiskFormat {
    fn extension(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Vhd => "vhd",
            DiskFormat::Gce => "tar.gz",
        }
    }
}

/// Where `--emit disk` writes: the image's path with the format's extension.
pub fn disk_path(image: &Path, format: DiskFormat) -> PathBuf {
    let mut s = image.as_os_str().to_owned();
    s.push(".");
    s.push(format.extension());
    PathBuf::from(s)
}

/// GRUB's pieces: `boot.img`, the BIOS `core.img`, the UEFI `BOOTX64.EFI`.
struct Grub {
    boot: Vec<u8>,
    core: Vec<u8>,
    efi: Vec<u8>,
}

fn grub(tmp: &Path) -> Result<Grub, String> {
    for (dir, pkg) in [(GRUB_PC, "grub-pc-bin"), (GRUB_EFI, "grub-efi-amd64-bin")] {
        if !Path::new(dir).is_dir() {
            return Err(format!(
                "{dir} is missing: disk images need GRUB's modules (Debian: apt-get install {pkg})"
            ));
        }
    }
    let mk = |format: &str, dir: &str, prefix: &str, out: &Path| -> Result<Vec<u8>, String> {
        let mut cmd = Command::new("grub-mkimage");
        cmd.args(["-O", format, "-d", dir, "-p", prefix, "-o"])
            .arg(out)
            .args(GRUB_MODULES);
        if format == "i386-pc" {
            cmd.arg("biosdisk");
        } else {
            // The firmware's framebuffer (GOP), which the kernel's
            // Multiboot2 header accepts: without it GRUB finds no video
            // mode under UEFI and says so on the console.
            cmd.arg("efi_gop");
        }
        let o = cmd.output().map_err(|e| {
            format!("cannot run grub-mkimage: {e} (Debian: apt-get install grub-common)")
        })?;
        if !o.status.success() {
            return Err(format!(
                "grub-mkimage -O {format} failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ));
        }
        std::fs::read(out).map_err(|e| format!("cannot read {}: {e}", out.display()))
    };
    let core = mk(
        "i386-pc",
        GRUB_PC,
        "(hd0,gpt2)/boot/grub",
        &tmp.join("core.img"),
    )?;
    let efi = mk(
        "x86_64-efi",
        GRUB_EFI,
        "/boot/grub",
        &tmp.join("bootx64.efi"),
    )?;
    let boot_path = Path::new(GRUB_PC).join("boot.img");
    let boot = std::fs::read(&boot_path)
        .map_err(|e| format!("cannot read {}: {e}", boot_path.display()))?;
    if boot.len() != 512 {
        return Err(format!("{} is not one sector", boot_path.display()));
    }
    Ok(Grub { boot, core, efi })
}

/// The module string that marks the command-line file for the kernel
/// (`start_info::from_multiboot2`).
pub const CMDLINE_MODULE: &str = "unikernel-cmdline";

/// The `grub.cfg`: boot the kernel at once, its command line in a file
/// loaded as a Multiboot2 module (GRUB would re-quote words given on the
/// `multiboot2` line; a module reaches the kernel byte for byte).
pub fn grub_cfg() -> String {
    format!(
        "# Written by cargo-unikernel: boot the image; its command line is /boot/cmdline.\n\
         set timeout=0\n\
         set gfxpayload=keep\n\
         multiboot2 /boot/kernel\n\
         module2 /boot/cmdline {CMDLINE_MODULE}\n\
         boot\n"
    )
}

/// A GUID from `seed` (a version-4-shaped GUID: reproducible, unique per
/// build id and purpose), in GPT's on-disk byte order.
fn guid(seed: &[u8], what: &str) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(seed);
    h.update(what.as_bytes());
    let d = h.finalize();
    let mut g = [0u8; 16];
    g.copy_from_slice(&d[..16]);
    g[7] = (g[7] & 0x0f) | 0x40;
    g[8] = (g[8] & 0x3f) | 0x80;
    g
}

/// A GUID's text form in GPT's on-disk byte order (the first three fields
/// little-endian).
fn guid_bytes(text: &str) -> [u8; 16] {
    let hex: Vec<u8> = text
        .bytes()
        .filter(|c| *c != b'-')
        .collect::<Vec<_>>()
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect();
    let mut g = [0u8; 16];
    g[0..4].copy_from_slice(&[hex[3], hex[2], hex[1], hex[0]]);
    g[4..6].copy_from_slice(&[hex[5], hex[4]]);
    g[6..8].copy_from_slice(&[hex[7], hex[6]]);
    g[8..16].copy_from_slice(&hex[8..16]);
    g
}

/// The ESP: a FAT volume of `sectors` with GRUB, its config and the kernel.
fn esp(sectors: u64, volume_id: u32, files: &[(&str, &[u8])]) -> Result<Vec<u8>, String> {
    fn err<E: std::fmt::Debug>(e: E) -> String {
        format!("writing the EFI system partition: {e:?}")
    }
    let mut buf = std::io::Cursor::new(vec![0u8; (sectors * SECTOR) as usize]);
    lamfat::format_volume(
        &mut lamfat::StdIoWrapper::new(&mut buf),
        lamfat::FormatVolumeOptions::new()
            .volume_label(*b"UNIKERNEL  ")
            .volume_id(volume_id),
    )
    .map_err(err)?;
    buf.seek(SeekFrom::Start(0)).map_err(err)?;
    {
        let fs = lamfat::FileSystem::new(
            lamfat::StdIoWrapper::new(&mut buf),
            lamfat::FsOptions::new().time_provider(lamfat::NullTimeProvider::new()),
        )
        .map_err(err)?;
        for (path, data) in files {
            let root = fs.root_dir();
            let mut dir = root;
            let parts: Vec<&str> = path.split('/').collect();
            for d in &parts[..parts.len() - 1] {
                dir = match dir.open_dir(d) {
                    Ok(x) => x,
                    Err(_) => dir.create_dir(d).map_err(err)?,
                };
            }
            let mut f = dir.create_file(parts[parts.len() - 1]).map_err(err)?;
            f.truncate().map_err(err)?;
            f.write_all(data).map_err(err)?;
            f.flush().map_err(err)?;
            drop(f);
            drop(dir);
        }
        fs.unmount().map_err(err)?;
    }
    Ok(buf.into_inner())
}

fn put(buf: &mut [u8], at: usize, b: &[u8]) {
    buf[at..at + b.len()].copy_from_slice(b);
}

/// A GPT header for `my_lba` (1 or the last sector).
fn gpt_header(
    my_lba: u64,
    alt_lba: u64,
    entries_lba: u64,
    last_usable: u64,
    disk: &[u8; 16],
    entries_crc: u32,
) -> Vec<u8> {
    let mut h = vec![0u8; SECTOR as usize];
    put(&mut h, 0, b"EFI PART");
    put(&mut h, 8, &0x0001_0000u32.to_le_bytes());
    put(&mut h, 12, &92u32.to_le_bytes());
    put(&mut h, 24, &my_lba.to_le_bytes());
    put(&mut h, 32, &alt_lba.to_le_bytes());
    put(&mut h, 40, &(2 + ENTRY_SECTORS).to_le_bytes());
    put(&mut h, 48, &last_usable.to_le_bytes());
    put(&mut h, 56, disk);
    put(&mut h, 72, &entries_lba.to_le_bytes());
    put(&mut h, 80, &(ENTRIES as u32).to_le_bytes());
    put(&mut h, 84, &(ENTRY_SIZE as u32).to_le_bytes());
    put(&mut h, 88, &entries_crc.to_le_bytes());
    let crc = crc32fast::hash(&h[..92]);
    put(&mut h, 16, &crc.to_le_bytes());
    h
}

/// Write the raw disk for `image` (a kvm image's bytes) booting with the
/// (encoded) command line `cmdline` to `out` (a new, empty file), with a
/// data partition for each of `data` (the declared disks' names) shaped
/// by `opts`; `seed` is the build id. The disk goes to the file piece by
/// piece (sparse where it is zero), never whole in memory. Returns its size.
pub fn raw_disk(
    out: &std::fs::File,
    image: &[u8],
    cmdline: &str,
    seed: &[u8],
    tmp: &Path,
    data: &[&str],
    opts: &DataOptions,
) -> Result<u64, String> {
    let g = grub(tmp)?;
    let core_sectors = (g.core.len() as u64).div_ceil(SECTOR);
    if !(2..=BIOS_SECTORS).contains(&core_sectors) {
        return Err(format!(
            "GRUB's core.img is {} bytes: it does not fit the BIOS boot partition",
            g.core.len()
        ));
    }
    if cmdline.len() > 4095 {
        return Err(format!(
            "the command line is {} bytes; the kernel takes 4095",
            cmdline.len()
        ));
    }
    let cfg = grub_cfg();
    // The ESP: room for the files and a margin, whole MiB, at least 32 MiB.
    let need = g.efi.len() + image.len() + cfg.len() + (8 << 20);
    let esp_sectors = (need as u64).max(32 << 20).next_multiple_of(1 << 20) / SECTOR;
    let volume_id = u32::from_le_bytes(guid(seed, "volume")[..4].try_into().unwrap());
    let fat = esp(
        esp_sectors,
        volume_id,
        &[
            ("EFI/BOOT/BOOTX64.EFI", &g.efi),
            ("boot/grub/grub.cfg", cfg.as_bytes()),
            ("boot/cmdline", cmdline.as_bytes()),
            ("boot/kernel", image),
        ],
    )?;
    // The declared disks' volumes, opts.size each, after the ESP; one MiB
    // after the last for the backup GPT (whole MiB: clouds want it).
    let data_start = ESP_START + esp_sectors;
    let data_sectors = opts.size / SECTOR;
    let total = data_start + data.len() as u64 * data_sectors + (1 << 20) / SECTOR;
    let last = total - 1;
    let write = |at: u64, b: &[u8]| {
        use std::os::unix::fs::FileExt as _;
        out.write_all_at(b, at * SECTOR)
            .map_err(|e| format!("cannot write the disk: {e}"))
    };
    out.set_len(total * SECTOR)
        .map_err(|e| format!("cannot size the disk to {} bytes: {e}", total * SECTOR))?;
    let mut volumes = Vec::new();
    for (i, name) in data.iter().enumerate() {
        let first = data_start + i as u64 * data_sectors;
        let id = u32::from_le_bytes(
            guid(seed, &format!("volume {name}"))[..4]
                .try_into()
                .unwrap(),
        );
        unikernel_fs::host::create_reproducible_at(
            out,
            first * SECTOR,
            opts.size,
            id,
            opts.from.as_deref(),
            &format!("the data volume \"{name}\""),
        )?;
        volumes.push((*name, first));
    }

    // Protective MBR with GRUB's boot code, which loads core.img's first
    // sector from LBA BIOS_START (the u64 at 0x5c).
    let mut mbr = g.boot.clone();
    put(&mut mbr, 0x5c, &BIOS_START.to_le_bytes());
    mbr[440..446].fill(0);
    put(&mut mbr, 440, &guid(seed, "mbr")[..4]);
    mbr[446..510].fill(0);
    // Entry 1: type 0xEE from LBA 1 over the whole disk (capped at 2^32-1).
    let size = (total - 1).min(0xffff_ffff) as u32;
    put(
        &mut mbr,
        446,
        &[0x00, 0x00, 0x02, 0x00, 0xee, 0xff, 0xff, 0xff],
    );
    put(&mut mbr, 454, &1u32.to_le_bytes());
    put(&mut mbr, 458, &size.to_le_bytes());
    put(&mut mbr, 510, &[0x55, 0xaa]);
    write(0, &mbr)?;

    // core.img: its first sector (diskboot) reads the rest by a blocklist
    // at its end: { u64 start, u16 sectors, u16 segment }.
    let mut core = g.core.clone();
    core.resize((core_sectors * SECTOR) as usize, 0);
    put(&mut core, 0x1f4, &(BIOS_START + 1).to_le_bytes());
    put(&mut core, 0x1fc, &((core_sectors - 1) as u16).to_le_bytes());
    write(BIOS_START, &core)?;
    write(ESP_START, &fat)?;

    // The partition entries.
    let mut entries = vec![0u8; (ENTRIES * ENTRY_SIZE) as usize];
    let mut entry =
        |i: usize, ty: [u8; 16], uniq: [u8; 16], first: u64, last: u64, attrs: u64, name: &str| {
            let e = &mut entries[i * ENTRY_SIZE as usize..(i + 1) * ENTRY_SIZE as usize];
            put(e, 0, &ty);
            put(e, 16, &uniq);
            put(e, 32, &first.to_le_bytes());
            put(e, 40, &last.to_le_bytes());
            put(e, 48, &attrs.to_le_bytes());
            for (k, c) in name.encode_utf16().enumerate().take(36) {
                put(e, 56 + 2 * k, &c.to_le_bytes());
            }
        };
    entry(
        0,
        guid_bytes(BIOS_BOOT_TYPE),
        guid(seed, "bios"),
        BIOS_START,
        BIOS_START + BIOS_SECTORS - 1,
        0,
        "BIOS boot",
    );
    entry(
        1,
        guid_bytes(ESP_TYPE),
        guid(seed, "esp"),
        ESP_START,
        ESP_START + esp_sectors - 1,
        0,
        "EFI system",
    );
    for (i, (name, first)) in volumes.iter().enumerate() {
        entry(
            2 + i,
            unikernel_image::disks::GPT_DATA_TYPE,
            guid(seed, &format!("data {name}")),
            *first,
            first + data_sectors - 1,
            0,
            name,
        );
    }
    let crc = crc32fast::hash(&entries);
    let disk_guid = guid(seed, "disk");
    let last_usable = last - 1 - ENTRY_SECTORS;
    write(1, &gpt_header(1, last, 2, last_usable, &disk_guid, crc))?;
    write(2, &entries)?;
    let backup_entries = last - ENTRY_SECTORS;
    write(backup_entries, &entries)?;
    write(
        last,
        &gpt_header(last, 1, backup_entries, last_usable, &disk_guid, crc),
    )?;
    Ok(total * SECTOR)
}

/// The 512-byte footer that makes a raw disk of `size` bytes a fixed VHD.
pub fn vhd_footer(size: u64, seed: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 512];
    put(&mut f, 0, b"conectix");
    put(&mut f, 8, &2u32.to_be_bytes()); // features: reserved bit
    put(&mut f, 12, &0x0001_0000u32.to_be_bytes()); // format version
    put(&mut f, 16, &u64::MAX.to_be_bytes()); // data offset: none (fixed)
                                              // timestamp (24): 0, for reproducibility
    put(&mut f, 28, b"cunk");
    put(&mut f, 32, &0x0001_0000u32.to_be_bytes());
    put(&mut f, 36, b"Wi2k");
    put(&mut f, 40, &size.to_be_bytes());
    put(&mut f, 48, &size.to_be_bytes());
    // CHS geometry, as the VHD specification computes it.
    let total = (size / 512).min(65535 * 16 * 255);
    let (mut spt, mut heads);
    let mut cth;
    if total >= 65535 * 16 * 63 {
        spt = 255;
        heads = 16;
        cth = total / spt;
    } else {
        spt = 17;
        cth = total / spt;
        heads = cth.div_ceil(1024).max(4);
        if cth >= heads * 1024 || heads > 16 {
            spt = 31;
            heads = 16;
            cth = total / spt;
        }
        if cth >= heads * 1024 {
            spt = 63;
            heads = 16;
            cth = total / spt;
        }
    }
    let cyl = (cth / heads).min(65535) as u16;
    put(&mut f, 56, &cyl.to_be_bytes());
    f[58] = heads as u8;
    f[59] = spt as u8;
    put(&mut f, 60, &2u32.to_be_bytes()); // disk type: fixed
    put(&mut f, 68, &guid(seed, "vhd"));
    let sum: u32 = f.iter().map(|&b| u32::from(b)).sum();
    put(&mut f, 64, &(!sum).to_be_bytes());
    f
}

/// The GCE form: the raw disk at `raw` as `disk.raw` in a gzipped GNU
/// tar at `out` (streamed from the file; reproducible: no timestamps).
pub fn gce(raw: &Path, out: &Path) -> Result<(), String> {
    let err = |e: std::io::Error| format!("writing the GCE tarball {}: {e}", out.display());
    let src =
        std::fs::File::open(raw).map_err(|e| format!("cannot read {}: {e}", raw.display()))?;
    let len = src.metadata().map_err(err)?.len();
    let dst = std::fs::File::create(out).map_err(err)?;
    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(std::io::BufWriter::new(dst), flate2::Compression::default());
    let mut t = tar::Builder::new(gz);
    let mut h = tar::Header::new_gnu();
    h.set_path("disk.raw").map_err(err)?;
    h.set_size(len);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_cksum();
    t.append(&h, std::io::BufReader::new(src)).map_err(err)?;
    let gz = t.into_inner().map_err(err)?;
    gz.finish().map_err(err)?.flush().map_err(err)
}

/// Writes the disk of the kvm image at `image` in `format` (next to it),
/// its data partitions shaped by `data`; returns its path. The disk is
/// written to a sibling file and renamed into place when complete: on an
/// error, a disk already at that path is left as it was.
pub fn write(
    image: &Path,
    cmdline: &str,
    format: DiskFormat,
    data: &DataOptions,
) -> Result<PathBuf, String> {
    let bytes =
        std::fs::read(image).map_err(|e| format!("cannot read {}: {e}", image.display()))?;
    let img = crate::image::Image::parse(&bytes)
        .map_err(|e| format!("{} is not a unikernel image ({e:?})", image.display()))?;
    if img.manifest.platform != unikernel_image::manifest::Platform::Kvm {
        return Err(format!(
            "{} is a {} image: disk images hold kvm images (build with --platform kvm)",
            image.display(),
            img.manifest.platform.name()
        ));
    }
    let tmp = std::env::temp_dir().join(format!("cargo-unikernel-disk-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    // Beside the disk's path (a rename stays on its filesystem).
    let out = disk_path(image, format);
    let mut partial = out.clone().into_os_string();
    partial.push(format!(".partial-{}", std::process::id()));
    let partial = PathBuf::from(partial);
    let result = (|| {
        let declared = crate::diskopt::declared_names(&img.manifest.disks);
        let names: Vec<&str> = declared.iter().map(String::as_str).collect();
        // Raw and VHD: the disk goes straight to its file; qcow2 and GCE
        // convert a raw disk in the temporary directory.
        let raw = match format {
            DiskFormat::Raw | DiskFormat::Vhd => partial.clone(),
            DiskFormat::Qcow2 | DiskFormat::Gce => tmp.join("disk.raw"),
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&raw)
            .map_err(|e| format!("cannot create {}: {e}", raw.display()))?;
        let size = raw_disk(
            &file,
            &bytes,
            cmdline,
            &img.manifest.build_id,
            &tmp,
            &names,
            data,
        )?;
        let write_err = |e: std::io::Error| format!("cannot write {}: {e}", raw.display());
        match format {
            DiskFormat::Raw => {}
            DiskFormat::Vhd => {
                use std::os::unix::fs::FileExt as _;
                file.write_all_at(&vhd_footer(size, &img.manifest.build_id), size)
                    .map_err(write_err)?;
            }
            DiskFormat::Gce => gce(&raw, &partial)?,
            DiskFormat::Qcow2 => {
                let o = Command::new("qemu-img")
                    .args(["convert", "-f", "raw", "-O", "qcow2"])
                    .arg(&raw)
                    .arg(&partial)
                    .output()
                    .map_err(|e| {
                        format!("cannot run qemu-img: {e} (Debian: apt-get install qemu-utils)")
                    })?;
                if !o.status.success() {
                    return Err(format!(
                        "qemu-img convert failed: {}",
                        String::from_utf8_lossy(&o.stderr).trim()
                    ));
                }
            }
        }
        if raw == partial {
            file.sync_all().map_err(write_err)?;
        }
        std::fs::rename(&partial, &out).map_err(|e| {
            format!(
                "cannot rename {} to {}: {e}",
                partial.display(),
                out.display()
            )
        })?;
        Ok(out.clone())
    })();
    if result.is_err() {
        // No half-written disk left behind.
        let _ = std::fs::remove_file(&partial);
    }
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grub_cfg_boots_with_the_command_line_module() {
        let cfg = grub_cfg();
        assert!(
            cfg.contains(
                "\nmultiboot2 /boot/kernel\nmodule2 /boot/cmdline unikernel-cmdline\nboot\n"
            ),
            "{cfg}"
        );
    }

    #[test]
    fn guid_text_to_gpt_bytes() {
        // The ESP type as it lies on disk.
        assert_eq!(
            guid_bytes(ESP_TYPE),
            [
                0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e,
                0xc9, 0x3b
            ]
        );
        assert_eq!(guid(b"id", "x"), guid(b"id", "x"));
        assert_ne!(guid(b"id", "x"), guid(b"id", "y"));
    }

    #[test]
    fn data_sizes_are_whole_mib_a_volume_takes() {
        assert_eq!(parse_data_size("40M").unwrap(), 40 << 20);
        assert_eq!(parse_data_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_data_size("4194304").unwrap(), 4 << 20);
        let e = parse_data_size("2M").unwrap_err();
        assert!(e.contains("too small") && e.contains("4 MiB"), "{e}");
        let e = parse_data_size("4100K").unwrap_err();
        assert!(e.contains("not whole MiB") && e.contains("5M"), "{e}");
        let e = parse_data_size("2T").unwrap_err();
        assert!(e.contains("too large"), "{e}");
        let e = parse_data_size("lots").unwrap_err();
        assert!(e.contains("bad --data-size"), "{e}");
        assert!(parse_data_size("99999999999999999999G").is_err());
    }

    #[test]
    fn data_options_need_emit_disk_and_a_directory() {
        assert_eq!(data_options(false, None, None), Ok(DataOptions::default()));
        assert_eq!(data_options(true, None, None).unwrap().size, DATA_SIZE);
        assert_eq!(
            data_options(true, Some(40 << 20), None).unwrap().size,
            40 << 20
        );
        let e = data_options(false, Some(40 << 20), None).unwrap_err();
        assert!(
            e.contains("--data-size") && e.contains("--emit disk"),
            "{e}"
        );
        let d = tempfile::tempdir().unwrap();
        let e = data_options(false, None, Some(d.path())).unwrap_err();
        assert!(
            e.contains("--data-from") && e.contains("--emit disk"),
            "{e}"
        );
        let o = data_options(true, None, Some(d.path())).unwrap();
        assert_eq!(o.from.as_deref(), Some(d.path()));
        let file = d.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let e = data_options(true, None, Some(&file)).unwrap_err();
        assert!(e.contains("not a directory"), "{e}");
    }

    #[test]
    fn a_failing_write_leaves_an_existing_disk_alone() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("app");
        let kvm = crate::testutil::image_for(unikernel_image::manifest::Platform::Kvm);
        std::fs::write(&image, kvm).unwrap();
        let disk = disk_path(&image, DiskFormat::Raw);
        std::fs::write(&disk, b"the user's disk").unwrap();
        // Refused once the write began: a command line longer than the
        // kernel takes (or, without GRUB here, GRUB's files missing).
        let long = "x".repeat(5000);
        let e = write(&image, &long, DiskFormat::Raw, &DataOptions::default()).unwrap_err();
        assert_eq!(std::fs::read(&disk).unwrap(), b"the user's disk", "{e}");
        // And nothing else left beside it.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2, "{e}");
    }

    #[test]
    fn vhd_footer_checksums() {
        let f = &vhd_footer(8 << 20, b"id");
        assert_eq!(&f[..8], b"conectix");
        let stored = u32::from_be_bytes(f[64..68].try_into().unwrap());
        let sum: u32 = f
            .iter()
            .enumerate()
            .filter(|(i, _)| !(64..68).contains(i))
            .map(|(_, &b)| u32::from(b))
            .sum();
        assert_eq!(stored, !sum);
        assert_eq!(u64::from_be_bytes(f[48..56].try_into().unwrap()), 8 << 20);
    }
}
