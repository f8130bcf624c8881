//! Event channels and the upcall: how Xen interrupts a PV guest.
//!
//! Every event source (a virtual IRQ such as the timer, a console or
//! xenstore notification, later netfront/blkfront) is a *port*. When one
//! fires, Xen sets its bit in `shared_info.evtchn_pending`, the bit of its
//! 64-port word in `vcpu_info.evtchn_pending_sel`, and
//! `vcpu_info.evtchn_upcall_pending`; then, unless the vCPU masked events
//! (`evtchn_upcall_mask`, the PV "interrupt flag"), it enters the guest at
//! the *event callback* registered with `set_callbacks`, with events masked.
//!
//! The callback ([`scan`]) clears `upcall_pending`, takes the selector
//! word with an atomic exchange, and for each selected word handles the
//! ports that are pending and not masked, clearing each pending bit
//! atomically before handling it. It returns with the `iret` hypercall,
//! which restores the mask from the interrupted RFLAGS.IF.
//!
//! Handling a port here means: record it in [`FIRED`] (waiters poll that)
//! and call the handler registered for it, if any.

use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};

pub const MAX_PORTS: usize = 64 * 64;

/// Walk the 2-level bitmap and call `f` for every port pending and not
/// masked, clearing its pending bit first. `sel` is taken with an
/// exchange, so a port raised during the walk re-sets it for the next one.
pub fn scan(sel: &AtomicU64, pending: &[AtomicU64], mask: &[AtomicU64], mut f: impl FnMut(u32)) {
    let mut words = sel.swap(0, Ordering::AcqRel);
    while words != 0 {
        let w = words.trailing_zeros() as usize;
        words &= words - 1;
        let (Some(p), Some(m)) = (pending.get(w), mask.get(w)) else {
            continue;
        };
        let mut bits = p.load(Ordering::Acquire) & !m.load(Ordering::Acquire);
        while bits != 0 {
            let b = bits.trailing_zeros();
            bits &= bits - 1;
            p.fetch_and(!(1u64 << b), Ordering::AcqRel);
            f((w * 64) as u32 + b);
        }
    }
}

/// Ports that fired since a waiter last looked (bit n = port n).
pub static FIRED: [AtomicU64; 64] = [const { AtomicU64::new(0) }; 64];

/// Record that `port` fired.
pub fn mark_fired(port: u32) {
    if let Some(w) = FIRED.get(port as usize / 64) {
        w.fetch_or(1 << (port % 64), Ordering::AcqRel);
    }
}

/// Whether `port` fired since the last call for it (and clear the record).
pub fn take_fired(port: u32) -> bool {
    FIRED.get(port as usize / 64).is_some_and(|w| {
        w.fetch_and(!(1 << (port % 64)), Ordering::AcqRel) & (1 << (port % 64)) != 0
    })
}

/// How many upcalls ran (for reports and tests).
pub static UPCALLS: AtomicU64 = AtomicU64::new(0);

/// Handler kinds a port can have (kept as data: no function pointers in
/// shared statics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum PortKind {
    /// Only recorded in [`FIRED`].
    Plain = 0,
    /// The single-shot timer (VIRQ_TIMER).
    Timer = 1,
}

static KIND: [AtomicU8; 64] = [const { AtomicU8::new(0) }; 64];

pub fn set_kind(port: u32, kind: PortKind) {
    if let Some(k) = KIND.get(port as usize) {
        k.store(kind as u8, Ordering::Release);
    }
}

pub fn kind(port: u32) -> PortKind {
    match KIND.get(port as usize).map(|k| k.load(Ordering::Acquire)) {
        Some(1) => PortKind::Timer,
        _ => PortKind::Plain,
    }
}

#[cfg(target_os = "none")]
pub use target::*;

#[cfg(target_os = "none")]
mod target {
    use super::*;
    use crate::abi::{self, SharedInfo};
    use crate::hypercall;
    use core::ptr::{addr_of, addr_of_mut};

    fn shared() -> *mut SharedInfo {
        crate::shared_info()
    }

    /// Mask event delivery (the PV `cli`); returns whether it was masked before.
    pub fn mask() -> bool {
        // SAFETY: shared-info page mapped at boot; one vCPU.
        unsafe {
            let m = addr_of_mut!((*shared()).vcpu_info[0].evtchn_upcall_mask);
            let was = m.read_volatile() != 0;
            m.write_volatile(1);
            core::sync::atomic::compiler_fence(Ordering::SeqCst);
            was
        }
    }

    /// Unmask event delivery (the PV `sti`); if something is already
    /// pending, make Xen deliver it now with a cheap hypercall.
    pub fn unmask() {
        // SAFETY: shared-info page mapped at boot; one vCPU.
        unsafe {
            core::sync::atomic::compiler_fence(Ordering::SeqCst);
            addr_of_mut!((*shared()).vcpu_info[0].evtchn_upcall_mask).write_volatile(0);
            core::sync::atomic::fence(Ordering::SeqCst);
            if addr_of!((*shared()).vcpu_info[0].evtchn_upcall_pending).read_volatile() != 0 {
                // Any hypercall returns through Xen's event check.
                let _ = hypercall::call5(abi::nr::XEN_VERSION, 0, 0, 0, 0, 0);
            }
        }
    }

    /// Unmask one port in the shared bitmap (through Xen, which re-raises it if pending).
    pub fn unmask_port(port: u32) {
        let _ = hypercall::evtchn_unmask(port);
    }

    /// Block the vCPU until an event arrives (SCHEDOP_block unmasks events
    /// atomically with the check, so nothing is lost between a caller's
    /// last check and the block). Returns with events unmasked.
    pub fn block() {
        hypercall::sched_block();
    }

    /// The event upcall, called by `xen_hypervisor_callback` with events
    /// masked and the interrupted context in `frame` (the runtime may take
    /// it over to preempt the app: feature `runtime`).
    #[no_mangle]
    extern "C" fn xen_event_upcall(frame: &mut crate::traps::XenFrame) {
        UPCALLS.fetch_add(1, Ordering::Relaxed);
        let s = shared();
        // SAFETY: the shared-info page is mapped; the arrays are u64 words
        // that Xen and we update atomically, so viewing them as AtomicU64 is sound.
        unsafe {
            let vi = addr_of_mut!((*s).vcpu_info[0]);
            loop {
                addr_of_mut!((*vi).evtchn_upcall_pending).write_volatile(0);
                let sel = &*(addr_of!((*vi).evtchn_pending_sel) as *const AtomicU64);
                let pending =
                    &*(addr_of!((*s).evtchn_pending) as *const [AtomicU64; abi::EVTCHN_WORDS]);
                let mask = &*(addr_of!((*s).evtchn_mask) as *const [AtomicU64; abi::EVTCHN_WORDS]);
                scan(sel, pending, mask, |port| {
                    mark_fired(port);
                });
                if addr_of!((*vi).evtchn_upcall_pending).read_volatile() == 0 {
                    break;
                }
            }
        }
        #[cfg(feature = "runtime")]
        crate::runtime::after_upcall(frame);
        #[cfg(not(feature = "runtime"))]
        let _ = frame;
    }

    core::arch::global_asm!(
        r#"
    .section .text.xen_callbacks, "ax"
    .balign 16
    /* Event upcall. Xen pushed rcx, r11 on top of an iret frame
       (rip, cs, rflags, rsp, ss) and masked events. */
    .global xen_hypervisor_callback
xen_hypervisor_callback:
    popq %rcx
    popq %r11
    pushq $0                 /* error code slot */
    pushq $-1                /* vector slot: -1 = event */
    pushq %rax
    pushq %rbx
    pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %rbp
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp            /* cr2 slot: a XenFrame */
    movq %rsp, %rdi
    movq %rsp, %rbx
    andq $-16, %rsp
    cld
    call xen_event_upcall
    movq %rbx, %rsp
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %r11
    popq %r10
    popq %r9
    popq %r8
    popq %rbp
    popq %rdi
    popq %rsi
    popq %rdx
    popq %rcx
    popq %rbx
    popq %rax
    addq $16, %rsp           /* vector, error code */
    /* iret hypercall: flags word on top of the iret frame; its stub
       pushes rcx, r11, rax itself. Restores the event mask from RFLAGS.IF. */
    pushq $0
    jmp hypercall_page + {iret} * 32

    /* Failsafe: Xen could not load a segment register when returning to
       the guest. Nothing here uses segments, so this is a bug: report. */
    .global xen_failsafe_callback
xen_failsafe_callback:
    andq $-16, %rsp
    call xen_failsafe
    ud2
"#,
        iret = const abi::nr::IRET,
        options(att_syntax)
    );
}
