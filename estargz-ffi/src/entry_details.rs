//! estargz_entry_details: an entry's metadata and all its strings in one
//! call (estargz_reader_entry_details, estargz_dir_iter_next_details), for
//! bindings where every call across the ABI costs (cgo), instead of one
//! call per string.

use std::ffi::c_char;

use estargz_core::reader::NodeId;
use estargz_core::Reader;

use crate::args::Out;
use crate::entry::{entry_of, estargz_entry, estargz_entry_type, link_name, node_id};
use crate::error::{estargz_result, Failure, FfiResult};
use crate::export::ffi_call;
use crate::reader::estargz_reader;
use crate::versioned::{versioned_struct, VersionedOut};

/// Where estargz_reader_entry_details and estargz_dir_iter_next_details put
/// an entry's strings in the caller's buffer, and the kind of the entry
/// holding its data. Set `struct_size` to `sizeof(estargz_entry_details)`
/// before the call (see the top of this header).
///
/// The buffer holds, in this order and each followed by a NUL: the path
/// (as estargz_reader_entry_path), the name (estargz_reader_entry_name),
/// the link target (estargz_reader_entry_link_name), the user name and the
/// group name. `*_offset` is where each starts in the buffer, `*_len` its
/// length without the NUL; `buf + name_offset` is a C string.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct estargz_entry_details {
    /// Set by the caller: sizeof(estargz_entry_details).
    pub struct_size: usize,
    pub path_offset: usize,
    pub path_len: usize,
    pub name_offset: usize,
    pub name_len: usize,
    pub link_name_offset: usize,
    pub link_name_len: usize,
    pub user_name_offset: usize,
    pub user_name_len: usize,
    pub group_name_offset: usize,
    pub group_name_len: usize,
    /// The kind of the entry holding the data: for a hard link, its
    /// target's kind (never ESTARGZ_ENTRY_HARDLINK); otherwise `kind`.
    pub target_kind: estargz_entry_type,
}

versioned_struct!(estargz_entry_details);

/// The caller's string buffer. Unlike `args::try_out_bytes!` it is not
/// zeroed up front: a call whose strings do not fit leaves it untouched.
pub(crate) struct OutBuf {
    ptr: *mut u8,
    len: usize,
}

impl OutBuf {
    /// # Safety
    /// `ptr` is NULL or valid for writes of `len` bytes during the call.
    pub unsafe fn new(ptr: *mut c_char, len: usize, arg: &str) -> FfiResult<Self> {
        if ptr.is_null() && len != 0 {
            return Err(Failure::null(arg));
        }
        Ok(OutBuf {
            ptr: ptr.cast(),
            len,
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Writes `s` and a NUL at `at`.
    ///
    /// # Panics
    /// If they do not fit (a bug: callers check the total first).
    fn put(&mut self, at: usize, s: &str) {
        assert!(at + s.len() < self.len, "string does not fit the buffer");
        // SAFETY: in bounds (asserted) of a buffer writable for `len` bytes
        // (constructor contract); the source is a distinct Rust allocation.
        unsafe {
            std::ptr::copy_nonoverlapping(s.as_ptr(), self.ptr.add(at), s.len());
            self.ptr.add(at + s.len()).write(0);
        }
    }
}

/// One entry, ready to be written out.
pub(crate) struct Details<'r> {
    entry: estargz_entry,
    target_kind: estargz_entry_type,
    /// path, name, link name, user name, group name.
    strings: [std::borrow::Cow<'r, str>; 5],
}

impl<'r> Details<'r> {
    pub fn of(reader: &'r Reader, id: NodeId) -> Self {
        let target = reader.resolve(id);
        let data = reader.entry(target);
        Details {
            entry: entry_of(reader, id),
            target_kind: entry_of(reader, target).kind,
            strings: [
                reader.path(id).into(),
                reader.entry(id).name().into(),
                link_name(reader, id),
                data.user_name().into(),
                data.group_name().into(),
            ],
        }
    }

    /// Buffer bytes the strings take, NULs included.
    pub fn needed(&self) -> usize {
        self.strings.iter().map(|s| s.len() + 1).sum()
    }

    /// Writes the entry, the details and the strings; `buf` holds at least
    /// `needed()` bytes.
    pub fn write(
        &self,
        entry: VersionedOut<estargz_entry>,
        details: VersionedOut<estargz_entry_details>,
        buf: &mut OutBuf,
    ) {
        let mut spans = [(0, 0); 5];
        let mut at = 0;
        for (span, s) in spans.iter_mut().zip(&self.strings) {
            buf.put(at, s);
            *span = (at, s.len());
            at += s.len() + 1;
        }
        let [path, name, link_name, user_name, group_name] = spans;
        entry.write(self.entry);
        details.write(estargz_entry_details {
            struct_size: 0,
            path_offset: path.0,
            path_len: path.1,
            name_offset: name.0,
            name_len: name.1,
            link_name_offset: link_name.0,
            link_name_len: link_name.1,
            user_name_offset: user_name.0,
            user_name_len: user_name.1,
            group_name_offset: group_name.0,
            group_name_len: group_name.1,
            target_kind: self.target_kind,
        });
    }
}

/// The out arguments of both exports, `(entry, details, out_n, buf)`,
/// all checked before any work, so a bad call never consumes an entry.
macro_rules! details_out {
    ($out_entry:ident, $out_details:ident, $buf:ident, $len:ident, $out_n:ident) => {{
        let entry = $crate::versioned::try_versioned_out!($out_entry);
        let details = $crate::versioned::try_versioned_out!($out_details);
        let out_n = $crate::args::try_out!($out_n);
        // SAFETY: an export's buffer holds `len` writable bytes (export.rs).
        let buf = unsafe { $crate::entry_details::OutBuf::new($buf, $len, stringify!($buf)) }?;
        (entry, details, out_n, buf)
    }};
}
pub(crate) use details_out;

/// Fills `*out_entry` (as estargz_reader_entry) and `*out_details`, and
/// copies all the entry's strings into `buf` (layout: estargz_entry_details)
/// in one call. `*out_n` receives the bytes the strings need, NULs
/// included; if that is more than `len`, nothing else is written: call
/// again with a buffer of at least `*out_n` bytes. `buf` may be NULL when
/// `len` is 0 (a size query).
///
/// Errors: ESTARGZ_INVALID_ARGUMENT for an unknown id, a NULL argument
/// (`buf` with a non-zero `len`) or a `struct_size` this library does not
/// know.
#[no_mangle]
pub unsafe extern "C" fn estargz_reader_entry_details(
    reader: *const estargz_reader,
    id: u64,
    out_entry: *mut estargz_entry,
    out_details: *mut estargz_entry_details,
    buf: *mut c_char,
    len: usize,
    out_n: *mut usize,
) -> estargz_result {
    ffi_call!(reader => |r| {
        let (entry, details, out_n, mut buf) = details_out!(out_entry, out_details, buf, len, out_n);
        let id = node_id(r.reader(), id)?;
        write_if_fits(&Details::of(r.reader(), id), entry, details, out_n, &mut buf);
        Ok(())
    })
}

/// Writes `d` if its strings fit in `buf`; `*out_n` gets their size either
/// way. Returns whether it wrote.
pub(crate) fn write_if_fits(
    d: &Details<'_>,
    entry: VersionedOut<estargz_entry>,
    details: VersionedOut<estargz_entry_details>,
    out_n: Out<usize>,
    buf: &mut OutBuf,
) -> bool {
    let needed = d.needed();
    out_n.write(needed);
    if needed > buf.len() {
        return false;
    }
    d.write(entry, details, buf);
    true
}
