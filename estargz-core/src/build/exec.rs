//! Executes a plan: cuts the stream into gzip members (or zstd frames),
//! compresses them and
//! writes them in order while hashing (blob digest, DiffID, chunk and file
//! digests), so no second pass over the output is needed.
//!
//! Normal mode cuts members at every chunk start, so members are independent
//! and are compressed in parallel, whole-buffer (libdeflate). Because the cut
//! points depend only on the input, the output is identical for any thread
//! count. Min-chunk-size mode decides cuts from the compressed size so far,
//! which is inherently sequential; it streams through one deflate encoder.

use std::io::{self, Write};
use std::sync::{mpsc, Mutex};

use super::plan::{ChunkInfo, Plan, Seg, Step};
use crate::digest::Hasher;
use crate::error::{Error, Result};
use crate::source::ReadAt;
use crate::toc::TocEntry;

/// Header-only runs longer than this are split into several members so that
/// memory per member stays bounded (readers do not care where such cuts are).
const MAX_HEADER_RUN: u64 = 4 << 20;

/// The blob sink: counts and hashes compressed bytes and the uncompressed stream.
pub struct Output<'w> {
    writer: &'w mut dyn Write,
    pub written: u64,
    pub blob_hash: Hasher,
    pub diff_hash: Hasher,
}

impl<'w> Output<'w> {
    pub fn new(writer: &'w mut dyn Write) -> Self {
        Output {
            writer,
            written: 0,
            blob_hash: Hasher::new(),
            diff_hash: Hasher::new(),
        }
    }

    /// Writes compressed bytes (not part of the DiffID by themselves).
    pub fn write_compressed(&mut self, data: &[u8]) -> Result<()> {
        self.writer
            .write_all(data)
            .map_err(|e| Error::io("writing the blob", e))?;
        self.blob_hash.update(data);
        self.written += data.len() as u64;
        Ok(())
    }

    pub fn flush(&mut self) -> Result<()> {
        self.writer
            .flush()
            .map_err(|e| Error::io("flushing the blob", e))
    }
}

impl Write for Output<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_compressed(buf)
            .map_err(|e| io::Error::other(e.to_string()))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }
}

/// Compresses one buffer into a complete gzip member.
pub fn gzip_member(compressor: &mut libdeflater::Compressor, data: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; compressor.gzip_compress_bound(data.len())];
    let n = compressor
        .gzip_compress(data, &mut out)
        .expect("output buffer sized by gzip_compress_bound");
    out.truncate(n);
    out
}

pub fn new_compressor(level: u32) -> Result<libdeflater::Compressor> {
    let lvl = libdeflater::CompressionLvl::new(level as i32)
        .map_err(|_| Error::InvalidArgument(format!("compression level {level} (valid: 0-12)")))?;
    Ok(libdeflater::Compressor::new(lvl))
}

/// What members are: gzip members (eStargz) or zstd frames (zstd:chunked),
/// with the level.
#[derive(Debug, Clone, Copy)]
pub enum Codec {
    Gzip(u32),
    Zstd(i32),
}

/// One worker's compressor.
pub enum Compressor {
    Gzip(libdeflater::Compressor),
    Zstd(zstd::bulk::Compressor<'static>),
}

impl Compressor {
    pub fn new(codec: Codec) -> Result<Self> {
        Ok(match codec {
            Codec::Gzip(level) => Compressor::Gzip(new_compressor(level)?),
            Codec::Zstd(level) => Compressor::Zstd(
                zstd::bulk::Compressor::new(level)
                    .map_err(|e| Error::InvalidArgument(format!("zstd level {level}: {e}")))?,
            ),
        })
    }

    /// One complete member (gzip) or frame (zstd) holding `data`.
    pub fn member(&mut self, data: &[u8]) -> Result<Vec<u8>> {
        match self {
            Compressor::Gzip(c) => Ok(gzip_member(c, data)),
            Compressor::Zstd(c) => c
                .compress(data)
                .map_err(|e| Error::io("compressing a zstd frame", e)),
        }
    }
}

fn fill(src: &dyn ReadAt, seg: &Seg, buf: &mut Vec<u8>) -> Result<()> {
    match seg {
        Seg::Raw { start, len } => {
            let at = buf.len();
            buf.resize(at + *len as usize, 0);
            src.read_exact_at(&mut buf[at..], *start)
                .map_err(|e| Error::io(format!("reading input at offset {start}"), e))
        }
        Seg::Inline(bytes) => {
            buf.extend_from_slice(bytes);
            Ok(())
        }
        Seg::Zeros(n) => {
            buf.resize(buf.len() + *n as usize, 0);
            Ok(())
        }
    }
}

/// Per-file digest state for files with several chunks.
#[derive(Default)]
struct FileDigests {
    current: Option<(usize, Hasher)>,
}

impl FileDigests {
    fn chunk(
        &mut self,
        toc: &mut [TocEntry],
        chunk: &ChunkInfo,
        data: &[u8],
        chunk_digest: String,
    ) {
        if !chunk.multi_chunk {
            toc[chunk.file_toc_index].digest = chunk_digest.clone();
        } else {
            let (_, hasher) = self
                .current
                .get_or_insert_with(|| (chunk.file_toc_index, Hasher::new()));
            hasher.update(data);
            if chunk.is_last {
                let (idx, hasher) = self.current.take().expect("set above");
                toc[idx].digest = hasher.finish();
            }
        }
        toc[chunk.toc_index].chunk_digest = chunk_digest;
    }
}

struct Job {
    segs: Vec<Seg>,
    /// The chunk whose payload starts this member, and its length.
    chunk: Option<(ChunkInfo, u64)>,
}

/// A compressed member: compressed bytes, uncompressed bytes, chunk digest.
type Member = (Vec<u8>, Vec<u8>, Option<String>);

struct Done {
    seq: u64,
    chunk: Option<(ChunkInfo, u64)>,
    result: Result<Member>,
}

/// Groups steps into member jobs: a new member at every chunk start, and
/// after every `MAX_HEADER_RUN` bytes of non-payload data. `emit` returns
/// false to stop early.
fn for_each_job(steps: &[Step], mut emit: impl FnMut(Job) -> bool) {
    let empty = || Job {
        segs: Vec::new(),
        chunk: None,
    };
    let mut job = empty();
    let mut extra = 0; // bytes in the job besides its chunk payload
    let mut iter = steps.iter();
    while let Some(step) = iter.next() {
        let cut = match step {
            Step::ChunkStart(_) | Step::Cut => true,
            Step::Seg(_) => extra >= MAX_HEADER_RUN,
        };
        if cut && !job.segs.is_empty() && !emit(std::mem::replace(&mut job, empty())) {
            return;
        }
        if cut {
            extra = 0;
        }
        match step {
            Step::ChunkStart(info) => {
                let Some(Step::Seg(payload)) = iter.next() else {
                    unreachable!("a chunk start is always followed by its payload")
                };
                job.chunk = Some((*info, payload.len()));
                job.segs.push(payload.clone());
            }
            Step::Seg(seg) => {
                extra += seg.len();
                job.segs.push(seg.clone());
            }
            Step::Cut => {}
        }
    }
    if !job.segs.is_empty() {
        emit(job);
    }
}

/// Normal mode: members compressed in parallel on `threads` workers.
pub fn run_parallel(
    plan: &mut Plan,
    src: &dyn ReadAt,
    out: &mut Output,
    codec: Codec,
    threads: usize,
) -> Result<()> {
    Compressor::new(codec)?; // validate the level before starting threads
    let threads = threads.max(1);
    // Enough jobs in flight that one slow member does not idle the other workers.
    let in_flight = (threads * 8).max(16);
    let Plan { steps, toc } = plan;
    let steps: &[Step] = steps;
    let (job_tx, job_rx) = mpsc::sync_channel::<(u64, Job)>(threads);
    let job_rx = Mutex::new(job_rx);
    let (done_tx, done_rx) = mpsc::channel::<Done>();
    let (token_tx, token_rx) = mpsc::sync_channel::<()>(in_flight);
    for _ in 0..in_flight {
        token_tx.send(()).expect("capacity reserved");
    }

    std::thread::scope(|scope| -> Result<()> {
        scope.spawn(move || {
            let mut seq = 0u64;
            for_each_job(steps, |job| {
                if token_rx.recv().is_err() {
                    return false;
                }
                let ok = job_tx.send((seq, job)).is_ok();
                seq += 1;
                ok
            });
        });
        for _ in 0..threads {
            let job_rx = &job_rx;
            let done_tx = done_tx.clone();
            scope.spawn(move || {
                let mut compressor = Compressor::new(codec).expect("validated");
                loop {
                    let next = job_rx.lock().expect("no panics while held").recv();
                    let Ok((seq, job)) = next else { break };
                    let result = (|| {
                        let mut buf = Vec::new();
                        for seg in &job.segs {
                            fill(src, seg, &mut buf)?;
                        }
                        let compressed = compressor.member(&buf)?;
                        // Hash here, in parallel; the writer thread only hashes the stream.
                        let digest = job
                            .chunk
                            .map(|(_, len)| crate::digest::sha256_digest(&buf[..len as usize]));
                        Ok((compressed, buf, digest))
                    })();
                    let chunk = job.chunk;
                    // If the writer has stopped, keep draining jobs anyway: the
                    // producer may be blocked sending one, and only stops once
                    // it asks for its next token.
                    let _ = done_tx.send(Done { seq, chunk, result });
                }
            });
        }
        drop(done_tx);
        // `token_tx` moves into the writer loop: when it returns (also on error)
        // the producer's next token wait fails, so every thread winds down.
        write_in_order(done_rx, token_tx, toc, out)
    })
}

/// Writes finished members in sequence order, filling in TOC offsets and digests.
fn write_in_order(
    done_rx: mpsc::Receiver<Done>,
    token_tx: mpsc::SyncSender<()>,
    toc: &mut [TocEntry],
    out: &mut Output,
) -> Result<()> {
    let mut pending = std::collections::BTreeMap::new();
    let mut next = 0u64;
    let mut files = FileDigests::default();
    for done in done_rx.iter() {
        pending.insert(done.seq, (done.chunk, done.result));
        while let Some((chunk, result)) = pending.remove(&next) {
            let (compressed, data, digest) = result?;
            if let (Some((info, len)), Some(digest)) = (chunk, digest) {
                toc[info.toc_index].offset = out.written;
                files.chunk(toc, &info, &data[..len as usize], digest);
            }
            out.diff_hash.update(&data);
            out.write_compressed(&compressed)?;
            if let Some((info, _)) = chunk.filter(|(info, _)| info.end_offset) {
                toc[info.file_toc_index].end_offset = out.written;
            }
            next += 1;
            // The producer may have stopped already; a closed channel is fine.
            let _ = token_tx.send(());
        }
    }
    Ok(())
}

/// Min-chunk-size mode (`innerOffset`): one streaming encoder, a new member
/// only once the current one holds at least `min_chunk_size` compressed bytes.
pub fn run_min_chunk(
    plan: &mut Plan,
    src: &dyn ReadAt,
    out: &mut Output,
    level: u32,
    min_chunk_size: u64,
) -> Result<()> {
    let level = flate2::Compression::new(level.min(9));
    let Plan { steps, toc } = plan;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), level);
    let mut stream_start = 0u64; // blob offset of the current member
    let mut u_start = 0u64; // uncompressed position where that member started
    let mut u_pos = 0u64;
    let mut files = FileDigests::default();
    let mut buf = Vec::new();
    let mut iter = steps.iter();
    let io_err = |e| Error::io("compressing", e);
    while let Some(step) = iter.next() {
        match step {
            Step::Seg(seg) => {
                buf.clear();
                fill(src, seg, &mut buf)?;
                encoder.write_all(&buf).map_err(io_err)?;
                out.diff_hash.update(&buf);
                u_pos += buf.len() as u64;
            }
            Step::ChunkStart(info) => {
                encoder.flush().map_err(io_err)?;
                let n = out.written + encoder.get_ref().len() as u64;
                let mut inner = u_pos - u_start;
                if info.force_new_member || n - stream_start >= min_chunk_size {
                    let member = std::mem::replace(
                        &mut encoder,
                        flate2::write::GzEncoder::new(Vec::new(), level),
                    )
                    .finish()
                    .map_err(io_err)?;
                    out.write_compressed(&member)?;
                    stream_start = out.written;
                    u_start = u_pos;
                    inner = 0;
                } else {
                    // Keep the compressed bytes flowing to the sink so the buffer stays small.
                    let pending = std::mem::take(encoder.get_mut());
                    out.write_compressed(&pending)?;
                }
                toc[info.toc_index].offset = stream_start;
                toc[info.toc_index].inner_offset = inner;
                let Some(Step::Seg(payload)) = iter.next() else {
                    unreachable!("a chunk start is always followed by its payload")
                };
                buf.clear();
                fill(src, payload, &mut buf)?;
                let digest = crate::digest::sha256_digest(&buf);
                files.chunk(toc, info, &buf, digest);
                encoder.write_all(&buf).map_err(io_err)?;
                out.diff_hash.update(&buf);
                u_pos += buf.len() as u64;
            }
            // Only zstd:chunked v2 plans cut members on their own.
            Step::Cut => {}
        }
        if encoder.get_ref().len() > 1 << 20 {
            let pending = std::mem::take(encoder.get_mut());
            out.write_compressed(&pending)?;
        }
    }
    let member = encoder.finish().map_err(io_err)?;
    out.write_compressed(&member)?;
    Ok(())
}
