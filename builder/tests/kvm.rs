//! `cargo unikernel run` of kvm images under QEMU, with a stand-in kernel
//! (`pvh-stub/stub.S`, built here with gcc and ld) instead of the real one:
//! the image layout QEMU loads (PVH note, boot manifest at `__kernel_end`),
//! the QEMU flags of each machine, the command line, the console relay
//! (stdout/stderr, exit line), exit codes, `--timeout`, `--print-vmm-config`
//! and `--emit firecracker`. Skipped, loudly, without qemu-system-x86_64.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use cargo_unikernel::link::{link, ImageSpec};
use unikernel_image::manifest::{Manifest, Platform};
use unikernel_tests::host_tool;

fn have_qemu(test: &str) -> bool {
    if cargo_unikernel::vmm::find_qemu().is_ok() {
        return true;
    }
    println!("SKIPPED {test}: qemu-system-x86_64 is not installed");
    eprintln!("SKIPPED {test}: qemu-system-x86_64 is not installed");
    false
}

/// The stub kernel and a static-pie app, linked into a kvm image (once).
fn stub_image() -> &'static Path {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pvh-stub");
        let dir = std::env::temp_dir().join(format!("cargo-unikernel-kvm-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let obj = dir.join("stub.o");
        let kernel = dir.join("stub.elf");
        let app = dir.join("app");
        host_tool(
            Command::new("cc")
                .arg("-c")
                .arg("-o")
                .arg(&obj)
                .arg(src.join("stub.S")),
            "cc (stub.S)",
        );
        host_tool(
            Command::new("ld")
                .args([
                    "-m",
                    "elf_x86_64",
                    "-nostdlib",
                    "-static",
                    "-z",
                    "max-page-size=4096",
                    "-T",
                ])
                .arg(src.join("link.ld"))
                .arg("-o")
                .arg(&kernel)
                .arg(&obj),
            "ld (stub kernel)",
        );
        host_tool(
            Command::new("cc")
                .args([
                    "-nostdlib",
                    "-static-pie",
                    "-Wl,-z,max-page-size=4096",
                    "-o",
                ])
                .arg(&app)
                .arg(src.join("app.S")),
            "cc (app.S)",
        );
        let spec = ImageSpec {
            memory: 32 << 20,
            args: vec!["default-arg".into()],
            env: vec!["DEFAULT=1".into()],
            ..ImageSpec::new(Platform::Kvm, "stub")
        };
        let img = link(
            &std::fs::read(&kernel).unwrap(),
            &std::fs::read(&app).unwrap(),
            &spec,
        )
        .unwrap();
        let out = dir.join("stub-image");
        std::fs::write(&out, img.bytes).unwrap();
        out
    })
}

fn run(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_cargo-unikernel"))
        .arg("run")
        .arg(stub_image())
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run cargo-unikernel");
    eprintln!(
        "--- {args:?}: exit {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The manifest the stub printed between `<manifest>` and `</manifest>`.
fn printed_manifest(stream: &[u8]) -> Manifest {
    let open = b"<manifest>";
    let start = stream
        .windows(open.len())
        .position(|w| w == open)
        .expect("the stub printed its manifest")
        + open.len();
    let len = u32::from_le_bytes(stream[start..start + 4].try_into().unwrap()) as usize;
    let bytes = &stream[start + 4..start + 4 + len];
    assert_eq!(&stream[start + 4 + len..][..11], b"</manifest>");
    Manifest::decode(bytes).unwrap()
}

#[test]
fn q35_separates_stdout_and_stderr_and_passes_the_command_line() {
    if !have_qemu("q35_separates_stdout_and_stderr_and_passes_the_command_line") {
        return;
    }
    let o = run(&[
        "--machine",
        "q35",
        "--env",
        "GREETING=hello world",
        "--env",
        "Q=a\"b\\c",
        "--",
        "a b",
        "",
        "--",
        "virtio_mmio.device=x",
    ]);
    // The exit line is taken out; the code comes from it (7), not from
    // isa-debug-exit (9).
    assert_eq!(o.status.code(), Some(7));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "GREETING=\"hello world\" Q=\"a\\\"b\\\\c\" -- \"a b\" \"\" \"--\" \"virtio_mmio.device=x\"\n"
    );
    assert!(o.stderr.starts_with(b"stderr line\n<manifest>"));
    let m = printed_manifest(&o.stderr);
    assert_eq!(m.platform, Platform::Kvm);
    assert_eq!((m.name.as_str(), m.memory), ("stub", 32 << 20));
    assert_eq!(m.args, ["default-arg"]);
}

#[test]
fn microvm_mixes_the_streams_on_stdout() {
    if !have_qemu("microvm_mixes_the_streams_on_stdout") {
        return;
    }
    let o = run(&["--verbose", "--env", "K=V"]);
    assert_eq!(o.status.code(), Some(7));
    let out = o.stdout.clone();
    assert!(
        out.starts_with(b"UNIKERNEL_VERBOSE=1 K=V\n"),
        "no firmware banner, the options first, no `--` without args"
    );
    // microvm has one UART: the stub's COM2 output goes nowhere, and
    // nothing reaches stderr.
    assert!(!out.windows(10).any(|w| w == b"<manifest>"));
    assert!(o.stderr.is_empty());
}

#[test]
fn exit_code_falls_back_to_isa_debug_exit() {
    if !have_qemu("exit_code_falls_back_to_isa_debug_exit") {
        return;
    }
    // "N..." makes the stub skip its exit line; it writes 9 to the port.
    let o = run(&["--env", "N=1"]);
    assert_eq!(o.status.code(), Some(9));
    assert_eq!(o.stdout, b"N=1\n");
}

#[test]
fn timeout_kills_qemu() {
    if !have_qemu("timeout_kills_qemu") {
        return;
    }
    let start = std::time::Instant::now();
    let o = run(&["--timeout", "1", "--env", "H=hang"]);
    assert_eq!(o.status.code(), Some(124));
    assert!(start.elapsed().as_secs_f64() < 10.0);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("did not exit within 1 s (--timeout)"), "{e}");
}

#[test]
fn print_vmm_config_and_emit_firecracker() {
    let o = run(&["--print-vmm-config", "--mem", "16M", "--", "x y"]);
    assert_eq!(o.status.code(), Some(0));
    let line = String::from_utf8(o.stdout).unwrap();
    let image = stub_image().display().to_string();
    assert!(
        line.contains(" -M microvm -accel tcg -cpu qemu64 -m 16M "),
        "{line}"
    );
    assert!(line.contains(&format!(" -kernel {image} ")), "{line}");
    assert!(line.contains(r#" -append '-- "x y"' "#), "{line}");

    let o = run(&["--print-vmm-config", "--machine", "q35", "--accel", "kvm"]);
    let line = String::from_utf8(o.stdout).unwrap();
    assert!(
        line.contains(" -M q35 -accel kvm -cpu EPYC -m 32M "),
        "{line}"
    );
    assert!(
        line.contains(" -serial stdio -serial file:/proc/self/fd/2 "),
        "{line}"
    );
    assert!(line.contains(" -append '' "), "{line}");

    let o = run(&["--emit", "firecracker", "--env", "A=1"]);
    assert_eq!(o.status.code(), Some(0));
    let path = format!("{image}.firecracker.json");
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), path);
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(v["boot-source"]["kernel_image_path"], image.as_str());
    assert_eq!(v["boot-source"]["boot_args"], "A=1");
    assert_eq!(v["machine-config"]["mem_size_mib"], 32);
    assert_eq!(v["network-interfaces"], serde_json::json!([]));

    // The same file again (not in a test of its own: they would race on it).
    let o = run(&["--emit", "firecracker", "--net", "tap:fc0"]);
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(
        v["network-interfaces"],
        serde_json::json!([{"iface_id": "net0", "host_dev_name": "fc0"}])
    );
    let o = run(&["--emit", "firecracker", "--net", "user"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no user-mode network"));
}

#[test]
fn network_flags() {
    let o = run(&[
        "--print-vmm-config",
        "--net",
        "user",
        "-p",
        "8080:80",
        "-p",
        "udp:5353:53",
    ]);
    assert_eq!(o.status.code(), Some(0));
    let line = String::from_utf8(o.stdout).unwrap();
    assert!(
        line.contains(" -netdev user,id=net0,hostfwd=tcp::8080-:80,hostfwd=udp::5353-:53 -device virtio-net-device,netdev=net0"),
        "{line}"
    );
    let o = run(&[
        "--print-vmm-config",
        "--machine",
        "q35",
        "--net",
        "tap:tap0",
    ]);
    let line = String::from_utf8(o.stdout).unwrap();
    assert!(
        line.contains(" -netdev tap,id=net0,ifname=tap0,script=no,downscript=no -device virtio-net-pci,netdev=net0"),
        "{line}"
    );
    let o = run(&["--print-vmm-config"]);
    assert!(!String::from_utf8(o.stdout).unwrap().contains("netdev"));

    let o = run(&["--print-vmm-config", "-p", "8080:80"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stderr).contains("-p needs --net user"));
    let o = run(&["--print-vmm-config", "--net", "tap:"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stderr).contains("an interface name is 1 to 15 characters"));
}

#[test]
fn missing_qemu_is_one_line() {
    let out = Command::new(env!("CARGO_BIN_EXE_cargo-unikernel"))
        .arg("run")
        .arg(stub_image())
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{e}");
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(
        e.contains("qemu-system-x86_64 is not installed; install it with `apt-get install qemu-system-x86`"),
        "{e}"
    );
}
