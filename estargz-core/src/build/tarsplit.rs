//! The tar-split data of a zstd:chunked v2 blob: what, besides file
//! contents, rebuilds the input tar byte for byte, so a client that
//! fetched only files can still compute (and check) the layer's DiffID.
//!
//! Format facts (github.com/vbatts/tar-split `tar/storage`, JSON packer, as
//! containers/storage writes and reads it): one JSON object per line,
//! `{"type":T,"name":N,"size":S,"payload":P,"position":I}` with `position`
//! counting lines from 0. Type 2 (segment): `payload` is raw tar bytes in
//! base64. Type 1 (file): `name` is the header's name (`name_raw`, base64,
//! when it is not UTF-8), `size` its size, `payload` the big-endian CRC-64
//! (ISO polynomial) of the content, or null when the file is empty.
//! containers/storage expects one segment per header holding the previous
//! entry's padding, every meta header and the header block, then the
//! entry's file line; trailing bytes follow as segments.

use base64::Engine as _;

use crate::error::{Error, Result};
use crate::source::ReadAt;
use crate::tar::TarIndex;

/// Trailing bytes go in segments of at most this size.
const MAX_SEGMENT: u64 = 1 << 20;

/// CRC-64 with the ISO polynomial, reflected, as Go's `hash/crc64`.
pub struct Crc64 {
    value: u64,
}

fn crc64_table() -> &'static [u64; 256] {
    static TABLE: std::sync::OnceLock<[u64; 256]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        const ISO: u64 = 0xD800_0000_0000_0000;
        let mut t = [0u64; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut crc = i as u64;
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ ISO
                } else {
                    crc >> 1
                };
            }
            *slot = crc;
        }
        t
    })
}

impl Crc64 {
    pub fn new() -> Self {
        Crc64 { value: 0 }
    }
    pub fn update(&mut self, data: &[u8]) {
        let table = crc64_table();
        let mut crc = !self.value;
        for &b in data {
            crc = table[((crc as u8) ^ b) as usize] ^ (crc >> 8);
        }
        self.value = !crc;
    }
    pub fn finish(&self) -> u64 {
        self.value
    }
}

/// Writes the tar-split lines for the whole input tar. `crcs[i]` is the
/// CRC-64 of entry `i`'s payload (ignored for empty payloads).
pub fn tar_split(index: &TarIndex, crcs: &[u64], src: &dyn ReadAt) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut position = 0u64;
    let segment = |out: &mut Vec<u8>, position: &mut u64, start: u64, end: u64| -> Result<()> {
        let mut at = start;
        while at < end {
            let n = (end - at).min(MAX_SEGMENT);
            let mut raw = vec![0u8; n as usize];
            src.read_exact_at(&mut raw, at)
                .map_err(|e| Error::io(format!("reading the input tar at offset {at}"), e))?;
            out.extend_from_slice(b"{\"type\":2,\"payload\":\"");
            out.extend_from_slice(
                base64::engine::general_purpose::STANDARD
                    .encode(&raw)
                    .as_bytes(),
            );
            out.extend_from_slice(format!("\",\"position\":{position}}}\n").as_bytes());
            *position += 1;
            at += n;
        }
        Ok(())
    };
    let mut pos = 0u64;
    for (i, e) in index.entries.iter().enumerate() {
        segment(&mut out, &mut position, pos, e.data_start)?;
        // Built by hand in the packer's field order; names are JSON-escaped.
        out.extend_from_slice(b"{\"type\":1,");
        // The build refuses names that are not UTF-8 up front (see
        // refuse_non_utf8); the lossy name must never be written here.
        if e.non_utf8_name.is_some() {
            return Err(Error::Unsupported(format!(
                "zstd:chunked v2 of a tar entry whose name is not UTF-8 ({:?})",
                e.name
            )));
        }
        out.extend_from_slice(b"\"name\":");
        out.extend_from_slice(
            serde_json::to_string(&e.name)
                .expect("strings serialize")
                .as_bytes(),
        );
        if e.size > 0 {
            let crc = crcs.get(i).copied().unwrap_or(0).to_be_bytes();
            out.extend_from_slice(format!(",\"size\":{},\"payload\":\"", e.size).as_bytes());
            out.extend_from_slice(
                base64::engine::general_purpose::STANDARD
                    .encode(crc)
                    .as_bytes(),
            );
            out.extend_from_slice(b"\"");
        } else {
            out.extend_from_slice(b",\"payload\":null");
        }
        out.extend_from_slice(format!(",\"position\":{position}}}\n").as_bytes());
        position += 1;
        pos = e.data_start + e.size;
    }
    segment(&mut out, &mut position, pos, index.total_size)?;
    Ok(out)
}

/// The size of the tar that tar-split `lines` rebuild: every segment's
/// bytes plus every file's `size`. The lines are read as a stream (one at
/// a time, however long the data), so only the caller's bound on `lines`
/// limits the work.
pub(crate) fn tar_size(lines: impl std::io::Read) -> Result<u64> {
    #[derive(serde::Deserialize)]
    struct Line {
        #[serde(rename = "type")]
        kind: u8,
        #[serde(default)]
        size: i64,
        #[serde(default)]
        payload: Option<String>,
    }
    let bad = |what: String| Error::InvalidToc(format!("zstd:chunked tar-split: {what}"));
    let mut total = 0u64;
    for (n, line) in serde_json::Deserializer::from_reader(lines)
        .into_iter::<Line>()
        .enumerate()
    {
        let line = line.map_err(|e| bad(format!("line {n}: {e}")))?;
        let len = match line.kind {
            1 => u64::try_from(line.size)
                .map_err(|_| bad(format!("line {n}: file size {}", line.size)))?,
            2 => {
                let payload = line.payload.unwrap_or_default();
                base64::engine::general_purpose::STANDARD
                    .decode(payload.as_bytes())
                    .map_err(|e| bad(format!("line {n}: segment payload: {e}")))?
                    .len() as u64
            }
            other => return Err(bad(format!("line {n}: unknown type {other}"))),
        };
        total = total
            .checked_add(len)
            .ok_or_else(|| bad(format!("line {n}: the sizes overflow")))?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_size_counts_segments_and_files() {
        let lines = concat!(
            "{\"type\":2,\"payload\":\"AAAA\",\"position\":0}\n",
            "{\"type\":1,\"name\":\"a\",\"size\":1000,\"payload\":\"AAAAAAAAAAA=\",\"position\":1}\n",
            "{\"type\":1,\"name\":\"e\",\"payload\":null,\"position\":2}\n",
            "{\"type\":2,\"payload\":\"AQID\",\"position\":3}\n",
        );
        assert_eq!(tar_size(lines.as_bytes()).unwrap(), 3 + 1000 + 3);
        for bad in [
            "{\"type\":3}",
            "{\"type\":1,\"size\":-1}",
            "{\"type\":2,\"payload\":\"!!\"}",
            "{\"type\":1,\"size\":9223372036854775807}{\"type\":1,\"size\":9223372036854775807}{\"type\":1,\"size\":9223372036854775807}",
            "{\"type\":",
        ] {
            let e = tar_size(bad.as_bytes()).unwrap_err();
            assert!(e.to_string().contains("tar-split"), "{bad}: {e}");
        }
    }

    #[test]
    fn crc64_iso_check_value() {
        // The standard check value of CRC-64/GO-ISO over "123456789".
        let mut c = Crc64::new();
        c.update(b"1234");
        c.update(b"56789");
        assert_eq!(c.finish(), 0xb909_56c7_75a4_1001);
    }
}
