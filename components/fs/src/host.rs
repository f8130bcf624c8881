//! Host side (feature `std`): create a volume of ours in a file, the
//! backend of `cargo unikernel disk create`, and a [`BlockDevice`] over a
//! file for tools and tests.
//!
//! A volume is formatted by lamfat's own formatter on the first part of
//! the file, seeded through lamfat (the same code the guest runs), the
//! FSInfo hints set to "unknown" (see `fatio.rs`), and the journal header
//! written after the FAT volume. No root, no loop devices, no mkfs.

use crate::fatio::NowFn;
use crate::journal::{Header, BLOCK, SECTOR, SECTORS_PER_BLOCK};
use std::fs::{File, OpenOptions};
use std::io::{Read as _, SeekFrom as StdSeek};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use unikernel_runtime::device::{check_request, BlockDevice};
use unikernel_runtime::errno::*;

/// The smallest volume `create` makes.
pub const MIN_SIZE: u64 = 4 << 20;
/// The largest (FAT32 with 32 KiB clusters addresses 2 TiB; we stop well below).
pub const MAX_SIZE: u64 = 1 << 40;

/// A block device over a host file (sector 512), or over `sectors`
/// sectors of it from byte `base` (a volume inside a disk being written).
pub struct FileDevice {
    file: Mutex<File>,
    base: u64,
    sectors: u64,
    read_only: bool,
}

impl FileDevice {
    pub fn open(path: &Path, read_only: bool) -> std::io::Result<FileDevice> {
        let file = OpenOptions::new().read(true).write(!read_only).open(path)?;
        let len = file.metadata()?.len();
        Ok(FileDevice {
            file: Mutex::new(file),
            base: 0,
            sectors: len / SECTOR as u64,
            read_only,
        })
    }
}

impl BlockDevice for FileDevice {
    fn name(&self) -> &str {
        "file"
    }
    fn sectors(&self) -> u64 {
        self.sectors
    }
    fn read_only(&self) -> bool {
        self.read_only
    }
    fn read(&self, sector: u64, buf: &mut [u8]) -> Result<(), Errno> {
        check_request(self.sectors, sector, buf.len())?;
        let f = self.file.lock().map_err(|_| EIO)?;
        f.read_exact_at(buf, self.base + sector * SECTOR as u64)
            .map_err(|_| EIO)
    }
    fn write(&self, sector: u64, buf: &[u8]) -> Result<(), Errno> {
        if self.read_only {
            return Err(EROFS);
        }
        check_request(self.sectors, sector, buf.len())?;
        let f = self.file.lock().map_err(|_| EIO)?;
        f.write_all_at(buf, self.base + sector * SECTOR as u64)
            .map_err(|_| EIO)
    }
    fn flush(&self) -> Result<(), Errno> {
        let f = self.file.lock().map_err(|_| EIO)?;
        f.sync_data().map_err(|_| EIO)
    }
}

/// How `create` lays a volume of `size` bytes out: (FAT sectors, journal blocks).
pub fn layout(size: u64) -> Result<(u64, u32), String> {
    if size < MIN_SIZE {
        return Err(format!(
            "size {size} bytes is too small: a volume needs at least {} MiB",
            MIN_SIZE >> 20
        ));
    }
    if size > MAX_SIZE {
        return Err(format!("size {size} bytes is too large: at most 1 TiB"));
    }
    if !size.is_multiple_of(SECTOR as u64) {
        return Err(format!("size {size} bytes is not a multiple of 512"));
    }
    // A 32nd of the volume, between 1 MiB and 32 MiB.
    let journal_bytes = (size / 32).clamp(1 << 20, 32 << 20) / BLOCK as u64 * BLOCK as u64;
    let journal_blocks = (journal_bytes / BLOCK as u64) as u32;
    let fat_sectors =
        (size - journal_bytes) / SECTOR as u64 / SECTORS_PER_BLOCK * SECTORS_PER_BLOCK;
    Ok((fat_sectors, journal_blocks))
}

/// Progress of a seed copy: (bytes copied so far, bytes in total).
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);

/// Write a formatted volume of ours of `size` bytes to `path` (the file
/// is created or truncated), copying the tree under `seed` into it.
pub fn create(path: &Path, size: u64, seed: Option<&Path>) -> Result<(), String> {
    create_with_progress(path, size, seed, &mut |_, _| {})
}

/// [`create`], calling `progress` while the seed is copied.
pub fn create_with_progress(
    path: &Path,
    size: u64,
    seed: Option<&Path>,
    progress: Progress,
) -> Result<(), String> {
    layout(size)?;
    let show = path.display();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| format!("cannot create {show}: {e}"))?;
    file.set_len(size)
        .map_err(|e| format!("cannot size {show} to {size} bytes: {e}"))?;
    let how = How {
        volume_id: volume_id(),
        now: unix_now,
        host_mtimes: true,
    };
    create_inner(&file, 0, size, seed, progress, &how, &show.to_string())?;
    file.sync_all()
        .map_err(|e| format!("cannot write {show}: {e}"))
}

/// Every timestamp of a reproducible volume: 1980-01-01 00:00:00 UTC, the
/// first FAT can hold.
pub const FIXED_TIME: i64 = 315_532_800;

fn fixed_now() -> i64 {
    FIXED_TIME
}

/// A volume of `size` bytes written into `file` at byte `offset` (the file
/// already that long), whose FAT volume id is `volume_id`, holding a copy
/// of the tree under `seed` if given: the same arguments and the same
/// seed contents give the same bytes, every timestamp being
/// [`FIXED_TIME`] (the seed's modification times are not kept). The
/// bootable disk's data partitions. `what` names the volume in errors.
pub fn create_reproducible_at(
    file: &File,
    offset: u64,
    size: u64,
    volume_id: u32,
    seed: Option<&Path>,
    what: &str,
) -> Result<(), String> {
    layout(size)?;
    if !offset.is_multiple_of(SECTOR as u64) {
        return Err(format!("{what}: offset {offset} is not whole sectors"));
    }
    let len = file
        .metadata()
        .map_err(|e| format!("cannot read {what}: {e}"))?
        .len();
    if offset.checked_add(size).is_none_or(|end| end > len) {
        return Err(format!(
            "{what}: {size} bytes at {offset} do not fit its file of {len} bytes"
        ));
    }
    let how = How {
        volume_id,
        now: fixed_now,
        host_mtimes: false,
    };
    create_inner(file, offset, size, seed, &mut |_, _| {}, &how, what)
}

/// How a volume is made: its FAT volume id, the clock for the seed's
/// directory entries, and whether copied files keep the host's mtimes.
struct How {
    volume_id: u32,
    now: NowFn,
    host_mtimes: bool,
}

/// Format `size` bytes of `file` from byte `base` as a volume and copy
/// the seed in.
fn create_inner(
    file: &File,
    base: u64,
    size: u64,
    seed: Option<&Path>,
    progress: Progress,
    how: &How,
    show: &str,
) -> Result<(), String> {
    let (fat_sectors, journal_blocks) = layout(size)?;
    let fat_sectors = format_aligned(file, base, fat_sectors, how.volume_id)
        .map_err(|e| format!("cannot format {show}: {e}"))?;
    // The journal header after the FAT volume.
    let header = Header {
        fat_sectors,
        journal_blocks,
        checkpointed: 0,
    };
    let h = header.encode();
    let at = base + fat_sectors * SECTOR as u64;
    file.write_all_at(&h, at)
        .and_then(|_| file.write_all_at(&h, at + SECTOR as u64))
        .map_err(|e| format!("cannot write {show}: {e}"))?;
    set_fsinfo_unknown(file, base).map_err(|e| format!("cannot write {show}: {e}"))?;
    if let Some(seed) = seed {
        let dev: Arc<dyn BlockDevice> = Arc::new(FileDevice {
            file: Mutex::new(
                file.try_clone()
                    .map_err(|e| format!("cannot open {show}: {e}"))?,
            ),
            base,
            sectors: size / SECTOR as u64,
            read_only: false,
        });
        let vol = crate::open_volume(dev, true, 0, how.now).map_err(|e| format!("{show}: {e}"))?;
        let total = tree_bytes(seed).map_err(|e| format!("cannot read {}: {e}", seed.display()))?;
        let mut done = 0;
        copy_tree(
            &vol,
            seed,
            "",
            (&mut done, total),
            progress,
            how.host_mtimes,
        )?;
        use unikernel_runtime::fs::vfs::Filesystem;
        vol.sync()
            .map_err(|e| format!("cannot write {show}: {}", name(e)))?;
    }
    Ok(())
}

/// Format a FAT volume of at most `fat_sectors` sectors at the start of
/// `file` whose data region (the clusters) starts on a 4 KiB boundary, so
/// every cluster is whole blocks of the block cache and writing one never
/// has to read the blocks it straddles first. lamfat picks the FAT size
/// itself; the knobs are the FAT12/16 root directory's size (one sector
/// per 16 entries) and, for FAT32, the volume's size in 8-sector steps.
/// Returns the sectors the volume got (what the journal follows). The
/// volume starts at byte `base` of `file`.
fn format_aligned(file: &File, base: u64, fat_sectors: u64, volume_id: u32) -> Result<u64, String> {
    let mut sectors = fat_sectors;
    let mut last = 0;
    for _ in 0..8 {
        // FAT12/16: the root directory's size moves the data region by a
        // sector per 16 entries.
        for root_entries in (400u16..=512).rev().step_by(16) {
            format_once(file, base, sectors, root_entries, volume_id)?;
            let (start, fat32, cluster_sectors) =
                data_start(file, base).map_err(|e| e.to_string())?;
            if start.is_multiple_of(SECTORS_PER_BLOCK) {
                return Ok(sectors);
            }
            last = start;
            if fat32 {
                // FAT32 has no fixed root directory: a smaller volume (by one
                // FAT sector's worth of clusters, 128) shrinks each FAT by a
                // sector.
                sectors -= (128 * cluster_sectors).next_multiple_of(SECTORS_PER_BLOCK);
                break;
            }
        }
    }
    Err(format!(
        "no aligned layout found (the data region starts at sector {last})"
    ))
}

fn format_once(
    file: &File,
    base: u64,
    sectors: u64,
    root_entries: u16,
    volume_id: u32,
) -> Result<(), String> {
    let mut part = Part {
        file,
        base,
        pos: 0,
        len: sectors * SECTOR as u64,
    };
    let label = *b"UNIKERNEL  ";
    lamfat::format_volume(
        &mut lamfat::StdIoWrapper::new(&mut part),
        lamfat::FormatVolumeOptions::new()
            .volume_label(label)
            .volume_id(volume_id)
            .max_root_dir_entries(root_entries),
    )
    .map_err(|e| e.to_string())
}

/// The first sector of the data region, whether the volume is FAT32 and
/// its sectors per cluster, from the boot sector's BPB.
fn data_start(file: &File, base: u64) -> std::io::Result<(u64, bool, u64)> {
    let mut b = [0u8; SECTOR];
    file.read_exact_at(&mut b, base)?;
    let u16_at = |i: usize| u64::from(u16::from_le_bytes([b[i], b[i + 1]]));
    let reserved = u16_at(14);
    let fats = u64::from(b[16]);
    let root_entries = u16_at(17);
    let fat16 = u16_at(22);
    let fat_size = if fat16 != 0 {
        fat16
    } else {
        u64::from(u32::from_le_bytes([b[36], b[37], b[38], b[39]]))
    };
    Ok((
        reserved + fats * fat_size + (root_entries * 32).div_ceil(SECTOR as u64),
        fat16 == 0,
        u64::from(b[13]).max(1),
    ))
}

fn volume_id() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (t.as_secs() as u32) ^ t.subsec_nanos().rotate_left(16)
}

/// Seconds since the epoch, for directory entries made on the host.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// FAT32's FSInfo: free count and next free "unknown" (0xFFFFFFFF).
fn set_fsinfo_unknown(file: &File, base: u64) -> std::io::Result<()> {
    let mut boot = [0u8; SECTOR];
    file.read_exact_at(&mut boot, base)?;
    let total16 = u16::from_le_bytes([boot[19], boot[20]]);
    let fat16_size = u16::from_le_bytes([boot[22], boot[23]]);
    if total16 != 0 || fat16_size != 0 {
        return Ok(()); // FAT12/16: no FSInfo
    }
    let fsinfo = u64::from(u16::from_le_bytes([boot[48], boot[49]]));
    let backup = u64::from(u16::from_le_bytes([boot[50], boot[51]]));
    for s in [fsinfo, backup + fsinfo] {
        if s == 0 || s == 0xFFFF {
            continue;
        }
        let mut sec = [0u8; SECTOR];
        file.read_exact_at(&mut sec, base + s * SECTOR as u64)?;
        if sec[0..4] != [0x52, 0x52, 0x61, 0x41] {
            continue;
        }
        sec[488..496].fill(0xFF);
        file.write_all_at(&sec, base + s * SECTOR as u64)?;
    }
    Ok(())
}

fn tree_bytes(dir: &Path) -> std::io::Result<u64> {
    let mut n = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let t = e.file_type()?;
        if t.is_dir() {
            n += tree_bytes(&e.path())?;
        } else if t.is_file() {
            n += e.metadata()?.len();
        }
    }
    Ok(n)
}

/// Copy the tree under `dir` to `at` in `vol`; `count` is (bytes copied
/// so far, bytes in all) for `progress`; `host_mtimes`: files keep the
/// host's modification times (else they get the volume's clock).
fn copy_tree(
    vol: &crate::FatVolume,
    dir: &Path,
    at: &str,
    count: (&mut u64, u64),
    progress: Progress,
    host_mtimes: bool,
) -> Result<(), String> {
    let (done, total) = count;
    use unikernel_runtime::fs::vfs::{Filesystem, OpenFlags};
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .and_then(|r| r.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        let name = e.file_name();
        let Some(name) = name.to_str() else {
            return Err(format!("{}: the name is not UTF-8", p.display()));
        };
        let inside = if at.is_empty() {
            name.to_string()
        } else {
            format!("{at}/{name}")
        };
        let t = e
            .file_type()
            .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
        let fail = |e: Errno| {
            format!(
                "cannot copy {} into the volume: {}",
                p.display(),
                name_of(e)
            )
        };
        if t.is_dir() {
            vol.mkdir(&inside, 0o755).map_err(fail)?;
            copy_tree(vol, &p, &inside, (&mut *done, total), progress, host_mtimes)?;
        } else if t.is_file() {
            let f = vol
                .open(
                    &inside,
                    OpenFlags {
                        write: true,
                        create: true,
                        exclusive: true,
                        ..OpenFlags::default()
                    },
                )
                .map_err(fail)?;
            let mut src =
                File::open(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = src
                    .read(&mut buf)
                    .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
                if n == 0 {
                    break;
                }
                let mut off = 0;
                while off < n {
                    off += f.write(&buf[off..n]).map_err(fail)?;
                }
                *done += n as u64;
                progress(*done, total);
            }
            if let Some(m) = host_mtimes
                .then(|| e.metadata().and_then(|m| m.modified()).ok())
                .flatten()
            {
                if let Ok(d) = m.duration_since(std::time::UNIX_EPOCH) {
                    let ts = unikernel_runtime::fs::vfs::Timespec {
                        sec: d.as_secs() as i64,
                        nsec: 0,
                    };
                    f.set_times(None, Some(ts)).map_err(fail)?;
                }
            }
        } else {
            return Err(format!(
                "{}: only files and directories can go into a volume (FAT has no links or devices)",
                p.display()
            ));
        }
    }
    Ok(())
}

fn name_of(e: Errno) -> &'static str {
    name(e)
}

/// `len` bytes of a file from byte `base`, as a seekable stream (lamfat
/// formats what it is given; the journal lives after it).
struct Part<'a> {
    file: &'a File,
    base: u64,
    pos: u64,
    len: u64,
}

impl std::io::Read for Part<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.len.saturating_sub(self.pos)) as usize;
        let n = self.file.read_at(&mut buf[..n], self.base + self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl std::io::Write for Part<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.len.saturating_sub(self.pos)) as usize;
        let n = self.file.write_at(&buf[..n], self.base + self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl std::io::Seek for Part<'_> {
    fn seek(&mut self, pos: StdSeek) -> std::io::Result<u64> {
        let new = match pos {
            StdSeek::Start(x) => Some(x),
            StdSeek::End(d) => self.len.checked_add_signed(d),
            StdSeek::Current(d) => self.pos.checked_add_signed(d),
        };
        match new {
            Some(p) => {
                self.pos = p;
                Ok(p)
            }
            None => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "seek before the start",
            )),
        }
    }
}
