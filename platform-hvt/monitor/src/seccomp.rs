//! The monitor's seccomp filter (docs/security.md). Installed once setup is
//! done (the image read, guest memory mapped, the devices opened, passt
//! started, gdb connected) and before the guest's first instruction, on every
//! thread of the monitor at once (TSYNC; threads started later inherit it).
//! It allows exactly the host calls the run loop, the timer thread, the
//! network and block I/O threads and the gdb reader make; anything else
//! kills the whole monitor (`SECCOMP_RET_KILL_PROCESS`, the shell sees
//! SIGSYS: exit 159).
//!
//! The threads started after it (the timer, the profiler's sampler, the
//! device I/O threads) each narrow their own set further as their first
//! step ([`narrow`], a second filter stacked on the first): none of them may
//! touch KVM (`ioctl`), change its filters or start threads, only the
//! network thread (which stops passt) may signal or reap a process, and
//! each loses the I/O calls of the others (a disk thread cannot send on a
//! socket, the network thread cannot read a disk, the timer does no I/O
//! but its panic message).
//!
//! How the list was made, and how to update it when a device needs a new
//! call: docs/security.md.
use std::collections::BTreeMap;
use std::sync::OnceLock;

use seccompiler::{
    apply_filter_all_threads, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp,
    SeccompCondition, SeccompFilter, SeccompRule, TargetArch,
};

/// Calls allowed whatever their arguments. Everything that opens, creates,
/// maps files, executes or changes credentials is missing on purpose:
/// `openat`, `socket`, `connect`, `bind`, `execve`, `ptrace`, `mount`...
const ALLOWED: &[i64] = &[
    // Console, stdin, the network backend (tap, passt's socket), the pcap
    // file, the disks, gdb's socket, eventfds.
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_recvfrom,
    libc::SYS_sendto,
    libc::SYS_recvmsg,
    libc::SYS_sendmsg,
    libc::SYS_shutdown,
    libc::SYS_close,
    libc::SYS_lseek,
    libc::SYS_fstat,
    libc::SYS_fdatasync,
    libc::SYS_fsync,
    // Waiting.
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_futex,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_clock_gettime,
    libc::SYS_sched_yield,
    // The kick signal (timer, Ctrl-C, gdb) and its handlers.
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_tgkill,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_sigaltstack,
    // Memory of the monitor itself (the allocator, thread stacks).
    libc::SYS_mmap,
    libc::SYS_mprotect,
    libc::SYS_munmap,
    libc::SYS_madvise,
    libc::SYS_mremap,
    libc::SYS_brk,
    // Threads started after setup (the timer, the device I/O threads).
    libc::SYS_clone3,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_sched_getaffinity,
    libc::SYS_exit,
    // Hash maps' random seeds (the profiler's).
    libc::SYS_getrandom,
    // The end: stopping passt, exiting.
    libc::SYS_kill,
    libc::SYS_wait4,
    libc::SYS_exit_group,
];

/// `ioctl` requests allowed (on any fd; KVM refuses them on other fds):
/// the run loop's.
const IOCTLS: &[(u64, &str)] = &[
    (0xae80, "KVM_RUN"),
    (0x4004_ae86, "KVM_INTERRUPT"),
    (0x8090_ae81, "KVM_GET_REGS"),
    (0x4090_ae82, "KVM_SET_REGS"),
    (0x8138_ae83, "KVM_GET_SREGS"),
];

/// `prctl` options allowed: the timer thread's slack, a thread's name, and
/// no-new-privileges (set already; [`narrow`] sets it again before it
/// stacks a filter, and it can only ever be turned on).
const PRCTLS: &[u64] = &[
    libc::PR_SET_TIMERSLACK as u64,
    libc::PR_SET_NAME as u64,
    libc::PR_SET_NO_NEW_PRIVS as u64,
];

/// `seccomp(SECCOMP_SET_MODE_FILTER, 0, ...)`: a thread adding a filter to
/// itself only ([`narrow`]); filters only ever add restrictions, and TSYNC
/// or any other flag stays forbidden.
const SECCOMP_SET_MODE_FILTER: u64 = 1;

/// A thread started after [`install`], which narrows its own calls with
/// [`narrow`] as its first step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// The timer thread: sleeps and kicks the vCPU thread.
    Timer,
    /// The profiler's sampler (`--profile`): the same.
    Sampler,
    /// A disk's I/O thread: reads and writes its file, its eventfd.
    BlockIo,
    /// The network I/O thread: the tap or passt socket, the pcap file.
    NetIo,
}

const ROLES: [Role; 4] = [Role::Timer, Role::Sampler, Role::BlockIo, Role::NetIo];

/// Calls of the process-wide list that a thread of `role` never makes.
pub fn denied(role: Role) -> Vec<i64> {
    // Only the vCPU thread touches KVM, changes filters or names and
    // starts threads; only it and the network thread (which owns passt and
    // stops it when it ends) signal and reap processes.
    let mut v = vec![
        libc::SYS_ioctl,
        libc::SYS_seccomp,
        libc::SYS_prctl,
        libc::SYS_clone3,
    ];
    let processes = [libc::SYS_kill, libc::SYS_wait4];
    let disk = [
        libc::SYS_pread64,
        libc::SYS_pwrite64,
        libc::SYS_preadv,
        libc::SYS_pwritev,
        libc::SYS_fdatasync,
        libc::SYS_fsync,
        libc::SYS_lseek,
    ];
    let socket = [
        libc::SYS_recvfrom,
        libc::SYS_sendto,
        libc::SYS_recvmsg,
        libc::SYS_sendmsg,
        libc::SYS_shutdown,
    ];
    match role {
        // `write` stays: a panic message.
        Role::Timer | Role::Sampler => {
            v.extend(processes);
            v.extend(disk);
            v.extend(socket);
            v.extend([libc::SYS_read, libc::SYS_readv, libc::SYS_writev]);
        }
        Role::BlockIo => {
            v.extend(processes);
            v.extend(socket);
        }
        Role::NetIo => v.extend(disk),
    }
    v
}

/// The per-thread filters, compiled by [`install`] (none when the
/// process-wide filter is off: `--no-seccomp`).
static THREAD_FILTERS: OnceLock<BTreeMap<Role, BpfProgram>> = OnceLock::new();

fn thread_program(role: Role) -> Result<BpfProgram, String> {
    let rules = denied(role)
        .into_iter()
        .map(|nr| (nr, Vec::new()))
        .collect();
    compile(rules, SeccompAction::Allow, SeccompAction::KillProcess)
}

/// Compiles `rules` to BPF: calls no rule matches get `mismatch`, the
/// others `on_match`.
fn compile(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    mismatch: SeccompAction,
    on_match: SeccompAction,
) -> Result<BpfProgram, String> {
    let filter = SeccompFilter::new(rules, mismatch, on_match, TargetArch::x86_64)
        .map_err(|e| e.to_string())?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| e.to_string())
}

/// Stacks the filter of `role` on the calling thread (and the threads it
/// would start). Nothing when the process-wide filter is not installed.
/// A failure is reported and the monitor exits: a thread that was meant
/// to run narrowed does not run wide.
pub fn narrow(role: Role) {
    let Some(filters) = THREAD_FILTERS.get() else {
        return;
    };
    if let Err(e) = seccompiler::apply_filter(&filters[&role]) {
        eprintln!("unikernel-hvt: cannot narrow the seccomp filter of the {role:?} thread: {e}");
        std::process::exit(crate::exit::EXIT_SETUP_FAILED);
    }
}

fn equal(arg: u8, value: u64) -> Result<SeccompRule, String> {
    let c = SeccompCondition::new(arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value)
        .map_err(|e| e.to_string())?;
    SeccompRule::new(vec![c]).map_err(|e| e.to_string())
}

/// The filter, compiled to BPF.
pub fn program() -> Result<BpfProgram, String> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for &nr in ALLOWED {
        // No rule: allowed with any arguments.
        rules.insert(nr, Vec::new());
    }
    let ioctls = IOCTLS.iter().map(|&(req, _)| equal(1, req));
    rules.insert(libc::SYS_ioctl, ioctls.collect::<Result<_, _>>()?);
    let prctls = PRCTLS.iter().map(|&op| equal(0, op));
    rules.insert(libc::SYS_prctl, prctls.collect::<Result<_, _>>()?);
    let filter_only = |arg: u8, v: u64| {
        SeccompCondition::new(arg, SeccompCmpArgLen::Qword, SeccompCmpOp::Eq, v)
            .map_err(|e| e.to_string())
    };
    rules.insert(
        libc::SYS_seccomp,
        vec![SeccompRule::new(vec![
            filter_only(0, SECCOMP_SET_MODE_FILTER)?,
            filter_only(1, 0)?,
        ])
        .map_err(|e| e.to_string())?],
    );
    compile(rules, SeccompAction::KillProcess, SeccompAction::Allow)
}

/// Installs the filter on every thread of the process, and compiles the
/// filters later threads narrow themselves with.
pub fn install() -> Result<(), String> {
    let program = program()?;
    let threads = ROLES
        .iter()
        .map(|&r| thread_program(r).map(|p| (r, p)))
        .collect::<Result<BTreeMap<_, _>, _>>()?;
    apply_filter_all_threads(&program)
        .map_err(|e| format!("cannot install the seccomp filter: {e}"))?;
    let _ = THREAD_FILTERS.set(threads);
    Ok(())
}

/// `--seccomp-check`: a call the filter forbids, after it is installed. The
/// monitor dies of SIGSYS here; returning means the filter is not live.
pub fn check() -> ! {
    // SAFETY: a plain openat of a constant, NUL-terminated path; its result
    // is only printed.
    let fd = unsafe {
        libc::openat(
            libc::AT_FDCWD,
            c"/proc/self/status".as_ptr(),
            libc::O_RDONLY,
        )
    };
    eprintln!("unikernel-hvt: --seccomp-check: openat was not stopped by the filter (fd {fd})");
    std::process::exit(crate::exit::EXIT_GUEST_CRASHED);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_compiles_and_lists_no_opening_call() {
        let p = program().unwrap();
        assert!(p.len() > ALLOWED.len(), "one check per call at least");
        for nr in [
            libc::SYS_openat,
            libc::SYS_open,
            libc::SYS_execve,
            libc::SYS_socket,
            libc::SYS_connect,
            libc::SYS_ptrace,
            libc::SYS_fork,
            libc::SYS_clone,
        ] {
            assert!(!ALLOWED.contains(&nr), "{nr} must not be allowed");
        }
    }

    #[test]
    fn thread_filters_compile_and_take_kvm_from_every_thread() {
        for role in ROLES {
            assert!(thread_program(role).unwrap().len() > 6);
            let d = denied(role);
            for nr in [libc::SYS_ioctl, libc::SYS_clone3, libc::SYS_seccomp] {
                assert!(d.contains(&nr), "{role:?} must not call {nr}");
            }
            // Each denied call is one the process-wide list allows (else
            // the entry is dead and hides a mistake).
            for nr in d {
                assert!(
                    ALLOWED.contains(&nr)
                        || [libc::SYS_ioctl, libc::SYS_prctl, libc::SYS_seccomp].contains(&nr),
                    "{role:?}: {nr} is not in the process-wide list"
                );
            }
        }
        assert!(denied(Role::BlockIo).contains(&libc::SYS_sendmsg));
        assert!(!denied(Role::BlockIo).contains(&libc::SYS_pwrite64));
        assert!(denied(Role::NetIo).contains(&libc::SYS_pwrite64));
        assert!(!denied(Role::NetIo).contains(&libc::SYS_sendmsg));
        assert!(denied(Role::Timer).contains(&libc::SYS_kill));
        assert!(!denied(Role::NetIo).contains(&libc::SYS_kill));
    }
}
