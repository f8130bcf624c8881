//! A tour of `std::fs` on one directory, for the storage tests.
//!
//! ```text
//! fs-tour tour DIR     write, then verify, in one run
//! fs-tour write DIR    leave a known tree in DIR/tour (first boot)
//! fs-tour verify DIR   check that tree (a second boot of the same volume)
//! fs-tour extras DIR   links, cwd and relative paths, dirfd calls, mmap (memfs)
//! fs-tour fill DIR     write until the filesystem is full, then free it
//! fs-tour rootro       writes under / fail with EROFS
//! fs-tour ls DIR       print DIR's entries, one a line
//! ```
//!
//! Every check prints one line, `ok NAME` or `FAIL NAME: why`; the exit
//! code is 1 when any check failed.
mod checks;
mod extras;

use checks::Tour;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("");
    let dir = args.get(2).map(String::as_str).unwrap_or("/tmp");
    let mut t = Tour::default();
    match mode {
        "tour" => {
            checks::write(&mut t, dir);
            checks::verify(&mut t, dir);
        }
        "write" => checks::write(&mut t, dir),
        "verify" => checks::verify(&mut t, dir),
        "extras" => extras::run(&mut t, dir),
        "fill" => extras::fill(&mut t, dir),
        "rootro" => extras::root_read_only(&mut t),
        "ls" => {
            let mut names: Vec<String> = match std::fs::read_dir(dir) {
                Ok(rd) => rd
                    .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                    .collect::<Result<_, _>>()
                    .unwrap_or_else(|e| vec![format!("error: {e}")]),
                Err(e) => vec![format!("error: {e}")],
            };
            names.sort();
            for n in names {
                println!("{n}");
            }
        }
        _ => {
            eprintln!("usage: fs-tour tour|write|verify|extras|fill|ls DIR, or fs-tour rootro");
            std::process::exit(2);
        }
    }
    if t.failed > 0 {
        println!("{} check(s) failed", t.failed);
        std::process::exit(1);
    }
    println!("all {} checks passed", t.passed);
}
