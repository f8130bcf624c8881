//! `--message-format json` and `inspect --json` (docs/ci.md): what a CI
//! pipeline reads. Builds tests/apps/hello-min into a scratch image; no
//! boot needed.

use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use unikernel_tests::*;

fn scratch(name: &str) -> PathBuf {
    let d = root().join("target/messages-tests");
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

/// Every stdout line parsed as JSON (a line that is not fails the test).
fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}")))
        .collect()
}

fn reason(v: &Value) -> &str {
    v["reason"].as_str().unwrap_or("")
}

#[test]
fn build_json_messages_name_the_image() {
    let out = scratch("hello-min.hvt");
    let mut cmd = Command::new(tool("cargo-unikernel"));
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(root().join("tests/apps/hello-min/Cargo.toml"))
        .arg("-o")
        .arg(&out)
        .args(["--message-format", "json"]);
    let o = run_with_deadline(cmd, b"", std::time::Duration::from_secs(900));
    assert_eq!(o.code, 0, "{}", o.stderr);
    let msgs = json_lines(&o.stdout);
    // Cargo's own messages come first, passed through.
    assert!(
        msgs.iter().any(|m| reason(m) == "compiler-artifact"),
        "{}",
        o.stdout
    );
    assert!(
        msgs.iter().any(|m| reason(m) == "build-finished"),
        "{}",
        o.stdout
    );
    let images: Vec<&Value> = msgs
        .iter()
        .filter(|m| reason(m) == "unikernel-image")
        .collect();
    assert_eq!(images.len(), 1, "{}", o.stdout);
    let img = images[0];
    assert_eq!(img["path"].as_str(), Some(out.to_str().unwrap()));
    assert_eq!(img["platform"], "hvt");
    assert_eq!(img["name"], "hello-min");
    let size = std::fs::metadata(&out).unwrap().len();
    assert_eq!(img["size"].as_u64(), Some(size));
    let (k, a) = (
        img["kernel_bytes"].as_u64().unwrap(),
        img["app_bytes"].as_u64().unwrap(),
    );
    assert!(k > 0 && a > 0 && k + a <= size, "{img}");
    assert_eq!(
        img["components"],
        serde_json::json!([]),
        "hello-min has no components"
    );
    let id = img["build_id"].as_str().unwrap();
    assert!(
        id.len() == 40 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    for which in ["app", "kernel"] {
        let p = img["debug"][which].as_str().unwrap();
        assert!(std::path::Path::new(p).exists(), "{p}");
    }
    assert_eq!(msgs.last().map(reason), Some("unikernel-finished"));
    assert_eq!(msgs.last().unwrap()["success"], true);
    // People read stderr: the summary is there.
    assert!(
        o.stderr.contains("kernel ") && o.stderr.contains(out.to_str().unwrap()),
        "{}",
        o.stderr
    );

    // inspect --json says the same about the file.
    let i = Command::new(tool("cargo-unikernel"))
        .args(["inspect", "--json"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(i.status.success());
    let v: Value = serde_json::from_slice(&i.stdout).unwrap();
    assert_eq!(v["build_id"], img["build_id"]);
    assert_eq!(v["platform"], "hvt");
    assert_eq!(v["sizes"]["file"].as_u64(), Some(size));
    assert_eq!(v["sizes"]["kernel"], img["kernel_bytes"]);
    assert_eq!(v["sizes"]["app"], img["app_bytes"]);
    assert!(
        v["segments"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["owner"] == "kernel")
                && s.iter().any(|s| s["owner"] == "app")),
        "{v}"
    );
}

#[test]
fn a_failed_build_ends_with_an_unsuccessful_message() {
    let mut cmd = Command::new(tool("cargo-unikernel"));
    cmd.args(["build", "--message-format", "json"])
        .arg(scratch("no-such-crate"));
    let o = run_with_deadline(cmd, b"", std::time::Duration::from_secs(60));
    assert_eq!(o.code, 1);
    let msgs = json_lines(&o.stdout);
    assert_eq!(msgs.len(), 1, "{}", o.stdout);
    assert_eq!(reason(&msgs[0]), "unikernel-finished");
    assert_eq!(msgs[0]["success"], false);
    assert!(
        msgs[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("does not exist")),
        "{}",
        o.stdout
    );
    assert!(o.stderr.starts_with("error: "), "{}", o.stderr);
}

#[test]
fn inspect_json_refuses_what_is_not_an_image() {
    let f = scratch("not-an-image");
    std::fs::write(&f, b"plain text").unwrap();
    let o = Command::new(tool("cargo-unikernel"))
        .args(["inspect", "--json"])
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty());
    assert!(String::from_utf8_lossy(&o.stderr).contains("is not a unikernel image"));
}
