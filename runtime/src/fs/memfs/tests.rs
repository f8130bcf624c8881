//! Host tests of the in-memory filesystem.

use super::*;
use crate::fs::SEEK_END;

fn tmp(limit: u64) -> MemFs {
    MemFs::new("tmpfs", TMPFS_MAGIC, false, limit)
}

fn rw(create: bool) -> OpenFlags {
    OpenFlags {
        read: true,
        write: true,
        create,
        mode: 0o644,
        ..OpenFlags::default()
    }
}

fn read_all(f: &dyn File) -> Vec<u8> {
    let mut out = alloc::vec![0u8; f.stat().size as usize + 10];
    let n = f.pread(&mut out, 0).unwrap();
    out.truncate(n);
    out
}

use alloc::vec::Vec;

#[test]
fn create_write_read_append() {
    let fs = tmp(1 << 20);
    let f = fs.open("a", rw(true)).unwrap();
    assert_eq!(f.write(b"hello").unwrap(), 5);
    assert_eq!(f.write(b" world").unwrap(), 6);
    assert_eq!(read_all(&*f), b"hello world");
    assert_eq!(f.pwrite(b"HELLO", 0).unwrap(), 5);
    // A write past the end leaves a hole of zeros.
    assert_eq!(f.pwrite(b"!", 8192).unwrap(), 1);
    let st = fs.stat("a").unwrap();
    assert_eq!(st.size, 8193);
    assert_eq!(st.mode, S_IFREG | 0o644);
    assert_eq!(st.nlink, 1);
    assert_eq!(st.blocks, 16, "two pages: the hole's page is not allocated");
    let mut b = [7u8; 4];
    assert_eq!(f.pread(&mut b, 5000).unwrap(), 4);
    assert_eq!(b, [0; 4]);
    assert_eq!(f.seek(0, SEEK_END).unwrap(), 8193);
    let again = fs.open("a", rw(true)).unwrap();
    assert_eq!(&read_all(&*again)[..11], b"HELLO world");
    let excl = OpenFlags {
        exclusive: true,
        ..rw(true)
    };
    assert_eq!(fs.open("a", excl).err(), Some(EEXIST));
    assert_eq!(fs.open("missing", rw(false)).err(), Some(ENOENT));
    assert_eq!(fs.open("a/x", rw(true)).err(), Some(ENOTDIR));
}

#[test]
fn sparse_files_take_only_written_pages() {
    let fs = tmp(1 << 20);
    let f = fs.open("s", rw(true)).unwrap();
    assert_eq!(f.pwrite(b"far", 1 << 40).unwrap(), 3);
    assert_eq!(f.stat().size, (1 << 40) + 3);
    assert_eq!(fs.used_pages(), 1);
    let mut b = [1u8; 3];
    assert_eq!(f.pread(&mut b, 1 << 39).unwrap(), 3);
    assert_eq!(b, [0; 3]);
    f.set_len(10).unwrap();
    assert_eq!(fs.used_pages(), 0);
    assert_eq!(f.pwrite(b"x", u64::MAX - 1), Err(EFBIG));
}

#[test]
fn truncate_frees_and_zeroes() {
    let fs = tmp(1 << 20);
    let f = fs.open("t", rw(true)).unwrap();
    f.write(&[1u8; 10000]).unwrap();
    assert_eq!(fs.used_pages(), 3);
    f.set_len(5000).unwrap();
    assert_eq!(fs.used_pages(), 2);
    f.set_len(9000).unwrap();
    let data = read_all(&*f);
    assert_eq!(data.len(), 9000);
    assert!(data[..5000].iter().all(|&b| b == 1));
    assert!(
        data[5000..].iter().all(|&b| b == 0),
        "grown part reads as zeros"
    );
    fs.truncate("t", 0).unwrap();
    assert_eq!(fs.used_pages(), 0);
    let trunc = OpenFlags {
        truncate: true,
        ..rw(false)
    };
    f.write(b"abc").unwrap();
    drop(fs.open("t", trunc).unwrap());
    assert_eq!(fs.stat("t").unwrap().size, 0);
    assert_eq!(fs.truncate("", 0), Err(EISDIR));
}

#[test]
fn enospc_and_space_comes_back() {
    let fs = tmp(4 * PAGE as u64);
    let f = fs.open("big", rw(true)).unwrap();
    // Five pages do not fit in four: a short write, then ENOSPC.
    assert_eq!(f.write(&[9u8; 5 * PAGE]).unwrap(), 4 * PAGE);
    assert_eq!(f.write(&[9u8; 10]), Err(ENOSPC));
    let g = fs.open("other", rw(true)).unwrap();
    assert_eq!(g.write(b"x"), Err(ENOSPC));
    assert_eq!(g.allocate(0, 1), Err(ENOSPC));
    assert_eq!(fs.statfs().f_bfree, 0);
    // An unlinked file that is open keeps its space until closed.
    fs.unlink("big").unwrap();
    assert_eq!(g.write(b"x"), Err(ENOSPC));
    drop(f);
    assert_eq!(fs.used_pages(), 0);
    assert_eq!(g.write(b"x").unwrap(), 1);
    g.allocate(0, 3 * PAGE as u64).unwrap();
    assert_eq!(g.stat().size, 3 * PAGE as i64);
    assert_eq!(fs.statfs().f_bfree, 1);
    assert_eq!(fs.statfs().f_blocks, 4);
}

#[test]
fn directories_and_readdir() {
    let fs = tmp(1 << 20);
    fs.mkdir("d", 0o755).unwrap();
    assert_eq!(fs.mkdir("d", 0o755), Err(EEXIST));
    assert_eq!(fs.stat("").unwrap().nlink, 3);
    fs.mkdir("d/sub", 0o700).unwrap();
    drop(fs.open("d/f1", rw(true)).unwrap());
    drop(fs.open("d/f2", rw(true)).unwrap());
    assert_eq!(fs.rmdir("d"), Err(ENOTEMPTY));
    assert_eq!(fs.unlink("d"), Err(EISDIR));
    assert_eq!(fs.rmdir("d/f1"), Err(ENOTDIR));
    let dir = fs
        .open(
            "d",
            OpenFlags {
                read: true,
                ..OpenFlags::default()
            },
        )
        .unwrap();
    assert_eq!(dir.read(&mut [0u8; 4]), Err(EISDIR));
    let mut buf = [0u8; 4096];
    let n = dir.getdents64(&mut buf).unwrap();
    let mut names = Vec::new();
    let mut at = 0;
    while at < n {
        let reclen = u16::from_le_bytes([buf[at + 16], buf[at + 17]]) as usize;
        let name = &buf[at + 19..at + reclen];
        let end = name.iter().position(|&c| c == 0).unwrap();
        names.push((
            alloc::string::String::from_utf8(name[..end].to_vec()).unwrap(),
            buf[at + 18],
        ));
        at += reclen;
    }
    let want: Vec<(&str, u8)> = alloc::vec![(".", 4), ("..", 4), ("f1", 8), ("f2", 8), ("sub", 4)];
    assert_eq!(
        names
            .iter()
            .map(|(n, t)| (n.as_str(), *t))
            .collect::<Vec<_>>(),
        want
    );
    assert_eq!(dir.getdents64(&mut buf).unwrap(), 0);
    // A tiny buffer: EINVAL, as Linux.
    dir.seek(0, crate::fs::SEEK_SET).unwrap();
    assert_eq!(dir.getdents64(&mut buf[..10]), Err(EINVAL));
    fs.unlink("d/f1").unwrap();
    fs.unlink("d/f2").unwrap();
    fs.rmdir("d/sub").unwrap();
    fs.rmdir("d").unwrap();
    assert_eq!(fs.stat("").unwrap().nlink, 2);
    assert_eq!(fs.rmdir(""), Err(EBUSY));
}

#[test]
fn rename_rules() {
    let fs = tmp(1 << 20);
    let a = fs.open("a", rw(true)).unwrap();
    a.write(b"new").unwrap();
    let b = fs.open("b", rw(true)).unwrap();
    b.write(b"old").unwrap();
    // Over an existing file: b now names a's inode; the old b stays readable while open.
    fs.rename("a", "b", 0).unwrap();
    assert_eq!(fs.stat("a").err(), Some(ENOENT));
    let nb = fs.open("b", rw(false)).unwrap();
    assert_eq!(read_all(&*nb), b"new");
    assert_eq!(read_all(&*b), b"old");
    assert_eq!(fs.rename("missing", "x", 0), Err(ENOENT));
    fs.mkdir("d", 0o755).unwrap();
    fs.mkdir("e", 0o755).unwrap();
    assert_eq!(fs.rename("b", "d", 0), Err(EISDIR));
    assert_eq!(fs.rename("d", "b", 0), Err(ENOTDIR));
    assert_eq!(fs.rename("d", "d/x", 0), Err(EINVAL));
    drop(fs.open("e/inside", rw(true)).unwrap());
    assert_eq!(fs.rename("d", "e", 0), Err(ENOTEMPTY));
    assert_eq!(
        fs.rename("b", "e/inside", vfs::RENAME_NOREPLACE),
        Err(EEXIST)
    );
    fs.rename("b", "e/inside", vfs::RENAME_EXCHANGE).unwrap();
    assert_eq!(read_all(&*fs.open("e/inside", rw(false)).unwrap()), b"new");
    fs.rename("d", "e/moved", 0).unwrap();
    assert_eq!(fs.stat("").unwrap().nlink, 3, "root: itself, '..' of e");
    assert_eq!(fs.stat("e").unwrap().nlink, 3);
    assert_eq!(fs.rename("e", "e/moved/x", 0), Err(EINVAL));
    fs.rename("e/inside", "e/inside", 0).unwrap();
    assert_eq!(fs.rename("b", "c", 8), Err(EINVAL));
}

#[test]
fn read_only_links_times_modes() {
    let ro = MemFs::new("rootfs", RAMFS_MAGIC, true, u64::MAX);
    ro.add_dir("etc", 0o755).unwrap();
    ro.add_static_file("etc/x", 0o644, b"static").unwrap();
    ro.add_symlink("link", "/etc/x").unwrap();
    assert_eq!(ro.readlink("link").unwrap(), "/etc/x");
    assert_eq!(ro.readlink("etc/x"), Err(EINVAL));
    assert_eq!(ro.stat("link").unwrap().mode & 0o170000, S_IFLNK);
    assert_eq!(ro.open("etc/new", rw(true)).err(), Some(EROFS));
    assert_eq!(ro.open("etc/x", rw(false)).err(), Some(EROFS));
    let f = ro
        .open(
            "etc/x",
            OpenFlags {
                read: true,
                ..OpenFlags::default()
            },
        )
        .unwrap();
    assert_eq!(read_all(&*f), b"static");
    assert_eq!(f.pwrite(b"x", 0), Err(EROFS));
    assert_eq!(ro.mkdir("etc", 0o755), Err(EEXIST));
    assert_eq!(ro.mkdir("new", 0o755), Err(EROFS));
    assert_eq!(ro.unlink("etc/x"), Err(EROFS));
    assert_eq!(ro.statfs().f_flags, vfs::ST_RDONLY);

    let fs = tmp(1 << 20);
    drop(fs.open("f", rw(true)).unwrap());
    fs.link("f", "g").unwrap();
    assert_eq!(fs.stat("g").unwrap().nlink, 2);
    assert_eq!(fs.stat("f").unwrap().ino, fs.stat("g").unwrap().ino);
    fs.unlink("f").unwrap();
    assert_eq!(fs.stat("g").unwrap().nlink, 1);
    fs.chmod("g", 0o600).unwrap();
    assert_eq!(fs.stat("g").unwrap().mode, S_IFREG | 0o600);
    let t = Timespec { sec: 1234, nsec: 5 };
    fs.set_times("g", None, Some(t)).unwrap();
    let st = fs.stat("g").unwrap();
    assert_eq!((st.mtime, st.mtime_nsec), (1234, 5));
    fs.symlink("g", "s").unwrap();
    assert_eq!(fs.symlink("g", "s"), Err(EEXIST));
    assert_eq!(fs.open("s", rw(false)).err(), Some(ELOOP));
    let long = "n".repeat(256);
    assert_eq!(fs.mkdir(&long, 0o755), Err(ENAMETOOLONG));
}
