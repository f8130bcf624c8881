//! What an app crate says about its image: the optional
//! `[package.metadata.unikernel]` table of its `Cargo.toml`, plus the values
//! shared with the command line (platform names, memory sizes, `K=V` pairs).
//!
//! ```toml
//! [package.metadata.unikernel]
//! memory = "64M"                 # or an integer number of bytes
//! args = ["--port", "8080"]      # default arguments (after argv[0])
//! env = { GREETING = "hello" }   # default environment
//! platform = "hvt"               # or "kvm" (QEMU, Firecracker, cloud-hypervisor), "xen" (PV guest, xl)
//! components = ["net"]           # also chosen from the app's symbols (see `select`)
//! ports = ["8080:8080", "udp:5353:53"]   # published ports, [tcp:|udp:]HOST:GUEST
//!
//! files = ["static/**", "config.toml"]  # read-only files embedded in the image (globs, crate-relative)
//! files_root = "/srv"            # where they appear (default "/": static/a.css -> /static/a.css)
//! disks = [{ name = "data", mount = "/data" }]   # data volumes (--disk data=FILE at run time)
//! tmp_size = "16M"               # size limit of /tmp (default: a quarter of guest memory)
//!
//! [package.metadata.unikernel.net]       # absent: DHCP
//! ip = "10.0.0.2/24"
//! gateway = "10.0.0.1"
//! dns = ["10.0.0.1", "9.9.9.9"]
//! ```
//!
//! Every check here ends in one line naming the bad value and the fix.
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use unikernel_image::layout::{MAX_MEMORY, MIN_MEMORY, PAGE_SIZE};
use unikernel_image::manifest::Platform;
use unikernel_image::options;
use unikernel_image::ports::PortSpec;

/// Components that exist in this version (`components/<name>`).
pub const AVAILABLE_COMPONENTS: &[&str] = &["fs", "net"];

/// A guest memory size in bytes, checked to be page-aligned and within what
/// the monitor accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemorySize(pub u64);

impl MemorySize {
    /// Check a byte count.
    pub fn new(bytes: u64) -> Result<MemorySize, String> {
        if bytes < MIN_MEMORY {
            return Err(format!(
                "memory size {} is too small: use at least {}",
                format_size(bytes),
                format_size(MIN_MEMORY)
            ));
        }
        if bytes > MAX_MEMORY {
            return Err(format!(
                "memory size {} is too large: use at most {}",
                format_size(bytes),
                format_size(MAX_MEMORY)
            ));
        }
        if !bytes.is_multiple_of(PAGE_SIZE) {
            return Err(format!(
                "memory size {bytes} is not a multiple of 4 KiB: round it (e.g. \"{}K\")",
                bytes.div_ceil(1024).div_ceil(4) * 4
            ));
        }
        Ok(MemorySize(bytes))
    }
}

impl FromStr for MemorySize {
    type Err = String;

    /// [`parse_size`], then the range checks of [`MemorySize::new`].
    fn from_str(s: &str) -> Result<MemorySize, String> {
        MemorySize::new(parse_size(s)?)
    }
}

/// `"64M"`, `"512K"`, `"1G"` (binary units, case-insensitive, an optional
/// trailing `B`/`iB`), or a plain number of bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    parse_size_as(s, "memory size")
}

/// [`parse_size`] for any size (`what` names it in the error: `"--size"`),
/// with `T` accepted too.
pub fn parse_size_as(s: &str, what: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "bad {what} \"{s}\": write a number of bytes or a number followed by K, M or G (e.g. \"64M\")"
        )
    };
    let t = s.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits_end);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let unit = unit.trim().to_ascii_uppercase();
    let unit = unit
        .strip_suffix("IB")
        .or_else(|| unit.strip_suffix('B'))
        .unwrap_or(&unit);
    let shift = match unit {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(bad()),
    };
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("{what} \"{s}\" is too large"))
}

impl<'de> Deserialize<'de> for MemorySize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<MemorySize, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = MemorySize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a memory size: a string like \"64M\" or an integer number of bytes")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<MemorySize, E> {
                MemorySize::new(v).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<MemorySize, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom(format!("memory size {v} is negative")))
                    .and_then(|v| self.visit_u64(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<MemorySize, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(SizeVisitor)
    }
}

/// `1048576` -> `"1M"`; sizes that are not a whole unit stay in bytes.
pub fn format_size(bytes: u64) -> String {
    for (shift, unit) in [(30, "G"), (20, "M"), (10, "K")] {
        if bytes != 0 && bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    format!("{bytes}")
}

/// Where a key is, for messages: `origin` for the whole table, else
/// `prefix key`.
fn located(origin: &str, prefix: &str, field: &str) -> String {
    if field.is_empty() || field == "." {
        origin.to_string()
    } else {
        format!("{prefix} {field}")
    }
}

/// The `[package.metadata.unikernel]` table as written.
#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct UnikernelMetadata {
    #[serde(default)]
    pub memory: Option<MemorySize>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub platform: Option<String>,
    #[serde(default)]
    pub components: Vec<String>,
    /// Published ports as written (`"8080:8080"`, `"udp:5353:53"`).
    #[serde(default)]
    pub ports: Vec<String>,
    /// `[package.metadata.unikernel.net]`: the network configuration.
    #[serde(default)]
    pub net: Option<NetConfig>,
    /// Globs (relative to the crate) of read-only files to embed.
    #[serde(default)]
    pub files: Vec<String>,
    /// The absolute directory the embedded files appear under (default `/`).
    #[serde(default)]
    pub files_root: Option<String>,
    /// Declared data volumes.
    #[serde(default)]
    pub disks: Vec<DiskMetadata>,
    /// The size limit of `/tmp` (`UNIKERNEL_TMP_SIZE`).
    #[serde(default)]
    pub tmp_size: Option<ByteSize>,
}

/// One `disks = [{ name = "data", mount = "/data" }]` entry.
#[derive(Debug, Default, Deserialize, PartialEq, Eq, Clone)]
#[serde(
    deny_unknown_fields,
    expecting = "a table like { name = \"data\", mount = \"/data\" }"
)]
pub struct DiskMetadata {
    pub name: String,
    /// Default [`unikernel_image::disks::DEFAULT_MOUNT`].
    #[serde(default)]
    pub mount: Option<String>,
}

impl DiskMetadata {
    /// `NAME=MOUNT` as the manifest keeps it.
    pub fn manifest_entry(&self) -> String {
        format!(
            "{}={}",
            self.name,
            self.mount
                .as_deref()
                .unwrap_or(unikernel_image::disks::DEFAULT_MOUNT)
        )
    }
}

/// A byte count written like a memory size (`"16M"` or an integer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ByteSize, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size: a string like \"16M\" or an integer number of bytes")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("size {v} is negative")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                parse_size_as(v, "size").map(ByteSize).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// Check the disk declarations: names and mounts valid, none twice.
pub fn check_disks(disks: &[DiskMetadata]) -> Result<(), String> {
    use unikernel_image::disks::{DiskDecl, MAX_DISKS};
    if disks.len() > MAX_DISKS {
        return Err(format!(
            "{} disks declared: at most {MAX_DISKS}",
            disks.len()
        ));
    }
    for (i, d) in disks.iter().enumerate() {
        let entry = d.manifest_entry();
        DiskDecl::parse(&entry).map_err(|e| {
            format!(
                "bad disk {{ name = {:?}, mount = {:?} }}: {e}",
                d.name,
                d.mount
                    .as_deref()
                    .unwrap_or(unikernel_image::disks::DEFAULT_MOUNT)
            )
        })?;
        for o in &disks[..i] {
            if o.name == d.name {
                return Err(format!("disk \"{}\" is declared twice", d.name));
            }
            if o.manifest_entry().split_once('=').map(|x| x.1) == entry.split_once('=').map(|x| x.1)
            {
                return Err(format!(
                    "disks \"{}\" and \"{}\" have the same mount point",
                    o.name, d.name
                ));
            }
        }
    }
    Ok(())
}

/// Check `files_root`: an absolute path of plain components (or `/`).
pub fn check_files_root(root: &str) -> Result<(), String> {
    let bad = || {
        format!("bad files_root \"{root}\": write an absolute directory like \"/srv\" (no '.', '..' or trailing '/'), not under /dev, /proc or /tmp")
    };
    if root == "/" {
        return Ok(());
    }
    // The same rules as a mount point.
    unikernel_image::disks::check_mount(root).map_err(|_| bad())
}

/// The `[package.metadata.unikernel.net]` table: a static network
/// configuration (none: DHCP). Becomes the runtime option defaults
/// `UNIKERNEL_IP`, `UNIKERNEL_GATEWAY` and `UNIKERNEL_DNS`.
#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct NetConfig {
    /// Address with prefix length, `"10.0.0.2/24"` or `"fd00::2/64"`.
    #[serde(default)]
    pub ip: Option<String>,
    /// The default gateway's address.
    #[serde(default)]
    pub gateway: Option<String>,
    /// DNS servers' addresses.
    #[serde(default)]
    pub dns: Vec<String>,
}

impl NetConfig {
    /// Check every value; the error names the key.
    fn check(&self) -> Result<(), (&'static str, String)> {
        let mut family = None;
        if let Some(ip) = &self.ip {
            let (addr, _) = options::parse_cidr(ip)
                .map_err(|e| ("net.ip", format!("bad address \"{ip}\": {e}")))?;
            family = Some(addr.is_ipv4());
        }
        if let Some(gw) = &self.gateway {
            let addr = options::parse_addr(gw)
                .map_err(|e| ("net.gateway", format!("bad address \"{gw}\": {e}")))?;
            match family {
                None => return Err((
                    "net.gateway",
                    "a gateway needs a static address: set ip too (without ip, DHCP gives both)"
                        .to_string(),
                )),
                Some(v4) if v4 != addr.is_ipv4() => {
                    return Err((
                        "net.gateway",
                        format!(
                            "gateway {gw} and ip {} are not the same IP version",
                            self.ip.as_deref().unwrap_or("")
                        ),
                    ))
                }
                Some(_) => {}
            }
        }
        for d in &self.dns {
            if d.contains(',') {
                return Err((
                    "net.dns",
                    format!("bad address \"{d}\": give one address per list entry"),
                ));
            }
            options::parse_addr(d).map_err(|e| ("net.dns", format!("bad address \"{d}\": {e}")))?;
        }
        Ok(())
    }

    /// The runtime option defaults (`UNIKERNEL_IP=...`), in a fixed order.
    pub fn options(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(ip) = &self.ip {
            out.push(format!("{}={ip}", options::IP));
        }
        if let Some(gw) = &self.gateway {
            out.push(format!("{}={gw}", options::GATEWAY));
        }
        if !self.dns.is_empty() {
            out.push(format!("{}={}", options::DNS, self.dns.join(",")));
        }
        out
    }
}

impl UnikernelMetadata {
    /// Read the table from a package's `metadata` value (as `cargo metadata`
    /// reports it) and check every value. `manifest` is only used in messages.
    pub fn from_package_metadata(
        metadata: &serde_json::Value,
        manifest: &Path,
    ) -> Result<UnikernelMetadata, String> {
        let Some(table) = metadata.get("unikernel") else {
            return Ok(UnikernelMetadata::default());
        };
        let origin = format!("{}: [package.metadata.unikernel]", manifest.display());
        let parsed: UnikernelMetadata = serde_path_to_error::deserialize(table).map_err(|e| {
            format!(
                "{}: {}",
                located(&origin, &origin, &e.path().to_string()),
                e.inner()
            )
        })?;
        parsed.validated(&origin, &origin)
    }

    /// The same keys from a TOML file of their own (`Unikernel.toml`, for
    /// `pack`: a packed program has no Cargo.toml), at its top level.
    pub fn from_toml_file(path: &Path) -> Result<UnikernelMetadata, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let origin = path.display().to_string();
        let prefix = format!("{origin}:");
        let de = toml::Deserializer::new(&text);
        let parsed: UnikernelMetadata = serde_path_to_error::deserialize(de).map_err(|e| {
            let msg = e.inner().to_string();
            format!(
                "{}: {}",
                located(&origin, &prefix, &e.path().to_string()),
                msg.trim_end()
            )
        })?;
        parsed.validated(&origin, &prefix)
    }

    /// The checks after parsing: names, keys and values serde cannot
    /// check. `origin` names the table in messages, `prefix` comes before
    /// a key.
    fn validated(self, origin: &str, prefix: &str) -> Result<UnikernelMetadata, String> {
        let parsed = self;
        let where_ = |field: &str| located(origin, prefix, field);
        if let Some(p) = &parsed.platform {
            parse_platform(p).map_err(|e| format!("{}: {e}", where_("platform")))?;
        }
        check_components(&parsed.components)
            .map_err(|e| format!("{}: {e}", where_("components")))?;
        for key in parsed.env.keys() {
            check_env_key(key).map_err(|e| format!("{}: {e}", where_("env")))?;
        }
        check_ports(&parsed.ports).map_err(|e| format!("{}: {e}", where_("ports")))?;
        if let Some(net) = &parsed.net {
            net.check()
                .map_err(|(key, e)| format!("{}: {e}", where_(key)))?;
        }
        check_disks(&parsed.disks).map_err(|e| format!("{}: {e}", where_("disks")))?;
        if let Some(root) = &parsed.files_root {
            check_files_root(root).map_err(|e| format!("{}: {e}", where_("files_root")))?;
        }
        if parsed.files.iter().any(|f| f.trim().is_empty()) {
            return Err(format!("{}: an empty pattern", where_("files")));
        }
        if let Some(t) = parsed.tmp_size {
            if t.0 < 4096 {
                return Err(format!(
                    "{}: /tmp needs at least 4K (got {})",
                    where_("tmp_size"),
                    t.0
                ));
            }
        }
        Ok(parsed)
    }

    /// The runtime option defaults the image carries (`UNIKERNEL_*=VALUE`).
    pub fn options(&self) -> Vec<String> {
        let mut out = self
            .net
            .as_ref()
            .map(NetConfig::options)
            .unwrap_or_default();
        if let Some(t) = self.tmp_size {
            out.push(format!("{}={}", options::TMP_SIZE, t.0));
        }
        out
    }

    /// The declared disks as the manifest keeps them (`NAME=MOUNT`).
    pub fn disk_entries(&self) -> Vec<String> {
        self.disks
            .iter()
            .map(DiskMetadata::manifest_entry)
            .collect()
    }

    /// The environment as `K=V` strings (sorted by key).
    pub fn env_pairs(&self) -> Vec<String> {
        self.env.iter().map(|(k, v)| format!("{k}={v}")).collect()
    }
}

/// A platform name, from the command line or the metadata.
/// The platform a build is for: the command line's, else the settings',
/// else hvt.
pub fn choose_platform(cli: Option<&str>, meta: &UnikernelMetadata) -> Result<Platform, String> {
    parse_platform(cli.or(meta.platform.as_deref()).unwrap_or("hvt"))
}

pub fn parse_platform(name: &str) -> Result<Platform, String> {
    match name {
        "hvt" => Ok(Platform::Hvt),
        "kvm" => Ok(Platform::Kvm),
        "xen" => Ok(Platform::Xen),
        _ => Err(format!(
            "unknown platform \"{name}\" (available: hvt, kvm, xen)"
        )),
    }
}

/// Components named by the user; none exist yet, so any name is an error.
pub fn check_components(names: &[String]) -> Result<(), String> {
    for name in names {
        if !AVAILABLE_COMPONENTS.contains(&name.as_str()) {
            let available = if AVAILABLE_COMPONENTS.is_empty() {
                "none yet".to_string()
            } else {
                AVAILABLE_COMPONENTS.join(", ")
            };
            return Err(format!("unknown component {name} (available: {available})"));
        }
    }
    Ok(())
}

/// A published port, `[tcp:|udp:]HOST:GUEST`.
pub fn check_port(spec: &str) -> Result<PortSpec, String> {
    PortSpec::parse(spec).map_err(|e| format!("bad port \"{spec}\": {e}"))
}

/// Every published port, and no host port (per protocol) published twice.
pub fn check_ports(specs: &[String]) -> Result<Vec<PortSpec>, String> {
    let mut seen: Vec<PortSpec> = Vec::new();
    for spec in specs {
        let p = check_port(spec)?;
        if let Some(q) = seen
            .iter()
            .find(|q| q.protocol == p.protocol && q.host == p.host)
        {
            return Err(format!(
                "host port {} {} is published twice (\"{q}\" and \"{spec}\")",
                p.protocol.name(),
                p.host
            ));
        }
        seen.push(p);
    }
    Ok(seen)
}

pub fn check_env_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.contains('=') || key.contains('\0') {
        return Err(format!(
            "bad environment variable name \"{key}\": it must be non-empty, without '=' or NUL"
        ));
    }
    Ok(())
}

/// A `K=V` pair from `--env`.
pub fn parse_env_pair(s: &str) -> Result<String, String> {
    let Some((key, value)) = s.split_once('=') else {
        return Err(format!("bad --env \"{s}\": write it as NAME=VALUE"));
    };
    check_env_key(key)?;
    if value.contains('\0') {
        return Err(format!("bad --env \"{s}\": the value contains NUL"));
    }
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> Result<UnikernelMetadata, String> {
        UnikernelMetadata::from_package_metadata(&v, Path::new("/x/Cargo.toml"))
    }

    #[test]
    fn sizes() {
        assert_eq!("64M".parse(), Ok(MemorySize(64 << 20)));
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert_eq!("2048K".parse(), Ok(MemorySize(2 << 20)));
        assert_eq!("1G".parse(), Ok(MemorySize(1 << 30)));
        assert_eq!("2g".parse(), Ok(MemorySize(2 << 30)));
        assert_eq!("64MiB".parse(), Ok(MemorySize(64 << 20)));
        assert_eq!("16MB".parse(), Ok(MemorySize(16 << 20)));
        assert_eq!("1048576".parse(), Ok(MemorySize(1 << 20)));
        for bad in ["", "M", "64X", "6 4M", "-1M", "1.5G", "64MM"] {
            let e = bad.parse::<MemorySize>().unwrap_err();
            assert!(e.contains("bad memory size"), "{bad}: {e}");
        }
        assert!("4K"
            .parse::<MemorySize>()
            .unwrap_err()
            .contains("too small"));
        assert!("4G"
            .parse::<MemorySize>()
            .unwrap_err()
            .contains("too large"));
        assert!("99999999999999999999G".parse::<MemorySize>().is_err());
        assert!("1048577"
            .parse::<MemorySize>()
            .unwrap_err()
            .contains("multiple of 4 KiB"));
        assert_eq!(format_size(64 << 20), "64M");
        assert_eq!(format_size(1 << 30), "1G");
        assert_eq!(format_size(1000), "1000");
    }

    #[test]
    fn absent_table_is_default() {
        assert_eq!(parse(json!(null)), Ok(UnikernelMetadata::default()));
        assert_eq!(parse(json!({"other": 1})), Ok(UnikernelMetadata::default()));
    }

    #[test]
    fn full_table() {
        let m = parse(json!({"unikernel": {
            "memory": "64M",
            "env": {"B": "2", "A": "1"},
            "args": ["x", "y z"],
            "platform": "hvt",
            "components": []
        }}))
        .unwrap();
        assert_eq!(m.memory, Some(MemorySize(64 << 20)));
        assert_eq!(m.env_pairs(), ["A=1", "B=2"]);
        assert_eq!(m.args, ["x", "y z"]);
        assert_eq!(m.platform.as_deref(), Some("hvt"));
        let m = parse(json!({"unikernel": {"memory": 8388608}})).unwrap();
        assert_eq!(m.memory, Some(MemorySize(8 << 20)));
    }

    #[test]
    fn unknown_key_names_key_and_file() {
        let e = parse(json!({"unikernel": {"memroy": "64M"}})).unwrap_err();
        assert!(e.contains("memroy") && e.contains("/x/Cargo.toml"), "{e}");
    }

    #[test]
    fn bad_values() {
        let e = parse(json!({"unikernel": {"memory": "64X"}})).unwrap_err();
        assert!(
            e.contains("memory") && e.contains("bad memory size \"64X\""),
            "{e}"
        );
        let e = parse(json!({"unikernel": {"memory": true}})).unwrap_err();
        assert!(e.contains("memory") && e.contains("memory size"), "{e}");
        let e = parse(json!({"unikernel": {"memory": -5}})).unwrap_err();
        assert!(e.contains("negative"), "{e}");
        let e = parse(json!({"unikernel": {"args": "a b"}})).unwrap_err();
        assert!(e.contains("args") && e.contains("invalid type"), "{e}");
        let e = parse(json!({"unikernel": {"env": {"K": 3}}})).unwrap_err();
        assert!(e.contains("env.K") && e.contains("invalid type"), "{e}");
        let e = parse(json!({"unikernel": {"env": ["K=V"]}})).unwrap_err();
        assert!(e.contains("env") && e.contains("invalid type"), "{e}");
        let e = parse(json!({"unikernel": 3})).unwrap_err();
        assert!(e.contains("expected a table"), "{e}");
        let e = parse(json!({"unikernel": {"env": {"A=B": "1"}}})).unwrap_err();
        assert!(e.contains("A=B"), "{e}");
    }

    #[test]
    fn platforms_and_components() {
        let m = parse(json!({"unikernel": {"platform": "kvm"}})).unwrap();
        assert_eq!(m.platform.as_deref(), Some("kvm"));
        let m = parse(json!({"unikernel": {"platform": "xen"}})).unwrap();
        assert_eq!(m.platform.as_deref(), Some("xen"));
        let e = parse(json!({"unikernel": {"platform": "xen "}})).unwrap_err();
        assert!(e.contains("unknown platform"), "{e}");
        let e = parse(json!({"unikernel": {"platform": "vmware"}})).unwrap_err();
        assert!(
            e.contains("unknown platform \"vmware\" (available: hvt, kvm, xen)"),
            "{e}"
        );
        let m = parse(json!({"unikernel": {"components": ["net"]}})).unwrap();
        assert_eq!(m.components, ["net"]);
        let e = parse(json!({"unikernel": {"components": ["gpu"]}})).unwrap_err();
        assert!(
            e.contains("components: unknown component gpu (available: fs, net)"),
            "{e}"
        );
        assert_eq!(parse_platform("hvt"), Ok(Platform::Hvt));
        assert_eq!(parse_platform("kvm"), Ok(Platform::Kvm));
        assert_eq!(parse_platform("xen"), Ok(Platform::Xen));
    }

    #[test]
    fn ports() {
        let m =
            parse(json!({"unikernel": {"ports": ["8080:8080", "tcp:8443:443", "udp:5353:53"]}}))
                .unwrap();
        assert_eq!(m.ports, ["8080:8080", "tcp:8443:443", "udp:5353:53"]);
        for (bad, why) in [
            ("8080", "write it as HOST:GUEST"),
            ("0:80", "ports are numbers from 1 to 65535"),
            ("8080:65536", "ports are numbers from 1 to 65535"),
            ("sctp:1:2", "the protocol must be tcp or udp"),
        ] {
            let e = parse(json!({"unikernel": {"ports": [bad]}})).unwrap_err();
            assert!(
                e.contains("/x/Cargo.toml: [package.metadata.unikernel] ports: bad port")
                    && e.contains(&format!("\"{bad}\""))
                    && e.contains(why),
                "{bad}: {e}"
            );
        }
        let e = parse(json!({"unikernel": {"ports": ["8080:80", "tcp:8080:81"]}})).unwrap_err();
        assert!(
            e.contains(
                "host port tcp 8080 is published twice (\"tcp:8080:80\" and \"tcp:8080:81\")"
            ),
            "{e}"
        );
        // The same number over tcp and udp is two ports.
        assert!(parse(json!({"unikernel": {"ports": ["53:53", "udp:53:53"]}})).is_ok());
        let e = parse(json!({"unikernel": {"ports": 8080}})).unwrap_err();
        assert!(e.contains("ports") && e.contains("invalid type"), "{e}");
    }

    #[test]
    fn net_table() {
        let m = parse(json!({"unikernel": {"net": {
            "ip": "10.0.0.2/24", "gateway": "10.0.0.1", "dns": ["10.0.0.1", "9.9.9.9"]
        }}}))
        .unwrap();
        assert_eq!(
            m.options(),
            [
                "UNIKERNEL_IP=10.0.0.2/24",
                "UNIKERNEL_GATEWAY=10.0.0.1",
                "UNIKERNEL_DNS=10.0.0.1,9.9.9.9"
            ]
        );
        let m = parse(json!({"unikernel": {"net": {"ip": "fd00::2/64", "gateway": "fd00::1"}}}))
            .unwrap();
        assert_eq!(
            m.options(),
            ["UNIKERNEL_IP=fd00::2/64", "UNIKERNEL_GATEWAY=fd00::1"]
        );
        // DHCP with fixed DNS servers.
        let m = parse(json!({"unikernel": {"net": {"dns": ["9.9.9.9"]}}})).unwrap();
        assert_eq!(m.options(), ["UNIKERNEL_DNS=9.9.9.9"]);
        assert!(parse(json!({"unikernel": {"net": {}}}))
            .unwrap()
            .options()
            .is_empty());
        assert!(parse(json!({})).unwrap().options().is_empty());
    }

    #[test]
    fn bad_net_values() {
        for (net, key, why) in [
            (json!({"ip": "10.0.0.2"}), "net.ip", "needs a prefix length"),
            (
                json!({"ip": "10.0.0.2/33"}),
                "net.ip",
                "prefix length must be 0-32",
            ),
            (json!({"ip": "fd00::2/200"}), "net.ip", "0-128 for IPv6"),
            (
                json!({"ip": "10.0.0.300/24"}),
                "net.ip",
                "not an IP address",
            ),
            (
                json!({"ip": "10.0.0.2/24", "gateway": "gw"}),
                "net.gateway",
                "not an IP address",
            ),
            (json!({"gateway": "10.0.0.1"}), "net.gateway", "set ip too"),
            (
                json!({"ip": "10.0.0.2/24", "gateway": "fd00::1"}),
                "net.gateway",
                "not the same IP version",
            ),
            (
                json!({"dns": ["10.0.0.1,9.9.9.9"]}),
                "net.dns",
                "one address per list entry",
            ),
            (
                json!({"dns": ["dns.example"]}),
                "net.dns",
                "not an IP address",
            ),
            (json!({"dns": "9.9.9.9"}), "net.dns", "invalid type"),
            (json!({"ip": 10}), "net.ip", "invalid type"),
            (json!({"mask": "255.0.0.0"}), "net", "unknown field `mask`"),
        ] {
            let e = parse(json!({"unikernel": {"net": net}})).unwrap_err();
            assert!(
                e.contains(&format!("[package.metadata.unikernel] {key}")) && e.contains(why),
                "{key}: {e}"
            );
        }
        let e = parse(json!({"unikernel": {"net": "dhcp"}})).unwrap_err();
        assert!(e.contains("net") && e.contains("expected a table"), "{e}");
    }

    #[test]
    fn storage_keys() {
        let m = parse(json!({"unikernel": {
            "files": ["static/**"], "files_root": "/srv",
            "disks": [{"name": "data"}, {"name": "logs", "mount": "/var/log"}],
            "tmp_size": "16M"
        }}))
        .unwrap();
        assert_eq!(m.disk_entries(), ["data=/data", "logs=/var/log"]);
        assert_eq!(m.options(), ["UNIKERNEL_TMP_SIZE=16777216"]);
        assert_eq!(m.files_root.as_deref(), Some("/srv"));
        for (v, want) in [
            (json!({"disks": [{"name": "Data"}]}), "bad disk"),
            (
                json!({"disks": [{"name": "a"}, {"name": "a", "mount": "/b"}]}),
                "declared twice",
            ),
            (
                json!({"disks": [{"name": "a"}, {"name": "b"}]}),
                "same mount point",
            ),
            (
                json!({"disks": [{"name": "a", "mount": "/tmp"}]}),
                "mount point",
            ),
            (
                json!({"disks": [{"name": "a", "size": 3}]}),
                "unknown field `size`",
            ),
            (json!({"files_root": "srv"}), "bad files_root"),
            (json!({"files": [""]}), "empty pattern"),
            (json!({"tmp_size": "1K"}), "at least 4K"),
            (json!({"tmp_size": "lots"}), "bad size \"lots\""),
        ] {
            let e = parse(json!({ "unikernel": v })).unwrap_err();
            assert!(e.contains(want), "{e} (wanted {want})");
        }
    }

    #[test]
    fn env_pairs_from_command_line() {
        assert_eq!(parse_env_pair("A=b=c"), Ok("A=b=c".into()));
        assert_eq!(parse_env_pair("A="), Ok("A=".into()));
        assert!(parse_env_pair("A").is_err());
        assert!(parse_env_pair("=x").is_err());
    }
}
