//! The container's root file system while recording: every layer mounted
//! through FUSE with access recording, stacked with overlayfs (the mounts
//! as lower dirs, top first; a writable upper dir in the work directory).

use std::ffi::CString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use estargz_core::{Error, Reader, Result};

use crate::mount::{LayerMount, MountOptions};
use crate::record::LayerAccess;
use crate::source::OpenedLayer;

/// The stacked layers; unmounted (overlay first) on [`Rootfs::unmount`] or drop.
pub struct Rootfs {
    merged: PathBuf,
    overlay_mounted: bool,
    layers: Vec<LayerMount>,
}

fn mkdir(p: &Path) -> Result<()> {
    std::fs::create_dir_all(p).map_err(|e| Error::io(format!("creating {}", p.display()), e))
}

fn cstring(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::InvalidArgument(format!("{s:?} holds a NUL byte")))
}

impl Rootfs {
    /// Mounts `layers` (bottom first) under `dir`, each recording into
    /// its `LayerAccess`, and the overlay at `dir/rootfs`.
    pub fn mount(
        dir: &Path,
        layers: Vec<(Arc<Reader>, String, Arc<LayerAccess>)>,
    ) -> Result<Rootfs> {
        let merged = dir.join("rootfs");
        let mut out = Rootfs {
            merged: merged.clone(),
            overlay_mounted: false,
            layers: Vec::new(),
        };
        for (i, (reader, description, access)) in layers.into_iter().enumerate() {
            let mp = dir.join(format!("layers/{i}"));
            mkdir(&mp)?;
            let opts = MountOptions::default()
                // overlayfs reaches lower dirs with the credentials of the
                // workload for some checks.
                .allow_other(true)
                .record(Some(access));
            let layer = OpenedLayer {
                reader,
                description,
                blob: None,
            };
            out.layers.push(LayerMount::start(layer, &mp, &opts)?);
        }
        let (upper, work) = (dir.join("upper"), dir.join("work"));
        for d in [&merged, &upper, &work] {
            mkdir(d)?;
        }
        let lower: Vec<String> = out
            .layers
            .iter()
            .rev()
            .map(|l| l.mountpoint().display().to_string())
            .collect();
        for p in lower
            .iter()
            .chain([&upper.display().to_string(), &work.display().to_string()])
        {
            if p.contains([':', ',']) {
                return Err(Error::InvalidArgument(format!(
                    "{p}: overlayfs paths cannot hold ':' or ','; choose another --temp-dir"
                )));
            }
        }
        let data = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.join(":"),
            upper.display(),
            work.display()
        );
        let (src, target, fstype, data_c) = (
            cstring("overlay")?,
            cstring(&merged.display().to_string())?,
            cstring("overlay")?,
            cstring(&data)?,
        );
        // SAFETY: valid NUL-terminated strings.
        let rc = unsafe {
            libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                data_c.as_ptr().cast(),
            )
        };
        if rc != 0 {
            return Err(Error::io(
                format!("mounting the overlay at {} ({data})", merged.display()),
                io::Error::last_os_error(),
            ));
        }
        out.overlay_mounted = true;
        Ok(out)
    }

    /// The root file system for the bundle.
    pub fn path(&self) -> &Path {
        &self.merged
    }

    /// Unmounts the overlay, then every layer.
    pub fn unmount(&mut self) -> Result<()> {
        if self.overlay_mounted {
            let target = cstring(&self.merged.display().to_string())?;
            // SAFETY: a valid NUL-terminated path.
            if unsafe { libc::umount2(target.as_ptr(), 0) } != 0 {
                return Err(Error::io(
                    format!("unmounting the overlay at {}", self.merged.display()),
                    io::Error::last_os_error(),
                ));
            }
            self.overlay_mounted = false;
        }
        while let Some(mut l) = self.layers.pop() {
            l.unmount()?;
        }
        Ok(())
    }
}

impl Drop for Rootfs {
    fn drop(&mut self) {
        if self.overlay_mounted {
            if let Ok(target) = cstring(&self.merged.display().to_string()) {
                // SAFETY: a valid NUL-terminated path. Detached: whatever
                // still uses it must not keep the layers mounted.
                unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
            }
        }
        // Each LayerMount unmounts itself when dropped.
    }
}
