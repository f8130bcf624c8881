//! Blkfront: the guest half of Xen's split block driver (`vbd`), one ring
//! per disk, synchronous requests through granted bounce pages
//! (docs/xen.md, "Blkfront").
//!
//! The toolstack creates one `device/vbd/<id>` per disk of the domain
//! config (the id encodes the virtual device: `xvda` = 51712 = 202 << 8)
//! and a backend directory in dom0 (blkback or QEMU's qdisk). For each,
//! in ascending id order (the order of the config's `disk` list):
//!
//! 1. read `backend` and `backend-id`; grant the backend one ring page
//!    (the `io/ring.h` layout with `io/blkif.h` slots: 112-byte requests,
//!    16-byte responses, 32 slots), [`BOUNCE_PAGES`] data pages and one
//!    page of indirect segments, all granted once for the life of the
//!    guest; allocate an unbound event channel for the backend domain;
//! 2. wait for the backend's `state` to be InitWait (2), write
//!    `ring-ref`, `event-channel`, `protocol = x86_64-abi` and
//!    `state = 3` (Initialised);
//! 3. wait for the backend's `state` to be Connected (4), then read its
//!    `sectors`, `sector-size`, `info` (`VDISK_READONLY`), `mode`,
//!    `feature-flush-cache`, `feature-barrier` and
//!    `feature-max-indirect-segments`; write `state = 4` (Connected);
//! 4. register a [`BlockDevice`](unikernel_runtime::device::BlockDevice)
//!    named after the virtual device (`xvda`, `xvdb`, ...), without a
//!    label: the runtime matches devices to the declared disks in order.
//!
//! A read or write is cut into rounds of at most [`BOUNCE_PAGES`] pages:
//! with `feature-max-indirect-segments` one `BLKIF_OP_INDIRECT` request
//! per round (its segments in the indirect page), otherwise up to three
//! direct requests of at most 11 segments each. Data is copied between the
//! caller's buffer and the bounce pages; the requests are pushed (the
//! backend is notified when its `req_event` asks), and the caller idles on
//! the event channel until every response of the round is in. A flush is
//! `BLKIF_OP_FLUSH_DISKCACHE`, or `BLKIF_OP_WRITE_BARRIER` when the backend
//! offers only barriers; with neither, `can_flush()` is false and a flush
//! answers `EIO` (nothing promises durability).
//!
//! Every index and id the backend writes is checked: a `rsp_prod` beyond
//! the requests outstanding or a response id not in flight stops the
//! guest with `unikernel: xen blkfront: ...` (exit code 253); an error
//! status is `EIO` for the caller. A backend that does not answer within
//! [`IO_TIMEOUT_NS`] leaves the device failed (every later call `EIO`: its
//! pages may still be mapped by the backend).
//!
//! The structure layouts, segment arithmetic and xenstore value parsing
//! are host-tested.

pub use crate::netfront::{check_responses, push_needs_notify, xenbus, RingIndex};

/// Request operations (`io/blkif.h`).
pub mod op {
    pub const READ: u8 = 0;
    pub const WRITE: u8 = 1;
    pub const WRITE_BARRIER: u8 = 2;
    pub const FLUSH_DISKCACHE: u8 = 3;
    pub const INDIRECT: u8 = 6;
}

/// Response status (`BLKIF_RSP_*`).
pub mod rsp {
    pub const OKAY: i16 = 0;
    pub const ERROR: i16 = -1;
    pub const EOPNOTSUPP: i16 = -2;
}

/// `info` bits the backend publishes.
pub const VDISK_READONLY: u32 = 0x4;

/// Segments in a direct request (`BLKIF_MAX_SEGMENTS_PER_REQUEST`).
pub const MAX_SEGMENTS: usize = 11;
/// Indirect pages a request can name (`BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST`).
pub const MAX_INDIRECT_PAGES: usize = 8;
/// Segments one indirect page holds (4096 / 8).
pub const SEGMENTS_PER_INDIRECT_PAGE: usize = 512;
/// Sectors are 512 bytes on the wire (`first_sect`/`last_sect` count them).
pub const SECTOR: usize = 512;
/// Sectors in one page (a segment covers at most one page).
pub const SECTORS_PER_PAGE: usize = 4096 / SECTOR;
/// Pages granted once per disk for data; one round of I/O moves at most
/// this many (128 KiB).
pub const BOUNCE_PAGES: usize = 32;
/// Ring slots in one page: (4096 - 64) / 112 = 36, rounded down to a power of two.
pub const RING_SIZE: u32 = 32;
/// Offset of the first slot in the shared ring page.
pub const RING_SLOTS_OFFSET: usize = 64;
/// A slot: the larger of request (112) and response (16).
pub const SLOT_BYTES: usize = 112;
/// How long a round may take before the device is given up.
pub const IO_TIMEOUT_NS: u64 = 30_000_000_000;

/// `blkif_request_segment` (8 bytes: the grant, first and last sector of
/// the page, inclusive, then padding).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    pub gref: u32,
    pub first_sect: u8,
    pub last_sect: u8,
    pub pad: u16,
}

/// `blkif_request` on x86_64 (112 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Request {
    pub operation: u8,
    pub nr_segments: u8,
    pub handle: u16,
    pub pad: u32,
    pub id: u64,
    pub sector_number: u64,
    pub seg: [Segment; MAX_SEGMENTS],
}

/// `blkif_request_indirect` on x86_64 (64 bytes in a 112-byte slot).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IndirectRequest {
    pub operation: u8,
    pub indirect_op: u8,
    pub nr_segments: u16,
    pub pad1: u32,
    pub id: u64,
    pub sector_number: u64,
    pub handle: u16,
    pub pad2: u16,
    pub indirect_grefs: [u32; MAX_INDIRECT_PAGES],
    pub pad3: u32,
}

/// `blkif_response` (16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Response {
    pub id: u64,
    pub operation: u8,
    pub pad: u8,
    pub status: i16,
    pub pad2: u32,
}

const _: () = {
    assert!(core::mem::size_of::<Segment>() == 8);
    assert!(core::mem::size_of::<Request>() == SLOT_BYTES);
    assert!(core::mem::offset_of!(Request, id) == 8);
    assert!(core::mem::offset_of!(Request, sector_number) == 16);
    assert!(core::mem::offset_of!(Request, seg) == 24);
    assert!(core::mem::size_of::<IndirectRequest>() == 64);
    assert!(core::mem::offset_of!(IndirectRequest, nr_segments) == 2);
    assert!(core::mem::offset_of!(IndirectRequest, id) == 8);
    assert!(core::mem::offset_of!(IndirectRequest, sector_number) == 16);
    assert!(core::mem::offset_of!(IndirectRequest, handle) == 24);
    assert!(core::mem::offset_of!(IndirectRequest, indirect_grefs) == 28);
    assert!(core::mem::size_of::<Response>() == 16);
    assert!(core::mem::offset_of!(Response, operation) == 8);
    assert!(core::mem::offset_of!(Response, status) == 10);
    assert!(RING_SLOTS_OFFSET + RING_SIZE as usize * SLOT_BYTES <= 4096);
    assert!(SEGMENTS_PER_INDIRECT_PAGE * core::mem::size_of::<Segment>() == 4096);
    // One round's direct requests fit the ring; its segments fit one indirect page.
    assert!(BOUNCE_PAGES.div_ceil(MAX_SEGMENTS) <= RING_SIZE as usize);
    assert!(BOUNCE_PAGES <= SEGMENTS_PER_INDIRECT_PAGE);
};

/// The slot an index names.
pub fn slot(i: RingIndex) -> usize {
    (i % RING_SIZE) as usize
}

/// The segments for `sectors` sectors starting at the top of bounce page
/// `first_page`: one per page, 8 sectors each but the last. `grefs[p]` is
/// the grant of bounce page p.
pub fn segments(
    grefs: &[u32],
    first_page: usize,
    sectors: usize,
) -> impl Iterator<Item = Segment> + '_ {
    let pages = sectors.div_ceil(SECTORS_PER_PAGE);
    (0..pages).map(move |p| {
        let n = (sectors - p * SECTORS_PER_PAGE).min(SECTORS_PER_PAGE);
        Segment {
            gref: grefs[first_page + p],
            first_sect: 0,
            last_sect: (n - 1) as u8,
            pad: 0,
        }
    })
}

/// Check a request against a disk of `capacity` sectors: `Ok(sectors)`
/// or the errno (`EINVAL`: not whole sectors, empty, or past the end).
pub fn check_range(sector: u64, len: usize, capacity: u64) -> Result<u64, i64> {
    const EINVAL: i64 = 22;
    if len == 0 || len % SECTOR != 0 {
        return Err(EINVAL);
    }
    let n = (len / SECTOR) as u64;
    match sector.checked_add(n) {
        Some(end) if end <= capacity => Ok(n),
        _ => Err(EINVAL),
    }
}

/// The device name of a vbd id (`xvda` for 51712): the xvd major (202,
/// 16 minors per disk) and the extended form (`1 << 28 | disk << 8`).
pub fn vdev_name(id: u32) -> Option<heapless_name::Name> {
    let disk = if id & (1 << 28) != 0 {
        (id >> 8) & 0xf_ffff
    } else if id >> 8 == 202 {
        (id & 0xff) >> 4
    } else {
        return None;
    };
    Some(heapless_name::Name::xvd(disk))
}

/// A short device name without an allocator (host-testable).
pub mod heapless_name {
    /// Up to 16 bytes of ASCII.
    #[derive(Clone, Copy, PartialEq, Eq)]
    pub struct Name {
        bytes: [u8; 16],
        len: usize,
    }

    impl Name {
        /// `xvd` + the disk's letters (a..z, then aa, ab, ... as Linux names them).
        pub fn xvd(disk: u32) -> Name {
            let mut letters = [0u8; 8];
            let mut n = 0;
            let mut d = disk as u64 + 1;
            while d > 0 && n < letters.len() {
                d -= 1;
                letters[n] = b'a' + (d % 26) as u8;
                d /= 26;
                n += 1;
            }
            let mut bytes = [0u8; 16];
            bytes[..3].copy_from_slice(b"xvd");
            for i in 0..n {
                bytes[3 + i] = letters[n - 1 - i];
            }
            Name { bytes, len: 3 + n }
        }

        pub fn as_str(&self) -> &str {
            core::str::from_utf8(&self.bytes[..self.len]).unwrap_or("xvd?")
        }
    }

    impl core::fmt::Debug for Name {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            f.write_str(self.as_str())
        }
    }
}

/// Parse a decimal xenstore value (sectors, a state, a flag).
pub fn parse_u64(s: &[u8]) -> Option<u64> {
    core::str::from_utf8(s).ok()?.trim().parse().ok()
}

/// What the backend said about the disk once Connected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendInfo {
    pub sectors: u64,
    pub sector_size: u64,
    pub read_only: bool,
    pub flush_cache: bool,
    pub barrier: bool,
    /// `feature-max-indirect-segments` (0: none).
    pub max_indirect: u32,
}

impl BackendInfo {
    /// From the backend's keys (`read(key)` gives a value if present).
    pub fn from_keys(mut read: impl FnMut(&str) -> Option<u64>, mode_ro: bool) -> BackendInfo {
        BackendInfo {
            sectors: read("sectors").unwrap_or(0),
            sector_size: read("sector-size").unwrap_or(SECTOR as u64),
            read_only: mode_ro || read("info").is_some_and(|i| i & u64::from(VDISK_READONLY) != 0),
            flush_cache: read("feature-flush-cache").is_some_and(|v| v != 0),
            barrier: read("feature-barrier").is_some_and(|v| v != 0),
            max_indirect: read("feature-max-indirect-segments")
                .unwrap_or(0)
                .min(u64::from(u32::MAX)) as u32,
        }
    }

    /// The flush operation to use, if any.
    pub fn flush_op(&self) -> Option<u8> {
        if self.flush_cache {
            Some(op::FLUSH_DISKCACHE)
        } else if self.barrier {
            Some(op::WRITE_BARRIER)
        } else {
            None
        }
    }

    /// Segments per indirect request we use (0: direct requests only):
    /// a round's pages, at most what the backend takes.
    pub fn indirect_segments(&self) -> usize {
        (self.max_indirect as usize).min(BOUNCE_PAGES)
    }
}

#[cfg(all(target_os = "none", feature = "block", feature = "runtime"))]
pub use target::init;

#[cfg(all(target_os = "none", feature = "block", feature = "runtime"))]
mod target {
    use super::*;
    use crate::boot::{StoreTransport, Xen};
    use crate::events;
    use crate::hypercall;
    use crate::xenstore::{directory_entries, Xenstore};
    use alloc::format;
    use alloc::string::String;
    use alloc::sync::Arc;
    use alloc::vec::Vec;
    use core::fmt::Write;
    use core::ptr::{addr_of, addr_of_mut};
    use core::sync::atomic::{fence, Ordering};
    use unikernel_runtime::device::{register_block, BlockDevice};
    use unikernel_runtime::errno::{Errno, EINVAL, EIO, EROFS};

    /// How long to wait for the backend at each xenbus step.
    const BACKEND_TIMEOUT_NS: u64 = 10_000_000_000;

    fn fail(msg: &str) -> ! {
        let _ = writeln!(crate::Console, "unikernel: xen blkfront: {msg}");
        crate::shutdown(crate::EXIT_KERNEL_FAULT)
    }

    /// The four indices at the start of the shared ring page.
    #[repr(C)]
    struct SharedRing {
        req_prod: u32,
        req_event: u32,
        rsp_prod: u32,
        rsp_event: u32,
    }

    struct Ring {
        page: *mut u8,
        req_prod_pvt: RingIndex,
        rsp_cons: RingIndex,
    }

    impl Ring {
        fn shared(&self) -> *mut SharedRing {
            self.page as *mut SharedRing
        }

        fn slot_ptr<T>(&self, i: RingIndex) -> *mut T {
            debug_assert!(core::mem::size_of::<T>() <= SLOT_BYTES);
            (self.page as usize + RING_SLOTS_OFFSET + slot(i) * SLOT_BYTES) as *mut T
        }

        fn init_shared(&self) {
            // SAFETY: our zeroed ring page; the backend has not mapped it yet.
            unsafe {
                addr_of_mut!((*self.shared()).req_event).write_volatile(1);
                addr_of_mut!((*self.shared()).rsp_event).write_volatile(1);
            }
        }

        fn write_request<T>(&mut self, req: T) {
            let p = self.slot_ptr::<T>(self.req_prod_pvt);
            // SAFETY: a slot inside the ring page; a round never has more
            // requests in flight than the ring holds (checked at compile time).
            unsafe { p.write_volatile(req) };
            self.req_prod_pvt = self.req_prod_pvt.wrapping_add(1);
        }

        fn push_requests(&mut self) -> bool {
            let s = self.shared();
            // SAFETY: the shared indices of our ring page.
            unsafe {
                let old = addr_of!((*s).req_prod).read_volatile();
                fence(Ordering::Release);
                addr_of_mut!((*s).req_prod).write_volatile(self.req_prod_pvt);
                fence(Ordering::SeqCst);
                let event = addr_of!((*s).req_event).read_volatile();
                push_needs_notify(old, self.req_prod_pvt, event)
            }
        }

        fn pending_responses(&self) -> u32 {
            // SAFETY: the shared indices of our ring page.
            let prod = unsafe { addr_of!((*self.shared()).rsp_prod).read_volatile() };
            fence(Ordering::Acquire);
            match check_responses(prod, self.rsp_cons, self.req_prod_pvt) {
                Some(n) if self.req_prod_pvt.wrapping_sub(self.rsp_cons) <= RING_SIZE => n,
                _ => fail(&format!(
                    "the backend's rsp_prod {prod} is impossible (consumed {}, requested {}, ring of {RING_SIZE})",
                    self.rsp_cons, self.req_prod_pvt
                )),
            }
        }

        /// Ask for an event at the next response, then look again.
        fn final_check(&self) -> bool {
            // SAFETY: the shared indices of our ring page.
            unsafe {
                addr_of_mut!((*self.shared()).rsp_event)
                    .write_volatile(self.rsp_cons.wrapping_add(1))
            };
            fence(Ordering::SeqCst);
            self.pending_responses() != 0
        }

        fn read_response(&mut self) -> Response {
            // SAFETY: a slot inside the ring page, published by rsp_prod.
            let r = unsafe { self.slot_ptr::<Response>(self.rsp_cons).read_volatile() };
            self.rsp_cons = self.rsp_cons.wrapping_add(1);
            r
        }
    }

    struct Queue {
        ring: Ring,
        /// Bounce pages (identity-mapped addresses) and their grants.
        pages: [u64; BOUNCE_PAGES],
        grefs: [u32; BOUNCE_PAGES],
        /// The indirect-segment page and its grant.
        indirect_va: u64,
        indirect_gref: u32,
        port: u32,
        handle: u16,
        /// Ids of the requests in flight (bit n = id n).
        in_flight: u32,
        /// The backend stopped answering: every call fails.
        broken: bool,
    }

    // SAFETY: one vCPU; the pages are touched under the device's lock only.
    unsafe impl Send for Queue {}

    /// A request of a round: operation and where its data lies.
    struct Part {
        op: u8,
        sector: u64,
        first_page: usize,
        sectors: usize,
    }

    impl Queue {
        fn notify(&self) {
            let _ = hypercall::evtchn_send(self.port);
        }

        /// Issue `parts` (all in flight at once) and wait for every
        /// response; `Err(EIO)` if one failed (or EOPNOTSUPP).
        fn round(&mut self, parts: &[Part], indirect: bool) -> Result<(), i16> {
            if self.broken {
                return Err(rsp::ERROR);
            }
            for (id, p) in parts.iter().enumerate() {
                let id = id as u64;
                let segs = segments(&self.grefs, p.first_page, p.sectors);
                if indirect && p.sectors > 0 {
                    let table = self.indirect_va as *mut Segment;
                    let mut n = 0;
                    for (i, s) in segs.enumerate() {
                        // SAFETY: i < BOUNCE_PAGES <= 512 segments of the
                        // indirect page, which the backend only reads.
                        unsafe { table.add(i).write_volatile(s) };
                        n += 1;
                    }
                    let mut grefs = [0u32; MAX_INDIRECT_PAGES];
                    grefs[0] = self.indirect_gref;
                    self.ring.write_request(IndirectRequest {
                        operation: op::INDIRECT,
                        indirect_op: p.op,
                        nr_segments: n as u16,
                        id,
                        sector_number: p.sector,
                        handle: self.handle,
                        indirect_grefs: grefs,
                        ..Default::default()
                    });
                } else {
                    let mut seg = [Segment::default(); MAX_SEGMENTS];
                    let mut n = 0;
                    for (i, s) in segs.enumerate() {
                        seg[i] = s;
                        n += 1;
                    }
                    self.ring.write_request(Request {
                        operation: p.op,
                        nr_segments: n as u8,
                        handle: self.handle,
                        pad: 0,
                        id,
                        sector_number: p.sector,
                        seg,
                    });
                }
                self.in_flight |= 1 << id;
            }
            if self.ring.push_requests() {
                self.notify();
            }
            let start = crate::runtime::xen_now();
            let mut status = rsp::OKAY;
            while self.in_flight != 0 {
                let mut n = self.ring.pending_responses();
                if n == 0 && !self.ring.final_check() {
                    let deadline = start.saturating_add(IO_TIMEOUT_NS);
                    if !crate::runtime::wait_port(self.port, deadline)
                        && self.ring.pending_responses() == 0
                    {
                        self.broken = true;
                        let _ = writeln!(
                            crate::Console,
                            "unikernel: xen blkfront: the backend did not answer in {} s; the disk is unusable now",
                            IO_TIMEOUT_NS / 1_000_000_000
                        );
                        return Err(rsp::ERROR);
                    }
                    continue;
                }
                if n == 0 {
                    n = self.ring.pending_responses();
                }
                for _ in 0..n {
                    let r = self.ring.read_response();
                    if r.id >= parts.len() as u64 || self.in_flight & (1 << r.id) == 0 {
                        fail(&format!(
                            "the backend answered request id {}, which is not in flight",
                            r.id
                        ));
                    }
                    self.in_flight &= !(1 << r.id);
                    if r.status != rsp::OKAY && status == rsp::OKAY {
                        status = r.status;
                    }
                }
            }
            if status == rsp::OKAY {
                Ok(())
            } else {
                Err(status)
            }
        }

        /// Read or write `buf` at `sector` in rounds of the bounce pages.
        fn transfer(
            &mut self,
            write: bool,
            mut sector: u64,
            buf: *mut u8,
            len: usize,
            indirect: usize,
        ) -> Result<(), Errno> {
            let op = if write { op::WRITE } else { op::READ };
            // Pages per round: one indirect request carries `indirect`
            // segments; direct requests share the bounce pages.
            let round_pages = if indirect > 0 { indirect } else { BOUNCE_PAGES };
            let per_req = if indirect > 0 {
                indirect * SECTORS_PER_PAGE
            } else {
                MAX_SEGMENTS * SECTORS_PER_PAGE
            };
            let mut done = 0;
            while done < len {
                let bytes = (len - done).min(round_pages * 4096);
                let sectors = bytes / SECTOR;
                if write {
                    self.copy_pages(buf, done, bytes, true);
                }
                let count = sectors.div_ceil(per_req);
                let parts: [Part; BOUNCE_PAGES.div_ceil(MAX_SEGMENTS)] =
                    core::array::from_fn(|i| {
                        let s = (i * per_req).min(sectors);
                        Part {
                            op,
                            sector: sector + s as u64,
                            first_page: s / SECTORS_PER_PAGE,
                            sectors: (sectors - s).min(per_req),
                        }
                    });
                self.round(&parts[..count], indirect > 0).map_err(|_| EIO)?;
                if !write {
                    self.copy_pages(buf, done, bytes, false);
                }
                done += bytes;
                sector += sectors as u64;
            }
            Ok(())
        }

        /// Copy between `buf[at..at + bytes]` and the bounce pages.
        fn copy_pages(&self, buf: *mut u8, at: usize, bytes: usize, to_pages: bool) {
            let mut off = 0;
            while off < bytes {
                let n = (bytes - off).min(4096);
                let page = self.pages[off / 4096] as *mut u8;
                // SAFETY: the caller's buffer holds at + bytes bytes; the
                // page is one of ours and no request on it is in flight.
                unsafe {
                    let b = buf.add(at + off);
                    if to_pages {
                        core::ptr::copy_nonoverlapping(b, page, n);
                    } else {
                        core::ptr::copy_nonoverlapping(page, b, n);
                    }
                }
                off += n;
            }
        }
    }

    struct Blkfront {
        name: String,
        info: BackendInfo,
        /// Segments per indirect request (0: direct requests).
        indirect: usize,
        q: spin::Mutex<Queue>,
    }

    impl BlockDevice for Blkfront {
        fn name(&self) -> &str {
            &self.name
        }
        fn sectors(&self) -> u64 {
            self.info.sectors
        }
        fn read_only(&self) -> bool {
            self.info.read_only
        }
        fn can_flush(&self) -> bool {
            self.info.flush_op().is_some()
        }
        fn read(&self, sector: u64, buf: &mut [u8]) -> Result<(), Errno> {
            check_range(sector, buf.len(), self.info.sectors)?;
            self.q
                .lock()
                .transfer(false, sector, buf.as_mut_ptr(), buf.len(), self.indirect)
        }
        fn write(&self, sector: u64, buf: &[u8]) -> Result<(), Errno> {
            check_range(sector, buf.len(), self.info.sectors)?;
            if self.info.read_only {
                return Err(EROFS);
            }
            // The data is only read from `buf` (copied to the bounce pages).
            self.q.lock().transfer(
                true,
                sector,
                buf.as_ptr() as *mut u8,
                buf.len(),
                self.indirect,
            )
        }
        fn flush(&self) -> Result<(), Errno> {
            let Some(op) = self.info.flush_op() else {
                return Err(EIO);
            };
            let part = Part {
                op,
                sector: 0,
                first_page: 0,
                sectors: 0,
            };
            match self.q.lock().round(&[part], false) {
                Ok(()) => Ok(()),
                Err(_) => Err(EIO),
            }
        }
    }

    const _: () = {
        // `check_range`'s errno is the runtime's EINVAL.
        assert!(EINVAL == 22);
    };

    struct Store<'a> {
        xs: Xenstore,
        t: StoreTransport,
        xen: &'a Xen,
    }

    impl Store<'_> {
        fn read(&mut self, path: &str) -> Option<Vec<u8>> {
            let mut buf = [0u8; 256];
            self.xs
                .read(path, &mut buf, &self.t)
                .ok()
                .map(|v| v.to_vec())
        }

        fn read_u64(&mut self, path: &str) -> Option<u64> {
            self.read(path).and_then(|v| parse_u64(&v))
        }

        fn write(&mut self, path: &str, value: &str) {
            if let Err(e) = self.xs.write(path, value.as_bytes(), &self.t) {
                fail(&format!("cannot write {path} in xenstore: {e}"));
            }
        }

        fn wait_state(&mut self, path: &str, what: &str, done: impl Fn(u64) -> bool) -> u64 {
            let start = self.xen.system_time_ns();
            loop {
                let state = self.read_u64(path).unwrap_or(0);
                if done(state) {
                    return state;
                }
                if matches!(state as u32, xenbus::CLOSING | xenbus::CLOSED) {
                    fail(&format!(
                        "the backend closed ({path} = {state}) instead of {what}"
                    ));
                }
                let now = self.xen.system_time_ns();
                if now.saturating_sub(start) > BACKEND_TIMEOUT_NS {
                    fail(&format!(
                        "the backend did not become {what} in {} s ({path} = {state})",
                        BACKEND_TIMEOUT_NS / 1_000_000_000
                    ));
                }
                self.xen.block_until(now + 5_000_000, false);
            }
        }
    }

    /// A zeroed page granted (writable) to `domid`.
    fn granted_page(gt: &mut crate::grant::GrantTable, xen: &Xen, domid: u16) -> (u64, u32) {
        let Some(va) = unikernel_runtime::mm::frame::alloc_frame() else {
            fail("out of memory for the ring and bounce pages");
        };
        match gt.grant_access(domid, xen.mfn_of(va) as u32, false) {
            Ok(gref) => (va, gref),
            Err(e) => fail(&format!("cannot grant a page to dom{domid}: {e:?}")),
        }
    }

    /// Connect every `device/vbd/*` and register it; no vbd: no block
    /// device. `use_indirect = false` keeps to direct requests even when
    /// the backend offers indirect ones (`UNIKERNEL_XEN_BLK_INDIRECT=0`).
    pub fn init(xen: &'static Xen, verbose: bool, use_indirect: bool) {
        let mut st = Store {
            xs: xen.xenstore(),
            t: xen.store_transport(),
            xen,
        };
        let mut ids: Vec<u32> = {
            let mut buf = [0u8; 1024];
            match st.xs.directory("device/vbd", &mut buf, &st.t) {
                Ok(d) => directory_entries(d)
                    .filter_map(parse_u64)
                    .filter_map(|id| u32::try_from(id).ok())
                    .collect(),
                Err(_) => Vec::new(),
            }
        };
        if ids.is_empty() {
            if verbose {
                crate::Console::write_bytes(
                    b"[unikernel] xen: no device/vbd in xenstore: no block device\n",
                );
            }
            return;
        }
        ids.sort_unstable();
        for (n, id) in ids.into_iter().enumerate() {
            connect(&mut st, xen, id, n, verbose, use_indirect);
        }
    }

    fn connect(
        st: &mut Store,
        xen: &'static Xen,
        id: u32,
        n: usize,
        verbose: bool,
        use_indirect: bool,
    ) {
        let t0 = xen.system_time_ns();
        let dev = format!("device/vbd/{id}");
        let Some(backend) = st.read(&format!("{dev}/backend")) else {
            fail(&format!("{dev}/backend is missing"));
        };
        let backend = String::from_utf8_lossy(&backend).into_owned();
        let domid = st
            .read_u64(&format!("{dev}/backend-id"))
            .filter(|&d| d < 0x7ff0)
            .unwrap_or_else(|| fail(&format!("{dev}/backend-id is missing or not a domid")))
            as u16;
        let name = vdev_name(id).map_or_else(|| format!("vbd{n}"), |v| String::from(v.as_str()));

        let mut gt = xen
            .grant_table()
            .unwrap_or_else(|e| fail(&format!("cannot take the grant table: {e}")));
        let (ring_va, ring_gref) = granted_page(&mut gt, xen, domid);
        let mut pages = [0u64; BOUNCE_PAGES];
        let mut grefs = [0u32; BOUNCE_PAGES];
        for i in 0..BOUNCE_PAGES {
            (pages[i], grefs[i]) = granted_page(&mut gt, xen, domid);
        }
        let (indirect_va, indirect_gref) = granted_page(&mut gt, xen, domid);
        drop(gt);
        let port = hypercall::evtchn_alloc_unbound(domid).unwrap_or_else(|e| {
            fail(&format!(
                "cannot allocate an event channel for dom{domid}: {e:?}"
            ))
        });
        let q = Queue {
            ring: Ring {
                page: ring_va as *mut u8,
                req_prod_pvt: 0,
                rsp_cons: 0,
            },
            pages,
            grefs,
            indirect_va,
            indirect_gref,
            port,
            handle: (id & 0xffff) as u16,
            in_flight: 0,
            broken: false,
        };
        q.ring.init_shared();

        let backend_state = format!("{backend}/state");
        st.wait_state(&backend_state, "ready (InitWait)", |s| {
            s == u64::from(xenbus::INIT_WAIT) || s == u64::from(xenbus::CONNECTED)
        });
        st.write(&format!("{dev}/ring-ref"), &format!("{ring_gref}"));
        st.write(&format!("{dev}/event-channel"), &format!("{port}"));
        st.write(&format!("{dev}/protocol"), "x86_64-abi");
        st.write(&format!("{dev}/state"), &format!("{}", xenbus::INITIALISED));
        st.wait_state(&backend_state, "Connected", |s| {
            s == u64::from(xenbus::CONNECTED)
        });
        let mode_ro = st
            .read(&format!("{backend}/mode"))
            .is_some_and(|m| m.first() == Some(&b'r') && !m.contains(&b'w'));
        let info = BackendInfo::from_keys(|k| st.read_u64(&format!("{backend}/{k}")), mode_ro);
        st.write(&format!("{dev}/state"), &format!("{}", xenbus::CONNECTED));
        events::unmask_port(port);

        if info.sector_size != SECTOR as u64 {
            let _ = writeln!(
                crate::Console,
                "unikernel: xen blkfront: {name}: sector size {} is not supported (512 only); the disk is left out",
                info.sector_size
            );
            return;
        }
        let indirect = if use_indirect {
            info.indirect_segments()
        } else {
            0
        };
        if verbose {
            let mut line = String::new();
            let _ = writeln!(
                line,
                "[unikernel] xen: {name} ({dev}) connected to {backend} (dom{domid}, port {port}) in {} us: {} sectors, {}, flush {}, barrier {}, indirect segments {} (using {})",
                (xen.system_time_ns() - t0) / 1000,
                info.sectors,
                if info.read_only { "read-only" } else { "read-write" },
                if info.flush_cache { "yes" } else { "no" },
                if info.barrier { "yes" } else { "no" },
                info.max_indirect,
                indirect
            );
            crate::Console::write_bytes(line.as_bytes());
        }
        register_block(Arc::new(Blkfront {
            name,
            info,
            indirect,
            q: spin::Mutex::new(q),
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_blkif_h() {
        // Byte-for-byte: a direct read of 9 sectors at 0x1122 (two segments).
        let grefs = [10u32, 11, 12];
        let mut r = Request {
            operation: op::READ,
            nr_segments: 2,
            handle: 0xca00,
            id: 7,
            sector_number: 0x1122,
            ..Default::default()
        };
        for (i, s) in segments(&grefs, 1, 9).enumerate() {
            r.seg[i] = s;
        }
        // SAFETY: Request is 112 bytes of plain integers, no padding bytes
        // left uninitialised (every pad is a field).
        let b: [u8; 112] = unsafe { core::mem::transmute(r) };
        assert_eq!(&b[..4], &[0, 2, 0x00, 0xca]);
        assert_eq!(&b[8..16], &7u64.to_le_bytes());
        assert_eq!(&b[16..24], &0x1122u64.to_le_bytes());
        assert_eq!(&b[24..32], &[11, 0, 0, 0, 0, 7, 0, 0]);
        assert_eq!(&b[32..40], &[12, 0, 0, 0, 0, 0, 0, 0]);
        assert!(b[40..].iter().all(|&x| x == 0));

        let mut ind = IndirectRequest {
            operation: op::INDIRECT,
            indirect_op: op::WRITE,
            nr_segments: 32,
            id: 1,
            sector_number: 8,
            handle: 51712,
            ..Default::default()
        };
        ind.indirect_grefs[0] = 0x99;
        // SAFETY: as above, 64 bytes of integers.
        let b: [u8; 64] = unsafe { core::mem::transmute(ind) };
        assert_eq!(&b[..4], &[6, 1, 32, 0]);
        assert_eq!(&b[24..26], &51712u16.to_le_bytes());
        assert_eq!(&b[28..32], &0x99u32.to_le_bytes());

        let mut raw = [0u8; 16];
        raw[..8].copy_from_slice(&5u64.to_le_bytes());
        raw[8] = op::FLUSH_DISKCACHE;
        raw[10..12].copy_from_slice(&rsp::EOPNOTSUPP.to_le_bytes());
        // SAFETY: any 16 bytes are a valid Response.
        let resp: Response = unsafe { core::mem::transmute(raw) };
        assert_eq!((resp.id, resp.operation, resp.status), (5, 3, -2));
    }

    #[test]
    fn segments_cover_pages_and_the_tail() {
        let grefs: Vec<u32> = (100..132).collect();
        let s: Vec<Segment> = segments(&grefs, 0, 8).collect();
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].gref, s[0].first_sect, s[0].last_sect), (100, 0, 7));
        let s: Vec<Segment> = segments(&grefs, 3, 17).collect();
        assert_eq!(
            s.iter().map(|s| (s.gref, s.last_sect)).collect::<Vec<_>>(),
            [(103, 7), (104, 7), (105, 0)]
        );
        // A whole round: 32 pages.
        assert_eq!(segments(&grefs, 0, BOUNCE_PAGES * 8).count(), 32);
        assert_eq!(segments(&grefs, 0, 1).next().unwrap().last_sect, 0);
    }

    #[test]
    fn ranges_are_checked_against_the_capacity() {
        assert_eq!(check_range(0, 512, 1), Ok(1));
        assert_eq!(check_range(0, 1024, 1), Err(22), "past the end");
        assert_eq!(check_range(1, 512, 1), Err(22));
        assert_eq!(check_range(0, 0, 1), Err(22), "empty");
        assert_eq!(check_range(0, 100, 8), Err(22), "not whole sectors");
        assert_eq!(check_range(u64::MAX, 512, u64::MAX), Err(22), "overflow");
        assert_eq!(check_range(10, 4096, 18), Ok(8));
    }

    #[test]
    fn vdev_names() {
        assert_eq!(vdev_name(51712).unwrap().as_str(), "xvda");
        assert_eq!(vdev_name(51728).unwrap().as_str(), "xvdb");
        assert_eq!(vdev_name(51713).unwrap().as_str(), "xvda", "a partition");
        assert_eq!(vdev_name((1 << 28) | (26 << 8)).unwrap().as_str(), "xvdaa");
        assert_eq!(vdev_name((1 << 28) | (27 << 8)).unwrap().as_str(), "xvdab");
        assert_eq!(vdev_name(768), None, "hda: not an xvd");
    }

    #[test]
    fn backend_keys() {
        let keys = |k: &str| match k {
            "sectors" => Some(32768),
            "info" => Some(0),
            "feature-flush-cache" => Some(1),
            "feature-barrier" => Some(0),
            "feature-max-indirect-segments" => Some(256),
            _ => None,
        };
        let i = BackendInfo::from_keys(keys, false);
        assert_eq!(i.sectors, 32768);
        assert_eq!(i.sector_size, 512, "default when absent");
        assert!(!i.read_only);
        assert_eq!(i.flush_op(), Some(op::FLUSH_DISKCACHE));
        assert_eq!(i.indirect_segments(), BOUNCE_PAGES);
        let ro = BackendInfo::from_keys(
            |k| match k {
                "info" => Some(u64::from(VDISK_READONLY)),
                "feature-barrier" => Some(1),
                _ => None,
            },
            false,
        );
        assert!(ro.read_only);
        assert_eq!(ro.flush_op(), Some(op::WRITE_BARRIER));
        assert_eq!(ro.indirect_segments(), 0);
        let none = BackendInfo::from_keys(|_| None, true);
        assert!(none.read_only, "mode r");
        assert_eq!(none.flush_op(), None);
        assert_eq!(parse_u64(b"2097152\n"), Some(2097152));
        assert_eq!(parse_u64(b"x"), None);
    }
}
