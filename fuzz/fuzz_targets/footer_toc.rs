//! Footer detection and TOC decoding on arbitrary bytes, plus the file tree
//! built from any TOC that decodes. The input is used whole as TOC JSON
//! (trailing bytes after the first JSON value are ignored) and its last bytes
//! as a footer, so a seed is `TOC JSON ++ footer`.
#![no_main]

use estargz_core::footer::MAX_FOOTER_SIZE;
use estargz_core::reader::Index;
use estargz_core::toc::format_time;
use estargz_core::{Footer, Toc};
use estargz_fuzz::{check_index, touch_error};
use libfuzzer_sys::fuzz_target;

fn footer(data: &[u8]) -> Option<u64> {
    let len = data.len() as u64;
    let tail = &data[data.len().saturating_sub(MAX_FOOTER_SIZE)..];
    let mut toc_offset = None;
    for blob_size in [len, tail.len() as u64, u64::MAX] {
        match Footer::parse(tail, blob_size) {
            Ok(f) => {
                if let Some(off) = f.toc_offset() {
                    assert!(
                        off.checked_add(f.size() as u64)
                            .is_some_and(|e| e <= blob_size),
                        "{f:?} accepted for a {blob_size}-byte blob"
                    );
                    if blob_size == len {
                        toc_offset = Some(off);
                    }
                }
                let bytes = f.to_bytes();
                assert_eq!(bytes.len(), f.size());
                assert_eq!(
                    Footer::parse(&bytes, u64::MAX).ok(),
                    Some(f),
                    "footer round trip"
                );
            }
            Err(e) => touch_error(&e),
        }
    }
    toc_offset
}

/// True when `t` formats as a 4-digit-year RFC 3339 time (Go cannot marshal
/// other years either, so those are not expected to round-trip).
fn representable(t: Option<i64>) -> bool {
    t.is_none_or(|t| format_time(t).len() == 20)
}

fn toc(data: &[u8], toc_offset: Option<u64>) {
    let toc = match Toc::from_json(data) {
        Ok(toc) => toc,
        Err(e) => return touch_error(&e),
    };
    // The serializer's output must decode to the same TOC.
    let json = toc.to_json();
    let again = Toc::from_json(&json).unwrap_or_else(|e| {
        panic!(
            "to_json output does not decode: {e}\n{}",
            String::from_utf8_lossy(&json)
        )
    });
    assert_eq!(again.version, toc.version);
    assert_eq!(again.entries.len(), toc.entries.len());
    for (a, b) in toc.entries.iter().zip(&again.entries) {
        if a.mod_time != b.mod_time && !representable(a.mod_time) {
            let mut a = a.clone();
            a.mod_time = b.mod_time;
            assert_eq!(&a, b, "TOC entry round trip");
        } else {
            assert_eq!(a, b, "TOC entry round trip");
        }
    }
    let len = data.len() as u64;
    for payload_end in [Some(len), Some(u64::MAX), toc_offset]
        .into_iter()
        .flatten()
    {
        match Index::build(&toc, payload_end) {
            Ok(idx) => check_index(&idx),
            Err(e) => touch_error(&e),
        }
    }
}

fuzz_target!(init: estargz_fuzz::init(), |data: &[u8]| {
    let toc_offset = footer(data);
    toc(data, toc_offset);
});
