//! The hvt block driver: asks the monitor for its disks (`block_info`),
//! allocates one request ring per disk on the kernel heap (identity-mapped
//! RAM: a virtual address is the guest-physical one the monitor needs),
//! hands it over (`block_setup`) and registers a [`BlockDevice`] per disk
//! whose [`BlockDevice::label`] is the disk's name (`--disk data=FILE`).
//!
//! The ring protocol and its memory ordering are in `hvt_abi::block`. This
//! side is the producer: a call splits its buffer into requests of at most
//! the monitor's `max_request` bytes, keeps up to [`SLOTS`] of them in
//! flight, publishes them together (one producer store) and notifies only
//! when the ring was empty, and waits for the
//! completion index: a short spin at ring 3 (cheap everywhere, native on
//! kvm-pvm), then the `block_wait` call, which blocks on the host, so a
//! waiting guest never spins for long and never runs ring-0 code.
//!
//! Buffers outside identity-mapped RAM (app memory in virtual-only
//! regions) are handed over as their physical pieces
//! (`mm::vm::physical_runs`), so the monitor moves the bytes straight
//! between the host file and the app's pages (a sector that straddles two
//! pieces goes through 512 bytes of a bounce buffer); a buffer with a page
//! that is not mapped goes through the bounce buffer, one request at a time.

use alloc::alloc::{alloc_zeroed, Layout};
use alloc::string::String;
use alloc::sync::Arc;
use core::sync::atomic::{fence, AtomicU32, Ordering};

use hvt_abi::block::{
    ring_bytes, BlockDesc, BlockInfo, BlockNotify, BlockSetup, BlockWait, BLOCK_ATTACHED,
    BLOCK_CAN_FLUSH, BLOCK_OP_FLUSH, BLOCK_OP_READ, BLOCK_OP_WRITE, BLOCK_READ_ONLY, BLOCK_S_OK,
    BLOCK_S_READ_ONLY, MAX_DISKS, MAX_REQUEST, NAME_LEN, RING_CONSUMER, RING_DESCS, RING_POLLING,
    RING_PRODUCER, SECTOR_SIZE,
};
use hvt_abi::hypercall::Call;
use spin::Mutex;
use unikernel_runtime::device::{register_block, BlockDevice};
use unikernel_runtime::errno::{Errno, EINVAL, EIO, EROFS};

use crate::hypercall;

/// Descriptors per ring.
const SLOTS: u32 = 32;
/// Bytes of the bounce buffer (for buffers outside identity-mapped RAM).
const BOUNCE: usize = 256 << 10;
/// Checks of the completion index before the `block_wait` call (enough
/// to cover a 1 MiB request the polling I/O thread serves: a wait that
/// ends in `block_wait` costs an exit and a host wake-up).
const SPINS: u32 = 20_000;
/// Timeout of one `block_wait` call (it is simply made again).
const WAIT_NS: u64 = 500_000_000;
/// The lowest identity-mapped address (the low 64 KiB are never mapped).
const RAM_START: u64 = hvt_abi::layout::BOOT_AREA_START;

/// The ring and our end of it.
struct Ring {
    base: *mut u8,
    /// Index of the next request written.
    next: u32,
    /// Requests below this index are published (the producer index).
    published: u32,
    /// Requests below this index have had their status looked at.
    checked: u32,
    /// The first bad status among the requests since the call began.
    status: u32,
    bounce: Option<*mut u8>,
    /// Scratch list of a buffer's physical pieces (kept to reuse its memory).
    runs: alloc::vec::Vec<(u64, usize)>,
}

impl Ring {
    fn index(&self, offset: u64) -> &AtomicU32 {
        // SAFETY: `base` is a live, 4096-aligned allocation of
        // `ring_bytes(SLOTS)` bytes that is never freed; the producer and
        // consumer offsets are 4-byte aligned and inside it.
        unsafe { &*self.base.add(offset as usize).cast::<AtomicU32>() }
    }
    fn completed(&self) -> u32 {
        self.index(RING_CONSUMER).load(Ordering::Acquire)
    }
    fn desc(&self, i: u32) -> *mut BlockDesc {
        let off = RING_DESCS as usize + (i % SLOTS) as usize * core::mem::size_of::<BlockDesc>();
        // SAFETY: slot `i % SLOTS` is inside the allocation (ring_bytes).
        unsafe { self.base.add(off).cast::<BlockDesc>() }
    }
}

/// One disk of the monitor's.
pub struct HvtDisk {
    index: u32,
    name: String,
    label: String,
    sectors: u64,
    read_only: bool,
    can_flush: bool,
    max_request: u64,
    /// Guest RAM is `[0, mem_size)`, identity-mapped.
    mem_size: u64,
    ring: Mutex<Ring>,
}

// SAFETY: the raw pointers name heap memory owned by the device for the
// whole run (never freed); every access goes through the lock or is an
// atomic index access.
unsafe impl Send for HvtDisk {}
// SAFETY: as above.
unsafe impl Sync for HvtDisk {}

fn alloc_pages(bytes: usize) -> Option<*mut u8> {
    let layout = Layout::from_size_align(bytes, 4096).ok()?;
    // SAFETY: a non-zero size with a valid alignment.
    let p = unsafe { alloc_zeroed(layout) };
    (!p.is_null()).then_some(p)
}

/// Finds the monitor's disks, hands each its ring and registers it. Runs
/// in `hvt_main` before the runtime starts (the heap already has frames).
pub fn probe(mem_size: u64) {
    let mut first = BlockInfo::default();
    hypercall::call(Call::BlockInfo, &mut first);
    for index in 0..first.count.min(MAX_DISKS) {
        let mut info = BlockInfo {
            disk: index,
            ..Default::default()
        };
        hypercall::call(Call::BlockInfo, &mut info);
        if info.flags & BLOCK_ATTACHED == 0 {
            continue;
        }
        let Some(base) = alloc_pages(ring_bytes(SLOTS) as usize) else {
            // Without memory for the ring the disk stays unused (the fs
            // component then reports it missing).
            return;
        };
        let mut setup = BlockSetup {
            disk: index,
            slots: SLOTS,
            ring: base as u64,
        };
        hypercall::call(Call::BlockSetup, &mut setup);
        let n = info.name.iter().position(|&b| b == 0).unwrap_or(NAME_LEN);
        let label = String::from(core::str::from_utf8(&info.name[..n]).unwrap_or(""));
        let mut name = String::from("hvt-blk");
        name.push(char::from(b'0' + index as u8));
        let max_request = u64::from(info.max_request)
            .clamp(SECTOR_SIZE, MAX_REQUEST)
            .next_multiple_of(SECTOR_SIZE);
        register_block(Arc::new(HvtDisk {
            index,
            name,
            label,
            sectors: info.sectors,
            read_only: info.flags & BLOCK_READ_ONLY != 0,
            can_flush: info.flags & BLOCK_CAN_FLUSH != 0,
            max_request,
            mem_size,
            ring: Mutex::new(Ring {
                base,
                next: 0,
                published: 0,
                checked: 0,
                status: BLOCK_S_OK,
                bounce: None,
                runs: alloc::vec::Vec::new(),
            }),
        }));
    }
}

impl HvtDisk {
    /// Waits until the completion index reaches `until` (wrapping).
    fn wait_for(&self, r: &Ring, until: u32) {
        let reached = |c: u32| until.wrapping_sub(c) as i32 <= 0;
        for _ in 0..SPINS {
            if reached(r.completed()) {
                return;
            }
            core::hint::spin_loop();
        }
        while !reached(r.completed()) {
            let mut w = BlockWait {
                disk: self.index,
                until,
                timeout_nsecs: WAIT_NS,
                ..Default::default()
            };
            hypercall::call(Call::BlockWait, &mut w);
        }
    }

    /// Looks at the statuses of the completed requests below `upto`.
    fn check(&self, r: &mut Ring, upto: u32) {
        while (upto.wrapping_sub(r.checked) as i32) > 0 {
            // SAFETY: the request completed (the caller waited for it), so
            // the monitor wrote its status and will not touch the slot.
            let s = unsafe { core::ptr::addr_of!((*r.desc(r.checked)).status).read_volatile() };
            if r.status == BLOCK_S_OK {
                r.status = s;
            }
            r.checked = r.checked.wrapping_add(1);
        }
    }

    /// Writes one request into the next slot (waiting for a free slot
    /// first) without publishing it: [`Self::publish`] (called by
    /// [`Self::finish`]) hands a whole call's requests over at once, so the
    /// monitor serves them all in one `block_notify`.
    fn submit(&self, r: &mut Ring, op: u32, sector: u64, addr: u64, len: u64) {
        let i = r.next;
        if i.wrapping_sub(r.completed()) >= SLOTS {
            self.publish(r);
            self.wait_for(r, i.wrapping_sub(SLOTS).wrapping_add(1));
        }
        self.check(r, i.wrapping_sub(SLOTS).wrapping_add(1));
        // SAFETY: slot `i % SLOTS` is free (the request that used it
        // completed) and not published yet, so the monitor does not read it.
        unsafe {
            r.desc(i).write_volatile(BlockDesc {
                op,
                status: u32::MAX,
                sector,
                addr,
                len,
            })
        };
        r.next = i.wrapping_add(1);
    }

    /// Publishes the requests written since the last call with one store
    /// of the producer index, and notifies if the monitor had drained the
    /// ring and is not polling it (store producer, full fence, load the
    /// completion index and `polling`; see hvt_abi::block). The monitor sees all of them or none, so a
    /// completion index below `r.next` but above the old producer means it
    /// is awake and goes on by itself.
    fn publish(&self, r: &mut Ring) {
        let old = r.published;
        if old == r.next {
            return;
        }
        r.index(RING_PRODUCER).store(r.next, Ordering::Release);
        r.published = r.next;
        fence(Ordering::SeqCst);
        if r.completed() == old && r.index(RING_POLLING).load(Ordering::Acquire) == 0 {
            let mut n = BlockNotify {
                disk: self.index,
                _pad: 0,
            };
            hypercall::call(Call::BlockNotify, &mut n);
        }
    }

    /// Waits for every published request; the first bad status, if any.
    fn finish(&self, r: &mut Ring) -> Result<(), Errno> {
        self.publish(r);
        let end = r.next;
        self.wait_for(r, end);
        self.check(r, end);
        let s = core::mem::replace(&mut r.status, BLOCK_S_OK);
        match s {
            BLOCK_S_OK => Ok(()),
            BLOCK_S_READ_ONLY => Err(EROFS),
            _ => Err(EIO),
        }
    }

    fn check_range(&self, sector: u64, len: usize) -> Result<(), Errno> {
        let len = len as u64;
        if len == 0 || !len.is_multiple_of(SECTOR_SIZE) {
            return Err(EINVAL);
        }
        let count = len / SECTOR_SIZE;
        if sector > self.sectors || count > self.sectors - sector {
            return Err(EINVAL);
        }
        Ok(())
    }

    fn identity_mapped(&self, addr: u64, len: usize) -> bool {
        addr >= RAM_START
            && addr
                .checked_add(len as u64)
                .is_some_and(|e| e <= self.mem_size)
    }

    /// Moves `len` bytes between the disk at `sector` and the buffer at
    /// `addr` (`write`: to the disk).
    fn transfer(&self, write: bool, sector: u64, addr: *mut u8, len: usize) -> Result<(), Errno> {
        self.check_range(sector, len)?;
        if write && self.read_only {
            return Err(EROFS);
        }
        let op = if write { BLOCK_OP_WRITE } else { BLOCK_OP_READ };
        let mut r = self.ring.lock();
        if self.identity_mapped(addr as u64, len) {
            let mut done = 0usize;
            while done < len {
                let n = (len - done).min(self.max_request as usize);
                let s = sector + (done as u64) / SECTOR_SIZE;
                self.submit(&mut r, op, s, addr as u64 + done as u64, n as u64);
                done += n;
            }
            return self.finish(&mut r);
        }
        // App memory: hand the monitor the buffer's physical pieces (no
        // copy) when every page is mapped; otherwise the bounce buffer.
        let mut runs = core::mem::take(&mut r.runs);
        let mapped = unikernel_runtime::mm::vm::physical_runs(
            addr as u64,
            len,
            !write,
            self.max_request as usize,
            &mut runs,
        );
        let done = if mapped && runs.iter().all(|&(p, n)| self.identity_mapped(p, n)) {
            self.scattered(&mut r, write, sector, addr, len, &runs)
        } else {
            Ok(false)
        };
        r.runs = runs;
        drop(r);
        if done? {
            return Ok(());
        }
        self.bounced(write, sector, addr, len)
    }

    /// [`Self::transfer`] of an app buffer whose physical pieces are
    /// `runs`: a request per stretch of whole sectors inside one piece, and
    /// each sector that straddles two pieces (an app buffer need not start
    /// on a sector boundary) through its own 512 bytes of the bounce
    /// buffer. False (nothing done) when more sectors straddle than the
    /// bounce buffer holds.
    fn scattered(
        &self,
        r: &mut Ring,
        write: bool,
        sector: u64,
        addr: *mut u8,
        len: usize,
        runs: &[(u64, usize)],
    ) -> Result<bool, Errno> {
        let op = if write { BLOCK_OP_WRITE } else { BLOCK_OP_READ };
        let sec = SECTOR_SIZE as usize;
        // The plan: (buffer offset, Some(physical address) or None for a
        // straddling sector, bytes), in buffer order.
        let mut plan: alloc::vec::Vec<(usize, Option<u64>, usize)> = alloc::vec::Vec::new();
        let (mut j, mut run_start, mut at) = (0usize, 0usize, 0usize);
        while at < len {
            while run_start + runs[j].1 <= at {
                run_start += runs[j].1;
                j += 1;
            }
            let (phys, n) = runs[j];
            let whole = (run_start + n - at) / sec * sec;
            if whole > 0 {
                let piece = whole.min(self.max_request as usize);
                plan.push((at, Some(phys + (at - run_start) as u64), piece));
                at += piece;
            } else {
                plan.push((at, None, sec));
                at += sec;
            }
        }
        let straddles = plan.iter().filter(|p| p.1.is_none()).count();
        if straddles > BOUNCE / sec {
            return Ok(false);
        }
        let bounce = match r.bounce {
            Some(b) => b,
            None => {
                let b = alloc_pages(BOUNCE).ok_or(EIO)?;
                r.bounce = Some(b);
                b
            }
        };
        let mut slot = 0usize;
        for &(at, phys, n) in &plan {
            let s = sector + (at / sec) as u64;
            match phys {
                // SAFETY (of handing the monitor these pages): they back
                // the caller's buffer, and nothing can unmap them before
                // `finish` returns: the wait never yields to another
                // thread of the app.
                Some(p) => self.submit(r, op, s, p, n as u64),
                None => {
                    // SAFETY: `bounce + slot * 512 .. + 512` is inside the
                    // bounce buffer (slot < BOUNCE / 512, checked above);
                    // `addr + at .. + 512` inside the caller's buffer.
                    let b = unsafe { bounce.add(slot * sec) };
                    if write {
                        // SAFETY: as above.
                        unsafe { core::ptr::copy_nonoverlapping(addr.add(at), b, sec) };
                    }
                    self.submit(r, op, s, b as u64, SECTOR_SIZE);
                    slot += 1;
                }
            }
        }
        self.finish(r)?;
        if !write {
            // The straddling sectors, from the bounce buffer into place.
            for (slot, &(at, _, _)) in plan.iter().filter(|p| p.1.is_none()).enumerate() {
                // SAFETY: as when submitting; the request that filled this
                // slot has completed.
                unsafe {
                    core::ptr::copy_nonoverlapping(bounce.add(slot * sec), addr.add(at), sec)
                };
            }
        }
        Ok(true)
    }

    /// [`Self::transfer`] through the bounce buffer, a piece at a time.
    fn bounced(&self, write: bool, sector: u64, addr: *mut u8, len: usize) -> Result<(), Errno> {
        let op = if write { BLOCK_OP_WRITE } else { BLOCK_OP_READ };
        let mut r = self.ring.lock();
        let bounce = match r.bounce {
            Some(b) => b,
            None => {
                let b = alloc_pages(BOUNCE).ok_or(EIO)?;
                r.bounce = Some(b);
                b
            }
        };
        let piece = BOUNCE.min(self.max_request as usize);
        let mut done = 0usize;
        while done < len {
            let n = (len - done).min(piece);
            let s = sector + (done as u64) / SECTOR_SIZE;
            // SAFETY: `addr + done .. + n` is inside the caller's buffer;
            // the bounce buffer holds BOUNCE >= n bytes and is ours (no
            // request using it is in flight: each piece is finished).
            unsafe {
                if write {
                    core::ptr::copy_nonoverlapping(addr.add(done), bounce, n);
                }
                self.submit(&mut r, op, s, bounce as u64, n as u64);
                self.finish(&mut r)?;
                if !write {
                    core::ptr::copy_nonoverlapping(bounce, addr.add(done), n);
                }
            }
            done += n;
        }
        Ok(())
    }
}

impl BlockDevice for HvtDisk {
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
        self.read_only
    }

    fn can_flush(&self) -> bool {
        self.can_flush
    }

    fn read(&self, sector: u64, buf: &mut [u8]) -> Result<(), Errno> {
        self.transfer(false, sector, buf.as_mut_ptr(), buf.len())
    }

    fn write(&self, sector: u64, buf: &[u8]) -> Result<(), Errno> {
        // The monitor only reads the buffer of a write.
        self.transfer(true, sector, buf.as_ptr().cast_mut(), buf.len())
    }

    fn flush(&self) -> Result<(), Errno> {
        if self.read_only {
            return Ok(());
        }
        let mut r = self.ring.lock();
        self.submit(&mut r, BLOCK_OP_FLUSH, 0, 0, 0);
        self.finish(&mut r)
    }
}

/// The option that runs [`selftest`]: `UNIKERNEL_BLOCK_SELFTEST=MIB`.
pub const SELFTEST_OPTION: &str = "UNIKERNEL_BLOCK_SELFTEST";

/// A boot-time check of the driver below any filesystem, for tests and
/// measurements: with `UNIKERNEL_BLOCK_SELFTEST=MIB` among the runtime
/// options, before the app starts, on every disk: **overwrites** its first
/// MIB MiB (at most 1024, at most the disk) with a pattern through
/// [`BlockDevice::write`] in 1 MiB calls, flushes, reads it back and
/// compares, makes 256 reads of 4 KiB at scattered offsets, and checks the
/// errors (past the end: `EINVAL`; a write to a read-only disk: `EROFS`).
/// Prints one line per disk through `print`. Destroys the disk's data:
/// never set it on a volume you keep.
pub fn selftest(options: &[String], now_ns: &dyn Fn() -> u64, print: &dyn Fn(&str)) {
    let Some(mib) = options
        .iter()
        .find_map(|o| o.strip_prefix(SELFTEST_OPTION)?.strip_prefix('='))
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return;
    };
    for dev in unikernel_runtime::device::block_devices() {
        let line = run_selftest(&*dev, mib.clamp(1, 1024), now_ns);
        print(&line);
    }
}

fn run_selftest(dev: &dyn BlockDevice, mib: u64, now_ns: &dyn Fn() -> u64) -> String {
    use alloc::format;
    let name = dev.label().unwrap_or(dev.name());
    let chunk = 1usize << 20;
    let per_chunk = (chunk as u64) / SECTOR_SIZE;
    let mib = mib.min(dev.sectors() / per_chunk);
    // Contiguous identity-mapped frames (the heap cannot always give 1 MiB
    // in one piece), never returned: a test boot.
    let frames = unikernel_runtime::mm::frame::FRAMES
        .lock()
        .alloc_contiguous(chunk as u64 / 4096);
    let Some(buf) = frames else {
        return format!("[unikernel] hvt: block selftest {name}: no memory\n");
    };
    // SAFETY: `chunk` bytes of frames nobody else owns, identity-mapped.
    let buf = unsafe { core::slice::from_raw_parts_mut(buf as *mut u8, chunk) };
    let fill = |buf: &mut [u8], m: u64| {
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (i as u64 ^ (m * 131) ^ (i as u64 >> 9)) as u8;
        }
    };
    let ms = |t0: u64, t1: u64| (t1 - t0) as f64 / 1e6;
    let rate = |mib: u64, ns: u64| mib as f64 / (ns.max(1) as f64 / 1e9);
    let wrote = if dev.read_only() { 0 } else { mib };
    let mut errors = alloc::vec::Vec::new();
    let ro = dev.read_only();
    if ro {
        errors.push(match dev.write(0, &buf[..512]) {
            Err(EROFS) => "EROFS on write ok",
            _ => "write to a read-only disk did not give EROFS",
        });
    }
    // Only the device calls are timed (not filling or comparing the buffer).
    let mut write_ns = 0;
    if !ro {
        for m in 0..mib {
            fill(buf, m);
            let t = now_ns();
            if let Err(e) = dev.write(m * per_chunk, buf) {
                return format!(
                    "[unikernel] hvt: block selftest {name}: write of MiB {m} failed: errno {e}\n"
                );
            }
            write_ns += now_ns() - t;
        }
    }
    let t1 = now_ns();
    let flushed = dev.flush();
    let t2 = now_ns();
    let mut same = true;
    let mut read_ns = 0;
    for m in 0..mib {
        let t = now_ns();
        if let Err(e) = dev.read(m * per_chunk, buf) {
            return format!(
                "[unikernel] hvt: block selftest {name}: read of MiB {m} failed: errno {e}\n"
            );
        }
        read_ns += now_ns() - t;
        if !ro {
            let ok = buf
                .iter()
                .enumerate()
                .all(|(i, &b)| b == (i as u64 ^ (m * 131) ^ (i as u64 >> 9)) as u8);
            same &= ok;
        }
    }
    let t3 = now_ns();
    let span = dev.sectors().saturating_sub(8).max(1);
    for i in 0..256u64 {
        let sector = (i.wrapping_mul(2_654_435_761) % span) & !7;
        if dev.read(sector, &mut buf[..4096]).is_err() {
            errors.push("a 4 KiB read failed");
            break;
        }
    }
    let t4 = now_ns();
    errors.push(match dev.read(dev.sectors(), &mut buf[..512]) {
        Err(EINVAL) => "EINVAL past the end ok",
        _ => "a read past the end did not give EINVAL",
    });
    errors.push(match dev.read(0, &mut buf[..100]) {
        Err(EINVAL) => "EINVAL for 100 bytes ok",
        _ => "a read of 100 bytes did not give EINVAL",
    });
    format!(
        "[unikernel] hvt: block selftest {name}: {} sectors{}; wrote {wrote} MiB in {:.1} ms ({:.0} MiB/s), flush {} in {:.1} ms, read {mib} MiB in {:.1} ms ({:.0} MiB/s), compare {}, 256 reads of 4 KiB in {:.1} ms; {}\n",
        dev.sectors(),
        if ro { " (read-only)" } else { "" },
        write_ns as f64 / 1e6,
        rate(wrote, write_ns),
        if flushed.is_ok() { "ok" } else { "FAILED" },
        ms(t1, t2),
        read_ns as f64 / 1e6,
        rate(mib, read_ns),
        if ro { "skipped" } else if same { "ok" } else { "FAILED" },
        ms(t3, t4),
        errors.join(", ")
    )
}
