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
    /// The image's declared disks, in declaration order (the guest
    /// matches its vbds to them in that order): `disk = [ ... ]`.
    pub disks: Vec<XlDisk>,
}

/// One entry of the `disk` list: a disk the image declares and the raw
/// file it gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XlDisk {
    /// The declared name (`data`).
    pub name: String,
    /// Where the image mounts it (`/data`), for the comment line.
    pub mount: String,
    /// The raw file (`--disk NAME=FILE`, absolute), or `None`: the config
    /// names `NAME.img` and says so in a comment.
    pub target: Option<PathBuf>,
    /// Attach read-only (the file's write permission bits are all clear).
    pub read_only: bool,
}

/// The guest device of the `index`-th declared disk: `xvda`, `xvdb`, ...
pub fn vdev(index: usize) -> String {
    let mut letters = Vec::new();
    let mut n = index + 1;
    while n > 0 {
        n -= 1;
        letters.push(b'a' + (n % 26) as u8);
        n /= 26;
    }
    letters.reverse();
    format!("xvd{}", String::from_utf8_lossy(&letters))
}

/// The disks of an image that declares `declared` (manifest `disks`,
/// `NAME=MOUNT` each) for the `--disk NAME=FILE` flags `given`: in
/// declaration order; a flag naming no declared disk, or one given twice,
/// is an error. With `require_all`, a declared disk without a flag is an
/// error too (an xl config to boot now); without, it gets a placeholder.
pub fn disks(
    declared: &[String],
    given: &[(String, PathBuf)],
    require_all: bool,
) -> Result<Vec<XlDisk>, String> {
    let mut decls = Vec::new();
    for d in declared {
        let decl = unikernel_image::disks::DiskDecl::parse(d)
            .map_err(|e| format!("the image's disk declaration {d:?} is unreadable: {e}"))?;
        decls.push(decl);
    }
    for (i, (name, _)) in given.iter().enumerate() {
        if !decls.iter().any(|d| d.name == name) {
            let names: Vec<&str> = decls.iter().map(|d| d.name).collect();
            return Err(if names.is_empty() {
                format!("--disk {name}=...: the image declares no disks")
            } else {
                format!(
                    "--disk {name}=...: the image declares no disk \"{name}\" (it declares: {})",
                    names.join(", ")
                )
            });
        }
        if given[..i].iter().any(|(n, _)| n == name) {
            return Err(format!("--disk {name}=... is given twice"));
        }
    }
    let mut out = Vec::new();
    for d in decls {
        let file = given.iter().find(|(n, _)| n == d.name).map(|(_, f)| f);
        let (target, read_only) = match file {
            Some(f) => {
                let meta = std::fs::metadata(f)
                    .map_err(|e| format!("--disk {}={}: {e}", d.name, f.display()))?;
                if !meta.is_file() {
                    return Err(format!(
                        "--disk {}={}: not a regular file (a disk is a raw image file)",
                        d.name,
                        f.display()
                    ));
                }
                let abs = std::path::absolute(f)
                    .map_err(|e| format!("cannot resolve {}: {e}", f.display()))?;
                (Some(abs), meta.permissions().readonly())
            }
            None if require_all => {
                return Err(format!(
                    "image declares disk \"{}\" but no --disk {}=FILE was given",
                    d.name, d.name
                ))
            }
            None => (None, false),
        };
        out.push(XlDisk {
            name: d.name.to_string(),
            mount: d.mount.to_string(),
            target,
            read_only,
        });
    }
    Ok(out)
}

/// A `disk` list element: `'format=raw, vdev=xvda, access=rw, target=PATH'`
/// (libxl's disk spec: `target=` last, it takes the rest of the string).
pub fn disk_spec(index: usize, d: &XlDisk) -> String {
    let target = d
        .target
        .as_ref()
        .map_or_else(|| format!("{}.img", d.name), |p| p.display().to_string());
    let spec = format!(
        "format=raw, vdev={}, access={}, target={target}",
        vdev(index),
        if d.read_only { "ro" } else { "rw" }
    );
    if spec.contains('\'') || spec.contains('\\') {
        quote(&spec)
    } else {
        format!("'{spec}'")
    }
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
        if !self.disks.is_empty() {
            for (i, d) in self.disks.iter().enumerate() {
                let how = match &d.target {
                    Some(_) if d.read_only => "read-only: the file is not writable",
                    Some(_) => "read-write",
                    None => "no --disk given: NAME.img is a placeholder, point target= at its raw volume",
                };
                let _ = writeln!(
                    out,
                    "# disk \"{}\" (mounted at {}) is {}: {how}",
                    d.name,
                    d.mount,
                    vdev(i)
                );
            }
            let specs: Vec<String> = self
                .disks
                .iter()
                .enumerate()
                .map(|(i, d)| disk_spec(i, d))
                .collect();
            let _ = writeln!(out, "disk = [ {} ]", specs.join(", "));
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
            disks: Vec::new(),
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
            disks: Vec::new(),
        };
        assert!(!c.render().contains("vif"), "{}", c.render());
        assert!(!c.render().contains("disk"), "{}", c.render());
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
    fn disk_line_in_declaration_order() {
        let dir = std::env::temp_dir().join(format!("xl-disk-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let data = dir.join("data.img");
        let logs = dir.join("logs.img");
        std::fs::write(&data, [0u8; 512]).unwrap();
        std::fs::write(&logs, [0u8; 512]).unwrap();
        let mut ro = std::fs::metadata(&logs).unwrap().permissions();
        ro.set_readonly(true);
        std::fs::set_permissions(&logs, ro).unwrap();
        let declared = ["data=/data".to_string(), "logs=/var/log".to_string()];
        let given = [
            ("logs".to_string(), logs.clone()),
            ("data".to_string(), data.clone()),
        ];
        let d = disks(&declared, &given, true).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!((d[0].name.as_str(), d[0].read_only), ("data", false));
        assert_eq!((d[1].name.as_str(), d[1].read_only), ("logs", true));
        let c = XlConfig {
            name: "db".into(),
            kernel: "/img/db".into(),
            memory_mib: 64,
            cmdline: String::new(),
            vif: None,
            disks: d,
        };
        let text = c.render();
        let want = format!(
            "disk = [ 'format=raw, vdev=xvda, access=rw, target={}', 'format=raw, vdev=xvdb, access=ro, target={}' ]",
            data.display(),
            logs.display()
        );
        assert!(
            text.lines().any(|l| l == want),
            "{want} missing in:\n{text}"
        );
        assert!(
            text.contains("# disk \"logs\" (mounted at /var/log) is xvdb: read-only"),
            "{text}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn disk_placeholders_and_errors() {
        let declared = ["data=/data".to_string()];
        let d = disks(&declared, &[], false).unwrap();
        assert_eq!(d[0].target, None);
        let c = XlConfig {
            name: "db".into(),
            kernel: "/img/db".into(),
            memory_mib: 64,
            cmdline: String::new(),
            vif: None,
            disks: d,
        };
        let text = c.render();
        assert!(
            text.lines()
                .any(|l| l == "disk = [ 'format=raw, vdev=xvda, access=rw, target=data.img' ]"),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l
                    .starts_with("# disk \"data\" (mounted at /data) is xvda: no --disk given")),
            "{text}"
        );
        assert_eq!(
            disks(&declared, &[], true).unwrap_err(),
            "image declares disk \"data\" but no --disk data=FILE was given"
        );
        let e = disks(&declared, &[("logs".into(), "/x".into())], false).unwrap_err();
        assert!(
            e.contains("declares no disk \"logs\" (it declares: data)"),
            "{e}"
        );
        let e = disks(&[], &[("logs".into(), "/x".into())], false).unwrap_err();
        assert!(e.contains("declares no disks"), "{e}");
        let e = disks(
            &declared,
            &[("data".into(), "/x".into()), ("data".into(), "/y".into())],
            false,
        )
        .unwrap_err();
        assert!(e.contains("given twice"), "{e}");
        let e = disks(
            &declared,
            &[("data".into(), "/nonexistent/d.img".into())],
            false,
        )
        .unwrap_err();
        assert!(e.starts_with("--disk data=/nonexistent/d.img: "), "{e}");
        assert_eq!(vdev(0), "xvda");
        assert_eq!(vdev(7), "xvdh");
        assert_eq!(vdev(26), "xvdaa");
        // A path with a quote gets xl's double-quoted form.
        let odd = XlDisk {
            name: "data".into(),
            mount: "/data".into(),
            target: Some("/d/it's.img".into()),
            read_only: false,
        };
        assert_eq!(
            disk_spec(0, &odd),
            "\"format=raw, vdev=xvda, access=rw, target=/d/it's.img\""
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
