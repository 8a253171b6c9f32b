//! OCI / Docker image manifests and indexes: just what lazy pulling and
//! pushing need.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// OCI image index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image configuration media type.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI gzip layer media type.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI zstd layer media type (zstd:chunked layers).
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// Docker manifest list media type.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image manifest media type.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker gzip layer media type.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// The `Accept` header for manifest requests.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// The TOC digest annotation (eStargz).
pub const TOC_DIGEST_ANNOTATION: &str = "containerd.io/snapshot/stargz/toc.digest";
/// The TOC digest annotation the eStargz proposal to the OCI image spec
/// names; read when [`TOC_DIGEST_ANNOTATION`] is absent.
pub const OCI_TOC_DIGEST_ANNOTATION: &str = "org.opencontainers.image.toc.digest";
/// zstd:chunked v2 (containers/storage >= 1.44): sha256 of the compressed TOC.
pub const ZSTD_MANIFEST_CHECKSUM_ANNOTATION: &str =
    "io.github.containers.zstd-chunked.manifest-checksum";
/// zstd:chunked v2: `offset:compressedLen:uncompressedLen:1` of the TOC.
pub const ZSTD_MANIFEST_POSITION_ANNOTATION: &str =
    "io.github.containers.zstd-chunked.manifest-position";
/// zstd:chunked v2: `offset:compressedLen:uncompressedLen` of the tar-split.
pub const ZSTD_TARSPLIT_POSITION_ANNOTATION: &str =
    "io.github.containers.zstd-chunked.tarsplit-position";
/// zstd:chunked v1 (stargz-snapshotter, containers/storage <= 1.43): the checksum.
pub const ZSTD_V1_MANIFEST_CHECKSUM_ANNOTATION: &str =
    "io.containers.zstd-chunked.manifest-checksum";
/// zstd:chunked v1: the TOC position.
pub const ZSTD_V1_MANIFEST_POSITION_ANNOTATION: &str =
    "io.containers.zstd-chunked.manifest-position";
/// The uncompressed size annotation (containers/storage).
pub const UNCOMPRESSED_SIZE_ANNOTATION: &str = "io.containers.estargz.uncompressed-size";
/// On a layer of an external TOC image: the eStargz blob its TOC belongs to.
pub const LAYER_DIGEST_ANNOTATION: &str = "containerd.io/snapshot/stargz/layer.digest";
/// The tag annotation of an OCI layout's `index.json`.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
/// The platform an index entry is for.
pub struct Platform {
    /// CPU architecture (`amd64`, `arm64`, ...).
    pub architecture: String,
    /// Operating system (`linux`, ...).
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// CPU variant (`v8`, ...).
    pub variant: Option<String>,
}

impl Platform {
    /// This machine, in OCI's vocabulary.
    pub fn host() -> Platform {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        };
        Platform {
            architecture: architecture.into(),
            os: "linux".into(),
            variant: None,
        }
    }

    /// Parses `os/arch[/variant]`.
    pub fn parse(s: &str) -> Result<Platform> {
        let mut parts = s.split('/');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(os), Some(arch), variant, None) if !os.is_empty() && !arch.is_empty() => {
                Ok(Platform {
                    os: os.into(),
                    architecture: arch.into(),
                    variant: variant.map(str::to_string),
                })
            }
            _ => Err(Error::InvalidArgument(format!(
                "platform {s:?}: expected os/arch[/variant]"
            ))),
        }
    }

    /// Whether `other` is this platform (any variant when none is asked for).
    pub fn matches(&self, other: &Platform) -> bool {
        self.os == other.os
            && self.architecture == other.architecture
            && (self.variant.is_none() || self.variant == other.variant)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
/// A content descriptor: what a blob or manifest is, and its digest.
pub struct Descriptor {
    /// Media type.
    pub media_type: String,
    /// Digest of the content.
    pub digest: String,
    /// Size of the content in bytes.
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    /// Annotations (e.g. the TOC digest of an eStargz layer).
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Platform, in an index.
    pub platform: Option<Platform>,
}

impl Descriptor {
    /// The TOC digest annotation, when present: containerd's, else the
    /// OCI proposal's. [`Descriptor::checked_toc_digest`] also refuses
    /// the two disagreeing.
    pub fn toc_digest(&self) -> Option<&str> {
        self.annotations
            .get(TOC_DIGEST_ANNOTATION)
            .or_else(|| self.annotations.get(OCI_TOC_DIGEST_ANNOTATION))
            .map(String::as_str)
    }

    /// [`Descriptor::toc_digest`], refusing a descriptor whose containerd
    /// and OCI TOC digest annotations differ.
    pub fn checked_toc_digest(&self) -> Result<Option<&str>> {
        match (
            self.annotations.get(TOC_DIGEST_ANNOTATION),
            self.annotations.get(OCI_TOC_DIGEST_ANNOTATION),
        ) {
            (Some(a), Some(b)) if a != b => Err(Error::InvalidArgument(format!(
                "layer {}: annotations {TOC_DIGEST_ANNOTATION}={a} and {OCI_TOC_DIGEST_ANNOTATION}={b} disagree",
                self.digest
            ))),
            _ => Ok(self.toc_digest()),
        }
    }

    /// zstd:chunked: the manifest checksum annotation (v2 key, else v1).
    pub fn zstd_manifest_checksum(&self) -> Option<&str> {
        self.annotations
            .get(ZSTD_MANIFEST_CHECKSUM_ANNOTATION)
            .or_else(|| self.annotations.get(ZSTD_V1_MANIFEST_CHECKSUM_ANNOTATION))
            .map(String::as_str)
    }

    /// Whether the manifest anchors the layer's TOC (a TOC digest or a
    /// zstd:chunked manifest checksum), so it may be read lazily.
    pub fn has_toc_anchor(&self) -> bool {
        self.toc_digest().is_some() || self.zstd_manifest_checksum().is_some()
    }

    /// zstd:chunked: where the TOC (and tar-split) are, from the
    /// manifest-position annotations; `None` when absent. The generation
    /// is 2 when a tar-split position is given.
    pub fn zstd_chunked_position(&self) -> Result<Option<crate::footer::ZstdChunkedFooter>> {
        use crate::footer::{FramePosition, ZstdChunkedFooter, ZstdGeneration};
        let Some((key, value)) = [
            ZSTD_MANIFEST_POSITION_ANNOTATION,
            ZSTD_V1_MANIFEST_POSITION_ANNOTATION,
        ]
        .into_iter()
        .find_map(|k| self.annotations.get(k).map(|v| (k, v))) else {
            return Ok(None);
        };
        let numbers = |key: &str, value: &str, count: usize| -> Result<Vec<u64>> {
            let parts: Vec<Option<u64>> = value.split(':').map(|p| p.parse().ok()).collect();
            if parts.len() != count || parts.iter().any(Option::is_none) {
                return Err(Error::Registry(format!(
                    "layer {}: annotation {key}={value:?} is not {count} numbers separated by ':'",
                    self.digest
                )));
            }
            Ok(parts.into_iter().flatten().collect())
        };
        let toc = numbers(key, value, 4)?;
        if toc[3] != 1 {
            return Err(Error::Registry(format!(
                "layer {}: annotation {key}={value:?} has manifest type {} (only 1 is defined)",
                self.digest, toc[3]
            )));
        }
        let tar_split = match self.annotations.get(ZSTD_TARSPLIT_POSITION_ANNOTATION) {
            Some(v) => {
                let t = numbers(ZSTD_TARSPLIT_POSITION_ANNOTATION, v, 3)?;
                Some(FramePosition {
                    offset: t[0],
                    compressed_len: t[1],
                    uncompressed_len: t[2],
                })
            }
            None => None,
        };
        Ok(Some(ZstdChunkedFooter {
            generation: if tar_split.is_some() {
                ZstdGeneration::V2
            } else {
                ZstdGeneration::V1
            },
            toc: FramePosition {
                offset: toc[0],
                compressed_len: toc[1],
                uncompressed_len: toc[2],
            },
            tar_split,
        }))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
/// An image manifest (OCI or Docker schema 2).
pub struct Manifest {
    /// Always 2.
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    /// Media type, when the document states it.
    pub media_type: String,
    /// The image configuration.
    pub config: Descriptor,
    /// Layers, base first.
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
/// An image index or Docker manifest list.
pub struct Index {
    /// Always 2.
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    /// Media type, when the document states it.
    pub media_type: String,
    /// One descriptor per platform manifest.
    pub manifests: Vec<Descriptor>,
}

/// A manifest document of either kind.
pub enum Document {
    /// An index or manifest list.
    Index(Index),
    /// A single-platform manifest.
    Manifest(Manifest),
}

/// Decodes a manifest body using the Content-Type, falling back to the
/// document's own `mediaType` / shape.
pub fn decode(body: &[u8], content_type: Option<&str>) -> Result<Document> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        #[serde(default)]
        media_type: String,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
        #[serde(default)]
        schema_version: u32,
    }
    let bad = |e: serde_json::Error| Error::Registry(format!("malformed manifest: {e}"));
    let probe: Probe = serde_json::from_slice(body).map_err(bad)?;
    if probe.schema_version != 2 {
        return Err(Error::Unsupported(format!(
            "manifest schemaVersion {} (only 2 is supported)",
            probe.schema_version
        )));
    }
    let kind = content_type
        .map(|c| c.split(';').next().unwrap_or("").trim())
        .filter(|c| !c.is_empty() && *c != "application/json")
        .unwrap_or(&probe.media_type);
    let is_index = match kind {
        OCI_INDEX | DOCKER_LIST => true,
        OCI_MANIFEST | DOCKER_MANIFEST => false,
        _ => probe.manifests.is_some(),
    };
    if is_index {
        Ok(Document::Index(serde_json::from_slice(body).map_err(bad)?))
    } else {
        Ok(Document::Manifest(
            serde_json::from_slice(body).map_err(bad)?,
        ))
    }
}

/// Picks the manifest for `want` from an index.
pub fn select_platform<'a>(index: &'a Index, want: &Platform) -> Result<&'a Descriptor> {
    index
        .manifests
        .iter()
        .find(|d| d.platform.as_ref().is_some_and(|p| want.matches(p)))
        .or_else(|| {
            // Single-platform indexes often omit the platform.
            (index.manifests.len() == 1 && index.manifests[0].platform.is_none())
                .then(|| &index.manifests[0])
        })
        .ok_or_else(|| {
            Error::NotFound(format!(
                "no manifest for platform {}/{} in the index (it has: {})",
                want.os,
                want.architecture,
                platform_names(index)
            ))
        })
}

/// The platforms of an index as `os/arch, …`, for error messages.
pub fn platform_names(index: &Index) -> String {
    let names: Vec<String> = index
        .manifests
        .iter()
        .filter_map(|d| d.platform.as_ref())
        .map(|p| format!("{}/{}", p.os, p.architecture))
        .collect();
    names.join(", ")
}

/// The annotations a zstd:chunked layer's descriptor carries: the
/// manifest checksum and position under the keys of its generation (v2:
/// containers/storage's, with the tar-split position; v1: upstream's).
pub fn zstd_chunked_annotations(
    position: &crate::footer::ZstdChunkedFooter,
    manifest_checksum: &str,
) -> BTreeMap<String, String> {
    let (checksum_key, position_key) = match position.generation {
        crate::footer::ZstdGeneration::V2 => (
            ZSTD_MANIFEST_CHECKSUM_ANNOTATION,
            ZSTD_MANIFEST_POSITION_ANNOTATION,
        ),
        crate::footer::ZstdGeneration::V1 => (
            ZSTD_V1_MANIFEST_CHECKSUM_ANNOTATION,
            ZSTD_V1_MANIFEST_POSITION_ANNOTATION,
        ),
    };
    let t = position.toc;
    let mut out = BTreeMap::new();
    out.insert(checksum_key.to_string(), manifest_checksum.to_string());
    out.insert(
        position_key.to_string(),
        format!("{}:{}:{}:1", t.offset, t.compressed_len, t.uncompressed_len),
    );
    if let Some(s) = position.tar_split {
        out.insert(
            ZSTD_TARSPLIT_POSITION_ANNOTATION.to_string(),
            format!("{}:{}:{}", s.offset, s.compressed_len, s.uncompressed_len),
        );
    }
    out
}

/// The media type of a layer of `format`: tar+zstd for zstd:chunked,
/// tar+gzip otherwise.
pub fn layer_media_type(format: crate::footer::Format) -> &'static str {
    if format.is_zstd() {
        OCI_LAYER_ZSTD
    } else {
        OCI_LAYER_GZIP
    }
}

/// The annotations a layer this library built carries, as each format's
/// reference writes them: eStargz the TOC digest and uncompressed size;
/// zstd:chunked v1 those and its manifest checksum and position
/// (stargz-snapshotter's set); v2 only containers/storage's keys
/// (containers/storage refuses a layer that also has the eStargz TOC
/// digest).
pub fn built_layer_annotations(r: &crate::build::BuildResult) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if r.format != crate::footer::Format::ZstdChunked(crate::footer::ZstdGeneration::V2) {
        out.insert(TOC_DIGEST_ANNOTATION.to_string(), r.toc_digest.to_string());
        out.insert(
            UNCOMPRESSED_SIZE_ANNOTATION.to_string(),
            r.uncompressed_size.to_string(),
        );
    }
    if let (Some(position), Some(checksum)) = (&r.zstd_chunked, &r.manifest_checksum) {
        out.extend(zstd_chunked_annotations(position, &checksum.to_string()));
    }
    out
}

/// Every annotation that says where a layer's TOC is or what it holds: a
/// converted layer drops the source's before adding its own.
pub const TOC_ANNOTATIONS: [&str; 8] = [
    TOC_DIGEST_ANNOTATION,
    OCI_TOC_DIGEST_ANNOTATION,
    UNCOMPRESSED_SIZE_ANNOTATION,
    ZSTD_MANIFEST_CHECKSUM_ANNOTATION,
    ZSTD_MANIFEST_POSITION_ANNOTATION,
    ZSTD_TARSPLIT_POSITION_ANNOTATION,
    ZSTD_V1_MANIFEST_CHECKSUM_ANNOTATION,
    ZSTD_V1_MANIFEST_POSITION_ANNOTATION,
];

/// Whether a layer media type is gzip-compressed tar (what eStargz is).
pub fn is_gzip_layer(media_type: &str) -> bool {
    media_type == OCI_LAYER_GZIP || media_type == DOCKER_LAYER_GZIP
}

/// Whether a layer media type may be read lazily: gzip (eStargz) or zstd
/// (zstd:chunked).
pub fn is_lazy_layer_type(media_type: &str) -> bool {
    is_gzip_layer(media_type) || media_type == OCI_LAYER_ZSTD
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_and_select() {
        let index = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
          {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:aa","size":1,"platform":{"architecture":"arm64","os":"linux"}},
          {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:bb","size":2,"platform":{"architecture":"amd64","os":"linux"}}]}"#;
        let Document::Index(i) = decode(index, None).unwrap() else {
            panic!("not an index")
        };
        let amd = Platform::parse("linux/amd64").unwrap();
        assert_eq!(select_platform(&i, &amd).unwrap().digest, "sha256:bb");
        let err = select_platform(&i, &Platform::parse("linux/s390x").unwrap()).unwrap_err();
        assert!(err.to_string().contains("linux/arm64"), "{err}");
        let m = br#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:cc","size":3},"layers":[]}"#;
        assert!(matches!(
            decode(m, Some(OCI_MANIFEST)),
            Ok(Document::Manifest(_))
        ));
        assert!(decode(b"{", None).is_err());
        assert!(decode(br#"{"schemaVersion":1}"#, None).is_err());
    }

    fn layer(annotations: &[(&str, &str)]) -> Descriptor {
        Descriptor {
            media_type: OCI_LAYER_ZSTD.into(),
            digest: "sha256:ab".into(),
            size: 1000,
            annotations: annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            platform: None,
        }
    }

    #[test]
    fn toc_digest_annotations_containerd_then_oci() {
        let (a, b) = ("sha256:aa", "sha256:bb");
        assert_eq!(layer(&[]).checked_toc_digest().unwrap(), None);
        let oci = layer(&[(OCI_TOC_DIGEST_ANNOTATION, a)]);
        assert_eq!(oci.checked_toc_digest().unwrap(), Some(a));
        assert!(oci.has_toc_anchor());
        let both = layer(&[(OCI_TOC_DIGEST_ANNOTATION, a), (TOC_DIGEST_ANNOTATION, a)]);
        assert_eq!(both.checked_toc_digest().unwrap(), Some(a));
        let conflict = layer(&[(OCI_TOC_DIGEST_ANNOTATION, a), (TOC_DIGEST_ANNOTATION, b)]);
        assert!(conflict
            .checked_toc_digest()
            .unwrap_err()
            .to_string()
            .contains("disagree"));
    }

    #[test]
    fn zstd_chunked_positions_and_generations() {
        use crate::footer::ZstdGeneration;
        let v2 = layer(&[
            (ZSTD_MANIFEST_POSITION_ANNOTATION, "100:20:300:1"),
            (ZSTD_TARSPLIT_POSITION_ANNOTATION, "128:10:50"),
            (ZSTD_MANIFEST_CHECKSUM_ANNOTATION, "sha256:cc"),
        ]);
        let p = v2.zstd_chunked_position().unwrap().unwrap();
        assert_eq!(p.generation, ZstdGeneration::V2);
        assert_eq!(
            (p.toc.offset, p.toc.compressed_len, p.toc.uncompressed_len),
            (100, 20, 300)
        );
        assert_eq!(p.tar_split.unwrap().offset, 128);
        assert_eq!(v2.zstd_manifest_checksum(), Some("sha256:cc"));
        assert_eq!(zstd_chunked_annotations(&p, "sha256:cc"), v2.annotations);
        let v1 = layer(&[
            (ZSTD_V1_MANIFEST_POSITION_ANNOTATION, "100:20:300:1"),
            (ZSTD_V1_MANIFEST_CHECKSUM_ANNOTATION, "sha256:dd"),
        ]);
        let p1 = v1.zstd_chunked_position().unwrap().unwrap();
        assert_eq!(p1.generation, ZstdGeneration::V1);
        assert_eq!(zstd_chunked_annotations(&p1, "sha256:dd"), v1.annotations);
        assert!(v1.has_toc_anchor());
        for bad in ["1:2:3", "1:2:3:2", "a:2:3:1", "1:2:3:1:5", ""] {
            let d = layer(&[(ZSTD_MANIFEST_POSITION_ANNOTATION, bad)]);
            assert!(d.zstd_chunked_position().is_err(), "{bad:?} accepted");
        }
        assert_eq!(layer(&[]).zstd_chunked_position().unwrap(), None);
    }
}
