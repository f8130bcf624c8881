//! How a component (components/: the network stack, filesystems) plugs
//! into the runtime: it registers, at boot, what it provides.
//!
//! * a **poller**: a function the scheduler calls after every device event
//!   and tick and before it idles; it drives the component (a TCP stack's
//!   timers, a device's receive ring) and returns the earliest monotonic
//!   deadline (ns) at which it wants to run again, or `None`;
//! * a **socket provider**: consulted by `socket(2)` for a family it
//!   serves (none registered: `EAFNOSUPPORT`).

use crate::errno::Errno;
use crate::fs::File;
use alloc::sync::Arc;
use alloc::vec::Vec;
use spin::Mutex;

/// Drives a component; returns its next deadline (monotonic ns), if any.
pub type Poller = fn(now_ns: u64) -> Option<u64>;

static POLLERS: Mutex<Vec<Poller>> = Mutex::new(Vec::new());

/// Register a poller (at boot, from a component's `init`).
pub fn register_poller(p: Poller) {
    POLLERS.lock().push(p);
}

/// Whether any poller is registered (a kernel without components has none).
pub fn has_pollers() -> bool {
    !POLLERS.lock().is_empty()
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
