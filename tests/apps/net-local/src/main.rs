//! Networking inside the guest, on its loopback link: a blocking std::net
//! TCP server and client (IPv4 and IPv6), UDP, name resolution through
//! /etc/hosts, non-blocking connect, refused connections, shutdown and
//! socket options. Each check prints one line; the test compares them.
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
use std::thread;
use std::time::Duration;

fn tcp_echo(bind: &str) {
    let l = TcpListener::bind(bind).expect("bind");
    let addr = l.local_addr().unwrap();
    assert_ne!(addr.port(), 0);
    let server = thread::spawn(move || {
        let (mut c, peer) = l.accept().expect("accept");
        let mut total = 0usize;
        let mut buf = [0u8; 4096];
        loop {
            let n = c.read(&mut buf).expect("server read");
            if n == 0 {
                break;
            }
            total += n;
            c.write_all(&buf[..n]).expect("server write");
        }
        (total, peer)
    });
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).unwrap();
    assert!(s.nodelay().unwrap());
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let writer = {
        let mut w = s.try_clone().unwrap();
        let d = data.clone();
        thread::spawn(move || {
            w.write_all(&d).unwrap();
            w.shutdown(Shutdown::Write).unwrap();
        })
    };
    let mut back = Vec::new();
    s.read_to_end(&mut back).expect("client read");
    writer.join().unwrap();
    let (total, peer) = server.join().unwrap();
    assert_eq!(peer, s.local_addr().unwrap());
    println!(
        "tcp {}: {} bytes echoed, intact={}, peer={}",
        if addr.is_ipv4() { "v4" } else { "v6" },
        total,
        back == data,
        peer.ip()
    );
}

fn udp() {
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    a.send_to(b"ping", b.local_addr().unwrap()).unwrap();
    let mut buf = [0u8; 16];
    let (n, from) = b.recv_from(&mut buf).unwrap();
    b.send_to(&buf[..n].to_ascii_uppercase(), from).unwrap();
    let (m, from2) = a.recv_from(&mut buf).unwrap();
    println!(
        "udp: {} from a={}, reply {} from b={}",
        n,
        from == a.local_addr().unwrap(),
        String::from_utf8_lossy(&buf[..m]),
        from2 == b.local_addr().unwrap()
    );
    // A connected socket and a timeout with nothing to read.
    a.connect(b.local_addr().unwrap()).unwrap();
    a.set_read_timeout(Some(Duration::from_millis(30))).unwrap();
    let e = a.recv(&mut buf).unwrap_err();
    println!("udp timeout: {:?}", e.kind());
}

fn resolve() {
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap();
    println!("hosts has localhost: {}", hosts.contains("127.0.0.1\tlocalhost"));
    let mut addrs: Vec<SocketAddr> = ("localhost", 80).to_socket_addrs().unwrap().collect();
    addrs.sort();
    println!("localhost resolves to {addrs:?}");
}

fn refused_and_nonblocking() {
    // Nothing listens on this port: refused.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    let e = TcpStream::connect(("127.0.0.1", port)).unwrap_err();
    println!("connect to a closed port: {:?}", e.kind());

    // Non-blocking connect: EINPROGRESS, then writable with SO_ERROR 0.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0);
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: addr.port().to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes([127, 0, 0, 1]) },
            sin_zero: [0; 8],
        };
        let r = libc::connect(fd, &sin as *const _ as *const libc::sockaddr, 16);
        let err = *libc::__errno_location();
        let mut p = libc::pollfd { fd, events: libc::POLLOUT, revents: 0 };
        let n = libc::poll(&mut p, 1, 2000);
        let mut soerr: libc::c_int = -1;
        let mut len = 4u32;
        libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_ERROR, &mut soerr as *mut _ as *mut _, &mut len);
        println!(
            "nonblocking connect: r={} einprogress={} poll={} pollout={} so_error={}",
            r,
            err == libc::EINPROGRESS,
            n,
            p.revents & libc::POLLOUT != 0,
            soerr
        );
        // Unknown options answer as Linux does.
        let one: libc::c_int = 1;
        let r = libc::setsockopt(fd, libc::SOL_SOCKET, 9999, &one as *const _ as *const _, 4);
        println!("unknown option: r={} enoprotoopt={}", r, *libc::__errno_location() == libc::ENOPROTOOPT);
        let (c, _) = l.accept().unwrap();
        c.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 8];
        let e = (&c).read(&mut buf).unwrap_err();
        println!("nonblocking read with no data: {:?}", e.kind() == ErrorKind::WouldBlock);
        let mut avail: libc::c_int = -1;
        libc::write(fd, b"abc".as_ptr() as *const _, 3);
        thread::sleep(Duration::from_millis(5));
        libc::ioctl(fd_of(&c), libc::FIONREAD, &mut avail);
        println!("FIONREAD after 3 bytes: {avail}");
        libc::close(fd);
    }
}

fn fd_of(s: &TcpStream) -> i32 {
    use std::os::fd::AsRawFd;
    s.as_raw_fd()
}

fn peer_reset_and_sigpipe() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (s, _) = l.accept().unwrap();
    drop(s);
    thread::sleep(Duration::from_millis(20));
    let mut buf = [0u8; 8];
    let n = c.read(&mut buf).unwrap();
    println!("read after peer close: {n}");
    // Rust ignores SIGPIPE: writes to a closed peer give an error.
    let mut err = None;
    for _ in 0..50 {
        if let Err(e) = c.write_all(b"more data") {
            err = Some(e.kind());
            break;
        }
        thread::sleep(Duration::from_millis(5));
    }
    println!("write after peer close: {:?}", err.map(|k| k == ErrorKind::BrokenPipe || k == ErrorKind::ConnectionReset));
}

fn main() {
    tcp_echo("127.0.0.1:0");
    tcp_echo("[::1]:0");
    udp();
    resolve();
    refused_and_nonblocking();
    peer_reset_and_sigpipe();
    println!("done");
}
