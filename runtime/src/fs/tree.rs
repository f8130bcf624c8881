//! The in-memory root tree: `/`, `/dev/{null,zero,random,urandom}`,
//! `/proc/self/exe` (a link to `/<app name>`), and the app's own entry.
//! `/etc` holds the read-only files components synthesize
//! ([`set_etc_file`]: the network component's `resolv.conf` and `hosts`)
//! and exists only when there is one.
//! Everything else is `ENOENT`; creating files gives `EROFS` (writable
//! filesystems come as components).

use super::dev::{Null, Random, Zero};
use super::{File, Stat, S_IFDIR, S_IFLNK, S_IFREG};
use crate::errno::*;
use alloc::sync::Arc;
use alloc::vec::Vec;
use spin::Mutex;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Node {
    Root,
    Dev,
    Proc,
    ProcSelf,
    DevNull,
    DevZero,
    DevRandom,
    DevUrandom,
    /// `/proc/self/exe`, a symbolic link to [`Node::Exe`].
    ExeLink,
    /// `/<app name>`: the executable (its bytes are not kept in memory: size 0).
    Exe,
    /// `/etc`, and the n-th file registered with [`set_etc_file`].
    Etc,
    EtcFile(u8),
}

/// A file in `/etc`: name and contents.
type EtcFile = (&'static str, Arc<Vec<u8>>);

static ETC: Mutex<Vec<EtcFile>> = Mutex::new(Vec::new());

/// Create or replace the read-only file `/etc/<name>`.
pub fn set_etc_file(name: &'static str, data: Vec<u8>) {
    let mut etc = ETC.lock();
    let data = Arc::new(data);
    if let Some(slot) = etc.iter_mut().find(|(n, _)| *n == name) {
        slot.1 = data;
    } else if etc.len() < u8::MAX as usize {
        etc.push((name, data));
    }
}

fn etc_data(i: u8) -> Arc<Vec<u8>> {
    ETC.lock()
        .get(i as usize)
        .map(|(_, d)| d.clone())
        .unwrap_or_default()
}

fn app_name() -> &'static str {
    crate::app_name()
}

impl Node {
    fn ino(self) -> u64 {
        match self {
            Node::Root => 2,
            Node::Dev => 3,
            Node::Proc => 4,
            Node::ProcSelf => 5,
            Node::DevNull => 103,
            Node::DevZero => 105,
            Node::DevRandom => 108,
            Node::DevUrandom => 109,
            Node::ExeLink => 6,
            Node::Exe => 7,
            Node::Etc => 8,
            Node::EtcFile(i) => 200 + i as u64,
        }
    }

    pub fn is_dir(self) -> bool {
        matches!(
            self,
            Node::Root | Node::Dev | Node::Proc | Node::ProcSelf | Node::Etc
        )
    }

    fn parent(self) -> Node {
        match self {
            Node::Root | Node::Dev | Node::Proc | Node::Exe | Node::Etc => Node::Root,
            Node::EtcFile(_) => Node::Etc,
            Node::ProcSelf => Node::Proc,
            Node::ExeLink => Node::ProcSelf,
            Node::DevNull | Node::DevZero | Node::DevRandom | Node::DevUrandom => Node::Dev,
        }
    }

    /// Entries of a directory, in listing order.
    pub fn children(self) -> Vec<(&'static str, Node)> {
        match self {
            Node::Root => {
                let mut v = alloc::vec![("dev", Node::Dev)];
                if !ETC.lock().is_empty() {
                    v.push(("etc", Node::Etc));
                }
                v.push(("proc", Node::Proc));
                v.push((app_name(), Node::Exe));
                v
            }
            Node::Etc => ETC
                .lock()
                .iter()
                .enumerate()
                .map(|(i, (n, _))| (*n, Node::EtcFile(i as u8)))
                .collect(),
            Node::Dev => alloc::vec![
                ("null", Node::DevNull),
                ("zero", Node::DevZero),
                ("random", Node::DevRandom),
                ("urandom", Node::DevUrandom)
            ],
            Node::Proc => alloc::vec![("self", Node::ProcSelf)],
            Node::ProcSelf => alloc::vec![("exe", Node::ExeLink)],
            _ => Vec::new(),
        }
    }

    /// Target of a symbolic link.
    pub fn link_target(self) -> Option<alloc::string::String> {
        match self {
            Node::ExeLink => Some(alloc::format!("/{}", app_name())),
            _ => None,
        }
    }

    pub fn stat(self) -> Stat {
        let mut st = Stat {
            dev: 1,
            ino: self.ino(),
            nlink: 1,
            blksize: 4096,
            ..Stat::default()
        };
        match self {
            n if n.is_dir() => {
                st.mode = S_IFDIR | 0o755;
                st.nlink = 2;
                st.size = 4096;
            }
            Node::ExeLink => {
                st.mode = S_IFLNK | 0o777;
                st.size = self.link_target().map_or(0, |t| t.len() as i64);
            }
            Node::Exe => st.mode = S_IFREG | 0o755,
            Node::EtcFile(i) => {
                st.mode = S_IFREG | 0o644;
                st.size = etc_data(i).len() as i64;
            }
            Node::DevNull => return Null.stat(),
            Node::DevZero => return Zero.stat(),
            _ => return Random.stat(),
        }
        st
    }

    fn dtype(self) -> u8 {
        match self {
            n if n.is_dir() => 4,
            Node::ExeLink => 10,
            Node::Exe | Node::EtcFile(_) => 8,
            _ => 2,
        }
    }
}

/// Resolve `path` (absolute, or relative to `cwd`). With `follow`, a final
/// symbolic link is followed; links inside the path always are.
pub fn lookup(cwd: Node, path: &[u8], follow: bool) -> Result<Node, Errno> {
    if path.is_empty() {
        return Err(ENOENT);
    }
    if path.len() > 4095 {
        return Err(ENAMETOOLONG);
    }
    let mut node = if path[0] == b'/' { Node::Root } else { cwd };
    let comps: Vec<&[u8]> = path
        .split(|&c| c == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect();
    for (i, comp) in comps.iter().enumerate() {
        if node == Node::ExeLink {
            node = Node::Exe;
        }
        if !node.is_dir() {
            return Err(ENOTDIR);
        }
        if *comp == b".." {
            node = node.parent();
            continue;
        }
        if comp.len() > 255 {
            return Err(ENAMETOOLONG);
        }
        node = node
            .children()
            .into_iter()
            .find(|(n, _)| n.as_bytes() == *comp)
            .map(|(_, n)| n)
            .ok_or(ENOENT)?;
        let last = i + 1 == comps.len();
        if node == Node::ExeLink && (!last || follow) {
            node = Node::Exe;
        }
    }
    // "dir/" must name a directory.
    if path.ends_with(b"/") && !node.is_dir() {
        return Err(ENOTDIR);
    }
    Ok(node)
}

/// An open directory (for `getdents64`) or the executable's (empty) file.
pub struct NodeFile {
    pub node: Node,
    cursor: Mutex<usize>,
}

impl NodeFile {
    pub fn new(node: Node) -> NodeFile {
        NodeFile {
            node,
            cursor: Mutex::new(0),
        }
    }
}

impl File for NodeFile {
    fn read(&self, buf: &mut [u8]) -> Result<usize, Errno> {
        let mut c = self.cursor.lock();
        let n = self.pread(buf, *c as u64)?;
        *c += n;
        Ok(n)
    }
    fn pread(&self, buf: &mut [u8], offset: u64) -> Result<usize, Errno> {
        match self.node {
            n if n.is_dir() => Err(EISDIR),
            Node::EtcFile(i) => {
                let d = etc_data(i);
                let off = (offset as usize).min(d.len());
                let n = buf.len().min(d.len() - off);
                buf[..n].copy_from_slice(&d[off..off + n]);
                Ok(n)
            }
            _ => Ok(0),
        }
    }
    fn seek(&self, offset: i64, whence: u32) -> Result<u64, Errno> {
        let mut c = self.cursor.lock();
        let new = match whence {
            super::SEEK_SET => offset,
            super::SEEK_CUR => *c as i64 + offset,
            super::SEEK_END => self.node.stat().size + offset,
            _ => return Err(EINVAL),
        };
        if new < 0 {
            return Err(EINVAL);
        }
        *c = new as usize;
        Ok(new as u64)
    }
    fn stat(&self) -> Stat {
        self.node.stat()
    }
    fn mappable(&self) -> bool {
        !self.node.is_dir()
    }
    fn dir_node(&self) -> Option<Node> {
        self.node.is_dir().then_some(self.node)
    }
    fn getdents64(&self, buf: &mut [u8]) -> Result<usize, Errno> {
        if !self.node.is_dir() {
            return Err(ENOTDIR);
        }
        let mut entries: Vec<(&str, u64, u8)> = alloc::vec![
            (".", self.node.ino(), 4),
            ("..", self.node.parent().ino(), 4)
        ];
        entries.extend(
            self.node
                .children()
                .into_iter()
                .map(|(n, c)| (n, c.ino(), c.dtype())),
        );
        let mut cursor = self.cursor.lock();
        let mut used = 0;
        while let Some(&(name, ino, dtype)) = entries.get(*cursor) {
            let reclen = (19 + name.len() + 1).div_ceil(8) * 8;
            if used + reclen > buf.len() {
                if used == 0 {
                    return Err(EINVAL);
                }
                break;
            }
            let rec = &mut buf[used..used + reclen];
            rec.fill(0);
            rec[0..8].copy_from_slice(&ino.to_le_bytes());
            rec[8..16].copy_from_slice(&((*cursor + 1) as i64).to_le_bytes());
            rec[16..18].copy_from_slice(&(reclen as u16).to_le_bytes());
            rec[18] = dtype;
            rec[19..19 + name.len()].copy_from_slice(name.as_bytes());
            used += reclen;
            *cursor += 1;
        }
        Ok(used)
    }
}

/// Open a node as a file.
pub fn open_node(node: Node) -> Arc<dyn File> {
    match node {
        Node::DevNull => Arc::new(Null),
        Node::DevZero => Arc::new(Zero),
        Node::DevRandom | Node::DevUrandom => Arc::new(Random),
        n => Arc::new(NodeFile::new(n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(lookup(Node::Root, b"/dev/null", true), Ok(Node::DevNull));
        assert_eq!(lookup(Node::Root, b"//dev/./zero", true), Ok(Node::DevZero));
        assert_eq!(
            lookup(Node::Root, b"/dev/../dev/urandom", true),
            Ok(Node::DevUrandom)
        );
        assert_eq!(lookup(Node::Dev, b"null", true), Ok(Node::DevNull));
        assert_eq!(lookup(Node::Root, b"/etc/passwd", true), Err(ENOENT));
        assert_eq!(lookup(Node::Root, b"/dev/null/x", true), Err(ENOTDIR));
        assert_eq!(lookup(Node::Root, b"/dev/null/", true), Err(ENOTDIR));
        assert_eq!(
            lookup(Node::Root, b"/proc/self/exe", false),
            Ok(Node::ExeLink)
        );
        assert_eq!(lookup(Node::Root, b"/proc/self/exe", true), Ok(Node::Exe));
        assert_eq!(lookup(Node::Root, b"", true), Err(ENOENT));
        assert_eq!(lookup(Node::Root, b"/..", true), Ok(Node::Root));
    }

    #[test]
    fn etc_files() {
        set_etc_file("hosts", b"127.0.0.1\tlocalhost\n".to_vec());
        let node = lookup(Node::Root, b"/etc/hosts", true).unwrap();
        let f = NodeFile::new(node);
        let mut buf = [0u8; 64];
        let n = f.read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"127.0.0.1\tlocalhost\n");
        assert_eq!(f.read(&mut buf).unwrap(), 0);
        assert_eq!(f.stat().size, n as i64);
        assert_eq!(lookup(Node::Root, b"/etc/hosts/", true), Err(ENOTDIR));
        set_etc_file("hosts", b"x".to_vec());
        assert_eq!(f.pread(&mut buf, 0).unwrap(), 1);
    }
}
