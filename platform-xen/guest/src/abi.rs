//! The Xen public interface this platform uses, as Rust constants and
//! `#[repr(C)]` layouts (x86_64 PV guest view, Xen >= 3.0, checked against
//! Xen 4.17's `xen/include/public`: `xen.h`, `elfnote.h`, `sched.h`,
//! `vcpu.h`, `event_channel.h`, `grant_table.h`, `io/console.h`,
//! `io/xs_wire.h`, `arch-x86/xen-x86_64.h`).
//!
//! Only numbers and layouts live here; the calls themselves are in
//! `hypercall`. Every layout carries compile-time offset checks so a typo
//! cannot silently move a field.

/// Hypercall numbers (`__HYPERVISOR_*`); entry `n` of the hypercall page is at `n * 32`.
pub mod nr {
    pub const SET_TRAP_TABLE: usize = 0;
    pub const MMU_UPDATE: usize = 1;
    pub const STACK_SWITCH: usize = 3;
    pub const SET_CALLBACKS: usize = 4;
    pub const UPDATE_VA_MAPPING: usize = 14;
    pub const XEN_VERSION: usize = 17;
    pub const CONSOLE_IO: usize = 18;
    pub const GRANT_TABLE_OP: usize = 20;
    pub const IRET: usize = 23;
    pub const VCPU_OP: usize = 24;
    pub const SET_SEGMENT_BASE: usize = 25;
    pub const MMUEXT_OP: usize = 26;
    pub const SCHED_OP: usize = 29;
    pub const CALLBACK_OP: usize = 30;
    pub const EVENT_CHANNEL_OP: usize = 32;
}

/// Size of one hypercall-page entry.
pub const HYPERCALL_ENTRY_SIZE: usize = 32;

/// Xen ELF note types (`XEN_ELFNOTE_*`), in notes named "Xen".
pub mod elfnote {
    pub const ENTRY: u32 = 1;
    pub const HYPERCALL_PAGE: u32 = 2;
    pub const VIRT_BASE: u32 = 3;
    pub const PADDR_OFFSET: u32 = 4;
    pub const XEN_VERSION: u32 = 5;
    pub const GUEST_OS: u32 = 6;
    pub const GUEST_VERSION: u32 = 7;
    pub const LOADER: u32 = 8;
    pub const FEATURES: u32 = 10;
    pub const SUSPEND_CANCEL: u32 = 14;
}

/// The magic a 64-bit PV guest finds at the start of `start_info`.
pub const START_INFO_MAGIC: &[u8] = b"xen-3.0-x86_64";

/// `DOMID_SELF`: "the calling domain" in hypercall arguments.
pub const DOMID_SELF: u16 = 0x7ff0;

/// Flat segment selectors Xen gives 64-bit PV guests (kernel and user share them;
/// Xen tells the modes apart by its own flag and by the RPL it shows in frames).
pub const FLAT_KERNEL_CS: u16 = 0xe033;
pub const FLAT_KERNEL_SS: u16 = 0xe02b;
pub const FLAT_USER_CS: u16 = 0xe033;
pub const FLAT_USER_SS: u16 = 0xe02b;

/// The read-only machine-to-physical table Xen maps into every 64-bit PV guest.
pub const MACH2PHYS_VIRT_START: u64 = 0xffff_8000_0000_0000;
/// The hypervisor's hole in the address space: the guest may not map there.
pub const HYPERVISOR_VIRT_START: u64 = 0xffff_8000_0000_0000;
pub const HYPERVISOR_VIRT_END: u64 = 0xffff_8800_0000_0000;

/// `iret` hypercall flag: return as from a `syscall` (sysret semantics, rcx/r11 clobbered).
pub const VGCF_IN_SYSCALL: u64 = 1 << 8;

/// `console_io` commands.
pub const CONSOLEIO_WRITE: u32 = 0;
pub const CONSOLEIO_READ: u32 = 1;

/// `sched_op` commands and `SCHEDOP_shutdown` reasons.
pub mod sched {
    pub const YIELD: u32 = 0;
    pub const BLOCK: u32 = 1;
    pub const SHUTDOWN: u32 = 2;
    pub const SHUTDOWN_POWEROFF: u32 = 0;
    pub const SHUTDOWN_REBOOT: u32 = 1;
    pub const SHUTDOWN_SUSPEND: u32 = 2;
    pub const SHUTDOWN_CRASH: u32 = 3;
}

/// `vcpu_op` commands.
pub mod vcpu {
    pub const GET_RUNSTATE_INFO: u32 = 4;
    pub const STOP_PERIODIC_TIMER: u32 = 7;
    pub const SET_SINGLESHOT_TIMER: u32 = 8;
    pub const STOP_SINGLESHOT_TIMER: u32 = 9;
    /// `VCPU_SSHOTTMR_future`: fail with -ETIME instead of firing at once for a past deadline.
    pub const SSHOTTMR_FUTURE: u32 = 1;
}

/// `event_channel_op` commands and virtual IRQs.
pub mod evtchn {
    pub const BIND_VIRQ: u32 = 1;
    pub const CLOSE: u32 = 3;
    pub const SEND: u32 = 4;
    pub const ALLOC_UNBOUND: u32 = 6;
    pub const UNMASK: u32 = 9;
    pub const VIRQ_TIMER: u32 = 0;
}

/// `mmu_update` request kinds (low bits of `ptr`) and `mmuext_op` commands.
pub mod mmu {
    pub const NORMAL_PT_UPDATE: u64 = 0;
    pub const MACHPHYS_UPDATE: u64 = 1;
    pub const PIN_L1_TABLE: u32 = 0;
    pub const PIN_L2_TABLE: u32 = 1;
    pub const PIN_L3_TABLE: u32 = 2;
    pub const PIN_L4_TABLE: u32 = 3;
    pub const UNPIN_TABLE: u32 = 4;
    pub const NEW_BASEPTR: u32 = 5;
    pub const TLB_FLUSH_LOCAL: u32 = 6;
    pub const INVLPG_LOCAL: u32 = 7;
    pub const TLB_FLUSH_ALL: u32 = 10;
    pub const INVLPG_ALL: u32 = 11;
    pub const NEW_USER_BASEPTR: u32 = 15;
    pub const CLEAR_PAGE: u32 = 16;
    /// `update_va_mapping` flags.
    pub const UVMF_NONE: u64 = 0;
    pub const UVMF_TLB_FLUSH: u64 = 1;
    pub const UVMF_INVLPG: u64 = 2;
    pub const UVMF_LOCAL: u64 = 0;
    pub const UVMF_ALL: u64 = 4;
}

/// `set_segment_base` selectors.
pub mod segbase {
    pub const FS: u32 = 0;
    pub const GS_USER: u32 = 1;
    pub const GS_KERNEL: u32 = 2;
}

/// `grant_table_op` commands and v1 entry flags.
pub mod gnttab {
    pub const SETUP_TABLE: u32 = 2;
    pub const QUERY_SIZE: u32 = 6;
    pub const GTF_PERMIT_ACCESS: u16 = 1;
    pub const GTF_TYPE_MASK: u16 = 3;
    pub const GTF_READONLY: u16 = 1 << 2;
    pub const GTF_READING: u16 = 1 << 3;
    pub const GTF_WRITING: u16 = 1 << 4;
    /// Refs 0..8 are reserved for the toolstack (console, xenstore).
    pub const NR_RESERVED_ENTRIES: u32 = 8;
}

/// `start_info`: what the domain builder leaves for the guest (pointer in `%rsi`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct StartInfo {
    pub magic: [u8; 32],
    pub nr_pages: u64,
    /// Machine address of the shared-info page.
    pub shared_info: u64,
    pub flags: u32,
    pub _pad0: u32,
    pub store_mfn: u64,
    pub store_evtchn: u32,
    pub _pad1: u32,
    pub console_mfn: u64,
    pub console_evtchn: u32,
    pub _pad2: u32,
    /// Virtual address of the bootstrap L4 page table.
    pub pt_base: u64,
    pub nr_pt_frames: u64,
    /// Virtual address of the pfn -> mfn list (`nr_pages` entries).
    pub mfn_list: u64,
    pub mod_start: u64,
    pub mod_len: u64,
    pub cmd_line: [u8; 1024],
    pub first_p2m_pfn: u64,
    pub nr_p2m_frames: u64,
}

/// `vcpu_time_info`: the PV clock of one vCPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct VcpuTimeInfo {
    pub version: u32,
    pub _pad0: u32,
    pub tsc_timestamp: u64,
    pub system_time: u64,
    pub tsc_to_system_mul: u32,
    pub tsc_shift: i8,
    pub flags: u8,
    pub _pad1: [u8; 2],
}

/// `vcpu_info`: per-vCPU event state, the faulting address, the clock.
#[repr(C)]
pub struct VcpuInfo {
    pub evtchn_upcall_pending: u8,
    pub evtchn_upcall_mask: u8,
    pub _pad0: [u8; 6],
    pub evtchn_pending_sel: u64,
    pub cr2: u64,
    pub _pad1: u64,
    pub time: VcpuTimeInfo,
}

pub const MAX_LEGACY_VCPUS: usize = 32;
/// Number of 64-bit words in the 2-level event bitmaps (4096 ports).
pub const EVTCHN_WORDS: usize = 64;

/// The shared-info page (mapped from `start_info.shared_info`).
#[repr(C)]
pub struct SharedInfo {
    pub vcpu_info: [VcpuInfo; MAX_LEGACY_VCPUS],
    pub evtchn_pending: [u64; EVTCHN_WORDS],
    pub evtchn_mask: [u64; EVTCHN_WORDS],
    pub wc_version: u32,
    pub wc_sec: u32,
    pub wc_nsec: u32,
    pub wc_sec_hi: u32,
    pub max_pfn: u64,
    pub pfn_to_mfn_frame_list_list: u64,
}

/// `vcpu_runstate_info`: how long the vCPU spent in each state.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct RunstateInfo {
    pub state: i32,
    pub _pad: u32,
    pub state_entry_time: u64,
    /// running, runnable, blocked, offline (ns).
    pub time: [u64; 4],
}

/// `xencons_interface`: the PV console ring page.
#[repr(C)]
pub struct ConsoleInterface {
    pub input: [u8; 1024],
    pub output: [u8; 2048],
    pub in_cons: u32,
    pub in_prod: u32,
    pub out_cons: u32,
    pub out_prod: u32,
}

pub const XENSTORE_RING_SIZE: usize = 1024;
pub const XENSTORE_PAYLOAD_MAX: usize = 4096;

/// `xenstore_domain_interface`: the xenstore ring page.
#[repr(C)]
pub struct XenstoreInterface {
    pub req: [u8; XENSTORE_RING_SIZE],
    pub rsp: [u8; XENSTORE_RING_SIZE],
    pub req_cons: u32,
    pub req_prod: u32,
    pub rsp_cons: u32,
    pub rsp_prod: u32,
    pub server_features: u32,
    pub connection: u32,
    pub error: u32,
}

/// `trap_info`: one entry of the virtual IDT given to `set_trap_table`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TrapInfo {
    pub vector: u8,
    /// Bits 0-1: the lowest privilege allowed to raise it with `int n`;
    /// bit 2: mask events on entry (an "interrupt gate").
    pub flags: u8,
    pub cs: u16,
    pub _pad: u32,
    pub address: u64,
}
pub const TI_MASK_EVENTS: u8 = 1 << 2;

/// `mmu_update` request: `*ptr = val` where `ptr` is the PTE's machine address | kind.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MmuUpdate {
    pub ptr: u64,
    pub val: u64,
}

/// `mmuext_op` request.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MmuextOp {
    pub cmd: u32,
    pub _pad: u32,
    /// mfn or linear address.
    pub arg1: u64,
    /// nr_ents, vcpumask pointer or src_mfn.
    pub arg2: u64,
}

/// `gnttab_setup_table`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GnttabSetupTable {
    pub dom: u16,
    pub _pad: u16,
    pub nr_frames: u32,
    pub status: i16,
    pub _pad1: [u8; 6],
    pub frame_list: u64,
}

/// `gnttab_query_size`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GnttabQuerySize {
    pub dom: u16,
    pub _pad: u16,
    pub nr_frames: u32,
    pub max_nr_frames: u32,
    pub status: i16,
    pub _pad1: u16,
}

/// A grant-table operation's `status` (`GNTST_*`), when it is not 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantOpError {
    /// The hypercall itself failed.
    Hypercall(XenError),
    /// The operation ran and reported this `GNTST_*` status.
    Status(i16),
    /// The guest's shared grant table is locked already (a driver asked
    /// for it while holding it: a bug of ours).
    Busy,
}

impl core::fmt::Display for GrantOpError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            GrantOpError::Hypercall(e) => write!(f, "grant_table_op failed: {e}"),
            GrantOpError::Busy => write!(f, "the grant table is already in use (re-entered)"),
            GrantOpError::Status(s) => {
                let name = match s {
                    -1 => "GNTST_general_error",
                    -2 => "GNTST_bad_domain",
                    -3 => "GNTST_bad_gntref",
                    -8 => "GNTST_permission_denied",
                    -9 => "GNTST_bad_page",
                    -13 => "GNTST_no_space",
                    _ => "GNTST error",
                };
                write!(f, "{name} ({s})")
            }
        }
    }
}

impl From<XenError> for GrantOpError {
    fn from(e: XenError) -> Self {
        GrantOpError::Hypercall(e)
    }
}

/// `grant_entry_v1`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GrantEntryV1 {
    pub flags: u16,
    pub domid: u16,
    pub frame: u32,
}

const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(offset_of!(StartInfo, nr_pages) == 32);
    assert!(offset_of!(StartInfo, shared_info) == 40);
    assert!(offset_of!(StartInfo, store_mfn) == 56);
    assert!(offset_of!(StartInfo, store_evtchn) == 64);
    assert!(offset_of!(StartInfo, console_mfn) == 72);
    assert!(offset_of!(StartInfo, console_evtchn) == 80);
    assert!(offset_of!(StartInfo, pt_base) == 88);
    assert!(offset_of!(StartInfo, mfn_list) == 104);
    assert!(offset_of!(StartInfo, cmd_line) == 128);
    assert!(offset_of!(StartInfo, first_p2m_pfn) == 1152);
    assert!(size_of::<VcpuTimeInfo>() == 32);
    assert!(size_of::<VcpuInfo>() == 64);
    assert!(offset_of!(VcpuInfo, evtchn_pending_sel) == 8);
    assert!(offset_of!(VcpuInfo, cr2) == 16);
    assert!(offset_of!(VcpuInfo, time) == 32);
    assert!(offset_of!(SharedInfo, evtchn_pending) == 2048);
    assert!(offset_of!(SharedInfo, evtchn_mask) == 2560);
    assert!(offset_of!(SharedInfo, wc_version) == 3072);
    assert!(offset_of!(SharedInfo, wc_sec_hi) == 3084);
    assert!(offset_of!(SharedInfo, max_pfn) == 3088);
    assert!(size_of::<RunstateInfo>() == 48);
    assert!(offset_of!(ConsoleInterface, in_cons) == 3072);
    assert!(offset_of!(ConsoleInterface, out_cons) == 3080);
    assert!(offset_of!(ConsoleInterface, out_prod) == 3084);
    assert!(offset_of!(XenstoreInterface, req_cons) == 2048);
    assert!(offset_of!(XenstoreInterface, rsp_prod) == 2060);
    assert!(size_of::<TrapInfo>() == 16);
    assert!(size_of::<MmuextOp>() == 24);
    assert!(size_of::<GnttabSetupTable>() == 24);
    assert!(offset_of!(GnttabSetupTable, status) == 8);
    assert!(offset_of!(GnttabSetupTable, frame_list) == 16);
    assert!(size_of::<GnttabQuerySize>() == 16);
    assert!(size_of::<GrantEntryV1>() == 8);
};

/// A negative return value of a hypercall (Xen's errno numbering is Linux's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XenError(pub i64);

impl XenError {
    /// Turn a raw hypercall return into `Ok(value)` or the error.
    pub fn check(rc: i64) -> Result<u64, XenError> {
        if rc < 0 {
            Err(XenError(rc))
        } else {
            Ok(rc as u64)
        }
    }

    pub fn name(self) -> &'static str {
        match -self.0 {
            1 => "EPERM",
            2 => "ENOENT",
            11 => "EAGAIN",
            12 => "ENOMEM",
            13 => "EACCES",
            14 => "EFAULT",
            16 => "EBUSY",
            17 => "EEXIST",
            22 => "EINVAL",
            28 => "ENOSPC",
            38 => "ENOSYS",
            62 => "ETIME",
            _ => "error",
        }
    }
}

impl core::fmt::Display for XenError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} ({})", self.name(), self.0)
    }
}
