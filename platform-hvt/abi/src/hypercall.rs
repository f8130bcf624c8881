//! Hypercalls: the guest writes the guest-physical address of an argument
//! struct (8-byte write) to the call's MMIO slot; the vCPU exits to the monitor
//! (`KVM_EXIT_MMIO`), which validates the struct's address and every pointer
//! in it against guest RAM, performs the call, writes results back into the
//! struct, and resumes the guest. MMIO, unlike port I/O, works from ring 3.

use crate::layout::HYPERCALL_MMIO_BASE;

/// Call numbers. The MMIO address of call `n` is `HYPERCALL_MMIO_BASE + 8 * n`.
#[repr(u64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    /// [`ConsoleWrite`]: write bytes to the monitor's stdout or stderr.
    ConsoleWrite = 1,
    /// [`ConsoleRead`]: read bytes from the monitor's stdin (blocks).
    ConsoleRead = 2,
    /// [`WallTime`]: nanoseconds since the Unix epoch.
    WallTime = 3,
    /// [`Poll`]: block until a device is ready or the timeout passes.
    Poll = 4,
    /// [`Halt`]: stop the guest with an exit code.
    Halt = 5,
    /// [`Timer`]: the one-shot timer interrupt (deadline in a shared [`TimerBlock`]).
    Timer = 6,
    /// [`crate::net::NetInfo`]: is a network device attached, its MAC and MTU.
    NetInfo = 7,
    /// [`crate::net::NetSetup`]: hand the monitor the rx and tx rings.
    NetSetup = 8,
    /// [`crate::net::NetNotify`]: the tx ring went from empty to non-empty.
    NetNotify = 9,
    /// [`crate::block::BlockInfo`]: a disk's name, size and flags.
    BlockInfo = 10,
    /// [`crate::block::BlockSetup`]: hand the monitor a disk's request ring.
    BlockSetup = 11,
    /// [`crate::block::BlockNotify`]: a request ring went from empty to non-empty.
    BlockNotify = 12,
    /// [`crate::block::BlockWait`]: block until requests completed.
    BlockWait = 13,
    /// [`DebugStop`]: the app stopped for the debugger (`--gdb`): a
    /// breakpoint, a finished single step, a fault or an interrupt request.
    DebugStop = 14,
}

impl Call {
    pub const ALL: [Call; 14] = [
        Call::ConsoleWrite,
        Call::ConsoleRead,
        Call::WallTime,
        Call::Poll,
        Call::Halt,
        Call::Timer,
        Call::NetInfo,
        Call::NetSetup,
        Call::NetNotify,
        Call::BlockInfo,
        Call::BlockSetup,
        Call::BlockNotify,
        Call::BlockWait,
        Call::DebugStop,
    ];

    /// The call whose MMIO slot is at `addr`, if any.
    pub fn from_mmio_address(addr: u64) -> Option<Call> {
        Self::ALL.into_iter().find(|c| mmio_address(*c) == addr)
    }

    pub fn name(self) -> &'static str {
        match self {
            Call::ConsoleWrite => "console_write",
            Call::ConsoleRead => "console_read",
            Call::WallTime => "walltime",
            Call::Poll => "poll",
            Call::Halt => "halt",
            Call::Timer => "timer",
            Call::NetInfo => "net_info",
            Call::NetSetup => "net_setup",
            Call::NetNotify => "net_notify",
            Call::BlockInfo => "block_info",
            Call::BlockSetup => "block_setup",
            Call::BlockNotify => "block_notify",
            Call::BlockWait => "block_wait",
            Call::DebugStop => "debug_stop",
        }
    }
}

/// Guest-physical MMIO address of a call's slot.
pub const fn mmio_address(call: Call) -> u64 {
    HYPERCALL_MMIO_BASE + 8 * call as u64
}

/// The registers of the app where it stopped for the debugger, in the
/// order of gdb's amd64 `g` packet: rax, rbx, rcx, rdx, rsi, rdi, rbp,
/// rsp, r8-r15, rip, rflags, cs, ss, fs base, gs base.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DebugRegs {
    pub gpr: [u64; 16],
    pub rip: u64,
    pub rflags: u64,
    pub cs: u64,
    pub ss: u64,
    pub fs_base: u64,
    pub gs_base: u64,
}

/// `DebugStop::vector` for a stop asked for with [`crate::BootInfo`]'s
/// `debug_interrupt` (not a CPU exception).
pub const DEBUG_STOP_INTERRUPT: u32 = 0x100;

/// `DebugStop::resume` values (set by the monitor).
pub const DEBUG_RESUME_CONTINUE: u32 = 0;
/// Run one instruction, then stop again (the guest sets RFLAGS.TF).
pub const DEBUG_RESUME_STEP: u32 = 1;

/// The app stopped for the debugger: the monitor serves gdb until gdb
/// resumes it, then writes back the registers (the guest takes the general
/// registers, `rip` and the arithmetic flags from them, never `cs`/`ss`)
/// and how to resume.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DebugStop {
    pub regs: DebugRegs,
    /// The exception vector (1 #DB, 3 #BP, 14 #PF, ...) or
    /// [`DEBUG_STOP_INTERRUPT`].
    pub vector: u32,
    /// The Linux signal the stop stands for (SIGTRAP 5, SIGINT 2, SIGSEGV 11...).
    pub signal: u32,
    /// Out: `DEBUG_RESUME_*`.
    pub resume: u32,
    pub _pad: u32,
}

/// `ConsoleWrite::stream` values.
pub const STREAM_STDOUT: u32 = 1;
pub const STREAM_STDERR: u32 = 2;

/// Write `len` bytes at guest-physical `data` to the monitor's stdout or stderr.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ConsoleWrite {
    pub data: u64,
    pub len: u64,
    pub stream: u32,
    pub _pad: u32,
    /// Out: bytes written.
    pub written: u64,
}

/// Read up to `len` bytes from the monitor's stdin into guest-physical `data`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ConsoleRead {
    pub data: u64,
    pub len: u64,
    /// Out: bytes read (0 = end of file).
    pub read: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct WallTime {
    /// Out: ns since the Unix epoch.
    pub nsecs: u64,
}

/// Block until one of the attached devices is ready or `timeout_nsecs` passed.
/// Without devices it simply sleeps on the host; with the network device it
/// returns early when a frame waits in the rx ring ([`crate::net::NET_READY`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Poll {
    pub timeout_nsecs: u64,
    /// Out: bitmap of ready device handles (0 = timeout).
    pub ready_set: u64,
}

/// Stop the guest. The monitor exits with `exit_code` (0-255 are the app's).
/// `crash` is 0, or the guest-physical address of a [`CrashRecord`]: the
/// stack of the fault or panic that ends the guest, which the runner
/// symbolizes (docs/debugging.md).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Halt {
    pub exit_code: u32,
    pub _pad: u32,
    pub crash: u64,
}

/// Most frames a [`CrashRecord`] holds.
pub const CRASH_FRAMES: usize = 32;
/// [`CrashRecord::version`] of this layout.
pub const CRASH_RECORD_VERSION: u32 = 1;
/// [`CrashRecord::kind`]: `frames[0]` is the faulting instruction, the
/// rest return addresses.
pub const CRASH_FAULT: u32 = 0;
/// [`CrashRecord::kind`]: every frame is a return address (a panic).
pub const CRASH_PANIC: u32 = 1;

/// The stack of a crash, innermost first, as raw addresses.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CrashRecord {
    pub version: u32,
    pub kind: u32,
    /// Valid entries of `frames` (at most [`CRASH_FRAMES`]).
    pub count: u32,
    /// Bit i set: `frames[i]` was found by scanning the stack (no frame
    /// pointer chain led to it) and may be stale.
    pub guessed: u32,
    /// Where the app's lowest segment was loaded (`inspect`'s app base).
    pub app_base: u64,
    pub frames: [u64; CRASH_FRAMES],
}

impl Default for CrashRecord {
    fn default() -> Self {
        CrashRecord {
            version: CRASH_RECORD_VERSION,
            kind: CRASH_FAULT,
            count: 0,
            guessed: 0,
            app_base: 0,
            frames: [0; CRASH_FRAMES],
        }
    }
}

/// Register the guest's [`TimerBlock`] and wake the monitor's timer thread
/// to look at it: the one-shot timer interrupt. The first call starts the
/// timer thread (none runs before). Every later call only tells the monitor
/// that the block's deadline moved earlier than [`TimerBlock::armed_ns`];
/// a later deadline, or none, needs no call. `vector` is injected into the
/// vCPU (as soon as the guest has IF set) when the deadline passes; the
/// monitor drives it from a host thread, so no in-kernel irqchip (and no
/// EOI) is involved. No out fields.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Timer {
    /// Guest-physical address of the [`TimerBlock`] (8-byte aligned, in RAM).
    pub block: u64,
    /// The guest TSC value at which the guest's monotonic clock reads 0
    /// (its clock is `(tsc - tsc_at_zero) * 1e6 / BootInfo::tsc_khz` ns).
    pub tsc_at_zero: u64,
    /// 32..=255.
    pub vector: u32,
    pub _pad: u32,
}

/// Shared between the guest and the monitor's timer thread (both update it
/// while the guest runs; every field is one naturally aligned u64 read and
/// written atomically). Times are guest monotonic ns; `u64::MAX` = none.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TimerBlock {
    /// Guest: when to interrupt. The monitor sets it back to `u64::MAX`
    /// when it fires.
    pub deadline_ns: u64,
    /// Monitor: the time by which its timer thread next reads
    /// `deadline_ns`. A guest that writes an earlier deadline makes a
    /// [`Timer`] call; a later one is seen then without any call.
    pub armed_ns: u64,
    /// Monitor: how many timer interrupts it has fired.
    pub fired: u64,
    /// Guest: the `fired` count it has handled. While it is behind, the
    /// monitor sends the interrupt again every [`TIMER_RESEND_NS`] (an
    /// interrupt the guest deferred and could not act on is not lost).
    pub acked: u64,
}

/// See [`TimerBlock::acked`].
pub const TIMER_RESEND_NS: u64 = 1_000_000;

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn mmio_roundtrip() {
        for c in Call::ALL {
            assert_eq!(Call::from_mmio_address(mmio_address(c)), Some(c));
        }
        assert_eq!(Call::from_mmio_address(HYPERCALL_MMIO_BASE), None);
        assert_eq!(core::mem::size_of::<ConsoleWrite>(), 32);
        assert_eq!(core::mem::size_of::<DebugStop>(), 192);
        assert_eq!(core::mem::size_of::<Timer>(), 24);
        assert_eq!(core::mem::size_of::<TimerBlock>(), 32);
    }
}
