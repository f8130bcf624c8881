//! Rough host-side figures of the component over a file (printed, not
//! asserted beyond sanity): sequential write + fsync, sequential read,
//! 4 KiB random reads and writes. Run with `--release -- --nocapture`.

mod common;
use common::*;
use std::sync::Arc;
use std::time::Instant;
use unikernel_fs::host::FileDevice;
use unikernel_runtime::device::BlockDevice;
use unikernel_runtime::fs::vfs::Filesystem;

#[test]
fn throughput_figures() {
    let d = tmpdir("tput");
    let img = d.join("v.img");
    let mib: usize = std::env::var("TPUT_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64);
    unikernel_fs::host::create(&img, (mib as u64 * 2 + 32) << 20, None).unwrap();
    let dev: Arc<dyn BlockDevice> = Arc::new(FileDevice::open(&img, false).unwrap());
    let v = unikernel_fs::open_volume(dev, true, 0, || 1_700_000_000).unwrap();
    let f = v.open("big", rw_create()).unwrap();
    let chunk = vec![0xa5u8; 1 << 20];
    let t = Instant::now();
    for _ in 0..mib {
        assert_eq!(f.write(&chunk).unwrap(), chunk.len());
    }
    f.sync(false).unwrap();
    let w = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0;
    for i in 0..mib {
        total += f.pread(&mut buf, (i << 20) as u64).unwrap();
    }
    assert_eq!(total, mib << 20);
    let r = t.elapsed().as_secs_f64();
    let mut x = 0x1234_5678u64;
    let ops = 2000;
    let t = Instant::now();
    let mut b4 = [0u8; 4096];
    for _ in 0..ops {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let off = (x % (mib as u64 * 256)) * 4096;
        f.pread(&mut b4, off).unwrap();
    }
    let rr = ops as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for _ in 0..ops {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let off = (x % (mib as u64 * 256)) * 4096;
        f.pwrite(&b4, off).unwrap();
    }
    f.sync(false).unwrap();
    let rw = ops as f64 / t.elapsed().as_secs_f64();
    println!(
        "fs throughput ({mib} MiB file over a host file): write+fsync {:.0} MiB/s, read {:.0} MiB/s, 4K random read {rr:.0} ops/s, 4K random write (one fsync at the end) {rw:.0} ops/s; {:?}",
        mib as f64 / w,
        mib as f64 / r,
        v.cache_stats()
    );
    drop(f);
    v.sync().unwrap();
    let _ = std::fs::remove_dir_all(&d);
}
