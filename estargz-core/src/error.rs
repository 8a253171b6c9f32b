//! The one error type of the crate. Every variant maps to exactly one stable
//! numeric code (used by the C ABI) and one errno (used by the FUSE layer).

use std::io;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while building, reading or verifying a blob.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O operation on a source, sink or the local file system failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        #[source]
        /// The error the operating system or the source reported.
        source: io::Error,
    },
    /// The input ended before a complete structure could be read.
    #[error("truncated input: {0}")]
    Truncated(String),
    /// No footer format matched the end of the blob.
    #[error("invalid footer: {0}")]
    InvalidFooter(String),
    /// The TOC could not be located, decompressed or decoded.
    #[error("invalid TOC: {0}")]
    InvalidToc(String),
    /// The input tar stream is malformed.
    #[error("invalid tar: {0}")]
    InvalidTar(String),
    /// Compressed data could not be decompressed.
    #[error("corrupt compressed data: {0}")]
    Corrupt(String),
    /// A digest did not match the expected value.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        /// What was checked (a chunk, the TOC, a blob, ...).
        what: String,
        /// The digest it should have.
        expected: String,
        /// The digest it has.
        actual: String,
    },
    /// An entry name or link target would escape the target directory.
    #[error("unsafe path {0:?}: it would escape the target directory")]
    UnsafePath(String),
    /// A path was not found in the TOC.
    #[error("not found: {0}")]
    NotFound(String),
    /// The operation needs a different entry type (e.g. reading a directory).
    #[error("wrong entry type for {path}: {message}")]
    WrongType {
        /// The entry's path.
        path: String,
        /// What was wrong with its type.
        message: String,
    },
    /// A well-formed input uses a feature this implementation does not support.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The caller passed an invalid argument or option.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A configured resource limit was exceeded.
    #[error("limit exceeded: {0}")]
    LimitExceeded(String),
    /// The network failed (connect, reset, truncated response) after retries.
    #[error("network error: {0}")]
    Network(String),
    /// An operation did not complete within its time limit.
    #[error("timed out: {0}")]
    Timeout(String),
    /// A registry answered with an error status or a malformed response.
    #[error("registry error: {0}")]
    Registry(String),
    /// The registry refused our credentials (or we had none).
    #[error("unauthorized: {0}")]
    Unauthorized(String),
}

/// An [`Error`] carried through `std::io` interfaces (`Read`, `ReadAt`):
/// the kind says what happened, and the error itself rides along, so
/// [`Error::io`] recovers it unchanged on the other side.
impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        let kind = match &e {
            Error::Io { source, .. } => source.kind(),
            Error::Truncated(_) => io::ErrorKind::UnexpectedEof,
            Error::InvalidFooter(_)
            | Error::InvalidToc(_)
            | Error::InvalidTar(_)
            | Error::Corrupt(_)
            | Error::DigestMismatch { .. } => io::ErrorKind::InvalidData,
            Error::UnsafePath(_) | Error::Unauthorized(_) => io::ErrorKind::PermissionDenied,
            Error::NotFound(_) => io::ErrorKind::NotFound,
            Error::WrongType { .. } | Error::InvalidArgument(_) => io::ErrorKind::InvalidInput,
            Error::Unsupported(_) => io::ErrorKind::Unsupported,
            Error::LimitExceeded(_) => io::ErrorKind::FileTooLarge,
            Error::Timeout(_) => io::ErrorKind::TimedOut,
            Error::Network(_) | Error::Registry(_) => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}

/// Stable numeric codes; never renumber, only append.
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Success (only returned by the C ABI).
    Ok = 0,
    /// [`Error::Io`].
    Io = 1,
    /// [`Error::Truncated`].
    Truncated = 2,
    /// [`Error::InvalidFooter`].
    InvalidFooter = 3,
    /// [`Error::InvalidToc`].
    InvalidToc = 4,
    /// [`Error::InvalidTar`].
    InvalidTar = 5,
    /// [`Error::Corrupt`].
    Corrupt = 6,
    /// [`Error::DigestMismatch`].
    DigestMismatch = 7,
    /// [`Error::UnsafePath`].
    UnsafePath = 8,
    /// [`Error::NotFound`].
    NotFound = 9,
    /// [`Error::WrongType`].
    WrongType = 10,
    /// [`Error::Unsupported`].
    Unsupported = 11,
    /// [`Error::InvalidArgument`].
    InvalidArgument = 12,
    /// [`Error::LimitExceeded`].
    LimitExceeded = 13,
    /// Only produced by the C ABI (caught panic, NULL handle, ...).
    Internal = 14,
    /// [`Error::Network`].
    Network = 15,
    /// [`Error::Timeout`].
    Timeout = 16,
    /// [`Error::Registry`].
    Registry = 17,
    /// [`Error::Unauthorized`].
    Unauthorized = 18,
}

impl Error {
    /// Wraps an I/O error with a description of what was being done.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        // Remote sources carry our own error through `io::Error`; keep its
        // kind (network, timeout, ...) instead of flattening it to I/O.
        if source.get_ref().is_some_and(|e| e.is::<Error>()) {
            if let Some(Ok(inner)) = source.into_inner().map(|e| e.downcast::<Error>()) {
                return inner.with_context(&context.into());
            }
            unreachable!("checked above that the io::Error wraps an Error");
        }
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// Prefixes the message of a remote error with what was being done.
    pub fn with_context(self, what: &str) -> Self {
        match self {
            Error::Network(m) => Error::Network(format!("{what}: {m}")),
            Error::Timeout(m) => Error::Timeout(format!("{what}: {m}")),
            Error::Registry(m) => Error::Registry(format!("{what}: {m}")),
            Error::Unauthorized(m) => Error::Unauthorized(format!("{what}: {m}")),
            other => other,
        }
    }

    /// The stable code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Io { .. } => ErrorCode::Io,
            Error::Truncated(_) => ErrorCode::Truncated,
            Error::InvalidFooter(_) => ErrorCode::InvalidFooter,
            Error::InvalidToc(_) => ErrorCode::InvalidToc,
            Error::InvalidTar(_) => ErrorCode::InvalidTar,
            Error::Corrupt(_) => ErrorCode::Corrupt,
            Error::DigestMismatch { .. } => ErrorCode::DigestMismatch,
            Error::UnsafePath(_) => ErrorCode::UnsafePath,
            Error::NotFound(_) => ErrorCode::NotFound,
            Error::WrongType { .. } => ErrorCode::WrongType,
            Error::Unsupported(_) => ErrorCode::Unsupported,
            Error::InvalidArgument(_) => ErrorCode::InvalidArgument,
            Error::LimitExceeded(_) => ErrorCode::LimitExceeded,
            Error::Network(_) => ErrorCode::Network,
            Error::Timeout(_) => ErrorCode::Timeout,
            Error::Registry(_) => ErrorCode::Registry,
            Error::Unauthorized(_) => ErrorCode::Unauthorized,
        }
    }

    /// The errno a file system should report for this error. Data-integrity
    /// failures are EIO so that no wrong bytes are ever handed out.
    pub fn errno(&self) -> i32 {
        match self {
            Error::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            Error::NotFound(_) => libc::ENOENT,
            Error::WrongType { .. } => libc::EINVAL,
            Error::InvalidArgument(_) => libc::EINVAL,
            Error::Unsupported(_) => libc::EOPNOTSUPP,
            Error::UnsafePath(_) => libc::EPERM,
            Error::LimitExceeded(_) => libc::EFBIG,
            Error::Unauthorized(_) => libc::EACCES,
            // A failed fetch is an I/O error for the reader of a file; the
            // next read retries (failures are not remembered).
            Error::Network(_) | Error::Timeout(_) | Error::Registry(_) => libc::EIO,
            Error::Truncated(_)
            | Error::InvalidFooter(_)
            | Error::InvalidToc(_)
            | Error::InvalidTar(_)
            | Error::Corrupt(_)
            | Error::DigestMismatch { .. } => libc::EIO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_keep_the_kind_and_give_the_error_back() {
        let cases = [
            (Error::NotFound("a".into()), io::ErrorKind::NotFound),
            (Error::Timeout("t".into()), io::ErrorKind::TimedOut),
            (Error::Corrupt("c".into()), io::ErrorKind::InvalidData),
            (Error::Truncated("t".into()), io::ErrorKind::UnexpectedEof),
            (
                Error::io("opening", io::Error::from(io::ErrorKind::PermissionDenied)),
                io::ErrorKind::PermissionDenied,
            ),
        ];
        for (e, kind) in cases {
            let code = e.code();
            let text = e.to_string();
            let carried = io::Error::from(e);
            assert_eq!(carried.kind(), kind, "{text}");
            // Remote errors gain the outer context as a prefix; the rest
            // come back as they were.
            let back = Error::io("reading", carried);
            assert_eq!(back.code(), code, "{text}");
            assert!(
                back.to_string()
                    .ends_with(text.rsplit(": ").next().unwrap()),
                "{back}"
            );
        }
    }
}
