//! Thread micro-benchmarks, machine-readable output ("key value" lines):
//!   spawn_join_ns_*       std::thread::spawn + join of an empty thread,
//!                         per iteration (median, min, p90)
//!   futex_pingpong_ns_*   one round trip between two threads that hand a
//!                         word back and forth with raw FUTEX_WAIT/FUTEX_WAKE
//!                         (private) on an AtomicU32: median over batches of
//!                         the batch's mean, and the fastest batch
//!
//! Usage: thread-bench [SPAWN_ITERS [ROUND_TRIPS_PER_BATCH [BATCHES]]]
//!        (defaults 200, 10000, 7)

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::thread;
use std::time::Instant;

fn arg(n: usize, default: usize) -> usize {
    std::env::args()
        .nth(n)
        .map(|s| s.parse().expect("arguments are numbers"))
        .unwrap_or(default)
}

fn sorted(mut v: Vec<u64>) -> Vec<u64> {
    v.sort_unstable();
    v
}

fn spawn_join(iters: usize) {
    // Warm up the allocator, the stack cache and the code paths.
    for _ in 0..20 {
        thread::spawn(|| ()).join().unwrap();
    }
    let v = sorted(
        (0..iters)
            .map(|_| {
                let t = Instant::now();
                thread::spawn(|| ()).join().unwrap();
                t.elapsed().as_nanos() as u64
            })
            .collect(),
    );
    println!("spawn_join_iters {iters}");
    println!("spawn_join_ns_median {}", v[v.len() / 2]);
    println!("spawn_join_ns_min {}", v[0]);
    println!("spawn_join_ns_p90 {}", v[v.len() * 9 / 10]);
}

/// The word the two threads hand back and forth: PING (main's turn is
/// over, the partner's to answer), PONG (the partner answered), STOP.
static WORD: AtomicU32 = AtomicU32::new(PONG);
const PONG: u32 = 0;
const PING: u32 = 1;
const STOP: u32 = 2;

fn futex_wait(word: &AtomicU32, expected: u32) {
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            std::ptr::null::<libc::timespec>(),
        );
    }
}

fn futex_wake(word: &AtomicU32) {
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            1,
        );
    }
}

/// Set the word and wake the other side.
fn hand_over(to: u32) {
    WORD.store(to, SeqCst);
    futex_wake(&WORD);
}

fn futex_pingpong(round_trips: usize, batches: usize) {
    let partner = thread::spawn(|| loop {
        let mut w = WORD.load(SeqCst);
        while w == PONG {
            futex_wait(&WORD, PONG);
            w = WORD.load(SeqCst);
        }
        if w == STOP {
            return;
        }
        hand_over(PONG);
    });
    let one_batch = || {
        let t = Instant::now();
        for _ in 0..round_trips {
            hand_over(PING);
            while WORD.load(SeqCst) == PING {
                futex_wait(&WORD, PING);
            }
        }
        t.elapsed().as_nanos() as u64 / round_trips as u64
    };
    one_batch(); // warm-up
    let v = sorted((0..batches).map(|_| one_batch()).collect());
    hand_over(STOP);
    partner.join().unwrap();
    println!("futex_pingpong_round_trips {round_trips}");
    println!("futex_pingpong_batches {batches}");
    println!("futex_pingpong_ns_median {}", v[v.len() / 2]);
    println!("futex_pingpong_ns_min {}", v[0]);
}

fn main() {
    let cpus = thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    println!("cpus {cpus}");
    spawn_join(arg(1, 200).max(1));
    futex_pingpong(arg(2, 10_000).max(1), arg(3, 7).max(1));
}
