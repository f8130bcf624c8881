//! Launch configurations for the standard VMMs that boot a kvm image: the
//! QEMU command line (`cargo unikernel run --platform kvm` and
//! `--print-vmm-config`) and the Firecracker JSON config (`--emit
//! firecracker`). Nothing here starts a process; see [`crate::kvm_run`].
use std::path::{Path, PathBuf};

use crate::diskopt::Disk;
use crate::netopt::{NetAttach, NetOptions};

/// The QEMU binary we start.
pub const QEMU: &str = "qemu-system-x86_64";

/// The isa-debug-exit device: the guest writes its exit code N to port
/// 0xf4 and QEMU exits with status (N << 1) | 1.
pub const DEBUG_EXIT_DEVICE: &str = "isa-debug-exit,iobase=0xf4,iosize=0x04";

/// Default guest memory when neither `--mem` nor the manifest says.
pub const DEFAULT_MEMORY: u64 = 64 << 20;

/// QEMU machine types the image boots on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Machine {
    /// `-M microvm`: no PCI, no firmware tables, one ISA serial port
    /// (stdout and stderr mixed); the fastest boot.
    Microvm,
    /// `-M q35`: PCIe, two serial ports (stdout on COM1, stderr on COM2).
    Q35,
}

/// How QEMU runs the guest's instructions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Accel {
    /// QEMU's own CPU emulator: standard x86 semantics everywhere.
    Tcg,
    /// Hardware virtualization through /dev/kvm.
    Kvm,
}

/// Which VMM `run` starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Vmm {
    Qemu,
}

/// Everything the QEMU command line depends on.
#[derive(Clone, Debug)]
pub struct QemuConfig {
    pub qemu: PathBuf,
    pub image: PathBuf,
    pub machine: Machine,
    pub accel: Accel,
    /// Guest memory in bytes (rounded up to MiB on the command line).
    pub memory: u64,
    /// The encoded guest command line (see [`crate::cmdline`]).
    pub cmdline: String,
    /// The network device (`--net`, `-p`).
    pub net: NetOptions,
    /// The disks (`--disk`), in the image's declaration order.
    pub disks: Vec<Disk>,
    /// `--gdb`: QEMU's gdbstub on this address, the CPU held until gdb
    /// continues (`-S`).
    pub gdb: Option<std::net::SocketAddr>,
    /// Boot `image` as a disk (`--emit disk`'s output) through the
    /// firmware instead of as a kernel: SeaBIOS, or OVMF with these
    /// (code, vars) files (`--uefi`).
    pub disk_boot: Option<Option<(PathBuf, PathBuf)>>,
}

/// Debian's OVMF (package `ovmf`): the code and the pristine variables.
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// The id of the one network backend (`-netdev ...,id=net0`).
pub const NETDEV_ID: &str = "net0";

/// The `-netdev` value for `net` (None without a network device).
pub fn qemu_netdev(net: &NetOptions) -> Option<String> {
    match &net.attach {
        NetAttach::None => None,
        NetAttach::User => {
            let mut s = format!("user,id={NETDEV_ID}");
            for p in &net.publish {
                s.push_str(&format!(
                    ",hostfwd={}::{}-:{}",
                    p.proto.name(),
                    p.host,
                    p.guest
                ));
            }
            Some(s)
        }
        NetAttach::Tap(name) => Some(format!(
            "tap,id={NETDEV_ID},ifname={name},script=no,downscript=no"
        )),
    }
}

/// The virtio-net device model on `machine`: virtio-mmio on microvm, PCI on q35.
pub fn qemu_net_device(machine: Machine) -> String {
    let model = match machine {
        Machine::Microvm => "virtio-net-device",
        Machine::Q35 => "virtio-net-pci",
    };
    format!("{model},netdev={NETDEV_ID}")
}

/// A value inside a QEMU option list: a ',' is written twice.
fn qemu_opt_value(s: &str) -> String {
    s.replace(',', ",,")
}

/// The `-drive` value of `disk`: a raw image, no guest-visible interface
/// of its own (the virtio-blk device names it), the host page cache with
/// flushes honoured (`cache=writeback`: a guest FLUSH becomes
/// `fdatasync`; never `unsafe`, which drops them).
pub fn qemu_drive(disk: &Disk) -> String {
    format!(
        "file={},if=none,id=disk-{},format=raw,cache=writeback{}",
        qemu_opt_value(&disk.file.display().to_string()),
        disk.name,
        if disk.read_only { ",readonly=on" } else { "" }
    )
}

/// The virtio-blk device of `disk` on `machine` (virtio-mmio on microvm,
/// PCI on q35); its serial (VIRTIO_BLK_T_GET_ID) is the disk's name.
pub fn qemu_blk_device(machine: Machine, disk: &Disk) -> String {
    let model = match machine {
        Machine::Microvm => "virtio-blk-device",
        Machine::Q35 => "virtio-blk-pci",
    };
    format!("{model},drive=disk-{0},serial={0}", disk.name)
}

/// Whole MiB, rounded up.
pub fn memory_mib(bytes: u64) -> u64 {
    bytes.div_ceil(1 << 20)
}

impl QemuConfig {
    /// The arguments after the program name.
    ///
    /// `-display none` rather than `-nographic`: with `-nographic` QEMU tells
    /// the firmware (SeaBIOS) to print on the serial port, and its banner
    /// would reach the app's stdout.
    pub fn args(&self) -> Vec<String> {
        let machine = match self.machine {
            Machine::Microvm => "microvm",
            Machine::Q35 => "q35",
        };
        let (accel, cpu) = match self.accel {
            Accel::Tcg => ("tcg", "qemu64"),
            // `-cpu host` aborts on kvm-pvm (MSR 0x10a); EPYC works on both.
            Accel::Kvm => ("kvm", "EPYC"),
        };
        let mut a: Vec<String> = [
            "-M",
            machine,
            "-accel",
            accel,
            "-cpu",
            cpu,
            "-m",
            &format!("{}M", memory_mib(self.memory)),
            "-smp",
            "1",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-serial",
            "stdio",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if self.machine == Machine::Q35 {
            // COM2 = the app's stderr, to QEMU's own stderr.
            a.extend(["-serial".into(), "file:/proc/self/fd/2".into()]);
        }
        match &self.disk_boot {
            None => a.extend([
                "-kernel".into(),
                self.image.display().to_string(),
                "-append".into(),
                self.cmdline.clone(),
            ]),
            Some(firmware) => {
                // Written in place: the guest writes its data partitions
                // (never the boot partitions), and they persist.
                a.extend([
                    "-drive".into(),
                    format!(
                        "file={},format={},if=none,id=boot0",
                        self.image.display(),
                        if self.image.extension().is_some_and(|e| e == "qcow2") {
                            "qcow2"
                        } else {
                            "raw"
                        }
                    ),
                    "-device".into(),
                    "virtio-blk-pci,drive=boot0,bootindex=0".into(),
                ]);
                if let Some((code, vars)) = firmware {
                    a.extend([
                        "-drive".into(),
                        format!("if=pflash,format=raw,readonly=on,file={}", code.display()),
                        "-drive".into(),
                        format!("if=pflash,format=raw,file={}", vars.display()),
                    ]);
                }
            }
        }
        a.extend([
            "-device".into(),
            DEBUG_EXIT_DEVICE.into(),
            "-no-reboot".into(),
        ]);
        if let Some(netdev) = qemu_netdev(&self.net) {
            a.extend([
                "-netdev".into(),
                netdev,
                "-device".into(),
                qemu_net_device(self.machine),
            ]);
        }
        for d in &self.disks {
            a.extend([
                "-drive".into(),
                qemu_drive(d),
                "-device".into(),
                qemu_blk_device(self.machine, d),
            ]);
        }
        if let Some(addr) = self.gdb {
            a.extend(["-gdb".into(), format!("tcp:{addr}"), "-S".into()]);
        }
        a
    }

    /// The whole command, shell-quoted, for `--print-vmm-config`.
    pub fn shell_line(&self) -> String {
        std::iter::once(self.qemu.display().to_string())
            .chain(self.args())
            .map(|w| shell_quote(&w))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Quote a word for a POSIX shell (single quotes when needed).
pub fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./=:,@%+".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Find `qemu-system-x86_64` on `PATH`, or say how to install it.
pub fn find_qemu() -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(QEMU))
        .find(|p| is_executable(p))
        .ok_or_else(|| {
            format!(
                "{QEMU} is not installed; install it with `apt-get install qemu-system-x86` (on Debian 12 take QEMU 10 from bookworm-backports: `apt-get install -t bookworm-backports qemu-system-x86`)"
            )
        })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Where `--emit firecracker` writes: `<image>.firecracker.json`.
pub fn firecracker_path(image: &Path) -> PathBuf {
    let mut s = image.as_os_str().to_owned();
    s.push(".firecracker.json");
    PathBuf::from(s)
}

/// What `path_on_host` says for a declared disk that no `--disk` named:
/// the user puts the image's path there before booting.
pub fn firecracker_placeholder(name: &str) -> String {
    format!("EDIT-ME: path of the {name} disk image")
}

/// The `drives` of a Firecracker config: one per declared disk
/// (`declared`: names, in order), from `disks` (`--disk`) or with a
/// placeholder path; never the root device; `cache_type` Writeback, so a
/// guest FLUSH becomes an fsync of the file (Firecracker's default,
/// Unsafe, acknowledges flushes without doing them).
pub fn firecracker_drives(declared: &[String], disks: &[Disk]) -> Vec<serde_json::Value> {
    declared
        .iter()
        .map(|name| {
            let d = disks.iter().find(|d| &d.name == name);
            serde_json::json!({
                "drive_id": name,
                "path_on_host": d.map_or_else(|| firecracker_placeholder(name), |d| d.file.display().to_string()),
                "is_root_device": false,
                "is_read_only": d.is_some_and(|d| d.read_only),
                "cache_type": "Writeback",
            })
        })
        .collect()
}

/// A Firecracker config file (`firecracker --no-api --config-file F`):
/// the image as the kernel, the command line as boot args, one vCPU, the
/// memory in MiB, the `drives` ([`firecracker_drives`]), and the network
/// interface of `--net tap:IF` (Firecracker has no user-mode network and
/// no port forwarding).
pub fn firecracker_config(
    image: &Path,
    memory: u64,
    cmdline: &str,
    net: &NetOptions,
    drives: Vec<serde_json::Value>,
) -> Result<serde_json::Value, String> {
    let interfaces = match &net.attach {
        NetAttach::None => vec![],
        NetAttach::Tap(name) => vec![serde_json::json!({
            "iface_id": NETDEV_ID,
            "host_dev_name": name,
        })],
        NetAttach::User => {
            return Err(
                "--emit firecracker: Firecracker has no user-mode network; use --net tap:IF".into(),
            )
        }
    };
    Ok(serde_json::json!({
        "boot-source": {
            "kernel_image_path": image.display().to_string(),
            "boot_args": cmdline,
        },
        "drives": drives,
        "machine-config": {
            "vcpu_count": 1,
            "mem_size_mib": memory_mib(memory),
            "smt": false,
        },
        "network-interfaces": interfaces,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(machine: Machine, accel: Accel) -> QemuConfig {
        QemuConfig {
            qemu: PathBuf::from("/usr/bin/qemu-system-x86_64"),
            image: PathBuf::from("/img/hello"),
            machine,
            accel,
            memory: 64 << 20,
            cmdline: r#"A="x y" -- b"#.into(),
            net: NetOptions::default(),
            disks: Vec::new(),
            gdb: None,
            disk_boot: None,
        }
    }

    #[test]
    fn microvm_tcg_command() {
        let c = config(Machine::Microvm, Accel::Tcg);
        assert_eq!(
            c.args().join(" "),
            "-M microvm -accel tcg -cpu qemu64 -m 64M -smp 1 -nodefaults -no-user-config -display none -serial stdio -kernel /img/hello -append A=\"x y\" -- b -device isa-debug-exit,iobase=0xf4,iosize=0x04 -no-reboot"
        );
        assert_eq!(
            c.shell_line(),
            r#"/usr/bin/qemu-system-x86_64 -M microvm -accel tcg -cpu qemu64 -m 64M -smp 1 -nodefaults -no-user-config -display none -serial stdio -kernel /img/hello -append 'A="x y" -- b' -device isa-debug-exit,iobase=0xf4,iosize=0x04 -no-reboot"#
        );
    }

    #[test]
    fn q35_kvm_command() {
        let mut c = config(Machine::Q35, Accel::Kvm);
        c.memory = (3 << 20) + 1;
        let a = c.args().join(" ");
        assert!(a.starts_with("-M q35 -accel kvm -cpu EPYC -m 4M "), "{a}");
        assert!(
            a.contains("-serial stdio -serial file:/proc/self/fd/2 -kernel"),
            "{a}"
        );
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("abc-1.2/x=y"), "abc-1.2/x=y");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("it's"), r#"'it'\''s'"#);
        assert_eq!(shell_quote("a b"), "'a b'");
    }

    /// The field names of Firecracker's config file, as its documentation
    /// (docs/getting-started.md, "Configuring the microVM without sending
    /// API requests") and its API schema (src/firecracker/swagger/
    /// firecracker.yaml: BootSource, MachineConfiguration) name them.
    #[test]
    fn firecracker_config_uses_the_documented_schema() {
        let v = firecracker_config(
            Path::new("/img/app"),
            (64 << 20) + 1,
            "A=1 -- x",
            &NetOptions::default(),
            Vec::new(),
        )
        .unwrap();
        let top: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut sorted = top.clone();
        sorted.sort_unstable();
        assert_eq!(
            sorted,
            [
                "boot-source",
                "drives",
                "machine-config",
                "network-interfaces"
            ]
        );
        let boot = v["boot-source"].as_object().unwrap();
        assert_eq!(boot.len(), 2);
        assert_eq!(boot["kernel_image_path"], "/img/app");
        assert_eq!(boot["boot_args"], "A=1 -- x");
        let machine = v["machine-config"].as_object().unwrap();
        // Required by the schema: vcpu_count (1-32) and mem_size_mib (integer).
        assert_eq!(machine["vcpu_count"], 1);
        assert_eq!(machine["mem_size_mib"], 65);
        assert!(machine["mem_size_mib"].is_u64());
        assert_eq!(machine["smt"], false);
        assert_eq!(v["drives"], serde_json::json!([]));
        assert_eq!(v["network-interfaces"], serde_json::json!([]));
        assert_eq!(
            firecracker_path(Path::new("/t/unikernel/kvm/app")),
            Path::new("/t/unikernel/kvm/app.firecracker.json")
        );
    }

    fn with_net(machine: Machine, net: &str, publish: &[&str]) -> QemuConfig {
        let mut c = config(machine, Accel::Tcg);
        c.net = NetOptions::new(
            net.parse().unwrap(),
            publish.iter().map(|p| p.parse().unwrap()).collect(),
        )
        .unwrap();
        c
    }

    #[test]
    fn network_devices_per_machine() {
        let tail = |c: &QemuConfig| c.args()[c.args().len() - 4..].join(" ");
        assert_eq!(
            tail(&with_net(Machine::Microvm, "user", &["8080:80", "udp:5353:53"])),
            "-netdev user,id=net0,hostfwd=tcp::8080-:80,hostfwd=udp::5353-:53 -device virtio-net-device,netdev=net0"
        );
        assert_eq!(
            tail(&with_net(Machine::Q35, "tap:tap0", &[])),
            "-netdev tap,id=net0,ifname=tap0,script=no,downscript=no -device virtio-net-pci,netdev=net0"
        );
        let none = with_net(Machine::Q35, "none", &[]);
        assert!(!none.args().iter().any(|a| a.contains("netdev")));
    }

    #[test]
    fn firecracker_network_interfaces() {
        let tap = NetOptions::new("tap:fc-tap0".parse().unwrap(), vec![]).unwrap();
        let v = firecracker_config(Path::new("/img/app"), 64 << 20, "", &tap, vec![]).unwrap();
        // Firecracker's NetworkInterface schema: iface_id and host_dev_name are required.
        assert_eq!(
            v["network-interfaces"],
            serde_json::json!([{"iface_id": "net0", "host_dev_name": "fc-tap0"}])
        );
        let user = NetOptions::new(NetAttach::User, vec![]).unwrap();
        let e = firecracker_config(Path::new("/img/app"), 64 << 20, "", &user, vec![]).unwrap_err();
        assert!(e.contains("no user-mode network"), "{e}");
    }

    fn disk(name: &str, file: &str, read_only: bool) -> Disk {
        Disk {
            name: name.into(),
            file: PathBuf::from(file),
            read_only,
        }
    }

    /// `--disk NAME=FILE` on each machine: a raw drive with the host
    /// cache in writeback mode (flushes honoured, never `cache=unsafe`),
    /// `readonly=on` for a file the user cannot write, and a virtio-blk
    /// device whose serial is the disk's name.
    #[test]
    fn disks_per_machine() {
        for (machine, model) in [
            (Machine::Microvm, "virtio-blk-device"),
            (Machine::Q35, "virtio-blk-pci"),
        ] {
            let mut c = config(machine, Accel::Tcg);
            c.disks = vec![
                disk("data", "/d/data.img", false),
                disk("logs", "/d/a,b.img", true),
            ];
            let a = c.args();
            let tail = a[a.len() - 8..].join(" ");
            assert_eq!(
                tail,
                format!("-drive file=/d/data.img,if=none,id=disk-data,format=raw,cache=writeback -device {model},drive=disk-data,serial=data -drive file=/d/a,,b.img,if=none,id=disk-logs,format=raw,cache=writeback,readonly=on -device {model},drive=disk-logs,serial=logs")
            );
            assert!(!a.iter().any(|w| w.contains("cache=unsafe")));
        }
        let none = config(Machine::Q35, Accel::Tcg);
        assert!(!none.args().iter().any(|a| a == "-drive"));
    }

    /// Firecracker's Drive schema (src/firecracker/swagger/firecracker.yaml):
    /// drive_id, path_on_host, is_root_device and is_read_only (required
    /// but for path_on_host and is_read_only), cache_type Unsafe|Writeback.
    #[test]
    fn firecracker_drives_entry() {
        let declared = vec!["data".to_string(), "logs".to_string()];
        let drives = firecracker_drives(&declared, &[disk("logs", "/d/logs.img", true)]);
        let v = firecracker_config(
            Path::new("/img/app"),
            64 << 20,
            "",
            &NetOptions::default(),
            drives,
        )
        .unwrap();
        assert_eq!(
            v["drives"],
            serde_json::json!([
                {
                    "drive_id": "data",
                    "path_on_host": "EDIT-ME: path of the data disk image",
                    "is_root_device": false,
                    "is_read_only": false,
                    "cache_type": "Writeback",
                },
                {
                    "drive_id": "logs",
                    "path_on_host": "/d/logs.img",
                    "is_root_device": false,
                    "is_read_only": true,
                    "cache_type": "Writeback",
                },
            ])
        );
        assert_eq!(
            firecracker_drives(&[], &[]),
            Vec::<serde_json::Value>::new()
        );
    }
}
