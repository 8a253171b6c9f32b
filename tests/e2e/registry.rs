//! Lazy reading from a real registry (Debian's docker-registry on
//! 127.0.0.1), directly and through the fault-injecting proxy: every fault
//! ends in correct bytes (after retries) or a clear error in bounded time.

mod util;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use estargz_core::remote::{
    open_layer, HttpOptions, LayerOptions, Reference, Registry, RemoteLayer,
};
use estargz_core::{build, BuildInput, BuildOptions, Error, ErrorCode};
use estargz_tests::faultproxy::FaultProxy;
use estargz_tests::registry::TestRegistry;

/// A layer tree: a prioritized file, small files far apart in the blob,
/// and a big file across many chunks. Returns the blob path and contents.
fn make_blob(dir: &Path) -> (PathBuf, BTreeMap<String, Vec<u8>>) {
    let tree = dir.join("tree");
    let mut files = BTreeMap::new();
    files.insert("a.txt".to_string(), b"prioritized file\n".to_vec());
    files.insert("b.txt".to_string(), b"bee\n".repeat(100));
    files.insert("big.bin".to_string(), util::noise(6 << 20, 7));
    files.insert("c.txt".to_string(), b"sea\n".repeat(50));
    files.insert("d/e.bin".to_string(), util::noise(300 << 10, 9));
    for (name, data) in &files {
        let p = tree.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }
    let blob = dir.join("layer.esgz");
    let mut out = std::fs::File::create(&blob).unwrap();
    let opts = BuildOptions::default()
        .chunk_size(512 << 10)
        .prioritized_files(vec!["a.txt".into()]);
    build(BuildInput::Path(tree), &mut out, &opts).unwrap();
    (blob, files)
}

fn push(host: &str, repo: &str, blob: &Path, auth_file: Option<&Path>) -> String {
    let reference = format!("{host}/{repo}:v1");
    let mut cmd = Command::new(util::estargz_bin());
    cmd.args(["push", "--plain-http", &reference]).arg(blob);
    if let Some(f) = auth_file {
        cmd.arg("--auth-file").arg(f);
    }
    util::run(&mut cmd);
    reference
}

fn http_opts(timeout: Duration, retries: u32) -> HttpOptions {
    HttpOptions::default()
        .plain_http(true)
        .request_timeout(timeout)
        .connect_timeout(timeout)
        .retries(retries)
        .min_backoff(Duration::from_millis(10))
        .max_backoff(Duration::from_millis(200))
        .auth_files(Vec::new())
}

fn open(reg: &Registry, reference: &str) -> Result<RemoteLayer, Error> {
    let image = reg.resolve_image(&Reference::parse(reference).unwrap(), None)?;
    open_layer(reg, &image, 0, &LayerOptions::default())
}

fn read_file(layer: &RemoteLayer, path: &str) -> Result<Vec<u8>, Error> {
    let id = layer.reader.lookup(path)?;
    let size = layer.reader.entry(id).size() as usize;
    let mut out = vec![0; size];
    let mut done = 0;
    while done < size {
        let n = layer.reader.read_at(id, done as u64, &mut out[done..])?;
        assert!(n > 0, "short read of {path}");
        done += n;
    }
    Ok(out)
}

fn with_proxy_host(reference: &str, proxy: &FaultProxy) -> String {
    let (_, rest) = reference.split_once('/').unwrap();
    format!("{}/{rest}", proxy.addr())
}

#[test]
fn lazy_reads_open_in_two_requests_and_fetch_little() {
    let dir = tempfile::tempdir().unwrap();
    let (blob, files) = make_blob(dir.path());
    let reg = TestRegistry::start(None);
    let reference = push(&reg.host(), "lazy/app", &blob, None);
    let proxy = FaultProxy::start(reg.addr(), None).unwrap();
    let client = Registry::new(http_opts(Duration::from_secs(10), 2));
    let layer = open(&client, &with_proxy_host(&reference, &proxy)).unwrap();
    assert_eq!(layer.blob.stats().requests, 2, "footer + TOC");
    assert_eq!(
        layer.descriptor.toc_digest(),
        Some(layer.reader.toc_digest().to_string().as_str()),
        "TOC verified against the manifest annotation"
    );
    let blob_size = std::fs::metadata(&blob).unwrap().len();

    // Prefetch stops at the landmark: the prioritized file only.
    let s = layer.reader.prefetch_landmarked().unwrap();
    assert!(
        s.chunks_cached >= 1 && s.compressed_bytes < blob_size / 20,
        "{s:?}"
    );
    let before = layer.blob.stats().requests;
    assert_eq!(read_file(&layer, "a.txt").unwrap(), files["a.txt"]);
    assert_eq!(
        layer.blob.stats().requests,
        before,
        "a.txt came from the prefetch"
    );

    // Two files far apart in the blob: one multi-range request, answered
    // 206 multipart by the real registry.
    let multi_before = proxy.stats().multi_range_requests.load(Ordering::Relaxed);
    let ids = [
        layer.reader.lookup("b.txt").unwrap(),
        layer.reader.lookup("c.txt").unwrap(),
    ];
    layer.reader.prefetch_files(&ids).unwrap();
    assert_eq!(layer.blob.stats().requests, before + 1);
    assert_eq!(
        proxy.stats().multi_range_requests.load(Ordering::Relaxed),
        multi_before + 1
    );
    assert!(!layer.blob.single_range_mode());
    assert_eq!(read_file(&layer, "b.txt").unwrap(), files["b.txt"]);
    assert_eq!(read_file(&layer, "c.txt").unwrap(), files["c.txt"]);
    assert_eq!(
        layer.blob.stats().requests,
        before + 1,
        "served from the cache"
    );
    assert!(
        layer.blob.stats().bytes < blob_size / 10,
        "small working set, small fetch"
    );

    for (name, data) in &files {
        assert_eq!(&read_file(&layer, name).unwrap(), data, "{name}");
    }
    layer.reader.verify().unwrap();
}

#[test]
fn basic_auth_from_auth_files() {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let (blob, files) = make_blob(dir.path());
    let reg = TestRegistry::start(Some(("alice", "s3cret")));
    let write_auth = |name: &str, user: &str| {
        let b64 = base64::engine::general_purpose::STANDARD.encode(user);
        let p = dir.path().join(name);
        std::fs::write(
            &p,
            format!(r#"{{"auths":{{"{}":{{"auth":"{b64}"}}}}}}"#, reg.host()),
        )
        .unwrap();
        p
    };
    let good = write_auth("good.json", "alice:s3cret");
    let bad = write_auth("bad.json", "alice:wrong");
    let reference = push(&reg.host(), "private/app", &blob, Some(&good));

    let mut opts = http_opts(Duration::from_secs(10), 1);
    opts.auth_files = vec![dir.path().join("missing.json"), good];
    let layer = open(&Registry::new(opts), &reference).unwrap();
    assert_eq!(read_file(&layer, "c.txt").unwrap(), files["c.txt"]);

    for auth_files in [vec![], vec![bad]] {
        let mut opts = http_opts(Duration::from_secs(10), 1);
        opts.auth_files = auth_files;
        let err = open(&Registry::new(opts), &reference)
            .err()
            .expect("no access without the password");
        assert_eq!(err.code(), ErrorCode::Unauthorized, "{err}");
    }
}

/// Runs `f` and checks it ends within `limit`.
fn bounded<T>(what: &str, limit: Duration, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let v = f();
    assert!(start.elapsed() < limit, "{what} took {:?}", start.elapsed());
    v
}

#[test]
fn faults_end_in_correct_bytes_or_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (blob, files) = make_blob(dir.path());
    let reg = TestRegistry::start(None);
    let reference = push(&reg.host(), "faults/app", &blob, None);
    let proxy = FaultProxy::start(reg.addr(), None).unwrap();
    let via_proxy = with_proxy_host(&reference, &proxy);
    let client = Registry::new(http_opts(Duration::from_secs(2), 4));
    let limit = Duration::from_secs(40);

    type Setup = fn(&mut estargz_tests::faultproxy::Faults);
    let recoverable: [(&str, Setup); 6] = [
        ("resets", |f| f.reset_next = 3),
        ("truncated bodies", |f| {
            f.truncate_next = 3;
            f.truncate_after = 700;
        }),
        ("a stall", |f| f.stall_next = 1),
        ("latency and a bandwidth cap", |f| {
            f.latency = Duration::from_millis(20);
            f.rate_bytes_per_sec = 100_000_000 / 8;
        }),
        ("multi-range refused", |f| f.reject_multi_range = true),
        ("ranges ignored", |f| f.ignore_range = true),
    ];
    for (what, setup) in recoverable {
        proxy.clear();
        // Open cleanly, then inject the fault for the reads.
        let layer = open(&client, &via_proxy).unwrap();
        proxy.set(setup);
        bounded(what, limit, || {
            let ids = [
                layer.reader.lookup("b.txt").unwrap(),
                layer.reader.lookup("c.txt").unwrap(),
            ];
            layer
                .reader
                .prefetch_files(&ids)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            for name in ["b.txt", "c.txt", "big.bin", "d/e.bin"] {
                let got = read_file(&layer, name).unwrap_or_else(|e| panic!("{what}: {name}: {e}"));
                assert!(got == files[name], "{what}: wrong bytes for {name}");
            }
        });
        if what == "multi-range refused" || what == "ranges ignored" {
            assert!(
                layer.blob.single_range_mode(),
                "{what}: fell back to single ranges"
            );
        }
    }

    // Corrupted bytes are never served: a digest error, then a clean retry.
    proxy.clear();
    let layer = open(&client, &via_proxy).unwrap();
    // A layer's first miss also brings the bytes before it, which would
    // take the flipped byte; the miss for d/e.bin starts in it.
    assert_eq!(read_file(&layer, "b.txt").unwrap(), files["b.txt"]);
    proxy.set(|f| f.corrupt_next = 1);
    let err = read_file(&layer, "d/e.bin").unwrap_err();
    assert!(
        matches!(err.code(), ErrorCode::DigestMismatch | ErrorCode::Corrupt),
        "corruption reported as {err}"
    );
    assert_eq!(
        read_file(&layer, "d/e.bin").unwrap(),
        files["d/e.bin"],
        "failure not sticky"
    );

    // An outage: a network error within bounded time, and reads work again
    // once it is over.
    proxy.set(|f| f.reset_next = 1000);
    let err = bounded("outage", limit, || {
        read_file(&layer, "big.bin").unwrap_err()
    });
    assert_eq!(err.code(), ErrorCode::Network, "{err}");
    proxy.clear();
    assert_eq!(read_file(&layer, "big.bin").unwrap(), files["big.bin"]);

    // A registry that never answers: a timeout, not a hang.
    let impatient = Registry::new(http_opts(Duration::from_secs(1), 1));
    let layer = open(&impatient, &via_proxy).unwrap();
    proxy.set(|f| f.stall_next = 1000);
    let err = bounded("stalled registry", Duration::from_secs(15), || {
        read_file(&layer, "c.txt").unwrap_err()
    });
    assert_eq!(err.code(), ErrorCode::Timeout, "{err}");
    proxy.clear();
    assert_eq!(read_file(&layer, "c.txt").unwrap(), files["c.txt"]);
}

#[test]
fn cli_pull_cat_ls_extract_and_disk_cache() {
    let dir = tempfile::tempdir().unwrap();
    let (blob, files) = make_blob(dir.path());
    let reg = TestRegistry::start(None);
    let reference = push(&reg.host(), "cli/app", &blob, None);
    let cache = dir.path().join("cache");
    let pull_ref = |reference: &str, args: &[&str]| {
        Command::new(util::estargz_bin())
            .args(["pull", "--plain-http", reference, "--cache-dir"])
            .arg(&cache)
            .args(args)
            .output()
            .unwrap()
    };
    let pull = |args: &[&str]| {
        let out = pull_ref(&reference, args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (out.stdout, String::from_utf8_lossy(&out.stderr).to_string())
    };
    let (out, err) = pull(&["--cat", "a.txt", "--cat", "c.txt"]);
    let mut want = files["a.txt"].clone();
    want.extend_from_slice(&files["c.txt"]);
    assert_eq!(out, want);
    assert!(err.contains("fetched"), "summary: {err}");
    // Again with the disk cache warm: only footer and TOC are fetched.
    let (out, err) = pull(&["--cat", "a.txt", "--cat", "c.txt"]);
    assert_eq!(out, want);
    assert!(err.contains("in 2 requests"), "warm cache: {err}");

    let (out, _) = pull(&["--ls"]);
    let listing = String::from_utf8_lossy(&out);
    for name in ["a.txt", "big.bin", "d/e.bin"] {
        assert!(listing.contains(name), "{name} missing from {listing}");
    }
    let target = dir.path().join("rootfs");
    pull(&["--extract", target.to_str().unwrap()]);
    for (name, data) in &files {
        assert_eq!(&std::fs::read(target.join(name)).unwrap(), data, "{name}");
    }

    // skopeo's spelling of the reference, and the layer by index or digest.
    let digest = estargz_core::digest::sha256_digest(&std::fs::read(&blob).unwrap());
    let docker = format!("docker://{reference}");
    for layer in ["0", digest.as_str()] {
        let out = pull_ref(&docker, &["--layer", layer, "--cat", "a.txt", "-q"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "--layer {layer}: {err}");
        assert_eq!(out.stdout, files["a.txt"], "--layer {layer}");
    }
    let other = format!("sha256:{}", "0".repeat(64));
    for (layer, why) in [
        ("1", "not found: layer 1"),
        (other.as_str(), "not found: layer sha256:"),
    ] {
        let out = pull_ref(&docker, &["--layer", layer, "--ls"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(why),
            "--layer {layer}: {err}"
        );
    }
}

#[test]
fn background_fetch_yields_to_reads_and_caches_everything() {
    use estargz_core::cache::ChunkCache;
    use estargz_core::reader::{BackgroundFetch, PrefetchHint};
    let dir = tempfile::tempdir().unwrap();
    let (blob, files) = make_blob(dir.path());
    let reg = TestRegistry::start(None);
    let reference = push(&reg.host(), "bg/app", &blob, None);
    let proxy = FaultProxy::start(reg.addr(), None).unwrap();
    // A slow link, so the background fetch takes a while.
    proxy.set(|f| {
        f.latency = Duration::from_millis(20);
        f.rate_bytes_per_sec = 2_000_000;
    });
    let client = Registry::new(http_opts(Duration::from_secs(20), 2));
    let image = client
        .resolve_image(
            &Reference::parse(&with_proxy_host(&reference, &proxy)).unwrap(),
            None,
        )
        .unwrap();
    let opts = LayerOptions::default().cache(Some(Arc::new(ChunkCache::in_memory(64 << 20))));
    let layer = open_layer(&client, &image, 0, &opts).unwrap();
    assert!(matches!(
        layer.reader.prefetch_hint(),
        PrefetchHint::Before(_)
    ));
    let started = Instant::now();
    // Small batches so an on-demand read can slip in between them.
    let bg = BackgroundFetch::start(layer.reader.clone(), 256 << 10);
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    assert_eq!(read_file(&layer, "d/e.bin").unwrap(), files["d/e.bin"]);
    let on_demand = t.elapsed();
    let summary = bg.wait().unwrap();
    let total = started.elapsed();
    assert!(summary.complete, "{summary:?}");
    assert!(
        on_demand * 2 < total,
        "the read ({on_demand:?}) waited for the background fetch ({total:?})"
    );
    let requests = layer.blob.stats().requests;
    for (name, data) in &files {
        assert_eq!(&read_file(&layer, name).unwrap(), data, "{name}");
    }
    assert_eq!(
        layer.blob.stats().requests,
        requests,
        "everything was cached"
    );

    // Without prioritized files the builder marks the layer "no prefetch".
    let plain = dir.path().join("plain.esgz");
    let mut out = std::fs::File::create(&plain).unwrap();
    build(
        BuildInput::Path(dir.path().join("tree")),
        &mut out,
        &BuildOptions::default(),
    )
    .unwrap();
    let reader = estargz_core::Reader::open(
        Arc::new(estargz_core::FileSource::open(&plain).unwrap()),
        &Default::default(),
    )
    .unwrap();
    assert_eq!(reader.prefetch_hint(), PrefetchHint::None);
    assert_eq!(reader.prefetch_landmarked().unwrap().chunks_cached, 0);
}

/// The bearer-token flow (docker.io, ghcr.io, Harbor...) against a minimal
/// token-issuing server: 401 with a challenge → token from the realm with
/// our basic credentials → the request again with the token.
#[test]
fn bearer_token_flow() {
    use base64::Engine;
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("alice:pw")
    );
    let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let mut auth = String::new();
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap() == 0 || h == "\r\n" {
                    break;
                }
                if let Some(v) = h
                    .strip_prefix("authorization: ")
                    .or(h.strip_prefix("Authorization: "))
                {
                    auth = v.trim().to_string();
                }
            }
            let path = line.split(' ').nth(1).unwrap_or("").to_string();
            log.lock().unwrap().push(format!("{path} [{auth}]"));
            let (status, headers, body) = if path.starts_with("/token?") {
                if auth == basic && path.contains("scope=repository%3Ateam%2Fapp%3Apull") {
                    (
                        "200 OK",
                        String::new(),
                        r#"{"token":"T1","expires_in":300}"#.to_string(),
                    )
                } else {
                    ("401 Unauthorized", String::new(), String::new())
                }
            } else if auth == "Bearer T1" {
                (
                    "200 OK",
                    "Content-Type: application/vnd.oci.image.manifest.v1+json\r\n".into(),
                    format!(
                        r#"{{"schemaVersion":2,"config":{{"mediaType":"x","digest":"sha256:{}","size":0}},"layers":[]}}"#,
                        "0".repeat(64)
                    ),
                )
            } else {
                ("401 Unauthorized",
                 format!("WWW-Authenticate: Bearer realm=\"http://{addr}/token\",service=\"svc\",scope=\"repository:team/app:pull\"\r\n"),
                 String::new())
            };
            let mut w = conn;
            let _ = write!(w, "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let auth_file = dir.path().join("auth.json");
    std::fs::write(
        &auth_file,
        format!(
            r#"{{"auths":{{"{addr}":{{"auth":"{}"}}}}}}"#,
            base64::engine::general_purpose::STANDARD.encode("alice:pw")
        ),
    )
    .unwrap();
    let mut opts = http_opts(Duration::from_secs(5), 1);
    opts.auth_files = vec![auth_file];
    let client = Registry::new(opts);
    let r = Reference::parse(&format!("{addr}/team/app:v1")).unwrap();
    let (body, _, _) = client.fetch_manifest(&r).unwrap();
    assert!(String::from_utf8_lossy(&body).contains("schemaVersion"));
    // The token is reused: no second round trip to the token server.
    client.fetch_manifest(&r).unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen.iter().filter(|s| s.starts_with("/token")).count(),
        1,
        "{seen:?}"
    );
    assert!(seen.last().unwrap().ends_with("[Bearer T1]"), "{seen:?}");

    // Without credentials the token server refuses: a clear error.
    let anonymous = Registry::new(http_opts(Duration::from_secs(5), 1));
    let err = anonymous.fetch_manifest(&r).unwrap_err();
    assert_eq!(err.code(), ErrorCode::Unauthorized, "{err}");
}

/// A layer of many small files in a few directories, as a distribution's
/// `/usr` is. Returns the blob path and the files in blob order per dir.
fn make_many_files(dir: &Path, count: usize) -> (PathBuf, BTreeMap<String, Vec<u8>>) {
    let tree = dir.join("many");
    let mut files = BTreeMap::new();
    for i in 0..count {
        let name = format!("d{}/f{i:05}.py", i % 8);
        // 1-3 KiB of incompressible bytes: one small gzip member each.
        let data = util::noise(1024 + (i * 37) % 2048, i as u64 + 1);
        let p = tree.join(&name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, &data).unwrap();
        files.insert(name, data);
    }
    let blob = dir.join("many.esgz");
    let mut out = std::fs::File::create(&blob).unwrap();
    build(BuildInput::Path(tree), &mut out, &BuildOptions::default()).unwrap();
    (blob, files)
}

fn open_with(reg: &Registry, reference: &str, opts: &LayerOptions) -> RemoteLayer {
    let image = reg
        .resolve_image(&Reference::parse(reference).unwrap(), None)
        .unwrap();
    open_layer(reg, &image, 0, opts).unwrap()
}

fn proxy_counts(proxy: &FaultProxy) -> (u64, u64, u64) {
    let s = proxy.stats();
    (
        s.connections.load(Ordering::SeqCst),
        s.requests.load(Ordering::SeqCst),
        s.bytes_down.load(Ordering::SeqCst),
    )
}

#[test]
fn small_reads_reuse_connections_and_neighbours_come_together() {
    use estargz_core::span_cache::SpanCacheOptions;
    let dir = tempfile::tempdir().unwrap();
    let (blob, files) = make_many_files(dir.path(), 1200);
    let reg = TestRegistry::start(None);
    let reference = push(&reg.host(), "many/app", &blob, None);
    let proxy = FaultProxy::start(reg.addr(), None).unwrap();
    let via_proxy = with_proxy_host(&reference, &proxy);

    // Read-ahead off: one range request per file, all on kept-alive
    // connections.
    let client = Registry::new(http_opts(Duration::from_secs(10), 2));
    let no_read_ahead = LayerOptions::default().spans(
        SpanCacheOptions::default()
            .initial_read_ahead(0)
            .min_read_ahead(0)
            .max_read_ahead(0),
    );
    let layer = open_with(&client, &via_proxy, &no_read_ahead);
    for (name, data) in &files {
        assert_eq!(&read_file(&layer, name).unwrap(), data, "{name}");
    }
    let (connections, requests, _) = proxy_counts(&proxy);
    assert!(requests >= 1000, "{requests} requests for 1,200 files");
    assert!(
        connections <= 4,
        "{connections} connections for {requests} requests"
    );

    // Read-ahead on (the default): a directory read in blob order costs a
    // few requests, not one per file.
    let client = Registry::new(http_opts(Duration::from_secs(10), 2));
    let layer = open_with(&client, &via_proxy, &LayerOptions::default());
    let (_, before, _) = proxy_counts(&proxy);
    let in_d3: Vec<_> = files.iter().filter(|(n, _)| n.starts_with("d3/")).collect();
    for (name, data) in &in_d3 {
        assert_eq!(&read_file(&layer, name).unwrap(), *data, "{name}");
    }
    let (_, after, _) = proxy_counts(&proxy);
    assert!(
        after - before <= in_d3.len() as u64 / 10,
        "{} requests for {} files of one directory",
        after - before,
        in_d3.len()
    );
    assert!(
        layer.spans.read_ahead_window() > (256 << 10),
        "the window grew"
    );
}

#[test]
fn concurrent_misses_share_requests_and_connections() {
    let dir = tempfile::tempdir().unwrap();
    let (blob, files) = make_many_files(dir.path(), 400);
    let reg = TestRegistry::start(None);
    let reference = push(&reg.host(), "conc/app", &blob, None);
    let proxy = FaultProxy::start(reg.addr(), None).unwrap();
    proxy.set(|f| f.latency = Duration::from_millis(50));
    let client = Registry::new(http_opts(Duration::from_secs(10), 2));
    let layer = Arc::new(open_with(
        &client,
        &with_proxy_host(&reference, &proxy),
        &LayerOptions::default(),
    ));
    let (_, before, _) = proxy_counts(&proxy);
    // 32 readers of files spread over the whole blob, all at once.
    let names: Vec<String> = files.keys().step_by(12).take(32).cloned().collect();
    let threads: Vec<_> = names
        .iter()
        .map(|name| {
            let layer = layer.clone();
            let name = name.clone();
            let want = files[&name].clone();
            std::thread::spawn(move || assert_eq!(read_file(&layer, &name).unwrap(), want))
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let (connections, after, _) = proxy_counts(&proxy);
    assert!(
        after - before < 16,
        "{} requests for 32 concurrent misses",
        after - before
    );
    assert!(connections <= 4, "{connections} connections");
}

#[test]
fn raw_blob_reads_reuse_what_file_reads_fetched() {
    use estargz_core::reader::BackgroundFetch;
    use estargz_core::ReadAt;
    let dir = tempfile::tempdir().unwrap();
    let (blob, files) = make_many_files(dir.path(), 600);
    let blob_bytes = std::fs::read(&blob).unwrap();
    let reg = TestRegistry::start(None);
    let reference = push(&reg.host(), "raw/app", &blob, None);
    let proxy = FaultProxy::start(reg.addr(), None).unwrap();
    let via_proxy = with_proxy_host(&reference, &proxy);
    let client = Registry::new(http_opts(Duration::from_secs(10), 2));
    let opts = LayerOptions::default().span_dir(Some(dir.path().to_path_buf()));
    let read_raw = |layer: &RemoteLayer| {
        let mut raw = vec![0u8; layer.spans.size() as usize];
        // As `podman save` reads `blob`: front to back in 128 KiB pieces.
        for (i, piece) in raw.chunks_mut(128 << 10).enumerate() {
            layer
                .spans
                .read_exact_at(piece, (i * (128 << 10)) as u64)
                .unwrap();
        }
        raw
    };

    // After every file was read, the raw blob costs at most the few
    // headers no file read touched.
    let layer = open_with(&client, &via_proxy, &opts);
    for (name, data) in &files {
        assert_eq!(&read_file(&layer, name).unwrap(), data, "{name}");
    }
    let (_, _, before) = proxy_counts(&proxy);
    assert!(read_raw(&layer) == blob_bytes, "raw bytes equal the blob");
    let (_, _, after) = proxy_counts(&proxy);
    assert!(
        after - before < blob_bytes.len() as u64 / 20,
        "{} bytes moved again for a blob of {}",
        after - before,
        blob_bytes.len()
    );

    // After a background fetch, nothing at all.
    let layer = open_with(&client, &via_proxy, &opts);
    let summary = BackgroundFetch::start(layer.reader.clone(), 1 << 20)
        .wait()
        .unwrap();
    assert!(summary.complete);
    assert!(
        layer.spans.missing(0..u64::MAX) == Some(vec![]),
        "{:?}",
        layer.spans.missing(0..u64::MAX)
    );
    let (_, requests, before) = proxy_counts(&proxy);
    assert!(read_raw(&layer) == blob_bytes);
    for (name, data) in files.iter().step_by(7) {
        assert_eq!(&read_file(&layer, name).unwrap(), data, "{name}");
    }
    assert_eq!(
        proxy_counts(&proxy),
        (proxy_counts(&proxy).0, requests, before),
        "served locally"
    );
}

#[test]
fn a_stuck_registry_does_not_hold_up_another() {
    let dir = tempfile::tempdir().unwrap();
    let (blob, files) = make_blob(dir.path());
    let reg = TestRegistry::start(None);
    let reference = push(&reg.host(), "stuck/app", &blob, None);
    let proxy = FaultProxy::start(reg.addr(), None).unwrap();
    // One client (one connection pool) for both hosts, as in the store.
    let client = Registry::new(http_opts(Duration::from_secs(2), 4));
    let healthy = open(&client, &reference).unwrap();
    let stuck = Arc::new(open(&client, &with_proxy_host(&reference, &proxy)).unwrap());
    proxy.set(|f| f.stall_next = 1000);

    let started = Instant::now();
    let waiting: Vec<_> = ["a.txt", "b.txt", "c.txt", "d/e.bin", "big.bin"]
        .iter()
        .cycle()
        .take(12)
        .map(|name| {
            let stuck = stuck.clone();
            std::thread::spawn(move || (read_file(&stuck, name).unwrap_err(), started.elapsed()))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    for (name, data) in &files {
        let t = Instant::now();
        assert_eq!(&read_file(&healthy, name).unwrap(), data, "{name}");
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "{name} took {:?} while another registry hung",
            t.elapsed()
        );
    }
    for w in waiting {
        let (err, after) = w.join().unwrap();
        assert_eq!(err.code(), ErrorCode::Timeout, "{err}");
        // Readers of one chunk share its fetch and its error (12 reads of 5
        // files), each fetch a batch of two 2 s timeouts, and a batch may
        // queue behind another: 4 timeouts, 8 s, plus margin.
        assert!(after < Duration::from_secs(12), "failed after {after:?}");
    }
}
