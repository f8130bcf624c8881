//! The embedded-files archive: the read-only files an image carries
//! (`[package.metadata.unikernel] files = ["static/**"]`). The builder
//! writes it as one read-only segment of the image; the manifest says
//! where it is loaded (`files_addr`, `files_len`) and the runtime shows
//! its files in the root tree, reading them in place (no copy).
//!
//! Encoding (all integers little-endian, offsets from the archive's start):
//!
//! ```text
//! magic   8 bytes "UKFILES1"
//! count   u32
//! count entries of:
//!   path_len u16, path bytes   relative, '/'-separated ("static/index.html")
//!   mode     u32               S_IFREG or S_IFDIR | permission bits
//!   data_off u64, data_len u64 (0, 0 for a directory)
//! data    file contents, each entry's at data_off
//! ```
//!
//! A directory entry precedes every entry inside it; paths are unique.
//! [`Archive::parse`] checks all of it, so the runtime never reads out of
//! bounds whatever the bytes are.

pub const MAGIC: &[u8; 8] = b"UKFILES1";
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFREG: u32 = 0o100000;

/// One archive entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    pub path: &'a str,
    pub mode: u32,
    pub data: &'a [u8],
}

impl Entry<'_> {
    pub fn is_dir(&self) -> bool {
        self.mode & 0o170000 == S_IFDIR
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveError {
    BadMagic,
    Truncated,
    /// An entry's path is empty, absolute, not UTF-8 or has `.`/`..`/empty components.
    BadPath,
    /// An entry's data lies outside the archive.
    BadData,
    /// An entry is neither a regular file nor a directory.
    BadMode,
}

impl core::fmt::Display for ArchiveError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            ArchiveError::BadMagic => "not an embedded-files archive (bad magic)",
            ArchiveError::Truncated => "embedded-files archive is truncated",
            ArchiveError::BadPath => "embedded-files archive has a bad path",
            ArchiveError::BadData => "embedded-files archive has data out of bounds",
            ArchiveError::BadMode => "embedded-files archive has an entry of unknown type",
        })
    }
}

/// A checked archive.
#[derive(Clone, Copy, Debug)]
pub struct Archive<'a> {
    data: &'a [u8],
    count: u32,
}

fn rd<const N: usize>(d: &[u8], pos: &mut usize) -> Result<[u8; N], ArchiveError> {
    let end = pos.checked_add(N).ok_or(ArchiveError::Truncated)?;
    let s = d.get(*pos..end).ok_or(ArchiveError::Truncated)?;
    *pos = end;
    let mut a = [0u8; N];
    a.copy_from_slice(s);
    Ok(a)
}

fn path_ok(p: &str) -> bool {
    !p.is_empty()
        && !p.starts_with('/')
        && p.split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains('\0'))
}

impl<'a> Archive<'a> {
    /// Check every entry of `data`.
    pub fn parse(data: &'a [u8]) -> Result<Archive<'a>, ArchiveError> {
        if data.get(..8) != Some(&MAGIC[..]) {
            return Err(if data.len() < 8 {
                ArchiveError::Truncated
            } else {
                ArchiveError::BadMagic
            });
        }
        let mut pos = 8;
        let count = u32::from_le_bytes(rd::<4>(data, &mut pos)?);
        let a = Archive { data, count };
        let mut it = a.raw_iter();
        for _ in 0..count {
            it.next_entry()?;
        }
        Ok(a)
    }

    /// Number of entries (files and directories).
    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn raw_iter(&self) -> RawIter<'a> {
        RawIter {
            data: self.data,
            pos: 12,
        }
    }

    /// The entries, in archive order.
    pub fn entries(&self) -> impl Iterator<Item = Entry<'a>> + 'a {
        let mut it = self.raw_iter();
        // parse() checked every entry.
        (0..self.count).filter_map(move |_| it.next_entry().ok())
    }
}

struct RawIter<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> RawIter<'a> {
    fn next_entry(&mut self) -> Result<Entry<'a>, ArchiveError> {
        let d = self.data;
        let plen = u16::from_le_bytes(rd::<2>(d, &mut self.pos)?) as usize;
        let end = self.pos.checked_add(plen).ok_or(ArchiveError::Truncated)?;
        let pb = d.get(self.pos..end).ok_or(ArchiveError::Truncated)?;
        self.pos = end;
        let path = core::str::from_utf8(pb).map_err(|_| ArchiveError::BadPath)?;
        if !path_ok(path) {
            return Err(ArchiveError::BadPath);
        }
        let mode = u32::from_le_bytes(rd::<4>(d, &mut self.pos)?);
        let off = u64::from_le_bytes(rd::<8>(d, &mut self.pos)?);
        let len = u64::from_le_bytes(rd::<8>(d, &mut self.pos)?);
        let kind = mode & 0o170000;
        if kind != S_IFDIR && kind != S_IFREG {
            return Err(ArchiveError::BadMode);
        }
        let start = usize::try_from(off).map_err(|_| ArchiveError::BadData)?;
        let n = usize::try_from(len).map_err(|_| ArchiveError::BadData)?;
        let stop = start.checked_add(n).ok_or(ArchiveError::BadData)?;
        let data = d.get(start..stop).ok_or(ArchiveError::BadData)?;
        Ok(Entry { path, mode, data })
    }
}

/// Build an archive (host side). `entries`: (path, mode, contents); the
/// caller lists each directory before what it holds.
#[cfg(any(feature = "alloc", test))]
pub fn encode(
    entries: &[(alloc::string::String, u32, alloc::vec::Vec<u8>)],
) -> alloc::vec::Vec<u8> {
    let mut head = alloc::vec::Vec::new();
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    let table: usize = entries.iter().map(|(p, _, _)| 2 + p.len() + 4 + 16).sum();
    let mut off = (head.len() + table) as u64;
    for (p, mode, data) in entries {
        head.extend_from_slice(&(p.len() as u16).to_le_bytes());
        head.extend_from_slice(p.as_bytes());
        head.extend_from_slice(&mode.to_le_bytes());
        head.extend_from_slice(&off.to_le_bytes());
        head.extend_from_slice(&(data.len() as u64).to_le_bytes());
        off += data.len() as u64;
    }
    for (_, _, data) in entries {
        head.extend_from_slice(data);
    }
    head
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    fn sample() -> alloc::vec::Vec<u8> {
        encode(&[
            ("static".to_string(), S_IFDIR | 0o555, vec![]),
            (
                "static/index.html".to_string(),
                S_IFREG | 0o444,
                b"<h1>hi</h1>".to_vec(),
            ),
            (
                "config.toml".to_string(),
                S_IFREG | 0o444,
                b"a = 1\n".to_vec(),
            ),
        ])
    }

    #[test]
    fn roundtrip() {
        let bytes = sample();
        let a = Archive::parse(&bytes).unwrap();
        let e: alloc::vec::Vec<_> = a.entries().collect();
        assert_eq!(e.len(), 3);
        assert!(e[0].is_dir());
        assert_eq!(e[1].path, "static/index.html");
        assert_eq!(e[1].data, b"<h1>hi</h1>");
        assert_eq!(e[2].data, b"a = 1\n");
    }

    #[test]
    fn every_truncation_and_corruption_is_checked() {
        let bytes = sample();
        for n in 0..bytes.len() {
            // Only the last file's data can be cut without the table noticing... no:
            // data bounds are checked against the whole archive, so every cut fails.
            assert!(Archive::parse(&bytes[..n]).is_err(), "prefix {n} parsed");
        }
        for i in 0..bytes.len() {
            for v in [0u8, 0xff, b'/', b'.'] {
                let mut b = bytes.clone();
                b[i] = v;
                if let Ok(a) = Archive::parse(&b) {
                    for e in a.entries() {
                        assert!(path_ok(e.path));
                    }
                }
            }
        }
    }
}
