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
    /// The name's bytes when they are not UTF-8 (`name` holds them with
    /// U+FFFD in place of each invalid sequence).
    pub non_utf8_name: Option<Vec<u8>>,
    /// The same for the link name.
    pub non_utf8_link_name: Option<Vec<u8>>,
    pub kind: TarKind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub uname: String,
    pub gname: String,
    /// Modification time rounded to the nearest second.
    pub mtime: i64,
    /// The three times exactly, as Go's tar reader sees them (what a
    /// zstd:chunked v2 TOC must repeat to match its tar-split).
    pub times: ExactTimes,
    pub dev_major: u64,
    pub dev_minor: u64,
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

/// A time as whole seconds (floor) and nanoseconds.
pub type Instant = (i64, u32);

/// An entry's times exactly: mtime always; atime and ctime when a GNU
/// header or PAX records give them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExactTimes {
    pub mtime: Instant,
    pub atime: Option<Instant>,
    pub ctime: Option<Instant>,
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
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    /// PAX records in order; later records override earlier ones.
    pax: Vec<(String, Vec<u8>)>,
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `bytes` if they are not UTF-8 (what `lossy` could not keep).
fn non_utf8(bytes: &[u8]) -> Option<Vec<u8>> {
    std::str::from_utf8(bytes).is_err().then(|| bytes.to_vec())
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
    let stored = match parse_number(&block[field::CHECKSUM], "checksum", 0) {
        Ok(v) => v,
        Err(_) => return false,
    };
    let (mut unsigned, mut signed) = (0u64, 0i64);
    for (i, &b) in block.iter().enumerate() {
        let b = if field::CHECKSUM.contains(&i) {
            b' '
        } else {
            b
        };
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

/// A PAX time exactly: `[-]secs[.fraction]`, the fraction to nanoseconds
/// (later digits dropped); negative times keep floor seconds.
fn parse_pax_time_exact(value: &str) -> Option<Instant> {
    let (secs_text, frac) = value.split_once('.').unwrap_or((value, ""));
    let secs: i64 = secs_text.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut nanos = 0u32;
    for i in 0..9 {
        nanos = nanos * 10 + frac.as_bytes().get(i).map_or(0, |d| u32::from(d - b'0'));
    }
    if secs_text.starts_with('-') && nanos > 0 {
        return Some((secs.checked_sub(1)?, 1_000_000_000 - nanos));
    }
    Some((secs, nanos))
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

/// Byte ranges of the fields of a header block (POSIX ustar; GNU shares
/// the layout up to `prefix`, which it does not have).
mod field {
    use std::ops::Range;
    pub const NAME: Range<usize> = 0..100;
    pub const MODE: Range<usize> = 100..108;
    pub const UID: Range<usize> = 108..116;
    pub const GID: Range<usize> = 116..124;
    pub const SIZE: Range<usize> = 124..136;
    pub const MTIME: Range<usize> = 136..148;
    pub const CHECKSUM: Range<usize> = 148..156;
    pub const TYPEFLAG: usize = 156;
    pub const LINKNAME: Range<usize> = 157..257;
    pub const MAGIC: Range<usize> = 257..265;
    pub const UNAME: Range<usize> = 265..297;
    pub const GNAME: Range<usize> = 297..329;
    pub const DEVMAJOR: Range<usize> = 329..337;
    pub const DEVMINOR: Range<usize> = 337..345;
    pub const PREFIX: Range<usize> = 345..500;
    /// GNU headers keep access and change times where ustar has `prefix`.
    pub const GNU_ATIME: Range<usize> = 345..357;
    pub const GNU_CTIME: Range<usize> = 357..369;
}

/// One header block, read through its named fields; `at` (its offset)
/// goes into every error.
struct Header<'a> {
    block: &'a [u8; 512],
    at: u64,
}

impl Header<'_> {
    fn number(&self, range: std::ops::Range<usize>, what: &str) -> Result<u64> {
        parse_number(&self.block[range], what, self.at)
    }
    fn text(&self, range: std::ops::Range<usize>) -> String {
        lossy(cstr(&self.block[range]))
    }
    fn typeflag(&self) -> u8 {
        self.block[field::TYPEFLAG]
    }
    fn is_ustar(&self) -> bool {
        &self.block[field::MAGIC][..6] == b"ustar\0"
    }
    fn is_gnu(&self) -> bool {
        &self.block[field::MAGIC] == b"ustar  \0"
    }
    /// `prefix/name` for ustar headers, `name` otherwise.
    fn name(&self) -> Vec<u8> {
        let name = cstr(&self.block[field::NAME]);
        let prefix = cstr(&self.block[field::PREFIX]);
        if self.is_ustar() && !prefix.is_empty() {
            [prefix, b"/", name].concat()
        } else {
            name.to_vec()
        }
    }
    /// Everything the header block says about its entry (meta headers
    /// before it may override some of it), and its mode field, checked
    /// once the entry's final name is known.
    fn entry(&self, header_start: u64) -> Result<(TarEntry, u64)> {
        let size = self.number(field::SIZE, "size")?;
        let extended = self.is_ustar() || self.is_gnu();
        let (uname, gname) = if extended {
            (self.text(field::UNAME), self.text(field::GNAME))
        } else {
            (String::new(), String::new())
        };
        let mode = self.number(field::MODE, "mode")?;
        let uid = self.number(field::UID, "uid")?;
        let gid = self.number(field::GID, "gid")?;
        let mtime = self.number(field::MTIME, "mtime")? as i64;
        let (dev_major, dev_minor) = if extended {
            (
                self.number(field::DEVMAJOR, "devmajor")?,
                self.number(field::DEVMINOR, "devminor")?,
            )
        } else {
            (0, 0)
        };
        // Go reads GNU access / change times only when the field is set,
        // and drops them when they do not parse (old writers put a prefix there).
        let gnu_time = |range: std::ops::Range<usize>| -> Option<Instant> {
            if !self.is_gnu() || self.block[range.start] == 0 {
                return None;
            }
            Some((self.number(range, "time").ok()? as i64, 0))
        };
        let times = ExactTimes {
            mtime: (mtime, 0),
            atime: gnu_time(field::GNU_ATIME),
            ctime: gnu_time(field::GNU_CTIME),
        };
        let entry = TarEntry {
            header_start,
            data_start: self.at + BLOCK,
            size,
            name: lossy(&self.name()),
            link_name: self.text(field::LINKNAME),
            non_utf8_name: non_utf8(&self.name()),
            non_utf8_link_name: non_utf8(cstr(&self.block[field::LINKNAME])),
            // Decided once PAX records had their say on the name.
            kind: TarKind::Reg,
            mode: 0,
            uid,
            gid,
            uname,
            gname,
            mtime,
            times,
            dev_major,
            dev_minor,
            xattrs: BTreeMap::new(),
        };
        Ok((entry, mode))
    }
}

/// What a header's type flag makes of its block.
enum Block {
    /// Meta data for the next entry (PAX extended header, GNU long name or
    /// long link name), with its payload size.
    Meta(u8, u64),
    /// An entry of its own.
    Entry,
}

fn classify(header: &Header) -> Result<Block> {
    let at = header.at;
    Ok(match header.typeflag() {
        flag @ (b'x' | b'L' | b'K') => Block::Meta(flag, header.number(field::SIZE, "size")?),
        b'g' => {
            return Err(Error::Unsupported(format!(
                "PAX global header at offset {at} (the reference builder rejects it too)"
            )))
        }
        b'S' => {
            return Err(Error::Unsupported(format!(
                "GNU sparse file at offset {at}"
            )))
        }
        _ => Block::Entry,
    })
}

/// Reads the payload of the meta header at `at` (bounded by `MAX_META_SIZE`).
fn read_meta(src: &dyn ReadAt, at: u64, size: u64) -> Result<Vec<u8>> {
    if size > MAX_META_SIZE {
        return Err(Error::LimitExceeded(format!(
            "meta header at offset {at} is {size} bytes (max {MAX_META_SIZE})"
        )));
    }
    let data_start = at + BLOCK;
    if size > src.size() - data_start {
        return Err(Error::Truncated(format!(
            "meta header payload at offset {data_start} runs past the end"
        )));
    }
    let mut buf = vec![0u8; size as usize];
    src.read_exact_at(&mut buf, data_start)
        .map_err(|e| Error::io(format!("reading tar meta header at {at}"), e))?;
    Ok(buf)
}

impl PendingMeta {
    /// Applies (and clears) what meta headers said about `entry`: GNU long
    /// names, then PAX records in order.
    fn apply(&mut self, entry: &mut TarEntry, at: u64) -> Result<()> {
        if let Some(n) = self.long_name.take() {
            entry.name = lossy(&n);
            entry.non_utf8_name = non_utf8(&n);
        }
        if let Some(l) = self.long_link.take() {
            entry.link_name = lossy(&l);
            entry.non_utf8_link_name = non_utf8(&l);
        }
        for (key, raw_value) in std::mem::take(&mut self.pax) {
            if let Some(attr) = key.strip_prefix("SCHILY.xattr.") {
                // xattr values are raw bytes, not text.
                entry.xattrs.insert(attr.to_string(), raw_value);
                continue;
            }
            let value = lossy(&raw_value);
            let bad = |what: &str| {
                Error::InvalidTar(format!("bad PAX {what} {value:?} for entry at offset {at}"))
            };
            match key.as_str() {
                "path" => {
                    entry.name = value;
                    entry.non_utf8_name = non_utf8(&raw_value);
                }
                "linkpath" => {
                    entry.link_name = value;
                    entry.non_utf8_link_name = non_utf8(&raw_value);
                }
                "uname" => entry.uname = value,
                "gname" => entry.gname = value,
                "uid" => entry.uid = value.parse().map_err(|_| bad("uid"))?,
                "gid" => entry.gid = value.parse().map_err(|_| bad("gid"))?,
                "size" => entry.size = value.parse().map_err(|_| bad("size"))?,
                "mtime" => {
                    entry.mtime = parse_pax_time(&value).ok_or_else(|| bad("mtime"))?;
                    entry.times.mtime = parse_pax_time_exact(&value).ok_or_else(|| bad("mtime"))?;
                }
                "atime" => {
                    entry.times.atime =
                        Some(parse_pax_time_exact(&value).ok_or_else(|| bad("atime"))?)
                }
                "ctime" => {
                    entry.times.ctime =
                        Some(parse_pax_time_exact(&value).ok_or_else(|| bad("ctime"))?)
                }
                k if k.starts_with("GNU.sparse.") => {
                    return Err(Error::Unsupported(format!(
                        "PAX sparse file {:?} at offset {at}",
                        entry.name
                    )))
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn is_empty(&self) -> bool {
        self.long_name.is_none() && self.long_link.is_none() && self.pax.is_empty()
    }
}

/// The entry type a type flag names (`'0'`/`'\0'` with a trailing slash is
/// a directory, as old writers marked them).
fn kind_of(typeflag: u8, name: &str, at: u64) -> Result<TarKind> {
    Ok(match typeflag {
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
                "tar entry type {:?} for {name:?} at offset {at}",
                other as char
            )))
        }
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
        let header = Header {
            block: &block,
            at: pos,
        };
        if let Block::Meta(flag, size) = classify(&header)? {
            let payload = read_meta(src, pos, size)?;
            match flag {
                b'x' => parse_pax(&payload, pos, &mut meta.pax)?,
                b'L' => meta.long_name = Some(cstr(&payload).to_vec()),
                _ => meta.long_link = Some(cstr(&payload).to_vec()),
            }
            pos += BLOCK + padded(size);
            continue;
        }
        let (mut entry, mode) = header.entry(entry_start)?;
        meta.apply(&mut entry, pos)?;
        entry.mode = u32::try_from(mode).map_err(|_| {
            Error::InvalidTar(format!("mode {mode} of {:?} out of range", entry.name))
        })?;
        entry.kind = kind_of(header.typeflag(), &entry.name, pos)?;
        // Header-only types never have payload, whatever the size field says.
        if entry.kind != TarKind::Reg {
            entry.size = 0;
        }
        // `data_start <= total` here; compare without overflowing on huge sizes.
        if entry.size > total - entry.data_start {
            return Err(Error::Truncated(format!(
                "payload of {:?} ({} bytes at offset {}) runs past the end of the tar ({total} bytes)",
                entry.name, entry.size, entry.data_start
            )));
        }
        pos = entry.data_start + padded(entry.size);
        entry_start = pos;
        entries.push(entry);
    }
    if !meta.is_empty() {
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
