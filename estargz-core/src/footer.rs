//! The fixed-size gzip members at the end of a blob that say where the TOC is.
//!
//! * eStargz: 51 bytes, FEXTRA with one `SG` subfield holding `%016x` + `STARGZ`.
//! * external TOC: 46 bytes, `SG` subfield holding `STARGZEXTERNALTOC`.
//! * legacy crfs stargz: 47 bytes, raw (non-subfield) extra `%016x` + `STARGZ`.
//! * zstd:chunked: a zstd skippable frame whose payload is little-endian
//!   u64 fields and a magic: v1 40 bytes (`GnUlInUx`, TOC position only),
//!   v2 64 bytes (`GNUlInUx`, TOC and tar-split positions).

use crate::error::{Error, Result};

/// Bytes of the eStargz footer (a gzip member with the TOC offset in its extra field).
pub const ESTARGZ_FOOTER_SIZE: usize = 51;
/// Bytes of the footer of a blob whose TOC is stored outside it.
pub const EXTERNAL_TOC_FOOTER_SIZE: usize = 46;
/// Bytes of the legacy stargz footer.
pub const LEGACY_FOOTER_SIZE: usize = 47;
/// Bytes of the zstd:chunked v1 footer frame (8-byte frame header + 40-byte payload).
pub const ZSTD_CHUNKED_V1_FOOTER_SIZE: usize = SKIPPABLE_HEADER_SIZE + 40;
/// Bytes of the zstd:chunked v2 footer frame (8-byte frame header + 64-byte payload).
pub const ZSTD_CHUNKED_V2_FOOTER_SIZE: usize = SKIPPABLE_HEADER_SIZE + 64;
/// The largest footer; reading this many tail bytes is enough to detect any kind.
pub const MAX_FOOTER_SIZE: usize = ZSTD_CHUNKED_V2_FOOTER_SIZE;
/// A zstd skippable frame header: magic (LE `0x184D2A50`) + u32 LE payload length.
pub const SKIPPABLE_HEADER_SIZE: usize = 8;
/// First bytes of the skippable frames zstd:chunked writes.
pub const SKIPPABLE_MAGIC: [u8; 4] = [0x50, 0x2a, 0x4d, 0x18];
const ZSTD_V1_MAGIC: &[u8; 8] = b"GnUlInUx";
const ZSTD_V2_MAGIC: &[u8; 8] = b"GNUlInUx";
/// The only manifest type zstd:chunked defines (CRFS: the eStargz TOC schema).
const MANIFEST_TYPE_CRFS: u64 = 1;

const GZIP_HEADER_FEXTRA: [u8; 10] = [0x1f, 0x8b, 0x08, 0x04, 0, 0, 0, 0, 0, 0xff];
/// Final empty stored deflate block, CRC32 of nothing, ISIZE 0.
const EMPTY_MEMBER_TAIL: [u8; 13] = [0x01, 0x00, 0x00, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0];
const MAGIC: &[u8] = b"STARGZ";
const EXTERNAL_MAGIC: &[u8] = b"STARGZEXTERNALTOC";

/// Why one footer kind did not match (collected for the final error).
type Reason<T> = std::result::Result<T, String>;

/// Which zstd:chunked generation a blob is (they are not compatible).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ZstdGeneration {
    /// 40-byte footer, no tar-split (stargz-snapshotter, containers/storage <= 1.49).
    V1,
    /// 64-byte footer with the tar-split frame (containers/storage >= 1.50).
    V2,
}

impl ZstdGeneration {
    /// 1 or 2.
    pub fn number(self) -> u8 {
        match self {
            ZstdGeneration::V1 => 1,
            ZstdGeneration::V2 => 2,
        }
    }
}

/// Where a skippable frame's payload is: its blob offset (after the
/// 8-byte frame header), its length, and how large it inflates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramePosition {
    /// Blob offset of the payload (the frame starts 8 bytes before).
    pub offset: u64,
    /// Payload bytes (zstd-compressed).
    pub compressed_len: u64,
    /// Bytes it decompresses to.
    pub uncompressed_len: u64,
}

impl FramePosition {
    /// Blob offset just past the payload.
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.compressed_len)
    }
}

/// What a zstd:chunked footer (or its manifest annotations) says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZstdChunkedFooter {
    /// v1 or v2.
    pub generation: ZstdGeneration,
    /// The zstd-compressed TOC JSON (the "manifest").
    pub toc: FramePosition,
    /// The zstd-compressed tar-split data (v2 only).
    pub tar_split: Option<FramePosition>,
}

impl ZstdChunkedFooter {
    /// The exact footer frame bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut payload = Vec::with_capacity(64);
        for v in [
            self.toc.offset,
            self.toc.compressed_len,
            self.toc.uncompressed_len,
            MANIFEST_TYPE_CRFS,
        ] {
            payload.extend_from_slice(&v.to_le_bytes());
        }
        match self.generation {
            ZstdGeneration::V1 => payload.extend_from_slice(ZSTD_V1_MAGIC),
            ZstdGeneration::V2 => {
                let t = self.tar_split.unwrap_or(FramePosition {
                    offset: 0,
                    compressed_len: 0,
                    uncompressed_len: 0,
                });
                for v in [t.offset, t.compressed_len, t.uncompressed_len] {
                    payload.extend_from_slice(&v.to_le_bytes());
                }
                payload.extend_from_slice(ZSTD_V2_MAGIC);
            }
        }
        skippable_frame(&payload)
    }

    /// Where the data frames end: the start of the TOC's skippable frame.
    pub fn payload_end(&self) -> u64 {
        self.toc.offset - SKIPPABLE_HEADER_SIZE as u64
    }

    /// Checks the positions against a blob of `blob_size` bytes whose
    /// footer takes `footer_size` of them: frames in order, inside the blob,
    /// not overlapping.
    pub fn check(&self, blob_size: u64, footer_size: u64) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidFooter(format!("zstd:chunked: {m}")));
        let limit = blob_size.saturating_sub(footer_size);
        let toc_limit = match self.tar_split {
            Some(t) => {
                if t.offset < SKIPPABLE_HEADER_SIZE as u64 || t.end() > limit {
                    return bad(format!(
                        "tar-split at {}+{} is outside the blob (data ends at {limit})",
                        t.offset, t.compressed_len
                    ));
                }
                t.offset - SKIPPABLE_HEADER_SIZE as u64
            }
            None => limit,
        };
        if self.toc.offset < SKIPPABLE_HEADER_SIZE as u64 || self.toc.end() > toc_limit {
            return bad(format!(
                "TOC at {}+{} is outside the blob (it must end by {toc_limit})",
                self.toc.offset, self.toc.compressed_len
            ));
        }
        Ok(())
    }
}

/// A zstd skippable frame holding `payload`.
pub fn skippable_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(SKIPPABLE_HEADER_SIZE + payload.len());
    out.extend_from_slice(&SKIPPABLE_MAGIC);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Whether `header` (8 bytes) opens a zstd skippable frame of `len` payload bytes.
pub fn is_skippable_header(header: &[u8], len: u64) -> bool {
    header.len() == SKIPPABLE_HEADER_SIZE
        // Any of the 16 skippable magics (0x184D2A5?) is a skippable frame.
        && header[0] & 0xf0 == 0x50
        && header[1..4] == SKIPPABLE_MAGIC[1..4]
        && u64::from(u32::from_le_bytes([header[4], header[5], header[6], header[7]])) == len
}

/// Which layer format a blob is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// eStargz (gzip members, TOC in a tar entry; possibly external).
    Estargz,
    /// Legacy crfs stargz.
    Stargz,
    /// zstd:chunked of the given generation.
    ZstdChunked(ZstdGeneration),
}

impl Format {
    /// `estargz`, `stargz` or `zstd:chunked`.
    pub fn name(&self) -> &'static str {
        match self {
            Format::Estargz => "estargz",
            Format::Stargz => "stargz",
            Format::ZstdChunked(_) => "zstd:chunked",
        }
    }
    /// The zstd:chunked generation (1 or 2); `None` for the gzip formats.
    pub fn generation(&self) -> Option<u8> {
        match self {
            Format::ZstdChunked(g) => Some(g.number()),
            _ => None,
        }
    }
    /// Whether data frames are zstd (else gzip members).
    pub fn is_zstd(&self) -> bool {
        matches!(self, Format::ZstdChunked(_))
    }
}

impl Format {
    /// The name a build asks for this format by: `estargz`,
    /// `zstd:chunked` (v2, containers/storage's), `zstd:chunked-v1`
    /// (stargz-snapshotter's) or `stargz`.
    pub fn build_name(&self) -> &'static str {
        match self {
            Format::ZstdChunked(ZstdGeneration::V1) => "zstd:chunked-v1",
            other => other.name(),
        }
    }
}

impl std::str::FromStr for Format {
    type Err = Error;
    /// Parses [`Format::build_name`] (`zstd:chunked-v2` is accepted too).
    fn from_str(s: &str) -> Result<Format> {
        Ok(match s {
            "estargz" => Format::Estargz,
            "stargz" => Format::Stargz,
            "zstd:chunked" | "zstd:chunked-v2" => Format::ZstdChunked(ZstdGeneration::V2),
            "zstd:chunked-v1" => Format::ZstdChunked(ZstdGeneration::V1),
            other => {
                return Err(Error::InvalidArgument(format!(
                    "unknown format {other:?} (known: estargz, zstd:chunked, zstd:chunked-v1)"
                )))
            }
        })
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.generation() {
            Some(g) => write!(f, "{} v{g}", self.name()),
            None => f.write_str(self.name()),
        }
    }
}

/// Which footer a blob ends with, and what it says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Footer {
    /// eStargz with the TOC member at `toc_offset`.
    Estargz {
        /// Blob offset of the TOC's gzip member.
        toc_offset: u64,
    },
    /// eStargz whose TOC is stored outside the blob.
    ExternalToc,
    /// Legacy crfs stargz with the TOC member at `toc_offset`.
    Legacy {
        /// Blob offset of the TOC's gzip member.
        toc_offset: u64,
    },
    /// zstd:chunked (either generation).
    ZstdChunked(ZstdChunkedFooter),
}

impl Footer {
    /// Size in bytes of this footer inside the blob.
    pub fn size(&self) -> usize {
        match self {
            Footer::Estargz { .. } => ESTARGZ_FOOTER_SIZE,
            Footer::ExternalToc => EXTERNAL_TOC_FOOTER_SIZE,
            Footer::Legacy { .. } => LEGACY_FOOTER_SIZE,
            Footer::ZstdChunked(z) => match z.generation {
                ZstdGeneration::V1 => ZSTD_CHUNKED_V1_FOOTER_SIZE,
                ZstdGeneration::V2 => ZSTD_CHUNKED_V2_FOOTER_SIZE,
            },
        }
    }

    /// The layer format this footer belongs to.
    pub fn format(&self) -> Format {
        match self {
            Footer::Estargz { .. } | Footer::ExternalToc => Format::Estargz,
            Footer::Legacy { .. } => Format::Stargz,
            Footer::ZstdChunked(z) => Format::ZstdChunked(z.generation),
        }
    }

    /// Blob offset of the embedded TOC member, if any.
    pub fn toc_offset(&self) -> Option<u64> {
        match *self {
            Footer::Estargz { toc_offset } | Footer::Legacy { toc_offset } => Some(toc_offset),
            Footer::ExternalToc => None,
            Footer::ZstdChunked(z) => Some(z.toc.offset),
        }
    }

    /// The exact footer bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        if let Footer::ZstdChunked(z) = self {
            return z.to_bytes();
        }
        let mut out = GZIP_HEADER_FEXTRA.to_vec();
        match *self {
            Footer::Estargz { toc_offset } => {
                let payload = format!("{toc_offset:016x}STARGZ");
                push_sg_subfield(&mut out, payload.as_bytes());
            }
            Footer::ExternalToc => push_sg_subfield(&mut out, EXTERNAL_MAGIC),
            Footer::Legacy { toc_offset } => {
                let payload = format!("{toc_offset:016x}STARGZ");
                out.extend_from_slice(&(payload.len() as u16).to_le_bytes());
                out.extend_from_slice(payload.as_bytes());
            }
            Footer::ZstdChunked(_) => unreachable!("returned above"),
        }
        out.extend_from_slice(&EMPTY_MEMBER_TAIL);
        debug_assert_eq!(out.len(), self.size());
        out
    }

    /// Detects the footer from the last bytes of a blob (`tail` should hold at
    /// least [`MAX_FOOTER_SIZE`] bytes when the blob is that large).
    /// `blob_size` bounds the TOC offset.
    pub fn parse(tail: &[u8], blob_size: u64) -> Result<Footer> {
        // zstd:chunked ends in its magic; gzip footers end in zeros (ISIZE 0).
        if tail.len() >= 8 {
            let magic = &tail[tail.len() - 8..];
            if magic == ZSTD_V1_MAGIC || magic == ZSTD_V2_MAGIC {
                return parse_zstd_chunked(tail, blob_size).map(Footer::ZstdChunked);
            }
        }
        let mut reasons = Vec::new();
        for (size, parse) in [
            (
                ESTARGZ_FOOTER_SIZE,
                parse_estargz as fn(&[u8]) -> Reason<Footer>,
            ),
            (EXTERNAL_TOC_FOOTER_SIZE, parse_external),
            (LEGACY_FOOTER_SIZE, parse_legacy),
        ] {
            if tail.len() < size {
                reasons.push(format!("{size}-byte footer: blob too small"));
                continue;
            }
            match parse(&tail[tail.len() - size..]) {
                Ok(footer) => {
                    if let Some(off) = footer.toc_offset() {
                        if off
                            .checked_add(size as u64)
                            .is_none_or(|end| end > blob_size)
                        {
                            return Err(Error::InvalidFooter(format!(
                                "TOC offset {off} is beyond the blob payload ({} bytes before the footer)",
                                blob_size.saturating_sub(size as u64)
                            )));
                        }
                    }
                    return Ok(footer);
                }
                Err(e) => reasons.push(format!("{size}-byte footer: {e}")),
            }
        }
        reasons.push("zstd:chunked: no GnUlInUx or GNUlInUx magic in the last 8 bytes".into());
        Err(Error::InvalidFooter(format!(
            "not an eStargz, stargz or zstd:chunked blob ({})",
            reasons.join("; ")
        )))
    }
}

/// Parses the zstd:chunked footer frame at the end of `tail` (whose last
/// 8 bytes are one of the two magics).
fn parse_zstd_chunked(tail: &[u8], blob_size: u64) -> Result<ZstdChunkedFooter> {
    let v2 = &tail[tail.len() - 8..] == ZSTD_V2_MAGIC;
    let (generation, payload_len) = if v2 {
        (ZstdGeneration::V2, 64)
    } else {
        (ZstdGeneration::V1, 40)
    };
    let frame_len = SKIPPABLE_HEADER_SIZE + payload_len;
    let bad = |m: String| {
        Error::InvalidFooter(format!("zstd:chunked v{} footer: {m}", generation.number()))
    };
    if tail.len() < frame_len {
        return Err(bad(format!(
            "the blob has {} bytes, fewer than the {frame_len}-byte footer frame",
            tail.len()
        )));
    }
    let frame = &tail[tail.len() - frame_len..];
    if !is_skippable_header(&frame[..SKIPPABLE_HEADER_SIZE], payload_len as u64) {
        return Err(bad(format!(
            "not in a skippable frame of {payload_len} bytes (header {})",
            hex::encode(&frame[..SKIPPABLE_HEADER_SIZE])
        )));
    }
    let payload = &frame[SKIPPABLE_HEADER_SIZE..];
    let field =
        |i: usize| u64::from_le_bytes(payload[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
    if field(3) != MANIFEST_TYPE_CRFS {
        return Err(bad(format!(
            "manifest type {} (only 1, CRFS, is defined)",
            field(3)
        )));
    }
    let footer = ZstdChunkedFooter {
        generation,
        toc: FramePosition {
            offset: field(0),
            compressed_len: field(1),
            uncompressed_len: field(2),
        },
        tar_split: v2.then(|| FramePosition {
            offset: field(4),
            compressed_len: field(5),
            uncompressed_len: field(6),
        }),
    };
    footer.check(blob_size, frame_len as u64)?;
    Ok(footer)
}

fn push_sg_subfield(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(&((data.len() + 4) as u16).to_le_bytes());
    out.extend_from_slice(b"SG");
    out.extend_from_slice(&(data.len() as u16).to_le_bytes());
    out.extend_from_slice(data);
}

/// Returns the FEXTRA payload of an empty gzip member of exactly `footer.len()` bytes.
fn extra_field(footer: &[u8]) -> Reason<&[u8]> {
    if footer[0..3] != [0x1f, 0x8b, 0x08] {
        return Err("no gzip magic".into());
    }
    if footer[3] & 0x04 == 0 || footer[3] & !0x04 != 0 {
        return Err(format!("gzip flags {:#04x}, want FEXTRA only", footer[3]));
    }
    let xlen = u16::from_le_bytes([footer[10], footer[11]]) as usize;
    let expected = footer.len() - 12 - EMPTY_MEMBER_TAIL.len();
    if xlen != expected {
        return Err(format!("extra field is {xlen} bytes, want {expected}"));
    }
    if footer[12 + xlen..] != EMPTY_MEMBER_TAIL {
        return Err("footer member is not empty".into());
    }
    Ok(&footer[12..12 + xlen])
}

fn sg_subfield(extra: &[u8]) -> Reason<&[u8]> {
    if extra.len() < 4 || &extra[0..2] != b"SG" {
        return Err("missing SG subfield".into());
    }
    let len = u16::from_le_bytes([extra[2], extra[3]]) as usize;
    if len != extra.len() - 4 {
        return Err(format!(
            "SG subfield length {len} does not match extra field"
        ));
    }
    Ok(&extra[4..])
}

fn parse_hex_offset(hex16: &[u8]) -> Reason<u64> {
    if hex16.len() != 16 || !hex16.iter().all(u8::is_ascii_hexdigit) {
        return Err(format!(
            "TOC offset {:?} is not 16 hex digits",
            String::from_utf8_lossy(hex16)
        ));
    }
    let text = std::str::from_utf8(hex16).expect("hex digits are ASCII");
    let value = u64::from_str_radix(text, 16).expect("validated hex");
    if value > i64::MAX as u64 {
        return Err(format!("TOC offset {value} is negative"));
    }
    Ok(value)
}

fn parse_offset_and_magic(payload: &[u8]) -> Reason<u64> {
    if payload.len() != 22 || &payload[16..] != MAGIC {
        return Err("missing STARGZ magic".into());
    }
    parse_hex_offset(&payload[..16])
}

fn parse_estargz(footer: &[u8]) -> Reason<Footer> {
    let payload = sg_subfield(extra_field(footer)?)?;
    Ok(Footer::Estargz {
        toc_offset: parse_offset_and_magic(payload)?,
    })
}

fn parse_external(footer: &[u8]) -> Reason<Footer> {
    let payload = sg_subfield(extra_field(footer)?)?;
    if payload != EXTERNAL_MAGIC {
        return Err("missing STARGZEXTERNALTOC magic".into());
    }
    Ok(Footer::ExternalToc)
}

fn parse_legacy(footer: &[u8]) -> Reason<Footer> {
    Ok(Footer::Legacy {
        toc_offset: parse_offset_and_magic(extra_field(footer)?)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        hex::encode(b)
    }

    #[test]
    fn golden_bytes_match_the_reference() {
        assert_eq!(
            hex(&Footer::Estargz { toc_offset: 0x1234 }.to_bytes()),
            "1f8b08040000000000ff1a0053471600303030303030303030303030313233345354415247\
             5a010000ffff0000000000000000"
        );
        assert_eq!(
            hex(&Footer::ExternalToc.to_bytes()),
            "1f8b08040000000000ff15005347110053544152475a45585445524e414c544f43010000ff\
             ff0000000000000000"
        );
        assert_eq!(
            hex(&Footer::Legacy { toc_offset: 0x1234 }.to_bytes()),
            "1f8b08040000000000ff16003030303030303030303030303132333453544152475a010000\
             ffff0000000000000000"
        );
    }

    #[test]
    fn round_trips_many_offsets() {
        for off in (0..200_000u64).step_by(1023) {
            for footer in [
                Footer::Estargz { toc_offset: off },
                Footer::Legacy { toc_offset: off },
            ] {
                let mut blob = vec![0u8; off as usize];
                blob.extend_from_slice(&footer.to_bytes());
                let tail = &blob[blob.len().saturating_sub(MAX_FOOTER_SIZE)..];
                assert_eq!(Footer::parse(tail, blob.len() as u64).unwrap(), footer);
            }
        }
        let ext = Footer::ExternalToc.to_bytes();
        assert_eq!(Footer::parse(&ext, 46).unwrap(), Footer::ExternalToc);
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        for len in 0..60 {
            let zeros = vec![0u8; len];
            assert!(Footer::parse(&zeros, len as u64).is_err());
            let ff = vec![0xffu8; len];
            assert!(Footer::parse(&ff, len as u64).is_err());
        }
        // Offset pointing past the blob.
        let f = Footer::Estargz { toc_offset: 1000 }.to_bytes();
        let err = Footer::parse(&f, 51).unwrap_err();
        assert!(err.to_string().contains("beyond"), "{err}");
        // Non-hex offset.
        let mut bad = Footer::Estargz { toc_offset: 1 }.to_bytes();
        bad[20] = b'z';
        assert!(Footer::parse(&bad, 1000).is_err());
        // Short XLEN.
        let mut bad = Footer::Estargz { toc_offset: 1 }.to_bytes();
        bad[10] = 2;
        assert!(Footer::parse(&bad, 1000).is_err());
    }

    fn zstd_footer(generation: ZstdGeneration) -> ZstdChunkedFooter {
        ZstdChunkedFooter {
            generation,
            toc: FramePosition {
                offset: 108,
                compressed_len: 50,
                uncompressed_len: 400,
            },
            tar_split: (generation == ZstdGeneration::V2).then_some(FramePosition {
                offset: 166,
                compressed_len: 30,
                uncompressed_len: 90,
            }),
        }
    }

    #[test]
    fn zstd_chunked_footers_round_trip_with_their_layout() {
        for generation in [ZstdGeneration::V1, ZstdGeneration::V2] {
            let z = zstd_footer(generation);
            let bytes = Footer::ZstdChunked(z).to_bytes();
            let footer = Footer::ZstdChunked(z);
            assert_eq!(bytes.len(), footer.size());
            assert_eq!(&bytes[..4], &SKIPPABLE_MAGIC);
            // Payload: offset, compressed, uncompressed, type 1, then (v2)
            // the tar-split triple, then the magic.
            assert_eq!(u64::from_le_bytes(bytes[8..16].try_into().unwrap()), 108);
            assert_eq!(u64::from_le_bytes(bytes[16..24].try_into().unwrap()), 50);
            assert_eq!(u64::from_le_bytes(bytes[24..32].try_into().unwrap()), 400);
            assert_eq!(u64::from_le_bytes(bytes[32..40].try_into().unwrap()), 1);
            let magic = &bytes[bytes.len() - 8..];
            match generation {
                ZstdGeneration::V1 => assert_eq!(magic, b"GnUlInUx"),
                ZstdGeneration::V2 => assert_eq!(magic, b"GNUlInUx"),
            }
            let mut blob = vec![0u8; 300];
            blob.extend_from_slice(&bytes);
            let tail = &blob[blob.len() - MAX_FOOTER_SIZE..];
            assert_eq!(Footer::parse(tail, blob.len() as u64).unwrap(), footer);
            assert_eq!(footer.format().generation(), Some(generation.number()));
            assert_eq!(
                footer.format().to_string(),
                format!("zstd:chunked v{}", generation.number())
            );
        }
    }

    #[test]
    fn zstd_chunked_footers_are_checked() {
        let z = zstd_footer(ZstdGeneration::V2);
        let good = z.to_bytes();
        let blob_with = |footer: &[u8], pad: usize| {
            let mut blob = vec![0u8; pad];
            blob.extend_from_slice(footer);
            blob
        };
        let err = |blob: &[u8]| {
            let tail = &blob[blob.len().saturating_sub(MAX_FOOTER_SIZE)..];
            Footer::parse(tail, blob.len() as u64)
                .unwrap_err()
                .to_string()
        };
        // The TOC and tar-split must lie inside the blob, in order.
        assert!(err(&blob_with(&good, 100)).contains("outside the blob"));
        // Manifest type other than 1.
        let mut bad = good.clone();
        bad[8 + 24] = 2;
        assert!(err(&blob_with(&bad, 300)).contains("manifest type 2"));
        // A payload not in a skippable frame of its size.
        let mut bad = good.clone();
        bad[0] = 0x28;
        assert!(err(&blob_with(&bad, 300)).contains("skippable frame"));
        // Only the magic, and too short a blob.
        assert!(Footer::parse(b"GNUlInUx", 8).is_err());
        assert!(Footer::parse(b"xxGnUlInUx", 10).is_err());
        // Offsets that overflow.
        let mut z2 = z;
        z2.toc.offset = u64::MAX - 10;
        assert!(err(&blob_with(&z2.to_bytes(), 300)).contains("outside the blob"));
    }
}
