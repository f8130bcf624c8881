//! The local APIC (xAPIC, MMIO at 0xfee00000, mapped user-accessible so
//! the runtime can program it and acknowledge interrupts from ring 3): a
//! one-shot timer for idle deadlines, or a periodic one for the preemption
//! tick. KVM and QEMU run the APIC timer at 1 GHz (1 count = 1 ns with
//! divide-by-1).

use core::sync::atomic::{AtomicBool, Ordering};

pub const BASE: u64 = 0xfee0_0000;
const EOI: u64 = 0xb0;
const SVR: u64 = 0xf0;
const TPR: u64 = 0x80;
const LVT_TIMER: u64 = 0x320;
const INITIAL_COUNT: u64 = 0x380;
const DIVIDE: u64 = 0x3e0;
const MASKED: u32 = 1 << 16;
const PERIODIC: u32 = 1 << 17;
/// Vector of the idle one-shot (its arrival only ends `hlt`).
pub const IDLE_VECTOR: u8 = 0xef;

static PERIODIC_ON: AtomicBool = AtomicBool::new(false);

fn write(reg: u64, v: u32) {
    // SAFETY: the APIC page is identity-mapped uncached; writes only program the APIC.
    unsafe { core::ptr::write_volatile((BASE + reg) as *mut u32, v) };
}

/// Remap the legacy 8259 PICs away from the exception vectors (to 0xf0..)
/// and mask every line: all interrupts come from the local APIC. (A PIC
/// left at vector base 0 would deliver the PIT's IRQ 0 as a "#DE".)
///
/// # Safety
/// Ring 0, at boot.
unsafe fn disable_pic() {
    use crate::cpu::outb;
    // SAFETY: per the function contract: the PICs' command/data ports.
    unsafe {
        outb(0x20, 0x11); // ICW1: init, ICW4 follows
        outb(0xa0, 0x11);
        outb(0x21, 0xf0); // ICW2: vector bases
        outb(0xa1, 0xf8);
        outb(0x21, 0x04); // ICW3: slave on IRQ 2
        outb(0xa1, 0x02);
        outb(0x21, 0x01); // ICW4: 8086 mode
        outb(0xa1, 0x01);
        outb(0x21, 0xff); // mask everything
        outb(0xa1, 0xff);
    }
}

/// Quiet the legacy PIC, enable the APIC and mask its timer.
///
/// # Safety
/// Ring 0, at boot, with the APIC page mapped.
pub unsafe fn init() {
    // SAFETY: per the function contract.
    unsafe { disable_pic() };
    // SAFETY: per the function contract: IA32_APIC_BASE global enable.
    unsafe {
        let base = crate::cpu::rdmsr(0x1b);
        crate::cpu::wrmsr(0x1b, base | (1 << 11));
    }
    write(TPR, 0);
    write(SVR, 0x100 | 0xff);
    write(DIVIDE, 0xb);
    write(LVT_TIMER, MASKED | IDLE_VECTOR as u32);
}

/// Interrupt `vector` every `period_ns`.
pub fn start_periodic(period_ns: u64, vector: u8) {
    PERIODIC_ON.store(true, Ordering::Relaxed);
    write(LVT_TIMER, PERIODIC | vector as u32);
    write(INITIAL_COUNT, period_ns.clamp(1000, u32::MAX as u64) as u32);
}

/// Arm a one-shot `ns` from now, unless the periodic tick already runs
/// (then the next tick wakes the idle loop, at most one period late).
pub fn one_shot(ns: u64) {
    if PERIODIC_ON.load(Ordering::Relaxed) {
        return;
    }
    write(LVT_TIMER, IDLE_VECTOR as u32);
    write(INITIAL_COUNT, ns.clamp(1000, u32::MAX as u64) as u32);
}

pub fn eoi() {
    write(EOI, 0);
}
