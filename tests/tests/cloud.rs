//! Bootable disk images (docs/deploy.md): `cargo unikernel run IMAGE
//! --emit disk` writes a GPT disk that QEMU q35 boots with SeaBIOS and with
//! OVMF (UEFI) through GRUB, the command line from the disk's grub.cfg
//! reaching the app intact; the qcow2, VHD and GCE forms checked with
//! qemu-img, tar, sfdisk and mtools; an image's declared disk as a data
//! partition that keeps what the app wrote. Needs Debian's grub-pc-bin,
//! grub-efi-amd64-bin, ovmf, qemu-utils, fdisk, mtools and dosfstools
//! (.ci/run installs them); prints SKIPPED without.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use unikernel_tests::*;

const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

fn ready(test: &str) -> bool {
    if !qemu_available(test) {
        return false;
    }
    let missing: Vec<&str> = [
        ("/usr/lib/grub/i386-pc/boot.img", "grub-pc-bin"),
        ("/usr/lib/grub/x86_64-efi/normal.mod", "grub-efi-amd64-bin"),
        (OVMF_CODE, "ovmf"),
        ("/usr/bin/qemu-img", "qemu-utils"),
        ("/usr/sbin/sfdisk", "fdisk"),
        ("/usr/bin/mdir", "mtools"),
        ("/usr/sbin/fsck.fat", "dosfstools"),
    ]
    .iter()
    .filter(|(p, _)| !Path::new(p).exists())
    .map(|(_, pkg)| *pkg)
    .collect();
    if !missing.is_empty() {
        eprintln!(
            "SKIPPED: {test}: needs {} (.ci/run installs them)",
            missing.join(", ")
        );
        return false;
    }
    true
}

/// `cargo unikernel run IMAGE --emit disk ARGS...`: the disk's path.
fn emit_disk(image: &Path, args: &[&str]) -> PathBuf {
    let mut cmd = Command::new(tool("cargo-unikernel"));
    cmd.arg("run")
        .arg(image)
        .args(["--emit", "disk"])
        .args(args);
    let o = run_with_deadline(cmd, b"", Duration::from_secs(120));
    assert_eq!(o.code, 0, "--emit disk failed: {}{}", o.stdout, o.stderr);
    PathBuf::from(o.stdout.trim())
}

/// Boots `disk` on QEMU q35 (TCG) with SeaBIOS or, `uefi`, OVMF.
fn boot_disk(disk: &Path, uefi: bool) -> Outcome {
    let mut cmd = qemu_base("q35", "tcg", "256M");
    cmd.arg("-no-reboot")
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .arg("-drive")
        .arg(format!(
            "file={},format=raw,if=none,id=d0,snapshot=on",
            disk.display()
        ))
        .args(["-device", "virtio-blk-pci,drive=d0"]);
    if uefi {
        let vars = std::env::temp_dir().join(format!("unikernel-ovmf-vars-{}", std::process::id()));
        std::fs::copy(OVMF_VARS, &vars).unwrap();
        cmd.arg("-drive")
            .arg(format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"))
            .arg("-drive")
            .arg(format!("if=pflash,format=raw,file={}", vars.display()));
    }
    run_with_deadline(cmd, b"", Duration::from_secs(180))
}

/// isa-debug-exit's QEMU status for the guest's exit code.
fn qemu_status(code: i32) -> i32 {
    ((code << 1) | 1) & 0xff
}

#[test]
fn disk_boots_with_bios_and_uefi() {
    let test = "disk_boots_with_bios_and_uefi";
    if !ready(test) {
        return;
    }
    let disk = emit_disk(&Target::Kvm.image("hello-min"), &[]);
    assert!(
        disk.to_string_lossy().ends_with(".raw"),
        "{}",
        disk.display()
    );
    for uefi in [false, true] {
        let o = boot_disk(&disk, uefi);
        let fw = if uefi { "OVMF" } else { "SeaBIOS" };
        assert!(
            o.stdout.contains("hello from hello-min\n"),
            "{fw}: {}\n{}",
            o.stdout,
            o.stderr
        );
        assert!(
            o.stdout.contains("[unikernel] exit 0\n"),
            "{fw}: {}",
            o.stdout
        );
        assert_eq!(o.code, qemu_status(0), "{fw}: {}", o.stderr);
    }
}

#[test]
fn the_command_line_reaches_the_app_through_grub() {
    let test = "the_command_line_reaches_the_app_through_grub";
    if !ready(test) {
        return;
    }
    let probe = Target::Kvm.image("probe");
    let awkward = "it's $x \"q\" \\b";
    let disk = emit_disk(
        &probe,
        &[
            "--env",
            "PROBE_VAR=hello world",
            "--",
            "args",
            "alpha",
            "beta gamma",
            awkward,
        ],
    );
    for uefi in [false, true] {
        let o = boot_disk(&disk, uefi);
        assert_eq!(
            // GRUB leaves a carriage return on the shared serial line.
            o.stdout_lines()
                .into_iter()
                .map(|l| l.trim_start_matches('\r'))
                .filter(|l| l.starts_with("argv") || l.starts_with("env "))
                .collect::<Vec<_>>(),
            [
                format!("argv: [\"/probe\", \"args\", \"alpha\", \"beta gamma\", {awkward:?}]")
                    .as_str(),
                "env PROBE_DEFAULT=from-metadata",
                "env PROBE_VAR=hello world",
            ],
            "uefi {uefi}: {}",
            o.stdout
        );
        assert_eq!(o.code, qemu_status(0));
    }
    // An exit code comes back through isa-debug-exit.
    let disk = emit_disk(&probe, &["--", "exit", "7"]);
    let o = boot_disk(&disk, false);
    assert!(o.stdout.contains("[unikernel] exit 7\n"), "{}", o.stdout);
    assert_eq!(o.code, qemu_status(7));
    // `cargo unikernel run DISK [--uefi]` boots it the same way and hands
    // the app's exit code back.
    for uefi in [false, true] {
        let mut cmd = Command::new(tool("cargo-unikernel"));
        cmd.arg("run").arg(&disk);
        if uefi {
            cmd.arg("--uefi");
        }
        let o = run_with_deadline(cmd, b"", Duration::from_secs(180));
        assert!(
            o.stdout.contains("exiting with 7"),
            "uefi {uefi}: {}{}",
            o.stdout,
            o.stderr
        );
        assert_eq!(o.code, 7, "uefi {uefi}: {}", o.stderr);
    }
}

#[test]
fn disk_formats_are_what_their_tools_expect() {
    let test = "disk_formats_are_what_their_tools_expect";
    if !ready(test) {
        return;
    }
    // A copy of its own: the disks go next to the image, and the other
    // tests write disks of hello-min too.
    let img = std::env::temp_dir().join(format!("unikernel-formats-{}", std::process::id()));
    std::fs::copy(Target::Kvm.image("hello-min"), &img).unwrap();
    let raw = emit_disk(&img, &[]);
    let raw_bytes = std::fs::read(&raw).unwrap();
    // Reproducible: the same image gives the same disk.
    assert!(
        std::fs::read(emit_disk(&img, &[])).unwrap() == raw_bytes,
        "two disks of one image differ"
    );
    // Whole MiB, a GPT with the BIOS boot partition and the ESP.
    assert_eq!(raw_bytes.len() % (1 << 20), 0);
    let parts = gpt_partitions(&raw);
    assert_eq!(parts.len(), 2, "{parts:?}");
    // The ESP holds GRUB's UEFI binary, its config, the command line and
    // the kernel (mtools reads it; sfdisk's start is in sectors).
    let (esp_start, _) = part_range(&parts[1]);
    let at = format!("{}@@{}", raw.display(), esp_start * 512);
    for (dir, file) in [
        ("::/EFI/BOOT", "BOOTX64"),
        ("::/boot", "kernel"),
        ("::/boot/grub", "grub"),
    ] {
        let o = host_tool(Command::new("mdir").args(["-i", &at, dir]), "the ESP");
        let list = String::from_utf8_lossy(&o.stdout);
        assert!(list.contains(file), "mdir {dir}: {list}");
    }
    let o = host_tool(
        Command::new("mtype").args(["-i", &at, "::/boot/kernel"]),
        "the ESP's kernel",
    );
    assert!(
        o.stdout == std::fs::read(&img).unwrap(),
        "the ESP's kernel is the image"
    );

    let qcow2 = emit_disk(&img, &["--disk-format", "qcow2"]);
    assert!(qcow2.to_string_lossy().ends_with(".qcow2"));
    host_tool(
        Command::new("qemu-img").arg("check").arg(&qcow2),
        "the qcow2 disk",
    );
    let info = |p: &Path, format: &str| -> serde_json::Value {
        let o = host_tool(
            Command::new("qemu-img")
                .args(["info", "--output", "json", "-f", format])
                .arg(p),
            "the disk's info",
        );
        serde_json::from_slice(&o.stdout).unwrap()
    };
    assert_eq!(
        info(&qcow2, "qcow2")["virtual-size"],
        raw_bytes.len() as u64
    );

    // A fixed VHD: the raw disk and its footer, which qemu-img's vpc driver
    // must accept (a fixed VHD has no header to probe: -f vpc) with the
    // raw disk's size.
    let vhd = emit_disk(&img, &["--disk-format", "vhd"]);
    let v = info(&vhd, "vpc");
    assert_eq!(v["format"], "vpc", "{v}");
    assert_eq!(v["virtual-size"], raw_bytes.len() as u64, "{v}");
    let vhd_bytes = std::fs::read(&vhd).unwrap();
    assert_eq!(vhd_bytes.len(), raw_bytes.len() + 512);
    assert!(vhd_bytes[..raw_bytes.len()] == raw_bytes[..]);
    assert_eq!(
        &vhd_bytes[raw_bytes.len()..raw_bytes.len() + 8],
        b"conectix"
    );

    let gce = emit_disk(&img, &["--disk-format", "gce"]);
    assert!(gce.to_string_lossy().ends_with(".tar.gz"));
    let o = host_tool(Command::new("tar").arg("tzvf").arg(&gce), "the GCE tarball");
    let list = String::from_utf8_lossy(&o.stdout);
    assert!(
        list.lines().count() == 1 && list.trim_end().ends_with(" disk.raw"),
        "{list}"
    );
    let dir = std::env::temp_dir().join(format!("unikernel-gce-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    host_tool(
        Command::new("tar").arg("xzf").arg(&gce).arg("-C").arg(&dir),
        "the GCE tarball",
    );
    assert!(
        std::fs::read(dir.join("disk.raw")).unwrap() == raw_bytes,
        "disk.raw is the raw disk"
    );

    // Not a kvm image: a clear error.
    let mut cmd = Command::new(tool("cargo-unikernel"));
    cmd.arg("run")
        .arg(Target::Hvt.image("hello-min"))
        .args(["--emit", "disk"]);
    let o = run_with_deadline(cmd, b"", Duration::from_secs(60));
    assert_ne!(o.code, 0);
    assert!(
        o.stderr.contains("--emit applies to kvm images only"),
        "{}",
        o.stderr
    );
}

/// The GPT's partitions, read by the host's own sfdisk.
fn gpt_partitions(disk: &Path) -> Vec<String> {
    let o = host_tool(Command::new("sfdisk").arg("--dump").arg(disk), "the GPT");
    let dump = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(dump.contains("label: gpt"), "{dump}");
    assert!(
        dump.to_lowercase()
            .contains("21686148-6449-6e6f-744e-656564454649"),
        "BIOS boot: {dump}"
    );
    assert!(
        dump.to_lowercase()
            .contains("c12a7328-f81f-11d2-ba4b-00a0c93ec93b"),
        "ESP: {dump}"
    );
    dump.lines()
        .filter(|l| l.contains(" : start="))
        .map(str::to_string)
        .collect()
}

/// Start and size (in sectors) of an sfdisk dump line.
fn part_range(line: &str) -> (u64, u64) {
    let field = |k: &str| -> u64 {
        line.split(k)
            .nth(1)
            .and_then(|s| s.split(',').next())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {k} in {line}"))
    };
    (field("start="), field("size="))
}

/// The partition of `size` sectors at `start` of `disk` in a file of its
/// own (its path), which `fsck.fat -n` must find clean.
fn extract_clean(disk: &[u8], start: u64, size: u64, what: &str) -> PathBuf {
    let part = std::env::temp_dir().join(format!("unikernel-{what}-{}", std::process::id()));
    std::fs::write(
        &part,
        &disk[(start * 512) as usize..((start + size) * 512) as usize],
    )
    .unwrap();
    host_tool(
        Command::new("fsck.fat").arg("-n").arg(&part),
        &format!("the partition {what}"),
    );
    part
}

#[test]
fn a_declared_disk_is_a_data_partition_that_persists() {
    let test = "a_declared_disk_is_a_data_partition_that_persists";
    if !ready(test) {
        return;
    }
    // fs-disk declares disk "data" at /data. A copy of its own: the disks
    // go next to the image.
    let img = std::env::temp_dir().join(format!("unikernel-datadisk-{}", std::process::id()));
    std::fs::copy(Target::Kvm.image("fs-disk"), &img).unwrap();
    let write = emit_disk(&img, &["--", "write", "/data"]);
    let fresh = std::fs::read(&write).unwrap();
    assert!(
        std::fs::read(emit_disk(&img, &["--", "write", "/data"])).unwrap() == fresh,
        "two disks of one image differ"
    );
    // A third partition, ours, named after the disk.
    let parts = gpt_partitions(&write);
    assert_eq!(parts.len(), 3, "{parts:?}");
    assert!(
        parts[2]
            .to_lowercase()
            .contains("type=a4e6c0d2-5f1b-4c7e-8e93-75756b646174")
            && parts[2].contains("name=\"data\""),
        "{}",
        parts[2]
    );
    let (start, size) = part_range(&parts[2]);
    assert_eq!(size * 512, 64 << 20);
    // Boot 1 (SeaBIOS, `cargo unikernel run DISK`, which writes the disk
    // in place) writes the tour; its verify run checks it from a second
    // disk of the same image that gets boot 1's data partition.
    let mut cmd = Command::new(tool("cargo-unikernel"));
    cmd.arg("run").arg(&write);
    let o = run_with_deadline(cmd, b"", Duration::from_secs(180));
    assert_eq!(o.code, 0, "write boot: {}{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("checks passed"), "{}", o.stdout);
    let written = std::fs::read(&write).unwrap();
    let range = (start * 512) as usize..((start + size) * 512) as usize;
    assert!(
        written[range.clone()] != fresh[range.clone()],
        "the data partition was not written"
    );
    assert!(
        written[..range.start] == fresh[..range.start],
        "the boot partitions were written"
    );
    // The host's own tools read the volume: fsck clean, the tour there.
    let part = extract_clean(&written, start, size, "datapart");
    let o = host_tool(
        Command::new("mdir").arg("-i").arg(&part).arg("::/"),
        "the data partition",
    );
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("tour"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let verify = emit_disk(&img, &["--", "verify", "/data"]);
    let mut v = std::fs::read(&verify).unwrap();
    v[range.clone()].copy_from_slice(&written[range]);
    std::fs::write(&verify, &v).unwrap();
    let o = boot_disk(&verify, true);
    assert!(
        o.stdout.contains("checks passed"),
        "UEFI verify: {}\n{}",
        o.stdout,
        o.stderr
    );
    assert_eq!(o.code, qemu_status(0));
    for f in [img.clone(), part, write, verify] {
        let _ = std::fs::remove_file(f);
    }
}

#[test]
fn data_size_and_data_from_shape_the_data_partition() {
    let test = "data_size_and_data_from_shape_the_data_partition";
    if !ready(test) {
        return;
    }
    let img = std::env::temp_dir().join(format!("unikernel-datasize-{}", std::process::id()));
    std::fs::copy(Target::Kvm.image("fs-disk"), &img).unwrap();
    let seed = std::env::temp_dir().join(format!("unikernel-dataseed-{}", std::process::id()));
    std::fs::create_dir_all(seed.join("etc")).unwrap();
    std::fs::write(seed.join("etc/seeded.txt"), "from the host\n").unwrap();
    let args = [
        "--data-size",
        "40M",
        "--data-from",
        seed.to_str().unwrap(),
        "--",
        "verify",
        "/data",
    ];
    let disk = emit_disk(&img, &args);
    let bytes = std::fs::read(&disk).unwrap();
    // Reproducible with a seed too (its mtimes do not count).
    std::fs::File::open(seed.join("etc/seeded.txt"))
        .unwrap()
        .set_modified(std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1 << 30))
        .unwrap();
    assert!(
        std::fs::read(emit_disk(&img, &args)).unwrap() == bytes,
        "two seeded disks of one image differ"
    );
    let parts = gpt_partitions(&disk);
    assert_eq!(parts.len(), 3, "{parts:?}");
    let (start, size) = part_range(&parts[2]);
    assert_eq!(size * 512, 40 << 20, "{}", parts[2]);
    assert_eq!(bytes.len() as u64, (start + size) * 512 + (1 << 20));
    let part = extract_clean(&bytes, start, size, "sizedpart");
    let o = host_tool(
        Command::new("mdir").arg("-i").arg(&part).arg("::/etc"),
        "the seeded partition",
    );
    let list = String::from_utf8_lossy(&o.stdout);
    assert!(
        list.contains("seeded") && list.contains("1980-01-01"),
        "{list}"
    );
    let o = host_tool(
        Command::new("mtype")
            .arg("-i")
            .arg(&part)
            .arg("::/etc/seeded.txt"),
        "the seeded file",
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout), "from the host\n");

    // Bad values, and the options without --emit disk: clear errors.
    for (args, want) in [
        (&["--emit", "disk", "--data-size", "2M"][..], "too small"),
        (
            &["--emit", "disk", "--data-size", "4100K"][..],
            "not whole MiB",
        ),
        (&["--data-size", "40M"][..], "give it with --emit disk"),
        (
            &["--emit", "disk", "--data-from", "/nonexistent-seed"][..],
            "not a directory",
        ),
    ] {
        let mut cmd = Command::new(tool("cargo-unikernel"));
        cmd.arg("run").arg(&img).args(args);
        let o = run_with_deadline(cmd, b"", Duration::from_secs(60));
        assert_ne!(o.code, 0, "{args:?}");
        assert!(o.stderr.contains(want), "{args:?}: {}", o.stderr);
    }
    for f in [img, part, disk] {
        let _ = std::fs::remove_file(f);
    }
    let _ = std::fs::remove_dir_all(&seed);
}
