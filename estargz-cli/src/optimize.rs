//! `estargz optimize`: a workload-optimized eStargz image (the logic is
//! `estargz_fuse::optimize`; this maps flags onto its options).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use estargz_core::image::{ConvertOptions, Location, Source, Target};
use estargz_core::remote::manifest::Platform;
use estargz_core::{BuildOptions, Error};
use estargz_fuse::optimize::{optimize, BindMount, OptimizeOptions, Outcome, Wait};
use estargz_fuse::record::{AccessRecord, DEFAULT_RECORD_LIMIT};

#[derive(Args)]
pub struct OptimizeArgs {
    /// Source image: oci:DIR[:tag] or [docker://]host[:port]/repo[:tag|@digest].
    source: String,
    /// Destination: oci:DIR[:tag] or [docker://]host[:port]/repo[:tag].
    destination: String,
    /// The command to run instead of the image's entrypoint and cmd (after `--`).
    #[arg(last = true, value_name = "CMD")]
    command: Vec<String>,
    #[command(flatten)]
    registry: estargz_args::RegistryArgs,
    #[command(flatten)]
    layer: crate::LayerArgs,
    /// Environment variable for the workload (KEY=VALUE; repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Bind a host path into the container (SRC:DST[:ro]; repeatable).
    #[arg(long, value_name = "SRC:DST[:ro]")]
    mount: Vec<BindMount>,
    /// Seconds after which a still-running workload is stopped.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    period: u64,
    /// Run until SIGINT or SIGTERM instead of for --period.
    #[arg(long)]
    wait_on_signal: bool,
    /// The OCI runtime to run the workload with (a name on PATH or a path).
    #[arg(long, default_value = "runc")]
    runtime: PathBuf,
    /// Write the prioritized files of each layer (JSON) to FILE.
    #[arg(long, value_name = "FILE")]
    record_out: Option<PathBuf>,
    /// Run nothing: prioritize the files of this record (from --record-out,
    /// or estargz-fuse --record-access) over an eStargz SRC.
    #[arg(long, value_name = "FILE")]
    prioritized_files_from: Option<PathBuf>,
    /// Most files recorded in all layers.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_RECORD_LIMIT)]
    record_limit: usize,
    /// Also write each layer's TOC digest as org.opencontainers.image.toc.digest.
    #[arg(long)]
    oci_toc_annotation: bool,
    /// The platform to optimize (os/arch[/variant]; default: this host's).
    #[arg(long, value_name = "OS/ARCH")]
    platform: Option<String>,
    /// With an image index, also convert the other platforms (not
    /// optimized: no prioritized files) and write an index; without it,
    /// DST has the optimized platform only.
    #[arg(long)]
    all_platforms: bool,
    /// Layers converted at the same time.
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// Registry uploads of larger blobs are sent in PATCH chunks of this size.
    #[arg(long, default_value_t = estargz_core::remote::upload::DEFAULT_UPLOAD_CHUNK)]
    upload_chunk_size: u64,
    /// Directory for the staged image, the mounts and the container's files.
    #[arg(long, value_name = "DIR")]
    temp_dir: Option<PathBuf>,
    /// error, warn, info or debug.
    #[arg(long, default_value = "info", value_parser = parse_level)]
    log_level: log::LevelFilter,
}

fn parse_level(s: &str) -> Result<log::LevelFilter, String> {
    s.parse()
        .map_err(|_| format!("{s:?}: expected error, warn, info or debug"))
}

pub fn optimize_cmd(args: OptimizeArgs) -> Result<(), Error> {
    // Before any thread: a stop signal then ends the workload (and the
    // mounts are taken down) instead of killing us with them in place; a
    // second one exits at once.
    estargz_fuse::daemon::block_stop_signals();
    estargz_fuse::logger::init(args.log_level);
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    estargz_fuse::daemon::on_stop_signal(move |_| {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
    });

    let replay = args
        .prioritized_files_from
        .as_deref()
        .map(AccessRecord::read)
        .transpose()?;
    let src_loc = Location::parse(&args.source)?;
    let dst_loc = Location::parse(&args.destination)?;
    let registry = args.registry.registry()?;
    let convert = ConvertOptions::default()
        .build(
            BuildOptions::default()
                .chunk_size(args.layer.chunk_size)
                .min_chunk_size(args.layer.min_chunk_size)
                .compression_level(args.layer.compression_level)
                .temp_dir(args.temp_dir.clone()),
        )
        .layer_jobs(args.jobs)
        .oci_toc_annotation(args.oci_toc_annotation);
    let opts = OptimizeOptions::default()
        .convert(convert)
        .platform(args.platform.as_deref().map(Platform::parse).transpose()?)
        .all_platforms(args.all_platforms)
        .args(args.command.clone())
        .env(args.env.clone())
        .mounts(args.mount.clone())
        .wait(match args.wait_on_signal {
            true => Wait::Signal,
            false => Wait::Period(Duration::from_secs(args.period)),
        })
        .runtime(args.runtime.clone())
        .record_limit(args.record_limit)
        .replay(replay)
        .temp_dir(args.temp_dir.clone());
    let src = Source::open(&src_loc, &registry)?;
    let dst = Target::open(&dst_loc, &registry, args.upload_chunk_size)?;
    let report = optimize(&src, &dst, &opts, &stop, &|_| {})?;
    if let Some(path) = &args.record_out {
        report
            .record
            .write(path)
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    }
    let files: usize = report.record.layers.iter().map(|l| l.files.len()).sum();
    let how = match report.outcome {
        None => "replayed".to_string(),
        Some(Outcome::Exited(n)) => format!("the workload exited with status {n}"),
        Some(Outcome::PeriodExpired) => "the workload was stopped after the period".to_string(),
        Some(Outcome::Stopped) => "the workload was stopped by a signal".to_string(),
    };
    eprintln!(
        "{how}; {files} file(s) prioritized in {} layer(s); {} layer(s) rebuilt, {} kept",
        report
            .record
            .layers
            .iter()
            .filter(|l| !l.files.is_empty())
            .count(),
        report.convert.converted,
        report.convert.kept
    );
    println!("{dst_loc}@{}", report.convert.root.digest);
    Ok(())
}
