//! estargz_reader_extract: the whole tree, verified, under a directory.

use std::ffi::c_char;

use estargz_core::extract::{extract, ExtractOptions};

use crate::args::try_path;
use crate::error::{estargz_result, Failure, FfiResult};
use crate::export::ffi_call;
use crate::reader::estargz_reader;
use crate::versioned::{opt_versioned_out, versioned_struct};

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

/// Counts from estargz_reader_extract. Set `struct_size` to
/// `sizeof(estargz_extract_stats)` before the call (see the top of this
/// header).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct estargz_extract_stats {
    /// Set by the caller: sizeof(estargz_extract_stats).
    pub struct_size: usize,
    pub files: u64,
    pub dirs: u64,
    /// Symlinks, hard links, devices and fifos.
    pub others: u64,
    /// Bytes of file content written.
    pub bytes: u64,
}

versioned_struct!(estargz_extract_stats);

/// The core's options for a combination of ESTARGZ_EXTRACT_* flags.
fn options(flags: u32) -> FfiResult<ExtractOptions> {
    if flags & !EXTRACT_FLAGS != 0 {
        return Err(Failure::invalid(format!(
            "unknown extract flags {flags:#x}"
        )));
    }
    let mut opts = ExtractOptions::default();
    if flags & ESTARGZ_EXTRACT_NO_SAME_OWNER != 0 {
        opts.same_owner = false;
    }
    opts.xattrs = flags & ESTARGZ_EXTRACT_NO_XATTRS == 0;
    opts.landmarks = flags & ESTARGZ_EXTRACT_LANDMARKS != 0;
    Ok(opts)
}

/// Extracts every entry, verified, under directory `dir` (borrowed; created
/// if missing). Nothing is written outside `dir`: names with "..", absolute
/// names and symlinks planted by earlier entries are refused
/// (ESTARGZ_UNSAFE_PATH). `flags` is a bitwise OR of ESTARGZ_EXTRACT_*
/// (0 for defaults). `out_stats` (may be NULL) receives counts; when not
/// NULL its `struct_size` must be set.
///
/// Errors: ESTARGZ_UNSAFE_PATH, ESTARGZ_IO, ESTARGZ_DIGEST_MISMATCH,
/// ESTARGZ_CORRUPT, ESTARGZ_INVALID_ARGUMENT (NULL dir, unknown flags,
/// unknown `struct_size`; nothing is written then). A failed extraction may
/// leave some entries written.
#[no_mangle]
pub unsafe extern "C" fn estargz_reader_extract(
    reader: *const estargz_reader,
    dir: *const c_char,
    flags: u32,
    out_stats: *mut estargz_extract_stats,
) -> estargz_result {
    ffi_call!(reader => |r| {
        let dir = try_path!(dir);
        let opts = options(flags)?;
        let out = opt_versioned_out!(out_stats);
        let stats = extract(r.reader(), &dir, &opts)?;
        if let Some(out) = out {
            out.write(estargz_extract_stats {
                struct_size: 0,
                files: stats.files,
                dirs: stats.dirs,
                others: stats.others,
                bytes: stats.bytes,
            });
        }
        Ok(())
    })
}
