//! Virtio device discovery, for the device components of later issues:
//! virtio-mmio devices named on the command line (`virtio_mmio.device=
//! <size>@<addr>:<irq>`, as QEMU microvm and Firecracker pass them) and
//! virtio-pci functions on bus 0 (q35), read through the legacy 0xcf8/0xcfc
//! configuration ports at boot. Only the identity registers are read here:
//! driving the devices (through the `virtio-drivers` transports) is the
//! components' job.

use crate::cpu::{inl, outl};
use alloc::string::String;
use alloc::vec::Vec;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    Mmio { addr: u64, size: u64, irq: u32 },
    Pci { bus: u8, dev: u8, func: u8 },
}

#[derive(Clone, Debug)]
pub struct Device {
    pub transport: Transport,
    /// Virtio device type (1 net, 2 block, 3 console, 4 entropy, ...).
    pub kind: u32,
}

pub fn type_name(kind: u32) -> &'static str {
    match kind {
        1 => "net",
        2 => "block",
        3 => "console",
        4 => "entropy",
        5 => "balloon",
        8 => "scsi",
        9 => "9p",
        16 => "gpu",
        18 => "input",
        19 => "vsock",
        26 => "fs",
        _ => "other",
    }
}

fn parse_num(s: &str) -> Option<u64> {
    let (digits, mul) = match s.as_bytes().last()? {
        b'K' | b'k' => (&s[..s.len() - 1], 1u64 << 10),
        b'M' | b'm' => (&s[..s.len() - 1], 1 << 20),
        b'G' | b'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let v = match digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        Some(h) => u64::from_str_radix(h, 16).ok()?,
        None => digits.parse().ok()?,
    };
    v.checked_mul(mul)
}

/// `<size>@<addr>:<irq>[:<id>]` as Linux's virtio_mmio.device parameter.
pub fn parse_mmio(spec: &str) -> Option<(u64, u64, u32)> {
    let (size, rest) = spec.split_once('@')?;
    let mut parts = rest.split(':');
    let addr = parse_num(parts.next()?)?;
    let irq = parts.next()?.parse().ok()?;
    Some((parse_num(size)?, addr, irq))
}

const MMIO_MAGIC: u32 = 0x7472_6976; // "virt"

/// QEMU microvm places its virtio-mmio transports here, 512 bytes each,
/// without naming them on a PVH command line (their interrupt is then
/// unknown here: reported as 0).
pub const MICROVM_MMIO_BASE: u64 = 0xfeb0_0000;
pub const MICROVM_MMIO_SLOTS: u64 = 24;

/// The microvm transports that have a device behind them (empty transports
/// read device id 0; where nothing is mapped the magic does not match).
pub fn probe_microvm() -> Vec<Device> {
    (0..MICROVM_MMIO_SLOTS)
        .filter_map(|i| probe_mmio(MICROVM_MMIO_BASE + i * 0x200, 0x200, 0))
        .collect()
}

/// Probe one virtio-mmio region (mapped by the caller).
pub fn probe_mmio(addr: u64, size: u64, irq: u32) -> Option<Device> {
    // SAFETY: the caller mapped the region uncached; these registers are read-only.
    let (magic, version, kind) = unsafe {
        (
            core::ptr::read_volatile(addr as *const u32),
            core::ptr::read_volatile((addr + 4) as *const u32),
            core::ptr::read_volatile((addr + 8) as *const u32),
        )
    };
    (magic == MMIO_MAGIC && (1..=2).contains(&version) && kind != 0).then_some(Device {
        transport: Transport::Mmio { addr, size, irq },
        kind,
    })
}

/// Virtio functions on PCI bus 0.
///
/// # Safety
/// Ring 0 (configuration ports).
pub unsafe fn probe_pci() -> Vec<Device> {
    let mut out = Vec::new();
    let read = |dev: u8, func: u8, reg: u8| {
        let a = 0x8000_0000u32 | ((dev as u32) << 11) | ((func as u32) << 8) | (reg as u32 & 0xfc);
        // SAFETY: per the function contract.
        unsafe {
            outl(0xcf8, a);
            inl(0xcfc)
        }
    };
    for dev in 0..32u8 {
        for func in 0..8u8 {
            let id = read(dev, func, 0);
            if id & 0xffff == 0xffff {
                if func == 0 {
                    break;
                }
                continue;
            }
            if id & 0xffff == 0x1af4 {
                let device = id >> 16;
                let kind = if device >= 0x1040 {
                    device - 0x1040
                } else {
                    read(dev, func, 0x2c) >> 16 // transitional: subsystem id
                };
                out.push(Device {
                    transport: Transport::Pci { bus: 0, dev, func },
                    kind,
                });
            }
        }
    }
    out
}

pub fn describe(d: &Device) -> String {
    match &d.transport {
        Transport::Mmio { addr, size, irq } => {
            alloc::format!(
                "virtio-mmio {addr:#x} ({size:#x} bytes, irq {irq}): {}",
                type_name(d.kind)
            )
        }
        Transport::Pci { bus, dev, func } => {
            alloc::format!(
                "virtio-pci {bus:02x}:{dev:02x}.{func}: {}",
                type_name(d.kind)
            )
        }
    }
}
