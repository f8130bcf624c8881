//! Shared test helpers: a block device over memory that records every
//! write and flush, volumes made by `host::create`, the host FAT tools.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use unikernel_fs::FatVolume;
use unikernel_runtime::device::BlockDevice;
use unikernel_runtime::errno::*;
use unikernel_runtime::fs::vfs::{Filesystem, OpenFlags};
use unikernel_runtime::fs::File;

/// One event on the device.
#[derive(Clone)]
pub enum Event {
    Write(u64, Vec<u8>),
    Flush,
}

pub struct MemDisk {
    pub data: Mutex<Vec<u8>>,
    pub log: Mutex<Vec<Event>>,
    pub read_only: bool,
    pub can_flush: bool,
    /// Fail writes with EIO after this many (None: never).
    pub fail_after: Mutex<Option<usize>>,
}

impl MemDisk {
    pub fn new(data: Vec<u8>) -> Arc<MemDisk> {
        Arc::new(MemDisk {
            data: Mutex::new(data),
            log: Mutex::new(Vec::new()),
            read_only: false,
            can_flush: true,
            fail_after: Mutex::new(None),
        })
    }
    pub fn read_only(data: Vec<u8>) -> Arc<MemDisk> {
        Arc::new(MemDisk {
            data: Mutex::new(data),
            log: Mutex::new(Vec::new()),
            read_only: true,
            can_flush: true,
            fail_after: Mutex::new(None),
        })
    }
    pub fn image(&self) -> Vec<u8> {
        self.data.lock().unwrap().clone()
    }
    pub fn events(&self) -> Vec<Event> {
        self.log.lock().unwrap().clone()
    }
}

impl BlockDevice for MemDisk {
    fn name(&self) -> &str {
        "mem"
    }
    fn sectors(&self) -> u64 {
        self.data.lock().unwrap().len() as u64 / 512
    }
    fn read_only(&self) -> bool {
        self.read_only
    }
    fn can_flush(&self) -> bool {
        self.can_flush
    }
    fn read(&self, sector: u64, buf: &mut [u8]) -> Result<(), Errno> {
        let d = self.data.lock().unwrap();
        let off = sector as usize * 512;
        if !buf.len().is_multiple_of(512) || off + buf.len() > d.len() {
            return Err(EINVAL);
        }
        buf.copy_from_slice(&d[off..off + buf.len()]);
        Ok(())
    }
    fn write(&self, sector: u64, buf: &[u8]) -> Result<(), Errno> {
        if self.read_only {
            return Err(EROFS);
        }
        let mut d = self.data.lock().unwrap();
        let off = sector as usize * 512;
        if !buf.len().is_multiple_of(512) || off + buf.len() > d.len() {
            return Err(EINVAL);
        }
        let mut log = self.log.lock().unwrap();
        if let Some(n) = *self.fail_after.lock().unwrap() {
            if log.iter().filter(|e| matches!(e, Event::Write(..))).count() >= n {
                return Err(EIO);
            }
        }
        d[off..off + buf.len()].copy_from_slice(buf);
        log.push(Event::Write(sector, buf.to_vec()));
        Ok(())
    }
    fn flush(&self) -> Result<(), Errno> {
        self.log.lock().unwrap().push(Event::Flush);
        Ok(())
    }
}

pub fn tmpdir(name: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!(
        "unikernel-fs-{}-{}-{}",
        name,
        std::process::id(),
        n
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A fresh volume of `mib` MiB from `host::create`, as bytes.
pub fn fresh_image(mib: u64, seed: Option<&Path>) -> Vec<u8> {
    let d = tmpdir(&format!("img{mib}"));
    let p = d.join("v.img");
    unikernel_fs::host::create(&p, mib << 20, seed).unwrap();
    let v = std::fs::read(&p).unwrap();
    let _ = std::fs::remove_dir_all(&d);
    v
}

pub fn mount(dev: Arc<MemDisk>) -> FatVolume {
    let writable = !dev.read_only;
    unikernel_fs::open_volume(dev, writable, 1, || 1_700_000_000).unwrap()
}

pub fn rw_create() -> OpenFlags {
    OpenFlags {
        read: true,
        write: true,
        create: true,
        ..OpenFlags::default()
    }
}

pub fn ro() -> OpenFlags {
    OpenFlags {
        read: true,
        ..OpenFlags::default()
    }
}

pub fn read_all(fs: &dyn Filesystem, path: &str) -> Result<Vec<u8>, Errno> {
    let f = fs.open(path, ro())?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 7000];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

pub fn write_file(fs: &dyn Filesystem, path: &str, data: &[u8]) {
    let f = fs
        .open(
            path,
            OpenFlags {
                truncate: true,
                ..rw_create()
            },
        )
        .unwrap();
    let mut off = 0;
    while off < data.len() {
        off += f.write(&data[off..]).unwrap();
    }
    f.sync(false).unwrap();
}

/// Names in a directory (getdents64), without "." and "..".
pub fn list(fs: &dyn Filesystem, path: &str) -> Vec<String> {
    let f: Arc<dyn File> = fs.open(path, ro()).unwrap();
    let mut names = Vec::new();
    let mut buf = vec![0u8; 4096];
    loop {
        let n = f.getdents64(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        let mut off = 0;
        while off < n {
            let reclen = u16::from_le_bytes([buf[off + 16], buf[off + 17]]) as usize;
            let name = &buf[off + 19..off + reclen];
            let end = name.iter().position(|&b| b == 0).unwrap();
            let s = String::from_utf8(name[..end].to_vec()).unwrap();
            if s != "." && s != ".." {
                names.push(s);
            }
            off += reclen;
        }
    }
    names.sort();
    names
}

/// `fsck.fat -n` on the FAT part of an image (the journal after it is
/// outside the volume the boot sector describes). Panics with its output
/// when it finds anything.
pub fn fsck(image: &[u8], what: &str) {
    let Some(tool) = tool("fsck.fat") else {
        println!("SKIPPED fsck.fat check ({what}): dosfstools not installed");
        return;
    };
    let d = tmpdir("fsck");
    let p = d.join("v.img");
    std::fs::write(&p, image).unwrap();
    let out = Command::new(tool).arg("-n").arg(&p).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&d);
    assert!(
        out.status.success() && !text.contains("Dirty bit") && !text.contains("differ"),
        "fsck.fat -n failed on {what}: {text}"
    );
}

/// `fsck.fat -n` on an image file.
pub fn fsck_file(path: &Path, what: &str) {
    let Some(tool) = tool("fsck.fat") else {
        println!("SKIPPED fsck.fat check ({what}): dosfstools not installed");
        return;
    };
    let out = Command::new(tool).arg("-n").arg(path).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && !text.contains("Dirty bit") && !text.contains("differ"),
        "fsck.fat -n failed on {what}: {text}"
    );
}

pub fn tool(name: &str) -> Option<PathBuf> {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return Some(p);
        }
    }
    None
}

/// A fixed pseudo-random sequence for cut points.
pub struct Xorshift(pub u64);
impl Xorshift {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The device after a crash at event `cut`: every write before the last
/// flush, then any subset of the later ones, the last torn at a random byte.
pub fn crash_image(base: &[u8], events: &[Event], cut: usize, rng: &mut Xorshift) -> Vec<u8> {
    let mut img = base.to_vec();
    let epoch = events[..cut]
        .iter()
        .rposition(|e| matches!(e, Event::Flush))
        .map_or(0, |i| i + 1);
    let apply = |img: &mut Vec<u8>, s: u64, d: &[u8]| {
        let off = s as usize * 512;
        img[off..off + d.len()].copy_from_slice(d);
    };
    for e in &events[..epoch] {
        if let Event::Write(s, d) = e {
            apply(&mut img, *s, d);
        }
    }
    // Since the last flush: any subset, in any order, the last one torn.
    let pending: Vec<&Event> = events[epoch..cut].iter().collect();
    for (i, e) in pending.iter().enumerate() {
        if let Event::Write(s, d) = e {
            if i + 1 == pending.len() {
                let keep = rng.below(d.len() as u64 + 1) as usize;
                apply(&mut img, *s, &d[..keep]);
            } else if rng.below(2) == 0 {
                apply(&mut img, *s, d);
            }
        }
    }
    img
}
