//! A clean stop on SIGINT and SIGTERM: instead of dying at once, the
//! monitor leaves the run loop, ends its devices (whose counters
//! `UNIKERNEL_NET_STATS` / `UNIKERNEL_BLOCK_STATS` print then, so a
//! benchmark that stops a serving guest still gets its VM-exit figures)
//! and exits with 128 + the signal number, as a process killed by the
//! signal would report.
//!
//! The handler only stores the signal number and asks the vCPU to leave
//! `KVM_RUN` (`immediate_exit`, and a kick signal when the handler runs on
//! another thread); the run loop checks [`requested`] before each entry.
use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicU64, Ordering::Relaxed};

use kvm_bindings::kvm_run;

static SIGNAL: AtomicI32 = AtomicI32::new(0);
static RUN: AtomicPtr<kvm_run> = AtomicPtr::new(std::ptr::null_mut());
/// The vCPU thread's kernel thread id (0: not running yet).
static VCPU_TID: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    SIGNAL.store(sig, Relaxed);
    let run = RUN.load(Relaxed);
    if !run.is_null() {
        // SAFETY: `run` is the vCPU's kvm_run mapping, alive for the whole
        // run; a single byte store is async-signal-safe.
        unsafe { std::ptr::addr_of_mut!((*run).immediate_exit).write_volatile(1) };
    }
    let tid = VCPU_TID.load(Relaxed);
    // SAFETY: getpid/gettid/tgkill are plain async-signal-safe system calls.
    unsafe {
        if tid != 0 && libc::gettid() as u64 != tid {
            // Interrupt a KVM_RUN in progress on the vCPU thread (the
            // signal's own handler runs there, harmlessly, again).
            libc::syscall(libc::SYS_tgkill, libc::getpid(), tid as libc::pid_t, sig);
        }
    }
}

/// Catch SIGINT and SIGTERM for the vCPU thread whose kvm_run mapping is
/// `run`; call on the vCPU thread before the run loop.
pub fn install(run: *mut kvm_run) {
    RUN.store(run, Relaxed);
    // SAFETY: gettid has no preconditions.
    VCPU_TID.store(unsafe { libc::gettid() } as u64, Relaxed);
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a handler that only does async-signal-safe work; no
        // SA_RESTART, so a blocking call on the vCPU thread returns EINTR.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// Put the default actions back (the run is over).
pub fn uninstall() {
    RUN.store(std::ptr::null_mut(), Relaxed);
    VCPU_TID.store(0, Relaxed);
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: restoring the default disposition.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
}

/// The exit code for a stop that was asked for (130 for SIGINT, 143 for
/// SIGTERM), if one was.
pub fn requested() -> Option<i32> {
    match SIGNAL.load(Relaxed) {
        0 => None,
        sig => Some(128 + sig),
    }
}
