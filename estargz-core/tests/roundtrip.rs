//! Build → open → read round trips over the tar shapes of the upstream suite.

mod common;

use common::*;
use estargz_core::{BuildOptions, Footer, Format, ZstdGeneration};

fn shapes() -> Vec<(&'static str, Vec<u8>)> {
    let big = pseudo_random(10 * 1024 + 7, 1, true);
    let random = pseudo_random(64_000, 2, false);
    vec![
        ("empty", TarBuilder::new().finish()),
        (
            "dirs",
            TarBuilder::new().dir("a/").dir("a/b/").dir("c/").finish(),
        ),
        (
            "files",
            TarBuilder::new()
                .dir("foo/")
                .file("foo/bar.txt", b"Some contents")
                .file("empty", b"")
                .file_with("x/attr", b"abc", |s| {
                    s.xattrs.insert("user.foo".into(), b"bar".to_vec());
                    s.xattrs.insert("user.bin".into(), vec![0xff, 0xfe, 0]);
                })
                .finish(),
        ),
        (
            "links",
            TarBuilder::new()
                .hardlink("early", "d/target")
                .dir("d/")
                .file("d/target", b"target!")
                .symlink("d/sym", "../../x")
                .hardlink("d/h2", "d/target")
                .finish(),
        ),
        (
            "specials",
            TarBuilder::new()
                .device("dev/c", b'3', 1, 3)
                .device("dev/b", b'4', 8, 1)
                .device("dev/f", b'6', 0, 0)
                .finish(),
        ),
        (
            "prefixes",
            TarBuilder::new()
                .dir("./")
                .dir("./a/")
                .file("./a/x", b"x")
                .file("/abs", b"abs")
                .file("../up", b"up")
                .finish(),
        ),
        (
            "long-names",
            TarBuilder::new()
                .file(&format!("{}/{}", "d".repeat(120), "f".repeat(150)), b"long")
                .file(&"n".repeat(99), b"99")
                .symlink("s", &"t".repeat(200))
                .finish(),
        ),
        (
            "chunked",
            TarBuilder::new()
                .file("big", &big)
                .file("exact", &pseudo_random(4096, 3, true))
                .file("random", &random)
                .finish(),
        ),
        (
            "duplicates",
            TarBuilder::new()
                .file("a", b"first")
                .file("b", b"b")
                .file("./a", b"second")
                .file("stargz.index.json", b"fake")
                .finish(),
        ),
        (
            "whiteouts",
            TarBuilder::new()
                .dir("d/")
                .file("d/.wh..wh..opq", b"")
                .file(".wh.gone", b"")
                .finish(),
        ),
        (
            "holes",
            TarBuilder::new()
                .file("sparse", &{
                    // Content-defined chunks around zero runs long enough
                    // to be zeros chunks, and one too short to be.
                    let mut v = pseudo_random(300_000, 9, false);
                    v[1000..9000].fill(0);
                    v[20_000..20_500].fill(0);
                    v.extend(std::iter::repeat_n(0, 5000));
                    v
                })
                .file("zeros", &[0; 4000])
                .finish(),
        ),
        ("many", {
            let mut t = TarBuilder::new();
            for i in 0..500 {
                t.file(&format!("m/{i:04}"), &pseudo_random(i * 3, i as u64, true));
            }
            t.finish()
        }),
    ]
}

fn check(name: &str, tar: &[u8], opts: &BuildOptions) {
    let (blob, result) = build_blob(tar, opts);
    assert_eq!(result.blob_size, blob.len() as u64, "{name}");
    assert_eq!(
        result.blob_digest,
        estargz_core::Digest::of(&blob),
        "{name}"
    );
    let stream = gunzip(&blob);
    assert_eq!(result.diff_id, estargz_core::Digest::of(&stream), "{name}");
    assert_eq!(result.uncompressed_size, stream.len() as u64, "{name}");
    if opts.keep_diff_id {
        assert!(
            stream == tar,
            "{name}: lossless stream differs from the input"
        );
    }
    let reader = open(&blob, &result);
    assert_eq!(
        reader.footer() == Footer::ExternalToc,
        opts.external_toc,
        "{name}"
    );
    reader.verify().unwrap();
    compare_trees(name, tar, &reader, opts.keep_diff_id);
}

fn compare_trees(name: &str, tar: &[u8], reader: &estargz_core::Reader, lossless: bool) {
    let mut want = tar_tree(tar);
    let got = reader_tree(reader);
    // Implicit parent directories appear only in the reader.
    for (path, (kind, _)) in &got {
        if kind == "dir" {
            want.entry(path.clone())
                .or_insert(("dir".into(), Vec::new()));
        }
    }
    if !lossless {
        want.remove(".prefetch.landmark");
    }
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{name}"
    );
    for (path, value) in &want {
        assert!(got[path] == *value, "{name}: {path} differs");
    }
}

#[test]
fn every_shape_round_trips_with_every_mode() {
    for (name, tar) in shapes() {
        // Tiny chunks on the 500-file shape only slow the suite down.
        let chunk_sizes: &[u64] = if name == "many" {
            &[1000, 4 << 20]
        } else {
            &[4, 1000, 4 << 20]
        };
        for &chunk_size in chunk_sizes {
            for (min_chunk_size, external_toc, keep_diff_id) in [
                (0, false, false),
                (8000, false, false),
                (0, true, false),
                (0, true, true),
                (3000, true, true),
            ] {
                if keep_diff_id && name == "duplicates" {
                    continue; // lossless mode refuses a stargz.index.json entry
                }
                let opts = BuildOptions::default()
                    .chunk_size(chunk_size)
                    .min_chunk_size(min_chunk_size)
                    .external_toc(external_toc)
                    .keep_diff_id(keep_diff_id)
                    .compression_level(Some(6));
                check(&format!("{name}/chunk{chunk_size}/min{min_chunk_size}/ext{external_toc}/keep{keep_diff_id}"), &tar, &opts);
            }
        }
    }
}

/// A zstd:chunked build opens, verifies and reads back every file; its
/// stream is the data frames only (v2: the input tar itself, which the
/// tar-split frame and the files rebuild byte for byte).
fn check_zstd_chunked(name: &str, tar: &[u8], opts: &BuildOptions) {
    let (blob, result) = build_blob(tar, opts);
    assert_eq!(result.blob_size, blob.len() as u64, "{name}");
    assert_eq!(
        result.blob_digest,
        estargz_core::Digest::of(&blob),
        "{name}"
    );
    assert_eq!(result.format, opts.format, "{name}");
    let stream = zstd::stream::decode_all(&blob[..]).unwrap();
    assert_eq!(result.diff_id, estargz_core::Digest::of(&stream), "{name}");
    assert_eq!(result.uncompressed_size, stream.len() as u64, "{name}");
    let position = result.zstd_chunked.expect("zstd:chunked position");
    let reader = open(&blob, &result);
    assert_eq!(reader.format(), opts.format, "{name}");
    assert_eq!(reader.footer(), Footer::ZstdChunked(position), "{name}");
    assert_eq!(
        reader.manifest_checksum(),
        result.manifest_checksum,
        "{name}"
    );
    // Opened from the annotations' position too, without the footer.
    let by_position = estargz_core::Reader::open(
        std::sync::Arc::new(blob.clone()),
        &estargz_core::OpenOptions::default()
            .zstd_chunked_position(Some(position))
            .expected_manifest_checksum(result.manifest_checksum),
    )
    .unwrap();
    assert_eq!(by_position.toc_digest(), result.toc_digest, "{name}");
    reader.verify().unwrap();
    let v2 = opts.format == Format::ZstdChunked(ZstdGeneration::V2);
    compare_trees(name, tar, &reader, v2);
    if v2 {
        assert!(stream == tar, "{name}: the v2 stream is not the input tar");
        assert!(
            rebuild_from_tar_split(&blob, &reader) == tar,
            "{name}: tar-split"
        );
        assert_eq!(
            reader.tar_split_tar_size().unwrap(),
            Some(tar.len() as u64),
            "{name}: size from the tar-split"
        );
        // A changed tar-split byte is caught by the TOC's tarSplitDigest.
        let t = position.tar_split.expect("v2 has a tar-split");
        let mut bad = blob.clone();
        bad[(t.offset + t.compressed_len / 2) as usize] ^= 1;
        let err = open(&bad, &result).tar_split_tar_size().unwrap_err();
        assert!(
            matches!(err, estargz_core::Error::DigestMismatch { .. }),
            "{name}: {err}"
        );
        // A footer stating another inflated length: more than the limit is
        // refused before reading, a wrong one after inflating.
        let field = blob.len() - 16; // tarSplitUncompressedLen, 8 before the magic
        for (stated, want) in [
            (1u64 << 31, "over the limit"),
            (t.uncompressed_len + 5, "inflates to"),
        ] {
            let mut bad = blob.clone();
            bad[field..field + 8].copy_from_slice(&stated.to_le_bytes());
            let err = open(&bad, &result).tar_split_tar_size().unwrap_err();
            assert!(err.to_string().contains(want), "{name}: {err}");
        }
    } else {
        assert_eq!(reader.tar_split_tar_size().unwrap(), None, "{name}");
    }
}

/// The input tar from the tar-split frame's segments and the reader's files.
fn rebuild_from_tar_split(blob: &[u8], reader: &estargz_core::Reader) -> Vec<u8> {
    use base64::Engine as _;
    let Footer::ZstdChunked(z) = reader.footer() else {
        panic!("not zstd:chunked")
    };
    let t = z.tar_split.expect("a tar-split frame");
    let frame = &blob[t.offset as usize..t.end() as usize];
    let lines = zstd::stream::decode_all(frame).unwrap();
    assert_eq!(lines.len() as u64, t.uncompressed_len);
    let mut out = Vec::new();
    for (i, line) in lines
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        let v: serde_json::Value = serde_json::from_slice(line).unwrap();
        assert_eq!(v["position"], i, "positions count lines");
        let b64 = |v: &serde_json::Value| {
            base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap())
                .unwrap()
        };
        match v["type"].as_u64() {
            Some(2) => out.extend(b64(&v["payload"])),
            Some(1) => {
                if v["size"].as_u64().unwrap_or(0) > 0 {
                    let id = reader.lookup(v["name"].as_str().unwrap()).unwrap();
                    let mut content = Vec::new();
                    std::io::Read::read_to_end(&mut reader.open_file(id).unwrap(), &mut content)
                        .unwrap();
                    assert_eq!(content.len() as u64, v["size"].as_u64().unwrap());
                    out.extend(content);
                }
            }
            other => panic!("tar-split entry type {other:?}"),
        }
    }
    out
}

#[test]
fn every_shape_round_trips_as_zstd_chunked() {
    for (name, tar) in shapes() {
        for level in [None, Some(1)] {
            let v2 = BuildOptions::default()
                .format(Format::ZstdChunked(ZstdGeneration::V2))
                .compression_level(level);
            if name == "duplicates" {
                let err = estargz_core::build(
                    estargz_core::BuildInput::Reader(Box::new(std::io::Cursor::new(tar.clone()))),
                    &mut Vec::new(),
                    &v2,
                )
                .unwrap_err();
                assert!(err.to_string().contains("twice"), "{err}");
            } else {
                check_zstd_chunked(&format!("{name}/v2/{level:?}"), &tar, &v2);
            }
            for chunk_size in [1000, 4 << 20] {
                let v1 = BuildOptions::default()
                    .format(Format::ZstdChunked(ZstdGeneration::V1))
                    .chunk_size(chunk_size)
                    .compression_level(level);
                check_zstd_chunked(&format!("{name}/v1/chunk{chunk_size}/{level:?}"), &tar, &v1);
            }
        }
    }
}

#[test]
fn zstd_chunked_v2_cuts_files_by_content() {
    let (_, tar) = shapes().into_iter().find(|(n, _)| *n == "holes").unwrap();
    let opts = BuildOptions::default().format(Format::ZstdChunked(ZstdGeneration::V2));
    let (blob, result) = build_blob(&tar, &opts);
    let toc = open(&blob, &result).toc().unwrap();
    let sparse: Vec<_> = toc.entries.iter().filter(|e| e.name == "sparse").collect();
    assert!(sparse.len() > 3, "several chunks: {}", sparse.len());
    let zeros: Vec<_> = sparse
        .iter()
        .filter(|e| e.chunk_type == estargz_core::ChunkType::Zeros)
        .map(|e| (e.chunk_offset, e.chunk_size))
        .collect();
    assert_eq!(zeros, [(1000, 8000), (300_000, 5000)]);
    assert!(sparse
        .iter()
        .all(|e| e.chunk_size > 0 && !e.chunk_digest.is_empty()));
    assert!(sparse[0].end_offset > sparse.last().unwrap().offset);
    assert_eq!(result.toc_digest, open(&blob, &result).toc_digest());
    // A file of one chunk has no chunk fields, as containers/storage writes it.
    let single = toc.entries.iter().find(|e| e.name == "zeros").unwrap();
    assert_eq!((single.chunk_size, single.chunk_digest.as_str()), (0, ""));
    assert!(!toc.tar_split_digest.is_empty());
    // Options that only eStargz has are refused.
    for bad in [
        opts.clone().min_chunk_size(100),
        opts.clone().external_toc(true),
        opts.clone().prioritized_files(vec!["sparse".into()]),
        opts.clone().compression_level(Some(23)),
    ] {
        let err = estargz_core::build(
            estargz_core::BuildInput::Reader(Box::new(std::io::Cursor::new(tar.clone()))),
            &mut Vec::new(),
            &bad,
        )
        .unwrap_err();
        assert!(
            matches!(err, estargz_core::Error::InvalidArgument(_)),
            "{err}"
        );
    }
}

#[test]
fn output_does_not_depend_on_thread_count() {
    let (_, tar) = shapes().into_iter().find(|(n, _)| *n == "many").unwrap();
    let base = build_blob(&tar, &BuildOptions::default().threads(1).chunk_size(64)).0;
    for threads in [2, 3, 8] {
        let other = build_blob(
            &tar,
            &BuildOptions::default().threads(threads).chunk_size(64),
        )
        .0;
        assert!(base == other, "{threads} threads changed the output");
    }
}

#[test]
fn prioritized_files_come_first_with_landmark() {
    let tar = TarBuilder::new()
        .file("a", b"a")
        .dir("d/")
        .file("d/b", b"b")
        .hardlink("l", "a")
        .file("z", b"z")
        .finish();
    let opts = BuildOptions::default()
        .prioritized_files(vec!["/d/b".into(), "./l".into(), "missing".into()])
        .allow_missing_prioritized(true);
    let (blob, result) = build_blob(&tar, &opts);
    assert_eq!(result.missed_prioritized, ["missing"]);
    let reader = open(&blob, &result);
    let toc = reader.toc().unwrap();
    let names: Vec<&str> = toc.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["d/", "d/b", "a", "l", ".prefetch.landmark", "z"]);
    let landmark = &toc.entries[4];
    assert_eq!(
        landmark.digest,
        "sha256:dc0e9c3658a1a3ed1ec94274d8b19925c93e1abb7ddba294923ad9bde30f8cb8"
    );
    // Missing prioritized files fail without the allow option.
    let strict = BuildOptions::default().prioritized_files(vec!["missing".into()]);
    let err = estargz_core::build(
        estargz_core::BuildInput::Reader(Box::new(std::io::Cursor::new(tar))),
        &mut Vec::new(),
        &strict,
    )
    .unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
}

#[test]
fn toc_follows_reference_chunk_rules() {
    let tar = TarBuilder::new()
        .dir("foo/")
        .file("foo/big.txt", b"This is such a big file")
        .finish();
    let (blob, result) = build_blob(&tar, &BuildOptions::default().chunk_size(4));
    let reader = open(&blob, &result);
    let entries = &reader.toc().unwrap().entries;
    // landmark, dir, reg + 5 chunks
    assert_eq!(entries.len(), 8);
    let data: Vec<_> = entries.iter().filter(|e| e.name == "foo/big.txt").collect();
    assert_eq!(data.len(), 6);
    for (i, e) in data.iter().enumerate() {
        assert_eq!(e.chunk_offset, 4 * i as u64);
        assert_eq!(
            e.chunk_size,
            if i < 5 { 4 } else { 0 },
            "short tail chunk has no chunkSize"
        );
        assert!(e.offset > 0 && (i == 0 || e.offset > data[i - 1].offset));
    }
    let id = reader.lookup("foo/big.txt").unwrap();
    for off in [0u64, 1, 3, 4, 12, 22] {
        let mut buf = vec![0u8; 30];
        let n = reader.read_at(id, off, &mut buf).unwrap();
        assert_eq!(&buf[..n], &b"This is such a big file"[off as usize..]);
    }
}

#[test]
fn directory_input_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("a/b")).unwrap();
    std::fs::write(root.join("a/b/f"), b"hello").unwrap();
    std::fs::hard_link(root.join("a/b/f"), root.join("a/h")).unwrap();
    std::os::unix::fs::symlink("b/f", root.join("a/s")).unwrap();
    let mut out = Vec::new();
    let result = estargz_core::build(
        estargz_core::BuildInput::Path(root.to_path_buf()),
        &mut out,
        &BuildOptions::default(),
    )
    .unwrap();
    let reader = open(&out, &result);
    let tree = reader_tree(&reader);
    assert_eq!(tree["a/b/f"], ("reg".into(), b"hello".to_vec()));
    assert_eq!(tree["a/s"], ("symlink".into(), b"b/f".to_vec()));
    assert_eq!(tree["a/h"].0, "hardlink");
}

#[test]
fn legacy_stargz_blobs_are_readable() {
    // A crfs-style blob: unchunked files with only `digest`, a TOC member whose
    // gzip header carries the "stargz.toc" extra field, and the 47-byte footer.
    let tar = TarBuilder::default()
        .dir("d/")
        .file("d/a", b"legacy content")
        .file("b", b"")
        .finish();
    let (blob, result) = build_blob(&tar, &BuildOptions::default());
    let toc_offset = result.toc_offset.unwrap();
    let mut toc = open(&blob, &result).toc().unwrap();
    for e in &mut toc.entries {
        e.chunk_digest.clear();
        e.chunk_size = 0;
    }
    let mut legacy = blob[..toc_offset as usize].to_vec();
    let mut gz = flate2::GzBuilder::new()
        .extra(b"stargz.toc".to_vec())
        .write(Vec::new(), flate2::Compression::new(6));
    std::io::Write::write_all(&mut gz, &estargz_core::build::toc_tar(&toc.to_json())).unwrap();
    legacy.extend_from_slice(&gz.finish().unwrap());
    legacy.extend_from_slice(&Footer::Legacy { toc_offset }.to_bytes());

    let reader =
        estargz_core::Reader::open(std::sync::Arc::new(legacy), &Default::default()).unwrap();
    assert_eq!(reader.footer(), Footer::Legacy { toc_offset });
    reader.verify().unwrap();
    let tree = reader_tree(&reader);
    assert_eq!(tree["d/a"], ("reg".into(), b"legacy content".to_vec()));
    assert_eq!(tree["b"], ("reg".into(), Vec::new()));
}

/// Counts positional reads, to pin down how many requests opening costs.
struct CountingSource {
    data: Vec<u8>,
    reads: std::sync::atomic::AtomicUsize,
}

impl estargz_core::ReadAt for CountingSource {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.data.read_at(buf, offset)
    }
    fn size(&self) -> u64 {
        self.data.len() as u64
    }
}

#[test]
fn opening_takes_two_reads() {
    let mut t = TarBuilder::default();
    for i in 0..2000 {
        t.file(&format!("dir/file-{i}"), b"x");
    }
    let (blob, _) = build_blob(&t.finish(), &BuildOptions::default());
    let src = std::sync::Arc::new(CountingSource {
        data: blob,
        reads: Default::default(),
    });
    let reader = estargz_core::Reader::open(src.clone(), &Default::default()).unwrap();
    assert_eq!(reader.toc_entry_count(), 2001); // landmark + files
    assert_eq!(
        src.reads.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "footer + TOC"
    );
}

/// A blob whose bytes can be swapped after opening.
struct SwappableSource(std::sync::Mutex<Vec<u8>>);

impl estargz_core::ReadAt for SwappableSource {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        self.0.lock().unwrap().read_at(buf, offset)
    }
    fn size(&self) -> u64 {
        self.0.lock().unwrap().len() as u64
    }
}

#[test]
fn the_toc_is_decoded_again_on_request_and_checked() {
    let mut t = TarBuilder::default();
    t.file("a", b"one");
    t.file("b", b"two");
    let (blob, result) = build_blob(&t.finish(), &BuildOptions::default());
    let original = estargz_core::Toc::from_json(&{
        let reader = open(&blob, &result);
        reader.toc().unwrap().to_json()
    })
    .unwrap();
    // The same blob built with other file contents has a TOC of the same
    // length at the same place but another digest.
    let mut t = TarBuilder::default();
    t.file("a", b"uno");
    t.file("b", b"two");
    let (other, _) = build_blob(&t.finish(), &BuildOptions::default());
    assert_eq!(other.len(), blob.len());
    let src = std::sync::Arc::new(SwappableSource(std::sync::Mutex::new(blob)));
    let reader = estargz_core::Reader::open(src.clone(), &Default::default()).unwrap();
    assert_eq!(reader.toc().unwrap(), original);
    assert_eq!(reader.toc_entry_count(), original.entries.len());
    *src.0.lock().unwrap() = other;
    match reader.toc() {
        Err(estargz_core::Error::DigestMismatch { what, .. }) => assert_eq!(what, "TOC"),
        other => panic!("a changed TOC must not be returned: {other:?}"),
    }
}

/// `tar` with every `~` byte made 0xE9 (Latin-1 "é", not UTF-8), header
/// checksums fixed: names that are not UTF-8, in the header itself or in
/// the PAX / long-name records long names need.
fn latin1(tar: &[u8]) -> Vec<u8> {
    let mut out = tar.to_vec();
    for block in out.chunks_mut(512) {
        let header = &block[257..262] == b"ustar";
        let mut changed = false;
        for b in block.iter_mut().filter(|b| **b == b'~') {
            *b = 0xe9;
            changed = true;
        }
        if header && changed {
            block[148..156].fill(b' ');
            let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
            block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        }
    }
    out
}

/// Names that are not UTF-8: containers/storage's JSON TOC would hold them
/// lossy while its tar-split keeps the bytes (its own pull then refuses the
/// layer), so v2 refuses them up front, naming the entry's bytes; eStargz
/// and v1 build them (the blob keeps the bytes). A name that IS UTF-8 and
/// holds U+FFFD is no reason to refuse.
#[test]
fn zstd_chunked_v2_refuses_names_that_are_not_utf8() {
    let long = format!("d/{}caf~.txt", "x".repeat(120));
    for (what, tar, shown) in [
        (
            "header name",
            TarBuilder::new()
                .dir("d/")
                .file("d/caf~.txt", b"hi")
                .finish(),
            r"d/caf\xe9.txt",
        ),
        (
            "long name",
            TarBuilder::new().file(&long, b"hi").finish(),
            r"caf\xe9.txt",
        ),
        (
            "link name",
            TarBuilder::new().symlink("s", "caf~").finish(),
            r#"link name "caf\xe9""#,
        ),
    ] {
        let tar = latin1(&tar);
        let index = estargz_core::testing::index(&tar).unwrap();
        assert!(
            index
                .entries
                .iter()
                .any(|e| e.non_utf8_name.is_some() || e.non_utf8_link_name.is_some()),
            "{what}: the index keeps the bytes"
        );
        let v2 = BuildOptions::default().format(Format::ZstdChunked(ZstdGeneration::V2));
        let err = estargz_core::build(
            estargz_core::BuildInput::Reader(Box::new(std::io::Cursor::new(tar.clone()))),
            &mut Vec::new(),
            &v2,
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(shown) && msg.contains("not UTF-8"),
            "{what}: {msg}"
        );
        assert!(
            matches!(err, estargz_core::Error::Unsupported(_)),
            "{what}: {err:?}"
        );
        for ok in [
            BuildOptions::default(),
            BuildOptions::default().format(Format::ZstdChunked(ZstdGeneration::V1)),
        ] {
            let (blob, result) = build_blob(&tar, &ok);
            open(&blob, &result).verify().unwrap();
        }
    }
    let tar = TarBuilder::new().file("d/caf\u{fffd}.txt", b"hi").finish();
    check_zstd_chunked(
        "U+FFFD",
        &tar,
        &BuildOptions::default().format(Format::ZstdChunked(ZstdGeneration::V2)),
    );
}
