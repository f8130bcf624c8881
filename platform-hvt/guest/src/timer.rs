//! The one-shot timer on hvt: the deadline lives in a [`TimerBlock`]
//! shared with the monitor's timer thread (`hvt_abi::hypercall::Timer`).
//! Writing it is enough when the thread will look at it in time (the new
//! deadline is not earlier than what it sleeps until, `armed_ns`); only an
//! earlier deadline, or the first one, costs a `timer` hypercall (a VM exit).
//!
//! [`TimerBlock`]: hvt_abi::hypercall::TimerBlock

use crate::hypercall;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use hvt_abi::hypercall as hc;

/// The guest's copy of `hvt_abi::hypercall::TimerBlock`, word for word.
#[repr(C, align(64))]
struct Block {
    deadline_ns: AtomicU64,
    armed_ns: AtomicU64,
    fired: AtomicU64,
    acked: AtomicU64,
}

const _: () = assert!(core::mem::size_of::<hc::TimerBlock>() == 32);
const _: () = assert!(core::mem::offset_of!(Block, acked) == 24);

/// In the kernel image, which is identity-mapped: its address is its
/// guest-physical address.
static BLOCK: Block = Block {
    deadline_ns: AtomicU64::new(u64::MAX),
    armed_ns: AtomicU64::new(u64::MAX),
    fired: AtomicU64::new(0),
    acked: AtomicU64::new(0),
};
static REGISTERED: AtomicBool = AtomicBool::new(false);

/// Arm the timer for `deadline` (guest monotonic ns), or disarm it.
/// `boot_tsc` is the TSC value at monotonic 0.
pub fn set(deadline: Option<u64>, boot_tsc: u64) {
    let d = deadline.unwrap_or(u64::MAX);
    BLOCK.deadline_ns.store(d, SeqCst);
    let registered = REGISTERED.load(SeqCst);
    // SeqCst store then load, against the monitor's store of `armed_ns`
    // then load of `deadline_ns`: one of the two sees the other.
    if deadline.is_none() || (registered && d >= BLOCK.armed_ns.load(SeqCst)) {
        return;
    }
    REGISTERED.store(true, SeqCst);
    let mut a = hc::Timer {
        block: &BLOCK as *const Block as u64,
        tsc_at_zero: boot_tsc,
        vector: unikernel_runtime::sched::TICK_VECTOR as u32,
        _pad: 0,
    };
    hypercall::call(hc::Call::Timer, &mut a);
}

/// The runtime has taken the timer interrupt: the monitor stops resending it.
pub fn acknowledge() {
    BLOCK.acked.store(BLOCK.fired.load(SeqCst), SeqCst);
}
