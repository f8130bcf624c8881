//! Runtime options: `UNIKERNEL_<NAME>=VALUE` tokens the runtime and its
//! components read at boot (`unikernel_runtime::option`). The manifest
//! carries the image's defaults (e.g. the network configuration from
//! `[package.metadata.unikernel.net]`); the platform's command line (kvm,
//! xen) or the monitor (`unikernel-hvt --env UNIKERNEL_...=`) overrides them
//! by key.
//!
//! The keys the image can carry defaults for, and their values:
//!
//! | key | value | example |
//! |---|---|---|
//! | [`IP`] | address/prefix length, IPv4 or IPv6 | `10.0.0.2/24`, `fd00::2/64` |
//! | [`GATEWAY`] | an address | `10.0.0.1` |
//! | [`DNS`] | addresses, comma-separated | `10.0.0.1,9.9.9.9` |
//! | [`TMP_SIZE`] | bytes, optional `K`/`M`/`G` suffix | `64M` |
//!
//! No `UNIKERNEL_IP` means DHCP. Other `UNIKERNEL_*` keys (such as
//! [`VERBOSE`]) are not checked here.
use core::net::IpAddr;

/// Linux kernel parameters that launchers made for Linux guests put on a
/// kernel command line (urunc's `linux` type writes `panic=-1
/// console=ttyS0 ip=... init=APP`). Unquoted before `--`, the guest's
/// command line takes them for no environment entry
/// (`unikernel_runtime::cmdline`; `ip=` becomes the network options), so
/// the builder's encoder escapes an environment key with one of these
/// names.
pub const LINUX_PARAMS: &[&str] = &[
    "console",
    "panic",
    "init",
    "rdinit",
    "root",
    "rootfstype",
    "rootflags",
    "earlyprintk",
    "loglevel",
    "ip",
];

/// Every option key starts with this.
pub const PREFIX: &str = "UNIKERNEL_";
/// The interface address with its prefix length (absent: DHCP).
pub const IP: &str = "UNIKERNEL_IP";
/// The default gateway.
pub const GATEWAY: &str = "UNIKERNEL_GATEWAY";
/// DNS servers, comma-separated.
pub const DNS: &str = "UNIKERNEL_DNS";
/// The size limit of `/tmp` in bytes, with an optional `K`, `M` or `G`
/// suffix (powers of 1024); default a quarter of guest memory.
pub const TMP_SIZE: &str = "UNIKERNEL_TMP_SIZE";
/// `1`: the runtime prints its boot diagnostics (among them the options).
pub const VERBOSE: &str = "UNIKERNEL_VERBOSE";
/// `1`: the runtime panics at boot, before the app starts: a check of the
/// crash path end to end (the crash line, its report, exit 253).
pub const PANIC: &str = "UNIKERNEL_PANIC";

/// Why an option token or value is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptionError {
    /// Not `KEY=VALUE`.
    NotAssignment,
    /// The key does not start with `UNIKERNEL_` or has nothing after it.
    Key,
    /// Not an IPv4 or IPv6 address.
    Address,
    /// `UNIKERNEL_IP` without `/PREFIX`.
    MissingPrefix,
    /// A prefix length that is not a number within the address's width.
    PrefixLength,
    /// An empty list of addresses (or an empty entry in it).
    EmptyEntry,
    /// Not a size (digits with an optional K, M or G suffix).
    Size,
}

impl core::fmt::Display for OptionError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            OptionError::NotAssignment => "an option is written KEY=VALUE",
            OptionError::Key => "option keys are UNIKERNEL_ followed by a name",
            OptionError::Address => {
                "not an IP address (write an IPv4 address like 10.0.0.1 or an IPv6 address like fd00::1)"
            }
            OptionError::MissingPrefix => {
                "the address needs a prefix length (e.g. \"10.0.0.2/24\")"
            }
            OptionError::PrefixLength => {
                "the prefix length must be 0-32 for IPv4 and 0-128 for IPv6"
            }
            OptionError::EmptyEntry => "the list has an empty entry",
            OptionError::Size => {
                "not a size (write bytes with an optional K, M or G suffix, e.g. 64M)"
            }
        })
    }
}

#[cfg(any(feature = "std", test))]
impl std::error::Error for OptionError {}

/// An address (IPv4 or IPv6).
pub fn parse_addr(s: &str) -> Result<IpAddr, OptionError> {
    s.parse().map_err(|_| OptionError::Address)
}

/// `ADDRESS/PREFIX` (the [`IP`] option).
pub fn parse_cidr(s: &str) -> Result<(IpAddr, u8), OptionError> {
    let (addr, prefix) = s.split_once('/').ok_or(OptionError::MissingPrefix)?;
    let addr = parse_addr(addr)?;
    let width = if addr.is_ipv4() { 32 } else { 128 };
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return Err(OptionError::PrefixLength);
    }
    match prefix.parse::<u8>() {
        Ok(p) if p <= width => Ok((addr, p)),
        _ => Err(OptionError::PrefixLength),
    }
}

/// The addresses of a comma-separated list (the [`DNS`] option), in order.
pub fn parse_addr_list(s: &str) -> impl Iterator<Item = Result<IpAddr, OptionError>> + '_ {
    s.split(',').map(|a| match a {
        "" => Err(OptionError::EmptyEntry),
        a => parse_addr(a),
    })
}

/// A size in bytes: digits with an optional `K`, `M` or `G` suffix
/// (powers of 1024, either case).
pub fn parse_size(s: &str) -> Result<u64, OptionError> {
    let shift = match s.as_bytes().last() {
        Some(b'k' | b'K') => 10,
        Some(b'm' | b'M') => 20,
        Some(b'g' | b'G') => 30,
        _ => 0,
    };
    let digits = if shift == 0 {
        s
    } else {
        s.get(..s.len() - 1).unwrap_or("")
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(OptionError::Size);
    }
    let n: u64 = digits.parse().map_err(|_| OptionError::Size)?;
    n.checked_mul(1 << shift).ok_or(OptionError::Size)
}

/// Check a value for `key`: the keys of the table above are parsed, other
/// keys are accepted as they are.
pub fn check_value(key: &str, value: &str) -> Result<(), OptionError> {
    match key {
        IP => parse_cidr(value).map(|_| ()),
        GATEWAY => parse_addr(value).map(|_| ()),
        DNS => parse_addr_list(value).try_for_each(|a| a.map(|_| ())),
        TMP_SIZE => parse_size(value).map(|_| ()),
        _ => Ok(()),
    }
}

/// Split and check one `UNIKERNEL_<NAME>=VALUE` token.
pub fn check_token(token: &str) -> Result<(&str, &str), OptionError> {
    let (key, value) = token.split_once('=').ok_or(OptionError::NotAssignment)?;
    if key.len() <= PREFIX.len() || !key.starts_with(PREFIX) {
        return Err(OptionError::Key);
    }
    check_value(key, value)?;
    Ok((key, value))
}

/// The value of `key` among `KEY=VALUE` tokens (the last one wins).
pub fn lookup<'a, S: AsRef<str>>(options: &'a [S], key: &str) -> Option<&'a str> {
    options.iter().rev().find_map(|o| {
        let (k, v) = o.as_ref().split_once('=')?;
        (k == key).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert!(parse_addr("10.0.0.1").unwrap().is_ipv4());
        assert!(parse_addr("fd00::1").unwrap().is_ipv6());
        for bad in [
            "",
            "10.0.0",
            "10.0.0.256",
            "10.0.0.1 ",
            "example.com",
            "fd00:::1",
        ] {
            assert_eq!(parse_addr(bad), Err(OptionError::Address), "{bad:?}");
        }
    }

    #[test]
    fn cidrs() {
        assert_eq!(
            parse_cidr("10.0.0.2/24"),
            Ok(("10.0.0.2".parse().unwrap(), 24))
        );
        assert_eq!(parse_cidr("fd00::2/128").unwrap().1, 128);
        assert_eq!(parse_cidr("0.0.0.0/0").unwrap().1, 0);
        assert_eq!(parse_cidr("10.0.0.2"), Err(OptionError::MissingPrefix));
        assert_eq!(parse_cidr("10.0.0.2/33"), Err(OptionError::PrefixLength));
        assert_eq!(parse_cidr("fd00::2/129"), Err(OptionError::PrefixLength));
        assert_eq!(parse_cidr("10.0.0.2/"), Err(OptionError::PrefixLength));
        assert_eq!(parse_cidr("10.0.0.2/+8"), Err(OptionError::PrefixLength));
        assert_eq!(parse_cidr("10.0.0.2/999"), Err(OptionError::PrefixLength));
        assert_eq!(parse_cidr("10.0.0/8"), Err(OptionError::Address));
    }

    #[test]
    fn tokens() {
        assert_eq!(
            check_token("UNIKERNEL_DNS=10.0.0.1,9.9.9.9,fd00::53"),
            Ok((DNS, "10.0.0.1,9.9.9.9,fd00::53"))
        );
        assert_eq!(check_token("UNIKERNEL_VERBOSE=1"), Ok((VERBOSE, "1")));
        assert_eq!(check_token("UNIKERNEL_IP"), Err(OptionError::NotAssignment));
        assert_eq!(check_token("IP=10.0.0.2/24"), Err(OptionError::Key));
        assert_eq!(check_token("UNIKERNEL_=1"), Err(OptionError::Key));
        assert_eq!(
            check_token("UNIKERNEL_DNS=10.0.0.1,,9.9.9.9"),
            Err(OptionError::EmptyEntry)
        );
        assert_eq!(check_token("UNIKERNEL_DNS="), Err(OptionError::EmptyEntry));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("3m"), Ok(3 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("G"), Err(OptionError::Size));
        assert_eq!(parse_size("-1"), Err(OptionError::Size));
        assert_eq!(parse_size("99999999999999999999G"), Err(OptionError::Size));
        assert_eq!(check_token("UNIKERNEL_TMP_SIZE=1x"), Err(OptionError::Size));
        assert_eq!(
            check_token("UNIKERNEL_GATEWAY=10.0.0.1/24"),
            Err(OptionError::Address)
        );
    }

    #[test]
    fn lookups() {
        let o = [
            "UNIKERNEL_IP=10.0.0.2/24",
            "UNIKERNEL_IPV=x",
            "UNIKERNEL_IP=10.0.0.3/24",
        ];
        assert_eq!(lookup(&o, IP), Some("10.0.0.3/24"));
        assert_eq!(lookup(&o, "UNIKERNEL_IPV"), Some("x"));
        assert_eq!(lookup(&o, GATEWAY), None);
    }
}
