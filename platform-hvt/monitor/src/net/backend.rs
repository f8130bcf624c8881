//! The host side of the network device: a tap device, or `passt`
//! (user-mode networking) over a Unix stream socket.
//!
//! Both are non-blocking file descriptors the I/O thread polls. A tap fd
//! carries one Ethernet frame per `read`/`write` (`IFF_NO_PI`: no packet
//! information header). `passt` speaks QEMU's stream protocol: every frame
//! is preceded by its length as a 4-byte big-endian number.
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use super::config::PortForward;

/// The largest frame either backend hands over (a tap's or passt's 64 KiB).
pub const MAX_HOST_FRAME: usize = 65536 + 14;

/// `TUNSETIFF` = `_IOW('T', 202, int)`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;

/// The file descriptor number passt finds its socket on (`--fd`).
const PASST_FD: RawFd = 3;

/// A host-side network backend.
#[derive(Debug)]
pub enum Backend {
    Tap(File),
    Passt(Passt),
}

/// A running `passt` and our end of its socket.
#[derive(Debug)]
pub struct Passt {
    sock: UnixStream,
    child: Child,
    /// Bytes read from the socket that do not yet make a whole frame.
    pending: Vec<u8>,
    /// The frame being sent, with its length prefix (reused).
    out: Vec<u8>,
}

impl Backend {
    /// Opens the existing tap device `name` (`TUNSETIFF`, `IFF_TAP | IFF_NO_PI`).
    pub fn open_tap(name: &str) -> Result<Backend, String> {
        // TUNSETIFF would create a missing device (as root): only attach.
        if !std::path::Path::new("/sys/class/net").join(name).exists() {
            return Err(format!(
                "--net tap:{name}: there is no network interface {name} (create it first: ip tuntap add {name} mode tap)"
            ));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(|e| format!("--net tap:{name}: cannot open /dev/net/tun: {e}"))?;
        // struct ifreq: a 16-byte name, then the flags (a short) in a 24-byte union.
        let mut ifr = [0u8; 40];
        ifr[..name.len()].copy_from_slice(name.as_bytes());
        ifr[16..18].copy_from_slice(&(IFF_TAP | IFF_NO_PI).to_ne_bytes());
        // SAFETY: TUNSETIFF reads (and may write back) one struct ifreq,
        // which `ifr` is large enough for and outlives the call.
        let r = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, ifr.as_mut_ptr()) };
        if r < 0 {
            let e = io::Error::last_os_error();
            return Err(format!(
                "--net tap:{name}: cannot attach to the tap device: {e} (create it first: ip tuntap add {name} mode tap)"
            ));
        }
        Ok(Backend::Tap(file))
    }

    /// Starts `passt` in the foreground on one end of a socket pair, with
    /// the port forwards; passt quits when that socket closes (`--one-off`),
    /// so it never outlives the monitor, even one killed by a signal.
    pub fn start_passt(ports: &[PortForward], mtu: u32) -> Result<Backend, String> {
        let (ours, theirs) = UnixStream::pair()
            .map_err(|e| format!("--net user: cannot create a socket pair: {e}"))?;
        let mut cmd = Command::new("passt");
        cmd.args(["--foreground", "--quiet", "--one-off", "--fd", "3"])
            .args(["--mtu", &mtu.to_string()]);
        for p in ports {
            cmd.arg(if p.udp { "-u" } else { "-t" })
                .arg(format!("{}:{}", p.host, p.guest));
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::null());
        if std::env::var_os(crate::vm::DEBUG_ENV).is_none() {
            cmd.stderr(Stdio::null());
        }
        let fd = theirs.as_raw_fd();
        // SAFETY: the closure runs in the child between fork and exec and
        // only makes async-signal-safe calls (dup2, prctl, getppid).
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(fd, PASST_FD) < 0 {
                    return Err(io::Error::last_os_error());
                }
                // Also end passt if the thread that started it dies (it
                // quits on its own when the socket closes, too).
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                "--net user needs passt (the Debian/Ubuntu package `passt`), which is not in PATH"
                    .to_string()
            } else {
                format!("--net user: cannot start passt: {e}")
            }
        })?;
        drop(theirs);
        ours.set_nonblocking(true)
            .map_err(|e| format!("--net user: {e}"))?;
        Ok(Backend::Passt(Passt {
            sock: ours,
            child,
            pending: Vec::new(),
            out: Vec::new(),
        }))
    }

    /// The descriptor to poll for incoming frames.
    pub fn fd(&self) -> RawFd {
        match self {
            Backend::Tap(f) => f.as_raw_fd(),
            Backend::Passt(p) => p.sock.as_raw_fd(),
        }
    }

    /// Whether a whole frame is already buffered (poll would not say so).
    pub fn has_buffered_frame(&self) -> bool {
        match self {
            Backend::Tap(_) => false,
            Backend::Passt(p) => frame_len(&p.pending).is_some_and(|n| p.pending.len() >= 4 + n),
        }
    }

    /// Sends one frame. A tap that cannot take it now drops it (as a full
    /// NIC queue would); `Err` means the backend is gone.
    pub fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        match self {
            Backend::Tap(f) => match f.write(frame) {
                Ok(_) => Ok(()),
                Err(e) if is_transient(&e) => Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EIO) => Ok(()), // interface down
                Err(e) => Err(e),
            },
            Backend::Passt(p) => {
                p.out.clear();
                p.out.extend_from_slice(&(frame.len() as u32).to_be_bytes());
                p.out.extend_from_slice(frame);
                write_fully(&mut p.sock, &p.out)
            }
        }
    }

    /// Takes the next frame into `buf` (at least [`MAX_HOST_FRAME`] bytes):
    /// its length, or `None` when nothing is waiting. `Err`: the backend is gone.
    pub fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match self {
            Backend::Tap(f) => match f.read(buf) {
                Ok(n) => Ok(Some(n)),
                Err(e) if is_transient(&e) => Ok(None),
                Err(e) => Err(e),
            },
            Backend::Passt(p) => p.recv(buf),
        }
    }
}

impl Passt {
    /// A backend on an already connected socket (the unit tests' fake passt).
    #[cfg(test)]
    pub(super) fn on_socket(sock: UnixStream) -> Passt {
        sock.set_nonblocking(true).unwrap();
        Passt {
            sock,
            child: Command::new("true").spawn().unwrap(),
            pending: Vec::new(),
            out: Vec::new(),
        }
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        loop {
            if let Some(n) = frame_len(&self.pending) {
                if n > MAX_HOST_FRAME.min(buf.len()) {
                    return Err(io::Error::other(format!(
                        "passt sent a frame of {n} bytes, more than the stream protocol allows"
                    )));
                }
                if self.pending.len() >= 4 + n {
                    buf[..n].copy_from_slice(&self.pending[4..4 + n]);
                    self.pending.drain(..4 + n);
                    return Ok(Some(n));
                }
            }
            let mut chunk = [0u8; 16384];
            match self.sock.read(&mut chunk) {
                Ok(0) => return Err(io::Error::other("passt closed the connection")),
                Ok(n) => self.pending.extend_from_slice(&chunk[..n]),
                Err(e) if is_transient(&e) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for Passt {
    fn drop(&mut self) {
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The length in a stream-protocol header at the start of `b`, if complete.
fn frame_len(b: &[u8]) -> Option<usize> {
    let h: [u8; 4] = b.get(..4)?.try_into().ok()?;
    Some(u32::from_be_bytes(h) as usize)
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// Writes all of `msg` to the non-blocking socket, waiting (at most 5 s
/// per stall) when passt does not read.
fn write_fully(sock: &mut UnixStream, msg: &[u8]) -> io::Result<()> {
    let mut done = 0;
    while done < msg.len() {
        match sock.write(&msg[done..]) {
            Ok(0) => return Err(io::Error::other("passt closed the connection")),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let mut pfd = libc::pollfd {
                    fd: sock.as_raw_fd(),
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: one valid pollfd, for the duration of the call.
                if unsafe { libc::poll(&mut pfd, 1, 5000) } == 0 {
                    return Err(io::Error::other("passt stopped reading frames"));
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_frames_are_split_at_their_length_prefix() {
        let (a, mut b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let child = Command::new("true").spawn().unwrap();
        let mut p = Passt {
            sock: a,
            child,
            pending: Vec::new(),
            out: Vec::new(),
        };
        let mut buf = vec![0u8; MAX_HOST_FRAME];
        assert_eq!(p.recv(&mut buf).unwrap(), None);
        b.write_all(&[0, 0, 0, 3, 1, 2]).unwrap();
        assert_eq!(p.recv(&mut buf).unwrap(), None);
        b.write_all(&[3, 0, 0, 0, 1, 9]).unwrap();
        assert_eq!(p.recv(&mut buf).unwrap(), Some(3));
        assert_eq!(&buf[..3], &[1, 2, 3]);
        assert_eq!(p.recv(&mut buf).unwrap(), Some(1));
        assert_eq!(buf[0], 9);
        b.write_all(&[0xff, 0, 0, 0]).unwrap();
        assert!(p.recv(&mut buf).is_err());
    }
}
