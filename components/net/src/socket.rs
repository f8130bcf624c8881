//! The app's sockets: one [`NetSocket`] per `socket(2)`/`accept(2)`,
//! implementing the runtime's `File` and `Socket` interfaces over the
//! [`crate::stack`]. Every call polls the stack first and after (so data
//! moves without waiting for the poller), never blocks (the system-call
//! layer waits), and answers what Linux answers.

use crate::addr::{self, SockAddr};
use crate::stack::{self, Kind, Link, Opts, SockId, Stack};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use smoltcp::socket::{tcp, udp};
use smoltcp::wire::IpAddress;
use unikernel_runtime::errno::*;
use unikernel_runtime::fs::{File, Stat, S_IFSOCK};
use unikernel_runtime::net::*;

static NEXT_INO: AtomicU64 = AtomicU64::new(50_000);

const FIONREAD: u64 = 0x541b;
const SIOCOUTQ: u64 = 0x5411;

pub struct NetSocket {
    id: SockId,
    family: u32,
    ty: u32,
    ino: u64,
}

impl NetSocket {
    pub fn new(id: SockId, family: u32, ty: u32) -> NetSocket {
        NetSocket {
            id,
            family,
            ty,
            ino: NEXT_INO.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Run `f` on this socket's entry, polling the stack before and after.
    fn op<R>(&self, f: impl FnOnce(&mut Stack, SockId) -> Result<R, Errno>) -> Result<R, Errno> {
        self.op_quiet(|s, id| (f(s, id), false))
    }

    /// [`NetSocket::op`] for an `f` that also says whether it changed
    /// nothing smoltcp would send (`true`): then the poll after it needs
    /// no output sweep of its own.
    fn op_quiet<R>(
        &self,
        f: impl FnOnce(&mut Stack, SockId) -> (Result<R, Errno>, bool),
    ) -> Result<R, Errno> {
        stack::with(|s| {
            s.poll_rx();
            let (r, quiet) = f(s, self.id);
            if !quiet {
                s.touch();
            }
            s.poll();
            if matches!(r, Err(EAGAIN)) {
                // The app saw "not ready": whatever readiness there is now
                // (packets moved since) is a new edge for it.
                s.forget_readiness(self.id);
            }
            if s.refresh(self.id) {
                unikernel_runtime::sched::notify_io();
            }
            r
        })
    }
}

impl Drop for NetSocket {
    fn drop(&mut self) {
        stack::with(|s| s.close(self.id));
    }
}

fn int(v: i32) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

fn read_int(val: &[u8]) -> Result<i32, Errno> {
    match val.len() {
        0 => Err(EINVAL),
        1..=3 => Ok(val[0] as i32),
        _ => Ok(i32::from_le_bytes([val[0], val[1], val[2], val[3]])),
    }
}

fn timeval(val: &[u8]) -> Result<(i64, i64), Errno> {
    if val.len() < 16 {
        return Err(EINVAL);
    }
    let sec = i64::from_le_bytes(val[0..8].try_into().map_err(|_| EINVAL)?);
    let usec = i64::from_le_bytes(val[8..16].try_into().map_err(|_| EINVAL)?);
    if !(0..1_000_000).contains(&usec) {
        return Err(EDOM_OR_INVAL);
    }
    Ok((sec.max(0), usec))
}

/// Linux answers EDOM for a bad tv_usec; EINVAL is what apps check for.
const EDOM_OR_INVAL: Errno = 33;

fn tv(t: (i64, i64)) -> Vec<u8> {
    let mut v = t.0.to_le_bytes().to_vec();
    v.extend_from_slice(&t.1.to_le_bytes());
    v
}

/// The smoltcp TCP socket of a connection.
fn conn(s: &mut Stack, id: SockId) -> Result<&mut tcp::Socket<'static>, Errno> {
    let (link, handle) = match s.socks.get(&id).map(|x| &x.kind) {
        Some(Kind::TcpConn { link, handle, .. }) => (*link, *handle),
        Some(_) => return Err(ENOTCONN),
        None => return Err(EBADF),
    };
    let net = s.net(link).ok_or(ENETDOWN)?;
    Ok(net.sockets.get_mut::<tcp::Socket>(handle))
}

fn take_error(s: &mut Stack, id: SockId) -> Option<Errno> {
    s.socks.get_mut(&id).and_then(|x| x.error.take())
}

fn tcp_send(s: &mut Stack, id: SockId, buf: &[u8]) -> Result<usize, Errno> {
    let (shut_wr, connecting) = match s.socks.get(&id) {
        Some(x) => (
            x.shut_wr,
            matches!(
                x.kind,
                Kind::TcpConn {
                    connecting: true,
                    ..
                }
            ),
        ),
        None => return Err(EBADF),
    };
    if let Some(e) = take_error(s, id) {
        return Err(e);
    }
    if shut_wr {
        return Err(EPIPE);
    }
    if connecting {
        return Err(EAGAIN);
    }
    let t = match conn(s, id) {
        Ok(t) => t,
        Err(ENOTCONN) => return Err(EPIPE),
        Err(e) => return Err(e),
    };
    if !t.may_send() {
        return Err(EPIPE);
    }
    if buf.is_empty() {
        return Ok(0);
    }
    match t.send_slice(buf) {
        Ok(0) => Err(EAGAIN),
        Ok(n) => Ok(n),
        Err(_) => Err(EPIPE),
    }
}

/// The read, and whether it left nothing for smoltcp to send (see
/// [`NetSocket::op_quiet`]).
fn tcp_recv(s: &mut Stack, id: SockId, buf: &mut [u8], flags: u32) -> (Result<usize, Errno>, bool) {
    let (shut_rd, connecting) = match s.socks.get(&id) {
        Some(x) => (
            x.shut_rd,
            matches!(
                x.kind,
                Kind::TcpConn {
                    connecting: true,
                    ..
                }
            ),
        ),
        None => return (Err(EBADF), true),
    };
    if connecting {
        return (Err(EAGAIN), true);
    }
    let t = match conn(s, id) {
        Ok(t) => t,
        Err(e) => return (Err(e), true),
    };
    if t.can_recv() {
        // Reading only opens the receive window. smoltcp announces a
        // window that at least doubled; with half the buffer free before
        // this read the peer already has a window of a quarter of it or
        // more (a smaller one is updated by the read that frees it), so
        // the link need not be swept for this read alone.
        let free = t.recv_capacity() - t.recv_queue();
        let peek = flags & MSG_PEEK != 0;
        let quiet = peek || free >= t.recv_capacity() / 2;
        let r = if peek {
            t.peek_slice(buf)
        } else {
            t.recv_slice(buf)
        };
        return (r.map_err(|_| ECONNRESET), quiet);
    }
    if shut_rd || buf.is_empty() {
        return (Ok(0), true);
    }
    if !t.may_recv() {
        // End of stream, or a reset reported once.
        return match take_error(s, id) {
            Some(e) => (Err(e), true),
            None => (Ok(0), true),
        };
    }
    (Err(EAGAIN), true)
}

/// The smoltcp UDP socket to send to `dst` from.
fn udp_for(
    s: &Stack,
    id: SockId,
    dst: &IpAddress,
) -> Result<(Link, smoltcp::iface::SocketHandle), Errno> {
    let link = s.route(dst)?;
    match s.socks.get(&id).map(|x| &x.kind) {
        Some(Kind::Udp { handles, .. }) => {
            handles
                .iter()
                .find(|(l, _)| *l == link)
                .copied()
                .ok_or(if link == Link::Lo {
                    EINVAL
                } else {
                    ENETUNREACH
                })
        }
        _ => Err(EBADF),
    }
}

fn udp_send(s: &mut Stack, id: SockId, buf: &[u8], to: Option<SockAddr>) -> Result<usize, Errno> {
    let (peer, family, bound, shut_wr) = match s.socks.get(&id) {
        Some(x) => match &x.kind {
            Kind::Udp { peer, .. } => (*peer, x.family, x.bound, x.shut_wr),
            _ => return Err(EBADF),
        },
        None => return Err(EBADF),
    };
    if shut_wr {
        return Err(EPIPE);
    }
    let dst = match (to, peer) {
        (Some(t), _) => t,
        (None, Some(p)) => p,
        (None, None) => return Err(EDESTADDRREQ),
    };
    let _ = family;
    let Some(daddr) = dst.addr else {
        return Err(EINVAL);
    };
    if dst.port == 0 {
        return Err(EINVAL);
    }
    if bound.is_none() {
        s.bind(
            id,
            SockAddr {
                addr: None,
                port: 0,
            },
        )?;
    }
    if let Some(e) = take_error(s, id) {
        return Err(e);
    }
    let (link, h) = udp_for(s, id, &daddr)?;
    let net = s.net(link).ok_or(ENETDOWN)?;
    let u = net.sockets.get_mut::<udp::Socket>(h);
    if buf.len() > u.payload_send_capacity() || buf.len() > 65507 {
        return Err(EMSGSIZE);
    }
    match u.send_slice(buf, (daddr, dst.port)) {
        Ok(()) => Ok(buf.len()),
        Err(udp::SendError::BufferFull) => Err(EAGAIN),
        Err(udp::SendError::Unaddressable) => Err(ENETUNREACH),
    }
}

fn udp_recv(
    s: &mut Stack,
    id: SockId,
    buf: &mut [u8],
    flags: u32,
) -> Result<(usize, usize, Option<Vec<u8>>), Errno> {
    let (handles, peer, family, shut_rd) = match s.socks.get(&id) {
        Some(x) => match &x.kind {
            Kind::Udp { handles, peer } => (handles.clone(), *peer, x.family, x.shut_rd),
            _ => return Err(EBADF),
        },
        None => return Err(EBADF),
    };
    for (link, h) in handles {
        let net = s.net(link).ok_or(ENETDOWN)?;
        let u = net.sockets.get_mut::<udp::Socket>(h);
        while let Ok((data, meta)) = u.peek() {
            let meta = *meta;
            let from = meta.endpoint;
            // A connected socket takes datagrams from its peer only.
            let wanted = peer.is_none_or(|p| p.addr == Some(from.addr) && p.port == from.port);
            if !wanted {
                let _ = u.recv();
                continue;
            }
            let full = data.len();
            let n = full.min(buf.len());
            buf[..n].copy_from_slice(&data[..n]);
            if flags & MSG_PEEK == 0 {
                let _ = u.recv();
            }
            return Ok((n, full, Some(addr::encode_ep(family, from))));
        }
    }
    if shut_rd {
        return Ok((0, 0, None));
    }
    Err(EAGAIN)
}

impl File for NetSocket {
    fn read(&self, buf: &mut [u8]) -> Result<usize, Errno> {
        self.recv_from(buf, 0).map(|(n, _, _)| n)
    }
    fn write(&self, buf: &[u8]) -> Result<usize, Errno> {
        self.send_to(buf, 0, None)
    }
    fn stat(&self) -> Stat {
        Stat {
            dev: 8,
            ino: self.ino,
            nlink: 1,
            mode: S_IFSOCK | 0o777,
            blksize: 4096,
            ..Stat::default()
        }
    }
    fn ioctl(&self, request: u64, arg: u64) -> Result<i64, Errno> {
        let n = match request {
            FIONREAD => self.op(|s, id| match s.socks.get(&id).map(|x| &x.kind) {
                Some(Kind::TcpConn { .. }) => Ok(conn(s, id)?.recv_queue()),
                Some(Kind::Udp { handles, .. }) => {
                    let hs = handles.clone();
                    for (l, h) in hs {
                        let net = s.net(l).ok_or(ENETDOWN)?;
                        if let Ok((d, _)) = net.sockets.get_mut::<udp::Socket>(h).peek() {
                            return Ok(d.len());
                        }
                    }
                    Ok(0)
                }
                Some(Kind::TcpListen { .. }) => Err(EINVAL),
                _ => Ok(0),
            })?,
            SIOCOUTQ => self.op(|s, id| match s.socks.get(&id).map(|x| &x.kind) {
                Some(Kind::TcpConn { .. }) => Ok(conn(s, id)?.send_queue()),
                _ => Ok(0),
            })?,
            _ => return Err(ENOTTY),
        };
        unikernel_runtime::mm::user::write(arg, n as i32)?;
        Ok(0)
    }
    fn poll_ready(&self) -> u16 {
        stack::with(|s| {
            // Once per readiness scan: an epoll_wait over many sockets
            // moves packets once, then reads each socket's readiness.
            let scan = unikernel_runtime::fs::scan();
            if s.scanned != scan {
                s.scanned = scan;
                s.poll();
            }
            s.current(self.id)
        })
    }
    fn event_seq(&self) -> u64 {
        stack::with(|s| s.socks.get(&self.id).map_or(0, |x| x.seq))
    }
    fn can_block(&self) -> bool {
        true
    }
    fn shutdown(&self, how: u32) -> Result<(), Errno> {
        if how > 2 {
            return Err(EINVAL);
        }
        self.op(|s, id| {
            let is_conn = match s.socks.get(&id).map(|x| &x.kind) {
                Some(Kind::TcpConn { .. }) => true,
                Some(Kind::Udp { peer: Some(_), .. }) => false,
                Some(Kind::TcpListen { .. }) if how != 1 => {
                    // Linux lets shutdown(SHUT_RD) wake a listener's accept.
                    let x = s.socks.get_mut(&id).expect("socket");
                    x.shut_rd = true;
                    return Ok(());
                }
                _ => return Err(ENOTCONN),
            };
            let x = s.socks.get_mut(&id).expect("socket");
            if how != 1 {
                x.shut_rd = true;
            }
            if how != 0 {
                x.shut_wr = true;
            }
            if is_conn && how != 0 {
                conn(s, id)?.close();
            }
            Ok(())
        })
    }
    fn as_socket(&self) -> Option<&dyn Socket> {
        Some(self)
    }
}

impl Socket for NetSocket {
    fn bind(&self, a: &[u8]) -> Result<(), Errno> {
        let want = addr::parse(self.family, a)?;
        self.op(|s, id| s.bind(id, want))
    }

    fn listen(&self, backlog: i32) -> Result<(), Errno> {
        if self.ty != SOCK_STREAM {
            return Err(EOPNOTSUPP);
        }
        self.op(|s, id| s.listen(id, backlog))
    }

    fn accept(&self) -> Result<(Arc<dyn File>, Vec<u8>), Errno> {
        if self.ty != SOCK_STREAM {
            return Err(EOPNOTSUPP);
        }
        let (nid, peer) = self.op(|s, id| {
            if s.socks.get(&id).is_some_and(|x| x.shut_rd) {
                return Err(EINVAL);
            }
            s.accept(id)
        })?;
        Ok((
            Arc::new(NetSocket::new(nid, self.family, SOCK_STREAM)),
            peer,
        ))
    }

    fn connect(&self, a: &[u8]) -> Result<(), Errno> {
        // AF_UNSPEC on a datagram socket dissolves the association.
        if self.ty == SOCK_DGRAM && a.len() >= 2 && a[0] == 0 && a[1] == 0 {
            return self.op(|s, id| {
                if let Some(Kind::Udp { peer, .. }) = s.socks.get_mut(&id).map(|x| &mut x.kind) {
                    *peer = None;
                }
                Ok(())
            });
        }
        let to = addr::parse(self.family, a)?;
        if let Some(IpAddress::Ipv6(_)) = to.addr {
            if self.family == AF_INET {
                return Err(EAFNOSUPPORT);
            }
        }
        self.op(|s, id| {
            if let (Some(IpAddress::Ipv4(_)), true) =
                (to.addr, s.socks.get(&id).is_some_and(|x| x.opts.v6only))
            {
                return Err(ENETUNREACH);
            }
            s.connect(id, to)
        })
    }

    fn connect_result(&self) -> Result<(), Errno> {
        self.op(|s, id| {
            let x = s.socks.get(&id).ok_or(EBADF)?;
            match x.kind {
                Kind::TcpConn {
                    connecting: true, ..
                } => Err(EAGAIN),
                Kind::TcpConn { .. } => match take_error(s, id) {
                    Some(e) => Err(e),
                    None => Ok(()),
                },
                _ => match take_error(s, id) {
                    Some(e) => Err(e),
                    None => Err(ENOTCONN),
                },
            }
        })
    }

    fn local_addr(&self) -> Result<Vec<u8>, Errno> {
        let family = self.family;
        self.op(|s, id| {
            let x = s.socks.get(&id).ok_or(EBADF)?;
            if let Kind::TcpConn { .. } = x.kind {
                if let Some(ep) = conn(s, id)?.local_endpoint() {
                    return Ok(addr::encode_ep(family, ep));
                }
            }
            let x = s.socks.get(&id).ok_or(EBADF)?;
            Ok(match x.bound {
                Some(b) => addr::encode(family, b.addr, b.port),
                None => addr::encode(family, None, 0),
            })
        })
    }

    fn peer_addr(&self) -> Result<Vec<u8>, Errno> {
        let family = self.family;
        self.op(|s, id| match s.socks.get(&id).map(|x| &x.kind) {
            Some(Kind::TcpConn {
                connecting: false, ..
            }) => {
                let t = conn(s, id)?;
                match t.remote_endpoint() {
                    Some(ep) if t.state() != tcp::State::Closed => Ok(addr::encode_ep(family, ep)),
                    _ => Err(ENOTCONN),
                }
            }
            Some(Kind::Udp { peer: Some(p), .. }) => Ok(addr::encode(family, p.addr, p.port)),
            Some(_) => Err(ENOTCONN),
            None => Err(EBADF),
        })
    }

    fn send_to(&self, buf: &[u8], flags: u32, to: Option<&[u8]>) -> Result<usize, Errno> {
        let _ = flags;
        if self.ty == SOCK_STREAM {
            // Linux ignores the address on a connected stream socket. A
            // short write means "full" to an edge-triggered app, as EAGAIN.
            let n = buf.len();
            return self.op(|s, id| {
                let r = tcp_send(s, id, buf);
                if matches!(r, Ok(k) if k < n) {
                    s.forget_readiness(id);
                }
                r
            });
        }
        let to = match to {
            Some(a) => Some(addr::parse(self.family, a)?),
            None => None,
        };
        self.op(|s, id| udp_send(s, id, buf, to))
    }

    fn recv_from(
        &self,
        buf: &mut [u8],
        flags: u32,
    ) -> Result<(usize, usize, Option<Vec<u8>>), Errno> {
        if flags & MSG_OOB != 0 {
            return Err(EINVAL);
        }
        if self.ty == SOCK_STREAM {
            // A short read means "drained" to an edge-triggered app (tokio
            // waits for the next edge), as EAGAIN does.
            let want = buf.len();
            return self
                .op_quiet(|s, id| {
                    let (r, quiet) = tcp_recv(s, id, buf, flags);
                    if matches!(r, Ok(k) if k < want) {
                        s.forget_readiness(id);
                    }
                    (r, quiet)
                })
                .map(|n| (n, n, None));
        }
        self.op(|s, id| udp_recv(s, id, buf, flags))
    }

    fn setsockopt(&self, level: i32, name: i32, val: &[u8]) -> Result<(), Errno> {
        let ty = self.ty;
        let family = self.family;
        self.op(|s, id| {
            let x = s.socks.get_mut(&id).ok_or(EBADF)?;
            let o = &mut x.opts;
            match (level, name) {
                (SOL_SOCKET, SO_REUSEADDR) => o.reuseaddr = read_int(val)? != 0,
                (SOL_SOCKET, SO_REUSEPORT) => o.reuseport = read_int(val)? != 0,
                (SOL_SOCKET, SO_KEEPALIVE) => o.keepalive = read_int(val)? != 0,
                (SOL_SOCKET, SO_BROADCAST) => o.broadcast = read_int(val)? != 0,
                (SOL_SOCKET, SO_RCVBUF) => o.rcvbuf = Opts::clamp_buf(read_int(val)? as i64),
                (SOL_SOCKET, SO_SNDBUF) => o.sndbuf = Opts::clamp_buf(read_int(val)? as i64),
                (SOL_SOCKET, SO_RCVTIMEO) => o.rcvtimeo = timeval(val)?,
                (SOL_SOCKET, SO_SNDTIMEO) => o.sndtimeo = timeval(val)?,
                (SOL_SOCKET, SO_LINGER) => {
                    if val.len() < 8 {
                        return Err(EINVAL);
                    }
                    let on = i32::from_le_bytes([val[0], val[1], val[2], val[3]]);
                    let secs = i32::from_le_bytes([val[4], val[5], val[6], val[7]]);
                    o.linger = (on != 0).then_some(secs.max(0) as u32);
                }
                (IPPROTO_TCP, TCP_NODELAY) if ty == SOCK_STREAM => o.nodelay = read_int(val)? != 0,
                (IPPROTO_TCP, TCP_KEEPIDLE) if ty == SOCK_STREAM => {
                    o.keepidle_s = read_int(val)?.clamp(1, 32767) as u32
                }
                (IPPROTO_TCP, TCP_KEEPINTVL) if ty == SOCK_STREAM => {
                    o.keepintvl_s = read_int(val)?.clamp(1, 32767) as u32
                }
                (IPPROTO_TCP, TCP_KEEPCNT) if ty == SOCK_STREAM => {
                    o.keepcnt = read_int(val)?.clamp(1, 127) as u32
                }
                (IPPROTO_IPV6, IPV6_V6ONLY) if family == AF_INET6 => o.v6only = read_int(val)? != 0,
                (IPPROTO_IP, IP_TTL) | (IPPROTO_IPV6, IPV6_UNICAST_HOPS) => {
                    let v = read_int(val)?;
                    o.ttl = match v {
                        -1 => None,
                        1..=255 => Some(v as u8),
                        _ => return Err(EINVAL),
                    };
                }
                _ => return Err(ENOPROTOOPT),
            }
            // Options that act on a live connection.
            let o = x.opts;
            if let Kind::TcpConn { .. } = x.kind {
                let t = conn(s, id)?;
                Stack::apply_tcp_opts(t, &o);
            }
            Ok(())
        })
    }

    fn getsockopt(&self, level: i32, name: i32) -> Result<Vec<u8>, Errno> {
        let ty = self.ty;
        let family = self.family;
        self.op(|s, id| {
            if (level, name) == (SOL_SOCKET, SO_ERROR) {
                // A connect still in progress has no error yet.
                return Ok(int(take_error(s, id).unwrap_or(0) as i32));
            }
            let x = s.socks.get(&id).ok_or(EBADF)?;
            let o = &x.opts;
            Ok(match (level, name) {
                (SOL_SOCKET, SO_TYPE) => int(ty as i32),
                (SOL_SOCKET, SO_DOMAIN) => int(family as i32),
                (SOL_SOCKET, SO_PROTOCOL) => int(if ty == SOCK_STREAM {
                    IPPROTO_TCP
                } else {
                    IPPROTO_UDP
                }),
                (SOL_SOCKET, SO_ACCEPTCONN) => int(matches!(x.kind, Kind::TcpListen { .. }) as i32),
                (SOL_SOCKET, SO_REUSEADDR) => int(o.reuseaddr as i32),
                (SOL_SOCKET, SO_REUSEPORT) => int(o.reuseport as i32),
                (SOL_SOCKET, SO_KEEPALIVE) => int(o.keepalive as i32),
                (SOL_SOCKET, SO_BROADCAST) => int(o.broadcast as i32),
                (SOL_SOCKET, SO_RCVBUF) => int(o.rcvbuf as i32),
                (SOL_SOCKET, SO_SNDBUF) => int(o.sndbuf as i32),
                (SOL_SOCKET, SO_RCVTIMEO) => tv(o.rcvtimeo),
                (SOL_SOCKET, SO_SNDTIMEO) => tv(o.sndtimeo),
                (SOL_SOCKET, SO_LINGER) => {
                    let mut v = int(o.linger.is_some() as i32);
                    v.extend_from_slice(&(o.linger.unwrap_or(0) as i32).to_le_bytes());
                    v
                }
                (IPPROTO_TCP, TCP_NODELAY) if ty == SOCK_STREAM => int(o.nodelay as i32),
                (IPPROTO_TCP, TCP_KEEPIDLE) if ty == SOCK_STREAM => int(o.keepidle_s as i32),
                (IPPROTO_TCP, TCP_KEEPINTVL) if ty == SOCK_STREAM => int(o.keepintvl_s as i32),
                (IPPROTO_TCP, TCP_KEEPCNT) if ty == SOCK_STREAM => int(o.keepcnt as i32),
                (IPPROTO_IPV6, IPV6_V6ONLY) if family == AF_INET6 => int(o.v6only as i32),
                (IPPROTO_IP, IP_TTL) | (IPPROTO_IPV6, IPV6_UNICAST_HOPS) => {
                    int(o.ttl.map_or(64, |t| t as i32))
                }
                _ => return Err(ENOPROTOOPT),
            })
        })
    }

    fn sock_type(&self) -> u32 {
        self.ty
    }
}
