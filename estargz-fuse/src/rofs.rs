//! The read-only file system as plain Rust: the one interface the fuser
//! adapter serves, implemented by one layer ([`crate::layerfs::LayerFs`])
//! and by the layer store ([`crate::store::Store`]). Answers are values
//! and [`FsError`]s, never replies, so both are tested without a mount.

mod error;

use std::ffi::OsStr;
use std::time::Duration;

#[cfg(test)]
pub(crate) use error::ErrnoOf;
pub use error::{Errno, FsError, FsResult};

/// FUSE's root inode.
pub const ROOT_INO: u64 = 1;
/// Block size reported by stat and statfs.
pub const BLOCK_SIZE: u32 = 4096;
/// Longest name, as statfs reports it.
pub const NAME_MAX: u32 = 255;

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
    /// 512-byte units.
    pub blocks: u64,
    /// Seconds since the epoch (the TOC has whole seconds).
    pub mtime: i64,
    /// Access and status change times (zstd:chunked TOCs record them;
    /// otherwise the modification time).
    pub atime: i64,
    pub ctime: i64,
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

/// One entry handed to a directory walk: its inode, the offset of the
/// entry after it, its kind and name.
pub struct WalkEntry<'a> {
    pub ino: u64,
    pub next: u64,
    pub kind: Kind,
    pub name: &'a OsStr,
}

/// A read-only file system. Inode numbers are the implementation's; the
/// adapter passes them through unchanged.
pub trait ReadOnlyFs: Send + Sync + 'static {
    /// The entry `name` in directory `parent`.
    fn lookup(&self, parent: u64, name: &str) -> FsResult<Attr>;

    fn getattr(&self, ino: u64) -> FsResult<Attr>;

    fn readlink(&self, ino: u64) -> FsResult<Vec<u8>>;

    /// Regular file `ino` was opened (access recording counts opens: later
    /// reads may be served from the kernel's cache).
    fn opened(&self, _ino: u64) {}

    /// Up to `size` bytes at `offset` (fewer only at the end of the file).
    fn read(&self, ino: u64, offset: u64, size: u32) -> FsResult<Vec<u8>>;

    /// Feeds directory `ino`'s entries from `offset` to `add` until it
    /// reports a full reply; see [`walk_listing`] for the offsets.
    fn walk_dir(
        &self,
        ino: u64,
        offset: u64,
        add: impl FnMut(WalkEntry<'_>) -> FsResult<bool>,
    ) -> FsResult<()>;

    /// Whether `ino` is a directory that can be listed.
    fn opendir(&self, ino: u64) -> FsResult<()> {
        // The first entry is `.`: this checks the directory and nothing more.
        self.walk_dir(ino, 0, |_| Ok(true))
    }

    fn getxattr(&self, ino: u64, name: &str) -> FsResult<Vec<u8>>;

    /// Names, each NUL-terminated, as listxattr(2) returns them.
    fn listxattr(&self, ino: u64) -> FsResult<Vec<u8>>;

    fn statfs(&self) -> StatFs {
        StatFs {
            block_size: BLOCK_SIZE,
            name_max: NAME_MAX,
        }
    }

    /// How long the kernel may keep the name and attributes of `ino`.
    fn ttl(&self, ino: u64) -> Duration;

    /// Whether directory `ino`'s listing may stay in the kernel's cache
    /// across opens (it never changes while the file system runs).
    fn listing_is_stable(&self, ino: u64) -> bool;
}

/// The walk over one directory whose entries (without `.` and `..`) are
/// `listing`: offsets 0 and 1 are `.` and `..`, listing entry i is at
/// i + 2. A listing that changes between calls (the store's namespace)
/// may show a reader an entry twice or miss one; nothing reads those but
/// people.
pub fn walk_listing(
    ino: u64,
    parent: u64,
    listing: &[DirEntry],
    offset: u64,
    mut add: impl FnMut(WalkEntry<'_>) -> FsResult<bool>,
) -> FsResult<()> {
    let dots = [(ino, "."), (parent, "..")];
    let mut next = offset;
    while (next as usize) < listing.len() + 2 {
        let i = next as usize;
        let (ino, kind, name) = if i < 2 {
            (dots[i].0, Kind::Directory, dots[i].1)
        } else {
            let e = &listing[i - 2];
            (e.ino, e.kind, e.name.as_str())
        };
        let full = add(WalkEntry {
            ino,
            next: next + 1,
            kind,
            name: OsStr::new(name),
        })?;
        if full {
            break;
        }
        next += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(listing: &[DirEntry], offset: u64, room: usize) -> Vec<(u64, u64, String)> {
        let mut out = Vec::new();
        walk_listing(10, 3, listing, offset, |w| {
            out.push((w.ino, w.next, w.name.to_string_lossy().into_owned()));
            Ok(out.len() >= room)
        })
        .unwrap();
        out
    }

    #[test]
    fn walks_resume_at_any_offset() {
        let listing = [
            DirEntry {
                ino: 11,
                kind: Kind::RegularFile,
                name: "a".into(),
            },
            DirEntry {
                ino: 12,
                kind: Kind::Directory,
                name: "b".into(),
            },
        ];
        let all = [
            (10, 1, ".".to_string()),
            (3, 2, "..".to_string()),
            (11, 3, "a".to_string()),
            (12, 4, "b".to_string()),
        ];
        assert_eq!(walk(&listing, 0, usize::MAX), all);
        for offset in 0..=4 {
            assert_eq!(walk(&listing, offset, usize::MAX), all[offset as usize..]);
            // A full reply after one entry stops the walk there.
            assert_eq!(
                walk(&listing, offset, 1),
                all[offset as usize..]
                    .iter()
                    .take(1)
                    .cloned()
                    .collect::<Vec<_>>()
            );
        }
        // Past the end: nothing, not an error.
        assert!(walk(&listing, 99, usize::MAX).is_empty());
    }

    #[test]
    fn an_error_from_the_consumer_ends_the_walk() {
        let err = walk_listing(10, 3, &[], 0, |_| Err(FsError::new(libc::EIO, "full")));
        assert_eq!(err.unwrap_err().errno(), Errno(libc::EIO));
    }
}
