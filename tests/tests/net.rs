//! The network component, booted: sockets inside the guest on its
//! loopback link (no device attached), on every platform.

use unikernel_tests::*;

const LOCAL_LINES: [&str; 14] = [
    "tcp v4: 200000 bytes echoed, intact=true, peer=127.0.0.1",
    "tcp v6: 200000 bytes echoed, intact=true, peer=::1",
    "udp: 4 from a=true, reply PING from b=true",
    "udp timeout: WouldBlock",
    "hosts has localhost: true",
    "localhost resolves to [127.0.0.1:80, [::1]:80]",
    "connect to a closed port: ConnectionRefused",
    "nonblocking connect: r=-1 einprogress=true poll=1 pollout=true so_error=0",
    "unknown option: r=-1 enoprotoopt=true",
    "nonblocking read with no data: true",
    "FIONREAD after 3 bytes: 3",
    "read after peer close: 0",
    "write after peer close: Some(true)",
    "done",
];

cases! {
    fn loopback_sockets_work_without_a_device(t) on [hvt, kvm, microvm, xen] {
        let o = t.boot("net-local", &[], &[]);
        let lines: Vec<&str> = o
            .stdout_lines()
            .into_iter()
            .filter(|l| !l.starts_with("unikernel:") && !l.starts_with("no network attached"))
            .collect();
        assert_eq!(lines, LOCAL_LINES, "stderr: {}", o.stderr);
        assert_eq!(o.code, 0, "stderr: {}", o.stderr);
    }

    /// A malformed option of the network component stops the boot before
    /// the app runs, naming the option and its value (the address options
    /// are the monitor's to check on hvt).
    fn a_bad_network_option_stops_the_boot_naming_it(t) on [hvt] {
        let o = t.boot("net-local", &["--env", "UNIKERNEL_TCP_FIN_TIMEOUT=soon"], &[]);
        assert_eq!(o.code, 253, "stdout: {} stderr: {}", o.stdout, o.stderr);
        assert!(
            o.stderr.contains("UNIKERNEL_TCP_FIN_TIMEOUT=soon: not a number of seconds above 0"),
            "stderr: {}",
            o.stderr
        );
        assert!(!o.stdout.contains("done"), "the app ran: {}", o.stdout);
    }

    /// tokio (mio, epoll, non-blocking connect) with 256 clients and 256
    /// server connections (512 sockets: both ends are in the guest) open at
    /// once in 48 MiB: more SYNs than the listener's backlog arrive
    /// together, the surplus is dropped and retried as on Linux, and every
    /// echo comes back intact.
    fn tokio_echo_256_clients_in_48m(t) on [hvt] {
        let o = t.boot("net-tokio", &["--mem", "48M"], &["local", "256"]);
        assert_eq!(o.stdout, "256 of 256 clients echoed intact\n", "stderr: {}", o.stderr);
        assert_eq!(o.code, 0, "stderr: {}", o.stderr);
    }

    fn tokio_echo_on_every_platform(t) on [hvt, kvm, microvm, xen] {
        let o = t.boot("net-tokio", &[], &["local", "16"]);
        assert!(o.stdout.contains("16 of 16 clients echoed intact\n"), "stdout: {} stderr: {}", o.stdout, o.stderr);
        assert_eq!(o.code, 0, "stderr: {}", o.stderr);
    }
}
