//! Boot real images on the hvt monitor and check what the guest did.

use unikernel_tests::*;

macro_rules! need_kvm {
    ($name:expr) => {
        if !kvm_available($name) {
            return;
        }
    };
}

fn probe(args: &[&str]) -> Outcome {
    boot(&image("probe"), &[], args)
}

#[test]
fn hello_min_prints_and_exits_zero() {
    need_kvm!("hello_min_prints_and_exits_zero");
    let o = boot(&image("hello-min"), &[], &[]);
    assert_eq!(o.stdout, "hello from hello-min\n", "stderr: {}", o.stderr);
    assert_eq!(o.code, 0);
}

#[test]
fn hello_min_runs_in_2m() {
    need_kvm!("hello_min_runs_in_2m");
    let o = boot(&image("hello-min"), &["--mem", "2M"], &[]);
    assert_eq!(o.stdout, "hello from hello-min\n", "stderr: {}", o.stderr);
    assert_eq!(o.code, 0);
}

#[test]
fn manifest_args_and_env_are_defaults() {
    need_kvm!("manifest_args_and_env_are_defaults");
    let o = boot(&image("probe"), &[], &[]);
    assert_eq!(
        o.stdout_lines(),
        [
            "argv: [\"/probe\", \"args\"]",
            "env PROBE_DEFAULT=from-metadata",
            "env PROBE_VAR=<unset>"
        ],
        "stderr: {}",
        o.stderr
    );
    assert_eq!(o.code, 0);
}

#[test]
fn command_line_args_and_env_arrive() {
    need_kvm!("command_line_args_and_env_arrive");
    let o = boot(
        &image("probe"),
        &[
            "--env",
            "PROBE_VAR=hello world",
            "--env",
            "PROBE_DEFAULT=overridden",
        ],
        &["args", "alpha", "beta gamma"],
    );
    assert_eq!(
        o.stdout_lines(),
        [
            "argv: [\"/probe\", \"args\", \"alpha\", \"beta gamma\"]",
            "env PROBE_DEFAULT=overridden",
            "env PROBE_VAR=hello world"
        ],
        "stderr: {}",
        o.stderr
    );
}

#[test]
fn exit_codes_propagate() {
    need_kvm!("exit_codes_propagate");
    for code in ["0", "3", "77"] {
        let o = probe(&["exit", code]);
        assert_eq!(o.stdout, format!("exiting with {code}\n"));
        assert_eq!(o.code.to_string(), code, "stderr: {}", o.stderr);
    }
}

#[test]
fn panic_prints_message_and_location_and_exits_101() {
    need_kvm!("panic_prints_message_and_location_and_exits_101");
    let o = probe(&["panic"]);
    assert_eq!(o.code, 101, "stderr: {}", o.stderr);
    assert!(
        o.stderr.contains("panicked at probe/src/main.rs:"),
        "no location in stderr: {}",
        o.stderr
    );
    assert!(
        o.stderr.contains("probe panicked on purpose: 42"),
        "stderr: {}",
        o.stderr
    );
}

#[test]
fn null_deref_is_reported_with_address() {
    need_kvm!("null_deref_is_reported_with_address");
    let o = probe(&["segv"]);
    assert_eq!(o.stdout, "about to read address 0\n");
    assert_eq!(o.code, 139, "SIGSEGV is 128+11; stderr: {}", o.stderr);
    assert!(
        o.stderr.contains("app killed by SIGSEGV"),
        "stderr: {}",
        o.stderr
    );
    assert!(
        o.stderr
            .contains("faulting address: 0x0 (read, page not mapped)"),
        "stderr: {}",
        o.stderr
    );
}

#[test]
fn guard_page_faults() {
    need_kvm!("guard_page_faults");
    let o = probe(&["guard"]);
    let lines = o.stdout_lines();
    assert_eq!(
        lines[0], "after mprotect round trip: 7 9",
        "stderr: {}",
        o.stderr
    );
    assert!(lines[1].starts_with("touching guard page at 0x"));
    assert_eq!(lines.len(), 2, "the guard page write must not succeed");
    assert_eq!(o.code, 139, "stderr: {}", o.stderr);
    let addr = lines[1].trim_start_matches("touching guard page at ");
    assert!(
        o.stderr.contains(&format!(
            "faulting address: {addr} (write, protection violation)"
        )) || o.stderr.contains(&format!(
            "faulting address: {addr} (write, page not mapped)"
        )),
        "stderr: {}",
        o.stderr
    );
}

#[test]
fn abort_ends_with_sigabrt() {
    need_kvm!("abort_ends_with_sigabrt");
    let o = probe(&["abort"]);
    assert_eq!(o.stdout, "aborting\n");
    assert_eq!(o.code, 134, "stderr: {}", o.stderr);
    assert!(o.stderr.contains("SIGABRT"), "stderr: {}", o.stderr);
}

#[test]
fn unknown_syscall_returns_enosys() {
    need_kvm!("unknown_syscall_returns_enosys");
    let o = probe(&["enosys"]);
    assert_eq!(
        o.stdout_lines(),
        ["syscall 1000 returned -1, errno 38", "still alive"]
    );
    assert_eq!(o.code, 0);
}

#[test]
fn bad_pointer_gives_efault() {
    need_kvm!("bad_pointer_gives_efault");
    let o = probe(&["efault"]);
    assert_eq!(
        o.stdout_lines(),
        ["write from a bad pointer returned -1, errno 14"]
    );
    assert_eq!(o.code, 0);
}

#[test]
fn files_and_devices() {
    need_kvm!("files_and_devices");
    let o = probe(&["fs"]);
    assert_eq!(
        o.stdout_lines(),
        [
            "write /dev/null: 10",
            "/dev/zero all zero: true",
            "/dev/urandom nonzero: true",
            "open /nonexistent/file: NotFound",
            "/ is dir: true",
            "/dev: null random urandom zero",
            "current_exe: /probe",
            "cwd: /",
        ],
        "stderr: {}",
        o.stderr
    );
    assert_eq!(o.code, 0);
}

#[test]
fn memory_heavy_work() {
    need_kvm!("memory_heavy_work");
    let o = probe(&["mem"]);
    assert_eq!(
        o.stdout_lines(),
        [
            "16 MiB vector sum: 2097144125",
            "kept 1333 blocks, 3318554 bytes",
            "hashmap 999 -> 998001"
        ],
        "stderr: {}",
        o.stderr
    );
    assert_eq!(o.code, 0);
}

#[test]
fn sleeping_and_clocks() {
    need_kvm!("sleeping_and_clocks");
    let o = probe(&["time"]);
    assert_eq!(
        o.stdout_lines(),
        [
            "slept 20 ms: at least 20 ms: true, under 500 ms: true",
            "wall clock after 2024: true"
        ],
        "stderr: {}",
        o.stderr
    );
}

#[test]
fn stdin_reaches_the_app() {
    need_kvm!("stdin_reaches_the_app");
    let o = boot_with_input(&image("probe"), &[], &["stdin"], b"piped input\n");
    assert_eq!(
        o.stdout, "stdin had 12 bytes: PIPED INPUT\n",
        "stderr: {}",
        o.stderr
    );
}

#[test]
fn trace_syscalls_prints_calls() {
    need_kvm!("trace_syscalls_prints_calls");
    let o = boot(&image("probe"), &["--trace-syscalls"], &["enosys"]);
    assert_eq!(o.code, 0);
    assert!(
        o.stderr.contains("[trace] write(1, "),
        "stderr: {}",
        o.stderr
    );
    assert!(
        o.stderr.contains("[trace] syscall_1000(1, 2, 3"),
        "stderr: {}",
        o.stderr
    );
    assert!(o.stderr.contains("= -1 ENOSYS"), "stderr: {}", o.stderr);
    assert!(
        o.stderr.contains("[trace] exit_group(0)"),
        "stderr: {}",
        o.stderr
    );
    // The summary of unimplemented calls at exit counts it.
    assert!(
        o.stderr.contains("[trace]   ? (1000): 1 time(s)"),
        "stderr: {}",
        o.stderr
    );
}

#[test]
fn too_little_memory_is_a_clear_error() {
    need_kvm!("too_little_memory_is_a_clear_error");
    let o = boot(&image("probe"), &["--mem", "1M"], &[]);
    assert_ne!(o.code, 0);
    assert!(o.stdout.is_empty());
    assert!(
        o.stderr.contains("--mem") || o.stderr.contains("memory"),
        "stderr: {}",
        o.stderr
    );
    assert!(
        !o.stderr.contains("panicked"),
        "the monitor panicked: {}",
        o.stderr
    );
}

fn corrupt_case(name: &str, bytes: &[u8]) -> Outcome {
    let p = std::env::temp_dir().join(format!("unikernel-corrupt-{}-{name}", std::process::id()));
    std::fs::write(&p, bytes).unwrap();
    let o = boot(&p, &[], &[]);
    let _ = std::fs::remove_file(&p);
    assert_eq!(o.code, 125, "{name}: stderr: {}", o.stderr);
    assert!(
        !o.stderr.contains("panicked"),
        "{name}: the monitor panicked: {}",
        o.stderr
    );
    assert_eq!(
        o.stderr.lines().count(),
        1,
        "{name}: want one line: {}",
        o.stderr
    );
    o
}

#[test]
fn corrupted_images_are_clear_errors() {
    let img = std::fs::read(image("hello-min")).unwrap();
    let o = corrupt_case("truncated", &img[..img.len() / 3]);
    assert!(o.stderr.contains("unikernel-hvt"), "{}", o.stderr);
    let mut bad = img.clone();
    bad[..4].copy_from_slice(b"\x7fELG");
    corrupt_case("magic", &bad);
    corrupt_case("empty", b"");
    let o = corrupt_case("dynamic", &std::fs::read("/bin/true").unwrap());
    assert!(o.stderr.contains("not a unikernel image"), "{}", o.stderr);
}

#[test]
fn image_is_not_executable_by_the_host() {
    use std::os::unix::fs::PermissionsExt;
    // Even marked executable, the host kernel refuses the image: its
    // PT_INTERP names an interpreter that does not exist (as Solo5 does).
    let exe = std::env::temp_dir().join(format!("unikernel-exec-{}", std::process::id()));
    std::fs::copy(image("hello-min"), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let r = std::process::Command::new(&exe).output();
    let _ = std::fs::remove_file(&exe);
    match r {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}"),
        Ok(o) => panic!("the host ran the image: {o:?}"),
    }
}
