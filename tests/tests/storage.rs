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

/// A fresh volume made by `cargo unikernel disk create` (no root, no loop
/// devices), unique per test and target.
fn new_volume(name: &str, size: &str, seed: Option<&std::path::Path>) -> std::path::PathBuf {
    let path =
        std::env::temp_dir().join(format!("unikernel-test-{}-{name}.img", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let mut cmd = std::process::Command::new(tool("cargo-unikernel"));
    cmd.args(["disk", "create"])
        .arg(&path)
        .args(["--size", size]);
    if let Some(s) = seed {
        cmd.arg("--from").arg(s);
    }
    let o = run_with_deadline(cmd, b"", std::time::Duration::from_secs(120));
    assert_eq!(o.code, 0, "disk create failed:\n{}\n{}", o.stdout, o.stderr);
    path
}

/// `fsck.fat -n` (check only, change nothing) says the volume is clean.
fn assert_fsck_clean(img: &std::path::Path) {
    let o = std::process::Command::new("fsck.fat")
        .arg("-n")
        .arg(img)
        .output()
        .expect("run fsck.fat (Debian's dosfstools)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "fsck.fat -n {}:\n{text}", img.display());
}

/// A file's bytes as mtools reads them from the volume.
fn mtype(img: &std::path::Path, path: &str) -> Vec<u8> {
    let o = std::process::Command::new("mtype")
        .arg("-i")
        .arg(img)
        .arg(format!("::{path}"))
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .expect("run mtype (Debian's mtools)");
    assert!(
        o.status.success(),
        "mtype {path}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

fn disk_opt(img: &std::path::Path) -> String {
    format!("data={}", img.display())
}

cases! {
    /// The std::fs tour writes in one boot and verifies in a second boot of
    /// the same volume; the host's tools then find it clean and read the
    /// files.
    fn disk_tour_survives_a_reboot(t) on [hvt, kvm, microvm, xen] {
        let img = new_volume(&format!("tour-{t:?}"), "64M", None);
        let d = disk_opt(&img);
        let o = t.boot("fs-disk", &["--disk", &d], &["write", "/data"]);
        assert_eq!(o.code, 0, "write boot:\n{}\n{}", o.stdout, o.stderr);
        assert!(!o.stdout.contains("FAIL"), "{}", o.stdout);
        let o = t.boot("fs-disk", &["--disk", &d], &["verify", "/data"]);
        assert_eq!(o.code, 0, "verify boot:\n{}\n{}", o.stdout, o.stderr);
        assert!(o.stdout.contains("checks passed"), "{}", o.stdout);
        assert_fsck_clean(&img);
        let o = t.boot("fs-disk", &["--disk", &d], &["ls", "/data"]);
        assert!(o.stdout.lines().any(|l| l == "tour"), "{}", o.stdout);
        let _ = std::fs::remove_file(&img);
    }

    /// An image that declares a disk refuses to start without it, naming it.
    fn missing_disk_is_refused(t) on [hvt, kvm] {
        let o = t.boot("fs-disk", &[], &["ls", "/data"]);
        assert_eq!(o.code, 125, "{}\n{}", o.stdout, o.stderr);
        assert!(
            o.stderr.contains("image declares disk \"data\" but no --disk data=FILE was given"),
            "{}",
            o.stderr
        );
        assert_eq!(o.stdout, "");
    }

    /// A file that is not a volume of ours stops the boot before the app,
    /// with one line and exit code 252.
    fn foreign_disk_is_refused(t) on [hvt, microvm] {
        let img = std::env::temp_dir().join(format!(
            "unikernel-test-{}-zeros-{t:?}.img",
            std::process::id()
        ));
        std::fs::write(&img, vec![0u8; 8 << 20]).unwrap();
        let d = disk_opt(&img);
        let o = t.boot("fs-disk", &["--disk", &d], &["ls", "/data"]);
        assert_eq!(o.code, 252, "{}\n{}", o.stdout, o.stderr);
        assert!(o.stderr.contains("unikernel: disk \"data\":"), "{}", o.stderr);
        let _ = std::fs::remove_file(&img);
    }

    /// A file the user cannot write is mounted read-only: reads work, writes
    /// give EROFS, and the file is unchanged.
    fn read_only_file_mounts_read_only(t) on [hvt, microvm] {
        let seed = tempfile_dir(&format!("seed-{t:?}"));
        std::fs::write(seed.join("hello.txt"), b"seeded\n").unwrap();
        let img = new_volume(&format!("ro-{t:?}"), "32M", Some(&seed));
        let before = std::fs::read(&img).unwrap();
        set_read_only(&img);
        let d = disk_opt(&img);
        let o = t.boot("fs-disk", &["--disk", &d], &["ls", "/data"]);
        assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
        assert!(o.stdout.lines().any(|l| l == "hello.txt"), "{}", o.stdout);
        let o = t.boot("fs-disk", &["--disk", &d], &["write", "/data"]);
        assert!(o.stdout.contains("Read-only file system") || o.stdout.contains("os error 30"), "{}\n{}", o.stdout, o.stderr);
        assert_ne!(o.code, 0);
        assert!(std::fs::read(&img).unwrap() == before, "the read-only volume changed");
        let _ = std::fs::remove_file(&img);
    }

    /// A full volume gives ENOSPC and stays consistent.
    fn full_volume_gives_enospc(t) on [hvt] {
        let img = new_volume(&format!("full-{t:?}"), "8M", None);
        let d = disk_opt(&img);
        let o = t.boot("fs-disk", &["--disk", &d], &["fill", "/data"]);
        assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
        assert!(!o.stdout.contains("FAIL"), "{}", o.stdout);
        assert_fsck_clean(&img);
        let _ = std::fs::remove_file(&img);
    }

    /// `disk create --from DIR` seeds the volume; the guest reads the seed,
    /// and what the guest writes, mtools reads back on the host.
    fn seeded_volume_and_host_readback(t) on [hvt, microvm] {
        let seed = tempfile_dir(&format!("seed2-{t:?}"));
        std::fs::create_dir_all(seed.join("conf")).unwrap();
        std::fs::write(seed.join("conf/app.toml"), b"answer = 42\n").unwrap();
        let img = new_volume(&format!("seed-{t:?}"), "32M", Some(&seed));
        let d = disk_opt(&img);
        let o = t.boot("fs-disk", &["--disk", &d], &["ls", "/data/conf"]);
        assert_eq!(o.stdout.lines().next(), Some("app.toml"), "{}", o.stderr);
        let o = t.boot("fs-disk", &["--disk", &d], &["write", "/data"]);
        assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
        assert_fsck_clean(&img);
        assert_eq!(mtype(&img, "/conf/app.toml"), b"answer = 42\n");
        let _ = std::fs::remove_file(&img);
    }
}

fn tempfile_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("unikernel-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn set_read_only(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o444)).unwrap();
}

/// The last `ack N` a crash-test run printed (0: none).
fn last_ack(stdout: &str) -> u64 {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("ack ")?.trim().parse().ok())
        .max()
        .unwrap_or(0)
}

/// The crash test: `fs-crash write` appends numbered, checksummed records
/// and fsyncs each, printing `ack N`; the monitor is killed (SIGKILL) at
/// random moments (some during boot, mount or journal replay, most while
/// records are written). After each kill, a second boot must find every
/// acknowledged record, intact, and the volume must check clean with
/// `fsck.fat -n`. `UNIKERNEL_CRASH_KILLS` sets the number of kills
/// (default 20; the storage benchmark runs 100).
#[test]
fn acknowledged_records_survive_kills() {
    if !kvm_available("acknowledged_records_survive_kills") {
        return;
    }
    let kills: u64 = std::env::var("UNIKERNEL_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let img = new_volume("crash", "32M", None);
    let app = image("fs-crash");
    let d = disk_opt(&img);
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("crash test: seed {seed:#x}");
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut acked = 0u64;
    for i in 0..kills {
        let mut cmd = std::process::Command::new(tool("unikernel-hvt"));
        cmd.args(["--disk", &d]).arg(&app).args(["--", "write"]);
        let mut g = unikernel_tests::netns::Guest::spawn(cmd);
        let early = i % 5 == 4;
        if early {
            // Somewhere in boot, mount, replay or the first records.
            std::thread::sleep(std::time::Duration::from_millis(rand(150)));
        } else {
            assert!(
                g.wait_for("ack ", std::time::Duration::from_secs(60)),
                "kill {i}: no record acknowledged:\n{}\n{}",
                g.stdout(),
                g.stderr()
            );
            std::thread::sleep(std::time::Duration::from_millis(rand(400)));
        }
        let o = g.kill();
        let run_acked = last_ack(&o.stdout);
        assert!(
            !o.stdout.contains("corrupt") && !o.stderr.contains("unikernel: disk"),
            "kill {i}: the writer failed:\n{}\n{}",
            o.stdout,
            o.stderr
        );
        acked = acked.max(run_acked);
        let v = boot(&app, &["--disk", &d], &["verify"]);
        assert_eq!(
            v.code, 0,
            "kill {i}: verify failed:\n{}\n{}",
            v.stdout, v.stderr
        );
        let found: u64 = v
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("records ")?.trim().parse().ok())
            .unwrap_or_else(|| panic!("kill {i}: no records line:\n{}", v.stdout));
        assert!(
            found >= acked,
            "kill {i}: {acked} records were acknowledged but only {found} survived"
        );
        assert_fsck_clean(&img);
        println!(
            "kill {i}{}: {run_acked} acknowledged by then, {found} records present",
            if early { " (early)" } else { "" }
        );
        acked = found;
    }
    println!("crash test: {kills} kills, {acked} records acknowledged and present, volume clean after each");
    let _ = std::fs::remove_file(&img);
}

/// SQLite (rusqlite, bundled C code built by musl-gcc) in WAL and in
/// DELETE journal mode, killed mid-way while committing transactions of 100
/// rows: after each kill `PRAGMA integrity_check` is `ok`, every
/// transaction whose commit returned is there and whole, and the volume
/// checks clean.
#[test]
fn sqlite_survives_kills_in_wal_and_delete_mode() {
    if !kvm_available("sqlite_survives_kills_in_wal_and_delete_mode") {
        return;
    }
    let app = image("fs-sqlite");
    for mode in ["wal", "delete"] {
        let img = new_volume(&format!("sqlite-{mode}"), "64M", None);
        let d = disk_opt(&img);
        let db = format!("/data/{mode}.db");
        let mut committed: i64 = -1;
        for i in 0..5u64 {
            let mut cmd = std::process::Command::new(tool("unikernel-hvt"));
            cmd.args(["--disk", &d])
                .arg(&app)
                .args(["--", "run", mode, &db, "0"]);
            let mut g = unikernel_tests::netns::Guest::spawn(cmd);
            assert!(
                g.wait_for("commit ", std::time::Duration::from_secs(60)),
                "{mode} kill {i}: nothing committed:\n{}\n{}",
                g.stdout(),
                g.stderr()
            );
            std::thread::sleep(std::time::Duration::from_millis(50 + 97 * i));
            let o = g.kill();
            assert!(!o.stdout.contains("FAIL"), "{mode} kill {i}:\n{}", o.stdout);
            let last: i64 = o
                .stdout
                .lines()
                .filter_map(|l| l.strip_prefix("commit ")?.trim().parse().ok())
                .max()
                .unwrap_or(-1);
            committed = committed.max(last);
            let c = boot(&app, &["--disk", &d], &["check", mode, &db]);
            assert_eq!(
                c.code, 0,
                "{mode} kill {i}: check failed:\n{}\n{}",
                c.stdout, c.stderr
            );
            assert!(c.stdout.contains("integrity ok\n"), "{}", c.stdout);
            let txns: i64 = c
                .stdout
                .lines()
                .find_map(|l| l.strip_prefix("txns ")?.trim().parse().ok())
                .unwrap_or(0);
            assert!(
                txns > committed,
                "{mode} kill {i}: transaction {committed} was committed but only {txns} transactions survived"
            );
            assert_fsck_clean(&img);
            println!("sqlite {mode} kill {i}: last commit {last}, {txns} transactions present");
            committed = txns - 1;
        }
        let _ = std::fs::remove_file(&img);
    }
}

/// redb (pure Rust, its own page cache, `fsync` on commit) on the data
/// volume: transactions committed in one boot are there, whole, in the
/// next, also after a kill in the middle of committing.
#[test]
fn redb_commits_survive_a_reboot_and_a_kill() {
    if !kvm_available("redb_commits_survive_a_reboot_and_a_kill") {
        return;
    }
    let app = image("fs-redb");
    let img = new_volume("redb", "64M", None);
    let d = disk_opt(&img);
    let o = boot(&app, &["--disk", &d], &["write", "/data/db.redb", "20"]);
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("commit 19\n"), "{}", o.stdout);
    let mut cmd = std::process::Command::new(tool("unikernel-hvt"));
    cmd.args(["--disk", &d])
        .arg(&app)
        .args(["--", "write", "/data/db.redb", "0"]);
    let mut g = unikernel_tests::netns::Guest::spawn(cmd);
    assert!(
        g.wait_for("commit 25", std::time::Duration::from_secs(60)),
        "{}\n{}",
        g.stdout(),
        g.stderr()
    );
    std::thread::sleep(std::time::Duration::from_millis(150));
    let o = g.kill();
    let last: u64 = o
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("commit ")?.trim().parse().ok())
        .max()
        .unwrap_or(0);
    let c = boot(&app, &["--disk", &d], &["check", "/data/db.redb"]);
    assert_eq!(c.code, 0, "{}\n{}", c.stdout, c.stderr);
    let txns: u64 = c
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("txns ")?.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        txns > last,
        "commit {last} returned but only {txns} transactions survived"
    );
    assert_fsck_clean(&img);
    let _ = std::fs::remove_file(&img);
}
