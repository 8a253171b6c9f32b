//! Layers served by `estargz-fuse store` and `mount` from a real
//! docker-registry through the fault proxy (root and /dev/fuse needed; the
//! tests say so and pass without them elsewhere, but fail under
//! ESTARGZ_REQUIRE_FUSE):
//! * a resolved layer is prefetched and then fetched whole in the
//!   background, so later reads make no request;
//! * a registry that never answers costs its own lookups an EIO within the
//!   timeout, while other images resolve and resolved layers read at once.

mod util;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use base64::Engine as _;
use estargz_core::remote::{HttpOptions, Reference, Registry};
use estargz_tests::faultproxy::FaultProxy;
use estargz_tests::registry::TestRegistry;
use util::*;

/// A running `estargz-fuse` (store or mount), stopped when dropped.
struct Fuse {
    child: Option<Child>,
    mountpoint: PathBuf,
    log: PathBuf,
}

impl Fuse {
    fn start(args: &[&str], mountpoint: &Path) -> Fuse {
        fs::create_dir_all(mountpoint).unwrap();
        let log = mountpoint.with_extension("log");
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
        Fuse {
            child: Some(start_fuse_process(&args, mountpoint, &log)),
            mountpoint: mountpoint.to_path_buf(),
            log,
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (`limit`) for a log line containing `needle`.
    fn wait_for_line(&self, needle: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the log within {limit:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            let status = stop_fuse_process(child, &self.mountpoint, &self.log);
            assert!(status.success(), "{status}:\n{}", self.log());
        }
    }
}

impl Drop for Fuse {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            stop_fuse_process(child, &self.mountpoint, &self.log);
        }
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.mountpoint)
            .stderr(Stdio::null())
            .status();
    }
}

/// Files of a directory tree: relative path → content.
fn files(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let meta = fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() {
                stack.push(p);
            } else if meta.is_file() {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.push((rel, fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// A layer of 60 files in 6 directories (1 KiB to ~250 KiB, incompressible),
/// two of them prioritized (before `.prefetch.landmark`); returns the tree
/// and the eStargz blob.
fn make_layer(work: &Path) -> (PathBuf, PathBuf) {
    let tree = work.join("tree");
    for i in 0..60usize {
        let p = tree.join(format!("dir{}/file{i}", i % 6));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, noise(1024 + i * i * 70, i as u64 + 1)).unwrap();
    }
    let prioritized = work.join("prioritized");
    fs::write(&prioritized, "dir0/file0\ndir1/file1\n").unwrap();
    let blob = work.join("layer.esgz");
    run(Command::new(estargz_bin())
        .arg("convert")
        .arg("--prioritized-files")
        .arg(&prioritized)
        .arg(&tree)
        .arg(&blob));
    (tree, blob)
}

fn push(reference: &str, blob: &Path) {
    let out = run(Command::new(estargz_bin())
        .args(["push", "--plain-http", reference])
        .arg(blob));
    assert!(out.contains("@sha256:"), "{out}");
}

/// The TOC digest annotation of the only layer of `reference`.
fn toc_digest(reference: &str) -> String {
    let client = Registry::new(
        HttpOptions::default()
            .plain_http(true)
            .auth_files(Vec::new()),
    );
    let img = client
        .resolve_image(&Reference::parse(reference).unwrap(), None)
        .unwrap();
    img.manifest.layers[0].toc_digest().unwrap().to_string()
}

fn layer_dir(store: &Path, reference: &str, digest: &str) -> PathBuf {
    store
        .join(base64::engine::general_purpose::STANDARD.encode(reference))
        .join(digest)
}

/// Every file of `tree` reads back identically under `dir`.
fn assert_same_files(tree: &Path, dir: &Path) {
    let want = files(tree);
    assert_eq!(want.len(), 60);
    for (rel, data) in &want {
        let got = fs::read(dir.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert!(&got == data, "{rel} differs");
    }
}

#[test]
fn resolved_layers_are_fetched_in_the_background_by_store_and_mount() {
    if !fuse_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let (tree, blob) = make_layer(work);
    let reg = TestRegistry::start(None);
    let proxy = FaultProxy::start(reg.addr(), None).unwrap();
    let reference = format!("{}/warm/img:v1", proxy.addr());
    push(&reference, &blob);
    let toc = toc_digest(&reference);
    let blob_size = fs::metadata(&blob).unwrap().len();

    // Store: resolving the layer (one stat, no file read) fetches it all.
    let mnt = work.join("store");
    let mut store = Fuse::start(&["store", mnt.to_str().unwrap(), "--plain-http"], &mnt);
    let before = proxy.stats().bytes_down.load(Ordering::SeqCst);
    let diff = layer_dir(&mnt, &reference, &toc).join("diff");
    assert!(fs::metadata(&diff).unwrap().is_dir());
    store.wait_for_line("background fetch complete", Duration::from_secs(60));
    let log = store.log();
    assert!(log.contains("prefetched"), "no landmark prefetch:\n{log}");
    let fetched = proxy.stats().bytes_down.load(Ordering::SeqCst) - before;
    assert!(
        fetched >= blob_size * 9 / 10,
        "fetched {fetched} bytes of a {blob_size}-byte blob"
    );
    // Every read is now served from the cache: not one request.
    let requests = proxy.stats().requests.load(Ordering::SeqCst);
    assert_same_files(&tree, &diff);
    assert_eq!(proxy.stats().requests.load(Ordering::SeqCst), requests);
    store.stop();

    // Mount: the same by default.
    let mnt = work.join("mount");
    let source = format!("docker://{reference}");
    let before = proxy.stats().bytes_down.load(Ordering::SeqCst);
    let mut mount = Fuse::start(
        &["mount", &source, mnt.to_str().unwrap(), "--plain-http"],
        &mnt,
    );
    mount.wait_for_line("background fetch complete", Duration::from_secs(60));
    let fetched = proxy.stats().bytes_down.load(Ordering::SeqCst) - before;
    assert!(fetched >= blob_size * 9 / 10, "fetched {fetched} bytes");
    let requests = proxy.stats().requests.load(Ordering::SeqCst);
    assert_same_files(&tree, &mnt);
    assert_eq!(proxy.stats().requests.load(Ordering::SeqCst), requests);
    mount.stop();

    // Both off: opening the layer is all that is fetched.
    let requests = proxy.stats().requests.load(Ordering::SeqCst);
    let mut mount = Fuse::start(
        &[
            "mount",
            &source,
            mnt.to_str().unwrap(),
            "--plain-http",
            "--no-prefetch",
            "--no-background-fetch",
        ],
        &mnt,
    );
    std::thread::sleep(Duration::from_secs(1));
    let opened = proxy.stats().requests.load(Ordering::SeqCst) - requests;
    assert!(opened <= 5, "{opened} requests without prefetch");
    let log = mount.log();
    assert!(
        !log.contains("prefetched") && !log.contains("background fetch"),
        "{log}"
    );
    mount.stop();
}

#[test]
fn a_registry_that_never_answers_does_not_stall_the_store() {
    if !fuse_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let (tree, blob) = make_layer(work);
    let reg = TestRegistry::start(None);
    // Two ways to the same registry: a healthy one, and one that accepts
    // connections and never answers.
    let healthy = FaultProxy::start(reg.addr(), None).unwrap();
    let stalled = FaultProxy::start(reg.addr(), None).unwrap();
    stalled.set(|f| f.stall_next = u32::MAX);
    let image = format!("{}/warm/img:v1", healthy.addr());
    let other = format!("{}/warm/other:v1", healthy.addr());
    push(&image, &blob);
    push(&other, &blob);
    let toc = toc_digest(&image);

    // A short timeout and the default retries.
    let timeout = Duration::from_secs(3);
    let mnt = work.join("store");
    let mut store = Fuse::start(
        &[
            "store",
            mnt.to_str().unwrap(),
            "--plain-http",
            "--request-timeout",
            "3",
        ],
        &mnt,
    );
    let resolved = layer_dir(&mnt, &image, &toc).join("diff");
    assert_same_files(&tree, &resolved);

    // 24 lookups of 12 images behind the stalled proxy.
    let stuck: Vec<_> = (0..24)
        .map(|i| {
            let reference = format!("{}/warm/img:v{}", stalled.addr(), i % 12);
            let path = layer_dir(&mnt, &reference, &toc).join("diff");
            std::thread::spawn(move || {
                let t = Instant::now();
                let errno = fs::metadata(&path).err().and_then(|e| e.raw_os_error());
                (errno, t.elapsed())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // Meanwhile, reads of the resolved layer and a new healthy image.
    let t = Instant::now();
    for i in 0..6 {
        let rel = format!("dir{i}/file{}", i + 6);
        let want = noise(1024 + (i + 6) * (i + 6) * 70, (i + 7) as u64);
        assert!(fs::read(resolved.join(&rel)).unwrap() == want, "{rel}");
    }
    let read_time = t.elapsed();
    let t = Instant::now();
    let fresh = layer_dir(&mnt, &other, &toc).join("diff");
    assert!(fs::read(fresh.join("dir5/file59")).unwrap() == noise(1024 + 59 * 59 * 70, 60));
    let lookup_time = t.elapsed();
    let mut slowest = Duration::ZERO;
    for h in stuck {
        let (errno, took) = h.join().unwrap();
        assert_eq!(errno, Some(libc::EIO), "after {took:?}");
        slowest = slowest.max(took);
    }
    eprintln!(
        "resolved-layer reads {read_time:?}, healthy lookup {lookup_time:?}, \
         slowest stuck lookup {slowest:?}"
    );
    assert!(read_time < Duration::from_secs(2), "{read_time:?}");
    assert!(lookup_time < Duration::from_secs(2), "{lookup_time:?}");
    assert!(slowest < timeout + Duration::from_secs(2), "{slowest:?}");
    let log = store.log();
    assert!(log.contains("not resolved within"), "{log}");
    assert!(
        !log.lines()
            .any(|l| l.contains("ERROR") && l.contains("Failed to send FUSE reply")),
        "{log}"
    );
    assert!(!log.contains("[Not Implemented]"), "{log}");
    // Stopping is prompt although resolutions are still retrying.
    let t = Instant::now();
    store.stop();
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
}

#[test]
fn the_store_counts_what_it_fetched_for_prometheus() {
    if !fuse_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let (tree, blob) = make_layer(work);
    let reg = TestRegistry::start(None);
    let proxy = FaultProxy::start(reg.addr(), None).unwrap();
    let reference = format!("{}/metrics/img:v1", proxy.addr());
    push(&reference, &blob);
    let toc = toc_digest(&reference);
    let socket = work.join("metrics.sock");
    let mnt = work.join("store");
    // Nothing fetched ahead of reads, so every request is a read's.
    let mut store = Fuse::start(
        &[
            "store",
            mnt.to_str().unwrap(),
            "--plain-http",
            "--no-prefetch",
            "--no-background-fetch",
            "--metrics-address",
            socket.to_str().unwrap(),
        ],
        &mnt,
    );
    let stats = proxy.stats();
    let (requests0, bytes0) = (
        stats.requests.load(Ordering::SeqCst),
        stats.body_bytes_down.load(Ordering::SeqCst),
    );
    let diff = layer_dir(&mnt, &reference, &toc).join("diff");
    for name in ["dir3/file33", "dir5/file59", "dir0/file6"] {
        let want = fs::read(tree.join(name)).unwrap();
        assert!(fs::read(diff.join(name)).unwrap() == want, "{name} differs");
    }
    // The proxy counts a body's bytes as it sends them, the store as it
    // reads them: wait until both sides are still. (Response heads are
    // not the store's to count: ureq parses them.)
    let host = format!("{{host=\"{}\"}}", proxy.addr());
    let deadline = Instant::now() + Duration::from_secs(10);
    let (m, requests, bytes) = loop {
        let m = scrape(&socket);
        let requests = stats.requests.load(Ordering::SeqCst) - requests0;
        let bytes = stats.body_bytes_down.load(Ordering::SeqCst) - bytes0;
        let ours = (
            m[&format!("estargz_registry_requests_total{host}")] as u64,
            m[&format!("estargz_registry_response_bytes_total{host}")] as u64,
        );
        if ours == (requests, bytes) || Instant::now() > deadline {
            assert_eq!(ours, (requests, bytes), "{m:?}\n{}", store.log());
            break (m, requests, bytes);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("store metrics: {requests} requests, {bytes} bytes (the proxy saw the same)");
    // Manifest, config, footer + TOC, then the files' members.
    assert!(requests >= 4, "{requests}");
    assert!(
        bytes < fs::metadata(&blob).unwrap().len(),
        "not lazy: {bytes}"
    );
    assert_eq!(m["estargz_layers_total{result=\"ok\"}"], 1.0);
    assert_eq!(m["estargz_layers_total{result=\"failed\"}"], 0.0);
    assert!(m["estargz_cache_misses_total"] >= 3.0, "{m:?}");
    let fetches = m["estargz_fetch_duration_seconds_count"];
    assert!(fetches >= 2.0 && fetches <= requests as f64, "{m:?}");
    assert_eq!(
        m["estargz_fetch_duration_seconds_bucket{le=\"+Inf\"}"],
        fetches
    );
    assert!(
        m["estargz_fuse_requests_total{op=\"read\"}"] >= 3.0,
        "{m:?}"
    );
    assert!(
        m["estargz_fuse_requests_total{op=\"lookup\"}"] >= 3.0,
        "{m:?}"
    );
    assert_eq!(
        m["estargz_background_fetches_total{state=\"started\"}"],
        0.0
    );
    // An unknown layer: a failed lookup, counted as a FUSE error.
    let errors = m["estargz_fuse_errors_total{op=\"lookup\"}"];
    let missing = layer_dir(&mnt, &reference, &format!("sha256:{}", "0".repeat(64)));
    assert!(fs::metadata(missing.join("diff")).is_err());
    assert!(scrape(&socket)["estargz_fuse_errors_total{op=\"lookup\"}"] > errors);
    store.stop();
}
