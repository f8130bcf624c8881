//! Netfront: the guest half of Xen's split network driver (`vif`), one
//! queue, copy-mode receive (docs/xen.md, "Netfront").
//!
//! The toolstack creates `device/vif/0` (frontend, ours) and a backend
//! directory in dom0 (netback). The frontend reads `backend`,
//! `backend-id` and `mac`, shares two one-page rings with the backend
//! (transmit and receive, the `io/ring.h` layout: four indices, padding to
//! 64 bytes, then the slots), grants them and one page per posted receive
//! buffer, allocates an event channel the backend binds to, and publishes
//! `tx-ring-ref`, `rx-ring-ref`, `event-channel`, `request-rx-copy = 1` and
//! `feature-rx-notify = 1` (and `feature-no-csum-offload = 1`: the
//! backend completes checksums dom0's stack left blank) before switching its `state` to Connected and
//! waiting for the backend's `state` to become Connected (xenbus states).
//!
//! Transmit: a frame is copied into a free granted page, a request
//! `{gref, offset 0, flags 0, id, size}` is pushed, and the backend is
//! notified only if it asked (`req_event`, the
//! `RING_PUSH_REQUESTS_AND_CHECK_NOTIFY` rule). Receive: each response
//! `{id, offset, flags, status}` names the buffer the backend copied a
//! frame into (status = its length, negative = error); the frame is copied
//! out and the buffer posted again. Every index and id the backend writes
//! is checked against the ring and the requests in flight: a bad one stops
//! the guest with a message (exit code 253).
//!
//! The ring arithmetic ([`RingIndex`], [`check_responses`],
//! [`push_needs_notify`]) and the xenstore value parsing are host-tested.

/// Slots in each ring: `(4096 - 64) / slot size` rounded down to a power
/// of two (12-byte transmit slots, 8-byte receive slots: 256 both).
pub const RING_SIZE: u32 = 256;
/// Offset of the first slot in a shared ring page (`io/ring.h`: four u32
/// indices, then private and padding bytes up to 64).
pub const RING_SLOTS_OFFSET: usize = 64;
/// Transmit buffers (one page each) in flight at most.
pub const TX_BUFS: usize = 32;
/// Receive buffers (one page each) kept posted.
pub const RX_BUFS: usize = 64;
/// The link MTU (no scatter-gather: a frame fits one page).
pub const MTU: usize = 1500;

/// xenbus states (`io/xenbus.h`).
pub mod xenbus {
    pub const INITIALISING: u32 = 1;
    pub const INIT_WAIT: u32 = 2;
    pub const INITIALISED: u32 = 3;
    pub const CONNECTED: u32 = 4;
    pub const CLOSING: u32 = 5;
    pub const CLOSED: u32 = 6;
}

/// Response flags and status (`io/netif.h`).
pub mod netif {
    /// `NETRXF_more_data`: the frame continues in the next slot (only with
    /// feature-sg, which we do not offer).
    pub const RXF_MORE_DATA: u16 = 1 << 2;
    /// `NETRXF_extra_info`: an extra-info slot follows (only with GSO).
    pub const RXF_EXTRA_INFO: u16 = 1 << 3;
    /// `NETIF_RSP_OKAY`.
    pub const RSP_OKAY: i16 = 0;
}

/// A transmit request slot (`netif_tx_request`, 12 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxRequest {
    pub gref: u32,
    pub offset: u16,
    pub flags: u16,
    pub id: u16,
    pub size: u16,
}

/// A transmit response slot (`netif_tx_response`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxResponse {
    pub id: u16,
    pub status: i16,
}

/// A receive request slot (`netif_rx_request`, 8 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RxRequest {
    pub id: u16,
    pub pad: u16,
    pub gref: u32,
}

/// A receive response slot (`netif_rx_response`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RxResponse {
    pub id: u16,
    pub offset: u16,
    pub flags: u16,
    pub status: i16,
}

/// Transmit slot size (the larger of request and response).
pub const TX_SLOT_BYTES: usize = 12;
/// Receive slot size.
pub const RX_SLOT_BYTES: usize = 8;

const _: () = {
    assert!(core::mem::size_of::<TxRequest>() == TX_SLOT_BYTES);
    assert!(core::mem::size_of::<TxResponse>() <= TX_SLOT_BYTES);
    assert!(core::mem::size_of::<RxResponse>() == RX_SLOT_BYTES);
    assert!(core::mem::size_of::<TxRequest>() == 12);
    assert!(core::mem::size_of::<TxResponse>() == 4);
    assert!(core::mem::size_of::<RxRequest>() == 8);
    assert!(core::mem::size_of::<RxResponse>() == 8);
    // A ring's slots fit its page.
    assert!(RING_SLOTS_OFFSET + RING_SIZE as usize * TX_SLOT_BYTES <= 4096);
    assert!(RX_BUFS <= RING_SIZE as usize);
};

/// Free-running ring index (wraps at 2^32; the slot is `index % RING_SIZE`).
pub type RingIndex = u32;

/// The slot an index names.
pub fn slot(i: RingIndex) -> usize {
    (i % RING_SIZE) as usize
}

/// How many new responses the backend published (`rsp_prod`), checked:
/// at most the requests outstanding (`req_prod - rsp_cons`). `None` when
/// the backend's index is impossible.
pub fn check_responses(
    rsp_prod: RingIndex,
    rsp_cons: RingIndex,
    req_prod: RingIndex,
) -> Option<u32> {
    let new = rsp_prod.wrapping_sub(rsp_cons);
    let outstanding = req_prod.wrapping_sub(rsp_cons);
    (new <= outstanding && outstanding <= RING_SIZE).then_some(new)
}

/// After moving `req_prod` from `old` to `new`: whether the backend asked
/// to be notified (its `req_event` lies in `(old, new]`), the rule of
/// `RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`.
pub fn push_needs_notify(old: RingIndex, new: RingIndex, req_event: RingIndex) -> bool {
    new.wrapping_sub(req_event) < new.wrapping_sub(old)
}

/// Parse a MAC address as xenstore holds it (`00:16:3e:01:02:03`).
pub fn parse_mac(s: &[u8]) -> Option<[u8; 6]> {
    let s = core::str::from_utf8(s).ok()?;
    let mut mac = [0u8; 6];
    let mut parts = s.trim().split(':');
    for b in mac.iter_mut() {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Parse a decimal xenstore value (a state, a domid).
pub fn parse_u32(s: &[u8]) -> Option<u32> {
    core::str::from_utf8(s).ok()?.trim().parse().ok()
}

#[cfg(all(target_os = "none", feature = "net", feature = "runtime"))]
pub use target::{init, take_wakeup};

#[cfg(all(target_os = "none", feature = "net", feature = "runtime"))]
mod target {
    use super::*;
    use crate::boot::StoreTransport;
    use crate::boot::Xen;
    use crate::events;
    use crate::hypercall;
    use crate::mm::PAGE_SIZE;
    use crate::xenstore::Xenstore;
    use alloc::format;
    use alloc::string::String;
    use alloc::sync::Arc;
    use alloc::vec::Vec;
    use core::fmt::Write;
    use core::ptr::{addr_of, addr_of_mut};
    use core::sync::atomic::{fence, AtomicU64, Ordering};
    use unikernel_runtime::device::{register_net, NetDevice};

    /// The netfront port (u64::MAX until connected): its events end a
    /// `block_until` (see [`take_wakeup`]).
    static PORT: AtomicU64 = AtomicU64::new(u64::MAX);

    /// Whether the netfront port fired since the last call (a frame
    /// arrived or transmit slots came back): the idle loop stops blocking.
    pub fn take_wakeup() -> bool {
        let port = PORT.load(Ordering::Relaxed);
        port <= u32::MAX as u64 && events::take_fired(port as u32)
    }

    /// How long to wait for the backend at each xenbus step.
    const BACKEND_TIMEOUT_NS: u64 = 10_000_000_000;

    fn fail(msg: &str) -> ! {
        let _ = writeln!(crate::Console, "unikernel: xen netfront: {msg}");
        crate::shutdown(crate::EXIT_KERNEL_FAULT)
    }

    /// The four indices at the start of a shared ring page.
    #[repr(C)]
    struct SharedRing {
        req_prod: u32,
        req_event: u32,
        rsp_prod: u32,
        rsp_event: u32,
    }

    /// One shared ring page, seen from the frontend.
    struct Ring {
        page: *mut u8,
        /// Slot size: requests and responses share the slots (a union).
        slot_bytes: usize,
        req_prod_pvt: RingIndex,
        rsp_cons: RingIndex,
    }

    impl Ring {
        fn new(page: u64, slot_bytes: usize) -> Ring {
            Ring {
                page: page as *mut u8,
                slot_bytes,
                req_prod_pvt: 0,
                rsp_cons: 0,
            }
        }

        fn shared(&self) -> *mut SharedRing {
            self.page as *mut SharedRing
        }

        /// Start the ring as `SHARED_RING_INIT` does: events at index 1.
        fn init_shared(&self) {
            // SAFETY: the page is ours (zeroed), the backend does not see it yet.
            unsafe {
                let s = self.shared();
                addr_of_mut!((*s).req_event).write_volatile(1);
                addr_of_mut!((*s).rsp_event).write_volatile(1);
            }
        }

        /// A slot as a `T` (a request or response structure).
        fn slot_ptr<T>(&self, i: RingIndex) -> *mut T {
            // Inside the page: slot() < RING_SIZE and the slots
            // fit the page (checked at compile time above).
            debug_assert!(core::mem::size_of::<T>() <= self.slot_bytes);
            (self.page as usize + RING_SLOTS_OFFSET + slot(i) * self.slot_bytes) as *mut T
        }

        fn write_request<T>(&mut self, req: T) {
            let p = self.slot_ptr::<T>(self.req_prod_pvt);
            // SAFETY: a slot inside the ring page; requests in flight never
            // exceed the ring (TX_BUFS/RX_BUFS <= RING_SIZE).
            unsafe { p.write_volatile(req) };
            self.req_prod_pvt = self.req_prod_pvt.wrapping_add(1);
        }

        /// Publish the private requests; whether the backend wants an event.
        fn push_requests(&mut self) -> bool {
            let s = self.shared();
            // SAFETY: the shared indices of our ring page.
            unsafe {
                let old = addr_of!((*s).req_prod).read_volatile();
                fence(Ordering::Release); // requests before the index
                addr_of_mut!((*s).req_prod).write_volatile(self.req_prod_pvt);
                fence(Ordering::SeqCst); // the index before reading req_event
                let event = addr_of!((*s).req_event).read_volatile();
                push_needs_notify(old, self.req_prod_pvt, event)
            }
        }

        /// Responses waiting (checked against the requests outstanding).
        fn pending_responses(&self, what: &str) -> u32 {
            let s = self.shared();
            // SAFETY: the shared indices of our ring page.
            let prod = unsafe { addr_of!((*s).rsp_prod).read_volatile() };
            fence(Ordering::Acquire); // the index before the responses
            match check_responses(prod, self.rsp_cons, self.req_prod_pvt) {
                Some(n) => n,
                None => fail(&format!(
                    "the backend's {what} rsp_prod {prod} is impossible (consumed {}, requested {}, ring of {RING_SIZE})",
                    self.rsp_cons, self.req_prod_pvt
                )),
            }
        }

        fn read_response<T>(&self) -> T {
            // SAFETY: a slot inside the ring page.
            unsafe { self.slot_ptr::<T>(self.rsp_cons).read_volatile() }
        }

        /// Ask for an event when the next response arrives, then look
        /// again (`RING_FINAL_CHECK_FOR_RESPONSES`).
        fn final_check(&self, what: &str) -> bool {
            let s = self.shared();
            // SAFETY: the shared indices of our ring page.
            unsafe { addr_of_mut!((*s).rsp_event).write_volatile(self.rsp_cons.wrapping_add(1)) };
            fence(Ordering::SeqCst);
            self.pending_responses(what) != 0
        }
    }

    /// A granted page: its address (identity-mapped) and grant reference.
    #[derive(Clone, Copy)]
    struct Buf {
        va: u64,
        gref: u32,
    }

    struct Queues {
        tx: Ring,
        rx: Ring,
        tx_bufs: [Buf; TX_BUFS],
        /// Transmit buffer ids free for a request.
        tx_free: Vec<u16>,
        tx_in_flight: [bool; TX_BUFS],
        rx_bufs: [Buf; RX_BUFS],
        rx_posted: [bool; RX_BUFS],
        port: u32,
    }

    // SAFETY: one vCPU; the ring pages are touched through volatile
    // accesses under the device's lock only.
    unsafe impl Send for Queues {}

    impl Queues {
        fn notify(&self) {
            let _ = hypercall::evtchn_send(self.port);
        }

        /// Take back the transmit buffers the backend is done with.
        fn reclaim_tx(&mut self) {
            let n = self.tx.pending_responses("transmit");
            for _ in 0..n {
                let rsp: TxResponse = self.tx.read_response();
                let id = rsp.id as usize;
                if id >= TX_BUFS || !self.tx_in_flight[id] {
                    fail(&format!(
                        "the backend answered transmit id {id}, which is not in flight"
                    ));
                }
                self.tx_in_flight[id] = false;
                self.tx_free.push(id as u16);
                self.tx.rsp_cons = self.tx.rsp_cons.wrapping_add(1);
            }
        }

        fn transmit(&mut self, frame: &[u8]) -> bool {
            self.reclaim_tx();
            if frame.len() > MTU + 14 || frame.is_empty() {
                return true; // never fits a link frame: dropped, as a NIC would
            }
            let Some(id) = self.tx_free.pop() else {
                // Full: ask for an event when a slot comes back.
                if self.tx.final_check("transmit") {
                    self.reclaim_tx();
                }
                return false;
            };
            let buf = self.tx_bufs[id as usize];
            // SAFETY: the buffer page is ours (the backend has read access
            // only, and no request for it is in flight); len <= a page.
            unsafe {
                core::ptr::copy_nonoverlapping(frame.as_ptr(), buf.va as *mut u8, frame.len())
            };
            self.tx_in_flight[id as usize] = true;
            self.tx.write_request(TxRequest {
                gref: buf.gref,
                offset: 0,
                flags: 0,
                id,
                size: frame.len() as u16,
            });
            if self.tx.push_requests() {
                self.notify();
            }
            true
        }

        fn post_rx(&mut self, id: usize) {
            self.rx_posted[id] = true;
            self.rx.write_request(RxRequest {
                id: id as u16,
                pad: 0,
                gref: self.rx_bufs[id].gref,
            });
        }

        fn receive(&mut self, out: &mut [u8]) -> Option<usize> {
            loop {
                if self.rx.pending_responses("receive") == 0 && !self.rx.final_check("receive") {
                    return None;
                }
                let rsp: RxResponse = self.rx.read_response();
                let id = rsp.id as usize;
                if id >= RX_BUFS || !self.rx_posted[id] {
                    fail(&format!(
                        "the backend answered receive id {id}, which is not posted"
                    ));
                }
                if rsp.flags & (netif::RXF_MORE_DATA | netif::RXF_EXTRA_INFO) != 0 {
                    fail(&format!(
                        "the backend sent a multi-slot frame (flags {:#x}) without feature-sg/gso",
                        rsp.flags
                    ));
                }
                self.rx.rsp_cons = self.rx.rsp_cons.wrapping_add(1);
                self.rx_posted[id] = false;
                let len = rsp.status.max(0) as usize;
                let off = rsp.offset as usize;
                let got = if rsp.status > netif::RSP_OKAY
                    && off + len <= PAGE_SIZE as usize
                    && len <= out.len()
                {
                    // SAFETY: the range lies in the buffer page, which the
                    // backend finished writing (its response is consumed).
                    unsafe {
                        core::ptr::copy_nonoverlapping(
                            (self.rx_bufs[id].va as usize + off) as *const u8,
                            out.as_mut_ptr(),
                            len,
                        )
                    };
                    Some(len)
                } else {
                    None // an error or an impossible length: the frame is dropped
                };
                self.post_rx(id);
                if self.rx.push_requests() {
                    self.notify();
                }
                if got.is_some() {
                    return got;
                }
            }
        }
    }

    struct Netfront {
        mac: [u8; 6],
        q: spin::Mutex<Queues>,
    }

    impl NetDevice for Netfront {
        fn name(&self) -> &str {
            "vif0"
        }
        fn mac(&self) -> [u8; 6] {
            self.mac
        }
        fn mtu(&self) -> usize {
            MTU
        }
        fn transmit(&self, frame: &[u8]) -> bool {
            self.q.lock().transmit(frame)
        }
        fn can_transmit(&self) -> bool {
            let mut q = self.q.lock();
            q.reclaim_tx();
            !q.tx_free.is_empty()
        }
        fn receive(&self, buf: &mut [u8]) -> Option<usize> {
            self.q.lock().receive(buf)
        }
        fn can_receive(&self) -> bool {
            let q = self.q.lock();
            q.rx.pending_responses("receive") != 0
        }
    }

    struct Store<'a> {
        xs: Xenstore,
        t: StoreTransport,
        xen: &'a Xen,
    }

    impl Store<'_> {
        fn read(&mut self, path: &str) -> Option<Vec<u8>> {
            let mut buf = [0u8; 256];
            self.xs
                .read(path, &mut buf, &self.t)
                .ok()
                .map(|v| v.to_vec())
        }

        fn write(&mut self, path: &str, value: &str) {
            if let Err(e) = self.xs.write(path, value.as_bytes(), &self.t) {
                fail(&format!("cannot write {path} in xenstore: {e}"));
            }
        }

        /// Poll `path` (a xenbus state) until `done` accepts it, or fail
        /// after [`BACKEND_TIMEOUT_NS`].
        fn wait_state(&mut self, path: &str, what: &str, done: impl Fn(u32) -> bool) -> u32 {
            let start = self.xen.system_time_ns();
            loop {
                let state = self.read(path).and_then(|v| parse_u32(&v)).unwrap_or(0);
                if done(state) {
                    return state;
                }
                if matches!(state, xenbus::CLOSING | xenbus::CLOSED) {
                    fail(&format!(
                        "the backend closed ({path} = {state}) instead of {what}"
                    ));
                }
                let now = self.xen.system_time_ns();
                if now.saturating_sub(start) > BACKEND_TIMEOUT_NS {
                    fail(&format!(
                        "the backend did not become {what} in {} s ({path} = {state})",
                        BACKEND_TIMEOUT_NS / 1_000_000_000
                    ));
                }
                self.xen.block_until(now + 5_000_000, false);
            }
        }
    }

    /// A zeroed page granted to `domid`.
    fn granted_page(
        gt: &mut crate::grant::GrantTable,
        xen: &Xen,
        domid: u16,
        readonly: bool,
    ) -> Buf {
        let Some(va) = unikernel_runtime::mm::frame::alloc_frame() else {
            fail("out of memory for the rings and buffers");
        };
        let mfn = xen.mfn_of(va);
        match gt.grant_access(domid, mfn as u32, readonly) {
            Ok(gref) => Buf { va, gref },
            Err(e) => fail(&format!("cannot grant a page to dom{domid}: {e:?}")),
        }
    }

    /// Find `device/vif/0`, connect it to its backend and register it as a
    /// network device. Without a vif the guest runs with loopback only.
    pub fn init(xen: &'static Xen, verbose: bool) {
        let t0 = xen.system_time_ns();
        let mut st = Store {
            xs: xen.xenstore(),
            t: xen.store_transport(),
            xen,
        };
        let dev = "device/vif/0";
        let Some(backend) = st.read(&format!("{dev}/backend")) else {
            if verbose {
                crate::Console::write_bytes(
                    b"[unikernel] xen: no device/vif/0 in xenstore: no network device\n",
                );
            }
            return;
        };
        let backend = String::from_utf8_lossy(&backend).into_owned();
        let domid = st
            .read(&format!("{dev}/backend-id"))
            .and_then(|v| parse_u32(&v))
            .filter(|&d| d < 0x7ff0)
            .unwrap_or_else(|| fail(&format!("{dev}/backend-id is missing or not a domid")));
        let mac = st
            .read(&format!("{dev}/mac"))
            .and_then(|v| parse_mac(&v))
            .unwrap_or_else(|| fail(&format!("{dev}/mac is missing or not a MAC address")));
        let domid = domid as u16;

        let mut gt = xen
            .grant_table()
            .unwrap_or_else(|e| fail(&format!("cannot set up the grant table: {e}")));
        let tx_page = granted_page(&mut gt, xen, domid, false);
        let rx_page = granted_page(&mut gt, xen, domid, false);
        let tx_bufs = [(); TX_BUFS].map(|_| granted_page(&mut gt, xen, domid, true));
        let rx_bufs = [(); RX_BUFS].map(|_| granted_page(&mut gt, xen, domid, false));
        // The table is shared with blkfront: unlock it before waiting on the backend.
        drop(gt);
        let port = hypercall::evtchn_alloc_unbound(domid).unwrap_or_else(|e| {
            fail(&format!(
                "cannot allocate an event channel for dom{domid}: {e:?}"
            ))
        });
        let mut q = Queues {
            tx: Ring::new(tx_page.va, TX_SLOT_BYTES),
            rx: Ring::new(rx_page.va, RX_SLOT_BYTES),
            tx_bufs,
            tx_free: (0..TX_BUFS as u16).rev().collect(),
            tx_in_flight: [false; TX_BUFS],
            rx_bufs,
            rx_posted: [false; RX_BUFS],
            port,
        };
        q.tx.init_shared();
        q.rx.init_shared();
        for id in 0..RX_BUFS {
            q.post_rx(id);
        }
        q.rx.push_requests();

        let backend_state = format!("{backend}/state");
        st.wait_state(&backend_state, "ready (InitWait)", |s| {
            s == xenbus::INIT_WAIT || s == xenbus::CONNECTED
        });
        st.write(&format!("{dev}/tx-ring-ref"), &format!("{}", tx_page.gref));
        st.write(&format!("{dev}/rx-ring-ref"), &format!("{}", rx_page.gref));
        st.write(&format!("{dev}/event-channel"), &format!("{port}"));
        st.write(&format!("{dev}/request-rx-copy"), "1");
        st.write(&format!("{dev}/feature-rx-notify"), "1");
        // Frames from dom0's own stack carry blank checksums
        // (NETRXF_csum_blank) unless we say we cannot fill them in.
        st.write(&format!("{dev}/feature-no-csum-offload"), "1");
        st.write(&format!("{dev}/state"), &format!("{}", xenbus::CONNECTED));
        st.wait_state(&backend_state, "Connected", |s| s == xenbus::CONNECTED);

        PORT.store(port as u64, Ordering::Relaxed);
        events::unmask_port(port);
        // The rx requests were pushed before the backend mapped the ring:
        // tell it they are there.
        q.notify();
        if verbose {
            let mut line = String::new();
            let _ = writeln!(
                line,
                "[unikernel] xen: vif0 {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x} connected to {backend} (dom{domid}, port {port}) in {} us",
                mac[0], mac[1], mac[2], mac[3], mac[4], mac[5],
                (xen.system_time_ns() - t0) / 1000
            );
            crate::Console::write_bytes(line.as_bytes());
        }
        register_net(Arc::new(Netfront {
            mac,
            q: spin::Mutex::new(q),
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_bounded_by_requests() {
        assert_eq!(check_responses(5, 2, 10), Some(3));
        assert_eq!(check_responses(2, 2, 10), Some(0));
        assert_eq!(
            check_responses(11, 2, 10),
            None,
            "more responses than requests"
        );
        assert_eq!(check_responses(1, 2, 10), None, "backwards");
        // Across the 2^32 wrap.
        assert_eq!(check_responses(3, u32::MAX - 1, 5), Some(5));
        // More outstanding than the ring holds is our bug, still refused.
        assert_eq!(check_responses(0, 0, RING_SIZE + 1), None);
    }

    #[test]
    fn notify_only_when_the_event_index_is_crossed() {
        // Backend waits for request 1 (fresh ring): pushing 0 -> 4 crosses it.
        assert!(push_needs_notify(0, 4, 1));
        // It already asked for 10: pushing 4 -> 8 does not reach it.
        assert!(!push_needs_notify(4, 8, 10));
        assert!(push_needs_notify(8, 10, 10));
        // An event index left behind (backend busy) means no notify.
        assert!(!push_needs_notify(8, 9, 5));
        // Wrap.
        assert!(push_needs_notify(u32::MAX, 1, 0));
    }

    #[test]
    fn slots_wrap_at_the_ring_size() {
        assert_eq!(slot(0), 0);
        assert_eq!(slot(RING_SIZE + 3), 3);
        assert_eq!(slot(u32::MAX), (u32::MAX % RING_SIZE) as usize);
    }

    #[test]
    fn xenstore_values() {
        assert_eq!(
            parse_mac(b"00:16:3e:0a:Bc:ff"),
            Some([0, 0x16, 0x3e, 0x0a, 0xbc, 0xff])
        );
        assert_eq!(parse_mac(b"00:16:3e:0a:bc"), None);
        assert_eq!(parse_mac(b"00:16:3e:0a:bc:ff:00"), None);
        assert_eq!(parse_mac(b"0:16:3e:0a:bc:ff"), None);
        assert_eq!(parse_u32(b"4"), Some(4));
        assert_eq!(parse_u32(b"x"), None);
    }
}
