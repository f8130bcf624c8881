//! Declared data volumes (`[package.metadata.unikernel] disks = [{ name =
//! "data", mount = "/data" }]`). The manifest keeps each as `NAME=MOUNT`
//! (`"data=/data"`); this module is the one parser, for the builder (which
//! refuses bad declarations at build time), the monitors and the runners
//! (which match `--disk NAME=FILE` against the names) and the kernels
//! (which mount each volume at its path).
//!
//! A name is 1-32 characters of `[a-z0-9_-]`, starting with a letter or a
//! digit. A mount point is an absolute path of plain components (no `.`,
//! `..` or empty components, no trailing `/`), not `/` itself and not under
//! `/dev`, `/proc` or `/tmp`, at most 255 bytes.

/// The mount point a disk gets when its declaration names none.
pub const DEFAULT_MOUNT: &str = "/data";
/// Most disks an image may declare.
pub const MAX_DISKS: usize = 8;

/// The GPT partition type of a data volume on a bootable disk
/// (`cargo unikernel build --emit disk`): the partition's name is the disk's
/// name, and the kernel mounts it as that disk. The type is ours,
/// a4e6c0d2-5f1b-4c7e-8e93-75756b646174, here in GPT's on-disk byte order
/// (the first three fields little-endian).
pub const GPT_DATA_TYPE: [u8; 16] = [
    0xd2, 0xc0, 0xe6, 0xa4, 0x1b, 0x5f, 0x7e, 0x4c, 0x8e, 0x93, 0x75, 0x75, 0x6b, 0x64, 0x61, 0x74,
];

/// One declared disk, borrowed from its `NAME=MOUNT` text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskDecl<'a> {
    pub name: &'a str,
    pub mount: &'a str,
}

/// Why a disk declaration was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskError {
    /// No `=` between name and mount point.
    MissingMount,
    BadName,
    BadMount,
}

impl core::fmt::Display for DiskError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            DiskError::MissingMount => "expected NAME=MOUNT",
            DiskError::BadName => {
                "a disk name is 1-32 characters of a-z, 0-9, '_' and '-', starting with a letter or digit"
            }
            DiskError::BadMount => {
                "a mount point is an absolute path of plain components (no '.', '..', '//' or trailing '/'), not '/', /dev, /proc or /tmp"
            }
        })
    }
}

/// Check a disk name.
pub fn check_name(name: &str) -> Result<(), DiskError> {
    let b = name.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 32
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-');
    if ok {
        Ok(())
    } else {
        Err(DiskError::BadName)
    }
}

/// Check a mount point.
pub fn check_mount(mount: &str) -> Result<(), DiskError> {
    if !mount.starts_with('/') || mount.len() < 2 || mount.len() > 255 || mount.ends_with('/') {
        return Err(DiskError::BadMount);
    }
    for c in mount[1..].split('/') {
        if c.is_empty() || c == "." || c == ".." || c.contains('\0') {
            return Err(DiskError::BadMount);
        }
    }
    let first = mount[1..].split('/').next().unwrap_or("");
    if matches!(first, "dev" | "proc" | "tmp") {
        return Err(DiskError::BadMount);
    }
    Ok(())
}

impl<'a> DiskDecl<'a> {
    /// Parse `NAME=MOUNT` as the manifest keeps it.
    pub fn parse(s: &'a str) -> Result<DiskDecl<'a>, DiskError> {
        let (name, mount) = s.split_once('=').ok_or(DiskError::MissingMount)?;
        check_name(name)?;
        check_mount(mount)?;
        Ok(DiskDecl { name, mount })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        assert_eq!(
            DiskDecl::parse("data=/data"),
            Ok(DiskDecl {
                name: "data",
                mount: "/data"
            })
        );
        assert!(DiskDecl::parse("logs-2=/var/log/app").is_ok());
        assert_eq!(DiskDecl::parse("data"), Err(DiskError::MissingMount));
        for bad in ["=/data", "Data=/d", "-x=/d", "a b=/d", &"x".repeat(33)] {
            let s = if bad.contains('=') {
                bad.to_string()
            } else {
                format!("{bad}=/d")
            };
            assert_eq!(DiskDecl::parse(&s), Err(DiskError::BadName), "{s}");
        }
        for bad in [
            "d=data",
            "d=/",
            "d=/a/",
            "d=/a//b",
            "d=/a/../b",
            "d=/./a",
            "d=/dev",
            "d=/proc/x",
            "d=/tmp",
        ] {
            assert_eq!(DiskDecl::parse(bad), Err(DiskError::BadMount), "{bad}");
        }
    }
}
