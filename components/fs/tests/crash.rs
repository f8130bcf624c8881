//! Crash simulation: run a workload that appends checksummed records and
//! fsyncs each (plus atomic replace-by-rename and writes bigger than the
//! journal), record every device write and flush, then cut the sequence at
//! many random points (writes since the last flush land in any subset, the
//! last one torn at a random byte), mount the result and check that every
//! acknowledged record and state is there and intact, and that
//! `fsck.fat -n` finds nothing.

mod common;
use common::*;
use unikernel_runtime::fs::vfs::{Filesystem, OpenFlags};

const RECORD: usize = 64;

fn record(n: u32) -> [u8; RECORD] {
    let mut r = [0u8; RECORD];
    let head = format!("record {n:08} ");
    r[..head.len()].copy_from_slice(head.as_bytes());
    for (i, b) in r[head.len()..RECORD - 4].iter_mut().enumerate() {
        *b = b'a' + ((n as usize + i) % 26) as u8;
    }
    let c = sum(&r[..RECORD - 4]);
    r[RECORD - 4..].copy_from_slice(&c.to_le_bytes());
    r
}

fn sum(b: &[u8]) -> u32 {
    b.iter().fold(0x811c_9dc5u32, |h, &x| {
        (h ^ u32::from(x)).wrapping_mul(0x0100_0193)
    })
}

fn state(n: u32) -> Vec<u8> {
    let mut v = format!("state {n:08}\n").into_bytes();
    v.resize(3000 + (n as usize % 7) * 1000, b'0' + (n % 10) as u8);
    v
}

fn check_state(data: &[u8]) -> Option<u32> {
    let s = std::str::from_utf8(data.get(..15)?).ok()?;
    let n: u32 = s.strip_prefix("state ")?.trim().parse().ok()?;
    (data == state(n)).then_some(n)
}

/// Page `n` of the in-place file: 4 KiB, slot `n % 4`.
fn page(n: u32) -> Vec<u8> {
    let mut v = format!("page {n:08}\n").into_bytes();
    v.resize(4096, b'A' + (n % 26) as u8);
    v
}

fn check_page(data: &[u8]) -> Option<u32> {
    let s = std::str::from_utf8(data.get(..13)?).ok()?;
    let n: u32 = s.strip_prefix("page ")?.trim().parse().ok()?;
    (data == page(n)).then_some(n)
}

/// (event index at which it was acknowledged, what)
#[derive(Clone, Copy)]
enum Ack {
    Records(u32),
    State(u32),
    Page(u32),
}

fn workload(dev: &std::sync::Arc<MemDisk>) -> Vec<(usize, Ack)> {
    let v = mount(dev.clone());
    let mut acks = Vec::new();
    let log = v
        .open(
            "log",
            OpenFlags {
                append: true,
                ..rw_create()
            },
        )
        .unwrap();
    let pages = v.open("pages", rw_create()).unwrap();
    for n in 0..4 {
        pages.pwrite(&page(n), u64::from(n) * 4096).unwrap();
    }
    pages.sync(false).unwrap();
    acks.push((dev.events().len(), Ack::Page(0)));
    for n in 0..120u32 {
        // An overwrite inside the file (the direct path), fsynced.
        pages.pwrite(&page(n + 4), u64::from(n % 4) * 4096).unwrap();
        pages.sync(true).unwrap();
        acks.push((dev.events().len(), Ack::Page(n + 4)));
        log.write(&record(n)).unwrap();
        log.sync(false).unwrap();
        acks.push((dev.events().len(), Ack::Records(n + 1)));
        if n % 10 == 3 {
            // Atomic replace: write a temporary, fsync it, rename over.
            write_file(&v, "state.tmp", &state(n));
            v.rename("state.tmp", "state", 0).unwrap();
            v.sync().unwrap();
            acks.push((dev.events().len(), Ack::State(n)));
        }
        if n % 40 == 17 {
            // Bigger than the 1 MiB journal: committed in pieces.
            let blob = vec![(n % 251) as u8; 1536 * 1024];
            let f = v.open("blob", rw_create()).unwrap();
            f.pwrite(&blob, 0).unwrap();
        }
        if n % 40 == 33 {
            v.unlink("blob").unwrap();
        }
    }
    acks
}

#[test]
fn acknowledged_data_survives_any_cut() {
    let base = fresh_image(8, None);
    let dev = MemDisk::new(base.clone());
    let acks = workload(&dev);
    let events = dev.events();
    assert!(
        events.iter().filter(|e| matches!(e, Event::Flush)).count() > 100,
        "the workload flushes"
    );
    let points: usize = std::env::var("CRASH_POINTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(400);
    let mut rng = Xorshift(0x9e37_79b9_7f4a_7c15);
    let mut cuts: Vec<usize> = (0..points)
        .map(|_| rng.below(events.len() as u64 + 1) as usize)
        .collect();
    cuts.extend([0, events.len()]);
    for (i, &cut) in cuts.iter().enumerate() {
        let img = crash_image(&base, &events, cut, &mut rng);
        let crashed = MemDisk::new(img);
        let v = mount(crashed.clone());
        let need_records = acks
            .iter()
            .filter(|(at, _)| *at <= cut)
            .filter_map(|(_, a)| match a {
                Ack::Records(n) => Some(*n),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        let need_state = acks
            .iter()
            .filter(|(at, _)| *at <= cut)
            .filter_map(|(_, a)| match a {
                Ack::State(n) => Some(*n),
                _ => None,
            })
            .max();
        let log = read_all(&v, "log").unwrap_or_default();
        assert_eq!(log.len() % RECORD, 0, "cut {cut}: log has a partial record");
        for (n, r) in log.chunks(RECORD).enumerate() {
            assert_eq!(r, record(n as u32), "cut {cut}: record {n} corrupt");
        }
        assert!(
            log.len() / RECORD >= need_records as usize,
            "cut {cut}: {} records, {need_records} acknowledged",
            log.len() / RECORD
        );
        if let Some(s) = need_state {
            let got = read_all(&v, "state").expect("acknowledged state file missing");
            let n = check_state(&got).unwrap_or_else(|| panic!("cut {cut}: state torn"));
            assert!(n >= s, "cut {cut}: state {n}, {s} acknowledged");
        }
        if acks
            .iter()
            .any(|(at, a)| *at <= cut && matches!(a, Ack::Page(_)))
        {
            let got = read_all(&v, "pages").expect("acknowledged pages missing");
            assert_eq!(got.len(), 4 * 4096, "cut {cut}: pages file size");
            for slot in 0..4u32 {
                let have = check_page(&got[slot as usize * 4096..(slot as usize + 1) * 4096])
                    .unwrap_or_else(|| panic!("cut {cut}: page slot {slot} torn"));
                assert_eq!(have % 4, slot, "cut {cut}: page in the wrong slot");
                let need = acks
                    .iter()
                    .filter(|(at, _)| *at <= cut)
                    .filter_map(|(_, a)| match a {
                        Ack::Page(n) if *n % 4 == slot || *n == 0 => Some(*n),
                        _ => None,
                    })
                    .filter(|n| n % 4 == slot)
                    .max()
                    .unwrap_or(slot);
                assert!(
                    have >= need,
                    "cut {cut}: slot {slot} has page {have}, {need} acknowledged"
                );
            }
        }
        if let Ok(b) = read_all(&v, "blob") {
            assert!(b.len() <= 1536 * 1024);
        }
        // The volume stays usable: write, sync, remount.
        write_file(&v, "after-crash", b"ok");
        drop(v);
        let v = mount(crashed.clone());
        assert_eq!(read_all(&v, "after-crash").unwrap(), b"ok");
        drop(v);
        if i % 3 == 0 || cut == events.len() {
            fsck(&crashed.image(), &format!("cut {cut} of {}", events.len()));
        }
    }
}

#[test]
fn torn_journal_is_ignored_and_committed_one_replayed() {
    // Cut right after the log write of a commit (before its flush): the
    // log is complete only if the whole write landed.
    let base = fresh_image(8, None);
    let dev = MemDisk::new(base.clone());
    let v = mount(dev.clone());
    write_file(&v, "one", b"first");
    let before = dev.events().len();
    write_file(&v, "two", b"second");
    let events = dev.events();
    // The second commit writes its new cluster home directly (ordered
    // data), flushes, then writes its log: the first write that starts
    // with a descriptor block.
    let log = (before..events.len())
        .find(|&i| matches!(&events[i], Event::Write(_, d) if d.starts_with(b"UKJDESC1")))
        .expect("the second commit writes a log");
    let mut img_torn = base.clone();
    let mut img_whole = base.clone();
    for (i, e) in events.iter().enumerate() {
        if let Event::Write(s, d) = e {
            let off = *s as usize * 512;
            if i < log {
                img_torn[off..off + d.len()].copy_from_slice(d);
                img_whole[off..off + d.len()].copy_from_slice(d);
            } else if i == log {
                // Everything but the commit block (the last 4 KiB).
                img_torn[off..off + d.len() - 4096].copy_from_slice(&d[..d.len() - 4096]);
                img_whole[off..off + d.len()].copy_from_slice(d);
            }
        }
    }
    let v = mount(MemDisk::new(img_torn));
    assert_eq!(read_all(&v, "one").unwrap(), b"first");
    assert!(read_all(&v, "two").is_err(), "a torn commit is ignored");
    let dev2 = MemDisk::new(img_whole);
    let v = mount(dev2.clone());
    assert_eq!(
        read_all(&v, "two").unwrap(),
        b"second",
        "a committed log is replayed"
    );
    drop(v);
    fsck(&dev2.image(), "after replay");
    // Read-only: replayed in memory, the device untouched.
    let mut img_ro = base.clone();
    for (i, e) in events.iter().enumerate() {
        if let Event::Write(s, d) = e {
            if i <= log {
                let off = *s as usize * 512;
                img_ro[off..off + d.len()].copy_from_slice(d);
            }
        }
    }
    let ro_dev = MemDisk::read_only(img_ro.clone());
    let v = mount(ro_dev.clone());
    assert_eq!(read_all(&v, "two").unwrap(), b"second");
    assert_eq!(ro_dev.image(), img_ro);
}
