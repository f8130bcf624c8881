//! Removing a big file (unlink, or rename over it) takes several
//! transactions to free its clusters; the removal itself must still be
//! atomic at any crash. Its own test binary: it shrinks the journal's
//! capacity for the whole process.

mod common;
use common::*;
use unikernel_runtime::fs::vfs::Filesystem;

/// Replacing a file too big to free in one transaction (rename over it)
/// and unlinking one are atomic: at any cut, the old target is whole or
/// the new one is in place, and an unlinked file is whole or gone.
#[test]
fn rename_over_and_unlink_of_a_big_file_are_atomic() {
    // Commits of at most 8 blocks: on a small volume a file of a few MiB
    // then needs several transactions to free, as a file of more than
    // 512 MiB does with a 20 MiB journal.
    unikernel_fs::cache::limit_capacity_for_tests(8);
    let base = fresh_image(32, None);
    let dev = MemDisk::new(base.clone());
    let v = mount(dev.clone());
    let big: Vec<u8> = (0..12u32 << 20).map(|i| (i % 251) as u8).collect();
    write_file(&v, "big", &big);
    write_file(&v, "other", &big);
    write_file(&v, "new", b"the replacement");
    v.sync().unwrap();
    let start = dev.events().len();
    v.rename("new", "big", 0).unwrap();
    let renamed = dev.events().len();
    v.unlink("other").unwrap();
    v.sync().unwrap();
    drop(v);
    let events = dev.events();
    let commits = |r: core::ops::Range<usize>| {
        events[r]
            .iter()
            .filter(|e| matches!(e, Event::Write(_, d) if d.starts_with(b"UKJDESC1")))
            .count()
    };
    assert!(
        commits(start..renamed) >= 1 && commits(renamed..events.len()) >= 2,
        "the files are big enough to need several transactions ({} during the rename, {} after)",
        commits(start..renamed),
        commits(renamed..events.len())
    );
    let mut rng = Xorshift(0x2545_f491_4f6c_dd1d);
    let mut cuts: Vec<usize> = (0..60)
        .map(|_| start + rng.below((events.len() - start) as u64 + 1) as usize)
        .collect();
    cuts.extend([start, renamed, events.len()]);
    for cut in cuts {
        let img = crash_image(&base, &events, cut, &mut rng);
        let v = mount(MemDisk::new(img));
        match read_all(&v, "big") {
            Ok(d) if d == big => {
                assert_eq!(
                    read_all(&v, "new").unwrap(),
                    b"the replacement",
                    "cut {cut}"
                );
            }
            Ok(d) => {
                assert_eq!(
                    d, b"the replacement",
                    "cut {cut}: big is neither old nor new"
                );
                assert!(read_all(&v, "new").is_err(), "cut {cut}: new still there");
            }
            Err(e) => panic!("cut {cut}: big is gone ({e})"),
        }
        if let Ok(d) = read_all(&v, "other") {
            assert!(d == big, "cut {cut}: other is neither whole nor gone");
        }
        // Hidden names are left out of listings: try the ones this run's
        // few nodes can have had.
        for id in 1..=32 {
            let hidden = format!("{}{id}", unikernel_fs::volume::HIDDEN_PREFIX);
            assert!(
                read_all(&v, &hidden).is_err(),
                "cut {cut}: {hidden} survived the mount"
            );
        }
        drop(v);
    }
}
