//! The thin layer between fuser and [`Store`]: argument and reply
//! conversion and kernel settings; the namespace decisions are the store's.
//! A request that may wait for a layer to be resolved is answered from a
//! thread of its own, so a slow registry never ties up the FUSE workers
//! that every other request needs.

use std::ffi::OsStr;
use std::sync::atomic::{AtomicUsize, Ordering};
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

/// Requests waiting for a resolution on threads of their own; past this,
/// they wait in the worker (each still bounded by the resolve timeout).
const MAX_WAITING: usize = 1024;

pub struct FuseStore {
    store: Arc<Store>,
    waiting: Arc<AtomicUsize>,
}

impl FuseStore {
    /// Shared so a reaper thread can unload idle layers.
    pub fn new(store: Arc<Store>) -> FuseStore {
        FuseStore {
            store,
            waiting: Arc::default(),
        }
    }

    /// Runs `answer` here, or on a thread of its own when the request on
    /// `ino` may wait for a layer's resolution.
    fn answer(&self, ino: u64, answer: impl FnOnce(&Store) + Send + 'static) {
        if !self.store.needs_resolution(ino) {
            return answer(&self.store);
        }
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= MAX_WAITING {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return answer(&self.store);
        }
        let (store, waiting) = (self.store.clone(), self.waiting.clone());
        let spawned = std::thread::Builder::new()
            .name("store-wait".into())
            .spawn(move || {
                answer(&store);
                waiting.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            // The reply was dropped with the closure: fuser answers EIO.
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            log::warn!("cannot start a thread for a waiting request: {e}");
        }
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
        let Some(name) = name.to_str().map(str::to_string) else {
            return reply.error(Errno::ENOENT);
        };
        self.answer(parent.0, move |store| match store.lookup(parent.0, &name) {
            Ok(a) => reply.entry(ttl(a.ino), &file_attr(&a), Generation(0)),
            Err(e) => reply.error(errno(e)),
        })
    }

    // batch_forget's default calls this once per inode.
    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.store.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.answer(ino.0, move |store| match store.getattr(ino.0) {
            Ok(a) => reply.attr(ttl(a.ino), &file_attr(&a)),
            Err(e) => reply.error(errno(e)),
        })
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        self.answer(ino.0, move |store| match store.readlink(ino.0) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(errno(e)),
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
        self.answer(ino.0, move |store| match store.is_file(ino.0) {
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
            Err(e) => reply.error(errno(e)),
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
        self.answer(ino.0, move |store| match store.read(ino.0, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(errno(e)),
        })
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.answer(ino.0, move |store| match store.readdir(ino.0) {
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(errno(e)),
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
        self.answer(ino.0, move |store| {
            let walked = store.walk_dir(ino.0, offset, |entry_ino, next, kind, name| {
                Ok(reply.add(INodeNo(entry_ino), next, file_type(kind), name))
            });
            match walked {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(e)),
            }
        })
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let b = layerfs::BLOCK_SIZE;
        reply.statfs(0, 0, 0, 0, 0, b, layerfs::NAME_MAX, b);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let Some(name) = name.to_str().map(str::to_string) else {
            return reply.error(Errno::from_i32(libc::ENODATA));
        };
        self.answer(ino.0, move |store| match store.getxattr(ino.0, &name) {
            Ok(v) => reply_xattr(&v, size, reply),
            Err(e) => reply.error(errno(e)),
        })
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        self.answer(ino.0, move |store| match store.listxattr(ino.0) {
            Ok(v) => reply_xattr(&v, size, reply),
            Err(e) => reply.error(errno(e)),
        })
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        self.answer(ino.0, move |store| match store.getattr(ino.0) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        })
    }

    crate::answer_unused_requests!();
}
