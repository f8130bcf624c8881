//! The block cache between the FAT code and the device: write-back (dirty
//! blocks stay in memory until a commit), read-ahead (a miss reads a run
//! of blocks), and the commit that moves dirty blocks home through the
//! journal (`journal.rs`).
//!
//! A commit, in order: the dirty blocks and a checksummed commit record go
//! to the log; flush; the blocks go home; flush; the header's
//! `checkpointed` becomes this transaction (both copies; made durable by
//! the next commit's first flush, and replaying an already-home
//! transaction again is harmless). A kill at any moment therefore leaves
//! either the state before the commit (torn log: ignored at mount) or
//! after it (complete log: replayed at mount).

use crate::journal::{self, Header, BLOCK, SECTOR, SECTORS_PER_BLOCK};
use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use unikernel_runtime::device::BlockDevice;
use unikernel_runtime::errno::*;

type Block = Box<[u8; BLOCK]>;

/// Blocks read at once on a miss (64 KiB).
const READ_AHEAD: u64 = 16;
/// Clean blocks kept (8 MiB).
const CLEAN_LIMIT: usize = 2048;
/// Dirty blocks at most, whatever the journal holds (4 MiB): a commit
/// comes before the cache takes more of the guest's memory.
const DIRTY_LIMIT: usize = 1024;
/// The largest single device request we issue (1 MiB).
const MAX_IO: usize = 256 * BLOCK;

/// Counters for tests and benchmarks.
#[derive(Clone, Copy, Debug, Default)]
pub struct CacheStats {
    pub commits: u64,
    pub blocks_committed: u64,
    pub device_reads: u64,
}

pub struct BlockCache {
    dev: Arc<dyn BlockDevice>,
    header: Header,
    /// Blocks of the FAT volume.
    blocks: u64,
    /// Clean blocks, each with the number of its insertion.
    clean: BTreeMap<u64, (u64, Block)>,
    /// Insertion order for eviction, (block, insertion number): an entry
    /// whose number no longer matches the block's is stale and skipped.
    order: VecDeque<(u64, u64)>,
    inserted: u64,
    dirty: BTreeMap<u64, Block>,
    next_seq: u64,
    writable: bool,
    pub stats: CacheStats,
}

impl BlockCache {
    /// A cache over `dev`'s FAT volume as `header` describes it. With
    /// `replayed` (a committed transaction found at mount on a read-only
    /// device), its blocks are kept in memory on top of the device.
    pub fn new(
        dev: Arc<dyn BlockDevice>,
        header: Header,
        writable: bool,
        replayed: Option<journal::Committed>,
    ) -> BlockCache {
        let mut c = BlockCache {
            blocks: header.fat_sectors / SECTORS_PER_BLOCK,
            dev,
            next_seq: header.checkpointed + 1,
            header,
            clean: BTreeMap::new(),
            order: VecDeque::new(),
            inserted: 0,
            dirty: BTreeMap::new(),
            writable,
            stats: CacheStats::default(),
        };
        if let Some(t) = replayed {
            c.next_seq = t.seq + 1;
            for (home, data) in t.blocks {
                let mut b: Block = Box::new([0u8; BLOCK]);
                b.copy_from_slice(&data);
                // Never committed (read-only): pinned as dirty.
                c.dirty.insert(home, b);
            }
        }
        c
    }

    /// Bytes of the FAT volume.
    pub fn volume_bytes(&self) -> u64 {
        self.blocks * BLOCK as u64
    }

    /// Dirty blocks waiting for the next commit.
    pub fn dirty_blocks(&self) -> usize {
        if self.writable {
            self.dirty.len()
        } else {
            0
        }
    }

    /// The most dirty blocks one commit carries (the journal's capacity,
    /// at most [`DIRTY_LIMIT`]).
    pub fn capacity(&self) -> usize {
        self.header.capacity().min(DIRTY_LIMIT)
    }

    fn dev_read(&mut self, block: u64, buf: &mut [u8]) -> Result<(), Errno> {
        self.stats.device_reads += 1;
        self.dev.read(block * SECTORS_PER_BLOCK, buf)
    }

    fn insert_clean(&mut self, block: u64, data: Block) {
        self.inserted += 1;
        let n = self.inserted;
        self.clean.insert(block, (n, data));
        self.order.push_back((block, n));
        while self.clean.len() > CLEAN_LIMIT {
            match self.order.pop_front() {
                Some((old, m)) => {
                    if self.clean.get(&old).is_some_and(|(k, _)| *k == m) {
                        self.clean.remove(&old);
                    }
                }
                None => break,
            }
        }
        // Stale entries pile up when blocks go dirty and back; drop them.
        if self.order.len() > 4 * CLEAN_LIMIT {
            let clean = &self.clean;
            self.order
                .retain(|(b, m)| clean.get(b).is_some_and(|(k, _)| k == m));
        }
    }

    /// Neither dirty nor clean: the device holds the only copy.
    fn absent(&self, block: u64) -> bool {
        !self.dirty.contains_key(&block) && !self.clean.contains_key(&block)
    }

    fn take_clean(&mut self, block: u64) -> Option<Block> {
        self.clean.remove(&block).map(|(_, b)| b)
    }

    /// Make `block` present (dirty or clean) and return whether it is.
    fn load(&mut self, block: u64) -> Result<(), Errno> {
        if self.dirty.contains_key(&block) || self.clean.contains_key(&block) {
            return Ok(());
        }
        let mut n = 1;
        while n < READ_AHEAD
            && block + n < self.blocks
            && !self.dirty.contains_key(&(block + n))
            && !self.clean.contains_key(&(block + n))
        {
            n += 1;
        }
        let mut buf = vec![0u8; n as usize * BLOCK];
        self.dev_read(block, &mut buf)?;
        for i in 0..n {
            let mut b: Block = Box::new([0u8; BLOCK]);
            b.copy_from_slice(&buf[i as usize * BLOCK..(i as usize + 1) * BLOCK]);
            self.insert_clean(block + i, b);
        }
        Ok(())
    }

    /// Read bytes of the FAT volume at byte `pos`.
    pub fn read(&mut self, pos: u64, out: &mut [u8]) -> Result<(), Errno> {
        if pos
            .checked_add(out.len() as u64)
            .is_none_or(|e| e > self.volume_bytes())
        {
            return Err(EIO);
        }
        let mut done = 0;
        while done < out.len() {
            let p = pos + done as u64;
            let block = p / BLOCK as u64;
            let off = (p % BLOCK as u64) as usize;
            // A big read of whole blocks the cache holds neither dirty nor
            // clean goes from the device straight into `out` (in requests
            // of up to MAX_IO), without filling the cache.
            let whole = (out.len() - done) / BLOCK;
            if off == 0 && whole >= 2 && self.absent(block) {
                let mut n = 1;
                while n < whole.min(MAX_IO / BLOCK)
                    && block + (n as u64) < self.blocks
                    && self.absent(block + n as u64)
                {
                    n += 1;
                }
                if n >= 2 {
                    self.dev_read(block, &mut out[done..done + n * BLOCK])?;
                    done += n * BLOCK;
                    continue;
                }
            }
            let n = (BLOCK - off).min(out.len() - done);
            self.load(block)?;
            let b = match self.dirty.get(&block) {
                Some(b) => b,
                None => &self.clean.get(&block).ok_or(EIO)?.1,
            };
            out[done..done + n].copy_from_slice(&b[off..off + n]);
            done += n;
        }
        Ok(())
    }

    /// Write bytes of the FAT volume at byte `pos` (into the cache).
    pub fn write(&mut self, pos: u64, data: &[u8]) -> Result<(), Errno> {
        if !self.writable {
            return Err(EROFS);
        }
        if pos
            .checked_add(data.len() as u64)
            .is_none_or(|e| e > self.volume_bytes())
        {
            return Err(EIO);
        }
        let mut done = 0;
        while done < data.len() {
            let p = pos + done as u64;
            let block = p / BLOCK as u64;
            let off = (p % BLOCK as u64) as usize;
            let n = (BLOCK - off).min(data.len() - done);
            if !self.dirty.contains_key(&block) {
                let b = match self.take_clean(block) {
                    Some(b) => b,
                    None if n == BLOCK => Box::new([0u8; BLOCK]),
                    None => {
                        self.load(block)?;
                        self.take_clean(block).ok_or(EIO)?
                    }
                };
                self.dirty.insert(block, b);
            }
            let b = self.dirty.get_mut(&block).ok_or(EIO)?;
            b[off..off + n].copy_from_slice(&data[done..done + n]);
            done += n;
        }
        Ok(())
    }

    /// Commit every dirty block (see the module documentation). Durable
    /// when it returns. More dirty blocks than the journal holds (never
    /// at an operation boundary of ours, see `volume.rs`) go in several
    /// transactions.
    pub fn commit(&mut self) -> Result<(), Errno> {
        if !self.writable || self.dirty.is_empty() {
            return Ok(());
        }
        let cap = self.header.capacity().max(1);
        let dirty = core::mem::take(&mut self.dirty);
        let all: Vec<(u64, Block)> = dirty.into_iter().collect();
        let mut result = Ok(());
        let mut rest: &[(u64, Block)] = &all;
        while !rest.is_empty() && result.is_ok() {
            let n = rest.len().min(cap);
            result = self.commit_one(&rest[..n]);
            rest = &rest[n..];
        }
        match result {
            Ok(()) => {
                for (b, data) in all {
                    self.insert_clean(b, data);
                }
                Ok(())
            }
            Err(e) => {
                // Keep everything dirty: a later commit retries.
                for (b, data) in all {
                    self.clean.remove(&b);
                    self.dirty.insert(b, data);
                }
                Err(e)
            }
        }
    }

    fn commit_one(&mut self, blocks: &[(u64, Block)]) -> Result<(), Errno> {
        let seq = self.next_seq;
        let refs: Vec<(u64, &[u8; BLOCK])> = blocks.iter().map(|(b, d)| (*b, &**d)).collect();
        // The log, streamed out in requests of up to MAX_IO.
        let mut sector = self.header.journal_start() + SECTORS_PER_BLOCK;
        let mut buf: Vec<u8> = Vec::with_capacity(MAX_IO);
        let dev = &self.dev;
        journal::stream_transaction::<Errno>(seq, &refs, |b| {
            buf.extend_from_slice(b);
            if buf.len() >= MAX_IO {
                dev.write(sector, &buf)?;
                sector += (buf.len() / SECTOR) as u64;
                buf.clear();
            }
            Ok(())
        })?;
        if !buf.is_empty() {
            dev.write(sector, &buf)?;
        }
        self.dev.flush()?;
        // Home, in runs of consecutive blocks.
        let mut i = 0;
        while i < blocks.len() {
            let mut j = i + 1;
            while j < blocks.len() && blocks[j].0 == blocks[j - 1].0 + 1 && j - i < MAX_IO / BLOCK {
                j += 1;
            }
            let mut run = Vec::with_capacity((j - i) * BLOCK);
            for (_, d) in &blocks[i..j] {
                run.extend_from_slice(&d[..]);
            }
            self.dev.write(blocks[i].0 * SECTORS_PER_BLOCK, &run)?;
            i = j;
        }
        self.dev.flush()?;
        self.header.checkpointed = seq;
        self.write_header()?;
        self.next_seq = seq + 1;
        self.stats.commits += 1;
        self.stats.blocks_committed += blocks.len() as u64;
        Ok(())
    }

    fn write_header(&mut self) -> Result<(), Errno> {
        let s = self.header.encode();
        let start = self.header.journal_start();
        self.dev.write(start, &s)?;
        self.dev.write(start + 1, &s)
    }
}

/// Check the journal of the volume on `dev` and, when the log holds a
/// committed transaction not yet home, write it home (writable) or return
/// it to keep in memory (read-only). Returns the header to mount with.
pub fn replay(
    dev: &dyn BlockDevice,
    header: Header,
    writable: bool,
) -> Result<(Header, Option<journal::Committed>), Errno> {
    let log_start = header.journal_start() + SECTORS_PER_BLOCK;
    let found = journal::find_committed(header.log_blocks(), header.checkpointed, |i, buf| {
        dev.read(log_start + (i as u64 - 1) * SECTORS_PER_BLOCK, &mut buf[..])
    })?;
    let Some(t) = found else {
        return Ok((header, None));
    };
    let fat_blocks = header.fat_sectors / SECTORS_PER_BLOCK;
    if t.blocks.iter().any(|(b, _)| *b >= fat_blocks) {
        return Err(EINVAL);
    }
    if !writable {
        return Ok((header, Some(t)));
    }
    for (home, data) in &t.blocks {
        dev.write(home * SECTORS_PER_BLOCK, data)?;
    }
    dev.flush()?;
    let h = Header {
        checkpointed: t.seq,
        ..header
    };
    let s = h.encode();
    dev.write(h.journal_start(), &s)?;
    dev.write(h.journal_start() + 1, &s)?;
    dev.flush()?;
    Ok((h, None))
}
