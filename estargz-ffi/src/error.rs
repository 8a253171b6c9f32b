//! Result codes and the detailed messages of failed calls.
//!
//! Codes are `estargz_core::ErrorCode` numbers, unchanged. Messages are kept
//! twice: per thread (always, so failures before a handle exists can be
//! explained) and per handle (when the call had one).

use std::cell::RefCell;
use std::ffi::c_char;
use std::sync::Mutex;

use estargz_core::{Error, ErrorCode};

use crate::args::copy_str_out;
use crate::export::{call_unrecorded, ffi_value};
use crate::strings;

/// Result of every fallible function. The numbers are stable: they are never
/// renumbered, only appended to, and equal the core library's error codes.
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum estargz_result {
    /// Success.
    ESTARGZ_OK = 0,
    /// An I/O operation on a file, descriptor or callback failed.
    ESTARGZ_IO = 1,
    /// The input ended before a complete structure could be read.
    ESTARGZ_TRUNCATED = 2,
    /// The blob does not end with an eStargz (or legacy stargz) footer.
    ESTARGZ_INVALID_FOOTER = 3,
    /// The TOC could not be located, decompressed or decoded, or is inconsistent.
    ESTARGZ_INVALID_TOC = 4,
    /// The input tar stream is malformed.
    ESTARGZ_INVALID_TAR = 5,
    /// Compressed data could not be decompressed.
    ESTARGZ_CORRUPT = 6,
    /// A digest (TOC or chunk) did not match the expected value.
    ESTARGZ_DIGEST_MISMATCH = 7,
    /// An entry name or link target would escape the extraction directory.
    ESTARGZ_UNSAFE_PATH = 8,
    /// A path (or prioritized file) was not found.
    ESTARGZ_NOT_FOUND = 9,
    /// The operation needs another entry type (e.g. reading a directory).
    ESTARGZ_WRONG_TYPE = 10,
    /// A well-formed input uses a feature this library does not support.
    ESTARGZ_UNSUPPORTED = 11,
    /// An argument is invalid: NULL where a pointer is required, an unknown
    /// entry id or flag, a value out of range, a string that is not UTF-8.
    ESTARGZ_INVALID_ARGUMENT = 12,
    /// A resource limit (TOC size, chunk size, path length) was exceeded.
    ESTARGZ_LIMIT_EXCEEDED = 13,
    /// A bug in the library (a caught panic); the message says where.
    ESTARGZ_INTERNAL = 14,
    /// The network failed (reserved for registry access).
    ESTARGZ_NETWORK = 15,
    /// An operation timed out (reserved for registry access).
    ESTARGZ_TIMEOUT = 16,
    /// A registry answered with an error (reserved for registry access).
    ESTARGZ_REGISTRY = 17,
    /// A registry refused the credentials (reserved for registry access).
    ESTARGZ_UNAUTHORIZED = 18,
}

use estargz_result::*;

/// Every code, in numeric order (index == value).
pub(crate) const ALL_RESULTS: [estargz_result; 19] = [
    ESTARGZ_OK,
    ESTARGZ_IO,
    ESTARGZ_TRUNCATED,
    ESTARGZ_INVALID_FOOTER,
    ESTARGZ_INVALID_TOC,
    ESTARGZ_INVALID_TAR,
    ESTARGZ_CORRUPT,
    ESTARGZ_DIGEST_MISMATCH,
    ESTARGZ_UNSAFE_PATH,
    ESTARGZ_NOT_FOUND,
    ESTARGZ_WRONG_TYPE,
    ESTARGZ_UNSUPPORTED,
    ESTARGZ_INVALID_ARGUMENT,
    ESTARGZ_LIMIT_EXCEEDED,
    ESTARGZ_INTERNAL,
    ESTARGZ_NETWORK,
    ESTARGZ_TIMEOUT,
    ESTARGZ_REGISTRY,
    ESTARGZ_UNAUTHORIZED,
];

impl From<ErrorCode> for estargz_result {
    // Exhaustive on purpose: a new core code fails the build here until it
    // gets its C name.
    fn from(code: ErrorCode) -> Self {
        match code {
            ErrorCode::Io => ESTARGZ_IO,
            ErrorCode::Truncated => ESTARGZ_TRUNCATED,
            ErrorCode::InvalidFooter => ESTARGZ_INVALID_FOOTER,
            ErrorCode::InvalidToc => ESTARGZ_INVALID_TOC,
            ErrorCode::InvalidTar => ESTARGZ_INVALID_TAR,
            ErrorCode::Corrupt => ESTARGZ_CORRUPT,
            ErrorCode::DigestMismatch => ESTARGZ_DIGEST_MISMATCH,
            ErrorCode::UnsafePath => ESTARGZ_UNSAFE_PATH,
            ErrorCode::NotFound => ESTARGZ_NOT_FOUND,
            ErrorCode::WrongType => ESTARGZ_WRONG_TYPE,
            ErrorCode::Unsupported => ESTARGZ_UNSUPPORTED,
            ErrorCode::InvalidArgument => ESTARGZ_INVALID_ARGUMENT,
            ErrorCode::LimitExceeded => ESTARGZ_LIMIT_EXCEEDED,
            ErrorCode::Network => ESTARGZ_NETWORK,
            ErrorCode::Timeout => ESTARGZ_TIMEOUT,
            ErrorCode::Registry => ESTARGZ_REGISTRY,
            ErrorCode::Unauthorized => ESTARGZ_UNAUTHORIZED,
        }
    }
}

impl estargz_result {
    fn from_code(code: i32) -> Option<Self> {
        usize::try_from(code)
            .ok()
            .and_then(|i| ALL_RESULTS.get(i).copied())
    }

    /// NUL-terminated symbolic name.
    fn name(self) -> &'static str {
        match self {
            ESTARGZ_OK => "ESTARGZ_OK\0",
            ESTARGZ_IO => "ESTARGZ_IO\0",
            ESTARGZ_TRUNCATED => "ESTARGZ_TRUNCATED\0",
            ESTARGZ_INVALID_FOOTER => "ESTARGZ_INVALID_FOOTER\0",
            ESTARGZ_INVALID_TOC => "ESTARGZ_INVALID_TOC\0",
            ESTARGZ_INVALID_TAR => "ESTARGZ_INVALID_TAR\0",
            ESTARGZ_CORRUPT => "ESTARGZ_CORRUPT\0",
            ESTARGZ_DIGEST_MISMATCH => "ESTARGZ_DIGEST_MISMATCH\0",
            ESTARGZ_UNSAFE_PATH => "ESTARGZ_UNSAFE_PATH\0",
            ESTARGZ_NOT_FOUND => "ESTARGZ_NOT_FOUND\0",
            ESTARGZ_WRONG_TYPE => "ESTARGZ_WRONG_TYPE\0",
            ESTARGZ_UNSUPPORTED => "ESTARGZ_UNSUPPORTED\0",
            ESTARGZ_INVALID_ARGUMENT => "ESTARGZ_INVALID_ARGUMENT\0",
            ESTARGZ_LIMIT_EXCEEDED => "ESTARGZ_LIMIT_EXCEEDED\0",
            ESTARGZ_INTERNAL => "ESTARGZ_INTERNAL\0",
            ESTARGZ_NETWORK => "ESTARGZ_NETWORK\0",
            ESTARGZ_TIMEOUT => "ESTARGZ_TIMEOUT\0",
            ESTARGZ_REGISTRY => "ESTARGZ_REGISTRY\0",
            ESTARGZ_UNAUTHORIZED => "ESTARGZ_UNAUTHORIZED\0",
        }
    }

    /// NUL-terminated one-line description.
    fn description(self) -> &'static str {
        match self {
            ESTARGZ_OK => "success\0",
            ESTARGZ_IO => "I/O error\0",
            ESTARGZ_TRUNCATED => "truncated input\0",
            ESTARGZ_INVALID_FOOTER => "not an eStargz blob (no valid footer)\0",
            ESTARGZ_INVALID_TOC => "invalid TOC\0",
            ESTARGZ_INVALID_TAR => "invalid tar input\0",
            ESTARGZ_CORRUPT => "corrupt compressed data\0",
            ESTARGZ_DIGEST_MISMATCH => "digest mismatch\0",
            ESTARGZ_UNSAFE_PATH => "unsafe path\0",
            ESTARGZ_NOT_FOUND => "not found\0",
            ESTARGZ_WRONG_TYPE => "wrong entry type\0",
            ESTARGZ_UNSUPPORTED => "unsupported feature\0",
            ESTARGZ_INVALID_ARGUMENT => "invalid argument\0",
            ESTARGZ_LIMIT_EXCEEDED => "limit exceeded\0",
            ESTARGZ_INTERNAL => "internal error\0",
            ESTARGZ_NETWORK => "network error\0",
            ESTARGZ_TIMEOUT => "timed out\0",
            ESTARGZ_REGISTRY => "registry error\0",
            ESTARGZ_UNAUTHORIZED => "unauthorized\0",
        }
    }
}

/// A failed call: its code and message (without the function name).
#[derive(Debug)]
pub(crate) struct Failure {
    pub code: estargz_result,
    pub message: String,
}

impl Failure {
    pub fn invalid(message: impl Into<String>) -> Self {
        Failure {
            code: ESTARGZ_INVALID_ARGUMENT,
            message: message.into(),
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Failure {
            code: ESTARGZ_INTERNAL,
            message: message.into(),
        }
    }

    /// The failure for a required pointer argument that is NULL.
    pub fn null(arg: &str) -> Self {
        Failure::invalid(format!("`{arg}` is NULL"))
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure {
            code: e.code().into(),
            message: e.to_string(),
        }
    }
}

pub(crate) type FfiResult<T = ()> = Result<T, Failure>;

thread_local! {
    /// Message of the most recent failed call on this thread.
    static LAST_ERROR: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// The last error of one handle; calls on the handle from any thread write it.
#[derive(Default)]
pub(crate) struct ErrorSlot(Mutex<Option<String>>);

impl ErrorSlot {
    fn set(&self, message: &str) {
        // A poisoned lock only means another call panicked while holding it;
        // the Option inside is still valid.
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(message.to_string());
    }

    /// Copies the message out (snprintf semantics, "" when there is none).
    pub unsafe fn copy_out(&self, buf: *mut c_char, len: usize, out_n: *mut usize) -> FfiResult {
        let guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // SAFETY: the caller of this function passes the exported function's
        // buffer arguments through unchanged; their contract is in the header.
        unsafe { strings::copy_str_out(guard.as_deref().unwrap_or(""), buf, len, out_n, "buf") }
    }
}

/// Records a failure of `function` (per thread, and in `slot` if any) and
/// returns its code.
pub(crate) fn record(function: &str, slot: Option<&ErrorSlot>, failure: Failure) -> estargz_result {
    let message = format!("{function}: {}", failure.message);
    if let Some(slot) = slot {
        slot.set(&message);
    }
    // try_with: during thread teardown the thread-local may be gone already.
    let _ = LAST_ERROR.try_with(|cell| {
        if let Ok(mut last) = cell.try_borrow_mut() {
            *last = Some(message);
        }
    });
    failure.code
}

/// The symbolic name of a result code, e.g. "ESTARGZ_DIGEST_MISMATCH", or
/// "ESTARGZ_UNKNOWN" for a number that is not a code.
///
/// Ownership: the string is static; do not free it.
#[no_mangle]
pub extern "C" fn estargz_result_name(code: i32) -> *const c_char {
    ffi_value!(c"ESTARGZ_UNKNOWN".as_ptr(), || {
        estargz_result::from_code(code)
            .map_or("ESTARGZ_UNKNOWN\0", estargz_result::name)
            .as_ptr()
            .cast()
    })
}

/// A short static description of a result code, e.g. "digest mismatch"
/// ("unknown result code" for a number that is not a code). The detailed
/// message of a failed call is available from estargz_last_error().
///
/// Ownership: the string is static; do not free it.
#[no_mangle]
pub extern "C" fn estargz_result_description(code: i32) -> *const c_char {
    ffi_value!(c"unknown result code".as_ptr(), || {
        estargz_result::from_code(code)
            .map_or("unknown result code\0", estargz_result::description)
            .as_ptr()
            .cast()
    })
}

/// Copies the detailed message of the most recent failed call made by the
/// calling thread (any function), e.g. "estargz_reader_open_path: digest
/// mismatch for TOC: expected sha256:..., got sha256:...". The message
/// starts with the name of the function that failed. It is "" when no call
/// has failed on this thread; successful calls do not clear it.
///
/// `buf`/`len`/`out_n`: snprintf semantics (see the top of this header);
/// `buf` is borrowed for the call.
///
/// Returns ESTARGZ_OK, or ESTARGZ_INVALID_ARGUMENT when `buf` is NULL and
/// `len` is not 0.
#[no_mangle]
pub unsafe extern "C" fn estargz_last_error(
    buf: *mut c_char,
    len: usize,
    out_n: *mut usize,
) -> estargz_result {
    // Reading the message must not overwrite it, so failures here are not
    // recorded (the code says enough).
    call_unrecorded(|| {
        // try_with: a TLS destructor of the caller may run after ours.
        let message = LAST_ERROR
            .try_with(|cell| cell.borrow().clone())
            .ok()
            .flatten()
            .unwrap_or_default();
        copy_str_out!(&message => buf, len, out_n);
        Ok(())
    })
}
