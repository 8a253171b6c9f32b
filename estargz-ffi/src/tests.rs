//! Unit tests of the ABI glue; the C programs in tests/c exercise the
//! installed library end to end.

use std::ffi::{c_char, CStr, CString};
use std::ptr;

use estargz_core::ErrorCode;

use crate::builder::*;
use crate::dir_iter::*;
use crate::entry::*;
use crate::entry_details::*;
use crate::error::{estargz_last_error, estargz_result, estargz_result_name, ALL_RESULTS};
use crate::estargz_result::*;
use crate::open_options::*;
use crate::reader::*;

const CORE_CODES: [ErrorCode; 17] = [
    ErrorCode::Io,
    ErrorCode::Truncated,
    ErrorCode::InvalidFooter,
    ErrorCode::InvalidToc,
    ErrorCode::InvalidTar,
    ErrorCode::Corrupt,
    ErrorCode::DigestMismatch,
    ErrorCode::UnsafePath,
    ErrorCode::NotFound,
    ErrorCode::WrongType,
    ErrorCode::Unsupported,
    ErrorCode::InvalidArgument,
    ErrorCode::LimitExceeded,
    ErrorCode::Network,
    ErrorCode::Timeout,
    ErrorCode::Registry,
    ErrorCode::Unauthorized,
];

#[test]
fn every_core_code_keeps_its_number() {
    for code in CORE_CODES {
        assert_eq!(estargz_result::from(code) as i32, code as i32, "{code:?}");
    }
    for (i, r) in ALL_RESULTS.iter().enumerate() {
        assert_eq!(*r as i32, i as i32);
    }
}

fn s(p: *const c_char) -> String {
    assert!(!p.is_null());
    // SAFETY: the library returns NUL-terminated strings.
    unsafe { CStr::from_ptr(p) }.to_str().unwrap().to_string()
}

fn last_error() -> String {
    let mut buf = [0 as c_char; 512];
    let mut n = 0;
    // SAFETY: valid buffer and out pointer.
    assert_eq!(
        unsafe { estargz_last_error(buf.as_mut_ptr(), buf.len(), &mut n) },
        ESTARGZ_OK
    );
    s(buf.as_ptr())
}

#[test]
fn names_and_version() {
    assert_eq!(s(estargz_result_name(7)), "ESTARGZ_DIGEST_MISMATCH");
    assert_eq!(s(estargz_result_name(-1)), "ESTARGZ_UNKNOWN");
    assert_eq!(s(estargz_result_name(19)), "ESTARGZ_UNKNOWN");
    for r in ALL_RESULTS {
        assert_eq!(s(estargz_result_name(r as i32)), format!("{r:?}"));
    }
    assert_eq!(s(crate::estargz_version()), crate::VERSION_STRING);
}

#[test]
fn panics_become_internal_errors() {
    let code = crate::export::call(|| "estargz_test", None, || panic!("boom"));
    assert_eq!(code, ESTARGZ_INTERNAL);
    let msg = last_error();
    assert!(
        msg.starts_with("estargz_test: internal error (panic): boom"),
        "{msg}"
    );
}

/// An export written like the real ones, for the boundary tests.
unsafe extern "C" fn estargz_test_export(
    builder: *mut estargz_builder,
    fail: bool,
) -> estargz_result {
    crate::export::ffi_call!(builder => |_b| {
        // The name must come from this function even inside closures.
        let inner = || -> crate::error::FfiResult {
            if fail {
                panic!("boom");
            }
            Err(crate::error::Failure::invalid("refused"))
        };
        inner()
    })
}

#[test]
fn exports_record_their_own_name() {
    // SAFETY: NULL and a live builder are both valid handle arguments.
    unsafe {
        assert_eq!(
            estargz_test_export(ptr::null_mut(), false),
            ESTARGZ_INVALID_ARGUMENT
        );
        assert_eq!(last_error(), "estargz_test_export: `builder` is NULL");
        let mut b = ptr::null_mut();
        assert_eq!(estargz_builder_new(&mut b), ESTARGZ_OK);
        assert_eq!(estargz_test_export(b, true), ESTARGZ_INTERNAL);
        assert_eq!(
            last_error(),
            "estargz_test_export: internal error (panic): boom"
        );
        assert_eq!(estargz_test_export(b, false), ESTARGZ_INVALID_ARGUMENT);
        let mut buf = [0 as c_char; 128];
        assert_eq!(
            estargz_builder_last_error(b, buf.as_mut_ptr(), buf.len(), ptr::null_mut()),
            ESTARGZ_OK
        );
        assert_eq!(s(buf.as_ptr()), "estargz_test_export: refused");
        // A real export, through the same macro.
        assert_eq!(
            estargz_builder_set_compression_level(b, 23),
            ESTARGZ_INVALID_ARGUMENT
        );
        assert_eq!(
            last_error(),
            "estargz_builder_set_compression_level: compression level 23 (valid: 0-12 for estargz, 1-22 for zstd:chunked)"
        );
        estargz_builder_free(b);
    }
}

#[test]
fn snprintf_semantics() {
    let code = crate::export::call(
        || "f",
        None,
        || Err(crate::error::Failure::invalid("abcdef")),
    );
    assert_eq!(code, ESTARGZ_INVALID_ARGUMENT);
    let mut buf = [b'x' as c_char; 4];
    let mut n = 0;
    // SAFETY: valid buffer and out pointer.
    unsafe {
        assert_eq!(estargz_last_error(buf.as_mut_ptr(), 4, &mut n), ESTARGZ_OK);
        assert_eq!(s(buf.as_ptr()), "f: ");
        // Size query.
        assert_eq!(estargz_last_error(ptr::null_mut(), 0, &mut n), ESTARGZ_OK);
        assert_eq!(
            estargz_last_error(ptr::null_mut(), 1, &mut n),
            ESTARGZ_INVALID_ARGUMENT
        );
    }
    assert_eq!(n, "f: abcdef".len());
}

#[test]
fn build_and_read_through_the_abi() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("d")).unwrap();
    std::fs::write(tree.join("d/f.txt"), b"hello, world\n").unwrap();
    let input = CString::new(tree.to_str().unwrap()).unwrap();
    let blob = CString::new(dir.path().join("b.esgz").to_str().unwrap()).unwrap();
    // SAFETY: every pointer passed is valid for the call; handles are freed once.
    unsafe {
        let mut b = ptr::null_mut();
        assert_eq!(estargz_builder_new(&mut b), ESTARGZ_OK);
        assert_eq!(
            estargz_builder_set_compression_level(b, 23),
            ESTARGZ_INVALID_ARGUMENT
        );
        assert_eq!(
            estargz_builder_run(b, ptr::null_mut()),
            ESTARGZ_INVALID_ARGUMENT
        );
        estargz_builder_free(b);
        let toc_digest = build_blob(&input, &blob);
        assert!(toc_digest.to_str().unwrap().starts_with("sha256:"));

        let mut opts = ptr::null_mut();
        assert_eq!(estargz_open_options_new(&mut opts), ESTARGZ_OK);
        // Not a digest: refused when set.
        assert_eq!(
            estargz_open_options_set_expected_toc_digest(opts, c"sha256:0000".as_ptr()),
            ESTARGZ_INVALID_ARGUMENT
        );
        let wrong = c"sha256:0000000000000000000000000000000000000000000000000000000000000000";
        assert_eq!(
            estargz_open_options_set_expected_toc_digest(opts, wrong.as_ptr()),
            ESTARGZ_OK
        );
        let mut r = ptr::null_mut();
        assert_eq!(
            estargz_reader_open_path(blob.as_ptr(), opts, &mut r),
            ESTARGZ_DIGEST_MISMATCH
        );
        assert!(r.is_null());
        assert!(last_error().starts_with("estargz_reader_open_path: digest mismatch"));
        assert_eq!(
            estargz_open_options_set_expected_toc_digest(opts, toc_digest.as_ptr()),
            ESTARGZ_OK
        );
        assert_eq!(
            estargz_reader_open_path(blob.as_ptr(), opts, &mut r),
            ESTARGZ_OK
        );
        estargz_open_options_free(opts);

        let mut e = std::mem::zeroed::<estargz_entry>();
        // A struct_size the library does not know is refused, nothing written.
        e.struct_size = size_of::<estargz_entry>() + 8;
        assert_eq!(
            estargz_reader_lookup(r, c"/d/f.txt".as_ptr(), &mut e),
            ESTARGZ_INVALID_ARGUMENT
        );
        assert!(
            last_error().starts_with("estargz_reader_lookup: `out_entry->struct_size` is "),
            "{}",
            last_error()
        );
        assert_eq!((e.id, e.size), (0, 0));
        e.struct_size = size_of::<estargz_entry>();
        assert_eq!(
            estargz_reader_lookup(r, c"/d/f.txt".as_ptr(), &mut e),
            ESTARGZ_OK
        );
        assert_eq!(e.kind, estargz_entry_type::ESTARGZ_ENTRY_REG);
        assert_eq!(e.size, 13);
        let mut buf = [0u8; 64];
        let mut n = 0;
        assert_eq!(
            estargz_reader_read(r, e.id, 7, buf.as_mut_ptr(), 64, &mut n),
            ESTARGZ_OK
        );
        assert_eq!(&buf[..n], b"world\n");
        assert_eq!(
            estargz_reader_read(r, 9999, 0, buf.as_mut_ptr(), 64, &mut n),
            ESTARGZ_INVALID_ARGUMENT
        );
        assert_eq!(
            estargz_reader_lookup(r, c"nope".as_ptr(), &mut e),
            ESTARGZ_NOT_FOUND
        );

        let mut it = ptr::null_mut();
        assert_eq!(
            estargz_reader_open_dir(r, ESTARGZ_ROOT_ID, &mut it),
            ESTARGZ_OK
        );
        // The iterator keeps the reader's data alive.
        estargz_reader_free(r);
        let mut names = Vec::new();
        loop {
            let mut done = false;
            assert_eq!(estargz_dir_iter_next(it, &mut e, &mut done), ESTARGZ_OK);
            if done {
                break;
            }
            names.push(e.kind);
        }
        // ".no.prefetch.landmark" sorts before "d".
        assert_eq!(
            names,
            [
                estargz_entry_type::ESTARGZ_ENTRY_REG,
                estargz_entry_type::ESTARGZ_ENTRY_DIR
            ]
        );
        estargz_dir_iter_free(it);
    }
}

#[test]
fn export_names_come_from_the_enclosing_function() {
    fn estargz_outer() -> &'static str {
        let in_closure = || {
            fn here() {}
            crate::export::enclosing_fn_name(here)
        };
        in_closure()
    }
    assert_eq!(estargz_outer(), "estargz_outer");
    fn here() {}
    assert_eq!(
        crate::export::enclosing_fn_name(here),
        "export_names_come_from_the_enclosing_function"
    );
}

/// Builds the blob `blob` from the directory `input` through the ABI and
/// returns its TOC digest.
fn build_blob(input: &CStr, blob: &CStr) -> CString {
    // SAFETY: every pointer passed is valid for the call; handles are freed once.
    unsafe {
        let mut b = ptr::null_mut();
        assert_eq!(estargz_builder_new(&mut b), ESTARGZ_OK);
        assert_eq!(
            estargz_builder_set_input_path(b, input.as_ptr()),
            ESTARGZ_OK
        );
        assert_eq!(
            estargz_builder_set_output_path(b, blob.as_ptr()),
            ESTARGZ_OK
        );
        let mut res = ptr::null_mut();
        assert_eq!(estargz_builder_run(b, &mut res), ESTARGZ_OK);
        let toc_digest = CStr::from_ptr(estargz_build_result_toc_digest(res)).to_owned();
        estargz_build_result_free(res);
        estargz_builder_free(b);
        toc_digest
    }
}

/// A reader over a blob of directory `d` holding files f000..f{n-1}.
fn reader_with_files(dir: &std::path::Path, n: usize) -> *mut estargz_reader {
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("d")).unwrap();
    for i in 0..n {
        std::fs::write(tree.join(format!("d/f{i:03}")), b"x").unwrap();
    }
    let input = CString::new(tree.to_str().unwrap()).unwrap();
    let blob = CString::new(dir.join("b.esgz").to_str().unwrap()).unwrap();
    build_blob(&input, &blob);
    // SAFETY: valid pointers; the caller frees the reader.
    unsafe {
        let mut r = ptr::null_mut();
        assert_eq!(
            estargz_reader_open_path(blob.as_ptr(), ptr::null(), &mut r),
            ESTARGZ_OK
        );
        r
    }
}

/// Threads sharing one iterator through estargz_dir_iter_next_details get
/// every entry exactly once, also when their calls first find the buffer
/// too small (which must not advance the iterator).
#[test]
fn next_details_from_several_threads_gives_each_entry_once() {
    const N: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let r = reader_with_files(dir.path(), N);
    struct Iter(*mut estargz_dir_iter);
    // SAFETY: an estargz_dir_iter may be used from several threads at once
    // (header); the test frees it after joining them.
    unsafe impl Send for Iter {}
    unsafe impl Sync for Iter {}
    // SAFETY: valid pointers for each call; handles freed once, after use.
    let it = unsafe {
        let mut e = estargz_entry {
            struct_size: size_of::<estargz_entry>(),
            ..std::mem::zeroed()
        };
        assert_eq!(estargz_reader_lookup(r, c"d".as_ptr(), &mut e), ESTARGZ_OK);
        let mut it = ptr::null_mut();
        assert_eq!(estargz_reader_open_dir(r, e.id, &mut it), ESTARGZ_OK);
        estargz_reader_free(r);
        Iter(it)
    };
    let names: Vec<String> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let it = &it;
                s.spawn(move || {
                    let mut got = Vec::new();
                    // Too small for any entry: every first try comes back
                    // with the size and the iterator where it was.
                    let mut buf = vec![0u8; 4];
                    loop {
                        // SAFETY: valid pointers; buf holds buf.len() bytes.
                        let (e, d, n, done) = unsafe {
                            let mut e: estargz_entry = std::mem::zeroed();
                            e.struct_size = size_of::<estargz_entry>();
                            let mut d: estargz_entry_details = std::mem::zeroed();
                            d.struct_size = size_of::<estargz_entry_details>();
                            let (mut n, mut done) = (0, false);
                            let rc = estargz_dir_iter_next_details(
                                it.0,
                                &mut e,
                                &mut d,
                                buf.as_mut_ptr().cast(),
                                buf.len(),
                                &mut n,
                                &mut done,
                            );
                            assert_eq!(rc, ESTARGZ_OK);
                            (e, d, n, done)
                        };
                        if done {
                            return got;
                        }
                        if n > buf.len() {
                            buf = vec![0u8; n];
                            continue;
                        }
                        assert_eq!(e.kind, estargz_entry_type::ESTARGZ_ENTRY_REG);
                        let name = &buf[d.name_offset..d.name_offset + d.name_len];
                        let path = &buf[d.path_offset..d.path_offset + d.path_len];
                        assert_eq!(path, [b"d/", name].concat().as_slice());
                        got.push(String::from_utf8(name.to_vec()).unwrap());
                        buf = vec![0u8; 4];
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    // SAFETY: no thread uses the iterator any more.
    unsafe { estargz_dir_iter_free(it.0) };
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(names.len(), N, "entries returned more than once or lost");
    assert_eq!(
        sorted,
        (0..N).map(|i| format!("f{i:03}")).collect::<Vec<_>>()
    );
}

/// estargz_blob_info version 1 (ending before `has_external_toc`) and 2
/// (before `format`) are still filled; version 2 says whether the TOC is
/// external, version 3 the format, and so does the
/// build result, with the TOC offset only for an embedded TOC.
#[test]
fn blob_info_versions_and_the_external_toc_flag() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("f"), b"data").unwrap();
    let input = CString::new(tree.to_str().unwrap()).unwrap();
    let blob = CString::new(dir.path().join("b.esgz").to_str().unwrap()).unwrap();
    // SAFETY: every pointer passed is valid for the call; handles are freed once.
    unsafe {
        for external in [false, true] {
            let mut b = ptr::null_mut();
            assert_eq!(estargz_builder_new(&mut b), ESTARGZ_OK);
            assert_eq!(
                estargz_builder_set_input_path(b, input.as_ptr()),
                ESTARGZ_OK
            );
            assert_eq!(
                estargz_builder_set_output_path(b, blob.as_ptr()),
                ESTARGZ_OK
            );
            assert_eq!(estargz_builder_set_external_toc(b, external), ESTARGZ_OK);
            let mut res = ptr::null_mut();
            assert_eq!(estargz_builder_run(b, &mut res), ESTARGZ_OK);
            estargz_builder_free(b);
            assert_eq!(estargz_build_result_has_external_toc(res), external);
            let mut off = 0;
            assert_eq!(estargz_build_result_toc_offset(res, &mut off), !external);
            assert_eq!(off > 0, !external);
            let mut len = 0;
            let data = estargz_build_result_external_toc_data(res, &mut len);
            assert_eq!(!data.is_null() && len > 0, external);

            let mut opts = ptr::null_mut();
            assert_eq!(estargz_open_options_new(&mut opts), ESTARGZ_OK);
            assert_eq!(
                estargz_open_options_set_external_toc_data(opts, data, len),
                ESTARGZ_OK
            );
            let mut r = ptr::null_mut();
            assert_eq!(
                estargz_reader_open_path(blob.as_ptr(), opts, &mut r),
                ESTARGZ_OK
            );
            estargz_open_options_free(opts);
            estargz_build_result_free(res);

            let mut info = std::mem::zeroed::<estargz_blob_info>();
            info.struct_size = size_of::<estargz_blob_info>();
            assert_eq!(estargz_reader_info(r, &mut info), ESTARGZ_OK);
            assert_eq!(info.has_external_toc, external);
            assert_eq!(info.toc_offset, if external { 0 } else { off });
            assert_eq!(info.format, estargz_format::ESTARGZ_FORMAT_ESTARGZ);
            assert_eq!(info.zstd_chunked_generation, 0);

            // Version 2 (ending where `format` starts) is still accepted.
            let v2 = std::mem::offset_of!(estargz_blob_info, format);
            assert_eq!(v2, 56);
            let mut old = std::mem::zeroed::<estargz_blob_info>();
            old.struct_size = v2;
            old.zstd_chunked_generation = 7;
            assert_eq!(estargz_reader_info(r, &mut old), ESTARGZ_OK);
            assert_eq!(old.has_external_toc, external);
            assert_eq!(old.zstd_chunked_generation, 7, "written past version 2");

            // Version 1: filled up to footer_size, the rest left alone.
            let v1 = std::mem::offset_of!(estargz_blob_info, has_external_toc);
            let mut old = std::mem::zeroed::<estargz_blob_info>();
            old.struct_size = v1;
            old.has_external_toc = !external;
            assert_eq!(estargz_reader_info(r, &mut old), ESTARGZ_OK);
            assert_eq!(old.struct_size, v1);
            assert_eq!(old.toc_offset, info.toc_offset);
            assert_eq!(old.footer_size, info.footer_size);
            assert_eq!(old.has_external_toc, !external, "written past version 1");
            estargz_reader_free(r);
        }
    }
}

/// The limit setters reach the open: a limit below what the blob needs
/// fails it with ESTARGZ_LIMIT_EXCEEDED, 0 restores the default.
#[test]
fn open_limits_are_settable() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("a/b/c")).unwrap();
    std::fs::write(tree.join("a/b/c/f"), b"data").unwrap();
    let input = CString::new(tree.to_str().unwrap()).unwrap();
    let blob = CString::new(dir.path().join("b.esgz").to_str().unwrap()).unwrap();
    build_blob(&input, &blob);
    type Setter = unsafe extern "C" fn(*mut estargz_open_options, u64) -> estargz_result;
    let setters: [(Setter, u64); 3] = [
        (estargz_open_options_set_max_entries, 2),
        (estargz_open_options_set_max_path_depth, 2),
        (estargz_open_options_set_max_name_bytes, 3),
    ];
    // SAFETY: every pointer passed is valid for the call; handles are freed once.
    unsafe {
        for (set, small) in setters {
            let mut opts = ptr::null_mut();
            assert_eq!(estargz_open_options_new(&mut opts), ESTARGZ_OK);
            assert_eq!(set(opts, small), ESTARGZ_OK);
            let mut r = ptr::null_mut();
            assert_eq!(
                estargz_reader_open_path(blob.as_ptr(), opts, &mut r),
                ESTARGZ_LIMIT_EXCEEDED
            );
            assert_eq!(set(opts, 0), ESTARGZ_OK);
            assert_eq!(
                estargz_reader_open_path(blob.as_ptr(), opts, &mut r),
                ESTARGZ_OK
            );
            estargz_reader_free(r);
            estargz_open_options_free(opts);
        }
        let mut opts = ptr::null_mut();
        assert_eq!(estargz_open_options_new(&mut opts), ESTARGZ_OK);
        assert_eq!(
            estargz_open_options_set_max_member_inflation(opts, 1),
            ESTARGZ_OK
        );
        assert_eq!(
            estargz_open_options_set_max_member_inflation(ptr::null_mut(), 1),
            ESTARGZ_INVALID_ARGUMENT
        );
        estargz_open_options_free(opts);
    }
}

#[test]
fn builds_both_zstd_chunked_generations_through_the_abi() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("d")).unwrap();
    std::fs::write(tree.join("d/f.txt"), b"hello, zstd\n").unwrap();
    let input = CString::new(tree.to_str().unwrap()).unwrap();
    // SAFETY: every pointer passed is valid for the call; handles are freed once.
    unsafe {
        let mut b = ptr::null_mut();
        assert_eq!(estargz_builder_new(&mut b), ESTARGZ_OK);
        let bad = CString::new("zstd").unwrap();
        assert_eq!(
            estargz_builder_set_format(b, bad.as_ptr()),
            ESTARGZ_INVALID_ARGUMENT
        );
        assert!(
            last_error().contains("unknown format \"zstd\""),
            "{}",
            last_error()
        );
        estargz_builder_free(b);
        for (name, generation) in [("zstd:chunked", 2), ("zstd:chunked-v1", 1)] {
            let blob = CString::new(
                dir.path()
                    .join(format!("b{generation}.zst"))
                    .to_str()
                    .unwrap(),
            )
            .unwrap();
            let format = CString::new(name).unwrap();
            let mut b = ptr::null_mut();
            assert_eq!(estargz_builder_new(&mut b), ESTARGZ_OK);
            assert_eq!(estargz_builder_set_format(b, format.as_ptr()), ESTARGZ_OK);
            assert_eq!(estargz_builder_set_compression_level(b, 19), ESTARGZ_OK);
            assert_eq!(
                estargz_builder_set_input_path(b, input.as_ptr()),
                ESTARGZ_OK
            );
            assert_eq!(
                estargz_builder_set_output_path(b, blob.as_ptr()),
                ESTARGZ_OK
            );
            let mut res = ptr::null_mut();
            assert_eq!(estargz_builder_run(b, &mut res), ESTARGZ_OK);
            estargz_builder_free(b);

            let mut r = ptr::null_mut();
            assert_eq!(
                estargz_reader_open_path(blob.as_ptr(), ptr::null(), &mut r),
                ESTARGZ_OK
            );
            let mut info = std::mem::zeroed::<estargz_blob_info>();
            info.struct_size = size_of::<estargz_blob_info>();
            assert_eq!(estargz_reader_info(r, &mut info), ESTARGZ_OK);
            assert_eq!(info.format, estargz_format::ESTARGZ_FORMAT_ZSTD_CHUNKED);
            assert_eq!(info.zstd_chunked_generation, generation);
            assert_eq!(estargz_reader_verify(r, ptr::null_mut()), ESTARGZ_OK);

            // What a pusher puts on the descriptor agrees with the blob.
            assert_eq!(s(estargz_build_result_format(res)), name);
            assert_eq!(
                s(estargz_build_result_media_type(res)),
                "application/vnd.oci.image.layer.v1.tar+zstd"
            );
            let checksum = s(estargz_build_result_manifest_checksum(res));
            assert_eq!(checksum, s(estargz_reader_manifest_checksum(r)));
            let (mut built, mut read) = Default::default();
            assert!(estargz_build_result_manifest_position(res, &mut built));
            assert!(estargz_reader_manifest_position(r, &mut read));
            assert_eq!(built, read);
            assert_eq!(built.offset, info.toc_offset);
            let (mut built_split, mut read_split) = Default::default();
            assert_eq!(
                estargz_build_result_tar_split_position(res, &mut built_split),
                generation == 2
            );
            assert_eq!(
                estargz_reader_tar_split_position(r, &mut read_split),
                generation == 2
            );
            assert_eq!(built_split, read_split);
            let mut annotations = std::collections::BTreeMap::new();
            for i in 0..estargz_build_result_annotation_count(res) {
                let (mut k, mut v) = (ptr::null(), ptr::null());
                assert!(estargz_build_result_annotation(res, i, &mut k, &mut v));
                annotations.insert(s(k), s(v));
            }
            let count = estargz_build_result_annotation_count(res);
            assert!(!estargz_build_result_annotation(
                res,
                count,
                ptr::null_mut(),
                ptr::null_mut()
            ));
            let (prefix, keys) = if generation == 2 {
                ("io.github.containers", 3)
            } else {
                ("io.containers", 4)
            };
            assert_eq!(annotations.len(), keys, "{annotations:?}");
            assert_eq!(
                annotations[&format!("{prefix}.zstd-chunked.manifest-checksum")],
                checksum
            );
            assert_eq!(
                annotations[&format!("{prefix}.zstd-chunked.manifest-position")],
                format!(
                    "{}:{}:{}:1",
                    read.offset, read.compressed_len, read.uncompressed_len
                )
            );
            if generation == 2 {
                assert_eq!(
                    annotations["io.github.containers.zstd-chunked.tarsplit-position"],
                    format!(
                        "{}:{}:{}",
                        read_split.offset, read_split.compressed_len, read_split.uncompressed_len
                    )
                );
            } else {
                assert_eq!(
                    annotations["containerd.io/snapshot/stargz/toc.digest"],
                    s(estargz_reader_toc_digest(r))
                );
                assert_eq!(
                    annotations["io.containers.estargz.uncompressed-size"],
                    estargz_build_result_uncompressed_size(res).to_string()
                );
            }
            estargz_build_result_free(res);
            estargz_reader_free(r);
        }
        // eStargz has none of them; NULL results answer the defaults.
        let blob = CString::new(dir.path().join("e.esgz").to_str().unwrap()).unwrap();
        let mut b = ptr::null_mut();
        assert_eq!(estargz_builder_new(&mut b), ESTARGZ_OK);
        assert_eq!(
            estargz_builder_set_input_path(b, input.as_ptr()),
            ESTARGZ_OK
        );
        assert_eq!(
            estargz_builder_set_output_path(b, blob.as_ptr()),
            ESTARGZ_OK
        );
        let mut res = ptr::null_mut();
        assert_eq!(estargz_builder_run(b, &mut res), ESTARGZ_OK);
        estargz_builder_free(b);
        assert_eq!(s(estargz_build_result_format(res)), "estargz");
        assert_eq!(
            s(estargz_build_result_media_type(res)),
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        assert!(estargz_build_result_manifest_checksum(res).is_null());
        assert!(!estargz_build_result_manifest_position(
            res,
            ptr::null_mut()
        ));
        assert!(!estargz_build_result_tar_split_position(
            res,
            ptr::null_mut()
        ));
        assert_eq!(estargz_build_result_annotation_count(res), 2);
        let mut r = ptr::null_mut();
        assert_eq!(
            estargz_reader_open_path(blob.as_ptr(), ptr::null(), &mut r),
            ESTARGZ_OK
        );
        assert!(estargz_reader_manifest_checksum(r).is_null());
        assert!(!estargz_reader_manifest_position(r, ptr::null_mut()));
        estargz_reader_free(r);
        estargz_build_result_free(res);
        assert!(estargz_build_result_format(ptr::null()).is_null());
        assert!(estargz_build_result_media_type(ptr::null()).is_null());
        assert_eq!(estargz_build_result_annotation_count(ptr::null()), 0);
        assert!(estargz_reader_manifest_checksum(ptr::null()).is_null());
        assert!(!estargz_reader_tar_split_position(
            ptr::null(),
            ptr::null_mut()
        ));
    }
}
