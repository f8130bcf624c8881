//! The descriptor tables the CPU needs before the first instruction: the GDT
//! (Linux layout, because user CS/DS must be 0x33/0x2b on kvm-pvm), the
//! 64-bit TSS (ring-0 stack for interrupts from ring 3, IST1 for NMI/#DF/#MC)
//! and the IDT (256 gates into the kernel's trap stubs).
//!
//! The monitor writes them into guest memory and loads GDTR/IDTR/TR through
//! `KVM_SET_SREGS`, so the guest never runs `lgdt`/`lidt`/`ltr`.
use hvt_abi::layout::{KERNEL_CS, TSS_SELECTOR};
use hvt_abi::KernelHeader;

use crate::memory::{GuestMemory, OutOfBounds};

/// GDT entries, index = selector >> 3.
pub const GDT: [u64; 8] = [
    0,                     // 0x00 null
    0x00cf_9b00_0000_ffff, // 0x08 kernel 32-bit code
    0x00af_9b00_0000_ffff, // 0x10 kernel 64-bit code
    0x00cf_9300_0000_ffff, // 0x18 kernel data
    0x00cf_fb00_0000_ffff, // 0x20 user 32-bit code
    0x00cf_f300_0000_ffff, // 0x28 user data
    0x00af_fb00_0000_ffff, // 0x30 user 64-bit code
    0,                     // 0x38 null
];
/// Bytes of the GDT: the 8 entries above plus the 16-byte TSS descriptor at 0x40.
pub const GDT_SIZE: u64 = 80;
/// Size of the 64-bit TSS (limit = size - 1).
pub const TSS_SIZE: u64 = 104;
/// Size of the 256-entry IDT.
pub const IDT_SIZE: u64 = 256 * 16;

/// TSS descriptor type: 64-bit TSS, busy (as after `ltr`, matching the TR
/// state loaded through KVM_SET_SREGS).
pub const TSS_TYPE_BUSY: u8 = 0xb;

/// Writes the GDT at `gdt` with a TSS descriptor for the TSS at `tss`.
pub fn write_gdt(mem: &mut GuestMemory, gdt: u64, tss: u64) -> Result<(), OutOfBounds> {
    for (i, e) in GDT.iter().enumerate() {
        mem.write_obj(gdt + i as u64 * 8, e)?;
    }
    let limit = TSS_SIZE - 1;
    let low = (limit & 0xffff)
        | ((tss & 0xff_ffff) << 16)
        | (u64::from(0x80 | TSS_TYPE_BUSY) << 40) // present, DPL 0, system
        | (((limit >> 16) & 0xf) << 48)
        | (((tss >> 24) & 0xff) << 56);
    let high = tss >> 32;
    let at = gdt + u64::from(TSS_SELECTOR);
    mem.write_obj(at, &low)?;
    mem.write_obj(at + 8, &high)
}

/// Writes the 64-bit TSS at `tss`: RSP0 = `rsp0`, IST1 = `ist1`, IST2 =
/// `ist2`, no I/O bitmap.
pub fn write_tss(
    mem: &mut GuestMemory,
    tss: u64,
    rsp0: u64,
    ist1: u64,
    ist2: u64,
) -> Result<(), OutOfBounds> {
    mem.write_obj(tss + 4, &rsp0)?;
    mem.write_obj(tss + 36, &ist1)?;
    mem.write_obj(tss + 44, &ist2)?;
    // I/O map base = TSS size: no I/O permission bitmap.
    mem.write_obj(tss + 102, &(TSS_SIZE as u16))
}

/// The IDT's interrupt gate for `vector`.
pub fn idt_gate(header: &KernelHeader, vector: u64) -> [u64; 2] {
    let target = header
        .trap_stubs
        .wrapping_add(vector.wrapping_mul(u64::from(header.trap_stub_size)));
    // #BP and #OF may be raised by `int3`/`into` from ring 3, like Linux.
    let dpl: u64 = if matches!(vector, 3 | 4) { 3 } else { 0 };
    // NMI, #DF and #MC switch to the IST1 stack; external interrupts (32 and
    // up) to IST2, so that one arriving at ring 0 before the syscall stub has
    // switched stacks never lands on the app's stack (its red zone).
    let ist: u64 = match vector {
        2 | 8 | 18 => 1,
        32.. => 2,
        _ => 0,
    };
    let low = (target & 0xffff)
        | (u64::from(KERNEL_CS) << 16)
        | (ist << 32)
        | ((0x80 | (dpl << 5) | 0xe) << 40) // present, DPL, 64-bit interrupt gate
        | (((target >> 16) & 0xffff) << 48);
    [low, target >> 32]
}

/// Writes the 256-gate IDT at `idt`.
pub fn write_idt(
    mem: &mut GuestMemory,
    idt: u64,
    header: &KernelHeader,
) -> Result<(), OutOfBounds> {
    let mut bytes = [0u8; IDT_SIZE as usize];
    for (v, gate) in bytes.chunks_exact_mut(16).enumerate() {
        let [lo, hi] = idt_gate(header, v as u64);
        gate[..8].copy_from_slice(&lo.to_le_bytes());
        gate[8..].copy_from_slice(&hi.to_le_bytes());
    }
    mem.write(idt, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idt_gates_follow_linux() {
        let h = KernelHeader {
            trap_stubs: 0x1234_5678_9abc,
            trap_stub_size: 16,
            ..Default::default()
        };
        let [lo, hi] = idt_gate(&h, 0);
        assert_eq!(lo, 0x5678_8e00_0010_9abc);
        assert_eq!(hi, 0x1234);
        let [lo, _] = idt_gate(&h, 3);
        assert_eq!((lo >> 40) & 0xff, 0xee);
        let [lo, _] = idt_gate(&h, 8);
        assert_eq!((lo >> 32) & 7, 1);
        assert_eq!(lo & 0xffff, 0x9abc + 8 * 16);
    }

    #[test]
    fn tss_descriptor_encodes_base_and_limit() {
        let mut mem = GuestMemory::new(0x10000).unwrap();
        write_gdt(&mut mem, 0x1000, 0x1080).unwrap();
        let low: u64 = mem.read_obj(0x1040).unwrap();
        assert_eq!(low, 0x0000_8b00_1080_0067);
        assert_eq!(mem.read_obj::<u64>(0x1048).unwrap(), 0);
        assert_eq!(mem.read_obj::<u64>(0x1030).unwrap(), 0x00af_fb00_0000_ffff);
    }
}
