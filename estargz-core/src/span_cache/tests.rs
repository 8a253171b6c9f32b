use super::*;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

/// An in-memory blob that counts calls, can be slowed down and made to fail.
struct Slow {
    data: Vec<u8>,
    calls: AtomicUsize,
    delay: Duration,
    fail: std::sync::atomic::AtomicBool,
    corrupt_once: std::sync::atomic::AtomicBool,
}

impl Slow {
    fn new(len: usize, delay: Duration) -> Arc<Slow> {
        Arc::new(Slow {
            data: (0..len).map(|i| (i * 7 + i / 251) as u8).collect(),
            calls: AtomicUsize::new(0),
            delay,
            fail: Default::default(),
            corrupt_once: Default::default(),
        })
    }
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl ReadAt for Slow {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let end = (offset + buf.len() as u64).min(self.size());
        let r = self.read_ranges(std::slice::from_ref(&(offset..end)))?;
        buf[..r[0].len()].copy_from_slice(&r[0]);
        Ok(r[0].len())
    }
    fn size(&self) -> u64 {
        self.data.len() as u64
    }
    fn read_ranges(&self, ranges: &[Range<u64>]) -> io::Result<Vec<Vec<u8>>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(self.delay);
        if self.fail.load(Ordering::SeqCst) {
            return Err(io::Error::other(Error::Timeout("registry stalled".into())));
        }
        let mut out: Vec<Vec<u8>> = ranges
            .iter()
            .map(|r| self.data[r.start as usize..r.end as usize].to_vec())
            .collect();
        if self.corrupt_once.swap(false, Ordering::SeqCst) {
            out[0][0] ^= 0xff;
        }
        Ok(out)
    }
}

fn cache(src: &Arc<Slow>) -> SpanCache {
    SpanCache::new(src.clone(), None, SpanCacheOptions::default()).unwrap()
}

#[test]
fn range_set_inserts_merges_and_removes() {
    let mut s = RangeSet::default();
    s.insert(10..20);
    s.insert(30..40);
    assert_eq!(s.missing(&(0..50)), vec![0..10, 20..30, 40..50]);
    s.insert(20..30); // touching both: one range
    assert_eq!(s.0.len(), 1);
    assert_eq!(s.missing(&(5..45)), vec![5..10, 40..45]);
    s.remove(15..25);
    assert_eq!(s.missing(&(10..40)), vec![15..25]);
    assert_eq!(s.total(), 20);
    s.insert(0..100);
    assert!(s.missing(&(0..100)).is_empty());
    assert_eq!(s.missing(&(90..110)), vec![100..110]);
}

#[test]
fn sequential_small_reads_grow_the_window() {
    let src = Slow::new(16 << 20, Duration::ZERO);
    let c = cache(&src);
    let mut buf = vec![0u8; 2000];
    let mut pos = 0u64;
    while pos < src.size() {
        let n = c.read_at(&mut buf, pos).unwrap();
        assert_eq!(&buf[..n], &src.data[pos as usize..pos as usize + n]);
        pos += n as u64;
    }
    // 8,389 reads; windows of 256 KiB doubling to 8 MiB.
    assert!(src.calls() <= 8, "{} fetches", src.calls());
    assert_eq!(c.read_ahead_window(), 8 << 20);
    assert_eq!(c.stats().cached_bytes, src.size());
    // Everything is local now.
    let before = src.calls();
    c.read_at(&mut buf, 12345).unwrap();
    assert_eq!(src.calls(), before);
}

#[test]
fn the_first_miss_brings_a_little_before_it_too() {
    let src = Slow::new(4 << 20, Duration::ZERO);
    let c = cache(&src);
    let mut buf = [0u8; 100];
    // The footer and TOC (the end of the blob) come first and do not count.
    c.read_at(&mut buf, src.size() - 100).unwrap();
    // `/etc/passwd` is read first, `/etc/group` sits 20 KB before it.
    c.read_at(&mut buf, 1 << 20).unwrap();
    assert_eq!(src.calls(), 2);
    c.read_at(&mut buf, (1 << 20) - 20_000).unwrap();
    assert_eq!(&buf[..], &src.data[(1 << 20) - 20_000..(1 << 20) - 19_900]);
    assert_eq!(src.calls(), 2, "no request of its own");
    // Later misses reach forward only.
    c.read_at(&mut buf, 3 << 20).unwrap();
    c.read_at(&mut buf, (3 << 20) - 100).unwrap();
    assert_eq!(src.calls(), 4);
}

#[test]
fn random_reads_shrink_the_window() {
    let src = Slow::new(64 << 20, Duration::ZERO);
    let c = cache(&src);
    let mut buf = [0u8; 100];
    // Far apart, alternating direction.
    for off in [
        60u64 << 20,
        1 << 20,
        50 << 20,
        5 << 20,
        40 << 20,
        9 << 20,
        30 << 20,
        13 << 20,
    ] {
        c.read_at(&mut buf, off).unwrap();
        assert_eq!(&buf[..], &src.data[off as usize..off as usize + 100]);
    }
    assert_eq!(c.read_ahead_window(), 64 << 10);
    assert!(c.stats().cached_bytes < 2 << 20);
}

#[test]
fn concurrent_misses_share_requests() {
    let src = Slow::new(8 << 20, Duration::from_millis(50));
    let c = Arc::new(SpanCache::new(src.clone(), None, SpanCacheOptions::default()).unwrap());
    let threads: Vec<_> = (0..32u64)
        .map(|i| {
            let c = c.clone();
            let src = src.clone();
            std::thread::spawn(move || {
                // 32 readers spread over the blob, 4 per 1 MiB region.
                let off = i * (256 << 10) + 1000;
                let mut buf = vec![0u8; 5000];
                c.read_exact_at(&mut buf, off).unwrap();
                assert_eq!(buf, src.data[off as usize..off as usize + 5000]);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // 4 fetchers at a time; the rest are merged into queued batches.
    assert!(src.calls() < 16, "{} fetches for 32 misses", src.calls());
}

#[test]
fn failures_reach_every_waiter_and_are_not_remembered() {
    let src = Slow::new(1 << 20, Duration::from_millis(30));
    let c = Arc::new(SpanCache::new(src.clone(), None, SpanCacheOptions::default()).unwrap());
    src.fail.store(true, Ordering::SeqCst);
    let errors: Vec<io::Error> = (0..8)
        .map(|_| {
            let c = c.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 10];
                c.read_exact_at(&mut buf, 100).unwrap_err()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    for e in &errors {
        let inner = e.get_ref().and_then(|i| i.downcast_ref::<Error>());
        assert!(matches!(inner, Some(Error::Timeout(_))), "{e}");
    }
    assert!(src.calls() < 8, "waiters share the failed fetch");
    src.fail.store(false, Ordering::SeqCst);
    let mut buf = [0u8; 10];
    c.read_exact_at(&mut buf, 100).unwrap();
    assert_eq!(&buf[..], &src.data[100..110]);
}

#[test]
fn invalidated_ranges_are_fetched_again() {
    let src = Slow::new(1 << 20, Duration::ZERO);
    let c = cache(&src);
    src.corrupt_once.store(true, Ordering::SeqCst);
    let mut buf = [0u8; 10];
    c.read_exact_at(&mut buf, 0).unwrap();
    assert_ne!(buf[0], src.data[0], "the source's bad byte is passed on");
    c.invalidate(0..10);
    c.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf[..], &src.data[..10]);
    assert_eq!(src.calls(), 2);
}

#[test]
fn batched_reads_fetch_only_what_is_missing() {
    let src = Slow::new(4 << 20, Duration::ZERO);
    let c = cache(&src);
    let mut buf = [0u8; 10];
    c.read_exact_at(&mut buf, 0).unwrap(); // brings 0..256 KiB
    let fetched = c.stats().fetched_bytes;
    let got = c.read_ranges(&[100..200, (1 << 20)..(2 << 20)]).unwrap();
    assert_eq!(got[0], src.data[100..200]);
    assert_eq!(got[1], src.data[1 << 20..2 << 20]);
    assert_eq!(c.stats().fetched_bytes - fetched, 1 << 20);
    assert_eq!(
        c.missing(0..u64::MAX),
        Some(vec![(256 << 10)..(1 << 20), (2 << 20)..(4 << 20)])
    );
    assert!(c
        .read_ranges(std::slice::from_ref(&(0..(5 << 20))))
        .is_err());
}

/// A blob that delivers each fetch in two halves, each only when the test
/// lets it: the first on the first `go`, the second on the next.
struct Halves {
    data: Vec<u8>,
    calls: AtomicUsize,
    go: Mutex<std::sync::mpsc::Receiver<()>>,
}

impl ReadAt for Halves {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        slice_read(&self.data, buf, offset)
    }
    fn size(&self) -> u64 {
        self.data.len() as u64
    }
    /// Gated too, so a cache that fetched without streaming would wait.
    fn read_ranges(&self, ranges: &[Range<u64>]) -> io::Result<Vec<Vec<u8>>> {
        let mut out: Vec<Vec<u8>> = ranges.iter().map(|_| Vec::new()).collect();
        self.stream_ranges(ranges, &mut |offset, bytes| {
            let i = ranges.iter().position(|r| r.contains(&offset)).unwrap();
            out[i].extend_from_slice(bytes);
            Ok(())
        })?;
        Ok(out)
    }
    fn stream_ranges(
        &self,
        ranges: &[Range<u64>],
        deliver: &mut dyn FnMut(u64, &[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let go = self.go.lock().unwrap();
        for r in ranges {
            let mid = r.start + (r.end - r.start) / 2;
            for part in [r.start..mid, mid..r.end] {
                go.recv().map_err(io::Error::other)?;
                deliver(
                    part.start,
                    &self.data[part.start as usize..part.end as usize],
                )?;
            }
        }
        Ok(())
    }
}

fn slice_read(data: &[u8], buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let start = (offset as usize).min(data.len());
    let n = buf.len().min(data.len() - start);
    buf[..n].copy_from_slice(&data[start..start + n]);
    Ok(n)
}

#[test]
fn a_read_of_the_front_of_a_batch_does_not_wait_for_its_end() {
    let (go, gate) = std::sync::mpsc::channel();
    let src = Arc::new(Halves {
        data: (0..(1 << 20)).map(|i| (i % 253) as u8).collect(),
        calls: AtomicUsize::new(0),
        go: Mutex::new(gate),
    });
    let c = Arc::new(SpanCache::new(src.clone(), None, SpanCacheOptions::default()).unwrap());
    // A background-style batch of the whole blob.
    let batch = {
        let c = c.clone();
        std::thread::spawn(move || {
            c.read_ranges(std::slice::from_ref(&(0..(1 << 20))))
                .map(|v| v[0].len())
        })
    };
    while src.calls.load(Ordering::SeqCst) == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    // A read of the front, asked while the batch is on its way, waits for
    // it (no second request) and is answered by its first half alone.
    let (done, answered) = std::sync::mpsc::channel();
    {
        let c = c.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 1000];
            done.send(c.read_exact_at(&mut buf, 4096).map(|()| buf))
                .unwrap();
        });
    }
    go.send(()).unwrap();
    let buf = answered
        .recv_timeout(Duration::from_secs(20))
        .expect("the read waited for the whole batch")
        .unwrap();
    assert_eq!(buf, src.data[4096..5096]);
    assert!(!batch.is_finished());
    go.send(()).unwrap();
    assert_eq!(batch.join().unwrap().unwrap(), 1 << 20);
    assert_eq!(src.calls.load(Ordering::SeqCst), 1);
    assert_eq!(c.stats().cached_bytes, 1 << 20);
}

#[test]
fn overlapping_batched_reads_and_misses_from_many_threads_all_finish() {
    for max_fetchers in [1, 2, 4] {
        let src = Slow::new(4 << 20, Duration::from_millis(5));
        let opts = SpanCacheOptions {
            max_fetchers,
            ..SpanCacheOptions::default()
        };
        let c = Arc::new(SpanCache::new(src.clone(), None, opts).unwrap());
        let (done, finished) = std::sync::mpsc::channel();
        for t in 0..8u64 {
            let (c, done) = (c.clone(), done.clone());
            std::thread::spawn(move || {
                for i in 0..40u64 {
                    let start = ((t * 7919 + i * 104_729) * 4099) % (4 << 20);
                    if (t + i) % 2 == 0 {
                        let ranges: Vec<Range<u64>> = (0..3)
                            .map(|k| {
                                let s = (start + k * 300_000) % ((4 << 20) - 200_000);
                                (s, s + 150_000)
                            })
                            .collect::<std::collections::BTreeMap<u64, u64>>()
                            .into_iter()
                            .map(|(s, e)| s..e)
                            .collect();
                        c.read_ranges(&ranges).unwrap();
                    } else {
                        let mut buf = vec![0u8; 7000];
                        c.read_exact_at(&mut buf, start.min((4 << 20) - 7000))
                            .unwrap();
                    }
                }
                done.send(()).unwrap();
            });
        }
        for _ in 0..8 {
            finished
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("stuck with {max_fetchers} fetchers"));
        }
    }
}
