//! The block device: the monitor side of `hvt_abi::block`.
//!
//! [`install`] opens the `--disk` files before the guest starts (after
//! checking them against the disks the image declares, [`config`]). The
//! guest's `block_setup` call hands over a disk's request ring; from then
//! on an I/O thread of that disk serves it ([`io`]) with `pread`, `pwrite`
//! and `fdatasync` on the file. The vCPU thread serves the four small
//! calls: `block_info`, `block_setup`, `block_notify` (the ring was empty;
//! the requests at its head it serves itself, up to a batch, since it is
//! out of the guest already, and wakes the I/O thread for the rest and to
//! poll the ring for the next ones) and
//! `block_wait` (block until requests completed, so a guest waiting for
//! its disk costs no host CPU).
//!
//! The I/O threads trust nothing in the rings: every index, op, sector,
//! length and buffer is checked. A broken ring is recorded as a fault; the
//! vCPU is kicked out of `KVM_RUN` (a real-time signal) and the run loop
//! stops the guest ([`take_fault`]). There is one device per process, like
//! the network device's.
pub mod config;
mod io;

use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hvt_abi::block::{
    ring_bytes, BlockInfo, BlockNotify, BlockSetup, BlockWait, BLOCK_ATTACHED, BLOCK_CAN_FLUSH,
    BLOCK_READ_ONLY, MAX_REQUEST, MAX_SLOTS, MAX_WAIT_NS, NAME_LEN, RING_ALIGN,
};
use hvt_abi::hypercall::Call;
use kvm_bindings::kvm_run;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::hypercall::HypercallError;
use crate::memory::GuestMemory;
pub use config::{Disk, DiskArg};

/// Set this environment variable to print each disk's request counts at the end.
pub const STATS_ENV: &str = "UNIKERNEL_BLOCK_STATS";

/// Counters, for [`STATS_ENV`] and the tests.
#[derive(Debug, Default)]
pub struct Stats {
    pub reads: AtomicU64,
    pub read_bytes: AtomicU64,
    pub writes: AtomicU64,
    pub write_bytes: AtomicU64,
    pub flushes: AtomicU64,
    /// Writes refused because the disk is read-only.
    pub refused: AtomicU64,
    /// Host calls that failed (the guest got `BLOCK_S_IO_ERROR`).
    pub errors: AtomicU64,
    pub notify_calls: AtomicU64,
    pub wait_calls: AtomicU64,
    /// Wake-ups of the I/O thread by a notification.
    pub kicks: AtomicU64,
    /// Requests the vCPU thread served itself in `block_notify`.
    pub inline: AtomicU64,
}

/// One disk, as the vCPU thread and its I/O thread share it.
struct DiskShared {
    name: String,
    file: std::fs::File,
    sectors: u64,
    read_only: bool,
    /// The ring has requests (written by `block_notify`).
    kick: EventFd,
    /// The I/O thread should end.
    stop: EventFd,
    ring: OnceLock<io::Ring>,
    /// The completion index (the monitor's own copy), published for
    /// `block_wait`.
    completed: AtomicU32,
    /// The completion index as the servers (the I/O thread, and the vCPU
    /// thread for the requests it serves inline) advance it: whoever holds the lock serves.
    cursor: Mutex<u32>,
    /// A `block_wait` is (about to be) asleep on `cond`.
    waiting: AtomicBool,
    lock: Mutex<()>,
    cond: Condvar,
    stats: Stats,
}

impl DiskShared {
    /// The I/O thread completed every request below `index`.
    fn completed(&self, index: u32) {
        self.completed.store(index, Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) {
            let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
            self.cond.notify_all();
        }
    }

    fn wake_waiters(&self) {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.cond.notify_all();
    }
}

struct Device {
    disks: Vec<Arc<DiskShared>>,
    threads: Vec<JoinHandle<()>>,
}

static DEVICE: Mutex<Option<Device>> = Mutex::new(None);

fn device() -> std::sync::MutexGuard<'static, Option<Device>> {
    DEVICE.lock().unwrap_or_else(|p| p.into_inner())
}

fn disk(index: u32) -> Option<Arc<DiskShared>> {
    device()
        .as_ref()
        .and_then(|d| d.disks.get(index as usize).cloned())
}

/// Checks the `--disk` list against the image's declared disks, opens the
/// files and makes the disks available to the guest (in `--disk` order).
pub fn install(args: &[DiskArg], declared: &[String]) -> Result<(), String> {
    config::check_against_manifest(args, declared)?;
    let mut disks = Vec::new();
    for a in args {
        let d = config::open(a)?;
        let efd =
            || EventFd::new(EFD_NONBLOCK).map_err(|e| format!("cannot create an eventfd: {e}"));
        disks.push(Arc::new(DiskShared {
            name: d.name,
            file: d.file,
            sectors: d.sectors,
            read_only: d.read_only,
            kick: efd()?,
            stop: efd()?,
            ring: OnceLock::new(),
            completed: AtomicU32::new(0),
            cursor: Mutex::new(0),
            waiting: AtomicBool::new(false),
            lock: Mutex::new(()),
            cond: Condvar::new(),
            stats: Stats::default(),
        }));
    }
    *fault_slot() = None;
    FAULTED.store(false, Ordering::Release);
    *device() = if disks.is_empty() {
        None
    } else {
        Some(Device {
            disks,
            threads: Vec::new(),
        })
    };
    Ok(())
}

// --- Stopping the guest when an I/O thread finds a broken ring ---

static FAULTED: AtomicBool = AtomicBool::new(false);
static FAULT: Mutex<Option<String>> = Mutex::new(None);
static KVM_RUN: AtomicPtr<kvm_run> = AtomicPtr::new(std::ptr::null_mut());
static VCPU_THREAD: AtomicU64 = AtomicU64::new(0);

fn fault_slot() -> std::sync::MutexGuard<'static, Option<String>> {
    FAULT.lock().unwrap_or_else(|p| p.into_inner())
}

/// The signal that kicks the vCPU out of `KVM_RUN` (the timer uses
/// SIGUSR1, the network device SIGUSR2).
fn kick_signal() -> libc::c_int {
    libc::SIGRTMIN() + 1
}

extern "C" fn on_kick(_sig: libc::c_int) {
    let run = KVM_RUN.load(Ordering::Relaxed);
    if !run.is_null() {
        // SAFETY: `run` is the vCPU's kvm_run mapping, set by `bind_vcpu`
        // and cleared (with the signal blocked) in `stop` before it goes
        // away; a byte store is async-signal-safe and makes KVM_RUN return.
        unsafe { std::ptr::addr_of_mut!((*run).immediate_exit).write_volatile(1) };
    }
}

/// Called on the vCPU thread before the first `KVM_RUN`: lets an I/O
/// thread kick the vCPU out of the guest when it finds a broken ring.
pub fn bind_vcpu(run: *mut kvm_run) {
    if device().is_none() {
        return;
    }
    KVM_RUN.store(run, Ordering::Release);
    // SAFETY: pthread_self has no preconditions.
    VCPU_THREAD.store(unsafe { libc::pthread_self() } as u64, Ordering::Release);
    // SAFETY: installs a handler that only does an async-signal-safe
    // store; no SA_RESTART, so KVM_RUN returns EINTR.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_kick as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(kick_signal(), &sa, std::ptr::null_mut());
    }
}

/// Records a broken ring and gets the vCPU thread to notice.
fn record_fault(what: String) {
    {
        let mut f = fault_slot();
        if f.is_none() {
            *f = Some(what);
        }
    }
    FAULTED.store(true, Ordering::Release);
    if let Some(d) = device().as_ref() {
        for disk in &d.disks {
            disk.wake_waiters();
        }
    }
    let thread = VCPU_THREAD.load(Ordering::Acquire);
    if thread != 0 {
        // SAFETY: the vCPU thread runs until `stop`, which joins the I/O
        // threads first; the signal's handler is installed (`bind_vcpu`).
        unsafe { libc::pthread_kill(thread as libc::pthread_t, kick_signal()) };
    }
}

/// A fault an I/O thread found in the guest's rings, if any (taken once).
pub fn take_fault() -> Option<String> {
    if !FAULTED.load(Ordering::Acquire) {
        return None;
    }
    fault_slot().take()
}

// --- The hypercalls ---

/// Serves `block_info`, `block_setup`, `block_notify` and `block_wait`.
pub fn serve(mem: &mut GuestMemory, call: Call, gpa: u64) -> Result<(), HypercallError> {
    let err = |msg: String| HypercallError::Block {
        call: call.name(),
        msg,
    };
    let bad_args = || HypercallError::BadArgs {
        call: call.name(),
        gpa,
    };
    let attached = || device().as_ref().map_or(0, |d| d.disks.len() as u32);
    let no_disk = |i: u32| {
        let n = attached();
        err(format!(
            "no disk {i}: {n} disk{} attached",
            if n == 1 { " is" } else { "s are" }
        ))
    };
    match call {
        Call::BlockInfo => {
            let a: BlockInfo = mem.read_obj(gpa).map_err(|_| bad_args())?;
            let mut info = BlockInfo {
                disk: a.disk,
                count: attached(),
                ..Default::default()
            };
            if let Some(d) = disk(a.disk) {
                info.flags = BLOCK_ATTACHED | BLOCK_CAN_FLUSH;
                if d.read_only {
                    info.flags |= BLOCK_READ_ONLY;
                }
                info.sectors = d.sectors;
                info.max_request = MAX_REQUEST as u32;
                let n = d.name.len().min(NAME_LEN);
                info.name[..n].copy_from_slice(&d.name.as_bytes()[..n]);
            }
            mem.write_obj(gpa, &info).map_err(|_| bad_args())
        }
        Call::BlockSetup => {
            let a: BlockSetup = mem.read_obj(gpa).map_err(|_| bad_args())?;
            let d = disk(a.disk).ok_or_else(|| no_disk(a.disk))?;
            let ring = check_setup(mem, &a).map_err(err)?;
            start(mem, a.disk, &d, ring).map_err(err)
        }
        Call::BlockNotify => {
            let a: BlockNotify = mem.read_obj(gpa).map_err(|_| bad_args())?;
            let d = disk(a.disk).ok_or_else(|| no_disk(a.disk))?;
            if d.ring.get().is_none() {
                return Err(err(format!("disk {}: called before block_setup", a.disk)));
            }
            d.stats.notify_calls.fetch_add(1, Ordering::Relaxed);
            let ring = *d.ring.get().expect("checked above");
            // SAFETY: used only during this call, while `mem` is alive.
            let ram = unsafe { mem.shared() };
            match io::serve_inline(&d, ram, ring) {
                // Served: the I/O thread still starts polling the ring, so
                // the guest's next request needs no exit.
                Ok(_) => {
                    let _ = d.kick.write(1);
                }
                // Reported like the I/O thread's faults: the run loop
                // stops the guest with the ring message.
                Err(io::Fault(what)) => record_fault(what),
            }
            Ok(())
        }
        Call::BlockWait => {
            let mut a: BlockWait = mem.read_obj(gpa).map_err(|_| bad_args())?;
            let d = disk(a.disk).ok_or_else(|| no_disk(a.disk))?;
            if d.ring.get().is_none() {
                return Err(err(format!("disk {}: called before block_setup", a.disk)));
            }
            d.stats.wait_calls.fetch_add(1, Ordering::Relaxed);
            let timeout = Duration::from_nanos(a.timeout_nsecs.min(MAX_WAIT_NS));
            a.completed = wait(&d, a.until, timeout);
            mem.write_obj(gpa, &a).map_err(|_| bad_args())
        }
        _ => Err(err("not a block call".into())),
    }
}

/// Checks a `block_setup` request against the ABI's limits and guest RAM.
fn check_setup(mem: &GuestMemory, a: &BlockSetup) -> Result<io::Ring, String> {
    if !a.slots.is_power_of_two() || a.slots > MAX_SLOTS {
        return Err(format!(
            "{} ring slots: must be a power of two up to {MAX_SLOTS}",
            a.slots
        ));
    }
    if a.ring % RING_ALIGN != 0 {
        return Err(format!(
            "the ring at {:#x} is not {RING_ALIGN}-byte aligned",
            a.ring
        ));
    }
    mem.check(a.ring, ring_bytes(a.slots))
        .map_err(|e| format!("ring: {e}"))?;
    Ok(io::Ring {
        gpa: a.ring,
        slots: a.slots,
    })
}

/// Records the ring and starts the disk's I/O thread.
fn start(mem: &GuestMemory, index: u32, d: &Arc<DiskShared>, ring: io::Ring) -> Result<(), String> {
    let mut guard = device();
    let dev = guard
        .as_mut()
        .ok_or_else(|| "no disk is attached".to_string())?;
    if d.ring.set(ring).is_err() {
        return Err(format!("disk {index}: the ring is already set up"));
    }
    // SAFETY: the I/O thread is joined in `stop`, which `Vm::run` calls
    // when the guest ends and `Vm::drop` calls before the memory goes away.
    let ram = unsafe { mem.shared() };
    let disk = d.clone();
    let t = std::thread::Builder::new()
        .name(format!("hvt-blk{index}"))
        .spawn(move || {
            crate::seccomp::narrow(crate::seccomp::Role::BlockIo);
            if let Err(io::Fault(what)) = io::serve(&disk, ram, ring) {
                record_fault(what);
            }
        })
        .map_err(|e| format!("cannot start the block I/O thread: {e}"))?;
    dev.threads.push(t);
    Ok(())
}

/// Whether completion index `completed` has reached `until` (wrapping).
fn reached(completed: u32, until: u32) -> bool {
    until.wrapping_sub(completed) as i32 <= 0
}

/// The guest's `block_wait`: blocks until the completion index reaches
/// `until`, a fault, or the timeout. Returns the completion index.
fn wait(d: &DiskShared, until: u32, timeout: Duration) -> u32 {
    let deadline = Instant::now() + timeout;
    let mut g = d.lock.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        d.waiting.store(true, Ordering::SeqCst);
        let c = d.completed.load(Ordering::SeqCst);
        let left = deadline.saturating_duration_since(Instant::now());
        if reached(c, until) || FAULTED.load(Ordering::Acquire) || left.is_zero() {
            d.waiting.store(false, Ordering::SeqCst);
            return c;
        }
        g = d
            .cond
            .wait_timeout(g, left)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
}

/// Ends the device: stops and joins the I/O threads (closing the files)
/// and blocks the kick signal on this (the vCPU) thread. Returns each
/// disk's name and counters, for [`report`].
pub fn stop() -> Vec<(String, [u64; 11])> {
    let Some(dev) = device().take() else {
        return Vec::new();
    };
    for d in &dev.disks {
        let _ = d.stop.write(1);
    }
    for t in dev.threads {
        let _ = t.join();
    }
    // SAFETY: plain signal-mask manipulation of the calling thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, kick_signal());
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    KVM_RUN.store(std::ptr::null_mut(), Ordering::Release);
    VCPU_THREAD.store(0, Ordering::Release);
    dev.disks
        .iter()
        .map(|d| {
            let s = &d.stats;
            let counts = [
                &s.reads,
                &s.read_bytes,
                &s.writes,
                &s.write_bytes,
                &s.flushes,
                &s.refused,
                &s.errors,
                &s.notify_calls,
                &s.wait_calls,
                &s.kicks,
                &s.inline,
            ]
            .map(|c| c.load(Ordering::Relaxed));
            (d.name.clone(), counts)
        })
        .collect()
}

/// Prints each disk's counters when [`STATS_ENV`] is set.
pub fn report(disks: &[(String, [u64; 11])]) {
    if std::env::var_os(STATS_ENV).is_none() {
        return;
    }
    for (name, c) in disks {
        let [reads, rbytes, writes, wbytes, flushes, refused, errors, notify, waits, kicks, inline] =
            *c;
        eprintln!(
            "unikernel-hvt: block stats: disk {name:?}: {reads} reads ({rbytes} bytes), {writes} writes ({wbytes} bytes), {flushes} flushes, {refused} refused writes, {errors} I/O errors, {notify} block_notify calls ({kicks} I/O-thread kicks), {inline} requests served in block_notify, {waits} block_wait calls"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_indices_wrap() {
        assert!(reached(5, 5));
        assert!(reached(6, 5));
        assert!(!reached(4, 5));
        assert!(reached(2, u32::MAX));
        assert!(!reached(u32::MAX, 2));
    }
}
