//! estargz_reader: open a blob from a path, fd, memory or callback; blob
//! facts; verification; reading verified file content.

use std::ffi::{c_char, c_int, c_void, CString};
use std::os::fd::FromRawFd;
use std::sync::Arc;

use estargz_core::{Error, FileSource, Footer, Format, OpenOptions, ReadAt, Reader};

use crate::args::{opt_out, try_bytes, try_out, try_out_bytes, try_path, try_str, Out};
use crate::builder::{c_string, estargz_frame_position, write_position};
use crate::callbacks::{estargz_read_at_callback, estargz_release_callback, CallbackSource};
use crate::entry::node_id;
use crate::error::{estargz_result, ErrorSlot, Failure, FfiResult};
use crate::export::{ffi_call, ffi_free, ffi_last_error, ffi_value, handle, into_raw, Handle};
use crate::open_options::{self, estargz_open_options};
use crate::versioned::{try_versioned_out, versioned_struct};

/// What a reader handle and the iterators opened from it share.
pub(crate) struct ReaderInner {
    // Shared: a remote layer's reader is handed out as an Arc by the core.
    pub reader: Arc<Reader>,
    toc_digest: CString,
    manifest_checksum: Option<CString>,
    errors: ErrorSlot,
}

/// An open, verified-on-read eStargz blob. Created by the
/// estargz_reader_open_* functions, released by estargz_reader_free.
///
/// All reader functions may be called from several threads at once on the
/// same reader (reads, lookups, verification, extraction); only
/// estargz_reader_free must not race with other calls on it.
pub struct estargz_reader {
    pub(crate) inner: Arc<ReaderInner>,
}

impl Handle for estargz_reader {
    fn errors(&self) -> Option<&ErrorSlot> {
        Some(&self.inner.errors)
    }
}

impl estargz_reader {
    pub(crate) fn reader(&self) -> &Reader {
        &self.inner.reader
    }
}

/// Which footer a blob ends with.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum estargz_footer_kind {
    /// eStargz, TOC embedded (51-byte footer).
    ESTARGZ_FOOTER_ESTARGZ = 0,
    /// eStargz with an external TOC (46-byte footer).
    ESTARGZ_FOOTER_EXTERNAL_TOC = 1,
    /// Legacy crfs stargz (47-byte footer).
    ESTARGZ_FOOTER_LEGACY = 2,
    /// zstd:chunked (a skippable frame: 48 bytes for v1, 72 for v2).
    ESTARGZ_FOOTER_ZSTD_CHUNKED = 3,
}

/// Which layer format a blob is (estargz_blob_info.format).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum estargz_format {
    /// eStargz (gzip members; the TOC embedded or external).
    ESTARGZ_FORMAT_ESTARGZ = 0,
    /// Legacy crfs stargz.
    ESTARGZ_FORMAT_STARGZ = 1,
    /// zstd:chunked (see estargz_blob_info.zstd_chunked_generation).
    ESTARGZ_FORMAT_ZSTD_CHUNKED = 2,
}

/// Facts about an open blob (estargz_reader_info). Set `struct_size` to
/// `sizeof(estargz_blob_info)` before the call (see the top of this header).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct estargz_blob_info {
    /// Set by the caller: sizeof(estargz_blob_info).
    pub struct_size: usize,
    /// Size of the blob in bytes.
    pub blob_size: u64,
    /// Blob offset of the TOC member (0 when `has_external_toc`).
    pub toc_offset: u64,
    /// Number of TOC entries (chunk entries included).
    pub toc_entries: u64,
    /// Number of entries in the tree (ids are 0 .. entry_count-1).
    pub entry_count: u64,
    pub footer_kind: estargz_footer_kind,
    /// Size of the footer in bytes.
    pub footer_size: u32,
    /// Whether the TOC is kept out of the blob (pass it with
    /// estargz_open_options_set_external_toc_data). Added in version 2 of
    /// the struct.
    pub has_external_toc: bool,
    /// Keeps version 2's size (its padding) a field boundary; zero.
    pub _reserved: [u8; 7],
    /// The layer format. Added in version 3 of the struct.
    pub format: estargz_format,
    /// zstd:chunked generation (1 or 2); 0 for the gzip formats. Added in
    /// version 3 of the struct.
    pub zstd_chunked_generation: u32,
}

// Version 1 ended where `has_external_toc` starts, version 2 where `format` does.
versioned_struct!(estargz_blob_info, grown_at: has_external_toc, format);
const _: () = assert!(std::mem::offset_of!(estargz_blob_info, format) == 56);

/// Opens `src` with `opts` and stores the new handle in `out`.
fn open(src: Arc<dyn ReadAt>, opts: &OpenOptions, out: Out<*mut estargz_reader>) -> FfiResult {
    let reader = Reader::open(src, opts)?;
    out.write(new_handle(Arc::new(reader)));
    Ok(())
}

/// A new reader handle over `reader`, owned by the caller of the export.
pub(crate) fn new_handle(reader: Arc<Reader>) -> *mut estargz_reader {
    let toc_digest = c_string(&reader.toc_digest().to_string());
    let manifest_checksum = reader.manifest_checksum().map(|d| c_string(&d.to_string()));
    into_raw(estargz_reader {
        inner: Arc::new(ReaderInner {
            reader,
            toc_digest,
            manifest_checksum,
            errors: ErrorSlot::default(),
        }),
    })
}

/// Opens the blob in the file at `path` (copied). The file must not change
/// while the reader is open.
///
/// `options` may be NULL (defaults); it is only read during the call.
/// `out_reader` receives the handle, owned by the caller: release it with
/// estargz_reader_free. On failure `*out_reader` is unchanged and the
/// message is available from estargz_last_error.
///
/// Errors: ESTARGZ_INVALID_ARGUMENT (NULL path/out_reader, external-TOC
/// blob without the TOC), ESTARGZ_IO, ESTARGZ_INVALID_FOOTER,
/// ESTARGZ_INVALID_TOC, ESTARGZ_TRUNCATED, ESTARGZ_DIGEST_MISMATCH (expected
/// TOC digest), ESTARGZ_LIMIT_EXCEEDED.
#[no_mangle]
pub unsafe extern "C" fn estargz_reader_open_path(
    path: *const c_char,
    options: *const estargz_open_options,
    out_reader: *mut *mut estargz_reader,
) -> estargz_result {
    ffi_call!(|| {
        let out = try_out!(out_reader);
        let path = try_path!(path);
        let src = FileSource::open(&path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        open(Arc::new(src), &open_options::resolve(handle!(options)), out)
    })
}

/// Opens the blob in the file open as `fd` (read with pread, so the
/// descriptor's offset is neither used nor changed). The library duplicates
/// `fd`: the caller keeps owning it and may close it as soon as this returns.
/// `options` and `out_reader` as for estargz_reader_open_path.
#[no_mangle]
pub unsafe extern "C" fn estargz_reader_open_fd(
    fd: c_int,
    options: *const estargz_open_options,
    out_reader: *mut *mut estargz_reader,
) -> estargz_result {
    ffi_call!(|| {
        let out = try_out!(out_reader);
        if fd < 0 {
            return Err(Failure::invalid(format!("`fd` is {fd}")));
        }
        // SAFETY: fcntl on any integer is defined; an invalid fd gives EBADF.
        let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
        if dup < 0 {
            return Err(Error::io(
                format!("duplicating fd {fd}"),
                std::io::Error::last_os_error(),
            )
            .into());
        }
        // SAFETY: `dup` is a fresh descriptor that nothing else owns.
        let file = unsafe { std::fs::File::from_raw_fd(dup) };
        let src = FileSource::new(file).map_err(|e| Error::io(format!("reading fd {fd}"), e))?;
        open(Arc::new(src), &open_options::resolve(handle!(options)), out)
    })
}

/// Opens a blob held in memory: the `len` bytes at `data` are copied, so the
/// buffer may be freed as soon as this returns (to avoid the copy, use
/// estargz_reader_open_callback over the buffer). `options` and
/// `out_reader` as for estargz_reader_open_path.
#[no_mangle]
pub unsafe extern "C" fn estargz_reader_open_memory(
    data: *const u8,
    len: usize,
    options: *const estargz_open_options,
    out_reader: *mut *mut estargz_reader,
) -> estargz_result {
    ffi_call!(|| {
        let out = try_out!(out_reader);
        let src: Arc<[u8]> = Arc::from(try_bytes!(data, len));
        open(Arc::new(src), &open_options::resolve(handle!(options)), out)
    })
}

/// Opens a blob of `size` bytes read through `read_at` (see
/// estargz_read_at_callback; it must be thread-safe), e.g. a remote or
/// encrypted store. `userdata` is passed to every call.
///
/// Ownership of `userdata` passes to the library with this call, whatever
/// its result: `release` (may be NULL) is called exactly once, from any
/// thread, when the library is done with it: before this function returns
/// if it fails, otherwise when the reader and every iterator opened from it
/// have been freed. Until then `userdata` must stay valid.
///
/// `options` and `out_reader` as for estargz_reader_open_path.
#[no_mangle]
pub unsafe extern "C" fn estargz_reader_open_callback(
    read_at: estargz_read_at_callback,
    release: estargz_release_callback,
    userdata: *mut c_void,
    size: u64,
    options: *const estargz_open_options,
    out_reader: *mut *mut estargz_reader,
) -> estargz_result {
    // Owned from the start, so `release` runs on every failure path too.
    let src = CallbackSource {
        cb: read_at,
        release,
        userdata,
        size,
    };
    ffi_call!(|| {
        let out = try_out!(out_reader);
        if read_at.is_none() {
            return Err(Failure::null("read_at"));
        }
        open(Arc::new(src), &open_options::resolve(handle!(options)), out)
    })
}

/// Releases a reader. NULL is accepted (no-op). No other call on this
/// reader may be running or made afterwards; iterators opened from it stay
/// valid (see estargz_dir_iter).
#[no_mangle]
pub unsafe extern "C" fn estargz_reader_free(reader: *mut estargz_reader) {
    ffi_free!(reader)
}

/// Copies the message of the last failed call on this reader (from any
/// thread) into `buf`, with snprintf semantics; "" if none failed. With
/// several threads using one reader, prefer estargz_last_error, which is
/// per thread.
///
/// Returns ESTARGZ_INVALID_ARGUMENT if `reader` is NULL, or `buf` is NULL
/// with `len` > 0.
#[no_mangle]
pub unsafe extern "C" fn estargz_reader_last_error(
    reader: *const estargz_reader,
    buf: *mut c_char,
    len: usize,
    out_n: *mut usize,
) -> estargz_result {
    ffi_last_error!(reader, buf, len, out_n)
}

/// The blob's TOC digest ("sha256:..."), computed at open. Returns NULL if
/// `reader` is NULL. The string is owned by the reader and valid until
/// estargz_reader_free.
#[no_mangle]
pub unsafe extern "C" fn estargz_reader_toc_digest(reader: *const estargz_reader) -> *const c_char {
    ffi_value!(std::ptr::null(), reader => |r| r.inner.toc_digest.as_ptr())
}

/// zstd:chunked: the manifest checksum ("sha256:" and 64 hex digits of the
/// compressed TOC, what the "...zstd-chunked.manifest-checksum" annotation
/// holds), computed from the blob. NULL for the gzip formats or if `reader`
/// is NULL; owned by the reader, valid until estargz_reader_free.
#[no_mangle]
pub unsafe extern "C" fn estargz_reader_manifest_checksum(
    reader: *const estargz_reader,
) -> *const c_char {
    ffi_value!(std::ptr::null(), reader => |r| r
        .inner
        .manifest_checksum
        .as_ref()
        .map_or(std::ptr::null(), |s| s.as_ptr()))
}

fn zstd_footer(reader: &Reader) -> Option<estargz_core::footer::ZstdChunkedFooter> {
    match reader.footer() {
        Footer::ZstdChunked(z) => Some(z),
        _ => None,
    }
}

/// zstd:chunked: where the compressed TOC is, as the blob's footer (or the
/// position annotation it was opened with) says. Returns true and stores it
/// in `*out_position` (if not NULL); false, storing nothing, for the gzip
/// formats or a NULL `reader`.
#[no_mangle]
pub unsafe extern "C" fn estargz_reader_manifest_position(
    reader: *const estargz_reader,
    out_position: *mut estargz_frame_position,
) -> bool {
    ffi_value!(false, reader => |r| write_position(
        zstd_footer(r.reader()).map(|z| z.toc),
        out_position
    ))
}

/// zstd:chunked v2: where the compressed tar-split is. Returns true and
/// stores it in `*out_position` (if not NULL); false, storing nothing,
/// otherwise.
#[no_mangle]
pub unsafe extern "C" fn estargz_reader_tar_split_position(
    reader: *const estargz_reader,
    out_position: *mut estargz_frame_position,
) -> bool {
    ffi_value!(false, reader => |r| write_position(
        zstd_footer(r.reader()).and_then(|z| z.tar_split),
        out_position
    ))
}

/// Fills `*out_info` with the blob's size, footer and TOC facts.
/// `out_info->struct_size` must be set (ESTARGZ_INVALID_ARGUMENT otherwise).
#[no_mangle]
pub unsafe extern "C" fn estargz_reader_info(
    reader: *const estargz_reader,
    out_info: *mut estargz_blob_info,
) -> estargz_result {
    ffi_call!(reader => |r| {
        let out = try_versioned_out!(out_info);
        let reader = r.reader();
        let footer = reader.footer();
        let footer_kind = match footer {
            Footer::Estargz { .. } => estargz_footer_kind::ESTARGZ_FOOTER_ESTARGZ,
            Footer::ExternalToc => estargz_footer_kind::ESTARGZ_FOOTER_EXTERNAL_TOC,
            Footer::Legacy { .. } => estargz_footer_kind::ESTARGZ_FOOTER_LEGACY,
            Footer::ZstdChunked(_) => estargz_footer_kind::ESTARGZ_FOOTER_ZSTD_CHUNKED,
        };
        let format = match reader.format() {
            Format::Estargz => estargz_format::ESTARGZ_FORMAT_ESTARGZ,
            Format::Stargz => estargz_format::ESTARGZ_FORMAT_STARGZ,
            Format::ZstdChunked(_) => estargz_format::ESTARGZ_FORMAT_ZSTD_CHUNKED,
        };
        out.write(estargz_blob_info {
            struct_size: 0,
            blob_size: reader.blob_size(),
            toc_offset: footer.toc_offset().unwrap_or(0),
            toc_entries: reader.toc_entry_count() as u64,
            entry_count: reader.index().len() as u64,
            footer_kind,
            footer_size: footer.size() as u32,
            has_external_toc: footer.toc_offset().is_none(),
            _reserved: [0; 7],
            format,
            zstd_chunked_generation: reader.format().generation().map_or(0, u32::from),
        });
        Ok(())
    })
}

/// Verifies every chunk of every file against its digest (in parallel, with
/// the library's worker threads). `out_bytes` (may be NULL) receives the
/// number of file bytes verified.
///
/// Errors: ESTARGZ_DIGEST_MISMATCH, ESTARGZ_CORRUPT, ESTARGZ_IO,
/// ESTARGZ_INVALID_TOC, ESTARGZ_LIMIT_EXCEEDED.
#[no_mangle]
pub unsafe extern "C" fn estargz_reader_verify(
    reader: *const estargz_reader,
    out_bytes: *mut u64,
) -> estargz_result {
    ffi_call!(reader => |r| {
        let bytes = r.reader().verify()?;
        if let Some(out) = opt_out!(out_bytes) {
            out.write(bytes);
        }
        Ok(())
    })
}

/// Checks the TOC digest against `expected` (borrowed for the call), e.g.
/// the layer's "containerd.io/snapshot/stargz/toc.digest" annotation.
/// Returns ESTARGZ_OK or ESTARGZ_DIGEST_MISMATCH (ESTARGZ_INVALID_ARGUMENT
/// when `expected` is not "sha256:" and 64 lowercase hex). Chunks are verified on
/// every read regardless; estargz_reader_verify checks them all now.
#[no_mangle]
pub unsafe extern "C" fn estargz_reader_verify_toc_digest(
    reader: *const estargz_reader,
    expected: *const c_char,
) -> estargz_result {
    ffi_call!(reader => |r| Ok(r.reader().verify_toc_digest(try_str!(expected).parse()?)?))
}

/// Reads up to `len` bytes of regular file `id` (hard links are followed)
/// starting at `offset` into `buf`, and stores the count in `*out_n`: less
/// than `len` only at the end of the file (0 at or past it). Every byte comes
/// from a chunk whose digest was verified. `buf` is borrowed for the call.
/// Safe to call from several threads at once on one reader.
///
/// Errors: ESTARGZ_WRONG_TYPE (not a regular file), ESTARGZ_DIGEST_MISMATCH /
/// ESTARGZ_CORRUPT (damaged blob), ESTARGZ_IO, ESTARGZ_LIMIT_EXCEEDED,
/// ESTARGZ_INVALID_ARGUMENT (unknown id, NULL `buf` with `len` > 0, NULL `out_n`).
#[no_mangle]
pub unsafe extern "C" fn estargz_reader_read(
    reader: *const estargz_reader,
    id: u64,
    offset: u64,
    buf: *mut u8,
    len: usize,
    out_n: *mut usize,
) -> estargz_result {
    ffi_call!(reader => |r| {
        let id = node_id(r.reader(), id)?;
        let out = try_out!(out_n);
        let n = r.reader().read_at(id, offset, try_out_bytes!(buf, len))?;
        out.write(n);
        Ok(())
    })
}
