//! Making a hypercall: write the argument struct's address to the call's MMIO slot.

use hvt_abi::hypercall::{mmio_address, Call};

/// Perform `call` with argument struct `arg` (which must live in
/// identity-mapped memory: its virtual address is its physical address).
pub fn call<T>(call: Call, arg: &mut T) {
    let slot = mmio_address(call) as *mut u64;
    // SAFETY: the slot is the monitor's MMIO window, mapped by the monitor;
    // the write exits to the monitor, which reads and writes `arg` before resuming.
    unsafe { core::ptr::write_volatile(slot, arg as *mut T as u64) };
    // The monitor wrote results into `arg` behind the compiler's back.
    core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
}
