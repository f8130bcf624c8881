//! A tokio echo server. `net-tokio local N`: the server and N concurrent
//! clients inside the guest (loopback), each checking its echo; `net-tokio
//! serve PORT`: the server alone on 0.0.0.0:PORT (and a UDP echo on the
//! same port) for clients on the host; it stops after a client sends "quit".
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

async fn serve_conn(mut c: TcpStream, stop: tokio::sync::mpsc::Sender<()>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match c.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Bulk modes for the benchmark: "sink\n" reads to the end and
        // answers the byte count; "source N\n" writes N bytes and closes.
        if buf[..n].starts_with(b"sink\n") {
            let mut total = (n - 5) as u64;
            loop {
                match c.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(k) => total += k as u64,
                }
            }
            let _ = c.write_all(format!("{total}\n").as_bytes()).await;
            return;
        }
        if buf[..n].starts_with(b"source ") {
            let text = String::from_utf8_lossy(&buf[7..n]).trim().to_string();
            let mut left: u64 = text.parse().unwrap_or(0);
            let chunk = vec![0x5au8; 64 * 1024];
            while left > 0 {
                let k = left.min(chunk.len() as u64) as usize;
                if c.write_all(&chunk[..k]).await.is_err() {
                    return;
                }
                left -= k as u64;
            }
            return;
        }
        if &buf[..n] == b"quit\n" {
            let _ = c.write_all(b"bye\n").await;
            let _ = stop.send(()).await;
            return;
        }
        if c.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

async fn server(l: TcpListener, stop: tokio::sync::mpsc::Sender<()>) {
    loop {
        match l.accept().await {
            Ok((c, _)) => {
                c.set_nodelay(true).ok();
                tokio::spawn(serve_conn(c, stop.clone()));
            }
            Err(e) => {
                eprintln!("accept: {e}");
                return;
            }
        }
    }
}

async fn client(addr: SocketAddr, i: usize) -> bool {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let msg: Vec<u8> = (0..10_000).map(|k| (k * 31 + i) as u8).collect();
    let (mut r, mut w) = s.split();
    let send = async {
        w.write_all(&msg).await.unwrap();
        w.shutdown().await.unwrap();
    };
    let mut back = Vec::new();
    let recv = r.read_to_end(&mut back);
    let (_, got) = tokio::join!(send, recv);
    got.unwrap();
    back == msg
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (stop_tx, mut stop_rx) = tokio::sync::mpsc::channel::<()>(1);
    match args.get(1).map(String::as_str) {
        Some("serve") => {
            let port: u16 = args.get(2).and_then(|p| p.parse().ok()).unwrap_or(7);
            let l = TcpListener::bind(("0.0.0.0", port)).await.expect("bind");
            let u = UdpSocket::bind(("0.0.0.0", port)).await.expect("bind udp");
            println!("listening on {}", l.local_addr().unwrap());
            tokio::spawn(server(l, stop_tx));
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                while let Ok((n, from)) = u.recv_from(&mut buf).await {
                    let _ = u.send_to(&buf[..n], from).await;
                }
            });
            stop_rx.recv().await;
            println!("quit");
        }
        _ => {
            let n: usize = args.get(2).and_then(|p| p.parse().ok()).unwrap_or(64);
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            tokio::spawn(server(l, stop_tx));
            let tasks: Vec<_> = (0..n).map(|i| tokio::spawn(client(addr, i))).collect();
            let mut ok = 0;
            for t in tasks {
                ok += t.await.unwrap() as usize;
            }
            println!("{ok} of {n} clients echoed intact");
        }
    }
}
