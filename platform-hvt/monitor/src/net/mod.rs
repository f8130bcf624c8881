//! The network device: the monitor side of `hvt_abi::net`.
//!
//! [`install`] opens the backend (a tap device or `passt`) before the guest
//! starts. The guest's `net_setup` call hands over its two rings; from then
//! on an I/O thread of the monitor serves them ([`io`]): it moves frames
//! from the tx ring to the backend and from the backend into the rx ring,
//! and wakes the vCPU thread when it waits in `poll` ([`wait`]). The vCPU
//! thread only serves the three small calls; a frame never costs it an exit
//! unless the tx ring was empty.
//!
//! The I/O thread trusts nothing in the rings: every index is checked
//! against the ring size, every descriptor against guest RAM and the slot
//! size. A broken ring is recorded as a fault; the vCPU is kicked out of
//! `KVM_RUN` (`SIGUSR2`) and the run loop stops the guest ([`take_fault`]).
//!
//! There is one device per process (like the preemption timer's state):
//! `cargo unikernel run` and the `unikernel-hvt` binary each boot one guest.
pub mod backend;
pub mod config;
mod io;
pub mod trace;

use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hvt_abi::hypercall::Call;
use hvt_abi::net::{
    ring_bytes, NetInfo, NetSetup, MAX_BUF_SIZE, MAX_SLOTS, MIN_BUF_SIZE, NET_ATTACHED, NET_READY,
    RING_ALIGN, RING_CONSUMER,
};
use kvm_bindings::kvm_run;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::hypercall::HypercallError;
use crate::memory::GuestMemory;
use backend::Backend;
pub use config::{NetBackend, NetConfig, NetOptions, PortForward};
use trace::Tracer;

/// The MAC address the guest's device gets (locally administered, unicast).
pub const GUEST_MAC: [u8; 6] = [0x02, 0x75, 0x6b, 0x00, 0x00, 0x01];
/// The MTU the guest's device reports (and passt's DHCP announces).
pub const MTU: u32 = 1500;
/// Set this environment variable to print frame and exit counts at the end.
pub const STATS_ENV: &str = "UNIKERNEL_NET_STATS";

/// The line printed for an image with the net component but no `--net`.
pub const NO_NETWORK_NOTE: &str =
    "no network attached: loopback only; use --net user -p HOST:GUEST or --net tap:IF";

const KICK_SIGNAL: libc::c_int = libc::SIGUSR2;

/// The rings the guest handed over (checked).
#[derive(Clone, Copy, Debug)]
struct Rings {
    rx: u64,
    tx: u64,
    slots: u32,
    buf_size: u32,
}

/// Counters, for `UNIKERNEL_NET_STATS` and the tests.
#[derive(Debug, Default)]
pub struct Stats {
    pub tx_frames: AtomicU64,
    pub rx_frames: AtomicU64,
    /// Frames from the host dropped: larger than a slot, or shorter than an Ethernet header.
    pub rx_dropped: AtomicU64,
    pub notify_calls: AtomicU64,
    /// Wake-ups of the I/O thread by a notification.
    pub kicks: AtomicU64,
    pub poll_wakeups: AtomicU64,
}

/// What the vCPU thread and the I/O thread share.
struct Shared {
    /// The tx ring has frames (written by `net_notify`).
    kick: EventFd,
    /// Something the vCPU's `poll` waits for happened (rx frame, tx room, fault).
    wake: EventFd,
    /// The I/O thread should end.
    stop: EventFd,
    rings: OnceLock<Rings>,
    /// Frames published into the rx ring so far (the monitor's own copy of
    /// the rx producer: the guest could overwrite the one in its memory).
    rx_produced: AtomicU32,
    /// The tx ring was full and the I/O thread made room.
    tx_room: AtomicBool,
    fault: Mutex<Option<String>>,
    stats: Stats,
    vcpu_thread: AtomicU64,
}

struct Device {
    shared: Arc<Shared>,
    /// Until `net_setup`: the backend and tracer, then moved to the I/O thread.
    pending: Option<(Backend, Tracer)>,
    thread: Option<JoinHandle<()>>,
}

static DEVICE: Mutex<Option<Device>> = Mutex::new(None);

fn device() -> std::sync::MutexGuard<'static, Option<Device>> {
    DEVICE.lock().unwrap_or_else(|p| p.into_inner())
}

fn shared() -> Option<Arc<Shared>> {
    device().as_ref().map(|d| d.shared.clone())
}

/// Opens the backend `config` asks for and makes the device available to
/// the guest. Without a backend nothing is attached.
pub fn install(config: &NetConfig) -> Result<(), String> {
    config.validate()?;
    let Some(which) = &config.backend else {
        return Ok(());
    };
    let tracer = Tracer::new(config.pcap.as_deref())?;
    let backend = match which {
        NetBackend::Tap(name) => Backend::open_tap(name)?,
        NetBackend::User => Backend::start_passt(&config.ports, MTU)?,
    };
    let efd = || EventFd::new(EFD_NONBLOCK).map_err(|e| format!("cannot create an eventfd: {e}"));
    let shared = Arc::new(Shared {
        kick: efd()?,
        wake: efd()?,
        stop: efd()?,
        rings: OnceLock::new(),
        rx_produced: AtomicU32::new(0),
        tx_room: AtomicBool::new(false),
        fault: Mutex::new(None),
        stats: Stats::default(),
        vcpu_thread: AtomicU64::new(0),
    });
    FAULTED.store(false, Ordering::Release);
    *device() = Some(Device {
        shared,
        pending: Some((backend, tracer)),
        thread: None,
    });
    Ok(())
}

extern "C" fn on_kick(_sig: libc::c_int) {
    if let Some(d) = DEVICE_RUN.get() {
        let run = d.load(Ordering::Relaxed);
        if !run.is_null() {
            // SAFETY: `run` is the vCPU's kvm_run mapping, set by `bind_vcpu`
            // and cleared (with the signal blocked) before it goes away; a
            // byte store is async-signal-safe and makes KVM_RUN return EINTR.
            unsafe { std::ptr::addr_of_mut!((*run).immediate_exit).write_volatile(1) };
        }
    }
}

/// The kvm_run mapping the kick handler writes (a static the handler can
/// read without locking).
static DEVICE_RUN: OnceLock<AtomicPtr<kvm_run>> = OnceLock::new();

/// Called on the vCPU thread before the first `KVM_RUN`: lets the I/O
/// thread kick the vCPU out of the guest when it finds a broken ring.
pub fn bind_vcpu(run: *mut kvm_run) {
    let Some(sh) = shared() else { return };
    DEVICE_RUN
        .get_or_init(|| AtomicPtr::new(std::ptr::null_mut()))
        .store(run, Ordering::Release);
    // SAFETY: pthread_self has no preconditions.
    sh.vcpu_thread
        .store(unsafe { libc::pthread_self() } as u64, Ordering::Release);
    // SAFETY: installs a handler that only does an async-signal-safe store;
    // no SA_RESTART, so KVM_RUN returns EINTR.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_kick as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(KICK_SIGNAL, &sa, std::ptr::null_mut());
    }
}

/// Set with every recorded fault: the run loop checks it after every exit
/// without taking a lock.
static FAULTED: AtomicBool = AtomicBool::new(false);

/// A fault the I/O thread found in the guest's rings, if any (taken once).
pub fn take_fault() -> Option<String> {
    if !FAULTED.load(Ordering::Acquire) {
        return None;
    }
    let sh = shared()?;
    let f = sh.fault.lock().unwrap_or_else(|p| p.into_inner()).take();
    f
}

impl Shared {
    /// Records a broken ring and gets the vCPU thread to notice.
    fn fault(&self, what: String) {
        *self.fault.lock().unwrap_or_else(|p| p.into_inner()) = Some(what);
        FAULTED.store(true, Ordering::Release);
        let _ = self.wake.write(1);
        let thread = self.vcpu_thread.load(Ordering::Acquire);
        if thread != 0 {
            // SAFETY: the vCPU thread runs until `stop`, which joins this
            // thread first; the signal's handler is installed (`bind_vcpu`).
            unsafe { libc::pthread_kill(thread as libc::pthread_t, KICK_SIGNAL) };
        }
    }
}

/// Serves `net_info`, `net_setup` and `net_notify`.
pub fn serve(mem: &mut GuestMemory, call: Call, gpa: u64) -> Result<(), HypercallError> {
    let err = |msg: String| HypercallError::Net {
        call: call.name(),
        msg,
    };
    let bad_args = HypercallError::BadArgs {
        call: call.name(),
        gpa,
    };
    match call {
        Call::NetInfo => {
            let attached = shared().is_some();
            let mut mac = [0u8; 8];
            if attached {
                mac[..6].copy_from_slice(&GUEST_MAC);
            }
            let info = NetInfo {
                flags: if attached { NET_ATTACHED } else { 0 },
                mtu: if attached { MTU } else { 0 },
                mac,
            };
            mem.write_obj(gpa, &info).map_err(|_| bad_args)
        }
        Call::NetSetup => {
            let a: NetSetup = mem.read_obj(gpa).map_err(|_| bad_args)?;
            let rings = check_setup(mem, &a).map_err(err)?;
            start(mem, rings).map_err(err)
        }
        Call::NetNotify => {
            mem.check(gpa, 8).map_err(|_| bad_args)?;
            let sh = shared().ok_or_else(|| err("no network device is attached".into()))?;
            if sh.rings.get().is_none() {
                return Err(err("called before net_setup".into()));
            }
            sh.stats.notify_calls.fetch_add(1, Ordering::Relaxed);
            let _ = sh.kick.write(1);
            Ok(())
        }
        _ => Err(err("not a network call".into())),
    }
}

/// Checks a `net_setup` request against the ABI's limits and guest RAM.
fn check_setup(mem: &GuestMemory, a: &NetSetup) -> Result<Rings, String> {
    if !a.slots.is_power_of_two() || a.slots > MAX_SLOTS {
        return Err(format!(
            "{} ring slots: must be a power of two up to {MAX_SLOTS}",
            a.slots
        ));
    }
    let min = MIN_BUF_SIZE.max(MTU + 14);
    if !(min..=MAX_BUF_SIZE).contains(&a.buf_size) {
        return Err(format!(
            "buffer size {}: must be {min} to {MAX_BUF_SIZE} bytes",
            a.buf_size
        ));
    }
    let len = ring_bytes(a.slots);
    for (name, ring) in [("rx", a.rx_ring), ("tx", a.tx_ring)] {
        if ring % RING_ALIGN != 0 {
            return Err(format!(
                "{name} ring at {ring:#x} is not {RING_ALIGN}-byte aligned"
            ));
        }
        mem.check(ring, len)
            .map_err(|e| format!("{name} ring: {e}"))?;
    }
    if a.rx_ring < a.tx_ring + len && a.tx_ring < a.rx_ring + len {
        return Err(format!(
            "the rx ring at {:#x} and the tx ring at {:#x} overlap",
            a.rx_ring, a.tx_ring
        ));
    }
    Ok(Rings {
        rx: a.rx_ring,
        tx: a.tx_ring,
        slots: a.slots,
        buf_size: a.buf_size,
    })
}

/// Records the rings and starts the I/O thread.
fn start(mem: &GuestMemory, rings: Rings) -> Result<(), String> {
    let mut guard = device();
    let dev = guard
        .as_mut()
        .ok_or_else(|| "no network device is attached".to_string())?;
    if dev.shared.rings.set(rings).is_err() {
        return Err("the rings are already set up".into());
    }
    let (backend, tracer) = dev
        .pending
        .take()
        .ok_or_else(|| "the rings are already set up".to_string())?;
    // SAFETY: the I/O thread is joined in `stop`, which `Vm::run` calls
    // when the guest ends and `Vm::drop` calls before the memory goes away.
    let ram = unsafe { mem.shared() };
    let sh = dev.shared.clone();
    let t = std::thread::Builder::new()
        .name("hvt-net".into())
        .spawn(move || {
            crate::seccomp::narrow(crate::seccomp::Role::NetIo);
            io::serve(&sh, backend, tracer, ram, rings)
        })
        .map_err(|e| format!("cannot start the network I/O thread: {e}"))?;
    dev.thread = Some(t);
    Ok(())
}

/// The guest's `poll`: waits up to `timeout` for the device (returns
/// [`NET_READY`]) or returns 0 at the timeout. Without a device it sleeps.
pub fn wait(mem: &GuestMemory, timeout: Duration) -> u64 {
    let Some((sh, rings)) = shared().and_then(|s| s.rings.get().copied().map(|r| (s, r))) else {
        // One sleep that a signal (a stop request) cuts short: the guest
        // simply polls again.
        let ts = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: a valid timespec; the remainder is not wanted.
        unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
        return 0;
    };
    let deadline = Instant::now() + timeout;
    loop {
        if ready(&sh, mem, &rings) {
            return NET_READY;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return 0;
        }
        let ts = libc::timespec {
            tv_sec: left.as_secs() as libc::time_t,
            tv_nsec: left.subsec_nanos() as libc::c_long,
        };
        let mut pfd = libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(&sh.wake),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd and timespec, for the duration of the call.
        let r = unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
        if r < 0 && crate::stop::requested().is_some() {
            return 0;
        }
        if r > 0 {
            let _ = sh.wake.read();
            sh.stats.poll_wakeups.fetch_add(1, Ordering::Relaxed);
            if sh.fault.lock().map_or(true, |f| f.is_some()) {
                return 0;
            }
        }
    }
}

/// A frame waits in the rx ring, or the tx ring got room.
fn ready(sh: &Shared, mem: &GuestMemory, rings: &Rings) -> bool {
    let produced = sh.rx_produced.load(Ordering::Acquire);
    let consumed = mem
        .read_obj::<u32>(rings.rx + RING_CONSUMER)
        .unwrap_or(produced);
    produced != consumed || sh.tx_room.swap(false, Ordering::AcqRel)
}

/// Ends the device: stops and joins the I/O thread (closing the backend,
/// which ends passt) and blocks the kick signal on this (the vCPU) thread.
/// Returns the counters' final values, for [`report`].
pub fn stop() -> Option<[u64; 6]> {
    let dev = device().take()?;
    let _ = dev.shared.stop.write(1);
    if let Some(t) = dev.thread {
        let _ = t.join();
    }
    // SAFETY: plain signal-mask manipulation of the calling thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, KICK_SIGNAL);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    if let Some(r) = DEVICE_RUN.get() {
        r.store(std::ptr::null_mut(), Ordering::Release);
    }
    let s = &dev.shared.stats;
    Some(
        [
            &s.tx_frames,
            &s.rx_frames,
            &s.rx_dropped,
            &s.notify_calls,
            &s.kicks,
            &s.poll_wakeups,
        ]
        .map(|c| c.load(Ordering::Relaxed)),
    )
}

/// Prints the counters when [`STATS_ENV`] is set: frames each way, the
/// notifications, and the VM exits per frame.
pub fn report(counts: [u64; 6], vm_exits: u64) {
    if std::env::var_os(STATS_ENV).is_none() {
        return;
    }
    let [tx, rx, dropped, notify, kicks, wakeups] = counts;
    let frames = (tx + rx).max(1);
    eprintln!(
        "unikernel-hvt: net stats: tx {tx} frames, rx {rx} frames ({dropped} dropped), {notify} net_notify calls ({kicks} I/O-thread kicks), {wakeups} poll wake-ups, {vm_exits} VM exits ({:.3} per frame)",
        vm_exits as f64 / frames as f64
    );
}
