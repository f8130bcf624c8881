//! The I/O thread: serves the guest's rings while the vCPU runs.
//!
//! It sleeps in `poll(2)` on the stop and kick eventfds and on the
//! backend's fd (not while the rx ring is full: then it looks again every
//! millisecond, leaving frames queued on the host side). Each wake-up it
//! drains the tx ring to the backend and fills the rx ring from it. See
//! `hvt_abi::net` for the ring protocol and its memory ordering.
use std::os::fd::AsRawFd;
use std::sync::atomic::{fence, Ordering};

use hvt_abi::net::{NetDesc, NET_READY, RING_CONSUMER, RING_DESCS, RING_PRODUCER};

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
    loop {
        let listen_backend = backend_ok && !rx_full;
        let timeout = if backend_ok && (rx_full || backend.has_buffered_frame()) {
            if rx_full {
                1
            } else {
                0
            }
        } else {
            -1
        };
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
        let result = s.drain_tx(&mut backend, backend_ok).and_then(|()| {
            if backend_ok {
                s.fill_rx(&mut backend).map(|full| rx_full = full)
            } else {
                Ok(())
            }
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

    /// Sends every frame the guest published in the tx ring.
    fn drain_tx(&mut self, backend: &mut Backend, backend_ok: bool) -> Result<(), Stop> {
        let tx = self.rings.tx;
        let ram_err = |e| Stop::Guest(format!("tx ring: {e}"));
        let mut moved = 0;
        loop {
            let producer = self.ram.load_acquire(tx + RING_PRODUCER).map_err(ram_err)?;
            let waiting = self.in_ring("tx", producer, self.tx_next)?;
            if waiting == 0 {
                return Ok(());
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
                return Ok(());
            }
        }
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
