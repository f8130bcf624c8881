//! The app's initial stack, laid out exactly as Linux's `execve` lays it out
//! for a static executable (System V x86-64 ABI, §3.4.1), so that musl's
//! `_start` (or any libc's) finds argc, argv, envp and the auxiliary vector.
//!
//! From the top of the stack region down:
//!
//! ```text
//! USER_STACK_TOP -> 8 zero bytes (end marker)
//!                   env strings, argv strings (argv[0] = "/name" is also AT_EXECFN)
//!                   "x86_64\0" (AT_PLATFORM), 16 random bytes (AT_RANDOM)
//!                   padding to 16 bytes
//!                   auxv pairs ... AT_NULL
//!                   NULL, envp[] ...
//!                   NULL, argv[] ...
//! rsp (16-aligned)-> argc
//! ```
//!
//! This module only computes the bytes; the caller maps frames and copies
//! them: the hvt monitor on the host (it prepares the boot natively), or the
//! runtime itself on platforms without such a monitor ([`crate::start`] with
//! an [`crate::platform::AppSpec`]). One implementation for both.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

/// Auxiliary vector tags (Linux `include/uapi/linux/auxvec.h`).
pub mod at {
    pub const NULL: u64 = 0;
    pub const PHDR: u64 = 3;
    pub const PHENT: u64 = 4;
    pub const PHNUM: u64 = 5;
    pub const PAGESZ: u64 = 6;
    pub const BASE: u64 = 7;
    pub const FLAGS: u64 = 8;
    pub const ENTRY: u64 = 9;
    pub const UID: u64 = 11;
    pub const EUID: u64 = 12;
    pub const GID: u64 = 13;
    pub const EGID: u64 = 14;
    pub const PLATFORM: u64 = 15;
    pub const HWCAP: u64 = 16;
    pub const CLKTCK: u64 = 17;
    pub const SECURE: u64 = 23;
    pub const RANDOM: u64 = 25;
    pub const HWCAP2: u64 = 26;
    pub const EXECFN: u64 = 31;
    pub const SYSINFO: u64 = 32;
    pub const SYSINFO_EHDR: u64 = 33;
}

/// What goes onto the initial stack.
#[derive(Clone, Debug, Default)]
pub struct StackInput {
    /// argv; argv[0] is also AT_EXECFN.
    pub argv: Vec<String>,
    /// envp, "KEY=VALUE" each.
    pub envp: Vec<String>,
    pub phdr: u64,
    pub phent: u64,
    pub phnum: u64,
    pub entry: u64,
    /// CPUID.1:EDX.
    pub hwcap: u64,
    pub random: [u8; 16],
    /// `AT_SYSINFO`, the system-call gateway: an address the app may jump
    /// to in place of the `syscall` instruction (with RCX = its return
    /// address and R11 = RFLAGS, as `syscall` leaves them), on platforms
    /// whose runtime runs at ring 3 anyway. 0 = none, and no entry.
    pub sysinfo: u64,
}

/// The built stack: `bytes` are the contents of `[top - bytes.len(), top)`,
/// and `rsp` (== `top - bytes.len()`) points at argc.
#[derive(Clone, Debug)]
pub struct InitialStack {
    pub bytes: Vec<u8>,
    pub rsp: u64,
}

const PLATFORM: &[u8] = b"x86_64\0";

/// The environment string the app sees for `s`. std's short backtrace
/// (`RUST_BACKTRACE=1`, or any value but `0` and `full`) prints only the
/// frames it can name, and in a unikernel it can name none (the image holds
/// no debug info and there is no `/proc/self/exe`): it would print no frame
/// at all. The full form prints every frame's address, which the host
/// names (`cargo unikernel run`, `cargo unikernel symbolize`;
/// docs/debugging.md), so a backtrace asked for is made the full one.
pub fn app_env(s: &str) -> &str {
    match s.strip_prefix("RUST_BACKTRACE=") {
        Some("0") | Some("full") | None => s,
        Some(_) => "RUST_BACKTRACE=full",
    }
}

/// Builds the initial stack for a stack whose top (exclusive) is `top`.
pub fn build(top: u64, input: &StackInput) -> InitialStack {
    let strings: u64 = input
        .argv
        .iter()
        .map(String::as_str)
        .chain(input.envp.iter().map(|s| app_env(s)))
        .map(|s| s.len() as u64 + 1)
        .sum();
    let random_at = top - 8 - strings - PLATFORM.len() as u64 - 16;
    let platform_at = random_at + 16;
    let mut cursor = platform_at + PLATFORM.len() as u64;

    let mut string_ptrs = Vec::with_capacity(input.argv.len() + input.envp.len());
    let mut string_bytes = Vec::with_capacity(strings as usize);
    let all = input.argv.iter().map(String::as_str);
    for s in all.chain(input.envp.iter().map(|s| app_env(s))) {
        string_ptrs.push(cursor);
        string_bytes.extend_from_slice(s.as_bytes());
        string_bytes.push(0);
        cursor += s.len() as u64 + 1;
    }
    let (argv_ptrs, envp_ptrs) = string_ptrs.split_at(input.argv.len());
    let execfn = argv_ptrs.first().copied().unwrap_or(0);

    let auxv: [(u64, u64); 20] = [
        (at::PHDR, input.phdr),
        (at::PHENT, input.phent),
        (at::PHNUM, input.phnum),
        (at::PAGESZ, 4096),
        (at::BASE, 0),
        (at::FLAGS, 0),
        (at::ENTRY, input.entry),
        (at::UID, 0),
        (at::EUID, 0),
        (at::GID, 0),
        (at::EGID, 0),
        (at::PLATFORM, platform_at),
        (at::HWCAP, input.hwcap),
        (at::CLKTCK, 100),
        (at::SECURE, 0),
        (at::RANDOM, random_at),
        (at::HWCAP2, 0),
        (at::EXECFN, execfn),
        // The runtime maps it before the app starts (`crate::vdso`).
        (at::SYSINFO_EHDR, unikernel_image::layout::VDSO_BASE),
        // Left out when 0, as Linux leaves it out on x86_64.
        (at::SYSINFO, input.sysinfo),
    ];
    let mut words: Vec<u64> = Vec::with_capacity(4 + string_ptrs.len() + 2 * auxv.len() + 2);
    words.push(argv_ptrs.len() as u64);
    words.extend_from_slice(argv_ptrs);
    words.push(0);
    words.extend_from_slice(envp_ptrs);
    words.push(0);
    for (k, v) in auxv {
        if k == at::SYSINFO && v == 0 {
            continue;
        }
        words.extend_from_slice(&[k, v]);
    }
    words.extend_from_slice(&[at::NULL, 0]);

    let rsp = ((random_at & !15) - 8 * words.len() as u64) & !15;
    let mut bytes = vec![0u8; (top - rsp) as usize];
    let put = |bytes: &mut Vec<u8>, at: u64, data: &[u8]| {
        let off = (at - rsp) as usize;
        bytes[off..off + data.len()].copy_from_slice(data);
    };
    for (i, w) in words.iter().enumerate() {
        put(&mut bytes, rsp + 8 * i as u64, &w.to_le_bytes());
    }
    put(&mut bytes, random_at, &input.random);
    put(&mut bytes, platform_at, PLATFORM);
    put(
        &mut bytes,
        platform_at + PLATFORM.len() as u64,
        &string_bytes,
    );
    InitialStack { bytes, rsp }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOP: u64 = 0x7000_0000_0000;

    fn input() -> StackInput {
        StackInput {
            argv: vec!["/hello".into(), "a".into(), "bc".into()],
            envp: vec!["K=V".into(), "HOME=/".into()],
            phdr: 0x20_0040,
            phent: 56,
            phnum: 7,
            entry: 0x20_1000,
            hwcap: 0x178b_fbff,
            random: *b"0123456789abcdef",
            sysinfo: 0,
        }
    }

    /// The auxv of a built stack, checking its shape on the way.
    fn auxv(s: &InitialStack) -> std::collections::BTreeMap<u64, u64> {
        let argc = word(s, s.rsp);
        let mut p = s.rsp + 8 * (argc + 2);
        while word(s, p) != 0 {
            p += 8;
        }
        p += 8;
        let mut aux = std::collections::BTreeMap::new();
        loop {
            let (k, v) = (word(s, p), word(s, p + 8));
            p += 16;
            if k == at::NULL {
                break;
            }
            assert!(aux.insert(k, v).is_none(), "duplicate AT {k}");
        }
        aux
    }

    /// Reads the u64 at virtual address `va` of the built stack.
    fn word(s: &InitialStack, va: u64) -> u64 {
        let o = (va - s.rsp) as usize;
        u64::from_le_bytes(s.bytes[o..o + 8].try_into().unwrap())
    }
    fn cstr(s: &InitialStack, va: u64) -> String {
        let o = (va - s.rsp) as usize;
        let end = s.bytes[o..].iter().position(|&b| b == 0).unwrap();
        String::from_utf8(s.bytes[o..o + end].to_vec()).unwrap()
    }

    #[test]
    fn layout_matches_linux() {
        let s = build(TOP, &input());
        assert_eq!(s.rsp % 16, 0);
        assert_eq!(s.rsp + s.bytes.len() as u64, TOP);
        assert_eq!(word(&s, TOP - 8), 0, "end marker");
        assert_eq!(word(&s, s.rsp), 3, "argc");
        let argv: Vec<String> = (0..3)
            .map(|i| cstr(&s, word(&s, s.rsp + 8 + 8 * i)))
            .collect();
        assert_eq!(argv, ["/hello", "a", "bc"]);
        assert_eq!(word(&s, s.rsp + 32), 0, "argv NULL");
        assert_eq!(cstr(&s, word(&s, s.rsp + 40)), "K=V");
        assert_eq!(cstr(&s, word(&s, s.rsp + 48)), "HOME=/");
        assert_eq!(word(&s, s.rsp + 56), 0, "envp NULL");

        let mut aux = std::collections::BTreeMap::new();
        let mut p = s.rsp + 64;
        loop {
            let (k, v) = (word(&s, p), word(&s, p + 8));
            p += 16;
            if k == at::NULL {
                break;
            }
            assert!(aux.insert(k, v).is_none(), "duplicate AT {k}");
        }
        assert!(p <= TOP);
        assert_eq!(aux[&at::PHDR], 0x20_0040);
        assert_eq!(aux[&at::PHENT], 56);
        assert_eq!(aux[&at::PHNUM], 7);
        assert_eq!(aux[&at::PAGESZ], 4096);
        assert_eq!(aux[&at::ENTRY], 0x20_1000);
        assert_eq!(aux[&at::HWCAP], 0x178b_fbff);
        assert_eq!(aux[&at::CLKTCK], 100);
        assert_eq!(cstr(&s, aux[&at::PLATFORM]), "x86_64");
        assert_eq!(
            aux[&at::EXECFN],
            word(&s, s.rsp + 8),
            "AT_EXECFN is argv[0]"
        );
        let r = (aux[&at::RANDOM] - s.rsp) as usize;
        assert_eq!(&s.bytes[r..r + 16], b"0123456789abcdef");
        // The auxv ends below the strings.
        assert!(p <= aux[&at::RANDOM]);
        assert!(!aux.contains_key(&at::SYSINFO), "no gateway, no entry");
    }

    #[test]
    fn the_gateway_is_named_when_there_is_one() {
        let mut i = input();
        i.sysinfo = 0x10_2340;
        let s = build(TOP, &i);
        let aux = auxv(&s);
        assert_eq!(aux[&at::SYSINFO], 0x10_2340);
        assert_eq!(aux[&at::ENTRY], 0x20_1000);
        assert_eq!(auxv(&build(TOP, &input())).get(&at::SYSINFO), None);
    }

    #[test]
    fn rsp_is_aligned_for_any_argument_count() {
        for n in 0..6 {
            let mut i = input();
            i.argv = (0..n).map(|k| "x".repeat(k * 3 + 1)).collect();
            let s = build(TOP, &i);
            assert_eq!(s.rsp % 16, 0, "argc {n}");
            assert_eq!(word(&s, s.rsp), n as u64);
        }
    }

    #[test]
    fn a_backtrace_asked_for_is_the_full_one() {
        assert_eq!(app_env("RUST_BACKTRACE=1"), "RUST_BACKTRACE=full");
        assert_eq!(app_env("RUST_BACKTRACE=short"), "RUST_BACKTRACE=full");
        assert_eq!(app_env("RUST_BACKTRACE=full"), "RUST_BACKTRACE=full");
        assert_eq!(app_env("RUST_BACKTRACE=0"), "RUST_BACKTRACE=0");
        assert_eq!(app_env("RUST_BACKTRACE_X=1"), "RUST_BACKTRACE_X=1");
        assert_eq!(app_env("HOME=/"), "HOME=/");
        let mut i = input();
        i.envp.push("RUST_BACKTRACE=1".into());
        let s = build(TOP, &i);
        assert_eq!(cstr(&s, word(&s, s.rsp + 56)), "RUST_BACKTRACE=full");
    }
}
