//! Network namespaces for the network tests: a namespace the test makes,
//! with a tap device in it (the guest's link), an address on the host side
//! of the tap, and optionally dnsmasq serving DHCP and DNS on it. The
//! guest's monitor runs inside the namespace; clients (curl, wrk, nc, ping)
//! run there too, so nothing talks to any address outside it. Dropping the
//! fixture stops dnsmasq and deletes the namespace (and the tap with it).

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{tool, Outcome};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The host side of the link inside the namespace.
pub const HOST_IP: &str = "10.0.3.1";
/// What dnsmasq leases (one guest: the first address of the range).
pub const DHCP_FIRST: &str = "10.0.3.50";
/// A name dnsmasq answers, and its address.
pub const DNS_NAME: &str = "service.unikernel.test";
pub const DNS_ADDR: &str = "10.0.3.7";

pub struct NetNs {
    pub name: String,
    pub tap: String,
    dnsmasq: Option<Child>,
}

fn skipped(test: &str, why: &str) {
    let line = format!("SKIPPED {test}: {why}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
    let _ = std::io::stdout().write_all(line.as_bytes());
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let o = cmd
        .output()
        .map_err(|e| format!("{:?}: {e}", cmd.get_program()))?;
    if o.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{:?} {:?}: {}",
            cmd.get_program(),
            cmd.get_args().collect::<Vec<_>>(),
            String::from_utf8_lossy(&o.stderr).trim()
        ))
    }
}

/// Whether `prog` is on PATH.
pub fn have(prog: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {prog}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl NetNs {
    /// A new namespace with tap `tap0` at [`HOST_IP`]/24; `None` (after a
    /// SKIPPED line) where namespaces or taps cannot be made here.
    pub fn new(test: &str) -> Option<NetNs> {
        if !have("ip") {
            skipped(test, "iproute2 (ip) is not installed");
            return None;
        }
        let name = format!(
            "ukt{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let ns = NetNs {
            name: name.clone(),
            tap: "tap0".into(),
            dnsmasq: None,
        };
        let steps: [&[&str]; 5] = [
            &["netns", "add", &name],
            &["-n", &name, "link", "set", "lo", "up"],
            &["-n", &name, "tuntap", "add", "tap0", "mode", "tap"],
            &[
                "-n",
                &name,
                "addr",
                "add",
                &format!("{HOST_IP}/24"),
                "dev",
                "tap0",
            ],
            &["-n", &name, "link", "set", "tap0", "up"],
        ];
        for s in steps {
            if let Err(e) = run(Command::new("ip").args(s)) {
                skipped(
                    test,
                    &format!("cannot set up a network namespace with a tap ({e})"),
                );
                return None;
            }
        }
        Some(ns)
    }

    /// `prog` run inside the namespace.
    pub fn command(&self, prog: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(prog);
        c
    }

    /// Start dnsmasq on the tap: DHCP from [`DHCP_FIRST`], itself as the
    /// DNS server (answering [`DNS_NAME`] with [`DNS_ADDR`]).
    pub fn start_dnsmasq(&mut self) -> Result<(), String> {
        let lease = std::env::temp_dir().join(format!("{}.leases", self.name));
        let child = self
            .command("dnsmasq")
            .args([
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--interface=tap0",
                "--except-interface=lo",
                &format!("--dhcp-range={DHCP_FIRST},10.0.3.99,255.255.255.0,1h"),
                // The hvt device's MAC always gets the first address.
                &format!("--dhcp-host=02:75:6b:00:00:01,{DHCP_FIRST}"),
                &format!("--dhcp-option=option:router,{HOST_IP}"),
                &format!("--dhcp-option=option:dns-server,{HOST_IP}"),
                &format!("--host-record={DNS_NAME},{DNS_ADDR}"),
                // Authoritative for the test domain: no AAAA is NODATA, not REFUSED.
                "--local=/unikernel.test/",
                &format!("--dhcp-leasefile={}", lease.display()),
                "--pid-file=",
                "--log-facility=-",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("dnsmasq: {e}"))?;
        self.dnsmasq = Some(child);
        // Ready when it listens on the DHCP port: a guest that boots
        // sooner loses its first DISCOVER, and the next comes 10 s later.
        let start = std::time::Instant::now();
        loop {
            let out = self
                .command("ss")
                .args(["-Hlun", "sport", "=", ":67"])
                .output()
                .map_err(|e| format!("ss: {e}"))?;
            if !String::from_utf8_lossy(&out.stdout).trim().is_empty() {
                return Ok(());
            }
            if let Some(Ok(Some(st))) = self.dnsmasq.as_mut().map(|c| c.try_wait()) {
                return Err(format!("dnsmasq exited at start: {st}"));
            }
            if start.elapsed() > Duration::from_secs(10) {
                return Err("dnsmasq does not listen on port 67 after 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Boot `image` on the monitor inside the namespace, attached to the tap.
    pub fn spawn_guest(&self, image: &Path, opts: &[&str], args: &[&str]) -> Guest {
        let mut cmd = self.command(tool("unikernel-hvt"));
        cmd.args(["--net", "tap:tap0"]).args(opts).arg(image);
        if !args.is_empty() {
            cmd.arg("--").args(args);
        }
        Guest::spawn(cmd)
    }

    /// Run a client command inside the namespace with a deadline.
    pub fn client(&self, prog: &str, args: &[&str], deadline: Duration) -> Outcome {
        let mut cmd = self.command(prog);
        cmd.args(args);
        crate::run_with_deadline(cmd, b"", deadline)
    }

    /// `curl` inside the namespace until it answers (the guest may still be
    /// booting or waiting for DHCP); the last outcome.
    pub fn curl_until_up(&self, url: &str, deadline: Duration) -> Outcome {
        let start = Instant::now();
        loop {
            let o = self.client(
                "curl",
                &["-sS", "--max-time", "5", url],
                Duration::from_secs(10),
            );
            if o.code == 0 || start.elapsed() > deadline {
                return o;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Some(mut d) = self.dnsmasq.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A guest running in the background, its output collected.
pub struct Guest {
    child: Child,
    out: Arc<Mutex<Vec<u8>>>,
    err: Arc<Mutex<Vec<u8>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

fn collect(
    mut r: impl Read + Send + 'static,
    into: Arc<Mutex<Vec<u8>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                break;
            }
            into.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    })
}

impl Guest {
    pub fn spawn(mut cmd: Command) -> Guest {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start the monitor");
        let out = Arc::new(Mutex::new(Vec::new()));
        let err = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            collect(child.stdout.take().unwrap(), out.clone()),
            collect(child.stderr.take().unwrap(), err.clone()),
        ];
        Guest {
            child,
            out,
            err,
            readers,
        }
    }

    /// What the guest printed on stdout so far.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().unwrap()).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.err.lock().unwrap()).into_owned()
    }

    /// Wait until stdout or stderr holds `text`; false at the deadline or
    /// when the guest ended.
    pub fn wait_for(&mut self, text: &str, deadline: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < deadline {
            if self.stdout().contains(text) || self.stderr().contains(text) {
                return true;
            }
            if let Ok(Some(_)) = self.child.try_wait() {
                return self.stdout().contains(text) || self.stderr().contains(text);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Wait for the guest to end (killed at the deadline: exit code -1).
    pub fn finish(mut self, deadline: Duration) -> Outcome {
        let start = Instant::now();
        let code = loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                break st.code().unwrap_or(-1);
            }
            if start.elapsed() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break -1;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        Outcome {
            stdout: self.stdout(),
            stderr: self.stderr(),
            code,
        }
    }

    /// Send signal `sig` (a name: `"TERM"`, `"INT"`) to the monitor process.
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status();
    }

    /// Stop the guest now.
    pub fn kill(self) -> Outcome {
        let mut s = self;
        let _ = s.child.kill();
        s.finish(Duration::from_secs(5))
    }
}
