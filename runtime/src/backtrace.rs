//! The stack of a crash, for the host to symbolize (docs/debugging.md).
//!
//! A fault report or a runtime panic ends with one crash line on the
//! console, and the platform gets the same addresses (hvt hands them to the
//! monitor with the halt call):
//!
//! ```text
//! unikernel-crash v1 fault app=0x137000 0x141c2a 0x1420f1 0x13d002~
//! ```
//!
//! `fault`: the first address is the faulting instruction, the others are
//! return addresses; `panic`: all are return addresses. `app=` is where the
//! app's lowest segment was loaded. A `~` marks an address found by scanning
//! the stack because no frame-pointer chain led further (it may be stale).
//!
//! The walk follows the frame-pointer chain (the builder compiles the app
//! and the kernel with frame pointers), reading only words the page tables
//! map, and stops at the first link that does not point further up the
//! stack or whose return address is not in the app's or the kernel's image.
//! Nothing here allocates or takes a lock it could wait for.

use crate::fmtbuf::FmtBuf;
use crate::mm::vm::ASPACE;

/// Most frames reported (the hvt crash record's size).
pub const MAX_FRAMES: usize = 32;
/// Words scanned above the stack pointer when the chain gives nothing.
const SCAN_WORDS: u64 = 512;
const PAGE: u64 = 4096;

/// The crash line's version.
pub const CRASH_LINE_VERSION: u32 = 1;

#[derive(Clone, Copy)]
pub struct Stack {
    /// `frames[0]` is the faulting instruction (not a return address).
    pub fault: bool,
    pub frames: [u64; MAX_FRAMES],
    pub len: usize,
    /// Bit i: `frames[i]` came from the stack scan.
    pub guessed: u32,
}

impl Stack {
    fn new(fault: bool) -> Stack {
        Stack {
            fault,
            frames: [0; MAX_FRAMES],
            len: 0,
            guessed: 0,
        }
    }

    fn push(&mut self, pc: u64, guessed: bool) -> bool {
        if self.len == MAX_FRAMES {
            return false;
        }
        self.frames[self.len] = pc;
        if guessed {
            self.guessed |= 1 << self.len;
        }
        self.len += 1;
        true
    }

    pub fn frames(&self) -> &[u64] {
        &self.frames[..self.len]
    }
}

/// True if every page of `[va, va + len)` is mapped (page tables checked
/// without waiting: a held address-space lock means "unknown", so false).
fn readable(va: u64, len: u64) -> bool {
    let Some(end) = va.checked_add(len) else {
        return false;
    };
    let Some(guard) = ASPACE.try_lock() else {
        return false;
    };
    let Some(space) = guard.as_ref() else {
        return false;
    };
    let mut page = va & !(PAGE - 1);
    while page < end {
        if space.page_table().translate(page).is_none() {
            return false;
        }
        page += PAGE;
    }
    true
}

fn read_word(va: u64) -> Option<u64> {
    if !va.is_multiple_of(8) || !readable(va, 8) {
        return None;
    }
    // SAFETY: aligned, and the page tables map it (checked just above);
    // the stack's owner is stopped (we are reporting its crash).
    Some(unsafe { core::ptr::read_volatile(va as *const u64) })
}

fn in_code(pc: u64) -> bool {
    let (a0, a1) = crate::app_range();
    let (k0, k1) = crate::kernel_range();
    (a0..a1).contains(&pc) || (k0..k1).contains(&pc)
}

/// The stack from `pc` with frame pointer `fp` and stack pointer `sp`.
pub fn walk(fault: bool, pc: u64, fp: u64, sp: u64) -> Stack {
    let mut s = Stack::new(fault);
    s.push(pc, false);
    let mut fp = fp;
    while fp != 0 {
        let (Some(next), Some(ret)) = (read_word(fp), fp.checked_add(8).and_then(read_word)) else {
            break;
        };
        if !in_code(ret) || !s.push(ret, false) || next <= fp {
            break;
        }
        fp = next;
    }
    if s.len == 1 {
        // No chain (code without frame pointers, or a clobbered rbp):
        // every word above sp that points into code, marked as a guess.
        for i in 0..SCAN_WORDS {
            let Some(w) = sp.checked_add(i * 8).and_then(read_word) else {
                break;
            };
            if in_code(w) && !s.push(w, true) {
                break;
            }
        }
    }
    s
}

/// The stack of the caller of this function (for a panic).
#[inline(never)]
pub fn here() -> Stack {
    let fp: u64;
    let sp: u64;
    // SAFETY: reads two registers, touches no memory.
    unsafe {
        core::arch::asm!("mov {}, rbp", "mov {}, rsp", out(reg) fp, out(reg) sp, options(nomem, nostack));
    }
    // Frame 0 of the walk is a placeholder (there is no faulting
    // instruction); the chain starts at this function's return address.
    let mut s = walk(false, 0, fp, sp);
    s.frames.copy_within(1..s.len, 0);
    s.len -= 1;
    s.guessed >>= 1;
    s
}

/// Print the crash line and hand the stack to the platform.
pub fn report(stack: &Stack) {
    use core::fmt::Write;
    let mut line: FmtBuf<800> = FmtBuf::new();
    let kind = if stack.fault { "fault" } else { "panic" };
    let app = crate::app_range().0;
    let _ = write!(
        line,
        "unikernel-crash v{CRASH_LINE_VERSION} {kind} app={app:#x}"
    );
    for (i, pc) in stack.frames().iter().enumerate() {
        let mark = if stack.guessed & (1 << i) != 0 {
            "~"
        } else {
            ""
        };
        let _ = write!(line, " {pc:#x}{mark}");
    }
    crate::kprintln!("{}", line.as_str());
    crate::platform().note_crash(stack.fault, stack.frames(), stack.guessed, app);
}
