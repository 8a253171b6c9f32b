//! Filling the chunk cache ahead of reads: prefetch (the prioritized files
//! before `.prefetch.landmark`, or a chosen set of files) and background
//! fetch of the whole blob. Members are fetched in batches, one positional
//! multi-range read per batch, then decompressed, verified and cached.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rayon::prelude::*;

use super::{Chunk, NodeId, Reader, ROOT};
use crate::build::{NO_PREFETCH_LANDMARK, PREFETCH_LANDMARK};
use crate::error::{Error, Result};

/// Default compressed bytes per batch (one request).
pub const DEFAULT_BATCH_BYTES: u64 = 8 << 20;
/// Compressed bytes per landmark-prefetch request: the prioritized files
/// are in the order a workload first opened them, so small batches let its
/// first files be served while the rest is still on the wire (one 8 MiB
/// batch made a container wait for all of it, then for its
/// decompression); ~170 ms of a 100 Mbit/s link, so a 20 ms round trip
/// per batch costs little.
const PREFETCH_BATCH_BYTES: u64 = 2 << 20;
/// Most gzip members per batch (bounds the Range header).
const MAX_MEMBERS_PER_BATCH: usize = 512;
/// Most ranges per [`Reader::fetch_missing_spans`] request (a registry
/// client sends up to 32 per multi-range request).
const MAX_RANGES_PER_SPAN_BATCH: usize = 16;
/// Largest first request of [`Reader::fetch_missing_spans`].
const FIRST_SPAN_BATCH: u64 = 256 << 10;

/// What a warm-up did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WarmSummary {
    /// Chunks verified and put in the cache.
    pub chunks_cached: u64,
    /// Decompressed bytes of those chunks.
    pub bytes_cached: u64,
    /// Compressed bytes read from the source.
    pub compressed_bytes: u64,
    /// False when `proceed` asked to stop early.
    pub complete: bool,
}

/// What the layer asks for at open (spec: landmark files at the root).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrefetchHint {
    /// `.no.prefetch.landmark`: prefetch nothing.
    None,
    /// `.prefetch.landmark`: everything before this blob offset.
    Before(u64),
    /// No landmark.
    Unspecified,
}

impl Reader {
    /// The prefetch the layer's landmarks ask for.
    pub fn prefetch_hint(&self) -> PrefetchHint {
        let root = self.entry(ROOT);
        if root.child(NO_PREFETCH_LANDMARK).is_some() {
            return PrefetchHint::None;
        }
        match root.child(PREFETCH_LANDMARK) {
            // A landmark has one byte of data (spec §4); one without any
            // marks no prefetch.
            Some(id) => {
                PrefetchHint::Before(self.entry(id).chunks().first().map_or(0, |c| c.offset))
            }
            None => PrefetchHint::Unspecified,
        }
    }

    /// Prefetches what the landmarks ask for (nothing without a landmark).
    pub fn prefetch_landmarked(&self) -> Result<WarmSummary> {
        match self.prefetch_hint() {
            PrefetchHint::Before(end) => {
                self.cache_chunks(|_, c| c.next_offset <= end, PREFETCH_BATCH_BYTES, &|| true)
            }
            PrefetchHint::None | PrefetchHint::Unspecified => Ok(WarmSummary {
                complete: true,
                ..Default::default()
            }),
        }
    }

    /// Prefetches every chunk of the given files (a working set).
    pub fn prefetch_files(&self, ids: &[NodeId]) -> Result<WarmSummary> {
        let wanted: std::collections::HashSet<NodeId> =
            ids.iter().map(|&id| self.resolve(id)).collect();
        self.cache_chunks(|id, _| wanted.contains(&id), DEFAULT_BATCH_BYTES, &|| true)
    }

    /// Fetches, verifies and caches every chunk selected by `want` that is
    /// not cached yet, in blob order, `batch_bytes` of compressed data per
    /// read. The next batch is fetched while the current one is
    /// decompressed, so the link does not idle while the CPU works.
    /// `proceed` runs before each batch's fetch: background work waits
    /// there while it should yield, and returns false to stop.
    pub fn cache_chunks(
        &self,
        want: impl Fn(NodeId, &Chunk) -> bool,
        batch_bytes: u64,
        proceed: &(dyn Fn() -> bool + Sync),
    ) -> Result<WarmSummary> {
        // Zero chunks are never fetched: reads produce them.
        let work = self.chunks_in_blob_order(|id, c| {
            !c.zeros && want(id, c) && !c.digest.as_ref().is_some_and(|d| self.cache.contains(d))
        });
        // A chunk that shares a member with another is fetched with it.
        let members = super::members_of(&work);
        let mut batches: Vec<Vec<&[(NodeId, &Chunk)]>> = Vec::new();
        let mut i = 0;
        while i < members.len() {
            let end = batch_end(i, members.len(), batch_bytes, |m| extent(members[m][0].1));
            // Members too large for one read are left to on-demand reads,
            // which stream them.
            let batch: Vec<&[(NodeId, &Chunk)]> = members[i..end]
                .iter()
                .copied()
                .filter(|m| extent(m[0].1) <= self.max_member_read())
                .collect();
            i = end;
            if !batch.is_empty() {
                batches.push(batch);
            }
        }
        let fetch = |batch: &[&[(NodeId, &Chunk)]]| -> Result<Vec<Vec<u8>>> {
            let ranges: Vec<Range<u64>> = batch
                .iter()
                .map(|m| m[0].1.offset..m[0].1.next_offset)
                .collect();
            self.src
                .read_ranges(&ranges)
                .map_err(|e| Error::io(format!("fetching {} gzip members", ranges.len()), e))
        };
        let mut summary = WarmSummary::default();
        let Some(first) = batches.first() else {
            summary.complete = true;
            return Ok(summary);
        };
        if !proceed() {
            return Ok(summary);
        }
        let mut data = fetch(first)?;
        for (k, batch) in batches.iter().enumerate() {
            let next = batches.get(k + 1);
            let (done, fetched_next) = std::thread::scope(|s| {
                let ahead = next.map(|b| s.spawn(|| proceed().then(|| fetch(b))));
                let done = self.cache_batch(batch, std::mem::take(&mut data));
                let fetched = ahead.map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Some(Err(Error::Io {
                            context: "fetching the next batch".into(),
                            source: std::io::Error::other("the fetching thread panicked"),
                        }))
                    })
                });
                (done, fetched)
            });
            let fetched = batch.iter().map(|m| extent(m[0].1)).sum::<u64>();
            summary.compressed_bytes += fetched;
            crate::metrics::global().warm_bytes(fetched);
            for (chunks, bytes) in done? {
                summary.chunks_cached += chunks;
                summary.bytes_cached += bytes;
            }
            match fetched_next {
                None => break,
                Some(None) => return Ok(summary),
                Some(Some(next_data)) => data = next_data?,
            }
        }
        summary.complete = true;
        Ok(summary)
    }

    /// Decompresses, verifies and caches the fetched members of one batch,
    /// in parallel.
    fn cache_batch(
        &self,
        batch: &[&[(NodeId, &Chunk)]],
        data: Vec<Vec<u8>>,
    ) -> Result<Vec<(u64, u64)>> {
        batch
            .par_iter()
            .zip(data.into_par_iter())
            .map(|(member, compressed)| {
                self.cache_member(member, compressed)
                    .inspect_err(|e| self.forget_if_bad(e, member[0].1))
            })
            .collect()
    }

    /// For a source that keeps what it fetches (a remote layer's spans):
    /// fetches every byte of the blob it does not hold yet, in blob order
    /// with the files a start rarely reads last (`cold`), up to
    /// `batch_bytes` per request, without decompressing anything.
    /// Reads decompress and verify chunks from the local bytes when they
    /// need them, so the background neither spends the CPU a container
    /// start needs nor writes the layer twice (compressed and as chunks).
    /// The whole blob is then local, so raw blob reads need no network
    /// either. `None`: the source keeps nothing (use [`Reader::cache_chunks`]).
    pub fn fetch_missing_spans(
        &self,
        batch_bytes: u64,
        proceed: &(dyn Fn() -> bool + Sync),
    ) -> Result<Option<WarmSummary>> {
        let size = self.src.size();
        let mut summary = WarmSummary::default();
        // Requests start small and double up to `batch_bytes`: a container
        // starting right after the layer was opened reads first what sits
        // at the front of the blob, and its misses share the link with
        // fewer background bytes at first.
        let mut step = (batch_bytes / 8).clamp(1, FIRST_SPAN_BATCH);
        loop {
            // Asked again each round: on-demand reads fill gaps meanwhile.
            let Some(missing) = self.src.missing(0..size) else {
                return Ok(None);
            };
            let hot = super::cold::without(&missing, self.cold_ranges());
            let next = if hot.is_empty() { &missing } else { &hot };
            let batch = first_bytes(next, step, MAX_RANGES_PER_SPAN_BATCH);
            step = step.saturating_mul(2).min(batch_bytes.max(1));
            if batch.is_empty() {
                summary.complete = true;
                return Ok(Some(summary));
            }
            if !proceed() {
                return Ok(Some(summary));
            }
            self.src.read_ranges(&batch).map_err(|e| {
                Error::io(format!("fetching {} ranges of the blob", batch.len()), e)
            })?;
            let fetched: u64 = batch.iter().map(|r| r.end - r.start).sum();
            summary.compressed_bytes += fetched;
            crate::metrics::global().warm_bytes(fetched);
        }
    }

    /// Decompresses one member, verifies its chunks and caches them.
    fn cache_member(&self, member: &[(NodeId, &Chunk)], compressed: Vec<u8>) -> Result<(u64, u64)> {
        let mut gz = self.decompressor(std::io::Cursor::new(compressed), member[0].1.offset)?;
        let mut pos = 0;
        let mut bytes = 0;
        for &(id, chunk) in member {
            self.check_chunk_limits(id, chunk)?;
            // Members are decoded in parallel: the chunk buffers, not the
            // thread count, are what the budget bounds.
            let _permit = self.buffers.acquire(chunk.chunk_size);
            // The index guarantees chunks of one member do not overlap.
            let data = self.read_verified(&mut gz, chunk.inner_offset - pos, id, chunk)?;
            pos = chunk.inner_offset + chunk.chunk_size;
            bytes += data.len() as u64;
            self.cache
                .put_cold(self.chunk_digest(id, chunk)?, Arc::from(data));
        }
        Ok((member.len() as u64, bytes))
    }
}

/// The first `bytes` of `ranges` (in order, the last one cut), in at most
/// `max_ranges` ranges.
fn first_bytes(ranges: &[Range<u64>], bytes: u64, max_ranges: usize) -> Vec<Range<u64>> {
    let mut out = Vec::new();
    let mut left = bytes;
    for r in ranges {
        if left == 0 || out.len() == max_ranges {
            break;
        }
        let end = r.end.min(r.start.saturating_add(left));
        out.push(r.start..end);
        left -= end - r.start;
    }
    out
}

/// Where the batch of items starting at `start` ends: it takes items until
/// they add up to `batch_bytes` (at least one, at most
/// `MAX_MEMBERS_PER_BATCH`).
fn batch_end(start: usize, len: usize, batch_bytes: u64, size: impl Fn(usize) -> u64) -> usize {
    let mut end = start;
    let mut bytes = 0;
    while end < len && end - start < MAX_MEMBERS_PER_BATCH && (end == start || bytes < batch_bytes)
    {
        bytes += size(end);
        end += 1;
    }
    end
}

fn extent(c: &Chunk) -> u64 {
    c.next_offset.saturating_sub(c.offset)
}

/// Fetches the whole blob on a thread of its own (into the source's spans
/// when it keeps them, else into the chunk cache), holding
/// back as its [`BackgroundOptions`] say; stopped (and joined) when
/// dropped.
pub struct BackgroundFetch {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Result<WarmSummary>>>,
}

/// The default quiet period of [`BackgroundFetch::start`]: until no reader
/// of the process (any layer) has waited for data for this long, on-demand
/// reads own the link and the CPU.
pub const BACKGROUND_SILENCE: Duration = Duration::from_secs(2);

/// Attempts before background fetch gives up (reads still fetch on demand).
const BACKGROUND_ATTEMPTS: u32 = 5;

/// A check made before each background batch: false holds the fetch back.
pub type BackgroundGate = Arc<dyn Fn() -> bool + Send + Sync>;

/// How a [`BackgroundFetch`] shares the link with on-demand reads.
#[derive(Clone)]
pub struct BackgroundOptions {
    /// Compressed bytes per request.
    pub batch_bytes: u64,
    /// Before each batch, wait until no reader of the process has waited
    /// for data for this long (zero: start at once).
    pub silence: Duration,
    /// Before each batch, wait while reads of this layer wait for data.
    pub yield_to_reads: bool,
    /// Before each batch, wait while this says false (e.g. while a smaller
    /// layer is being fetched).
    pub gate: Option<BackgroundGate>,
}

impl BackgroundOptions {
    /// `batch_bytes` per request after [`BACKGROUND_SILENCE`] of quiet,
    /// yielding to reads of the layer.
    pub fn new(batch_bytes: u64) -> BackgroundOptions {
        BackgroundOptions {
            batch_bytes,
            silence: BACKGROUND_SILENCE,
            yield_to_reads: true,
            gate: None,
        }
    }
}

impl BackgroundFetch {
    /// Starts fetching every chunk not cached yet, `batch_bytes` of compressed data per request, on a thread of its own.
    pub fn start(reader: Arc<Reader>, batch_bytes: u64) -> BackgroundFetch {
        Self::start_with(reader, BackgroundOptions::new(batch_bytes))
    }

    /// Like [`BackgroundFetch::start`], with its own quiet period before
    /// each batch (zero: only reads in flight of this layer hold it back).
    pub fn start_after_silence(
        reader: Arc<Reader>,
        batch_bytes: u64,
        silence: Duration,
    ) -> BackgroundFetch {
        Self::start_with(
            reader,
            BackgroundOptions {
                silence,
                ..BackgroundOptions::new(batch_bytes)
            },
        )
    }

    /// Starts fetching every chunk not cached yet, as `opts` say.
    pub fn start_with(reader: Arc<Reader>, opts: BackgroundOptions) -> BackgroundFetch {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("estargz-bg-fetch".into())
            .spawn(move || {
                crate::metrics::global().background_started();
                // A container start (runc, the runtime, the container's own
                // process) needs the CPU more than bytes nobody asked for.
                lower_cpu_priority();
                let result = background_run(&reader, &opts, &flag);
                crate::metrics::global()
                    .background_ended(result.as_ref().is_ok_and(|s| s.complete));
                result
            })
            .expect("spawning the background fetch thread");
        BackgroundFetch {
            stop,
            handle: Some(handle),
        }
    }

    /// True once the fetch ended (done, stopped or failed).
    pub fn is_finished(&self) -> bool {
        self.handle.as_ref().is_none_or(|h| h.is_finished())
    }

    /// Waits for the whole blob to be cached.
    pub fn wait(mut self) -> Result<WarmSummary> {
        self.join()
    }

    fn join(&mut self) -> Result<WarmSummary> {
        match self.handle.take() {
            Some(h) => h.join().unwrap_or_else(|_| {
                Err(Error::Io {
                    context: "background fetch".into(),
                    source: std::io::Error::other("the background fetch thread panicked"),
                })
            }),
            None => Ok(WarmSummary::default()),
        }
    }
}

impl Drop for BackgroundFetch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.join();
    }
}

/// Gives the calling thread (only: Linux keeps the nice value per thread,
/// and threads it starts inherit it) the lowest CPU priority. Best effort:
/// a failure leaves the thread as it was.
fn lower_cpu_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain system calls on the calling thread's own id.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 19);
    }
}

/// The background fetch thread's work: the whole layer cached, retried
/// a few times after failures, until `flag` says stop.
fn background_run(
    reader: &Arc<Reader>,
    opts: &BackgroundOptions,
    flag: &AtomicBool,
) -> Result<WarmSummary> {
    let proceed = || loop {
        if flag.load(Ordering::Relaxed) {
            return false;
        }
        let quiet = super::quiet_for().is_none_or(|q| q >= opts.silence);
        let reads_wait = opts.yield_to_reads && reader.foreground_busy();
        let open = opts.gate.as_ref().is_none_or(|g| g());
        if quiet && !reads_wait && open {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let batch_bytes = opts.batch_bytes;
    let mut total = WarmSummary::default();
    let mut attempt = 0;
    loop {
        let fetched = match reader.fetch_missing_spans(batch_bytes, &proceed) {
            Ok(Some(s)) => Ok(s),
            Ok(None) => reader.cache_chunks(|_, _| true, batch_bytes, &proceed),
            Err(e) => Err(e),
        };
        match fetched {
            Ok(s) => {
                total.chunks_cached += s.chunks_cached;
                total.bytes_cached += s.bytes_cached;
                total.compressed_bytes += s.compressed_bytes;
                total.complete = s.complete;
                return Ok(total);
            }
            // A failed batch is retried later, not remembered.
            Err(e) if attempt + 1 >= BACKGROUND_ATTEMPTS => return Err(e),
            Err(_) => {
                attempt += 1;
                let wait = Duration::from_millis(200 << attempt);
                let until = std::time::Instant::now() + wait;
                while std::time::Instant::now() < until {
                    if flag.load(Ordering::Relaxed) {
                        return Ok(total);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::{build, BuildInput, BuildOptions};
    use crate::source::ReadAt;

    /// A tar of `count` files of `size` bytes each (distinct contents).
    fn tar_of_files(count: usize, size: usize) -> Vec<u8> {
        let mut tar = Vec::new();
        for i in 0..count {
            tar.extend_from_slice(&crate::tarwrite::simple_file_header(
                &format!("f{i}"),
                size as u64,
            ));
            let mut data = vec![0u8; size.div_ceil(512) * 512];
            data[0] = i as u8 + 1;
            tar.extend_from_slice(&data);
        }
        tar.extend_from_slice(&[0u8; 1024]);
        tar
    }

    /// A blob in memory that counts the batched reads it answers.
    struct Counting {
        blob: Vec<u8>,
        batches: std::sync::atomic::AtomicU64,
    }

    impl crate::source::ReadAt for Counting {
        fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
            self.blob.read_at(buf, offset)
        }
        fn size(&self) -> u64 {
            self.blob.len() as u64
        }
        fn read_ranges(&self, ranges: &[Range<u64>]) -> std::io::Result<Vec<Vec<u8>>> {
            self.batches.fetch_add(1, Ordering::SeqCst);
            ranges
                .iter()
                .map(|r| Ok(self.blob[r.start as usize..r.end as usize].to_vec()))
                .collect()
        }
    }

    /// A reader over `files` files of 4 KiB (one gzip member each), with
    /// its source to count batches.
    fn counted_reader(files: usize) -> (Arc<Reader>, Arc<Counting>) {
        let mut blob = Vec::new();
        let input = BuildInput::Reader(Box::new(std::io::Cursor::new(tar_of_files(files, 4096))));
        build(input, &mut blob, &BuildOptions::default()).unwrap();
        let src = Arc::new(Counting {
            blob,
            batches: Default::default(),
        });
        let opts = crate::reader::OpenOptions {
            cache: Some(Arc::new(crate::cache::ChunkCache::in_memory(64 << 20))),
            ..Default::default()
        };
        let reader = Arc::new(Reader::open(src.clone(), &opts).unwrap());
        src.batches.store(0, Ordering::SeqCst);
        (reader, src)
    }

    #[test]
    fn each_batch_is_fetched_only_after_proceed_and_the_run_stops_when_it_says_no() {
        let (reader, src) = counted_reader(10);
        // One member per batch: 11 batches (10 files and the landmark).
        let asked = std::sync::atomic::AtomicU64::new(0);
        let proceed = || asked.fetch_add(1, Ordering::SeqCst) < 4;
        let summary = reader.cache_chunks(|_, _| true, 1, &proceed).unwrap();
        assert!(!summary.complete);
        assert_eq!(src.batches.load(Ordering::SeqCst), 4, "one batch per yes");
        assert_eq!(summary.chunks_cached, 4, "every fetched batch is cached");
        // Going on fetches only the rest, and completes.
        let summary = reader.cache_chunks(|_, _| true, 1, &|| true).unwrap();
        assert!(summary.complete);
        assert_eq!(summary.chunks_cached, 7);
        assert_eq!(src.batches.load(Ordering::SeqCst), 11);
        let again = reader.cache_chunks(|_, _| true, 1, &|| true).unwrap();
        assert_eq!((again.chunks_cached, again.complete), (0, true));
    }

    #[test]
    fn first_bytes_takes_ranges_in_order_and_cuts_the_last() {
        let r = [0..10, 20..30, 40..50];
        assert_eq!(first_bytes(&r, 15, 8), vec![0..10, 20..25]);
        assert_eq!(first_bytes(&r, 100, 2), vec![0..10, 20..30]);
        assert_eq!(first_bytes(&r, 0, 8), Vec::<Range<u64>>::new());
        assert_eq!(first_bytes(&[], 5, 8), Vec::<Range<u64>>::new());
    }

    #[test]
    fn over_spans_the_background_fetch_brings_only_missing_bytes_in_growing_requests() {
        let mut blob = Vec::new();
        let input = BuildInput::Reader(Box::new(std::io::Cursor::new(tar_of_files(64, 64 << 10))));
        let opts = BuildOptions {
            compression_level: Some(0),
            ..Default::default()
        };
        build(input, &mut blob, &opts).unwrap();
        let size = blob.len() as u64;
        let src = Arc::new(Counting {
            blob,
            batches: Default::default(),
        });
        let spans = Arc::new(
            crate::span_cache::SpanCache::new(src.clone(), None, Default::default()).unwrap(),
        );
        let reader = Arc::new(Reader::open(spans.clone(), &Default::default()).unwrap());
        let opened = src.batches.load(Ordering::SeqCst);
        let held_before = size
            - spans
                .missing(0..size)
                .unwrap()
                .iter()
                .map(|r| r.end - r.start)
                .sum::<u64>();
        let summary = BackgroundFetch::start_with(
            reader.clone(),
            BackgroundOptions {
                silence: Duration::ZERO,
                ..BackgroundOptions::new(1 << 20)
            },
        )
        .wait()
        .unwrap();
        assert!(summary.complete);
        assert_eq!(
            spans.missing(0..size),
            Some(vec![]),
            "the whole blob is local"
        );
        assert_eq!(
            summary.compressed_bytes,
            size - held_before,
            "each byte once"
        );
        assert_eq!(
            summary.chunks_cached, 0,
            "nothing decompressed in the background"
        );
        // 128 KiB, 256 KiB, 512 KiB, then 1 MiB requests for ~4 MiB.
        let requests = src.batches.load(Ordering::SeqCst) - opened;
        assert!(
            (5..=8).contains(&requests),
            "{requests} requests for {size} bytes"
        );
        // Reads are served (and verified) from the local bytes.
        let before = src.batches.load(Ordering::SeqCst);
        let mut buf = vec![0; 16];
        let id = reader.lookup("f63").unwrap();
        reader.read_at(id, 0, &mut buf).unwrap();
        assert_eq!(buf[0], 64);
        assert_eq!(
            src.batches.load(Ordering::SeqCst),
            before,
            "no fetch after the background"
        );
    }

    #[test]
    fn a_closed_gate_holds_the_background_fetch_until_it_opens() {
        let (reader, src) = counted_reader(6);
        let open = Arc::new(AtomicBool::new(false));
        let gate_open = open.clone();
        let bg = BackgroundFetch::start_with(
            reader.clone(),
            BackgroundOptions {
                silence: Duration::ZERO,
                gate: Some(Arc::new(move || gate_open.load(Ordering::SeqCst))),
                ..BackgroundOptions::new(1)
            },
        );
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            src.batches.load(Ordering::SeqCst),
            0,
            "fetched behind a closed gate"
        );
        assert!(!bg.is_finished());
        open.store(true, Ordering::SeqCst);
        let summary = bg.wait().unwrap();
        assert!(summary.complete);
        assert_eq!(summary.chunks_cached, 7, "6 files and the landmark");
    }

    #[test]
    fn parallel_caching_holds_chunk_buffers_within_the_budget() {
        const CHUNK: u64 = 1 << 20;
        let mut blob = Vec::new();
        let opts = BuildOptions {
            chunk_size: CHUNK,
            ..Default::default()
        };
        let input = BuildInput::Reader(Box::new(std::io::Cursor::new(tar_of_files(8, 1 << 20))));
        build(input, &mut blob, &opts).unwrap();
        let mut reader = Reader::open(Arc::new(blob), &Default::default()).unwrap();
        reader.buffers = super::super::budget::Budget::new(2 * CHUNK);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(8)
            .build()
            .unwrap();
        let summary = pool
            .install(|| reader.cache_chunks(|_, _| true, u64::MAX, &|| true))
            .unwrap();
        assert_eq!(summary.chunks_cached, 9, "8 files and the landmark");
        assert!(summary.complete);
        let peak = reader.buffers.peak();
        assert!(
            (CHUNK..=2 * CHUNK).contains(&peak),
            "chunk buffers held at once: {peak} bytes (budget {} bytes)",
            2 * CHUNK
        );
    }
}
