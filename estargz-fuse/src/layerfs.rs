//! The file system over one layer, as plain Rust: inode numbers, attributes,
//! directory listings with the overlayfs conventions, reads, links and
//! xattrs. Nothing here knows about FUSE, so it is tested without a mount;
//! `adapter` turns these answers into fuser replies.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use estargz_core::reader::{Node, NodeId, Reader, ROOT};
use estargz_core::toc::EntryType;

use crate::overlay::{self, Presented};

/// FUSE's root inode; every other inode is a TOC node id plus one, so
/// numbers are stable for a given TOC and hardlinks share the target's.
pub const ROOT_INO: u64 = 1;
/// Block size reported by stat and statfs.
pub const BLOCK_SIZE: u32 = 4096;
/// Longest name, as statfs reports it.
pub const NAME_MAX: u32 = 255;

/// An errno for the kernel (positive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

impl From<&estargz_core::Error> for Errno {
    fn from(e: &estargz_core::Error) -> Self {
        Errno(e.errno())
    }
}

pub type FsResult<T> = Result<T, Errno>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Directory,
    RegularFile,
    Symlink,
    CharDevice,
    BlockDevice,
    NamedPipe,
}

/// What `stat` shows for one inode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub size: u64,
    /// 512-byte units, rounded up to whole 4 KiB blocks.
    pub blocks: u64,
    /// Seconds since the epoch (the TOC has whole seconds).
    pub mtime: i64,
    pub kind: Kind,
    /// Permission bits with setuid, setgid and sticky.
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    /// Linux `new_encode_dev` of major:minor.
    pub rdev: u32,
}

/// One name in a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: u64,
    pub kind: Kind,
    pub name: String,
}

/// statfs numbers: a read-only layer reports no free space and no counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatFs {
    pub block_size: u32,
    pub name_max: u32,
}

/// One layer's file system.
pub struct LayerFs {
    reader: Arc<Reader>,
    /// Listings built on first use; the layer never changes.
    listings: Mutex<HashMap<NodeId, Arc<[DirEntry]>>>,
}

impl LayerFs {
    pub fn new(reader: Arc<Reader>) -> LayerFs {
        LayerFs {
            reader,
            listings: Mutex::new(HashMap::new()),
        }
    }

    pub fn reader(&self) -> &Arc<Reader> {
        &self.reader
    }

    /// The node behind an inode number.
    pub fn node_id(&self, ino: u64) -> FsResult<NodeId> {
        let id = ino.checked_sub(1).ok_or(Errno(libc::ENOENT))? as usize;
        if id < self.reader.index().nodes.len() {
            Ok(id)
        } else {
            Err(Errno(libc::ENOENT))
        }
    }

    fn dir_node(&self, ino: u64) -> FsResult<(NodeId, &Node)> {
        let id = self.reader.resolve(self.node_id(ino)?);
        let node = self.reader.node(id);
        if node.entry.kind == EntryType::Dir {
            Ok((id, node))
        } else {
            Err(Errno(libc::ENOTDIR))
        }
    }

    /// The entry `name` in directory `parent`, as overlayfs should see it.
    pub fn lookup(&self, parent: u64, name: &str) -> FsResult<Attr> {
        let (dir, node) = self.dir_node(parent)?;
        match overlay::present_lookup(dir == ROOT, &node.children, name) {
            Some(id) => self.getattr(id as u64 + 1),
            None => Err(Errno(libc::ENOENT)),
        }
    }

    pub fn getattr(&self, ino: u64) -> FsResult<Attr> {
        let id = self.node_id(ino)?;
        if overlay::is_whiteout(&self.reader.node(id).name) {
            return Ok(self.whiteout_attr(id));
        }
        let data = self.reader.resolve(id);
        let node = self.reader.node(data);
        let e = &node.entry;
        let (kind, size) = match e.kind {
            EntryType::Dir => (Kind::Directory, u64::from(BLOCK_SIZE)),
            EntryType::Reg => (Kind::RegularFile, e.size),
            EntryType::Symlink => (Kind::Symlink, e.link_name.len() as u64),
            EntryType::Char => (Kind::CharDevice, 0),
            EntryType::Block => (Kind::BlockDevice, 0),
            EntryType::Fifo => (Kind::NamedPipe, 0),
            // The index resolves hardlinks and attaches chunks to files.
            EntryType::Hardlink | EntryType::Chunk => return Err(Errno(libc::EIO)),
        };
        Ok(Attr {
            ino: data as u64 + 1,
            size,
            blocks: size.div_ceil(u64::from(BLOCK_SIZE)) * u64::from(BLOCK_SIZE / 512),
            mtime: e.mod_time.unwrap_or(0),
            kind,
            perm: (e.mode & 0o7777) as u16,
            nlink: node.nlink.max(1),
            uid: e.uid as u32,
            gid: e.gid as u32,
            rdev: encode_dev(e.dev_major, e.dev_minor),
        })
    }

    /// A `.wh.<name>` entry shown as the character device 0:0 that overlayfs
    /// takes for a whiteout.
    fn whiteout_attr(&self, id: NodeId) -> Attr {
        Attr {
            ino: id as u64 + 1,
            size: 0,
            blocks: 0,
            mtime: self.reader.node(id).entry.mod_time.unwrap_or(0),
            kind: Kind::CharDevice,
            perm: 0,
            nlink: 1,
            uid: 0,
            gid: 0,
            rdev: 0,
        }
    }

    /// The directory's entries in name order, without `.` and `..`.
    pub fn readdir(&self, ino: u64) -> FsResult<Arc<[DirEntry]>> {
        let (dir, node) = self.dir_node(ino)?;
        let mut listings = self.listings.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = listings.get(&dir) {
            return Ok(l.clone());
        }
        let mut entries = Vec::with_capacity(node.children.len());
        for (name, &id) in &node.children {
            let shown = match overlay::present(dir == ROOT, &node.children, name) {
                Presented::Hidden => continue,
                Presented::AsIs => name.as_str(),
                Presented::Whiteout(target) => target,
            };
            let attr = self.getattr(id as u64 + 1)?;
            entries.push(DirEntry {
                // What lookup reports too (a whiteout keeps its own inode
                // even if the TOC made it a hardlink).
                ino: attr.ino,
                kind: attr.kind,
                name: shown.to_string(),
            });
        }
        // Whiteouts change names, so re-sort for stable offsets.
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        let listing: Arc<[DirEntry]> = entries.into();
        listings.insert(dir, listing.clone());
        Ok(listing)
    }

    /// The parent directory's inode (for `..`).
    pub fn parent(&self, ino: u64) -> FsResult<u64> {
        let id = self.reader.resolve(self.node_id(ino)?);
        Ok(self.reader.node(id).parent as u64 + 1)
    }

    pub fn readlink(&self, ino: u64) -> FsResult<Vec<u8>> {
        let id = self.node_id(ino)?;
        let node = self.reader.node(self.reader.resolve(id));
        if node.entry.kind == EntryType::Symlink && !overlay::is_whiteout(&node.name) {
            Ok(node.entry.link_name.as_bytes().to_vec())
        } else {
            Err(Errno(libc::EINVAL))
        }
    }

    /// Whether reads of this inode go to file content (regular files).
    pub fn is_regular(&self, ino: u64) -> FsResult<bool> {
        Ok(self.getattr(ino)?.kind == Kind::RegularFile)
    }

    /// Up to `size` bytes at `offset`. Every byte comes from a chunk whose
    /// digest was checked; a failed fetch or check is EIO and a log line.
    pub fn read(&self, ino: u64, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        let id = self.node_id(ino)?;
        let attr = self.getattr(ino)?;
        match attr.kind {
            Kind::RegularFile => {}
            Kind::Directory => return Err(Errno(libc::EISDIR)),
            _ => return Err(Errno(libc::EINVAL)),
        }
        let len = (size as u64).min(attr.size.saturating_sub(offset)) as usize;
        let mut buf = vec![0; len];
        let mut done = 0;
        while done < len {
            match self
                .reader
                .read_at(id, offset + done as u64, &mut buf[done..])
            {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) => {
                    log::error!(
                        "read of {:?} at {} ({} bytes) failed: {e}",
                        self.reader.index().path(self.reader.resolve(id)),
                        offset + done as u64,
                        len - done
                    );
                    return Err(Errno(libc::EIO));
                }
            }
        }
        buf.truncate(done);
        Ok(buf)
    }

    /// Extended attributes: the TOC's, plus the overlay opaque marks on
    /// directories holding `.wh..wh..opq`.
    pub fn xattrs(&self, ino: u64) -> FsResult<Vec<(String, Vec<u8>)>> {
        let id = self.node_id(ino)?;
        if overlay::is_whiteout(&self.reader.node(id).name) {
            return Ok(Vec::new());
        }
        let node = self.reader.node(self.reader.resolve(id));
        let mut out: Vec<(String, Vec<u8>)> = node
            .entry
            .xattrs
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if node.entry.kind == EntryType::Dir && overlay::is_opaque(&node.children) {
            for name in overlay::OPAQUE_XATTRS {
                if !node.entry.xattrs.contains_key(name) {
                    out.push((name.to_string(), b"y".to_vec()));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    pub fn getxattr(&self, ino: u64, name: &str) -> FsResult<Vec<u8>> {
        self.xattrs(ino)?
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
            .ok_or(Errno(libc::ENODATA))
    }

    /// Names, each NUL-terminated, as listxattr(2) returns them.
    pub fn listxattr(&self, ino: u64) -> FsResult<Vec<u8>> {
        let mut out = Vec::new();
        for (k, _) in self.xattrs(ino)? {
            out.extend_from_slice(k.as_bytes());
            out.push(0);
        }
        Ok(out)
    }

    pub fn statfs(&self) -> StatFs {
        StatFs {
            block_size: BLOCK_SIZE,
            name_max: NAME_MAX,
        }
    }
}

/// Linux's `new_encode_dev`: what stat's st_rdev holds for a 32-bit dev_t.
pub fn encode_dev(major: u64, minor: u64) -> u32 {
    let (major, minor) = (major as u32, minor as u32);
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

#[cfg(test)]
mod tests;
