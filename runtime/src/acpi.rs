//! ACPI tables, the parts a platform needs to power the machine off (S5):
//! the FADT's PM1 control ports or hardware-reduced sleep control register,
//! and the sleep type from the DSDT's `\_S5` package. Pure functions over
//! table bytes; the platform finds the tables and writes the registers
//! (platform-kvm's `acpi.rs`). Nothing here trusts a length or an offset:
//! a table that does not add up gives `None`.

/// How to power off, found in the tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PowerOff {
    /// Legacy ACPI: write `SLP_TYPx << 10 | SLP_EN` into PM1a_CNT (and
    /// PM1b_CNT when there is one), I/O ports.
    Pm1 {
        pm1a: u16,
        pm1b: u16,
        slp_typ_a: u8,
        slp_typ_b: u8,
    },
    /// Hardware-reduced ACPI: write `SLP_TYP << 2 | SLP_EN` (bit 5) into
    /// the sleep control register, a byte in I/O or memory space.
    SleepControl { io: bool, address: u64, slp_typ: u8 },
}

/// Little-endian reads that fail (instead of panicking) past the end.
pub fn le16(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?))
}
pub fn le32(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?))
}
pub fn le64(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?))
}

/// True if the bytes of a table (or the RSDP) sum to zero.
pub fn checksum_ok(b: &[u8]) -> bool {
    b.iter().fold(0u8, |s, &x| s.wrapping_add(x)) == 0
}

/// The power-off method from a FADT and a DSDT (both whole tables).
pub fn parse(fadt: &[u8], dsdt: &[u8]) -> Option<PowerOff> {
    let (typ_a, typ_b) = s5(dsdt.get(36..)?)?;
    const HW_REDUCED_ACPI: u32 = 1 << 20;
    let flags = le32(fadt, 112).unwrap_or(0);
    if flags & HW_REDUCED_ACPI != 0 {
        // SLEEP_CONTROL_REG, a Generic Address Structure at 244.
        let gas = fadt.get(244..256)?;
        let address = le64(gas, 4)?;
        let io = match gas[0] {
            0 => false,
            1 => true,
            _ => return None,
        };
        if address == 0 || (io && address > 0xffff) {
            return None;
        }
        return Some(PowerOff::SleepControl {
            io,
            address,
            slp_typ: typ_a & 7,
        });
    }
    // PM1a_CNT_BLK (36-byte header + 28), or the extended one at 172 (I/O space).
    let port = |legacy: usize, ext: usize| -> u16 {
        let l = le32(fadt, legacy).unwrap_or(0);
        if l != 0 && l <= 0xffff {
            return l as u16;
        }
        match fadt.get(ext..ext + 12) {
            Some(g) if g[0] == 1 => le64(g, 4).filter(|&a| a <= 0xffff).unwrap_or(0) as u16,
            _ => 0,
        }
    };
    let pm1a = port(64, 172);
    if pm1a == 0 {
        return None;
    }
    Some(PowerOff::Pm1 {
        pm1a,
        pm1b: port(68, 184),
        slp_typ_a: typ_a & 7,
        slp_typ_b: typ_b & 7,
    })
}

/// SLP_TYPa and SLP_TYPb from the AML `Name (_S5, Package () {a, b, ...})`.
fn s5(aml: &[u8]) -> Option<(u8, u8)> {
    let at = aml.windows(4).position(|w| w == b"_S5_")?;
    // NameOp (0x08), optionally the root prefix '\', then the name.
    let named = at >= 1
        && (aml[at - 1] == 0x08 || (at >= 2 && aml[at - 1] == b'\\' && aml[at - 2] == 0x08));
    if !named {
        return None;
    }
    let mut p = at + 4;
    if *aml.get(p)? != 0x12 {
        return None; // not a PackageOp
    }
    p += 1;
    // PkgLength: bits 7-6 of the lead byte count the bytes that follow.
    p += 1 + usize::from(*aml.get(p)? >> 6);
    p += 1; // NumElements
    let element = |p: &mut usize| -> Option<u8> {
        let op = *aml.get(*p)?;
        *p += 1;
        match op {
            0x00 => Some(0),    // ZeroOp
            0x01 => Some(1),    // OneOp
            0xff => Some(0xff), // OnesOp
            0x0a => {
                // BytePrefix
                let v = *aml.get(*p)?;
                *p += 1;
                Some(v)
            }
            0x0b => {
                // WordPrefix
                let v = le16(aml, *p)?;
                *p += 2;
                Some(v as u8)
            }
            _ => None,
        }
    };
    let a = element(&mut p)?;
    let b = element(&mut p).unwrap_or(a);
    Some((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;

    fn sdt(sig: &[u8; 4], len: usize, body: &[(usize, &[u8])]) -> Vec<u8> {
        let mut t = vec![0u8; len];
        t[..4].copy_from_slice(sig);
        t[4..8].copy_from_slice(&(len as u32).to_le_bytes());
        for (o, b) in body {
            t[*o..*o + b.len()].copy_from_slice(b);
        }
        let sum = t.iter().fold(0u8, |s, &x| s.wrapping_add(x));
        t[9] = 0u8.wrapping_sub(sum);
        t
    }

    fn dsdt(aml: &[u8]) -> Vec<u8> {
        sdt(b"DSDT", 36 + aml.len(), &[(36, aml)])
    }

    #[test]
    fn legacy_pm1_from_q35_like_tables() {
        // Name (_S5, Package (4) { Zero, Zero, Zero, Zero })
        let d = dsdt(&[0x08, b'_', b'S', b'5', b'_', 0x12, 0x06, 0x04, 0, 0, 0, 0]);
        let f = sdt(b"FACP", 244, &[(64, &0x604u32.to_le_bytes())]);
        assert_eq!(
            parse(&f, &d),
            Some(PowerOff::Pm1 {
                pm1a: 0x604,
                pm1b: 0,
                slp_typ_a: 0,
                slp_typ_b: 0
            })
        );
    }

    #[test]
    fn byte_prefixed_types_and_a_root_prefix() {
        // Name (\_S5, Package (2) { 0x05, 0x07 })
        let d = dsdt(&[
            0x08, b'\\', b'_', b'S', b'5', b'_', 0x12, 0x07, 0x02, 0x0a, 5, 0x0a, 7,
        ]);
        let f = sdt(
            b"FACP",
            244,
            &[
                (64, &0xb004u32.to_le_bytes()),
                (68, &0xb008u32.to_le_bytes()),
            ],
        );
        assert_eq!(
            parse(&f, &d),
            Some(PowerOff::Pm1 {
                pm1a: 0xb004,
                pm1b: 0xb008,
                slp_typ_a: 5,
                slp_typ_b: 7
            })
        );
    }

    #[test]
    fn hardware_reduced_uses_the_sleep_control_register() {
        let d = dsdt(&[0x08, b'_', b'S', b'5', b'_', 0x12, 0x05, 0x01, 0x0a, 5]);
        let mut gas = [0u8; 12];
        gas[1] = 8;
        gas[4..12].copy_from_slice(&0xfea0_0000u64.to_le_bytes());
        let f = sdt(
            b"FACP",
            276,
            &[(112, &(1u32 << 20).to_le_bytes()), (244, &gas)],
        );
        assert_eq!(
            parse(&f, &d),
            Some(PowerOff::SleepControl {
                io: false,
                address: 0xfea0_0000,
                slp_typ: 5
            })
        );
    }

    #[test]
    fn broken_tables_give_no_method() {
        let f = sdt(b"FACP", 244, &[(64, &0x604u32.to_le_bytes())]);
        // No _S5, a _S5 that is no package, a truncated package.
        assert_eq!(parse(&f, &dsdt(b"nothing here")), None);
        assert_eq!(
            parse(&f, &dsdt(&[0x08, b'_', b'S', b'5', b'_', 0x0a, 5])),
            None
        );
        assert_eq!(
            parse(&f, &dsdt(&[0x08, b'_', b'S', b'5', b'_', 0x12, 0x06])),
            None
        );
        // A FADT too short for the ports, and one without PM1a.
        assert_eq!(
            parse(
                &[0u8; 40],
                &dsdt(&[0x08, b'_', b'S', b'5', b'_', 0x12, 0x04, 0x01, 0])
            ),
            None
        );
        let f0 = sdt(b"FACP", 244, &[]);
        assert_eq!(
            parse(
                &f0,
                &dsdt(&[0x08, b'_', b'S', b'5', b'_', 0x12, 0x04, 0x01, 0])
            ),
            None
        );
    }
}
