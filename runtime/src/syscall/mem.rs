//! Memory system calls: mmap, munmap, mprotect, brk, madvise.

use super::SysResult;
use crate::errno::*;
use crate::fs::fdtable;
use crate::mm::user;
use crate::mm::vm::{ASPACE, PROT_EXEC, PROT_READ, PROT_WRITE};

const MAP_SHARED: u64 = 0x01;
const MAP_PRIVATE: u64 = 0x02;
const MAP_FIXED: u64 = 0x10;
const MAP_ANONYMOUS: u64 = 0x20;
const MAP_FIXED_NOREPLACE: u64 = 0x100000;

fn with_aspace<R>(
    f: impl FnOnce(&mut crate::mm::vm::AddressSpace) -> Result<R, Errno>,
) -> Result<R, Errno> {
    let mut g = ASPACE.lock();
    f(g.as_mut().ok_or(ENOMEM)?)
}

fn check_prot(prot: u64) -> Result<u32, Errno> {
    if prot & !((PROT_READ | PROT_WRITE | PROT_EXEC) as u64) != 0 {
        return Err(EINVAL);
    }
    Ok(prot as u32)
}

pub fn mmap(addr: u64, len: u64, prot: u64, flags: u64, fd: u64, off: u64) -> SysResult {
    let prot = check_prot(prot)?;
    if flags & (MAP_SHARED | MAP_PRIVATE) == 0 || off & 0xfff != 0 {
        return Err(EINVAL);
    }
    let fixed = flags & MAP_FIXED != 0;
    let noreplace = flags & MAP_FIXED_NOREPLACE != 0;
    if flags & MAP_ANONYMOUS != 0 {
        return with_aspace(|a| a.mmap(addr, len, prot, fixed, noreplace)).map(|v| v as i64);
    }
    // A file mapping is a private copy of the file's contents (nothing here
    // is shared with another process, and our files are read-only).
    let e = fdtable::file(fd as i64)?;
    if !e.file.mappable() {
        return Err(ENODEV);
    }
    let start = with_aspace(|a| a.mmap(addr, len, PROT_READ | PROT_WRITE, fixed, noreplace))?;
    let buf = user::bytes_mut(start, len as usize)?;
    let mut done = 0;
    while done < buf.len() {
        match e.file.pread(&mut buf[done..], off + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(err) => {
                let _ = with_aspace(|a| a.munmap(start, len));
                return Err(err);
            }
        }
    }
    with_aspace(|a| a.mprotect(start, len, prot))?;
    Ok(start as i64)
}

pub fn munmap(addr: u64, len: u64) -> SysResult {
    with_aspace(|a| a.munmap(addr, len)).map(|_| 0)
}

pub fn mprotect(addr: u64, len: u64, prot: u64) -> SysResult {
    let prot = check_prot(prot)?;
    with_aspace(|a| a.mprotect(addr, len, prot)).map(|_| 0)
}

pub fn brk(addr: u64) -> SysResult {
    with_aspace(|a| Ok(a.brk(addr) as i64))
}

const MADV_DONTNEED: u64 = 4;
const MADV_FREE: u64 = 8;

pub fn madvise(addr: u64, len: u64, advice: u64) -> SysResult {
    if addr & 0xfff != 0 {
        return Err(EINVAL);
    }
    match advice {
        // Private anonymous memory reads back as zeros after DONTNEED.
        MADV_DONTNEED | MADV_FREE => {
            let len = (len + 0xfff) & !0xfff;
            let mut va = addr;
            while va < addr + len {
                if let Ok(b) = user::bytes_mut(va, 4096) {
                    b.fill(0);
                }
                va += 4096;
            }
            Ok(0)
        }
        _ => Ok(0),
    }
}
