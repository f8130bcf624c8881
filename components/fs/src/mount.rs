//! Checking a device and mounting the volume on it: is it a volume of
//! ours (a FAT boot sector whose volume is followed by our journal
//! header), is it whole, replay its journal, then the lamfat mount.

use crate::cache::{self, BlockCache};
use crate::fatio::NowFn;
use crate::journal::{Header, HeaderError, SECTOR, SECTORS_PER_BLOCK};
use crate::volume::FatVolume;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec;
use unikernel_runtime::device::BlockDevice;
use unikernel_runtime::errno::Errno;

/// Why a device cannot be mounted: one line for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeError(pub String);

impl core::fmt::Display for VolumeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.0)
    }
}

fn err(s: String) -> VolumeError {
    VolumeError(s)
}

fn io(e: Errno) -> VolumeError {
    err(format!(
        "device error while reading the volume ({})",
        unikernel_runtime::errno::name(e)
    ))
}

fn le16(b: &[u8]) -> u64 {
    u64::from(u16::from_le_bytes([b[0], b[1]]))
}

fn le32(b: &[u8]) -> u64 {
    u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// The FAT volume's geometry as its boot sector gives it.
pub struct BootInfo {
    /// Sectors of the FAT volume.
    pub total_sectors: u64,
    /// Bytes of the reserved region (boot sector, FSInfo, backup).
    pub reserved_bytes: u64,
}

/// Parse a FAT boot sector (`None`: not one).
pub fn parse_boot(s: &[u8]) -> Option<BootInfo> {
    if s.len() < SECTOR || s[510] != 0x55 || s[511] != 0xAA {
        return None;
    }
    let bps = le16(&s[11..13]);
    let spc = s[13];
    let reserved = le16(&s[14..16]);
    let fats = s[16];
    let total16 = le16(&s[19..21]);
    let total32 = le32(&s[32..36]);
    let total = if total16 != 0 { total16 } else { total32 };
    if bps != SECTOR as u64 || spc == 0 || !spc.is_power_of_two() || reserved == 0 || fats == 0 {
        return None;
    }
    if total == 0 {
        return None;
    }
    Some(BootInfo {
        total_sectors: total,
        reserved_bytes: reserved * SECTOR as u64,
    })
}

/// Check the volume on `dev` and mount it (`writable`: read-write). The
/// error is the line after `unikernel: disk "NAME": `.
pub fn open_volume(
    dev: Arc<dyn BlockDevice>,
    writable: bool,
    dev_id: u64,
    now: NowFn,
) -> Result<FatVolume, VolumeError> {
    let sectors = dev.sectors();
    let bytes = sectors * SECTOR as u64;
    if dev.sector_size() != SECTOR {
        return Err(err(format!(
            "{}-byte sectors; volumes of ours need 512",
            dev.sector_size()
        )));
    }
    if sectors < 16 {
        return Err(err(format!(
            "too small ({bytes} bytes) to hold a volume; create one with `cargo unikernel disk create`"
        )));
    }
    let mut first = vec![0u8; 4 * SECTOR];
    dev.read(0, &mut first).map_err(io)?;
    let Some(boot) = parse_boot(&first[..SECTOR]) else {
        if first.iter().all(|&b| b == 0) {
            return Err(err(String::from(
                "not a volume of ours: unformatted (all zeros); create one with `cargo unikernel disk create`",
            )));
        }
        // ext2/3/4: superblock at 1024, magic 0xEF53 at offset 56 in it.
        if sectors >= 4 && first[1024 + 56] == 0x53 && first[1024 + 57] == 0xEF {
            return Err(err(String::from(
                "not a volume of ours: it holds an ext2/3/4 filesystem; create one with `cargo unikernel disk create`",
            )));
        }
        return Err(err(String::from(
            "not a volume of ours: no FAT boot sector; create one with `cargo unikernel disk create`",
        )));
    };
    let fat = boot.total_sectors;
    if fat % SECTORS_PER_BLOCK != 0 || fat + 2 > sectors {
        if fat > sectors {
            return Err(err(format!(
                "truncated: the FAT volume alone is {} bytes but the device has {bytes}",
                fat * SECTOR as u64
            )));
        }
        return Err(err(String::from(
            "not a volume of ours: a FAT volume without the unikernel journal (made by another tool); create one with `cargo unikernel disk create`",
        )));
    }
    let mut two = vec![0u8; 2 * SECTOR];
    dev.read(fat, &mut two).map_err(io)?;
    let header = match Header::decode_pair(&two) {
        Ok(h) => h,
        Err(HeaderError::NoMagic) => {
            return Err(err(String::from(
                "not a volume of ours: a FAT volume without the unikernel journal (made by another tool); create one with `cargo unikernel disk create`",
            )))
        }
        Err(HeaderError::Version(v)) => {
            return Err(err(format!(
                "journal layout version {v}, this kernel reads version {}",
                crate::journal::VERSION
            )))
        }
        Err(HeaderError::Corrupt) => {
            return Err(err(String::from(
                "journal corrupt: both copies of its header fail their checksum",
            )))
        }
    };
    if header.fat_sectors != fat {
        return Err(err(format!(
            "journal corrupt: its header says the FAT volume has {} sectors, the boot sector {fat}",
            header.fat_sectors
        )));
    }
    if header.end_sector() > sectors {
        return Err(err(format!(
            "truncated: the volume is {} bytes but the device has {bytes}",
            header.end_sector() * SECTOR as u64
        )));
    }
    let (header, replayed) = cache::replay(&*dev, header, writable).map_err(|e| {
        if e == unikernel_runtime::errno::EINVAL {
            err(String::from(
                "journal corrupt: a committed transaction names blocks outside the volume",
            ))
        } else {
            io(e)
        }
    })?;
    let cache = BlockCache::new(dev, header, writable, replayed);
    FatVolume::new(cache, boot.reserved_bytes, !writable, dev_id, now).map_err(|e| {
        err(format!(
            "the FAT structures are corrupt ({}); check it with `fsck.fat -n`",
            unikernel_runtime::errno::name(e)
        ))
    })
}
