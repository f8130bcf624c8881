//! Preemption check: a thread spins forever without sleeping or yielding.
//! The main thread must still wake up from its sleep, which on a single CPU
//! only happens if the spinner is preempted.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::thread;
use std::time::Duration;

static SPINS: AtomicU64 = AtomicU64::new(0);
static STARTED: AtomicBool = AtomicBool::new(false);

fn main() {
    thread::spawn(|| {
        STARTED.store(true, Relaxed);
        // Never sleeps, never yields, never makes a system call.
        loop {
            SPINS.fetch_add(1, Relaxed);
        }
    });
    thread::sleep(Duration::from_millis(50));
    println!("main woke up while a thread spins");
    // 50 ms is plenty for the spinner to have started and counted.
    println!(
        "spinner ran: {}",
        STARTED.load(Relaxed) && SPINS.load(Relaxed) > 0
    );
    // exit_group: ends the spinner too.
    std::process::exit(0);
}
