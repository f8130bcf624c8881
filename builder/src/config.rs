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
//! components = []                # none exist yet
//! ```
//!
//! Every check here ends in one line naming the bad value and the fix.
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use hvt_abi::layout::{MAX_MEMORY, MIN_MEMORY, PAGE_SIZE};
use hvt_abi::manifest::Platform;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// Components that exist in this version (none yet: the runtime has no
/// optional parts so far).
pub const AVAILABLE_COMPONENTS: &[&str] = &["net"];

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
    let bad = || {
        format!(
            "bad memory size \"{s}\": write a number of bytes or a number followed by K, M or G (e.g. \"64M\")"
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
        _ => return Err(bad()),
    };
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("memory size \"{s}\" is too large"))
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
        let where_ = |field: &str| {
            if field.is_empty() || field == "." {
                format!("{}: [package.metadata.unikernel]", manifest.display())
            } else {
                format!(
                    "{}: [package.metadata.unikernel] {field}",
                    manifest.display()
                )
            }
        };
        let parsed: UnikernelMetadata = serde_path_to_error::deserialize(table).map_err(|e| {
            let field = e.path().to_string();
            format!("{}: {}", where_(&field), e.inner())
        })?;
        if let Some(p) = &parsed.platform {
            parse_platform(p).map_err(|e| format!("{}: {e}", where_("platform")))?;
        }
        check_components(&parsed.components)
            .map_err(|e| format!("{}: {e}", where_("components")))?;
        for key in parsed.env.keys() {
            check_env_key(key).map_err(|e| format!("{}: {e}", where_("env")))?;
        }
        Ok(parsed)
    }

    /// The environment as `K=V` strings (sorted by key).
    pub fn env_pairs(&self) -> Vec<String> {
        self.env.iter().map(|(k, v)| format!("{k}={v}")).collect()
    }
}

/// A platform name, from the command line or the metadata.
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

fn check_env_key(key: &str) -> Result<(), String> {
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
        let e = parse(json!({"unikernel": {"components": ["net"]}})).unwrap_err();
        assert!(
            e.contains("unknown component net (available: none yet)"),
            "{e}"
        );
        assert_eq!(parse_platform("hvt"), Ok(Platform::Hvt));
        assert_eq!(parse_platform("kvm"), Ok(Platform::Kvm));
        assert_eq!(parse_platform("xen"), Ok(Platform::Xen));
    }

    #[test]
    fn env_pairs_from_command_line() {
        assert_eq!(parse_env_pair("A=b=c"), Ok("A=b=c".into()));
        assert_eq!(parse_env_pair("A="), Ok("A=".into()));
        assert!(parse_env_pair("A").is_err());
        assert!(parse_env_pair("=x").is_err());
    }
}
