//! Access recording: which regular files of each layer a workload opened,
//! in first-access order, for workload-optimized images (`estargz
//! optimize`) and for `--record-access FILE` on `mount` and `store`.
//!
//! A file counts when it is first opened or read: execve and mmap of
//! binaries and shared libraries reach a FUSE file system as opens too, and
//! later reads may never arrive (kernel page cache, KEEP_CACHE,
//! passthrough), so the first open is what matters. Lookups alone do not
//! count (a `stat` reads nothing). Memory is bounded: past `limit` files
//! in all, further ones are counted as dropped with one warning.

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use estargz_core::reader::NodeId;
use estargz_core::Digest;
use serde::{Deserialize, Serialize};

/// Files recorded in all layers before further ones are dropped.
pub const DEFAULT_RECORD_LIMIT: usize = 100_000;

/// The version written in, and accepted from, access records.
pub const RECORD_VERSION: u32 = 1;

/// What an access record file holds (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessRecord {
    pub version: u32,
    /// One entry per layer served while recording, in the order they were
    /// first served.
    pub layers: Vec<LayerRecord>,
}

/// The files of one layer that were accessed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerRecord {
    /// Where the layer came from, for people.
    pub source: String,
    /// Position in the image (0 = bottom), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// The layer blob's digest, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
    /// The TOC digest of the layer the paths were recorded on.
    pub toc_digest: Digest,
    /// Paths in the layer (as in its TOC), in first-access order.
    pub files: Vec<String>,
    /// Files not recorded because the limit was reached.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropped: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl AccessRecord {
    pub fn read(path: &Path) -> estargz_core::Result<AccessRecord> {
        let what = || format!("access record {}", path.display());
        let text = std::fs::read(path).map_err(|e| estargz_core::Error::io(what(), e))?;
        let record: AccessRecord = serde_json::from_slice(&text).map_err(|e| {
            estargz_core::Error::InvalidArgument(format!("{}: not an access record: {e}", what()))
        })?;
        if record.version != RECORD_VERSION {
            return Err(estargz_core::Error::Unsupported(format!(
                "{}: version {} (this build reads version {RECORD_VERSION})",
                what(),
                record.version
            )));
        }
        Ok(record)
    }

    /// The record as JSON (what [`AccessRecord::write`] writes, on one line).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an access record is plain data")
    }

    /// Writes the record to `path` atomically (a temporary file in the
    /// same directory, renamed over it), so a reader never sees half.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let mut tmp = tempfile::Builder::new()
            .prefix(".estargz-record-")
            .tempfile_in(dir)?;
        serde_json::to_writer_pretty(&mut tmp, self)?;
        tmp.write_all(b"\n")?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    }
}

/// Which layer a [`LayerAccess`] records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerKey {
    pub source: String,
    pub index: Option<usize>,
    pub digest: Option<Digest>,
    pub toc_digest: Digest,
}

/// The shared bound on recorded files.
#[derive(Debug)]
struct Budget {
    limit: usize,
    used: AtomicUsize,
    warned: AtomicBool,
}

impl Budget {
    fn take(&self) -> bool {
        let took = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.limit).then_some(n + 1)
            })
            .is_ok();
        if !took && !self.warned.swap(true, Ordering::Relaxed) {
            log::warn!(
                "access recording: {} files recorded, the limit; later files are not recorded",
                self.limit
            );
        }
        took
    }
}

/// Records the layers of one mount, store or optimize run.
#[derive(Debug)]
pub struct AccessRecorder {
    budget: Arc<Budget>,
    layers: Mutex<Vec<Arc<LayerAccess>>>,
}

impl AccessRecorder {
    /// At most `limit` files in all layers.
    pub fn new(limit: usize) -> Arc<AccessRecorder> {
        Arc::new(AccessRecorder {
            budget: Arc::new(Budget {
                limit,
                used: AtomicUsize::new(0),
                warned: AtomicBool::new(false),
            }),
            layers: Mutex::new(Vec::new()),
        })
    }

    /// The recorder of one layer; a layer served again (the store reloads
    /// unloaded layers) continues its earlier list.
    pub fn layer(&self, key: LayerKey) -> Arc<LayerAccess> {
        let mut layers = self.layers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = layers.iter().find(|l| l.key == key) {
            return l.clone();
        }
        let l = Arc::new(LayerAccess {
            key,
            budget: self.budget.clone(),
            seen: Mutex::new(Seen::default()),
            dropped: AtomicU64::new(0),
        });
        layers.push(l.clone());
        l
    }

    /// Everything recorded so far.
    pub fn record(&self) -> AccessRecord {
        let layers = self.layers.lock().unwrap_or_else(|p| p.into_inner());
        AccessRecord {
            version: RECORD_VERSION,
            layers: layers.iter().map(|l| l.record()).collect(),
        }
    }
}

#[derive(Debug, Default)]
struct Seen {
    nodes: HashSet<NodeId>,
    files: Vec<String>,
}

/// The accessed files of one layer.
#[derive(Debug)]
pub struct LayerAccess {
    key: LayerKey,
    budget: Arc<Budget>,
    seen: Mutex<Seen>,
    dropped: AtomicU64,
}

impl LayerAccess {
    pub fn key(&self) -> &LayerKey {
        &self.key
    }

    /// Notes an access to regular file `id` (a data node: hardlinks
    /// resolved); `path` is called only the first time.
    pub fn note(&self, id: NodeId, path: impl FnOnce() -> String) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.nodes.contains(&id) {
            return;
        }
        if !self.budget.take() {
            // Counted once per file: the node is remembered without its
            // path (a set entry is a few bytes, a path many).
            if seen.nodes.len() < self.budget.limit.saturating_mul(2) {
                seen.nodes.insert(id);
            }
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        seen.nodes.insert(id);
        seen.files.push(path());
    }

    pub fn record(&self) -> LayerRecord {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        LayerRecord {
            source: self.key.source.clone(),
            index: self.key.index,
            digest: self.key.digest,
            toc_digest: self.key.toc_digest,
            files: seen.files.clone(),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}
