//! The guest side of the kvm platform: one PVH ELF that QEMU (microvm,
//! q35), Firecracker and cloud-hypervisor boot.
//!
//! A boot: the VMM enters `kvm_pvh_entry` (entry.rs) in 32-bit mode; it
//! reaches 64-bit mode on assembled bootstrap tables and calls
//! [`kvm_main`], which (at ring 0, doing as little as it can: each
//! instruction costs ~1 us under kvm-pvm) reads the `hvm_start_info`, hands
//! the free RAM to the runtime's frame allocator, reads the manifest the
//! builder placed at `__kernel_end`, parses the command line
//! (`KEY=VALUE ... -- ARG ...`), builds the real page tables, loads
//! GDT/TSS/IDT and the syscall MSRs, starts the clock and the LAPIC, lists
//! virtio devices (with `UNIKERNEL_VERBOSE=1`), and starts the runtime,
//! which builds the app's stack and enters it at ring 3. System calls then
//! arrive at ring 0 (`sysretq` path of the runtime's stub).
#![no_std]

extern crate alloc;

mod acpi;
#[cfg(feature = "block")]
mod blockcheck;
mod clock;
mod cpu;
mod entry;
#[cfg(any(feature = "net", feature = "block"))]
mod ioapic;
mod lapic;
#[cfg(feature = "net")]
mod netcheck;
mod paging;
mod serial;
mod start_info;
mod virtio;
#[cfg(feature = "block")]
mod virtio_blk;
#[cfg(any(feature = "net", feature = "block"))]
mod virtio_hw;
#[cfg(feature = "net")]
mod virtio_net;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use clock::Clock;
use unikernel_image::layout::{KERNEL_BASE, USER_STACK_RESERVE, USER_STACK_TOP};
use unikernel_image::manifest::Manifest;
use unikernel_runtime::arch::x86_64::cpu::privileged;
use unikernel_runtime::mm::image;
use unikernel_runtime::{AppImage, AppSpec, BootInfo, MemRange, Platform, Stream};

/// QEMU's isa-debug-exit port: writing N makes QEMU exit with (N << 1) | 1.
const DEBUG_EXIT_PORT: u16 = 0xf4;
/// The runtime's kernel-panic exit code (runtime/src/fault.rs).
const EXIT_BOOT_FAILED: u32 = 253;

struct Kvm {
    clock: Clock,
}

static KVM: spin::Once<Kvm> = spin::Once::new();

/// Monotonic nanoseconds (0 before the clock is up).
#[cfg(feature = "block")]
pub(crate) fn now_ns() -> u64 {
    KVM.get().map_or(0, |k| k.clock.monotonic_ns())
}

impl Platform for Kvm {
    fn name(&self) -> &'static str {
        "kvm"
    }

    fn console_write(&self, stream: Stream, data: &[u8]) {
        let port = match stream {
            Stream::Stdout => serial::COM1,
            Stream::Stderr => serial::stderr_port(),
        };
        serial::write(port, data);
    }

    fn console_read(&self, _buf: &mut [u8]) -> usize {
        0 // no console input on this platform yet: end of file
    }

    fn monotonic_ns(&self) -> u64 {
        self.clock.monotonic_ns()
    }

    fn wall_clock_ns(&self) -> u64 {
        self.clock.wall_ns()
    }

    fn vdso_clock(&self) -> Option<unikernel_runtime::platform::VdsoClock> {
        Some(self.clock.vdso())
    }

    fn block_until(&self, deadline_ns: u64) {
        let now = self.monotonic_ns();
        if deadline_ns <= now {
            return;
        }
        let ns = deadline_ns - now;
        lapic::one_shot(ns, clock::ns_to_ticks(ns));
        privileged::halt();
    }

    fn halt(&self, exit_code: u32) -> ! {
        exit(exit_code)
    }

    fn flush_tlb_page(&self, va: u64) {
        privileged::invlpg(va);
    }

    fn flush_tlb_all(&self) {
        privileged::flush_all();
    }

    fn set_timer(&self, deadline_ns: Option<u64>) {
        match deadline_ns {
            Some(d) => {
                let ns = d.saturating_sub(self.monotonic_ns());
                let tsc = unikernel_runtime::arch::x86_64::cpu::rdtsc()
                    .saturating_add(clock::ns_to_ticks(ns));
                lapic::arm(unikernel_runtime::sched::TICK_VECTOR, ns, tsc);
            }
            None => lapic::disarm(),
        }
    }

    fn end_of_interrupt(&self, vector: u8) {
        #[cfg(feature = "net")]
        if vector == virtio_net::NET_VECTOR {
            virtio_net::ack_interrupts();
        }
        #[cfg(feature = "block")]
        if vector == virtio_blk::BLK_VECTOR {
            virtio_blk::ack_interrupts();
        }
        #[cfg(not(any(feature = "net", feature = "block")))]
        let _ = vector;
        lapic::eoi(vector);
    }
}

/// Tell the runner the exit code (last console line), then stop the VM:
/// QEMU's isa-debug-exit (the code reaches the runner), else ACPI S5 (a
/// cloud VM powers off), else the i8042 reset line (Firecracker stops on it).
fn exit(code: u32) -> ! {
    let line = format!("[unikernel] exit {}\n", code & 0xff);
    serial::write(serial::COM1, line.as_bytes());
    privileged::outb(DEBUG_EXIT_PORT, (code & 0xff) as u8);
    acpi::power_off();
    privileged::outb(0x64, 0xfe);
    loop {
        privileged::halt();
    }
}

/// A boot that cannot go on: say why on the console and stop. Allocates
/// nothing (it may run before the heap has any memory).
pub(crate) fn fatal(msg: &str) -> ! {
    serial::write(serial::COM1, b"unikernel: boot failed: ");
    serial::write(serial::COM1, msg.as_bytes());
    serial::write(serial::COM1, b"\n");
    serial::write(serial::COM1, b"[unikernel] exit 253\n");
    privileged::outb(DEBUG_EXIT_PORT, EXIT_BOOT_FAILED as u8);
    acpi::power_off();
    privileged::outb(0x64, 0xfe);
    loop {
        privileged::halt();
    }
}

extern "C" {
    static __kernel_end: u8;
    static __text_start: u8;
    static __text_end: u8;
    static __rodata_end: u8;
    static unikernel_trap_stubs: u8;
    static unikernel_syscall_entry: u8;
}

fn sym(s: &u8) -> u64 {
    s as *const u8 as u64
}

/// The fixed-size head of the manifest (no allocation needed to read it).
fn manifest_bytes() -> &'static [u8] {
    // SAFETY: the builder placed `u32 length` + the manifest at __kernel_end,
    // inside a loaded, identity-mapped segment.
    unsafe {
        let at = sym(&__kernel_end);
        let len = (at as *const u32).read_unaligned() as usize;
        core::slice::from_raw_parts((at + 4) as *const u8, len.min(1 << 20))
    }
}

fn field(b: &[u8], off: usize) -> u64 {
    b.get(off..off + 8)
        .map_or(0, |s| u64::from_le_bytes(s.try_into().unwrap_or([0; 8])))
}

static mut CMDLINE: [u8; 4096] = [0; 4096];

#[no_mangle]
extern "C" fn kvm_main(start_info_pa: u64) -> ! {
    // SAFETY: ring 0, at boot, single CPU.
    unsafe { serial::init() };
    // SAFETY: written once by the entry code, before this.
    let multiboot2 = unsafe { core::ptr::addr_of!(entry::KVM_BOOT_MB2).read() } != 0;
    // SAFETY: %ebx of the PVH (or Multiboot2) entry; the first 4 GiB are mapped.
    let boot = match unsafe {
        if multiboot2 {
            start_info::from_multiboot2(start_info_pa).map_err(Err)
        } else {
            start_info::read(start_info_pa).map_err(Ok)
        }
    } {
        Ok(b) => b,
        Err(Err(e)) => fatal(e),
        Err(Ok(m)) => {
            use core::fmt::Write;
            let mut msg = unikernel_runtime::fmtbuf::FmtBuf::<128>::new();
            let _ = write!(msg, "hvm_start_info has a bad magic {m:#x} (expected 0x336ec578): was this booted as PVH?");
            fatal(msg.as_str())
        }
    };
    // Keep the command line: its memory may be handed out as frames below.
    let cmd_len = boot.cmdline.len().min(4096);
    // SAFETY: boot-time, single CPU; CMDLINE is ours.
    let cmdline: &'static str = unsafe {
        let buf = &mut *core::ptr::addr_of_mut!(CMDLINE);
        buf[..cmd_len].copy_from_slice(&boot.cmdline.as_bytes()[..cmd_len]);
        core::str::from_utf8(&buf[..cmd_len]).unwrap_or("")
    };
    let m = manifest_bytes();
    if m.get(..8) != Some(b"UKMANIF1".as_slice()) {
        fatal("no manifest at the end of the kernel (image not linked by cargo-unikernel?)");
    }
    let app_end = field(m, 48);
    // Free RAM: everything but the low 64 KiB and the image.
    let mut free = [MemRange::default(); unikernel_runtime::platform::MAX_FREE_RANGES];
    let mut n = 0;
    let mut mem_top = 0;
    {
        let mut frames = unikernel_runtime::mm::frame::FRAMES.lock();
        for &(s, e) in &boot.ram[..boot.ram_count] {
            mem_top = mem_top.max(e);
            for (a, b) in [
                (s.max(paging::LOW_GUARD_END), e.min(KERNEL_BASE)),
                (s.max(app_end), e),
            ] {
                if b > a && n < free.len() {
                    free[n] = MemRange { start: a, end: b };
                    frames.add_range(free[n]);
                    n += 1;
                }
            }
        }
    }
    if mem_top == 0 {
        fatal("the VMM gave no memory map (hvm_start_info version < 1)");
    }
    let manifest = match Manifest::decode(m) {
        Ok(x) => x,
        Err(e) => fatal(&format!("the image manifest is unreadable: {e}")),
    };
    let cl = unikernel_runtime::cmdline::parse(cmdline);
    let verbose = cl.option("VERBOSE") == Some("1");

    // Page tables: RAM, image permissions, devices.
    let image_range = (KERNEL_BASE, app_end);
    // SAFETY: the app's program headers lie in its first loaded segment
    // (checked by the builder), identity-mapped.
    let app_segments = unsafe {
        image::app_segments(
            manifest.app_base,
            manifest.app_phdr,
            manifest.app_phent as u64,
            manifest.app_phnum as u64,
        )
    };
    // SAFETY: linker symbols of this kernel.
    let (text, rodata_end, kernel_end) = unsafe {
        (
            (sym(&__text_start), sym(&__text_end)),
            sym(&__rodata_end),
            sym(&__kernel_end),
        )
    };
    // Every image page gets its segment's ELF permissions (the runtime's
    // W^X rule, `unikernel_runtime::mm::image`, which Xen PV shares).
    let segments = image::image_segments(
        text,
        rodata_end,
        kernel_end,
        manifest.app_base,
        &app_segments,
    );
    let perm = |va: u64| -> Option<u64> {
        if va < KERNEL_BASE || va >= app_end {
            return None;
        }
        match image::page_perms(&segments, va) {
            Ok(p) => p.map(image::elf_flags),
            Err(e) => fatal(&format!("{e}")),
        }
    };
    let mut tables = paging::Tables::new();
    for &(s, e) in &boot.ram[..boot.ram_count] {
        tables.map_ram(s, e, &perm, image_range);
    }
    tables.map_4k(lapic::BASE, paging::DEVICE);
    // How to power off (ACPI S5), read while the loader's identity map of
    // the low 4 GiB (where the tables are) is still the one in use.
    // SAFETY: ring 0 at boot, the bootstrap tables active.
    unsafe { acpi::init(boot.info.rsdp_paddr) };
    if let Some(p) = acpi::mmio_page() {
        tables.map_4k(p, paging::DEVICE);
    }
    // QEMU microvm's virtio-mmio transports, which it does not name on a PVH
    // command line; probed only when no `virtio_mmio.device=` token came.
    if cl.virtio_mmio.is_empty() {
        let mut p = virtio::MICROVM_MMIO_BASE;
        while p < virtio::MICROVM_MMIO_BASE + virtio::MICROVM_MMIO_SLOTS * 0x200 {
            tables.map_4k(p, paging::DEVICE);
            p += 4096;
        }
    }
    let mut mmio = Vec::new();
    for spec in &cl.virtio_mmio {
        if let Some((size, addr, irq)) = virtio::parse_mmio(spec) {
            let mut p = addr & !0xfff;
            while p < addr + size.max(0x200) {
                tables.map_4k(p, paging::DEVICE);
                p += 4096;
            }
            mmio.push((addr, size, irq));
        }
    }
    // virtio-net (feature net), virtio-blk (feature block): the PCI
    // functions' BARs and the I/O APICs.
    #[cfg(any(feature = "net", feature = "block"))]
    let pci_virtio = {
        let kinds = [
            #[cfg(feature = "net")]
            1,
            #[cfg(feature = "block")]
            2,
        ];
        // SAFETY: ring 0, at boot.
        let f = unsafe { virtio_hw::pci_functions(&kinds) };
        virtio_hw::map_registers(&mut tables, &f);
        f
    };
    // SAFETY: ring 0; the new tables map the kernel, its stacks and data.
    unsafe {
        tables.activate();
        cpu::enable_features();
        cpu::init(
            sym(&unikernel_trap_stubs),
            16,
            sym(&unikernel_syscall_entry),
        );
        lapic::init();
    }
    // SAFETY: ring 0, at boot.
    let clock = unsafe { Clock::init() };
    let kvm = KVM.call_once(|| Kvm { clock });
    #[cfg(feature = "net")]
    let net_lines = virtio_net::init_all(
        &mmio,
        cl.virtio_mmio.is_empty(),
        boot.info.rsdp_paddr != 0,
        &pci_virtio,
    );
    #[cfg(feature = "block")]
    let blk_lines = virtio_blk::init_all(
        &mmio,
        cl.virtio_mmio.is_empty(),
        boot.info.rsdp_paddr != 0,
        &pci_virtio,
        &manifest.disks,
    );
    if verbose {
        let (src, khz) = kvm.clock.describe();
        let mut out = format!(
            "[unikernel] kvm: clock {src}{}, timer {}\n",
            if khz > 0 {
                format!(" ({khz} kHz)")
            } else {
                String::new()
            },
            if lapic::tsc_deadline_mode() {
                "LAPIC TSC-deadline"
            } else {
                "LAPIC one-shot"
            }
        );
        for &(s, e) in &boot.ram[..boot.ram_count] {
            out.push_str(&format!("[unikernel] kvm: RAM {s:#x}..{e:#x}\n"));
        }
        out.push_str(&format!(
            "[unikernel] kvm: image {:#x}..{app_end:#x}\n",
            KERNEL_BASE
        ));
        out.push_str(&format!("[unikernel] kvm: command line: {cmdline}\n"));
        let mut devices: Vec<virtio::Device> = mmio
            .iter()
            .filter_map(|&(a, s, i)| virtio::probe_mmio(a, s, i))
            .collect();
        if cl.virtio_mmio.is_empty() {
            devices.extend(virtio::probe_microvm());
        }
        // SAFETY: ring 0, at boot.
        devices.extend(unsafe { virtio::probe_pci() });
        if devices.is_empty() {
            out.push_str("[unikernel] kvm: no virtio devices\n");
        }
        for d in &devices {
            out.push_str(&format!("[unikernel] kvm: {}\n", virtio::describe(d)));
        }
        #[cfg(feature = "net")]
        for l in &net_lines {
            out.push_str(&format!("[unikernel] kvm: {l}\n"));
        }
        #[cfg(feature = "block")]
        for l in &blk_lines {
            out.push_str(&format!("[unikernel] kvm: {l}\n"));
        }
        serial::write(serial::stderr_port(), out.as_bytes());
    }

    #[cfg(feature = "net")]
    if let Some(n) = cl
        .option("NET_SELFTEST")
        .and_then(|v| v.parse::<u32>().ok())
    {
        // Interrupts that end the self-test's `hlt` are deferred like the
        // runtime's own (the same values `unikernel_runtime::start` sets).
        unikernel_runtime::arch::x86_64::trap::init(
            cpu::fault_stack_top(),
            KERNEL_BASE,
            manifest.app_base,
        );
        let report = netcheck::run(kvm, n);
        serial::write(serial::stderr_port(), report.as_bytes());
    }

    #[cfg(feature = "block")]
    if let Some(n) = cl
        .option("BLOCK_SELFTEST")
        .and_then(|v| v.parse::<u64>().ok())
    {
        // As for the net self-test: the trap path must know the runtime's
        // range, so that the device's interrupts ending a `hlt` are deferred.
        unikernel_runtime::arch::x86_64::trap::init(
            cpu::fault_stack_top(),
            KERNEL_BASE,
            manifest.app_base,
        );
        let report = blockcheck::run(n);
        serial::write(serial::stderr_port(), report.as_bytes());
    }

    let mut argv = Vec::new();
    argv.push(format!("/{}", manifest.name));
    argv.extend(cl.args.clone().unwrap_or_else(|| manifest.args.clone()));
    let envp = unikernel_runtime::cmdline::merge_env(&manifest.env, &cl.env);
    // Runtime options: the manifest's defaults, the command line's
    // UNIKERNEL_* tokens replacing them by key.
    let options = unikernel_runtime::cmdline::merge_env(&manifest.options, &cl.options);
    let (stack_top, stack_bottom, fault_top) = {
        let s = core::ptr::addr_of!(entry::KVM_BOOT_STACK) as u64;
        (s + entry::BOOT_STACK_SIZE as u64, s, cpu::fault_stack_top())
    };
    let name: &'static str = alloc::boxed::Box::leak(manifest.name.clone().into_boxed_str());
    let info = BootInfo {
        mem_size: mem_top,
        free,
        free_count: n,
        page_table_root: tables.root,
        kernel_stack_top: stack_top,
        kernel_stack_bottom: stack_bottom,
        fault_stack_top: fault_top,
        kernel_start: KERNEL_BASE,
        // SAFETY: a linker-script symbol; only its address is taken.
        // (Not the app's base: a fixed-address app has base 0.)
        kernel_end: sym(unsafe { &__kernel_end }),
        trace_syscalls: cl.option("TRACE_SYSCALLS") == Some("1"),
        app: AppImage {
            entry: manifest.app_entry,
            stack_pointer: 0,
            base: manifest.app_base,
            end: manifest.app_end,
            stack_top: USER_STACK_TOP,
            stack_mapped_bottom: USER_STACK_TOP,
            stack_reserve_bottom: USER_STACK_TOP - USER_STACK_RESERVE,
            name,
        },
        app_spec: Some(AppSpec {
            argv,
            envp,
            phdr: manifest.app_phdr,
            phent: manifest.app_phent as u64,
            phnum: manifest.app_phnum as u64,
        }),
        options,
        disks: manifest.disks.clone(),
        files_addr: manifest.files_addr,
        files_len: manifest.files_len,
    };
    if verbose {
        // SAFETY: written once by the entry code.
        let t0 = unsafe { core::ptr::read_volatile(core::ptr::addr_of!(entry::KVM_ENTRY_TSC)) };
        let now = unikernel_runtime::arch::x86_64::cpu::rdtsc();
        let ticks = now.wrapping_sub(t0);
        let us = match kvm.clock.describe() {
            (_, khz) if khz > 0 => ticks * 1000 / khz,
            _ => 0,
        };
        let line = format!(
            "[unikernel] kvm: boot from the first instruction to starting the runtime: {ticks} TSC ticks ({us} us with the TSC clock)\n"
        );
        serial::write(serial::stderr_port(), line.as_bytes());
    }
    unikernel_runtime::start(info, kvm)
}
