//! Single instructions, wrapped in small safe functions. All of them work at
//! ring 3 on the CPUs we target, except those routed through [`privileged`].

/// Current privilege level (0 or 3), read from `%cs`.
#[inline]
pub fn cpl() -> u16 {
    let cs: u16;
    // SAFETY: reading %cs has no side effects.
    unsafe {
        core::arch::asm!("mov {0:x}, cs", out(reg) cs, options(nomem, nostack, preserves_flags))
    };
    cs & 3
}

/// Time-stamp counter.
#[inline]
pub fn rdtsc() -> u64 {
    // SAFETY: rdtsc is allowed at ring 3 (CR4.TSD clear) and has no side effects.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// A hardware random 64-bit value (RDSEED, then RDRAND), or None if the CPU
/// has neither or keeps failing.
pub fn hardware_random() -> Option<u64> {
    #[cfg(target_arch = "x86_64")]
    {
        // CPUID.7.0:EBX[18] = RDSEED, CPUID.1:ECX[30] = RDRAND.
        let leaf7 = core::arch::x86_64::__cpuid_count(7, 0);
        let leaf1 = core::arch::x86_64::__cpuid(1);
        for _ in 0..64 {
            let mut v: u64;
            let mut ok: u8;
            if leaf7.ebx & (1 << 18) != 0 {
                // SAFETY: RDSEED is present (checked above); it only writes its operands.
                unsafe {
                    core::arch::asm!("rdseed {v}", "setc {ok}", v = out(reg) v, ok = out(reg_byte) ok, options(nomem, nostack))
                };
                if ok == 1 {
                    return Some(v);
                }
            }
            if leaf1.ecx & (1 << 30) != 0 {
                // SAFETY: RDRAND is present (checked above); it only writes its operands.
                unsafe {
                    core::arch::asm!("rdrand {v}", "setc {ok}", v = out(reg) v, ok = out(reg_byte) ok, options(nomem, nostack))
                };
                if ok == 1 {
                    return Some(v);
                }
            }
        }
    }
    None
}

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};

/// 0 = not checked yet, 1 = `wrfsbase` & co. usable, 2 = use the MSRs.
static FSGSBASE: AtomicU8 = AtomicU8::new(0);
/// The FS base last set (read back when `rdfsbase` is not usable).
static FS_SHADOW: AtomicU64 = AtomicU64::new(0);

/// CPUID.7.0:EBX[0]: the FSGSBASE instructions (the platform enables
/// CR4.FSGSBASE when the CPU has them).
fn have_fsgsbase() -> bool {
    match FSGSBASE.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            let yes = core::arch::x86_64::__cpuid_count(7, 0).ebx & 1 != 0;
            FSGSBASE.store(if yes { 1 } else { 2 }, Ordering::Relaxed);
            yes
        }
    }
}

/// Set when the platform sets the segment bases itself (Xen PV): the FS
/// base is then read back from [`FS_SHADOW`].
static PLATFORM_BASES: AtomicBool = AtomicBool::new(false);

/// Let the platform set `which` if it does that itself.
fn platform_sets(which: crate::SegmentBase, v: u64) -> bool {
    let done = crate::PLATFORM
        .get()
        .is_some_and(|p| p.set_segment_base(which, v));
    if done {
        PLATFORM_BASES.store(true, Ordering::Relaxed);
    }
    done
}

/// Set the FS base (the app's TLS pointer): through the platform if it does
/// that (Xen PV), else `wrfsbase`, or the FS_BASE MSR through the
/// privileged gate on CPUs without FSGSBASE.
pub fn set_fs_base(v: u64) {
    FS_SHADOW.store(v, Ordering::Relaxed);
    if platform_sets(crate::SegmentBase::Fs, v) {
        return;
    }
    if have_fsgsbase() {
        // SAFETY: changes only the FS base; the runtime itself never uses FS.
        unsafe { core::arch::asm!("wrfsbase {0}", in(reg) v, options(nostack, preserves_flags)) };
    } else {
        privileged::set_base(privileged::OP_SET_FS, v);
    }
}

pub fn fs_base() -> u64 {
    if !have_fsgsbase() || PLATFORM_BASES.load(Ordering::Relaxed) {
        return FS_SHADOW.load(Ordering::Relaxed);
    }
    let v: u64;
    // SAFETY: reads the FS base.
    unsafe {
        core::arch::asm!("rdfsbase {0}", out(reg) v, options(nomem, nostack, preserves_flags))
    };
    v
}

/// Set the GS base: the runtime's per-CPU block, used by the stubs.
pub fn set_gs_base(v: u64) {
    if platform_sets(crate::SegmentBase::Gs, v) {
        return;
    }
    if have_fsgsbase() {
        // SAFETY: the app never uses GS on x86_64 Linux; only the stubs read it.
        unsafe { core::arch::asm!("wrgsbase {0}", in(reg) v, options(nostack, preserves_flags)) };
    } else {
        privileged::set_base(privileged::OP_SET_GS, v);
    }
}

/// Privileged operations, done directly at ring 0 or through the ring-0 gate
/// (a `ud2` at a known address that the #UD stub recognises) at ring 3.
pub mod privileged {
    pub const OP_INVLPG: u64 = 1;
    pub const OP_FLUSH_ALL: u64 = 2;
    pub const OP_RESUME: u64 = 3;
    pub const OP_SET_FS: u64 = 4;
    pub const OP_SET_GS: u64 = 5;
    pub const OP_SERIAL_OUT: u64 = 6;
    pub const OP_OUTB: u64 = 7;
    pub const OP_HALT: u64 = 8;
    pub const OP_TSC_DEADLINE: u64 = 9;
    pub const OP_ACPI_SLEEP: u64 = 10;

    extern "C" {
        fn unikernel_priv_op(op: u64, arg: u64);
    }

    pub fn invlpg(va: u64) {
        // SAFETY: the gate performs only the named operation.
        unsafe { unikernel_priv_op(OP_INVLPG, va) }
    }

    /// Write the FS_BASE (`OP_SET_FS`) or GS_BASE (`OP_SET_GS`) MSR.
    pub fn set_base(op: u64, v: u64) {
        // SAFETY: the gate writes only the named MSR.
        unsafe { unikernel_priv_op(op, v) }
    }

    /// Send `byte` to the 8250 UART at `port` once it can take it.
    pub fn serial_out(port: u16, byte: u8) {
        // SAFETY: port I/O to the UART only.
        unsafe { unikernel_priv_op(OP_SERIAL_OUT, ((port as u64) << 8) | byte as u64) }
    }

    /// `outb`.
    pub fn outb(port: u16, byte: u8) {
        // SAFETY: the callers name device ports they own.
        unsafe { unikernel_priv_op(OP_OUTB, ((port as u64) << 8) | byte as u64) }
    }

    /// Halt until the next interrupt (returns at once if one is already
    /// waiting for the runtime).
    pub fn halt() {
        // SAFETY: `sti; hlt; cli` at ring 0; the interrupt is recorded as pending.
        unsafe { unikernel_priv_op(OP_HALT, 0) }
    }

    /// Write IA32_TSC_DEADLINE (the LAPIC timer in TSC-deadline mode fires
    /// when the TSC reaches `tsc`; 0 disarms it).
    pub fn set_tsc_deadline(tsc: u64) {
        // SAFETY: the gate writes only that MSR.
        unsafe { unikernel_priv_op(OP_TSC_DEADLINE, tsc) }
    }

    /// ACPI sleep through a PM1 control port: reads the 16-bit register at
    /// `port`, replaces its SLP_TYP and SLP_EN bits (10-13) with those of
    /// `value`, writes it back (S5 powers the machine off).
    pub fn acpi_sleep(port: u16, value: u16) {
        // SAFETY: the callers name the FADT's PM1 control port.
        unsafe { unikernel_priv_op(OP_ACPI_SLEEP, ((port as u64) << 16) | value as u64) }
    }

    pub fn flush_all() {
        // SAFETY: reloading CR3 with its own value only flushes the TLB.
        unsafe { unikernel_priv_op(OP_FLUSH_ALL, 0) }
    }
}
