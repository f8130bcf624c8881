//! Running `cargo build --message-format=json-render-diagnostics` under a
//! progress step: compiler-artifact messages (stdout) advance the step and
//! name the produced files; cargo's own rendered diagnostics (stderr) reach
//! the user unchanged, printed above the bar when one is drawn. With
//! `--message-format json` ([`crate::messages`]) cargo's messages are also
//! passed on to our stdout, one per line, unchanged.
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread;

use cargo_metadata::{Artifact, Message};
use indicatif::ProgressBar;

use crate::progress::Step;

/// The cargo to run: the one that started us (`cargo unikernel` sets
/// `$CARGO`), else `cargo` from `PATH`.
pub fn cargo_program() -> PathBuf {
    std::env::var_os("CARGO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("cargo"))
}

/// Run a cargo build command (it must already carry
/// `--message-format=json-render-diagnostics`) and return its artifacts.
/// `what` names the build in the error ("the app hello").
pub fn run_build(
    command: impl Into<Command>,
    step: &Step,
    what: &str,
) -> Result<Vec<Artifact>, String> {
    let mut command: Command = command.into();
    let bar = step.bar_handle();
    command.stdout(Stdio::piped()).stdin(Stdio::null());
    if bar.is_some() {
        // Our bar owns the terminal: take cargo's stderr and print it above
        // the bar, keeping cargo's colors.
        command.stderr(Stdio::piped());
        if std::env::var_os("CARGO_TERM_COLOR").is_none() {
            command.env("CARGO_TERM_COLOR", "always");
        }
        // Cargo's own progress line would fight with ours.
        command.env("CARGO_TERM_PROGRESS_WHEN", "never");
    }
    let program = command.get_program().to_string_lossy().into_owned();
    let mut child = command.spawn().map_err(|e| {
        format!("cannot run {program} to build {what}: {e}; is cargo installed and on PATH?")
    })?;
    let forwarder = child.stderr.take().map(|stderr| {
        let bar = bar.clone();
        thread::spawn(move || forward_stderr(stderr, bar))
    });
    let mut artifacts = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        let json = crate::messages::json();
        for line in BufReader::new(stdout).lines() {
            let line =
                line.map_err(|e| format!("cannot read cargo's output while building {what}: {e}"))?;
            // `--message-format json`: cargo's own messages go on, unchanged.
            let message = serde_json::from_str::<Message>(&line);
            if json && message.is_ok() {
                crate::messages::emit_line(&line);
            }
            match message {
                Ok(Message::CompilerArtifact(a)) => {
                    step.advance(&a.target.name);
                    artifacts.push(a);
                }
                Ok(Message::TextLine(l)) => print_line(&bar, &l),
                Ok(_) => {}
                // Not a message: a line a build script printed.
                Err(_) => print_line(&bar, &line),
            }
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("cannot wait for cargo building {what}: {e}"))?;
    if let Some(t) = forwarder {
        let _ = t.join();
    }
    if !status.success() {
        return Err(format!("building {what} failed (cargo's errors are above)"));
    }
    Ok(artifacts)
}

fn print_line(bar: &Option<ProgressBar>, line: &str) {
    match bar {
        Some(pb) => pb.println(line),
        None => eprintln!("{line}"),
    }
}

/// Copy cargo's stderr above the bar, except the per-crate status lines the
/// bar already shows.
fn forward_stderr(stderr: impl Read, bar: Option<ProgressBar>) {
    let mut reader = BufReader::new(stderr);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim_end_matches(['\n', '\r']);
        let plain = strip_ansi(line);
        let status = plain.trim_start();
        if ["Compiling ", "Checking ", "Fresh ", "Finished "]
            .iter()
            .any(|s| status.starts_with(s))
        {
            continue;
        }
        print_line(&bar, line);
    }
}

/// Remove ANSI escape sequences (`ESC [ ... letter`).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Make sure the Rust standard library for `target` is installed (for the
/// toolchain that builds in `dir`); install it with rustup when it is not,
/// so a fresh machine needs no set-up step before the first build.
pub fn ensure_target(target: &str, dir: &std::path::Path) -> Result<(), String> {
    let out = Command::new("rustc")
        .args(["--print", "target-libdir", "--target", target])
        .current_dir(dir)
        .output()
        .map_err(|e| format!("cannot run rustc to check the {target} target: {e}"))?;
    let libdir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let installed = out.status.success()
        && std::fs::read_dir(&libdir).is_ok_and(|mut d| {
            d.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("libcore-")))
        });
    if installed {
        return Ok(());
    }
    eprintln!("Installing the Rust target {target} (rustup target add {target})...");
    let status = Command::new("rustup")
        .args(["target", "add", target])
        .current_dir(dir)
        .status()
        .map_err(|e| {
            format!("the Rust target {target} is not installed and rustup cannot be run ({e}); install it with `rustup target add {target}`")
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "the Rust target {target} is not installed and `rustup target add {target}` failed"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ansi_is_stripped() {
        assert_eq!(
            strip_ansi("\x1b[1m\x1b[32m   Compiling\x1b[0m foo"),
            "   Compiling foo"
        );
        assert_eq!(strip_ansi("plain"), "plain");
    }
}
