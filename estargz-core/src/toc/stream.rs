//! Decoding TOC JSON from a reader at the speed of decoding a slice, without
//! holding the text: the top-level object is walked here, byte by byte, and
//! each value in it (every entry object) is cut out of a window over the
//! stream and handed to `serde_json` as a slice. serde_json's own reader
//! interface is about half as fast, and decoding the whole text as one
//! slice would hold it (38 MB for 100,000 entries) next to the tree being
//! built from it.

use std::io::Read;

use super::{EntryFilter, EntrySink, RawEntry, TocLimits};
use crate::error::{Error, Result};

/// Longest number or literal accepted: a scalar that does not end would
/// otherwise be buffered to the end of the stream.
const MAX_SCALAR: usize = 4096;

/// How much is read from the source at a time.
const READ_SIZE: usize = 256 << 10;

/// The unread part of a stream: `buf[pos..]`, refilled as values need.
struct Window<R> {
    src: R,
    buf: Vec<u8>,
    pos: usize,
    eof: bool,
}

fn bad_json(what: impl std::fmt::Display) -> Error {
    Error::InvalidToc(format!("bad JSON: {what}"))
}

impl<R: Read> Window<R> {
    /// Reads more after what is buffered; false at the end of the stream.
    fn fill(&mut self) -> Result<bool> {
        if self.eof {
            return Ok(false);
        }
        if self.pos > 0 && self.pos >= self.buf.len() / 2 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let old = self.buf.len();
        self.buf.resize(old + READ_SIZE, 0);
        let n = loop {
            match self.src.read(&mut self.buf[old..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.buf.truncate(old);
                    return Err(Error::InvalidToc(format!("cannot read the TOC JSON: {e}")));
                }
            }
        };
        self.buf.truncate(old + n);
        self.eof = n == 0;
        Ok(n > 0)
    }

    /// The next byte that is not JSON whitespace, not consumed; `None` at the end.
    fn peek(&mut self) -> Result<Option<u8>> {
        loop {
            while let Some(&b) = self.buf.get(self.pos) {
                if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
                    return Ok(Some(b));
                }
                self.pos += 1;
            }
            if !self.fill()? {
                return Ok(None);
            }
        }
    }

    /// Consumes `want` (after whitespace) or fails naming `context`.
    fn expect(&mut self, want: u8, context: &str) -> Result<()> {
        match self.peek()? {
            Some(b) if b == want => {
                self.pos += 1;
                Ok(())
            }
            Some(b) => Err(bad_json(format!(
                "expected '{}' {context}, found '{}'",
                want as char,
                b.escape_ascii()
            ))),
            None => Err(bad_json(format!(
                "expected '{}' {context}, found the end",
                want as char
            ))),
        }
    }

    /// The next JSON value (after whitespace) as a slice of the buffer,
    /// consumed. Its extent is found by matching brackets outside strings;
    /// serde_json then checks the value itself.
    fn value(&mut self) -> Result<&[u8]> {
        self.peek()?
            .ok_or_else(|| bad_json("expected a value, found the end"))?;
        let mut i = self.pos;
        let mut depth = 0u64;
        let mut in_string = false;
        let mut escaped = false;
        loop {
            let Some(&b) = self.buf.get(i) else {
                // `fill` may move the unread bytes to the front.
                let offset = i - self.pos;
                let more = self.fill()?;
                i = self.pos + offset;
                if !more {
                    break;
                }
                continue;
            };
            let at_start = i == self.pos;
            i += 1;
            if in_string {
                match b {
                    _ if escaped => escaped = false,
                    b'\\' => escaped = true,
                    b'"' => {
                        in_string = false;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => in_string = true,
                b'{' | b'[' => depth += 1,
                b'}' | b']' if depth > 0 => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                // A scalar ends before a delimiter or whitespace.
                b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r' if depth == 0 && !at_start => {
                    i -= 1;
                    break;
                }
                _ if depth == 0 && i - self.pos > MAX_SCALAR => {
                    return Err(bad_json(format!("a value longer than {MAX_SCALAR} bytes")));
                }
                _ => {}
            }
        }
        let value = self.pos..i;
        self.pos = i;
        Ok(&self.buf[value])
    }
}

fn parse<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8], what: &str) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| bad_json(format!("{what}: {e}")))
}

/// What a TOC says besides its entries.
#[derive(Debug, Default)]
pub(crate) struct Decoded {
    pub version: i64,
    /// Entries kept (repeats collapsed).
    pub entries: u64,
    /// zstd:chunked v2 `tarSplitDigest` (empty when absent).
    pub tar_split_digest: String,
}

/// Decodes the first JSON value of `src` as a TOC, handing every kept entry
/// to `sink`. Bytes after the value may be read into the window; they are
/// ignored.
pub(crate) fn decode(
    src: impl Read,
    limits: &TocLimits,
    sink: &mut EntrySink<'_>,
) -> Result<Decoded> {
    let mut w = Window {
        src,
        buf: Vec::with_capacity(READ_SIZE),
        pos: 0,
        eof: false,
    };
    if w.peek()?.is_none() {
        return Err(Error::InvalidToc("empty TOC JSON".into()));
    }
    w.expect(b'{', "to open the TOC object")?;
    let mut version = None;
    let mut entries = None;
    let mut tar_split_digest = None;
    let mut first = true;
    loop {
        if w.peek()? == Some(b'}') {
            w.pos += 1;
            break;
        }
        if !first {
            w.expect(b',', "between the TOC's members")?;
        }
        first = false;
        let key: String = parse(w.value()?, "a TOC member name")?;
        w.expect(b':', "after a member name")?;
        let duplicate = || bad_json(format!("duplicate field `{key}`"));
        match key.as_str() {
            "version" if version.is_some() => return Err(duplicate()),
            "entries" if entries.is_some() => return Err(duplicate()),
            "tarSplitDigest" if tar_split_digest.is_some() => return Err(duplicate()),
            "tarSplitDigest" => {
                let d: String = parse(w.value()?, "tarSplitDigest")?;
                if !d.is_empty() && !crate::digest::is_sha256_digest(&d) {
                    return Err(Error::InvalidToc(format!(
                        "tarSplitDigest {d:?} is not sha256:<64 lowercase hex>"
                    )));
                }
                tar_split_digest = Some(d);
            }
            "version" => version = Some(parse::<i64>(w.value()?, "version")?),
            "entries" => entries = Some(decode_entries(&mut w, limits, sink)?),
            _ => {
                parse::<serde::de::IgnoredAny>(w.value()?, &format!("member {key:?}"))?;
            }
        }
    }
    Ok(Decoded {
        version: version.unwrap_or(0),
        entries: entries.unwrap_or(0),
        tar_split_digest: tar_split_digest.unwrap_or_default(),
    })
}

/// The `entries` value: `null` or an array of entry objects.
fn decode_entries<R: Read>(
    w: &mut Window<R>,
    limits: &TocLimits,
    sink: &mut EntrySink<'_>,
) -> Result<u64> {
    if w.peek()? != Some(b'[') {
        parse::<()>(w.value()?, "entries (an array or null)")?;
        return Ok(0);
    }
    w.pos += 1;
    let mut filter = EntryFilter::new(limits);
    loop {
        if w.peek()? == Some(b']') {
            w.pos += 1;
            return Ok(filter.kept());
        }
        if filter.seen() > 0 {
            w.expect(b',', "between entries")?;
        }
        let index = filter.seen();
        let raw: RawEntry = parse(w.value()?, &format!("entry #{index}"))?;
        filter.push(raw, sink)?;
    }
}
