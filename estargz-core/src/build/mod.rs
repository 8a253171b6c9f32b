//! The eStargz builder: tar in, eStargz blob out (spec §7).

mod exec;
mod input;
mod order;
mod plan;

use std::io::Write;
use std::path::PathBuf;

pub use input::BuildInput;
pub use order::{LANDMARK_CONTENT, NO_PREFETCH_LANDMARK, PREFETCH_LANDMARK};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::footer::Footer;
use crate::tar::{clean_name, padded};
use crate::toc::{Toc, TOC_NAME};

/// Default chunk size: 4 MiB.
pub const DEFAULT_CHUNK_SIZE: u64 = 4 << 20;
/// Default gzip level, as in the reference.
pub const DEFAULT_COMPRESSION_LEVEL: u32 = 9;

/// Builder options; `Default` matches the reference's defaults.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BuildOptions {
    /// Chunk size in bytes (0 = 4 MiB).
    pub chunk_size: u64,
    /// Minimum compressed size of a gzip member (0 = off); enables `innerOffset`.
    pub min_chunk_size: u64,
    /// Compression level: 0-9 as in gzip (10-12 give libdeflate's extra effort).
    pub compression_level: u32,
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
            chunk_size: DEFAULT_CHUNK_SIZE,
            min_chunk_size: 0,
            compression_level: DEFAULT_COMPRESSION_LEVEL,
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
    /// Digest of the decompressed blob.
    pub diff_id: Digest,
    /// Size of the decompressed blob.
    pub uncompressed_size: u64,
    /// Blob offset of the embedded TOC member (`None` for an external TOC).
    pub toc_offset: Option<u64>,
    /// The TOC as a gzip member, when [`BuildOptions::external_toc`] is set.
    pub external_toc_data: Option<Vec<u8>>,
    /// Prioritized files that were not found (with `allow_missing_prioritized`).
    pub missed_prioritized: Vec<String>,
    /// Number of TOC entries.
    pub toc_entries: usize,
}

crate::options::option_setters!(BuildOptions {
    chunk_size: u64,
    min_chunk_size: u64,
    compression_level: u32,
    prioritized_files: Vec<String>,
    allow_missing_prioritized: bool,
    external_toc: bool,
    keep_diff_id: bool,
    threads: usize,
    temp_dir: Option<PathBuf>,
});

impl BuildOptions {
    fn validate(&self) -> Result<()> {
        if self.compression_level > 12 {
            return Err(Error::InvalidArgument(format!(
                "compression level {} (valid: 0-12)",
                self.compression_level
            )));
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

    let (mut plan, missed) = if opts.keep_diff_id {
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
            opts.compression_level,
            opts.min_chunk_size,
        )?;
    } else {
        exec::run_parallel(
            &mut plan,
            source,
            &mut output,
            opts.compression_level,
            opts.effective_threads(),
        )?;
    }

    let toc = Toc {
        version: 1,
        entries: plan.toc,
    };
    let toc_entries = toc.entries.len();
    let json = toc.to_json();
    let toc_digest = Digest::of(&json);
    let toc_tar = toc_tar(&json);
    let toc_member =
        exec::gzip_member(&mut exec::new_compressor(opts.compression_level)?, &toc_tar);

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
        external_toc_data: external_toc,
        missed_prioritized: missed,
        toc_entries,
    })
}
