//! `estargz-fuse store` as the Additional Layer Store of a real Podman
//! (root, /dev/fuse, podman and runc needed; the test says so and passes
//! without them elsewhere, but fails under ESTARGZ_REQUIRE_FUSE): an image
//! built and pushed with our tools is pulled with its layers taken from the
//! store (not downloaded), run, saved and pushed; unknown layers are ENOENT
//! at once, and a registry outage is a clear error that clears once the
//! registry is back.

mod util;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use base64::Engine as _;
use estargz_core::digest::sha256_digest;
use estargz_core::remote::manifest::{TOC_DIGEST_ANNOTATION, UNCOMPRESSED_SIZE_ANNOTATION};
use estargz_core::remote::{HttpOptions, Reference, Registry};
use estargz_tests::faultproxy::FaultProxy;
use estargz_tests::registry::TestRegistry;
use util::*;

fn prerequisites() -> bool {
    util::prerequisites(
        "the Podman store tests",
        &[(on_path("podman"), "podman"), (on_path("runc"), "runc")],
    )
}

/// A root file system with `cat` and the libraries it needs (from ldd).
/// `tar` of everything under `tree`, owners as numbers.
fn tar_tree(tree: &Path, tar: &Path) {
    run(Command::new("tar")
        .args(["--numeric-owner", "-C"])
        .arg(tree)
        .arg("-cf")
        .arg(tar)
        .arg("."));
}

fn make_base(root: &Path) {
    copy_with_libraries(root, &["/usr/bin/cat"]);
    fs::create_dir_all(root.join("opt")).unwrap();
    fs::write(root.join("opt/big.bin"), noise(6 << 20, 7)).unwrap();
}

fn make_app(root: &Path) {
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(root.join("etc/greeting"), "hello from a lazy layer\n").unwrap();
    std::os::unix::fs::symlink("greeting", root.join("etc/greeting.link")).unwrap();
}

/// `tar` of a tree, then `estargz convert`; returns (tar, blob).
fn layer(work: &Path, name: &str, fill: fn(&Path)) -> (PathBuf, PathBuf) {
    let tree = work.join(name);
    fs::create_dir_all(&tree).unwrap();
    fill(&tree);
    let tar = work.join(format!("{name}.tar"));
    tar_tree(&tree, &tar);
    let blob = work.join(format!("{name}.esgz"));
    run(Command::new(estargz_bin())
        .arg("convert")
        .arg(&tar)
        .arg(&blob));
    (tar, blob)
}

fn registry_client() -> Registry {
    Registry::new(
        HttpOptions::default()
            .plain_http(true)
            .auth_files(Vec::new()),
    )
}

fn stat_errno(path: &Path) -> Option<i32> {
    fs::metadata(path)
        .err()
        .map(|e| e.raw_os_error().unwrap_or(0))
}

/// How many of Podman's overlay layers are the store's (an
/// `additionallayer` file naming a store path, `diff` a link into it),
/// not downloaded ones.
fn store_layers(podman: &Podman, store_mnt: &Path) -> usize {
    let mut from_store = 0;
    for e in fs::read_dir(podman.root.join("graph/overlay")).unwrap() {
        let p = e.unwrap().path();
        if let Ok(target) = fs::read_to_string(p.join("additionallayer")) {
            assert!(target.starts_with(store_mnt.to_str().unwrap()), "{target}");
            assert!(fs::read_link(p.join("diff"))
                .unwrap()
                .starts_with(store_mnt));
            from_store += 1;
        }
    }
    from_store
}

/// `podman run` of `image` prints a file of each layer, the 6 MiB one
/// byte-exact (`what` names the case in failures).
fn run_prints_both_layers(podman: &Podman, image: &str, what: &str) {
    let mut args = PODMAN_RUN.to_vec();
    args.extend([image, "/usr/bin/cat", "/etc/greeting.link"]);
    let (out, _) = podman.run(&args);
    assert_eq!(out, "hello from a lazy layer\n", "{what}");
    let out = podman
        .cmd()
        .args(PODMAN_RUN)
        .args([image, "/usr/bin/cat", "/opt/big.bin"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout == noise(6 << 20, 7), "{what}: big file differs");
}

#[test]
fn podman_pulls_runs_saves_and_pushes_through_the_store() {
    if !prerequisites() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let (base_tar, base_blob) = layer(work, "base", make_base);
    let (app_tar, app_blob) = layer(work, "app", make_app);

    let reg = TestRegistry::start(None);
    let mut proxy = FaultProxy::start(reg.addr(), None).unwrap();
    let host = proxy.addr().to_string();
    let image = format!("{host}/test/img:v1");
    for name in [&image, &format!("{host}/test/down:v1")] {
        let out = run(Command::new(estargz_bin())
            .args(["push", "--plain-http", name])
            .arg(&base_blob)
            .arg(&app_blob));
        assert!(out.contains("@sha256:"), "{out}");
    }

    // Our push writes the annotations lazy pulling needs, and they are right.
    let client = registry_client();
    let img = client
        .resolve_image(&Reference::parse(&image).unwrap(), None)
        .unwrap();
    let blobs = [fs::read(&base_blob).unwrap(), fs::read(&app_blob).unwrap()];
    let config: serde_json::Value = serde_json::from_slice(img.config.as_deref().unwrap()).unwrap();
    let mut toc_digests = Vec::new();
    for (i, (desc, blob)) in img.manifest.layers.iter().zip(&blobs).enumerate() {
        let plain = gunzip(blob);
        let size = desc.annotations.get(UNCOMPRESSED_SIZE_ANNOTATION);
        assert_eq!(size, Some(&plain.len().to_string()), "layer {i}");
        let toc = desc
            .annotations
            .get(TOC_DIGEST_ANNOTATION)
            .expect("toc.digest");
        toc_digests.push(toc.clone());
        assert_eq!(config["rootfs"]["diff_ids"][i], sha256_digest(&plain));
    }

    let store_mnt = work.join("store");
    fs::create_dir_all(&store_mnt).unwrap();
    let mut store = Store::start(&store_mnt);
    let podman = Podman::new(
        &work.join("podman"),
        Some(&store_mnt),
        &[&host, &reg.host()],
    );

    // Pull: layers come from the store; only small pieces are downloaded.
    let before = proxy.stats().bytes_down.load(Ordering::SeqCst);
    podman.run(&["pull", &image]);
    let pulled = proxy.stats().bytes_down.load(Ordering::SeqCst) - before;
    assert!(
        pulled < blobs[0].len() as u64 / 4,
        "pull downloaded {pulled} bytes; the base layer alone is {}",
        blobs[0].len()
    );
    let from_store = store_layers(&podman, &store_mnt);
    assert_eq!(
        from_store,
        2,
        "both layers are store layers:\n{}",
        store.log()
    );
    assert!(store.log().contains("user(s)"), "use was counted");

    // Run: files of both layers, read lazily through overlayfs.
    run_prints_both_layers(&podman, &image, "eStargz");

    // Save: every layer of the archive is the original layer content.
    let archive = work.join("save.tar");
    let requests = proxy.stats().requests.load(Ordering::SeqCst);
    podman.run(&["save", "-o", archive.to_str().unwrap(), &image]);
    // The blobs are read in large windows, not one request per kernel read.
    let requests = proxy.stats().requests.load(Ordering::SeqCst) - requests;
    assert!(requests <= 12, "save took {requests} requests");
    let saved = work.join("saved");
    fs::create_dir_all(&saved).unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(&saved));
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(saved.join("manifest.json")).unwrap()).unwrap();
    let layers = manifest[0]["Layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2);
    for (i, (path, tar)) in layers.iter().zip([&base_tar, &app_tar]).enumerate() {
        let layer_tar = saved.join(path.as_str().unwrap());
        let bytes = fs::read(&layer_tar).unwrap();
        assert_eq!(
            config["rootfs"]["diff_ids"][i],
            sha256_digest(&bytes),
            "saved layer {i} is the DiffID's tar"
        );
        let (want, got) = (work.join(format!("want{i}")), work.join(format!("got{i}")));
        for (d, t) in [(&want, tar), (&got, &layer_tar)] {
            fs::create_dir_all(d).unwrap();
            run(Command::new("tar")
                .args(["--numeric-owner", "-xf"])
                .arg(t)
                .arg("-C")
                .arg(d));
        }
        // The eStargz tar adds its TOC and a prefetch landmark.
        fs::remove_file(got.join("stargz.index.json")).unwrap();
        for landmark in [".prefetch.landmark", ".no.prefetch.landmark"] {
            let _ = fs::remove_file(got.join(landmark));
        }
        assert_same_tree(&snapshot(&want, true), &snapshot(&got, true), "saved layer");
    }

    // Push to another repository, then read it back from the registry.
    // Straight to the registry: the fault proxy only relays bodiless requests.
    let copy = format!("{}/other/copy:v2", reg.host());
    podman.run(&["push", &image, &copy]);
    let pushed = client
        .resolve_image(&Reference::parse(&copy).unwrap(), None)
        .unwrap();
    let pushed_config: serde_json::Value =
        serde_json::from_slice(pushed.config.as_deref().unwrap()).unwrap();
    assert_eq!(pushed_config["rootfs"], config["rootfs"]);
    for (i, desc) in pushed.manifest.layers.iter().enumerate() {
        let blob = client
            .fetch_blob(&pushed.reference, &desc.digest, 64 << 20)
            .unwrap();
        assert_eq!(
            config["rootfs"]["diff_ids"][i],
            sha256_digest(&gunzip(&blob))
        );
    }

    // Both keying schemes, read directly: info as containers/storage
    // decodes it, and blob = the registry's bytes.
    let b64 = |r: &str| base64::engine::general_purpose::STANDARD.encode(r);
    let image_dir = store_mnt.join(b64(&image));
    for (i, desc) in img.manifest.layers.iter().enumerate() {
        let diff_id = &config["rootfs"]["diff_ids"][i];
        let by_layer = image_dir.join(&desc.digest);
        let info: serde_json::Value =
            serde_json::from_slice(&fs::read(by_layer.join("info")).unwrap()).unwrap();
        assert_eq!(
            info,
            serde_json::json!({
                "compressed-diff-digest": desc.digest,
                "compressed-size": desc.size,
                "diff-digest": diff_id,
                "diff-size": gunzip(&blobs[i]).len(),
                "compression": 2,
            })
        );
        assert!(fs::read(by_layer.join("blob")).unwrap() == blobs[i]);
        let by_toc = image_dir.join(&toc_digests[i]);
        let info: serde_json::Value =
            serde_json::from_slice(&fs::read(by_toc.join("info")).unwrap()).unwrap();
        assert_eq!(
            info,
            serde_json::json!({
                "toc-digest": toc_digests[i],
                "diff-size": -1,
                "compression": 2,
                "flags": {"expected-layer-diffid": diff_id},
            })
        );
        assert_eq!(fs::metadata(by_toc.join("blob")).unwrap().len(), desc.size);
    }

    // An unknown layer is ENOENT, at once.
    let unknown = store_mnt
        .join(b64(&image))
        .join(format!("sha256:{}", "0".repeat(64)))
        .join("diff");
    let t = Instant::now();
    assert_eq!(stat_errno(&unknown), Some(libc::ENOENT));
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());

    // Registry down: a clear error, and success once it is back.
    let down = store_mnt
        .join(b64(&format!("{host}/test/down:v1")))
        .join(&toc_digests[1])
        .join("diff");
    let addr = proxy.addr();
    drop(proxy);
    let t = Instant::now();
    assert_eq!(stat_errno(&down), Some(libc::EIO));
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    let log = store.log();
    let line = log
        .lines()
        .find(|l| l.contains("not served") && l.contains("test/down"))
        .unwrap_or_else(|| panic!("no error line in the store log:\n{log}"));
    assert!(line.contains("network error"), "{line}");
    proxy = FaultProxy::start(reg.addr(), Some(addr)).unwrap();
    assert_eq!(
        fs::read_to_string(down.join("etc/greeting")).unwrap(),
        "hello from a lazy layer\n"
    );
    drop(proxy);

    // Removing the images releases the store's layers.
    drop(podman);
    let log = store.log();
    assert!(log.contains("released"), "no release in the log:\n{log}");
    store.stop();
    drop(store);
    let left: Vec<PathBuf> = mounts_under(work);
    assert!(left.is_empty(), "mounts left behind: {left:?}");
}

/// Debian's Podman 4.3.1 pushes `--compression-format zstd:chunked` layers
/// in the v1 generation (containers/storage 1.43: 40-byte footer, the
/// `io.containers.zstd-chunked.*` annotations, no TOC digest annotation):
/// they open lazily from the position annotation, anchored by the
/// manifest checksum, and `estargz pull --cat` reads files byte-exact while
/// fetching a fraction of the blob. Needs root and podman (no FUSE).
#[test]
fn podman_zstd_chunked_push_reads_lazily() {
    use estargz_core::remote::manifest::{
        OCI_LAYER_ZSTD, ZSTD_V1_MANIFEST_CHECKSUM_ANNOTATION, ZSTD_V1_MANIFEST_POSITION_ANNOTATION,
    };
    use estargz_core::remote::{open_layer, LayerOptions};
    if !is_root() || !on_path("podman") {
        assert!(
            std::env::var_os("ESTARGZ_REQUIRE_FUSE").is_none(),
            "ESTARGZ_REQUIRE_FUSE is set but the Podman zstd:chunked test needs root and podman"
        );
        eprintln!("skipped: needs root and podman");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    fs::create_dir_all(tree.join("etc")).unwrap();
    fs::write(tree.join("etc/greeting"), "hello from zstd:chunked\n").unwrap();
    let big = noise(4 << 20, 11);
    fs::write(tree.join("big.bin"), &big).unwrap();
    let tar = work.path().join("layer.tar");
    tar_tree(&tree, &tar);
    let reg = TestRegistry::start(None);
    // Storage of its own, so the host's images are never touched.
    let podman = |args: &[&str]| {
        run(Command::new("podman")
            .arg("--root")
            .arg(work.path().join("root"))
            .arg("--runroot")
            .arg(work.path().join("runroot"))
            .args(["--storage-driver", "vfs"])
            .args(args))
    };
    podman(&["import", tar.to_str().unwrap(), "localhost/zstd-app:v1"]);
    let reference = format!("{}/zstd/app:v1", reg.host());
    podman(&[
        "push",
        "--tls-verify=false",
        "--compression-format",
        "zstd:chunked",
        "localhost/zstd-app:v1",
        &format!("docker://{reference}"),
    ]);

    let client = Registry::new(
        HttpOptions::default()
            .plain_http(true)
            .retries(1)
            .auth_files(Vec::new()),
    );
    let image = client
        .resolve_image(&Reference::parse(&reference).unwrap(), None)
        .unwrap();
    let desc = &image.manifest.layers[0];
    assert_eq!(desc.media_type, OCI_LAYER_ZSTD, "{desc:?}");
    for key in [
        ZSTD_V1_MANIFEST_CHECKSUM_ANNOTATION,
        ZSTD_V1_MANIFEST_POSITION_ANNOTATION,
    ] {
        assert!(
            desc.annotations.contains_key(key),
            "{key} missing: {desc:?}"
        );
    }
    let layer = open_layer(&client, &image, 0, &LayerOptions::default()).unwrap();
    assert_eq!(layer.reader.format().generation(), Some(1));
    assert_eq!(
        layer.blob.stats().requests,
        1,
        "TOC only, from the annotation"
    );
    layer.reader.verify().unwrap();

    let pull_cat = |path: &str| {
        let out = Command::new(estargz_bin())
            .args(["pull", "--plain-http", &reference, "--cat", path])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            out.stdout,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (greeting, report) = pull_cat("etc/greeting");
    assert_eq!(greeting, b"hello from zstd:chunked\n");
    // "fetched N of M bytes": a small file costs a fraction of the blob.
    let fetched: Vec<u64> = report
        .split_whitespace()
        .skip_while(|w| *w != "fetched")
        .skip(1)
        .step_by(2)
        .take(2)
        .map(|w| w.parse().unwrap())
        .collect();
    assert!(fetched[0] * 10 < fetched[1], "{report}");
    let (got, _) = pull_cat("big.bin");
    assert!(got == big, "big.bin differs");
    podman(&["rmi", "-a", "-f"]);
}

/// The same base and app trees as a plain (uncompressed tar layers) OCI
/// layout `oci:DIR:v1`, the source `convert-image` starts from.
fn plain_layout(work: &Path) -> PathBuf {
    use estargz_core::image::OciLayout;
    use estargz_core::remote::manifest::{Manifest, OCI_CONFIG, OCI_MANIFEST};
    let dir = work.join("layout");
    let layout = OciLayout::create(&dir).unwrap();
    let mut diff_ids = Vec::new();
    let mut layers = Vec::new();
    for (name, fill) in [("base", make_base as fn(&Path)), ("app", make_app)] {
        let tree = work.join(format!("{name}-tree"));
        fs::create_dir_all(&tree).unwrap();
        fill(&tree);
        let tar = work.join(format!("{name}-plain.tar"));
        tar_tree(&tree, &tar);
        let bytes = fs::read(&tar).unwrap();
        diff_ids.push(sha256_digest(&bytes));
        layout.write_blob(&bytes).unwrap();
        layers.push(descriptor("application/vnd.oci.image.layer.v1.tar", &bytes));
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/usr/bin:/bin"]},
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
    dir
}

/// Images WE convert to zstd:chunked (v2 and v1) with `convert-image`,
/// pushed to docker-registry, are pulled by Podman with both layers taken
/// from the store (no layer downloaded) and run byte-exact.
#[test]
fn podman_runs_our_zstd_chunked_images_through_the_store() {
    use estargz_core::remote::manifest::{
        OCI_LAYER_ZSTD, ZSTD_MANIFEST_CHECKSUM_ANNOTATION, ZSTD_V1_MANIFEST_CHECKSUM_ANNOTATION,
    };
    if !prerequisites() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let layout = plain_layout(work);
    let reg = TestRegistry::start(None);
    let proxy = FaultProxy::start(reg.addr(), None).unwrap();
    let host = proxy.addr().to_string();
    let client = registry_client();

    let store_mnt = work.join("store");
    fs::create_dir_all(&store_mnt).unwrap();
    let mut store = Store::start(&store_mnt);
    for (format, generation, checksum_key) in [
        ("zstd:chunked", 2, ZSTD_MANIFEST_CHECKSUM_ANNOTATION),
        ("zstd:chunked-v1", 1, ZSTD_V1_MANIFEST_CHECKSUM_ANNOTATION),
    ] {
        // Pushed straight to the registry (the fault proxy only relays
        // bodiless requests), pulled through the proxy to count bytes.
        let image = format!("{host}/zstd/g{generation}:v1");
        run(Command::new(estargz_bin())
            .args([
                "convert-image",
                "--quiet",
                "--plain-http",
                "--format",
                format,
            ])
            .arg(format!("oci:{}:v1", layout.display()))
            .arg(format!("{}/zstd/g{generation}:v1", reg.host())));
        let img = client
            .resolve_image(&Reference::parse(&image).unwrap(), None)
            .unwrap();
        let mut blob_bytes = 0;
        for desc in &img.manifest.layers {
            assert_eq!(desc.media_type, OCI_LAYER_ZSTD, "{desc:?}");
            assert!(desc.annotations.contains_key(checksum_key), "{desc:?}");
            blob_bytes += desc.size;
        }

        // A Podman of its own per image, so no layer is shared between them.
        let podman = Podman::new(
            &work.join(format!("podman{generation}")),
            Some(&store_mnt),
            &[&host, &reg.host()],
        );
        let before = proxy.stats().bytes_down.load(Ordering::SeqCst);
        podman.run(&["pull", &image]);
        let pulled = proxy.stats().bytes_down.load(Ordering::SeqCst) - before;
        assert_eq!(
            store_layers(&podman, &store_mnt),
            2,
            "{format}: both layers are store layers:\n{}",
            store.log()
        );
        assert!(
            pulled < blob_bytes / 4,
            "{format}: pull downloaded {pulled} of {blob_bytes} bytes"
        );

        run_prints_both_layers(&podman, &image, format);
        drop(podman);
    }
    store.stop();
    drop(store);
    let left: Vec<PathBuf> = mounts_under(work);
    assert!(left.is_empty(), "mounts left behind: {left:?}");
}
