//! The hvt network driver: asks the monitor for its device (`net_info`),
//! allocates the two rings and their frame buffers on the kernel heap
//! (identity-mapped RAM: a virtual address is the guest-physical one the
//! monitor needs), hands them over (`net_setup`) and registers a
//! [`NetDevice`] with the runtime. The ring protocol and its memory
//! ordering are in `hvt_abi::net`; this side is the tx producer and the rx
//! consumer, and makes the `net_notify` call only when the tx ring was empty.

use alloc::alloc::{alloc_zeroed, Layout};
use alloc::sync::Arc;
use core::sync::atomic::{fence, AtomicU32, Ordering};

use hvt_abi::hypercall::Call;
use hvt_abi::net::{
    ring_bytes, NetDesc, NetInfo, NetNotify, NetSetup, NET_ATTACHED, RING_CONSUMER, RING_DESCS,
    RING_POLLING, RING_PRODUCER,
};
use spin::Mutex;
use unikernel_runtime::device::{register_net, NetDevice};

use crate::hypercall;

/// Descriptors per ring.
const SLOTS: u32 = 128;
/// Bytes per frame buffer (a 1514-byte frame and some room).
const BUF_SIZE: u32 = 2048;

/// One ring in guest memory (see `hvt_abi::net` for the layout).
struct Ring {
    base: *mut u8,
}

impl Ring {
    fn index(&self, offset: u64) -> &AtomicU32 {
        // SAFETY: `base` is a live, 4096-aligned allocation of
        // `ring_bytes(SLOTS)` bytes that is never freed; the producer and
        // consumer offsets are 4-byte aligned and inside it.
        unsafe { &*self.base.add(offset as usize).cast::<AtomicU32>() }
    }
    fn producer(&self) -> &AtomicU32 {
        self.index(RING_PRODUCER)
    }
    fn consumer(&self) -> &AtomicU32 {
        self.index(RING_CONSUMER)
    }
    fn desc(&self, i: u32) -> *mut NetDesc {
        let off = RING_DESCS as usize + (i % SLOTS) as usize * core::mem::size_of::<NetDesc>();
        // SAFETY: slot `i % SLOTS` is inside the allocation (ring_bytes).
        unsafe { self.base.add(off).cast::<NetDesc>() }
    }
}

/// What the lock protects: our ends of both rings.
struct Queues {
    rx: Ring,
    tx: Ring,
    rx_bufs: *mut u8,
    tx_bufs: *mut u8,
    /// Next rx index to take, next tx index to fill.
    rx_next: u32,
    tx_next: u32,
}

/// The hvt network device.
pub struct HvtNet {
    mac: [u8; 6],
    mtu: usize,
    q: Mutex<Queues>,
}

// SAFETY: the raw pointers name heap memory owned by the device for the
// whole run (never freed); every access goes through the lock or is an
// atomic index access.
unsafe impl Send for HvtNet {}
// SAFETY: as above.
unsafe impl Sync for HvtNet {}

fn alloc_pages(bytes: u64) -> Option<*mut u8> {
    let layout = Layout::from_size_align(bytes as usize, 4096).ok()?;
    // SAFETY: a non-zero size with a valid alignment.
    let p = unsafe { alloc_zeroed(layout) };
    (!p.is_null()).then_some(p)
}

/// Finds the monitor's device, hands it the rings and registers it. Runs
/// in `hvt_main` before the runtime starts (the heap already has frames).
pub fn probe() {
    let mut info = NetInfo::default();
    hypercall::call(Call::NetInfo, &mut info);
    if info.flags & NET_ATTACHED == 0 {
        return;
    }
    let (Some(rx), Some(tx), Some(rx_bufs), Some(tx_bufs)) = (
        alloc_pages(ring_bytes(SLOTS)),
        alloc_pages(ring_bytes(SLOTS)),
        alloc_pages(u64::from(SLOTS * BUF_SIZE)),
        alloc_pages(u64::from(SLOTS * BUF_SIZE)),
    ) else {
        // Without memory for the rings the guest has loopback only.
        return;
    };
    let q = Queues {
        rx: Ring { base: rx },
        tx: Ring { base: tx },
        rx_bufs,
        tx_bufs,
        rx_next: 0,
        tx_next: 0,
    };
    for i in 0..SLOTS {
        // SAFETY: the descriptor lies in the rx ring; the buffer address is
        // inside `rx_bufs` (SLOTS * BUF_SIZE bytes). Nobody else sees the
        // ring before net_setup.
        unsafe {
            q.rx.desc(i).write(NetDesc {
                addr: rx_bufs.add((i * BUF_SIZE) as usize) as u64,
                len: 0,
                _pad: 0,
            })
        };
    }
    let mut setup = NetSetup {
        rx_ring: rx as u64,
        tx_ring: tx as u64,
        slots: SLOTS,
        buf_size: BUF_SIZE,
    };
    hypercall::call(Call::NetSetup, &mut setup);
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&info.mac[..6]);
    let dev = Arc::new(HvtNet {
        mac,
        mtu: info.mtu as usize,
        q: Mutex::new(q),
    });
    DEVICE.call_once(|| dev.clone());
    register_net(dev);
}

static DEVICE: spin::Once<Arc<HvtNet>> = spin::Once::new();

/// Before the guest idles: if transmit frames still wait in the ring,
/// notify the monitor again. The empty-to-non-empty notification alone can
/// be missed when the monitor's I/O thread is between batches; a ring left
/// full would then stall transmission until some other event.
pub fn kick_pending_tx() {
    let Some(dev) = DEVICE.get() else {
        return;
    };
    let pending = {
        let q = dev.q.lock();
        q.tx.consumer().load(Ordering::Acquire) != q.tx_next
    };
    if pending {
        let mut n = NetNotify::default();
        hypercall::call(Call::NetNotify, &mut n);
    }
}

impl NetDevice for HvtNet {
    fn name(&self) -> &str {
        "hvt0"
    }

    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn mtu(&self) -> usize {
        self.mtu
    }

    fn transmit(&self, frame: &[u8]) -> bool {
        let mut q = self.q.lock();
        let old = q.tx_next;
        if old.wrapping_sub(q.tx.consumer().load(Ordering::Acquire)) >= SLOTS {
            // Full: make sure the monitor is draining it.
            drop(q);
            kick_pending_tx();
            return false;
        }
        if frame.len() < 14 || frame.len() > BUF_SIZE as usize {
            // Not a frame this device can carry: dropped, like a NIC would.
            return true;
        }
        let slot = old % SLOTS;
        // SAFETY: the slot's buffer is inside `tx_bufs` and ours until we
        // publish it (the monitor consumed it: consumer > old - SLOTS).
        let buf = unsafe { q.tx_bufs.add((slot * BUF_SIZE) as usize) };
        // SAFETY: `frame.len()` <= BUF_SIZE bytes fit the buffer; the
        // descriptor is in the tx ring and not visible to the monitor yet.
        unsafe {
            core::ptr::copy_nonoverlapping(frame.as_ptr(), buf, frame.len());
            q.tx.desc(old).write(NetDesc {
                addr: buf as u64,
                len: frame.len() as u32,
                _pad: 0,
            });
        }
        q.tx_next = old.wrapping_add(1);
        q.tx.producer().store(q.tx_next, Ordering::Release);
        // Store producer, full fence, load consumer: notify if the monitor
        // had drained the ring and is not polling it (see hvt_abi::net,
        // "Memory ordering").
        fence(Ordering::SeqCst);
        if q.tx.consumer().load(Ordering::Acquire) == old
            && q.tx.index(RING_POLLING).load(Ordering::Acquire) == 0
        {
            let mut n = NetNotify::default();
            hypercall::call(Call::NetNotify, &mut n);
        }
        true
    }

    fn can_transmit(&self) -> bool {
        let room = {
            let q = self.q.lock();
            q.tx_next
                .wrapping_sub(q.tx.consumer().load(Ordering::Acquire))
                < SLOTS
        };
        if !room {
            kick_pending_tx();
        }
        room
    }

    fn receive(&self, buf: &mut [u8]) -> Option<usize> {
        let mut q = self.q.lock();
        let i = q.rx_next;
        if q.rx.producer().load(Ordering::Acquire) == i {
            return None;
        }
        // SAFETY: the descriptor is in the rx ring; the monitor published
        // it (acquire above) and will not touch the slot until we release it.
        let d = unsafe { q.rx.desc(i).read() };
        let n = (d.len as usize).min(BUF_SIZE as usize).min(buf.len());
        // SAFETY: our own buffer for this slot (we never change `addr`),
        // `n` <= BUF_SIZE bytes of it.
        unsafe {
            let src = q.rx_bufs.add(((i % SLOTS) * BUF_SIZE) as usize);
            core::ptr::copy_nonoverlapping(src, buf.as_mut_ptr(), n);
        }
        q.rx_next = i.wrapping_add(1);
        q.rx.consumer().store(q.rx_next, Ordering::Release);
        Some(n)
    }

    fn can_receive(&self) -> bool {
        let q = self.q.lock();
        q.rx.producer().load(Ordering::Acquire) != q.rx_next
    }
}
