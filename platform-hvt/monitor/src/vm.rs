//! The KVM side: the VM with its one memory slot, the single vCPU with the
//! register state the boot needs, and the run loop.
//!
//! The vCPU starts directly in 64-bit mode **at CPL 3** (CS 0x33, SS 0x2b):
//! the kernel's entry code is privilege-agnostic and runs at ring 3, where
//! kvm-pvm executes natively. Paging, GDT/IDT/TSS, EFER, the syscall MSRs and
//! CR0/CR4 are loaded here, so ring 0 only ever runs for traps.
use std::arch::x86_64::_rdtsc;
use std::fmt::Write as _;

use hvt_abi::layout::{SYSCALL_SFMASK, TSS_SELECTOR, USER_CS, USER_DS};
use hvt_abi::KernelHeader;
use kvm_bindings::{
    kvm_fpu, kvm_msr_entry, kvm_regs, kvm_run, kvm_segment, kvm_sregs, kvm_userspace_memory_region,
    kvm_xcrs, CpuId, Msrs, KVM_MAX_CPUID_ENTRIES,
};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use thiserror::Error;

use crate::block;
use crate::boot::BootState;
use crate::exit::{EXIT_GUEST_CRASHED, EXIT_INVALID_HYPERCALL, EXIT_KILLED_BY_GDB};
use crate::hypercall::{self, Outcome};
use crate::memory::GuestMemory;
use crate::net;
use crate::stop;
use crate::tables::{GDT_SIZE, IDT_SIZE, TSS_SIZE, TSS_TYPE_BUSY};
use crate::timer;
use std::os::fd::AsRawFd;

/// A failed KVM step during setup.
#[derive(Debug, Error)]
pub enum VmError {
    #[error("/dev/kvm does not exist: KVM is not available on this host (load kvm_intel/kvm_amd, or enable nested virtualization)")]
    NoKvm,
    #[error("/dev/kvm is not accessible ({0}): add your user to the `kvm` group or fix the device's permissions")]
    KvmDenied(std::io::Error),
    #[error("cannot open /dev/kvm: {0}")]
    KvmOpen(std::io::Error),
    #[error("cannot map {mib} MiB of guest memory: {source}")]
    Memory { mib: u64, source: std::io::Error },
    #[error("KVM {what} failed: {source}")]
    Ioctl {
        what: &'static str,
        source: std::io::Error,
    },
}

fn ioctl(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |e| VmError::Ioctl {
        what,
        source: std::io::Error::from_raw_os_error(e.errno()),
    }
}

/// MSR numbers.
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SFMASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
/// STAR: SYSRET base selector 0x20 (-> CS 0x33, SS 0x2b), SYSCALL CS 0x10 (SS 0x18).
const STAR: u64 = 0x0023_0010_0000_0000;

/// Control-register and EFER bits.
const CR0_BOOT: u64 = 0x8005_0033; // PE|MP|ET|NE|WP|AM|PG
const CR4_PAE: u64 = 1 << 5;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
const CR4_FSGSBASE: u64 = 1 << 16;
const CR4_OSXSAVE: u64 = 1 << 18;
const EFER_BOOT: u64 = (1 << 0) | (1 << 8) | (1 << 10) | (1 << 11); // SCE|LME|LMA|NXE

/// XCR0 components the guest may enable: x87, SSE, AVX, AVX-512 (opmask, ZMM_Hi256, Hi16_ZMM).
const XCR0_WANTED: u64 = 0x1 | 0x2 | 0x4 | 0xe0;

/// Set this environment variable to see non-fatal setup warnings.
pub const DEBUG_ENV: &str = "UNIKERNEL_HVT_DEBUG";

/// The VM: the vCPU and VM fds are declared (and so dropped) before the
/// memory they use.
pub struct Vm {
    /// `--gdb`: first, so it (and its view of `mem`) goes before `mem`.
    gdb: Option<crate::gdb::Session>,
    vcpu: VcpuFd,
    _vm: VmFd,
    _kvm: Kvm,
    cpuid: CpuId,
    pub mem: GuestMemory,
}

impl Vm {
    /// Opens KVM, creates the VM with `mem_size` bytes of RAM at GPA 0, and one vCPU.
    pub fn new(mem_size: u64) -> Result<Vm, VmError> {
        let kvm = Kvm::new().map_err(|e| {
            let err = std::io::Error::from_raw_os_error(e.errno());
            match e.errno() {
                libc::ENOENT | libc::ENXIO | libc::ENODEV => VmError::NoKvm,
                libc::EACCES | libc::EPERM => VmError::KvmDenied(err),
                _ => VmError::KvmOpen(err),
            }
        })?;
        let vm = kvm.create_vm().map_err(ioctl("KVM_CREATE_VM"))?;
        let mem = GuestMemory::new(mem_size).map_err(|source| VmError::Memory {
            mib: mem_size >> 20,
            source,
        })?;
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: mem.size(),
            userspace_addr: mem.host_address(),
        };
        // SAFETY: the region is exactly the live mapping owned by `mem`, which
        // `Vm` keeps alive and drops only after the VM fd (field order).
        unsafe { vm.set_user_memory_region(region) }
            .map_err(ioctl("KVM_SET_USER_MEMORY_REGION"))?;
        let vcpu = vm.create_vcpu(0).map_err(ioctl("KVM_CREATE_VCPU"))?;
        let cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(ioctl("KVM_GET_SUPPORTED_CPUID"))?;
        vcpu.set_cpuid2(&cpuid).map_err(ioctl("KVM_SET_CPUID2"))?;
        Ok(Vm {
            gdb: None,
            vcpu,
            _vm: vm,
            _kvm: kvm,
            cpuid,
            mem,
        })
    }

    /// The CPUID leaf `(function, index)` as the guest sees it: `[eax, ebx, ecx, edx]`.
    pub fn cpuid(&self, function: u32, index: u32) -> Option<[u32; 4]> {
        self.cpuid
            .as_slice()
            .iter()
            .find(|e| e.function == function && e.index == index)
            .map(|e| [e.eax, e.ebx, e.ecx, e.edx])
    }

    /// TSC frequency in kHz: KVM's view of the vCPU; else CPUID 0x40000010,
    /// 0x15 or 0x16; else a 10 ms calibration against the host clock.
    pub fn tsc_khz(&self) -> u64 {
        if let Ok(khz) = self.vcpu.get_tsc_khz() {
            if khz > 0 {
                return u64::from(khz);
            }
        }
        if let Some([eax, ..]) = self.cpuid(0x4000_0010, 0).filter(|l| l[0] > 0) {
            return u64::from(eax);
        }
        if let Some([den, num, hz, _]) = self
            .cpuid(0x15, 0)
            .filter(|l| l[0] > 0 && l[1] > 0 && l[2] > 0)
        {
            return u64::from(hz) * u64::from(num) / u64::from(den) / 1000;
        }
        if let Some([mhz, ..]) = self.cpuid(0x16, 0).filter(|l| l[0] > 0) {
            return u64::from(mhz) * 1000;
        }
        let t0 = std::time::Instant::now();
        // SAFETY: rdtsc has no memory effects; x86_64 always has it.
        let c0 = unsafe { _rdtsc() };
        std::thread::sleep(std::time::Duration::from_millis(10));
        // SAFETY: as above.
        let c1 = unsafe { _rdtsc() };
        (c1 - c0) * 1000 / t0.elapsed().as_micros().max(1) as u64
    }

    /// Loads the boot register state: long mode at CPL 3, entering the kernel.
    pub fn configure_vcpu(&self, boot: &BootState, header: &KernelHeader) -> Result<(), VmError> {
        let leaf1 = self.cpuid(1, 0).unwrap_or_default();
        let leaf7 = self.cpuid(7, 0).unwrap_or_default();
        let mut cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
        if leaf7[1] & 1 != 0 {
            cr4 |= CR4_FSGSBASE;
        }
        if leaf1[2] & (1 << 26) != 0 {
            let xcr0 = u64::from(self.cpuid(0xd, 0).unwrap_or_default()[0]) & XCR0_WANTED;
            let mut xcrs = kvm_xcrs {
                nr_xcrs: 1,
                ..Default::default()
            };
            xcrs.xcrs[0].xcr = 0;
            xcrs.xcrs[0].value = xcr0 | 1;
            match self.vcpu.set_xcrs(&xcrs) {
                Ok(()) => cr4 |= CR4_OSXSAVE,
                Err(e) => debug(&format!(
                    "KVM_SET_XCRS({xcr0:#x}) failed ({e}); leaving CR4.OSXSAVE clear"
                )),
            }
        }

        let mut sregs: kvm_sregs = self.vcpu.get_sregs().map_err(ioctl("KVM_GET_SREGS"))?;
        let code = kvm_segment {
            base: 0,
            limit: 0xffff_ffff,
            selector: USER_CS,
            type_: 0xb,
            present: 1,
            dpl: 3,
            db: 0,
            s: 1,
            l: 1,
            g: 1,
            ..Default::default()
        };
        let data = kvm_segment {
            selector: USER_DS,
            type_: 0x3,
            db: 1,
            l: 0,
            ..code
        };
        sregs.cs = code;
        (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
        sregs.tr = kvm_segment {
            base: boot.tss,
            limit: (TSS_SIZE - 1) as u32,
            selector: TSS_SELECTOR,
            type_: TSS_TYPE_BUSY,
            present: 1,
            ..Default::default()
        };
        sregs.gdt.base = boot.gdt;
        sregs.gdt.limit = (GDT_SIZE - 1) as u16;
        sregs.idt.base = boot.idt;
        sregs.idt.limit = (IDT_SIZE - 1) as u16;
        sregs.cr0 = CR0_BOOT;
        sregs.cr3 = boot.page_table_root;
        sregs.cr4 = cr4;
        sregs.efer = EFER_BOOT;
        self.vcpu
            .set_sregs(&sregs)
            .map_err(ioctl("KVM_SET_SREGS"))?;
        debug(&format!(
            "boot CR4 {cr4:#x}; CPUID.1:ECX {:#x}, CPUID.7.0:EBX {:#x}",
            leaf1[2], leaf7[1]
        ));

        let entries = [
            (MSR_STAR, STAR),
            (MSR_LSTAR, header.syscall_entry),
            (MSR_CSTAR, 0),
            (MSR_SFMASK, SYSCALL_SFMASK),
            (MSR_KERNEL_GS_BASE, 0),
        ]
        .map(|(index, data)| kvm_msr_entry {
            index,
            data,
            ..Default::default()
        });
        let msrs = Msrs::from_entries(&entries).map_err(|_| VmError::Ioctl {
            what: "KVM_SET_MSRS",
            source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
        })?;
        let n = self.vcpu.set_msrs(&msrs).map_err(ioctl("KVM_SET_MSRS"))?;
        if n != entries.len() {
            return Err(VmError::Ioctl {
                what: "KVM_SET_MSRS",
                source: std::io::Error::other(format!("MSR {:#x} was rejected", entries[n].index)),
            });
        }

        let fpu = kvm_fpu {
            fcw: 0x37f,
            mxcsr: 0x1f80,
            ..Default::default()
        };
        self.vcpu.set_fpu(&fpu).map_err(ioctl("KVM_SET_FPU"))?;

        let regs = kvm_regs {
            rip: header.entry,
            rsp: boot.kernel_stack_top,
            rdi: boot.boot_info,
            // IF set: the runtime keeps interrupts on at ring 3 (it cannot
            // change IF there) and defers those that hit its own code.
            rflags: 0x202,
            ..Default::default()
        };
        self.vcpu.set_regs(&regs).map_err(ioctl("KVM_SET_REGS"))
    }

    /// Runs the guest until it halts or fails; returns the process exit code.
    ///
    /// Just before the first `KVM_RUN` the wall clock and the TSC are sampled
    /// and written into the BootInfo. Assumption: the guest's TSC equals the
    /// host's `rdtsc` (no TSC offset or scaling is set by this monitor; true on
    /// kvm-pvm and on hardware KVM for a freshly created vCPU up to the few
    /// cycles of offset KVM applies at vCPU creation).
    /// Injects external interrupt `vector` (KVM_INTERRUPT; no in-kernel irqchip).
    fn inject(&self, vector: u8) -> std::io::Result<()> {
        const KVM_INTERRUPT: libc::c_ulong = 0x4004_ae86; // _IOW(KVMIO, 0x86, struct kvm_interrupt)
        let irq = kvm_bindings::kvm_interrupt {
            irq: u32::from(vector),
        };
        // SAFETY: KVM_INTERRUPT reads one `struct kvm_interrupt` from the
        // pointer, which lives across the call; the fd is our vCPU.
        let r = unsafe { libc::ioctl(self.vcpu.as_raw_fd(), KVM_INTERRUPT, &irq) };
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// `--gdb`: waits for gdb on `addr` (the guest starts once it continues);
    /// `command` is the gdb command line to print.
    pub fn attach_gdb(
        &mut self,
        addr: std::net::SocketAddr,
        command: &str,
    ) -> Result<(), crate::gdb::GdbError> {
        // SAFETY: the session is the Vm's first field: dropped before `mem`.
        self.gdb = Some(unsafe { crate::gdb::Session::accept(addr, &self.mem, command)? });
        Ok(())
    }

    /// The guest's page-table root now (for gdb's memory accesses).
    fn cr3(&self) -> u64 {
        self.vcpu.get_sregs().map_or(0, |s| s.cr3)
    }

    /// Serves a debug-stop call at `gpa`; `Some(code)`: end the run.
    fn debug_stop(&mut self, gpa: u64, mut stop: hvt_abi::hypercall::DebugStop) -> Option<i32> {
        let cr3 = self.cr3();
        let Some(session) = self.gdb.as_mut() else {
            // Detached (or never attached: the guest only calls with
            // BOOT_FLAG_DEBUGGER): go on as if gdb continued.
            return None;
        };
        let verdict = session.stop(&mut stop, cr3);
        match verdict {
            crate::gdb::Verdict::Kill => return Some(EXIT_KILLED_BY_GDB),
            crate::gdb::Verdict::Detached => self.gdb = None,
            crate::gdb::Verdict::Resume(_) => {}
        }
        if self.mem.write_obj(gpa, &stop).is_err() {
            eprintln!("unikernel-hvt: the guest's debug-stop argument left RAM");
            return Some(EXIT_INVALID_HYPERCALL);
        }
        None
    }

    pub fn run(&mut self, boot: &BootState) -> i32 {
        let mut exits = 0;
        stop::install(self.vcpu.get_kvm_run());
        let code = self.run_until_exit(boot, &mut exits);
        if let Some(gdb) = self.gdb.as_mut() {
            if code == EXIT_GUEST_CRASHED || code == EXIT_INVALID_HYPERCALL {
                gdb.crashed();
            } else if code != EXIT_KILLED_BY_GDB {
                gdb.exited(code);
            }
        }
        self.gdb = None;
        crate::profile::finish();
        stop::uninstall();
        if let Some(code) = stop::requested() {
            eprintln!(
                "unikernel-hvt: stopped by {} (exit {code})",
                if code == 130 { "SIGINT" } else { "SIGTERM" }
            );
        }
        timer::stop();
        if let Some(counts) = net::stop() {
            net::report(counts, exits);
        }
        block::report(&block::stop());
        code
    }

    fn run_until_exit(&mut self, boot: &BootState, exits: &mut u64) -> i32 {
        // SAFETY: rdtsc has no memory effects.
        let tsc = unsafe { _rdtsc() };
        let now = hypercall::wall_clock_ns();
        if self.mem.write_obj(boot.wall_clock_tsc_gpa(), &tsc).is_err()
            || self.mem.write_obj(boot.wall_clock_ns_gpa(), &now).is_err()
        {
            eprintln!("unikernel-hvt: internal error: BootInfo outside guest RAM");
            return EXIT_GUEST_CRASHED;
        }
        // The frequency the guest's clock runs on (the timer converts its
        // deadlines with it), read before the guest could change it.
        let tsc_khz = self
            .mem
            .read_obj::<u64>(
                boot.boot_info + std::mem::offset_of!(hvt_abi::BootInfo, tsc_khz) as u64,
            )
            .unwrap_or(1);
        net::bind_vcpu(self.vcpu.get_kvm_run());
        block::bind_vcpu(self.vcpu.get_kvm_run());
        crate::profile::start(self.vcpu.get_kvm_run());
        let profiling = crate::profile::on();
        if self.gdb.is_some() {
            // gdb's Ctrl-C kicks this thread out of KVM_RUN.
            timer::install_kick(self.vcpu.get_kvm_run());
            let regs = self.vcpu.get_regs().unwrap_or_default();
            let cr3 = self.cr3();
            let verdict = self.gdb.as_mut().map(|g| g.initial(&regs, cr3));
            match verdict {
                Some(crate::gdb::Verdict::Kill) => return EXIT_KILLED_BY_GDB,
                Some(crate::gdb::Verdict::Detached) => self.gdb = None,
                _ => {}
            }
        }
        loop {
            // gdb's Ctrl-C: the guest stops at its next timer tick.
            if self.gdb.as_ref().is_some_and(|g| g.take_interrupt()) {
                let word = boot.boot_info
                    + std::mem::offset_of!(hvt_abi::BootInfo, debug_interrupt) as u64;
                let _ = self.mem.write_obj(word, &1u64);
            }
            if let Some(vector) = timer::before_run(self.vcpu.get_kvm_run()) {
                if let Err(e) = self.inject(vector) {
                    eprintln!("unikernel-hvt: cannot inject the timer interrupt: {e}");
                    return EXIT_GUEST_CRASHED;
                }
            }
            // After before_run (which clears immediate_exit): a fault found
            // later kicks the vCPU out of the KVM_RUN below.
            if let Some(what) = net::take_fault() {
                eprintln!("unikernel-hvt: guest broke the network ring protocol: {what}");
                return EXIT_INVALID_HYPERCALL;
            }
            if let Some(what) = block::take_fault() {
                eprintln!("unikernel-hvt: guest broke the block ring protocol: {what}");
                return EXIT_INVALID_HYPERCALL;
            }
            if let Some(code) = stop::requested() {
                return code;
            }
            *exits += 1;
            if profiling {
                crate::profile::in_guest(true);
            }
            let result = self.vcpu.run();
            if profiling {
                crate::profile::in_guest(false);
            }
            let problem = match result {
                Ok(VcpuExit::MmioWrite(addr, data)) => {
                    // Copy the bytes out of the kvm_run page (KVM's MMIO data
                    // is at most 8 bytes) so the vCPU borrow ends here.
                    let mut buf = [0u8; 8];
                    let len = data.len().min(buf.len());
                    buf[..len].copy_from_slice(&data[..len]);
                    match hypercall::handle_write(&mut self.mem, addr, &buf[..len]) {
                        Ok(Outcome::Continue) => continue,
                        Ok(Outcome::Halt(code)) => return code,
                        Ok(Outcome::DebugStop { gpa, stop }) => match self.debug_stop(gpa, stop) {
                            Some(code) => return code,
                            None => continue,
                        },
                        Ok(Outcome::Timer {
                            block,
                            tsc_at_zero,
                            vector,
                        }) => {
                            let run: *mut kvm_run = self.vcpu.get_kvm_run();
                            // The hypercall checked that the block lies in RAM.
                            let host = self.mem.host_address() + block;
                            timer::configure(run, host as *const u8, tsc_at_zero, tsc_khz, vector);
                            continue;
                        }
                        Err(e) => Err(e),
                    }
                }
                Ok(VcpuExit::MmioRead(addr, data)) => Err(hypercall::read_error(addr, data.len())),
                Ok(VcpuExit::Shutdown) => {
                    Ok("the guest triple-faulted (KVM_EXIT_SHUTDOWN)".to_string())
                }
                Ok(VcpuExit::Hlt) => {
                    Ok("the guest executed hlt (KVM_EXIT_HLT) with nothing to wake it".to_string())
                }
                Ok(VcpuExit::InternalError) => {
                    let r = self.vcpu.get_kvm_run();
                    // SAFETY: exit_reason is KVM_EXIT_INTERNAL_ERROR, so the
                    // kernel filled the `internal` member of the union.
                    let i = unsafe { r.__bindgen_anon_1.internal };
                    let n = (i.ndata as usize).min(i.data.len());
                    Ok(format!(
                        "KVM internal error (suberror {}, data {:x?})",
                        i.suberror,
                        &i.data[..n]
                    ))
                }
                Ok(VcpuExit::FailEntry(reason, cpu)) => Ok(format!(
                    "VM entry failed (hardware reason {reason:#x}, cpu {cpu})"
                )),
                Ok(VcpuExit::IoOut(port, _)) | Ok(VcpuExit::IoIn(port, _)) => Ok(format!(
                    "the guest used port I/O (port {port:#x}); hvt guests use MMIO hypercalls"
                )),
                Ok(VcpuExit::IrqWindowOpen) | Ok(VcpuExit::Intr) => continue,
                Ok(other) => Ok(format!("unexpected KVM exit {other:?}")),
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    if profiling {
                        crate::profile::exit_at(|| self.vcpu.get_regs().ok().map(|r| r.rip));
                    }
                    continue;
                }
                Err(e) => Ok(format!("KVM_RUN failed: {e}")),
            };
            return match problem {
                Err(call) => {
                    eprintln!(
                        "unikernel-hvt: guest made an invalid hypercall: {call} (rip {:#x})",
                        self.vcpu.get_regs().map_or(0, |r| r.rip)
                    );
                    EXIT_INVALID_HYPERCALL
                }
                Ok(what) => {
                    eprintln!(
                        "unikernel-hvt: guest crashed: {what}\n{}",
                        self.register_dump()
                    );
                    EXIT_GUEST_CRASHED
                }
            };
        }
    }

    /// All registers worth seeing after a crash, several lines.
    pub fn register_dump(&self) -> String {
        let mut s = String::new();
        match self.vcpu.get_regs() {
            Ok(r) => {
                let _ = write!(
                    s,
                    "  rax {:016x} rbx {:016x} rcx {:016x} rdx {:016x}\n  rsi {:016x} rdi {:016x} rbp {:016x} rsp {:016x}\n  r8  {:016x} r9  {:016x} r10 {:016x} r11 {:016x}\n  r12 {:016x} r13 {:016x} r14 {:016x} r15 {:016x}\n  rip {:016x} rflags {:08x}\n",
                    r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp, r.rsp, r.r8, r.r9, r.r10,
                    r.r11, r.r12, r.r13, r.r14, r.r15, r.rip, r.rflags
                );
            }
            Err(e) => {
                let _ = writeln!(s, "  (registers unavailable: {e})");
            }
        }
        match self.vcpu.get_sregs() {
            Ok(r) => {
                let _ = write!(
                    s,
                    "  cr0 {:x} cr2 {:x} cr3 {:x} cr4 {:x} efer {:x}\n  cs {:#x} (cpl {}) ss {:#x}",
                    r.cr0, r.cr2, r.cr3, r.cr4, r.efer, r.cs.selector, r.cs.dpl, r.ss.selector
                );
            }
            Err(e) => {
                let _ = write!(s, "  (system registers unavailable: {e})");
            }
        }
        s
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        // The network I/O thread uses guest memory: end it before the
        // memory is unmapped (a no-op when `run` already did); so do the
        // block device's.
        net::stop();
        block::stop();
    }
}

/// Prints a non-fatal setup note when [`DEBUG_ENV`] is set.
pub fn debug(msg: &str) {
    if std::env::var_os(DEBUG_ENV).is_some() {
        eprintln!("unikernel-hvt: debug: {msg}");
    }
}
