//! The storage component: data volumes that keep what `fsync`
//! acknowledged across a crash.
//!
//! The layers, from the device up:
//!
//! * `journal`: the on-disk layout below the filesystem: a FAT volume
//!   followed by a write-ahead journal region the FAT tools never see;
//! * `cache`: the block cache (write-back, read-ahead) whose commit writes
//!   dirty blocks through the journal; `replay` at mount;
//! * `fatio`: the byte stream and clock lamfat (rust-fatfs) runs on;
//! * `volume`: the runtime's `Filesystem`/`File` over lamfat, one lock,
//!   shared per-file state, operation boundaries;
//! * `mount`: checking a device ("not a volume of ours", truncated, ...)
//!   and [`init`], which mounts every disk the image declares.
//!
//! `host` (feature `std`) creates volumes on the host for
//! `cargo unikernel disk create`. See docs/storage.md.
#![cfg_attr(not(feature = "std"), no_std)]

extern crate alloc;

pub mod cache;
mod crc;
pub mod fatio;
mod fatmap;
pub mod gpt;
#[cfg(feature = "std")]
pub mod host;
pub mod journal;
pub mod mount;
pub mod volume;

pub use mount::{open_volume, VolumeError};
pub use volume::FatVolume;

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use unikernel_image::disks::DiskDecl;
use unikernel_runtime::device::{block_devices, BlockDevice};
use unikernel_runtime::fault::EXIT_DISK_UNUSABLE;
use unikernel_runtime::kprintln;

/// Seconds since the Unix epoch on the platform's wall clock.
fn wall_clock() -> i64 {
    unikernel_runtime::time::now(unikernel_runtime::time::CLOCK_REALTIME)
        .map_or(0, |ns| (ns / 1_000_000_000) as i64)
}

fn fail(name: &str, what: &str) -> ! {
    kprintln!("unikernel: disk \"{}\": {}", name, what);
    unikernel_runtime::exit(EXIT_DISK_UNUSABLE)
}

/// Pick the device of each declared disk: the one labelled with its name,
/// else the unlabelled devices in declaration order.
fn pick_devices(names: &[&str], devs: &[Arc<dyn BlockDevice>]) -> Vec<Option<usize>> {
    let mut used = alloc::vec![false; devs.len()];
    let mut out = alloc::vec![None; names.len()];
    for (i, n) in names.iter().enumerate() {
        if let Some(d) = devs.iter().position(|d| d.label() == Some(n)) {
            used[d] = true;
            out[i] = Some(d);
        }
    }
    for slot in out.iter_mut() {
        if slot.is_none() {
            if let Some(d) = (0..devs.len()).find(|&d| !used[d] && devs[d].label().is_none()) {
                used[d] = true;
                *slot = Some(d);
            }
        }
    }
    out
}

/// Mount every disk the image declares (called by the kernel glue before
/// the app starts). A disk without a device, or whose device does not hold
/// a usable volume of ours, ends the boot with one line and exit code 252.
pub fn init() {
    let decls: Vec<String> = unikernel_runtime::declared_disks().to_vec();
    // A bootable disk's data partitions stand in for the disk itself.
    let devs = gpt::expand(block_devices());
    let parsed: Vec<DiskDecl> = decls
        .iter()
        .map(|d| match DiskDecl::parse(d) {
            Ok(x) => x,
            Err(_) => fail(d, "malformed disk declaration in the image"),
        })
        .collect();
    let names: Vec<&str> = parsed.iter().map(|d| d.name).collect();
    let picks = pick_devices(&names, &devs);
    let verbose = unikernel_runtime::option("UNIKERNEL_VERBOSE") == Some("1");
    let unsafe_ok = unikernel_runtime::option("UNIKERNEL_DISK_UNSAFE") == Some("1");
    for (i, (decl, pick)) in parsed.iter().zip(picks).enumerate() {
        let Some(d) = pick else {
            fail(decl.name, "no block device for it")
        };
        let dev = devs[d].clone();
        let mut writable = !dev.read_only();
        if writable && !dev.can_flush() {
            if unsafe_ok {
                kprintln!(
                    "unikernel: disk \"{}\": the device cannot flush its cache; mounted read-write anyway (UNIKERNEL_DISK_UNSAFE=1): a crash may lose or corrupt data",
                    decl.name
                );
            } else {
                kprintln!(
                    "unikernel: disk \"{}\": the device cannot flush its cache, mounted read-only (UNIKERNEL_DISK_UNSAFE=1 mounts it read-write without crash safety)",
                    decl.name
                );
                writable = false;
            }
        }
        let vol = match open_volume(dev.clone(), writable, 0x800 + i as u64, wall_clock) {
            Ok(v) => v,
            Err(e) => fail(decl.name, &e.0),
        };
        if let Err(e) = unikernel_runtime::fs::vfs::mount(decl.mount, Arc::new(vol)) {
            fail(
                decl.name,
                &alloc::format!(
                    "cannot mount at {} ({})",
                    decl.mount,
                    unikernel_runtime::errno::name(e)
                ),
            );
        }
        if verbose {
            kprintln!(
                "unikernel: disk \"{}\": {} ({} MiB) mounted at {} ({}, vfat + journal)",
                decl.name,
                dev.name(),
                (dev.sectors() * dev.sector_size() as u64) >> 20,
                decl.mount,
                if writable { "read-write" } else { "read-only" }
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use unikernel_runtime::errno::{Errno, EIO};

    struct Dev(Option<&'static str>);
    impl BlockDevice for Dev {
        fn name(&self) -> &str {
            "t"
        }
        fn label(&self) -> Option<&str> {
            self.0
        }
        fn sectors(&self) -> u64 {
            0
        }
        fn read_only(&self) -> bool {
            false
        }
        fn read(&self, _: u64, _: &mut [u8]) -> Result<(), Errno> {
            Err(EIO)
        }
        fn write(&self, _: u64, _: &[u8]) -> Result<(), Errno> {
            Err(EIO)
        }
        fn flush(&self) -> Result<(), Errno> {
            Err(EIO)
        }
    }

    fn devs(labels: &[Option<&'static str>]) -> Vec<Arc<dyn BlockDevice>> {
        labels
            .iter()
            .map(|l| Arc::new(Dev(*l)) as Arc<dyn BlockDevice>)
            .collect()
    }

    #[test]
    fn devices_match_by_label_then_in_order() {
        // Labels win, whatever the order.
        let d = devs(&[Some("logs"), Some("data")]);
        assert_eq!(pick_devices(&["data", "logs"], &d), [Some(1), Some(0)]);
        // Without labels: declaration order.
        let d = devs(&[None, None]);
        assert_eq!(pick_devices(&["data", "logs"], &d), [Some(0), Some(1)]);
        // A missing disk is None; a device labelled for another disk is
        // never taken in order.
        let d = devs(&[Some("other")]);
        assert_eq!(pick_devices(&["data"], &d), [None]);
        let d = devs(&[None]);
        assert_eq!(pick_devices(&["data", "logs"], &d), [Some(0), None]);
    }
}
