//! The app-side system-call shim (`builder/app-shim/syscall.rs`): an object
//! linked into every app, with `--wrap` for the libc functions it replaces,
//! so that the app's hot system calls enter the runtime with a plain jump
//! where the platform allows it (`AT_SYSINFO`; docs/syscalls.md).
//!
//! The object is compiled once per toolchain into
//! `<target dir>/unikernel/app-shim/` with the same `rustc` that builds the
//! app (from the app's directory, so its `rust-toolchain.toml` applies).
use std::path::{Path, PathBuf};
use std::process::Command;

/// The shim's source.
pub const SOURCE: &str = include_str!("../app-shim/syscall.rs");

/// The libc functions the shim replaces: each has a `__wrap_NAME` in
/// [`SOURCE`] (checked by a test).
pub const WRAPPED: &[&str] = &[
    "read",
    "write",
    "readv",
    "writev",
    "recvfrom",
    "recv",
    "sendto",
    "send",
    "epoll_ctl",
    "epoll_pwait",
    "epoll_wait",
    "pread",
    "pread64",
    "pwrite",
    "pwrite64",
    "lseek",
    "lseek64",
    "fsync",
    "fdatasync",
    "poll",
    "accept4",
    "shutdown",
    "close",
    "sched_yield",
    "mmap",
    "__mmap",
    "munmap",
    "__munmap",
    "syscall",
];

/// The linker flags that link `object` into the app in place of musl's
/// wrappers.
pub fn link_flags(object: &Path) -> Vec<String> {
    let wraps: Vec<String> = WRAPPED.iter().map(|n| format!("--wrap={n}")).collect();
    vec![
        format!("-Clink-arg={}", object.display()),
        format!("-Clink-arg=-Wl,{}", wraps.join(",")),
    ]
}

/// Compile the shim for `target` into `dir` unless an object built from
/// the same source by the same compiler is there; returns its path.
pub fn ensure_object(dir: &Path, crate_dir: &Path, target: &str) -> Result<PathBuf, String> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let version = Command::new(&rustc)
        .arg("-vV")
        .current_dir(crate_dir)
        .output()
        .map_err(|e| format!("cannot run rustc for the system-call shim: {e}"))?;
    if !version.status.success() {
        return Err(format!(
            "rustc -vV failed for the system-call shim: {}",
            String::from_utf8_lossy(&version.stderr).trim()
        ));
    }
    let key = fnv1a(&[SOURCE.as_bytes(), &version.stdout, target.as_bytes()]);
    let object = dir.join(format!("syscall-{key:016x}.o"));
    if object.is_file() {
        return Ok(object);
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let source = dir.join("syscall.rs");
    std::fs::write(&source, SOURCE)
        .map_err(|e| format!("cannot write {}: {e}", source.display()))?;
    // Written beside and renamed, so a concurrent build never links half an object.
    let partial = dir.join(format!("syscall-{key:016x}.o.{}", std::process::id()));
    let out = Command::new(&rustc)
        .args(["--target", target, "--crate-type", "lib", "--emit", "obj"])
        .args([
            "-C",
            "panic=abort",
            "-C",
            "opt-level=2",
            "--crate-name",
            "uk_syscall_shim",
        ])
        .arg("-o")
        .arg(&partial)
        .arg(&source)
        .current_dir(crate_dir)
        .output()
        .map_err(|e| format!("cannot run rustc for the system-call shim: {e}"))?;
    if !out.status.success() {
        let _ = std::fs::remove_file(&partial);
        return Err(format!(
            "rustc could not compile the system-call shim {}: {}",
            source.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    std::fs::rename(&partial, &object)
        .map_err(|e| format!("cannot move the shim object to {}: {e}", object.display()))?;
    Ok(object)
}

/// 64-bit FNV-1a over the parts (a cache key, not a digest).
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.iter().chain(&[0xff]) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every wrapped name has its wrapper in the source, and no wrapper is
    /// left out of the list (it would never be called).
    #[test]
    fn the_list_matches_the_source() {
        let defined: Vec<&str> = SOURCE
            .lines()
            .filter_map(|l| l.trim().strip_prefix("uk_wrap "))
            .map(str::trim)
            .collect();
        let mut listed: Vec<&str> = WRAPPED.to_vec();
        let mut found = defined.clone();
        listed.sort_unstable();
        found.sort_unstable();
        assert_eq!(listed, found);
        assert_eq!(defined.len(), WRAPPED.len(), "a wrapper is defined twice");
    }

    #[test]
    fn flags_name_the_object_and_every_wrap() {
        let f = link_flags(Path::new("/t/shim.o"));
        assert_eq!(f[0], "-Clink-arg=/t/shim.o");
        assert!(f[1].starts_with("-Clink-arg=-Wl,--wrap=read,--wrap=write,"));
        assert_eq!(f[1].matches("--wrap=").count(), WRAPPED.len());
    }

    #[test]
    fn the_key_depends_on_every_part() {
        assert_ne!(fnv1a(&[b"a", b"b"]), fnv1a(&[b"ab"]));
        assert_ne!(fnv1a(&[b"a"]), fnv1a(&[b"b"]));
        assert_eq!(fnv1a(&[b"x"]), fnv1a(&[b"x"]));
    }
}
