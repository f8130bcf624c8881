//! FAT12, FAT16 and FAT32 volumes (lamfat picks the type from the size):
//! two files grown in turns, so their clusters interleave, read back at
//! random offsets after every step (the per-file cluster maps grow by
//! following the FAT themselves), then `fsck.fat -n`.

mod common;
use common::*;
use std::sync::Arc;
use unikernel_fs::host::FileDevice;
use unikernel_runtime::device::BlockDevice;
use unikernel_runtime::fs::vfs::Filesystem;

fn interleaved(size: u64, what: &str) {
    let d = tmpdir("types");
    let img = d.join("v.img");
    unikernel_fs::host::create(&img, size, None).unwrap();
    // The clusters start on a 4 KiB boundary (whole cache blocks).
    let b = std::fs::read(&img).unwrap();
    let u16_at = |i: usize| u64::from(u16::from_le_bytes([b[i], b[i + 1]]));
    let fat = match u16_at(22) {
        0 => u64::from(u32::from_le_bytes([b[36], b[37], b[38], b[39]])),
        n => n,
    };
    let data_start = u16_at(14) + u64::from(b[16]) * fat + (u16_at(17) * 32).div_ceil(512);
    assert_eq!(
        data_start % 8,
        0,
        "{what}: data region at sector {data_start}"
    );
    {
        let dev: Arc<dyn BlockDevice> = Arc::new(FileDevice::open(&img, false).unwrap());
        let v = unikernel_fs::open_volume(dev, true, 0, || 1_700_000_000).unwrap();
        let files = [
            v.open("a", rw_create()).unwrap(),
            v.open("b", rw_create()).unwrap(),
        ];
        let mut model = [Vec::new(), Vec::new()];
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for step in 0..120u32 {
            let i = (step % 2) as usize;
            let chunk: Vec<u8> = (0..3001u32).map(|k| (k * 7 + step) as u8).collect();
            files[i].pwrite(&chunk, model[i].len() as u64).unwrap();
            model[i].extend_from_slice(&chunk);
            // An overwrite inside, then reads anywhere in both files.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let at = (x % model[i].len() as u64) as usize;
            let n = 700.min(model[i].len() - at);
            let patch = vec![step as u8 ^ 0x5a; n];
            files[i].pwrite(&patch, at as u64).unwrap();
            model[i][at..at + n].copy_from_slice(&patch);
            for (f, m) in files.iter().zip(&model) {
                if m.is_empty() {
                    continue;
                }
                let at = (x >> 20) as usize % m.len();
                let mut buf = vec![0u8; 5000.min(m.len() - at)];
                assert_eq!(f.pread(&mut buf, at as u64).unwrap(), buf.len());
                assert_eq!(&buf[..], &m[at..at + buf.len()], "{what} step {step}");
            }
        }
        // Shrink one, grow it again: the map is rebuilt.
        files[0].set_len(10_000).unwrap();
        model[0].truncate(10_000);
        files[0].pwrite(b"tail", 20_000).unwrap();
        model[0].resize(20_000, 0);
        model[0].extend_from_slice(b"tail");
        for (name, m) in ["a", "b"].iter().zip(&model) {
            assert_eq!(&read_all(&v, name).unwrap(), m, "{what}: {name}");
        }
        v.sync().unwrap();
    }
    fsck_file(&img, what);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn fat12() {
    interleaved(4 << 20, "FAT12 (4 MiB)");
}

#[test]
fn fat16() {
    interleaved(64 << 20, "FAT16 (64 MiB)");
}

#[test]
fn fat32() {
    interleaved(600 << 20, "FAT32 (600 MiB)");
}
