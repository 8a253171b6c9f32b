//! `estargz-fuse`: mount an eStargz layer (a local blob or a registry layer
//! read lazily) as a read-only file system.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, CommandFactory, Parser, Subcommand};
use estargz_args::config::{self, ConfigFile, ConfigSpec, Key};
use estargz_args::{CacheArgs, LayerChoice, RegistryArgs};
use estargz_core::remote::{LayerOptions, Reference};
use estargz_fuse::daemon;
use estargz_fuse::metrics_endpoint::{self, MetricsAddress, MetricsServer};
use estargz_fuse::mount::{self, MountOptions};
use estargz_fuse::record::{AccessRecorder, LayerKey};
use estargz_fuse::source::{is_registry_source, OpenedLayer, Source};
use estargz_fuse::warm::WarmOptions;

mod store_cmd;

#[derive(Parser)]
#[command(name = "estargz-fuse", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Mount a layer read-only at MOUNTPOINT (until unmounted, SIGINT or SIGTERM).
    Mount(MountArgs),
    /// Serve an Additional Layer Store for Podman / CRI-O at MOUNTPOINT
    /// (storage.conf: additionallayerstores = ["MOUNTPOINT:ref"]).
    Store(store_cmd::StoreArgs),
}

#[derive(Args)]
struct MountArgs {
    /// A local eStargz blob, or a registry layer: [docker://]HOST/REPO[:TAG|@DIGEST]
    /// (a bare reference starts with its registry host; a file of that name wins).
    source: String,
    mountpoint: PathBuf,
    /// Registry layers: which one.
    #[command(flatten)]
    choice: LayerChoice,
    /// Local blobs built with an external TOC: the file with the external
    /// TOC data.
    #[arg(long, alias = "external-toc", value_name = "FILE")]
    external_toc_data: Option<PathBuf>,
    /// Local blobs: refuse to mount unless the TOC has this digest.
    #[arg(long, alias = "toc-digest", value_name = "DIGEST")]
    expected_toc_digest: Option<estargz_core::Digest>,
    /// Registry layers without a toc.digest annotation: mount anyway (the
    /// TOC is then not anchored to the manifest; chunks are still verified).
    #[arg(long)]
    allow_unverified_toc: bool,
    #[command(flatten)]
    registry: RegistryArgs,
    #[command(flatten)]
    cache: CacheArgs,
    #[command(flatten)]
    warm: WarmArgs,
    /// Never hand fully cached files to the kernel (FUSE passthrough); needs --cache-dir.
    #[arg(long)]
    no_passthrough: bool,
    /// Bytes of passthrough copies kept under the cache dir.
    #[arg(long, default_value_t = 1 << 30)]
    passthrough_size: u64,
    /// Let other users (and overlayfs mounts owned by them) use the mount.
    #[arg(long)]
    allow_other: bool,
    /// Kernel readahead window in KiB (0: the kernel's default, 128).
    #[arg(long, default_value_t = estargz_fuse::readahead::DEFAULT_KB)]
    read_ahead_kb: u32,
    #[command(flatten)]
    record: RecordArgs,
    #[command(flatten)]
    serve: ServeArgs,
}

/// Access recording, for `mount` and `store`.
#[derive(Args)]
pub(crate) struct RecordArgs {
    /// Record the files opened in each layer, in first-access order, and
    /// write them to FILE (JSON) when unmounted.
    #[arg(long, value_name = "FILE")]
    record_access: Option<PathBuf>,
    /// Most files recorded in all layers (later ones are counted, not listed).
    #[arg(long, value_name = "N", default_value_t = estargz_fuse::record::DEFAULT_RECORD_LIMIT)]
    record_limit: usize,
}

impl RecordArgs {
    pub(crate) const CONFIG_KEYS: &'static [Key] = &[
        Key::new("record_access", "record_access"),
        Key::new("record_limit", "record_limit"),
    ];

    pub(crate) fn recorder(&self) -> Option<Arc<AccessRecorder>> {
        self.record_access
            .as_ref()
            .map(|_| AccessRecorder::new(self.record_limit))
    }

    /// Writes what `recorder` holds to `--record-access`.
    pub(crate) fn write(&self, recorder: Option<&Arc<AccessRecorder>>) -> Result<(), String> {
        let (Some(path), Some(rec)) = (&self.record_access, recorder) else {
            return Ok(());
        };
        let record = rec.record();
        record
            .write(path)
            .map_err(|e| format!("writing the access record {}: {e}", path.display()))?;
        let files: usize = record.layers.iter().map(|l| l.files.len()).sum();
        log::info!("{files} accessed file(s) recorded in {}", path.display());
        Ok(())
    }
}

/// How the `mount` and `store` processes run.
#[derive(Args)]
pub(crate) struct ServeArgs {
    /// Threads serving FUSE requests.
    #[arg(long, default_value_t = 8)]
    pub(crate) threads: usize,
    /// Detach once mounted (log to --log-file).
    #[arg(long)]
    daemon: bool,
    /// Where a daemon writes its log (default: nowhere).
    #[arg(long, value_name = "FILE")]
    log_file: Option<PathBuf>,
    /// error, warn, info or debug.
    #[arg(long, default_value = "info", value_parser = parse_level)]
    log_level: log::LevelFilter,
    /// Serve Prometheus metrics at GET /metrics on HOST:PORT (e.g.
    /// 127.0.0.1:9100) or a unix socket (an absolute path).
    #[arg(long, value_name = "ADDRESS")]
    metrics_address: Option<MetricsAddress>,
}

impl ServeArgs {
    /// Config-file keys (the store's; `--daemon` is how it is started, not
    /// a setting).
    pub(crate) const CONFIG_KEYS: &'static [Key] = &[
        Key::new("threads", "threads"),
        Key::new("log_file", "log_file"),
        Key::new("log_level", "log_level"),
        Key::new("metrics_address", "metrics_address"),
    ];
}

fn parse_level(s: &str) -> Result<log::LevelFilter, String> {
    s.parse()
        .map_err(|_| format!("{s:?}: expected error, warn, info, debug or trace"))
}

/// Prefetch and background fetch, on by default as in stargz-snapshotter.
#[derive(Args)]
pub(crate) struct WarmArgs {
    /// Skip the prefetch that `.prefetch.landmark` asks for.
    #[arg(long)]
    no_prefetch: bool,
    /// Do not fetch the rest of a registry layer in the background.
    #[arg(long)]
    no_background_fetch: bool,
    /// The default now; still accepted so older command lines work.
    #[arg(long, hide = true)]
    background_fetch: bool,
    /// Milliseconds without on-demand reads (of any layer) before each
    /// background batch; 0 starts right after the layer is resolved.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    background_quiet_ms: u64,
}

impl WarmArgs {
    pub(crate) const CONFIG_KEYS: &'static [Key] = &[
        Key::negated("prefetch", "no_prefetch"),
        Key::negated("background_fetch", "no_background_fetch"),
        Key::new("background_quiet_ms", "background_quiet_ms"),
    ];

    /// `max_background` layers fetched in the background at once, each at
    /// most as large as the cache that receives it.
    pub(crate) fn options(&self, cache: &CacheArgs, max_background: usize) -> WarmOptions {
        WarmOptions::serving(
            !self.no_prefetch,
            !self.no_background_fetch,
            max_background,
            cache.capacity(),
        )
        .silence(std::time::Duration::from_millis(self.background_quiet_ms))
    }
}

fn main() -> ExitCode {
    // Before any thread exists, so every thread inherits the mask and the
    // allocator settings hold for every thread.
    estargz_fuse::heap::limit_retained_memory();
    daemon::block_stop_signals();
    daemon::take_ready_pipe();
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let (cli, config) = match parse(&argv) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("estargz-fuse: {e}");
            return ExitCode::FAILURE;
        }
    };
    let serve = match &cli.command {
        Cmd::Mount(a) => &a.serve,
        Cmd::Store(a) => &a.serve,
    };
    if serve.daemon {
        let child_args: Vec<std::ffi::OsString> = std::env::args_os()
            .skip(1)
            .filter(|a| a != "--daemon")
            .collect();
        return match daemon::spawn_detached(child_args, serve.log_file.as_deref()) {
            Ok(0) => ExitCode::SUCCESS,
            Ok(_) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("estargz-fuse: starting the daemon: {e}");
                ExitCode::FAILURE
            }
        };
    }
    estargz_fuse::logger::init(serve.log_level);
    let result = match &cli.command {
        Cmd::Mount(args) => mount(args),
        Cmd::Store(args) => store_cmd::run(
            args,
            config,
            Box::new(move || match parse(&argv)? {
                (
                    Cli {
                        command: Cmd::Store(a),
                    },
                    file,
                ) => Ok((a, file)),
                _ => unreachable!("the same command line"),
            }),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            daemon::report_to_parent(Err(e));
            ExitCode::FAILURE
        }
    }
}

/// The command line, with the store's config file under it (flags win).
/// A bad command line exits with clap's message, as `Cli::parse` does.
fn parse(argv: &[std::ffi::OsString]) -> Result<(Cli, Option<ConfigFile>), String> {
    let cmd = Cli::command();
    let top = cmd.clone().get_matches_from(argv);
    let keys = store_cmd::config_keys();
    let spec = ConfigSpec {
        subcommand: Some("store"),
        config_arg: "config",
        default_path: store_cmd::DEFAULT_CONFIG,
        keys: &keys,
    };
    let (merged, file) = config::merge(&cmd, argv, &top, &spec).map_err(|e| e.to_string())?;
    Ok((Cli::parse_from(merged), file))
}

fn source(args: &MountArgs) -> Result<Source, String> {
    Ok(match is_registry_source(&args.source) {
        true => Source::Remote {
            reference: Reference::parse(&args.source).map_err(|e| e.to_string())?,
            layer: args.choice.selector(),
            platform: args.choice.platform().map_err(|e| e.to_string())?,
        },
        false => Source::Local {
            path: args.source.clone().into(),
            external_toc_data: args.external_toc_data.clone(),
            expected_toc_digest: args.expected_toc_digest,
        },
    })
}

impl ServeArgs {
    /// Starts the metrics endpoint, if asked for (a start-up error if its
    /// address cannot be bound); it serves until the result is dropped.
    pub(crate) fn start_metrics(&self) -> Result<Option<MetricsServer>, String> {
        let Some(address) = &self.metrics_address else {
            return Ok(None);
        };
        let server = metrics_endpoint::serve(address).map_err(|e| e.to_string())?;
        log::info!("metrics at {address}");
        Ok(Some(server))
    }
}

fn mount(args: &MountArgs) -> Result<(), String> {
    let _metrics = args.serve.start_metrics()?;
    let cache = args.cache.open().map_err(|e| e.to_string())?;
    let layer_opts = LayerOptions::default()
        .allow_unverified_toc(args.allow_unverified_toc)
        .span_dir(args.cache.cache_dir.clone());
    let OpenedLayer {
        reader,
        description,
        blob,
    } = source(args)?
        .open(
            cache,
            &args.registry.registry().map_err(|e| e.to_string())?,
            &layer_opts,
        )
        .map_err(|e| format!("cannot mount {}: {e}", args.source))?;
    let recorder = args.record.recorder();
    let access = recorder.as_ref().map(|r| {
        r.layer(LayerKey {
            source: description.clone(),
            index: None,
            digest: blob.as_ref().and_then(|b| b.digest().parse().ok()),
            toc_digest: reader.toc_digest(),
        })
    });
    let opts = args.mount_options().record(access);
    let mut session =
        mount::session(&reader, &args.mountpoint, &opts).map_err(|e| e.to_string())?;
    log::info!("mounted {description} at {}", args.mountpoint.display());

    daemon::unmount_on_stop_signals(
        session.unmount_callable(),
        args.mountpoint.clone(),
        daemon::Hangup::Stop,
    );
    let warming = mount::start_warming(&opts.warm, &description, reader, blob.as_ref());
    // Checked from another thread: this one serves the requests.
    let mountpoint = args.mountpoint.clone();
    let read_ahead_kb = args.read_ahead_kb;
    std::thread::spawn(move || {
        let settled = mount::settle(&mountpoint, read_ahead_kb).map_err(|e| e.to_string());
        if let Err(e) = &settled {
            log::error!("{e}");
        }
        daemon::report_to_parent(settled);
    });

    let result = daemon::session_ended(session.run());
    // Stop background work (it ends after the batch in flight, without
    // holding up the exit).
    drop(warming);
    if let Some(b) = blob {
        let s = b.stats();
        log::info!(
            "fetched {} bytes in {} requests from {description}",
            s.bytes,
            s.requests
        );
    }
    let recorded = args.record.write(recorder.as_ref());
    result.map_err(|e| format!("serving {}: {e}", args.mountpoint.display()))?;
    log::info!("unmounted {}", args.mountpoint.display());
    recorded
}

impl MountArgs {
    fn mount_options(&self) -> MountOptions {
        let passthrough = match (&self.cache.cache_dir, self.no_passthrough) {
            (Some(dir), false) => Some((dir.clone(), self.passthrough_size)),
            _ => None,
        };
        MountOptions::default()
            .threads(self.serve.threads)
            .allow_other(self.allow_other)
            .passthrough(passthrough)
            .read_ahead_kb(self.read_ahead_kb)
            .warm(self.warm.options(&self.cache, 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Flattened shared flags must not clash with a command's own (clap
    /// checks this only in debug builds, at run time).
    #[test]
    fn command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn mount_flags_map_to_the_core_defaults() {
        let digest = format!("sha256:{}", "5".repeat(64));
        let cli = Cli::try_parse_from([
            "estargz-fuse",
            "mount",
            "127.0.0.1:5000/a:v1",
            "/mnt",
            "--layer",
            &digest,
        ])
        .unwrap();
        let Cmd::Mount(args) = cli.command else {
            panic!("not a mount");
        };
        assert_eq!(
            args.choice.selector(),
            estargz_core::remote::LayerSelector::Digest(digest)
        );
        assert_eq!(
            args.cache.memory_cache_size,
            estargz_core::cache::DEFAULT_MEMORY_SIZE
        );
        assert!(matches!(source(&args).unwrap(), Source::Remote { .. }));
    }
}
