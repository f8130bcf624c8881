//! Boots hand-made images on KVM with the real monitor binary and checks
//! what the guest printed and how it ended.
mod common;

use std::mem::offset_of;

use common::*;
use hvt_abi::hypercall::Call;
use hvt_abi::BootInfo;
use unikernel_image::manifest::Platform;

fn image(name: &str, code: &[u8], data: &[u8]) -> String {
    let bytes = elf(&[kernel(code, data)], Some(&manifest(Platform::Hvt)));
    write_image(name, &bytes).display().to_string()
}

#[test]
fn ring3_entry_writes_to_the_console_and_halts_with_its_code() {
    if !kvm_available("ring3_entry_writes_to_the_console_and_halts_with_its_code") {
        return;
    }
    let msg = b"hello from ring 3\n";
    let mut a = Asm::default();
    a.sub_rsp(32)
        .mov_rax_imm(DATA)
        .console_write_rax(msg.len() as u32, 1)
        .halt(7)
        .ud2();
    let img = image("hello", &a.code, msg);
    let out = monitor(&[&img]);
    assert_eq!(stdout(&out), "hello from ring 3\n");
    assert_eq!(out.status.code(), Some(7));
}

#[test]
fn halt_code_is_masked_and_stderr_stream_works() {
    if !kvm_available("halt_code_is_masked_and_stderr_stream_works") {
        return;
    }
    let msg = b"to stderr\n";
    let mut a = Asm::default();
    a.sub_rsp(32)
        .mov_rax_imm(DATA)
        .console_write_rax(msg.len() as u32, 2)
        .halt(0x100 + 42);
    let out = monitor(&[&image("stderr", &a.code, msg)]);
    assert!(stderr(&out).contains("to stderr\n"));
    assert_eq!(stdout(&out), "");
    assert_eq!(out.status.code(), Some(42));
}

/// Prints argv[0], argv[1] and envp[idx] found through BootInfo.app_stack_pointer.
fn print_stack_strings(argv1_len: u32, env_idx: u32, env_len: u32) -> Vec<u8> {
    let sp = offset_of!(BootInfo, app_stack_pointer) as u32;
    let mut a = Asm::default();
    a.sub_rsp(64)
        .load_rax_rdi(sp)
        .load_rax_rax(8) // argv[0]
        .copy16_rax_to_rsp(32)
        .console_write_rax(6, 1) // "/hello"
        .load_rax_rdi(sp)
        .load_rax_rax(16) // argv[1]
        .copy16_rax_to_rsp(32)
        .console_write_rax(argv1_len, 1)
        .load_rax_rdi(sp)
        .load_rax_rax(8 * (env_idx + 4)) // envp[env_idx] with argc == 2
        .copy16_rax_to_rsp(32)
        .console_write_rax(env_len, 1)
        .load_rax_rdi(sp)
        .load_rax_rax(0) // argc
        .store_rax(0)
        .store_imm(8, 0) // no crash record
        .hypercall(Call::Halt);
    a.code
}

#[test]
fn app_stack_holds_argv_and_env_from_manifest_and_command_line() {
    if !kvm_available("app_stack_holds_argv_and_env_from_manifest_and_command_line") {
        return;
    }
    // Defaults from the manifest: argv = ["/hello", "default-arg"], env[1] = GREETING=hi.
    let img = image("stack-defaults", &print_stack_strings(11, 1, 11), b"");
    let out = monitor(&[&img]);
    assert_eq!(stdout(&out), "/hellodefault-argGREETING=hi");
    assert_eq!(out.status.code(), Some(2), "argc");

    // Command line: args after `--` replace the defaults; --env replaces by key, in place.
    let img = image("stack-cli", &print_stack_strings(7, 1, 14), b"");
    let out = monitor(&[
        "--env",
        "GREETING=hello",
        "--env",
        "NEW=1",
        &img,
        "--",
        "cli-arg",
    ]);
    assert_eq!(stdout(&out), "/hellocli-argGREETING=hello");
    assert_eq!(out.status.code(), Some(2), "argc");
}

#[test]
fn bad_pointer_in_console_write_is_an_invalid_hypercall() {
    if !kvm_available("bad_pointer_in_console_write_is_an_invalid_hypercall") {
        return;
    }
    let mut a = Asm::default();
    a.sub_rsp(32)
        .mov_rax_imm(0xdead_0000_0000)
        .console_write_rax(16, 1)
        .halt(0);
    let out = monitor(&[&image("badptr", &a.code, b"")]);
    let err = stderr(&out);
    assert!(
        err.contains("guest made an invalid hypercall: console_write"),
        "{err}"
    );
    assert!(err.contains("rip"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(254));
}

#[test]
fn unknown_mmio_slot_is_an_invalid_hypercall() {
    if !kvm_available("unknown_mmio_slot_is_an_invalid_hypercall") {
        return;
    }
    // mov $0xffff0800, %ecx; mov %rsp, (%rcx)
    let code = [0xb9, 0x00, 0x08, 0xff, 0xff, 0x48, 0x89, 0x21];
    let out = monitor(&[&image("badslot", &code, b"")]);
    assert!(stderr(&out).contains("0xffff0800, which is no hypercall slot"));
    assert_eq!(out.status.code(), Some(254));
}

#[test]
fn fault_at_ring3_goes_through_the_idt_and_is_reported() {
    if !kvm_available("fault_at_ring3_goes_through_the_idt_and_is_reported") {
        return;
    }
    // ud2 at CPL 3 -> #UD -> IDT gate 6 -> trap stub (hlt at CPL 0) -> KVM_EXIT_HLT.
    let mut a = Asm::default();
    a.ud2();
    let out = monitor(&[&image("ud2", &a.code, b"")]);
    let err = stderr(&out);
    assert!(err.contains("guest crashed"), "{err}");
    // The stub for vector 6 ran at ring 0 on the TSS RSP0 stack.
    let stub6 = format!("rip {:016x}", TRAP_STUBS + 6 * 16 + 1);
    assert!(err.contains(&stub6), "expected {stub6} in: {err}");
    assert!(err.contains("cs 0x10 (cpl 0)"), "{err}");
    assert_eq!(out.status.code(), Some(255));
}

#[test]
fn wrong_kernel_magic_or_abi_is_refused() {
    if !kvm_available("wrong_kernel_magic_or_abi_is_refused") {
        return;
    }
    let k = kernel_with_header(&[0xf4], b"", 0x1234, hvt_abi::ABI_VERSION);
    let img = write_image("badmagic", &elf(&[k], Some(&manifest(Platform::Hvt))));
    let out = monitor(&[img.to_str().unwrap()]);
    assert!(stderr(&out).contains("not the hvt kernel magic"));
    assert_eq!(out.status.code(), Some(125));

    let k = kernel_with_header(&[0xf4], b"", hvt_abi::KERNEL_HEADER_MAGIC, 99);
    let img = write_image("badabi", &elf(&[k], Some(&manifest(Platform::Hvt))));
    let out = monitor(&[img.to_str().unwrap()]);
    assert!(stderr(&out).contains("ABI version 99"));
    assert_eq!(out.status.code(), Some(125));
}

#[test]
fn boot_info_describes_the_boot() {
    if !kvm_available("boot_info_describes_the_boot") {
        return;
    }
    // The guest writes its BootInfo (at %rdi, identity-mapped) to stdout.
    let size = std::mem::size_of::<BootInfo>();
    let mut a = Asm::default();
    a.sub_rsp(32);
    a.code.extend_from_slice(&[0x48, 0x89, 0xf8]); // mov %rdi, %rax
    a.console_write_rax(size as u32, 1).halt(0);
    let img = image("bootinfo", &a.code, b"");
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let out = monitor(&["--mem", "32M", "--trace-syscalls", &img]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stdout.len(), size);
    // SAFETY: BootInfo is repr(C) plain data; the buffer holds exactly its size.
    let bi: BootInfo = unsafe { std::ptr::read_unaligned(out.stdout.as_ptr().cast()) };
    assert_eq!(bi.magic, hvt_abi::BOOT_INFO_MAGIC);
    assert_eq!(bi.abi_version, hvt_abi::ABI_VERSION);
    assert_eq!(bi.mem_size, 32 << 20);
    assert_eq!(bi.flags, hvt_abi::BOOT_FLAG_TRACE_SYSCALLS);
    assert!(bi.tsc_khz > 100_000, "tsc_khz {}", bi.tsc_khz);
    assert!(bi.wall_clock_ns >= before && bi.wall_clock_ns < before + 10_000_000_000);
    assert!(bi.wall_clock_tsc > 0);
    assert!(bi.page_table_root >= 0x1000 && bi.page_table_root < 0x10_0000);
    assert_eq!(bi.kernel_stack_top - bi.kernel_stack_bottom, 64 << 10);
    assert_eq!(bi.kernel_stack_top % 16, 0);
    assert!(bi.fault_stack_top > 0);
    let m = manifest(Platform::Hvt);
    assert_eq!(
        (
            bi.app_entry,
            bi.app_base,
            bi.app_end,
            bi.app_phdr,
            bi.app_phent,
            bi.app_phnum
        ),
        (m.app_entry, m.app_base, m.app_end, m.app_phdr, 56, 3)
    );
    assert_eq!(bi.app_stack_pointer % 16, 0);
    assert!(bi.app_stack_pointer < hvt_abi::layout::USER_STACK_TOP);
    assert!(bi.app_stack_mapped_bottom <= bi.app_stack_pointer - (16 << 10));
    assert_eq!(bi.app_stack_mapped_bottom % 4096, 0);
    assert_eq!(bi.app_name_len, 5);
    assert_eq!(
        (bi.options, bi.options_len),
        (0, 0),
        "no options: no string"
    );
    // Free memory: page aligned, sorted, inside RAM, clear of the kernel.
    let free = &bi.free[..bi.free_count as usize];
    assert!(!free.is_empty());
    for r in free {
        assert!(r.start % 4096 == 0 && r.end % 4096 == 0 && r.start < r.end);
        assert!(r.end <= 32 << 20);
        assert!(r.end <= KERNEL_BASE_ || r.start >= KERNEL_BASE_ + KERNEL_SIZE);
    }
    assert!(free.windows(2).all(|w| w[0].end <= w[1].start));
    assert_eq!(free.last().unwrap().end, 32 << 20);
}

const KERNEL_BASE_: u64 = hvt_abi::layout::KERNEL_BASE;

#[test]
fn boot_info_carries_the_runtime_options() {
    if !kvm_available("boot_info_carries_the_runtime_options") {
        return;
    }
    // The manifest's defaults, `--env UNIKERNEL_*` replacing one by key and
    // adding another; the guest writes the options string, then its BootInfo.
    let expected = "UNIKERNEL_IP=10.9.9.9/8 UNIKERNEL_DNS=9.9.9.9 UNIKERNEL_VERBOSE=1";
    let size = std::mem::size_of::<BootInfo>();
    let mut a = Asm::default();
    a.sub_rsp(32)
        .load_rax_rdi(offset_of!(BootInfo, options) as u32)
        .console_write_rax(expected.len() as u32, 1);
    a.code.extend_from_slice(&[0x48, 0x89, 0xf8]); // mov %rdi, %rax
    a.console_write_rax(size as u32, 1).halt(0);
    let mut m = manifest(Platform::Hvt);
    m.options = vec![
        "UNIKERNEL_IP=10.0.0.2/24".into(),
        "UNIKERNEL_DNS=9.9.9.9".into(),
    ];
    let img = write_image("options", &elf(&[kernel(&a.code, b"")], Some(&m)));
    let img = img.display().to_string();
    let out = monitor(&[
        "--env",
        "UNIKERNEL_IP=10.9.9.9/8",
        "--env",
        "UNIKERNEL_VERBOSE=1",
        &img,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(out.stdout.len(), expected.len() + size);
    assert_eq!(&out.stdout[..expected.len()], expected.as_bytes());
    // SAFETY: BootInfo is repr(C) plain data; the buffer holds exactly its size after the string.
    let bi: BootInfo =
        unsafe { std::ptr::read_unaligned(out.stdout[expected.len()..].as_ptr().cast()) };
    assert_eq!(bi.options_len, expected.len() as u64);
    assert!(
        bi.options >= 0x1_0000 && bi.options < KERNEL_BASE_,
        "{:#x}",
        bi.options
    );
}

#[test]
fn bad_runtime_options_are_refused_before_boot() {
    // No KVM needed: the options are checked before the VM exists.
    let img = image("bad-options", &[0xf4], b"");
    let out = monitor(&["--env", "UNIKERNEL_IP=10.0.0.2", &img]);
    assert_eq!(out.status.code(), Some(125));
    let e = stderr(&out);
    assert!(
        e.contains("--env \"UNIKERNEL_IP=10.0.0.2\": the address needs a prefix length"),
        "{e}"
    );
    let out = monitor(&["--env", "UNIKERNEL_DNS=9.9.9.9,", &img]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("empty entry"), "{}", stderr(&out));
}
