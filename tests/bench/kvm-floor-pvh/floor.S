/* QEMU's floor for tests/bench/kvm.sh: the smallest PVH kernel. QEMU finds
 * the 32-bit entry through the XEN_ELFNOTE_PHYS32_ENTRY note (type 18) and
 * jumps there in protected mode, paging off; the kernel writes 0 to the
 * isa-debug-exit port at once (QEMU then exits with status 1). */
        .section .note.Xen, "a", @note
        .balign 4
        .long 4                 /* namesz: "Xen\0" */
        .long 4                 /* descsz */
        .long 18                /* XEN_ELFNOTE_PHYS32_ENTRY */
        .asciz "Xen"
        .long pvh_start

        .text
        .code32
        .globl pvh_start
pvh_start:
        xorl %eax, %eax
        outb %al, $0xf4         /* isa-debug-exit */
1:      hlt
        jmp 1b
