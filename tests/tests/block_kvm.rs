//! The kvm platform's virtio-blk driver, below any filesystem: real boots
//! under QEMU (TCG) of a kernel built with the platform's `block` feature,
//! on microvm (virtio-mmio) and q35 (virtio-pci), with the drive attached
//! as `cargo unikernel run --platform kvm --disk NAME=FILE` attaches it
//! (`-drive ...,format=raw,cache=writeback` + `-device
//! virtio-blk-{device,pci},serial=NAME`, docs/kvm.md).
//!
//! * `selftest_rw_*`: the guest's boot-time self-test
//!   (`UNIKERNEL_BLOCK_SELFTEST=N`, platform-kvm blockcheck.rs) reads the
//!   first N sectors of a file this test filled, prints their FNV-1a hash
//!   (compared with the host's), writes a pattern over the second half,
//!   reads it back, flushes; after QEMU exits the test reads the file on
//!   the host: the first half unchanged, the second half the pattern, the
//!   rest unchanged. The guest's line must also name the serial, FLUSH,
//!   EINVAL past the end, and waits ended by the device's interrupt.
//! * `selftest_read_only_*`: the file is attached `readonly=on` (as the
//!   runner does for a file the user cannot write): the device is
//!   read-only, a write answers EROFS, and the file is untouched.
//! * `run_refuses_undeclared_disk`: `cargo unikernel run --platform kvm
//!   --disk x=FILE` of an image that declares no disk refuses before QEMU.
//!
//! The `block` feature is chosen here through a toolchain overlay, as the
//! net tests do for `net` (the builder turns it on once the fs component
//! exists).
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use unikernel_tests::{accel, qemu_base, root, run_with_deadline, tool, Outcome, Target};

/// Sectors the self-test reads (8 MiB: many requests of the driver's 64 KiB).
const SECTORS: u64 = 16384;
/// The attached file: bigger than what the self-test touches.
const FILE_SECTORS: u64 = SECTORS + 2048;

/// The byte the guest writes at byte `offset` (blockcheck.rs `pattern_byte`).
fn pattern_byte(offset: u64) -> u8 {
    (offset.wrapping_mul(13) ^ (offset / 512).wrapping_mul(101) ^ 0x5a) as u8
}

fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The toolchain overlay whose kernel glue turns on the platform's
/// `features` (`"block"`, `"net", "block"`: quoted, comma-separated).
fn overlay(tag: &str, features: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "unikernel-block-toolchain-{tag}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    let src = root();
    for e in std::fs::read_dir(&src).unwrap() {
        let name = e.unwrap().file_name();
        if name != "templates" && name != "target" {
            std::os::unix::fs::symlink(src.join(&name), dir.join(&name)).unwrap();
        }
    }
    for e in std::fs::read_dir(src.join("templates")).unwrap() {
        let name = e.unwrap().file_name();
        if name != "kernel-glue" {
            std::os::unix::fs::symlink(
                src.join("templates").join(&name),
                dir.join("templates").join(&name),
            )
            .unwrap();
        }
    }
    let glue = dir.join("templates/kernel-glue");
    copy_dir(&src.join("templates/kernel-glue"), &glue);
    let toml = std::fs::read_to_string(glue.join("Cargo.toml")).unwrap();
    let line = "platform = { package = \"platform-@PLATFORM@\", path = \"@TOOLCHAIN_ROOT@/platform-@PLATFORM@/guest\" }";
    assert!(
        toml.contains(line),
        "templates/kernel-glue/Cargo.toml changed: update this test"
    );
    let block = line.replace(" }", &format!(", features = [{features}] }}"));
    std::fs::write(glue.join("Cargo.toml"), toml.replace(line, &block)).unwrap();
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        if name == "target" || name == "Cargo.lock" {
            continue;
        }
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(&name));
        } else {
            std::fs::copy(e.path(), to.join(&name)).unwrap();
        }
    }
}

/// hello-min for kvm with the virtio-blk driver, built once per test binary.
fn block_image() -> PathBuf {
    static BUILT: Mutex<Option<PathBuf>> = Mutex::new(None);
    static OVERLAY: OnceLock<PathBuf> = OnceLock::new();
    image_with(&BUILT, &OVERLAY, "block", "\"block\"")
}

/// hello-min with both virtio drivers (`net` and `block`).
fn net_block_image() -> PathBuf {
    static BUILT: Mutex<Option<PathBuf>> = Mutex::new(None);
    static OVERLAY: OnceLock<PathBuf> = OnceLock::new();
    image_with(&BUILT, &OVERLAY, "net-block", "\"net\", \"block\"")
}

fn image_with(
    built: &Mutex<Option<PathBuf>>,
    overlay: &OnceLock<PathBuf>,
    tag: &str,
    features: &str,
) -> PathBuf {
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = built.as_ref() {
        return p.clone();
    }
    let overlay = overlay.get_or_init(|| self::overlay(tag, features));
    let out = std::env::temp_dir().join(format!(
        "unikernel-test-{}-kvm-{tag}-hello-min",
        std::process::id()
    ));
    let mut cmd = Command::new(tool("cargo-unikernel"));
    cmd.args(["build", "--platform", "kvm", "--manifest-path"])
        .arg(root().join("tests/apps/hello-min/Cargo.toml"))
        .arg("-o")
        .arg(&out)
        .env("UNIKERNEL_TOOLCHAIN_ROOT", overlay)
        // Its own kernel cache: the glue differs from the default kvm kernel's.
        .env(
            "CARGO_TARGET_DIR",
            root().join(format!("target/{tag}-kvm-tests")),
        );
    let o = run_with_deadline(cmd, b"", Duration::from_secs(900));
    assert_eq!(
        o.code, 0,
        "building hello-min with {features} failed:\n{}\n{}",
        o.stdout, o.stderr
    );
    *built = Some(out.clone());
    out
}

/// The QEMU command `cargo unikernel run --platform kvm --disk NAME=FILE`
/// starts (builder/src/vmm.rs), without its console relay.
fn qemu_with_disk(
    machine: &str,
    image: &Path,
    cmdline: &str,
    name: &str,
    file: &Path,
    ro: bool,
) -> Command {
    let mut c = qemu_base(machine, accel(), "64M");
    c.args(["-smp", "1"]);
    if machine == "q35" {
        c.args(["-serial", "file:/proc/self/fd/2"]);
    }
    c.arg("-kernel").arg(image);
    c.args([
        "-append",
        cmdline,
        "-device",
        "isa-debug-exit,iobase=0xf4,iosize=0x04",
        "-no-reboot",
    ]);
    c.arg("-drive").arg(format!(
        "file={},if=none,id=disk-{name},format=raw,cache=writeback{}",
        file.display(),
        if ro { ",readonly=on" } else { "" }
    ));
    let dev = if machine == "q35" {
        "virtio-blk-pci"
    } else {
        "virtio-blk-device"
    };
    c.args(["-device", &format!("{dev},drive=disk-{name},serial={name}")]);
    c
}

/// Known, varied content for the attached file.
fn initial(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn boot(test: &str, machine: &str, ro: bool) -> Option<(String, Vec<u8>, Vec<u8>)> {
    boot_with(test, machine, ro, &block_image(), "", &[]).map(|(l, b, a, _)| (l, b, a))
}

/// Boot `image` with the disk and the self-test; `token`: a
/// `virtio_mmio.device=` token for the guest's command line; `extra`:
/// more QEMU arguments. (The self-test line, the file before and after,
/// everything the guest printed.)
fn boot_with(
    test: &str,
    machine: &str,
    ro: bool,
    image: &Path,
    token: &str,
    extra: &[&str],
) -> Option<(String, Vec<u8>, Vec<u8>, String)> {
    if !Target::Microvm.available(test) {
        return None;
    }
    let file = std::env::temp_dir().join(format!("unikernel-{test}-{}.img", std::process::id()));
    let before = initial((FILE_SECTORS * 512) as usize);
    std::fs::write(&file, &before).unwrap();
    let cmdline = format!("UNIKERNEL_VERBOSE=1 UNIKERNEL_BLOCK_SELFTEST={SECTORS} -- {token}");
    let mut cmd = qemu_with_disk(machine, image, &cmdline, "data", &file, ro);
    cmd.args(extra);
    let o: Outcome = run_with_deadline(cmd, b"", Duration::from_secs(300));
    let after = std::fs::read(&file).unwrap();
    let _ = std::fs::remove_file(&file);
    let all = format!("{}{}", o.stdout, o.stderr);
    for l in all.lines().filter(|l| l.contains("virtio-blk")) {
        eprintln!("{test}: guest: {l}");
    }
    assert!(
        o.stdout.contains("hello from hello-min"),
        "the app did not run after the self-test\n{all}"
    );
    assert!(all.contains("[unikernel] exit 0"), "{all}");
    let line = all
        .lines()
        .find(|l| l.contains("block selftest virtio-blk0"))
        .unwrap_or_else(|| panic!("no self-test line\n{all}"))
        .to_string();
    let hash = format!("fnv1a {:#018x}", fnv1a(&before[..(SECTORS * 512) as usize]));
    assert!(
        line.contains(&format!("read {SECTORS} sectors {hash}")),
        "the guest read other bytes than the file holds (host: {hash}): {line}"
    );
    assert!(line.contains("serial \"data\""), "{line}");
    assert!(line.contains(&format!("{FILE_SECTORS} sectors")), "{line}");
    assert!(line.contains("past the end: EINVAL"), "{line}");
    Some((line, before, after, all))
}

/// KiB/s figures of the line, for the log.
fn rates(line: &str) -> Vec<&str> {
    line.split('(')
        .filter_map(|p| p.split(')').next())
        .filter(|p| p.ends_with("KiB/s"))
        .collect()
}

fn selftest_rw(machine: &str) {
    let test = format!("selftest_rw_{machine}");
    let Some((line, before, after)) = boot(&test, machine, false) else {
        return;
    };
    check_rw(&test, &line, &before, &after);
}

/// The self-test line of a writable disk and the file after the boot.
fn check_rw(test: &str, line: &str, before: &[u8], after: &[u8]) {
    eprintln!(
        "{test}: read, write rates under -accel {}: {:?}",
        accel(),
        rates(line)
    );
    assert!(line.contains("read-write, flush"), "{line}");
    let half = SECTORS / 2;
    assert!(
        line.contains(&format!("wrote {half} sectors at {half}")) && line.contains("read back ok"),
        "{line}"
    );
    assert!(line.contains("flush ok"), "{line}");
    let (lo, hi) = ((half * 512) as usize, (SECTORS * 512) as usize);
    assert_eq!(after.len(), before.len(), "the file changed size");
    assert!(
        after[..lo] == before[..lo],
        "the guest changed sectors it only read"
    );
    let bad = (lo..hi).find(|&i| after[i] != pattern_byte(i as u64));
    assert_eq!(
        bad, None,
        "the pattern is not on the host file at byte {bad:?}"
    );
    assert!(
        after[hi..] == before[hi..],
        "the guest wrote past its region"
    );
    // The 8 MiB read alone takes 128 requests: some of their waits must
    // have been ended by the device's interrupt (an interrupt that is not
    // delivered or acknowledged shows as 0 here, or as a hang).
    let waits: u64 = line
        .split("waits ended by vector 34: ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no wake-up count: {line}"));
    assert!(waits > 0, "no wait ended by the device's interrupt: {line}");
}

fn selftest_read_only(machine: &str) {
    let test = format!("selftest_read_only_{machine}");
    let Some((line, before, after)) = boot(&test, machine, true) else {
        return;
    };
    assert!(line.contains("read-only"), "{line}");
    assert!(line.contains("write refused: EROFS"), "{line}");
    assert!(after == before, "a read-only file changed");
}

#[test]
fn selftest_rw_microvm() {
    selftest_rw("microvm");
}

#[test]
fn selftest_rw_q35() {
    selftest_rw("q35");
}

/// The disk named as Firecracker names its devices, by a
/// `virtio_mmio.device=` token (microvm's last transport, GSI 47), instead
/// of the guest probing microvm's window.
#[test]
fn selftest_rw_microvm_token() {
    let test = "selftest_rw_microvm_token";
    let token = "virtio_mmio.device=512@0xfeb02e00:47";
    let Some((line, before, after, all)) =
        boot_with(test, "microvm", false, &block_image(), token, &[])
    else {
        return;
    };
    assert!(
        all.contains("virtio-blk0: virtio-mmio 0xfeb02e00, irq 47 -> vector 34"),
        "{all}"
    );
    check_rw(test, &line, &before, &after);
}

/// Both drivers in one kernel (`net` and `block`), both devices attached:
/// each found once with its own vector, and the disk works.
fn net_and_block(machine: &str) {
    let test = format!("net_and_block_{machine}");
    let net_dev = if machine == "q35" {
        "virtio-net-pci,netdev=n0"
    } else {
        "virtio-net-device,netdev=n0"
    };
    let extra = ["-netdev", "user,id=n0", "-device", net_dev];
    let Some((line, before, after, all)) =
        boot_with(&test, machine, false, &net_block_image(), "", &extra)
    else {
        return;
    };
    let net: Vec<&str> = all
        .lines()
        .filter(|l| l.contains("kvm: virtio-net"))
        .collect();
    let blk: Vec<&str> = all
        .lines()
        .filter(|l| l.contains("kvm: virtio-blk"))
        .collect();
    assert_eq!(net.len(), 1, "{all}");
    assert_eq!(blk.len(), 1, "{all}");
    assert!(net[0].contains("vector 33"), "{all}");
    assert!(blk[0].contains("vector 34"), "{all}");
    check_rw(&test, &line, &before, &after);
}

#[test]
fn net_and_block_microvm() {
    net_and_block("microvm");
}

#[test]
fn net_and_block_q35() {
    net_and_block("q35");
}

#[test]
fn selftest_read_only_microvm() {
    selftest_read_only("microvm");
}

#[test]
fn selftest_read_only_q35() {
    selftest_read_only("q35");
}

/// `cargo unikernel run --disk` of an image that declares no disk: one
/// line, exit 125, before QEMU starts (the guest prints nothing).
#[test]
fn run_refuses_undeclared_disk() {
    if !Target::Microvm.available("run_refuses_undeclared_disk") {
        return;
    }
    let image = block_image();
    let file =
        std::env::temp_dir().join(format!("unikernel-undeclared-{}.img", std::process::id()));
    std::fs::write(&file, [0u8; 4096]).unwrap();
    let mut cmd = Command::new(tool("cargo-unikernel"));
    cmd.arg("run")
        .arg(&image)
        .arg("--disk")
        .arg(format!("extra={}", file.display()));
    let o = run_with_deadline(cmd, b"", Duration::from_secs(120));
    let _ = std::fs::remove_file(&file);
    assert_eq!(o.code, 125, "{}\n{}", o.stdout, o.stderr);
    assert_eq!(
        o.stderr.trim(),
        "error: --disk extra: the image declares no disk \"extra\" (it declares none)"
    );
    assert!(
        !o.stdout.contains("[unikernel]"),
        "the guest ran: {}",
        o.stdout
    );
}
