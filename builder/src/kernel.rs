//! The kernel: a small glue crate, generated from `templates/kernel-glue/`,
//! that links the runtime with one platform and the chosen components into a
//! bare-metal ELF (`x86_64-unknown-none`, always release).
//!
//! The glue crate lives under the app's target directory, one per platform,
//! component set and component versions (`unikernel/kernel/hvt-<hash>/`),
//! with its own target directory, so cargo caches each kernel and rebuilds
//! only what changed. Files are rewritten only when their content changes,
//! for the same reason.
//!
//! With components, the glue crate depends on each one's crate
//! (`components/<name>`, package `unikernel-<name>`) through a feature named
//! after it that also turns on the platform crate's feature of that name
//! (its driver); `src/main.rs` calls each component's `init` from
//! `unikernel_components_init`, which the runtime calls at boot.
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use unikernel_image::manifest::Platform;
use xshell::{cmd, Shell};

use crate::cargo::{cargo_program, run_build};
use crate::progress::Step;

/// Name of the kernel binary target in the glue crate.
pub const KERNEL_BIN: &str = "unikernel-kernel";
/// The kernel's target triple.
pub const KERNEL_TARGET: &str = "x86_64-unknown-none";

/// Overrides [`toolchain_root`] (a moved source tree, or a test toolchain).
pub const TOOLCHAIN_ROOT_ENV: &str = "UNIKERNEL_TOOLCHAIN_ROOT";

/// Root of this toolchain's source tree (the cargo workspace holding the
/// builder, the runtime and the templates): `$UNIKERNEL_TOOLCHAIN_ROOT`, else
/// where this builder was compiled from.
pub fn toolchain_root() -> PathBuf {
    if let Some(root) = std::env::var_os(TOOLCHAIN_ROOT_ENV).filter(|r| !r.is_empty()) {
        return PathBuf::from(root);
    }
    let builder = Path::new(env!("CARGO_MANIFEST_DIR"));
    builder.parent().unwrap_or(builder).to_path_buf()
}

/// A component crate as the kernel build sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComponentCrate {
    /// `net`: the feature of the glue crate and of the platform crate.
    pub name: String,
    /// `unikernel-net`.
    pub package: String,
    /// `<toolchain>/components/net`.
    pub path: PathBuf,
    /// The `version` of its `[package]`.
    pub version: String,
}

/// The crate of component `name` in the toolchain at `root`.
pub fn component_crate(root: &Path, name: &str) -> Result<ComponentCrate, String> {
    let path = root.join("components").join(name);
    let manifest = path.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).map_err(|e| {
        format!(
            "the component {name} is missing from this toolchain ({}: {e}); set {TOOLCHAIN_ROOT_ENV} if the source tree moved",
            manifest.display()
        )
    })?;
    let version = package_version(&text)
        .ok_or_else(|| format!("{}: no version in [package]", manifest.display()))?;
    Ok(ComponentCrate {
        name: name.to_string(),
        package: format!("unikernel-{name}"),
        path,
        version,
    })
}

/// The `version = "..."` line of a Cargo.toml's `[package]` table.
fn package_version(toml: &str) -> Option<String> {
    let mut in_package = false;
    for line in toml.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]";
            continue;
        }
        let Some(rest) = line.strip_prefix("version") else {
            continue;
        };
        if !in_package {
            continue;
        }
        let value = rest.trim_start().strip_prefix('=')?.trim();
        return Some(value.trim_matches('"').to_string());
    }
    None
}

/// Where the glue crate for `platform` + `components` goes: the hash
/// covers the platform and, per component (sorted), its name, version and
/// source path. Without components it is the platform's name alone, as
/// before components existed.
pub fn glue_dir(target_dir: &Path, platform: Platform, components: &[ComponentCrate]) -> PathBuf {
    let mut sorted: Vec<&ComponentCrate> = components.iter().collect();
    sorted.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    let mut h = Sha256::new();
    h.update(platform.name());
    for c in sorted {
        h.update([0]);
        h.update(&c.name);
        h.update([0]);
        h.update(&c.version);
        h.update([0]);
        h.update(c.path.as_os_str().as_encoded_bytes());
    }
    let hash = crate::messages::hex(&h.finalize()[..6]);
    target_dir
        .join("unikernel")
        .join("kernel")
        .join(format!("{}-{hash}", platform.name()))
}

/// The `@FEATURES@` replacement: a TOML array body (`"a", "b"`).
pub fn features_toml(components: &[ComponentCrate]) -> String {
    let mut sorted: Vec<&str> = components.iter().map(|c| c.name.as_str()).collect();
    sorted.sort_unstable();
    sorted
        .iter()
        .map(|c| format!("{c:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `@COMPONENT_DEPENDENCIES@` line: one optional dependency per
/// component (nothing, not even the line, without components).
pub fn component_dependencies_toml(components: &[ComponentCrate]) -> String {
    components
        .iter()
        .map(|c| {
            format!(
                "{} = {{ path = {:?}, optional = true }}\n",
                c.package,
                c.path.display().to_string()
            )
        })
        .collect()
}

/// The `@COMPONENT_FEATURES@` line: per component, a feature pulling in its
/// crate and the platform's driver feature of the same name.
pub fn component_features_toml(components: &[ComponentCrate]) -> String {
    components
        .iter()
        .map(|c| {
            let driver = crate::select::platform_feature(&c.name)
                .map(|f| format!(", \"platform/{f}\""))
                .unwrap_or_default();
            format!("{} = [\"dep:{}\"{driver}]\n", c.name, c.package)
        })
        .collect()
}

/// Copy the template tree `template` into `dest` (recursively, dot-files
/// included, `target/` and `Cargo.lock` of the template skipped), replacing
/// each `(from, to)` in every text file. Returns how many files were written
/// (0 when everything was up to date).
pub fn generate_glue(
    template: &Path,
    dest: &Path,
    substitutions: &[(&str, String)],
) -> Result<usize, String> {
    if !template.is_dir() {
        return Err(format!(
            "the kernel template {} is missing; this cargo-unikernel expects its source tree at {} (set {TOOLCHAIN_ROOT_ENV} if it moved)",
            template.display(),
            toolchain_root().display()
        ));
    }
    copy_tree(template, dest, substitutions, true)
}

fn copy_tree(from: &Path, to: &Path, subst: &[(&str, String)], top: bool) -> Result<usize, String> {
    let io_err = |p: &Path, e: std::io::Error| {
        format!("cannot copy the kernel template ({}): {e}", p.display())
    };
    std::fs::create_dir_all(to).map_err(|e| io_err(to, e))?;
    let mut entries: Vec<_> = std::fs::read_dir(from)
        .map_err(|e| io_err(from, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| io_err(from, e))?;
    entries.sort_by_key(|e| e.file_name());
    let mut written = 0;
    for entry in entries {
        let name = entry.file_name();
        if top && (name == "target" || name == "Cargo.lock") {
            continue;
        }
        let src = entry.path();
        let dst = to.join(&name);
        let file_type = entry.file_type().map_err(|e| io_err(&src, e))?;
        if file_type.is_dir() {
            written += copy_tree(&src, &dst, subst, false)?;
            continue;
        }
        let bytes = std::fs::read(&src).map_err(|e| io_err(&src, e))?;
        let bytes = match String::from_utf8(bytes) {
            Ok(mut text) => {
                for (from, to) in subst {
                    text = text.replace(from, to);
                }
                text.into_bytes()
            }
            Err(e) => e.into_bytes(),
        };
        if std::fs::read(&dst).ok().as_deref() != Some(&bytes[..]) {
            std::fs::write(&dst, &bytes).map_err(|e| io_err(&dst, e))?;
            written += 1;
        }
    }
    Ok(written)
}

/// Generate the glue crate for `platform` under `target_dir` and build it.
/// Returns the kernel ELF's path.
pub fn build_kernel(
    target_dir: &Path,
    platform: Platform,
    components: &[String],
    step: &Step,
) -> Result<PathBuf, String> {
    let root = toolchain_root();
    let crates = components
        .iter()
        .map(|c| component_crate(&root, c))
        .collect::<Result<Vec<_>, _>>()?;
    let glue = glue_dir(target_dir, platform, &crates);
    // Frame pointers: the stack of a runtime panic or fault (docs/debugging.md).
    let mut rustflags: Vec<String> = [
        "-C",
        "relocation-model=static",
        "-C",
        "force-frame-pointers=yes",
    ]
    .map(String::from)
    .to_vec();
    rustflags.extend(crate::repro::kernel_remaps(&root, &glue));
    // The line placeholders first: they hold no other placeholder.
    let substitutions = [
        (
            "@COMPONENT_DEPENDENCIES@\n",
            component_dependencies_toml(&crates),
        ),
        ("@COMPONENT_FEATURES@\n", component_features_toml(&crates)),
        ("@TOOLCHAIN_ROOT@", root.display().to_string()),
        ("@PLATFORM@", platform.name().to_string()),
        ("@FEATURES@", features_toml(&crates)),
        ("@KERNEL_RUSTFLAGS@", crate::repro::toml_array(&rustflags)),
    ];
    generate_glue(
        &root.join("templates").join("kernel-glue"),
        &glue,
        &substitutions,
    )?;

    let sh = Shell::new().map_err(|e| format!("cannot start a shell for cargo: {e}"))?;
    sh.change_dir(&glue);
    let cargo = cargo_program();
    let command = cmd!(
        sh,
        "{cargo} build --release --target {KERNEL_TARGET} --message-format=json-render-diagnostics"
    )
    // The user's flags and target choices are for the app, not the kernel
    // (and would invalidate the kernel's cache at every switch).
    .env_remove("RUSTFLAGS")
    .env_remove("CARGO_ENCODED_RUSTFLAGS")
    .env_remove("CARGO_BUILD_RUSTFLAGS")
    .env_remove("CARGO_TARGET_DIR")
    .env_remove("CARGO_BUILD_TARGET_DIR")
    .env_remove("CARGO_BUILD_TARGET");
    let artifacts = run_build(command, step, &format!("the {} kernel", platform.name()))?;
    artifacts
        .iter()
        .filter(|a| a.target.name == KERNEL_BIN)
        .find_map(|a| a.executable.clone())
        .map(PathBuf::from)
        .ok_or_else(|| {
            format!(
                "the kernel build in {} produced no `{KERNEL_BIN}` binary; is templates/kernel-glue complete?",
                glue.display()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn krate(name: &str, version: &str) -> ComponentCrate {
        ComponentCrate {
            name: name.into(),
            package: format!("unikernel-{name}"),
            path: PathBuf::from(format!("/r/components/{name}")),
            version: version.into(),
        }
    }

    #[test]
    fn glue_dir_depends_on_sorted_components_and_versions() {
        let t = Path::new("/t");
        let a = glue_dir(t, Platform::Hvt, &[krate("b", "1"), krate("a", "1")]);
        let b = glue_dir(t, Platform::Hvt, &[krate("a", "1"), krate("b", "1")]);
        let c = glue_dir(t, Platform::Hvt, &[]);
        assert_eq!(a, b);
        assert_ne!(a, c);
        let v2 = glue_dir(t, Platform::Hvt, &[krate("a", "2"), krate("b", "1")]);
        assert_ne!(a, v2);
        let mut moved = krate("a", "1");
        moved.path = PathBuf::from("/elsewhere/components/a");
        assert_ne!(a, glue_dir(t, Platform::Hvt, &[moved, krate("b", "1")]));
        let name = c.file_name().unwrap().to_str().unwrap();
        assert!(
            c.starts_with("/t/unikernel/kernel") && name.starts_with("hvt-") && name.len() == 16,
            "{c:?}"
        );
        // No components: the key is the platform alone, as before components
        // existed (an app without them keeps its cached kernel).
        let hash = crate::messages::hex(&Sha256::digest("hvt")[..6]);
        assert_eq!(name, format!("hvt-{hash}"));
    }

    #[test]
    fn features() {
        assert_eq!(features_toml(&[]), "");
        assert_eq!(
            features_toml(&[krate("net", "0.1.0"), krate("blk", "0.1.0")]),
            r#""blk", "net""#
        );
        assert_eq!(component_dependencies_toml(&[]), "");
        assert_eq!(component_features_toml(&[]), "");
        assert_eq!(
            component_dependencies_toml(&[krate("net", "0.1.0")]),
            "unikernel-net = { path = \"/r/components/net\", optional = true }\n"
        );
        assert_eq!(
            component_features_toml(&[krate("net", "0.1.0")]),
            "net = [\"dep:unikernel-net\", \"platform/net\"]\n"
        );
        assert_eq!(
            component_features_toml(&[krate("fs", "0.1.0")]),
            "fs = [\"dep:unikernel-fs\", \"platform/block\"]\n"
        );
    }

    #[test]
    fn the_net_component_crate() {
        let c = component_crate(&toolchain_root(), "net").unwrap();
        assert_eq!(c.package, "unikernel-net");
        assert!(c.path.ends_with("components/net"), "{:?}", c.path);
        assert!(
            !c.version.is_empty() && c.version.contains('.'),
            "{}",
            c.version
        );
        let e = component_crate(&toolchain_root(), "nope").unwrap_err();
        assert!(e.contains("the component nope is missing"), "{e}");
        assert_eq!(
            package_version(
                "[dependencies]\nversion = \"9\"\n[package]\nname = \"x\"\nversion = \"1.2.3\"\n"
            ),
            Some("1.2.3".into())
        );
        assert_eq!(package_version("[package]\nname = \"x\"\n"), None);
    }

    #[test]
    fn template_copy_substitutes_and_writes_only_changes() {
        let tmp = tempfile::tempdir().unwrap();
        let tpl = tmp.path().join("tpl");
        std::fs::create_dir_all(tpl.join(".cargo")).unwrap();
        std::fs::create_dir_all(tpl.join("src")).unwrap();
        std::fs::create_dir_all(tpl.join("target/junk")).unwrap();
        std::fs::write(
            tpl.join("Cargo.toml"),
            "root = \"@TOOLCHAIN_ROOT@\"\nf = [@FEATURES@]\n",
        )
        .unwrap();
        std::fs::write(tpl.join(".cargo/config.toml"), "p = \"@PLATFORM@\"\n").unwrap();
        std::fs::write(tpl.join("src/main.rs"), "fn main() {}\n").unwrap();
        std::fs::write(tpl.join("blob"), [0xff, 0xfe, b'@']).unwrap();
        let dest = tmp.path().join("out");
        let subst = [
            ("@TOOLCHAIN_ROOT@", "/r".to_string()),
            ("@PLATFORM@", "hvt".to_string()),
            ("@FEATURES@", "\"net\"".to_string()),
        ];
        assert_eq!(generate_glue(&tpl, &dest, &subst).unwrap(), 4);
        assert_eq!(
            std::fs::read_to_string(dest.join("Cargo.toml")).unwrap(),
            "root = \"/r\"\nf = [\"net\"]\n"
        );
        assert_eq!(
            std::fs::read_to_string(dest.join(".cargo/config.toml")).unwrap(),
            "p = \"hvt\"\n"
        );
        assert_eq!(
            std::fs::read(dest.join("blob")).unwrap(),
            [0xff, 0xfe, b'@']
        );
        assert!(!dest.join("target").exists());
        let mtime = std::fs::metadata(dest.join("src/main.rs"))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(generate_glue(&tpl, &dest, &subst).unwrap(), 0);
        assert_eq!(
            std::fs::metadata(dest.join("src/main.rs"))
                .unwrap()
                .modified()
                .unwrap(),
            mtime
        );
        let e = generate_glue(&tmp.path().join("nope"), &dest, &subst).unwrap_err();
        assert!(e.contains("is missing"), "{e}");
    }
}
