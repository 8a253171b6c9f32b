//! The one error type of the file-system logic: the errno the kernel gets,
//! a message for the log, the underlying cause, and the level the failed
//! request is logged at. The adapter does the logging, in one place.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

/// An errno for the kernel (positive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

/// A failed request. Cheap to clone (the cause is shared), so one failed
/// layer resolution can be handed to every request that waited for it.
#[derive(Debug, Clone)]
pub struct FsError {
    errno: Errno,
    message: Cow<'static, str>,
    cause: Option<Arc<dyn std::error::Error + Send + Sync>>,
    level: log::Level,
}

pub type FsResult<T> = Result<T, FsError>;

impl FsError {
    /// An ordinary answer such as "no such entry": logged at trace level
    /// only, since callers probe names all the time.
    pub fn new(errno: i32, message: impl Into<Cow<'static, str>>) -> FsError {
        FsError {
            errno: Errno(errno),
            message: message.into(),
            cause: None,
            level: log::Level::Trace,
        }
    }

    /// The error that made the request fail.
    pub fn caused_by(mut self, cause: impl std::error::Error + Send + Sync + 'static) -> FsError {
        self.cause = Some(Arc::new(cause));
        self
    }

    /// Something worth a log line at `level` (a failed fetch, a timeout).
    pub fn logged_at(mut self, level: log::Level) -> FsError {
        self.level = level;
        self
    }

    pub fn errno(&self) -> Errno {
        self.errno
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn level(&self) -> log::Level {
        self.level
    }
}

impl fmt::Display for FsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.cause {
            Some(cause) => write!(f, "{}: {cause}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for FsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause
            .as_deref()
            .map(|c| c as &(dyn std::error::Error + 'static))
    }
}

/// Test helper: a result's errno, for assertions on what the kernel gets.
#[cfg(test)]
pub(crate) trait ErrnoOf<T> {
    fn errno(self) -> Result<T, Errno>;
}

#[cfg(test)]
impl<T> ErrnoOf<T> for FsResult<T> {
    fn errno(self) -> Result<T, Errno> {
        self.map_err(|e| e.errno())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_cause_and_level() {
        let plain = FsError::new(libc::ENOENT, "no such entry");
        assert_eq!(plain.errno(), Errno(libc::ENOENT));
        assert_eq!(plain.to_string(), "no such entry");
        assert_eq!(plain.level(), log::Level::Trace);
        assert!(std::error::Error::source(&plain).is_none());

        let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer");
        let failed = FsError::new(libc::EIO, format!("read of {:?}", "etc/passwd"))
            .caused_by(io)
            .logged_at(log::Level::Error);
        assert_eq!(failed.errno(), Errno(libc::EIO));
        assert_eq!(failed.message(), "read of \"etc/passwd\"");
        assert_eq!(failed.to_string(), "read of \"etc/passwd\": no answer");
        assert_eq!(failed.level(), log::Level::Error);
        // Clones share the cause.
        let copy = failed.clone();
        assert_eq!(
            std::error::Error::source(&copy).unwrap().to_string(),
            "no answer"
        );
    }
}
