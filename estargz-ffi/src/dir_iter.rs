//! estargz_dir_iter: one directory's entries, in name order.

use std::ffi::c_char;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use estargz_core::reader::NodeId;

use crate::args::try_out;
use crate::entry::{entry_of, estargz_entry, node_id};
use crate::entry_details::{details_out, estargz_entry_details, write_if_fits, Details};
use crate::error::estargz_result;
use crate::export::{ffi_call, ffi_free, into_raw, Handle};
use crate::reader::{estargz_reader, ReaderInner};
use crate::versioned::try_versioned_out;

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

impl Handle for estargz_dir_iter {}

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
    ffi_call!(reader => |r| {
        let out = try_out!(out_iter);
        let id = node_id(r.reader(), id)?;
        let children = r.reader().read_dir(id)?.into_iter().map(|(_, c)| c).collect();
        out.write(into_raw(estargz_dir_iter {
            inner: r.inner.clone(),
            children,
            pos: AtomicUsize::new(0),
        }));
        Ok(())
    })
}

/// Advances the iterator: on ESTARGZ_OK, `*out_done` is false and
/// `*out_entry` holds the next entry (its name: estargz_reader_entry_name),
/// or `*out_done` is true and the listing is exhausted (`*out_entry` is
/// unchanged). `out_entry->struct_size` must be set. Concurrent calls on one
/// iterator each get a distinct entry.
///
/// Errors: ESTARGZ_INVALID_ARGUMENT (NULL argument, unknown `struct_size`;
/// the iterator does not advance then).
#[no_mangle]
pub unsafe extern "C" fn estargz_dir_iter_next(
    iter: *mut estargz_dir_iter,
    out_entry: *mut estargz_entry,
    out_done: *mut bool,
) -> estargz_result {
    ffi_call!(iter => |it| {
        let out = try_versioned_out!(out_entry);
        let done = try_out!(out_done);
        let i = it.pos.fetch_add(1, Ordering::Relaxed);
        match it.children.get(i) {
            Some(&child) => {
                out.write(entry_of(&it.inner.reader, child));
                done.write(false);
            }
            None => {
                // Keep the position from growing without bound on repeated calls.
                it.pos.store(it.children.len(), Ordering::Relaxed);
                done.write(true);
            }
        }
        Ok(())
    })
}

/// Advances the iterator like estargz_dir_iter_next, and fills
/// `*out_details` and `buf` with the entry's strings as
/// estargz_reader_entry_details does: one call per entry. `*out_n`
/// receives the bytes the next entry's strings need; if that is more than
/// `len`, the iterator does not advance and nothing else is written but
/// `*out_done` (false): call again with a buffer of at least `*out_n`
/// bytes. When the listing is exhausted, `*out_done` is true and `*out_n`
/// is 0. Concurrent calls on one iterator each get a distinct entry.
///
/// Errors: ESTARGZ_INVALID_ARGUMENT (NULL argument, unknown `struct_size`;
/// the iterator does not advance then).
#[no_mangle]
pub unsafe extern "C" fn estargz_dir_iter_next_details(
    iter: *mut estargz_dir_iter,
    out_entry: *mut estargz_entry,
    out_details: *mut estargz_entry_details,
    buf: *mut c_char,
    len: usize,
    out_n: *mut usize,
    out_done: *mut bool,
) -> estargz_result {
    ffi_call!(iter => |it| {
        let (entry, details, out_n, mut buf) = details_out!(out_entry, out_details, buf, len, out_n);
        let done = try_out!(out_done);
        loop {
            let i = it.pos.load(Ordering::Acquire);
            let Some(&child) = it.children.get(i) else {
                out_n.write(0);
                done.write(true);
                return Ok(());
            };
            let d = Details::of(&it.inner.reader, child);
            if d.needed() > buf.len() {
                out_n.write(d.needed());
                done.write(false);
                return Ok(());
            }
            // Claim entry i; if another thread took it meanwhile, try the
            // one after.
            if it
                .pos
                .compare_exchange(i, i + 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                write_if_fits(&d, entry, details, out_n, &mut buf);
                done.write(false);
                return Ok(());
            }
        }
    })
}

/// Releases an iterator. NULL is accepted (no-op).
#[no_mangle]
pub unsafe extern "C" fn estargz_dir_iter_free(iter: *mut estargz_dir_iter) {
    ffi_free!(iter)
}
