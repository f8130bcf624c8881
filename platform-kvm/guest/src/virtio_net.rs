//! The virtio-net driver (feature `net`): every virtio network device the
//! boot finds, on virtio-mmio (QEMU microvm, Firecracker) or virtio-pci
//! (QEMU q35), driven through the `virtio-drivers` crate's
//! [`VirtIONetRaw`] and registered with the runtime as a
//! [`NetDevice`] (`unikernel_runtime::device::register_net`).
//!
//! Memory, DMA, PCI discovery and interrupt routing: [`crate::virtio_hw`]
//! (shared with the block driver). The frame buffers are one 4 KiB page each.
//!
//! Interrupts: every device interrupt arrives on [`NET_VECTOR`] (33, the
//! vector after the preemption tick's 32). virtio-mmio raises its IRQ line,
//! routed through the I/O APIC (level-triggered); virtio-pci sends an MSI-X
//! message straight to the LAPIC. The interrupt only has to end the idle
//! `hlt` (or, hitting the app, pass through the runtime's trap path): the
//! network component's poller does the work. It is acknowledged in
//! [`ack_interrupts`] (virtio-mmio's interrupt status/ACK registers; MSI-X
//! needs nothing), called from the platform's `end_of_interrupt` before the
//! LAPIC EOI, so a level-triggered line is low again when the I/O APIC
//! sees the EOI.

use crate::virtio_hw::{self, KvmHal, MmioAcks, PciFunction, PortCam, PAGE};
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::ptr::NonNull;
use spin::Mutex;
use unikernel_runtime::device::NetDevice;
use virtio_drivers::device::net::VirtIONetRaw;
use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};
use virtio_drivers::transport::pci::bus::{Command, PciRoot};
use virtio_drivers::transport::pci::PciTransport;
use virtio_drivers::transport::{DeviceType, Transport};

/// The interrupt vector of every virtio-net device.
pub const NET_VECTOR: u8 = 33;
/// Descriptors per virtqueue (a power of two; one descriptor per buffer).
const QUEUE: usize = 32;
/// Receive buffers kept posted, transmit buffers in rotation.
const RX_BUFFERS: usize = 16;
const TX_BUFFERS: usize = 16;
/// virtio-net header (with `num_buffers`) + Ethernet header.
const HEADROOM: usize = 12 + 14;
/// VIRTIO_NET_F_MTU and the `mtu` field's offset in the device config.
const F_MTU: u64 = 1 << 3;
const CONFIG_MTU: usize = 10;

/// The virtio-mmio net devices whose interrupt is routed.
static MMIO_ACK: MmioAcks = MmioAcks::new();

/// One receive or transmit buffer: a DMA page.
type Buf = &'static mut [u8];

fn alloc_buf() -> Option<Buf> {
    let pa = unikernel_runtime::mm::frame::alloc_frame()?;
    // SAFETY: a fresh frame of identity-mapped RAM, owned by this driver
    // for good (buffers are never freed).
    Some(unsafe { core::slice::from_raw_parts_mut(pa as *mut u8, PAGE) })
}

/// The driver state behind the device's lock.
struct State<T: Transport> {
    raw: VirtIONetRaw<KvmHal, T, QUEUE>,
    /// Posted receive buffers, by the token (descriptor) the device has.
    rx: [Option<Buf>; QUEUE],
    /// Transmit buffers in flight (buffer, length given), by token.
    tx_busy: [Option<(Buf, usize)>; QUEUE],
    tx_free: Vec<Buf>,
}

// SAFETY: the buffers are pages owned by this state alone and the
// transport's registers are only touched under the device's lock; nothing
// in the state is tied to the CPU or thread that created it.
unsafe impl<T: Transport> Send for State<T> {}

impl<T: Transport> State<T> {
    /// Put `buf` (back) on the receive queue; false (buffer lost) if the
    /// device refuses it, which a queue of QUEUE > RX_BUFFERS never does.
    fn post_rx(&mut self, buf: Buf) -> bool {
        // SAFETY: `buf` is not touched until the device returns its token.
        match unsafe { self.raw.receive_begin(&mut *buf) } {
            Ok(t) if (t as usize) < QUEUE => {
                self.rx[t as usize] = Some(buf);
                true
            }
            _ => false,
        }
    }

    /// Take back the transmit buffers the device is done with.
    fn reclaim_tx(&mut self) {
        while let Some(t) = self.raw.poll_transmit() {
            let Some((buf, len)) = self.tx_busy.get_mut(t as usize).and_then(Option::take) else {
                return;
            };
            // SAFETY: the same buffer and length given to `transmit_begin` for this token.
            let _ = unsafe { self.raw.transmit_complete(t, &buf[..len]) };
            self.tx_free.push(buf);
        }
    }

    /// The next received frame into `out`: its length; frames the device
    /// marked bad are skipped.
    fn receive(&mut self, out: &mut [u8]) -> Option<usize> {
        loop {
            let t = self.raw.poll_receive()?;
            let buf = self.rx.get_mut(t as usize).and_then(Option::take)?;
            // SAFETY: the buffer posted with this token.
            let got = unsafe { self.raw.receive_complete(t, &mut *buf) };
            let n = got.ok().map(|(hdr, len)| {
                let n = len.min(out.len()).min(buf.len() - hdr);
                out[..n].copy_from_slice(&buf[hdr..hdr + n]);
                n
            });
            self.post_rx(buf);
            if n.is_some() {
                return n;
            }
        }
    }

    fn transmit(&mut self, frame: &[u8], max: usize) -> bool {
        self.reclaim_tx();
        if frame.len() > max {
            return true; // larger than the link carries: dropped, as a NIC would
        }
        let Some(buf) = self.tx_free.pop() else {
            return false;
        };
        let Ok(hdr) = self.raw.fill_buffer_header(buf) else {
            self.tx_free.push(buf);
            return true;
        };
        let len = hdr + frame.len();
        buf[hdr..len].copy_from_slice(frame);
        // SAFETY: `buf` stays untouched in `tx_busy` until its token comes back.
        match unsafe { self.raw.transmit_begin(&buf[..len]) } {
            Ok(t) if (t as usize) < QUEUE => {
                self.tx_busy[t as usize] = Some((buf, len));
                true
            }
            _ => {
                self.tx_free.push(buf);
                false
            }
        }
    }
}

/// A virtio network device registered with the runtime.
pub struct VirtioNet<T: Transport> {
    name: String,
    mac: [u8; 6],
    mtu: usize,
    state: Mutex<State<T>>,
}

impl<T: Transport> NetDevice for VirtioNet<T> {
    fn name(&self) -> &str {
        &self.name
    }

    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn mtu(&self) -> usize {
        self.mtu
    }

    fn transmit(&self, frame: &[u8]) -> bool {
        self.state.lock().transmit(frame, self.mtu + 14)
    }

    fn can_transmit(&self) -> bool {
        let mut s = self.state.lock();
        s.reclaim_tx();
        !s.tx_free.is_empty() && s.raw.can_send()
    }

    fn receive(&self, buf: &mut [u8]) -> Option<usize> {
        self.state.lock().receive(buf)
    }

    fn can_receive(&self) -> bool {
        self.state.lock().raw.poll_receive().is_some()
    }
}

/// Bring up one device on `transport`: features, MTU, queues, buffers.
fn start<T: Transport>(mut transport: T, name: String) -> Result<VirtioNet<T>, String> {
    if transport.device_type() != DeviceType::Network {
        return Err(format!("{name}: not a network device"));
    }
    let offered = transport.read_device_features();
    let mtu = if offered & F_MTU != 0 {
        transport
            .read_config_space::<u16>(CONFIG_MTU)
            .map_or(1500, |m| m as usize)
    } else {
        1500
    };
    // A frame and its headers fit one page.
    let mtu = mtu.clamp(68, PAGE - HEADROOM);
    let raw = VirtIONetRaw::<KvmHal, T, QUEUE>::new(transport)
        .map_err(|e| format!("{name}: device set-up failed: {e:?}"))?;
    let mut state = State {
        raw,
        rx: [const { None }; QUEUE],
        tx_busy: [const { None }; QUEUE],
        tx_free: Vec::new(),
    };
    for _ in 0..RX_BUFFERS {
        let buf = alloc_buf().ok_or_else(|| format!("{name}: out of memory for buffers"))?;
        if !state.post_rx(buf) {
            return Err(format!("{name}: the device refused a receive buffer"));
        }
    }
    for _ in 0..TX_BUFFERS {
        let buf = alloc_buf().ok_or_else(|| format!("{name}: out of memory for buffers"))?;
        state.tx_free.push(buf);
    }
    Ok(VirtioNet {
        name,
        mac: state.raw.mac_address(),
        mtu,
        state: Mutex::new(state),
    })
}

/// Acknowledge the interrupt of every virtio-mmio net device (called from
/// the platform's `end_of_interrupt` for [`NET_VECTOR`]).
pub fn ack_interrupts() {
    MMIO_ACK.ack();
}

fn describe(mac: [u8; 6], mtu: usize) -> String {
    format!(
        "MAC {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}, MTU {mtu}",
        mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]
    )
}

/// One virtio-mmio device at `addr` (`size` bytes), interrupt `gsi`.
fn start_mmio(addr: u64, size: u64, gsi: Option<u32>, name: String) -> Result<String, String> {
    let header = NonNull::new(addr as *mut VirtIOHeader).ok_or("null address")?;
    // SAFETY: a virtio-mmio region the boot mapped uncached (probed: the
    // magic matched), `size` bytes, driven by this transport alone.
    let transport = unsafe { MmioTransport::new(header, size as usize) }
        .map_err(|e| format!("{name}: virtio-mmio {addr:#x}: {e:?}"))?;
    let dev = start(transport, name.clone())?;
    let what = describe(dev.mac, dev.mtu);
    let irq = match gsi {
        Some(g) if MMIO_ACK.watch(addr) && crate::ioapic::route(g, NET_VECTOR) => {
            format!("irq {g} -> vector {NET_VECTOR}")
        }
        Some(g) => format!("irq {g} not routable: polled only"),
        None => "no irq known: polled only".into(),
    };
    unikernel_runtime::device::register_net(Arc::new(dev));
    Ok(format!("{name}: virtio-mmio {addr:#x}, {irq}, {what}"))
}

/// One virtio-pci function.
fn start_pci(p: &PciFunction, name: String) -> Result<String, String> {
    let df = p.df;
    let mut root = PciRoot::new(PortCam);
    let (_, command) = root.get_status_command(df);
    root.set_command(df, command | Command::MEMORY_SPACE | Command::BUS_MASTER);
    let transport = PciTransport::new::<KvmHal, _>(&mut root, df).map_err(|e| {
        format!(
            "{name}: virtio-pci {:02x}:{:02x}.{}: {e:?}",
            df.bus, df.device, df.function
        )
    })?;
    let dev = start(transport, name.clone())?;
    let what = describe(dev.mac, dev.mtu);
    let irq = if virtio_hw::enable_msix(df, NET_VECTOR, 2) {
        format!("MSI-X -> vector {NET_VECTOR}")
    } else {
        "no MSI-X: polled only".into()
    };
    unikernel_runtime::device::register_net(Arc::new(dev));
    Ok(format!(
        "{name}: virtio-pci {:02x}:{:02x}.{}, {irq}, {what}",
        df.bus, df.device, df.function
    ))
}

/// Bring up and register every virtio-net device: `mmio` from the command
/// line's `virtio_mmio.device=` tokens (address, size, irq), QEMU
/// microvm's transport window when `microvm_window` (no token came;
/// `acpi`: the VMM gave an RSDP), and the net functions of `pci`
/// ([`virtio_hw::pci_functions`]). One
/// line per device, or per device that failed, for the verbose listing.
pub fn init_all(
    mmio: &[(u64, u64, u32)],
    microvm_window: bool,
    acpi: bool,
    pci: &[PciFunction],
) -> Vec<String> {
    let found = virtio_hw::mmio_devices(1, mmio, microvm_window, acpi);
    let mut lines = Vec::new();
    let mut n = 0;
    for (addr, size, gsi) in found {
        let name = format!("virtio-net{n}");
        n += 1;
        lines.push(start_mmio(addr, size, gsi, name).unwrap_or_else(|e| e));
    }
    for p in pci.iter().filter(|p| p.kind == 1) {
        let name = format!("virtio-net{n}");
        n += 1;
        lines.push(start_pci(p, name).unwrap_or_else(|e| e));
    }
    lines
}
