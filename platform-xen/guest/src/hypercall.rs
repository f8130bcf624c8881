//! Hypercalls through the hypercall page.
//!
//! The domain builder fills `hypercall_page` (named by the HYPERCALL_PAGE
//! ELF note) with one 32-byte stub per call: `push %rcx; push %r11;
//! mov $nr, %eax; syscall; pop %r11; pop %rcx; ret`. Arguments go in
//! `%rdi, %rsi, %rdx, %r10, %r8`, the result comes back in `%rax`
//! (negative = -errno). Debug builds of Xen overwrite the argument
//! registers a call does not use, so every argument register is treated as
//! clobbered. `iret` (23) is special: it is jumped to, never called (see
//! `events` and `traps`).
//!
//! Each wrapper is a small safe function when its arguments cannot break
//! memory safety (values only), and `unsafe` when it takes pointers the
//! hypervisor writes through or when it changes the address space.

use crate::abi::{self, nr, XenError};

core::arch::global_asm!(
    r#"
    .section .text.hypercall_page, "ax"
    .balign 4096
    .global hypercall_page
hypercall_page:
    .fill 4096, 1, 0xcc
"#
);

extern "C" {
    static hypercall_page: [u8; 4096];
}

/// Address of the stub for call `n`.
pub fn entry(n: usize) -> u64 {
    // SAFETY: only the address is taken.
    core::ptr::addr_of!(hypercall_page) as u64 + (n * abi::HYPERCALL_ENTRY_SIZE) as u64
}

/// Raw five-argument hypercall.
///
/// # Safety
/// The arguments must be valid for call `n` (pointers to memory the
/// hypervisor may read or write for the call's duration).
#[inline]
pub unsafe fn call5(n: usize, a1: u64, a2: u64, a3: u64, a4: u64, a5: u64) -> i64 {
    let ret: i64;
    // SAFETY: the stub preserves every register except rax (and the
    // argument registers in debug Xen builds, declared clobbered here).
    unsafe {
        core::arch::asm!(
            "call {stub}",
            stub = in(reg) entry(n),
            inlateout("rdi") a1 => _,
            inlateout("rsi") a2 => _,
            inlateout("rdx") a3 => _,
            inlateout("r10") a4 => _,
            inlateout("r8") a5 => _,
            lateout("rax") ret,
            lateout("rcx") _,
            lateout("r11") _,
        );
    }
    ret
}

#[inline]
unsafe fn call3(n: usize, a1: u64, a2: u64, a3: u64) -> i64 {
    // SAFETY: forwarded from the caller.
    unsafe { call5(n, a1, a2, a3, 0, 0) }
}

// ---------------------------------------------------------------- console

/// Write to the hypervisor's own console (`console_io`). Release builds of
/// Xen refuse this for unprivileged domains (EPERM); it is the last resort
/// when there is no console ring (e.g. a wrong `start_info`).
pub fn console_io_write(s: &[u8]) -> Result<u64, XenError> {
    // SAFETY: Xen only reads `s.len()` bytes from `s`.
    XenError::check(unsafe {
        call3(
            nr::CONSOLE_IO,
            abi::CONSOLEIO_WRITE as u64,
            s.len() as u64,
            s.as_ptr() as u64,
        )
    })
}

// ---------------------------------------------------------------- sched_op

pub fn sched_yield() {
    // SAFETY: no pointer argument.
    unsafe { call3(nr::SCHED_OP, abi::sched::YIELD as u64, 0, 0) };
}

/// Block until an event is pending. Xen unmasks event delivery
/// (`evtchn_upcall_mask = 0`) atomically with the check, so an event that
/// arrived after the caller looked is not lost: the call returns at once.
pub fn sched_block() {
    // SAFETY: no pointer argument.
    unsafe { call3(nr::SCHED_OP, abi::sched::BLOCK as u64, 0, 0) };
}

/// Stop the domain with `reason` (0 poweroff, 3 crash, or any 8-bit code).
pub fn sched_shutdown(reason: u32) -> XenError {
    let arg = reason;
    // SAFETY: Xen reads one u32 (struct sched_shutdown).
    let rc = unsafe {
        call3(
            nr::SCHED_OP,
            abi::sched::SHUTDOWN as u64,
            &arg as *const u32 as u64,
            0,
        )
    };
    XenError(rc)
}

// ---------------------------------------------------------------- traps and callbacks

/// Install the virtual IDT. `table` ends with an entry whose address is 0.
///
/// # Safety
/// Every address in `table` must be a trap entry that understands Xen's frame.
pub unsafe fn set_trap_table(table: &[abi::TrapInfo]) -> Result<u64, XenError> {
    // SAFETY: Xen copies the table (up to the zero entry) during the call.
    XenError::check(unsafe { call3(nr::SET_TRAP_TABLE, table.as_ptr() as u64, 0, 0) })
}

/// Register the event upcall, the failsafe callback and the `syscall`
/// callback (entered when guest user mode executes `syscall`).
///
/// # Safety
/// The addresses must be entry stubs that understand Xen's frames.
pub unsafe fn set_callbacks(event: u64, failsafe: u64, syscall: u64) -> Result<u64, XenError> {
    // SAFETY: forwarded from the caller.
    XenError::check(unsafe { call3(nr::SET_CALLBACKS, event, failsafe, syscall) })
}

/// Register the `syscall` callback alone, entered with events masked
/// (`CALLBACKOP_register`, `CALLBACKF_mask_events`): the stub can then
/// move off the kernel stack Xen chose before anything can interrupt it.
///
/// # Safety
/// `address` must be an entry stub that understands Xen's syscall frame.
pub unsafe fn register_syscall_callback_masked(address: u64) -> Result<u64, XenError> {
    /// `struct callback_register` (x86_64: `xen_callback_t` is a u64).
    #[repr(C)]
    struct CallbackRegister {
        ty: u16,
        flags: u16,
        _pad: u32,
        address: u64,
    }
    const CALLBACKOP_REGISTER: u64 = 0;
    const CALLBACKTYPE_SYSCALL: u16 = 2;
    const CALLBACKF_MASK_EVENTS: u16 = 1;
    let reg = CallbackRegister {
        ty: CALLBACKTYPE_SYSCALL,
        flags: CALLBACKF_MASK_EVENTS,
        _pad: 0,
        address,
    };
    // SAFETY: Xen reads `reg` during the call; the address is the caller's promise.
    XenError::check(unsafe {
        call3(
            nr::CALLBACK_OP,
            CALLBACKOP_REGISTER,
            &reg as *const CallbackRegister as u64,
            0,
        )
    })
}

/// The kernel stack Xen switches to when guest user mode traps, takes an
/// event or makes a system call (the PV equivalent of TSS.RSP0).
///
/// # Safety
/// `rsp` must be the top of a writable stack reserved for that.
pub unsafe fn stack_switch(rsp: u64) -> Result<u64, XenError> {
    // SAFETY: forwarded from the caller.
    XenError::check(unsafe { call3(nr::STACK_SWITCH, abi::FLAT_KERNEL_SS as u64, rsp, 0) })
}

/// Set the FS base, or the user/kernel GS base (`abi::segbase`).
pub fn set_segment_base(which: u32, base: u64) -> Result<u64, XenError> {
    // SAFETY: values only; a bad base faults the user, not memory safety here.
    XenError::check(unsafe { call3(nr::SET_SEGMENT_BASE, which as u64, base, 0) })
}

// ---------------------------------------------------------------- memory

/// Apply page-table writes (`*ptr = val` with `ptr` a machine address).
/// Returns how many succeeded.
///
/// # Safety
/// The writes change the address space: nothing the caller still uses may
/// be unmapped by them.
pub unsafe fn mmu_update(reqs: &[abi::MmuUpdate]) -> Result<u32, XenError> {
    let mut done: u32 = 0;
    // SAFETY: Xen reads `reqs` and writes `done`.
    let rc = unsafe {
        call5(
            nr::MMU_UPDATE,
            reqs.as_ptr() as u64,
            reqs.len() as u64,
            &mut done as *mut u32 as u64,
            abi::DOMID_SELF as u64,
            0,
        )
    };
    XenError::check(rc).map(|_| done)
}

/// Set the PTE that maps `va` (its L1 table must exist) and flush as `flags` say.
///
/// # Safety
/// As for [`mmu_update`].
pub unsafe fn update_va_mapping(va: u64, pte: u64, flags: u64) -> Result<u64, XenError> {
    // SAFETY: forwarded from the caller.
    XenError::check(unsafe { call3(nr::UPDATE_VA_MAPPING, va, pte, flags) })
}

/// Extended MMU operations (pin, unpin, new base pointer, flushes, clear page).
///
/// # Safety
/// As for [`mmu_update`].
pub unsafe fn mmuext_op(ops: &[abi::MmuextOp]) -> Result<u32, XenError> {
    let mut done: u32 = 0;
    // SAFETY: Xen reads `ops` and writes `done`.
    let rc = unsafe {
        call5(
            nr::MMUEXT_OP,
            ops.as_ptr() as u64,
            ops.len() as u64,
            &mut done as *mut u32 as u64,
            abi::DOMID_SELF as u64,
            0,
        )
    };
    XenError::check(rc).map(|_| done)
}

fn mmuext1(cmd: u32, arg1: u64) -> Result<u32, XenError> {
    let op = abi::MmuextOp {
        cmd,
        arg1,
        ..Default::default()
    };
    // SAFETY: only called below with operations that do not unmap memory
    // behind Rust's back (flushes, pin/unpin, clear of an unused frame);
    // the base-pointer ones are `unsafe` at their wrappers.
    unsafe { mmuext_op(core::slice::from_ref(&op)) }
}

pub fn pin_l4(mfn: u64) -> Result<u32, XenError> {
    mmuext1(abi::mmu::PIN_L4_TABLE, mfn)
}
pub fn pin_l1(mfn: u64) -> Result<u32, XenError> {
    mmuext1(abi::mmu::PIN_L1_TABLE, mfn)
}
pub fn unpin(mfn: u64) -> Result<u32, XenError> {
    mmuext1(abi::mmu::UNPIN_TABLE, mfn)
}
/// Switch the kernel page table to the (pinned) L4 at `mfn`.
///
/// # Safety
/// The new table must map everything the running code uses.
pub unsafe fn new_baseptr(mfn: u64) -> Result<u32, XenError> {
    mmuext1(abi::mmu::NEW_BASEPTR, mfn)
}
/// Set the page table used while in guest user mode.
///
/// # Safety
/// As for [`new_baseptr`], for the user's code and data.
pub unsafe fn new_user_baseptr(mfn: u64) -> Result<u32, XenError> {
    mmuext1(abi::mmu::NEW_USER_BASEPTR, mfn)
}
pub fn tlb_flush_local() -> Result<u32, XenError> {
    mmuext1(abi::mmu::TLB_FLUSH_LOCAL, 0)
}
pub fn invlpg_local(va: u64) -> Result<u32, XenError> {
    mmuext1(abi::mmu::INVLPG_LOCAL, va)
}
pub fn tlb_flush_all() -> Result<u32, XenError> {
    mmuext1(abi::mmu::TLB_FLUSH_ALL, 0)
}
/// Zero the frame `mfn` (it must not be a page table).
pub fn clear_page(mfn: u64) -> Result<u32, XenError> {
    mmuext1(abi::mmu::CLEAR_PAGE, mfn)
}

// ---------------------------------------------------------------- events

#[repr(C)]
struct EvtchnAllocUnbound {
    dom: u16,
    remote_dom: u16,
    port: u32,
}

#[repr(C)]
struct EvtchnBindVirq {
    virq: u32,
    vcpu: u32,
    port: u32,
}

/// Allocate a port that domain `remote` may bind to.
pub fn evtchn_alloc_unbound(remote: u16) -> Result<u32, XenError> {
    let mut a = EvtchnAllocUnbound {
        dom: abi::DOMID_SELF,
        remote_dom: remote,
        port: 0,
    };
    // SAFETY: Xen reads and writes `a` during the call.
    let rc = unsafe {
        call3(
            nr::EVENT_CHANNEL_OP,
            abi::evtchn::ALLOC_UNBOUND as u64,
            &mut a as *mut _ as u64,
            0,
        )
    };
    XenError::check(rc).map(|_| a.port)
}

/// Bind a virtual IRQ (e.g. `VIRQ_TIMER`) of vCPU 0 to a new port.
pub fn evtchn_bind_virq(virq: u32) -> Result<u32, XenError> {
    let mut a = EvtchnBindVirq {
        virq,
        vcpu: 0,
        port: 0,
    };
    // SAFETY: Xen reads and writes `a` during the call.
    let rc = unsafe {
        call3(
            nr::EVENT_CHANNEL_OP,
            abi::evtchn::BIND_VIRQ as u64,
            &mut a as *mut _ as u64,
            0,
        )
    };
    XenError::check(rc).map(|_| a.port)
}

fn evtchn_port_op(cmd: u32, port: u32) -> Result<u64, XenError> {
    let a = port;
    // SAFETY: Xen reads one u32.
    XenError::check(unsafe { call3(nr::EVENT_CHANNEL_OP, cmd as u64, &a as *const u32 as u64, 0) })
}

/// Notify the other end of `port`.
pub fn evtchn_send(port: u32) -> Result<u64, XenError> {
    evtchn_port_op(abi::evtchn::SEND, port)
}
/// Unmask `port` (Xen re-raises it if it became pending while masked).
pub fn evtchn_unmask(port: u32) -> Result<u64, XenError> {
    evtchn_port_op(abi::evtchn::UNMASK, port)
}
pub fn evtchn_close(port: u32) -> Result<u64, XenError> {
    evtchn_port_op(abi::evtchn::CLOSE, port)
}

// ---------------------------------------------------------------- vcpu_op

/// Fire VIRQ_TIMER once at system time `deadline_ns` (ns, Xen system time).
/// With `future_only`, a deadline already past fails with ETIME.
pub fn set_singleshot_timer(deadline_ns: u64, future_only: bool) -> Result<u64, XenError> {
    #[repr(C)]
    struct Singleshot {
        timeout_abs_ns: u64,
        flags: u32,
        _pad: u32,
    }
    let a = Singleshot {
        timeout_abs_ns: deadline_ns,
        flags: if future_only {
            abi::vcpu::SSHOTTMR_FUTURE
        } else {
            0
        },
        _pad: 0,
    };
    // SAFETY: Xen reads `a`.
    XenError::check(unsafe {
        call3(
            nr::VCPU_OP,
            abi::vcpu::SET_SINGLESHOT_TIMER as u64,
            0,
            &a as *const _ as u64,
        )
    })
}

/// Disarm the single-shot timer.
pub fn stop_singleshot_timer() -> Result<u64, XenError> {
    // SAFETY: no argument structure.
    XenError::check(unsafe { call3(nr::VCPU_OP, abi::vcpu::STOP_SINGLESHOT_TIMER as u64, 0, 0) })
}

/// Stop the periodic tick Xen starts for PV vCPUs by default.
pub fn stop_periodic_timer() -> Result<u64, XenError> {
    // SAFETY: no argument structure.
    XenError::check(unsafe { call3(nr::VCPU_OP, abi::vcpu::STOP_PERIODIC_TIMER as u64, 0, 0) })
}

/// Time vCPU 0 spent running, runnable, blocked and offline.
pub fn runstate_info() -> Result<abi::RunstateInfo, XenError> {
    let mut r = abi::RunstateInfo::default();
    // SAFETY: Xen writes `r`.
    let rc = unsafe {
        call3(
            nr::VCPU_OP,
            abi::vcpu::GET_RUNSTATE_INFO as u64,
            0,
            &mut r as *mut _ as u64,
        )
    };
    XenError::check(rc).map(|_| r)
}

// ---------------------------------------------------------------- grant tables

/// `GNTTABOP_query_size`: (current frames, maximum frames).
pub fn gnttab_query_size() -> Result<(u32, u32), abi::GrantOpError> {
    let mut q = abi::GnttabQuerySize {
        dom: abi::DOMID_SELF,
        ..Default::default()
    };
    // SAFETY: Xen reads and writes `q`.
    let rc = unsafe { grant_table_op(abi::gnttab::QUERY_SIZE, &mut q as *mut _ as u64, 1) };
    XenError::check(rc)?;
    if q.status != 0 {
        return Err(abi::GrantOpError::Status(q.status));
    }
    Ok((q.nr_frames, q.max_nr_frames))
}

/// `GNTTABOP_setup_table`: fill `frames` with the machine frames of the
/// first `frames.len()` grant-table pages.
pub fn gnttab_setup_table(frames: &mut [u64]) -> Result<(), abi::GrantOpError> {
    let mut s = abi::GnttabSetupTable {
        dom: abi::DOMID_SELF,
        nr_frames: frames.len() as u32,
        frame_list: frames.as_mut_ptr() as u64,
        ..Default::default()
    };
    // SAFETY: Xen writes `nr_frames` entries to `frames` and the status to `s`.
    let rc = unsafe { grant_table_op(abi::gnttab::SETUP_TABLE, &mut s as *mut _ as u64, 1) };
    XenError::check(rc)?;
    if s.status != 0 {
        return Err(abi::GrantOpError::Status(s.status));
    }
    Ok(())
}

/// Raw `grant_table_op`.
///
/// # Safety
/// `uop` must point at `count` argument structures of command `cmd`.
pub unsafe fn grant_table_op(cmd: u32, uop: u64, count: u32) -> i64 {
    // SAFETY: forwarded from the caller.
    unsafe { call3(nr::GRANT_TABLE_OP, cmd as u64, uop, count as u64) }
}
