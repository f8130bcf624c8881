//! Reproducible images (docs/ci.md): the same sources, checked out at two
//! different paths and built one after the other, each with its own target
//! directory and kernel build, give identical image and debug-file bytes,
//! and none of the files names either checkout. No boot needed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use unikernel_tests::*;

/// A generated source file (from `OUT_DIR`, so the target directory's path
/// reaches the debug info and panic locations unless it is remapped).
const BUILD_RS: &str = r#"
fn main() {
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").unwrap());
    std::fs::write(
        out.join("generated.rs"),
        "pub fn pick(v: &[u32], i: usize) -> u32 { *v.get(i).expect(\"index in range\") }\n",
    )
    .unwrap();
}
"#;

const MAIN_RS: &str = r#"
mod generated {
    include!(concat!(env!("OUT_DIR"), "/generated.rs"));
}

fn main() {
    let n = std::env::args().count();
    println!("picked {}", generated::pick(&[1, 2, 3], n - 1));
}
"#;

/// `cargo unikernel new NAME` in `parent`, then the build script and main.
fn new_app(parent: &Path) -> PathBuf {
    std::fs::create_dir_all(parent).unwrap();
    let mut cmd = Command::new(tool("cargo-unikernel"));
    cmd.current_dir(parent).args(["new", "repro"]);
    let o = run_with_deadline(cmd, b"", Duration::from_secs(60));
    assert_eq!(o.code, 0, "cargo unikernel new: {}", o.stderr);
    let app = parent.join("repro");
    std::fs::write(app.join("build.rs"), BUILD_RS).unwrap();
    std::fs::write(app.join("src/main.rs"), MAIN_RS).unwrap();
    app
}

fn build(app: &Path) -> PathBuf {
    let mut cmd = Command::new(tool("cargo-unikernel"));
    cmd.current_dir(app)
        .args(["build", "--platform", "hvt"])
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    let o = run_with_deadline(cmd, b"", Duration::from_secs(900));
    assert_eq!(o.code, 0, "build in {}: {}", app.display(), o.stderr);
    app.join("target/unikernel/hvt/repro")
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn two_checkouts_build_identical_images() {
    // Outside the repository (whose workspace would claim the apps).
    let base = std::env::temp_dir().join(format!("unikernel-repro-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    // Different names and depths, so no remapping can match by accident.
    let a = new_app(&base.join("first"));
    let b = new_app(&base.join("second/nested/deeper"));
    let img_a = build(&a);
    let img_b = build(&b);
    for suffix in ["", ".app.debug", ".kernel.debug"] {
        let pa = PathBuf::from(format!("{}{suffix}", img_a.display()));
        let pb = PathBuf::from(format!("{}{suffix}", img_b.display()));
        let (da, db) = (std::fs::read(&pa).unwrap(), std::fs::read(&pb).unwrap());
        assert!(!da.is_empty());
        if da != db {
            let at = da.iter().zip(&db).position(|(x, y)| x != y);
            panic!(
                "{} and {} differ ({} and {} bytes, first difference at {:?})",
                pa.display(),
                pb.display(),
                da.len(),
                db.len(),
                at
            );
        }
        for dir in [&a, &b, &root()] {
            let needle = dir.to_str().unwrap().as_bytes();
            assert!(
                !contains(&da, needle),
                "{} names {}",
                pa.display(),
                dir.display()
            );
        }
    }
    // The same bytes also boot (and the generated code ran).
    if kvm_available("two_checkouts_build_identical_images") {
        let mut cmd = Command::new(tool("cargo-unikernel"));
        cmd.arg("run").arg(&img_a).args(["--", "x"]);
        let o = run_with_deadline(cmd, b"", Duration::from_secs(60));
        assert_eq!(o.code, 0, "{}", o.stderr);
        assert!(o.stdout.contains("picked 2"), "{}", o.stdout);
    }
    let _ = std::fs::remove_dir_all(&base);
}
