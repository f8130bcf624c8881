//! Volumes against the host's FAT tools: `host::create` (with a seed tree)
//! passes `fsck.fat -n` and mtools lists and prints the seeded files; a
//! file the component writes is read back by `mtype`.

mod common;
use common::*;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use unikernel_fs::host::FileDevice;
use unikernel_runtime::device::BlockDevice;
use unikernel_tests::host_tool;

fn mtool(name: &str, args: &[&str]) -> Option<String> {
    let t = tool(name)?;
    let out = host_tool(
        Command::new(t).args(args).env("MTOOLS_SKIP_CHECK", "1"),
        "the volume",
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn seed(dir: &Path) {
    std::fs::create_dir_all(dir.join("static/css")).unwrap();
    std::fs::write(dir.join("config.toml"), "port = 8080\n").unwrap();
    std::fs::write(dir.join("static/index.html"), "<h1>hello</h1>\n").unwrap();
    std::fs::write(dir.join("static/css/Site Style.css"), "body {}\n").unwrap();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(dir.join("big.bin"), big).unwrap();
}

#[test]
fn create_with_seed_checks_clean_and_mtools_read_it() {
    let d = tmpdir("seed");
    seed(&d.join("seed"));
    let img = d.join("data.img");
    let mut calls = 0;
    unikernel_fs::host::create_with_progress(
        &img,
        64 << 20,
        Some(&d.join("seed")),
        &mut |done, total| {
            assert!(done <= total);
            calls += 1;
        },
    )
    .unwrap();
    assert!(calls >= 4);
    assert_eq!(std::fs::metadata(&img).unwrap().len(), 64 << 20);
    fsck(&std::fs::read(&img).unwrap(), "a seeded volume");
    let i = img.to_str().unwrap();
    let Some(root) = mtool("mdir", &["-i", i, "-b", "::/"]) else {
        println!("SKIPPED mtools checks: mtools not installed");
        return;
    };
    assert!(root.contains("config.toml"), "{root}");
    assert!(root.contains("big.bin"), "{root}");
    let css = mtool("mdir", &["-i", i, "-b", "::/static/css"]).unwrap();
    assert!(css.contains("Site Style.css"), "{css}");
    assert_eq!(
        mtool("mtype", &["-i", i, "::/static/index.html"]).unwrap(),
        "<h1>hello</h1>\n"
    );
    let out = d.join("big.out");
    mtool("mcopy", &["-i", i, "::/big.bin", out.to_str().unwrap()]).unwrap();
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(d.join("seed/big.bin")).unwrap()
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_file_written_by_the_component_is_read_by_mtype() {
    let d = tmpdir("mtype");
    let img = d.join("data.img");
    unikernel_fs::host::create(&img, 32 << 20, None).unwrap();
    {
        let dev: Arc<dyn BlockDevice> = Arc::new(FileDevice::open(&img, false).unwrap());
        let v = unikernel_fs::open_volume(dev, true, 0, unikernel_fs::host::unix_now).unwrap();
        use unikernel_runtime::fs::vfs::Filesystem;
        v.mkdir("logs", 0o755).unwrap();
        write_file(&v, "logs/Written By Guest.txt", b"persisted line\n");
        write_file(&v, "replaced", b"old");
        write_file(&v, "replaced.new", b"new version\n");
        v.rename("replaced.new", "replaced", 0).unwrap();
        v.sync().unwrap();
    }
    fsck(&std::fs::read(&img).unwrap(), "after the component wrote");
    let i = img.to_str().unwrap();
    let Some(t) = mtool("mtype", &["-i", i, "::/logs/Written By Guest.txt"]) else {
        println!("SKIPPED mtools checks: mtools not installed");
        return;
    };
    assert_eq!(t, "persisted line\n");
    assert_eq!(
        mtool("mtype", &["-i", i, "::/replaced"]).unwrap(),
        "new version\n"
    );
    // And the other way: a file mtools put in is read by the component
    // (the journal after the FAT volume survives mtools' writes).
    let src = d.join("from-host.txt");
    std::fs::write(&src, "from mcopy\n").unwrap();
    mtool(
        "mcopy",
        &["-i", i, src.to_str().unwrap(), "::/from-host.txt"],
    )
    .unwrap();
    let dev: Arc<dyn BlockDevice> = Arc::new(FileDevice::open(&img, true).unwrap());
    let v = unikernel_fs::open_volume(dev, false, 0, unikernel_fs::host::unix_now).unwrap();
    assert_eq!(read_all(&v, "from-host.txt").unwrap(), b"from mcopy\n");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn bad_sizes_are_refused() {
    let d = tmpdir("sizes");
    let p = d.join("x.img");
    let e = unikernel_fs::host::create(&p, 1 << 20, None).unwrap_err();
    assert!(e.contains("too small"), "{e}");
    let e = unikernel_fs::host::create(&p, (8 << 20) + 3, None).unwrap_err();
    assert!(e.contains("multiple of 512"), "{e}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_reproducible_seeded_volume_inside_a_file_is_the_same_twice() {
    let d = tmpdir("repro");
    seed(&d.join("seed"));
    // Two host trees with other mtimes: the volumes still agree.
    let f = std::fs::File::open(d.join("seed/config.toml")).unwrap();
    f.set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1 << 30))
        .unwrap();
    let mut images = Vec::new();
    for n in 0..2 {
        let img = d.join(format!("disk{n}.img"));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&img)
            .unwrap();
        file.set_len((3 << 20) + (32 << 20) + (1 << 20)).unwrap();
        unikernel_fs::host::create_reproducible_at(
            &file,
            3 << 20,
            32 << 20,
            7,
            Some(&d.join("seed")),
            "the test volume",
        )
        .unwrap();
        images.push(std::fs::read(&img).unwrap());
        let f = std::fs::File::open(d.join("seed/config.toml")).unwrap();
        f.set_modified(std::time::SystemTime::now()).unwrap();
    }
    assert!(images[0] == images[1], "two volumes of one seed differ");
    let disk = &images[0];
    assert!(disk[..3 << 20].iter().all(|&b| b == 0), "before the volume");
    assert!(disk[(35 << 20)..].iter().all(|&b| b == 0), "after it");
    let vol = d.join("vol.img");
    std::fs::write(&vol, &disk[3 << 20..35 << 20]).unwrap();
    fsck(&disk[3 << 20..35 << 20], "a reproducible seeded volume");
    let dev: Arc<dyn BlockDevice> = Arc::new(FileDevice::open(&vol, true).unwrap());
    let v = unikernel_fs::open_volume(dev, false, 0, unikernel_fs::host::unix_now).unwrap();
    assert_eq!(
        read_all(&v, "static/index.html").unwrap(),
        b"<h1>hello</h1>\n"
    );
    if let Some(list) = mtool("mdir", &["-i", vol.to_str().unwrap(), "::/"]) {
        // Every entry at FAT's first moment.
        assert!(list.contains("1980-01-01"), "{list}");
    }
    // A volume that does not fit the file is refused.
    let small = std::fs::File::create(d.join("small.img")).unwrap();
    small.set_len(8 << 20).unwrap();
    let e = unikernel_fs::host::create_reproducible_at(&small, 1 << 20, 8 << 20, 7, None, "v")
        .unwrap_err();
    assert!(e.contains("do not fit"), "{e}");
    let _ = std::fs::remove_dir_all(&d);
}
