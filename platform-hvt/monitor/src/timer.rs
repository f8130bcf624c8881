//! The preemption timer: a host thread that, every period, marks an
//! interrupt pending and kicks the vCPU thread out of `KVM_RUN` with a
//! signal; the run loop then injects the vector with `KVM_INTERRUPT` as soon
//! as the guest can take it (IF set), asking KVM for an interrupt window
//! otherwise.
//!
//! Why not KVM's in-kernel irqchip and the LAPIC timer: on kvm-pvm, a VM
//! with an irqchip takes ~11 ms to tear down (`srcu_barrier` in
//! `kvm_destroy_vm`), five times the whole launch of a small app; this
//! costs nothing until a guest asks for a tick (its first second thread).

use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicU8, Ordering};
use std::sync::Once;
use std::time::Duration;

use kvm_bindings::kvm_run;

static PENDING: AtomicBool = AtomicBool::new(false);
static VECTOR: AtomicU8 = AtomicU8::new(0);
static PERIOD_NS: AtomicU64 = AtomicU64::new(0);
static KVM_RUN: AtomicPtr<kvm_run> = AtomicPtr::new(std::ptr::null_mut());
static STARTED: Once = Once::new();

const KICK_SIGNAL: libc::c_int = libc::SIGUSR1;
const MIN_PERIOD_NS: u64 = 1_000_000;

extern "C" fn on_kick(_sig: libc::c_int) {
    let run = KVM_RUN.load(Ordering::Relaxed);
    if !run.is_null() {
        // SAFETY: `run` is the vCPU's kvm_run mapping, alive for the whole
        // process once set; a single byte store is async-signal-safe. KVM_RUN
        // returns EINTR at once while immediate_exit is set.
        unsafe { std::ptr::addr_of_mut!((*run).immediate_exit).write_volatile(1) };
    }
}

/// Start (period > 0) or stop (0) the tick. `run` is the vCPU's kvm_run
/// mapping; must be called on the vCPU thread.
pub fn configure(run: *mut kvm_run, period_ns: u64, vector: u8) {
    VECTOR.store(vector, Ordering::Relaxed);
    let period = if period_ns == 0 {
        0
    } else {
        period_ns.max(MIN_PERIOD_NS)
    };
    PERIOD_NS.store(period, Ordering::Relaxed);
    if period == 0 {
        return;
    }
    STARTED.call_once(|| {
        KVM_RUN.store(run, Ordering::Relaxed);
        // SAFETY: installing a handler that only does an async-signal-safe
        // store; no SA_RESTART, so a blocking ioctl returns EINTR.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_kick as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(KICK_SIGNAL, &sa, std::ptr::null_mut());
        }
        // SAFETY: pthread_self has no preconditions.
        let vcpu_thread = unsafe { libc::pthread_self() } as usize;
        std::thread::spawn(move || loop {
            let p = PERIOD_NS.load(Ordering::Relaxed);
            std::thread::sleep(Duration::from_nanos(if p == 0 { 50_000_000 } else { p }));
            if p != 0 && !PENDING.swap(true, Ordering::AcqRel) {
                // SAFETY: the vCPU thread lives as long as the process.
                unsafe { libc::pthread_kill(vcpu_thread as libc::pthread_t, KICK_SIGNAL) };
            }
        });
    });
}

/// Stop the tick for good before the vCPU (and its kvm_run mapping) goes
/// away: block the kick signal on this (the vCPU) thread first, so no
/// handler can run after, then forget the mapping.
pub fn stop() {
    PERIOD_NS.store(0, Ordering::Relaxed);
    // SAFETY: plain signal-mask manipulation of the calling thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, KICK_SIGNAL);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    KVM_RUN.store(std::ptr::null_mut(), Ordering::Release);
}

/// Called before each `KVM_RUN`: inject a pending tick if the guest can
/// take it now, else ask for an interrupt window. Returns the vector to inject.
pub fn before_run(run: &mut kvm_run) -> Option<u8> {
    run.immediate_exit = 0;
    if !PENDING.load(Ordering::Acquire) {
        return None;
    }
    if run.ready_for_interrupt_injection != 0 && run.if_flag != 0 {
        PENDING.store(false, Ordering::Release);
        run.request_interrupt_window = 0;
        Some(VECTOR.load(Ordering::Relaxed))
    } else {
        run.request_interrupt_window = 1;
        None
    }
}
