//! Opening and reading eStargz / stargz blobs from any positional-read source.
//! Every byte handed out comes from a chunk whose digest was checked first.

mod budget;
mod cold;
mod index;
mod warm;

use std::io::{self, BufReader, Read};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub(crate) use index::TreeBuilder;
pub use index::{Chunk, Entry, Index, IndexLimits, NodeId, ROOT};
pub use warm::{
    BackgroundFetch, BackgroundGate, BackgroundOptions, PrefetchHint, WarmSummary,
    BACKGROUND_SILENCE, DEFAULT_BATCH_BYTES,
};

use crate::cache::ChunkCache;
use crate::digest::{Digest, Hasher};
use crate::error::{Error, Result};
use crate::flight::Flights;
use crate::footer::{self as footer_mod, Footer, Format, ZstdChunkedFooter, MAX_FOOTER_SIZE};
use crate::source::ReadAt;
use crate::toc::{self, EntrySink, EntryType, Toc, TOC_NAME};

/// When a reader of this process last waited for data, in milliseconds
/// since [`epoch`] (0: never). Background work of every layer stays quiet
/// for a while after it: a container start reads in bursts, and a
/// background batch in between would take the link and the CPU from it.
static LAST_FOREGROUND_MS: AtomicU64 = AtomicU64::new(0);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn note_foreground() {
    let now = epoch().elapsed().as_millis() as u64 + 1;
    LAST_FOREGROUND_MS.fetch_max(now, Ordering::Relaxed);
}

/// How long no reader of this process has waited for data (a layer being
/// opened counts as reading); `None` if none ever did.
pub fn quiet_for() -> Option<Duration> {
    match LAST_FOREGROUND_MS.load(Ordering::Relaxed) {
        0 => None,
        t => Some(
            epoch()
                .elapsed()
                .saturating_sub(Duration::from_millis(t - 1)),
        ),
    }
}

/// Default bound on the decompressed TOC JSON (a million-file layer is ~300 MB).
pub const DEFAULT_MAX_TOC_SIZE: u64 = 1 << 30;
/// Default bound on one chunk's size; larger chunks are rejected, not allocated.
pub const DEFAULT_MAX_CHUNK_SIZE: u64 = 256 << 20;
/// Memory for decoded chunks when the caller gives no cache.
const DEFAULT_CHUNK_MEMORY: u64 = 32 << 20;
/// Largest decompressed shared member kept for neighbouring chunks.
const MAX_SHARED_MEMBER: u64 = 64 << 20;

/// Default bound on TOC entries and on tree nodes (implicit directories count).
pub const DEFAULT_MAX_ENTRIES: u64 = 1 << 20;
/// Default bound on path components: deeper than Linux's PATH_MAX allows.
pub const DEFAULT_MAX_PATH_DEPTH: u64 = 2048;
/// Default bound on the bytes of entry names and link names in a TOC.
pub const DEFAULT_MAX_NAME_BYTES: u64 = 128 << 20;
/// Default bound on how far a gzip member may inflate relative to the chunk
/// bytes it holds (see [`OpenOptions::max_member_inflation`]).
pub const DEFAULT_MAX_MEMBER_INFLATION: u64 = 64;

/// How to open a blob. The `max_*` fields bound what an untrusted blob can
/// cost; exceeding one fails the open (or the read) with
/// [`Error::LimitExceeded`] naming the limit, decided from sizes and counts
/// before the memory is allocated or the work done.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct OpenOptions {
    /// The TOC gzip member for blobs with an external TOC.
    pub external_toc_data: Option<Vec<u8>>,
    /// Fail unless the TOC digest equals this (`containerd.io/snapshot/stargz/toc.digest`).
    pub expected_toc_digest: Option<Digest>,
    /// zstd:chunked: fail unless the sha256 of the compressed TOC equals
    /// this (the `…zstd-chunked.manifest-checksum` annotation).
    pub expected_manifest_checksum: Option<Digest>,
    /// zstd:chunked: where the TOC (and tar-split) are, from the layer's
    /// `…zstd-chunked.manifest-position` annotation: the footer is then
    /// not read (one request fewer for a remote layer).
    pub zstd_chunked_position: Option<ZstdChunkedFooter>,
    /// Most bytes of TOC JSON (and of the compressed TOC member).
    pub max_toc_size: u64,
    /// Largest chunk accepted (a chunk is held whole while it is verified).
    pub max_chunk_size: u64,
    /// Most TOC entries, and most nodes in the file tree (directories the
    /// TOC only implies count too). An entry equal to the one before it is
    /// collapsed and not counted.
    pub max_entries: u64,
    /// Most components in one path.
    pub max_path_depth: u64,
    /// Most bytes of entry names plus link names, over the whole TOC.
    pub max_name_bytes: u64,
    /// A gzip member holding chunks may inflate (up to the end of its last
    /// chunk) to at most this many times the chunk bytes it holds, beyond a
    /// 16 MiB allowance for headers: a tiny file cannot make every read
    /// inflate gigabytes.
    pub max_member_inflation: u64,
    /// Where verified chunks are kept (shared between readers); a small
    /// private memory cache when `None`.
    pub cache: Option<Arc<ChunkCache>>,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            external_toc_data: None,
            expected_toc_digest: None,
            expected_manifest_checksum: None,
            zstd_chunked_position: None,
            max_toc_size: DEFAULT_MAX_TOC_SIZE,
            max_chunk_size: DEFAULT_MAX_CHUNK_SIZE,
            max_entries: DEFAULT_MAX_ENTRIES,
            max_path_depth: DEFAULT_MAX_PATH_DEPTH,
            max_name_bytes: DEFAULT_MAX_NAME_BYTES,
            max_member_inflation: DEFAULT_MAX_MEMBER_INFLATION,
            cache: None,
        }
    }
}

crate::options::option_setters!(OpenOptions {
    external_toc_data: Option<Vec<u8>>,
    expected_toc_digest: Option<Digest>,
    expected_manifest_checksum: Option<Digest>,
    zstd_chunked_position: Option<ZstdChunkedFooter>,
    max_toc_size: u64,
    max_chunk_size: u64,
    max_entries: u64,
    max_path_depth: u64,
    max_name_bytes: u64,
    max_member_inflation: u64,
    cache: Option<Arc<ChunkCache>>,
});

impl OpenOptions {
    fn toc_limits(&self) -> crate::toc::TocLimits {
        crate::toc::TocLimits {
            max_entries: self.max_entries,
            max_name_bytes: self.max_name_bytes,
        }
    }

    fn index_limits(&self) -> IndexLimits {
        IndexLimits {
            max_nodes: self.max_entries,
            max_path_depth: self.max_path_depth,
            max_member_inflation: self.max_member_inflation,
        }
    }
}

/// A decompressed gzip member that holds several chunks: (offset, end, bytes).
type SharedMember = (u64, u64, Arc<Vec<u8>>);

/// Memory for chunk buffers being decoded at once, per reader (at least one
/// chunk of the largest allowed size always fits).
const MIN_CHUNK_BUFFER_BUDGET: u64 = 256 << 20;
/// Decoders kept positioned inside large shared members.
const MAX_CURSORS: usize = 4;

/// A decoder left just after the last chunk it produced, so the next chunk
/// of the same large member continues from there instead of re-inflating
/// the member from its start.
struct MemberCursor {
    /// (member offset, next_offset) it decodes.
    key: (u64, u64),
    /// Decompressed bytes consumed so far.
    pos: u64,
    decoder: Box<dyn Read + Send>,
}

/// `[pos, end)` of a shared source, owned (decoders kept across calls
/// cannot borrow the reader).
struct OwnedSection {
    src: Arc<dyn ReadAt>,
    pos: u64,
    end: u64,
}

impl Read for OwnedSection {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = (self.end.saturating_sub(self.pos)).min(buf.len() as u64) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = self.src.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// An open blob.
pub struct Reader {
    src: Arc<dyn ReadAt>,
    footer: Footer,
    /// TOC entries kept after decoding (repeats collapsed); the entries
    /// themselves live only in `index`.
    toc_entries: usize,
    /// What [`Reader::toc`] needs to decode the TOC again.
    external_toc: Option<Vec<u8>>,
    toc_limits: crate::toc::TocLimits,
    max_toc_size: u64,
    toc_digest: Digest,
    /// zstd:chunked: sha256 of the compressed TOC (the manifest checksum).
    manifest_checksum: Option<Digest>,
    /// zstd:chunked v2: the TOC's `tarSplitDigest` (checked by `verify`).
    tar_split_digest: Option<Digest>,
    index: Index,
    max_chunk_size: u64,
    cache: Arc<ChunkCache>,
    /// Reads waiting for data; background work yields while this is > 0.
    foreground: AtomicUsize,
    /// Chunks being loaded, by digest: concurrent reads of one chunk share
    /// one fetch (or disk-cache check) and its answer, a failure included.
    /// FUSE readahead sends several requests into one chunk at once.
    inflight: Flights<Digest, Result<Arc<[u8]>>>,
    /// The last decompressed shared member (min-chunk-size blobs): its blob
    /// range and bytes, not yet verified (each chunk is verified when sliced).
    shared_member: Mutex<Option<SharedMember>>,
    /// Positioned decoders of large shared members, most recent last.
    cursors: Mutex<Vec<MemberCursor>>,
    /// Bounds the chunk and member buffers decoded at once.
    buffers: budget::Budget,
    /// The files the background fetch leaves for last (found when it
    /// starts), and whether a read has touched one.
    cold: OnceLock<cold::Cold>,
}

/// Counts and hashes what is read through it (the TOC digest covers every
/// byte of the JSON, including any after the first value).
struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
    count: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// What decoding a TOC needs from [`OpenOptions`] (kept by the reader to
/// decode the TOC again on request).
#[derive(Clone, Copy)]
struct TocOptions {
    max_toc_size: u64,
    limits: crate::toc::TocLimits,
    expected_digest: Option<Digest>,
    expected_manifest_checksum: Option<Digest>,
}

/// What loading a TOC found besides its entries.
struct LoadedToc {
    digest: Digest,
    /// Where the data members end (the TOC's offset, or the footer's).
    payload_end: u64,
    decoded: toc::Decoded,
    /// zstd:chunked: sha256 of the compressed TOC.
    manifest_checksum: Option<Digest>,
}

/// Reads and decodes the TOC the footer points to (or the external one),
/// handing each entry to `sink`.
fn load_toc(
    src: &dyn ReadAt,
    footer: &Footer,
    external_toc: Option<&[u8]>,
    opts: &TocOptions,
    sink: &mut EntrySink<'_>,
) -> Result<LoadedToc> {
    if let Footer::ZstdChunked(z) = footer {
        return load_zstd_toc(src, z, opts, sink);
    }
    let payload_end = src.size() - footer.size() as u64;
    match footer.toc_offset() {
        Some(toc_offset) => {
            // One positional read for the whole TOC member: for a remote
            // source that is one range request.
            let len = payload_end - toc_offset;
            if len > opts.max_toc_size {
                return Err(Error::LimitExceeded(format!(
                    "compressed TOC is {len} bytes, over the limit of {} (max_toc_size)",
                    opts.max_toc_size
                )));
            }
            let mut member = vec![0u8; len as usize];
            src.read_exact_at(&mut member, toc_offset)
                .map_err(|e| Error::io(format!("reading the TOC at offset {toc_offset}"), e))?;
            let (digest, decoded) = read_toc_member(&member[..], opts, sink)?;
            Ok(LoadedToc {
                digest,
                payload_end: toc_offset,
                decoded,
                manifest_checksum: None,
            })
        }
        None => {
            let external = external_toc.ok_or_else(|| {
                Error::InvalidArgument(
                    "the blob has an external TOC; pass it (the TOC gzip member) to open".into(),
                )
            })?;
            let (digest, decoded) = read_toc_member(external, opts, sink)?;
            Ok(LoadedToc {
                digest,
                payload_end,
                decoded,
                manifest_checksum: None,
            })
        }
    }
}

/// Reads a zstd:chunked TOC: one positional read of its skippable frame
/// (header included, so the frame is checked too), the compressed bytes
/// checked against the manifest checksum, then inflated (never past the
/// length the footer states, itself within `max_toc_size`) into `sink`.
fn load_zstd_toc(
    src: &dyn ReadAt,
    z: &ZstdChunkedFooter,
    opts: &TocOptions,
    sink: &mut EntrySink<'_>,
) -> Result<LoadedToc> {
    let pos = z.toc;
    // Both sizes are decided before anything is allocated or inflated.
    for (what, len) in [
        ("compressed", pos.compressed_len),
        ("inflated", pos.uncompressed_len),
    ] {
        if len > opts.max_toc_size {
            return Err(Error::LimitExceeded(format!(
                "zstd:chunked TOC is {len} bytes {what}, over the limit of {} (max_toc_size)",
                opts.max_toc_size
            )));
        }
    }
    let header_len = footer_mod::SKIPPABLE_HEADER_SIZE as u64;
    let start = z.payload_end();
    let mut frame = vec![0u8; (header_len + pos.compressed_len) as usize];
    src.read_exact_at(&mut frame, start).map_err(|e| {
        Error::io(
            format!("reading the zstd:chunked TOC frame at offset {start}"),
            e,
        )
    })?;
    let (header, compressed) = frame.split_at(header_len as usize);
    if !footer_mod::is_skippable_header(header, pos.compressed_len) {
        return Err(Error::InvalidToc(format!(
            "no skippable frame of {} bytes at offset {start} where the zstd:chunked TOC should be (header {})",
            pos.compressed_len,
            hex::encode(header)
        )));
    }
    let checksum = Digest::of(compressed);
    if let Some(expected) = opts.expected_manifest_checksum {
        if expected != checksum {
            return Err(Error::DigestMismatch {
                what: "zstd:chunked TOC (manifest checksum)".into(),
                expected: expected.to_string(),
                actual: checksum.to_string(),
            });
        }
    }
    let decoder = zstd_decoder(io::Cursor::new(compressed)).map_err(|e| {
        Error::InvalidToc(format!(
            "cannot start decompressing the zstd:chunked TOC: {e}"
        ))
    })?;
    let (digest, decoded) = read_toc_json(decoder, pos.uncompressed_len, opts, sink, true)?;
    Ok(LoadedToc {
        digest,
        payload_end: start,
        decoded,
        manifest_checksum: Some(checksum),
    })
}

/// A streaming zstd decoder over `src` (any number of frames; skippable
/// frames yield nothing).
fn zstd_decoder<'a, R: io::BufRead + Send + 'a>(src: R) -> io::Result<Box<dyn Read + Send + 'a>> {
    let mut d = zstd::stream::read::Decoder::with_buffer(src)?;
    // The largest window libzstd accepts by default (128 MiB); frames
    // asking for more are refused rather than allocated.
    d.window_log_max(27)?;
    Ok(Box::new(d))
}

/// Decompresses a TOC member (tar entry `stargz.index.json`), decodes its
/// JSON within `opts`' limits into `sink` and hashes it; checks
/// `expected_toc_digest`. Returns the digest and what the TOC says.
fn read_toc_member(
    compressed: impl Read,
    opts: &TocOptions,
    sink: &mut EntrySink<'_>,
) -> Result<(Digest, toc::Decoded)> {
    let mut gz = flate2::read::GzDecoder::new(BufReader::with_capacity(1 << 16, compressed));
    let mut header = [0u8; 512];
    gz.read_exact(&mut header)
        .map_err(|e| Error::InvalidToc(format!("cannot decompress the TOC tar header: {e}")))?;
    let name_end = header[..100].iter().position(|&b| b == 0).unwrap_or(100);
    if &header[..name_end] != TOC_NAME.as_bytes() {
        return Err(Error::InvalidToc(format!(
            "first entry of the TOC member is {:?}, not {TOC_NAME}",
            String::from_utf8_lossy(&header[..name_end])
        )));
    }
    if !crate::tar::checksum_ok(&header) {
        return Err(Error::InvalidToc(
            "bad checksum in the TOC tar header".into(),
        ));
    }
    let size = crate::tar::parse_number(&header[124..136], "size", 0)
        .map_err(|e| Error::InvalidToc(format!("TOC tar header: {e}")))?;
    if size > opts.max_toc_size {
        return Err(Error::LimitExceeded(format!(
            "TOC is {size} bytes, over the limit of {} (max_toc_size)",
            opts.max_toc_size
        )));
    }
    read_toc_json(gz, size, opts, sink, false)
}

/// Decodes `size` bytes of TOC JSON from `src` into `sink` and hashes them;
/// checks `expected_toc_digest`. With `exact`, `src` must end there (a
/// zstd:chunked TOC frame states its inflated length).
fn read_toc_json(
    mut src: impl Read,
    size: u64,
    opts: &TocOptions,
    sink: &mut EntrySink<'_>,
    exact: bool,
) -> Result<(Digest, toc::Decoded)> {
    let limits = opts.limits;
    let mut body = HashingReader {
        inner: (&mut src).take(size),
        hasher: Hasher::new(),
        count: 0,
    };
    let decoded = toc::decode(&mut body, &limits, sink);
    // The rest counts for the digest (and shows truncation).
    let decoded = io::copy(&mut body, &mut io::sink())
        .map_err(|e| Error::InvalidToc(format!("cannot decompress the TOC JSON: {e}")))
        .map(|_| decoded);
    decoded.and_then(|decoded| {
        if body.count < size {
            return Err(Error::Truncated(format!(
                "TOC JSON ends after {} of {size} bytes",
                body.count
            )));
        }
        if exact {
            let mut one = [0u8; 1];
            let more =
                body.inner.get_mut().read(&mut one).map_err(|e| {
                    Error::InvalidToc(format!("cannot decompress the TOC JSON: {e}"))
                })?;
            if more > 0 {
                return Err(Error::LimitExceeded(format!(
                    "the TOC frame inflates past the {size} bytes its footer states"
                )));
            }
        }
        let digest = body.hasher.finish_digest();
        match opts.expected_digest {
            // A digest mismatch explains a decoding failure better than
            // the failure does.
            Some(expected) if expected != digest => Err(Error::DigestMismatch {
                what: "TOC".into(),
                expected: expected.to_string(),
                actual: digest.to_string(),
            }),
            _ => Ok((digest, decoded?)),
        }
    })
}

impl Reader {
    /// Opens a blob: one read for the footer, one for the TOC.
    pub fn open(src: Arc<dyn ReadAt>, opts: &OpenOptions) -> Result<Reader> {
        note_foreground();
        let size = src.size();
        let footer = match opts.zstd_chunked_position {
            // The position came from the manifest (which the caller
            // verified); the checksum below anchors what it points to.
            Some(z) => {
                z.check(size, 0)?;
                Footer::ZstdChunked(z)
            }
            None => {
                let tail_len = size.min(MAX_FOOTER_SIZE as u64) as usize;
                let mut tail = vec![0u8; tail_len];
                src.read_exact_at(&mut tail, size - tail_len as u64)
                    .map_err(|e| Error::io("reading the footer", e))?;
                Footer::parse(&tail, size)?
            }
        };
        let toc_options = TocOptions {
            max_toc_size: opts.max_toc_size,
            limits: opts.toc_limits(),
            expected_digest: opts.expected_toc_digest,
            expected_manifest_checksum: opts.expected_manifest_checksum,
        };
        // The tree is built as the TOC streams in: no vector of entries.
        let mut tree = TreeBuilder::new(&opts.index_limits());
        let loaded = load_toc(
            &*src,
            &footer,
            opts.external_toc_data.as_deref(),
            &toc_options,
            &mut |e| tree.add(e),
        )?;
        let index = tree.finish(loaded.payload_end)?;
        Ok(Reader {
            src,
            footer,
            toc_entries: loaded.decoded.entries as usize,
            external_toc: opts.external_toc_data.clone(),
            toc_limits: toc_options.limits,
            max_toc_size: opts.max_toc_size,
            toc_digest: loaded.digest,
            manifest_checksum: loaded.manifest_checksum,
            // The decoder checked its form, so it parses.
            tar_split_digest: loaded.decoded.tar_split_digest.parse().ok(),
            index,
            max_chunk_size: opts.max_chunk_size,
            cache: opts
                .cache
                .clone()
                .unwrap_or_else(|| Arc::new(ChunkCache::in_memory(DEFAULT_CHUNK_MEMORY))),
            foreground: AtomicUsize::new(0),
            inflight: Default::default(),
            shared_member: Mutex::new(None),
            cursors: Mutex::new(Vec::new()),
            buffers: budget::Budget::new(opts.max_chunk_size.max(MIN_CHUNK_BUFFER_BUDGET)),
            cold: OnceLock::new(),
        })
    }

    /// Which footer the blob ends with (for zstd:chunked opened from the
    /// manifest position, what that position said).
    pub fn footer(&self) -> Footer {
        self.footer
    }
    /// The blob's format (and zstd:chunked generation).
    pub fn format(&self) -> Format {
        self.footer.format()
    }
    /// zstd:chunked: the sha256 of the compressed TOC (what the
    /// `…zstd-chunked.manifest-checksum` annotation holds).
    pub fn manifest_checksum(&self) -> Option<Digest> {
        self.manifest_checksum
    }
    /// zstd:chunked v2: the TOC's `tarSplitDigest`.
    pub fn tar_split_digest(&self) -> Option<Digest> {
        self.tar_split_digest
    }
    /// The TOC, read and decoded again from the blob and checked against
    /// the digest it had when opened (the reader keeps only its tree).
    pub fn toc(&self) -> Result<Toc> {
        let opts = TocOptions {
            max_toc_size: self.max_toc_size,
            limits: self.toc_limits,
            expected_digest: Some(self.toc_digest),
            expected_manifest_checksum: self.manifest_checksum,
        };
        let mut entries = Vec::new();
        let loaded = load_toc(
            &*self.src,
            &self.footer,
            self.external_toc.as_deref(),
            &opts,
            &mut |e| {
                entries.push(e.clone());
                Ok(())
            },
        )?;
        Ok(Toc {
            version: loaded.decoded.version,
            entries,
            tar_split_digest: loaded.decoded.tar_split_digest,
        })
    }
    /// How many entries the TOC has (a repeat of the entry before it not counted).
    pub fn toc_entry_count(&self) -> usize {
        self.toc_entries
    }

    /// The digest of the TOC JSON, as checked when opening.
    pub fn toc_digest(&self) -> Digest {
        self.toc_digest
    }
    /// Size of the blob in bytes.
    pub fn blob_size(&self) -> u64 {
        self.src.size()
    }
    /// The file tree.
    pub fn index(&self) -> &Index {
        &self.index
    }
    /// One node of the file tree. Panics if `id` is not of this reader.
    pub fn entry(&self, id: NodeId) -> Entry<'_> {
        self.index.entry(id)
    }
    /// The cleaned path of a node (`""` for the root).
    pub fn path(&self, id: NodeId) -> String {
        self.index.path(id)
    }

    /// Checks the TOC digest against the expected one (e.g. the layer annotation).
    pub fn verify_toc_digest(&self, expected: Digest) -> Result<()> {
        if expected == self.toc_digest {
            Ok(())
        } else {
            Err(Error::DigestMismatch {
                what: "TOC".into(),
                expected: expected.to_string(),
                actual: self.toc_digest.to_string(),
            })
        }
    }

    /// Finds a node by path; hardlinks are returned as themselves.
    pub fn lookup(&self, path: &str) -> Result<NodeId> {
        self.index
            .lookup(path)
            .ok_or_else(|| Error::NotFound(path.to_string()))
    }

    /// Follows a hardlink to the node holding the data.
    pub fn resolve(&self, id: NodeId) -> NodeId {
        self.index.resolve(id)
    }

    /// Directory children in name order.
    pub fn read_dir(&self, id: NodeId) -> Result<Vec<(&str, NodeId)>> {
        let entry = self.entry(self.resolve(id));
        if entry.kind() != EntryType::Dir {
            return Err(Error::WrongType {
                path: entry.path(),
                message: "not a directory".into(),
            });
        }
        Ok(entry.children().collect())
    }

    fn regular_file(&self, id: NodeId) -> Result<Entry<'_>> {
        let entry = self.entry(self.resolve(id));
        if entry.kind() != EntryType::Reg {
            return Err(Error::WrongType {
                path: entry.path(),
                message: format!("{} is not a regular file", entry.kind().as_str()),
            });
        }
        Ok(entry)
    }

    /// Decompresses and verifies one chunk of file `id` (not cached).
    pub fn fetch_chunk(&self, id: NodeId, chunk: &Chunk) -> Result<Vec<u8>> {
        self.check_chunk_limits(id, chunk)?;
        let _permit = self.buffers.acquire(self.fetch_cost(chunk));
        self.fetch_chunk_unbudgeted(id, chunk)
    }

    /// Buffer bytes fetching `chunk` may hold: the chunk, its compressed
    /// extent when read whole, and a shared member kept whole.
    fn fetch_cost(&self, chunk: &Chunk) -> u64 {
        let extent = chunk.next_offset.saturating_sub(chunk.offset);
        let mut cost = chunk.chunk_size + extent.min(self.max_member_read());
        if chunk.inner_offset > 0 {
            let span = self.index.member_span(chunk.offset);
            if span <= MAX_SHARED_MEMBER {
                cost += span;
            }
        }
        cost
    }

    /// [`Reader::fetch_chunk`] for callers that hold the buffer budget.
    fn fetch_chunk_unbudgeted(&self, id: NodeId, chunk: &Chunk) -> Result<Vec<u8>> {
        self.check_chunk_limits(id, chunk)?;
        if chunk.zeros {
            // Checked like any chunk: a TOC calling data zeros is caught.
            return self.read_verified(&mut io::repeat(0), 0, id, chunk);
        }
        if chunk.inner_offset == 0 {
            let mut gz = self.member_decoder(chunk)?;
            return self.read_verified(&mut gz, 0, id, chunk);
        }
        // A member shared by several chunks: decompress it once for all of
        // them (small members are kept whole, large ones are continued from
        // where the last chunk ended), so reading every file costs one pass,
        // not chunks x member.
        let span = self.index.member_span(chunk.offset);
        if span <= MAX_SHARED_MEMBER {
            if let Some(member) = self.shared_member(chunk, span) {
                let end = chunk.inner_offset.saturating_add(chunk.chunk_size);
                if end <= member.len() as u64 {
                    let data = &member[chunk.inner_offset as usize..end as usize];
                    return self.read_verified(&mut &data[..], 0, id, chunk);
                }
            }
        }
        self.fetch_with_cursor(id, chunk)
    }

    /// Reads `chunk` through a decoder positioned at or before it in its
    /// member (a fresh one when none is), and keeps the decoder for the next.
    fn fetch_with_cursor(&self, id: NodeId, chunk: &Chunk) -> Result<Vec<u8>> {
        let key = (chunk.offset, chunk.next_offset);
        let lock = || self.cursors.lock().unwrap_or_else(|p| p.into_inner());
        let reusable = {
            let mut cursors = lock();
            let best = cursors
                .iter()
                .enumerate()
                .filter(|(_, c)| c.key == key && c.pos <= chunk.inner_offset)
                .max_by_key(|(_, c)| c.pos)
                .map(|(i, _)| i);
            best.map(|i| cursors.remove(i))
        };
        let mut cursor = match reusable {
            Some(c) => c,
            None => MemberCursor {
                key,
                pos: 0,
                decoder: self.member_decoder(chunk)?,
            },
        };
        let data = self.read_verified(
            &mut cursor.decoder,
            chunk.inner_offset - cursor.pos,
            id,
            chunk,
        )?;
        cursor.pos = chunk.inner_offset + chunk.chunk_size;
        let mut cursors = lock();
        if cursors.len() >= MAX_CURSORS {
            cursors.remove(0);
        }
        cursors.push(cursor);
        Ok(data)
    }

    /// The member's decompressed bytes up to `span`, cached; `None` when it
    /// cannot be decoded (then the streaming path reports the error).
    fn shared_member(&self, chunk: &Chunk, span: u64) -> Option<Arc<Vec<u8>>> {
        let key = (chunk.offset, chunk.next_offset);
        if let Some((o, e, data)) = &*self.shared_member.lock().unwrap_or_else(|p| p.into_inner()) {
            if (*o, *e) == key {
                return Some(data.clone());
            }
        }
        let mut data = Vec::new();
        self.member_decoder(chunk)
            .ok()?
            .take(span)
            .read_to_end(&mut data)
            .ok()?;
        let data = Arc::new(data);
        *self.shared_member.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((key.0, key.1, data.clone()));
        Some(data)
    }

    /// Names a chunk in errors.
    fn chunk_context(&self, id: NodeId, chunk: &Chunk) -> String {
        format!(
            "chunk at file offset {} of {:?}",
            chunk.chunk_offset,
            self.index.path(id)
        )
    }

    fn check_chunk_limits(&self, id: NodeId, chunk: &Chunk) -> Result<()> {
        if chunk.chunk_size > self.max_chunk_size {
            return Err(Error::LimitExceeded(format!(
                "{} is {} bytes (max {})",
                self.chunk_context(id, chunk),
                chunk.chunk_size,
                self.max_chunk_size
            )));
        }
        self.chunk_digest(id, chunk).map(|_| ())
    }

    /// The digest `chunk` is verified against: a chunk without one is never read.
    fn chunk_digest<'c>(&self, id: NodeId, chunk: &'c Chunk) -> Result<&'c Digest> {
        chunk.digest.as_ref().ok_or_else(|| {
            Error::InvalidToc(format!(
                "{} has no digest to verify against",
                self.chunk_context(id, chunk)
            ))
        })
    }

    /// A decoder over the gzip member(s) or zstd frames holding `chunk`.
    /// The compressed extent is read with one positional read (one request
    /// for a remote source) unless it is implausibly large, in which case
    /// it streams.
    fn member_decoder(&self, chunk: &Chunk) -> Result<Box<dyn Read + Send>> {
        let extent = chunk.next_offset.saturating_sub(chunk.offset);
        if extent <= self.max_member_read() {
            let mut buf = vec![0u8; extent as usize];
            self.src
                .read_exact_at(&mut buf, chunk.offset)
                .map_err(|e| {
                    Error::io(
                        format!(
                            "reading the compressed data at blob offset {}",
                            chunk.offset
                        ),
                        e,
                    )
                })?;
            return self.decompressor(io::Cursor::new(buf), chunk.offset);
        }
        let section = OwnedSection {
            src: self.src.clone(),
            pos: chunk.offset,
            end: chunk.next_offset,
        };
        self.decompressor(BufReader::with_capacity(1 << 16, section), chunk.offset)
    }

    /// Decompresses the data members (gzip) or frames (zstd:chunked) in `src`.
    fn decompressor(
        &self,
        src: impl io::BufRead + Send + 'static,
        offset: u64,
    ) -> Result<Box<dyn Read + Send>> {
        if self.footer.format().is_zstd() {
            zstd_decoder(src)
                .map_err(|e| Error::Corrupt(format!("zstd frame at blob offset {offset}: {e}")))
        } else {
            Ok(Box::new(flate2::read::MultiGzDecoder::new(src)))
        }
    }

    /// Largest compressed extent read in one go.
    fn max_member_read(&self) -> u64 {
        self.max_chunk_size.saturating_mul(2).min(MAX_SHARED_MEMBER) + (1 << 20)
    }

    /// Skips `skip` decompressed bytes, then reads and verifies `chunk`.
    fn read_verified(
        &self,
        gz: &mut impl Read,
        skip: u64,
        id: NodeId,
        chunk: &Chunk,
    ) -> Result<Vec<u8>> {
        let mut data = Vec::with_capacity(chunk.chunk_size.min(16 << 20) as usize);
        self.verify_chunk(gz, skip, id, chunk, Some(&mut data))?;
        Ok(data)
    }

    /// Skips `skip` decompressed bytes, then hashes `chunk`'s bytes (kept in
    /// `keep` if given) and checks them against its digest.
    fn verify_chunk(
        &self,
        gz: &mut impl Read,
        skip: u64,
        id: NodeId,
        chunk: &Chunk,
        keep: Option<&mut Vec<u8>>,
    ) -> Result<()> {
        let context = || self.chunk_context(id, chunk);
        let corrupt = |e: io::Error| {
            if e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
                // A fetch failure of a remote source, not corrupt data.
                Error::io(context(), e)
            } else {
                Error::Corrupt(format!("{}: {e}", context()))
            }
        };
        let skipped = io::copy(&mut gz.take(skip), &mut io::sink()).map_err(corrupt)?;
        let mut hasher = Hasher::new();
        let mut body = gz.take(chunk.chunk_size);
        let got = match keep {
            Some(data) => {
                body.read_to_end(data).map_err(corrupt)?;
                hasher.update(data);
                data.len() as u64
            }
            None => {
                let mut buf = vec![0u8; 1 << 16];
                let mut got = 0u64;
                loop {
                    let n = match body.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(corrupt(e)),
                    };
                    hasher.update(&buf[..n]);
                    got += n as u64;
                }
                got
            }
        };
        if skipped < skip || got < chunk.chunk_size {
            return Err(Error::Corrupt(format!(
                "{}: compressed data ends early",
                context()
            )));
        }
        let actual = hasher.finish_digest();
        match chunk.digest {
            Some(expected) if expected == actual => Ok(()),
            expected => Err(Error::DigestMismatch {
                what: context(),
                expected: expected.map(|d| d.to_string()).unwrap_or_default(),
                actual: actual.to_string(),
            }),
        }
    }

    fn cached_chunk(&self, node_id: NodeId, chunk: &Chunk) -> Result<Arc<[u8]>> {
        let digest = self.chunk_digest(node_id, chunk)?;
        let cached = || {
            self.cache
                .get(digest)
                .filter(|data| data.len() as u64 == chunk.chunk_size)
        };
        // Memory hits skip the in-flight table; everything slower is done
        // once per chunk however many readers want it.
        if let Some(data) = self.cache.get_memory(digest) {
            if data.len() as u64 == chunk.chunk_size {
                return Ok(data);
            }
        }
        self.foreground.fetch_add(1, Ordering::SeqCst);
        note_foreground();
        let loaded = self.inflight.run(digest, || {
            if let Some(data) = cached() {
                return Ok(data);
            }
            let data: Arc<[u8]> = self
                .fetch_chunk(node_id, chunk)
                .inspect_err(|e| self.forget_if_bad(e, chunk))?
                .into();
            self.cache.put(digest, data.clone());
            Ok(data)
        });
        self.foreground.fetch_sub(1, Ordering::SeqCst);
        note_foreground();
        // A shared answer comes from a chunk with the same digest; a TOC
        // may give it another size, which no data can match.
        match loaded {
            Ok(data) if data.len() as u64 != chunk.chunk_size => Err(Error::Corrupt(format!(
                "{}: {} bytes of data for its digest, not {}",
                self.chunk_context(node_id, chunk),
                data.len(),
                chunk.chunk_size
            ))),
            loaded => loaded,
        }
    }

    /// Bytes that failed verification may be kept by the source (a remote
    /// blob's fetched spans): drop them so the next read fetches them anew.
    fn forget_if_bad(&self, e: &Error, chunk: &Chunk) {
        if matches!(
            e,
            Error::Corrupt(_) | Error::DigestMismatch { .. } | Error::Truncated(_)
        ) {
            self.src.invalidate(chunk.offset..chunk.next_offset);
        }
    }

    /// Whether reads are waiting for data (background work should yield).
    pub fn foreground_busy(&self) -> bool {
        self.foreground.load(Ordering::SeqCst) > 0
    }

    /// The chunk cache this reader fills.
    pub fn cache(&self) -> &Arc<ChunkCache> {
        &self.cache
    }

    /// Reads file content at `offset` into `buf`; returns bytes read (0 at EOF).
    pub fn read_at(&self, id: NodeId, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let data_id = self.resolve(id);
        let file = self.regular_file(data_id)?;
        let (size, chunks) = (file.size(), file.chunks());
        self.note_read(data_id);
        let mut done = 0;
        while done < buf.len() && offset + (done as u64) < size {
            let pos = offset + done as u64;
            let i = chunks.partition_point(|c| c.chunk_offset + c.chunk_size <= pos);
            let chunk = &chunks[i];
            let data = self.cached_chunk(data_id, chunk)?;
            let from = (pos - chunk.chunk_offset) as usize;
            let n = (data.len() - from).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&data[from..from + n]);
            done += n;
        }
        Ok(done)
    }

    /// Calls `sink` with every chunk of a file, verified, in order. A chunk
    /// fetched here counts against the reader's buffer budget until `sink`
    /// is done with it, so parallel callers hold a bounded amount.
    pub fn for_each_chunk(
        &self,
        id: NodeId,
        mut sink: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let file = self.regular_file(id)?;
        let id = file.id();
        for chunk in file.chunks() {
            // Use what prefetch cached, but don't fill the cache with a
            // file that is streamed once.
            match chunk.digest.as_ref().and_then(|d| self.cache.get(d)) {
                Some(data) if data.len() as u64 == chunk.chunk_size => sink(&data)?,
                _ => {
                    self.check_chunk_limits(id, chunk)?;
                    let _permit = self.buffers.acquire(self.fetch_cost(chunk));
                    sink(
                        &self
                            .fetch_chunk_unbudgeted(id, chunk)
                            .inspect_err(|e| self.forget_if_bad(e, chunk))?,
                    )?
                }
            }
        }
        Ok(())
    }

    /// Verifies every chunk of every file; returns bytes verified. Chunks that
    /// share a gzip member (min-chunk-size blobs) are checked in one pass over
    /// it, so the work is one decompression of the blob, whatever the TOC says;
    /// members are processed in parallel. Chunks are hashed as they stream,
    /// and compressed members read whole share the reader's buffer budget,
    /// so memory does not grow with the number of threads.
    pub fn verify(&self) -> Result<u64> {
        use rayon::prelude::*;
        self.verify_tar_split()?;
        let work = self.chunks_in_blob_order(|_, _| true);
        members_of(&work)
            .par_iter()
            .map(|member| {
                let first = member[0].1;
                let extent = first.next_offset.saturating_sub(first.offset);
                let mut bytes = 0;
                for &(id, chunk) in member.iter().filter(|(_, c)| c.zeros) {
                    self.check_chunk_limits(id, chunk)?;
                    self.verify_chunk(&mut io::repeat(0), 0, id, chunk, None)?;
                    bytes += chunk.chunk_size;
                }
                if member.iter().all(|(_, c)| c.zeros) {
                    return Ok(bytes);
                }
                let _permit = self.buffers.acquire(extent.min(self.max_member_read()));
                let mut gz = self.member_decoder(first)?;
                let mut pos = 0;
                for &(id, chunk) in member.iter().filter(|(_, c)| !c.zeros) {
                    self.check_chunk_limits(id, chunk)?;
                    // The index guarantees chunks of one member do not overlap.
                    self.verify_chunk(&mut gz, chunk.inner_offset - pos, id, chunk, None)?;
                    pos = chunk.inner_offset + chunk.chunk_size;
                    bytes += chunk.chunk_size;
                }
                Ok(bytes)
            })
            .try_reduce(|| 0, |a, b| Ok(a + b))
    }

    /// zstd:chunked v2: the size of the tar the layer decompresses to, from
    /// its tar-split (checked against the TOC's `tarSplitDigest` first), so
    /// the whole blob need not be read to learn it; `None` for other formats.
    /// The tar-split is bounded by `max_toc_size`, compressed and inflated.
    pub fn tar_split_tar_size(&self) -> Result<Option<u64>> {
        let (Footer::ZstdChunked(z), Some(expected)) = (&self.footer, &self.tar_split_digest)
        else {
            return Ok(None);
        };
        let Some(pos) = z.tar_split else {
            return Ok(None);
        };
        for (what, len) in [
            ("compressed", pos.compressed_len),
            ("inflated", pos.uncompressed_len),
        ] {
            if len > self.max_toc_size {
                return Err(Error::LimitExceeded(format!(
                    "zstd:chunked tar-split is {len} bytes {what}, over the limit of {} (max_toc_size)",
                    self.max_toc_size
                )));
            }
        }
        let mut compressed = vec![0u8; pos.compressed_len as usize];
        self.src
            .read_exact_at(&mut compressed, pos.offset)
            .map_err(|e| Error::io(format!("reading the tar-split at offset {}", pos.offset), e))?;
        let actual = Digest::of(&compressed);
        if actual != *expected {
            return Err(Error::DigestMismatch {
                what: "zstd:chunked tar-split".into(),
                expected: expected.to_string(),
                actual: actual.to_string(),
            });
        }
        let decoder = zstd_decoder(io::Cursor::new(&compressed[..])).map_err(|e| {
            Error::InvalidToc(format!("cannot start decompressing the tar-split: {e}"))
        })?;
        // One byte past the stated length tells a frame that inflates more.
        let mut limited = decoder.take(pos.uncompressed_len + 1);
        let mut counted = CountingRead {
            inner: &mut limited,
            n: 0,
        };
        let size = crate::build::tarsplit::tar_size(&mut counted)?;
        if counted.n != pos.uncompressed_len {
            return Err(Error::InvalidToc(format!(
                "zstd:chunked tar-split inflates to {}{} bytes, not the {} its position states",
                if counted.n > pos.uncompressed_len {
                    "more than "
                } else {
                    ""
                },
                counted.n.min(pos.uncompressed_len),
                pos.uncompressed_len
            )));
        }
        Ok(Some(size))
    }

    /// zstd:chunked v2: checks the tar-split frame against the TOC's
    /// `tarSplitDigest` (the digest of its compressed bytes).
    fn verify_tar_split(&self) -> Result<()> {
        let (Footer::ZstdChunked(z), Some(expected)) = (&self.footer, &self.tar_split_digest)
        else {
            return Ok(());
        };
        let Some(pos) = z.tar_split else {
            return Err(Error::InvalidToc(
                "the TOC has a tarSplitDigest but the footer no tar-split".into(),
            ));
        };
        let mut hasher = Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut at = pos.offset;
        while at < pos.end() {
            let n = (pos.end() - at).min(buf.len() as u64) as usize;
            self.src
                .read_exact_at(&mut buf[..n], at)
                .map_err(|e| Error::io(format!("reading the tar-split at offset {at}"), e))?;
            hasher.update(&buf[..n]);
            at += n as u64;
        }
        let actual = hasher.finish_digest();
        if actual != *expected {
            return Err(Error::DigestMismatch {
                what: "zstd:chunked tar-split".into(),
                expected: expected.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(())
    }

    /// The chunks selected by `want`, sorted by their place in the blob.
    fn chunks_in_blob_order(&self, want: impl Fn(NodeId, &Chunk) -> bool) -> Vec<(NodeId, &Chunk)> {
        let mut work: Vec<(NodeId, &Chunk)> = self
            .index
            .all_chunks()
            .filter(|&(id, c)| want(id, c))
            .collect();
        work.sort_by_key(|(_, c)| (c.offset, c.next_offset, c.inner_offset));
        work
    }

    /// A sequential reader over a file's content.
    pub fn open_file(&self, id: NodeId) -> Result<FileReader<'_>> {
        let size = self.regular_file(id)?.size();
        Ok(FileReader {
            reader: self,
            id,
            pos: 0,
            size,
        })
    }
}

/// Sorted chunks grouped by the gzip member(s) holding them.
fn members_of<'a, 'c>(work: &'a [(NodeId, &'c Chunk)]) -> Vec<&'a [(NodeId, &'c Chunk)]> {
    work.chunk_by(|(_, a), (_, b)| (a.offset, a.next_offset) == (b.offset, b.next_offset))
        .collect()
}

/// `io::Read` + `io::Seek` over one file.
pub struct FileReader<'a> {
    reader: &'a Reader,
    id: NodeId,
    pos: u64,
    size: u64,
}

impl Read for FileReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self
            .reader
            .read_at(self.id, self.pos, buf)
            .map_err(io::Error::from)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl io::Seek for FileReader<'_> {
    fn seek(&mut self, to: io::SeekFrom) -> io::Result<u64> {
        let target = match to {
            io::SeekFrom::Start(p) => Some(p),
            io::SeekFrom::End(d) => self.size.checked_add_signed(d),
            io::SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = target
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before start"))?;
        Ok(self.pos)
    }
}

/// Counts the bytes read through it.
struct CountingRead<R> {
    inner: R,
    n: u64,
}

impl<R: Read> Read for CountingRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}
