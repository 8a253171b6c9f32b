//! Positional-read sources: the one interface every reader path uses, so a
//! local file, a memory buffer and (later) a registry blob are interchangeable.

use std::io;
use std::sync::Arc;

/// A random-access, immutable byte source of known size.
pub trait ReadAt: Send + Sync {
    /// Reads up to `buf.len()` bytes at `offset`; returns 0 only at or past the end.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Total size in bytes.
    fn size(&self) -> u64;

    /// Reads several ranges, each completely. Remote sources override this
    /// to fetch them in one request.
    fn read_ranges(&self, ranges: &[std::ops::Range<u64>]) -> io::Result<Vec<Vec<u8>>> {
        ranges
            .iter()
            .map(|r| {
                let len = usize::try_from(r.end.saturating_sub(r.start))
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "range too large"))?;
                let mut buf = vec![0; len];
                self.read_exact_at(&mut buf, r.start)?;
                Ok(buf)
            })
            .collect()
    }

    /// Reads several ranges, handing the bytes to `deliver(offset, bytes)`
    /// as they arrive, so the front of a large request can be used before
    /// its end is in. Every byte of `ranges` is delivered before `Ok`; a
    /// remote source may also deliver bytes between close ranges, and some
    /// bytes twice after a retry. Default: `read_ranges`, one call per range.
    fn stream_ranges(
        &self,
        ranges: &[std::ops::Range<u64>],
        deliver: &mut dyn FnMut(u64, &[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        for (r, bytes) in ranges.iter().zip(self.read_ranges(ranges)?) {
            if bytes.len() as u64 != r.end.saturating_sub(r.start) {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "range {}..{} came back with {} bytes",
                        r.start,
                        r.end,
                        bytes.len()
                    ),
                ));
            }
            deliver(r.start, &bytes)?;
        }
        Ok(())
    }

    /// Drops locally kept bytes of `range` because they failed verification,
    /// so the next read fetches them again. Sources that keep nothing (or
    /// whose bytes cannot change) ignore it.
    fn invalidate(&self, _range: std::ops::Range<u64>) {}

    /// For a source that keeps what it fetches (a remote blob's spans): the
    /// parts of `range` it does not hold yet. `None`: it keeps nothing.
    fn missing(&self, _range: std::ops::Range<u64>) -> Option<Vec<std::ops::Range<u64>>> {
        None
    }

    /// Fills `buf` completely or fails with `UnexpectedEof`.
    fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read_at(buf, offset) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("source ended at offset {offset}"),
                    ))
                }
                Ok(n) => {
                    buf = &mut buf[n..];
                    offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// A local file whose size is captured once at open (files must not change).
pub struct FileSource {
    file: std::fs::File,
    size: u64,
}

impl FileSource {
    /// A source over an open file (its size is taken now).
    pub fn new(file: std::fs::File) -> io::Result<Self> {
        let size = file.metadata()?.len();
        Ok(FileSource { file, size })
    }
    /// Opens the file at `path` as a source.
    pub fn open(path: impl AsRef<std::path::Path>) -> io::Result<Self> {
        Self::new(std::fs::File::open(path)?)
    }
}

impl ReadAt for FileSource {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        if offset >= self.size {
            return Ok(0);
        }
        let max = ((self.size - offset).min(buf.len() as u64)) as usize;
        std::os::unix::fs::FileExt::read_at(&self.file, &mut buf[..max], offset)
    }
    fn size(&self) -> u64 {
        self.size
    }
}

fn slice_read_at(data: &[u8], buf: &mut [u8], offset: u64) -> io::Result<usize> {
    if offset >= data.len() as u64 {
        return Ok(0);
    }
    let rest = &data[offset as usize..];
    let n = rest.len().min(buf.len());
    buf[..n].copy_from_slice(&rest[..n]);
    Ok(n)
}

impl ReadAt for Vec<u8> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        slice_read_at(self, buf, offset)
    }
    fn size(&self) -> u64 {
        self.len() as u64
    }
}

impl ReadAt for Arc<[u8]> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        slice_read_at(self, buf, offset)
    }
    fn size(&self) -> u64 {
        self.len() as u64
    }
}

impl<T: ReadAt + ?Sized> ReadAt for Arc<T> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        (**self).read_at(buf, offset)
    }
    fn size(&self) -> u64 {
        (**self).size()
    }
    fn read_ranges(&self, ranges: &[std::ops::Range<u64>]) -> io::Result<Vec<Vec<u8>>> {
        (**self).read_ranges(ranges)
    }
    fn stream_ranges(
        &self,
        ranges: &[std::ops::Range<u64>],
        deliver: &mut dyn FnMut(u64, &[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        (**self).stream_ranges(ranges, deliver)
    }
    fn invalidate(&self, range: std::ops::Range<u64>) {
        (**self).invalidate(range)
    }
    fn missing(&self, range: std::ops::Range<u64>) -> Option<Vec<std::ops::Range<u64>>> {
        (**self).missing(range)
    }
}

impl<T: ReadAt + ?Sized> ReadAt for &T {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        (**self).read_at(buf, offset)
    }
    fn size(&self) -> u64 {
        (**self).size()
    }
    fn read_ranges(&self, ranges: &[std::ops::Range<u64>]) -> io::Result<Vec<Vec<u8>>> {
        (**self).read_ranges(ranges)
    }
    fn stream_ranges(
        &self,
        ranges: &[std::ops::Range<u64>],
        deliver: &mut dyn FnMut(u64, &[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        (**self).stream_ranges(ranges, deliver)
    }
    fn invalidate(&self, range: std::ops::Range<u64>) {
        (**self).invalidate(range)
    }
    fn missing(&self, range: std::ops::Range<u64>) -> Option<Vec<std::ops::Range<u64>>> {
        (**self).missing(range)
    }
}

/// Sequential `io::Read` over `[start, end)` of a source.
pub struct SectionReader<'a> {
    src: &'a dyn ReadAt,
    pos: u64,
    end: u64,
}

impl<'a> SectionReader<'a> {
    /// The bytes of `src` from `start` to `end`.
    pub fn new(src: &'a dyn ReadAt, start: u64, end: u64) -> Self {
        SectionReader {
            src,
            pos: start,
            end: end.max(start),
        }
    }
}

impl io::Read for SectionReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let max = (self.end - self.pos).min(buf.len() as u64) as usize;
        if max == 0 {
            return Ok(0);
        }
        let n = self.src.read_at(&mut buf[..max], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Appends `r` to `out` (sorted, `r` starting at or after the last range's
/// start), joined to the last range when at most `gap` bytes apart.
pub(crate) fn push_joined(out: &mut Vec<std::ops::Range<u64>>, r: std::ops::Range<u64>, gap: u64) {
    match out.last_mut() {
        Some(last) if r.start <= last.end.saturating_add(gap) => last.end = last.end.max(r.end),
        _ => out.push(r),
    }
}
