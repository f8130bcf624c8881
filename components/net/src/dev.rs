//! smoltcp's `Device` over the runtime's [`NetDevice`] (a platform
//! driver), and the loopback device.

use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use unikernel_runtime::device::NetDevice;

/// A platform's Ethernet device as smoltcp sees it.
pub struct Eth {
    pub dev: Arc<dyn NetDevice>,
    rx: Vec<u8>,
    tx: Vec<u8>,
    /// Frames moved, for the verbose report.
    pub rx_frames: u64,
    pub tx_frames: u64,
    /// A frame arrived or was sent since the flag was last cleared.
    pub activity: bool,
}

impl Eth {
    pub fn new(dev: Arc<dyn NetDevice>) -> Eth {
        let frame = dev.mtu() + 14;
        Eth {
            dev,
            rx: vec![0; frame],
            tx: vec![0; frame],
            rx_frames: 0,
            tx_frames: 0,
            activity: false,
        }
    }
}

pub struct EthRx<'a> {
    buf: &'a [u8],
}

pub struct EthTx<'a> {
    dev: &'a dyn NetDevice,
    buf: &'a mut Vec<u8>,
    sent: &'a mut u64,
}

impl phy::RxToken for EthRx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.buf)
    }
}

impl phy::TxToken for EthTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        if self.buf.len() < len {
            self.buf.resize(len, 0);
        }
        let r = f(&mut self.buf[..len]);
        if self.dev.transmit(&self.buf[..len]) {
            *self.sent += 1;
        }
        r
    }
}

impl Device for Eth {
    type RxToken<'a> = EthRx<'a>;
    type TxToken<'a> = EthTx<'a>;

    fn receive(&mut self, _t: Instant) -> Option<(EthRx<'_>, EthTx<'_>)> {
        let n = self.dev.receive(&mut self.rx)?;
        self.rx_frames += 1;
        self.activity = true;
        Some((
            EthRx { buf: &self.rx[..n] },
            EthTx {
                dev: &*self.dev,
                buf: &mut self.tx,
                sent: &mut self.tx_frames,
            },
        ))
    }

    fn transmit(&mut self, _t: Instant) -> Option<EthTx<'_>> {
        if !self.dev.can_transmit() {
            return None;
        }
        self.activity = true;
        Some(EthTx {
            dev: &*self.dev,
            buf: &mut self.tx,
            sent: &mut self.tx_frames,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = self.dev.mtu() + 14;
        caps.max_burst_size = None;
        caps
    }
}

/// Loopback: every transmitted packet is received back.
pub fn loopback() -> phy::Loopback {
    phy::Loopback::new(Medium::Ip)
}
