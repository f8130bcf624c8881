//! The network component over the hvt network device, with real clients:
//! a tap in a network namespace the test makes (dnsmasq there for DHCP and
//! DNS, curl, wrk, ping and python3 as clients and servers), and rootless
//! `--net user` (passt) with a published port on loopback. Nothing talks to
//! any address outside loopback or the test's own namespace.

use std::time::Duration;
use unikernel_tests::netns::{self, have, NetNs, DHCP_FIRST, DNS_ADDR, DNS_NAME, HOST_IP};
use unikernel_tests::*;

fn needs(test: &str, progs: &[&str]) -> bool {
    if !kvm_available(test) {
        return false;
    }
    for p in progs {
        if !have(p) {
            let line = format!("SKIPPED {test}: {p} is not installed\n");
            print!("{line}");
            eprint!("{line}");
            return false;
        }
    }
    true
}

/// DHCP and DNS from dnsmasq, the axum template answering curl.
#[test]
fn tap_dhcp_and_the_http_template_answer_curl() {
    let test = "tap_dhcp_and_the_http_template_answer_curl";
    if !needs(test, &["dnsmasq", "curl", "ping"]) {
        return;
    }
    let Some(mut ns) = NetNs::new(test) else {
        return;
    };
    ns.start_dnsmasq().expect("dnsmasq");
    let img = image("http-template");
    let mut g = ns.spawn_guest(&img, &["--env", "UNIKERNEL_VERBOSE=1"], &[]);
    assert!(
        g.wait_for("(DHCP)", Duration::from_secs(30)),
        "no DHCP lease: {} {}",
        g.stdout(),
        g.stderr()
    );
    let url = format!("http://{DHCP_FIRST}:8080/");
    let o = ns.curl_until_up(&url, Duration::from_secs(20));
    assert_eq!(o.stdout, "hello from the unikernel\n", "curl: {}", o.stderr);
    let o = ns.client(
        "curl",
        &[
            "-sS",
            "--max-time",
            "5",
            "--data-binary",
            "bytes through the tap",
            &format!("{url}echo"),
        ],
        Duration::from_secs(10),
    );
    assert_eq!(o.stdout, "bytes through the tap");
    let o = ns.client(
        "ping",
        &["-c", "3", "-i", "0.2", "-W", "2", DHCP_FIRST],
        Duration::from_secs(10),
    );
    assert!(o.stdout.contains("3 received"), "ping: {}", o.stdout);
    let out = g.kill();
    assert!(
        out.stderr
            .contains(&format!("{DHCP_FIRST}/24 gateway {HOST_IP} dns {HOST_IP}")),
        "the address line: {}",
        out.stderr
    );
}

/// A client in the guest: the resolver asks dnsmasq, then an HTTP GET to a
/// server in the namespace.
#[test]
fn guest_client_resolves_and_fetches_from_the_namespace() {
    let test = "guest_client_resolves_and_fetches_from_the_namespace";
    if !needs(test, &["dnsmasq", "python3"]) {
        return;
    }
    let Some(mut ns) = NetNs::new(test) else {
        return;
    };
    ns.start_dnsmasq().expect("dnsmasq");
    let dir = tempfile_dir();
    std::fs::write(dir.join("index.txt"), "served from the namespace\n").unwrap();
    let mut server = ns.command("python3");
    server
        .args([
            "-m",
            "http.server",
            "--bind",
            HOST_IP,
            "8000",
            "--directory",
        ])
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut server = server.spawn().expect("python3 http.server");
    std::thread::sleep(Duration::from_millis(500));
    let img = image("net-client");
    let o = ns
        .spawn_guest(&img, &[], &["resolve", DNS_NAME])
        .finish(Duration::from_secs(60));
    assert_eq!(
        o.stdout,
        format!("{DNS_NAME} -> {DNS_ADDR}\n"),
        "stderr: {}",
        o.stderr
    );
    assert_eq!(o.code, 0);
    let o = ns
        .spawn_guest(&img, &[], &["get", HOST_IP, "8000", "/index.txt"])
        .finish(Duration::from_secs(60));
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(
        o.stdout, "status: HTTP/1.0 200 OK\nbody: served from the namespace\n\n",
        "stderr: {}",
        o.stderr
    );
    assert_eq!(o.code, 0);
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "uk-net-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// 256 concurrent keep-alive connections to the axum template in 32 MiB,
/// then 3,000 short connections the server closes, then a flood of
/// malformed frames from the host side: the service keeps answering.
#[test]
fn http_template_serves_256_connections_in_32m_and_survives_garbage() {
    let test = "http_template_serves_256_connections_in_32m_and_survives_garbage";
    if !needs(test, &["wrk", "curl", "python3"]) {
        return;
    }
    let Some(ns) = NetNs::new(test) else { return };
    let img = image("http-template");
    let g = ns.spawn_guest(
        &img,
        &["--mem", "32M", "--ip", "10.0.3.2/24", "--gateway", HOST_IP],
        &[],
    );
    let url = "http://10.0.3.2:8080/";
    let o = ns.curl_until_up(url, Duration::from_secs(20));
    assert_eq!(o.stdout, "hello from the unikernel\n", "curl: {}", o.stderr);
    // A body far larger than the socket buffers, both ways (a lost
    // writability edge once stalled this after ~60 KB).
    let body: String = (0..600_000u32)
        .map(|i| char::from(b'a' + (i * 7 % 26) as u8))
        .collect();
    let file = tempfile_dir().join("body.txt");
    std::fs::write(&file, &body).unwrap();
    let o = ns.client(
        "curl",
        &[
            "-sS",
            "--max-time",
            "20",
            "--data-binary",
            &format!("@{}", file.display()),
            &format!("{url}echo"),
        ],
        Duration::from_secs(30),
    );
    assert!(
        o.stdout == body,
        "echo of {} bytes came back as {} bytes: {}",
        body.len(),
        o.stdout.len(),
        o.stderr
    );
    let o = ns.client(
        "wrk",
        &["-t2", "-c256", "-d4s", "--timeout", "5s", url],
        Duration::from_secs(30),
    );
    assert_eq!(o.code, 0, "wrk: {} {}", o.stdout, o.stderr);
    assert!(!o.stdout.contains("Socket errors"), "wrk: {}", o.stdout);
    assert!(!o.stdout.contains("Non-2xx"), "wrk: {}", o.stdout);
    let requests: u64 = o
        .stdout
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(requests >= 256, "wrk: {}", o.stdout);
    // 3,000 connections the server closes first, one after another: each
    // leaves a socket in TIME-WAIT with 32 KiB of buffers, three times
    // what 32 MiB holds (the guest once ran out of heap after ~900 and
    // panicked).
    server_closes(&ns, "close", 1, 3000, 0);
    // Garbage on the wire: runts' worth of headers, broken IPv4/IPv6/ARP.
    let flood = root().join("tests/tests/net/garbage.py");
    let o = ns.client(
        "python3",
        &[flood.to_str().unwrap(), "tap0", "3000"],
        Duration::from_secs(60),
    );
    assert_eq!(o.code, 0, "garbage.py: {} {}", o.stdout, o.stderr);
    let o = ns.curl_until_up(url, Duration::from_secs(10));
    assert_eq!(
        o.stdout, "hello from the unikernel\n",
        "after the flood: {}",
        o.stderr
    );
    let out = g.kill();
    assert!(!out.stderr.contains("panic"), "guest: {}", out.stderr);
}

/// `tests/tests/net/server_closes.py MODE` against the template at
/// 10.0.3.2:8080: `rounds` rounds of `count` connections that the server
/// closes first, `pause` seconds apart; every one must be answered.
fn server_closes(ns: &NetNs, mode: &str, rounds: u32, count: u32, pause: u32) {
    let script = root().join("tests/tests/net/server_closes.py");
    let total = rounds * count;
    let (rounds, count, pause) = (rounds.to_string(), count.to_string(), pause.to_string());
    let o = ns.client(
        "python3",
        &[
            script.to_str().unwrap(),
            mode,
            "10.0.3.2",
            "8080",
            &rounds,
            &count,
            &pause,
            "hello from the unikernel\n",
        ],
        Duration::from_secs(120),
    );
    assert_eq!(
        o.code, 0,
        "server_closes.py {mode}: {} {}",
        o.stdout, o.stderr
    );
    assert_eq!(
        o.stdout,
        format!("{total} of {total} answered\n"),
        "{}",
        o.stderr
    );
}

/// Clients that read the server's close but never close their side leave
/// the server's connections in FIN-WAIT-2, each with 32 KiB of buffers:
/// 1,200 of them are more than 32 MiB holds. With a fin timeout of 2 s
/// (Linux's default is 60) the first round of 600 is forgotten before the
/// second arrives, and every request is answered.
#[test]
fn half_closed_connections_are_forgotten_after_the_fin_timeout() {
    let test = "half_closed_connections_are_forgotten_after_the_fin_timeout";
    if !needs(test, &["curl", "python3"]) {
        return;
    }
    let Some(ns) = NetNs::new(test) else { return };
    let img = image("http-template");
    let g = ns.spawn_guest(
        &img,
        &[
            "--mem",
            "32M",
            "--ip",
            "10.0.3.2/24",
            "--gateway",
            HOST_IP,
            "--env",
            "UNIKERNEL_TCP_FIN_TIMEOUT=2",
        ],
        &[],
    );
    let url = "http://10.0.3.2:8080/";
    let o = ns.curl_until_up(url, Duration::from_secs(20));
    assert_eq!(o.stdout, "hello from the unikernel\n", "curl: {}", o.stderr);
    server_closes(&ns, "hold", 2, 600, 4);
    let out = g.kill();
    assert!(!out.stderr.contains("panic"), "guest: {}", out.stderr);
}

/// Boot `img` with `cargo unikernel run` and a published port (rootless
/// user-mode networking: passt on hvt, QEMU's on kvm), then curl it on
/// loopback.
fn published_port_answers(img: &std::path::Path, extra: &[&str], port: u16) {
    let mut cmd = std::process::Command::new(tool("cargo-unikernel"));
    cmd.arg("run")
        .arg(img)
        .args(["-p", &format!("{port}:8080"), "--timeout", "120"])
        .args(extra);
    let mut g = netns::Guest::spawn(cmd);
    assert!(
        g.wait_for("listening on", Duration::from_secs(90)),
        "guest: {} {}",
        g.stdout(),
        g.stderr()
    );
    let url = format!("http://127.0.0.1:{port}/");
    let mut body = String::new();
    for _ in 0..100 {
        let mut c = std::process::Command::new("curl");
        c.args(["-sS", "--max-time", "5", &url]);
        let o = run_with_deadline(c, b"", Duration::from_secs(10));
        if o.code == 0 {
            body = o.stdout;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = g.kill();
    assert_eq!(
        body, "hello from the unikernel\n",
        "guest: {} {}",
        out.stdout, out.stderr
    );
}

fn free_port(salt: u32) -> u16 {
    20000 + ((std::process::id() * 7 + salt) % 20000) as u16
}

/// Rootless: `--net user` through passt (the default for a net image), a
/// published port on loopback.
#[test]
fn user_mode_network_publishes_a_port_on_loopback() {
    let test = "user_mode_network_publishes_a_port_on_loopback";
    if !needs(test, &["passt", "curl"]) {
        return;
    }
    published_port_answers(&image("http-template"), &[], free_port(1));
}

/// The same on kvm: virtio-net under QEMU (TCG) with its user-mode network.
#[test]
fn kvm_user_mode_network_publishes_a_port_on_loopback() {
    let test = "kvm_user_mode_network_publishes_a_port_on_loopback";
    if !qemu_available(test) || !needs(test, &["curl"]) {
        return;
    }
    let img = image_for(
        &root().join("tests/apps/http-template"),
        "http-template",
        "kvm",
    );
    published_port_answers(&img, &["--machine", "microvm"], free_port(2));
    published_port_answers(&img, &["--machine", "q35"], free_port(3));
}

/// Without a device: one note on stderr, and the service still runs on loopback.
#[test]
fn no_device_means_loopback_only_with_one_note() {
    let test = "no_device_means_loopback_only_with_one_note";
    if !kvm_available(test) {
        return;
    }
    let o = boot(&image("net-local"), &[], &[]);
    assert_eq!(o.code, 0, "{} {}", o.stdout, o.stderr);
    assert_eq!(
        o.stderr
            .matches("no network attached: loopback only")
            .count(),
        1,
        "stderr: {}",
        o.stderr
    );
}
