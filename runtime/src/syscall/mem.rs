//! Memory system calls: mmap, munmap, mremap, mprotect, brk, madvise,
//! msync, mlock and friends.
//!
//! A file mapping is a copy of the file's bytes in anonymous memory
//! (`pread` at `mmap` time). `MAP_PRIVATE` needs nothing more. A writable
//! `MAP_SHARED` mapping is remembered: `msync`, `munmap` and the app's exit
//! write its pages back to the file with `pwrite` (up to the file's size at
//! that moment, as pages past the end are not part of the file). Until then
//! `read` does not see what was stored through the mapping, and two
//! mappings of one file do not see each other's stores.

use super::SysResult;
use crate::errno::*;
use crate::fs::fdtable;
use crate::mm::user;
use crate::mm::vm::{ASPACE, PROT_EXEC, PROT_READ, PROT_WRITE};
use alloc::sync::Arc;
use alloc::vec::Vec;
use spin::Mutex;

/// A writable `MAP_SHARED` file mapping: `[start, start+len)` holds the
/// file's bytes from `offset`.
struct SharedMap {
    start: u64,
    len: u64,
    file: Arc<dyn crate::fs::File>,
    offset: u64,
}

static SHARED: Mutex<Vec<SharedMap>> = Mutex::new(Vec::new());

const MAP_SHARED: u64 = 0x01;
const MAP_PRIVATE: u64 = 0x02;
const MAP_FIXED: u64 = 0x10;
const MAP_ANONYMOUS: u64 = 0x20;
const MAP_FIXED_NOREPLACE: u64 = 0x100000;
const MAP_POPULATE: u64 = 0x8000;
const MAP_LOCKED: u64 = 0x2000;

/// `mlockall(MCL_FUTURE)` is in force: new mappings are populated at once.
static LOCK_FUTURE: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

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
        // Frames come on first touch (see mm::vm), unless the app asks
        // for them now, or the mapping is no bigger than what its first
        // touch would populate anyway (the 64 KiB fault-around block):
        // musl's malloc maps and unmaps such groups all the time, and a
        // fault costs far more than the frames' entries (~80 us on
        // kvm-pvm). Not for PROT_NONE (guard pages, reservations).
        let small = len
            <= (crate::mm::vm::FAULT_AROUND + 1) * crate::arch::x86_64::paging::PAGE_SIZE
            && prot != 0;
        let populate = flags & (MAP_POPULATE | MAP_LOCKED) != 0
            || small
            || LOCK_FUTURE.load(core::sync::atomic::Ordering::Relaxed);
        return with_aspace(|a| a.mmap(addr, len, prot, fixed, noreplace, populate))
            .map(|v| v as i64);
    }
    // A copy of the file's contents; a writable shared one is written back.
    let e = fdtable::file(fd as i64)?;
    if !e.file.mappable() {
        return Err(ENODEV);
    }
    let acc = e.flags as u64 & super::fs::O_ACCMODE;
    let shared_writable = flags & MAP_SHARED != 0 && prot & PROT_WRITE != 0;
    if acc == 1 || (shared_writable && acc != 2) {
        return Err(EACCES);
    }
    if len == 0 {
        return Err(EINVAL);
    }
    let start = with_aspace(|a| a.mmap(addr, len, PROT_READ | PROT_WRITE, fixed, noreplace, true))?;
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
    if shared_writable {
        let mut maps = SHARED.lock();
        // A MAP_FIXED mapping replaces what was there: write that back first.
        let _ = write_back(&maps, start, len);
        forget(&mut maps, start, len);
        maps.push(SharedMap {
            start,
            len: len.next_multiple_of(4096),
            file: e.file.clone(),
            offset: off,
        });
    }
    Ok(start as i64)
}

fn overlaps_shared(maps: &[SharedMap], addr: u64, len: u64) -> bool {
    let end = addr.saturating_add(len);
    maps.iter().any(|m| m.start < end && addr < m.start + m.len)
}

/// Write the shared pages inside `[addr, addr+len)` back to their files.
/// Returns the first error.
fn write_back(maps: &[SharedMap], addr: u64, len: u64) -> Result<(), Errno> {
    let end = addr.saturating_add(len);
    let mut first = Ok(());
    for m in maps {
        let (s, e) = (m.start.max(addr), (m.start + m.len).min(end));
        if s >= e {
            continue;
        }
        let file_off = m.offset + (s - m.start);
        let size = m.file.stat().size.max(0) as u64;
        if file_off >= size {
            continue;
        }
        let n = (e - s).min(size - file_off);
        let r = user::bytes(s, n as usize).and_then(|b| m.file.pwrite(b, file_off));
        if let Err(err) = r {
            if first.is_ok() {
                first = Err(err);
            }
        }
    }
    first
}

/// Drop `[addr, addr+len)` from the shared mappings (trimming or splitting them).
fn forget(maps: &mut Vec<SharedMap>, addr: u64, len: u64) {
    let end = addr.saturating_add(len);
    let mut kept = Vec::new();
    for m in maps.drain(..) {
        let m_end = m.start + m.len;
        if m_end <= addr || m.start >= end {
            kept.push(m);
            continue;
        }
        if m.start < addr {
            kept.push(SharedMap {
                start: m.start,
                len: addr - m.start,
                file: m.file.clone(),
                offset: m.offset,
            });
        }
        if m_end > end {
            kept.push(SharedMap {
                start: end,
                len: m_end - end,
                file: m.file.clone(),
                offset: m.offset + (end - m.start),
            });
        }
    }
    *maps = kept;
}

pub fn munmap(addr: u64, len: u64) -> SysResult {
    if addr & 0xfff != 0 || len == 0 {
        return Err(EINVAL);
    }
    let mut maps = SHARED.lock();
    let wb = write_back(&maps, addr, len);
    forget(&mut maps, addr, len);
    drop(maps);
    with_aspace(|a| a.munmap(addr, len))?;
    wb.map(|_| 0)
}

const MS_ASYNC: u64 = 1;
const MS_INVALIDATE: u64 = 2;
const MS_SYNC: u64 = 4;

pub fn msync(addr: u64, len: u64, flags: u64) -> SysResult {
    if addr & 0xfff != 0
        || flags & !(MS_ASYNC | MS_INVALIDATE | MS_SYNC) != 0
        || flags & (MS_ASYNC | MS_SYNC) == (MS_ASYNC | MS_SYNC)
    {
        return Err(EINVAL);
    }
    let maps = SHARED.lock();
    write_back(&maps, addr, len)?;
    if flags & MS_SYNC != 0 {
        let end = addr.saturating_add(len);
        for m in maps
            .iter()
            .filter(|m| m.start < end && m.start + m.len > addr)
        {
            m.file.sync(false)?;
        }
    }
    Ok(0)
}

/// At exit: every shared mapping's pages go back to their files.
pub fn flush_shared_mappings() {
    let maps = SHARED.lock();
    let _ = write_back(&maps, 0, u64::MAX);
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
        // Private anonymous memory reads back as zeros after DONTNEED: its
        // frames go back (the pages fill again when touched). A range with
        // a shared file mapping is only zeroed (its contents are a copy
        // that msync writes back).
        MADV_DONTNEED | MADV_FREE if !overlaps_shared(&SHARED.lock(), addr, len) => {
            with_aspace(|a| a.discard(addr, len)).map(|()| 0)
        }
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

const MREMAP_MAYMOVE: u64 = 1;
const MREMAP_FIXED: u64 = 2;
const MREMAP_DONTUNMAP: u64 = 4;

pub fn mremap(old: u64, old_len: u64, new_len: u64, flags: u64, new_addr: u64) -> SysResult {
    if flags & !(MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP) != 0 {
        return Err(EINVAL);
    }
    if flags & MREMAP_DONTUNMAP != 0 {
        // Leaves the old range mapped to fresh pages (userfaultfd's use):
        // not supported, said as Linux says it for a flag it refuses.
        return Err(EINVAL);
    }
    let fixed = (flags & MREMAP_FIXED != 0).then_some(new_addr);
    let may_move = flags & MREMAP_MAYMOVE != 0;
    let mut maps = SHARED.lock();
    let shared = maps
        .iter()
        .position(|m| m.start < old.saturating_add(old_len.max(1)) && old < m.start + m.len);
    if let Some(i) = shared {
        // A written-back file mapping moves whole, its record with it.
        let m = &maps[i];
        if m.start != old || m.len != (old_len + 0xfff) & !0xfff || new_len > m.len {
            return Err(EINVAL);
        }
        // A cut tail goes away: its stores reach the file first.
        let keep = (new_len + 0xfff) & !0xfff;
        if keep < m.len {
            write_back(core::slice::from_ref(m), old + keep, m.len - keep)?;
        }
    }
    let to = with_aspace(|a| a.mremap(old, old_len, new_len, may_move, fixed))?;
    if let Some(i) = shared {
        let m = &mut maps[i];
        m.start = to;
        m.len = (new_len + 0xfff) & !0xfff;
    }
    Ok(to as i64)
}

const MCL_CURRENT: u64 = 1;
const MCL_FUTURE: u64 = 2;
const MCL_ONFAULT: u64 = 4;

/// `mlock`/`mlock2`: the range gets its frames now (there is no swap, so
/// that is all locking means here).
pub fn mlock(addr: u64, len: u64, flags: u64) -> SysResult {
    const MLOCK_ONFAULT: u64 = 1;
    if flags & !MLOCK_ONFAULT != 0 {
        return Err(EINVAL);
    }
    if flags & MLOCK_ONFAULT != 0 || len == 0 {
        return Ok(0);
    }
    with_aspace(|a| a.populate_range(addr, len)).map(|()| 0)
}

/// `munlock`/`munlockall`: nothing is ever paged out, so only the
/// arguments are checked.
pub fn munlock(addr: u64, len: u64) -> SysResult {
    addr.checked_add(len).ok_or(ENOMEM)?;
    Ok(0)
}

pub fn mlockall(flags: u64) -> SysResult {
    if flags == 0 || flags & !(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) != 0 {
        return Err(EINVAL);
    }
    if flags & MCL_ONFAULT != 0 {
        return Ok(0);
    }
    if flags & MCL_FUTURE != 0 {
        LOCK_FUTURE.store(true, core::sync::atomic::Ordering::Relaxed);
    }
    if flags & MCL_CURRENT != 0 {
        with_aspace(|a| {
            for (s, e) in a.areas() {
                a.populate_range(s, e - s)?;
            }
            Ok(())
        })?;
    }
    Ok(0)
}

pub fn munlockall() -> SysResult {
    LOCK_FUTURE.store(false, core::sync::atomic::Ordering::Relaxed);
    Ok(0)
}
