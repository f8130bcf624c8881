//! Seeing the frames: one line per frame on stderr
//! (`UNIKERNEL_NET_TRACE=1`) and/or a pcap file (`--pcap FILE`).
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// Set this environment variable to print one line per frame.
pub const TRACE_ENV: &str = "UNIKERNEL_NET_TRACE";

/// Which way a frame went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// Guest to host.
    Tx,
    /// Host to guest.
    Rx,
}

/// The frame observers of one device.
pub struct Tracer {
    lines: bool,
    pcap: Option<BufWriter<File>>,
}

impl Tracer {
    /// Opens the pcap file (if any) and writes its header.
    pub fn new(pcap: Option<&Path>) -> Result<Tracer, String> {
        let lines = std::env::var_os(TRACE_ENV).is_some_and(|v| !v.is_empty() && v != "0");
        let pcap = match pcap {
            None => None,
            Some(path) => {
                let f =
                    File::create(path).map_err(|e| format!("--pcap {}: {e}", path.display()))?;
                let mut w = BufWriter::new(f);
                // pcap global header: magic, version 2.4, zone, sigfigs, snaplen, LINKTYPE_ETHERNET.
                let mut h = Vec::with_capacity(24);
                h.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
                h.extend_from_slice(&2u16.to_le_bytes());
                h.extend_from_slice(&4u16.to_le_bytes());
                h.extend_from_slice(&[0; 8]);
                h.extend_from_slice(&65535u32.to_le_bytes());
                h.extend_from_slice(&1u32.to_le_bytes());
                w.write_all(&h)
                    .map_err(|e| format!("--pcap {}: {e}", path.display()))?;
                Some(w)
            }
        };
        Ok(Tracer { lines, pcap })
    }

    /// Whether anything observes frames (saves the work otherwise).
    pub fn active(&self) -> bool {
        self.lines || self.pcap.is_some()
    }

    /// Records one frame.
    pub fn frame(&mut self, dir: Dir, frame: &[u8]) {
        if self.lines {
            eprintln!("unikernel-hvt: net: {}", describe(dir, frame));
        }
        if let Some(w) = &mut self.pcap {
            let t = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            let len = frame.len().min(65535) as u32;
            let mut r = Vec::with_capacity(16 + len as usize);
            r.extend_from_slice(&(t.as_secs() as u32).to_le_bytes());
            r.extend_from_slice(&t.subsec_micros().to_le_bytes());
            r.extend_from_slice(&len.to_le_bytes());
            r.extend_from_slice(&(frame.len() as u32).to_le_bytes());
            r.extend_from_slice(&frame[..len as usize]);
            if w.write_all(&r).is_err() {
                eprintln!("unikernel-hvt: net: cannot write the pcap file; stopped writing it");
                self.pcap = None;
            }
        }
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        if let Some(w) = &mut self.pcap {
            let _ = w.flush();
        }
    }
}

/// `tx 98 bytes 0800 02:75:6b:00:00:01 > ff:ff:ff:ff:ff:ff`.
pub fn describe(dir: Dir, f: &[u8]) -> String {
    let d = match dir {
        Dir::Tx => "tx",
        Dir::Rx => "rx",
    };
    if f.len() < 14 {
        return format!("{d} {} bytes (runt)", f.len());
    }
    let mac = |m: &[u8]| {
        m.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    format!(
        "{d} {} bytes {:04x} {} > {}",
        f.len(),
        u16::from_be_bytes([f[12], f[13]]),
        mac(&f[6..12]),
        mac(&f[0..6])
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_described() {
        let mut f = vec![0xffu8; 6];
        f.extend_from_slice(&[2, 0x75, 0x6b, 0, 0, 1, 0x08, 0x06]);
        f.resize(60, 0);
        assert_eq!(
            describe(Dir::Tx, &f),
            "tx 60 bytes 0806 02:75:6b:00:00:01 > ff:ff:ff:ff:ff:ff"
        );
        assert_eq!(describe(Dir::Rx, &[1, 2]), "rx 2 bytes (runt)");
    }

    #[test]
    fn pcap_files_get_a_header_and_records() {
        let path = std::env::temp_dir().join(format!("hvt-pcap-{}.pcap", std::process::id()));
        {
            let mut t = Tracer::new(Some(&path)).unwrap();
            t.frame(Dir::Rx, &[0u8; 60]);
        }
        let b = std::fs::read(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(b.len(), 24 + 16 + 60);
        assert_eq!(&b[..4], &0xa1b2_c3d4u32.to_le_bytes());
        assert_eq!(&b[32..36], &60u32.to_le_bytes());
    }
}
