//! The guest side of the hvt platform.
//!
//! The monitor (`unikernel-hvt`) prepares the whole machine on the host and
//! enters [`hvt_entry`] at ring 3 with `%rdi` pointing at the
//! [`hvt_abi::BootInfo`]. This crate turns that into the runtime's
//! [`unikernel_runtime::BootInfo`], and implements the platform contract
//! with hypercalls: one 8-byte MMIO write of the argument struct's address
//! to the call's slot (see `hvt_abi::hypercall`).
#![no_std]

extern crate alloc;

#[cfg(feature = "block")]
pub mod block;
mod clock;
mod hypercall;
#[cfg(feature = "net")]
pub mod net;
mod timer;

use alloc::string::String;
use alloc::vec::Vec;
use clock::TscClock;
use hvt_abi::hypercall as hc;
use hvt_abi::{layout, BootInfo as HvtBootInfo};
use unikernel_runtime::{AppImage, BootInfo, MemRange, Platform, Stream};

pub use hvt_abi::KERNEL_HEADER_MAGIC;

struct Hvt {
    clock: TscClock,
    /// `BOOT_FLAG_DEBUGGER`.
    debugger: bool,
    /// Where the monitor's `BootInfo::debug_interrupt` is (identity-mapped).
    debug_interrupt: u64,
}

static mut HVT: Hvt = Hvt {
    clock: TscClock::zero(),
    debugger: false,
    debug_interrupt: 0,
};

/// The debug-stop call's argument, used only while `IN_DEBUG_STOP` is held.
static mut DEBUG_STOP: hc::DebugStop = hc::DebugStop {
    regs: hc::DebugRegs {
        gpr: [0; 16],
        rip: 0,
        rflags: 0,
        cs: 0,
        ss: 0,
        fs_base: 0,
        gs_base: 0,
    },
    vector: 0,
    signal: 0,
    resume: 0,
    _pad: 0,
};
static IN_DEBUG_STOP: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// The crash record [`Platform::halt`] hands to the monitor once
/// [`Platform::note_crash`] filled it (`CRASH_NOTED`).
static mut CRASH: hc::CrashRecord = hc::CrashRecord {
    version: hc::CRASH_RECORD_VERSION,
    kind: hc::CRASH_FAULT,
    count: 0,
    guessed: 0,
    app_base: 0,
    frames: [0; hc::CRASH_FRAMES],
};
static CRASH_NOTED: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

impl Platform for Hvt {
    fn name(&self) -> &'static str {
        "hvt"
    }

    fn console_write(&self, stream: Stream, data: &[u8]) {
        let mut a = hc::ConsoleWrite {
            data: data.as_ptr() as u64,
            len: data.len() as u64,
            stream: match stream {
                Stream::Stdout => hc::STREAM_STDOUT,
                Stream::Stderr => hc::STREAM_STDERR,
            },
            ..Default::default()
        };
        hypercall::call(hc::Call::ConsoleWrite, &mut a);
    }

    fn console_read(&self, buf: &mut [u8]) -> usize {
        let mut a = hc::ConsoleRead {
            data: buf.as_mut_ptr() as u64,
            len: buf.len() as u64,
            read: 0,
        };
        hypercall::call(hc::Call::ConsoleRead, &mut a);
        (a.read as usize).min(buf.len())
    }

    fn monotonic_ns(&self) -> u64 {
        self.clock.monotonic_ns()
    }

    fn wall_clock_ns(&self) -> u64 {
        self.clock.wall_ns()
    }

    fn vdso_clock(&self) -> Option<unikernel_runtime::platform::VdsoClock> {
        Some(self.clock.vdso())
    }

    fn block_until(&self, deadline_ns: u64) {
        let now = self.monotonic_ns();
        if deadline_ns <= now {
            return;
        }
        #[cfg(feature = "net")]
        net::kick_pending_tx();
        let mut a = hc::Poll {
            timeout_nsecs: deadline_ns - now,
            ready_set: 0,
        };
        hypercall::call(hc::Call::Poll, &mut a);
    }

    fn note_crash(&self, fault: bool, frames: &[u64], guessed: u32, app_base: u64) {
        use core::sync::atomic::Ordering;
        // One record: the first crash wins (a second one is a crash while
        // reporting the first).
        if CRASH_NOTED.swap(true, Ordering::SeqCst) {
            return;
        }
        let n = frames.len().min(hc::CRASH_FRAMES);
        // SAFETY: only this function writes CRASH, once (the swap above),
        // and the monitor reads it only after the halt call below.
        let r = unsafe { &mut *core::ptr::addr_of_mut!(CRASH) };
        r.kind = if fault {
            hc::CRASH_FAULT
        } else {
            hc::CRASH_PANIC
        };
        r.count = n as u32;
        r.guessed = guessed;
        r.app_base = app_base;
        r.frames[..n].copy_from_slice(&frames[..n]);
    }

    fn debugger(&self) -> bool {
        self.debugger
    }

    fn debug_interrupt(&self) -> bool {
        if !self.debugger || IN_DEBUG_STOP.load(core::sync::atomic::Ordering::SeqCst) {
            return false;
        }
        let word = self.debug_interrupt as *mut u64;
        // SAFETY: the word is inside the monitor's BootInfo, identity-mapped
        // and never reused; the monitor may set it at any time (volatile).
        unsafe {
            if core::ptr::read_volatile(word) == 0 {
                return false;
            }
            core::ptr::write_volatile(word, 0);
        }
        true
    }

    fn debug_stop(
        &self,
        stop: &mut unikernel_runtime::debug::Stop,
    ) -> unikernel_runtime::debug::Resume {
        use core::sync::atomic::Ordering;
        use unikernel_runtime::debug::Resume;
        // A stop inside a stop (a tick while the first one is reported)
        // is not one.
        if IN_DEBUG_STOP.swap(true, Ordering::SeqCst) {
            return Resume::Continue;
        }
        // SAFETY: IN_DEBUG_STOP makes this the only user of DEBUG_STOP, a
        // kernel static (identity-mapped: its address is the physical one).
        let a = unsafe { &mut *core::ptr::addr_of_mut!(DEBUG_STOP) };
        a.regs = hc::DebugRegs {
            gpr: stop.gpr,
            rip: stop.rip,
            rflags: stop.rflags,
            cs: stop.cs,
            ss: stop.ss,
            fs_base: stop.fs_base,
            gs_base: 0,
        };
        a.vector = stop.vector;
        a.signal = stop.signal;
        a.resume = hc::DEBUG_RESUME_CONTINUE;
        hypercall::call(hc::Call::DebugStop, a);
        stop.gpr = a.regs.gpr;
        stop.rip = a.regs.rip;
        stop.rflags = a.regs.rflags;
        let resume = if a.resume == hc::DEBUG_RESUME_STEP {
            Resume::Step
        } else {
            Resume::Continue
        };
        IN_DEBUG_STOP.store(false, Ordering::SeqCst);
        resume
    }

    fn halt(&self, exit_code: u32) -> ! {
        // The kernel's statics are identity-mapped: the address is the
        // guest-physical one the monitor reads.
        let crash = if CRASH_NOTED.load(core::sync::atomic::Ordering::SeqCst) {
            core::ptr::addr_of!(CRASH) as u64
        } else {
            0
        };
        let mut a = hc::Halt {
            exit_code,
            _pad: 0,
            crash,
        };
        loop {
            hypercall::call(hc::Call::Halt, &mut a);
        }
    }

    fn flush_tlb_page(&self, va: u64) {
        unikernel_runtime::arch::x86_64::cpu::privileged::invlpg(va);
    }

    fn flush_tlb_all(&self) {
        unikernel_runtime::arch::x86_64::cpu::privileged::flush_all();
    }

    /// Each privileged operation is a trip through kvm-pvm's emulated
    /// ring 0: one full flush costs what one `invlpg` does.
    fn tlb_flush_pages_max(&self) -> usize {
        1
    }

    fn set_timer(&self, deadline_ns: Option<u64>) {
        timer::set(deadline_ns, self.clock.boot_tsc());
    }

    fn end_of_interrupt(&self, vector: u8) {
        if vector == unikernel_runtime::sched::TICK_VECTOR {
            timer::acknowledge();
        }
    }
}

/// The runtime options the monitor wrote: space-separated `KEY=VALUE`
/// tokens (none when the string is empty or not UTF-8).
fn options(bi: &HvtBootInfo) -> Vec<String> {
    if bi.options_len == 0 {
        return Vec::new();
    }
    // SAFETY: the monitor wrote `options_len` bytes at `options` inside the
    // boot area (identity-mapped, never reused while the guest runs).
    let bytes =
        unsafe { core::slice::from_raw_parts(bi.options as *const u8, bi.options_len as usize) };
    core::str::from_utf8(bytes)
        .map(|s| {
            s.split(' ')
                .filter(|t| !t.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// The image's declared disks the monitor wrote: `NAME=MOUNT` entries
/// separated by NUL bytes (none when the string is empty or not UTF-8).
fn disks(bi: &HvtBootInfo) -> Vec<String> {
    if bi.disks_len == 0 {
        return Vec::new();
    }
    // SAFETY: the monitor wrote `disks_len` bytes at `disks` inside the
    // boot area (identity-mapped, never reused while the guest runs).
    let bytes =
        unsafe { core::slice::from_raw_parts(bi.disks as *const u8, bi.disks_len as usize) };
    core::str::from_utf8(bytes)
        .map(|s| {
            s.split('\0')
                .filter(|t| !t.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

extern "C" {
    /// The end of the kernel image (templates/kernel-glue/link-hvt.ld).
    static __kernel_end: u8;
}

/// Called by the entry stub with the monitor's boot info.
#[no_mangle]
extern "C" fn hvt_main(info: *const HvtBootInfo) -> ! {
    // SAFETY: the monitor placed a BootInfo there (identity-mapped) and
    // nothing else writes it; copy it out once.
    let bi = unsafe { info.read() };
    if bi.magic != hvt_abi::BOOT_INFO_MAGIC || bi.abi_version != hvt_abi::ABI_VERSION {
        // No console contract can be trusted: halt with the kernel-panic code.
        let mut a = hc::Halt {
            exit_code: 253,
            _pad: 0,
            crash: 0,
        };
        hypercall::call(hc::Call::Halt, &mut a);
    }
    // SAFETY: single CPU, written once before anything reads it.
    let hvt: &'static Hvt = unsafe {
        let p = core::ptr::addr_of_mut!(HVT);
        (*p).clock = TscClock::new(bi.tsc_khz, bi.wall_clock_ns, bi.wall_clock_tsc);
        (*p).debugger = bi.flags & hvt_abi::BOOT_FLAG_DEBUGGER != 0;
        (*p).debug_interrupt =
            info as u64 + core::mem::offset_of!(HvtBootInfo, debug_interrupt) as u64;
        &*p
    };
    let mut free = [MemRange::default(); unikernel_runtime::platform::MAX_FREE_RANGES];
    let n = (bi.free_count as usize)
        .min(hvt_abi::MAX_FREE_RANGES)
        .min(free.len());
    for (dst, src) in free.iter_mut().zip(&bi.free[..n]) {
        *dst = MemRange {
            start: src.start,
            end: src.end,
        };
    }
    // SAFETY: the monitor wrote the app name (UTF-8, checked by the builder)
    // into the boot area, which stays untouched.
    let name =
        unsafe { core::slice::from_raw_parts(bi.app_name as *const u8, bi.app_name_len as usize) };
    let name = core::str::from_utf8(name).unwrap_or("app");
    // The heap (for the options) needs frames before the runtime starts.
    {
        let mut frames = unikernel_runtime::mm::frame::FRAMES.lock();
        for r in &free[..n] {
            frames.add_range(*r);
        }
    }
    let options = options(&bi);
    let disks = disks(&bi);
    #[cfg(feature = "net")]
    net::probe();
    #[cfg(feature = "block")]
    {
        block::probe(bi.mem_size);
        block::selftest(&options, &|| hvt.monotonic_ns(), &|s| {
            hvt.console_write(Stream::Stderr, s.as_bytes())
        });
    }
    let boot = BootInfo {
        mem_size: bi.mem_size,
        free,
        free_count: n,
        page_table_root: bi.page_table_root,
        kernel_stack_top: bi.kernel_stack_top,
        kernel_stack_bottom: bi.kernel_stack_bottom,
        fault_stack_top: bi.fault_stack_top,
        kernel_start: layout::KERNEL_BASE,
        // A linker-script symbol; only its address is taken. (Not the
        // app's base: a fixed-address app has base 0.)
        kernel_end: core::ptr::addr_of!(__kernel_end) as u64,
        trace_syscalls: bi.flags & hvt_abi::BOOT_FLAG_TRACE_SYSCALLS != 0,
        app: AppImage {
            entry: bi.app_entry,
            stack_pointer: bi.app_stack_pointer,
            base: bi.app_base,
            end: bi.app_end,
            stack_top: layout::USER_STACK_TOP,
            stack_mapped_bottom: bi.app_stack_mapped_bottom,
            stack_reserve_bottom: layout::USER_STACK_TOP - layout::USER_STACK_RESERVE,
            name,
        },
        app_spec: None,
        options,
        disks,
        files_addr: bi.files_addr,
        files_len: bi.files_len,
    };
    unikernel_runtime::start(boot, hvt)
}

// The kernel header (first bytes of the image, at KERNEL_BASE) and the entry.
// They share one object file so that the linker's ENTRY keeps the header too.
core::arch::global_asm!(
    r#"
    .section .kernel_header, "a"
    .balign 8
    .global hvt_kernel_header
hvt_kernel_header:
    .quad {magic}
    .long {abi}
    .long {stub_size}
    .quad hvt_entry
    .quad unikernel_syscall_entry
    .quad unikernel_trap_stubs

    .section .text.hvt_entry, "ax"
    .global hvt_entry
hvt_entry:
    /* ring 3, %rsp = kernel stack top, %rdi = BootInfo */
    andq $-16, %rsp
    xorl %ebp, %ebp
    call hvt_main
    ud2
"#,
    magic = const hvt_abi::KERNEL_HEADER_MAGIC,
    abi = const hvt_abi::ABI_VERSION,
    stub_size = const unikernel_runtime::arch::x86_64::trap::TRAP_STUB_SIZE,
    options(att_syntax)
);
