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
                0 => 9,
                l => l as u32,
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
