//! Hand-made hvt images for the monitor's tests: a tiny "kernel" of a few
//! hand-encoded x86-64 instructions behind a valid `KernelHeader`, packed
//! into an ELF with a manifest note and a `PT_INTERP`, the way the builder
//! packs real images. No real runtime kernel is needed.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hvt_abi::hypercall::{mmio_address, Call};
use hvt_abi::layout::KERNEL_BASE;
use hvt_abi::{KernelHeader, ABI_VERSION, KERNEL_HEADER_MAGIC};
use unikernel_image::manifest::{Manifest, Platform, NOTE_NAME, NOTE_TYPE};

/// Where the tiny kernel puts things (all inside its one RX segment).
pub const ENTRY: u64 = KERNEL_BASE + 0x40;
pub const DATA: u64 = KERNEL_BASE + 0x800;
pub const SYSCALL_ENTRY: u64 = KERNEL_BASE + 0xf00;
pub const TRAP_STUBS: u64 = KERNEL_BASE + 0x1000;
pub const KERNEL_SIZE: u64 = 0x2000;

/// True if /dev/kvm exists; otherwise prints a loud SKIPPED line.
pub fn kvm_available(test: &str) -> bool {
    if Path::new("/dev/kvm").exists() {
        return true;
    }
    eprintln!("SKIPPED: /dev/kvm not available ({test} did not run)");
    false
}

/// A few x86-64 instructions, hand-encoded.
#[derive(Default)]
pub struct Asm {
    pub code: Vec<u8>,
}

impl Asm {
    fn emit(&mut self, b: &[u8]) -> &mut Self {
        self.code.extend_from_slice(b);
        self
    }
    /// sub $n, %rsp
    pub fn sub_rsp(&mut self, n: u8) -> &mut Self {
        self.emit(&[0x48, 0x83, 0xec, n])
    }
    /// movq $imm, d(%rsp)
    pub fn store_imm(&mut self, d: u8, imm: u32) -> &mut Self {
        self.emit(&[0x48, 0xc7, 0x44, 0x24, d])
            .emit(&imm.to_le_bytes())
    }
    /// mov %rax, d(%rsp)
    pub fn store_rax(&mut self, d: u8) -> &mut Self {
        self.emit(&[0x48, 0x89, 0x44, 0x24, d])
    }
    /// movabs $imm, %rax
    pub fn mov_rax_imm(&mut self, imm: u64) -> &mut Self {
        self.emit(&[0x48, 0xb8]).emit(&imm.to_le_bytes())
    }
    /// mov d(%rdi), %rax
    pub fn load_rax_rdi(&mut self, d: u32) -> &mut Self {
        self.emit(&[0x48, 0x8b, 0x87]).emit(&d.to_le_bytes())
    }
    /// mov d(%rax), %rax
    pub fn load_rax_rax(&mut self, d: u32) -> &mut Self {
        self.emit(&[0x48, 0x8b, 0x80]).emit(&d.to_le_bytes())
    }
    /// Copies 16 bytes from (%rax) to d(%rsp) (via %rdx), then lea d(%rsp), %rax:
    /// hypercalls take guest-physical addresses, so virtual data (the app stack)
    /// is first copied to the identity-mapped kernel stack.
    pub fn copy16_rax_to_rsp(&mut self, d: u8) -> &mut Self {
        for i in [0u8, 8] {
            self.emit(&[0x48, 0x8b, 0x50, i])
                .emit(&[0x48, 0x89, 0x54, 0x24, d + i]);
        }
        self.emit(&[0x48, 0x8d, 0x44, 0x24, d])
    }
    /// mov $slot, %ecx; mov %rsp, (%rcx): the call with its args at %rsp.
    pub fn hypercall(&mut self, call: Call) -> &mut Self {
        self.emit(&[0xb9])
            .emit(&(mmio_address(call) as u32).to_le_bytes())
            .emit(&[0x48, 0x89, 0x21])
    }
    /// Builds a ConsoleWrite {data, len, stream} at %rsp (data from %rax) and calls it.
    pub fn console_write_rax(&mut self, len: u32, stream: u32) -> &mut Self {
        self.store_rax(0)
            .store_imm(8, len)
            .store_imm(16, stream)
            .store_imm(24, 0)
            .hypercall(Call::ConsoleWrite)
    }
    /// Halt with `code`.
    pub fn halt(&mut self, code: u32) -> &mut Self {
        // Halt { exit_code, _pad, crash: 0 }
        self.store_imm(0, code)
            .store_imm(8, 0)
            .hypercall(Call::Halt)
    }
    pub fn ud2(&mut self) -> &mut Self {
        self.emit(&[0x0f, 0x0b])
    }
}

/// A loadable segment of a test image.
pub struct Seg {
    pub gpa: u64,
    pub bytes: Vec<u8>,
    pub memsz: u64,
    /// PF_R/PF_W/PF_X bits.
    pub flags: u32,
}

/// The tiny kernel: header, `code` at ENTRY, `data` at DATA, hlt stubs.
pub fn kernel(code: &[u8], data: &[u8]) -> Seg {
    kernel_with_header(code, data, KERNEL_HEADER_MAGIC, ABI_VERSION)
}

pub fn kernel_with_header(code: &[u8], data: &[u8], magic: u64, abi_version: u32) -> Seg {
    let h = KernelHeader {
        magic,
        abi_version,
        trap_stub_size: 16,
        entry: ENTRY,
        syscall_entry: SYSCALL_ENTRY,
        trap_stubs: TRAP_STUBS,
    };
    let mut k = vec![0xf4u8; KERNEL_SIZE as usize]; // hlt everywhere
    let mut hdr = Vec::new();
    hdr.extend_from_slice(&h.magic.to_le_bytes());
    hdr.extend_from_slice(&h.abi_version.to_le_bytes());
    hdr.extend_from_slice(&h.trap_stub_size.to_le_bytes());
    for v in [h.entry, h.syscall_entry, h.trap_stubs] {
        hdr.extend_from_slice(&v.to_le_bytes());
    }
    assert_eq!(hdr.len(), std::mem::size_of::<KernelHeader>());
    k[..hdr.len()].copy_from_slice(&hdr);
    let at = (ENTRY - KERNEL_BASE) as usize;
    k[at..at + code.len()].copy_from_slice(code);
    let at = (DATA - KERNEL_BASE) as usize;
    k[at..at + data.len()].copy_from_slice(data);
    Seg {
        gpa: KERNEL_BASE,
        memsz: KERNEL_SIZE,
        bytes: k,
        flags: 4 | 1, // R X
    }
}

pub fn manifest(platform: Platform) -> Manifest {
    Manifest {
        platform,
        memory: 0,
        app_entry: 0x20_1000,
        app_base: 0x20_0000,
        app_phdr: 0x20_0040,
        app_end: 0x20_2000,
        app_phnum: 3,
        app_phent: 56,
        name: "hello".into(),
        args: vec!["default-arg".into()],
        env: vec!["HOME=/".into(), "GREETING=hi".into()],
        components: vec![],
        component_reasons: vec![],
        devices: vec![],
        ports: vec![],
        options: vec![],
        disks: vec![],
        files_addr: 0,
        files_len: 0,
        build_id: vec![0xab; 8],
    }
}

/// Writes an ELF64 image: PT_INTERP, the segments, and (if given) the manifest note.
pub fn elf(segs: &[Seg], manifest: Option<&Manifest>) -> Vec<u8> {
    const PHENT: usize = 56;
    let interp = b"/nonexistent/unikernel/\0".to_vec();
    let mut note = Vec::new();
    if let Some(m) = manifest {
        let name = format!("{NOTE_NAME}\0");
        let desc = m.encode();
        note.extend_from_slice(&(name.len() as u32).to_le_bytes());
        note.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        note.extend_from_slice(&NOTE_TYPE.to_le_bytes());
        note.extend_from_slice(name.as_bytes());
        note.resize(note.len().next_multiple_of(4), 0);
        note.extend_from_slice(&desc);
        note.resize(note.len().next_multiple_of(4), 0);
    }
    let phnum = 1 + segs.len() + usize::from(manifest.is_some());
    let mut off = 64 + phnum * PHENT;
    let interp_off = off;
    off += interp.len();
    off = off.next_multiple_of(4);
    let note_off = off;
    off += note.len();
    let mut seg_offs = Vec::new();
    for s in segs {
        off = off.next_multiple_of(0x1000);
        seg_offs.push(off);
        off += s.bytes.len();
    }
    let mut f = vec![0u8; off];
    // ELF header.
    f[..16].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    let put = |f: &mut Vec<u8>, at: usize, b: &[u8]| f[at..at + b.len()].copy_from_slice(b);
    put(&mut f, 16, &2u16.to_le_bytes()); // ET_EXEC
    put(&mut f, 18, &62u16.to_le_bytes()); // EM_X86_64
    put(&mut f, 20, &1u32.to_le_bytes());
    put(&mut f, 24, &ENTRY.to_le_bytes());
    put(&mut f, 32, &64u64.to_le_bytes()); // e_phoff
    put(&mut f, 52, &64u16.to_le_bytes()); // e_ehsize
    put(&mut f, 54, &(PHENT as u16).to_le_bytes());
    put(&mut f, 56, &(phnum as u16).to_le_bytes());
    put(&mut f, 58, &64u16.to_le_bytes());
    let mut ph = 64;
    let mut phdr = |f: &mut Vec<u8>,
                    p_type: u32,
                    flags: u32,
                    offset: usize,
                    addr: u64,
                    filesz: usize,
                    memsz: u64,
                    align: u64| {
        put(f, ph, &p_type.to_le_bytes());
        put(f, ph + 4, &flags.to_le_bytes());
        put(f, ph + 8, &(offset as u64).to_le_bytes());
        put(f, ph + 16, &addr.to_le_bytes());
        put(f, ph + 24, &addr.to_le_bytes());
        put(f, ph + 32, &(filesz as u64).to_le_bytes());
        put(f, ph + 40, &memsz.to_le_bytes());
        put(f, ph + 48, &align.to_le_bytes());
        ph += PHENT;
    };
    phdr(
        &mut f,
        3,
        4,
        interp_off,
        0,
        interp.len(),
        interp.len() as u64,
        1,
    );
    for (s, &o) in segs.iter().zip(&seg_offs) {
        phdr(&mut f, 1, s.flags, o, s.gpa, s.bytes.len(), s.memsz, 0x1000);
    }
    if manifest.is_some() {
        phdr(&mut f, 4, 4, note_off, 0, note.len(), note.len() as u64, 4);
    }
    put(&mut f, interp_off, &interp);
    put(&mut f, note_off, &note);
    for (s, &o) in segs.iter().zip(&seg_offs) {
        put(&mut f, o, &s.bytes);
    }
    f
}

/// Writes `bytes` to a fresh file in the test's temp dir; returns its path.
pub fn write_image(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("unikernel-hvt-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Runs the monitor binary.
pub fn monitor(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_unikernel-hvt"))
        .args(args)
        .output()
        .expect("cannot start unikernel-hvt");
    eprintln!(
        "--- monitor {args:?} -> {:?}\n--- stdout:\n{}--- stderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// True if `tool --version` runs.
pub fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok()
}

/// A test kernel written in C (`c`, linked by `ld_script` into a flat
/// binary), built with gcc in the test's temp dir under `tag` with the
/// `-D` `defines`; `None` (SKIPPED printed) without gcc or ld.
pub fn c_kernel(
    test: &str,
    c: &str,
    ld_script: &str,
    tag: &str,
    defines: &[String],
) -> Option<Vec<u8>> {
    if !(have("gcc") && have("ld")) {
        eprintln!("SKIPPED: {test}: gcc and ld are needed to build the test kernel");
        return None;
    }
    let dir = std::env::temp_dir().join(format!("hvt-c-kernels-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let obj = dir.join(format!("{tag}.o"));
    let bin = dir.join(format!("{tag}.bin"));
    let run = |cmd: &mut Command| {
        let o = cmd.output().unwrap();
        assert!(
            o.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    run(Command::new("gcc")
        .args(defines.iter().map(|d| format!("-D{d}")))
        .args([
            "-O2",
            "-ffreestanding",
            "-fno-pic",
            "-fno-pie",
            "-fno-stack-protector",
            "-fno-asynchronous-unwind-tables",
            "-mgeneral-regs-only",
            "-mno-red-zone",
            "-fno-tree-loop-distribute-patterns",
            "-nostdlib",
            "-Wall",
            "-Werror",
            "-c",
            c,
            "-o",
        ])
        .arg(&obj));
    run(Command::new("ld")
        .args(["-T", ld_script, "--oformat", "binary", "-o"])
        .arg(&bin)
        .arg(&obj));
    Some(std::fs::read(&bin).unwrap())
}

/// The hostile test kernel (`hostile/kernel.c`; see tests/hostile.rs),
/// built once per test process; `None` (SKIPPED printed) without KVM, gcc
/// or ld.
pub fn hostile_kernel(test: &str) -> Option<&'static [u8]> {
    const KERNEL_C: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/hostile/kernel.c");
    const LINK_LD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/hostile/link.ld");
    static BIN: std::sync::OnceLock<Option<Vec<u8>>> = std::sync::OnceLock::new();
    if !kvm_available(test) {
        return None;
    }
    BIN.get_or_init(|| c_kernel(test, KERNEL_C, LINK_LD, "hostile", &[]))
        .as_deref()
}

/// An image of the hostile kernel `code` with its parameters patched in
/// (`params` in kernel.c: mode, arg, count) and one declared disk `data`;
/// the tiny header kernel only jumps to it.
pub fn hostile_image(code: &[u8], tag: &str, mode: u64, arg: u64, count: u64) -> PathBuf {
    /// Where `hostile/link.ld` puts the kernel (its own read-only, executable segment).
    const SEGMENT: u64 = 0x11_0000;
    /// `params[0]` in kernel.c.
    const PARAMS_MAGIC: u64 = 0x454c_4954_534f_4821;
    let mut code = code.to_vec();
    let at = code
        .windows(8)
        .position(|w| w == PARAMS_MAGIC.to_le_bytes())
        .expect("the params block of hostile/kernel.c");
    for (i, v) in [mode, arg, count].into_iter().enumerate() {
        let o = at + 8 * (i + 1);
        code[o..o + 8].copy_from_slice(&v.to_le_bytes());
    }
    // movabs $SEGMENT, %rax; jmp *%rax (%rdi still holds the BootInfo).
    let mut jump = vec![0x48, 0xb8];
    jump.extend_from_slice(&SEGMENT.to_le_bytes());
    jump.extend_from_slice(&[0xff, 0xe0]);
    let seg = Seg {
        gpa: SEGMENT,
        memsz: code.len() as u64,
        bytes: code,
        flags: 4 | 1,
    };
    let mut m = manifest(Platform::Hvt);
    m.disks = vec!["data=/data".into()];
    write_image(
        &format!("hostile-{tag}"),
        &elf(&[kernel(&jump, &[]), seg], Some(&m)),
    )
}
