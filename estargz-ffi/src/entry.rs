//! Entries of a reader's tree: estargz_entry (the metadata a file system
//! reports), lookup by path or id, and the per-entry strings and extended
//! attributes fetched by id.

use std::ffi::c_char;

use estargz_core::reader::NodeId;
use estargz_core::{EntryType, Reader};

use crate::args::{copy_bytes_out, copy_str_out, try_str};
use crate::error::{estargz_result, Failure, FfiResult};
use crate::export::ffi_call;
use crate::reader::estargz_reader;
use crate::versioned::{try_versioned_out, versioned_struct};

/// The id of the root directory in every reader.
pub const ESTARGZ_ROOT_ID: u64 = 0;

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

/// Metadata of one entry, as a file system would report it. Filled in by
/// estargz_reader_lookup, estargz_reader_entry and estargz_dir_iter_next;
/// set `struct_size` to `sizeof(estargz_entry)` before the call (see the top
/// of this header). Strings (path, name, link target, owner names) and
/// extended attributes are fetched by id with the estargz_reader_entry_*
/// functions; estargz_reader_entry_details and
/// estargz_dir_iter_next_details give the entry and all its strings in one
/// call.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct estargz_entry {
    /// Set by the caller: sizeof(estargz_entry).
    pub struct_size: usize,
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

versioned_struct!(estargz_entry);

/// The node of entry id `id`, or INVALID_ARGUMENT naming the range.
pub(crate) fn node_id(reader: &Reader, id: u64) -> FfiResult<NodeId> {
    reader.index().node_id(id).ok_or_else(|| {
        Failure::invalid(format!(
            "entry id {id} does not exist (the reader has {} entries)",
            reader.index().len()
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

/// The C view of node `id` (`struct_size` is set when it is written out).
pub(crate) fn entry_of(reader: &Reader, id: NodeId) -> estargz_entry {
    let target = reader.resolve(id);
    // A hard link shows its target's metadata.
    let e = reader.entry(target);
    let kind = if target != id {
        estargz_entry_type::ESTARGZ_ENTRY_HARDLINK
    } else {
        entry_type(e.kind())
    };
    estargz_entry {
        struct_size: 0,
        id: id.get(),
        target_id: target.get(),
        size: if e.kind() == EntryType::Reg {
            e.size()
        } else {
            0
        },
        uid: e.uid(),
        gid: e.gid(),
        mtime: e.mod_time().unwrap_or(0),
        dev_major: e.dev_major(),
        dev_minor: e.dev_minor(),
        xattr_count: e.xattrs().len() as u64,
        kind,
        mode: e.mode() & 0o7777,
        nlink: e.nlink(),
    }
}

/// Looks up `path` (borrowed for the call; any spelling: "a/b", "/a/b",
/// "./a//b"; "" or "/" is the root) and fills `*out_entry`. Hard links are
/// returned as themselves (kind ESTARGZ_ENTRY_HARDLINK); symlinks are not
/// followed.
///
/// Errors: ESTARGZ_NOT_FOUND, ESTARGZ_INVALID_ARGUMENT (also for a
/// `struct_size` this library does not know).
#[no_mangle]
pub unsafe extern "C" fn estargz_reader_lookup(
    reader: *const estargz_reader,
    path: *const c_char,
    out_entry: *mut estargz_entry,
) -> estargz_result {
    ffi_call!(reader => |r| {
        let path = try_str!(path);
        let out = try_versioned_out!(out_entry);
        let id = r.reader().lookup(path)?;
        out.write(entry_of(r.reader(), id));
        Ok(())
    })
}

/// Fills `*out_entry` for the entry with id `id` (ESTARGZ_ROOT_ID is the
/// root). Returns ESTARGZ_INVALID_ARGUMENT for an unknown id.
#[no_mangle]
pub unsafe extern "C" fn estargz_reader_entry(
    reader: *const estargz_reader,
    id: u64,
    out_entry: *mut estargz_entry,
) -> estargz_result {
    ffi_call!(reader => |r| {
        let id = node_id(r.reader(), id)?;
        try_versioned_out!(out_entry).write(entry_of(r.reader(), id));
        Ok(())
    })
}

/// The body of the estargz_reader_entry_* string getters: the string
/// `get(reader, node)` of entry `id`, copied out with snprintf semantics.
macro_rules! entry_string {
    ($reader:ident, $id:ident, $buf:ident, $len:ident, $out_n:ident, |$r:ident, $node:ident| $get:expr) => {
        ffi_call!($reader => |handle| {
            let $r = handle.reader();
            let $node = node_id($r, $id)?;
            let s: String = $get;
            copy_str_out!(&s => $buf, $len, $out_n);
            Ok(())
        })
    };
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
    entry_string!(reader, id, buf, len, out_n, |r, id| r.index().path(id))
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
    entry_string!(reader, id, buf, len, out_n, |r, id| r
        .entry(id)
        .name()
        .to_string())
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
    entry_string!(reader, id, buf, len, out_n, |r, id| link_name(r, id)
        .into_owned())
}

/// What an entry links to: a hard link's target path (as the tree resolved
/// it), else the TOC's link name ("" for non-links).
pub(crate) fn link_name(reader: &Reader, id: NodeId) -> std::borrow::Cow<'_, str> {
    let entry = reader.entry(id);
    match entry.hardlink_target() {
        Some(target) => reader.path(target).into(),
        None => entry.link_name().into(),
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
    entry_string!(reader, id, buf, len, out_n, |r, id| r
        .entry(r.resolve(id))
        .user_name()
        .to_string())
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
    entry_string!(reader, id, buf, len, out_n, |r, id| r
        .entry(r.resolve(id))
        .group_name()
        .to_string())
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
    ffi_call!(reader => |r| {
        let r = r.reader();
        let id = node_id(r, id)?;
        let xattrs = r.entry(r.resolve(id)).xattrs();
        let (name, value) = xattrs.iter().nth(index).ok_or_else(|| Failure {
            code: estargz_result::ESTARGZ_NOT_FOUND,
            message: format!(
                "xattr index {index} of entry {} (it has {})",
                id.get(),
                xattrs.len()
            ),
        })?;
        copy_str_out!(name => name_buf, name_len, name_out_n);
        copy_bytes_out!(value => value_buf, value_len, value_out_n);
        Ok(())
    })
}
