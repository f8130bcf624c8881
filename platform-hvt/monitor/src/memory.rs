//! Guest memory: one anonymous host mapping that backs guest-physical RAM
//! `[0, size)`, and the only way the monitor reads or writes it.
//!
//! Every access goes through a bounds-checked function that returns an error
//! for a range that leaves RAM (including `gpa + len` overflowing). That is
//! what keeps a guest-controlled address from ever reaching outside the
//! mapping. The mapping is `MAP_NORESERVE` and is never zeroed or touched
//! up front: a fresh anonymous mapping already reads as zero, and a page the
//! monitor never writes costs nothing until the guest uses it.
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use thiserror::Error;

/// An access to guest memory that falls outside RAM.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[error("guest range {gpa:#x}+{len:#x} lies outside guest RAM [0, {size:#x})")]
pub struct OutOfBounds {
    pub gpa: u64,
    pub len: u64,
    pub size: u64,
}

/// Plain-old-data types that may be copied to and from guest memory as raw bytes.
///
/// # Safety
/// Implementors must be `repr(C)` (or primitive) types without padding
/// bytes that matter and for which every bit pattern is a valid value.
pub unsafe trait Pod: Copy + Default {}

// SAFETY: integers accept every bit pattern.
unsafe impl Pod for u8 {}
// SAFETY: as above.
unsafe impl Pod for u16 {}
// SAFETY: as above.
unsafe impl Pod for u32 {}
// SAFETY: as above.
unsafe impl Pod for u64 {}
// SAFETY: the hvt ABI structs are repr(C), consist of u32/u64 fields with
// explicit padding fields, and accept every bit pattern.
unsafe impl Pod for hvt_abi::KernelHeader {}
// SAFETY: as above.
unsafe impl Pod for hvt_abi::BootInfo {}
// SAFETY: as above.
unsafe impl Pod for hvt_abi::hypercall::ConsoleWrite {}
// SAFETY: as above.
unsafe impl Pod for hvt_abi::hypercall::DebugStop {}
// SAFETY: as above.
unsafe impl Pod for hvt_abi::hypercall::ConsoleRead {}
// SAFETY: as above.
unsafe impl Pod for hvt_abi::hypercall::WallTime {}
// SAFETY: as above.
unsafe impl Pod for hvt_abi::hypercall::Poll {}
// SAFETY: repr(C) u64 + two u32, explicit padding, any bit pattern valid.
unsafe impl Pod for hvt_abi::hypercall::Timer {}
// SAFETY: repr(C) two u32 + u64, no padding, any bit pattern valid.
unsafe impl Pod for hvt_abi::hypercall::Halt {}
// SAFETY: repr(C) four u32, a u64 and a u64 array: no padding, any bit
// pattern valid (the monitor checks the fields before using them).
unsafe impl Pod for hvt_abi::hypercall::CrashRecord {}
// SAFETY: repr(C) u32/u64 fields and byte arrays, explicit padding, any bit pattern valid.
unsafe impl Pod for hvt_abi::net::NetInfo {}
// SAFETY: as above.
unsafe impl Pod for hvt_abi::net::NetSetup {}
// SAFETY: as above.
unsafe impl Pod for hvt_abi::net::NetNotify {}
// SAFETY: as above.
unsafe impl Pod for hvt_abi::net::NetDesc {}
// SAFETY: the block device's structs: repr(C), integer fields and byte
// arrays only, explicit padding; any bit pattern is valid.
unsafe impl Pod for hvt_abi::block::BlockInfo {}
// SAFETY: as above.
unsafe impl Pod for hvt_abi::block::BlockSetup {}
// SAFETY: as above.
unsafe impl Pod for hvt_abi::block::BlockNotify {}
// SAFETY: as above.
unsafe impl Pod for hvt_abi::block::BlockWait {}
// SAFETY: as above.
unsafe impl Pod for hvt_abi::block::BlockDesc {}

/// Host huge-page size (x86_64 transparent huge pages).
const HUGE_PAGE: usize = 2 << 20;

/// Guest RAM, backed by an anonymous host mapping.
#[derive(Debug)]
pub struct GuestMemory {
    base: NonNull<u8>,
    size: u64,
}

impl GuestMemory {
    /// Maps `size` bytes of anonymous, zero-filled, not-yet-backed memory,
    /// 2 MiB-aligned and advised for transparent huge pages: each first
    /// touch of a guest frame costs a host fault (and, under KVM, a
    /// second-level mapping), and with huge pages one fault backs 512
    /// frames. The guest's frame allocator hands out frames in address
    /// order, so the host's memory still follows what the guest touched,
    /// rounded to 2 MiB.
    pub fn new(size: u64) -> io::Result<GuestMemory> {
        let len = usize::try_from(size)
            .ok()
            .filter(|&l| l > 0)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        let padded = len
            .checked_add(HUGE_PAGE)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: an anonymous private mapping at an address of the kernel's
        // choosing; it aliases nothing. The result is checked for MAP_FAILED.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                padded,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // Keep the 2 MiB-aligned `len` bytes inside and give back the rest.
        let head = (HUGE_PAGE - (ptr as usize % HUGE_PAGE)) % HUGE_PAGE;
        let tail = padded - head - len;
        // SAFETY: both ranges lie inside the mapping just made, outside the
        // part kept; nothing refers to them.
        unsafe {
            if head > 0 {
                libc::munmap(ptr, head);
            }
            if tail > 0 {
                libc::munmap(ptr.cast::<u8>().add(head + len).cast(), tail);
            }
        }
        // SAFETY: `head < HUGE_PAGE <= padded - len`, inside the mapping.
        let ptr = unsafe { ptr.cast::<u8>().add(head) };
        // Advice only: without THP support the mapping works the same.
        // SAFETY: advice on the mapping kept above.
        unsafe { libc::madvise(ptr.cast(), len, libc::MADV_HUGEPAGE) };
        let base = NonNull::new(ptr).ok_or_else(io::Error::last_os_error)?;
        Ok(GuestMemory { base, size })
    }

    /// Size of guest RAM in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Host address of guest-physical 0 (for `KVM_SET_USER_MEMORY_REGION`).
    pub fn host_address(&self) -> u64 {
        self.base.as_ptr() as u64
    }

    /// Checks that `[gpa, gpa + len)` lies inside RAM; returns the offset as usize.
    pub fn check(&self, gpa: u64, len: u64) -> Result<usize, OutOfBounds> {
        let err = OutOfBounds {
            gpa,
            len,
            size: self.size,
        };
        match gpa.checked_add(len) {
            Some(end) if end <= self.size => usize::try_from(gpa).map_err(|_| err),
            _ => Err(err),
        }
    }

    /// The bytes `[gpa, gpa + len)` of guest RAM.
    pub fn slice(&self, gpa: u64, len: u64) -> Result<&[u8], OutOfBounds> {
        let off = self.check(gpa, len)?;
        // SAFETY: `check` proved [off, off + len) lies inside the mapping of
        // `size` bytes, which lives as long as `self`. The guest vCPU is
        // stopped whenever the monitor looks at its memory (single vCPU,
        // accesses happen between KVM_RUN calls).
        Ok(unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(off), len as usize) })
    }

    /// The bytes `[gpa, gpa + len)` of guest RAM, writable.
    pub fn slice_mut(&mut self, gpa: u64, len: u64) -> Result<&mut [u8], OutOfBounds> {
        let off = self.check(gpa, len)?;
        // SAFETY: as in `slice`; `&mut self` makes this the only live
        // host-side reference into the mapping.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.base.as_ptr().add(off), len as usize) })
    }

    /// Copies `data` into guest RAM at `gpa`.
    pub fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), OutOfBounds> {
        self.slice_mut(gpa, data.len() as u64)?
            .copy_from_slice(data);
        Ok(())
    }

    /// Reads a `T` from guest RAM at `gpa` (no alignment needed).
    pub fn read_obj<T: Pod>(&self, gpa: u64) -> Result<T, OutOfBounds> {
        let bytes = self.slice(gpa, std::mem::size_of::<T>() as u64)?;
        // SAFETY: `bytes` holds exactly size_of::<T>() readable bytes and
        // `T: Pod` accepts any bit pattern; read_unaligned needs no alignment.
        Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
    }

    /// Writes `value` into guest RAM at `gpa` (no alignment needed).
    pub fn write_obj<T: Pod>(&mut self, gpa: u64, value: &T) -> Result<(), OutOfBounds> {
        let bytes = self.slice_mut(gpa, std::mem::size_of::<T>() as u64)?;
        // SAFETY: `bytes` holds exactly size_of::<T>() writable bytes;
        // write_unaligned needs no alignment.
        unsafe { std::ptr::write_unaligned(bytes.as_mut_ptr().cast::<T>(), *value) };
        Ok(())
    }
}

impl GuestMemory {
    /// A view of this RAM that another host thread may use while the vCPU
    /// runs (the network device's I/O thread).
    ///
    /// # Safety
    /// The caller must stop every use of the returned view before this
    /// `GuestMemory` is dropped (the network device joins its thread in
    /// `net::stop`, which `Vm::run` and `Vm::drop` call).
    pub unsafe fn shared(&self) -> SharedRam {
        SharedRam {
            base: self.base,
            size: self.size,
        }
    }
}

/// Guest RAM as another host thread sees it while the guest runs: every
/// access is bounds-checked like [`GuestMemory`]'s, indices are accessed
/// atomically, and bytes are copied in and out (the guest may change them at
/// any time, so the monitor only ever looks at its own copies).
#[derive(Clone, Copy, Debug)]
pub struct SharedRam {
    base: NonNull<u8>,
    size: u64,
}

// SAFETY: the view is a pointer and a length; all accesses through it are
// atomic or raw copies of memory that the guest shares anyway, and its
// creator guarantees the mapping outlives every use (see `shared`).
unsafe impl Send for SharedRam {}
// SAFETY: as above; no method hands out a reference to guest bytes.
unsafe impl Sync for SharedRam {}

impl SharedRam {
    /// Size of guest RAM in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    fn check(&self, gpa: u64, len: u64) -> Result<usize, OutOfBounds> {
        let err = OutOfBounds {
            gpa,
            len,
            size: self.size,
        };
        match gpa.checked_add(len) {
            Some(end) if end <= self.size => usize::try_from(gpa).map_err(|_| err),
            _ => Err(err),
        }
    }

    fn atomic_u32(&self, gpa: u64) -> Result<&AtomicU32, OutOfBounds> {
        let off = self.check(gpa, 4)?;
        if gpa % 4 != 0 {
            return Err(OutOfBounds {
                gpa,
                len: 4,
                size: self.size,
            });
        }
        // SAFETY: [off, off + 4) lies inside the live mapping (checked) and
        // is 4-byte aligned (the mapping is page-aligned); AtomicU32 has the
        // size and alignment of u32, and every bit pattern is valid.
        Ok(unsafe { AtomicU32::from_ptr(self.base.as_ptr().add(off).cast::<u32>()) })
    }

    /// Loads the u32 at `gpa` (4-byte aligned) with acquire ordering.
    pub fn load_acquire(&self, gpa: u64) -> Result<u32, OutOfBounds> {
        Ok(self.atomic_u32(gpa)?.load(Ordering::Acquire))
    }

    /// Stores `v` at `gpa` (4-byte aligned) with release ordering.
    pub fn store_release(&self, gpa: u64, v: u32) -> Result<(), OutOfBounds> {
        self.atomic_u32(gpa)?.store(v, Ordering::Release);
        Ok(())
    }

    /// Copies `buf.len()` bytes at `gpa` into `buf`.
    pub fn read_into(&self, gpa: u64, buf: &mut [u8]) -> Result<(), OutOfBounds> {
        let off = self.check(gpa, buf.len() as u64)?;
        // SAFETY: the source range lies inside the live mapping (checked),
        // the destination is our own buffer; they cannot overlap. The guest
        // may change the source concurrently: we only ever use the copy.
        unsafe {
            std::ptr::copy_nonoverlapping(self.base.as_ptr().add(off), buf.as_mut_ptr(), buf.len())
        };
        Ok(())
    }

    /// Copies `data` into guest RAM at `gpa`.
    pub fn write_from(&self, gpa: u64, data: &[u8]) -> Result<(), OutOfBounds> {
        let off = self.check(gpa, data.len() as u64)?;
        // SAFETY: the destination range lies inside the live mapping
        // (checked); the source is host memory, so they cannot overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.base.as_ptr().add(off), data.len())
        };
        Ok(())
    }

    /// The host address of `[gpa, gpa + len)`, checked to lie inside RAM:
    /// for host calls that move bytes straight between a file and guest
    /// memory (`pread`/`pwrite` of the block device). The guest may change
    /// those bytes at any time; the pointer must only be handed to such
    /// calls, never turned into a Rust reference.
    pub fn host_range(&self, gpa: u64, len: u64) -> Result<*mut u8, OutOfBounds> {
        let off = self.check(gpa, len)?;
        // SAFETY: `off` is inside the mapping (checked), so the result
        // points into it (or one past its end for an empty range).
        Ok(unsafe { self.base.as_ptr().add(off) })
    }

    /// Reads a `T` at `gpa` (a copy).
    pub fn read_obj<T: Pod>(&self, gpa: u64) -> Result<T, OutOfBounds> {
        let mut v = T::default();
        // SAFETY: `v` is a live, writable `T`; viewing it as its bytes is
        // fine for a Pod type, which accepts any bit pattern.
        let bytes = unsafe {
            std::slice::from_raw_parts_mut(
                (&mut v as *mut T).cast::<u8>(),
                std::mem::size_of::<T>(),
            )
        };
        self.read_into(gpa, bytes)?;
        Ok(v)
    }

    /// Writes `value` at `gpa`.
    pub fn write_obj<T: Pod>(&self, gpa: u64, value: &T) -> Result<(), OutOfBounds> {
        // SAFETY: a Pod value viewed as its bytes (no padding that matters).
        let bytes = unsafe {
            std::slice::from_raw_parts((value as *const T).cast::<u8>(), std::mem::size_of::<T>())
        };
        self.write_from(gpa, bytes)
    }
}

impl Drop for GuestMemory {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping created in `new`; no reference
        // into it outlives `self` (slices borrow `self`). The VM that used it
        // is dropped before (see `vm::Vm` field order).
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.size as usize) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accesses_inside_ram_work() {
        let mut m = GuestMemory::new(0x4000).unwrap();
        assert!(m.slice(0, 0x4000).unwrap().iter().all(|&b| b == 0));
        m.write_obj(0x3ff8, &0x1122_3344_5566_7788u64).unwrap();
        assert_eq!(m.read_obj::<u64>(0x3ff8).unwrap(), 0x1122_3344_5566_7788);
        m.write(0x1001, b"abc").unwrap();
        assert_eq!(m.slice(0x1001, 3).unwrap(), b"abc");
        assert_eq!(m.slice(0x4000, 0).unwrap(), b"");
    }

    #[test]
    fn accesses_outside_ram_fail() {
        let mut m = GuestMemory::new(0x4000).unwrap();
        assert!(m.slice(0x3ff9, 8).is_err());
        assert!(m.read_obj::<u64>(0x3ff9).is_err());
        assert!(m.write_obj(0x4000, &0u8).is_err());
        assert!(m.slice(0x4001, 0).is_err());
        assert!(m.slice_mut(0, 0x4001).is_err());
        let e = m.slice(0x10, u64::MAX).unwrap_err();
        assert_eq!(
            e,
            OutOfBounds {
                gpa: 0x10,
                len: u64::MAX,
                size: 0x4000
            }
        );
    }

    #[test]
    fn overflowing_ranges_fail() {
        let m = GuestMemory::new(0x4000).unwrap();
        assert!(m.slice(u64::MAX, 1).is_err());
        assert!(m.slice(u64::MAX - 7, 16).is_err());
        assert!(m.read_obj::<u64>(u64::MAX - 3).is_err());
        assert!(m.check(1 << 63, 1 << 63).is_err());
    }
}
