//! `--gdb ADDR`: the GDB remote protocol (through the `gdbstub` crate) for
//! an hvt guest (docs/debugging.md).
//!
//! This machine's KVM (kvm-pvm) ignores `KVM_SET_GUEST_DEBUG`'s software
//! and hardware breakpoints for ring-3 code (the `int3` still reaches the
//! guest's IDT, the debug registers never fire) and single-steps only its
//! emulated ring 0, so the stub does not rely on it: the runtime traps the
//! app's `int3` and single steps (RFLAGS.TF) itself and makes the
//! debug-stop call with the app's registers; gdb is served there, and the
//! registers it leaves go back to the guest. Memory is read and written
//! through the guest's own page tables.
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use gdbstub::common::Signal;
use gdbstub::stub::state_machine::GdbStubStateMachine;
use gdbstub::stub::{GdbStub, SingleThreadStopReason};
use gdbstub::target::ext::base::singlethread::{
    SingleThreadBase, SingleThreadResume, SingleThreadResumeOps, SingleThreadSingleStep,
    SingleThreadSingleStepOps,
};
use gdbstub::target::ext::base::BaseOps;
use gdbstub::target::ext::breakpoints::{
    Breakpoints, BreakpointsOps, SwBreakpoint, SwBreakpointOps,
};
use gdbstub::target::{Target, TargetError, TargetResult};
use gdbstub_arch::x86::reg::X86_64CoreRegs;
use gdbstub_arch::x86::X86_64_SSE;
use hvt_abi::hypercall::{
    DebugRegs, DebugStop, DEBUG_RESUME_CONTINUE, DEBUG_RESUME_STEP, DEBUG_STOP_INTERRUPT,
};

use crate::memory::GuestMemory;

/// Physical-address bits of a page-table entry.
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
const INT3: u8 = 0xcc;

/// How gdb let the guest go on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resume {
    Continue,
    Step,
}

/// What serving gdb at a stop came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Go on (the registers gdb left are in the session).
    Resume(Resume),
    /// gdb killed the guest (`kill`, or it went away without detaching).
    Kill,
    /// gdb detached: run on without it.
    Detached,
}

/// The guest as gdbstub sees it at a stop.
pub struct Guest {
    /// Guest RAM as the vCPU thread's [`GuestMemory`] holds it; valid
    /// while the session is (the session lives in the `Vm`, dropped first).
    ram: crate::memory::SharedRam,
    regs: X86_64CoreRegs,
    /// The page-table root of the stop (CR3).
    cr3: u64,
    /// Inserted breakpoints: address -> the byte the `int3` replaced.
    breakpoints: HashMap<u64, u8>,
    resume: Option<Resume>,
}

impl Guest {
    /// The guest-physical address of virtual `va`, through the guest's
    /// four-level page tables (2 MiB and 1 GiB pages too); `None` where
    /// nothing is mapped or a table lies outside RAM.
    fn translate(&self, va: u64) -> Option<u64> {
        let mut table = self.cr3 & ADDR_MASK;
        for shift in [39u32, 30, 21, 12] {
            let entry: u64 = self
                .ram
                .read_obj(table + ((va >> shift) & 0x1ff) * 8)
                .ok()?;
            if entry & 1 == 0 {
                return None;
            }
            let size = 1u64 << shift;
            if shift == 12 || ((shift == 30 || shift == 21) && entry & (1 << 7) != 0) {
                return Some((entry & ADDR_MASK & !(size - 1)) + (va & (size - 1)));
            }
            table = entry & ADDR_MASK;
        }
        None
    }

    /// Copies guest-virtual `va..` into `buf` page by page; how many bytes
    /// could be read.
    fn read_virt(&self, va: u64, buf: &mut [u8]) -> usize {
        let mut done = 0;
        while done < buf.len() {
            let at = va.wrapping_add(done as u64);
            let Some(gpa) = self.translate(at) else { break };
            let n = ((0x1000 - (at & 0xfff)) as usize).min(buf.len() - done);
            if self.ram.read_into(gpa, &mut buf[done..done + n]).is_err() {
                break;
            }
            done += n;
        }
        done
    }

    fn write_virt(&self, va: u64, data: &[u8]) -> bool {
        let mut done = 0;
        while done < data.len() {
            let at = va.wrapping_add(done as u64);
            let Some(gpa) = self.translate(at) else {
                return false;
            };
            let n = ((0x1000 - (at & 0xfff)) as usize).min(data.len() - done);
            if self.ram.write_from(gpa, &data[done..done + n]).is_err() {
                return false;
            }
            done += n;
        }
        true
    }
}

impl Target for Guest {
    type Arch = X86_64_SSE;
    type Error = String;

    fn base_ops(&mut self) -> BaseOps<'_, Self::Arch, Self::Error> {
        BaseOps::SingleThread(self)
    }

    fn support_breakpoints(&mut self) -> Option<BreakpointsOps<'_, Self>> {
        Some(self)
    }

    // gdb may also plant `int3`s with plain memory writes: they trap into
    // the runtime like ours do.
    fn guard_rail_implicit_sw_breakpoints(&self) -> bool {
        true
    }
}

impl SingleThreadBase for Guest {
    fn read_registers(&mut self, regs: &mut X86_64CoreRegs) -> TargetResult<(), Self> {
        *regs = self.regs.clone();
        Ok(())
    }

    fn write_registers(&mut self, regs: &X86_64CoreRegs) -> TargetResult<(), Self> {
        self.regs = regs.clone();
        Ok(())
    }

    fn read_addrs(&mut self, start: u64, data: &mut [u8]) -> TargetResult<usize, Self> {
        match self.read_virt(start, data) {
            0 if !data.is_empty() => Err(TargetError::NonFatal),
            n => Ok(n),
        }
    }

    fn write_addrs(&mut self, start: u64, data: &[u8]) -> TargetResult<(), Self> {
        if self.write_virt(start, data) {
            Ok(())
        } else {
            Err(TargetError::NonFatal)
        }
    }

    fn support_resume(&mut self) -> Option<SingleThreadResumeOps<'_, Self>> {
        Some(self)
    }
}

impl SingleThreadResume for Guest {
    fn resume(&mut self, _signal: Option<Signal>) -> Result<(), Self::Error> {
        self.resume = Some(Resume::Continue);
        Ok(())
    }

    fn support_single_step(&mut self) -> Option<SingleThreadSingleStepOps<'_, Self>> {
        Some(self)
    }
}

impl SingleThreadSingleStep for Guest {
    fn step(&mut self, _signal: Option<Signal>) -> Result<(), Self::Error> {
        self.resume = Some(Resume::Step);
        Ok(())
    }
}

impl Breakpoints for Guest {
    fn support_sw_breakpoint(&mut self) -> Option<SwBreakpointOps<'_, Self>> {
        Some(self)
    }
}

impl SwBreakpoint for Guest {
    fn add_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        if self.breakpoints.contains_key(&addr) {
            return Ok(true);
        }
        let mut old = [0u8];
        if self.read_virt(addr, &mut old) != 1 || !self.write_virt(addr, &[INT3]) {
            return Ok(false);
        }
        self.breakpoints.insert(addr, old[0]);
        Ok(true)
    }

    fn remove_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        match self.breakpoints.remove(&addr) {
            Some(old) => Ok(self.write_virt(addr, &[old])),
            None => Ok(false),
        }
    }
}

type Machine = GdbStubStateMachine<'static, Guest, TcpStream>;

/// One gdb connection for the life of the guest.
pub struct Session {
    machine: Option<Machine>,
    pub guest: Guest,
    /// Bytes from gdb (the reader thread).
    bytes: mpsc::Receiver<u8>,
    /// gdb sent Ctrl-C while the guest ran (the reader thread sets it).
    interrupt: Arc<AtomicBool>,
    stream: TcpStream,
    reader: Option<JoinHandle<()>>,
    /// A step was asked for: the next #DB is its end.
    stepping: bool,
}

/// Why the session could not start.
#[derive(Debug, thiserror::Error)]
pub enum GdbError {
    #[error("cannot listen for gdb on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("waiting for gdb on {addr}: {source}")]
    Accept {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("gdb connection: {0}")]
    Protocol(String),
}

impl Session {
    /// Listens on `addr`, prints `command` (how to connect, from
    /// [`command_line`]), and waits for gdb.
    ///
    /// # Safety
    /// The session must be dropped before `mem` (it keeps a view of it).
    pub unsafe fn accept(
        addr: SocketAddr,
        mem: &GuestMemory,
        command: &str,
    ) -> Result<Session, GdbError> {
        let listener =
            TcpListener::bind(addr).map_err(|source| GdbError::Listen { addr, source })?;
        let bound = listener.local_addr().unwrap_or(addr);
        // Port 0 asks for any free port: name the one it got.
        let command = command.replace(&addr.to_string(), &bound.to_string());
        let addr = bound;
        eprintln!("unikernel-hvt: waiting for gdb on {addr}; connect with:\n  {command}");
        let (stream, peer) = listener
            .accept()
            .map_err(|source| GdbError::Accept { addr, source })?;
        eprintln!("unikernel-hvt: gdb connected from {peer}");
        let _ = stream.set_nodelay(true);
        let mut read_half = stream
            .try_clone()
            .map_err(|e| GdbError::Protocol(e.to_string()))?;
        let (tx, bytes) = mpsc::channel();
        let interrupt = Arc::new(AtomicBool::new(false));
        let flag = interrupt.clone();
        let reader = std::thread::Builder::new()
            .name("gdb-reader".into())
            .spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = read_half.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    if buf[..n].contains(&0x03) {
                        // The vCPU loop writes the guest's word before it
                        // injects this tick.
                        flag.store(true, Ordering::SeqCst);
                        crate::timer::interrupt_now();
                    }
                    if buf[..n].iter().any(|&b| tx.send(b).is_err()) {
                        break;
                    }
                }
            })
            .map_err(|e| GdbError::Protocol(e.to_string()))?;
        let mut guest = Guest {
            // SAFETY: the caller drops the session before `mem`.
            ram: unsafe { mem.shared() },
            regs: X86_64CoreRegs::default(),
            cr3: 0,
            breakpoints: HashMap::new(),
            resume: None,
        };
        let conn = stream
            .try_clone()
            .map_err(|e| GdbError::Protocol(e.to_string()))?;
        let machine = GdbStub::new(conn)
            .run_state_machine(&mut guest)
            .map_err(|e| GdbError::Protocol(e.to_string()))?;
        Ok(Session {
            machine: Some(machine),
            guest,
            bytes,
            interrupt,
            stream,
            reader: Some(reader),
            stepping: false,
        })
    }

    /// gdb pressed Ctrl-C while the guest ran (taking it clears it).
    pub fn take_interrupt(&self) -> bool {
        self.interrupt.swap(false, Ordering::SeqCst)
    }

    /// The first stop, before the guest's first instruction: gdb sets its
    /// breakpoints and continues. A step there is a continue (the entry
    /// runs in ring 0, which the runtime cannot step).
    pub fn initial(&mut self, regs: &kvm_bindings::kvm_regs, cr3: u64) -> Verdict {
        self.guest.regs = X86_64CoreRegs {
            regs: [
                regs.rax, regs.rbx, regs.rcx, regs.rdx, regs.rsi, regs.rdi, regs.rbp, regs.rsp,
                regs.r8, regs.r9, regs.r10, regs.r11, regs.r12, regs.r13, regs.r14, regs.r15,
            ],
            eflags: regs.rflags as u32,
            rip: regs.rip,
            ..Default::default()
        };
        self.guest.cr3 = cr3;
        match self.serve_while_stopped() {
            Verdict::Resume(_) => Verdict::Resume(Resume::Continue),
            v => v,
        }
    }

    /// The guest's debug-stop call: reports it to gdb and serves gdb until
    /// it resumes; `stop` then holds the registers and the way to resume.
    pub fn stop(&mut self, stop: &mut DebugStop, cr3: u64) -> Verdict {
        let r = stop.regs;
        self.guest.cr3 = cr3;
        let mut rip = r.rip;
        let reason = match stop.vector {
            // The int3 leaves rip after itself: gdb wants the breakpoint's.
            3 if self.guest.breakpoints.contains_key(&rip.wrapping_sub(1)) => {
                rip = rip.wrapping_sub(1);
                SingleThreadStopReason::SwBreak(())
            }
            1 if self.stepping => SingleThreadStopReason::DoneStep,
            DEBUG_STOP_INTERRUPT => SingleThreadStopReason::Signal(Signal::SIGINT),
            _ => SingleThreadStopReason::Signal(gdb_signal(stop.signal)),
        };
        self.stepping = false;
        self.guest.regs = X86_64CoreRegs {
            regs: r.gpr,
            eflags: r.rflags as u32,
            rip,
            segments: gdbstub_arch::x86::reg::X86SegmentRegs {
                cs: r.cs as u32,
                ss: r.ss as u32,
                ..Default::default()
            },
            ..Default::default()
        };
        let Some(machine) = self.machine.take() else {
            return Verdict::Detached;
        };
        let machine = match self.drain_running(machine) {
            Ok(GdbStubStateMachine::Running(m)) => m
                .report_stop(&mut self.guest, reason)
                .map_err(|e| e.to_string()),
            other => other,
        };
        match machine {
            Ok(m) => self.machine = Some(m),
            Err(e) => return connection_failed(e),
        }
        let verdict = self.serve_while_stopped();
        let g = &self.guest.regs;
        stop.regs = DebugRegs {
            gpr: g.regs,
            rip: g.rip,
            rflags: u64::from(g.eflags),
            ..r
        };
        stop.resume = match verdict {
            Verdict::Resume(Resume::Step) => {
                self.stepping = true;
                DEBUG_RESUME_STEP
            }
            _ => DEBUG_RESUME_CONTINUE,
        };
        verdict
    }

    /// The guest ended with `code` (its halt call): gdb hears it exited.
    pub fn exited(&mut self, code: i32) {
        self.report_end(SingleThreadStopReason::Exited((code & 0xff) as u8));
    }

    /// The guest crashed: gdb hears it was killed.
    pub fn crashed(&mut self) {
        self.report_end(SingleThreadStopReason::Terminated(Signal::SIGKILL));
    }

    fn report_end(&mut self, reason: SingleThreadStopReason<u64>) {
        if let Some(machine) = self.machine.take() {
            if let Ok(GdbStubStateMachine::Running(m)) = self.drain_running(machine) {
                let _ = m.report_stop(&mut self.guest, reason);
            }
        }
    }

    /// Feeds what gdb sent while the guest ran (a Ctrl-C among it: the
    /// stop being reported answers it).
    fn drain_running(&mut self, mut machine: Machine) -> Result<Machine, String> {
        while let Ok(byte) = self.bytes.try_recv() {
            machine = match machine {
                GdbStubStateMachine::Running(m) => m
                    .incoming_data(&mut self.guest, byte)
                    .map_err(|e| e.to_string())?,
                GdbStubStateMachine::CtrlCInterrupt(m) => {
                    let none: Option<SingleThreadStopReason<u64>> = None;
                    m.interrupt_handled(&mut self.guest, none)
                        .map_err(|e| e.to_string())?
                }
                other => other,
            };
        }
        if let GdbStubStateMachine::CtrlCInterrupt(m) = machine {
            let none: Option<SingleThreadStopReason<u64>> = None;
            machine = m
                .interrupt_handled(&mut self.guest, none)
                .map_err(|e| e.to_string())?;
        }
        Ok(machine)
    }

    /// Serves gdb's packets until it resumes the guest, detaches or kills it.
    fn serve_while_stopped(&mut self) -> Verdict {
        let Some(mut machine) = self.machine.take() else {
            return Verdict::Detached;
        };
        self.guest.resume = None;
        loop {
            machine = match machine {
                GdbStubStateMachine::Idle(m) => {
                    let Ok(byte) = self.bytes.recv() else {
                        eprintln!("unikernel-hvt: gdb went away; killing the guest");
                        return Verdict::Kill;
                    };
                    match m.incoming_data(&mut self.guest, byte) {
                        Ok(next) => next,
                        Err(e) => return connection_failed(e),
                    }
                }
                GdbStubStateMachine::Running(m) => {
                    self.machine = Some(m.into());
                    return Verdict::Resume(self.guest.resume.take().unwrap_or(Resume::Continue));
                }
                GdbStubStateMachine::CtrlCInterrupt(m) => {
                    // Already stopped: say so again.
                    let reason = Some(SingleThreadStopReason::Signal(Signal::SIGINT));
                    match m.interrupt_handled(&mut self.guest, reason) {
                        Ok(next) => next,
                        Err(e) => return connection_failed(e),
                    }
                }
                GdbStubStateMachine::Disconnected(m) => {
                    use gdbstub::stub::DisconnectReason;
                    return match m.get_reason() {
                        DisconnectReason::Disconnect => {
                            // gdb removed its breakpoints before detaching;
                            // take out any it left.
                            for (addr, old) in std::mem::take(&mut self.guest.breakpoints) {
                                self.guest.write_virt(addr, &[old]);
                            }
                            eprintln!("unikernel-hvt: gdb detached; the guest runs on");
                            Verdict::Detached
                        }
                        DisconnectReason::Kill => {
                            eprintln!("unikernel-hvt: killed by gdb");
                            Verdict::Kill
                        }
                        other => {
                            eprintln!("unikernel-hvt: gdb ended the session ({other:?}); killing the guest");
                            Verdict::Kill
                        }
                    };
                }
            };
        }
    }
}

/// gdb's connection broke: the guest is killed (it cannot be resumed
/// safely without the debugger that stopped it).
fn connection_failed(e: impl std::fmt::Display) -> Verdict {
    eprintln!("unikernel-hvt: gdb connection failed: {e}; killing the guest");
    Verdict::Kill
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.stream.flush();
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// The gdb command line that loads the image's symbols where the guest
/// runs them and connects: the app's debug file offset by the app's load
/// base (a static-pie app is linked at 0), the kernel's at its link
/// address.
pub fn command_line(image: &std::path::Path, app_base: u64, addr: SocketAddr) -> String {
    let file = |which: &str| format!("{}.{which}.debug", image.display());
    let mut cmd = String::from("gdb -q");
    let app = file("app");
    if std::path::Path::new(&app).is_file() {
        if app_base != 0 {
            cmd += &format!(" -ex 'add-symbol-file {app} -o {app_base:#x}'");
        } else {
            cmd += &format!(" -ex 'add-symbol-file {app}'");
        }
    } else {
        eprintln!("unikernel-hvt: note: no {app}: gdb will have no symbols for the app");
    }
    let kernel = file("kernel");
    if std::path::Path::new(&kernel).is_file() {
        cmd += &format!(" -ex 'add-symbol-file {kernel}'");
    }
    cmd + &format!(" -ex 'target remote {addr}'")
}

/// gdb's number for Linux signal `sig` (they agree below 16 except SIGBUS).
fn gdb_signal(sig: u32) -> Signal {
    match sig {
        7 => Signal::SIGBUS,
        n => u8::try_from(n).map_or(Signal::SIGTRAP, Signal),
    }
}

/// The address `--gdb` listens on: `PORT` alone is on loopback; an address
/// is used as written (all interfaces only if the user writes 0.0.0.0).
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse()
        .map_err(|_| format!("--gdb {s:?}: expected PORT or ADDRESS:PORT, e.g. 127.0.0.1:1234"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdb_addresses_default_to_loopback() {
        assert_eq!(
            parse_addr("1234").unwrap(),
            "127.0.0.1:1234".parse().unwrap()
        );
        assert_eq!(
            parse_addr("0.0.0.0:9").unwrap(),
            "0.0.0.0:9".parse().unwrap()
        );
        assert_eq!(parse_addr("[::1]:9").unwrap(), "[::1]:9".parse().unwrap());
        assert!(parse_addr("localhost").is_err());
        assert!(parse_addr("70000").is_err());
    }

    #[test]
    fn virtual_addresses_go_through_the_guests_page_tables() {
        let mut mem = GuestMemory::new(0x40_0000).unwrap();
        // PML4 at 0x1000 -> PDPT 0x2000 -> PD 0x3000: a 4 KiB page at
        // va 0x40_0000 (PT 0x4000 -> frame 0x5000) and a 2 MiB page at
        // va 0x20_0000 -> 0x20_0000.
        mem.write_obj(0x1000, &(0x2000u64 | 1)).unwrap();
        mem.write_obj(0x2000, &(0x3000u64 | 1)).unwrap();
        mem.write_obj(0x3000 + 8, &(0x20_0000u64 | 1 | 1 << 7))
            .unwrap();
        mem.write_obj(0x3000 + 2 * 8, &(0x4000u64 | 1)).unwrap();
        mem.write_obj(0x4000, &(0x5000u64 | 1)).unwrap();
        // An entry pointing outside RAM.
        mem.write_obj(0x3000 + 3 * 8, &(0x7fff_0000u64 | 1))
            .unwrap();
        mem.write(0x5000, b"page").unwrap();
        mem.write(0x20_0010, b"huge").unwrap();
        let mut g = Guest {
            // SAFETY: `mem` outlives `g` (both end with this test).
            ram: unsafe { mem.shared() },
            regs: X86_64CoreRegs::default(),
            cr3: 0x1000,
            breakpoints: HashMap::new(),
            resume: None,
        };
        assert_eq!(g.translate(0x40_0003), Some(0x5003));
        assert_eq!(g.translate(0x20_0010), Some(0x20_0010));
        assert_eq!(g.translate(0x60_0000), None, "table outside RAM");
        assert_eq!(g.translate(0x80_0000), None, "not present");
        assert_eq!(g.translate(1 << 39), None, "other PML4 slot");
        let mut buf = [0u8; 4];
        assert!(matches!(g.read_addrs(0x40_0000, &mut buf), Ok(4)));
        assert_eq!(&buf, b"page");
        // A read running off the mapped page stops there.
        let mut buf = [0u8; 8];
        assert_eq!(g.read_virt(0x40_0ffc, &mut buf), 4);
        assert!(g.read_addrs(0x80_0000, &mut buf).is_err());
        // A breakpoint replaces one byte and gives it back.
        assert!(matches!(g.add_sw_breakpoint(0x20_0010, 1), Ok(true)));
        assert_eq!(mem.slice(0x20_0010, 4).unwrap(), b"\xccuge");
        assert!(matches!(g.add_sw_breakpoint(0x80_0000, 1), Ok(false)));
        assert!(matches!(g.remove_sw_breakpoint(0x20_0010, 1), Ok(true)));
        assert!(matches!(g.remove_sw_breakpoint(0x20_0010, 1), Ok(false)));
        assert_eq!(mem.slice(0x20_0010, 4).unwrap(), b"huge");
    }
}
