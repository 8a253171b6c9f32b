//! The one fuser `Filesystem`: argument and reply conversion over any
//! [`ReadOnlyFs`], with [`Hooks`] for what the mount and the store do
//! differently (kernel settings, passthrough opens, the store's `use` /
//! release protocol and kernel forgets, requests that may wait long). No
//! file system decisions are made here; failed requests are logged here,
//! and only here, at the level their [`FsError`] carries.

mod reply;

use std::ffi::OsStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use fuser::{
    Errno, FileHandle, Filesystem, FopenFlags, Generation, INodeNo, KernelConfig, LockOwner,
    OpenAccMode, OpenFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyXattr, Request,
};

pub use crate::layer_adapter::FuseLayer;
use crate::rofs::{FsError, Kind, ReadOnlyFs};
use reply::{fail, file_attr, file_type};

/// Requests waiting on threads of their own; past this, they wait in the
/// FUSE worker (each still bounded by the file system's own deadline).
const MAX_WAITING: usize = 1024;

/// What differs between the file systems served. The defaults are those
/// of a plain read-only file system.
pub trait Hooks<F: ReadOnlyFs>: Send + Sync + 'static {
    /// Kernel settings, negotiated once at INIT.
    fn init(&self, config: &mut KernelConfig);

    /// Whether a request on `ino` may wait long (for the network): it is
    /// then answered from a thread of its own, so the FUSE workers stay
    /// free for every other request.
    fn may_wait(&self, _fs: &F, _ino: u64) -> bool {
        false
    }

    /// Opens regular file `ino` (known to exist) for reading.
    fn open_file(&self, _fs: &F, _ino: u64, reply: ReplyOpen) {
        reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE)
    }

    /// One open file of `ino` was closed.
    fn release(&self, _ino: u64) {}

    /// `create`: an error, whatever it counts.
    fn create(&self, _fs: &F, _parent: u64, _name: &str) -> FsError {
        read_only()
    }

    /// `rmdir`: an error, whatever it counts.
    fn rmdir(&self, _fs: &F, _parent: u64, _name: &str) -> FsError {
        read_only()
    }

    /// The kernel dropped `nlookup` references to `ino`.
    fn forget(&self, _fs: &F, _ino: u64, _nlookup: u64) {}
}

fn read_only() -> FsError {
    FsError::new(libc::EROFS, "read-only file system")
}

/// A [`ReadOnlyFs`] served through fuser.
pub struct FuseAdapter<F, H> {
    fs: Arc<F>,
    hooks: Arc<H>,
    /// Requests being answered from threads of their own.
    waiting: Arc<AtomicUsize>,
}

impl<F: ReadOnlyFs, H: Hooks<F>> FuseAdapter<F, H> {
    pub fn with_hooks(fs: Arc<F>, hooks: H) -> FuseAdapter<F, H> {
        FuseAdapter {
            fs,
            hooks: Arc::new(hooks),
            waiting: Arc::default(),
        }
    }

    /// Runs `job` here, or on a thread of its own when the request on
    /// `ino` may wait long.
    fn answer(&self, ino: u64, job: impl FnOnce(&F, &H) + Send + 'static) {
        if !self.hooks.may_wait(&self.fs, ino) {
            return job(&self.fs, &self.hooks);
        }
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= MAX_WAITING {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return job(&self.fs, &self.hooks);
        }
        let (fs, hooks, waiting) = (self.fs.clone(), self.hooks.clone(), self.waiting.clone());
        let spawned = std::thread::Builder::new()
            .name("fuse-wait".into())
            .spawn(move || {
                job(&fs, &hooks);
                waiting.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            // The reply was dropped with the job: fuser answers EIO.
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            log::warn!("cannot start a thread for a waiting request: {e}");
        }
    }
}

fn stable_listing_flags(stable: bool) -> FopenFlags {
    if stable {
        FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR
    } else {
        FopenFlags::empty()
    }
}

impl<F: ReadOnlyFs, H: Hooks<F>> Filesystem for FuseAdapter<F, H> {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        self.hooks.init(config);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        estargz_core::metrics::global().fuse_request("lookup");
        let Some(name) = name.to_str().map(str::to_string) else {
            return fail("lookup", parent.0, not_utf8(libc::ENOENT), reply);
        };
        self.answer(parent.0, move |fs, _| match fs.lookup(parent.0, &name) {
            Ok(a) => reply.entry(&fs.ttl(a.ino), &file_attr(&a), Generation(0)),
            Err(e) => fail("lookup", parent.0, e, reply),
        })
    }

    // batch_forget's default calls this once per inode.
    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.hooks.forget(&self.fs, ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        estargz_core::metrics::global().fuse_request("getattr");
        self.answer(ino.0, move |fs, _| match fs.getattr(ino.0) {
            Ok(a) => reply.attr(&fs.ttl(a.ino), &file_attr(&a)),
            Err(e) => fail("getattr", ino.0, e, reply),
        })
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        estargz_core::metrics::global().fuse_request("readlink");
        self.answer(ino.0, move |fs, _| match fs.readlink(ino.0) {
            Ok(target) => reply.data(&target),
            Err(e) => fail("readlink", ino.0, e, reply),
        })
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        estargz_core::metrics::global().fuse_request("create");
        let name = name.to_str().unwrap_or("");
        fail(
            "create",
            parent.0,
            self.hooks.create(&self.fs, parent.0, name),
            reply,
        );
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        estargz_core::metrics::global().fuse_request("rmdir");
        let name = name.to_str().unwrap_or("");
        fail(
            "rmdir",
            parent.0,
            self.hooks.rmdir(&self.fs, parent.0, name),
            reply,
        );
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        estargz_core::metrics::global().fuse_request("open");
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return fail("open", ino.0, read_only(), reply);
        }
        self.answer(ino.0, move |fs, hooks| match fs.getattr(ino.0) {
            Ok(a) if a.kind == Kind::RegularFile => {
                fs.opened(ino.0);
                hooks.open_file(fs, ino.0, reply)
            }
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => fail("open", ino.0, e, reply),
        })
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
        estargz_core::metrics::global().fuse_request("read");
        self.answer(ino.0, move |fs, _| match fs.read(ino.0, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => fail("read", ino.0, e, reply),
        })
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
        self.hooks.release(ino.0);
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        estargz_core::metrics::global().fuse_request("opendir");
        self.answer(ino.0, move |fs, _| match fs.opendir(ino.0) {
            Ok(()) => reply.opened(
                FileHandle(0),
                stable_listing_flags(fs.listing_is_stable(ino.0)),
            ),
            Err(e) => fail("opendir", ino.0, e, reply),
        })
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        estargz_core::metrics::global().fuse_request("readdir");
        self.answer(ino.0, move |fs, _| {
            let walked = fs.walk_dir(ino.0, offset, |w| {
                Ok(reply.add(INodeNo(w.ino), w.next, file_type(w.kind), w.name))
            });
            match walked {
                Ok(()) => reply.ok(),
                Err(e) => fail("readdir", ino.0, e, reply),
            }
        })
    }

    /// Only asked for by a kernel that was offered FUSE_DO_READDIRPLUS;
    /// every entry but `.` and `..` then counts as a lookup.
    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        estargz_core::metrics::global().fuse_request("readdirplus");
        self.answer(ino.0, move |fs, _| {
            let walked = fs.walk_dir(ino.0, offset, |w| {
                let attr = file_attr(&fs.getattr(w.ino)?);
                let ttl = fs.ttl(w.ino);
                Ok(reply.add(INodeNo(w.ino), w.next, w.name, &ttl, &attr, Generation(0)))
            });
            match walked {
                Ok(()) => reply.ok(),
                Err(e) => fail("readdirplus", ino.0, e, reply),
            }
        })
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        estargz_core::metrics::global().fuse_request("statfs");
        let s = self.fs.statfs();
        reply.statfs(0, 0, 0, 0, 0, s.block_size, s.name_max, s.block_size);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        estargz_core::metrics::global().fuse_request("getxattr");
        let Some(name) = name.to_str().map(str::to_string) else {
            return fail("getxattr", ino.0, not_utf8(libc::ENODATA), reply);
        };
        self.answer(ino.0, move |fs, _| match fs.getxattr(ino.0, &name) {
            Ok(v) => reply::xattr(&v, size, reply),
            Err(e) => fail("getxattr", ino.0, e, reply),
        })
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        estargz_core::metrics::global().fuse_request("listxattr");
        self.answer(ino.0, move |fs, _| match fs.listxattr(ino.0) {
            Ok(v) => reply::xattr(&v, size, reply),
            Err(e) => fail("listxattr", ino.0, e, reply),
        })
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        estargz_core::metrics::global().fuse_request("access");
        // Permission checks are the kernel's (default_permissions).
        self.answer(ino.0, move |fs, _| match fs.getattr(ino.0) {
            Ok(_) => reply.ok(),
            Err(e) => fail("access", ino.0, e, reply),
        })
    }

    // Requests a read-only file system has no use for, answered as the
    // kernel expects (fuser's defaults answer ENOSYS with a `[Not
    // Implemented]` warning): nothing is ever written, so flush and fsync
    // succeed; ENOSYS for poll, lseek and copy_file_range makes the kernel
    // stop asking and do the generic thing itself (files always ready,
    // SEEK_DATA/SEEK_HOLE over one extent, copies by read + write); no
    // ioctl is supported, and ENOTTY is what programs probing one
    // (terminal checks, FS_IOC_GETFLAGS) expect.

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn poll(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _ph: fuser::PollNotifier,
        _events: fuser::PollEvents,
        _flags: fuser::PollFlags,
        reply: fuser::ReplyPoll,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: i64,
        _whence: i32,
        reply: fuser::ReplyLseek,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        _fh_in: FileHandle,
        _offset_in: u64,
        _ino_out: INodeNo,
        _fh_out: FileHandle,
        _offset_out: u64,
        _len: u64,
        _flags: fuser::CopyFileRangeFlags,
        reply: fuser::ReplyWrite,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        reply.error(Errno::from_i32(libc::ENOTTY));
    }
}

fn not_utf8(errno: i32) -> FsError {
    FsError::new(errno, "name is not UTF-8")
}
