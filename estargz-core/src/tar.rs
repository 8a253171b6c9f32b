//! Tar parsing with raw-byte accounting. The builder copies header bytes
//! verbatim (so `tar -x` of the result equals `tar -x` of the input) and needs
//! to know exactly where each entry's headers and payload lie in the input.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::source::ReadAt;

pub const BLOCK: u64 = 512;
/// Upper bound for PAX / GNU long-name payloads we are willing to buffer.
const MAX_META_SIZE: u64 = 16 << 20;

/// Kind of a tar entry, after normalisation (`'\0'` → regular or dir).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TarKind {
    Reg,
    Hardlink,
    Symlink,
    Char,
    Block,
    Dir,
    Fifo,
}

/// One logical tar entry and where its bytes lie in the input.
#[derive(Debug, Clone)]
pub struct TarEntry {
    /// First byte of the entry's own blocks (PAX / GNU meta headers included).
    pub header_start: u64,
    /// First payload byte (right after the main header block).
    pub data_start: u64,
    /// Payload size (0 for header-only types).
    pub size: u64,
    pub name: String,
    pub link_name: String,
    pub kind: TarKind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub uname: String,
    pub gname: String,
    /// Modification time rounded to the nearest second.
    pub mtime: i64,
    pub dev_major: u64,
    pub dev_minor: u64,
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

/// Rounds up to a multiple of the tar block size.
pub fn padded(n: u64) -> u64 {
    n.div_ceil(BLOCK) * BLOCK
}

/// All entries of a tar plus the position where the entry area ends.
#[derive(Debug, Clone)]
pub struct TarIndex {
    pub entries: Vec<TarEntry>,
    /// Where the end-of-archive marker (or the end of the input) starts.
    pub entries_end: u64,
    /// Total input size.
    pub total_size: u64,
}

#[derive(Default)]
struct PendingMeta {
    long_name: Option<String>,
    long_link: Option<String>,
    /// PAX records in order; later records override earlier ones.
    pax: Vec<(String, Vec<u8>)>,
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// NUL-terminated string field.
fn cstr(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    &field[..end]
}

/// Numeric field: octal text, or GNU base-256 when the high bit is set.
pub(crate) fn parse_number(field: &[u8], what: &str, at: u64) -> Result<u64> {
    if let Some(&first) = field.first() {
        if first & 0x80 != 0 {
            if first & 0x40 != 0 {
                return Err(Error::InvalidTar(format!(
                    "negative base-256 {what} in header at offset {at}"
                )));
            }
            let mut value: u64 = (first & 0x3f) as u64;
            for &b in &field[1..] {
                value = value
                    .checked_mul(256)
                    .and_then(|v| v.checked_add(b as u64))
                    .ok_or_else(|| Error::InvalidTar(format!("{what} overflows at offset {at}")))?;
            }
            return Ok(value);
        }
    }
    let text = cstr(field);
    let text = std::str::from_utf8(text)
        .map_err(|_| Error::InvalidTar(format!("non-ASCII {what} in header at offset {at}")))?
        .trim_matches(|c| c == ' ' || c == '\0');
    if text.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(text, 8).map_err(|_| {
        Error::InvalidTar(format!(
            "bad octal {what} {text:?} in header at offset {at}"
        ))
    })
}

pub(crate) fn checksum_ok(block: &[u8; 512]) -> bool {
    let stored = match parse_number(&block[148..156], "checksum", 0) {
        Ok(v) => v,
        Err(_) => return false,
    };
    let (mut unsigned, mut signed) = (0u64, 0i64);
    for (i, &b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += b as u64;
        signed += (b as i8) as i64;
    }
    stored == unsigned || stored as i64 == signed
}

/// Parses PAX records (`"<len> <key>=<value>\n"`).
fn parse_pax(data: &[u8], at: u64, into: &mut Vec<(String, Vec<u8>)>) -> Result<()> {
    let mut rest = data;
    while !rest.is_empty() {
        let bad = || Error::InvalidTar(format!("malformed PAX record in header at offset {at}"));
        let space = rest.iter().position(|&b| b == b' ').ok_or_else(bad)?;
        let len: usize = std::str::from_utf8(&rest[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)?;
        if len <= space + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err(bad());
        }
        let record = &rest[space + 1..len - 1];
        let eq = record.iter().position(|&b| b == b'=').ok_or_else(bad)?;
        into.push((lossy(&record[..eq]), record[eq + 1..].to_vec()));
        rest = &rest[len..];
    }
    Ok(())
}

fn parse_pax_time(value: &str) -> Option<i64> {
    let (secs, frac) = value.split_once('.').unwrap_or((value, ""));
    let secs: i64 = secs.parse().ok()?;
    // Round half up on the first fractional digit, like Go's Time.Round(time.Second).
    let round_up = frac.as_bytes().first().is_some_and(|&d| d >= b'5');
    Some(if round_up && secs >= 0 {
        secs + 1
    } else {
        secs
    })
}

/// Indexes a tar stream held in a positional-read source.
pub fn index(src: &dyn ReadAt) -> Result<TarIndex> {
    let total = src.size();
    let mut entries = Vec::new();
    let mut pos = 0u64;
    let mut entry_start = 0u64;
    let mut meta = PendingMeta::default();
    let mut block = [0u8; 512];
    loop {
        if pos + BLOCK > total {
            if pos < total {
                return Err(Error::Truncated(format!(
                    "tar ends inside a header block at offset {pos} (size {total})"
                )));
            }
            break;
        }
        src.read_exact_at(&mut block, pos)
            .map_err(|e| Error::io(format!("reading tar header at offset {pos}"), e))?;
        if block.iter().all(|&b| b == 0) {
            break;
        }
        if !checksum_ok(&block) {
            return Err(Error::InvalidTar(format!(
                "bad header checksum at offset {pos}"
            )));
        }
        let size = parse_number(&block[124..136], "size", pos)?;
        let data_start = pos + BLOCK;
        let typeflag = block[156];
        let read_meta = |size: u64| -> Result<Vec<u8>> {
            if size > MAX_META_SIZE {
                return Err(Error::LimitExceeded(format!(
                    "meta header at offset {pos} is {size} bytes (max {MAX_META_SIZE})"
                )));
            }
            if size > total - data_start {
                return Err(Error::Truncated(format!(
                    "meta header payload at offset {data_start} runs past the end"
                )));
            }
            let mut buf = vec![0u8; size as usize];
            src.read_exact_at(&mut buf, data_start)
                .map_err(|e| Error::io(format!("reading tar meta header at {pos}"), e))?;
            Ok(buf)
        };
        match typeflag {
            b'x' => {
                parse_pax(&read_meta(size)?, pos, &mut meta.pax)?;
                pos = data_start + padded(size);
                continue;
            }
            b'L' => {
                meta.long_name = Some(lossy(cstr(&read_meta(size)?)));
                pos = data_start + padded(size);
                continue;
            }
            b'K' => {
                meta.long_link = Some(lossy(cstr(&read_meta(size)?)));
                pos = data_start + padded(size);
                continue;
            }
            b'g' => {
                return Err(Error::Unsupported(format!(
                    "PAX global header at offset {pos} (the reference builder rejects it too)"
                )))
            }
            b'S' => {
                return Err(Error::Unsupported(format!(
                    "GNU sparse file at offset {pos}"
                )))
            }
            _ => {}
        }
        let magic = &block[257..265];
        let is_gnu = magic == b"ustar  \0";
        let is_ustar = &magic[..6] == b"ustar\0";
        let mut name = cstr(&block[0..100]).to_vec();
        if is_ustar {
            let prefix = cstr(&block[345..500]);
            if !prefix.is_empty() {
                let mut full = prefix.to_vec();
                full.push(b'/');
                full.extend_from_slice(&name);
                name = full;
            }
        }
        let mut name = lossy(&name);
        let mut link_name = lossy(cstr(&block[157..257]));
        let (mut uname, mut gname) = if is_ustar || is_gnu {
            (lossy(cstr(&block[265..297])), lossy(cstr(&block[297..329])))
        } else {
            (String::new(), String::new())
        };
        let mode = parse_number(&block[100..108], "mode", pos)?;
        let mut uid = parse_number(&block[108..116], "uid", pos)?;
        let mut gid = parse_number(&block[116..124], "gid", pos)?;
        let mut mtime = parse_number(&block[136..148], "mtime", pos)? as i64;
        let (dev_major, dev_minor) = if is_ustar || is_gnu {
            (
                parse_number(&block[329..337], "devmajor", pos)?,
                parse_number(&block[337..345], "devminor", pos)?,
            )
        } else {
            (0, 0)
        };
        let mut size = size;
        if let Some(n) = meta.long_name.take() {
            name = n;
        }
        if let Some(l) = meta.long_link.take() {
            link_name = l;
        }
        let mut xattrs = BTreeMap::new();
        for (key, raw_value) in std::mem::take(&mut meta.pax) {
            if let Some(attr) = key.strip_prefix("SCHILY.xattr.") {
                // xattr values are raw bytes, not text.
                xattrs.insert(attr.to_string(), raw_value);
                continue;
            }
            let value = lossy(&raw_value);
            let bad = |what: &str| {
                Error::InvalidTar(format!(
                    "bad PAX {what} {value:?} for entry at offset {pos}"
                ))
            };
            match key.as_str() {
                "path" => name = value,
                "linkpath" => link_name = value,
                "uname" => uname = value,
                "gname" => gname = value,
                "uid" => uid = value.parse().map_err(|_| bad("uid"))?,
                "gid" => gid = value.parse().map_err(|_| bad("gid"))?,
                "size" => size = value.parse().map_err(|_| bad("size"))?,
                "mtime" => mtime = parse_pax_time(&value).ok_or_else(|| bad("mtime"))?,
                k if k.starts_with("GNU.sparse.") => {
                    return Err(Error::Unsupported(format!(
                        "PAX sparse file {name:?} at offset {pos}"
                    )))
                }
                _ => {}
            }
        }
        let kind = match typeflag {
            b'0' | b'\0' if name.ends_with('/') => TarKind::Dir,
            b'0' | b'\0' => TarKind::Reg,
            b'1' => TarKind::Hardlink,
            b'2' => TarKind::Symlink,
            b'3' => TarKind::Char,
            b'4' => TarKind::Block,
            b'5' => TarKind::Dir,
            b'6' => TarKind::Fifo,
            other => {
                return Err(Error::Unsupported(format!(
                    "tar entry type {:?} for {name:?} at offset {pos}",
                    other as char
                )))
            }
        };
        // Header-only types never have payload, whatever the size field says.
        if kind != TarKind::Reg {
            size = 0;
        }
        // `data_start <= total` here; compare without overflowing on huge sizes.
        if size > total - data_start {
            return Err(Error::Truncated(format!(
                "payload of {name:?} ({size} bytes at offset {data_start}) runs past the end of the tar ({total} bytes)"
            )));
        }
        let mode = u32::try_from(mode)
            .map_err(|_| Error::InvalidTar(format!("mode {mode} of {name:?} out of range")))?;
        entries.push(TarEntry {
            header_start: entry_start,
            data_start,
            size,
            name,
            link_name,
            kind,
            mode,
            uid,
            gid,
            uname,
            gname,
            mtime,
            dev_major,
            dev_minor,
            xattrs,
        });
        pos = data_start + padded(size);
        entry_start = pos;
    }
    if meta.long_name.is_some() || meta.long_link.is_some() || !meta.pax.is_empty() {
        return Err(Error::Truncated(
            "tar ends after a meta header without its entry".into(),
        ));
    }
    Ok(TarIndex {
        entries,
        entries_end: pos.min(total),
        total_size: total,
    })
}

/// Normalises an archive path the way eStargz readers do:
/// `path.Clean("/" + name)` without the leading slash (`""` is the root).
pub fn clean_name(name: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_like_go() {
        for (raw, want) in [
            ("./a/b/", "a/b"),
            ("../z", "z"),
            ("/", ""),
            ("./", ""),
            ("a/../../b", "b"),
            ("/x//y/./z", "x/y/z"),
        ] {
            assert_eq!(clean_name(raw), want, "{raw}");
        }
    }

    #[test]
    fn truncated_and_garbage_inputs_fail_cleanly() {
        assert!(index(&vec![1u8; 100]).is_err());
        assert!(index(&vec![7u8; 1024]).is_err());
        let empty = index(&vec![0u8; 1024]).unwrap();
        assert!(empty.entries.is_empty());
        assert!(index(&Vec::new()).unwrap().entries.is_empty());
    }
}
