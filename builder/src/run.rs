//! `cargo unikernel run`: boot an hvt image with the bundled monitor,
//! in-process, or a kvm image under QEMU, and hand back its exit code.
use std::path::Path;
use std::time::Duration;

use cargo_unikernel::cmdline::{CommandLine, TRACE_SYSCALLS_TOKEN, VERBOSE_TOKEN};
use cargo_unikernel::config::format_size;
use cargo_unikernel::image::Image;
use cargo_unikernel::kvm_run::{self, EXIT_SETUP_FAILED, EXIT_TIMEOUT};
use cargo_unikernel::vmm::{
    find_qemu, firecracker_config, firecracker_path, Accel, Machine, QemuConfig, DEFAULT_MEMORY,
};
use unikernel_hvt::RunConfig;

use crate::{Emit, RunArgs};

/// Boot the hvt `image`. `args` `None` keeps the image's default arguments.
/// Returns the monitor's exit code (the app's, or the monitor's own
/// 125/254/255, whose message it has already printed).
pub fn boot(
    image: &Path,
    mem: Option<u64>,
    env: Vec<String>,
    args: Option<Vec<String>>,
    trace_syscalls: bool,
    timeout: Option<f64>,
) -> Result<u8, String> {
    if let Some(secs) = timeout {
        // The monitor runs in this process: the deadline ends the process.
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs_f64(secs));
            eprintln!("cargo-unikernel: the guest did not exit within {secs} s (--timeout)");
            std::process::exit(i32::from(EXIT_TIMEOUT));
        });
    }
    let config = RunConfig {
        image: image.to_path_buf(),
        mem,
        env,
        args,
        trace_syscalls,
    };
    let code = unikernel_hvt::run(&config);
    Ok((code & 0xff) as u8)
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

    if run.emit == Some(Emit::Firecracker) {
        let out = firecracker_path(&image);
        let json = serde_json::to_string_pretty(&firecracker_config(&image, memory, &cmdline))
            .map_err(|e| format!("cannot encode the Firecracker config: {e}"))?;
        std::fs::write(&out, json + "\n")
            .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
        println!("{}", out.display());
        eprintln!(
            "boot it with: firecracker --no-api --config-file {}",
            out.display()
        );
        return Ok(0);
    }
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
    };
    if run.print_vmm_config {
        println!("{}", config.shell_line());
        return Ok(0);
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
    };
    let path = xl::config_path(&image);
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
        eprintln!(
            "not in a Xen dom0 (no /proc/xen): wrote {}; boot it on a Xen host with `xl create -c {}`, or here with ../shared/xen-lab/xen-lab.sh run {} --mem {} --cmdline '{}'",
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
