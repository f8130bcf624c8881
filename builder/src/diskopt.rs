//! The disk option of `cargo unikernel run`: `--disk NAME=FILE`
//! (repeatable) attaches the raw image FILE as the disk the image declares
//! under NAME (its manifest's `disks`, `NAME=MOUNT` entries). Parsed and
//! checked here for every platform; what each VMM makes of it is in
//! [`crate::vmm`] (QEMU `-drive` + virtio-blk, Firecracker's `drives`).
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use unikernel_image::disks::{check_name, DiskDecl};

/// `--disk NAME=FILE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskArg {
    pub name: String,
    pub file: PathBuf,
}

impl FromStr for DiskArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let Some((name, file)) = s.split_once('=') else {
            return Err(format!("bad --disk \"{s}\": write NAME=FILE"));
        };
        if let Err(e) = check_name(name) {
            return Err(format!("bad --disk name \"{name}\": {e}"));
        }
        if file.is_empty() {
            return Err(format!("bad --disk \"{s}\": no file after '='"));
        }
        Ok(DiskArg {
            name: name.to_string(),
            file: PathBuf::from(file),
        })
    }
}

impl fmt::Display for DiskArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.name, self.file.display())
    }
}

/// A disk ready to attach: its declared name, the file (absolute) and
/// whether it goes read-only (the user cannot write the file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disk {
    pub name: String,
    pub file: PathBuf,
    pub read_only: bool,
}

/// The names the manifest's `disks` entries declare (entries that do not
/// parse are skipped: the builder never writes them).
pub fn declared_names(disks: &[String]) -> Vec<String> {
    disks
        .iter()
        .filter_map(|d| DiskDecl::parse(d).ok())
        .map(|d| d.name.to_string())
        .collect()
}

/// Check the `--disk` flags against the image's declared disks: every
/// declared disk given once, no other. The error is one line.
pub fn check(declared: &[String], given: &[DiskArg]) -> Result<(), String> {
    check_given(declared, given)?;
    if let Some(missing) = declared
        .iter()
        .find(|n| !given.iter().any(|d| &d.name == *n))
    {
        return Err(format!(
            "image declares disk \"{missing}\" but no --disk {missing}=FILE was given"
        ));
    }
    Ok(())
}

/// Half of [`check`]: each `--disk` names a declared disk, once (a
/// declared disk may be left out: `--emit firecracker` writes a
/// placeholder for it).
pub fn check_given(declared: &[String], given: &[DiskArg]) -> Result<(), String> {
    for (i, d) in given.iter().enumerate() {
        if given[..i].iter().any(|e| e.name == d.name) {
            return Err(format!("--disk {} is given twice", d.name));
        }
        if !declared.contains(&d.name) {
            let known = if declared.is_empty() {
                "it declares none".to_string()
            } else {
                format!("it declares {}", declared.join(", "))
            };
            return Err(format!(
                "--disk {}: the image declares no disk \"{}\" ({known})",
                d.name, d.name
            ));
        }
    }
    Ok(())
}

/// Whether `path` is to be attached writable: it has a write permission
/// bit (a `chmod a-w` file attaches read-only, for root too, as on the hvt
/// monitor) and this process may write it (access(2), W_OK).
fn writable(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    let has_write_bit = std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o222 != 0);
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: access(2) reads the NUL-terminated path only.
    has_write_bit && unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

/// The disks to attach, in the image's declaration order: each file must
/// be a readable regular file (or block device); one the user cannot write
/// attaches read-only.
pub fn resolve(declared: &[String], given: &[DiskArg]) -> Result<Vec<Disk>, String> {
    check(declared, given)?;
    resolve_given(declared, given)
}

/// [`resolve`] for the declared disks that `given` names, the others left
/// out (`--emit firecracker`).
pub fn resolve_given(declared: &[String], given: &[DiskArg]) -> Result<Vec<Disk>, String> {
    check_given(declared, given)?;
    let mut out = Vec::new();
    for name in declared {
        let Some(d) = given.iter().find(|d| &d.name == name) else {
            continue;
        };
        let meta = std::fs::metadata(&d.file)
            .map_err(|e| format!("--disk {d}: cannot open {}: {e}", d.file.display()))?;
        if meta.is_dir() {
            return Err(format!(
                "--disk {d}: {} is a directory; give a disk image file (cargo unikernel disk create)",
                d.file.display()
            ));
        }
        std::fs::File::open(&d.file)
            .map_err(|e| format!("--disk {d}: cannot open {}: {e}", d.file.display()))?;
        let file = std::path::absolute(&d.file)
            .map_err(|e| format!("--disk {d}: cannot resolve {}: {e}", d.file.display()))?;
        out.push(Disk {
            name: d.name.clone(),
            read_only: !writable(&file),
            file,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<DiskArg> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn parse() {
        let d: DiskArg = "data=./d.img".parse().unwrap();
        assert_eq!(d.name, "data");
        assert_eq!(d.file, PathBuf::from("./d.img"));
        assert_eq!(d.to_string(), "data=./d.img");
        // The file part may hold '=' itself.
        assert_eq!(
            "a=x=y".parse::<DiskArg>().unwrap().file,
            PathBuf::from("x=y")
        );
        assert!("data".parse::<DiskArg>().unwrap_err().contains("NAME=FILE"));
        assert!("Data=x"
            .parse::<DiskArg>()
            .unwrap_err()
            .contains("disk name"));
        assert!("data=".parse::<DiskArg>().unwrap_err().contains("no file"));
    }

    #[test]
    fn missing_and_undeclared_disks() {
        let declared = declared_names(&["data=/data".into(), "logs=/var/log".into()]);
        assert_eq!(declared, ["data", "logs"]);
        assert_eq!(
            check(&declared, &args(&["logs=l.img"])).unwrap_err(),
            "image declares disk \"data\" but no --disk data=FILE was given"
        );
        assert_eq!(
            check(&declared, &args(&["data=d.img", "logs=l.img", "x=x.img"])).unwrap_err(),
            "--disk x: the image declares no disk \"x\" (it declares data, logs)"
        );
        assert_eq!(
            check(&[], &args(&["x=x.img"])).unwrap_err(),
            "--disk x: the image declares no disk \"x\" (it declares none)"
        );
        assert_eq!(
            check(&declared, &args(&["data=a", "data=b"])).unwrap_err(),
            "--disk data is given twice"
        );
        assert!(check(&declared, &args(&["logs=l.img", "data=d.img"])).is_ok());
        assert!(check(&[], &[]).is_ok());
    }

    #[test]
    fn resolve_order_and_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let rw = dir.path().join("rw.img");
        let ro = dir.path().join("ro.img");
        std::fs::write(&rw, [0u8; 512]).unwrap();
        std::fs::write(&ro, [0u8; 512]).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o444)).unwrap();
        let declared = declared_names(&["a=/a".into(), "b=/b".into()]);
        let given = vec![
            DiskArg {
                name: "b".into(),
                file: ro.clone(),
            },
            DiskArg {
                name: "a".into(),
                file: rw.clone(),
            },
        ];
        let disks = resolve(&declared, &given).unwrap();
        assert_eq!(disks[0].name, "a");
        assert_eq!(disks[0].file, rw);
        assert!(!disks[0].read_only);
        assert_eq!(disks[1].name, "b");
        // A 0444 file attaches read-only, for root too.
        assert!(disks[1].read_only);
        let e = resolve(
            &declared_names(&["a=/a".into()]),
            &[DiskArg {
                name: "a".into(),
                file: dir.path().join("none.img"),
            }],
        )
        .unwrap_err();
        assert!(e.starts_with("--disk a="), "{e}");
        assert!(e.contains("cannot open"), "{e}");
    }
}
