//! Mounting one opened layer: the kernel settings, the session and the
//! warm-up, shared by the `estargz-fuse mount` command (which serves in the
//! foreground until a signal) and the C ABI's mount API (which serves from
//! a background thread until `unmount`).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use estargz_core::remote::{FetchStats, RemoteBlob};
use estargz_core::{Error, Reader, Result};
use fuser::{BackgroundSession, Config, MountOption, Session, SessionACL};

use crate::adapter::FuseLayer;
use crate::layerfs::LayerFs;
use crate::passthrough::Materializer;
use crate::record::LayerAccess;
use crate::source::OpenedLayer;
use crate::warm::{WarmOptions, WarmTicket, Warmer};

/// How a layer is mounted and warmed.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MountOptions {
    /// Threads serving FUSE requests.
    pub threads: usize,
    /// Let other users (and overlayfs mounts owned by them) use the mount.
    pub allow_other: bool,
    /// Where fully cached files are copied for kernel passthrough (the
    /// cache directory), and how many bytes of copies are kept; `None`
    /// serves every read through the daemon.
    pub passthrough: Option<(PathBuf, u64)>,
    /// Kernel readahead window in KiB (0: the kernel's default).
    pub read_ahead_kb: u32,
    /// Prefetch and background fetch.
    pub warm: WarmOptions,
    /// Records the files opened or read (see [`crate::record`]).
    pub record: Option<Arc<LayerAccess>>,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            threads: 8,
            allow_other: false,
            passthrough: None,
            read_ahead_kb: crate::readahead::DEFAULT_KB,
            warm: WarmOptions::default(),
            record: None,
        }
    }
}

estargz_core::option_setters!(MountOptions {
    threads: usize,
    allow_other: bool,
    passthrough: Option<(PathBuf, u64)>,
    read_ahead_kb: u32,
    warm: WarmOptions,
    record: Option<Arc<LayerAccess>>,
});

/// Mounts `reader` read-only at `mountpoint` (the INIT handshake is done
/// when this returns); the caller serves the session.
pub fn session(
    reader: &Arc<Reader>,
    mountpoint: &Path,
    opts: &MountOptions,
) -> Result<Session<FuseLayer>> {
    let materializer = match &opts.passthrough {
        Some((dir, size)) => Some(
            Materializer::new(dir, *size)
                .map_err(|e| Error::io(format!("passthrough directory in {}", dir.display()), e))?,
        ),
        None => None,
    };
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::RO,
        MountOption::FSName(format!("estargz:{}", reader.toc_digest())),
        MountOption::Subtype("estargz".into()),
        MountOption::DefaultPermissions,
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    if opts.allow_other {
        config.acl = SessionACL::All;
    }
    config.n_threads = Some(opts.threads.max(1));
    config.clone_fd = true;
    let mut fs = LayerFs::new(reader.clone());
    fs.set_access(opts.record.clone());
    let fs = FuseLayer::new(fs, materializer);
    Session::new(fs, mountpoint, &config)
        .map_err(|e| Error::io(format!("mounting at {}", mountpoint.display()), e))
}

/// Starts warming the layer: a local blob (`blob` is `None`) is read at
/// disk speed, so only the prefetch runs for it (copying all of it into the
/// chunk cache would only evict what reads put there). Every mount of the
/// process takes its turn on one schedule.
pub fn start_warming(
    opts: &WarmOptions,
    description: &str,
    reader: Arc<Reader>,
    blob: Option<&Arc<RemoteBlob>>,
) -> WarmTicket {
    let mut warm = opts.clone();
    warm.background &= blob.is_some();
    Warmer::shared(warm).start(description.to_string(), reader)
}

/// Waits until the mount answers (its first stat), then sets its kernel
/// readahead window.
pub fn settle(mountpoint: &Path, read_ahead_kb: u32) -> Result<()> {
    std::fs::metadata(mountpoint).map_err(|e| {
        Error::io(
            format!("the mount at {} does not answer", mountpoint.display()),
            e,
        )
    })?;
    if read_ahead_kb > 0 {
        if let Err(e) = crate::readahead::set(mountpoint, read_ahead_kb) {
            log::warn!("cannot set the readahead window ({e}); keeping the kernel's");
        }
    }
    Ok(())
}

/// A layer mounted and served from a thread of its own until
/// [`LayerMount::unmount`] (or drop).
pub struct LayerMount {
    session: Option<BackgroundSession>,
    _warming: WarmTicket,
    mountpoint: PathBuf,
    description: String,
    blob: Option<Arc<RemoteBlob>>,
    reader: Arc<Reader>,
}

impl LayerMount {
    /// Mounts `layer` at `mountpoint` and starts serving and warming it.
    pub fn start(layer: OpenedLayer, mountpoint: &Path, opts: &MountOptions) -> Result<LayerMount> {
        let OpenedLayer {
            reader,
            description,
            blob,
        } = layer;
        let bg = session(&reader, mountpoint, opts)?
            .spawn()
            .map_err(|e| Error::io("starting the FUSE session thread", e))?;
        let mount = LayerMount {
            session: Some(bg),
            _warming: start_warming(&opts.warm, &description, reader.clone(), blob.as_ref()),
            mountpoint: mountpoint.to_path_buf(),
            description,
            blob,
            reader,
        };
        // INIT was answered in `session` (so the window now sticks); the
        // mount is found without sending it a request.
        if opts.read_ahead_kb > 0 {
            let canonical = canonical_mountpoint(mountpoint);
            if let Err(e) = crate::readahead::set_unstatted(&canonical, opts.read_ahead_kb) {
                log::warn!("cannot set the readahead window ({e}); keeping the kernel's");
            }
        }
        log::info!("mounted {} at {}", mount.description, mountpoint.display());
        Ok(mount)
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    pub fn reader(&self) -> &Arc<Reader> {
        &self.reader
    }

    /// Whether the session still serves: false once unmounted, by
    /// [`LayerMount::unmount`] or from outside (`umount`).
    pub fn is_mounted(&self) -> bool {
        self.session
            .as_ref()
            .is_some_and(|s| !s.guard.is_finished())
    }

    /// Registry requests and bytes so far (`None` for a local blob).
    pub fn fetch_stats(&self) -> Option<FetchStats> {
        self.blob.as_ref().map(|b| b.stats())
    }

    /// Unmounts and waits for the session to end. A busy mount (open files,
    /// an overlay on top) is refused with `EBUSY` and stays mounted and
    /// served, so the caller can retry; unmounting twice is a no-op.
    pub fn unmount(&mut self) -> Result<()> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        // Our own umount2 first: fuser's drops its handle on failure, which
        // would leave a busy mount without a way to retry.
        let ended = match session.guard.is_finished() {
            true => Ok(()),
            false => umount(&self.mountpoint),
        };
        let joined = match ended {
            // The session ends by itself now; fuser's handle, dropped after
            // the join, sees the device gone and does nothing.
            Ok(()) => session.join(),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                self.session = Some(session);
                return Err(Error::io(
                    format!("unmounting {}", self.mountpoint.display()),
                    e,
                ));
            }
            // Anything else (not root: fusermount) is fuser's to try.
            Err(_) => session.umount_and_join(),
        };
        joined.map_err(|e| Error::io(format!("unmounting {}", self.mountpoint.display()), e))?;
        if let Some(s) = self.fetch_stats() {
            log::info!(
                "fetched {} bytes in {} requests from {}",
                s.bytes,
                s.requests,
                self.description
            );
        }
        log::info!("unmounted {}", self.mountpoint.display());
        Ok(())
    }
}

impl Drop for LayerMount {
    fn drop(&mut self) {
        if let Err(e) = self.unmount() {
            log::error!("{e}; detaching it lazily");
            let _ = umount2(&self.mountpoint, libc::MNT_DETACH);
            // The session thread ends when the last user lets go; it is
            // not waited for.
            if let Some(s) = self.session.take() {
                std::mem::forget(s);
            }
        }
    }
}

/// `mountpoint` made absolute and free of symlinks by resolving its parent
/// only (resolving the mountpoint itself would ask the mount).
fn canonical_mountpoint(mountpoint: &Path) -> PathBuf {
    let resolved = mountpoint
        .parent()
        .zip(mountpoint.file_name())
        .and_then(|(p, name)| {
            let p = if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            };
            std::fs::canonicalize(p).ok().map(|p| p.join(name))
        });
    resolved.unwrap_or_else(|| mountpoint.to_path_buf())
}

fn umount(path: &Path) -> io::Result<()> {
    umount2(path, 0)
}

fn umount2(path: &Path, flags: libc::c_int) -> io::Result<()> {
    let path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: a valid NUL-terminated path.
    match unsafe { libc::umount2(path.as_ptr(), flags) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}
