//! Images as OCI artifacts (docs/deploy.md): `cargo unikernel push` to an
//! OCI image layout and to a real registry on loopback (Debian's
//! `docker-registry`, started by the test), `pull` back, cross-checked
//! with Debian's `skopeo`; the pulled image boots.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use unikernel_tests::netns::have;
use unikernel_tests::*;

fn cu(args: &[&str]) -> Outcome {
    let mut cmd = Command::new(tool("cargo-unikernel"));
    cmd.args(args);
    run_with_deadline(cmd, b"", Duration::from_secs(300))
}

fn tmp(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("unikernel-oci-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    p
}

/// `push`'s output: (digest, destination) per line.
fn pushed(o: &Outcome) -> Vec<(String, String)> {
    assert_eq!(o.code, 0, "push failed: {}{}", o.stdout, o.stderr);
    o.stdout
        .lines()
        .map(|l| {
            let (d, w) = l.split_once(' ').expect("DIGEST WHERE");
            (d.to_string(), w.to_string())
        })
        .collect()
}

fn skopeo_inspect(what: &str) -> serde_json::Value {
    let o = host_tool(
        Command::new("skopeo").args(["inspect", "--tls-verify=false", what]),
        &format!("inspecting {what}"),
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

fn same_file(a: &Path, b: &Path) {
    assert!(
        std::fs::read(a).unwrap() == std::fs::read(b).unwrap(),
        "{} and {} differ",
        a.display(),
        b.display()
    );
}

#[test]
fn push_to_a_layout_then_pull_and_boot() {
    if !qemu_available("push_to_a_layout_then_pull_and_boot") {
        return;
    }
    if !have("skopeo") {
        eprintln!("SKIPPED: push_to_a_layout_then_pull_and_boot: skopeo is not installed (.ci/run installs it)");
        return;
    }
    let img = Target::Kvm.image("hello-min");
    let (a, b) = (tmp("layout-a"), tmp("layout-b"));
    let dest_a = format!("oci:{}:1.0", a.display());
    let first = pushed(&cu(&["push", img.to_str().unwrap(), &dest_a]));
    let second = pushed(&cu(&[
        "push",
        img.to_str().unwrap(),
        &format!("oci:{}:1.0", b.display()),
    ]));
    // The image and its debug artifact, the same digests on both pushes.
    assert_eq!(first.len(), 2, "{first:?}");
    assert_eq!(first[0].0, second[0].0, "image digests of two pushes");
    assert_eq!(first[1].0, second[1].0, "debug digests of two pushes");
    assert!(first[1].1.contains(":debug-"), "{first:?}");
    same_file(&a.join("index.json"), &b.join("index.json"));

    // skopeo reads the layout: the digest, the platform, urunc's labels.
    let v = skopeo_inspect(&dest_a);
    assert_eq!(v["Digest"], first[0].0.as_str(), "{v}");
    assert_eq!(v["Architecture"], "amd64");
    assert_eq!(
        v["Labels"]["com.urunc.unikernel.binary"],
        "/unikernel/hello-min"
    );
    assert_eq!(v["Labels"]["com.urunc.unikernel.hypervisor"], "qemu");
    assert_eq!(v["Labels"]["dev.cargo-unikernel.platform"], "kvm");
    assert_eq!(v["Layers"].as_array().map(Vec::len), Some(1), "{v}");

    // Pulled back: the same bytes, the debug files beside it, and it boots.
    let out = tmp("pulled");
    let o = cu(&["pull", &dest_a, "-o", out.to_str().unwrap(), "--debug"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    same_file(&out, &img);
    let debug = |p: &Path, w: &str| PathBuf::from(format!("{}.{w}.debug", p.display()));
    same_file(&debug(&out, "app"), &debug(&img, "app"));
    same_file(&debug(&out, "kernel"), &debug(&img, "kernel"));
    let boot = Target::Kvm.boot_image(&out, &[], &[], b"");
    assert_eq!(boot.code, 0, "{}{}", boot.stdout, boot.stderr);
    assert!(
        boot.stdout.contains("hello from hello-min"),
        "{}",
        boot.stdout
    );

    // Bad input: a tag the layout lacks, a file that is no image.
    let o = cu(&[
        "pull",
        &format!("oci:{}:nope", a.display()),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_ne!(o.code, 0);
    assert!(
        o.stderr.contains("has no manifest tagged \"nope\""),
        "{}",
        o.stderr
    );
    let junk = tmp("junk");
    std::fs::write(&junk, b"not an image").unwrap();
    let o = cu(&["push", junk.to_str().unwrap(), &dest_a]);
    assert_ne!(o.code, 0);
    assert!(
        o.stderr.contains("is not a unikernel image"),
        "{}",
        o.stderr
    );
    let o = cu(&["push", img.to_str().unwrap(), "app"]);
    assert_ne!(o.code, 0);
    assert!(
        o.stderr
            .contains("neither oci:DIR[:TAG] nor a registry reference"),
        "{}",
        o.stderr
    );
}

/// A `docker-registry` on a free loopback port, stopped on drop.
struct Registry {
    child: Child,
    port: u16,
}

impl Registry {
    fn start() -> Registry {
        Registry::start_with("registry", "")
    }

    /// A registry in the temporary directory `name`, `extra` appended to
    /// its config.
    fn start_with(name: &str, extra: &str) -> Registry {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tmp(name);
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n{extra}",
                dir.join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker-registry");
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "docker-registry did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry { child, port }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn push_to_a_registry_then_pull_cross_checked_by_skopeo() {
    let test = "push_to_a_registry_then_pull_cross_checked_by_skopeo";
    if !qemu_available(test) {
        return;
    }
    if !(have("skopeo") && Path::new("/usr/bin/docker-registry").exists()) {
        eprintln!("SKIPPED: {test}: skopeo and docker-registry are needed (.ci/run installs them)");
        return;
    }
    let img = Target::Kvm.image("hello-min");
    let reg = Registry::start();
    let r = format!("127.0.0.1:{}/hello:1.0", reg.port);
    let first = pushed(&cu(&["push", img.to_str().unwrap(), &r]));
    let second = pushed(&cu(&["push", img.to_str().unwrap(), &r]));
    assert_eq!(first, second, "two pushes of one image");
    assert_eq!(first[0].1, r);

    // skopeo sees the same manifest digest and the labels.
    let v = skopeo_inspect(&format!("docker://{r}"));
    assert_eq!(v["Digest"], first[0].0.as_str(), "{v}");
    assert_eq!(v["Labels"]["dev.cargo-unikernel.name"], "hello-min");

    // Pulled back, with the debug files.
    let out = tmp("from-registry");
    let o = cu(&["pull", &r, "-o", out.to_str().unwrap(), "--debug"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    same_file(&out, &img);
    same_file(
        &PathBuf::from(format!("{}.app.debug", out.display())),
        &PathBuf::from(format!("{}.app.debug", img.display())),
    );

    // skopeo copies it into a layout without changing a digest, and that
    // layout pulls to the same image.
    let lay = tmp("skopeo-layout");
    host_tool(
        Command::new("skopeo")
            .args(["copy", "--preserve-digests", "--src-tls-verify=false"])
            .arg(format!("docker://{r}"))
            .arg(format!("oci:{}:copied", lay.display())),
        "copying the pushed image into a layout",
    );
    let out2 = tmp("from-skopeo");
    let o = cu(&[
        "pull",
        &format!("oci:{}:copied", lay.display()),
        "-o",
        out2.to_str().unwrap(),
    ]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    same_file(&out2, &img);

    // A tag that is not there: a clear error.
    let o = cu(&[
        "pull",
        &format!("127.0.0.1:{}/hello:2.0", reg.port),
        "-o",
        out2.to_str().unwrap(),
    ]);
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("pulling the manifest"), "{}", o.stderr);
}

/// A home directory whose `.docker/config.json` holds `user:password`
/// for `registry` (none: no config at all).
fn docker_home(name: &str, registry: &str, creds: Option<&str>) -> PathBuf {
    let home = tmp(name);
    std::fs::create_dir_all(home.join(".docker")).unwrap();
    if let Some(c) = creds {
        let out = Command::new("base64")
            .arg("-w0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write as _;
                child.stdin.take().unwrap().write_all(c.as_bytes())?;
                child.wait_with_output()
            })
            .unwrap();
        let auth = String::from_utf8(out.stdout).unwrap();
        std::fs::write(
            home.join(".docker/config.json"),
            format!(r#"{{"auths":{{"{registry}":{{"auth":"{auth}"}}}}}}"#),
        )
        .unwrap();
    }
    home
}

/// `cargo unikernel ARGS` with HOME at `home` (and no DOCKER_CONFIG).
fn cu_home(home: &Path, args: &[&str]) -> Outcome {
    let mut cmd = Command::new(tool("cargo-unikernel"));
    cmd.args(args).env("HOME", home).env_remove("DOCKER_CONFIG");
    run_with_deadline(cmd, b"", Duration::from_secs(300))
}

#[test]
fn push_and_pull_with_basic_auth() {
    let test = "push_and_pull_with_basic_auth";
    if !(have("htpasswd") && Path::new("/usr/bin/docker-registry").exists()) {
        eprintln!(
            "SKIPPED: {test}: htpasswd (apache2-utils) and docker-registry are needed (.ci/run installs them)"
        );
        return;
    }
    let img = Target::Kvm.image("hello-min");
    // htpasswd -B: bcrypt, the one format docker-registry takes. Plain
    // HTTP on loopback: the registry serves Basic auth without TLS.
    let dir = tmp("auth");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("htpasswd");
    host_tool(
        Command::new("htpasswd")
            .args(["-Bbc"])
            .arg(&file)
            .args(["alice", "s3cret"]),
        "the registry's password file",
    );
    let reg = Registry::start_with(
        "registry-auth",
        &format!(
            "auth:\n  htpasswd:\n    realm: unikernel-test\n    path: {}\n",
            file.display()
        ),
    );
    let host = format!("127.0.0.1:{}", reg.port);
    let r = format!("{host}/hello:1.0");
    let good = docker_home("home-good", &host, Some("alice:s3cret"));
    let wrong = docker_home("home-wrong", &host, Some("alice:nope"));
    let none = docker_home("home-none", &host, None);

    // No credentials, then wrong ones: refused, saying why.
    for (home, why, detail) in [
        (&none, "authentication required", "refused anonymous access"),
        (
            &wrong,
            "authentication failed",
            "credentials of user \"alice\"",
        ),
    ] {
        let o = cu_home(home, &["push", img.to_str().unwrap(), &r]);
        assert_ne!(o.code, 0, "{}", o.stdout);
        assert!(
            o.stderr.contains(why) && o.stderr.contains(detail),
            "{}",
            o.stderr
        );
    }

    // The right ones: pushed, and pulled back byte for byte.
    let first = pushed(&cu_home(&good, &["push", img.to_str().unwrap(), &r]));
    assert_eq!(first[0].1, r);
    let out = tmp("from-auth-registry");
    let o = cu_home(&good, &["pull", &r, "-o", out.to_str().unwrap()]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    same_file(&out, &img);

    // Pulling needs them too.
    let o = cu_home(&none, &["pull", &r, "-o", out.to_str().unwrap()]);
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("authentication required"), "{}", o.stderr);
    let o = cu_home(&wrong, &["pull", &r, "-o", out.to_str().unwrap()]);
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("authentication failed"), "{}", o.stderr);
    drop(reg);
    for d in [dir, good, wrong, none, tmp("registry-auth")] {
        let _ = std::fs::remove_dir_all(d);
    }
    let _ = std::fs::remove_file(out);
}
