//! Timer precision beside a computing thread: one thread spins without
//! ever making a system call while another sleeps a random 1-9 ms, N
//! times, and measures how much longer than asked each sleep took.
//!
//! Usage:
//!   timer-bench [N [SEED]]   (defaults 300, 1): "key value" lines,
//!                            oversleep_ns_{median,p90,max,min}; also
//!                            idle_oversleep_ns_* for the same sleeps
//!                            without the spinner (before it starts)
//!   timer-bench check        the boot test: sleepers beside a spinner
//!                            never wake early, wake in deadline order
//!                            (threads started in the opposite order, due
//!                            5 ms apart, 250-265 ms after the start), and
//!                            the median oversleep is under 4 ms

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::thread;
use std::time::{Duration, Instant};

static SPINS: AtomicU64 = AtomicU64::new(0);
static SPINNING: AtomicBool = AtomicBool::new(false);

/// A small deterministic generator (xorshift64*), so every run asks for
/// the same sleeps.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A sleep of 1-9 ms, in whole microseconds.
    fn sleep(&mut self) -> Duration {
        Duration::from_micros(1000 + self.next() % 8001)
    }
}

/// Start the thread that computes forever (never sleeps, yields or makes a
/// system call); returns once it runs.
fn start_spinner() {
    thread::spawn(|| {
        SPINNING.store(true, SeqCst);
        loop {
            SPINS.fetch_add(1, SeqCst);
        }
    });
    while !SPINNING.load(SeqCst) {
        thread::yield_now();
    }
}

/// Sleep `n` random durations; the oversleep of each in ns, sorted.
fn oversleeps(n: usize, rng: &mut Rng) -> Vec<u64> {
    let mut v: Vec<u64> = (0..n)
        .map(|_| {
            let want = rng.sleep();
            let t = Instant::now();
            thread::sleep(want);
            t.elapsed().saturating_sub(want).as_nanos() as u64
        })
        .collect();
    v.sort_unstable();
    v
}

fn report(prefix: &str, v: &[u64]) {
    println!("{prefix}_ns_median {}", v[v.len() / 2]);
    println!("{prefix}_ns_p90 {}", v[v.len() * 9 / 10]);
    println!("{prefix}_ns_max {}", v[v.len() - 1]);
    println!("{prefix}_ns_min {}", v[0]);
}

fn bench(n: usize, seed: u64) {
    let mut rng = Rng(seed.max(1));
    println!("sleeps {n}");
    report("idle_oversleep", &oversleeps(n.min(50), &mut rng));
    start_spinner();
    report("oversleep", &oversleeps(n, &mut rng));
    println!("spinner_ran {}", SPINS.load(SeqCst) > 0);
}

fn check() {
    // Sleepers started latest deadline first, due 5 ms apart at fixed
    // times (long enough after the start for all of them to be asleep and
    // the spinner to spin), so they wake while it spins. Each notes when it
    // woke in its own slot (no lock: a lock holder preempted by the next
    // wake-up would delay the others).
    const SLEEPERS: usize = 4;
    let woke: [AtomicU64; SLEEPERS] = Default::default();
    let early = AtomicUsize::new(0);
    let start = Instant::now();
    thread::scope(|s| {
        for i in (0..SLEEPERS).rev() {
            let (woke, early) = (&woke, &early);
            s.spawn(move || {
                let due = Duration::from_millis(250 + 5 * i as u64);
                thread::sleep(due.saturating_sub(start.elapsed()));
                let at = start.elapsed();
                if at < due {
                    early.fetch_add(1, SeqCst);
                }
                woke[i].store(at.as_nanos() as u64, SeqCst);
            });
        }
        start_spinner();
    });
    let mut order: Vec<usize> = (0..SLEEPERS).collect();
    order.sort_by_key(|&i| woke[i].load(SeqCst));
    println!("sleepers never woke early: {}", early.load(SeqCst) == 0);
    println!(
        "sleepers woke in deadline order: {}",
        order == (0..SLEEPERS).collect::<Vec<_>>()
    );
    let mut rng = Rng(7);
    let v = oversleeps(40, &mut rng);
    println!(
        "median oversleep beside a spinning thread under 4 ms: {}",
        v[v.len() / 2] < 4_000_000
    );
    println!("spinner ran: {}", SPINS.load(SeqCst) > 0);
}

fn main() {
    let first = std::env::args().nth(1);
    if first.as_deref() == Some("check") {
        check();
    } else {
        let n = first.map_or(300, |s| s.parse().expect("N is a number"));
        let seed = std::env::args()
            .nth(2)
            .map_or(1, |s| s.parse().expect("SEED is a number"));
        bench(n.max(1), seed);
    }
    // exit_group: ends the spinner too.
    std::process::exit(0);
}
