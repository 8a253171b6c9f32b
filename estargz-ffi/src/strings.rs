//! C strings and buffers in and out, with NULL checks that become
//! ESTARGZ_INVALID_ARGUMENT instead of undefined behaviour.

use std::ffi::{c_char, CStr, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use crate::error::{Failure, FfiResult};

/// A required NUL-terminated string argument.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string valid for `'a`.
pub(crate) unsafe fn c_str<'a>(p: *const c_char, arg: &str) -> FfiResult<&'a CStr> {
    if p.is_null() {
        return Err(Failure::null(arg));
    }
    // SAFETY: non-NULL and NUL-terminated per this function's contract.
    Ok(unsafe { CStr::from_ptr(p) })
}

/// A required UTF-8 string argument.
///
/// # Safety
/// As for [`c_str`].
pub(crate) unsafe fn utf8<'a>(p: *const c_char, arg: &str) -> FfiResult<&'a str> {
    // SAFETY: forwarded contract.
    let s = unsafe { c_str(p, arg) }?;
    s.to_str()
        .map_err(|_| Failure::invalid(format!("`{arg}` is not valid UTF-8")))
}

/// A required array of `n` UTF-8 strings (`p` may be NULL only when `n`
/// is 0), copied; more than `max` is refused before anything is read.
///
/// # Safety
/// `p` is NULL or valid for reads of `n` pointers, each as for [`c_str`].
pub(crate) unsafe fn utf8_array(
    p: *const *const c_char,
    n: usize,
    max: usize,
    arg: &str,
) -> FfiResult<Vec<String>> {
    if n > max {
        return Err(Failure::invalid(format!(
            "`{arg}` has {n} strings, at most {max} are taken"
        )));
    }
    if n == 0 {
        return Ok(Vec::new());
    }
    if p.is_null() {
        return Err(Failure::null(arg));
    }
    // SAFETY: non-NULL and valid for `n` pointers per this function's contract.
    let ptrs = unsafe { std::slice::from_raw_parts(p, n) };
    ptrs.iter()
        .enumerate()
        // SAFETY: each element is NULL or NUL-terminated (forwarded contract).
        .map(|(i, &s)| unsafe { utf8(s, &format!("{arg}[{i}]")) }.map(str::to_string))
        .collect()
}

/// A required path argument (any bytes but NUL, as on Unix).
///
/// # Safety
/// As for [`c_str`].
pub(crate) unsafe fn path(p: *const c_char, arg: &str) -> FfiResult<PathBuf> {
    // SAFETY: forwarded contract.
    let s = unsafe { c_str(p, arg) }?;
    if s.is_empty() {
        return Err(Failure::invalid(format!("`{arg}` is empty")));
    }
    Ok(PathBuf::from(OsStr::from_bytes(s.to_bytes())))
}

/// Input bytes `(p, len)`; `p` may be NULL only when `len` is 0.
///
/// # Safety
/// `p` is NULL or valid for reads of `len` bytes for `'a`.
pub(crate) unsafe fn in_bytes<'a>(p: *const u8, len: usize, arg: &str) -> FfiResult<&'a [u8]> {
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(Failure::null(arg));
    }
    // SAFETY: non-NULL and valid for `len` bytes per this function's contract.
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// A caller buffer to fill `(p, len)`; `p` may be NULL only when `len` is 0.
///
/// # Safety
/// `p` is NULL or valid for writes of `len` bytes for `'a`, and not aliased.
pub(crate) unsafe fn out_bytes<'a>(p: *mut u8, len: usize, arg: &str) -> FfiResult<&'a mut [u8]> {
    if len == 0 {
        return Ok(&mut []);
    }
    if p.is_null() {
        return Err(Failure::null(arg));
    }
    // SAFETY: valid for `len` writable bytes per this function's contract.
    // Zeroing first makes the bytes initialized, which a Rust `&mut [u8]`
    // requires; the caller's buffer may be fresh `malloc` memory.
    unsafe {
        std::ptr::write_bytes(p, 0, len);
        Ok(std::slice::from_raw_parts_mut(p, len))
    }
}

/// Copies `s` out with snprintf semantics: at most `len - 1` bytes and a NUL
/// into `buf`, the full length into `*out_n` (if not NULL).
///
/// # Safety
/// `buf` is NULL or valid for writes of `len` bytes; `out_n` is NULL or valid
/// for a write.
pub(crate) unsafe fn copy_str_out(
    s: &str,
    buf: *mut c_char,
    len: usize,
    out_n: *mut usize,
    arg: &str,
) -> FfiResult {
    if buf.is_null() && len != 0 {
        return Err(Failure::null(arg));
    }
    if len > 0 {
        let n = s.len().min(len - 1);
        // SAFETY: buf holds `len` > n bytes; the source is a distinct Rust
        // allocation, so the ranges do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(s.as_ptr(), buf.cast::<u8>(), n);
            *buf.add(n) = 0;
        }
    }
    if !out_n.is_null() {
        // SAFETY: non-NULL and writable per this function's contract.
        unsafe { out_n.write(s.len()) };
    }
    Ok(())
}

/// Copies binary `data` out: at most `len` bytes into `buf` (no NUL), the
/// full length into `*out_n` (if not NULL).
///
/// # Safety
/// As for [`copy_str_out`].
pub(crate) unsafe fn copy_bytes_out(
    data: &[u8],
    buf: *mut u8,
    len: usize,
    out_n: *mut usize,
    arg: &str,
) -> FfiResult {
    if buf.is_null() && len != 0 {
        return Err(Failure::null(arg));
    }
    let n = data.len().min(len);
    if n > 0 {
        // SAFETY: buf holds `len` >= n bytes; distinct allocations.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), buf, n) };
    }
    if !out_n.is_null() {
        // SAFETY: non-NULL and writable per this function's contract.
        unsafe { out_n.write(data.len()) };
    }
    Ok(())
}
