//! The clock: TSC ticks scaled by the frequency the monitor measured.

use unikernel_runtime::arch::x86_64::cpu::rdtsc;

pub struct TscClock {
    khz: u64,
    boot_tsc: u64,
    wall_ns: u64,
    wall_tsc: u64,
}

impl TscClock {
    pub const fn zero() -> TscClock {
        TscClock {
            khz: 1_000_000,
            boot_tsc: 0,
            wall_ns: 0,
            wall_tsc: 0,
        }
    }

    pub fn new(khz: u64, wall_ns: u64, wall_tsc: u64) -> TscClock {
        TscClock {
            khz: khz.max(1),
            boot_tsc: rdtsc(),
            wall_ns,
            wall_tsc,
        }
    }

    fn ticks_to_ns(&self, ticks: u64) -> u64 {
        ((ticks as u128 * 1_000_000) / self.khz as u128) as u64
    }

    /// The TSC value at which the monotonic clock reads 0.
    pub fn boot_tsc(&self) -> u64 {
        self.boot_tsc
    }

    pub fn monotonic_ns(&self) -> u64 {
        self.ticks_to_ns(rdtsc().saturating_sub(self.boot_tsc))
    }

    pub fn wall_ns(&self) -> u64 {
        let t = rdtsc();
        if t >= self.wall_tsc {
            self.wall_ns + self.ticks_to_ns(t - self.wall_tsc)
        } else {
            self.wall_ns
                .saturating_sub(self.ticks_to_ns(self.wall_tsc - t))
        }
    }
}
