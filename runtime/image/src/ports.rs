//! Published ports, as the user writes them (`[package.metadata.unikernel]
//! ports`, and the monitors' `-p`): `HOST:GUEST` with an optional protocol
//! prefix, `tcp:` (the default) or `udp:`.
//!
//! ```text
//! "8080:8080"      tcp, host port 8080 -> guest port 8080
//! "tcp:8443:443"   tcp, host 8443 -> guest 443
//! "udp:5353:53"    udp, host 5353 -> guest 53
//! ```
//!
//! Ports are 1-65535. The manifest keeps the text as written; this module
//! is the one parser, for the builder (which refuses bad ones at build
//! time) and for whoever publishes them at run time.

/// The transport protocol of a published port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// `"tcp"` or `"udp"`.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// One published port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortSpec {
    pub protocol: Protocol,
    /// The port on the host side.
    pub host: u16,
    /// The port the app listens on inside the guest.
    pub guest: u16,
}

/// Why a port spec is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortError {
    /// Not `[PROTO:]HOST:GUEST` (wrong number of `:`-separated parts).
    Shape,
    /// A prefix other than `tcp`/`udp`.
    Protocol,
    /// A port that is not a number in 1-65535.
    Port,
}

impl core::fmt::Display for PortError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            PortError::Shape => {
                "write it as HOST:GUEST, optionally prefixed with tcp: or udp: (e.g. \"8080:80\", \"udp:5353:53\")"
            }
            PortError::Protocol => "the protocol must be tcp or udp",
            PortError::Port => "ports are numbers from 1 to 65535",
        })
    }
}

#[cfg(any(feature = "std", test))]
impl std::error::Error for PortError {}

impl PortSpec {
    /// Parse `[tcp:|udp:]HOST:GUEST`.
    pub fn parse(s: &str) -> Result<PortSpec, PortError> {
        let mut parts = s.split(':');
        let (first, second, third) = (parts.next(), parts.next(), parts.next());
        if parts.next().is_some() {
            return Err(PortError::Shape);
        }
        let (protocol, host, guest) = match (first, second, third) {
            (Some(h), Some(g), None) => (Protocol::Tcp, h, g),
            (Some(p), Some(h), Some(g)) => {
                let protocol = match p {
                    "tcp" => Protocol::Tcp,
                    "udp" => Protocol::Udp,
                    _ => return Err(PortError::Protocol),
                };
                (protocol, h, g)
            }
            _ => return Err(PortError::Shape),
        };
        Ok(PortSpec {
            protocol,
            host: port(host)?,
            guest: port(guest)?,
        })
    }
}

/// A port number 1-65535, decimal digits only.
fn port(s: &str) -> Result<u16, PortError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PortError::Port);
    }
    match s.parse::<u16>() {
        Ok(0) | Err(_) => Err(PortError::Port),
        Ok(p) => Ok(p),
    }
}

impl core::fmt::Display for PortSpec {
    /// The canonical form, `PROTO:HOST:GUEST`.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}:{}:{}", self.protocol.name(), self.host, self.guest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(protocol: Protocol, host: u16, guest: u16) -> Result<PortSpec, PortError> {
        Ok(PortSpec {
            protocol,
            host,
            guest,
        })
    }

    #[test]
    fn good_specs() {
        assert_eq!(PortSpec::parse("8080:8080"), p(Protocol::Tcp, 8080, 8080));
        assert_eq!(PortSpec::parse("tcp:8443:443"), p(Protocol::Tcp, 8443, 443));
        assert_eq!(PortSpec::parse("udp:5353:53"), p(Protocol::Udp, 5353, 53));
        assert_eq!(PortSpec::parse("1:65535"), p(Protocol::Tcp, 1, 65535));
        assert_eq!(
            PortSpec::parse("udp:5353:53").unwrap().to_string(),
            "udp:5353:53"
        );
    }

    #[test]
    fn bad_specs() {
        for (s, e) in [
            ("", PortError::Shape),
            ("8080", PortError::Shape),
            ("a:b:c:d", PortError::Shape),
            ("sctp:1:2", PortError::Protocol),
            ("TCP:1:2", PortError::Protocol),
            ("0:80", PortError::Port),
            ("80:0", PortError::Port),
            ("65536:80", PortError::Port),
            ("+80:80", PortError::Port),
            (" 80:80", PortError::Port),
            (":80", PortError::Port),
            ("udp::53", PortError::Port),
            ("99999999999999999999:1", PortError::Port),
        ] {
            assert_eq!(PortSpec::parse(s), Err(e), "{s:?}");
        }
    }
}
