//! The network device end to end: a tiny test kernel (`net/kernel.c`,
//! built here with gcc into a flat binary) drives the rings; the monitor
//! runs it with `--net tap:` inside a network namespace the test creates,
//! or with `--net user` (passt). Needs /dev/kvm, root for namespaces and
//! taps, gcc and ld, python3, passt; a test prints SKIPPED when it cannot run.
mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::*;
use unikernel_hvt::net::{GUEST_MAC, NO_NETWORK_NOTE};
use unikernel_image::manifest::Platform;

const KERNEL_C: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/net/kernel.c");
const LINK_LD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/net/link.ld");
const FLOOD_PY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/net/flood.py");

const MODE_ECHO: u32 = 1;
const MODE_DHCP: u32 = 2;
const MODE_BAD_INDEX: u32 = 3;
const MODE_BAD_DESC: u32 = 4;
const MODE_INFO: u32 = 5;
const MODE_SYN: u32 = 6;

fn skip(test: &str, why: &str) {
    eprintln!("SKIPPED: {test}: {why}");
}

/// The test kernel in `mode`, or `None` (SKIPPED printed) without gcc/ld.
fn test_kernel(test: &str, mode: u32) -> Option<Vec<u8>> {
    c_kernel(
        test,
        KERNEL_C,
        LINK_LD,
        &format!("net{mode}"),
        &[format!("MODE={mode}")],
    )
}

/// A test image around the kernel in `mode`; `components` go into its manifest.
fn net_image(test: &str, mode: u32, components: &[&str]) -> Option<String> {
    let code = test_kernel(test, mode)?;
    let mut m = manifest(Platform::Hvt);
    m.components = components.iter().map(|c| c.to_string()).collect();
    m.component_reasons = components
        .iter()
        .map(|_| "listed by the test".to_string())
        .collect();
    let bytes = elf(&[kernel(&code, &[])], Some(&m));
    Some(
        write_image(&format!("net-{test}"), &bytes)
            .display()
            .to_string(),
    )
}

/// A network namespace with a tap device `tap0` in it, removed on drop.
struct Netns {
    name: String,
}

static NS_COUNTER: AtomicU32 = AtomicU32::new(0);

impl Netns {
    fn new(test: &str) -> Option<Netns> {
        let name = format!(
            "hvtnet-{}-{}",
            std::process::id(),
            NS_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let ok = |args: &[&str]| {
            Command::new("ip")
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !ok(&["netns", "add", &name]) {
            skip(
                test,
                "cannot create a network namespace (needs root and iproute2)",
            );
            return None;
        }
        let ns = Netns { name };
        let cmds: [&[&str]; 4] = [
            &["tuntap", "add", "tap0", "mode", "tap"],
            &["link", "set", "tap0", "mtu", "9000"],
            &["link", "set", "tap0", "up"],
            &["link", "set", "lo", "up"],
        ];
        for c in cmds {
            let mut args = vec!["netns", "exec", &ns.name, "ip"];
            args.extend_from_slice(c);
            if !ok(&args) {
                skip(
                    test,
                    &format!("cannot set up the tap device ({})", c.join(" ")),
                );
                return None;
            }
        }
        // No IPv6 noise (router solicitations) on the tap.
        let _ = ok(&[
            "netns",
            "exec",
            &ns.name,
            "sysctl",
            "-q",
            "-w",
            "net.ipv6.conf.tap0.disable_ipv6=1",
        ]);
        Some(ns)
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Waits for `child` at most `limit`; kills it (the test's own child) after.
fn wait_output(mut child: Child, limit: Duration, what: &str) -> Output {
    let t0 = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{what} did not finish within {limit:?}; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    eprintln!(
        "--- {what} -> {:?}\n--- stdout:\n{}--- stderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn spawn_monitor(mut cmd: Command, args: &[&str]) -> Child {
    cmd.arg(env!("CARGO_BIN_EXE_unikernel-hvt"))
        .args(args)
        .env("UNIKERNEL_NET_STATS", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start the monitor")
}

fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

fn mac_string() -> String {
    GUEST_MAC
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[test]
fn tap_frames_flow_both_ways_and_malformed_frames_are_dropped() {
    const T: &str = "tap_frames_flow_both_ways_and_malformed_frames_are_dropped";
    if !kvm_available(T) {
        return;
    }
    if !have("python3") {
        return skip(T, "python3 is needed for the host side");
    }
    let Some(img) = net_image(T, MODE_ECHO, &["net"]) else {
        return;
    };
    let Some(ns) = Netns::new(T) else { return };
    let monitor = spawn_monitor(ns.command("env"), &["--net", "tap:tap0", &img]);
    let host = ns
        .command("python3")
        .args([FLOOD_PY, "tap0", &mac_string(), "20000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let host = wait_output(host, Duration::from_secs(90), "host side (flood.py)");
    let out = wait_output(monitor, Duration::from_secs(30), "monitor");
    let h = String::from_utf8_lossy(&host.stdout).into_owned();
    assert!(host.status.success(), "flood.py failed:\n{h}");
    assert_eq!(
        field(&h, "single_echo"),
        Some("1"),
        "no echo of a single frame:\n{h}"
    );
    assert_eq!(
        field(&h, "echo_after_flood"),
        Some("1"),
        "no echo after the flood:\n{h}"
    );
    let sent: u64 = field(&h, "burst_sent").unwrap().parse().unwrap();
    let echoed: u64 = field(&h, "burst_echoed").unwrap().parse().unwrap();
    // The host's socket and the tap queue may drop some of a burst; most must come back.
    assert!(
        echoed * 10 >= sent * 9,
        "only {echoed} of {sent} frames came back:\n{h}"
    );
    assert_eq!(out.status.code(), Some(0));
    let guest = stdout(&out);
    let n: u64 = guest
        .strip_prefix("echoed ")
        .and_then(|r| r.strip_suffix(" frames\n"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected guest output {guest:?}"));
    // Every valid frame the guest got was echoed; the malformed ones never reached it.
    assert!(n >= echoed + 2, "guest echoed {n}, host saw {echoed} + 2");
    let err = stderr(&out);
    let stats = err
        .lines()
        .find(|l| l.starts_with("unikernel-hvt: net stats:"))
        .unwrap_or_else(|| panic!("no stats line in {err:?}"));
    eprintln!("MEASURED: {stats}; host: {}", h.replace('\n', " "));
    let malformed: u64 = field(&h, "malformed_sent").unwrap().parse().unwrap();
    if malformed > 0 {
        assert!(
            !stats.contains("(0 dropped)"),
            "malformed frames not dropped: {stats}"
        );
    }
}

#[test]
fn user_networking_starts_passt_and_dhcp_gets_an_offer() {
    const T: &str = "user_networking_starts_passt_and_dhcp_gets_an_offer";
    if !kvm_available(T) {
        return;
    }
    if !have("passt") && !Path::new("/usr/bin/passt").exists() {
        return skip(T, "passt is not installed (Debian package passt)");
    }
    let Some(img) = net_image(T, MODE_DHCP, &["net"]) else {
        return;
    };
    let child = spawn_monitor(
        Command::new("env"),
        &["--net", "user", "-p", "tcp:18080:80", &img],
    );
    let out = wait_output(child, Duration::from_secs(30), "monitor --net user");
    let o = stdout(&out);
    assert!(o.starts_with("offer "), "no DHCP offer: {o:?}");
    assert_eq!(out.status.code(), Some(0));
    assert!(!stderr(&out).contains(NO_NETWORK_NOTE));
}

#[test]
fn published_ports_reach_the_guest_through_passt() {
    const T: &str = "published_ports_reach_the_guest_through_passt";
    if !kvm_available(T) {
        return;
    }
    if !have("passt") && !Path::new("/usr/bin/passt").exists() {
        return skip(T, "passt is not installed (Debian package passt)");
    }
    let Some(img) = net_image(T, MODE_SYN, &[]) else {
        return;
    };
    // A host port unlikely to be taken; the guest sees its own port 80.
    let host_port = 20000 + (std::process::id() % 20000) as u16;
    let pcap = std::env::temp_dir().join(format!("hvt-net-{}.pcap", std::process::id()));
    let child = spawn_monitor(
        Command::new("env"),
        &[
            "--net",
            "user",
            "-p",
            &format!("{host_port}:80"),
            "--pcap",
            &pcap.display().to_string(),
            &img,
        ],
    );
    let pid = child.id();
    // Connect (loopback only) until the guest has seen the SYN and halted.
    let knock = std::thread::spawn(move || {
        let t0 = Instant::now();
        while Path::new(&format!("/proc/{pid}")).exists() && t0.elapsed() < Duration::from_secs(20)
        {
            let _ = std::net::TcpStream::connect_timeout(
                &([127, 0, 0, 1], host_port).into(),
                Duration::from_millis(200),
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let out = wait_output(child, Duration::from_secs(30), "monitor --net user -p");
    let _ = knock.join();
    assert_eq!(stdout(&out), "syn to port 80\n");
    assert_eq!(out.status.code(), Some(0));
    // The pcap file holds the frames both ways: the DISCOVER and the SYN.
    let p = std::fs::read(&pcap).unwrap();
    let _ = std::fs::remove_file(&pcap);
    assert_eq!(&p[..4], &0xa1b2_c3d4u32.to_le_bytes());
    let mut at = 24;
    let mut frames = 0;
    while at + 16 <= p.len() {
        let incl = u32::from_le_bytes(p[at + 8..at + 12].try_into().unwrap()) as usize;
        at += 16 + incl;
        frames += 1;
    }
    assert_eq!(at, p.len(), "truncated pcap record");
    assert!(frames >= 2, "{frames} frames in the pcap file");
}

#[test]
fn passt_ends_with_a_killed_monitor() {
    const T: &str = "passt_ends_with_a_killed_monitor";
    if !kvm_available(T) {
        return;
    }
    if !Path::new("/usr/bin/passt").exists() && !have("passt") {
        return skip(T, "passt is not installed (Debian package passt)");
    }
    // The echo kernel waits for frames forever.
    let Some(img) = net_image(T, MODE_ECHO, &[]) else {
        return;
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_unikernel-hvt"))
        .args(["--net", "user", &img])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // passt is a child of the monitor's main thread.
    let children = format!("/proc/{0}/task/{0}/children", child.id());
    let t0 = Instant::now();
    let passt: u32 = loop {
        let list = std::fs::read_to_string(&children).unwrap_or_default();
        if let Some(p) = list.split_whitespace().next() {
            break p.parse().unwrap();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "passt never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut comm = String::new();
    std::fs::File::open(format!("/proc/{passt}/comm"))
        .and_then(|mut f| f.read_to_string(&mut comm))
        .unwrap();
    assert!(comm.starts_with("passt"), "child {passt} is {comm:?}"); // or passt.avx2 after its re-exec
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap(); // SIGKILL: no destructor runs in the monitor
    child.wait().unwrap();
    let t0 = Instant::now();
    while Path::new(&format!("/proc/{passt}/comm")).exists()
        && std::fs::read_to_string(format!("/proc/{passt}/stat")).is_ok_and(|s| !s.contains(") Z "))
    {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "passt {passt} still runs after the monitor was killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs a kernel in `mode` with a tap device in a fresh namespace.
fn run_on_tap(test: &str, mode: u32) -> Option<Output> {
    if !kvm_available(test) {
        return None;
    }
    let img = net_image(test, mode, &[])?;
    let ns = Netns::new(test)?;
    let child = spawn_monitor(ns.command("env"), &["--net", "tap:tap0", &img]);
    Some(wait_output(child, Duration::from_secs(30), "monitor"))
}

#[test]
fn a_ring_index_beyond_the_ring_stops_the_guest() {
    let Some(out) = run_on_tap(
        "a_ring_index_beyond_the_ring_stops_the_guest",
        MODE_BAD_INDEX,
    ) else {
        return;
    };
    assert_eq!(out.status.code(), Some(254));
    let e = stderr(&out);
    assert!(
        e.contains("unikernel-hvt: guest broke the network ring protocol: tx ring: producer index 1000 is 1000 ahead of consumer index 0, but the ring has 256 slots"),
        "{e}"
    );
}

#[test]
fn a_descriptor_outside_ram_stops_a_spinning_guest() {
    let Some(out) = run_on_tap(
        "a_descriptor_outside_ram_stops_a_spinning_guest",
        MODE_BAD_DESC,
    ) else {
        return;
    };
    assert_eq!(out.status.code(), Some(254));
    let e = stderr(&out);
    assert!(
        e.contains("guest broke the network ring protocol: tx descriptor 0: buffer: guest range 0x7fff00000000+0x3c lies outside guest RAM"),
        "{e}"
    );
}

#[test]
fn without_net_an_image_with_the_net_component_says_so_once() {
    const T: &str = "without_net_an_image_with_the_net_component_says_so_once";
    if !kvm_available(T) {
        return;
    }
    let Some(img) = net_image(T, MODE_INFO, &["net"]) else {
        return;
    };
    let out = monitor(&[&img]);
    assert_eq!(stdout(&out), "not attached mtu 0\n");
    assert_eq!(stderr(&out), format!("{NO_NETWORK_NOTE}\n"));
    assert_eq!(out.status.code(), Some(0));

    let Some(plain) = net_image("info-plain", MODE_INFO, &[]) else {
        return;
    };
    let out = monitor(&[&plain]);
    assert_eq!(stdout(&out), "not attached mtu 0\n");
    assert_eq!(stderr(&out), "");
}

#[test]
fn net_flags_are_checked_before_boot() {
    let img = write_image(
        "net-flags",
        &elf(&[kernel(&[0xf4], &[])], Some(&manifest(Platform::Hvt))),
    );
    let img = img.display().to_string();
    for (args, msg) in [
        (vec!["-p", "8080:80"], "publishing ports needs --net user"),
        (
            vec!["--net", "tap:tap0", "-p", "1:2"],
            "publishing ports needs --net user",
        ),
        (
            vec!["--ip", "10.0.2.15/24", "--gateway", "10.0.3.1"],
            "is not in the subnet",
        ),
        (vec!["--net", "bridge"], "expected `user` or `tap:IFNAME`"),
        (vec!["--ip", "10.0.2.15"], "prefix length"),
        (
            vec!["--net", "tap:much-too-long-name"],
            "interface name is 1 to 15 characters",
        ),
        (
            vec!["--net", "tap:hvtnotthere"],
            "there is no network interface hvtnotthere",
        ),
    ] {
        let mut a = args.clone();
        a.push(&img);
        let out = monitor(&a);
        assert_eq!(out.status.code(), Some(125), "{args:?}");
        assert!(stderr(&out).contains(msg), "{args:?}: {}", stderr(&out));
    }
}
