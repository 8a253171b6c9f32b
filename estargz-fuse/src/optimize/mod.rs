//! Workload-optimized images (`estargz optimize`): convert (or reuse)
//! the image's layers, run its workload once on them through FUSE mounts
//! that record the files it opens, and convert again with those files
//! first in each layer, before `.prefetch.landmark`, so one prefetch
//! brings the working set.
//!
//! * [`bundle`]: the OCI runtime bundle's `config.json`.
//! * [`rootfs`]: the layer mounts stacked with overlayfs.
//! * [`runc`]: the workload run, stopped after the period.
//! * [`shadow`]: which layer served each recorded file.
//!
//! One pipeline for running and for replaying a record: SRC is first
//! converted into a staging layout (eStargz layers are kept byte for byte),
//! and DST is that layout converted with the prioritized files
//! ([`convert_image`]), so a replay of a record over the same image gives
//! the same bytes.

pub mod bundle;
pub mod rootfs;
pub mod runc;
pub mod shadow;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use estargz_core::cache::ChunkCache;
use estargz_core::image::{
    convert_image, ConvertOptions, ConvertReport, Location, OciLayout, Progress, Source, Target,
};
use estargz_core::remote::manifest::{self, Descriptor, Document, Manifest, Platform};
use estargz_core::remote::{HttpOptions, Registry};
use estargz_core::{Digest, Error, FileSource, OpenOptions, Reader, Result};

use crate::record::{AccessRecord, AccessRecorder, LayerKey, LayerRecord, RECORD_VERSION};
pub use bundle::BindMount;
pub use runc::{Outcome, Wait};

/// How an image is optimized.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct OptimizeOptions {
    /// Build options for every conversion (`prioritized` is ours to set).
    pub convert: ConvertOptions,
    /// The platform optimized (default: this host's).
    pub platform: Option<Platform>,
    /// With an index, also convert the other platforms (without
    /// prioritized files) and write an index; otherwise DST has the
    /// optimized platform only (as upstream's `--all-platforms`).
    pub all_platforms: bool,
    /// The process to run instead of the image's entrypoint + cmd.
    pub args: Vec<String>,
    /// `KEY=VALUE` added to (or replacing in) the image's environment.
    pub env: Vec<String>,
    /// Host paths bound into the container.
    pub mounts: Vec<BindMount>,
    /// When a still-running workload is stopped.
    pub wait: Wait,
    /// The OCI runtime (a name looked up on `PATH`, or a path).
    pub runtime: PathBuf,
    /// Most files recorded in all layers.
    pub record_limit: usize,
    /// Replay this record instead of running anything.
    pub replay: Option<AccessRecord>,
    /// Where the staging layout and the container's files go.
    pub temp_dir: Option<PathBuf>,
}

impl Default for OptimizeOptions {
    fn default() -> Self {
        OptimizeOptions {
            convert: ConvertOptions::default(),
            platform: None,
            all_platforms: false,
            args: Vec::new(),
            env: Vec::new(),
            mounts: Vec::new(),
            wait: Wait::Period(DEFAULT_PERIOD),
            runtime: PathBuf::from("runc"),
            record_limit: crate::record::DEFAULT_RECORD_LIMIT,
            replay: None,
            temp_dir: None,
        }
    }
}

estargz_core::option_setters!(OptimizeOptions {
    convert: ConvertOptions,
    platform: Option<Platform>,
    all_platforms: bool,
    args: Vec<String>,
    env: Vec<String>,
    mounts: Vec<BindMount>,
    wait: Wait,
    runtime: PathBuf,
    record_limit: usize,
    replay: Option<AccessRecord>,
    temp_dir: Option<PathBuf>,
});

/// The workload's period unless told otherwise (as upstream's optimize).
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(10);

/// What happened.
#[derive(Debug, Clone)]
pub struct OptimizeReport {
    /// The final conversion (DST).
    pub convert: ConvertReport,
    /// The files prioritized in each layer (what `--record-out` writes).
    pub record: AccessRecord,
    /// How the workload ended (`None` for a replay).
    pub outcome: Option<Outcome>,
}

const STAGE_TAG: &str = "stage";

/// One layer of the staged image.
struct StagedLayer {
    descriptor: Descriptor,
    toc_digest: Digest,
    reader: Arc<Reader>,
}

/// Optimizes the image at `src` into `dst`. `stop` (set by a signal)
/// stops a running workload, or the run before it starts.
pub fn optimize(
    src: &Source,
    dst: &Target,
    opts: &OptimizeOptions,
    stop: &AtomicBool,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<OptimizeReport> {
    // Whatever can fail early does, before any conversion.
    let runtime = match &opts.replay {
        Some(_) => {
            check_estargz(src, opts.platform.as_ref())?;
            None
        }
        None => Some(runc::find_runtime(&opts.runtime)?),
    };
    let temp_root = opts.temp_dir.clone().unwrap_or_else(std::env::temp_dir);
    let work = tempfile::Builder::new()
        .prefix(".estargz-optimize-")
        .tempdir_in(&temp_root)
        .map_err(|e| {
            Error::io(
                format!("creating a directory in {}", temp_root.display()),
                e,
            )
        })?;

    // Stage: every layer eStargz, one platform (or all of them).
    let stage_dir = work.path().join("stage");
    let platform = opts.platform.clone().unwrap_or_else(Platform::host);
    let stage_opts =
        opts.convert
            .clone()
            .prioritized(BTreeMap::new())
            .platforms(match opts.all_platforms {
                true => Vec::new(),
                false => vec![platform.clone()],
            });
    let stage_target = Target::Layout {
        layout: OciLayout::create(&stage_dir)?,
        tag: STAGE_TAG.into(),
    };
    convert_image(src, &stage_target, &stage_opts, &|_| {})?;
    let stage = Source::open(
        &Location::Layout {
            dir: stage_dir.clone(),
            tag: Some(STAGE_TAG.into()),
        },
        &Registry::new(HttpOptions::default()),
    )?;
    let (manifest, config) = match opts.all_platforms {
        true => platform_manifest(&stage, Some(&platform))?,
        false => single_manifest(&stage)?,
    };
    let layers = open_staged(&stage_dir, &manifest)?;

    let (recorded, outcome) = match (&opts.replay, runtime) {
        (Some(record), _) => (replayed(record, &layers)?, None),
        (None, Some(runtime)) => {
            let (recorded, outcome) =
                record_workload(&runtime, work.path(), &layers, &config, opts, stop)?;
            (recorded, Some(outcome))
        }
        (None, None) => unreachable!("a runtime is found unless replaying"),
    };

    let readers: Vec<&Reader> = layers.iter().map(|l| &*l.reader).collect();
    let lists = shadow::attribute(&readers, &recorded);
    let prioritized: BTreeMap<usize, Vec<String>> = lists
        .iter()
        .enumerate()
        .filter(|(_, l)| !l.is_empty())
        .map(|(i, l)| (i, l.clone()))
        .collect();
    // Attribution left only files of each layer; paths whose parent
    // directories have no entry of their own are reported, not fatal.
    let final_opts = opts
        .convert
        .clone()
        .build(opts.convert.build.clone().allow_missing_prioritized(true))
        .prioritized(prioritized)
        .prioritized_platform(Some(platform))
        .platforms(Vec::new());
    let report = convert_image(&stage, dst, &final_opts, progress)?;
    let record = AccessRecord {
        version: RECORD_VERSION,
        layers: layers
            .iter()
            .zip(lists)
            .enumerate()
            .map(|(i, (l, files))| LayerRecord {
                source: format!("layer {i} ({})", l.descriptor.digest),
                index: Some(i),
                digest: l.descriptor.digest.parse().ok(),
                toc_digest: l.toc_digest,
                files,
                dropped: 0,
            })
            .collect(),
    };
    Ok(OptimizeReport {
        convert: report,
        record,
        outcome,
    })
}

/// Replays need eStargz layers: a record names its layers by TOC digest.
fn check_estargz(src: &Source, platform: Option<&Platform>) -> Result<()> {
    let (manifest, _) = platform_manifest(src, platform)?;
    for (i, layer) in manifest.layers.iter().enumerate() {
        if layer.checked_toc_digest()?.is_none() {
            return Err(Error::InvalidArgument(format!(
                "layer {i} ({}) of the source is not eStargz (no TOC digest annotation): \
                 a record names layers by TOC digest, so replay it over the eStargz image \
                 it was recorded on (convert-image first), or run the workload instead",
                layer.digest
            )));
        }
    }
    Ok(())
}

/// The manifest of `platform` (or the host's) and its config.
fn platform_manifest(src: &Source, platform: Option<&Platform>) -> Result<(Manifest, Vec<u8>)> {
    let root = src.root()?;
    let manifest = match manifest::decode(&root.body, root.media_type.as_deref())? {
        Document::Manifest(m) => m,
        Document::Index(index) => {
            let want = platform.cloned().unwrap_or_else(Platform::host);
            let d = manifest::select_platform(&index, &want)?;
            match manifest::decode(&src.document(d, true)?, Some(&d.media_type))? {
                Document::Manifest(m) => m,
                Document::Index(_) => {
                    return Err(Error::Unsupported(format!(
                        "manifest {}: a nested index",
                        d.digest
                    )))
                }
            }
        }
    };
    let config = src.document(&manifest.config, false)?;
    Ok((manifest, config))
}

/// The staged image has one manifest (one platform was converted).
fn single_manifest(stage: &Source) -> Result<(Manifest, Vec<u8>)> {
    let root = stage.root()?;
    match manifest::decode(&root.body, root.media_type.as_deref())? {
        Document::Manifest(_) => platform_manifest(stage, None),
        Document::Index(index) => {
            let [d] = &index.manifests[..] else {
                return Err(Error::InvalidArgument(format!(
                    "{} manifests after choosing one platform",
                    index.manifests.len()
                )));
            };
            let m = match manifest::decode(&stage.document(d, true)?, Some(&d.media_type))? {
                Document::Manifest(m) => m,
                Document::Index(_) => {
                    return Err(Error::Unsupported("a nested index".into()));
                }
            };
            let config = stage.document(&m.config, false)?;
            Ok((m, config))
        }
    }
}

/// Opens every staged layer from its blob file, its TOC checked against
/// the annotation.
fn open_staged(stage_dir: &std::path::Path, manifest: &Manifest) -> Result<Vec<StagedLayer>> {
    let layout = OciLayout::open(stage_dir)?;
    let cache = Arc::new(ChunkCache::in_memory(
        estargz_core::cache::DEFAULT_MEMORY_SIZE,
    ));
    manifest
        .layers
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let what = format!("staged layer {i} ({})", d.digest);
            let toc_digest: Digest = d
                .checked_toc_digest()?
                .ok_or_else(|| Error::InvalidArgument(format!("{what}: no TOC digest")))?
                .parse()?;
            let path = layout.blob_path(&d.digest)?;
            let file = FileSource::open(&path)
                .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
            let open = OpenOptions::default()
                .expected_toc_digest(Some(toc_digest))
                .cache(Some(cache.clone()));
            let reader = Reader::open(Arc::new(file), &open).map_err(|e| e.with_context(&what))?;
            Ok(StagedLayer {
                descriptor: d.clone(),
                toc_digest,
                reader: Arc::new(reader),
            })
        })
        .collect()
}

/// A record's files, per staged layer: each recorded layer applies to
/// the layers with its TOC digest.
fn replayed(record: &AccessRecord, layers: &[StagedLayer]) -> Result<Vec<Vec<String>>> {
    let mut out = vec![Vec::new(); layers.len()];
    for r in &record.layers {
        let mut found = false;
        for (i, l) in layers.iter().enumerate() {
            if l.toc_digest == r.toc_digest {
                out[i].extend(r.files.iter().cloned());
                found = true;
            }
        }
        if !found {
            return Err(Error::InvalidArgument(format!(
                "the record's {} (TOC digest {}) is not a layer of the source image",
                r.source, r.toc_digest
            )));
        }
    }
    Ok(out)
}

/// Runs the workload on the mounted layers and returns what each opened.
fn record_workload(
    runtime: &std::path::Path,
    work: &std::path::Path,
    layers: &[StagedLayer],
    config: &[u8],
    opts: &OptimizeOptions,
    stop: &AtomicBool,
) -> Result<(Vec<Vec<String>>, Outcome)> {
    let image = bundle::ImageProcess::from_config(config)?;
    let args = bundle::process_args(&image, &opts.args)?;
    let recorder = AccessRecorder::new(opts.record_limit);
    let accesses: Vec<_> = layers
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let source = format!("layer {i} ({})", l.descriptor.digest);
            let access = recorder.layer(LayerKey {
                source: source.clone(),
                index: Some(i),
                digest: l.descriptor.digest.parse().ok(),
                toc_digest: l.toc_digest,
            });
            (l.reader.clone(), source, access)
        })
        .collect();
    if stop.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(Error::InvalidArgument(
            "stopped before the workload ran".into(),
        ));
    }
    let mut rootfs = rootfs::Rootfs::mount(&work.join("run"), accesses)?;
    let (uid, gid) = bundle::resolve_user(&image.user, rootfs.path())?;
    let process = bundle::Process {
        args,
        env: bundle::environment(&image, &opts.env),
        cwd: image.working_dir.clone(),
        uid,
        gid,
    };
    let bundle_dir = work.join("bundle");
    std::fs::create_dir_all(&bundle_dir)
        .map_err(|e| Error::io(format!("creating {}", bundle_dir.display()), e))?;
    let spec = bundle::runtime_config(&process, rootfs.path(), &opts.mounts);
    std::fs::write(
        bundle_dir.join("config.json"),
        serde_json::to_vec_pretty(&spec).expect("JSON values serialize"),
    )
    .map_err(|e| Error::io(format!("writing {}/config.json", bundle_dir.display()), e))?;
    let id = format!(
        "estargz-optimize-{}-{}",
        std::process::id(),
        work.file_name()
            .map(|n| n
                .to_string_lossy()
                .trim_start_matches(".estargz-optimize-")
                .to_string())
            .unwrap_or_default()
    );
    log::info!("running {:?} (container {id})", process.args);
    let outcome = runc::run(runtime, &bundle_dir, &id, opts.wait, stop);
    let unmounted = rootfs.unmount();
    let outcome = outcome?;
    unmounted?;
    match outcome {
        Outcome::Exited(0) => log::info!("the workload exited"),
        Outcome::Exited(n) => {
            log::warn!("the workload exited with status {n}; what it read until then is used")
        }
        Outcome::PeriodExpired => log::warn!(
            "the workload was still running at the end of the period; stopped it \
             (what it read until then is used)"
        ),
        Outcome::Stopped => log::warn!("the workload was stopped by a signal"),
    }
    let record = recorder.record();
    let dropped: u64 = record.layers.iter().map(|l| l.dropped).sum();
    if dropped > 0 {
        log::warn!("{dropped} accessed file(s) past the record limit are not prioritized");
    }
    Ok((
        record.layers.into_iter().map(|l| l.files).collect(),
        outcome,
    ))
}
