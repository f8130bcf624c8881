//! Which app sockets smoltcp changed during a poll.
//!
//! smoltcp wakes a socket's registered wakers whenever something that
//! readiness depends on changes: data or a FIN arrived, sent data was
//! acknowledged (room in the send buffer), the connection changed state
//! (established, reset, closed, timed out). Each smoltcp socket of an app
//! socket carries a waker naming that app socket ([`waker`]); waking it
//! records the id here, and the stack recomputes readiness for the
//! recorded sockets only ([`take`]) instead of for every socket after
//! every packet. A waker is used once: the stack registers it again when
//! it refreshes the socket.
//!
//! The waker holds the id in its data word and owns nothing, so cloning
//! and dropping it cost nothing and it never dangles.

use crate::stack::SockId;
use alloc::vec::Vec;
use core::task::{RawWaker, RawWakerVTable, Waker};
use spin::Mutex;

/// Sockets woken since the last [`take`] (may repeat an id).
static CHANGED: Mutex<Vec<SockId>> = Mutex::new(Vec::new());

fn clone(data: *const ()) -> RawWaker {
    RawWaker::new(data, &VTABLE)
}

fn wake(data: *const ()) {
    CHANGED.lock().push(data as usize as SockId);
}

fn drop(_: *const ()) {}

static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, wake, wake, drop);

/// A waker that records `id` as changed.
pub fn waker(id: SockId) -> Waker {
    // SAFETY: the vtable's functions never dereference the data word (it
    // is the socket id itself, not a pointer), `clone` returns a waker with
    // the same data and vtable, `drop` has nothing to free, and `wake`
    // only takes a lock, so every contract of RawWakerVTable holds on any
    // thread and for any lifetime.
    unsafe { Waker::from_raw(RawWaker::new(id as usize as *const (), &VTABLE)) }
}

/// Whether any socket was woken since the last [`take`].
pub fn any() -> bool {
    !CHANGED.lock().is_empty()
}

/// The woken sockets (sorted, each once), clearing the record.
pub fn take() -> Vec<SockId> {
    let mut v = core::mem::take(&mut *CHANGED.lock());
    v.sort_unstable();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_woken_waker_records_its_socket_once() {
        let w = waker(7);
        let w2 = w.clone();
        assert!(w.will_wake(&w2));
        assert!(!w.will_wake(&waker(8)));
        w.wake_by_ref();
        w2.wake();
        waker(3).wake();
        assert!(any());
        assert_eq!(take(), vec![3, 7]);
        assert!(!any());
        assert!(take().is_empty());
    }
}
