//! A mounted volume: the runtime's [`Filesystem`] and [`File`] over lamfat.
//!
//! **One lock.** lamfat's `FileSystem` is single-threaded (`RefCell`s
//! inside) and its `File` borrows it and caches a position, a size and the
//! current cluster. We leak the `FileSystem` (a mount lives until the
//! machine stops) so files can borrow it for `'static`, and put every
//! lamfat object behind one mutex ([`Shared::inner`]): every operation of
//! every handle takes it, so the volume is used by one thread at a time.
//!
//! **One lamfat `File` per open file.** Handles of the same file (two
//! `open`s, `dup`s) share one [`Node`], keyed by the file's path in ASCII
//! lower case (FAT names are case-insensitive); each handle keeps only its
//! own offset and seeks the shared `File` before each call. A rename moves
//! the keys of the nodes it renames. A file unlinked or replaced by a
//! rename while open keeps working through its handles, as on Linux: it
//! moves to a hidden name in the root directory ([`HIDDEN_PREFIX`], left
//! out of listings) and is removed at its last close, or at the next mount
//! after a crash.
//!
//! **Operation boundaries.** Every call leaves lamfat's on-disk state whole
//! (the `File`'s directory entry is flushed into the cache at the end of
//! each call). Commits happen only between calls: at `fsync`/`sync`, and
//! before a call (or a piece of one) when the dirty blocks near the
//! journal's capacity. Long calls (a big write, a truncation, unlinking a
//! big file) are done in pieces, each a consistent state of its own, so a
//! transaction always fits the journal.

use crate::cache::BlockCache;
use crate::fatio::{from_fat, from_fat_date, to_fat, Clock, IoErr, NowFn, VolumeIo};
use crate::fatmap::FatGeometry;
use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use lamfat::{Seek, SeekFrom, Write};
use spin::Mutex;
use unikernel_runtime::errno::*;
use unikernel_runtime::fs::vfs::{
    Filesystem, OpenFlags, StatFs, Timespec, RENAME_EXCHANGE, RENAME_NOREPLACE, ST_RDONLY,
};
use unikernel_runtime::fs::{File, Stat, S_IFDIR, S_IFREG};

type Fs = lamfat::FileSystem<VolumeIo, Clock, lamfat::LossyOemCpConverter>;
type LFile = lamfat::File<'static, VolumeIo, Clock, lamfat::LossyOemCpConverter>;
type LDir = lamfat::Dir<'static, VolumeIo, Clock, lamfat::LossyOemCpConverter>;
type LEntry = lamfat::DirEntry<'static, VolumeIo, Clock, lamfat::LossyOemCpConverter>;
type LError = lamfat::Error<IoErr>;

/// `ESTALE`: the file behind a handle is gone.
pub const ESTALE: Errno = 116;
/// Names of files unlinked while open (root directory, hidden from
/// listings; removed at the last close or at mount).
pub const HIDDEN_PREFIX: &str = ".~unikernel-unlinked-";

/// `statfs` magic of FAT filesystems.
pub const MSDOS_SUPER_MAGIC: i64 = 0x4d44;
/// FAT's largest file.
pub const MAX_FILE_SIZE: u64 = u32::MAX as u64;

fn errno(e: LError) -> Errno {
    match e {
        lamfat::Error::Io(IoErr(e)) => e,
        lamfat::Error::NotFound => ENOENT,
        lamfat::Error::AlreadyExists => EEXIST,
        lamfat::Error::DirectoryIsNotEmpty => ENOTEMPTY,
        lamfat::Error::NotEnoughSpace | lamfat::Error::WriteZero => ENOSPC,
        lamfat::Error::InvalidFileNameLength => ENAMETOOLONG,
        lamfat::Error::UnsupportedFileNameCharacter | lamfat::Error::InvalidInput => EINVAL,
        _ => EIO,
    }
}

/// The open file a set of handles shares.
struct Node {
    file: LFile,
    path: String,
    handles: usize,
    stale: bool,
    /// Unlinked while open: moved to a hidden name, removed at the last close.
    unlinked: bool,
    /// The file's size (lamfat's own answer costs a cluster-chain walk).
    size: u64,
    /// Volume byte offset of each cluster of the file, built on the first
    /// read or in-place write (by following the FAT a block at a time) and
    /// dropped when the allocation changes:
    /// reads and overwrites go straight to the block cache through it
    /// (lamfat walks the chain from the first cluster on every seek).
    map: Option<Vec<u64>>,
}

impl Node {
    /// The map covering the file's size: its first cluster from lamfat,
    /// the rest (and later growth, from the last cluster on) by following
    /// the FAT ourselves (a growing file keeps its clusters; only
    /// truncation drops the map). Without a geometry we understand, the
    /// whole map comes from lamfat.
    fn cluster_map(&mut self, sh: &Shared) -> Result<&[u64], Errno> {
        let cs = sh.geo.map_or(0, |g| g.cluster_size());
        if let Some(geo) = sh.geo {
            if self.map.as_ref().is_none_or(|m| m.is_empty()) && self.size > 0 {
                // Only the first cluster through lamfat; the rest below.
                let first = self.file.extents().next().transpose().map_err(errno)?;
                self.map = Some(first.map(|e| e.offset).into_iter().collect());
            }
            if let Some(m) = self.map.as_mut() {
                let want = self.size.div_ceil(cs.max(1)) as usize;
                if !m.is_empty() && m.len() < want {
                    let mut cache = sh.cache.lock();
                    let c = geo.cluster_at(*m.last().ok_or(EIO)?).ok_or(EIO)?;
                    let n = want - m.len();
                    geo.follow(&mut cache, c, n, m)?;
                }
            }
        }
        let covered = self
            .map
            .as_ref()
            .is_some_and(|m| (m.len() as u64) * cs >= self.size);
        if !covered {
            let mut m = Vec::new();
            for e in self.file.extents() {
                m.push(e.map_err(errno)?.offset);
            }
            self.map = Some(m);
        }
        Ok(self.map.as_deref().unwrap_or(&[]))
    }
}

struct Inner {
    fs: &'static Fs,
    nodes: BTreeMap<u64, Node>,
    by_path: BTreeMap<String, u64>,
    next_node: u64,
}

// SAFETY: `Inner` holds lamfat objects (`RefCell`s, a shared reference to
// the leaked `FileSystem`), which are not thread-safe. They are reachable
// only through `Shared::inner`, a mutex: one thread uses them at a time,
// and nothing inside keeps thread-local state.
unsafe impl Send for Inner {}

/// The volume lock. Device requests made under it may let other threads
/// run (a driver waits for its device through the scheduler), and the
/// runtime does not preempt kernel code: a thread that finds the lock
/// taken must therefore sleep a little, not spin, or the holder never
/// runs again.
struct VolumeLock(Mutex<Inner>);

impl VolumeLock {
    fn lock(&self) -> spin::MutexGuard<'_, Inner> {
        loop {
            if let Some(g) = self.0.try_lock() {
                return g;
            }
            #[cfg(target_os = "none")]
            {
                let now = unikernel_runtime::platform().monotonic_ns();
                unikernel_runtime::sched::sleep_until(now + 50_000);
            }
            #[cfg(not(target_os = "none"))]
            core::hint::spin_loop();
        }
    }
}

/// What every handle of a volume shares.
struct Shared {
    inner: VolumeLock,
    cache: Arc<Mutex<BlockCache>>,
    read_only: bool,
    dev_id: u64,
    now: NowFn,
    /// The FAT layout, for growing cluster maps (`None`: rebuild them
    /// through lamfat).
    geo: Option<FatGeometry>,
}

/// A mounted volume (see the module documentation).
pub struct FatVolume(Arc<Shared>);

fn key(path: &str) -> String {
    path.to_ascii_lowercase()
}

fn split(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    }
}

/// A stable inode number from the path (FAT has no inodes; a rename gives
/// a file a new number).
fn ino(path: &str) -> u64 {
    if path.is_empty() {
        return 1;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in path.bytes() {
        h ^= u64::from(b.to_ascii_lowercase());
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h | 2
}

impl Shared {
    /// Commit when the dirty blocks leave less than `room` blocks of the
    /// journal (called between operations or pieces of one).
    fn make_room(&self, room: usize) -> Result<(), Errno> {
        let mut c = self.cache.lock();
        if c.dirty_blocks() + room > c.capacity() {
            c.commit()?;
        }
        Ok(())
    }

    /// Half the journal's capacity (room before a piece of a truncation).
    fn half_journal(&self) -> usize {
        let cap = self.cache.lock().capacity();
        cap / 2
    }

    /// Bytes one piece of a long write may carry (a quarter of the journal).
    fn piece_bytes(&self) -> usize {
        let cap = self.cache.lock().capacity();
        (cap / 4).max(1) * crate::journal::BLOCK
    }

    /// Clusters one piece of a truncation may free.
    fn piece_clusters(&self) -> u64 {
        let cap = self.cache.lock().capacity() as u64;
        // Each freed cluster dirties 4 bytes in each of 2 FATs.
        (cap / 4).max(1) * 512
    }

    fn check_writable(&self) -> Result<(), Errno> {
        if self.read_only {
            Err(EROFS)
        } else {
            Ok(())
        }
    }
}

impl Inner {
    fn root(&self) -> LDir {
        self.fs.root_dir()
    }

    fn dir(&self, path: &str) -> Result<LDir, Errno> {
        if path.is_empty() {
            Ok(self.root())
        } else {
            self.root().open_dir(path).map_err(errno)
        }
    }

    /// The directory entry of `path` (not the root).
    fn entry(&self, path: &str) -> Result<LEntry, Errno> {
        let (parent, name) = split(path);
        let dir = self
            .dir(parent)
            .map_err(|e| if e == EINVAL { ENOTDIR } else { e })?;
        for e in dir.iter() {
            let e = e.map_err(errno)?;
            if e.file_name().eq_ignore_ascii_case(name)
                || e.short_file_name().eq_ignore_ascii_case(name)
            {
                return Ok(e);
            }
        }
        Err(ENOENT)
    }

    /// Whether `path` exists and is a directory (`None`: it does not exist).
    fn kind(&self, path: &str) -> Result<Option<bool>, Errno> {
        if path.is_empty() {
            return Ok(Some(true));
        }
        match self.entry(path) {
            Ok(e) => Ok(Some(e.is_dir())),
            Err(ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn stat_entry(&self, path: &str, e: Option<&LEntry>, cluster: u32, dev: u64) -> Stat {
        let mut st = Stat {
            dev,
            ino: ino(path),
            nlink: 1,
            blksize: cluster as i64,
            ..Stat::default()
        };
        match e {
            None => {
                st.mode = S_IFDIR | 0o755;
                st.nlink = 2;
            }
            Some(e) => {
                let ro = e.attributes().contains(lamfat::FileAttributes::READ_ONLY);
                if e.is_dir() {
                    st.mode = S_IFDIR | if ro { 0o555 } else { 0o755 };
                    st.nlink = 2;
                    st.size = i64::from(cluster);
                } else {
                    st.mode = S_IFREG | if ro { 0o444 } else { 0o644 };
                    st.size = e.len() as i64;
                }
                let c = u64::from(cluster.max(512));
                st.blocks = ((st.size as u64).div_ceil(c) * c / 512) as i64;
                st.mtime = from_fat(e.modified());
                st.ctime = st.mtime;
                st.atime = from_fat_date(e.accessed()).max(st.mtime);
            }
        }
        st
    }

    /// If `path` is open, move it to a hidden name (its handles keep
    /// working; the last close removes it) and return true. No commit
    /// happens here, so this is part of the caller's transaction.
    fn hide_if_open(&mut self, path: &str) -> Result<bool, Errno> {
        let Some(&id) = self.by_path.get(&key(path)) else {
            return Ok(false);
        };
        let Some(mut n) = self.nodes.remove(&id) else {
            return Ok(false);
        };
        let hidden = alloc::format!("{HIDDEN_PREFIX}{id}");
        let root = self.root();
        let moved = root
            .rename(path, &root, &hidden)
            .map_err(errno)
            .and_then(|()| root.open_file(&hidden).map_err(errno));
        let r = match moved {
            Ok(f) => {
                drop(core::mem::replace(&mut n.file, f));
                self.by_path.remove(&key(path));
                self.by_path.insert(key(&hidden), id);
                n.path = hidden;
                n.unlinked = true;
                Ok(true)
            }
            Err(e) => Err(e),
        };
        self.nodes.insert(id, n);
        r
    }

    /// Move the file at `path` to a fresh hidden name in the root
    /// directory (part of the caller's transaction: no commit here); the
    /// next mount removes it if the machine stops before
    /// [`Self::remove_file`] has.
    fn hide(&mut self, path: &str) -> Result<String, Errno> {
        let id = self.next_node;
        self.next_node += 1;
        let hidden = alloc::format!("{HIDDEN_PREFIX}{id}");
        let root = self.root();
        root.rename(path, &root, &hidden).map_err(errno)?;
        Ok(hidden)
    }

    /// Does the file at `path` hold more clusters than one transaction
    /// may free?
    fn too_big_to_free_at_once(&self, sh: &Shared, path: &str) -> Result<bool, Errno> {
        let mut f = self.root().open_file(path).map_err(errno)?;
        let size = f.seek(SeekFrom::End(0)).map_err(errno)?;
        Ok(size > sh.piece_clusters() * u64::from(self.fs.cluster_size()))
    }

    /// Remove a file's entry and clusters, freeing big files in pieces.
    fn remove_file(&self, sh: &Shared, path: &str) -> Result<(), Errno> {
        let mut f = self.root().open_file(path).map_err(errno)?;
        self.shrink_in_pieces(sh, &mut f, 0)?;
        drop(f);
        sh.make_room(16)?;
        self.root().remove(path).map_err(errno)
    }

    /// Mark the node of `path` (if open) stale.
    fn forget(&mut self, path: &str) {
        if let Some(id) = self.by_path.remove(&key(path)) {
            if let Some(n) = self.nodes.get_mut(&id) {
                n.stale = true;
            }
        }
    }

    /// Free a file's clusters in pieces (so each piece fits the journal),
    /// then leave it empty.
    fn shrink_in_pieces(&self, sh: &Shared, file: &mut LFile, to: u64) -> Result<(), Errno> {
        let size = file.seek(SeekFrom::End(0)).map_err(errno)?;
        let cluster = u64::from(self.fs.cluster_size());
        let step = sh.piece_clusters() * cluster;
        let mut cur = size;
        while cur > to {
            let next = cur.saturating_sub(step).max(to);
            sh.make_room(sh.half_journal())?;
            file.seek(SeekFrom::Start(next)).map_err(errno)?;
            file.truncate().map_err(errno)?;
            file.flush().map_err(errno)?;
            cur = next;
        }
        Ok(())
    }
}

impl FatVolume {
    /// Mount the FAT volume the cache holds. `reserved_bytes`: the FAT
    /// reserved region (writes there are dropped, see `fatio.rs`).
    pub fn new(
        mut cache: BlockCache,
        reserved_bytes: u64,
        read_only: bool,
        dev_id: u64,
        now: NowFn,
    ) -> Result<FatVolume, Errno> {
        let mut boot = [0u8; 512];
        cache.read(0, &mut boot)?;
        let geo = FatGeometry::parse(&boot);
        cache.set_geometry(geo);
        let cache = Arc::new(Mutex::new(cache));
        let io = VolumeIo::new(cache.clone(), reserved_bytes);
        let opts = lamfat::FsOptions::new()
            .time_provider(Clock(now))
            .update_accessed_date(false);
        let fs = lamfat::FileSystem::new(io, opts).map_err(errno)?;
        let fs: &'static Fs = alloc::boxed::Box::leak(alloc::boxed::Box::new(fs));
        let orphans: Vec<String> = fs
            .root_dir()
            .iter()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .filter(|n| n.starts_with(HIDDEN_PREFIX))
            .collect();
        let vol = Arc::new(Shared {
            inner: VolumeLock(Mutex::new(Inner {
                fs,
                nodes: BTreeMap::new(),
                by_path: BTreeMap::new(),
                next_node: 1,
            })),
            cache,
            read_only,
            dev_id,
            now,
            geo,
        });
        // Files unlinked while open when the machine stopped.
        if !read_only {
            let g = vol.inner.lock();
            for name in orphans {
                g.remove_file(&vol, &name)?;
            }
        }
        Ok(FatVolume(vol))
    }

    /// Counters of the block cache (commits, blocks).
    pub fn cache_stats(&self) -> crate::cache::CacheStats {
        self.0.cache.lock().stats
    }

    fn open_file(&self, path: &str, flags: OpenFlags) -> Result<Arc<dyn File>, Errno> {
        let sh = &self.0;
        let mut g = sh.inner.lock();
        let kind = g.kind(path)?;
        if flags.create && kind.is_none() {
            sh.check_writable()?;
            let (parent, name) = split(path);
            if name.len() > 255 {
                return Err(ENAMETOOLONG);
            }
            if g.kind(parent)? != Some(true) {
                return Err(if g.kind(parent)?.is_none() {
                    ENOENT
                } else {
                    ENOTDIR
                });
            }
            sh.make_room(8)?;
            g.root().create_file(path).map_err(errno)?;
        } else if flags.create && flags.exclusive {
            return Err(EEXIST);
        }
        match g.kind(path)? {
            None => return Err(ENOENT),
            Some(true) => {
                if flags.write || flags.truncate {
                    return Err(EISDIR);
                }
                return Ok(Arc::new(FatDir {
                    vol: sh.clone(),
                    path: String::from(path),
                    entries: Mutex::new(None),
                    cursor: Mutex::new(0),
                }));
            }
            Some(false) if flags.directory => return Err(ENOTDIR),
            Some(false) => {}
        }
        if (flags.write || flags.truncate) && sh.read_only {
            return Err(EROFS);
        }
        let k = key(path);
        let id = match g.by_path.get(&k) {
            Some(&id) => id,
            None => {
                let file = g.root().open_file(path).map_err(errno)?;
                let size = g.entry(path)?.len();
                let id = g.next_node;
                g.next_node += 1;
                g.nodes.insert(
                    id,
                    Node {
                        file,
                        path: String::from(path),
                        handles: 0,
                        stale: false,
                        unlinked: false,
                        size,
                        map: None,
                    },
                );
                g.by_path.insert(k, id);
                id
            }
        };
        g.nodes.get_mut(&id).ok_or(EIO)?.handles += 1;
        let handle = FatFile {
            vol: sh.clone(),
            node: id,
            pos: AtomicU64::new(0),
            append: flags.append,
            readable: flags.read,
            writable: flags.write,
        };
        drop(g);
        if flags.truncate && flags.write {
            handle.set_len(0)?;
        } else if flags.truncate {
            // O_RDONLY|O_TRUNC truncates too, as on Linux.
            self.truncate(path, 0)?;
        }
        Ok(Arc::new(handle))
    }
}

impl Filesystem for FatVolume {
    fn fs_type(&self) -> &str {
        "vfat"
    }

    fn read_only(&self) -> bool {
        self.0.read_only
    }

    fn stat(&self, path: &str) -> Result<Stat, Errno> {
        let g = self.0.inner.lock();
        let cluster = g.fs.cluster_size();
        if path.is_empty() {
            return Ok(g.stat_entry(path, None, cluster, self.0.dev_id));
        }
        let e = g.entry(path)?;
        Ok(g.stat_entry(path, Some(&e), cluster, self.0.dev_id))
    }

    fn open(&self, path: &str, flags: OpenFlags) -> Result<Arc<dyn File>, Errno> {
        self.open_file(path, flags)
    }

    fn mkdir(&self, path: &str, _mode: u32) -> Result<(), Errno> {
        let sh = &self.0;
        sh.check_writable()?;
        let g = sh.inner.lock();
        if path.is_empty() || g.kind(path)?.is_some() {
            return Err(EEXIST);
        }
        let (parent, name) = split(path);
        if name.len() > 255 {
            return Err(ENAMETOOLONG);
        }
        match g.kind(parent)? {
            None => return Err(ENOENT),
            Some(false) => return Err(ENOTDIR),
            Some(true) => {}
        }
        sh.make_room(16)?;
        g.root().create_dir(path).map_err(errno)?;
        Ok(())
    }

    fn unlink(&self, path: &str) -> Result<(), Errno> {
        let sh = &self.0;
        sh.check_writable()?;
        let mut g = sh.inner.lock();
        match g.kind(path)? {
            None => return Err(ENOENT),
            Some(true) => return Err(EISDIR),
            Some(false) => {}
        }
        sh.make_room(16)?;
        if g.hide_if_open(path)? {
            return Ok(());
        }
        if g.too_big_to_free_at_once(sh, path)? {
            // Atomic for the app: the entry goes at once (to a hidden name,
            // one transaction), the clusters in pieces after; a crash in
            // between leaves a hidden file the next mount removes.
            g.forget(path);
            let hidden = g.hide(path)?;
            return g.remove_file(sh, &hidden);
        }
        g.remove_file(sh, path)
    }

    fn rmdir(&self, path: &str) -> Result<(), Errno> {
        let sh = &self.0;
        sh.check_writable()?;
        if path.is_empty() {
            return Err(EBUSY);
        }
        let g = sh.inner.lock();
        match g.kind(path)? {
            None => return Err(ENOENT),
            Some(false) => return Err(ENOTDIR),
            Some(true) => {}
        }
        sh.make_room(16)?;
        g.root().remove(path).map_err(errno)
    }

    fn rename(&self, from: &str, to: &str, flags: u32) -> Result<(), Errno> {
        let sh = &self.0;
        if flags & RENAME_EXCHANGE != 0 || flags & !(RENAME_NOREPLACE | RENAME_EXCHANGE) != 0 {
            return Err(EINVAL);
        }
        sh.check_writable()?;
        let mut g = sh.inner.lock();
        let src_dir = match g.kind(from)? {
            None => return Err(ENOENT),
            Some(d) => d,
        };
        if from.is_empty() || to.is_empty() {
            return Err(EBUSY);
        }
        if key(from) == key(to) {
            if from == to {
                return Ok(());
            }
            // A case-only rename: FAT sees one name; go through a temporary.
        } else if src_dir && key(to).starts_with(&(key(from) + "/")) {
            return Err(EINVAL);
        }
        let (to_parent, to_name) = split(to);
        if to_name.len() > 255 {
            return Err(ENAMETOOLONG);
        }
        match g.kind(to_parent)? {
            None => return Err(ENOENT),
            Some(false) => return Err(ENOTDIR),
            Some(true) => {}
        }
        let dst = if key(from) == key(to) {
            None
        } else {
            g.kind(to)?
        };
        if let Some(dst_dir) = dst {
            if flags & RENAME_NOREPLACE != 0 {
                return Err(EEXIST);
            }
            match (src_dir, dst_dir) {
                (false, true) => return Err(EISDIR),
                (true, false) => return Err(ENOTDIR),
                _ => {}
            }
        }
        sh.make_room(sh.half_journal())?;
        // From here on: no commit until the move is done, so the removal
        // of the old target and the move are one transaction. A replaced
        // file too big to free in it is moved to a hidden name instead,
        // and freed after the move.
        let dst_open = g.by_path.contains_key(&key(to));
        let mut orphan = None;
        if dst == Some(false) && !dst_open && g.too_big_to_free_at_once(sh, to)? {
            g.forget(to);
            orphan = Some(g.hide(to)?);
        } else if dst.is_some() && !g.hide_if_open(to)? {
            g.forget(to);
            g.root().remove(to).map_err(errno)?;
        }
        let root = g.root();
        if key(from) == key(to) {
            let tmp = alloc::format!("{}.~rename~", from);
            root.rename(from, &root, &tmp).map_err(errno)?;
            root.rename(&tmp, &root, to).map_err(errno)?;
        } else {
            root.rename(from, &root, to).map_err(errno)?;
        }
        // Move the keys of open nodes (the file itself or files inside a
        // renamed directory).
        let (kf, kt) = (key(from), key(to));
        let moved: Vec<(String, u64)> = g
            .by_path
            .iter()
            .filter(|(k, _)| **k == kf || k.starts_with(&(kf.clone() + "/")))
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        // lamfat's `File` remembers where its directory entry is, and a
        // rename moves the entry: reopen the moved files at their new
        // place (their entries were flushed at the end of the last call,
        // so dropping the old `File` writes nothing).
        let mut result = Ok(());
        for (k, id) in moved {
            g.by_path.remove(&k);
            let nk = kt.clone() + &k[kf.len()..];
            let Some(mut n) = g.nodes.remove(&id) else {
                continue;
            };
            n.path = String::from(to) + &n.path[from.len()..];
            match g.root().open_file(&n.path) {
                Ok(f) => {
                    let old = core::mem::replace(&mut n.file, f);
                    drop(old);
                    g.by_path.insert(nk, id);
                }
                Err(e) => {
                    n.stale = true;
                    result = Err(errno(e));
                }
            }
            g.nodes.insert(id, n);
        }
        if let Some(hidden) = orphan {
            // The rename itself is done; if freeing fails, the next mount
            // removes the hidden file.
            let _ = g.remove_file(sh, &hidden);
        }
        result
    }

    fn truncate(&self, path: &str, len: u64) -> Result<(), Errno> {
        let f = self.open_file(
            path,
            OpenFlags {
                write: true,
                ..OpenFlags::default()
            },
        )?;
        f.set_len(len)
    }

    fn set_times(
        &self,
        path: &str,
        atime: Option<Timespec>,
        mtime: Option<Timespec>,
    ) -> Result<(), Errno> {
        self.0.check_writable()?;
        if path.is_empty() {
            return Ok(()); // the root has no entry to stamp
        }
        let kind = self.0.inner.lock().kind(path)?;
        match kind {
            None => Err(ENOENT),
            // lamfat stamps only files: a directory's entry cannot be
            // changed, and saying so beats a success that changes nothing.
            Some(true) => Err(EPERM),
            Some(false) => {
                let f = self.open_file(path, OpenFlags::default())?;
                f.set_times(atime, mtime)
            }
        }
    }

    fn statfs(&self) -> StatFs {
        let g = self.0.inner.lock();
        let (bsize, total, free) = match g.fs.stats() {
            Ok(s) => (
                s.cluster_size(),
                u64::from(s.total_clusters()),
                u64::from(s.free_clusters()),
            ),
            Err(_) => (g.fs.cluster_size(), 0, 0),
        };
        StatFs {
            f_type: MSDOS_SUPER_MAGIC,
            f_bsize: i64::from(bsize),
            f_blocks: total,
            f_bfree: free,
            f_bavail: free,
            f_files: 0,
            f_ffree: 0,
            f_fsid: [self.0.dev_id as i32, 0],
            f_namelen: 255,
            f_frsize: i64::from(bsize),
            f_flags: if self.0.read_only { ST_RDONLY } else { 0 },
            f_spare: [0; 4],
        }
    }

    fn sync(&self) -> Result<(), Errno> {
        let _g = self.0.inner.lock();
        self.0.cache.lock().checkpoint()
    }
}

/// One open regular file.
pub struct FatFile {
    vol: Arc<Shared>,
    node: u64,
    /// This handle's offset (never locked across I/O: see [`VolumeLock`]).
    pos: AtomicU64,
    append: bool,
    readable: bool,
    writable: bool,
}

impl FatFile {
    /// Run `f` on this file's node under the volume lock.
    fn with<R>(
        &self,
        f: impl FnOnce(&Shared, &mut Inner, &mut LFile) -> Result<R, Errno>,
    ) -> Result<R, Errno> {
        self.with_node(|sh, g, n| f(sh, g, &mut n.file))
    }

    /// Run `f` on this file's node under the volume lock.
    fn with_node<R>(
        &self,
        f: impl FnOnce(&Shared, &mut Inner, &mut Node) -> Result<R, Errno>,
    ) -> Result<R, Errno> {
        let mut g = self.vol.inner.lock();
        let inner: &mut Inner = &mut g;
        let mut node = inner.nodes.remove(&self.node).ok_or(EIO)?;
        let r = if node.stale {
            Err(ESTALE)
        } else {
            f(&self.vol, inner, &mut node)
        };
        inner.nodes.insert(self.node, node);
        r
    }

    /// Copy between `buf` and the file's bytes at `offset` (inside its
    /// size) straight through the block cache, a run of contiguous clusters
    /// at a time.
    fn direct(
        sh: &Shared,
        cluster: u64,
        node: &mut Node,
        offset: u64,
        len: usize,
        mut io: impl FnMut(&mut BlockCache, u64, core::ops::Range<usize>) -> Result<(), Errno>,
    ) -> Result<(), Errno> {
        let map = node.cluster_map(sh)?;
        let mut done = 0usize;
        while done < len {
            let at = offset + done as u64;
            let idx = (at / cluster) as usize;
            let inner = at % cluster;
            let first = *map.get(idx).ok_or(EIO)?;
            // Clusters that follow each other on the device go in one piece
            // (big reads then go from the device straight into `buf`).
            let mut n = ((cluster - inner) as usize).min(len - done);
            let mut k = 1;
            while done + n < len && map.get(idx + k) == Some(&(first + k as u64 * cluster)) {
                n = (n + cluster as usize).min(len - done);
                k += 1;
            }
            io(&mut sh.cache.lock(), first + inner, done..done + n)?;
            done += n;
        }
        Ok(())
    }

    fn do_pread(&self, buf: &mut [u8], offset: u64) -> Result<usize, Errno> {
        if !self.readable {
            return Err(EBADF);
        }
        self.with_node(|sh, g, node| {
            let size = node.size;
            if offset >= size {
                return Ok(0);
            }
            let want = buf.len().min((size - offset) as usize);
            let cluster = u64::from(g.fs.cluster_size());
            Self::direct(sh, cluster, node, offset, want, |c, phys, r| {
                c.read(phys, &mut buf[r])
            })?;
            Ok(want)
        })
    }

    /// Write at `offset` (`None`: at the end), in pieces that fit the
    /// journal; the offset after the last byte written.
    fn do_pwrite(&self, buf: &[u8], offset: Option<u64>) -> Result<(usize, u64), Errno> {
        if !self.writable {
            return Err(EBADF);
        }
        self.vol.check_writable()?;
        let piece = self.vol.piece_bytes();
        self.with_node(|sh, g, node| {
            let size = node.size;
            let start = offset.unwrap_or(size);
            if start >= MAX_FILE_SIZE && !buf.is_empty() {
                return Err(EFBIG);
            }
            let len = buf.len().min((MAX_FILE_SIZE - start) as usize);
            if len == 0 {
                return Ok((0, start)); // never extends the file
            }
            if start + len as u64 <= size {
                // An overwrite inside the file: no allocation changes, the
                // bytes go straight to the cache; then the modification time.
                let cluster = u64::from(g.fs.cluster_size());
                let mut done = 0;
                while done < len {
                    let n = piece.min(len - done);
                    sh.make_room(piece / crate::journal::BLOCK + 8)?;
                    let at = start + done as u64;
                    Self::direct(sh, cluster, node, at, n, |c, phys, r| {
                        c.write(phys, &buf[r.start + done..r.end + done])
                    })?;
                    done += n;
                }
                node.file.set_modified(to_fat((sh.now)()));
                node.file.flush().map_err(errno)?;
                return Ok((len, start + len as u64));
            }
            // The file grows: through lamfat (its clusters so far stay
            // where they are, so the map stays valid and grows later).
            let f = &mut node.file;
            // A write past the end fills the gap with zeros first.
            if start > size {
                let r = fill_zeros(sh, f, size, start - size, piece);
                node.size = f.seek(SeekFrom::End(0)).map_err(errno)?;
                r?;
            }
            let mut done = 0;
            while done < len {
                let n = piece.min(len - done);
                sh.make_room(piece / crate::journal::BLOCK * 2 + 8)?;
                f.seek(SeekFrom::Start(start + done as u64))
                    .map_err(errno)?;
                let r = write_all(f, &buf[done..done + n]);
                f.flush().map_err(errno)?;
                match r {
                    Ok(()) => done += n,
                    Err((written, e)) => {
                        done += written;
                        node.size = node.size.max(start + done as u64);
                        if done == 0 {
                            return Err(e);
                        }
                        break;
                    }
                }
                node.size = node.size.max(start + done as u64);
            }
            Ok((done, start + done as u64))
        })
    }
}

fn write_all(f: &mut LFile, mut buf: &[u8]) -> Result<(), (usize, Errno)> {
    let total = buf.len();
    while !buf.is_empty() {
        match f.write(buf) {
            Ok(0) => return Err((total - buf.len(), ENOSPC)),
            Ok(n) => buf = &buf[n..],
            Err(e) => return Err((total - buf.len(), errno(e))),
        }
    }
    Ok(())
}

/// Append `len` zero bytes at `at` (the current end), in pieces.
fn fill_zeros(sh: &Shared, f: &mut LFile, at: u64, len: u64, piece: usize) -> Result<(), Errno> {
    let zeros = vec![0u8; piece.min(len as usize).max(1)];
    let mut done = 0u64;
    while done < len {
        let n = (zeros.len() as u64).min(len - done) as usize;
        sh.make_room(piece / crate::journal::BLOCK * 2 + 8)?;
        f.seek(SeekFrom::Start(at + done)).map_err(errno)?;
        let r = write_all(f, &zeros[..n]);
        f.flush().map_err(errno)?;
        r.map_err(|(_, e)| e)?;
        done += n as u64;
    }
    Ok(())
}

impl Drop for FatFile {
    fn drop(&mut self) {
        let mut g = self.vol.inner.lock();
        let last = match g.nodes.get_mut(&self.node) {
            Some(n) => {
                n.handles -= 1;
                n.handles == 0
            }
            None => false,
        };
        if last {
            if let Some(mut n) = g.nodes.remove(&self.node) {
                if !n.stale {
                    g.by_path.remove(&key(&n.path));
                    // The entry is flushed after every call already.
                    let _ = n.file.flush();
                    drop(n.file);
                    if n.unlinked {
                        // Nothing to report to at close: a failure leaves
                        // the hidden file for the next mount to remove.
                        let _ = g.remove_file(&self.vol, &n.path);
                    }
                }
            }
        }
    }
}

impl File for FatFile {
    fn read(&self, buf: &mut [u8]) -> Result<usize, Errno> {
        let pos = self.pos.load(Ordering::Acquire);
        let n = self.do_pread(buf, pos)?;
        self.pos.store(pos + n as u64, Ordering::Release);
        Ok(n)
    }

    fn write(&self, buf: &[u8]) -> Result<usize, Errno> {
        let pos = self.pos.load(Ordering::Acquire);
        let at = if self.append { None } else { Some(pos) };
        let (n, end) = self.do_pwrite(buf, at)?;
        self.pos.store(end, Ordering::Release);
        Ok(n)
    }

    fn pread(&self, buf: &mut [u8], offset: u64) -> Result<usize, Errno> {
        self.do_pread(buf, offset)
    }

    fn pwrite(&self, buf: &[u8], offset: u64) -> Result<usize, Errno> {
        // Linux: pwrite on an O_APPEND file appends.
        let at = if self.append { None } else { Some(offset) };
        Ok(self.do_pwrite(buf, at)?.0)
    }

    fn seek(&self, offset: i64, whence: u32) -> Result<u64, Errno> {
        let base = match whence {
            unikernel_runtime::fs::SEEK_SET => 0,
            unikernel_runtime::fs::SEEK_CUR => self.pos.load(Ordering::Acquire) as i64,
            unikernel_runtime::fs::SEEK_END => self.stat().size,
            _ => return Err(EINVAL),
        };
        let new = base.checked_add(offset).ok_or(EINVAL)?;
        if new < 0 {
            return Err(EINVAL);
        }
        self.pos.store(new as u64, Ordering::Release);
        Ok(new as u64)
    }

    fn set_len(&self, len: u64) -> Result<(), Errno> {
        if !self.writable {
            return Err(EINVAL);
        }
        self.vol.check_writable()?;
        if len > MAX_FILE_SIZE {
            return Err(EFBIG);
        }
        let piece = self.vol.piece_bytes();
        self.with_node(|sh, g, node| {
            let size = node.size;
            if len < size {
                node.map = None; // clusters are freed
            }
            let f = &mut node.file;
            let r = if len > size {
                fill_zeros(sh, f, size, len - size, piece)
            } else if len < size {
                g.shrink_in_pieces(sh, f, len)
            } else {
                Ok(())
            };
            node.size = f.seek(SeekFrom::End(0)).map_err(errno)?;
            r
        })
    }

    fn allocate(&self, offset: u64, len: u64) -> Result<(), Errno> {
        if !self.writable {
            return Err(EBADF);
        }
        let end = offset.checked_add(len).ok_or(EFBIG)?;
        if end > MAX_FILE_SIZE {
            return Err(EFBIG);
        }
        if end as i64 > self.stat().size {
            // FAT has no unwritten extents: allocating is writing zeros.
            self.set_len(end)?;
        }
        Ok(())
    }

    fn sync(&self, _data_only: bool) -> Result<(), Errno> {
        self.with(|sh, _, f| {
            f.flush().map_err(errno)?;
            sh.cache.lock().commit()
        })
    }

    fn set_times(&self, atime: Option<Timespec>, mtime: Option<Timespec>) -> Result<(), Errno> {
        self.vol.check_writable()?;
        self.with(|sh, _, f| {
            sh.make_room(8)?;
            if let Some(t) = mtime {
                f.set_modified(to_fat(t.sec));
            }
            if let Some(t) = atime {
                f.set_accessed(to_fat(t.sec).date);
            }
            f.flush().map_err(errno)
        })
    }

    fn statfs(&self) -> Result<StatFs, Errno> {
        Ok(FatVolume(self.vol.clone()).statfs())
    }

    fn stat(&self) -> Stat {
        let path = {
            let g = self.vol.inner.lock();
            match g.nodes.get(&self.node) {
                Some(n) if !n.stale => Some(n.path.clone()),
                _ => None,
            }
        };
        match path {
            Some(p) => FatVolume(self.vol.clone()).stat(&p).unwrap_or_default(),
            None => Stat {
                mode: S_IFREG,
                ..Stat::default()
            },
        }
    }

    fn mappable(&self) -> bool {
        true
    }
}

/// One open directory: lists its entries (read once, at the first
/// `getdents64`).
pub struct FatDir {
    vol: Arc<Shared>,
    path: String,
    entries: Mutex<Option<Vec<(String, u64, u8)>>>,
    cursor: Mutex<usize>,
}

impl FatDir {
    fn list(&self) -> Result<Vec<(String, u64, u8)>, Errno> {
        let g = self.vol.inner.lock();
        let dir = g.dir(&self.path)?;
        let (parent, _) = split(&self.path);
        let mut out = vec![
            (String::from("."), ino(&self.path), 4),
            (String::from(".."), ino(parent), 4),
        ];
        for e in dir.iter() {
            let e = e.map_err(errno)?;
            let name = e.file_name();
            if name == "." || name == ".." {
                continue;
            }
            if self.path.is_empty() && name.starts_with(HIDDEN_PREFIX) {
                continue;
            }
            let full = if self.path.is_empty() {
                name.clone()
            } else {
                alloc::format!("{}/{}", self.path, name)
            };
            out.push((name, ino(&full), if e.is_dir() { 4 } else { 8 }));
        }
        Ok(out)
    }
}

impl File for FatDir {
    fn read(&self, _buf: &mut [u8]) -> Result<usize, Errno> {
        Err(EISDIR)
    }
    fn pread(&self, _buf: &mut [u8], _offset: u64) -> Result<usize, Errno> {
        Err(EISDIR)
    }
    fn seek(&self, offset: i64, whence: u32) -> Result<u64, Errno> {
        if whence != unikernel_runtime::fs::SEEK_SET || offset < 0 {
            return Err(EINVAL);
        }
        *self.cursor.lock() = offset as usize;
        if offset == 0 {
            *self.entries.lock() = None;
        }
        Ok(offset as u64)
    }
    fn stat(&self) -> Stat {
        FatVolume(self.vol.clone())
            .stat(&self.path)
            .unwrap_or_default()
    }
    fn sync(&self, _data_only: bool) -> Result<(), Errno> {
        let _g = self.vol.inner.lock();
        self.vol.cache.lock().commit()
    }
    fn statfs(&self) -> Result<StatFs, Errno> {
        Ok(FatVolume(self.vol.clone()).statfs())
    }
    fn getdents64(&self, buf: &mut [u8]) -> Result<usize, Errno> {
        // Listing takes the volume lock (and may wait for the device):
        // never with this handle's own locks held.
        if self.entries.lock().is_none() {
            let l = self.list()?;
            let mut e = self.entries.lock();
            if e.is_none() {
                *e = Some(l);
            }
        }
        let entries = self.entries.lock();
        let list = entries.as_ref().ok_or(EIO)?;
        let mut cursor = self.cursor.lock();
        let mut used = 0;
        while let Some((name, ino, dtype)) = list.get(*cursor) {
            let reclen = (19 + name.len() + 1).div_ceil(8) * 8;
            if used + reclen > buf.len() {
                if used == 0 {
                    return Err(EINVAL);
                }
                break;
            }
            let rec = &mut buf[used..used + reclen];
            rec.fill(0);
            rec[0..8].copy_from_slice(&ino.to_le_bytes());
            rec[8..16].copy_from_slice(&((*cursor + 1) as i64).to_le_bytes());
            rec[16..18].copy_from_slice(&(reclen as u16).to_le_bytes());
            rec[18] = *dtype;
            rec[19..19 + name.len()].copy_from_slice(name.as_bytes());
            used += reclen;
            *cursor += 1;
        }
        Ok(used)
    }
}

impl core::fmt::Debug for FatVolume {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("FatVolume")
    }
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<FatVolume>();
    is::<FatFile>();
    let _ = ToString::to_string("");
}
