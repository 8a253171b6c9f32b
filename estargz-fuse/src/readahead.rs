//! Kernel readahead for the mount. FUSE caps a new mount's readahead at the
//! VM default (128 KiB) whatever the daemon offers at INIT; the only knob is
//! the mount's backing-device entry in sysfs. Sequential reads served by the
//! daemon are several times faster with a window of a few chunks (see
//! BENCHMARKS.md), and for registry layers a larger window also means fewer,
//! larger fetches.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Default window: four 4 MiB chunks.
pub const DEFAULT_KB: u32 = 16 << 10;

/// Sets the readahead window of the file system mounted at `mountpoint`.
/// Call after the mount has answered INIT (a `stat` of the mountpoint that
/// succeeded proves it): INIT resets the window.
pub fn set(mountpoint: &Path, kb: u32) -> std::io::Result<()> {
    let dev = std::fs::metadata(mountpoint)?.dev();
    let path = format!(
        "/sys/class/bdi/{}:{}/read_ahead_kb",
        libc::major(dev),
        libc::minor(dev)
    );
    std::fs::write(&path, format!("{kb}\n"))
        .map_err(|e| std::io::Error::new(e.kind(), format!("{path}: {e}")))
}
