//! The `syscall` entry stub and the first jump into the app.
//!
//! `syscall` lands here either at ring 0 (hardware KVM, QEMU TCG: the CPU
//! switched CS/SS, we return with `sysretq`) or at ring 3 (kvm-pvm: the CPU
//! only jumped, we return with `popfq` of R11 on our own stack and `jmp *%rcx`).
//! Both paths save the caller's registers the Linux ABI preserves, switch to
//! the kernel stack found through GS (the app never uses GS; the runtime's
//! per-CPU block lives there), and call [`crate::syscall::dispatch`].

use crate::syscall::SyscallFrame;

/// Per-CPU block at the GS base. Field offsets are used by the stub below.
#[repr(C)]
pub struct PerCpu {
    /// Top of the stack system calls run on.
    pub kernel_rsp: u64,
    /// Scratch: the app's %rsp while a system call runs.
    pub user_rsp: u64,
}

static mut PER_CPU: PerCpu = PerCpu {
    kernel_rsp: 0,
    user_rsp: 0,
};

/// Point GS at the per-CPU block and set the system-call stack.
pub fn init(kernel_stack_top: u64) {
    // SAFETY: single CPU, called once at boot before any system call.
    unsafe {
        let p = core::ptr::addr_of_mut!(PER_CPU);
        (*p).kernel_rsp = kernel_stack_top & !0xf;
        super::cpu::set_gs_base(p as u64);
    }
}

extern "C" {
    fn unikernel_enter_user(entry: u64, stack_pointer: u64) -> !;
}

/// Start the app: registers cleared, `%rsp` at argc, `%rdx` = 0 (no atexit
/// function, as the SysV ABI allows), at ring 3.
pub fn enter_user(entry: u64, stack_pointer: u64) -> ! {
    // SAFETY: entry and stack were prepared by the platform (app loaded, stack built).
    unsafe { unikernel_enter_user(entry, stack_pointer) }
}

core::arch::global_asm!(
    r#"
    .section .text.unikernel_syscall, "ax"
    .balign 16
    .global unikernel_syscall_entry
unikernel_syscall_entry:
    movq %rsp, %gs:8
    movq %gs:0, %rsp
    pushq %r11                 /* frame: rax rdi rsi rdx r10 r8 r9 rcx r11 */
    pushq %rcx
    pushq %r9
    pushq %r8
    pushq %r10
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %rax
    movq %rsp, %rdi
    subq $8, %rsp              /* 16-byte alignment for the call */
    cld
    call unikernel_syscall_dispatch
    addq $16, %rsp             /* alignment pad and the saved %rax: %rax is the result */
    popq %rdi
    popq %rsi
    popq %rdx
    popq %r10
    popq %r8
    popq %r9
    popq %rcx
    popq %r11
    pushq %rax
    movw %cs, %ax
    testw $3, %ax
    popq %rax
    jz 1f
    /* arrived at ring 3: restore RFLAGS from R11 here, then jump back */
    pushq %r11
    popfq
    movq %gs:8, %rsp
    jmpq *%rcx
1:  /* arrived at ring 0 */
    movq %gs:8, %rsp
    sysretq

    .global unikernel_enter_user
unikernel_enter_user:
    movw %cs, %ax
    testw $3, %ax
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

const _: () = assert!(core::mem::size_of::<SyscallFrame>() == 72);
