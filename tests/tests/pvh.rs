//! kvm-platform boots that need a doctored image: a PVH loader handing the
//! kernel a broken `hvm_start_info` must get a clear message and a halt.

use std::time::Duration;
use unikernel_tests::*;

/// Patch the first instructions of the PVH entry (`cli; cld; mov %ebx,
/// %edi; rdtsc; mov %eax, KVM_ENTRY_TSC` = 11 bytes) into `mov %ebx, %edi;
/// movl $0, (%edi); nop x3`: the kernel then finds the start-info magic
/// zeroed, as if a broken loader had passed it.
fn with_broken_start_info(image: &[u8]) -> Vec<u8> {
    let mut d = image.to_vec();
    let rd16 = |d: &[u8], o: usize| u16::from_le_bytes([d[o], d[o + 1]]) as usize;
    let rd32 = |d: &[u8], o: usize| u32::from_le_bytes(d[o..o + 4].try_into().unwrap());
    let rd64 = |d: &[u8], o: usize| u64::from_le_bytes(d[o..o + 8].try_into().unwrap()) as usize;
    let (phoff, phnum) = (rd64(&d, 32), rd16(&d, 56));
    let ph = |i: usize| phoff + 56 * i;
    let note = (0..phnum)
        .find(|&i| rd32(&d, ph(i)) == 4)
        .expect("image has the PVH note");
    let n = rd64(&d, ph(note) + 8);
    assert_eq!(rd32(&d, n + 8), 18, "the note is XEN_ELFNOTE_PHYS32_ENTRY");
    let entry = rd32(&d, n + 16) as usize;
    let seg = (0..phnum)
        .find(|&i| {
            rd32(&d, ph(i)) == 1
                && (rd64(&d, ph(i) + 16)..rd64(&d, ph(i) + 16) + rd64(&d, ph(i) + 32))
                    .contains(&entry)
        })
        .expect("a segment holds the entry");
    let at = rd64(&d, ph(seg) + 8) + entry - rd64(&d, ph(seg) + 16);
    assert_eq!(
        &d[at..at + 7],
        &[0xfa, 0xfc, 0x89, 0xdf, 0x0f, 0x31, 0xa3],
        "the entry code changed: update this test"
    );
    d[at..at + 11].copy_from_slice(&[0x89, 0xdf, 0xc7, 0x07, 0, 0, 0, 0, 0x90, 0x90, 0x90]);
    d
}

#[test]
fn broken_start_info_magic_is_a_clear_error() {
    if !qemu_available("broken_start_info_magic_is_a_clear_error") {
        return;
    }
    let img = std::fs::read(Target::Kvm.image("hello-min")).unwrap();
    let bad = std::env::temp_dir().join(format!("unikernel-badmagic-{}", std::process::id()));
    std::fs::write(&bad, with_broken_start_info(&img)).unwrap();
    let mut cmd = qemu_base("microvm", "tcg", "16M");
    cmd.arg("-no-reboot")
        .args([
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=0x04",
            "-kernel",
        ])
        .arg(&bad);
    let o = run_with_deadline(cmd, b"", Duration::from_secs(60));
    let _ = std::fs::remove_file(&bad);
    assert!(
        o.stdout.contains(
            "unikernel: boot failed: hvm_start_info has a bad magic 0x0 (expected 0x336ec578)"
        ),
        "stdout: {}\nstderr: {}",
        o.stdout,
        o.stderr
    );
    assert!(
        o.stdout.ends_with("[unikernel] exit 253\n"),
        "stdout: {}",
        o.stdout
    );
    assert!(
        !o.stdout.contains("hello from hello-min"),
        "the app must not run"
    );
    // isa-debug-exit: QEMU's status is (253 << 1) | 1, truncated to 8 bits.
    assert_eq!(o.code, ((253 << 1) | 1) & 0xff, "stderr: {}", o.stderr);
}

/// Boot hello-min under QEMU with `extra` devices and UNIKERNEL_VERBOSE=1.
fn verbose_boot(machine: &str, extra: &[&str]) -> Outcome {
    let img = Target::Kvm.image("hello-min");
    let mut cmd = qemu_base(machine, "tcg", "64M");
    cmd.arg("-no-reboot")
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .args(extra)
        .args(["-append", "UNIKERNEL_VERBOSE=1", "-kernel"])
        .arg(&img);
    run_with_deadline(cmd, b"", Duration::from_secs(60))
}

#[test]
fn virtio_mmio_devices_are_listed_on_microvm() {
    if !qemu_available("virtio_mmio_devices_are_listed_on_microvm") {
        return;
    }
    let o = verbose_boot(
        "microvm",
        &[
            "-device",
            "virtio-rng-device",
            "-drive",
            "if=none,id=d0,file=/dev/null,format=raw,readonly=on",
            "-device",
            "virtio-blk-device,drive=d0",
        ],
    );
    let found: Vec<&str> = o
        .stdout
        .lines()
        .filter(|l| l.contains("virtio-mmio"))
        .collect();
    assert_eq!(found.len(), 2, "stdout: {}", o.stdout);
    assert!(found.iter().any(|l| l.ends_with(": entropy")), "{found:?}");
    assert!(found.iter().any(|l| l.ends_with(": block")), "{found:?}");
    assert!(o.stdout.contains("hello from hello-min\n"));
}

#[test]
fn virtio_pci_devices_are_listed_on_q35() {
    if !qemu_available("virtio_pci_devices_are_listed_on_q35") {
        return;
    }
    let o = verbose_boot(
        "q35",
        &[
            "-device",
            "virtio-rng-pci",
            "-netdev",
            "user,id=n0",
            "-device",
            "virtio-net-pci,netdev=n0",
        ],
    );
    let found: Vec<&str> = o
        .stdout
        .lines()
        .filter(|l| l.contains("virtio-pci"))
        .collect();
    assert_eq!(found.len(), 2, "stdout: {}", o.stdout);
    assert!(found.iter().any(|l| l.ends_with(": entropy")), "{found:?}");
    assert!(found.iter().any(|l| l.ends_with(": net")), "{found:?}");
}

#[test]
fn no_devices_is_said_too() {
    if !qemu_available("no_devices_is_said_too") {
        return;
    }
    let o = verbose_boot("microvm", &[]);
    assert!(
        o.stdout.contains("[unikernel] kvm: no virtio devices\n"),
        "stdout: {}",
        o.stdout
    );
}

/// Boot hello-min the way a cloud VM boots: no isa-debug-exit device, and
/// a reset reboots (no `-no-reboot`). Only an ACPI power-off ends QEMU.
fn cloud_boot(machine: &str) -> Outcome {
    let img = Target::Kvm.image("hello-min");
    let mut cmd = qemu_base(machine, "tcg", "64M");
    cmd.arg("-kernel").arg(&img);
    run_with_deadline(cmd, b"", Duration::from_secs(90))
}

#[test]
fn acpi_power_off_ends_a_vm_without_isa_debug_exit() {
    if !qemu_available("acpi_power_off_ends_a_vm_without_isa_debug_exit") {
        return;
    }
    // q35: legacy ACPI (PM1a_CNT); microvm: hardware-reduced (the GED's
    // sleep control register).
    for machine in ["q35", "microvm"] {
        let o = cloud_boot(machine);
        // One boot (a reset would boot the app again, and again, until the
        // deadline), its exit line, and QEMU ending by itself with status 0:
        // the guest powered off.
        assert_eq!(
            o.stdout.matches("hello from hello-min").count(),
            1,
            "{machine}: stdout: {}\nstderr: {}",
            o.stdout,
            o.stderr
        );
        assert!(
            o.stdout.contains("[unikernel] exit 0\n"),
            "{machine}: {}",
            o.stdout
        );
        assert_eq!(o.code, 0, "{machine}: QEMU's status; stderr: {}", o.stderr);
    }
}

/// The command line urunc's `linux` type writes for QEMU
/// (pkg/unikontainers/unikernels/linux.go: `panic=-1 console=ttyS0`, a
/// static `ip=`, the container's environment, `init=APP -- ARGS`): the
/// app sees the environment and the arguments after `--` and none of the
/// Linux parameters, and `ip=` becomes the network options
/// (runtime/src/cmdline.rs). UNIKERNEL_VERBOSE=1 is added to see them.
#[test]
fn a_urunc_linux_command_line_reaches_the_app_as_env_and_args() {
    if !qemu_available("a_urunc_linux_command_line_reaches_the_app_as_env_and_args") {
        return;
    }
    let img = Target::Kvm.image("probe");
    let line = "UNIKERNEL_VERBOSE=1 panic=-1 console=ttyS0 \
        ip=10.0.2.15::10.0.2.2:255.255.255.0:urunc:eth0:off URUNIT_DEFROUTE=1 \
        PROBE_VAR=from-urunc init=/unikernel/probe -- args x";
    let mut cmd = qemu_base("q35", "tcg", "64M");
    cmd.arg("-no-reboot")
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .args(["-append", line, "-kernel"])
        .arg(&img);
    let o = run_with_deadline(cmd, b"", Duration::from_secs(60));
    let app: Vec<&str> = o
        .stdout
        .lines()
        .filter(|l| l.starts_with("argv:") || l.starts_with("env "))
        .collect();
    assert_eq!(
        app,
        [
            r#"argv: ["/probe", "args", "x"]"#,
            "env PROBE_DEFAULT=from-metadata",
            "env PROBE_VAR=from-urunc",
        ],
        "stdout: {}\nstderr: {}",
        o.stdout,
        o.stderr
    );
    let all = format!("{}{}", o.stdout, o.stderr);
    let options = all
        .lines()
        .find(|l| l.starts_with("[unikernel] options:"))
        .unwrap_or_else(|| panic!("no options line: {all}"));
    assert!(
        options.contains("UNIKERNEL_IP=10.0.2.15/24")
            && options.contains("UNIKERNEL_GATEWAY=10.0.2.2"),
        "{options}"
    );
}
