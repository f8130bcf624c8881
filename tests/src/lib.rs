//! Helpers for the end-to-end tests: find the toolchain's binaries, build
//! test apps into images (once per test binary), boot them with a deadline,
//! and capture what the guest printed.
//!
//! The tests expect `cargo build --release` to have run (as `.ci/run` does):
//! they use `target/release/cargo-unikernel` and `target/release/unikernel-hvt`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Root of the toolchain workspace.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// A binary of the release build (`cargo build --release`).
pub fn tool(name: &str) -> PathBuf {
    let p = target_dir().join("release").join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --release` first (as .ci/run does)",
        p.display()
    );
    p
}

/// True if KVM can be used; otherwise prints a loud SKIPPED line naming the reason.
pub fn kvm_available(test: &str) -> bool {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => true,
        Err(e) => {
            let line =
                format!("SKIPPED {test}: /dev/kvm is not usable ({e}); boot tests need KVM\n");
            let _ = std::io::stderr().write_all(line.as_bytes());
            let _ = std::io::stdout().write_all(line.as_bytes());
            false
        }
    }
}

/// What a finished command did.
#[derive(Debug)]
pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    pub fn stdout_lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }
}

/// Run `cmd` with stdin `input`, killing it after `deadline`; a hang fails
/// the test with everything captured so far.
pub fn run_with_deadline(mut cmd: Command, input: &[u8], deadline: Duration) -> Outcome {
    let desc = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {desc}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let so = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = std::io::Read::read_to_end(&mut out, &mut s);
        s
    });
    let se = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = std::io::Read::read_to_end(&mut err, &mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let _ = feeder.join();
    let stdout = String::from_utf8_lossy(&so.join().unwrap()).into_owned();
    let stderr = String::from_utf8_lossy(&se.join().unwrap()).into_owned();
    match status {
        Some(st) => Outcome {
            code: st.code().unwrap_or(-1),
            stdout,
            stderr,
        },
        None => panic!("{desc} did not finish within {deadline:?}\n--- stdout:\n{stdout}\n--- stderr:\n{stderr}"),
    }
}

static BUILT: OnceLock<Mutex<std::collections::HashMap<String, PathBuf>>> = OnceLock::new();

/// Build the test app `tests/apps/<name>` (or a crate at `dir`) into an
/// image, once per test binary, and return the image path.
pub fn image(name: &str) -> PathBuf {
    image_of(&root().join("tests/apps").join(name), name)
}

pub fn image_of(dir: &Path, name: &str) -> PathBuf {
    let map = BUILT.get_or_init(Default::default);
    let mut m = map.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = m.get(name) {
        return p.clone();
    }
    let out = std::env::temp_dir().join(format!("unikernel-test-{}-{name}", std::process::id()));
    let mut cmd = Command::new(tool("cargo-unikernel"));
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(dir.join("Cargo.toml"))
        .arg("-o")
        .arg(&out);
    let o = run_with_deadline(cmd, b"", Duration::from_secs(900));
    assert_eq!(
        o.code, 0,
        "building {name} failed:\n{}\n{}",
        o.stdout, o.stderr
    );
    m.insert(name.to_string(), out.clone());
    out
}

/// Boot `image` on the monitor with monitor options and app args.
pub fn boot(image: &Path, monitor_opts: &[&str], app_args: &[&str]) -> Outcome {
    boot_with_input(image, monitor_opts, app_args, b"")
}

pub fn boot_with_input(
    image: &Path,
    monitor_opts: &[&str],
    app_args: &[&str],
    input: &[u8],
) -> Outcome {
    let mut cmd = Command::new(tool("unikernel-hvt"));
    cmd.args(monitor_opts).arg(image);
    if !app_args.is_empty() {
        cmd.arg("--").args(app_args);
    }
    run_with_deadline(cmd, input, Duration::from_secs(60))
}
