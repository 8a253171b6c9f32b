//! Resource limits on untrusted TOCs (issue 15): each is configurable, fails
//! with `LimitExceeded` naming the option, and what stays within them costs
//! linear time.

mod common;

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use estargz_core::extract::{extract, ExtractOptions};
use estargz_core::{BuildOptions, Error, Footer, OpenOptions, Reader};

/// A blob with no file data whose TOC is `json`.
fn toc_only_blob(json: &str) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    gz.write_all(&estargz_core::build::toc_tar(json.as_bytes()))
        .unwrap();
    let mut out = gz.finish().unwrap();
    out.extend_from_slice(&Footer::Estargz { toc_offset: 0 }.to_bytes());
    out
}

fn toc_json(entries: &[String]) -> String {
    format!("{{\"version\":1,\"entries\":[{}]}}", entries.join(","))
}

fn dir(name: &str) -> String {
    format!("{{\"name\":\"{name}\",\"type\":\"dir\",\"mode\":493}}")
}

fn open_with(json: &str, opts: OpenOptions) -> Result<Reader, Error> {
    Reader::open(Arc::new(toc_only_blob(json)), &opts)
}

fn expect_limit(result: Result<Reader, Error>, option: &str) {
    match result {
        Err(Error::LimitExceeded(m)) => assert!(m.contains(option), "{m} should name {option}"),
        Err(e) => panic!("expected LimitExceeded naming {option}, got {e}"),
        Ok(_) => panic!("expected LimitExceeded naming {option}, but it opened"),
    }
}

#[test]
fn every_limit_is_configurable_and_named() {
    let entries: Vec<String> = (0..10).map(|i| dir(&format!("d{i}"))).collect();
    let json = toc_json(&entries);
    assert!(open_with(&json, OpenOptions::default()).is_ok());
    expect_limit(
        open_with(&json, OpenOptions::default().max_entries(9)),
        "max_entries",
    );
    // Implied directories are nodes too.
    expect_limit(
        open_with(
            &toc_json(&[dir("a/b/c/d/e/f/g/h/i/j")]),
            OpenOptions::default().max_entries(5),
        ),
        "max_entries",
    );
    expect_limit(
        open_with(&json, OpenOptions::default().max_name_bytes(19)),
        "max_name_bytes",
    );
    expect_limit(
        open_with(
            &toc_json(&[dir("a/b/c/d")]),
            OpenOptions::default().max_path_depth(3),
        ),
        "max_path_depth",
    );
    expect_limit(
        open_with(&json, OpenOptions::default().max_toc_size(100)),
        "max_toc_size",
    );
    assert!(open_with(
        &toc_json(&[dir("a/b/c")]),
        OpenOptions::default().max_path_depth(3),
    )
    .is_ok());
}

#[test]
fn repeats_of_an_entry_cost_nothing_and_change_nothing() {
    let mut entries = vec![dir("a")];
    entries.extend(std::iter::repeat_n(dir("d"), 1000));
    entries.push(dir("b"));
    let reader = open_with(&toc_json(&entries), OpenOptions::default().max_entries(4)).unwrap();
    assert_eq!(reader.toc_entry_count(), 3);
    let names: Vec<&str> = reader
        .read_dir(estargz_core::reader::ROOT)
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, ["a", "b", "d"]);
    // Repeats that are not next to each other still count.
    let alternating: Vec<String> = (0..10).map(|i| dir(["x", "y"][i % 2])).collect();
    expect_limit(
        open_with(
            &toc_json(&alternating),
            OpenOptions::default().max_entries(4),
        ),
        "max_entries",
    );
}

#[test]
fn large_tocs_stream_and_keep_their_digest() {
    // Over the size decoded from memory (64 MiB), padded with a key
    // readers ignore: the streamed path gives the same TOC and digest, and
    // checks the expected digest.
    let entries: Vec<String> = (0..1000).map(|i| dir(&format!("dir-{i:04}"))).collect();
    let json = format!(
        "{{\"version\":1,\"padding\":\"{}\",\"entries\":[{}]}}",
        "x".repeat(65 << 20),
        entries.join(",")
    );
    let blob = Arc::new(toc_only_blob(&json));
    let digest = estargz_core::Digest::of(json.as_bytes());
    let reader = Reader::open(
        blob.clone(),
        &OpenOptions::default().expected_toc_digest(Some(digest)),
    )
    .unwrap();
    assert_eq!(reader.toc_digest(), digest);
    assert_eq!(reader.toc_entry_count(), entries.len());
    let wrong = estargz_core::Digest::from_bytes([0; 32]);
    match Reader::open(
        blob,
        &OpenOptions::default().expected_toc_digest(Some(wrong)),
    ) {
        Err(Error::DigestMismatch { actual, .. }) => assert_eq!(actual, digest.to_string()),
        Err(e) => panic!("expected a digest mismatch, got {e}"),
        Ok(_) => panic!("a wrong TOC digest was accepted"),
    }
}

#[test]
fn depth_costs_linear_time() {
    // 8,000 directories deep (beyond the default limit, raised here):
    // opening, listing every path and extracting stay linear. Extraction
    // used to re-walk from the target for every directory (> 120 s).
    let mut deepest = String::from("p");
    for _ in 1..8000 {
        deepest.push_str("/a");
    }
    let entries = vec![
        dir(&deepest),
        format!("{{\"name\":\"{deepest}/s\",\"type\":\"symlink\",\"linkName\":\"t\"}}"),
    ];
    let start = Instant::now();
    let reader = open_with(
        &toc_json(&entries),
        OpenOptions::default().max_path_depth(10_000),
    )
    .unwrap();
    let id = reader.lookup(&format!("{deepest}/s")).unwrap();
    assert_eq!(reader.index().path(id), format!("{deepest}/s"));
    let out = tempfile::tempdir().unwrap();
    let stats = extract(&reader, out.path(), &ExtractOptions::default()).unwrap();
    assert_eq!(stats.dirs, 8000);
    assert_eq!(stats.others, 1);
    let elapsed = start.elapsed();
    assert!(
        elapsed < Duration::from_secs(20),
        "8,000 levels took {elapsed:?}"
    );
}

#[test]
fn hardlink_to_a_symlink_extracts_like_tar() {
    // `tar -x` links the symlink itself (linkat without AT_SYMLINK_FOLLOW);
    // the link comes before its target in name order.
    let tar = TarBuilder::new()
        .symlink("z", "nowhere")
        .hardlink("a", "z")
        .file("f", b"data")
        .hardlink("e", "f")
        .finish();
    let (blob, result) = build_blob(&tar, &BuildOptions::default());
    let reader = open(&blob, &result);
    let out = tempfile::tempdir().unwrap();
    extract(&reader, out.path(), &ExtractOptions::default()).unwrap();
    let a = std::fs::symlink_metadata(out.path().join("a")).unwrap();
    let z = std::fs::symlink_metadata(out.path().join("z")).unwrap();
    assert!(a.file_type().is_symlink());
    assert_eq!(a.ino(), z.ino());
    assert_eq!(
        std::fs::read_link(out.path().join("a")).unwrap(),
        std::path::Path::new("nowhere")
    );
    let e = std::fs::metadata(out.path().join("e")).unwrap();
    assert_eq!(
        e.ino(),
        std::fs::metadata(out.path().join("f")).unwrap().ino()
    );
}
