//! Filling the chunk cache of opened layers ahead of reads, for the mount
//! and the store alike: the landmark prefetch at once, then the rest of the
//! layer with the core's `BackgroundFetch`, from the moment the layer is
//! opened (a container start reads while Podman pulls and creates, so the
//! link would idle otherwise). At most `max_background` layers are fetched
//! in the background at once, and of those only the smallest moves on
//! (shortest job first: one layer's reads turn into cache hits as soon as
//! possible, instead of every layer's reads late; upper layers, where an
//! application usually lives, tend to be the small ones). A layer larger
//! than the cache is not fetched at all (it would only evict itself).
//! Layers started in one burst (a pull asks for an image's layers one after
//! the other) wait for the burst to end, so the smallest goes first in
//! whatever order they were asked for. No background batch starts while
//! any layer's landmark prefetch runs: the prioritized files of a
//! workload-optimized image are what its container reads first, so they
//! get the link to themselves.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use estargz_core::reader::{
    BackgroundFetch, BackgroundOptions, PrefetchHint, Reader, BACKGROUND_SILENCE,
};

use crate::command_prefetch;
use crate::optimize::bundle::ImageProcess;

/// Compressed bytes per background request: ~170 ms of a 100 Mbit/s link,
/// so a burst of on-demand reads never waits long behind a batch, while a
/// 20 ms round trip still costs little.
const BACKGROUND_BATCH_BYTES: u64 = 2 << 20;

/// What a resolved layer fetches ahead of reads. The default fetches
/// nothing ahead (the binaries turn prefetch and background fetch on from
/// their flags).
#[derive(Debug, Clone)]
#[non_exhaustive]
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
    /// Hold each batch while reads of the layer wait for data.
    pub yield_to_reads: bool,
    /// Bytes the chunk cache can hold (disk, or memory without a disk
    /// cache): larger layers are not fetched in the background.
    pub cache_budget: u64,
    /// Background fetches start only once no other one has started for
    /// this long.
    pub settle: Duration,
}

impl Default for WarmOptions {
    fn default() -> WarmOptions {
        WarmOptions {
            prefetch: false,
            background: false,
            max_background: 2,
            batch_bytes: BACKGROUND_BATCH_BYTES,
            silence: BACKGROUND_SILENCE,
            yield_to_reads: true,
            cache_budget: 0,
            settle: Duration::from_millis(100),
        }
    }
}

impl WarmOptions {
    /// How the store, `estargz-fuse mount` and the C ABI's mounts warm
    /// layers: from the moment a layer is opened, without a quiet period.
    /// One background request at a time (the warmer's shortest-first
    /// order) shares the link with reads; pausing it whenever a read waits
    /// would stall it for a whole container start, which reads without
    /// pause, and the reads would miss longer.
    pub fn serving(
        prefetch: bool,
        background: bool,
        max_background: usize,
        cache_budget: u64,
    ) -> WarmOptions {
        WarmOptions::default()
            .prefetch(prefetch)
            .background(background)
            .max_background(max_background)
            .cache_budget(cache_budget)
            .silence(Duration::ZERO)
            .yield_to_reads(false)
    }
}

estargz_core::option_setters!(WarmOptions {
    prefetch: bool,
    background: bool,
    max_background: usize,
    batch_bytes: u64,
    silence: Duration,
    yield_to_reads: bool,
    cache_budget: u64,
    settle: Duration,
});

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
    /// Background fetches under way: (bytes to cache, id); only the
    /// smallest fetches, the others wait at their next batch.
    fetching: Vec<(u64, u64)>,
    next_id: u64,
    /// When the last background fetch started.
    last_start: Option<Instant>,
    /// Landmark prefetches under way (of any layer).
    prefetching: usize,
}

impl Slots {
    /// Whether `me` may fetch its next batch: the smallest, once starts
    /// have settled and no prefetch runs.
    fn may_fetch(&self, me: (u64, u64), settle: Duration) -> bool {
        self.prefetching == 0
            && self.last_start.is_none_or(|t| t.elapsed() >= settle)
            && self.fetching.iter().all(|&other| other >= me)
    }
}

pub struct Warmer {
    opts: WarmOptions,
    slots: Arc<(Mutex<Slots>, Condvar)>,
}

/// Decompressed bytes a command prefetch takes at most (and at most half
/// the cache).
const MAX_COMMAND_BYTES: u64 = 256 << 20;

/// How often a running background fetch checks whether it should stop.
const POLL: Duration = Duration::from_millis(50);

impl Warmer {
    pub fn new(opts: WarmOptions) -> Warmer {
        Warmer {
            opts,
            slots: Arc::default(),
        }
    }

    /// A warmer on the process-wide schedule: the layers one process mounts
    /// one by one (the C ABI's, a snapshotter's) share the link, so they
    /// take turns as one store's layers do, instead of each fetching at
    /// once.
    pub fn shared(opts: WarmOptions) -> Warmer {
        static SLOTS: OnceLock<Arc<(Mutex<Slots>, Condvar)>> = OnceLock::new();
        Warmer {
            opts,
            slots: SLOTS.get_or_init(Arc::default).clone(),
        }
    }

    pub fn options(&self) -> &WarmOptions {
        &self.opts
    }

    /// Background fetches running now.
    pub fn running(&self) -> usize {
        lock_slots(&self.slots).running
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

    /// Starts fetching what a container of an image runs first
    /// ([`command_prefetch`]) on a thread of its own, when prefetch is on;
    /// `layers` are the image's, topmost first, `config` its config (which
    /// names the command). No background batch starts until it ends.
    /// Skipped for an image with a `.prefetch.landmark`: its prioritized
    /// files are the better guess, and they are prefetched.
    ///
    /// [`command_prefetch`]: crate::command_prefetch
    pub fn prefetch_command(&self, what: String, layers: Vec<Arc<Reader>>, config: &[u8]) {
        if !self.opts.prefetch
            || layers
                .iter()
                .any(|l| matches!(l.prefetch_hint(), PrefetchHint::Before(_)))
        {
            return;
        }
        let process = match ImageProcess::from_config(config) {
            Ok(p) => p,
            Err(e) => {
                log::debug!("{what}: no command prefetch: {e}");
                return;
            }
        };
        let max_bytes = match self.opts.cache_budget {
            0 => MAX_COMMAND_BYTES,
            budget => MAX_COMMAND_BYTES.min(budget / 2),
        };
        let slots = self.slots.clone();
        // Counted before the thread runs: a background batch about to
        // start waits for it.
        lock_slots(&slots).prefetching += 1;
        let spawned = std::thread::Builder::new()
            .name("command-prefetch".into())
            .spawn(move || {
                let slots: &(Mutex<Slots>, Condvar) = &slots;
                let _prefetching = Prefetching(slots);
                let started = Instant::now();
                let done = command_prefetch::prefetch(&layers, &process, max_bytes);
                log::debug!(
                    "{what}: command prefetch of {} file(s), {} bytes, in {:.2?}: {:?}",
                    done.files.len(),
                    done.bytes,
                    started.elapsed(),
                    done.files
                );
            });
        if let Err(e) = spawned {
            lock_slots(&self.slots).prefetching -= 1;
            log::warn!("cannot start the command prefetch thread: {e}");
        }
    }
}

fn lock_slots(slots: &(Mutex<Slots>, Condvar)) -> std::sync::MutexGuard<'_, Slots> {
    slots.0.lock().unwrap_or_else(|p| p.into_inner())
}

/// Decompressed bytes the cache needs to hold every chunk of the layer.
pub fn cached_size(reader: &Reader) -> u64 {
    reader.index().all_chunks().map(|(_, c)| c.chunk_size).sum()
}

fn warm(
    what: &str,
    reader: Arc<Reader>,
    opts: &WarmOptions,
    slots_arc: &Arc<(Mutex<Slots>, Condvar)>,
    cancel: &Arc<AtomicBool>,
) {
    let slots: &(Mutex<Slots>, Condvar) = slots_arc;
    if opts.prefetch {
        lock_slots(slots).prefetching += 1;
        let _prefetching = Prefetching(slots);
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
    let me = {
        let mut s = lock_slots(slots);
        s.next_id += 1;
        let me = (size, s.next_id);
        s.fetching.push(me);
        s.last_start = Some(Instant::now());
        me
    };
    let _fetching = Fetching(slots, me);
    log::debug!("{what}: background fetch started");
    let gate_slots = Arc::clone(slots_arc);
    let gate_cancel = Arc::clone(cancel);
    let settle = opts.settle;
    let fetch = BackgroundFetch::start_with(
        reader,
        BackgroundOptions {
            batch_bytes: opts.batch_bytes,
            silence: opts.silence,
            yield_to_reads: opts.yield_to_reads,
            // Closed at once when the layer goes away: no batch starts
            // between that and the stop below.
            gate: Some(Arc::new(move || {
                !gate_cancel.load(Ordering::Relaxed)
                    && lock_slots(&gate_slots).may_fetch(me, settle)
            })),
        },
    );
    loop {
        if fetch.is_finished() {
            match fetch.wait() {
                Ok(s) if s.complete => log::info!(
                    "{what}: background fetch complete: {} bytes fetched",
                    s.compressed_bytes
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

/// A fetch in the shortest-first order, taken out however it ends.
struct Fetching<'a>(&'a (Mutex<Slots>, Condvar), (u64, u64));

impl Drop for Fetching<'_> {
    fn drop(&mut self) {
        let mut s = lock_slots(self.0);
        s.fetching.retain(|&f| f != self.1);
    }
}

/// A running prefetch, counted out however it ends.
struct Prefetching<'a>(&'a (Mutex<Slots>, Condvar));

impl Drop for Prefetching<'_> {
    fn drop(&mut self) {
        lock_slots(self.0).prefetching -= 1;
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
        /// Reads wait while set.
        hold: AtomicBool,
    }

    impl ReadAt for Slow {
        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            while self.hold.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(5));
            }
            std::thread::sleep(Duration::from_millis(20));
            self.blob.read_at(buf, offset)
        }
        fn size(&self) -> u64 {
            self.blob.len() as u64
        }
    }

    /// A layer of `files` files of 32 KiB, one gzip member each.
    fn layer(files: usize, seed: u32) -> (Arc<Reader>, Arc<Slow>) {
        layer_with(files, seed, &BuildOptions::default())
    }

    fn layer_with(files: usize, seed: u32, opts: &BuildOptions) -> (Arc<Reader>, Arc<Slow>) {
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
            opts,
        )
        .unwrap();
        let src = Arc::new(Slow {
            blob,
            reads: AtomicU64::new(0),
            hold: AtomicBool::new(false),
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
            yield_to_reads: true,
            cache_budget: budget,
            settle: Duration::ZERO,
        })
    }

    fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + limit;
        while !done() {
            assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn reads(src: &Slow) -> u64 {
        src.reads.load(Ordering::SeqCst)
    }

    #[test]
    fn background_fetches_take_two_slots_and_stop_when_unloaded() {
        // Sizes differ so the shortest-first order is known: 0, 1, 2.
        let layers: Vec<_> = [20, 30, 40]
            .iter()
            .enumerate()
            .map(|(i, &n)| layer(n, i as u32))
            .collect();
        let warmer = background(2, 1 << 30);
        let mut tickets: Vec<Option<WarmTicket>> = layers
            .iter()
            .enumerate()
            .rev()
            .map(|(i, (r, _))| Some(warmer.start(format!("layer {i}"), r.clone())))
            .collect();
        tickets.reverse();
        wait_until("two fetches running", Duration::from_secs(5), || {
            warmer.running() == 2
        });
        wait_until(
            "the smaller running one fetches",
            Duration::from_secs(5),
            || reads(&layers[0].1) > 0 || reads(&layers[1].1) > 0,
        );
        // Two slots are taken; whichever layers hold them, at most two
        // were ever read and the third waits.
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(warmer.running(), 2);
        let touched = layers.iter().filter(|(_, src)| reads(src) > 0).count();
        assert!(touched <= 2, "{touched} layers read with two slots");
        // Unloading every layer stops every fetch at once and frees the
        // slots.
        let before: Vec<u64> = layers.iter().map(|(_, src)| reads(src)).collect();
        let stopped_at = Instant::now();
        tickets.iter_mut().for_each(|t| *t = None);
        wait_until("all slots given back", Duration::from_secs(5), || {
            warmer.running() == 0
        });
        assert!(stopped_at.elapsed() < Duration::from_secs(1));
        std::thread::sleep(Duration::from_millis(200));
        for ((_, src), b) in layers.iter().zip(before) {
            // The batch in flight and the one fetched ahead may end.
            assert!(reads(src) <= b + 2, "an unloaded layer is still fetched");
        }
        let (hit, all) = cached(&layers[2].0);
        assert!(hit < all, "stopped before the end ({hit} of {all})");
    }

    #[test]
    fn the_smallest_layer_is_fetched_first_and_the_others_wait_for_it() {
        let (big, big_src) = layer(60, 1);
        let (small, small_src) = layer(12, 2);
        let warmer = background(2, 1 << 30);
        let _big_ticket = warmer.start("big".into(), big.clone());
        wait_until("the big layer fetches", Duration::from_secs(5), || {
            reads(&big_src) > 2
        });
        let _small_ticket = warmer.start("small".into(), small.clone());
        wait_until("the small layer fetches", Duration::from_secs(5), || {
            reads(&small_src) > 0
        });
        let big_at_small_start = reads(&big_src);
        wait_until("small layer cached", Duration::from_secs(20), || {
            let (hit, all) = cached(&small);
            hit == all
        });
        // 13 members of the small layer, one per request: had both gone
        // on together, the big one would have made as many requests.
        let big_meanwhile = reads(&big_src) - big_at_small_start;
        assert!(
            big_meanwhile <= 2,
            "the big layer made {big_meanwhile} requests while the small one was fetched"
        );
        wait_until("big layer cached", Duration::from_secs(20), || {
            let (hit, all) = cached(&big);
            hit == all
        });
    }

    #[test]
    fn layers_started_in_one_burst_go_smallest_first_whatever_their_order() {
        let (big, big_src) = layer(30, 3);
        let (small, small_src) = layer(6, 4);
        let mut opts = background(2, 1 << 30).options().clone();
        opts.settle = Duration::from_millis(500);
        let warmer = Warmer::new(opts);
        let _big_ticket = warmer.start("big".into(), big.clone());
        std::thread::sleep(Duration::from_millis(50));
        let _small_ticket = warmer.start("small".into(), small.clone());
        wait_until("small layer cached", Duration::from_secs(20), || {
            let (hit, all) = cached(&small);
            hit == all
        });
        assert_eq!(
            reads(&big_src),
            0,
            "the big layer, started first, fetched before the small one was done"
        );
        assert!(reads(&small_src) > 0);
        wait_until("big layer cached", Duration::from_secs(20), || {
            let (hit, all) = cached(&big);
            hit == all
        });
    }

    #[test]
    fn no_background_batch_while_a_prefetch_runs() {
        let prioritized = BuildOptions::default().prioritized_files(vec!["f0".into(), "f1".into()]);
        let (landmarked, landmarked_src) = layer_with(8, 5, &prioritized);
        let (other, other_src) = layer(40, 6);
        let mut opts = background(2, 1 << 30).options().clone();
        opts.prefetch = true;
        let warmer = Warmer::new(opts);
        // The other layer's background fetch is under way when the
        // landmarked layer's prefetch starts (and stalls on the link).
        let _other_ticket = warmer.start("other".into(), other.clone());
        wait_until("the other layer fetches", Duration::from_secs(5), || {
            reads(&other_src) > 0
        });
        landmarked_src.hold.store(true, Ordering::SeqCst);
        let _ticket = warmer.start("landmarked".into(), landmarked.clone());
        wait_until("the prefetch reads", Duration::from_secs(5), || {
            reads(&landmarked_src) > 0
        });
        // The batch in flight and the one fetched ahead may end; then none.
        std::thread::sleep(Duration::from_millis(200));
        let paused_at = reads(&other_src);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            reads(&other_src),
            paused_at,
            "background batches during the prefetch"
        );
        let (hit, all) = cached(&other);
        assert!(
            hit < all,
            "the other layer was cached before the prefetch began"
        );
        landmarked_src.hold.store(false, Ordering::SeqCst);
        wait_until("both layers cached", Duration::from_secs(20), || {
            cached(&other).0 == all && cached(&landmarked).0 == cached(&landmarked).1
        });
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
