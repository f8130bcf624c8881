//! The hvt ABI: everything the guest and the `unikernel-hvt` monitor agree on.
//!
//! One crate, shared by both sides, in the spirit of Solo5's `hvt_abi.h`:
//!
//! * [`layout`]: where things live in guest-physical and guest-virtual memory
//!   (the platform-neutral part comes from `unikernel_image::layout`);
//! * [`KernelHeader`]: the small header at the start of every kernel, telling
//!   the monitor where the entry points are;
//! * [`BootInfo`]: what the monitor hands the guest at entry (pointer in `%rdi`);
//! * [`hypercall`]: call numbers, their MMIO addresses and argument structs;
//! * [`net`]: the network device and its rings;
//! * [`block`]: the block device (disks) and its request rings.
//!
//! The image's manifest (what the builder wrote: platform, defaults,
//! components, where the app is) is not hvt's: it is in the `unikernel-image`
//! crate, the contract between the builder and every kernel.
//!
//! All structs are `#[repr(C)]` with explicit padding so both sides see the
//! same bytes; all fields are little-endian `u64`/`u32`.
#![cfg_attr(not(feature = "std"), no_std)]

pub mod block;
pub mod hypercall;
pub mod net;

/// Version of this ABI. The monitor refuses a kernel whose header carries another one.
/// 3: `BootInfo` gained the runtime options string, the timer call became a
/// one-shot deadline (shared timer block), the network device calls came.
/// 4: the block device calls; `BootInfo` gained the declared disks and the
/// embedded-files archive.
/// 5: `Halt` may carry a crash record (the stack of a fault or panic).
/// 6: the debugger: `BOOT_FLAG_DEBUGGER`, `BootInfo::debug_interrupt`, the
/// debug-stop call.
pub const ABI_VERSION: u32 = 6;

/// Guest memory layout. The monitor builds page tables that follow it; the
/// runtime relies on it. Every address named here is in one place: the
/// platform-neutral constants (page size, kernel base, memory limits, the
/// app's stack and `mmap` areas) are `unikernel_image::layout`'s, re-exported.
pub mod layout {
    pub use unikernel_image::layout::*;

    /// The low 64 KiB are never mapped (null-pointer guard, like Linux's
    /// `vm.mmap_min_addr`). The monitor's boot structures live in
    /// `[BOOT_AREA_START, KERNEL_BASE)`.
    pub const BOOT_AREA_START: u64 = 0x1_0000;

    // All guest RAM `[0, mem_size)` is identity-mapped (virtual == physical),
    // so the runtime reaches every frame and hands physical addresses to the
    // monitor without translation. The kernel's first bytes at `KERNEL_BASE`
    // are the [`crate::KernelHeader`]; RAM stays below `MAX_MEMORY`, under
    // the hypercall window.

    /// Guest-physical base of the hypercall MMIO window: one 8-byte slot per
    /// call (see [`crate::hypercall::mmio_address`]). Identity-mapped,
    /// user-accessible, so calls work from ring 3.
    pub const HYPERCALL_MMIO_BASE: u64 = 0xFFFF_0000;
    /// Size of the window (one page).
    pub const HYPERCALL_MMIO_SIZE: u64 = 0x1000;

    /// GDT selectors, in the Linux layout (user CS/DS must be 0x33/0x2b).
    pub const KERNEL_CS: u16 = 0x10;
    pub const KERNEL_DS: u16 = 0x18;
    pub const USER_CS32: u16 = 0x23;
    pub const USER_DS: u16 = 0x2b;
    pub const USER_CS: u16 = 0x33;
    pub const TSS_SELECTOR: u16 = 0x40;

    /// SFMASK for `syscall`: TF | DF | AC | NT... but never IF (see KVM-PVM.md).
    pub const SYSCALL_SFMASK: u64 = 0x47500;
}

/// Magic of [`KernelHeader::magic`]: "UKHVTKRN" little-endian.
pub const KERNEL_HEADER_MAGIC: u64 = u64::from_le_bytes(*b"UKHVTKRN");

/// Placed by the kernel's linker script at [`layout::KERNEL_BASE`]. The monitor
/// reads it after loading the image to find the entry points.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelHeader {
    pub magic: u64,
    pub abi_version: u32,
    /// Size in bytes of one trap stub; stub for vector `n` is at `trap_stubs + n * trap_stub_size`.
    pub trap_stub_size: u32,
    /// 64-bit entry point, entered at CPL 3 with `%rdi` = guest-physical address of [`BootInfo`].
    pub entry: u64,
    /// Target of `syscall` (MSR LSTAR).
    pub syscall_entry: u64,
    /// First of 256 trap stubs (IDT gate targets, entered at CPL 0).
    pub trap_stubs: u64,
}

/// Magic of [`BootInfo::magic`]: "UKBOOT01".
pub const BOOT_INFO_MAGIC: u64 = u64::from_le_bytes(*b"UKBOOT01");

/// A range of guest-physical memory `[start, end)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemRange {
    pub start: u64,
    pub end: u64,
}

/// Maximum number of free ranges in [`BootInfo::free`].
pub const MAX_FREE_RANGES: usize = 4;

/// `BootInfo::flags`: print every system call (strace style) on stderr.
pub const BOOT_FLAG_TRACE_SYSCALLS: u64 = 1 << 0;
/// A debugger is attached (`unikernel-hvt --gdb`): breakpoints, single
/// steps, faults and `BootInfo::debug_interrupt` become debug-stop calls.
pub const BOOT_FLAG_DEBUGGER: u64 = 1 << 1;

/// What the monitor tells the guest at entry. Written by the monitor into
/// guest memory (inside the boot area); `%rdi` holds its address.
///
/// The monitor has already: loaded the image, built page tables (identity map
/// of RAM with each image segment's ELF permissions, the MMIO window, the
/// mapped top of the app stack), loaded GDT/IDT/TSS, set EFER/CR0/CR4 and the
/// syscall MSRs, written the app's initial stack (argc/argv/envp/auxv).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BootInfo {
    pub magic: u64,
    pub abi_version: u32,
    pub _pad0: u32,
    /// Size of guest RAM in bytes; `[0, mem_size)` is identity-mapped.
    pub mem_size: u64,
    /// TSC frequency in kHz.
    pub tsc_khz: u64,
    /// Wall clock (ns since the Unix epoch) taken by the monitor just before entry...
    pub wall_clock_ns: u64,
    /// ...and the guest TSC value at that moment (as the guest reads it).
    pub wall_clock_tsc: u64,
    /// `BOOT_FLAG_*`.
    pub flags: u64,
    /// Guest-physical address of the PML4 (what CR3 holds).
    pub page_table_root: u64,
    /// Physical frames the guest may use freely (not holding the image, page
    /// tables, boot structures or the initial stack). Page-aligned.
    pub free: [MemRange; MAX_FREE_RANGES],
    pub free_count: u64,
    /// Top of the stack the kernel is entered on (also used for system calls).
    pub kernel_stack_top: u64,
    /// Bottom of that stack (for overflow checks).
    pub kernel_stack_bottom: u64,
    /// Top of the stack the ring-0 trap stubs redirect fault handling to (CPL 3).
    pub fault_stack_top: u64,
    /// App: entry point (after relocation by base), initial `%rsp`
    /// (pointing at argc), load base, end of its highest segment.
    pub app_entry: u64,
    pub app_stack_pointer: u64,
    pub app_base: u64,
    pub app_end: u64,
    /// App program headers as placed in memory (AT_PHDR/AT_PHENT/AT_PHNUM).
    pub app_phdr: u64,
    pub app_phent: u64,
    pub app_phnum: u64,
    /// Lowest address of the app stack that has frames mapped; below it down to
    /// `USER_STACK_TOP - USER_STACK_RESERVE` is reserved and grows on demand.
    pub app_stack_mapped_bottom: u64,
    /// The app's name (argv[0] and `/proc/self/exe` target): guest-physical
    /// address and length of a UTF-8 string inside the boot area.
    pub app_name: u64,
    pub app_name_len: u64,
    /// Runtime options (`unikernel_image::options`): guest-physical address
    /// and length of a UTF-8 string inside the boot area, `KEY=VALUE`
    /// tokens separated by single spaces (no token contains a space); the
    /// manifest's defaults with the monitor's overrides. Length 0: none.
    pub options: u64,
    pub options_len: u64,
    /// The image's declared disks (manifest `disks`): guest-physical
    /// address and length of `NAME=MOUNT` entries separated by NUL bytes
    /// (no entry contains one), inside the boot area. Length 0: none.
    pub disks: u64,
    pub disks_len: u64,
    /// The embedded-files archive (manifest `files_addr`, `files_len`),
    /// loaded with the image; both 0 when the image embeds no files.
    pub files_addr: u64,
    pub files_len: u64,
    /// Non-zero: the debugger asks the app to stop (gdb's Ctrl-C). The
    /// monitor sets it at any time; the guest reads it at each timer tick
    /// while `BOOT_FLAG_DEBUGGER` is set and clears it when it stops.
    pub debug_interrupt: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_info_layout_is_the_documented_one() {
        assert_eq!(core::mem::offset_of!(BootInfo, flags), 48);
        assert_eq!(core::mem::offset_of!(BootInfo, files_len), 280);
        assert_eq!(core::mem::offset_of!(BootInfo, debug_interrupt), 288);
        assert_eq!(core::mem::size_of::<BootInfo>(), 296);
    }
}
