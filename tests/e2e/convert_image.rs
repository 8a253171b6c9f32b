//! `estargz convert-image`: OCI layouts made with tar + gzip (several
//! layers, whiteouts and opaque directories, OCI and Docker manifests, a
//! multi-platform index) are converted, pushed to a real registry, checked
//! with skopeo, read lazily, and their flattened rootfs compared with the
//! original's.

mod util;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use estargz_core::digest::sha256_digest;
use estargz_core::extract::{extract, ExtractOptions};
use estargz_core::image::{convert_image, ConvertOptions, Location, OciLayout, Source, Target};
use estargz_core::remote::manifest::{
    Descriptor, Index, Manifest, Platform, DOCKER_LAYER_GZIP, DOCKER_MANIFEST,
    LAYER_DIGEST_ANNOTATION, OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST, TOC_DIGEST_ANNOTATION,
    UNCOMPRESSED_SIZE_ANNOTATION,
};
use estargz_core::remote::{
    open_layer, HttpOptions, Image, LayerOptions, Reference, Registry, Uploaded,
};
use estargz_core::{EntryType, Error, FileSource, OpenOptions, Reader};
use estargz_tests::registry::TestRegistry;
use util::{descriptor, gunzip, noise, snapshot, Snapshot};

const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// One layer's files: path → content; `None` makes a directory.
type Files = Vec<(&'static str, Option<Vec<u8>>)>;

fn layers_spec() -> Vec<Files> {
    vec![
        vec![
            ("etc/os-release", Some(b"ID=test\n".to_vec())),
            ("bin/tool", Some(noise(300 << 10, 1))),
            ("dir/a", Some(b"a\n".to_vec())),
            ("dir/b", Some(b"b\n".to_vec())),
            ("gone.txt", Some(b"deleted above\n".to_vec())),
            ("keep/x", Some(b"x1\n".to_vec())),
            ("keep/y", Some(b"y1\n".to_vec())),
        ],
        vec![
            (".wh.gone.txt", Some(Vec::new())),
            ("dir/.wh..wh..opq", Some(Vec::new())),
            ("dir/c", Some(b"c only\n".to_vec())),
            ("etc/new.conf", Some(b"new\n".repeat(1000))),
            ("empty", None),
        ],
        vec![
            ("keep/x", Some(b"x2\n".to_vec())),
            ("keep/.wh.y", Some(Vec::new())),
            ("bin/big", Some(noise(1 << 20, 2))),
        ],
    ]
}

/// A tar of `files` made by GNU tar (fixed mtime, numeric owner 0).
fn make_tar(dir: &Path, name: &str, files: &Files) -> Vec<u8> {
    let tree = dir.join(format!("{name}.tree"));
    for (path, content) in files {
        let p = tree.join(path);
        match content {
            Some(data) => {
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(&p, data).unwrap();
            }
            None => std::fs::create_dir_all(&p).unwrap(),
        }
    }
    let tar = dir.join(format!("{name}.tar"));
    util::run(
        Command::new("tar")
            .args([
                "--sort=name",
                "--mtime=@1700000000",
                "--owner=0",
                "--group=0",
            ])
            .args(["--numeric-owner", "-C"])
            .arg(&tree)
            .arg("-cf")
            .arg(&tar)
            .arg("."),
    );
    std::fs::read(tar).unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("gzip")
        .arg("-c")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success());
    out.stdout
}

/// The source image: an OCI layout with the three layers (gzip, plain tar,
/// gzip), as an index of an OCI manifest (linux/amd64) and a Docker one
/// (linux/arm64, gzip layers only) sharing the bottom layer.
struct SourceImage {
    dir: PathBuf,
    /// Plain tars of the amd64 layers, bottom first.
    tars: Vec<Vec<u8>>,
}

fn add_manifest(
    layout: &OciLayout,
    docker: bool,
    layers: &[(&str, Vec<u8>, Vec<u8>)],
    arch: &str,
) -> Descriptor {
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|(_, _, tar)| sha256_digest(tar))
        .collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": arch, "os": "linux",
        "config": {"Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    layout.write_blob(&config).unwrap();
    let mut descs = Vec::new();
    for (media_type, blob, _) in layers {
        layout.write_blob(blob).unwrap();
        descs.push(descriptor(media_type, blob));
    }
    let manifest = Manifest {
        schema_version: 2,
        media_type: if docker {
            DOCKER_MANIFEST
        } else {
            OCI_MANIFEST
        }
        .into(),
        config: descriptor(
            if docker {
                DOCKER_CONFIG
            } else {
                estargz_core::remote::manifest::OCI_CONFIG
            },
            &config,
        ),
        layers: descs,
        annotations: Default::default(),
    };
    let body = serde_json::to_vec(&manifest).unwrap();
    layout.write_blob(&body).unwrap();
    let mut d = descriptor(&manifest.media_type, &body);
    d.platform = Some(Platform::parse(&format!("linux/{arch}")).unwrap());
    d
}

fn make_source(dir: &Path) -> SourceImage {
    let spec = layers_spec();
    let tars: Vec<Vec<u8>> = spec
        .iter()
        .enumerate()
        .map(|(i, files)| make_tar(dir, &format!("l{i}"), files))
        .collect();
    let layout_dir = dir.join("src-layout");
    let layout = OciLayout::create(&layout_dir).unwrap();
    let amd64 = add_manifest(
        &layout,
        false,
        &[
            (OCI_LAYER_GZIP, gzip(&tars[0]), tars[0].clone()),
            (OCI_LAYER_TAR, tars[1].clone(), tars[1].clone()),
            (OCI_LAYER_GZIP, gzip(&tars[2]), tars[2].clone()),
        ],
        "amd64",
    );
    let arm64 = add_manifest(
        &layout,
        true,
        &[
            (DOCKER_LAYER_GZIP, gzip(&tars[0]), tars[0].clone()),
            (DOCKER_LAYER_GZIP, gzip(&tars[2]), tars[2].clone()),
        ],
        "arm64",
    );
    let index = Index {
        schema_version: 2,
        media_type: OCI_INDEX.into(),
        manifests: vec![amd64, arm64],
    };
    let body = serde_json::to_vec(&index).unwrap();
    layout.write_blob(&body).unwrap();
    layout.tag("v1", &descriptor(OCI_INDEX, &body)).unwrap();
    SourceImage {
        dir: layout_dir,
        tars,
    }
}

/// Applies layer trees (bottom first) with overlay whiteout rules.
fn flatten(layers: &[PathBuf]) -> BTreeMap<String, Snapshot> {
    let mut root: BTreeMap<String, Snapshot> = BTreeMap::new();
    let remove_under = |root: &mut BTreeMap<String, Snapshot>, dir: &str| {
        let prefix = format!("{dir}/");
        root.retain(|p, _| !p.starts_with(&prefix));
    };
    for layer in layers {
        let snap = snapshot(layer, false);
        for path in snap.keys() {
            let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
            if name == ".wh..wh..opq" {
                remove_under(&mut root, dir);
            } else if let Some(hidden) = name.strip_prefix(".wh.") {
                let target = if dir.is_empty() {
                    hidden.to_string()
                } else {
                    format!("{dir}/{hidden}")
                };
                root.remove(&target);
                remove_under(&mut root, &target);
            }
        }
        for (path, s) in snap {
            let name = path.rsplit('/').next().unwrap();
            if !name.starts_with(".wh.") {
                root.insert(path, s);
            }
        }
    }
    root
}

/// The original image's rootfs (amd64), extracted with GNU tar.
fn original_rootfs(dir: &Path, tars: &[Vec<u8>]) -> BTreeMap<String, Snapshot> {
    let mut trees = Vec::new();
    for (i, tar) in tars.iter().enumerate() {
        let file = dir.join(format!("orig{i}.tar"));
        std::fs::write(&file, tar).unwrap();
        let out = dir.join(format!("orig{i}"));
        std::fs::create_dir_all(&out).unwrap();
        util::run(
            Command::new("tar")
                .arg("-xf")
                .arg(&file)
                .arg("-C")
                .arg(&out),
        );
        trees.push(out);
    }
    flatten(&trees)
}

fn no_owner_extract() -> ExtractOptions {
    ExtractOptions::default().same_owner(false)
}

fn read_layout_json<T: serde::de::DeserializeOwned>(layout: &OciLayout, digest: &str) -> T {
    serde_json::from_slice(&layout.read_blob(digest, 4 << 20).unwrap()).unwrap()
}

fn estargz(args: &[&str]) -> String {
    util::run(Command::new(util::estargz_bin()).args(args))
}

fn check_layer_descriptor(l: &Descriptor, blob: &[u8]) -> String {
    assert_eq!(l.media_type, OCI_LAYER_GZIP);
    assert_eq!(l.digest, sha256_digest(blob));
    let plain = gunzip(blob);
    assert_eq!(
        l.annotations[UNCOMPRESSED_SIZE_ANNOTATION],
        plain.len().to_string()
    );
    assert!(l.annotations[TOC_DIGEST_ANNOTATION].starts_with("sha256:"));
    sha256_digest(&plain)
}

#[test]
fn oci_to_oci_multi_platform_and_platform_choice() {
    let dir = tempfile::tempdir().unwrap();
    let src = make_source(dir.path());
    let out = dir.path().join("out");
    let list = dir.path().join("prioritized.txt");
    std::fs::write(
        &list,
        "# layer path\n2 bin/big\n0 etc/os-release\n0 dir/b\n",
    )
    .unwrap();
    let printed = estargz(&[
        "convert-image",
        "-q",
        "--prioritized-files",
        list.to_str().unwrap(),
        "--chunk-size",
        "65536",
        &format!("oci:{}:v1", src.dir.display()),
        &format!("oci:{}:esgz", out.display()),
    ]);
    let layout = OciLayout::open(&out).unwrap();
    let root = layout.find(Some("esgz")).unwrap();
    assert_eq!(
        printed.trim(),
        format!("oci:{}:esgz@{}", out.display(), root.digest)
    );
    assert_eq!(root.media_type, OCI_INDEX);
    let index: Index = read_layout_json(&layout, &root.digest);
    assert_eq!(index.manifests.len(), 2);
    let mut layer_digests = Vec::new();
    for (entry, arch) in index.manifests.iter().zip(["amd64", "arm64"]) {
        assert_eq!(entry.platform.as_ref().unwrap().architecture, arch);
        assert_eq!(entry.media_type, OCI_MANIFEST);
        let m: Manifest = read_layout_json(&layout, &entry.digest);
        assert_eq!(m.media_type, OCI_MANIFEST);
        assert_eq!(
            m.config.media_type,
            estargz_core::remote::manifest::OCI_CONFIG
        );
        let config: serde_json::Value = read_layout_json(&layout, &m.config.digest);
        assert_eq!(config["config"]["Env"][0], "PATH=/bin", "config kept");
        let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
        assert_eq!(diff_ids.len(), m.layers.len());
        for (l, diff_id) in m.layers.iter().zip(diff_ids) {
            let blob = std::fs::read(layout.blob_path(&l.digest).unwrap()).unwrap();
            assert_eq!(check_layer_descriptor(l, &blob), diff_id.as_str().unwrap());
            layer_digests.push(l.digest.clone());
        }
    }
    assert_eq!(
        layer_digests[0], layer_digests[3],
        "shared layer converted once"
    );

    // The flattened amd64 rootfs equals the original's.
    let m: Manifest = read_layout_json(&layout, &index.manifests[0].digest);
    let mut trees = Vec::new();
    for (i, l) in m.layers.iter().enumerate() {
        let src = FileSource::open(layout.blob_path(&l.digest).unwrap()).unwrap();
        let opts = OpenOptions::default()
            .expected_toc_digest(Some(l.annotations[TOC_DIGEST_ANNOTATION].parse().unwrap()));
        let reader = Reader::open(Arc::new(src), &opts).unwrap();
        reader.verify().unwrap();
        let toc = reader.toc().unwrap();
        let names: Vec<&str> = toc
            .entries
            .iter()
            .filter(|e| e.kind == EntryType::Reg)
            .map(|e| e.name.trim_start_matches("./"))
            .collect();
        let want: &[&str] = match i {
            0 => &["etc/os-release", "dir/b", ".prefetch.landmark"],
            1 => &[".no.prefetch.landmark"],
            _ => &["bin/big", ".prefetch.landmark"],
        };
        assert_eq!(&names[..want.len()], want, "layer {i} order");
        let t = dir.path().join(format!("conv{i}"));
        extract(&reader, &t, &no_owner_extract()).unwrap();
        trees.push(t);
    }
    util::assert_same_tree(
        &original_rootfs(dir.path(), &src.tars),
        &flatten(&trees),
        "flattened rootfs",
    );

    // A list naming a layer the image does not have is refused.
    std::fs::write(&list, "3 etc/os-release\n").unwrap();
    let o = Command::new(util::estargz_bin())
        .args(["convert-image", "-q", "--prioritized-files"])
        .arg(&list)
        .arg(format!("oci:{}:v1", src.dir.display()))
        .arg(format!("oci:{}", dir.path().join("never").display()))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("prioritized files for layer 3"), "{stderr}");

    // One platform; converting the converted image keeps every layer.
    let again = dir.path().join("again");
    let opts = ConvertOptions::default().platforms(vec![Platform::parse("linux/arm64").unwrap()]);
    let registry = Registry::new(HttpOptions::default());
    let report = convert_image(
        &Source::open(
            &Location::parse(&format!("oci:{}:esgz", out.display())).unwrap(),
            &registry,
        )
        .unwrap(),
        &Target::open(
            &Location::parse(&format!("oci:{}", again.display())).unwrap(),
            &registry,
            0,
        )
        .unwrap(),
        &opts,
        &|_| {},
    )
    .unwrap();
    assert_eq!((report.manifests, report.converted, report.kept), (1, 0, 2));
    let layout2 = OciLayout::open(&again).unwrap();
    let index2: Index = read_layout_json(&layout2, &layout2.find(Some("latest")).unwrap().digest);
    assert_eq!(index2.manifests.len(), 1);
    assert_eq!(
        index2.manifests[0].digest, index.manifests[1].digest,
        "same manifest"
    );
}

#[test]
fn bad_inputs_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::new(HttpOptions::default());
    let run = |src: &str, dst: &Path| -> Result<_, Error> {
        let s = Source::open(&Location::parse(src)?, &registry)?;
        let t = Target::open(
            &Location::parse(&format!("oci:{}", dst.display()))?,
            &registry,
            0,
        )?;
        convert_image(&s, &t, &ConvertOptions::default(), &|_| {})
    };
    let out = dir.path().join("out");

    let err = run(&format!("oci:{}/missing", dir.path().display()), &out).unwrap_err();
    assert!(err.to_string().contains("not an OCI image layout"), "{err}");

    // A manifest blob that is not JSON (stored under its own digest).
    let bad = dir.path().join("bad");
    let layout = OciLayout::create(&bad).unwrap();
    let body = b"{not json";
    layout.write_blob(body).unwrap();
    layout.tag("v1", &descriptor(OCI_MANIFEST, body)).unwrap();
    let err = run(&format!("oci:{}:v1", bad.display()), &out).unwrap_err();
    assert!(
        matches!(err, Error::InvalidArgument(_)) && err.to_string().contains("malformed manifest"),
        "{err}"
    );
    let err = run(&format!("oci:{}:nope", bad.display()), &out).unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err}");

    // A layer blob whose bytes do not match its digest.
    let src = make_source(dir.path());
    let layout = OciLayout::open(&src.dir).unwrap();
    let index: Index = read_layout_json(&layout, &layout.find(Some("v1")).unwrap().digest);
    let m: Manifest = read_layout_json(&layout, &index.manifests[0].digest);
    let victim = layout.blob_path(&m.layers[2].digest).unwrap();
    let mut bytes = std::fs::read(&victim).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    std::fs::write(&victim, bytes).unwrap();
    let err = run(&format!("oci:{}:v1", src.dir.display()), &out).unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains(&m.layers[2].digest), "{err}");

    // The CLI reports it and fails.
    let o = Command::new(util::estargz_bin())
        .args(["convert-image", "-q"])
        .arg(format!("oci:{}:v1", src.dir.display()))
        .arg(format!("oci:{}", out.display()))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("digest mismatch"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

// ---- with a registry ----

fn http_opts() -> HttpOptions {
    HttpOptions::default()
        .plain_http(true)
        .request_timeout(Duration::from_secs(20))
        .retries(1)
        .min_backoff(Duration::from_millis(10))
        .auth_files(Vec::new())
}

/// Debian's skopeo: required, so the image checks can never be skipped.
fn skopeo() -> PathBuf {
    let p = std::env::var_os("ESTARGZ_TEST_SKOPEO_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/skopeo"));
    assert!(
        p.exists(),
        "{} not found: install Debian's skopeo package (.ci/run does)",
        p.display()
    );
    p
}

fn resolve(registry: &Registry, reference: &str, platform: &str) -> Image {
    let r = Reference::parse(reference).unwrap();
    registry
        .resolve_image(&r, Some(&Platform::parse(platform).unwrap()))
        .unwrap()
}

/// Reads every layer lazily from the registry and flattens them.
fn lazy_rootfs(
    registry: &Registry,
    reference: &str,
    platform: &str,
    dir: &Path,
) -> BTreeMap<String, Snapshot> {
    let image = resolve(registry, reference, platform);
    let mut trees = Vec::new();
    for i in 0..image.manifest.layers.len() {
        let layer = open_layer(registry, &image, i, &LayerOptions::default()).unwrap();
        let t = dir.join(format!("lazy{i}"));
        extract(&layer.reader, &t, &no_owner_extract()).unwrap();
        trees.push(t);
    }
    flatten(&trees)
}

#[test]
fn push_to_registry_skopeo_and_lazy_read() {
    let dir = tempfile::tempdir().unwrap();
    let src = make_source(dir.path());
    let reg = TestRegistry::start(None);
    let dst = format!("{}/conv/app:v1", reg.host());
    let printed = estargz(&[
        "convert-image",
        "-q",
        "--plain-http",
        "--upload-chunk-size",
        "200000",
        "--min-chunk-size",
        "65536",
        &format!("oci:{}:v1", src.dir.display()),
        &dst,
    ]);
    let index_digest = printed.trim().rsplit_once('@').unwrap().1.to_string();
    let registry = Registry::new(http_opts());
    let want = original_rootfs(dir.path(), &src.tars);
    let got = lazy_rootfs(&registry, &dst, "linux/amd64", &dir.path().join("a"));
    util::assert_same_tree(&want, &got, "lazily read rootfs");
    // --min-chunk-size reached the layers: small files share gzip members.
    let image = resolve(&registry, &dst, "linux/amd64");
    let bottom = open_layer(&registry, &image, 0, &LayerOptions::default()).unwrap();
    assert!(
        bottom
            .reader
            .toc()
            .unwrap()
            .entries
            .iter()
            .any(|e| e.inner_offset > 0),
        "no entry inside a shared gzip member"
    );

    let skopeo = skopeo();
    let raw = util::run(
        Command::new(&skopeo)
            .args([
                "inspect",
                "--raw",
                "--tls-verify=false",
                "--override-arch",
                "amd64",
            ])
            .arg(format!("docker://{dst}")),
    );
    let index: Index = serde_json::from_str(&raw).unwrap();
    assert_eq!(index.media_type, OCI_INDEX);
    let info = util::run(
        Command::new(&skopeo)
            .args(["inspect", "--tls-verify=false", "--override-arch", "arm64"])
            .arg(format!("docker://{dst}")),
    );
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["Architecture"], "arm64");
    assert_eq!(info["Layers"].as_array().unwrap().len(), 2);
    let repo = dst.rsplit_once(':').unwrap().0;
    for entry in &index.manifests {
        let raw = util::run(
            Command::new(&skopeo)
                .args(["inspect", "--raw", "--tls-verify=false"])
                .arg(format!("docker://{repo}@{}", entry.digest)),
        );
        let m: Manifest = serde_json::from_str(&raw).unwrap();
        assert_eq!(m.media_type, OCI_MANIFEST);
        for l in &m.layers {
            assert_eq!(l.media_type, OCI_LAYER_GZIP);
            assert!(l.annotations.contains_key(TOC_DIGEST_ANNOTATION), "{l:?}");
            assert!(
                l.annotations.contains_key(UNCOMPRESSED_SIZE_ANNOTATION),
                "{l:?}"
            );
        }
    }
    // skopeo copy fetches every blob and checks its digest; what it wrote
    // must still be a consistent image: each layer's annotations and the
    // config's DiffIDs match the layer bytes.
    let copy = dir.path().join("copy");
    util::run(
        Command::new(&skopeo)
            .args(["copy", "--src-tls-verify=false", "--all"])
            .arg(format!("docker://{dst}"))
            .arg(format!("oci:{}:c", copy.display())),
    );
    let copied = OciLayout::open(&copy).unwrap();
    let root = copied.find(Some("c")).unwrap();
    assert_eq!(root.digest, index_digest, "copied index unchanged");
    let copied_index: Index = read_layout_json(&copied, &root.digest);
    assert_eq!(copied_index.manifests.len(), 2);
    for entry in &copied_index.manifests {
        let m: Manifest = read_layout_json(&copied, &entry.digest);
        let config: serde_json::Value = read_layout_json(&copied, &m.config.digest);
        let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
        assert_eq!(diff_ids.len(), m.layers.len());
        for (l, diff_id) in m.layers.iter().zip(diff_ids) {
            let blob = std::fs::read(copied.blob_path(&l.digest).unwrap()).unwrap();
            assert_eq!(check_layer_descriptor(l, &blob), diff_id.as_str().unwrap());
        }
    }

    // Registry to registry: the already-eStargz layers are kept and mounted
    // from the source repository.
    let dst2 = format!("{}/other/app:v2", reg.host());
    let o = Command::new(util::estargz_bin())
        .args(["convert-image", "--plain-http", &dst, &dst2])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("0 layer(s) converted, 3 already eStargz"),
        "{stderr}"
    );
    let a = resolve(&registry, &dst, "linux/amd64");
    let b = resolve(&registry, &dst2, "linux/amd64");
    assert_eq!(a.manifest_digest, b.manifest_digest);
}

#[test]
fn external_toc_and_keep_diff_id() {
    let dir = tempfile::tempdir().unwrap();
    let src = make_source(dir.path());
    let reg = TestRegistry::start(None);
    let dst = format!("{}/ext/app:v1", reg.host());
    estargz(&[
        "convert-image",
        "-q",
        "--plain-http",
        "--external-toc",
        "--keep-diff-id",
        "--platform",
        "linux/amd64",
        &format!("oci:{}:v1", src.dir.display()),
        &dst,
    ]);
    let registry = Registry::new(http_opts());
    let image = resolve(&registry, &dst, "linux/amd64");
    let config: serde_json::Value =
        serde_json::from_slice(image.config.as_deref().unwrap()).unwrap();
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    // Lossless: each layer decompresses to exactly the original tar.
    for (i, l) in image.manifest.layers.iter().enumerate() {
        let blob = registry
            .fetch_blob(&image.reference, &l.digest, 64 << 20)
            .unwrap();
        let plain = gunzip(&blob);
        assert!(
            plain == src.tars[i],
            "layer {i}: gunzip differs from the original tar"
        );
        assert_eq!(
            check_layer_descriptor(l, &blob),
            diff_ids[i].as_str().unwrap()
        );
        assert_eq!(
            diff_ids[i].as_str().unwrap(),
            sha256_digest(&src.tars[i]),
            "DiffID kept"
        );
    }

    // The TOC image: one layer per eStargz layer, annotated, sorted.
    let toc_ref = Reference::parse(&format!("{dst}-esgztoc")).unwrap();
    let toc_image = registry.resolve_image(&toc_ref, None).unwrap();
    assert_eq!(toc_image.config.as_deref(), Some(&b"{}"[..]));
    let toc_layers = &toc_image.manifest.layers;
    assert_eq!(toc_layers.len(), 3);
    let mut sorted: Vec<_> = toc_layers.iter().map(|l| l.digest.clone()).collect();
    sorted.sort();
    assert_eq!(
        sorted,
        toc_layers
            .iter()
            .map(|l| l.digest.clone())
            .collect::<Vec<_>>()
    );
    for l in &image.manifest.layers {
        assert!(toc_layers
            .iter()
            .any(|t| t.annotations[LAYER_DIGEST_ANNOTATION] == l.digest));
    }

    // Lazy reads find each TOC in the TOC image.
    let want = original_rootfs(dir.path(), &src.tars);
    let got = lazy_rootfs(&registry, &dst, "linux/amd64", &dir.path().join("e"));
    util::assert_same_tree(&want, &got, "lazily read rootfs (external TOC)");
    let cat = estargz(&[
        "pull",
        "--plain-http",
        "-q",
        "--all",
        "--platform",
        "linux/amd64",
        &dst,
        "--cat",
        "keep/x",
    ]);
    assert_eq!(cat, "x2\n");
    let ex = dir.path().join("pulled");
    estargz(&[
        "pull",
        "--plain-http",
        "-q",
        "--layer",
        "1",
        "--platform",
        "linux/amd64",
        &dst,
        "--extract",
        ex.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(ex.join("dir/c")).unwrap(), b"c only\n");

    // A TOC image whose TOC does not match the layer's annotation is refused.
    let tampered = toc_image.manifest.layers[0].clone();
    let other = toc_image.manifest.layers[1].clone();
    let mut m = toc_image.manifest.clone();
    m.layers[0] = Descriptor {
        annotations: tampered.annotations.clone(),
        ..other
    };
    m.layers[1] = Descriptor {
        annotations: toc_image.manifest.layers[1].annotations.clone(),
        ..tampered
    };
    let body = serde_json::to_vec(&m).unwrap();
    registry
        .push_manifest(&toc_ref, OCI_MANIFEST, &body)
        .unwrap();
    let victim = image
        .manifest
        .layers
        .iter()
        .position(|l| l.digest == toc_image.manifest.layers[0].annotations[LAYER_DIGEST_ANNOTATION])
        .unwrap();
    let image = resolve(&registry, &dst, "linux/amd64");
    let err = open_layer(&registry, &image, victim, &LayerOptions::default())
        .err()
        .expect("a swapped TOC must be refused");
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
}

#[test]
fn uploads_skip_mount_and_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let reg = TestRegistry::start(None);
    let registry = Registry::new(http_opts());
    let data = noise(700_000, 5);
    let path = dir.path().join("blob");
    std::fs::write(&path, &data).unwrap();
    let digest = sha256_digest(&data);
    let a = Reference::parse(&format!("{}/repo/a:v1", reg.host())).unwrap();
    let b = Reference::parse(&format!("{}/repo/b:v1", reg.host())).unwrap();
    let size = data.len() as u64;

    let up = registry
        .upload_blob_file(&a, &digest, size, &path, None, 256 << 10)
        .unwrap();
    assert_eq!(up, Uploaded::Chunked(3));
    assert_eq!(registry.fetch_blob(&a, &digest, 1 << 20).unwrap(), data);
    let up = registry
        .upload_blob_file(&a, &digest, size, &path, None, 256 << 10)
        .unwrap();
    assert_eq!(up, Uploaded::Existed);
    let up = registry
        .upload_blob_file(&b, &digest, size, &path, Some(&a), 256 << 10)
        .unwrap();
    assert_eq!(up, Uploaded::Mounted);
    assert_eq!(registry.fetch_blob(&b, &digest, 1 << 20).unwrap(), data);

    // A wrong digest is refused by the registry at commit, whole or chunked.
    let wrong = sha256_digest(b"something else");
    for chunk in [0, 256 << 10] {
        let err = registry
            .upload_blob_file(&b, &wrong, size, &path, None, chunk)
            .unwrap_err();
        assert!(matches!(err, Error::Registry(_)), "{err}");
    }
}

#[test]
fn push_with_basic_auth() {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let src = make_source(dir.path());
    let reg = TestRegistry::start(Some(("alice", "s3cret")));
    let auth_file = dir.path().join("auth.json");
    std::fs::write(
        &auth_file,
        format!(
            r#"{{"auths":{{"{}":{{"auth":"{}"}}}}}}"#,
            reg.host(),
            base64::engine::general_purpose::STANDARD.encode("alice:s3cret")
        ),
    )
    .unwrap();
    let layout_src = format!("oci:{}:v1", src.dir.display());
    let dst = format!("{}/private/app:v1", reg.host());
    let convert = |args: &[&str]| {
        Command::new(util::estargz_bin())
            .args(["convert-image", "-q", "--plain-http", "--retries", "0"])
            .args(args)
            .output()
            .unwrap()
    };

    // Without credentials the push is refused with a clear error.
    let o = convert(&[&layout_src, &dst]);
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.to_lowercase().contains("unauthorized"), "{stderr}");

    // With them: chunked uploads, then a registry-to-registry conversion
    // within the registry (its kept layers are offered as mounts).
    let auth = auth_file.to_str().unwrap();
    let o = convert(&[
        "--auth-file",
        auth,
        "--upload-chunk-size",
        "200000",
        &layout_src,
        &dst,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let dst2 = format!("{}/private/copy:v1", reg.host());
    let o = convert(&["--auth-file", auth, &dst, &dst2]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let mut opts = http_opts();
    opts.auth_files = vec![auth_file.clone()];
    let registry = Registry::new(opts);
    let want = original_rootfs(dir.path(), &src.tars);
    let got = lazy_rootfs(&registry, &dst2, "linux/amd64", &dir.path().join("p"));
    util::assert_same_tree(&want, &got, "lazily read rootfs (basic auth)");
}

/// `--oci-toc-annotation` writes `org.opencontainers.image.toc.digest`
/// next to containerd's; a reader takes the OCI one when containerd's is
/// absent and refuses a layer whose two annotations disagree.
#[test]
fn oci_toc_digest_annotation() {
    use estargz_core::remote::manifest::OCI_TOC_DIGEST_ANNOTATION;
    let dir = tempfile::tempdir().unwrap();
    let src = make_source(dir.path());
    let reg = TestRegistry::start(None);
    let reference = format!("{}/oci/annotated:v1", reg.host());
    estargz(&[
        "convert-image",
        "-q",
        "--plain-http",
        "--oci-toc-annotation",
        "--platform",
        "linux/amd64",
        &format!("oci:{}:v1", src.dir.display()),
        &reference,
    ]);
    let registry = Registry::new(http_opts());
    let image = resolve(&registry, &reference, "linux/amd64");
    for l in &image.manifest.layers {
        assert_eq!(
            l.annotations.get(OCI_TOC_DIGEST_ANNOTATION),
            l.annotations.get(TOC_DIGEST_ANNOTATION),
            "{l:?}"
        );
    }
    // Only the OCI annotation: it anchors the TOC.
    let mut only_oci = image.clone();
    for l in &mut only_oci.manifest.layers {
        l.annotations.remove(TOC_DIGEST_ANNOTATION);
    }
    for i in 0..only_oci.manifest.layers.len() {
        let layer = open_layer(&registry, &only_oci, i, &LayerOptions::default())
            .unwrap_or_else(|e| panic!("layer {i}: {e}"));
        assert_eq!(
            Some(layer.reader.toc_digest().to_string().as_str()),
            only_oci.manifest.layers[i].toc_digest()
        );
    }
    // A wrong OCI annotation alone fails the TOC check...
    let mut wrong = only_oci.clone();
    let bogus = format!("sha256:{}", "2".repeat(64));
    wrong.manifest.layers[0]
        .annotations
        .insert(OCI_TOC_DIGEST_ANNOTATION.into(), bogus.clone());
    let err = open_layer(&registry, &wrong, 0, &LayerOptions::default())
        .err()
        .expect("opened with a wrong OCI TOC digest");
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    // ...and one disagreeing with containerd's is refused before any fetch.
    let mut conflict = image.clone();
    conflict.manifest.layers[0]
        .annotations
        .insert(OCI_TOC_DIGEST_ANNOTATION.into(), bogus);
    let err = open_layer(&registry, &conflict, 0, &LayerOptions::default())
        .err()
        .expect("opened with disagreeing TOC annotations");
    assert!(err.to_string().contains("disagree"), "{err}");
    // Without the flag, no OCI annotation is written.
    let plain = format!("{}/oci/plain:v1", reg.host());
    estargz(&[
        "convert-image",
        "-q",
        "--plain-http",
        "--platform",
        "linux/amd64",
        &format!("oci:{}:v1", src.dir.display()),
        &plain,
    ]);
    let image = resolve(&registry, &plain, "linux/amd64");
    assert!(image
        .manifest
        .layers
        .iter()
        .all(|l| !l.annotations.contains_key(OCI_TOC_DIGEST_ANNOTATION)));
}
