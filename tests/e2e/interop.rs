//! Interop with the Go reference (`github.com/containerd/stargz-snapshotter/estargz`),
//! both directions, over the upstream suite's tar shapes:
//!   (a) blobs built by Go open, verify and read identically with estargz-core;
//!   (b) blobs built by estargz-core open, `VerifyTOC` and read identically with Go.
//! The Go side is the oracle program in tests/interop; expected listings come
//! from running it (Go's archive/tar over the input), never from this crate.

mod util;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use base64::Engine as _;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use estargz_core::{build, BuildInput, BuildOptions, EntryType, FileSource, OpenOptions, Reader};
use util::run;

const LANDMARKS: [&str; 2] = [".prefetch.landmark", ".no.prefetch.landmark"];

struct Generated {
    _tmp: tempfile::TempDir,
    shapes: PathBuf,
    oracle: PathBuf,
}

/// Builds the Go oracle and generates the Go-built shapes, once per test binary.
fn generated() -> &'static Generated {
    static GENERATED: std::sync::OnceLock<Generated> = std::sync::OnceLock::new();
    GENERATED.get_or_init(|| {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let tmp = tempfile::tempdir().unwrap();
        let oracle = tmp.path().join("oracle");
        run(Command::new("go")
            .current_dir(manifest.join("interop"))
            .args(["build", "-o"])
            .arg(&oracle)
            .arg("./cmd/oracle"));
        let shapes = tmp.path().join("shapes");
        run(Command::new(&oracle).arg("gen").arg(&shapes));
        Generated {
            _tmp: tmp,
            shapes,
            oracle,
        }
    })
}

fn shapes() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(&generated().shapes)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("meta.json").exists())
        .collect();
    dirs.sort();
    assert!(
        dirs.len() >= 12,
        "the oracle generated only {} shapes",
        dirs.len()
    );
    dirs
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn read_text(path: &Path) -> String {
    fs::read_to_string(path).unwrap().trim().to_string()
}

/// The canonical listing (see tests/interop/README.md) of what a reader exposes.
fn listing(reader: &Reader) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for e in reader.index().entries().skip(1) {
        let (id, path) = (e.id(), e.path());
        if LANDMARKS.contains(&path.as_str()) || path == "stargz.index.json" {
            continue;
        }
        let value = if let Some(target) = e.hardlink_target() {
            json!({"name": path, "type": "hardlink", "mode": 0, "uid": 0, "gid": 0, "size": 0,
                   "sha256": "", "linkName": reader.path(target), "devMajor": 0, "devMinor": 0,
                   "xattrs": {}, "mtime": 0})
        } else {
            let (size, sha) = if e.kind() == EntryType::Reg {
                let mut content = Vec::new();
                reader
                    .for_each_chunk(id, |d| {
                        content.extend_from_slice(d);
                        Ok(())
                    })
                    .unwrap_or_else(|err| panic!("reading {}: {err}", path));
                (e.size(), hex::encode(Sha256::digest(&content)))
            } else {
                (0, String::new())
            };
            let xattrs: serde_json::Map<String, Value> = e
                .xattrs()
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        base64::engine::general_purpose::STANDARD.encode(v).into(),
                    )
                })
                .collect();
            json!({"name": path, "type": e.kind().as_str(), "mode": e.mode() & 0o7777, "uid": e.uid(),
                   "gid": e.gid(), "size": size, "sha256": sha,
                   "linkName": if e.kind() == EntryType::Symlink { e.link_name() } else { "" },
                   "devMajor": e.dev_major(), "devMinor": e.dev_minor(), "xattrs": xattrs,
                   "mtime": e.mod_time().unwrap_or(0)})
        };
        out.insert(path.clone(), value);
    }
    out
}

fn compare(expected: &Value, got: &BTreeMap<String, Value>, what: &str) {
    let mut diffs = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for want in expected.as_array().expect("expected.json is an array") {
        let name = want["name"].as_str().unwrap();
        seen.insert(name.to_string());
        match got.get(name) {
            None => diffs.push(format!("missing {name}")),
            Some(g) if g != want => diffs.push(format!("{name}:\n  want {want}\n  got  {g}")),
            _ => {}
        }
    }
    for (name, g) in got {
        if !seen.contains(name) && g["type"] != "dir" {
            diffs.push(format!("unexpected {name}: {g}"));
        }
    }
    assert!(
        diffs.is_empty(),
        "{what}: {}",
        diffs
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

fn open_options(external_toc: Option<PathBuf>, toc_digest: String) -> OpenOptions {
    OpenOptions::default()
        .external_toc_data(external_toc.map(|p| fs::read(p).unwrap()))
        .expected_toc_digest(Some(
            toc_digest
                .parse()
                .expect("the oracle prints sha256 digests"),
        ))
}

#[test]
fn go_blobs_read_identically_with_rust() {
    for dir in shapes() {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let external = dir.join("toc.gz");
        let opts = open_options(
            external.exists().then_some(external),
            read_text(&dir.join("toc-digest.txt")),
        );
        let src = Arc::new(FileSource::open(dir.join("blob.esgz")).unwrap());
        let reader = Reader::open(src, &opts).unwrap_or_else(|e| panic!("{name}: open: {e}"));
        reader
            .verify()
            .unwrap_or_else(|e| panic!("{name}: verify: {e}"));
        compare(
            &read_json(&dir.join("expected.json")),
            &listing(&reader),
            &format!("Go blob {name}"),
        );
        let meta = read_json(&dir.join("meta.json"));
        if meta["keepDiffID"] == true {
            // Lossless blobs decompress to the input tar itself.
            let tar = fs::read(dir.join("input.tar")).unwrap();
            assert_eq!(
                read_text(&dir.join("diffid.txt")),
                estargz_core::digest::sha256_digest(&tar),
                "{name}"
            );
        }
    }
}

#[test]
fn rust_blobs_verify_and_read_identically_with_go() {
    let oracle = &generated().oracle;
    let out = tempfile::tempdir().unwrap();
    for dir in shapes() {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let meta = read_json(&dir.join("meta.json"));
        let num = |k: &str| meta[k].as_i64().unwrap_or(0).max(0) as u64;
        let opts = BuildOptions::default()
            .chunk_size(num("chunkSize"))
            .min_chunk_size(num("minChunkSize"))
            .compression_level(match num("level") {
                0 => None,
                l => Some(l as u32),
            })
            .prioritized_files(
                meta["prioritized"]
                    .as_array()
                    .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
                    .unwrap_or_default(),
            )
            .allow_missing_prioritized(true)
            .external_toc(meta["externalTOC"] == true)
            .keep_diff_id(meta["keepDiffID"] == true);
        let blob_path = out.path().join(format!("{name}.esgz"));
        let mut file = fs::File::create(&blob_path).unwrap();
        let result = build(BuildInput::Path(dir.join("input.tar")), &mut file, &opts)
            .unwrap_or_else(|e| panic!("{name}: build: {e}"));
        drop(file);
        let mut check = Command::new(oracle);
        check
            .arg("check")
            .arg("--blob")
            .arg(&blob_path)
            .arg("--expect")
            .arg(dir.join("expected.json"))
            .arg("--toc-digest")
            .arg(result.toc_digest.to_string());
        if let Some(toc) = &result.external_toc_data {
            let toc_path = out.path().join(format!("{name}.toc.gz"));
            fs::write(&toc_path, toc).unwrap();
            check.arg("--external-toc").arg(toc_path);
        }
        if opts.min_chunk_size > 0 {
            check.arg("--min-chunk");
        }
        let stdout = run(&mut check);
        assert!(stdout.contains("check:"), "{name}: oracle said {stdout}");
        if opts.keep_diff_id {
            let tar = fs::read(dir.join("input.tar")).unwrap();
            assert_eq!(
                result.diff_id,
                estargz_core::Digest::of(&tar),
                "{name}: DiffID changed"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// zstd:chunked: v1 from upstream's `estargz/zstdchunked` (the oracle's
// `zstdchunked` command), v2 from containers/storage's compressor (the
// `cstorage` driver, its own Go module in tests/interop/cstorage).

/// The containers/storage driver, built once per test binary.
fn cstorage() -> &'static Path {
    static BIN: std::sync::OnceLock<(tempfile::TempDir, PathBuf)> = std::sync::OnceLock::new();
    &BIN.get_or_init(|| {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let tmp = tempfile::tempdir().unwrap();
        let bin = tmp.path().join("cstorage");
        // The store's btrfs and devicemapper drivers need C headers we do
        // not install; the partial pull uses overlay.
        run(Command::new("go")
            .current_dir(manifest.join("interop/cstorage"))
            .args([
                "build",
                "-tags",
                "exclude_graphdriver_btrfs,exclude_graphdriver_devicemapper",
                "-o",
            ])
            .arg(&bin)
            .arg("."));
        (tmp, bin)
    })
    .1
}

/// A zstd:chunked blob built by a Go reference, with what it said about it.
struct ZstdBlob {
    path: PathBuf,
    annotations: BTreeMap<String, String>,
    /// v1 only: the TOC digest upstream's Build reports.
    toc_digest: Option<String>,
}

/// What containers/storage refuses to compress (its tar-split packer
/// rejects a path that occurs twice); any other failure fails the test.
const CSTORAGE_REFUSALS: [&str; 1] = ["duplicates of file paths not supported"];

/// Builds `tar` as zstd:chunked v1 (upstream) or v2 (containers/storage);
/// `None` when containers/storage refuses the input (see [`CSTORAGE_REFUSALS`]).
fn build_zstd(generation: u8, tar: &Path, out: &Path, chunk_size: u64) -> Option<ZstdBlob> {
    let stdout = if generation == 1 {
        let mut cmd = Command::new(&generated().oracle);
        cmd.arg("zstdchunked");
        if chunk_size > 0 {
            cmd.arg("--chunk-size").arg(chunk_size.to_string());
        }
        run(cmd.arg(tar).arg(out))
    } else {
        let o = Command::new(cstorage())
            .arg("build")
            .arg(tar)
            .arg(out)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        if !o.status.success() && CSTORAGE_REFUSALS.iter().any(|r| stderr.contains(r)) {
            return None;
        }
        assert!(
            o.status.success(),
            "cstorage build {}: {stderr}",
            tar.display()
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let v: Value = serde_json::from_str(&stdout).unwrap();
    Some(ZstdBlob {
        path: out.to_path_buf(),
        annotations: serde_json::from_value(v["annotations"].clone()).unwrap(),
        toc_digest: v["tocDigest"].as_str().map(str::to_string),
    })
}

/// A descriptor carrying `blob`'s annotations, as a registry manifest would.
fn zstd_descriptor(blob: &ZstdBlob) -> estargz_core::remote::manifest::Descriptor {
    let mut annotations = blob.annotations.clone();
    if let Some(d) = &blob.toc_digest {
        annotations.insert(
            estargz_core::remote::manifest::TOC_DIGEST_ANNOTATION.into(),
            d.clone(),
        );
    }
    serde_json::from_value(json!({
        "mediaType": estargz_core::remote::manifest::OCI_LAYER_ZSTD,
        "digest": estargz_core::digest::sha256_digest(&fs::read(&blob.path).unwrap()),
        "size": fs::metadata(&blob.path).unwrap().len(),
        "annotations": annotations,
    }))
    .unwrap()
}

/// Opens `blob` twice, from its footer and from its manifest-position
/// annotation (no footer read), both anchored by the annotations, and
/// checks they agree; returns the footer-opened reader.
fn open_zstd(blob: &ZstdBlob, generation: u8, what: &str) -> Reader {
    let desc = zstd_descriptor(blob);
    let position = desc
        .zstd_chunked_position()
        .unwrap()
        .unwrap_or_else(|| panic!("{what}: no manifest-position annotation"));
    assert_eq!(position.generation.number(), generation, "{what}");
    let base = OpenOptions::default()
        .expected_toc_digest(desc.toc_digest().map(|d| d.parse().unwrap()))
        .expected_manifest_checksum(desc.zstd_manifest_checksum().map(|d| d.parse().unwrap()));
    let src = Arc::new(FileSource::open(&blob.path).unwrap());
    let reader = Reader::open(src.clone(), &base).unwrap_or_else(|e| panic!("{what}: open: {e}"));
    assert_eq!(
        reader.format(),
        estargz_core::Format::ZstdChunked(position.generation),
        "{what}"
    );
    let hinted = Reader::open(src, &base.clone().zstd_chunked_position(Some(position)))
        .unwrap_or_else(|e| panic!("{what}: open at the annotated position: {e}"));
    assert_eq!(hinted.toc_digest(), reader.toc_digest(), "{what}");
    assert_eq!(
        hinted.footer(),
        reader.footer(),
        "{what}: footer vs annotations"
    );
    reader
}

#[test]
fn zstd_chunked_blobs_of_both_generations_read_identically() {
    let out = tempfile::tempdir().unwrap();
    // Shapes differing only in build options share their input tar.
    let mut seen = std::collections::HashSet::new();
    let (mut checked, mut refused) = (0, Vec::new());
    for dir in shapes() {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let tar = dir.join("input.tar");
        let meta = read_json(&dir.join("meta.json"));
        let chunk_size = meta["chunkSize"].as_u64().unwrap_or(0);
        if !seen.insert((fs::read(&tar).unwrap(), chunk_size)) {
            continue;
        }
        let expected = read_json(&dir.join("expected.json"));
        // containers/storage keeps sub-second times, which read as their
        // whole seconds; the shapes' listings round like eStargz writers.
        let truncated: Value = serde_json::from_str(&run(Command::new(&generated().oracle)
            .args(["listing", "--truncate-mtime"])
            .arg(&tar)))
        .unwrap();
        for generation in [1u8, 2] {
            let what = format!("zstd:chunked v{generation} of {name}");
            let Some(blob) = build_zstd(
                generation,
                &tar,
                &out.path().join(format!("{name}.v{generation}.zst")),
                chunk_size,
            ) else {
                refused.push(name.clone());
                continue;
            };
            let reader = open_zstd(&blob, generation, &what);
            if generation == 2 {
                assert!(reader.tar_split_digest().is_some(), "{what}");
            }
            reader
                .verify()
                .unwrap_or_else(|e| panic!("{what}: verify: {e}"));
            let want = if generation == 1 {
                &expected
            } else {
                &truncated
            };
            compare(want, &listing(&reader), &what);
        }
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} distinct inputs");
    // Only the shapes with duplicate paths, and not all inputs.
    assert!(
        refused.len() * 4 < checked,
        "containers/storage refused {refused:?}"
    );
    eprintln!("{checked} inputs; containers/storage refused {refused:?}");
}

/// Our zstd:chunked blobs open with their readers: v1 with upstream's
/// `estargz` reader and its `zstdchunked` decompressor (`VerifyTOC`, every
/// file and chunk read and checked, the listing compared), v2 with
/// containers/storage, which pulls it partially into a store (TOC and
/// tar-split from the annotated positions, checked against them) and
/// exports the layer from the tar-split and the files: the export's digest
/// is the input tar's, the DiffID our build reported.
#[test]
fn rust_zstd_chunked_blobs_open_with_their_readers() {
    let oracle = &generated().oracle;
    let out = tempfile::tempdir().unwrap();
    let mut seen = std::collections::HashSet::new();
    let (mut v1_checked, mut v2_checked, mut refused) = (0, 0, Vec::new());
    let mut unpullable = Vec::new();
    for dir in shapes() {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let tar_path = dir.join("input.tar");
        let tar = fs::read(&tar_path).unwrap();
        let meta = read_json(&dir.join("meta.json"));
        let chunk_size = meta["chunkSize"].as_u64().unwrap_or(0);
        let prioritized: Vec<String> = meta["prioritized"]
            .as_array()
            .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
            .unwrap_or_default();
        if !seen.insert((tar.clone(), chunk_size, prioritized.clone())) {
            continue;
        }
        let v1 = BuildOptions::default()
            .format(estargz_core::Format::ZstdChunked(
                estargz_core::ZstdGeneration::V1,
            ))
            .chunk_size(chunk_size)
            .prioritized_files(prioritized)
            .allow_missing_prioritized(true);
        let blob = out.path().join(format!("{name}.v1.zst"));
        let mut file = fs::File::create(&blob).unwrap();
        let result = build(BuildInput::Path(tar_path.clone()), &mut file, &v1)
            .unwrap_or_else(|e| panic!("{name}: v1 build: {e}"));
        drop(file);
        let stdout = run(Command::new(oracle)
            .arg("check")
            .arg("--zstdchunked")
            .arg("--blob")
            .arg(&blob)
            .arg("--expect")
            .arg(dir.join("expected.json"))
            .arg("--toc-digest")
            .arg(result.toc_digest.to_string()));
        assert!(stdout.contains("check:"), "{name} v1: oracle said {stdout}");
        v1_checked += 1;

        if !seen.insert((tar.clone(), u64::MAX, Vec::new())) {
            continue; // v2 does not depend on the chunk size or priorities
        }
        let v2 = BuildOptions::default().format(estargz_core::Format::ZstdChunked(
            estargz_core::ZstdGeneration::V2,
        ));
        let blob = out.path().join(format!("{name}.v2.zst"));
        let mut file = fs::File::create(&blob).unwrap();
        let result = match build(BuildInput::Path(tar_path.clone()), &mut file, &v2) {
            Ok(r) => r,
            Err(e) if e.to_string().contains("twice") => {
                refused.push(name.clone());
                continue;
            }
            Err(e) => panic!("{name}: v2 build: {e}"),
        };
        drop(file);
        assert_eq!(result.diff_id, estargz_core::Digest::of(&tar), "{name}");
        let annotations = out.path().join(format!("{name}.v2.json"));
        fs::write(
            &annotations,
            serde_json::to_vec(&estargz_core::remote::manifest::built_layer_annotations(
                &result,
            ))
            .unwrap(),
        )
        .unwrap();
        let pulled = match cstorage_pull(&blob, &annotations) {
            Ok(v) => v,
            Err(ours) => {
                // Only what containers/storage cannot pull from its own blob either.
                let theirs =
                    build_zstd(2, &tar_path, &out.path().join(format!("{name}.cs.zst")), 0)
                        .expect("containers/storage compresses what we do");
                let theirs_annotations = out.path().join(format!("{name}.cs.json"));
                fs::write(
                    &theirs_annotations,
                    serde_json::to_vec(&theirs.annotations).unwrap(),
                )
                .unwrap();
                match cstorage_pull(&theirs.path, &theirs_annotations) {
                    Err(e) if e == ours => {
                        unpullable.push(format!("{name}: {e}"));
                        continue;
                    }
                    other => panic!("{name}: containers/storage fails to pull our v2 blob ({ours}) but not its own ({other:?})"),
                }
            }
        };
        assert_eq!(
            pulled["diffID"],
            result.diff_id.to_string(),
            "{name}: containers/storage's export of our v2 blob"
        );
        v2_checked += 1;
    }
    assert!(
        v1_checked >= 10 && v2_checked >= 10,
        "{v1_checked} v1, {v2_checked} v2 inputs"
    );
    assert!(refused.len() * 4 < v2_checked, "v2 refused {refused:?}");
    assert!(
        unpullable.len() * 4 < v2_checked,
        "unpullable: {unpullable:?}"
    );
    eprintln!(
        "{v1_checked} v1 and {v2_checked} v2 inputs; v2 refused (duplicate paths) {refused:?}; \
         containers/storage cannot pull its own blob of {unpullable:?}"
    );
}

/// containers/storage's partial pull of a v2 blob and the layer's export
/// (see the `cstorage pull` command); the error line when it fails.
fn cstorage_pull(blob: &Path, annotations: &Path) -> Result<Value, String> {
    let o = Command::new(cstorage())
        .arg("pull")
        .arg("--annotations")
        .arg(annotations)
        .arg(blob)
        .output()
        .unwrap();
    if !o.status.success() {
        return Err(String::from_utf8_lossy(&o.stderr).trim().to_string());
    }
    Ok(serde_json::from_slice(&o.stdout).unwrap())
}

/// A `ReadAt` that records every range read through it.
struct Recording {
    inner: FileSource,
    reads: std::sync::Mutex<Vec<std::ops::Range<u64>>>,
}

impl estargz_core::ReadAt for Recording {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        let n = self.inner.read_at(buf, offset)?;
        self.reads.lock().unwrap().push(offset..offset + n as u64);
        Ok(n)
    }
}

/// Zero runs become `zeros` chunks (v2): their bytes are produced without
/// reading the blob, and the file still reads identically; access and
/// change times from the TOC are kept.
#[test]
fn zstd_chunked_zero_holes_are_not_fetched() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let mut holes = util::noise(5000, 1);
    holes.extend(vec![0u8; 300_000]);
    holes.extend(util::noise(7000, 2));
    holes.extend(vec![0u8; 2048]);
    holes.extend(util::noise(100, 3));
    fs::write(src.join("holes"), &holes).unwrap();
    fs::write(src.join("small"), b"hi\n").unwrap();
    let tar = dir.path().join("in.tar");
    // POSIX (PAX) format records atime and ctime.
    run(Command::new("tar")
        .arg("--format=posix")
        .arg("-C")
        .arg(&src)
        .arg("-cf")
        .arg(&tar)
        .arg("."));
    let expected: Value = serde_json::from_str(&run(Command::new(&generated().oracle)
        .args(["listing", "--truncate-mtime"])
        .arg(&tar)))
    .unwrap();
    let blob = build_zstd(2, &tar, &dir.path().join("b.zst"), 0).unwrap();
    let desc = zstd_descriptor(&blob);
    let recording = Arc::new(Recording {
        inner: FileSource::open(&blob.path).unwrap(),
        reads: Default::default(),
    });
    let opts = OpenOptions::default()
        .expected_manifest_checksum(desc.zstd_manifest_checksum().map(|d| d.parse().unwrap()));
    let reader = Reader::open(recording.clone(), &opts).unwrap();
    let id = reader.lookup("holes").unwrap();
    let chunks = reader.entry(id).chunks().to_vec();
    let zeros: Vec<_> = chunks.iter().filter(|c| c.zeros).collect();
    assert_eq!(zeros.len(), 2, "{chunks:?}");
    recording.reads.lock().unwrap().clear();
    let mut got = Vec::new();
    std::io::Read::read_to_end(&mut reader.open_file(id).unwrap(), &mut got).unwrap();
    assert!(got == holes, "holes reads differently");
    for r in recording.reads.lock().unwrap().iter() {
        for z in &zeros {
            assert!(
                r.end <= z.offset || r.start >= z.next_offset,
                "read {r:?} touches the zeros chunk at {}..{}",
                z.offset,
                z.next_offset
            );
        }
    }
    reader.verify().unwrap();
    compare(&expected, &listing(&reader), "zero holes");
    let e = reader.entry(id);
    assert!(
        e.access_time().is_some() && e.change_time().is_some(),
        "{e:?}"
    );
}

/// zstd:chunked layers of both generations, pushed by `estargz push` to a
/// real registry and read lazily through the fault proxy: the open is one
/// request (the TOC, located from the manifest-position annotation), a
/// small file costs one more and a fraction of the blob, and faults end in
/// correct bytes or a clear error.
#[test]
fn zstd_chunked_layers_read_lazily_from_a_registry() {
    use estargz_core::remote::{open_layer, HttpOptions, LayerOptions, Reference, Registry};
    use estargz_core::ErrorCode;
    use estargz_tests::faultproxy::FaultProxy;
    use estargz_tests::registry::TestRegistry;
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let mut files = BTreeMap::new();
    files.insert("small.txt", b"small file\n".to_vec());
    files.insert("big.bin", util::noise(8 << 20, 5));
    let mut holes = util::noise(4000, 6);
    holes.extend(vec![0u8; 1 << 20]);
    holes.extend(util::noise(4000, 7));
    files.insert("holes.bin", holes);
    files.insert("d/other.txt", b"other\n".repeat(100));
    for (name, data) in &files {
        let p = src.join(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
    }
    let tar = dir.path().join("in.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&src)
        .arg("-cf")
        .arg(&tar)
        .arg("."));
    let reg = TestRegistry::start(None);
    let proxy = FaultProxy::start(reg.addr(), None).unwrap();
    let client = Registry::new(
        HttpOptions::default()
            .plain_http(true)
            .request_timeout(Duration::from_secs(2))
            .connect_timeout(Duration::from_secs(2))
            .retries(4)
            .min_backoff(Duration::from_millis(10))
            .max_backoff(Duration::from_millis(200))
            .auth_files(Vec::new()),
    );
    let read = |layer: &estargz_core::remote::RemoteLayer, path: &str| {
        let id = layer.reader.lookup(path)?;
        let mut out = Vec::new();
        layer.reader.for_each_chunk(id, |d| {
            out.extend_from_slice(d);
            Ok(())
        })?;
        Ok::<_, estargz_core::Error>(out)
    };
    for generation in [1u8, 2] {
        let what = format!("zstd:chunked v{generation}");
        let blob = build_zstd(
            generation,
            &tar,
            &dir.path().join(format!("v{generation}.zst")),
            0,
        )
        .unwrap();
        let reference = format!("{}/zstd/v{generation}:v1", reg.host());
        run(Command::new(util::estargz_bin())
            .args(["push", "--plain-http", &reference])
            .arg(&blob.path));
        let via_proxy = format!("{}/zstd/v{generation}:v1", proxy.addr());
        let image = client
            .resolve_image(&Reference::parse(&via_proxy).unwrap(), None)
            .unwrap();
        let desc = &image.manifest.layers[0];
        assert_eq!(
            desc.media_type,
            estargz_core::remote::manifest::OCI_LAYER_ZSTD
        );
        // What `estargz push` annotates is what the Go reference did.
        for (k, v) in &blob.annotations {
            assert_eq!(desc.annotations.get(k), Some(v), "{what}: {k}");
        }
        let layer = open_layer(&client, &image, 0, &LayerOptions::default())
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(
            layer.blob.stats().requests,
            1,
            "{what}: the TOC only, no footer"
        );
        assert_eq!(
            layer.reader.format().generation(),
            Some(generation),
            "{what}"
        );
        let blob_size = fs::metadata(&blob.path).unwrap().len();
        let before = layer.blob.stats();
        assert_eq!(
            read(&layer, "small.txt").unwrap(),
            files["small.txt"],
            "{what}"
        );
        let after = layer.blob.stats();
        assert_eq!(after.requests, before.requests + 1, "{what}");
        assert!(
            after.bytes - before.bytes < blob_size / 20,
            "{what}: {} bytes for a small file",
            after.bytes - before.bytes
        );
        // Zero holes (v2 `zeros` chunks; that they are never read is
        // checked at the chunk level by zstd_chunked_zero_holes_are_not_fetched).
        let got = read(&layer, "holes.bin").unwrap();
        assert!(got == files["holes.bin"], "{what}: holes.bin");
        // Faults: resets and truncated bodies are retried; corruption is
        // caught by the chunk digests and not sticky.
        proxy.set(|f| {
            f.reset_next = 2;
            f.truncate_next = 2;
            f.truncate_after = 700;
        });
        for name in ["big.bin", "d/other.txt"] {
            let got = read(&layer, name).unwrap_or_else(|e| panic!("{what}: {name}: {e}"));
            assert!(got == files[name], "{what}: wrong bytes for {name}");
        }
        proxy.clear();
        let fresh = open_layer(&client, &image, 0, &LayerOptions::default()).unwrap();
        // A layer's first miss also brings the bytes before it, which
        // would take the flipped byte; the miss for big.bin starts in it.
        assert_eq!(read(&fresh, "small.txt").unwrap(), files["small.txt"]);
        proxy.set(|f| f.corrupt_next = 1);
        let err = read(&fresh, "big.bin").unwrap_err();
        assert!(
            matches!(err.code(), ErrorCode::DigestMismatch | ErrorCode::Corrupt),
            "{what}: corruption reported as {err}"
        );
        proxy.clear();
        assert!(
            read(&fresh, "big.bin").unwrap() == files["big.bin"],
            "{what}"
        );

        // A manifest whose checksum does not match the TOC is refused.
        let mut bad = image.clone();
        for key in [
            estargz_core::remote::manifest::ZSTD_MANIFEST_CHECKSUM_ANNOTATION,
            estargz_core::remote::manifest::ZSTD_V1_MANIFEST_CHECKSUM_ANNOTATION,
        ] {
            if let Some(v) = bad.manifest.layers[0].annotations.get_mut(key) {
                *v = format!("sha256:{}", "1".repeat(64));
            }
        }
        let err = open_layer(&client, &bad, 0, &LayerOptions::default())
            .err()
            .unwrap_or_else(|| panic!("{what}: opened with a wrong manifest checksum"));
        assert_eq!(err.code(), ErrorCode::DigestMismatch, "{what}: {err}");
    }
}
