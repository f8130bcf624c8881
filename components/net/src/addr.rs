//! `struct sockaddr_in` / `sockaddr_in6` <-> smoltcp endpoints.
//!
//! An AF_INET6 socket also speaks IPv4 through IPv4-mapped addresses
//! (`::ffff:a.b.c.d`), as Linux's dual-stack sockets do.

use smoltcp::wire::{IpAddress, IpEndpoint, Ipv4Address, Ipv6Address};
use unikernel_runtime::errno::*;
use unikernel_runtime::net::{AF_INET, AF_INET6};

use alloc::vec::Vec;

/// An address as the app named it: the address (None = unspecified) and port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockAddr {
    pub addr: Option<IpAddress>,
    pub port: u16,
}

/// Parse `bytes` for a socket of `family`.
pub fn parse(family: u32, bytes: &[u8]) -> Result<SockAddr, Errno> {
    if bytes.len() < 2 {
        return Err(EINVAL);
    }
    let fam = u16::from_le_bytes([bytes[0], bytes[1]]) as u32;
    match fam {
        AF_INET => {
            if bytes.len() < 16 {
                return Err(EINVAL);
            }
            if family != AF_INET && family != AF_INET6 {
                return Err(EAFNOSUPPORT);
            }
            if family == AF_INET6 {
                // Linux: an AF_INET6 socket refuses a plain sockaddr_in.
                return Err(EAFNOSUPPORT);
            }
            let port = u16::from_be_bytes([bytes[2], bytes[3]]);
            let a = Ipv4Address::new(bytes[4], bytes[5], bytes[6], bytes[7]);
            Ok(SockAddr {
                addr: (!a.is_unspecified()).then_some(IpAddress::Ipv4(a)),
                port,
            })
        }
        AF_INET6 => {
            if bytes.len() < 24 {
                return Err(EINVAL);
            }
            if family != AF_INET6 {
                return Err(EAFNOSUPPORT);
            }
            let port = u16::from_be_bytes([bytes[2], bytes[3]]);
            let mut o = [0u8; 16];
            o.copy_from_slice(&bytes[8..24]);
            let a = Ipv6Address::from(o);
            let addr = if let Some(v4) = mapped_v4(&o) {
                (!v4.is_unspecified()).then_some(IpAddress::Ipv4(v4))
            } else {
                (!a.is_unspecified()).then_some(IpAddress::Ipv6(a))
            };
            Ok(SockAddr { addr, port })
        }
        0 => Err(EAFNOSUPPORT),
        _ => Err(EAFNOSUPPORT),
    }
}

fn mapped_v4(o: &[u8; 16]) -> Option<Ipv4Address> {
    (o[..10].iter().all(|&b| b == 0) && o[10] == 0xff && o[11] == 0xff)
        .then(|| Ipv4Address::new(o[12], o[13], o[14], o[15]))
}

/// Encode an endpoint for a socket of `family` (IPv4 peers of an AF_INET6
/// socket come out mapped).
pub fn encode(family: u32, addr: Option<IpAddress>, port: u16) -> Vec<u8> {
    let mut out = Vec::new();
    if family == AF_INET {
        out.extend_from_slice(&(AF_INET as u16).to_le_bytes());
        out.extend_from_slice(&port.to_be_bytes());
        let a = match addr {
            Some(IpAddress::Ipv4(a)) => a.octets(),
            _ => [0; 4],
        };
        out.extend_from_slice(&a);
        out.extend_from_slice(&[0; 8]);
    } else {
        out.extend_from_slice(&(AF_INET6 as u16).to_le_bytes());
        out.extend_from_slice(&port.to_be_bytes());
        out.extend_from_slice(&[0; 4]); // flow info
        let a: [u8; 16] = match addr {
            Some(IpAddress::Ipv6(a)) => a.octets(),
            Some(IpAddress::Ipv4(a)) => {
                let mut m = [0u8; 16];
                m[10] = 0xff;
                m[11] = 0xff;
                m[12..].copy_from_slice(&a.octets());
                m
            }
            None => [0; 16],
        };
        out.extend_from_slice(&a);
        out.extend_from_slice(&[0; 4]); // scope id
    }
    out
}

pub fn encode_ep(family: u32, ep: IpEndpoint) -> Vec<u8> {
    encode(family, Some(ep.addr), ep.port)
}

/// Whether `a` is a loopback address (127/8, ::1).
pub fn is_loopback(a: &IpAddress) -> bool {
    match a {
        IpAddress::Ipv4(v) => v.octets()[0] == 127,
        IpAddress::Ipv6(v) => v.is_loopback(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let v4 = encode(AF_INET, Some(IpAddress::v4(10, 0, 0, 2)), 8080);
        assert_eq!(v4.len(), 16);
        let p = parse(AF_INET, &v4).unwrap();
        assert_eq!(p.addr, Some(IpAddress::v4(10, 0, 0, 2)));
        assert_eq!(p.port, 8080);
        let m = encode(AF_INET6, Some(IpAddress::v4(127, 0, 0, 1)), 80);
        assert_eq!(m.len(), 28);
        let p = parse(AF_INET6, &m).unwrap();
        assert_eq!(p.addr, Some(IpAddress::v4(127, 0, 0, 1)));
        let any = encode(AF_INET6, None, 0);
        assert_eq!(parse(AF_INET6, &any).unwrap().addr, None);
        assert_eq!(parse(AF_INET, &[2, 0]), Err(EINVAL));
        assert_eq!(parse(AF_INET6, &v4), Err(EAFNOSUPPORT));
        assert_eq!(parse(AF_INET, &any), Err(EAFNOSUPPORT));
    }
}
