//! The app's extended register state (x87/SSE/AVX/AVX-512), saved and
//! restored when threads switch and around signal handlers.
//!
//! The runtime itself never touches these registers (its target is
//! soft-float), so whatever they hold while the runtime runs belongs to the
//! thread that entered it. `xsave`/`xrstor` are used when the OS has enabled
//! them (CPUID.1:ECX.OSXSAVE, as seen where the runtime runs: on kvm-pvm they
//! work at ring 3, where the runtime always runs), `fxsave`/`fxrstor` otherwise.

use alloc::alloc::{alloc_zeroed, dealloc, Layout};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

static USE_XSAVE: AtomicBool = AtomicBool::new(false);
static AREA_SIZE: AtomicUsize = AtomicUsize::new(512);

/// Decide between xsave and fxsave and size the save area.
pub fn init() {
    let leaf1 = core::arch::x86_64::__cpuid(1);
    let osxsave = leaf1.ecx & (1 << 27) != 0;
    if osxsave {
        // CPUID.(0xD,0): EBX = bytes for the features enabled in XCR0, ECX =
        // bytes if every supported feature were enabled. A virtualised
        // CPUID may describe another XCR0 than the one in force (seen under
        // Xen PV), and `xsave` with a full mask writes what XCR0 enables:
        // size for the largest, so a save can never overrun its area.
        let d = core::arch::x86_64::__cpuid_count(0xd, 0);
        let size = (d.ebx.max(d.ecx) as usize).max(576);
        AREA_SIZE.store(size, Ordering::Relaxed);
        USE_XSAVE.store(true, Ordering::Relaxed);
    }
}

pub fn area_size() -> usize {
    AREA_SIZE.load(Ordering::Relaxed)
}

/// A 64-byte aligned save area.
pub struct XState {
    ptr: *mut u8,
    size: usize,
}

// SAFETY: the area is plain memory owned by this value.
unsafe impl Send for XState {}
// SAFETY: shared access only reads through `as_ptr`; writes need &mut.
unsafe impl Sync for XState {}

impl XState {
    /// A save area holding the processor's initial state (from `fninit`-like defaults).
    pub fn new() -> Option<XState> {
        let size = area_size();
        let layout = Layout::from_size_align(size, 64).ok()?;
        // SAFETY: non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        if ptr.is_null() {
            return None;
        }
        // Legacy area defaults: FCW 0x37f, MXCSR 0x1f80 (xsave header zero = init state).
        // SAFETY: within the area.
        unsafe {
            (ptr as *mut u16).write(0x37f);
            (ptr.add(24) as *mut u32).write(0x1f80);
        }
        Some(XState { ptr, size })
    }

    pub fn as_ptr(&self) -> *const u8 {
        self.ptr
    }

    pub fn len(&self) -> usize {
        self.size
    }

    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// Save the current registers here.
    pub fn save(&mut self) {
        // SAFETY: the area is large enough and 64-byte aligned.
        unsafe { save_to(self.ptr) }
    }

    /// Load the registers from here.
    pub fn restore(&self) {
        // SAFETY: the area holds a state saved by `save` (or the init state).
        unsafe { restore_from(self.ptr) }
    }
}

impl Drop for XState {
    fn drop(&mut self) {
        if let Ok(layout) = Layout::from_size_align(self.size, 64) {
            // SAFETY: allocated with this layout in `new`.
            unsafe { dealloc(self.ptr, layout) }
        }
    }
}

/// Save the registers to `p`.
///
/// # Safety
/// `p` must be 64-byte aligned and hold [`area_size`] bytes.
pub unsafe fn save_to(p: *mut u8) {
    if USE_XSAVE.load(Ordering::Relaxed) {
        // SAFETY: as the caller promised; all XCR0 components (edx:eax = -1).
        unsafe {
            core::arch::asm!("xsave64 [{0}]", in(reg) p, in("eax") u32::MAX, in("edx") u32::MAX, options(nostack))
        };
    } else {
        // SAFETY: 512 bytes, 16-byte aligned at least.
        unsafe { core::arch::asm!("fxsave64 [{0}]", in(reg) p, options(nostack)) };
    }
}

/// Load the registers from `p`.
///
/// # Safety
/// `p` must hold a state saved by [`save_to`] (a corrupt one raises #GP).
pub unsafe fn restore_from(p: *const u8) {
    if USE_XSAVE.load(Ordering::Relaxed) {
        // SAFETY: as the caller promised.
        unsafe {
            core::arch::asm!("xrstor64 [{0}]", in(reg) p, in("eax") u32::MAX, in("edx") u32::MAX, options(nostack))
        };
    } else {
        // SAFETY: as the caller promised.
        unsafe { core::arch::asm!("fxrstor64 [{0}]", in(reg) p, options(nostack)) };
    }
}
