//! Blkfront on real Xen in the Xen lab (tests/xen/lab.sh): the lab attaches a raw file as the
//! guest's `xvda` (blkback in dom0 over a loop-free `phy` backend: the file
//! is a virtio disk of the lab's QEMU), and the platform's block self-test
//! (`UNIKERNEL_BLOCK_SELFTEST=SEED`, platform-xen/guest/src/blockcheck.rs)
//! reads, writes, flushes and reads back, then powers off. The test checks
//! what the guest printed against the file as the host sees it before and
//! after the boot (hashes of what it read, the bytes it wrote, and that
//! nothing else changed).
//!
//! The image: hello-min for xen with the platform's `block` (and `net`)
//! features on. Until the builder turns `block` on for images that declare
//! disks (the storage frame's builder work), [`block_image`] builds it
//! through a toolchain root (`UNIKERNEL_TOOLCHAIN_ROOT`) whose platform-xen
//! manifest has them in its defaults; everything else is this tree's.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;
use unikernel_tests::*;

/// Sectors of the test disk (16 MiB).
const DISK_SECTORS: u64 = 32768;

/// What the self-test writes (blockcheck.rs `pattern_byte`).
fn pattern_byte(seed: u8, sector: u64, i: usize) -> u8 {
    (sector.wrapping_mul(131) as u8)
        .wrapping_add((i as u8).wrapping_mul(7))
        .wrapping_add((i >> 8) as u8)
        ^ seed
}

fn fnv1a64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A toolchain root that is this tree but for platform-xen's default
/// features (see the module docs).
fn overlay_root() -> PathBuf {
    let real = root();
    let dir = real.join("target").join("xen-block-test").join("root");
    let guest = dir.join("platform-xen").join("guest");
    std::fs::create_dir_all(&guest).unwrap();
    for d in ["runtime", "templates", "components"] {
        let link = dir.join(d);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(real.join(d), &link).unwrap();
        }
    }
    for f in ["src", "link-xen.ld"] {
        let link = guest.join(f);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(real.join("platform-xen/guest").join(f), &link).unwrap();
        }
    }
    let manifest = std::fs::read_to_string(real.join("platform-xen/guest/Cargo.toml")).unwrap();
    let with_block = manifest.replacen(
        "default = [\"runtime\"]",
        "default = [\"runtime\", \"block\", \"net\"]",
        1,
    );
    assert_ne!(
        manifest, with_block,
        "platform-xen's default features moved"
    );
    let path = guest.join("Cargo.toml");
    if std::fs::read_to_string(&path).ok().as_deref() != Some(with_block.as_str()) {
        std::fs::write(&path, with_block).unwrap();
    }
    let lock = real.join("platform-xen/guest/Cargo.lock");
    if lock.exists() && !guest.join("Cargo.lock").exists() {
        std::fs::copy(lock, guest.join("Cargo.lock")).unwrap();
    }
    dir
}

/// hello-min for xen with blkfront (and netfront) in the kernel, built once.
fn block_image() -> PathBuf {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let base = root().join("target").join("xen-block-test");
            let out = base.join("hello-min-block");
            let mut cmd = std::process::Command::new(tool("cargo-unikernel"));
            cmd.env("UNIKERNEL_TOOLCHAIN_ROOT", overlay_root())
                .env("CARGO_TARGET_DIR", base.join("target"))
                .args(["build", "--platform", "xen", "--manifest-path"])
                .arg(root().join("tests/apps/hello-min/Cargo.toml"))
                .arg("-o")
                .arg(&out);
            let o = run_with_deadline(cmd, b"", Duration::from_secs(1200));
            assert_eq!(
                o.code, 0,
                "building the block image failed:\n{}\n{}",
                o.stdout, o.stderr
            );
            out
        })
        .clone()
}

/// A 16 MiB disk file with recognisable bytes everywhere.
fn make_disk(tag: &str) -> (PathBuf, Vec<u8>) {
    let path = std::env::temp_dir().join(format!(
        "unikernel-test-{}-xen-{tag}.img",
        std::process::id()
    ));
    let bytes: Vec<u8> = (0..DISK_SECTORS as usize * 512)
        .map(|i| ((i as u64).wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&path, &bytes).unwrap();
    (path, bytes)
}

fn boot_selftest(disk: Option<&Path>, net: bool, options: &[&str]) -> Outcome {
    let extras = XenLabExtras {
        options,
        net,
        dom0_script: None,
        vif_unchecked: true,
        disk,
    };
    boot_xen_lab(&block_image(), &["--mem", "64M"], &[], &extras)
}

/// The self-test's lines for `xvda` and the file after the boot: what it
/// read hashes as the host's copy did, the written range holds the pattern,
/// and every other byte is as before.
fn check_selftest(o: &Outcome, before: &[u8], after: &[u8], seed: u8, start: u64) {
    // The figures, for the record (cargo test -- --nocapture).
    for l in o
        .stdout
        .lines()
        .filter(|l| l.starts_with("blockcheck:") || l.contains(" connected to "))
    {
        eprintln!("{l}");
    }
    let head_hash = fnv1a64(&before[..2048 * 512]);
    let last = DISK_SECTORS - 1;
    let last_hash = fnv1a64(&before[last as usize * 512..]);
    for line in [
        format!("blockcheck: xvda: {DISK_SECTORS} sectors of 512 bytes, read-write, flush yes"),
        format!("blockcheck: xvda: read 2048 sectors at 0: fnv1a64 {head_hash:016x}"),
        format!("last sector {last}: fnv1a64 {last_hash:016x}"),
        "blockcheck: xvda: past the end EINVAL, partial sector EINVAL".to_string(),
        format!("blockcheck: xvda: wrote 100+4096 sectors at {start} (seed {seed}), flushed, read back intact"),
        "blockcheck: 1 devices ok".to_string(),
    ] {
        assert!(o.stdout.contains(&line), "the guest did not say {line:?}; output: {}", o.stderr);
    }
    assert_eq!(o.code, 0, "output: {}", o.stderr);
    assert_eq!(after.len(), before.len(), "the disk file changed size");
    let end = start + 100 + 4096;
    for s in 0..DISK_SECTORS {
        let range = s as usize * 512..(s as usize + 1) * 512;
        if (start..end).contains(&s) {
            let want: Vec<u8> = (0..512).map(|i| pattern_byte(seed, s, i)).collect();
            assert!(
                after[range] == want[..],
                "sector {s} does not hold the pattern the guest wrote"
            );
        } else {
            assert!(
                after[range.clone()] == before[range],
                "sector {s} changed, outside the range written"
            );
        }
    }
}

cases! {
    /// Indirect requests when the backend offers them (blkback does:
    /// `feature-max-indirect-segments`), netfront beside blkfront in one
    /// kernel (both allocate from the shared grant table), flush through
    /// `BLKIF_OP_FLUSH_DISKCACHE`; the written sectors are in the file
    /// afterwards, and nothing else changed.
    fn blkfront_selftest_reaches_the_file(t) on [xen] {
        let _ = t;
        let (disk, before) = make_disk("blk-indirect");
        let o = boot_selftest(
            Some(&disk),
            true,
            &["UNIKERNEL_VERBOSE=1", "UNIKERNEL_BLOCK_SELFTEST=7"],
        );
        let after = std::fs::read(&disk).unwrap();
        let _ = std::fs::remove_file(&disk);
        let connected = o
            .stdout
            .lines()
            .find(|l| l.contains("xvda (device/vbd/51712) connected to"))
            .unwrap_or_else(|| panic!("no blkfront line; output: {}", o.stderr));
        assert!(connected.contains("read-write, flush yes"), "{connected}");
        assert!(connected.contains("(using 32)"), "indirect requests not in use: {connected}");
        // Netfront connected first (the lab's vif), from the same grant table.
        assert!(
            o.stdout.lines().any(|l| l.starts_with("[unikernel] xen: vif0 ") && l.contains(" connected to ")),
            "no netfront line; output: {}",
            o.stderr
        );
        check_selftest(&o, &before, &after, 7, 2048);
    }

    /// `UNIKERNEL_XEN_BLK_INDIRECT=0`: direct requests only (up to 11
    /// segments, three per round of 32 pages), at another sector and seed.
    fn blkfront_direct_requests(t) on [xen] {
        let _ = t;
        let (disk, before) = make_disk("blk-direct");
        let o = boot_selftest(
            Some(&disk),
            false,
            &[
                "UNIKERNEL_VERBOSE=1",
                "UNIKERNEL_XEN_BLK_INDIRECT=0",
                "UNIKERNEL_BLOCK_SELFTEST=201",
                "UNIKERNEL_BLOCK_SELFTEST_SECTOR=12345",
            ],
        );
        let after = std::fs::read(&disk).unwrap();
        let _ = std::fs::remove_file(&disk);
        assert!(
            o.stdout.lines().any(|l| l.contains("xvda (device/vbd/51712) connected to") && l.contains("(using 0)")),
            "output: {}",
            o.stderr
        );
        check_selftest(&o, &before, &after, 201, 12345);
    }

    /// No disk in the domain config: no vbd, no block device, and the boot
    /// goes on (the self-test finds nothing to check).
    fn no_vbd_no_block_device(t) on [xen] {
        let _ = t;
        let o = boot_selftest(None, false, &["UNIKERNEL_VERBOSE=1", "UNIKERNEL_BLOCK_SELFTEST=1"]);
        assert!(
            o.stdout.contains("[unikernel] xen: no device/vbd in xenstore: no block device"),
            "output: {}",
            o.stderr
        );
        assert!(o.stdout.contains("blockcheck: 0 devices ok"), "output: {}", o.stderr);
        assert_eq!(o.code, 0, "output: {}", o.stderr);
    }
}
