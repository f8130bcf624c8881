//! The `cargo-unikernel` command: `cargo unikernel new|build|run|inspect|disk|pack`.
//!
//! Works as a cargo subcommand (cargo passes "unikernel" as the first
//! argument, which is skipped) and as a plain `cargo-unikernel` binary.
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use cargo_unikernel::config::{parse_env_pair, MemorySize};
use cargo_unikernel::image::{Image, ImageError};
use cargo_unikernel::messages::{self, MessageFormat};
use cargo_unikernel::pipeline::{self, BuildOptions};
use cargo_unikernel::progress::Progress;
use cargo_unikernel::symbolize;
use cargo_unikernel::template;
use cargo_unikernel::vmm::{Accel, Machine, Vmm};
use unikernel_image::manifest::Platform;

mod disk;
mod run;

#[derive(Parser)]
#[command(
    name = "cargo-unikernel",
    bin_name = "cargo unikernel",
    version,
    about = "Build a Rust program into a unikernel image, and run or inspect it"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new app crate from a template.
    New {
        /// Directory to create; its last component is the crate name.
        name: PathBuf,
        /// Template to start from: hello (a command-line program) or http
        /// (an axum service on tokio).
        #[arg(long, default_value = "hello")]
        template: String,
    },
    /// Build the app and link it with the kernel into one image.
    Build(BuildCmd),
    /// Build (unless given an image), then boot it: hvt images on the bundled
    /// monitor, kvm images under QEMU.
    Run(Box<RunArgs>),
    /// Show what is inside an image: manifest, segments, sizes.
    Inspect {
        /// The image file.
        image: PathBuf,
        /// One JSON object instead of text (docs/ci.md).
        #[arg(long)]
        json: bool,
    },
    /// Data volumes for `--disk NAME=FILE`.
    #[command(subcommand)]
    Disk(DiskCommand),
    /// Make an image of a static x86_64 Linux executable that cargo did not
    /// build (C with musl-gcc, Go with CGO_ENABLED=0, Zig, ...); settings
    /// from a Unikernel.toml beside it (the keys of
    /// [package.metadata.unikernel]), the options below override them.
    Pack(PackArgs),
    /// Push an image to an OCI image layout (oci:DIR[:TAG]) or a registry
    /// (HOST[:PORT]/REPO[:TAG]) as an OCI artifact, its debug files as a
    /// second one tagged debug-<build id> (docs/deploy.md). Prints each
    /// manifest's digest and where it went.
    Push {
        /// The image file.
        image: PathBuf,
        /// oci:DIR[:TAG] or HOST[:PORT]/REPO[:TAG] (tag: latest).
        dest: String,
        /// Plain HTTP to a registry that is not on loopback.
        #[arg(long)]
        insecure: bool,
    },
    /// Pull an image pushed by `push` from an OCI layout or a registry.
    Pull {
        /// oci:DIR[:TAG] or HOST[:PORT]/REPO[:TAG|@DIGEST].
        source: String,
        /// Where to write the image.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: PathBuf,
        /// Also pull the debug files, as FILE.app.debug and FILE.kernel.debug.
        #[arg(long)]
        debug: bool,
        /// Plain HTTP to a registry that is not on loopback.
        #[arg(long)]
        insecure: bool,
    },
    /// Copy a console log (a file, or stdin) to stdout with each crash line
    /// expanded into functions and source lines, from the image's debug
    /// files (docs/debugging.md).
    Symbolize {
        /// The image the log is from (its .app.debug and .kernel.debug
        /// files are next to it, or in --debug-dir).
        image: PathBuf,
        /// The log [default: stdin].
        log: Option<PathBuf>,
        /// A directory of debug files named <build id>.app.debug and
        /// <build id>.kernel.debug.
        #[arg(long, value_name = "DIR")]
        debug_dir: Option<PathBuf>,
    },
}

#[derive(Args)]
struct PackArgs {
    /// The executable (static: ET_EXEC at its own address, or static-pie).
    program: PathBuf,
    /// Where to write the image [default: <program>.img].
    #[arg(short = 'o', long = "output", value_name = "OUT")]
    output: Option<PathBuf>,
    /// Target platform: hvt (default), kvm or xen.
    #[arg(long, value_name = "NAME")]
    platform: Option<String>,
    /// Default guest memory baked into the image ("64M", "1G").
    #[arg(long, value_name = "SIZE")]
    mem: Option<MemorySize>,
    /// A default environment variable (repeatable).
    #[arg(long = "env", value_name = "K=V", value_parser = parse_env_pair)]
    env: Vec<String>,
    /// The program's name, argv[0] is /NAME [default: the file's name].
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Components to link, comma-separated (net, fs), for a stripped
    /// program whose symbols cannot tell; replaces the config's list.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    components: Option<Vec<String>>,
    /// The settings file [default: Unikernel.toml beside the program].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// human (default) or json: one JSON object per line on stdout, cargo's
    /// messages and ours (docs/ci.md); text only on stderr.
    #[arg(long, value_enum, value_name = "FMT", default_value = "human")]
    message_format: MessageFormat,
    /// Default arguments (replace the config's `args`).
    #[arg(last = true, value_name = "ARGS")]
    args: Vec<String>,
}

#[derive(Args)]
struct BuildCmd {
    #[command(flatten)]
    build: BuildArgs,
    /// Also write a bootable disk of the image (kvm: disk, BIOS and UEFI
    /// through GRUB, the image's own default command line; see
    /// `run --emit disk` for another one).
    #[arg(long, value_enum, value_name = "WHAT")]
    emit: Option<BuildEmit>,
    /// With --emit disk: raw (default), qcow2, vhd (fixed, Azure) or gce.
    #[arg(long, value_enum, value_name = "FMT", default_value = "raw")]
    disk_format: cargo_unikernel::cloud::DiskFormat,
    /// With --emit disk: the size of each declared disk's data partition
    /// ("256M", "1G"; whole MiB, at least 4M) [default: 64M]. An image
    /// declaring several disks gets one partition this size for each.
    #[arg(long, value_name = "SIZE", value_parser = cargo_unikernel::cloud::parse_data_size)]
    data_size: Option<u64>,
    /// With --emit disk: copy this directory tree into each declared
    /// disk's data partition (reproducible: every timestamp 1980-01-01).
    #[arg(long, value_name = "DIR")]
    data_from: Option<PathBuf>,
    /// human (default) or json: one JSON object per line on stdout, cargo's
    /// messages and ours (docs/ci.md); text only on stderr.
    #[arg(long, value_enum, value_name = "FMT", default_value = "human")]
    message_format: MessageFormat,
}

#[derive(Subcommand)]
enum DiskCommand {
    /// Create a formatted volume (FAT + journal) in FILE; no root needed.
    Create {
        /// The image file to write.
        file: PathBuf,
        /// Its size ("256M", "1G").
        #[arg(long, value_name = "SIZE")]
        size: String,
        /// Copy this directory tree into the volume.
        #[arg(long, value_name = "DIR")]
        from: Option<PathBuf>,
        /// Overwrite FILE if it exists.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Args, Clone)]
struct BuildArgs {
    /// The app crate's directory or Cargo.toml (for `run`, also a built image);
    /// default: the current crate.
    path: Option<PathBuf>,
    /// Path to the app's Cargo.toml.
    #[arg(long, value_name = "PATH", conflicts_with = "path")]
    manifest_path: Option<PathBuf>,
    /// Build the app in release mode (the default).
    #[arg(long, conflicts_with = "debug")]
    release: bool,
    /// Build the app in debug mode (the kernel is always release).
    #[arg(long)]
    debug: bool,
    /// Target platform: hvt (the bundled monitor, default), kvm (QEMU,
    /// Firecracker, cloud-hypervisor) or xen (PV guest, `xl`); overrides the metadata.
    #[arg(long, value_name = "NAME")]
    platform: Option<String>,
    /// Where to write the image [default: <target dir>/unikernel/<platform>/<name>].
    #[arg(short = 'o', long = "output", value_name = "OUT")]
    output: Option<PathBuf>,
    /// Which binary of the package to build, if it has several.
    #[arg(long, value_name = "NAME")]
    bin: Option<String>,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    build: BuildArgs,
    /// Guest memory ("64M", "1G", ...); overrides the image's default.
    #[arg(long, value_name = "SIZE")]
    mem: Option<MemorySize>,
    /// Print every system call the app makes (strace style) on stderr.
    #[arg(long)]
    trace_syscalls: bool,
    /// Where to look for the debug files of a crash report when they are
    /// not next to the image: <build id>.app.debug / .kernel.debug.
    #[arg(long, value_name = "DIR")]
    debug_dir: Option<PathBuf>,
    /// Set an environment variable of the app (repeatable).
    #[arg(long = "env", value_name = "K=V", value_parser = parse_env_pair)]
    env: Vec<String>,
    /// Kill the guest after this many seconds (exit code 124).
    #[arg(long, value_name = "SECS")]
    timeout: Option<f64>,
    /// Wait for gdb before the guest starts (docs/debugging.md): hvt serves
    /// the GDB protocol itself, kvm starts QEMU's gdbstub. `--gdb` alone
    /// listens on 127.0.0.1:1234; `--gdb=PORT` or `--gdb=ADDR:PORT` (other
    /// interfaces only if written).
    #[arg(long, value_name = "[ADDR:]PORT", num_args = 0..=1, require_equals = true,
          default_missing_value = "127.0.0.1:1234", value_parser = unikernel_hvt::gdb::parse_addr)]
    gdb: Option<std::net::SocketAddr>,
    /// Attach a network device: `user` (rootless: passt on hvt, QEMU's
    /// user-mode network on kvm) or `tap:IFNAME` [default for an image with
    /// the net component: user].
    #[arg(long, value_name = "user|tap:IF")]
    net: Option<unikernel_hvt::net::NetBackend>,
    /// Publish a guest port on the host (repeatable; --net user):
    /// HOST:GUEST (TCP), tcp:HOST:GUEST or udp:HOST:GUEST.
    #[arg(short = 'p', long = "publish", value_name = "[udp:]HOST:GUEST")]
    publish: Vec<unikernel_hvt::net::PortForward>,
    /// hvt: the guest's static IPv4 address (default: DHCP), e.g. 10.0.2.15/24.
    #[arg(long, value_name = "ADDR/PREFIX")]
    ip: Option<unikernel_hvt::net::config::Ipv4Cidr>,
    /// hvt: the guest's default gateway (with --ip).
    #[arg(long, value_name = "ADDR", value_parser = |s: &str| unikernel_hvt::net::config::parse_host_addr("--gateway", s))]
    gateway: Option<std::net::Ipv4Addr>,
    /// hvt: a DNS server for the guest (repeatable).
    #[arg(long, value_name = "ADDR", value_parser = |s: &str| unikernel_hvt::net::config::parse_host_addr("--dns", s))]
    dns: Vec<std::net::Ipv4Addr>,
    /// hvt: write every frame of the network device to this pcap file.
    #[arg(long, value_name = "FILE")]
    pcap: Option<PathBuf>,
    /// Attach the raw disk image FILE as the disk the image declares under
    /// NAME (repeatable; every declared disk needs one; a file you cannot
    /// write attaches read-only). hvt: the monitor's block device; kvm: a
    /// virtio-blk device (QEMU `-drive ...,cache=writeback`, Firecracker
    /// `drives`); xen: the xl config's `disk` list (`access=ro` for a file
    /// without write permission); see docs/storage.md.
    #[arg(long = "disk", value_name = "NAME=FILE")]
    disk: Vec<cargo_unikernel::diskopt::DiskArg>,
    /// kvm: the VMM to start.
    #[arg(long, value_enum, value_name = "VMM")]
    vmm: Option<Vmm>,
    /// kvm: QEMU machine type [default: microvm].
    #[arg(long, value_enum, value_name = "TYPE")]
    machine: Option<Machine>,
    /// kvm: QEMU accelerator [default: tcg; on kvm-pvm ring-0 code under
    /// -accel kvm is emulated, see docs/kvm.md].
    #[arg(long, value_enum, value_name = "ACCEL")]
    accel: Option<Accel>,
    /// kvm, xen: the guest prints its boot diagnostics (kvm: virtio devices,
    /// TSC stamps; xen: memory, boot and exit times from the PV clock).
    #[arg(long)]
    verbose: bool,
    /// xen: the xl `vif` spec for images with the net component, e.g.
    /// "bridge=xenbr0,mac=00:16:3e:00:00:02" [default: "", xl's defaults:
    /// the bridge xenbr0 and a random MAC].
    #[arg(long, value_name = "SPEC")]
    xen_vif: Option<String>,
    /// kvm: print the QEMU command line (xen: the xl config) instead of running it.
    #[arg(long)]
    print_vmm_config: bool,
    /// kvm: write a VMM config next to the image (<image>.firecracker.json)
    /// or a bootable disk (disk: <image>.raw, BIOS and UEFI through GRUB,
    /// with this command line; see --disk-format); xen: the xl config
    /// (<image>.xl.cfg); instead of running it.
    #[arg(long, value_enum, value_name = "WHAT")]
    emit: Option<Emit>,
    /// Boot a disk (DISK: what --emit disk writes) with UEFI (OVMF) instead
    /// of BIOS (SeaBIOS).
    #[arg(long)]
    uefi: bool,
    /// With --emit disk: raw (default), qcow2, vhd (fixed, Azure) or gce
    /// (disk.raw in a gzipped tar).
    #[arg(long, value_enum, value_name = "FMT", default_value = "raw")]
    disk_format: cargo_unikernel::cloud::DiskFormat,
    /// With --emit disk: the size of each declared disk's data partition
    /// ("256M", "1G"; whole MiB, at least 4M) [default: 64M]. An image
    /// declaring several disks gets one partition this size for each.
    #[arg(long, value_name = "SIZE", value_parser = cargo_unikernel::cloud::parse_data_size)]
    data_size: Option<u64>,
    /// With --emit disk: copy this directory tree into each declared
    /// disk's data partition (reproducible: every timestamp 1980-01-01).
    #[arg(long, value_name = "DIR")]
    data_from: Option<PathBuf>,
    /// Arguments for the app (replace the image's default arguments).
    #[arg(last = true, value_name = "ARGS")]
    args: Vec<String>,
}

/// What `build --emit` writes besides the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum BuildEmit {
    /// kvm images: <image>.raw (or the --disk-format's extension).
    Disk,
}

/// What `--emit` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Emit {
    /// kvm images: <image>.firecracker.json.
    Firecracker,
    /// xen images: <image>.xl.cfg.
    Xl,
    /// kvm images: a GPT disk booting with BIOS and UEFI (<image>.raw, or
    /// the --disk-format's extension).
    Disk,
}

fn main() -> ExitCode {
    let mut argv: Vec<OsString> = std::env::args_os().collect();
    // `cargo unikernel run` of an hvt image runs the monitor in a child
    // process of this executable (its seccomp filter then ends with it).
    if argv.get(1).is_some_and(|a| a == run::MONITOR_ARG) {
        argv.remove(1);
        argv[0] = "unikernel-hvt".into();
        let code = unikernel_hvt::cli::main(argv);
        return ExitCode::from((code & 0xff) as u8);
    }
    if argv.get(1).is_some_and(|a| a == "unikernel") {
        argv.remove(1);
    }
    // `run -- ` with nothing after it means "no arguments", not "the defaults".
    let dash_dash = argv.iter().any(|a| a == "--");
    let cli = Cli::parse_from(argv);
    let format = match &cli.command {
        Command::Build(b) => b.message_format,
        Command::Pack(p) => p.message_format,
        _ => MessageFormat::Human,
    };
    messages::set_format(format);
    let result = dispatch(cli.command, dash_dash);
    if messages::json() {
        messages::emit(&messages::finished(
            &result.as_ref().map(|_| ()).map_err(Clone::clone),
        ));
    }
    match result {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Command, dash_dash: bool) -> Result<ExitCode, String> {
    match command {
        Command::New { name, template } => {
            let crate_name = template::new_crate(&name, &template)?;
            println!(
                "created {crate_name} from the {template} template in {}\nnext: cd {} && cargo unikernel run",
                name.display(),
                name.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Build(cmd) => {
            // Before the build: a bad --data-* fails at once.
            let data = cargo_unikernel::cloud::data_options(
                cmd.emit == Some(BuildEmit::Disk),
                cmd.data_size,
                cmd.data_from.as_deref(),
            )?;
            let image = pipeline::build(&build_options(&cmd.build)?, Progress::detect())?;
            report_image(&image);
            if cmd.emit == Some(BuildEmit::Disk) {
                let disk = cargo_unikernel::cloud::write(&image.path, "", cmd.disk_format, &data)?;
                eprintln!("  disk {}", disk.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(args) => {
            let args = *args;
            if let Some(t) = args.timeout {
                if !(t > 0.0 && t.is_finite()) {
                    return Err(format!(
                        "bad --timeout {t}: give a positive number of seconds"
                    ));
                }
            }
            cargo_unikernel::cloud::data_options(
                args.emit == Some(Emit::Disk),
                args.data_size,
                args.data_from.as_deref(),
            )?;
            if let Some(disk) = args
                .build
                .path
                .as_deref()
                .filter(|p| p.is_file() && run::is_disk(p))
            {
                let code = run::run_disk(&args, disk)?;
                return Ok(ExitCode::from(code));
            }
            if args.uefi {
                return Err("--uefi boots a disk (cargo unikernel run DISK --uefi; write one with --emit disk)".into());
            }
            let (image, platform) = match existing_image(args.build.path.as_deref())? {
                Some((path, platform)) => {
                    let b = &args.build;
                    if b.debug
                        || b.release
                        || b.platform.is_some()
                        || b.output.is_some()
                        || b.bin.is_some()
                    {
                        return Err(format!(
                            "{} is already an image: --debug/--release/--platform/-o/--bin only apply when building a crate",
                            path.display()
                        ));
                    }
                    (path, platform)
                }
                None => {
                    let image = pipeline::build(&build_options(&args.build)?, Progress::detect())?;
                    eprintln!("{}", pipeline::summary(&image));
                    (image.path, image.manifest.platform)
                }
            };
            let app_args = (dash_dash || !args.args.is_empty()).then_some(args.args.clone());
            let emit_mismatch = match (platform, args.emit) {
                (Platform::Kvm, Some(Emit::Xl)) => Some("kvm"),
                (Platform::Xen, Some(Emit::Firecracker)) => Some("xen"),
                (Platform::Xen, Some(Emit::Disk)) => Some("xen"),
                _ => None,
            };
            if let Some(p) = emit_mismatch {
                let what = match args.emit {
                    Some(Emit::Xl) => "xl",
                    Some(Emit::Disk) => "disk",
                    _ => "firecracker",
                };
                return Err(format!(
                    "--emit {what} does not apply to {}, a {p} image (kvm: firecracker, disk; xen: xl)",
                    image.display()
                ));
            }
            let net_flags = [
                (args.net.is_some() && platform == Platform::Xen, "--net"),
                (
                    !args.publish.is_empty() && platform == Platform::Xen,
                    "-p/--publish",
                ),
                (args.ip.is_some(), "--ip"),
                (args.gateway.is_some(), "--gateway"),
                (!args.dns.is_empty(), "--dns"),
                (args.pcap.is_some(), "--pcap"),
            ];
            if platform != Platform::Hvt {
                if let Some((_, flag)) = net_flags.iter().find(|(given, _)| *given) {
                    return Err(format!(
                        "{flag} does not apply to {} images ({} is one): see docs/networking.md",
                        platform.name(),
                        image.display()
                    ));
                }
            }
            let debug_dir = args.debug_dir.clone();
            let code = match platform {
                Platform::Kvm => run::boot_kvm(&image, &args, app_args)?,
                Platform::Xen => {
                    let kvm_only = [
                        (args.vmm.is_some(), "--vmm"),
                        (args.machine.is_some(), "--machine"),
                        (args.accel.is_some(), "--accel"),
                    ];
                    if let Some((_, flag)) = kvm_only.iter().find(|(given, _)| *given) {
                        return Err(format!(
                            "{flag} applies to kvm images only, and {} is a xen image",
                            image.display()
                        ));
                    }
                    run::boot_xen(&image, &args, app_args)?
                }
                _ => {
                    let kvm_only = [
                        (args.vmm.is_some(), "--vmm"),
                        (args.machine.is_some(), "--machine"),
                        (args.accel.is_some(), "--accel"),
                        (args.verbose, "--verbose"),
                        (args.print_vmm_config, "--print-vmm-config"),
                        (args.emit.is_some(), "--emit"),
                    ];
                    if let Some((_, flag)) = kvm_only.iter().find(|(given, _)| *given) {
                        return Err(format!(
                            "{flag} applies to kvm images only, and {} is a {} image; build with --platform kvm",
                            image.display(),
                            platform.name()
                        ));
                    }
                    let net = run::HvtNet {
                        backend: args.net.clone(),
                        ports: args.publish.clone(),
                        pcap: args.pcap.clone(),
                        options: unikernel_hvt::net::NetOptions {
                            ip: args.ip,
                            gateway: args.gateway,
                            dns: args.dns.clone(),
                        },
                    };
                    run::boot(
                        &image,
                        args.mem.map(|m| m.0),
                        args.env,
                        app_args,
                        args.trace_syscalls,
                        args.timeout,
                        net,
                        args.disk
                            .iter()
                            .map(|d| unikernel_hvt::block::DiskArg {
                                name: d.name.clone(),
                                path: d.file.clone(),
                            })
                            .collect(),
                        args.gdb,
                    )?
                }
            };
            // A crash (its crash line) and std's backtrace of an app's
            // panic, seen on the console (hvt: the monitor child's stderr;
            // kvm: QEMU's output), in source terms.
            for crash in symbolize::take_console_crashes() {
                for line in symbolize::report(&image, debug_dir.as_deref(), &crash) {
                    eprintln!("{line}");
                }
            }
            Ok(ExitCode::from(code))
        }
        Command::Disk(DiskCommand::Create {
            file,
            size,
            from,
            force,
        }) => {
            println!("{}", disk::create(&file, &size, from.as_deref(), force)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Pack(a) => {
            let opts = cargo_unikernel::pack::PackOptions {
                input: a.program,
                output: a.output,
                platform: a.platform,
                memory: a.mem,
                env: a.env,
                name: a.name,
                components: a.components,
                config: a.config,
                args: (dash_dash || !a.args.is_empty()).then_some(a.args),
            };
            let image = cargo_unikernel::pack::pack(&opts, Progress::detect())?;
            report_image(&image);
            Ok(ExitCode::SUCCESS)
        }
        Command::Symbolize {
            image,
            log,
            debug_dir,
        } => {
            let stdout = std::io::stdout().lock();
            let n = match log {
                Some(path) => {
                    let f = std::fs::File::open(&path)
                        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                    symbolize::filter(
                        &image,
                        debug_dir.as_deref(),
                        std::io::BufReader::new(f),
                        stdout,
                    )?
                }
                None => symbolize::filter(
                    &image,
                    debug_dir.as_deref(),
                    std::io::stdin().lock(),
                    stdout,
                )?,
            };
            if n == 0 {
                eprintln!("cargo-unikernel: no crash line (unikernel-crash v1 ...) in the log");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Push {
            image,
            dest,
            insecure,
        } => {
            for line in
                cargo_unikernel::oci::push(&image, &dest, insecure).map_err(|e| e.to_string())?
            {
                println!("{line}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Pull {
            source,
            output,
            debug,
            insecure,
        } => {
            let p =
                cargo_unikernel::oci::pull(&source, debug, insecure).map_err(|e| e.to_string())?;
            Image::parse(&p.image).map_err(|e| image_error(Path::new(&source), e))?;
            std::fs::write(&output, &p.image)
                .map_err(|e| format!("cannot write {}: {e}", output.display()))?;
            for (name, data) in &p.debug {
                // <build id>.app.debug -> OUTPUT.app.debug, where symbolize looks.
                let which = if name.ends_with(".kernel.debug") {
                    "kernel"
                } else {
                    "app"
                };
                let path = cargo_unikernel::pipeline::debug_path(&output, which);
                std::fs::write(&path, data)
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            }
            eprintln!(
                "cargo-unikernel: pulled {source} ({}, {} bytes{}) to {}",
                p.digest,
                p.image.len(),
                if p.debug.is_empty() {
                    String::new()
                } else {
                    format!(", {} debug files", p.debug.len())
                },
                output.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Inspect { image, json } => {
            let data = std::fs::read(&image)
                .map_err(|e| format!("cannot read {}: {e}", image.display()))?;
            let img = Image::parse(&data).map_err(|e| image_error(&image, e))?;
            if json {
                println!("{}", messages::inspect(&image, &img));
            } else {
                print!("{}", img.report());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The summary for people (stdout, or stderr when stdout carries JSON) and
/// the `unikernel-image` message.
fn report_image(image: &pipeline::BuiltImage) {
    if messages::json() {
        eprintln!("{}", pipeline::summary(image));
        messages::emit(&messages::image_message(image));
    } else {
        println!("{}", pipeline::summary(image));
    }
}

/// `--manifest-path` or PATH (a directory or a Cargo.toml) -> build options.
fn build_options(args: &BuildArgs) -> Result<BuildOptions, String> {
    let manifest_path = match (&args.manifest_path, &args.path) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(p)) if p.is_dir() => Some(p.join("Cargo.toml")),
        (None, Some(p)) if p.file_name().is_some_and(|n| n == "Cargo.toml") => Some(p.clone()),
        (None, Some(p)) if p.exists() => {
            return Err(format!(
            "{} is neither a crate directory nor a Cargo.toml (nor, for `run`, a unikernel image)",
            p.display()
        ))
        }
        (None, Some(p)) => {
            return Err(format!(
                "{} does not exist; pass an app crate's directory",
                p.display()
            ))
        }
        (None, None) => None,
    };
    Ok(BuildOptions {
        manifest_path,
        debug: args.debug,
        platform: args.platform.clone(),
        output: args.output.clone(),
        bin: args.bin.clone(),
    })
}

/// For `run PATH`: `Some((PATH, its platform))` if it is a built image.
fn existing_image(path: Option<&Path>) -> Result<Option<(PathBuf, Platform)>, String> {
    let Some(path) = path.filter(|p| p.is_file()) else {
        return Ok(None);
    };
    if path.file_name().is_some_and(|n| n == "Cargo.toml") {
        return Ok(None);
    }
    let data = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    match Image::parse(&data) {
        Ok(img) => Ok(Some((path.to_path_buf(), img.manifest.platform))),
        Err(e) => Err(image_error(path, e)),
    }
}

fn image_error(path: &Path, e: ImageError) -> String {
    match e {
        ImageError::NotAnImage => format!(
            "{} is not a unikernel image (no UNIKERNEL manifest note); build one with `cargo unikernel build`",
            path.display()
        ),
        ImageError::BadManifest(m) => format!("{}: {m}; rebuild it with this cargo-unikernel", path.display()),
        ImageError::Truncated => format!("{} is truncated; rebuild it", path.display()),
    }
}
