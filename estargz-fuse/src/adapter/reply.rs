//! Conversions from the file-system answers to fuser replies, and the one
//! place where failed requests are logged.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileType, INodeNo, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyXattr,
};

use crate::rofs::{Attr, FsError, Kind, BLOCK_SIZE};

/// The replies a request can fail with (fuser gives them no common trait).
pub(crate) trait ErrorReply {
    fn error(self, errno: Errno);
}

macro_rules! error_replies {
    ($($reply:ty),*) => {
        $(impl ErrorReply for $reply {
            fn error(self, errno: Errno) {
                <$reply>::error(self, errno)
            }
        })*
    };
}

error_replies!(
    ReplyAttr,
    ReplyCreate,
    ReplyData,
    ReplyDirectory,
    ReplyDirectoryPlus,
    ReplyEmpty,
    ReplyEntry,
    ReplyOpen,
    ReplyXattr
);

/// Answers `reply` with `err`'s errno, after a log line at the error's
/// level naming the request.
pub(crate) fn fail(op: &'static str, ino: u64, err: FsError, reply: impl ErrorReply) {
    estargz_core::metrics::global().fuse_error(op);
    let errno = err.errno().0;
    log::log!(
        err.level(),
        "{op} on inode {ino:#x} failed ({}): {err}",
        std::io::Error::from_raw_os_error(errno)
    );
    reply.error(Errno::from_i32(errno));
}

pub(crate) fn file_type(kind: Kind) -> FileType {
    match kind {
        Kind::Directory => FileType::Directory,
        Kind::RegularFile => FileType::RegularFile,
        Kind::Symlink => FileType::Symlink,
        Kind::CharDevice => FileType::CharDevice,
        Kind::BlockDevice => FileType::BlockDevice,
        Kind::NamedPipe => FileType::NamedPipe,
    }
}

fn time(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

pub(crate) fn file_attr(a: &Attr) -> FileAttr {
    let t = time(a.mtime);
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks,
        atime: time(a.atime),
        mtime: t,
        ctime: time(a.ctime),
        crtime: t,
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: BLOCK_SIZE,
        flags: 0,
    }
}

/// getxattr/listxattr size negotiation: size 0 asks for the length.
pub(crate) fn xattr(value: &[u8], size: u32, reply: ReplyXattr) {
    if size == 0 {
        reply.size(value.len() as u32)
    } else if value.len() > size as usize {
        reply.error(Errno::from_i32(libc::ERANGE))
    } else {
        reply.data(value)
    }
}
