//! Arbitrary bytes as builder input (a tar, or a gzip-compressed tar): the tar
//! indexer and the builder must return Ok or Err, and a blob the builder
//! produced must open, verify, and show exactly the tar's entries and bytes.
//! A custom mutator re-fixes header checksums of most mutants, or nearly every
//! mutation would stop at "bad header checksum". An input starting with
//! `TAR_SPEC_PREFIX` is a compact entry list turned into a tar first.
#![no_main]

use std::io::{Cursor, Read};

use estargz_core::Digest;
use estargz_core::testing::{index, TarKind};
use estargz_core::{build, BuildInput, BuildOptions, OpenOptions, Reader};
use estargz_fuzz::{compare_with_tar, exercise_reader, source, tar_expectation, touch_error};
use libfuzzer_sys::{fuzz_mutator, fuzz_target};

/// Decompressed inputs above this are skipped (gzip bombs only cost time).
const MAX_PLAIN: u64 = 1 << 20;

fn gunzip(data: &[u8], limit: u64) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(data)
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .ok()?;
    (out.len() as u64 <= limit).then_some(out)
}

fuzz_target!(init: estargz_fuzz::init(), |input: &[u8]| {
    let spec_tar = estargz_fuzz::tar_from_spec(input);
    let data = spec_tar.as_deref().unwrap_or(input);
    let is_gzip = data.starts_with(&[0x1f, 0x8b, 0x08]);
    let plain = if is_gzip {
        match gunzip(data, MAX_PLAIN) {
            Some(p) => p,
            None => return,
        }
    } else {
        data.to_vec()
    };
    let tar_index = index(&plain);
    let expected = match &tar_index {
        Ok(idx) => {
            let mut last = 0;
            for e in &idx.entries {
                assert!(last <= e.header_start && e.header_start < e.data_start);
                assert!(e.data_start + e.size <= idx.total_size);
                assert!(e.kind == TarKind::Reg || e.size == 0);
                last = e.data_start + e.size;
            }
            assert!(idx.entries_end <= idx.total_size);
            Some(tar_expectation(&plain, idx))
        }
        Err(e) => {
            touch_error(e);
            None
        }
    };
    let first_file = tar_index.as_ref().ok().and_then(|idx| {
        idx.entries
            .iter()
            .find(|e| e.kind == TarKind::Reg)
            .map(|e| e.name.clone())
    });
    let modes = [
        ("normal", BuildOptions::default()
            .chunk_size(100)
            .compression_level(Some(1))
            .threads(1)),
        ("prioritized+min-chunk", BuildOptions::default()
            .chunk_size(100)
            .min_chunk_size(300)
            .compression_level(Some(1))
            .threads(1)
            .prioritized_files(first_file.into_iter().chain(["missing/file".to_string()]).collect())
            .allow_missing_prioritized(true)),
        ("lossless", BuildOptions::default()
            .chunk_size(100)
            .compression_level(Some(1))
            .threads(1)
            .external_toc(true)
            .keep_diff_id(true)),
    ];
    for (mode, opts) in modes {
        let mut blob = Vec::new();
        let input = BuildInput::Reader(Box::new(Cursor::new(data.to_vec())));
        let result = match build(input, &mut blob, &opts) {
            Ok(r) => r,
            Err(e) => {
                touch_error(&e);
                continue;
            }
        };
        assert!(tar_index.is_ok(), "{mode} build accepted a tar that tar::index rejects");
        assert_eq!(result.blob_size, blob.len() as u64, "{mode}: blob size");
        assert_eq!(result.blob_digest, Digest::of(&blob), "{mode}: blob digest");
        let unpacked = gunzip(&blob, u64::MAX).expect("the blob is valid multi-member gzip");
        assert_eq!(result.uncompressed_size, unpacked.len() as u64, "{mode}: size");
        assert_eq!(result.diff_id, Digest::of(&unpacked), "{mode}: DiffID");
        if opts.keep_diff_id {
            assert!(unpacked == plain, "lossless blob does not decompress to the input tar");
        }
        let open = OpenOptions::default()
            .external_toc_data(result.external_toc_data.clone())
            .expected_toc_digest(Some(result.toc_digest));
        let reader = match Reader::open(source(&blob), &open) {
            Ok(reader) => reader,
            Err(e) if estargz_fuzz::ignored(&e.to_string()) => continue,
            Err(e) => panic!("{mode}: built blob does not open: {e}"),
        };
        // The reader drops an entry equal to the one before it (a repeated
        // tar header); what remains is compared with the tar below.
        let kept = reader.toc_entry_count();
        assert!(kept <= result.toc_entries, "{mode}: reader has more entries than built");
        assert_eq!(kept == 0, result.toc_entries == 0, "{mode}: entries lost");
        if let Err(e) = reader.verify() {
            panic!("{mode}: built blob does not verify: {e}");
        }
        let files = exercise_reader(&reader, false);
        if let Some(expected) = &expected {
            compare_with_tar(&reader, &files, expected, opts.keep_diff_id);
        }
    }
});

fuzz_mutator!(|data: &mut [u8], size: usize, max_size: usize, seed: u32| {
    let new_size = libfuzzer_sys::fuzzer_mutate(data, size, max_size);
    if !seed.is_multiple_of(8) {
        estargz_fuzz::fix_tar_checksums(&mut data[..new_size]);
    }
    new_size
});
