//! The system-call layer: Linux x86_64 numbers, dispatched to the handlers
//! in this folder. Unknown calls return `-ENOSYS` and are counted;
//! `--trace-syscalls` prints every call strace-style on stderr.

mod fdctl;
mod fs;
mod ipc;
mod mem;
mod names;
mod path;
mod poll;
mod process;
mod signal;
mod time;

use crate::errno::*;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

pub use mem::flush_shared_mappings;
pub use names::name;

/// What the entry stub saved: every app register. `rax` holds the call
/// number on entry and the result on return; `rcx` is the app's RIP and
/// `r11` its RFLAGS (as `syscall` left them); `user_rsp` its stack pointer.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct SyscallFrame {
    pub rax: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub r10: u64,
    pub r8: u64,
    pub r9: u64,
    pub rcx: u64,
    pub r11: u64,
    pub rbx: u64,
    pub rbp: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub user_rsp: u64,
}

pub type SysResult = Result<i64, Errno>;

static TRACE: AtomicBool = AtomicBool::new(false);
const COUNTED: usize = 512;
static UNKNOWN: [AtomicU32; COUNTED] = [const { AtomicU32::new(0) }; COUNTED];

pub fn set_trace(on: bool) {
    TRACE.store(on, Ordering::Relaxed);
}

pub fn tracing() -> bool {
    TRACE.load(Ordering::Relaxed)
}

/// Called by the entry stub; the result goes into `f.rax`. Before the app
/// continues: deferred interrupts (a tick: maybe another thread's turn)
/// and pending signals (the frame may be redirected to a handler).
#[no_mangle]
pub extern "C" fn unikernel_syscall_dispatch(f: &mut SyscallFrame) {
    let nr = f.rax;
    let a = [f.rdi, f.rsi, f.rdx, f.r10, f.r8, f.r9];
    if tracing() && names::is_exit(nr) {
        trace(nr, &a, None);
    }
    let r = match nr {
        // The calls that need the whole frame.
        15 => crate::signal::rt_sigreturn(f),
        56 => process::clone(f, a[0], a[1], a[2], a[3], a[4]),
        131 => crate::signal::sigaltstack(a[0], a[1], f.user_rsp),
        _ => dispatch(nr, a),
    };
    let ret = match r {
        Ok(v) => v,
        Err(e) => -e,
    };
    if tracing() {
        trace(nr, &a, Some(ret));
    }
    f.rax = ret as u64;
    crate::sched::safe_point();
    crate::signal::deliver_at_syscall_exit(f);
}

fn trace(nr: u64, a: &[u64; 6], ret: Option<i64>) {
    let n = names::arg_count(nr);
    let mut args = [0u64; 6];
    args[..n].copy_from_slice(&a[..n]);
    let nm = name(nr);
    let mut line = crate::fmtbuf::FmtBuf::<160>::new();
    use core::fmt::Write;
    if nm.is_empty() {
        let _ = write!(line, "syscall_{nr}(");
    } else {
        let _ = write!(line, "{nm}(");
    }
    for (i, v) in args[..n].iter().enumerate() {
        let sep = if i == 0 { "" } else { ", " };
        if (*v as i64) < 0 && (*v as i64) > -4096 {
            let _ = write!(line, "{sep}{}", *v as i64);
        } else if *v < 4096 {
            let _ = write!(line, "{sep}{v}");
        } else {
            let _ = write!(line, "{sep}{v:#x}");
        }
    }
    match ret {
        None => crate::kprintln!("[trace] {})", line.as_str()),
        Some(r) if (-4095..0).contains(&r) => {
            let note = if r == -ENOSYS && names::arg_count(nr) == 6 && nm.is_empty() {
                " (unknown)"
            } else if r == -ENOSYS {
                " (not implemented)"
            } else {
                ""
            };
            crate::kprintln!(
                "[trace] {}) = -1 {}{}",
                line.as_str(),
                errno::name(-r),
                note
            )
        }
        Some(r) if r > 0xffff => crate::kprintln!("[trace] {}) = {:#x}", line.as_str(), r),
        Some(r) => crate::kprintln!("[trace] {}) = {}", line.as_str(), r),
    }
}

use crate::errno;

/// Numbers beyond the table: (number, count) in a few slots.
static UNKNOWN_HIGH: spin::Mutex<[(u64, u32); 8]> = spin::Mutex::new([(0, 0); 8]);

fn enosys(nr: u64) -> SysResult {
    if let Some(c) = UNKNOWN.get(nr as usize) {
        c.fetch_add(1, Ordering::Relaxed);
    } else {
        let mut h = UNKNOWN_HIGH.lock();
        if let Some(slot) = h.iter_mut().find(|(n, c)| *n == nr || *c == 0) {
            *slot = (nr, slot.1 + 1);
        }
    }
    Err(ENOSYS)
}

/// Print the unimplemented calls the app made (with `--trace-syscalls`).
pub fn report_unknown() {
    let mut any = false;
    let high = *UNKNOWN_HIGH.lock();
    let low = UNKNOWN
        .iter()
        .enumerate()
        .map(|(nr, c)| (nr as u64, c.load(Ordering::Relaxed)));
    for (nr, c) in low.chain(high.into_iter().filter(|(_, c)| *c > 0)) {
        if c > 0 {
            if !any {
                crate::kprintln!("[trace] system calls answered ENOSYS:");
                any = true;
            }
            let nm = name(nr);
            crate::kprintln!(
                "[trace]   {} ({}): {} time(s)",
                if nm.is_empty() { "?" } else { nm },
                nr,
                c
            );
        }
    }
}

fn dispatch(nr: u64, a: [u64; 6]) -> SysResult {
    match nr {
        0 => fs::read(a[0], a[1], a[2]),
        1 => fs::write(a[0], a[1], a[2]),
        2 => path::openat(fs::AT_FDCWD, a[0], a[1], a[2]),
        3 => fs::close(a[0]),
        4 => path::stat_path(fs::AT_FDCWD, a[0], a[1], 0),
        5 => fs::fstat(a[0], a[1]),
        6 => path::stat_path(fs::AT_FDCWD, a[0], a[1], fs::AT_SYMLINK_NOFOLLOW),
        7 => poll::poll(a[0], a[1], a[2]),
        8 => fs::lseek(a[0], a[1], a[2]),
        9 => mem::mmap(a[0], a[1], a[2], a[3], a[4], a[5]),
        10 => mem::mprotect(a[0], a[1], a[2]),
        149 => mem::mlock(a[0], a[1], 0),
        150 => mem::munlock(a[0], a[1]),
        151 => mem::mlockall(a[0]),
        152 => mem::munlockall(),
        325 => mem::mlock(a[0], a[1], a[2]),
        11 => mem::munmap(a[0], a[1]),
        12 => mem::brk(a[0]),
        13 => crate::signal::rt_sigaction(a[0], a[1], a[2], a[3]),
        14 => crate::signal::rt_sigprocmask(a[0], a[1], a[2], a[3]),
        16 => fdctl::ioctl(a[0], a[1], a[2]),
        17 => fs::pread64(a[0], a[1], a[2], a[3]),
        18 => fs::pwrite64(a[0], a[1], a[2], a[3]),
        19 => fs::readv(a[0], a[1], a[2]),
        20 => fs::writev(a[0], a[1], a[2]),
        21 => path::faccessat(fs::AT_FDCWD, a[0], a[1], 0),
        26 => mem::msync(a[0], a[1], a[2]),
        22 => ipc::pipe2(a[0], 0),
        23 => poll::select(a[0], a[1], a[2], a[3], a[4]),
        24 => {
            crate::sched::yield_now();
            Ok(0)
        }
        25 => mem::mremap(a[0], a[1], a[2], a[3], a[4]),
        28 => mem::madvise(a[0], a[1], a[2]),
        32 => fdctl::dup(a[0]),
        33 => fdctl::dup3(a[0], a[1], 0, true),
        35 => time::nanosleep(a[0], a[1]),
        34 => process::pause(),
        39 => Ok(process::PID),
        41 => ipc::socket(a[0], a[1], a[2]),
        44 => ipc::sendto(a[0], a[1], a[2], a[3], a[4], a[5]),
        45 => ipc::recvfrom(a[0], a[1], a[2], a[3], a[4], a[5]),
        46 => ipc::sendmsg(a[0], a[1], a[2]),
        47 => ipc::recvmsg(a[0], a[1], a[2]),
        48 => ipc::shutdown(a[0], a[1]),
        42 => ipc::connect(a[0], a[1], a[2]),
        43 => ipc::accept4(a[0], a[1], a[2], 0),
        49 => ipc::bind(a[0], a[1], a[2]),
        50 => ipc::listen(a[0], a[1]),
        51 => ipc::getsockname(a[0], a[1], a[2], false),
        52 => ipc::getsockname(a[0], a[1], a[2], true),
        53 => ipc::socketpair(a[0], a[1], a[2], a[3]),
        54 => ipc::setsockopt(a[0], a[1], a[2], a[3], a[4]),
        55 => ipc::getsockopt(a[0], a[1], a[2], a[3], a[4]),
        57 | 58 => Err(ENOSYS), // fork, vfork: one process
        186 => Ok(crate::sched::current_tid() as i64),
        60 => crate::sched::exit_thread(a[0] as u32 & 0xff),
        231 => process::exit(a[0]),
        62 => signal::kill(a[0], a[1]),
        200 => signal::tkill(a[0], a[1]),
        63 => process::uname(a[0]),
        72 => fdctl::fcntl(a[0], a[1], a[2]),
        73 => fdctl::flock(a[0], a[1]),
        74 => fdctl::fsync(a[0], false),
        75 => fdctl::fsync(a[0], true),
        76 => path::truncate(a[0], a[1]),
        77 => fdctl::ftruncate(a[0], a[1]),
        79 => path::getcwd(a[0], a[1]),
        80 => path::chdir(a[0]),
        81 => path::fchdir(a[0]),
        82 => path::renameat2(fs::AT_FDCWD, a[0], fs::AT_FDCWD, a[1], 0),
        83 => path::mkdirat(fs::AT_FDCWD, a[0], a[1]),
        84 => path::unlinkat(fs::AT_FDCWD, a[0], 0x200),
        85 => path::creat(a[0], a[1]),
        86 => path::linkat(fs::AT_FDCWD, a[0], fs::AT_FDCWD, a[1], 0),
        87 => path::unlinkat(fs::AT_FDCWD, a[0], 0),
        88 => path::symlinkat(a[0], fs::AT_FDCWD, a[1]),
        89 => path::readlinkat(fs::AT_FDCWD, a[0], a[1], a[2]),
        90 => path::fchmodat(fs::AT_FDCWD, a[0], a[1], 0),
        91 => fdctl::fchmod(a[0], a[1]),
        95 => process::umask(a[0]),
        96 => time::gettimeofday(a[0], a[1]),
        97 => process::prlimit64(0, a[0], 0, a[1]),
        98 => process::getrusage(a[0], a[1]),
        99 => process::sysinfo(a[0]),
        102 | 104 | 107 | 108 => Ok(0), // getuid, getgid, geteuid, getegid: root
        110 => Ok(0),                   // getppid: no parent
        111 | 112 => Ok(process::PID),  // getpgrp, setsid
        157 => process::prctl(a[0], a[1]),
        158 => process::arch_prctl(a[0], a[1]),
        160 => Ok(0), // setrlimit: accepted
        127 => crate::signal::rt_sigpending(a[0], a[1]),
        137 => path::statfs(a[0], a[1]),
        138 => fdctl::fstatfs(a[0], a[1]),
        162 => fdctl::sync(),
        201 => time::time(a[0]),
        202 => crate::sched::futex::futex(a[0], a[1], a[2], a[3], a[4], a[5]),
        204 => process::sched_getaffinity(a[0], a[1], a[2]),
        217 => fs::getdents64(a[0], a[1], a[2]),
        218 => process::set_tid_address(a[0]),
        228 => time::clock_gettime(a[0], a[1]),
        229 => time::clock_getres(a[0], a[1]),
        230 => time::clock_nanosleep(a[0], a[1], a[2], a[3]),
        234 => signal::tgkill(a[0], a[1], a[2]),
        257 => path::openat(a[0] as i64, a[1], a[2], a[3]),
        258 => path::mkdirat(a[0] as i64, a[1], a[2]),
        263 => path::unlinkat(a[0] as i64, a[1], a[2]),
        264 => path::renameat2(a[0] as i64, a[1], a[2] as i64, a[3], 0),
        265 => path::linkat(a[0] as i64, a[1], a[2] as i64, a[3], a[4]),
        266 => path::symlinkat(a[0], a[1] as i64, a[2]),
        268 => path::fchmodat(a[0] as i64, a[1], a[2], 0),
        280 => path::utimensat(a[0] as i64, a[1], a[2], a[3]),
        285 => fdctl::fallocate(a[0], a[1], a[2], a[3]),
        295 => fs::preadv(a[0], a[1], a[2], a[3], 0, false),
        296 => fs::pwritev(a[0], a[1], a[2], a[3], 0, false),
        306 => fdctl::syncfs(a[0]),
        316 => path::renameat2(a[0] as i64, a[1], a[2] as i64, a[3], a[4]),
        327 => fs::preadv(a[0], a[1], a[2], a[3], a[5], true),
        328 => fs::pwritev(a[0], a[1], a[2], a[3], a[5], true),
        332 => path::statx(a[0] as i64, a[1], a[2], a[3], a[4]),
        452 => path::fchmodat(a[0] as i64, a[1], a[2], a[3]),
        262 => path::stat_path(a[0] as i64, a[1], a[2], a[3]),
        267 => path::readlinkat(a[0] as i64, a[1], a[2], a[3]),
        269 => path::faccessat(a[0] as i64, a[1], a[2], 0),
        439 => path::faccessat(a[0] as i64, a[1], a[2], a[3]),
        232 => poll::epoll_wait(a[0], a[1], a[2], a[3]),
        233 => poll::epoll_ctl(a[0], a[1], a[2], a[3]),
        270 => poll::pselect6(a[0], a[1], a[2], a[3], a[4]),
        271 => poll::ppoll(a[0], a[1], a[2], a[3]),
        281 => poll::epoll_wait(a[0], a[1], a[2], a[3]),
        284 => ipc::eventfd2(a[0], 0),
        288 => ipc::accept4(a[0], a[1], a[2], a[3]),
        290 => ipc::eventfd2(a[0], a[1]),
        291 => poll::epoll_create1(a[0]),
        213 => poll::epoll_create1(0),
        273 => Ok(0), // set_robust_list: accepted (robust mutexes are not recovered)
        292 => fdctl::dup3(a[0], a[1], a[2], false),
        293 => ipc::pipe2(a[0], a[1]),
        302 => process::prlimit64(a[0], a[1], a[2], a[3]),
        318 => process::getrandom(a[0], a[1], a[2]),
        _ => enosys(nr),
    }
}
