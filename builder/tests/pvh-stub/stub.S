/* A stand-in kvm kernel for builder/tests/kvm.rs: enough of a PVH guest to
 * check the host side (image layout, QEMU flags, command line, console
 * relay, exit codes) without the real runtime. QEMU enters pvh_start in
 * 32-bit protected mode, paging off, %ebx = hvm_start_info. It
 *   1. prints the command line (hvm_start_info.cmdline_paddr) and "\n" on COM1;
 *   2. prints "stderr line\n" on COM2;
 *   3. prints the boot manifest raw (u32 length + bytes, at __kernel_end) on
 *      COM2, between "<manifest>" and "</manifest>\n";
 *   4. if the command line starts with "H", hangs (for --timeout);
 *   5. unless the command line starts with "N", prints "[unikernel] exit 7\n"
 *      on COM1; then writes 9 to isa-debug-exit (QEMU exits with 19), so a
 *      runner that reads the line exits 7 and one that falls back exits 9. */
        .section .note.Xen, "a", @note
        .balign 4
        .long 4, 4, 18
        .asciz "Xen"
        .long pvh_start

        .text
        .code32
        .globl pvh_start
pvh_start:
        movl 24(%ebx), %esi             /* cmdline_paddr (low half) */
        movw $0x3f8, %dx
        call puts
        movl $nl, %esi
        call puts
        movw $0x2f8, %dx
        movl $err, %esi
        call puts
        movl $mopen, %esi
        call puts
        movl $__kernel_end, %esi
        movl (%esi), %ecx
        addl $4, %ecx
        call write
        movl $mclose, %esi
        call puts
        movl 24(%ebx), %esi
        cmpb $'H', (%esi)
        je 2f
        cmpb $'N', (%esi)
        je 1f
        movw $0x3f8, %dx
        movl $exitline, %esi
        call puts
1:      movb $9, %al
        outb %al, $0xf4
2:      hlt
        jmp 2b

/* puts: NUL-terminated string at %esi to port %dx. */
puts:   lodsb
        testb %al, %al
        jz 1f
        outb %al, %dx
        jmp puts
1:      ret
/* write: %ecx bytes at %esi to port %dx. */
write:  jecxz 1f
        lodsb
        outb %al, %dx
        decl %ecx
        jmp write
1:      ret

        .section .rodata
nl:     .asciz "\n"
err:    .asciz "stderr line\n"
mopen:  .asciz "<manifest>"
mclose: .asciz "</manifest>\n"
exitline: .asciz "[unikernel] exit 7\n"
