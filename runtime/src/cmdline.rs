//! The kernel command line of platforms that have one (kvm's PVH, Xen PV):
//! `KEY=VALUE ... -- ARG ...` — environment assignments, then a `--` token,
//! then the app's argv[1..].
//!
//! Tokens are separated by spaces (or tabs/newlines). Within a token,
//! double quotes group (`"a b"` is one token `a b`; `""` is the empty
//! token), and a backslash takes the next character literally (`\"`,
//! `\\`, `\ `). Tokens of the form `virtio_mmio.device=...` anywhere are
//! the platform's (QEMU microvm and Firecracker append them), and tokens
//! `UNIKERNEL_*=...` before `--` are options of the runtime; neither
//! reaches the app. The builder's encoder is the inverse of [`split`].

use alloc::string::String;
use alloc::vec::Vec;

/// The command line, taken apart.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommandLine {
    /// `KEY=VALUE` assignments for the app's environment.
    pub env: Vec<String>,
    /// argv[1..], if a `--` was given (None: keep the image's defaults).
    pub args: Option<Vec<String>>,
    /// `virtio_mmio.device=...` values.
    pub virtio_mmio: Vec<String>,
    /// `UNIKERNEL_*` options (e.g. `UNIKERNEL_VERBOSE=1`).
    pub options: Vec<String>,
    /// Tokens before `--` that are not assignments (ignored, reported).
    pub ignored: Vec<String>,
}

/// A token and whether any part of it was quoted or escaped (a quoted
/// `--` is an argument, not the separator).
fn split(s: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_token = false;
    let mut literal = false;
    let mut quoted = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
                in_token = true;
                literal = true;
            }
            '"' => {
                quoted = !quoted;
                in_token = true;
                literal = true;
            }
            ' ' | '\t' | '\n' | '\r' if !quoted => {
                if in_token {
                    out.push((core::mem::take(&mut cur), literal));
                }
                in_token = false;
                literal = false;
            }
            c => {
                cur.push(c);
                in_token = true;
            }
        }
    }
    if in_token {
        out.push((cur, literal));
    }
    out
}

/// Parse a command line.
pub fn parse(s: &str) -> CommandLine {
    let mut cl = CommandLine::default();
    let mut args: Option<Vec<String>> = None;
    for (tok, literal) in split(s) {
        if !literal && tok.starts_with("virtio_mmio.device=") {
            cl.virtio_mmio
                .push(tok["virtio_mmio.device=".len()..].into());
            continue;
        }
        match args.as_mut() {
            Some(a) => a.push(tok),
            None if tok == "--" && !literal => args = Some(Vec::new()),
            None if !literal && tok.starts_with("UNIKERNEL_") && tok.contains('=') => {
                cl.options.push(tok)
            }
            None if tok.find('=').is_some_and(|i| i > 0) => cl.env.push(tok),
            None => cl.ignored.push(tok),
        }
    }
    cl.args = args;
    cl
}

impl CommandLine {
    /// The value of option `UNIKERNEL_<name>`.
    pub fn option(&self, name: &str) -> Option<&str> {
        self.options.iter().find_map(|o| {
            let rest = o.strip_prefix("UNIKERNEL_")?.strip_prefix(name)?;
            rest.strip_prefix('=')
        })
    }
}

/// `base` environment with `overrides` added or replacing the same key.
pub fn merge_env(base: &[String], overrides: &[String]) -> Vec<String> {
    let key = |s: &str| String::from(s.split('=').next().unwrap_or(""));
    let mut out: Vec<String> = base.to_vec();
    for o in overrides {
        match out.iter_mut().find(|e| key(e) == key(o)) {
            Some(e) => *e = o.clone(),
            None => out.push(o.clone()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(x: &[&str]) -> Vec<String> {
        x.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn env_then_args() {
        let c = parse("A=1 B=two -- x y");
        assert_eq!(c.env, v(&["A=1", "B=two"]));
        assert_eq!(c.args, Some(v(&["x", "y"])));
    }

    #[test]
    fn awkward_values() {
        let c =
            parse(r#"GREETING="hello world" EMPTY="" EQ=a=b -- "a b" c\"d "" \\ \-\- "--" -- é"#);
        assert_eq!(c.env, v(&["GREETING=hello world", "EMPTY=", "EQ=a=b"]));
        assert_eq!(
            c.args,
            Some(v(&["a b", "c\"d", "", "\\", "--", "--", "--", "é"]))
        );
    }

    #[test]
    fn no_separator_keeps_default_args() {
        let c = parse("  K=V  ");
        assert_eq!(c.env, v(&["K=V"]));
        assert_eq!(c.args, None);
        assert_eq!(parse("").args, None);
        assert_eq!(parse("--").args, Some(vec![]));
    }

    #[test]
    fn platform_tokens_are_taken_out() {
        let c = parse("UNIKERNEL_VERBOSE=1 K=V -- a virtio_mmio.device=4K@0xd0000000:5 b \"virtio_mmio.device=x\"");
        assert_eq!(c.virtio_mmio, v(&["4K@0xd0000000:5"]));
        assert_eq!(c.options, v(&["UNIKERNEL_VERBOSE=1"]));
        assert_eq!(c.option("VERBOSE"), Some("1"));
        assert_eq!(c.option("VERB"), None);
        assert_eq!(c.args, Some(v(&["a", "b", "virtio_mmio.device=x"])));
        assert_eq!(c.env, v(&["K=V"]));
    }

    #[test]
    fn stray_tokens_are_ignored() {
        let c = parse("console=ttyS0 noise =x -- a");
        assert_eq!(c.env, v(&["console=ttyS0"]));
        assert_eq!(c.ignored, v(&["noise", "=x"]));
    }

    #[test]
    fn merging() {
        assert_eq!(
            merge_env(&v(&["A=1", "B=2"]), &v(&["B=3", "C=4"])),
            v(&["A=1", "B=3", "C=4"])
        );
    }
}
