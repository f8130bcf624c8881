//! Xenstore client: the hierarchical key-value store through which a guest
//! learns its name and domid and meets its device backends.
//!
//! The guest talks to `xenstored` over one shared page
//! (`start_info.store_mfn`) holding two 1 KiB byte rings — requests and
//! responses — and an event channel (`start_info.store_evtchn`). Each
//! message is a 16-byte header `{type, req_id, tx_id, len}` (little-endian
//! u32s; the *xs_wire* format) followed by `len` bytes of payload
//! (at most 4096):
//!
//! | request | payload | reply payload |
//! |---|---|---|
//! | READ | `path\0` | the value (no NUL) |
//! | WRITE | `path\0value` | `OK\0` |
//! | DIRECTORY | `path\0` | `name\0name\0...` |
//! | WATCH | `path\0token\0` | `OK\0`, then WATCH_EVENTs |
//! | UNWATCH | `path\0token\0` | `OK\0` |
//!
//! A failed request gets an ERROR reply whose payload is an errno name
//! (`ENOENT\0`). A WATCH_EVENT (`path\0token\0`) can arrive at any time,
//! also between a request and its reply; the client queues those.
//! Relative paths are relative to `/local/domain/<domid>/`.
//!
//! The codec and the client are host-tested against a fake xenstored.

use crate::abi::{XenstoreInterface, XENSTORE_PAYLOAD_MAX, XENSTORE_RING_SIZE};
use core::ptr::{addr_of, addr_of_mut};
use core::sync::atomic::{fence, Ordering};

/// Message types (`enum xsd_sockmsg_type`).
pub mod msg {
    pub const DIRECTORY: u32 = 1;
    pub const READ: u32 = 2;
    pub const WATCH: u32 = 4;
    pub const UNWATCH: u32 = 5;
    pub const TRANSACTION_START: u32 = 6;
    pub const TRANSACTION_END: u32 = 7;
    pub const WRITE: u32 = 11;
    pub const MKDIR: u32 = 12;
    pub const RM: u32 = 13;
    pub const WATCH_EVENT: u32 = 15;
    pub const ERROR: u32 = 16;
}

/// The xs_wire message header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub kind: u32,
    pub req_id: u32,
    pub tx_id: u32,
    pub len: u32,
}

impl Header {
    pub const SIZE: usize = 16;

    pub fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        for (i, v) in [self.kind, self.req_id, self.tx_id, self.len]
            .into_iter()
            .enumerate()
        {
            b[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    pub fn from_bytes(b: &[u8; 16]) -> Header {
        let w = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Header {
            kind: w(0),
            req_id: w(4),
            tx_id: w(8),
            len: w(12),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XsError {
    /// xenstored answered with an error (`ENOENT`, `EACCES`, ...).
    Server(ErrName),
    /// The request would exceed XENSTORE_PAYLOAD_MAX.
    TooLong,
    /// The reply does not fit the caller's buffer.
    BufferTooSmall,
    /// The server broke the protocol (oversized message, wrong reply type).
    Protocol,
    /// The peer never answered (the wait budget ran out).
    Timeout,
}

/// An errno name from an ERROR reply (up to 15 bytes).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ErrName {
    bytes: [u8; 15],
    len: u8,
}

impl ErrName {
    pub fn new(s: &[u8]) -> ErrName {
        let s = s.split(|&b| b == 0).next().unwrap_or(&[]);
        let n = s.len().min(15);
        let mut bytes = [0; 15];
        bytes[..n].copy_from_slice(&s[..n]);
        ErrName {
            bytes,
            len: n as u8,
        }
    }
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("?")
    }
}

impl core::fmt::Debug for ErrName {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl core::fmt::Display for XsError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            XsError::Server(e) => write!(f, "xenstore error {}", e.as_str()),
            XsError::TooLong => f.write_str("xenstore request longer than 4096 bytes"),
            XsError::BufferTooSmall => f.write_str("xenstore reply larger than the buffer"),
            XsError::Protocol => f.write_str("xenstore protocol error"),
            XsError::Timeout => f.write_str("xenstore did not answer"),
        }
    }
}

/// Encode one message (header + the concatenated `parts`) into `out`.
pub fn encode(
    out: &mut [u8],
    kind: u32,
    req_id: u32,
    tx_id: u32,
    parts: &[&[u8]],
) -> Result<usize, XsError> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if len > XENSTORE_PAYLOAD_MAX {
        return Err(XsError::TooLong);
    }
    let total = Header::SIZE + len;
    if out.len() < total {
        return Err(XsError::BufferTooSmall);
    }
    let h = Header {
        kind,
        req_id,
        tx_id,
        len: len as u32,
    };
    out[..16].copy_from_slice(&h.to_bytes());
    let mut at = 16;
    for p in parts {
        out[at..at + p.len()].copy_from_slice(p);
        at += p.len();
    }
    Ok(total)
}

/// The names in a DIRECTORY reply.
pub fn directory_entries(payload: &[u8]) -> impl Iterator<Item = &[u8]> {
    payload.split(|&b| b == 0).filter(|s| !s.is_empty())
}

/// Split a WATCH_EVENT payload into (path, token).
pub fn watch_event(payload: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut it = payload.split(|&b| b == 0);
    let path = it.next()?;
    let token = it.next()?;
    Some((path, token))
}

/// How the client notifies xenstored and waits for it (event channel
/// send, and block-until-event on Xen).
pub trait Transport {
    fn notify(&self);
    fn wait(&self);
}

const MAX_QUEUED_EVENTS: usize = 4;
const EVENT_BYTES: usize = 256;

/// A xenstore connection over one ring page.
pub struct Xenstore {
    ring: *mut XenstoreInterface,
    next_req_id: u32,
    events: [([u8; EVENT_BYTES], usize); MAX_QUEUED_EVENTS],
    nevents: usize,
    /// How many times to wait for the peer before giving up.
    pub wait_budget: u32,
}

// SAFETY: one vCPU; the ring is accessed with volatile reads and writes.
unsafe impl Send for Xenstore {}

impl Xenstore {
    /// # Safety
    /// `ring` must point at the mapped xenstore ring page, used by nobody else.
    pub unsafe fn new(ring: *mut XenstoreInterface) -> Xenstore {
        Xenstore {
            ring,
            next_req_id: 1,
            events: [([0; EVENT_BYTES], 0); MAX_QUEUED_EVENTS],
            nevents: 0,
            wait_budget: 100_000,
        }
    }

    fn send_bytes(&mut self, mut data: &[u8], t: &dyn Transport) -> Result<(), XsError> {
        let mut waits = 0;
        while !data.is_empty() {
            // SAFETY: valid ring page (constructor contract).
            let (cons, mut prod) = unsafe {
                (
                    addr_of!((*self.ring).req_cons).read_volatile(),
                    addr_of!((*self.ring).req_prod).read_volatile(),
                )
            };
            fence(Ordering::Acquire);
            let free = XENSTORE_RING_SIZE.saturating_sub(prod.wrapping_sub(cons) as usize);
            let n = free.min(data.len());
            for &b in &data[..n] {
                // SAFETY: index masked into the request ring.
                unsafe {
                    addr_of_mut!((*self.ring).req[prod as usize % XENSTORE_RING_SIZE])
                        .write_volatile(b)
                };
                prod = prod.wrapping_add(1);
            }
            fence(Ordering::Release);
            // SAFETY: valid ring page.
            unsafe { addr_of_mut!((*self.ring).req_prod).write_volatile(prod) };
            t.notify();
            data = &data[n..];
            if n == 0 {
                waits += 1;
                if waits > self.wait_budget {
                    return Err(XsError::Timeout);
                }
                t.wait();
            }
        }
        Ok(())
    }

    /// Read exactly `out.len()` bytes of the response ring (or skip them if `out` is None).
    fn recv_bytes(
        &mut self,
        mut len: usize,
        mut out: Option<&mut [u8]>,
        t: &dyn Transport,
    ) -> Result<(), XsError> {
        let mut at = 0;
        let mut waits = 0;
        while len > 0 {
            // SAFETY: valid ring page.
            let (mut cons, prod) = unsafe {
                (
                    addr_of!((*self.ring).rsp_cons).read_volatile(),
                    addr_of!((*self.ring).rsp_prod).read_volatile(),
                )
            };
            fence(Ordering::Acquire);
            let avail = prod.wrapping_sub(cons) as usize;
            if avail > XENSTORE_RING_SIZE {
                return Err(XsError::Protocol);
            }
            let n = avail.min(len);
            for _ in 0..n {
                // SAFETY: index masked into the response ring.
                let b = unsafe {
                    addr_of!((*self.ring).rsp[cons as usize % XENSTORE_RING_SIZE]).read_volatile()
                };
                if let Some(o) = out.as_deref_mut() {
                    o[at] = b;
                }
                at += 1;
                cons = cons.wrapping_add(1);
            }
            fence(Ordering::Release);
            // SAFETY: valid ring page.
            unsafe { addr_of_mut!((*self.ring).rsp_cons).write_volatile(cons) };
            len -= n;
            if n > 0 {
                t.notify();
            } else {
                waits += 1;
                if waits > self.wait_budget {
                    return Err(XsError::Timeout);
                }
                t.wait();
            }
        }
        Ok(())
    }

    fn recv_header(&mut self, t: &dyn Transport) -> Result<Header, XsError> {
        let mut h = [0u8; 16];
        self.recv_bytes(16, Some(&mut h), t)?;
        let h = Header::from_bytes(&h);
        if h.len as usize > XENSTORE_PAYLOAD_MAX {
            return Err(XsError::Protocol);
        }
        Ok(h)
    }

    /// Send one request and wait for its reply; the payload lands in
    /// `reply`, its length is returned. Watch events met on the way are queued.
    pub fn request(
        &mut self,
        kind: u32,
        parts: &[&[u8]],
        reply: &mut [u8],
        t: &dyn Transport,
    ) -> Result<usize, XsError> {
        let req_id = self.next_req_id;
        self.next_req_id = self.next_req_id.wrapping_add(1);
        let mut hdr = [0u8; 16];
        let len: usize = parts.iter().map(|p| p.len()).sum();
        encode(&mut hdr, kind, req_id, 0, &[])?;
        if len > XENSTORE_PAYLOAD_MAX {
            return Err(XsError::TooLong);
        }
        hdr[12..16].copy_from_slice(&(len as u32).to_le_bytes());
        self.send_bytes(&hdr, t)?;
        for p in parts {
            self.send_bytes(p, t)?;
        }
        loop {
            let h = self.recv_header(t)?;
            let n = h.len as usize;
            if h.kind == msg::WATCH_EVENT {
                let mut ev = [0u8; EVENT_BYTES];
                if n <= EVENT_BYTES {
                    self.recv_bytes(n, Some(&mut ev[..n]), t)?;
                    if self.nevents < MAX_QUEUED_EVENTS {
                        self.events[self.nevents] = (ev, n);
                        self.nevents += 1;
                    }
                } else {
                    self.recv_bytes(n, None, t)?;
                }
                continue;
            }
            if h.req_id != req_id {
                // A stale reply (an earlier request that timed out): drop it.
                self.recv_bytes(n, None, t)?;
                continue;
            }
            if h.kind == msg::ERROR {
                let mut e = [0u8; 16];
                let keep = n.min(16);
                self.recv_bytes(keep, Some(&mut e[..keep]), t)?;
                self.recv_bytes(n - keep, None, t)?;
                return Err(XsError::Server(ErrName::new(&e[..keep])));
            }
            if h.kind != kind {
                self.recv_bytes(n, None, t)?;
                return Err(XsError::Protocol);
            }
            if n > reply.len() {
                self.recv_bytes(n, None, t)?;
                return Err(XsError::BufferTooSmall);
            }
            self.recv_bytes(n, Some(&mut reply[..n]), t)?;
            return Ok(n);
        }
    }

    /// Read `path` into `buf`; returns the value.
    pub fn read<'b>(
        &mut self,
        path: &str,
        buf: &'b mut [u8],
        t: &dyn Transport,
    ) -> Result<&'b [u8], XsError> {
        let n = self.request(msg::READ, &[path.as_bytes(), b"\0"], buf, t)?;
        Ok(&buf[..n])
    }

    /// Write `value` at `path` (creating it).
    pub fn write(&mut self, path: &str, value: &[u8], t: &dyn Transport) -> Result<(), XsError> {
        let mut ok = [0u8; 8];
        self.request(msg::WRITE, &[path.as_bytes(), b"\0", value], &mut ok, t)
            .map(|_| ())
    }

    /// List the children of `path` (reply in `buf`, iterate with [`directory_entries`]).
    pub fn directory<'b>(
        &mut self,
        path: &str,
        buf: &'b mut [u8],
        t: &dyn Transport,
    ) -> Result<&'b [u8], XsError> {
        let n = self.request(msg::DIRECTORY, &[path.as_bytes(), b"\0"], buf, t)?;
        Ok(&buf[..n])
    }

    /// Watch `path` (and everything below it); events carry `token`.
    /// xenstored fires one event at once for the current state.
    pub fn watch(&mut self, path: &str, token: &str, t: &dyn Transport) -> Result<(), XsError> {
        let mut ok = [0u8; 8];
        let parts: [&[u8]; 4] = [path.as_bytes(), b"\0", token.as_bytes(), b"\0"];
        self.request(msg::WATCH, &parts, &mut ok, t).map(|_| ())
    }

    pub fn unwatch(&mut self, path: &str, token: &str, t: &dyn Transport) -> Result<(), XsError> {
        let mut ok = [0u8; 8];
        let parts: [&[u8]; 4] = [path.as_bytes(), b"\0", token.as_bytes(), b"\0"];
        self.request(msg::UNWATCH, &parts, &mut ok, t).map(|_| ())
    }

    /// Wait for the next watch event; copies its payload (`path\0token\0`)
    /// into `buf` and returns it (split it with [`watch_event`]).
    pub fn next_watch_event<'b>(
        &mut self,
        buf: &'b mut [u8],
        t: &dyn Transport,
    ) -> Result<&'b [u8], XsError> {
        loop {
            if self.nevents > 0 {
                let (ev, n) = self.events[0];
                self.events.copy_within(1..self.nevents, 0);
                self.nevents -= 1;
                if n > buf.len() {
                    return Err(XsError::BufferTooSmall);
                }
                buf[..n].copy_from_slice(&ev[..n]);
                return Ok(&buf[..n]);
            }
            let h = self.recv_header(t)?;
            let n = h.len as usize;
            if h.kind == msg::WATCH_EVENT && n <= EVENT_BYTES {
                let mut ev = [0u8; EVENT_BYTES];
                self.recv_bytes(n, Some(&mut ev[..n]), t)?;
                self.events[0] = (ev, n);
                self.nevents = 1;
            } else {
                self.recv_bytes(n, None, t)?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    #[test]
    fn header_bytes_are_xs_wire() {
        let h = Header {
            kind: msg::READ,
            req_id: 0x0102_0304,
            tx_id: 0,
            len: 6,
        };
        let b = h.to_bytes();
        assert_eq!(b, [2, 0, 0, 0, 4, 3, 2, 1, 0, 0, 0, 0, 6, 0, 0, 0]);
        assert_eq!(Header::from_bytes(&b), h);
    }

    #[test]
    fn encode_write_request() {
        let mut out = [0u8; 64];
        let n = encode(&mut out, msg::WRITE, 9, 0, &[b"data/x", b"\0", b"hello"]).unwrap();
        assert_eq!(n, 16 + 12);
        assert_eq!(&out[16..n], b"data/x\0hello");
        assert_eq!(Header::from_bytes(out[..16].try_into().unwrap()).len, 12);
        let big = vec![b'a'; 4097];
        assert_eq!(
            encode(&mut [0u8; 8192], msg::WRITE, 1, 0, &[&big]),
            Err(XsError::TooLong)
        );
        assert_eq!(
            encode(&mut [0u8; 20], msg::READ, 1, 0, &[b"abcdefgh"]),
            Err(XsError::BufferTooSmall)
        );
    }

    #[test]
    fn decode_directory_and_watch_event() {
        let d: Vec<&[u8]> = directory_entries(b"domid\0name\0data\0").collect();
        assert_eq!(d, [&b"domid"[..], b"name", b"data"]);
        assert_eq!(directory_entries(b"").count(), 0);
        assert_eq!(
            watch_event(b"data/x\0tok\0"),
            Some((&b"data/x"[..], &b"tok"[..]))
        );
        assert_eq!(watch_event(b"nonul"), None);
    }

    /// A fake xenstored: a map of values and a list of watches, answering
    /// whatever complete requests are in the ring each time it runs.
    struct Fake {
        ring: *mut XenstoreInterface,
        store: RefCell<BTreeMap<Vec<u8>, Vec<u8>>>,
        watches: RefCell<Vec<(Vec<u8>, Vec<u8>)>>,
        inbuf: RefCell<Vec<u8>>,
        outq: RefCell<Vec<u8>>,
        /// Send a watch event before every reply (to test queuing).
        noisy: bool,
    }

    impl Fake {
        #[allow(clippy::mut_from_ref)]
        fn ring(&self) -> &mut XenstoreInterface {
            // SAFETY: test-only, single-threaded; the box outlives the fake.
            unsafe { &mut *self.ring }
        }
        fn reply(&self, kind: u32, req_id: u32, payload: &[u8]) {
            let mut m = vec![0u8; 16 + payload.len()];
            encode(&mut m, kind, req_id, 0, &[payload]).unwrap();
            self.outq.borrow_mut().extend(m);
        }
        fn run(&self) {
            let r = self.ring();
            while r.req_cons != r.req_prod {
                self.inbuf
                    .borrow_mut()
                    .push(r.req[r.req_cons as usize % XENSTORE_RING_SIZE]);
                r.req_cons = r.req_cons.wrapping_add(1);
            }
            loop {
                let msg = {
                    let b = self.inbuf.borrow();
                    if b.len() < 16 {
                        break;
                    }
                    let h = Header::from_bytes(b[..16].try_into().unwrap());
                    if b.len() < 16 + h.len as usize {
                        break;
                    }
                    (h, b[16..16 + h.len as usize].to_vec())
                };
                self.inbuf.borrow_mut().drain(..16 + msg.1.len());
                self.handle(msg.0, &msg.1);
            }
            // Push replies into the response ring as far as they fit.
            let mut q = self.outq.borrow_mut();
            let mut i = 0;
            while i < q.len() && r.rsp_prod.wrapping_sub(r.rsp_cons) < XENSTORE_RING_SIZE as u32 {
                r.rsp[r.rsp_prod as usize % XENSTORE_RING_SIZE] = q[i];
                r.rsp_prod = r.rsp_prod.wrapping_add(1);
                i += 1;
            }
            q.drain(..i);
        }
        fn handle(&self, h: Header, p: &[u8]) {
            if self.noisy {
                self.reply(msg::WATCH_EVENT, 0, b"noise\0tok\0");
            }
            let parts: Vec<&[u8]> = p.splitn(2, |&b| b == 0).collect();
            let path = parts[0].to_vec();
            match h.kind {
                msg::READ => match self.store.borrow().get(&path) {
                    Some(v) => self.reply(msg::READ, h.req_id, v),
                    None => self.reply(msg::ERROR, h.req_id, b"ENOENT\0"),
                },
                msg::WRITE => {
                    self.store
                        .borrow_mut()
                        .insert(path.clone(), parts[1].to_vec());
                    self.reply(msg::WRITE, h.req_id, b"OK\0");
                    for (w, tok) in self.watches.borrow().iter() {
                        if path.starts_with(w) {
                            let mut ev = path.clone();
                            ev.push(0);
                            ev.extend(tok);
                            ev.push(0);
                            self.reply(msg::WATCH_EVENT, 0, &ev);
                        }
                    }
                }
                msg::DIRECTORY => {
                    let mut out = Vec::new();
                    let mut prefix = path.clone();
                    prefix.push(b'/');
                    for k in self.store.borrow().keys() {
                        if let Some(rest) = k.strip_prefix(&prefix[..]) {
                            out.extend(rest);
                            out.push(0);
                        }
                    }
                    self.reply(msg::DIRECTORY, h.req_id, &out);
                }
                msg::WATCH => {
                    let tok = parts[1].split(|&b| b == 0).next().unwrap().to_vec();
                    self.watches.borrow_mut().push((path.clone(), tok.clone()));
                    self.reply(msg::WATCH, h.req_id, b"OK\0");
                    let mut ev = path.clone();
                    ev.push(0);
                    ev.extend(tok);
                    ev.push(0);
                    self.reply(msg::WATCH_EVENT, 0, &ev);
                }
                _ => self.reply(msg::ERROR, h.req_id, b"EINVAL\0"),
            }
        }
    }

    impl Transport for Fake {
        fn notify(&self) {}
        fn wait(&self) {
            self.run();
        }
    }

    fn setup(noisy: bool) -> (Box<XenstoreInterface>, Fake) {
        // SAFETY: plain bytes and integers: all-zero is valid.
        let mut ring: Box<XenstoreInterface> = Box::new(unsafe { core::mem::zeroed() });
        // Start near the u32 wrap to exercise index arithmetic.
        ring.req_cons = u32::MAX - 20;
        ring.req_prod = u32::MAX - 20;
        ring.rsp_cons = u32::MAX - 3;
        ring.rsp_prod = u32::MAX - 3;
        let fake = Fake {
            ring: &mut *ring,
            store: RefCell::new(BTreeMap::new()),
            watches: RefCell::new(Vec::new()),
            inbuf: RefCell::new(Vec::new()),
            outq: RefCell::new(Vec::new()),
            noisy,
        };
        fake.store
            .borrow_mut()
            .insert(b"domid".to_vec(), b"1".to_vec());
        fake.store
            .borrow_mut()
            .insert(b"name".to_vec(), b"xenlab".to_vec());
        (ring, fake)
    }

    #[test]
    fn read_write_directory_watch_against_fake_xenstored() {
        let (mut ring, fake) = setup(false);
        // SAFETY: the box outlives the client.
        let mut xs = unsafe { Xenstore::new(&mut *ring) };
        let mut buf = [0u8; 4096];
        assert_eq!(xs.read("name", &mut buf, &fake).unwrap(), b"xenlab");
        assert_eq!(xs.read("domid", &mut buf, &fake).unwrap(), b"1");
        match xs.read("nope", &mut buf, &fake) {
            Err(XsError::Server(e)) => assert_eq!(e.as_str(), "ENOENT"),
            other => panic!("{other:?}"),
        }
        xs.watch("data", "t1", &fake).unwrap();
        let mut ev = [0u8; 256];
        let first = xs.next_watch_event(&mut ev, &fake).unwrap();
        assert_eq!(watch_event(first), Some((&b"data"[..], &b"t1"[..])));
        // A value longer than the 1 KiB rings streams through both of them.
        let long: Vec<u8> = (0..3000).map(|i| b'a' + (i % 26) as u8).collect();
        xs.write("data/long", &long, &fake).unwrap();
        assert_eq!(xs.read("data/long", &mut buf, &fake).unwrap(), &long[..]);
        let ev1 = xs.next_watch_event(&mut ev, &fake).unwrap();
        assert_eq!(watch_event(ev1).unwrap().0, b"data/long");
        xs.write("data/b", b"2", &fake).unwrap();
        let names: Vec<&[u8]> =
            directory_entries(xs.directory("data", &mut buf, &fake).unwrap()).collect();
        assert_eq!(names, [&b"b"[..], b"long"]);
        assert!(matches!(
            xs.read("data/long", &mut [0u8; 10], &fake),
            Err(XsError::BufferTooSmall)
        ));
        // The connection is still in sync after a too-small buffer.
        assert_eq!(xs.read("domid", &mut buf, &fake).unwrap(), b"1");
    }

    #[test]
    fn watch_events_between_request_and_reply_are_queued() {
        let (mut ring, fake) = setup(true);
        // SAFETY: the box outlives the client.
        let mut xs = unsafe { Xenstore::new(&mut *ring) };
        let mut buf = [0u8; 64];
        assert_eq!(xs.read("name", &mut buf, &fake).unwrap(), b"xenlab");
        let mut ev = [0u8; 64];
        let e = xs.next_watch_event(&mut ev, &fake).unwrap();
        assert_eq!(watch_event(e), Some((&b"noise"[..], &b"tok"[..])));
    }

    #[test]
    fn a_silent_peer_times_out() {
        struct Dead;
        impl Transport for Dead {
            fn notify(&self) {}
            fn wait(&self) {}
        }
        // SAFETY: plain bytes and integers: all-zero is valid.
        let mut ring: Box<XenstoreInterface> = Box::new(unsafe { core::mem::zeroed() });
        // SAFETY: the box outlives the client.
        let mut xs = unsafe { Xenstore::new(&mut *ring) };
        xs.wait_budget = 5;
        assert_eq!(
            xs.read("name", &mut [0u8; 8], &Dead).unwrap_err(),
            XsError::Timeout
        );
    }
}
