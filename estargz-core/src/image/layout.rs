//! OCI image layout directories (`oci-layout`, `index.json`,
//! `blobs/sha256/<hex>`): read images by tag, write blobs and tags.
//! Every blob read is checked against its digest; writes are atomic.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::digest::{is_sha256_digest, Hasher};
use crate::error::{Error, Result};
use crate::remote::manifest::{Descriptor, Index, OCI_INDEX, REF_NAME_ANNOTATION};

const LAYOUT_FILE: &str = "oci-layout";
const LAYOUT_VERSION: &str = "1.0.0";
/// `index.json` is read whole; larger ones are refused.
const MAX_INDEX_SIZE: u64 = 4 << 20;

/// An OCI image layout directory.
pub struct OciLayout {
    dir: PathBuf,
    /// Serializes read-modify-write of `index.json` between threads.
    index_lock: Mutex<()>,
}

impl OciLayout {
    /// Opens an existing layout (checks `oci-layout`).
    pub fn open(dir: &Path) -> Result<OciLayout> {
        let marker = dir.join(LAYOUT_FILE);
        let text = std::fs::read(&marker).map_err(|e| {
            Error::io(
                format!(
                    "{} is not an OCI image layout (reading {LAYOUT_FILE})",
                    dir.display()
                ),
                e,
            )
        })?;
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Marker {
            image_layout_version: String,
        }
        let m: Marker = serde_json::from_slice(&text).map_err(|e| {
            Error::InvalidArgument(format!("{}: malformed {LAYOUT_FILE}: {e}", dir.display()))
        })?;
        if !m.image_layout_version.starts_with("1.") {
            return Err(Error::Unsupported(format!(
                "{}: image layout version {}",
                dir.display(),
                m.image_layout_version
            )));
        }
        Ok(OciLayout {
            dir: dir.to_path_buf(),
            index_lock: Mutex::new(()),
        })
    }

    /// Opens a layout, creating an empty one if `dir` has none.
    pub fn create(dir: &Path) -> Result<OciLayout> {
        if dir.join(LAYOUT_FILE).exists() {
            return Self::open(dir);
        }
        std::fs::create_dir_all(dir.join("blobs/sha256"))
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let layout = OciLayout {
            dir: dir.to_path_buf(),
            index_lock: Mutex::new(()),
        };
        layout.write_index(&Index {
            schema_version: 2,
            media_type: OCI_INDEX.into(),
            manifests: Vec::new(),
        })?;
        write_atomically(
            &dir.join(LAYOUT_FILE),
            format!("{{\"imageLayoutVersion\":\"{LAYOUT_VERSION}\"}}").as_bytes(),
        )?;
        Ok(layout)
    }

    /// The layout's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the blob with `digest` lives (the digest is validated, so the
    /// path cannot leave the layout).
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        if !is_sha256_digest(digest) {
            return Err(Error::InvalidArgument(format!(
                "blob digest {digest:?} (expected sha256:<64 hex>)"
            )));
        }
        Ok(self.dir.join("blobs/sha256").join(&digest[7..]))
    }

    /// The layout's `index.json`.
    pub fn index(&self) -> Result<Index> {
        let path = self.dir.join("index.json");
        let body = read_bounded(&path, MAX_INDEX_SIZE)?;
        serde_json::from_slice(&body).map_err(|e| {
            Error::InvalidArgument(format!("{}: malformed index: {e}", path.display()))
        })
    }

    /// The descriptor tagged `tag`, or the only one when `tag` is `None`.
    pub fn find(&self, tag: Option<&str>) -> Result<Descriptor> {
        let index = self.index()?;
        fn tagged(d: &Descriptor) -> Option<&str> {
            d.annotations.get(REF_NAME_ANNOTATION).map(String::as_str)
        }
        let names: Vec<&str> = index.manifests.iter().filter_map(tagged).collect();
        let found: Vec<&Descriptor> = match tag {
            Some(t) => index
                .manifests
                .iter()
                .filter(|d| tagged(d) == Some(t))
                .collect(),
            None => index.manifests.iter().collect(),
        };
        match found.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(Error::NotFound(format!(
                "{}: no image{} (tags: {})",
                self.dir.display(),
                tag.map(|t| format!(" tagged {t:?}")).unwrap_or_default(),
                names.join(", ")
            ))),
            _ => Err(Error::InvalidArgument(format!(
                "{}: {} images match; name one by tag (tags: {})",
                self.dir.display(),
                found.len(),
                names.join(", ")
            ))),
        }
    }

    /// Reads a small blob whole, checking size and digest.
    pub fn read_blob(&self, digest: &str, limit: u64) -> Result<Vec<u8>> {
        let path = self.blob_path(digest)?;
        let body = read_bounded(&path, limit)?;
        check_digest(&body, digest, &path)?;
        Ok(body)
    }

    /// Copies a blob into `out`, checking its size and digest on the way.
    pub fn copy_blob(&self, d: &Descriptor, out: &mut dyn Write) -> Result<()> {
        let path = self.blob_path(&d.digest)?;
        let file =
            File::open(&path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        let mut hasher = Hasher::new();
        let mut reader = io::BufReader::with_capacity(1 << 20, file).take(d.size + 1);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
            };
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])
                .map_err(|e| Error::io("writing a temporary copy of a blob", e))?;
        }
        if hasher.len() != d.size {
            return Err(Error::DigestMismatch {
                what: format!("size of {}", path.display()),
                expected: d.size.to_string(),
                actual: if hasher.len() > d.size {
                    format!("more than {}", d.size)
                } else {
                    hasher.len().to_string()
                },
            });
        }
        let actual = hasher.finish();
        if actual != d.digest {
            return Err(Error::DigestMismatch {
                what: path.display().to_string(),
                expected: d.digest.clone(),
                actual,
            });
        }
        Ok(())
    }

    /// Whether the layout holds the blob `digest` (its file exists).
    pub fn has_blob(&self, digest: &str) -> Result<bool> {
        Ok(self.blob_path(digest)?.is_file())
    }

    /// Stores bytes as a blob; returns its digest.
    pub fn write_blob(&self, data: &[u8]) -> Result<String> {
        let digest = crate::digest::sha256_digest(data);
        let path = self.blob_path(&digest)?;
        if !path.is_file() {
            write_atomically(&path, data)?;
        }
        Ok(digest)
    }

    /// Stores a file whose digest the caller computed (copied, then renamed).
    pub fn write_blob_file(&self, digest: &str, src: &Path) -> Result<()> {
        let path = self.blob_path(digest)?;
        if path.is_file() {
            return Ok(());
        }
        let tmp = temp_path(&path);
        let result = std::fs::copy(src, &tmp)
            .map_err(|e| Error::io(format!("copying a blob to {}", tmp.display()), e))
            .and_then(|_| {
                std::fs::rename(&tmp, &path)
                    .map_err(|e| Error::io(format!("renaming to {}", path.display()), e))
            });
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// Points `tag` at `d` in `index.json` (replacing an older entry).
    pub fn tag(&self, tag: &str, d: &Descriptor) -> Result<()> {
        let _guard = self.index_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut index = self.index()?;
        index
            .manifests
            .retain(|m| m.annotations.get(REF_NAME_ANNOTATION).map(String::as_str) != Some(tag));
        let mut d = d.clone();
        d.annotations
            .insert(REF_NAME_ANNOTATION.to_string(), tag.to_string());
        index.manifests.push(d);
        self.write_index(&index)
    }

    fn write_index(&self, index: &Index) -> Result<()> {
        let body = serde_json::to_vec(index).expect("indexes serialize");
        write_atomically(&self.dir.join("index.json"), &body)
    }
}

fn check_digest(body: &[u8], digest: &str, path: &Path) -> Result<()> {
    let actual = crate::digest::sha256_digest(body);
    if actual != digest {
        return Err(Error::DigestMismatch {
            what: path.display().to_string(),
            expected: digest.to_string(),
            actual,
        });
    }
    Ok(())
}

fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let file = File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let mut body = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut body)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    if body.len() as u64 > limit {
        return Err(Error::LimitExceeded(format!(
            "{}: over {limit} bytes",
            path.display()
        )));
    }
    Ok(body)
}

/// A fresh name next to `path`: unique per call, because two layer jobs
/// may store the same blob at once (e.g. one tar compressed two ways) and
/// must not write into each other's temporary file.
fn temp_path(path: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp{}-{n}", std::process::id()));
    PathBuf::from(tmp)
}

fn write_atomically(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = temp_path(path);
    std::fs::write(&tmp, data).map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(format!("renaming to {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_tag_find_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let layout = OciLayout::create(dir.path()).unwrap();
        let digest = layout.write_blob(b"{}").unwrap();
        let d = Descriptor {
            media_type: crate::remote::manifest::OCI_MANIFEST.into(),
            digest: digest.clone(),
            size: 2,
            annotations: Default::default(),
            platform: None,
        };
        layout.tag("v1", &d).unwrap();
        layout.tag("v1", &d).unwrap();
        let layout = OciLayout::open(dir.path()).unwrap();
        assert_eq!(layout.index().unwrap().manifests.len(), 1);
        assert_eq!(layout.find(Some("v1")).unwrap().digest, digest);
        assert_eq!(layout.find(None).unwrap().digest, digest);
        assert!(matches!(layout.find(Some("v2")), Err(Error::NotFound(_))));
        assert_eq!(layout.read_blob(&digest, 10).unwrap(), b"{}");
        std::fs::write(layout.blob_path(&digest).unwrap(), b"[]").unwrap();
        assert!(matches!(
            layout.read_blob(&digest, 10),
            Err(Error::DigestMismatch { .. })
        ));
        assert!(layout.blob_path("sha256:../../etc").is_err());
        assert!(OciLayout::open(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn same_blob_stored_from_many_threads() {
        let dir = tempfile::tempdir().unwrap();
        let layout = OciLayout::create(&dir.path().join("l")).unwrap();
        let data: Vec<u8> = (0..4u32 << 20).map(|i| (i * 7 + i / 4099) as u8).collect();
        let src = dir.path().join("src");
        std::fs::write(&src, &data).unwrap();
        let digest = crate::digest::sha256_digest(&data);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| layout.write_blob_file(&digest, &src).unwrap());
            }
        });
        assert_eq!(layout.read_blob(&digest, 8 << 20).unwrap(), data);
        let names: Vec<_> = std::fs::read_dir(dir.path().join("l/blobs/sha256"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "temporary files left: {names:?}");
    }
}
