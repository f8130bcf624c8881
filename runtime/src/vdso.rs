//! The vDSO every app gets: a tiny ELF shared object mapped at
//! [`VDSO_BASE`] (named by `AT_SYSINFO_EHDR` in the auxiliary vector) whose
//! `__vdso_clock_gettime`, `__vdso_gettimeofday`, `__vdso_time` and
//! `__vdso_getcpu` answer without a system call, as Linux's do. musl, Go
//! and glibc look these symbols up at start-up; a tokio or hyper service
//! reads the clock several times per request, and on kvm-pvm each
//! `syscall` is a trip through the host (~1.1 us).
//!
//! Two pages: the image (ELF header, program headers, dynamic section,
//! hash table, symbols, strings, then the code) and, right after it, the
//! data page the code reads ([`Vvar`]), both read-only for the app (the
//! image page executable). The clock is the platform's own, when it can be
//! read at user level ([`crate::platform::Platform::vdso_clock`]):
//!
//! * a TSC clock (hvt; kvm without kvmclock): nanoseconds =
//!   `((rdtsc - boot_tsc) * mult) >> 32`, the formula the platform's clock
//!   uses, so the vDSO and the system calls read the same time;
//! * a pvclock (Xen's `vcpu_time_info` in the shared-info page, KVM's
//!   kvmclock: one layout), read in place with its version protocol, minus
//!   the platform's origin. Only while the hypervisor marks it stable
//!   (`PVCLOCK_TSC_STABLE_BIT`: one clock for all vCPUs, never backwards,
//!   Linux's own condition for its vDSO); otherwise, call by call, the
//!   system call.
//!
//! A platform without either leaves `mode` zero and every function makes
//! the system call instead.
//!
//! The code is position-dependent on purpose: it reads the data page at
//! its fixed address ([`VVAR_BASE`]), so the image can be written by
//! hand without relocations.

use crate::mm::vm::{MMAP_END, PROT_EXEC, PROT_READ};
use alloc::vec::Vec;

/// Where the vDSO image is mapped (just above the `mmap` region, below the
/// main-thread stack).
pub const VDSO_BASE: u64 = unikernel_image::layout::VDSO_BASE;
const _: () = assert!(
    VDSO_BASE >= MMAP_END,
    "the vDSO must lie outside the mmap region"
);
/// The data page, right after the image page.
pub const VVAR_BASE: u64 = VDSO_BASE + 4096;
/// Bytes mapped (the image page and the data page).
pub const VDSO_BYTES: u64 = 8192;

/// The clock parameters the code reads (the data page).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Vvar {
    /// [`MODE_SYSCALL`], [`MODE_TSC`] or [`MODE_PVCLOCK`].
    pub mode: u64,
    /// TSC: the TSC value at which the monotonic clock reads 0.
    pub boot_tsc: u64,
    /// TSC: nanoseconds per TSC tick, times 2^32.
    pub mult: u64,
    /// Realtime minus monotonic, in nanoseconds.
    pub wall_offset_ns: i64,
    /// pvclock: the address of the pvclock structure (app-readable).
    pub pvclock: u64,
    /// pvclock: its reading (ns) at which the monotonic clock reads 0.
    pub origin_ns: u64,
}

/// Every function makes its system call.
pub const MODE_SYSCALL: u64 = 0;
/// A TSC-linear clock.
pub const MODE_TSC: u64 = 1;
/// A pvclock structure, read in place.
pub const MODE_PVCLOCK: u64 = 2;

// The functions, System V ABI (they call two local helpers, so they use
// a few bytes of the caller's stack). Each falls back to its system call
// when the data page says so (or for a clock it does not know). Registers:
// rdi, rsi (arguments), rax, rcx, rdx, r8, r9, r11 (scratch).
core::arch::global_asm!(
    ".pushsection .rodata.unikernel_vdso, \"a\"",
    ".balign 16",
    ".globl unikernel_vdso_code_start",
    "unikernel_vdso_code_start:",
    // eax = non-zero when the clock can be read here; r8 = the data page.
    // A pvclock only while its flags say stable. Clobbers rax.
    "unikernel_vdso_usable:",
    "    mov rax, qword ptr [r8]",
    "    cmp rax, 2",
    "    jne 1f",
    "    mov rax, qword ptr [r8 + 32]",
    "    movzx eax, byte ptr [rax + 29]", // flags
    "    and eax, 1",                     // PVCLOCK_TSC_STABLE_BIT
    "1:",
    "    ret",
    // rax = nanoseconds since boot + r9; r8 = the data page. Clobbers rcx,
    // rdx, r10, r11.
    "unikernel_vdso_now:",
    "    cmp qword ptr [r8], 2",
    "    je 3f",
    "    rdtsc",
    "    shl rdx, 32",
    "    or rax, rdx",
    "    sub rax, qword ptr [r8 + 8]",
    "    mul qword ptr [r8 + 16]",
    "    shrd rax, rdx, 32",
    "    add rax, r9",
    "    ret",
    // pvclock: version (0), tsc_timestamp (8), system_time (16),
    // tsc_to_system_mul (24, u32), tsc_shift (28, i8); an odd or changed
    // version means the hypervisor was rewriting it: read again.
    "3:",
    "    mov r10, qword ptr [r8 + 32]",
    "4:",
    "    mov r11d, dword ptr [r10]",
    "    test r11d, 1",
    "    jz 5f",
    "    pause",
    "    jmp 4b",
    "5:",
    "    lfence",
    "    rdtsc",
    "    shl rdx, 32",
    "    or rax, rdx",
    "    sub rax, qword ptr [r10 + 8]",
    "    jae 6f",
    "    xor eax, eax", // a TSC before the snapshot: no time since it
    "6:",
    "    movsx ecx, byte ptr [r10 + 28]",
    "    test ecx, ecx",
    "    js 7f",
    "    shl rax, cl",
    "    jmp 9f",
    "7:",
    "    neg ecx",
    "    shr rax, cl",
    "9:",
    "    mov ecx, dword ptr [r10 + 24]",
    "    mul rcx",
    "    shrd rax, rdx, 32",
    "    add rax, qword ptr [r10 + 16]",
    "    lfence",
    "    cmp r11d, dword ptr [r10]",
    "    jne 4b",
    "    sub rax, qword ptr [r8 + 40]",
    "    add rax, r9",
    "    ret",
    // rax = ns -> rax = seconds, rdx = nanoseconds. Clobbers rcx.
    "unikernel_vdso_split:",
    "    xor edx, edx",
    "    mov ecx, 1000000000",
    "    div rcx",
    "    ret",
    // __vdso_clock_gettime(clockid: edi, ts: rsi) -> 0 or -errno
    "unikernel_vdso_clock_gettime:",
    "    movabs r8, {vvar}",
    "    call unikernel_vdso_usable",
    "    test eax, eax",
    "    je 8f",
    "    xor r9d, r9d",
    "    cmp edi, 1",          // CLOCK_MONOTONIC
    "    je 2f",
    "    cmp edi, 4",          // CLOCK_MONOTONIC_RAW
    "    je 2f",
    "    cmp edi, 6",          // CLOCK_MONOTONIC_COARSE
    "    je 2f",
    "    cmp edi, 7",          // CLOCK_BOOTTIME
    "    je 2f",
    "    mov r9, qword ptr [r8 + 24]",
    "    test edi, edi",       // CLOCK_REALTIME
    "    je 2f",
    "    cmp edi, 5",          // CLOCK_REALTIME_COARSE
    "    je 2f",
    "8:",
    "    mov eax, 228",
    "    syscall",
    "    ret",
    "2:",
    "    call unikernel_vdso_now",
    "    call unikernel_vdso_split",
    "    mov qword ptr [rsi], rax",
    "    mov qword ptr [rsi + 8], rdx",
    "    xor eax, eax",
    "    ret",
    // __vdso_gettimeofday(tv: rdi, tz: rsi) -> 0 or -errno
    "unikernel_vdso_gettimeofday:",
    "    movabs r8, {vvar}",
    "    call unikernel_vdso_usable",
    "    test eax, eax",
    "    je 8f",
    "    test rsi, rsi",
    "    je 3f",
    "    mov qword ptr [rsi], 0", // tz_minuteswest = 0, tz_dsttime = 0
    "3:",
    "    test rdi, rdi",
    "    je 4f",
    "    mov r9, qword ptr [r8 + 24]",
    "    call unikernel_vdso_now",
    "    call unikernel_vdso_split",
    "    mov qword ptr [rdi], rax",
    "    mov rax, rdx",
    "    xor edx, edx",
    "    mov ecx, 1000",
    "    div rcx",
    "    mov qword ptr [rdi + 8], rax",
    "4:",
    "    xor eax, eax",
    "    ret",
    "8:",
    "    mov eax, 96",
    "    syscall",
    "    ret",
    // __vdso_time(tloc: rdi) -> seconds
    "unikernel_vdso_time:",
    "    movabs r8, {vvar}",
    "    call unikernel_vdso_usable",
    "    test eax, eax",
    "    je 8f",
    "    mov r9, qword ptr [r8 + 24]",
    "    call unikernel_vdso_now",
    "    call unikernel_vdso_split",
    "    test rdi, rdi",
    "    je 5f",
    "    mov qword ptr [rdi], rax",
    "5:",
    "    ret",
    "8:",
    "    mov eax, 201",
    "    syscall",
    "    ret",
    // __vdso_getcpu(cpu: rdi, node: rsi, cache: rdx) -> 0: one CPU, one node
    "unikernel_vdso_getcpu:",
    "    test rdi, rdi",
    "    je 6f",
    "    mov dword ptr [rdi], 0",
    "6:",
    "    test rsi, rsi",
    "    je 7f",
    "    mov dword ptr [rsi], 0",
    "7:",
    "    xor eax, eax",
    "    ret",
    ".globl unikernel_vdso_code_end",
    "unikernel_vdso_code_end:",
    ".globl unikernel_vdso_offsets",
    ".balign 8",
    "unikernel_vdso_offsets:",
    "    .quad unikernel_vdso_clock_gettime - unikernel_vdso_code_start",
    "    .quad unikernel_vdso_gettimeofday - unikernel_vdso_code_start",
    "    .quad unikernel_vdso_time - unikernel_vdso_code_start",
    "    .quad unikernel_vdso_getcpu - unikernel_vdso_code_start",
    ".popsection",
    vvar = const VVAR_BASE,
);

extern "C" {
    static unikernel_vdso_code_start: u8;
    static unikernel_vdso_code_end: u8;
    static unikernel_vdso_offsets: [u64; 4];
}

/// The functions' names, in the order of `unikernel_vdso_offsets`.
pub const SYMBOLS: [&str; 4] = [
    "__vdso_clock_gettime",
    "__vdso_gettimeofday",
    "__vdso_time",
    "__vdso_getcpu",
];

/// The code bytes and each function's offset in them.
fn code() -> (&'static [u8], [u64; 4]) {
    // SAFETY: the three symbols are defined by the global_asm above in one
    // read-only section: start <= end, and the offsets table is 4 quads.
    unsafe {
        let start = core::ptr::addr_of!(unikernel_vdso_code_start);
        let end = core::ptr::addr_of!(unikernel_vdso_code_end);
        let len = end as usize - start as usize;
        (
            core::slice::from_raw_parts(start, len),
            core::ptr::addr_of!(unikernel_vdso_offsets).read(),
        )
    }
}

const EHDR: usize = 64;
const PHDR: usize = 56;
const DYN_OFF: usize = EHDR + 2 * PHDR;
const DYN_ENTRIES: usize = 9;
const HASH_OFF: usize = DYN_OFF + DYN_ENTRIES * 16;
/// Symbols: the null one, then [`SYMBOLS`].
const NSYMS: usize = 1 + SYMBOLS.len();
/// nbucket = 1, nchain = NSYMS, the bucket, the chain.
const HASH_WORDS: usize = 2 + 1 + NSYMS;
const SYM_OFF: usize = (HASH_OFF + HASH_WORDS * 4).next_multiple_of(8);
/// One u16 version index per symbol.
const VERSYM_OFF: usize = SYM_OFF + NSYMS * 24;
/// Two version definitions (the base, then `LINUX_2.6`), each a Verdef
/// (20 bytes) followed by its Verdaux (8 bytes).
const VERDEF_OFF: usize = (VERSYM_OFF + NSYMS * 2).next_multiple_of(4);
const VERDEF_BYTES: usize = 2 * (20 + 8);
const STR_OFF: usize = VERDEF_OFF + VERDEF_BYTES;
/// Where the code starts in the image page.
pub const CODE_OFF: usize = 0x400;
/// The name the vDSO calls itself (the base version) and the version its
/// symbols carry, as Linux's x86-64 vDSO has them.
const SONAME: &str = "linux-vdso.so.1";
pub const VERSION: &str = "LINUX_2.6";

/// The SysV ELF hash (`vd_hash` of a version definition).
pub fn elf_hash(name: &str) -> u32 {
    name.bytes().fold(0u32, |h, c| {
        let h = (h << 4).wrapping_add(u32::from(c));
        let g = h & 0xf000_0000;
        (h ^ (g >> 24)) & !g
    })
}

fn put(b: &mut [u8], at: usize, v: &[u8]) {
    b[at..at + v.len()].copy_from_slice(v);
}

/// The image page: an `ET_DYN` ELF with one `PT_LOAD` (the page, at
/// address 0 relative to its load address) and a `PT_DYNAMIC`, whose
/// symbols (version `LINUX_2.6`) `code` offsets name (relative to
/// [`CODE_OFF`]). Built on the host in tests and checked with a parser that
/// looks symbols up the way musl and Go do.
pub fn image(code: &[u8], offsets: &[u64; 4]) -> Vec<u8> {
    let mut b = alloc::vec![0u8; 4096];
    // Strings: "\0", the symbol names, the soname, the version.
    let mut strtab = alloc::vec![0u8];
    let mut add = |s: &str| {
        let at = strtab.len() as u32;
        strtab.extend_from_slice(s.as_bytes());
        strtab.push(0);
        at
    };
    let name_at: [u32; 4] = core::array::from_fn(|i| add(SYMBOLS[i]));
    let soname_at = add(SONAME);
    let version_at = add(VERSION);
    assert!(STR_OFF + strtab.len() <= CODE_OFF && CODE_OFF + code.len() <= 4096);
    // ELF header.
    put(&mut b, 0, &[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
    put(&mut b, 16, &3u16.to_le_bytes()); // ET_DYN
    put(&mut b, 18, &62u16.to_le_bytes()); // EM_X86_64
    put(&mut b, 20, &1u32.to_le_bytes()); // EV_CURRENT
    put(&mut b, 32, &(EHDR as u64).to_le_bytes()); // e_phoff
    put(&mut b, 52, &(EHDR as u16).to_le_bytes()); // e_ehsize
    put(&mut b, 54, &(PHDR as u16).to_le_bytes()); // e_phentsize
    put(&mut b, 56, &2u16.to_le_bytes()); // e_phnum
    put(&mut b, 58, &64u16.to_le_bytes()); // e_shentsize (no sections)
    let ph = |b: &mut [u8], at: usize, ty: u32, flags: u32, off: u64, size: u64, align: u64| {
        put(b, at, &ty.to_le_bytes());
        put(b, at + 4, &flags.to_le_bytes());
        put(b, at + 8, &off.to_le_bytes()); // p_offset
        put(b, at + 16, &off.to_le_bytes()); // p_vaddr
        put(b, at + 24, &off.to_le_bytes()); // p_paddr
        put(b, at + 32, &size.to_le_bytes()); // p_filesz
        put(b, at + 40, &size.to_le_bytes()); // p_memsz
        put(b, at + 48, &align.to_le_bytes());
    };
    // PT_LOAD: the whole page, read + execute; PT_DYNAMIC.
    ph(&mut b, EHDR, 1, 5, 0, 4096, 4096);
    ph(
        &mut b,
        EHDR + PHDR,
        2,
        4,
        DYN_OFF as u64,
        (DYN_ENTRIES * 16) as u64,
        8,
    );
    // Dynamic section (addresses relative to the load address).
    let dynamic: [(u64, u64); DYN_ENTRIES] = [
        (4, HASH_OFF as u64),             // DT_HASH
        (5, STR_OFF as u64),              // DT_STRTAB
        (6, SYM_OFF as u64),              // DT_SYMTAB
        (10, strtab.len() as u64),        // DT_STRSZ
        (11, 24),                         // DT_SYMENT
        (0x6fff_fff0, VERSYM_OFF as u64), // DT_VERSYM
        (0x6fff_fffc, VERDEF_OFF as u64), // DT_VERDEF
        (0x6fff_fffd, 2),                 // DT_VERDEFNUM
        (0, 0),                           // DT_NULL
    ];
    for (i, (tag, val)) in dynamic.iter().enumerate() {
        put(&mut b, DYN_OFF + 16 * i, &tag.to_le_bytes());
        put(&mut b, DYN_OFF + 16 * i + 8, &val.to_le_bytes());
    }
    // SysV hash: one bucket holding the last symbol, each chain entry the
    // symbol before it (so every lookup walks them all; there are four).
    let mut hash = [0u32; HASH_WORDS];
    hash[0] = 1;
    hash[1] = NSYMS as u32;
    hash[2] = (NSYMS - 1) as u32;
    for i in 1..NSYMS {
        hash[3 + i] = (i - 1) as u32;
    }
    for (i, w) in hash.iter().enumerate() {
        put(&mut b, HASH_OFF + 4 * i, &w.to_le_bytes());
    }
    // Symbols: STB_GLOBAL | STT_FUNC, in section 1 (any non-zero index),
    // version 2 (`LINUX_2.6`); the null symbol is local (0).
    for i in 0..SYMBOLS.len() {
        let at = SYM_OFF + 24 * (i + 1);
        put(&mut b, at, &name_at[i].to_le_bytes());
        b[at + 4] = 0x12;
        put(&mut b, at + 6, &1u16.to_le_bytes());
        put(
            &mut b,
            at + 8,
            &(CODE_OFF as u64 + offsets[i]).to_le_bytes(),
        );
        put(&mut b, VERSYM_OFF + 2 * (i + 1), &2u16.to_le_bytes());
    }
    // Version definitions: index 1 the base (flag VER_FLG_BASE), index 2
    // `LINUX_2.6`; each Verdaux right after its Verdef.
    for (k, (flags, ndx, name, name_at)) in
        [(1u16, 1u16, SONAME, soname_at), (0, 2, VERSION, version_at)]
            .into_iter()
            .enumerate()
    {
        let at = VERDEF_OFF + 28 * k;
        put(&mut b, at, &1u16.to_le_bytes()); // vd_version
        put(&mut b, at + 2, &flags.to_le_bytes());
        put(&mut b, at + 4, &ndx.to_le_bytes());
        put(&mut b, at + 6, &1u16.to_le_bytes()); // vd_cnt
        put(&mut b, at + 8, &elf_hash(name).to_le_bytes());
        put(&mut b, at + 12, &20u32.to_le_bytes()); // vd_aux
        put(
            &mut b,
            at + 16,
            &(if k == 0 { 28u32 } else { 0 }).to_le_bytes(),
        ); // vd_next
        put(&mut b, at + 20, &name_at.to_le_bytes()); // vda_name
    }
    put(&mut b, STR_OFF, &strtab);
    put(&mut b, CODE_OFF, code);
    b
}

/// Maps the vDSO into the app's address space with the clock `vvar`
/// (before the app starts). False if it could not be mapped (the app then
/// runs without one: its libc makes system calls).
pub fn install(vvar: Vvar) -> bool {
    let (code, offsets) = code();
    let img = image(code, &offsets);
    let mut g = crate::mm::vm::ASPACE.lock();
    let Some(a) = g.as_mut() else {
        return false;
    };
    // Mapped with their final permissions and written through the
    // identity-mapped frames behind them: no write through the app's
    // mapping, so no permission change and no TLB flush afterwards.
    if a.mmap(VDSO_BASE, 4096, PROT_READ | PROT_EXEC, true, true, true)
        .is_err()
        || a.mmap(VVAR_BASE, 4096, PROT_READ, true, true, true)
            .is_err()
    {
        return false;
    }
    let (Some((code_frame, _)), Some((data_frame, _))) = (
        a.page_table().translate(VDSO_BASE),
        a.page_table().translate(VVAR_BASE),
    ) else {
        return false;
    };
    // SAFETY: the two frames were just allocated for these mappings (whole,
    // zeroed pages in identity-mapped RAM), and nothing has read them yet.
    unsafe {
        core::ptr::copy_nonoverlapping(img.as_ptr(), code_frame as *mut u8, img.len());
        (data_frame as *mut Vvar).write(vvar);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn le64(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }
    fn le32(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    /// Looks `name` up as musl's `__vdsosym` and Go's vDSO parser do:
    /// PT_LOAD/PT_DYNAMIC from the program headers, DT_STRTAB/SYMTAB/HASH
    /// and the version tables from the dynamic section, the version
    /// `LINUX_2.6` by name and hash, then the hash chain of the bucket,
    /// matching name, type, binding, section and version.
    fn lookup(img: &[u8], name: &str) -> Option<u64> {
        assert_eq!(&img[..4], b"\x7fELF");
        let phoff = le64(img, 32) as usize;
        let phnum = u16::from_le_bytes([img[56], img[57]]) as usize;
        let (mut base, mut dynv) = (None, None);
        for i in 0..phnum {
            let p = phoff + 56 * i;
            match le32(img, p) {
                1 => base = Some(le64(img, p + 8) as i64 - le64(img, p + 16) as i64),
                2 => dynv = Some(le64(img, p + 8) as usize),
                _ => {}
            }
        }
        let (base, dynv) = (base?, dynv?);
        let (mut strs, mut syms, mut hash) = (None, None, None);
        let (mut versym, mut verdef) = (None, None);
        let mut i = dynv;
        loop {
            let (tag, val) = (le64(img, i), (le64(img, i + 8) as i64 + base) as usize);
            match tag {
                0 => break,
                4 => hash = Some(val),
                5 => strs = Some(val),
                6 => syms = Some(val),
                0x6fff_fff0 => versym = Some(val),
                0x6fff_fffc => verdef = Some(val),
                _ => {}
            }
            i += 16;
        }
        let (strs, syms, hash) = (strs?, syms?, hash?);
        let (versym, verdef) = (versym?, verdef?);
        let cstr = |at: usize| {
            let end = at + img[at..].iter().position(|&c| c == 0).unwrap();
            &img[at..end]
        };
        // Go: the index of the non-base definition named LINUX_2.6 whose
        // hash is 0x3ae75f6.
        let mut d = verdef;
        let version = loop {
            let flags = u16::from_le_bytes([img[d + 2], img[d + 3]]);
            let aux = d + le32(img, d + 12) as usize;
            if flags & 1 == 0
                && le32(img, d + 8) == 0x03ae_75f6
                && cstr(strs + le32(img, aux) as usize) == VERSION.as_bytes()
            {
                break u16::from_le_bytes([img[d + 4], img[d + 5]]);
            }
            let next = le32(img, d + 16) as usize;
            if next == 0 {
                return None;
            }
            d += next;
        };
        let nbucket = le32(img, hash);
        let h = elf_hash(name);
        let mut s = le32(img, hash + 8 + 4 * (h % nbucket) as usize);
        let chain = hash + 8 + 4 * nbucket as usize;
        while s != 0 {
            let e = syms + 24 * s as usize;
            let n = strs + le32(img, e) as usize;
            let end = n + img[n..].iter().position(|&c| c == 0)?;
            let shndx = u16::from_le_bytes([img[e + 6], img[e + 7]]);
            let ver = u16::from_le_bytes([
                img[versym + 2 * s as usize],
                img[versym + 2 * s as usize + 1],
            ]);
            if &img[n..end] == name.as_bytes()
                && img[e + 4] == 0x12
                && shndx != 0
                && ver & 0x7fff == version
            {
                return Some((le64(img, e + 8) as i64 + base) as u64);
            }
            s = le32(img, chain + 4 * s as usize);
        }
        None
    }

    #[test]
    fn every_symbol_is_found_where_its_code_is() {
        let (code, offsets) = code();
        assert!(!code.is_empty());
        let img = image(code, &offsets);
        assert_eq!(img.len(), 4096);
        for (i, name) in SYMBOLS.iter().enumerate() {
            let at = lookup(&img, name).unwrap_or_else(|| panic!("{name} not found"));
            assert_eq!(at, CODE_OFF as u64 + offsets[i], "{name}");
            assert_eq!(
                &img[at as usize..at as usize + 4],
                &code[offsets[i] as usize..offsets[i] as usize + 4]
            );
        }
        assert_eq!(lookup(&img, "__vdso_nothing"), None);
        assert_eq!(elf_hash("LINUX_2.6"), 0x03ae_75f6);
    }
}
