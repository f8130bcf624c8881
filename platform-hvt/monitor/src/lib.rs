//! `unikernel-hvt`: the bundled monitor that boots a unikernel image on KVM.
//!
//! Following one boot from [`run`]:
//!
//! 1. [`image`] reads the image file once and checks it: ELF identity,
//!    `PT_LOAD` segments, the `UNIKERNEL` manifest note.
//! 2. The memory size is chosen (`--mem`, else the manifest's, else 64 MiB)
//!    and checked against the image.
//! 3. [`vm`] opens `/dev/kvm`, creates the VM, maps guest RAM
//!    ([`memory::GuestMemory`]) and creates the vCPU.
//! 4. The image's segments are copied into RAM and the kernel header at
//!    `KERNEL_BASE` is checked.
//! 5. [`boot`] builds the boot state in guest memory: descriptor tables
//!    ([`tables`]), page tables ([`paging`]), stacks, the app's initial stack
//!    (`unikernel_runtime::loader`) and the `BootInfo`.
//! 6. [`vm`] loads the registers (64-bit mode, CPL 3, `%rdi` = BootInfo) and
//!    runs the vCPU, serving hypercalls ([`hypercall`]) until the guest halts;
//!    the monitor exits with the guest's code, or with one of [`exit`]'s.
//!
//! The `cargo unikernel run` command calls [`run`] in-process with a
//! [`RunConfig`]; the `unikernel-hvt` binary is a thin CLI around it.
use std::path::PathBuf;

use hvt_abi::layout::{KERNEL_BASE, MAX_MEMORY, MIN_MEMORY, PAGE_SIZE};
use hvt_abi::BOOT_FLAG_TRACE_SYSCALLS;
use thiserror::Error;

pub mod block;
pub mod boot;
pub mod cli;
pub mod exit;
pub mod gdb;
pub mod hypercall;
pub mod image;
pub mod memory;
pub mod net;
pub mod paging;
pub mod profile;
pub mod seccomp;
pub mod stop;
pub mod tables;
pub mod timer;
pub mod vm;

pub use exit::{EXIT_GUEST_CRASHED, EXIT_INVALID_HYPERCALL, EXIT_SETUP_FAILED};

/// Guest memory when neither `--mem` nor the manifest says otherwise.
pub const DEFAULT_MEMORY: u64 = 64 << 20;

/// What to run and how.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunConfig {
    /// The unikernel image (`target/unikernel/hvt/NAME`).
    pub image: PathBuf,
    /// Guest memory in bytes (`--mem`); `None`: the manifest's, else [`DEFAULT_MEMORY`].
    pub mem: Option<u64>,
    /// `KEY=VALUE` entries added to (or replacing, by key) the manifest's
    /// environment; `UNIKERNEL_*` keys are runtime options instead, merged
    /// over the manifest's `options` ([`split_options`], [`runtime_options`]).
    pub env: Vec<String>,
    /// The app's arguments after argv[0]; `None`: the manifest's defaults.
    pub args: Option<Vec<String>>,
    /// Ask the runtime to print every system call (strace style) on stderr.
    pub trace_syscalls: bool,
    /// The network device (`--net`, `-p`, `--pcap`); default: none.
    pub net: net::NetConfig,
    /// Static addresses for the guest (`--ip`, `--gateway`, `--dns`).
    pub net_options: net::NetOptions,
    /// The disks (`--disk NAME=FILE`), in order; each must be one the
    /// image declares, and every declared disk needs one.
    pub disks: Vec<block::DiskArg>,
    /// `--gdb`: wait for gdb on this address before the guest starts.
    pub gdb: Option<std::net::SocketAddr>,
    /// Install the seccomp filter before the guest starts ([`seccomp`]);
    /// off only with `--no-seccomp`.
    pub seccomp: bool,
    /// `--seccomp-check`: after installing the filter, make a call it
    /// forbids (the monitor dies of SIGSYS).
    pub seccomp_check: bool,
}

impl RunConfig {
    /// The runtime options the guest gets in `BootInfo::options`
    /// (space-separated `KEY=VALUE` tokens; today: [`net::NetOptions::tokens`]).
    pub fn boot_options(&self) -> Vec<String> {
        self.net_options.tokens()
    }
}

/// Everything that stops the guest from starting (exit code [`EXIT_SETUP_FAILED`]).
#[derive(Debug, Error)]
pub enum Error {
    #[error("{0}")]
    Config(String),
    #[error("{path}: {source}")]
    Image {
        path: String,
        source: image::ImageError,
    },
    #[error(transparent)]
    Vm(#[from] vm::VmError),
    #[error("{0}")]
    Boot(#[from] boot::BootError),
    #[error("cannot get random bytes for AT_RANDOM: {0}")]
    Random(std::io::Error),
}

impl Error {
    /// The exit code for this error.
    pub fn exit_code(&self) -> i32 {
        EXIT_SETUP_FAILED
    }
}

/// Parses a memory size: a number of bytes, or with a suffix `K`, `M`, `G`
/// (powers of 1024; `KiB`/`MiB`/`GiB` and lowercase also accepted).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(digits);
    let n: u64 = num.parse().map_err(|_| {
        format!("invalid size {s:?}: expected a number with an optional K, M or G suffix")
    })?;
    let shift = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => {
            return Err(format!(
                "invalid size {s:?}: unknown suffix {suffix:?} (use K, M or G)"
            ))
        }
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("invalid size {s:?}: too large"))
}

/// A size as a user would write it (`64M`, `1536K`, `12345`).
pub fn format_size(n: u64) -> String {
    for (shift, unit) in [(30, "G"), (20, "M"), (10, "K")] {
        if n != 0 && n & ((1 << shift) - 1) == 0 {
            return format!("{}{unit}", n >> shift);
        }
    }
    n.to_string()
}

/// The app's environment: the manifest's, with each `KEY=VALUE` of `overrides`
/// replacing the entry with the same key in place or appended at the end.
pub fn merge_env(base: &[String], overrides: &[String]) -> Result<Vec<String>, String> {
    let mut env = base.to_vec();
    for o in overrides {
        let Some((key, _)) = o.split_once('=') else {
            return Err(format!("--env {o:?}: expected KEY=VALUE"));
        };
        if key.is_empty() {
            return Err(format!("--env {o:?}: the key is empty"));
        }
        match env
            .iter_mut()
            .find(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key)
        {
            Some(e) => e.clone_from(o),
            None => env.push(o.clone()),
        }
    }
    Ok(env)
}

/// `--env` entries whose key starts with `UNIKERNEL_` are runtime options,
/// not the app's environment (as on the kvm and xen command lines):
/// (options, app environment).
pub fn split_options(env: &[String]) -> (Vec<String>, Vec<String>) {
    env.iter()
        .cloned()
        .partition(|e| e.starts_with(unikernel_image::options::PREFIX))
}

/// The runtime options for the guest: the manifest's defaults with each
/// override replacing the entry with the same key (or appended). Every
/// entry is checked (`unikernel_image::options`) and may not contain a
/// space, the separator in the `BootInfo` string.
pub fn runtime_options(defaults: &[String], overrides: &[String]) -> Result<Vec<String>, String> {
    let check = |o: &String, origin: &str| {
        unikernel_image::options::check_token(o).map_err(|e| format!("{origin} {o:?}: {e}"))?;
        if o.contains(char::is_whitespace) {
            return Err(format!(
                "{origin} {o:?}: option values cannot contain spaces"
            ));
        }
        Ok(())
    };
    for d in defaults {
        check(d, "the image's option")?;
    }
    for o in overrides {
        check(o, "--env")?;
    }
    merge_env(defaults, overrides)
}

/// Picks and checks the guest memory size.
fn memory_size(config: &RunConfig, manifest_memory: u64) -> Result<u64, Error> {
    let (mem, origin) = match config.mem {
        Some(m) => (m, "--mem"),
        None if manifest_memory != 0 => (manifest_memory, "the image's manifest memory"),
        None => (DEFAULT_MEMORY, "the default memory"),
    };
    let shown = format_size(mem);
    if mem & (PAGE_SIZE - 1) != 0 {
        return Err(Error::Config(format!(
            "{origin} {shown} is not a multiple of 4K"
        )));
    }
    if mem < MIN_MEMORY {
        return Err(Error::Config(format!(
            "{origin} {shown} is too small: at least {} is needed",
            format_size(MIN_MEMORY)
        )));
    }
    if mem > MAX_MEMORY {
        return Err(Error::Config(format!(
            "{origin} {shown} is too large: hvt guests have at most {}",
            format_size(MAX_MEMORY)
        )));
    }
    Ok(mem)
}

fn random_bytes() -> Result<[u8; 16], Error> {
    let mut buf = [0u8; 16];
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: writes at most `buf.len() - done` bytes into `buf[done..]`.
        let n = unsafe { libc::getrandom(buf[done..].as_mut_ptr().cast(), buf.len() - done, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(Error::Random(e));
            }
        } else {
            done += n as usize;
        }
    }
    Ok(buf)
}

/// Boots the image and runs it to the end. `Ok(code)`: the exit code the
/// process should exit with (the guest's, or [`EXIT_INVALID_HYPERCALL`] /
/// [`EXIT_GUEST_CRASHED`], whose messages are already printed on stderr).
/// `Err`: the guest never started.
pub fn launch(config: &RunConfig) -> Result<i32, Error> {
    let image_error = |source| Error::Image {
        path: config.image.display().to_string(),
        source,
    };
    let img = image::Image::open(&config.image).map_err(image_error)?;
    let manifest = &img.manifest;
    let mem_size = memory_size(config, manifest.memory)?;
    if img.end() > mem_size {
        let origin = if config.mem.is_some() {
            "--mem"
        } else {
            "guest memory"
        };
        return Err(Error::Config(format!(
            "{origin} {} is too small: the image needs at least {} KiB",
            format_size(mem_size),
            img.end() >> 10
        )));
    }
    let mut argv = vec![format!("/{}", manifest.name)];
    argv.extend(
        config
            .args
            .as_ref()
            .unwrap_or(&manifest.args)
            .iter()
            .cloned(),
    );
    let (mut option_overrides, app_env) = split_options(&config.env);
    // --ip/--gateway/--dns come after --env UNIKERNEL_*=: the flags win.
    option_overrides.extend(config.boot_options());
    let envp = merge_env(&manifest.env, &app_env).map_err(Error::Config)?;
    let options = runtime_options(&manifest.options, &option_overrides).map_err(Error::Config)?;
    config.net.validate().map_err(Error::Config)?;
    config.net_options.validate().map_err(Error::Config)?;
    block::config::check_against_manifest(&config.disks, &manifest.disks).map_err(Error::Config)?;
    if config.net.backend.is_none() && manifest.components.iter().any(|c| c == "net") {
        eprintln!("{}", net::NO_NETWORK_NOTE);
    }

    if manifest.files_len != 0
        && manifest
            .files_addr
            .checked_add(manifest.files_len)
            .is_none_or(|end| manifest.files_addr < KERNEL_BASE || end > img.end())
    {
        return Err(image_error(image::ImageError::FilesOutOfRange {
            addr: manifest.files_addr,
            len: manifest.files_len,
        }));
    }

    let mut vm = vm::Vm::new(mem_size)?;
    // After the VM exists: its drop ends the devices on every error path.
    block::install(&config.disks, &manifest.disks).map_err(Error::Config)?;
    net::install(&config.net).map_err(Error::Config)?;
    img.load(&mut vm.mem).map_err(|e| match e {
        image::LoadError::Memory(m) => Error::Boot(boot::BootError::from(m)),
        image::LoadError::Read(source) => image_error(image::ImageError::Read {
            path: config.image.display().to_string(),
            source,
        }),
    })?;
    let header = image::kernel_header(&vm.mem).map_err(image_error)?;
    let params = boot::BootParams {
        argv,
        envp,
        hwcap: u64::from(vm.cpuid(1, 0).unwrap_or_default()[3]),
        random: random_bytes()?,
        tsc_khz: vm.tsc_khz(),
        flags: if config.trace_syscalls {
            BOOT_FLAG_TRACE_SYSCALLS
        } else {
            0
        } | if config.gdb.is_some() {
            hvt_abi::BOOT_FLAG_DEBUGGER
        } else {
            0
        },
        options,
    };
    let state = boot::prepare(&mut vm.mem, &img, &header, &params)?;
    vm.configure_vcpu(&state, &header)?;
    if let Some(addr) = config.gdb {
        let command = gdb::command_line(&config.image, img.manifest.app_base, addr);
        vm.attach_gdb(addr, &command)
            .map_err(|e| Error::Config(e.to_string()))?;
    }
    profile::prepare();
    if config.seccomp {
        seccomp::install().map_err(Error::Config)?;
        if config.seccomp_check {
            seccomp::check();
        }
    }
    Ok(vm.run(&state))
}

/// Like [`launch`], but prints a setup error on stderr (one line, prefixed
/// `unikernel-hvt:`) and returns the exit code either way.
pub fn run(config: &RunConfig) -> i32 {
    match launch(config) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("unikernel-hvt: {e}");
            e.exit_code()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert!(parse_size("").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("12T").is_err());
        assert!(parse_size("99999999999999999G").is_err());
        assert_eq!(format_size(64 << 20), "64M");
        assert_eq!(format_size(0x1800), "6K");
    }

    #[test]
    fn env_overrides_keep_order() {
        let base = vec!["A=1".to_string(), "B=2".to_string()];
        let env = merge_env(&base, &["B=3".into(), "C=4".into(), "A=".into()]).unwrap();
        assert_eq!(env, ["A=", "B=3", "C=4"]);
        assert!(merge_env(&base, &["NOEQUALS".into()]).is_err());
        assert!(merge_env(&base, &["=x".into()]).is_err());
    }

    #[test]
    fn unikernel_keys_are_options_not_env() {
        let env: Vec<String> = ["A=1", "UNIKERNEL_IP=10.1.2.3/16", "UNIKERNEL_VERBOSE=1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (options, app) = split_options(&env);
        assert_eq!(app, ["A=1"]);
        let defaults = vec![
            "UNIKERNEL_IP=10.0.0.2/24".to_string(),
            "UNIKERNEL_GATEWAY=10.0.0.1".to_string(),
        ];
        assert_eq!(
            runtime_options(&defaults, &options).unwrap(),
            [
                "UNIKERNEL_IP=10.1.2.3/16",
                "UNIKERNEL_GATEWAY=10.0.0.1",
                "UNIKERNEL_VERBOSE=1"
            ]
        );
        let e = runtime_options(&defaults, &["UNIKERNEL_IP=10.0.0.2".into()]).unwrap_err();
        assert!(
            e.contains("--env \"UNIKERNEL_IP=10.0.0.2\"") && e.contains("prefix length"),
            "{e}"
        );
        let e = runtime_options(&defaults, &["UNIKERNEL_X=a b".into()]).unwrap_err();
        assert!(e.contains("cannot contain spaces"), "{e}");
        let e = runtime_options(&["UNIKERNEL_DNS=x".into()], &[]).unwrap_err();
        assert!(e.contains("the image's option"), "{e}");
    }

    #[test]
    fn memory_size_is_checked() {
        let c = |mem| RunConfig {
            mem,
            ..Default::default()
        };
        assert_eq!(memory_size(&c(None), 0).unwrap(), DEFAULT_MEMORY);
        assert_eq!(memory_size(&c(None), 32 << 20).unwrap(), 32 << 20);
        assert_eq!(memory_size(&c(Some(8 << 20)), 32 << 20).unwrap(), 8 << 20);
        assert!(memory_size(&c(Some(4097)), 0).is_err());
        assert!(memory_size(&c(Some(4096)), 0).is_err());
        assert!(memory_size(&c(Some(4 << 30)), 0).is_err());
    }
}
