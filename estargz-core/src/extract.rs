//! Extracting a blob into a directory, verified and confined: every path is
//! resolved component by component with `O_NOFOLLOW` relative to the target
//! directory, so neither `..`, absolute names, nor symlinks or hardlinks
//! planted by earlier entries can make it write outside the target.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::Path;

use rayon::prelude::*;
use rustix::fs::{AtFlags, Mode, OFlags, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;

use crate::error::{Error, Result};
use crate::reader::{Node, NodeId, Reader, ROOT};
use crate::toc::{EntryType, TocEntry};

/// Extraction settings.
#[derive(Debug, Clone)]
pub struct ExtractOptions {
    /// Apply uid/gid from the TOC (default: when running as root).
    pub preserve_owners: bool,
    /// Apply extended attributes (file systems without support are skipped).
    pub xattrs: bool,
    /// Also write the builder's `.prefetch.landmark` / `.no.prefetch.landmark`
    /// files (by default they are skipped: they are not part of the layer's content).
    pub landmarks: bool,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        ExtractOptions {
            preserve_owners: rustix::process::geteuid().is_root(),
            xattrs: true,
            landmarks: false,
        }
    }
}

/// What was extracted.
#[derive(Debug, Default, Clone, Copy)]
pub struct ExtractStats {
    pub files: u64,
    pub dirs: u64,
    pub others: u64,
    pub bytes: u64,
}

fn io_err(context: String, e: Errno) -> Error {
    Error::io(context, e.into())
}

fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

fn timestamps(entry: &TocEntry) -> Timestamps {
    let t = Timespec {
        tv_sec: entry.mod_time.unwrap_or(0),
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

fn perm(entry: &TocEntry) -> Mode {
    Mode::from_raw_mode(entry.mode & 0o7777)
}

/// A node with its path, computed once per extracted entry.
struct Item<'a> {
    id: NodeId,
    node: &'a Node,
    path: String,
}

struct Extractor<'a> {
    reader: &'a Reader,
    root: OwnedFd,
    opts: &'a ExtractOptions,
}

impl Extractor<'_> {
    /// Opens the directory at `path` (cleaned, relative) without following symlinks.
    fn open_dir(&self, path: &str) -> Result<OwnedFd> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut fd = rustix::fs::openat(&self.root, ".", flags, Mode::empty())
            .map_err(|e| io_err("opening the target directory".into(), e))?;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            fd = rustix::fs::openat(&fd, part, flags, Mode::empty()).map_err(|e| {
                if e == Errno::LOOP || e == Errno::NOTDIR {
                    Error::UnsafePath(path.to_string())
                } else {
                    io_err(format!("opening directory {path:?}"), e)
                }
            })?;
        }
        Ok(fd)
    }

    /// Removes a non-directory already at `base` so it can be replaced (like tar).
    fn clear(&self, dir: &OwnedFd, base: &str) -> Result<()> {
        match rustix::fs::unlinkat(dir, base, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(io_err(format!("replacing {base:?}"), e)),
        }
    }

    fn chown(&self, dir: &OwnedFd, base: &str, entry: &TocEntry) -> Result<()> {
        if !self.opts.preserve_owners {
            return Ok(());
        }
        let (uid, gid) = (
            u32::try_from(entry.uid)
                .map_err(|_| Error::InvalidArgument(format!("uid {}", entry.uid)))?,
            u32::try_from(entry.gid)
                .map_err(|_| Error::InvalidArgument(format!("gid {}", entry.gid)))?,
        );
        rustix::fs::chownat(
            dir,
            base,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| io_err(format!("chown {base:?}"), e))
    }

    fn set_xattrs(&self, fd: &OwnedFd, item: &Item) -> Result<()> {
        if !self.opts.xattrs {
            return Ok(());
        }
        for (k, v) in &item.node.entry.xattrs {
            match rustix::fs::fsetxattr(fd, k.as_str(), v, XattrFlags::empty()) {
                Ok(()) | Err(Errno::NOTSUP) => {}
                Err(e) => return Err(io_err(format!("setting xattr {k:?} on {:?}", item.path), e)),
            }
        }
        Ok(())
    }

    /// Applies owner, xattrs, mode and times to an open file or directory.
    fn finish(&self, dir: &OwnedFd, base: &str, fd: &OwnedFd, item: &Item) -> Result<()> {
        self.chown(dir, base, &item.node.entry)?;
        self.set_xattrs(fd, item)?;
        // After chown, which clears setuid/setgid.
        rustix::fs::fchmod(fd, perm(&item.node.entry))
            .map_err(|e| io_err(format!("chmod {:?}", item.path), e))?;
        rustix::fs::futimens(fd, &timestamps(&item.node.entry))
            .map_err(|e| io_err(format!("setting times of {:?}", item.path), e))
    }

    fn make_dir(&self, item: &Item) -> Result<()> {
        let (parent, base) = split(&item.path);
        let dir = self.open_dir(parent)?;
        match rustix::fs::mkdirat(&dir, base, Mode::from_raw_mode(0o700)) {
            Ok(()) | Err(Errno::EXIST) => Ok(()),
            Err(e) => Err(io_err(format!("creating directory {:?}", item.path), e)),
        }
    }

    fn write_file(&self, item: &Item) -> Result<u64> {
        let (parent, base) = split(&item.path);
        let dir = self.open_dir(parent)?;
        self.clear(&dir, base)?;
        let fd = rustix::fs::openat(
            &dir,
            base,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| io_err(format!("creating {:?}", item.path), e))?;
        let mut file = std::fs::File::from(fd);
        let mut written = 0;
        self.reader.for_each_chunk(item.id, |data| {
            written += data.len() as u64;
            file.write_all(data)
                .map_err(|e| Error::io(format!("writing {:?}", item.path), e))
        })?;
        let fd = OwnedFd::from(file);
        self.finish(&dir, base, &fd, item)?;
        Ok(written)
    }

    /// Symlinks, devices and fifos.
    fn make_special(&self, item: &Item) -> Result<()> {
        let (parent, base) = split(&item.path);
        let dir = self.open_dir(parent)?;
        self.clear(&dir, base)?;
        let e = &item.node.entry;
        let context = || format!("creating {:?}", item.path);
        match e.kind {
            EntryType::Symlink => {
                rustix::fs::symlinkat(e.link_name.as_str(), &dir, base)
                    .map_err(|er| io_err(context(), er))?;
                self.chown(&dir, base, e)?;
                return rustix::fs::utimensat(
                    &dir,
                    base,
                    &timestamps(e),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(|er| io_err(format!("setting times of {:?}", item.path), er));
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let file_type = match e.kind {
                    EntryType::Char => rustix::fs::FileType::CharacterDevice,
                    EntryType::Block => rustix::fs::FileType::BlockDevice,
                    _ => rustix::fs::FileType::Fifo,
                };
                let dev = rustix::fs::makedev(e.dev_major as u32, e.dev_minor as u32);
                rustix::fs::mknodat(&dir, base, file_type, Mode::from_raw_mode(0o600), dev)
                    .map_err(|er| io_err(context(), er))?;
            }
            _ => unreachable!("only called for special files"),
        }
        self.chown(&dir, base, e)?;
        // Opening a device or fifo could block or have side effects: use the *at forms.
        rustix::fs::chmodat(&dir, base, perm(e), AtFlags::empty())
            .map_err(|er| io_err(format!("chmod {:?}", item.path), er))?;
        rustix::fs::utimensat(&dir, base, &timestamps(e), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|er| io_err(format!("setting times of {:?}", item.path), er))
    }

    fn make_hardlink(&self, item: &Item, target: &Item) -> Result<()> {
        let (parent, base) = split(&item.path);
        let (tparent, tbase) = split(&target.path);
        let dir = self.open_dir(parent)?;
        let tdir = self.open_dir(tparent)?;
        self.clear(&dir, base)?;
        rustix::fs::linkat(&tdir, tbase, &dir, base, AtFlags::empty())
            .map_err(|e| io_err(format!("linking {:?} to {:?}", item.path, target.path), e))
    }

    fn finish_dir(&self, item: &Item) -> Result<()> {
        let dir = self.open_dir(&item.path)?;
        if item.path.is_empty() {
            // The target directory itself keeps its owner and mode.
            return Ok(());
        }
        if item.node.implicit {
            // No entry describes it: like tar, a plain 0755 directory made now.
            return rustix::fs::fchmod(&dir, Mode::from_raw_mode(0o755))
                .map_err(|e| io_err(format!("chmod {:?}", item.path), e));
        }
        let (parent, base) = split(&item.path);
        let parent_fd = self.open_dir(parent)?;
        self.finish(&parent_fd, base, &dir, item)
    }
}

/// Extracts every entry of `reader` under `dest` (created if missing).
pub fn extract(reader: &Reader, dest: &Path, opts: &ExtractOptions) -> Result<ExtractStats> {
    std::fs::create_dir_all(dest)
        .map_err(|e| Error::io(format!("creating {}", dest.display()), e))?;
    let root = rustix::fs::open(
        dest,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_err(format!("opening {}", dest.display()), e))?;
    let ex = Extractor { reader, root, opts };
    let index = reader.index();
    let nodes = &index.nodes;
    let item = |id: NodeId| Item {
        id,
        node: &nodes[id],
        path: index.path(id),
    };

    // Depth-first order, so parents come before children.
    let mut order = Vec::with_capacity(nodes.len());
    let mut stack = vec![ROOT];
    while let Some(id) = stack.pop() {
        order.push(id);
        stack.extend(nodes[id].children.values().rev());
    }
    if !opts.landmarks {
        order.retain(|&id| {
            nodes[id].parent != ROOT
                || !matches!(
                    nodes[id].name.as_str(),
                    crate::build::PREFETCH_LANDMARK | crate::build::NO_PREFETCH_LANDMARK
                )
        });
    }
    let is_dir =
        |id: NodeId| nodes[id].link_target.is_none() && nodes[id].entry.kind == EntryType::Dir;

    let mut stats = ExtractStats::default();
    for &id in order.iter().skip(1).filter(|&&id| is_dir(id)) {
        ex.make_dir(&item(id))?;
        stats.dirs += 1;
    }
    let files: Vec<NodeId> = order
        .iter()
        .copied()
        .filter(|&id| nodes[id].link_target.is_none() && nodes[id].entry.kind == EntryType::Reg)
        .collect();
    stats.bytes = files
        .par_iter()
        .map(|&id| ex.write_file(&item(id)))
        .try_reduce(|| 0, |a, b| Ok(a + b))?;
    stats.files = files.len() as u64;
    for &id in &order {
        let node = &nodes[id];
        if let Some(target) = node.link_target {
            ex.make_hardlink(&item(id), &item(target))?;
            stats.others += 1;
        } else if matches!(
            node.entry.kind,
            EntryType::Symlink | EntryType::Char | EntryType::Block | EntryType::Fifo
        ) {
            ex.make_special(&item(id))?;
            stats.others += 1;
        }
    }
    // Directory metadata last (deepest first), so writes inside don't change mtimes.
    for &id in order.iter().rev().filter(|&&id| is_dir(id)) {
        ex.finish_dir(&item(id))?;
    }
    Ok(stats)
}
