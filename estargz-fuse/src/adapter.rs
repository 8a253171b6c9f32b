//! The thin layer between fuser and [`LayerFs`]: argument and reply
//! conversion, kernel settings, and the per-inode open mode passthrough
//! needs. No file system decisions are made here.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    BackingId, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    InitFlags, KernelConfig, LockOwner, OpenAccMode, OpenFlags, ReplyAttr, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyXattr,
    Request,
};

use crate::layerfs::{self, Attr, DirEntry, Kind, LayerFs};
use crate::passthrough::Materializer;

/// The layer never changes, so the kernel may keep what it learnt.
const TTL: Duration = Duration::from_secs(24 * 3600);
const FH_DAEMON: u64 = 0;
const FH_PASSTHROUGH: u64 = 1;

/// How the open files of one inode are served. The kernel refuses (EIO to
/// the application) a passthrough open while the inode is open in cached
/// mode and the reverse, so every open of an inode uses the mode of the
/// first one still open.
enum OpenMode {
    Daemon(u32),
    Passthrough(u32, BackingId),
}

pub struct FuseLayer {
    fs: LayerFs,
    materializer: Option<Materializer>,
    opens: Mutex<HashMap<u64, OpenMode>>,
}

impl FuseLayer {
    /// `materializer`: where fully cached files are copied for kernel
    /// passthrough; `None` serves every read through the daemon.
    pub fn new(fs: LayerFs, materializer: Option<Materializer>) -> FuseLayer {
        FuseLayer {
            fs,
            materializer,
            opens: Mutex::new(HashMap::new()),
        }
    }

    fn opens(&self) -> std::sync::MutexGuard<'_, HashMap<u64, OpenMode>> {
        self.opens.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn listing(&self, ino: u64) -> Result<(Arc<[DirEntry]>, u64), layerfs::Errno> {
        Ok((self.fs.readdir(ino)?, self.fs.parent(ino)?))
    }

    fn open_file(&self, ino: u64, reply: ReplyOpen) {
        let mut opens = self.opens();
        match opens.get_mut(&ino) {
            Some(OpenMode::Daemon(n)) => {
                *n += 1;
                return reply.opened(FileHandle(FH_DAEMON), FopenFlags::FOPEN_KEEP_CACHE);
            }
            Some(OpenMode::Passthrough(n, id)) => {
                *n += 1;
                return reply.opened_passthrough(
                    FileHandle(FH_PASSTHROUGH),
                    FopenFlags::empty(),
                    id,
                );
            }
            None => {}
        }
        drop(opens);
        // Copying a file may take a while; do it without the lock and
        // recheck, another open may have chosen a mode meanwhile.
        let backing = self.materializer.as_ref().and_then(|m| {
            let id = self.fs.node_id(ino).ok()?;
            let file = m.open(self.fs.reader(), id)?;
            reply
                .open_backing(&file)
                .map_err(|e| log::warn!("passthrough backing for inode {ino} refused: {e}"))
                .ok()
        });
        let mut opens = self.opens();
        let mode = opens.entry(ino).or_insert_with(|| match backing {
            Some(id) => {
                log::debug!("inode {ino}: served by kernel passthrough");
                OpenMode::Passthrough(0, id)
            }
            None => OpenMode::Daemon(0),
        });
        match mode {
            OpenMode::Daemon(n) => {
                *n += 1;
                reply.opened(FileHandle(FH_DAEMON), FopenFlags::FOPEN_KEEP_CACHE)
            }
            OpenMode::Passthrough(n, id) => {
                *n += 1;
                reply.opened_passthrough(FileHandle(FH_PASSTHROUGH), FopenFlags::empty(), id)
            }
        }
    }
}

pub(crate) fn errno(e: layerfs::Errno) -> Errno {
    Errno::from_i32(e.0)
}

pub(crate) fn file_type(kind: Kind) -> FileType {
    match kind {
        Kind::Directory => FileType::Directory,
        Kind::RegularFile => FileType::RegularFile,
        Kind::Symlink => FileType::Symlink,
        Kind::CharDevice => FileType::CharDevice,
        Kind::BlockDevice => FileType::BlockDevice,
        Kind::NamedPipe => FileType::NamedPipe,
    }
}

fn time(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

pub(crate) fn file_attr(a: &Attr) -> FileAttr {
    let t = time(a.mtime);
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks,
        atime: t,
        mtime: t,
        ctime: t,
        crtime: t,
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: layerfs::BLOCK_SIZE,
        flags: 0,
    }
}

/// Feeds the entries of directory `ino` from `offset` to `add(ino, next
/// offset, kind, name)` until it reports a full reply. Offsets: 0 and 1 are
/// `.` and `..`, listing entry i is at i + 2. Layer listings never change;
/// the store's namespace listings can, and then a reader may see an entry
/// twice or miss one (nothing reads them but people).
pub(crate) fn walk_dir(
    ino: u64,
    parent: u64,
    listing: &[DirEntry],
    offset: u64,
    mut add: impl FnMut(u64, u64, Kind, &OsStr) -> Result<bool, layerfs::Errno>,
) -> Result<(), layerfs::Errno> {
    let dots = [(ino, "."), (parent, "..")];
    let mut next = offset;
    while (next as usize) < listing.len() + 2 {
        let i = next as usize;
        let full = if i < 2 {
            add(dots[i].0, next + 1, Kind::Directory, OsStr::new(dots[i].1))?
        } else {
            let e = &listing[i - 2];
            add(e.ino, next + 1, e.kind, OsStr::new(&e.name))?
        };
        if full {
            break;
        }
        next += 1;
    }
    Ok(())
}

/// Requests a read-only layer has no use for, answered as the kernel
/// expects (fuser's defaults answer ENOSYS with a `[Not Implemented]`
/// warning): nothing is ever written, so flush and fsync succeed; ENOSYS
/// for poll, lseek and copy_file_range makes the kernel stop asking and do
/// the generic thing itself (files always ready, SEEK_DATA/SEEK_HOLE over
/// one extent, copies by read + write); no ioctl is supported, and ENOTTY
/// is what programs probing one (terminal checks, FS_IOC_GETFLAGS) expect.
/// Used inside the `Filesystem` impls of both the mount and the store.
#[macro_export]
#[doc(hidden)]
macro_rules! answer_unused_requests {
    () => {
        fn flush(
            &self,
            _req: &fuser::Request,
            _ino: fuser::INodeNo,
            _fh: fuser::FileHandle,
            _lock_owner: fuser::LockOwner,
            reply: fuser::ReplyEmpty,
        ) {
            reply.ok();
        }

        fn fsync(
            &self,
            _req: &fuser::Request,
            _ino: fuser::INodeNo,
            _fh: fuser::FileHandle,
            _datasync: bool,
            reply: fuser::ReplyEmpty,
        ) {
            reply.ok();
        }

        fn fsyncdir(
            &self,
            _req: &fuser::Request,
            _ino: fuser::INodeNo,
            _fh: fuser::FileHandle,
            _datasync: bool,
            reply: fuser::ReplyEmpty,
        ) {
            reply.ok();
        }

        fn poll(
            &self,
            _req: &fuser::Request,
            _ino: fuser::INodeNo,
            _fh: fuser::FileHandle,
            _ph: fuser::PollNotifier,
            _events: fuser::PollEvents,
            _flags: fuser::PollFlags,
            reply: fuser::ReplyPoll,
        ) {
            reply.error(fuser::Errno::ENOSYS);
        }

        fn lseek(
            &self,
            _req: &fuser::Request,
            _ino: fuser::INodeNo,
            _fh: fuser::FileHandle,
            _offset: i64,
            _whence: i32,
            reply: fuser::ReplyLseek,
        ) {
            reply.error(fuser::Errno::ENOSYS);
        }

        fn copy_file_range(
            &self,
            _req: &fuser::Request,
            _ino_in: fuser::INodeNo,
            _fh_in: fuser::FileHandle,
            _offset_in: u64,
            _ino_out: fuser::INodeNo,
            _fh_out: fuser::FileHandle,
            _offset_out: u64,
            _len: u64,
            _flags: fuser::CopyFileRangeFlags,
            reply: fuser::ReplyWrite,
        ) {
            reply.error(fuser::Errno::ENOSYS);
        }

        fn ioctl(
            &self,
            _req: &fuser::Request,
            _ino: fuser::INodeNo,
            _fh: fuser::FileHandle,
            _flags: fuser::IoctlFlags,
            _cmd: u32,
            _in_data: &[u8],
            _out_size: u32,
            reply: fuser::ReplyIoctl,
        ) {
            reply.error(fuser::Errno::from_i32(libc::ENOTTY));
        }
    };
}

/// getxattr/listxattr size negotiation: size 0 asks for the length.
pub(crate) fn reply_xattr(value: &[u8], size: u32, reply: ReplyXattr) {
    if size == 0 {
        reply.size(value.len() as u32)
    } else if value.len() > size as usize {
        reply.error(Errno::from_i32(libc::ERANGE))
    } else {
        reply.data(value)
    }
}

impl Filesystem for FuseLayer {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Large sequential reads: as much readahead as the kernel allows.
        if let Err(max) = config.set_max_readahead(u32::MAX) {
            let _ = config.set_max_readahead(max);
        }
        // The kernel sizes requests by max(max_write, max_readahead): 1 MiB
        // reads (256 pages) instead of 128 KiB cut the per-request cost of
        // daemon-served reads. Nothing is ever written.
        if let Err(max) = config.set_max_write(1 << 20) {
            let _ = config.set_max_write(max);
        }
        // More readahead requests in flight keep all workers busy.
        let _ = config.set_max_background(64);
        for flag in [
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_CACHE_SYMLINKS,
            // Attributes are in memory: hand them out with the listing so
            // `find`/`ls -l` need no LOOKUP per entry.
            InitFlags::FUSE_DO_READDIRPLUS,
        ] {
            let _ = config.add_capabilities(flag);
        }
        if self.materializer.is_some() {
            // Depth 1: backing files live on a plain file system, and the
            // mount can still be an overlayfs lower directory.
            let ok = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
                && config.set_max_stack_depth(1).is_ok();
            if !ok {
                log::warn!(
                    "the kernel offers no FUSE passthrough; every read goes through the daemon"
                );
                self.materializer = None;
            }
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(name) = name.to_str() else {
            return reply.error(Errno::ENOENT);
        };
        match self.fs.lookup(parent.0, name) {
            Ok(a) => reply.entry(&TTL, &file_attr(&a), Generation(0)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.fs.getattr(ino.0) {
            Ok(a) => reply.attr(&TTL, &file_attr(&a)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.fs.readlink(ino.0) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(Errno::from_i32(libc::EROFS));
        }
        match self.fs.is_regular(ino.0) {
            Ok(true) => self.open_file(ino.0, reply),
            Ok(false) => reply.opened(FileHandle(FH_DAEMON), FopenFlags::empty()),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.fs.read(ino.0, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let mut opens = self.opens();
        let last = match opens.get_mut(&ino.0) {
            Some(OpenMode::Daemon(n)) | Some(OpenMode::Passthrough(n, _)) => {
                *n = n.saturating_sub(1);
                *n == 0
            }
            None => false,
        };
        if last {
            // Dropping the BackingId closes it in the kernel.
            opens.remove(&ino.0);
        }
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.readdir(ino.0) {
            Ok(_) => reply.opened(
                FileHandle(0),
                FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR,
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let walked = self.listing(ino.0).and_then(|(listing, parent)| {
            walk_dir(
                ino.0,
                parent,
                &listing,
                offset,
                |entry_ino, next, kind, name| {
                    Ok(reply.add(INodeNo(entry_ino), next, file_type(kind), name))
                },
            )
        });
        match walked {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let walked = self.listing(ino.0).and_then(|(listing, parent)| {
            walk_dir(
                ino.0,
                parent,
                &listing,
                offset,
                |entry_ino, next, _, name| {
                    let attr = file_attr(&self.fs.getattr(entry_ino)?);
                    Ok(reply.add(INodeNo(entry_ino), next, name, &TTL, &attr, Generation(0)))
                },
            )
        });
        match walked {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let s = self.fs.statfs();
        reply.statfs(0, 0, 0, 0, 0, s.block_size, s.name_max, s.block_size);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let Some(name) = name.to_str() else {
            return reply.error(Errno::from_i32(libc::ENODATA));
        };
        match self.fs.getxattr(ino.0, name) {
            Ok(v) => reply_xattr(&v, size, reply),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.fs.listxattr(ino.0) {
            Ok(v) => reply_xattr(&v, size, reply),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        // Permission checks are the kernel's (default_permissions).
        match self.fs.getattr(ino.0) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    crate::answer_unused_requests!();
}
