//! A network client for the tests, with std::net and musl's resolver:
//! `net-client resolve NAME` prints the addresses NAME resolves to (through
//! /etc/resolv.conf and the configured DNS server); `net-client get HOST
//! PORT PATH` prints the body of an HTTP/1.0 GET; `net-client udp HOST PORT
//! TEXT` prints the reply to one datagram.
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs, UdpSocket};
use std::time::Duration;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    match a.get(1).map(String::as_str) {
        Some("resolve") => {
            let mut v: Vec<String> = match (a[2].as_str(), 0).to_socket_addrs() {
                Ok(it) => it.map(|s| s.ip().to_string()).collect(),
                Err(e) => {
                    println!("resolve {}: {e}", a[2]);
                    std::process::exit(1);
                }
            };
            v.sort();
            v.dedup();
            println!("{} -> {}", a[2], v.join(" "));
        }
        Some("get") => {
            let mut s = TcpStream::connect((a[2].as_str(), a[3].parse::<u16>().unwrap())).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            write!(s, "GET {} HTTP/1.0\r\nHost: {}\r\n\r\n", a[4], a[2]).unwrap();
            let mut r = Vec::new();
            s.read_to_end(&mut r).expect("read");
            let text = String::from_utf8_lossy(&r);
            let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
            println!("status: {}", text.lines().next().unwrap_or(""));
            println!("body: {body}");
        }
        Some("udp") => {
            let u = UdpSocket::bind("0.0.0.0:0").unwrap();
            u.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            u.send_to(a[4].as_bytes(), (a[2].as_str(), a[3].parse::<u16>().unwrap())).unwrap();
            let mut buf = [0u8; 1500];
            let (n, from) = u.recv_from(&mut buf).expect("udp reply");
            println!("udp reply from {from}: {}", String::from_utf8_lossy(&buf[..n]));
        }
        _ => {
            eprintln!("usage: net-client resolve NAME | get HOST PORT PATH | udp HOST PORT TEXT");
            std::process::exit(2);
        }
    }
}
