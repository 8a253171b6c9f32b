//! The panic boundary: unwinding out of an `extern "C"` function aborts the
//! process, so every export runs its body through one of these helpers, which
//! turn a panic into ESTARGZ_INTERNAL (or a default value).

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

/// The body of a fallible export: runs `f`, records a failure under
/// `function` (per thread, and in `slot` when the call has a handle) and
/// returns the result code.
pub(crate) fn call(
    function: &str,
    slot: Option<&ErrorSlot>,
    f: impl FnOnce() -> FfiResult,
) -> estargz_result {
    match catch(f) {
        Ok(()) => estargz_result::ESTARGZ_OK,
        Err(failure) => record(function, slot, failure),
    }
}

/// The body of an infallible export (getters, `_free`): returns `default`
/// if `f` panics.
pub(crate) fn value<T>(default: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(default)
}
