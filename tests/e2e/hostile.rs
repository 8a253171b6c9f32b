//! Hand-crafted hostile blobs (valid footers and TOC digests, so they pass
//! the annotation check): every command finishes in bounded time and memory,
//! or fails with a clear limit error, never by running out of memory.
//! Each case is a row of issue 15's table, built here, run through the
//! `estargz` binary with an address-space limit and a timeout, its peak RSS
//! taken from the kernel.

mod util;

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use estargz_core::Footer;
use flate2::write::GzEncoder;
use flate2::Compression;

const MIB: u64 = 1 << 20;
/// The memory budget issue 15 sets for hostile layers.
const BUDGET_RSS: u64 = 256 * MIB;
/// Address space the process may map: a safety net so a regression fails
/// the test instead of exhausting the machine (well above the RSS budget:
/// thread stacks and malloc arenas reserve address space they never touch).
const ADDRESS_SPACE: u64 = 4096 * MIB;

struct Outcome {
    success: bool,
    stderr: String,
    max_rss: u64,
    elapsed: Duration,
}

/// Runs `estargz args...` under the address-space limit; kills it after
/// `timeout`. Peak RSS comes from GNU time, which measures the process it
/// starts (a process forked from this test would inherit the test's own
/// high-water mark).
fn run_bounded(args: &[&str], env: &[(&str, &str)], timeout: Duration) -> Outcome {
    let stderr_file = tempfile::NamedTempFile::new().unwrap();
    let rss_file = tempfile::NamedTempFile::new().unwrap();
    let mut cmd = Command::new("/usr/bin/time");
    cmd.arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(rss_file.path())
        .arg(util::estargz_bin())
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr_file.reopen().unwrap())
        // Its own process group, so a timeout kills `time` and estargz.
        .process_group(0);
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: ADDRESS_SPACE,
                rlim_max: ADDRESS_SPACE,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let start = Instant::now();
    let mut child = cmd.spawn().unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > timeout {
            unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
            let _ = child.wait();
            panic!(
                "estargz {args:?} still running after {timeout:?}; stderr: {}",
                std::fs::read_to_string(stderr_file.path()).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = start.elapsed();
    let stderr = std::fs::read_to_string(stderr_file.path()).unwrap();
    // GNU time reports a signal death as "Command terminated by signal N".
    assert!(
        !stderr.contains("terminated by signal"),
        "estargz {args:?} died ({status}); stderr: {stderr}"
    );
    let rss_kib: u64 = std::fs::read_to_string(rss_file.path())
        .unwrap()
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no RSS from /usr/bin/time; stderr: {stderr}"));
    Outcome {
        success: status.success(),
        stderr,
        max_rss: rss_kib * 1024,
        elapsed,
    }
}

/// Asserts the command succeeded (or failed with `limit` named) within the
/// budget and `timeout`.
fn expect(
    blob: &Path,
    cmd: &[&str],
    env: &[(&str, &str)],
    want: Result<(), &str>,
    rss: u64,
    timeout: Duration,
) -> Outcome {
    let blob = blob.to_str().unwrap();
    let mut args = cmd.to_vec();
    args.insert(1, blob);
    let out = run_bounded(&args, env, timeout);
    eprintln!(
        "estargz {cmd:?}: {:.2} s, peak RSS {} MiB",
        out.elapsed.as_secs_f64(),
        out.max_rss / MIB
    );
    match want {
        Ok(()) => assert!(out.success, "estargz {cmd:?} failed: {}", out.stderr),
        Err(limit) => {
            assert!(!out.success, "estargz {cmd:?} succeeded");
            assert!(
                out.stderr.contains("limit exceeded") && out.stderr.contains(limit),
                "estargz {cmd:?} should fail naming {limit}: {}",
                out.stderr
            );
        }
    }
    assert!(
        out.max_rss <= rss,
        "estargz {cmd:?} peaked at {} MiB (bound {} MiB)",
        out.max_rss / MIB,
        rss / MIB
    );
    out
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::new(6));
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

/// One gzip member of `len` zero bytes, compressed without holding them.
fn gzip_zeros(len: u64) -> Vec<u8> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    let slab = vec![0u8; MIB as usize];
    let mut left = len;
    while left > 0 {
        let n = left.min(MIB);
        gz.write_all(&slab[..n as usize]).unwrap();
        left -= n;
    }
    gz.finish().unwrap()
}

fn sha256(data: &[u8]) -> String {
    estargz_core::digest::sha256_digest(data)
}

/// A ustar header for the TOC entry `stargz.index.json` of `size` bytes.
fn toc_header(size: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..17].copy_from_slice(b"stargz.index.json");
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

/// A blob: `data` (the gzip members), then a TOC member whose JSON is
/// `json_len` bytes written by `write_json`, then the footer.
fn assemble(
    dir: &Path,
    name: &str,
    data: &[u8],
    json_len: u64,
    write_json: impl FnOnce(&mut dyn Write),
) -> std::path::PathBuf {
    let path = dir.join(name);
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    out.write_all(data).unwrap();
    let mut gz = GzEncoder::new(Vec::new(), Compression::new(6));
    gz.write_all(&toc_header(json_len)).unwrap();
    let mut counted = Counted {
        inner: &mut gz,
        n: 0,
    };
    write_json(&mut counted);
    assert_eq!(
        counted.n, json_len,
        "JSON length announced in the tar header"
    );
    let pad = (512 - json_len % 512) % 512;
    gz.write_all(&vec![0u8; pad as usize + 1024]).unwrap();
    out.write_all(&gz.finish().unwrap()).unwrap();
    out.write_all(
        &Footer::Estargz {
            toc_offset: data.len() as u64,
        }
        .to_bytes(),
    )
    .unwrap();
    out.flush().unwrap();
    path
}

struct Counted<'a, W> {
    inner: &'a mut W,
    n: u64,
}

impl<W: Write> Write for Counted<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A TOC of `entries` JSON objects (already serialized, comma-free).
fn toc_blob(dir: &Path, name: &str, data: &[u8], entries: &[String]) -> std::path::PathBuf {
    let json = format!("{{\"version\":1,\"entries\":[{}]}}", entries.join(","));
    assemble(dir, name, data, json.len() as u64, |w| {
        w.write_all(json.as_bytes()).unwrap()
    })
}

/// A TOC repeating one entry `times` times, streamed (never held whole).
fn repeated_entry_blob(dir: &Path, name: &str, times: u64) -> std::path::PathBuf {
    let head = b"{\"version\":1,\"entries\":[";
    let entry = b"{\"name\":\"d/\",\"type\":\"dir\",\"mode\":493}";
    let tail = b"]}";
    let len = head.len() as u64 + times * entry.len() as u64 + (times - 1) + tail.len() as u64;
    assemble(dir, name, &[], len, |w| {
        w.write_all(head).unwrap();
        let mut block = Vec::new();
        for _ in 0..4096 {
            block.extend_from_slice(entry);
            block.push(b',');
        }
        let mut left = times;
        while left > 4096 {
            w.write_all(&block).unwrap();
            left -= 4096;
        }
        for i in 0..left {
            w.write_all(entry).unwrap();
            if i + 1 < left {
                w.write_all(b",").unwrap();
            }
        }
        w.write_all(tail).unwrap();
    })
}

#[test]
fn toc_repeating_one_entry_ten_million_times() {
    let dir = tempfile::tempdir().unwrap();
    let blob = repeated_entry_blob(dir.path(), "repeat.blob", 10_000_000);
    for cmd in [&["ls"][..], &["verify"]] {
        expect(
            &blob,
            cmd,
            &[],
            Ok(()),
            BUDGET_RSS,
            Duration::from_secs(120),
        );
    }
}

#[test]
fn toc_repeating_one_entry_up_to_the_toc_size_limit() {
    let dir = tempfile::tempdir().unwrap();
    // 38 bytes an entry: about 1 GiB of JSON (the default max_toc_size).
    let blob = repeated_entry_blob(dir.path(), "repeat-1g.blob", 28_000_000);
    expect(
        &blob,
        &["ls"],
        &[],
        Ok(()),
        BUDGET_RSS,
        Duration::from_secs(300),
    );
}

fn deep_path(prefix: &str, depth: usize) -> String {
    let mut p = prefix.to_string();
    for _ in 1..depth {
        p.push_str("/a");
    }
    p
}

#[test]
fn four_hundred_paths_eight_thousand_directories_deep() {
    let dir = tempfile::tempdir().unwrap();
    let entries: Vec<String> = (0..400)
        .map(|i| {
            format!(
                "{{\"name\":\"{}\",\"type\":\"dir\",\"mode\":493}}",
                deep_path(&format!("p{i}"), 8000)
            )
        })
        .collect();
    let blob = toc_blob(dir.path(), "deep400.blob", &[], &entries);
    let out = dir.path().join("out");
    let out = out.to_str().unwrap();
    for cmd in [&["ls"][..], &["verify"], &["extract", out]] {
        expect(
            &blob,
            cmd,
            &[],
            Err("max_path_depth"),
            BUDGET_RSS,
            Duration::from_secs(20),
        );
    }
}

#[test]
fn paths_as_deep_as_the_limit_cost_linear_time() {
    let dir = tempfile::tempdir().unwrap();
    // The default max_path_depth: 2048 components.
    let deepest = deep_path("p", 2048);
    let file = format!("{deepest}/f");
    let entries = vec![
        format!("{{\"name\":\"{deepest}\",\"type\":\"dir\",\"mode\":493}}"),
        format!(
            "{{\"name\":\"{}\",\"type\":\"symlink\",\"linkName\":\"x\"}}",
            file
        ),
    ];
    let too_deep = toc_blob(dir.path(), "deep1.blob", &[], &entries);
    expect(
        &too_deep,
        &["ls"],
        &[],
        Err("max_path_depth"),
        BUDGET_RSS,
        Duration::from_secs(20),
    );
    let deepest = deep_path("p", 2047);
    let entries = vec![
        format!("{{\"name\":\"{deepest}\",\"type\":\"dir\",\"mode\":493}}"),
        format!("{{\"name\":\"{deepest}/f\",\"type\":\"symlink\",\"linkName\":\"x\"}}"),
    ];
    let blob = toc_blob(dir.path(), "deep2.blob", &[], &entries);
    let out = dir.path().join("out");
    for cmd in [&["ls"][..], &["extract", out.to_str().unwrap()]] {
        // Quadratic work (re-walking from the root per directory) took
        // ~10 s at this depth.
        expect(&blob, cmd, &[], Ok(()), BUDGET_RSS, Duration::from_secs(5));
    }
}

/// `count` chunks of `chunk` bytes (chunk i is byte i then zeros), each
/// followed by `gap` zero bytes, in one decompressed stream starting at the
/// blob's first byte (concatenated gzip members decode as one stream).
fn spread_chunks_blob(
    dir: &Path,
    name: &str,
    count: u64,
    chunk: u64,
    gap: u64,
) -> (std::path::PathBuf, Vec<Vec<u8>>) {
    let tail = gzip_zeros(chunk - 1);
    let hole = gzip_zeros(gap);
    let mut data = Vec::new();
    let mut digests = Vec::new();
    let mut contents = Vec::new();
    for i in 0..count {
        let mut content = vec![0u8; chunk as usize];
        content[0] = i as u8 + 1;
        digests.push(sha256(&content));
        contents.push(content);
        data.extend_from_slice(&gzip(&[i as u8 + 1]));
        data.extend_from_slice(&tail);
        if gap > 0 {
            data.extend_from_slice(&hole);
        }
    }
    let size = count * chunk;
    let mut entries = Vec::new();
    for (i, digest) in digests.iter().enumerate() {
        let i = i as u64;
        let common = format!(
            "\"offset\":0,\"innerOffset\":{},\"chunkOffset\":{},\"chunkSize\":{chunk},\"chunkDigest\":\"{digest}\"",
            i * (chunk + gap),
            i * chunk
        );
        entries.push(if i == 0 {
            format!("{{\"name\":\"f\",\"type\":\"reg\",\"size\":{size},\"mode\":420,{common}}}")
        } else {
            format!("{{\"name\":\"f\",\"type\":\"chunk\",{common}}}")
        });
    }
    (toc_blob(dir, name, &data, &entries), contents)
}

#[test]
fn tiny_file_spread_through_a_huge_member_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // 64 chunks of 16 bytes in a member inflating to 4 GiB.
    let (blob, _) = spread_chunks_blob(dir.path(), "spread.blob", 64, 16, 64 * MIB - 16);
    let out = dir.path().join("out");
    for cmd in [
        &["cat"][..],
        &["verify"],
        &["extract", out.to_str().unwrap()],
    ] {
        let mut cmd = cmd.to_vec();
        if cmd[0] == "cat" {
            cmd.push("f");
        }
        expect(
            &blob,
            &cmd,
            &[],
            Err("max_member_inflation"),
            BUDGET_RSS,
            Duration::from_secs(20),
        );
    }
}

#[test]
fn chunks_of_one_large_member_are_inflated_once_per_pass() {
    let dir = tempfile::tempdir().unwrap();
    // 64 chunks of 256 KiB 16 MiB apart: a 1 GiB member, allowed by
    // max_member_inflation (16 MiB held). Re-inflating the member from
    // its start for every chunk would inflate 32 GiB.
    let (blob, contents) = spread_chunks_blob(
        dir.path(),
        "spread-ok.blob",
        64,
        256 << 10,
        16 * MIB - (256 << 10),
    );
    let out = dir.path().join("out");
    for cmd in [
        &["cat", "f"][..],
        &["verify"],
        &["extract", out.to_str().unwrap()],
    ] {
        expect(&blob, cmd, &[], Ok(()), BUDGET_RSS, Duration::from_secs(30));
    }
    let want: Vec<u8> = contents.concat();
    assert!(std::fs::read(out.join("f")).unwrap() == want);
}

#[test]
fn memory_does_not_grow_with_threads() {
    let dir = tempfile::tempdir().unwrap();
    // 8 files of one 255 MiB chunk each, each its own member.
    let chunk = 255 * MIB;
    let tail = gzip_zeros(chunk - 1);
    let mut data = Vec::new();
    let mut entries = Vec::new();
    for i in 0..8u8 {
        let mut content = vec![0u8; chunk as usize];
        content[0] = i + 1;
        let digest = sha256(&content);
        drop(content);
        entries.push(format!(
            "{{\"name\":\"f{i}\",\"type\":\"reg\",\"size\":{chunk},\"mode\":420,\"offset\":{},\"chunkSize\":{chunk},\"chunkDigest\":\"{digest}\"}}",
            data.len()
        ));
        data.extend_from_slice(&gzip(&[i + 1]));
        data.extend_from_slice(&tail);
    }
    let blob = toc_blob(dir.path(), "big-chunks.blob", &data, &entries);
    for threads in ["2", "16"] {
        let env = [("RAYON_NUM_THREADS", threads)];
        // Verification hashes chunks as they stream.
        expect(
            &blob,
            &["verify"],
            &env,
            Ok(()),
            64 * MIB,
            Duration::from_secs(120),
        );
        // Extraction holds each chunk while verifying it: one at a time
        // at this size, whatever the thread count.
        let out = dir.path().join(format!("out{threads}"));
        expect(
            &blob,
            &["extract", out.to_str().unwrap()],
            &env,
            Ok(()),
            BUDGET_RSS + 128 * MIB,
            Duration::from_secs(120),
        );
        std::fs::remove_dir_all(&out).unwrap();
    }
}

/// Pushes `blobs` as the layers of image `reference` with the annotations
/// `estargz push` writes (the TOC digests are given: a hostile layer's
/// TOC is refused by our own tools, not by an attacker's).
fn push_image(reference: &str, blobs: &[(&[u8], &str)]) {
    use estargz_core::remote::manifest::{
        OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, TOC_DIGEST_ANNOTATION,
        UNCOMPRESSED_SIZE_ANNOTATION,
    };
    use estargz_core::remote::{HttpOptions, Reference, Registry};
    let registry = Registry::new(
        HttpOptions::default()
            .plain_http(true)
            .auth_files(Vec::new()),
    );
    let reference = Reference::parse(reference).unwrap();
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for (blob, toc_digest) in blobs {
        let plain = util::gunzip(blob);
        diff_ids.push(sha256(&plain));
        let digest = registry.push_blob_bytes(&reference, blob).unwrap();
        layers.push(serde_json::json!({
            "mediaType": OCI_LAYER_GZIP,
            "digest": digest,
            "size": blob.len(),
            "annotations": {
                TOC_DIGEST_ANNOTATION: toc_digest,
                UNCOMPRESSED_SIZE_ANNOTATION: plain.len().to_string(),
            },
        }));
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let config_digest = registry.push_blob_bytes(&reference, &config).unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len()},
        "layers": layers,
    }))
    .unwrap();
    registry
        .push_manifest(&reference, OCI_MANIFEST, &manifest)
        .unwrap();
}

#[test]
fn the_store_survives_a_hostile_layer_next_to_a_good_one() {
    if !util::fuse_available() {
        return;
    }
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    // A good layer, built by the library.
    let good_tree = work.join("good");
    std::fs::create_dir_all(good_tree.join("etc")).unwrap();
    std::fs::write(good_tree.join("etc/greeting"), "still served\n").unwrap();
    let mut good = Vec::new();
    let built = estargz_core::build(
        estargz_core::BuildInput::Path(good_tree),
        &mut good,
        &estargz_core::BuildOptions::default(),
    )
    .unwrap();
    // A hostile one: a path deeper than max_path_depth, with a correct
    // TOC digest annotation.
    let deep = format!(
        "{{\"name\":\"{}\",\"type\":\"dir\",\"mode\":493}}",
        deep_path("p", 3000)
    );
    let bad_path = toc_blob(work, "bad.blob", &[], std::slice::from_ref(&deep));
    let bad = std::fs::read(&bad_path).unwrap();
    let bad_toc_digest = sha256(format!("{{\"version\":1,\"entries\":[{deep}]}}").as_bytes());

    let reg = estargz_tests::registry::TestRegistry::start(None);
    let image = format!("{}/test/hostile:v1", reg.host());
    push_image(
        &image,
        &[
            (&good, &built.toc_digest.to_string()),
            (&bad, &bad_toc_digest),
        ],
    );

    let mnt = work.join("store");
    std::fs::create_dir_all(&mnt).unwrap();
    let log = work.join("store.log");
    let args: Vec<&std::ffi::OsStr> = vec![
        "store".as_ref(),
        mnt.as_ref(),
        "--plain-http".as_ref(),
        "--retries".as_ref(),
        "1".as_ref(),
        "--request-timeout".as_ref(),
        "5".as_ref(),
    ];
    let mut child = util::start_fuse_process(&args, &mnt, &log);
    let image_dir = mnt.join(base64::engine::general_purpose::STANDARD.encode(&image));
    let bad_diff = image_dir.join(&bad_toc_digest).join("diff");
    for _ in 0..2 {
        let t = Instant::now();
        let errno = std::fs::metadata(&bad_diff)
            .err()
            .and_then(|e| e.raw_os_error());
        assert!(
            matches!(errno, Some(libc::EIO) | Some(libc::EINVAL)),
            "hostile layer lookup: {errno:?}"
        );
        assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.lines()
            .any(|l| l.contains("not served") && l.contains("max_path_depth")),
        "no log line naming the limit:\n{text}"
    );
    // The good layer of the same image is served afterwards, and the
    // daemon is still running.
    let good_file = image_dir
        .join(built.toc_digest.to_string())
        .join("diff/etc/greeting");
    assert_eq!(
        std::fs::read_to_string(&good_file).unwrap(),
        "still served\n"
    );
    assert!(child.try_wait().unwrap().is_none(), "the store exited");
    assert!(util::is_mounted(&mnt));
    let status = util::stop_fuse_process(child, &mnt, &log);
    assert!(status.success(), "store exit: {status}");
}

// ---------------------------------------------------------------------------
// zstd:chunked: broken frames and footers fail fast with a clear error.

fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::bulk::compress(data, 3).unwrap()
}

/// A zstd:chunked v2 blob with one file `a`, its TOC frame (holding
/// `toc_frame`, or the compressed TOC) and a footer stating `stated`
/// (compressed, uncompressed) TOC lengths (default: the real ones).
/// Returns the blob and the manifest checksum.
fn zstd_blob(toc_frame: Option<Vec<u8>>, stated: Option<(u64, u64)>) -> (Vec<u8>, String) {
    use estargz_core::footer::{skippable_frame, FramePosition, ZstdChunkedFooter, ZstdGeneration};
    let mut blob = zstd(&[0u8; 512]); // the tar header's frame
    let data_offset = blob.len() as u64;
    blob.extend(zstd(b"hello"));
    let toc = format!(
        r#"{{"version":1,"entries":[{{"type":"reg","name":"a","size":5,"digest":"{}","offset":{data_offset},"endOffset":{}}}]}}"#,
        sha256(b"hello"),
        blob.len()
    );
    let compressed = toc_frame.unwrap_or_else(|| zstd(toc.as_bytes()));
    let checksum = sha256(&compressed);
    let (clen, ulen) = stated.unwrap_or((compressed.len() as u64, toc.len() as u64));
    let toc_offset = blob.len() as u64 + 8;
    blob.extend(skippable_frame(&compressed));
    let tar_split = zstd(b"{}");
    let tar_split_offset = blob.len() as u64 + 8;
    blob.extend(skippable_frame(&tar_split));
    let footer = ZstdChunkedFooter {
        generation: ZstdGeneration::V2,
        toc: FramePosition {
            offset: toc_offset,
            compressed_len: clen,
            uncompressed_len: ulen,
        },
        tar_split: Some(FramePosition {
            offset: tar_split_offset,
            compressed_len: tar_split.len() as u64,
            uncompressed_len: 2,
        }),
    };
    blob.extend(footer.to_bytes());
    (blob, checksum)
}

/// Runs `estargz cmd BLOB` bounded; asserts it fails with `want` in its message.
fn expect_zstd_error(dir: &Path, name: &str, blob: &[u8], cmd: &[&str], want: &str) {
    let path = dir.join(name);
    std::fs::write(&path, blob).unwrap();
    let mut args = cmd.to_vec();
    args.insert(1, path.to_str().unwrap());
    let out = run_bounded(&args, &[], Duration::from_secs(30));
    assert!(!out.success, "{name}: estargz {cmd:?} succeeded");
    assert!(
        out.stderr.contains(want),
        "{name}: want {want:?} in: {}",
        out.stderr
    );
    assert!(
        out.elapsed < Duration::from_secs(5),
        "{name}: took {:?}",
        out.elapsed
    );
    assert!(
        out.max_rss <= 64 * MIB,
        "{name}: peak RSS {} MiB",
        out.max_rss / MIB
    );
}

#[test]
fn zstd_chunked_bad_frames_and_footers_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let (good, checksum) = zstd_blob(None, None);
    // The well-formed blob reads, with its checksum.
    let path = dir.join("good.zst");
    std::fs::write(&path, &good).unwrap();
    let out = run_bounded(
        &[
            "verify",
            path.to_str().unwrap(),
            "--expected-manifest-checksum",
            &checksum,
        ],
        &[],
        Duration::from_secs(30),
    );
    assert!(out.success, "{}", out.stderr);

    // Wrong magic: neither generation, nor a gzip footer.
    let mut bad = good.clone();
    let n = bad.len();
    bad[n - 1] = b'y';
    expect_zstd_error(
        dir,
        "magic.zst",
        &bad,
        &["ls"],
        "not an eStargz, stargz or zstd:chunked blob",
    );

    // The footer's skippable frame header does not hold its payload.
    let mut bad = good.clone();
    let n = bad.len();
    bad[n - 72 + 4] = 63;
    expect_zstd_error(
        dir,
        "footer-frame.zst",
        &bad,
        &["ls"],
        "not in a skippable frame of 64 bytes",
    );

    // The TOC's skippable frame is shorter than the footer says (a frame
    // cut short): the frame header no longer matches.
    let (bad, _) = zstd_blob(None, Some((10, 100)));
    expect_zstd_error(
        dir,
        "toc-frame.zst",
        &bad,
        &["ls"],
        "no skippable frame of 10 bytes",
    );

    // The blob cut before its footer's TOC position.
    let cut: Vec<u8> = good[good.len() - 72 - 40..].to_vec();
    expect_zstd_error(dir, "truncated.zst", &cut, &["ls"], "outside the blob");

    // A TOC stated larger than max_toc_size is refused before anything is
    // read or allocated.
    let mut big = good.clone();
    let n = big.len();
    // Footer payload field 2 (bytes 16..24): the inflated TOC length.
    big[n - 64 + 16..n - 64 + 24].copy_from_slice(&(4u64 << 30).to_le_bytes());
    expect_zstd_error(dir, "toc-huge.zst", &big, &["ls"], "max_toc_size");

    // A TOC frame inflating to 256 MiB past a small stated length stops
    // at the stated length.
    let bomb = {
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
        let block = vec![b' '; 1 << 20];
        std::io::Write::write_all(&mut enc, b"{\"version\":1,\"entries\":[]}").unwrap();
        for _ in 0..256 {
            std::io::Write::write_all(&mut enc, &block).unwrap();
        }
        enc.finish().unwrap()
    };
    let bomb_len = bomb.len() as u64;
    let (bad, _) = zstd_blob(Some(bomb), Some((bomb_len, 1000)));
    expect_zstd_error(
        dir,
        "toc-bomb.zst",
        &bad,
        &["ls"],
        "inflates past the 1000 bytes",
    );

    // Manifest checksum mismatch.
    let path = dir.join("good.zst");
    let wrong = format!("sha256:{}", "0".repeat(64));
    let out = run_bounded(
        &[
            "ls",
            path.to_str().unwrap(),
            "--expected-manifest-checksum",
            &wrong,
        ],
        &[],
        Duration::from_secs(30),
    );
    assert!(!out.success);
    assert!(
        out.stderr.contains("manifest checksum") && out.stderr.contains(&wrong),
        "{}",
        out.stderr
    );
}
