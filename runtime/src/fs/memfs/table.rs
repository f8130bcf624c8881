//! The two small containers memfs is built on: the inode table (inode
//! number to inode, slots reused after a free) and a directory's entries
//! (sorted by name, so listings come in name order and a listing can go
//! on after the last name it returned). Both are plain vectors: they keep
//! the kernel small (no further `BTreeMap` instances) and are fast for the
//! directory sizes an app's scratch space has.

use super::Inode;
use alloc::string::String;
use alloc::vec::Vec;

/// Inodes by number; numbers below the root's are never used.
#[derive(Default)]
pub struct Nodes(Vec<Option<Inode>>);

impl Nodes {
    pub fn get(&self, ino: &u64) -> Option<&Inode> {
        self.0.get(*ino as usize)?.as_ref()
    }

    pub fn get_mut(&mut self, ino: &u64) -> Option<&mut Inode> {
        self.0.get_mut(*ino as usize)?.as_mut()
    }

    /// Put `inode` in the lowest free slot at or above `min`; its number.
    pub fn insert(&mut self, min: u64, inode: Inode) -> u64 {
        let min = min as usize;
        if self.0.len() < min {
            self.0.resize_with(min, || None);
        }
        match self.0[min..].iter().position(|s| s.is_none()) {
            Some(i) => {
                self.0[min + i] = Some(inode);
                (min + i) as u64
            }
            None => {
                self.0.push(Some(inode));
                (self.0.len() - 1) as u64
            }
        }
    }

    pub fn remove(&mut self, ino: &u64) -> Option<Inode> {
        let n = self.0.get_mut(*ino as usize)?.take();
        while self.0.last().is_some_and(|s| s.is_none()) {
            self.0.pop();
        }
        n
    }

    /// Inodes in use.
    pub fn len(&self) -> usize {
        self.0.iter().filter(|s| s.is_some()).count()
    }
}

/// A directory's entries, sorted by name.
#[derive(Default)]
pub struct Entries(Vec<(String, u64)>);

impl Entries {
    fn find(&self, name: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(n, _)| n.as_str().cmp(name))
    }

    pub fn get(&self, name: &str) -> Option<&u64> {
        self.find(name).ok().map(|i| &self.0[i].1)
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.find(name).is_ok()
    }

    /// Add or replace; the inode it named before.
    pub fn insert(&mut self, name: String, ino: u64) -> Option<u64> {
        match self.find(&name) {
            Ok(i) => Some(core::mem::replace(&mut self.0[i].1, ino)),
            Err(i) => {
                self.0.insert(i, (name, ino));
                None
            }
        }
    }

    pub fn remove(&mut self, name: &str) -> Option<u64> {
        self.find(name).ok().map(|i| self.0.remove(i).1)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The first entry whose name sorts after `last` (`None`: the first entry).
    pub fn after(&self, last: Option<&str>) -> Option<(&String, u64)> {
        let i = match last {
            None => 0,
            Some(l) => match self.find(l) {
                Ok(i) => i + 1,
                Err(i) => i,
            },
        };
        self.0.get(i).map(|(n, ino)| (n, *ino))
    }
}
