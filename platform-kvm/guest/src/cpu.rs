//! The processor's tables and modes, set up once at boot (ring 0):
//! GDT (Linux layout: kernel CS 0x10, DS 0x18, user DS 0x2b, user CS 0x33,
//! TSS 0x40), TSS (RSP0, IST1 for NMI/#DF/#MC, IST2 for external
//! interrupts), IDT pointing at the runtime's trap stubs, the `syscall`
//! MSRs, and the optional CR4 features (FSGSBASE, OSXSAVE + XCR0).

use crate::entry::Stack;
use core::arch::asm;

pub const GDT_BYTES: usize = 10 * 8;
const TSS_SELECTOR: u16 = 0x40;

#[no_mangle]
pub static mut KVM_GDT: [u64; 10] = [
    0,
    0x00cf_9b00_0000_ffff, // 0x08 kernel code, 32-bit
    0x00af_9b00_0000_ffff, // 0x10 kernel code, 64-bit
    0x00cf_9300_0000_ffff, // 0x18 kernel data
    0x00cf_fb00_0000_ffff, // 0x23 user code, 32-bit
    0x00cf_f300_0000_ffff, // 0x2b user data
    0x00af_fb00_0000_ffff, // 0x33 user code, 64-bit
    0,
    0, // 0x40 TSS (two slots), filled at boot
    0,
];

#[repr(C, align(16))]
struct Tss([u8; 104]);
static mut TSS: Tss = Tss([0; 104]);

#[repr(C, align(16))]
struct Idt([u64; 512]);
static mut IDT: Idt = Idt([0; 512]);

static mut RING0_STACK: Stack<16384> = Stack([0; 16384]);
static mut IST1_STACK: Stack<8192> = Stack([0; 8192]);
static mut IST2_STACK: Stack<8192> = Stack([0; 8192]);
pub static mut FAULT_STACK: Stack<16384> = Stack([0; 16384]);

fn top<const N: usize>(s: *const Stack<N>) -> u64 {
    s as u64 + N as u64
}

/// # Safety
/// Ring 0.
pub unsafe fn wrmsr(msr: u32, v: u64) {
    // SAFETY: per the function contract.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") v as u32, in("edx") (v >> 32) as u32, options(nostack))
    };
}

/// # Safety
/// Ring 0; `msr` exists.
pub unsafe fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: per the function contract.
    unsafe { asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nostack)) };
    ((hi as u64) << 32) | lo as u64
}

/// Load the GDT with the TSS, the IDT (gates to `trap_stubs`), and the syscall MSRs.
///
/// # Safety
/// Ring 0, once, at boot.
pub unsafe fn init(trap_stubs: u64, stub_size: u64, syscall_entry: u64) {
    // SAFETY: single CPU at boot; these statics are ours.
    unsafe {
        let tss = core::ptr::addr_of_mut!(TSS) as *mut u8;
        let put = |off: usize, v: u64| (tss.add(off) as *mut u64).write_unaligned(v);
        put(4, top(core::ptr::addr_of!(RING0_STACK)));
        put(36, top(core::ptr::addr_of!(IST1_STACK)));
        put(44, top(core::ptr::addr_of!(IST2_STACK)));
        (tss.add(102) as *mut u16).write_unaligned(104);
        let base = tss as u64;
        let gdt = core::ptr::addr_of_mut!(KVM_GDT) as *mut u64;
        gdt.add(8).write(
            103 | ((base & 0xff_ffff) << 16) | (0x89u64 << 40) | (((base >> 24) & 0xff) << 56),
        );
        gdt.add(9).write(base >> 32);

        let idt = core::ptr::addr_of_mut!(IDT) as *mut u64;
        for v in 0..256u64 {
            let target = trap_stubs + v * stub_size;
            let dpl: u64 = if matches!(v, 3 | 4) { 3 } else { 0 };
            let ist: u64 = match v {
                2 | 8 | 18 => 1,
                32.. => 2,
                _ => 0,
            };
            idt.add(2 * v as usize).write(
                (target & 0xffff)
                    | (0x10u64 << 16)
                    | (ist << 32)
                    | ((0x80 | (dpl << 5) | 0xe) << 40)
                    | (((target >> 16) & 0xffff) << 48),
            );
            idt.add(2 * v as usize + 1).write(target >> 32);
        }
        #[repr(C, packed)]
        struct Ptr {
            limit: u16,
            base: u64,
        }
        let g = Ptr {
            limit: (GDT_BYTES - 1) as u16,
            base: gdt as u64,
        };
        let i = Ptr {
            limit: 4095,
            base: idt as u64,
        };
        asm!(
            "lgdt [{g}]",
            "lidt [{i}]",
            "ltr {t:x}",
            g = in(reg) &g, i = in(reg) &i, t = in(reg) TSS_SELECTOR,
            options(nostack)
        );
        wrmsr(0xc000_0081, 0x0023_0010_0000_0000); // STAR: kernel CS 0x10, sysret base 0x23
        wrmsr(0xc000_0082, syscall_entry); // LSTAR
                                           // SFMASK: TF DF AC NT, but not IF: under kvm-pvm `syscall` stays at
                                           // ring 3, where the return path cannot set IF again (KVM-PVM.md).
                                           // At ring 0 an interrupt before the stub's stack switch is harmless:
                                           // external interrupts use IST2, and the runtime defers them.
        wrmsr(0xc000_0084, 0x47500);
    }
}

/// Turn on FSGSBASE and (with XCR0) XSAVE where the CPU has them.
///
/// # Safety
/// Ring 0, at boot.
pub unsafe fn enable_features() {
    let leaf1 = core::arch::x86_64::__cpuid(1);
    let leaf7 = core::arch::x86_64::__cpuid_count(7, 0);
    let mut cr4: u64;
    // SAFETY: ring 0 (per the contract); only feature bits the CPU reports are set.
    unsafe {
        asm!("mov {}, cr4", out(reg) cr4, options(nomem, nostack));
        if leaf7.ebx & 1 != 0 {
            cr4 |= 1 << 16; // FSGSBASE
        }
        let xsave = leaf1.ecx & (1 << 26) != 0;
        if xsave {
            cr4 |= 1 << 18; // OSXSAVE
        }
        asm!("mov cr4, {}", in(reg) cr4, options(nomem, nostack));
        if xsave {
            let d = core::arch::x86_64::__cpuid_count(0xd, 0);
            let mask = (d.eax as u64 | ((d.edx as u64) << 32)) & 0xe7;
            asm!("xsetbv", in("ecx") 0u32, in("eax") mask as u32, in("edx") (mask >> 32) as u32, options(nostack));
        }
    }
}

/// Top of the stack the runtime reports its own faults on.
pub fn fault_stack_top() -> u64 {
    top(core::ptr::addr_of!(FAULT_STACK))
}

/// Port I/O at ring 0.
///
/// # Safety
/// Ring 0; the port belongs to a device we drive.
pub unsafe fn outb(port: u16, v: u8) {
    // SAFETY: per the function contract.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") v, options(nomem, nostack, preserves_flags))
    };
}

/// # Safety
/// As [`outb`].
pub unsafe fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: per the function contract.
    unsafe {
        asm!("in al, dx", in("dx") port, out("al") v, options(nomem, nostack, preserves_flags))
    };
    v
}

/// # Safety
/// As [`outb`].
pub unsafe fn outl(port: u16, v: u32) {
    // SAFETY: per the function contract.
    unsafe {
        asm!("out dx, eax", in("dx") port, in("eax") v, options(nomem, nostack, preserves_flags))
    };
}

/// # Safety
/// As [`outb`].
pub unsafe fn inl(port: u16) -> u32 {
    let v: u32;
    // SAFETY: per the function contract.
    unsafe {
        asm!("in eax, dx", in("dx") port, out("eax") v, options(nomem, nostack, preserves_flags))
    };
    v
}
