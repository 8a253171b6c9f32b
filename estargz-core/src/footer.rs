//! The fixed-size gzip members at the end of a blob that say where the TOC is.
//!
//! * eStargz: 51 bytes, FEXTRA with one `SG` subfield holding `%016x` + `STARGZ`.
//! * external TOC: 46 bytes, `SG` subfield holding `STARGZEXTERNALTOC`.
//! * legacy crfs stargz: 47 bytes, raw (non-subfield) extra `%016x` + `STARGZ`.

use crate::error::{Error, Result};

/// Bytes of the eStargz footer (a gzip member with the TOC offset in its extra field).
pub const ESTARGZ_FOOTER_SIZE: usize = 51;
/// Bytes of the footer of a blob whose TOC is stored outside it.
pub const EXTERNAL_TOC_FOOTER_SIZE: usize = 46;
/// Bytes of the legacy stargz footer.
pub const LEGACY_FOOTER_SIZE: usize = 47;
/// The largest footer; reading this many tail bytes is enough to detect any kind.
pub const MAX_FOOTER_SIZE: usize = ESTARGZ_FOOTER_SIZE;

const GZIP_HEADER_FEXTRA: [u8; 10] = [0x1f, 0x8b, 0x08, 0x04, 0, 0, 0, 0, 0, 0xff];
/// Final empty stored deflate block, CRC32 of nothing, ISIZE 0.
const EMPTY_MEMBER_TAIL: [u8; 13] = [0x01, 0x00, 0x00, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0];
const MAGIC: &[u8] = b"STARGZ";
const EXTERNAL_MAGIC: &[u8] = b"STARGZEXTERNALTOC";

/// Why one footer kind did not match (collected for the final error).
type Reason<T> = std::result::Result<T, String>;

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
}

impl Footer {
    /// Size in bytes of this footer inside the blob.
    pub fn size(&self) -> usize {
        match self {
            Footer::Estargz { .. } => ESTARGZ_FOOTER_SIZE,
            Footer::ExternalToc => EXTERNAL_TOC_FOOTER_SIZE,
            Footer::Legacy { .. } => LEGACY_FOOTER_SIZE,
        }
    }

    /// Blob offset of the embedded TOC member, if any.
    pub fn toc_offset(&self) -> Option<u64> {
        match *self {
            Footer::Estargz { toc_offset } | Footer::Legacy { toc_offset } => Some(toc_offset),
            Footer::ExternalToc => None,
        }
    }

    /// The exact footer bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
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
        }
        out.extend_from_slice(&EMPTY_MEMBER_TAIL);
        debug_assert_eq!(out.len(), self.size());
        out
    }

    /// Detects the footer from the last bytes of a blob (`tail` should hold at
    /// least [`MAX_FOOTER_SIZE`] bytes when the blob is that large).
    /// `blob_size` bounds the TOC offset.
    pub fn parse(tail: &[u8], blob_size: u64) -> Result<Footer> {
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
        Err(Error::InvalidFooter(format!(
            "not an eStargz or stargz blob ({})",
            reasons.join("; ")
        )))
    }
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
}
