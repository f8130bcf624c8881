//! Clocks as the system calls see them.
//!
//! `CLOCK_MONOTONIC` (and its variants) come from the platform's monotonic
//! clock, `CLOCK_REALTIME` from its wall clock; both are a few instructions
//! at ring 3 on hvt (TSC based).

use crate::errno::*;

pub const CLOCK_REALTIME: u64 = 0;
pub const CLOCK_MONOTONIC: u64 = 1;
pub const CLOCK_PROCESS_CPUTIME_ID: u64 = 2;
pub const CLOCK_THREAD_CPUTIME_ID: u64 = 3;
pub const CLOCK_MONOTONIC_RAW: u64 = 4;
pub const CLOCK_REALTIME_COARSE: u64 = 5;
pub const CLOCK_MONOTONIC_COARSE: u64 = 6;
pub const CLOCK_BOOTTIME: u64 = 7;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Timespec {
    pub sec: i64,
    pub nsec: i64,
}

impl Timespec {
    pub fn from_ns(ns: u64) -> Timespec {
        Timespec {
            sec: (ns / 1_000_000_000) as i64,
            nsec: (ns % 1_000_000_000) as i64,
        }
    }
    /// Nanoseconds, or EINVAL for a malformed value (as Linux checks).
    pub fn to_ns(self) -> Result<u64, Errno> {
        if self.sec < 0 || !(0..1_000_000_000).contains(&self.nsec) {
            return Err(EINVAL);
        }
        Ok((self.sec as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(self.nsec as u64))
    }
}

/// Nanoseconds on `clock`.
pub fn now(clock: u64) -> Result<u64, Errno> {
    let p = crate::platform();
    match clock {
        CLOCK_REALTIME | CLOCK_REALTIME_COARSE => Ok(p.wall_clock_ns()),
        CLOCK_MONOTONIC | CLOCK_MONOTONIC_RAW | CLOCK_MONOTONIC_COARSE | CLOCK_BOOTTIME => {
            Ok(p.monotonic_ns())
        }
        // One process, one CPU, always running: CPU time is time since boot.
        CLOCK_PROCESS_CPUTIME_ID | CLOCK_THREAD_CPUTIME_ID => Ok(p.monotonic_ns()),
        _ => Err(EINVAL),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn timespec_checks() {
        assert_eq!(Timespec { sec: 1, nsec: 5 }.to_ns(), Ok(1_000_000_005));
        assert_eq!(Timespec { sec: -1, nsec: 0 }.to_ns(), Err(EINVAL));
        assert_eq!(
            Timespec {
                sec: 0,
                nsec: 1_000_000_000
            }
            .to_ns(),
            Err(EINVAL)
        );
        assert_eq!(Timespec::from_ns(2_500_000_000).sec, 2);
    }
}
