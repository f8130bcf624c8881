//! Device classes: the small interfaces a platform's driver implements and
//! registers at boot, and the components use. The runtime never names a
//! platform: a driver (hvt net, virtio-net, netfront) registers a
//! [`NetDevice`]; the network component takes the devices from here.

use alloc::sync::Arc;
use alloc::vec::Vec;
use spin::Mutex;

/// An Ethernet device. Frames are whole Ethernet frames without the FCS.
///
/// Drivers never block: a full transmit ring answers `false`, an empty
/// receive ring `None`. When a frame arrives (or transmit space frees up)
/// while the guest idles, the platform's `block_until` returns early and
/// the scheduler runs the pollers (see [`crate::component`]).
pub trait NetDevice: Send + Sync {
    /// A short name for messages ("hvt0", "virtio-net0", "vif0").
    fn name(&self) -> &str;
    /// The device's MAC address.
    fn mac(&self) -> [u8; 6];
    /// The largest IP packet the link carries (Ethernet payload, 1500 on
    /// most links); frames are at most `mtu() + 14` bytes.
    fn mtu(&self) -> usize;
    /// Queue one frame for transmission; false when there is no room now
    /// (the caller keeps it and retries after the next poll).
    fn transmit(&self, frame: &[u8]) -> bool;
    /// Whether [`NetDevice::transmit`] would accept a frame now.
    fn can_transmit(&self) -> bool {
        true
    }
    /// Move the next received frame into `buf` (at least `mtu() + 14`
    /// bytes); its length, or `None` when no frame is waiting.
    fn receive(&self, buf: &mut [u8]) -> Option<usize>;
    /// Whether a received frame is waiting.
    fn can_receive(&self) -> bool;
}

static NET_DEVICES: Mutex<Vec<Arc<dyn NetDevice>>> = Mutex::new(Vec::new());

/// A driver found a network device (called by the platform at boot, before
/// the components start).
pub fn register_net(dev: Arc<dyn NetDevice>) {
    NET_DEVICES.lock().push(dev);
}

/// Every registered network device, in registration order.
pub fn net_devices() -> Vec<Arc<dyn NetDevice>> {
    NET_DEVICES.lock().clone()
}

/// A block device (a data volume). Sectors are [`BlockDevice::sector_size`]
/// bytes; `buf.len()` of every call is a non-zero multiple of it.
///
/// Calls are synchronous: they return when the device has done the
/// request (a driver may idle the vCPU meanwhile, or let other threads run
/// through the scheduler). A request that runs past the end of the device
/// answers `EINVAL` without reaching it; a write to a read-only device
/// `EROFS`; a request the device failed `EIO`. Drivers split requests
/// larger than their device takes at once.
pub trait BlockDevice: Send + Sync {
    /// A short name for messages ("hvt-blk0", "virtio-blk0", "xvda").
    fn name(&self) -> &str;
    /// The disk name the user attached it under (`--disk data=FILE` gives
    /// "data"), when the platform carries it (hvt; kvm through the
    /// virtio-blk serial); `None` otherwise (the runtime then matches
    /// devices to the image's declared disks in declaration order).
    fn label(&self) -> Option<&str> {
        None
    }
    /// Bytes per sector (512 on every device we drive today).
    fn sector_size(&self) -> usize {
        512
    }
    /// Capacity in sectors.
    fn sectors(&self) -> u64;
    /// The device refuses writes (a read-only file on the host).
    fn read_only(&self) -> bool;
    /// Whether [`BlockDevice::flush`] reaches stable storage (virtio-blk
    /// without VIRTIO_BLK_F_FLUSH cannot promise it).
    fn can_flush(&self) -> bool {
        true
    }
    /// Read `buf.len() / sector_size()` sectors starting at `sector`.
    fn read(&self, sector: u64, buf: &mut [u8]) -> Result<(), crate::errno::Errno>;
    /// Write `buf.len() / sector_size()` sectors starting at `sector`.
    fn write(&self, sector: u64, buf: &[u8]) -> Result<(), crate::errno::Errno>;
    /// Make every completed write durable (the host's `fdatasync`, a
    /// virtio FLUSH, a Xen FLUSH_DISKCACHE).
    fn flush(&self) -> Result<(), crate::errno::Errno>;
}

/// Check a request of `len` bytes at `sector` against a device of
/// `sectors` 512-byte sectors, as every [`BlockDevice`] does before it
/// reaches the disk: `EINVAL` when `len` is zero or not whole sectors, or
/// when the range does not end inside the device (overflow included).
pub fn check_request(sectors: u64, sector: u64, len: usize) -> Result<(), crate::errno::Errno> {
    const SECTOR: usize = 512;
    if len == 0 || !len.is_multiple_of(SECTOR) {
        return Err(crate::errno::EINVAL);
    }
    match sector.checked_add((len / SECTOR) as u64) {
        Some(end) if end <= sectors => Ok(()),
        _ => Err(crate::errno::EINVAL),
    }
}

static BLOCK_DEVICES: Mutex<Vec<Arc<dyn BlockDevice>>> = Mutex::new(Vec::new());

/// A driver found a block device (called by the platform at boot, before
/// the components start).
pub fn register_block(dev: Arc<dyn BlockDevice>) {
    BLOCK_DEVICES.lock().push(dev);
}

/// Every registered block device, in registration order.
pub fn block_devices() -> Vec<Arc<dyn BlockDevice>> {
    BLOCK_DEVICES.lock().clone()
}
