//! Checked access to app memory from system calls.
//!
//! App and runtime share one address space, so an app pointer can be
//! dereferenced directly once every page it covers is known to be mapped
//! (and writable, for results). A bad pointer gives `EFAULT`, never a fault
//! inside the runtime.

use super::vm::ASPACE;
use crate::errno::*;

fn check(ptr: u64, len: u64, write: bool) -> Result<(), Errno> {
    let r = {
        let mut g = ASPACE.lock();
        let a = g.as_mut().ok_or(EFAULT)?;
        a.check_user(ptr, len, write)
    };
    if r == Err(ENOMEM) {
        // A page the app mapped could not get a frame (see `fault`).
        crate::fault::out_of_memory(ptr);
    }
    r
}

/// The app's bytes at `[ptr, ptr+len)`.
pub fn bytes<'a>(ptr: u64, len: usize) -> Result<&'a [u8], Errno> {
    if len == 0 {
        return Ok(&[]);
    }
    check(ptr, len as u64, false)?;
    // SAFETY: every page of the range is mapped readable (checked above) and
    // stays so while this single-threaded system call runs.
    Ok(unsafe { core::slice::from_raw_parts(ptr as *const u8, len) })
}

/// The app's writable bytes at `[ptr, ptr+len)`.
pub fn bytes_mut<'a>(ptr: u64, len: usize) -> Result<&'a mut [u8], Errno> {
    if len == 0 {
        return Ok(&mut []);
    }
    check(ptr, len as u64, true)?;
    // SAFETY: every page is mapped writable (checked above).
    Ok(unsafe { core::slice::from_raw_parts_mut(ptr as *mut u8, len) })
}

pub fn read<T: Copy>(ptr: u64) -> Result<T, Errno> {
    check(ptr, core::mem::size_of::<T>() as u64, false)?;
    // SAFETY: mapped readable (checked); unaligned read for app pointers.
    Ok(unsafe { (ptr as *const T).read_unaligned() })
}

pub fn write<T: Copy>(ptr: u64, v: T) -> Result<(), Errno> {
    check(ptr, core::mem::size_of::<T>() as u64, true)?;
    // SAFETY: mapped writable (checked).
    unsafe { (ptr as *mut T).write_unaligned(v) };
    Ok(())
}

/// A NUL-terminated string of at most `max` bytes (without the NUL).
pub fn cstr<'a>(ptr: u64, max: usize) -> Result<&'a [u8], Errno> {
    let mut len = 0usize;
    loop {
        let page_end = ((ptr + len as u64) | 0xfff) + 1;
        let chunk = (page_end - (ptr + len as u64)) as usize;
        let b = bytes(ptr + len as u64, chunk)?;
        if let Some(i) = b.iter().position(|&c| c == 0) {
            len += i;
            break;
        }
        len += chunk;
        if len > max {
            return Err(ENAMETOOLONG);
        }
    }
    if len > max {
        return Err(ENAMETOOLONG);
    }
    bytes(ptr, len)
}
