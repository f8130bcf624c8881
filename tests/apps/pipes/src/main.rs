//! Pipes, socketpairs, poll, epoll, eventfd and fd-table calls through libc.
//! Each part prints counts and checksums that do not depend on timing (how
//! the data was split into reads, or how many wakeups it took, is never
//! printed). Any failed check prints "CHECK FAILED" on stderr and the app
//! exits 1 instead of printing "pipes: all ok".

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::thread;

static FAILURES: AtomicUsize = AtomicUsize::new(0);

fn check(ok: bool, what: &str) {
    if !ok {
        eprintln!("CHECK FAILED: {what}");
        FAILURES.fetch_add(1, SeqCst);
    }
}

/// Records are "rec NNNNNNN\n" (12 bytes); 50,000 of them (600 KB) is far
/// more than a pipe or socket buffer, so the producer has to block.
const RECORDS: usize = 50_000;
const RECORD_LEN: usize = 12;

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn write_all(fd: i32, mut data: &[u8]) {
    while !data.is_empty() {
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n < 0 && errno() == libc::EINTR {
            continue;
        }
        assert!(n > 0, "write to fd {fd} failed: errno {}", errno());
        data = &data[n as usize..];
    }
}

/// Write all the records from a new thread in chunks of 100, then close `fd`.
fn spawn_producer(fd: i32) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut chunk = Vec::with_capacity(100 * RECORD_LEN);
        for i in 0..RECORDS {
            chunk.extend_from_slice(format!("rec {i:07}\n").as_bytes());
            if chunk.len() == 100 * RECORD_LEN || i + 1 == RECORDS {
                write_all(fd, &chunk);
                chunk.clear();
            }
        }
        unsafe { libc::close(fd) };
    })
}

/// Count, sum and order of the records in `data` (FNV-1a over the bytes as a
/// checksum).
fn summarize(data: &[u8]) -> String {
    let mut sum = 0u64;
    let mut in_order = data.len().is_multiple_of(RECORD_LEN);
    let mut count = 0;
    for (i, rec) in data.chunks(RECORD_LEN).enumerate() {
        let s = std::str::from_utf8(rec).unwrap_or("");
        let n: usize = s
            .strip_prefix("rec ")
            .and_then(|s| s.strip_suffix('\n'))
            .and_then(|s| s.parse().ok())
            .unwrap_or(usize::MAX);
        in_order &= n == i;
        sum += n as u64;
        count += 1;
    }
    let fnv = data.iter().fold(0xcbf29ce484222325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    });
    check(
        count == RECORDS && in_order,
        "records complete and in order",
    );
    format!("{count} records, sum {sum}, in order: {in_order}, fnv {fnv:016x}")
}

/// A producer thread writes into a pipe; the consumer waits with poll().
fn pipe_poll() {
    let mut fds = [0; 2];
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    let [r, w] = fds;
    let producer = spawn_producer(w);
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let mut hup_seen = false;
    loop {
        let mut pfd = libc::pollfd {
            fd: r,
            events: libc::POLLIN,
            revents: 0,
        };
        let n = unsafe { libc::poll(&mut pfd, 1, 30_000) };
        if n < 0 && errno() == libc::EINTR {
            continue;
        }
        assert_eq!(n, 1, "poll on the pipe timed out or failed");
        hup_seen |= pfd.revents & libc::POLLHUP != 0;
        let got = unsafe { libc::read(r, buf.as_mut_ptr().cast(), buf.len()) };
        assert!(got >= 0, "pipe read failed: errno {}", errno());
        if got == 0 {
            break;
        }
        data.extend_from_slice(&buf[..got as usize]);
    }
    producer.join().unwrap();
    // With the writer gone and the pipe drained, poll reports POLLHUP at once.
    let mut pfd = libc::pollfd {
        fd: r,
        events: libc::POLLIN,
        revents: 0,
    };
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    let hup_now = n == 1 && pfd.revents & libc::POLLHUP != 0;
    check(hup_seen && hup_now, "POLLHUP on the pipe");
    println!("pipe+poll: {}", summarize(&data));
    println!(
        "pipe+poll: POLLHUP after the writer closed: {}",
        hup_seen && hup_now
    );
    unsafe { libc::close(r) };
}

fn socketpair() -> (i32, i32) {
    let mut fds = [0; 2];
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    assert_eq!(rc, 0, "socketpair failed: errno {}", errno());
    (fds[0], fds[1])
}

fn set_nonblocking(fd: i32) {
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        assert!(fl >= 0);
        assert_eq!(libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK), 0);
    }
}

fn epoll_add(ep: i32, fd: i32, events: u32) {
    let mut ev = libc::epoll_event {
        events,
        u64: fd as u64,
    };
    assert_eq!(
        unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) },
        0
    );
}

/// epoll_wait for one event; returns (number of events, their mask).
fn epoll_wait1(ep: i32, timeout_ms: i32) -> (i32, u32) {
    let mut ev = libc::epoll_event { events: 0, u64: 0 };
    loop {
        let n = unsafe { libc::epoll_wait(ep, &mut ev, 1, timeout_ms) };
        if n < 0 && errno() == libc::EINTR {
            continue;
        }
        assert!(n >= 0, "epoll_wait failed: errno {}", errno());
        return (n, if n == 1 { ev.events } else { 0 });
    }
}

/// A producer thread writes into one end of a socketpair; the consumer has
/// the other end non-blocking in an edge-triggered epoll and drains it until
/// EAGAIN at every event.
fn socketpair_epoll_et() {
    let (a, b) = socketpair();
    set_nonblocking(a);
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    assert!(ep >= 0);
    epoll_add(
        ep,
        a,
        (libc::EPOLLIN | libc::EPOLLET | libc::EPOLLRDHUP) as u32,
    );
    let producer = spawn_producer(b);
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let mut eof = false;
    while !eof {
        let (n, _) = epoll_wait1(ep, 30_000);
        assert_eq!(n, 1, "epoll_wait timed out with {} bytes read", data.len());
        // Edge-triggered: no new event comes until we have seen EAGAIN.
        loop {
            let got = unsafe { libc::read(a, buf.as_mut_ptr().cast(), buf.len()) };
            if got > 0 {
                data.extend_from_slice(&buf[..got as usize]);
            } else if got == 0 {
                eof = true;
                break;
            } else if errno() == libc::EAGAIN {
                break;
            } else if errno() != libc::EINTR {
                panic!("socket read failed: errno {}", errno());
            }
        }
    }
    producer.join().unwrap();
    println!("socketpair+epoll(ET): {}", summarize(&data));
    unsafe {
        libc::close(a);
        libc::close(ep);
    }
}

/// Edge- against level-triggered reporting, and EPOLLRDHUP when the peer
/// closes, without any other thread.
fn epoll_semantics() {
    let (a, b) = socketpair();
    set_nonblocking(a);
    let (a2, b2) = socketpair();
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    let lt = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    epoll_add(
        ep,
        a,
        (libc::EPOLLIN | libc::EPOLLET | libc::EPOLLRDHUP) as u32,
    );
    epoll_add(lt, a2, libc::EPOLLIN as u32);

    let idle = epoll_wait1(ep, 0).0;
    write_all(b, b"0123456789");
    let first = epoll_wait1(ep, 0).0;
    let again = epoll_wait1(ep, 0).0; // not read yet, but no new edge
    write_all(b, b"more");
    let more = epoll_wait1(ep, 0).0;
    println!(
        "epoll ET: idle {idle}, after a write {first}, again {again}, after another write {more}"
    );
    check(
        (idle, first, again, more) == (0, 1, 0, 1),
        "edge-triggered reporting",
    );

    write_all(b2, b"x");
    let l1 = epoll_wait1(lt, 0).0;
    let l2 = epoll_wait1(lt, 0).0;
    println!("epoll LT: after a write {l1}, again {l2}");
    check((l1, l2) == (1, 1), "level-triggered reporting");

    // Drain, then the peer closes: EPOLLRDHUP (with EPOLLIN), then EOF.
    let mut buf = [0u8; 64];
    let got = unsafe { libc::read(a, buf.as_mut_ptr().cast(), buf.len()) };
    let eagain = unsafe { libc::read(a, buf.as_mut_ptr().cast(), buf.len()) } == -1
        && errno() == libc::EAGAIN;
    unsafe { libc::close(b) };
    let (n, events) = epoll_wait1(ep, 5_000);
    let rdhup = n == 1 && events & libc::EPOLLRDHUP as u32 != 0;
    let eof = unsafe { libc::read(a, buf.as_mut_ptr().cast(), buf.len()) } == 0;
    println!("epoll: drained {got} bytes then EAGAIN: {eagain}; peer closed: EPOLLRDHUP: {rdhup}, read gives EOF: {eof}");
    check(got == 14 && eagain && rdhup && eof, "EPOLLRDHUP");

    // EPOLL_CTL_DEL: no more events for a removed fd.
    let rc = unsafe { libc::epoll_ctl(lt, libc::EPOLL_CTL_DEL, a2, std::ptr::null_mut()) };
    let after_del = epoll_wait1(lt, 0).0;
    println!("epoll: after EPOLL_CTL_DEL {after_del} events");
    check(rc == 0 && after_del == 0, "EPOLL_CTL_DEL");
    unsafe {
        for fd in [a, a2, b2, ep, lt] {
            libc::close(fd);
        }
    }
}

fn eventfd() {
    unsafe {
        // A counter: writes add up, a read returns the sum and resets it.
        let efd = libc::eventfd(0, libc::EFD_CLOEXEC);
        assert!(efd >= 0, "eventfd failed: errno {}", errno());
        for v in [3u64, 4] {
            assert_eq!(libc::write(efd, (&v as *const u64).cast(), 8), 8);
        }
        let mut v = 0u64;
        assert_eq!(libc::read(efd, (&mut v as *mut u64).cast(), 8), 8);
        let sum = v;
        libc::close(efd);

        // Semaphore mode: each read takes 1; non-blocking at 0 gives EAGAIN.
        let sem = libc::eventfd(
            2,
            libc::EFD_SEMAPHORE | libc::EFD_NONBLOCK | libc::EFD_CLOEXEC,
        );
        let mut reads = Vec::new();
        for _ in 0..3 {
            let mut v = 0u64;
            let n = libc::read(sem, (&mut v as *mut u64).cast(), 8);
            reads.push(if n == 8 {
                v.to_string()
            } else if errno() == libc::EAGAIN {
                "EAGAIN".into()
            } else {
                format!("errno {}", errno())
            });
        }
        libc::close(sem);

        // A round trip between two threads over two blocking eventfds.
        let ping = libc::eventfd(0, libc::EFD_CLOEXEC);
        let pong = libc::eventfd(0, libc::EFD_CLOEXEC);
        let echo = thread::spawn(move || {
            let mut v = 0u64;
            assert_eq!(libc::read(ping, (&mut v as *mut u64).cast(), 8), 8);
            v += 1;
            assert_eq!(libc::write(pong, (&v as *const u64).cast(), 8), 8);
        });
        let v = 41u64;
        assert_eq!(libc::write(ping, (&v as *const u64).cast(), 8), 8);
        let mut back = 0u64;
        assert_eq!(libc::read(pong, (&mut back as *mut u64).cast(), 8), 8);
        echo.join().unwrap();
        libc::close(ping);
        libc::close(pong);

        println!(
            "eventfd: 3+4 read as {sum}; semaphore reads {}; round trip 41 -> {back}",
            reads.join(" ")
        );
        check(
            sum == 7 && reads == ["1", "1", "EAGAIN"] && back == 42,
            "eventfd",
        );
    }
}

fn fd_table() {
    unsafe {
        let mut fds = [0; 2];
        assert_eq!(libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC), 0);
        let [r, w] = fds;
        let cloexec = |fd| libc::fcntl(fd, libc::F_GETFD) & libc::FD_CLOEXEC != 0;

        // dup: same pipe, new fd, no FD_CLOEXEC.
        let d = libc::dup(w);
        assert!(d >= 0 && d != w && d != r);
        write_all(d, b"via dup|");
        // dup2 onto a chosen number.
        let d2 = libc::dup2(w, 100);
        write_all(d2, b"via dup2|");
        // F_DUPFD_CLOEXEC: lowest free fd >= 200, with FD_CLOEXEC.
        let d3 = libc::fcntl(w, libc::F_DUPFD_CLOEXEC, 200);
        write_all(d3, b"via F_DUPFD_CLOEXEC");
        println!(
            "dup: FD_CLOEXEC pipe2 {}, dup {}, dup2 fd {d2} {}, F_DUPFD_CLOEXEC fd {d3} {}",
            cloexec(w),
            cloexec(d),
            cloexec(d2),
            cloexec(d3)
        );
        check(
            cloexec(w) && !cloexec(d) && d2 == 100 && !cloexec(d2) && d3 == 200 && cloexec(d3),
            "dup flags",
        );

        let mut buf = [0u8; 128];
        let n = libc::read(r, buf.as_mut_ptr().cast(), buf.len());
        let text = String::from_utf8_lossy(&buf[..n.max(0) as usize]).into_owned();
        println!("dup: read back \"{text}\"");
        check(
            text == "via dup|via dup2|via F_DUPFD_CLOEXEC",
            "data through dups",
        );

        // F_GETFL / F_SETFL O_NONBLOCK on the read end.
        let fl = libc::fcntl(r, libc::F_GETFL);
        let before = fl & libc::O_NONBLOCK != 0;
        let rdonly = fl & libc::O_ACCMODE == libc::O_RDONLY;
        assert_eq!(libc::fcntl(r, libc::F_SETFL, fl | libc::O_NONBLOCK), 0);
        let after = libc::fcntl(r, libc::F_GETFL) & libc::O_NONBLOCK != 0;
        let wr_mode = libc::fcntl(w, libc::F_GETFL) & libc::O_ACCMODE == libc::O_WRONLY;
        let empty_eagain =
            libc::read(r, buf.as_mut_ptr().cast(), buf.len()) == -1 && errno() == libc::EAGAIN;
        println!("fcntl: read end O_RDONLY {rdonly}, write end O_WRONLY {wr_mode}, O_NONBLOCK before {before}, after {after}, empty read EAGAIN {empty_eagain}");
        check(
            rdonly && wr_mode && !before && after && empty_eagain,
            "fcntl flags",
        );

        // EOF only when every fd for the write end is closed.
        let mut eof_after = Vec::new();
        for fd in [w, d, d2, d3] {
            libc::close(fd);
            let n = libc::read(r, buf.as_mut_ptr().cast(), buf.len());
            eof_after.push(if n == 0 {
                "EOF"
            } else if errno() == libc::EAGAIN {
                "EAGAIN"
            } else {
                "?"
            });
        }
        println!(
            "close write ends one by one, read gives: {}",
            eof_after.join(" ")
        );
        check(
            eof_after == ["EAGAIN", "EAGAIN", "EAGAIN", "EOF"],
            "EOF after the last close",
        );

        // A closed fd is EBADF.
        let bad = libc::fcntl(w, libc::F_GETFD) == -1 && errno() == libc::EBADF;
        println!("fcntl on a closed fd gives EBADF: {bad}");
        check(bad, "EBADF");
        libc::close(r);
    }
}

fn main() {
    pipe_poll();
    socketpair_epoll_et();
    epoll_semantics();
    eventfd();
    fd_table();
    let failures = FAILURES.load(SeqCst);
    if failures != 0 {
        println!("pipes: {failures} check(s) failed");
        std::process::exit(1);
    }
    println!("pipes: all ok");
}
