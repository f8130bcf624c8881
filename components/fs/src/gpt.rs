//! Data volumes inside a GPT disk: the bootable disk of `cargo unikernel
//! build --emit disk` carries each declared disk as a partition of type
//! [`GPT_DATA_TYPE`] named after it. A device that holds a valid GPT is
//! never a volume itself: [`expand`] replaces it by its data partitions
//! (none, for a boot disk without data), each a [`Partition`] labelled with
//! its name, so the boot partitions are never mounted or written.
//!
//! Everything read from the disk is checked: the primary header's
//! signature, size and CRC, the entry array's place, size and CRC, and
//! every data partition's range against the device and the header's usable
//! range. A disk whose GPT fails a check is left as it was (a whole-device
//! volume, which the mount then checks as usual).

use crate::crc::crc32;
use crate::journal::{le32, le64};
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use unikernel_image::disks::{check_name, GPT_DATA_TYPE};
use unikernel_runtime::device::{check_request, BlockDevice};
use unikernel_runtime::errno::Errno;

const SECTOR: usize = 512;
/// Entry arrays larger than this are not ours (ours: 128 x 128 bytes).
const MAX_ENTRY_BYTES: usize = 1 << 20;

/// One data partition found in a GPT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataPart {
    /// The partition's name: the declared disk it holds.
    pub name: String,
    pub first: u64,
    pub sectors: u64,
}

/// The data partitions of `dev` when it holds a valid GPT (`Some`, maybe
/// empty), `None` when it does not (or cannot be read).
pub fn data_partitions(dev: &dyn BlockDevice) -> Option<Vec<DataPart>> {
    if dev.sector_size() != SECTOR || dev.sectors() < 3 {
        return None;
    }
    let mut h = vec![0u8; SECTOR];
    dev.read(1, &mut h).ok()?;
    if &h[0..8] != b"EFI PART" {
        return None;
    }
    let header_size = le32(&h[12..]) as usize;
    if !(92..=SECTOR).contains(&header_size) {
        return None;
    }
    let stored = le32(&h[16..]);
    let mut copy = h[..header_size].to_vec();
    copy[16..20].fill(0);
    if crc32(&copy) != stored || le64(&h[24..]) != 1 {
        return None;
    }
    let first_usable = le64(&h[40..]);
    let last_usable = le64(&h[48..]);
    let entries_lba = le64(&h[72..]);
    let count = le32(&h[80..]) as usize;
    let entry_size = le32(&h[84..]) as usize;
    let entries_crc = le32(&h[88..]);
    if entry_size < 128 || !entry_size.is_multiple_of(8) {
        return None;
    }
    let bytes = count.checked_mul(entry_size)?;
    if bytes == 0 || bytes > MAX_ENTRY_BYTES || last_usable >= dev.sectors() {
        return None;
    }
    let span = bytes.div_ceil(SECTOR);
    match entries_lba.checked_add(span as u64) {
        Some(end) if entries_lba >= 2 && end <= dev.sectors() => {}
        _ => return None,
    }
    let mut entries = vec![0u8; span * SECTOR];
    dev.read(entries_lba, &mut entries).ok()?;
    if crc32(&entries[..bytes]) != entries_crc {
        return None;
    }
    let mut found = Vec::new();
    for e in entries[..bytes].chunks_exact(entry_size) {
        if e[0..16] != GPT_DATA_TYPE {
            continue;
        }
        let (first, last) = (le64(&e[32..]), le64(&e[40..]));
        if first < first_usable || last > last_usable || first > last {
            continue;
        }
        let units: Vec<u16> = e[56..128]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        let Ok(name) = String::from_utf16(&units) else {
            continue;
        };
        if check_name(&name).is_err() || found.iter().any(|p: &DataPart| p.name == name) {
            continue;
        }
        found.push(DataPart {
            name,
            first,
            sectors: last - first + 1,
        });
    }
    Some(found)
}

/// A data partition as a block device of its own, labelled with its name.
pub struct Partition {
    dev: Arc<dyn BlockDevice>,
    name: String,
    label: String,
    first: u64,
    sectors: u64,
}

impl Partition {
    fn check(&self, sector: u64, len: usize) -> Result<u64, Errno> {
        check_request(self.sectors, sector, len)?;
        Ok(self.first + sector)
    }
}

impl BlockDevice for Partition {
    fn name(&self) -> &str {
        &self.name
    }
    fn label(&self) -> Option<&str> {
        Some(&self.label)
    }
    fn sectors(&self) -> u64 {
        self.sectors
    }
    fn read_only(&self) -> bool {
        self.dev.read_only()
    }
    fn can_flush(&self) -> bool {
        self.dev.can_flush()
    }
    fn read(&self, sector: u64, buf: &mut [u8]) -> Result<(), Errno> {
        let at = self.check(sector, buf.len())?;
        self.dev.read(at, buf)
    }
    fn write(&self, sector: u64, buf: &[u8]) -> Result<(), Errno> {
        let at = self.check(sector, buf.len())?;
        self.dev.write(at, buf)
    }
    fn flush(&self) -> Result<(), Errno> {
        self.dev.flush()
    }
}

/// `devs` with every unlabelled device that holds a GPT replaced by its
/// data partitions (labelled devices are the user's explicit choice and
/// stay as they are).
pub fn expand(devs: Vec<Arc<dyn BlockDevice>>) -> Vec<Arc<dyn BlockDevice>> {
    let mut out: Vec<Arc<dyn BlockDevice>> = Vec::new();
    for dev in devs {
        let parts = match dev.label() {
            None => data_partitions(&*dev),
            Some(_) => None,
        };
        match parts {
            None => out.push(dev),
            Some(parts) => {
                for (i, p) in parts.into_iter().enumerate() {
                    out.push(Arc::new(Partition {
                        name: format!("{}p{}", dev.name(), i + 1),
                        label: p.name,
                        first: p.first,
                        sectors: p.sectors,
                        dev: dev.clone(),
                    }));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use unikernel_runtime::errno::EINVAL;
    extern crate std;

    /// A disk in memory.
    struct Mem(Mutex<Vec<u8>>, Option<&'static str>);
    impl BlockDevice for Mem {
        fn name(&self) -> &str {
            "mem"
        }
        fn label(&self) -> Option<&str> {
            self.1
        }
        fn sectors(&self) -> u64 {
            (self.0.lock().unwrap().len() / SECTOR) as u64
        }
        fn read_only(&self) -> bool {
            false
        }
        fn read(&self, sector: u64, buf: &mut [u8]) -> Result<(), Errno> {
            let d = self.0.lock().unwrap();
            let at = sector as usize * SECTOR;
            buf.copy_from_slice(d.get(at..at + buf.len()).ok_or(EINVAL)?);
            Ok(())
        }
        fn write(&self, sector: u64, buf: &[u8]) -> Result<(), Errno> {
            let mut d = self.0.lock().unwrap();
            let at = sector as usize * SECTOR;
            d.get_mut(at..at + buf.len())
                .ok_or(EINVAL)?
                .copy_from_slice(buf);
            Ok(())
        }
        fn flush(&self) -> Result<(), Errno> {
            Ok(())
        }
    }

    const TOTAL: usize = 4096;

    /// A 2 MiB disk: a GPT with the given (type, first, last, name) entries.
    fn disk(parts: &[([u8; 16], u64, u64, &str)]) -> Vec<u8> {
        let mut d = vec![0u8; TOTAL * SECTOR];
        let mut entries = vec![0u8; 128 * 128];
        for (i, (ty, first, last, name)) in parts.iter().enumerate() {
            let e = &mut entries[i * 128..(i + 1) * 128];
            e[0..16].copy_from_slice(ty);
            e[16] = 1 + i as u8;
            e[32..40].copy_from_slice(&first.to_le_bytes());
            e[40..48].copy_from_slice(&last.to_le_bytes());
            for (k, u) in name.encode_utf16().enumerate() {
                e[56 + 2 * k..58 + 2 * k].copy_from_slice(&u.to_le_bytes());
            }
        }
        d[2 * SECTOR..2 * SECTOR + entries.len()].copy_from_slice(&entries);
        let h = &mut d[SECTOR..2 * SECTOR];
        h[0..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&1u64.to_le_bytes());
        h[32..40].copy_from_slice(&(TOTAL as u64 - 1).to_le_bytes());
        h[40..48].copy_from_slice(&34u64.to_le_bytes());
        h[48..56].copy_from_slice(&(TOTAL as u64 - 34).to_le_bytes());
        h[72..80].copy_from_slice(&2u64.to_le_bytes());
        h[80..84].copy_from_slice(&128u32.to_le_bytes());
        h[84..88].copy_from_slice(&128u32.to_le_bytes());
        h[88..92].copy_from_slice(&crc32(&entries).to_le_bytes());
        let c = crc32(&h[..92]);
        h[16..20].copy_from_slice(&c.to_le_bytes());
        d
    }

    const ESP: [u8; 16] = [7; 16];

    #[test]
    fn finds_named_data_partitions_and_skips_others() {
        let d = disk(&[
            (ESP, 34, 99, "EFI system"),
            (GPT_DATA_TYPE, 100, 1099, "data"),
            (GPT_DATA_TYPE, 1100, 1199, "logs"),
        ]);
        let m = Mem(Mutex::new(d), None);
        let p = data_partitions(&m).unwrap();
        assert_eq!(
            p,
            [
                DataPart {
                    name: "data".into(),
                    first: 100,
                    sectors: 1000
                },
                DataPart {
                    name: "logs".into(),
                    first: 1100,
                    sectors: 100
                },
            ]
        );
    }

    #[test]
    fn bad_entries_are_skipped() {
        let d = disk(&[
            (GPT_DATA_TYPE, 10, 99, "early"),      // before the usable range
            (GPT_DATA_TYPE, 100, 99_999, "huge"),  // past it
            (GPT_DATA_TYPE, 200, 100, "reversed"), // last < first
            (GPT_DATA_TYPE, 100, 199, "Bad Name"), // not a disk name
            (GPT_DATA_TYPE, 200, 299, "data"),
            (GPT_DATA_TYPE, 300, 399, "data"), // a second "data"
        ]);
        let m = Mem(Mutex::new(d), None);
        let p = data_partitions(&m).unwrap();
        assert_eq!(
            p,
            [DataPart {
                name: "data".into(),
                first: 200,
                sectors: 100
            }]
        );
    }

    #[test]
    fn a_broken_gpt_is_not_a_gpt() {
        assert_eq!(
            data_partitions(&Mem(Mutex::new(vec![0; TOTAL * SECTOR]), None)),
            None
        );
        // A flipped byte in the header, then in the entries.
        for at in [SECTOR + 40, 2 * SECTOR + 5] {
            let mut d = disk(&[(GPT_DATA_TYPE, 100, 199, "data")]);
            d[at] ^= 1;
            assert_eq!(
                data_partitions(&Mem(Mutex::new(d), None)),
                None,
                "byte {at}"
            );
        }
        // An entry array said to be past the end of the disk.
        let mut d = disk(&[]);
        d[SECTOR + 72..SECTOR + 80].copy_from_slice(&(TOTAL as u64 - 2).to_le_bytes());
        d[SECTOR + 16..SECTOR + 20].fill(0);
        let c = crc32(&d[SECTOR..SECTOR + 92]);
        d[SECTOR + 16..SECTOR + 20].copy_from_slice(&c.to_le_bytes());
        assert_eq!(data_partitions(&Mem(Mutex::new(d), None)), None);
    }

    #[test]
    fn a_partition_is_bounded_and_offset() {
        let d = disk(&[(GPT_DATA_TYPE, 100, 199, "data")]);
        let m: Arc<dyn BlockDevice> = Arc::new(Mem(Mutex::new(d), None));
        let labelled: Arc<dyn BlockDevice> =
            Arc::new(Mem(Mutex::new(vec![0; 8 * SECTOR]), Some("x")));
        let out = expand(vec![m.clone(), labelled]);
        assert_eq!(out.len(), 2);
        let p = &out[0];
        assert_eq!(
            (p.label(), p.name(), p.sectors()),
            (Some("data"), "memp1", 100)
        );
        assert_eq!(out[1].label(), Some("x"));
        p.write(0, &[0xab; SECTOR]).unwrap();
        let mut b = [0u8; SECTOR];
        m.read(100, &mut b).unwrap();
        assert_eq!(b, [0xab; SECTOR]);
        assert_eq!(p.write(99, &[0; 2 * SECTOR]), Err(EINVAL));
        assert_eq!(p.read(u64::MAX, &mut b), Err(EINVAL));
        assert_eq!(p.read(0, &mut b[..100]), Err(EINVAL));
        // A GPT disk without data partitions is not a volume at all.
        let bare: Arc<dyn BlockDevice> = Arc::new(Mem(Mutex::new(disk(&[])), None));
        assert!(expand(vec![bare]).is_empty());
    }
}
