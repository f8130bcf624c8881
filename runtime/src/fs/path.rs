//! Path resolution: from a path an app passes (absolute, or relative to
//! the working directory or to a directory descriptor) to a mount and a
//! normalized path inside it.
//!
//! Resolution walks the path one component at a time on the absolute
//! path built so far: `.` is dropped, `..` removes the last component
//! (lexically, which also crosses mount points: `/data/..` is `/`), and
//! every component is looked up in the filesystem that the longest mount
//! prefix names ([`vfs::resolve_mount`]). A symbolic link is replaced by
//! its target (an absolute target restarts from `/`) and resolution goes
//! on; more than [`MAX_SYMLINKS`] links give `ELOOP`. A component that is
//! not the last must be a directory (`ENOTDIR`) and must exist (`ENOENT`);
//! the last one may be missing (the caller creates it or answers
//! `ENOENT`), and is followed only when the caller asks.

use super::vfs::{self, Mount};
use super::S_IFDIR;
use super::S_IFLNK;
use super::S_IFMT;
use crate::errno::*;
use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;
use spin::Mutex;

/// Links followed in one resolution before `ELOOP` (Linux's limit).
pub const MAX_SYMLINKS: u32 = 40;
/// Longest path, with its NUL (`PATH_MAX`).
pub const PATH_MAX: usize = 4096;
/// Longest component (`NAME_MAX`).
pub const NAME_MAX: usize = 255;

/// A resolved path.
pub struct Resolved {
    /// Absolute and normalized ("/" or "/a/b").
    pub abs: String,
    pub mount: Mount,
    /// Relative to the mount's root (`""`: the root itself).
    pub rel: String,
}

/// Where a path is looked up: the file systems mounted in the VFS
/// ([`Mounted`]) or, in tests, anything that answers `lstat` and `readlink`.
pub trait Lookup {
    /// The file type bits of `abs` (no link followed).
    fn kind(&self, abs: &str) -> Result<u32, Errno>;
    fn readlink(&self, abs: &str) -> Result<String, Errno>;
}

/// The mount table.
pub struct Mounted;

impl Lookup for Mounted {
    fn kind(&self, abs: &str) -> Result<u32, Errno> {
        let (m, rel) = vfs::resolve_mount(abs).ok_or(ENOENT)?;
        Ok(m.fs.stat(&rel)?.mode & S_IFMT)
    }
    fn readlink(&self, abs: &str) -> Result<String, Errno> {
        let (m, rel) = vfs::resolve_mount(abs).ok_or(ENOENT)?;
        m.fs.readlink(&rel)
    }
}

fn join(stack: &[String]) -> String {
    if stack.is_empty() {
        return String::from("/");
    }
    let mut s = String::new();
    for c in stack {
        s.push('/');
        s.push_str(c);
    }
    s
}

fn components(s: &str) -> impl DoubleEndedIterator<Item = &str> {
    s.split('/').filter(|c| !c.is_empty() && *c != ".")
}

/// Resolve `path` against the absolute directory `base` to an absolute,
/// normalized path whose components other than the last exist and are
/// directories (no links left in them). `follow`: a final symbolic link is
/// followed too. A trailing `/` makes the last component a directory that
/// is followed.
pub fn normalize(fs: &dyn Lookup, base: &str, path: &[u8], follow: bool) -> Result<String, Errno> {
    if path.is_empty() {
        return Err(ENOENT);
    }
    if path.len() >= PATH_MAX {
        return Err(ENAMETOOLONG);
    }
    let path = core::str::from_utf8(path).map_err(|_| EINVAL)?;
    let must_dir = path.ends_with('/');
    let mut stack: Vec<String> = Vec::new();
    if !path.starts_with('/') {
        stack.extend(components(base).map(String::from));
    }
    let mut queue: VecDeque<String> = components(path).map(String::from).collect();
    let mut links = 0;
    while let Some(c) = queue.pop_front() {
        if c == ".." {
            stack.pop();
            continue;
        }
        if c.len() > NAME_MAX {
            return Err(ENAMETOOLONG);
        }
        stack.push(c);
        let last = queue.is_empty();
        if last && !follow && !must_dir {
            break;
        }
        let abs = join(&stack);
        if abs.len() >= PATH_MAX {
            return Err(ENAMETOOLONG);
        }
        match fs.kind(&abs) {
            Ok(S_IFLNK) => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(ELOOP);
                }
                let target = fs.readlink(&abs)?;
                if target.is_empty() {
                    return Err(ENOENT);
                }
                stack.pop();
                if target.starts_with('/') {
                    stack.clear();
                }
                for t in components(&target).rev() {
                    queue.push_front(String::from(t));
                }
            }
            Ok(S_IFDIR) => {}
            Ok(_) if !last || must_dir => return Err(ENOTDIR),
            Ok(_) => {}
            Err(ENOENT) if last => {}
            Err(e) => return Err(e),
        }
    }
    Ok(join(&stack))
}

/// [`normalize`] on the mount table, and the mount holding the result.
pub fn resolve(base: &str, path: &[u8], follow: bool) -> Result<Resolved, Errno> {
    let abs = normalize(&Mounted, base, path, follow)?;
    let (mount, rel) = vfs::resolve_mount(&abs).ok_or(ENOENT)?;
    Ok(Resolved { abs, mount, rel })
}

static CWD: Mutex<String> = Mutex::new(String::new());

/// The working directory (absolute; "/" until `chdir`).
pub fn cwd() -> String {
    let c = CWD.lock();
    if c.is_empty() {
        String::from("/")
    } else {
        c.clone()
    }
}

pub fn set_cwd(abs: String) {
    *CWD.lock() = abs;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::S_IFREG;
    use alloc::collections::BTreeMap;

    /// A tree of absolute paths: directories, files and links.
    struct Tree(BTreeMap<&'static str, (u32, &'static str)>);

    impl Lookup for Tree {
        fn kind(&self, abs: &str) -> Result<u32, Errno> {
            self.0.get(abs).map(|e| e.0).ok_or(ENOENT)
        }
        fn readlink(&self, abs: &str) -> Result<String, Errno> {
            self.0.get(abs).map(|e| String::from(e.1)).ok_or(ENOENT)
        }
    }

    fn tree() -> Tree {
        let mut m = BTreeMap::new();
        for d in ["/", "/a", "/a/b", "/tmp", "/data"] {
            m.insert(d, (S_IFDIR, ""));
        }
        m.insert("/a/f", (S_IFREG, ""));
        m.insert("/a/up", (S_IFLNK, ".."));
        m.insert("/a/abs", (S_IFLNK, "/tmp"));
        m.insert("/a/rel", (S_IFLNK, "b"));
        m.insert("/a/dangling", (S_IFLNK, "nothere"));
        m.insert("/loop1", (S_IFLNK, "/loop2"));
        m.insert("/loop2", (S_IFLNK, "/loop1"));
        m.insert("/a/tofile", (S_IFLNK, "f"));
        Tree(m)
    }

    fn n(base: &str, p: &str, follow: bool) -> Result<String, Errno> {
        normalize(&tree(), base, p.as_bytes(), follow)
    }

    #[test]
    fn plain_paths() {
        assert_eq!(n("/", "/a/b", true).as_deref(), Ok("/a/b"));
        assert_eq!(n("/", "//a/./b/", true).as_deref(), Ok("/a/b"));
        assert_eq!(n("/a", "b", true).as_deref(), Ok("/a/b"));
        assert_eq!(n("/a/b", "../f", true).as_deref(), Ok("/a/f"));
        assert_eq!(n("/", "/..", true).as_deref(), Ok("/"));
        assert_eq!(n("/data", "..", true).as_deref(), Ok("/"));
        assert_eq!(n("/", "/a/new", true).as_deref(), Ok("/a/new"));
        assert_eq!(n("/", "", true), Err(ENOENT));
    }

    #[test]
    fn errors() {
        assert_eq!(n("/", "/a/f/x", true), Err(ENOTDIR));
        assert_eq!(n("/", "/a/f/", true), Err(ENOTDIR));
        assert_eq!(n("/", "/a/f/..", true), Err(ENOTDIR));
        assert_eq!(n("/", "/nope/x", true), Err(ENOENT));
        let long = "x".repeat(256);
        assert_eq!(n("/", &long, true), Err(ENAMETOOLONG));
        let deep = "/a".repeat(2100);
        assert_eq!(n("/", &deep, true), Err(ENAMETOOLONG));
        assert_eq!(n("/", "/loop1", true), Err(ELOOP));
        assert_eq!(n("/", "/loop1", false).as_deref(), Ok("/loop1"));
    }

    #[test]
    fn symbolic_links() {
        assert_eq!(n("/", "/a/up/a/b", true).as_deref(), Ok("/a/b"));
        assert_eq!(n("/", "/a/abs/x", true).as_deref(), Ok("/tmp/x"));
        assert_eq!(n("/", "/a/rel", true).as_deref(), Ok("/a/b"));
        assert_eq!(n("/", "/a/rel", false).as_deref(), Ok("/a/rel"));
        assert_eq!(n("/", "/a/rel/", false).as_deref(), Ok("/a/b"));
        assert_eq!(n("/", "/a/abs/..", true).as_deref(), Ok("/"));
        assert_eq!(n("/", "/a/dangling", true).as_deref(), Ok("/a/nothere"));
        assert_eq!(n("/", "/a/tofile", true).as_deref(), Ok("/a/f"));
        assert_eq!(n("/", "/a/tofile/", true), Err(ENOTDIR));
    }
}
