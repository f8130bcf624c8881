//! The local APIC (xAPIC, MMIO at 0xfee00000, mapped user-accessible so
//! the runtime can program it and acknowledge interrupts from ring 3): its
//! timer, one-shot, serves both the runtime's timer (the tick vector at a
//! deadline: [`arm`]) and idle waits ([`one_shot`], which replaces it; the
//! runtime re-arms after an idle wait). In TSC-deadline mode when CPUID
//! says the APIC has it (the deadline is exact), else in one-shot count
//! mode at the nominal rate of KVM's and QEMU's APIC timer, 1 GHz with
//! divide-by-1. Under TCG that rate and the TSC the clock runs on differ by
//! several percent (and a measurement of the ratio on a loaded host is
//! not reliable), so a count never aims at the deadline itself when it is
//! far: it covers 7/8 of the wait, the interrupt comes early, the runtime
//! sees nothing due and re-arms for the rest (a few interrupts for a long
//! wait, never a late one). A count saturates at 2^32 (early again).

use core::sync::atomic::{AtomicBool, Ordering};
use unikernel_runtime::arch::x86_64::cpu::{privileged, rdtsc};

pub const BASE: u64 = 0xfee0_0000;
const EOI: u64 = 0xb0;
const SVR: u64 = 0xf0;
const TPR: u64 = 0x80;
const LVT_TIMER: u64 = 0x320;
const INITIAL_COUNT: u64 = 0x380;
const DIVIDE: u64 = 0x3e0;
const ISR: u64 = 0x100;
const MASKED: u32 = 1 << 16;
const TSC_DEADLINE_MODE: u32 = 2 << 17;
/// Vector of the idle one-shot (its arrival only ends `hlt`).
pub const IDLE_VECTOR: u8 = 0xef;
/// A deferred timer interrupt is sent again after this long (see [`deferred`]).
const RESEND_NS: u64 = 1_000_000;
/// Waits shorter than this are counted in full (an error of a few percent
/// of it is a few microseconds).
const EXACT_BELOW_NS: u64 = 100_000;

/// CPUID.1:ECX.TSC_Deadline, read at [`init`].
static TSC_DEADLINE: AtomicBool = AtomicBool::new(false);

fn write(reg: u64, v: u32) {
    // SAFETY: the APIC page is identity-mapped uncached; writes only program the APIC.
    unsafe { core::ptr::write_volatile((BASE + reg) as *mut u32, v) };
}

fn read(reg: u64) -> u32 {
    // SAFETY: as for `write`; reading a register has no side effect.
    unsafe { core::ptr::read_volatile((BASE + reg) as *const u32) }
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
    let tsc_deadline = core::arch::x86_64::__cpuid(1).ecx & (1 << 24) != 0;
    TSC_DEADLINE.store(tsc_deadline, Ordering::Relaxed);
    unikernel_runtime::arch::x86_64::trap::set_defer_hook(deferred);
}

/// Whether the timer runs in TSC-deadline mode.
pub fn tsc_deadline_mode() -> bool {
    TSC_DEADLINE.load(Ordering::Relaxed)
}

/// The count for a wait of `ns` (see the module comment).
fn count_for(ns: u64) -> u32 {
    let c = if ns < EXACT_BELOW_NS { ns } else { ns - ns / 8 };
    c.clamp(1, u32::MAX as u64) as u32
}

/// Interrupt `vector` once, `ns` from now, when the TSC reaches `tsc`
/// (TSC-deadline mode uses `tsc`, count mode `ns`).
pub fn arm(vector: u8, ns: u64, tsc: u64) {
    if tsc_deadline_mode() {
        write(LVT_TIMER, TSC_DEADLINE_MODE | vector as u32);
        // At least 1: 0 would disarm it.
        privileged::set_tsc_deadline(tsc.max(1));
    } else {
        write(LVT_TIMER, vector as u32);
        write(INITIAL_COUNT, count_for(ns));
    }
}

/// Stop the timer.
pub fn disarm() {
    if tsc_deadline_mode() {
        privileged::set_tsc_deadline(0);
    } else {
        write(INITIAL_COUNT, 0);
    }
}

/// Arm an idle one-shot `ns` (TSC: `ticks`) from now; it replaces the
/// runtime's timer and may end the wait early (the runtime re-checks).
pub fn one_shot(ns: u64, ticks: u64) {
    if tsc_deadline_mode() {
        write(LVT_TIMER, TSC_DEADLINE_MODE | IDLE_VECTOR as u32);
        privileged::set_tsc_deadline(rdtsc().saturating_add(ticks).max(1));
    } else {
        write(LVT_TIMER, IDLE_VECTOR as u32);
        write(INITIAL_COUNT, count_for(ns));
    }
}

/// Acknowledge `vector` if it is in service (the defer hook may have
/// acknowledged it already).
pub fn eoi(vector: u8) {
    let reg = ISR + 0x10 * (vector as u64 / 32);
    if read(reg) & (1 << (vector % 32)) != 0 {
        write(EOI, 0);
    }
}

/// The runtime's defer hook (ring 0, interrupts off): a timer interrupt hit
/// the runtime. Acknowledge it now and have it sent again in 1 ms in case
/// the runtime was already past its last safe point on the way back to the
/// app; normally the runtime takes it at its next safe point and re-arms
/// the timer first.
extern "C" fn deferred(vector: u64) {
    if vector == unikernel_runtime::sched::TICK_VECTOR as u64 {
        eoi(vector as u8);
        let ticks = crate::clock::ns_to_ticks(RESEND_NS);
        arm(vector as u8, RESEND_NS, rdtsc() + ticks);
    }
}
