//! The one-shot timer: a host thread that sleeps until the deadline the
//! guest wrote into its [`TimerBlock`] (shared memory, guest monotonic ns),
//! then marks an interrupt pending and kicks the vCPU thread out of
//! `KVM_RUN` with a signal; the run loop then injects the vector with
//! `KVM_INTERRUPT` as soon as the guest can take it (IF set), asking KVM
//! for an interrupt window otherwise.
//!
//! The guest moves its deadline later (or clears it) by writing the block
//! alone: the thread sees the new value when it wakes at the old one. Only a
//! deadline earlier than [`TimerBlock::armed_ns`] (what the thread sleeps
//! until) needs a `timer` hypercall, which wakes the thread through a
//! condition variable. An interrupt the guest has not acknowledged
//! ([`TimerBlock::acked`]) is sent again every [`TIMER_RESEND_NS`].
//!
//! Why not KVM's in-kernel irqchip and the LAPIC timer: on kvm-pvm, a VM
//! with an irqchip takes ~11 ms to tear down (`srcu_barrier` in
//! `kvm_destroy_vm`), five times the whole launch of a small app; this
//! costs nothing until a guest arms a timer (its first second thread).
//!
//! The guest owns the block and may write anything there: every value is
//! taken as an untrusted number (a deadline in the past fires at once, one
//! far away sleeps), never as an address or a size.

use std::arch::x86_64::_rdtsc;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicU8, Ordering::*};
use std::sync::{Condvar, Mutex, MutexGuard, Once};
use std::time::Duration;

use hvt_abi::hypercall::TIMER_RESEND_NS;
use kvm_bindings::kvm_run;

static PENDING: AtomicBool = AtomicBool::new(false);
static VECTOR: AtomicU8 = AtomicU8::new(0);
static KVM_RUN: AtomicPtr<kvm_run> = AtomicPtr::new(std::ptr::null_mut());
static STARTED: Once = Once::new();
/// The vCPU thread (a `pthread_t`), once the timer is configured; 0 before.
static VCPU_THREAD: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
/// The registered block; `None` before the first call and after [`stop`].
static STATE: Mutex<Option<Block>> = Mutex::new(None);
/// Wakes the timer thread: the deadline moved earlier, or [`stop`].
static WAKE: Condvar = Condvar::new();

const KICK_SIGNAL: libc::c_int = libc::SIGUSR1;

/// Word indices of `hvt_abi::hypercall::TimerBlock`.
const DEADLINE: usize = 0;
const ARMED: usize = 1;
const FIRED: usize = 2;
const ACKED: usize = 3;

/// The guest's timer block, mapped in this process, and the guest's clock.
struct Block {
    words: *const AtomicU64,
    tsc_at_zero: u64,
    tsc_khz: u64,
}

// SAFETY: `words` points into the guest-memory mapping, which lives until
// the VM ends; [`stop`] clears the block (under the mutex) before that, and
// the timer thread only touches it while holding the mutex.
unsafe impl Send for Block {}

impl Block {
    fn word(&self, i: usize) -> &AtomicU64 {
        // SAFETY: `words` is 8-byte aligned with 4 words inside guest RAM
        // (checked by the hypercall); see `unsafe impl Send`.
        unsafe { &*self.words.add(i) }
    }

    /// The guest's monotonic clock now.
    fn now_ns(&self) -> u64 {
        // SAFETY: rdtsc has no memory effects.
        let ticks = unsafe { _rdtsc() }.saturating_sub(self.tsc_at_zero);
        (ticks as u128 * 1_000_000 / self.tsc_khz as u128).min(u64::MAX as u128) as u64
    }
}

extern "C" fn on_kick(_sig: libc::c_int) {
    let run = KVM_RUN.load(Relaxed);
    if !run.is_null() {
        // SAFETY: `run` is the vCPU's kvm_run mapping, alive for the whole
        // process once set; a single byte store is async-signal-safe. KVM_RUN
        // returns EINTR at once while immediate_exit is set.
        unsafe { std::ptr::addr_of_mut!((*run).immediate_exit).write_volatile(1) };
    }
}

fn lock() -> MutexGuard<'static, Option<Block>> {
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

/// The `timer` hypercall: (re-)register the guest's block at host address
/// `block` and wake the timer thread; the first call starts it. `run` is
/// the vCPU's kvm_run mapping; must be called on the vCPU thread.
pub fn configure(run: *mut kvm_run, block: *const u8, tsc_at_zero: u64, tsc_khz: u64, vector: u8) {
    VECTOR.store(vector, Relaxed);
    *lock() = Some(Block {
        words: block.cast(),
        tsc_at_zero,
        tsc_khz: tsc_khz.max(1),
    });
    WAKE.notify_one();
    install_kick(run);
    STARTED.call_once(|| {
        let vcpu_thread = VCPU_THREAD.load(SeqCst);
        std::thread::spawn(move || timer_thread(vcpu_thread as libc::pthread_t));
    });
}

static KICK_INSTALLED: Once = Once::new();

/// Makes the calling thread (the vCPU thread, whose kvm_run mapping is
/// `run`) the one [`kick`] interrupts: installs the kick signal's handler.
pub fn install_kick(run: *mut kvm_run) {
    KICK_INSTALLED.call_once(|| {
        KVM_RUN.store(run, Relaxed);
        // SAFETY: installing a handler that only does an async-signal-safe
        // store; no SA_RESTART, so a blocking ioctl returns EINTR.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_kick as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(KICK_SIGNAL, &sa, std::ptr::null_mut());
        }
        // SAFETY: pthread_self has no preconditions.
        VCPU_THREAD.store(unsafe { libc::pthread_self() } as usize, SeqCst);
    });
}

/// Mark the interrupt pending and kick the vCPU (once until it is injected).
fn kick(vcpu: libc::pthread_t) {
    if !PENDING.swap(true, AcqRel) {
        // SAFETY: the vCPU thread lives as long as the process.
        unsafe { libc::pthread_kill(vcpu, KICK_SIGNAL) };
    }
}

/// A timer interrupt now, from any thread (gdb's Ctrl-C: the guest looks
/// at its debug-interrupt word at each tick), even if the guest has not
/// armed its timer (one busy thread needs no time slices). Nothing before
/// [`install_kick`] or after [`stop`].
pub fn interrupt_now() {
    let vcpu = VCPU_THREAD.load(SeqCst);
    if vcpu != 0 && !KVM_RUN.load(Acquire).is_null() {
        let _ = VECTOR.compare_exchange(0, unikernel_runtime::sched::TICK_VECTOR, SeqCst, SeqCst);
        kick(vcpu as libc::pthread_t);
    }
}

fn timer_thread(vcpu: libc::pthread_t) {
    // Wake-ups as precise as the host gives (the default slack is 50 us).
    // SAFETY: changes only this thread's timer slack.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1u64, 0u64, 0u64, 0u64) };
    crate::seccomp::narrow(crate::seccomp::Role::Timer);
    let mut last_fire = 0u64;
    let mut g = lock();
    loop {
        let Some(b) = g.as_ref() else { return };
        let now = b.now_ns();
        let deadline = b.word(DEADLINE).load(SeqCst);
        if deadline <= now {
            // Fire once per deadline (unless the guest just wrote another).
            if b.word(DEADLINE)
                .compare_exchange(deadline, u64::MAX, SeqCst, SeqCst)
                .is_ok()
            {
                b.word(FIRED).fetch_add(1, SeqCst);
                kick(vcpu);
                last_fire = now;
            }
            continue;
        }
        let mut wake = deadline;
        if b.word(FIRED).load(SeqCst) != b.word(ACKED).load(SeqCst) {
            let resend = last_fire.saturating_add(TIMER_RESEND_NS);
            if resend <= now {
                kick(vcpu);
                last_fire = now;
                continue;
            }
            wake = wake.min(resend);
        }
        // Publish what we sleep until, then look again: a guest that wrote
        // an earlier deadline meanwhile either sees `wake` and calls, or
        // its value is seen here.
        b.word(ARMED).store(wake, SeqCst);
        if b.word(DEADLINE).load(SeqCst) != deadline {
            continue;
        }
        g = if wake == u64::MAX {
            WAKE.wait(g).unwrap_or_else(|e| e.into_inner())
        } else {
            WAKE.wait_timeout(g, Duration::from_nanos(wake - now))
                .unwrap_or_else(|e| e.into_inner())
                .0
        };
    }
}

/// Stop the timer for good before the vCPU (and its kvm_run mapping and
/// guest memory) goes away: forget the block (the thread ends), block the
/// kick signal on this (the vCPU) thread, so no handler can run after, then
/// forget the mapping.
pub fn stop() {
    *lock() = None;
    WAKE.notify_one();
    // SAFETY: plain signal-mask manipulation of the calling thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, KICK_SIGNAL);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    KVM_RUN.store(std::ptr::null_mut(), Release);
}

/// Called before each `KVM_RUN`: inject a pending interrupt if the guest
/// can take it now, else ask for an interrupt window. Returns the vector to inject.
pub fn before_run(run: &mut kvm_run) -> Option<u8> {
    run.immediate_exit = 0;
    if !PENDING.load(Acquire) {
        return None;
    }
    if run.ready_for_interrupt_injection != 0 && run.if_flag != 0 {
        PENDING.store(false, Release);
        run.request_interrupt_window = 0;
        Some(VECTOR.load(Relaxed))
    } else {
        run.request_interrupt_window = 1;
        None
    }
}
