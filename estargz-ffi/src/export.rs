//! How every export is written: its body goes through one of the macros
//! below, which
//!
//! - run it behind the panic boundary (unwinding out of an `extern "C"`
//!   function aborts the process, so a panic becomes ESTARGZ_INTERNAL or the
//!   function's documented default value);
//! - cast the handle argument to a reference, failing with "`name` is NULL"
//!   when it is NULL (or returning the default, for getters);
//! - record a failure as "function_name: message", per thread and in the
//!   handle's error slot, with the name taken from the enclosing function
//!   itself (no copied name strings).
//!
//! # The contract that makes the casts sound
//!
//! Every export's pointer arguments are, per the header, NULL or valid as
//! the function's comment says: a handle argument is NULL or a live handle
//! of its type, not freed during the call; a string is NUL-terminated; a
//! buffer holds the stated number of bytes; an array of strings holds the
//! stated number of such strings; an out pointer is writable. The
//! macros here and in [`crate::args`] rely on exactly that and nothing more,
//! so they may only be given an export's own arguments, unchanged.
//!
//! Writing an export:
//!
//! ```text
//! #[no_mangle]
//! pub unsafe extern "C" fn estargz_thing_set_x(thing: *mut estargz_thing, x: u32) -> estargz_result {
//!     ffi_call!(thing => |t| { t.state().x = x; Ok(()) })
//! }
//! ```

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::error::{estargz_result, record, ErrorSlot, Failure, FfiResult};

fn panic_message(payload: &(dyn Any + Send)) -> String {
    let what = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    format!("internal error (panic): {what}")
}

/// Runs `f`, mapping a panic to an INTERNAL failure.
pub(crate) fn catch<T>(f: impl FnOnce() -> FfiResult<T>) -> FfiResult<T> {
    // AssertUnwindSafe: after a panic the library only touches state that
    // stays consistent (Mutex contents are replaced whole; poisoned locks are
    // recovered deliberately), so observing it after unwinding is fine.
    catch_unwind(AssertUnwindSafe(f))
        .unwrap_or_else(|payload| Err(Failure::internal(panic_message(&*payload))))
}

/// The body of a fallible export: runs `f`, records a failure under the
/// export's name (per thread, and in `slot` when the call has a handle) and
/// returns the result code. The name is only worked out on failure, so a
/// successful call costs nothing for it.
pub(crate) fn call(
    function: impl FnOnce() -> &'static str,
    slot: Option<&ErrorSlot>,
    f: impl FnOnce() -> FfiResult,
) -> estargz_result {
    match catch(f) {
        Ok(()) => estargz_result::ESTARGZ_OK,
        Err(failure) => record(function(), slot, failure),
    }
}

/// The body of a fallible export whose failures must not be recorded (the
/// *_last_error functions: reading a message must not overwrite it).
pub(crate) fn call_unrecorded(f: impl FnOnce() -> FfiResult) -> estargz_result {
    match catch(f) {
        Ok(()) => estargz_result::ESTARGZ_OK,
        Err(failure) => failure.code,
    }
}

/// The body of an infallible export (getters, `_free`): returns `default`
/// if `f` panics.
pub(crate) fn value<T>(default: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(default)
}

/// The name of the function enclosing `marker`, a fn item declared in it
/// (`ffi_call!` declares one): "estargz::builder::estargz_builder_run::here"
/// gives "estargz_builder_run". Closures in between ("{{closure}}") are
/// skipped. Called only when a failure is recorded.
pub(crate) fn enclosing_fn_name<F>(_marker: F) -> &'static str {
    let path = std::any::type_name::<F>();
    // Split on single ':' (a byte search; "::" would build a substring
    // searcher per call) and drop the empty pieces between the two colons.
    path.rsplit(':')
        .filter(|segment| !segment.is_empty())
        .skip(1)
        .find(|segment| !segment.starts_with('{'))
        .unwrap_or(path)
}

/// A handle type as C sees it: a pointer to a boxed Rust value, created by
/// [`into_raw`] and released by [`free`].
pub(crate) trait Handle: Sized {
    /// Where failures of calls on this handle are kept for its
    /// `*_last_error` function; `None` for handles without one.
    fn errors(&self) -> Option<&ErrorSlot> {
        None
    }
}

/// A handle argument, `*const T` or `*mut T` (functions that conceptually
/// modify a handle take `*mut`; every handle is used through a shared
/// reference, mutation going through its locks).
pub(crate) trait HandlePtr: Copy {
    type Target: Handle;
    fn as_const(self) -> *const Self::Target;
}

impl<T: Handle> HandlePtr for *const T {
    type Target = T;
    fn as_const(self) -> *const T {
        self
    }
}

impl<T: Handle> HandlePtr for *mut T {
    type Target = T;
    fn as_const(self) -> *const T {
        self.cast_const()
    }
}

/// The handle behind `ptr`, or `None` for NULL.
///
/// # Safety
/// `ptr` is NULL or a live handle of its type (from [`into_raw`], not yet
/// freed) that stays live for `'a`.
pub(crate) unsafe fn handle_ref<'a, P: HandlePtr>(ptr: P) -> Option<&'a P::Target> {
    // SAFETY: NULL or live, per this function's contract.
    unsafe { ptr.as_const().as_ref() }
}

/// Hands a new handle to C; the caller of the export owns it until its
/// `_free`.
pub(crate) fn into_raw<T: Handle>(value: T) -> *mut T {
    Box::into_raw(Box::new(value))
}

/// Releases a handle from [`into_raw`]; NULL is a no-op.
///
/// # Safety
/// `ptr` is NULL or a live handle that no other call is using and that is
/// not used again (the `_free` contract in the header).
pub(crate) unsafe fn free<T: Handle>(ptr: *mut T) {
    if !ptr.is_null() {
        // SAFETY: from into_raw (a Box), released once, per the contract.
        drop(unsafe { Box::from_raw(ptr) });
    }
}

/// The handle behind an export's handle argument, `None` for NULL.
macro_rules! handle {
    ($ptr:ident) => {
        // SAFETY: an export's handle argument is NULL or live for the call
        // (the contract at the top of export.rs).
        unsafe { $crate::export::handle_ref($ptr) }
    };
}
pub(crate) use handle;

/// The body of a fallible export returning `estargz_result`; see the module
/// comment. Forms:
/// - `ffi_call!(handle_arg => |h| body)`: `h` is `&Handle`; a NULL handle
///   fails with "`handle_arg` is NULL"; failures are also recorded in the
///   handle's error slot.
/// - `ffi_call!(|| body)`: no handle; failures are recorded per thread.
///
/// `body` is an `FfiResult<()>` expression (`?` works in it).
macro_rules! ffi_call {
    ($handle:ident => |$h:ident| $body:expr) => {{
        fn here() {}
        let handle = $crate::export::handle!($handle);
        $crate::export::call(
            || $crate::export::enclosing_fn_name(here),
            handle.and_then($crate::export::Handle::errors),
            || {
                let $h = handle.ok_or_else(|| $crate::error::Failure::null(stringify!($handle)))?;
                $body
            },
        )
    }};
    (|| $body:expr) => {{
        fn here() {}
        $crate::export::call(|| $crate::export::enclosing_fn_name(here), None, || $body)
    }};
}
pub(crate) use ffi_call;

/// The body of an infallible export (getters, `_free`, static strings):
/// returns `default` if the body panics.
/// - `ffi_value!(default, handle_arg => |h| expr)`: `default` also when the
///   handle is NULL.
/// - `ffi_value!(default, || expr)`.
macro_rules! ffi_value {
    ($default:expr, $handle:ident => |$h:ident| $body:expr) => {{
        match $crate::export::handle!($handle) {
            Some($h) => $crate::export::value($default, || $body),
            None => $default,
        }
    }};
    ($default:expr, || $body:expr) => {
        $crate::export::value($default, || $body)
    };
}
pub(crate) use ffi_value;

/// The body of a `_free` export: releases the handle (NULL is a no-op).
macro_rules! ffi_free {
    ($handle:ident) => {
        $crate::export::value((), || {
            // SAFETY: the `_free` contract: NULL or a live handle, not in
            // use elsewhere and not used again.
            unsafe { $crate::export::free($handle) }
        })
    };
}
pub(crate) use ffi_free;

/// The body of a handle's `*_last_error(handle, buf, len, out_n)` export:
/// copies the handle's last message out, recording nothing (reading a
/// message must not replace it).
macro_rules! ffi_last_error {
    ($handle:ident, $buf:ident, $len:ident, $out_n:ident) => {
        $crate::export::call_unrecorded(|| {
            let h = $crate::export::handle!($handle)
                .ok_or_else(|| $crate::error::Failure::null(stringify!($handle)))?;
            let slot = $crate::export::Handle::errors(h)
                .expect("a handle with a *_last_error function has an error slot");
            // SAFETY: the export's buffer arguments, unchanged (module contract).
            unsafe { slot.copy_out($buf, $len, $out_n) }
        })
    };
}
pub(crate) use ffi_last_error;
