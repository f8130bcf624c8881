//! Helpers for the end-to-end tests: find the toolchain's binaries, build
//! test apps into images (once per test binary and platform), boot them with
//! a deadline on each [`Target`], and capture what the guest printed.
//!
//! Every case is written once and runs on a list of targets ([`cases!`]):
//! `hvt` (the bundled monitor, needs /dev/kvm), `kvm` (the kvm image under
//! QEMU `-M q35`, TCG unless `UNIKERNEL_TESTS_ACCEL=kvm`: stdout and stderr
//! apart) and `microvm` (QEMU `-M microvm`: one UART, so the guest's stderr
//! is mixed into stdout; [`Outcome::stderr`] is then the mixed stream too)
//! and `xen` (the xen image as a PV guest on real Xen in the Xen lab (tests/xen/lab.sh), one
//! console ring, so mixed like microvm; only with `UNIKERNEL_TESTS_XEN=1`:
//! each boot takes ~12 s, and the lab runs one domain at a time, so these
//! boots are serialised).
//! A target that cannot run here prints a loud `SKIPPED` line.
//!
//! The tests expect `cargo build --release` to have run (as `.ci/run` does):
//! they use `target/release/cargo-unikernel` and `target/release/unikernel-hvt`.

pub mod netns;

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

/// Run the host tool `cmd` to completion (no stdin, output captured): its
/// output. Panics naming `what`, the command line, the exit status and
/// what it printed if it cannot start or exits non-zero.
pub fn host_tool(cmd: &mut Command, what: &str) -> std::process::Output {
    let o = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start {cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{what}: {cmd:?} failed ({})\n--- stdout:\n{}\n--- stderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// True if `qemu-system-x86_64` is on PATH; otherwise prints a loud
/// SKIPPED line (`.ci/run` installs QEMU, so there they always run).
pub fn qemu_available(test: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|d| d.join("qemu-system-x86_64").is_file()) {
        return true;
    }
    let line = format!(
        "SKIPPED {test}: qemu-system-x86_64 is not installed (apt-get install -t bookworm-backports qemu-system-x86)\n"
    );
    let _ = std::io::stderr().write_all(line.as_bytes());
    let _ = std::io::stdout().write_all(line.as_bytes());
    false
}

/// QEMU with no default devices and the first serial port on stdout:
/// `machine` under `accel` ("tcg" or "kvm"; the CPU model follows), with
/// `mem` of RAM. Callers add the kernel or disk and the devices.
pub fn qemu_base(machine: &str, accel: &str, mem: &str) -> Command {
    let mut c = Command::new("qemu-system-x86_64");
    let cpu = if accel == "kvm" { "EPYC" } else { "qemu64" };
    c.args(["-M", machine, "-accel", accel, "-cpu", cpu, "-m", mem])
        .args(["-nodefaults", "-no-user-config"])
        .args(["-display", "none", "-serial", "stdio"]);
    c
}

/// Where a case boots its image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The hvt image on the bundled monitor `unikernel-hvt`.
    Hvt,
    /// The kvm image under QEMU `-M q35` (COM1 = stdout, COM2 = stderr).
    Kvm,
    /// The kvm image under QEMU `-M microvm` (one UART: stderr mixed into stdout).
    Microvm,
    /// The xen image as a PV guest in the Xen lab (one console ring: mixed too).
    Xen,
}

impl Target {
    /// `hvt`, `kvm`, `microvm` (the test function names [`cases!`] generates).
    pub fn from_name(name: &str) -> Target {
        match name {
            "hvt" => Target::Hvt,
            "kvm" => Target::Kvm,
            "microvm" => Target::Microvm,
            "xen" => Target::Xen,
            _ => panic!("unknown test target {name}"),
        }
    }

    /// The platform its image is built for.
    pub fn platform(self) -> &'static str {
        match self {
            Target::Hvt => "hvt",
            Target::Kvm | Target::Microvm => "kvm",
            Target::Xen => "xen",
        }
    }

    /// Can this target run here? Prints SKIPPED if not. Under
    /// `UNIKERNEL_TESTS_NATIVE=1` (threads.rs runs the apps on the host)
    /// only the hvt case runs, natively.
    pub fn available(self, test: &str) -> bool {
        if native() {
            return self == Target::Hvt;
        }
        match self {
            Target::Xen => xen_lab_available(test),
            Target::Hvt => kvm_available(test),
            Target::Kvm | Target::Microvm => {
                if accel() == "kvm" && !kvm_available(test) {
                    return false;
                }
                qemu_available(test)
            }
        }
    }

    /// The image of the test app `tests/apps/<name>` for this target.
    pub fn image(self, name: &str) -> PathBuf {
        image_for(&root().join("tests/apps").join(name), name, self.platform())
    }

    /// Boot the app `name` with run options (`--mem`, `--env`,
    /// `--trace-syscalls`: the same for the monitor and `cargo unikernel
    /// run`) and app args (none: the image's defaults).
    pub fn boot(self, name: &str, opts: &[&str], args: &[&str]) -> Outcome {
        self.boot_image(&self.image(name), opts, args, b"")
    }

    pub fn boot_with_input(
        self,
        name: &str,
        opts: &[&str],
        args: &[&str],
        input: &[u8],
    ) -> Outcome {
        self.boot_image(&self.image(name), opts, args, input)
    }

    pub fn boot_image(self, image: &Path, opts: &[&str], args: &[&str], input: &[u8]) -> Outcome {
        if self == Target::Hvt {
            return boot_with_input(image, opts, args, input);
        }
        if self == Target::Xen {
            // The lab attaches one disk (xvda): the file of the first --disk.
            let disk = opts
                .windows(2)
                .find(|w| w[0] == "--disk")
                .and_then(|w| w[1].split_once('='))
                .map(|(_, file)| PathBuf::from(file));
            let extras = XenLabExtras {
                disk: disk.as_deref(),
                ..XenLabExtras::default()
            };
            return boot_xen_lab(image, opts, args, &extras);
        }
        let machine = if self == Target::Kvm {
            "q35"
        } else {
            "microvm"
        };
        let mut cmd = Command::new(tool("cargo-unikernel"));
        cmd.arg("run")
            .arg(image)
            .args(["--machine", machine, "--accel", accel(), "--timeout", "120"])
            .args(opts);
        if !args.is_empty() {
            cmd.arg("--").args(args);
        }
        let mut o = run_with_deadline(cmd, input, Duration::from_secs(150));
        if self == Target::Microvm {
            // One UART: the guest's stderr is in stdout; QEMU's and the
            // runner's own messages are on stderr. Assertions on "stderr"
            // look at both.
            o.stderr = format!("{}{}", o.stdout, o.stderr);
        }
        o
    }
}

/// The Xen lab script (`UNIKERNEL_XEN_LAB`, default `tests/xen/lab.sh`).
pub fn xen_lab() -> PathBuf {
    std::env::var_os("UNIKERNEL_XEN_LAB")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("tests/xen/lab.sh"))
}

/// Xen boots run only with `UNIKERNEL_TESTS_XEN=1` (the `.ci/run` Xen
/// stage, after `tests/xen/lab.sh setup`); otherwise a loud SKIPPED line.
pub fn xen_lab_available(test: &str) -> bool {
    let why = if std::env::var_os("UNIKERNEL_TESTS_XEN").is_none_or(|v| v != "1") {
        "set UNIKERNEL_TESTS_XEN=1 to boot on Xen in the lab, tests/xen/lab.sh (the .ci/run Xen stage does)"
            .to_string()
    } else if !xen_lab().is_file() {
        format!("{} is missing", xen_lab().display())
    } else {
        return true;
    };
    let line = format!("SKIPPED {test}: {why}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
    let _ = std::io::stdout().write_all(line.as_bytes());
    false
}

/// One Xen domain at a time in the lab.
static XEN_LAB_LOCK: Mutex<()> = Mutex::new(());

/// A value of the xl config `cargo unikernel run --print-vmm-config` prints.
fn xl_value<'a>(config: &'a str, key: &str) -> &'a str {
    config
        .lines()
        .find_map(|l| l.strip_prefix(key)?.trim_start().strip_prefix('='))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {key} in the xl config:\n{config}"))
}

/// Undo the xl string quoting (`"..."` with `\\` and `\"`).
fn xl_unquote(s: &str) -> String {
    let inner = s
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s);
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        out.push(if c == '\\' {
            chars.next().unwrap_or('\\')
        } else {
            c
        });
    }
    out
}

/// Boot a xen image in the lab: the memory and command line come from the
/// xl config `cargo unikernel run` writes for these options and args, so
/// the encoding under test is the toolchain's own.
pub fn boot_xen(image: &Path, opts: &[&str], args: &[&str]) -> Outcome {
    boot_xen_lab(image, opts, args, &XenLabExtras::default())
}

/// What a network boot adds to [`boot_xen`].
#[derive(Default)]
pub struct XenLabExtras<'a> {
    /// Runtime options (`UNIKERNEL_IP=...`) put before the command line
    /// the toolchain wrote.
    pub options: &'a [&'a str],
    /// A vif on the lab's bridge (`--net`): the xl config must have a
    /// `vif` line for the image.
    pub net: bool,
    /// A shell script run in dom0 beside the guest (`--dom0-script`); its
    /// lines come out as `dom0: ...`, then `dom0: exit N`.
    pub dom0_script: Option<&'a str>,
    /// With `net`: attach the lab's vif without checking the image's xl
    /// config for a `vif` line (a kernel with netfront but without the net
    /// component, whose config has none).
    pub vif_unchecked: bool,
    /// A raw file the lab attaches as the guest's `xvda` (`--disk`;
    /// writes persist in the file).
    pub disk: Option<&'a Path>,
}

/// [`boot_xen`] with a vif and a dom0 script (see [`XenLabExtras`]).
pub fn boot_xen_lab(image: &Path, opts: &[&str], args: &[&str], extras: &XenLabExtras) -> Outcome {
    let mut cmd = Command::new(tool("cargo-unikernel"));
    cmd.arg("run")
        .arg(image)
        .arg("--print-vmm-config")
        .args(opts);
    if !args.is_empty() {
        cmd.arg("--").args(args);
    }
    let o = run_with_deadline(cmd, b"", Duration::from_secs(60));
    if o.code != 0 {
        // e.g. a --mem the runner refuses: its message, as the runner gives it.
        return o;
    }
    let memory = xl_value(&o.stdout, "memory").to_string();
    let mut cmdline = xl_unquote(xl_value(&o.stdout, "cmdline"));
    for opt in extras.options.iter().rev() {
        cmdline = format!("{opt} {cmdline}");
    }
    let _lab = XEN_LAB_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut cmd = Command::new(xen_lab());
    cmd.arg("run")
        .arg(image)
        .args(["--mem", &memory, "--cmdline", &cmdline, "--timeout", "120"]);
    if extras.net {
        // The lab attaches its own vif; the toolchain's config must ask for one.
        if !extras.vif_unchecked {
            let vif = xl_value(&o.stdout, "vif");
            assert!(vif.starts_with('['), "the vif line is not a list: {vif}");
        }
        cmd.arg("--net");
    }
    let script = extras.dom0_script.map(|text| {
        let path = std::env::temp_dir().join(format!(
            "unikernel-test-{}-dom0-{}.sh",
            std::process::id(),
            image
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        ));
        std::fs::write(&path, text).expect("write the dom0 script");
        path
    });
    if let Some(path) = &script {
        cmd.arg("--dom0-script").arg(path);
    }
    if let Some(disk) = extras.disk {
        cmd.arg("--disk").arg(disk);
    }
    let mut o = run_with_deadline(cmd, b"", Duration::from_secs(200));
    if let Some(path) = script {
        let _ = std::fs::remove_file(path);
    }
    // One console ring: the guest's stderr is in stdout; the lab's own
    // lines are on stderr. Assertions on "stderr" look at both.
    o.stderr = format!("{}{}", o.stdout, o.stderr);
    o
}

/// `UNIKERNEL_TESTS_NATIVE=1`: tests/threads.rs runs the apps natively
/// on the host instead of booting them (checks the expectations themselves).
pub fn native() -> bool {
    std::env::var_os("UNIKERNEL_TESTS_NATIVE").is_some_and(|v| v != "0" && !v.is_empty())
}

/// The QEMU accelerator for kvm targets: `UNIKERNEL_TESTS_ACCEL` (tcg or
/// kvm), default tcg.
pub fn accel() -> &'static str {
    match std::env::var("UNIKERNEL_TESTS_ACCEL").as_deref() {
        Ok("kvm") => "kvm",
        _ => "tcg",
    }
}

/// One test case, written once, run on a list of targets: each becomes a
/// `#[test]` named `<case>::<target>`, skipped (loudly) where the target
/// cannot run.
///
/// ```ignore
/// cases! {
///     fn hello(t) on [hvt, kvm, microvm] {
///         let o = t.boot("hello-min", &[], &[]);
///         assert_eq!(o.code, 0);
///     }
/// }
/// ```
#[macro_export]
macro_rules! cases {
    ($($(#[doc = $doc:literal])* fn $name:ident($t:ident) on [$($target:ident),+ $(,)?] $body:block)*) => {
        $(
            $(#[doc = $doc])*
            #[allow(unused_imports)]
            mod $name {
                use super::*;
                $(
                    #[test]
                    fn $target() {
                        let $t = $crate::Target::from_name(stringify!($target));
                        if !$t.available(concat!(stringify!($name), "::", stringify!($target))) {
                            return;
                        }
                        $body
                    }
                )+
            }
        )*
    };
}

static BUILT: OnceLock<Mutex<std::collections::HashMap<String, PathBuf>>> = OnceLock::new();

/// Build the test app `tests/apps/<name>` into an hvt image, once per test
/// binary, and return the image path.
pub fn image(name: &str) -> PathBuf {
    image_of(&root().join("tests/apps").join(name), name)
}

pub fn image_of(dir: &Path, name: &str) -> PathBuf {
    image_for(dir, name, "hvt")
}

/// Build the crate at `dir` for `platform`, once per test binary.
pub fn image_for(dir: &Path, name: &str, platform: &str) -> PathBuf {
    let map = BUILT.get_or_init(Default::default);
    let mut m = map.lock().unwrap_or_else(|e| e.into_inner());
    let key = format!("{platform}/{name}");
    if let Some(p) = m.get(&key) {
        return p.clone();
    }
    let out = std::env::temp_dir().join(format!(
        "unikernel-test-{}-{platform}-{name}",
        std::process::id()
    ));
    let mut cmd = Command::new(tool("cargo-unikernel"));
    cmd.arg("build")
        .arg("--platform")
        .arg(platform)
        .arg("--manifest-path")
        .arg(dir.join("Cargo.toml"))
        .arg("-o")
        .arg(&out);
    let o = run_with_deadline(cmd, b"", Duration::from_secs(900));
    assert_eq!(
        o.code, 0,
        "building {name} for {platform} failed:\n{}\n{}",
        o.stdout, o.stderr
    );
    m.insert(key, out.clone());
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
