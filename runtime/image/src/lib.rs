//! The image contract: what `cargo unikernel build` writes and every kernel
//! (hvt, kvm, xen) and the hvt monitor read, whatever the platform.
//!
//! * [`manifest`]: the image's manifest (platform, memory default, args and
//!   env defaults, components and why each was chosen, devices, published
//!   ports, runtime options, where the app is, build id) and its encoding;
//! * [`layout`]: the platform-neutral memory layout (where the kernel is
//!   linked, the app's stack and `mmap` areas, the memory limits);
//! * [`ports`]: the syntax of a published port (`"tcp:8080:80"`);
//! * [`disks`]: declared data volumes (`NAME=MOUNT`) and their syntax;
//! * [`files`]: the embedded-files archive format;
//! * [`options`]: the runtime options (`UNIKERNEL_*=VALUE` tokens) the image
//!   can carry defaults for, and the syntax of their values.
//!
//! The platform ABIs build on this crate: `hvt-abi` adds hvt's hypercalls,
//! kernel header and boot structures; kvm and xen read the manifest the
//! builder placed after their kernel.
#![cfg_attr(not(any(feature = "std", test)), no_std)]

#[cfg(any(feature = "alloc", test))]
extern crate alloc;

pub mod disks;
pub mod files;
pub mod manifest;
pub mod options;
pub mod ports;

/// Guest memory layout shared by every platform. The builder links images
/// to it, the runtime relies on it, and each platform builds page tables
/// that follow it (the hvt-only parts are in `hvt_abi::layout`).
pub mod layout {
    pub const PAGE_SIZE: u64 = 4096;

    /// Link (and load) address of the kernel (hvt and kvm; a Xen PV kernel
    /// starts at 0).
    pub const KERNEL_BASE: u64 = 0x10_0000;

    /// Guest RAM, and with it every image segment, stays below this (on hvt
    /// the hypercall MMIO window sits above it; kvm and xen images use the
    /// same limit so an image's layout does not depend on its platform).
    pub const MAX_MEMORY: u64 = 0xC000_0000;
    /// Smallest memory accepted at all (a real image needs more; the
    /// platform checks that the image and its boot structures fit).
    pub const MIN_MEMORY: u64 = 0x10_0000;

    /// Anonymous `mmap` regions of the app are placed from here upwards
    /// (virtual only; backed by frames from the identity-mapped RAM).
    pub const USER_MMAP_BASE: u64 = 0x0000_1000_0000_0000;
    /// Where the runtime maps the vDSO (two pages: the ELF image, then its
    /// data), named by `AT_SYSINFO_EHDR`: just above the `mmap` region,
    /// far below the main-thread stack.
    pub const VDSO_BASE: u64 = 0x0000_6000_0000_0000;
    /// Top (exclusive) of the app's main-thread stack region.
    pub const USER_STACK_TOP: u64 = 0x0000_7000_0000_0000;
    /// Size of the main-thread stack region reserved below `USER_STACK_TOP`
    /// (like Linux's 8 MiB rlimit; only touched pages get frames).
    pub const USER_STACK_RESERVE: u64 = 8 << 20;
}
