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
//!
//! Launchers made for Linux guests put Linux kernel parameters on the line
//! too (urunc's `linux` type: `panic=-1 console=ttyS0 ip=... ENV...
//! init=APP -- ARGS`). Unquoted `console=`, `panic=`, `init=`, `rdinit=`,
//! `root=`, `rootfstype=`, `rootflags=`, `earlyprintk=` and `loglevel=`
//! before `--` are therefore not environment entries but ignored, and
//! `ip=CLIENT:SERVER:GATEWAY:NETMASK:HOST:DEVICE:AUTOCONF[:DNS0[:DNS1]]`
//! (Linux's static form) becomes the network options `UNIKERNEL_IP`,
//! `UNIKERNEL_GATEWAY` and `UNIKERNEL_DNS`, unless the line sets those
//! itself.

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
    let mut from_ip: Vec<String> = Vec::new();
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
            None if !literal && is_linux_param(&tok) => match tok.strip_prefix("ip=") {
                Some(v) => match linux_ip(v) {
                    Some(opts) => from_ip.extend(opts),
                    None => cl.ignored.push(tok),
                },
                None => cl.ignored.push(tok),
            },
            None if tok.find('=').is_some_and(|i| i > 0) => cl.env.push(tok),
            None => cl.ignored.push(tok),
        }
    }
    for o in from_ip {
        let key = o.split('=').next().unwrap_or("");
        if !cl.options.iter().any(|e| e.split('=').next() == Some(key)) {
            cl.options.push(o);
        }
    }
    cl.args = args;
    cl
}

/// Is `tok` one of the Linux kernel parameters a launcher may add
/// ([`unikernel_image::options::LINUX_PARAMS`])?
fn is_linux_param(tok: &str) -> bool {
    tok.split_once('=')
        .is_some_and(|(k, _)| unikernel_image::options::LINUX_PARAMS.contains(&k))
}

/// The options for Linux's static `ip=` value, or None for the forms that
/// mean DHCP or nothing (`dhcp`, `off`, ...) and for one that does not
/// parse.
fn linux_ip(v: &str) -> Option<Vec<String>> {
    use core::net::Ipv4Addr;
    let f: Vec<&str> = v.split(':').collect();
    let client: Ipv4Addr = f.first()?.parse().ok()?;
    let field = |i: usize| f.get(i).copied().filter(|s| !s.is_empty());
    let prefix = match field(3) {
        Some(m) => {
            let bits = u32::from(m.parse::<Ipv4Addr>().ok()?);
            // A netmask is ones then zeros.
            if bits.leading_ones() + bits.trailing_zeros() != 32 && bits != 0 {
                return None;
            }
            bits.leading_ones()
        }
        // Linux's default: the address's class.
        None => match client.octets()[0] {
            0..=127 => 8,
            128..=191 => 16,
            _ => 24,
        },
    };
    let mut out = alloc::vec![alloc::format!("UNIKERNEL_IP={client}/{prefix}")];
    if let Some(g) = field(2) {
        let g: Ipv4Addr = g.parse().ok()?;
        out.push(alloc::format!("UNIKERNEL_GATEWAY={g}"));
    }
    let dns: Vec<Ipv4Addr> = [field(7), field(8)]
        .into_iter()
        .flatten()
        .map(|d| d.parse().ok())
        .collect::<Option<_>>()?;
    if !dns.is_empty() {
        let list: Vec<String> = dns.iter().map(|d| alloc::format!("{d}")).collect();
        out.push(alloc::format!("UNIKERNEL_DNS={}", list.join(",")));
    }
    Some(out)
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

    /// The line urunc's `linux` type writes (pkg/unikontainers/unikernels/linux.go).
    #[test]
    fn a_urunc_linux_line() {
        let c = parse(
            "panic=-1 console=ttyS0 ip=10.0.2.15::10.0.2.2:255.255.255.0:urunc:eth0:off \
             URUNIT_DEFROUTE=1 GREETING=hi init=/unikernel/probe -- args x",
        );
        assert_eq!(c.env, v(&["URUNIT_DEFROUTE=1", "GREETING=hi"]));
        assert_eq!(c.args, Some(v(&["args", "x"])));
        assert_eq!(
            c.options,
            v(&["UNIKERNEL_IP=10.0.2.15/24", "UNIKERNEL_GATEWAY=10.0.2.2"])
        );
        assert_eq!(
            c.ignored,
            v(&["panic=-1", "console=ttyS0", "init=/unikernel/probe"])
        );
        assert_eq!(c.option("IP"), Some("10.0.2.15/24"));
    }

    #[test]
    fn linux_ip_forms() {
        let o = |s: &str| parse(s).options;
        // The line's own options win over ip=, wherever they stand.
        assert_eq!(
            o("ip=10.0.0.2:::255.255.0.0::: UNIKERNEL_IP=10.9.9.9/8"),
            v(&["UNIKERNEL_IP=10.9.9.9/8"])
        );
        assert_eq!(
            o("ip=192.168.1.5::192.168.1.1::h:eth0:off:1.1.1.1:8.8.8.8"),
            v(&[
                "UNIKERNEL_IP=192.168.1.5/24",
                "UNIKERNEL_GATEWAY=192.168.1.1",
                "UNIKERNEL_DNS=1.1.1.1,8.8.8.8"
            ])
        );
        assert_eq!(o("ip=172.16.0.9"), v(&["UNIKERNEL_IP=172.16.0.9/16"]));
        for dhcp in [
            "ip=dhcp",
            "ip=off",
            "ip=10.0.0.2::x",
            "ip=10.0.0.2:::255.0.255.0",
        ] {
            let c = parse(dhcp);
            assert!(c.options.is_empty(), "{dhcp}: {:?}", c.options);
            assert_eq!(c.ignored, v(&[dhcp]));
        }
        // Quoted, or after --, they are the app's.
        let c = parse("\"console=x\" -- init=y");
        assert_eq!(c.env, v(&["console=x"]));
        assert_eq!(c.args, Some(v(&["init=y"])));
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
        let c = parse("K=1 noise =x -- a");
        assert_eq!(c.env, v(&["K=1"]));
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
