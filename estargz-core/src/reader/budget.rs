//! A byte budget for buffers that hold chunk data, so the memory of parallel
//! verification and extraction depends on the budget, not on the number of
//! threads: work that does not fit waits until earlier work frees its share.

use std::sync::{Condvar, Mutex};

pub(crate) struct Budget {
    cap: u64,
    used: Mutex<u64>,
    freed: Condvar,
    /// The most ever held at once (for tests).
    #[cfg(test)]
    peak: std::sync::atomic::AtomicU64,
}

/// A share of the budget, given back when dropped.
pub(crate) struct Permit<'a> {
    budget: &'a Budget,
    bytes: u64,
}

impl Budget {
    pub(crate) fn new(cap: u64) -> Budget {
        Budget {
            cap,
            used: Mutex::new(0),
            freed: Condvar::new(),
            #[cfg(test)]
            peak: Default::default(),
        }
    }

    #[cfg(test)]
    pub(crate) fn peak(&self) -> u64 {
        self.peak.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits until `bytes` fit. A request larger than the whole budget runs
    /// alone, so every request is eventually granted. Callers must not hold
    /// another permit while waiting (that could wait forever).
    pub(crate) fn acquire(&self, bytes: u64) -> Permit<'_> {
        let bytes = bytes.min(self.cap);
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        while *used > 0 && *used + bytes > self.cap {
            used = self.freed.wait(used).unwrap_or_else(|p| p.into_inner());
        }
        *used += bytes;
        #[cfg(test)]
        self.peak
            .fetch_max(*used, std::sync::atomic::Ordering::SeqCst);
        Permit {
            budget: self,
            bytes,
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut used = self.budget.used.lock().unwrap_or_else(|p| p.into_inner());
        *used -= self.bytes;
        self.budget.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn holds_at_most_the_cap_whatever_the_threads() {
        let budget = Budget::new(100);
        let held = AtomicU64::new(0);
        let peak = AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..16 {
                s.spawn(|| {
                    for _ in 0..50 {
                        let _p = budget.acquire(40);
                        let now = held.fetch_add(40, Ordering::SeqCst) + 40;
                        peak.fetch_max(now, Ordering::SeqCst);
                        std::thread::yield_now();
                        held.fetch_sub(40, Ordering::SeqCst);
                    }
                });
            }
        });
        assert!(peak.load(Ordering::SeqCst) <= 100);
        // Larger than the budget: granted alone, not refused.
        drop(budget.acquire(1000));
    }
}
