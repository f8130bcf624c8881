//! `cargo unikernel run`: boot an hvt image with the bundled monitor,
//! in-process, or a kvm image under QEMU, and hand back its exit code.
use std::path::{Path, PathBuf};
use std::time::Duration;

use cargo_unikernel::cmdline::{CommandLine, TRACE_SYSCALLS_TOKEN, VERBOSE_TOKEN};
use cargo_unikernel::config::format_size;
use cargo_unikernel::diskopt;
use cargo_unikernel::image::Image;
use cargo_unikernel::kvm_run::{self, EXIT_SETUP_FAILED, EXIT_TIMEOUT};
use cargo_unikernel::netopt::{NetAttach, NetOptions as KvmNet, Proto, Publish};
use cargo_unikernel::symbolize::CrashWatch;
use cargo_unikernel::vmm::{
    find_qemu, firecracker_config, firecracker_drives, firecracker_path, Accel, Machine,
    QemuConfig, DEFAULT_MEMORY, OVMF_CODE, OVMF_VARS,
};
use unikernel_hvt::net::{NetBackend, NetConfig, NetOptions, PortForward};

use crate::{Emit, RunArgs};

/// The network flags of `cargo unikernel run` for an hvt image.
#[derive(Clone, Debug, Default)]
pub struct HvtNet {
    /// `--net`; `None`: `user` for an image with the net component, else none.
    pub backend: Option<NetBackend>,
    /// `-p/--publish`.
    pub ports: Vec<PortForward>,
    /// `--pcap`.
    pub pcap: Option<std::path::PathBuf>,
    /// `--ip`, `--gateway`, `--dns`.
    pub options: NetOptions,
}

/// The ports an image's manifest publishes by default (its `ports` list,
/// entries like `8080:80` or `udp:5353:53`), as port forwards.
pub fn manifest_ports(ports: &[String]) -> Result<Vec<PortForward>, String> {
    ports
        .iter()
        .map(|p| {
            p.parse()
                .map_err(|e| format!("the image's manifest ports: {e}"))
        })
        .collect()
}

/// The network device for a run: the flags, else `--net user` for an image
/// whose manifest lists the net component. Ports: `-p`, after the
/// manifest's own (`manifest_ports`; a `-p` with the same host port wins).
pub fn net_config(
    flags: &HvtNet,
    components: &[String],
    manifest_ports: &[PortForward],
) -> NetConfig {
    let has_net = components.iter().any(|c| c == "net");
    let backend = flags
        .backend
        .clone()
        .or_else(|| has_net.then_some(NetBackend::User));
    let mut ports: Vec<PortForward> = Vec::new();
    if backend == Some(NetBackend::User) || !flags.ports.is_empty() {
        for p in manifest_ports.iter().chain(&flags.ports) {
            ports.retain(|q| (q.udp, q.host) != (p.udp, p.host));
            ports.push(*p);
        }
    }
    NetConfig {
        backend,
        ports,
        pcap: flags.pcap.clone(),
    }
}

/// Boot the hvt `image`. `args` `None` keeps the image's default arguments;
/// `disks` are the `--disk NAME=FILE` flags (the monitor checks them
/// against the image's declared disks).
/// Returns the monitor's exit code (the app's, or the monitor's own
/// 125/254/255, whose message it has already printed).
#[allow(clippy::too_many_arguments)] // the flags of `run`, one by one
pub fn boot(
    image: &Path,
    mem: Option<u64>,
    env: Vec<String>,
    args: Option<Vec<String>>,
    trace_syscalls: bool,
    timeout: Option<f64>,
    net: HvtNet,
    disks: Vec<unikernel_hvt::block::DiskArg>,
    gdb: Option<std::net::SocketAddr>,
) -> Result<u8, String> {
    // The components decide the default network; an unreadable image is
    // reported by the monitor itself.
    let (components, ports) = unikernel_hvt::image::Image::open(image)
        .map(|i| (i.manifest.components, i.manifest.ports))
        .unwrap_or_default();
    let net_options = net.options.clone();
    let net = net_config(&net, &components, &manifest_ports(&ports)?);
    let mut cmd = std::process::Command::new(
        std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?,
    );
    cmd.arg(MONITOR_ARG);
    if let Some(m) = mem {
        cmd.arg(format!("--mem={m}"));
    }
    for e in &env {
        cmd.arg(format!("--env={e}"));
    }
    if trace_syscalls {
        cmd.arg("--trace-syscalls");
    }
    if let Some(b) = &net.backend {
        cmd.arg(format!("--net={b}"));
    }
    for p in &net.ports {
        cmd.arg(format!("--publish={p}"));
    }
    if let Some(p) = &net.pcap {
        cmd.arg("--pcap").arg(p);
    }
    if let Some(ip) = net_options.ip {
        cmd.arg(format!("--ip={ip}"));
    }
    if let Some(gw) = net_options.gateway {
        cmd.arg(format!("--gateway={gw}"));
    }
    for d in &net_options.dns {
        cmd.arg(format!("--dns={d}"));
    }
    for d in &disks {
        let mut a = std::ffi::OsString::from(format!("--disk={}=", d.name));
        a.push(&d.path);
        cmd.arg(a);
    }
    if let Some(g) = gdb {
        cmd.arg(format!("--gdb={g}"));
    }
    cmd.arg(image);
    if let Some(args) = &args {
        cmd.arg("--").args(args);
    }
    Ok(run_monitor(cmd, timeout.map(Duration::from_secs_f64)))
}

/// The first argument that makes this executable the hvt monitor.
pub const MONITOR_ARG: &str = "__hvt-monitor";

/// Runs the monitor child: stdin and stdout are the guest's console as
/// they are ours; its stderr passes through a watch for crash lines and
/// std's backtraces (reported after the run). Our SIGINT and SIGTERM go to
/// the child, which stops the guest and exits 130/143 itself. A child
/// killed by a signal exits 128 + N, with one line (SIGSYS: its seccomp
/// filter stopped a host call).
fn run_monitor(mut cmd: std::process::Command, timeout: Option<Duration>) -> u8 {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    cmd.stdin(std::process::Stdio::inherit())
        .stdout(std::process::Stdio::inherit())
        .stderr(std::process::Stdio::piped());
    // SAFETY: prctl is async-signal-safe; the child only asks to be killed
    // if this process dies first (nothing else runs before exec).
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cargo_unikernel::kvm_run::install_interrupt_handlers();
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: cannot start the monitor: {e}");
            return EXIT_SETUP_FAILED;
        }
    };
    let pid = child.id();
    let stderr = child.stderr.take();
    let relay = std::thread::spawn(move || {
        let (mut watch, mut err) = (CrashWatch::default(), std::io::stderr());
        if let Some(mut s) = stderr {
            let mut buf = [0u8; 4096];
            while let Ok(n) = std::io::Read::read(&mut s, &mut buf) {
                if n == 0 {
                    break;
                }
                watch.feed(&buf[..n]);
                let _ = std::io::Write::write_all(&mut err, &buf[..n]);
            }
        }
        watch.publish();
    });
    let start = std::time::Instant::now();
    let mut forwarded = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) => {}
            Err(_) => break None,
        }
        if let Some(sig) = cargo_unikernel::kvm_run::take_interrupt_signal() {
            if !forwarded {
                // SAFETY: kill of our own child's pid with a plain signal.
                unsafe { libc::kill(pid as libc::pid_t, sig) };
                forwarded = true;
            }
        }
        if timeout.is_some_and(|t| start.elapsed() >= t) {
            let _ = child.kill();
            let _ = child.wait();
            let _ = relay.join();
            eprintln!(
                "cargo-unikernel: the guest did not exit within {} s (--timeout)",
                timeout.map_or(0.0, |t| t.as_secs_f64())
            );
            return EXIT_TIMEOUT;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let _ = relay.join();
    match status {
        Some(st) => match (st.code(), st.signal()) {
            (Some(code), _) => (code & 0xff) as u8,
            (None, Some(sig)) => {
                let why = if sig == libc::SIGSYS {
                    " (a host call outside its seccomp filter; docs/security.md)"
                } else {
                    ""
                };
                eprintln!("cargo-unikernel: the monitor was killed by signal {sig}{why}");
                (128 + sig) as u8
            }
            _ => EXIT_SETUP_FAILED,
        },
        None => EXIT_SETUP_FAILED,
    }
}

/// The kvm network device for a run: `--net` as given, else user-mode
/// networking for an image with the net component (as on hvt).
fn kvm_attach(run: &RunArgs, components: &[String]) -> NetAttach {
    match &run.net {
        Some(NetBackend::User) => NetAttach::User,
        Some(NetBackend::Tap(t)) => NetAttach::Tap(t.clone()),
        None if components.iter().any(|c| c == "net") => NetAttach::User,
        None => NetAttach::None,
    }
}

/// `-p` (and the manifest's ports, which `-p` overrides by host port) as
/// QEMU port forwards.
fn kvm_publish(flags: &[PortForward], manifest: &[String]) -> Result<Vec<Publish>, String> {
    let mut all: Vec<PortForward> = Vec::new();
    for p in manifest_ports(manifest)?.iter().chain(flags) {
        all.retain(|q| (q.udp, q.host) != (p.udp, p.host));
        all.push(*p);
    }
    Ok(all
        .into_iter()
        .map(|p| Publish {
            proto: if p.udp { Proto::Udp } else { Proto::Tcp },
            host: p.host,
            guest: p.guest,
        })
        .collect())
}

/// MiB the kvm VM needs above the image (for its firmware).
const KVM_FIRMWARE_HEADROOM_MIB: u64 = 4;

/// Boot (or describe) the kvm `image` under QEMU.
pub fn boot_kvm(image: &Path, run: &RunArgs, args: Option<Vec<String>>) -> Result<u8, String> {
    let data = std::fs::read(image).map_err(|e| format!("cannot read {}: {e}", image.display()))?;
    let manifest = Image::parse(&data)
        .map_err(|_| format!("{} is not a readable kvm image", image.display()))?
        .manifest;
    // The VM's firmware (SeaBIOS, qboot) works in the top of RAM while the
    // image is already loaded: keep 4 MiB above the image for it. A memory
    // default from the manifest is raised to that; an explicit --mem is not.
    let floor = (manifest.app_end.div_ceil(1 << 20) + KVM_FIRMWARE_HEADROOM_MIB) << 20;
    let memory = match run.mem {
        Some(m) => m.0,
        None => (if manifest.memory != 0 {
            manifest.memory
        } else {
            DEFAULT_MEMORY
        })
        .max(floor),
    };
    if memory < floor {
        eprintln!(
            "error: --mem {} is too small for {}: its kernel and app end at {:#x} and the VM firmware needs {} MiB above; give at least {}M",
            format_size(memory),
            image.display(),
            manifest.app_end,
            KVM_FIRMWARE_HEADROOM_MIB,
            floor >> 20
        );
        return Ok(EXIT_SETUP_FAILED);
    }
    let mut options = Vec::new();
    if run.verbose {
        options.push(VERBOSE_TOKEN.to_string());
    }
    if run.trace_syscalls {
        options.push(TRACE_SYSCALLS_TOKEN.to_string());
    }
    let cmdline = CommandLine {
        options,
        env: run.env.clone(),
        args,
    }
    .encode();
    // Absolute: QEMU and Firecracker may run from another directory.
    let image = std::path::absolute(image)
        .map_err(|e| format!("cannot resolve {}: {e}", image.display()))?;
    if run.emit == Some(Emit::Disk) {
        eprintln!(
            "cargo-unikernel: writing a disk image of {} (GRUB, BIOS and UEFI)",
            image.display()
        );
        let data =
            cargo_unikernel::cloud::data_options(true, run.data_size, run.data_from.as_deref())?;
        let out = cargo_unikernel::cloud::write(&image, &cmdline, run.disk_format, &data)?;
        println!("{}", out.display());
        return Ok(0);
    }

    let net = KvmNet::new(
        kvm_attach(run, &manifest.components),
        kvm_publish(&run.publish, &manifest.ports)?,
    )?;
    // The image's declared disks against --disk: refused in one line
    // before anything starts.
    let declared = diskopt::declared_names(&manifest.disks);
    if run.emit == Some(Emit::Firecracker) {
        // A declared disk without --disk gets a placeholder path to edit.
        let disks = match diskopt::resolve_given(&declared, &run.disk) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(EXIT_SETUP_FAILED);
            }
        };
        let placeholders: Vec<&String> = declared
            .iter()
            .filter(|n| !disks.iter().any(|d| &d.name == *n))
            .collect();
        let drives = firecracker_drives(&declared, &disks);
        let out = firecracker_path(&image);
        let json = serde_json::to_string_pretty(&firecracker_config(
            &image, memory, &cmdline, &net, drives,
        )?)
        .map_err(|e| format!("cannot encode the Firecracker config: {e}"))?;
        std::fs::write(&out, json + "\n")
            .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
        println!("{}", out.display());
        for name in placeholders {
            eprintln!(
                "note: disk \"{name}\" has no --disk {name}=FILE: put its image's path in the drives entry \"{name}\" of {}",
                out.display()
            );
        }
        eprintln!(
            "boot it with: firecracker --no-api --config-file {}",
            out.display()
        );
        return Ok(0);
    }
    let disks = match diskopt::resolve(&declared, &run.disk) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(EXIT_SETUP_FAILED);
        }
    };
    let qemu = match find_qemu() {
        Ok(q) => q,
        Err(e) if run.print_vmm_config => {
            // Still worth printing: the user may run it elsewhere.
            eprintln!("note: {e}");
            cargo_unikernel::vmm::QEMU.into()
        }
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(EXIT_SETUP_FAILED);
        }
    };
    let config = QemuConfig {
        qemu,
        image,
        machine: run.machine.unwrap_or(Machine::Microvm),
        accel: run.accel.unwrap_or(Accel::Tcg),
        memory,
        cmdline,
        net,
        disks,
        gdb: run.gdb,
        disk_boot: None,
    };
    if run.print_vmm_config {
        println!("{}", config.shell_line());
        return Ok(0);
    }
    if let Some(addr) = run.gdb {
        let bias = cargo_unikernel::symbolize::app_offset(&config.image).unwrap_or(0);
        let command = unikernel_hvt::gdb::command_line(&config.image, bias, addr);
        eprintln!("cargo-unikernel: QEMU waits for gdb on {addr}; connect with:\n  {command}");
        eprintln!(
            "  then set breakpoints with hbreak (hardware: no write into code the kernel has not mapped yet) and continue"
        );
    }
    Ok(kvm_run::run(
        &config,
        run.timeout.map(Duration::from_secs_f64),
    ))
}

/// Run (in a Xen dom0) or describe the xen `image`: write `<image>.xl.cfg`
/// and `xl create -c` it, or say where it is.
pub fn boot_xen(image: &Path, run: &RunArgs, args: Option<Vec<String>>) -> Result<u8, String> {
    use cargo_unikernel::xl;
    if run.gdb.is_some() {
        return Err(format!(
            "--gdb is for hvt and kvm images; {} is a xen image (on a Xen host, gdbsx attaches gdb to a domain: docs/debugging.md)",
            image.display()
        ));
    }
    let data = std::fs::read(image).map_err(|e| format!("cannot read {}: {e}", image.display()))?;
    let manifest = Image::parse(&data)
        .map_err(|_| format!("{} is not a readable xen image", image.display()))?
        .manifest;
    let memory_mib = match xl::memory_mib(run.mem.map(|m| m.0), manifest.memory, manifest.app_end) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(EXIT_SETUP_FAILED);
        }
    };
    let mut options = Vec::new();
    if run.verbose {
        options.push(VERBOSE_TOKEN.to_string());
    }
    if run.trace_syscalls {
        options.push(TRACE_SYSCALLS_TOKEN.to_string());
    }
    let cmdline = CommandLine {
        options,
        env: run.env.clone(),
        args,
    }
    .encode();
    if cmdline.len() > xl::MAX_CMDLINE {
        return Err(format!(
            "the command line for {} is {} bytes; a Xen PV guest gets at most {}: shorten args/env or put them in the image's metadata",
            image.display(),
            cmdline.len(),
            xl::MAX_CMDLINE
        ));
    }
    let image = std::path::absolute(image)
        .map_err(|e| format!("cannot resolve {}: {e}", image.display()))?;
    let config = xl::XlConfig {
        name: manifest.name.clone(),
        kernel: image.clone(),
        memory_mib,
        cmdline,
        vif: manifest
            .components
            .iter()
            .any(|c| c == "net")
            .then(|| run.xen_vif.clone().unwrap_or_default()),
        disks: Vec::new(),
    };
    let path = xl::config_path(&image);
    // Booting now needs every declared disk; a config to write or print
    // may name placeholders (and says so in a comment).
    let booting = run.emit.is_none() && !run.print_vmm_config;
    let config = xl::XlConfig {
        disks: match xl::disks(
            &manifest.disks,
            &run.disk
                .iter()
                .map(|d| (d.name.clone(), d.file.clone()))
                .collect::<Vec<_>>(),
            booting,
        ) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(EXIT_SETUP_FAILED);
            }
        },
        ..config
    };
    std::fs::write(&path, config.render())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    if run.emit == Some(Emit::Xl) {
        println!("{}", path.display());
        return Ok(0);
    }
    if run.print_vmm_config {
        print!("{}", config.render());
        return Ok(0);
    }
    if !xl::in_dom0() {
        // The lab attaches one file, as xvda.
        let lab_disk = config
            .disks
            .first()
            .and_then(|d| d.target.as_ref())
            .map(|t| format!(" --disk {}", t.display()))
            .unwrap_or_default();
        eprintln!(
            "not in a Xen dom0 (no /proc/xen): wrote {}; boot it on a Xen host with `xl create -c {}`, or here with the toolchain repository's Xen test lab, tests/xen/lab.sh run {} --mem {} --cmdline '{}'{lab_disk}",
            path.display(),
            path.display(),
            image.display(),
            memory_mib,
            config.cmdline
        );
        return Ok(EXIT_SETUP_FAILED);
    }
    let status = std::process::Command::new("xl")
        .arg("create")
        .arg("-c")
        .arg(&path)
        .status()
        .map_err(|e| format!("cannot start xl: {e}"))?;
    Ok(status.code().unwrap_or(i32::from(EXIT_SETUP_FAILED)) as u8)
}

/// True if the file at `path` is a GPT disk (what `--emit disk` writes, raw
/// or qcow2), not an image.
pub fn is_disk(path: &Path) -> bool {
    use std::io::Read as _;
    let mut head = [0u8; 520];
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    let n = f.read(&mut head).unwrap_or(0);
    (n >= 520 && &head[512..520] == b"EFI PART" && head[510..512] == [0x55, 0xaa])
        || (n >= 4 && &head[..4] == b"QFI\xfb")
}

/// `cargo unikernel run DISK [--uefi]`: QEMU q35 boots the disk through
/// SeaBIOS or OVMF, as a cloud's firmware would; the console and the exit
/// code as for a kvm image.
pub fn run_disk(run: &RunArgs, disk: &Path) -> Result<u8, String> {
    let qemu = find_qemu()?;
    let disk =
        std::path::absolute(disk).map_err(|e| format!("cannot resolve {}: {e}", disk.display()))?;
    let firmware = if run.uefi {
        if !Path::new(OVMF_CODE).exists() {
            return Err(format!(
                "--uefi needs OVMF at {OVMF_CODE} (Debian: apt-get install ovmf)"
            ));
        }
        // The firmware writes its variables: a private copy.
        let vars =
            std::env::temp_dir().join(format!("cargo-unikernel-ovmf-vars-{}", std::process::id()));
        std::fs::copy(OVMF_VARS, &vars).map_err(|e| format!("cannot copy {OVMF_VARS}: {e}"))?;
        Some((PathBuf::from(OVMF_CODE), vars))
    } else {
        None
    };
    let config = QemuConfig {
        qemu,
        image: disk,
        machine: Machine::Q35,
        accel: run.accel.unwrap_or(Accel::Tcg),
        memory: run.mem.map_or(256 << 20, |m| m.0.max(64 << 20)),
        cmdline: String::new(),
        net: KvmNet::default(),
        disks: Vec::new(),
        gdb: None,
        disk_boot: Some(firmware.clone()),
    };
    if run.print_vmm_config {
        println!("{}", config.shell_line());
        return Ok(0);
    }
    let code = kvm_run::run(&config, run.timeout.map(Duration::from_secs_f64));
    if let Some((_, vars)) = firmware {
        let _ = std::fs::remove_file(vars);
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(s: &str) -> PortForward {
        s.parse().unwrap()
    }

    #[test]
    fn images_with_the_net_component_default_to_user_networking() {
        let none = HvtNet::default();
        let net = ["net".to_string()];
        assert_eq!(net_config(&none, &[], &[]).backend, None);
        assert_eq!(net_config(&none, &net, &[]).backend, Some(NetBackend::User));
        let tap = HvtNet {
            backend: Some(NetBackend::Tap("tap0".into())),
            ..Default::default()
        };
        assert_eq!(
            net_config(&tap, &net, &[]).backend,
            Some(NetBackend::Tap("tap0".into()))
        );
    }

    #[test]
    fn publish_flags_override_the_manifest_ports() {
        let flags = HvtNet {
            ports: vec![port("8080:81"), port("udp:53:53")],
            ..Default::default()
        };
        let from_manifest = manifest_ports(&["8080:80".into(), "9000:90".into()]).unwrap();
        let c = net_config(&flags, &["net".into()], &from_manifest);
        assert_eq!(
            c.ports,
            [port("9000:90"), port("8080:81"), port("udp:53:53")]
        );
        // A tap device gets no manifest ports (nothing to forward).
        let tap = HvtNet {
            backend: Some(NetBackend::Tap("tap0".into())),
            ..Default::default()
        };
        assert!(net_config(&tap, &["net".into()], &from_manifest)
            .ports
            .is_empty());
        assert!(manifest_ports(&["80".into()]).is_err());
    }
}
