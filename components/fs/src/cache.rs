//! The block cache between the FAT code and the device: write-back (dirty
//! blocks stay in memory until a commit), read-ahead (a miss reads a run
//! of blocks), and the commit that moves dirty blocks home through the
//! journal (`journal.rs`).
//!
//! **Ordered data, as ext3/ext4 do by default.** A block of clusters that
//! the last committed state leaves free (newly allocated file data, a new
//! directory's clusters) is not logged: it goes home directly, before the
//! commit that makes anything point at it. Nothing committed can read such
//! a block, so writing it early is harmless whatever happens next, and a
//! crash before the commit leaves it free again. Which clusters are free
//! in the committed state is read from the first FAT as it was at the last
//! commit: each FAT block keeps its pre-image when it first goes dirty.
//! Everything else (the FATs, directories and file data that committed
//! metadata reaches) goes through the log. So a big sequential write is
//! written once, in requests of up to 1 MiB, instead of twice.
//!
//! A commit, in order: the direct blocks go home; flush (it also makes the
//! previous commit's home writes durable, after which the header's
//! `checkpointed` moves to that commit); the logged blocks and a
//! checksummed commit record go to the log; flush, after which the commit
//! is durable; the logged blocks go home, not flushed until the next
//! commit or sync (until then the log still holds them, and replaying an
//! already-home transaction again is harmless). A kill at any moment
//! therefore leaves either the state before the commit (torn log: ignored
//! at mount) or after it (complete log: replayed at mount).

use crate::fatmap::FatGeometry;
use crate::journal::{self, Header, BLOCK, SECTOR, SECTORS_PER_BLOCK};
use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
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
/// Direct (unlogged) dirty blocks kept before they go home without a
/// commit (1 MiB).
const DIRECT_LIMIT: usize = 256;

/// A lower limit on [`BlockCache::capacity`] (0: none), so tests reach
/// the paths that need several transactions on small volumes.
static CAPACITY_LIMIT: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

/// Let a commit carry at most `blocks` logged blocks (for tests: the
/// journal's size sets the real limit). Applies to every volume of the
/// process.
#[doc(hidden)]
pub fn limit_capacity_for_tests(blocks: usize) {
    CAPACITY_LIMIT.store(blocks, core::sync::atomic::Ordering::Relaxed);
}

/// Counters for tests and benchmarks.
#[derive(Clone, Copy, Debug, Default)]
pub struct CacheStats {
    pub commits: u64,
    pub blocks_committed: u64,
    pub device_reads: u64,
    /// Blocks written home without the log (clusters free in the
    /// committed state).
    pub direct_blocks: u64,
    pub flushes: u64,
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
    /// Dirty blocks that go home without the log (of clusters free in the
    /// committed state); a subset of `dirty`'s keys.
    direct: BTreeSet<u64>,
    /// Whole direct blocks written in order, not cached: `run` holds the
    /// blocks from `run_start` on and goes to the device as one request.
    run: Vec<u8>,
    run_start: u64,
    /// The layout of the FAT volume, when direct writes are possible
    /// (FAT16/32 on a writable device).
    geo: Option<FatGeometry>,
    /// Pre-images of the blocks of the first FAT dirtied since the last
    /// commit: with the clean blocks, the committed FAT.
    fat_before: BTreeMap<u64, Block>,
    /// Writes reached the device since its last flush.
    unflushed: bool,
    /// The commit whose logged blocks went home unflushed: the header's
    /// `checkpointed` moves to it after the next flush.
    home_pending: Option<u64>,
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
            direct: BTreeSet::new(),
            run: Vec::new(),
            run_start: 0,
            geo: None,
            fat_before: BTreeMap::new(),
            unflushed: false,
            home_pending: None,
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

    /// The FAT layout (from the boot sector), which turns on direct
    /// writes of blocks of free clusters. Set before anything is written.
    pub fn set_geometry(&mut self, geo: Option<FatGeometry>) {
        self.geo = geo.filter(|g| self.writable && g.bits() != 12);
    }

    /// Logged dirty blocks waiting for the next commit (what the journal
    /// must hold; direct blocks go home without it).
    pub fn dirty_blocks(&self) -> usize {
        if self.writable {
            self.dirty.len() - self.direct.len()
        } else {
            0
        }
    }

    /// The most dirty blocks one commit carries (the journal's capacity,
    /// at most [`DIRTY_LIMIT`]).
    pub fn capacity(&self) -> usize {
        let cap = self.header.capacity().min(DIRTY_LIMIT);
        match CAPACITY_LIMIT.load(core::sync::atomic::Ordering::Relaxed) {
            0 => cap,
            limit => cap.min(limit),
        }
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

    /// The first block of `[block, end)` that is dirty, clean or in the
    /// run (`end` if none is: the device holds the only copy of them all).
    fn absent_until(&self, block: u64, end: u64) -> u64 {
        let mut first = end;
        if let Some((&b, _)) = self.dirty.range(block..end).next() {
            first = first.min(b);
        }
        if let Some((&b, _)) = self.clean.range(block..first).next() {
            first = first.min(b);
        }
        let run_end = self.run_start + (self.run.len() / BLOCK) as u64;
        if !self.run.is_empty() && self.run_start < first && run_end > block {
            first = first.min(self.run_start.max(block));
        }
        first
    }

    fn take_clean(&mut self, block: u64) -> Option<Block> {
        self.clean.remove(&block).map(|(_, b)| b)
    }

    /// Make `block` present (dirty or clean) and return whether it is.
    fn load(&mut self, block: u64) -> Result<(), Errno> {
        if self.dirty.contains_key(&block) || self.clean.contains_key(&block) {
            return Ok(());
        }
        if self.in_run(block) {
            self.write_run()?;
        }
        // Read-ahead stops at a block we hold (or hold back in the run).
        let mut n = 1;
        while n < READ_AHEAD
            && block + n < self.blocks
            && !self.dirty.contains_key(&(block + n))
            && !self.clean.contains_key(&(block + n))
            && !self.in_run(block + n)
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
        if self.run_overlaps(pos, out.len()) {
            self.write_run()?;
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
            if off == 0 && whole >= 2 {
                let end = (block + whole.min(MAX_IO / BLOCK) as u64).min(self.blocks);
                let n = (self.absent_until(block, end) - block) as usize;
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
        if self.run_overlaps(pos, data.len()) {
            self.write_run()?;
        }
        let mut done = 0;
        while done < data.len() {
            let p = pos + done as u64;
            let block = p / BLOCK as u64;
            let off = (p % BLOCK as u64) as usize;
            let n = (BLOCK - off).min(data.len() - done);
            let whole = n == BLOCK;
            if !self.dirty.contains_key(&block) {
                let fat = self.in_fat(block);
                let free = !fat && self.free_in_committed(block)?;
                if free && whole {
                    // Straight into the run of direct blocks.
                    self.clean.remove(&block);
                    let run_blocks = (self.run.len() / BLOCK) as u64;
                    if run_blocks > 0
                        && (self.run_start + run_blocks != block || self.run.len() >= MAX_IO)
                    {
                        self.write_run()?;
                    }
                    if self.run.is_empty() {
                        self.run_start = block;
                    }
                    self.run.extend_from_slice(&data[done..done + n]);
                    self.stats.direct_blocks += 1;
                    done += n;
                    continue;
                }
                let b = match self.take_clean(block) {
                    Some(b) => b,
                    None if whole && !fat => Box::new([0u8; BLOCK]),
                    None => {
                        self.load(block)?;
                        self.take_clean(block).ok_or(EIO)?
                    }
                };
                if fat && self.geo.is_some() {
                    self.fat_before.entry(block).or_insert_with(|| b.clone());
                }
                if free {
                    self.direct.insert(block);
                    self.stats.direct_blocks += 1;
                }
                self.dirty.insert(block, b);
            }
            let b = self.dirty.get_mut(&block).ok_or(EIO)?;
            b[off..off + n].copy_from_slice(&data[done..done + n]);
            done += n;
        }
        if self.direct.len() > DIRECT_LIMIT {
            self.write_direct()?;
        }
        Ok(())
    }

    /// Is `block` in the first FAT (whose pre-images we keep)?
    fn in_fat(&self, block: u64) -> bool {
        self.geo.is_some_and(|g| {
            let r = g.fat_range();
            let start = block * BLOCK as u64;
            start < r.end && start + BLOCK as u64 > r.start
        })
    }

    /// Cluster `c`'s entry in the committed first FAT (`None`: not known,
    /// its FAT block went dirty before we kept pre-images).
    fn committed_entry(&mut self, geo: &FatGeometry, c: u32) -> Result<Option<u32>, Errno> {
        let Some((at, width)) = geo.entry_at(c) else {
            return Ok(None);
        };
        let block = at / BLOCK as u64;
        let off = (at % BLOCK as u64) as usize;
        if !self.fat_before.contains_key(&block) {
            if self.dirty.contains_key(&block) {
                return Ok(None);
            }
            self.load(block)?;
        }
        let b = match self.fat_before.get(&block) {
            Some(b) => b,
            None => &self.clean.get(&block).ok_or(EIO)?.1,
        };
        Ok(Some(geo.entry_value(&b[off..off + width])))
    }

    /// Does `block` lie wholly in clusters that the committed state leaves
    /// free (so it may go home without the log)?
    fn free_in_committed(&mut self, block: u64) -> Result<bool, Errno> {
        let Some(geo) = self.geo else {
            return Ok(false);
        };
        let start = block * BLOCK as u64;
        if start < geo.data_start() {
            return Ok(false);
        }
        let (Some(first), Some(last)) = (
            geo.cluster_at(start),
            geo.cluster_at(start + BLOCK as u64 - 1),
        ) else {
            return Ok(false);
        };
        if last >= geo.clusters().saturating_add(2) {
            return Ok(false);
        }
        for c in first..=last {
            if self.committed_entry(&geo, c)? != Some(0) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn in_run(&self, block: u64) -> bool {
        block >= self.run_start && block < self.run_start + (self.run.len() / BLOCK) as u64
    }

    fn run_overlaps(&self, pos: u64, len: usize) -> bool {
        let start = self.run_start * BLOCK as u64;
        !self.run.is_empty() && pos < start + self.run.len() as u64 && pos + len as u64 > start
    }

    /// The run of direct blocks to the device (not flushed).
    fn write_run(&mut self) -> Result<(), Errno> {
        if self.run.is_empty() {
            return Ok(());
        }
        self.dev
            .write(self.run_start * SECTORS_PER_BLOCK, &self.run)?;
        self.run.clear();
        self.unflushed = true;
        Ok(())
    }

    /// Write `blocks` (sorted by block number) home, consecutive blocks in
    /// one request of up to [`MAX_IO`].
    fn write_home<'a>(
        &mut self,
        blocks: impl Iterator<Item = (u64, &'a [u8; BLOCK])>,
    ) -> Result<(), Errno> {
        let mut run: Vec<u8> = Vec::new();
        let mut start = 0u64;
        for (b, data) in blocks {
            let n = (run.len() / BLOCK) as u64;
            if n > 0 && (start + n != b || run.len() >= MAX_IO) {
                self.dev.write(start * SECTORS_PER_BLOCK, &run)?;
                run.clear();
            }
            if run.is_empty() {
                start = b;
            }
            run.extend_from_slice(&data[..]);
        }
        if !run.is_empty() {
            self.dev.write(start * SECTORS_PER_BLOCK, &run)?;
        }
        self.unflushed = true;
        Ok(())
    }

    /// The direct dirty blocks (and the run) home, not flushed; they become
    /// clean.
    fn write_direct(&mut self) -> Result<(), Errno> {
        self.write_run()?;
        if self.direct.is_empty() {
            return Ok(());
        }
        let direct = core::mem::take(&mut self.direct);
        let mut blocks: Vec<(u64, Block)> = Vec::with_capacity(direct.len());
        for b in &direct {
            if let Some(d) = self.dirty.remove(b) {
                blocks.push((*b, d));
            }
        }
        let r = self.write_home(blocks.iter().map(|(b, d)| (*b, &**d)));
        if r.is_err() {
            // Still dirty: a later commit retries.
            for (b, d) in blocks {
                self.dirty.insert(b, d);
            }
            self.direct = direct;
            return r;
        }
        for (b, d) in blocks {
            self.insert_clean(b, d);
        }
        Ok(())
    }

    /// Flush the device if anything reached it since the last flush; the
    /// previous commit's blocks are then home for good and the header says so.
    fn flush_device(&mut self) -> Result<(), Errno> {
        if !self.unflushed {
            return Ok(());
        }
        self.dev.flush()?;
        self.stats.flushes += 1;
        self.unflushed = false;
        if let Some(seq) = self.home_pending.take() {
            // Not flushed itself: a stale header only replays a
            // transaction that is home already.
            self.header.checkpointed = seq;
            self.write_header()?;
        }
        Ok(())
    }

    /// Commit every dirty block (see the module documentation). Durable
    /// when it returns. More logged blocks than the journal holds (never
    /// at an operation boundary of ours, see `volume.rs`) go in several
    /// transactions.
    pub fn commit(&mut self) -> Result<(), Errno> {
        if !self.writable {
            return Ok(());
        }
        let r = self.commit_all();
        // The committed state moved (or, after an error, is not known for
        // sure): pre-images start again; a FAT block still dirty has none,
        // so its clusters count as not free.
        self.fat_before.clear();
        r
    }

    /// [`Self::commit`], then every block home for good and the header
    /// saying so (durable): the volume needs no replay, so tools that know
    /// nothing of the journal (mtools, fsck.fat) see all of it and may
    /// change it. For `sync`/`syncfs` and the app's exit.
    pub fn checkpoint(&mut self) -> Result<(), Errno> {
        self.commit()?;
        if !self.writable {
            return Ok(());
        }
        let pending = self.home_pending.is_some();
        self.flush_device()?;
        if pending {
            // The header written by flush_device.
            self.dev.flush()?;
            self.stats.flushes += 1;
        }
        Ok(())
    }

    fn commit_all(&mut self) -> Result<(), Errno> {
        self.write_direct()?;
        if self.dirty.is_empty() {
            return self.flush_device();
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
        // The direct blocks and the previous commit's home writes must be
        // durable before this log (which overwrites the previous one).
        self.flush_device()?;
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
        self.stats.flushes += 1;
        // Durable from here on. Home, flushed by the next commit or sync.
        self.next_seq = seq + 1;
        self.home_pending = Some(seq);
        self.write_home(refs.iter().copied())?;
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
