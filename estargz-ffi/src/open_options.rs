//! estargz_open_options: how a blob is opened (expected TOC digest,
//! external TOC, size limits).

use std::ffi::c_char;
use std::sync::{Mutex, MutexGuard};

use estargz_core::reader::{
    DEFAULT_MAX_CHUNK_SIZE, DEFAULT_MAX_ENTRIES, DEFAULT_MAX_MEMBER_INFLATION,
    DEFAULT_MAX_NAME_BYTES, DEFAULT_MAX_PATH_DEPTH, DEFAULT_MAX_TOC_SIZE,
};
use estargz_core::OpenOptions;

use crate::args::{optional, try_bytes, try_out};
use crate::error::estargz_result;
use crate::export::{ffi_call, ffi_free, into_raw, Handle};

/// Options for opening a blob. Created by estargz_open_options_new,
/// released by estargz_open_options_free. Open functions copy what they
/// need, so options may be freed or reused right after.
pub struct estargz_open_options {
    opts: Mutex<OpenOptions>,
}

impl Handle for estargz_open_options {}

impl estargz_open_options {
    fn lock(&self) -> MutexGuard<'_, OpenOptions> {
        // A poisoned lock only means a setter panicked; the options are whole.
        self.opts.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The options an open function uses: a copy of `options`, or the
/// defaults when it is NULL.
pub(crate) fn resolve(options: Option<&estargz_open_options>) -> OpenOptions {
    options.map(|o| o.lock().clone()).unwrap_or_default()
}

/// Creates open options with defaults: no expected TOC digest, no external
/// TOC, TOC limit 1 GiB, chunk limit 256 MiB. `out_options` receives the
/// handle (owned by the caller; release with estargz_open_options_free).
#[no_mangle]
pub unsafe extern "C" fn estargz_open_options_new(
    out_options: *mut *mut estargz_open_options,
) -> estargz_result {
    ffi_call!(|| {
        try_out!(out_options).write(into_raw(estargz_open_options {
            opts: Mutex::new(OpenOptions::default()),
        }));
        Ok(())
    })
}

/// Releases open options. NULL is accepted (no-op).
#[no_mangle]
pub unsafe extern "C" fn estargz_open_options_free(options: *mut estargz_open_options) {
    ffi_free!(options)
}

/// Makes opening fail with ESTARGZ_DIGEST_MISMATCH unless the TOC digest
/// equals `digest` (e.g. the layer's "containerd.io/snapshot/stargz/toc.digest"
/// annotation). `digest` is copied; NULL clears it; anything but
/// "sha256:" and 64 lowercase hex digits is ESTARGZ_INVALID_ARGUMENT.
#[no_mangle]
pub unsafe extern "C" fn estargz_open_options_set_expected_toc_digest(
    options: *mut estargz_open_options,
    digest: *const c_char,
) -> estargz_result {
    ffi_call!(options => |o| {
        o.lock().expected_toc_digest = optional!(try_str!(digest))
            .map(str::parse)
            .transpose()?;
        Ok(())
    })
}

/// Sets the external TOC data: the TOC gzip member of a blob built with an
/// external TOC (see estargz_build_result_external_toc_data). The `len`
/// bytes at `data` are copied; `data` NULL with `len` 0 clears it.
#[no_mangle]
pub unsafe extern "C" fn estargz_open_options_set_external_toc_data(
    options: *mut estargz_open_options,
    data: *const u8,
    len: usize,
) -> estargz_result {
    ffi_call!(options => |o| {
        o.lock().external_toc_data = if data.is_null() && len == 0 {
            None
        } else {
            Some(try_bytes!(data, len).to_vec())
        };
        Ok(())
    })
}

/// Largest accepted TOC (compressed member and JSON), in bytes; larger ones
/// fail with ESTARGZ_LIMIT_EXCEEDED. 0 restores the default (1 GiB).
#[no_mangle]
pub unsafe extern "C" fn estargz_open_options_set_max_toc_size(
    options: *mut estargz_open_options,
    max: u64,
) -> estargz_result {
    ffi_call!(options => |o| {
        o.lock().max_toc_size = if max == 0 { DEFAULT_MAX_TOC_SIZE } else { max };
        Ok(())
    })
}

/// Largest accepted chunk, in bytes; reading a larger one fails with
/// ESTARGZ_LIMIT_EXCEEDED. 0 restores the default (256 MiB).
#[no_mangle]
pub unsafe extern "C" fn estargz_open_options_set_max_chunk_size(
    options: *mut estargz_open_options,
    max: u64,
) -> estargz_result {
    ffi_call!(options => |o| {
        o.lock().max_chunk_size = if max == 0 {
            DEFAULT_MAX_CHUNK_SIZE
        } else {
            max
        };
        Ok(())
    })
}

/// Most TOC entries, and most nodes of the file tree (directories the TOC
/// only implies count too); more fail the open with ESTARGZ_LIMIT_EXCEEDED. 0 restores the default (1,048,576).
#[no_mangle]
pub unsafe extern "C" fn estargz_open_options_set_max_entries(
    options: *mut estargz_open_options,
    max: u64,
) -> estargz_result {
    ffi_call!(options => |o| {
        o.lock().max_entries = if max == 0 { DEFAULT_MAX_ENTRIES } else { max };
        Ok(())
    })
}

/// Most components in one path; deeper paths fail the open with
/// ESTARGZ_LIMIT_EXCEEDED. 0 restores the default (2048).
#[no_mangle]
pub unsafe extern "C" fn estargz_open_options_set_max_path_depth(
    options: *mut estargz_open_options,
    max: u64,
) -> estargz_result {
    ffi_call!(options => |o| {
        o.lock().max_path_depth = if max == 0 { DEFAULT_MAX_PATH_DEPTH } else { max };
        Ok(())
    })
}

/// Most bytes of entry names plus link names over the whole TOC; more fail
/// the open with ESTARGZ_LIMIT_EXCEEDED. 0 restores the default (128 MiB).
#[no_mangle]
pub unsafe extern "C" fn estargz_open_options_set_max_name_bytes(
    options: *mut estargz_open_options,
    max: u64,
) -> estargz_result {
    ffi_call!(options => |o| {
        o.lock().max_name_bytes = if max == 0 { DEFAULT_MAX_NAME_BYTES } else { max };
        Ok(())
    })
}

/// How many times the chunk bytes it holds a gzip member may inflate to
/// (beyond a 16 MiB allowance for headers); reading past that fails with
/// ESTARGZ_LIMIT_EXCEEDED. 0 restores the default (64).
#[no_mangle]
pub unsafe extern "C" fn estargz_open_options_set_max_member_inflation(
    options: *mut estargz_open_options,
    max: u64,
) -> estargz_result {
    ffi_call!(options => |o| {
        o.lock().max_member_inflation = if max == 0 { DEFAULT_MAX_MEMBER_INFLATION } else { max };
        Ok(())
    })
}
