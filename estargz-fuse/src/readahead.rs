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
    set_device(&format!("{}:{}", libc::major(dev), libc::minor(dev)), kb)
}

/// [`set`] for a mount found in /proc/self/mountinfo instead of by `stat`:
/// for the serving process itself, which must not send its own mount a
/// request (under valgrind the stat would hold the lock the serving thread
/// waits for).
pub fn set_unstatted(mountpoint: &Path, kb: u32) -> std::io::Result<()> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let dev = mount_device(&info, mountpoint).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{} is not in /proc/self/mountinfo", mountpoint.display()),
        )
    })?;
    set_device(dev, kb)
}

/// The `major:minor` of the last mount at `mountpoint` in a mountinfo text
/// (mount points there are absolute, with spaces etc. octal-escaped).
fn mount_device<'a>(mountinfo: &'a str, mountpoint: &Path) -> Option<&'a str> {
    let want = mountpoint.to_str()?;
    mountinfo.lines().rev().find_map(|l| {
        let mut f = l.split(' ');
        let dev = f.nth(2)?;
        let point = f.nth(1)?;
        (point == want).then_some(dev)
    })
}

fn set_device(dev: &str, kb: u32) -> std::io::Result<()> {
    let path = format!("/sys/class/bdi/{dev}/read_ahead_kb");
    std::fs::write(&path, format!("{kb}\n"))
        .map_err(|e| std::io::Error::new(e.kind(), format!("{path}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_device_of_the_last_mount_at_a_point() {
        let info = "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n\
                    40 22 0:51 / /mnt/a rw - fuse estargz rw\n\
                    41 40 0:52 / /mnt/a rw - fuse estargz rw\n\
                    42 22 0:53 / /mnt/ab rw - fuse estargz rw\n";
        assert_eq!(mount_device(info, Path::new("/mnt/a")), Some("0:52"));
        assert_eq!(mount_device(info, Path::new("/mnt/ab")), Some("0:53"));
        assert_eq!(mount_device(info, Path::new("/mnt")), None);
    }
}
