//! Addressing: the runtime options that configure the link (static
//! address, gateway, DNS servers; DHCPv4 when no static IPv4 address is
//! given), and the files musl's resolver reads, synthesized from it.
//!
//! Options (`KEY=VALUE`, from the image's manifest or the command line):
//! `UNIKERNEL_IP=10.0.0.2/24` (IPv4 or IPv6, repeatable as a comma list),
//! `UNIKERNEL_GATEWAY=10.0.0.1` (comma list: one per family),
//! `UNIKERNEL_DNS=10.0.0.1,2001:db8::1`, `UNIKERNEL_VERBOSE=1`.

use crate::stack::Stack;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;
use core::str::FromStr;
use smoltcp::wire::{IpAddress, Ipv4Address, Ipv4Cidr, Ipv6Address, Ipv6Cidr};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetConfig {
    pub static_v4: Option<Ipv4Cidr>,
    pub static_v6: Option<Ipv6Cidr>,
    pub gateway_v4: Option<Ipv4Address>,
    pub gateway_v6: Option<Ipv6Address>,
    pub dns: Vec<IpAddress>,
    /// The DNS servers came from the DHCP lease (and follow it).
    pub dns_from_dhcp: bool,
    /// The current DHCP lease: address and router.
    pub dhcp_v4: Option<(Ipv4Cidr, Option<Ipv4Address>)>,
}

/// A bad option value: the message names the option.
pub type ConfigError = String;

fn parse_cidr(s: &str) -> Result<(IpAddress, u8), ConfigError> {
    let (a, p) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let addr = IpAddress::from_str(a).map_err(|_| format!("{s:?} is not an IP address"))?;
    let max = match addr {
        IpAddress::Ipv4(_) => 32,
        IpAddress::Ipv6(_) => 128,
    };
    let prefix = match p {
        Some(p) => p
            .parse::<u8>()
            .ok()
            .filter(|v| *v <= max)
            .ok_or_else(|| format!("{s:?}: prefix length must be 0..={max}"))?,
        None => max,
    };
    Ok((addr, prefix))
}

impl NetConfig {
    /// Build the configuration from `get(KEY)`.
    pub fn from_options(get: impl Fn(&str) -> Option<String>) -> Result<NetConfig, ConfigError> {
        let mut c = NetConfig::default();
        if let Some(v) = get("UNIKERNEL_IP") {
            for item in v.split(',').filter(|s| !s.is_empty()) {
                match parse_cidr(item).map_err(|e| format!("UNIKERNEL_IP: {e}"))? {
                    (IpAddress::Ipv4(a), p) => c.static_v4 = Some(Ipv4Cidr::new(a, p)),
                    (IpAddress::Ipv6(a), p) => c.static_v6 = Some(Ipv6Cidr::new(a, p)),
                }
            }
        }
        if let Some(v) = get("UNIKERNEL_GATEWAY") {
            for item in v.split(',').filter(|s| !s.is_empty()) {
                match IpAddress::from_str(item) {
                    Ok(IpAddress::Ipv4(a)) => c.gateway_v4 = Some(a),
                    Ok(IpAddress::Ipv6(a)) => c.gateway_v6 = Some(a),
                    Err(_) => {
                        return Err(format!("UNIKERNEL_GATEWAY: {item:?} is not an IP address"))
                    }
                }
            }
        }
        if let Some(v) = get("UNIKERNEL_DNS") {
            for item in v.split(',').filter(|s| !s.is_empty()) {
                let a = IpAddress::from_str(item)
                    .map_err(|_| format!("UNIKERNEL_DNS: {item:?} is not an IP address"))?;
                c.dns.push(a);
            }
        }
        Ok(c)
    }
}

/// `/etc/resolv.conf` for these servers.
pub fn resolv_conf(c: &NetConfig) -> String {
    let mut s = String::from("# written by the unikernel's network component\n");
    for d in &c.dns {
        let _ = writeln!(s, "nameserver {d}");
    }
    s
}

/// `/etc/hosts`: localhost for both families.
pub fn hosts() -> String {
    String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
}

/// Put `/etc/resolv.conf` and `/etc/hosts` in the root tree.
pub fn publish(c: &NetConfig) {
    unikernel_runtime::fs::tree::set_etc_file("resolv.conf", resolv_conf(c).into_bytes());
    unikernel_runtime::fs::tree::set_etc_file("hosts", hosts().into_bytes());
}

/// Print the link's addresses once they are known (with
/// `UNIKERNEL_VERBOSE=1`, and always when tracing system calls).
pub fn announce(s: &Stack, how: &str) {
    if !(s.verbose || unikernel_runtime::syscall::tracing()) {
        return;
    }
    let Some((net, e)) = s.eth.as_ref() else {
        unikernel_runtime::kprintln!("unikernel: net: loopback only (127.0.0.1, ::1)");
        return;
    };
    let mut line = String::new();
    for a in net.iface.ip_addrs() {
        let _ = write!(line, " {a}");
    }
    let gw = net
        .iface
        .routes()
        .get_default_ipv4_route()
        .map(|r| format!(" gateway {}", r.via_router))
        .unwrap_or_default();
    let mut dns = String::new();
    for d in &s.config.dns {
        let _ = write!(dns, " {d}");
    }
    let m = e.dev.mac();
    unikernel_runtime::kprintln!(
        "unikernel: net: {} {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x} mtu {} ({how}):{line}{gw}{}{dns}",
        e.dev.name(),
        m[0],
        m[1],
        m[2],
        m[3],
        m[4],
        m[5],
        e.dev.mtu(),
        if dns.is_empty() { "" } else { " dns" }
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    fn opts<'a>(kv: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| kv.iter().find(|(a, _)| *a == k).map(|(_, v)| v.to_string())
    }

    #[test]
    fn parses_options() {
        let c = NetConfig::from_options(opts(&[
            ("UNIKERNEL_IP", "10.0.0.2/24,fd00::2/64"),
            ("UNIKERNEL_GATEWAY", "10.0.0.1"),
            ("UNIKERNEL_DNS", "10.0.0.1,fd00::1"),
        ]))
        .unwrap();
        assert_eq!(
            c.static_v4,
            Some(Ipv4Cidr::new(Ipv4Address::new(10, 0, 0, 2), 24))
        );
        assert_eq!(c.static_v6.map(|v| v.prefix_len()), Some(64));
        assert_eq!(c.gateway_v4, Some(Ipv4Address::new(10, 0, 0, 1)));
        assert_eq!(c.dns.len(), 2);
        assert!(resolv_conf(&c).contains("nameserver 10.0.0.1\nnameserver fd00::1\n"));
        assert!(NetConfig::from_options(opts(&[("UNIKERNEL_IP", "10.0.0.2/33")])).is_err());
        assert!(NetConfig::from_options(opts(&[("UNIKERNEL_IP", "banana")])).is_err());
        assert!(NetConfig::from_options(opts(&[("UNIKERNEL_DNS", "1.2.3")])).is_err());
        assert_eq!(
            NetConfig::from_options(opts(&[])).unwrap(),
            NetConfig::default()
        );
    }
}
