//! `cargo unikernel build`, step by step: read the crate's metadata, build the
//! app for musl, check the app ELF, choose the components (metadata + the
//! app's symbols), build the kernel, link the image, write it with its two
//! debug files next to it.
use std::path::{Path, PathBuf};

use cargo_metadata::{Metadata, MetadataCommand, Package};
use unikernel_image::manifest::Manifest;
use xshell::{cmd, Shell};

use crate::cargo::{cargo_program, run_build};
use crate::config::{check_components, choose_platform, UnikernelMetadata};
use crate::elf_input::check_app;
use crate::image::human_bytes;
use crate::kernel::build_kernel;
use crate::link::{link, ImageSpec};
use crate::progress::Progress;
use crate::select::{app_symbols, choose_from, devices, ListedIn};

/// Target triple of apps.
pub const APP_TARGET: &str = "x86_64-unknown-linux-musl";

/// What `build` was asked for.
#[derive(Clone, Debug, Default)]
pub struct BuildOptions {
    /// `Cargo.toml` of the app crate; `None` = cargo's search from the current directory.
    pub manifest_path: Option<PathBuf>,
    /// Build the app in the dev profile instead of release.
    pub debug: bool,
    /// Overrides the metadata's `platform`.
    pub platform: Option<String>,
    /// Image path; default `<target dir>/unikernel/<platform>/<name>`.
    pub output: Option<PathBuf>,
    /// Which binary, if the package has several.
    pub bin: Option<String>,
}

/// A written image.
#[derive(Clone, Debug)]
pub struct BuiltImage {
    pub path: PathBuf,
    pub manifest: Manifest,
    pub kernel_bytes: u64,
    pub app_bytes: u64,
    pub file_size: u64,
    /// Embedded files: (count, bytes of contents).
    pub files: Option<(usize, u64)>,
}

/// Build the image.
pub fn build(opts: &BuildOptions, progress: Progress) -> Result<BuiltImage, String> {
    let metadata = read_metadata(opts.manifest_path.as_deref())?;
    let package = root_package(&metadata)?;
    let bin = pick_bin(package, opts.bin.as_deref())?;
    let manifest_path = package.manifest_path.as_std_path();
    let meta = UnikernelMetadata::from_package_metadata(&package.metadata, manifest_path)?;
    let platform = choose_platform(opts.platform.as_deref(), &meta)?;
    check_components(&meta.components)?;
    let target_dir = metadata.target_directory.as_std_path();
    let crate_dir = manifest_path.parent().unwrap_or(Path::new("."));
    crate::cargo::ensure_target(APP_TARGET, crate_dir)?;
    crate::cargo::ensure_target("x86_64-unknown-none", crate_dir)?;

    // 1. The app, for musl (static-pie by default on this target).
    let profile = if opts.debug { "debug" } else { "release" };
    let step = progress.bar(
        &format!("Building app {bin} ({profile})"),
        metadata
            .resolve
            .as_ref()
            .map_or(1, |r| r.nodes.len() as u64),
    );
    let sh = Shell::new().map_err(|e| format!("cannot start a shell for cargo: {e}"))?;
    let cargo = cargo_program();
    let release = (!opts.debug).then_some("--release");
    let command = cmd!(
        sh,
        "{cargo} build {release...} --target {APP_TARGET} --message-format=json-render-diagnostics --bin {bin} --manifest-path {manifest_path}"
    );
    // Frame pointers, for the stack of a crash report (docs/debugging.md);
    // source paths as fixed names, so the image does not depend on where
    // the sources are (builder/src/repro.rs).
    let mut flags = vec!["-Cforce-frame-pointers=yes".to_string()];
    // The system-call shim (builder/src/shim.rs): the app's hot calls enter
    // the runtime with a jump where the platform allows it.
    let shim = crate::shim::ensure_object(
        &target_dir.join("unikernel").join("app-shim"),
        crate_dir,
        APP_TARGET,
    )?;
    flags.extend(crate::shim::link_flags(&shim));
    flags.extend(crate::repro::app_remaps(
        metadata.workspace_root.as_std_path(),
        target_dir,
    ));
    let command = match crate::repro::extra_flags_from_env(APP_TARGET, &flags) {
        crate::repro::ExtraFlags::ConfigArg(config) => command.arg("--config").arg(config),
        crate::repro::ExtraFlags::Encoded(flags) => command
            .env("CARGO_ENCODED_RUSTFLAGS", flags)
            .env_remove("RUSTFLAGS"),
    };
    // Line tables for the crash reports' `file:line` (and gdb), unless the
    // app's workspace or the environment chose its release debug level.
    let command = if !opts.debug
        && std::env::var_os("CARGO_PROFILE_RELEASE_DEBUG").is_none()
        && !release_debug_is_set(&metadata.workspace_root.as_std_path().join("Cargo.toml"))
    {
        command.env("CARGO_PROFILE_RELEASE_DEBUG", "limited")
    } else {
        command
    };
    let c_hint = missing_c_compiler(&metadata);
    if let Some(h) = &c_hint {
        progress.warn(h);
    }
    let artifacts =
        run_build(command, &step, &format!("the app {bin}")).map_err(|e| match &c_hint {
            Some(h) => format!("{e}; {h}"),
            None => e,
        })?;
    let app_path = artifacts
        .iter()
        .filter(|a| a.package_id == package.id && a.target.name == bin && a.target.is_bin())
        .find_map(|a| a.executable.clone())
        .ok_or_else(|| {
            format!(
                "cargo built no executable for the binary {bin} of {}",
                package.name
            )
        })?
        .into_std_path_buf();
    // 2. Can the unikernel run it?
    let app = read(&app_path, "the app")?;
    check_app(&app, &app_path.display().to_string())?;
    step.finish(&format!("{bin}, {}", human_bytes(app.len() as u64)));

    let output = opts
        .output
        .clone()
        .unwrap_or_else(|| target_dir.join("unikernel").join(platform.name()).join(bin));
    let input = AppInput {
        app,
        name: bin.to_string(),
        meta: &meta,
        files_base: crate_dir,
        config_name: manifest_path.display().to_string() + ": [package.metadata.unikernel]",
        listed_in: ListedIn::CARGO,
    };
    image_from_app(&input, platform, target_dir, &output, &progress)
}

/// A checked app executable and what to build around it: the step the
/// cargo path and `pack` share (components, kernel, embedded files, link,
/// the image and its two debug files written).
pub struct AppInput<'a> {
    pub app: Vec<u8>,
    /// The app's name (argv[0]).
    pub name: String,
    pub meta: &'a UnikernelMetadata,
    /// What `files` globs are relative to.
    pub files_base: &'a Path,
    /// Where the settings came from, for messages
    /// (`.../Cargo.toml: [package.metadata.unikernel]`).
    pub config_name: String,
    pub listed_in: ListedIn,
}

/// Choose the components, build (or reuse) the kernel under `kernel_dir`,
/// link and write the image to `output` with `<output>.app.debug` and
/// `<output>.kernel.debug`.
pub fn image_from_app(
    input: &AppInput,
    platform: unikernel_image::manifest::Platform,
    kernel_dir: &Path,
    output: &Path,
    progress: &Progress,
) -> Result<BuiltImage, String> {
    let meta = input.meta;
    let app = &input.app;
    // 3. The components, then the kernel for this platform and component
    //    set (cached).
    let disk_names: Vec<String> = meta.disks.iter().map(|d| d.name.clone()).collect();
    let (choices, warnings) = choose_from(
        &meta.components,
        &input.listed_in,
        &disk_names,
        &app_symbols(app),
    );
    for w in &warnings {
        progress.warn(w);
    }
    let components: Vec<String> = choices.iter().map(|c| c.name.clone()).collect();
    let step = progress.spinner(&format!(
        "Building kernel ({})",
        kernel_label(platform, &components)
    ));
    let kernel_path = build_kernel(kernel_dir, platform, &components, &step)?;
    let kernel = read(&kernel_path, "the kernel")?;
    step.finish(&human_bytes(kernel.len() as u64));

    // 4. The embedded files, then the image.
    let disks = meta.disk_entries();
    let mounts: Vec<String> = disks
        .iter()
        .filter_map(|d| d.split_once('=').map(|x| x.1.to_string()))
        .collect();
    let embedded = crate::files::collect(
        input.files_base,
        &meta.files,
        meta.files_root.as_deref().unwrap_or("/"),
        &mounts,
    )
    .map_err(|e| format!("{} files: {e}", input.config_name))?;
    let step = progress.spinner("Linking image");
    let spec = ImageSpec {
        platform,
        memory: meta.memory.map_or(0, |m| m.0),
        name: input.name.clone(),
        args: meta.args.clone(),
        env: meta.env_pairs(),
        components,
        component_reasons: choices.iter().map(|c| c.reason.clone()).collect(),
        devices: devices(&choices),
        ports: meta.ports.clone(),
        options: meta.options(),
        disks,
        files: embedded.as_ref().map(|e| e.archive.clone()),
    };
    let image = link(&kernel, app, &spec)?;
    if let Some(dir) = output.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    write(output, &image.bytes)?;
    write(&debug_path(output, "app"), app)?;
    write(&debug_path(output, "kernel"), &kernel)?;
    step.finish(&output.display().to_string());
    Ok(BuiltImage {
        path: output.to_path_buf(),
        manifest: image.manifest,
        kernel_bytes: image.kernel_bytes,
        app_bytes: image.app_bytes,
        file_size: image.bytes.len() as u64,
        files: embedded.map(|e| (e.files, e.bytes)),
    })
}

/// A hint when a dependency builds C code (the `cc` crate is in the graph)
/// and no C compiler for musl is there: musl-gcc (Debian's `musl-tools`),
/// or a `CC_x86_64_unknown_linux_musl` / `TARGET_CC` the user set.
fn missing_c_compiler(metadata: &Metadata) -> Option<String> {
    if !metadata.packages.iter().any(|p| p.name.as_str() == "cc") {
        return None;
    }
    for var in [
        "CC_x86_64_unknown_linux_musl",
        "CC_x86_64-unknown-linux-musl",
        "TARGET_CC",
    ] {
        if std::env::var_os(var).is_some() {
            return None;
        }
    }
    let found = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path)
            .any(|d| d.join("musl-gcc").is_file() || d.join("x86_64-linux-musl-gcc").is_file())
    });
    (!found).then(|| {
        "a dependency builds C code (the cc crate) and no musl C compiler was found: install musl-gcc (Debian: apt-get install musl-tools) or set CC_x86_64_unknown_linux_musl".to_string()
    })
}

/// `hvt`, or `hvt + net` with components.
fn kernel_label(platform: unikernel_image::manifest::Platform, components: &[String]) -> String {
    let mut label = platform.name().to_string();
    for c in components {
        label.push_str(" + ");
        label.push_str(c);
    }
    label
}

/// The summary printed after a build.
pub fn summary(image: &BuiltImage) -> String {
    let mut s = format!(
        "{}\n  kernel {}, app {}, image {}",
        image.path.display(),
        human_bytes(image.kernel_bytes),
        human_bytes(image.app_bytes),
        human_bytes(image.file_size)
    );
    let m = &image.manifest;
    for (c, why) in m.components.iter().zip(&m.component_reasons) {
        s.push_str(&format!("\n  component {c}: {why}"));
    }
    if let Some((files, bytes)) = image.files {
        s.push_str(&format!(
            "\n  embedded files: {files}, {}",
            human_bytes(bytes)
        ));
    }
    for d in &m.disks {
        if let Some((name, mount)) = d.split_once('=') {
            s.push_str(&format!(
                "\n  disk {name} at {mount} (run with --disk {name}=FILE)"
            ));
        }
    }
    s
}

/// `<output>.app.debug` / `<output>.kernel.debug`.
pub fn debug_path(output: &Path, which: &str) -> PathBuf {
    let mut s = output.as_os_str().to_owned();
    s.push(format!(".{which}.debug"));
    PathBuf::from(s)
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {what} {}: {e}", path.display()))
}

fn write(path: &Path, data: &[u8]) -> Result<(), String> {
    std::fs::write(path, data).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// `cargo metadata` for the app (dependencies resolved for the musl target,
/// so the bar's length is the number of packages that will be compiled).
pub fn read_metadata(manifest_path: Option<&Path>) -> Result<Metadata, String> {
    let mut command = MetadataCommand::new();
    command.cargo_path(cargo_program());
    if let Some(p) = manifest_path {
        if !p.is_file() {
            return Err(format!(
                "{} does not exist; pass the Cargo.toml of an app crate (or its directory)",
                p.display()
            ));
        }
        command.manifest_path(p);
    }
    command.other_options(vec![
        "--filter-platform".to_string(),
        APP_TARGET.to_string(),
    ]);
    command.exec().map_err(|e| match e {
        cargo_metadata::Error::CargoMetadata { stderr } => {
            let msg = stderr
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            let msg = msg.strip_prefix("error: ").unwrap_or(&msg).to_string();
            format!("cargo metadata failed: {msg}")
        }
        other => format!("cargo metadata failed: {other}"),
    })
}

/// The package the manifest path names (not a virtual workspace).
pub fn root_package(metadata: &Metadata) -> Result<&Package, String> {
    metadata.root_package().ok_or_else(|| {
        format!(
            "{} is a virtual workspace; pass the Cargo.toml of one of its app crates (--manifest-path member/Cargo.toml)",
            metadata.workspace_root.join("Cargo.toml")
        )
    })
}

/// The binary target to build.
pub fn pick_bin<'a>(package: &'a Package, wanted: Option<&str>) -> Result<&'a str, String> {
    let bins: Vec<&str> = package
        .targets
        .iter()
        .filter(|t| t.is_bin())
        .map(|t| t.name.as_str())
        .collect();
    match (wanted, bins.as_slice()) {
        (_, []) => Err(format!(
            "package {} has no binary target; a unikernel runs a program (add src/main.rs)",
            package.name
        )),
        (Some(w), _) => bins.iter().copied().find(|b| *b == w).ok_or_else(|| {
            format!(
                "package {} has no binary named {w} (it has: {})",
                package.name,
                bins.join(", ")
            )
        }),
        (None, [one]) => Ok(one),
        (None, many) => Err(format!(
            "package {} has several binaries ({}); pick one with --bin NAME",
            package.name,
            many.join(", ")
        )),
    }
}

/// Whether the workspace manifest at `path` sets `[profile.release] debug`.
fn release_debug_is_set(path: &Path) -> bool {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.parse::<toml::Table>().ok())
        .and_then(|t| {
            let profile = t.get("profile")?.get("release")?;
            Some(profile.get("debug").is_some())
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_paths() {
        assert_eq!(
            debug_path(Path::new("/o/hello"), "app"),
            Path::new("/o/hello.app.debug")
        );
        assert_eq!(
            debug_path(Path::new("img"), "kernel"),
            Path::new("img.kernel.debug")
        );
    }

    #[test]
    fn metadata_of_the_hello_template() {
        let m = read_metadata(Some(
            &crate::kernel::toolchain_root().join("templates/hello/Cargo.toml"),
        ))
        .unwrap();
        let p = root_package(&m).unwrap();
        assert_eq!(pick_bin(p, None), Ok("hello"));
        assert!(pick_bin(p, Some("nope"))
            .unwrap_err()
            .contains("no binary named nope (it has: hello)"));
        let meta =
            UnikernelMetadata::from_package_metadata(&p.metadata, p.manifest_path.as_std_path())
                .unwrap();
        assert_eq!(meta.memory.map(|m| m.0), Some(64 << 20));
        assert!(!meta.env.is_empty());
    }

    #[test]
    fn library_crate_has_no_bin() {
        let m = read_metadata(Some(
            &crate::kernel::toolchain_root().join("runtime/image/Cargo.toml"),
        ))
        .unwrap();
        let e = pick_bin(root_package(&m).unwrap(), None).unwrap_err();
        assert!(e.contains("has no binary target"), "{e}");
    }

    #[test]
    fn missing_manifest() {
        let e = read_metadata(Some(Path::new("/nonexistent/Cargo.toml"))).unwrap_err();
        assert!(e.contains("/nonexistent/Cargo.toml does not exist"), "{e}");
    }

    #[test]
    fn an_explicit_release_debug_level_is_kept() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("Cargo.toml");
        std::fs::write(&p, "[package]\nname = \"a\"\n").unwrap();
        assert!(!release_debug_is_set(&p));
        std::fs::write(&p, "[profile.release]\ndebug = 2\n").unwrap();
        assert!(release_debug_is_set(&p));
        std::fs::write(&p, "[profile.release]\nlto = true\n").unwrap();
        assert!(!release_debug_is_set(&p));
        assert!(!release_debug_is_set(&d.path().join("missing.toml")));
    }
}
