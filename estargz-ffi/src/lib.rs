//! The C ABI of estargz-rs (`libestargz`), in the style of rustls-ffi:
//! opaque handles, numbered result codes, detailed messages per handle and per
//! thread, and a panic boundary around every export. `include/estargz.h` is
//! generated from this crate by cbindgen (through cargo-c) and committed.
//!
//! Mechanics: [`error`] (result codes, last-error storage), `export` (the
//! macros every export is written with: panic boundary, handle casts,
//! recorded errors), `args` (pointer arguments in and out), `strings`
//! (C strings and buffers), `versioned` (caller-allocated structs with
//! `struct_size`), [`callbacks`] (caller-supplied I/O).
//!
//! API: [`builder`], [`open_options`], [`reader`], [`entry`],
//! [`entry_details`], [`extract`],
//! [`dir_iter`], [`remote`], [`mount`] (FUSE mounts served by
//! estargz-fuse's file system) and [`metrics`] (the process's counters for
//! Prometheus).

// The exported names follow C conventions (estargz_reader, ESTARGZ_OK), and
// every export takes raw pointers whose validity is the caller's contract,
// documented in the header.
#![allow(non_camel_case_types)]
#![allow(clippy::missing_safety_doc)]

mod args;
pub mod builder;
pub mod callbacks;
pub mod dir_iter;
pub mod entry;
pub mod entry_details;
pub mod error;
mod export;
pub mod extract;
pub mod metrics;
pub mod mount;
pub mod open_options;
pub mod reader;
pub mod remote;
mod strings;
mod versioned;

use std::ffi::c_char;

pub use error::estargz_result;

/// Major version of the library this header belongs to.
pub const ESTARGZ_VERSION_MAJOR: u32 = 0;
/// Minor version of the library this header belongs to.
pub const ESTARGZ_VERSION_MINOR: u32 = 1;
/// Patch version of the library this header belongs to.
pub const ESTARGZ_VERSION_PATCH: u32 = 0;
/// The version as a string. cbindgen (0.29) cannot export string constants,
/// so the header builds ESTARGZ_VERSION_STRING from the three numbers
/// (cbindgen.toml); this constant checks that they spell the package version
/// (a pre-release suffix would need the header macro changed).
const VERSION_STRING: &str = "0.1.0";

/// Byte-wise string equality usable in a constant.
const fn const_str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Parses a decimal version component at compile time.
const fn const_parse_u32(s: &str) -> u32 {
    let s = s.as_bytes();
    let mut n = 0u32;
    let mut i = 0;
    while i < s.len() {
        n = n * 10 + (s[i] - b'0') as u32;
        i += 1;
    }
    n
}

// cbindgen needs literal values for the header macros; these checks fail the
// build when Cargo.toml's version changes without them.
const _: () = assert!(
    const_str_eq(VERSION_STRING, env!("CARGO_PKG_VERSION")),
    "update the versions in estargz-ffi/src/lib.rs to the Cargo.toml version"
);
const _: () = assert!(const_str_eq(
    VERSION_STRING,
    concat!(
        env!("CARGO_PKG_VERSION_MAJOR"),
        ".",
        env!("CARGO_PKG_VERSION_MINOR"),
        ".",
        env!("CARGO_PKG_VERSION_PATCH")
    )
));
const _: () = assert!(ESTARGZ_VERSION_MAJOR == const_parse_u32(env!("CARGO_PKG_VERSION_MAJOR")));
const _: () = assert!(ESTARGZ_VERSION_MINOR == const_parse_u32(env!("CARGO_PKG_VERSION_MINOR")));
const _: () = assert!(ESTARGZ_VERSION_PATCH == const_parse_u32(env!("CARGO_PKG_VERSION_PATCH")));

/// The version of the loaded library as a NUL-terminated string such as
/// "0.1.0" (compare with ESTARGZ_VERSION_STRING to detect a header/library
/// mismatch).
///
/// Ownership: the string is static; it is valid for the life of the process
/// and must not be freed.
#[no_mangle]
pub extern "C" fn estargz_version() -> *const c_char {
    // Nothing here can panic; the boundary is kept for uniformity.
    export::ffi_value!(std::ptr::null(), || {
        concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
    })
}

#[cfg(test)]
mod tests;
