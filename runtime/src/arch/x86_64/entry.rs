//! The `syscall` entry stub, the kernel-stack switch between threads, and
//! the first jump into the app.
//!
//! `syscall` lands here either at ring 0 (hardware KVM, QEMU TCG: the CPU
//! switched CS/SS, we return with `sysretq`) or at ring 3 (kvm-pvm: the CPU
//! only jumped, we return with `popfq` of R11 on our own stack and `jmp *%rcx`).
//! Both paths save every app register in a [`SyscallFrame`] on the current
//! thread's kernel stack (found through GS: the app never uses GS; the
//! runtime's per-CPU block lives there), call the dispatcher, which leaves
//! the result (or a redirected context, for signal delivery) in the frame,
//! and restore the frame.
//!
//! A thread switch swaps kernel stacks: each thread blocked in the runtime
//! sits in `unikernel_switch` on its own stack. A new thread starts on a
//! stack prepared to "return" from `unikernel_switch` into
//! `unikernel_thread_start`, which leaves through the system-call return
//! path with a copy of its parent's frame (rax = 0).

use crate::syscall::SyscallFrame;

/// Per-CPU block at the GS base. Field offsets are used by the stubs.
#[repr(C)]
pub struct PerCpu {
    /// Top of the current thread's kernel stack (offset 0).
    pub kernel_rsp: u64,
    /// Scratch for the syscall stub: the app's %rsp (offset 8).
    pub user_rsp: u64,
    /// Scratch for the ring-0 trap stub (offset 16).
    pub scratch: u64,
    /// The platform's return-to-app stub, 0 for `sysretq`/`jmp` (offset
    /// 24; [`crate::Platform::user_return_stub`]: Xen PV returns through a
    /// hypercall because its guest kernel runs at ring 3 too).
    pub user_return: u64,
}

static mut PER_CPU: PerCpu = PerCpu {
    kernel_rsp: 0,
    user_rsp: 0,
    scratch: 0,
    user_return: 0,
};

/// Point GS at the per-CPU block and set the first thread's kernel stack.
pub fn init(kernel_stack_top: u64) {
    let platform = crate::platform();
    // SAFETY: single CPU, called once at boot before any system call.
    unsafe {
        let p = core::ptr::addr_of_mut!(PER_CPU);
        (*p).kernel_rsp = kernel_stack_top & !0xf;
        (*p).user_return = platform.user_return_stub();
        super::cpu::set_gs_base(p as u64);
    }
    platform.set_kernel_stack(kernel_stack_top & !0xf);
}

/// Make `top` the kernel stack system calls and traps from the app use.
pub fn set_kernel_stack(top: u64) {
    // SAFETY: one CPU; only the stubs read it, and only on entry from the app,
    // which cannot happen while the runtime is running this.
    unsafe { core::ptr::addr_of_mut!(PER_CPU.kernel_rsp).write_volatile(top & !0xf) };
    crate::platform().set_kernel_stack(top & !0xf);
}

extern "C" {
    fn unikernel_enter_user(entry: u64, stack_pointer: u64) -> !;
    fn unikernel_switch(save_rsp: *mut u64, next_rsp: u64);
    fn unikernel_thread_start();
}

/// Start the app: registers cleared, `%rsp` at argc, `%rdx` = 0 (no atexit
/// function, as the SysV ABI allows), at ring 3.
pub fn enter_user(entry: u64, stack_pointer: u64) -> ! {
    // SAFETY: entry and stack were prepared by the platform (app loaded, stack built).
    unsafe { unikernel_enter_user(entry, stack_pointer) }
}

/// Save the callee-saved registers and stack pointer of the running thread
/// in `*save_rsp`, and continue the thread whose stack pointer is `next_rsp`.
///
/// # Safety
/// `next_rsp` must come from an earlier `switch` or [`prepare_new_thread`].
pub unsafe fn switch(save_rsp: *mut u64, next_rsp: u64) {
    // SAFETY: forwarded from the caller.
    unsafe { unikernel_switch(save_rsp, next_rsp) }
}

/// Lay out a new thread's kernel stack `[.., top)`: its first system-call
/// frame (`frame`, returned to the app with rax = 0) and a switch frame that
/// "returns" into `unikernel_thread_start`. Returns the stack pointer to
/// switch to.
///
/// # Safety
/// `top` must be the 16-byte aligned top of a writable stack of at least 4 KiB.
pub unsafe fn prepare_new_thread(top: u64, frame: &SyscallFrame) -> u64 {
    let frame_at = top - core::mem::size_of::<SyscallFrame>() as u64;
    // SAFETY: within the caller's stack.
    unsafe {
        (frame_at as *mut SyscallFrame).write(SyscallFrame { rax: 0, ..*frame });
        let sw = frame_at - 7 * 8;
        let words = sw as *mut u64;
        for i in 0..6 {
            words.add(i).write(0); // r15 r14 r13 r12 rbx rbp
        }
        words
            .add(6)
            .write(unikernel_thread_start as *const () as u64);
        sw
    }
}

core::arch::global_asm!(
    r#"
    .section .text.unikernel_syscall, "ax"
    .balign 16
    .global unikernel_syscall_entry
unikernel_syscall_entry:
    movq %rsp, %gs:8
    movq %gs:0, %rsp
    pushq %gs:8                /* frame, top down: user rsp, r15 .. rbx, r11, rcx, r9, r8, r10, rdx, rsi, rdi, rax */
    pushq %r15
    pushq %r14
    pushq %r13
    pushq %r12
    pushq %rbp
    pushq %rbx
    pushq %r11
    pushq %rcx
    pushq %r9
    pushq %r8
    pushq %r10
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %rax
    movq %rsp, %rdi
    cld
    call unikernel_syscall_dispatch
    .global unikernel_syscall_return
unikernel_syscall_return:        /* %rsp = the frame */
    popq %rax
    popq %rdi
    popq %rsi
    popq %rdx
    popq %r10
    popq %r8
    popq %r9
    popq %rcx
    popq %r11
    popq %rbx
    popq %rbp
    popq %r12
    popq %r13
    popq %r14
    popq %r15
    cmpq $0, %gs:24
    jne .Lplatform_return      /* the platform returns to the app (Xen PV) */
    pushq %rax
    movw %cs, %ax
    testb $3, %al
    popq %rax
    jz 1f
    /* arrived at ring 3: restore RFLAGS from R11 here, then jump back */
    pushq %r11
    popfq
    popq %rsp
    jmpq *%rcx
1:  /* arrived at ring 0 */
    popq %rsp
    sysretq
.Lplatform_return:             /* %rsp = &user rsp, rcx = rip, r11 = rflags */
    jmpq *%gs:24

    /* unikernel_switch(save_rsp = %rdi, next_rsp = %rsi) */
    .global unikernel_switch
unikernel_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret

    .global unikernel_thread_start
unikernel_thread_start:
    call unikernel_thread_started
    jmp unikernel_syscall_return

    .global unikernel_enter_user
unikernel_enter_user:
    cmpq $0, %gs:24
    je 3f
    /* through the platform's stub, as a system call returns */
    pushq %rsi
    movq %rdi, %rcx
    movl $0x202, %r11d
    xorl %eax, %eax
    xorl %ebx, %ebx
    xorl %edx, %edx
    xorl %esi, %esi
    xorl %edi, %edi
    xorl %ebp, %ebp
    xorl %r8d, %r8d
    xorl %r9d, %r9d
    xorl %r10d, %r10d
    xorl %r12d, %r12d
    xorl %r13d, %r13d
    xorl %r14d, %r14d
    xorl %r15d, %r15d
    jmpq *%gs:24
3:  movw %cs, %ax
    testb $3, %al
    jz 2f
    movq %rsi, %rsp
    movq %rdi, %rcx
    xorl %eax, %eax
    xorl %ebx, %ebx
    xorl %edx, %edx
    xorl %esi, %esi
    xorl %edi, %edi
    xorl %ebp, %ebp
    xorl %r8d, %r8d
    xorl %r9d, %r9d
    xorl %r10d, %r10d
    xorl %r11d, %r11d
    xorl %r12d, %r12d
    xorl %r13d, %r13d
    xorl %r14d, %r14d
    xorl %r15d, %r15d
    pushq $0x202
    popfq
    jmpq *%rcx
2:  /* at ring 0: iretq to ring 3 */
    pushq $0x2b
    pushq %rsi
    pushq $0x202
    pushq $0x33
    pushq %rdi
    xorl %eax, %eax
    xorl %ebx, %ebx
    xorl %ecx, %ecx
    xorl %edx, %edx
    xorl %esi, %esi
    xorl %edi, %edi
    xorl %ebp, %ebp
    xorl %r8d, %r8d
    xorl %r9d, %r9d
    xorl %r10d, %r10d
    xorl %r11d, %r11d
    iretq
"#,
    options(att_syntax)
);

const _: () = assert!(core::mem::size_of::<SyscallFrame>() == 128);
const _: () = assert!(core::mem::offset_of!(PerCpu, user_return) == 24);
