//! Traps: the 256 ring-0 stubs the IDT points at, the privileged-operation
//! gate, and the hand-over of faults and interrupts to ring 3.
//!
//! On kvm-pvm every ring-0 instruction is emulated (~1 us each), so ring 0
//! does the least it can. `trap_common` decides between four cases:
//!
//! 1. **the privileged-operation gate** (a `ud2` at `unikernel_priv_gate`):
//!    perform the operation (`invlpg`, CR3 reload, ring-0 resume) and step
//!    over the `ud2`;
//! 2. **an interrupt that hit the runtime's own code** (the syscall path,
//!    the scheduler, a fault handler): the runtime is not reentrant, so the
//!    vector is only recorded in `UNIKERNEL_PENDING_IRQS` (and handed to
//!    the platform's defer hook, if it set one: [`set_defer_hook`]) and the
//!    runtime handles it at its next safe point (system-call exit, end of a
//!    trap);
//! 3. **a fault in the runtime's own code** (a bug): save the registers and
//!    report from the dedicated fault stack;
//! 4. **a fault or interrupt in the app**: copy the hardware frame to the
//!    current thread's kernel stack (found through GS; it is empty while the
//!    thread runs app code), save all registers there as a [`TrapFrame`],
//!    and `iretq` to `unikernel_fault_entry` at ring 3 with interrupts on.
//!    The handler (`crate::trap`) runs natively, may switch threads, deliver
//!    a signal, or grow the stack, and finally resumes a context.
//!
//! Resuming a ring-3 context is done at ring 3 without any trap: the saved
//! RFLAGS and RIP are put just below the interrupted stack's red zone,
//! registers are reloaded, then `popfq; ret $128` (IF stays as it is: on).
//! A ring-0 context is resumed through the gate with `iretq`.

use super::TrapFrame;
use core::sync::atomic::{AtomicU64, Ordering};

/// Size of one stub; the IDT gate for vector n targets `unikernel_trap_stubs + n * TRAP_STUB_SIZE`.
pub const TRAP_STUB_SIZE: u32 = 16;

/// Top of the ring-3 stack used to report faults of the runtime itself.
#[no_mangle]
static mut UNIKERNEL_FAULT_STACK_TOP: u64 = 0;
/// The runtime's code and data `[start, end)`: interrupts hitting it are deferred.
#[no_mangle]
static mut UNIKERNEL_KERNEL_START: u64 = 0;
#[no_mangle]
static mut UNIKERNEL_KERNEL_END: u64 = 0;
/// Interrupt vectors that arrived while the runtime ran (bit n = vector n).
#[no_mangle]
static UNIKERNEL_PENDING_IRQS: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];
/// A platform function called (at ring 0, interrupts off, on the interrupt
/// stack) with the vector each time an interrupt is deferred; 0 = none.
#[no_mangle]
static UNIKERNEL_DEFER_HOOK: AtomicU64 = AtomicU64::new(0);

/// Set the fault stack and the runtime's address range.
pub fn init(fault_stack_top: u64, kernel_start: u64, kernel_end: u64) {
    // SAFETY: written once at boot, before any trap can be taken; read only by trap_common.
    unsafe {
        core::ptr::addr_of_mut!(UNIKERNEL_FAULT_STACK_TOP).write(fault_stack_top & !0xf);
        core::ptr::addr_of_mut!(UNIKERNEL_KERNEL_START).write(kernel_start);
        core::ptr::addr_of_mut!(UNIKERNEL_KERNEL_END).write(kernel_end);
    }
}

/// Take (and clear) the set of deferred interrupt vectors.
pub fn take_pending_irqs() -> [u64; 4] {
    // An xchg cannot be split by an interrupt: no set bit is lost.
    core::array::from_fn(|i| UNIKERNEL_PENDING_IRQS[i].swap(0, Ordering::AcqRel))
}

/// Record interrupt `vector` for the runtime's next safe point (platforms
/// without an IDT, whose event handler saw it interrupt the runtime: Xen PV).
pub fn defer_irq(vector: u8) {
    UNIKERNEL_PENDING_IRQS[vector as usize / 64].fetch_or(1 << (vector % 64), Ordering::AcqRel);
}

/// Have `hook` called, at ring 0 with interrupts off on the interrupt
/// stack, with the vector of every interrupt deferred because it hit the
/// runtime (before the runtime's next safe point sees it). A platform whose
/// timer fires once (a LAPIC) uses it to acknowledge the interrupt and
/// arm a resend: an interrupt deferred after the last safe point on the
/// way back to the app would otherwise wait for the next one. The hook may
/// only touch its device (no locks, no allocation, no SSE).
pub fn set_defer_hook(hook: extern "C" fn(vector: u64)) {
    UNIKERNEL_DEFER_HOOK.store(hook as usize as u64, Ordering::Release);
}

/// Whether any interrupt is waiting for the runtime.
pub fn irqs_pending() -> bool {
    UNIKERNEL_PENDING_IRQS
        .iter()
        .any(|w| w.load(Ordering::Acquire) != 0)
}

extern "C" {
    fn unikernel_resume_ring3(frame: *const TrapFrame) -> !;
    fn unikernel_priv_op(op: u64, arg: u64);
}

/// Resume the context described by `frame` (never returns): through the
/// platform ([`crate::Platform::resume_user`], by default [`resume_native`]).
pub fn resume(frame: &TrapFrame) -> ! {
    crate::platform().resume_user(frame)
}

/// Resume `frame` on a platform with an IDT: at ring 3 without a trap, or
/// with `iretq` (directly or through the privileged gate).
pub fn resume_native(frame: &TrapFrame) -> ! {
    // A single step (TF, crate::debug) needs `iretq`: TF set by the ring-3
    // path's `popfq` would trap after that path's own jump, before the
    // app's instruction.
    if frame.from_user() && super::cpu::cpl() == 3 && frame.rflags & (1 << 8) == 0 {
        // SAFETY: the frame describes a ring-3 context; the resume code restores it exactly.
        unsafe { unikernel_resume_ring3(frame) }
    } else {
        // SAFETY: as above; at ring 0 (or for a ring-0 context) only
        // `iretq` can restore it, done directly or through the gate.
        unsafe { unikernel_priv_op(super::cpu::privileged::OP_RESUME, frame as *const _ as u64) };
        unreachable!("ring-0 resume returned")
    }
}

core::arch::global_asm!(
    r#"
    .section .text.unikernel_trap, "ax"
    .balign 16
    .global unikernel_trap_stubs
unikernel_trap_stubs:
    .set vec, 0
    .rept 256
    .balign 16
    .if vec == 8 || vec == 10 || vec == 11 || vec == 12 || vec == 13 || vec == 14 || vec == 17 || vec == 21 || vec == 29 || vec == 30
    .else
    pushq $0
    .endif
    pushq $vec
    jmp unikernel_trap_common
    .set vec, vec + 1
    .endr

    .macro SAVE_GPRS
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
    movq %cr2, %rax
    pushq %rax
    .endm

    .balign 16
unikernel_trap_common:
    /* stack: vector, error, rip, cs, rflags, rsp, ss */
    cmpq $6, (%rsp)
    jne 1f
    pushq %rax
    leaq unikernel_priv_gate(%rip), %rax
    cmpq %rax, 24(%rsp)
    popq %rax
    jne 1f
    /* 1. the privileged-operation gate: op in %rax, argument in %rsi */
    call unikernel_priv_op_ring0
    addq $2, 16(%rsp)          /* step over the ud2 */
    addq $16, %rsp             /* vector, error code */
    iretq
1:
    pushq %rax
    movq 24(%rsp), %rax        /* interrupted rip */
    cmpq UNIKERNEL_KERNEL_START(%rip), %rax
    jb 4f
    cmpq UNIKERNEL_KERNEL_END(%rip), %rax
    jae 4f
    cmpq $32, 8(%rsp)
    jb 3f
    /* 2. an interrupt in the runtime: record it, go straight back */
    movq 8(%rsp), %rax
    btsq %rax, UNIKERNEL_PENDING_IRQS(%rip)
    cmpq $0, UNIKERNEL_DEFER_HOOK(%rip)
    jne 6f
    popq %rax
    addq $16, %rsp
    iretq
6:  /* ... and tell the platform's hook (ring 0, IF off), keeping every
       caller-saved register of the interrupted runtime code */
    pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    movq 72(%rsp), %rdi        /* the vector */
    cld
    callq *UNIKERNEL_DEFER_HOOK(%rip)
    popq %r11
    popq %r10
    popq %r9
    popq %r8
    popq %rdi
    popq %rsi
    popq %rdx
    popq %rcx
    popq %rax
    addq $16, %rsp
    iretq
3:  /* 3. a fault in the runtime: report from the fault stack */
    popq %rax
    SAVE_GPRS
    movq %rsp, %rdi
    movq UNIKERNEL_FAULT_STACK_TOP(%rip), %rax
    jmp 5f
4:  /* 4. from the app: move to the thread's kernel stack */
    popq %rax
    movq %rax, %gs:16
    movq %rsp, %rax
    movq %gs:0, %rsp
    pushq 48(%rax)             /* ss */
    pushq 40(%rax)             /* rsp */
    pushq 32(%rax)             /* rflags */
    pushq 24(%rax)             /* cs */
    pushq 16(%rax)             /* rip */
    pushq 8(%rax)              /* error code */
    pushq 0(%rax)              /* vector */
    movq %gs:16, %rax
    SAVE_GPRS
    movq %rsp, %rdi
    movq %rsp, %rax
    andq $-16, %rax
5:  pushq $0x2b                /* ss: user data */
    pushq %rax                 /* rsp */
    pushq $0x202               /* rflags: interrupts on */
    pushq $0x33                /* cs: user code */
    leaq unikernel_fault_entry(%rip), %rax
    pushq %rax
    iretq

    /* Ring 0: perform privileged operation %rax with argument %rsi.
       Clobbers %rax, %rcx, %rdx (callers: the extern "C" unikernel_priv_op),
       and the stack for OP_RESUME, which does not return. */
unikernel_priv_op_ring0:
    cmpq $1, %rax
    jne .Lop2
    invlpg (%rsi)
    ret
.Lop2:
    cmpq $2, %rax
    jne .Lop3
    movq %cr3, %rax
    movq %rax, %cr3
    ret
.Lop3:
    cmpq $3, %rax
    jne .Lop4
    /* resume the TrapFrame at %rsi with iretq */
    movq %rsi, %rsp
    addq $8, %rsp              /* cr2 */
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
    addq $16, %rsp             /* vector, error code */
    iretq
.Lop4:
    cmpq $4, %rax
    jne .Lop5
    movl $0xc0000100, %ecx     /* FS_BASE */
    jmp .Lwrmsr
.Lop5:
    cmpq $5, %rax
    jne .Lop6
    movl $0xc0000101, %ecx     /* GS_BASE */
.Lwrmsr:
    movl %esi, %eax
    movq %rsi, %rdx
    shrq $32, %rdx
    wrmsr
    ret
.Lop6:
    cmpq $6, %rax
    jne .Lop7
    /* serial byte: %rsi = port << 8 | byte; wait until the UART's
       transmit holding register is empty (LSR bit 5), then send */
    movl %esi, %edx
    shrl $8, %edx
    addl $5, %edx
.Lthre:
    inb %dx, %al
    testb $0x20, %al
    jz .Lthre
    subl $5, %edx
    movl %esi, %eax
    outb %al, %dx
    ret
.Lop7:
    cmpq $7, %rax
    jne .Lop8
    /* outb: %rsi = port << 8 | byte */
    movl %esi, %edx
    shrl $8, %edx
    movl %esi, %eax
    outb %al, %dx
    ret
.Lop8:
    cmpq $8, %rax
    jne .Lop9
    /* halt until an interrupt, unless one is already waiting; the
       check and the hlt are atomic (IF off between them, sti's shadow
       covers the hlt), and IF is left as the caller had it */
    pushfq
    cli
    movq UNIKERNEL_PENDING_IRQS(%rip), %rax
    orq UNIKERNEL_PENDING_IRQS+8(%rip), %rax
    orq UNIKERNEL_PENDING_IRQS+16(%rip), %rax
    orq UNIKERNEL_PENDING_IRQS+24(%rip), %rax
    jnz .Lhalted
    sti
    hlt
.Lhalted:
    popfq
    ret
.Lop9:
    cmpq $9, %rax
    jne .Lop10
    movl $0x6e0, %ecx          /* IA32_TSC_DEADLINE */
    jmp .Lwrmsr
.Lop10:
    cmpq $10, %rax
    jne .Lopend
    /* ACPI sleep: %rsi = port << 16 | value; PM1_CNT = (PM1_CNT &
       ~0x3c00) | (value & 0x3c00) */
    movl %esi, %edx
    shrl $16, %edx
    inw %dx, %ax
    andw $0xc3ff, %ax
    movl %esi, %ecx
    andw $0x3c00, %cx
    orw %cx, %ax
    outw %ax, %dx
    ret
.Lopend:
    ret

    /* unikernel_priv_op(op = %rdi, arg = %rsi): at ring 0 directly, at ring 3 via the gate. */
    .global unikernel_priv_op
unikernel_priv_op:
    movq %rdi, %rax
    movw %cs, %dx
    testw $3, %dx
    jz unikernel_priv_op_ring0
    .global unikernel_priv_gate
unikernel_priv_gate:
    ud2
    ret

    .section .text.unikernel_fault, "ax"
    /* Ring 3, %rdi = TrapFrame, %rsp 16-byte aligned below it. */
unikernel_fault_entry:
    call unikernel_handle_trap
    ud2

    /* unikernel_resume_ring3(frame = %rdi) */
    .global unikernel_resume_ring3
unikernel_resume_ring3:
    movq %rdi, %rax
    movq 168(%rax), %rbx       /* frame.rsp */
    subq $144, %rbx            /* below the red zone: rflags, rip */
    movq 160(%rax), %rcx       /* frame.rflags */
    movq %rcx, (%rbx)
    movq 144(%rax), %rcx       /* frame.rip */
    movq %rcx, 8(%rbx)
    movq %rbx, %rsp
    movq 8(%rax), %r15
    movq 16(%rax), %r14
    movq 24(%rax), %r13
    movq 32(%rax), %r12
    movq 40(%rax), %r11
    movq 48(%rax), %r10
    movq 56(%rax), %r9
    movq 64(%rax), %r8
    movq 72(%rax), %rbp
    movq 80(%rax), %rdi
    movq 88(%rax), %rsi
    movq 96(%rax), %rdx
    movq 104(%rax), %rcx
    movq 112(%rax), %rbx
    movq 120(%rax), %rax
    popfq
    ret $128
"#,
    options(att_syntax)
);

// The offsets used by unikernel_resume_ring3.
const _: () = {
    assert!(core::mem::offset_of!(TrapFrame, r15) == 8);
    assert!(core::mem::offset_of!(TrapFrame, rax) == 120);
    assert!(core::mem::offset_of!(TrapFrame, rip) == 144);
    assert!(core::mem::offset_of!(TrapFrame, rflags) == 160);
    assert!(core::mem::offset_of!(TrapFrame, rsp) == 168);
    assert!(core::mem::size_of::<TrapFrame>() == 184);
};
