//! The builder: options, input and output, then one call that converts.

use std::ffi::{c_char, c_int, c_void, CString};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use estargz_core::footer::FramePosition;
use estargz_core::remote::manifest::{built_layer_annotations, layer_media_type};
use estargz_core::{build, BuildInput, BuildOptions, BuildResult, Error};

use crate::args::{opt_out, optional, try_out, try_path, try_str};
use crate::callbacks::{
    estargz_read_callback, estargz_write_callback, CallbackReader, CallbackWriter, FdReader,
    FdWriter,
};
use crate::error::{estargz_result, ErrorSlot, Failure};
use crate::export::{ffi_call, ffi_free, ffi_last_error, ffi_value, handle, into_raw, Handle};

enum Input {
    Path(PathBuf),
    Fd(c_int),
    Callback(CallbackReader),
}

enum Output {
    Path(PathBuf),
    Fd(c_int),
    Callback(CallbackWriter),
}

struct BuilderState {
    opts: BuildOptions,
    input: Option<Input>,
    output: Option<Output>,
}

/// Converts tars (plain, gzip-compressed, or a directory) to eStargz blobs.
/// Created by estargz_builder_new, released by estargz_builder_free.
///
/// Use a builder from one thread at a time: concurrent calls on one builder
/// are memory-safe (its state is locked) but race in meaning. Distinct
/// builders may run in parallel.
pub struct estargz_builder {
    state: Mutex<BuilderState>,
    errors: ErrorSlot,
}

/// What estargz_builder_run produced: digests and sizes for the layer
/// descriptor. Created by estargz_builder_run, released by
/// estargz_build_result_free; independent of the builder.
pub struct estargz_build_result {
    blob_digest: CString,
    toc_digest: CString,
    diff_id: CString,
    blob_size: u64,
    uncompressed_size: u64,
    toc_offset: Option<u64>,
    toc_entries: usize,
    external_toc_data: Option<Vec<u8>>,
    missed_prioritized: Vec<CString>,
    format: CString,
    media_type: CString,
    manifest_checksum: Option<CString>,
    manifest_position: Option<FramePosition>,
    tar_split_position: Option<FramePosition>,
    annotations: Vec<(CString, CString)>,
}

/// Where a zstd:chunked frame's payload is: the TOC ("manifest") or v2's
/// tar-split, as the footer and the position annotations say.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct estargz_frame_position {
    /// Blob offset of the zstd-compressed payload (the skippable frame
    /// starts 8 bytes before).
    pub offset: u64,
    /// Payload bytes (zstd-compressed).
    pub compressed_len: u64,
    /// Bytes the payload decompresses to.
    pub uncompressed_len: u64,
}

impl From<FramePosition> for estargz_frame_position {
    fn from(p: FramePosition) -> Self {
        estargz_frame_position {
            offset: p.offset,
            compressed_len: p.compressed_len,
            uncompressed_len: p.uncompressed_len,
        }
    }
}

/// Stores `position` in `out` (if not NULL); whether there is one.
pub(crate) unsafe fn write_position(
    position: Option<FramePosition>,
    out: *mut estargz_frame_position,
) -> bool {
    match (position, opt_out!(out)) {
        (Some(p), Some(out)) => {
            out.write(p.into());
            true
        }
        (p, _) => p.is_some(),
    }
}

/// A C string of `s`, cut at an (impossible in practice) interior NUL rather
/// than failing.
pub(crate) fn c_string(s: &str) -> CString {
    let end = s.find('\0').unwrap_or(s.len());
    CString::new(&s[..end]).unwrap_or_default()
}

impl From<BuildResult> for estargz_build_result {
    fn from(r: BuildResult) -> Self {
        // The descriptor's annotations and media type come from the same
        // core functions as the CLI's and convert-image's.
        let annotations = built_layer_annotations(&r)
            .iter()
            .map(|(k, v)| (c_string(k), c_string(v)))
            .collect();
        estargz_build_result {
            format: c_string(r.format.build_name()),
            media_type: c_string(layer_media_type(r.format)),
            manifest_checksum: r.manifest_checksum.map(|d| c_string(&d.to_string())),
            manifest_position: r.zstd_chunked.map(|z| z.toc),
            tar_split_position: r.zstd_chunked.and_then(|z| z.tar_split),
            annotations,
            blob_digest: c_string(&r.blob_digest.to_string()),
            toc_digest: c_string(&r.toc_digest.to_string()),
            diff_id: c_string(&r.diff_id.to_string()),
            blob_size: r.blob_size,
            uncompressed_size: r.uncompressed_size,
            toc_offset: r.toc_offset,
            toc_entries: r.toc_entries,
            external_toc_data: r.external_toc_data,
            missed_prioritized: r.missed_prioritized.iter().map(|s| c_string(s)).collect(),
        }
    }
}

impl Handle for estargz_builder {
    fn errors(&self) -> Option<&ErrorSlot> {
        Some(&self.errors)
    }
}

impl estargz_builder {
    fn state(&self) -> MutexGuard<'_, BuilderState> {
        // A poisoned lock only means a call panicked; the state is whole.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Handle for estargz_build_result {}

/// Creates a builder with the reference defaults: 4 MiB chunks, gzip level
/// 9, no min-chunk-size, no prioritized files, embedded TOC, all CPUs.
///
/// `out_builder` receives the new handle (owned by the caller; release it
/// with estargz_builder_free). Returns ESTARGZ_INVALID_ARGUMENT if
/// `out_builder` is NULL.
#[no_mangle]
pub unsafe extern "C" fn estargz_builder_new(
    out_builder: *mut *mut estargz_builder,
) -> estargz_result {
    ffi_call!(|| {
        try_out!(out_builder).write(into_raw(estargz_builder {
            state: Mutex::new(BuilderState {
                opts: BuildOptions::default(),
                input: None,
                output: None,
            }),
            errors: ErrorSlot::default(),
        }));
        Ok(())
    })
}

/// Releases a builder. NULL is accepted (no-op). The builder must not be in
/// use by another thread. Results from estargz_builder_run stay valid.
#[no_mangle]
pub unsafe extern "C" fn estargz_builder_free(builder: *mut estargz_builder) {
    ffi_free!(builder)
}

/// Copies the message of the last failed call on this builder (from any
/// thread) into `buf`, with snprintf semantics; "" if none failed.
///
/// Returns ESTARGZ_INVALID_ARGUMENT if `builder` is NULL, or `buf` is NULL
/// with `len` > 0.
#[no_mangle]
pub unsafe extern "C" fn estargz_builder_last_error(
    builder: *const estargz_builder,
    buf: *mut c_char,
    len: usize,
    out_n: *mut usize,
) -> estargz_result {
    ffi_last_error!(builder, buf, len, out_n)
}

/// Sets the chunk size in bytes: files larger than this are split into
/// separately fetchable and verifiable chunks. 0 restores the default (4 MiB).
#[no_mangle]
pub unsafe extern "C" fn estargz_builder_set_chunk_size(
    builder: *mut estargz_builder,
    chunk_size: u64,
) -> estargz_result {
    ffi_call!(builder => |b| {
        b.state().opts.chunk_size = chunk_size;
        Ok(())
    })
}

/// Sets the layer format by name (UTF-8, copied): "estargz" (the default),
/// "zstd:chunked" (v2, containers/storage's: content-defined chunks, a
/// tar-split, the input tar's DiffID; no prioritized files) or
/// "zstd:chunked-v1" (stargz-snapshotter's). Returns
/// ESTARGZ_INVALID_ARGUMENT for any other name.
#[no_mangle]
pub unsafe extern "C" fn estargz_builder_set_format(
    builder: *mut estargz_builder,
    format: *const c_char,
) -> estargz_result {
    ffi_call!(builder => |b| {
        let format: estargz_core::Format = try_str!(format).parse()?;
        b.state().opts.format = format;
        Ok(())
    })
}

/// Sets the compression level: for eStargz 0-9 as in gzip (default 9),
/// 10-12 give extra effort; for zstd:chunked zstd's 1-22 (default 10).
/// Returns ESTARGZ_INVALID_ARGUMENT above 22; estargz_builder_run refuses
/// a level outside its format's range.
#[no_mangle]
pub unsafe extern "C" fn estargz_builder_set_compression_level(
    builder: *mut estargz_builder,
    level: u32,
) -> estargz_result {
    ffi_call!(builder => |b| {
        if level > 22 {
            return Err(Failure::invalid(format!(
                "compression level {level} (valid: 0-12 for estargz, 1-22 for zstd:chunked)"
            )));
        }
        b.state().opts.compression_level = Some(level);
        Ok(())
    })
}

/// Sets the minimum compressed size of a gzip member (0 = off, the
/// default). When set, small files share gzip members (the TOC's
/// innerOffset), which makes blobs smaller and builds sequential.
#[no_mangle]
pub unsafe extern "C" fn estargz_builder_set_min_chunk_size(
    builder: *mut estargz_builder,
    min_chunk_size: u64,
) -> estargz_result {
    ffi_call!(builder => |b| {
        b.state().opts.min_chunk_size = min_chunk_size;
        Ok(())
    })
}

/// Adds a path (as in the tar, e.g. "usr/bin/app") to the prioritized
/// files: they are placed first in the blob, in the order added, followed by
/// the prefetch landmark. A missing file fails estargz_builder_run with
/// ESTARGZ_INVALID_ARGUMENT unless estargz_builder_set_allow_missing_prioritized
/// is set. `path` (UTF-8) is copied.
#[no_mangle]
pub unsafe extern "C" fn estargz_builder_add_prioritized_file(
    builder: *mut estargz_builder,
    path: *const c_char,
) -> estargz_result {
    ffi_call!(builder => |b| {
        let path = try_str!(path).to_string();
        b.state().opts.prioritized_files.push(path);
        Ok(())
    })
}

/// Whether prioritized files missing from the input are tolerated (listed
/// by estargz_build_result_missed_prioritized) instead of failing the build.
/// Default false.
#[no_mangle]
pub unsafe extern "C" fn estargz_builder_set_allow_missing_prioritized(
    builder: *mut estargz_builder,
    allow: bool,
) -> estargz_result {
    ffi_call!(builder => |b| {
        b.state().opts.allow_missing_prioritized = allow;
        Ok(())
    })
}

/// Whether to keep the TOC out of the blob (46-byte footer). The TOC gzip
/// member (the external TOC data) is then returned by
/// estargz_build_result_external_toc_data and must be passed to readers
/// with estargz_open_options_set_external_toc_data. Default false.
#[no_mangle]
pub unsafe extern "C" fn estargz_builder_set_external_toc(
    builder: *mut estargz_builder,
    external_toc: bool,
) -> estargz_result {
    ffi_call!(builder => |b| {
        b.state().opts.external_toc = external_toc;
        Ok(())
    })
}

/// Lossless mode: the decompressed blob equals the input tar byte for byte,
/// so the DiffID is the input's digest. Requires an external TOC and no
/// prioritized files (checked by estargz_builder_run). Default false.
#[no_mangle]
pub unsafe extern "C" fn estargz_builder_set_keep_diff_id(
    builder: *mut estargz_builder,
    keep_diff_id: bool,
) -> estargz_result {
    ffi_call!(builder => |b| {
        b.state().opts.keep_diff_id = keep_diff_id;
        Ok(())
    })
}

/// Number of compression threads (0 = all CPUs, the default). The output is
/// identical for any value.
#[no_mangle]
pub unsafe extern "C" fn estargz_builder_set_threads(
    builder: *mut estargz_builder,
    threads: usize,
) -> estargz_result {
    ffi_call!(builder => |b| {
        b.state().opts.threads = threads;
        Ok(())
    })
}

/// Directory for the temporary copy of compressed or streamed input (fd
/// and callback input are always copied there first). NULL restores the
/// default (TMPDIR or /tmp). `dir` is copied.
#[no_mangle]
pub unsafe extern "C" fn estargz_builder_set_temp_dir(
    builder: *mut estargz_builder,
    dir: *const c_char,
) -> estargz_result {
    ffi_call!(builder => |b| {
        b.state().opts.temp_dir = optional!(try_path!(dir));
        Ok(())
    })
}

/// Input: a tar file, a gzip-compressed tar file, or a directory at `path`
/// (copied). Replaces any input set before.
#[no_mangle]
pub unsafe extern "C" fn estargz_builder_set_input_path(
    builder: *mut estargz_builder,
    path: *const c_char,
) -> estargz_result {
    ffi_call!(builder => |b| {
        b.state().input = Some(Input::Path(try_path!(path)));
        Ok(())
    })
}

/// Input: tar or gzip-compressed tar bytes read from `fd` (a file, pipe or
/// socket) from its current position to its end. The caller keeps owning
/// `fd` (it is not closed) and must keep it open until estargz_builder_run
/// returns. Replaces any input set before.
#[no_mangle]
pub unsafe extern "C" fn estargz_builder_set_input_fd(
    builder: *mut estargz_builder,
    fd: c_int,
) -> estargz_result {
    ffi_call!(builder => |b| {
        b.state().input = Some(Input::Fd(valid_fd(fd)?));
        Ok(())
    })
}

/// Input: tar or gzip-compressed tar bytes from `callback` (see
/// estargz_read_callback). `userdata` is passed to every call; it is
/// borrowed, and must stay valid until estargz_builder_run returns (or
/// another input is set, or the builder is freed). Replaces any input set
/// before.
#[no_mangle]
pub unsafe extern "C" fn estargz_builder_set_input_callback(
    builder: *mut estargz_builder,
    callback: estargz_read_callback,
    userdata: *mut c_void,
) -> estargz_result {
    ffi_call!(builder => |b| {
        let cb = callback.ok_or_else(|| Failure::null("callback"))?;
        b.state().input = Some(Input::Callback(CallbackReader { cb, userdata }));
        Ok(())
    })
}

/// Output: the blob is written to a file at `path` (copied), created or
/// truncated. If the build fails, a regular file created there is removed.
/// Replaces any output set before.
#[no_mangle]
pub unsafe extern "C" fn estargz_builder_set_output_path(
    builder: *mut estargz_builder,
    path: *const c_char,
) -> estargz_result {
    ffi_call!(builder => |b| {
        b.state().output = Some(Output::Path(try_path!(path)));
        Ok(())
    })
}

/// Output: the blob is written sequentially to `fd` at its current position.
/// The caller keeps owning `fd` (it is not closed) and must keep it open
/// until estargz_builder_run returns. Replaces any output set before.
#[no_mangle]
pub unsafe extern "C" fn estargz_builder_set_output_fd(
    builder: *mut estargz_builder,
    fd: c_int,
) -> estargz_result {
    ffi_call!(builder => |b| {
        b.state().output = Some(Output::Fd(valid_fd(fd)?));
        Ok(())
    })
}

/// Output: the blob is passed to `callback` in order (see
/// estargz_write_callback). `userdata` is borrowed and must stay valid until
/// estargz_builder_run returns (or another output is set, or the builder is
/// freed). Replaces any output set before.
#[no_mangle]
pub unsafe extern "C" fn estargz_builder_set_output_callback(
    builder: *mut estargz_builder,
    callback: estargz_write_callback,
    userdata: *mut c_void,
) -> estargz_result {
    ffi_call!(builder => |b| {
        let cb = callback.ok_or_else(|| Failure::null("callback"))?;
        b.state().output = Some(Output::Callback(CallbackWriter { cb, userdata }));
        Ok(())
    })
}

/// A descriptor argument: negative ones are refused up front.
fn valid_fd(fd: c_int) -> Result<c_int, Failure> {
    if fd < 0 {
        return Err(Failure::invalid(format!("`fd` is {fd}")));
    }
    Ok(fd)
}

fn build_input(input: Input) -> BuildInput<'static> {
    match input {
        Input::Path(p) => BuildInput::Path(p),
        Input::Fd(fd) => BuildInput::Reader(Box::new(FdReader(fd))),
        Input::Callback(r) => BuildInput::Reader(Box::new(r)),
    }
}

/// Builds into a buffered writer and flushes it.
fn build_buffered(
    input: BuildInput,
    w: impl Write,
    opts: &BuildOptions,
    what: &str,
) -> Result<BuildResult, Error> {
    let mut w = BufWriter::with_capacity(1 << 20, w);
    let result = build(input, &mut w, opts)?;
    w.flush()
        .map_err(|e| Error::io(format!("writing {what}"), e))?;
    Ok(result)
}

fn run(input: Input, output: Output, opts: &BuildOptions) -> Result<BuildResult, Error> {
    let input = build_input(input);
    match output {
        Output::Path(path) => {
            let what = path.display().to_string();
            let file = File::create(&path).map_err(|e| Error::io(format!("creating {what}"), e))?;
            let regular = file.metadata().map(|m| m.is_file()).unwrap_or(false);
            let result = build_buffered(input, file, opts, &what);
            if result.is_err() && regular {
                // No partial blob is left behind; a device or fifo is left alone.
                let _ = std::fs::remove_file(&path);
            }
            result
        }
        Output::Fd(fd) => build_buffered(input, FdWriter(fd), opts, &format!("fd {fd}")),
        Output::Callback(mut w) => build(input, &mut w, opts),
    }
}

/// Converts the input to an eStargz blob written to the output. Both must
/// have been set (estargz_builder_set_input_* / _set_output_*); they are
/// used once and cleared by this call, whether it succeeds or not, so a
/// builder's options can be reused for the next input.
///
/// `out_result` (may be NULL if the caller needs nothing) receives the
/// result on success, owned by the caller: release it with
/// estargz_build_result_free. It is left unchanged on failure.
///
/// Errors: ESTARGZ_INVALID_ARGUMENT (NULL builder, missing input/output,
/// invalid option combination, missing prioritized file), ESTARGZ_INVALID_TAR,
/// ESTARGZ_CORRUPT (bad gzip input), ESTARGZ_UNSUPPORTED (e.g. zstd input),
/// ESTARGZ_IO (files, descriptors, callbacks). Details: estargz_builder_last_error.
#[no_mangle]
pub unsafe extern "C" fn estargz_builder_run(
    builder: *mut estargz_builder,
    out_result: *mut *mut estargz_build_result,
) -> estargz_result {
    ffi_call!(builder => |b| {
        let (opts, input, output) = {
            let mut s = b.state();
            (s.opts.clone(), s.input.take(), s.output.take())
        };
        let input = input.ok_or_else(|| {
            Failure::invalid("no input: call an estargz_builder_set_input_* function first")
        })?;
        let output = output.ok_or_else(|| {
            Failure::invalid("no output: call an estargz_builder_set_output_* function first")
        })?;
        let result = run(input, output, &opts)?;
        if let Some(out) = opt_out!(out_result) {
            out.write(into_raw(estargz_build_result::from(result)));
        }
        Ok(())
    })
}

/// Releases a build result. NULL is accepted (no-op). Strings and bytes
/// obtained from it become invalid.
#[no_mangle]
pub unsafe extern "C" fn estargz_build_result_free(result: *mut estargz_build_result) {
    ffi_free!(result)
}

/// The blob digest ("sha256:" and 64 hex digits): the layer digest.
/// Returns NULL if `result` is NULL. The string is owned by `result` and
/// valid until estargz_build_result_free.
#[no_mangle]
pub unsafe extern "C" fn estargz_build_result_blob_digest(
    result: *const estargz_build_result,
) -> *const c_char {
    ffi_value!(std::ptr::null(), result => |r| r.blob_digest.as_ptr())
}

/// The TOC digest, the value of the layer annotation
/// "containerd.io/snapshot/stargz/toc.digest". NULL if `result` is NULL;
/// owned by `result`, valid until estargz_build_result_free.
#[no_mangle]
pub unsafe extern "C" fn estargz_build_result_toc_digest(
    result: *const estargz_build_result,
) -> *const c_char {
    ffi_value!(std::ptr::null(), result => |r| r.toc_digest.as_ptr())
}

/// The DiffID (digest of the decompressed blob). NULL if `result` is NULL;
/// owned by `result`, valid until estargz_build_result_free.
#[no_mangle]
pub unsafe extern "C" fn estargz_build_result_diff_id(
    result: *const estargz_build_result,
) -> *const c_char {
    ffi_value!(std::ptr::null(), result => |r| r.diff_id.as_ptr())
}

/// Size of the blob in bytes (0 if `result` is NULL).
#[no_mangle]
pub unsafe extern "C" fn estargz_build_result_blob_size(
    result: *const estargz_build_result,
) -> u64 {
    ffi_value!(0, result => |r| r.blob_size)
}

/// Size of the decompressed blob, the value of the layer annotation
/// "io.containers.estargz.uncompressed-size" (0 if `result` is NULL).
#[no_mangle]
pub unsafe extern "C" fn estargz_build_result_uncompressed_size(
    result: *const estargz_build_result,
) -> u64 {
    ffi_value!(0, result => |r| r.uncompressed_size)
}

/// Number of TOC entries (0 if `result` is NULL).
#[no_mangle]
pub unsafe extern "C" fn estargz_build_result_toc_entries(
    result: *const estargz_build_result,
) -> usize {
    ffi_value!(0, result => |r| r.toc_entries)
}

/// Whether the build kept its TOC out of the blob (false for a NULL
/// `result`).
#[no_mangle]
pub unsafe extern "C" fn estargz_build_result_has_external_toc(
    result: *const estargz_build_result,
) -> bool {
    ffi_value!(false, result => |r| r.toc_offset.is_none())
}

/// Blob offset of the embedded TOC member: returns true and stores it in
/// `*out_offset` (if not NULL); returns false, storing nothing, when the
/// build has an external TOC (estargz_build_result_has_external_toc) or
/// `result` is NULL.
#[no_mangle]
pub unsafe extern "C" fn estargz_build_result_toc_offset(
    result: *const estargz_build_result,
    out_offset: *mut u64,
) -> bool {
    ffi_value!(false, result => |r| match (r.toc_offset, opt_out!(out_offset)) {
        (Some(offset), Some(out)) => {
            out.write(offset);
            true
        }
        (offset, _) => offset.is_some(),
    })
}

/// The external TOC data: the TOC gzip member of a build with an external
/// TOC (to store next to the blob and pass to
/// estargz_open_options_set_external_toc_data). Stores its
/// length in `*out_len` (if not NULL) and returns a pointer owned by
/// `result`, valid until estargz_build_result_free; returns NULL (and length
/// 0) when the TOC is embedded or `result` is NULL.
#[no_mangle]
pub unsafe extern "C" fn estargz_build_result_external_toc_data(
    result: *const estargz_build_result,
    out_len: *mut usize,
) -> *const u8 {
    ffi_value!(std::ptr::null(), || {
        let toc = handle!(result).and_then(|r| r.external_toc_data.as_deref());
        if let Some(out) = opt_out!(out_len) {
            out.write(toc.map_or(0, <[u8]>::len));
        }
        toc.map_or(std::ptr::null(), <[u8]>::as_ptr)
    })
}

/// Number of prioritized files that were not found in the input (only with
/// estargz_builder_set_allow_missing_prioritized); 0 if `result` is NULL.
#[no_mangle]
pub unsafe extern "C" fn estargz_build_result_missed_prioritized_count(
    result: *const estargz_build_result,
) -> usize {
    ffi_value!(0, result => |r| r.missed_prioritized.len())
}

/// The `index`-th missing prioritized file, or NULL if `index` is out of
/// range or `result` is NULL. Owned by `result`, valid until
/// estargz_build_result_free.
#[no_mangle]
pub unsafe extern "C" fn estargz_build_result_missed_prioritized(
    result: *const estargz_build_result,
    index: usize,
) -> *const c_char {
    ffi_value!(std::ptr::null(), result => |r| r
        .missed_prioritized
        .get(index)
        .map_or(std::ptr::null(), |s| s.as_ptr()))
}

/// The format built, by the name estargz_builder_set_format takes:
/// "estargz", "zstd:chunked" (v2) or "zstd:chunked-v1". NULL if `result` is
/// NULL; owned by `result`, valid until estargz_build_result_free.
#[no_mangle]
pub unsafe extern "C" fn estargz_build_result_format(
    result: *const estargz_build_result,
) -> *const c_char {
    ffi_value!(std::ptr::null(), result => |r| r.format.as_ptr())
}

/// The layer descriptor's media type:
/// "application/vnd.oci.image.layer.v1.tar+zstd" for zstd:chunked,
/// "application/vnd.oci.image.layer.v1.tar+gzip" for eStargz. NULL if
/// `result` is NULL; owned by `result`, valid until
/// estargz_build_result_free.
#[no_mangle]
pub unsafe extern "C" fn estargz_build_result_media_type(
    result: *const estargz_build_result,
) -> *const c_char {
    ffi_value!(std::ptr::null(), result => |r| r.media_type.as_ptr())
}

/// zstd:chunked: the manifest checksum ("sha256:" and 64 hex digits of the
/// compressed TOC), the value of the "...zstd-chunked.manifest-checksum"
/// annotation. NULL for eStargz or if `result` is NULL; owned by `result`,
/// valid until estargz_build_result_free.
#[no_mangle]
pub unsafe extern "C" fn estargz_build_result_manifest_checksum(
    result: *const estargz_build_result,
) -> *const c_char {
    ffi_value!(std::ptr::null(), result => |r| r
        .manifest_checksum
        .as_ref()
        .map_or(std::ptr::null(), |s| s.as_ptr()))
}

/// zstd:chunked: where the compressed TOC is (the "...manifest-position"
/// annotation). Returns true and stores it in `*out_position` (if not
/// NULL); returns false, storing nothing, for eStargz or a NULL `result`.
#[no_mangle]
pub unsafe extern "C" fn estargz_build_result_manifest_position(
    result: *const estargz_build_result,
    out_position: *mut estargz_frame_position,
) -> bool {
    ffi_value!(false, result => |r| write_position(r.manifest_position, out_position))
}

/// zstd:chunked v2: where the compressed tar-split is (the
/// "io.github.containers.zstd-chunked.tarsplit-position" annotation).
/// Returns true and stores it in `*out_position` (if not NULL); returns
/// false, storing nothing, for other formats or a NULL `result`.
#[no_mangle]
pub unsafe extern "C" fn estargz_build_result_tar_split_position(
    result: *const estargz_build_result,
    out_position: *mut estargz_frame_position,
) -> bool {
    ffi_value!(false, result => |r| write_position(r.tar_split_position, out_position))
}

/// Number of annotations the layer descriptor should carry (0 if `result`
/// is NULL): eStargz the TOC digest and uncompressed size; zstd:chunked v1
/// those and its manifest checksum and position; v2 only
/// containers/storage's manifest checksum, manifest and tar-split positions.
#[no_mangle]
pub unsafe extern "C" fn estargz_build_result_annotation_count(
    result: *const estargz_build_result,
) -> usize {
    ffi_value!(0, result => |r| r.annotations.len())
}

/// The `index`-th annotation (sorted by key): stores its key and value in
/// `*out_key` and `*out_value` (each may be NULL) and returns true; returns
/// false, storing nothing, if `index` is out of range or `result` is NULL.
/// The strings are owned by `result`, valid until estargz_build_result_free.
#[no_mangle]
pub unsafe extern "C" fn estargz_build_result_annotation(
    result: *const estargz_build_result,
    index: usize,
    out_key: *mut *const c_char,
    out_value: *mut *const c_char,
) -> bool {
    ffi_value!(false, result => |r| match r.annotations.get(index) {
        Some((k, v)) => {
            if let Some(out) = opt_out!(out_key) {
                out.write(k.as_ptr());
            }
            if let Some(out) = opt_out!(out_value) {
                out.write(v.as_ptr());
            }
            true
        }
        None => false,
    })
}
