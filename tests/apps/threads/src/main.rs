//! std threads and their synchronization primitives, with deterministic
//! output: every line below is the same on every run, whatever the
//! scheduling (results are collected and checked, never printed from the
//! worker threads in racy order).

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Arc, Barrier, Condvar, Mutex, RwLock};
use std::thread;
use std::time::Duration;

/// How many threads most parts use.
const N: usize = 8;

/// Checks that failed (each also printed on stderr).
static FAILURES: AtomicUsize = AtomicUsize::new(0);

fn check(ok: bool, what: &str) {
    if !ok {
        eprintln!("CHECK FAILED: {what}");
        FAILURES.fetch_add(1, SeqCst);
    }
}

/// Incremented by the destructor of a thread-local value.
static TLS_DROPS: AtomicUsize = AtomicUsize::new(0);

struct Tracked(usize);

impl Drop for Tracked {
    fn drop(&mut self) {
        assert!(self.0 < N);
        TLS_DROPS.fetch_add(1, SeqCst);
    }
}

thread_local! {
    static TRACKED: RefCell<Option<Tracked>> = const { RefCell::new(None) };
    static COUNTER: Cell<u64> = const { Cell::new(0) };
}

/// Spawn `N` threads running `f(i)` and return their results in index order.
fn run_n<T: Send + 'static>(f: impl Fn(usize) -> T + Send + Sync + 'static) -> Vec<T> {
    let f = Arc::new(f);
    let handles: Vec<_> = (0..N)
        .map(|i| {
            let f = f.clone();
            thread::spawn(move || f(i))
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

fn mutex() {
    let counter = Arc::new(Mutex::new(0u64));
    let c = counter.clone();
    run_n(move |_| {
        for _ in 0..10_000 {
            *c.lock().unwrap() += 1;
        }
    });
    let n = *counter.lock().unwrap();
    println!("mutex: {n}");
    check(n == 10_000 * N as u64, "mutex count");
}

/// Threads take turns in index order: each waits on the condvar until the
/// shared turn counter reaches its index.
fn condvar() {
    let state = Arc::new((Mutex::new((0usize, Vec::new())), Condvar::new()));
    let s = state.clone();
    run_n(move |i| {
        let (lock, cv) = &*s;
        let mut g = cv
            .wait_while(lock.lock().unwrap(), |(turn, _)| *turn != i)
            .unwrap();
        g.1.push(i);
        g.0 += 1;
        cv.notify_all();
    });
    let order = &state.0.lock().unwrap().1;
    println!("condvar turns: {order:?}");
    check(*order == (0..N).collect::<Vec<_>>(), "condvar order");

    // wait_timeout on a condvar nobody signals times out.
    let (lock, cv) = (Mutex::new(()), Condvar::new());
    let (_g, r) = cv
        .wait_timeout(lock.lock().unwrap(), Duration::from_millis(10))
        .unwrap();
    println!("condvar wait_timeout timed out: {}", r.timed_out());
    check(r.timed_out(), "condvar wait_timeout");
}

fn rwlock() {
    let shared = Arc::new(RwLock::new(Vec::new()));
    let s = shared.clone();
    let seen = run_n(move |i| {
        s.write().unwrap().push(i);
        // Our own write is visible to our reads, and so are at least 1 entries.
        let r = s.read().unwrap();
        r.contains(&i) && !r.is_empty()
    });
    let mut v = shared.read().unwrap().clone();
    v.sort();
    // Several readers at once.
    let r1 = shared.read().unwrap();
    let r2 = shared.read().unwrap();
    let both = r1.len() == r2.len();
    drop((r1, r2));
    let seen = seen.iter().all(|&b| b);
    println!(
        "rwlock: {} entries, sum {}, own writes seen: {seen}, two readers: {both}",
        v.len(),
        v.iter().sum::<usize>(),
    );
    check(v == (0..N).collect::<Vec<_>>() && seen && both, "rwlock");
}

/// Phase 1 fills one slot per thread; after the barrier every thread must
/// see all the slots.
fn barrier() {
    let barrier = Arc::new(Barrier::new(N));
    let slots: Arc<Vec<AtomicUsize>> = Arc::new((0..N).map(|_| AtomicUsize::new(0)).collect());
    let (b, s) = (barrier.clone(), slots.clone());
    let results = run_n(move |i| {
        s[i].store(i + 1, SeqCst);
        let leader = b.wait().is_leader();
        let sum: usize = s.iter().map(|x| x.load(SeqCst)).sum();
        (sum, leader)
    });
    let all_full = results.iter().all(|&(sum, _)| sum == N * (N + 1) / 2);
    let leaders = results.iter().filter(|&&(_, l)| l).count();
    println!("barrier: every thread saw all slots: {all_full}, leaders {leaders}");
    check(all_full && leaders == 1, "barrier");
}

/// Several producers on one channel; per-producer order is kept.
fn channels() {
    const PRODUCERS: usize = 4;
    const EACH: usize = 250;
    let (tx, rx) = mpsc::channel::<(usize, usize)>();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let tx = tx.clone();
            thread::spawn(move || {
                for seq in 0..EACH {
                    tx.send((p, seq)).unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    let mut next = [0usize; PRODUCERS];
    let mut in_order = true;
    let mut count = 0;
    let mut sum = 0;
    // Ends when every sender is gone.
    for (p, seq) in rx {
        in_order &= next[p] == seq;
        next[p] = seq + 1;
        count += 1;
        sum += seq;
    }
    for p in producers {
        p.join().unwrap();
    }
    println!("mpsc: {count} messages from {PRODUCERS} producers, sum {sum}, in order per producer: {in_order}");
    check(
        count == PRODUCERS * EACH && sum == PRODUCERS * EACH * (EACH - 1) / 2 && in_order,
        "mpsc",
    );

    // A rendezvous channel: every send waits for its receive.
    let (tx, rx) = mpsc::sync_channel::<u32>(0);
    let h = thread::spawn(move || (1..=10).all(|i| tx.send(i * i).is_ok()));
    let got: Vec<u32> = rx.iter().collect();
    let sent_ok = h.join().unwrap();
    println!("sync_channel(0): {got:?}, sends ok: {sent_ok}");
    check(
        got == (1..=10).map(|i| i * i).collect::<Vec<_>>() && sent_ok,
        "sync_channel",
    );

    // recv_timeout on an idle channel.
    let (_tx, rx) = mpsc::channel::<()>();
    let r = rx.recv_timeout(Duration::from_millis(10));
    println!("recv_timeout: {r:?}");
    check(r == Err(mpsc::RecvTimeoutError::Timeout), "recv_timeout");
}

/// Scoped threads borrow and mutate the caller's data.
fn scope() {
    let mut data: Vec<u64> = (1..=800).collect();
    let total = AtomicUsize::new(0);
    thread::scope(|s| {
        for chunk in data.chunks_mut(800 / N) {
            let total = &total;
            s.spawn(move || {
                for x in chunk.iter_mut() {
                    *x *= 2;
                }
                total.fetch_add(chunk.iter().sum::<u64>() as usize, SeqCst);
            });
        }
    });
    let sum: u64 = data.iter().sum();
    let from_scope = thread::scope(|s| s.spawn(|| data.len()).join().unwrap());
    let total = total.load(SeqCst) as u64;
    println!(
        "scope: total {total}, data now sums to {sum}, len seen from a scoped thread {from_scope}"
    );
    check(
        total == 800 * 801 && sum == total && from_scope == 800,
        "scope",
    );
}

/// Thread-locals are per thread, and their destructors have run by the
/// time `join` returns.
fn thread_locals() {
    COUNTER.with(|c| c.set(1000));
    let counts = run_n(|i| {
        TRACKED.with(|t| *t.borrow_mut() = Some(Tracked(i)));
        for _ in 0..=i {
            COUNTER.with(|c| c.set(c.get() + 1));
        }
        COUNTER.with(|c| c.get())
    });
    let main_counter = COUNTER.with(|c| c.get());
    let drops = TLS_DROPS.load(SeqCst);
    println!(
        "thread_local: counters {counts:?}, main's still {main_counter}, destructors ran {drops}"
    );
    check(
        counts == (1..=N as u64).collect::<Vec<_>>() && main_counter == 1000 && drops == N,
        "thread_local",
    );
}

fn join_results() {
    let squares = run_n(|i| i * i);
    let sum = squares.iter().sum::<usize>();
    println!("join results: {squares:?}, sum {sum}");
    check(sum == 140, "join results");
}

fn names() {
    let main_name = thread::current().name().map(str::to_owned);
    println!("main thread name: {main_name:?}");
    check(main_name.as_deref() == Some("main"), "main thread name");
    let names = (0..N)
        .map(|i| {
            thread::Builder::new()
                .name(format!("worker-{i}"))
                .spawn(|| thread::current().name().map(str::to_owned))
                .unwrap()
        })
        .map(|h| h.join().unwrap().unwrap_or_default())
        .collect::<Vec<_>>();
    println!("named threads: {}", names.join(" "));
    check(
        names
            .iter()
            .enumerate()
            .all(|(i, n)| *n == format!("worker-{i}")),
        "names",
    );
    let unnamed = thread::spawn(|| thread::current().name().map(str::to_owned))
        .join()
        .unwrap();
    println!("unnamed thread name: {unnamed:?}");
    check(unnamed.is_none(), "unnamed thread");
    // Names are visible to the thread's own handle too.
    let h = thread::Builder::new()
        .name("handle-name".into())
        .stack_size(256 * 1024)
        .spawn(|| ())
        .unwrap();
    println!("handle name: {:?}", h.thread().name());
    check(h.thread().name() == Some("handle-name"), "handle name");
    h.join().unwrap();
}

fn park_unpark() {
    let flag = Arc::new(AtomicUsize::new(0));
    let f = flag.clone();
    let h = thread::spawn(move || {
        // Spurious wakeups are allowed: park until the flag is set.
        while f.load(SeqCst) == 0 {
            thread::park();
        }
        f.load(SeqCst)
    });
    thread::sleep(Duration::from_millis(10));
    flag.store(7, SeqCst);
    h.thread().unpark();
    let woke = h.join().unwrap();
    println!("park/unpark: woke with {woke}");
    check(woke == 7, "park/unpark");
}

fn panic_in_thread() {
    let r = thread::Builder::new()
        .name("panicker".into())
        .spawn(|| -> u32 { panic!("boom from panicker: {}", 7) })
        .unwrap()
        .join();
    match r {
        Ok(v) => check(false, &format!("panic not propagated, join gave {v}")),
        Err(e) => {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "<not a string>".into());
            println!("panic propagated through join: {msg}");
            check(msg == "boom from panicker: 7", "panic message");
        }
    }
    // The process is fine afterwards: more threads still work.
    let after = thread::spawn(|| 5).join().unwrap();
    println!("after the panic a new thread returned {after}");
    check(after == 5, "thread after panic");
}

fn main() {
    names();
    mutex();
    condvar();
    rwlock();
    barrier();
    channels();
    scope();
    thread_locals();
    join_results();
    park_unpark();
    panic_in_thread();
    let p = thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    println!("parallelism: {p}");
    check(p >= 1, "available_parallelism");
    let failures = FAILURES.load(SeqCst);
    if failures != 0 {
        println!("threads: {failures} check(s) failed");
        std::process::exit(1);
    }
    println!("threads: all ok");
}
