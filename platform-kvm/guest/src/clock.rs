//! Clocks: kvmclock when the CPUID signature says KVM (pvclock page,
//! readable at any ring), the TSC otherwise (frequency from CPUID 0x15,
//! 0x16 or 0x40000010, else calibrated against the PIT); wall time from
//! KVM's wall-clock MSR or the CMOS RTC.

use crate::cpu::{inb, outb, wrmsr};
use core::sync::atomic::{AtomicU64, Ordering};
use unikernel_runtime::arch::x86_64::cpu::rdtsc;

/// The TSC frequency (kHz) the clock runs on (from the pvclock scale with
/// kvmclock), for turning deadlines into TSC values; set once at boot.
static TSC_KHZ: AtomicU64 = AtomicU64::new(1_000_000);

/// The TSC frequency in kHz (1 GHz until the clock starts).
pub fn tsc_khz_hint() -> u64 {
    TSC_KHZ.load(Ordering::Relaxed)
}

/// TSC ticks in `ns` nanoseconds (saturating).
pub fn ns_to_ticks(ns: u64) -> u64 {
    (ns as u128 * tsc_khz_hint() as u128 / 1_000_000).min(u64::MAX as u128) as u64
}

/// The TSC frequency a pvclock scale describes: ns = (ticks << shift) *
/// mul >> 32, so ticks per ms = 2^32 * 1e6 / mul, shifted back.
fn pvclock_khz(mul: u32, shift: i8) -> u64 {
    let base = (1_000_000u128 << 32) / (mul.max(1) as u128);
    let khz = if shift >= 0 {
        base >> shift
    } else {
        base << -shift
    };
    (khz as u64).max(1)
}

#[repr(C, align(32))]
#[derive(Clone, Copy)]
struct PvClock {
    version: u32,
    _pad0: u32,
    tsc_timestamp: u64,
    system_time: u64,
    tsc_to_system_mul: u32,
    tsc_shift: i8,
    flags: u8,
    _pad: [u8; 2],
}

#[repr(C, align(16))]
struct WallClock {
    version: u32,
    sec: u32,
    nsec: u32,
}

static mut PVCLOCK: PvClock = PvClock {
    version: 0,
    _pad0: 0,
    tsc_timestamp: 0,
    system_time: 0,
    tsc_to_system_mul: 0,
    tsc_shift: 0,
    flags: 0,
    _pad: [0; 2],
};
static mut WALL: WallClock = WallClock {
    version: 0,
    sec: 0,
    nsec: 0,
};

const MSR_KVM_WALL_CLOCK_NEW: u32 = 0x4b56_4d00;
const MSR_KVM_SYSTEM_TIME_NEW: u32 = 0x4b56_4d01;

pub enum Source {
    KvmClock,
    /// ns = `(ticks * mult) >> 32`, mult = 2^32 * 10^6 / khz (the formula
    /// the vDSO uses).
    Tsc {
        khz: u64,
        mult: u64,
    },
}

pub struct Clock {
    source: Source,
    /// Monotonic origin (the source's reading at boot, in ns).
    origin: u64,
    boot_tsc: u64,
    /// Wall-clock ns at monotonic 0.
    wall_base: u64,
}

fn kvm_signature() -> bool {
    let l = core::arch::x86_64::__cpuid(0x4000_0000);
    let mut sig = [0u8; 12];
    sig[..4].copy_from_slice(&l.ebx.to_le_bytes());
    sig[4..8].copy_from_slice(&l.ecx.to_le_bytes());
    sig[8..].copy_from_slice(&l.edx.to_le_bytes());
    &sig == b"KVMKVMKVM\0\0\0" && core::arch::x86_64::__cpuid(0x4000_0001).eax & (1 << 3) != 0
}

fn pvclock_ns() -> u64 {
    loop {
        // SAFETY: the hypervisor updates this struct; we read it with the
        // version protocol (odd = being written, changed = retry).
        let (v1, c) = unsafe {
            let p = core::ptr::addr_of!(PVCLOCK);
            (
                core::ptr::read_volatile(&(*p).version),
                core::ptr::read_volatile(p),
            )
        };
        core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
        let delta = rdtsc().wrapping_sub(c.tsc_timestamp);
        let delta = if c.tsc_shift >= 0 {
            delta << c.tsc_shift
        } else {
            delta >> -c.tsc_shift
        };
        let ns = c
            .system_time
            .wrapping_add(((delta as u128 * c.tsc_to_system_mul as u128) >> 32) as u64);
        // SAFETY: as above.
        let v2 = unsafe { core::ptr::read_volatile(core::ptr::addr_of!(PVCLOCK.version)) };
        if v1 & 1 == 0 && v1 == v2 {
            return ns;
        }
    }
}

/// TSC frequency from CPUID, if it tells.
fn cpuid_tsc_khz() -> Option<u64> {
    let max = core::arch::x86_64::__cpuid(0).eax;
    if max >= 0x15 {
        let l = core::arch::x86_64::__cpuid(0x15);
        if l.eax != 0 && l.ebx != 0 && l.ecx != 0 {
            return Some(l.ecx as u64 * l.ebx as u64 / l.eax as u64 / 1000);
        }
    }
    if max >= 0x16 {
        let mhz = core::arch::x86_64::__cpuid(0x16).eax & 0xffff;
        if mhz != 0 {
            return Some(mhz as u64 * 1000);
        }
    }
    if core::arch::x86_64::__cpuid(0x4000_0000).eax >= 0x4000_0010 {
        let khz = core::arch::x86_64::__cpuid(0x4000_0010).eax;
        if khz != 0 {
            return Some(khz as u64);
        }
    }
    None
}

/// Count TSC ticks over ~2 ms of the PIT (channel 0 as a free-running
/// rate generator, read back with latch commands: this needs no speaker
/// port, which QEMU microvm does not have). None if no PIT counts.
///
/// # Safety
/// Ring 0, at boot.
unsafe fn calibrate_tsc_khz() -> Option<u64> {
    const PIT_HZ: u64 = 1_193_182;
    const TICKS: u64 = PIT_HZ / 500; // 2 ms
                                     // SAFETY: per the function contract: PIT channel 0 ports.
    let read = || unsafe {
        outb(0x43, 0x00); // latch channel 0
        let lo = inb(0x40) as u64;
        let hi = inb(0x40) as u64;
        (hi << 8) | lo
    };
    // SAFETY: as above.
    unsafe {
        outb(0x43, 0x34); // channel 0, lobyte/hibyte, mode 2
        outb(0x40, 0xff);
        outb(0x40, 0xff);
    }
    let c0 = read();
    let t0 = rdtsc();
    let mut spins = 0u64;
    loop {
        let c = read();
        let elapsed = (c0.wrapping_sub(c)) & 0xffff;
        if elapsed >= TICKS {
            let t1 = rdtsc();
            return Some(
                ((t1 - t0) as u128 * PIT_HZ as u128 / elapsed as u128 / 1000).max(1) as u64,
            );
        }
        spins += 1;
        if spins > 2_000_000 {
            return None;
        }
    }
}

/// CMOS RTC as Unix seconds.
///
/// # Safety
/// Ring 0, at boot.
unsafe fn rtc_seconds() -> u64 {
    // SAFETY: per the function contract: CMOS index/data ports.
    let read = |r: u8| unsafe {
        outb(0x70, r);
        inb(0x71)
    };
    let mut spins = 0;
    while read(0x0a) & 0x80 != 0 && spins < 1_000_000 {
        spins += 1;
    }
    let b = read(0x0b);
    let bcd = |v: u8| {
        if b & 0x04 == 0 {
            (v & 0x0f) + (v >> 4) * 10
        } else {
            v
        }
    };
    let sec = bcd(read(0x00)) as u64;
    let min = bcd(read(0x02)) as u64;
    let hour_raw = read(0x04);
    let mut hour = bcd(hour_raw & 0x7f) as u64;
    if b & 0x02 == 0 && hour_raw & 0x80 != 0 {
        hour = (hour % 12) + 12;
    }
    let day = bcd(read(0x07)) as i64;
    let month = bcd(read(0x08)) as i64;
    let year = 2000 + bcd(read(0x09)) as i64;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    (days.max(0) as u64) * 86_400 + hour * 3600 + min * 60 + sec
}

impl Clock {
    /// Pick and start the clock.
    ///
    /// # Safety
    /// Ring 0, at boot.
    pub unsafe fn init() -> Clock {
        let boot_tsc = rdtsc();
        if kvm_signature() {
            // SAFETY: per the function contract; the structs are ours, identity-mapped.
            unsafe {
                wrmsr(
                    MSR_KVM_SYSTEM_TIME_NEW,
                    core::ptr::addr_of!(PVCLOCK) as u64 | 1,
                );
                wrmsr(MSR_KVM_WALL_CLOCK_NEW, core::ptr::addr_of!(WALL) as u64);
            }
            let origin = pvclock_ns();
            // SAFETY: written by the hypervisor during the wrmsr above.
            let scale = unsafe { core::ptr::read_volatile(core::ptr::addr_of!(PVCLOCK)) };
            TSC_KHZ.store(
                pvclock_khz(scale.tsc_to_system_mul, scale.tsc_shift),
                Ordering::Relaxed,
            );
            // SAFETY: written by the hypervisor during the wrmsr above.
            let w = unsafe { core::ptr::read_volatile(core::ptr::addr_of!(WALL)) };
            let wall_at_zero = w.sec as u64 * 1_000_000_000 + w.nsec as u64;
            return Clock {
                source: Source::KvmClock,
                origin,
                boot_tsc,
                wall_base: wall_at_zero + origin,
            };
        }
        // SAFETY: per the function contract.
        let khz = cpuid_tsc_khz()
            .or_else(|| unsafe { calibrate_tsc_khz() })
            .unwrap_or(1_000_000); // no PIT either: assume 1 GHz (said with --verbose)
                                   // SAFETY: per the function contract.
        let wall = unsafe { rtc_seconds() } * 1_000_000_000;
        let khz = khz.max(1);
        TSC_KHZ.store(khz, Ordering::Relaxed);
        Clock {
            source: Source::Tsc {
                khz,
                mult: ((1_000_000u128 << 32) / khz as u128) as u64,
            },
            origin: 0,
            boot_tsc,
            wall_base: wall,
        }
    }

    pub fn monotonic_ns(&self) -> u64 {
        match self.source {
            Source::KvmClock => pvclock_ns().saturating_sub(self.origin),
            Source::Tsc { mult, .. } => {
                ((rdtsc().saturating_sub(self.boot_tsc) as u128 * mult as u128) >> 32) as u64
            }
        }
    }

    /// The clock as the vDSO reads it: kvmclock in place (the struct is
    /// in the kernel's data, which the app can read), or the TSC formula.
    pub fn vdso(&self) -> unikernel_runtime::platform::VdsoClock {
        use unikernel_runtime::platform::VdsoClock;
        match self.source {
            Source::KvmClock => VdsoClock::PvClock {
                addr: core::ptr::addr_of!(PVCLOCK) as u64,
                origin_ns: self.origin,
                wall_offset_ns: self.wall_base as i64,
            },
            Source::Tsc { mult, .. } => VdsoClock::Tsc {
                boot_tsc: self.boot_tsc,
                mult,
                wall_offset_ns: self.wall_base as i64,
            },
        }
    }

    pub fn wall_ns(&self) -> u64 {
        self.wall_base + self.monotonic_ns()
    }

    pub fn describe(&self) -> (&'static str, u64) {
        match self.source {
            Source::KvmClock => ("kvmclock", 0),
            Source::Tsc { khz, .. } => ("tsc", khz),
        }
    }
}
