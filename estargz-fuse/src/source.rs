//! What a mount serves: a local blob file, or one layer of a registry image
//! read lazily. Either way the result is a verifying [`Reader`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use estargz_core::cache::ChunkCache;
use estargz_core::remote::manifest::Platform;
use estargz_core::remote::{
    names_registry, open_layer, LayerOptions, LayerSelector, Reference, Registry, RemoteBlob,
    DOCKER_TRANSPORT,
};
use estargz_core::{Error, FileSource, OpenOptions, Reader, Result};

/// Whether a mount's SOURCE names a registry image rather than a blob file:
/// `docker://REF` always does; a bare `HOST/REPO...` does when no such file
/// exists, so an existing file is never mistaken for an image.
pub fn is_registry_source(source: &str) -> bool {
    is_registry_source_in(source, Path::new("."))
}

/// [`is_registry_source`] with relative paths taken from `base`.
fn is_registry_source_in(source: &str, base: &Path) -> bool {
    source.starts_with(DOCKER_TRANSPORT) || (names_registry(source) && !base.join(source).exists())
}

pub enum Source {
    Local {
        path: PathBuf,
        /// The file with the external TOC data (the TOC gzip member) of a
        /// blob built with an external TOC.
        external_toc_data: Option<PathBuf>,
        /// Expected TOC digest (the layer's toc.digest annotation).
        expected_toc_digest: Option<estargz_core::Digest>,
    },
    Remote {
        reference: Reference,
        layer: LayerSelector,
        platform: Option<Platform>,
    },
}

#[derive(Clone)]
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
                external_toc_data,
                expected_toc_digest,
            } => {
                let file = FileSource::open(path)
                    .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
                let external_toc = external_toc_data
                    .as_ref()
                    .map(|p| {
                        std::fs::read(p)
                            .map_err(|e| Error::io(format!("reading {}", p.display()), e))
                    })
                    .transpose()?;
                let opts = OpenOptions::default()
                    .external_toc_data(external_toc)
                    .expected_toc_digest(*expected_toc_digest)
                    .cache(Some(cache));
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
                let image = registry.resolve_manifest(reference, platform.as_ref())?;
                let index = layer.resolve(&image.manifest.layers, &reference.to_string())?;
                let opts = layer_opts.clone().cache(Some(cache));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_sources_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let here = |s: &str| is_registry_source_in(s, dir.path());
        // A file whose name also reads as a reference stays a file...
        std::fs::create_dir(dir.path().join("127.0.0.1:5000")).unwrap();
        std::fs::write(dir.path().join("127.0.0.1:5000/blob"), b"").unwrap();
        assert!(!here("127.0.0.1:5000/blob"));
        // ...unless written with docker://, and others are references.
        assert!(here("docker://127.0.0.1:5000/blob"));
        for r in [
            "127.0.0.1:5000/other",
            "docker://alpine",
            "localhost/app@sha256:00",
        ] {
            assert!(here(r), "{r:?}");
        }
        for f in ["blob.esgz", "alpine", "./x/y", "/no/such/file", "dir/blob"] {
            assert!(!here(f), "{f:?}");
        }
        assert!(!is_registry_source("/no/such/file"));
        assert!(is_registry_source("docker://alpine"));
    }
}
