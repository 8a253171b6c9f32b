//! The store namespace without a mount, over images held in memory.

use std::collections::{BTreeMap, HashMap};
use std::io::Cursor;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use estargz_core::remote::manifest::{
    OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, TOC_DIGEST_ANNOTATION, UNCOMPRESSED_SIZE_ANNOTATION,
};
use estargz_core::remote::{Descriptor, Image, Manifest, Reference};
use estargz_core::testing::{entry_headers, HeaderSpec};
use estargz_core::{build, BuildInput, BuildOptions, Error, OpenOptions, Reader, Result};

use super::resolve::{ImageSource, OpenedLayer, Resolver, ResolverOptions};
use super::*;
use crate::rofs::{Errno, ErrnoOf};

const REF: &str = "127.0.0.1:5000/app/img:v1";

struct Layer {
    blob: Arc<Vec<u8>>,
    result: estargz_core::BuildResult,
}

fn layer(files: &[(&str, &[u8])]) -> Layer {
    let mut tar = Vec::new();
    for (name, data) in files {
        let spec = HeaderSpec {
            name: name.to_string(),
            typeflag: b'0',
            mode: 0o644,
            size: data.len() as u64,
            mtime: 1_600_000_000,
            ..Default::default()
        };
        tar.extend_from_slice(&entry_headers(&spec));
        tar.extend_from_slice(data);
        tar.resize(tar.len().next_multiple_of(512), 0);
    }
    tar.extend_from_slice(&[0; 1024]);
    let mut blob = Vec::new();
    let result = build(
        BuildInput::Reader(Box::new(Cursor::new(tar))),
        &mut blob,
        &BuildOptions::default(),
    )
    .unwrap();
    Layer {
        blob: Arc::new(blob),
        result,
    }
}

/// An image of `layers`; `annotate[i]` = (TOC digest, uncompressed size).
fn image(layers: &[&Layer], annotate: &[(bool, bool)], diff_ids: Option<Vec<String>>) -> Image {
    let descs = layers
        .iter()
        .zip(annotate)
        .map(|(l, &(toc, size))| {
            let mut annotations = BTreeMap::new();
            if toc {
                annotations.insert(
                    TOC_DIGEST_ANNOTATION.into(),
                    l.result.toc_digest.to_string(),
                );
            }
            if size {
                annotations.insert(
                    UNCOMPRESSED_SIZE_ANNOTATION.into(),
                    l.result.uncompressed_size.to_string(),
                );
            }
            Descriptor {
                media_type: OCI_LAYER_GZIP.into(),
                digest: l.result.blob_digest.to_string(),
                size: l.result.blob_size,
                annotations,
                platform: None,
            }
        })
        .collect();
    let diff_ids = diff_ids.unwrap_or_else(|| {
        layers
            .iter()
            .map(|l| l.result.diff_id.to_string())
            .collect()
    });
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids}
    }))
    .unwrap();
    Image {
        reference: Reference::parse(REF).unwrap(),
        requested: Reference::parse(REF).unwrap(),
        manifest: Manifest {
            schema_version: 2,
            media_type: OCI_MANIFEST.into(),
            config: Descriptor {
                media_type: OCI_CONFIG.into(),
                digest: estargz_core::digest::sha256_digest(&config),
                size: config.len() as u64,
                annotations: BTreeMap::new(),
                platform: None,
            },
            layers: descs,
            annotations: BTreeMap::new(),
        },
        manifest_digest: String::new(),
        config: Some(config),
    }
}

#[derive(Default)]
struct Fake {
    images: HashMap<String, Image>,
    blobs: HashMap<String, Arc<Vec<u8>>>,
    down: AtomicBool,
    /// References whose fetch hangs this long, then times out.
    stalled: HashMap<String, Duration>,
    image_fetches: AtomicUsize,
    layer_opens: AtomicUsize,
    /// A layer index whose next open fails.
    failing_once: std::sync::Mutex<Option<usize>>,
    /// How long a config fetch takes, and the layer opens begun before it
    /// was in (counted by whether it has ended, not begun: the fetch runs
    /// on its own thread, which a loaded machine may start late).
    config_delay: Duration,
    opens_during_config: AtomicUsize,
    config_fetched: AtomicBool,
}

impl ImageSource for Fake {
    fn config(&self, image: &Image) -> Result<Vec<u8>> {
        std::thread::sleep(self.config_delay);
        self.config_fetched.store(true, Ordering::SeqCst);
        image
            .config
            .clone()
            .ok_or_else(|| Error::NotFound(format!("config of {}", image.reference)))
    }

    fn manifest(&self, r: &Reference) -> Result<Image> {
        self.image_fetches.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            return Err(Error::Network("connection refused".into()));
        }
        if let Some(&stall) = self.stalled.get(&r.to_string()) {
            std::thread::sleep(stall);
            return Err(Error::Timeout(format!("manifest {r}: no answer")));
        }
        self.images
            .get(&r.to_string())
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("manifest {r}")))
    }

    fn layer(&self, image: &Image, index: usize, verify_toc: bool) -> Result<OpenedLayer> {
        self.layer_opens.fetch_add(1, Ordering::SeqCst);
        if !self.config_fetched.load(Ordering::SeqCst) {
            self.opens_during_config.fetch_add(1, Ordering::SeqCst);
        }
        if self.down.load(Ordering::SeqCst) {
            return Err(Error::Network("connection refused".into()));
        }
        let mut failing = self.failing_once.lock().unwrap();
        if *failing == Some(index) {
            *failing = None;
            return Err(Error::Network("connection reset".into()));
        }
        drop(failing);
        let d = &image.manifest.layers[index];
        if verify_toc && d.toc_digest().is_none() {
            return Err(Error::InvalidArgument("no TOC annotation".into()));
        }
        let blob = self.blobs[&d.digest].clone();
        let opts = OpenOptions::default().expected_toc_digest(
            d.toc_digest()
                .map(|t| t.parse().unwrap())
                .filter(|_| verify_toc),
        );
        let reader = Reader::open(blob.clone(), &opts)?;
        Ok(OpenedLayer {
            reader: Arc::new(reader),
            blob,
        })
    }
}

fn fake(img: Image, layers: &[&Layer]) -> Arc<Fake> {
    fake_from(Fake::default(), img, layers)
}

/// [`fake`] with `f`'s settings.
fn fake_from(mut f: Fake, img: Image, layers: &[&Layer]) -> Arc<Fake> {
    for l in layers {
        f.blobs
            .insert(l.result.blob_digest.to_string(), l.blob.clone());
    }
    f.images.insert(REF.into(), img);
    Arc::new(f)
}

fn store(source: Arc<Fake>) -> Store {
    Store::new(
        Resolver::new(source, ResolverOptions::default()),
        StoreOptions::default(),
    )
}

/// Looks up a path from the root, one component at a time.
fn walk(s: &Store, path: &[&str]) -> FsResult<Attr> {
    let mut attr = s.getattr(ROOT_INO)?;
    for name in path {
        attr = s.lookup(attr.ino, name)?;
    }
    Ok(attr)
}

fn ref_dir() -> String {
    names::ref_dir_name(REF)
}

fn read_all(s: &Store, ino: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let chunk = s.read(ino, out.len() as u64, 7).unwrap();
        if chunk.is_empty() {
            return out;
        }
        out.extend(chunk);
    }
}

#[test]
fn toc_digest_keying_serves_diff_info_and_blob() {
    let a = layer(&[("etc/hello", b"hello from a\n")]);
    let b = layer(&[("bin/tool", b"#!/bin/sh\necho b\n")]);
    let src = fake(
        image(&[&a, &b], &[(true, true), (true, true)], None),
        &[&a, &b],
    );
    let s = store(src.clone());
    let r = ref_dir();
    let toc = &b.result.toc_digest.to_string();

    let file = walk(&s, &[&r, toc, "diff", "bin", "tool"]).unwrap();
    assert_eq!(file.kind, Kind::RegularFile);
    assert_eq!(read_all(&s, file.ino), b"#!/bin/sh\necho b\n");
    assert!(file.ino >> 32 >= 1, "layer inodes carry the slot");

    let info = walk(&s, &[&r, toc, "info"]).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&read_all(&s, info.ino)).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "toc-digest": toc, "diff-size": -1, "compression": 2,
            "flags": {"expected-layer-diffid": b.result.diff_id}
        })
    );
    assert_eq!(info.size, read_all(&s, info.ino).len() as u64);

    let blob = walk(&s, &[&r, toc, "blob"]).unwrap();
    assert_eq!(blob.size, b.result.blob_size);
    assert_eq!(read_all(&s, blob.ino), *b.blob);
    // The image was fetched once (the layer below is being opened ahead).
    assert_eq!(s.resolver().opened_ahead(), 1);
    assert_eq!(src.image_fetches.load(Ordering::SeqCst), 1);

    let layer_dir = walk(&s, &[&r, toc]).unwrap();
    let names: Vec<String> = s
        .readdir(layer_dir.ino)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["blob", "diff", "info"]);
    assert_eq!(
        s.lookup(layer_dir.ino, "use").unwrap_err().errno(),
        Errno(libc::ENOENT)
    );
    let diff = walk(&s, &[&r, toc, "diff"]).unwrap();
    assert_eq!(s.parent(diff.ino).unwrap(), layer_dir.ino);

    // Directory walks, resumed at every offset, give the dot entries and
    // then exactly what readdir and lookup report.
    let listing = s.readdir(diff.ino).unwrap();
    assert!(!listing.is_empty());
    let mut walked = Vec::new();
    let mut offset = 0;
    loop {
        let mut got = None;
        s.walk_dir(diff.ino, offset, |w| {
            got = Some((w.ino, w.next, w.name.to_string_lossy().into_owned()));
            Ok(true) // one entry per call, as a tiny reply buffer would
        })
        .unwrap();
        let Some((ino, next, name)) = got else { break };
        walked.push((ino, name));
        offset = next;
    }
    assert_eq!(walked[0], (diff.ino, ".".to_string()));
    assert_eq!(walked[1], (layer_dir.ino, "..".to_string()));
    for (e, (ino, name)) in listing.iter().zip(&walked[2..]) {
        assert_eq!((e.ino, &e.name), (*ino, name));
        assert_eq!(s.lookup(diff.ino, name).unwrap().ino, *ino);
    }
    assert_eq!(walked.len(), listing.len() + 2);
}

#[test]
fn layer_digest_keying_reports_v1_fields() {
    let a = layer(&[("a", b"aaaa")]);
    let src = fake(image(&[&a], &[(true, true)], None), &[&a]);
    let s = store(src);
    let info = walk(&s, &[&ref_dir(), &a.result.blob_digest.to_string(), "info"]).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&read_all(&s, info.ino)).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "compressed-diff-digest": a.result.blob_digest,
            "compressed-size": a.result.blob_size,
            "diff-digest": a.result.diff_id,
            "diff-size": a.result.uncompressed_size,
            "compression": 2
        })
    );
}

#[test]
fn missing_size_annotation_is_measured_and_checked() {
    let a = layer(&[("a", b"measure me"), ("b", &[7u8; 70_000])]);
    let src = fake(image(&[&a], &[(true, false)], None), &[&a]);
    let s = store(src);
    let info = walk(&s, &[&ref_dir(), &a.result.blob_digest.to_string(), "info"]).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&read_all(&s, info.ino)).unwrap();
    assert_eq!(json["diff-size"], a.result.uncompressed_size);

    // A config whose DiffID does not match the blob: no size is made up.
    let wrong = vec![format!("sha256:{}", "1".repeat(64))];
    let src = fake(image(&[&a], &[(true, false)], Some(wrong)), &[&a]);
    let s = store(src);
    let e = walk(&s, &[&ref_dir(), &a.result.blob_digest.to_string(), "info"]).unwrap_err();
    assert_eq!(e.errno(), Errno(libc::EIO));
}

#[test]
fn unknown_and_malformed_names() {
    let a = layer(&[("a", b"x")]);
    let src = fake(image(&[&a], &[(true, true)], None), &[&a]);
    let s = store(src);
    let other = format!("sha256:{}", "2".repeat(64));
    assert_eq!(
        walk(&s, &[&ref_dir(), &other, "diff"]).unwrap_err().errno(),
        Errno(libc::ENOENT)
    );
    assert_eq!(
        walk(&s, &[&ref_dir(), "sha256:zz"]).unwrap_err().errno(),
        Errno(libc::EINVAL)
    );
    assert_eq!(
        walk(&s, &["not base64!"]).unwrap_err().errno(),
        Errno(libc::EINVAL)
    );
    // A malformed name is logged at debug level, with the parse error.
    let e = walk(&s, &["not base64!"]).unwrap_err();
    assert_eq!(e.level(), log::Level::Debug);
    assert!(std::error::Error::source(&e).is_some(), "{e}");
    // An unknown name is an ordinary answer: trace level only.
    let dir = walk(&s, &[&ref_dir(), &a.result.toc_digest.to_string()]).unwrap();
    assert_eq!(
        s.lookup(dir.ino, "nope").unwrap_err().level(),
        log::Level::Trace
    );
    // An unknown image is not found either.
    let unknown = names::ref_dir_name("127.0.0.1:5000/nope:v1");
    assert_eq!(
        walk(&s, &[&unknown, &a.result.toc_digest.to_string(), "diff"])
            .unwrap_err()
            .errno(),
        Errno(libc::ENOENT)
    );
    let dir = walk(&s, &[&ref_dir(), &a.result.toc_digest.to_string()]).unwrap();
    assert_eq!(
        s.lookup(dir.ino, "other").unwrap_err().errno(),
        Errno(libc::ENOENT)
    );
}

#[test]
fn layers_without_toc_annotation() {
    let a = layer(&[("a", b"plain")]);
    let b = layer(&[("b", b"other")]);
    let src = fake(
        image(&[&a, &b], &[(false, true), (false, true)], None),
        &[&a, &b],
    );
    let s = store(src.clone());
    // By layer digest the TOC would not be anchored: not served.
    assert_eq!(
        walk(&s, &[&ref_dir(), &a.result.blob_digest.to_string(), "diff"])
            .unwrap_err()
            .errno(),
        Errno(libc::ENOENT)
    );
    // By TOC digest the path anchors it: found among all layers opened.
    let f = walk(
        &s,
        &[&ref_dir(), &b.result.toc_digest.to_string(), "diff", "b"],
    )
    .unwrap();
    assert_eq!(read_all(&s, f.ino), b"other");
    assert_eq!(src.layer_opens.load(Ordering::SeqCst), 2);
}

#[test]
fn failures_are_not_remembered() {
    let a = layer(&[("a", b"x")]);
    let src = fake(image(&[&a], &[(true, true)], None), &[&a]);
    let s = store(src.clone());
    src.down.store(true, Ordering::SeqCst);
    let path = [
        ref_dir(),
        a.result.toc_digest.to_string(),
        "diff".into(),
        "a".into(),
    ];
    let path: Vec<&str> = path.iter().map(String::as_str).collect();
    assert_eq!(walk(&s, &path).unwrap_err().errno(), Errno(libc::EIO));
    assert_eq!(s.resolver().cached_images(), 1, "the cell exists, empty");
    src.down.store(false, Ordering::SeqCst);
    let f = walk(&s, &path).unwrap();
    assert_eq!(read_all(&s, f.ino), b"x");
}

#[test]
fn use_and_release_count_and_unload() {
    let a = layer(&[("a", b"x")]);
    let src = fake(image(&[&a], &[(true, true)], None), &[&a]);
    let s = store(src.clone());
    let r = walk(&s, &[&ref_dir()]).unwrap();
    let dir = walk(&s, &[&ref_dir(), &a.result.toc_digest.to_string()]).unwrap();
    let file = walk(
        &s,
        &[&ref_dir(), &a.result.toc_digest.to_string(), "diff", "a"],
    )
    .unwrap();
    assert_eq!(s.create(dir.ino, "use").errno(), Errno(libc::ENOENT));
    assert_eq!(s.create(dir.ino, "use").errno(), Errno(libc::ENOENT));
    assert_eq!(s.create(dir.ino, "other").errno(), Errno(libc::EROFS));
    assert_eq!(s.stats().uses, 2);
    assert_eq!(
        s.rmdir(r.ino, &a.result.toc_digest.to_string()).errno(),
        Errno(libc::ENOENT)
    );
    assert_eq!(s.stats().loaded, 1, "one user left");
    assert_eq!(
        s.rmdir(r.ino, &a.result.toc_digest.to_string()).errno(),
        Errno(libc::ENOENT)
    );
    assert_eq!(s.stats().uses, 0);
    assert_eq!(s.stats().loaded, 0, "the last release unloads");
    // Extra releases do not underflow.
    assert_eq!(
        s.rmdir(r.ino, &a.result.toc_digest.to_string()).errno(),
        Errno(libc::ENOENT)
    );
    assert_eq!(s.stats().uses, 0);

    // The kernel's old inode still works: resolved again, same number.
    let opens = src.layer_opens.load(Ordering::SeqCst);
    assert_eq!(read_all(&s, file.ino), b"x");
    assert_eq!(src.layer_opens.load(Ordering::SeqCst), opens + 1);
    let again = walk(
        &s,
        &[&ref_dir(), &a.result.toc_digest.to_string(), "diff", "a"],
    )
    .unwrap();
    assert_eq!(again.ino, file.ino);
}

#[test]
fn forgotten_layers_and_idle_layers_go_away() {
    let a = layer(&[("a", b"x")]);
    let src = fake(image(&[&a], &[(true, true)], None), &[&a]);
    let s = Store::new(
        Resolver::new(
            src.clone(),
            ResolverOptions::default()
                .image_ttl(Duration::ZERO)
                .max_images(1),
        ),
        StoreOptions {
            idle_unload: Duration::ZERO,
            ..Default::default()
        },
    );
    let r = walk(&s, &[&ref_dir()]).unwrap();
    let dir = s.lookup(r.ino, &a.result.toc_digest.to_string()).unwrap();
    let diff = s.lookup(dir.ino, "diff").unwrap();
    assert_eq!(s.stats().loaded, 1);
    // Looked up but never used: unloaded by the reaper.
    s.reap();
    assert_eq!(s.stats().loaded, 0);
    assert_eq!(s.resolver().cached_images(), 0, "expired image dropped");
    // Each reload fetches the image again (TTL zero).
    let fetches = src.image_fetches.load(Ordering::SeqCst);
    s.getattr(diff.ino).unwrap();
    assert_eq!(src.image_fetches.load(Ordering::SeqCst), fetches + 1);
    // A used layer survives the reaper.
    s.create(dir.ino, "use");
    s.reap();
    assert_eq!(s.stats().loaded, 1);
    s.rmdir(r.ino, &a.result.toc_digest.to_string());
    // Once the kernel forgets every inode, nothing is left.
    s.forget(dir.ino, 1);
    s.forget(diff.ino, 1);
    s.forget(r.ino, 1);
    assert_eq!(s.stats(), StoreStats::default());
    assert_eq!(s.getattr(dir.ino).unwrap_err().errno(), Errno(libc::ENOENT));
}

#[test]
fn image_cache_is_bounded_and_shared() {
    let a = layer(&[("a", b"x")]);
    let b = layer(&[("b", b"y")]);
    let img = image(&[&a, &b], &[(true, true), (true, true)], None);
    let mut f = Fake::default();
    for l in [&a, &b] {
        f.blobs
            .insert(l.result.blob_digest.to_string(), l.blob.clone());
    }
    for i in 0..5 {
        let name = format!("127.0.0.1:5000/app/img{i}:v1");
        let mut img = img.clone();
        img.reference = Reference::parse(&name).unwrap();
        f.images.insert(name, img);
    }
    let src = Arc::new(f);
    let s = Store::new(
        Resolver::new(
            src.clone(),
            ResolverOptions::default()
                .image_ttl(Duration::from_secs(600))
                .max_images(2),
        ),
        StoreOptions::default(),
    );
    // Both layers of one image in parallel: one image fetch.
    let r = names::ref_dir_name("127.0.0.1:5000/app/img0:v1");
    std::thread::scope(|sc| {
        for l in [&a, &b] {
            let (s, r) = (&s, &r);
            sc.spawn(move || walk(s, &[r, &l.result.toc_digest.to_string(), "diff"]).unwrap());
        }
    });
    assert_eq!(src.image_fetches.load(Ordering::SeqCst), 1);
    for i in 1..5 {
        let r = names::ref_dir_name(&format!("127.0.0.1:5000/app/img{i}:v1"));
        walk(&s, &[&r, &a.result.toc_digest.to_string(), "info"]).unwrap();
    }
    assert_eq!(s.resolver().cached_images(), 2);
}

#[test]
fn a_stuck_registry_never_holds_up_other_images_or_resolved_layers() {
    let a = layer(&[("a", b"healthy a")]);
    let b = layer(&[("b", b"healthy b")]);
    let img = image(&[&a, &b], &[(true, true), (true, true)], None);
    let mut f = Fake::default();
    for l in [&a, &b] {
        f.blobs
            .insert(l.result.blob_digest.to_string(), l.blob.clone());
    }
    f.images.insert(REF.into(), img.clone());
    let stuck: Vec<String> = (0..5)
        .map(|i| format!("127.0.0.1:5001/stuck/img{i}:v1"))
        .collect();
    for name in &stuck {
        f.stalled.insert(name.clone(), Duration::from_secs(4));
        let mut img = img.clone();
        img.reference = Reference::parse(name).unwrap();
        f.images.insert(name.clone(), img);
    }
    let src = Arc::new(f);
    let timeout = Duration::from_millis(600);
    let s = Store::new(
        Resolver::new(src.clone(), ResolverOptions::default()),
        StoreOptions {
            resolve_timeout: timeout,
            ..Default::default()
        },
    );
    let healthy_a = walk(
        &s,
        &[&ref_dir(), &a.result.toc_digest.to_string(), "diff", "a"],
    )
    .unwrap();
    let t = std::time::Instant::now();
    std::thread::scope(|sc| {
        // 20 lookups: two for each layer of each stuck image.
        let stuck_lookups: Vec<_> = (0..20)
            .map(|i| {
                let (s, name) = (&s, &stuck[i % 5]);
                let layer = if i % 10 < 5 { &a } else { &b };
                sc.spawn(move || {
                    let t = std::time::Instant::now();
                    let r = names::ref_dir_name(name);
                    let got = walk(s, &[&r, &layer.result.toc_digest.to_string(), "diff"]);
                    (got.map(|_| ()).errno(), t.elapsed())
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(100));
        // Meanwhile: a resolved layer reads, a healthy one resolves.
        let t = std::time::Instant::now();
        assert_eq!(read_all(&s, healthy_a.ino), b"healthy a");
        let f = walk(
            &s,
            &[&ref_dir(), &b.result.toc_digest.to_string(), "diff", "b"],
        )
        .unwrap();
        assert_eq!(read_all(&s, f.ino), b"healthy b");
        assert!(
            t.elapsed() < Duration::from_millis(300),
            "{:?}",
            t.elapsed()
        );
        for h in stuck_lookups {
            let (got, took) = h.join().unwrap();
            assert_eq!(got, Err(Errno(libc::EIO)));
            assert!(
                took >= timeout - Duration::from_millis(100) && took < timeout * 2,
                "{took:?}"
            );
        }
    });
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    // One fetch per image however many waited: healthy + 5 stuck.
    assert_eq!(src.image_fetches.load(Ordering::SeqCst), 6);
    // While those resolutions still hang, a new request for one of them
    // fails at once: its deadline counts from the start of the resolution.
    let t = std::time::Instant::now();
    let r = names::ref_dir_name(&stuck[0]);
    assert_eq!(
        walk(&s, &[&r, &a.result.toc_digest.to_string(), "diff"])
            .unwrap_err()
            .errno(),
        Errno(libc::EIO)
    );
    assert!(
        t.elapsed() < Duration::from_millis(100),
        "{:?}",
        t.elapsed()
    );
    // The adapter logs such a request as a warning naming the layer.
    let e = walk(&s, &[&r, &a.result.toc_digest.to_string(), "diff"]).unwrap_err();
    assert_eq!(e.level(), log::Level::Warn, "{e}");
    assert!(
        e.message()
            .starts_with(&format!("layer {} of ", a.result.toc_digest)),
        "{e}"
    );
    assert!(e.message().contains("not resolved within"), "{e}");
}

#[test]
fn waiters_of_one_image_fetch_share_its_failure() {
    let a = layer(&[("a", b"x")]);
    let b = layer(&[("b", b"y")]);
    let mut f = Fake::default();
    f.images.insert(
        REF.into(),
        image(&[&a, &b], &[(true, true), (true, true)], None),
    );
    f.stalled.insert(REF.into(), Duration::from_millis(300));
    let src = Arc::new(f);
    let resolver = Resolver::new(src.clone(), ResolverOptions::default());
    let reference = Reference::parse(REF).unwrap();
    std::thread::scope(|sc| {
        let hs: Vec<_> = (0..8)
            .map(|_| sc.spawn(|| resolver.image(&reference).map(|_| ())))
            .collect();
        for h in hs {
            assert!(matches!(h.join().unwrap(), Err(Error::Timeout(_))));
        }
    });
    assert_eq!(src.image_fetches.load(Ordering::SeqCst), 1);
    // Not remembered: the next call fetches again.
    assert!(resolver.image(&reference).is_err());
    assert_eq!(src.image_fetches.load(Ordering::SeqCst), 2);
}

#[test]
fn resolved_layers_are_warmed_in_the_background() {
    use crate::warm::WarmOptions;
    let big: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let a = layer(&[("big", &big), ("small", b"s")]);
    let src = fake(image(&[&a], &[(true, true)], None), &[&a]);
    let s = Store::new(
        Resolver::new(src.clone(), ResolverOptions::default()),
        StoreOptions {
            warm: WarmOptions {
                prefetch: true,
                background: true,
                cache_budget: 1 << 30,
                // No wait for other tests' reads to quiet down.
                silence: Duration::ZERO,
                ..WarmOptions::default()
            },
            ..Default::default()
        },
    );
    let f = walk(
        &s,
        &[&ref_dir(), &a.result.toc_digest.to_string(), "diff", "big"],
    )
    .unwrap();
    let Ino::Diff(slot, _) = Ino::decode(f.ino) else {
        panic!("not a layer inode")
    };
    let layer = s.layer(slot).unwrap();
    let reader = layer.fs.reader().clone();
    let chunks: Vec<_> = reader
        .index()
        .all_chunks()
        .filter_map(|(_, c)| c.digest)
        .collect();
    assert!(!chunks.is_empty());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !chunks.iter().all(|d| reader.cache().contains(d)) {
        assert!(std::time::Instant::now() < deadline, "not warmed in 20 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn once_every_layer_is_served_the_image_command_is_prefetched() {
    use crate::test_layers::cached;
    use crate::warm::WarmOptions;
    let filler = |seed: u32| -> Vec<u8> {
        (0..200_000u32)
            .map(|i| (i.wrapping_mul(2654435761) ^ seed) as u8)
            .collect()
    };
    let (doc1, doc2) = (filler(1), filler(2));
    let base = layer(&[
        ("etc/passwd", b"root:x:0:0::/root:/bin/sh\n"),
        ("etc/group", b"root:x:0:\n"),
        ("usr/share/doc/base", &doc1),
    ]);
    let app = layer(&[
        ("usr/bin/app", b"#!/usr/bin/app-interpreter\n"),
        ("usr/bin/app-interpreter", b"not a program"),
        ("usr/share/doc/app", &doc2),
    ]);
    let mut img = image(&[&base, &app], &[(true, true), (true, true)], None);
    let mut config: serde_json::Value =
        serde_json::from_slice(img.config.as_ref().unwrap()).unwrap();
    config["config"] = serde_json::json!({"Cmd": ["app", "--serve"]});
    img.config = Some(serde_json::to_vec(&config).unwrap());
    let src = fake(img, &[&base, &app]);
    let s = Store::new(
        Resolver::new(src, ResolverOptions::default().open_ahead(0)),
        StoreOptions {
            warm: WarmOptions {
                prefetch: true,
                cache_budget: 1 << 30,
                ..WarmOptions::default()
            },
            ..Default::default()
        },
    );
    let reader_of = |l: &Layer| {
        let diff = walk(&s, &[&ref_dir(), &l.result.toc_digest.to_string(), "diff"]).unwrap();
        let Ino::Diff(slot, _) = Ino::decode(diff.ino) else {
            panic!("not a layer inode")
        };
        s.layer(slot).unwrap().fs.reader().clone()
    };
    let app_reader = reader_of(&app);
    // One layer of two: the command may be in the other, nothing starts.
    std::thread::sleep(Duration::from_millis(300));
    assert!(!cached(&app_reader, "usr/bin/app"));
    let base_reader = reader_of(&base);
    let wanted = [
        (&app_reader, "usr/bin/app"),
        (&app_reader, "usr/bin/app-interpreter"),
        (&base_reader, "etc/passwd"),
        (&base_reader, "etc/group"),
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !wanted.iter().all(|(r, p)| cached(r, p)) {
        assert!(
            std::time::Instant::now() < deadline,
            "not prefetched in 20 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Only those: no background fetch here.
    assert!(!cached(&base_reader, "usr/share/doc/base"));
    assert!(!cached(&app_reader, "usr/share/doc/app"));
}

/// `n` layers, layer `i` holding one file `f` that says "layer i".
fn numbered_layers(n: usize) -> Vec<Layer> {
    (0..n)
        .map(|i| layer(&[("f", format!("layer {i}\n").as_bytes())]))
        .collect()
}

/// Reads `f` of the numbered layer `i` (blob `digest`) through the store.
fn check_numbered(s: &Store, digest: &str, i: usize) {
    let f = walk(s, &[&ref_dir(), digest, "diff", "f"]).unwrap();
    assert_eq!(read_all(s, f.ino), format!("layer {i}\n").as_bytes());
}

#[test]
fn the_next_layers_are_opened_while_the_first_is_asked_for() {
    let layers = numbered_layers(4);
    let refs: Vec<&Layer> = layers.iter().collect();
    // Layer 3 has no TOC annotation: never opened ahead.
    let img = image(
        &refs,
        &[(true, true), (true, true), (true, true), (false, true)],
        None,
    );
    let src = fake(img, &refs);
    *src.failing_once.lock().unwrap() = Some(2);
    let s = store(src.clone());
    let digest = |i: usize| layers[i].result.blob_digest.to_string();

    check_numbered(&s, &digest(0), 0);
    assert_eq!(s.resolver().opened_ahead(), 2, "layers 1 and 2, not 3");
    // Layer 1 comes from its open ahead; layer 2's failed, so it is opened
    // again (failures are not remembered).
    for i in 1..3 {
        check_numbered(&s, &digest(i), i);
    }
    assert_eq!(src.layer_opens.load(Ordering::SeqCst), 4);
    assert_eq!(s.resolver().opened_ahead(), 0);
}

#[test]
fn the_top_layer_asked_first_opens_the_ones_below_and_none_twice() {
    let layers = numbered_layers(3);
    let refs: Vec<&Layer> = layers.iter().collect();
    let src = fake(image(&refs, &[(true, true); 3], None), &refs);
    let s = store(src.clone());
    let digest = |i: usize| layers[i].result.blob_digest.to_string();

    // Podman asks for the top layer first as often as for the bottom one.
    check_numbered(&s, &digest(2), 2);
    assert_eq!(s.resolver().opened_ahead(), 2, "layers 1 and 0");
    for i in [1, 0] {
        check_numbered(&s, &digest(i), i);
    }
    assert_eq!(
        src.layer_opens.load(Ordering::SeqCst),
        3,
        "asking for layer 1 did not open the claimed layer 2 ahead again"
    );
}

#[test]
fn layers_are_opened_while_the_config_is_fetched() {
    let layers = numbered_layers(2);
    let refs: Vec<&Layer> = layers.iter().collect();
    let slow_config = Fake {
        config_delay: Duration::from_millis(500),
        ..Default::default()
    };
    let src = fake_from(slow_config, image(&refs, &[(true, true); 2], None), &refs);
    let s = store(src.clone());
    check_numbered(&s, &layers[0].result.blob_digest.to_string(), 0);
    // The asked-for layer and the one opened ahead, both before the
    // config was in (the info file needs the config, the open does not).
    assert_eq!(src.opens_during_config.load(Ordering::SeqCst), 2);
    assert_eq!(src.image_fetches.load(Ordering::SeqCst), 1);
}

#[test]
fn layers_opened_ahead_and_never_asked_for_expire() {
    let a = layer(&[("a", b"x")]);
    let b = layer(&[("b", b"y")]);
    let src = fake(
        image(&[&a, &b], &[(true, true), (true, true)], None),
        &[&a, &b],
    );
    let s = Store::new(
        Resolver::new(
            src.clone(),
            ResolverOptions::default().open_ahead_ttl(Duration::ZERO),
        ),
        StoreOptions::default(),
    );
    walk(
        &s,
        &[&ref_dir(), &a.result.blob_digest.to_string(), "diff", "a"],
    )
    .unwrap();
    s.reap();
    assert_eq!(s.resolver().opened_ahead(), 0);
    // Switched off: nothing opened ahead.
    let s = Store::new(
        Resolver::new(src.clone(), ResolverOptions::default().open_ahead(0)),
        StoreOptions::default(),
    );
    walk(
        &s,
        &[&ref_dir(), &a.result.blob_digest.to_string(), "diff", "a"],
    )
    .unwrap();
    assert_eq!(s.resolver().opened_ahead(), 0);
}

#[test]
fn root_and_reference_listings() {
    let a = layer(&[("a", b"x")]);
    let src = fake(image(&[&a], &[(true, true)], None), &[&a]);
    let s = store(src);
    walk(&s, &[&ref_dir(), &a.result.toc_digest.to_string()]).unwrap();
    let root: Vec<String> = s
        .readdir(ROOT_INO)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(root, [ref_dir()]);
    let r = walk(&s, &[&ref_dir()]).unwrap();
    let layers: Vec<String> = s
        .readdir(r.ino)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(
        layers,
        std::slice::from_ref(&a.result.toc_digest.to_string())
    );
    assert!(s.read(r.ino, 0, 10).is_err());
}

#[test]
fn inode_numbers_round_trip() {
    for ino in [
        Ino::Root,
        Ino::RefDir(2),
        Ino::LayerDir(3),
        Ino::Info(3),
        Ino::Blob(3),
        Ino::Diff(3, 1),
        Ino::Diff(u32::MAX as u64, 12345),
    ] {
        assert_eq!(Ino::decode(ino.encode()), ino);
    }
}
