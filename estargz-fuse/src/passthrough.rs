//! Kernel passthrough for files whose content is fully cached: their
//! verified chunks are copied once into one plain file, and the kernel
//! serves reads from that file without calling the daemon.
//!
//! Copies are unlinked files in the cache directory (`O_TMPFILE`): only
//! the open descriptors keep them, so they vanish with the process however
//! it ends. They are written only from chunks the cache hands out verified,
//! within a byte budget; a file that does not fit is read the normal way.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use estargz_core::reader::{NodeId, Reader};
use estargz_core::toc::EntryType;

pub struct Materializer {
    dir: PathBuf,
    budget: u64,
    used: AtomicU64,
    /// Copies already written, by data node.
    done: Mutex<HashMap<NodeId, Arc<File>>>,
}

impl Materializer {
    /// Copies go to `dir` (created if missing), at most `budget` bytes.
    pub fn new(dir: &Path, budget: u64) -> io::Result<Materializer> {
        std::fs::create_dir_all(dir)?;
        // Fail at mount time, not at the first open, if we cannot write.
        drop(tempfile::tempfile_in(dir)?);
        Ok(Materializer {
            dir: dir.to_path_buf(),
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
        let file = reader.entry(reader.resolve(id));
        file.kind() == EntryType::Reg
            && file.size() > 0
            && file
                .chunks()
                .iter()
                .all(|c| c.digest.is_some_and(|d| reader.cache().contains(&d)))
    }

    /// An open file with the content of `id`, if it is fully cached and
    /// fits the budget; `None` means "read through the daemon".
    pub fn open(&self, reader: &Reader, id: NodeId) -> Option<File> {
        let id = reader.resolve(id);
        let existing = self.lock().get(&id).cloned();
        if let Some(file) = existing {
            return file.try_clone().ok();
        }
        if !Self::fully_cached(reader, id) {
            return None;
        }
        let size = reader.entry(id).size();
        // Reserve first, so parallel opens cannot overrun the budget.
        self.used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                used.checked_add(size).filter(|&total| total <= self.budget)
            })
            .ok()?;
        let unreserve = || self.used.fetch_sub(size, Ordering::SeqCst);
        match self.write(reader, id) {
            Ok(Some(file)) => {
                // A concurrent open may have won the race; keep its copy.
                let file = Arc::new(file);
                let winner = self
                    .lock()
                    .entry(id)
                    .or_insert_with(|| file.clone())
                    .clone();
                if !Arc::ptr_eq(&winner, &file) {
                    unreserve();
                }
                winner.try_clone().ok()
            }
            Ok(None) => {
                unreserve();
                None
            }
            Err(e) => {
                unreserve();
                log::warn!(
                    "passthrough copy of {:?} failed, reading through the daemon: {e}",
                    reader.path(id)
                );
                None
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, Arc<File>>> {
        self.done.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the file from cached chunks; `Ok(None)` when a chunk left the
    /// cache meanwhile.
    fn write(&self, reader: &Reader, id: NodeId) -> io::Result<Option<File>> {
        let mut file = tempfile::tempfile_in(&self.dir)?;
        {
            let mut out = io::BufWriter::with_capacity(1 << 20, &mut file);
            for chunk in reader.entry(id).chunks() {
                // `get` re-checks disk entries against their digest.
                match chunk.digest.and_then(|d| reader.cache().get(&d)) {
                    Some(data) if data.len() as u64 == chunk.chunk_size => out.write_all(&data)?,
                    _ => return Ok(None),
                }
            }
            out.flush()?;
        }
        if file.metadata()?.len() != reader.entry(id).size() {
            return Ok(None);
        }
        Ok(Some(file))
    }
}
