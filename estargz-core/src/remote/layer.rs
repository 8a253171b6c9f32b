//! Opening one layer of an image lazily: the blob source, the reader with
//! the TOC digest from the manifest, and the prefetch the layer asks for.

use std::path::PathBuf;
use std::sync::Arc;

use super::blob::{BlobOptions, RemoteBlob};
use super::manifest::{self, Descriptor};
use super::registry::{Image, Registry};
use crate::cache::ChunkCache;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::footer::Footer;
use crate::reader::{OpenOptions, Reader};
use crate::source::ReadAt;
use crate::span_cache::{SpanCache, SpanCacheOptions};

/// Whether the blob ends with the external-TOC footer.
fn has_external_toc(blob: &dyn ReadAt) -> bool {
    let size = blob.size();
    let len = Footer::ExternalToc.size() as u64;
    if size < len {
        return false;
    }
    let mut tail = vec![0u8; len as usize];
    blob.read_exact_at(&mut tail, size - len).is_ok()
        && matches!(Footer::parse(&tail, size), Ok(Footer::ExternalToc))
}

/// A digest annotation of a layer, parsed.
fn parse_annotation_digest(d: &str, key: &str, what: &str) -> Result<Digest> {
    d.parse::<Digest>().map_err(|_| {
        Error::Registry(format!(
            "{what}: annotation {key}={d:?} is not sha256:<64 lowercase hex>"
        ))
    })
}

/// How a registry layer is opened and read.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct LayerOptions {
    /// Range requests: concurrency, timeouts, single-range mode.
    pub blob: BlobOptions,
    /// Verified chunks shared with other readers (default: a small one per layer).
    pub cache: Option<Arc<ChunkCache>>,
    /// Open layers whose descriptor has no TOC digest annotation. Off by
    /// default: without it the TOC (and so every chunk digest) is not
    /// anchored to the manifest; stargz-snapshotter refuses them too.
    pub allow_unverified_toc: bool,
    /// Read-ahead and request merging of the layer's compressed bytes.
    pub spans: SpanCacheOptions,
    /// Where the layer's fetched compressed bytes are kept (an unlinked
    /// file, at most the blob's size); default: the temporary directory.
    pub span_dir: Option<PathBuf>,
}

crate::options::option_setters!(LayerOptions {
    blob: BlobOptions,
    cache: Option<Arc<ChunkCache>>,
    allow_unverified_toc: bool,
    spans: SpanCacheOptions,
    span_dir: Option<PathBuf>,
});

/// A lazily read layer.
pub struct RemoteLayer {
    /// Position of the layer in the manifest (0 = base).
    pub index: usize,
    /// The layer's descriptor from the manifest.
    pub descriptor: Descriptor,
    /// The blob on the registry (counts requests and bytes).
    pub blob: Arc<RemoteBlob>,
    /// The blob's bytes as the reader sees them: fetched once, kept, read
    /// ahead. Raw blob reads (e.g. `podman save`) should go through it too,
    /// so they reuse what file reads fetched.
    pub spans: Arc<SpanCache>,
    /// The open layer: TOC checked against the annotation, chunks verified as read.
    pub reader: Arc<Reader>,
    /// The TOC gzip member from the TOC image, for external-TOC layers.
    pub external_toc_data: Option<Vec<u8>>,
}

/// Opens layer `index` of `image` (footer + TOC: two range requests).
pub fn open_layer(
    registry: &Registry,
    image: &Image,
    index: usize,
    opts: &LayerOptions,
) -> Result<RemoteLayer> {
    let opened = open(registry, image, index, opts);
    crate::metrics::global().layer_opened(opened.is_ok());
    opened
}

fn open(
    registry: &Registry,
    image: &Image,
    index: usize,
    opts: &LayerOptions,
) -> Result<RemoteLayer> {
    let layers = &image.manifest.layers;
    let descriptor = layers
        .get(index)
        .ok_or_else(|| {
            Error::NotFound(format!(
                "layer {index} of {} (it has {} layers)",
                image.reference,
                layers.len()
            ))
        })?
        .clone();
    let what = format!(
        "layer {index} ({}) of {}",
        descriptor.digest, image.reference
    );
    if !manifest::is_lazy_layer_type(&descriptor.media_type) {
        return Err(Error::Unsupported(format!(
            "{what}: media type {} is neither gzip nor zstd, so it cannot be eStargz or zstd:chunked",
            descriptor.media_type
        )));
    }
    let toc_digest = descriptor
        .checked_toc_digest()
        .map_err(|e| e.with_context(&what))?
        .map(|d| parse_annotation_digest(d, manifest::TOC_DIGEST_ANNOTATION, &what))
        .transpose()?;
    let manifest_checksum = descriptor
        .zstd_manifest_checksum()
        .map(|d| parse_annotation_digest(d, "zstd-chunked.manifest-checksum", &what))
        .transpose()?;
    if toc_digest.is_none() && manifest_checksum.is_none() && !opts.allow_unverified_toc {
        return Err(Error::InvalidArgument(format!(
            "{what}: no {} (or {}, or zstd:chunked manifest-checksum) annotation, so its TOC cannot be verified (allow unverified TOCs to read it anyway)",
            manifest::TOC_DIGEST_ANNOTATION,
            manifest::OCI_TOC_DIGEST_ANNOTATION
        )));
    }
    // zstd:chunked layers say where their TOC is: no footer request.
    let position = if descriptor.media_type == manifest::OCI_LAYER_ZSTD {
        descriptor
            .zstd_chunked_position()
            .map_err(|e| e.with_context(&what))?
    } else {
        None
    };
    let blob = Arc::new(registry.open_blob(&image.reference, &descriptor, opts.blob.clone())?);
    let spans = Arc::new(
        SpanCache::new(blob.clone(), opts.span_dir.as_deref(), opts.spans.clone()).map_err(
            |e| {
                Error::io(
                    format!("{what}: creating the file for its fetched bytes"),
                    e,
                )
            },
        )?,
    );
    let open = OpenOptions {
        expected_toc_digest: toc_digest,
        expected_manifest_checksum: manifest_checksum,
        zstd_chunked_position: position,
        cache: opts.cache.clone(),
        ..Default::default()
    };
    let mut external_toc = None;
    let reader = match Reader::open(spans.clone(), &open) {
        Ok(r) => r,
        // Only a failed open pays for finding out whether the TOC is
        // external, so normal layers still open in two requests.
        Err(e) if has_external_toc(&*spans) => {
            let toc = super::toc_image::fetch_external_toc(
                registry,
                &image.requested,
                &descriptor.digest,
                open.max_toc_size,
            )
            .map_err(|e2| e2.with_context(&format!("{what} ({e})")))?;
            let open = OpenOptions {
                external_toc_data: Some(toc),
                ..open
            };
            let r = Reader::open(spans.clone(), &open).map_err(|e| e.with_context(&what))?;
            external_toc = open.external_toc_data;
            r
        }
        Err(Error::InvalidFooter(m)) => {
            return Err(Error::InvalidFooter(format!(
                "{what} is not eStargz or zstd:chunked: {m}"
            )))
        }
        Err(e) => return Err(e.with_context(&what)),
    };
    Ok(RemoteLayer {
        index,
        descriptor,
        blob,
        spans,
        reader: Arc::new(reader),
        external_toc_data: external_toc,
    })
}
