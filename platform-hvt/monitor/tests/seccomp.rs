//! The monitor's seccomp filter (docs/security.md) is live while a guest
//! runs, kills the monitor on a forbidden call, and is off only when asked.
mod common;

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use unikernel_image::manifest::Platform;

/// A guest that spins at ring 3 (`jmp .`) until it is killed.
fn spinning_image(name: &str) -> String {
    let code = [0xeb, 0xfe];
    let bytes = elf(&[kernel(&code, b"")], Some(&manifest(Platform::Hvt)));
    write_image(name, &bytes).display().to_string()
}

/// The `Seccomp:` mode in /proc/PID/status while the guest of `args` runs
/// (waits until the guest runs: the mode stops changing once it is 2, or
/// after 5 s), and the monitor's stderr.
fn seccomp_mode_while_running(args: &[&str]) -> (String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_unikernel-hvt"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = format!("/proc/{}/status", child.id());
    let start = Instant::now();
    let mut mode = String::new();
    while start.elapsed() < Duration::from_secs(5) {
        let s = std::fs::read_to_string(&status).unwrap_or_default();
        mode = s
            .lines()
            .find_map(|l| l.strip_prefix("Seccomp:"))
            .unwrap_or("")
            .trim()
            .to_string();
        if mode == "2" {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    (mode, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn the_filter_is_on_while_the_guest_runs() {
    if !kvm_available("the_filter_is_on_while_the_guest_runs") {
        return;
    }
    let img = spinning_image("spin-on");
    let (mode, err) = seccomp_mode_while_running(&[&img]);
    assert_eq!(mode, "2", "Seccomp mode (2 = filter); stderr: {err}");
    assert!(!err.contains("warning"), "{err}");
}

#[test]
fn no_seccomp_runs_without_a_filter_and_says_so() {
    if !kvm_available("no_seccomp_runs_without_a_filter_and_says_so") {
        return;
    }
    let img = spinning_image("spin-off");
    let (mode, err) = seccomp_mode_while_running(&["--no-seccomp", &img]);
    assert_eq!(mode, "0", "stderr: {err}");
    assert!(err.contains("warning: --no-seccomp"), "{err}");
}

#[test]
fn a_forbidden_call_kills_the_monitor_with_sigsys() {
    if !kvm_available("a_forbidden_call_kills_the_monitor_with_sigsys") {
        return;
    }
    let img = spinning_image("spin-check");
    let out = monitor(&["--seccomp-check", &img]);
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGSYS),
        "status {:?}, stderr: {}",
        out.status,
        stderr(&out)
    );
    assert!(
        !stderr(&out).contains("was not stopped"),
        "{}",
        stderr(&out)
    );
}
