//! The network component (work in progress on this branch): the smoltcp
//! stack and the Linux socket API over it, registered with the runtime as
//! the AF_INET/AF_INET6 socket provider and a poller.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

/// Called once at boot by the kernel's glue crate, after the platform
/// registered its devices and before the app starts.
pub fn init() {}
