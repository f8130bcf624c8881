//! The root tree and `/tmp`, built at boot before the components start.
//!
//! `/` is a [`MemFs`] the app cannot change (`EROFS`). It holds
//! `/dev/{null,zero,random,urandom}`, `/proc/self/exe` (a symbolic link to
//! `/<app name>`, an empty entry standing for the executable), the files
//! components synthesize in `/etc` ([`set_etc_file`]), the image's embedded
//! files (`[package.metadata.unikernel] files`, read in place from the
//! image), and a directory for every mount point: `/tmp` and the declared
//! disks' mounts, so that `ls /` shows them.
//!
//! `/tmp` is a second, writable [`MemFs`] limited to `UNIKERNEL_TMP_SIZE`
//! bytes (default: a quarter of guest memory).

use super::dev::{Null, Random, Zero};
use super::memfs::{MemFs, RAMFS_MAGIC, TMPFS_MAGIC};
use super::vfs;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use spin::Mutex;
use unikernel_image::files::Archive;

static ROOT: Mutex<Option<Arc<MemFs>>> = Mutex::new(None);

/// The root filesystem (built on first use).
pub fn root() -> Arc<MemFs> {
    ROOT.lock().get_or_insert_with(|| Arc::new(build())).clone()
}

fn build() -> MemFs {
    build_from(
        crate::app_name(),
        crate::embedded_files(),
        crate::declared_disks(),
    )
}

/// The root for app `app` with the embedded-files archive `files` and the
/// declared disks `disks` (`NAME=MOUNT` each).
fn build_from(app: &str, files: &'static [u8], disks: &[String]) -> MemFs {
    let fs = MemFs::new("rootfs", RAMFS_MAGIC, true, u64::MAX);
    for d in ["dev", "proc", "proc/self", "tmp"] {
        let _ = fs.add_dir(d, 0o755);
    }
    let _ = fs.add_device("dev/null", Arc::new(Null));
    let _ = fs.add_device("dev/zero", Arc::new(Zero));
    let _ = fs.add_device("dev/random", Arc::new(Random));
    let _ = fs.add_device("dev/urandom", Arc::new(Random));
    let _ = fs.add_static_file(app, 0o755, &[]);
    let _ = fs.add_symlink("proc/self/exe", &alloc::format!("/{app}"));
    add_embedded(&fs, files);
    for d in disks {
        if let Some((_, mount)) = d.split_once('=') {
            add_dirs(&fs, mount.trim_start_matches('/'));
        }
    }
    fs
}

/// Create `path` and its parents as directories (existing ones are kept).
fn add_dirs(fs: &MemFs, path: &str) {
    let mut prefix = String::new();
    for comp in path.split('/').filter(|c| !c.is_empty()) {
        if !prefix.is_empty() {
            prefix.push('/');
        }
        prefix.push_str(comp);
        let _ = fs.add_dir(&prefix, 0o755);
    }
}

/// Put the entries of an embedded-files archive into the root.
pub(crate) fn add_embedded(fs: &MemFs, bytes: &'static [u8]) {
    if bytes.is_empty() {
        return;
    }
    let archive = match Archive::parse(bytes) {
        Ok(a) => a,
        Err(e) => {
            crate::kprintln!("unikernel: embedded files: {e}");
            return;
        }
    };
    for e in archive.entries() {
        if let Some((dir, _)) = e.path.rsplit_once('/') {
            add_dirs(fs, dir);
        }
        let r = if e.is_dir() {
            fs.add_dir(e.path, e.mode)
        } else {
            fs.add_static_file(e.path, e.mode, e.data)
        };
        if let Err(err) = r {
            crate::kprintln!(
                "unikernel: embedded files: {}: {}",
                e.path,
                crate::errno::name(err)
            );
        }
    }
}

/// Create or replace the read-only file `/etc/<name>` (components call it
/// at init: the network component's `resolv.conf` and `hosts`).
pub fn set_etc_file(name: &'static str, data: Vec<u8>) {
    let fs = root();
    let _ = fs.add_dir("etc", 0o755);
    let mut path = String::from("etc/");
    path.push_str(name);
    if let Err(e) = fs.set_shared_file(&path, 0o644, Arc::new(data)) {
        crate::kprintln!("unikernel: /etc/{name}: {}", crate::errno::name(e));
    }
}

/// The size limit of `/tmp`: `UNIKERNEL_TMP_SIZE` or a quarter of `mem_size`.
fn tmp_size(mem_size: u64) -> u64 {
    let default = mem_size / 4;
    match crate::option(unikernel_image::options::TMP_SIZE) {
        None => default,
        Some(v) => match unikernel_image::options::parse_size(v) {
            Ok(n) => n,
            Err(e) => {
                crate::kprintln!(
                    "unikernel: {}={v}: {e}; /tmp gets {default} bytes",
                    unikernel_image::options::TMP_SIZE
                );
                default
            }
        },
    }
}

/// Mount `/` and `/tmp` (called once at boot, before the components).
pub fn init(mem_size: u64) {
    let _ = vfs::mount("/", root());
    let tmp = MemFs::new("tmpfs", TMPFS_MAGIC, false, tmp_size(mem_size));
    let _ = tmp.chmod_root(0o1777);
    let _ = vfs::mount("/tmp", Arc::new(tmp));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::vfs::{Filesystem, OpenFlags};
    use crate::fs::S_IFDIR;
    use alloc::string::ToString;
    use unikernel_image::files::{encode, S_IFREG};

    fn read(fs: &dyn Filesystem, path: &str) -> Vec<u8> {
        let f = fs
            .open(
                path,
                OpenFlags {
                    read: true,
                    ..OpenFlags::default()
                },
            )
            .unwrap();
        let mut buf = alloc::vec![0u8; 256];
        let n = f.pread(&mut buf, 0).unwrap();
        buf.truncate(n);
        buf
    }

    #[test]
    fn embedded_files_are_read_in_place() {
        let bytes: &'static [u8] = Box::leak(
            encode(&[
                ("static".to_string(), S_IFDIR | 0o555, alloc::vec![]),
                (
                    "static/index.html".to_string(),
                    S_IFREG | 0o444,
                    b"<h1>hi</h1>".to_vec(),
                ),
                (
                    "config.toml".to_string(),
                    S_IFREG | 0o644,
                    b"x = 1\n".to_vec(),
                ),
            ])
            .into_boxed_slice(),
        );
        let fs = MemFs::new("rootfs", RAMFS_MAGIC, true, u64::MAX);
        add_embedded(&fs, bytes);
        assert_eq!(read(&fs, "static/index.html"), b"<h1>hi</h1>");
        assert_eq!(read(&fs, "config.toml"), b"x = 1\n");
        assert_eq!(fs.stat("static").unwrap().mode, S_IFDIR | 0o555);
        assert_eq!(fs.stat("config.toml").unwrap().mode, S_IFREG | 0o644);
        assert_eq!(fs.used_pages(), 0, "nothing copied");
        // A damaged archive adds nothing (and prints one line).
        let bad = MemFs::new("rootfs", RAMFS_MAGIC, true, u64::MAX);
        add_embedded(&bad, b"UKFILES1\x05\x00\x00\x00");
        assert_eq!(bad.stat("static").err(), Some(crate::errno::ENOENT));
    }

    #[test]
    fn mount_points_of_declared_disks_are_directories() {
        let disks = ["data=/data".to_string(), "logs=/var/log/app".to_string()];
        let fs = build_from("svc", &[], &disks);
        for d in [
            "data",
            "var",
            "var/log",
            "var/log/app",
            "tmp",
            "dev",
            "proc/self",
        ] {
            assert_eq!(fs.stat(d).unwrap().mode & 0o170000, S_IFDIR, "{d}");
        }
        assert_eq!(fs.readlink("proc/self/exe").unwrap(), "/svc");
        assert_eq!(fs.stat("svc").unwrap().size, 0);
    }

    #[test]
    fn root_tree_and_etc_files() {
        let fs = root();
        assert_eq!(fs.readlink("proc/self/exe").unwrap(), "/app");
        assert!(fs.stat("tmp").is_ok() && fs.stat("dev/null").is_ok());
        set_etc_file("hosts", b"127.0.0.1\tlocalhost\n".to_vec());
        assert_eq!(read(&*fs, "etc/hosts"), b"127.0.0.1\tlocalhost\n");
        set_etc_file("hosts", b"x".to_vec());
        assert_eq!(read(&*fs, "etc/hosts"), b"x");
        assert_eq!(fs.unlink("etc/hosts"), Err(crate::errno::EROFS));
    }
}
