//! The crash test's app.
//!
//! `fs-crash write [COUNT] [PATH]`: append 64-byte records to PATH
//! (default /data/log), each numbered and checksummed, `fsync` after
//! each, and print `ack N` once record N (1-based: N records are durable)
//! is acknowledged. Continues the numbering of records already there.
//! Without COUNT it writes until killed.
//!
//! `fs-crash verify [PATH]`: read the records back and print
//! `records N`; exit 1 with `corrupt: ...` on a damaged, misnumbered or
//! partial record.
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::process::ExitCode;

const RECORD: usize = 64;

fn checksum(b: &[u8]) -> u32 {
    b.iter().fold(0x811c_9dc5u32, |h, &x| {
        (h ^ u32::from(x)).wrapping_mul(0x0100_0193)
    })
}

fn record(n: u64) -> [u8; RECORD] {
    let mut r = [0u8; RECORD];
    let head = format!("record {n:010} ");
    r[..head.len()].copy_from_slice(head.as_bytes());
    for (i, b) in r[head.len()..RECORD - 5].iter_mut().enumerate() {
        *b = b'a' + ((n as usize + i) % 26) as u8;
    }
    r[RECORD - 5] = b'\n';
    let c = checksum(&r[..RECORD - 4]);
    r[RECORD - 4..].copy_from_slice(&c.to_le_bytes());
    r
}

/// The number of intact records, or what is wrong.
fn verify(path: &str) -> Result<u64, String> {
    let mut data = Vec::new();
    match std::fs::File::open(path) {
        Ok(mut f) => {
            f.read_to_end(&mut data)
                .map_err(|e| format!("cannot read {path}: {e}"))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(format!("cannot open {path}: {e}")),
    }
    if data.len() % RECORD != 0 {
        return Err(format!(
            "{path} is {} bytes: a partial record at the end",
            data.len()
        ));
    }
    for (n, r) in data.chunks(RECORD).enumerate() {
        if r != record(n as u64) {
            return Err(format!("record {n} is damaged or misnumbered"));
        }
    }
    Ok((data.len() / RECORD) as u64)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map_or("write", String::as_str);
    match mode {
        "verify" => {
            let path = args.get(2).map_or("/data/log", String::as_str);
            match verify(path) {
                Ok(n) => {
                    println!("records {n}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    println!("corrupt: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        "write" => {
            let count: Option<u64> = args.get(2).and_then(|s| s.parse().ok());
            let path = args.get(3).map_or("/data/log", String::as_str);
            let mut n = match verify(path) {
                Ok(n) => n,
                Err(e) => {
                    println!("corrupt: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let mut f = match OpenOptions::new().create(true).append(true).open(path) {
                Ok(f) => f,
                Err(e) => {
                    println!("cannot open {path}: {e}");
                    return ExitCode::FAILURE;
                }
            };
            println!("start {n}");
            let end = count.map_or(u64::MAX, |c| n + c);
            while n < end {
                if let Err(e) = f.write_all(&record(n)).and_then(|_| f.sync_all()) {
                    println!("write of record {n} failed: {e}");
                    return ExitCode::FAILURE;
                }
                n += 1;
                println!("ack {n}");
            }
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("usage: fs-crash write [COUNT] [PATH] | fs-crash verify [PATH]");
            ExitCode::from(2)
        }
    }
}
