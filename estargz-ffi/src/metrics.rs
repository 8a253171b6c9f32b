//! The process's counters (registry requests and bytes, fetch latency,
//! caches, layers, background fetch, FUSE requests) for Prometheus: served
//! by estargz-fuse's endpoint, the same one as `--metrics-address`, or
//! rendered into a buffer. A program that mounts layers through this
//! library (the snapshotter's FUSE manager) has the counters of its mounts.

use std::ffi::c_char;

use estargz_core::Error;
use estargz_fuse::metrics_endpoint::{self, MetricsAddress, MetricsServer};

use crate::args::{copy_str_out, try_out, try_str};
use crate::error::{estargz_result, ErrorSlot};
use crate::export::{ffi_call, ffi_free, ffi_last_error, into_raw, Handle};

/// A running metrics endpoint. Created by estargz_metrics_serve; stopped
/// and released by estargz_metrics_server_free.
pub struct estargz_metrics_server {
    /// Serving until dropped.
    _server: MetricsServer,
    /// The bound address as estargz_metrics_serve takes it.
    address: String,
    errors: ErrorSlot,
}

impl Handle for estargz_metrics_server {
    fn errors(&self) -> Option<&ErrorSlot> {
        Some(&self.errors)
    }
}

/// Serves `GET /metrics` (Prometheus text format 0.0.4) on `address`
/// (copied): "HOST:PORT" (e.g. "127.0.0.1:9100"; port 0 picks a free one,
/// see estargz_metrics_server_address) or an absolute unix socket path (a
/// socket file left there by an earlier run is replaced, any other file is
/// an error). One library thread answers scrapes, each bounded to 5 s,
/// until estargz_metrics_server_free. `out_server` receives the handle.
///
/// Errors: ESTARGZ_INVALID_ARGUMENT (not an address), ESTARGZ_IO (the
/// address cannot be bound).
#[no_mangle]
pub unsafe extern "C" fn estargz_metrics_serve(
    address: *const c_char,
    out_server: *mut *mut estargz_metrics_server,
) -> estargz_result {
    ffi_call!(|| {
        let out = try_out!(out_server);
        let address: MetricsAddress = try_str!(address)
            .parse()
            .map_err(|e: String| Error::InvalidArgument(format!("metrics address {e}")))?;
        let server =
            metrics_endpoint::serve(&address).map_err(|e| Error::io("metrics endpoint", e))?;
        out.write(into_raw(estargz_metrics_server {
            address: server.address().to_arg(),
            _server: server,
            errors: ErrorSlot::default(),
        }));
        Ok(())
    })
}

/// Copies the address the server listens on ("127.0.0.1:PORT" with the
/// port chosen for port 0, or the socket path) into `buf` (snprintf
/// semantics).
#[no_mangle]
pub unsafe extern "C" fn estargz_metrics_server_address(
    server: *const estargz_metrics_server,
    buf: *mut c_char,
    len: usize,
    out_n: *mut usize,
) -> estargz_result {
    ffi_call!(server => |s| {
        copy_str_out!(&s.address => buf, len, out_n);
        Ok(())
    })
}

/// Copies the message of the last failed call on `server` into `buf`
/// (snprintf semantics; see estargz_reader_last_error).
#[no_mangle]
pub unsafe extern "C" fn estargz_metrics_server_last_error(
    server: *const estargz_metrics_server,
    buf: *mut c_char,
    len: usize,
    out_n: *mut usize,
) -> estargz_result {
    ffi_last_error!(server, buf, len, out_n)
}

/// Stops the endpoint (after the scrape it may be answering, at most 5 s),
/// removes the socket file it made and releases the handle. NULL is
/// accepted (no-op).
#[no_mangle]
pub unsafe extern "C" fn estargz_metrics_server_free(server: *mut estargz_metrics_server) {
    ffi_free!(server)
}

/// Copies the process's counters in the Prometheus text format (what
/// `GET /metrics` answers) into `buf` with snprintf semantics: `*out_n`
/// gets the full length, so a call with `len` 0 sizes the buffer (the text
/// can grow between two calls as registries and FUSE operations appear).
#[no_mangle]
pub unsafe extern "C" fn estargz_metrics_render(
    buf: *mut c_char,
    len: usize,
    out_n: *mut usize,
) -> estargz_result {
    ffi_call!(|| {
        copy_str_out!(&estargz_core::metrics::global().render() => buf, len, out_n);
        Ok(())
    })
}
