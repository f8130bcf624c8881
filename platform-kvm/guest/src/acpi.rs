//! ACPI S5 ("soft off"), the way a cloud VM powers itself off: the FADT
//! names the PM1 control registers (or, on hardware-reduced ACPI such as
//! QEMU's microvm, the sleep control register) and the DSDT's `\_S5`
//! package the sleep type to write with SLP_EN. A cloud VM has no
//! isa-debug-exit, and the i8042 reset means "reboot" there.
//!
//! [`init`] reads the tables once at boot, while the loader's identity map
//! of the low 4 GiB is still active (the tables live there), and keeps only
//! what [`power_off`] needs. Every length, offset and address is checked
//! against the table that holds it; a table that does not add up means no
//! S5 (the exit falls back to the reset line), never a fault.
use spin::Once;
use unikernel_runtime::acpi::{checksum_ok, le32, le64, parse, PowerOff};

static POWER_OFF: Once<Option<PowerOff>> = Once::new();

/// What [`init`] found (`None`: no ACPI, or no usable S5).
pub fn power_off_method() -> Option<PowerOff> {
    POWER_OFF.get().copied().flatten()
}

/// Reads `len` bytes at physical `pa` (identity-mapped, below 4 GiB).
///
/// # Safety
/// `[pa, pa + len)` must be mapped and readable.
unsafe fn bytes<'a>(pa: u64, len: usize) -> &'a [u8] {
    // SAFETY: per the function contract.
    unsafe { core::slice::from_raw_parts(pa as *const u8, len) }
}

const LOW_4G: u64 = 1 << 32;
/// Most bytes of one table we look at (QEMU's DSDT is a few KiB).
const MAX_TABLE: u64 = 1 << 20;

/// A whole SDT at `pa` whose signature is `sig`, checksum verified.
///
/// # Safety
/// The low 4 GiB must be identity-mapped.
unsafe fn table<'a>(pa: u64, sig: &[u8; 4]) -> Option<&'a [u8]> {
    if pa == 0 || pa.checked_add(36)? > LOW_4G {
        return None;
    }
    // SAFETY: below 4 GiB, identity-mapped per the function contract.
    let head = unsafe { bytes(pa, 36) };
    if &head[..4] != sig {
        return None;
    }
    let len = u64::from(le32(head, 4)?);
    if !(36..=MAX_TABLE).contains(&len) || pa + len > LOW_4G {
        return None;
    }
    // SAFETY: as above, the whole table below 4 GiB.
    let t = unsafe { bytes(pa, len as usize) };
    checksum_ok(t).then_some(t)
}

/// Reads the tables behind the RSDP at `rsdp` (0: none).
///
/// # Safety
/// The low 4 GiB must be identity-mapped (the loader's boot tables).
pub unsafe fn init(rsdp: u64) {
    // SAFETY: per the function contract.
    POWER_OFF.call_once(|| unsafe { find(rsdp) });
}

/// # Safety
/// As [`init`].
unsafe fn find(rsdp: u64) -> Option<PowerOff> {
    if rsdp == 0 || rsdp + 36 > LOW_4G {
        return None;
    }
    // SAFETY: below 4 GiB.
    let r = unsafe { bytes(rsdp, 36) };
    if &r[..8] != b"RSD PTR " || !checksum_ok(&r[..20]) {
        return None;
    }
    // The FADT's address, from the XSDT (revision 2+) or the RSDT.
    let mut fadt = None;
    if r[15] >= 2 && checksum_ok(r) {
        // SAFETY: below 4 GiB (checked in `table`).
        if let Some(x) = unsafe { table(le64(r, 24)?, b"XSDT") } {
            for o in (36..x.len()).step_by(8) {
                // SAFETY: as above.
                fadt = fadt.or_else(|| unsafe { table(le64(x, o)?, b"FACP") });
            }
        }
    }
    if fadt.is_none() {
        // SAFETY: as above.
        let rsdt = unsafe { table(u64::from(le32(r, 16)?), b"RSDT") }?;
        for o in (36..rsdt.len()).step_by(4) {
            // SAFETY: as above.
            fadt = fadt.or_else(|| unsafe { table(u64::from(le32(rsdt, o)?), b"FACP") });
        }
    }
    let fadt = fadt?;
    let dsdt_pa = le64(fadt, 140)
        .filter(|&a| a != 0)
        .or_else(|| le32(fadt, 40).map(u64::from))?;
    // SAFETY: as above.
    let dsdt = unsafe { table(dsdt_pa, b"DSDT") }?;
    parse(fadt, dsdt)
}

/// Powers the machine off if the tables said how; returns if they did not
/// (or the write had no effect).
pub fn power_off() {
    use unikernel_runtime::arch::x86_64::cpu::privileged;
    const SLP_EN: u16 = 1 << 13;
    match power_off_method() {
        Some(PowerOff::Pm1 {
            pm1a,
            pm1b,
            slp_typ_a,
            slp_typ_b,
        }) => {
            if pm1b != 0 {
                privileged::acpi_sleep(pm1b, u16::from(slp_typ_b) << 10 | SLP_EN);
            }
            privileged::acpi_sleep(pm1a, u16::from(slp_typ_a) << 10 | SLP_EN);
        }
        Some(PowerOff::SleepControl {
            io,
            address,
            slp_typ,
        }) => {
            let v = (slp_typ << 2) | (1 << 5);
            if io {
                privileged::outb(address as u16, v);
            } else {
                // SAFETY: the FADT's sleep control register, mapped as a
                // device page by the platform (see `mmio_page`).
                unsafe { core::ptr::write_volatile(address as *mut u8, v) };
            }
        }
        None => {}
    }
}

/// The page of a memory-space sleep control register, to map uncached.
pub fn mmio_page() -> Option<u64> {
    match power_off_method() {
        Some(PowerOff::SleepControl {
            io: false, address, ..
        }) => Some(address & !0xfff),
        _ => None,
    }
}
