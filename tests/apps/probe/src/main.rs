//! A test app with one subcommand per behaviour the end-to-end tests check.
//! Each prints lines the tests assert on, and exits with a known code.
use std::io::{Read, Write};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let cmd = args.get(1).map(String::as_str).unwrap_or("args");
    match cmd {
        "args" => {
            println!("argv: {:?}", &args[..]);
            for k in ["PROBE_DEFAULT", "PROBE_VAR"] {
                println!(
                    "env {k}={}",
                    std::env::var(k).unwrap_or_else(|_| "<unset>".into())
                );
            }
        }
        "exit" => {
            let code: i32 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(0);
            println!("exiting with {code}");
            std::process::exit(code);
        }
        "panic" => {
            let n = 42;
            panic!("probe panicked on purpose: {n}");
        }
        "segv" => {
            println!("about to read address 0");
            std::io::stdout().flush().unwrap();
            // SAFETY: deliberately invalid: the test checks the fault report.
            let v = unsafe { std::ptr::read_volatile(std::ptr::null::<u64>()) };
            println!("read {v} (should not happen)");
        }
        "crash" => {
            // Three frames of our own, then a write through a null pointer:
            // the crash report names each (tests/tests/boot.rs).
            println!("crashing in {}", crash_outer(3));
        }
        "abort" => {
            println!("aborting");
            std::process::abort();
        }
        "enosys" => {
            // SAFETY: an unknown system call number takes no pointers.
            let r = unsafe { libc::syscall(1000, 1, 2, 3) };
            let e = std::io::Error::last_os_error();
            println!(
                "syscall 1000 returned {r}, errno {}",
                e.raw_os_error().unwrap_or(0)
            );
            println!("still alive");
        }
        "fs" => fs(),
        "mem" => mem(),
        "guard" => guard(),
        "time" => time(),
        "vdso" => vdso(),
        "clockbench" => clockbench(),
        "syscallbench" => syscallbench(),
        "gateway" => gateway(),
        "spin" => {
            // Busy forever, no system call (a debugger's Ctrl-C stops it).
            println!("spinning");
            std::io::stdout().flush().unwrap();
            spin_forever();
        }
        "sleep" => {
            println!("sleeping");
            std::thread::sleep(std::time::Duration::from_secs(60));
            println!("woke up");
        }
        "stdin" => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s).unwrap();
            println!("stdin had {} bytes: {}", s.len(), s.trim().to_uppercase());
        }
        "write-code" => {
            // A store into one of the app's own code pages (R-X): SIGSEGV.
            let at = spin_forever as *const () as *mut u8;
            poke("app code", at);
        }
        "write-kernel" => {
            // A store into the runtime's code (the test passes an address
            // in the kernel's text segment: its ELF entry point).
            let at = args
                .get(2)
                .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok());
            let Some(at) = at else {
                eprintln!("probe: write-kernel needs a hex address");
                std::process::exit(2);
            };
            poke("kernel code", at as *mut u8);
        }
        "exec-data" => {
            // A call into the app's own .data (RW-, never executable).
            let at = core::ptr::addr_of_mut!(RET_IN_DATA) as *mut u8;
            call_data("data", at);
        }
        "exec-heap" => {
            // The same into the heap (malloc'd, mapped read-write by the runtime).
            let buf = Box::leak(vec![0xc3u8; 64].into_boxed_slice());
            call_data("heap", buf.as_mut_ptr());
        }
        "efault" => {
            // SAFETY: a bad pointer handed to the kernel must give EFAULT, not a crash.
            let r = unsafe { libc::write(1, 16 as *const libc::c_void, 10) };
            let e = std::io::Error::last_os_error();
            println!(
                "write from a bad pointer returned {r}, errno {}",
                e.raw_os_error().unwrap_or(0)
            );
        }
        other => {
            eprintln!("probe: unknown command {other}");
            std::process::exit(2);
        }
    }
}

fn fs() {
    use std::fs::File;
    let mut null = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .unwrap();
    println!("write /dev/null: {}", null.write(b"discard me").unwrap());
    let mut z = [1u8; 16];
    File::open("/dev/zero").unwrap().read_exact(&mut z).unwrap();
    println!("/dev/zero all zero: {}", z.iter().all(|&b| b == 0));
    let mut r = [0u8; 32];
    File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut r)
        .unwrap();
    println!("/dev/urandom nonzero: {}", r.iter().any(|&b| b != 0));
    let e = File::open("/nonexistent/file").unwrap_err();
    println!("open /nonexistent/file: {:?}", e.kind());
    println!("/ is dir: {}", std::fs::metadata("/").unwrap().is_dir());
    let mut names: Vec<String> = std::fs::read_dir("/dev")
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    println!("/dev: {}", names.join(" "));
    println!(
        "current_exe: {}",
        std::env::current_exe().unwrap().display()
    );
    println!("cwd: {}", std::env::current_dir().unwrap().display());
}

fn mem() {
    let n = 16 << 20;
    let v: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
    let sum: u64 = v.iter().map(|&b| b as u64).sum();
    println!("16 MiB vector sum: {sum}");
    drop(v);
    // Many allocations of varied sizes, freed out of order (musl frees eagerly).
    let mut keep = Vec::new();
    for i in 0..2000usize {
        keep.push(vec![i as u8; (i * 37) % 5000 + 1]);
        if i % 3 == 0 {
            keep.swap_remove(i / 7);
        }
    }
    let total: usize = keep.iter().map(|b| b.len()).sum();
    println!("kept {} blocks, {total} bytes", keep.len());
    let m: std::collections::HashMap<u32, u32> = (0..1000).map(|i| (i, i * i)).collect();
    println!("hashmap 999 -> {}", m[&999]);
}

fn guard() {
    // SAFETY: plain anonymous mappings; the second page is made PROT_NONE and
    // touched on purpose to check that guard pages really fault.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            8192,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        ) as *mut u8;
        assert!(p as isize != -1);
        *p = 7;
        *p.add(4096) = 9;
        assert_eq!(
            libc::mprotect(p.add(4096) as *mut _, 4096, libc::PROT_NONE),
            0
        );
        assert_eq!(
            libc::mprotect(p.add(4096) as *mut _, 4096, libc::PROT_READ),
            0
        );
        println!("after mprotect round trip: {} {}", *p, *p.add(4096));
        assert_eq!(
            libc::mprotect(p.add(4096) as *mut _, 4096, libc::PROT_NONE),
            0
        );
        println!("touching guard page at {:p}", p.add(4096));
        std::io::stdout().flush().unwrap();
        std::ptr::write_volatile(p.add(4096), 1);
        println!("wrote the guard page (should not happen)");
    }
}

/// The vDSO: present, and its clocks agree with the system calls'. Makes
/// exactly 4 raw clock_gettime system calls (the test counts them).
fn vdso() {
    // SAFETY: getauxval only reads the auxiliary vector.
    let ehdr = unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) };
    println!("vdso: {}", if ehdr != 0 { "present" } else { "absent" });
    if ehdr != 0 {
        // Which clock the vDSO reads: its data page, the page after the
        // image (runtime/src/vdso.rs `Vvar`: mode, ..., the pvclock's
        // address at +32; the pvclock's flags at +29, bit 0 = stable).
        let vvar = (ehdr + 4096) as *const u64;
        // SAFETY: the vDSO's two pages are mapped readable for the app.
        let mode = unsafe { vvar.read_volatile() };
        let clock = match mode {
            1 => "tsc".to_string(),
            2 => {
                // SAFETY: as above; mode 2 names an app-readable pvclock.
                let flags =
                    unsafe { ((vvar.add(4).read_volatile() + 29) as *const u8).read_volatile() };
                format!("pvclock, stable: {}", flags & 1 != 0)
            }
            _ => "system call".to_string(),
        };
        // One write, so that a syscall trace cannot split the line.
        let line = format!("vdso clock: {clock}\n");
        std::io::stderr().write_all(line.as_bytes()).unwrap();
    }
    let raw = |clk: libc::clockid_t| {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid timespec for the call to fill.
        unsafe { libc::syscall(libc::SYS_clock_gettime, clk, &mut ts) };
        ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
    };
    let libc_now = |clk: libc::clockid_t| {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: as above; musl uses the vDSO when there is one.
        unsafe { libc::clock_gettime(clk, &mut ts) };
        ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
    };
    for (name, clk) in [
        ("monotonic", libc::CLOCK_MONOTONIC),
        ("realtime", libc::CLOCK_REALTIME),
    ] {
        let before = raw(clk);
        let mut ordered = true;
        let mut last = 0;
        let mut nsec_ok = true;
        for _ in 0..1000 {
            let t = libc_now(clk);
            ordered &= t >= last;
            nsec_ok &= t % 1_000_000_000 < 1_000_000_000;
            last = t;
        }
        let after = raw(clk);
        let first = libc_now(clk);
        println!(
            "{name}: 1000 reads in order: {ordered}, between the system calls: {}, valid: {nsec_ok}",
            before <= last && last <= after && after <= first
        );
    }
    let mut tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    // SAFETY: a valid timeval; no timezone.
    unsafe { libc::gettimeofday(&mut tv, std::ptr::null_mut()) };
    // SAFETY: time with a null pointer only returns the seconds.
    let secs = unsafe { libc::time(std::ptr::null_mut()) };
    println!(
        "gettimeofday and time agree: {}",
        (secs - tv.tv_sec).abs() <= 1 && tv.tv_usec >= 0 && tv.tv_usec < 1_000_000
    );
    // Across threads and preemptions: each read is at least the largest
    // any thread had published before it (two threads spinning for 60 ms
    // each on one vCPU are preempted many times).
    use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
    static LATEST: AtomicI64 = AtomicI64::new(0);
    static BACKWARDS: AtomicBool = AtomicBool::new(false);
    let spin = move || {
        let end = libc_now(libc::CLOCK_MONOTONIC) + 60_000_000;
        loop {
            let seen = LATEST.load(Ordering::SeqCst);
            let t = libc_now(libc::CLOCK_MONOTONIC) as i64;
            if t < seen {
                BACKWARDS.store(true, Ordering::SeqCst);
            }
            LATEST.fetch_max(t, Ordering::SeqCst);
            if t as i128 >= end {
                break;
            }
        }
    };
    let a = std::thread::spawn(spin);
    let b = std::thread::spawn(spin);
    a.join().unwrap();
    b.join().unwrap();
    println!(
        "monotonic across threads and preemptions: {}",
        !BACKWARDS.load(Ordering::SeqCst)
    );
}

/// `ret` instructions in a writable data page (`static mut`: `.data`).
static mut RET_IN_DATA: [u8; 16] = [0xc3; 16];

/// Write one byte at `at` (a page that must not be writable): the line
/// names the address; a second line would mean the write went through.
fn poke(what: &str, at: *mut u8) {
    println!("writing to {what} at {at:p}");
    std::io::stdout().flush().unwrap();
    // SAFETY: deliberately invalid: a code page must not be writable, the
    // test checks that the store faults.
    unsafe {
        let old = std::ptr::read_volatile(at);
        std::ptr::write_volatile(at, old);
    }
    println!("wrote {what} (should not happen)");
}

/// Call `at`, which holds a `ret` (0xc3) in a data page: it must fault on
/// the instruction fetch, not return.
fn call_data(what: &str, at: *mut u8) {
    // SAFETY: the bytes are `ret`s, so the call would return if the page
    // were executable; W^X means the fetch faults (the test checks that).
    let f: extern "C" fn() = unsafe { std::mem::transmute(std::hint::black_box(at)) };
    // The byte is a `ret` indeed (read through the data mapping).
    // SAFETY: `at` points at the caller's initialised buffer.
    let first = unsafe { std::ptr::read_volatile(at) };
    println!("calling {what} at {at:p} (byte {first:#x})");
    std::io::stdout().flush().unwrap();
    f();
    println!("returned from {what} (should not happen)");
}

/// Nanoseconds per clock read through libc (the vDSO where there is one)
/// and per raw system call, for tests/bench/vdso/run.sh.
#[inline(never)]
fn spin_forever() -> ! {
    let mut n = 0u64;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

/// The libc functions the builder's shim replaces give the results musl's
/// would, through the gateway where the platform names one (`AT_SYSINFO`)
/// and through `syscall` where it does not.
fn gateway() {
    // SAFETY: getauxval has no preconditions.
    let gw = unsafe { libc::getauxval(32) }; // AT_SYSINFO
    println!("AT_SYSINFO: {}", if gw != 0 { "present" } else { "absent" });
    let r: i64;
    // SAFETY: getppid takes no arguments; `syscall` clobbers rcx and r11.
    unsafe {
        core::arch::asm!("syscall", inlateout("rax") libc::SYS_getppid => r,
            out("rcx") _, out("r11") _, options(nostack));
    }
    // SAFETY: as above, through libc.
    let via_libc = unsafe { libc::syscall(libc::SYS_getppid) };
    println!("getppid the same both ways: {}", r == via_libc);
    let mut b = [0u8; 8];
    // SAFETY: fd -1 is refused before the buffer is used.
    let n = unsafe { libc::read(-1, b.as_mut_ptr().cast(), 1) };
    let e = std::io::Error::last_os_error().raw_os_error();
    println!("read(-1): {n} errno EBADF: {}", e == Some(libc::EBADF));
    let mut fds = [0i32; 2];
    // SAFETY: fds has room for two descriptors.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let parts: [&[u8]; 2] = [b"gate", b"way!"];
    let iov: Vec<libc::iovec> = parts
        .iter()
        .map(|p| libc::iovec {
            iov_base: p.as_ptr() as *mut _,
            iov_len: p.len(),
        })
        .collect();
    // SAFETY: iov points at two live slices.
    let w = unsafe { libc::writev(fds[1], iov.as_ptr(), 2) };
    // SAFETY: a plain epoll set on the pipe's read end, events into ev.
    let (ready, ev_fd) = unsafe {
        let ep = libc::epoll_create1(libc::EPOLL_CLOEXEC);
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: 7,
        };
        assert_eq!(libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fds[0], &mut ev), 0);
        let mut out = [libc::epoll_event { events: 0, u64: 0 }; 4];
        let n = libc::epoll_wait(ep, out.as_mut_ptr(), 4, 1000);
        (n, out[0].u64)
    };
    let mut a = [0u8; 3];
    let mut c = [0u8; 5];
    let riov = [
        libc::iovec {
            iov_base: a.as_mut_ptr().cast(),
            iov_len: 3,
        },
        libc::iovec {
            iov_base: c.as_mut_ptr().cast(),
            iov_len: 5,
        },
    ];
    // SAFETY: riov points at two live buffers of those lengths.
    let rd = unsafe { libc::readv(fds[0], riov.as_ptr(), 2) };
    println!(
        "writev {w}, epoll_wait {ready} (data {ev_fd}), readv {rd}: {}",
        String::from_utf8_lossy(&[&a[..], &c[..]].concat())
    );
    let mut sv = [0i32; 2];
    // SAFETY: sv has room for two descriptors.
    assert_eq!(
        unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, sv.as_mut_ptr()) },
        0
    );
    // SAFETY: live buffers of the given lengths.
    let (s, r) = unsafe {
        let s = libc::send(sv[0], b"ping".as_ptr().cast(), 4, libc::MSG_NOSIGNAL);
        let r = libc::recv(sv[1], b.as_mut_ptr().cast(), 8, 0);
        (s, r)
    };
    println!(
        "send {s}, recv {r}: {}",
        String::from_utf8_lossy(&b[..r.max(0) as usize])
    );
    // SAFETY: a wait on a futex word that does not hold the expected value.
    let word = 5u32;
    let f = unsafe {
        libc::syscall(
            libc::SYS_futex,
            &word as *const u32,
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            6u32,
            0usize,
        )
    };
    let e = std::io::Error::last_os_error().raw_os_error();
    println!(
        "futex wait on a changed word: {f} errno EAGAIN: {}",
        e == Some(libc::EAGAIN)
    );
    let path = c"/tmp/gateway";
    // SAFETY: a NUL-terminated path; live buffers of the given lengths.
    let (pw, at, pr, fs, fds_) = unsafe {
        let fd = libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC,
            0o600,
        );
        assert!(fd >= 0);
        let pw = libc::pwrite(fd, b"hello".as_ptr().cast(), 5, 1);
        let at = libc::lseek(fd, 2, libc::SEEK_SET);
        let pr = libc::pread(fd, b.as_mut_ptr().cast(), 3, 2);
        (pw, at, pr, libc::fsync(fd), libc::fdatasync(fd))
    };
    println!(
        "pwrite {pw}, lseek {at}, pread {pr}: {}, fsync {fs}, fdatasync {fds_}",
        String::from_utf8_lossy(&b[..pr.max(0) as usize])
    );
    let mut pfd = libc::pollfd {
        fd: sv[1],
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one live pollfd; a byte on the socket pair to find.
    let (p, y) = unsafe {
        libc::send(sv[0], b"!".as_ptr().cast(), 1, 0);
        (libc::poll(&mut pfd, 1, 1000), libc::sched_yield())
    };
    println!(
        "poll {p} (POLLIN: {}), sched_yield {y}",
        pfd.revents & libc::POLLIN != 0
    );
    let anon = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    // SAFETY: fresh anonymous mappings, used only within their length and
    // unmapped once; a MAP_FIXED mapping only over the second page of the
    // first one.
    let (fixed_ok, zeroed, bad_off, bad_len, un) = unsafe {
        let m = libc::mmap(core::ptr::null_mut(), 8192, rw, anon, -1, 0);
        assert_ne!(m, libc::MAP_FAILED);
        let m = m.cast::<u8>();
        m.write(1);
        m.add(4096).write(2);
        let f = libc::mmap(m.add(4096).cast(), 4096, rw, anon | libc::MAP_FIXED, -1, 0);
        let fixed_ok = f == m.add(4096).cast();
        let zeroed = *m == 1 && *m.add(4096) == 0;
        let b = libc::mmap(core::ptr::null_mut(), 4096, rw, anon, -1, 1);
        let bad_off = b == libc::MAP_FAILED
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL);
        let b = libc::mmap(core::ptr::null_mut(), usize::MAX - 4095, rw, anon, -1, 0);
        let bad_len = b == libc::MAP_FAILED
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOMEM);
        (
            fixed_ok,
            zeroed,
            bad_off,
            bad_len,
            libc::munmap(m.cast(), 8192),
        )
    };
    println!(
        "mmap fixed {fixed_ok}, fresh page zero {zeroed}, offset EINVAL {bad_off}, length ENOMEM {bad_len}, munmap {un}"
    );
    extern "C" {
        // musl's POSIX aio; linking it gives the shim's close an
        // __aio_close to call first.
        fn aio_cancel(fd: i32, cb: *mut libc::c_void) -> i32;
    }
    // SAFETY: descriptors this function made; aio_cancel with no control
    // block only looks the descriptor's queue up.
    let (cancel, sh, c1, c2, e) = unsafe {
        let cancel = aio_cancel(fds[0], core::ptr::null_mut());
        let sh = libc::shutdown(sv[0], libc::SHUT_WR);
        let c1 = libc::close(fds[0]);
        let c2 = libc::close(fds[0]);
        (
            cancel,
            sh,
            c1,
            c2,
            std::io::Error::last_os_error().raw_os_error(),
        )
    };
    // SAFETY: a live descriptor; the buffer is 8 bytes. The byte sent for
    // poll is still there, then the end of the stream.
    let (rest, eof) = unsafe {
        (
            libc::recv(sv[1], b.as_mut_ptr().cast(), 8, 0),
            libc::recv(sv[1], b.as_mut_ptr().cast(), 8, 0),
        )
    };
    println!(
        "aio_cancel AIO_ALLDONE {}, shutdown {sh}, then recv {rest} and {eof}, close {c1}, again {c2} errno EBADF: {}",
        cancel == 2,
        e == Some(libc::EBADF)
    );
}

/// ns per system call three ways: `getppid` through `libc::syscall` (the
/// builder's shim: the gateway where the platform names one), the same
/// through a `syscall` instruction of our own, and `read(-1)` through
/// libc's `read` (the shim again, with its errno path).
fn syscallbench() {
    fn per_call(n: u32, mut f: impl FnMut()) -> f64 {
        let t = std::time::Instant::now();
        for _ in 0..n {
            f();
        }
        t.elapsed().as_nanos() as f64 / f64::from(n)
    }
    let n = 200_000;
    // SAFETY: getppid has no arguments and no effect.
    let via_libc = per_call(n, || unsafe {
        std::hint::black_box(libc::syscall(libc::SYS_getppid));
    });
    let via_insn = per_call(n, || {
        let r: i64;
        // SAFETY: getppid takes no arguments; rcx and r11 are clobbered by
        // `syscall`, nothing else is touched.
        unsafe {
            core::arch::asm!("syscall", inlateout("rax") libc::SYS_getppid => r,
                out("rcx") _, out("r11") _, options(nostack));
        }
        std::hint::black_box(r);
    });
    let mut b = 0u8;
    // SAFETY: fd -1 is refused (EBADF) before the buffer is used.
    let read_bad = per_call(n, || unsafe {
        std::hint::black_box(libc::read(-1, core::ptr::addr_of_mut!(b).cast(), 1));
    });
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EBADF)
    );
    println!("RESULT gateway_getppid {via_libc:.1} ns");
    println!("RESULT syscall_getppid {via_insn:.1} ns");
    println!("RESULT libc_read_ebadf {read_bad:.1} ns");
}

fn clockbench() {
    let n = 1_000_000u32;
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let t = std::time::Instant::now();
    for _ in 0..n {
        // SAFETY: a valid timespec for the call to fill.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    }
    let libc_ns = t.elapsed().as_nanos() as f64 / f64::from(n);
    let m = 100_000u32;
    let t = std::time::Instant::now();
    for _ in 0..m {
        // SAFETY: as above, through the system call itself.
        unsafe { libc::syscall(libc::SYS_clock_gettime, libc::CLOCK_MONOTONIC, &mut ts) };
    }
    let sys_ns = t.elapsed().as_nanos() as f64 / f64::from(m);
    let t = std::time::Instant::now();
    for _ in 0..n {
        std::hint::black_box(std::time::Instant::now());
    }
    let instant_ns = t.elapsed().as_nanos() as f64 / f64::from(n);
    println!("RESULT clock_gettime {libc_ns:.1} ns");
    println!("RESULT instant_now {instant_ns:.1} ns");
    println!("RESULT syscall {sys_ns:.1} ns");
}

fn time() {
    let t0 = std::time::Instant::now();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let ms = t0.elapsed().as_secs_f64() * 1000.0;
    println!(
        "slept 20 ms: at least 20 ms: {}, under 500 ms: {}",
        ms >= 20.0,
        ms < 500.0
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    println!("wall clock after 2024: {}", now > 1_704_067_200);
}

#[inline(never)]
fn crash_outer(depth: u32) -> u32 {
    crash_middle(depth) + 1
}

#[inline(never)]
fn crash_middle(depth: u32) -> u32 {
    crash_inner(std::hint::black_box(depth)) * 2
}

#[inline(never)]
fn crash_inner(depth: u32) -> u32 {
    let p = std::hint::black_box(std::ptr::null_mut::<u32>());
    // SAFETY: deliberately invalid (a null write): the test checks the report.
    unsafe { std::ptr::write_volatile(p, depth) };
    depth
}
