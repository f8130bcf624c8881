//! Time: the PV clock in `shared_info` and the wall clock.
//!
//! Xen keeps, per vCPU, a snapshot `vcpu_time_info`: the system time
//! (ns since the host booted) at TSC value `tsc_timestamp`, and a scale
//! (`tsc_to_system_mul`, `tsc_shift`) to turn TSC ticks since then into ns:
//!
//! ```text
//! delta = rdtsc() - tsc_timestamp
//! delta = tsc_shift >= 0 ? delta << tsc_shift : delta >> -tsc_shift
//! now   = system_time + (delta * tsc_to_system_mul) >> 32
//! ```
//!
//! Xen bumps `version` to an odd value while it rewrites the snapshot, and
//! to the next even value after: a reader retries until it saw the same
//! even version before and after copying. The wall clock (`wc_sec`,
//! `wc_nsec`, `wc_sec_hi`, same version protocol with `wc_version`) is the
//! Unix time at system time 0, so wall time = wall clock + system time.

use crate::abi::{SharedInfo, VcpuTimeInfo};
use core::ptr::addr_of;
use core::sync::atomic::{fence, Ordering};

/// System time (ns) at TSC value `tsc` for the snapshot `t`.
pub fn system_time_at(t: &VcpuTimeInfo, tsc: u64) -> u64 {
    let mut delta = tsc.wrapping_sub(t.tsc_timestamp);
    if (delta as i64) < 0 {
        // A TSC read on another CPU just before the snapshot: no time passed.
        delta = 0;
    }
    if t.tsc_shift >= 0 {
        delta <<= t.tsc_shift as u32;
    } else {
        delta >>= (-(t.tsc_shift as i32)) as u32;
    }
    let scaled = ((delta as u128 * t.tsc_to_system_mul as u128) >> 32) as u64;
    t.system_time.wrapping_add(scaled)
}

/// The TSC frequency implied by a snapshot's scale, in kHz.
pub fn tsc_khz(t: &VcpuTimeInfo) -> u64 {
    if t.tsc_to_system_mul == 0 {
        return 0;
    }
    // ns per tick = mul / 2^32 * 2^shift  ->  ticks per ms = 1e6 / that.
    let mut khz = (1_000_000u128 << 32) / t.tsc_to_system_mul as u128;
    if t.tsc_shift >= 0 {
        khz >>= t.tsc_shift as u32;
    } else {
        khz <<= (-(t.tsc_shift as i32)) as u32;
    }
    khz as u64
}

/// Unix time in ns from the wall-clock fields and the current system time.
pub fn wall_ns(wc_sec: u64, wc_nsec: u32, system_ns: u64) -> u64 {
    wc_sec
        .wrapping_mul(1_000_000_000)
        .wrapping_add(wc_nsec as u64)
        .wrapping_add(system_ns)
}

/// Copy vCPU 0's time snapshot consistently.
///
/// # Safety
/// `shared` must point at the mapped shared-info page.
pub unsafe fn snapshot(shared: *const SharedInfo) -> VcpuTimeInfo {
    // SAFETY: caller guarantees the page; fields are read volatile because Xen writes them.
    unsafe {
        let t = addr_of!((*shared).vcpu_info[0].time);
        loop {
            let v1 = addr_of!((*t).version).read_volatile();
            fence(Ordering::Acquire);
            let copy = t.read_volatile();
            fence(Ordering::Acquire);
            let v2 = addr_of!((*t).version).read_volatile();
            if v1 & 1 == 0 && v1 == v2 {
                return copy;
            }
            core::hint::spin_loop();
        }
    }
}

/// Read the wall clock at system time 0: (seconds, nanoseconds).
///
/// # Safety
/// `shared` must point at the mapped shared-info page.
pub unsafe fn wall_clock_base(shared: *const SharedInfo) -> (u64, u32) {
    // SAFETY: as for `snapshot`.
    unsafe {
        loop {
            let v1 = addr_of!((*shared).wc_version).read_volatile();
            fence(Ordering::Acquire);
            let lo = addr_of!((*shared).wc_sec).read_volatile() as u64;
            let hi = addr_of!((*shared).wc_sec_hi).read_volatile() as u64;
            let ns = addr_of!((*shared).wc_nsec).read_volatile();
            fence(Ordering::Acquire);
            let v2 = addr_of!((*shared).wc_version).read_volatile();
            if v1 & 1 == 0 && v1 == v2 {
                return (hi << 32 | lo, ns);
            }
            core::hint::spin_loop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(mul: u32, shift: i8) -> VcpuTimeInfo {
        VcpuTimeInfo {
            version: 2,
            tsc_timestamp: 1_000_000,
            system_time: 5_000_000_000,
            tsc_to_system_mul: mul,
            tsc_shift: shift,
            ..Default::default()
        }
    }

    #[test]
    fn one_ghz_is_one_ns_per_tick() {
        // mul = 2^31, shift = 1: ns = ticks * 2 * 0.5.
        let t = snap(1 << 31, 1);
        assert_eq!(system_time_at(&t, 1_000_000), 5_000_000_000);
        assert_eq!(system_time_at(&t, 1_000_123), 5_000_000_123);
        assert_eq!(tsc_khz(&t), 1_000_000);
    }

    #[test]
    fn real_scales() {
        // 2.596 GHz as Xen encodes it: shift -1? Compute: ns/tick = 0.38521.
        // mul = 0.38521 * 2^32 * 2 (shift -1 halves delta first) ~ 3309089913.
        let t = snap(3_309_089_913, -1);
        let ns = system_time_at(&t, 1_000_000 + 2_596_000_000) - 5_000_000_000;
        assert!((999_000_000..1_001_000_000).contains(&ns), "{ns}");
        let khz = tsc_khz(&t);
        assert!((2_590_000..2_600_000).contains(&khz), "{khz}");
    }

    #[test]
    fn tsc_before_snapshot_does_not_go_back() {
        let t = snap(1 << 31, 1);
        assert_eq!(system_time_at(&t, 999_000), 5_000_000_000);
    }

    #[test]
    fn huge_deltas_do_not_overflow() {
        let t = snap(u32::MAX, 4);
        let _ = system_time_at(&t, u64::MAX / 2);
    }

    #[test]
    fn wall_is_base_plus_system() {
        assert_eq!(wall_ns(1_700_000_000, 5, 2_000), 1_700_000_000_000_002_005);
    }
}
