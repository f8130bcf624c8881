//! Pipes (`pipe2`) and connected Unix stream sockets (`socketpair`), both
//! built on one byte buffer with reader and writer counts.
//!
//! Like every file here they never block: an empty or full buffer answers
//! `EAGAIN`, every change bumps the buffer's event sequence and calls
//! [`crate::sched::notify_io`], and the system-call layer does the waiting.

use super::{File, Stat, POLLERR, POLLHUP, POLLIN, POLLOUT, POLLRDHUP, S_IFIFO, S_IFSOCK};
use crate::errno::*;
use alloc::collections::VecDeque;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use spin::Mutex;

/// Capacity of a pipe or socket buffer (Linux's default pipe size).
pub const PIPE_CAPACITY: usize = 64 * 1024;
/// Writes up to this size are atomic.
const PIPE_BUF: usize = 4096;

static NEXT_INO: AtomicU64 = AtomicU64::new(1000);

struct Buffer {
    data: VecDeque<u8>,
    readers: usize,
    writers: usize,
    seq: u64,
}

/// One direction of bytes.
pub struct Pipe {
    buf: Mutex<Buffer>,
    ino: u64,
}

impl Pipe {
    pub fn new() -> Arc<Pipe> {
        Arc::new(Pipe {
            buf: Mutex::new(Buffer {
                data: VecDeque::new(),
                readers: 0,
                writers: 0,
                seq: 1,
            }),
            ino: NEXT_INO.fetch_add(1, Ordering::Relaxed),
        })
    }

    fn changed(&self, b: &mut Buffer) {
        b.seq += 1;
    }

    fn open(&self, reader: bool, writer: bool) {
        let mut b = self.buf.lock();
        b.readers += reader as usize;
        b.writers += writer as usize;
    }

    fn close(&self, reader: bool, writer: bool) {
        {
            let mut b = self.buf.lock();
            b.readers -= reader as usize;
            b.writers -= writer as usize;
            self.changed(&mut b);
        }
        crate::sched::notify_io();
    }

    fn read(&self, out: &mut [u8]) -> Result<usize, Errno> {
        let n = {
            let mut b = self.buf.lock();
            if b.data.is_empty() {
                return if b.writers == 0 || out.is_empty() {
                    Ok(0)
                } else {
                    Err(EAGAIN)
                };
            }
            let n = out.len().min(b.data.len());
            for (o, v) in out.iter_mut().zip(b.data.drain(..n)) {
                *o = v;
            }
            self.changed(&mut b);
            n
        };
        crate::sched::notify_io();
        Ok(n)
    }

    fn write(&self, src: &[u8]) -> Result<usize, Errno> {
        let n = {
            let mut b = self.buf.lock();
            if b.readers == 0 {
                return Err(EPIPE);
            }
            let space = PIPE_CAPACITY - b.data.len();
            if space == 0 || (src.len() <= PIPE_BUF && space < src.len()) {
                return Err(EAGAIN);
            }
            let n = src.len().min(space);
            b.data.extend(&src[..n]);
            self.changed(&mut b);
            n
        };
        crate::sched::notify_io();
        Ok(n)
    }

    /// (bytes buffered, readers, writers, seq)
    fn state(&self) -> (usize, usize, usize, u64) {
        let b = self.buf.lock();
        (b.data.len(), b.readers, b.writers, b.seq)
    }
}

/// One end of a pipe.
pub struct PipeEnd {
    pipe: Arc<Pipe>,
    write: bool,
}

/// A new pipe: (read end, write end).
pub fn pipe() -> (PipeEnd, PipeEnd) {
    let p = Pipe::new();
    p.open(true, false);
    p.open(false, true);
    (
        PipeEnd {
            pipe: p.clone(),
            write: false,
        },
        PipeEnd {
            pipe: p,
            write: true,
        },
    )
}

impl Drop for PipeEnd {
    fn drop(&mut self) {
        self.pipe.close(!self.write, self.write);
    }
}

impl File for PipeEnd {
    fn read(&self, buf: &mut [u8]) -> Result<usize, Errno> {
        if self.write {
            return Err(EBADF);
        }
        self.pipe.read(buf)
    }
    fn write(&self, buf: &[u8]) -> Result<usize, Errno> {
        if !self.write {
            return Err(EBADF);
        }
        self.pipe.write(buf)
    }
    fn stat(&self) -> Stat {
        Stat {
            dev: 12,
            ino: self.pipe.ino,
            nlink: 1,
            mode: S_IFIFO | 0o600,
            blksize: 4096,
            ..Stat::default()
        }
    }
    fn poll_ready(&self) -> u16 {
        let (len, readers, writers, _) = self.pipe.state();
        if self.write {
            if readers == 0 {
                POLLOUT | POLLERR
            } else if len < PIPE_CAPACITY {
                POLLOUT
            } else {
                0
            }
        } else {
            let mut r = if len > 0 { POLLIN } else { 0 };
            if writers == 0 {
                r |= POLLHUP;
            }
            r
        }
    }
    fn event_seq(&self) -> u64 {
        self.pipe.state().3
    }
    fn can_block(&self) -> bool {
        true
    }
}

/// One end of a connected `AF_UNIX` `SOCK_STREAM` pair.
pub struct UnixStream {
    rx: Arc<Pipe>,
    tx: Arc<Pipe>,
    shut_rd: AtomicBool,
    shut_wr: AtomicBool,
}

/// A connected pair of Unix stream sockets.
pub fn socketpair() -> (UnixStream, UnixStream) {
    let a_to_b = Pipe::new();
    let b_to_a = Pipe::new();
    for p in [&a_to_b, &b_to_a] {
        p.open(true, true);
    }
    let a = UnixStream {
        rx: b_to_a.clone(),
        tx: a_to_b.clone(),
        shut_rd: AtomicBool::new(false),
        shut_wr: AtomicBool::new(false),
    };
    let b = UnixStream {
        rx: a_to_b,
        tx: b_to_a,
        shut_rd: AtomicBool::new(false),
        shut_wr: AtomicBool::new(false),
    };
    (a, b)
}

pub const SHUT_RD: u32 = 0;
pub const SHUT_WR: u32 = 1;
pub const SHUT_RDWR: u32 = 2;

impl UnixStream {
    fn stop_reading(&self) {
        if !self.shut_rd.swap(true, Ordering::AcqRel) {
            self.rx.close(true, false);
        }
    }
    fn stop_writing(&self) {
        if !self.shut_wr.swap(true, Ordering::AcqRel) {
            self.tx.close(false, true);
        }
    }
}

impl Drop for UnixStream {
    fn drop(&mut self) {
        self.stop_reading();
        self.stop_writing();
    }
}

impl File for UnixStream {
    fn read(&self, buf: &mut [u8]) -> Result<usize, Errno> {
        if self.shut_rd.load(Ordering::Acquire) {
            return Ok(0);
        }
        self.rx.read(buf)
    }
    fn write(&self, buf: &[u8]) -> Result<usize, Errno> {
        if self.shut_wr.load(Ordering::Acquire) {
            return Err(EPIPE);
        }
        self.tx.write(buf)
    }
    fn stat(&self) -> Stat {
        Stat {
            dev: 8,
            ino: self.rx.ino,
            nlink: 1,
            mode: S_IFSOCK | 0o777,
            blksize: 4096,
            ..Stat::default()
        }
    }
    fn poll_ready(&self) -> u16 {
        let (rlen, _, rwriters, _) = self.rx.state();
        let (tlen, treaders, _, _) = self.tx.state();
        let mut r = 0;
        let eof = rwriters == 0 || self.shut_rd.load(Ordering::Acquire);
        if rlen > 0 || eof {
            r |= POLLIN;
        }
        if eof {
            r |= POLLRDHUP;
        }
        if !self.shut_wr.load(Ordering::Acquire) && (tlen < PIPE_CAPACITY || treaders == 0) {
            r |= POLLOUT;
        }
        if eof && (treaders == 0 || self.shut_wr.load(Ordering::Acquire)) {
            r |= POLLHUP;
        }
        r
    }
    fn event_seq(&self) -> u64 {
        self.rx.state().3.wrapping_add(self.tx.state().3 << 32)
    }
    fn can_block(&self) -> bool {
        true
    }
    fn shutdown(&self, how: u32) -> Result<(), Errno> {
        match how {
            SHUT_RD => self.stop_reading(),
            SHUT_WR => self.stop_writing(),
            SHUT_RDWR => {
                self.stop_reading();
                self.stop_writing();
            }
            _ => return Err(EINVAL),
        }
        Ok(())
    }
    fn is_socket(&self) -> bool {
        true
    }
}
