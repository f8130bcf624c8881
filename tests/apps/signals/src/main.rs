//! Signals and fatal faults, one case per subcommand:
//!   overflow      a named thread ("deep") overflows its stack: std's guard
//!                 page handler reports it and aborts (exit 134)
//!   segv-handler  a SIGSEGV handler (SA_SIGINFO) sees si_addr and _exits 42
//!   raise         SIGUSR1 handlers run for raise(), kill(getpid()), and a
//!                 blocked-then-unblocked pending signal; exit 0
//!   abort         std::process::abort() (exit 134)

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};

/// Recurse forever; the stack array keeps each frame big and alive so this
/// is neither a loop nor a tail call.
#[inline(never)]
#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    let mut frame = [0u8; 1024];
    frame[(depth % 1024) as usize] = depth as u8;
    black_box(&mut frame);
    recurse(depth + 1) + frame[0] as u64
}

fn overflow() {
    println!("overflowing the stack of thread 'deep'");
    let h = std::thread::Builder::new()
        .name("deep".into())
        .stack_size(256 * 1024)
        .spawn(|| recurse(0))
        .unwrap();
    let r = h.join();
    // Not reached: the overflow aborts the process.
    println!("join returned {:?}", r.is_ok());
}

const FAULT_ADDR: usize = 0x1000;

/// Writes "caught SIGSEGV at 0x<si_addr>\n" with async-signal-safe calls only.
extern "C" fn on_segv(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    let addr = unsafe { (*info).si_addr() } as usize;
    let mut buf = [0u8; 64];
    let prefix = b"caught SIGSEGV at 0x";
    buf[..prefix.len()].copy_from_slice(prefix);
    let mut n = prefix.len();
    let digits = if addr == 0 {
        1
    } else {
        (usize::BITS - addr.leading_zeros()).div_ceil(4) as usize
    };
    for i in (0..digits).rev() {
        buf[n] = b"0123456789abcdef"[(addr >> (i * 4)) & 0xf];
        n += 1;
    }
    buf[n] = b'\n';
    n += 1;
    unsafe {
        libc::write(1, buf.as_ptr().cast(), n);
        libc::_exit(42);
    }
}

fn segv_handler() {
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_segv as *const () as libc::sighandler_t;
        sa.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGSEGV, &sa, std::ptr::null_mut()), 0);
    }
    println!("reading address {FAULT_ADDR:#x}");
    let v = unsafe { std::ptr::read_volatile(FAULT_ADDR as *const u8) };
    // Not reached: the handler exits.
    println!("read {v} without a fault");
}

static RAN: AtomicBool = AtomicBool::new(false);
static COUNT: AtomicUsize = AtomicUsize::new(0);
static SIGNO: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_usr1(sig: libc::c_int) {
    SIGNO.store(sig as usize, SeqCst);
    COUNT.fetch_add(1, SeqCst);
    RAN.store(true, SeqCst);
}

fn mask(how: libc::c_int, sig: libc::c_int) {
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        assert_eq!(libc::pthread_sigmask(how, &set, std::ptr::null_mut()), 0);
    }
}

fn raise() {
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_usr1 as *const () as libc::sighandler_t;
        sa.sa_flags = 0;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()), 0);

        assert_eq!(libc::raise(libc::SIGUSR1), 0);
        println!("raise: handler ran: {}", RAN.swap(false, SeqCst));

        assert_eq!(libc::kill(libc::getpid(), libc::SIGUSR1), 0);
        println!("kill: handler ran: {}", RAN.swap(false, SeqCst));

        // Blocked: the signal stays pending until unblocked.
        mask(libc::SIG_BLOCK, libc::SIGUSR1);
        assert_eq!(libc::raise(libc::SIGUSR1), 0);
        let mut pending: libc::sigset_t = std::mem::zeroed();
        libc::sigpending(&mut pending);
        let is_pending = libc::sigismember(&pending, libc::SIGUSR1) == 1;
        println!(
            "blocked: handler ran: {}, pending: {is_pending}",
            RAN.load(SeqCst)
        );
        mask(libc::SIG_UNBLOCK, libc::SIGUSR1);
        println!("unblocked: handler ran: {}", RAN.swap(false, SeqCst));

        // SIG_IGN: raising an ignored signal does nothing.
        assert_ne!(libc::signal(libc::SIGUSR2, libc::SIG_IGN), libc::SIG_ERR);
        assert_eq!(libc::raise(libc::SIGUSR2), 0);
    }
    println!("ignored SIGUSR2: still alive");
    println!(
        "handler calls: {}, signal number {}",
        COUNT.load(SeqCst),
        SIGNO.load(SeqCst)
    );
}

fn main() {
    let cmd = std::env::args().nth(1).unwrap_or_default();
    match cmd.as_str() {
        "overflow" => overflow(),
        "segv-handler" => segv_handler(),
        "raise" => raise(),
        "abort" => {
            println!("aborting");
            std::process::abort();
        }
        _ => {
            eprintln!("usage: signals overflow|segv-handler|raise|abort");
            std::process::exit(2);
        }
    }
}
