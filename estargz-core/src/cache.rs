//! A cache of verified, decompressed chunks keyed by their digest: a
//! bounded LRU in memory and, optionally, a bounded directory on disk.
//!
//! Only data whose digest was checked is put in; disk entries are checked
//! again when read (a file corrupted on disk is deleted and refetched), so
//! the cache can never hand out wrong bytes.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::digest::{Digest, Hasher};
use crate::error::{Error, Result};

/// Default memory budget (bytes of chunk data).
pub const DEFAULT_MEMORY_SIZE: u64 = 64 << 20;
/// Default disk budget.
pub const DEFAULT_DISK_SIZE: u64 = 2 << 30;

#[derive(Debug, Clone)]
/// Sizes of a [`ChunkCache`]'s two tiers.
#[non_exhaustive]
pub struct CacheOptions {
    /// Bytes of verified chunks kept in memory (least recently used dropped first).
    pub memory_size: u64,
    /// Directory for the disk cache; `None` keeps chunks in memory only.
    pub dir: Option<PathBuf>,
    /// Bytes of verified chunks kept in the disk directory, when there is one.
    pub disk_size: u64,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions {
            memory_size: DEFAULT_MEMORY_SIZE,
            dir: None,
            disk_size: DEFAULT_DISK_SIZE,
        }
    }
}

crate::options::option_setters!(CacheOptions {
    memory_size: u64,
    dir: Option<PathBuf>,
    disk_size: u64,
});

/// Hit/miss counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Chunks found in memory.
    pub memory_hits: u64,
    /// Chunks found on disk (and re-verified).
    pub disk_hits: u64,
    /// Chunks found in neither tier.
    pub misses: u64,
    /// Disk entries that failed their digest check and were dropped.
    pub corrupt: u64,
}

/// An LRU index: key → (size, tick), tick → key.
#[derive(Default)]
struct Lru<V> {
    entries: HashMap<Digest, (V, u64, u64)>,
    order: BTreeMap<u64, Digest>,
    bytes: u64,
    tick: u64,
}

impl<V: Clone> Lru<V> {
    fn get(&mut self, key: &Digest) -> Option<V> {
        self.tick += 1;
        let tick = self.tick;
        let (v, _, t) = self.entries.get_mut(key)?;
        self.order.remove(t);
        *t = tick;
        self.order.insert(tick, *key);
        Some(v.clone())
    }

    fn insert(&mut self, key: &Digest, value: V, size: u64) {
        self.remove(key);
        self.tick += 1;
        self.entries.insert(*key, (value, size, self.tick));
        self.order.insert(self.tick, *key);
        self.bytes += size;
    }

    fn remove(&mut self, key: &Digest) -> Option<V> {
        let (v, size, tick) = self.entries.remove(key)?;
        self.order.remove(&tick);
        self.bytes -= size;
        Some(v)
    }

    /// Pops least-recently-used entries until at most `limit` bytes remain.
    fn evict_to(&mut self, limit: u64) -> Vec<Digest> {
        let mut gone = Vec::new();
        while self.bytes > limit {
            let Some((_, key)) = self.order.pop_first() else {
                break;
            };
            if let Some((_, size, _)) = self.entries.remove(&key) {
                self.bytes -= size;
            }
            gone.push(key);
        }
        gone
    }
}

struct Disk {
    root: PathBuf,
    limit: u64,
    index: Mutex<Lru<()>>,
    tmp_counter: AtomicU64,
}

/// The chunk cache; share one `Arc<ChunkCache>` between readers.
pub struct ChunkCache {
    memory_limit: u64,
    memory: Mutex<Lru<Arc<[u8]>>>,
    disk: Option<Disk>,
    stats: Mutex<CacheStats>,
}

impl std::fmt::Debug for ChunkCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkCache")
            .field("memory_limit", &self.memory_limit)
            .field("disk", &self.disk.as_ref().map(|d| &d.root))
            .finish()
    }
}

impl ChunkCache {
    /// A memory-only cache.
    pub fn in_memory(bytes: u64) -> ChunkCache {
        ChunkCache {
            memory_limit: bytes,
            memory: Mutex::new(Lru::default()),
            disk: None,
            stats: Mutex::new(CacheStats::default()),
        }
    }

    /// Opens (creating if needed) a cache; an existing disk cache is
    /// indexed by modification time, oldest evicted first.
    pub fn open(opts: &CacheOptions) -> Result<ChunkCache> {
        let mut cache = Self::in_memory(opts.memory_size);
        if let Some(dir) = &opts.dir {
            let chunks = dir.join("chunks");
            let tmp = dir.join("tmp");
            for d in [&chunks, &tmp] {
                fs::create_dir_all(d)
                    .map_err(|e| Error::io(format!("creating cache dir {}", d.display()), e))?;
            }
            // Leftovers of writes interrupted by a crash.
            if let Ok(entries) = fs::read_dir(&tmp) {
                for e in entries.flatten() {
                    let _ = fs::remove_file(e.path());
                }
            }
            let mut found = Vec::new();
            for shard in fs::read_dir(&chunks)
                .map_err(|e| Error::io(format!("reading cache dir {}", chunks.display()), e))?
                .flatten()
            {
                for entry in fs::read_dir(shard.path()).into_iter().flatten().flatten() {
                    let name = entry.file_name().to_string_lossy().to_string();
                    // Not followed: only regular files we could have written count.
                    let Ok(meta) = entry.metadata() else { continue };
                    if !meta.is_file() {
                        let _ = fs::remove_file(entry.path());
                        continue;
                    }
                    if let Ok(digest) = format!("sha256:{name}").parse::<Digest>() {
                        let mtime = meta.modified().ok();
                        found.push((mtime, digest, meta.len()));
                    }
                }
            }
            found.sort();
            let mut index = Lru::default();
            for (_, digest, size) in found {
                index.insert(&digest, (), size);
            }
            let disk = Disk {
                root: dir.clone(),
                limit: opts.disk_size,
                index: Mutex::new(index),
                tmp_counter: AtomicU64::new(0),
            };
            disk.evict();
            cache.disk = Some(disk);
        }
        Ok(cache)
    }

    /// The process's cache for `opts.dir`, opened with `opts` if none is
    /// open: every reader of one directory shares one cache, so its memory
    /// and disk limits hold for them all, and a second open cannot clear
    /// the first one's in-flight writes (`open` empties `tmp`) nor evict
    /// files behind its index. While a directory's cache is open, later
    /// callers get it with the limits it was opened with. Memory-only
    /// options (no directory) get a cache of their own.
    pub fn open_shared(opts: &CacheOptions) -> Result<Arc<ChunkCache>> {
        static OPEN: Mutex<Vec<(PathBuf, std::sync::Weak<ChunkCache>)>> = Mutex::new(Vec::new());
        let Some(dir) = &opts.dir else {
            return Ok(Arc::new(ChunkCache::open(opts)?));
        };
        let mut open = OPEN.lock().unwrap_or_else(|p| p.into_inner());
        open.retain(|(_, weak)| weak.strong_count() > 0);
        if let Some(cache) = open
            .iter()
            .find(|(d, _)| d == dir)
            .and_then(|(_, w)| w.upgrade())
        {
            return Ok(cache);
        }
        // Opened under the lock: a concurrent open of the same directory
        // waits and then shares this one.
        let cache = Arc::new(ChunkCache::open(opts)?);
        open.push((dir.clone(), Arc::downgrade(&cache)));
        Ok(cache)
    }

    /// Hit and miss counts so far.
    pub fn stats(&self) -> CacheStats {
        *self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count(&self, f: impl FnOnce(&mut CacheStats)) {
        f(&mut self.stats.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Whether `digest` is cached (without checking or loading it).
    pub fn contains(&self, digest: &Digest) -> bool {
        if self
            .memory
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entries
            .contains_key(digest)
        {
            return true;
        }
        self.disk.as_ref().is_some_and(|d| {
            d.index
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entries
                .contains_key(digest)
        })
    }

    /// The chunk with this digest if it is in memory (no disk access).
    pub fn get_memory(&self, digest: &Digest) -> Option<Arc<[u8]>> {
        let v = self
            .memory
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(digest)?;
        self.count(|s| s.memory_hits += 1);
        crate::metrics::global().cache_hit();
        Some(v)
    }

    /// The chunk with this digest, checked, or `None`.
    pub fn get(&self, digest: &Digest) -> Option<Arc<[u8]>> {
        if let Some(v) = self.get_memory(digest) {
            return Some(v);
        }
        if let Some(disk) = &self.disk {
            match disk.read(digest) {
                Ok(Some(data)) => {
                    self.count(|s| s.disk_hits += 1);
                    crate::metrics::global().cache_hit();
                    let data: Arc<[u8]> = data.into();
                    self.put_memory(digest, data.clone());
                    return Some(data);
                }
                Ok(None) => {}
                Err(()) => self.count(|s| s.corrupt += 1),
            }
        }
        self.count(|s| s.misses += 1);
        crate::metrics::global().cache_miss();
        None
    }

    /// Stores a chunk the caller has verified against `digest`. Disk
    /// failures only cost the cache entry, never the read.
    pub fn put(&self, digest: &Digest, data: Arc<[u8]>) {
        if let Some(disk) = &self.disk {
            let _ = disk.write(digest, &data);
        }
        self.put_memory(digest, data);
    }

    /// Stores a verified chunk nobody has asked for yet (prefetch,
    /// background fetch): on disk only when there is a disk cache, so
    /// warming a whole layer does not fill the memory cache (and the
    /// process's RSS) with chunks that may never be read; a read loads it
    /// into memory then.
    pub fn put_cold(&self, digest: &Digest, data: Arc<[u8]>) {
        // A chunk the disk cache cannot take is kept in memory instead.
        if !self.disk.as_ref().is_some_and(|d| d.write(digest, &data)) {
            self.put_memory(digest, data);
        }
    }

    fn put_memory(&self, digest: &Digest, data: Arc<[u8]>) {
        if data.len() as u64 > self.memory_limit {
            return;
        }
        let mut mem = self.memory.lock().unwrap_or_else(|p| p.into_inner());
        let size = data.len() as u64;
        mem.insert(digest, data, size);
        let gone = mem.evict_to(self.memory_limit).len();
        crate::metrics::global().cache_evictions(gone as u64);
    }

    /// Bytes held on disk (for tests and status output).
    pub fn disk_size(&self) -> u64 {
        self.disk.as_ref().map_or(0, |d| {
            d.index.lock().unwrap_or_else(|p| p.into_inner()).bytes
        })
    }
}

impl Disk {
    /// A digest is 64 hex digits: it is never a path outside the cache.
    fn path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.root.join("chunks").join(&hex[..2]).join(hex)
    }

    /// `Ok(None)` on a miss, `Err(())` when the entry was corrupt or not
    /// one we wrote (removed, so the chunk is fetched and written again).
    /// Nothing on disk is trusted: a symlink is not followed, a FIFO or
    /// device is not read (nor waited on), and at most the size we recorded
    /// is read before the digest is checked.
    fn read(&self, digest: &Digest) -> std::result::Result<Option<Vec<u8>>, ()> {
        let Some(size) = self
            .index
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entries
            .get(digest)
            .map(|e| e.1)
        else {
            return Ok(None);
        };
        let path = self.path(digest);
        let reject = || {
            let _ = fs::remove_file(&path);
            self.index
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(digest);
            Err(())
        };
        let file = match fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Removed behind our back (another process evicted it).
                self.index
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(digest);
                return Ok(None);
            }
            Err(_) => return reject(),
        };
        match file.metadata() {
            Ok(meta) if meta.is_file() && meta.len() == size => {}
            _ => return reject(),
        }
        let mut data = Vec::with_capacity(size as usize);
        if std::io::Read::read_to_end(&mut std::io::Read::take(&file, size), &mut data).is_err()
            || data.len() as u64 != size
        {
            return reject();
        }
        let mut h = Hasher::new();
        h.update(&data);
        if h.finish_digest() != *digest {
            return reject();
        }
        self.index
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(digest);
        Ok(Some(data))
    }

    /// Write to a temporary file, then rename: a crash leaves either no
    /// entry or a whole one (and reads re-check the digest anyway).
    /// Whether the chunk is on disk afterwards.
    fn write(&self, digest: &Digest, data: &[u8]) -> bool {
        if data.len() as u64 > self.limit {
            return false;
        }
        if self
            .index
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entries
            .contains_key(digest)
        {
            return true;
        }
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        let tmp =
            self.root
                .join("tmp")
                .join(format!("{}.{}.{n}", digest.hex(), std::process::id()));
        let path = self.path(digest);
        let ok = (|| -> std::io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(data)?;
            fs::create_dir_all(path.parent().expect("cache paths have a parent"))?;
            fs::rename(&tmp, &path)
        })();
        if ok.is_err() {
            let _ = fs::remove_file(&tmp);
            return false;
        }
        self.index
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(digest, (), data.len() as u64);
        self.evict();
        true
    }

    fn evict(&self) {
        let gone = self
            .index
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .evict_to(self.limit);
        crate::metrics::global().cache_evictions(gone.len() as u64);
        for digest in gone {
            let _ = fs::remove_file(self.path(&digest));
        }
    }
}

/// Where chunks are cached, for status output.
pub fn describe(opts: &CacheOptions) -> String {
    match &opts.dir {
        Some(d) => format!("{} (max {} bytes)", Path::new(d).display(), opts.disk_size),
        None => "memory only".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn chunk(n: u8, len: usize) -> (Digest, Arc<[u8]>) {
        let data: Arc<[u8]> = vec![n; len].into();
        (Digest::of(&data), data)
    }

    #[test]
    fn cold_chunks_go_to_disk_only_and_into_memory_when_read() {
        let dir = tempfile::tempdir().unwrap();
        let opts = CacheOptions {
            memory_size: 1 << 20,
            dir: Some(dir.path().to_path_buf()),
            disk_size: 150,
        };
        let c = ChunkCache::open(&opts).unwrap();
        let (d, data) = chunk(1, 100);
        c.put_cold(&d, data.clone());
        assert!(c.contains(&d));
        assert!(c.get_memory(&d).is_none(), "a cold chunk is not in memory");
        assert_eq!(c.get(&d).as_deref(), Some(&data[..]));
        assert!(c.get_memory(&d).is_some(), "a read brings it into memory");
        // Too large for the disk cache: kept in memory rather than lost.
        let (big, big_data) = chunk(2, 200);
        c.put_cold(&big, big_data);
        assert!(c.get_memory(&big).is_some());
        // Without a disk cache, cold chunks are kept in memory.
        let m = ChunkCache::in_memory(1 << 20);
        m.put_cold(&d, data);
        assert!(m.get_memory(&d).is_some());
    }

    #[test]
    fn open_shared_gives_one_cache_per_directory_while_open() {
        let dir = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let opts = CacheOptions::default().dir(Some(dir.path().to_path_buf()));
        let a = ChunkCache::open_shared(&opts).unwrap();
        let (d, data) = chunk(1, 100);
        a.put(&d, data.clone());
        // Same directory: the same cache (its memory tier included).
        let b = ChunkCache::open_shared(&opts.clone().memory_size(1)).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(b.get_memory(&d).as_deref(), Some(&data[..]));
        let c =
            ChunkCache::open_shared(&opts.clone().dir(Some(other.path().to_path_buf()))).unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
        // Memory-only options are never shared.
        let m1 = ChunkCache::open_shared(&CacheOptions::default()).unwrap();
        let m2 = ChunkCache::open_shared(&CacheOptions::default()).unwrap();
        assert!(!Arc::ptr_eq(&m1, &m2));
        // Once every user has dropped it, the next open is a fresh one
        // (which finds the chunk on disk).
        drop((a, b));
        let e = ChunkCache::open_shared(&opts).unwrap();
        assert!(e.get_memory(&d).is_none());
        assert_eq!(e.get(&d).as_deref(), Some(&data[..]));
    }

    #[test]
    fn memory_lru_is_bounded() {
        let c = ChunkCache::in_memory(250);
        let chunks: Vec<_> = (0..4).map(|i| chunk(i, 100)).collect();
        for (d, data) in &chunks {
            c.put(d, data.clone());
        }
        assert!(c.get(&chunks[0].0).is_none(), "oldest evicted");
        assert!(c.get(&chunks[3].0).is_some());
    }

    #[test]
    fn disk_cache_survives_reopen_and_detects_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let opts = CacheOptions {
            memory_size: 0,
            dir: Some(dir.path().to_path_buf()),
            disk_size: 250,
        };
        let c = ChunkCache::open(&opts).unwrap();
        let chunks: Vec<_> = (0..3).map(|i| chunk(i, 100)).collect();
        for (d, data) in &chunks {
            c.put(d, data.clone());
        }
        assert!(c.disk_size() <= 250);
        assert!(!c.contains(&chunks[0].0), "evicted from disk");
        drop(c);
        let c = ChunkCache::open(&opts).unwrap();
        assert_eq!(&*c.get(&chunks[2].0).unwrap(), &*chunks[2].1);
        // Corrupt an entry on disk: it is dropped, not served.
        let hex = chunks[1].0.hex();
        let path = dir.path().join("chunks").join(&hex[..2]).join(&hex);
        fs::write(&path, b"garbage").unwrap();
        assert!(c.get(&chunks[1].0).is_none());
        assert_eq!(c.stats().corrupt, 1);
        assert!(!path.exists());
        // Nothing lingers in tmp.
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn planted_entries_are_removed_not_followed_or_waited_on() {
        let dir = tempfile::tempdir().unwrap();
        let opts = CacheOptions {
            memory_size: 0,
            dir: Some(dir.path().to_path_buf()),
            disk_size: 1 << 20,
        };
        let c = ChunkCache::open(&opts).unwrap();
        let chunks: Vec<_> = (0..3).map(|i| chunk(i, 100)).collect();
        for (d, data) in &chunks {
            c.put(d, data.clone());
        }
        let path = |d: &Digest| {
            let hex = d.hex();
            dir.path().join("chunks").join(&hex[..2]).join(&hex)
        };
        // A FIFO (reading would block forever), a symlink to an endless
        // device, and a file of the right content but longer than recorded.
        let fifo = path(&chunks[0].0);
        fs::remove_file(&fifo).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let link = path(&chunks[1].0);
        fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        let long = path(&chunks[2].0);
        let mut longer = chunks[2].1.to_vec();
        longer.extend_from_slice(&[0; 4096]);
        fs::write(&long, &longer).unwrap();
        for (i, (d, data)) in chunks.iter().enumerate() {
            assert!(c.get(d).is_none(), "planted entry {i} served");
            assert!(fs::symlink_metadata(path(d)).is_err(), "entry {i} left");
            // Refetched and written again: served from disk afterwards.
            c.put(d, data.clone());
            assert_eq!(&*c.get(d).unwrap(), &**data);
        }
        assert_eq!(c.stats().corrupt, 3);
        // Planted before opening: not indexed, removed.
        drop(c);
        let link = path(&chunks[1].0);
        fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        let c = ChunkCache::open(&opts).unwrap();
        assert!(!c.contains(&chunks[1].0));
        assert!(fs::symlink_metadata(&link).is_err());
        // Nothing lingers in tmp.
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }
}
