//! The clock: TSC ticks scaled by the frequency the monitor measured, as
//! `(ticks * mult) >> 32` (the formula the vDSO uses too, so the app reads
//! the same time with and without a system call); the wall clock is the
//! monotonic clock plus a fixed offset taken at boot.

use unikernel_runtime::arch::x86_64::cpu::rdtsc;
use unikernel_runtime::platform::VdsoClock;

pub struct TscClock {
    /// Nanoseconds per tick, times 2^32.
    mult: u64,
    boot_tsc: u64,
    /// Realtime minus monotonic (ns).
    wall_offset: i64,
}

impl TscClock {
    pub const fn zero() -> TscClock {
        TscClock {
            mult: 1 << 32,
            boot_tsc: 0,
            wall_offset: 0,
        }
    }

    /// `wall_ns` was the wall clock when the TSC read `wall_tsc`.
    pub fn new(khz: u64, wall_ns: u64, wall_tsc: u64) -> TscClock {
        let mult = ((1_000_000u128 << 32) / u128::from(khz.max(1))).min(u64::MAX as u128) as u64;
        let mut c = TscClock {
            mult,
            boot_tsc: rdtsc(),
            wall_offset: 0,
        };
        // The monotonic clock (signed) at `wall_tsc`.
        let mono_then = if wall_tsc >= c.boot_tsc {
            c.ticks_to_ns(wall_tsc - c.boot_tsc) as i128
        } else {
            -(c.ticks_to_ns(c.boot_tsc - wall_tsc) as i128)
        };
        c.wall_offset = (i128::from(wall_ns) - mono_then).clamp(0, i64::MAX as i128) as i64;
        c
    }

    fn ticks_to_ns(&self, ticks: u64) -> u64 {
        ((u128::from(ticks) * u128::from(self.mult)) >> 32).min(u64::MAX as u128) as u64
    }

    /// The TSC value at which the monotonic clock reads 0.
    pub fn boot_tsc(&self) -> u64 {
        self.boot_tsc
    }

    pub fn monotonic_ns(&self) -> u64 {
        self.ticks_to_ns(rdtsc().saturating_sub(self.boot_tsc))
    }

    pub fn wall_ns(&self) -> u64 {
        self.monotonic_ns().saturating_add(self.wall_offset as u64)
    }

    /// The parameters for the vDSO.
    pub fn vdso(&self) -> VdsoClock {
        VdsoClock::Tsc {
            boot_tsc: self.boot_tsc,
            mult: self.mult,
            wall_offset_ns: self.wall_offset,
        }
    }
}
