//! The PVH entry: the ELF note that tells QEMU, Firecracker and
//! cloud-hypervisor where to enter (XEN_ELFNOTE_PHYS32_ENTRY), and the
//! 32-bit code that gets to 64-bit mode as cheaply as it can (every ring-0
//! instruction costs ~1 us under kvm-pvm): the bootstrap page tables are
//! assembled data (identity map of the first 4 GiB with 2 MiB pages, no
//! loop at boot), the GDT is the final one (Linux layout), and `kvm_main`
//! builds the real tables.
//!
//! PVH entry state: 32-bit protected mode, paging off, flat segments, %ebx
//! = guest-physical address of the `hvm_start_info`, no stack.
//!
//! The same image also boots through GRUB (a disk image: `--emit disk`):
//! a Multiboot2 header at the start of the text (inside the file's first
//! 32 KiB, as the spec wants) names `kvm_mb2_entry`, where a Multiboot2
//! loader enters in the same state but with %eax = 0x36d76289 and %ebx =
//! the Multiboot2 information; the stub notes that in `KVM_BOOT_MB2` and
//! joins the PVH path; `kvm_main` reads the information instead
//! (`start_info::from_multiboot2`).

/// The boot stack (becomes the main thread's kernel stack).
pub const BOOT_STACK_SIZE: usize = 64 * 1024;

#[repr(C, align(16))]
pub struct Stack<const N: usize>(pub [u8; N]);

/// Non-zero when a Multiboot2 loader (GRUB) entered the kernel. In .data
/// (file-backed), never cleared after the entry stub wrote it.
#[no_mangle]
#[link_section = ".data.kvm_boot_mb2"]
pub static mut KVM_BOOT_MB2: u32 = 0;

/// TSC at the PVH entry (written by the entry code).
#[no_mangle]
pub static mut KVM_ENTRY_TSC: u64 = 0;

#[no_mangle]
pub static mut KVM_BOOT_STACK: Stack<BOOT_STACK_SIZE> = Stack([0; BOOT_STACK_SIZE]);

core::arch::global_asm!(
    r#"
    .section .note.pvh, "a"
    .balign 4
    .long 4                       /* namesz */
    .long 4                       /* descsz */
    .long 18                      /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .long kvm_pvh_entry

    .section .data.kvm_boot_tables, "aw"
    .balign 4096
    .global kvm_boot_pml4
kvm_boot_pml4:
    .quad kvm_boot_pdpt + 0x3
    .fill 511, 8, 0
    .balign 4096
kvm_boot_pdpt:
    .quad kvm_boot_pd + 0x3
    .quad kvm_boot_pd + 0x1003
    .quad kvm_boot_pd + 0x2003
    .quad kvm_boot_pd + 0x3003
    .fill 508, 8, 0
    .balign 4096
kvm_boot_pd:
    .set i, 0
    .rept 2048
    .quad (i << 21) | 0x83        /* present, writable, 2 MiB */
    .set i, i + 1
    .endr

    .section .text.kvm_mb2_header, "ax"
    .balign 8
kvm_mb2_header:
    .long 0xe85250d6              /* Multiboot2 magic */
    .long 0                       /* i386 protected mode */
    .long kvm_mb2_header_end - kvm_mb2_header
    .long -(0xe85250d6 + (kvm_mb2_header_end - kvm_mb2_header))
    .balign 8
    .word 3, 0                    /* entry address tag */
    .long 12
    .long kvm_mb2_entry
    .balign 8
    .word 5, 1                    /* framebuffer tag, optional: accepting */
    .long 20                      /* one keeps GRUB from warning under UEFI */
    .long 0, 0, 0                 /* (no text mode) that the OS has no console */
    .balign 8
    .word 0, 0                    /* end tag */
    .long 8
kvm_mb2_header_end:

    .code32
    .global kvm_mb2_entry
kvm_mb2_entry:
    cmpl $0x36d76289, %eax
    jne 1f
    movl $1, KVM_BOOT_MB2
    jmp kvm_pvh_entry
1:  hlt                           /* not a Multiboot2 loader */
    jmp 1b

    .section .text.kvm_pvh_entry, "ax"
    .code32
    .global kvm_pvh_entry
kvm_pvh_entry:
    cli
    cld
    movl %ebx, %edi               /* hvm_start_info, kept for kvm_main */
    rdtsc                         /* the first instruction's time, for --verbose */
    movl %eax, KVM_ENTRY_TSC
    movl %edx, KVM_ENTRY_TSC+4
    movl $kvm_boot_pml4, %eax
    movl %eax, %cr3
    movl %cr4, %eax
    orl $0x620, %eax              /* PAE | OSFXSR | OSXMMEXCPT */
    movl %eax, %cr4
    movl $0xc0000080, %ecx        /* EFER */
    rdmsr
    orl $0x901, %eax              /* SCE | LME | NXE */
    wrmsr
    movl %cr0, %eax
    andl $0xfffffff3, %eax        /* clear EM, TS */
    orl $0x80010023, %eax         /* PG | WP | NE | MP | PE */
    movl %eax, %cr0
    lgdt kvm_gdt_ptr32
    ljmp $0x10, $kvm_entry64

    .code64
kvm_entry64:
    movl $0x18, %eax
    movl %eax, %ds
    movl %eax, %es
    movl %eax, %ss
    xorl %eax, %eax
    movl %eax, %fs
    movl %eax, %gs
    leaq KVM_BOOT_STACK+{stack}(%rip), %rsp
    movl %edi, %edi
    xorl %ebp, %ebp
    call kvm_main
    ud2

    .section .rodata.kvm_gdt_ptr32, "a"
    .balign 8
kvm_gdt_ptr32:
    .word {gdt_limit}
    .long KVM_GDT
"#,
    stack = const BOOT_STACK_SIZE,
    gdt_limit = const crate::cpu::GDT_BYTES - 1,
    options(att_syntax)
);
