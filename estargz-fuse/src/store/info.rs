//! The `info` file: the JSON containers/storage decodes into its layer
//! record, in the two generations of the protocol.

use std::io::{BufReader, Read};

use estargz_core::digest::Hasher;
use estargz_core::source::SectionReader;
use estargz_core::{Error, ReadAt, Result};
use serde_json::json;

/// `archive.Compression` value for gzip.
const GZIP: u8 = 2;
/// `archive.Compression` value for zstd (zstd:chunked layers).
const ZSTD: u8 = 4;

/// How the store was asked for the layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Keying {
    /// By compressed layer digest (containers/storage 1.29–1.53, Podman 4).
    LayerDigest {
        compressed_digest: String,
        compressed_size: u64,
        diff_id: String,
        diff_size: u64,
    },
    /// By TOC digest (containers/storage ≥ 1.54, Podman ≥ 5.1).
    TocDigest { toc_digest: String, diff_id: String },
}

/// The bytes of `info`. The v2 form leaves out `diff-digest` on purpose:
/// it would let unrelated pulls reuse the lazy layer by uncompressed digest.
/// `zstd`: the layer is zstd:chunked (else gzip).
pub fn info_json(keying: &Keying, zstd: bool) -> Vec<u8> {
    let compression = if zstd { ZSTD } else { GZIP };
    let value = match keying {
        Keying::LayerDigest {
            compressed_digest,
            compressed_size,
            diff_id,
            diff_size,
        } => json!({
            "compressed-diff-digest": compressed_digest,
            "compressed-size": compressed_size,
            "diff-digest": diff_id,
            "diff-size": diff_size,
            "compression": compression,
        }),
        Keying::TocDigest {
            toc_digest,
            diff_id,
        } => json!({
            "toc-digest": toc_digest,
            "diff-size": -1,
            "compression": compression,
            "flags": { "expected-layer-diffid": diff_id },
        }),
    };
    let mut out = serde_json::to_vec(&value).expect("JSON values serialize");
    out.push(b'\n');
    out
}

/// The uncompressed size of a blob without the size annotation: the whole
/// stream is decompressed and its digest checked against the DiffID, so
/// the size reported is never a guess.
/// `zstd`: the layer is zstd:chunked (else gzip).
pub fn measure_diff(blob: &dyn ReadAt, diff_id: &str, zstd: bool) -> Result<u64> {
    let section = BufReader::with_capacity(1 << 20, SectionReader::new(blob, 0, blob.size()));
    let mut gz: Box<dyn Read + '_> = if zstd {
        Box::new(
            zstd::stream::read::Decoder::with_buffer(section)
                .map_err(|e| Error::io("decompressing the layer to measure it", e))?,
        )
    } else {
        Box::new(flate2::read::MultiGzDecoder::new(section))
    };
    let mut hasher = Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = gz
            .read(&mut buf)
            .map_err(|e| Error::io("decompressing the layer to measure it", e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let size = hasher.len();
    let actual = hasher.finish();
    if actual != diff_id {
        return Err(Error::DigestMismatch {
            what: "decompressed layer (the config's DiffID)".into(),
            expected: diff_id.into(),
            actual,
        });
    }
    Ok(size)
}
