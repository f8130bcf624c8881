//! Names and argument counts of Linux x86_64 system calls, for tracing.

/// (number, name, argument count)
const TABLE: &[(u64, &str, u8)] = &[
    (0, "read", 3), (1, "write", 3), (2, "open", 3), (3, "close", 1), (4, "stat", 2),
    (5, "fstat", 2), (6, "lstat", 2), (7, "poll", 3), (8, "lseek", 3), (9, "mmap", 6),
    (10, "mprotect", 3), (11, "munmap", 2), (12, "brk", 1), (13, "rt_sigaction", 4),
    (14, "rt_sigprocmask", 4), (15, "rt_sigreturn", 0), (16, "ioctl", 3), (17, "pread64", 4),
    (18, "pwrite64", 4), (19, "readv", 3), (20, "writev", 3), (21, "access", 2), (22, "pipe", 1),
    (23, "select", 5), (24, "sched_yield", 0), (25, "mremap", 5), (26, "msync", 3),
    (27, "mincore", 3), (28, "madvise", 3), (32, "dup", 1), (33, "dup2", 2), (34, "pause", 0),
    (35, "nanosleep", 2), (37, "alarm", 1), (38, "setitimer", 3), (39, "getpid", 0),
    (40, "sendfile", 4), (41, "socket", 3), (42, "connect", 3), (43, "accept", 3),
    (44, "sendto", 6), (45, "recvfrom", 6), (46, "sendmsg", 3), (47, "recvmsg", 3),
    (48, "shutdown", 2), (49, "bind", 3), (50, "listen", 2), (51, "getsockname", 3),
    (52, "getpeername", 3), (53, "socketpair", 4), (54, "setsockopt", 5), (55, "getsockopt", 5),
    (56, "clone", 5), (57, "fork", 0), (58, "vfork", 0), (59, "execve", 3), (60, "exit", 1),
    (61, "wait4", 4), (62, "kill", 2), (63, "uname", 1), (72, "fcntl", 3), (73, "flock", 2),
    (74, "fsync", 1), (75, "fdatasync", 1), (76, "truncate", 2), (77, "ftruncate", 2),
    (78, "getdents", 3), (79, "getcwd", 2), (80, "chdir", 1), (81, "fchdir", 1), (82, "rename", 2),
    (83, "mkdir", 2), (84, "rmdir", 1), (85, "creat", 2), (86, "link", 2), (87, "unlink", 1),
    (88, "symlink", 2), (89, "readlink", 3), (90, "chmod", 2), (91, "fchmod", 2), (92, "chown", 3),
    (95, "umask", 1), (96, "gettimeofday", 2), (97, "getrlimit", 2), (98, "getrusage", 2),
    (99, "sysinfo", 1), (100, "times", 1), (102, "getuid", 0), (104, "getgid", 0),
    (105, "setuid", 1), (106, "setgid", 1), (107, "geteuid", 0), (108, "getegid", 0),
    (109, "setpgid", 2), (110, "getppid", 0), (111, "getpgrp", 0), (112, "setsid", 0),
    (131, "sigaltstack", 2), (137, "statfs", 2), (138, "fstatfs", 2), (157, "prctl", 5),
    (158, "arch_prctl", 2), (160, "setrlimit", 2), (186, "gettid", 0), (200, "tkill", 2),
    (201, "time", 1), (202, "futex", 6), (203, "sched_setaffinity", 3),
    (204, "sched_getaffinity", 3), (213, "epoll_create", 1), (217, "getdents64", 3),
    (218, "set_tid_address", 1), (228, "clock_gettime", 2), (229, "clock_getres", 2),
    (230, "clock_nanosleep", 4), (231, "exit_group", 1), (232, "epoll_wait", 4),
    (233, "epoll_ctl", 4), (234, "tgkill", 3), (257, "openat", 4), (258, "mkdirat", 3),
    (262, "newfstatat", 4), (263, "unlinkat", 3), (264, "renameat", 4), (267, "readlinkat", 4),
    (269, "faccessat", 3), (270, "pselect6", 6), (271, "ppoll", 4), (273, "set_robust_list", 2),
    (281, "epoll_pwait", 6), (284, "eventfd", 1), (288, "accept4", 4), (290, "eventfd2", 2),
    (291, "epoll_create1", 1), (292, "dup3", 3), (293, "pipe2", 2), (302, "prlimit64", 4),
    (316, "renameat2", 5), (318, "getrandom", 3), (319, "memfd_create", 2), (332, "statx", 5),
    (334, "rseq", 4), (435, "clone3", 2), (436, "close_range", 3), (439, "faccessat2", 4),
];

fn find(nr: u64) -> Option<&'static (u64, &'static str, u8)> {
    TABLE.iter().find(|e| e.0 == nr)
}

/// The call's name, or "" if unknown.
pub fn name(nr: u64) -> &'static str {
    find(nr).map_or("", |e| e.1)
}

/// How many arguments to print (6 for unknown calls).
pub fn arg_count(nr: u64) -> usize {
    find(nr).map_or(6, |e| e.2 as usize)
}

/// Calls that do not return (traced before they run).
pub fn is_exit(nr: u64) -> bool {
    nr == 60 || nr == 231
}
