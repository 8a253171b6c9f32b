//! A whole blob in memory: open it (default limits, and small limits that
//! keep allocations small), read every file in several block sizes, verify
//! every chunk. Any outcome but Ok/Err (panic, hang, huge allocation) is a bug.
//! An input ending in `u32le(n) ++ "XTOC"` carries an external TOC member
//! (its n bytes before the trailer), see `seeds::split_external`; one starting
//! with `FRAMED_TOC_PREFIX` gives TOC JSON and data area separately, see
//! `assemble_framed`.
#![no_main]

use estargz_core::{OpenOptions, Reader};
use estargz_fuzz::seeds::split_external;
use estargz_fuzz::{exercise_reader, source, touch_error};
use libfuzzer_sys::fuzz_target;

fuzz_target!(init: estargz_fuzz::init(), |data: &[u8]| {
    let framed = estargz_fuzz::assemble_framed(data);
    let (blob, external_toc) = match &framed {
        Some(blob) => (&blob[..], None),
        None => split_external(data),
    };
    let external_toc = external_toc.map(<[u8]>::to_vec);
    let default = OpenOptions::default().external_toc_data(external_toc.clone());
    let small = OpenOptions::default()
        .external_toc_data(external_toc)
        .max_toc_size(64 << 10)
        .max_chunk_size(64 << 10)
        .max_entries(4096)
        .max_path_depth(64)
        .max_name_bytes(64 << 10)
        .max_member_inflation(16);
    let opened_default = match Reader::open(source(blob), &default) {
        Ok(reader) => {
            exercise_reader(&reader, true);
            // Opening again with the TOC digest pinned succeeds; a wrong one fails.
            let pinned = default.clone()
                .expected_toc_digest(Some(reader.toc_digest()));
            assert!(Reader::open(source(blob), &pinned).is_ok(), "pinned TOC digest");
            let empty = estargz_core::Digest::of(b"");
            let wrong = default.expected_toc_digest(Some(empty));
            assert!(
                reader.toc_digest() == empty
                    || Reader::open(source(blob), &wrong).is_err(),
                "wrong TOC digest accepted"
            );
            true
        }
        Err(e) => {
            touch_error(&e);
            false
        }
    };
    // Resource bound: with small limits, one input costs little memory
    // and time, whatever it holds.
    let baseline = estargz_fuzz::reset_peak_memory();
    let started = std::time::Instant::now();
    match Reader::open(source(blob), &small) {
        Ok(reader) => {
            assert!(opened_default, "opens with small limits but not with the defaults");
            exercise_reader(&reader, true);
        }
        Err(e) => touch_error(&e),
    }
    let (peak, elapsed) = (estargz_fuzz::peak_memory() - baseline, started.elapsed());
    assert!(
        peak <= estargz_fuzz::INPUT_MEMORY_BOUND,
        "one input held {peak} bytes at once with small limits"
    );
    assert!(
        elapsed <= estargz_fuzz::INPUT_TIME_BOUND,
        "one input took {elapsed:?} with small limits"
    );
});
