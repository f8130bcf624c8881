//! redb (a pure-Rust embedded database) on the data volume:
//! `fs-redb write DB N` commits N write transactions of 10 keys each,
//! printing `commit T` after each returns (continuing after the
//! transactions already there; N = 0: until killed);
//! `fs-redb check DB` reads everything back, checks that every transaction
//! present is whole and has the right values, and prints `txns T`.
use redb::{Database, ReadableTable, TableDefinition};
use std::process::exit;

const TABLE: TableDefinition<u64, &str> = TableDefinition::new("records");
const KEYS: u64 = 10;

fn value(txn: u64, k: u64) -> String {
    format!("txn {txn} key {k} {}", "v".repeat(((txn * 13 + k) % 50) as usize))
}

fn fail(msg: String) -> ! {
    println!("FAIL {msg}");
    exit(1)
}

/// The number of whole transactions in the table.
fn count(db: &Database) -> u64 {
    let r = db.begin_read().unwrap_or_else(|e| fail(format!("begin_read: {e}")));
    let t = match r.open_table(TABLE) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return 0,
        Err(e) => fail(format!("open_table: {e}")),
    };
    let mut n = 0u64;
    for item in t.iter().unwrap_or_else(|e| fail(format!("iter: {e}"))) {
        let (k, v) = item.unwrap_or_else(|e| fail(format!("read: {e}")));
        let key = k.value();
        if key != n {
            fail(format!("key {n} missing (found {key})"));
        }
        if v.value() != value(key / KEYS, key % KEYS) {
            fail(format!("key {key} has a wrong value"));
        }
        n += 1;
    }
    if n % KEYS != 0 {
        fail(format!("a partial transaction: {n} keys"));
    }
    n / KEYS
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(2).cloned().unwrap_or_else(|| "/data/redb".into());
    let db = Database::create(&path).unwrap_or_else(|e| fail(format!("open {path}: {e}")));
    match args.get(1).map(String::as_str) {
        Some("write") => {
            let n: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(0);
            let first = count(&db);
            let mut txn = first;
            while n == 0 || txn < first + n {
                let w = db.begin_write().unwrap_or_else(|e| fail(format!("begin_write: {e}")));
                {
                    let mut t = w.open_table(TABLE).unwrap_or_else(|e| fail(format!("open_table: {e}")));
                    for k in 0..KEYS {
                        t.insert(txn * KEYS + k, value(txn, k).as_str())
                            .unwrap_or_else(|e| fail(format!("insert: {e}")));
                    }
                }
                w.commit().unwrap_or_else(|e| fail(format!("commit: {e}")));
                println!("commit {txn}");
                txn += 1;
            }
        }
        Some("check") => println!("txns {}", count(&db)),
        _ => {
            eprintln!("usage: fs-redb write DB N | check DB");
            exit(2)
        }
    }
}
