//! `--disk NAME=FILE`: parsing the flag, matching it against the disks the
//! image declares, and opening the files.
//!
//! A file is opened read-write, or read-only when the user cannot write it:
//! no write permission bit is set (`chmod a-w`, which also holds for root),
//! or opening it for writing is refused (`EACCES`, `EPERM`, `EROFS`). Its
//! size must be a non-zero multiple of the 512-byte sector. The monitor
//! takes an advisory lock on it (`flock`: exclusive for read-write, shared
//! for read-only) so that two guests never write one disk at once.
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::PathBuf;
use std::str::FromStr;

use hvt_abi::block::SECTOR_SIZE;
use unikernel_image::disks::{check_name, DiskDecl, MAX_DISKS};

/// One `--disk NAME=FILE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskArg {
    pub name: String,
    pub path: PathBuf,
}

impl FromStr for DiskArg {
    type Err = String;
    fn from_str(s: &str) -> Result<DiskArg, String> {
        let Some((name, file)) = s.split_once('=') else {
            return Err(format!("--disk {s:?}: expected NAME=FILE"));
        };
        check_name(name).map_err(|e| format!("--disk {s:?}: {e}"))?;
        if file.is_empty() {
            return Err(format!("--disk {s:?}: the file name is empty"));
        }
        Ok(DiskArg {
            name: name.to_string(),
            path: PathBuf::from(file),
        })
    }
}

impl std::fmt::Display for DiskArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.name, self.path.display())
    }
}

/// An opened disk.
#[derive(Debug)]
pub struct Disk {
    pub name: String,
    pub file: File,
    pub sectors: u64,
    pub read_only: bool,
}

/// Checks the `--disk` list against the image's declared disks
/// (`NAME=MOUNT` each): every declared disk needs a `--disk`, every
/// `--disk` a declared name, no name twice. The disks keep `--disk` order.
pub fn check_against_manifest(args: &[DiskArg], declared: &[String]) -> Result<(), String> {
    let names: Vec<&str> = declared
        .iter()
        .map(|d| DiskDecl::parse(d).map_or(d.as_str(), |d| d.name))
        .collect();
    for (i, a) in args.iter().enumerate() {
        if args[..i].iter().any(|b| b.name == a.name) {
            return Err(format!(
                "--disk {}: the disk {:?} is given twice",
                a, a.name
            ));
        }
        if !names.contains(&a.name.as_str()) {
            let known = if names.is_empty() {
                "it declares none".to_string()
            } else {
                format!("it declares {}", names.join(", "))
            };
            return Err(format!(
                "--disk {a}: the image declares no disk {:?} ({known})",
                a.name
            ));
        }
    }
    if args.len() > MAX_DISKS {
        return Err(format!("at most {MAX_DISKS} disks can be attached"));
    }
    for n in names {
        if !args.iter().any(|a| a.name == n) {
            return Err(format!(
                "image declares disk {n:?} but no --disk {n}=FILE was given"
            ));
        }
    }
    Ok(())
}

fn is_refusal(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS)
    )
}

/// Opens the file of one `--disk`.
pub fn open(arg: &DiskArg) -> Result<Disk, String> {
    let shown = arg.to_string();
    let meta = std::fs::metadata(&arg.path).map_err(|e| format!("--disk {shown}: {e}"))?;
    let kind = meta.file_type();
    if !(kind.is_file() || kind.is_block_device()) {
        return Err(format!(
            "--disk {shown}: not a regular file or block device"
        ));
    }
    let no_write_bits = meta.mode() & 0o222 == 0;
    let (file, read_only) = if no_write_bits {
        (File::open(&arg.path), true)
    } else {
        match OpenOptions::new().read(true).write(true).open(&arg.path) {
            Err(e) if is_refusal(&e) => (File::open(&arg.path), true),
            r => (r, false),
        }
    };
    let file = file.map_err(|e| format!("--disk {shown}: {e}"))?;
    let size = if kind.is_block_device() {
        // SAFETY: lseek on an fd we own; no memory is involved.
        let end = unsafe { libc::lseek(file.as_raw_fd(), 0, libc::SEEK_END) };
        if end < 0 {
            return Err(format!(
                "--disk {shown}: cannot get its size: {}",
                std::io::Error::last_os_error()
            ));
        }
        end as u64
    } else {
        meta.len()
    };
    if size == 0 {
        return Err(format!(
            "--disk {shown}: the file is empty (create a volume with `cargo unikernel disk create`)"
        ));
    }
    if size % SECTOR_SIZE != 0 {
        return Err(format!(
            "--disk {shown}: its size {size} bytes is not a multiple of the {SECTOR_SIZE}-byte sector"
        ));
    }
    let lock = if read_only {
        libc::LOCK_SH
    } else {
        libc::LOCK_EX
    };
    // SAFETY: flock on an fd we own; no memory is involved.
    if unsafe { libc::flock(file.as_raw_fd(), lock | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            format!("--disk {shown}: the file is in use by another guest or program (locked)")
        } else {
            format!("--disk {shown}: cannot lock the file: {e}")
        });
    }
    Ok(Disk {
        name: arg.name.clone(),
        file,
        sectors: size / SECTOR_SIZE,
        read_only,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<DiskArg> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn the_flag_parses() {
        let d: DiskArg = "data=some/dir/x.img".parse().unwrap();
        assert_eq!(d.name, "data");
        assert_eq!(d.path, PathBuf::from("some/dir/x.img"));
        assert!("data".parse::<DiskArg>().unwrap_err().contains("NAME=FILE"));
        assert!("Data=x".parse::<DiskArg>().is_err());
        assert!("data=".parse::<DiskArg>().is_err());
    }

    #[test]
    fn disks_match_the_declarations() {
        let declared = vec!["data=/data".to_string(), "logs=/var/log".to_string()];
        assert!(check_against_manifest(&args(&["logs=b", "data=a"]), &declared).is_ok());
        assert_eq!(
            check_against_manifest(&args(&["data=a"]), &declared).unwrap_err(),
            "image declares disk \"logs\" but no --disk logs=FILE was given"
        );
        let e =
            check_against_manifest(&args(&["data=a", "logs=b", "cache=c"]), &declared).unwrap_err();
        assert!(
            e.contains("declares no disk \"cache\" (it declares data, logs)"),
            "{e}"
        );
        let e = check_against_manifest(&args(&["data=a", "data=b"]), &declared).unwrap_err();
        assert!(e.contains("given twice"), "{e}");
        let e = check_against_manifest(&args(&["x=a"]), &[]).unwrap_err();
        assert!(e.contains("it declares none"), "{e}");
        assert!(check_against_manifest(&[], &[]).is_ok());
    }

    #[test]
    fn files_are_checked() {
        let dir = std::env::temp_dir().join(format!("hvt-disk-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = |n: &str| dir.join(n);
        std::fs::write(p("odd.img"), vec![0u8; 1000]).unwrap();
        std::fs::write(p("empty.img"), b"").unwrap();
        std::fs::write(p("ok.img"), vec![0u8; 4096]).unwrap();
        std::fs::write(p("ro.img"), vec![0u8; 1024]).unwrap();
        let mut perm = std::fs::metadata(p("ro.img")).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o444);
        std::fs::set_permissions(p("ro.img"), perm).unwrap();
        let arg = |n: &str| DiskArg {
            name: "data".into(),
            path: p(n),
        };
        let e = open(&arg("odd.img")).unwrap_err();
        assert!(
            e.contains("1000 bytes is not a multiple of the 512-byte sector"),
            "{e}"
        );
        assert!(open(&arg("empty.img")).unwrap_err().contains("empty"));
        assert!(open(&arg("missing.img")).is_err());
        assert!(open(&dir_arg(&dir))
            .unwrap_err()
            .contains("not a regular file"));
        let d = open(&arg("ok.img")).unwrap();
        assert_eq!((d.sectors, d.read_only), (8, false));
        // A second read-write open of the same file is refused (locked).
        assert!(open(&arg("ok.img")).unwrap_err().contains("in use"));
        drop(d);
        let d = open(&arg("ro.img")).unwrap();
        assert_eq!((d.sectors, d.read_only), (2, true));
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn dir_arg(dir: &std::path::Path) -> DiskArg {
        DiskArg {
            name: "data".into(),
            path: dir.to_path_buf(),
        }
    }
}
