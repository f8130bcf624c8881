//! Storage micro-benchmarks, the same binary natively and in the
//! unikernel (tests/bench/storage/run.sh runs both side by side):
//!
//! * `seqwrite FILE MIB`: write MIB MiB in 1 MiB writes, then fsync;
//! * `seqread FILE`: read the whole file in 1 MiB reads;
//! * `randread FILE OPS` / `randwrite FILE OPS`: 4 KiB preads / pwrites
//!   at random 4 KiB-aligned offsets of the file (randwrite fsyncs once at
//!   the end, inside the timing).
//!
//! Each prints one line `RESULT <name> <value> <unit>`.
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::time::Instant;

fn die(msg: String) -> ! {
    eprintln!("fs-bench: {msg}");
    std::process::exit(1)
}

/// xorshift64*: a fixed sequence, the same natively and in the guest.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    let path = arg(2);
    let mib = 1usize << 20;
    match arg(1).as_str() {
        "seqwrite" => {
            let n: usize = arg(3).parse().unwrap_or(256);
            let buf: Vec<u8> = (0..mib).map(|i| (i * 31 % 251) as u8).collect();
            let t0 = Instant::now();
            let mut f = File::create(&path).unwrap_or_else(|e| die(format!("create {path}: {e}")));
            for _ in 0..n {
                f.write_all(&buf).unwrap_or_else(|e| die(format!("write: {e}")));
            }
            f.sync_all().unwrap_or_else(|e| die(format!("fsync: {e}")));
            let s = t0.elapsed().as_secs_f64();
            println!("RESULT seqwrite {:.1} MB/s", (n * mib) as f64 / s / 1e6);
        }
        "seqread" => {
            let mut f = File::open(&path).unwrap_or_else(|e| die(format!("open {path}: {e}")));
            let mut buf = vec![0u8; mib];
            let t0 = Instant::now();
            let mut total = 0usize;
            loop {
                let n = f.read(&mut buf).unwrap_or_else(|e| die(format!("read: {e}")));
                if n == 0 {
                    break;
                }
                total += n;
            }
            let s = t0.elapsed().as_secs_f64();
            println!("RESULT seqread {:.1} MB/s", total as f64 / s / 1e6);
        }
        op @ ("randread" | "randwrite") => {
            let ops: usize = arg(3).parse().unwrap_or(10000);
            let f = OpenOptions::new()
                .read(true)
                .write(op == "randwrite")
                .open(&path)
                .unwrap_or_else(|e| die(format!("open {path}: {e}")));
            let blocks = f.metadata().map(|m| m.len() / 4096).unwrap_or(0);
            if blocks == 0 {
                die(format!("{path} is empty: run seqwrite first"));
            }
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
            let mut buf = vec![0x5au8; 4096];
            let t0 = Instant::now();
            for _ in 0..ops {
                let off = (rng.next() % blocks) * 4096;
                if op == "randread" {
                    f.read_exact_at(&mut buf, off)
                        .unwrap_or_else(|e| die(format!("pread: {e}")));
                } else {
                    f.write_all_at(&buf, off)
                        .unwrap_or_else(|e| die(format!("pwrite: {e}")));
                }
            }
            if op == "randwrite" {
                f.sync_all().unwrap_or_else(|e| die(format!("fsync: {e}")));
            }
            let s = t0.elapsed().as_secs_f64();
            println!("RESULT {op} {:.0} ops/s", ops as f64 / s);
        }
        _ => die("usage: fs-bench seqwrite FILE MIB | seqread FILE | randread FILE OPS | randwrite FILE OPS".into()),
    }
}
