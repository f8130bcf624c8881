//! The hvt block device: up to [`MAX_DISKS`] disks per guest (raw files on
//! the host, `--disk NAME=FILE`), each served through one request ring in
//! guest memory.
//!
//! The guest asks [`BlockInfo`] (call `block_info`) about disk 0, 1, ...
//! (`count` says how many there are) and learns each disk's name, size in
//! 512-byte sectors and flags. For every disk it uses, it allocates a ring
//! in identity-mapped RAM and hands it over with [`BlockSetup`] (call
//! `block_setup`). From then on one I/O thread of the monitor per disk
//! serves that ring (and the vCPU thread, while it is out of the guest for
//! a `block_notify`, serves small reads and writes at the ring's head
//! itself; either way requests complete in ring order):
//!
//! * The guest is the producer. It writes a [`BlockDesc`] (op, sector,
//!   buffer, length) into the next slot and publishes it by storing
//!   `producer + 1`. Only when the ring was empty before (the monitor's
//!   `consumer` equals the old producer) and the I/O thread is not
//!   polling (`polling` is zero) does it make the `block_notify` call,
//!   which wakes the disk's I/O thread; a busy or polling thread finds new
//!   requests on its own. After serving the ring empty the I/O thread
//!   polls it for a short while (a burst of requests then costs no VM
//!   exit), then clears `polling` and sleeps.
//! * The monitor serves requests **in ring order**: it reads the
//!   descriptor once, checks it, does the I/O (`pread`/`pwrite` straight
//!   into or out of the guest buffer, `fdatasync` for a flush), writes the
//!   descriptor's `status` and stores `consumer + 1`. So `consumer` is the
//!   completion index: every request below it is done and its status set.
//! * The guest learns of completions by reading `consumer`. To wait
//!   without spinning, it makes the `block_wait` call ([`BlockWait`]):
//!   the vCPU thread blocks on the host until the completion index reaches
//!   `until` (or the timeout passes).
//!
//! # Ring layout
//!
//! Like the network rings (`crate::net`): one contiguous, 64-byte aligned
//! block of [`ring_bytes`]`(slots)` bytes:
//!
//! | offset | field |
//! |---|---|
//! | 0 | `producer` u32: free-running count of published requests (guest) |
//! | 64 | `consumer` u32: free-running count of completed requests (monitor) |
//! | 68 | `polling` u32: non-zero while the I/O thread polls the ring (monitor) |
//! | 128 | `slots` × [`BlockDesc`] (32 bytes each); index `i` lives in slot `i % slots` |
//!
//! `slots` is a power of two, at most [`MAX_SLOTS`]. `producer - consumer`
//! (wrapping) is never more than `slots`.
//!
//! # What the monitor checks
//!
//! The monitor keeps its own copy of `consumer` and never reads it back. It
//! reads `producer` and each descriptor once, and checks the copies: the
//! number of waiting requests against `slots`, `op` against the known ops,
//! `len` a non-zero multiple of [`SECTOR_SIZE`] and at most
//! [`MAX_REQUEST`], `[sector, sector + len / 512)` inside the disk and
//! `[addr, addr + len)` inside guest RAM. A violation stops the guest
//! (exit 254). A write to a read-only disk is no violation: it completes
//! with [`BLOCK_S_READ_ONLY`]; a failing host call gives [`BLOCK_S_IO_ERROR`].
//!
//! # Memory ordering
//!
//! As for the network tx ring: the guest writes the descriptor, stores
//! `producer` (release), issues a full fence and loads `consumer` and
//! `polling`; it notifies if `consumer` equals the old producer and
//! `polling` is zero. The monitor stores `consumer` (release) after each
//! request, and before it sleeps clears `polling`, issues a full fence and
//! loads `producer` again: either the guest sees `polling` clear and
//! notifies, or the monitor sees the new producer and serves it. The guest loads `consumer` (acquire) before
//! it reads a status or the data of a completed read.

/// Most disks per guest (`unikernel_image::disks::MAX_DISKS`).
pub const MAX_DISKS: u32 = 8;
/// Bytes per sector.
pub const SECTOR_SIZE: u64 = 512;
/// Most bytes one descriptor moves (the guest splits larger requests).
pub const MAX_REQUEST: u64 = 1 << 20;
/// Most descriptors per ring.
pub const MAX_SLOTS: u32 = 256;
/// Bytes of [`BlockInfo::name`] (a disk name is at most 32 characters).
pub const NAME_LEN: usize = 32;
/// Longest a single `block_wait` call blocks; the guest simply calls again.
pub const MAX_WAIT_NS: u64 = 1_000_000_000;

/// `BlockInfo::flags`: the disk exists.
pub const BLOCK_ATTACHED: u32 = 1 << 0;
/// `BlockInfo::flags`: the disk refuses writes (a file the user cannot write).
pub const BLOCK_READ_ONLY: u32 = 1 << 1;
/// `BlockInfo::flags`: a flush reaches stable storage (`fdatasync`).
pub const BLOCK_CAN_FLUSH: u32 = 1 << 2;

/// `BlockDesc::op`: read `len` bytes from `sector` into `addr`.
pub const BLOCK_OP_READ: u32 = 1;
/// `BlockDesc::op`: write `len` bytes at `addr` to `sector`.
pub const BLOCK_OP_WRITE: u32 = 2;
/// `BlockDesc::op`: make every completed write durable; `sector`, `addr`
/// and `len` are ignored.
pub const BLOCK_OP_FLUSH: u32 = 3;

/// `BlockDesc::status`: done.
pub const BLOCK_S_OK: u32 = 0;
/// `BlockDesc::status`: the host's read, write or flush failed (EIO).
pub const BLOCK_S_IO_ERROR: u32 = 1;
/// `BlockDesc::status`: a write to a read-only disk (EROFS).
pub const BLOCK_S_READ_ONLY: u32 = 2;

/// Offset of the `producer` index in a ring.
pub const RING_PRODUCER: u64 = 0;
/// Offset of the `consumer` (completion) index in a ring.
pub const RING_CONSUMER: u64 = 64;
/// Offset of the `polling` word in a ring: non-zero while the disk's I/O
/// thread watches the producer index without sleeping, so a new request
/// needs no `block_notify`. Written by the monitor only.
pub const RING_POLLING: u64 = 68;
/// Offset of the first descriptor in a ring.
pub const RING_DESCS: u64 = 128;
/// Alignment of a ring.
pub const RING_ALIGN: u64 = 64;
/// Offset of `status` inside a [`BlockDesc`].
pub const DESC_STATUS: u64 = 4;

/// Bytes of a ring with `slots` descriptors.
pub const fn ring_bytes(slots: u32) -> u64 {
    RING_DESCS + slots as u64 * core::mem::size_of::<BlockDesc>() as u64
}

/// The `block_info` call: in `disk`, out everything else.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockInfo {
    /// In: which disk (0-based, in `--disk` order).
    pub disk: u32,
    /// Out: `BLOCK_ATTACHED | BLOCK_READ_ONLY | BLOCK_CAN_FLUSH`; 0 if
    /// there is no such disk.
    pub flags: u32,
    /// Out: capacity in sectors of [`SECTOR_SIZE`] bytes.
    pub sectors: u64,
    /// Out: how many disks are attached (whatever `disk` was).
    pub count: u32,
    /// Out: the largest `len` of one descriptor ([`MAX_REQUEST`]).
    pub max_request: u32,
    /// Out: the disk's name (`--disk NAME=FILE`), NUL-padded UTF-8.
    pub name: [u8; NAME_LEN],
}

/// The `block_setup` call (no out fields).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockSetup {
    pub disk: u32,
    /// Descriptors in the ring: a power of two, 1..=`MAX_SLOTS`.
    pub slots: u32,
    /// Guest-physical address of the ring (64-byte aligned).
    pub ring: u64,
}

/// The `block_notify` call: the disk's ring went from empty to non-empty.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockNotify {
    pub disk: u32,
    pub _pad: u32,
}

/// The `block_wait` call: block until the disk's completion index reaches
/// `until` (wrapping: `until - completed` as i32 <= 0) or `timeout_nsecs`
/// (at most [`MAX_WAIT_NS`]) passed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockWait {
    pub disk: u32,
    pub until: u32,
    pub timeout_nsecs: u64,
    /// Out: the completion index when the call returned.
    pub completed: u32,
    pub _pad: u32,
}

/// One request.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockDesc {
    /// `BLOCK_OP_*`.
    pub op: u32,
    /// Out (monitor): `BLOCK_S_*`, valid once `consumer` passed this request.
    pub status: u32,
    /// First sector.
    pub sector: u64,
    /// Guest-physical address of the buffer (`len` bytes).
    pub addr: u64,
    /// Bytes: a non-zero multiple of [`SECTOR_SIZE`], at most [`MAX_REQUEST`].
    pub len: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn sizes_match_the_documented_layout() {
        assert_eq!(core::mem::size_of::<BlockDesc>(), 32);
        assert_eq!(core::mem::size_of::<BlockInfo>(), 56);
        assert_eq!(core::mem::size_of::<BlockSetup>(), 16);
        assert_eq!(core::mem::size_of::<BlockWait>(), 24);
        assert_eq!(core::mem::offset_of!(BlockDesc, status) as u64, DESC_STATUS);
        assert_eq!(ring_bytes(64), 128 + 64 * 32);
        assert_eq!(MAX_DISKS as usize, unikernel_image::disks::MAX_DISKS);
    }
}
