//! The virtio-blk driver (feature `block`): every virtio block device the
//! boot finds, on virtio-mmio (QEMU microvm, Firecracker) or virtio-pci
//! (QEMU q35), driven through the `virtio-drivers` crate's [`VirtIOBlk`]
//! and registered with the runtime as a [`BlockDevice`]
//! (`unikernel_runtime::device::register_block`).
//!
//! Features: `VirtIOBlk::new` offers VIRTIO_BLK_F_RO, VIRTIO_BLK_F_FLUSH,
//! VIRTIO_F_RING_INDIRECT_DESC, VIRTIO_F_RING_EVENT_IDX and
//! VIRTIO_F_VERSION_1 and accepts what the device offers of them (the
//! intersection, written back before FEATURES_OK). So FLUSH is negotiated
//! exactly when the device offers it (QEMU and Firecracker always do;
//! Firecracker's flush reaches the host file only for a drive with
//! `cache_type` "Writeback", which `--emit firecracker` writes), and
//! [`BlockDevice::can_flush`] says so. Indirect descriptors need the crate's `alloc` feature, which is
//! off: each request takes 3 descriptors of the 16-entry queue.
//!
//! Requests: a read or write is split into requests of at most [`CHUNK`]
//! bytes (less when the device's `size_max` says so), up to [`SLOTS`] of
//! them in flight at once, each through a bounce buffer of its own (DMA
//! frames of this driver: the caller's buffer may be app memory that is
//! not identity-mapped). Completions are taken from the used ring in the
//! order the device returns them.
//!
//! Waiting: the calls are synchronous and run in the runtime (a system
//! call of the thread that asked). While requests are in flight the driver
//! polls the used ring and, between polls, halts the vCPU until an
//! interrupt ([`BLK_VECTOR`], 34: virtio-mmio's line through the I/O APIC,
//! or MSI-X on PCI) instead of spinning. The halt returns at once when any
//! interrupt is already waiting for the runtime; the driver takes its own
//! vector out of that set (acknowledging the device and the LAPIC) and
//! leaves the others for the runtime's next safe point, so while another
//! one waits (a timer tick) the wait is a poll of the used ring. A device
//! without a routed interrupt is polled. Other threads do not run during
//! the wait (a caller may hold locks the scheduler cannot see); a request
//! that has not completed after [`TIMEOUT_NS`] fails with EIO, and so
//! does every later one (the device may still own the slot's buffer). A
//! flush goes through `VirtIOBlk::flush`, which waits by polling (the
//! crate has no non-blocking flush): no halt, no time limit.

use crate::virtio_hw::{self, KvmHal, MmioAcks, PciFunction, PortCam, PAGE};
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU32, Ordering};
use spin::Mutex;
use unikernel_runtime::arch::x86_64::cpu::privileged;
use unikernel_runtime::arch::x86_64::trap::{defer_irq, take_pending_irqs};
use unikernel_runtime::device::{check_request, BlockDevice};
use unikernel_runtime::errno::{Errno, EIO, EROFS};
use virtio_drivers::device::blk::{BlkReq, BlkResp, VirtIOBlk};
use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};
use virtio_drivers::transport::pci::bus::{Command, PciRoot};
use virtio_drivers::transport::pci::PciTransport;
use virtio_drivers::transport::{DeviceType, Transport};

/// The interrupt vector of every virtio-blk device.
pub const BLK_VECTOR: u8 = 34;
/// Requests in flight at once (3 descriptors each in a 16-entry queue).
pub const SLOTS: usize = 4;
/// Bytes per request at most (the bounce buffer of one slot).
pub const CHUNK: usize = 64 << 10;
/// A request the device has not completed after this long fails (EIO).
pub const TIMEOUT_NS: u64 = 30_000_000_000;
const SECTOR: usize = 512;
/// Feature bits (virtio spec 5.2.3).
const F_SIZE_MAX: u64 = 1 << 1;
const F_RO: u64 = 1 << 5;
const F_FLUSH: u64 = 1 << 9;
/// `size_max` in the device configuration.
const CONFIG_SIZE_MAX: usize = 8;

/// The virtio-mmio block devices whose interrupt is routed.
static MMIO_ACK: MmioAcks = MmioAcks::new();
/// Interrupts of [`BLK_VECTOR`] that ended a wait of this driver.
pub static IRQ_WAKEUPS: AtomicU32 = AtomicU32::new(0);
/// Halts of the wait loop, and its polls that could not halt (another
/// interrupt was waiting, or the device has no routed interrupt).
pub static HALTS: AtomicU32 = AtomicU32::new(0);
pub static SPINS: AtomicU32 = AtomicU32::new(0);

/// Acknowledge the interrupt of every virtio-mmio block device (called
/// from the platform's `end_of_interrupt` for [`BLK_VECTOR`], and by the
/// wait loop).
pub fn ack_interrupts() {
    MMIO_ACK.ack();
}

/// One request slot: the request header, the status byte and the bounce
/// buffer. The slots' vector is never resized after start, so their
/// addresses stay put while the device has them.
struct Slot {
    req: BlkReq,
    resp: BlkResp,
    buf: &'static mut [u8],
    /// The request in flight: (token, byte offset in the caller's buffer, length).
    busy: Option<(u16, usize, usize)>,
}

struct State<T: Transport> {
    blk: VirtIOBlk<KvmHal, T>,
    slots: Vec<Slot>,
    /// Whether the device's interrupt reaches [`BLK_VECTOR`].
    irq: bool,
    /// A request timed out: the device may still own its slot's buffer,
    /// so every later request fails (EIO) without reaching it.
    broken: bool,
}

// SAFETY: the bounce buffers are frames owned by this state alone and the
// transport's registers are only touched under the device's lock; nothing
// in the state is tied to the CPU or thread that created it.
unsafe impl<T: Transport> Send for State<T> {}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    Read,
    Write,
}

impl<T: Transport> State<T> {
    /// Wait until the used ring has an entry (see the module comment);
    /// its token, or `None` after [`TIMEOUT_NS`].
    fn wait_used(&mut self) -> Option<u16> {
        let start = crate::now_ns();
        loop {
            if let Some(t) = self.blk.peek_used() {
                return Some(t);
            }
            if crate::now_ns().saturating_sub(start) > TIMEOUT_NS {
                return None;
            }
            let (own, others) = take_own_interrupt();
            if own {
                // Look at the used ring again before halting.
                continue;
            }
            if self.irq && !others {
                // Returns at once if an interrupt came since the look above.
                privileged::halt();
                HALTS.fetch_add(1, Ordering::Relaxed);
                if take_own_interrupt().0 {
                    IRQ_WAKEUPS.fetch_add(1, Ordering::Relaxed);
                }
            } else {
                SPINS.fetch_add(1, Ordering::Relaxed);
                core::hint::spin_loop();
            }
        }
    }

    /// Hand one chunk to the device through slot `i`.
    fn submit(
        &mut self,
        i: usize,
        dir: Dir,
        sector: u64,
        off: usize,
        len: usize,
    ) -> Result<(), Errno> {
        let slot = &mut self.slots[i];
        // SAFETY: the slot (in a vector never resized: it does not move) and its buffer are
        // not touched until the device returns the token (`complete`).
        let token = unsafe {
            match dir {
                Dir::Read => self.blk.read_blocks_nb(
                    sector as usize,
                    &mut slot.req,
                    &mut slot.buf[..len],
                    &mut slot.resp,
                ),
                Dir::Write => self.blk.write_blocks_nb(
                    sector as usize,
                    &mut slot.req,
                    &slot.buf[..len],
                    &mut slot.resp,
                ),
            }
        }
        .map_err(|_| EIO)?;
        slot.busy = Some((token, off, len));
        Ok(())
    }

    /// Take the next completion: (slot, whether the device did it).
    fn complete(&mut self, dir: Dir) -> Option<(usize, bool)> {
        let token = self.wait_used()?;
        let i = self
            .slots
            .iter()
            .position(|s| s.busy.is_some_and(|b| b.0 == token))?;
        let slot = &mut self.slots[i];
        let (_, _, len) = slot.busy?;
        // SAFETY: the same request, buffer and response given to
        // `*_blocks_nb` for this token.
        let r = unsafe {
            match dir {
                Dir::Read => self.blk.complete_read_blocks(
                    token,
                    &slot.req,
                    &mut slot.buf[..len],
                    &mut slot.resp,
                ),
                Dir::Write => self.blk.complete_write_blocks(
                    token,
                    &slot.req,
                    &slot.buf[..len],
                    &mut slot.resp,
                ),
            }
        };
        Some((i, r.is_ok()))
    }

    /// Move `len` bytes (`rbuf` for a read, `wbuf` for a write) at `sector`,
    /// `chunk` bytes per request, [`SLOTS`] requests in flight.
    fn transfer(
        &mut self,
        dir: Dir,
        sector: u64,
        mut rbuf: Option<&mut [u8]>,
        wbuf: Option<&[u8]>,
        len: usize,
        chunk: usize,
    ) -> Result<(), Errno> {
        if self.broken {
            return Err(EIO);
        }
        let mut next = 0usize;
        let mut in_flight = 0usize;
        let mut failed = false;
        loop {
            // Fill the free slots.
            while next < len && !failed {
                let Some(i) = self.slots.iter().position(|s| s.busy.is_none()) else {
                    break;
                };
                let n = chunk.min(len - next);
                if let Some(w) = wbuf {
                    self.slots[i].buf[..n].copy_from_slice(&w[next..next + n]);
                }
                let at = sector + (next / SECTOR) as u64;
                if self.submit(i, dir, at, next, n).is_err() {
                    failed = true;
                    break;
                }
                in_flight += 1;
                next += n;
            }
            if in_flight == 0 {
                if next < len && !failed {
                    // No slot free with nothing in flight: cannot happen
                    // unless the state is broken; never report success.
                    return Err(EIO);
                }
                break;
            }
            let Some((i, ok)) = self.complete(dir) else {
                // The device stopped answering: its slots stay busy (it may
                // still write into them); the device is unusable.
                self.broken = true;
                return Err(EIO);
            };
            in_flight -= 1;
            let slot = &mut self.slots[i];
            let (_, off, n) = slot.busy.take().unwrap_or((0, 0, 0));
            if !ok {
                failed = true;
            } else if let Some(r) = rbuf.as_deref_mut() {
                r[off..off + n].copy_from_slice(&slot.buf[..n]);
            }
        }
        if failed {
            Err(EIO)
        } else {
            Ok(())
        }
    }
}

/// Take [`BLK_VECTOR`] out of the runtime's pending set, acknowledging
/// it; the other vectors stay pending for the runtime. (Whether ours was
/// there, whether others are.)
fn take_own_interrupt() -> (bool, bool) {
    let irqs = take_pending_irqs();
    let (mut own, mut others) = (false, false);
    for (w, bits) in irqs.iter().enumerate() {
        let mut b = *bits;
        while b != 0 {
            let v = (w as u32 * 64 + b.trailing_zeros()) as u8;
            b &= b - 1;
            if v == BLK_VECTOR {
                own = true;
            } else {
                others = true;
                defer_irq(v);
            }
        }
    }
    if own {
        ack_own();
    }
    (own, others)
}

fn ack_own() {
    ack_interrupts();
    crate::lapic::eoi(BLK_VECTOR);
}

/// A virtio block device registered with the runtime.
pub struct VirtioBlk<T: Transport> {
    name: String,
    label: Option<String>,
    /// The device's serial (VIRTIO_BLK_T_GET_ID), as it came.
    pub serial: String,
    sectors: u64,
    read_only: bool,
    flush: bool,
    chunk: usize,
    state: Mutex<State<T>>,
}

impl<T: Transport> VirtioBlk<T> {
    /// Check a request of `len` bytes at `sector` against the device.
    fn check(&self, sector: u64, len: usize) -> Result<(), Errno> {
        check_request(self.sectors, sector, len)
    }
}

impl<T: Transport> BlockDevice for VirtioBlk<T> {
    fn name(&self) -> &str {
        &self.name
    }

    fn label(&self) -> Option<&str> {
        self.label.as_deref()
    }

    fn sectors(&self) -> u64 {
        self.sectors
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn can_flush(&self) -> bool {
        self.flush
    }

    fn read(&self, sector: u64, buf: &mut [u8]) -> Result<(), Errno> {
        self.check(sector, buf.len())?;
        let len = buf.len();
        self.state
            .lock()
            .transfer(Dir::Read, sector, Some(buf), None, len, self.chunk)
    }

    fn write(&self, sector: u64, buf: &[u8]) -> Result<(), Errno> {
        self.check(sector, buf.len())?;
        if self.read_only {
            return Err(EROFS);
        }
        self.state
            .lock()
            .transfer(Dir::Write, sector, None, Some(buf), buf.len(), self.chunk)
    }

    fn flush(&self) -> Result<(), Errno> {
        if !self.flush {
            // Nothing to send: the device has no write cache it lets us flush.
            return Ok(());
        }
        // VIRTIO_BLK_T_FLUSH. `virtio-drivers` has no non-blocking flush:
        // this waits by polling the used ring, without a halt or a time
        // limit (nothing else is in flight under the lock; the host's
        // fdatasync bounds it).
        let mut s = self.state.lock();
        if s.broken {
            return Err(EIO);
        }
        s.blk.flush().map_err(|_| EIO)
    }
}

/// Bring up one device on `transport`. `declared`: the image's disk names;
/// the device's serial becomes its label when it is one of them (QEMU's
/// `serial=NAME`; Firecracker answers GET_ID with a number of its own).
fn start<T: Transport>(
    mut transport: T,
    name: String,
    declared: &[&str],
) -> Result<VirtioBlk<T>, String> {
    if transport.device_type() != DeviceType::Block {
        return Err(format!("{name}: not a block device"));
    }
    let offered = transport.read_device_features();
    let mut chunk = CHUNK;
    if offered & F_SIZE_MAX != 0 {
        if let Ok(m) = transport.read_config_space::<u32>(CONFIG_SIZE_MAX) {
            let m = (m as usize) / SECTOR * SECTOR;
            if m >= SECTOR {
                chunk = chunk.min(m);
            }
        }
    }
    let mut blk = VirtIOBlk::<KvmHal, T>::new(transport)
        .map_err(|e| format!("{name}: device set-up failed: {e:?}"))?;
    let mut id = [0u8; 20];
    let serial = match blk.device_id(&mut id) {
        Ok(n) => core::str::from_utf8(&id[..n.min(20)]).unwrap_or("").into(),
        Err(_) => String::new(),
    };
    let label = declared
        .iter()
        .any(|d| *d == serial)
        .then(|| serial.clone());
    let mut slots = Vec::with_capacity(SLOTS);
    for _ in 0..SLOTS {
        let pa = unikernel_runtime::mm::frame::FRAMES
            .lock()
            .alloc_contiguous((CHUNK / PAGE) as u64)
            .ok_or_else(|| format!("{name}: out of memory for buffers"))?;
        // SAFETY: fresh contiguous frames of identity-mapped RAM, owned by
        // this driver for good (never freed).
        let buf = unsafe { core::slice::from_raw_parts_mut(pa as *mut u8, CHUNK) };
        slots.push(Slot {
            req: BlkReq::default(),
            resp: BlkResp::default(),
            buf,
            busy: None,
        });
    }
    Ok(VirtioBlk {
        name,
        label,
        serial,
        sectors: blk.capacity(),
        read_only: offered & F_RO != 0 && blk.readonly(),
        flush: offered & F_FLUSH != 0,
        chunk,
        state: Mutex::new(State {
            blk,
            slots,
            irq: false,
            broken: false,
        }),
    })
}

fn describe<T: Transport>(d: &VirtioBlk<T>) -> String {
    format!(
        "{} sectors ({} MiB), {}, {}, serial \"{}\"{}",
        d.sectors,
        d.sectors / 2048,
        if d.read_only {
            "read-only"
        } else {
            "read-write"
        },
        if d.flush { "flush" } else { "no flush" },
        d.serial,
        if d.label.is_some() { " (label)" } else { "" }
    )
}

/// One virtio-mmio device at `addr` (`size` bytes), interrupt `gsi`.
fn start_mmio(
    addr: u64,
    size: u64,
    gsi: Option<u32>,
    name: String,
    declared: &[&str],
) -> Result<String, String> {
    let header = NonNull::new(addr as *mut VirtIOHeader).ok_or("null address")?;
    // SAFETY: a virtio-mmio region the boot mapped uncached (probed: the
    // magic matched), `size` bytes, driven by this transport alone.
    let transport = unsafe { MmioTransport::new(header, size as usize) }
        .map_err(|e| format!("{name}: virtio-mmio {addr:#x}: {e:?}"))?;
    let dev = start(transport, name.clone(), declared)?;
    let what = describe(&dev);
    SERIALS.lock().push((name.clone(), dev.serial.clone()));
    let irq = match gsi {
        Some(g) if MMIO_ACK.watch(addr) && crate::ioapic::route(g, BLK_VECTOR) => {
            dev.state.lock().irq = true;
            format!("irq {g} -> vector {BLK_VECTOR}")
        }
        Some(g) => format!("irq {g} not routable: polled only"),
        None => "no irq known: polled only".into(),
    };
    unikernel_runtime::device::register_block(Arc::new(dev));
    Ok(format!("{name}: virtio-mmio {addr:#x}, {irq}, {what}"))
}

/// One virtio-pci function.
fn start_pci(p: &PciFunction, name: String, declared: &[&str]) -> Result<String, String> {
    let df = p.df;
    let mut root = PciRoot::new(PortCam);
    let (_, command) = root.get_status_command(df);
    root.set_command(df, command | Command::MEMORY_SPACE | Command::BUS_MASTER);
    let transport = PciTransport::new::<KvmHal, _>(&mut root, df).map_err(|e| {
        format!(
            "{name}: virtio-pci {:02x}:{:02x}.{}: {e:?}",
            df.bus, df.device, df.function
        )
    })?;
    let dev = start(transport, name.clone(), declared)?;
    let what = describe(&dev);
    SERIALS.lock().push((name.clone(), dev.serial.clone()));
    let irq = if virtio_hw::enable_msix(df, BLK_VECTOR, 1) {
        dev.state.lock().irq = true;
        format!("MSI-X -> vector {BLK_VECTOR}")
    } else {
        "no MSI-X: polled only".into()
    };
    unikernel_runtime::device::register_block(Arc::new(dev));
    Ok(format!(
        "{name}: virtio-pci {:02x}:{:02x}.{}, {irq}, {what}",
        df.bus, df.device, df.function
    ))
}

/// Bring up and register every virtio-blk device (the same sources as the
/// net driver's `init_all`: `mmio` tokens, microvm's window, the block
/// functions of `pci`). `declared`: the image's disks (`NAME=MOUNT`). One
/// line per device, or per device that failed, for the verbose listing.
pub fn init_all(
    mmio: &[(u64, u64, u32)],
    microvm_window: bool,
    acpi: bool,
    pci: &[PciFunction],
    declared: &[String],
) -> Vec<String> {
    let names: Vec<&str> = declared
        .iter()
        .filter_map(|d| unikernel_image::disks::DiskDecl::parse(d).ok())
        .map(|d| d.name)
        .collect();
    let found = virtio_hw::mmio_devices(2, mmio, microvm_window, acpi);
    let mut lines = Vec::new();
    let mut n = 0;
    for (addr, size, gsi) in found {
        let name = format!("virtio-blk{n}");
        n += 1;
        lines.push(start_mmio(addr, size, gsi, name, &names).unwrap_or_else(|e| e));
    }
    for p in pci.iter().filter(|p| p.kind == 2) {
        let name = format!("virtio-blk{n}");
        n += 1;
        lines.push(start_pci(p, name, &names).unwrap_or_else(|e| e));
    }
    lines
}

/// The serial of registered device `name` when it is one of ours (for the
/// self-test's report).
pub fn serial_of(name: &str) -> Option<String> {
    SERIALS
        .lock()
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, s)| s.clone())
}

static SERIALS: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());
