//! `eventfd`: a 64-bit counter that readers drain and writers add to
//! (tokio's and mio's waker).

use super::{File, Stat, POLLIN, POLLOUT};
use crate::errno::*;
use spin::Mutex;

const MAX: u64 = u64::MAX - 1;

pub struct EventFd {
    state: Mutex<(u64, u64)>, // (counter, event sequence)
    semaphore: bool,
}

impl EventFd {
    pub fn new(initval: u64, semaphore: bool) -> EventFd {
        EventFd {
            state: Mutex::new((initval, 1)),
            semaphore,
        }
    }
}

impl File for EventFd {
    fn read(&self, buf: &mut [u8]) -> Result<usize, Errno> {
        if buf.len() < 8 {
            return Err(EINVAL);
        }
        let v = {
            let mut s = self.state.lock();
            if s.0 == 0 {
                return Err(EAGAIN);
            }
            let v = if self.semaphore { 1 } else { s.0 };
            s.0 -= v;
            s.1 += 1;
            v
        };
        buf[..8].copy_from_slice(&v.to_ne_bytes());
        crate::sched::notify_io();
        Ok(8)
    }
    fn write(&self, buf: &[u8]) -> Result<usize, Errno> {
        let Some(b) = buf.get(..8) else {
            return Err(EINVAL);
        };
        let v = u64::from_ne_bytes(b.try_into().map_err(|_| EINVAL)?);
        if v == u64::MAX {
            return Err(EINVAL);
        }
        {
            let mut s = self.state.lock();
            if MAX - s.0 < v {
                return Err(EAGAIN);
            }
            s.0 += v;
            s.1 += 1;
        }
        crate::sched::notify_io();
        Ok(8)
    }
    fn stat(&self) -> Stat {
        Stat {
            dev: 13,
            ino: 1,
            nlink: 1,
            mode: 0o600,
            blksize: 4096,
            ..Stat::default()
        }
    }
    fn poll_ready(&self) -> u16 {
        let c = self.state.lock().0;
        (if c > 0 { POLLIN } else { 0 }) | (if c < MAX { POLLOUT } else { 0 })
    }
    fn event_seq(&self) -> u64 {
        self.state.lock().1
    }
    fn can_block(&self) -> bool {
        true
    }
}
