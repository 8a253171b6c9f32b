//! Where images are read from and written to: an OCI layout directory
//! (`oci:DIR[:tag]`) or a registry reference, behind one interface so the
//! converter does not care which.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::layout::OciLayout;
use crate::digest::Hasher;
use crate::error::{Error, Result};
use crate::remote::manifest::Descriptor;
use crate::remote::reference::is_valid_tag;
use crate::remote::{BlobOptions, Reference, Registry, Uploaded};
use crate::source::ReadAt;

/// Manifests, indexes and configs larger than this are refused.
pub const MAX_DOCUMENT_SIZE: u64 = 4 << 20;
/// Prefix that marks an OCI layout location.
pub const LAYOUT_PREFIX: &str = "oci:";
/// Tag used for a layout destination named without one.
pub const DEFAULT_TAG: &str = "latest";
/// Registry blobs are copied in ranges of this size (bounded memory).
const COPY_PIECE: u64 = 8 << 20;

/// An image location as the user writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// `oci:DIR[:tag]`.
    Layout {
        /// The layout directory.
        dir: PathBuf,
        /// The tag in its `index.json`, if one is named.
        tag: Option<String>,
    },
    /// `host[:port]/repo[:tag|@digest]`.
    Registry(Reference),
}

impl Location {
    /// Parses `oci:DIR[:tag]` or a registry reference.
    pub fn parse(s: &str) -> Result<Location> {
        let Some(rest) = s.strip_prefix(LAYOUT_PREFIX) else {
            return Ok(Location::Registry(Reference::parse(s)?));
        };
        // A tag is after the last ':' when no '/' follows it (DIR may hold ':').
        let (dir, tag) = match rest.rsplit_once(':') {
            Some((d, t)) if !t.contains('/') => (d, Some(t.to_string())),
            _ => (rest, None),
        };
        if dir.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "{s:?}: expected oci:DIR[:tag]"
            )));
        }
        if let Some(t) = tag.as_deref().filter(|t| !is_valid_tag(t)) {
            return Err(Error::InvalidArgument(format!("{s:?}: invalid tag {t:?}")));
        }
        Ok(Location::Layout {
            dir: PathBuf::from(dir),
            tag,
        })
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Layout { dir, tag: Some(t) } => write!(f, "oci:{}:{t}", dir.display()),
            Location::Layout { dir, tag: None } => write!(f, "oci:{}", dir.display()),
            Location::Registry(r) => write!(f, "{r}"),
        }
    }
}

/// Where an image is read from.
pub enum Source {
    /// An OCI image layout directory.
    Layout {
        /// The layout.
        layout: OciLayout,
        /// The tag to read (else the only image in `index.json`).
        tag: Option<String>,
    },
    /// A registry.
    Registry {
        /// The client.
        registry: Registry,
        /// The image's reference.
        reference: Reference,
    },
}

/// The root document of an image: body, media type, digest.
pub struct Root {
    /// The document's bytes, as stored.
    pub body: Vec<u8>,
    /// Its media type, when the store says.
    pub media_type: Option<String>,
    /// Its digest.
    pub digest: String,
}

impl Source {
    /// Opens `location` for reading (registries through `registry`).
    pub fn open(location: &Location, registry: &Registry) -> Result<Source> {
        Ok(match location {
            Location::Layout { dir, tag } => Source::Layout {
                layout: OciLayout::open(dir)?,
                tag: tag.clone(),
            },
            Location::Registry(r) => Source::Registry {
                registry: registry.clone(),
                reference: r.clone(),
            },
        })
    }

    /// The tagged manifest or index.
    pub fn root(&self) -> Result<Root> {
        match self {
            Source::Layout { layout, tag } => {
                let d = layout.find(tag.as_deref())?;
                let body = layout.read_blob(&d.digest, MAX_DOCUMENT_SIZE)?;
                Ok(Root {
                    body,
                    media_type: Some(d.media_type),
                    digest: d.digest,
                })
            }
            Source::Registry {
                registry,
                reference,
            } => {
                let (body, media_type, digest) = registry.fetch_manifest(reference)?;
                Ok(Root {
                    body,
                    media_type,
                    digest,
                })
            }
        }
    }

    /// A manifest, config or other small blob, digest-checked.
    pub fn document(&self, d: &Descriptor, is_manifest: bool) -> Result<Vec<u8>> {
        if d.size > MAX_DOCUMENT_SIZE {
            return Err(Error::LimitExceeded(format!(
                "{} is {} bytes, over the limit of {MAX_DOCUMENT_SIZE}",
                d.digest, d.size
            )));
        }
        match self {
            Source::Layout { layout, .. } => layout.read_blob(&d.digest, MAX_DOCUMENT_SIZE),
            Source::Registry {
                registry,
                reference,
            } if is_manifest => Ok(registry
                .fetch_manifest(&reference.with_manifest_ref(&d.digest))?
                .0),
            Source::Registry {
                registry,
                reference,
            } => registry.fetch_blob(reference, &d.digest, MAX_DOCUMENT_SIZE),
        }
    }

    /// Copies a (layer) blob to `out`, checking its size and digest.
    pub fn copy_blob(&self, d: &Descriptor, out: &mut dyn Write) -> Result<()> {
        match self {
            Source::Layout { layout, .. } => layout.copy_blob(d, out),
            Source::Registry {
                registry,
                reference,
            } => {
                let blob = registry.open_blob(reference, d, BlobOptions::default())?;
                let mut hasher = Hasher::new();
                let mut offset = 0;
                while offset < d.size {
                    let end = (offset + COPY_PIECE).min(d.size);
                    let piece = blob.fetch_ranges(std::slice::from_ref(&(offset..end)))?;
                    hasher.update(&piece[0]);
                    out.write_all(&piece[0])
                        .map_err(|e| Error::io("writing a temporary copy of a blob", e))?;
                    offset = end;
                }
                let actual = hasher.finish();
                if actual != d.digest {
                    return Err(Error::DigestMismatch {
                        what: format!("blob of {reference}"),
                        expected: d.digest.clone(),
                        actual,
                    });
                }
                debug_assert_eq!(blob.size(), d.size);
                Ok(())
            }
        }
    }

    /// The repository blobs can be mounted from (same-registry pushes).
    pub fn mount_source(&self) -> Option<&Reference> {
        match self {
            Source::Registry { reference, .. } => Some(reference),
            Source::Layout { .. } => None,
        }
    }
}

/// Where an image is written to.
pub enum Target {
    /// An OCI image layout directory (created if missing).
    Layout {
        /// The layout.
        layout: OciLayout,
        /// The tag the image is written under.
        tag: String,
    },
    /// A registry.
    Registry {
        /// The client.
        registry: Registry,
        /// Where the image is pushed.
        reference: Reference,
        /// Bytes per PATCH of a chunked blob upload.
        upload_chunk: u64,
    },
}

impl Target {
    /// Opens (creating a layout if needed) a destination; `upload_chunk`
    /// is the PATCH size for registry uploads (0 = default).
    pub fn open(location: &Location, registry: &Registry, upload_chunk: u64) -> Result<Target> {
        Ok(match location {
            Location::Layout { dir, tag } => Target::Layout {
                layout: OciLayout::create(dir)?,
                tag: tag.clone().unwrap_or_else(|| DEFAULT_TAG.to_string()),
            },
            Location::Registry(r) => {
                if r.digest.is_some() {
                    return Err(Error::InvalidArgument(format!(
                        "destination {r}: name it by tag (a converted image has a new digest)"
                    )));
                }
                Target::Registry {
                    registry: registry.clone(),
                    reference: r.clone(),
                    upload_chunk,
                }
            }
        })
    }

    /// The tag the image is written under.
    pub fn tag(&self) -> &str {
        match self {
            Target::Layout { tag, .. } => tag,
            Target::Registry { reference, .. } => reference.tag.as_deref().unwrap_or(DEFAULT_TAG),
        }
    }

    /// Stores a blob file whose digest and size the caller computed.
    pub fn put_blob_file(
        &self,
        digest: &str,
        size: u64,
        path: &Path,
        mount_from: Option<&Reference>,
    ) -> Result<Uploaded> {
        match self {
            Target::Layout { layout, .. } => {
                if layout.has_blob(digest)? {
                    return Ok(Uploaded::Existed);
                }
                layout.write_blob_file(digest, path)?;
                Ok(Uploaded::Monolithic)
            }
            Target::Registry {
                registry,
                reference,
                upload_chunk,
            } => {
                registry.upload_blob_file(reference, digest, size, path, mount_from, *upload_chunk)
            }
        }
    }

    /// Stores a small blob; returns its digest.
    pub fn put_blob_bytes(&self, data: &[u8]) -> Result<String> {
        match self {
            Target::Layout { layout, .. } => layout.write_blob(data),
            Target::Registry {
                registry,
                reference,
                ..
            } => registry.push_blob_bytes(reference, data),
        }
    }

    /// Stores a manifest or index, under `tag` or (None) only by digest.
    pub fn put_manifest(
        &self,
        media_type: &str,
        body: &[u8],
        tag: Option<&str>,
    ) -> Result<Descriptor> {
        let d = Descriptor {
            media_type: media_type.to_string(),
            digest: crate::digest::sha256_digest(body),
            size: body.len() as u64,
            annotations: Default::default(),
            platform: None,
        };
        match self {
            Target::Layout { layout, .. } => {
                layout.write_blob(body)?;
                if let Some(t) = tag {
                    layout.tag(t, &d)?;
                }
            }
            Target::Registry {
                registry,
                reference,
                ..
            } => {
                let at = reference.with_manifest_ref(tag.unwrap_or(&d.digest));
                registry.push_manifest(&at, media_type, body)?;
            }
        }
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        assert_eq!(
            Location::parse("oci:/tmp/a:b/img:v1").unwrap(),
            Location::Layout {
                dir: "/tmp/a:b/img".into(),
                tag: Some("v1".into())
            }
        );
        assert_eq!(
            Location::parse("oci:rel/dir").unwrap(),
            Location::Layout {
                dir: "rel/dir".into(),
                tag: None
            }
        );
        assert!(Location::parse("oci:").is_err());
        assert!(Location::parse("oci:d:bad tag").is_err());
        assert!(matches!(
            Location::parse("127.0.0.1:5000/a:v1").unwrap(),
            Location::Registry(_)
        ));
        assert_eq!(
            Location::parse("docker://127.0.0.1:5000/a:v1").unwrap(),
            Location::parse("127.0.0.1:5000/a:v1").unwrap()
        );
    }
}
