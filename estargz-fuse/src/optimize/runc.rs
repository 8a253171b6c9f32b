//! Running the workload with runc: `runc run` in the foreground, stopped
//! (`runc kill KILL`) when the period is over or a stop signal came, and
//! always deleted afterwards.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use estargz_core::{Error, Result};

/// How the workload ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It exited by itself with this status (runc reports 128 + N for a
    /// workload killed by signal N).
    Exited(i32),
    /// The period was over and it was still running: stopped.
    PeriodExpired,
    /// A stop signal (or, with `--wait-on-signal`, the signal waited for)
    /// ended it.
    Stopped,
}

/// When the workload is stopped if it does not exit first.
#[derive(Debug, Clone, Copy)]
pub enum Wait {
    Period(Duration),
    /// Until `stop` is set (a signal).
    Signal,
}

/// `runtime` as an executable path: a name is looked up on `PATH`.
pub fn find_runtime(runtime: &Path) -> Result<PathBuf> {
    let missing = || {
        Error::NotFound(format!(
            "the OCI runtime {} was not found{}: install runc (Debian: apt-get install runc) \
             or name one with --runtime",
            runtime.display(),
            if runtime.components().count() > 1 {
                ""
            } else {
                " on PATH"
            }
        ))
    };
    let is_exe = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if runtime.components().count() > 1 {
        return is_exe(runtime)
            .then(|| runtime.to_path_buf())
            .ok_or_else(missing);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(runtime))
        .find(|p| is_exe(p))
        .ok_or_else(missing)
}

/// Runs the bundle at `bundle` as container `id` until it exits or `wait`
/// says to stop it. The workload's output goes to our stderr (stdout is
/// the command's result).
pub fn run(
    runtime: &Path,
    bundle: &Path,
    id: &str,
    wait: Wait,
    stop: &AtomicBool,
) -> Result<Outcome> {
    let mut child = command(runtime)
        .args(["run", "--bundle"])
        .arg(bundle)
        .arg(id)
        .stdin(Stdio::null())
        .stdout(dup_stderr())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| Error::io(format!("starting {} run", runtime.display()), e))?;
    let started = Instant::now();
    let outcome = loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|e| Error::io(format!("waiting for {} run", runtime.display()), e))?
        {
            break Outcome::Exited(exit_code(status));
        }
        let expired = matches!(wait, Wait::Period(p) if started.elapsed() >= p);
        if expired || stop.load(Ordering::Relaxed) {
            kill(runtime, id);
            // runc exits once the container's init is gone.
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
            break if expired {
                Outcome::PeriodExpired
            } else {
                Outcome::Stopped
            };
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    delete(runtime, id);
    Ok(outcome)
}

/// The runtime with a clean signal mask: the optimize command blocks the
/// stop signals in its threads, and a workload must not inherit that.
fn command(runtime: &Path) -> Command {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new(runtime);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        c.pre_exec(|| {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            Ok(())
        });
    }
    c
}

fn dup_stderr() -> Stdio {
    use std::os::fd::AsFd;
    match std::io::stderr().as_fd().try_clone_to_owned() {
        Ok(fd) => Stdio::from(fd),
        Err(_) => Stdio::inherit(),
    }
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

fn kill(runtime: &Path, id: &str) {
    let out = command(runtime)
        .args(["kill", id, "KILL"])
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(o) if !o.status.success() => log::debug!(
            "runc kill {id}: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => log::warn!("runc kill {id}: {e}"),
        _ => {}
    }
}

fn delete(runtime: &Path, id: &str) {
    let out = command(runtime)
        .args(["delete", "--force", id])
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(o) if !o.status.success() => log::debug!(
            "runc delete {id}: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => log::warn!("runc delete {id}: {e}"),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_runtime_is_a_clear_error() {
        let e = find_runtime(Path::new("no-such-runc-here")).unwrap_err();
        assert!(e.to_string().contains("not found on PATH"), "{e}");
        let e = find_runtime(Path::new("/nonexistent/runc")).unwrap_err();
        assert!(e.to_string().contains("install runc"), "{e}");
        assert_eq!(
            find_runtime(Path::new("/bin/sh")).unwrap(),
            Path::new("/bin/sh")
        );
    }
}
