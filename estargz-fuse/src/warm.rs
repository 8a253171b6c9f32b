//! Filling the chunk cache of opened layers ahead of reads, for the mount
//! and the store alike: the landmark prefetch at once, then the rest of the
//! layer with the core's `BackgroundFetch` (which pauses while reads of the
//! layer are in flight). At most `max_background` layers are fetched in
//! the background at once, so many layers do not crowd out on-demand
//! reads, and a layer larger than the cache is not fetched at all (it
//! would only evict itself).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use estargz_core::reader::{BackgroundFetch, Reader, BACKGROUND_SILENCE};

/// Compressed bytes per background request: ~170 ms of a 100 Mbit/s link,
/// so a burst of on-demand reads never waits long behind a batch, while a
/// 20 ms round trip still costs little.
const BACKGROUND_BATCH_BYTES: u64 = 2 << 20;

#[derive(Debug, Clone)]
pub struct WarmOptions {
    /// Prefetch what `.prefetch.landmark` marks.
    pub prefetch: bool,
    /// Fetch the rest of the layer in the background.
    pub background: bool,
    /// Background fetches running at once.
    pub max_background: usize,
    /// Compressed bytes per background request batch.
    pub batch_bytes: u64,
    /// Quiet time after on-demand reads (of any layer) before each batch.
    pub silence: Duration,
    /// Bytes the chunk cache can hold (disk, or memory without a disk
    /// cache): larger layers are not fetched in the background.
    pub cache_budget: u64,
}

impl WarmOptions {
    /// Nothing ahead of reads.
    pub fn off() -> WarmOptions {
        WarmOptions {
            prefetch: false,
            background: false,
            max_background: 2,
            batch_bytes: BACKGROUND_BATCH_BYTES,
            silence: BACKGROUND_SILENCE,
            cache_budget: 0,
        }
    }
}

/// Stops the warm-up of one layer when dropped (the layer was unloaded or
/// released). Dropping only sets a flag: it never waits for the network.
pub struct WarmTicket {
    cancel: Arc<AtomicBool>,
}

impl WarmTicket {
    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

impl Drop for WarmTicket {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
    }
}

#[derive(Default)]
struct Slots {
    running: usize,
}

pub struct Warmer {
    opts: WarmOptions,
    slots: Arc<(Mutex<Slots>, Condvar)>,
}

/// How often a running background fetch checks whether it should stop.
const POLL: Duration = Duration::from_millis(50);

impl Warmer {
    pub fn new(opts: WarmOptions) -> Warmer {
        Warmer {
            opts,
            slots: Arc::default(),
        }
    }

    pub fn options(&self) -> &WarmOptions {
        &self.opts
    }

    /// Background fetches running now.
    pub fn running(&self) -> usize {
        self.slots
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .running
    }

    /// Starts warming `reader` (named `what` in logs) on a thread of its
    /// own; it runs until done or until the ticket is dropped.
    pub fn start(&self, what: String, reader: Arc<Reader>) -> WarmTicket {
        let cancel = Arc::new(AtomicBool::new(false));
        let ticket = WarmTicket {
            cancel: cancel.clone(),
        };
        if !self.opts.prefetch && !self.opts.background {
            return ticket;
        }
        let opts = self.opts.clone();
        let slots = self.slots.clone();
        let spawned = std::thread::Builder::new()
            .name("warm-up".into())
            .spawn(move || warm(&what, reader, &opts, &slots, &cancel));
        if let Err(e) = spawned {
            log::warn!("cannot start the warm-up thread: {e}; reads fetch on demand");
        }
        ticket
    }
}

/// Decompressed bytes the cache needs to hold every chunk of the layer.
pub fn cached_size(reader: &Reader) -> u64 {
    reader.index().all_chunks().map(|(_, c)| c.chunk_size).sum()
}

fn warm(
    what: &str,
    reader: Arc<Reader>,
    opts: &WarmOptions,
    slots: &(Mutex<Slots>, Condvar),
    cancel: &AtomicBool,
) {
    if opts.prefetch {
        match reader.prefetch_landmarked() {
            Ok(s) if s.chunks_cached > 0 => {
                log::info!("{what}: prefetched {} bytes", s.bytes_cached)
            }
            Ok(_) => {}
            // Reads fetch on demand; nothing is remembered.
            Err(e) => log::warn!("{what}: prefetch failed: {e}"),
        }
    }
    if !opts.background || cancel.load(Ordering::Relaxed) {
        return;
    }
    let size = cached_size(&reader);
    if size > opts.cache_budget {
        log::info!(
            "{what}: no background fetch: the layer's {size} bytes do not fit the {}-byte cache",
            opts.cache_budget
        );
        return;
    }
    // Wait for a free slot (or for the layer to go away).
    {
        let (lock, freed) = slots;
        let mut s = lock.lock().unwrap_or_else(|p| p.into_inner());
        while s.running >= opts.max_background.max(1) {
            if cancel.load(Ordering::Relaxed) {
                return;
            }
            s = freed
                .wait_timeout(s, POLL)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        s.running += 1;
    }
    let _slot = Running(slots);
    log::debug!("{what}: background fetch started");
    let fetch = BackgroundFetch::start_after_silence(reader, opts.batch_bytes, opts.silence);
    loop {
        if fetch.is_finished() {
            match fetch.wait() {
                Ok(s) if s.complete => log::info!(
                    "{what}: background fetch complete: {} bytes cached",
                    s.bytes_cached
                ),
                Ok(_) => log::info!("{what}: background fetch stopped"),
                Err(e) => log::warn!("{what}: background fetch stopped: {e}"),
            }
            break;
        }
        if cancel.load(Ordering::Relaxed) {
            // Joins the fetch thread after its current batch, here and not
            // in whoever dropped the ticket.
            drop(fetch);
            log::info!("{what}: background fetch stopped (layer unloaded)");
            break;
        }
        std::thread::sleep(POLL);
    }
}

/// A taken background slot, given back however the fetch ends.
struct Running<'a>(&'a (Mutex<Slots>, Condvar));

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let (lock, freed) = self.0;
        lock.lock().unwrap_or_else(|p| p.into_inner()).running -= 1;
        freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use std::io::{self, Cursor};
    use std::sync::atomic::AtomicU64;
    use std::time::Instant;

    use estargz_core::cache::ChunkCache;
    use estargz_core::testing::{entry_headers, HeaderSpec};
    use estargz_core::{build, BuildInput, BuildOptions, OpenOptions, ReadAt};

    use super::*;

    /// A blob behind a slow link: every read takes a while.
    struct Slow {
        blob: Vec<u8>,
        reads: AtomicU64,
    }

    impl ReadAt for Slow {
        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(20));
            self.blob.read_at(buf, offset)
        }
        fn size(&self) -> u64 {
            self.blob.len() as u64
        }
    }

    /// A layer of `files` files of 32 KiB, one gzip member each.
    fn layer(files: usize, seed: u32) -> (Arc<Reader>, Arc<Slow>) {
        let mut tar = Vec::new();
        for i in 0..files {
            let data: Vec<u8> = (0..32 << 10)
                .map(|j: u32| (j.wrapping_mul(2654435761) ^ ((i as u32 * 7919 + seed) >> 3)) as u8)
                .collect();
            let spec = HeaderSpec {
                name: format!("f{i}"),
                typeflag: b'0',
                mode: 0o644,
                size: data.len() as u64,
                ..Default::default()
            };
            tar.extend_from_slice(&entry_headers(&spec));
            tar.extend_from_slice(&data);
        }
        tar.extend_from_slice(&[0; 1024]);
        let mut blob = Vec::new();
        build(
            BuildInput::Reader(Box::new(Cursor::new(tar))),
            &mut blob,
            &BuildOptions::default(),
        )
        .unwrap();
        let src = Arc::new(Slow {
            blob,
            reads: AtomicU64::new(0),
        });
        let opts = OpenOptions::default().cache(Some(Arc::new(ChunkCache::in_memory(64 << 20))));
        let reader = Arc::new(Reader::open(src.clone(), &opts).unwrap());
        src.reads.store(0, Ordering::SeqCst);
        (reader, src)
    }

    fn cached(reader: &Reader) -> (usize, usize) {
        let all: Vec<_> = reader
            .index()
            .all_chunks()
            .filter_map(|(_, c)| c.digest)
            .collect();
        let hit = all.iter().filter(|d| reader.cache().contains(d)).count();
        (hit, all.len())
    }

    fn background(max: usize, budget: u64) -> Warmer {
        Warmer::new(WarmOptions {
            prefetch: false,
            background: true,
            max_background: max,
            // One 32 KiB member per request: a fetch takes many requests.
            batch_bytes: 1,
            // Other tests of this process read layers; the quiet period
            // would make the timing here depend on them.
            silence: Duration::ZERO,
            cache_budget: budget,
        })
    }

    fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + limit;
        while !done() {
            assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn background_fetches_run_two_at_a_time_and_stop_when_unloaded() {
        let layers: Vec<_> = (0..3).map(|i| layer(40, i)).collect();
        let warmer = background(2, 1 << 30);
        let mut tickets: Vec<Option<WarmTicket>> = layers
            .iter()
            .enumerate()
            .map(|(i, (r, _))| Some(warmer.start(format!("layer {i}"), r.clone())))
            .collect();
        wait_until("two fetches running", Duration::from_secs(5), || {
            warmer.running() == 2
        });
        // The third waits for a slot: its blob is not read.
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(warmer.running(), 2);
        let idle = layers
            .iter()
            .filter(|(_, src)| src.reads.load(Ordering::SeqCst) == 0)
            .count();
        assert_eq!(idle, 1, "exactly one layer waits");
        // Unloading a running layer stops its fetch before it is done and
        // frees its slot for the waiting one.
        let running = layers
            .iter()
            .position(|(_, src)| src.reads.load(Ordering::SeqCst) > 0)
            .unwrap();
        tickets[running] = None;
        let stopped_at = Instant::now();
        wait_until("the freed slot is taken", Duration::from_secs(5), || {
            layers
                .iter()
                .all(|(_, src)| src.reads.load(Ordering::SeqCst) > 0)
        });
        assert!(stopped_at.elapsed() < Duration::from_secs(1));
        let reads = layers[running].1.reads.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            layers[running].1.reads.load(Ordering::SeqCst) <= reads + 1,
            "the unloaded layer is still being fetched"
        );
        let (hit, all) = cached(&layers[running].0);
        assert!(hit < all, "stopped before the end ({hit} of {all})");
        // The others complete: every chunk cached, and at most two ran.
        for (i, (reader, _)) in layers.iter().enumerate() {
            if i != running {
                wait_until("layer cached", Duration::from_secs(20), || {
                    let (hit, all) = cached(reader);
                    hit == all
                });
            }
        }
        wait_until("all slots given back", Duration::from_secs(5), || {
            warmer.running() == 0
        });
        drop(tickets);
    }

    #[test]
    fn a_layer_larger_than_the_cache_is_not_fetched() {
        let (reader, src) = layer(10, 9);
        let size = cached_size(&reader);
        assert!(size >= 10 * (32 << 10), "{size}");
        let warmer = background(2, size - 1);
        let _ticket = warmer.start("big layer".into(), reader.clone());
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(src.reads.load(Ordering::SeqCst), 0);
        assert_eq!(cached(&reader).0, 0);
        // One that fits is.
        let warmer = background(2, size);
        let _ticket = warmer.start("layer".into(), reader.clone());
        wait_until("layer cached", Duration::from_secs(20), || {
            let (hit, all) = cached(&reader);
            hit == all
        });
    }
}
