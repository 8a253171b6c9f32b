//! Inputs the fuzzers once broke (fuzz/artifacts-found/<target>/), replayed
//! with the same contract as the fuzz targets: an error is fine, a panic,
//! hang or a blob that does not read back is not.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use estargz_core::{BuildInput, BuildOptions, OpenOptions, Reader};

fn artifacts(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/artifacts-found")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

fn read_everything(reader: &Reader) {
    for node in reader.index().entries() {
        if node.kind() == estargz_core::EntryType::Reg {
            let mut buf = vec![0u8; 4096];
            let _ = reader.read_at(node.id(), 0, &mut buf);
        }
    }
    let _ = reader.verify();
}

#[test]
fn footer_and_toc_inputs() {
    for path in artifacts("footer_toc") {
        let data = std::fs::read(&path).unwrap();
        let _ = estargz_core::Footer::parse(&data, data.len() as u64);
        if let Ok(toc) = estargz_core::Toc::from_json(&data) {
            let _ = estargz_core::reader::Index::build(&toc, data.len() as u64);
        }
    }
}

#[test]
fn blob_inputs() {
    for path in artifacts("open_read") {
        let data = std::fs::read(&path).unwrap();
        if let Ok(reader) = Reader::open(Arc::new(data), &OpenOptions::default()) {
            read_everything(&reader);
        }
    }
}

#[test]
fn tar_inputs_build_readable_blobs_or_fail() {
    let found = artifacts("tar_build");
    assert!(!found.is_empty(), "regression corpus missing");
    for path in found {
        let tar = std::fs::read(&path).unwrap();
        let opts = BuildOptions::default()
            .chunk_size(64)
            .compression_level(Some(1));
        let mut blob = Vec::new();
        let Ok(result) = estargz_core::build(
            BuildInput::Reader(Box::new(std::io::Cursor::new(tar))),
            &mut blob,
            &opts,
        ) else {
            continue;
        };
        let reader = common::open(&blob, &result);
        reader
            .verify()
            .unwrap_or_else(|e| panic!("{}: built but does not verify: {e}", path.display()));
    }
}
