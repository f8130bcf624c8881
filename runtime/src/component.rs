//! How a component (components/: the network stack, filesystems) plugs
//! into the runtime: it registers, at boot, what it provides.
//!
//! * a **poller**: a function the scheduler calls after every device event
//!   and timer interrupt and before it idles (at a safe point, never inside
//!   an interrupt stub); it drives the component (a TCP stack's timers, a
//!   device's receive ring) and returns the earliest monotonic deadline
//!   (ns) at which it wants to run again, or `None`. The scheduler arms
//!   the platform's timer for that deadline, so a poller runs on time even
//!   while app threads compute; threads a poller wakes (`notify_io`) run
//!   at once, before the interrupted thread. A component that wants its
//!   poller to run soon for another reason (the app queued data to send)
//!   calls [`request_poll`];
//! * a **socket provider**: consulted by `socket(2)` for a family it
//!   serves (none registered: `EAFNOSUPPORT`).

use crate::errno::Errno;
use crate::fs::File;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};
use spin::Mutex;

/// Drives a component; returns its next deadline (monotonic ns), if any.
pub type Poller = fn(now_ns: u64) -> Option<u64>;

static POLLERS: Mutex<Vec<Poller>> = Mutex::new(Vec::new());
/// Set once the first poller registers: the scheduler's checks stay one
/// load in a kernel without components.
static ANY_POLLER: AtomicBool = AtomicBool::new(false);
/// Set by [`request_poll`], taken by the scheduler's next safe point.
static POLL_REQUESTED: AtomicBool = AtomicBool::new(false);

/// Register a poller (at boot, from a component's `init`).
pub fn register_poller(p: Poller) {
    POLLERS.lock().push(p);
    ANY_POLLER.store(true, Ordering::Release);
}

/// Whether any poller is registered (a kernel without components has none).
pub fn has_pollers() -> bool {
    ANY_POLLER.load(Ordering::Acquire)
}

/// Ask for the pollers to run at the scheduler's next safe point (the end
/// of the current system call), e.g. after the app queued data a poller
/// transmits. Cheap; requests before that safe point merge into one run.
pub fn request_poll() {
    POLL_REQUESTED.store(true, Ordering::Release);
}

/// Take a pending [`request_poll`] (the scheduler's safe point).
pub(crate) fn take_poll_request() -> bool {
    POLL_REQUESTED.load(Ordering::Relaxed) && POLL_REQUESTED.swap(false, Ordering::AcqRel)
}

/// Run every poller; the earliest deadline any of them returned.
pub fn run_pollers(now_ns: u64) -> Option<u64> {
    // Copy the list so a poller may take any lock (and even register).
    let list: Vec<Poller> = POLLERS.lock().clone();
    list.into_iter().filter_map(|p| p(now_ns)).min()
}

/// Creates sockets of the families it serves.
pub trait SocketProvider: Sync {
    /// Whether `domain` (AF_*) is served here.
    fn serves(&self, domain: u32) -> bool;
    /// `socket(domain, ty, protocol)`; `ty` has SOCK_NONBLOCK/SOCK_CLOEXEC
    /// taken out (the system-call layer applies them).
    fn socket(&self, domain: u32, ty: u32, protocol: u32) -> Result<Arc<dyn File>, Errno>;
}

static PROVIDERS: Mutex<Vec<&'static dyn SocketProvider>> = Mutex::new(Vec::new());

/// Register a socket provider (at boot, from a component's `init`).
pub fn register_socket_provider(p: &'static dyn SocketProvider) {
    PROVIDERS.lock().push(p);
}

/// The provider serving `domain`, if any.
pub fn socket_provider(domain: u32) -> Option<&'static dyn SocketProvider> {
    PROVIDERS.lock().iter().copied().find(|p| p.serves(domain))
}
