//! Serialises a directory tree as a tar stream (PAX where needed), so a
//! directory can be converted like `tar -C DIR -c .` would, without the tar tool.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use crate::error::{Error, Result};
use crate::tar::padded;
use crate::tarwrite::{entry_headers, HeaderSpec};

struct Walker<'w> {
    out: &'w mut dyn Write,
    /// (dev, inode) → first archive name, to emit hardlinks.
    seen: HashMap<(u64, u64), String>,
}

fn read_xattrs(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut map = BTreeMap::new();
    // File systems without xattr support simply contribute none.
    if let Ok(names) = xattr::list(path) {
        for name in names {
            let Some(key) = name.to_str() else { continue };
            if let Ok(Some(value)) = xattr::get(path, &name) {
                map.insert(key.to_string(), value);
            }
        }
    }
    map
}

impl Walker<'_> {
    fn write(&mut self, data: &[u8], what: &Path) -> Result<()> {
        self.out
            .write_all(data)
            .map_err(|e| Error::io(format!("writing tar data for {}", what.display()), e))
    }

    fn entry(&mut self, path: &Path, name: String) -> Result<()> {
        let meta = fs::symlink_metadata(path)
            .map_err(|e| Error::io(format!("stat {}", path.display()), e))?;
        let ft = meta.file_type();
        let mut spec = HeaderSpec {
            name,
            mode: meta.mode() & 0o7777,
            uid: meta.uid() as u64,
            gid: meta.gid() as u64,
            mtime: meta.mtime(),
            xattrs: read_xattrs(path),
            ..Default::default()
        };
        let mut payload = false;
        if ft.is_dir() {
            spec.typeflag = b'5';
            spec.name.push('/');
        } else if ft.is_symlink() {
            spec.typeflag = b'2';
            let target = fs::read_link(path)
                .map_err(|e| Error::io(format!("readlink {}", path.display()), e))?;
            spec.link_name = target.to_string_lossy().into_owned();
        } else if ft.is_file() {
            let key = (meta.dev(), meta.ino());
            match self.seen.get(&key) {
                Some(first) if meta.nlink() > 1 => {
                    spec.typeflag = b'1';
                    spec.link_name = first.clone();
                }
                _ => {
                    if meta.nlink() > 1 {
                        self.seen.insert(key, spec.name.clone());
                    }
                    spec.typeflag = b'0';
                    spec.size = meta.len();
                    payload = true;
                }
            }
        } else if ft.is_char_device() || ft.is_block_device() {
            spec.typeflag = if ft.is_char_device() { b'3' } else { b'4' };
            let rdev = meta.rdev();
            spec.dev_major = libc::major(rdev) as u64;
            spec.dev_minor = libc::minor(rdev) as u64;
        } else if ft.is_fifo() {
            spec.typeflag = b'6';
        } else {
            // Sockets cannot be archived (tar skips them too).
            return Ok(());
        }
        self.write(&entry_headers(&spec), path)?;
        if payload {
            let file = fs::File::open(path)
                .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
            let copied = io::copy(&mut file.take(spec.size), self.out)
                .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
            if copied != spec.size {
                return Err(Error::Truncated(format!(
                    "{} shrank while being archived",
                    path.display()
                )));
            }
            let pad = (padded(spec.size) - spec.size) as usize;
            self.write(&vec![0u8; pad], path)?;
        }
        if ft.is_dir() {
            self.dir(path, &spec.name)?;
        }
        Ok(())
    }

    fn dir(&mut self, dir: &Path, prefix: &str) -> Result<()> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .map_err(|e| Error::io(format!("listing {}", dir.display()), e))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()
            .map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
        names.sort();
        for name in names {
            let child = format!("{prefix}{}", name.to_string_lossy());
            self.entry(&dir.join(&name), child)?;
        }
        Ok(())
    }
}

/// Writes the contents of `root` (not `root` itself) as a tar stream,
/// entries sorted by name, ending with the end-of-archive marker.
pub fn write_tar(root: &Path, out: &mut dyn Write) -> Result<()> {
    let mut walker = Walker {
        out,
        seen: HashMap::new(),
    };
    walker.dir(root, "")?;
    walker.write(&[0u8; 1024], root)
}
