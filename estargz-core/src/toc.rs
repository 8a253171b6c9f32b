//! The TOC (`stargz.index.json`) data model, its decoder and a serializer that
//! writes the same layout as the Go reference (`MarshalIndent` with tabs, field
//! order, omit-empty rules and Go's string escaping), see spec §3.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use base64::Engine as _;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::timefmt;

mod stream;

/// File name of the TOC entry inside the blob.
pub const TOC_NAME: &str = "stargz.index.json";

/// Formats whole Unix seconds as the TOC does (`2006-01-02T15:04:05Z`).
pub fn format_time(secs: i64) -> String {
    timefmt::format_rfc3339(secs)
}

/// Entry kinds that appear in a TOC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryType {
    /// A directory.
    Dir,
    /// A regular file (its first chunk).
    Reg,
    /// A symbolic link.
    Symlink,
    /// A hard link to an earlier entry.
    Hardlink,
    /// A character device.
    Char,
    /// A block device.
    Block,
    /// A named pipe.
    Fifo,
    /// Continuation chunk of the preceding `reg` entry.
    Chunk,
}

impl EntryType {
    /// The name the TOC JSON uses (`dir`, `reg`, ...).
    pub fn as_str(&self) -> &'static str {
        match self {
            EntryType::Dir => "dir",
            EntryType::Reg => "reg",
            EntryType::Symlink => "symlink",
            EntryType::Hardlink => "hardlink",
            EntryType::Char => "char",
            EntryType::Block => "block",
            EntryType::Fifo => "fifo",
            EntryType::Chunk => "chunk",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "dir" => EntryType::Dir,
            "reg" => EntryType::Reg,
            "symlink" => EntryType::Symlink,
            "hardlink" => EntryType::Hardlink,
            "char" => EntryType::Char,
            "block" => EntryType::Block,
            "fifo" => EntryType::Fifo,
            "chunk" => EntryType::Chunk,
            other => return Err(Error::InvalidToc(format!("unknown entry type {other:?}"))),
        })
    }

    /// True for entries that carry file payload (`reg` and `chunk`).
    pub fn is_data(&self) -> bool {
        matches!(self, EntryType::Reg | EntryType::Chunk)
    }
}

/// What a chunk's bytes are (zstd:chunked `chunkType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ChunkType {
    /// Data stored in the blob (`""`).
    #[default]
    Data,
    /// All zeros (`"zeros"`): readers produce them without fetching.
    Zeros,
}

impl ChunkType {
    /// The name the TOC JSON uses (`""` or `"zeros"`).
    pub fn as_str(&self) -> &'static str {
        match self {
            ChunkType::Data => "",
            ChunkType::Zeros => "zeros",
        }
    }
}

/// One TOC entry as stored in the JSON (names raw, not cleaned).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TocEntry {
    /// Path as written in the TOC (may start with `./`).
    pub name: String,
    /// What the entry is.
    pub kind: EntryType,
    /// File size (regular files).
    pub size: u64,
    /// Modification time in whole Unix seconds; `None` when absent.
    pub mod_time: Option<i64>,
    /// Target of a symlink or hard link.
    pub link_name: String,
    /// Tar header mode, verbatim.
    pub mode: u32,
    /// Owner user id.
    pub uid: u64,
    /// Owner group id.
    pub gid: u64,
    /// Owner user name (empty when the writer omitted a repeat).
    pub user_name: String,
    /// Owner group name (empty when the writer omitted a repeat).
    pub group_name: String,
    /// Blob offset of the gzip member holding this chunk.
    pub offset: u64,
    /// Uncompressed bytes before the chunk inside that member.
    pub inner_offset: u64,
    /// Device major number.
    pub dev_major: u64,
    /// Device minor number.
    pub dev_minor: u64,
    /// Extended attributes.
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// Digest of the whole file content (regular files).
    pub digest: String,
    /// Offset of this chunk in the file.
    pub chunk_offset: u64,
    /// Length of this chunk (0: to the end of the file).
    pub chunk_size: u64,
    /// Digest of this chunk's content.
    pub chunk_digest: String,
    /// zstd:chunked: blob offset where this file's compressed data ends (0: not given).
    pub end_offset: u64,
    /// zstd:chunked: access time in whole Unix seconds.
    pub access_time: Option<i64>,
    /// zstd:chunked: status change time in whole Unix seconds.
    pub change_time: Option<i64>,
    /// zstd:chunked: whether the chunk is data or zeros.
    pub chunk_type: ChunkType,
    /// Nanoseconds of the three times (zstd:chunked v2 keeps them; eStargz
    /// times are whole seconds, so these are 0 there).
    pub sub_seconds: SubSeconds,
}

/// The sub-second parts (nanoseconds) of an entry's times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SubSeconds {
    /// Of `modtime`.
    pub modified: u32,
    /// Of `accesstime`.
    pub accessed: u32,
    /// Of `changetime`.
    pub changed: u32,
}

impl TocEntry {
    /// An entry with only a name and a type.
    pub fn new(name: impl Into<String>, kind: EntryType) -> Self {
        TocEntry {
            name: name.into(),
            kind,
            size: 0,
            mod_time: None,
            link_name: String::new(),
            mode: 0,
            uid: 0,
            gid: 0,
            user_name: String::new(),
            group_name: String::new(),
            offset: 0,
            inner_offset: 0,
            dev_major: 0,
            dev_minor: 0,
            xattrs: BTreeMap::new(),
            digest: String::new(),
            chunk_offset: 0,
            chunk_size: 0,
            chunk_digest: String::new(),
            end_offset: 0,
            access_time: None,
            change_time: None,
            chunk_type: ChunkType::Data,
            sub_seconds: SubSeconds::default(),
        }
    }
}

/// A whole TOC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Toc {
    /// TOC format version (1).
    pub version: i64,
    /// Entries in blob order.
    pub entries: Vec<TocEntry>,
    /// zstd:chunked v2: digest of the compressed tar-split frame (empty: none).
    pub tar_split_digest: String,
}

/// Wire form of one entry, used only for decoding; all fields optional like Go's zero values.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEntry {
    name: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    size: i64,
    #[serde(default)]
    modtime: Option<String>,
    #[serde(default)]
    link_name: String,
    #[serde(default)]
    mode: i64,
    #[serde(default)]
    uid: i64,
    #[serde(default)]
    gid: i64,
    #[serde(default)]
    user_name: String,
    #[serde(default)]
    group_name: String,
    #[serde(default)]
    offset: i64,
    #[serde(default)]
    inner_offset: i64,
    #[serde(default)]
    dev_major: i64,
    #[serde(default)]
    dev_minor: i64,
    #[serde(default)]
    xattrs: Option<BTreeMap<String, String>>,
    #[serde(default)]
    digest: String,
    #[serde(default)]
    chunk_offset: i64,
    #[serde(default)]
    chunk_size: i64,
    #[serde(default)]
    chunk_digest: String,
    #[serde(default)]
    end_offset: i64,
    #[serde(default, rename = "accesstime")]
    access_time: Option<String>,
    #[serde(default, rename = "changetime")]
    change_time: Option<String>,
    #[serde(default)]
    chunk_type: String,
}

fn non_negative(value: i64, field: &str, name: &str) -> Result<u64> {
    u64::try_from(value)
        .map_err(|_| Error::InvalidToc(format!("entry {name:?}: negative {field} {value}")))
}

fn check_digest(d: &str, field: &str, name: &str) -> Result<()> {
    if d.is_empty() || crate::digest::is_sha256_digest(d) {
        Ok(())
    } else {
        Err(Error::InvalidToc(format!(
            "entry {name:?}: {field} {d:?} is not sha256:<64 lowercase hex>"
        )))
    }
}

impl RawEntry {
    fn into_entry(self, index: usize) -> Result<TocEntry> {
        let name = self
            .name
            .ok_or_else(|| Error::InvalidToc(format!("entry #{index} has no name")))?;
        let kind = EntryType::parse(
            self.kind
                .as_deref()
                .ok_or_else(|| Error::InvalidToc(format!("entry {name:?} has no type")))?,
        )?;
        // Go's reader maps unparsable times to the zero time; do the same.
        let time = |t: Option<&str>| {
            t.filter(|s| !s.is_empty())
                .and_then(timefmt::parse_rfc3339_nanos)
        };
        let (mod_time, access_time, change_time) = (
            time(self.modtime.as_deref()),
            time(self.access_time.as_deref()),
            time(self.change_time.as_deref()),
        );
        let nanos = |t: Option<(i64, u32)>| t.map_or(0, |(_, n)| n);
        let sub_seconds = SubSeconds {
            modified: nanos(mod_time),
            accessed: nanos(access_time),
            changed: nanos(change_time),
        };
        let chunk_type = match self.chunk_type.as_str() {
            "" => ChunkType::Data,
            "zeros" => ChunkType::Zeros,
            other => {
                return Err(Error::InvalidToc(format!(
                    "entry {name:?}: unknown chunkType {other:?}"
                )))
            }
        };
        let mut xattrs = BTreeMap::new();
        for (k, v) in self.xattrs.unwrap_or_default() {
            let value = base64::engine::general_purpose::STANDARD
                .decode(v.as_bytes())
                .map_err(|e| {
                    Error::InvalidToc(format!("entry {name:?}: xattr {k:?} is not base64: {e}"))
                })?;
            xattrs.insert(k, value);
        }
        check_digest(&self.digest, "digest", &name)?;
        check_digest(&self.chunk_digest, "chunkDigest", &name)?;
        let mode = u32::try_from(self.mode).map_err(|_| {
            Error::InvalidToc(format!("entry {name:?}: mode {} out of range", self.mode))
        })?;
        Ok(TocEntry {
            size: non_negative(self.size, "size", &name)?,
            uid: non_negative(self.uid, "uid", &name)?,
            gid: non_negative(self.gid, "gid", &name)?,
            offset: non_negative(self.offset, "offset", &name)?,
            inner_offset: non_negative(self.inner_offset, "innerOffset", &name)?,
            dev_major: non_negative(self.dev_major, "devMajor", &name)?,
            dev_minor: non_negative(self.dev_minor, "devMinor", &name)?,
            chunk_offset: non_negative(self.chunk_offset, "chunkOffset", &name)?,
            chunk_size: non_negative(self.chunk_size, "chunkSize", &name)?,
            end_offset: non_negative(self.end_offset, "endOffset", &name)?,
            access_time: access_time.map(|(s, _)| s),
            change_time: change_time.map(|(s, _)| s),
            chunk_type,
            sub_seconds,
            name,
            kind,
            mod_time: mod_time.map(|(s, _)| s),
            link_name: self.link_name,
            mode,
            user_name: self.user_name,
            group_name: self.group_name,
            xattrs,
            digest: self.digest,
            chunk_digest: self.chunk_digest,
        })
    }
}

/// Bounds on what decoding a TOC may hold in memory, checked per entry as
/// the JSON streams in, before anything is allocated for the next entry.
#[derive(Debug, Clone, Copy)]
pub struct TocLimits {
    /// Most entries kept (after collapsing repeats of the previous entry).
    pub max_entries: u64,
    /// Most bytes of entry names and link names, summed over kept entries.
    pub max_name_bytes: u64,
}

impl TocLimits {
    /// No bound beyond what the JSON itself holds.
    pub const UNLIMITED: TocLimits = TocLimits {
        max_entries: u64::MAX,
        max_name_bytes: u64::MAX,
    };
}

/// Where decoded entries go: a vector ([`Toc`]) or straight into a reader's
/// tree, so a TOC never has to exist as a vector of entries.
pub(crate) type EntrySink<'s> = dyn FnMut(&TocEntry) -> Result<()> + 's;

/// What happens to each decoded entry before the sink gets it: it is
/// converted and checked against the limits, and an entry equal to the
/// previous one is dropped (a later duplicate replaces an earlier one
/// anyway), so a repeated entry costs parsing time but no memory.
struct EntryFilter<'a> {
    limits: &'a TocLimits,
    previous: Option<TocEntry>,
    seen: usize,
    kept: u64,
    name_bytes: u64,
}

impl<'a> EntryFilter<'a> {
    fn new(limits: &'a TocLimits) -> Self {
        EntryFilter {
            limits,
            previous: None,
            seen: 0,
            kept: 0,
            name_bytes: 0,
        }
    }
    /// Entries decoded so far.
    fn seen(&self) -> usize {
        self.seen
    }
    /// Entries handed to the sink so far.
    fn kept(&self) -> u64 {
        self.kept
    }
    fn push(&mut self, raw: RawEntry, sink: &mut EntrySink<'_>) -> Result<()> {
        let entry = raw.into_entry(self.seen)?;
        self.seen += 1;
        if entry.kind != EntryType::Chunk && self.previous.as_ref() == Some(&entry) {
            return Ok(());
        }
        if self.kept >= self.limits.max_entries {
            return Err(Error::LimitExceeded(format!(
                "the TOC has more than {} entries (max_entries)",
                self.limits.max_entries
            )));
        }
        self.name_bytes += (entry.name.len() + entry.link_name.len()) as u64;
        if self.name_bytes > self.limits.max_name_bytes {
            return Err(Error::LimitExceeded(format!(
                "the TOC's entry and link names exceed {} bytes (max_name_bytes)",
                self.limits.max_name_bytes
            )));
        }
        sink(&entry)?;
        self.kept += 1;
        self.previous = Some(entry);
        Ok(())
    }
}

pub(crate) use stream::{decode, Decoded};

impl Toc {
    /// Decodes TOC JSON. Only the first JSON value is used (like Go's decoder);
    /// trailing bytes are ignored.
    pub fn from_json(bytes: &[u8]) -> Result<Toc> {
        Self::from_json_limited(bytes, &TocLimits::UNLIMITED)
    }

    /// [`Toc::from_json`] within `limits`.
    pub fn from_json_limited(bytes: &[u8], limits: &TocLimits) -> Result<Toc> {
        Self::from_reader_limited(bytes, limits)
    }

    /// Decodes the first JSON value of `reader` within `limits`, without
    /// holding the JSON text in memory. Bytes after it may be read (and
    /// are ignored).
    pub fn from_reader_limited(reader: impl std::io::Read, limits: &TocLimits) -> Result<Toc> {
        let mut entries = Vec::new();
        let decoded = decode(reader, limits, &mut |e| {
            entries.push(e.clone());
            Ok(())
        })?;
        Ok(Toc {
            version: decoded.version,
            entries,
            tar_split_digest: decoded.tar_split_digest,
        })
    }

    /// Serializes like Go's `json.MarshalIndent(toc, "", "\t")`.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = String::with_capacity(64 + self.entries.len() * 256);
        out.push_str("{\n\t\"version\": ");
        let _ = write!(out, "{}", self.version);
        out.push_str(",\n\t\"entries\": ");
        if self.entries.is_empty() {
            out.push_str("null");
        } else {
            out.push_str("[\n");
            for (i, e) in self.entries.iter().enumerate() {
                write_entry(&mut out, e);
                out.push_str(if i + 1 < self.entries.len() {
                    ",\n"
                } else {
                    "\n"
                });
            }
            out.push_str("\t]");
        }
        if !self.tar_split_digest.is_empty() {
            out.push_str(",\n\t\"tarSplitDigest\": ");
            write_go_string(&mut out, &self.tar_split_digest);
        }
        out.push_str("\n}");
        out.into_bytes()
    }
}

struct Fields<'a> {
    out: &'a mut String,
    first: bool,
}

impl Fields<'_> {
    fn key(&mut self, key: &str) {
        self.out.push_str(if self.first { "\n" } else { ",\n" });
        self.first = false;
        self.out.push_str("\t\t\t\"");
        self.out.push_str(key);
        self.out.push_str("\": ");
    }
    fn str(&mut self, key: &str, value: &str, always: bool) {
        if always || !value.is_empty() {
            self.key(key);
            write_go_string(self.out, value);
        }
    }
    fn num(&mut self, key: &str, value: u64) {
        if value != 0 {
            self.key(key);
            let _ = write!(self.out, "{value}");
        }
    }
}

fn write_entry(out: &mut String, e: &TocEntry) {
    out.push_str("\t\t{");
    let mut f = Fields { out, first: true };
    f.str("name", &e.name, true);
    f.str("type", e.kind.as_str(), true);
    f.num("size", e.size);
    let sub = e.sub_seconds;
    if let Some(t) = e.mod_time {
        f.str(
            "modtime",
            &timefmt::format_rfc3339_nanos(t, sub.modified),
            false,
        );
    }
    f.str("linkName", &e.link_name, false);
    f.num("mode", e.mode as u64);
    f.num("uid", e.uid);
    f.num("gid", e.gid);
    f.str("userName", &e.user_name, false);
    f.str("groupName", &e.group_name, false);
    f.num("offset", e.offset);
    f.num("innerOffset", e.inner_offset);
    f.num("devMajor", e.dev_major);
    f.num("devMinor", e.dev_minor);
    if !e.xattrs.is_empty() {
        f.key("xattrs");
        f.out.push('{');
        for (i, (k, v)) in e.xattrs.iter().enumerate() {
            f.out
                .push_str(if i == 0 { "\n\t\t\t\t" } else { ",\n\t\t\t\t" });
            write_go_string(f.out, k);
            f.out.push_str(": \"");
            f.out
                .push_str(&base64::engine::general_purpose::STANDARD.encode(v));
            f.out.push('"');
        }
        f.out.push_str("\n\t\t\t}");
    }
    f.str("digest", &e.digest, false);
    f.num("chunkOffset", e.chunk_offset);
    f.num("chunkSize", e.chunk_size);
    f.str("chunkDigest", &e.chunk_digest, false);
    // zstd:chunked fields; never set in eStargz, so its layout is unchanged.
    f.num("endOffset", e.end_offset);
    for (key, t, nanos) in [
        ("accesstime", e.access_time, sub.accessed),
        ("changetime", e.change_time, sub.changed),
    ] {
        if let Some(t) = t {
            f.str(key, &timefmt::format_rfc3339_nanos(t, nanos), false);
        }
    }
    f.str("chunkType", e.chunk_type.as_str(), false);
    out.push_str("\n\t\t}");
}

/// Writes a JSON string with Go `encoding/json` escaping (HTML-safe).
fn write_go_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_like_go() {
        let mut reg = TocEntry::new("foo/bar.txt", EntryType::Reg);
        reg.size = 10;
        reg.mod_time = Some(1577934246);
        reg.mode = 0o644;
        reg.uid = 1000;
        reg.user_name = "user".into();
        reg.offset = 315;
        reg.xattrs
            .insert("user.foo".into(), vec![0x62, 0x61, 0x72, 0xff]);
        reg.digest = format!("sha256:{}", "a".repeat(64));
        reg.chunk_size = 4;
        let mut fifo = TocEntry::new("dev/<fifo>&", EntryType::Fifo);
        fifo.mode = 0o600;
        let toc = Toc {
            version: 1,
            entries: vec![reg, fifo],
            tar_split_digest: String::new(),
        };
        let json = String::from_utf8(toc.to_json()).unwrap();
        let want = format!(
            "{{\n\t\"version\": 1,\n\t\"entries\": [\n\t\t{{\n\t\t\t\"name\": \"foo/bar.txt\",\n\
             \t\t\t\"type\": \"reg\",\n\t\t\t\"size\": 10,\n\t\t\t\"modtime\": \"2020-01-02T03:04:06Z\",\n\
             \t\t\t\"mode\": 420,\n\t\t\t\"uid\": 1000,\n\t\t\t\"userName\": \"user\",\n\
             \t\t\t\"offset\": 315,\n\t\t\t\"xattrs\": {{\n\t\t\t\t\"user.foo\": \"YmFy/w==\"\n\t\t\t}},\n\
             \t\t\t\"digest\": \"sha256:{}\",\n\t\t\t\"chunkSize\": 4\n\t\t}},\n\
             \t\t{{\n\t\t\t\"name\": \"dev/\\u003cfifo\\u003e\\u0026\",\n\t\t\t\"type\": \"fifo\",\n\
             \t\t\t\"mode\": 384\n\t\t}}\n\t]\n}}",
            "a".repeat(64)
        );
        assert_eq!(json, want);
        assert_eq!(Toc::from_json(json.as_bytes()).unwrap(), toc);
    }

    #[test]
    fn empty_toc_is_null_entries() {
        let toc = Toc {
            version: 1,
            entries: vec![],
            tar_split_digest: String::new(),
        };
        assert_eq!(
            String::from_utf8(toc.to_json()).unwrap(),
            "{\n\t\"version\": 1,\n\t\"entries\": null\n}"
        );
        assert_eq!(Toc::from_json(&toc.to_json()).unwrap(), toc);
    }

    #[test]
    fn rejects_bad_json_with_context() {
        for (bad, needle) in [
            (&b""[..], "empty"),
            (b"{", "bad JSON"),
            (b"{\"entries\":[{\"type\":\"reg\"}]}", "no name"),
            (
                b"{\"entries\":[{\"name\":\"a\",\"type\":\"weird\"}]}",
                "unknown entry type",
            ),
            (
                b"{\"entries\":[{\"name\":\"a\",\"type\":\"reg\",\"size\":-1}]}",
                "negative size",
            ),
            (
                b"{\"entries\":[{\"name\":\"a\",\"type\":\"reg\",\"digest\":\"md5:x\"}]}",
                "sha256",
            ),
            (
                b"{\"entries\":[{\"name\":\"a\",\"type\":\"reg\",\"xattrs\":{\"k\":\"!!\"}}]}",
                "base64",
            ),
            (
                b"{\"entries\":[{\"name\":\"a\",\"type\":\"reg\",\"size\":\"1\"}]}",
                "bad JSON",
            ),
        ] {
            let err = Toc::from_json(bad).unwrap_err().to_string();
            assert!(err.contains(needle), "{err} should mention {needle}");
        }
    }

    #[test]
    fn ignores_unknown_keys_and_trailing_bytes() {
        let toc = Toc::from_json(b"{\"version\":1,\"entries\":[{\"name\":\"a\",\"type\":\"dir\",\"NumLink\":0}]} trailing").unwrap();
        assert_eq!(toc.entries.len(), 1);
    }

    #[test]
    fn large_tocs_with_tricky_names_decode_across_window_refills() {
        // Over a megabyte of JSON, so values straddle the decoder's reads;
        // names full of the bytes its scanner must treat as plain string data.
        let mut entries = Vec::new();
        for i in 0..20000 {
            let mut e = TocEntry::new(
                format!("d{}/q\"{{[}}]\\ \u{e9}\n,:{i}", i % 7),
                EntryType::Reg,
            );
            e.size = i;
            e.mod_time = Some(1_700_000_000 + i as i64);
            if i % 5 == 0 {
                e.xattrs
                    .insert(format!("user.{{x}}{i}"), vec![b'}'; (i % 50) as usize]);
            }
            entries.push(e);
        }
        let toc = Toc {
            version: 1,
            entries,
            tar_split_digest: String::new(),
        };
        let json = toc.to_json();
        assert!(json.len() > 1 << 20);
        assert_eq!(Toc::from_json(&json).unwrap(), toc);
        // The same bytes arriving a few at a time.
        struct Trickle<'a>(&'a [u8]);
        impl std::io::Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = buf.len().min(self.0.len()).min(7);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let trickled = Toc::from_reader_limited(Trickle(&json), &TocLimits::UNLIMITED).unwrap();
        assert_eq!(trickled, toc);
    }

    #[test]
    fn the_top_level_object_is_checked_like_json() {
        let ok = |json: &str| Toc::from_json(json.as_bytes()).unwrap();
        assert_eq!(ok(" \n{ \"entries\" : null , \"version\" : 2 }").version, 2);
        assert_eq!(
            ok("{\"v\\u0065rsion\":3}").version,
            3,
            "keys are compared decoded"
        );
        assert_eq!(
            ok("{\"x\":{\"entries\":[1]},\"entries\":[]}").entries.len(),
            0
        );
        assert_eq!(ok("{}").entries.len(), 0);
        for bad in [
            "[]",
            "null",
            "{\"version\":1,}",
            "{\"version\":1 \"entries\":null}",
            "{\"version\":1,\"version\":1}",
            "{\"entries\":null,\"entries\":null}",
            "{\"entries\":5}",
            "{\"entries\":[{\"name\":\"a\",\"type\":\"dir\"},]}",
            "{\"entries\":[{\"name\":\"a\",\"type\":\"dir\"}",
            "{\"version\":tru}",
            "{\"x\":\"unterminated}",
            "{1:2}",
        ] {
            let err = Toc::from_json(bad.as_bytes()).unwrap_err();
            assert!(
                matches!(err, Error::InvalidToc(ref m) if m.contains("JSON")),
                "{bad:?}: {err}"
            );
        }
        // A scalar that never ends is refused without buffering the rest.
        let mut long = b"{\"version\":".to_vec();
        long.resize(long.len() + (1 << 20), b'1');
        assert!(Toc::from_json(&long)
            .unwrap_err()
            .to_string()
            .contains("longer than"));
    }
}
