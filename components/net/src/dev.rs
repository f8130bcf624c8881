//! smoltcp's `Device` over the runtime's [`NetDevice`] (a platform
//! driver), and the loopback device.

use alloc::collections::VecDeque;
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
    /// Ports of listeners with a full accept queue.
    pub full_ports: Vec<u16>,
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
            full_ports: Vec::new(),
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
        let n = loop {
            let n = self.dev.receive(&mut self.rx)?;
            self.rx_frames += 1;
            self.activity = true;
            // IPv4 (0x0800) or IPv6 (0x86dd) after the 14-byte header.
            let et = (n >= 14).then(|| u16::from_be_bytes([self.rx[12], self.rx[13]]));
            let ip = matches!(et, Some(0x0800 | 0x86dd));
            if !(ip && drop_syn(&self.rx[14..n], &self.full_ports)) {
                break n;
            }
        };
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

/// The TCP destination port of an IP packet that opens a connection (SYN
/// without ACK), if it is one.
pub fn syn_port(ip: &[u8]) -> Option<u16> {
    let tcp = match ip.first()? >> 4 {
        4 => {
            let ihl = (ip[0] & 0xf) as usize * 4;
            if ip.len() < 20 || ip[9] != 6 || ihl < 20 {
                return None;
            }
            ip.get(ihl..)?
        }
        6 => {
            if ip.len() < 40 || ip[6] != 6 {
                return None;
            }
            &ip[40..]
        }
        _ => return None,
    };
    if tcp.len() < 20 {
        return None;
    }
    let flags = tcp[13];
    (flags & 0x02 != 0 && flags & 0x10 == 0).then(|| u16::from_be_bytes([tcp[2], tcp[3]]))
}

/// Whether to drop an incoming packet: a SYN for a listener whose accept
/// queue is full is dropped, as Linux does (the peer retries later).
fn drop_syn(ip: &[u8], full_ports: &[u16]) -> bool {
    !full_ports.is_empty() && syn_port(ip).is_some_and(|p| full_ports.contains(&p))
}

/// The loopback link: every transmitted packet is received back.
pub struct Lo {
    queue: VecDeque<Vec<u8>>,
    /// Ports of listeners with a full accept queue.
    pub full_ports: Vec<u16>,
}

impl Lo {
    pub fn new() -> Lo {
        Lo {
            queue: VecDeque::new(),
            full_ports: Vec::new(),
        }
    }
}

pub struct LoRx {
    packet: Vec<u8>,
}

pub struct LoTx<'a> {
    queue: &'a mut VecDeque<Vec<u8>>,
}

impl phy::RxToken for LoRx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.packet)
    }
}

impl phy::TxToken for LoTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut p = vec![0u8; len];
        let r = f(&mut p);
        self.queue.push_back(p);
        r
    }
}

impl Device for Lo {
    type RxToken<'a> = LoRx;
    type TxToken<'a> = LoTx<'a>;

    fn receive(&mut self, _t: Instant) -> Option<(LoRx, LoTx<'_>)> {
        loop {
            let packet = self.queue.pop_front()?;
            if drop_syn(&packet, &self.full_ports) {
                continue;
            }
            return Some((
                LoRx { packet },
                LoTx {
                    queue: &mut self.queue,
                },
            ));
        }
    }

    fn transmit(&mut self, _t: Instant) -> Option<LoTx<'_>> {
        Some(LoTx {
            queue: &mut self.queue,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = 65535;
        caps.checksum = phy::ChecksumCapabilities::ignored();
        caps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_syns() {
        // IPv4 header (20 bytes, proto 6) + TCP header to port 8080, SYN.
        let mut p = vec![0u8; 40];
        p[0] = 0x45;
        p[9] = 6;
        p[22] = 0x1f;
        p[23] = 0x90;
        p[33] = 0x02;
        assert_eq!(syn_port(&p), Some(8080));
        p[33] = 0x12; // SYN-ACK
        assert_eq!(syn_port(&p), None);
        p[33] = 0x02;
        assert!(drop_syn(&p, &[8080]));
        assert!(!drop_syn(&p, &[80]));
        assert_eq!(syn_port(&p[..30]), None);
        assert_eq!(syn_port(&[]), None);
        let mut q = vec![0u8; 60];
        q[0] = 0x60;
        q[6] = 6;
        q[42] = 0;
        q[43] = 80;
        q[53] = 0x02;
        assert_eq!(syn_port(&q), Some(80));
    }
}
