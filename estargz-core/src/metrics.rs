//! Process-wide counters, one registry shared by every front end in the
//! process (`estargz-fuse store` and `mount`, the C library's mounts), and
//! their Prometheus text exposition (format 0.0.4), written by hand: the
//! format is a few lines per metric and needs no dependency.
//!
//! Counters only ever grow; a scrape reads each with a relaxed load, so a
//! scrape taken while requests run may mix values from slightly different
//! moments, which Prometheus tolerates.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Upper bounds (seconds) of the fetch latency buckets: a few ms on a
/// local mirror up to the request timeout of a stuck registry.
const LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Requests and bytes of one registry host.
#[derive(Default)]
pub struct HostCounters {
    requests: AtomicU64,
    bytes: AtomicU64,
}

impl HostCounters {
    /// Response body bytes received from the host.
    pub fn add_bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }
}

#[derive(Default)]
struct Histogram {
    /// Observations at most each bound (not cumulative; summed on output).
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }
}

/// What a FUSE request type did.
#[derive(Default)]
struct OpCounters {
    requests: AtomicU64,
    errors: AtomicU64,
}

/// The counters. Get the process's with [`global`].
#[derive(Default)]
pub struct Metrics {
    hosts: Mutex<BTreeMap<String, Arc<HostCounters>>>,
    fetch_latency: Histogram,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    cache_evictions: AtomicU64,
    layers_opened: AtomicU64,
    layers_failed: AtomicU64,
    warm_bytes: AtomicU64,
    background_started: AtomicU64,
    background_completed: AtomicU64,
    background_incomplete: AtomicU64,
    fuse: Mutex<BTreeMap<&'static str, Arc<OpCounters>>>,
}

/// The process's metrics.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::default)
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl Metrics {
    /// The counters of registry `host` (`host[:port]`).
    pub fn host(&self, host: &str) -> Arc<HostCounters> {
        let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = hosts.get(host) {
            return h.clone();
        }
        hosts.entry(host.to_string()).or_default().clone()
    }

    /// One HTTP request sent to `host`.
    pub fn request(&self, host: &str) -> Arc<HostCounters> {
        let h = self.host(host);
        add(&h.requests, 1);
        h
    }

    /// How long one blob range fetch took (request to last byte).
    pub fn observe_fetch(&self, d: Duration) {
        self.fetch_latency.observe(d);
    }

    /// A chunk found in a chunk cache.
    pub fn cache_hit(&self) {
        add(&self.cache_hits, 1);
    }

    /// A chunk not found in a chunk cache.
    pub fn cache_miss(&self) {
        add(&self.cache_misses, 1);
    }

    /// `n` chunks evicted from a chunk cache.
    pub fn cache_evictions(&self, n: u64) {
        add(&self.cache_evictions, n);
    }

    /// A registry layer opened (footer and TOC verified), or not.
    pub fn layer_opened(&self, ok: bool) {
        add(
            if ok {
                &self.layers_opened
            } else {
                &self.layers_failed
            },
            1,
        );
    }

    /// Compressed bytes fetched ahead of reads (prefetch, background fetch).
    pub fn warm_bytes(&self, n: u64) {
        add(&self.warm_bytes, n);
    }

    /// A background fetch of a whole layer started.
    pub fn background_started(&self) {
        add(&self.background_started, 1);
    }

    /// A background fetch ended: the whole layer cached, or not (stopped
    /// by an unload, or given up after failures).
    pub fn background_ended(&self, complete: bool) {
        add(
            if complete {
                &self.background_completed
            } else {
                &self.background_incomplete
            },
            1,
        );
    }

    /// One FUSE request of type `op`.
    pub fn fuse_request(&self, op: &'static str) {
        add(&self.fuse_op(op).requests, 1);
    }

    /// A FUSE request of type `op` answered with an error.
    pub fn fuse_error(&self, op: &'static str) {
        add(&self.fuse_op(op).errors, 1);
    }

    fn fuse_op(&self, op: &'static str) -> Arc<OpCounters> {
        self.fuse
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(op)
            .or_default()
            .clone()
    }

    /// Requests and bytes so far for `host` (tests, status lines).
    pub fn host_totals(&self, host: &str) -> (u64, u64) {
        let h = self.host(host);
        (
            h.requests.load(Ordering::Relaxed),
            h.bytes.load(Ordering::Relaxed),
        )
    }

    /// The Prometheus text exposition of every counter.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in samples {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        };
        let hosts: Vec<(String, Arc<HostCounters>)> = self
            .hosts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let per_host = |f: fn(&HostCounters) -> &AtomicU64| -> Vec<(String, u64)> {
            hosts
                .iter()
                .map(|(h, c)| (format!("{{host=\"{}\"}}", escape(h)), load(f(c))))
                .collect()
        };
        family(
            "estargz_registry_requests_total",
            "counter",
            "HTTP requests sent to a registry host.",
            &per_host(|c| &c.requests),
        );
        family(
            "estargz_registry_response_bytes_total",
            "counter",
            "Response body bytes received from a registry host.",
            &per_host(|c| &c.bytes),
        );
        let one = |c: &AtomicU64| vec![(String::new(), load(c))];
        family(
            "estargz_cache_hits_total",
            "counter",
            "Chunks found in the chunk cache (memory or disk).",
            &one(&self.cache_hits),
        );
        family(
            "estargz_cache_misses_total",
            "counter",
            "Chunks not in the chunk cache.",
            &one(&self.cache_misses),
        );
        family(
            "estargz_cache_evictions_total",
            "counter",
            "Chunks evicted from the chunk cache (memory and disk).",
            &one(&self.cache_evictions),
        );
        family(
            "estargz_layers_total",
            "counter",
            "Registry layers opened, by result.",
            &[
                ("{result=\"ok\"}".into(), load(&self.layers_opened)),
                ("{result=\"failed\"}".into(), load(&self.layers_failed)),
            ],
        );
        family(
            "estargz_warm_bytes_total",
            "counter",
            "Compressed bytes fetched ahead of reads (prefetch and background fetch).",
            &one(&self.warm_bytes),
        );
        family(
            "estargz_background_fetches_total",
            "counter",
            "Background fetches of whole layers: started, ended with the layer cached, ended otherwise (stopped or failed).",
            &[
                ("{state=\"started\"}".into(), load(&self.background_started)),
                (
                    "{state=\"completed\"}".into(),
                    load(&self.background_completed),
                ),
                (
                    "{state=\"incomplete\"}".into(),
                    load(&self.background_incomplete),
                ),
            ],
        );
        let ops: Vec<(&'static str, Arc<OpCounters>)> = self
            .fuse
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        family(
            "estargz_fuse_requests_total",
            "counter",
            "FUSE requests, by operation.",
            &ops.iter()
                .map(|(op, c)| (format!("{{op=\"{op}\"}}"), load(&c.requests)))
                .collect::<Vec<_>>(),
        );
        family(
            "estargz_fuse_errors_total",
            "counter",
            "FUSE requests answered with an error, by operation.",
            &ops.iter()
                .map(|(op, c)| (format!("{{op=\"{op}\"}}"), load(&c.errors)))
                .collect::<Vec<_>>(),
        );
        let h = &self.fetch_latency;
        let name = "estargz_fetch_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time from a blob range request to its last byte.\n# TYPE {name} histogram"
        );
        let mut cumulative = 0;
        for (bound, c) in LATENCY_BUCKETS.iter().zip(&h.buckets) {
            cumulative += load(c);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = load(&h.count);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            load(&h.sum_micros) as f64 / 1_000_000.0
        );
        let _ = writeln!(out, "{name}_count {count}");
        out
    }
}

/// A label value as the text format wants it.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_in_the_text_format() {
        let m = Metrics::default();
        m.request("127.0.0.1:5000").add_bytes(100);
        m.request("127.0.0.1:5000").add_bytes(23);
        m.request("a\"b");
        m.observe_fetch(Duration::from_millis(3));
        m.observe_fetch(Duration::from_millis(300));
        m.observe_fetch(Duration::from_secs(60));
        m.cache_hit();
        m.cache_miss();
        m.cache_evictions(4);
        m.layer_opened(true);
        m.layer_opened(false);
        m.fuse_request("read");
        m.fuse_request("read");
        m.fuse_error("read");
        let text = m.render();
        for line in [
            "estargz_registry_requests_total{host=\"127.0.0.1:5000\"} 2",
            "estargz_registry_response_bytes_total{host=\"127.0.0.1:5000\"} 123",
            "estargz_registry_requests_total{host=\"a\\\"b\"} 1",
            "estargz_cache_evictions_total 4",
            "estargz_layers_total{result=\"failed\"} 1",
            "estargz_fuse_requests_total{op=\"read\"} 2",
            "estargz_fuse_errors_total{op=\"read\"} 1",
            "estargz_fetch_duration_seconds_bucket{le=\"0.005\"} 1",
            "estargz_fetch_duration_seconds_bucket{le=\"0.25\"} 1",
            "estargz_fetch_duration_seconds_bucket{le=\"0.5\"} 2",
            "estargz_fetch_duration_seconds_bucket{le=\"30\"} 2",
            "estargz_fetch_duration_seconds_bucket{le=\"+Inf\"} 3",
            "estargz_fetch_duration_seconds_count 3",
            "estargz_fetch_duration_seconds_sum 60.303",
            "# TYPE estargz_fetch_duration_seconds histogram",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        assert_eq!(m.host_totals("127.0.0.1:5000"), (2, 123));
    }
}
