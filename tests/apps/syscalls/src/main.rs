//! Raw Linux calls that std does not make by itself but other runtimes and
//! C code do: every futex operation, thread exit vs process exit, absolute
//! sleeps, select/pselect/ppoll, dup3, FIONBIO, one-shot epoll. Each line
//! printed is checked exactly by tests/tests/threads.rs.
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

static WORD: AtomicU32 = AtomicU32::new(0);
static WORD_B: AtomicU32 = AtomicU32::new(0);
static WAITERS_DONE: AtomicU32 = AtomicU32::new(0);
static GOT_USR1: AtomicBool = AtomicBool::new(false);

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn futex(
    word: &AtomicU32,
    op: i32,
    val: u32,
    ts: *const libc::timespec,
    word2: *const AtomicU32,
    val3: u32,
) -> (i64, i32) {
    // SAFETY: the words are statics; the timespec (if any) outlives the call.
    let r = unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), op, val, ts, word2, val3) };
    (r, if r < 0 { errno() } else { 0 })
}

fn now(clock: libc::clockid_t) -> libc::timespec {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out pointer.
    unsafe { libc::clock_gettime(clock, &mut t) };
    t
}

fn plus_ms(mut t: libc::timespec, ms: i64) -> libc::timespec {
    t.tv_nsec += ms * 1_000_000;
    t.tv_sec += t.tv_nsec / 1_000_000_000;
    t.tv_nsec %= 1_000_000_000;
    t
}

fn wait_for_waiters(word: &AtomicU32, n: usize) {
    // Give the waiters time to block (one CPU: yielding lets them run).
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = (word, n);
}

extern "C" fn on_usr1(_: libc::c_int) {
    GOT_USR1.store(true, Ordering::SeqCst);
}

fn futexes() {
    let private = libc::FUTEX_PRIVATE_FLAG;
    WORD.store(1, Ordering::SeqCst);
    let (r, e) = futex(
        &WORD,
        libc::FUTEX_WAIT | private,
        2,
        std::ptr::null(),
        std::ptr::null(),
        0,
    );
    println!(
        "futex wait on a changed word: {r} errno {e} (EAGAIN={})",
        libc::EAGAIN
    );

    let rel = libc::timespec {
        tv_sec: 0,
        tv_nsec: 20_000_000,
    };
    let t0 = Instant::now();
    let (r, e) = futex(
        &WORD,
        libc::FUTEX_WAIT | private,
        1,
        &rel,
        std::ptr::null(),
        0,
    );
    println!(
        "relative 20 ms timeout: {r} errno {e} (ETIMEDOUT={}), waited >= 20 ms: {}",
        libc::ETIMEDOUT,
        t0.elapsed() >= Duration::from_millis(20)
    );

    for (name, clock, flag) in [
        ("MONOTONIC", libc::CLOCK_MONOTONIC, 0),
        ("REALTIME", libc::CLOCK_REALTIME, libc::FUTEX_CLOCK_REALTIME),
    ] {
        let abs = plus_ms(now(clock), 20);
        let t0 = Instant::now();
        let (r, e) = futex(
            &WORD,
            libc::FUTEX_WAIT_BITSET | private | flag,
            1,
            &abs,
            std::ptr::null(),
            u32::MAX,
        );
        println!(
            "absolute {name} deadline: {r} errno {e}, waited >= 19 ms: {}",
            t0.elapsed() >= Duration::from_millis(19)
        );
    }

    // Shared (not private) wait and wake between threads, with bitsets.
    WORD.store(5, Ordering::SeqCst);
    let h = std::thread::spawn(|| {
        futex(
            &WORD,
            libc::FUTEX_WAIT_BITSET,
            5,
            std::ptr::null(),
            std::ptr::null(),
            0b10,
        )
    });
    wait_for_waiters(&WORD, 1);
    let (miss, _) = futex(
        &WORD,
        libc::FUTEX_WAKE_BITSET,
        1,
        std::ptr::null(),
        std::ptr::null(),
        0b01,
    );
    let (hit, _) = futex(
        &WORD,
        libc::FUTEX_WAKE_BITSET,
        1,
        std::ptr::null(),
        std::ptr::null(),
        0b11,
    );
    println!(
        "shared bitset wake: non-matching woke {miss}, matching woke {hit}, waiter got {:?}",
        h.join().unwrap()
    );

    // CMP_REQUEUE: 3 waiters on WORD; wake 1, move 2 to WORD_B.
    WORD.store(7, Ordering::SeqCst);
    WORD_B.store(0, Ordering::SeqCst);
    let hs: Vec<_> = (0..3)
        .map(|_| {
            std::thread::spawn(|| {
                let r = futex(
                    &WORD,
                    libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                    7,
                    std::ptr::null(),
                    std::ptr::null(),
                    0,
                );
                WAITERS_DONE.fetch_add(1, Ordering::SeqCst);
                r
            })
        })
        .collect();
    wait_for_waiters(&WORD, 3);
    let (bad, e) = futex(
        &WORD,
        libc::FUTEX_CMP_REQUEUE | private,
        1,
        2 as *const libc::timespec,
        &WORD_B,
        8,
    );
    println!("cmp_requeue with a stale value: {bad} errno {e}");
    let (n, _) = futex(
        &WORD,
        libc::FUTEX_CMP_REQUEUE | private,
        1,
        2 as *const libc::timespec,
        &WORD_B,
        7,
    );
    wait_for_waiters(&WORD, 0);
    let after_requeue = WAITERS_DONE.load(Ordering::SeqCst);
    let (on_a, _) = futex(
        &WORD,
        libc::FUTEX_WAKE | private,
        10,
        std::ptr::null(),
        std::ptr::null(),
        0,
    );
    let (on_b, _) = futex(
        &WORD_B,
        libc::FUTEX_WAKE | private,
        10,
        std::ptr::null(),
        std::ptr::null(),
        0,
    );
    let results: Vec<_> = hs.into_iter().map(|h| h.join().unwrap()).collect();
    println!("cmp_requeue returned {n}, done after it {after_requeue}, then woke {on_a} on A and {on_b} on B, results {results:?}");

    // EINTR: a signal to a thread blocked in FUTEX_WAIT ends the wait.
    // SAFETY: a plain handler without SA_RESTART.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_usr1 as *const () as usize;
        libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
    }
    WORD.store(9, Ordering::SeqCst);
    let tid = std::sync::Arc::new(AtomicU32::new(0));
    let t2 = tid.clone();
    let h = std::thread::spawn(move || {
        // SAFETY: gettid has no arguments.
        t2.store(
            unsafe { libc::syscall(libc::SYS_gettid) } as u32,
            Ordering::SeqCst,
        );
        futex(
            &WORD,
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            9,
            std::ptr::null(),
            std::ptr::null(),
            0,
        )
    });
    wait_for_waiters(&WORD, 1);
    // SAFETY: signalling our own thread.
    unsafe {
        libc::syscall(
            libc::SYS_tgkill,
            libc::getpid(),
            tid.load(Ordering::SeqCst),
            libc::SIGUSR1,
        )
    };
    let (r, e) = h.join().unwrap();
    println!(
        "signal during futex wait: {r} errno {e} (EINTR={}), handler ran: {}",
        libc::EINTR,
        GOT_USR1.load(Ordering::SeqCst)
    );
}

fn threads_and_time() {
    // SAFETY: no-argument calls.
    let (pid, main_tid) = unsafe { (libc::getpid(), libc::syscall(libc::SYS_gettid)) };
    let other = std::thread::spawn(|| unsafe { libc::syscall(libc::SYS_gettid) })
        .join()
        .unwrap();
    println!(
        "pid == main tid: {}, other thread tid differs: {}",
        pid as i64 == main_tid,
        other != main_tid
    );

    // A thread that ends with the raw exit call (not exit_group): only it
    // ends. (It is not joined: musl's pthread_join waits for pthread_exit's
    // bookkeeping, which a raw exit skips; std's join is covered by `threads`.)
    extern "C" fn raw_exit(_: *mut libc::c_void) -> *mut libc::c_void {
        println!("thread about to call exit(0)");
        // SAFETY: ends only this thread.
        unsafe { libc::syscall(libc::SYS_exit, 0) };
        std::ptr::null_mut()
    }
    // SAFETY: a plain pthread with default attributes, joined below.
    unsafe {
        let mut t: libc::pthread_t = std::mem::zeroed();
        libc::pthread_create(&mut t, std::ptr::null(), raw_exit, std::ptr::null_mut());
        libc::pthread_detach(t);
    }
    std::thread::sleep(Duration::from_millis(50));
    println!("main still runs after a thread's exit");

    // SAFETY: plain calls with valid pointers.
    unsafe {
        println!("sched_yield: {}", libc::sched_yield());
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set);
        println!("cpus in affinity mask: {}", libc::CPU_COUNT(&set));
        let name = b"renamed\0";
        libc::prctl(libc::PR_SET_NAME, name.as_ptr());
        let mut got = [0u8; 16];
        libc::prctl(libc::PR_GET_NAME, got.as_mut_ptr());
        println!("prctl name: {}", std::str::from_utf8(&got[..7]).unwrap());
    }
    for (name, clock) in [
        ("MONOTONIC", libc::CLOCK_MONOTONIC),
        ("REALTIME", libc::CLOCK_REALTIME),
    ] {
        let until = plus_ms(now(clock), 20);
        let t0 = Instant::now();
        // SAFETY: valid timespec.
        let r = unsafe {
            libc::clock_nanosleep(clock, libc::TIMER_ABSTIME, &until, std::ptr::null_mut())
        };
        println!(
            "clock_nanosleep TIMER_ABSTIME {name}: {r}, slept >= 19 ms: {}",
            t0.elapsed() >= Duration::from_millis(19)
        );
    }
}

fn readiness() {
    // SAFETY: all calls get valid fds and pointers owned here.
    unsafe {
        let mut p = [0i32; 2];
        libc::pipe2(p.as_mut_ptr(), 0);
        // select: not readable yet (0 ms timeout), readable after a write.
        let mut set: libc::fd_set = std::mem::zeroed();
        libc::FD_SET(p[0], &mut set);
        let mut tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        };
        let before = libc::select(
            p[0] + 1,
            &mut set,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            &mut tv,
        );
        libc::write(p[1], b"x".as_ptr().cast(), 1);
        libc::FD_SET(p[0], &mut set);
        let after = libc::select(
            p[0] + 1,
            &mut set,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        );
        println!(
            "select: before write {before}, after write {after}, fd set: {}",
            libc::FD_ISSET(p[0], &set)
        );
        // pselect with a 10 ms timeout on the (empty) write-less pipe: times out.
        let mut b = [0u8; 1];
        libc::read(p[0], b.as_mut_ptr().cast(), 1);
        libc::FD_SET(p[0], &mut set);
        let ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 10_000_000,
        };
        let t0 = Instant::now();
        let r = libc::pselect(
            p[0] + 1,
            &mut set,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            &ts,
            std::ptr::null(),
        );
        println!(
            "pselect timeout: {r}, waited >= 10 ms: {}",
            t0.elapsed() >= Duration::from_millis(10)
        );
        let mut pfd = libc::pollfd {
            fd: p[0],
            events: libc::POLLIN,
            revents: 0,
        };
        let r = libc::ppoll(&mut pfd, 1, &ts, std::ptr::null());
        println!("ppoll timeout: {r}");

        // FIONBIO makes a read on an empty pipe fail with EAGAIN.
        let on: libc::c_int = 1;
        libc::ioctl(p[0], libc::FIONBIO, &on);
        let r = libc::read(p[0], b.as_mut_ptr().cast(), 1);
        println!(
            "read on empty non-blocking pipe: {r} errno {} (EAGAIN={})",
            errno(),
            libc::EAGAIN
        );
        let fl = libc::fcntl(p[0], libc::F_GETFL);
        println!("F_GETFL has O_NONBLOCK: {}", fl & libc::O_NONBLOCK != 0);

        // dup3 with O_CLOEXEC, and its errors.
        let d = libc::dup3(p[1], 50, libc::O_CLOEXEC);
        println!(
            "dup3 -> {d}, FD_CLOEXEC: {}",
            libc::fcntl(d, libc::F_GETFD) & libc::FD_CLOEXEC != 0
        );
        let r = libc::dup3(d, d, 0);
        println!(
            "dup3 onto itself: {r} errno {} (EINVAL={})",
            errno(),
            libc::EINVAL
        );
        libc::fcntl(d, libc::F_SETFD, 0);
        println!(
            "after F_SETFD 0: FD_CLOEXEC {}",
            libc::fcntl(d, libc::F_GETFD) & libc::FD_CLOEXEC != 0
        );

        // One-shot epoll: reports once, then only after EPOLL_CTL_MOD re-arms it.
        let ep = libc::epoll_create1(libc::EPOLL_CLOEXEC);
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLONESHOT) as u32,
            u64: 42,
        };
        libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, p[0], &mut ev);
        libc::write(p[1], b"yz".as_ptr().cast(), 2);
        let mut out = [libc::epoll_event { events: 0, u64: 0 }; 4];
        let first = libc::epoll_wait(ep, out.as_mut_ptr(), 4, 0);
        let data = out[0].u64;
        let second = libc::epoll_wait(ep, out.as_mut_ptr(), 4, 0);
        libc::epoll_ctl(ep, libc::EPOLL_CTL_MOD, p[0], &mut ev);
        let third = libc::epoll_pwait(ep, out.as_mut_ptr(), 4, 0, std::ptr::null());
        println!("oneshot: first {first} (data {data}), second {second}, after MOD {third}");
        let r = libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, p[0], &mut ev);
        println!(
            "adding twice: {r} errno {} (EEXIST={})",
            errno(),
            libc::EEXIST
        );
        // A blocking epoll_wait woken by another thread's write.
        let w = p[1];
        let h = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            libc::write(w, b"late".as_ptr().cast(), 4);
        });
        let mut drain = [0u8; 16];
        libc::read(p[0], drain.as_mut_ptr().cast(), 16);
        libc::epoll_ctl(ep, libc::EPOLL_CTL_MOD, p[0], &mut ev);
        let n = libc::epoll_wait(ep, out.as_mut_ptr(), 4, 5000);
        h.join().unwrap();
        println!("blocking epoll_wait woken by a write: {n}");
    }
}

fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("exit-group-from-thread") => {
            std::thread::spawn(|| {
                // SAFETY: ends the whole process with 7.
                unsafe { libc::syscall(libc::SYS_exit_group, 7) };
            });
            std::thread::sleep(Duration::from_secs(30));
            println!("not reached");
        }
        Some("parallel-sleep") => {
            let t0 = Instant::now();
            let h = std::thread::spawn(|| std::thread::sleep(Duration::from_millis(200)));
            std::thread::sleep(Duration::from_millis(200));
            h.join().unwrap();
            println!(
                "two 200 ms sleeps overlapped: {}",
                t0.elapsed() < Duration::from_millis(390)
            );
        }
        _ => {
            futexes();
            threads_and_time();
            readiness();
            println!("syscalls: all done");
        }
    }
}
