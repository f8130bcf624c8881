//! Reproducible builds: the same sources give the same image bytes wherever
//! they are checked out and whenever they are built.
//!
//! Nothing the builder writes holds a time, and everything it writes is in
//! a fixed order (components and embedded files sorted by name), so the
//! only place where a build's location leaks in is what rustc records:
//! source paths in panic locations and in the debug info (`DW_AT_comp_dir`
//! and file names), which the build id covers. Both builds (the app's and
//! the kernel's) therefore get `--remap-path-prefix` flags that turn the
//! machine's paths into fixed ones:
//!
//! | path | becomes |
//! |---|---|
//! | the app's workspace root | `.` (crash reports read `src/main.rs:41:9`) |
//! | the app's target directory | `/target` (generated code, `OUT_DIR`) |
//! | `$CARGO_HOME` | `/cargo` (crates.io sources, git checkouts) |
//! | the toolchain's source tree | `/unikernel` (runtime, platforms, components) |
//! | the kernel's glue crate | `/unikernel/kernel-glue` |
//!
//! rustc applies the last matching prefix, so the more specific paths come
//! last. The standard library's paths are `/rustc/<commit>/...` already.
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// `$CARGO_HOME`, else `~/.cargo`, as cargo finds it.
pub fn cargo_home() -> Option<PathBuf> {
    std::env::var_os("CARGO_HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
}

/// `--remap-path-prefix=FROM=TO` for each pair, in order (later wins).
pub fn remap_flags(pairs: &[(&Path, &str)]) -> Vec<String> {
    pairs
        .iter()
        .map(|(from, to)| format!("--remap-path-prefix={}={to}", from.display()))
        .collect()
}

/// `$CARGO_HOME` -> `/cargo` first, then `pairs` in order.
fn after_cargo_home(pairs: &[(&Path, &str)]) -> Vec<String> {
    let home = cargo_home();
    let mut all: Vec<(&Path, &str)> = home.iter().map(|h| (h.as_path(), "/cargo")).collect();
    all.extend_from_slice(pairs);
    remap_flags(&all)
}

/// The app's remapping: `$CARGO_HOME`, then its workspace, then its
/// target directory (often inside the workspace, so after it).
pub fn app_remaps(workspace: &Path, target_dir: &Path) -> Vec<String> {
    after_cargo_home(&[(workspace, "."), (target_dir, "/target")])
}

/// The kernel's remapping: `$CARGO_HOME`, the toolchain tree, the glue crate.
pub fn kernel_remaps(toolchain: &Path, glue: &Path) -> Vec<String> {
    after_cargo_home(&[(toolchain, "/unikernel"), (glue, "/unikernel/kernel-glue")])
}

/// A TOML array of strings (`["a", "b"]`), escaped.
pub fn toml_array(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| toml_string(s)).collect();
    format!("[{}]", quoted.join(", "))
}

fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// How extra rustc flags reach a cargo build without losing the user's own.
#[derive(Debug, PartialEq, Eq)]
pub enum ExtraFlags {
    /// No flags in the environment: `--config target.<triple>.rustflags=[..]`
    /// (cargo joins it with the same key of the user's config files).
    ConfigArg(String),
    /// `RUSTFLAGS` or `CARGO_ENCODED_RUSTFLAGS` is set (it would override any
    /// config): `CARGO_ENCODED_RUSTFLAGS` = the user's flags, then ours.
    Encoded(OsString),
}

/// Where `flags` go for a build for `target`, given the environment's
/// `CARGO_ENCODED_RUSTFLAGS` and `RUSTFLAGS` (cargo's order: the first set wins).
pub fn extra_flags(
    target: &str,
    flags: &[String],
    encoded: Option<&str>,
    plain: Option<&str>,
) -> ExtraFlags {
    let user: Option<Vec<String>> = match (encoded, plain) {
        (Some(e), _) => Some(
            e.split('\x1f')
                .filter(|f| !f.is_empty())
                .map(String::from)
                .collect(),
        ),
        (None, Some(p)) => Some(p.split_whitespace().map(String::from).collect()),
        (None, None) => None,
    };
    match user {
        Some(mut all) => {
            all.extend(flags.iter().cloned());
            ExtraFlags::Encoded(all.join("\x1f").into())
        }
        None => ExtraFlags::ConfigArg(format!("target.{target}.rustflags={}", toml_array(flags))),
    }
}

/// [`extra_flags`] with this process's environment.
pub fn extra_flags_from_env(target: &str, flags: &[String]) -> ExtraFlags {
    let encoded = std::env::var("CARGO_ENCODED_RUSTFLAGS").ok();
    let plain = std::env::var("RUSTFLAGS").ok();
    extra_flags(target, flags, encoded.as_deref(), plain.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remaps_keep_their_order() {
        let f = remap_flags(&[(Path::new("/a"), "."), (Path::new("/a/t"), "/target")]);
        assert_eq!(
            f,
            [
                "--remap-path-prefix=/a=.",
                "--remap-path-prefix=/a/t=/target"
            ]
        );
        let k = kernel_remaps(
            Path::new("/src/uk"),
            Path::new("/p/target/unikernel/kernel/hvt"),
        );
        assert_eq!(
            k[k.len() - 2..],
            [
                "--remap-path-prefix=/src/uk=/unikernel",
                "--remap-path-prefix=/p/target/unikernel/kernel/hvt=/unikernel/kernel-glue"
            ]
        );
    }

    #[test]
    fn flags_join_the_users_own() {
        let ours = vec![
            "-Cx=1".to_string(),
            "--remap-path-prefix=/a b=.".to_string(),
        ];
        assert_eq!(
            extra_flags("t", &ours, None, None),
            ExtraFlags::ConfigArg(
                r#"target.t.rustflags=["-Cx=1", "--remap-path-prefix=/a b=."]"#.to_string()
            )
        );
        assert_eq!(
            extra_flags("t", &ours, None, Some(" -Copt-level=1  -g ")),
            ExtraFlags::Encoded(
                "-Copt-level=1\x1f-g\x1f-Cx=1\x1f--remap-path-prefix=/a b=.".into()
            )
        );
        // CARGO_ENCODED_RUSTFLAGS wins over RUSTFLAGS, as in cargo.
        assert_eq!(
            extra_flags("t", &ours, Some("-g"), Some("-O")),
            ExtraFlags::Encoded("-g\x1f-Cx=1\x1f--remap-path-prefix=/a b=.".into())
        );
    }

    #[test]
    fn toml_strings_are_escaped() {
        assert_eq!(
            toml_array(&["a\"b\\c".to_string(), "\n".to_string()]),
            r#"["a\"b\\c", "\u000a"]"#
        );
    }
}
