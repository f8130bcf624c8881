//! `UNIKERNEL_BLOCK_SELFTEST=N` (feature `block`): a boot-time check of the
//! virtio-blk driver below any filesystem, documented in docs/kvm.md.
//! Before the app starts, for each registered block device (N is cut to
//! the device's size, and rounded down to an even number):
//!
//! 1. read sectors `0..N` in one call and print their FNV-1a 64 hash (the
//!    host computes the same hash of the file it attached);
//! 2. on a writable device, write the pattern [`pattern_byte`] over sectors
//!    `N/2..N` in one call, read them back and compare, then flush;
//!    on a read-only device, check that a write answers EROFS;
//! 3. check that a read past the end answers EINVAL without reaching
//!    the device.
//!
//! One summary line per device goes to the stderr console, with the
//! read and write rates and how many of the driver's waits ended by the
//! device's interrupt; the app then starts as usual.

use crate::virtio_blk::{serial_of, BLK_VECTOR, HALTS, IRQ_WAKEUPS, SPINS};
use alloc::format;
use alloc::string::String;
use alloc::vec;
use core::sync::atomic::Ordering;
use unikernel_runtime::device::BlockDevice;
use unikernel_runtime::errno::{Errno, EINVAL, EROFS};

const SECTOR: u64 = 512;

/// The byte the self-test writes at byte `offset` of the device.
pub fn pattern_byte(offset: u64) -> u8 {
    (offset.wrapping_mul(13) ^ (offset / SECTOR).wrapping_mul(101) ^ 0x5a) as u8
}

/// FNV-1a, 64 bits.
pub fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn err(e: Errno) -> &'static str {
    unikernel_runtime::errno::name(e)
}

/// KiB/s of `bytes` in `ns`.
fn rate(bytes: u64, ns: u64) -> u64 {
    if ns == 0 {
        0
    } else {
        (bytes as u128 * 1_000_000_000 / 1024 / ns as u128) as u64
    }
}

fn check(dev: &dyn BlockDevice, want: u64) -> String {
    let n = want.min(dev.sectors()) & !1;
    let serial = serial_of(dev.name()).unwrap_or_default();
    let head = format!(
        "[unikernel] kvm: block selftest {} (serial \"{serial}\", {} sectors, {}, {}):",
        dev.name(),
        dev.sectors(),
        if dev.read_only() {
            "read-only"
        } else {
            "read-write"
        },
        if dev.can_flush() { "flush" } else { "no flush" },
    );
    if n == 0 {
        return format!("{head} nothing to read\n");
    }
    let bytes = (n * SECTOR) as usize;
    let mut buf = vec![0u8; bytes];
    let wake0 = IRQ_WAKEUPS.load(Ordering::Relaxed);
    let (halts0, spins0) = (HALTS.load(Ordering::Relaxed), SPINS.load(Ordering::Relaxed));
    let t0 = crate::now_ns();
    if let Err(e) = dev.read(0, &mut buf) {
        return format!("{head} read of sectors 0..{n} failed: {}\n", err(e));
    }
    let read_ns = crate::now_ns() - t0;
    let mut out = format!(
        "{head} read {n} sectors fnv1a {:#018x} ({} KiB/s)",
        fnv1a(&buf),
        rate(bytes as u64, read_ns)
    );
    let half = n / 2;
    let hbytes = (half * SECTOR) as usize;
    if dev.read_only() {
        match dev.write(half, &buf[..hbytes]) {
            Err(e) if e == EROFS => out.push_str("; write refused: EROFS"),
            Err(e) => out.push_str(&format!("; write failed: {} (expected EROFS)", err(e))),
            Ok(()) => out.push_str("; write to a read-only device succeeded"),
        }
    } else {
        let mut w = vec![0u8; hbytes];
        for (i, b) in w.iter_mut().enumerate() {
            *b = pattern_byte(half * SECTOR + i as u64);
        }
        let t1 = crate::now_ns();
        let wrote = dev.write(half, &w);
        let write_ns = crate::now_ns() - t1;
        match wrote {
            Err(e) => out.push_str(&format!("; write failed: {}", err(e))),
            Ok(()) => {
                let mut back = vec![0u8; hbytes];
                let same = dev.read(half, &mut back).is_ok() && back == w;
                out.push_str(&format!(
                    "; wrote {half} sectors at {half} ({} KiB/s), read back {}",
                    rate(hbytes as u64, write_ns),
                    if same { "ok" } else { "DIFFERENT" }
                ));
                match dev.flush() {
                    Ok(()) => out.push_str("; flush ok"),
                    Err(e) => out.push_str(&format!("; flush failed: {}", err(e))),
                }
            }
        }
    }
    let mut one = [0u8; 512];
    match dev.read(dev.sectors(), &mut one) {
        Err(e) if e == EINVAL => out.push_str("; past the end: EINVAL"),
        Err(e) => out.push_str(&format!("; past the end: {} (expected EINVAL)", err(e))),
        Ok(()) => out.push_str("; past the end: read succeeded"),
    }
    out.push_str(&format!(
        "; waits ended by vector {BLK_VECTOR}: {} ({} halts, {} polls without a halt)\n",
        IRQ_WAKEUPS.load(Ordering::Relaxed) - wake0,
        HALTS.load(Ordering::Relaxed) - halts0,
        SPINS.load(Ordering::Relaxed) - spins0
    ));
    out
}

/// Run the self-test on every registered block device, `want` sectors each.
pub fn run(want: u64) -> String {
    let devices = unikernel_runtime::device::block_devices();
    if devices.is_empty() {
        return String::from("[unikernel] kvm: block selftest: no virtio-blk device\n");
    }
    devices.iter().map(|d| check(&**d, want)).collect()
}
