//! A first unikernel app: an ordinary Rust program using `std`.
//!
//! It runs the same on your machine (`cargo run`) and as a unikernel
//! (`cargo unikernel run`), and shows that the basics work there too:
//! arguments, environment, clocks and sleeping, hashing with a random seed,
//! a large allocation, and the exit code.
//!
//! Usage: hello [--exit N] [OTHER ARGS...]
//!   --exit N   exit with code N (default 0)
use std::collections::HashMap;
use std::time::{Duration, Instant};

fn main() {
    // Arguments, as the program was started (argv[0] is the app's name).
    let args: Vec<String> = std::env::args().collect();
    println!("args: {args:?}");

    // Environment: [package.metadata.unikernel] env in Cargo.toml sets a default.
    let greeting = std::env::var("GREETING").unwrap_or_else(|_| "hello, world".to_string());
    println!("GREETING: {greeting}");

    // Clocks: sleep 10 ms and measure it with the monotonic clock.
    let start = Instant::now();
    std::thread::sleep(Duration::from_millis(10));
    let measured = start.elapsed();
    println!("slept 10 ms: measured {:.1} ms", measured.as_secs_f64() * 1000.0);

    // A HashMap with the default (randomly seeded) hasher: word counts.
    let sentence = "the quick brown fox jumps over the lazy dog the end";
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for word in sentence.split_whitespace() {
        *counts.entry(word).or_default() += 1;
    }
    let mut counts: Vec<_> = counts.into_iter().collect();
    counts.sort();
    let counts: Vec<String> = counts.iter().map(|(w, n)| format!("{w}={n}")).collect();
    println!("word counts: {}", counts.join(" "));

    // Memory: 16 MiB of u64s, filled and summed (0 + 1 + ... + n-1).
    let n = 16 * 1024 * 1024 / std::mem::size_of::<u64>();
    let mut big = vec![0u64; n];
    for (i, x) in big.iter_mut().enumerate() {
        *x = i as u64;
    }
    let sum: u64 = big.iter().sum();
    println!("sum of 0..{n}: {sum}");

    // Exit code: `--exit N`.
    let code = match args.iter().position(|a| a == "--exit") {
        Some(i) => match args.get(i + 1).and_then(|v| v.parse::<i32>().ok()) {
            Some(code) => code,
            None => {
                eprintln!("usage: hello [--exit N]: --exit needs a number");
                2
            }
        },
        None => 0,
    };
    println!("exiting with code {code}");
    std::process::exit(code);
}
