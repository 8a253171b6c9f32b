//! One lock per key while work on that key is in flight, so concurrent
//! readers of the same chunk wait for one fetch (or one disk-cache check)
//! instead of each decompressing and hashing it again. FUSE readahead sends
//! several requests into one chunk at once, which made this the bottleneck.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::digest::Digest;

#[derive(Default)]
pub(crate) struct InFlight {
    locks: Mutex<HashMap<Digest, Arc<Mutex<()>>>>,
}

impl InFlight {
    /// Runs `work` while no other `run` with the same key runs.
    pub(crate) fn run<T>(&self, key: &Digest, work: impl FnOnce() -> T) -> T {
        let lock = self.map().entry(*key).or_default().clone();
        // Cleans up even if `work` panics.
        struct Release<'a> {
            inflight: &'a InFlight,
            key: &'a Digest,
            lock: Option<Arc<Mutex<()>>>,
        }
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                // Let go of our reference before looking, so the last one
                // out always sees only the map's and removes the entry.
                drop(self.lock.take());
                let mut map = self.inflight.map();
                if map.get(self.key).is_some_and(|l| Arc::strong_count(l) == 1) {
                    map.remove(self.key);
                }
            }
        }
        let release = Release {
            inflight: self,
            key,
            lock: Some(lock),
        };
        let _guard = release
            .lock
            .as_ref()
            .expect("set above")
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        work()
    }

    fn map(&self) -> MutexGuard<'_, HashMap<Digest, Arc<Mutex<()>>>> {
        self.locks.lock().unwrap_or_else(|p| p.into_inner())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn same_key_runs_one_at_a_time_and_entries_are_dropped() {
        let inflight = InFlight::default();
        let running = AtomicUsize::new(0);
        let max_seen = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..50 {
                        inflight.run(&Digest::of(b"k"), || {
                            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                            max_seen.fetch_max(now, Ordering::SeqCst);
                            std::thread::yield_now();
                            running.fetch_sub(1, Ordering::SeqCst);
                        });
                    }
                });
            }
        });
        assert_eq!(max_seen.load(Ordering::SeqCst), 1);
        assert_eq!(inflight.len(), 0);
    }

    #[test]
    fn different_keys_do_not_wait_for_each_other() {
        let inflight = Arc::new(InFlight::default());
        let (tx, rx) = std::sync::mpsc::channel();
        let other = inflight.clone();
        inflight.run(&Digest::of(b"a"), move || {
            // Would deadlock if "b" waited for "a".
            std::thread::spawn(move || other.run(&Digest::of(b"b"), || tx.send(()).unwrap()))
                .join()
                .unwrap();
        });
        rx.recv().unwrap();
    }
}
