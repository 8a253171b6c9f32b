//! Extracting a blob into a directory, verified and confined: every path is
//! resolved component by component with `O_NOFOLLOW` relative to the target
//! directory, so neither `..`, absolute names, nor symlinks or hardlinks
//! planted by earlier entries can make it write outside the target.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rayon::prelude::*;
use rustix::fs::{AtFlags, Mode, OFlags, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;

use crate::error::{Error, Result};
use crate::reader::{Entry, Index, NodeId, Reader, ROOT};
use crate::toc::EntryType;

/// Extraction settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ExtractOptions {
    /// Apply uid/gid from the TOC (default: when running as root).
    pub same_owner: bool,
    /// Apply extended attributes (file systems without support are skipped).
    pub xattrs: bool,
    /// Also write the builder's `.prefetch.landmark` / `.no.prefetch.landmark`
    /// files (by default they are skipped: they are not part of the layer's content).
    pub landmarks: bool,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        ExtractOptions {
            same_owner: rustix::process::geteuid().is_root(),
            xattrs: true,
            landmarks: false,
        }
    }
}

crate::options::option_setters!(ExtractOptions {
    same_owner: bool,
    xattrs: bool,
    landmarks: bool,
});

/// What was extracted.
#[derive(Debug, Default, Clone, Copy)]
pub struct ExtractStats {
    /// Regular files written (hard links included).
    pub files: u64,
    /// Directories created.
    pub dirs: u64,
    /// Symlinks, devices and FIFOs created.
    pub others: u64,
    /// File content bytes written.
    pub bytes: u64,
}

fn io_err(context: String, e: Errno) -> Error {
    Error::io(context, e.into())
}

fn timestamps(entry: &Entry) -> Timestamps {
    let t = Timespec {
        tv_sec: entry.mod_time().unwrap_or(0),
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

fn perm(entry: &Entry) -> Mode {
    Mode::from_raw_mode(entry.mode() & 0o7777)
}

/// A node to extract; its path is built only for messages.
type Item<'a> = Entry<'a>;

/// Most directory descriptors kept open (below common `ulimit -n` values).
const MAX_OPEN_DIRS: usize = 256;

/// Open descriptors of recently used target directories, by node. A miss
/// opens the directory from its nearest open ancestor, so extraction costs
/// a number of `openat` calls linear in the tree, not in the sum of depths.
#[derive(Default)]
struct DirFds {
    fds: HashMap<NodeId, (Arc<OwnedFd>, u64)>,
    /// Last use of each cached node, oldest first.
    by_use: BTreeMap<u64, NodeId>,
    tick: u64,
}

impl DirFds {
    fn get(&mut self, id: NodeId) -> Option<Arc<OwnedFd>> {
        let (fd, used) = self.fds.get_mut(&id)?;
        self.by_use.remove(used);
        self.tick += 1;
        *used = self.tick;
        self.by_use.insert(self.tick, id);
        Some(fd.clone())
    }

    fn put(&mut self, id: NodeId, fd: Arc<OwnedFd>) {
        if self.fds.len() >= MAX_OPEN_DIRS {
            if let Some((_, old)) = self.by_use.pop_first() {
                self.fds.remove(&old);
            }
        }
        self.tick += 1;
        self.by_use.insert(self.tick, id);
        if let Some((_, used)) = self.fds.insert(id, (fd, self.tick)) {
            self.by_use.remove(&used);
        }
    }
}

struct Extractor<'a> {
    index: &'a Index,
    reader: &'a Reader,
    root: Arc<OwnedFd>,
    opts: &'a ExtractOptions,
    dirs: Mutex<DirFds>,
}

impl Extractor<'_> {
    fn item(&self, id: NodeId) -> Item<'_> {
        self.index.entry(id)
    }

    /// Opens the target directory of node `id` without following symlinks:
    /// from the nearest ancestor already open, one component at a time.
    fn open_dir(&self, id: NodeId) -> Result<Arc<OwnedFd>> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut dirs = self.dirs.lock().unwrap_or_else(|p| p.into_inner());
        let mut chain = Vec::new();
        let mut cur = id;
        let mut fd = loop {
            if cur == ROOT {
                break self.root.clone();
            }
            if let Some(fd) = dirs.get(cur) {
                break fd;
            }
            chain.push(cur);
            cur = self.index.entry(cur).parent();
        };
        for &dir in chain.iter().rev() {
            let name = self.index.entry(dir).name();
            let next = rustix::fs::openat(&*fd, name, flags, Mode::empty()).map_err(|e| {
                if e == Errno::LOOP || e == Errno::NOTDIR {
                    Error::UnsafePath(self.index.path(dir))
                } else {
                    io_err(format!("opening directory {:?}", self.index.path(dir)), e)
                }
            })?;
            fd = Arc::new(next);
            dirs.put(dir, fd.clone());
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

    fn chown(&self, dir: &OwnedFd, base: &str, entry: &Entry) -> Result<()> {
        if !self.opts.same_owner {
            return Ok(());
        }
        let (uid, gid) = (
            u32::try_from(entry.uid())
                .map_err(|_| Error::InvalidArgument(format!("uid {}", entry.uid())))?,
            u32::try_from(entry.gid())
                .map_err(|_| Error::InvalidArgument(format!("gid {}", entry.gid())))?,
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
        for (k, v) in item.xattrs() {
            match rustix::fs::fsetxattr(fd, k.as_str(), v, XattrFlags::empty()) {
                Ok(()) | Err(Errno::NOTSUP) => {}
                Err(e) => {
                    return Err(io_err(
                        format!("setting xattr {k:?} on {:?}", item.path()),
                        e,
                    ))
                }
            }
        }
        Ok(())
    }

    /// Applies owner, xattrs, mode and times to an open file or directory.
    fn finish(&self, dir: &OwnedFd, base: &str, fd: &OwnedFd, item: &Item) -> Result<()> {
        self.chown(dir, base, item)?;
        self.set_xattrs(fd, item)?;
        // After chown, which clears setuid/setgid.
        rustix::fs::fchmod(fd, perm(item))
            .map_err(|e| io_err(format!("chmod {:?}", item.path()), e))?;
        rustix::fs::futimens(fd, &timestamps(item))
            .map_err(|e| io_err(format!("setting times of {:?}", item.path()), e))
    }

    fn make_dir(&self, item: &Item) -> Result<()> {
        let dir = self.open_dir(item.parent())?;
        match rustix::fs::mkdirat(&*dir, item.name(), Mode::from_raw_mode(0o700)) {
            Ok(()) | Err(Errno::EXIST) => Ok(()),
            Err(e) => Err(io_err(format!("creating directory {:?}", item.path()), e)),
        }
    }

    fn write_file(&self, item: &Item) -> Result<u64> {
        let dir = self.open_dir(item.parent())?;
        let base = item.name();
        self.clear(&dir, base)?;
        let fd = rustix::fs::openat(
            &*dir,
            base,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| io_err(format!("creating {:?}", item.path()), e))?;
        let mut file = std::fs::File::from(fd);
        let mut written = 0;
        self.reader.for_each_chunk(item.id(), |data| {
            written += data.len() as u64;
            file.write_all(data)
                .map_err(|e| Error::io(format!("writing {:?}", item.path()), e))
        })?;
        let fd = OwnedFd::from(file);
        self.finish(&dir, base, &fd, item)?;
        Ok(written)
    }

    /// Symlinks, devices and fifos.
    fn make_special(&self, item: &Item) -> Result<()> {
        let dir = self.open_dir(item.parent())?;
        let dir = &*dir;
        let base = item.name();
        self.clear(dir, base)?;
        let e = item;
        let context = || format!("creating {:?}", item.path());
        match e.kind() {
            EntryType::Symlink => {
                rustix::fs::symlinkat(e.link_name(), dir, base)
                    .map_err(|er| io_err(context(), er))?;
                self.chown(dir, base, e)?;
                return rustix::fs::utimensat(dir, base, &timestamps(e), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|er| io_err(format!("setting times of {:?}", item.path()), er));
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let file_type = match e.kind() {
                    EntryType::Char => rustix::fs::FileType::CharacterDevice,
                    EntryType::Block => rustix::fs::FileType::BlockDevice,
                    _ => rustix::fs::FileType::Fifo,
                };
                let dev = rustix::fs::makedev(e.dev_major() as u32, e.dev_minor() as u32);
                rustix::fs::mknodat(dir, base, file_type, Mode::from_raw_mode(0o600), dev)
                    .map_err(|er| io_err(context(), er))?;
            }
            _ => unreachable!("only called for special files"),
        }
        self.chown(dir, base, e)?;
        // Opening a device or fifo could block or have side effects: use the *at forms.
        rustix::fs::chmodat(dir, base, perm(e), AtFlags::empty())
            .map_err(|er| io_err(format!("chmod {:?}", item.path()), er))?;
        rustix::fs::utimensat(dir, base, &timestamps(e), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|er| io_err(format!("setting times of {:?}", item.path()), er))
    }

    /// Links `item` to `target` itself: without `AT_SYMLINK_FOLLOW`, a link
    /// to a symlink is a second name of the symlink, as with `tar -x`.
    fn make_hardlink(&self, item: &Item, target: &Item) -> Result<()> {
        let dir = self.open_dir(item.parent())?;
        let tdir = self.open_dir(target.parent())?;
        self.clear(&dir, item.name())?;
        rustix::fs::linkat(&*tdir, target.name(), &*dir, item.name(), AtFlags::empty()).map_err(
            |e| {
                io_err(
                    format!("linking {:?} to {:?}", item.path(), target.path()),
                    e,
                )
            },
        )
    }

    fn finish_dir(&self, item: &Item) -> Result<()> {
        if item.id() == ROOT {
            // The target directory itself keeps its owner and mode.
            return Ok(());
        }
        let dir = self.open_dir(item.id())?;
        if item.is_implicit() {
            // No entry describes it: like tar, a plain 0755 directory made now.
            return rustix::fs::fchmod(&*dir, Mode::from_raw_mode(0o755))
                .map_err(|e| io_err(format!("chmod {:?}", item.path()), e));
        }
        let parent_fd = self.open_dir(item.parent())?;
        self.finish(&parent_fd, item.name(), &dir, item)
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
    let index = reader.index();
    let ex = Extractor {
        index,
        reader,
        root: Arc::new(root),
        opts,
        dirs: Mutex::new(DirFds::default()),
    };
    let node = |id: NodeId| index.entry(id);

    // Depth-first order, so parents come before children.
    let mut order = Vec::with_capacity(index.len());
    let mut stack = vec![ROOT];
    while let Some(id) = stack.pop() {
        order.push(id);
        stack.extend(node(id).children().rev().map(|(_, child)| child));
    }
    if !opts.landmarks {
        order.retain(|&id| {
            node(id).parent() != ROOT
                || !matches!(
                    node(id).name(),
                    crate::build::PREFETCH_LANDMARK | crate::build::NO_PREFETCH_LANDMARK
                )
        });
    }
    let is_dir =
        |id: NodeId| node(id).hardlink_target().is_none() && node(id).kind() == EntryType::Dir;

    let mut stats = ExtractStats::default();
    for &id in order.iter().skip(1).filter(|&&id| is_dir(id)) {
        ex.make_dir(&ex.item(id))?;
        stats.dirs += 1;
    }
    let files: Vec<NodeId> = order
        .iter()
        .copied()
        .filter(|&id| node(id).hardlink_target().is_none() && node(id).kind() == EntryType::Reg)
        .collect();
    stats.bytes = files
        .par_iter()
        .map(|&id| ex.write_file(&ex.item(id)))
        .try_reduce(|| 0, |a, b| Ok(a + b))?;
    stats.files = files.len() as u64;
    // Every possible link target (files, symlinks, devices) exists before
    // the first hardlink is made.
    for &id in &order {
        let entry = node(id);
        if entry.hardlink_target().is_none()
            && matches!(
                entry.kind(),
                EntryType::Symlink | EntryType::Char | EntryType::Block | EntryType::Fifo
            )
        {
            ex.make_special(&ex.item(id))?;
            stats.others += 1;
        }
    }
    for &id in &order {
        if let Some(target) = node(id).hardlink_target() {
            ex.make_hardlink(&ex.item(id), &ex.item(target))?;
            stats.others += 1;
        }
    }
    // Directory metadata last (deepest first), so writes inside don't change mtimes.
    for &id in order.iter().rev().filter(|&&id| is_dir(id)) {
        ex.finish_dir(&ex.item(id))?;
    }
    Ok(stats)
}
