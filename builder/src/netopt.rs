//! The network options of `cargo unikernel run`: `--net user|tap:IF` (what
//! the guest's network device is attached to on the host) and `-p
//! [tcp:|udp:]HOST:GUEST` (ports forwarded from the host to the guest,
//! with `--net user`). Parsed here once for every platform; what each VMM
//! makes of them is in [`crate::vmm`] (QEMU netdevs, Firecracker's
//! network-interfaces).
use std::fmt;
use std::str::FromStr;

/// What the guest's network device is attached to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum NetAttach {
    /// No network device (the default).
    #[default]
    None,
    /// The VMM's user-mode NAT (QEMU `-netdev user`: the guest is 10.0.2.15,
    /// the host 10.0.2.2; reached from the host only through `-p`).
    User,
    /// A host tap device, by name (it must exist; the runner configures nothing).
    Tap(String),
}

/// Longest Linux interface name (IFNAMSIZ - 1).
const IFNAME_MAX: usize = 15;

impl FromStr for NetAttach {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => return Ok(NetAttach::None),
            "user" => return Ok(NetAttach::User),
            _ => {}
        }
        let Some(name) = s.strip_prefix("tap:") else {
            return Err(format!("bad --net \"{s}\": write user, tap:IFNAME or none"));
        };
        let bad = name.is_empty()
            || name.len() > IFNAME_MAX
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if bad {
            return Err(format!(
                "bad tap device name \"{name}\": 1 to {IFNAME_MAX} letters, digits, '-', '_' or '.'"
            ));
        }
        Ok(NetAttach::Tap(name.to_string()))
    }
}

impl fmt::Display for NetAttach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetAttach::None => f.write_str("none"),
            NetAttach::User => f.write_str("user"),
            NetAttach::Tap(name) => write!(f, "tap:{name}"),
        }
    }
}

/// The transport protocol of a forwarded port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    /// `tcp` or `udp`.
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// `-p [tcp:|udp:]HOST:GUEST`: host port HOST forwarded to the guest's GUEST.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Publish {
    pub proto: Proto,
    pub host: u16,
    pub guest: u16,
}

fn port(s: &str, whole: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!(
            "bad -p \"{whole}\": \"{s}\" is not a port number (1-65535)"
        )),
    }
}

impl FromStr for Publish {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let (proto, host, guest) = match parts[..] {
            [h, g] => (Proto::Tcp, h, g),
            ["tcp", h, g] => (Proto::Tcp, h, g),
            ["udp", h, g] => (Proto::Udp, h, g),
            _ => {
                return Err(format!(
                    "bad -p \"{s}\": write HOST:GUEST, tcp:HOST:GUEST or udp:HOST:GUEST"
                ))
            }
        };
        Ok(Publish {
            proto,
            host: port(host, s)?,
            guest: port(guest, s)?,
        })
    }
}

impl fmt::Display for Publish {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.proto.name(), self.host, self.guest)
    }
}

/// The network a run asks for: checked together (`-p` needs `--net user`,
/// no host port twice).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetOptions {
    pub attach: NetAttach,
    pub publish: Vec<Publish>,
}

impl NetOptions {
    /// Check the combination.
    pub fn new(attach: NetAttach, publish: Vec<Publish>) -> Result<NetOptions, String> {
        if !publish.is_empty() && attach != NetAttach::User {
            return Err(match attach {
                NetAttach::Tap(_) => "-p applies to --net user only: with a tap device the host reaches the guest at its own address".into(),
                _ => "-p needs --net user (it forwards host ports into the user-mode network)".into(),
            });
        }
        for (i, p) in publish.iter().enumerate() {
            if publish[..i]
                .iter()
                .any(|q| q.proto == p.proto && q.host == p.host)
            {
                return Err(format!(
                    "-p: host port {}/{} is forwarded twice",
                    p.host,
                    p.proto.name()
                ));
            }
        }
        Ok(NetOptions { attach, publish })
    }

    /// Whether the guest gets a network device.
    pub fn enabled(&self) -> bool {
        self.attach != NetAttach::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attach_forms() {
        assert_eq!("user".parse(), Ok(NetAttach::User));
        assert_eq!("none".parse(), Ok(NetAttach::None));
        assert_eq!("tap:tap0".parse(), Ok(NetAttach::Tap("tap0".into())));
        assert_eq!(
            "tap:uk-net.1_a".parse(),
            Ok(NetAttach::Tap("uk-net.1_a".into()))
        );
        for bad in [
            "",
            "tap",
            "tap:",
            "tap:a,b",
            "tap:0123456789abcdef",
            "bridge:br0",
            "User",
        ] {
            assert!(bad.parse::<NetAttach>().is_err(), "{bad:?} accepted");
        }
        assert_eq!(NetAttach::Tap("t0".into()).to_string(), "tap:t0");
    }

    #[test]
    fn publish_forms() {
        let p = |proto, host, guest| Publish { proto, host, guest };
        assert_eq!("8080:80".parse(), Ok(p(Proto::Tcp, 8080, 80)));
        assert_eq!("tcp:2222:22".parse(), Ok(p(Proto::Tcp, 2222, 22)));
        assert_eq!("udp:5353:53".parse(), Ok(p(Proto::Udp, 5353, 53)));
        for bad in [
            "",
            "80",
            "0:80",
            "80:0",
            "65536:80",
            "sctp:1:2",
            "udp:1",
            "1:2:3",
            "a:b",
            "tcp:1:2:3",
        ] {
            assert!(bad.parse::<Publish>().is_err(), "{bad:?} accepted");
        }
        assert_eq!(p(Proto::Udp, 1, 2).to_string(), "udp:1:2");
    }

    #[test]
    fn combinations() {
        let web: Publish = "8080:80".parse().unwrap();
        assert!(NetOptions::new(NetAttach::User, vec![web]).is_ok());
        assert!(NetOptions::new(NetAttach::None, vec![]).is_ok());
        let e = NetOptions::new(NetAttach::Tap("t0".into()), vec![web]).unwrap_err();
        assert!(e.contains("--net user only"), "{e}");
        let e = NetOptions::new(NetAttach::None, vec![web]).unwrap_err();
        assert!(e.contains("needs --net user"), "{e}");
        let e = NetOptions::new(NetAttach::User, vec![web, "tcp:8080:81".parse().unwrap()])
            .unwrap_err();
        assert!(e.contains("twice"), "{e}");
        // The same port number over TCP and UDP is two forwards.
        assert!(NetOptions::new(
            NetAttach::User,
            vec!["53:53".parse().unwrap(), "udp:53:53".parse().unwrap()]
        )
        .is_ok());
    }
}
