//! Kernel console output: `kprint!`/`kprintln!` to stderr, and the bounce
//! buffer that hands app bytes (which may live in virtual-only regions) to
//! the platform, which needs identity-mapped memory.

use crate::platform::Stream;
use core::fmt::{self, Write};
use spin::Mutex;

const BOUNCE: usize = 4096;
static BOUNCE_BUF: Mutex<[u8; BOUNCE]> = Mutex::new([0; BOUNCE]);

/// Write bytes from anywhere (app memory included) to a console stream
/// (host unit tests, which have no platform, print on their stderr).
pub fn write_stream(stream: Stream, data: &[u8]) {
    #[cfg(test)]
    if crate::try_platform().is_none() {
        std::eprint!("{}", alloc::string::String::from_utf8_lossy(data));
        return;
    }
    let mut buf = BOUNCE_BUF.lock();
    for chunk in data.chunks(BOUNCE) {
        buf[..chunk.len()].copy_from_slice(chunk);
        crate::platform().console_write(stream, &buf[..chunk.len()]);
    }
}

/// Read console input into app memory; 0 = end of input.
pub fn read_stdin(out: &mut [u8]) -> usize {
    let mut buf = BOUNCE_BUF.lock();
    let n = out.len().min(BOUNCE);
    let got = crate::platform().console_read(&mut buf[..n]).min(n);
    out[..got].copy_from_slice(&buf[..got]);
    got
}

/// Formats into a small stack buffer and writes to stderr in pieces.
struct KernelWriter {
    buf: [u8; 256],
    len: usize,
}

impl KernelWriter {
    fn flush(&mut self) {
        if self.len > 0 {
            write_stream(Stream::Stderr, &self.buf[..self.len]);
            self.len = 0;
        }
    }
}

impl Write for KernelWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len == self.buf.len() {
                self.flush();
            }
            self.buf[self.len] = b;
            self.len += 1;
        }
        Ok(())
    }
}

pub fn print_fmt(args: fmt::Arguments) {
    let mut w = KernelWriter {
        buf: [0; 256],
        len: 0,
    };
    let _ = w.write_fmt(args);
    w.flush();
}

/// Print to the console's stderr stream.
#[macro_export]
macro_rules! kprint {
    ($($arg:tt)*) => { $crate::console::print_fmt(format_args!($($arg)*)) };
}

#[macro_export]
macro_rules! kprintln {
    () => { $crate::kprint!("\n") };
    ($($arg:tt)*) => { $crate::console::print_fmt(format_args!("{}\n", format_args!($($arg)*))) };
}
