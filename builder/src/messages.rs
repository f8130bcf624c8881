//! `--message-format json`: machine-readable output for CI pipelines
//! (docs/ci.md has the schema).
//!
//! In JSON mode stdout carries one JSON object per line and nothing else:
//! cargo's own messages (`compiler-artifact`, `build-finished`, ...) passed
//! through unchanged from the app's and the kernel's builds, then ours,
//! each with a `reason` as cargo's have:
//!
//! * `unikernel-image`: the image written (path, platform, sizes, the
//!   components and why, the build id, the debug files);
//! * `unikernel-finished`: the last line, `success` true or false, with the
//!   error message when false.
//!
//! Everything meant for people (progress, the summary, warnings, errors)
//! goes to stderr.
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{json, Value};

use crate::image::{Image, Owner};
use crate::pipeline::{self, BuiltImage};

/// `--message-format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum MessageFormat {
    /// Text for people (stdout: the image summary).
    #[default]
    Human,
    /// One JSON object per line on stdout; text only on stderr.
    Json,
}

static JSON: AtomicBool = AtomicBool::new(false);

/// Choose the format for this process (before the build starts).
pub fn set_format(f: MessageFormat) {
    JSON.store(f == MessageFormat::Json, Ordering::Relaxed);
}

/// Is stdout reserved for JSON messages?
pub fn json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// Print one message line on stdout (JSON mode), whole, then flush.
pub fn emit_line(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Print `v` as one line on stdout.
pub fn emit(v: &Value) {
    emit_line(&v.to_string());
}

/// Lower-case hex of `bytes`, two digits each (build ids, digests).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn components(names: &[String], reasons: &[String]) -> Value {
    names
        .iter()
        .enumerate()
        .map(|(i, n)| json!({"name": n, "reason": reasons.get(i).cloned().unwrap_or_default()}))
        .collect()
}

/// The `unikernel-image` message for a built image.
pub fn image_message(image: &BuiltImage) -> Value {
    let m = &image.manifest;
    json!({
        "reason": "unikernel-image",
        "path": image.path,
        "name": m.name,
        "platform": m.platform.name(),
        "size": image.file_size,
        "kernel_bytes": image.kernel_bytes,
        "app_bytes": image.app_bytes,
        "memory": m.memory,
        "components": components(&m.components, &m.component_reasons),
        "devices": m.devices,
        "build_id": hex(&m.build_id),
        "debug": {
            "app": pipeline::debug_path(&image.path, "app"),
            "kernel": pipeline::debug_path(&image.path, "kernel"),
        },
    })
}

/// The `unikernel-finished` message: the last line of a JSON run.
pub fn finished(result: &Result<(), String>) -> Value {
    match result {
        Ok(()) => json!({"reason": "unikernel-finished", "success": true}),
        Err(e) => json!({"reason": "unikernel-finished", "success": false, "error": e}),
    }
}

/// `cargo unikernel inspect --json`: everything the text report shows.
pub fn inspect(path: &std::path::Path, img: &Image) -> Value {
    let m = &img.manifest;
    let (kernel, app) = img.sizes();
    let segments: Vec<Value> = img
        .segments
        .iter()
        .map(|s| {
            let owner = match img.owner(s) {
                Owner::Kernel => "kernel",
                Owner::App => "app",
                Owner::BootManifest => "manifest",
                Owner::None => "none",
            };
            json!({
                "type": s.p_type,
                "address": s.vaddr,
                "file_size": s.filesz,
                "mem_size": s.memsz,
                "flags": s.flags,
                "owner": owner,
            })
        })
        .collect();
    let files = match &img.files {
        None => Value::Null,
        Some(Ok((n, bytes))) => {
            json!({"count": n, "bytes": bytes, "address": m.files_addr, "archive_bytes": m.files_len})
        }
        Some(Err(e)) => json!({"error": e}),
    };
    let disks: Vec<Value> = m
        .disks
        .iter()
        .map(|d| {
            let (name, mount) = d.split_once('=').unwrap_or((d.as_str(), ""));
            json!({"name": name, "mount": mount})
        })
        .collect();
    json!({
        "path": path,
        "name": m.name,
        "platform": m.platform.name(),
        "memory": m.memory,
        "args": m.args,
        "env": m.env,
        "components": components(&m.components, &m.component_reasons),
        "devices": m.devices,
        "ports": m.ports,
        "options": m.options,
        "disks": disks,
        "files": files,
        "kernel_entry": img.entry,
        "app_entry": m.app_entry,
        "app_base": m.app_base,
        "app_end": m.app_end,
        "build_id": hex(&m.build_id),
        "segments": segments,
        "sizes": {"kernel": kernel, "app": app, "file": img.file_size},
    })
}
