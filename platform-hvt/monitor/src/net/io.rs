//! The I/O thread: serves the guest's rings while the vCPU runs.
//!
//! It sleeps in `poll(2)` on the stop and kick eventfds and on the
//! backend's fd (not while the rx ring is full: then it looks again every
//! millisecond, leaving frames queued on the host side). Each wake-up it
//! drains the tx ring to the backend and fills the rx ring from it. See
//! `hvt_abi::net` for the ring protocol and its memory ordering.
use std::os::fd::AsRawFd;
use std::sync::atomic::{fence, Ordering};

use hvt_abi::net::{NetDesc, NET_READY, RING_CONSUMER, RING_DESCS, RING_POLLING, RING_PRODUCER};

use super::backend::{Backend, MAX_HOST_FRAME};
use super::trace::{Dir, Tracer};
use super::{Rings, Shared};
use crate::memory::SharedRam;

/// Why serving stopped.
enum Stop {
    /// The guest broke the ring protocol (message for the user).
    Guest(String),
    /// The backend failed or closed.
    Backend(String),
}

/// Frames moved per wake-up and direction before the other direction gets
/// its turn.
const BATCH: u32 = 256;
/// How long the thread polls both rings after traffic before it sleeps:
/// a guest frame sent within that time needs no `net_notify` exit (~25 us
/// of host time on kvm-pvm), and a host frame needs no poll(2) wake-up.
const POLL: std::time::Duration = std::time::Duration::from_micros(100);

/// The state of one device's rings, from the monitor's side.
struct Server<'a> {
    sh: &'a Shared,
    ram: SharedRam,
    rings: Rings,
    /// Next tx index to consume (ours; the guest's copy is only written).
    tx_next: u32,
    /// Next rx index to produce.
    rx_next: u32,
    tracer: Tracer,
    frame: Vec<u8>,
}

/// The thread's body: returns when told to stop or when the guest broke
/// its rings (after recording the fault).
pub(super) fn serve(
    sh: &Shared,
    mut backend: Backend,
    tracer: Tracer,
    ram: SharedRam,
    rings: Rings,
) {
    let mut s = Server {
        sh,
        ram,
        rings,
        tx_next: 0,
        rx_next: 0,
        tracer,
        frame: vec![0; MAX_HOST_FRAME],
    };
    let mut backend_ok = true;
    let mut rx_full = false;
    // The tx ring still had frames after a batch: the guest will not
    // notify (the ring is not empty), so look again at once.
    let mut tx_more = false;
    loop {
        let timeout = if tx_more || (backend_ok && !rx_full && backend.has_buffered_frame()) {
            0
        } else if backend_ok && rx_full {
            1
        } else {
            -1
        };
        let listen_backend = backend_ok && !rx_full;
        let mut fds = [
            pollfd(sh.stop.as_raw_fd()),
            pollfd(sh.kick.as_raw_fd()),
            pollfd(if listen_backend { backend.fd() } else { -1 }),
        ];
        // SAFETY: three valid pollfds (fd -1 is ignored), for the call's duration.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if fds[0].revents != 0 {
            return;
        }
        if fds[1].revents != 0 {
            if let Ok(n) = sh.kick.read() {
                sh.stats.kicks.fetch_add(n, Ordering::Relaxed);
            }
        }
        let result = s.drain_tx(&mut backend, backend_ok).and_then(|more| {
            tx_more = more;
            if backend_ok {
                s.fill_rx(&mut backend).map(|full| rx_full = full)
            } else {
                Ok(())
            }
        });
        // Quiet now: watch both rings for a while before sleeping.
        let result = result.and_then(|()| {
            if tx_more || rx_full || !backend_ok || backend.has_buffered_frame() {
                return Ok(());
            }
            s.poll(&mut backend).map(|(more, full)| {
                tx_more = more;
                rx_full = full;
            })
        });
        match result {
            Ok(()) => {}
            Err(Stop::Guest(msg)) => {
                sh.fault(msg);
                return;
            }
            Err(Stop::Backend(msg)) => {
                eprintln!("unikernel-hvt: network backend failed: {msg}; the guest's frames are dropped from now on");
                backend_ok = false;
            }
        }
    }
}

fn pollfd(fd: i32) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

impl Server<'_> {
    fn guest_error(&self, what: String) -> Stop {
        Stop::Guest(what)
    }

    /// Number of frames between `consumer` and `producer`, checked against the ring size.
    fn in_ring(&self, ring: &str, producer: u32, consumer: u32) -> Result<u32, Stop> {
        let n = producer.wrapping_sub(consumer);
        if n > self.rings.slots {
            return Err(self.guest_error(format!(
                "{ring} ring: producer index {producer} is {n} ahead of consumer index {consumer}, but the ring has {} slots",
                self.rings.slots
            )));
        }
        Ok(n)
    }

    fn desc(&self, ring: u64, index: u32) -> Result<NetDesc, Stop> {
        let gpa = ring + RING_DESCS + u64::from(index & (self.rings.slots - 1)) * 16;
        self.ram
            .read_obj::<NetDesc>(gpa)
            .map_err(|e| self.guest_error(format!("descriptor {index}: {e}")))
    }

    /// Sends the frames the guest published in the tx ring (a batch of
    /// [`BATCH`] or so); true if more are waiting.
    fn drain_tx(&mut self, backend: &mut Backend, backend_ok: bool) -> Result<bool, Stop> {
        let tx = self.rings.tx;
        let ram_err = |e| Stop::Guest(format!("tx ring: {e}"));
        let mut moved = 0;
        loop {
            let producer = self.ram.load_acquire(tx + RING_PRODUCER).map_err(ram_err)?;
            let waiting = self.in_ring("tx", producer, self.tx_next)?;
            if waiting == 0 {
                return Ok(false);
            }
            let was_full = waiting == self.rings.slots;
            for _ in 0..waiting {
                let d = self.desc(tx, self.tx_next)?;
                if d.len < 14 || d.len > self.rings.buf_size {
                    return Err(self.guest_error(format!(
                        "tx descriptor {}: frame length {} is not between 14 and the buffer size {}",
                        self.tx_next, d.len, self.rings.buf_size
                    )));
                }
                let frame = &mut self.frame[..d.len as usize];
                self.ram.read_into(d.addr, frame).map_err(|e| {
                    Stop::Guest(format!("tx descriptor {}: buffer: {e}", self.tx_next))
                })?;
                if self.tracer.active() {
                    self.tracer.frame(Dir::Tx, frame);
                }
                if backend_ok {
                    backend
                        .send(frame)
                        .map_err(|e| Stop::Backend(e.to_string()))?;
                }
                self.tx_next = self.tx_next.wrapping_add(1);
                self.sh.stats.tx_frames.fetch_add(1, Ordering::Relaxed);
            }
            // Release the slots, then look again (the notification protocol:
            // store consumer, full fence, load producer).
            self.ram
                .store_release(tx + RING_CONSUMER, self.tx_next)
                .map_err(ram_err)?;
            fence(Ordering::SeqCst);
            if was_full {
                self.sh.tx_room.store(true, Ordering::Release);
                let _ = self.sh.wake.write(1);
            }
            moved += waiting;
            if moved >= BATCH {
                return Ok(true);
            }
        }
    }

    /// Polls the tx ring and the backend for [`POLL`] (each frame moved
    /// starts it again) with the tx ring's `polling` word set; then clears
    /// it, fences and looks at the tx ring once more (see hvt_abi::net).
    /// Between looks it yields the host CPU: on a host with few cores the
    /// vCPU thread (or the peer) is what it would otherwise take the CPU
    /// from, and a spinning I/O thread cost the guest a third of its
    /// HTTP throughput (docs/benchmarks-net.md).
    /// Returns (tx frames waiting, rx ring full).
    fn poll(&mut self, backend: &mut Backend) -> Result<(bool, bool), Stop> {
        let flag = self.rings.tx + RING_POLLING;
        let ram_err = |e| Stop::Guest(format!("tx ring: {e}"));
        self.ram.store_release(flag, 1).map_err(ram_err)?;
        let mut since = std::time::Instant::now();
        let mut state = (false, false);
        while since.elapsed() < POLL {
            let (tx, rx) = (self.tx_next, self.rx_next);
            state = (self.drain_tx(backend, true)?, self.fill_rx(backend)?);
            if state.0 || state.1 {
                break;
            }
            if (tx, rx) != (self.tx_next, self.rx_next) {
                since = std::time::Instant::now();
            } else {
                // SAFETY: sched_yield takes no arguments and only asks the
                // host scheduler to run another thread first.
                unsafe { libc::sched_yield() };
            }
        }
        self.ram.store_release(flag, 0).map_err(ram_err)?;
        fence(Ordering::SeqCst);
        let producer = self
            .ram
            .load_acquire(self.rings.tx + RING_PRODUCER)
            .map_err(ram_err)?;
        Ok((state.0 || producer != self.tx_next, state.1))
    }

    /// Moves frames from the backend into the rx ring; true if the ring is full.
    fn fill_rx(&mut self, backend: &mut Backend) -> Result<bool, Stop> {
        let rx = self.rings.rx;
        let ram_err = |e| Stop::Guest(format!("rx ring: {e}"));
        let mut published = 0;
        let result = loop {
            if published >= BATCH {
                break Ok(false);
            }
            let consumer = self.ram.load_acquire(rx + RING_CONSUMER).map_err(ram_err)?;
            if self.in_ring("rx", self.rx_next, consumer)? == self.rings.slots {
                break Ok(true);
            }
            let n = match backend.recv(&mut self.frame) {
                Ok(Some(n)) => n,
                Ok(None) => break Ok(false),
                Err(e) => break Err(Stop::Backend(e.to_string())),
            };
            if n < 14 || n > self.rings.buf_size as usize {
                self.sh.stats.rx_dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let d = self.desc(rx, self.rx_next)?;
            let frame = &self.frame[..n];
            self.ram
                .write_from(d.addr, frame)
                .map_err(|e| Stop::Guest(format!("rx descriptor {}: buffer: {e}", self.rx_next)))?;
            let len_gpa =
                rx + RING_DESCS + u64::from(self.rx_next & (self.rings.slots - 1)) * 16 + 8;
            self.ram.write_obj(len_gpa, &(n as u32)).map_err(ram_err)?;
            if self.tracer.active() {
                self.tracer.frame(Dir::Rx, &self.frame[..n]);
            }
            self.rx_next = self.rx_next.wrapping_add(1);
            self.ram
                .store_release(rx + RING_PRODUCER, self.rx_next)
                .map_err(ram_err)?;
            self.sh.rx_produced.store(self.rx_next, Ordering::Release);
            self.sh.stats.rx_frames.fetch_add(1, Ordering::Relaxed);
            published += 1;
        };
        if published > 0 {
            let _ = self.sh.wake.write(NET_READY);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::GuestMemory;
    use crate::net::backend::Passt;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    const RX: u64 = 0x1000;
    const TX: u64 = 0x3000;
    const BUFS: u64 = 0x10000;
    const SLOTS: u32 = 4;
    const BUF: u32 = 2048;

    fn shared() -> Shared {
        use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
        use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
        Shared {
            kick: EventFd::new(EFD_NONBLOCK).unwrap(),
            wake: EventFd::new(EFD_NONBLOCK).unwrap(),
            stop: EventFd::new(EFD_NONBLOCK).unwrap(),
            rings: std::sync::OnceLock::new(),
            rx_produced: AtomicU32::new(0),
            tx_room: AtomicBool::new(false),
            fault: std::sync::Mutex::new(None),
            stats: Default::default(),
            vcpu_thread: AtomicU64::new(0),
        }
    }

    /// Guest memory with both rings; rx descriptors point at their buffers.
    fn guest() -> GuestMemory {
        let mut mem = GuestMemory::new(0x10_0000).unwrap();
        for i in 0..SLOTS {
            let d = NetDesc {
                addr: BUFS + u64::from(i * BUF),
                len: 0,
                _pad: 0,
            };
            mem.write_obj(RX + RING_DESCS + u64::from(i) * 16, &d)
                .unwrap();
        }
        mem
    }

    fn server<'a>(sh: &'a Shared, mem: &GuestMemory) -> Server<'a> {
        Server {
            sh,
            // SAFETY: `mem` outlives the server in every test.
            ram: unsafe { mem.shared() },
            rings: Rings {
                rx: RX,
                tx: TX,
                slots: SLOTS,
                buf_size: BUF,
            },
            tx_next: 0,
            rx_next: 0,
            tracer: Tracer::new(None).unwrap(),
            frame: vec![0; MAX_HOST_FRAME],
        }
    }

    fn stream_frame(len: usize, fill: u8) -> Vec<u8> {
        let mut m = (len as u32).to_be_bytes().to_vec();
        m.extend(std::iter::repeat_n(fill, len));
        m
    }

    #[test]
    fn runts_and_oversized_host_frames_are_dropped_and_a_full_ring_waits() {
        let sh = shared();
        let mem = guest();
        let mut s = server(&sh, &mem);
        let (ours, mut host) = UnixStream::pair().unwrap();
        let mut backend = Backend::Passt(Passt::on_socket(ours));
        for (len, fill) in [(1, 1), (13, 2), (60, 3), (3000, 4), (64, 5), (0, 6)] {
            host.write_all(&stream_frame(len, fill)).unwrap();
        }
        for i in 0..4 {
            host.write_all(&stream_frame(100 + i, 7)).unwrap();
        }
        // 2 of the 4 slots take 60 and 64; then 2 more of the 100s fill the ring.
        assert!(matches!(s.fill_rx(&mut backend), Ok(true)));
        assert_eq!(sh.stats.rx_dropped.load(Ordering::Relaxed), 4);
        assert_eq!(mem.read_obj::<u32>(RX + RING_PRODUCER).unwrap(), 4);
        assert_eq!(mem.read_obj::<u32>(RX + RING_DESCS + 8).unwrap(), 60);
        assert_eq!(mem.slice(BUFS, 60).unwrap(), &[3u8; 60][..]);
        assert_eq!(mem.read_obj::<u32>(RX + RING_DESCS + 16 + 8).unwrap(), 64);
        // The guest takes one frame: one more fits.
        let mut mem = mem;
        mem.write_obj(RX + RING_CONSUMER, &1u32).unwrap();
        assert!(matches!(s.fill_rx(&mut backend), Ok(true)));
        assert_eq!(sh.rx_produced.load(Ordering::Relaxed), 5);
        // A consumer ahead of the producer is a broken guest.
        mem.write_obj(RX + RING_CONSUMER, &9u32).unwrap();
        assert!(
            matches!(s.fill_rx(&mut backend), Err(Stop::Guest(m)) if m.contains("rx ring: producer index 5"))
        );
    }

    #[test]
    fn tx_frames_reach_the_backend_and_bad_descriptors_stop_the_guest() {
        let sh = shared();
        let mut mem = guest();
        let (ours, mut host) = UnixStream::pair().unwrap();
        let mut backend = Backend::Passt(Passt::on_socket(ours));
        let mut s = server(&sh, &mem);
        mem.write(0x8000, &[0xab; 60]).unwrap();
        let d = NetDesc {
            addr: 0x8000,
            len: 60,
            _pad: 0,
        };
        mem.write_obj(TX + RING_DESCS, &d).unwrap();
        mem.write_obj(TX + RING_PRODUCER, &1u32).unwrap();
        assert!(s.drain_tx(&mut backend, true).is_ok());
        assert_eq!(mem.read_obj::<u32>(TX + RING_CONSUMER).unwrap(), 1);
        let mut got = [0u8; 64];
        host.read_exact(&mut got).unwrap();
        assert_eq!(&got[..4], &60u32.to_be_bytes());
        assert_eq!(&got[4..], &[0xab; 60][..]);

        let bad = [
            (
                NetDesc {
                    addr: 0x8000,
                    len: 13,
                    _pad: 0,
                },
                "frame length 13",
            ),
            (
                NetDesc {
                    addr: 0x8000,
                    len: BUF + 1,
                    _pad: 0,
                },
                "frame length 2049",
            ),
            (
                NetDesc {
                    addr: 0xfffc0,
                    len: 100,
                    _pad: 0,
                },
                "lies outside guest RAM",
            ),
            (
                NetDesc {
                    addr: u64::MAX,
                    len: 60,
                    _pad: 0,
                },
                "lies outside guest RAM",
            ),
        ];
        for (d, msg) in bad {
            let mut s = server(&sh, &mem);
            s.tx_next = 1;
            mem.write_obj(TX + RING_DESCS + 16, &d).unwrap();
            mem.write_obj(TX + RING_PRODUCER, &2u32).unwrap();
            assert!(
                matches!(s.drain_tx(&mut backend, true), Err(Stop::Guest(m)) if m.contains(msg)),
                "{msg}"
            );
        }
        let mut s = server(&sh, &mem);
        mem.write_obj(TX + RING_PRODUCER, &(SLOTS + 1)).unwrap();
        assert!(
            matches!(s.drain_tx(&mut backend, true), Err(Stop::Guest(m)) if m.contains("but the ring has 4 slots"))
        );
    }

    #[test]
    fn a_long_tx_ring_is_drained_in_batches_without_a_new_notification() {
        let sh = shared();
        let mut mem = guest();
        let (ours, mut host) = UnixStream::pair().unwrap();
        let mut backend = Backend::Passt(Passt::on_socket(ours));
        let reader = std::thread::spawn(move || {
            let mut all = vec![0u8; 300 * 64];
            host.read_exact(&mut all).map(|()| all.len())
        });
        let mut s = server(&sh, &mem);
        s.rings.slots = 512;
        for i in 0..300u64 {
            let d = NetDesc {
                addr: 0x8000,
                len: 60,
                _pad: 0,
            };
            mem.write_obj(TX + RING_DESCS + i * 16, &d).unwrap();
        }
        mem.write_obj(TX + RING_PRODUCER, &300u32).unwrap();
        assert!(matches!(s.drain_tx(&mut backend, true), Ok(true)));
        assert!(matches!(s.drain_tx(&mut backend, true), Ok(false)));
        assert_eq!(mem.read_obj::<u32>(TX + RING_CONSUMER).unwrap(), 300);
        assert_eq!(sh.stats.tx_frames.load(Ordering::Relaxed), 300);
        drop(backend);
        assert_eq!(reader.join().unwrap().unwrap(), 300 * 64);
    }
}
