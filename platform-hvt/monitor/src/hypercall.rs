//! Serving the guest's hypercalls.
//!
//! A call is one 8-byte MMIO write to the call's slot
//! ([`hvt_abi::hypercall::mmio_address`]); the written value is the
//! guest-physical address of the call's argument struct. The vCPU exits with
//! `KVM_EXIT_MMIO`; [`handle`] reads the struct (bounds-checked), checks every
//! buffer it names against guest RAM, performs the call on the host and writes
//! the out fields back. Anything else that reaches the MMIO window (a read, a
//! write of another size, an address that is no call) is an invalid call: the
//! guest is stopped and the monitor says why.
use std::io::{Read, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hvt_abi::hypercall::{
    Call, ConsoleRead, ConsoleWrite, CrashRecord, DebugStop, Halt, Poll, Timer, TimerBlock,
    WallTime, CRASH_FAULT, CRASH_FRAMES, CRASH_PANIC, CRASH_RECORD_VERSION, STREAM_STDERR,
    STREAM_STDOUT,
};
use thiserror::Error;

use crate::memory::{GuestMemory, OutOfBounds, Pod};

/// Longest a single poll call sleeps; the guest simply polls again.
pub const MAX_POLL_SLEEP: Duration = Duration::from_secs(3600);

/// What the run loop does after a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Resume the guest.
    Continue,
    /// The guest halted; exit with this code.
    Halt(i32),
    /// The guest registered its timer block (or moved its deadline
    /// earlier): `block` is checked to lie in guest RAM, 8-byte aligned.
    Timer {
        block: u64,
        tsc_at_zero: u64,
        vector: u8,
    },
    /// The app stopped for the debugger: its [`DebugStop`] (read once) at
    /// `gpa`, where the answer goes.
    DebugStop { gpa: u64, stop: DebugStop },
}

/// An invalid hypercall (the guest's fault, never the monitor's).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum HypercallError {
    #[error("{kind} of {len} bytes at MMIO address {addr:#x}, which is no hypercall slot")]
    UnknownAddress {
        kind: &'static str,
        addr: u64,
        len: usize,
    },
    #[error("{call}: MMIO read of {len} bytes (calls are 8-byte writes)")]
    Read { call: &'static str, len: usize },
    #[error("{call}: MMIO write of {len} bytes (calls are 8-byte writes)")]
    WrongSize { call: &'static str, len: usize },
    #[error("{call}: argument struct at {gpa:#x} is not in guest RAM")]
    BadArgs { call: &'static str, gpa: u64 },
    #[error("{call}: buffer: {source}")]
    BadBuffer {
        call: &'static str,
        #[source]
        source: OutOfBounds,
    },
    #[error("console_write: unknown stream {0} (1 = stdout, 2 = stderr)")]
    BadStream(u32),
    #[error("timer: interrupt vector {0} is not an external interrupt (32..=255)")]
    BadVector(u32),
    #[error("timer: the timer block at {0:#x} is not 8-byte aligned inside guest RAM")]
    BadTimerBlock(u64),
    #[error("{call}: {msg}")]
    Net { call: &'static str, msg: String },
    #[error("{call}: {msg}")]
    Block { call: &'static str, msg: String },
}

/// Handles an MMIO write of `data` to `addr`.
pub fn handle_write(
    mem: &mut GuestMemory,
    addr: u64,
    data: &[u8],
) -> Result<Outcome, HypercallError> {
    let call = Call::from_mmio_address(addr).ok_or(HypercallError::UnknownAddress {
        kind: "write",
        addr,
        len: data.len(),
    })?;
    let arg: [u8; 8] = data.try_into().map_err(|_| HypercallError::WrongSize {
        call: call.name(),
        len: data.len(),
    })?;
    serve(mem, call, u64::from_le_bytes(arg))
}

/// Describes an MMIO read at `addr` (always invalid).
pub fn read_error(addr: u64, len: usize) -> HypercallError {
    match Call::from_mmio_address(addr) {
        Some(call) => HypercallError::Read {
            call: call.name(),
            len,
        },
        None => HypercallError::UnknownAddress {
            kind: "read",
            addr,
            len,
        },
    }
}

fn args<T: Pod>(mem: &GuestMemory, call: Call, gpa: u64) -> Result<T, HypercallError> {
    mem.read_obj(gpa).map_err(|_| HypercallError::BadArgs {
        call: call.name(),
        gpa,
    })
}

fn reply<T: Pod>(mem: &mut GuestMemory, call: Call, gpa: u64, v: &T) -> Result<(), HypercallError> {
    mem.write_obj(gpa, v).map_err(|_| HypercallError::BadArgs {
        call: call.name(),
        gpa,
    })
}

fn buffer_error(call: Call) -> impl FnOnce(OutOfBounds) -> HypercallError {
    move |source| HypercallError::BadBuffer {
        call: call.name(),
        source,
    }
}

/// Performs `call` with its argument struct at guest-physical `gpa`.
pub fn serve(mem: &mut GuestMemory, call: Call, gpa: u64) -> Result<Outcome, HypercallError> {
    match call {
        Call::ConsoleWrite => {
            let mut a: ConsoleWrite = args(mem, call, gpa)?;
            let bytes = mem.slice(a.data, a.len).map_err(buffer_error(call))?;
            a.written = match a.stream {
                STREAM_STDOUT => write_all(&mut std::io::stdout().lock(), bytes),
                STREAM_STDERR => write_all(&mut std::io::stderr().lock(), bytes),
                s => return Err(HypercallError::BadStream(s)),
            };

            reply(mem, call, gpa, &a)?;
        }
        Call::ConsoleRead => {
            let mut a: ConsoleRead = args(mem, call, gpa)?;
            let buf = mem.slice_mut(a.data, a.len).map_err(buffer_error(call))?;
            a.read = read_some(&mut std::io::stdin().lock(), buf);
            reply(mem, call, gpa, &a)?;
        }
        Call::WallTime => {
            let mut a: WallTime = args(mem, call, gpa)?;
            a.nsecs = wall_clock_ns();
            reply(mem, call, gpa, &a)?;
        }
        Call::Poll => {
            let mut a: Poll = args(mem, call, gpa)?;
            // Without a network device, waiting is just sleeping.
            let timeout = Duration::from_nanos(a.timeout_nsecs).min(MAX_POLL_SLEEP);
            a.ready_set = crate::net::wait(mem, timeout);
            reply(mem, call, gpa, &a)?;
        }
        Call::Timer => {
            let a: Timer = args(mem, call, gpa)?;
            let vector = u8::try_from(a.vector)
                .ok()
                .filter(|v| *v >= 32)
                .ok_or(HypercallError::BadVector(a.vector))?;
            let size = std::mem::size_of::<TimerBlock>() as u64;
            if a.block % 8 != 0 || mem.check(a.block, size).is_err() {
                return Err(HypercallError::BadTimerBlock(a.block));
            }
            return Ok(Outcome::Timer {
                block: a.block,
                tsc_at_zero: a.tsc_at_zero,
                vector,
            });
        }
        Call::NetInfo | Call::NetSetup | Call::NetNotify => crate::net::serve(mem, call, gpa)?,
        Call::BlockInfo | Call::BlockSetup | Call::BlockNotify | Call::BlockWait => {
            crate::block::serve(mem, call, gpa)?
        }
        Call::DebugStop => {
            let stop: DebugStop = args(mem, call, gpa)?;
            return Ok(Outcome::DebugStop { gpa, stop });
        }
        Call::Halt => {
            let a: Halt = args(mem, call, gpa)?;
            let _ = std::io::stdout().flush();
            let _ = std::io::stderr().flush();
            if a.crash != 0 {
                match crash_record(mem, a.crash) {
                    Ok(record) => *LAST_CRASH.lock().unwrap_or_else(|e| e.into_inner()) = Some(record),
                    Err(why) => eprintln!(
                        "unikernel-hvt: the guest's crash record at {:#x} is unusable ({why}); no stack to report",
                        a.crash
                    ),
                }
            }
            return Ok(Outcome::Halt((a.exit_code & 0xff) as i32));
        }
    }
    Ok(Outcome::Continue)
}

/// The stack the guest handed over with its last halt, checked.
static LAST_CRASH: std::sync::Mutex<Option<CrashReport>> = std::sync::Mutex::new(None);

/// A crash record the monitor has checked: only `count` frames, a known kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrashReport {
    /// `frames[0]` is the faulting instruction (not a return address).
    pub fault: bool,
    pub app_base: u64,
    /// Innermost first; `true` where the guest found it by scanning the stack.
    pub frames: Vec<(u64, bool)>,
}

/// The crash record of the run that just ended, if its guest gave one.
pub fn take_crash() -> Option<CrashReport> {
    LAST_CRASH.lock().unwrap_or_else(|e| e.into_inner()).take()
}

/// Reads the guest's [`CrashRecord`] once and checks every field.
fn crash_record(mem: &GuestMemory, gpa: u64) -> Result<CrashReport, String> {
    let r: CrashRecord = mem
        .read_obj(gpa)
        .map_err(|_| "not inside guest memory".to_string())?;
    if r.version != CRASH_RECORD_VERSION {
        return Err(format!(
            "version {}, expected {CRASH_RECORD_VERSION}",
            r.version
        ));
    }
    let fault = match r.kind {
        CRASH_FAULT => true,
        CRASH_PANIC => false,
        k => return Err(format!("unknown kind {k}")),
    };
    let count = r.count as usize;
    if count > CRASH_FRAMES {
        return Err(format!("{count} frames, at most {CRASH_FRAMES}"));
    }
    let frames = r.frames[..count]
        .iter()
        .enumerate()
        .map(|(i, &pc)| (pc, r.guessed & (1 << i) != 0))
        .collect();
    Ok(CrashReport {
        fault,
        app_base: r.app_base,
        frames,
    })
}

/// Writes all of `bytes` and flushes; returns how many were written (fewer
/// only if the host stream failed, e.g. a closed pipe).
fn write_all(out: &mut impl Write, bytes: &[u8]) -> u64 {
    let mut done = 0;
    while done < bytes.len() {
        match out.write(&bytes[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = out.flush();
    done as u64
}

/// One blocking read; 0 at end of file (or if stdin fails).
fn read_some(input: &mut impl Read, buf: &mut [u8]) -> u64 {
    if buf.is_empty() {
        return 0;
    }
    loop {
        match input.read(buf) {
            Ok(n) => return n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return 0,
        }
    }
}

/// Nanoseconds since the Unix epoch (0 if the host clock is before 1970).
pub fn wall_clock_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hvt_abi::hypercall::mmio_address;

    fn write_call(mem: &mut GuestMemory, call: Call, gpa: u64) -> Result<Outcome, HypercallError> {
        handle_write(mem, mmio_address(call), &gpa.to_le_bytes())
    }

    #[test]
    fn halt_masks_the_exit_code() {
        let mut mem = GuestMemory::new(0x2000).unwrap();
        mem.write_obj(
            0x100,
            &Halt {
                exit_code: 0x1_07,
                _pad: 0,
                crash: 0,
            },
        )
        .unwrap();
        assert_eq!(
            write_call(&mut mem, Call::Halt, 0x100),
            Ok(Outcome::Halt(7))
        );
    }

    #[test]
    fn crash_records_are_checked() {
        let mut mem = GuestMemory::new(0x2000).unwrap();
        let mut r = CrashRecord {
            kind: CRASH_PANIC,
            count: 3,
            guessed: 0b100,
            app_base: 0x137000,
            ..CrashRecord::default()
        };
        r.frames[..4].copy_from_slice(&[0x1000, 0x2000, 0x3000, 0x4000]);
        mem.write_obj(0x200, &r).unwrap();
        assert_eq!(
            crash_record(&mem, 0x200),
            Ok(CrashReport {
                fault: false,
                app_base: 0x137000,
                frames: vec![(0x1000, false), (0x2000, false), (0x3000, true)],
            })
        );
        // Outside guest memory, straddling its end, an address near u64::MAX.
        for gpa in [0x2000, 0x1f00, u64::MAX - 8] {
            assert!(crash_record(&mem, gpa).is_err(), "{gpa:#x}");
        }
        for bad in [
            CrashRecord { count: 33, ..r },
            CrashRecord { kind: 9, ..r },
            CrashRecord { version: 0, ..r },
        ] {
            mem.write_obj(0x200, &bad).unwrap();
            assert!(crash_record(&mem, 0x200).is_err(), "{bad:?}");
        }
        // A bad record still halts with the code; nothing is kept.
        take_crash();
        mem.write_obj(
            0x100,
            &Halt {
                exit_code: 139,
                _pad: 0,
                crash: 0x1f00,
            },
        )
        .unwrap();
        assert_eq!(
            write_call(&mut mem, Call::Halt, 0x100),
            Ok(Outcome::Halt(139))
        );
        assert_eq!(take_crash(), None);
    }

    #[test]
    fn bad_pointers_are_invalid_calls() {
        let mut mem = GuestMemory::new(0x2000).unwrap();
        assert!(matches!(
            write_call(&mut mem, Call::Halt, 0x1ffc),
            Err(HypercallError::BadArgs { .. })
        ));
        let a = ConsoleWrite {
            data: 0x1f00,
            len: 0x200,
            stream: 1,
            ..Default::default()
        };
        mem.write_obj(0x100, &a).unwrap();
        assert!(matches!(
            write_call(&mut mem, Call::ConsoleWrite, 0x100),
            Err(HypercallError::BadBuffer { .. })
        ));
        let a = ConsoleWrite {
            data: u64::MAX,
            len: 2,
            stream: 1,
            ..Default::default()
        };
        mem.write_obj(0x100, &a).unwrap();
        assert!(write_call(&mut mem, Call::ConsoleWrite, 0x100).is_err());
        let a = ConsoleWrite {
            data: 0,
            len: 1,
            stream: 3,
            ..Default::default()
        };
        mem.write_obj(0x100, &a).unwrap();
        assert_eq!(
            write_call(&mut mem, Call::ConsoleWrite, 0x100),
            Err(HypercallError::BadStream(3))
        );
    }

    #[test]
    fn malformed_mmio_accesses_are_invalid_calls() {
        let mut mem = GuestMemory::new(0x2000).unwrap();
        assert!(matches!(
            handle_write(&mut mem, mmio_address(Call::Halt), &[0; 4]),
            Err(HypercallError::WrongSize { len: 4, .. })
        ));
        assert!(matches!(
            handle_write(&mut mem, mmio_address(Call::Halt) + 1, &[0; 8]),
            Err(HypercallError::UnknownAddress { .. })
        ));
        assert!(matches!(
            read_error(mmio_address(Call::Poll), 8),
            HypercallError::Read { .. }
        ));
    }

    #[test]
    fn walltime_and_poll_write_their_results() {
        let mut mem = GuestMemory::new(0x2000).unwrap();
        assert_eq!(
            write_call(&mut mem, Call::WallTime, 0x10),
            Ok(Outcome::Continue)
        );
        let t: WallTime = mem.read_obj(0x10).unwrap();
        assert!(t.nsecs > 1_600_000_000_000_000_000);
        mem.write_obj(
            0x20,
            &Poll {
                timeout_nsecs: 1000,
                ready_set: 99,
            },
        )
        .unwrap();
        assert_eq!(
            write_call(&mut mem, Call::Poll, 0x20),
            Ok(Outcome::Continue)
        );
        assert_eq!(mem.read_obj::<Poll>(0x20).unwrap().ready_set, 0);
    }

    #[test]
    fn timer_arguments_are_checked() {
        let mut mem = GuestMemory::new(0x2000).unwrap();
        let call = |mem: &mut GuestMemory, block: u64, vector: u32| {
            let a = Timer {
                block,
                tsc_at_zero: 5,
                vector,
                _pad: 0,
            };
            mem.write_obj(0x100, &a).unwrap();
            write_call(mem, Call::Timer, 0x100)
        };
        assert_eq!(
            call(&mut mem, 0x200, 32),
            Ok(Outcome::Timer {
                block: 0x200,
                tsc_at_zero: 5,
                vector: 32
            })
        );
        assert_eq!(
            call(&mut mem, 0x200, 14),
            Err(HypercallError::BadVector(14))
        );
        assert_eq!(
            call(&mut mem, 0x200, 256),
            Err(HypercallError::BadVector(256))
        );
        for bad in [0x204, 0x1ff8, 0x2000, u64::MAX - 7] {
            assert_eq!(
                call(&mut mem, bad, 32),
                Err(HypercallError::BadTimerBlock(bad))
            );
        }
    }

    mod hostile {
        use super::*;
        use proptest::prelude::*;

        /// Guest RAM of the fuzzed calls.
        const RAM: u64 = 0x1_0000;

        fn gpa() -> impl Strategy<Value = u64> {
            prop_oneof![
                4 => 0..RAM + 0x100,
                1 => (0u64..0x100).prop_map(|d| RAM - d),
                1 => (0u64..0x100).prop_map(|d| u64::MAX - d),
                1 => any::<u64>(),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(5000))]

            /// A hostile guest's calls: every call but the blocking console
            /// read, its argument struct anywhere (inside RAM, straddling
            /// its end, near u64::MAX), full of random bytes (pointers,
            /// lengths, streams, vectors, ring and disk numbers), and
            /// random MMIO writes: an outcome or an error, never a panic.
            #[test]
            fn random_calls_never_panic_the_monitor(
                fill in proptest::collection::vec(any::<u8>(), RAM as usize),
                which in 0usize..Call::ALL.len(),
                at in gpa(),
                mmio in (any::<u64>(), proptest::collection::vec(any::<u8>(), 0..10)),
            ) {
                let call = Call::ALL[which];
                prop_assume!(call != Call::ConsoleRead);
                let mut mem = GuestMemory::new(RAM).unwrap();
                mem.write(0, &fill).unwrap();
                // Calls that wait: a wait of at most a microsecond.
                let wait_at = match call {
                    Call::Poll => Some(0),
                    Call::BlockWait => Some(8),
                    _ => None,
                };
                if let Some(off) = wait_at {
                    let _ = mem.write_obj(at.wrapping_add(off), &(fill[0] as u64 * 4));
                }
                let _ = handle_write(&mut mem, mmio_address(call), &at.to_le_bytes());
                let (addr, data) = mmio;
                if Call::from_mmio_address(addr).is_none_or(|c| c != Call::ConsoleRead) {
                    let _ = handle_write(&mut mem, addr, &data);
                }
                let _ = read_error(addr, data.len());
            }
        }
    }
}
