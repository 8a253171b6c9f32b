//! `estargz`: convert tars to eStargz and inspect, list, read, extract and
//! verify eStargz blobs.

mod image;
mod listing;
mod optimize;
mod remote;

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use estargz_core::extract::{extract, ExtractOptions};
use estargz_core::{build, BuildInput, BuildOptions, Error, FileSource, OpenOptions, Reader};

#[derive(Parser)]
#[command(
    name = "estargz",
    version,
    about = "Build, inspect and read eStargz container layers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Convert a tar, a gzip-compressed tar or a directory into an eStargz blob.
    Convert(ConvertArgs),
    /// Show the footer, TOC digest and sizes of a blob.
    Inspect {
        #[command(flatten)]
        blob: BlobArgs,
        /// Print the TOC JSON itself.
        #[arg(long)]
        toc: bool,
        #[arg(long)]
        json: bool,
    },
    /// List the files of a blob.
    Ls {
        #[command(flatten)]
        blob: BlobArgs,
        /// Directory to list (default: the whole tree).
        path: Option<String>,
        /// Long format (mode, owner, size, time).
        #[arg(short, long)]
        long: bool,
        #[arg(long)]
        json: bool,
    },
    /// Write a file's verified content to stdout.
    Cat {
        #[command(flatten)]
        blob: BlobArgs,
        path: String,
    },
    /// Extract all files (verified) into a directory.
    Extract {
        #[command(flatten)]
        blob: BlobArgs,
        /// Target directory (created if missing); nothing is written outside it.
        dir: PathBuf,
        /// Do not apply owners from the TOC (default when not root).
        #[arg(long)]
        no_same_owner: bool,
        /// Do not apply extended attributes.
        #[arg(long)]
        no_xattrs: bool,
    },
    /// Verify the TOC digest (when given) and every chunk digest.
    Verify {
        #[command(flatten)]
        blob: BlobArgs,
    },
    /// Read layers of an image in a registry lazily (range requests).
    Pull(remote::PullArgs),
    /// Push eStargz blobs to a registry as a single-platform image.
    Push(remote::PushArgs),
    /// Convert an image (OCI layout or registry) into an eStargz image.
    ConvertImage(image::ConvertImageArgs),
    /// Run an image's workload once (runc, root, /dev/fuse) and write an
    /// eStargz image with the files it read first in each layer.
    Optimize(optimize::OptimizeArgs),
}

#[derive(Args)]
struct BlobArgs {
    /// The eStargz blob.
    blob: PathBuf,
    /// Fail unless the TOC digest equals this (the layer's toc.digest annotation).
    #[arg(long, alias = "toc-digest", value_name = "DIGEST")]
    expected_toc_digest: Option<estargz_core::Digest>,
    /// zstd:chunked: fail unless the sha256 of the compressed TOC equals this
    /// (the layer's zstd-chunked.manifest-checksum annotation).
    #[arg(long, value_name = "DIGEST")]
    expected_manifest_checksum: Option<estargz_core::Digest>,
    /// The external TOC data (the TOC gzip member), for blobs built with an
    /// external TOC.
    #[arg(long, alias = "external-toc", value_name = "FILE")]
    external_toc_data: Option<PathBuf>,
}

/// How each eStargz layer is built (shared by convert and convert-image).
#[derive(Args)]
pub struct LayerArgs {
    /// Chunk size in bytes.
    #[arg(long, default_value_t = estargz_core::build::DEFAULT_CHUNK_SIZE)]
    chunk_size: u64,
    /// Minimum compressed bytes per gzip member (enables innerOffset; 0 = off).
    #[arg(long, default_value_t = 0)]
    min_chunk_size: u64,
    /// Compression level 0-9 (10-12: extra effort).
    #[arg(long, alias = "level", default_value_t = estargz_core::build::DEFAULT_COMPRESSION_LEVEL)]
    compression_level: u32,
}

#[derive(Args)]
struct ConvertArgs {
    /// Input: tar, tar.gz, directory, or - for stdin.
    input: PathBuf,
    /// Output blob, or - for stdout.
    output: PathBuf,
    #[command(flatten)]
    layer: LayerArgs,
    /// File listing paths to prioritize (one per line), e.g. an optimizer's record.
    #[arg(long, value_name = "FILE")]
    prioritized_files: Option<PathBuf>,
    /// Report prioritized files that are missing instead of failing.
    #[arg(long)]
    allow_missing_prioritized: bool,
    /// Keep the TOC out of the blob and write the external TOC data (its
    /// gzip member) to FILE.
    #[arg(long, value_name = "FILE")]
    external_toc: Option<PathBuf>,
    /// Lossless: gunzip of the blob equals the input tar (needs --external-toc).
    #[arg(long)]
    keep_diff_id: bool,
    /// Compression threads (default: all CPUs); output does not depend on it.
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        // A closed pipe (e.g. `estargz ls | head`) is not an error worth reporting.
        Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("estargz: {e}");
            ExitCode::FAILURE
        }
    }
}

fn open_blob(args: &BlobArgs) -> Result<Reader, Error> {
    let src = FileSource::open(&args.blob)
        .map_err(|e| Error::io(format!("opening {}", args.blob.display()), e))?;
    let external_toc = match &args.external_toc_data {
        Some(p) => {
            Some(std::fs::read(p).map_err(|e| Error::io(format!("reading {}", p.display()), e))?)
        }
        None => None,
    };
    let opts = OpenOptions::default()
        .external_toc_data(external_toc)
        .expected_toc_digest(args.expected_toc_digest)
        .expected_manifest_checksum(args.expected_manifest_checksum);
    Reader::open(Arc::new(src), &opts)
}

fn run(command: Command) -> Result<(), Error> {
    match command {
        Command::Convert(args) => convert(args),
        Command::Pull(args) => remote::pull(args),
        Command::Push(args) => remote::push(args),
        Command::ConvertImage(args) => image::convert_image_cmd(args),
        Command::Optimize(args) => optimize::optimize_cmd(args),
        Command::Inspect { blob, toc, json } => {
            let reader = open_blob(&blob)?;
            if toc {
                let json = reader.toc()?.to_json();
                let mut out = io::stdout().lock();
                out.write_all(&json)
                    .and_then(|_| out.write_all(b"\n"))
                    .map_err(|e| Error::io("writing to stdout", e))
            } else {
                listing::print_inspect(&reader, json)
            }
        }
        Command::Ls {
            blob,
            path,
            long,
            json,
        } => {
            let reader = open_blob(&blob)?;
            listing::print_ls(&reader, path.as_deref().unwrap_or(""), long, json)
        }
        Command::Cat { blob, path } => {
            let reader = open_blob(&blob)?;
            let id = reader.lookup(&path)?;
            let mut out = io::stdout().lock();
            reader.for_each_chunk(id, |data| {
                out.write_all(data)
                    .map_err(|e| Error::io("writing to stdout", e))
            })?;
            out.flush().map_err(|e| Error::io("writing to stdout", e))
        }
        Command::Extract {
            blob,
            dir,
            no_same_owner,
            no_xattrs,
        } => {
            let reader = open_blob(&blob)?;
            let mut opts = ExtractOptions::default();
            opts.same_owner &= !no_same_owner;
            opts.xattrs = !no_xattrs;
            let stats = extract(&reader, &dir, &opts)?;
            report_extract(&stats, &dir);
            Ok(())
        }
        Command::Verify { blob } => {
            let reader = open_blob(&blob)?;
            let bytes = reader.verify()?;
            let toc_note = match (&blob.expected_toc_digest, &blob.expected_manifest_checksum) {
                (Some(_), Some(_)) => "TOC digest and manifest checksum match",
                (Some(_), None) => "TOC digest matches",
                (None, Some(_)) => "manifest checksum matches",
                (None, None) => "TOC digest not checked (pass --expected-toc-digest)",
            };
            println!(
                "ok: {} TOC entries, {bytes} bytes of file data verified; {toc_note}; toc digest {}",
                reader.toc_entry_count(),
                reader.toc_digest()
            );
            Ok(())
        }
    }
}

fn convert(args: ConvertArgs) -> Result<(), Error> {
    if args.keep_diff_id && args.external_toc.is_none() {
        return Err(Error::InvalidArgument(
            "--keep-diff-id needs --external-toc FILE (an embedded TOC would change the DiffID)"
                .into(),
        ));
    }
    let prioritized_files = match &args.prioritized_files {
        Some(p) => std::fs::read_to_string(p)
            .map_err(|e| Error::io(format!("reading {}", p.display()), e))?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect(),
        None => Vec::new(),
    };
    let opts = BuildOptions::default()
        .chunk_size(args.layer.chunk_size)
        .min_chunk_size(args.layer.min_chunk_size)
        .compression_level(args.layer.compression_level)
        .prioritized_files(prioritized_files)
        .allow_missing_prioritized(args.allow_missing_prioritized)
        .external_toc(args.external_toc.is_some())
        .keep_diff_id(args.keep_diff_id)
        .threads(args.threads);
    let input = if args.input == Path::new("-") {
        BuildInput::Reader(Box::new(io::stdin()))
    } else {
        BuildInput::Path(args.input.clone())
    };
    let result = if args.output == Path::new("-") {
        let mut out = BufWriter::with_capacity(1 << 20, io::stdout().lock());
        build(input, &mut out, &opts)?
    } else {
        write_atomically(&args.output, |w| build(input, w, &opts))?
    };
    if let (Some(path), Some(toc)) = (&args.external_toc, &result.external_toc_data) {
        write_atomically(path, |w| {
            w.write_all(toc)
                .map_err(|e| Error::io(format!("writing {}", path.display()), e))
        })?;
    }
    let mut report = io::stderr().lock();
    if args.output != Path::new("-") {
        // stdout is free for the report when the blob goes to a file.
        let mut out = io::stdout().lock();
        return listing::print_build_result(&mut out, &result, args.json);
    }
    listing::print_build_result(&mut report, &result, args.json)
}

/// One line on stderr about what `extract` wrote.
fn report_extract(stats: &estargz_core::extract::ExtractStats, dir: &Path) {
    eprintln!(
        "extracted {} files ({} bytes), {} directories, {} other entries into {}",
        stats.files,
        stats.bytes,
        stats.dirs,
        stats.others,
        dir.display()
    );
}

/// Writes to `path.tmp` and renames, so a failed run leaves no partial output.
fn write_atomically<T>(
    path: &Path,
    f: impl FnOnce(&mut dyn Write) -> Result<T, Error>,
) -> Result<T, Error> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let file =
        File::create(&tmp).map_err(|e| Error::io(format!("creating {}", tmp.display()), e))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let result = f(&mut w).and_then(|v| {
        w.flush()
            .map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
        std::fs::rename(&tmp, path)
            .map_err(|e| Error::io(format!("renaming to {}", path.display()), e))?;
        Ok(v)
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Flattened shared flags must not clash with a command's own (clap
    /// checks this only in debug builds, at run time).
    #[test]
    fn command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn pull_takes_a_layer_index_or_digest_but_not_with_all() {
        let pull = |extra: &[&str]| {
            let base = ["estargz", "pull", "docker://127.0.0.1:5000/a:v1", "--ls"];
            Cli::try_parse_from(base.iter().chain(extra))
        };
        let digest = format!("sha256:{}", "5".repeat(64));
        for layer in ["1", digest.as_str()] {
            assert!(pull(&["--layer", layer]).is_ok(), "{layer}");
        }
        let e = pull(&["--layer", "1", "--all"]).err().unwrap();
        assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict);
        let e = pull(&["--layer", "x"]).err().unwrap();
        assert!(e.to_string().contains("expected a layer index"), "{e}");
    }

    /// Old flag spellings still parse, to the same values as the new ones,
    /// and help shows only the new names.
    #[test]
    fn old_flag_spellings_are_hidden_aliases() {
        let parse = |args: &[&str]| Cli::try_parse_from(args).unwrap().command;
        let blob_args = |c: Command| match c {
            Command::Verify { blob } => (blob.expected_toc_digest, blob.external_toc_data),
            _ => unreachable!(),
        };
        let d = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
        let new = blob_args(parse(&[
            "estargz",
            "verify",
            "--expected-toc-digest",
            d,
            "--external-toc-data",
            "t.gz",
            "b",
        ]));
        let old = blob_args(parse(&[
            "estargz",
            "verify",
            "--toc-digest",
            d,
            "--external-toc",
            "t.gz",
            "b",
        ]));
        assert_eq!(new, old);
        assert_eq!(new, (Some(d.parse().unwrap()), Some(PathBuf::from("t.gz"))));
        let level = |c: Command| match c {
            Command::Convert(a) => a.layer.compression_level,
            _ => unreachable!(),
        };
        assert_eq!(
            level(parse(&["estargz", "convert", "--level", "3", "i", "o"])),
            3
        );
        assert_eq!(
            level(parse(&[
                "estargz",
                "convert",
                "--compression-level",
                "3",
                "i",
                "o"
            ])),
            3
        );

        let mut cli = Cli::command();
        for sub in ["verify", "convert", "pull", "convert-image"] {
            let help = cli
                .find_subcommand_mut(sub)
                .unwrap()
                .render_long_help()
                .to_string();
            for old in [
                "--toc-digest",
                "--external-toc ",
                "--level",
                "--timeout",
                "--memory-cache ",
                "--cache-size",
                "--single-range",
            ] {
                // `--external-toc` is the convert flag itself; only its read
                // meaning was renamed.
                if old == "--external-toc " && matches!(sub, "convert" | "convert-image") {
                    continue;
                }
                assert!(!help.contains(old), "{sub} help shows {old}");
            }
        }
    }
}
