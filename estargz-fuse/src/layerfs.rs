//! The file system over one layer, as plain Rust: inode numbers, attributes,
//! directory listings with the overlayfs conventions, reads, links and
//! xattrs: [`ReadOnlyFs`] for one layer. Nothing here knows about FUSE, so
//! it is tested without a mount; `adapter` turns these answers into fuser
//! replies.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use estargz_core::reader::{Entry, NodeId, Reader, ROOT};
use estargz_core::toc::EntryType;

use crate::overlay::{self, Presented};
use crate::record::LayerAccess;
use crate::rofs::{
    walk_listing, Attr, DirEntry, FsError, FsResult, Kind, ReadOnlyFs, WalkEntry, BLOCK_SIZE,
};

/// FUSE's root inode; every other inode is a TOC node id plus one, so
/// numbers are stable for a given TOC and hardlinks share the target's.
pub use crate::rofs::ROOT_INO;

/// The layer never changes, so the kernel may keep what it learnt.
pub const TTL: Duration = Duration::from_secs(24 * 3600);

/// The inode number of a node.
fn inode(id: NodeId) -> u64 {
    id.get() + 1
}

fn no_entry() -> FsError {
    FsError::new(libc::ENOENT, "no such entry")
}

/// One layer's file system.
pub struct LayerFs {
    reader: Arc<Reader>,
    /// Listings built on first use; the layer never changes.
    listings: Mutex<HashMap<NodeId, Arc<[DirEntry]>>>,
    /// Where opened and read files are recorded, if anywhere.
    access: Option<Arc<LayerAccess>>,
}

impl LayerFs {
    pub fn new(reader: Arc<Reader>) -> LayerFs {
        LayerFs {
            reader,
            listings: Mutex::new(HashMap::new()),
            access: None,
        }
    }

    /// Records the regular files opened or read from now on in `access`.
    pub fn set_access(&mut self, access: Option<Arc<LayerAccess>>) {
        self.access = access;
    }

    /// Notes an access to regular file `ino` (hardlinks count as their
    /// target, the entry that holds the data).
    fn note_access(&self, ino: u64) {
        let Some(access) = &self.access else { return };
        if let Ok(id) = self.node_id(ino) {
            let data = self.reader.resolve(id);
            if self.reader.entry(data).kind() == EntryType::Reg {
                access.note(data, || self.reader.path(data));
            }
        }
    }

    pub fn reader(&self) -> &Arc<Reader> {
        &self.reader
    }

    /// The node behind an inode number.
    pub fn node_id(&self, ino: u64) -> FsResult<NodeId> {
        let n = ino.checked_sub(1).ok_or_else(no_entry)?;
        self.reader.index().node_id(n).ok_or_else(no_entry)
    }

    fn dir_node(&self, ino: u64) -> FsResult<(NodeId, Entry<'_>)> {
        let id = self.reader.resolve(self.node_id(ino)?);
        let node = self.reader.entry(id);
        if node.kind() == EntryType::Dir {
            Ok((id, node))
        } else {
            Err(FsError::new(libc::ENOTDIR, "not a directory"))
        }
    }

    /// A `.wh.<name>` entry shown as the character device 0:0 that overlayfs
    /// takes for a whiteout.
    fn whiteout_attr(&self, id: NodeId) -> Attr {
        let mtime = self.reader.entry(id).mod_time().unwrap_or(0);
        Attr {
            ino: inode(id),
            size: 0,
            blocks: 0,
            mtime,
            atime: mtime,
            ctime: mtime,
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
        let mut entries = Vec::with_capacity(node.child_count());
        for (name, id) in node.children() {
            let shown = match overlay::present(dir == ROOT, &node, name) {
                Presented::Hidden => continue,
                Presented::AsIs => name,
                Presented::Whiteout(target) => target,
            };
            let attr = self.getattr(inode(id))?;
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
        Ok(inode(self.reader.entry(id).parent()))
    }

    /// Extended attributes: the TOC's, plus the overlay opaque marks on
    /// directories holding `.wh..wh..opq`.
    pub fn xattrs(&self, ino: u64) -> FsResult<Vec<(String, Vec<u8>)>> {
        let id = self.node_id(ino)?;
        if overlay::is_whiteout(self.reader.entry(id).name()) {
            return Ok(Vec::new());
        }
        let node = self.reader.entry(self.reader.resolve(id));
        let mut out: Vec<(String, Vec<u8>)> = node
            .xattrs()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if node.kind() == EntryType::Dir && overlay::is_opaque(&node) {
            for name in overlay::OPAQUE_XATTRS {
                if !node.xattrs().contains_key(name) {
                    out.push((name.to_string(), b"y".to_vec()));
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

impl ReadOnlyFs for LayerFs {
    /// The entry `name` in directory `parent`, as overlayfs should see it.
    fn lookup(&self, parent: u64, name: &str) -> FsResult<Attr> {
        let (dir, node) = self.dir_node(parent)?;
        match overlay::present_lookup(dir == ROOT, &node, name) {
            Some(id) => self.getattr(inode(id)),
            None => Err(no_entry()),
        }
    }

    fn getattr(&self, ino: u64) -> FsResult<Attr> {
        let id = self.node_id(ino)?;
        if overlay::is_whiteout(self.reader.entry(id).name()) {
            return Ok(self.whiteout_attr(id));
        }
        let data = self.reader.resolve(id);
        let e = self.reader.entry(data);
        let (kind, size) = match e.kind() {
            EntryType::Dir => (Kind::Directory, u64::from(BLOCK_SIZE)),
            EntryType::Reg => (Kind::RegularFile, e.size()),
            EntryType::Symlink => (Kind::Symlink, e.link_name().len() as u64),
            EntryType::Char => (Kind::CharDevice, 0),
            EntryType::Block => (Kind::BlockDevice, 0),
            EntryType::Fifo => (Kind::NamedPipe, 0),
            // The index resolves hardlinks and attaches chunks to files.
            EntryType::Hardlink | EntryType::Chunk => {
                return Err(FsError::new(libc::EIO, "unresolved TOC entry type"))
            }
        };
        let mtime = e.mod_time().unwrap_or(0);
        Ok(Attr {
            ino: inode(data),
            size,
            blocks: size.div_ceil(u64::from(BLOCK_SIZE)) * u64::from(BLOCK_SIZE / 512),
            mtime,
            atime: e.access_time().unwrap_or(mtime),
            ctime: e.change_time().unwrap_or(mtime),
            kind,
            perm: (e.mode() & 0o7777) as u16,
            nlink: e.nlink().max(1),
            uid: e.uid() as u32,
            gid: e.gid() as u32,
            rdev: encode_dev(e.dev_major(), e.dev_minor()),
        })
    }

    fn readlink(&self, ino: u64) -> FsResult<Vec<u8>> {
        let id = self.node_id(ino)?;
        let node = self.reader.entry(self.reader.resolve(id));
        if node.kind() == EntryType::Symlink && !overlay::is_whiteout(node.name()) {
            Ok(node.link_name().as_bytes().to_vec())
        } else {
            Err(FsError::new(libc::EINVAL, "not a symlink"))
        }
    }

    /// Every byte comes from a chunk whose digest was checked; a failed
    /// fetch or check is EIO, logged as an error with the file's path.
    fn read(&self, ino: u64, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        let id = self.node_id(ino)?;
        let attr = self.getattr(ino)?;
        match attr.kind {
            Kind::RegularFile => {}
            Kind::Directory => return Err(FsError::new(libc::EISDIR, "a directory")),
            _ => return Err(FsError::new(libc::EINVAL, "not a regular file")),
        }
        self.note_access(ino);
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
                    let what = format!(
                        "read of {:?} at {} ({} bytes)",
                        self.reader.path(self.reader.resolve(id)),
                        offset + done as u64,
                        len - done
                    );
                    return Err(FsError::new(libc::EIO, what)
                        .caused_by(e)
                        .logged_at(log::Level::Error));
                }
            }
        }
        buf.truncate(done);
        Ok(buf)
    }

    fn opened(&self, ino: u64) {
        self.note_access(ino);
    }

    fn walk_dir(
        &self,
        ino: u64,
        offset: u64,
        add: impl FnMut(WalkEntry<'_>) -> FsResult<bool>,
    ) -> FsResult<()> {
        let listing = self.readdir(ino)?;
        walk_listing(ino, self.parent(ino)?, &listing, offset, add)
    }

    fn getxattr(&self, ino: u64, name: &str) -> FsResult<Vec<u8>> {
        self.xattrs(ino)?
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
            .ok_or_else(|| FsError::new(libc::ENODATA, "no such attribute"))
    }

    fn listxattr(&self, ino: u64) -> FsResult<Vec<u8>> {
        let mut out = Vec::new();
        for (k, _) in self.xattrs(ino)? {
            out.extend_from_slice(k.as_bytes());
            out.push(0);
        }
        Ok(out)
    }

    fn ttl(&self, _ino: u64) -> Duration {
        TTL
    }

    fn listing_is_stable(&self, _ino: u64) -> bool {
        true
    }
}

/// Linux's `new_encode_dev`: what stat's st_rdev holds for a 32-bit dev_t.
pub fn encode_dev(major: u64, minor: u64) -> u32 {
    let (major, minor) = (major as u32, minor as u32);
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

#[cfg(test)]
mod tests;
