//! Storage, booted: the files an image embeds, `/tmp`, and (with the `fs`
//! component) data volumes attached with `--disk`, checked afterwards with
//! the host's own tools (fsck.fat, mtools).

use unikernel_tests::*;

cases! {
    fn embedded_files_and_tmp(t) on [hvt, kvm, microvm, xen] {
        let o = t.boot("fs-files", &[], &[]);
        assert_eq!(o.code, 0, "stdout: {}\nstderr: {}", o.stdout, o.stderr);
        assert!(o.stdout.contains("config: greeting = \"from the image\"\n"), "{}", o.stdout);
        assert!(o.stdout.contains("static: css index.html\n"), "{}", o.stdout);
        assert!(o.stdout.contains("ok EROFS writing an embedded directory\n"), "{}", o.stdout);
        assert!(o.stdout.contains("ok ENOSPC when /tmp is full\n"), "{}", o.stdout);
        assert!(!o.stdout.contains("FAIL"), "{}", o.stdout);
        assert!(o.stdout.ends_with("fs-files done\n"), "{}", o.stdout);
    }
}

/// `inspect` names the embedded files (count and bytes).
#[test]
fn inspect_shows_embedded_files() {
    let image = image("fs-files");
    let out = std::process::Command::new(tool("cargo-unikernel"))
        .arg("inspect")
        .arg(&image)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    // config.toml (28) + index.html (18) + site.css (22) bytes.
    assert!(
        text.contains("  files       3 embedded, 68 bytes at 0x"),
        "{text}"
    );
    assert!(text.contains("  disks       (none)"), "{text}");
}
