//! End-to-end tests of the `cargo-unikernel` binary: `new`, `build` (with a
//! stand-in kernel template, see `fake-toolchain/`), `inspect`, and the
//! one-line errors.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cargo-unikernel"));
    let fake_root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake-toolchain");
    c.env("UNIKERNEL_TOOLCHAIN_ROOT", fake_root);
    // The app gets its own target dir inside the test's temporary directory.
    c.env_remove("CARGO_TARGET_DIR");
    c
}

fn run(c: &mut Command) -> Output {
    let out = c.output().expect("run cargo-unikernel");
    eprintln!(
        "--- stdout\n{}--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn new_build_inspect() {
    let tmp = tempfile::tempdir().unwrap();
    let app = tmp.path().join("demo-app");

    // Works as `cargo unikernel new` (argv[1] = "unikernel") too.
    let out = run(bin().arg("unikernel").arg("new").arg(&app));
    assert!(out.status.success());
    assert!(stdout(&out).contains("created demo-app"));

    let image: PathBuf = tmp.path().join("out/demo.img");
    let out = run(bin().arg("build").arg(&app).arg("-o").arg(&image));
    assert!(out.status.success());
    assert!(stdout(&out).contains("demo.img"), "summary names the image");
    assert!(image.is_file());
    let app_debug = tmp.path().join("out/demo.img.app.debug");
    let musl_exe = app.join("target/x86_64-unknown-linux-musl/release/demo-app");
    assert_eq!(
        std::fs::read(&app_debug).unwrap(),
        std::fs::read(&musl_exe).unwrap()
    );
    assert!(tmp.path().join("out/demo.img.kernel.debug").is_file());

    // The glue crate was generated with the placeholders replaced.
    let glue_root = app.join("target/unikernel/kernel");
    let glue = std::fs::read_dir(&glue_root)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert!(glue
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("hvt-"));
    let readme = std::fs::read_to_string(glue.join("README.md")).unwrap();
    assert!(
        readme.contains("Placeholders checked by the test: hvt []"),
        "{readme}"
    );
    assert!(
        glue.join(".cargo/config.toml").is_file(),
        "dot-directories are copied"
    );

    let out = run(bin().arg("inspect").arg(&image));
    assert!(out.status.success());
    let report = stdout(&out);
    assert!(report.contains("name        demo-app"), "{report}");
    // The hello template uses no socket: no component, nothing else new.
    assert!(
        report.contains("  components  (none)\n  devices     (none)\n  ports       (none)\n  options     (none)\n"),
        "{report}"
    );
    assert!(report.contains("memory      64M"), "{report}");
    assert!(
        report.contains("GREETING=hello from the unikernel"),
        "{report}"
    );
    assert!(report.contains("app base    0x103000"), "{report}");
    assert!(report.contains("INTERP"), "{report}");
    assert!(
        report
            .lines()
            .any(|l| l.contains("R-X") && l.ends_with("kernel")),
        "{report}"
    );
    assert!(
        report
            .lines()
            .any(|l| l.contains("RW-") && l.ends_with("app")),
        "{report}"
    );

    // A second build reuses everything and gives the same image.
    let first = std::fs::read(&image).unwrap();
    let out = run(bin()
        .arg("build")
        .arg("--manifest-path")
        .arg(app.join("Cargo.toml"))
        .arg("-o")
        .arg(&image));
    assert!(out.status.success());
    assert_eq!(std::fs::read(&image).unwrap(), first);

    // Default output path: <target>/unikernel/hvt/<name>.
    let out = run(bin().arg("build").current_dir(&app));
    assert!(out.status.success());
    assert!(app.join("target/unikernel/hvt/demo-app").is_file());
}

/// An app using std::net gets the net component from its symbols, with the
/// reason, the devices, the ports and the options in its manifest, and a
/// kernel of its own (the glue crate named after platform + components).
#[test]
fn net_component_from_the_app_symbols() {
    let tmp = tempfile::tempdir().unwrap();
    let app = tmp.path().join("web");
    assert!(run(bin().arg("new").arg(&app)).status.success());
    std::fs::write(
        app.join("src/main.rs"),
        "fn main() {\n    let l = std::net::TcpListener::bind(\"0.0.0.0:8080\").unwrap();\n    for s in l.incoming() {\n        drop(s);\n    }\n}\n",
    )
    .unwrap();
    let toml = app.join("Cargo.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(
        &toml,
        text.replace(
            "memory = \"64M\"",
            "memory = \"64M\"\nports = [\"8080:8080\"]\nnet = { ip = \"10.0.0.2/24\", gateway = \"10.0.0.1\", dns = [\"10.0.0.1\", \"9.9.9.9\"] }",
        ),
    )
    .unwrap();
    let image = tmp.path().join("web.img");
    let out = run(bin().arg("build").arg(&app).arg("-o").arg(&image));
    assert!(out.status.success());
    assert!(
        stderr(&out).contains("Building kernel (hvt + net)"),
        "{}",
        stderr(&out)
    );
    // No `accept`: musl's accept4 called it as a fallback, the builder's
    // system-call shim (builder/src/shim.rs) replaces accept4 and does not.
    let why = "net: the app calls socket, connect, bind, listen, accept4, getaddrinfo";
    assert!(
        stdout(&out).contains(&format!("  component {why}")),
        "{}",
        stdout(&out)
    );
    let report = stdout(&run(bin().arg("inspect").arg(&image)));
    for line in [
        format!("  components\n    {why}\n"),
        "  devices     \"net\"\n".to_string(),
        "  ports       \"8080:8080\"\n".to_string(),
        "  options     \"UNIKERNEL_IP=10.0.0.2/24\" \"UNIKERNEL_GATEWAY=10.0.0.1\" \"UNIKERNEL_DNS=10.0.0.1,9.9.9.9\"\n".to_string(),
    ] {
        assert!(report.contains(&line), "{line}\n{report}");
    }
    let glue = std::fs::read_dir(app.join("target/unikernel/kernel"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let readme = std::fs::read_to_string(glue.join("README.md")).unwrap();
    assert!(
        readme.contains("Placeholders checked by the test: hvt [\"net\"]"),
        "{readme}"
    );

    // Listed in the metadata as well: both reasons.
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(
        &toml,
        text.replace(
            "memory = \"64M\"",
            "memory = \"64M\"\ncomponents = [\"net\"]",
        ),
    )
    .unwrap();
    let out = run(bin().arg("build").arg(&app).arg("-o").arg(&image));
    assert!(out.status.success());
    let report = stdout(&run(bin().arg("inspect").arg(&image)));
    assert!(
        report.contains(
            "    net: listed in [package.metadata.unikernel] components; the app calls socket,"
        ),
        "{report}"
    );
}

#[test]
fn bad_metadata_and_platforms() {
    let tmp = tempfile::tempdir().unwrap();
    let app = tmp.path().join("meta");
    assert!(run(bin().arg("new").arg(&app)).status.success());
    let toml = app.join("Cargo.toml");
    let text = std::fs::read_to_string(&toml).unwrap();

    std::fs::write(
        &toml,
        text.replace("memory = \"64M\"", "memory = \"64M\"\nmemroy = 1"),
    )
    .unwrap();
    let out = run(bin().arg("build").arg(&app));
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(
        e.contains("unknown field `memroy`") && e.contains(&toml.display().to_string()),
        "{e}"
    );

    std::fs::write(&toml, text.replace("memory = \"64M\"", "memory = \"64Q\"")).unwrap();
    let e = stderr(&run(bin().arg("build").arg(&app)));
    assert!(e.contains("bad memory size \"64Q\""), "{e}");

    for (line, msg) in [
        (
            "components = [\"gpu\"]",
            "[package.metadata.unikernel] components: unknown component gpu (available: fs, net)",
        ),
        (
            "disks = [{ name = \"Data\" }]",
            "[package.metadata.unikernel] disks: bad disk { name = \"Data\", mount = \"/data\" }: a disk name is 1-32 characters",
        ),
        (
            "files = [\"nothing-here/**\"]",
            "[package.metadata.unikernel] files: files pattern \"nothing-here/**\" matches nothing",
        ),
        (
            "ports = [\"8080:99999\"]",
            "[package.metadata.unikernel] ports: bad port \"8080:99999\": ports are numbers from 1 to 65535",
        ),
        (
            "net = { ip = \"10.0.0.2\" }",
            "[package.metadata.unikernel] net.ip: bad address \"10.0.0.2\": the address needs a prefix length",
        ),
        (
            "net = { ip = \"10.0.0.2/24\", netmask = \"255.255.255.0\" }",
            "[package.metadata.unikernel] net.netmask: unknown field `netmask`",
        ),
    ] {
        std::fs::write(&toml, text.replace("memory = \"64M\"", line)).unwrap();
        let out = run(bin().arg("build").arg(&app));
        assert!(!out.status.success(), "{line}");
        let e = stderr(&out);
        assert!(e.contains(msg), "{line}: {e}");
    }

    std::fs::write(&toml, &text).unwrap();
    for (platform, msg) in [
        (
            "nope",
            "unknown platform \"nope\" (available: hvt, kvm, xen)",
        ),
        ("Xen", "unknown platform \"Xen\" (available: hvt, kvm, xen)"),
    ] {
        let out = run(bin().args(["build", "--platform", platform]).arg(&app));
        assert!(!out.status.success());
        assert!(stderr(&out).contains(msg), "{platform}");
    }
}

#[test]
fn one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let e = stderr(&run(bin().args(["new", "9lives"]).current_dir(tmp.path())));
    assert!(e.starts_with("error: invalid crate name \"9lives\""), "{e}");
    std::fs::create_dir(tmp.path().join("taken")).unwrap();
    let e = stderr(&run(bin().args(["new", "taken"]).current_dir(tmp.path())));
    assert!(e.contains("already exists"), "{e}");
    let e = stderr(&run(bin().args(["inspect", "/bin/true"])));
    assert!(e.contains("/bin/true is not a unikernel image"), "{e}");
    let e = stderr(&run(bin().args(["run", "/bin/true"])));
    assert!(e.contains("/bin/true is not a unikernel image"), "{e}");
    let e = stderr(&run(bin().arg("build").arg(tmp.path().join("missing"))));
    assert!(e.contains("does not exist"), "{e}");
    let e = stderr(&run(bin().args(["build", "--manifest-path"]).arg(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../runtime/image/Cargo.toml"),
    )));
    assert!(
        e.contains("package unikernel-image has no binary target"),
        "{e}"
    );
    let e = stderr(&run(bin().args(["run", "--net", "bridge", "/bin/true"])));
    assert!(e.contains("expected `user` or `tap:IFNAME`"), "{e}");
    let e = stderr(&run(bin().args(["run", "-p", "80", "/bin/true"])));
    assert!(e.contains("expected HOST:GUEST"), "{e}");
    let e = stderr(&run(bin().args(["run", "--disk", "data", "/bin/true"])));
    assert!(e.contains("bad --disk \"data\": write NAME=FILE"), "{e}");
    let e = stderr(&run(bin().args([
        "run",
        "--ip",
        "10.0.2.15/24",
        "--gateway",
        "x",
        "/bin/true",
    ])));
    assert!(
        e.contains("--gateway \"x\": expected an IPv4 address"),
        "{e}"
    );
}
