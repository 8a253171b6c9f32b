//! What a mount serves: a local blob file, or one layer of a registry image
//! read lazily. Either way the result is a verifying [`Reader`].

use std::path::PathBuf;
use std::sync::Arc;

use estargz_core::cache::ChunkCache;
use estargz_core::remote::manifest::Platform;
use estargz_core::remote::{open_layer, LayerOptions, Reference, Registry, RemoteBlob};
use estargz_core::{Error, FileSource, OpenOptions, Reader, Result};

/// Registry sources are written `docker://REF`, as skopeo and podman do;
/// anything else is a path.
pub const REGISTRY_PREFIX: &str = "docker://";

pub enum Source {
    Local {
        path: PathBuf,
        /// The TOC gzip member of a blob built with an external TOC.
        external_toc: Option<PathBuf>,
        /// Expected TOC digest (the layer's toc.digest annotation).
        toc_digest: Option<String>,
    },
    Remote {
        reference: Reference,
        /// Layer index (0 = bottom) or layer digest; `None` = the only layer.
        layer: Option<String>,
        platform: Option<Platform>,
    },
}

pub struct OpenedLayer {
    pub reader: Arc<Reader>,
    /// Human-readable origin for logs.
    pub description: String,
    /// The registry blob, for fetch statistics.
    pub blob: Option<Arc<RemoteBlob>>,
}

impl Source {
    pub fn open(
        &self,
        cache: Arc<ChunkCache>,
        registry: &Registry,
        layer_opts: &LayerOptions,
    ) -> Result<OpenedLayer> {
        match self {
            Source::Local {
                path,
                external_toc,
                toc_digest,
            } => {
                let file = FileSource::open(path)
                    .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
                let external_toc = external_toc
                    .as_ref()
                    .map(|p| {
                        std::fs::read(p)
                            .map_err(|e| Error::io(format!("reading {}", p.display()), e))
                    })
                    .transpose()?;
                let opts = OpenOptions {
                    external_toc,
                    expected_toc_digest: toc_digest.clone(),
                    cache: Some(cache),
                    ..Default::default()
                };
                let reader = Reader::open(Arc::new(file), &opts)
                    .map_err(|e| e.with_context(&path.display().to_string()))?;
                Ok(OpenedLayer {
                    reader: Arc::new(reader),
                    description: path.display().to_string(),
                    blob: None,
                })
            }
            Source::Remote {
                reference,
                layer,
                platform,
            } => {
                let image = registry.resolve_image(reference, platform.as_ref())?;
                let layers = &image.manifest.layers;
                let index = match layer.as_deref() {
                    None if layers.len() == 1 => 0,
                    None => {
                        return Err(Error::InvalidArgument(format!(
                        "{reference} has {} layers: choose one with --layer N or --layer DIGEST",
                        layers.len()
                    )))
                    }
                    Some(sel) if sel.starts_with("sha256:") => layers
                        .iter()
                        .position(|d| d.digest == sel)
                        .ok_or_else(|| Error::NotFound(format!("layer {sel} in {reference}")))?,
                    Some(sel) => sel.parse().map_err(|_| {
                        Error::InvalidArgument(format!(
                            "--layer {sel:?}: expected a layer index or a sha256: digest"
                        ))
                    })?,
                };
                let opts = LayerOptions {
                    cache: Some(cache),
                    ..layer_opts.clone()
                };
                let layer = open_layer(registry, &image, index, &opts)?;
                Ok(OpenedLayer {
                    description: format!(
                        "layer {index} ({}) of {reference}",
                        layer.descriptor.digest
                    ),
                    reader: layer.reader,
                    blob: Some(layer.blob),
                })
            }
        }
    }
}
