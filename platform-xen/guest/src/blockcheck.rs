//! The platform's block self-test: a test hook that needs no filesystem.
//! With `UNIKERNEL_BLOCK_SELFTEST=SEED` on the command line (SEED a number
//! 1-255) the boot stops after blkfront connected the disks, before the
//! runtime starts, and for every registered block device:
//!
//! 1. prints its size, mode and whether it flushes;
//! 2. reads the first 2048 sectors (1 MiB) and the last sector and prints
//!    an FNV-1a 64 hash of each (the host test hashes the file the same
//!    way);
//! 3. checks that a read past the end and a read of a partial sector
//!    answer EINVAL without reaching the device;
//! 4. unless read-only (then: a write answers EROFS): writes 100 sectors
//!    at `UNIKERNEL_BLOCK_SELFTEST_SECTOR` (default 2048) and 4096 sectors
//!    (2 MiB) right after them with the pattern of [`pattern_byte`],
//!    flushes when the device can, reads both back and compares;
//!
//! then prints `blockcheck: N devices ok` and powers off (0), or
//! `blockcheck: FAILED: ...` and shuts down with 1. The host test checks
//! the lines and the bytes of the disk file afterwards. The buffers take
//! about 5 MiB of heap (give the guest 32 MiB or more).

use crate::boot::Xen;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use unikernel_runtime::device::block_devices;
use unikernel_runtime::errno::{EINVAL, EROFS};

/// Sectors of the small write (not a whole number of pages or of
/// 11-segment requests: the partial segment and request paths).
const SMALL: u64 = 100;
/// Sectors of the large write (several rounds of bounce pages).
const LARGE: u64 = 4096;
/// Sectors read and hashed at the start of the disk.
const HEAD: u64 = 2048;

/// Byte `i` of sector `sector` of the test pattern for `seed`.
pub fn pattern_byte(seed: u8, sector: u64, i: usize) -> u8 {
    (sector.wrapping_mul(131) as u8)
        .wrapping_add((i as u8).wrapping_mul(7))
        .wrapping_add((i >> 8) as u8)
        ^ seed
}

/// FNV-1a, 64 bits.
pub fn fnv1a64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A zeroed buffer of `sectors` sectors, or a message (no heap panic).
fn buffer(sectors: u64) -> Result<Vec<u8>, String> {
    let len = sectors as usize * 512;
    let mut v = Vec::new();
    v.try_reserve_exact(len)
        .map_err(|_| format!("no memory for a {len}-byte buffer (give the guest more)"))?;
    v.resize(len, 0);
    Ok(v)
}

fn say(line: &str) {
    crate::Console::write_bytes(line.as_bytes());
    crate::Console::write_bytes(b"\n");
}

fn fill(seed: u8, first: u64, buf: &mut [u8]) {
    for (k, sector) in buf.chunks_mut(512).enumerate() {
        for (i, b) in sector.iter_mut().enumerate() {
            *b = pattern_byte(seed, first + k as u64, i);
        }
    }
}

/// MB/s for `bytes` in `ns`.
fn rate(bytes: u64, ns: u64) -> String {
    let kbs = bytes.saturating_mul(1_000_000) / ns.max(1); // KB/ms = MB/s * 1000
    format!("{}.{:01} MB/s", kbs / 1000, (kbs % 1000) / 100)
}

/// Run the self-test and stop the guest (see the module docs).
pub fn run(xen: &Xen, seed: &str, start: Option<u64>) -> ! {
    let seed = match seed.parse::<u8>() {
        Ok(s) if s != 0 => s,
        _ => {
            say("blockcheck: FAILED: UNIKERNEL_BLOCK_SELFTEST wants a seed 1-255");
            crate::shutdown(1)
        }
    };
    let start = start.unwrap_or(2048);
    let devices = block_devices();
    let mut failures = 0;
    for d in &devices {
        match check(xen, &**d, seed, start) {
            Ok(()) => {}
            Err(e) => {
                say(&format!("blockcheck: FAILED: {}: {e}", d.name()));
                failures += 1;
            }
        }
    }
    if failures == 0 {
        say(&format!("blockcheck: {} devices ok", devices.len()));
        crate::shutdown(0)
    }
    crate::shutdown(1)
}

fn check(
    xen: &Xen,
    d: &dyn unikernel_runtime::device::BlockDevice,
    seed: u8,
    start: u64,
) -> Result<(), String> {
    let name = d.name();
    let n = d.sectors();
    say(&format!(
        "blockcheck: {name}: {n} sectors of {} bytes, {}, flush {}",
        d.sector_size(),
        if d.read_only() {
            "read-only"
        } else {
            "read-write"
        },
        if d.can_flush() { "yes" } else { "no" }
    ));
    if n == 0 {
        return Err("an empty disk".into());
    }
    let head = HEAD.min(n);
    let mut buf = buffer(head)?;
    let t0 = xen.system_time_ns();
    d.read(0, &mut buf)
        .map_err(|e| format!("reading {head} sectors at 0: errno {e}"))?;
    let t1 = xen.system_time_ns();
    let mut last = [0u8; 512];
    d.read(n - 1, &mut last)
        .map_err(|e| format!("reading the last sector: errno {e}"))?;
    say(&format!(
        "blockcheck: {name}: read {head} sectors at 0: fnv1a64 {:016x} ({}); last sector {}: fnv1a64 {:016x}",
        fnv1a64(&buf),
        rate(head * 512, t1 - t0),
        n - 1,
        fnv1a64(&last)
    ));
    let past = d.read(n, &mut last);
    let mut short = [0u8; 100];
    let partial = d.read(0, &mut short);
    if past != Err(EINVAL) || partial != Err(EINVAL) {
        return Err(format!(
            "a read past the end gave {past:?} and a partial sector {partial:?}, not EINVAL"
        ));
    }
    say(&format!(
        "blockcheck: {name}: past the end EINVAL, partial sector EINVAL"
    ));
    if d.read_only() {
        let w = d.write(0, &last);
        if w != Err(EROFS) {
            return Err(format!(
                "a write to the read-only disk gave {w:?}, not EROFS"
            ));
        }
        say(&format!("blockcheck: {name}: write EROFS"));
        return Ok(());
    }
    if start + SMALL + LARGE > n {
        return Err(format!(
            "the disk is too small for the write test ({} sectors from {start})",
            SMALL + LARGE
        ));
    }
    let mut small = buffer(SMALL)?;
    fill(seed, start, &mut small);
    d.write(start, &small)
        .map_err(|e| format!("writing {SMALL} sectors at {start}: errno {e}"))?;
    let big_at = start + SMALL;
    drop(buf);
    let mut big = buffer(LARGE)?;
    fill(seed, big_at, &mut big);
    let t0 = xen.system_time_ns();
    d.write(big_at, &big)
        .map_err(|e| format!("writing {LARGE} sectors at {big_at}: errno {e}"))?;
    let t1 = xen.system_time_ns();
    let flushed = if d.can_flush() {
        d.flush().map_err(|e| format!("flush: errno {e}"))?;
        "flushed"
    } else {
        "not flushed (the backend offers no flush)"
    };
    let t2 = xen.system_time_ns();
    let mut back = buffer(SMALL)?;
    d.read(start, &mut back)
        .map_err(|e| format!("reading back at {start}: errno {e}"))?;
    if back != small {
        return Err(format!("the {SMALL} sectors at {start} read back differ"));
    }
    drop(back);
    let mut back = buffer(LARGE)?;
    let t3 = xen.system_time_ns();
    d.read(big_at, &mut back)
        .map_err(|e| format!("reading back at {big_at}: errno {e}"))?;
    let t4 = xen.system_time_ns();
    if back != big {
        let at = back.iter().zip(&big).position(|(a, b)| a != b).unwrap_or(0);
        return Err(format!(
            "the {LARGE} sectors at {big_at} read back differ (first at byte {at})"
        ));
    }
    say(&format!(
        "blockcheck: {name}: wrote {SMALL}+{LARGE} sectors at {start} (seed {seed}), {flushed}, read back intact; write {}, flush {} us, read {}",
        rate(LARGE * 512, t1 - t0),
        (t2 - t1) / 1000,
        rate(LARGE * 512, t4 - t3)
    ));
    Ok(())
}
