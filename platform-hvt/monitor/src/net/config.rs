//! The network options of the command line (`--net`, `-p`, `--ip`,
//! `--gateway`, `--dns`, `--pcap`), parsed and checked.
use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::str::FromStr;

/// Where the guest's frames go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetBackend {
    /// An existing tap device (`--net tap:IFNAME`).
    Tap(String),
    /// User-mode networking through `passt` (`--net user`), rootless.
    User,
}

impl FromStr for NetBackend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "user" {
            return Ok(NetBackend::User);
        }
        match s.strip_prefix("tap:") {
            Some(name) if !name.is_empty() && name.len() < 16 && !name.contains('/') => {
                Ok(NetBackend::Tap(name.to_string()))
            }
            Some(name) => Err(format!(
                "--net tap:{name}: an interface name is 1 to 15 characters without '/'"
            )),
            None => Err(format!("--net {s:?}: expected `user` or `tap:IFNAME`")),
        }
    }
}

impl fmt::Display for NetBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetBackend::Tap(name) => write!(f, "tap:{name}"),
            NetBackend::User => f.write_str("user"),
        }
    }
}

/// A published port (`-p HOST:GUEST`, `-p udp:HOST:GUEST`, `-p tcp:HOST:GUEST`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortForward {
    pub udp: bool,
    pub host: u16,
    pub guest: u16,
}

impl FromStr for PortForward {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (udp, rest) = match s.split_once(':') {
            Some(("udp", r)) => (true, r),
            Some(("tcp", r)) => (false, r),
            _ => (false, s),
        };
        let bad = || {
            format!(
                "-p {s:?}: expected HOST:GUEST, tcp:HOST:GUEST or udp:HOST:GUEST (ports 1-65535)"
            )
        };
        let (h, g) = rest.split_once(':').ok_or_else(bad)?;
        let port = |p: &str| p.parse::<u16>().ok().filter(|&n| n != 0).ok_or_else(bad);
        Ok(PortForward {
            udp,
            host: port(h)?,
            guest: port(g)?,
        })
    }
}

impl fmt::Display for PortForward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = if self.udp { "udp" } else { "tcp" };
        write!(f, "{proto}:{}:{}", self.host, self.guest)
    }
}

/// The attached network device, as the command line asks for it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetConfig {
    /// `None`: no device (the guest has loopback only).
    pub backend: Option<NetBackend>,
    /// Published ports (only with `--net user`).
    pub ports: Vec<PortForward>,
    /// Write every frame to this pcap file.
    pub pcap: Option<PathBuf>,
}

impl NetConfig {
    /// Checks the combination (ports need `--net user`).
    pub fn validate(&self) -> Result<(), String> {
        match (&self.backend, self.ports.first()) {
            (Some(NetBackend::User), _) | (_, None) => {}
            (Some(NetBackend::Tap(_)), Some(p)) => {
                return Err(format!(
                    "-p {p}: publishing ports needs --net user (a tap device is reached directly)"
                ))
            }
            (None, Some(p)) => return Err(format!("-p {p}: publishing ports needs --net user")),
        }
        if self.pcap.is_some() && self.backend.is_none() {
            return Err("--pcap needs a network device (--net user or --net tap:IF)".into());
        }
        Ok(())
    }
}

/// An IPv4 address with its prefix length (`--ip 10.0.0.2/24`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl FromStr for Ipv4Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("--ip {s:?}: expected an IPv4 address with a prefix length, like 10.0.2.15/24")
        };
        let (a, p) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = a.parse().map_err(|_| bad())?;
        let prefix: u8 = p
            .parse()
            .ok()
            .filter(|&n| (1..=32).contains(&n))
            .ok_or_else(bad)?;
        if addr.is_unspecified() || addr.is_broadcast() || addr.is_multicast() {
            return Err(format!("--ip {s:?}: {addr} cannot be a host's address"));
        }
        Ok(Ipv4Cidr { addr, prefix })
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A unicast IPv4 address given to `--gateway` or `--dns`.
pub fn parse_host_addr(flag: &str, s: &str) -> Result<Ipv4Addr, String> {
    let addr: Ipv4Addr = s
        .parse()
        .map_err(|_| format!("{flag} {s:?}: expected an IPv4 address, like 10.0.2.2"))?;
    if addr.is_unspecified() || addr.is_broadcast() || addr.is_multicast() {
        return Err(format!("{flag} {s:?}: {addr} cannot be a host's address"));
    }
    Ok(addr)
}

/// A static network configuration for the guest (`--ip`, `--gateway`,
/// `--dns`); without `--ip` the guest uses DHCP.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetOptions {
    pub ip: Option<Ipv4Cidr>,
    pub gateway: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
}

impl NetOptions {
    /// Checks the combination: the gateway must be inside the `--ip` subnet.
    pub fn validate(&self) -> Result<(), String> {
        if let (Some(ip), Some(gw)) = (self.ip, self.gateway) {
            let mask = u32::MAX.checked_shl(32 - u32::from(ip.prefix)).unwrap_or(0);
            if u32::from(ip.addr) & mask != u32::from(gw) & mask {
                return Err(format!("--gateway {gw} is not in the subnet of --ip {ip}"));
            }
            if ip.addr == gw {
                return Err(format!("--gateway {gw} is the guest's own --ip"));
            }
        }
        if self.gateway.is_some() && self.ip.is_none() {
            return Err("--gateway needs --ip (without --ip the guest asks DHCP)".into());
        }
        Ok(())
    }

    /// The runtime options these become (`UNIKERNEL_IP=10.0.2.15/24`,
    /// `UNIKERNEL_GATEWAY=10.0.2.2`, `UNIKERNEL_DNS=1.1.1.1,9.9.9.9`), to be
    /// joined with spaces into `BootInfo::options`.
    pub fn tokens(&self) -> Vec<String> {
        let mut t = Vec::new();
        if let Some(ip) = self.ip {
            t.push(format!("UNIKERNEL_IP={ip}"));
        }
        if let Some(gw) = self.gateway {
            t.push(format!("UNIKERNEL_GATEWAY={gw}"));
        }
        if !self.dns.is_empty() {
            let list: Vec<String> = self.dns.iter().map(|d| d.to_string()).collect();
            t.push(format!("UNIKERNEL_DNS={}", list.join(",")));
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_parse() {
        assert_eq!("user".parse(), Ok(NetBackend::User));
        assert_eq!("tap:tap0".parse(), Ok(NetBackend::Tap("tap0".into())));
        assert!("tap:".parse::<NetBackend>().is_err());
        assert!("tap:0123456789abcdef".parse::<NetBackend>().is_err());
        assert!("bridge".parse::<NetBackend>().is_err());
    }

    #[test]
    fn ports_parse() {
        let p: PortForward = "8080:80".parse().unwrap();
        assert_eq!((p.udp, p.host, p.guest), (false, 8080, 80));
        let p: PortForward = "udp:5353:53".parse().unwrap();
        assert_eq!((p.udp, p.host, p.guest), (true, 5353, 53));
        assert_eq!(
            "tcp:1:2".parse::<PortForward>().unwrap().to_string(),
            "tcp:1:2"
        );
        for bad in ["80", "0:80", "80:70000", "sctp:1:2", "a:b", "udp:1"] {
            assert!(bad.parse::<PortForward>().is_err(), "{bad}");
        }
    }

    #[test]
    fn ports_need_user_networking() {
        let mut c = NetConfig {
            backend: Some(NetBackend::Tap("tap0".into())),
            ports: vec!["1:2".parse().unwrap()],
            pcap: None,
        };
        assert!(c.validate().is_err());
        c.backend = Some(NetBackend::User);
        assert!(c.validate().is_ok());
        c.backend = None;
        assert!(c.validate().is_err());
    }

    #[test]
    fn static_addresses_become_tokens() {
        let o = NetOptions {
            ip: Some("10.0.2.15/24".parse().unwrap()),
            gateway: Some(parse_host_addr("--gateway", "10.0.2.2").unwrap()),
            dns: vec![
                parse_host_addr("--dns", "1.1.1.1").unwrap(),
                parse_host_addr("--dns", "9.9.9.9").unwrap(),
            ],
        };
        assert!(o.validate().is_ok());
        assert_eq!(
            o.tokens(),
            [
                "UNIKERNEL_IP=10.0.2.15/24",
                "UNIKERNEL_GATEWAY=10.0.2.2",
                "UNIKERNEL_DNS=1.1.1.1,9.9.9.9"
            ]
        );
        let off_subnet = NetOptions {
            gateway: Some("10.0.3.1".parse().unwrap()),
            ..o.clone()
        };
        assert!(off_subnet.validate().is_err());
        for bad in [
            "10.0.2.15",
            "10.0.2.15/33",
            "10.0.2.15/0",
            "0.0.0.0/8",
            "x/24",
            "224.0.0.1/4",
        ] {
            assert!(bad.parse::<Ipv4Cidr>().is_err(), "{bad}");
        }
        assert!(parse_host_addr("--dns", "255.255.255.255").is_err());
        assert!(NetOptions::default().tokens().is_empty());
    }
}
