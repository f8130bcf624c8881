//! The socket interface a network component implements (see
//! [`crate::component::SocketProvider`]), next to [`crate::fs::File`].
//!
//! The system-call layer (`syscall/ipc.rs`) copies socket addresses in and
//! out of the app's memory and does all the waiting: like every file, a
//! socket never blocks; it answers `EAGAIN` (or `EINPROGRESS` for a
//! connect) and calls [`crate::sched::notify_io`] when its readiness may
//! have changed. Addresses are raw `struct sockaddr` bytes as the app
//! passed them; the component parses and validates them.

use crate::errno::Errno;
use crate::fs::File;
use alloc::sync::Arc;
use alloc::vec::Vec;

pub const AF_UNIX: u32 = 1;
pub const AF_INET: u32 = 2;
pub const AF_INET6: u32 = 10;
pub const SOCK_STREAM: u32 = 1;
pub const SOCK_DGRAM: u32 = 2;
pub const SOCK_NONBLOCK: u32 = 0o4000;
pub const SOCK_CLOEXEC: u32 = 0o2000000;

pub const MSG_OOB: u32 = 0x1;
pub const MSG_PEEK: u32 = 0x2;
pub const MSG_TRUNC: u32 = 0x20;
pub const MSG_DONTWAIT: u32 = 0x40;
pub const MSG_WAITALL: u32 = 0x100;
pub const MSG_NOSIGNAL: u32 = 0x4000;

pub const SOL_SOCKET: i32 = 1;
pub const SO_REUSEADDR: i32 = 2;
pub const SO_TYPE: i32 = 3;
pub const SO_ERROR: i32 = 4;
pub const SO_BROADCAST: i32 = 6;
pub const SO_SNDBUF: i32 = 7;
pub const SO_RCVBUF: i32 = 8;
pub const SO_KEEPALIVE: i32 = 9;
pub const SO_LINGER: i32 = 13;
pub const SO_REUSEPORT: i32 = 15;
pub const SO_RCVTIMEO: i32 = 20;
pub const SO_SNDTIMEO: i32 = 21;
pub const SO_ACCEPTCONN: i32 = 30;
pub const SO_DOMAIN: i32 = 39;
pub const SO_PROTOCOL: i32 = 38;

pub const IPPROTO_IP: i32 = 0;
pub const IPPROTO_TCP: i32 = 6;
pub const IPPROTO_UDP: i32 = 17;
pub const IPPROTO_IPV6: i32 = 41;
pub const IP_TTL: i32 = 2;
pub const IPV6_UNICAST_HOPS: i32 = 16;
pub const IPV6_V6ONLY: i32 = 26;
pub const TCP_NODELAY: i32 = 1;
pub const TCP_KEEPIDLE: i32 = 4;
pub const TCP_KEEPINTVL: i32 = 5;
pub const TCP_KEEPCNT: i32 = 6;

/// What a socket of a network component can do beyond [`File`].
pub trait Socket: Send + Sync {
    fn bind(&self, addr: &[u8]) -> Result<(), Errno>;
    fn listen(&self, backlog: i32) -> Result<(), Errno>;
    /// Take one established connection and its peer's address; `EAGAIN`
    /// when none is queued.
    fn accept(&self) -> Result<(Arc<dyn File>, Vec<u8>), Errno>;
    /// Start connecting: `Ok` when done at once (datagram sockets),
    /// `EINPROGRESS` when a handshake was started.
    fn connect(&self, addr: &[u8]) -> Result<(), Errno>;
    /// The outcome of a started connect: `Ok` when connected, `EAGAIN`
    /// while in progress, the error when it failed (reported once, as
    /// `SO_ERROR` does).
    fn connect_result(&self) -> Result<(), Errno>;
    fn local_addr(&self) -> Result<Vec<u8>, Errno>;
    fn peer_addr(&self) -> Result<Vec<u8>, Errno>;
    /// Send (part of) `buf`; `to` for unconnected datagram sockets.
    fn send_to(&self, buf: &[u8], flags: u32, to: Option<&[u8]>) -> Result<usize, Errno>;
    /// Receive into `buf`: (bytes, the datagram's length before
    /// truncation, the sender's address for datagram sockets).
    fn recv_from(
        &self,
        buf: &mut [u8],
        flags: u32,
    ) -> Result<(usize, usize, Option<Vec<u8>>), Errno>;
    fn setsockopt(&self, level: i32, name: i32, val: &[u8]) -> Result<(), Errno>;
    /// The option's value (usually a 4-byte int).
    fn getsockopt(&self, level: i32, name: i32) -> Result<Vec<u8>, Errno>;
    /// SOCK_STREAM or SOCK_DGRAM.
    fn sock_type(&self) -> u32;
}
