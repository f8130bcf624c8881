//! The kvm platform's virtio-net driver, below any network stack: real
//! boots under QEMU (TCG) of a kernel built with the platform's `net`
//! feature, on microvm (virtio-mmio) and q35 (virtio-pci).
//!
//! * `selftest_echo_*`: the guest runs its boot-time self-test
//!   (`UNIKERNEL_NET_SELFTEST=N`, docs/kvm.md): QEMU's `-netdev dgram`
//!   carries its frames as UDP datagrams to a peer in this test on
//!   loopback, which waits for the guest's hello frame, sends a burst of
//!   frames of varied sizes, then a few frames one at a time after a
//!   pause each, and checks that each comes back unchanged with the MAC
//!   addresses swapped. The guest idles in `hlt` whenever its ring is
//!   empty; each spaced frame must end that `hlt` through the device's
//!   interrupt (vector 33: the guest counts its wake-ups by vector), which
//!   shows the interrupt routed and acknowledged (a lost interrupt would
//!   leave the guest asleep until its 20 s idle limit, a timer wake-up).
//! * `late_frames_while_the_app_spins_*`: frames keep arriving while an
//!   app runs; their interrupts must not wedge it.
//! * `run_net_user_*`: `cargo unikernel run --net user` gives the guest a
//!   device it finds, with QEMU's MAC.
//! * `tap_selftest_*`: `cargo unikernel run --net tap:uk0` in a network
//!   namespace of its own, the self-test against a python3 peer on the tap.
//!
//! The `net` feature is chosen here through a toolchain overlay (the
//! builder's component selection turns it on once the net component
//! exists): a directory whose entries link to this source tree, except a
//! copy of `templates/kernel-glue` whose platform dependency has
//! `features = ["net"]`.
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use unikernel_tests::{accel, qemu_base, root, run_with_deadline, tool, Outcome, Target};

/// EtherType of the guest's self-test frames (platform-kvm netcheck.rs).
const ETHERTYPE: [u8; 2] = [0x88, 0xb5];
const HELLO: &[u8] = b"unikernel-net-selftest hello";
const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
/// Frames the peer sends in a burst, and how many may be in flight at once.
const FRAMES: usize = 200;
const WINDOW: usize = 8;
/// Then frames sent one at a time, each after a pause in which the guest
/// has surely gone idle: each must wake it by the device's interrupt.
const SPACED: usize = 4;
const PAUSE: Duration = Duration::from_millis(150);

/// The toolchain overlay whose kernel glue turns on the platform's `net`.
fn overlay() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("unikernel-net-toolchain-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    let src = root();
    for e in std::fs::read_dir(&src).unwrap() {
        let name = e.unwrap().file_name();
        if name != "templates" && name != "target" {
            std::os::unix::fs::symlink(src.join(&name), dir.join(&name)).unwrap();
        }
    }
    for e in std::fs::read_dir(src.join("templates")).unwrap() {
        let name = e.unwrap().file_name();
        if name != "kernel-glue" {
            std::os::unix::fs::symlink(
                src.join("templates").join(&name),
                dir.join("templates").join(&name),
            )
            .unwrap();
        }
    }
    let glue = dir.join("templates/kernel-glue");
    copy_dir(&src.join("templates/kernel-glue"), &glue);
    let toml = std::fs::read_to_string(glue.join("Cargo.toml")).unwrap();
    let line = "platform = { package = \"platform-@PLATFORM@\", path = \"@TOOLCHAIN_ROOT@/platform-@PLATFORM@/guest\" }";
    assert!(
        toml.contains(line),
        "templates/kernel-glue/Cargo.toml changed: update this test"
    );
    let net = line.replace(" }", ", features = [\"net\"] }");
    std::fs::write(glue.join("Cargo.toml"), toml.replace(line, &net)).unwrap();
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        if name == "target" || name == "Cargo.lock" {
            continue;
        }
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(&name));
        } else {
            std::fs::copy(e.path(), to.join(&name)).unwrap();
        }
    }
}

/// The test app `tests/apps/<app>` for kvm with the virtio-net driver,
/// built once per test binary.
fn net_image(app: &str) -> PathBuf {
    static OVERLAY: OnceLock<PathBuf> = OnceLock::new();
    static BUILT: Mutex<Vec<(String, PathBuf)>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, p)) = built.iter().find(|(a, _)| a == app) {
        return p.clone();
    }
    let overlay = OVERLAY.get_or_init(overlay);
    let out = std::env::temp_dir().join(format!(
        "unikernel-test-{}-kvm-net-{app}",
        std::process::id()
    ));
    let mut cmd = Command::new(tool("cargo-unikernel"));
    cmd.args(["build", "--platform", "kvm", "--manifest-path"])
        .arg(root().join("tests/apps").join(app).join("Cargo.toml"))
        .arg("-o")
        .arg(&out)
        .env("UNIKERNEL_TOOLCHAIN_ROOT", overlay)
        // Its own kernel cache: the glue differs from the default kvm kernel's.
        .env("CARGO_TARGET_DIR", root().join("target/net-kvm-tests"));
    let o = run_with_deadline(cmd, b"", Duration::from_secs(900));
    assert_eq!(
        o.code, 0,
        "building {app} with net failed:\n{}\n{}",
        o.stdout, o.stderr
    );
    built.push((app.to_string(), out.clone()));
    out
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The QEMU command `cargo unikernel run` would start (docs/kvm.md), with a
/// `-netdev dgram` between the guest's device and `peer_port`.
fn qemu_with_dgram(
    machine: &str,
    image: &Path,
    cmdline: &str,
    guest_port: u16,
    peer_port: u16,
) -> Command {
    let mut c = qemu_base(machine, accel(), "64M");
    c.args(["-smp", "1"]);
    if machine == "q35" {
        c.args(["-serial", "file:/proc/self/fd/2"]);
    }
    c.arg("-kernel").arg(image);
    c.args([
        "-append",
        cmdline,
        "-device",
        "isa-debug-exit,iobase=0xf4,iosize=0x04",
        "-no-reboot",
    ]);
    c.arg("-netdev").arg(format!(
        "dgram,id=n0,local.type=inet,local.host=127.0.0.1,local.port={guest_port},remote.type=inet,remote.host=127.0.0.1,remote.port={peer_port}"
    ));
    let dev = if machine == "q35" {
        "virtio-net-pci"
    } else {
        "virtio-net-device"
    };
    c.args(["-device", &format!("{dev},netdev=n0")]);
    c
}

/// Frame `i` of the peer: to the guest, varied sizes (60..=1514 bytes).
fn frame(i: usize, guest: [u8; 6]) -> Vec<u8> {
    let len = 60 + (i * 397) % (1514 - 60 + 1);
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&guest);
    f.extend_from_slice(&PEER_MAC);
    f.extend_from_slice(&ETHERTYPE);
    f.extend_from_slice(&(i as u32).to_be_bytes());
    while f.len() < len {
        f.push((f.len() * 7 + i) as u8);
    }
    f
}

fn is_hello(f: &[u8]) -> bool {
    f.len() >= 14 + HELLO.len()
        && f[..6] == [0xff; 6]
        && f[12..14] == ETHERTYPE
        && &f[14..14 + HELLO.len()] == HELLO
}

/// The peer: wait for the hello, send FRAMES frames (at most WINDOW in
/// flight), then SPACED frames one at a time after a PAUSE each; check
/// every echo. Returns the guest's MAC and the burst's frames/s.
fn peer(sock: &UdpSocket, guest_port: u16) -> Result<([u8; 6], f64), String> {
    sock.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut buf = vec![0u8; 65536];
    let guest: [u8; 6] = loop {
        let n = sock
            .recv(&mut buf)
            .map_err(|e| format!("no hello frame from the guest: {e}"))?;
        if is_hello(&buf[..n]) {
            break buf[6..12].try_into().unwrap();
        }
    };
    let to = ("127.0.0.1", guest_port);
    let start = Instant::now();
    let mut rate = 0.0;
    let (mut sent, mut echoed) = (0, 0);
    while echoed < FRAMES + SPACED {
        if echoed == FRAMES && rate == 0.0 {
            rate = FRAMES as f64 / start.elapsed().as_secs_f64();
        }
        if echoed < FRAMES {
            while sent < FRAMES && sent - echoed < WINDOW {
                sock.send_to(&frame(sent, guest), to).unwrap();
                sent += 1;
            }
        } else if sent == echoed {
            std::thread::sleep(PAUSE);
            sock.send_to(&frame(sent, guest), to).unwrap();
            sent += 1;
        }
        let n = sock.recv(&mut buf).map_err(|e| {
            format!(
                "echo {echoed} of {} did not come back: {e}",
                FRAMES + SPACED
            )
        })?;
        let got = &buf[..n];
        if is_hello(got) {
            continue; // a hello repeated before our first frame arrived
        }
        let mut want = frame(echoed, guest);
        want[..6].copy_from_slice(&PEER_MAC);
        want[6..12].copy_from_slice(&guest);
        if got != &want[..] {
            return Err(format!(
                "echo {echoed} differs: {} bytes, want {} (first bytes {:02x?})",
                got.len(),
                want.len(),
                &got[..got.len().min(20)]
            ));
        }
        echoed += 1;
    }
    Ok((guest, rate))
}

/// `token`: name the device as Firecracker does, with a
/// `virtio_mmio.device=` token (microvm's last transport, GSI 47), instead
/// of letting the guest probe microvm's transport window.
fn selftest(machine: &str, token: Option<&str>) {
    let test = format!(
        "selftest_echo_{machine}{}",
        if token.is_some() { "_token" } else { "" }
    );
    if !Target::Microvm.available(&test) {
        return;
    }
    let image = net_image("hello-min");
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let peer_port = sock.local_addr().unwrap().port();
    let guest_port = free_udp_port();
    let total = FRAMES + SPACED;
    let cmdline = format!(
        "UNIKERNEL_VERBOSE=1 UNIKERNEL_NET_SELFTEST={total} -- {}",
        token.unwrap_or("")
    );
    let cmd = qemu_with_dgram(machine, &image, &cmdline, guest_port, peer_port);
    let qemu = std::thread::spawn(move || run_with_deadline(cmd, b"", Duration::from_secs(150)));
    let result = peer(&sock, guest_port);
    let o: Outcome = qemu.join().unwrap();
    let all = format!("{}{}", o.stdout, o.stderr);
    let (mac, rate) = result.unwrap_or_else(|e| panic!("{test}: {e}\n--- guest:\n{all}"));
    eprintln!(
        "{test}: {total} frames echoed; the burst of {FRAMES}: {rate:.0} frames/s (window {WINDOW}, -accel {})",
        accel()
    );
    assert_eq!(
        mac,
        [0x52, 0x54, 0x00, 0x12, 0x34, 0x56],
        "QEMU's default MAC\n{all}"
    );
    let line = all
        .lines()
        .find(|l| l.contains("net selftest virtio-net0"))
        .unwrap_or_else(|| panic!("no self-test line\n{all}"));
    eprintln!("{test}: guest: {line}");
    for l in all.lines().filter(|l| l.contains("kvm: virtio-net")) {
        eprintln!("{test}: guest: {l}");
    }
    assert!(
        line.contains(&format!("echoed {total} of {total} frames")),
        "{line}"
    );
    let irq: u32 = line
        .split("idle wake-ups: ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no wake-up count: {line}"));
    assert!(
        irq >= SPACED as u32,
        "the spaced frames did not each wake the idle guest by the device's interrupt: {line}"
    );
    // Each frame raises at most two interrupts (its receive, its echo's
    // transmit completion): more means a line left asserted.
    assert!(
        irq <= 2 * total as u32 + 16,
        "an interrupt storm: the device's interrupt is not acknowledged: {line}"
    );
    assert!(line.contains("by vector 33"), "{line}");
    assert!(
        o.stdout.contains("hello from hello-min"),
        "the app did not run after the self-test\n{all}"
    );
    assert!(all.contains("[unikernel] exit 0"), "{all}");
}

#[test]
fn selftest_echo_microvm() {
    selftest("microvm", None);
}

#[test]
fn selftest_echo_microvm_token() {
    selftest("microvm", Some("virtio_mmio.device=512@0xfeb02e00:47"));
}

#[test]
fn selftest_echo_q35() {
    selftest("q35", None);
}

/// Frames that keep arriving after the self-test, while the app runs.
const LATE: usize = 24;
const LATE_GAP: Duration = Duration::from_millis(4);

/// Frames arriving while the app runs: spin-fair keeps a thread spinning at
/// ring 3 while its main thread sleeps 50 ms, so the device's interrupts
/// hit app code (the trap path, acknowledged at ring 3) or the runtime
/// (deferred to a safe point). An interrupt left unacknowledged would fire
/// again at once (the line is level-triggered on microvm) and starve the
/// tick: the main thread would never wake.
fn late_frames(machine: &str) {
    let test = format!("late_frames_while_the_app_spins_{machine}");
    if !Target::Microvm.available(&test) {
        return;
    }
    let image = net_image("spin-fair");
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let peer_port = sock.local_addr().unwrap().port();
    let guest_port = free_udp_port();
    let cmd = qemu_with_dgram(
        machine,
        &image,
        "UNIKERNEL_NET_SELFTEST=1 --",
        guest_port,
        peer_port,
    );
    let qemu = std::thread::spawn(move || run_with_deadline(cmd, b"", Duration::from_secs(150)));
    sock.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut buf = vec![0u8; 65536];
    let guest: [u8; 6] = loop {
        let n = sock.recv(&mut buf).expect("no hello frame from the guest");
        if is_hello(&buf[..n]) {
            break buf[6..12].try_into().unwrap();
        }
    };
    let to = ("127.0.0.1", guest_port);
    sock.send_to(&frame(0, guest), to).unwrap();
    loop {
        let n = sock
            .recv(&mut buf)
            .expect("the self-test echo did not come back");
        if !is_hello(&buf[..n]) {
            break;
        }
    }
    // The self-test is over: the app starts now.
    for i in 1..=LATE {
        sock.send_to(&frame(i, guest), to).unwrap();
        std::thread::sleep(LATE_GAP);
    }
    let o: Outcome = qemu.join().unwrap();
    let all = format!("{}{}", o.stdout, o.stderr);
    assert!(
        o.stdout.contains("main woke up while a thread spins"),
        "{all}"
    );
    assert!(o.stdout.contains("spinner ran: true"), "{all}");
    assert!(all.contains("[unikernel] exit 0"), "{all}");
}

#[test]
fn late_frames_while_the_app_spins_microvm() {
    late_frames("microvm");
}

#[test]
fn late_frames_while_the_app_spins_q35() {
    late_frames("q35");
}

/// The tap peer (python3, AF_PACKET on the tap device): waits for the
/// guest's hello, sends argv[2] frames one at a time, checks each echo.
const TAP_PEER: &str = r#"
import socket, sys, time
ifname, n = sys.argv[1], int(sys.argv[2])
ET = 0x88b5
HELLO = b"unikernel-net-selftest hello"
me = bytes.fromhex("020000000002")
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ET))
s.bind((ifname, ET))
s.settimeout(60)
def recv():
    while True:
        f, addr = s.recvfrom(65536)
        if addr[2] != socket.PACKET_OUTGOING:
            return f
while True:
    f = recv()
    if f[:6] == b"\xff" * 6 and f[14:14 + len(HELLO)] == HELLO:
        break
guest = f[6:12]
t0 = time.monotonic()
for i in range(n):
    body = i.to_bytes(4, "big") + bytes((j * 7 + i) & 0xff for j in range(46 + (i * 397) % 1451))
    frame = guest + me + ET.to_bytes(2, "big") + body
    s.send(frame)
    while True:
        e = recv()
        if e[:6] != b"\xff" * 6:
            break
    if e != me + guest + frame[12:]:
        print("PEER MISMATCH", i, len(e), len(frame))
        sys.exit(1)
print("PEER OK", n, guest.hex(":"), round(n / (time.monotonic() - t0)))
"#;

/// The shell script run in a fresh network namespace: a tap device, the
/// peer on it, and `cargo unikernel run --net tap:uk0` with the self-test.
const TAP_SCRIPT: &str = r#"
set -e
ip tuntap add dev uk0 mode tap
ip link set uk0 up
python3 -c "$PEER" uk0 "$N" > "$OUT" 2>&1 &
peer=$!
code=0
"$CU" run "$IMG" --machine "$MACHINE" --accel "$ACCEL" --timeout 120 --net tap:uk0 \
    --env UNIKERNEL_NET_SELFTEST="$N" || code=$?
wait $peer || true
cat "$OUT"
exit $code
"#;

/// Whether this host lets the test make a network namespace with a tap
/// device in it (root, /dev/net/tun, unshare, python3); else SKIPPED.
fn tap_available(test: &str) -> bool {
    let ok = Command::new("unshare")
        .args([
            "--net",
            "sh",
            "-c",
            "ip tuntap add dev uk0 mode tap && python3 -c 'import socket; socket.AF_PACKET'",
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        let line = format!("SKIPPED {test}: cannot make a tap device in a new network namespace (needs root, /dev/net/tun, unshare, ip, python3)\n");
        eprint!("{line}");
        print!("{line}");
    }
    ok
}

/// `cargo unikernel run --net tap:IF`: the self-test against a python3
/// peer on the host side of the tap, in a network namespace of its own.
fn tap_selftest(target: Target, machine: &str) {
    let test = format!("tap_selftest_{machine}");
    if !target.available(&test) || !tap_available(&test) {
        return;
    }
    let n = 50;
    let out = std::env::temp_dir().join(format!(
        "unikernel-tap-peer-{}-{machine}",
        std::process::id()
    ));
    let mut cmd = Command::new("unshare");
    cmd.args(["--net", "sh", "-c", TAP_SCRIPT])
        .env("PEER", TAP_PEER)
        .env("N", n.to_string())
        .env("OUT", &out)
        .env("CU", tool("cargo-unikernel"))
        .env("IMG", net_image("hello-min"))
        .env("MACHINE", machine)
        .env("ACCEL", accel());
    let o = run_with_deadline(cmd, b"", Duration::from_secs(150));
    let _ = std::fs::remove_file(&out);
    let all = format!("{}{}", o.stdout, o.stderr);
    assert_eq!(o.code, 0, "{all}");
    assert!(
        all.contains(&format!("PEER OK {n} 52:54:00:12:34:56")),
        "the peer did not get every echo\n{all}"
    );
    let line = all
        .lines()
        .find(|l| l.contains("net selftest virtio-net0"))
        .unwrap_or_else(|| panic!("no self-test line\n{all}"));
    eprintln!("{test}: guest: {line}");
    if let Some(peer) = all.lines().find(|l| l.starts_with("PEER OK")) {
        eprintln!("{test}: {peer} (frames/s, one at a time)");
    }
    assert!(
        line.contains(&format!("echoed {n} of {n} frames")),
        "{line}"
    );
    assert!(o.stdout.contains("hello from hello-min"), "{all}");
}

#[test]
fn tap_selftest_microvm() {
    tap_selftest(Target::Microvm, "microvm");
}

#[test]
fn tap_selftest_q35() {
    tap_selftest(Target::Kvm, "q35");
}

fn run_net_user(target: Target, machine: &str) {
    let test = format!("run_net_user_{machine}");
    if !target.available(&test) {
        return;
    }
    let forward = format!("udp:{}:7", free_udp_port());
    let o = target.boot_image(
        &net_image("hello-min"),
        &["--verbose", "--net", "user", "-p", &forward],
        &[],
        b"",
    );
    let all = format!("{}{}", o.stdout, o.stderr);
    assert_eq!(o.code, 0, "{all}");
    let transport = if machine == "q35" {
        "virtio-pci"
    } else {
        "virtio-mmio"
    };
    let line = all
        .lines()
        .find(|l| l.contains("kvm: virtio-net0:"))
        .unwrap_or_else(|| panic!("the guest found no virtio-net device\n{all}"));
    assert!(line.contains(transport), "{line}");
    assert!(line.contains("MAC 52:54:00:12:34:56, MTU 1500"), "{line}");
    assert!(
        line.contains("-> vector 33"),
        "interrupt not routed: {line}"
    );
    assert!(o.stdout.contains("hello from hello-min"), "{all}");
}

#[test]
fn run_net_user_microvm() {
    run_net_user(Target::Microvm, "microvm");
}

#[test]
fn run_net_user_q35() {
    run_net_user(Target::Kvm, "q35");
}
