//! The compressed bytes of a remote blob, kept as they arrive: a
//! [`ReadAt`] over a slow source (a registry blob) that
//!
//! * keeps every fetched range in a sparse, unlinked file, so the bytes are
//!   fetched once whoever needs them again (chunk reads after a cache
//!   eviction, `blob` reads by `podman save`, background fetch);
//! * reads ahead on a miss: the window grows while misses keep moving
//!   forward (files of one directory sit next to each other in a layer) and
//!   shrinks on random access, so a round trip brings many small members;
//! * merges concurrent misses: while `max_fetchers` requests are in flight,
//!   further misses queue into one batch that the next free fetcher sends
//!   as one (multi-range) request, and a read of bytes already on their way
//!   waits for them instead of asking again;
//! * streams: each piece of a response is usable as soon as it is written,
//!   so a read of the front of a large request does not wait for its end.
//!
//! Bytes here are not verified (the blob digest covers the whole blob
//! only); readers verify chunks after decompressing, and a range that fails
//! verification is dropped with [`ReadAt::invalidate`] so the next read
//! fetches it again.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};

use crate::error::Error;
use crate::source::ReadAt;

/// Read-ahead and concurrency of a [`SpanCache`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SpanCacheOptions {
    /// Window of the first miss, and where it returns to after random access.
    pub initial_read_ahead: u64,
    /// Smallest window (random access).
    pub min_read_ahead: u64,
    /// Largest window (sequential access).
    pub max_read_ahead: u64,
    /// Requests in flight at once; further misses are merged into one batch.
    pub max_fetchers: usize,
}

impl Default for SpanCacheOptions {
    fn default() -> Self {
        // 256 KiB is ~20 ms at 100 Mbit/s: on a 20 ms link a miss costs at
        // most twice its round trip, and brings ~100 small files with it.
        SpanCacheOptions {
            initial_read_ahead: 256 << 10,
            min_read_ahead: 64 << 10,
            max_read_ahead: 8 << 20,
            max_fetchers: 4,
        }
    }
}

crate::options::option_setters!(SpanCacheOptions {
    initial_read_ahead: u64,
    min_read_ahead: u64,
    max_read_ahead: u64,
    max_fetchers: usize,
});

/// What a [`SpanCache`] did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpanStats {
    /// Bytes held locally.
    pub cached_bytes: u64,
    /// Calls to the source (each one request, or one multi-range request).
    pub fetches: u64,
    /// Bytes asked of the source.
    pub fetched_bytes: u64,
}

/// A sorted set of disjoint, non-adjacent byte ranges.
#[derive(Debug, Default)]
struct RangeSet(BTreeMap<u64, u64>);

impl RangeSet {
    fn insert(&mut self, r: Range<u64>) {
        if r.is_empty() {
            return;
        }
        let (mut start, mut end) = (r.start, r.end);
        // Absorb every range that touches [start, end].
        let touching: Vec<u64> = self
            .0
            .range(..=end)
            .rev()
            .take_while(|&(_, &e)| e >= start)
            .map(|(&s, _)| s)
            .collect();
        for s in touching {
            let e = self.0.remove(&s).expect("key taken from the map");
            start = start.min(s);
            end = end.max(e);
        }
        self.0.insert(start, end);
    }

    fn remove(&mut self, r: Range<u64>) {
        let overlapping: Vec<(u64, u64)> = self
            .0
            .range(..r.end)
            .rev()
            .take_while(|&(_, &e)| e > r.start)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in overlapping {
            self.0.remove(&s);
            if s < r.start {
                self.0.insert(s, r.start);
            }
            if e > r.end {
                self.0.insert(r.end, e);
            }
        }
    }

    /// The parts of `r` not in the set, in order.
    fn missing(&self, r: &Range<u64>) -> Vec<Range<u64>> {
        let mut out = Vec::new();
        let mut pos = r.start;
        // The range starting at or before r.start may cover its beginning.
        if let Some((_, &e)) = self.0.range(..=r.start).next_back() {
            pos = pos.max(e);
        }
        for (&s, &e) in self.0.range(r.start..r.end) {
            if s > pos {
                out.push(pos..s);
            }
            pos = pos.max(e);
        }
        if pos < r.end {
            out.push(pos..r.end);
        }
        out
    }

    fn total(&self) -> u64 {
        self.0.iter().map(|(s, e)| e - s).sum()
    }
}

/// Ranges fetched together by one fetcher; readers of any of them wait on it.
struct Batch {
    ranges: Mutex<Vec<Range<u64>>>,
    /// Set once the fetch is over: `Err` carries the failure to every waiter.
    outcome: OnceLock<Result<(), Arc<io::Error>>>,
}

impl Batch {
    fn new() -> Arc<Batch> {
        Arc::new(Batch {
            ranges: Mutex::new(Vec::new()),
            outcome: OnceLock::new(),
        })
    }
    fn ranges(&self) -> MutexGuard<'_, Vec<Range<u64>>> {
        self.ranges.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn overlaps(&self, r: &Range<u64>) -> bool {
        self.ranges()
            .iter()
            .any(|b| b.start < r.end && r.start < b.end)
    }
}

/// The adaptive read-ahead window.
#[derive(Debug)]
struct ReadAhead {
    window: u64,
    /// End of the last miss's fetch: a miss near it continues a forward scan.
    last_end: Option<u64>,
}

#[derive(Default)]
struct State {
    present: RangeSet,
    /// Batches being fetched.
    inflight: Vec<Arc<Batch>>,
    /// The batch misses are queued into while every fetcher is busy.
    queued: Option<Arc<Batch>>,
    fetchers: usize,
    read_ahead: Option<ReadAhead>,
}

/// A slow blob with its fetched bytes kept locally; see the module docs.
pub struct SpanCache {
    inner: Arc<dyn ReadAt>,
    size: u64,
    /// Sparse and unlinked: nothing is left behind, even after a crash.
    file: File,
    opts: SpanCacheOptions,
    state: Mutex<State>,
    changed: Condvar,
    fetches: AtomicU64,
    fetched_bytes: AtomicU64,
}

impl SpanCache {
    /// Keeps the bytes of `inner` in an unlinked file in `dir` (default: the
    /// system's temporary directory).
    pub fn new(
        inner: Arc<dyn ReadAt>,
        dir: Option<&Path>,
        opts: SpanCacheOptions,
    ) -> io::Result<SpanCache> {
        let file = match dir {
            Some(d) => tempfile::tempfile_in(d)?,
            None => tempfile::tempfile()?,
        };
        let size = inner.size();
        file.set_len(size)?;
        Ok(SpanCache {
            inner,
            size,
            file,
            opts,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            fetches: AtomicU64::new(0),
            fetched_bytes: AtomicU64::new(0),
        })
    }

    /// Counters so far.
    pub fn stats(&self) -> SpanStats {
        SpanStats {
            cached_bytes: self.lock().present.total(),
            fetches: self.fetches.load(Ordering::Relaxed),
            fetched_bytes: self.fetched_bytes.load(Ordering::Relaxed),
        }
    }

    /// The current read-ahead window (for tests and logs).
    pub fn read_ahead_window(&self) -> u64 {
        self.lock()
            .read_ahead
            .as_ref()
            .map_or(self.opts.initial_read_ahead, |r| r.window)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `ranges` present locally, fetching what is missing (extended
    /// by the read-ahead window when `read_ahead`).
    fn ensure(&self, ranges: &[Range<u64>], read_ahead: bool) -> io::Result<()> {
        let mut waiting_on: Vec<Arc<Batch>> = Vec::new();
        let mut planned = false;
        let mut st = self.lock();
        loop {
            let missing: Vec<Range<u64>> =
                ranges.iter().flat_map(|r| st.present.missing(r)).collect();
            if missing.is_empty() {
                return Ok(());
            }
            // A batch we waited on failed and our bytes are still missing:
            // its error is ours (no second attempt behind its retries).
            for b in &waiting_on {
                if let Some(Err(e)) = b.outcome.get() {
                    if missing.iter().any(|r| b.overlaps(r)) {
                        return Err(echo(e));
                    }
                }
            }
            if !planned {
                planned = true;
                let uncovered: Vec<Range<u64>> = missing
                    .iter()
                    .flat_map(|r| uncovered_by(r, &st.inflight, st.queued.as_ref()))
                    .collect();
                if !uncovered.is_empty() {
                    let wanted = if read_ahead {
                        self.extend(&mut st, &uncovered)
                    } else {
                        uncovered
                    };
                    let batch = st.queued.get_or_insert_with(Batch::new).clone();
                    batch.ranges().extend(wanted);
                }
            }
            for b in st.inflight.iter().chain(st.queued.iter()) {
                if !waiting_on.iter().any(|w| Arc::ptr_eq(w, b))
                    && missing.iter().any(|r| b.overlaps(r))
                {
                    waiting_on.push(b.clone());
                }
            }
            if st.fetchers < self.opts.max_fetchers.max(1) {
                if let Some(batch) = st.queued.take() {
                    st.fetchers += 1;
                    st.inflight.push(batch.clone());
                    drop(st);
                    let outcome = self.fetch(&batch);
                    st = self.lock();
                    st.fetchers -= 1;
                    st.inflight.retain(|b| !Arc::ptr_eq(b, &batch));
                    if outcome.is_ok() {
                        for r in batch.ranges().iter() {
                            st.present.insert(r.clone());
                        }
                    }
                    let _ = batch.outcome.set(outcome.map_err(Arc::new));
                    self.changed.notify_all();
                    continue;
                }
            }
            if waiting_on.iter().all(|b| b.outcome.get().is_some()) && st.queued.is_none() {
                // Every batch we counted on is over and ours are missing
                // again (invalidated meanwhile): plan anew.
                planned = false;
                waiting_on.clear();
                continue;
            }
            st = self.changed.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Extends the first missing range by the read-ahead window and adapts
    /// the window: it doubles while misses continue forward from the last
    /// one, and halves on a jump elsewhere.
    fn extend(&self, st: &mut State, uncovered: &[Range<u64>]) -> Vec<Range<u64>> {
        let o = &self.opts;
        let start = uncovered[0].start;
        let ra = st.read_ahead.get_or_insert(ReadAhead {
            window: o.initial_read_ahead,
            last_end: None,
        });
        let end = uncovered
            .last()
            .map_or(start, |r| r.end)
            .max(start.saturating_add(ra.window))
            .min(self.size);
        let mut from = start;
        // Reads that reach the end of the blob (footer, TOC) say nothing
        // about how files are read.
        if end < self.size {
            // The first file miss says nothing about direction yet, and
            // the first files a container reads sit together but not in
            // blob order (runc reads `/etc/passwd`, then `/etc/group`,
            // which comes before it): its window reaches back a little.
            match ra.last_end {
                None => from = start.saturating_sub(o.min_read_ahead),
                Some(last) => {
                    if start >= last.saturating_sub(ra.window)
                        && start <= last.saturating_add(ra.window)
                    {
                        ra.window = (ra.window * 2).min(o.max_read_ahead);
                    } else {
                        ra.window = (ra.window / 2).max(o.min_read_ahead);
                    }
                }
            }
            ra.last_end = Some(end);
        }
        // Only what is neither here nor on its way.
        st.present
            .missing(&(from..end))
            .iter()
            .flat_map(|r| uncovered_by(r, &st.inflight, st.queued.as_ref()))
            .collect()
    }

    /// Fetches a batch into the file, each piece present as soon as it is
    /// written: a read of the front of a large batch (a grown read-ahead
    /// window, a background request) goes on before the rest is in.
    fn fetch(&self, batch: &Batch) -> io::Result<()> {
        let mut ranges = batch.ranges().clone();
        ranges.sort_by_key(|r| r.start);
        self.fetches.fetch_add(1, Ordering::Relaxed);
        self.fetched_bytes.fetch_add(
            ranges.iter().map(|r| r.end - r.start).sum::<u64>(),
            Ordering::Relaxed,
        );
        self.inner.stream_ranges(&ranges, &mut |offset, bytes| {
            let end = offset
                .checked_add(bytes.len() as u64)
                .filter(|&end| end <= self.size)
                .ok_or_else(|| {
                    io::Error::from(Error::Network(format!(
                        "{} bytes at offset {offset} reach past the blob's {} bytes",
                        bytes.len(),
                        self.size
                    )))
                })?;
            self.file.write_all_at(bytes, offset)?;
            self.lock().present.insert(offset..end);
            self.changed.notify_all();
            Ok(())
        })
    }
}

/// The parts of `r` that no in-flight or queued batch is fetching.
fn uncovered_by(
    r: &Range<u64>,
    inflight: &[Arc<Batch>],
    queued: Option<&Arc<Batch>>,
) -> Vec<Range<u64>> {
    let mut covered = RangeSet::default();
    for b in inflight.iter().chain(queued) {
        for x in b.ranges().iter() {
            covered.insert(x.clone());
        }
    }
    covered.missing(r)
}

/// A copy of a fetch failure for another waiter, keeping its kind
/// (network, timeout, ...), so it maps to the same error code and errno.
fn echo(e: &io::Error) -> io::Error {
    match e.get_ref().and_then(|i| i.downcast_ref::<Error>()) {
        Some(inner) => io::Error::from(inner.clone()),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}

impl ReadAt for SpanCache {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        if offset >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let end = offset.saturating_add(buf.len() as u64).min(self.size);
        self.ensure(std::slice::from_ref(&(offset..end)), true)?;
        let n = (end - offset) as usize;
        self.file.read_exact_at(&mut buf[..n], offset)?;
        Ok(n)
    }

    fn size(&self) -> u64 {
        self.size
    }

    /// Batched reads (prefetch, background fetch) are large already: no
    /// read-ahead, only what is missing is fetched.
    fn read_ranges(&self, ranges: &[Range<u64>]) -> io::Result<Vec<Vec<u8>>> {
        for r in ranges {
            if r.start > r.end || r.end > self.size {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "range {}..{} outside a blob of {} bytes",
                        r.start, r.end, self.size
                    ),
                ));
            }
        }
        self.ensure(ranges, false)?;
        ranges
            .iter()
            .map(|r| {
                let mut buf = vec![0; (r.end - r.start) as usize];
                self.file.read_exact_at(&mut buf, r.start)?;
                Ok(buf)
            })
            .collect()
    }

    fn invalidate(&self, range: Range<u64>) {
        self.lock().present.remove(range);
    }

    fn missing(&self, range: Range<u64>) -> Option<Vec<Range<u64>>> {
        Some(
            self.lock()
                .present
                .missing(&(range.start..range.end.min(self.size))),
        )
    }
}

#[cfg(test)]
mod tests;
