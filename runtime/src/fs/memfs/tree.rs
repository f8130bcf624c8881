//! The inode table of a [`super::MemFs`]: looking paths up, creating and
//! removing entries, renaming with Linux's rules, and freeing an inode
//! when its last name and its last open file are gone.

use super::data::Space;
use super::table::{Entries, Nodes};
use super::{now, Inner, Inode, Kind, NAME_MAX, ROOT_INO};
use crate::errno::*;
use crate::fs::vfs;
use alloc::string::String;

pub(super) fn check_name(name: &str) -> Result<(), Errno> {
    if name.len() > NAME_MAX {
        return Err(ENAMETOOLONG);
    }
    Ok(())
}

/// Split a normalized path into its parent directory and last component.
pub(super) fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

impl Inner {
    /// The inode `path` names (no symbolic link is followed).
    pub fn lookup(&self, path: &str) -> Result<u64, Errno> {
        let mut ino = ROOT_INO;
        if path.is_empty() {
            return Ok(ino);
        }
        for comp in path.split('/') {
            check_name(comp)?;
            match &self.nodes.get(&ino).ok_or(ENOENT)?.kind {
                Kind::Dir { entries, .. } => ino = *entries.get(comp).ok_or(ENOENT)?,
                _ => return Err(ENOTDIR),
            }
        }
        Ok(ino)
    }

    pub fn node(&self, ino: u64) -> Result<&Inode, Errno> {
        self.nodes.get(&ino).ok_or(ENOENT)
    }

    pub fn node_mut(&mut self, ino: u64) -> Result<&mut Inode, Errno> {
        self.nodes.get_mut(&ino).ok_or(ENOENT)
    }

    /// The directory that holds `path`'s last component, and that name.
    pub(super) fn parent_of<'p>(&self, path: &'p str) -> Result<(u64, &'p str), Errno> {
        if path.is_empty() {
            return Err(EEXIST);
        }
        let (dir, name) = split(path);
        check_name(name)?;
        let d = self.lookup(dir)?;
        if !self.node(d)?.is_dir() {
            return Err(ENOTDIR);
        }
        Ok((d, name))
    }

    pub(super) fn entries_mut(&mut self, dir: u64) -> Result<&mut Entries, Errno> {
        match &mut self.node_mut(dir)?.kind {
            Kind::Dir { entries, .. } => Ok(entries),
            _ => Err(ENOTDIR),
        }
    }

    /// Make a new inode named `path`; `EEXIST` if the name is taken.
    pub fn create(&mut self, path: &str, inode: Inode) -> Result<u64, Errno> {
        let (dir, name) = self.parent_of(path)?;
        if self.entries_mut(dir)?.contains_key(name) {
            return Err(EEXIST);
        }
        let is_dir = inode.is_dir();
        let mut inode = inode;
        if let Kind::Dir { parent, .. } = &mut inode.kind {
            *parent = dir;
            inode.nlink = 2;
        }
        let ino = self.nodes.insert(ROOT_INO + 1, inode);
        self.entries_mut(dir)?.insert(String::from(name), ino);
        let t = now();
        let d = self.node_mut(dir)?;
        d.mtime = t;
        d.ctime = t;
        if is_dir {
            d.nlink += 1;
        }
        Ok(ino)
    }

    /// Drop one link to `ino`; free it when no name and no open file is left.
    pub fn drop_link(&mut self, ino: u64) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.nlink = n.nlink.saturating_sub(if n.is_dir() { 2 } else { 1 });
            n.ctime = now();
        }
        self.maybe_free(ino);
    }

    pub fn maybe_free(&mut self, ino: u64) {
        let gone = self
            .nodes
            .get(&ino)
            .is_some_and(|n| n.nlink == 0 && n.opens == 0);
        if gone {
            if let Some(mut n) = self.nodes.remove(&ino) {
                if let Kind::File(d) = &mut n.kind {
                    d.release(&mut self.used);
                }
            }
        }
    }

    /// Remove the entry `path` (`want_dir`: rmdir's rules, else unlink's).
    pub(super) fn remove(&mut self, path: &str, want_dir: bool) -> Result<(), Errno> {
        if path.is_empty() {
            return Err(EBUSY);
        }
        let (dir, name) = self.parent_of(path)?;
        let ino = *self.entries_mut(dir)?.get(name).ok_or(ENOENT)?;
        match (&self.node(ino)?.kind, want_dir) {
            (Kind::Dir { entries, .. }, true) if !entries.is_empty() => return Err(ENOTEMPTY),
            (Kind::Dir { .. }, false) => return Err(EISDIR),
            (Kind::Dir { .. }, true) => {}
            (_, true) => return Err(ENOTDIR),
            (_, false) => {}
        }
        self.entries_mut(dir)?.remove(name);
        let t = now();
        let d = self.node_mut(dir)?;
        d.mtime = t;
        d.ctime = t;
        if want_dir {
            d.nlink -= 1;
        }
        self.drop_link(ino);
        Ok(())
    }

    /// Whether directory `anc` is `ino` or one of its ancestors.
    pub(super) fn is_ancestor(&self, anc: u64, mut ino: u64) -> bool {
        loop {
            if ino == anc {
                return true;
            }
            match self.nodes.get(&ino).map(|n| &n.kind) {
                Some(Kind::Dir { parent, .. }) if *parent != ino => ino = *parent,
                _ => return false,
            }
        }
    }

    pub(super) fn set_parent(&mut self, ino: u64, new_parent: u64) {
        if let Some(Inode {
            kind: Kind::Dir { parent, .. },
            ..
        }) = self.nodes.get_mut(&ino)
        {
            *parent = new_parent;
        }
    }

    pub(super) fn rename(&mut self, from: &str, to: &str, flags: u32) -> Result<(), Errno> {
        let exchange = flags & vfs::RENAME_EXCHANGE != 0;
        let noreplace = flags & vfs::RENAME_NOREPLACE != 0;
        if flags & !(vfs::RENAME_EXCHANGE | vfs::RENAME_NOREPLACE) != 0 || (exchange && noreplace) {
            return Err(EINVAL);
        }
        if from.is_empty() || to.is_empty() {
            return Err(EBUSY);
        }
        let (fdir, fname) = self.parent_of(from)?;
        let (tdir, tname) = self.parent_of(to)?;
        let src = *self.entries_mut(fdir)?.get(fname).ok_or(ENOENT)?;
        let dst = self.entries_mut(tdir)?.get(tname).copied();
        let src_dir = self.node(src)?.is_dir();
        if src == dst.unwrap_or(0) {
            return Ok(());
        }
        // A directory cannot move below itself.
        if src_dir && self.is_ancestor(src, tdir) {
            return Err(EINVAL);
        }
        if exchange {
            let dst = dst.ok_or(ENOENT)?;
            if self.node(dst)?.is_dir() && self.is_ancestor(dst, fdir) {
                return Err(EINVAL);
            }
            self.entries_mut(fdir)?.insert(String::from(fname), dst);
            self.entries_mut(tdir)?.insert(String::from(tname), src);
            let dst_dir = self.node(dst)?.is_dir();
            if src_dir != dst_dir {
                let (gain, lose) = if src_dir { (tdir, fdir) } else { (fdir, tdir) };
                self.node_mut(gain)?.nlink += 1;
                self.node_mut(lose)?.nlink -= 1;
            }
            self.set_parent(src, tdir);
            self.set_parent(dst, fdir);
            self.touch_dirs(fdir, tdir);
            return Ok(());
        }
        if let Some(d) = dst {
            if noreplace {
                return Err(EEXIST);
            }
            match (src_dir, &self.node(d)?.kind) {
                (true, Kind::Dir { entries, .. }) if !entries.is_empty() => return Err(ENOTEMPTY),
                (true, Kind::Dir { .. }) => {}
                (true, _) => return Err(ENOTDIR),
                (false, Kind::Dir { .. }) => return Err(EISDIR),
                (false, _) => {}
            }
        }
        self.entries_mut(fdir)?.remove(fname);
        self.entries_mut(tdir)?.insert(String::from(tname), src);
        if let Some(d) = dst {
            if src_dir {
                // The replaced empty directory's ".." link to tdir goes away.
                self.node_mut(tdir)?.nlink -= 1;
            }
            self.drop_link(d);
        }
        if src_dir {
            self.node_mut(fdir)?.nlink -= 1;
            self.node_mut(tdir)?.nlink += 1;
            self.set_parent(src, tdir);
        }
        self.node_mut(src)?.ctime = now();
        self.touch_dirs(fdir, tdir);
        Ok(())
    }

    pub(super) fn touch_dirs(&mut self, a: u64, b: u64) {
        let t = now();
        for d in [a, b] {
            if let Some(n) = self.nodes.get_mut(&d) {
                n.mtime = t;
                n.ctime = t;
            }
        }
    }

    pub fn space(&mut self, limit: u64) -> (&mut Nodes, Space<'_>) {
        (
            &mut self.nodes,
            Space {
                used: &mut self.used,
                limit,
            },
        )
    }
}
