//! The network component over Xen's netfront, on real Xen in the Xen lab (tests/xen/lab.sh):
//! the guest gets a vif on the lab's bridge `xenbr0` (dom0 is
//! 10.0.99.1/24) and a static address from the runtime options; a script
//! in dom0 is the client (busybox ping, python3 sockets).

use unikernel_tests::*;

/// The guest's runtime options: a static address on the lab's bridge.
const STATIC_IP: [&str; 2] = ["UNIKERNEL_IP=10.0.99.2/24", "UNIKERNEL_GATEWAY=10.0.99.1"];

/// dom0's side: wait until the guest answers ping, ping 3 times, then a
/// 100 kB TCP echo, 50 one-line round trips, a UDP echo and "quit" (the
/// guest exits 0 after it).
const ECHO_CLIENT: &str = r#"
for i in $(seq 1 60); do
    if busybox ping -c 1 -W 1 10.0.99.2 >/dev/null 2>&1; then break; fi
done
busybox ping -c 3 -W 2 10.0.99.2 | grep -E "packets transmitted|round-trip"
python3 - <<'PY'
import socket, time
s = socket.create_connection(("10.0.99.2", 7), timeout=10)
msg = bytes((k * 31) % 256 for k in range(100000))
t = time.time()
s.sendall(msg)
back = b""
while len(back) < len(msg):
    d = s.recv(65536)
    if not d:
        break
    back += d
print("tcp echo: %d bytes intact=%s" % (len(back), back == msg))
print("tcp echo time: %.0f ms" % ((time.time() - t) * 1000))
n = 50
t = time.time()
ok = 0
for i in range(n):
    line = b"line %d\n" % i
    s.sendall(line)
    if s.recv(100) == line:
        ok += 1
print("tcp round trips: %d of %d" % (ok, n))
print("tcp round trip time: %.2f ms" % ((time.time() - t) * 1000 / n))
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.settimeout(5)
u.sendto(b"PING", ("10.0.99.2", 7))
print("udp echo: %r" % (u.recvfrom(100)[0],))
s.sendall(b"quit\n")
print("quit answer: %r" % (s.recv(100),))
PY
"#;

/// dom0 as a DHCP server (busybox udhcpd on xenbr0, a pool of one address,
/// 10.0.99.50) and then a client of the guest at the leased address.
const DHCP_SERVER_AND_CLIENT: &str = r#"
cat > /tmp/udhcpd.conf <<'CONF'
start 10.0.99.50
end 10.0.99.50
interface xenbr0
lease_file /tmp/udhcpd.leases
option subnet 255.255.255.0
option router 10.0.99.1
option lease 600
CONF
touch /tmp/udhcpd.leases
busybox udhcpd -f /tmp/udhcpd.conf >/dev/null 2>&1 &
for i in $(seq 1 90); do
    if busybox ping -c 1 -W 1 10.0.99.50 >/dev/null 2>&1; then echo "leased address answers ping"; break; fi
done
python3 - <<'PY'
import socket
s = socket.create_connection(("10.0.99.50", 7), timeout=10)
s.sendall(b"over dhcp\n")
print("tcp echo: %r" % (s.recv(100),))
s.sendall(b"quit\n")
print("quit answer: %r" % (s.recv(100),))
PY
"#;

cases! {
    /// One boot: ICMP echo (smoltcp answers), TCP bulk echo and round
    /// trips, UDP echo, all through netfront/netback; the guest exits 0
    /// when the client sends "quit".
    fn netfront_ping_and_tokio_echo_from_dom0(t) on [xen] {
        let extras = XenLabExtras {
            options: &STATIC_IP,
            net: true,
            dom0_script: Some(ECHO_CLIENT),
            vif_unchecked: false,
            disk: None,
        };
        let o = boot_xen_lab(&t.image("net-tokio"), &[], &["serve", "7"], &extras);
        let dom0: Vec<&str> = o
            .stdout_lines()
            .into_iter()
            .filter_map(|l| l.strip_prefix("dom0: "))
            .collect();
        for line in [
            "3 packets transmitted, 3 packets received, 0% packet loss",
            "tcp echo: 100000 bytes intact=True",
            "tcp round trips: 50 of 50",
            "udp echo: b'PING'",
            "quit answer: b'bye\\n'",
            "exit 0",
        ] {
            assert!(dom0.contains(&line), "dom0 did not say {line:?}; output: {}", o.stderr);
        }
        assert!(o.stdout.contains("listening on 0.0.0.0:7"), "output: {}", o.stderr);
        assert_eq!(o.code, 0, "output: {}", o.stderr);
    }

    /// No static address: the guest takes a DHCP lease from dom0's udhcpd
    /// over netfront and serves on it.
    fn netfront_dhcp_lease_from_dom0(t) on [xen] {
        let extras = XenLabExtras {
            options: &["UNIKERNEL_VERBOSE=1"],
            net: true,
            dom0_script: Some(DHCP_SERVER_AND_CLIENT),
            vif_unchecked: false,
            disk: None,
        };
        let o = boot_xen_lab(&t.image("net-tokio"), &[], &["serve", "7"], &extras);
        let dom0: Vec<&str> = o
            .stdout_lines()
            .into_iter()
            .filter_map(|l| l.strip_prefix("dom0: "))
            .collect();
        for line in [
            "leased address answers ping",
            "tcp echo: b'over dhcp\\n'",
            "quit answer: b'bye\\n'",
            "exit 0",
        ] {
            assert!(dom0.contains(&line), "dom0 did not say {line:?}; output: {}", o.stderr);
        }
        assert!(
            o.stdout
                .lines()
                .any(|l| l.contains("(DHCP):") && l.contains("10.0.99.50/24 gateway 10.0.99.1")),
            "no DHCP lease line; output: {}",
            o.stderr
        );
        assert_eq!(o.code, 0, "output: {}", o.stderr);
    }
}
