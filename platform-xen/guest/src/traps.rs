//! Traps, the failsafe callback and the `syscall` callback: how the CPU's
//! exceptions and the app's system calls reach a PV kernel.
//!
//! A PV guest has no IDT of its own. It gives Xen a *trap table*
//! (`set_trap_table`: vector, entry address, code selector, "mask events"
//! flag) and Xen bounces each exception to the entry with this frame on the
//! guest kernel stack (the `stack_switch` stack when it came from guest
//! user mode):
//!
//! ```text
//! rcx, r11, [error code], rip, cs, rflags, rsp, ss     (lowest address first)
//! ```
//!
//! `rcx` and `r11` are the interrupted values (Xen needed the registers for
//! its own `sysret`); the faulting address of a #PF is in
//! `vcpu_info.arch.cr2`. A kernel-mode frame shows `cs` with RPL 0, a
//! user-mode frame RPL 3. The way back is the `iret` hypercall.
//!
//! A `syscall` in guest *user* mode enters Xen, which switches to guest
//! kernel mode (kernel page table, kernel GS base, `stack_switch` stack)
//! and jumps to the syscall callback with `rcx, r11, rip, cs, rflags, rsp,
//! ss` on the stack (rcx/r11 = what the `syscall` instruction set:
//! return address and RFLAGS). It returns with `iret` and
//! `VGCF_in_syscall`. (A `syscall` in guest *kernel* mode is a hypercall:
//! that is why the app must run in user mode.)
//!
//! Here every exception is fatal: it is reported on the console and the
//! domain shuts down with [`crate::EXIT_KERNEL_FAULT`]. The runtime will
//! take over these frames (docs/xen.md, integration plan).

use crate::abi::{self, TrapInfo};
use crate::hypercall;
use core::fmt::Write;

/// Registers saved by the trap, event and syscall stubs (lowest address
/// first): the runtime's `TrapFrame` layout, so the runtime can take a
/// trap frame as it is.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct XenFrame {
    /// #PF: the faulting address (from `vcpu_info.arch.cr2`), else 0.
    pub cr2: u64,
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

impl XenFrame {
    pub fn from_user(&self) -> bool {
        self.cs & 3 == 3
    }
}

const STUB_SIZE: u64 = 16;
/// Vectors given an entry (NMI and reserved ones are left out).
const VECTORS: [u8; 17] = [0, 1, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 16, 17, 18, 19];

static mut TRAP_TABLE: [TrapInfo; VECTORS.len() + 1] = [TrapInfo {
    vector: 0,
    flags: 0,
    cs: 0,
    _pad: 0,
    address: 0,
}; VECTORS.len() + 1];

extern "C" {
    static xen_trap_stubs: u8;
    fn xen_hypervisor_callback();
    fn xen_failsafe_callback();
    fn xen_syscall_callback();
}

/// Install the trap table and the event, failsafe and syscall callbacks.
pub fn init() -> Result<(), abi::XenError> {
    // SAFETY: boot, one vCPU, before any trap; the stubs understand Xen's frames.
    unsafe {
        let base = core::ptr::addr_of!(xen_trap_stubs) as u64;
        let table = &mut *core::ptr::addr_of_mut!(TRAP_TABLE);
        for (slot, &v) in table.iter_mut().zip(VECTORS.iter()) {
            *slot = TrapInfo {
                vector: v,
                // int3 and into may be raised from user mode (DPL 3).
                flags: abi::TI_MASK_EVENTS | if v == 3 || v == 4 { 3 } else { 0 },
                cs: abi::FLAT_KERNEL_CS,
                _pad: 0,
                address: base + v as u64 * STUB_SIZE,
            };
        }
        hypercall::set_trap_table(table)?;
        hypercall::set_callbacks(
            xen_hypervisor_callback as *const () as u64,
            xen_failsafe_callback as *const () as u64,
            xen_syscall_callback as *const () as u64,
        )?;
    }
    Ok(())
}

pub fn vector_name(v: u64) -> &'static str {
    match v {
        0 => "divide error (#DE)",
        1 => "debug (#DB)",
        3 => "breakpoint (#BP)",
        4 => "overflow (#OF)",
        5 => "bound range (#BR)",
        6 => "invalid opcode (#UD)",
        7 => "device not available (#NM)",
        8 => "double fault (#DF)",
        10 => "invalid TSS (#TS)",
        11 => "segment not present (#NP)",
        12 => "stack fault (#SS)",
        13 => "general protection (#GP)",
        14 => "page fault (#PF)",
        16 => "x87 floating point (#MF)",
        17 => "alignment check (#AC)",
        18 => "machine check (#MC)",
        19 => "SIMD floating point (#XM)",
        _ => "exception",
    }
}

/// Called by the trap stubs: hands the frame to the runtime (feature
/// `runtime`), or reports and shuts down.
#[no_mangle]
extern "C" fn xen_trap(f: &mut XenFrame) -> ! {
    // SAFETY: the shared-info page is mapped before the trap table is installed.
    let cr2 =
        unsafe { core::ptr::addr_of!((*crate::shared_info()).vcpu_info[0].cr2).read_volatile() };
    f.cr2 = if f.vector == 14 { cr2 } else { 0 };
    #[cfg(feature = "runtime")]
    crate::runtime::trap(f);
    #[cfg(not(feature = "runtime"))]
    report_and_stop(f, cr2)
}

#[cfg(not(feature = "runtime"))]
fn report_and_stop(f: &XenFrame, cr2: u64) -> ! {
    let mut out = crate::Console;
    let _ = write!(
        out,
        "xen: fatal {} in guest {} mode at rip={:#x} error={:#x}",
        vector_name(f.vector),
        if f.from_user() { "user" } else { "kernel" },
        f.rip,
        f.error_code
    );
    if f.vector == 14 {
        let _ = write!(out, " address={cr2:#x}");
    }
    let _ = writeln!(
        out,
        "\n  rax={:#018x} rbx={:#018x} rcx={:#018x} rdx={:#018x}\n  rsi={:#018x} rdi={:#018x} rbp={:#018x} rsp={:#018x}",
        f.rax, f.rbx, f.rcx, f.rdx, f.rsi, f.rdi, f.rbp, f.rsp
    );
    crate::shutdown(crate::EXIT_KERNEL_FAULT)
}

#[no_mangle]
extern "C" fn xen_failsafe() -> ! {
    let _ = writeln!(
        crate::Console,
        "xen: failsafe callback: Xen could not restore a segment register"
    );
    crate::shutdown(crate::EXIT_KERNEL_FAULT)
}

/// What the syscall callback does with a system call from guest user mode:
/// set by the kernel built on this crate (the smoke kernel; later the runtime).
pub type SyscallHandler = fn(&mut XenFrame);

static mut SYSCALL_HANDLER: Option<SyscallHandler> = None;

/// Set the handler for system calls from guest user mode.
pub fn set_syscall_handler(h: SyscallHandler) {
    // SAFETY: one vCPU; set before user mode is entered.
    unsafe { core::ptr::addr_of_mut!(SYSCALL_HANDLER).write(Some(h)) };
}

#[no_mangle]
extern "C" fn xen_syscall(f: &mut XenFrame) {
    // SAFETY: written once before user mode starts.
    match unsafe { core::ptr::addr_of!(SYSCALL_HANDLER).read() } {
        Some(h) => h(f),
        None => {
            let _ = writeln!(
                crate::Console,
                "xen: system call {} from user mode but no handler",
                f.rax
            );
            crate::shutdown(crate::EXIT_KERNEL_FAULT)
        }
    }
}

/// Enter guest user mode at `rip` with stack `rsp` (events on), through
/// the `iret` hypercall. The user page table must be set
/// (`hypercall::new_user_baseptr`) and `stack_switch` must name the kernel
/// stack that system calls and traps from user mode will use.
///
/// # Safety
/// `rip` and `rsp` must be code and stack usable in user mode.
pub unsafe fn enter_user(rip: u64, rsp: u64) -> ! {
    // SAFETY: forwarded from the caller; the frame is what `iret` expects.
    unsafe {
        core::arch::asm!(
            "pushq ${ss}",
            "pushq {rsp}",
            "pushq $0x202",
            "pushq ${cs}",
            "pushq {rip}",
            "pushq $0",
            "jmp hypercall_page + {iret} * 32",
            rsp = in(reg) rsp,
            rip = in(reg) rip,
            ss = const abi::FLAT_USER_SS as u64,
            cs = const abi::FLAT_USER_CS as u64,
            iret = const abi::nr::IRET,
            options(att_syntax, noreturn)
        )
    }
}

core::arch::global_asm!(
    r#"
    .section .text.xen_traps, "ax"
    .balign 16
    .global xen_trap_stubs
xen_trap_stubs:
    .set vec, 0
    .rept 32
    .balign 16
    popq %rcx
    popq %r11
    .if vec == 8 || vec == 10 || vec == 11 || vec == 12 || vec == 13 || vec == 14 || vec == 17
    .else
    pushq $0
    .endif
    pushq $vec
    jmp xen_trap_common
    .set vec, vec + 1
    .endr

    .macro XEN_SAVE_GPRS
    pushq %rax
    pushq %rbx
    pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %rbp
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    .endm

    .macro XEN_RESTORE_GPRS
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %r11
    popq %r10
    popq %r9
    popq %r8
    popq %rbp
    popq %rdi
    popq %rsi
    popq %rdx
    popq %rcx
    popq %rbx
    popq %rax
    .endm

xen_trap_common:
    XEN_SAVE_GPRS
    subq $8, %rsp            /* cr2 slot */
    movq %rsp, %rdi
    andq $-16, %rsp
    cld
    call xen_trap
    ud2

    /* System call from guest user mode: Xen pushed rcx, r11 (the values
       `syscall` set: return rip, rflags) on top of rip, cs, rflags, rsp, ss. */
    .balign 16
    .global xen_syscall_callback
xen_syscall_callback:
    popq %rcx
    popq %r11
    pushq $0                 /* error code slot */
    pushq $-1                /* vector slot: -1 = system call */
    XEN_SAVE_GPRS
    subq $8, %rsp            /* cr2 slot */
    movq %rsp, %rdi
    movq %rsp, %rbx
    andq $-16, %rsp
    cld
    call xen_syscall
    movq %rbx, %rsp
    addq $8, %rsp
    XEN_RESTORE_GPRS
    addq $16, %rsp
    /* back to user mode: iret with VGCF_in_syscall (rcx/r11 as set above) */
    pushq ${in_syscall}
    jmp hypercall_page + {iret} * 32
"#,
    in_syscall = const abi::VGCF_IN_SYSCALL,
    iret = const abi::nr::IRET,
    options(att_syntax)
);

const _: () = {
    assert!(core::mem::offset_of!(XenFrame, r15) == 8);
    assert!(core::mem::offset_of!(XenFrame, vector) == 16 * 8);
    assert!(core::mem::offset_of!(XenFrame, rip) == 18 * 8);
    assert!(core::mem::size_of::<XenFrame>() == 23 * 8);
};
