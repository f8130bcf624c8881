//! The guest command line, host side: environment overrides and arguments
//! encoded as one string, in the format every platform with a command line
//! shares (kvm's PVH command line now, Xen's later). The guest decoder is
//! `runtime/src/cmdline.rs`; the format is specified in `docs/kvm.md`.
//!
//! ```text
//! KEY=VALUE ... -- ARG ...
//! ```
//!
//! Tokens are separated by spaces. Inside a token, `"` starts or ends a
//! quoted part (in which spaces are ordinary characters) and `\` makes the
//! next character ordinary (`\"`, `\\`, `\ `); neither is part of the value.
//! The empty string is `""`. An unquoted token that starts with
//! `virtio_mmio.device=` belongs to the VMM (QEMU microvm and Firecracker
//! append them, possibly after the arguments) and is neither env nor an
//! argument, so the encoder quotes any value that would look like one. The
//! first unquoted `--` ends the environment; everything after it is argv[1..]
//! and replaces the image's default arguments. Without `--` the defaults stay.
//! Environment entries add to the image's environment or replace entries
//! with the same key. Keys starting with `UNIKERNEL_` are options for the
//! platform (e.g. `UNIKERNEL_VERBOSE=1`), not given to the app.

/// The prefix of the tokens the VMM adds for virtio-mmio devices.
pub const VIRTIO_MMIO_PREFIX: &str = "virtio_mmio.device=";

/// The platform option that turns on boot diagnostics (virtio devices, TSC
/// stamps); always the first token when given.
pub const VERBOSE_TOKEN: &str = "UNIKERNEL_VERBOSE=1";

/// The platform option for strace-style system call tracing.
pub const TRACE_SYSCALLS_TOKEN: &str = "UNIKERNEL_TRACE_SYSCALLS=1";

/// What goes on a command line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommandLine {
    /// Platform options (`UNIKERNEL_*=...`), first.
    pub options: Vec<String>,
    /// `KEY=VALUE` environment entries (added to / replacing the image's).
    pub env: Vec<String>,
    /// `Some`: argv[1..], replacing the image's defaults (may be empty);
    /// `None`: keep the defaults.
    pub args: Option<Vec<String>>,
}

impl CommandLine {
    /// The encoded command line.
    pub fn encode(&self) -> String {
        let mut tokens: Vec<String> = Vec::new();
        for entry in self.options.iter().chain(&self.env) {
            tokens.push(encode_env(entry));
        }
        if let Some(args) = &self.args {
            tokens.push("--".to_string());
            tokens.extend(args.iter().map(|a| encode_arg(a)));
        }
        tokens.join(" ")
    }
}

/// `KEY=VALUE`: the key escaped character by character (so that the
/// token never starts with a quote, nor looks like a VMM token), the value
/// quoted when needed.
fn encode_env(entry: &str) -> String {
    let (key, value) = entry.split_once('=').unwrap_or((entry, ""));
    let mut out = String::new();
    // A key the guest would take for the VMM's, or for a Linux kernel
    // parameter, is escaped: an escaped token is always an assignment.
    let key_is_vmm_like = format!("{key}=").starts_with(VIRTIO_MMIO_PREFIX)
        || unikernel_image::options::LINUX_PARAMS.contains(&key);
    for (i, c) in key.chars().enumerate() {
        if is_special(c) || (i == 0 && (key_is_vmm_like || key == "--")) {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('=');
    if value.is_empty() {
        // `K=` is already unambiguous; `K=""` says the same.
        return out;
    }
    out.push_str(&encode_value(value, false));
    out
}

/// One argument: as is when that is unambiguous, else quoted.
fn encode_arg(arg: &str) -> String {
    let must_quote = arg.is_empty() || arg == "--" || arg.starts_with(VIRTIO_MMIO_PREFIX);
    encode_value(arg, must_quote)
}

fn encode_value(v: &str, must_quote: bool) -> String {
    if !must_quote && !v.chars().any(is_special) {
        return v.to_string();
    }
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Characters that cannot appear bare in a token: the separator, the
/// quote, the escape, and other whitespace (kept inside quotes, so that no
/// boot loader or VMM splits or trims there).
fn is_special(c: char) -> bool {
    c == '"' || c == '\\' || c.is_whitespace() || c.is_control()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A decoder written from the spec (the guest's is
    /// `runtime/src/cmdline.rs`): (platform tokens, env, args).
    type Decoded = (Vec<String>, Vec<String>, Option<Vec<String>>);

    fn decode(line: &str) -> Decoded {
        // Raw tokens: (value, was any part quoted or escaped at its start).
        let mut tokens: Vec<(String, bool)> = Vec::new();
        let mut chars = line.chars().peekable();
        loop {
            while chars.peek() == Some(&' ') {
                chars.next();
            }
            if chars.peek().is_none() {
                break;
            }
            let mut value = String::new();
            let mut plain_start = true;
            let mut in_quotes = false;
            let mut first = true;
            while let Some(&c) = chars.peek() {
                if c == ' ' && !in_quotes {
                    break;
                }
                chars.next();
                match c {
                    '"' => {
                        in_quotes = !in_quotes;
                        if first {
                            plain_start = false;
                        }
                    }
                    '\\' => {
                        if first {
                            plain_start = false;
                        }
                        if let Some(n) = chars.next() {
                            value.push(n);
                        }
                    }
                    c => value.push(c),
                }
                first = false;
            }
            tokens.push((value, plain_start));
        }
        let (mut vmm, mut env, mut args) = (Vec::new(), Vec::new(), None::<Vec<String>>);
        for (value, plain) in tokens {
            if plain && value.starts_with(VIRTIO_MMIO_PREFIX) {
                vmm.push(value);
            } else if let Some(a) = args.as_mut() {
                a.push(value);
            } else if plain && value == "--" {
                args = Some(Vec::new());
            } else {
                env.push(value);
            }
        }
        (vmm, env, args)
    }

    fn line(env: &[&str], args: Option<&[&str]>) -> CommandLine {
        CommandLine {
            options: vec![],
            env: env.iter().map(|s| s.to_string()).collect(),
            args: args.map(|a| a.iter().map(|s| s.to_string()).collect()),
        }
    }

    fn round_trip(env: &[&str], args: Option<&[&str]>) -> String {
        let l = line(env, args);
        let text = l.encode();
        let (vmm, denv, dargs) = decode(&text);
        assert!(vmm.is_empty(), "{text}: {vmm:?}");
        assert_eq!(denv, l.env, "{text}");
        assert_eq!(dargs, l.args, "{text}");
        // The VMM appends its tokens; they change nothing for the app.
        let appended = format!("{text} virtio_mmio.device=4K@0xd0000000:5");
        let (vmm, denv2, dargs2) = decode(&appended);
        assert_eq!(vmm, ["virtio_mmio.device=4K@0xd0000000:5"]);
        assert_eq!((denv2, dargs2), (l.env.clone(), l.args.clone()));
        text
    }

    #[test]
    fn plain_values_stay_readable() {
        assert_eq!(
            round_trip(&["A=1", "B=x"], Some(&["a", "b"])),
            "A=1 B=x -- a b"
        );
        assert_eq!(round_trip(&[], None), "");
        assert_eq!(round_trip(&["A=1"], None), "A=1");
        assert_eq!(round_trip(&[], Some(&[])), "--");
    }

    #[test]
    fn env_named_like_a_linux_parameter_stays_env() {
        assert_eq!(
            round_trip(&["console=x", "ip=1", "CONSOLE=y"], Some(&["init=z"])),
            r"\console=x \ip=1 CONSOLE=y -- init=z"
        );
    }

    #[test]
    fn the_example_of_the_spec() {
        assert_eq!(
            round_trip(&["GREETING=hello world"], Some(&["a b", "c\"d", ""])),
            r#"GREETING="hello world" -- "a b" "c\"d" """#
        );
    }

    #[test]
    fn awkward_values_round_trip() {
        let env = [
            "SPACES=  two  leading",
            "QUOTE=say \"hi\"",
            "BACKSLASH=C:\\dir\\",
            "EQUALS=a=b=c",
            "EMPTY=",
            "UTF8=grüße 日本",
            "NEWLINE=line1\nline2",
            "TAB=a\tb",
            "TRAILING=x\\",
        ];
        let args = [
            "",
            "--",
            "-",
            "a b",
            "\"",
            "\\",
            "\\\"",
            "x=y",
            "K=V",
            "virtio_mmio.device=4K@0xd0000000:5",
            "ünïcödé",
            " ",
            "--flag=\"v\"",
        ];
        let text = round_trip(&env, Some(&args));
        assert!(text.contains(r#"EQUALS=a=b=c"#), "{text}");
        assert!(text.contains(r#"EMPTY= "#), "{text}");
        assert!(text.contains(r#" "--" "#), "{text}");
        assert!(
            text.contains(r#" "virtio_mmio.device=4K@0xd0000000:5" "#),
            "{text}"
        );
        assert!(text.contains(" ünïcödé "), "{text}");
        assert!(!text.contains('\n') || text.contains("\"line1\nline2\""));
    }

    #[test]
    fn keys_that_could_be_misread() {
        round_trip(&["virtio_mmio.device=x"], Some(&["a"]));
        round_trip(&["--=x"], None);
        round_trip(&["A B=c"], None);
        round_trip(&["\"Q=c"], None);
    }

    #[test]
    fn options_come_first() {
        let mut l = line(&["A=1"], Some(&["x"]));
        l.options.push(VERBOSE_TOKEN.to_string());
        assert_eq!(l.encode(), "UNIKERNEL_VERBOSE=1 A=1 -- x");
    }
}
