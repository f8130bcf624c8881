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
//! Timers and preemption: the scheduler keeps the platform's one-shot
//! timer ([`crate::Platform::set_timer`], vector [`TICK_VECTOR`]) armed
//! for the earliest of the running thread's time-slice end ([`TICK_NS`]
//! after it was picked, only while another thread is runnable), the
//! earliest deadline of a blocked thread, and the pollers' deadline
//! ([`crate::component`]). The interrupt reaches [`on_tick`] (from the
//! trap handler, at ring 3 on the thread's kernel stack) or, when it hit
//! the runtime's own code, the next safe point ([`safe_point`]). There the
//! pollers run, expired sleepers wake, and the woken threads run at once,
//! ahead of the interrupted thread, which keeps the rest of its slice; a
//! thread whose slice is over goes to the back of the run queue.

pub mod futex;

use crate::arch::x86_64::{cpu, entry, xstate::XState};
use crate::errno::*;
use crate::signal::SigState;
use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};
use spin::Mutex;

pub type Tid = i32;

/// The interrupt vector of the platform's one-shot timer.
pub const TICK_VECTOR: u8 = 32;
/// The time slice.
pub const TICK_NS: u64 = 10_000_000;

/// Set when the timer may need re-arming outside [`schedule`] (a thread
/// became runnable beside the running one: its slice end now counts).
static TIMER_STALE: AtomicBool = AtomicBool::new(false);
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
    /// What is left of its time slice when it is next picked.
    slice_left: u64,
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
    /// When the running thread's time slice ends (monotonic ns).
    slice_end: u64,
    /// The deadline the platform's timer is armed for (None: disarmed or fired).
    armed: Option<u64>,
    /// The earliest deadline the pollers asked for.
    poll_deadline: Option<u64>,
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
        slice_left: TICK_NS,
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
        slice_end: TICK_NS,
        armed: None,
        poll_deadline: None,
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
        if self.unblock(tid, why) {
            self.enqueue(tid);
        }
    }

    /// Mark a blocked thread runnable (not queued yet); false if it was not blocked.
    fn unblock(&mut self, tid: Tid, why: Wake) -> bool {
        match self.threads.get_mut(&tid) {
            Some(t) if t.state == State::Blocked => {
                t.state = State::Runnable;
                t.wait = None;
                t.deadline = None;
                t.wake = why;
                t.slice_left = TICK_NS;
                true
            }
            _ => false,
        }
    }

    /// Put a runnable thread at the back of the run queue.
    fn enqueue(&mut self, tid: Tid) {
        self.competition_for(tid);
        self.run_queue.push_back(tid);
    }

    /// `tid` is about to be queued: if it is the first beside the running
    /// thread, that one's slice starts counting now (if it had not yet)
    /// and the timer must cover its end.
    fn competition_for(&mut self, tid: Tid) {
        if self.run_queue.is_empty() && tid != self.current {
            let now = crate::platform().monotonic_ns();
            if self.slice_end < now {
                self.slice_end = now + TICK_NS;
            }
            TIMER_STALE.store(true, Ordering::Relaxed);
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

    /// Wake the threads whose deadline passed and put them at the front of
    /// the run queue, earliest deadline first: a thread woken by its timer
    /// runs before the threads that were already waiting for the CPU.
    /// Returns how many.
    fn wake_expired(&mut self, now: u64) -> usize {
        let mut due: Vec<(u64, u64, Tid)> = self
            .threads
            .values()
            .filter(|t| t.state == State::Blocked)
            .filter_map(|t| {
                t.deadline
                    .filter(|d| *d <= now)
                    .map(|d| (d, t.wait_seq, t.tid))
            })
            .collect();
        due.sort_unstable();
        let mut woken = 0;
        for (_, _, tid) in due {
            if self.unblock(tid, Wake::Timeout) {
                self.competition_for(tid);
                self.run_queue.insert(woken, tid);
                woken += 1;
            }
        }
        woken
    }

    fn earliest_deadline(&self) -> Option<u64> {
        self.threads
            .values()
            .filter(|t| t.state == State::Blocked)
            .filter_map(|t| t.deadline)
            .min()
    }

    /// The deadline the timer must cover now: the slice end (only while
    /// another thread waits for the CPU), sleepers, pollers.
    fn timer_deadline(&self) -> Option<u64> {
        let slice = (!self.run_queue.is_empty()).then_some(self.slice_end);
        [slice, self.earliest_deadline(), self.poll_deadline]
            .into_iter()
            .flatten()
            .min()
    }

    /// Arm (or disarm) the platform's timer if what it must cover changed.
    fn sync_timer(&mut self) {
        TIMER_STALE.store(false, Ordering::Relaxed);
        let want = self.timer_deadline();
        if want != self.armed {
            self.armed = want;
            crate::platform().set_timer(want);
        }
    }

    /// After a timer interrupt or a poll at `now`, with the `woken` threads
    /// at the front of the run queue: they run first; the interrupted
    /// thread follows them with the rest of its slice, or goes to the back
    /// when its slice is over. True if the current thread must give up the
    /// CPU.
    fn preempt_for_wakeups(&mut self, woken: usize, now: u64) -> bool {
        let slice_over = now >= self.slice_end;
        if self.run_queue.is_empty() || (woken == 0 && !slice_over) {
            self.sync_timer();
            return false;
        }
        let cur = self.current;
        let slice_end = self.slice_end;
        let t = self.current();
        t.state = State::Runnable;
        if slice_over {
            t.slice_left = TICK_NS;
            self.run_queue.push_back(cur);
        } else {
            t.slice_left = slice_end - now;
            let at = woken.min(self.run_queue.len());
            self.run_queue.insert(at, cur);
        }
        true
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
        // Sleepers whose deadline passed compete for the CPU too.
        s.wake_expired(now);
        if s.run_queue.is_empty() {
            return false;
        }
        let t = s.current();
        t.state = State::Runnable;
        t.slice_left = TICK_NS;
        let tid = t.tid;
        s.run_queue.push_back(tid);
        true
    });
    if others {
        schedule();
    }
}

/// The timer interrupt arrived while the app ran.
pub fn on_tick() {
    on_timer();
}

/// The timer fired (or a poll was requested): run the pollers, wake the
/// expired sleepers, and let the woken threads run now.
fn on_timer() {
    let now = crate::platform().monotonic_ns();
    let queued = with(|s| {
        // The platform's timer fired: nothing is armed any more.
        s.armed = None;
        s.run_queue.len()
    });
    run_pollers(now);
    let switch = with(|s| {
        // Threads the pollers woke (at the back) go to the front, behind
        // the expired sleepers.
        let from = queued.min(s.run_queue.len());
        let polled: Vec<Tid> = s.run_queue.drain(from..).collect();
        let timed_out = s.wake_expired(now);
        let woken = timed_out + polled.len();
        for (k, tid) in polled.into_iter().enumerate() {
            s.run_queue.insert(timed_out + k, tid);
        }
        s.preempt_for_wakeups(woken, now)
    });
    if switch {
        schedule();
    }
}

/// Run the registered pollers (none: nothing at all) and keep their deadline.
fn run_pollers(now: u64) {
    if crate::component::has_pollers() {
        let d = crate::component::run_pollers(now);
        with(|s| s.poll_deadline = d);
    }
}

/// Handle what was deferred while the runtime ran: a timer interrupt, a
/// requested poll, a timer to re-arm. Called at the end of every system
/// call and trap and by `rt_sigreturn`.
pub fn safe_point() {
    let mut timer = crate::component::take_poll_request();
    if crate::arch::x86_64::trap::irqs_pending() {
        let irqs = take_and_acknowledge();
        timer |= irqs[0] & (1 << TICK_VECTOR) != 0;
    }
    if timer {
        on_timer();
    } else if TIMER_STALE.load(Ordering::Relaxed) {
        with(|s| s.sync_timer());
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

/// What [`schedule`] found in the run queue.
enum Pick {
    /// The current thread goes on (it was the next in line).
    Same,
    /// Switch to another thread.
    Switch(*mut Thread, *mut Thread),
    /// Nobody can run; the earliest deadline of a blocked thread.
    Empty(Option<u64>),
}

/// Switch away from the current thread (already marked blocked, runnable
/// and queued, or exited) to the next runnable one, idling while none is.
pub fn schedule() {
    loop {
        let now = crate::platform().monotonic_ns();
        let picked = with(|s| {
            s.wake_expired(now);
            let pick = match s.run_queue.pop_front() {
                Some(next) if next == s.current => {
                    s.current().state = State::Running;
                    Pick::Same
                }
                Some(next) => {
                    let prev: *mut Thread = &mut **s.threads.get_mut(&s.current).expect("current");
                    let n: *mut Thread = &mut **s.threads.get_mut(&next).expect("queued thread");
                    s.current = next;
                    // SAFETY: `n` points into a live Box owned by the map.
                    unsafe { (*n).state = State::Running };
                    Pick::Switch(prev, n)
                }
                None => return Pick::Empty(s.earliest_deadline()),
            };
            // The picked thread's slice starts now.
            let t = s.current();
            let left = core::mem::replace(&mut t.slice_left, TICK_NS);
            s.slice_end = now + left;
            s.sync_timer();
            pick
        });
        match picked {
            Pick::Same => return,
            Pick::Switch(prev, next) => {
                // SAFETY: both threads are boxed in the scheduler and stay
                // there until reaped, which happens only after we have left
                // `prev`'s stack; no lock is held across the switch.
                unsafe { switch_threads(prev, next) };
                with(|s| s.reap());
                return;
            }
            Pick::Empty(deadline) => {
                // Before idling the pollers run: they may wake a thread
                // (then pick again) or want to run again at some deadline.
                let deadline = if crate::component::has_pollers() {
                    run_pollers(now);
                    let (runnable, poll) = with(|s| (!s.run_queue.is_empty(), s.poll_deadline));
                    if runnable {
                        continue;
                    }
                    // Devices can still wake us: never a deadlock.
                    Some(min_deadline(deadline, poll).unwrap_or(u64::MAX))
                } else {
                    deadline
                };
                idle(deadline);
            }
        }
    }
}

fn min_deadline(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// Nothing can run: wait on the platform until the earliest deadline (or
/// a device event).
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
            crate::exit_without_sync(crate::fault::EXIT_KERNEL_PANIC);
        }
    }
    // Timer interrupts that arrived while idle mean nothing (there was no
    // one to preempt; the loop wakes the sleepers), and the platform's
    // wait may have used the timer: it is re-armed when a thread is picked.
    let _ = take_and_acknowledge();
    with(|s| s.armed = None);
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
    let tid = with(|s| {
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
                slice_left: TICK_NS,
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
        s.enqueue(tid);
        tid
    });
    if flags & CLONE_PARENT_SETTID != 0 {
        let _ = crate::mm::user::write(ptid, tid);
    }
    if flags & CLONE_CHILD_SETTID != 0 {
        let _ = crate::mm::user::write(ctid, tid);
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
