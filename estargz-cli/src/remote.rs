//! `estargz pull` (read layers of a registry image lazily) and
//! `estargz push` (publish eStargz blobs as an image).

use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use estargz_args::{CacheArgs, LayerChoice, RegistryArgs};
use estargz_core::extract::{extract, ExtractOptions};
use estargz_core::reader::BackgroundFetch;
use estargz_core::remote::manifest::{self, Descriptor, Manifest, Platform};
use estargz_core::remote::{open_layer, LayerOptions, Reference, RemoteLayer};
use estargz_core::{Error, FileSource, NodeId, OpenOptions, Reader};

#[derive(Args)]
pub struct PullArgs {
    /// Image reference: [docker://]host[:port]/repo[:tag|@digest].
    reference: String,
    #[command(flatten)]
    registry: RegistryArgs,
    #[command(flatten)]
    choice: LayerChoice,
    /// Read every layer (`--cat` takes a file from the topmost layer that has it).
    #[arg(long, conflicts_with = "layer")]
    all: bool,
    /// Write a file's content to stdout; repeatable (fetched together).
    #[arg(long, value_name = "PATH")]
    cat: Vec<String>,
    /// List the files of the layer(s).
    #[arg(long)]
    ls: bool,
    /// Download the layer and extract it into DIR (one layer).
    #[arg(long, value_name = "DIR")]
    extract: Option<PathBuf>,
    #[command(flatten)]
    cache: CacheArgs,
    /// Skip the prefetch that `.prefetch.landmark` asks for.
    #[arg(long)]
    no_prefetch: bool,
    /// Keep fetching the rest of the layer in the background until the
    /// command finishes (useful with --cache-dir).
    #[arg(long)]
    background_fetch: bool,
    /// Read layers without a toc.digest annotation (TOC not anchored to the manifest).
    #[arg(long)]
    allow_unverified_toc: bool,
    /// Never send multi-range requests.
    #[arg(long, alias = "single-range")]
    force_single_range: bool,
    /// No progress or summary on stderr.
    #[arg(short, long)]
    quiet: bool,
}

pub fn pull(args: PullArgs) -> Result<(), Error> {
    let reference = Reference::parse(&args.reference)?;
    let registry = args.registry.registry()?;
    let platform = args.choice.platform()?;
    let image = registry.resolve_manifest(&reference, platform.as_ref())?;
    let layers = &image.manifest.layers;
    let selected: Vec<usize> = if args.all {
        (0..layers.len()).collect()
    } else {
        let index = (args.choice.selector())
            .resolve(layers, &image.reference.to_string())
            .map_err(|e| match e {
                // The only selector error that --all would avoid.
                Error::InvalidArgument(m) => Error::InvalidArgument(format!("{m}, or use --all")),
                e => e,
            })?;
        vec![index]
    };
    if args.cat.is_empty() && !args.ls && args.extract.is_none() {
        return Err(Error::InvalidArgument(
            "nothing to do: give --cat PATH, --ls or --extract DIR".into(),
        ));
    }
    if args.extract.is_some() && selected.len() != 1 {
        return Err(Error::InvalidArgument(
            "--extract reads one layer: choose it with --layer N|DIGEST".into(),
        ));
    }
    let mut layer_opts = LayerOptions::default()
        .cache(Some(args.cache.open()?))
        .allow_unverified_toc(args.allow_unverified_toc)
        .span_dir(args.cache.cache_dir.clone());
    layer_opts.blob.force_single_range = args.force_single_range;

    let started = Instant::now();
    let layers: Vec<RemoteLayer> = selected
        .iter()
        .map(|&i| open_layer(&registry, &image, i, &layer_opts))
        .collect::<Result<_, _>>()?;
    let progress = Progress::start(&layers, args.quiet);
    if !args.no_prefetch {
        for l in &layers {
            l.reader.prefetch_landmarked()?;
        }
    }
    let background: Vec<BackgroundFetch> = if args.background_fetch {
        layers
            .iter()
            .map(|l| {
                BackgroundFetch::start(l.reader.clone(), estargz_core::reader::DEFAULT_BATCH_BYTES)
            })
            .collect()
    } else {
        Vec::new()
    };

    if args.ls {
        for l in &layers {
            if layers.len() > 1 {
                println!("# layer {} {}", l.index, l.descriptor.digest);
            }
            crate::listing::print_ls(&l.reader, "", false, false)?;
        }
    }
    if !args.cat.is_empty() {
        cat_files(&layers, &args.cat)?;
    }
    if let Some(dir) = &args.extract {
        extract_layer(&layers[0], dir)?;
    }
    drop(background);
    progress.finish();
    if !args.quiet {
        for l in &layers {
            let s = l.blob.stats();
            let size = l.descriptor.size;
            eprintln!(
                "layer {} {}: fetched {} of {} bytes ({:.1}%) in {} requests{}",
                l.index,
                l.descriptor.digest,
                s.bytes,
                size,
                100.0 * s.bytes as f64 / size.max(1) as f64,
                s.requests,
                if l.blob.single_range_mode() {
                    " (single-range mode)"
                } else {
                    ""
                }
            );
        }
        eprintln!("done in {:.2}s", started.elapsed().as_secs_f64());
    }
    Ok(())
}

/// Finds each path in the topmost layer that has it (a whiteout above
/// hides it), fetches all of them together, then streams them out.
fn cat_files(layers: &[RemoteLayer], paths: &[String]) -> Result<(), Error> {
    let mut found: Vec<(&RemoteLayer, NodeId)> = Vec::new();
    for path in paths {
        let hit = find_in_layers(layers, path)
            .ok_or_else(|| Error::NotFound(format!("{path} is in none of the layers read")))?;
        found.push(hit);
    }
    for l in layers {
        let ids: Vec<NodeId> = found
            .iter()
            .filter(|(fl, _)| std::ptr::eq(*fl, l))
            .map(|(_, id)| *id)
            .collect();
        if !ids.is_empty() {
            l.reader.prefetch_files(&ids)?;
        }
    }
    let mut out = io::stdout().lock();
    for (l, id) in found {
        l.reader.for_each_chunk(id, |data| {
            out.write_all(data)
                .map_err(|e| Error::io("writing to stdout", e))
        })?;
    }
    out.flush().map_err(|e| Error::io("writing to stdout", e))
}

fn find_in_layers<'a>(layers: &'a [RemoteLayer], path: &str) -> Option<(&'a RemoteLayer, NodeId)> {
    let clean = path.trim_matches('/');
    let (dir, name) = clean.rsplit_once('/').unwrap_or(("", clean));
    for l in layers.iter().rev() {
        if let Ok(id) = l.reader.lookup(clean) {
            return Some((l, id));
        }
        let whiteout = if dir.is_empty() {
            format!(".wh.{name}")
        } else {
            format!("{dir}/.wh.{name}")
        };
        if l.reader.lookup(&whiteout).is_ok() {
            return None;
        }
    }
    None
}

/// Extracting needs every byte: download the blob in large ranges to a
/// temporary file, then extract it locally (chunks verified as usual).
fn extract_layer(layer: &RemoteLayer, dir: &std::path::Path) -> Result<(), Error> {
    let mut tmp = tempfile::NamedTempFile::new()
        .map_err(|e| Error::io("creating a temporary file for the layer", e))?;
    let size = layer.descriptor.size;
    let piece = 16u64 << 20;
    let mut offset = 0;
    while offset < size {
        let end = (offset + piece).min(size);
        let data = layer
            .blob
            .fetch_ranges(std::slice::from_ref(&(offset..end)))?;
        tmp.write_all(&data[0])
            .map_err(|e| Error::io("writing the downloaded layer", e))?;
        offset = end;
    }
    let src = FileSource::new(
        tmp.reopen()
            .map_err(|e| Error::io("reopening the layer", e))?,
    )
    .map_err(|e| Error::io("reading the downloaded layer", e))?;
    let reader = Reader::open(
        Arc::new(src),
        &OpenOptions::default()
            .expected_toc_digest(Some(layer.reader.toc_digest()))
            .external_toc_data(layer.external_toc_data.clone()),
    )?;
    let stats = extract(&reader, dir, &ExtractOptions::default())?;
    crate::report_extract(&stats, dir);
    Ok(())
}

/// A one-line progress display on a terminal for fetches over a second.
struct Progress {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    fn start(layers: &[RemoteLayer], quiet: bool) -> Progress {
        let stop = Arc::new(AtomicBool::new(false));
        if quiet || !io::stderr().is_terminal() {
            return Progress { stop, thread: None };
        }
        let blobs: Vec<_> = layers.iter().map(|l| l.blob.clone()).collect();
        let total: u64 = layers.iter().map(|l| l.descriptor.size).sum();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let start = Instant::now();
            let mut shown = false;
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                if start.elapsed() < Duration::from_secs(1) {
                    continue;
                }
                let fetched: u64 = blobs.iter().map(|b| b.stats().bytes).sum();
                eprint!(
                    "\rfetching: {:.1} MiB of {:.1} MiB ({:.0}%)   ",
                    fetched as f64 / 1048576.0,
                    total as f64 / 1048576.0,
                    100.0 * fetched as f64 / total.max(1) as f64
                );
                shown = true;
            }
            if shown {
                eprintln!();
            }
        });
        Progress {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[derive(Args)]
pub struct PushArgs {
    /// Destination: [docker://]host[:port]/repo[:tag].
    reference: String,
    /// eStargz blobs, bottom layer first.
    #[arg(required = true)]
    blobs: Vec<PathBuf>,
    #[command(flatten)]
    registry: RegistryArgs,
}

/// Publishes blobs as a single-platform OCI image with the annotations lazy
/// pulling needs (TOC digest, uncompressed size).
pub fn push(args: PushArgs) -> Result<(), Error> {
    let reference = Reference::parse(&args.reference)?;
    let registry = args.registry.registry()?;
    let (manifest, config) = describe_blobs(&args.blobs)?;
    for (blob, layer) in args.blobs.iter().zip(&manifest.layers) {
        registry.push_blob_file(&reference, &layer.digest, blob)?;
    }
    registry.push_blob_bytes(&reference, &config)?;
    let body = serde_json::to_vec_pretty(&manifest).expect("manifests serialize");
    let digest = registry.push_manifest(&reference, manifest::OCI_MANIFEST, &body)?;
    println!("{reference}@{digest}");
    Ok(())
}

/// Layer descriptors (with annotations) and a minimal config for blobs.
pub fn describe_blobs(blobs: &[PathBuf]) -> Result<(Manifest, Vec<u8>), Error> {
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for path in blobs {
        let src = FileSource::open(path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        let size = estargz_core::ReadAt::size(&src);
        let reader = Reader::open(Arc::new(src), &OpenOptions::default())
            .map_err(|e| e.with_context(&path.display().to_string()))?;
        if reader.footer().toc_offset().is_none() {
            return Err(Error::Unsupported(format!(
                "{}: blobs with an external TOC need a TOC image (see convert-image)",
                path.display()
            )));
        }
        let zstd = reader.format().is_zstd();
        let estargz_core::digest::GzipDigests {
            digest,
            diff_id,
            uncompressed_size: uncompressed,
        } = estargz_core::digest::layer_file_digests(path, zstd)?;
        let mut annotations = match (reader.footer(), reader.manifest_checksum()) {
            (estargz_core::Footer::ZstdChunked(z), Some(checksum)) => {
                manifest::zstd_chunked_annotations(&z, &checksum.to_string())
            }
            _ => std::collections::BTreeMap::new(),
        };
        annotations.insert(
            manifest::TOC_DIGEST_ANNOTATION.to_string(),
            reader.toc_digest().to_string(),
        );
        annotations.insert(
            manifest::UNCOMPRESSED_SIZE_ANNOTATION.to_string(),
            uncompressed.to_string(),
        );
        layers.push(Descriptor {
            media_type: if zstd {
                manifest::OCI_LAYER_ZSTD
            } else {
                manifest::OCI_LAYER_GZIP
            }
            .into(),
            digest: digest.to_string(),
            size,
            annotations,
            platform: None,
        });
        diff_ids.push(diff_id);
    }
    let host = Platform::host();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": host.architecture,
        "os": host.os,
        "config": {},
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    }))
    .expect("configs serialize");
    let manifest = Manifest {
        schema_version: 2,
        media_type: manifest::OCI_MANIFEST.into(),
        config: Descriptor {
            media_type: manifest::OCI_CONFIG.into(),
            digest: estargz_core::digest::sha256_digest(&config),
            size: config.len() as u64,
            annotations: Default::default(),
            platform: None,
        },
        layers,
        annotations: Default::default(),
    };
    Ok((manifest, config))
}
