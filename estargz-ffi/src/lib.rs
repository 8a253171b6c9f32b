//! C ABI for estargz-core. This crate currently exposes only the version;
//! the full builder/reader API is tracked by the estargz-ffi issue.

use std::ffi::c_char;

/// Returns the library version as a static NUL-terminated string.
/// The pointer is valid for the lifetime of the process; do not free it.
#[no_mangle]
pub extern "C" fn estargz_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}
