//! The in-memory root tree: `/`, `/dev/{null,zero,random,urandom}`,
//! `/proc/self/exe` (a link to `/<app name>`), and the app's own entry.
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
        }
    }

    pub fn is_dir(self) -> bool {
        matches!(self, Node::Root | Node::Dev | Node::Proc | Node::ProcSelf)
    }

    fn parent(self) -> Node {
        match self {
            Node::Root | Node::Dev | Node::Proc | Node::Exe => Node::Root,
            Node::ProcSelf => Node::Proc,
            Node::ExeLink => Node::ProcSelf,
            Node::DevNull | Node::DevZero | Node::DevRandom | Node::DevUrandom => Node::Dev,
        }
    }

    /// Entries of a directory, in listing order.
    pub fn children(self) -> Vec<(&'static str, Node)> {
        match self {
            Node::Root => alloc::vec![
                ("dev", Node::Dev),
                ("proc", Node::Proc),
                (app_name(), Node::Exe)
            ],
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
            Node::Exe => 8,
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
    fn read(&self, _buf: &mut [u8]) -> Result<usize, Errno> {
        if self.node.is_dir() {
            Err(EISDIR)
        } else {
            Ok(0)
        }
    }
    fn pread(&self, buf: &mut [u8], _offset: u64) -> Result<usize, Errno> {
        self.read(buf)
    }
    fn seek(&self, offset: i64, whence: u32) -> Result<u64, Errno> {
        let mut c = self.cursor.lock();
        let new = match whence {
            super::SEEK_SET => offset,
            super::SEEK_CUR => *c as i64 + offset,
            super::SEEK_END => offset,
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
}
