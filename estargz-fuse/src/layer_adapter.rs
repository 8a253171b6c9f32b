//! The mount's hooks on the generic adapter: kernel settings for one
//! layer, and the per-inode open mode that kernel passthrough needs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use fuser::{BackingId, FileHandle, FopenFlags, InitFlags, KernelConfig, ReplyOpen};

use crate::adapter::{FuseAdapter, Hooks};
use crate::layerfs::LayerFs;
use crate::passthrough::Materializer;

const FH_DAEMON: u64 = 0;
const FH_PASSTHROUGH: u64 = 1;

/// One layer mounted: [`LayerFs`] through the generic adapter.
pub type FuseLayer = FuseAdapter<LayerFs, LayerHooks>;

impl FuseAdapter<LayerFs, LayerHooks> {
    /// `materializer`: where fully cached files are copied for kernel
    /// passthrough; `None` serves every read through the daemon.
    pub fn new(fs: LayerFs, materializer: Option<Materializer>) -> FuseLayer {
        FuseAdapter::with_hooks(Arc::new(fs), LayerHooks::new(materializer))
    }
}

/// How the open files of one inode are served. The kernel refuses (EIO to
/// the application) a passthrough open while the inode is open in cached
/// mode and the reverse, so every open of an inode uses the mode of the
/// first one still open.
enum OpenMode {
    Daemon(u32),
    Passthrough(u32, BackingId),
}

pub struct LayerHooks {
    materializer: Option<Materializer>,
    /// Whether the kernel took FUSE_PASSTHROUGH at INIT.
    passthrough: AtomicBool,
    opens: Mutex<HashMap<u64, OpenMode>>,
}

impl LayerHooks {
    fn new(materializer: Option<Materializer>) -> LayerHooks {
        LayerHooks {
            materializer,
            passthrough: AtomicBool::new(false),
            opens: Mutex::new(HashMap::new()),
        }
    }

    fn opens(&self) -> MutexGuard<'_, HashMap<u64, OpenMode>> {
        self.opens.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A backing file for `ino` if it can be served by passthrough now.
    fn backing(&self, fs: &LayerFs, ino: u64, reply: &ReplyOpen) -> Option<BackingId> {
        if !self.passthrough.load(Ordering::Relaxed) {
            return None;
        }
        let id = fs.node_id(ino).ok()?;
        let file = self.materializer.as_ref()?.open(fs.reader(), id)?;
        reply
            .open_backing(&file)
            .map_err(|e| log::warn!("passthrough backing for inode {ino} refused: {e}"))
            .ok()
    }
}

/// Counts one more open in `mode` and answers it that way.
fn open_in(mode: &mut OpenMode, reply: ReplyOpen) {
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

impl Hooks<LayerFs> for LayerHooks {
    fn init(&self, config: &mut KernelConfig) {
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
            }
            self.passthrough.store(ok, Ordering::Relaxed);
        }
    }

    fn open_file(&self, fs: &LayerFs, ino: u64, reply: ReplyOpen) {
        if let Some(mode) = self.opens().get_mut(&ino) {
            return open_in(mode, reply);
        }
        // Copying a file may take a while; do it without the lock and
        // recheck, another open may have chosen a mode meanwhile.
        let backing = self.backing(fs, ino, &reply);
        let mut opens = self.opens();
        let mode = opens.entry(ino).or_insert_with(|| match backing {
            Some(id) => {
                log::debug!("inode {ino}: served by kernel passthrough");
                OpenMode::Passthrough(0, id)
            }
            None => OpenMode::Daemon(0),
        });
        open_in(mode, reply)
    }

    fn release(&self, ino: u64) {
        let mut opens = self.opens();
        let last = match opens.get_mut(&ino) {
            Some(OpenMode::Daemon(n)) | Some(OpenMode::Passthrough(n, _)) => {
                *n = n.saturating_sub(1);
                *n == 0
            }
            None => false,
        };
        if last {
            // Dropping the BackingId closes it in the kernel.
            opens.remove(&ino);
        }
    }
}
