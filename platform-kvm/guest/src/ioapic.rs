//! The I/O APICs, only as far as the virtio-net driver needs them: route
//! one input pin to a LAPIC vector (level-triggered, active high, fixed
//! delivery to APIC ID 0). QEMU microvm has one I/O APIC at 0xfec00000
//! (GSIs 0..23) and, with ACPI (its default), a second one at 0xfec10000
//! (GSIs 24..47), where its virtio-mmio transports are wired; Firecracker
//! has the first one only. Both pages are mapped uncached at boot.

/// The first I/O APIC (GSI 0..23).
pub const BASE: u64 = 0xfec0_0000;
/// QEMU microvm's second I/O APIC (GSI 24..47), when it has one.
pub const BASE2: u64 = 0xfec1_0000;
/// Input pins per I/O APIC (QEMU, KVM, Firecracker).
pub const PINS: u32 = 24;

const IOREGSEL: u64 = 0x00;
const IOWIN: u64 = 0x10;
const REG_VERSION: u32 = 0x01;
const REG_REDIR: u32 = 0x10;
const LEVEL: u32 = 1 << 15;

fn read(base: u64, reg: u32) -> u32 {
    // SAFETY: `base` is one of the two I/O APIC pages, mapped uncached at
    // boot; IOREGSEL/IOWIN accesses only select and read a register.
    unsafe {
        core::ptr::write_volatile((base + IOREGSEL) as *mut u32, reg);
        core::ptr::read_volatile((base + IOWIN) as *const u32)
    }
}

fn write(base: u64, reg: u32, v: u32) {
    // SAFETY: as in `read`; the registers written are redirection entries.
    unsafe {
        core::ptr::write_volatile((base + IOREGSEL) as *mut u32, reg);
        core::ptr::write_volatile((base + IOWIN) as *mut u32, v);
    }
}

/// Whether an I/O APIC answers at `base` (its version register reads
/// version 0x1x/0x2x with a sane pin count; unbacked memory reads 0 or ~0).
pub fn present(base: u64) -> bool {
    let v = read(base, REG_VERSION);
    let version = v & 0xff;
    let max_redir = (v >> 16) & 0xff;
    (0x10..0x30).contains(&version) && (1..=239).contains(&max_redir)
}

/// Route `gsi` to `vector` on CPU 0 (level-triggered, active high) and
/// unmask it. False when no present I/O APIC has that input.
pub fn route(gsi: u32, vector: u8) -> bool {
    let (base, pin) = match gsi {
        g if g < PINS => (BASE, g),
        g if g < 2 * PINS => (BASE2, g - PINS),
        _ => return false,
    };
    if !present(base) {
        return false;
    }
    write(base, REG_REDIR + 2 * pin + 1, 0); // destination APIC ID 0
    write(base, REG_REDIR + 2 * pin, LEVEL | vector as u32);
    true
}
