//! `cargo unikernel disk create FILE --size 256M [--from DIR] [--force]`:
//! a formatted data volume (FAT + the fs component's journal) in a plain
//! file, made without root or loop devices by `unikernel_fs::host`.

use std::io::IsTerminal;
use std::path::Path;
use std::time::Instant;

/// Seeds at least this big show progress.
const PROGRESS_FROM: u64 = 16 << 20;

/// `"256M"`, `"1G"`, `"64MiB"` (binary units) or a number of bytes.
pub fn parse_disk_size(s: &str) -> Result<u64, String> {
    cargo_unikernel::config::parse_size_as(s, "--size")
}

/// Create the volume; the line to print on success.
pub fn create(file: &Path, size: &str, from: Option<&Path>, force: bool) -> Result<String, String> {
    let bytes = parse_disk_size(size)?;
    unikernel_fs::host::layout(bytes).map_err(|e| format!("bad --size \"{size}\": {e}"))?;
    if file.exists() && !force {
        return Err(format!(
            "{} exists; pass --force to overwrite it",
            file.display()
        ));
    }
    if file.is_dir() {
        return Err(format!("{} is a directory", file.display()));
    }
    if let Some(dir) = from {
        if !dir.is_dir() {
            return Err(format!("--from {}: not a directory", dir.display()));
        }
    }
    let fancy = std::io::stderr().is_terminal();
    let start = Instant::now();
    let mut last = 0u64;
    let mut progress = |done: u64, total: u64| {
        if total < PROGRESS_FROM {
            return;
        }
        let pct = done * 100 / total.max(1);
        if fancy {
            eprint!(
                "\rcopying {}: {pct:3}% of {} MiB",
                from.map_or(String::new(), |d| d.display().to_string()),
                total >> 20
            );
            if done == total {
                eprintln!();
            }
        } else if pct >= last + 25 || done == total {
            last = pct - pct % 25;
            eprintln!("copying the seed: {pct}% of {} MiB", total >> 20);
        }
    };
    unikernel_fs::host::create_with_progress(file, bytes, from, &mut progress)?;
    let (_, journal_blocks) = unikernel_fs::host::layout(bytes)?;
    Ok(format!(
        "created {} ({} MiB: FAT volume + {} MiB journal){} in {:.1}s; attach it with `cargo unikernel run --disk NAME={}`",
        file.display(),
        bytes >> 20,
        (u64::from(journal_blocks) * 4096) >> 20,
        from.map_or(String::new(), |d| format!(", seeded from {}", d.display())),
        start.elapsed().as_secs_f64(),
        file.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_disk_size("256M").unwrap(), 256 << 20);
        assert_eq!(parse_disk_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_disk_size("4096").unwrap(), 4096);
        assert!(parse_disk_size("12X").unwrap_err().contains("bad --size"));
        assert!(parse_disk_size("").is_err());
    }

    #[test]
    fn refuses_overwrite_and_bad_sizes() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("data.img");
        std::fs::write(&f, b"precious").unwrap();
        let e = create(&f, "8M", None, false).unwrap_err();
        assert!(e.contains("--force"), "{e}");
        assert_eq!(std::fs::read(&f).unwrap(), b"precious");
        let e = create(&f, "1M", None, true).unwrap_err();
        assert!(e.contains("too small"), "{e}");
        let msg = create(&f, "8M", None, true).unwrap();
        assert!(msg.contains("created"), "{msg}");
        assert_eq!(std::fs::metadata(&f).unwrap().len(), 8 << 20);
        let e = create(
            &d.path().join("x.img"),
            "8M",
            Some(&d.path().join("nope")),
            false,
        )
        .unwrap_err();
        assert!(e.contains("not a directory"), "{e}");
    }
}
