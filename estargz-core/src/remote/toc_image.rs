//! Finding the TOC of an external-TOC layer (spec §6.2): it is a layer of
//! the TOC image `<tag>-esgztoc`, picked by its `layer.digest` annotation.

use super::manifest::{self, Document, Platform, LAYER_DIGEST_ANNOTATION};
use super::reference::Reference;
use super::registry::Registry;
use crate::error::{Error, Result};

/// Appended to an image's tag to name its TOC image.
pub const TOC_IMAGE_SUFFIX: &str = "-esgztoc";

/// The tag of the TOC image of an image tagged `tag`.
pub fn toc_image_tag(tag: &str) -> String {
    format!("{tag}{TOC_IMAGE_SUFFIX}")
}

/// `<ref>-esgztoc`; the image must be named by tag (a digest has no TOC image name).
pub fn toc_image_reference(image: &Reference) -> Result<Reference> {
    let tag = image.tag.as_deref().ok_or_else(|| {
        Error::InvalidArgument(format!(
            "{image} is named by digest only; its external TOCs are in <tag>{TOC_IMAGE_SUFFIX}, so name the image by tag"
        ))
    })?;
    let mut r = image.with_manifest_ref(&toc_image_tag(tag));
    r.digest = None;
    Ok(r)
}

/// Fetches the TOC gzip member of `layer_digest` from the TOC image of
/// `image` (at most `limit` bytes; the blob's digest is checked).
pub fn fetch_external_toc(
    registry: &Registry,
    image: &Reference,
    layer_digest: &str,
    limit: u64,
) -> Result<Vec<u8>> {
    let toc_ref = toc_image_reference(image)?;
    let what = format!("the external TOC of layer {layer_digest} in {toc_ref}");
    let (body, ctype, _) = registry
        .fetch_manifest(&toc_ref)
        .map_err(|e| e.with_context(&what))?;
    let (m, pinned) = match manifest::decode(&body, ctype.as_deref())? {
        Document::Manifest(m) => (m, toc_ref),
        Document::Index(index) => {
            let d = manifest::select_platform(&index, &Platform::host())?;
            let pinned = toc_ref.with_manifest_ref(&d.digest);
            let (body, ctype, _) = registry.fetch_manifest(&pinned)?;
            match manifest::decode(&body, ctype.as_deref())? {
                Document::Manifest(m) => (m, pinned),
                Document::Index(_) => {
                    return Err(Error::Registry(format!(
                        "{what}: an index points to another index"
                    )))
                }
            }
        }
    };
    let layer = m
        .layers
        .iter()
        .find(|l| {
            l.annotations
                .get(LAYER_DIGEST_ANNOTATION)
                .is_some_and(|d| d == layer_digest)
        })
        .ok_or_else(|| {
            Error::NotFound(format!(
                "{what}: no layer of the TOC image has {LAYER_DIGEST_ANNOTATION} = {layer_digest}"
            ))
        })?;
    if layer.size > limit {
        return Err(Error::LimitExceeded(format!(
            "{what}: {} bytes, over the limit of {limit}",
            layer.size
        )));
    }
    registry.fetch_blob(&pinned, &layer.digest, limit)
}
