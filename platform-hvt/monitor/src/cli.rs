//! The `unikernel-hvt` command line: parses it and boots the image (the
//! binary `src/main.rs`, and `cargo unikernel run`, which runs the monitor
//! as a child process of its own executable).
use std::path::PathBuf;

use crate::block::DiskArg;
use crate::net::config::{parse_host_addr, Ipv4Cidr};
use crate::net::{NetBackend, NetConfig, NetOptions, PortForward};
use crate::{parse_size, run, RunConfig};
use clap::Parser;

/// Boot a unikernel image (built by `cargo unikernel build`) on KVM.
///
/// Exit status: the app's exit code (0-255); 125 if the guest could not be
/// started (bad options or image, too little memory, no /dev/kvm); 254 if
/// the guest made an invalid hypercall; 255 if the guest crashed (the
/// registers are printed on stderr).
#[derive(Debug, Parser)]
#[command(name = "unikernel-hvt", version)]
struct Cli {
    /// Guest memory, e.g. 64M or 1G (default: the image's manifest, else 64M).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    mem: Option<u64>,
    /// Set an environment variable for the app (repeatable); replaces the
    /// image's default for the same KEY. Keys starting with UNIKERNEL_ are
    /// runtime options instead (e.g. UNIKERNEL_VERBOSE=1, UNIKERNEL_IP=...),
    /// replacing the image's option defaults.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Print every system call the app makes on stderr (strace style).
    #[arg(long)]
    trace_syscalls: bool,
    /// Attach a network device: `user` (rootless, through passt) or
    /// `tap:IFNAME` (an existing tap device).
    #[arg(long, value_name = "user|tap:IF")]
    net: Option<NetBackend>,
    /// Publish a guest port on the host (repeatable; needs --net user):
    /// HOST:GUEST (TCP), tcp:HOST:GUEST or udp:HOST:GUEST.
    #[arg(short = 'p', long = "publish", value_name = "[udp:]HOST:GUEST")]
    publish: Vec<PortForward>,
    /// The guest's static IPv4 address (default: DHCP), e.g. 10.0.2.15/24.
    #[arg(long, value_name = "ADDR/PREFIX")]
    ip: Option<Ipv4Cidr>,
    /// The guest's default gateway (with --ip).
    #[arg(long, value_name = "ADDR", value_parser = |s: &str| parse_host_addr("--gateway", s))]
    gateway: Option<std::net::Ipv4Addr>,
    /// A DNS server for the guest (repeatable).
    #[arg(long, value_name = "ADDR", value_parser = |s: &str| parse_host_addr("--dns", s))]
    dns: Vec<std::net::Ipv4Addr>,
    /// Write every frame of the network device to this pcap file.
    #[arg(long, value_name = "FILE")]
    pcap: Option<PathBuf>,
    /// Attach a disk the image declares (repeatable): NAME=FILE, a raw
    /// file whose size is a multiple of 512. A file you cannot write
    /// (`chmod a-w`) is attached read-only.
    #[arg(long = "disk", value_name = "NAME=FILE")]
    disks: Vec<DiskArg>,
    /// Wait for gdb on this address before the guest starts, and serve the
    /// GDB remote protocol (breakpoints, single steps, registers, memory,
    /// Ctrl-C; docs/debugging.md). PORT alone listens on 127.0.0.1; other
    /// interfaces only if written (e.g. 0.0.0.0:1234).
    #[arg(long, value_name = "[ADDR:]PORT", value_parser = crate::gdb::parse_addr)]
    gdb: Option<std::net::SocketAddr>,
    /// Do not install the seccomp filter (docs/security.md): for debugging
    /// the monitor only (e.g. under strace); the guest then has a monitor
    /// that may make any host call.
    #[arg(long)]
    no_seccomp: bool,
    /// Test that the seccomp filter is live: once it is installed, attempt
    /// a forbidden call (openat); the monitor must die of SIGSYS.
    #[arg(long, hide = true, conflicts_with = "no_seccomp")]
    seccomp_check: bool,
    /// The unikernel image to boot.
    #[arg(value_name = "IMAGE")]
    image: PathBuf,
    /// Arguments for the app (after `--`); replace the image's default
    /// arguments (a bare `--` runs the app with no arguments).
    #[arg(last = true, value_name = "ARGS")]
    args: Option<Vec<String>>,
}

/// Parses `args` (the program name first) and runs the monitor; returns
/// the exit code.
pub fn main(args: Vec<std::ffi::OsString>) -> i32 {
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                crate::EXIT_SETUP_FAILED
            } else {
                0
            };
        }
    };
    let config = RunConfig {
        image: cli.image,
        mem: cli.mem,
        env: cli.env,
        // A bare `--` means "no arguments", not "the image's defaults"
        // (clap reports both as `None`).
        args: cli
            .args
            .or_else(|| args.iter().any(|a| a == "--").then(Vec::new)),
        trace_syscalls: cli.trace_syscalls,
        net: NetConfig {
            backend: cli.net,
            ports: cli.publish,
            pcap: cli.pcap,
        },
        net_options: NetOptions {
            ip: cli.ip,
            gateway: cli.gateway,
            dns: cli.dns,
        },
        disks: cli.disks,
        gdb: cli.gdb,
        seccomp: !cli.no_seccomp,
        seccomp_check: cli.seccomp_check,
    };
    if cli.no_seccomp {
        eprintln!(
            "unikernel-hvt: warning: --no-seccomp: the monitor runs without its seccomp filter (for debugging only)"
        );
    }
    run(&config)
}
