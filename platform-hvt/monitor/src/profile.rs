//! A sampling profiler of the guest, for finding where a guest's time
//! goes (`UNIKERNEL_HVT_PROFILE=FILE`): a host thread kicks the vCPU out of
//! `KVM_RUN` every [`PERIOD`] while it runs guest code, the run loop
//! records the guest's instruction pointer at each such exit, and at the
//! end `FILE` gets one line per address, `COUNT ADDRESS`, most frequent
//! first, plus a `# host` line counting the periods the vCPU spent outside
//! the guest (hypercalls, I/O, waiting). Symbolize the addresses with
//! `addr2line -f -C -e <image>.kernel.debug` or `<image>.app.debug`
//! (`tests/bench/profile-report.sh` does both).
//!
//! Off unless the variable is set: it costs a signal and a register read
//! per sample, so it slows the guest down a little and is never on in a
//! normal run.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use kvm_bindings::kvm_run;

/// The variable naming the output file.
pub const PROFILE_ENV: &str = "UNIKERNEL_HVT_PROFILE";
/// Time between samples.
const PERIOD: Duration = Duration::from_micros(500);

static ON: AtomicBool = AtomicBool::new(false);
/// The vCPU is inside `KVM_RUN` (set around each call by the run loop).
static IN_GUEST: AtomicBool = AtomicBool::new(false);
static KICKED: AtomicBool = AtomicBool::new(false);
static HOST_PERIODS: AtomicU64 = AtomicU64::new(0);
static KVM_RUN: AtomicPtr<kvm_run> = AtomicPtr::new(std::ptr::null_mut());
static SAMPLES: Mutex<Option<HashMap<u64, u64>>> = Mutex::new(None);
/// The output file, created by [`prepare`] before the seccomp filter
/// forbids opening files.
static OUTPUT: Mutex<Option<std::io::Result<std::fs::File>>> = Mutex::new(None);

/// Creates the profile's output file if profiling is asked for; call during
/// setup (the run itself may not open files).
pub fn prepare() {
    if let Some(path) = std::env::var_os(PROFILE_ENV) {
        *OUTPUT.lock().unwrap_or_else(|p| p.into_inner()) = Some(std::fs::File::create(path));
    }
}

fn signal() -> libc::c_int {
    libc::SIGRTMIN() + 5
}

extern "C" fn on_sample(_sig: libc::c_int) {
    let run = KVM_RUN.load(Ordering::Relaxed);
    if !run.is_null() {
        // SAFETY: `run` is the vCPU's kvm_run mapping, alive while the
        // profiler is on (set in `start`, cleared in `finish` before the
        // vCPU goes away); a byte store is async-signal-safe.
        unsafe { std::ptr::addr_of_mut!((*run).immediate_exit).write_volatile(1) };
    }
}

/// Starts the profiler if [`PROFILE_ENV`] is set. Call on the vCPU thread
/// before the first `KVM_RUN`.
pub fn start(run: *mut kvm_run) {
    if std::env::var_os(PROFILE_ENV).is_none() {
        return;
    }
    KVM_RUN.store(run, Ordering::Relaxed);
    *SAMPLES.lock().unwrap_or_else(|p| p.into_inner()) = Some(HashMap::new());
    // SAFETY: a handler that only does an async-signal-safe store.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sample as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(signal(), &sa, std::ptr::null_mut());
    }
    // SAFETY: pthread_self has no preconditions.
    let vcpu = unsafe { libc::pthread_self() } as usize;
    ON.store(true, Ordering::Release);
    std::thread::spawn(move || {
        crate::seccomp::narrow(crate::seccomp::Role::Sampler);
        while ON.load(Ordering::Acquire) {
            std::thread::sleep(PERIOD);
            if IN_GUEST.load(Ordering::Acquire) {
                KICKED.store(true, Ordering::Release);
                // SAFETY: the vCPU thread lives as long as the process.
                unsafe { libc::pthread_kill(vcpu as libc::pthread_t, signal()) };
            } else {
                HOST_PERIODS.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
}

/// Is the profiler on?
pub fn on() -> bool {
    ON.load(Ordering::Relaxed)
}

/// The run loop enters (`true`) or leaves `KVM_RUN`.
pub fn in_guest(yes: bool) {
    IN_GUEST.store(yes, Ordering::Release);
}

/// An exit happened: if the profiler asked for it, record `rip`.
pub fn exit_at(rip: impl FnOnce() -> Option<u64>) {
    if KICKED.swap(false, Ordering::AcqRel) {
        if let Some(rip) = rip() {
            if let Some(m) = SAMPLES.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
                *m.entry(rip).or_insert(0) += 1;
            }
        }
    }
}

/// Stops the profiler and writes the file (a failure is reported, never
/// fatal).
pub fn finish() {
    if !ON.swap(false, Ordering::AcqRel) {
        return;
    }
    KVM_RUN.store(std::ptr::null_mut(), Ordering::Release);
    let Some(path) = std::env::var_os(PROFILE_ENV) else {
        return;
    };
    let samples = SAMPLES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
        .unwrap_or_default();
    let mut v: Vec<(u64, u64)> = samples.into_iter().map(|(a, n)| (n, a)).collect();
    v.sort_unstable_by(|a, b| b.cmp(a));
    let total: u64 = v.iter().map(|(n, _)| n).sum();
    let mut out = format!(
        "# guest samples {total} (every {} us), host {}\n",
        PERIOD.as_micros(),
        HOST_PERIODS.load(Ordering::Relaxed)
    );
    for (n, a) in v {
        out.push_str(&format!("{n} {a:#x}\n"));
    }
    let file = OUTPUT.lock().unwrap_or_else(|p| p.into_inner()).take();
    let r = file
        .unwrap_or_else(|| Err(std::io::Error::other("not created during setup")))
        .and_then(|mut f| f.write_all(out.as_bytes()));
    match r {
        Ok(()) => eprintln!(
            "unikernel-hvt: profile: {total} guest samples written to {}",
            std::path::Path::new(&path).display()
        ),
        Err(e) => eprintln!(
            "unikernel-hvt: profile: cannot write {}: {e}",
            std::path::Path::new(&path).display()
        ),
    }
}
