//! `epoll`: a set of (fd, interest) entries scanned against each file's
//! readiness. Level-triggered entries report while ready; edge-triggered
//! ones report when the file's event sequence moved since they last
//! reported; one-shot entries disarm after reporting until `EPOLL_CTL_MOD`.
//! Waiting is the one mechanism of the scheduler ([`crate::sched::wait_io`]).

use super::{File, Stat, POLLIN};
use crate::errno::*;
use alloc::collections::BTreeMap;
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use spin::Mutex;

pub const EPOLLIN: u32 = 0x1;
pub const EPOLLOUT: u32 = 0x4;
pub const EPOLLERR: u32 = 0x8;
pub const EPOLLHUP: u32 = 0x10;
pub const EPOLLRDHUP: u32 = 0x2000;
pub const EPOLLEXCLUSIVE: u32 = 1 << 28;
pub const EPOLLWAKEUP: u32 = 1 << 29;
pub const EPOLLONESHOT: u32 = 1 << 30;
pub const EPOLLET: u32 = 1 << 31;

pub const EPOLL_CTL_ADD: u64 = 1;
pub const EPOLL_CTL_DEL: u64 = 2;
pub const EPOLL_CTL_MOD: u64 = 3;

struct Entry {
    file: Weak<dyn File>,
    events: u32,
    data: u64,
    /// Event sequence of the file when this entry last reported (ET).
    last_seq: Option<u64>,
    armed: bool,
}

pub struct Epoll {
    entries: Mutex<BTreeMap<i32, Entry>>,
}

impl Epoll {
    pub fn new() -> Epoll {
        Epoll {
            entries: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn ctl(
        &self,
        op: u64,
        fd: i32,
        file: &Arc<dyn File>,
        events: u32,
        data: u64,
    ) -> Result<(), Errno> {
        let mut e = self.entries.lock();
        // Entries of files closed since are gone (Linux drops them with the file).
        e.retain(|_, en| en.file.strong_count() > 0);
        match op {
            EPOLL_CTL_ADD => {
                if e.contains_key(&fd) {
                    return Err(EEXIST);
                }
                e.insert(
                    fd,
                    Entry {
                        file: Arc::downgrade(file),
                        events,
                        data,
                        last_seq: None,
                        armed: true,
                    },
                );
            }
            EPOLL_CTL_MOD => {
                let en = e.get_mut(&fd).ok_or(ENOENT)?;
                en.events = events;
                en.data = data;
                en.last_seq = None;
                en.armed = true;
            }
            EPOLL_CTL_DEL => {
                e.remove(&fd).ok_or(ENOENT)?;
            }
            _ => return Err(EINVAL),
        }
        Ok(())
    }

    /// Collect up to `max` ready (events, data) pairs, updating ET/oneshot state.
    pub fn collect(&self, max: usize) -> Vec<(u32, u64)> {
        let mut out = Vec::new();
        super::new_scan();
        let mut e = self.entries.lock();
        e.retain(|_, en| en.file.strong_count() > 0);
        for en in e.values_mut() {
            if out.len() >= max {
                break;
            }
            if !en.armed {
                continue;
            }
            let Some(f) = en.file.upgrade() else { continue };
            let ready = f.poll_ready() as u32 & (en.events | EPOLLERR | EPOLLHUP);
            if ready == 0 {
                continue;
            }
            if en.events & EPOLLET != 0 {
                let seq = f.event_seq();
                if en.last_seq == Some(seq) {
                    continue;
                }
                en.last_seq = Some(seq);
            }
            if en.events & EPOLLONESHOT != 0 {
                en.armed = false;
            }
            out.push((ready, en.data));
        }
        out
    }

    fn any_ready(&self) -> bool {
        super::new_scan();
        let e = self.entries.lock();
        e.values().any(|en| {
            en.armed
                && en
                    .file
                    .upgrade()
                    .is_some_and(|f| f.poll_ready() as u32 & (en.events | EPOLLERR | EPOLLHUP) != 0)
        })
    }
}

impl Default for Epoll {
    fn default() -> Self {
        Self::new()
    }
}

impl File for Epoll {
    fn stat(&self) -> Stat {
        Stat {
            dev: 13,
            ino: 2,
            nlink: 1,
            mode: 0o600,
            blksize: 4096,
            ..Stat::default()
        }
    }
    fn poll_ready(&self) -> u16 {
        if self.any_ready() {
            POLLIN
        } else {
            0
        }
    }
    fn as_epoll(&self) -> Option<&Epoll> {
        Some(self)
    }
}
