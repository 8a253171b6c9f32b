//! From (image reference, digest) to an open layer: the image (manifest +
//! config) from a bounded cache with expiry, the manifest layer matching
//! the digest under either keying scheme, and the layer opened and
//! verified. Failures are returned, never remembered.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use estargz_core::cache::ChunkCache;
use estargz_core::remote::manifest::{self, UNCOMPRESSED_SIZE_ANNOTATION};
use estargz_core::remote::{open_layer, Image, LayerOptions, Reference, Registry};
use estargz_core::{Error, ReadAt, Reader, Result};

use super::info::{self, Keying};
use crate::ahead::{OpenAhead, MAX_AHEAD};
use crate::layerfs::LayerFs;
use estargz_core::flight::Flight;

/// Unannotated layers opened at once when searching by TOC digest.
const SEARCH_PARALLELISM: usize = 8;

/// Where images and layers come from (the registry; tests use memory).
pub trait ImageSource: Send + Sync {
    /// The platform manifest of `reference` (its config may be left out).
    fn manifest(&self, reference: &Reference) -> Result<Image>;
    /// The config of `image`, digest-checked.
    fn config(&self, image: &Image) -> Result<Vec<u8>>;
    /// Layer `index` of `image`: its reader (TOC checked against the
    /// layer's annotation when `verify_toc`) and its raw blob.
    fn layer(&self, image: &Image, index: usize, verify_toc: bool) -> Result<OpenedLayer>;
}

#[derive(Clone)]
pub struct OpenedLayer {
    pub reader: Arc<Reader>,
    pub blob: Arc<dyn ReadAt>,
}

/// The registry as an [`ImageSource`], all layers sharing one chunk cache.
pub struct RegistrySource {
    /// Replaced when the store reloads its registry settings: images and
    /// layers fetched afterwards use the new one, layers already open keep
    /// the client they were opened with.
    registry: RwLock<Registry>,
    cache: Arc<ChunkCache>,
    /// Where each layer keeps its fetched compressed bytes (the cache dir).
    span_dir: Option<PathBuf>,
}

impl RegistrySource {
    pub fn new(registry: Registry, cache: Arc<ChunkCache>, span_dir: Option<PathBuf>) -> Self {
        RegistrySource {
            registry: RwLock::new(registry),
            cache,
            span_dir,
        }
    }

    /// Uses `registry` for what is fetched from now on.
    pub fn set_registry(&self, registry: Registry) {
        *self.registry.write().unwrap_or_else(|p| p.into_inner()) = registry;
    }

    fn registry(&self) -> Registry {
        self.registry
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl ImageSource for RegistrySource {
    fn manifest(&self, reference: &Reference) -> Result<Image> {
        self.registry().resolve_manifest(reference, None)
    }

    fn config(&self, image: &Image) -> Result<Vec<u8>> {
        self.registry().fetch_config(image)
    }

    fn layer(&self, image: &Image, index: usize, verify_toc: bool) -> Result<OpenedLayer> {
        let opts = LayerOptions::default()
            .cache(Some(self.cache.clone()))
            .allow_unverified_toc(!verify_toc)
            .span_dir(self.span_dir.clone());
        let l = open_layer(&self.registry(), image, index, &opts)?;
        // `blob` reads share the bytes file reads fetched, and the other
        // way round; sequential reads grow the read-ahead window.
        Ok(OpenedLayer {
            reader: l.reader,
            blob: l.spans,
        })
    }
}

/// A layer ready to be served.
pub struct ResolvedLayer {
    /// The image it was found in, and its place in the manifest.
    pub image: Arc<Image>,
    pub index: usize,
    pub fs: LayerFs,
    pub blob: Arc<dyn ReadAt>,
    pub info: Vec<u8>,
    pub keying: Keying,
}

/// How the store keeps fetched images.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ResolverOptions {
    /// How long a fetched manifest + config is reused.
    pub image_ttl: Duration,
    /// Most images kept.
    pub max_images: usize,
    /// When a layer is asked for, the next this many annotated layers of
    /// its image are opened too, in parallel: runtimes ask for an image's
    /// layers one after the other, so each would otherwise wait for its
    /// own manifest-to-TOC round trips (0: off).
    pub open_ahead: usize,
    /// How long a layer opened ahead waits to be asked for.
    pub open_ahead_ttl: Duration,
}

impl Default for ResolverOptions {
    fn default() -> Self {
        ResolverOptions {
            image_ttl: Duration::from_secs(120),
            max_images: 64,
            open_ahead: 4,
            open_ahead_ttl: Duration::from_secs(30),
        }
    }
}

estargz_core::option_setters!(ResolverOptions {
    image_ttl: Duration,
    max_images: usize,
    open_ahead: usize,
    open_ahead_ttl: Duration,
});

/// One reference's image: fetched, being fetched (later lookups of the
/// same image wait for that fetch and share its answer, error included), or
/// neither.
enum ImageState {
    Empty,
    Fetching(Arc<Flight<ImageAnswer>>),
    Ready(Instant, Arc<Image>),
}

type ImageAnswer = std::result::Result<Arc<Image>, Arc<Error>>;

struct ImageCell {
    state: Mutex<ImageState>,
}

impl Default for ImageCell {
    fn default() -> Self {
        ImageCell {
            state: Mutex::new(ImageState::Empty),
        }
    }
}

pub struct Resolver {
    source: Arc<dyn ImageSource>,
    opts: ResolverOptions,
    images: Mutex<HashMap<String, (Instant, Arc<ImageCell>)>>,
    /// Layers being opened or opened ahead of being asked for; taken out
    /// by the first request.
    ahead: OpenAhead<OpenedLayer>,
}

impl Resolver {
    pub fn new(source: Arc<dyn ImageSource>, opts: ResolverOptions) -> Resolver {
        Resolver {
            source,
            images: Mutex::new(HashMap::new()),
            ahead: OpenAhead::new(MAX_AHEAD, opts.open_ahead_ttl),
            opts,
        }
    }

    /// Layers opened ahead and not asked for yet (for tests and logs).
    pub fn opened_ahead(&self) -> usize {
        self.ahead.len()
    }

    /// Starts opening the other annotated layers of `image`, up to
    /// [`ResolverOptions::open_ahead`] of them, each on a thread of its
    /// own: the ones after `index` first, then the ones before it, nearest
    /// first (Podman asks for the top layer first as often as for the
    /// bottom one). After a failure the request opens the layer again (a
    /// timeout is returned instead, see [`OpenAhead::claim`]).
    fn open_ahead(&self, image: &Arc<Image>, index: usize) {
        let layers = &image.manifest.layers;
        let others = (index + 1..layers.len()).chain((0..index).rev());
        for next in others.take(self.opts.open_ahead) {
            self.open_in_background(image, next);
        }
    }

    /// Opens annotated layer `index` of `image` on a thread of its own into
    /// the table of layers opened ahead, unless it is there already.
    fn open_in_background(&self, image: &Arc<Image>, index: usize) {
        let d = &image.manifest.layers[index];
        if !d.has_toc_anchor() || !manifest::is_lazy_layer_type(&d.media_type) {
            return;
        }
        let key = image.requested.to_string();
        let Some(reservation) = self.ahead.reserve_unclaimed(&key, &d.digest) else {
            return;
        };
        let (source, img) = (self.source.clone(), image.clone());
        let spawned = std::thread::Builder::new()
            .name("open-ahead".into())
            .spawn(move || {
                // A panic drops the reservation, which answers "failed".
                let opened = source.layer(&img, index, true);
                if let Err(e) = &opened {
                    log::debug!(
                        "layer {index} of {}: opening ahead failed: {e}",
                        img.requested
                    );
                }
                reservation.finish(opened);
            });
        if spawned.is_ok() {
            log::debug!("layer {index} of {}: opening ahead", image.requested);
        }
    }

    /// Starts opening layer `digest` (either keying) of `image`, and the
    /// layers opened ahead with it, while the image's config is fetched:
    /// [`Resolver::open`] claims it afterwards.
    fn open_early(&self, image: &Arc<Image>, digest: &str) {
        let index = match named(image, digest) {
            Some(Named::LayerDigest(i) | Named::TocDigest(i)) => i,
            None => return,
        };
        self.open_ahead(image, index);
        self.open_in_background(image, index);
    }

    /// Layer `index` of `image`, verified: the one opened ahead if there is
    /// one (waiting for it if it is still being opened), else opened now.
    fn open(&self, image: &Arc<Image>, index: usize) -> Result<OpenedLayer> {
        let digest = &image.manifest.layers[index].digest;
        if let Some(claimed) = self.ahead.claim(&image.requested.to_string(), digest) {
            return claimed;
        }
        self.source.layer(image, index, true)
    }

    /// Images currently cached (for tests and logs).
    pub fn cached_images(&self) -> usize {
        self.images.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn cell(&self, key: &str, now: Instant) -> Arc<ImageCell> {
        let mut images = self.images.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((used, cell)) = images.get_mut(key) {
            *used = now;
            return cell.clone();
        }
        while images.len() >= self.opts.max_images.max(1) {
            // Least recently used goes first.
            let Some(oldest) = images
                .iter()
                .min_by_key(|(_, (used, _))| *used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            images.remove(&oldest);
        }
        let cell = Arc::new(ImageCell::default());
        images.insert(key.to_string(), (now, cell.clone()));
        cell
    }

    /// The image of `reference` (manifest and config), fetched at most
    /// once per TTL. Concurrent callers share one fetch; no lock is held
    /// while it runs, so other images are never held up by this one.
    pub fn image(&self, reference: &Reference) -> Result<Arc<Image>> {
        self.image_then(reference, |_| {})
    }

    /// [`Resolver::image`]; when this call fetches the image, `on_manifest`
    /// runs with the manifest while the config is fetched (to start
    /// opening layers, which do not need the config, a round trip sooner).
    fn image_then(
        &self,
        reference: &Reference,
        on_manifest: impl FnOnce(&Arc<Image>),
    ) -> Result<Arc<Image>> {
        let key = reference.to_string();
        let cell = self.cell(&key, Instant::now());
        let flight = {
            let mut state = lock(&cell.state);
            match &*state {
                ImageState::Ready(at, image) if at.elapsed() < self.opts.image_ttl => {
                    return Ok(image.clone())
                }
                ImageState::Fetching(f) => Some(f.clone()),
                ImageState::Ready(..) | ImageState::Empty => {
                    *state = ImageState::Fetching(Arc::new(Flight::new()));
                    None
                }
            }
        };
        if let Some(f) = flight {
            // The fetch is bounded by the registry client's timeouts.
            return match f.wait(Duration::MAX) {
                Some(Ok(image)) => Ok(image),
                Some(Err(e)) => Err(Error::clone(&e)),
                None => Err(Error::Timeout(format!("fetching {reference}"))),
            };
        }
        let fetched = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut image = self.source.manifest(reference)?;
            on_manifest(&Arc::new(image.clone()));
            image.config = Some(self.source.config(&image)?);
            Ok(image)
        }))
        .unwrap_or_else(|_| Err(Error::Registry(format!("fetching {reference} panicked"))));
        let answer: ImageAnswer = fetched.map(Arc::new).map_err(Arc::new);
        let mut state = lock(&cell.state);
        let ImageState::Fetching(f) = std::mem::replace(
            &mut *state,
            match &answer {
                Ok(image) => ImageState::Ready(Instant::now(), image.clone()),
                // Failures are not remembered: the next lookup fetches again.
                Err(_) => ImageState::Empty,
            },
        ) else {
            unreachable!("only the fetching caller leaves the Fetching state");
        };
        drop(state);
        f.finish(answer.clone());
        answer.map_err(|e| Error::clone(&e))
    }

    /// Drops cached images older than the TTL, and layers opened ahead that
    /// nobody asked for in time.
    pub fn expire(&self) {
        self.ahead.expire();
        let mut images = lock(&self.images);
        images.retain(|_, (_, cell)| match &*lock(&cell.state) {
            // Being fetched right now: keep.
            ImageState::Fetching(_) => true,
            ImageState::Ready(at, _) => at.elapsed() < self.opts.image_ttl,
            ImageState::Empty => false,
        });
    }

    /// The layer of `reference` named `digest`: a manifest layer digest
    /// (v1 keying) or a TOC digest (v2 keying).
    pub fn layer(&self, reference: &Reference, digest: &str) -> Result<ResolvedLayer> {
        let image = self.image_then(reference, |manifest_only| {
            self.open_early(manifest_only, digest)
        })?;
        let what = format!("layer {digest} of {reference}");
        let index = match named(&image, digest) {
            Some(Named::LayerDigest(index)) => index,
            Some(Named::TocDigest(index)) => {
                self.open_ahead(&image, index);
                let opened = self.open(&image, index)?;
                let keying = Keying::TocDigest {
                    toc_digest: digest.to_string(),
                    diff_id: diff_id(&image, index)?,
                };
                return Ok(ready(&image, index, opened, keying));
            }
            None => return self.search_unannotated(&image, digest, &what),
        };
        let desc = &image.manifest.layers[index];
        if !desc.has_toc_anchor() {
            // Without the annotation the TOC is not anchored to the
            // manifest; the runtime pulls such layers itself.
            return Err(Error::NotFound(format!(
                "{what}: no {} annotation, so it is not served lazily",
                manifest::TOC_DIGEST_ANNOTATION
            )));
        }
        self.open_ahead(&image, index);
        let opened = self.open(&image, index)?;
        let diff_id = diff_id(&image, index)?;
        let diff_size = match desc.annotations.get(UNCOMPRESSED_SIZE_ANNOTATION) {
            Some(v) => v.parse::<u64>().map_err(|_| {
                Error::Registry(format!(
                    "{what}: annotation {UNCOMPRESSED_SIZE_ANNOTATION}={v:?} is not a size"
                ))
            })?,
            // zstd:chunked v2 layers carry no size annotation (neither
            // containers/storage nor we write one), but their tar-split
            // says the size; only other layers need the whole blob.
            None => match opened.reader.tar_split_tar_size()? {
                Some(size) => size,
                None => {
                    log::warn!(
                        "{what}: no {UNCOMPRESSED_SIZE_ANNOTATION} annotation; reading the whole blob to measure it"
                    );
                    info::measure_diff(
                        opened.blob.as_ref(),
                        &diff_id,
                        opened.reader.format().is_zstd(),
                    )?
                }
            },
        };
        let keying = Keying::LayerDigest {
            compressed_digest: desc.digest.clone(),
            compressed_size: desc.size,
            diff_id,
            diff_size,
        };
        Ok(ready(&image, index, opened, keying))
    }

    /// Layers without a TOC annotation can still match by their computed
    /// TOC digest (which the path then anchors); they are opened
    /// [`SEARCH_PARALLELISM`] at a time and compared, so a manifest with
    /// many layers costs bounded threads and connections.
    fn search_unannotated(
        &self,
        image: &Arc<Image>,
        digest: &str,
        what: &str,
    ) -> Result<ResolvedLayer> {
        let candidates: Vec<usize> = image
            .manifest
            .layers
            .iter()
            .enumerate()
            .filter(|(_, d)| !d.has_toc_anchor() && manifest::is_lazy_layer_type(&d.media_type))
            .map(|(i, _)| i)
            .collect();
        let mut transient = None;
        for batch in candidates.chunks(SEARCH_PARALLELISM) {
            let results: Vec<(usize, Result<OpenedLayer>)> = std::thread::scope(|s| {
                let handles: Vec<_> = batch
                    .iter()
                    .map(|&i| (i, s.spawn(move || self.source.layer(image, i, false))))
                    .collect();
                handles
                    .into_iter()
                    .map(|(i, h)| {
                        let r = h.join().unwrap_or_else(|_| {
                            Err(Error::InvalidArgument("layer open panicked".into()))
                        });
                        (i, r)
                    })
                    .collect()
            });
            for (index, result) in results {
                match result {
                    Ok(opened) if opened.reader.toc_digest().to_string() == digest => {
                        let keying = Keying::TocDigest {
                            toc_digest: digest.to_string(),
                            diff_id: diff_id(image, index)?,
                        };
                        return Ok(ready(image, index, opened, keying));
                    }
                    Ok(_) => {}
                    // A layer we could not read might have been the one.
                    Err(e @ (Error::Network(_) | Error::Timeout(_) | Error::Registry(_))) => {
                        transient.get_or_insert(e);
                    }
                    Err(e) => log::debug!("{what}: layer {index} is not eStargz: {e}"),
                }
            }
        }
        Err(transient.unwrap_or_else(|| {
            Error::NotFound(format!("{what}: no layer has this digest or TOC digest"))
        }))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn ready(image: &Arc<Image>, index: usize, opened: OpenedLayer, keying: Keying) -> ResolvedLayer {
    ResolvedLayer {
        image: image.clone(),
        index,
        info: info::info_json(&keying, opened.reader.format().is_zstd()),
        fs: LayerFs::new(opened.reader),
        blob: opened.blob,
        keying,
    }
}

/// How a store path names a layer of an image.
enum Named {
    /// By its manifest digest (the layer-digest keying).
    LayerDigest(usize),
    /// By its TOC digest annotation (the TOC-digest keying).
    TocDigest(usize),
}

/// Which layer of `image` `digest` names, a manifest digest first.
fn named(image: &Image, digest: &str) -> Option<Named> {
    let layers = &image.manifest.layers;
    match layers.iter().position(|d| d.digest == digest) {
        Some(i) => Some(Named::LayerDigest(i)),
        None => layers
            .iter()
            .position(|d| d.toc_digest() == Some(digest))
            .map(Named::TocDigest),
    }
}

/// `rootfs.diff_ids[index]` of the image config.
fn diff_id(image: &Image, index: usize) -> Result<String> {
    let config = image.config.as_deref().unwrap_or_default();
    let config: serde_json::Value = serde_json::from_slice(config)
        .map_err(|e| Error::Registry(format!("config of {}: {e}", image.reference)))?;
    config["rootfs"]["diff_ids"][index]
        .as_str()
        .filter(|d| estargz_core::digest::is_sha256_digest(d))
        .map(str::to_string)
        .ok_or_else(|| {
            Error::Registry(format!(
                "config of {} has no sha256 diff_id for layer {index}",
                image.reference
            ))
        })
}
