//! Threads and the scheduler for one vCPU.
//!
//! Every thread has its own kernel stack. A thread that must wait (futex,
//! sleep, I/O readiness, a signal) marks itself blocked with an optional
//! deadline and calls [`schedule`], which switches kernel stacks to the next
//! runnable thread (saving and restoring the app's FS base and extended
//! register state). When no thread can run, the thread that is switching
//! idles in the platform's block-until-deadline (the hvt poll call) until
//! the earliest deadline, then wakes the expired sleepers.
//!
//! Wait and wake, once for everything: a waiter names what it waits on
//! ([`WaitOn`]); whoever changes that thing wakes the matching waiters
//! (`futex::wake`, [`notify_io`]), and a signal wakes any waiter with
//! [`Wake::Interrupted`]. Files never block by themselves: they answer
//! `EAGAIN`, call [`notify_io`] when their readiness changes, and the
//! system-call layer waits with [`wait_io`].
//!
//! Preemption: once there are two threads, the platform's periodic tick
//! ([`TICK_VECTOR`] every [`TICK_NS`]) interrupts the app; the trap handler
//! (at ring 3, on the thread's kernel stack) calls [`on_tick`], which puts
//! the thread at the back of the run queue. A tick that hits the runtime's
//! own code is deferred to the next safe point ([`safe_point`]).

pub mod futex;

use crate::arch::x86_64::{cpu, entry, xstate::XState};
use crate::errno::*;
use crate::signal::SigState;
use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;
use spin::Mutex;

pub type Tid = i32;

/// The interrupt vector of the preemption tick.
pub const TICK_VECTOR: u8 = 32;
/// The time slice.
pub const TICK_NS: u64 = 10_000_000;
/// Kernel stack per thread.
const KSTACK_SIZE: usize = 32 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Running,
    Runnable,
    Blocked,
    Exited,
}

/// What a blocked thread waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitOn {
    /// Only its deadline (or a signal).
    Sleep,
    /// A futex word.
    Futex { addr: u64, bitset: u32 },
    /// Any change of readiness of any file.
    Io,
}

/// Why a blocked thread was woken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    Event,
    Timeout,
    Interrupted,
}

pub struct Thread {
    pub tid: Tid,
    pub state: State,
    wait: Option<WaitOn>,
    deadline: Option<u64>,
    wait_seq: u64,
    wake: Wake,
    /// Owned kernel stack (None for the main thread, which runs on the boot stack).
    _kstack: Option<Vec<u8>>,
    kstack_top: u64,
    saved_rsp: u64,
    fs_base: u64,
    xstate: Option<XState>,
    /// CLONE_CHILD_CLEARTID / set_tid_address.
    pub clear_child_tid: u64,
    pub sig: SigState,
    pub name: [u8; 16],
}

pub struct Scheduler {
    threads: BTreeMap<Tid, Box<Thread>>,
    run_queue: VecDeque<Tid>,
    current: Tid,
    next_tid: Tid,
    seq: u64,
    tick_started: bool,
}

pub static SCHED: Mutex<Option<Scheduler>> = Mutex::new(None);

/// The main thread: tid 1 (also the pid), on the boot kernel stack.
pub fn init(kernel_stack_top: u64) {
    let main = Box::new(Thread {
        tid: 1,
        state: State::Running,
        wait: None,
        deadline: None,
        wait_seq: 0,
        wake: Wake::Event,
        _kstack: None,
        kstack_top: kernel_stack_top,
        saved_rsp: 0,
        fs_base: 0,
        xstate: XState::new(),
        clear_child_tid: 0,
        sig: SigState::new(),
        name: *b"main\0\0\0\0\0\0\0\0\0\0\0\0",
    });
    let mut threads = BTreeMap::new();
    threads.insert(1, main);
    *SCHED.lock() = Some(Scheduler {
        threads,
        run_queue: VecDeque::new(),
        current: 1,
        next_tid: 2,
        seq: 0,
        tick_started: false,
    });
}

/// Run `f` on the scheduler state (never across a switch).
pub fn with<R>(f: impl FnOnce(&mut Scheduler) -> R) -> R {
    let mut g = SCHED.lock();
    f(g.as_mut().expect("scheduler used before init"))
}

impl Scheduler {
    pub fn current(&mut self) -> &mut Thread {
        let tid = self.current;
        self.threads.get_mut(&tid).expect("current thread exists")
    }

    pub fn current_tid(&self) -> Tid {
        self.current
    }

    pub fn thread(&mut self, tid: Tid) -> Option<&mut Thread> {
        self.threads
            .get_mut(&tid)
            .map(|b| &mut **b)
            .filter(|t| t.state != State::Exited)
    }

    pub fn live_tids(&self) -> Vec<Tid> {
        self.threads
            .values()
            .filter(|t| t.state != State::Exited)
            .map(|t| t.tid)
            .collect()
    }

    fn make_runnable(&mut self, tid: Tid, why: Wake) {
        if let Some(t) = self.threads.get_mut(&tid) {
            if t.state == State::Blocked {
                t.state = State::Runnable;
                t.wait = None;
                t.deadline = None;
                t.wake = why;
                self.run_queue.push_back(tid);
            }
        }
    }

    /// Wake blocked threads matching `pred`, oldest first, at most `n`.
    pub fn wake_where(&mut self, n: usize, mut pred: impl FnMut(&WaitOn) -> bool) -> usize {
        let mut hits: Vec<(u64, Tid)> = self
            .threads
            .values()
            .filter(|t| t.state == State::Blocked && t.wait.as_ref().is_some_and(&mut pred))
            .map(|t| (t.wait_seq, t.tid))
            .collect();
        hits.sort_unstable();
        let woken = hits.len().min(n);
        for &(_, tid) in &hits[..woken] {
            self.make_runnable(tid, Wake::Event);
        }
        woken
    }

    /// Change what matching waiters wait on (futex requeue), oldest first, at most `n`.
    pub fn retarget_where(
        &mut self,
        n: usize,
        mut pred: impl FnMut(&WaitOn) -> bool,
        to: WaitOn,
    ) -> usize {
        let mut hits: Vec<(u64, Tid)> = self
            .threads
            .values()
            .filter(|t| t.state == State::Blocked && t.wait.as_ref().is_some_and(&mut pred))
            .map(|t| (t.wait_seq, t.tid))
            .collect();
        hits.sort_unstable();
        let moved = hits.len().min(n);
        for &(_, tid) in &hits[..moved] {
            if let Some(t) = self.threads.get_mut(&tid) {
                t.wait = Some(to);
            }
        }
        moved
    }

    /// Interrupt `tid`'s wait (a signal arrived for it).
    pub fn interrupt(&mut self, tid: Tid) {
        self.make_runnable(tid, Wake::Interrupted);
    }

    fn wake_expired(&mut self, now: u64) {
        let due: Vec<Tid> = self
            .threads
            .values()
            .filter(|t| t.state == State::Blocked && t.deadline.is_some_and(|d| d <= now))
            .map(|t| t.tid)
            .collect();
        for tid in due {
            self.make_runnable(tid, Wake::Timeout);
        }
    }

    fn earliest_deadline(&self) -> Option<u64> {
        self.threads
            .values()
            .filter(|t| t.state == State::Blocked)
            .filter_map(|t| t.deadline)
            .min()
    }

    fn reap(&mut self) {
        let cur = self.current;
        self.threads
            .retain(|&tid, t| t.state != State::Exited || tid == cur);
    }
}

/// Block the current thread on `on` until woken or `deadline` (monotonic ns).
pub fn block(on: WaitOn, deadline: Option<u64>) -> Wake {
    with(|s| {
        s.seq += 1;
        let seq = s.seq;
        let t = s.current();
        t.state = State::Blocked;
        t.wait = Some(on);
        t.deadline = deadline;
        t.wait_seq = seq;
        // A signal already pending ends the wait at once.
        if t.sig.deliverable() != 0 {
            let tid = t.tid;
            s.interrupt(tid);
        }
    });
    schedule();
    with(|s| s.current().wake)
}

/// Wait until any file's readiness changes, or the deadline.
pub fn wait_io(deadline: Option<u64>) -> Wake {
    block(WaitOn::Io, deadline)
}

/// A file's readiness changed: every thread waiting for I/O re-checks.
pub fn notify_io() {
    with(|s| s.wake_where(usize::MAX, |w| *w == WaitOn::Io));
}

/// Sleep until `deadline` (monotonic ns); false if a signal cut it short.
pub fn sleep_until(deadline: u64) -> bool {
    if crate::platform().monotonic_ns() >= deadline {
        return true;
    }
    block(WaitOn::Sleep, Some(deadline)) != Wake::Interrupted
}

/// Give the CPU to the next runnable thread, if any.
pub fn yield_now() {
    let now = crate::platform().monotonic_ns();
    let others = with(|s| {
        // Sleepers whose deadline passed compete for the CPU too (while
        // one thread computes, only the tick gets us here to wake them).
        s.wake_expired(now);
        if s.run_queue.is_empty() {
            return false;
        }
        let t = s.current();
        t.state = State::Runnable;
        let tid = t.tid;
        s.run_queue.push_back(tid);
        true
    });
    if others {
        schedule();
    }
}

/// The preemption tick arrived while the app ran.
pub fn on_tick() {
    yield_now();
}

/// Handle what was deferred while the runtime ran: ticks become a yield.
pub fn safe_point() {
    if crate::arch::x86_64::trap::irqs_pending() {
        let irqs = take_and_acknowledge();
        if irqs[0] & (1 << TICK_VECTOR) != 0 {
            yield_now();
        }
    }
}

/// Take the deferred interrupts and acknowledge each to the platform.
fn take_and_acknowledge() -> [u64; 4] {
    let irqs = crate::arch::x86_64::trap::take_pending_irqs();
    for (w, bits) in irqs.iter().enumerate() {
        let mut b = *bits;
        while b != 0 {
            let v = b.trailing_zeros();
            b &= b - 1;
            crate::platform().end_of_interrupt((w as u32 * 64 + v) as u8);
        }
    }
    irqs
}

/// Switch away from the current thread (already marked blocked, runnable
/// and queued, or exited) to the next runnable one, idling while none is.
pub fn schedule() {
    loop {
        let picked = {
            let mut g = SCHED.lock();
            let s = g.as_mut().expect("scheduler");
            s.wake_expired(crate::platform().monotonic_ns());
            match s.run_queue.pop_front() {
                Some(next) if next == s.current => {
                    s.current().state = State::Running;
                    return;
                }
                Some(next) => {
                    let prev: *mut Thread = &mut **s.threads.get_mut(&s.current).expect("current");
                    let n: *mut Thread = &mut **s.threads.get_mut(&next).expect("queued thread");
                    s.current = next;
                    // SAFETY: `n` points into a live Box owned by the map.
                    unsafe { (*n).state = State::Running };
                    Some((prev, n))
                }
                None => {
                    let deadline = s.earliest_deadline();
                    drop(g);
                    // Components get to run (and name their deadline) before we idle.
                    let deadline = if crate::component::has_pollers() {
                        let now = crate::platform().monotonic_ns();
                        match (deadline, crate::component::run_pollers(now)) {
                            (Some(a), Some(b)) => Some(a.min(b)),
                            (a, b) => a.or(b),
                        }
                    } else {
                        deadline
                    };
                    // A poller may have woken a thread.
                    if with(|s| !s.run_queue.is_empty()) {
                        continue;
                    }
                    idle(deadline);
                    None
                }
            }
        };
        if let Some((prev, next)) = picked {
            // SAFETY: both threads are boxed in the scheduler and stay there
            // until reaped, which happens only after we have left `prev`'s
            // stack; no lock is held across the switch.
            unsafe { switch_threads(prev, next) };
            with(|s| s.reap());
            return;
        }
    }
}

/// Nothing can run: wait on the platform until the earliest deadline.
fn idle(deadline: Option<u64>) {
    let p = crate::platform();
    match deadline {
        Some(d) => p.block_until(d),
        // A device can still bring an event (a frame, a connection).
        None if !crate::device::net_devices().is_empty() => p.block_until(u64::MAX),
        None => {
            crate::kprintln!(
                "unikernel: deadlock: every thread is blocked and nothing can wake them"
            );
            crate::exit(crate::fault::EXIT_KERNEL_PANIC);
        }
    }
    // Ticks that arrived while idle mean nothing: there was no one to preempt.
    let _ = take_and_acknowledge();
}

/// # Safety
/// `prev` and `next` are distinct live threads; `next` was saved by a
/// switch or prepared as a new thread.
unsafe fn switch_threads(prev: *mut Thread, next: *mut Thread) {
    // SAFETY: per the function contract.
    unsafe {
        if let Some(x) = (*prev).xstate.as_mut() {
            x.save();
        }
        (*prev).fs_base = cpu::fs_base();
        entry::set_kernel_stack((*next).kstack_top);
        cpu::set_fs_base((*next).fs_base);
        if let Some(x) = (*next).xstate.as_ref() {
            x.restore();
        }
        entry::switch(&mut (*prev).saved_rsp, (*next).saved_rsp);
    }
}

/// Called once on a new thread's own stack before it first returns to the app.
#[no_mangle]
extern "C" fn unikernel_thread_started() {
    with(|s| s.reap());
}

pub const CLONE_VM: u64 = 0x100;
pub const CLONE_FS: u64 = 0x200;
pub const CLONE_FILES: u64 = 0x400;
pub const CLONE_SIGHAND: u64 = 0x800;
pub const CLONE_VFORK: u64 = 0x4000;
pub const CLONE_THREAD: u64 = 0x10000;
pub const CLONE_SETTLS: u64 = 0x80000;
pub const CLONE_PARENT_SETTID: u64 = 0x100000;
pub const CLONE_CHILD_CLEARTID: u64 = 0x200000;
pub const CLONE_CHILD_SETTID: u64 = 0x1000000;

/// `clone` for a new thread of this process (the only kind there is).
pub fn clone_thread(
    parent: &crate::syscall::SyscallFrame,
    flags: u64,
    stack: u64,
    ptid: u64,
    ctid: u64,
    tls: u64,
) -> Result<Tid, Errno> {
    let need = CLONE_VM | CLONE_THREAD | CLONE_SIGHAND;
    if flags & need != need {
        // A new process (fork, vfork, posix_spawn) cannot exist in a unikernel.
        return Err(ENOSYS);
    }
    if flags & CLONE_VFORK != 0 {
        return Err(EINVAL);
    }
    let kstack = alloc::vec![0u8; KSTACK_SIZE];
    let top = (kstack.as_ptr() as u64 + KSTACK_SIZE as u64) & !0xf;
    let mut frame = crate::syscall::SyscallFrame { ..*parent };
    if stack != 0 {
        frame.user_rsp = stack;
    }
    // SAFETY: `top` is the aligned top of the new, owned 32 KiB stack.
    let saved_rsp = unsafe { entry::prepare_new_thread(top, &frame) };
    let mut xs = XState::new().ok_or(ENOMEM)?;
    xs.save(); // the child starts with the parent's extended state
    let fs_base = if flags & CLONE_SETTLS != 0 {
        tls
    } else {
        cpu::fs_base()
    };
    let (tid, start_tick) = with(|s| {
        let tid = s.next_tid;
        s.next_tid += 1;
        let mask = s.current().sig.mask;
        let name = s.current().name;
        s.threads.insert(
            tid,
            Box::new(Thread {
                tid,
                state: State::Runnable,
                wait: None,
                deadline: None,
                wait_seq: 0,
                wake: Wake::Event,
                _kstack: Some(kstack),
                kstack_top: top,
                saved_rsp,
                fs_base,
                xstate: Some(xs),
                clear_child_tid: if flags & CLONE_CHILD_CLEARTID != 0 {
                    ctid
                } else {
                    0
                },
                sig: SigState::inherit(mask),
                name,
            }),
        );
        s.run_queue.push_back(tid);
        let start = !s.tick_started;
        s.tick_started = true;
        (tid, start)
    });
    if flags & CLONE_PARENT_SETTID != 0 {
        let _ = crate::mm::user::write(ptid, tid);
    }
    if flags & CLONE_CHILD_SETTID != 0 {
        let _ = crate::mm::user::write(ctid, tid);
    }
    if start_tick {
        crate::platform().start_tick(TICK_NS, TICK_VECTOR);
    }
    Ok(tid)
}

/// `exit` of one thread: clear and wake its child-tid word (pthread_join
/// waits on it), and never run again. The last thread's exit ends the process.
pub fn exit_thread(code: u32) -> ! {
    let (ctid, last) = with(|s| {
        let live = s
            .threads
            .values()
            .filter(|t| t.state != State::Exited)
            .count();
        (s.current().clear_child_tid, live <= 1)
    });
    if last {
        crate::exit(code);
    }
    if ctid != 0 && crate::mm::user::write(ctid, 0u32).is_ok() {
        futex::wake(ctid, u32::MAX, 1);
    }
    with(|s| s.current().state = State::Exited);
    schedule();
    unreachable!("an exited thread was scheduled")
}

/// The current thread's id.
pub fn current_tid() -> Tid {
    with(|s| s.current)
}
