//! Process-level calls: exit, identity, limits, futex (one thread), misc.

use super::SysResult;
use crate::errno::*;
use crate::mm::user;
use spin::Mutex;

/// The one process (and its one thread) has id 1.
pub const PID: i64 = 1;

pub fn exit(code: u64) -> SysResult {
    crate::exit(code as u32 & 0xff)
}

pub fn uname(buf: u64) -> SysResult {
    let mut u = [[0u8; 65]; 6];
    let fields: [&[u8]; 6] = [
        b"Linux",
        b"unikernel",
        b"6.1.0-unikernel",
        b"#1 SMP",
        b"x86_64",
        b"(none)",
    ];
    for (dst, src) in u.iter_mut().zip(fields) {
        dst[..src.len()].copy_from_slice(src);
    }
    user::write(buf, u)?;
    Ok(0)
}

static UMASK: Mutex<u64> = Mutex::new(0o022);

/// The file-creation mask.
pub fn current_umask() -> u32 {
    *UMASK.lock() as u32
}

pub fn umask(mask: u64) -> SysResult {
    let mut m = UMASK.lock();
    let old = *m;
    *m = mask & 0o777;
    Ok(old as i64)
}

const RLIM_INFINITY: u64 = u64::MAX;
const RLIMIT_STACK: u64 = 3;
const RLIMIT_NOFILE: u64 = 7;

pub fn prlimit64(pid: u64, resource: u64, _new: u64, old: u64) -> SysResult {
    if pid != 0 && pid != PID as u64 {
        return Err(ESRCH);
    }
    if resource > 15 {
        return Err(EINVAL);
    }
    if old != 0 {
        let lim = match resource {
            RLIMIT_STACK => [8 << 20, RLIM_INFINITY],
            RLIMIT_NOFILE => [crate::fs::fdtable::MAX_FDS as u64; 2],
            _ => [RLIM_INFINITY; 2],
        };
        user::write(old, lim)?;
    }
    // New limits are accepted and not enforced.
    Ok(0)
}

pub fn getrusage(_who: u64, buf: u64) -> SysResult {
    let ns = crate::platform().monotonic_ns();
    let mut r = [0i64; 18];
    r[0] = (ns / 1_000_000_000) as i64;
    r[1] = ((ns % 1_000_000_000) / 1000) as i64;
    user::write(buf, r)?;
    Ok(0)
}

pub fn sysinfo(buf: u64) -> SysResult {
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct SysInfo {
        uptime: i64,
        loads: [u64; 3],
        totalram: u64,
        freeram: u64,
        sharedram: u64,
        bufferram: u64,
        totalswap: u64,
        freeswap: u64,
        procs: u16,
        pad: u16,
        pad2: u32,
        totalhigh: u64,
        freehigh: u64,
        mem_unit: u32,
        _f: [u8; 4],
    }
    let f = crate::mm::frame::FRAMES.lock();
    let info = SysInfo {
        uptime: (crate::platform().monotonic_ns() / 1_000_000_000) as i64,
        loads: [0; 3],
        totalram: f.total() * 4096,
        freeram: f.available() * 4096,
        sharedram: 0,
        bufferram: 0,
        totalswap: 0,
        freeswap: 0,
        procs: 1,
        pad: 0,
        pad2: 0,
        totalhigh: 0,
        freehigh: 0,
        mem_unit: 1,
        _f: [0; 4],
    };
    drop(f);
    user::write(buf, info)?;
    Ok(0)
}

const PR_SET_NAME: u64 = 15;
const PR_GET_NAME: u64 = 16;

pub fn prctl(op: u64, arg: u64) -> SysResult {
    match op {
        PR_SET_NAME => {
            let s = user::cstr(arg, 4096)?;
            let mut n = [0u8; 16];
            let l = s.len().min(15);
            n[..l].copy_from_slice(&s[..l]);
            crate::sched::with(|s| s.current().name = n);
            Ok(0)
        }
        PR_GET_NAME => {
            user::write(arg, crate::sched::with(|s| s.current().name))?;
            Ok(0)
        }
        _ => Err(EINVAL),
    }
}

const ARCH_SET_GS: u64 = 0x1001;
const ARCH_SET_FS: u64 = 0x1002;
const ARCH_GET_FS: u64 = 0x1003;
const ARCH_GET_GS: u64 = 0x1004;

pub fn arch_prctl(code: u64, addr: u64) -> SysResult {
    match code {
        ARCH_SET_FS => {
            // A non-canonical base would fault in wrfsbase: refuse it as Linux does.
            if addr >= 0x0000_8000_0000_0000 {
                return Err(EPERM);
            }
            crate::arch::x86_64::cpu::set_fs_base(addr);
            Ok(0)
        }
        ARCH_GET_FS => {
            user::write(addr, crate::arch::x86_64::cpu::fs_base())?;
            Ok(0)
        }
        // GS belongs to the runtime (its per-CPU block): the app cannot have it.
        ARCH_SET_GS => Err(EPERM),
        ARCH_GET_GS => {
            user::write(addr, 0u64)?;
            Ok(0)
        }
        _ => Err(EINVAL),
    }
}

pub fn set_tid_address(ptr: u64) -> SysResult {
    Ok(crate::sched::with(|s| {
        let t = s.current();
        t.clear_child_tid = ptr;
        t.tid as i64
    }))
}

pub fn clone(
    f: &super::SyscallFrame,
    flags: u64,
    stack: u64,
    ptid: u64,
    ctid: u64,
    tls: u64,
) -> SysResult {
    crate::sched::clone_thread(f, flags, stack, ptid, ctid, tls).map(|t| t as i64)
}

/// `pause`: wait for a signal.
pub fn pause() -> SysResult {
    crate::sched::block(crate::sched::WaitOn::Sleep, None);
    Err(EINTR)
}

pub fn sched_getaffinity(pid: u64, len: u64, mask: u64) -> SysResult {
    if pid != 0 && pid != PID as u64 {
        return Err(ESRCH);
    }
    if len < 8 || len & 7 != 0 {
        return Err(EINVAL);
    }
    let b = user::bytes_mut(mask, 8)?;
    b.fill(0);
    b[0] = 1;
    Ok(8)
}

pub fn getrandom(buf: u64, len: u64, flags: u64) -> SysResult {
    const GRND_NONBLOCK: u64 = 1;
    const GRND_RANDOM: u64 = 2;
    const GRND_INSECURE: u64 = 4;
    if flags & !(GRND_NONBLOCK | GRND_RANDOM | GRND_INSECURE) != 0
        || flags & (GRND_RANDOM | GRND_INSECURE) == (GRND_RANDOM | GRND_INSECURE)
    {
        return Err(EINVAL);
    }
    let len = len.min(i32::MAX as u64) as usize;
    let b = user::bytes_mut(buf, len)?;
    crate::random::fill(b);
    Ok(len as i64)
}
