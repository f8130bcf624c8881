//! `cargo unikernel run` for xen images: the `xl` domain config
//! (`--emit xl`), and `xl create -c` when this is a Xen dom0.
//!
//! A xen image is a classic 64-bit PV guest kernel: `xl` loads it itself
//! (no firmware), so the config is all a Xen host needs. The command line
//! carries options, env and args in the format of `crate::cmdline` (the
//! guest parses it from `start_info.cmd_line`, at most 1023 bytes).
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// MiB the PV domain builder needs above the image: the P2M list,
/// start_info, console and xenstore pages, bootstrap page tables and
/// padding to a 4 MiB boundary; then the runtime's own page tables and heap.
pub const XEN_HEADROOM_MIB: u64 = 8;

/// Guest memory default when neither `--mem` nor the image name one.
pub const DEFAULT_MEMORY_MIB: u64 = 64;

/// Longest command line a PV guest receives (`MAX_GUEST_CMDLINE` - 1).
pub const MAX_CMDLINE: usize = 1023;

/// What goes into the config.
#[derive(Clone, Debug)]
pub struct XlConfig {
    pub name: String,
    pub kernel: PathBuf,
    pub memory_mib: u64,
    pub cmdline: String,
    /// The `vif` spec for images with the net component (`""`: xl's
    /// defaults, a random MAC on the host's default bridge, `xenbr0`;
    /// `"bridge=br1,mac=00:16:3e:00:00:02"`: libxl's `key=value` list);
    /// `None`: no network device.
    pub vif: Option<String>,
}

/// `<image>.xl.cfg`.
pub fn config_path(image: &Path) -> PathBuf {
    let mut s = image.as_os_str().to_owned();
    s.push(".xl.cfg");
    PathBuf::from(s)
}

/// An xl config string literal: double quotes, with `\` and `"` escaped
/// (libxlu dequotes C-style escapes).
fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        if c == '\\' || c == '"' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

impl XlConfig {
    /// The config file's text. Every shutdown reason destroys the domain:
    /// the app's exit code is the reason, and xl's default for 1 (reboot)
    /// would restart the app.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# written by cargo-unikernel: boot with `xl create -c THIS_FILE`"
        );
        let _ = writeln!(out, "name = {}", quote(&self.name));
        let _ = writeln!(out, "type = \"pv\"");
        let _ = writeln!(
            out,
            "kernel = {}",
            quote(&self.kernel.display().to_string())
        );
        let _ = writeln!(out, "memory = {}", self.memory_mib);
        let _ = writeln!(out, "vcpus = 1");
        let _ = writeln!(out, "cmdline = {}", quote(&self.cmdline));
        if let Some(vif) = &self.vif {
            let _ = writeln!(out, "vif = [ {} ]", quote(vif));
        }
        for event in ["poweroff", "reboot", "crash", "watchdog", "soft_reset"] {
            let _ = writeln!(out, "on_{event} = \"destroy\"");
        }
        out
    }
}

/// Guest memory in MiB: `requested` (bytes) or the image's default, at
/// least the image plus [`XEN_HEADROOM_MIB`]. An explicit request below
/// that is an error naming the minimum.
pub fn memory_mib(requested: Option<u64>, image_default: u64, app_end: u64) -> Result<u64, String> {
    let floor = app_end.div_ceil(1 << 20) + XEN_HEADROOM_MIB;
    match requested {
        Some(bytes) => {
            let mib = bytes.div_ceil(1 << 20);
            if mib < floor {
                return Err(format!(
                    "--mem {mib}M is too small for this xen image: its kernel and app end at {app_end:#x} and the PV domain builder needs {XEN_HEADROOM_MIB} MiB above; give at least {floor}M"
                ));
            }
            Ok(mib)
        }
        None => Ok(if image_default != 0 {
            image_default.div_ceil(1 << 20)
        } else {
            DEFAULT_MEMORY_MIB
        }
        .max(floor)),
    }
}

/// True in a Xen dom0 (the control domain), where `xl` can create guests.
pub fn in_dom0() -> bool {
    std::fs::read_to_string("/proc/xen/capabilities").is_ok_and(|c| c.contains("control_d"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_names_everything_xl_needs() {
        let c = XlConfig {
            name: "hello".into(),
            kernel: "/img/hello".into(),
            memory_mib: 64,
            cmdline: "K=\"a b\" -- x\\y".into(),
            vif: None,
        };
        let text = c.render();
        for line in [
            "name = \"hello\"",
            "type = \"pv\"",
            "kernel = \"/img/hello\"",
            "memory = 64",
            "vcpus = 1",
            "cmdline = \"K=\\\"a b\\\" -- x\\\\y\"",
            "on_poweroff = \"destroy\"",
            "on_reboot = \"destroy\"",
            "on_crash = \"destroy\"",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing in:\n{text}"
            );
        }
    }

    #[test]
    fn net_images_get_a_vif() {
        let mut c = XlConfig {
            name: "web".into(),
            kernel: "/img/web".into(),
            memory_mib: 64,
            cmdline: String::new(),
            vif: None,
        };
        assert!(!c.render().contains("vif"), "{}", c.render());
        c.vif = Some(String::new());
        assert!(
            c.render().lines().any(|l| l == "vif = [ \"\" ]"),
            "{}",
            c.render()
        );
        c.vif = Some("bridge=xenbr0,mac=00:16:3e:00:00:02".into());
        assert!(
            c.render()
                .lines()
                .any(|l| l == "vif = [ \"bridge=xenbr0,mac=00:16:3e:00:00:02\" ]"),
            "{}",
            c.render()
        );
    }

    #[test]
    fn memory_has_a_floor_above_the_image() {
        assert_eq!(memory_mib(None, 0, 0x30_0000), Ok(64));
        assert_eq!(memory_mib(None, 2 << 20, 0x30_0000), Ok(11));
        assert_eq!(memory_mib(Some(32 << 20), 0, 0x30_0000), Ok(32));
        let e = memory_mib(Some(4 << 20), 0, 0x30_0000).unwrap_err();
        assert!(e.contains("give at least 11M"), "{e}");
    }

    #[test]
    fn config_path_is_beside_the_image() {
        assert_eq!(
            config_path(Path::new("/t/unikernel/xen/app")),
            PathBuf::from("/t/unikernel/xen/app.xl.cfg")
        );
    }
}
