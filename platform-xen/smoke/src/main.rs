//! The Xen smoke kernel: boots on platform-xen alone (no runtime) and
//! checks, on real Xen, each service the platform offers. Every line it
//! prints starts with `smoke:` and is asserted on by tests/xen/smoke.sh.
//!
//! Command line: `CODE [WORD...]`. CODE (default 0) is the shutdown
//! reason at the end. Words that change what it does:
//! - `xen.smoke=user`: finish in guest user mode: a `write` and an `exit`
//!   system call reach the syscall callback; the exit code is read by the
//!   user code through the FS base (set with `set_segment_base`);
//! - `xen.smoke=fault`: read an unmapped address: the trap table reports
//!   the page fault and the domain stops with 253;
//! - `xen.test=bad-magic`: (platform test hook) boot as if start_info had
//!   a 32-bit loader's magic.
#![no_std]
#![no_main]

use core::fmt::Write;
use platform_xen::fmtbuf::utc;
use platform_xen::traps::{self, XenFrame};
use platform_xen::xenstore::{directory_entries, watch_event};
use platform_xen::{events, hypercall, shutdown, Console, Xen};

macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(Console, $($arg)*);
    }};
}

/// Code for "the smoke kernel found a platform bug" (a check failed).
const EXIT_CHECK_FAILED: u32 = 252;

fn check(ok: bool, what: &str) {
    if !ok {
        say!("smoke: CHECK FAILED: {what}");
        shutdown(EXIT_CHECK_FAILED);
    }
}

fn rdtsc() -> u64 {
    // SAFETY: rdtsc is allowed in PV guest kernel mode.
    unsafe { core::arch::x86_64::_rdtsc() }
}

#[no_mangle]
fn xen_main(xen: &'static Xen) -> ! {
    let at_main = rdtsc();
    let cmdline = xen.cmdline();
    let mut words = cmdline.split_ascii_whitespace();
    let code: u32 = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
    let mode = cmdline
        .split_ascii_whitespace()
        .find_map(|w| w.strip_prefix("xen.smoke="))
        .unwrap_or("");

    let si = xen.start_info;
    say!(
        "smoke: start_info ok: nr_pages={} ({} MiB), cmdline=\"{}\"",
        si.nr_pages,
        (si.nr_pages * 4096) >> 20,
        cmdline
    );
    let m = &xen.memory;
    say!(
        "smoke: memory: builder mapped pfns 0..{:#x}, platform mapped {} more pages; new page tables in pfns {:#x}..{:#x}; free RAM from pfn {:#x}",
        m.bootstrap_end_pfn,
        m.mapped,
        m.tables_start,
        m.tables_end,
        m.tables_end
    );
    // The last page of RAM is mapped and writable now.
    let last = (si.nr_pages - 1) * 4096;
    // SAFETY: identity-mapped RAM above every boot element; unused.
    unsafe {
        (last as *mut u64).write_volatile(0x5eed);
        check(
            (last as *const u64).read_volatile() == 0x5eed,
            "last page of RAM writable",
        );
    }

    let t = xen.time_info();
    let khz = platform_xen::time::tsc_khz(&t);
    say!(
        "smoke: boot: entry -> first console line {} us, entry -> xen_main {} us (TSC {} kHz)",
        xen.tsc_delta_ns(xen.first_print_tsc - xen.entry_tsc) / 1000,
        xen.tsc_delta_ns(at_main - xen.entry_tsc) / 1000,
        khz
    );
    if let Ok(r) = hypercall::runstate_info() {
        let age: u64 =
            r.time.iter().sum::<u64>() + xen.system_time_ns().saturating_sub(r.state_entry_time);
        say!(
            "smoke: vcpu0 age {} ms (running {} ms, offline {} ms: mostly the domain build)",
            age / 1_000_000,
            r.time[0] / 1_000_000,
            r.time[3] / 1_000_000
        );
    }
    let now = xen.system_time_ns();
    let wall = xen.wall_clock_ns();
    say!(
        "smoke: pvclock: system time {}.{:09} s (version {}, mul {:#x}, shift {}); wall clock {} UTC",
        now / 1_000_000_000,
        now % 1_000_000_000,
        t.version,
        t.tsc_to_system_mul,
        t.tsc_shift,
        core::str::from_utf8(utc(wall / 1_000_000_000).as_bytes()).unwrap_or("?")
    );
    check(
        wall / 1_000_000_000 > 1_600_000_000,
        "wall clock after 2020",
    );

    // Xenstore.
    let mut xs = xen.xenstore();
    let tr = xen.store_transport();
    let mut buf = [0u8; 512];
    let domid = match xs.read("domid", &mut buf, &tr) {
        Ok(v) => core::str::from_utf8(v)
            .unwrap_or("?")
            .parse::<u32>()
            .unwrap_or(0),
        Err(e) => {
            say!("smoke: xenstore read domid: {e}");
            shutdown(EXIT_CHECK_FAILED)
        }
    };
    let mut nbuf = [0u8; 128];
    let name = match xs.read("name", &mut nbuf, &tr) {
        Ok(v) => core::str::from_utf8(v).unwrap_or("?"),
        Err(e) => {
            say!("smoke: xenstore read name: {e}");
            shutdown(EXIT_CHECK_FAILED)
        }
    };
    say!("smoke: xenstore: domid={domid} name={name}");
    match xs.read("no/such/key", &mut buf, &tr) {
        Err(e) => say!("smoke: xenstore: missing key -> {e}"),
        Ok(_) => check(false, "missing key reported"),
    }
    let wrote = xs.write("data/smoke", b"hello from the smoke kernel", &tr);
    check(wrote.is_ok(), "xenstore write data/smoke");
    check(
        xs.watch("data/smoke", "smoketoken", &tr).is_ok(),
        "xenstore watch",
    );
    let mut ev = [0u8; 256];
    match xs.next_watch_event(&mut ev, &tr) {
        Ok(e) => {
            let (p, tok) = watch_event(e).unwrap_or((b"?", b"?"));
            say!(
                "smoke: xenstore: watch event path={} token={}",
                core::str::from_utf8(p).unwrap_or("?"),
                core::str::from_utf8(tok).unwrap_or("?")
            );
        }
        Err(e) => say!("smoke: xenstore watch event: {e}"),
    }
    let back = xs
        .read("data/smoke", &mut buf, &tr)
        .map(|v| v == b"hello from the smoke kernel");
    check(back == Ok(true), "xenstore read back data/smoke");
    let mut dir = [0u8; 1024];
    let mut path = platform_xen::fmtbuf::FmtBuf::<64>::new();
    let _ = write!(path, "/local/domain/{domid}");
    let path = core::str::from_utf8(path.as_bytes()).unwrap_or("");
    match xs.directory(path, &mut dir, &tr) {
        Err(e) => say!("smoke: xenstore directory {path}: {e}"),
        Ok(d) => {
            let mut line = platform_xen::fmtbuf::FmtBuf::<256>::new();
            for (i, n) in directory_entries(d).enumerate() {
                let _ = write!(
                    line,
                    "{}{}",
                    if i > 0 { "," } else { "" },
                    core::str::from_utf8(n).unwrap_or("?")
                );
            }
            say!(
                "smoke: xenstore: directory of {path}: {}",
                core::str::from_utf8(line.as_bytes()).unwrap_or("?")
            );
        }
    }

    // Grant tables.
    match xen.grant_table() {
        Ok(mut gt) => {
            static PAGE: [u8; 4096] = [0; 4096];
            let mfn = xen.mfn_of(PAGE.as_ptr() as u64 & !4095);
            match gt.grant_access(0, mfn as u32, true) {
                Ok(r) => {
                    let e = gt.entry(r).unwrap_or_default();
                    say!(
                        "smoke: grant table: {} entries; ref {} grants mfn {:#x} to dom{} (flags {:#x})",
                        gt.capacity(),
                        r,
                        e.frame,
                        e.domid,
                        e.flags
                    );
                    check(gt.end_access(r).is_ok(), "grant end_access");
                    check(
                        gt.entry(r).map(|e| e.flags) == Some(0),
                        "grant entry cleared",
                    );
                    say!("smoke: grant table: ref {r} ended");
                }
                Err(e) => say!("smoke: grant_access failed: {e:?}"),
            }
        }
        Err(e) => say!("smoke: grant table setup failed: {e}"),
    }

    // Sleep 50 ms: single-shot timer + SCHEDOP_block.
    let before_upcalls = events::UPCALLS.load(core::sync::atomic::Ordering::Relaxed);
    let t0 = xen.system_time_ns();
    xen.block_until(t0 + 50_000_000, false);
    let t1 = xen.system_time_ns();
    let upcalls = events::UPCALLS.load(core::sync::atomic::Ordering::Relaxed) - before_upcalls;
    say!(
        "smoke: slept {} us for a 50000 us timer ({} upcalls)",
        (t1 - t0) / 1000,
        upcalls
    );
    check(t1 - t0 >= 50_000_000, "time advanced by at least 50 ms");
    check(upcalls >= 1, "the timer event came through the upcall");

    match mode {
        "fault" => {
            say!("smoke: reading unmapped address 0x700000000000");
            // SAFETY: deliberately faulting to test the trap table.
            let v = unsafe { (0x7000_0000_0000 as *const u64).read_volatile() };
            say!("smoke: read {v} (should not get here)");
            shutdown(EXIT_CHECK_FAILED)
        }
        "user" => enter_user(xen, code),
        _ => {}
    }
    say!("smoke: done, shutting down with code {code}");
    shutdown(code)
}

// ---------------------------------------------------------------- user mode

#[repr(C, align(16))]
struct UserStack([u8; 16384]);
static mut USER_STACK: UserStack = UserStack([0; 16384]);
/// The user code's TLS block: word 0 holds the exit code it passes to `exit`.
static mut USER_TLS: [u64; 2] = [0; 2];

extern "C" {
    fn smoke_user_code();
}

fn enter_user(xen: &Xen, code: u32) -> ! {
    traps::set_syscall_handler(user_syscall);
    // SAFETY: one vCPU; written before user mode reads it.
    let tls = unsafe {
        let p = core::ptr::addr_of_mut!(USER_TLS);
        (*p)[0] = code as u64;
        p as u64
    };
    // The stack reserved for the user code.
    let top = core::ptr::addr_of!(USER_STACK) as u64 + 16384;
    say!("smoke: entering guest user mode");
    // SAFETY: smoke_user_code and USER_STACK are code and stack for it.
    match unsafe { xen.enter_user_mode(smoke_user_code as *const () as u64, top, tls) } {
        Err(e) => {
            say!("smoke: cannot enter user mode: {e}");
            shutdown(EXIT_CHECK_FAILED)
        }
    }
}

fn user_syscall(f: &mut XenFrame) {
    match f.rax {
        1 => {
            say!(
                "smoke: syscall write from guest {} mode (cs={:#x}, rip={:#x})",
                if f.from_user() { "user" } else { "kernel" },
                f.cs,
                f.rip
            );
            // SAFETY: user and kernel share the address space; the user
            // passed a buffer in the image (smoke test only: not validated).
            let s = unsafe { core::slice::from_raw_parts(f.rsi as *const u8, f.rdx as usize) };
            Console::write_bytes(s);
            f.rax = f.rdx;
        }
        60 => {
            say!("smoke: syscall exit({}) from guest user mode", f.rdi);
            shutdown(f.rdi as u32)
        }
        n => {
            say!("smoke: unknown syscall {n}");
            f.rax = (-38i64) as u64;
        }
    }
}

core::arch::global_asm!(
    r#"
    .section .text.smoke_user, "ax"
    .global smoke_user_code
smoke_user_code:
    movl $1, %eax
    movl $1, %edi
    leaq smoke_user_msg(%rip), %rsi
    movl $smoke_user_msg_len, %edx
    syscall
    movl %fs:0, %edi
    movl $60, %eax
    syscall
    ud2

    .section .rodata.smoke_user, "a"
smoke_user_msg:
    .ascii "smoke: hello from guest user mode via syscall\n"
    .set smoke_user_msg_len, . - smoke_user_msg
"#,
    options(att_syntax)
);

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    say!("smoke: kernel panic: {info}");
    shutdown(platform_xen::EXIT_KERNEL_FAULT)
}
