//! A minimal stderr logger (timestamped lines) for the mount daemon; fuser
//! logs through the same `log` facade.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

struct StderrLogger;

impl log::Log for StderrLogger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &log::Record) {
        let level = level_of(r);
        if level > log::max_level() {
            return;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let _ = writeln!(
            std::io::stderr().lock(),
            "{}.{:03} {:5} {}",
            now.as_secs(),
            now.subsec_millis(),
            level,
            r.args()
        );
    }

    fn flush(&self) {}
}

/// The level a record is shown at. fuser logs an ERROR when the kernel
/// refuses a reply with ENOENT, which is what the kernel does when the
/// request was interrupted meanwhile (the caller was killed or gave up):
/// nothing is wrong then, so that line is shown at debug level only.
fn level_of(r: &log::Record) -> log::Level {
    // fuser tries to unmount again when a session we unmounted ourselves
    // (to keep a busy mount retryable) is dropped: EINVAL, not mounted.
    if r.level() == log::Level::Warn && r.target().starts_with("fuser") {
        let text = r.args().to_string();
        if text.starts_with("Unmount failed")
            && text.contains(&std::io::Error::from_raw_os_error(libc::EINVAL).to_string())
        {
            return log::Level::Debug;
        }
    }
    if r.level() == log::Level::Error && r.target().starts_with("fuser") {
        let text = r.args().to_string();
        if text.starts_with("Failed to send FUSE reply")
            && text.contains(&std::io::Error::from_raw_os_error(libc::ENOENT).to_string())
        {
            return log::Level::Debug;
        }
    }
    r.level()
}

pub fn init(level: log::LevelFilter) {
    static LOGGER: StderrLogger = StderrLogger;
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record_level(target: &str, level: log::Level, text: &str) -> log::Level {
        level_of(
            &log::Record::builder()
                .target(target)
                .level(level)
                .args(format_args!("{text}"))
                .build(),
        )
    }

    #[test]
    fn replies_to_interrupted_requests_are_debug_only() {
        let enoent = std::io::Error::from_raw_os_error(libc::ENOENT);
        let interrupted = format!("Failed to send FUSE reply: {enoent}");
        assert_eq!(
            record_level("fuser::reply", log::Level::Error, &interrupted),
            log::Level::Debug
        );
        // Any other failure to reply stays an error, as do our own lines.
        let other = format!(
            "Failed to send FUSE reply: {}",
            std::io::Error::from_raw_os_error(libc::EINVAL)
        );
        assert_eq!(
            record_level("fuser::reply", log::Level::Error, &other),
            log::Level::Error
        );
        assert_eq!(
            record_level("estargz_fuse", log::Level::Error, &interrupted),
            log::Level::Error
        );
    }

    #[test]
    fn fusers_second_unmount_of_a_session_we_unmounted_is_debug_only() {
        let einval = std::io::Error::from_raw_os_error(libc::EINVAL);
        let line = format!("Unmount failed: {einval}");
        assert_eq!(
            record_level("fuser::mnt", log::Level::Warn, &line),
            log::Level::Debug
        );
        let busy = format!(
            "Unmount failed: {}",
            std::io::Error::from_raw_os_error(libc::EBUSY)
        );
        assert_eq!(
            record_level("fuser::mnt", log::Level::Warn, &busy),
            log::Level::Warn
        );
    }
}
