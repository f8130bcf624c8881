//! The network component: the smoltcp TCP/IP stack (IPv4 and IPv6, TCP
//! and UDP, ICMP echo answered, DHCPv4), a loopback link, and the Linux
//! socket API over it.
//!
//! [`init`] (called by the kernel's glue crate at boot) takes the network
//! devices the platform's driver registered, reads the addressing options,
//! writes `/etc/resolv.conf` and `/etc/hosts`, and registers with the
//! runtime the AF_INET/AF_INET6 socket provider and a poller that drives
//! the stack (its timers and the device's receive ring).
#![cfg_attr(not(test), no_std)]

extern crate alloc;

mod addr;
mod config;
mod dev;
mod socket;
mod stack;
mod wake;

use alloc::string::String;
use alloc::sync::Arc;
use unikernel_runtime::component::{self, SocketProvider};
use unikernel_runtime::errno::*;
use unikernel_runtime::fs::File;
use unikernel_runtime::net::{
    AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP, SOCK_DGRAM, SOCK_STREAM,
};

struct Provider;

impl SocketProvider for Provider {
    fn serves(&self, domain: u32) -> bool {
        domain == AF_INET || domain == AF_INET6
    }

    fn socket(&self, domain: u32, ty: u32, protocol: u32) -> Result<Arc<dyn File>, Errno> {
        let ok = match ty {
            SOCK_STREAM => protocol == 0 || protocol == IPPROTO_TCP as u32,
            SOCK_DGRAM => protocol == 0 || protocol == IPPROTO_UDP as u32,
            // SOCK_RAW, SOCK_SEQPACKET, ...
            3..=10 => return Err(ESOCKTNOSUPPORT),
            _ => return Err(EINVAL),
        };
        if !ok {
            return Err(EPROTONOSUPPORT);
        }
        let id = stack::with(|s| s.add(domain, ty));
        Ok(Arc::new(socket::NetSocket::new(id, domain, ty)))
    }
}

static PROVIDER: Provider = Provider;

fn option(key: &str) -> Option<String> {
    unikernel_runtime::option(key).map(String::from)
}

/// The poller: move packets, run the stack's timers; its next deadline.
fn poll(_now: u64) -> Option<u64> {
    let mut g = stack::STACK.lock();
    let s = g.as_mut()?;
    s.poll();
    let d = s.deadline();
    if option("UNIKERNEL_NET_DEBUG").is_some() {
        s.debug_dump(d);
    }
    d
}

/// Seconds the boot waits for a DHCP lease before the app starts
/// (`UNIKERNEL_DHCP_WAIT`; 0 = start at once, configured in the background).
const DHCP_WAIT_DEFAULT_S: u64 = 10;

/// Let DHCP configure the link before the app starts, so that the app's
/// first connection or name lookup finds a configured network (the lease
/// keeps being sought in the background when the wait runs out).
fn wait_for_dhcp(s: &mut stack::Stack) {
    let secs = option("UNIKERNEL_DHCP_WAIT")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(DHCP_WAIT_DEFAULT_S);
    let p = unikernel_runtime::platform();
    let start = p.monotonic_ns();
    let end = start.saturating_add(secs.saturating_mul(1_000_000_000));
    loop {
        s.poll();
        if s.config.dhcp_v4.is_some() {
            return;
        }
        let now = p.monotonic_ns();
        if now >= end {
            unikernel_runtime::kprintln!(
                "unikernel: net: no DHCP answer within {secs} s; the app starts unconfigured (DHCP goes on; set --ip for a static address)"
            );
            return;
        }
        let next = s
            .deadline()
            .unwrap_or(u64::MAX)
            .min(now + 100_000_000)
            .min(end);
        p.block_until(next.max(now + 1_000_000));
    }
}

/// Start the component (once, at boot).
pub fn init() {
    let verbose = option("UNIKERNEL_VERBOSE").is_some_and(|v| v != "0");
    let config = match config::NetConfig::from_options(option) {
        Ok(c) => c,
        Err(e) => {
            unikernel_runtime::kprintln!("unikernel: net: {e}");
            unikernel_runtime::exit(unikernel_runtime::fault::EXIT_KERNEL_PANIC);
        }
    };
    let eth = unikernel_runtime::device::net_devices()
        .into_iter()
        .next()
        .map(dev::Eth::new);
    let has_eth = eth.is_some();
    let static_v4 = config.static_v4.is_some();
    let mut s = stack::Stack::new(config, eth);
    s.verbose = verbose;
    if let Some(v) = option("UNIKERNEL_TCP_FIN_TIMEOUT") {
        match v.parse::<u64>() {
            // At most u32::MAX seconds (136 years): no overflow in µs.
            Ok(secs) if secs > 0 => {
                s.fin_timeout = smoltcp::time::Duration::from_secs(secs.min(u32::MAX as u64))
            }
            _ => {
                unikernel_runtime::kprintln!(
                    "unikernel: net: UNIKERNEL_TCP_FIN_TIMEOUT={v}: not a number of seconds above 0"
                );
                unikernel_runtime::exit(unikernel_runtime::fault::EXIT_KERNEL_PANIC);
            }
        }
    }
    config::publish(&s.config);
    if !has_eth {
        config::announce(&s, "no device");
    } else if static_v4 {
        config::announce(&s, "static");
    }
    if has_eth && !static_v4 {
        wait_for_dhcp(&mut s);
    }
    *stack::STACK.lock() = Some(s);
    component::register_socket_provider(&PROVIDER);
    component::register_poller(poll);
}
