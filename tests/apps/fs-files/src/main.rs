//! Embedded files and /tmp: reads the files the image carries
//! (`files = ["static/**", "config.toml"]`), checks they are read-only,
//! and fills the 64 KiB `/tmp` (`tmp_size`) until ENOSPC. Prints one line
//! per check; exits 1 on the first surprise.
use std::fs;
use std::io::{ErrorKind, Write};

fn check(ok: bool, what: &str) {
    if ok {
        println!("ok {what}");
    } else {
        println!("FAIL {what}");
        std::process::exit(1);
    }
}

fn main() {
    let config = fs::read_to_string("/config.toml").unwrap_or_default();
    println!("config: {}", config.trim());
    check(config == "greeting = \"from the image\"\n", "config.toml read back");
    let index = fs::read_to_string("/static/index.html").unwrap_or_default();
    check(index == "<h1>embedded</h1>\n", "static/index.html read back");
    let css = fs::read("/static/css/site.css").unwrap_or_default();
    check(css.len() == 22, "static/css/site.css length");
    let mut names: Vec<String> = fs::read_dir("/static")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    println!("static: {}", names.join(" "));
    check(names == ["css", "index.html"], "read_dir /static");
    let md = fs::metadata("/static/index.html");
    check(
        md.as_ref().is_ok_and(|m| m.is_file() && m.len() == 18 && m.permissions().readonly()),
        "metadata: a read-only file of 18 bytes",
    );
    check(fs::metadata("/static").is_ok_and(|m| m.is_dir()), "/static is a directory");
    let e = fs::write("/static/new.txt", b"x").unwrap_err();
    println!("write under /static: {e}");
    check(e.raw_os_error() == Some(30), "EROFS writing an embedded directory");
    let e = fs::OpenOptions::new().write(true).open("/config.toml").unwrap_err();
    check(e.raw_os_error() == Some(30), "EROFS opening an embedded file for writing");

    // /tmp: writable, limited to tmp_size.
    fs::write("/tmp/hello", b"scratch").unwrap();
    check(fs::read("/tmp/hello").unwrap() == b"scratch", "/tmp write and read back");
    let mut f = fs::File::create("/tmp/fill").unwrap();
    let chunk = [7u8; 4096];
    let mut written = 0usize;
    let err = loop {
        match f.write(&chunk) {
            Ok(n) => written += n,
            Err(e) => break e,
        }
        if written > 1 << 20 {
            check(false, "/tmp stops at its size limit");
        }
    };
    println!("/tmp filled with {written} bytes: {err}");
    check(err.raw_os_error() == Some(28), "ENOSPC when /tmp is full");
    drop(f);
    fs::remove_file("/tmp/fill").unwrap();
    check(fs::write("/tmp/again", vec![1u8; 32 << 10]).is_ok(), "space comes back after unlink");
    check(fs::metadata("/tmp/fill").map_err(|e| e.kind()).err() == Some(ErrorKind::NotFound), "unlinked file is gone");
    println!("fs-files done");
}
