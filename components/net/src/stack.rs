//! The stack: one smoltcp interface per link (loopback, and the first
//! Ethernet device a driver registered), each with its own socket set, and
//! every socket of the app in one table, all behind one lock.
//!
//! A socket of the app ([`SockId`]) maps to smoltcp sockets on one link or
//! on both (a listener or UDP socket bound to the unspecified address
//! serves loopback and Ethernet). [`Stack::poll`] moves packets, services
//! listeners (the accept queue smoltcp lacks), tracks state changes and
//! readiness, and wakes waiters through the runtime's `notify_io`.

use crate::addr::{self, SockAddr};
use crate::config::NetConfig;
use crate::dev::{self, Eth};
use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec;
use alloc::vec::Vec;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::{dhcpv4, tcp, udp};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, Ipv4Address, Ipv6Address};
use spin::Mutex;
use unikernel_runtime::errno::*;
use unikernel_runtime::fs::{POLLERR, POLLHUP, POLLIN, POLLOUT, POLLRDHUP};
use unikernel_runtime::net::{AF_INET, AF_INET6, SOCK_DGRAM, SOCK_STREAM};

/// Which link a smoltcp socket lives on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Link {
    Lo,
    Eth,
}

pub type SockId = u32;

/// Default TCP buffer sizes (per connection, each direction); SO_RCVBUF /
/// SO_SNDBUF change them before a connection exists.
pub const TCP_RX_DEFAULT: usize = 16 * 1024;
pub const TCP_TX_DEFAULT: usize = 16 * 1024;
const BUF_MIN: usize = 2048;
const BUF_MAX: usize = 4 << 20;
/// UDP: datagrams queued per socket, and bytes.
const UDP_PACKETS: usize = 32;
const UDP_BYTES: usize = 64 * 1024;
/// Linux's SOMAXCONN.
const SOMAXCONN: usize = 4096;
/// Closed connections kept in TIME-WAIT at most. smoltcp keeps a socket
/// there, with both its buffers, for 10 s; a server closing connections
/// faster than the guest's memory allows would otherwise run out of heap.
/// Beyond this, the oldest are forgotten (a late segment of theirs gets a
/// reset), as stacks short of memory do.
const TIME_WAIT_MAX: usize = 64;
/// How long a connection the app closed may wait in FIN-WAIT-2 for the
/// peer's FIN before it is forgotten (Linux's `tcp_fin_timeout`, 60 s);
/// `UNIKERNEL_TCP_FIN_TIMEOUT=SECS` changes it.
pub const FIN_TIMEOUT_DEFAULT_S: u64 = 60;
const EPHEMERAL: core::ops::RangeInclusive<u16> = 49152..=65535;
/// Packets handled per link in one poll before the poller yields.
const BURST: usize = 256;
/// smoltcp arms no timer sooner than this after the change that arms it
/// (its delayed ACK is 10 ms, its shortest retransmission timeout 1 s).
/// Larger is cheaper: while the app runs, the scheduler's timer fires at
/// the cached deadline, and each such interrupt costs the guest a trap.
const TIMER_SLACK: Duration = Duration::from_millis(5);

pub struct Net {
    pub iface: Interface,
    pub sockets: SocketSet<'static>,
}

/// Options a socket carries (applied when smoltcp sockets are made).
#[derive(Clone, Copy, Debug)]
pub struct Opts {
    pub rcvbuf: usize,
    pub sndbuf: usize,
    pub nodelay: bool,
    pub keepalive: bool,
    pub keepidle_s: u32,
    pub keepintvl_s: u32,
    pub keepcnt: u32,
    pub reuseaddr: bool,
    pub reuseport: bool,
    pub v6only: bool,
    pub broadcast: bool,
    /// SO_LINGER (on, seconds).
    pub linger: Option<u32>,
    pub ttl: Option<u8>,
    /// SO_RCVTIMEO / SO_SNDTIMEO as (sec, usec).
    pub rcvtimeo: (i64, i64),
    pub sndtimeo: (i64, i64),
}

impl Default for Opts {
    fn default() -> Opts {
        Opts {
            rcvbuf: TCP_RX_DEFAULT,
            sndbuf: TCP_TX_DEFAULT,
            nodelay: false,
            keepalive: false,
            keepidle_s: 7200,
            keepintvl_s: 75,
            keepcnt: 9,
            reuseaddr: false,
            reuseport: false,
            v6only: false,
            broadcast: false,
            linger: None,
            ttl: None,
            rcvtimeo: (0, 0),
            sndtimeo: (0, 0),
        }
    }
}

impl Opts {
    pub fn clamp_buf(v: i64) -> usize {
        (v.max(0) as usize).clamp(BUF_MIN, BUF_MAX)
    }
}

pub enum Kind {
    /// A fresh TCP socket, maybe bound.
    TcpIdle,
    TcpListen {
        backlog: usize,
        /// One waiting smoltcp listener per link served.
        listeners: Vec<(Link, SocketHandle)>,
        /// Connections taken from listeners, not yet accepted.
        queue: VecDeque<(Link, SocketHandle)>,
    },
    TcpConn {
        link: Link,
        handle: SocketHandle,
        /// Connect in progress (SynSent seen, outcome not yet reported).
        connecting: bool,
        last: tcp::State,
        /// A FIN from the peer was seen.
        fin_seen: bool,
    },
    Udp {
        /// One smoltcp UDP socket per link served.
        handles: Vec<(Link, SocketHandle)>,
        /// connect()ed peer.
        peer: Option<SockAddr>,
    },
}

pub struct Sock {
    pub family: u32,
    pub ty: u32,
    pub bound: Option<SockAddr>,
    pub kind: Kind,
    pub opts: Opts,
    /// An error to report once (SO_ERROR, the next call).
    pub error: Option<Errno>,
    pub shut_rd: bool,
    pub shut_wr: bool,
    /// Readiness last computed, and its change counter (edge-triggered epoll).
    pub ready: u16,
    pub seq: u64,
    /// Bytes (or queued connections) waiting at the last refresh: new data
    /// is a new edge for edge-triggered epoll even when readiness stays.
    pub pending: usize,
    /// Free send-buffer bytes at the last refresh: more room is a new edge
    /// too, but only for an app that saw the buffer full (a short write or
    /// EAGAIN: `want_room`), as on Linux, where room made by an ACK wakes
    /// only a writer that found no space.
    pub room: usize,
    pub want_room: bool,
    /// Readiness above is current: computed since the last change, with
    /// wakers on the socket's smoltcp sockets (see [`crate::wake`]).
    pub fresh: bool,
}

pub struct Stack {
    pub lo: Net,
    pub lo_dev: dev::Lo,
    pub eth: Option<(Net, Eth)>,
    pub dhcp: Option<SocketHandle>,
    pub config: NetConfig,
    pub socks: BTreeMap<SockId, Sock>,
    /// Closed sockets smoltcp still finishes (FIN handshakes, TIME-WAIT).
    pub closing: Vec<(Link, SocketHandle)>,
    /// Closed sockets in FIN-WAIT-2 and since when (see
    /// [`FIN_TIMEOUT_DEFAULT_S`]).
    fin_wait2: Vec<(Link, SocketHandle, Instant)>,
    pub fin_timeout: Duration,
    next_id: SockId,
    next_port: u16,
    pub verbose: bool,
    /// Listening sockets (serviced after every incoming packet).
    listening: Vec<SockId>,
    /// When readiness of every socket was last recomputed.
    last_full_refresh: Option<Instant>,
    /// A link needs an output sweep (see [`Stack::poll`]).
    dirty_lo: bool,
    dirty_eth: bool,
    /// When the stack's timers next need a sweep; `None`: no timer is
    /// armed. Never later than smoltcp's deadline (see [`Stack::poll`]).
    timer_at: Option<Instant>,
    /// The readiness scan this stack last polled in (see
    /// `unikernel_runtime::fs::scan`).
    pub scanned: u64,
}

pub static STACK: Mutex<Option<Stack>> = Mutex::new(None);

/// Run `f` on the stack (the component was initialised at boot).
pub fn with<R>(f: impl FnOnce(&mut Stack) -> R) -> R {
    let mut g = STACK.lock();
    f(g.as_mut().expect("network stack used before init"))
}

pub fn now() -> Instant {
    Instant::from_micros((unikernel_runtime::platform().monotonic_ns() / 1000) as i64)
}

fn seed() -> u64 {
    let mut b = [0u8; 8];
    unikernel_runtime::random::fill(&mut b);
    u64::from_le_bytes(b)
}

impl Stack {
    pub fn new(config: NetConfig, eth: Option<Eth>) -> Stack {
        let t = now();
        let mut lo_dev = dev::Lo::new();
        let mut cfg = Config::new(HardwareAddress::Ip);
        cfg.random_seed = seed();
        let mut lo_iface = Interface::new(cfg, &mut lo_dev, t);
        lo_iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(IpAddress::v4(127, 0, 0, 1), 8));
            let _ = a.push(IpCidr::new(IpAddress::Ipv6(Ipv6Address::LOCALHOST), 128));
        });
        let mut stack = Stack {
            lo: Net {
                iface: lo_iface,
                sockets: SocketSet::new(Vec::new()),
            },
            lo_dev,
            eth: None,
            dhcp: None,
            config,
            socks: BTreeMap::new(),
            closing: Vec::new(),
            fin_wait2: Vec::new(),
            fin_timeout: Duration::from_secs(FIN_TIMEOUT_DEFAULT_S),
            next_id: 1,
            next_port: *EPHEMERAL.start() + (seed() % 8192) as u16,
            verbose: false,
            listening: Vec::new(),
            last_full_refresh: None,
            dirty_lo: true,
            dirty_eth: true,
            timer_at: Some(t),
            scanned: 0,
        };
        if let Some(mut e) = eth {
            let mac = e.dev.mac();
            let mut cfg = Config::new(HardwareAddress::Ethernet(smoltcp::wire::EthernetAddress(
                mac,
            )));
            cfg.random_seed = seed();
            let mut iface = Interface::new(cfg, &mut e, t);
            // IPv6 link-local address from the MAC (EUI-64).
            let ll = link_local(mac);
            iface.update_ip_addrs(|a| {
                let _ = a.push(IpCidr::new(IpAddress::Ipv6(ll), 64));
            });
            let mut net = Net {
                iface,
                sockets: SocketSet::new(Vec::new()),
            };
            if stack.config.static_v4.is_none() {
                let mut d = dhcpv4::Socket::new();
                d.set_max_lease_duration(Some(Duration::from_secs(3600)));
                stack.dhcp = Some(net.sockets.add(d));
            }
            stack.eth = Some((net, e));
            stack.apply_static();
        }
        stack
    }

    fn apply_static(&mut self) {
        let c = self.config.clone();
        if let Some((net, _)) = self.eth.as_mut() {
            net.iface.update_ip_addrs(|a| {
                if let Some(v4) = c.static_v4 {
                    let _ = a.push(IpCidr::Ipv4(v4));
                }
                if let Some(v6) = c.static_v6 {
                    let _ = a.push(IpCidr::Ipv6(v6));
                }
            });
            if let Some(gw) = c.gateway_v4 {
                let _ = net.iface.routes_mut().add_default_ipv4_route(gw);
            }
            if let Some(gw) = c.gateway_v6 {
                let _ = net.iface.routes_mut().add_default_ipv6_route(gw);
            }
        }
        self.sync_lo_addrs();
    }

    /// The loopback link also answers for the Ethernet link's own
    /// addresses (an app connecting to its own public address).
    fn sync_lo_addrs(&mut self) {
        let own: Vec<IpCidr> = self
            .eth
            .as_ref()
            .map(|(n, _)| n.iface.ip_addrs().to_vec())
            .unwrap_or_default();
        self.lo.iface.update_ip_addrs(|a| {
            a.clear();
            let _ = a.push(IpCidr::new(IpAddress::v4(127, 0, 0, 1), 8));
            let _ = a.push(IpCidr::new(IpAddress::Ipv6(Ipv6Address::LOCALHOST), 128));
            for c in own {
                let host = match c.address() {
                    IpAddress::Ipv4(_) => 32,
                    IpAddress::Ipv6(_) => 128,
                };
                let _ = a.push(IpCidr::new(c.address(), host));
            }
        });
    }

    pub fn net(&mut self, link: Link) -> Option<&mut Net> {
        match link {
            Link::Lo => Some(&mut self.lo),
            Link::Eth => self.eth.as_mut().map(|(n, _)| n),
        }
    }

    /// Whether `a` is one of this machine's own addresses.
    pub fn is_own(&self, a: &IpAddress) -> bool {
        addr::is_loopback(a)
            || self
                .eth
                .as_ref()
                .is_some_and(|(n, _)| n.iface.has_ip_addr(*a))
    }

    /// The link that reaches `a`.
    pub fn route(&self, a: &IpAddress) -> Result<Link, Errno> {
        if self.is_own(a) {
            return Ok(Link::Lo);
        }
        if self.eth.is_some() {
            Ok(Link::Eth)
        } else {
            Err(ENETUNREACH)
        }
    }

    /// The links a socket bound to `addr` serves.
    pub fn links_for(&self, addr: Option<IpAddress>) -> Result<Vec<Link>, Errno> {
        match addr {
            None => {
                let mut l = vec![Link::Lo];
                if self.eth.is_some() {
                    l.push(Link::Eth);
                }
                Ok(l)
            }
            Some(a) if addr::is_loopback(&a) => Ok(vec![Link::Lo]),
            Some(a) if self.is_own(&a) => Ok(vec![Link::Lo, Link::Eth]),
            Some(_) => Err(EADDRNOTAVAIL),
        }
    }

    pub fn add(&mut self, family: u32, ty: u32) -> SockId {
        let id = self.next_id;
        self.next_id += 1;
        let kind = if ty == SOCK_STREAM {
            Kind::TcpIdle
        } else {
            Kind::Udp {
                handles: Vec::new(),
                peer: None,
            }
        };
        self.socks.insert(
            id,
            Sock {
                family,
                ty,
                bound: None,
                kind,
                opts: Opts::default(),
                error: None,
                shut_rd: false,
                shut_wr: false,
                ready: 0,
                seq: 1,
                pending: 0,
                room: 0,
                want_room: false,
                fresh: false,
            },
        );
        id
    }

    /// Whether `port` is taken by another socket of type `ty` in a way
    /// that conflicts with binding `addr`.
    fn port_taken(
        &self,
        ty: u32,
        addr: Option<IpAddress>,
        port: u16,
        reuseport: bool,
        me: SockId,
    ) -> bool {
        self.socks.iter().any(|(id, s)| {
            *id != me
                && s.ty == ty
                && s.bound.is_some_and(|b| {
                    b.port == port
                        && (b.addr.is_none() || addr.is_none() || b.addr == addr)
                        && !(reuseport && s.opts.reuseport)
                })
        })
    }

    pub fn ephemeral(
        &mut self,
        ty: u32,
        addr: Option<IpAddress>,
        me: SockId,
    ) -> Result<u16, Errno> {
        let span = (*EPHEMERAL.end() - *EPHEMERAL.start()) as u32 + 1;
        for _ in 0..span {
            let p = self.next_port;
            self.next_port = if p >= *EPHEMERAL.end() {
                *EPHEMERAL.start()
            } else {
                p + 1
            };
            if !self.port_taken(ty, addr, p, false, me) && !self.closing_uses(p) {
                return Ok(p);
            }
        }
        Err(EADDRINUSE)
    }

    fn closing_uses(&self, port: u16) -> bool {
        self.closing.iter().any(|(l, h)| {
            let net = match l {
                Link::Lo => &self.lo,
                Link::Eth => match &self.eth {
                    Some((n, _)) => n,
                    None => return false,
                },
            };
            net.sockets
                .get::<tcp::Socket>(*h)
                .local_endpoint()
                .is_some_and(|e| e.port == port)
        })
    }

    pub fn bind(&mut self, id: SockId, want: SockAddr) -> Result<(), Errno> {
        let (ty, reuseport, already) = {
            let s = self.socks.get(&id).ok_or(EBADF)?;
            (s.ty, s.opts.reuseport, s.bound.is_some())
        };
        if already {
            return Err(EINVAL);
        }
        if let Some(a) = want.addr {
            if !self.is_own(&a) {
                return Err(EADDRNOTAVAIL);
            }
        }
        let port = if want.port == 0 {
            self.ephemeral(ty, want.addr, id)?
        } else {
            if self.port_taken(ty, want.addr, want.port, reuseport, id) {
                return Err(EADDRINUSE);
            }
            want.port
        };
        let s = self.socks.get_mut(&id).ok_or(EBADF)?;
        s.bound = Some(SockAddr {
            addr: want.addr,
            port,
        });
        if s.ty == SOCK_DGRAM {
            self.open_udp(id)?;
        }
        Ok(())
    }

    /// A TCP socket with `opts`' buffers, or None if the heap has no room
    /// for them (the caller refuses the connection; never a panic).
    fn tcp_socket(opts: &Opts) -> Option<tcp::Socket<'static>> {
        fn zeroed(n: usize) -> Option<Vec<u8>> {
            let mut v = Vec::new();
            v.try_reserve_exact(n).ok()?;
            v.resize(n, 0);
            Some(v)
        }
        let rx = tcp::SocketBuffer::new(zeroed(opts.rcvbuf)?);
        let tx = tcp::SocketBuffer::new(zeroed(opts.sndbuf)?);
        let mut t = tcp::Socket::new(rx, tx);
        Self::apply_tcp_opts(&mut t, opts);
        Some(t)
    }

    pub fn apply_tcp_opts(t: &mut tcp::Socket<'static>, o: &Opts) {
        t.set_nagle_enabled(!o.nodelay);
        t.set_congestion_control(tcp::CongestionControl::Reno);
        t.set_keep_alive(
            o.keepalive
                .then(|| Duration::from_secs(o.keepintvl_s.max(1) as u64)),
        );
        // No answer for this long ends a connection (Linux gives up on a
        // SYN after ~2 minutes and on data after ~15).
        t.set_timeout(Some(Duration::from_secs(120)));
        t.set_hop_limit(o.ttl);
    }

    pub fn listen(&mut self, id: SockId, backlog: i32) -> Result<(), Errno> {
        let family = self.socks.get(&id).ok_or(EBADF)?.family;
        let _ = family;
        if self.socks[&id].ty != SOCK_STREAM {
            return Err(EOPNOTSUPP);
        }
        if self.socks[&id].bound.is_none() {
            self.bind(
                id,
                SockAddr {
                    addr: None,
                    port: 0,
                },
            )?;
        }
        let backlog = (backlog.max(1) as usize).min(SOMAXCONN);
        let s = self.socks.get_mut(&id).ok_or(EBADF)?;
        match &mut s.kind {
            Kind::TcpListen { backlog: b, .. } => {
                *b = backlog;
                return Ok(());
            }
            Kind::TcpIdle => {}
            _ => return Err(EINVAL),
        }
        s.kind = Kind::TcpListen {
            backlog,
            listeners: Vec::new(),
            queue: VecDeque::new(),
        };
        self.listening.push(id);
        self.replenish(id);
        Ok(())
    }

    /// Keep one waiting smoltcp listener per link while the accept queue
    /// has room; without one, further SYNs are answered with a reset
    /// (connection refused), as for a full backlog.
    fn replenish(&mut self, id: SockId) {
        let Some(s) = self.socks.get(&id) else { return };
        let (bound, opts, family) = match (&s.kind, s.bound) {
            (Kind::TcpListen { .. }, Some(b)) => (b, s.opts, s.family),
            _ => return,
        };
        let Ok(links) = self.links_for(bound.addr) else {
            return;
        };
        for link in links {
            // Take listeners that got a SYN into the queue.
            let (moved, has_waiting, full) = {
                let Some(Kind::TcpListen {
                    listeners,
                    queue,
                    backlog,
                }) = self.socks.get(&id).map(|s| &s.kind)
                else {
                    return;
                };
                let net = match link {
                    Link::Lo => &self.lo,
                    Link::Eth => &self.eth.as_ref().expect("eth link").0,
                };
                let mut moved = Vec::new();
                let mut waiting = false;
                for &(l, h) in listeners.iter().filter(|(l, _)| *l == link) {
                    let st = net.sockets.get::<tcp::Socket>(h).state();
                    if st == tcp::State::Listen {
                        waiting = true;
                    } else {
                        moved.push((l, h));
                    }
                }
                (moved, waiting, queue.len() + 1 > *backlog)
            };
            let mut reject = Vec::new();
            if let Some(Kind::TcpListen {
                listeners, queue, ..
            }) = self.socks.get_mut(&id).map(|s| &mut s.kind)
            {
                for m in &moved {
                    listeners.retain(|x| x != m);
                    queue.push_back(*m);
                }
            }
            // An AF_INET listener takes IPv4 peers only; IPV6_V6ONLY, IPv6 only.
            for &(l, h) in &moved {
                let net = self.net(l).expect("link");
                let t = net.sockets.get::<tcp::Socket>(h);
                let v4 = matches!(
                    t.remote_endpoint().map(|e| e.addr),
                    Some(IpAddress::Ipv4(_))
                );
                if (family == AF_INET && !v4) || (family == AF_INET6 && opts.v6only && v4) {
                    reject.push((l, h));
                }
            }
            for r in reject {
                if let Some(Kind::TcpListen { queue, .. }) =
                    self.socks.get_mut(&id).map(|s| &mut s.kind)
                {
                    queue.retain(|x| *x != r);
                }
                let net = self.net(r.0).expect("link");
                net.sockets.get_mut::<tcp::Socket>(r.1).abort();
                self.closing.push(r);
            }
            if !has_waiting && !full {
                // No room for another connection's buffers: no socket
                // listens for now, so a SYN is refused until memory frees.
                let Some(mut t) = Self::tcp_socket(&opts) else {
                    continue;
                };
                let ep = smoltcp::wire::IpListenEndpoint {
                    addr: bound.addr,
                    port: bound.port,
                };
                if t.listen(ep).is_ok() {
                    let net = self.net(link).expect("link");
                    let h = net.sockets.add(t);
                    if let Some(Kind::TcpListen { listeners, .. }) =
                        self.socks.get_mut(&id).map(|s| &mut s.kind)
                    {
                        listeners.push((link, h));
                    }
                }
            }
        }
    }

    fn replenish_all(&mut self) {
        if self.listening.is_empty() && self.lo_dev.full_ports.is_empty() {
            return;
        }
        self.listening.retain(|id| self.socks.contains_key(id));
        let ids = self.listening.clone();
        for id in ids.iter() {
            self.replenish(*id);
        }
        // Listeners whose accept queue is full: their SYNs are dropped.
        let mut full = Vec::new();
        for id in ids {
            if let Some(s) = self.socks.get(&id) {
                if let (Kind::TcpListen { queue, backlog, .. }, Some(b)) = (&s.kind, s.bound) {
                    if queue.len() >= *backlog {
                        full.push(b.port);
                    }
                }
            }
        }
        if let Some((_, e)) = self.eth.as_mut() {
            e.full_ports.clone_from(&full);
        }
        self.lo_dev.full_ports = full;
    }

    /// Take one established connection off `id`'s queue: the new socket's id.
    pub fn accept(&mut self, id: SockId) -> Result<(SockId, Vec<u8>), Errno> {
        self.poll();
        let (family, opts, bound) = {
            let s = self.socks.get(&id).ok_or(EBADF)?;
            if !matches!(s.kind, Kind::TcpListen { .. }) {
                return Err(EINVAL);
            }
            (s.family, s.opts, s.bound)
        };
        let _ = bound;
        loop {
            let Some(Kind::TcpListen { queue, .. }) = self.socks.get_mut(&id).map(|s| &mut s.kind)
            else {
                return Err(EINVAL);
            };
            // The oldest connection that finished its handshake.
            let pos = {
                let lo = &self.lo;
                let eth = self.eth.as_ref().map(|(n, _)| n);
                queue.iter().position(|(l, h)| {
                    let net = match l {
                        Link::Lo => lo,
                        Link::Eth => eth.expect("eth"),
                    };
                    let st = net.sockets.get::<tcp::Socket>(*h).state();
                    !matches!(st, tcp::State::SynReceived | tcp::State::Listen)
                })
            };
            let Some(pos) = pos else { return Err(EAGAIN) };
            let (link, h) = queue.remove(pos).expect("position is in the queue");
            let net = self.net(link).expect("link");
            let t = net.sockets.get::<tcp::Socket>(h);
            let st = t.state();
            let Some(peer) = t.remote_endpoint() else {
                // Reset before it was accepted: drop it, try the next.
                net.sockets.remove(h);
                continue;
            };
            if st == tcp::State::Closed {
                net.sockets.remove(h);
                continue;
            }
            let local = t.local_endpoint();
            let nid = self.next_id;
            self.next_id += 1;
            self.socks.insert(
                nid,
                Sock {
                    family,
                    ty: SOCK_STREAM,
                    bound: local.map(|e| SockAddr {
                        addr: Some(e.addr),
                        port: e.port,
                    }),
                    kind: Kind::TcpConn {
                        link,
                        handle: h,
                        connecting: false,
                        last: st,
                        fin_seen: false,
                    },
                    opts,
                    error: None,
                    shut_rd: false,
                    shut_wr: false,
                    ready: 0,
                    seq: 1,
                    pending: 0,
                    room: 0,
                    want_room: false,
                    fresh: false,
                },
            );
            // Accepted connections do not hold the port as bound sockets do.
            if let Some(s) = self.socks.get_mut(&nid) {
                s.bound = None;
                s.opts.reuseport = true;
            }
            self.replenish(id);
            self.refresh(id);
            return Ok((nid, addr::encode_ep(family, peer)));
        }
    }

    pub fn connect(&mut self, id: SockId, to: SockAddr) -> Result<(), Errno> {
        let Some(dst) = to.addr else {
            return Err(ECONNREFUSED);
        };
        if to.port == 0 {
            return Err(ECONNREFUSED);
        }
        let link = self.route(&dst)?;
        let (ty, opts) = {
            let s = self.socks.get(&id).ok_or(EBADF)?;
            (s.ty, s.opts)
        };
        if ty == SOCK_DGRAM {
            if self.socks[&id].bound.is_none() {
                self.bind(
                    id,
                    SockAddr {
                        addr: None,
                        port: 0,
                    },
                )?;
            }
            if let Some(Kind::Udp { peer, .. }) = self.socks.get_mut(&id).map(|s| &mut s.kind) {
                *peer = Some(to);
            }
            return Ok(());
        }
        match &self.socks[&id].kind {
            Kind::TcpIdle => {}
            Kind::TcpConn {
                connecting: true, ..
            } => return Err(EALREADY),
            Kind::TcpConn { .. } => return Err(EISCONN),
            _ => return Err(EINVAL),
        }
        let local = match self.socks[&id].bound {
            Some(b) => b,
            None => {
                let p = self.ephemeral(ty, None, id)?;
                SockAddr {
                    addr: None,
                    port: p,
                }
            }
        };
        let mut t = Self::tcp_socket(&opts).ok_or(ENOBUFS)?;
        let net = self.net(link).ok_or(ENETUNREACH)?;
        let lep = smoltcp::wire::IpListenEndpoint {
            addr: local.addr,
            port: local.port,
        };
        t.connect(net.iface.context(), (dst, to.port), lep)
            .map_err(|e| match e {
                tcp::ConnectError::Unaddressable => ENETUNREACH,
                tcp::ConnectError::InvalidState => EISCONN,
            })?;
        let h = net.sockets.add(t);
        let s = self.socks.get_mut(&id).expect("socket");
        s.bound = Some(local);
        s.kind = Kind::TcpConn {
            link,
            handle: h,
            connecting: true,
            last: tcp::State::SynSent,
            fin_seen: false,
        };
        self.touch();
        self.poll();
        Err(EINPROGRESS)
    }

    /// Make the smoltcp UDP sockets of a bound UDP socket.
    fn open_udp(&mut self, id: SockId) -> Result<(), Errno> {
        let b = self.socks[&id].bound.expect("bound");
        let links = self.links_for(b.addr)?;
        let mut hs = Vec::new();
        for link in links {
            let rx = udp::PacketBuffer::new(
                vec![udp::PacketMetadata::EMPTY; UDP_PACKETS],
                vec![0u8; UDP_BYTES],
            );
            let tx = udp::PacketBuffer::new(
                vec![udp::PacketMetadata::EMPTY; UDP_PACKETS],
                vec![0u8; UDP_BYTES],
            );
            let mut u = udp::Socket::new(rx, tx);
            let ep = smoltcp::wire::IpListenEndpoint {
                addr: b.addr,
                port: b.port,
            };
            u.bind(ep).map_err(|_| EINVAL)?;
            let net = self.net(link).expect("link");
            hs.push((link, net.sockets.add(u)));
        }
        if let Some(Kind::Udp { handles, .. }) = self.socks.get_mut(&id).map(|s| &mut s.kind) {
            *handles = hs;
        }
        Ok(())
    }

    /// The app closed its last descriptor of `id`.
    pub fn close(&mut self, id: SockId) {
        let Some(s) = self.socks.remove(&id) else {
            return;
        };
        match s.kind {
            Kind::TcpIdle => {}
            Kind::TcpListen {
                listeners, queue, ..
            } => {
                for (l, h) in listeners.into_iter() {
                    if let Some(net) = self.net(l) {
                        net.sockets.remove(h);
                    }
                }
                for (l, h) in queue {
                    if let Some(net) = self.net(l) {
                        net.sockets.get_mut::<tcp::Socket>(h).abort();
                    }
                    self.closing.push((l, h));
                }
            }
            Kind::TcpConn { link, handle, .. } => {
                if let Some(net) = self.net(link) {
                    let t = net.sockets.get_mut::<tcp::Socket>(handle);
                    if s.opts.linger == Some(0) || t.recv_queue() > 0 {
                        // Unread data or SO_LINGER 0: a reset, as Linux does.
                        t.abort();
                    } else {
                        t.close();
                    }
                }
                self.closing.push((link, handle));
            }
            Kind::Udp { handles, .. } => {
                for (l, h) in handles {
                    if let Some(net) = self.net(l) {
                        net.sockets.remove(h);
                    }
                }
            }
        }
        self.touch();
        self.poll();
    }

    /// Something changed outside a poll (an app call, a new or closed
    /// socket, an option): the next poll sweeps every link's sockets for
    /// output, and the stack's timers are looked at again soon (a changed
    /// socket may have armed one).
    pub fn touch(&mut self) {
        self.dirty_lo = true;
        self.dirty_eth = true;
        self.clamp_timer(now());
    }

    /// The cached timer may be late by what changed at `t`: make it no
    /// later than `t + TIMER_SLACK` (smoltcp arms nothing sooner).
    fn clamp_timer(&mut self, t: Instant) {
        let soon = t + TIMER_SLACK;
        self.timer_at = Some(self.timer_at.map_or(soon, |a| a.min(soon)));
    }

    /// Take in what arrived (every link, bounded), without sending: the
    /// app call that follows sees it, and the poll after that call sends
    /// the acknowledgements and replies in one sweep.
    pub fn poll_rx(&mut self) {
        let t = now();
        if self.ingress(t) || crate::wake::any() {
            self.after_moved();
        }
    }

    /// Receive on both links (up to BURST packets each); whether anything
    /// came in. A link that received is marked for an output sweep.
    fn ingress(&mut self, t: Instant) -> bool {
        let mut any = false;
        for _ in 0..BURST {
            match self
                .lo
                .iface
                .poll_ingress_single(t, &mut self.lo_dev, &mut self.lo.sockets)
            {
                smoltcp::iface::PollIngressSingleResult::None => break,
                _ => {
                    any = true;
                    self.dirty_lo = true;
                    self.replenish_all();
                }
            }
        }
        for _ in 0..BURST {
            let Some((net, dev)) = self.eth.as_mut() else {
                break;
            };
            let r = net.iface.poll_ingress_single(t, dev, &mut net.sockets);
            if matches!(r, smoltcp::iface::PollIngressSingleResult::None) {
                break;
            }
            any = true;
            self.dirty_eth = true;
            self.replenish_all();
        }
        any
    }

    /// Move packets on every link until nothing more happens (bounded);
    /// then service listeners, reap finished sockets, and refresh
    /// readiness (waking waiters when it changed).
    ///
    /// smoltcp sends only from a sweep over all of a link's sockets, so a
    /// sweep runs only on a link with work: something arrived on it, the
    /// app changed a socket ([`Stack::touch`]), or a timer is due. The
    /// timer is cached (`timer_at`, never later than smoltcp's own) and
    /// computed afresh only when it came due, so a poll with nothing to
    /// do costs a look at each receive queue.
    pub fn poll(&mut self) {
        let t = now();
        let timer_due = self.timer_at.is_some_and(|a| a <= t);
        let mut moved = false;
        for _round in 0..64 {
            let mut again = self.ingress(t);
            moved |= again;
            if self.dirty_lo || timer_due {
                self.dirty_lo = false;
                self.lo.iface.poll_maintenance(t);
                // What loopback sends is its own ingress: another round.
                while self
                    .lo
                    .iface
                    .poll_egress(t, &mut self.lo_dev, &mut self.lo.sockets)
                    == smoltcp::iface::PollResult::SocketStateChanged
                {
                    again = true;
                    moved = true;
                }
            }
            if self.dirty_eth || timer_due {
                self.dirty_eth = false;
                if let Some((net, dev)) = self.eth.as_mut() {
                    net.iface.poll_maintenance(t);
                    while net.iface.poll_egress(t, dev, &mut net.sockets)
                        == smoltcp::iface::PollResult::SocketStateChanged
                    {
                        moved = true;
                    }
                }
            }
            if !again {
                break;
            }
        }
        if timer_due {
            self.timer_at = self.poll_at(t);
        } else if moved {
            self.clamp_timer(t);
        }
        self.dhcp_events();
        if moved || crate::wake::any() {
            self.after_moved();
        }
        if self
            .last_full_refresh
            .is_none_or(|l| t - l > Duration::from_millis(50))
        {
            // Now and then every socket is looked at anyway, woken or not.
            self.last_full_refresh = Some(t);
            self.refresh_all();
        }
    }

    /// Packets moved: service listeners, reap, and refresh the sockets
    /// smoltcp changed (and every listener: its queue is ours).
    fn after_moved(&mut self) {
        self.replenish_all();
        self.reap();
        self.refresh_changed();
    }

    /// The earliest time any link wants to be polled (smoltcp's view).
    fn poll_at(&mut self, t: Instant) -> Option<Instant> {
        let a = self.lo.iface.poll_at(t, &self.lo.sockets);
        let b = self
            .eth
            .as_mut()
            .and_then(|(n, _)| n.iface.poll_at(t, &n.sockets));
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn dhcp_events(&mut self) {
        let Some(h) = self.dhcp else { return };
        let Some((net, _)) = self.eth.as_mut() else {
            return;
        };
        let ev = net.sockets.get_mut::<dhcpv4::Socket>(h).poll();
        match ev {
            None => {}
            Some(dhcpv4::Event::Configured(c)) => {
                let addr = c.address;
                let router = c.router;
                let dns: Vec<Ipv4Address> = c.dns_servers.iter().copied().collect();
                net.iface.update_ip_addrs(|a| {
                    a.retain(|x| !matches!(x, IpCidr::Ipv4(_)));
                    let _ = a.push(IpCidr::Ipv4(addr));
                });
                net.iface.routes_mut().remove_default_ipv4_route();
                if let Some(r) = router {
                    let _ = net.iface.routes_mut().add_default_ipv4_route(r);
                }
                self.config.dhcp_v4 = Some((addr, router));
                if self.config.dns.is_empty() || self.config.dns_from_dhcp {
                    self.config.dns = dns.into_iter().map(IpAddress::Ipv4).collect();
                    self.config.dns_from_dhcp = true;
                }
                self.sync_lo_addrs();
                crate::config::publish(&self.config);
                crate::config::announce(self, "DHCP");
            }
            Some(dhcpv4::Event::Deconfigured) if self.config.dhcp_v4.is_none() => {}
            Some(dhcpv4::Event::Deconfigured) => {
                net.iface
                    .update_ip_addrs(|a| a.retain(|x| !matches!(x, IpCidr::Ipv4(_))));
                net.iface.routes_mut().remove_default_ipv4_route();
                self.config.dhcp_v4 = None;
                self.sync_lo_addrs();
                if self.verbose {
                    unikernel_runtime::kprintln!("unikernel: net: DHCP lease lost");
                }
            }
        }
    }

    /// Drop closed sockets that finished their shutdown.
    fn reap(&mut self) {
        let mut keep = Vec::new();
        for (l, h) in core::mem::take(&mut self.closing) {
            let Some(net) = self.net(l) else { continue };
            let t = net.sockets.get_mut::<tcp::Socket>(h);
            if t.recv_queue() > 0 {
                // Data for a socket the app closed: a reset, as on Linux.
                t.abort();
            }
            // Closed, and no reset left to send (smoltcp forgets the peer
            // once it sent the reset of an aborted connection).
            if t.state() == tcp::State::Closed && t.remote_endpoint().is_none() {
                net.sockets.remove(h);
            } else {
                keep.push((l, h));
            }
        }
        // The oldest connections in TIME-WAIT beyond TIME_WAIT_MAX go, and
        // those whose peer has not sent its FIN within the fin timeout.
        let t = now();
        let mut time_wait = Vec::new();
        let mut expired = Vec::new();
        let mut waiting = Vec::new();
        for (i, &(l, h)) in keep.iter().enumerate() {
            let Some(net) = self.net(l) else { continue };
            match net.sockets.get::<tcp::Socket>(h).state() {
                tcp::State::TimeWait => time_wait.push(i),
                tcp::State::FinWait2 => {
                    let since = self
                        .fin_wait2
                        .iter()
                        .find(|e| e.0 == l && e.1 == h)
                        .map_or(t, |e| e.2);
                    if t - since >= self.fin_timeout {
                        expired.push(i);
                    } else {
                        waiting.push((l, h, since));
                    }
                }
                _ => {}
            }
        }
        self.fin_wait2 = waiting;
        let excess = time_wait.len().saturating_sub(TIME_WAIT_MAX);
        let mut gone: Vec<usize> = time_wait[..excess].to_vec();
        gone.extend(expired);
        gone.sort_unstable();
        for &i in gone.iter().rev() {
            let (l, h) = keep.remove(i);
            if let Some(net) = self.net(l) {
                net.sockets.remove(h);
            }
        }
        self.closing = keep;
    }

    /// Readiness of `id` now (POLL* bits); updates connection tracking.
    pub fn readiness(&mut self, id: SockId) -> u16 {
        let Some(s) = self.socks.get(&id) else {
            return POLLERR;
        };
        let shut_rd = s.shut_rd;
        let shut_wr = s.shut_wr;
        let has_error = s.error.is_some();
        let mut ev = 0;
        match &s.kind {
            Kind::TcpIdle => ev |= POLLOUT | POLLHUP,
            Kind::TcpListen { queue, .. } => {
                let lo = &self.lo;
                let eth = self.eth.as_ref().map(|(n, _)| n);
                let any = queue.iter().any(|(l, h)| {
                    let net = match l {
                        Link::Lo => lo,
                        Link::Eth => eth.expect("eth"),
                    };
                    !matches!(
                        net.sockets.get::<tcp::Socket>(*h).state(),
                        tcp::State::SynReceived
                    )
                });
                if any {
                    ev |= POLLIN;
                }
            }
            Kind::TcpConn {
                link,
                handle,
                connecting,
                ..
            } => {
                let (link, handle, connecting) = (*link, *handle, *connecting);
                let net = match link {
                    Link::Lo => &self.lo,
                    Link::Eth => &self.eth.as_ref().expect("eth").0,
                };
                let t = net.sockets.get::<tcp::Socket>(handle);
                let st = t.state();
                if t.can_recv() || shut_rd {
                    ev |= POLLIN;
                }
                if !t.may_recv() && !connecting && st != tcp::State::SynReceived {
                    ev |= POLLIN | POLLRDHUP;
                }
                if t.can_send() && !shut_wr {
                    ev |= POLLOUT;
                }
                if st == tcp::State::Closed {
                    ev |= POLLHUP | POLLIN;
                    if !shut_wr {
                        ev |= POLLOUT;
                    }
                }
                if shut_wr && shut_rd {
                    ev |= POLLHUP;
                }
                if connecting && st == tcp::State::SynSent {
                    ev &= !(POLLOUT | POLLIN | POLLHUP | POLLRDHUP);
                }
            }
            Kind::Udp { handles, .. } => {
                ev |= POLLOUT;
                for (l, h) in handles {
                    let net = match l {
                        Link::Lo => &self.lo,
                        Link::Eth => &self.eth.as_ref().expect("eth").0,
                    };
                    if net.sockets.get::<udp::Socket>(*h).can_recv() {
                        ev |= POLLIN;
                    }
                }
                if shut_rd {
                    ev |= POLLIN;
                }
            }
        }
        if has_error {
            ev |= POLLERR;
        }
        ev
    }

    /// Track TCP state changes (connect outcome, resets, FIN) for `id`.
    fn track(&mut self, id: SockId) {
        let Some(s) = self.socks.get(&id) else { return };
        let Kind::TcpConn { link, handle, .. } = s.kind else {
            return;
        };
        let Some(net) = self.net(link) else { return };
        let t = net.sockets.get::<tcp::Socket>(handle);
        let st = t.state();
        let may_recv = t.may_recv();
        let s = self.socks.get_mut(&id).expect("socket");
        let Kind::TcpConn {
            connecting,
            last,
            fin_seen,
            ..
        } = &mut s.kind
        else {
            return;
        };
        if st != *last {
            if *last != tcp::State::Closed && st == tcp::State::CloseWait {
                *fin_seen = true;
            }
            if matches!(
                st,
                tcp::State::Closing | tcp::State::TimeWait | tcp::State::LastAck
            ) {
                *fin_seen = true;
            }
            if st == tcp::State::Closed {
                if *connecting {
                    s.error = Some(ECONNREFUSED);
                } else if !*fin_seen {
                    s.error = Some(ECONNRESET);
                }
            }
            if st != tcp::State::SynSent {
                // Established, or failed (the error is recorded above).
                *connecting = false;
            }
            *last = st;
        }
        let _ = may_recv;
    }

    /// How much input waits on `id` (bytes, datagrams or connections).
    fn pending_input(&mut self, id: SockId) -> usize {
        let Some(s) = self.socks.get(&id) else {
            return 0;
        };
        match &s.kind {
            Kind::TcpConn { link, handle, .. } => {
                let (l, h) = (*link, *handle);
                self.net(l)
                    .map_or(0, |n| n.sockets.get::<tcp::Socket>(h).recv_queue())
            }
            Kind::TcpListen { queue, .. } => queue.len(),
            Kind::Udp { handles, .. } => {
                let hs = handles.clone();
                hs.into_iter()
                    .map(|(l, h)| {
                        self.net(l)
                            .map_or(0, |n| n.sockets.get::<udp::Socket>(h).recv_queue())
                    })
                    .sum()
            }
            Kind::TcpIdle => 0,
        }
    }

    /// The app saw `id` not ready (EAGAIN, a short write): the next refresh
    /// reports whatever readiness there is as a change.
    pub fn forget_readiness(&mut self, id: SockId) {
        if let Some(s) = self.socks.get_mut(&id) {
            s.ready = 0;
            s.pending = 0;
            s.room = 0;
            s.want_room = true;
        }
    }

    /// Free bytes in `id`'s TCP send buffer (0 for other sockets).
    fn send_room(&mut self, id: SockId) -> usize {
        match self.socks.get(&id).map(|s| &s.kind) {
            Some(Kind::TcpConn { link, handle, .. }) => {
                let (l, h) = (*link, *handle);
                self.net(l).map_or(0, |n| {
                    let t = n.sockets.get::<tcp::Socket>(h);
                    t.send_capacity() - t.send_queue()
                })
            }
            _ => 0,
        }
    }

    /// Recompute `id`'s readiness; true (and a new event sequence number)
    /// when it changed, new input arrived or send room grew. Registers the
    /// wakers that mark it changed again (see [`crate::wake`]).
    pub fn refresh(&mut self, id: SockId) -> bool {
        self.track(id);
        let r = self.readiness(id);
        let pending = self.pending_input(id);
        let room = self.send_room(id);
        self.arm_wakers(id);
        let Some(s) = self.socks.get_mut(&id) else {
            return false;
        };
        s.fresh = true;
        let roomier = s.want_room && room > s.room;
        if roomier {
            s.want_room = false;
        }
        let more = pending > s.pending || roomier;
        s.pending = pending;
        s.room = room;
        if s.ready != r || more {
            s.ready = r;
            s.seq += 1;
            true
        } else {
            false
        }
    }

    /// `id`'s readiness, recomputed only if something changed it since.
    pub fn current(&mut self, id: SockId) -> u16 {
        match self.socks.get(&id) {
            Some(s) if s.fresh => s.ready,
            Some(_) => {
                if self.refresh(id) {
                    unikernel_runtime::sched::notify_io();
                }
                self.socks.get(&id).map_or(0, |s| s.ready)
            }
            None => 0,
        }
    }

    /// Point the wakers of `id`'s smoltcp sockets at `id`. Listeners need
    /// none: [`Stack::refresh_changed`] looks at every one.
    fn arm_wakers(&mut self, id: SockId) {
        let Some(s) = self.socks.get(&id) else { return };
        let w = crate::wake::waker(id);
        match &s.kind {
            Kind::TcpConn { link, handle, .. } => {
                let (l, h) = (*link, *handle);
                if let Some(n) = self.net(l) {
                    let t = n.sockets.get_mut::<tcp::Socket>(h);
                    t.register_recv_waker(&w);
                    t.register_send_waker(&w);
                }
            }
            Kind::Udp { handles, .. } => {
                let hs = handles.clone();
                for (l, h) in hs {
                    if let Some(n) = self.net(l) {
                        let u = n.sockets.get_mut::<udp::Socket>(h);
                        u.register_recv_waker(&w);
                        u.register_send_waker(&w);
                    }
                }
            }
            Kind::TcpIdle | Kind::TcpListen { .. } => {}
        }
    }

    fn refresh_all(&mut self) {
        let ids: Vec<SockId> = self.socks.keys().copied().collect();
        self.refresh_ids(ids);
    }

    /// Refresh the sockets smoltcp woke, and the listeners.
    fn refresh_changed(&mut self) {
        let mut ids = crate::wake::take();
        ids.extend(self.listening.iter().copied());
        self.refresh_ids(ids);
    }

    fn refresh_ids(&mut self, ids: Vec<SockId>) {
        let mut changed = false;
        for id in ids {
            changed |= self.refresh(id);
        }
        if changed {
            unikernel_runtime::sched::notify_io();
        }
    }

    /// Print every connection's state (`UNIKERNEL_NET_DEBUG`).
    pub fn debug_dump(&mut self, deadline: Option<u64>) {
        let ids: Vec<SockId> = self.socks.keys().copied().collect();
        for id in ids {
            let (ready, seq) = (self.socks[&id].ready, self.socks[&id].seq);
            if let Kind::TcpConn { link, handle, .. } = self.socks[&id].kind {
                let t = self
                    .net(link)
                    .expect("link")
                    .sockets
                    .get::<tcp::Socket>(handle);
                unikernel_runtime::kprintln!(
                    "net-debug: sock {id} {} sendq {} recvq {} can_send {} ready {ready:#x} seq {seq} deadline {deadline:?} now {}",
                    t.state(),
                    t.send_queue(),
                    t.recv_queue(),
                    t.can_send(),
                    now().total_micros()
                );
            }
        }
    }

    /// When the stack next wants to run (monotonic ns): the cached timer
    /// (see [`Stack::poll`]), never later than smoltcp's own deadline.
    pub fn deadline(&mut self) -> Option<u64> {
        let at = self.timer_at?;
        Some((at.total_micros().max(0) as u64).saturating_mul(1000))
    }
}

/// fe80::/64 with the EUI-64 interface identifier of `mac`.
fn link_local(mac: [u8; 6]) -> Ipv6Address {
    let mut o = [0u8; 16];
    o[0] = 0xfe;
    o[1] = 0x80;
    o[8] = mac[0] ^ 0x02;
    o[9] = mac[1];
    o[10] = mac[2];
    o[11] = 0xff;
    o[12] = 0xfe;
    o[13] = mac[3];
    o[14] = mac[4];
    o[15] = mac[5];
    Ipv6Address::from(o)
}
