//! `estargz convert-image`: convert an OCI or Docker image (OCI layout or
//! registry) into an eStargz image.

use std::collections::BTreeMap;
use std::io::{self, IsTerminal};
use std::path::{Path, PathBuf};

use clap::Args;
use estargz_core::image::{convert_image, ConvertOptions, Location, Progress, Source, Target};
use estargz_core::remote::manifest::Platform;
use estargz_core::Error;

#[derive(Args)]
pub struct ConvertImageArgs {
    /// Source image: oci:DIR[:tag] or [docker://]host[:port]/repo[:tag|@digest].
    source: String,
    /// Destination: oci:DIR[:tag] (default tag: latest) or [docker://]host[:port]/repo[:tag].
    destination: String,
    #[command(flatten)]
    registry: estargz_args::RegistryArgs,
    #[command(flatten)]
    layer: crate::LayerArgs,
    /// Files to prioritize: lines `LAYER PATH` (LAYER = layer index, 0 = bottom).
    #[arg(long, value_name = "FILE")]
    prioritized_files: Option<PathBuf>,
    /// Report prioritized files that are missing instead of failing.
    #[arg(long)]
    allow_missing_prioritized: bool,
    /// Keep TOCs out of the layers, in the TOC image DST-esgztoc.
    #[arg(long)]
    external_toc: bool,
    /// Lossless: gunzip of each layer equals the original tar (needs --external-toc).
    #[arg(long)]
    keep_diff_id: bool,
    /// Also write each layer's TOC digest as org.opencontainers.image.toc.digest
    /// (the eStargz proposal to the OCI image spec).
    #[arg(long)]
    oci_toc_annotation: bool,
    /// Convert only this platform of a multi-platform image (os/arch[/variant]); repeatable.
    #[arg(long, value_name = "OS/ARCH")]
    platform: Vec<String>,
    /// Layers converted at the same time.
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// Registry uploads of larger blobs are sent in PATCH chunks of this size.
    #[arg(long, default_value_t = estargz_core::remote::upload::DEFAULT_UPLOAD_CHUNK)]
    upload_chunk_size: u64,
    /// Directory for temporary files (default: the system's).
    #[arg(long, value_name = "DIR")]
    temp_dir: Option<PathBuf>,
    /// No progress on stderr.
    #[arg(short, long)]
    quiet: bool,
}

/// Reads `LAYER PATH` lines; `#` starts a comment line.
pub fn read_prioritized(path: &Path) -> Result<BTreeMap<usize, Vec<String>>, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let mut out: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || {
            Error::InvalidArgument(format!(
                "{}:{}: expected `LAYER PATH` (layer index, 0 = bottom), got {line:?}",
                path.display(),
                n + 1
            ))
        };
        let (layer, file) = line.split_once(char::is_whitespace).ok_or_else(bad)?;
        let layer: usize = layer.parse().map_err(|_| bad())?;
        out.entry(layer).or_default().push(file.trim().to_string());
    }
    Ok(out)
}

pub fn convert_image_cmd(args: ConvertImageArgs) -> Result<(), Error> {
    if args.keep_diff_id && !args.external_toc {
        return Err(Error::InvalidArgument(
            "--keep-diff-id needs --external-toc (an embedded TOC would change the DiffID)".into(),
        ));
    }
    let src_loc = Location::parse(&args.source)?;
    let dst_loc = Location::parse(&args.destination)?;
    let registry = args.registry.registry()?;
    let prioritized = match &args.prioritized_files {
        Some(p) => read_prioritized(p)?,
        None => BTreeMap::new(),
    };
    let opts = ConvertOptions::default()
        .build(
            args.layer
                .build_options()
                .allow_missing_prioritized(args.allow_missing_prioritized)
                .external_toc(args.external_toc)
                .keep_diff_id(args.keep_diff_id)
                .temp_dir(args.temp_dir.clone()),
        )
        .prioritized(prioritized)
        .platforms(
            args.platform
                .iter()
                .map(|p| Platform::parse(p))
                .collect::<Result<_, _>>()?,
        )
        .layer_jobs(args.jobs)
        .oci_toc_annotation(args.oci_toc_annotation);
    let src = Source::open(&src_loc, &registry)?;
    let dst = Target::open(&dst_loc, &registry, args.upload_chunk_size)?;
    let show = !args.quiet && io::stderr().is_terminal();
    let progress = |p: Progress| {
        if show {
            eprint!("\rconverting layers: {}/{}   ", p.done, p.total);
            if p.done == p.total {
                eprintln!();
            }
        }
    };
    let report = convert_image(&src, &dst, &opts, &progress)?;
    if !args.quiet {
        eprintln!(
            "{} manifest(s); {} layer(s) converted, {} already eStargz and kept",
            report.manifests, report.converted, report.kept
        );
        if let Some((tag, d)) = &report.toc_image {
            eprintln!("TOC image: tag {tag} ({})", d.digest);
        }
    }
    println!("{dst_loc}@{}", report.root.digest);
    Ok(())
}
