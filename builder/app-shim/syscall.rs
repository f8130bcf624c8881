//! The app-side system-call shim, linked into every app the builder builds.
//!
//! The builder compiles this file on its own (`rustc --emit obj`, no `core`
//! items used) and links the object into the app with `-Wl,--wrap=NAME` for
//! each libc function below, so every call of, say, `recvfrom` reaches
//! `__wrap_recvfrom` here instead of musl's. Each wrapper loads the Linux
//! number and moves its arguments into the `syscall` registers exactly as
//! musl's wrapper would (int arguments sign-extended, unsigned ones
//! zero-extended), then jumps to `__uk_call`.
//!
//! `__uk_call` looks up the auxiliary-vector entry `AT_SYSINFO` once (the
//! entry point of the system-call gateway, the same meaning as on i386
//! Linux). Where the platform gives one (hvt: the runtime's
//! `unikernel_syscall_entry`, which runs at ring 3 there anyway), it enters
//! the runtime with a plain jump, emulating the register effects of the
//! `syscall` instruction: RCX = the return address, R11 = RFLAGS, and TF,
//! DF, NT and AC cleared as `SFMASK` clears them. On kvm-pvm that saves the
//! host round trip a `syscall` costs (about 1 us, several under load).
//! Where there is none (0: kvm, Xen, Linux itself when the binary runs
//! natively), it runs a real `syscall`. The app's red zone is never
//! touched: every wrapper is a function called by the C ABI.
//!
//! The return address handed to the runtime is the instruction right after
//! a real `syscall`, so anything that rewinds RIP by the two bytes of that
//! instruction re-runs the call through the ordinary path.
//!
//! Results go back as musl's wrappers return them: -1 with `errno` set for
//! -4095..-1, the value otherwise. What musl adds around some of these
//! (cancellation points for `pthread_cancel`, which the runtime does not
//! deliver) is left out.
#![no_std]

core::arch::global_asm!(
    r#"
    .section .text.__uk_call,"ax",@progbits
    .p2align 4
    .hidden __uk_call
    .type __uk_call,@function
__uk_call:
    movq __uk_entry(%rip), %r11
    cmpq $1, %r11
    jbe .Luk_slow
    pushfq
    movq (%rsp), %r11
    andq $~0x44500, (%rsp)       /* TF DF NT AC, as SFMASK clears them */
    popfq
    leaq .Luk_back(%rip), %rcx
    jmpq *__uk_entry(%rip)
.Luk_slow:
    jb .Luk_init                 /* 0: not looked up yet; 1: none */
    syscall
.Luk_back:
    cmpq $-4095, %rax
    jae .Luk_err
    ret
.Luk_err:
    negl %eax
    pushq %rax
    call __errno_location
    popq %rcx
    movl %ecx, (%rax)
    movq $-1, %rax
    ret
.Luk_init:                       /* keep the call's registers and errno */
    pushq %rax
    pushq %rdi
    pushq %rsi
    pushq %rdx
    pushq %r10
    pushq %r8
    pushq %r9
    pushq %rbx
    subq $8, %rsp
    call __errno_location
    movq %rax, %rbx
    movl (%rbx), %eax
    movl %eax, (%rsp)
    movl $32, %edi               /* AT_SYSINFO */
    call getauxval
    movl (%rsp), %ecx
    movl %ecx, (%rbx)
    cmpq $2, %rax
    jae 1f
    movl $1, %eax
1:  movq %rax, __uk_entry(%rip)
    addq $8, %rsp
    popq %rbx
    popq %r9
    popq %r8
    popq %r10
    popq %rdx
    popq %rsi
    popq %rdi
    popq %rax
    jmp __uk_call
    .size __uk_call, .-__uk_call

    .section .bss.__uk_entry,"aw",@nobits
    .p2align 3
    .hidden __uk_entry
__uk_entry:
    .zero 8

    .macro uk_wrap name
    .section .text.__wrap_\name,"ax",@progbits
    .p2align 4
    .globl __wrap_\name
    .hidden __wrap_\name
    .type __wrap_\name,@function
__wrap_\name:
    .endm

    /* ssize_t read(int fd, void *buf, size_t n) */
    uk_wrap read
    movslq %edi, %rdi
    xorl %eax, %eax
    jmp __uk_call

    /* ssize_t write(int fd, const void *buf, size_t n) */
    uk_wrap write
    movslq %edi, %rdi
    movl $1, %eax
    jmp __uk_call

    /* ssize_t readv(int fd, const struct iovec *iov, int n) */
    uk_wrap readv
    movslq %edi, %rdi
    movslq %edx, %rdx
    movl $19, %eax
    jmp __uk_call

    /* ssize_t writev(int fd, const struct iovec *iov, int n) */
    uk_wrap writev
    movslq %edi, %rdi
    movslq %edx, %rdx
    movl $20, %eax
    jmp __uk_call

    /* ssize_t recvfrom(int fd, void *buf, size_t n, int flags, struct sockaddr *a, socklen_t *alen) */
    uk_wrap recvfrom
    movslq %edi, %rdi
    movslq %ecx, %r10
    movl $45, %eax
    jmp __uk_call

    /* ssize_t recv(int fd, void *buf, size_t n, int flags) = recvfrom(.., 0, 0) */
    uk_wrap recv
    movslq %edi, %rdi
    movslq %ecx, %r10
    xorl %r8d, %r8d
    xorl %r9d, %r9d
    movl $45, %eax
    jmp __uk_call

    /* ssize_t sendto(int fd, const void *buf, size_t n, int flags, const struct sockaddr *a, socklen_t alen) */
    uk_wrap sendto
    movslq %edi, %rdi
    movslq %ecx, %r10
    movl %r9d, %r9d
    movl $44, %eax
    jmp __uk_call

    /* ssize_t send(int fd, const void *buf, size_t n, int flags) = sendto(.., 0, 0) */
    uk_wrap send
    movslq %edi, %rdi
    movslq %ecx, %r10
    xorl %r8d, %r8d
    xorl %r9d, %r9d
    movl $44, %eax
    jmp __uk_call

    /* int epoll_ctl(int ep, int op, int fd, struct epoll_event *ev) */
    uk_wrap epoll_ctl
    movslq %edi, %rdi
    movslq %esi, %rsi
    movslq %edx, %rdx
    movq %rcx, %r10
    movl $233, %eax
    jmp __uk_call

    /* int epoll_pwait(int ep, struct epoll_event *ev, int n, int timeout, const sigset_t *mask) */
    uk_wrap epoll_pwait
    movslq %edi, %rdi
    movslq %edx, %rdx
    movslq %ecx, %r10
    movl $8, %r9d                /* _NSIG / 8 */
    movl $281, %eax
    jmp __uk_call

    /* int epoll_wait(int ep, struct epoll_event *ev, int n, int timeout) = epoll_pwait(.., NULL) */
    uk_wrap epoll_wait
    movslq %edi, %rdi
    movslq %edx, %rdx
    movslq %ecx, %r10
    xorl %r8d, %r8d
    movl $8, %r9d
    movl $281, %eax
    jmp __uk_call

    /* ssize_t pread(int fd, void *buf, size_t n, off_t at), and its LFS64 name */
    uk_wrap pread
    movslq %edi, %rdi
    movq %rcx, %r10
    movl $17, %eax
    jmp __uk_call

    uk_wrap pread64
    jmp __wrap_pread

    /* ssize_t pwrite(int fd, const void *buf, size_t n, off_t at) */
    uk_wrap pwrite
    movslq %edi, %rdi
    movq %rcx, %r10
    movl $18, %eax
    jmp __uk_call

    uk_wrap pwrite64
    jmp __wrap_pwrite

    /* off_t lseek(int fd, off_t at, int whence) */
    uk_wrap lseek
    movslq %edi, %rdi
    movslq %edx, %rdx
    movl $8, %eax
    jmp __uk_call

    uk_wrap lseek64
    jmp __wrap_lseek

    /* int fsync(int fd) */
    uk_wrap fsync
    movslq %edi, %rdi
    movl $74, %eax
    jmp __uk_call

    /* int fdatasync(int fd) */
    uk_wrap fdatasync
    movslq %edi, %rdi
    movl $75, %eax
    jmp __uk_call

    /* int poll(struct pollfd *fds, nfds_t n, int timeout) */
    uk_wrap poll
    movslq %edx, %rdx
    movl $7, %eax
    jmp __uk_call

    /* int accept4(int fd, struct sockaddr *a, socklen_t *alen, int flags) */
    uk_wrap accept4
    movslq %edi, %rdi
    movslq %ecx, %r10
    movl $288, %eax
    jmp __uk_call

    /* int sched_yield(void) */
    uk_wrap sched_yield
    movl $24, %eax
    jmp __uk_call

    /* void *mmap(void *a, size_t n, int prot, int flags, int fd, off_t off),
       with musl's checks: an offset not a multiple of the page is EINVAL, a
       length of PTRDIFF_MAX or more ENOMEM, and a MAP_FIXED mapping waits
       for musl's VM lock (__vm_wait, held by process-shared barriers) as
       musl's does. musl turns an EPERM of an anonymous mapping into ENOMEM;
       the runtime never answers EPERM there, so that is left out. malloc,
       pthread_create and the rest of musl call it as __mmap. */
    uk_wrap mmap
    testl $4095, %r9d
    jnz .Lmmap_einval
    movabsq $0x7fffffffffffffff, %rax
    cmpq %rax, %rsi
    jae .Lmmap_enomem
    testl $0x10, %ecx            /* MAP_FIXED */
    jz 1f
    pushq %rdi
    pushq %rsi
    pushq %rdx
    pushq %rcx
    pushq %r8
    pushq %r9
    subq $8, %rsp
    call __vm_wait
    addq $8, %rsp
    popq %r9
    popq %r8
    popq %rcx
    popq %rdx
    popq %rsi
    popq %rdi
1:  movslq %edx, %rdx
    movslq %ecx, %r10
    movslq %r8d, %r8
    movl $9, %eax
    jmp __uk_call
.Lmmap_einval:
    movq $-22, %rax
    jmp .Luk_back
.Lmmap_enomem:
    movq $-12, %rax
    jmp .Luk_back

    uk_wrap __mmap
    jmp __wrap_mmap

    /* int munmap(void *a, size_t n): after musl's __vm_wait, as musl's */
    uk_wrap munmap
    pushq %rdi
    pushq %rsi
    subq $8, %rsp
    call __vm_wait
    addq $8, %rsp
    popq %rsi
    popq %rdi
    movl $11, %eax
    jmp __uk_call

    uk_wrap __munmap
    jmp __wrap_munmap

    /* int close(int fd), as musl's: first __aio_close(fd) where POSIX aio
       is linked in (a weak reference, 0 where it is not), which cancels
       the fd's outstanding aio requests. musl turns an EINTR of close into
       success; the runtime's close never answers EINTR, so that is left
       out. */
    uk_wrap close
    .weak __aio_close
    movslq %edi, %rdi
    movq __aio_close@GOTPCREL(%rip), %rax
    testq %rax, %rax
    jz 1f
    subq $8, %rsp
    call *%rax
    addq $8, %rsp
    movslq %eax, %rdi
1:  movl $3, %eax
    jmp __uk_call

    /* int shutdown(int fd, int how) */
    uk_wrap shutdown
    movslq %edi, %rdi
    movslq %esi, %rsi
    movl $48, %eax
    jmp __uk_call

    /* long syscall(long n, ...): six long arguments, the sixth on the stack */
    uk_wrap syscall
    movq %rdi, %rax
    movq %rsi, %rdi
    movq %rdx, %rsi
    movq %rcx, %rdx
    movq %r8, %r10
    movq %r9, %r8
    movq 8(%rsp), %r9
    jmp __uk_call
"#,
    options(att_syntax)
);
