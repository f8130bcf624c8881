//! The virtio-net driver (feature `net`): every virtio network device the
//! boot finds, on virtio-mmio (QEMU microvm, Firecracker) or virtio-pci
//! (QEMU q35), driven through the `virtio-drivers` crate's
//! [`VirtIONetRaw`] and registered with the runtime as a
//! [`NetDevice`] (`unikernel_runtime::device::register_net`).
//!
//! Memory: this guest identity-maps all RAM, so a DMA address is the
//! buffer's own address. The rings and the frame buffers (one 4 KiB page
//! per buffer) come from the runtime's frame allocator.
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

use crate::cpu::{inl, outl};
use crate::ioapic;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};
use spin::Mutex;
use unikernel_runtime::device::NetDevice;
use virtio_drivers::device::net::VirtIONetRaw;
use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};
use virtio_drivers::transport::pci::bus::{
    BarInfo, Command, ConfigurationAccess, DeviceFunction, PciRoot,
};
use virtio_drivers::transport::pci::PciTransport;
use virtio_drivers::transport::{DeviceType, Transport};
use virtio_drivers::{BufferDirection, Hal, PhysAddr};

/// The interrupt vector of every virtio-net device.
pub const NET_VECTOR: u8 = 33;
/// Descriptors per virtqueue (a power of two; one descriptor per buffer).
const QUEUE: usize = 32;
/// Receive buffers kept posted, transmit buffers in rotation.
const RX_BUFFERS: usize = 16;
const TX_BUFFERS: usize = 16;
const PAGE: usize = 4096;
/// virtio-net header (with `num_buffers`) + Ethernet header.
const HEADROOM: usize = 12 + 14;
/// VIRTIO_NET_F_MTU and the `mtu` field's offset in the device config.
const F_MTU: u64 = 1 << 3;
const CONFIG_MTU: usize = 10;
/// virtio-mmio InterruptStatus / InterruptACK.
const MMIO_INTERRUPT_STATUS: u64 = 0x60;
const MMIO_INTERRUPT_ACK: u64 = 0x64;
/// At most this many virtio-mmio devices get their interrupt acknowledged.
const MAX_MMIO: usize = 8;

/// Base addresses of the virtio-mmio net devices whose interrupt is routed.
static MMIO_ACK: [AtomicU64; MAX_MMIO] = [const { AtomicU64::new(0) }; MAX_MMIO];

/// DMA and address translation for `virtio-drivers`: physical == virtual.
pub struct KvmHal;

// SAFETY: dma_alloc returns zeroed, page-aligned, identity-mapped frames
// that nothing else uses until dma_dealloc gives them back; every address
// handed to the device is the identity-mapped address of the buffer.
unsafe impl Hal for KvmHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let Some(pa) = unikernel_runtime::mm::frame::FRAMES
            .lock()
            .alloc_contiguous(pages as u64)
        else {
            return (0, NonNull::dangling());
        };
        // SAFETY: `pages` fresh frames, identity-mapped RAM, ours alone.
        unsafe { core::ptr::write_bytes(pa as *mut u8, 0, pages * PAGE) };
        match NonNull::new(pa as *mut u8) {
            Some(va) => (pa, va),
            None => (0, NonNull::dangling()),
        }
    }

    unsafe fn dma_dealloc(paddr: PhysAddr, _vaddr: NonNull<u8>, pages: usize) -> i32 {
        for i in 0..pages as u64 {
            unikernel_runtime::mm::frame::free_frame(paddr + i * PAGE as u64);
        }
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        // Device regions are identity-mapped (uncached) at boot.
        NonNull::new(paddr as *mut u8).unwrap_or(NonNull::dangling())
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        buffer.cast::<u8>().as_ptr() as PhysAddr
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}

/// PCI configuration space through ports 0xcf8/0xcfc (ring 0: boot only).
pub struct PortCam;

fn cfg_address(df: DeviceFunction, reg: u8) -> u32 {
    0x8000_0000
        | (df.bus as u32) << 16
        | (df.device as u32) << 11
        | (df.function as u32) << 8
        | (reg as u32 & 0xfc)
}

fn cfg_read(df: DeviceFunction, reg: u8) -> u32 {
    // SAFETY: ring 0 at boot (the only time PCI configuration is touched);
    // the address/data port pair only reads a configuration register.
    unsafe {
        outl(0xcf8, cfg_address(df, reg));
        inl(0xcfc)
    }
}

fn cfg_write(df: DeviceFunction, reg: u8, v: u32) {
    // SAFETY: as in `cfg_read`; callers write registers of devices they drive.
    unsafe {
        outl(0xcf8, cfg_address(df, reg));
        outl(0xcfc, v);
    }
}

impl ConfigurationAccess for PortCam {
    fn read_word(&self, df: DeviceFunction, reg: u8) -> u32 {
        cfg_read(df, reg)
    }

    fn write_word(&mut self, df: DeviceFunction, reg: u8, data: u32) {
        cfg_write(df, reg, data)
    }

    unsafe fn unsafe_clone(&self) -> Self {
        PortCam
    }
}

/// A virtio-net PCI function and its memory BARs (address, size), found
/// before the page tables are built so that the BARs can be mapped.
pub struct PciNet {
    df: DeviceFunction,
    pub bars: Vec<(u64, u64)>,
}

/// The virtio-net functions on PCI bus 0 and their memory BARs.
///
/// # Safety
/// Ring 0, at boot (configuration ports).
pub unsafe fn pci_functions() -> Vec<PciNet> {
    // SAFETY: per the function contract.
    let devices = unsafe { crate::virtio::probe_pci() };
    let mut root = PciRoot::new(PortCam);
    let mut out = Vec::new();
    for d in devices {
        let crate::virtio::Transport::Pci { bus, dev, func } = d.transport else {
            continue;
        };
        if d.kind != 1 {
            continue;
        }
        let df = DeviceFunction {
            bus,
            device: dev,
            function: func,
        };
        let mut bars = Vec::new();
        let mut i = 0;
        while i < 6 {
            let info = root.bar_info(df, i).ok().flatten();
            let wide = info.as_ref().is_some_and(|b| b.takes_two_entries());
            if let Some(BarInfo::Memory { address, size, .. }) = info {
                if address != 0 && size != 0 {
                    bars.push((address, size.min(1 << 20)));
                }
            }
            i += if wide { 2 } else { 1 };
        }
        out.push(PciNet { df, bars });
    }
    out
}

/// Map (uncached) what the driver touches: the PCI functions' memory BARs
/// and both I/O APIC pages (virtio-mmio regions are mapped with the
/// discovery's).
pub fn map_registers(tables: &mut crate::paging::Tables, pci: &[PciNet]) {
    for p in pci {
        for &(addr, size) in &p.bars {
            let mut page = addr & !0xfff;
            while page < addr + size {
                tables.map_4k(page, crate::paging::DEVICE);
                page += PAGE as u64;
            }
        }
    }
    tables.map_4k(ioapic::BASE, crate::paging::DEVICE);
    tables.map_4k(ioapic::BASE2, crate::paging::DEVICE);
}

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

/// The GSI of microvm's virtio-mmio transport `slot`: QEMU wires them to
/// the second I/O APIC (GSI 24..) when it has one, else (with ACPI) from
/// GSI 16, else from GSI 5.
fn microvm_gsi(slot: u32, acpi: bool) -> u32 {
    if ioapic::present(ioapic::BASE2) {
        ioapic::PINS + slot
    } else if acpi {
        16 + slot
    } else {
        5 + slot
    }
}

/// Acknowledge the interrupt of every virtio-mmio net device (called from
/// the platform's `end_of_interrupt` for [`NET_VECTOR`], at ring 0 or 3:
/// the registers are on a user-accessible uncached page).
pub fn ack_interrupts() {
    for a in &MMIO_ACK {
        let base = a.load(Ordering::Acquire);
        if base == 0 {
            break;
        }
        // SAFETY: a virtio-mmio device's page, mapped uncached at boot;
        // reading InterruptStatus and writing it back to InterruptACK only
        // lowers the device's interrupt line.
        unsafe {
            let status = core::ptr::read_volatile((base + MMIO_INTERRUPT_STATUS) as *const u32);
            if status != 0 {
                core::ptr::write_volatile((base + MMIO_INTERRUPT_ACK) as *mut u32, status);
            }
        }
    }
}

fn watch_mmio(base: u64) -> bool {
    MMIO_ACK.iter().any(|a| {
        a.compare_exchange(0, base, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    })
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
        Some(g) if watch_mmio(addr) && ioapic::route(g, NET_VECTOR) => {
            format!("irq {g} -> vector {NET_VECTOR}")
        }
        Some(g) => format!("irq {g} not routable: polled only"),
        None => "no irq known: polled only".into(),
    };
    unikernel_runtime::device::register_net(Arc::new(dev));
    Ok(format!("{name}: virtio-mmio {addr:#x}, {irq}, {what}"))
}

/// The capabilities of a PCI function: (offset, id).
fn pci_caps(df: DeviceFunction) -> Vec<(u8, u8)> {
    let mut out = Vec::new();
    if cfg_read(df, 0x04) & (1 << 20) == 0 {
        return out;
    }
    let mut at = (cfg_read(df, 0x34) & 0xfc) as u8;
    while at != 0 && out.len() < 48 {
        let w = cfg_read(df, at);
        out.push((at, w as u8));
        at = ((w >> 8) & 0xfc) as u8;
    }
    out
}

/// The address a memory BAR decodes.
fn bar_address(df: DeviceFunction, bar: u8) -> Option<u64> {
    if bar >= 6 {
        return None;
    }
    let lo = cfg_read(df, 0x10 + 4 * bar);
    if lo & 1 != 0 {
        return None;
    }
    let hi = if (lo >> 1) & 3 == 2 && bar < 5 {
        cfg_read(df, 0x14 + 4 * bar) as u64
    } else {
        0
    };
    Some((hi << 32) | (lo & !0xf) as u64).filter(|&a| a != 0)
}

fn mmio_write16(addr: u64, v: u16) {
    // SAFETY: a register of the virtio common configuration in a BAR the
    // boot mapped uncached (callers pass only such addresses).
    unsafe { core::ptr::write_volatile(addr as *mut u16, v) }
}

fn mmio_read16(addr: u64) -> u16 {
    // SAFETY: as in `mmio_write16`.
    unsafe { core::ptr::read_volatile(addr as *const u16) }
}

/// Send both virtqueues' interrupts as MSI-X entry 0 = [`NET_VECTOR`] on
/// CPU 0 (config-change interrupts stay off). False when the function has
/// no MSI-X or the device refuses the vector.
fn enable_msix(df: DeviceFunction) -> bool {
    let caps = pci_caps(df);
    let Some(&(msix, _)) = caps.iter().find(|c| c.1 == 0x11) else {
        return false;
    };
    // The virtio common configuration (vendor capability, cfg_type 1).
    let Some(common) = caps.iter().find_map(|&(at, id)| {
        let cfg_type = (cfg_read(df, at) >> 24) as u8;
        (id == 0x09 && cfg_type == 1).then(|| {
            let bar = cfg_read(df, at + 4) as u8;
            bar_address(df, bar).map(|b| b + cfg_read(df, at + 8) as u64)
        })?
    }) else {
        return false;
    };
    let table = cfg_read(df, msix + 4);
    let Some(bar) = bar_address(df, (table & 7) as u8) else {
        return false;
    };
    let entry = bar + (table & !7) as u64;
    // SAFETY: MSI-X table entry 0 in a BAR mapped uncached at boot:
    // message address (LAPIC, APIC ID 0), data (fixed, edge, the vector),
    // vector control (unmasked).
    unsafe {
        core::ptr::write_volatile(entry as *mut u32, 0xfee0_0000);
        core::ptr::write_volatile((entry + 4) as *mut u32, 0);
        core::ptr::write_volatile((entry + 8) as *mut u32, NET_VECTOR as u32);
        core::ptr::write_volatile((entry + 12) as *mut u32, 0);
    }
    let control = cfg_read(df, msix);
    cfg_write(df, msix, (control | 1 << 31) & !(1 << 30));
    const MSIX_CONFIG: u64 = 0x10;
    const QUEUE_SELECT: u64 = 0x16;
    const QUEUE_MSIX_VECTOR: u64 = 0x1a;
    const NO_VECTOR: u16 = 0xffff;
    mmio_write16(common + MSIX_CONFIG, NO_VECTOR);
    (0..2).all(|q| {
        mmio_write16(common + QUEUE_SELECT, q);
        mmio_write16(common + QUEUE_MSIX_VECTOR, 0);
        mmio_read16(common + QUEUE_MSIX_VECTOR) == 0
    })
}

/// One virtio-pci function.
fn start_pci(p: &PciNet, name: String) -> Result<String, String> {
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
    let irq = if enable_msix(df) {
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
/// `acpi`: the VMM gave an RSDP), and `pci` from [`pci_functions`]. One
/// line per device, or per device that failed, for the verbose listing.
pub fn init_all(
    mmio: &[(u64, u64, u32)],
    microvm_window: bool,
    acpi: bool,
    pci: &[PciNet],
) -> Vec<String> {
    let mut found: Vec<(u64, u64, Option<u32>)> = mmio
        .iter()
        .filter(|&&(a, s, i)| crate::virtio::probe_mmio(a, s, i).is_some_and(|d| d.kind == 1))
        .map(|&(a, s, i)| (a, s, Some(i)))
        .collect();
    if microvm_window {
        for slot in 0..crate::virtio::MICROVM_MMIO_SLOTS {
            let a = crate::virtio::MICROVM_MMIO_BASE + slot * 0x200;
            if crate::virtio::probe_mmio(a, 0x200, 0).is_some_and(|d| d.kind == 1) {
                found.push((a, 0x200, Some(microvm_gsi(slot as u32, acpi))));
            }
        }
    }
    let mut lines = Vec::new();
    let mut n = 0;
    for (addr, size, gsi) in found {
        let name = format!("virtio-net{n}");
        n += 1;
        lines.push(start_mmio(addr, size, gsi, name).unwrap_or_else(|e| e));
    }
    for p in pci {
        let name = format!("virtio-net{n}");
        n += 1;
        lines.push(start_pci(p, name).unwrap_or_else(|e| e));
    }
    lines
}
