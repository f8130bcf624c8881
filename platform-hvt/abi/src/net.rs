//! The hvt network device: one Ethernet device per guest, frames moved
//! through two rings in guest memory.
//!
//! The guest asks [`NetInfo`] (call `net_info`) whether a device is attached
//! and learns its MAC and MTU. It then allocates two rings and their frame
//! buffers in identity-mapped RAM and hands them over with [`NetSetup`]
//! (call `net_setup`). From then on the monitor serves both rings from its
//! own I/O thread, never from the vCPU thread:
//!
//! * **tx** (guest to host): the guest is the producer. It writes a frame
//!   into the buffer of the next descriptor, sets `len` (and `addr`), and
//!   publishes it by storing `producer + 1`. Only when the ring was empty
//!   before (the monitor's `consumer` equals the old producer) and the I/O
//!   thread is not polling it (`polling` is zero) does it make the
//!   `net_notify` call, which wakes the I/O thread; a busy or polling I/O
//!   thread finds new frames on its own. After traffic the I/O thread polls
//!   both rings for a short while before it sleeps.
//! * **rx** (host to guest): the monitor is the producer. The guest fills
//!   every descriptor's `addr` with a buffer of `buf_size` bytes at setup
//!   (and may change `addr` of a slot it has consumed, before it stores the
//!   new consumer index). The monitor copies a frame into the buffer, sets
//!   `len` and stores `producer + 1`; the guest takes frames and stores
//!   `consumer + 1`. No call is needed: the guest's `poll` returns early
//!   when a frame is waiting. When the ring is full the monitor leaves
//!   frames on the host side and looks again every millisecond.
//!
//! # Ring layout
//!
//! A ring ([`RING_PRODUCER`], [`RING_CONSUMER`], [`RING_DESCS`]) is one
//! contiguous, 64-byte aligned block of `ring_bytes(slots)` bytes:
//!
//! | offset | field |
//! |---|---|
//! | 0 | `producer` u32: free-running count of published descriptors (written only by the producer) |
//! | 64 | `consumer` u32: free-running count of consumed descriptors (written only by the consumer) |
//! | 68 | `polling` u32, tx ring only: non-zero while the monitor's I/O thread polls (written only by the monitor) |
//! | 128 | `slots` × [`NetDesc`] (16 bytes each); index `i` lives in slot `i % slots` |
//!
//! `slots` is a power of two, at most [`MAX_SLOTS`]. The indices wrap at
//! 2^32; `producer - consumer` (wrapping) is the number of frames in the
//! ring and is never more than `slots`. A side that finds it larger, or a
//! descriptor whose buffer leaves guest RAM or whose `len` is 0 or more than
//! `buf_size`, has found a broken guest: the monitor stops it.
//!
//! # Memory ordering
//!
//! * The producer writes the buffer and the descriptor, then stores the new
//!   `producer` with **release** semantics; the consumer loads `producer`
//!   with **acquire** semantics before it reads descriptors and buffers.
//! * The consumer reads everything it needs from a slot (copies the frame
//!   out), then stores the new `consumer` with **release** semantics; the
//!   producer loads `consumer` with **acquire** before it reuses a slot.
//! * Notification (tx): the guest stores `producer`, then issues a **full
//!   fence** (`mfence`, SeqCst), then loads `consumer` and `polling`; it
//!   notifies if `consumer` equals the old producer and `polling` is zero.
//!   The monitor, before it sleeps, stores `consumer`, clears `polling`,
//!   issues a full fence and loads `producer` again. With both fences,
//!   either the guest sees the ring drained and nobody polling (and
//!   notifies) or the monitor sees the new frame (and keeps going): no
//!   frame is stranded.
//!
//! On x86-64 release stores and acquire loads are plain `mov`s (TSO); only
//! the full fence costs anything.

/// `NetInfo::flags`: a network device is attached.
pub const NET_ATTACHED: u32 = 1 << 0;

/// `Poll::ready_set` bit of the network device: a received frame is
/// waiting in the rx ring, or room appeared in a full tx ring.
pub const NET_READY: u64 = 1 << 0;

/// Offset of the `producer` index in a ring.
pub const RING_PRODUCER: u64 = 0;
/// Offset of the `consumer` index in a ring (its own cache line).
pub const RING_CONSUMER: u64 = 64;
/// Offset of the `polling` word of the **tx** ring: non-zero while the
/// I/O thread watches the ring without sleeping, so a new frame needs no
/// `net_notify`. Written by the monitor only.
pub const RING_POLLING: u64 = 68;
/// Offset of the first descriptor in a ring.
pub const RING_DESCS: u64 = 128;
/// Alignment of a ring.
pub const RING_ALIGN: u64 = 64;
/// Most descriptors per ring.
pub const MAX_SLOTS: u32 = 1024;
/// Smallest and largest frame buffer (`NetSetup::buf_size`).
pub const MIN_BUF_SIZE: u32 = 1514;
pub const MAX_BUF_SIZE: u32 = 65536;

/// Bytes of a ring with `slots` descriptors.
pub const fn ring_bytes(slots: u32) -> u64 {
    RING_DESCS + slots as u64 * core::mem::size_of::<NetDesc>() as u64
}

/// Out fields of the `net_info` call.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetInfo {
    /// Out: `NET_ATTACHED` if the monitor has a network device for the guest.
    pub flags: u32,
    /// Out: the MTU (largest Ethernet payload; frames are at most `mtu + 14`).
    pub mtu: u32,
    /// Out: the device's MAC address in bytes 0..6 (6 and 7 are zero).
    pub mac: [u8; 8],
}

/// In fields of the `net_setup` call (no out fields).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetSetup {
    /// Guest-physical address of the rx ring (host to guest).
    pub rx_ring: u64,
    /// Guest-physical address of the tx ring (guest to host).
    pub tx_ring: u64,
    /// Descriptors per ring (both rings): a power of two, 1..=`MAX_SLOTS`.
    pub slots: u32,
    /// Bytes of every frame buffer: `MIN_BUF_SIZE..=MAX_BUF_SIZE` and at
    /// least `mtu + 14`.
    pub buf_size: u32,
}

/// The argument struct of the `net_notify` call (no fields are read; one
/// word so that the struct has an address).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetNotify {
    pub _reserved: u64,
}

/// One ring descriptor.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetDesc {
    /// Guest-physical address of the frame buffer (`buf_size` bytes).
    pub addr: u64,
    /// Bytes of the frame in the buffer.
    pub len: u32,
    pub _pad: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn sizes_match_the_documented_layout() {
        assert_eq!(core::mem::size_of::<NetDesc>(), 16);
        assert_eq!(core::mem::size_of::<NetInfo>(), 16);
        assert_eq!(core::mem::size_of::<NetSetup>(), 24);
        assert_eq!(ring_bytes(256), 128 + 256 * 16);
    }
}
