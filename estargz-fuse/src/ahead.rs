//! Layers opened before they are asked for. Runtimes ask for an image's
//! layers one after the other (containerd's Prepares, Podman's store
//! lookups), so each would wait for its own manifest → footer → TOC round
//! trips; opening the next ones in parallel as soon as the first is asked
//! for overlaps those waits. One table, by (image reference, layer digest),
//! holds each open being made or made: the first request for the layer
//! claims it (waiting for it if it is still running, sharing its answer
//! through the core's `Flight`), unclaimed ones expire (checked on every
//! reserve and claim, so no thread of its own is needed), and the table is
//! bounded. Used by the store's resolver and by the C ABI's mounts
//! ([`mounts`], fed by `estargz_mount_open_ahead`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use estargz_core::cache::ChunkCache;
use estargz_core::flight::Flight;
use estargz_core::remote::manifest::{self, Platform};
use estargz_core::remote::{open_layer, Image, LayerOptions, Reference, Registry};
use estargz_core::{Digest, Error, Result};

use crate::image_mounts::image_mounts;
use crate::source::{OpenedLayer, Source};

/// Layers held opened ahead at most by [`mounts`]: each holds a TOC index
/// until it is claimed or expires.
pub const MAX_AHEAD: usize = 16;

/// How long a layer opened ahead waits to be claimed.
pub const AHEAD_TTL: Duration = Duration::from_secs(30);

/// `None`: the reservation was dropped without an answer.
type Slot<T> = Arc<Flight<Option<Result<T>>>>;

type Key = (String, String);

/// Opens being made or made ahead, by (image reference, layer digest).
pub struct OpenAhead<T> {
    table: Mutex<Table<T>>,
    max: usize,
    ttl: Duration,
}

struct Table<T> {
    slots: HashMap<Key, Slot<T>>,
    /// Layers claimed within the TTL ([`OpenAhead::reserve_unclaimed`]).
    /// At most `max` are remembered.
    claimed: HashMap<Key, Instant>,
}

/// The right and duty to make one open ahead: [`Reservation::finish`]
/// hands the result to its claimer; dropped unfinished (an error path, a
/// panic), it answers "none" so no claimer waits for nothing.
pub struct Reservation<T: Clone> {
    flight: Slot<T>,
}

impl<T: Clone> Reservation<T> {
    pub fn finish(self, opened: Result<T>) {
        self.flight.finish(Some(opened));
    }
}

impl<T: Clone> Drop for Reservation<T> {
    fn drop(&mut self) {
        // The first answer stays: after finish this is a no-op.
        self.flight.finish(None);
    }
}

impl<T: Clone> OpenAhead<T> {
    /// A table of at most `max` opens, each kept `ttl` unless claimed.
    pub fn new(max: usize, ttl: Duration) -> Self {
        OpenAhead {
            table: Mutex::new(Table {
                slots: HashMap::new(),
                claimed: HashMap::new(),
            }),
            max,
            ttl,
        }
    }

    /// Reserves the open of `digest` of `reference`; `None` when it is
    /// already being opened or opened, or the table is full.
    pub fn reserve(&self, reference: &str, digest: &str) -> Option<Reservation<T>> {
        self.reserve_if(reference, digest, false)
    }

    /// [`OpenAhead::reserve`], also `None` when the layer was claimed
    /// within the TTL: its claimer has it (or is opening it), so a guess
    /// at what comes next should not open it again. An explicit request
    /// (the C ABI's) uses `reserve`.
    pub fn reserve_unclaimed(&self, reference: &str, digest: &str) -> Option<Reservation<T>> {
        self.reserve_if(reference, digest, true)
    }

    fn reserve_if(&self, reference: &str, digest: &str, unclaimed: bool) -> Option<Reservation<T>> {
        let mut table = self.lock();
        self.drop_expired(&mut table);
        let key = (reference.to_string(), digest.to_string());
        if table.slots.len() >= self.max
            || table.slots.contains_key(&key)
            || (unclaimed && table.claimed.contains_key(&key))
        {
            return None;
        }
        let flight = Arc::new(Flight::new());
        table.slots.insert(key, flight.clone());
        Some(Reservation { flight })
    }

    /// Takes the open of `digest` of `reference` out of the table, waiting
    /// for it if it is still being made (bounded by the registry client's
    /// timeouts). `None`: there is none, or it failed and the claimer opens
    /// the layer itself (a failure is not remembered), except a timeout,
    /// which is returned: it already took the client's whole time budget,
    /// and opening again would make the claimer wait for it twice.
    pub fn claim(&self, reference: &str, digest: &str) -> Option<Result<T>> {
        let flight = {
            let mut table = self.lock();
            self.drop_expired(&mut table);
            let key = (reference.to_string(), digest.to_string());
            if !table.claimed.contains_key(&key) && table.claimed.len() >= self.max {
                let oldest = table.claimed.iter().min_by_key(|(_, at)| **at);
                if let Some(k) = oldest.map(|(k, _)| k.clone()) {
                    table.claimed.remove(&k);
                }
            }
            table.claimed.insert(key.clone(), Instant::now());
            table.slots.remove(&key)?
        };
        match flight.wait(Duration::MAX).flatten()? {
            Ok(opened) => Some(Ok(opened)),
            Err(e @ Error::Timeout(_)) => Some(Err(e)),
            Err(_) => None,
        }
    }

    /// Drops opens nobody claimed in time.
    pub fn expire(&self) {
        self.drop_expired(&mut self.lock());
    }

    /// Opens held, being made or made (for tests and logs).
    pub fn len(&self) -> usize {
        self.lock().slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn drop_expired(&self, table: &mut Table<T>) {
        table.slots.retain(|_, f| f.age() < self.ttl);
        table.claimed.retain(|_, at| at.elapsed() < self.ttl);
    }

    fn lock(&self) -> MutexGuard<'_, Table<T>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The process's layers opened ahead for mounts (the C ABI's, so the
/// snapshotter's FUSE manager): [`Source::open_claiming`] takes from it.
pub fn mounts() -> &'static OpenAhead<OpenedLayer> {
    static MOUNTS: OnceLock<OpenAhead<OpenedLayer>> = OnceLock::new();
    MOUNTS.get_or_init(|| OpenAhead::new(MAX_AHEAD, AHEAD_TTL))
}

/// What opening registry layers needs: the client, the chunk cache and the
/// layer options (from the caller's remote options).
#[derive(Clone)]
pub struct RemoteParts {
    pub registry: Registry,
    pub cache: Arc<ChunkCache>,
    pub layer_opts: LayerOptions,
}

/// Starts opening the layers `digests` of `reference` into [`mounts`] and
/// returns at once: one thread resolves the manifest (once for all of
/// them), then each reserved layer is opened on a thread of its own. Only
/// layers whose TOC the manifest anchors are opened (a claimed open is
/// always verified). Layers already held, or past the table's bound, are
/// skipped. Returns how many opens were started.
pub fn open_mounts_ahead(
    parts: RemoteParts,
    reference: Reference,
    platform: Option<Platform>,
    digests: &[String],
) -> usize {
    let key = reference.to_string();
    let reserved: Vec<(String, Reservation<OpenedLayer>)> = digests
        .iter()
        .filter_map(|d| mounts().reserve(&key, d).map(|r| (d.clone(), r)))
        .collect();
    let started = reserved.len();
    if started == 0 {
        return 0;
    }
    let spawned = std::thread::Builder::new()
        .name("open-ahead".into())
        .spawn(move || {
            let image = match parts
                .registry
                .resolve_manifest(&reference, platform.as_ref())
            {
                Ok(image) => Arc::new(image),
                Err(e) => {
                    log::debug!("{reference}: opening layers ahead: {e}");
                    return; // the reservations answer "failed" as they drop
                }
            };
            let opts = parts
                .layer_opts
                .clone()
                .cache(Some(parts.cache.clone()))
                .allow_unverified_toc(false);
            for (digest, reservation) in reserved {
                let layers = &image.manifest.layers;
                let Some(index) = layers.iter().position(|d| d.digest == digest) else {
                    log::debug!("{reference}: no layer {digest} to open ahead");
                    continue;
                };
                let d = &layers[index];
                if !d.has_toc_anchor() || !manifest::is_lazy_layer_type(&d.media_type) {
                    continue;
                }
                let (registry, image, opts) = (parts.registry.clone(), image.clone(), opts.clone());
                let _ = std::thread::Builder::new()
                    .name("open-ahead".into())
                    .spawn(move || {
                        let opened = open_layer(&registry, &image, index, &opts);
                        if let Err(e) = &opened {
                            log::debug!("layer {digest}: opening ahead: {e}");
                        }
                        reservation.finish(opened.map(|l| OpenedLayer {
                            description: format!(
                                "layer {index} ({}) of {}",
                                l.descriptor.digest, image.requested
                            ),
                            reader: l.reader,
                            blob: Some(l.blob),
                        }));
                    });
            }
            // The config names the command that is prefetched once every
            // layer is mounted; the layers open meanwhile.
            match parts.registry.fetch_config(&image) {
                Ok(config) => {
                    let mut with_config = Image::clone(&image);
                    with_config.config = Some(config);
                    image_mounts().image_known(&key, Arc::new(with_config));
                }
                Err(e) => log::debug!("{reference}: no config, so no command prefetch: {e}"),
            }
        });
    if spawned.is_err() {
        return 0;
    }
    started
}

impl Source {
    /// [`Source::open`], but a registry layer chosen by digest is first
    /// claimed from [`mounts`]; a claimed open whose TOC digest is not
    /// `expected` is not used (the layer is opened again, and checked).
    pub fn open_claiming(
        &self,
        parts: &RemoteParts,
        expected: Option<Digest>,
    ) -> Result<OpenedLayer> {
        if let Source::Remote {
            reference,
            layer: estargz_core::remote::LayerSelector::Digest(digest),
            ..
        } = self
        {
            if let Some(claimed) = mounts().claim(&reference.to_string(), digest) {
                let opened = claimed?;
                let toc = opened.reader.toc_digest();
                if expected.is_none_or(|e| e == toc) {
                    log::debug!("{}: opened ahead", opened.description);
                    return Ok(opened);
                }
                log::warn!(
                    "{}: opened ahead with TOC digest {toc}, {} expected; opening it again",
                    opened.description,
                    expected.map_or_else(String::new, |e| e.to_string())
                );
            }
        }
        self.open(parts.cache.clone(), &parts.registry, &parts.layer_opts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_takes_the_open_once_and_waits_for_it() {
        let t: Arc<OpenAhead<u32>> = Arc::new(OpenAhead::new(4, Duration::from_secs(30)));
        let r = t.reserve("img", "d1").expect("reserved");
        assert!(t.reserve("img", "d1").is_none(), "one open per key");
        assert_eq!(t.len(), 1);
        let finisher = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            r.finish(Ok(7));
        });
        let start = Instant::now();
        assert_eq!(
            t.claim("img", "d1").map(Result::unwrap),
            Some(7),
            "waited for the open"
        );
        assert!(start.elapsed() >= Duration::from_millis(40));
        finisher.join().unwrap();
        assert!(t.is_empty(), "claimed opens leave the table");
        assert!(
            t.claim("img", "d1").is_none(),
            "a second claim opens itself"
        );
        assert!(
            t.reserve_unclaimed("img", "d1").is_none(),
            "a claimed layer is not opened ahead again within the TTL"
        );
        assert!(t.reserve("img", "d1").is_some(), "unless asked explicitly");
        assert!(t.claim("img", "other").is_none());
    }

    #[test]
    fn failures_are_retried_by_the_claimer_but_timeouts_are_shared() {
        let t: OpenAhead<u32> = OpenAhead::new(4, Duration::from_secs(30));
        let reset = Error::Network("connection reset".into());
        t.reserve("img", "d1").unwrap().finish(Err(reset));
        assert!(t.claim("img", "d1").is_none(), "the claimer opens again");
        drop(t.reserve("img", "d2").unwrap());
        assert!(
            t.claim("img", "d2").is_none(),
            "no claimer waits for nothing"
        );
        let timeout = Error::Timeout("fetching the TOC".into());
        t.reserve("img", "d3").unwrap().finish(Err(timeout));
        assert!(
            matches!(t.claim("img", "d3"), Some(Err(Error::Timeout(_)))),
            "a timeout is not waited for twice"
        );
    }

    #[test]
    fn unclaimed_opens_expire_and_the_table_is_bounded() {
        let t: OpenAhead<u32> = OpenAhead::new(2, Duration::from_millis(50));
        t.reserve("img", "d1").unwrap().finish(Ok(1));
        t.reserve("img", "d2").unwrap().finish(Ok(2));
        assert!(t.reserve("img", "d3").is_none(), "bounded");
        std::thread::sleep(Duration::from_millis(80));
        t.expire();
        assert!(t.is_empty(), "unclaimed opens dropped after the TTL");
        assert!(
            t.claim("img", "d1").is_none(),
            "an expired open is not served"
        );
        assert!(t.reserve("img", "d3").is_some(), "room again");
        assert!(
            t.reserve_unclaimed("img", "d1").is_none(),
            "claimed just now"
        );
        std::thread::sleep(Duration::from_millis(80));
        assert!(
            t.reserve_unclaimed("img", "d1").is_some(),
            "a claim's mark expires with the TTL too"
        );
    }
}
