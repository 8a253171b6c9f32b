//! Export arguments in and out: each macro takes one of the export's own
//! pointer arguments by name, checks it (NULL where one is required becomes
//! ESTARGZ_INVALID_ARGUMENT naming the argument) and converts it. The
//! pointers are trusted only as far as the contract at the top of
//! `export.rs`, which is why the macros take argument names, not
//! expressions. They are used inside an `ffi_call!` body (they use `?`).

use std::ptr::NonNull;

use crate::error::{Failure, FfiResult};

/// A required out pointer: checked non-NULL, written at most once.
pub(crate) struct Out<T>(NonNull<T>);

impl<T> Out<T> {
    /// # Safety
    /// `p` is NULL or valid for a write of `T` for as long as the `Out` lives.
    pub unsafe fn new(p: *mut T, arg: &str) -> FfiResult<Self> {
        NonNull::new(p).map(Out).ok_or_else(|| Failure::null(arg))
    }

    /// # Safety
    /// As for [`Out::new`]; NULL gives `None` (an optional out pointer).
    pub unsafe fn optional(p: *mut T) -> Option<Self> {
        NonNull::new(p).map(Out)
    }

    pub fn write(self, value: T) {
        // SAFETY: non-NULL and writable (the constructors' contract).
        unsafe { self.0.as_ptr().write(value) }
    }

    /// The pointer, for [`crate::versioned`] which writes a prefix of `T`.
    pub fn as_ptr(&self) -> *mut T {
        self.0.as_ptr()
    }
}

/// A required out pointer argument: `Out<T>`.
macro_rules! try_out {
    ($arg:ident) => {
        // SAFETY: an export's out pointer is NULL or writable (export.rs).
        unsafe { $crate::args::Out::new($arg, stringify!($arg)) }?
    };
}
pub(crate) use try_out;

/// An optional out pointer argument (may be NULL): `Option<Out<T>>`.
macro_rules! opt_out {
    ($arg:ident) => {
        // SAFETY: an export's out pointer is NULL or writable (export.rs).
        unsafe { $crate::args::Out::optional($arg) }
    };
}
pub(crate) use opt_out;

/// A required UTF-8 string argument: `&str`, borrowed for the call.
macro_rules! try_str {
    ($arg:ident) => {
        // SAFETY: an export's string is NULL or NUL-terminated (export.rs).
        unsafe { $crate::strings::utf8($arg, stringify!($arg)) }?
    };
}
pub(crate) use try_str;

/// A required, non-empty path argument (any bytes but NUL): `PathBuf`.
macro_rules! try_path {
    ($arg:ident) => {
        // SAFETY: an export's string is NULL or NUL-terminated (export.rs).
        unsafe { $crate::strings::path($arg, stringify!($arg)) }?
    };
}
pub(crate) use try_path;

/// An optional string or path argument: `optional!(try_str!(arg))` is
/// `None` when `arg` is NULL, else the conversion's value.
macro_rules! optional {
    ($convert:ident!($arg:ident)) => {
        if $arg.is_null() {
            None
        } else {
            Some($crate::args::$convert!($arg))
        }
    };
}
pub(crate) use optional;

/// Input bytes `(data, len)`: `&[u8]`; `data` may be NULL when `len` is 0.
macro_rules! try_bytes {
    ($data:ident, $len:ident) => {
        // SAFETY: an export's buffer holds `len` bytes (export.rs).
        unsafe { $crate::strings::in_bytes($data, $len, stringify!($data)) }?
    };
}
pub(crate) use try_bytes;

/// Input strings `(array, n)`, at most `max`: `Vec<String>`; `array` may
/// be NULL when `n` is 0.
macro_rules! try_str_array {
    ($array:ident, $n:ident, $max:expr) => {
        // SAFETY: an export's array holds `n` strings (export.rs).
        unsafe { $crate::strings::utf8_array($array, $n, $max, stringify!($array)) }?
    };
}
pub(crate) use try_str_array;

/// A caller buffer to fill `(buf, len)`: `&mut [u8]`; `buf` may be NULL
/// when `len` is 0.
macro_rules! try_out_bytes {
    ($buf:ident, $len:ident) => {
        // SAFETY: an export's buffer holds `len` writable bytes (export.rs).
        unsafe { $crate::strings::out_bytes($buf, $len, stringify!($buf)) }?
    };
}
pub(crate) use try_out_bytes;

/// Copies a string out to `(buf, len, out_n)` with snprintf semantics.
macro_rules! copy_str_out {
    ($s:expr => $buf:ident, $len:ident, $out_n:ident) => {
        // SAFETY: an export's buffer holds `len` writable bytes and `out_n`
        // is NULL or writable (export.rs).
        unsafe { $crate::strings::copy_str_out($s, $buf, $len, $out_n, stringify!($buf)) }?
    };
}
pub(crate) use copy_str_out;

/// Copies binary data out to `(buf, len, out_n)`: at most `len` bytes, the
/// full length in `*out_n`.
macro_rules! copy_bytes_out {
    ($data:expr => $buf:ident, $len:ident, $out_n:ident) => {
        // SAFETY: as for copy_str_out!.
        unsafe { $crate::strings::copy_bytes_out($data, $buf, $len, $out_n, stringify!($buf)) }?
    };
}
pub(crate) use copy_bytes_out;
