//! `cargo unikernel run` for kvm images: start QEMU, relay the guest's
//! console (COM1 -> stdout with the exit line taken out, COM2 and QEMU's own
//! messages -> stderr, our stdin -> the guest's COM1 input), and turn the
//! guest's exit into our exit code. Ctrl-C or `--timeout` kills QEMU.
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::console::{exit_without_line, ExitLineFilter};
use crate::vmm::QemuConfig;

/// Exit code after `--timeout` killed QEMU (as GNU `timeout`).
pub const EXIT_TIMEOUT: u8 = 124;
/// Exit code after Ctrl-C (128 + SIGINT).
pub const EXIT_INTERRUPTED: u8 = 130;
/// Exit code when QEMU could not be started at all.
pub const EXIT_SETUP_FAILED: u8 = 125;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn catch_sigint() {
    // SAFETY: installs a handler that only stores to an atomic, which is
    // async-signal-safe; the sigaction struct is fully initialized.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigint as *const () as usize;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGINT, &action, std::ptr::null_mut());
    }
}

/// SIGINT or SIGTERM got while a child monitor ran (0: none).
static CAUGHT: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn on_stop_signal(sig: libc::c_int) {
    CAUGHT.store(sig, Ordering::SeqCst);
}

/// Catches SIGINT and SIGTERM for [`take_interrupt_signal`] (so that this
/// process outlives its child and reports after it).
pub fn install_interrupt_handlers() {
    // SAFETY: installs a handler that only stores to an atomic, which is
    // async-signal-safe; the sigaction struct is fully initialized.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_stop_signal as *const () as usize;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGINT, &action, std::ptr::null_mut());
        libc::sigaction(libc::SIGTERM, &action, std::ptr::null_mut());
    }
}

/// The SIGINT or SIGTERM caught since the last call, if any.
pub fn take_interrupt_signal() -> Option<libc::c_int> {
    Some(CAUGHT.swap(0, Ordering::SeqCst)).filter(|&s| s != 0)
}

fn kill(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) on the pid of our own child, which we have not reaped
    // yet (the waiter thread has not reported its exit), so it is still ours.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

/// Boot the image under QEMU and return the exit code for our process.
pub fn run(config: &QemuConfig, timeout: Option<Duration>) -> u8 {
    use std::os::unix::process::CommandExt;
    catch_sigint();
    let mut cmd = Command::new(&config.qemu);
    cmd.args(config.args())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // QEMU dies with us: a `cargo unikernel run` killed by SIGKILL (a test
    // harness's timeout, a CI job cancelled) must not leave the VM running.
    // SAFETY: prctl is async-signal-safe and touches only the child; nothing
    // else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: cannot start {}: {e}", config.qemu.display());
            return EXIT_SETUP_FAILED;
        }
    };
    let pid = child.id();
    let (Some(mut stdin), Some(mut stdout), Some(mut stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        unreachable!("all three were piped");
    };
    // Our stdin -> the guest's COM1 input. Never joined: it may block on a
    // terminal read after the guest is gone.
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut input = std::io::stdin().lock();
        while let Ok(n) = input.read(&mut buf) {
            if n == 0 || stdin.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    let err_relay = thread::spawn(move || {
        // q35: the guest's stderr (its second UART) comes this way.
        let mut watch = crate::symbolize::CrashWatch::default();
        let mut buf = [0u8; 4096];
        let mut err = std::io::stderr();
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            watch.feed(&buf[..n]);
            let _ = err.write_all(&buf[..n]);
        }
        watch.publish();
    });
    let out_relay = thread::spawn(move || {
        let mut filter = ExitLineFilter::default();
        let mut watch = crate::symbolize::CrashWatch::default();
        let mut buf = [0u8; 4096];
        let mut out = std::io::stdout();
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            watch.feed(&buf[..n]);
            filter.feed(&buf[..n], &mut out);
        }
        watch.publish();
        filter.finish(&mut out)
    });
    let (done_tx, done_rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = done_tx.send(child.wait());
    });

    let start = Instant::now();
    let mut stopped_by: Option<(u8, String)> = None;
    let mut stopped_at = start;
    let status = loop {
        match done_rx.recv_timeout(Duration::from_millis(20)) {
            Ok(status) => break status.ok(),
            Err(mpsc::RecvTimeoutError::Disconnected) => break None,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        let why = if INTERRUPTED.load(Ordering::SeqCst) {
            Some((EXIT_INTERRUPTED, "interrupted: QEMU killed".to_string()))
        } else if timeout.is_some_and(|t| start.elapsed() >= t) {
            let secs = timeout.map_or(0.0, |t| t.as_secs_f64());
            Some((
                EXIT_TIMEOUT,
                format!("the guest did not exit within {secs} s (--timeout): QEMU killed"),
            ))
        } else {
            None
        };
        if let Some(why) = why {
            if stopped_by.is_none() {
                // SIGTERM lets QEMU restore the terminal; SIGKILL if it lingers.
                kill(pid, libc::SIGTERM);
                stopped_by = Some(why);
                stopped_at = Instant::now();
            } else if stopped_at.elapsed() > Duration::from_secs(2) {
                kill(pid, libc::SIGKILL);
            }
        }
    };
    let line_code = out_relay.join().ok().flatten();
    let _ = err_relay.join();
    if let Some((code, msg)) = stopped_by {
        eprintln!("cargo-unikernel: {msg}");
        return code;
    }
    if let Some(code) = line_code {
        return code;
    }
    if let Some(signal) = status.and_then(|s| std::os::unix::process::ExitStatusExt::signal(&s)) {
        eprintln!(
            "cargo-unikernel: the guest stopped without an exit line: QEMU was killed by signal {signal}"
        );
        return 255;
    }
    let (code, msg) = exit_without_line(status.and_then(|s| s.code()));
    if !msg.is_empty() {
        eprintln!("cargo-unikernel: {msg}");
    }
    code
}
