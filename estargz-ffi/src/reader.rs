//! The reader: open a blob from a path, fd, memory or callback; verify;
//! look up entries; list directories; read verified file ranges; extract.

use std::ffi::{c_char, c_int, c_void, CString};
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use estargz_core::extract::{extract, ExtractOptions};
use estargz_core::reader::{NodeId, DEFAULT_MAX_CHUNK_SIZE, DEFAULT_MAX_TOC_SIZE};
use estargz_core::{EntryType, Error, FileSource, Footer, OpenOptions, ReadAt, Reader};

use crate::builder::c_string;
use crate::callbacks::{estargz_read_at_callback, estargz_release_callback, CallbackSource};
use crate::error::{estargz_result, ErrorSlot, Failure, FfiResult};
use crate::panic;
use crate::strings::{self, copy_bytes_out, copy_str_out, out_ptr};

/// Options for opening a blob. Created by estargz_open_options_new,
/// released by estargz_open_options_free. Open functions copy what they
/// need, so options may be freed or reused right after.
pub struct estargz_open_options {
    opts: Mutex<OpenOptions>,
}

struct ReaderInner {
    // Shared: a remote layer's reader is handed out as an Arc by the core.
    reader: Arc<Reader>,
    toc_digest: CString,
    errors: ErrorSlot,
}

/// An open, verified-on-read eStargz blob. Created by the
/// estargz_reader_open_* functions, released by estargz_reader_free.
///
/// All reader functions may be called from several threads at once on the
/// same reader (reads, lookups, verification, extraction); only
/// estargz_reader_free must not race with other calls on it.
pub struct estargz_reader {
    inner: Arc<ReaderInner>,
}

/// An iterator over one directory's entries, in name order. Created by
/// estargz_reader_open_dir, released by estargz_dir_iter_free. It holds its
/// own reference to the reader's data, so it stays usable after
/// estargz_reader_free (a read_at callback's release then runs when the
/// last of them is freed).
pub struct estargz_dir_iter {
    inner: Arc<ReaderInner>,
    children: Vec<NodeId>,
    pos: AtomicUsize,
}

/// The id of the root directory in every reader.
pub const ESTARGZ_ROOT_ID: u64 = 0;

/// Extract flag: do not apply owners (uid/gid) from the TOC. Without it,
/// owners are applied when running as root.
pub const ESTARGZ_EXTRACT_NO_SAME_OWNER: u32 = 1;
/// Extract flag: do not apply extended attributes.
pub const ESTARGZ_EXTRACT_NO_XATTRS: u32 = 2;
/// Extract flag: also write the builder's .prefetch.landmark /
/// .no.prefetch.landmark files (skipped by default).
pub const ESTARGZ_EXTRACT_LANDMARKS: u32 = 4;
const EXTRACT_FLAGS: u32 =
    ESTARGZ_EXTRACT_NO_SAME_OWNER | ESTARGZ_EXTRACT_NO_XATTRS | ESTARGZ_EXTRACT_LANDMARKS;

/// Kind of an entry.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum estargz_entry_type {
    ESTARGZ_ENTRY_DIR = 0,
    ESTARGZ_ENTRY_REG = 1,
    ESTARGZ_ENTRY_SYMLINK = 2,
    /// A hard link: the other fields describe its target (target_id).
    ESTARGZ_ENTRY_HARDLINK = 3,
    ESTARGZ_ENTRY_CHAR = 4,
    ESTARGZ_ENTRY_BLOCK = 5,
    ESTARGZ_ENTRY_FIFO = 6,
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
}

/// Metadata of one entry, as a file system would report it. Filled in by
/// estargz_reader_lookup, estargz_reader_entry and estargz_dir_iter_next.
/// Strings (path, name, link target, owner names) and extended attributes
/// are fetched by id with the estargz_reader_entry_* functions.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct estargz_entry {
    /// This entry's id: valid for the reader's lifetime, 0 is the root.
    pub id: u64,
    /// For hard links, the id of the entry holding the data (which the
    /// fields below describe); otherwise equal to `id`.
    pub target_id: u64,
    /// Size in bytes of a regular file's content (0 for other kinds).
    pub size: u64,
    pub uid: u64,
    pub gid: u64,
    /// Modification time, seconds since the Unix epoch (0 if unknown).
    pub mtime: i64,
    pub dev_major: u64,
    pub dev_minor: u64,
    /// Number of extended attributes (see estargz_reader_entry_xattr).
    pub xattr_count: u64,
    pub kind: estargz_entry_type,
    /// Permission bits including setuid/setgid/sticky (mode & 07777).
    pub mode: u32,
    /// Link count: hard links to the data, or 2 + subdirectories for a directory.
    pub nlink: u32,
}

/// Facts about an open blob (estargz_reader_info).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct estargz_blob_info {
    /// Size of the blob in bytes.
    pub blob_size: u64,
    /// Blob offset of the TOC member (0 for an external TOC).
    pub toc_offset: u64,
    /// Number of TOC entries (chunk entries included).
    pub toc_entries: u64,
    /// Number of entries in the tree (ids are 0 .. entry_count-1).
    pub entry_count: u64,
    pub footer_kind: estargz_footer_kind,
    /// Size of the footer in bytes.
    pub footer_size: u32,
}

/// Counts from estargz_reader_extract.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct estargz_extract_stats {
    pub files: u64,
    pub dirs: u64,
    /// Symlinks, hard links, devices and fifos.
    pub others: u64,
    /// Bytes of file content written.
    pub bytes: u64,
}

// ---------------------------------------------------------------------------
// Open options

/// # Safety
/// `options` is NULL or a live estargz_open_options.
unsafe fn with_options(
    function: &str,
    options: *mut estargz_open_options,
    f: impl FnOnce(&mut OpenOptions) -> FfiResult,
) -> estargz_result {
    // SAFETY: NULL or live (contract); shared reference, mutation via Mutex.
    let o = unsafe { options.cast_const().as_ref() };
    panic::call(function, None, || {
        let o = o.ok_or_else(|| Failure::null("options"))?;
        f(&mut o.opts.lock().unwrap_or_else(|p| p.into_inner()))
    })
}

/// Creates open options with defaults: no expected TOC digest, no external
/// TOC, TOC limit 1 GiB, chunk limit 256 MiB. `out_options` receives the
/// handle (owned by the caller; release with estargz_open_options_free).
#[no_mangle]
pub unsafe extern "C" fn estargz_open_options_new(
    out_options: *mut *mut estargz_open_options,
) -> estargz_result {
    panic::call("estargz_open_options_new", None, || {
        let out = out_ptr(out_options, "out_options")?;
        let o = Box::new(estargz_open_options {
            opts: Mutex::new(OpenOptions::default()),
        });
        // SAFETY: non-NULL and writable (contract).
        unsafe { out.write(Box::into_raw(o)) };
        Ok(())
    })
}

/// Releases open options. NULL is accepted (no-op).
#[no_mangle]
pub unsafe extern "C" fn estargz_open_options_free(options: *mut estargz_open_options) {
    panic::value((), || {
        if !options.is_null() {
            // SAFETY: live handle from estargz_open_options_new, freed once.
            drop(unsafe { Box::from_raw(options) });
        }
    })
}

/// Makes opening fail with ESTARGZ_DIGEST_MISMATCH unless the TOC digest
/// equals `digest` (e.g. the layer's "containerd.io/snapshot/stargz/toc.digest"
/// annotation). `digest` is copied; NULL clears it.
#[no_mangle]
pub unsafe extern "C" fn estargz_open_options_set_expected_toc_digest(
    options: *mut estargz_open_options,
    digest: *const c_char,
) -> estargz_result {
    // SAFETY: forwarded contract.
    unsafe {
        with_options(
            "estargz_open_options_set_expected_toc_digest",
            options,
            |o| {
                o.expected_toc_digest = if digest.is_null() {
                    None
                } else {
                    // SAFETY: non-NULL, NUL-terminated (contract).
                    Some(strings::utf8(digest, "digest")?.to_string())
                };
                Ok(())
            },
        )
    }
}

/// Sets the TOC gzip member of a blob built with an external TOC (see
/// estargz_build_result_external_toc). The `len` bytes at `data` are copied;
/// `data` NULL with `len` 0 clears it.
#[no_mangle]
pub unsafe extern "C" fn estargz_open_options_set_external_toc(
    options: *mut estargz_open_options,
    data: *const u8,
    len: usize,
) -> estargz_result {
    // SAFETY: forwarded contract.
    unsafe {
        with_options("estargz_open_options_set_external_toc", options, |o| {
            o.external_toc = if data.is_null() && len == 0 {
                None
            } else {
                // SAFETY: valid for `len` bytes (contract).
                Some(strings::in_bytes(data, len, "data")?.to_vec())
            };
            Ok(())
        })
    }
}

/// Largest accepted TOC (compressed member and JSON), in bytes; larger ones
/// fail with ESTARGZ_LIMIT_EXCEEDED. 0 restores the default (1 GiB).
#[no_mangle]
pub unsafe extern "C" fn estargz_open_options_set_max_toc_size(
    options: *mut estargz_open_options,
    max: u64,
) -> estargz_result {
    // SAFETY: forwarded contract.
    unsafe {
        with_options("estargz_open_options_set_max_toc_size", options, |o| {
            o.max_toc_size = if max == 0 { DEFAULT_MAX_TOC_SIZE } else { max };
            Ok(())
        })
    }
}

/// Largest accepted chunk, in bytes; reading a larger one fails with
/// ESTARGZ_LIMIT_EXCEEDED. 0 restores the default (256 MiB).
#[no_mangle]
pub unsafe extern "C" fn estargz_open_options_set_max_chunk_size(
    options: *mut estargz_open_options,
    max: u64,
) -> estargz_result {
    // SAFETY: forwarded contract.
    unsafe {
        with_options("estargz_open_options_set_max_chunk_size", options, |o| {
            o.max_chunk_size = if max == 0 {
                DEFAULT_MAX_CHUNK_SIZE
            } else {
                max
            };
            Ok(())
        })
    }
}

// ---------------------------------------------------------------------------
// Opening

/// Opens `src` and stores the new handle in `*out`.
///
/// # Safety
/// `options` is NULL or live; `out` was checked non-NULL and is writable.
unsafe fn open(
    src: Arc<dyn ReadAt>,
    options: *const estargz_open_options,
    out: std::ptr::NonNull<*mut estargz_reader>,
) -> FfiResult {
    // SAFETY: NULL or live (contract).
    let opts = match unsafe { options.as_ref() } {
        Some(o) => o.opts.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        None => OpenOptions::default(),
    };
    let reader = Reader::open(src, &opts)?;
    // SAFETY: checked non-NULL by the caller, writable (contract).
    unsafe { out.write(new_handle(Arc::new(reader))) };
    Ok(())
}

/// A new reader handle over `reader`, owned by the caller of the export.
pub(crate) fn new_handle(reader: Arc<Reader>) -> *mut estargz_reader {
    let toc_digest = c_string(reader.toc_digest());
    Box::into_raw(Box::new(estargz_reader {
        inner: Arc::new(ReaderInner {
            reader,
            toc_digest,
            errors: ErrorSlot::default(),
        }),
    }))
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
    panic::call("estargz_reader_open_path", None, || {
        let out = out_ptr(out_reader, "out_reader")?;
        // SAFETY: NULL or NUL-terminated (contract).
        let path = unsafe { strings::path(path, "path") }?;
        let src = FileSource::open(&path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        // SAFETY: options NULL or live (contract); out checked.
        unsafe { open(Arc::new(src), options, out) }
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
    panic::call("estargz_reader_open_fd", None, || {
        let out = out_ptr(out_reader, "out_reader")?;
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
        // SAFETY: options NULL or live (contract); out checked.
        unsafe { open(Arc::new(src), options, out) }
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
    panic::call("estargz_reader_open_memory", None, || {
        let out = out_ptr(out_reader, "out_reader")?;
        // SAFETY: valid for `len` bytes (contract).
        let bytes = unsafe { strings::in_bytes(data, len, "data") }?;
        let src: Arc<[u8]> = Arc::from(bytes);
        // SAFETY: options NULL or live (contract); out checked.
        unsafe { open(Arc::new(src), options, out) }
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
    panic::call("estargz_reader_open_callback", None, move || {
        let out = out_ptr(out_reader, "out_reader")?;
        if read_at.is_none() {
            return Err(Failure::null("read_at"));
        }
        // SAFETY: options NULL or live (contract); out checked.
        unsafe { open(Arc::new(src), options, out) }
    })
}

/// Releases a reader. NULL is accepted (no-op). No other call on this
/// reader may be running or made afterwards; iterators opened from it stay
/// valid (see estargz_dir_iter).
#[no_mangle]
pub unsafe extern "C" fn estargz_reader_free(reader: *mut estargz_reader) {
    panic::value((), || {
        if !reader.is_null() {
            // SAFETY: live handle from an open function, freed once (contract).
            drop(unsafe { Box::from_raw(reader) });
        }
    })
}

// ---------------------------------------------------------------------------
// Reader queries

/// Runs `f` on a reader, recording failures on it.
///
/// # Safety
/// `reader` is NULL or a live handle.
unsafe fn with_reader(
    function: &str,
    reader: *const estargz_reader,
    f: impl FnOnce(&ReaderInner) -> FfiResult,
) -> estargz_result {
    // SAFETY: NULL or live (contract).
    let r = unsafe { reader.as_ref() }.map(|r| &*r.inner);
    panic::call(function, r.map(|r| &r.errors), || {
        f(r.ok_or_else(|| Failure::null("reader"))?)
    })
}

fn node_id(reader: &Reader, id: u64) -> FfiResult<NodeId> {
    usize::try_from(id)
        .ok()
        .filter(|&i| i < reader.index().nodes.len())
        .ok_or_else(|| {
            Failure::invalid(format!(
                "entry id {id} does not exist (the reader has {} entries)",
                reader.index().nodes.len()
            ))
        })
}

fn entry_type(kind: EntryType) -> estargz_entry_type {
    use estargz_entry_type::*;
    match kind {
        EntryType::Dir => ESTARGZ_ENTRY_DIR,
        // Chunk entries never become nodes; mapped for completeness.
        EntryType::Reg | EntryType::Chunk => ESTARGZ_ENTRY_REG,
        EntryType::Symlink => ESTARGZ_ENTRY_SYMLINK,
        EntryType::Hardlink => ESTARGZ_ENTRY_HARDLINK,
        EntryType::Char => ESTARGZ_ENTRY_CHAR,
        EntryType::Block => ESTARGZ_ENTRY_BLOCK,
        EntryType::Fifo => ESTARGZ_ENTRY_FIFO,
    }
}

fn entry_of(reader: &Reader, id: NodeId) -> estargz_entry {
    let node = reader.node(id);
    let target = reader.resolve(id);
    let t = reader.node(target);
    let e = &t.entry;
    let kind = if node.link_target.is_some() {
        estargz_entry_type::ESTARGZ_ENTRY_HARDLINK
    } else {
        entry_type(e.kind)
    };
    estargz_entry {
        id: id as u64,
        target_id: target as u64,
        size: if e.kind == EntryType::Reg { e.size } else { 0 },
        uid: e.uid,
        gid: e.gid,
        mtime: e.mod_time.unwrap_or(0),
        dev_major: e.dev_major,
        dev_minor: e.dev_minor,
        xattr_count: e.xattrs.len() as u64,
        kind,
        mode: e.mode & 0o7777,
        nlink: t.nlink,
    }
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
    // SAFETY: NULL or live (contract).
    let r = unsafe { reader.as_ref() };
    match panic::catch(|| {
        let r = r.ok_or_else(|| Failure::null("reader"))?;
        // SAFETY: buf/len/out_n as documented.
        unsafe { r.inner.errors.copy_out(buf, len, out_n) }
    }) {
        Ok(()) => estargz_result::ESTARGZ_OK,
        Err(f) => f.code,
    }
}

/// The blob's TOC digest ("sha256:..."), computed at open. Returns NULL if
/// `reader` is NULL. The string is owned by the reader and valid until
/// estargz_reader_free.
#[no_mangle]
pub unsafe extern "C" fn estargz_reader_toc_digest(reader: *const estargz_reader) -> *const c_char {
    // SAFETY: NULL or live (contract).
    match unsafe { reader.as_ref() } {
        Some(r) => panic::value(std::ptr::null(), || r.inner.toc_digest.as_ptr()),
        None => std::ptr::null(),
    }
}

/// Fills `*out_info` with the blob's size, footer and TOC facts.
#[no_mangle]
pub unsafe extern "C" fn estargz_reader_info(
    reader: *const estargz_reader,
    out_info: *mut estargz_blob_info,
) -> estargz_result {
    // SAFETY: forwarded contract.
    unsafe {
        with_reader("estargz_reader_info", reader, |r| {
            let out = out_ptr(out_info, "out_info")?;
            let reader = &r.reader;
            let footer = reader.footer();
            let footer_kind = match footer {
                Footer::Estargz { .. } => estargz_footer_kind::ESTARGZ_FOOTER_ESTARGZ,
                Footer::ExternalToc => estargz_footer_kind::ESTARGZ_FOOTER_EXTERNAL_TOC,
                Footer::Legacy { .. } => estargz_footer_kind::ESTARGZ_FOOTER_LEGACY,
            };
            let info = estargz_blob_info {
                blob_size: reader.blob_size(),
                toc_offset: footer.toc_offset().unwrap_or(0),
                toc_entries: reader.toc_entry_count() as u64,
                entry_count: reader.index().nodes.len() as u64,
                footer_kind,
                footer_size: footer.size() as u32,
            };
            // SAFETY: non-NULL and writable (contract).
            out.write(info);
            Ok(())
        })
    }
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
    // SAFETY: forwarded contract.
    unsafe {
        with_reader("estargz_reader_verify", reader, |r| {
            let bytes = r.reader.verify_all()?;
            if !out_bytes.is_null() {
                // SAFETY: non-NULL and writable (contract).
                out_bytes.write(bytes);
            }
            Ok(())
        })
    }
}

/// Checks the TOC digest against `expected` (borrowed for the call), e.g.
/// the layer's "containerd.io/snapshot/stargz/toc.digest" annotation.
/// Returns ESTARGZ_OK or ESTARGZ_DIGEST_MISMATCH. Chunks are verified on
/// every read regardless; estargz_reader_verify checks them all now.
#[no_mangle]
pub unsafe extern "C" fn estargz_reader_verify_toc_digest(
    reader: *const estargz_reader,
    expected: *const c_char,
) -> estargz_result {
    // SAFETY: forwarded contract.
    unsafe {
        with_reader("estargz_reader_verify_toc_digest", reader, |r| {
            // SAFETY: NULL or NUL-terminated (contract).
            let expected = strings::utf8(expected, "expected")?;
            Ok(r.reader.verify_toc(expected)?)
        })
    }
}

/// Looks up `path` (borrowed for the call; any spelling: "a/b", "/a/b",
/// "./a//b"; "" or "/" is the root) and fills `*out_entry`. Hard links are
/// returned as themselves (kind ESTARGZ_ENTRY_HARDLINK); symlinks are not
/// followed.
///
/// Errors: ESTARGZ_NOT_FOUND, ESTARGZ_INVALID_ARGUMENT.
#[no_mangle]
pub unsafe extern "C" fn estargz_reader_lookup(
    reader: *const estargz_reader,
    path: *const c_char,
    out_entry: *mut estargz_entry,
) -> estargz_result {
    // SAFETY: forwarded contract.
    unsafe {
        with_reader("estargz_reader_lookup", reader, |r| {
            // SAFETY: NULL or NUL-terminated (contract).
            let path = strings::utf8(path, "path")?;
            let out = out_ptr(out_entry, "out_entry")?;
            let id = r.reader.lookup(path)?;
            // SAFETY: non-NULL and writable (contract).
            out.write(entry_of(&r.reader, id));
            Ok(())
        })
    }
}

/// Fills `*out_entry` for the entry with id `id` (ESTARGZ_ROOT_ID is the
/// root). Returns ESTARGZ_INVALID_ARGUMENT for an unknown id.
#[no_mangle]
pub unsafe extern "C" fn estargz_reader_entry(
    reader: *const estargz_reader,
    id: u64,
    out_entry: *mut estargz_entry,
) -> estargz_result {
    // SAFETY: forwarded contract.
    unsafe {
        with_reader("estargz_reader_entry", reader, |r| {
            let id = node_id(&r.reader, id)?;
            let out = out_ptr(out_entry, "out_entry")?;
            // SAFETY: non-NULL and writable (contract).
            out.write(entry_of(&r.reader, id));
            Ok(())
        })
    }
}

/// Shared body of the entry string getters.
///
/// # Safety
/// `reader` NULL or live; buf/len/out_n per the snprintf convention.
unsafe fn entry_string(
    function: &str,
    reader: *const estargz_reader,
    id: u64,
    buf: *mut c_char,
    len: usize,
    out_n: *mut usize,
    get: impl FnOnce(&Reader, NodeId) -> String,
) -> estargz_result {
    // SAFETY: forwarded contract.
    unsafe {
        with_reader(function, reader, |r| {
            let id = node_id(&r.reader, id)?;
            let s = get(&r.reader, id);
            // SAFETY: forwarded buffer contract.
            copy_str_out(&s, buf, len, out_n, "buf")
        })
    }
}

/// Copies the entry's cleaned path ("" for the root, "a/b" otherwise) into
/// `buf` with snprintf semantics. ESTARGZ_INVALID_ARGUMENT for an unknown id.
#[no_mangle]
pub unsafe extern "C" fn estargz_reader_entry_path(
    reader: *const estargz_reader,
    id: u64,
    buf: *mut c_char,
    len: usize,
    out_n: *mut usize,
) -> estargz_result {
    // SAFETY: forwarded contract.
    unsafe {
        entry_string(
            "estargz_reader_entry_path",
            reader,
            id,
            buf,
            len,
            out_n,
            |r, id| r.index().path(id),
        )
    }
}

/// Copies the entry's name within its directory ("" for the root) into
/// `buf` with snprintf semantics.
#[no_mangle]
pub unsafe extern "C" fn estargz_reader_entry_name(
    reader: *const estargz_reader,
    id: u64,
    buf: *mut c_char,
    len: usize,
    out_n: *mut usize,
) -> estargz_result {
    // SAFETY: forwarded contract.
    unsafe {
        entry_string(
            "estargz_reader_entry_name",
            reader,
            id,
            buf,
            len,
            out_n,
            |r, id| r.node(id).name.clone(),
        )
    }
}

/// Copies the link target into `buf` with snprintf semantics: a symlink's
/// target as stored, a hard link's target as a cleaned path ("a/b", like
/// estargz_reader_entry_path of target_id); "" for other kinds.
#[no_mangle]
pub unsafe extern "C" fn estargz_reader_entry_link_name(
    reader: *const estargz_reader,
    id: u64,
    buf: *mut c_char,
    len: usize,
    out_n: *mut usize,
) -> estargz_result {
    // SAFETY: forwarded contract.
    unsafe {
        entry_string(
            "estargz_reader_entry_link_name",
            reader,
            id,
            buf,
            len,
            out_n,
            |r, id| match r.node(id).link_target {
                Some(target) => r.index().path(target),
                None => r.node(id).entry.link_name.clone(),
            },
        )
    }
}

/// Copies the owner's user name (as recorded in the tar; "" if none) into
/// `buf` with snprintf semantics. For hard links, the target's.
#[no_mangle]
pub unsafe extern "C" fn estargz_reader_entry_user_name(
    reader: *const estargz_reader,
    id: u64,
    buf: *mut c_char,
    len: usize,
    out_n: *mut usize,
) -> estargz_result {
    // SAFETY: forwarded contract.
    unsafe {
        entry_string(
            "estargz_reader_entry_user_name",
            reader,
            id,
            buf,
            len,
            out_n,
            |r, id| r.node(r.resolve(id)).entry.user_name.clone(),
        )
    }
}

/// Copies the owner's group name (as recorded in the tar; "" if none) into
/// `buf` with snprintf semantics. For hard links, the target's.
#[no_mangle]
pub unsafe extern "C" fn estargz_reader_entry_group_name(
    reader: *const estargz_reader,
    id: u64,
    buf: *mut c_char,
    len: usize,
    out_n: *mut usize,
) -> estargz_result {
    // SAFETY: forwarded contract.
    unsafe {
        entry_string(
            "estargz_reader_entry_group_name",
            reader,
            id,
            buf,
            len,
            out_n,
            |r, id| r.node(r.resolve(id)).entry.group_name.clone(),
        )
    }
}

/// Copies the `index`-th extended attribute (in name order; see
/// estargz_entry.xattr_count) of entry `id`: its name into `name_buf` with
/// snprintf semantics, its value (binary, no NUL added) into `value_buf`:
/// at most `value_len` bytes, the full length in `*value_out_n`. Either
/// buffer may be NULL with length 0 to query sizes.
///
/// Errors: ESTARGZ_NOT_FOUND if `index` >= xattr_count,
/// ESTARGZ_INVALID_ARGUMENT for an unknown id or NULL buffers with lengths.
#[no_mangle]
pub unsafe extern "C" fn estargz_reader_entry_xattr(
    reader: *const estargz_reader,
    id: u64,
    index: usize,
    name_buf: *mut c_char,
    name_len: usize,
    name_out_n: *mut usize,
    value_buf: *mut u8,
    value_len: usize,
    value_out_n: *mut usize,
) -> estargz_result {
    // SAFETY: forwarded contract.
    unsafe {
        with_reader("estargz_reader_entry_xattr", reader, |r| {
            let id = node_id(&r.reader, id)?;
            let xattrs = &r.reader.node(r.reader.resolve(id)).entry.xattrs;
            let (name, value) = xattrs.iter().nth(index).ok_or_else(|| Failure {
                code: estargz_result::ESTARGZ_NOT_FOUND,
                message: format!(
                    "xattr index {index} of entry {id} (it has {})",
                    xattrs.len()
                ),
            })?;
            // SAFETY: forwarded buffer contracts.
            copy_str_out(name, name_buf, name_len, name_out_n, "name_buf")?;
            copy_bytes_out(value, value_buf, value_len, value_out_n, "value_buf")
        })
    }
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
    // SAFETY: forwarded contract.
    unsafe {
        with_reader("estargz_reader_read", reader, |r| {
            let id = node_id(&r.reader, id)?;
            let out = out_ptr(out_n, "out_n")?;
            // SAFETY: `buf` valid for `len` writable bytes (contract).
            let buf = strings::out_bytes(buf, len, "buf")?;
            let n = r.reader.read_at(id, offset, buf)?;
            // SAFETY: non-NULL and writable (contract).
            out.write(n);
            Ok(())
        })
    }
}

/// Extracts every entry, verified, under directory `dir` (borrowed; created
/// if missing). Nothing is written outside `dir`: names with "..", absolute
/// names and symlinks planted by earlier entries are refused
/// (ESTARGZ_UNSAFE_PATH). `flags` is a bitwise OR of ESTARGZ_EXTRACT_*
/// (0 for defaults). `out_stats` (may be NULL) receives counts.
///
/// Errors: ESTARGZ_UNSAFE_PATH, ESTARGZ_IO, ESTARGZ_DIGEST_MISMATCH,
/// ESTARGZ_CORRUPT, ESTARGZ_INVALID_ARGUMENT (NULL dir, unknown flags). A
/// failed extraction may leave some entries written.
#[no_mangle]
pub unsafe extern "C" fn estargz_reader_extract(
    reader: *const estargz_reader,
    dir: *const c_char,
    flags: u32,
    out_stats: *mut estargz_extract_stats,
) -> estargz_result {
    // SAFETY: forwarded contract.
    unsafe {
        with_reader("estargz_reader_extract", reader, |r| {
            // SAFETY: NULL or NUL-terminated (contract).
            let dir = strings::path(dir, "dir")?;
            if flags & !EXTRACT_FLAGS != 0 {
                return Err(Failure::invalid(format!(
                    "unknown extract flags {flags:#x}"
                )));
            }
            let mut opts = ExtractOptions::default();
            if flags & ESTARGZ_EXTRACT_NO_SAME_OWNER != 0 {
                opts.preserve_owners = false;
            }
            opts.xattrs = flags & ESTARGZ_EXTRACT_NO_XATTRS == 0;
            opts.landmarks = flags & ESTARGZ_EXTRACT_LANDMARKS != 0;
            let stats = extract(&r.reader, &dir, &opts)?;
            if !out_stats.is_null() {
                // SAFETY: non-NULL and writable (contract).
                out_stats.write(estargz_extract_stats {
                    files: stats.files,
                    dirs: stats.dirs,
                    others: stats.others,
                    bytes: stats.bytes,
                });
            }
            Ok(())
        })
    }
}

// ---------------------------------------------------------------------------
// Directory iteration

/// Opens an iterator over the entries of directory `id` (hard links to
/// directories do not exist in tars; ESTARGZ_ROOT_ID is the root).
/// `out_iter` receives the handle, owned by the caller: release it with
/// estargz_dir_iter_free. The listing is a snapshot (the tree never changes).
///
/// Errors: ESTARGZ_WRONG_TYPE (not a directory), ESTARGZ_INVALID_ARGUMENT.
#[no_mangle]
pub unsafe extern "C" fn estargz_reader_open_dir(
    reader: *const estargz_reader,
    id: u64,
    out_iter: *mut *mut estargz_dir_iter,
) -> estargz_result {
    // SAFETY: NULL or live (contract).
    let handle = unsafe { reader.as_ref() };
    // SAFETY: forwarded contract.
    unsafe {
        with_reader("estargz_reader_open_dir", reader, |r| {
            let out = out_ptr(out_iter, "out_iter")?;
            let id = node_id(&r.reader, id)?;
            let children = r.reader.read_dir(id)?.into_iter().map(|(_, c)| c).collect();
            let inner = handle
                .map(|h| h.inner.clone())
                .ok_or_else(|| Failure::null("reader"))?;
            let it = Box::new(estargz_dir_iter {
                inner,
                children,
                pos: AtomicUsize::new(0),
            });
            // SAFETY: non-NULL and writable (contract).
            out.write(Box::into_raw(it));
            Ok(())
        })
    }
}

/// Advances the iterator: on ESTARGZ_OK, `*out_done` is false and
/// `*out_entry` holds the next entry (its name: estargz_reader_entry_name),
/// or `*out_done` is true and the listing is exhausted (`*out_entry` is
/// unchanged). Concurrent calls on one iterator each get a distinct entry.
///
/// Errors: ESTARGZ_INVALID_ARGUMENT (NULL argument).
#[no_mangle]
pub unsafe extern "C" fn estargz_dir_iter_next(
    iter: *mut estargz_dir_iter,
    out_entry: *mut estargz_entry,
    out_done: *mut bool,
) -> estargz_result {
    // SAFETY: NULL or live (contract); shared reference (the position is atomic).
    let it = unsafe { iter.cast_const().as_ref() };
    panic::call("estargz_dir_iter_next", None, || {
        let it = it.ok_or_else(|| Failure::null("iter"))?;
        let out = out_ptr(out_entry, "out_entry")?;
        let done = out_ptr(out_done, "out_done")?;
        let i = it.pos.fetch_add(1, Ordering::Relaxed);
        match it.children.get(i) {
            Some(&child) => {
                // SAFETY: both non-NULL and writable (contract).
                unsafe {
                    out.write(entry_of(&it.inner.reader, child));
                    done.write(false);
                }
            }
            None => {
                // Keep the position from growing without bound on repeated calls.
                it.pos.store(it.children.len(), Ordering::Relaxed);
                // SAFETY: non-NULL and writable (contract).
                unsafe { done.write(true) };
            }
        }
        Ok(())
    })
}

/// Releases an iterator. NULL is accepted (no-op).
#[no_mangle]
pub unsafe extern "C" fn estargz_dir_iter_free(iter: *mut estargz_dir_iter) {
    panic::value((), || {
        if !iter.is_null() {
            // SAFETY: live iterator from estargz_reader_open_dir, freed once.
            drop(unsafe { Box::from_raw(iter) });
        }
    })
}
