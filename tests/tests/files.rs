//! The runtime's files: the read-only root tree, the writable `/tmp` and
//! the VFS's system calls, checked by booting `tests/apps/fs-tour` (every
//! check it makes prints `ok NAME` or `FAIL NAME: why`; see its main.rs).
//! Disk volumes reuse the same app in `write`/`verify` mode (storage
//! tests).

use unikernel_tests::*;

/// The app passed: exit 0, no FAIL line, and every named check printed `ok`.
fn assert_passed(o: &Outcome, checks: &[&str]) {
    let lines = o.stdout_lines();
    let failed: Vec<_> = lines.iter().filter(|l| l.starts_with("FAIL")).collect();
    assert!(
        failed.is_empty(),
        "failed checks: {failed:?}\nstdout: {}\nstderr: {}",
        o.stdout,
        o.stderr
    );
    for c in checks {
        let want = format!("ok {c}");
        assert!(
            lines.contains(&want.as_str()),
            "no line {want:?}\nstdout: {}\nstderr: {}",
            o.stdout,
            o.stderr
        );
    }
    assert_eq!(o.code, 0, "stdout: {}\nstderr: {}", o.stdout, o.stderr);
}

cases! {
    fn std_fs_tour_on_tmp(t) on [hvt, kvm, microvm, xen] {
        let o = t.boot("fs-tour", &[], &["tour", "/tmp"]);
        assert_passed(&o, &[
            "mkdir", "create+write", "append", "pwrite at offsets", "seek+read", "big write",
            "set_len", "rename over", "unlink", "mkdir/rmdir", "O_EXCL", "fsync", "set modified",
            "fcntl lock", "statfs", "verify a.txt", "verify p.bin", "verify t.bin",
            "verify big.bin", "verify rename", "verify unlink", "verify dirs", "verify read_dir",
            "verify metadata",
        ]);
        assert!(o.stdout.contains("all 25 checks passed"), "stdout: {}", o.stdout);
    }

    fn paths_links_dirfds_and_shared_mappings_on_tmp(t) on [hvt, kvm, microvm] {
        let o = t.boot("fs-tour", &[], &["extras", "/tmp"]);
        assert_passed(&o, &[
            "cwd and relative paths", "dotdot across a mount", "symlinks", "ELOOP",
            "ENAMETOOLONG", "hard link", "dirfd openat/mkdirat/unlinkat", "chmod",
            "rename across mounts", "raw calls", "mmap shared write-back", "unlinked but open",
        ]);
    }

    fn tmp_full_gives_enospc_and_space_comes_back(t) on [hvt, kvm, microvm] {
        let o = t.boot("fs-tour", &["--env", "UNIKERNEL_TMP_SIZE=64K"], &["fill", "/tmp"]);
        assert_passed(&o, &["ENOSPC", "size", "space back after unlink"]);
        // 64 KiB is 16 pages of file data, all of them for the one file.
        assert!(
            o.stdout.contains("fill: wrote 65536 bytes, then: No space left on device (os error 28)"),
            "stdout: {}", o.stdout
        );
    }

    fn tmp_size_must_be_a_size(t) on [hvt] {
        let o = t.boot("fs-tour", &["--env", "UNIKERNEL_TMP_SIZE=lots"], &["fill", "/tmp"]);
        assert_ne!(o.code, 0);
        assert!(o.stderr.contains("UNIKERNEL_TMP_SIZE=lots\": not a size"), "stderr: {}", o.stderr);
    }

    fn root_is_read_only(t) on [hvt, kvm, microvm, xen] {
        let o = t.boot("fs-tour", &[], &["rootro"]);
        assert_passed(&o, &[
            "create /x", "mkdir /newdir", "write the exe entry", "unlink /proc/self/exe",
            "rename in /", "rmdir /tmp", "access W_OK /", "write /dev/null",
            "read_link /proc/self/exe",
        ]);
    }

    fn ls_root_shows_the_tree_and_tmp(t) on [hvt, kvm, microvm] {
        let o = t.boot("fs-tour", &[], &["ls", "/"]);
        assert_eq!(o.code, 0, "stderr: {}", o.stderr);
        let lines = o.stdout_lines();
        assert_eq!(&lines[..4], ["dev", "fs-tour", "proc", "tmp"], "stdout: {}", o.stdout);
        let o = t.boot("fs-tour", &[], &["ls", "/dev"]);
        assert_eq!(&o.stdout_lines()[..4], ["null", "random", "urandom", "zero"], "stdout: {}", o.stdout);
    }
}
