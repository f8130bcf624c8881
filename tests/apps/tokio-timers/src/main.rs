//! tokio's timers, blocking pool and channels, on a current-thread runtime
//! and on a multi-thread runtime with 2 workers. One task does all the
//! printing and awaits everything in sequence, so the output is the same on
//! every run. Durations are only checked from below (a timer never fires
//! early); a timer that never fires hangs and is caught by the test deadline.

use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{interval, sleep, timeout};

const MS: Duration = Duration::from_millis(1);

async fn scenario(rt: &str) {
    println!("[{rt}] start");

    let t = Instant::now();
    sleep(20 * MS).await;
    println!(
        "[{rt}] sleep 20 ms: waited at least 20 ms: {}",
        t.elapsed() >= 20 * MS
    );

    // The first tick is immediate, the next two 10 ms apart.
    let t = Instant::now();
    let mut iv = interval(10 * MS);
    for i in 1..=3 {
        iv.tick().await;
        println!("[{rt}] interval tick {i}");
    }
    println!(
        "[{rt}] 3 ticks took at least 20 ms: {}",
        t.elapsed() >= 20 * MS
    );

    let t = Instant::now();
    let expired = timeout(10 * MS, sleep(Duration::from_secs(30))).await;
    println!(
        "[{rt}] timeout 10 ms on a 30 s sleep: expired: {}, after at least 10 ms: {}",
        expired.is_err(),
        t.elapsed() >= 10 * MS
    );
    let completed = timeout(Duration::from_secs(30), async {
        sleep(5 * MS).await;
        6 * 7
    })
    .await;
    println!("[{rt}] timeout 30 s on a 5 ms task: {completed:?}");

    let sum = tokio::task::spawn_blocking(|| {
        // A blocking sleep belongs on the blocking pool.
        std::thread::sleep(5 * MS);
        (1..=100u64).sum::<u64>()
    })
    .await
    .unwrap();
    println!("[{rt}] spawn_blocking returned {sum}");

    // Three producer tasks; the receiver sees each producer's values in order.
    let (tx, mut rx) = mpsc::channel::<(usize, u64)>(4);
    for p in 0..3 {
        let tx = tx.clone();
        tokio::spawn(async move {
            for v in 0..5 {
                if v == 2 {
                    sleep(MS).await;
                }
                tx.send((p, v)).await.unwrap();
            }
        });
    }
    drop(tx);
    let (mut count, mut sum, mut next, mut in_order) = (0, 0, [0u64; 3], true);
    while let Some((p, v)) = rx.recv().await {
        in_order &= next[p] == v;
        next[p] = v + 1;
        count += 1;
        sum += v;
    }
    println!("[{rt}] mpsc: {count} messages, sum {sum}, in order per producer: {in_order}");

    // A oneshot answered by a spawned task after a timer.
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(async move {
        sleep(5 * MS).await;
        tx.send("pong").unwrap();
        7u32
    });
    println!("[{rt}] oneshot: {}", rx.await.unwrap());
    println!("[{rt}] spawned task returned {}", task.await.unwrap());

    // A dropped oneshot sender is seen as an error, not a hang.
    let (tx, rx) = oneshot::channel::<()>();
    drop(tx);
    println!("[{rt}] oneshot with dropped sender: {}", rx.await.is_err());

    println!("[{rt}] done");
}

fn main() {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
        .block_on(scenario("current_thread"));

    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap()
        // Run the scenario as a task on the workers, not on the main thread.
        .block_on(async { tokio::spawn(scenario("multi_thread")).await.unwrap() });

    println!("tokio: done");
}
