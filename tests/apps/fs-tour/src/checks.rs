//! The std::fs tour proper: `write` leaves a known tree under DIR/tour and
//! checks each step as it goes; `verify` checks the tree from scratch (on
//! a disk volume, in a second boot).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Default)]
pub struct Tour {
    pub passed: u32,
    pub failed: u32,
}

impl Tour {
    /// Record one check: `Ok(())` passes, `Err(why)` fails.
    pub fn check(&mut self, name: &str, r: Result<(), String>) {
        match r {
            Ok(()) => {
                self.passed += 1;
                println!("ok {name}");
            }
            Err(why) => {
                self.failed += 1;
                println!("FAIL {name}: {why}");
            }
        }
    }
}

/// `a == b`, or a message with both.
pub fn same<T: PartialEq + std::fmt::Debug>(what: &str, a: T, b: T) -> Result<(), String> {
    if a == b {
        Ok(())
    } else {
        Err(format!("{what}: got {a:?}, want {b:?}"))
    }
}

pub fn io<T>(what: &str, r: std::io::Result<T>) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {e}"))
}

fn read(path: &str) -> Result<Vec<u8>, String> {
    io(path, fs::read(path))
}

/// The bytes of the big file: not a repeating page, so misplaced pages show.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

pub const BIG: usize = 300_000;
/// The modification time `write` sets on a.txt (even seconds: FAT keeps 2 s).
pub const MTIME: u64 = 1_700_000_000;

fn p(dir: &str, name: &str) -> String {
    format!("{dir}/tour/{name}")
}

pub fn write(t: &mut Tour, dir: &str) {
    let base = format!("{dir}/tour");
    let _ = fs::remove_dir_all(&base);
    t.check("mkdir", io("create_dir", fs::create_dir(&base)));
    let a = p(dir, "a.txt");
    t.check(
        "create+write",
        (|| {
            io(
                "create",
                File::create(&a).and_then(|mut f| f.write_all(b"hello")),
            )?;
            same("contents", read(&a)?, b"hello".to_vec())
        })(),
    );
    t.check(
        "append",
        (|| {
            let mut f = io("open append", OpenOptions::new().append(true).open(&a))?;
            io("write", f.write_all(b" world"))?;
            same("contents", read(&a)?, b"hello world".to_vec())
        })(),
    );
    t.check(
        "pwrite at offsets",
        (|| {
            let f = io("create", File::create(p(dir, "p.bin")))?;
            io("write_at 10", f.write_all_at(b"XY", 10))?;
            io("write_at 0", f.write_all_at(b"AB", 0))?;
            io("write_at 12289", f.write_all_at(b"Z", 12289))?;
            check_p(&read(&p(dir, "p.bin"))?)
        })(),
    );
    t.check(
        "seek+read",
        (|| {
            let mut f = io("open", File::open(p(dir, "p.bin")))?;
            io("seek", f.seek(SeekFrom::Start(10)))?;
            let mut b = [0u8; 2];
            io("read", f.read_exact(&mut b))?;
            same("bytes at 10", &b, b"XY")?;
            same("seek end", io("seek", f.seek(SeekFrom::End(0)))?, 12290)
        })(),
    );
    t.check(
        "big write",
        (|| {
            io("write", fs::write(p(dir, "big.bin"), pattern(BIG)))?;
            same(
                "big contents",
                read(&p(dir, "big.bin"))? == pattern(BIG),
                true,
            )
        })(),
    );
    t.check(
        "set_len",
        (|| {
            let f = io("create", File::create(p(dir, "t.bin")))?;
            io("write", (&f).write_all(&[0xAA; 10000]))?;
            io("shrink", f.set_len(5000))?;
            same("shrunk size", io("meta", f.metadata())?.len(), 5000)?;
            io("grow", f.set_len(6000))?;
            check_t(&read(&p(dir, "t.bin"))?)
        })(),
    );
    t.check(
        "rename over",
        (|| {
            io("write new", fs::write(p(dir, "new.txt"), "new"))?;
            io("write old", fs::write(p(dir, "old.txt"), "old"))?;
            io("rename", fs::rename(p(dir, "new.txt"), p(dir, "old.txt")))?;
            same("old.txt", read(&p(dir, "old.txt"))?, b"new".to_vec())?;
            same(
                "new.txt exists",
                fs::metadata(p(dir, "new.txt")).is_ok(),
                false,
            )
        })(),
    );
    t.check(
        "unlink",
        (|| {
            io("write", fs::write(p(dir, "gone.txt"), "x"))?;
            io("remove", fs::remove_file(p(dir, "gone.txt")))?;
            let e = fs::metadata(p(dir, "gone.txt")).err().map(|e| e.kind());
            same("after unlink", e, Some(std::io::ErrorKind::NotFound))
        })(),
    );
    t.check(
        "mkdir/rmdir",
        (|| {
            io("mkdir sub", fs::create_dir(p(dir, "sub")))?;
            io("mkdir inner", fs::create_dir(p(dir, "sub/inner")))?;
            io("write keep", fs::write(p(dir, "sub/keep.txt"), "keep"))?;
            io("rmdir inner", fs::remove_dir(p(dir, "sub/inner")))?;
            let e = fs::remove_dir(p(dir, "sub"))
                .err()
                .map(|e| e.raw_os_error());
            same("rmdir non-empty", e, Some(Some(libc::ENOTEMPTY)))
        })(),
    );
    t.check(
        "O_EXCL",
        (|| {
            let e = OpenOptions::new().write(true).create_new(true).open(&a);
            same(
                "existing",
                e.err().map(|e| e.kind()),
                Some(std::io::ErrorKind::AlreadyExists),
            )?;
            io(
                "new",
                OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(p(dir, "excl.txt")),
            )
            .map(|_| ())
        })(),
    );
    t.check(
        "fsync",
        (|| {
            let f = io("open", OpenOptions::new().write(true).open(&a))?;
            io("sync_all", f.sync_all())?;
            io("sync_data", f.sync_data())
        })(),
    );
    t.check(
        "set modified",
        (|| {
            let f = io("open", OpenOptions::new().write(true).open(&a))?;
            io(
                "set_modified",
                f.set_modified(UNIX_EPOCH + Duration::from_secs(MTIME)),
            )
        })(),
    );
    t.check("fcntl lock", fcntl_lock(&a));
    t.check("statfs", statfs(dir));
    t.check(
        "fsync dir",
        (|| {
            io("open dir", File::open(&base))?
                .sync_all()
                .map_err(|e| format!("sync dir: {e}"))
        })(),
    );
}

fn check_p(d: &[u8]) -> Result<(), String> {
    same("p.bin size", d.len(), 12290)?;
    same("head", &d[..2], b"AB")?;
    same("hole", d[2..10].iter().all(|&b| b == 0), true)?;
    same("at 10", &d[10..12], b"XY")?;
    same("second hole", d[12..12289].iter().all(|&b| b == 0), true)?;
    same("tail", d[12289], b'Z')
}

fn check_t(d: &[u8]) -> Result<(), String> {
    same("t.bin size", d.len(), 6000)?;
    same("kept", d[..5000].iter().all(|&b| b == 0xAA), true)?;
    same("grown part zero", d[5000..].iter().all(|&b| b == 0), true)
}

fn last_errno() -> Option<i32> {
    std::io::Error::last_os_error().raw_os_error()
}

fn fcntl_lock(path: &str) -> Result<(), String> {
    let f = io("open", OpenOptions::new().read(true).write(true).open(path))?;
    let fd = f.as_raw_fd();
    // SAFETY: all-zero is a valid struct flock.
    let mut l: libc::flock = unsafe { std::mem::zeroed() };
    l.l_type = libc::F_WRLCK as i16;
    l.l_whence = libc::SEEK_SET as i16;
    // SAFETY: fd is open; l is a valid struct flock for the call.
    let r = unsafe { libc::fcntl(fd, libc::F_SETLK, &l) };
    same("F_SETLK", r, 0)?;
    // SAFETY: as above.
    let r = unsafe { libc::fcntl(fd, libc::F_GETLK, &mut l) };
    same("F_GETLK", (r, l.l_type), (0, libc::F_UNLCK as i16))?;
    // Release it: an OFD lock conflicts even with this process's own POSIX lock.
    l.l_type = libc::F_UNLCK as i16;
    // SAFETY: as above.
    let r = unsafe { libc::fcntl(fd, libc::F_SETLK, &l) };
    same("F_SETLK F_UNLCK", r, 0)?;
    l.l_type = libc::F_RDLCK as i16;
    l.l_pid = 0;
    // SAFETY: as above.
    let r = unsafe { libc::fcntl(fd, libc::F_OFD_SETLK, &l) };
    same(
        "F_OFD_SETLK",
        (r, if r < 0 { last_errno() } else { None }),
        (0, None),
    )?;
    l.l_type = 7;
    // SAFETY: as above.
    let r = unsafe { libc::fcntl(fd, libc::F_SETLK, &l) };
    same("bad type", (r, last_errno()), (-1, Some(libc::EINVAL)))?;
    // SAFETY: fd is open.
    let r = unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) };
    same("flock", r, 0)?;
    let ro = io("open ro", File::open(path))?;
    l.l_type = libc::F_WRLCK as i16;
    // SAFETY: as above, on the read-only descriptor.
    let r = unsafe { libc::fcntl(ro.as_raw_fd(), libc::F_SETLK, &l) };
    same(
        "write lock on read-only fd",
        (r, last_errno()),
        (-1, Some(libc::EBADF)),
    )
}

fn statfs(dir: &str) -> Result<(), String> {
    let c = std::ffi::CString::new(dir).map_err(|e| e.to_string())?;
    // SAFETY: all-zero is a valid struct statfs.
    let mut s: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is NUL-terminated, s a valid out pointer.
    let r = unsafe { libc::statfs(c.as_ptr(), &mut s) };
    same("statfs", r, 0)?;
    if s.f_bsize == 0 || s.f_blocks == 0 || s.f_bfree > s.f_blocks {
        return Err(format!(
            "bsize {} blocks {} bfree {}",
            s.f_bsize, s.f_blocks, s.f_bfree
        ));
    }
    Ok(())
}

pub fn verify(t: &mut Tour, dir: &str) {
    t.check(
        "verify a.txt",
        (|| same("a.txt", read(&p(dir, "a.txt"))?, b"hello world".to_vec()))(),
    );
    t.check("verify p.bin", (|| check_p(&read(&p(dir, "p.bin"))?))());
    t.check("verify t.bin", (|| check_t(&read(&p(dir, "t.bin"))?))());
    t.check(
        "verify big.bin",
        (|| {
            same(
                "big contents",
                read(&p(dir, "big.bin"))? == pattern(BIG),
                true,
            )
        })(),
    );
    t.check(
        "verify rename",
        (|| {
            same("old.txt", read(&p(dir, "old.txt"))?, b"new".to_vec())?;
            same(
                "new.txt exists",
                fs::metadata(p(dir, "new.txt")).is_ok(),
                false,
            )
        })(),
    );
    t.check(
        "verify unlink",
        same(
            "gone.txt exists",
            fs::metadata(p(dir, "gone.txt")).is_ok(),
            false,
        ),
    );
    t.check(
        "verify dirs",
        (|| {
            same(
                "sub is_dir",
                io("meta sub", fs::metadata(p(dir, "sub")))?.is_dir(),
                true,
            )?;
            same(
                "inner exists",
                fs::metadata(p(dir, "sub/inner")).is_ok(),
                false,
            )?;
            same("keep.txt", read(&p(dir, "sub/keep.txt"))?, b"keep".to_vec())
        })(),
    );
    t.check(
        "verify read_dir",
        (|| {
            let mut names: Vec<String> = io("read_dir", fs::read_dir(format!("{dir}/tour")))?
                .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect::<Result<_, _>>()
                .map_err(|e| e.to_string())?;
            names.sort();
            same(
                "names",
                names.join(","),
                "a.txt,big.bin,excl.txt,old.txt,p.bin,sub,t.bin".to_string(),
            )
        })(),
    );
    t.check(
        "verify metadata",
        (|| {
            let m = io("meta a.txt", fs::metadata(p(dir, "a.txt")))?;
            same("size", m.len(), 11)?;
            same("is_file", (m.is_file(), m.is_dir()), (true, false))?;
            let mt = io("modified", m.modified())?;
            same(
                "mtime",
                mt.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).ok(),
                Some(MTIME),
            )?;
            // The directory changed during `write`: a sane recent time.
            let dm = io(
                "dir modified",
                io("meta dir", fs::metadata(format!("{dir}/tour")))?.modified(),
            )?;
            let age = SystemTime::now().duration_since(dm).unwrap_or_default();
            if dm < UNIX_EPOCH + Duration::from_secs(1_600_000_000)
                || age > Duration::from_secs(86400 * 365)
            {
                return Err(format!("directory mtime {dm:?} is not recent"));
            }
            Ok(())
        })(),
    );
}
