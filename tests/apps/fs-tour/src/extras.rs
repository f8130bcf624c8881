//! Checks beyond the std::fs tour: what the in-memory filesystems support
//! and disk formats may not (symbolic and hard links), path resolution
//! (cwd, `..`, dirfd-relative calls, ELOOP, O_NOFOLLOW), shared file
//! mappings, a full filesystem, and the read-only root.

use crate::checks::{io, same, Tour};
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{symlink, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;

fn os_err<T>(r: std::io::Result<T>) -> Option<i32> {
    r.err().and_then(|e| e.raw_os_error())
}

fn cstr(s: &str) -> CString {
    CString::new(s).expect("no NUL in test paths")
}

fn last_errno() -> Option<i32> {
    std::io::Error::last_os_error().raw_os_error()
}

pub fn run(t: &mut Tour, dir: &str) {
    let base = format!("{dir}/extras");
    let _ = fs::remove_dir_all(&base);
    t.check(
        "mkdir",
        io("create_dir", fs::create_dir_all(format!("{base}/d/e"))),
    );
    t.check(
        "cwd and relative paths",
        (|| {
            io("chdir", std::env::set_current_dir(format!("{base}/d")))?;
            same(
                "getcwd",
                io("current_dir", std::env::current_dir())?,
                format!("{base}/d").into(),
            )?;
            io("write rel", fs::write("e/rel.txt", "rel"))?;
            same(
                "via ..",
                io("read", fs::read("../d/e/rel.txt"))?,
                b"rel".to_vec(),
            )?;
            io("chdir ..", std::env::set_current_dir(".."))?;
            same(
                "getcwd after ..",
                io("current_dir", std::env::current_dir())?,
                base.clone().into(),
            )?;
            io("chdir /", std::env::set_current_dir("/"))
        })(),
    );
    t.check(
        "dotdot across a mount",
        (|| {
            // For /tmp or /data, DIR/.. is / (another filesystem).
            let parent = std::path::Path::new(dir)
                .parent()
                .unwrap_or(std::path::Path::new("/"));
            let up = io("canonicalize", fs::canonicalize(format!("{dir}/..")))?;
            same("DIR/..", up.as_path(), parent)?;
            let n = io("read_dir", fs::read_dir(format!("{dir}/..")))?.count();
            same("DIR/.. lists", n > 0, true)
        })(),
    );
    t.check(
        "symlinks",
        (|| {
            io("symlink", symlink("d/e/rel.txt", format!("{base}/link")))?;
            same(
                "read through",
                io("read", fs::read(format!("{base}/link")))?,
                b"rel".to_vec(),
            )?;
            same(
                "read_link",
                io("read_link", fs::read_link(format!("{base}/link")))?,
                "d/e/rel.txt".into(),
            )?;
            same(
                "lstat is link",
                io("lstat", fs::symlink_metadata(format!("{base}/link")))?
                    .file_type()
                    .is_symlink(),
                true,
            )?;
            io(
                "dir link",
                symlink(format!("{base}/d"), format!("{base}/dlink")),
            )?;
            same(
                "through dir link",
                io("read", fs::read(format!("{base}/dlink/e/rel.txt")))?,
                b"rel".to_vec(),
            )?;
            same(
                "canonicalize",
                io(
                    "canon",
                    fs::canonicalize(format!("{base}/dlink/e/../e/rel.txt")),
                )?,
                format!("{base}/d/e/rel.txt").into(),
            )
        })(),
    );
    t.check(
        "ELOOP",
        (|| {
            io(
                "loop a",
                symlink(format!("{base}/loopb"), format!("{base}/loopa")),
            )?;
            io(
                "loop b",
                symlink(format!("{base}/loopa"), format!("{base}/loopb")),
            )?;
            same(
                "open loop",
                os_err(File::open(format!("{base}/loopa"))),
                Some(libc::ELOOP),
            )?;
            let nofollow = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(format!("{base}/link"));
            same("O_NOFOLLOW on a link", os_err(nofollow), Some(libc::ELOOP))
        })(),
    );
    t.check(
        "ENAMETOOLONG",
        same(
            "long name",
            os_err(File::create(format!("{base}/{}", "n".repeat(256)))),
            Some(libc::ENAMETOOLONG),
        ),
    );
    t.check(
        "hard link",
        (|| {
            io(
                "link",
                fs::hard_link(format!("{base}/d/e/rel.txt"), format!("{base}/hard")),
            )?;
            same(
                "nlink",
                std::os::unix::fs::MetadataExt::nlink(&io(
                    "meta",
                    fs::metadata(format!("{base}/hard")),
                )?),
                2,
            )
        })(),
    );
    t.check(
        "dirfd openat/mkdirat/unlinkat",
        (|| {
            let d = io("open dir", File::open(format!("{base}/d")))?;
            let fd = d.as_raw_fd();
            // SAFETY: fd is an open directory, the paths are NUL-terminated.
            let f = unsafe { libc::openat(fd, cstr("e/rel.txt").as_ptr(), libc::O_RDONLY) };
            if f < 0 {
                return Err(format!("openat: errno {:?}", last_errno()));
            }
            // SAFETY: f was just opened by us.
            unsafe { libc::close(f) };
            // SAFETY: as above.
            same(
                "mkdirat",
                unsafe { libc::mkdirat(fd, cstr("m").as_ptr(), 0o755) },
                0,
            )?;
            // SAFETY: as above.
            same(
                "unlinkat dir",
                unsafe { libc::unlinkat(fd, cstr("m").as_ptr(), libc::AT_REMOVEDIR) },
                0,
            )?;
            // SAFETY: fd is open; fchdir changes the working directory.
            same("fchdir", unsafe { libc::fchdir(fd) }, 0)?;
            same(
                "cwd",
                io("current_dir", std::env::current_dir())?,
                format!("{base}/d").into(),
            )?;
            io("chdir /", std::env::set_current_dir("/"))
        })(),
    );
    t.check(
        "chmod",
        (|| {
            let f = format!("{base}/d/e/rel.txt");
            io(
                "chmod",
                fs::set_permissions(&f, fs::Permissions::from_mode(0o600)),
            )?;
            same(
                "mode",
                io("meta", fs::metadata(&f))?.permissions().mode() & 0o7777,
                0o600,
            )
        })(),
    );
    t.check(
        "rename across mounts",
        same(
            "EXDEV",
            os_err(fs::rename(format!("{base}/hard"), "/proc/x")),
            Some(libc::EXDEV),
        ),
    );
    t.check("raw calls", raw_calls(&format!("{base}/raw.bin")));
    t.check(
        "mmap shared write-back",
        mmap_shared(&format!("{base}/map.bin")),
    );
    t.check(
        "unlinked but open",
        (|| {
            let path = format!("{base}/open.txt");
            let mut f = io(
                "create",
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&path),
            )?;
            io("remove", fs::remove_file(&path))?;
            io("write", f.write_all(b"still here"))?;
            let mut b = [0u8; 10];
            io(
                "read_at",
                std::os::unix::fs::FileExt::read_exact_at(&f, &mut b, 0),
            )?;
            same("contents", &b, b"still here")
        })(),
    );
}

/// preadv/pwritev, fallocate, statx, and the access-mode checks.
fn raw_calls(path: &str) -> Result<(), String> {
    let f = io(
        "create",
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path),
    )?;
    let fd = f.as_raw_fd();
    let (a, b) = (*b"abc", *b"defg");
    let iov = [
        libc::iovec {
            iov_base: a.as_ptr() as *mut _,
            iov_len: 3,
        },
        libc::iovec {
            iov_base: b.as_ptr() as *mut _,
            iov_len: 4,
        },
    ];
    // SAFETY: the iovecs point at live buffers of the given lengths.
    same(
        "pwritev",
        unsafe { libc::pwritev(fd, iov.as_ptr(), 2, 100) },
        7,
    )?;
    let (mut x, mut y) = ([0u8; 5], [0u8; 2]);
    let iov = [
        libc::iovec {
            iov_base: x.as_mut_ptr() as *mut _,
            iov_len: 5,
        },
        libc::iovec {
            iov_base: y.as_mut_ptr() as *mut _,
            iov_len: 2,
        },
    ];
    // SAFETY: as above, writable buffers.
    same(
        "preadv",
        unsafe { libc::preadv(fd, iov.as_ptr(), 2, 100) },
        7,
    )?;
    same("preadv bytes", (&x, &y), (b"abcde", b"fg"))?;
    // SAFETY: fd is open.
    same("fallocate", unsafe { libc::fallocate(fd, 0, 0, 10000) }, 0)?;
    same(
        "size after fallocate",
        io("meta", f.metadata())?.len(),
        10000,
    )?;
    // SAFETY: as above. Mode 1 (KEEP_SIZE): the unikernel has only mode 0
    // (EOPNOTSUPP); Linux's filesystems do it without growing the file.
    let r = unsafe { libc::fallocate(fd, libc::FALLOC_FL_KEEP_SIZE, 0, 20000) };
    if r != 0 {
        same("fallocate KEEP_SIZE", last_errno(), Some(libc::EOPNOTSUPP))?;
    }
    same(
        "size after KEEP_SIZE",
        io("meta", f.metadata())?.len(),
        10000,
    )?;
    let mut sx = [0u8; 256];
    let c = cstr(path);
    // SAFETY: c is NUL-terminated and sx has room for a struct statx.
    let r = unsafe {
        libc::syscall(
            libc::SYS_statx,
            libc::AT_FDCWD,
            c.as_ptr(),
            0,
            0x7ff,
            sx.as_mut_ptr(),
        )
    };
    same("statx", r, 0)?;
    let size = u64::from_le_bytes(sx[40..48].try_into().unwrap_or_default());
    let mode = u16::from_le_bytes([sx[28], sx[29]]) as u32;
    same(
        "statx size, type",
        (size, mode & libc::S_IFMT),
        (10000, libc::S_IFREG),
    )?;
    let ro = io("open ro", File::open(path))?;
    // SAFETY: writing a valid buffer to a read-only descriptor must fail.
    let r = unsafe { libc::write(ro.as_raw_fd(), a.as_ptr() as *const _, 3) };
    same(
        "write on read-only fd",
        (r, last_errno()),
        (-1, Some(libc::EBADF)),
    )?;
    same(
        "ftruncate on read-only fd",
        os_err(ro.set_len(0)),
        Some(libc::EINVAL),
    )
}

fn mmap_shared(path: &str) -> Result<(), String> {
    io("write", fs::write(path, vec![b'.'; 8192]))?;
    let f = io("open", OpenOptions::new().read(true).write(true).open(path))?;
    // SAFETY: a fresh shared mapping of an open file, unmapped below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            8192,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(format!("mmap: errno {:?}", last_errno()));
    }
    // SAFETY: p maps 8192 writable bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(b"mapped".as_ptr(), (p as *mut u8).add(100), 6);
        same("msync", libc::msync(p, 8192, libc::MS_SYNC), 0)?;
    }
    same(
        "after msync",
        &io("read", fs::read(path))?[100..106],
        b"mapped",
    )?;
    // SAFETY: as above.
    unsafe {
        std::ptr::copy_nonoverlapping(b"unmap".as_ptr(), (p as *mut u8).add(5000), 5);
        same("munmap", libc::munmap(p, 8192), 0)?;
    }
    let d = io("read", fs::read(path))?;
    same(
        "after munmap",
        (&d[5000..5005], d.len()),
        (&b"unmap"[..], 8192),
    )?;
    let ro = io("open ro", File::open(path))?;
    // SAFETY: a shared writable mapping of a read-only descriptor must fail.
    let q = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            ro.as_raw_fd(),
            0,
        )
    };
    same(
        "shared writable on read-only fd",
        (q == libc::MAP_FAILED, last_errno()),
        (true, Some(libc::EACCES)),
    )
}

/// Fill DIR until ENOSPC, print how much fitted, free it, write again.
pub fn fill(t: &mut Tour, dir: &str) {
    let path = format!("{dir}/fill.bin");
    let mut f = match File::create(&path) {
        Ok(f) => f,
        Err(e) => return t.check("create", Err(e.to_string())),
    };
    let chunk = vec![0x5au8; 4096];
    let mut total = 0u64;
    let err = loop {
        match f.write(&chunk) {
            Ok(n) => total += n as u64,
            Err(e) => break e,
        }
        if total > 1 << 32 {
            break std::io::Error::other("no limit");
        }
    };
    println!("fill: wrote {total} bytes, then: {err}");
    t.check(
        "ENOSPC",
        same("error", err.raw_os_error(), Some(libc::ENOSPC)),
    );
    t.check(
        "size",
        (|| same("size", io("meta", f.metadata())?.len(), total))(),
    );
    drop(f);
    t.check(
        "space back after unlink",
        (|| {
            io("remove", fs::remove_file(&path))?;
            io(
                "write again",
                fs::write(format!("{dir}/again.bin"), vec![1u8; total as usize]),
            )
        })(),
    );
}

/// Changes under `/` fail with EROFS; devices stay writable.
pub fn root_read_only(t: &mut Tour) {
    t.check(
        "create /x",
        same("create", os_err(File::create("/x")), Some(libc::EROFS)),
    );
    t.check(
        "mkdir /newdir",
        same(
            "mkdir",
            os_err(fs::create_dir("/newdir")),
            Some(libc::EROFS),
        ),
    );
    t.check(
        "write the exe entry",
        same(
            "open",
            os_err(OpenOptions::new().write(true).open("/fs-tour")),
            Some(libc::EROFS),
        ),
    );
    t.check(
        "unlink /proc/self/exe",
        same(
            "unlink",
            os_err(fs::remove_file("/proc/self/exe")),
            Some(libc::EROFS),
        ),
    );
    t.check(
        "rename in /",
        same(
            "rename",
            os_err(fs::rename("/dev", "/dev2")),
            Some(libc::EROFS),
        ),
    );
    t.check(
        "rmdir /tmp",
        same("rmdir", os_err(fs::remove_dir("/tmp")), Some(libc::EBUSY)),
    );
    // SAFETY: NUL-terminated path.
    let r = unsafe { libc::access(cstr("/").as_ptr(), libc::W_OK) };
    t.check(
        "access W_OK /",
        same("access", (r, last_errno()), (-1, Some(libc::EROFS))),
    );
    t.check("write /dev/null", io("write", fs::write("/dev/null", "x")));
    t.check(
        "read_link /proc/self/exe",
        (|| {
            same(
                "target",
                io("read_link", fs::read_link("/proc/self/exe"))?,
                "/fs-tour".into(),
            )
        })(),
    );
}
