//! What the virtio drivers (features `net` and `block`) share: the DMA
//! layer `virtio-drivers` asks for ([`KvmHal`]), PCI configuration access
//! ([`PortCam`]), the virtio PCI functions and their BARs (found once,
//! before the page tables are built, so the BARs can be mapped), interrupt
//! routing (microvm's GSIs through the I/O APIC, MSI-X on PCI) and the
//! acknowledgement of level-triggered virtio-mmio interrupts.
//!
//! Memory: this guest identity-maps all RAM, so a DMA address is the
//! buffer's own address. Rings and buffers come from the runtime's frame
//! allocator (or its heap, which grows by contiguous frames).

use crate::cpu::{inl, outl};
use crate::ioapic;
use alloc::vec::Vec;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};
use virtio_drivers::transport::pci::bus::{BarInfo, ConfigurationAccess, DeviceFunction, PciRoot};
use virtio_drivers::{BufferDirection, Hal, PhysAddr};

pub const PAGE: usize = 4096;
/// virtio-mmio InterruptStatus / InterruptACK.
const MMIO_INTERRUPT_STATUS: u64 = 0x60;
const MMIO_INTERRUPT_ACK: u64 = 0x64;
/// At most this many virtio-mmio devices per driver get their interrupt acknowledged.
pub const MAX_MMIO: usize = 8;

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

pub fn cfg_read(df: DeviceFunction, reg: u8) -> u32 {
    // SAFETY: ring 0 at boot (the only time PCI configuration is touched);
    // the address/data port pair only reads a configuration register.
    unsafe {
        outl(0xcf8, cfg_address(df, reg));
        inl(0xcfc)
    }
}

pub fn cfg_write(df: DeviceFunction, reg: u8, v: u32) {
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

/// A virtio PCI function (device type `kind`: 1 net, 2 block) and its
/// memory BARs (address, size).
pub struct PciFunction {
    pub df: DeviceFunction,
    pub kind: u32,
    pub bars: Vec<(u64, u64)>,
}

/// The virtio functions on PCI bus 0 that a driver built in drives (`kinds`)
/// and their memory BARs.
///
/// # Safety
/// Ring 0, at boot (configuration ports).
pub unsafe fn pci_functions(kinds: &[u32]) -> Vec<PciFunction> {
    // SAFETY: per the function contract.
    let devices = unsafe { crate::virtio::probe_pci() };
    let mut root = PciRoot::new(PortCam);
    let mut out = Vec::new();
    for d in devices {
        let crate::virtio::Transport::Pci { bus, dev, func } = d.transport else {
            continue;
        };
        if !kinds.contains(&d.kind) {
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
        out.push(PciFunction {
            df,
            kind: d.kind,
            bars,
        });
    }
    out
}

/// Map (uncached) what the drivers touch: the PCI functions' memory BARs
/// and both I/O APIC pages (virtio-mmio regions are mapped with the
/// discovery's).
pub fn map_registers(tables: &mut crate::paging::Tables, pci: &[PciFunction]) {
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

/// The virtio-mmio devices of kind `kind`: the command line's
/// `virtio_mmio.device=` regions `mmio` (address, size, irq) and, when
/// `microvm_window` (no such token came), QEMU microvm's transport window
/// (`acpi`: the VMM gave an RSDP). (address, size, GSI).
pub fn mmio_devices(
    kind: u32,
    mmio: &[(u64, u64, u32)],
    microvm_window: bool,
    acpi: bool,
) -> Vec<(u64, u64, Option<u32>)> {
    let mut found: Vec<(u64, u64, Option<u32>)> = mmio
        .iter()
        .filter(|&&(a, s, i)| crate::virtio::probe_mmio(a, s, i).is_some_and(|d| d.kind == kind))
        .map(|&(a, s, i)| (a, s, Some(i)))
        .collect();
    if microvm_window {
        for slot in 0..crate::virtio::MICROVM_MMIO_SLOTS {
            let a = crate::virtio::MICROVM_MMIO_BASE + slot * 0x200;
            if crate::virtio::probe_mmio(a, 0x200, 0).is_some_and(|d| d.kind == kind) {
                found.push((a, 0x200, Some(microvm_gsi(slot as u32, acpi))));
            }
        }
    }
    found
}

/// The GSI of microvm's virtio-mmio transport `slot`: QEMU wires them to
/// the second I/O APIC (GSI 24..) when it has one, else (with ACPI) from
/// GSI 16, else from GSI 5.
pub fn microvm_gsi(slot: u32, acpi: bool) -> u32 {
    if ioapic::present(ioapic::BASE2) {
        ioapic::PINS + slot
    } else if acpi {
        16 + slot
    } else {
        5 + slot
    }
}

/// The virtio-mmio devices of one driver whose level-triggered interrupt
/// is routed: acknowledged (InterruptStatus written back to InterruptACK)
/// before the LAPIC EOI, so the line is low again when the I/O APIC sees
/// the EOI.
pub struct MmioAcks([AtomicU64; MAX_MMIO]);

impl MmioAcks {
    pub const fn new() -> Self {
        MmioAcks([const { AtomicU64::new(0) }; MAX_MMIO])
    }

    /// Remember `base`; false when the list is full.
    pub fn watch(&self, base: u64) -> bool {
        self.0.iter().any(|a| {
            a.compare_exchange(0, base, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        })
    }

    /// Acknowledge every remembered device (at ring 0 or 3: the registers
    /// are on a user-accessible uncached page).
    pub fn ack(&self) {
        for a in &self.0 {
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

/// Send the interrupts of virtqueues `0..queues` as MSI-X entry 0 =
/// `vector` on CPU 0 (config-change interrupts stay off). False when the
/// function has no MSI-X or the device refuses the vector.
pub fn enable_msix(df: DeviceFunction, vector: u8, queues: u16) -> bool {
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
        core::ptr::write_volatile((entry + 8) as *mut u32, vector as u32);
        core::ptr::write_volatile((entry + 12) as *mut u32, 0);
    }
    let control = cfg_read(df, msix);
    cfg_write(df, msix, (control | 1 << 31) & !(1 << 30));
    const MSIX_CONFIG: u64 = 0x10;
    const QUEUE_SELECT: u64 = 0x16;
    const QUEUE_MSIX_VECTOR: u64 = 0x1a;
    const NO_VECTOR: u16 = 0xffff;
    mmio_write16(common + MSIX_CONFIG, NO_VECTOR);
    (0..queues).all(|q| {
        mmio_write16(common + QUEUE_SELECT, q);
        mmio_write16(common + QUEUE_MSIX_VECTOR, 0);
        mmio_read16(common + QUEUE_MSIX_VECTOR) == 0
    })
}
