//! The eStargz builder: tar in, eStargz blob out (spec §7).

mod exec;
mod input;
mod order;
mod plan;
mod rollsum;
pub(crate) mod tarsplit;

use std::io::Write;
use std::path::PathBuf;

pub use input::BuildInput;
pub use order::{LANDMARK_CONTENT, NO_PREFETCH_LANDMARK, PREFETCH_LANDMARK};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::footer::{
    skippable_frame, Footer, Format, FramePosition, ZstdChunkedFooter, ZstdGeneration,
    SKIPPABLE_HEADER_SIZE,
};
use crate::tar::{clean_name, padded};
use crate::toc::{Toc, TOC_NAME};

/// Default chunk size: 4 MiB.
pub const DEFAULT_CHUNK_SIZE: u64 = 4 << 20;
/// Default gzip level, as in the reference.
pub const DEFAULT_COMPRESSION_LEVEL: u32 = 9;
/// Default zstd level of zstd:chunked builds, as containers/storage's.
pub const DEFAULT_ZSTD_LEVEL: u32 = 10;

/// Builder options; `Default` matches the reference's defaults.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BuildOptions {
    /// What to build: eStargz (the default), zstd:chunked v2
    /// (containers/storage's) or zstd:chunked v1 (stargz-snapshotter's).
    pub format: Format,
    /// Chunk size in bytes (0 = 4 MiB). zstd:chunked v2 cuts chunks by
    /// content instead, as containers/storage does, and ignores it.
    pub chunk_size: u64,
    /// Minimum compressed size of a gzip member (0 = off); enables `innerOffset`.
    pub min_chunk_size: u64,
    /// Compression level; `None` is the format's default. eStargz: 0-9 as
    /// in gzip (10-12 give libdeflate's extra effort), default 9;
    /// zstd:chunked: zstd's 1-22, default 10.
    pub compression_level: Option<u32>,
    /// Files to place first and prefetch (see `.prefetch.landmark`).
    pub prioritized_files: Vec<String>,
    /// Collect prioritized files that are missing instead of failing.
    pub allow_missing_prioritized: bool,
    /// Keep the TOC out of the blob (46-byte footer); it is returned separately.
    pub external_toc: bool,
    /// Lossless mode: the decompressed blob equals the input tar byte for byte.
    /// Requires `external_toc`; excludes prioritized files.
    pub keep_diff_id: bool,
    /// Worker threads (0 = all CPUs). Does not change the output.
    pub threads: usize,
    /// Where to spool compressed or streamed input (default: the system temp dir).
    pub temp_dir: Option<PathBuf>,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            format: Format::Estargz,
            chunk_size: DEFAULT_CHUNK_SIZE,
            min_chunk_size: 0,
            compression_level: None,
            prioritized_files: Vec::new(),
            allow_missing_prioritized: false,
            external_toc: false,
            keep_diff_id: false,
            threads: 0,
            temp_dir: None,
        }
    }
}

/// What a build produced: everything needed for the layer descriptor and its
/// annotations (`containerd.io/snapshot/stargz/toc.digest`,
/// `io.containers.estargz.uncompressed-size`).
#[derive(Debug, Clone)]
pub struct BuildResult {
    /// Digest of the blob (the layer digest).
    pub blob_digest: Digest,
    /// Size of the blob in bytes.
    pub blob_size: u64,
    /// Digest of the TOC JSON.
    pub toc_digest: Digest,
    /// Digest of the decompressed blob. zstd:chunked v2: the input tar's
    /// digest (the blob decompresses to it; its tar-split rebuilds it).
    pub diff_id: Digest,
    /// Size of the decompressed blob.
    pub uncompressed_size: u64,
    /// Blob offset of the embedded TOC member (`None` for an external TOC);
    /// zstd:chunked: of the compressed TOC inside its skippable frame.
    pub toc_offset: Option<u64>,
    /// The format built.
    pub format: Format,
    /// zstd:chunked: where the TOC (and v2's tar-split) are, what the
    /// footer and the manifest-position annotations say.
    pub zstd_chunked: Option<ZstdChunkedFooter>,
    /// zstd:chunked: sha256 of the compressed TOC (the manifest-checksum
    /// annotation).
    pub manifest_checksum: Option<Digest>,
    /// The TOC as a gzip member, when [`BuildOptions::external_toc`] is set.
    pub external_toc_data: Option<Vec<u8>>,
    /// Prioritized files that were not found (with `allow_missing_prioritized`).
    pub missed_prioritized: Vec<String>,
    /// Number of TOC entries.
    pub toc_entries: usize,
}

crate::options::option_setters!(BuildOptions {
    format: Format,
    chunk_size: u64,
    min_chunk_size: u64,
    compression_level: Option<u32>,
    prioritized_files: Vec<String>,
    allow_missing_prioritized: bool,
    external_toc: bool,
    keep_diff_id: bool,
    threads: usize,
    temp_dir: Option<PathBuf>,
});

impl BuildOptions {
    fn validate(&self) -> Result<()> {
        let level = self.level();
        match self.format {
            Format::Estargz if level > 12 => {
                return Err(Error::InvalidArgument(format!(
                    "compression level {level} (valid: 0-12)"
                )));
            }
            Format::Estargz => {}
            Format::Stargz => {
                return Err(Error::Unsupported(
                    "building legacy stargz (build estargz, which its readers read)".into(),
                ))
            }
            Format::ZstdChunked(generation) => {
                if !(1..=22).contains(&level) {
                    return Err(Error::InvalidArgument(format!(
                        "zstd compression level {level} (valid: 1-22)"
                    )));
                }
                let refuse = |what: &str| {
                    Err(Error::InvalidArgument(format!(
                        "{what} is an eStargz option; {} does not have it",
                        self.format.build_name()
                    )))
                };
                if self.min_chunk_size > 0 {
                    return refuse("min-chunk-size");
                }
                if self.external_toc || self.keep_diff_id {
                    return refuse("an external TOC");
                }
                if generation == ZstdGeneration::V2 && !self.prioritized_files.is_empty() {
                    return Err(Error::InvalidArgument(
                        "zstd:chunked keeps the input's order (its tar-split rebuilds the input), \
                         so it has no prioritized files; use zstd:chunked-v1 or estargz"
                            .into(),
                    ));
                }
            }
        }
        if self.keep_diff_id && !self.external_toc {
            return Err(Error::InvalidArgument(
                "keep-diff-id needs an external TOC (an embedded TOC would change the DiffID)"
                    .into(),
            ));
        }
        if self.keep_diff_id && !self.prioritized_files.is_empty() {
            return Err(Error::InvalidArgument(
                "keep-diff-id cannot reorder entries for prioritized files".into(),
            ));
        }
        Ok(())
    }

    /// The compression level, or the format's default.
    fn level(&self) -> u32 {
        self.compression_level.unwrap_or(if self.format.is_zstd() {
            DEFAULT_ZSTD_LEVEL
        } else {
            DEFAULT_COMPRESSION_LEVEL
        })
    }

    fn codec(&self) -> exec::Codec {
        if self.format.is_zstd() {
            exec::Codec::Zstd(self.level() as i32)
        } else {
            exec::Codec::Gzip(self.level())
        }
    }

    fn effective_chunk_size(&self) -> u64 {
        if self.chunk_size == 0 {
            DEFAULT_CHUNK_SIZE
        } else {
            self.chunk_size
        }
    }

    fn effective_threads(&self) -> usize {
        if self.threads > 0 {
            self.threads
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }
}

/// The TOC as its uncompressed tar form: header, JSON, padding, end marker.
pub fn toc_tar(json: &[u8]) -> Vec<u8> {
    let mut tar = crate::tarwrite::simple_file_header(TOC_NAME, json.len() as u64).to_vec();
    tar.extend_from_slice(json);
    tar.resize(512 + padded(json.len() as u64) as usize + 1024, 0);
    tar
}

/// Builds an eStargz blob from `input`, writing it to `out`.
pub fn build(input: BuildInput, out: &mut dyn Write, opts: &BuildOptions) -> Result<BuildResult> {
    opts.validate()?;
    let chunk_size = opts.effective_chunk_size();
    let prepared = input::prepare(input, opts.temp_dir.as_deref())?;
    let source = &prepared.source;
    let index = crate::tar::index(source)?;

    let mut crcs = Vec::new();
    let (mut plan, missed) = if opts.format == Format::ZstdChunked(ZstdGeneration::V2) {
        refuse_duplicates(&index)?;
        refuse_non_utf8(&index)?;
        let (plan, entry_crcs) = plan::plan_chunked_v2(&index, source)?;
        crcs = entry_crcs;
        (plan, Vec::new())
    } else if opts.keep_diff_id {
        if let Some(e) = index
            .entries
            .iter()
            .find(|e| clean_name(&e.name) == TOC_NAME)
        {
            return Err(Error::InvalidTar(format!(
                "input contains {:?}; keep-diff-id cannot drop it without changing the DiffID",
                e.name
            )));
        }
        (plan::plan_lossless(&index, chunk_size), Vec::new())
    } else {
        let ordering = order::order_entries(
            &index.entries,
            &opts.prioritized_files,
            opts.allow_missing_prioritized,
        )?;
        (
            plan::plan_reordered(&index, &ordering.items, chunk_size),
            ordering.missed,
        )
    };

    // Refuse inputs whose blob no reader could open (a file used as a
    // directory, dangling or cyclic hardlinks, ...) before compressing anything.
    crate::reader::Index::check_tree(&plan.toc).map_err(|e| match e {
        Error::InvalidToc(m) | Error::LimitExceeded(m) => {
            Error::InvalidTar(format!("the input is not a valid layer: {m}"))
        }
        other => other,
    })?;

    let mut output = exec::Output::new(out);
    if opts.min_chunk_size > 0 {
        exec::run_min_chunk(
            &mut plan,
            source,
            &mut output,
            opts.level(),
            opts.min_chunk_size,
        )?;
    } else {
        exec::run_parallel(
            &mut plan,
            source,
            &mut output,
            opts.codec(),
            opts.effective_threads(),
        )?;
    }

    if let Format::ZstdChunked(generation) = opts.format {
        let tar_split = match generation {
            ZstdGeneration::V2 => Some(tarsplit::tar_split(&index, &crcs, source)?),
            ZstdGeneration::V1 => None,
        };
        return finish_zstd_chunked(plan.toc, generation, tar_split, output, opts, missed);
    }

    let toc = Toc {
        version: 1,
        entries: plan.toc,
        tar_split_digest: String::new(),
    };
    let toc_entries = toc.entries.len();
    let json = toc.to_json();
    let toc_digest = Digest::of(&json);
    let toc_tar = toc_tar(&json);
    let toc_member = exec::gzip_member(&mut exec::new_compressor(opts.level())?, &toc_tar);

    let (toc_offset, external_toc) = if opts.external_toc {
        output.write_compressed(&Footer::ExternalToc.to_bytes())?;
        (None, Some(toc_member))
    } else {
        let offset = output.written;
        output.diff_hash.update(&toc_tar);
        output.write_compressed(&toc_member)?;
        output.write_compressed(&Footer::Estargz { toc_offset: offset }.to_bytes())?;
        (Some(offset), None)
    };
    output.flush()?;
    let uncompressed_size = output.diff_hash.len();
    Ok(BuildResult {
        blob_digest: output.blob_hash.finish_digest(),
        blob_size: output.written,
        toc_digest,
        diff_id: output.diff_hash.finish_digest(),
        uncompressed_size,
        toc_offset,
        format: Format::Estargz,
        zstd_chunked: None,
        manifest_checksum: None,
        external_toc_data: external_toc,
        missed_prioritized: missed,
        toc_entries,
    })
}

/// containers/storage's tar-split packer refuses a path twice (by its
/// cleaned name), so a v2 blob of such a tar could not be pulled there.
fn refuse_duplicates(index: &crate::tar::TarIndex) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for e in &index.entries {
        let name = clean_name(&e.name);
        if !seen.insert(name) {
            return Err(Error::InvalidTar(format!(
                "{:?} appears twice in the input; zstd:chunked's tar-split cannot hold a \
                 path twice (containers/storage refuses it)",
                e.name
            )));
        }
    }
    Ok(())
}

/// A name or link name that is not UTF-8 cannot be written as
/// containers/storage reads it: its TOC is JSON, which holds the name with
/// U+FFFD in place of the bytes, while its tar-split keeps the bytes, and
/// its pull then refuses the layer ("tar-split and TOC data is
/// inconsistent", containers/storage v1.55.1 on its own compressor's blob).
/// Refused before any work, naming the entry with its bytes escaped.
fn refuse_non_utf8(index: &crate::tar::TarIndex) -> Result<()> {
    for e in &index.entries {
        for (what, raw) in [
            ("name", &e.non_utf8_name),
            ("link name", &e.non_utf8_link_name),
        ] {
            if let Some(raw) = raw {
                return Err(Error::Unsupported(format!(
                    "zstd:chunked v2 of the tar entry at offset {} whose {what} \"{}\" is not UTF-8: \
                     containers/storage's JSON TOC cannot hold it as its tar-split does, so it \
                     refuses such a layer (build estargz or zstd:chunked-v1, whose blobs keep the \
                     bytes and whose TOC names are lossy as upstream's)",
                    e.header_start,
                    raw.escape_ascii()
                )));
            }
        }
    }
    Ok(())
}

/// Ends a zstd:chunked blob after its data frames: the TOC (zstd JSON) in a
/// skippable frame, v2's tar-split in another, the footer frame. Skippable
/// frames decompress to nothing, so the DiffID is the data frames' output.
fn finish_zstd_chunked(
    mut entries: Vec<crate::toc::TocEntry>,
    generation: ZstdGeneration,
    tar_split: Option<Vec<u8>>,
    mut output: exec::Output,
    opts: &BuildOptions,
    missed: Vec<String>,
) -> Result<BuildResult> {
    let level = opts.level() as i32;
    let compress = |data: &[u8], what: &str| {
        zstd::bulk::compress(data, level)
            .map_err(|e| Error::io(format!("compressing the {what}"), e))
    };
    let tar_split = match tar_split {
        Some(data) => Some((compress(&data, "tar-split")?, data.len() as u64)),
        None => None,
    };
    if generation == ZstdGeneration::V2 {
        // Like containers/storage: a file of one chunk has no chunk fields.
        for i in 0..entries.len() {
            let single = entries
                .get(i + 1)
                .is_none_or(|n| n.kind != crate::toc::EntryType::Chunk);
            if entries[i].kind == crate::toc::EntryType::Reg && single {
                entries[i].chunk_digest.clear();
            }
        }
    }
    let toc = Toc {
        version: 1,
        entries,
        tar_split_digest: tar_split
            .as_ref()
            .map(|(c, _)| Digest::of(c).to_string())
            .unwrap_or_default(),
    };
    let toc_entries = toc.entries.len();
    let json = toc.to_json();
    let toc_digest = Digest::of(&json);
    let compressed_toc = compress(&json, "TOC")?;
    let manifest_checksum = Digest::of(&compressed_toc);
    let frame_at = |written: u64, compressed_len: usize, uncompressed_len: u64| FramePosition {
        offset: written + SKIPPABLE_HEADER_SIZE as u64,
        compressed_len: compressed_len as u64,
        uncompressed_len,
    };
    let toc_position = frame_at(output.written, compressed_toc.len(), json.len() as u64);
    output.write_compressed(&skippable_frame(&compressed_toc))?;
    let tar_split_position = match &tar_split {
        Some((compressed, len)) => {
            let at = frame_at(output.written, compressed.len(), *len);
            output.write_compressed(&skippable_frame(compressed))?;
            Some(at)
        }
        None => None,
    };
    let footer = ZstdChunkedFooter {
        generation,
        toc: toc_position,
        tar_split: tar_split_position,
    };
    output.write_compressed(&footer.to_bytes())?;
    output.flush()?;
    let uncompressed_size = output.diff_hash.len();
    Ok(BuildResult {
        blob_digest: output.blob_hash.finish_digest(),
        blob_size: output.written,
        toc_digest,
        diff_id: output.diff_hash.finish_digest(),
        uncompressed_size,
        toc_offset: Some(toc_position.offset),
        format: Format::ZstdChunked(generation),
        zstd_chunked: Some(footer),
        manifest_checksum: Some(manifest_checksum),
        external_toc_data: None,
        missed_prioritized: missed,
        toc_entries,
    })
}
