//! The filesystem operations over a volume from `host::create`, checked
//! through the runtime's interfaces and, after, with `fsck.fat -n`.

mod common;
use common::*;
use unikernel_runtime::errno::*;
use unikernel_runtime::fs::vfs::{Filesystem, OpenFlags, RENAME_EXCHANGE, RENAME_NOREPLACE};
use unikernel_runtime::fs::{SEEK_END, SEEK_SET, S_IFDIR, S_IFMT, S_IFREG};

#[test]
fn create_write_read_stat() {
    let dev = MemDisk::new(fresh_image(16, None));
    let v = mount(dev.clone());
    write_file(&v, "hello.txt", b"hello, world\n");
    assert_eq!(read_all(&v, "hello.txt").unwrap(), b"hello, world\n");
    // Case-insensitive names.
    assert_eq!(read_all(&v, "HELLO.TXT").unwrap(), b"hello, world\n");
    let st = v.stat("hello.txt").unwrap();
    assert_eq!(st.mode & S_IFMT, S_IFREG);
    assert_eq!(st.size, 13);
    assert_eq!(st.ino, v.stat("hello.txt").unwrap().ino);
    assert_eq!(st.mtime, 1_700_000_000);
    assert_eq!(v.stat("").unwrap().mode & S_IFMT, S_IFDIR);
    assert_eq!(v.stat("nope").unwrap_err(), ENOENT);
    assert_eq!(v.stat("hello.txt/x").unwrap_err(), ENOTDIR);
    // Exclusive create of an existing file.
    let excl = OpenFlags {
        exclusive: true,
        ..rw_create()
    };
    assert_eq!(v.open("hello.txt", excl).err(), Some(EEXIST));
    // O_DIRECTORY on a file.
    let dir = OpenFlags {
        directory: true,
        ..ro()
    };
    assert_eq!(v.open("hello.txt", dir).err(), Some(ENOTDIR));
    // A long name (LFN) and a name with spaces and case.
    let long = "A Rather Long File Name With Spaces And Mixed Case.data";
    write_file(&v, long, &[7u8; 10000]);
    assert_eq!(list(&v, ""), vec![long.to_string(), "hello.txt".into()]);
    assert_eq!(read_all(&v, long).unwrap(), vec![7u8; 10000]);
    assert_eq!(
        v.open(&"x".repeat(256), rw_create()).err(),
        Some(ENAMETOOLONG)
    );
    drop(v);
    fsck(&dev.image(), "after create/write");
    // A second mount sees everything.
    let v = mount(dev.clone());
    assert_eq!(read_all(&v, long).unwrap(), vec![7u8; 10000]);
}

#[test]
fn append_pwrite_seek_truncate_allocate() {
    let dev = MemDisk::new(fresh_image(16, None));
    let v = mount(dev.clone());
    let f = v.open("f", rw_create()).unwrap();
    assert_eq!(f.write(b"0123456789").unwrap(), 10);
    assert_eq!(f.pwrite(b"AB", 3).unwrap(), 2);
    let mut b = [0u8; 4];
    assert_eq!(f.pread(&mut b, 2).unwrap(), 4);
    assert_eq!(&b, b"2AB5");
    // A write past the end leaves zeros in the gap.
    assert_eq!(f.pwrite(b"", 9000).unwrap(), 0);
    assert_eq!(
        f.stat().size,
        10,
        "an empty write past the end changes nothing"
    );
    assert_eq!(f.pwrite(b"Z", 5000).unwrap(), 1);
    assert_eq!(f.stat().size, 5001);
    let data = read_all(&v, "f").unwrap();
    assert_eq!(&data[..10], b"012AB56789");
    assert!(data[10..5000].iter().all(|&x| x == 0));
    assert_eq!(f.seek(0, SEEK_END).unwrap(), 5001);
    assert_eq!(f.seek(1, SEEK_SET).unwrap(), 1);
    assert_eq!(f.read(&mut b).unwrap(), 4);
    assert_eq!(&b, b"12AB");
    f.set_len(4).unwrap();
    assert_eq!(v.stat("f").unwrap().size, 4);
    f.set_len(100_000).unwrap();
    assert_eq!(read_all(&v, "f").unwrap().len(), 100_000);
    f.allocate(0, 200_000).unwrap();
    assert_eq!(f.stat().size, 200_000);
    v.truncate("f", 3).unwrap();
    assert_eq!(read_all(&v, "f").unwrap(), b"012");
    // O_APPEND writes at the end whatever the offset.
    let a = v
        .open(
            "f",
            OpenFlags {
                append: true,
                write: true,
                ..OpenFlags::default()
            },
        )
        .unwrap();
    a.write(b"xy").unwrap();
    a.pwrite(b"z", 0).unwrap();
    assert_eq!(read_all(&v, "f").unwrap(), b"012xyz");
    // O_TRUNC.
    let t = v
        .open(
            "f",
            OpenFlags {
                truncate: true,
                write: true,
                ..OpenFlags::default()
            },
        )
        .unwrap();
    drop(t);
    assert_eq!(v.stat("f").unwrap().size, 0);
    // O_RDONLY|O_TRUNC truncates too, as on Linux.
    v.open("f", rw_create()).unwrap().write(b"abc").unwrap();
    let t = v
        .open(
            "f",
            OpenFlags {
                truncate: true,
                read: true,
                ..OpenFlags::default()
            },
        )
        .unwrap();
    assert_eq!(t.stat().size, 0);
    drop(t);
    // Two handles of one file see each other's writes.
    let h1 = v.open("g", rw_create()).unwrap();
    let h2 = v.open("g", rw_create()).unwrap();
    h1.write(b"first").unwrap();
    let mut five = [0u8; 5];
    assert_eq!(h2.read(&mut five).unwrap(), 5);
    assert_eq!(&five, b"first");
    h2.write(b"+second").unwrap();
    assert_eq!(h1.stat().size, 12);
    let mut rest = [0u8; 7];
    assert_eq!(h1.read(&mut rest).unwrap(), 7);
    assert_eq!(&rest, b"+second");
    f.sync(false).unwrap();
    drop((f, a, h1, h2));
    fsck(&dev.image(), "after pwrite/truncate");
}

#[test]
fn directories_unlink_rename() {
    let dev = MemDisk::new(fresh_image(16, None));
    let v = mount(dev.clone());
    v.mkdir("d", 0o755).unwrap();
    assert_eq!(v.mkdir("d", 0o755).err(), Some(EEXIST));
    // A directory's entry cannot be stamped: an error, not a silent no-op.
    let t = Some(unikernel_runtime::fs::vfs::Timespec {
        sec: 1_700_000_000,
        nsec: 0,
    });
    assert_eq!(v.set_times("d", t, t).err(), Some(EPERM));
    assert_eq!(v.mkdir("nope/x", 0o755).err(), Some(ENOENT));
    v.mkdir("d/e", 0o755).unwrap();
    write_file(&v, "d/e/f", b"deep");
    assert_eq!(list(&v, "d"), vec!["e".to_string()]);
    assert_eq!(v.rmdir("d").err(), Some(ENOTEMPTY));
    assert_eq!(v.unlink("d").err(), Some(EISDIR));
    assert_eq!(v.rmdir("d/e/f").err(), Some(ENOTDIR));
    // Rename a file over a file: the target is replaced.
    write_file(&v, "a", b"new contents");
    write_file(&v, "b", &vec![9u8; 300_000]);
    let free_before = v.statfs().f_bfree;
    v.rename("a", "b", 0).unwrap();
    assert_eq!(read_all(&v, "b").unwrap(), b"new contents");
    assert_eq!(v.stat("a").err(), Some(ENOENT));
    assert!(
        v.statfs().f_bfree > free_before,
        "the old target's clusters are freed"
    );
    // NOREPLACE, EXCHANGE, dir over file, file over dir, dir into itself.
    write_file(&v, "c", b"c");
    assert_eq!(v.rename("c", "b", RENAME_NOREPLACE).err(), Some(EEXIST));
    assert_eq!(v.rename("c", "b", RENAME_EXCHANGE).err(), Some(EINVAL));
    assert_eq!(v.rename("d", "c", 0).err(), Some(ENOTDIR));
    assert_eq!(v.rename("c", "d", 0).err(), Some(EISDIR));
    assert_eq!(v.rename("d", "d/e/x", 0).err(), Some(EINVAL));
    // A directory over an empty directory; a rename across directories.
    v.mkdir("empty", 0o755).unwrap();
    v.rename("d", "empty", 0).unwrap();
    assert_eq!(read_all(&v, "empty/e/f").unwrap(), b"deep");
    v.rename("empty/e/f", "moved", 0).unwrap();
    assert_eq!(read_all(&v, "moved").unwrap(), b"deep");
    // A case-only rename.
    v.rename("moved", "Moved", 0).unwrap();
    assert_eq!(list(&v, ""), vec!["Moved", "b", "c", "empty"]);
    // An open file follows its rename.
    let h = v.open("c", rw_create()).unwrap();
    v.rename("c", "c2", 0).unwrap();
    h.write(b"++").unwrap();
    assert_eq!(read_all(&v, "c2").unwrap(), b"++");
    // A file replaced while open keeps its data for its open handles.
    write_file(&v, "victim", b"v");
    let stale = v.open("victim", rw_create()).unwrap();
    v.rename("c2", "victim", 0).unwrap();
    assert_eq!(read_all(&v, "victim").unwrap(), b"++");
    stale.pwrite(b"x", 1).unwrap();
    let mut two = [0u8; 2];
    assert_eq!(stale.pread(&mut two, 0).unwrap(), 2);
    assert_eq!(&two, b"vx");
    assert_eq!(read_all(&v, "victim").unwrap(), b"++");
    v.unlink("victim").unwrap();
    v.rmdir("empty/e").unwrap();
    v.rmdir("empty").unwrap();
    assert_eq!(list(&v, ""), vec!["Moved", "b"]);
    // Links and symlinks: FAT has none.
    assert_eq!(v.symlink("b", "l").err(), Some(EPERM));
    assert_eq!(v.link("b", "l").err(), Some(EPERM));
    let sf = v.statfs();
    assert_eq!(sf.f_type, 0x4d44);
    assert!(sf.f_bfree > 0 && sf.f_bfree <= sf.f_blocks);
    v.sync().unwrap();
    drop((h, stale));
    fsck(&dev.image(), "after directory operations");
}

#[test]
fn enospc_leaves_a_consistent_volume() {
    let dev = MemDisk::new(fresh_image(4, None));
    let v = mount(dev.clone());
    write_file(&v, "keep", b"kept");
    let f = v.open("big", rw_create()).unwrap();
    let chunk = vec![0x5au8; 64 * 1024];
    let mut total = 0usize;
    let err = loop {
        match f.write(&chunk) {
            Ok(n) => total += n,
            Err(e) => break e,
        }
        assert!(total < 8 << 20, "a 4 MiB volume took more than 8 MiB");
    };
    assert_eq!(err, ENOSPC);
    assert!(total > 1 << 20);
    assert_eq!(f.stat().size as usize, total);
    assert_eq!(v.statfs().f_bfree, 0);
    f.sync(false).unwrap();
    assert_eq!(
        v.open("another", rw_create())
            .and_then(|g| g.write(b"x"))
            .err(),
        Some(ENOSPC)
    );
    v.sync().unwrap();
    fsck(&dev.image(), "a full volume");
    drop(f);
    // Remount: the data is there, deleting frees the space again.
    let v = mount(dev.clone());
    assert_eq!(read_all(&v, "big").unwrap().len(), total);
    v.unlink("big").unwrap();
    write_file(&v, "after", b"room again");
    assert_eq!(read_all(&v, "keep").unwrap(), b"kept");
    v.sync().unwrap();
    fsck(&dev.image(), "after freeing a full volume");
}

#[test]
fn read_only_device_gives_erofs() {
    let img = {
        let dev = MemDisk::new(fresh_image(8, None));
        let v = mount(dev.clone());
        write_file(&v, "x", b"data");
        dev.image()
    };
    let dev = MemDisk::read_only(img);
    let v = mount(dev);
    assert!(v.read_only());
    assert_eq!(read_all(&v, "x").unwrap(), b"data");
    assert_eq!(v.open("y", rw_create()).err(), Some(EROFS));
    assert_eq!(v.mkdir("d", 0).err(), Some(EROFS));
    assert_eq!(v.unlink("x").err(), Some(EROFS));
    assert_eq!(v.rename("x", "z", 0).err(), Some(EROFS));
    assert_eq!(v.statfs().f_flags & 1, 1);
}

#[test]
fn not_a_volume_of_ours() {
    let msg = |img: Vec<u8>| {
        unikernel_fs::open_volume(MemDisk::new(img), true, 0, || 0)
            .err()
            .map(|e| e.0)
            .unwrap()
    };
    assert!(msg(vec![0u8; 8 << 20]).contains("unformatted"));
    let mut ext = vec![0u8; 8 << 20];
    ext[1024 + 56] = 0x53;
    ext[1024 + 57] = 0xEF;
    ext[5] = 1;
    assert!(msg(ext).contains("ext2/3/4"));
    let good = fresh_image(8, None);
    assert!(msg(good[..4 << 20].to_vec()).contains("truncated"));
    assert!(msg(good[..(8 << 20) - 4096].to_vec()).contains("truncated"));
    // A FAT volume made by another tool (no journal header after it).
    if let Some(mkfs) = tool("mkfs.fat") {
        let d = tmpdir("mkfs");
        let p = d.join("other.img");
        std::fs::write(&p, vec![0u8; 8 << 20]).unwrap();
        let st = std::process::Command::new(mkfs).arg(&p).output().unwrap();
        assert!(st.status.success());
        let m = msg(std::fs::read(&p).unwrap());
        assert!(m.contains("without the unikernel journal"), "{m}");
    }
    // Both header copies damaged.
    let mut bad = good.clone();
    let (fat, _) = unikernel_fs::host::layout(8 << 20).unwrap();
    let at = fat as usize * 512;
    bad[at + 20] ^= 0xff;
    bad[at + 512 + 20] ^= 0xff;
    assert!(msg(bad).contains("journal corrupt"));
}

#[test]
fn a_file_bigger_than_the_cache_survives_random_overwrites() {
    // 24 MiB: more than the clean cache (8 MiB) and the dirty limit (4 MiB),
    // so blocks go clean -> dirty -> clean -> evicted many times.
    let dev = MemDisk::new(fresh_image(64, None));
    let v = mount(dev.clone());
    let mut model: Vec<u8> = (0..24u32 << 20).map(|i| (i / 4096) as u8).collect();
    write_file(&v, "big", &model);
    let f = v.open("big", rw_create()).unwrap();
    let mut x = 0x9e37_79b9u64;
    for i in 0..3000u32 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let at = (x % (model.len() as u64 - 5000)) as usize;
        let patch = vec![(i % 251) as u8; 1 + (x >> 40) as usize % 5000];
        f.pwrite(&patch, at as u64).unwrap();
        model[at..at + patch.len()].copy_from_slice(&patch);
        if i % 100 == 0 {
            let mut b = vec![0u8; 9000];
            let r = (x >> 8) as usize % (model.len() - 9000);
            f.pread(&mut b, r as u64).unwrap();
            assert_eq!(&b[..], &model[r..r + 9000], "step {i}");
            f.sync(true).unwrap();
        }
    }
    f.sync(false).unwrap();
    assert!(read_all(&v, "big").unwrap() == model);
    drop((f, v));
    let v = mount(dev.clone());
    assert!(read_all(&v, "big").unwrap() == model, "after a remount");
    fsck(&dev.image(), "after random overwrites");
}

#[test]
fn unlinked_while_open_lives_until_the_last_close() {
    let dev = MemDisk::new(fresh_image(16, None));
    let v = mount(dev.clone());
    let free0 = v.statfs().f_bfree;
    let data = vec![0x42u8; 200_000];
    write_file(&v, "tmp", &data);
    let h = v.open("tmp", rw_create()).unwrap();
    let h2 = v.open("tmp", ro()).unwrap();
    v.unlink("tmp").unwrap();
    assert_eq!(v.stat("tmp").err(), Some(ENOENT));
    assert!(
        list(&v, "").is_empty(),
        "hidden from listings: {:?}",
        list(&v, "")
    );
    // The handles still read and write the old file.
    h.pwrite(b"still here", 0).unwrap();
    let mut b = [0u8; 10];
    h2.pread(&mut b, 0).unwrap();
    assert_eq!(&b, b"still here");
    assert_eq!(h.stat().size, 200_000);
    // A new file of the same name is another file.
    write_file(&v, "tmp", b"new");
    assert_eq!(read_all(&v, "tmp").unwrap(), b"new");
    h.sync(false).unwrap();
    assert!(v.statfs().f_bfree < free0 - 40);
    drop(h);
    assert!(v.statfs().f_bfree < free0 - 40, "one handle is still open");
    drop(h2);
    v.unlink("tmp").unwrap();
    assert_eq!(
        v.statfs().f_bfree,
        free0,
        "the last close frees the clusters"
    );
    v.sync().unwrap();
    fsck(&dev.image(), "after unlink while open");
}

#[test]
fn files_unlinked_while_open_at_a_crash_go_at_the_next_mount() {
    let dev = MemDisk::new(fresh_image(16, None));
    let v = mount(dev.clone());
    let free0 = v.statfs().f_bfree;
    write_file(&v, "scratch", &vec![1u8; 100_000]);
    let h = v.open("scratch", rw_create()).unwrap();
    v.unlink("scratch").unwrap();
    v.sync().unwrap();
    // The machine stops with the file open: the image has the hidden file.
    let img = dev.image();
    std::mem::forget(h);
    std::mem::forget(v);
    // Read-only: nothing is removed, the space is still taken.
    let ro_vol = mount(MemDisk::read_only(img.clone()));
    assert!(ro_vol.statfs().f_bfree < free0 - 20);
    let dev2 = MemDisk::new(img);
    let v2 = mount(dev2.clone());
    assert!(list(&v2, "").is_empty());
    assert_eq!(v2.statfs().f_bfree, free0);
    v2.sync().unwrap();
    fsck(&dev2.image(), "after removing orphans");
}
