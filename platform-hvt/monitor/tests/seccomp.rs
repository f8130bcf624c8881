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

/// `Seccomp_filters:` of every thread of `pid`, with its name.
fn thread_filters(pid: u32) -> Vec<(String, u32)> {
    let mut v = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return v;
    };
    for t in tasks.flatten() {
        let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|s| s.trim().to_string())
        };
        if let (Some(name), Some(n)) = (field("Name:"), field("Seccomp_filters:")) {
            v.push((name, n.parse().unwrap_or(0)));
        }
    }
    v
}

#[test]
fn device_threads_narrow_their_own_filters() {
    let test = "device_threads_narrow_their_own_filters";
    let Some(code) = hostile_kernel(test) else {
        return;
    };
    // The hostile kernel's idle mode: a disk ring and the timer set up,
    // then 5 s of 1 ms polls.
    let img = hostile_image(code, "idle", 3, 5000, 0);
    let disk = std::env::temp_dir().join(format!("hvt-seccomp-{}.disk", std::process::id()));
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_unikernel-hvt"))
        .arg("--disk")
        .arg(format!("data={}", disk.display()))
        .arg(&img)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for "idle": the block I/O thread and the timer thread run.
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut err, &mut line).unwrap();
    assert_eq!(line, "idle\n");
    // The threads narrow themselves as their first step, once the
    // scheduler runs them: look until both have (4 s at most).
    let narrowed = |t: &[(String, u32)]| {
        t.iter().any(|(name, n)| name == "hvt-blk0" && *n == 2)
            && t.iter().filter(|(_, n)| *n == 2).count() >= 2
    };
    let start = Instant::now();
    let mut threads = thread_filters(child.id());
    while !narrowed(&threads) && start.elapsed() < Duration::from_secs(4) {
        std::thread::sleep(Duration::from_millis(20));
        threads = thread_filters(child.id());
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "threads {threads:?}");
    // The vCPU (main) thread has the process-wide filter only; the disk's
    // I/O thread and the timer thread stacked their own on it.
    let main = threads.iter().filter(|(_, n)| *n == 1).count();
    let blk = threads
        .iter()
        .filter(|(name, n)| name == "hvt-blk0" && *n == 2)
        .count();
    let narrowed = threads.iter().filter(|(_, n)| *n == 2).count();
    assert!(main >= 1, "the vCPU thread: {threads:?}");
    assert_eq!(blk, 1, "the block I/O thread: {threads:?}");
    assert!(narrowed >= 2, "block I/O and timer threads: {threads:?}");
    assert!(
        threads.iter().all(|(_, n)| *n >= 1),
        "every thread filtered: {threads:?}"
    );
}
