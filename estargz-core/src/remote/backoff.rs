//! Dead-mirror back-off: a mirror that could not be reached (connection
//! failed or timed out) is tried after the other sources for a while, so
//! every read does not wait for its timeout again. The period starts at
//! [`MIN_BACKOFF`] and doubles with each failure up to [`MAX_BACKOFF`]; a
//! success forgets it. One table per process: every registry client, store
//! layer and C ABI mount shares what it learned about a host.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::error::Error;

/// First back-off period of a host.
pub const MIN_BACKOFF: Duration = Duration::from_secs(1);
/// Longest back-off period.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Where the time comes from (tests move it by hand).
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> Instant;
}

/// The real clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

struct Down {
    until: Instant,
    period: Duration,
}

/// Hosts in back-off.
pub struct HostBackoff {
    clock: Box<dyn Clock>,
    down: Mutex<HashMap<String, Down>>,
}

impl HostBackoff {
    /// An empty table on `clock`.
    pub fn new(clock: Box<dyn Clock>) -> HostBackoff {
        HostBackoff {
            clock,
            down: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `host` is in its back-off period now.
    pub fn is_down(&self, host: &str) -> bool {
        let now = self.clock.now();
        self.lock().get(host).is_some_and(|d| d.until > now)
    }

    /// `host` failed to answer: start or lengthen its back-off period.
    pub fn failed(&self, host: &str) {
        let now = self.clock.now();
        let mut down = self.lock();
        let period = match down.get(host) {
            Some(d) => (d.period * 2).min(MAX_BACKOFF),
            None => MIN_BACKOFF,
        };
        log::info!("{host}: not answering, tried last for {period:?}");
        down.insert(
            host.to_string(),
            Down {
                until: now + period,
                period,
            },
        );
    }

    /// `host` answered: forget its failures.
    pub fn succeeded(&self, host: &str) {
        let mut down = self.lock();
        if down.remove(host).is_some() {
            log::info!("{host}: answering again");
        }
    }

    /// Records the outcome of a request to a mirror: only connection
    /// failures and timeouts mean the host is down (an HTTP error is an
    /// answer).
    pub fn record<T>(&self, host: &str, result: &crate::error::Result<T>) {
        match result {
            Ok(_) => self.succeeded(host),
            Err(e) if is_unreachable(e) => self.failed(host),
            Err(_) => {}
        }
    }

    /// `items` with those whose host is in back-off moved to the end
    /// (still tried when everything else fails), order otherwise kept.
    pub fn order<'h, T>(&self, items: Vec<T>, host: impl Fn(&T) -> Option<&'h str>) -> Vec<T> {
        let (down, up): (Vec<T>, Vec<T>) = items
            .into_iter()
            .partition(|i| host(i).is_some_and(|h| self.is_down(h)));
        up.into_iter().chain(down).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Down>> {
        self.down.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Whether an error means the host could not be reached at all.
pub fn is_unreachable(e: &Error) -> bool {
    matches!(e, Error::Network(_) | Error::Timeout(_))
}

/// The process's table.
pub fn global() -> &'static HostBackoff {
    static GLOBAL: OnceLock<HostBackoff> = OnceLock::new();
    GLOBAL.get_or_init(|| HostBackoff::new(Box::new(SystemClock)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    struct Manual(Arc<Mutex<Instant>>);

    impl Clock for Manual {
        fn now(&self) -> Instant {
            *self.0.lock().unwrap()
        }
    }

    #[test]
    fn periods_grow_to_the_cap_and_a_success_resets() {
        let t = Arc::new(Mutex::new(Instant::now()));
        let b = HostBackoff::new(Box::new(Manual(t.clone())));
        let advance = |d: Duration| *t.lock().unwrap() += d;
        assert!(!b.is_down("m:1"));
        b.failed("m:1");
        assert!(b.is_down("m:1") && !b.is_down("other"));
        advance(Duration::from_millis(999));
        assert!(b.is_down("m:1"));
        advance(Duration::from_millis(1));
        assert!(!b.is_down("m:1"), "1 s after the first failure");
        // Failing again doubles the period: 2, 4, 8, 16, 30, 30 s.
        for want in [2, 4, 8, 16, 30, 30] {
            b.failed("m:1");
            advance(Duration::from_secs(want) - Duration::from_millis(1));
            assert!(b.is_down("m:1"), "{want}");
            advance(Duration::from_millis(1));
            assert!(!b.is_down("m:1"), "{want}");
        }
        b.failed("m:1");
        b.succeeded("m:1");
        assert!(!b.is_down("m:1"));
        b.failed("m:1");
        advance(Duration::from_secs(1));
        assert!(!b.is_down("m:1"), "after a success it starts at 1 s again");
    }

    #[test]
    fn only_unreachable_hosts_count_and_order_moves_them_last() {
        let b = HostBackoff::new(Box::new(SystemClock));
        b.record::<()>("a", &Err(Error::NotFound("x".into())));
        b.record::<()>("b", &Err(Error::Registry("HTTP 503".into())));
        assert!(!b.is_down("a") && !b.is_down("b"));
        b.record::<()>("a", &Err(Error::Timeout("x".into())));
        b.record::<()>("b", &Err(Error::Network("refused".into())));
        assert!(b.is_down("a") && b.is_down("b"));
        let order = b.order(vec!["a", "c", "b", "d"], |h| Some(*h));
        assert_eq!(order, ["c", "d", "a", "b"]);
        b.record("a", &Ok(()));
        assert!(!b.is_down("a"));
    }
}
