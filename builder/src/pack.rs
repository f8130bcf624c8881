//! `cargo unikernel pack FILE`: a static x86_64 Linux executable that cargo
//! did not build (C with musl, Go with `CGO_ENABLED=0`, Zig, ...) becomes an
//! image. The runtime implements the Linux ABI, so any static program is an
//! app: `pack` checks the file, reads the same settings a crate's
//! `[package.metadata.unikernel]` holds from a `Unikernel.toml` beside it
//! (or `--config FILE`), lets the command line override them, and then runs
//! the step the cargo path runs after building its app
//! ([`crate::pipeline::image_from_app`]): components, kernel, link.
//!
//! Both static-pie programs and fixed-address ones (`ET_EXEC`, at 0x400000
//! for musl-gcc's and Go's defaults) are accepted: the kernel sits at
//! 1 MiB and the app keeps its addresses as long as they lie above the
//! kernel (the linker names both ranges otherwise, see docs/pack.md).
use std::path::{Path, PathBuf};

use crate::config::{
    check_components, check_env_key, choose_platform, MemorySize, UnikernelMetadata,
};
use crate::elf_input::check_app;
use crate::image::human_bytes;
use crate::pipeline::{image_from_app, AppInput, BuiltImage};
use crate::progress::Progress;
use crate::select::ListedIn;

/// The settings file `pack` looks for beside the executable.
pub const CONFIG_NAME: &str = "Unikernel.toml";

/// What `pack` was asked for; `None`/empty fields leave the config file's
/// value.
#[derive(Clone, Debug, Default)]
pub struct PackOptions {
    pub input: PathBuf,
    /// Default: the input's name plus `.img`, beside it.
    pub output: Option<PathBuf>,
    pub platform: Option<String>,
    pub memory: Option<MemorySize>,
    /// `K=V`, replacing the file's value of the same key.
    pub env: Vec<String>,
    /// argv[0]; default the file's name.
    pub name: Option<String>,
    /// Replace the file's component list.
    pub components: Option<Vec<String>>,
    /// Instead of `Unikernel.toml` beside the input.
    pub config: Option<PathBuf>,
    /// Replace the file's default arguments.
    pub args: Option<Vec<String>>,
}

/// Refuse what is no executable before the ELF checks: a script.
fn refuse_script(data: &[u8], what: &str) -> Result<(), String> {
    if !data.starts_with(b"#!") {
        return Ok(());
    }
    let line: String = String::from_utf8_lossy(&data[..data.len().min(128)])
        .lines()
        .next()
        .unwrap_or("#!")
        .to_string();
    Err(format!(
        "{what} is a script ({line}), not an executable; pack a static build of the program that runs it"
    ))
}

/// The config the options name, or `Unikernel.toml` beside the input, or
/// the defaults; with the directory its `files` globs are relative to and
/// its name for messages.
fn read_config(opts: &PackOptions) -> Result<(UnikernelMetadata, PathBuf, String), String> {
    let input_dir = opts
        .input
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let path = match &opts.config {
        Some(p) if !p.is_file() => {
            return Err(format!("--config {}: no such file", p.display()));
        }
        Some(p) => Some(p.clone()),
        None => Some(input_dir.join(CONFIG_NAME)).filter(|p| p.is_file()),
    };
    match path {
        Some(p) => {
            let meta = UnikernelMetadata::from_toml_file(&p)?;
            let dir = p
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_path_buf();
            Ok((meta, dir, p.display().to_string()))
        }
        None => Ok((
            UnikernelMetadata::default(),
            input_dir,
            "the pack options".to_string(),
        )),
    }
}

/// The image path: `--output`, else `<input>.img`.
fn output_path(opts: &PackOptions) -> Result<PathBuf, String> {
    let out = match &opts.output {
        Some(o) => o.clone(),
        None => {
            let mut s = opts.input.as_os_str().to_owned();
            s.push(".img");
            PathBuf::from(s)
        }
    };
    let same = match (out.canonicalize(), opts.input.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same {
        return Err(format!(
            "the image would overwrite the program {}; choose another -o",
            opts.input.display()
        ));
    }
    Ok(out)
}

/// Pack the executable.
pub fn pack(opts: &PackOptions, progress: Progress) -> Result<BuiltImage, String> {
    let what = opts.input.display().to_string();
    let data = std::fs::read(&opts.input).map_err(|e| format!("cannot read {what}: {e}"))?;
    refuse_script(&data, &what)?;
    check_app(&data, &what)?;
    let (mut meta, files_base, config_name) = read_config(opts)?;
    // The command line over the file.
    if let Some(m) = opts.memory {
        meta.memory = Some(m);
    }
    for kv in &opts.env {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("--env {kv}: expected KEY=VALUE"))?;
        check_env_key(k).map_err(|e| format!("--env {kv}: {e}"))?;
        meta.env.insert(k.to_string(), v.to_string());
    }
    if let Some(c) = &opts.components {
        check_components(c).map_err(|e| format!("--components: {e}"))?;
        meta.components = c.clone();
    }
    if let Some(a) = &opts.args {
        meta.args = a.clone();
    }
    let platform = choose_platform(opts.platform.as_deref(), &meta)?;
    let name = match &opts.name {
        Some(n) if n.is_empty() || n.contains('/') => {
            return Err(format!(
                "--name {n:?}: give a plain name (argv[0] becomes /NAME)"
            ));
        }
        Some(n) => n.clone(),
        None => opts
            .input
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| format!("{what}: not a file name"))?,
    };
    let output = output_path(opts)?;
    let root = crate::kernel::toolchain_root();
    crate::cargo::ensure_target("x86_64-unknown-none", &root)?;
    progress
        .spinner(&format!("Packing {what}"))
        .finish(&format!(
            "{}, settings from {config_name}",
            human_bytes(data.len() as u64)
        ));
    let input = AppInput {
        app: data,
        name,
        meta: &meta,
        files_base: &files_base,
        config_name,
        listed_in: ListedIn::PACK,
    };
    // Kernels for packed programs are cached in the toolchain's own target
    // directory (a packed program has none).
    image_from_app(&input, platform, &root.join("target"), &output, &progress)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_are_refused_with_their_first_line() {
        let e = refuse_script(b"#!/bin/sh\necho hi\n", "run.sh").unwrap_err();
        assert_eq!(
            e,
            "run.sh is a script (#!/bin/sh), not an executable; pack a static build of the program that runs it"
        );
        assert!(refuse_script(b"\x7fELF", "x").is_ok());
    }

    #[test]
    fn the_image_goes_beside_the_program_and_never_over_it() {
        let d = std::env::temp_dir().join(format!("pack-out-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let prog = d.join("app");
        std::fs::write(&prog, b"x").unwrap();
        let o = PackOptions {
            input: prog.clone(),
            ..Default::default()
        };
        assert_eq!(output_path(&o).unwrap(), d.join("app.img"));
        let o = PackOptions {
            input: prog.clone(),
            output: Some(prog.clone()),
            ..Default::default()
        };
        assert!(output_path(&o)
            .unwrap_err()
            .contains("would overwrite the program"));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_config_file_gives_defaults_and_refuses_unknown_keys() {
        let d = std::env::temp_dir().join(format!("pack-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let prog = d.join("app");
        std::fs::write(&prog, b"x").unwrap();
        std::fs::write(
            d.join(CONFIG_NAME),
            "memory = \"32M\"\nargs = [\"a\", \"b\"]\n[env]\nK = \"V\"\n",
        )
        .unwrap();
        let o = PackOptions {
            input: prog.clone(),
            ..Default::default()
        };
        let (meta, base, name) = read_config(&o).unwrap();
        assert_eq!(meta.memory.map(|m| m.0), Some(32 << 20));
        assert_eq!(meta.args, ["a", "b"]);
        assert_eq!(meta.env.get("K").map(String::as_str), Some("V"));
        assert_eq!(base, d);
        assert!(name.ends_with(CONFIG_NAME));
        std::fs::write(d.join(CONFIG_NAME), "memroy = \"32M\"\n").unwrap();
        let e = read_config(&o).unwrap_err();
        assert!(e.contains("unknown field `memroy`"), "{e}");
        assert!(e.contains(CONFIG_NAME), "{e}");
        let o = PackOptions {
            input: prog,
            config: Some(d.join("missing.toml")),
            ..Default::default()
        };
        assert!(read_config(&o).unwrap_err().contains("no such file"));
        let _ = std::fs::remove_dir_all(&d);
    }
}
