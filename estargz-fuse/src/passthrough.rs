//! Kernel passthrough for files whose content is fully cached: their
//! verified chunks are copied once into one plain file, and the kernel
//! serves reads from that file without calling the daemon.
//!
//! Files are written into a private directory under the cache directory
//! (removed at unmount), only from chunks the cache hands out verified, and
//! within a byte budget; a file that does not fit is read the normal way.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use estargz_core::reader::{NodeId, Reader};
use estargz_core::toc::EntryType;

pub struct Materializer {
    dir: tempfile::TempDir,
    budget: u64,
    used: AtomicU64,
    /// Files already written, by data node.
    done: Mutex<HashMap<NodeId, std::path::PathBuf>>,
}

impl Materializer {
    /// A private directory in `parent` holding at most `budget` bytes.
    pub fn new(parent: &Path, budget: u64) -> io::Result<Materializer> {
        std::fs::create_dir_all(parent)?;
        Ok(Materializer {
            dir: tempfile::Builder::new()
                .prefix("passthrough-")
                .tempdir_in(parent)?,
            budget,
            used: AtomicU64::new(0),
            done: Mutex::new(HashMap::new()),
        })
    }

    pub fn bytes_used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Whether every chunk of file `id` is in the cache (nothing to fetch).
    pub fn fully_cached(reader: &Reader, id: NodeId) -> bool {
        let node = reader.node(reader.resolve(id));
        node.entry.kind == EntryType::Reg
            && node.entry.size > 0
            && node
                .chunks
                .iter()
                .all(|c| reader.cache().contains(&c.digest))
    }

    /// An open file with the content of `id`, if it is fully cached and
    /// fits the budget; `None` means "read through the daemon".
    pub fn open(&self, reader: &Reader, id: NodeId) -> Option<File> {
        let id = reader.resolve(id);
        let existing = self.lock().get(&id).cloned();
        if let Some(path) = existing {
            return File::open(path).ok();
        }
        if !Self::fully_cached(reader, id) {
            return None;
        }
        let size = reader.node(id).entry.size;
        if self.used.load(Ordering::Relaxed).saturating_add(size) > self.budget {
            return None;
        }
        match self.write(reader, id) {
            Ok(Some(path)) => {
                // A concurrent open may have won the race; keep its copy.
                let winner = self
                    .lock()
                    .entry(id)
                    .or_insert_with(|| {
                        self.used.fetch_add(size, Ordering::Relaxed);
                        path.clone()
                    })
                    .clone();
                if winner != path {
                    let _ = std::fs::remove_file(&path);
                }
                File::open(winner).ok()
            }
            Ok(None) => None,
            Err(e) => {
                log::warn!(
                    "passthrough copy of {:?} failed, reading through the daemon: {e}",
                    reader.index().path(id)
                );
                None
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, std::path::PathBuf>> {
        self.done.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the file from cached chunks; `Ok(None)` when a chunk left the
    /// cache meanwhile.
    fn write(&self, reader: &Reader, id: NodeId) -> io::Result<Option<std::path::PathBuf>> {
        let mut tmp = tempfile::NamedTempFile::new_in(self.dir.path())?;
        {
            let mut out = io::BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
            for chunk in &reader.node(id).chunks {
                // `get` re-checks disk entries against their digest.
                match reader.cache().get(&chunk.digest) {
                    Some(data) if data.len() as u64 == chunk.chunk_size => out.write_all(&data)?,
                    _ => return Ok(None),
                }
            }
            out.flush()?;
        }
        let written = tmp.as_file().metadata()?.len();
        if written != reader.node(id).entry.size {
            return Ok(None);
        }
        let path = self.dir.path().join(id.to_string());
        tmp.persist(&path).map_err(|e| e.error)?;
        Ok(Some(path))
    }
}
