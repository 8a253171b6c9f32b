//! A registry blob as a positional-read source: HTTP range requests,
//! several ranges per request (`multipart/byteranges`), a fallback to
//! single ranges for registries that refuse or ignore multi-range requests,
//! retries, and a bound on concurrent requests.

use std::io::{self, BufRead, BufReader, Read};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::http::{self as h, Attempt, Request, Slots, Transport};
use crate::error::{Error, Result};
use crate::source::ReadAt;

/// How a blob is fetched.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BlobOptions {
    /// Most ranges in one request (a cap stargz lacks; long Range headers
    /// get rejected by proxies).
    pub max_ranges_per_request: usize,
    /// Requests in flight at once for this blob.
    pub max_concurrent_requests: usize,
    /// Never send multi-range requests (registries like ECR ignore them).
    pub force_single_range: bool,
    /// Ranges closer than this are fetched as one (a gap costs less than a
    /// part header and a round trip).
    pub merge_gap: u64,
}

impl Default for BlobOptions {
    fn default() -> Self {
        BlobOptions {
            max_ranges_per_request: 32,
            max_concurrent_requests: 4,
            force_single_range: false,
            merge_gap: 4096,
        }
    }
}

crate::options::option_setters!(BlobOptions {
    max_ranges_per_request: usize,
    max_concurrent_requests: usize,
    force_single_range: bool,
    merge_gap: u64,
});

/// Counters for the "fetched vs blob size" summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FetchStats {
    /// HTTP requests sent for the blob.
    pub requests: u64,
    /// Blob bytes received.
    pub bytes: u64,
}

/// One place a blob can be fetched from: a mirror or the registry.
#[derive(Debug, Clone)]
pub(crate) struct BlobEndpoint {
    /// `…/v2/<repository>/blobs/<digest>` on that host.
    pub url: String,
    /// The host whose credentials and request slots apply.
    pub host: String,
    /// Token scope on that host.
    pub scope: String,
    /// Retries there before moving on.
    pub retries: u32,
    /// A mirror (subject to back-off when it does not answer).
    pub mirror: bool,
    /// Its configured settings (hosts.toml), if any.
    pub endpoint: Option<Arc<h::Endpoint>>,
}

/// One compressed layer in a registry.
pub struct RemoteBlob {
    transport: Arc<Transport>,
    /// Mirrors first, the registry last (one entry without mirrors).
    endpoints: Vec<BlobEndpoint>,
    /// The endpoint that answered last: where the next request goes first.
    current: AtomicUsize,
    digest: String,
    size: u64,
    opts: BlobOptions,
    /// Where an endpoint (by index) redirected us (e.g. a pre-signed
    /// storage URL).
    location: Mutex<Option<(usize, String)>>,
    single_range: AtomicBool,
    requests: AtomicU64,
    bytes: AtomicU64,
    slots: Arc<Slots>,
}

/// What one attempt at a group of ranges produced.
enum Fetched {
    /// Every byte was delivered.
    Done,
    /// The caller's `deliver` refused bytes: its error, neither retried nor
    /// sent to another source.
    Refused(Error),
    /// The registry refused or ignored a multi-range request.
    NeedSingleRange,
}

/// Where a response's bytes go as they arrive: `deliver(offset, bytes)`.
type Deliver<'d> = &'d mut dyn FnMut(u64, &[u8]) -> Result<()>;

impl RemoteBlob {
    pub(crate) fn new(
        transport: Arc<Transport>,
        endpoints: Vec<BlobEndpoint>,
        digest: String,
        size: u64,
        opts: BlobOptions,
    ) -> RemoteBlob {
        assert!(!endpoints.is_empty(), "a blob needs somewhere to come from");
        RemoteBlob {
            transport,
            endpoints,
            current: AtomicUsize::new(0),
            digest,
            size,
            single_range: AtomicBool::new(opts.force_single_range),
            slots: Slots::new(opts.max_concurrent_requests),
            opts,
            location: Mutex::new(None),
            requests: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        }
    }

    /// The blob's digest.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Requests and bytes so far.
    pub fn stats(&self) -> FetchStats {
        FetchStats {
            requests: self.requests.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }

    /// Whether multi-range requests were given up for this blob.
    pub fn single_range_mode(&self) -> bool {
        self.single_range.load(Ordering::Relaxed)
    }

    /// Fetches several byte ranges, in as few requests as allowed.
    pub fn fetch_ranges(&self, ranges: &[Range<u64>]) -> Result<Vec<Vec<u8>>> {
        self.check(ranges)?;
        let spans = merge(ranges, self.opts.merge_gap);
        let mut span_data: Vec<Vec<u8>> = spans
            .iter()
            .map(|s| vec![0; (s.end - s.start) as usize])
            .collect();
        // Pieces never cross a span's end.
        self.fetch_spans(&spans, &mut |offset, bytes| {
            let i = spans.partition_point(|s| s.end <= offset);
            let at = (offset - spans[i].start) as usize;
            span_data[i][at..at + bytes.len()].copy_from_slice(bytes);
            Ok(())
        })?;
        Ok(ranges
            .iter()
            .map(|r| {
                if r.is_empty() {
                    return Vec::new();
                }
                // The first span ending at or after r.end contains r.
                let s = spans.partition_point(|s| s.end < r.end);
                let base = spans[s].start;
                span_data[s][(r.start - base) as usize..(r.end - base) as usize].to_vec()
            })
            .collect())
    }

    /// Fetches several byte ranges, handing the bytes to `deliver(offset,
    /// bytes)` as they arrive, so the front of a large request can be used
    /// before its end is in. Bytes between ranges closer than the merge gap
    /// are delivered too, and after a retry some bytes may come twice.
    pub fn fetch_ranges_with(
        &self,
        ranges: &[Range<u64>],
        deliver: &mut dyn FnMut(u64, &[u8]) -> Result<()>,
    ) -> Result<()> {
        self.check(ranges)?;
        self.fetch_spans(&merge(ranges, self.opts.merge_gap), deliver)
    }

    fn check(&self, ranges: &[Range<u64>]) -> Result<()> {
        match ranges.iter().find(|r| r.start > r.end || r.end > self.size) {
            Some(r) => Err(Error::InvalidArgument(format!(
                "range {}..{} outside blob {} of {} bytes",
                r.start, r.end, self.digest, self.size
            ))),
            None => Ok(()),
        }
    }

    fn fetch_spans(&self, spans: &[Range<u64>], deliver: Deliver) -> Result<()> {
        let started = std::time::Instant::now();
        let mut i = 0;
        while i < spans.len() {
            let per_request = if self.single_range_mode() {
                1
            } else {
                self.opts.max_ranges_per_request.max(1)
            };
            let group = &spans[i..(i + per_request).min(spans.len())];
            match self.fetch_group(group, deliver)? {
                Fetched::Done => i += group.len(),
                Fetched::Refused(e) => return Err(e),
                // Re-split the same spans one per request.
                Fetched::NeedSingleRange => self.single_range.store(true, Ordering::Relaxed),
            }
        }
        // One line per fetch lets users see how lazy a workload is.
        log::debug!(
            "fetched {} range(s) ({} bytes) of blob {} in {} ms",
            spans.len(),
            spans.iter().map(|s| s.end - s.start).sum::<u64>(),
            self.digest,
            started.elapsed().as_millis()
        );
        Ok(())
    }

    fn fetch_group(&self, spans: &[Range<u64>], deliver: Deliver) -> Result<Fetched> {
        let what = format!(
            "fetching {} range(s) of blob {} ({} bytes)",
            spans.len(),
            self.digest,
            spans.iter().map(|s| s.end - s.start).sum::<u64>()
        );
        let range_header = format!(
            "bytes={}",
            spans
                .iter()
                .map(|s| format!("{}-{}", s.start, s.end - 1))
                .collect::<Vec<_>>()
                .join(",")
        );
        // Mirrors in order, then the registry, starting from the one that
        // answered last; the bytes are verified whichever host sent them.
        // Mirrors in back-off go last.
        let n = self.endpoints.len();
        let start = self.current.load(Ordering::Relaxed) % n;
        let backoff = super::backoff::global();
        let order = backoff.order((0..n).map(|k| (start + k) % n).collect(), |&i| {
            let ep = &self.endpoints[i];
            ep.mirror.then_some(ep.host.as_str())
        });
        let mut failed = Vec::new();
        for (k, &i) in order.iter().enumerate() {
            let ep = &self.endpoints[i];
            let result = self.transport.retry_n(&what, ep.retries, || {
                let started = std::time::Instant::now();
                let r = self.attempt(i, ep, spans, &range_header, &what, &mut *deliver);
                if let Ok(Attempt::Done(Fetched::Done)) = &r {
                    crate::metrics::global().observe_fetch(started.elapsed());
                }
                r
            });
            if ep.mirror {
                backoff.record(&ep.host, &result);
            }
            match result {
                Ok(f) => {
                    if i != start {
                        log::info!("blob {}: now fetched from {}", self.digest, ep.host);
                        self.current.store(i, Ordering::Relaxed);
                    }
                    return Ok(f);
                }
                Err(e) if k + 1 < n => {
                    log::warn!("{what}: {} failed, trying the next source: {e}", ep.host);
                    failed.push(format!("{}: {e}", ep.host));
                }
                Err(e) if failed.is_empty() => return Err(e),
                Err(e) => {
                    return Err(e.with_context(&format!(
                        "after other sources failed ({})",
                        failed.join("; ")
                    )))
                }
            }
        }
        unreachable!("the loop returns on its last endpoint")
    }

    fn attempt(
        &self,
        index: usize,
        ep: &BlobEndpoint,
        spans: &[Range<u64>],
        range_header: &str,
        what: &str,
        deliver: Deliver,
    ) -> Result<Attempt<Fetched>> {
        let _slot = self.slots.acquire();
        let _host_slot = self.transport.host_slot(&ep.host)?;
        // Follow a few redirects; a stale pre-signed location (403) sends
        // us back to the registry once.
        let mut retried_location = false;
        for _ in 0..4 {
            let location = self
                .location
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .filter(|(i, _)| *i == index)
                .map(|(_, l)| l);
            let (target, auth_host) = match &location {
                Some(l) => (l.clone(), None),
                None => (ep.url.clone(), Some(ep.host.as_str())),
            };
            let req = Request::get(target.clone(), auth_host, &ep.scope)
                .header("range", range_header)
                .endpoint(ep.endpoint.clone().filter(|_| location.is_none()));
            self.requests.fetch_add(1, Ordering::Relaxed);
            let mut resp = match self.transport.send(&req)? {
                Attempt::Done(r) => r,
                Attempt::Retry(e) => return Ok(Attempt::Retry(e)),
            };
            let status = resp.status().as_u16();
            match status {
                206 => return self.read_partial(&mut resp, spans, what, deliver),
                200 => {
                    let data = self.read_whole(&mut resp, spans, what, deliver);
                    if spans.len() > 1 {
                        // The registry ignores multi-range: don't make it
                        // send the whole blob again.
                        self.single_range.store(true, Ordering::Relaxed);
                    }
                    return data;
                }
                301 | 302 | 303 | 307 | 308 => {
                    let next = redirect_target(&target, &resp)?;
                    *self.location.lock().unwrap_or_else(|p| p.into_inner()) = Some((index, next));
                }
                403 if location.is_some() && !retried_location => {
                    retried_location = true;
                    *self.location.lock().unwrap_or_else(|p| p.into_inner()) = None;
                }
                400 | 416 if spans.len() > 1 => return Ok(Attempt::Done(Fetched::NeedSingleRange)),
                _ => return h::fail_or_retry(what, &mut resp),
            }
        }
        Err(Error::Registry(format!("{what}: too many redirects")))
    }

    /// A 206: one `Content-Range` part, or `multipart/byteranges`.
    fn read_partial(
        &self,
        resp: &mut h::Response,
        spans: &[Range<u64>],
        what: &str,
        deliver: Deliver,
    ) -> Result<Attempt<Fetched>> {
        let ctype = h::header(resp, "content-type").unwrap_or_default();
        let content_range = h::header(resp, "content-range");
        let mut sink = SpanSink::new(spans, deliver);
        let mut body = BufReader::new(resp.body_mut().as_reader());
        let result = if let Some(boundary) = multipart_boundary(&ctype) {
            read_multipart(&mut body, &boundary, self.size, &mut sink)
        } else {
            let cr = content_range
                .ok_or_else(|| Error::Registry(format!("{what}: 206 without Content-Range")))?;
            let part = parse_content_range(&cr, self.size)?;
            sink.deliver_from(part, &mut body)
        };
        if result.is_ok() {
            h::finish_body(&mut body);
        }
        self.bytes.fetch_add(sink.received, Ordering::Relaxed);
        // The body is dropped unread: the connection closes, not pooled.
        if let Some(e) = sink.refused.take() {
            return Ok(Attempt::Done(Fetched::Refused(e)));
        }
        match result {
            Ok(()) => {}
            // Size or framing errors are the registry's fault, not transient.
            Err(e @ (Error::Registry(_) | Error::LimitExceeded(_))) => {
                return Err(h::with_context(e, what))
            }
            Err(e) => return Ok(Attempt::Retry(h::with_context(e, what))),
        }
        if !sink.complete() {
            return Ok(Attempt::Retry(Error::Network(format!(
                "{what}: the response did not cover every requested range"
            ))));
        }
        Ok(Attempt::Done(Fetched::Done))
    }

    /// A 200: the whole blob; keep what was asked for, stop after it.
    fn read_whole(
        &self,
        resp: &mut h::Response,
        spans: &[Range<u64>],
        what: &str,
        deliver: Deliver,
    ) -> Result<Attempt<Fetched>> {
        if let Some(len) = h::header(resp, "content-length").and_then(|v| v.parse::<u64>().ok()) {
            if len != self.size {
                return Err(Error::Registry(format!(
                    "{what}: registry sent {len} bytes for a blob of {} bytes",
                    self.size
                )));
            }
        }
        let mut sink = SpanSink::new(spans, deliver);
        let end = spans.last().map_or(0, |s| s.end);
        let result = sink.deliver_from(0..end, &mut resp.body_mut().as_reader());
        self.bytes.fetch_add(sink.received, Ordering::Relaxed);
        if let Some(e) = sink.refused.take() {
            return Ok(Attempt::Done(Fetched::Refused(e)));
        }
        if let Err(e) = result {
            return Ok(Attempt::Retry(h::with_context(e, what)));
        }
        if !sink.complete() {
            return Ok(Attempt::Retry(Error::Network(format!(
                "{what}: short body"
            ))));
        }
        Ok(Attempt::Done(Fetched::Done))
    }
}

impl ReadAt for RemoteBlob {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        if offset >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let end = (offset + buf.len() as u64).min(self.size);
        let data = self
            .fetch_ranges(std::slice::from_ref(&(offset..end)))
            .map_err(io::Error::from)?;
        buf[..data[0].len()].copy_from_slice(&data[0]);
        Ok(data[0].len())
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn read_ranges(&self, ranges: &[Range<u64>]) -> io::Result<Vec<Vec<u8>>> {
        self.fetch_ranges(ranges).map_err(io::Error::from)
    }

    fn stream_ranges(
        &self,
        ranges: &[Range<u64>],
        deliver: &mut dyn FnMut(u64, &[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        self.fetch_ranges_with(ranges, &mut |offset, bytes| {
            deliver(offset, bytes).map_err(|e| Error::io("keeping fetched blob bytes", e))
        })
        .map_err(io::Error::from)
    }
}

/// Sorted, merged spans covering `ranges` (gaps up to `gap` are filled).
fn merge(ranges: &[Range<u64>], gap: u64) -> Vec<Range<u64>> {
    let mut sorted: Vec<Range<u64>> = ranges.iter().filter(|r| r.end > r.start).cloned().collect();
    sorted.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::new();
    for r in sorted {
        crate::source::push_joined(&mut out, r, gap);
    }
    if out.is_empty() {
        // Only empty ranges: one empty span keeps the indexing simple.
        out.push(0..0);
    }
    out
}

/// Hands the parts of a response that fall into the requested spans to a
/// [`Deliver`], counting what arrived.
struct SpanSink<'a, 'd> {
    spans: &'a [Range<u64>],
    deliver: Deliver<'d>,
    filled: Vec<u64>,
    received: u64,
    /// What `deliver` failed with, if it did.
    refused: Option<Error>,
}

impl<'a, 'd> SpanSink<'a, 'd> {
    fn new(spans: &'a [Range<u64>], deliver: Deliver<'d>) -> Self {
        SpanSink {
            spans,
            deliver,
            filled: vec![0; spans.len()],
            received: 0,
            refused: None,
        }
    }

    /// Reads the bytes of blob range `part` from `body`, delivering the
    /// parts that fall into spans.
    fn deliver_from(&mut self, part: Range<u64>, body: &mut dyn Read) -> Result<()> {
        let mut pos = part.start;
        let mut chunk = vec![0u8; 64 << 10];
        while pos < part.end {
            let want = ((part.end - pos).min(chunk.len() as u64)) as usize;
            let n = match body.read(&mut chunk[..want]) {
                Ok(0) => {
                    return Err(Error::Network(format!(
                        "body ended at blob offset {pos}, expected data up to {}",
                        part.end
                    )))
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(h::io_error(e, "reading blob data")),
            };
            self.received += n as u64;
            let got = pos..pos + n as u64;
            for (i, s) in self.spans.iter().enumerate() {
                let from = got.start.max(s.start);
                let to = got.end.min(s.end);
                if from < to {
                    let piece = &chunk[(from - got.start) as usize..(to - got.start) as usize];
                    if let Err(e) = (self.deliver)(from, piece) {
                        self.refused = Some(e.clone());
                        return Err(e);
                    }
                    self.filled[i] += to - from;
                }
            }
            pos = got.end;
        }
        Ok(())
    }

    /// Whether every byte of every span arrived.
    fn complete(&self) -> bool {
        self.spans
            .iter()
            .zip(&self.filled)
            .all(|(s, f)| *f >= s.end - s.start)
    }
}

/// Where a redirect points (relative locations resolved).
pub fn redirect_target(from: &str, resp: &h::Response) -> Result<String> {
    let location = h::header(resp, "location")
        .ok_or_else(|| Error::Registry(format!("{from}: redirect without a Location header")))?;
    Ok(super::registry::absolute_url(from, &location))
}

/// The boundary of a `multipart/byteranges` content type.
fn multipart_boundary(ctype: &str) -> Option<String> {
    let (kind, params) = ctype.split_once(';')?;
    if !kind.trim().eq_ignore_ascii_case("multipart/byteranges") {
        return None;
    }
    params.split(';').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_string())
    })
}

/// `bytes B-E/TOTAL` → `B..E+1`, checked against the blob size.
fn parse_content_range(v: &str, size: u64) -> Result<Range<u64>> {
    let bad = || Error::Registry(format!("malformed Content-Range {v:?}"));
    let rest = v.trim().strip_prefix("bytes ").ok_or_else(bad)?;
    let (range, total) = rest.split_once('/').ok_or_else(bad)?;
    let (b, e) = range.split_once('-').ok_or_else(bad)?;
    let b: u64 = b.trim().parse().map_err(|_| bad())?;
    let e: u64 = e.trim().parse().map_err(|_| bad())?;
    if total.trim() != "*" {
        let total: u64 = total.trim().parse().map_err(|_| bad())?;
        if total != size {
            return Err(Error::Registry(format!(
                "registry reports a blob of {total} bytes, the manifest says {size}"
            )));
        }
    }
    if b > e || e >= size {
        return Err(bad());
    }
    Ok(b..e + 1)
}

/// Reads a bounded line (parts' headers are short).
fn read_line(r: &mut impl BufRead) -> Result<Option<String>> {
    let mut line = Vec::new();
    let n = r
        .take(8192)
        .read_until(b'\n', &mut line)
        .map_err(|e| h::io_error(e, "reading a multipart body"))?;
    if n == 0 {
        return Ok(None);
    }
    if !line.ends_with(b"\n") {
        return Err(Error::Registry("multipart line too long".into()));
    }
    Ok(Some(String::from_utf8_lossy(&line).trim_end().to_string()))
}

/// Parses `multipart/byteranges`, delivering each part into `sink`.
fn read_multipart(
    mut r: impl BufRead,
    boundary: &str,
    size: u64,
    sink: &mut SpanSink,
) -> Result<()> {
    let delimiter = format!("--{boundary}");
    let closing = format!("--{boundary}--");
    let mut parts = 0usize;
    let mut stray_lines = 0;
    loop {
        let Some(line) = read_line(&mut r)? else {
            return Err(Error::Network(
                "multipart body ended before its closing boundary".into(),
            ));
        };
        if line == closing {
            return Ok(());
        }
        if line != delimiter {
            // Preamble and the CRLF after each part.
            stray_lines += 1;
            if stray_lines > 2 * parts + 16 {
                return Err(Error::Registry(
                    "multipart body is not framed as expected".into(),
                ));
            }
            continue;
        }
        parts += 1;
        if parts > sink.spans.len() * 2 + 1 {
            return Err(Error::Registry(
                "multipart body has more parts than ranges asked for".into(),
            ));
        }
        let mut range = None;
        for _ in 0..64 {
            let Some(header) = read_line(&mut r)? else {
                return Err(Error::Network(
                    "multipart body ended inside part headers".into(),
                ));
            };
            if header.is_empty() {
                break;
            }
            if let Some((k, v)) = header.split_once(':') {
                if k.trim().eq_ignore_ascii_case("content-range") {
                    range = Some(parse_content_range(v, size)?);
                }
            }
        }
        let range =
            range.ok_or_else(|| Error::Registry("multipart part without Content-Range".into()))?;
        sink.deliver_from(range, &mut r)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging() {
        assert_eq!(
            merge(&[10..20, 0..5, 22..30, 100..110], 2),
            vec![0..5, 10..30, 100..110]
        );
        assert_eq!(merge(&[0..10, 5..8], 0), vec![0..10]);
    }

    #[test]
    fn content_ranges() {
        assert_eq!(parse_content_range("bytes 0-9/100", 100).unwrap(), 0..10);
        assert_eq!(parse_content_range("bytes 90-99/*", 100).unwrap(), 90..100);
        assert!(parse_content_range("bytes 90-100/100", 100).is_err());
        assert!(parse_content_range("bytes 0-9/99", 100).is_err());
        assert!(parse_content_range("0-9/100", 100).is_err());
    }

    #[test]
    fn multipart_parts_fill_spans() {
        let blob: Vec<u8> = (0..200u8).collect();
        // Build the body with binary payloads.
        let mut raw = Vec::new();
        raw.extend_from_slice(b"\r\n--XYZ\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes 10-19/200\r\n\r\n");
        raw.extend_from_slice(&blob[10..20]);
        raw.extend_from_slice(b"\r\n--XYZ\r\ncontent-range: bytes 50-54/200\r\n\r\n");
        raw.extend_from_slice(&blob[50..55]);
        raw.extend_from_slice(b"\r\n--XYZ--\r\n");
        let spans = [10..20, 50..55];
        let mut got = [0u8; 200];
        let mut keep = |offset: u64, bytes: &[u8]| {
            got[offset as usize..offset as usize + bytes.len()].copy_from_slice(bytes);
            Ok(())
        };
        let mut sink = SpanSink::new(&spans, &mut keep);
        read_multipart(&raw[..], "XYZ", 200, &mut sink).unwrap();
        assert!(sink.complete());
        assert_eq!(got[10..20], blob[10..20]);
        assert_eq!(got[50..55], blob[50..55]);

        // A part missing → incomplete; truncated → error; junk → error.
        let mut ignore = |_: u64, _: &[u8]| Ok(());
        let mut sink = SpanSink::new(&spans, &mut ignore);
        read_multipart(&raw[..raw.len() - 30], "XYZ", 200, &mut sink).unwrap_err();
        let mut sink = SpanSink::new(&spans, &mut ignore);
        read_multipart(&b"garbage\r\n".repeat(100)[..], "XYZ", 200, &mut sink).unwrap_err();
        assert_eq!(
            multipart_boundary("multipart/byteranges; boundary=\"abc\""),
            Some("abc".into())
        );
        assert_eq!(multipart_boundary("application/octet-stream"), None);
    }
}
