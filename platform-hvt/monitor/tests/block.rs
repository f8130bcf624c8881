//! The block device end to end: a tiny test kernel (`block/kernel.c`,
//! built here with gcc into a flat binary) drives a disk's request ring;
//! the monitor serves it from a temp file, and the test checks what the
//! guest printed and the file's bytes on the host. Hostile rings must end
//! with exit 254 and one line, never a monitor panic. Needs /dev/kvm, gcc
//! and ld; a test prints SKIPPED when it cannot run.
mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::*;
use unikernel_image::manifest::Platform;

const KERNEL_C: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/block/kernel.c");
const LINK_LD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/block/link.ld");

const MODE_INFO: u32 = 1;
const MODE_RW: u32 = 2;
const MODE_RO_WRITE: u32 = 3;
const MODE_BAD_INDEX: u32 = 4;
const MODE_BAD_BUF: u32 = 5;
const MODE_BAD_SECTOR: u32 = 6;
const MODE_BAD_LEN: u32 = 7;
const MODE_BAD_SPIN: u32 = 8;
const MODE_BENCH: u32 = 9;
const MODE_BAD_OP: u32 = 10;

fn tmp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hvt-block-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The test kernel in `mode`, or `None` (SKIPPED printed) without KVM, gcc or ld.
fn test_kernel(test: &str, mode: u32) -> Option<Vec<u8>> {
    if !kvm_available(test) {
        return None;
    }
    c_kernel(
        test,
        KERNEL_C,
        LINK_LD,
        &format!("block{mode}"),
        &[format!("MODE={mode}")],
    )
}

/// A test image around the kernel in `mode`, declaring `disks` (`NAME=MOUNT`).
fn block_image(test: &str, mode: u32, disks: &[&str]) -> Option<String> {
    let code = test_kernel(test, mode)?;
    let mut m = manifest(Platform::Hvt);
    m.disks = disks.iter().map(|d| d.to_string()).collect();
    let bytes = elf(&[kernel(&code, &[])], Some(&m));
    Some(
        write_image(&format!("block-{test}"), &bytes)
            .display()
            .to_string(),
    )
}

/// A disk file of `sectors` sectors; sector `i` is filled with `fill(i)`.
fn disk_file(name: &str, sectors: u64, fill: impl Fn(u64) -> [u8; 512]) -> PathBuf {
    let path = tmp_dir().join(name);
    let _ = std::fs::remove_file(&path);
    let mut bytes = Vec::with_capacity(sectors as usize * 512);
    for i in 0..sectors {
        bytes.extend_from_slice(&fill(i));
    }
    std::fs::write(&path, bytes).unwrap();
    path
}

fn labelled(i: u64) -> [u8; 512] {
    let mut s = [b'.'; 512];
    let label = format!("SECTOR{i:02}");
    s[..label.len()].copy_from_slice(label.as_bytes());
    s[511] = i as u8;
    s
}

fn read_only(path: &Path) {
    let mut p = std::fs::metadata(path).unwrap().permissions();
    p.set_mode(0o444);
    std::fs::set_permissions(path, p).unwrap();
}

fn disk_flag(name: &str, path: &Path) -> String {
    format!("{name}={}", path.display())
}

/// The monitor with `UNIKERNEL_BLOCK_STATS=1`.
fn monitor_stats(args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_unikernel-hvt"))
        .args(args)
        .env("UNIKERNEL_BLOCK_STATS", "1")
        .output()
        .expect("cannot start unikernel-hvt");
    eprintln!(
        "--- monitor {args:?} -> {:?}\n--- stdout:\n{}--- stderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn the_guest_sees_every_disk_and_the_declared_disks() {
    let t = "info";
    let Some(img) = block_image(t, MODE_INFO, &["data=/data", "logs=/var/log"]) else {
        return;
    };
    let data = disk_file("info-data.img", 16, labelled);
    let logs = disk_file("info-logs.img", 8, labelled);
    read_only(&logs);
    let out = monitor(&[
        "--disk",
        &disk_flag("data", &data),
        "--disk",
        &disk_flag("logs", &logs),
        &img,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let o = stdout(&out);
    assert!(o.contains("disks 2\n"), "{o}");
    // flags: attached (1) | can flush (4), plus read-only (2) for logs.
    assert!(
        o.contains("disk 0 data sectors 16 flags 5 max 1048576\n"),
        "{o}"
    );
    assert!(
        o.contains("disk 1 logs sectors 8 flags 7 max 1048576\n"),
        "{o}"
    );
    assert!(o.contains("declared data=/data logs=/var/log\n"), "{o}");
    assert!(o.contains("files 0 0\n"), "{o}");
}

#[test]
fn the_embedded_files_location_reaches_the_guest() {
    let t = "files";
    let Some(code) = test_kernel(t, MODE_INFO) else {
        return;
    };
    let mut m = manifest(Platform::Hvt);
    m.files_addr = hvt_abi::layout::KERNEL_BASE + 0x1800;
    m.files_len = 16;
    let img = write_image("block-files", &elf(&[kernel(&code, &[])], Some(&m)));
    let out = monitor(&[img.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("disks 0\n"));
    assert!(stdout(&out).contains("declared \nfiles 101800 16\n"));
    // An archive outside the image is refused before boot.
    m.files_addr = 0x40_0000;
    let img = write_image("block-files-bad", &elf(&[kernel(&code, &[])], Some(&m)));
    let out = monitor(&[img.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("embedded files at 0x400000 (16 bytes) lie outside"),
        "{}",
        stderr(&out)
    );
}

fn checksum(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0u64, |s, &b| s.wrapping_mul(31).wrapping_add(u64::from(b)))
}

fn big_pattern(i: u64) -> u8 {
    (i.wrapping_mul(7) + i / 4096) as u8
}

#[test]
fn sectors_the_guest_writes_reach_the_file() {
    let t = "rw";
    let Some(img) = block_image(t, MODE_RW, &["data=/data"]) else {
        return;
    };
    // 2 MiB + 1 sector: the 1 MiB write at sector 64 fits.
    let path = disk_file("rw.img", 4097, labelled);
    let before = std::fs::read(&path).unwrap();
    let out = monitor_stats(&["--disk", &disk_flag("data", &path), &img]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let o = stdout(&out);
    let want = format!(
        "read status 0 sum {:x} first SECTOR00\n",
        checksum(&before[..8 * 512])
    );
    assert!(o.contains(&want), "{o}\nwanted {want}");
    assert!(o.contains("write status 0\n"), "{o}");
    assert!(o.contains("readback status 0 same\n"), "{o}");
    let after = std::fs::read(&path).unwrap();
    assert_eq!(after.len(), before.len());
    for s in 8..16u64 {
        let sector = &after[s as usize * 512..][..512];
        assert!(
            sector.iter().all(|&b| b == b'A' + (s - 8) as u8),
            "sector {s}"
        );
    }
    let big = &after[64 * 512..][..1 << 20];
    assert!(big
        .iter()
        .enumerate()
        .all(|(i, &b)| b == big_pattern(i as u64)));
    // Everything else is untouched.
    assert_eq!(after[..8 * 512], before[..8 * 512]);
    assert_eq!(after[16 * 512..64 * 512], before[16 * 512..64 * 512]);
    assert_eq!(
        after[64 * 512 + (1 << 20)..],
        before[64 * 512 + (1 << 20)..]
    );
    let e = stderr(&out);
    assert!(
        e.contains("disk \"data\": 3 reads (1056768 bytes), 9 writes (1052672 bytes), 1 flushes, 0 refused writes, 0 I/O errors"),
        "{e}"
    );
}

#[test]
fn a_read_only_file_refuses_writes_with_an_error_status() {
    let t = "ro";
    let Some(img) = block_image(t, MODE_RO_WRITE, &["data=/data"]) else {
        return;
    };
    let path = disk_file("ro.img", 8, |_| [b'r'; 512]);
    read_only(&path);
    let out = monitor(&["--disk", &disk_flag("data", &path), &img]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let o = stdout(&out);
    assert!(o.contains("write status 2\n"), "{o}");
    assert!(o.contains("flush status 0\n"), "{o}");
    assert!(o.contains("read status 0 first rrrr\n"), "{o}");
    assert!(std::fs::read(&path).unwrap().iter().all(|&b| b == b'r'));
}

/// A hostile ring: exit 254 with one line naming the problem.
fn hostile(t: &str, mode: u32, expect: &str) {
    let Some(img) = block_image(t, mode, &["data=/data"]) else {
        return;
    };
    let path = disk_file(&format!("{t}.img"), 64, labelled);
    let before = std::fs::read(&path).unwrap();
    let out = monitor(&["--disk", &disk_flag("data", &path), &img]);
    let e = stderr(&out);
    assert_eq!(out.status.code(), Some(254), "{e}");
    assert!(!e.contains("panicked"), "{e}");
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(
        e.starts_with("unikernel-hvt: guest broke the block ring protocol: disk \"data\": "),
        "{e}"
    );
    assert!(e.contains(expect), "{e}");
    assert!(!stdout(&out).contains("not stopped"));
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn a_producer_index_beyond_the_ring_stops_the_guest() {
    hostile(
        "badindex",
        MODE_BAD_INDEX,
        "producer index 1000 is 1000 ahead of completion index 0, but the ring has 16 slots",
    );
}

#[test]
fn a_buffer_outside_ram_stops_the_guest() {
    hostile(
        "badbuf",
        MODE_BAD_BUF,
        "request 0: buffer: guest range 0x7fff00000000+0x200 lies outside guest RAM [0, 0x4000000)",
    );
}

#[test]
fn a_sector_past_the_end_stops_the_guest() {
    hostile(
        "badsector",
        MODE_BAD_SECTOR,
        "request 0: 1 sectors at sector 1099511627776 run past the end of the disk (64 sectors)",
    );
}

#[test]
fn a_length_near_u64_max_stops_the_guest() {
    hostile(
        "badlen",
        MODE_BAD_LEN,
        "request 0: length 18446744073709551104 is not a non-zero multiple of 512 up to 1048576",
    );
}

#[test]
fn an_unknown_op_stops_the_guest() {
    hostile("badop", MODE_BAD_OP, "request 0: unknown op 77");
}

#[test]
fn a_spinning_guest_is_kicked_out_after_a_bad_request() {
    hostile(
        "badspin",
        MODE_BAD_SPIN,
        "request 0: 256 sectors at sector 0 run past the end of the disk (64 sectors)",
    );
}

#[test]
fn a_declared_disk_needs_its_disk_flag() {
    let t = "missing";
    let Some(img) = block_image(t, MODE_INFO, &["data=/data"]) else {
        return;
    };
    let out = monitor(&[&img]);
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(
        stderr(&out),
        "unikernel-hvt: image declares disk \"data\" but no --disk data=FILE was given\n"
    );
    let path = disk_file("missing.img", 8, labelled);
    let out = monitor(&[
        "--disk",
        &disk_flag("data", &path),
        "--disk",
        &disk_flag("cache", &path),
        &img,
    ]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("the image declares no disk \"cache\" (it declares data)"),
        "{}",
        stderr(&out)
    );
    let odd = tmp_dir().join("odd.img");
    std::fs::write(&odd, vec![0u8; 1000]).unwrap();
    let out = monitor(&["--disk", &disk_flag("data", &odd), &img]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("its size 1000 bytes is not a multiple of the 512-byte sector"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stderr(&out).lines().count(), 1);
}

/// The raw device throughput: the test kernel writes 64 MiB sequentially
/// (1 MiB requests, up to 16 in flight), flushes, and reads it back.
#[test]
fn raw_throughput_of_64_mib() {
    let t = "bench";
    let Some(img) = block_image(t, MODE_BENCH, &["data=/data"]) else {
        return;
    };
    let path = tmp_dir().join("bench.img");
    let _ = std::fs::remove_file(&path);
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(64 << 20).unwrap();
    drop(f);
    let t0 = Instant::now();
    let out = monitor_stats(&["--mem", "128M", "--disk", &disk_flag("data", &path), &img]);
    let wall = t0.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let o = stdout(&out);
    let field = |k: &str| -> f64 {
        o.split_whitespace()
            .skip_while(|w| *w != k)
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {k} in {o}"))
    };
    assert!(o.contains("bench status 0 "), "{o}");
    let khz = field("tsc_khz");
    let w = field("write_cycles") / khz / 1000.0;
    let r = field("read_cycles") / khz / 1000.0;
    eprintln!(
        "BENCH hvt block: write 64 MiB + flush {:.3} s ({:.0} MiB/s), read 64 MiB {:.3} s ({:.0} MiB/s), whole monitor run {:.3} s",
        w,
        64.0 / w,
        r,
        64.0 / r,
        wall.as_secs_f64()
    );
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.len(), 64 << 20);
    for (i, &b) in bytes.iter().enumerate().step_by(4093) {
        let slot = (i >> 20) % 16;
        let within = i & ((1 << 20) - 1);
        let want = ((slot * (1 << 20) + within) >> 20) as u8 ^ (slot * (1 << 20) + within) as u8;
        assert_eq!(b, want, "byte {i}");
    }
    let _ = std::fs::remove_file(&path);
}
