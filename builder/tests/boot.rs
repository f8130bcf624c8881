//! The whole toolchain, for real: `cargo unikernel run` of the hello template
//! with the real kernel (templates/kernel-glue + runtime + platform-hvt) on
//! KVM. Skipped (with a note) where /dev/kvm cannot be opened.
use std::process::Command;

#[test]
fn hello_template_boots_and_exits_with_its_code() {
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        eprintln!("skipped: /dev/kvm is not available");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let app = tmp.path().join("boot-hello");
    let bin = env!("CARGO_BIN_EXE_cargo-unikernel");
    let status = Command::new(bin).arg("new").arg(&app).status().unwrap();
    assert!(status.success());

    let out = Command::new(bin)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("UNIKERNEL_TOOLCHAIN_ROOT")
        .arg("run")
        .arg(&app)
        .args(["--env", "GREETING=from the test", "--", "--exit", "3"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("--- stdout\n{stdout}--- stderr\n{stderr}");
    assert!(stdout.contains(r#"args: ["/boot-hello", "--exit", "3"]"#));
    assert!(stdout.contains("GREETING: from the test"));
    assert!(stdout
        .contains("word counts: brown=1 dog=1 end=1 fox=1 jumps=1 lazy=1 over=1 quick=1 the=3"));
    assert!(stdout.contains("sum of 0..2097152: 2199022206976"));
    let slept = stdout
        .lines()
        .find_map(|l| l.strip_prefix("slept 10 ms: measured "))
        .and_then(|v| v.strip_suffix(" ms"))
        .and_then(|v| v.parse::<f64>().ok())
        .expect("the sleep line");
    assert!((10.0..1000.0).contains(&slept), "slept {slept} ms");
    assert_eq!(out.status.code(), Some(3));
    let image = app.join("target/unikernel/hvt/boot-hello");
    assert!(image.is_file());
    assert!(app
        .join("target/unikernel/hvt/boot-hello.kernel.debug")
        .is_file());

    // `--disk` reaches the monitor, which matches it against the image's
    // declared disks (the hello template declares none).
    let disk = tmp.path().join("data.img");
    std::fs::write(&disk, vec![0u8; 4096]).unwrap();
    let out = Command::new(bin)
        .arg("run")
        .arg("--disk")
        .arg(format!("data={}", disk.display()))
        .arg(&image)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(
        stderr.contains("the image declares no disk \"data\" (it declares none)"),
        "{stderr}"
    );
}
