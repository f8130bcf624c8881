//! Threads, futexes, signals, pipes, epoll and timers: boot the test apps
//! `threads`, `spin-fair`, `tokio-timers`, `signals`, `pipes`, `syscalls`
//! and `timer-bench` and check their exact output and exit codes.
//!
//! Every expectation here also holds for the same app run natively on
//! Linux: with `UNIKERNEL_TESTS_NATIVE=1` these tests build the apps for
//! x86_64-unknown-linux-musl and run them on the host instead of booting
//! them (no KVM needed), which checks the expectations themselves.
//! Only facts that differ by design are checked under the unikernel alone
//! (one CPU, the runtime's report of a fatal signal).
//!
//! Every case runs on hvt and on kvm (QEMU q35, TCG: the ring-0 system-call
//! path); see `unikernel_tests::cases!`.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;
use unikernel_tests::*;

/// The app's static musl binary, built once per test binary.
fn native_binary(name: &str) -> PathBuf {
    static BUILD: Mutex<()> = Mutex::new(());
    let _g = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let apps = root().join("tests/apps");
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args([
        "build",
        "--release",
        "--quiet",
        "--target",
        "x86_64-unknown-linux-musl",
    ])
    .arg("--manifest-path")
    .arg(apps.join("Cargo.toml"))
    .args(["-p", name])
    .env_remove("CARGO_TARGET_DIR");
    let o = run_with_deadline(cmd, b"", Duration::from_secs(900));
    assert_eq!(o.code, 0, "building {name} natively failed:\n{}", o.stderr);
    apps.join("target/x86_64-unknown-linux-musl/release")
        .join(name)
}

/// Boot the app `name` with `args` on `t` (or run it natively, see the top).
fn run(t: Target, name: &str, args: &[&str]) -> Outcome {
    if native() {
        // Through sh, so that death by a signal reads as 128+N as it does
        // from the monitor.
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(r#""$0" "$@"; exit $?"#)
            .arg(native_binary(name))
            .args(args)
            .env_remove("RUST_BACKTRACE");
        run_with_deadline(cmd, b"", Duration::from_secs(60))
    } else {
        t.boot(name, &[], args)
    }
}

fn assert_lines(o: &Outcome, want: &[&str]) {
    assert_eq!(
        o.stdout_lines(),
        want,
        "exit code {}; stderr:\n{}",
        o.code,
        o.stderr
    );
}

fn assert_stderr_has(o: &Outcome, needle: &str) {
    assert!(
        o.stderr.contains(needle),
        "stderr lacks {needle:?}:\n{}",
        o.stderr
    );
}

cases! {
    fn std_threads_and_sync_primitives(t) on [hvt, kvm] {
        let o = run(t, "threads", &[]);
        let mut lines = o.stdout_lines();
        // available_parallelism: the unikernel has one CPU; the host any number.
        let parallelism = lines.iter().position(|l| l.starts_with("parallelism: "));
        if native() {
            if let Some(i) = parallelism {
                lines[i] = "parallelism: 1";
            }
        }
        assert_eq!(
            lines,
            [
                "main thread name: Some(\"main\")",
                "named threads: worker-0 worker-1 worker-2 worker-3 worker-4 worker-5 worker-6 worker-7",
                "unnamed thread name: None",
                "handle name: Some(\"handle-name\")",
                "mutex: 80000",
                "condvar turns: [0, 1, 2, 3, 4, 5, 6, 7]",
                "condvar wait_timeout timed out: true",
                "rwlock: 8 entries, sum 28, own writes seen: true, two readers: true",
                "barrier: every thread saw all slots: true, leaders 1",
                "mpsc: 1000 messages from 4 producers, sum 124500, in order per producer: true",
                "sync_channel(0): [1, 4, 9, 16, 25, 36, 49, 64, 81, 100], sends ok: true",
                "recv_timeout: Err(Timeout)",
                "scope: total 640800, data now sums to 640800, len seen from a scoped thread 800",
                "thread_local: counters [1, 2, 3, 4, 5, 6, 7, 8], main's still 1000, destructors ran 8",
                "join results: [0, 1, 4, 9, 16, 25, 36, 49], sum 140",
                "park/unpark: woke with 7",
                "panic propagated through join: boom from panicker: 7",
                "after the panic a new thread returned 5",
                "parallelism: 1",
                "threads: all ok",
            ],
            "exit code {}; stderr:\n{}",
            o.code,
            o.stderr
        );
        // The panicking thread's report names it ("thread 'panicker' (TID)
        // panicked at ..." in current std) and carries the message.
        assert_stderr_has(&o, "thread 'panicker'");
        assert_stderr_has(&o, "panicked at threads/src/main.rs:");
        assert_stderr_has(&o, "boom from panicker: 7");
        assert!(!o.stderr.contains("CHECK FAILED"), "stderr:\n{}", o.stderr);
        assert_eq!(o.code, 0, "stderr:\n{}", o.stderr);
    }

    fn spinning_thread_is_preempted(t) on [hvt, kvm, xen] {
        let o = run(t, "spin-fair", &[]);
        assert_lines(
            &o,
            &["main woke up while a thread spins", "spinner ran: true"],
        );
        assert_eq!(o.code, 0, "stderr:\n{}", o.stderr);
    }

    fn tokio_timers_and_channels(t) on [hvt, kvm, xen] {
        let o = run(t, "tokio-timers", &[]);
        let mut want = Vec::new();
        for rt in ["current_thread", "multi_thread"] {
            for line in [
                "start",
                "sleep 20 ms: waited at least 20 ms: true",
                "interval tick 1",
                "interval tick 2",
                "interval tick 3",
                "3 ticks took at least 20 ms: true",
                "timeout 10 ms on a 30 s sleep: expired: true, after at least 10 ms: true",
                "timeout 30 s on a 5 ms task: Ok(42)",
                "spawn_blocking returned 5050",
                "mpsc: 15 messages, sum 30, in order per producer: true",
                "oneshot: pong",
                "spawned task returned 7",
                "oneshot with dropped sender: true",
                "done",
            ] {
                want.push(format!("[{rt}] {line}"));
            }
        }
        want.push("tokio: done".into());
        let want: Vec<&str> = want.iter().map(String::as_str).collect();
        assert_lines(&o, &want);
        assert_eq!(o.code, 0, "stderr:\n{}", o.stderr);
    }

    fn stack_overflow_in_a_thread_aborts(t) on [hvt, kvm] {
        let o = run(t, "signals", &["overflow"]);
        assert_lines(&o, &["overflowing the stack of thread 'deep'"]);
        // "thread 'deep' (TID) has overflowed its stack" in current std; older
        // ones print no TID.
        assert_stderr_has(&o, "thread 'deep'");
        assert_stderr_has(&o, "has overflowed its stack");
        assert_stderr_has(&o, "fatal runtime error: stack overflow");
        assert_eq!(o.code, 134, "SIGABRT is 128+6; stderr:\n{}", o.stderr);
        if !native() {
            assert_stderr_has(&o, "SIGABRT");
        }
    }

    /// The same as `stack_overflow_in_a_thread_aborts`, where the console
    /// mixes stdout and stderr (Xen's one console ring).
    fn stack_overflow_on_a_mixed_console(t) on [xen] {
        let o = run(t, "signals", &["overflow"]);
        assert!(o.stdout.starts_with("overflowing the stack of thread 'deep'\n"), "stdout:\n{}", o.stdout);
        assert_stderr_has(&o, "thread 'deep'");
        assert_stderr_has(&o, "has overflowed its stack");
        assert_stderr_has(&o, "fatal runtime error: stack overflow");
        assert_stderr_has(&o, "SIGABRT");
        assert_eq!(o.code, 134, "SIGABRT is 128+6; stderr:\n{}", o.stderr);
    }

    fn sigsegv_handler_gets_the_fault_address(t) on [hvt, kvm, xen] {
        let o = run(t, "signals", &["segv-handler"]);
        assert_lines(&o, &["reading address 0x1000", "caught SIGSEGV at 0x1000"]);
        assert_eq!(o.code, 42, "the handler _exits 42; stderr:\n{}", o.stderr);
    }

    fn raise_kill_and_pending_signals_run_handlers(t) on [hvt, kvm, xen] {
        let o = run(t, "signals", &["raise"]);
        assert_lines(
            &o,
            &[
                "raise: handler ran: true",
                "kill: handler ran: true",
                "blocked: handler ran: false, pending: true",
                "unblocked: handler ran: true",
                "ignored SIGUSR2: still alive",
                "handler calls: 3, signal number 10",
            ],
        );
        assert_eq!(o.code, 0, "stderr:\n{}", o.stderr);
    }

    fn abort_exits_134(t) on [hvt, kvm] {
        let o = run(t, "signals", &["abort"]);
        assert_lines(&o, &["aborting"]);
        assert_eq!(o.code, 134, "SIGABRT is 128+6; stderr:\n{}", o.stderr);
        if !native() {
            assert_stderr_has(&o, "SIGABRT");
        }
    }

    fn pipes_sockets_poll_epoll_eventfd(t) on [hvt, kvm, xen] {
        let o = run(t, "pipes", &[]);
        assert_lines(
            &o,
            &[
                "pipe+poll: 50000 records, sum 1249975000, in order: true, fnv d90c18f5bc879fed",
                "pipe+poll: POLLHUP after the writer closed: true",
                "socketpair+epoll(ET): 50000 records, sum 1249975000, in order: true, fnv d90c18f5bc879fed",
                "epoll ET: idle 0, after a write 1, again 0, after another write 1",
                "epoll LT: after a write 1, again 1",
                "epoll: drained 14 bytes then EAGAIN: true; peer closed: EPOLLRDHUP: true, read gives EOF: true",
                "epoll: after EPOLL_CTL_DEL 0 events",
                "eventfd: 3+4 read as 7; semaphore reads 1 1 EAGAIN; round trip 41 -> 42",
                "dup: FD_CLOEXEC pipe2 true, dup false, dup2 fd 100 false, F_DUPFD_CLOEXEC fd 200 true",
                "dup: read back \"via dup|via dup2|via F_DUPFD_CLOEXEC\"",
                "fcntl: read end O_RDONLY true, write end O_WRONLY true, O_NONBLOCK before false, after true, empty read EAGAIN true",
                "close write ends one by one, read gives: EAGAIN EAGAIN EAGAIN EOF",
                "fcntl on a closed fd gives EBADF: true",
                "pipes: all ok",
            ],
        );
        assert_eq!(o.code, 0, "stderr:\n{}", o.stderr);
    }

    fn raw_futex_thread_sleep_and_readiness_calls(t) on [hvt, kvm, xen] {
        let o = run(t, "syscalls", &[]);
        let cpus = if native() {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            1
        };
        let affinity = format!("cpus in affinity mask: {cpus}");
        assert_lines(
            &o,
            &[
                "futex wait on a changed word: -1 errno 11 (EAGAIN=11)",
                "relative 20 ms timeout: -1 errno 110 (ETIMEDOUT=110), waited >= 20 ms: true",
                "absolute MONOTONIC deadline: -1 errno 110, waited >= 19 ms: true",
                "absolute REALTIME deadline: -1 errno 110, waited >= 19 ms: true",
                "shared bitset wake: non-matching woke 0, matching woke 1, waiter got (0, 0)",
                "cmp_requeue with a stale value: -1 errno 11",
                "cmp_requeue returned 3, done after it 1, then woke 0 on A and 2 on B, results [(0, 0), (0, 0), (0, 0)]",
                "signal during futex wait: -1 errno 4 (EINTR=4), handler ran: true",
                "pid == main tid: true, other thread tid differs: true",
                "thread about to call exit(0)",
                "main still runs after a thread's exit",
                "sched_yield: 0",
                &affinity,
                "prctl name: renamed",
                "clock_nanosleep TIMER_ABSTIME MONOTONIC: 0, slept >= 19 ms: true",
                "clock_nanosleep TIMER_ABSTIME REALTIME: 0, slept >= 19 ms: true",
                "select: before write 0, after write 1, fd set: true",
                "pselect timeout: 0, waited >= 10 ms: true",
                "ppoll timeout: 0",
                "read on empty non-blocking pipe: -1 errno 11 (EAGAIN=11)",
                "F_GETFL has O_NONBLOCK: true",
                "dup3 -> 50, FD_CLOEXEC: true",
                "dup3 onto itself: -1 errno 22 (EINVAL=22)",
                "after F_SETFD 0: FD_CLOEXEC false",
                "oneshot: first 1 (data 42), second 0, after MOD 1",
                "adding twice: -1 errno 17 (EEXIST=17)",
                "blocking epoll_wait woken by a write: 1",
                "syscalls: all done",
            ],
        );
        assert_eq!(o.code, 0, "stderr:\n{}", o.stderr);
    }

    fn exit_group_from_a_thread_ends_the_process(t) on [hvt, kvm, xen] {
        let o = run(t, "syscalls", &["exit-group-from-thread"]);
        assert_eq!(o.stdout, "", "stderr:\n{}", o.stderr);
        assert_eq!(o.code, 7, "stderr:\n{}", o.stderr);
    }

    /// Precise timers: sleepers beside a thread that computes without
    /// system calls are woken by the one-shot timer, not at the end of its
    /// time slice. Everywhere: they never wake early. On hvt also: they
    /// wake in deadline order although they started in the opposite one
    /// and are due 5 ms apart, and the median oversleep is under 4 ms (a
    /// bound for loaded hosts; it was ~5 ms with the old periodic 10 ms
    /// tick, and is ~0.1-1 ms now). Under TCG (kvm here, and the Xen lab) a
    /// vCPU on a loaded host is at times held up for longer than that, so
    /// those two lines are only reported there (tests/bench/timers/ has the
    /// figures).
    fn sleepers_beside_a_spinning_thread_wake_on_time(t) on [hvt, kvm, xen] {
        let o = run(t, "timer-bench", &["check"]);
        let timing = |l: &str| {
            l.starts_with("sleepers woke in deadline order")
                || l.starts_with("median oversleep beside a spinning thread")
        };
        let want: Vec<&str> = [
            "sleepers never woke early: true",
            "sleepers woke in deadline order: true",
            "median oversleep beside a spinning thread under 4 ms: true",
            "spinner ran: true",
        ]
        .into_iter()
        .filter(|l| t == Target::Hvt || !timing(l))
        .collect();
        let got: Vec<&str> = o
            .stdout_lines()
            .into_iter()
            .filter(|l| t == Target::Hvt || !timing(l))
            .collect();
        assert_eq!(got, want, "exit code {}; stderr:\n{}", o.code, o.stderr);
        assert_eq!(o.code, 0, "stderr:\n{}", o.stderr);
    }

    /// Two threads each sleeping 200 ms must overlap: nanosleep blocks only
    /// its caller. (A generous bound: the point is 200 vs 400 ms.)
    fn threads_sleep_concurrently(t) on [hvt, kvm, xen] {
        let o = run(t, "syscalls", &["parallel-sleep"]);
        assert_lines(&o, &["two 200 ms sleeps overlapped: true"]);
        assert_eq!(o.code, 0, "stderr:\n{}", o.stderr);
    }
}
