//! A test app that links std's TCP code (so the builder chooses the net
//! component) but opens a socket only when asked: `net-probe` prints a line
//! and the UNIKERNEL_* variables it sees (runtime options never reach the
//! app's environment); `net-probe bind ADDR` binds a listener and reports.
fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("bind") => {
            let addr = args.get(2).map_or("0.0.0.0:8080", String::as_str);
            match std::net::TcpListener::bind(addr) {
                Ok(l) => println!("bound {:?}", l.local_addr().map(|a| a.port())),
                Err(e) => println!("bind failed: {e}"),
            }
        }
        _ => {
            println!("net-probe up");
            for (k, v) in std::env::vars().filter(|(k, _)| k.starts_with("UNIKERNEL_")) {
                println!("env {k}={v}");
            }
        }
    }
}
