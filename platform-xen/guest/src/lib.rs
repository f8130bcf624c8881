//! The guest side of the Xen PV platform (classic 64-bit paravirtualised
//! guests, started by `xl create` with `type = "pv"`).
//!
//! A PV guest is not a virtual PC: there is no firmware, no IDT, no
//! interrupts, no page-table writes and no ring 0. The kernel runs in
//! ring 3 ("guest kernel mode") and asks the hypervisor for everything
//! privileged. One boot, in order:
//!
//! 1. `xl` reads the image's Xen ELF notes ([`notes`]), loads the segments
//!    at virtual == pseudo-physical addresses, fills `hypercall_page`
//!    ([`hypercall`]), builds bootstrap page tables that map the image and
//!    the boot elements, and enters `_start` with `start_info` in `%rsi`
//!    and events masked ([`boot`]).
//! 2. The magic string of `start_info` is checked ([`start_info`]); a wrong
//!    one stops the boot with a message.
//! 3. The console ring is found through the M2P table and becomes the
//!    console ([`console`]); the shared-info page (event bitmaps, PV clock,
//!    wall clock) is mapped ([`time`], [`events`]).
//! 4. The trap table and the event, failsafe and syscall callbacks are
//!    registered ([`traps`]); the default periodic tick is stopped and the
//!    timer VIRQ bound to a port for the single-shot timer.
//! 5. All `nr_pages` are mapped at their identity addresses through
//!    `mmu_update`, new page tables read-only ([`mm`]).
//! 6. The kernel built on this crate gets control (`xen_main`): the smoke
//!    kernel in `platform-xen/smoke`, later the runtime. Xenstore
//!    ([`xenstore`]) and grant tables ([`grant`]) are set up on first use.
//! 7. Shutdown drains the console ring, then `SCHEDOP_shutdown` with the
//!    exit code as the reason ([`boot::shutdown`]).
//!
//! Modules with pure logic (ABI layouts, note parsing, `start_info`
//! checks, rings, PV-clock arithmetic, event scanning, xs_wire, grant
//! entries, blkif layouts) build and are unit-tested on the host; hypercalls, entry code
//! and page tables build only for `x86_64-unknown-none`.
#![cfg_attr(not(test), no_std)]

#[cfg(all(target_os = "none", feature = "runtime"))]
extern crate alloc;

pub mod abi;
pub mod blkfront;
#[cfg(all(target_os = "none", feature = "runtime", feature = "block"))]
mod blockcheck;
pub mod console;
pub mod events;
pub mod fmtbuf;
pub mod grant;
pub mod netfront;
pub mod notes;
pub mod start_info;
pub mod time;
pub mod xenstore;

#[cfg(target_os = "none")]
pub mod boot;
#[cfg(target_os = "none")]
pub mod hypercall;
#[cfg(target_os = "none")]
pub mod mm;
#[cfg(all(target_os = "none", feature = "runtime"))]
mod runtime;
#[cfg(target_os = "none")]
pub mod traps;

#[cfg(target_os = "none")]
pub use boot::{shared_info, shutdown, Console, Xen};

/// Shutdown reason for a kernel panic, a fault in the kernel, or a boot
/// that cannot go on (wrong magic): the same code the hvt platform uses
/// for these (docs/exit-codes.md), so tests assert one code everywhere.
pub const EXIT_KERNEL_FAULT: u32 = 253;
