//! The thin layer between fuser and [`Store`]: argument and reply
//! conversion and kernel settings; the namespace decisions are the store's.

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::Duration;

use fuser::{
    Errno, FileHandle, Filesystem, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig,
    LockOwner, OpenAccMode, OpenFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyXattr, Request,
};

use crate::adapter::{errno, file_attr, file_type, reply_xattr};
use crate::layerfs;
use crate::store::{Ino, Store};

/// Layer content never changes for a given inode number.
const LAYER_TTL: Duration = Duration::from_secs(24 * 3600);
/// Store directories come and go with the registry (as stargz-store: 1 s).
const NAMESPACE_TTL: Duration = Duration::from_secs(1);

pub struct FuseStore {
    store: Arc<Store>,
}

impl FuseStore {
    /// Shared so a reaper thread can unload idle layers.
    pub fn new(store: Arc<Store>) -> FuseStore {
        FuseStore { store }
    }
}

fn ttl(ino: u64) -> &'static Duration {
    if Ino::decode(ino).is_layer_content() {
        &LAYER_TTL
    } else {
        &NAMESPACE_TTL
    }
}

impl Filesystem for FuseStore {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        if let Err(max) = config.set_max_readahead(u32::MAX) {
            let _ = config.set_max_readahead(max);
        }
        let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(name) = name.to_str() else {
            return reply.error(Errno::ENOENT);
        };
        match self.store.lookup(parent.0, name) {
            Ok(a) => reply.entry(ttl(a.ino), &file_attr(&a), Generation(0)),
            Err(e) => reply.error(errno(e)),
        }
    }

    // batch_forget's default calls this once per inode.
    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.store.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.store.getattr(ino.0) {
            Ok(a) => reply.attr(ttl(a.ino), &file_attr(&a)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.store.readlink(ino.0) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(errno(e)),
        }
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
        let name = name.to_str().unwrap_or("");
        reply.error(errno(self.store.create(parent.0, name)));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name.to_str().unwrap_or("");
        reply.error(errno(self.store.rmdir(parent.0, name)));
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(Errno::from_i32(libc::EROFS));
        }
        match self.store.is_file(ino.0) {
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
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
        match self.store.read(ino.0, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.store.readdir(ino.0) {
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::empty()),
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
        let walked = self
            .store
            .walk_dir(ino.0, offset, |entry_ino, next, kind, name| {
                Ok(reply.add(INodeNo(entry_ino), next, file_type(kind), name))
            });
        match walked {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let b = layerfs::BLOCK_SIZE;
        reply.statfs(0, 0, 0, 0, 0, b, layerfs::NAME_MAX, b);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let Some(name) = name.to_str() else {
            return reply.error(Errno::from_i32(libc::ENODATA));
        };
        match self.store.getxattr(ino.0, name) {
            Ok(v) => reply_xattr(&v, size, reply),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.store.listxattr(ino.0) {
            Ok(v) => reply_xattr(&v, size, reply),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        match self.store.getattr(ino.0) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }
}
