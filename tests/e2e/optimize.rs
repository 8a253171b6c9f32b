//! `estargz optimize` with real runc, FUSE and overlayfs (root, /dev/fuse
//! and runc needed; skipped elsewhere unless ESTARGZ_REQUIRE_FUSE is set):
//! an image whose layers are a minimal root file system and this host's
//! python3 (binary, libraries, the stdlib modules the workload imports, and
//! modules it does not) is optimized with `import json, sqlite3`; the python
//! layer's TOC then lists what the workload opened before
//! `.prefetch.landmark` and the rest after it, the lower layer's shadowed
//! copies are not prioritized, a replay of the record gives the same image
//! byte for byte, a server-like workload is stopped after `--period`, and
//! the error cases are clear.

mod util;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use estargz_core::digest::sha256_digest;
use estargz_core::image::OciLayout;
use estargz_core::remote::manifest::{
    Descriptor, Document, Index, Manifest, Platform, OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP,
    OCI_MANIFEST,
};
use estargz_core::{FileSource, OpenOptions, Reader};
use estargz_tests::registry::TestRegistry;
use util::*;

const PYTHON: &str = "/usr/bin/python3.11";
const SCRIPT: &str =
    "import json, sqlite3; print(json.dumps({'sqlite': sqlite3.sqlite_version_info[0]}))";

fn prerequisites() -> bool {
    util::prerequisites(
        "the optimize tests",
        &[
            (on_path("runc"), "runc"),
            (on_path("podman"), "podman"),
            (Path::new(PYTHON).exists(), PYTHON),
        ],
    )
}

/// The files the host's python opens for the workload: its modules (from
/// `sys.modules`) and their shared libraries.
fn python_files() -> Vec<PathBuf> {
    let list = run(Command::new(PYTHON)
        .env_clear()
        .args(["-c", &format!(
            "{SCRIPT}\nimport sys\nfor m in list(sys.modules.values()):\n    f = getattr(m, '__file__', None)\n    if f: print(f)"
        )]));
    let mut files: Vec<PathBuf> = list
        .lines()
        .skip(1)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute() && p.exists())
        .collect();
    let libs: Vec<PathBuf> = files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "so"))
        .flat_map(|so| {
            run(Command::new("ldd").arg(so))
                .lines()
                .filter_map(|l| {
                    l.split_once("=>")
                        .and_then(|(_, r)| r.split_whitespace().next().map(PathBuf::from))
                })
                .filter(|p| p.is_absolute())
                .collect::<Vec<_>>()
        })
        .collect();
    files.extend(libs);
    files
}

fn copy_into(root: &Path, file: &Path) {
    let dest = root.join(file.strip_prefix("/").unwrap());
    fs::create_dir_all(dest.parent().unwrap()).unwrap();
    fs::copy(file, &dest).unwrap();
}

fn tar_of(tree: &Path, tar: &Path) -> Vec<u8> {
    run(Command::new("tar")
        .args([
            "--sort=name",
            "--mtime=@1700000000",
            "--numeric-owner",
            "-C",
        ])
        .arg(tree)
        .arg("-cf")
        .arg(tar)
        .arg("."));
    fs::read(tar).unwrap()
}

fn gzip(tar: &Path) -> Vec<u8> {
    let out = Command::new("gzip").arg("-nc").arg(tar).output().unwrap();
    assert!(out.status.success());
    out.stdout
}

/// The plain (gzip, not eStargz) image `oci:DIR:v1`: a base layer (sleep,
/// cat, their libraries, /etc/passwd, and stale copies of files the python
/// layer replaces) and the python layer. Returns the python modules the
/// workload loads.
fn make_image(work: &Path) -> (PathBuf, Vec<String>) {
    let base = work.join("base");
    copy_with_libraries(&base, &["/usr/bin/sleep", "/usr/bin/cat"]);
    fs::create_dir_all(base.join("etc")).unwrap();
    fs::write(base.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    // Shadowed by the python layer: never opened, never prioritized.
    fs::create_dir_all(base.join("usr/lib/python3.11/json")).unwrap();
    fs::write(base.join("usr/lib/python3.11/json/decoder.py"), "stale\n").unwrap();

    let py = work.join("python");
    copy_with_libraries(&py, &[PYTHON]);
    std::os::unix::fs::symlink("python3.11", py.join("usr/bin/python3")).unwrap();
    let files = python_files();
    for f in &files {
        copy_into(&py, f);
    }
    // Modules the workload does not import: after the landmark.
    for unused in ["/usr/lib/python3.11/email", "/usr/lib/python3.11/http"] {
        for e in fs::read_dir(unused).unwrap() {
            let p = e.unwrap().path();
            if p.is_file() {
                copy_into(&py, &p);
            }
        }
    }
    let modules = files
        .iter()
        .map(|p| p.strip_prefix("/").unwrap().to_string_lossy().into_owned())
        .collect();

    let layout_dir = work.join("src");
    let layout = OciLayout::create(&layout_dir).unwrap();
    let mut diff_ids = Vec::new();
    let mut layers = Vec::new();
    for (name, tree) in [("base", &base), ("python", &py)] {
        let tar = work.join(format!("{name}.tar"));
        diff_ids.push(sha256_digest(&tar_of(tree, &tar)));
        let blob = gzip(&tar);
        layout.write_blob(&blob).unwrap();
        layers.push(descriptor(OCI_LAYER_GZIP, &blob));
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {
            "Env": ["PATH=/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE=1"],
            "Cmd": ["/usr/bin/python3", "-c", SCRIPT],
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    layout.write_blob(&config).unwrap();
    let manifest = Manifest {
        schema_version: 2,
        media_type: OCI_MANIFEST.into(),
        config: descriptor(OCI_CONFIG, &config),
        layers,
        annotations: Default::default(),
    };
    let body = serde_json::to_vec(&manifest).unwrap();
    layout.write_blob(&body).unwrap();
    layout.tag("v1", &descriptor(OCI_MANIFEST, &body)).unwrap();
    (layout_dir, modules)
}

fn estargz(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(estargz_bin()).args(args).output().unwrap()
}

fn ok(out: std::process::Output) -> (String, String) {
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{}\n{o}\n{e}", out.status);
    (o, e)
}

/// The layers of the tagged image in a layout, bottom first.
fn layers_of(dir: &Path, tag: &str) -> Vec<(Descriptor, Reader)> {
    let layout = OciLayout::open(dir).unwrap();
    let d = layout.find(Some(tag)).unwrap();
    let body = layout.read_blob(&d.digest, 1 << 20).unwrap();
    let Document::Manifest(m) = estargz_core::remote::manifest::decode(&body, None).unwrap() else {
        panic!("not a manifest");
    };
    m.layers
        .into_iter()
        .map(|l| {
            let file = FileSource::open(layout.blob_path(&l.digest).unwrap()).unwrap();
            let toc = l.toc_digest().unwrap().parse().unwrap();
            let r = Reader::open(
                Arc::new(file),
                &OpenOptions::default().expected_toc_digest(Some(toc)),
            )
            .unwrap();
            (l, r)
        })
        .collect()
}

/// Regular-file names of a layer's TOC in blob order, split at the landmark.
fn split_at_landmark(r: &Reader) -> Option<(Vec<String>, Vec<String>)> {
    let names: Vec<String> = r
        .toc()
        .unwrap()
        .entries
        .iter()
        .filter(|e| e.kind == estargz_core::EntryType::Reg)
        .map(|e| e.name.trim_start_matches("./").to_string())
        .collect();
    let at = names.iter().position(|n| n == ".prefetch.landmark")?;
    Some((names[..at].to_vec(), names[at + 1..].to_vec()))
}

#[test]
fn optimize_records_prioritizes_replays_and_stops() {
    if !prerequisites() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let (src, modules) = make_image(work);
    let oci = |p: &Path, tag: &str| format!("oci:{}:{tag}", p.display());
    let src_ref = oci(&src, "v1");

    // The source converted once: replays need eStargz layers.
    let esgz = work.join("esgz");
    ok(estargz(&[
        "convert-image".as_ref(),
        "-q".as_ref(),
        src_ref.as_ref(),
        oci(&esgz, "v1").as_ref(),
    ]));

    // Run the image's own command and record what it opens.
    let record = work.join("record.json");
    let dst1 = work.join("dst1");
    let started = Instant::now();
    let (out1, err1) = ok(estargz(&[
        "optimize".as_ref(),
        "--record-out".as_ref(),
        record.as_ref(),
        "--temp-dir".as_ref(),
        work.as_ref(),
        oci(&esgz, "v1").as_ref(),
        oci(&dst1, "opt").as_ref(),
    ]));
    eprintln!("optimize took {:.1?}:\n{err1}", started.elapsed());
    assert!(err1.contains("{\"sqlite\": 3}"), "the workload ran: {err1}");
    assert!(err1.contains("exited with status 0"), "{err1}");

    let layers = layers_of(&dst1, "opt");
    assert_eq!(layers.len(), 2);
    // The python layer: what the workload opened first, then the landmark.
    let (first, rest) = split_at_landmark(&layers[1].1).expect("a prefetch landmark");
    let first: BTreeSet<&str> = first.iter().map(String::as_str).collect();
    let libs: Vec<String> = run(Command::new("ldd").arg(PYTHON))
        .lines()
        .filter_map(|l| {
            l.split_once("=>")
                .and_then(|(_, r)| r.split_whitespace().next())
        })
        .map(|p| p.trim_start_matches('/').to_string())
        .collect();
    assert!(!libs.is_empty());
    for want in std::iter::once("usr/bin/python3.11".to_string())
        .chain(libs)
        .chain(
            modules
                .iter()
                .filter(|m| m.contains("/json/") || m.contains("sqlite"))
                .cloned(),
        )
    {
        assert!(
            first.contains(want.as_str()),
            "{want} is not before the landmark: {first:?}"
        );
    }
    assert!(
        first.iter().any(|f| f.contains("lib-dynload/_sqlite3")),
        "{first:?}"
    );
    assert!(rest
        .iter()
        .any(|f| f.starts_with("usr/lib/python3.11/email/")));
    assert!(
        !first
            .iter()
            .any(|f| f.contains("/email/") || f.contains("/http/")),
        "{first:?}"
    );
    // The base layer: its copies of what the python layer replaced were
    // never read, and nothing else of it was opened but the shadowed ones.
    let base_first = split_at_landmark(&layers[0].1)
        .map(|(f, _)| f)
        .unwrap_or_default();
    assert!(
        !base_first
            .iter()
            .any(|f| f.contains("python3.11/json") || f.contains("libc.so")),
        "{base_first:?}"
    );

    // The record lists the same; a replay gives the same image, byte for byte.
    let text = fs::read_to_string(&record).unwrap();
    let rec: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        rec["layers"][1]["tocDigest"],
        layers_of(&esgz, "v1")[1].0.toc_digest().unwrap()
    );
    assert!(text.contains("usr/bin/python3.11"), "{text}");
    let dst2 = work.join("dst2");
    let (out2, err2) = ok(estargz(&[
        "optimize".as_ref(),
        "--prioritized-files-from".as_ref(),
        record.as_ref(),
        oci(&esgz, "v1").as_ref(),
        oci(&dst2, "opt").as_ref(),
    ]));
    assert!(err2.contains("replayed"), "{err2}");
    let digest = |out: &str| out.trim().rsplit_once('@').unwrap().1.to_string();
    assert_eq!(
        digest(&out1),
        digest(&out2),
        "replay gives the same manifest"
    );
    for (a, b) in layers_of(&dst1, "opt")
        .iter()
        .zip(layers_of(&dst2, "opt").iter())
    {
        assert_eq!(a.0.digest, b.0.digest);
    }

    multi_platform(work, &esgz, &record, &dst2);

    // The optimized image runs as before: lazily through our store (which
    // records what the container opened) and after a full pull alike.
    let reg = TestRegistry::start(None);
    let image = format!("{}/test/py:opt", reg.host());
    ok(estargz(&[
        "convert-image".as_ref(),
        "-q".as_ref(),
        "--plain-http".as_ref(),
        oci(&dst1, "opt").as_ref(),
        image.as_ref(),
    ]));
    let store_mnt = work.join("store");
    fs::create_dir_all(&store_mnt).unwrap();
    let store_record = work.join("store-record.json");
    let mut store = Store::start_with(
        &store_mnt,
        &["--record-access".as_ref(), store_record.as_ref()],
    );
    let lazy = Podman::new(&work.join("podman-lazy"), Some(&store_mnt), &[&reg.host()]);
    let full = Podman::new(&work.join("podman-full"), None, &[&reg.host()]);
    let mut run_args = PODMAN_RUN.to_vec();
    run_args.push(image.as_str());
    let mut outputs = Vec::new();
    for podman in [&lazy, &full] {
        podman.run(&["pull", "-q", &image]);
        outputs.push(podman.run(&run_args).0);
    }
    assert_eq!(outputs[0], "{\"sqlite\": 3}\n");
    assert_eq!(outputs[0], outputs[1]);
    assert!(
        store.log().contains("user(s)"),
        "the store served the layers:\n{}",
        store.log()
    );
    drop(lazy);
    store.stop();
    let served = fs::read_to_string(&store_record).unwrap();
    let served: serde_json::Value = serde_json::from_str(&served).unwrap();
    let files: Vec<&str> = served["layers"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|l| {
            l["files"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f.as_str().unwrap())
        })
        .collect();
    assert!(files.contains(&"usr/bin/python3.11"), "{files:?}");

    // `estargz-fuse mount --record-access`: opens count, stats do not; the
    // record is written when the mount ends.
    let mp = work.join("mnt");
    fs::create_dir_all(&mp).unwrap();
    let blob = OciLayout::open(&esgz)
        .unwrap()
        .blob_path(&layers_of(&esgz, "v1")[1].0.digest)
        .unwrap();
    let mount_record = work.join("mount-record.json");
    let log = work.join("mount.log");
    let child = start_fuse_process(
        &[
            "mount".as_ref(),
            blob.as_ref(),
            mp.as_ref(),
            "--record-access".as_ref(),
            mount_record.as_ref(),
        ],
        &mp,
        &log,
    );
    fs::metadata(mp.join("usr/lib/python3.11/json/decoder.py")).unwrap();
    let mut head = [0u8; 4];
    std::io::Read::read_exact(
        &mut fs::File::open(mp.join("usr/bin/python3")).unwrap(),
        &mut head,
    )
    .unwrap();
    assert_eq!(&head, b"\x7fELF");
    assert!(stop_fuse_process(child, &mp, &log).success());
    let rec: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&mount_record).unwrap()).unwrap();
    assert_eq!(
        rec["layers"][0]["files"],
        serde_json::json!(["usr/bin/python3.11"])
    );

    // A replay over layers that are not eStargz is refused, before work.
    let out = estargz(&[
        "optimize".as_ref(),
        "--prioritized-files-from".as_ref(),
        record.as_ref(),
        src_ref.as_ref(),
        oci(&work.join("dst3"), "x").as_ref(),
    ]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && e.contains("not eStargz"), "{e}");

    // A server-like workload over the plain image: stopped after --period.
    let started = Instant::now();
    let (_, err) = ok(estargz(&[
        "optimize".as_ref(),
        "--period".as_ref(),
        "2".as_ref(),
        "--temp-dir".as_ref(),
        work.as_ref(),
        src_ref.as_ref(),
        oci(&work.join("dst4"), "sleep").as_ref(),
        "--".as_ref(),
        "/usr/bin/sleep".as_ref(),
        "1000".as_ref(),
    ]));
    let took = started.elapsed();
    assert!(err.contains("stopped after the period"), "{err}");
    assert!(took < Duration::from_secs(60), "took {took:?}");
    let sleep_layers = layers_of(&work.join("dst4"), "sleep");
    let (first, _) = split_at_landmark(&sleep_layers[0].1).expect("the base layer was optimized");
    assert!(first.contains(&"usr/bin/sleep".to_string()), "{first:?}");
    // sleep loads the python layer's libc (it shadows the base's), not python.
    let (first, _) = split_at_landmark(&sleep_layers[1].1).expect("libc was opened there");
    assert!(first.iter().any(|f| f.contains("libc.so")), "{first:?}");
    assert!(!first.iter().any(|f| f.contains("python")), "{first:?}");
    assert!(!split_at_landmark(&sleep_layers[0].1)
        .unwrap()
        .0
        .iter()
        .any(|f| f.contains("libc.so")));

    // A workload that fails is a warning; the recording is still used.
    let (_, err) = ok(estargz(&[
        "optimize".as_ref(),
        "--temp-dir".as_ref(),
        work.as_ref(),
        oci(&esgz, "v1").as_ref(),
        oci(&work.join("dst5"), "cat").as_ref(),
        "--".as_ref(),
        "/usr/bin/cat".as_ref(),
        "/no/such/file".as_ref(),
    ]));
    assert!(err.contains("exited with status 1"), "{err}");

    // No runtime: a clear error before any work.
    let out = estargz(&[
        "optimize".as_ref(),
        "--runtime".as_ref(),
        "/nonexistent/runc".as_ref(),
        src_ref.as_ref(),
        oci(&work.join("dst6"), "x").as_ref(),
    ]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && e.contains("install runc"), "{e}");
    // Nothing stays mounted or behind in the temp dir.
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(work.to_str().unwrap()), "{mounts}");
    let left: Vec<_> = fs::read_dir(work)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".estargz-optimize-")
        })
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// The root document of a tagged image in a layout.
fn root_of(dir: &Path, tag: &str) -> Document {
    let layout = OciLayout::open(dir).unwrap();
    let d = layout.find(Some(tag)).unwrap();
    let body = layout.read_blob(&d.digest, 1 << 20).unwrap();
    estargz_core::remote::manifest::decode(&body, Some(&d.media_type)).unwrap()
}

fn platform_of(d: &Descriptor) -> String {
    let p = d.platform.as_ref().expect("a platform");
    format!("{}/{}", p.os, p.architecture)
}

/// A two-platform index (this host's manifest of `esgz:v1` and an arm64
/// one with the same eStargz layers and its own config) optimized with
/// `record`: by default DST has the host's platform only, optimized;
/// with `--all-platforms` an index whose host manifest is optimized as
/// `dst2` (the same layer blobs) and whose other manifest is converted
/// without prioritized files (its eStargz layers kept as they were).
fn multi_platform(work: &Path, esgz: &Path, record: &Path, dst2: &Path) {
    let layout = OciLayout::open(esgz).unwrap();
    let host_desc = layout.find(Some("v1")).unwrap();
    let body = layout.read_blob(&host_desc.digest, 1 << 20).unwrap();
    let Document::Manifest(mut other) =
        estargz_core::remote::manifest::decode(&body, None).unwrap()
    else {
        panic!("not a manifest");
    };
    let mut config: serde_json::Value =
        serde_json::from_slice(&layout.read_blob(&other.config.digest, 1 << 20).unwrap()).unwrap();
    let host = Platform::host();
    let foreign = if host.architecture == "arm64" {
        "amd64"
    } else {
        "arm64"
    };
    config["architecture"] = foreign.into();
    let config = serde_json::to_vec(&config).unwrap();
    layout.write_blob(&config).unwrap();
    other.config = descriptor(OCI_CONFIG, &config);
    let other_body = serde_json::to_vec(&other).unwrap();
    layout.write_blob(&other_body).unwrap();
    let entry = |d: Descriptor, arch: &str| Descriptor {
        platform: Some(Platform {
            architecture: arch.into(),
            os: "linux".into(),
            variant: None,
        }),
        ..d
    };
    let index = Index {
        schema_version: 2,
        media_type: OCI_INDEX.into(),
        manifests: vec![
            entry(descriptor(OCI_MANIFEST, &other_body), foreign),
            entry(host_desc, &host.architecture),
        ],
    };
    let index_body = serde_json::to_vec(&index).unwrap();
    layout.write_blob(&index_body).unwrap();
    layout
        .tag("multi", &descriptor(OCI_INDEX, &index_body))
        .unwrap();
    let oci = |p: &Path, tag: &str| format!("oci:{}:{tag}", p.display());
    let optimized: Vec<String> = layers_of(dst2, "opt")
        .into_iter()
        .map(|(d, _)| d.digest)
        .collect();
    let original: Vec<String> = layers_of(esgz, "v1")
        .into_iter()
        .map(|(d, _)| d.digest)
        .collect();

    for (all, dir) in [
        (false, work.join("multi-one")),
        (true, work.join("multi-all")),
    ] {
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "optimize".as_ref(),
            "--prioritized-files-from".as_ref(),
            record.as_os_str(),
        ];
        if all {
            args.push("--all-platforms".as_ref());
        }
        let (src, dst) = (oci(esgz, "multi"), oci(&dir, "opt"));
        args.extend([std::ffi::OsStr::new(&src), std::ffi::OsStr::new(&dst)]);
        ok(estargz(&args));
        let Document::Index(out) = root_of(&dir, "opt") else {
            panic!("an index in, an index out");
        };
        let platforms: Vec<String> = out.manifests.iter().map(platform_of).collect();
        let want_host = format!("linux/{}", host.architecture);
        let want: Vec<String> = match all {
            true => vec![format!("linux/{foreign}"), want_host.clone()],
            false => vec![want_host.clone()],
        };
        assert_eq!(platforms, want, "--all-platforms {all}");
        for m in &out.manifests {
            let tag = format!("m-{}", platform_of(m).replace('/', "-"));
            OciLayout::open(&dir).unwrap().tag(&tag, m).unwrap();
            let layers = layers_of(&dir, &tag);
            let digests: Vec<String> = layers.iter().map(|(d, _)| d.digest.clone()).collect();
            if platform_of(m) == want_host {
                assert_eq!(
                    digests, optimized,
                    "the host's manifest is optimized as alone"
                );
                assert!(split_at_landmark(&layers[1].1).is_some());
            } else {
                assert_eq!(digests, original, "the other platform is only converted");
                assert!(layers.iter().all(|(_, r)| split_at_landmark(r).is_none()));
            }
        }
    }
}
