//! Image conversion: every layer of an OCI or Docker image (every platform
//! of an index, or the chosen ones) becomes eStargz; configs, manifests and
//! the index are rewritten with OCI media types and the layer annotations
//! lazy pulling needs; with an external TOC, the TOCs go to a TOC image.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use super::store::{Root, Source, Target};
use crate::build::{build, BuildInput, BuildOptions};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::footer::{Footer, Format};
use crate::reader::{OpenOptions, Reader};
use crate::remote::manifest::{
    self as m, built_layer_annotations, layer_media_type, Descriptor, Document, Index, Manifest,
    Platform, LAYER_DIGEST_ANNOTATION, OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST,
    OCI_TOC_DIGEST_ANNOTATION, TOC_ANNOTATIONS, TOC_DIGEST_ANNOTATION,
    UNCOMPRESSED_SIZE_ANNOTATION,
};
use crate::remote::toc_image::toc_image_tag;

const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// Conversion options.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ConvertOptions {
    /// Per-layer build options (chunk size, level, min chunk size, external
    /// TOC, keep-diff-id, threads, temp dir); `prioritized_files` is ignored
    /// in favour of `prioritized`.
    pub build: BuildOptions,
    /// Files to prioritize, by layer index (0 = bottom) in every manifest
    /// (or only in `prioritized_platform`'s).
    pub prioritized: BTreeMap<usize, Vec<String>>,
    /// With an index, `prioritized` applies to this platform's manifest
    /// only (chosen as a pull would); the others are converted without
    /// prioritized files. `None`: every manifest.
    pub prioritized_platform: Option<Platform>,
    /// Convert only these platforms of an index (all when empty).
    pub platforms: Vec<Platform>,
    /// Layers converted at the same time (0 = 2).
    pub layer_jobs: usize,
    /// Also write the TOC digest as `org.opencontainers.image.toc.digest`
    /// (the eStargz proposal to the OCI image spec).
    pub oci_toc_annotation: bool,
}

crate::options::option_setters!(ConvertOptions {
    build: BuildOptions,
    prioritized: BTreeMap<usize, Vec<String>>,
    prioritized_platform: Option<Platform>,
    platforms: Vec<Platform>,
    layer_jobs: usize,
    oci_toc_annotation: bool,
});

/// What happened, for the caller's report.
#[derive(Debug, Clone)]
pub struct ConvertReport {
    /// The written manifest or index.
    pub root: Descriptor,
    /// Platform manifests written.
    pub manifests: usize,
    /// Distinct layers converted to eStargz.
    pub converted: usize,
    /// Distinct layers that were eStargz already and were kept.
    pub kept: usize,
    /// The TOC image manifest and its tag, with an external TOC.
    pub toc_image: Option<(String, Descriptor)>,
}

/// Progress of the layer conversions.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Layers converted or kept so far.
    pub done: usize,
    /// Layers to convert or keep in all.
    pub total: usize,
}

/// One distinct layer to convert: the source descriptor and its prioritized files.
#[derive(Clone)]
struct Job {
    source: Descriptor,
    prioritized: Vec<String>,
    /// DiffID in the source config (checked for kept and lossless layers).
    diff_id: String,
    what: String,
}

struct LayerOut {
    descriptor: Descriptor,
    diff_id: String,
    kept: bool,
    /// The external TOC gzip member.
    toc: Option<Vec<u8>>,
}

/// One source manifest, decoded, with its parsed config.
struct SourceManifest {
    entry: Option<Descriptor>,
    manifest: Manifest,
    config: Vec<u8>,
    diff_ids: Vec<String>,
    jobs: Vec<usize>,
}

/// Converts the image at `src` and writes it to `dst`.
pub fn convert_image(
    src: &Source,
    dst: &Target,
    opts: &ConvertOptions,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<ConvertReport> {
    if opts.build.keep_diff_id && !opts.prioritized.is_empty() {
        return Err(Error::InvalidArgument(
            "keep-diff-id cannot reorder entries for prioritized files".into(),
        ));
    }
    let root = src.root()?;
    let (index, mut manifests) = load(src, &root, &opts.platforms)?;

    // The manifest `prioritized` is for, when only one is.
    let prioritized_manifest = match (&index, &opts.prioritized_platform) {
        (Some(index), Some(p)) => Some(m::select_platform(index, p)?.digest.clone()),
        _ => None,
    };
    let gets_prioritized = |sm: &SourceManifest| match &prioritized_manifest {
        None => true,
        Some(d) => sm.entry.as_ref().is_some_and(|e| &e.digest == d),
    };
    if !opts.prioritized.is_empty() && !manifests.iter().any(gets_prioritized) {
        return Err(Error::InvalidArgument(
            "prioritized files for a platform that is not converted".into(),
        ));
    }
    let most_layers = manifests
        .iter()
        .filter(|sm| gets_prioritized(sm))
        .map(|sm| sm.manifest.layers.len())
        .max();
    if let Some((&layer, _)) = opts.prioritized.range(most_layers.unwrap_or(0)..).next() {
        return Err(Error::InvalidArgument(format!(
            "prioritized files for layer {layer}, but no manifest has more than {} layers",
            most_layers.unwrap_or(0)
        )));
    }

    // Distinct layers (shared across platforms) are converted once.
    let mut jobs: Vec<Job> = Vec::new();
    let mut by_key: HashMap<(String, Vec<String>), usize> = HashMap::new();
    for (mi, sm) in manifests.iter_mut().enumerate() {
        let with_files = gets_prioritized(sm);
        for (li, layer) in sm.manifest.layers.iter().enumerate() {
            let prioritized = match with_files {
                true => opts.prioritized.get(&li).cloned().unwrap_or_default(),
                false => Vec::new(),
            };
            let key = (layer.digest.clone(), prioritized.clone());
            let id = *by_key.entry(key).or_insert_with(|| {
                jobs.push(Job {
                    source: layer.clone(),
                    prioritized,
                    diff_id: sm.diff_ids[li].clone(),
                    what: format!("layer {li} ({}) of manifest {mi}", layer.digest),
                });
                jobs.len() - 1
            });
            sm.jobs.push(id);
        }
    }
    let outs = run_jobs(src, dst, opts, &jobs, progress)?;

    // TOCs first: once the image is tagged, its TOCs must be findable.
    let toc_image = write_toc_image(dst, &outs)?;

    let mut written = Vec::new();
    for sm in &manifests {
        let d = write_manifest(dst, sm, &outs, index.is_none())?;
        written.push((sm.entry.clone(), d));
    }
    let root_desc = match index {
        None => written.pop().expect("one manifest").1,
        Some(_) => {
            let manifests_out = written
                .into_iter()
                .map(|(entry, d)| {
                    let entry = entry.expect("index entries have descriptors");
                    Descriptor {
                        platform: entry.platform,
                        annotations: entry.annotations,
                        ..d
                    }
                })
                .collect();
            let out = Index {
                schema_version: 2,
                media_type: OCI_INDEX.into(),
                manifests: manifests_out,
            };
            let body = serde_json::to_vec(&out).expect("indexes serialize");
            dst.put_manifest(OCI_INDEX, &body, Some(dst.tag()))?
        }
    };
    Ok(ConvertReport {
        root: root_desc,
        manifests: manifests.len(),
        converted: outs.iter().filter(|o| !o.kept).count(),
        kept: outs.iter().filter(|o| o.kept).count(),
        toc_image,
    })
}

/// Decodes the root and the manifests (and configs) to convert.
fn load(
    src: &Source,
    root: &Root,
    platforms: &[Platform],
) -> Result<(Option<Index>, Vec<SourceManifest>)> {
    let context = |e: Error, what: &str| match e {
        Error::Registry(msg) if matches!(src, Source::Layout { .. }) => {
            Error::InvalidArgument(format!("{what}: {msg}"))
        }
        e => e.with_context(what),
    };
    let root_what = format!("image {}", root.digest);
    match m::decode(&root.body, root.media_type.as_deref()).map_err(|e| context(e, &root_what))? {
        Document::Manifest(manifest) => {
            let sm = load_manifest(src, None, manifest, &root_what)?;
            Ok((None, vec![sm]))
        }
        Document::Index(index) => {
            let mut out = Vec::new();
            for entry in &index.manifests {
                if !platforms.is_empty()
                    && !entry
                        .platform
                        .as_ref()
                        .is_some_and(|p| platforms.iter().any(|w| w.matches(p)))
                {
                    continue;
                }
                let what = format!("manifest {}", entry.digest);
                if entry.media_type != OCI_MANIFEST && entry.media_type != m::DOCKER_MANIFEST {
                    return Err(Error::Unsupported(format!(
                        "{what}: media type {} in the index (nested indexes are not converted)",
                        entry.media_type
                    )));
                }
                let body = src.document(entry, true)?;
                let manifest = match m::decode(&body, Some(&entry.media_type))
                    .map_err(|e| context(e, &what))?
                {
                    Document::Manifest(mf) => mf,
                    Document::Index(_) => {
                        return Err(Error::Unsupported(format!("{what}: a nested index")))
                    }
                };
                out.push(load_manifest(src, Some(entry.clone()), manifest, &what)?);
            }
            if out.is_empty() {
                return Err(Error::NotFound(format!(
                    "no manifest in the index matches the platform(s) asked for (it has: {})",
                    m::platform_names(&index)
                )));
            }
            Ok((Some(index), out))
        }
    }
}

fn load_manifest(
    src: &Source,
    entry: Option<Descriptor>,
    manifest: Manifest,
    what: &str,
) -> Result<SourceManifest> {
    let config = src.document(&manifest.config, false)?;
    let value: serde_json::Value = serde_json::from_slice(&config)
        .map_err(|e| Error::InvalidArgument(format!("{what}: malformed config: {e}")))?;
    let diff_ids: Vec<String> = value
        .pointer("/rootfs/diff_ids")
        .and_then(|v| v.as_array())
        .ok_or_else(|| Error::InvalidArgument(format!("{what}: config has no rootfs.diff_ids")))?
        .iter()
        .map(|v| v.as_str().map(str::to_string))
        .collect::<Option<_>>()
        .ok_or_else(|| Error::InvalidArgument(format!("{what}: a diff_id is not a string")))?;
    if diff_ids.len() != manifest.layers.len() {
        return Err(Error::InvalidArgument(format!(
            "{what}: {} layers but {} diff_ids in the config",
            manifest.layers.len(),
            diff_ids.len()
        )));
    }
    Ok(SourceManifest {
        entry,
        manifest,
        config,
        diff_ids,
        jobs: Vec::new(),
    })
}

/// Runs the jobs on `layer_jobs` threads; the first error stops the rest.
fn run_jobs(
    src: &Source,
    dst: &Target,
    opts: &ConvertOptions,
    jobs: &[Job],
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<Vec<LayerOut>> {
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Mutex<Vec<Option<Result<LayerOut>>>> =
        Mutex::new((0..jobs.len()).map(|_| None).collect());
    let workers = if opts.layer_jobs == 0 {
        2
    } else {
        opts.layer_jobs
    }
    .min(jobs.len().max(1));
    progress(Progress {
        done: 0,
        total: jobs.len(),
    });
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= jobs.len() || failed.load(Ordering::Relaxed) {
                    return;
                }
                let r = convert_layer(src, dst, opts, &jobs[i]);
                if r.is_err() {
                    failed.store(true, Ordering::Relaxed);
                }
                results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(r);
                progress(Progress {
                    done: done.fetch_add(1, Ordering::Relaxed) + 1,
                    total: jobs.len(),
                });
            });
        }
    });
    let results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    // Report the first failure in job order (skipped jobs have no result).
    let mut outs = Vec::with_capacity(jobs.len());
    let mut skipped = false;
    for r in results {
        match r {
            Some(Ok(o)) => outs.push(o),
            Some(Err(e)) => return Err(e),
            None => skipped = true,
        }
    }
    assert!(!skipped, "jobs are only skipped after a failure");
    Ok(outs)
}

fn temp_file(opts: &ConvertOptions) -> Result<tempfile::NamedTempFile> {
    let dir = opts
        .build
        .temp_dir
        .clone()
        .unwrap_or_else(std::env::temp_dir);
    tempfile::Builder::new()
        .prefix(".estargz-image-")
        .tempfile_in(&dir)
        .map_err(|e| Error::io(format!("creating a temporary file in {}", dir.display()), e))
}

/// Whether a layer media type is gzip (`Some(true)`) or plain tar (`Some(false)`).
fn layer_kind(media_type: &str) -> Option<bool> {
    match media_type {
        OCI_LAYER_GZIP | m::DOCKER_LAYER_GZIP => Some(true),
        OCI_LAYER_TAR | DOCKER_LAYER_TAR => Some(false),
        _ => None,
    }
}

/// Fetches one layer to a temp file, keeps it if it is eStargz already
/// and has no files to prioritize, else builds the eStargz blob, and
/// stores the result in `dst`.
fn convert_layer(src: &Source, dst: &Target, opts: &ConvertOptions, job: &Job) -> Result<LayerOut> {
    let what = &job.what;
    let gzip = layer_kind(&job.source.media_type).ok_or_else(|| {
        Error::Unsupported(format!(
            "{what}: media type {} (only tar and gzip layers can be converted)",
            job.source.media_type
        ))
    })?;
    let input = temp_file(opts)?;
    {
        let mut w = BufWriter::with_capacity(1 << 20, input.as_file());
        src.copy_blob(&job.source, &mut w)
            .map_err(|e| add_context(e, what))?;
        w.flush()
            .map_err(|e| Error::io(format!("{what}: writing a temporary file"), e))?;
    }
    // Only an eStargz target keeps eStargz layers as they are, and only
    // when there are no files to prioritize: a layer with some is rebuilt
    // (the builder drops its old TOC and landmark), which is how a
    // workload-optimized image reorders it.
    if gzip && opts.build.format == Format::Estargz && job.prioritized.is_empty() {
        if let Some(out) = keep_if_estargz(src, dst, job, input.path(), opts.oci_toc_annotation)? {
            return Ok(out);
        }
    }
    let build_opts = BuildOptions {
        prioritized_files: job.prioritized.clone(),
        ..opts.build.clone()
    };
    let output = temp_file(opts)?;
    let result = {
        let mut w = BufWriter::with_capacity(1 << 20, output.as_file());
        let r = build(
            BuildInput::Path(input.path().to_path_buf()),
            &mut w,
            &build_opts,
        )
        .map_err(|e| add_context(e, what))?;
        w.flush()
            .map_err(|e| Error::io(format!("{what}: writing a temporary file"), e))?;
        r
    };
    drop(input);
    // Lossless builds (keep-diff-id, zstd:chunked v2) must give the source's DiffID.
    let lossless = opts.build.keep_diff_id
        || opts.build.format == Format::ZstdChunked(crate::footer::ZstdGeneration::V2);
    if lossless && result.diff_id.to_string() != job.diff_id {
        return Err(Error::DigestMismatch {
            what: format!("{what}: DiffID after the lossless conversion (vs the config)"),
            expected: job.diff_id.clone(),
            actual: result.diff_id.to_string(),
        });
    }
    dst.put_blob_file(
        &result.blob_digest.to_string(),
        result.blob_size,
        output.path(),
        None,
    )
    .map_err(|e| e.with_context(what))?;
    Ok(LayerOut {
        descriptor: layer_descriptor(
            &job.source,
            result.blob_digest,
            result.blob_size,
            layer_media_type(result.format),
            built_layer_annotations(&result),
            result.toc_digest,
            opts.oci_toc_annotation,
        ),
        diff_id: result.diff_id.to_string(),
        kept: false,
        toc: result.external_toc_data,
    })
}

/// A gzip layer that opens as eStargz with an embedded TOC is kept as is.
fn keep_if_estargz(
    src: &Source,
    dst: &Target,
    job: &Job,
    path: &Path,
    oci_toc_annotation: bool,
) -> Result<Option<LayerOut>> {
    let what = &job.what;
    let Ok(file) = crate::source::FileSource::open(path) else {
        return Ok(None);
    };
    let reader = match Reader::open(std::sync::Arc::new(file), &OpenOptions::default()) {
        Ok(r) if matches!(r.footer(), Footer::Estargz { .. }) => r,
        _ => return Ok(None),
    };
    let digests = crate::digest::gzip_file_digests(path).map_err(|e| add_context(e, what))?;
    if digests.diff_id.to_string() != job.diff_id {
        return Err(Error::DigestMismatch {
            what: format!("{what}: DiffID of the layer (vs the config)"),
            expected: job.diff_id.clone(),
            actual: digests.diff_id.to_string(),
        });
    }
    dst.put_blob_file(
        &digests.digest.to_string(),
        job.source.size,
        path,
        src.mount_source(),
    )
    .map_err(|e| e.with_context(what))?;
    let annotations = [
        (TOC_DIGEST_ANNOTATION, reader.toc_digest().to_string()),
        (
            UNCOMPRESSED_SIZE_ANNOTATION,
            digests.uncompressed_size.to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    Ok(Some(LayerOut {
        descriptor: layer_descriptor(
            &job.source,
            digests.digest,
            job.source.size,
            OCI_LAYER_GZIP,
            annotations,
            reader.toc_digest(),
            oci_toc_annotation,
        ),
        diff_id: digests.diff_id.to_string(),
        kept: true,
        toc: None,
    }))
}

fn add_context(e: Error, what: &str) -> Error {
    match e {
        Error::InvalidTar(m) => Error::InvalidTar(format!("{what}: {m}")),
        Error::Corrupt(m) => Error::Corrupt(format!("{what}: {m}")),
        Error::Unsupported(m) => Error::Unsupported(format!("{what}: {m}")),
        Error::NotFound(m) => Error::NotFound(format!("{what}: {m}")),
        Error::InvalidArgument(m) => Error::InvalidArgument(format!("{what}: {m}")),
        Error::DigestMismatch {
            what: w,
            expected,
            actual,
        } => Error::DigestMismatch {
            what: format!("{what}: {w}"),
            expected,
            actual,
        },
        e => e.with_context(what),
    }
}

/// A converted layer's descriptor: its media type, the source's other
/// annotations, and the fresh TOC annotations of its format.
fn layer_descriptor(
    source: &Descriptor,
    digest: Digest,
    size: u64,
    media_type: &str,
    toc_annotations: BTreeMap<String, String>,
    toc_digest: Digest,
    oci_toc_annotation: bool,
) -> Descriptor {
    let mut annotations = source.annotations.clone();
    // Stale TOC annotations from the source would contradict the new ones
    // (readers refuse a layer whose TOC digests disagree).
    for key in TOC_ANNOTATIONS {
        annotations.remove(key);
    }
    if oci_toc_annotation {
        annotations.insert(OCI_TOC_DIGEST_ANNOTATION.into(), toc_digest.to_string());
    }
    annotations.extend(toc_annotations);
    Descriptor {
        media_type: media_type.into(),
        digest: digest.to_string(),
        size,
        annotations,
        platform: None,
    }
}

/// Writes the config (DiffIDs replaced when they changed) and the manifest.
fn write_manifest(
    dst: &Target,
    sm: &SourceManifest,
    outs: &[LayerOut],
    tagged: bool,
) -> Result<Descriptor> {
    let layers: Vec<&LayerOut> = sm.jobs.iter().map(|&j| &outs[j]).collect();
    let diff_ids: Vec<&str> = layers.iter().map(|l| l.diff_id.as_str()).collect();
    let config = if diff_ids == sm.diff_ids {
        // Unchanged DiffIDs (keep-diff-id): the same config bytes and digest.
        sm.config.clone()
    } else {
        let mut value: serde_json::Value =
            serde_json::from_slice(&sm.config).expect("parsed when loaded");
        value["rootfs"]["diff_ids"] = serde_json::json!(diff_ids);
        serde_json::to_vec(&value).expect("configs serialize")
    };
    let config_digest = dst.put_blob_bytes(&config)?;
    let config_type = if sm.manifest.config.media_type == DOCKER_CONFIG {
        OCI_CONFIG.to_string()
    } else {
        sm.manifest.config.media_type.clone()
    };
    let manifest = Manifest {
        schema_version: 2,
        media_type: OCI_MANIFEST.into(),
        config: Descriptor {
            media_type: config_type,
            digest: config_digest,
            size: config.len() as u64,
            annotations: sm.manifest.config.annotations.clone(),
            platform: None,
        },
        layers: layers.iter().map(|l| l.descriptor.clone()).collect(),
        annotations: sm.manifest.annotations.clone(),
    };
    let body = serde_json::to_vec(&manifest).expect("manifests serialize");
    dst.put_manifest(OCI_MANIFEST, &body, tagged.then(|| dst.tag()))
}

/// The TOC image (spec §6.2): one layer per external TOC, annotated with
/// the eStargz layer's digest, sorted by digest; an empty config.
fn write_toc_image(dst: &Target, outs: &[LayerOut]) -> Result<Option<(String, Descriptor)>> {
    let mut layers: BTreeMap<String, Descriptor> = BTreeMap::new();
    for out in outs {
        let Some(toc) = &out.toc else { continue };
        let digest = dst.put_blob_bytes(toc)?;
        let mut annotations = BTreeMap::new();
        annotations.insert(
            LAYER_DIGEST_ANNOTATION.to_string(),
            out.descriptor.digest.clone(),
        );
        layers.insert(
            digest.clone(),
            Descriptor {
                media_type: OCI_LAYER_GZIP.into(),
                digest,
                size: toc.len() as u64,
                annotations,
                platform: None,
            },
        );
    }
    if layers.is_empty() {
        return Ok(None);
    }
    let config = b"{}";
    let config_digest = dst.put_blob_bytes(config)?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: OCI_MANIFEST.into(),
        config: Descriptor {
            media_type: OCI_CONFIG.into(),
            digest: config_digest,
            size: config.len() as u64,
            annotations: Default::default(),
            platform: None,
        },
        layers: layers.into_values().collect(),
        annotations: Default::default(),
    };
    let tag = toc_image_tag(dst.tag());
    let body = serde_json::to_vec(&manifest).expect("manifests serialize");
    let d = dst.put_manifest(OCI_MANIFEST, &body, Some(&tag))?;
    Ok(Some((tag, d)))
}
