//! A disk's I/O thread: serves its request ring while the vCPU runs.
//!
//! It sleeps in `poll(2)` on the stop and kick eventfds. Woken, it serves
//! every request between its own completion index and the guest's
//! producer, in order, and then watches the empty ring for a while
//! ([`POLL`], with the ring's `polling` word set, so the guest does not
//! notify) before it sleeps again. For each request it copies the
//! descriptor out of guest memory once,
//! checks the copy, moves the bytes with `pread`/`pwrite` straight between
//! the file and the guest buffer (or calls `fdatasync`), writes the status
//! and publishes the new completion index. A request that breaks the
//! protocol ends the thread with a [`Fault`] message; the guest is stopped.
//!
//! The vCPU thread serves requests itself ([`serve_inline`]) when the
//! guest's `block_notify` finds them at the head of the ring: the vCPU
//! thread is already out of the guest, the guest's driver waits for the
//! request right away anyway, and handing it to a sleeping I/O thread and
//! waking the vCPU again costs more than the `pread` of a MiB itself
//! (measured: 1 MiB reads at 4.7 GB/s through the I/O thread). The two
//! share the completion index under a lock (`DiskShared::cursor`);
//! everything else is the I/O thread's.
use std::os::fd::AsRawFd;
use std::sync::atomic::{fence, Ordering};

use hvt_abi::block::{
    BlockDesc, BLOCK_OP_FLUSH, BLOCK_OP_READ, BLOCK_OP_WRITE, BLOCK_S_IO_ERROR, BLOCK_S_OK,
    BLOCK_S_READ_ONLY, DESC_STATUS, MAX_REQUEST, RING_CONSUMER, RING_DESCS, RING_POLLING,
    RING_PRODUCER, SECTOR_SIZE,
};

use super::DiskShared;
use crate::memory::SharedRam;

/// Requests served before the thread looks at its stop eventfd again.
const BATCH: u32 = 64;
/// How long the thread watches an empty ring before it sleeps: a guest
/// that issues its next request within this time (a sequential read's
/// next MiB, the next 4 KiB of a random read) needs no `block_notify`
/// exit, which costs ~25 us on kvm-pvm.
const POLL: std::time::Duration = std::time::Duration::from_micros(200);
/// The largest request the vCPU thread serves itself in `block_notify`.
pub(super) const INLINE_MAX: u64 = MAX_REQUEST;
/// Requests the vCPU thread serves in one `block_notify` at most (the rest
/// go to the I/O thread, so one call never holds the vCPU for long).
const INLINE_BATCH: u32 = 32;

/// Why the thread stopped the guest (one line, without the prefix).
pub(super) struct Fault(pub String);

/// The ring the guest handed over (checked by `block_setup`).
#[derive(Clone, Copy, Debug)]
pub(super) struct Ring {
    pub gpa: u64,
    pub slots: u32,
}

fn pollfd(fd: i32) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// The thread's body: returns when told to stop, or with the fault the
/// guest's ring showed.
pub(super) fn serve(disk: &DiskShared, ram: SharedRam, ring: Ring) -> Result<(), Fault> {
    let mut more = false;
    loop {
        let mut fds = [pollfd(disk.stop.as_raw_fd()), pollfd(disk.kick.as_raw_fd())];
        let timeout = if more { 0 } else { -1 };
        // SAFETY: two valid pollfds, for the call's duration.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if fds[0].revents != 0 {
            return Ok(());
        }
        if fds[1].revents != 0 {
            if let Ok(n) = disk.kick.read() {
                disk.stats.kicks.fetch_add(n, Ordering::Relaxed);
            }
        }
        {
            let mut next = disk.cursor.lock().unwrap_or_else(|p| p.into_inner());
            let mut s = Server {
                disk,
                ram,
                ring,
                next: &mut next,
            };
            more = s.serve_batch(BATCH, u64::MAX)?;
        }
        if !more {
            more = poll_ring(disk, ram, ring, POLL)?;
        }
    }
}

/// With the ring empty: say so in its `polling` word and watch the
/// producer for `window`, serving what arrives (each request starts the
/// window again); then clear `polling`, fence and look once more (see
/// hvt_abi::block). True if requests are waiting. The cursor is taken only
/// to serve, so a `block_notify` that raced the `polling` word can be
/// served inline meanwhile.
fn poll_ring(
    disk: &DiskShared,
    ram: SharedRam,
    ring: Ring,
    window: std::time::Duration,
) -> Result<bool, Fault> {
    let fault = |e| Fault(format!("disk {:?}: ring: {e}", disk.name));
    let flag = ring.gpa + RING_POLLING;
    let waiting = || -> Result<bool, Fault> {
        let p = ram.load_acquire(ring.gpa + RING_PRODUCER).map_err(fault)?;
        Ok(p != disk.completed.load(Ordering::SeqCst))
    };
    ram.store_release(flag, 1).map_err(fault)?;
    let mut since = std::time::Instant::now();
    while since.elapsed() < window {
        if !waiting()? {
            std::hint::spin_loop();
            continue;
        }
        if let Ok(mut next) = disk.cursor.try_lock() {
            let mut s = Server {
                disk,
                ram,
                ring,
                next: &mut next,
            };
            if s.serve_batch(BATCH, u64::MAX)? {
                break; // a long burst: back to the main loop
            }
            since = std::time::Instant::now();
        }
    }
    ram.store_release(flag, 0).map_err(fault)?;
    fence(Ordering::SeqCst);
    waiting()
}

/// The vCPU thread's part (in `block_notify`): serves up to
/// [`INLINE_BATCH`] requests at the head of the ring while each is a flush
/// or a read or write of at most [`INLINE_MAX`] bytes. Returns true if requests are left
/// for the I/O thread (which the caller then wakes). Nothing is served
/// while the I/O thread holds the cursor (it is awake anyway).
pub(super) fn serve_inline(disk: &DiskShared, ram: SharedRam, ring: Ring) -> Result<bool, Fault> {
    let Ok(mut next) = disk.cursor.try_lock() else {
        return Ok(true);
    };
    let mut s = Server {
        disk,
        ram,
        ring,
        next: &mut next,
    };
    s.serve_batch(INLINE_BATCH, INLINE_MAX)
}

struct Server<'a> {
    disk: &'a DiskShared,
    ram: SharedRam,
    ring: Ring,
    /// The completion index (the guest's copy is only written, never read).
    next: &'a mut u32,
}

impl Server<'_> {
    fn fault(&self, what: String) -> Fault {
        Fault(format!("disk {:?}: {what}", self.disk.name))
    }

    fn producer(&self) -> Result<u32, Fault> {
        let p = self
            .ram
            .load_acquire(self.ring.gpa + RING_PRODUCER)
            .map_err(|e| self.fault(format!("ring: {e}")))?;
        let n = p.wrapping_sub(*self.next);
        if n > self.ring.slots {
            return Err(self.fault(format!(
                "producer index {p} is {n} ahead of completion index {}, but the ring has {} slots",
                *self.next, self.ring.slots
            )));
        }
        Ok(p)
    }

    /// Serves up to `batch` requests, stopping at one that moves more than
    /// `max_len` bytes (when `max_len` is not `u64::MAX`); true
    /// if requests are waiting still.
    fn serve_batch(&mut self, batch: u32, max_len: u64) -> Result<bool, Fault> {
        let mut served = 0;
        loop {
            let mut producer = self.producer()?;
            if producer == *self.next {
                // Before sleeping: the completion index is stored, a full
                // fence, then the producer again (see hvt_abi::block).
                fence(Ordering::SeqCst);
                producer = self.producer()?;
                if producer == *self.next {
                    return Ok(false);
                }
            }
            while *self.next != producer {
                if served == batch || !self.serve_one(max_len)? {
                    return Ok(true);
                }
                served += 1;
            }
        }
    }

    fn slot(&self, index: u32) -> u64 {
        self.ring.gpa
            + RING_DESCS
            + u64::from(index & (self.ring.slots - 1)) * std::mem::size_of::<BlockDesc>() as u64
    }

    /// Serves the request at the completion index; false (and nothing
    /// done) if it moves more than `max_len` bytes while
    /// `max_len` is not `u64::MAX` (the inline path leaves those to the I/O
    /// thread, which reads the descriptor afresh).
    fn serve_one(&mut self, max_len: u64) -> Result<bool, Fault> {
        let index = *self.next;
        let gpa = self.slot(index);
        // One copy of the descriptor: the guest may change the ring at any
        // time, only this copy is checked and used.
        let d: BlockDesc = self
            .ram
            .read_obj(gpa)
            .map_err(|e| self.fault(format!("request {index}: {e}")))?;
        if max_len != u64::MAX && d.len > max_len {
            return Ok(false);
        }
        if max_len != u64::MAX {
            self.disk.stats.inline.fetch_add(1, Ordering::Relaxed);
        }
        let status = self.execute(index, &d)?;
        self.ram
            .write_obj(gpa + DESC_STATUS, &status)
            .map_err(|e| self.fault(format!("request {index}: {e}")))?;
        *self.next = index.wrapping_add(1);
        self.ram
            .store_release(self.ring.gpa + RING_CONSUMER, *self.next)
            .map_err(|e| self.fault(format!("ring: {e}")))?;
        self.disk.completed(*self.next);
        Ok(true)
    }

    fn execute(&self, index: u32, d: &BlockDesc) -> Result<u32, Fault> {
        let stats = &self.disk.stats;
        if d.op == BLOCK_OP_FLUSH {
            stats.flushes.fetch_add(1, Ordering::Relaxed);
            if self.disk.read_only {
                return Ok(BLOCK_S_OK);
            }
            // SAFETY: fdatasync on a file we own.
            let r = unsafe { libc::fdatasync(self.disk.file.as_raw_fd()) };
            return Ok(if r == 0 {
                BLOCK_S_OK
            } else {
                self.host_error("fdatasync", std::io::Error::last_os_error())
            });
        }
        let write = match d.op {
            BLOCK_OP_READ => false,
            BLOCK_OP_WRITE => true,
            op => {
                return Err(self.fault(format!(
                    "request {index}: unknown op {op} (1 read, 2 write, 3 flush)"
                )))
            }
        };
        if d.len == 0 || d.len % SECTOR_SIZE != 0 || d.len > MAX_REQUEST {
            return Err(self.fault(format!(
                "request {index}: length {} is not a non-zero multiple of {SECTOR_SIZE} up to {MAX_REQUEST}",
                d.len
            )));
        }
        let count = d.len / SECTOR_SIZE;
        let sectors = self.disk.sectors;
        if d.sector >= sectors || count > sectors - d.sector {
            return Err(self.fault(format!(
                "request {index}: {count} sectors at sector {} run past the end of the disk ({sectors} sectors)",
                d.sector
            )));
        }
        let buf = self
            .ram
            .host_range(d.addr, d.len)
            .map_err(|e| self.fault(format!("request {index}: buffer: {e}")))?;
        if write && self.disk.read_only {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            return Ok(BLOCK_S_READ_ONLY);
        }
        let offset = d.sector * SECTOR_SIZE;
        let r = if write {
            stats.writes.fetch_add(1, Ordering::Relaxed);
            stats.write_bytes.fetch_add(d.len, Ordering::Relaxed);
            self.transfer(true, buf, d.len as usize, offset)
        } else {
            stats.reads.fetch_add(1, Ordering::Relaxed);
            stats.read_bytes.fetch_add(d.len, Ordering::Relaxed);
            self.transfer(false, buf, d.len as usize, offset)
        };
        Ok(match r {
            Ok(()) => BLOCK_S_OK,
            Err(e) => self.host_error(if write { "pwrite" } else { "pread" }, e),
        })
    }

    /// Moves `len` bytes between the guest buffer at `buf` and the file at
    /// `offset`, retrying short transfers and EINTR.
    fn transfer(&self, write: bool, buf: *mut u8, len: usize, offset: u64) -> std::io::Result<()> {
        let fd = self.disk.file.as_raw_fd();
        let mut done = 0usize;
        while done < len {
            let at = (offset + done as u64) as libc::off_t;
            // SAFETY: `buf..buf + len` lies inside guest RAM (host_range
            // checked it) and stays mapped while this thread runs (the
            // device is stopped before the memory goes away). The kernel
            // copies bytes to or from it; the guest changing them meanwhile
            // only changes what is written or read, never our memory.
            let n = unsafe {
                if write {
                    libc::pwrite(fd, buf.add(done).cast(), len - done, at)
                } else {
                    libc::pread(fd, buf.add(done).cast(), len - done, at)
                }
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n == 0 {
                // The file shrank under us (another program truncated it).
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
            }
            done += n as usize;
        }
        Ok(())
    }

    /// A failing host call: counted, reported once, and an error status.
    fn host_error(&self, what: &str, e: std::io::Error) -> u32 {
        if self.disk.stats.errors.fetch_add(1, Ordering::Relaxed) == 0 {
            eprintln!(
                "unikernel-hvt: disk {:?}: {what} failed: {e}; the guest gets an I/O error",
                self.disk.name
            );
        }
        BLOCK_S_IO_ERROR
    }
}
