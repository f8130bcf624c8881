//! Device files and the console: `/dev/null`, `/dev/zero`, `/dev/urandom`
//! (and `/dev/random`), and stdin/stdout/stderr.

use super::{File, Stat, POLLIN, POLLOUT, S_IFCHR};
use crate::errno::*;
use crate::platform::Stream;

fn chr(rdev: u64, ino: u64) -> Stat {
    Stat {
        dev: 5,
        ino,
        nlink: 1,
        mode: S_IFCHR | 0o666,
        rdev,
        blksize: 4096,
        ..Stat::default()
    }
}

pub struct Null;
impl File for Null {
    fn read(&self, _: &mut [u8]) -> Result<usize, Errno> {
        Ok(0)
    }
    fn write(&self, b: &[u8]) -> Result<usize, Errno> {
        Ok(b.len())
    }
    fn seek(&self, _: i64, _: u32) -> Result<u64, Errno> {
        Ok(0)
    }
    fn stat(&self) -> Stat {
        chr((1 << 8) | 3, 103)
    }
}

pub struct Zero;
impl File for Zero {
    fn read(&self, b: &mut [u8]) -> Result<usize, Errno> {
        b.fill(0);
        Ok(b.len())
    }
    fn write(&self, b: &[u8]) -> Result<usize, Errno> {
        Ok(b.len())
    }
    fn seek(&self, _: i64, _: u32) -> Result<u64, Errno> {
        Ok(0)
    }
    fn stat(&self) -> Stat {
        chr((1 << 8) | 5, 105)
    }
}

pub struct Random;
impl File for Random {
    fn read(&self, b: &mut [u8]) -> Result<usize, Errno> {
        crate::random::fill(b);
        Ok(b.len())
    }
    fn write(&self, b: &[u8]) -> Result<usize, Errno> {
        Ok(b.len())
    }
    fn seek(&self, _: i64, _: u32) -> Result<u64, Errno> {
        Ok(0)
    }
    fn stat(&self) -> Stat {
        chr((1 << 8) | 9, 109)
    }
}

/// The console: fd 0 reads the monitor's stdin, fds 1 and 2 write its stdout and stderr.
pub struct Console {
    pub stream: Option<Stream>,
}

pub const TIOCGWINSZ: u64 = 0x5413;
pub const TCGETS: u64 = 0x5401;

impl File for Console {
    fn read(&self, b: &mut [u8]) -> Result<usize, Errno> {
        match self.stream {
            None => Ok(crate::console::read_stdin(b)),
            Some(_) => Err(EBADF),
        }
    }
    fn write(&self, b: &[u8]) -> Result<usize, Errno> {
        match self.stream {
            Some(s) => {
                crate::console::write_stream(s, b);
                Ok(b.len())
            }
            None => Err(EBADF),
        }
    }
    fn stat(&self) -> Stat {
        // A pipe-like character device: not a terminal (ioctl gives ENOTTY).
        chr(136 << 8, 200 + self.stream.map_or(0, |s| s as u64 + 1))
    }
    fn ioctl(&self, _request: u64, _arg: u64) -> Result<i64, Errno> {
        Err(ENOTTY)
    }
    fn poll_ready(&self) -> u16 {
        match self.stream {
            Some(_) => POLLOUT,
            None => POLLIN,
        }
    }
}
