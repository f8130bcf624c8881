//! The write-ahead journal below the FAT filesystem: its on-disk layout,
//! writing one transaction, and replaying a committed one at mount.
//!
//! A volume of ours is a raw device split in two:
//!
//! ```text
//! sector 0                      fat_sectors            fat_sectors + 8 * journal_blocks
//! | FAT volume (boot sector ...) | journal region (4 KiB blocks)      | unused tail |
//! ```
//!
//! The FAT boot sector's total-sector count is `fat_sectors`, so FAT tools
//! (`fsck.fat`, mtools, Linux's vfat) see an ordinary volume and never the
//! journal. Journal block 0 holds the header twice (sector 0 and sector 1
//! of the block: copy A and copy B); blocks 1.. are the log. A
//! transaction always starts at log block 1:
//!
//! ```text
//! [desc][data x n0][desc][data x n1] ... [commit]
//! ```
//!
//! A descriptor lists the home block numbers (4 KiB units of the FAT
//! volume) of the data blocks after it (up to [`DESC_ENTRIES`]); the commit
//! block carries the sequence number, the counts and a CRC-32 over every
//! log block before it. The header's `checkpointed` is the sequence of
//! the last transaction whose blocks are known to be home. Mount replays
//! the log iff it holds a complete transaction (valid descriptors, commit
//! CRC matches) with a sequence above `checkpointed`; anything else is a
//! torn transaction and is ignored (its blocks never went home: home
//! writes start only after the log and commit are flushed).

use crate::crc::crc32;
use alloc::vec;
use alloc::vec::Vec;

/// Bytes per cache and journal block.
pub const BLOCK: usize = 4096;
/// Device sectors per block.
pub const SECTORS_PER_BLOCK: u64 = (BLOCK / SECTOR) as u64;
/// Device sector size (every device we drive).
pub const SECTOR: usize = 512;
/// The header's magic: marks a volume as ours.
pub const MAGIC: &[u8; 8] = b"UNIKJRNL";
/// The layout version this code writes and reads.
pub const VERSION: u32 = 1;
const DESC_MAGIC: &[u8; 8] = b"UKJDESC1";
const COMMIT_MAGIC: &[u8; 8] = b"UKJCOMMT";
/// Home block numbers per descriptor block.
pub const DESC_ENTRIES: usize = (BLOCK - 24) / 8;

/// The journal header (one sector, stored twice).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Sectors of the FAT volume (a multiple of 8); the journal follows.
    pub fat_sectors: u64,
    /// Blocks of the journal region, header block included.
    pub journal_blocks: u32,
    /// The last transaction known to be written home.
    pub checkpointed: u64,
}

/// What is wrong with a journal header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// No magic: not a volume of ours.
    NoMagic,
    /// Our magic but a layout version we do not know.
    Version(u32),
    /// Our magic, version known, but both copies fail their checksum or
    /// their fields make no sense.
    Corrupt,
}

impl Header {
    /// The sector the header block starts at.
    pub fn journal_start(&self) -> u64 {
        self.fat_sectors
    }
    /// The first sector past the journal region.
    pub fn end_sector(&self) -> u64 {
        self.fat_sectors + u64::from(self.journal_blocks) * SECTORS_PER_BLOCK
    }
    /// Log blocks (the journal minus its header block).
    pub fn log_blocks(&self) -> usize {
        self.journal_blocks as usize - 1
    }
    /// The most data blocks one transaction can carry.
    pub fn capacity(&self) -> usize {
        max_data_blocks(self.log_blocks())
    }

    /// One header sector.
    pub fn encode(&self) -> [u8; SECTOR] {
        let mut s = [0u8; SECTOR];
        s[0..8].copy_from_slice(MAGIC);
        s[8..12].copy_from_slice(&VERSION.to_le_bytes());
        s[12..16].copy_from_slice(&(BLOCK as u32).to_le_bytes());
        s[16..24].copy_from_slice(&self.fat_sectors.to_le_bytes());
        s[24..28].copy_from_slice(&self.journal_blocks.to_le_bytes());
        s[32..40].copy_from_slice(&self.checkpointed.to_le_bytes());
        let c = crc32(&s[0..40]);
        s[40..44].copy_from_slice(&c.to_le_bytes());
        s
    }

    /// Decode one header sector.
    pub fn decode(s: &[u8]) -> Result<Header, HeaderError> {
        if s.len() < SECTOR || &s[0..8] != MAGIC {
            return Err(HeaderError::NoMagic);
        }
        let version = le32(&s[8..12]);
        if version != VERSION {
            return Err(HeaderError::Version(version));
        }
        if le32(&s[40..44]) != crc32(&s[0..40]) || le32(&s[12..16]) != BLOCK as u32 {
            return Err(HeaderError::Corrupt);
        }
        let h = Header {
            fat_sectors: le64(&s[16..24]),
            journal_blocks: le32(&s[24..28]),
            checkpointed: le64(&s[32..40]),
        };
        if !h.fat_sectors.is_multiple_of(SECTORS_PER_BLOCK)
            || h.fat_sectors == 0
            || h.journal_blocks < 4
        {
            return Err(HeaderError::Corrupt);
        }
        Ok(h)
    }

    /// The valid header of the two copies in the header block's first two
    /// sectors (the one with the higher `checkpointed` when both are).
    pub fn decode_pair(two: &[u8]) -> Result<Header, HeaderError> {
        let a = Header::decode(&two[..SECTOR]);
        let b = Header::decode(&two[SECTOR..2 * SECTOR]);
        match (a, b) {
            (Ok(a), Ok(b)) if a.fat_sectors == b.fat_sectors => {
                Ok(if b.checkpointed > a.checkpointed {
                    b
                } else {
                    a
                })
            }
            (Ok(a), Ok(_)) => Ok(a),
            (Ok(a), Err(_)) => Ok(a),
            (Err(_), Ok(b)) => Ok(b),
            (Err(HeaderError::NoMagic), Err(HeaderError::NoMagic)) => Err(HeaderError::NoMagic),
            (Err(HeaderError::Version(v)), _) | (_, Err(HeaderError::Version(v))) => {
                Err(HeaderError::Version(v))
            }
            _ => Err(HeaderError::Corrupt),
        }
    }
}

/// How many data blocks fit a log of `log_blocks` blocks (descriptors and
/// the commit block included).
pub fn max_data_blocks(log_blocks: usize) -> usize {
    // n data + ceil(n / DESC_ENTRIES) descriptors + 1 commit <= log_blocks
    let mut n = log_blocks.saturating_sub(2);
    while n > 0 && n + n.div_ceil(DESC_ENTRIES) + 1 > log_blocks {
        n -= 1;
    }
    n
}

/// The log image of one transaction: `blocks` (home block number, data)
/// become descriptors + data + the commit block, to be written at log
/// block 1. Needs `blocks.len() <= max_data_blocks`.
pub fn encode_transaction(seq: u64, blocks: &[(u64, &[u8; BLOCK])]) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = stream_transaction::<()>(seq, blocks, |b| {
        out.extend_from_slice(b);
        Ok(())
    });
    out
}

/// [`encode_transaction`] without building the image: `sink` gets it in
/// order, one 4 KiB block at a time (a descriptor, a data block, ...,
/// the commit block), so a commit needs no second copy of its blocks.
pub fn stream_transaction<E>(
    seq: u64,
    blocks: &[(u64, &[u8; BLOCK])],
    mut sink: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<(), E> {
    let ndesc = blocks.len().div_ceil(DESC_ENTRIES);
    let mut crc = crate::crc::Crc32::new();
    let mut d = vec![0u8; BLOCK];
    for chunk in blocks.chunks(DESC_ENTRIES) {
        d.fill(0);
        d[0..8].copy_from_slice(DESC_MAGIC);
        d[8..16].copy_from_slice(&seq.to_le_bytes());
        d[16..20].copy_from_slice(&(chunk.len() as u32).to_le_bytes());
        for (i, (home, _)) in chunk.iter().enumerate() {
            d[24 + 8 * i..32 + 8 * i].copy_from_slice(&home.to_le_bytes());
        }
        crc.update(&d);
        sink(&d)?;
        for (_, data) in chunk {
            crc.update(&data[..]);
            sink(&data[..])?;
        }
    }
    let c = &mut d;
    c.fill(0);
    c[0..8].copy_from_slice(COMMIT_MAGIC);
    c[8..16].copy_from_slice(&seq.to_le_bytes());
    c[16..20].copy_from_slice(&(blocks.len() as u32).to_le_bytes());
    c[20..24].copy_from_slice(&(ndesc as u32).to_le_bytes());
    c[24..28].copy_from_slice(&crc.finish().to_le_bytes());
    let self_crc = crc32(&c[0..28]);
    c[28..32].copy_from_slice(&self_crc.to_le_bytes());
    sink(c)
}

/// A committed transaction read back from the log.
pub struct Committed {
    pub seq: u64,
    /// (home block, data) in log order (a later entry for the same block
    /// wins, though we never write duplicates).
    pub blocks: Vec<(u64, Vec<u8>)>,
}

/// Parse the log (read with `read_block(i, buf)` for log block `i`,
/// 1-based) for a complete transaction newer than `after`. `None`: the
/// log holds nothing to replay (empty, old, or torn).
pub fn find_committed<E>(
    log_blocks: usize,
    after: u64,
    mut read_block: impl FnMut(usize, &mut [u8; BLOCK]) -> Result<(), E>,
) -> Result<Option<Committed>, E> {
    let mut buf = [0u8; BLOCK];
    let mut crc = crate::crc::Crc32::new();
    let mut idx = 1usize;
    let mut seq = None;
    let mut blocks = Vec::new();
    let mut ndesc = 0u32;
    loop {
        if idx > log_blocks {
            return Ok(None);
        }
        read_block(idx, &mut buf)?;
        idx += 1;
        if &buf[0..8] == COMMIT_MAGIC {
            let Some(s) = seq else { return Ok(None) };
            let ok = le64(&buf[8..16]) == s
                && le32(&buf[16..20]) as usize == blocks.len()
                && le32(&buf[20..24]) == ndesc
                && le32(&buf[24..28]) == crc.finish()
                && le32(&buf[28..32]) == crc32(&buf[0..28]);
            return Ok(ok.then_some(Committed { seq: s, blocks }));
        }
        if &buf[0..8] != DESC_MAGIC {
            return Ok(None);
        }
        let s = le64(&buf[8..16]);
        if s <= after || seq.is_some_and(|x| x != s) {
            return Ok(None);
        }
        seq = Some(s);
        let n = le32(&buf[16..20]) as usize;
        if n == 0 || n > DESC_ENTRIES || idx + n > log_blocks {
            return Ok(None);
        }
        ndesc += 1;
        crc.update(&buf);
        let homes: Vec<u64> = (0..n).map(|i| le64(&buf[24 + 8 * i..32 + 8 * i])).collect();
        for home in homes {
            read_block(idx, &mut buf)?;
            idx += 1;
            crc.update(&buf);
            blocks.push((home, buf.to_vec()));
        }
    }
}

pub(crate) fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

pub(crate) fn le64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_pair() {
        let h = Header {
            fat_sectors: 8192,
            journal_blocks: 64,
            checkpointed: 7,
        };
        assert_eq!(Header::decode(&h.encode()), Ok(h));
        let mut two = [0u8; 2 * SECTOR];
        two[..SECTOR].copy_from_slice(&h.encode());
        let h2 = Header {
            checkpointed: 9,
            ..h
        };
        two[SECTOR..].copy_from_slice(&h2.encode());
        assert_eq!(Header::decode_pair(&two), Ok(h2));
        two[SECTOR + 33] ^= 1; // copy B torn
        assert_eq!(Header::decode_pair(&two), Ok(h));
        assert_eq!(
            Header::decode_pair(&[0u8; 2 * SECTOR]),
            Err(HeaderError::NoMagic)
        );
    }

    #[test]
    fn transaction_round_trip_and_torn() {
        let datas: Vec<[u8; BLOCK]> = (0..600).map(|i| [(i % 251) as u8; BLOCK]).collect();
        let blocks: Vec<(u64, &[u8; BLOCK])> = datas
            .iter()
            .enumerate()
            .map(|(i, d)| (i as u64 * 3, d))
            .collect();
        let img = encode_transaction(5, &blocks);
        let log_blocks = img.len() / BLOCK + 3;
        assert!(max_data_blocks(log_blocks) >= 600);
        let read = |img: &Vec<u8>| {
            let img = img.clone();
            find_committed::<()>(log_blocks, 4, move |i, buf| {
                let off = (i - 1) * BLOCK;
                if off + BLOCK <= img.len() {
                    buf.copy_from_slice(&img[off..off + BLOCK]);
                } else {
                    buf.fill(0);
                }
                Ok(())
            })
            .unwrap()
        };
        let c = read(&img).expect("complete transaction");
        assert_eq!(c.seq, 5);
        assert_eq!(c.blocks.len(), 600);
        assert_eq!(c.blocks[599].0, 599 * 3);
        assert_eq!(c.blocks[10].1[0], 10);
        // Any flipped byte or a missing commit: nothing to replay.
        let mut torn = img.clone();
        torn[BLOCK * 7 + 100] ^= 0xff;
        assert!(read(&torn).is_none());
        let cut = img[..img.len() - BLOCK].to_vec();
        assert!(read(&cut).is_none());
        // Already checkpointed: nothing to replay.
        let c = find_committed::<()>(log_blocks, 5, |i, buf| {
            let off = (i - 1) * BLOCK;
            buf.copy_from_slice(&img[off..off + BLOCK]);
            Ok(())
        })
        .unwrap();
        assert!(c.is_none());
    }

    #[test]
    fn capacity_counts_descriptors_and_commit() {
        assert_eq!(max_data_blocks(3), 1);
        assert_eq!(max_data_blocks(DESC_ENTRIES + 2), DESC_ENTRIES);
        assert_eq!(max_data_blocks(DESC_ENTRIES + 3), DESC_ENTRIES);
        assert_eq!(max_data_blocks(DESC_ENTRIES + 4), DESC_ENTRIES + 1);
    }
}
