//! SQLite on the data volume: `fs-sqlite run MODE DB TXNS` inserts TXNS
//! transactions of 100 rows each (journal mode MODE: `wal` or `delete`),
//! printing `commit N` after each commit returns (0 TXNS: forever, until
//! killed); `fs-sqlite check DB` runs `PRAGMA integrity_check` and checks
//! that every transaction present is whole (100 rows, all with the right
//! payload), printing `integrity ok`, `txns N` and `rows R`.
//! `fs-sqlite bench MODE DB TXNS` times the inserts and prints `inserts/s X`.
//!
//! `synchronous=EXTRA`: in DELETE mode a commit also syncs the directory
//! after deleting the journal (with FULL, SQLite itself lets the last
//! commit roll back after a power loss); in WAL mode it is FULL.
use rusqlite::{params, Connection};
use std::process::exit;
use std::time::Instant;

const ROWS: i64 = 100;

fn payload(txn: i64, row: i64) -> String {
    format!("txn {txn} row {row} {}", "x".repeat((txn * 7 + row) as usize % 64))
}

fn open(db: &str, mode: &str) -> Connection {
    let c = Connection::open(db).unwrap_or_else(|e| fail(&format!("open {db}: {e}")));
    let got: String = c
        .query_row(&format!("PRAGMA journal_mode={mode}"), [], |r| r.get(0))
        .unwrap_or_else(|e| fail(&format!("journal_mode: {e}")));
    if !got.eq_ignore_ascii_case(mode) {
        fail(&format!("journal_mode is {got}, wanted {mode}"));
    }
    c.execute_batch("PRAGMA synchronous=EXTRA; CREATE TABLE IF NOT EXISTS t (txn INTEGER, row INTEGER, data TEXT, PRIMARY KEY (txn, row));")
        .unwrap_or_else(|e| fail(&format!("create: {e}")));
    c
}

fn fail(msg: &str) -> ! {
    println!("FAIL {msg}");
    exit(1)
}

fn insert(c: &mut Connection, txn: i64) {
    let tx = c.transaction().unwrap_or_else(|e| fail(&format!("begin: {e}")));
    {
        let mut st = tx
            .prepare_cached("INSERT INTO t (txn, row, data) VALUES (?1, ?2, ?3)")
            .unwrap_or_else(|e| fail(&format!("prepare: {e}")));
        for row in 0..ROWS {
            st.execute(params![txn, row, payload(txn, row)])
                .unwrap_or_else(|e| fail(&format!("insert: {e}")));
        }
    }
    tx.commit().unwrap_or_else(|e| fail(&format!("commit: {e}")));
}

fn next_txn(c: &Connection) -> i64 {
    c.query_row("SELECT COALESCE(MAX(txn), -1) + 1 FROM t", [], |r| r.get(0))
        .unwrap_or_else(|e| fail(&format!("max: {e}")))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    match arg(1) {
        "run" | "bench" => {
            let mut c = open(arg(3), arg(2));
            let n: i64 = arg(4).parse().unwrap_or(0);
            let first = next_txn(&c);
            let t0 = Instant::now();
            let mut txn = first;
            while n == 0 || txn < first + n {
                insert(&mut c, txn);
                if arg(1) == "run" {
                    println!("commit {txn}");
                }
                txn += 1;
            }
            if arg(1) == "bench" {
                let s = t0.elapsed().as_secs_f64();
                println!("inserts/s {:.0}", (n * ROWS) as f64 / s);
            }
        }
        "check" => {
            let c = open(arg(3), if arg(2).is_empty() { "delete" } else { arg(2) });
            let ic: String = c
                .query_row("PRAGMA integrity_check", [], |r| r.get(0))
                .unwrap_or_else(|e| fail(&format!("integrity_check: {e}")));
            if ic != "ok" {
                fail(&format!("integrity_check: {ic}"));
            }
            println!("integrity ok");
            let mut st = c
                .prepare("SELECT txn, row, data FROM t ORDER BY txn, row")
                .unwrap_or_else(|e| fail(&format!("select: {e}")));
            let mut rows = st.query([]).unwrap_or_else(|e| fail(&format!("query: {e}")));
            let (mut txns, mut total, mut cur, mut count) = (0i64, 0i64, -1i64, 0i64);
            while let Some(r) = rows.next().unwrap_or_else(|e| fail(&format!("row: {e}"))) {
                let (txn, row, data): (i64, i64, String) =
                    (r.get(0).unwrap(), r.get(1).unwrap(), r.get(2).unwrap());
                if data != payload(txn, row) {
                    fail(&format!("txn {txn} row {row} has wrong data"));
                }
                if txn != cur {
                    if cur >= 0 && count != ROWS {
                        fail(&format!("txn {cur} has {count} rows"));
                    }
                    if txn != cur + 1 {
                        fail(&format!("txn {} missing", cur + 1));
                    }
                    cur = txn;
                    count = 0;
                    txns += 1;
                }
                count += 1;
                total += 1;
            }
            if cur >= 0 && count != ROWS {
                fail(&format!("txn {cur} has {count} rows"));
            }
            println!("txns {txns}");
            println!("rows {total}");
        }
        _ => {
            eprintln!("usage: fs-sqlite run|bench MODE DB TXNS | check MODE DB");
            exit(2)
        }
    }
}
