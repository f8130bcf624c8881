//! The PV console: a ring page shared with `xenconsoled` in dom0
//! (`start_info.console`: its machine frame and event channel).
//!
//! Output: copy bytes to `out[prod % 2048]`, publish `out_prod` after a
//! write barrier, notify the event channel. `xenconsoled` copies them out
//! and advances `out_cons`. When the ring is full the writer notifies and
//! waits (yields) until there is room. Before shutdown the kernel waits
//! until `out_cons == out_prod` ([`ConsoleRing::drained`]): bytes still in
//! the ring when the domain dies are lost.
//!
//! The ring logic is host-tested with a ring in ordinary memory; the
//! notify and wait actions are passed in (hypercalls on Xen).

use crate::abi::ConsoleInterface;
use core::ptr::{addr_of, addr_of_mut};
use core::sync::atomic::{fence, Ordering};

const OUT_SIZE: u32 = 2048;
const IN_SIZE: u32 = 1024;

/// A console ring page.
pub struct ConsoleRing {
    iface: *mut ConsoleInterface,
}

// SAFETY: one vCPU; the page is only touched through volatile accesses.
unsafe impl Sync for ConsoleRing {}
// SAFETY: as above.
unsafe impl Send for ConsoleRing {}

impl ConsoleRing {
    /// # Safety
    /// `iface` must point at a console ring page that stays mapped.
    pub const unsafe fn new(iface: *mut ConsoleInterface) -> ConsoleRing {
        ConsoleRing { iface }
    }

    fn out_cons(&self) -> u32 {
        // SAFETY: valid page (constructor contract); the peer writes it.
        unsafe { addr_of!((*self.iface).out_cons).read_volatile() }
    }

    fn out_prod(&self) -> u32 {
        // SAFETY: as above; only we write it.
        unsafe { addr_of!((*self.iface).out_prod).read_volatile() }
    }

    /// Bytes written but not yet consumed by the console daemon.
    pub fn pending(&self) -> u32 {
        self.out_prod().wrapping_sub(self.out_cons())
    }

    /// Whether every byte written has been consumed.
    pub fn drained(&self) -> bool {
        self.pending() == 0
    }

    /// Copy as much of `data` as fits; returns how many bytes were queued.
    pub fn put(&self, data: &[u8]) -> usize {
        let cons = self.out_cons();
        fence(Ordering::Acquire);
        let mut prod = self.out_prod();
        let free = OUT_SIZE.saturating_sub(prod.wrapping_sub(cons)) as usize;
        let n = data.len().min(free);
        for &b in &data[..n] {
            // SAFETY: index masked into the 2048-byte output array.
            unsafe {
                addr_of_mut!((*self.iface).output[(prod % OUT_SIZE) as usize]).write_volatile(b)
            };
            prod = prod.wrapping_add(1);
        }
        // The bytes must be visible before the new producer index.
        fence(Ordering::Release);
        // SAFETY: valid page.
        unsafe { addr_of_mut!((*self.iface).out_prod).write_volatile(prod) };
        n
    }

    /// Write all of `data`: queue, `notify`, and `wait` while the ring is full.
    pub fn write_all(&self, mut data: &[u8], notify: &dyn Fn(), wait: &dyn Fn()) {
        while !data.is_empty() {
            let n = self.put(data);
            notify();
            data = &data[n..];
            if n == 0 {
                wait();
            }
        }
    }

    /// Wait (calling `wait`) until the daemon consumed everything, at most `max_waits` times.
    pub fn drain(&self, notify: &dyn Fn(), wait: &dyn Fn(), max_waits: u32) -> bool {
        for _ in 0..max_waits {
            if self.drained() {
                return true;
            }
            notify();
            wait();
        }
        self.drained()
    }

    /// Read console input into `buf`; returns the number of bytes (0 = none now).
    pub fn get(&self, buf: &mut [u8]) -> usize {
        // SAFETY: valid page; the peer writes in_prod, we write in_cons.
        let (mut cons, prod) = unsafe {
            (
                addr_of!((*self.iface).in_cons).read_volatile(),
                addr_of!((*self.iface).in_prod).read_volatile(),
            )
        };
        fence(Ordering::Acquire);
        let mut n = 0;
        while cons != prod && n < buf.len() {
            // SAFETY: index masked into the 1024-byte input array.
            buf[n] =
                unsafe { addr_of!((*self.iface).input[(cons % IN_SIZE) as usize]).read_volatile() };
            cons = cons.wrapping_add(1);
            n += 1;
        }
        fence(Ordering::Release);
        // SAFETY: valid page.
        unsafe { addr_of_mut!((*self.iface).in_cons).write_volatile(cons) };
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn ring() -> Box<ConsoleInterface> {
        // SAFETY: plain bytes and integers: all-zero is valid.
        Box::new(unsafe { core::mem::zeroed() })
    }

    /// Pretend to be xenconsoled: consume everything, return it.
    fn consume(r: &mut ConsoleInterface) -> Vec<u8> {
        let mut out = Vec::new();
        while r.out_cons != r.out_prod {
            out.push(r.output[(r.out_cons % OUT_SIZE) as usize]);
            r.out_cons = r.out_cons.wrapping_add(1);
        }
        out
    }

    #[test]
    fn bytes_arrive_in_order_across_the_wrap() {
        let mut r = ring();
        r.out_cons = u32::MAX - 5; // indices wrap around u32 too
        r.out_prod = u32::MAX - 5;
        let p: *mut ConsoleInterface = &mut *r;
        // SAFETY: the box outlives the ring.
        let c = unsafe { ConsoleRing::new(p) };
        let msg: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        let got = std::cell::RefCell::new(Vec::new());
        let notes = Cell::new(0);
        // SAFETY: single-threaded test: the "daemon" runs inside wait().
        let wait = || got.borrow_mut().extend(consume(unsafe { &mut *p }));
        c.write_all(&msg, &|| notes.set(notes.get() + 1), &wait);
        wait();
        assert_eq!(*got.borrow(), msg);
        assert!(c.drained());
        assert!(notes.get() >= 2, "notified after each chunk");
    }

    #[test]
    fn full_ring_takes_nothing_and_drain_reports() {
        let mut r = ring();
        let p: *mut ConsoleInterface = &mut *r;
        // SAFETY: the box outlives the ring.
        let c = unsafe { ConsoleRing::new(p) };
        assert_eq!(c.put(&[1; 2048]), 2048);
        assert_eq!(c.put(&[2; 10]), 0);
        assert_eq!(c.pending(), 2048);
        assert!(!c.drain(&|| {}, &|| {}, 3));
        // SAFETY: single-threaded test.
        assert!(c.drain(
            &|| {},
            &|| {
                consume(unsafe { &mut *p });
            },
            3
        ));
    }

    #[test]
    fn input_is_read_and_consumed() {
        let mut r = ring();
        r.input[..3].copy_from_slice(b"abc");
        r.in_prod = 3;
        let p: *mut ConsoleInterface = &mut *r;
        // SAFETY: the box outlives the ring.
        let c = unsafe { ConsoleRing::new(p) };
        let mut buf = [0u8; 2];
        assert_eq!(c.get(&mut buf), 2);
        assert_eq!(&buf, b"ab");
        assert_eq!(c.get(&mut buf), 1);
        assert_eq!(c.get(&mut buf), 0);
        assert_eq!(r.in_cons, 3);
    }
}
