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
