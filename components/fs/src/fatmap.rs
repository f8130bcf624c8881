//! Just enough of the FAT layout to follow a cluster chain ourselves: the
//! per-file cluster maps of `volume.rs` grow from their last known cluster
//! when a file grows, instead of walking the chain from its start through
//! lamfat (which is the only walk lamfat offers).

use crate::cache::BlockCache;
use unikernel_runtime::errno::*;

/// Where the FAT and the clusters are, from the boot sector.
#[derive(Clone, Copy, Debug)]
pub struct FatGeometry {
    /// Byte offset of the first FAT.
    fat_start: u64,
    /// Bytes of one FAT.
    fat_bytes: u64,
    /// Byte offset of cluster 2.
    data_start: u64,
    cluster: u64,
    /// Bits per FAT entry: 12, 16 or 32.
    bits: u32,
    clusters: u32,
}

impl FatGeometry {
    /// From a FAT boot sector (`None`: not one we understand).
    pub fn parse(b: &[u8]) -> Option<FatGeometry> {
        let le16 = |o: usize| u64::from(u16::from_le_bytes([b[o], b[o + 1]]));
        let le32 = |o: usize| u64::from(u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]));
        if b.len() < 512 {
            return None;
        }
        let bps = le16(11);
        let spc = u64::from(b[13]);
        let reserved = le16(14);
        let fats = u64::from(b[16]);
        let root_entries = le16(17);
        let total = if le16(19) != 0 { le16(19) } else { le32(32) };
        let spf = if le16(22) != 0 { le16(22) } else { le32(36) };
        if bps != 512 || spc == 0 || fats == 0 || spf == 0 {
            return None;
        }
        let root_sectors = (root_entries * 32).div_ceil(bps);
        let first_data = reserved + fats * spf + root_sectors;
        let clusters = total.checked_sub(first_data)? / spc;
        let bits = if clusters < 4085 {
            12
        } else if clusters < 65525 {
            16
        } else {
            32
        };
        Some(FatGeometry {
            fat_start: reserved * bps,
            fat_bytes: spf * bps,
            data_start: first_data * bps,
            cluster: spc * bps,
            bits,
            clusters: clusters as u32,
        })
    }

    /// Bits per FAT entry: 12, 16 or 32.
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// The byte range of the first FAT.
    pub fn fat_range(&self) -> core::ops::Range<u64> {
        self.fat_start..self.fat_start + self.fat_bytes
    }

    /// Byte offset of cluster 2, where the data region starts.
    pub fn data_start(&self) -> u64 {
        self.data_start
    }

    /// Clusters of the volume (numbered from 2).
    pub fn clusters(&self) -> u32 {
        self.clusters
    }

    /// Byte offset and width of cluster `c`'s entry in the first FAT, for
    /// FAT16 and FAT32 (`None` for FAT12, whose entries straddle bytes).
    pub fn entry_at(&self, c: u32) -> Option<(u64, usize)> {
        match self.bits {
            16 => Some((self.fat_start + 2 * u64::from(c), 2)),
            32 => Some((self.fat_start + 4 * u64::from(c), 4)),
            _ => None,
        }
    }

    /// The value of a FAT16/32 entry from its bytes (as [`Self::entry_at`]
    /// locates them; FAT32's top four bits are reserved).
    pub fn entry_value(&self, bytes: &[u8]) -> u32 {
        let mut v = [0u8; 4];
        let n = bytes.len().min(4);
        v[..n].copy_from_slice(&bytes[..n]);
        let v = u32::from_le_bytes(v);
        if self.bits == 32 {
            v & 0x0fff_ffff
        } else {
            v
        }
    }

    /// The first value that ends a chain.
    fn chain_end(&self) -> u32 {
        match self.bits {
            12 => 0xff8,
            16 => 0xfff8,
            _ => 0x0fff_fff8,
        }
    }

    /// Bytes per cluster.
    pub fn cluster_size(&self) -> u64 {
        self.cluster
    }

    /// Byte offset of cluster `c` (2-based).
    pub fn offset(&self, c: u32) -> u64 {
        self.data_start + u64::from(c - 2) * self.cluster
    }

    /// The cluster at byte offset `off` (the start of a cluster).
    pub fn cluster_at(&self, off: u64) -> Option<u32> {
        let rel = off.checked_sub(self.data_start)?;
        Some((rel / self.cluster) as u32 + 2)
    }

    /// Follow the chain after cluster `c` for up to `count` clusters,
    /// pushing each one's byte offset onto `out`; returns the last cluster
    /// reached. Reads a FAT block once for all the entries it holds (a
    /// contiguous file of 256 MiB is 64 block reads, not 65,536 entry
    /// reads).
    pub fn follow(
        &self,
        cache: &mut BlockCache,
        mut c: u32,
        count: usize,
        out: &mut alloc::vec::Vec<u64>,
    ) -> Result<u32, Errno> {
        const B: u64 = crate::journal::BLOCK as u64;
        if self.bits == 12 {
            for _ in 0..count {
                match self.next(cache, c)? {
                    Some(n) => {
                        out.push(self.offset(n));
                        c = n;
                    }
                    None => break,
                }
            }
            return Ok(c);
        }
        let end = self.chain_end();
        let mut buf = alloc::vec![0u8; B as usize];
        let mut have: Option<u64> = None;
        for _ in 0..count {
            if c < 2 || c >= self.clusters + 2 {
                return Err(EIO);
            }
            let (at, width) = self.entry_at(c).ok_or(EIO)?;
            let block = at / B;
            if have != Some(block) {
                cache.read(block * B, &mut buf)?;
                have = Some(block);
            }
            let o = (at % B) as usize;
            let v = self.entry_value(&buf[o..o + width]);
            if v >= end {
                break;
            }
            if v < 2 || v >= self.clusters + 2 {
                return Err(EIO); // free or bad cluster inside a chain: corrupt
            }
            out.push(self.offset(v));
            c = v;
        }
        Ok(c)
    }

    /// The cluster after `c` in its chain (`None`: the chain ends there).
    pub fn next(&self, cache: &mut BlockCache, c: u32) -> Result<Option<u32>, Errno> {
        if c < 2 || c >= self.clusters + 2 {
            return Err(EIO);
        }
        let v = match self.entry_at(c) {
            Some((at, width)) => {
                let mut b = [0u8; 4];
                cache.read(at, &mut b[..width])?;
                self.entry_value(&b[..width])
            }
            None => {
                // FAT12: 12 bits at c * 1.5 bytes.
                let mut b = [0u8; 2];
                cache.read(self.fat_start + u64::from(c) + u64::from(c / 2), &mut b)?;
                let w = u16::from_le_bytes(b);
                u32::from(if c & 1 == 1 { w >> 4 } else { w & 0xfff })
            }
        };
        if v >= self.chain_end() {
            Ok(None)
        } else if v < 2 || v >= self.clusters + 2 {
            Err(EIO) // free or bad cluster inside a chain: corrupt
        } else {
            Ok(Some(v))
        }
    }
}
