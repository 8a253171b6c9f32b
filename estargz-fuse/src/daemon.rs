//! Process plumbing shared by the mount commands: unmount on SIGINT /
//! SIGTERM (and SIGHUP, unless the process reloads its settings on it),
//! and `--daemon` (the same command re-run detached, which reports through
//! a pipe whether the mount came up).

use std::io::{self, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;

const SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];
/// Set in the detached child: the fd to report readiness on.
const READY_FD_ENV: &str = "ESTARGZ_FUSE_READY_FD";

fn signal_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in SIGNALS {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Blocks the stop signals in this thread and every thread spawned after,
/// so only the waiter started by [`on_stop_signal`] receives them. Call first
/// thing in `main`.
pub fn block_stop_signals() {
    let set = signal_set();
    // SAFETY: a valid set; no old mask wanted.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
}

/// Runs `f` on a thread of its own for every stop signal that arrives, so
/// a stop that failed (an unmount refused while the mount is busy) can be
/// asked for again.
pub fn on_stop_signal(mut f: impl FnMut(i32) + Send + 'static) {
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let set = signal_set();
            let mut sig = 0;
            // SAFETY: waits on a valid set of blocked signals.
            while unsafe { libc::sigwait(&set, &mut sig) } == 0 {
                f(sig);
            }
        })
        .expect("spawning the signal thread");
}

/// What SIGHUP does to a mount process.
pub enum Hangup {
    /// Unmount, like SIGTERM (a layer mount has nothing to reload).
    Stop,
    /// Run this (the store reloads its config file), and keep serving.
    Reload(Box<dyn FnMut() + Send>),
}

/// Unmounts `mountpoint` on SIGINT, SIGTERM or (see [`Hangup`]) SIGHUP. If
/// the unmount is refused (the mount is busy, e.g. under an overlay), the
/// next signal detaches it lazily, as `umount -l` does: the session then
/// ends when the last user lets go.
pub fn unmount_on_stop_signals(
    mut unmounter: fuser::SessionUnmounter,
    mountpoint: PathBuf,
    mut hangup: Hangup,
) {
    let mut signals = 0;
    on_stop_signal(move |sig| {
        if let (libc::SIGHUP, Hangup::Reload(reload)) = (sig, &mut hangup) {
            notify_systemd("RELOADING=1");
            reload();
            notify_systemd("READY=1");
            return;
        }
        signals += 1;
        if signals == 1 {
            log::info!("signal {sig}: unmounting {}", mountpoint.display());
            notify_systemd("STOPPING=1");
            if let Err(e) = unmounter.unmount() {
                log::error!(
                    "unmounting {}: {e}; send the signal again to detach it lazily",
                    mountpoint.display()
                );
            }
            return;
        }
        log::warn!("signal {sig}: detaching {} lazily", mountpoint.display());
        let Ok(path) = std::ffi::CString::new(mountpoint.as_os_str().as_encoded_bytes()) else {
            return;
        };
        // SAFETY: a valid NUL-terminated path.
        if unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) } != 0 {
            log::error!(
                "detaching {}: {}",
                mountpoint.display(),
                io::Error::last_os_error()
            );
        }
    });
}

/// The end of a session loop: after a lazy detach the kernel ends the
/// connection with ECONNABORTED once the last user is gone, which is a
/// normal unmount, not a failure.
pub fn session_ended(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => {
            log::info!("the kernel closed the connection");
            Ok(())
        }
        other => other,
    }
}

/// In the parent of `--daemon`: re-runs this command detached (new session,
/// stdio to `log`), waits until it reports the mount is up or fails, and
/// returns the exit code for the parent.
pub fn spawn_detached(
    args: Vec<std::ffi::OsString>,
    log: Option<&std::path::Path>,
) -> io::Result<i32> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds; CLOEXEC on the read end only matters here.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fds owned from here on.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let out = match log {
        Some(p) => Stdio::from(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)?,
        ),
        None => Stdio::null(),
    };
    let err = match log {
        Some(p) => Stdio::from(std::fs::OpenOptions::new().append(true).open(p)?),
        None => Stdio::null(),
    };
    let write_fd = fds[1];
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(&args)
        .env(READY_FD_ENV, write_fd.to_string())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            // Keep the write end open across exec.
            let flags = libc::fcntl(write_fd, libc::F_GETFD);
            libc::fcntl(write_fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    drop(write_end);
    let mut report = String::new();
    std::fs::File::from(read_end).read_to_string(&mut report)?;
    if report.trim() == "ready" {
        return Ok(0);
    }
    let status = child.wait()?;
    let msg = report.trim();
    eprintln!(
        "estargz-fuse: the mount did not come up ({status}){}{}",
        if msg.is_empty() { "" } else { ": " },
        msg
    );
    Ok(1)
}

/// The readiness pipe of a detached child, taken from the environment by
/// [`take_ready_pipe`] while the process is still single-threaded (changing
/// the environment races with other threads reading it).
static READY_PIPE: Mutex<Option<std::fs::File>> = Mutex::new(None);

/// In a detached child, call first thing in `main`: keeps the pipe the
/// parent waits on for [`report_to_parent`].
pub fn take_ready_pipe() {
    let Some(fd) = std::env::var(READY_FD_ENV)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
    else {
        return;
    };
    std::env::remove_var(READY_FD_ENV);
    // SAFETY: the fd was handed to us by the parent for this one message.
    let f = unsafe { std::fs::File::from_raw_fd(fd) };
    // Programs we start (fusermount3) must not inherit it: the parent
    // waits for the pipe's end-of-file.
    // SAFETY: plain fcntl on an fd we own.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
    }
    *READY_PIPE.lock().unwrap_or_else(|p| p.into_inner()) = Some(f);
}

/// Sends a state line (`READY=1`, `STOPPING=1`) to systemd's
/// `$NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace), if set:
/// units with `Type=notify` start their dependants once the mount serves.
pub fn notify_systemd(state: &str) {
    use std::os::unix::net::UnixDatagram;
    let Some(target) = std::env::var_os("NOTIFY_SOCKET").filter(|v| !v.is_empty()) else {
        return;
    };
    let sent = UnixDatagram::unbound().and_then(|sock| {
        let bytes = std::os::unix::ffi::OsStrExt::as_bytes(target.as_os_str());
        match bytes.strip_prefix(b"@") {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                sock.send_to_addr(state.as_bytes(), &addr)
            }
            None => sock.send_to(state.as_bytes(), &target),
        }
    });
    if let Err(e) = sent {
        log::warn!("telling systemd {state} through {target:?}: {e}");
    }
}

/// Tells whoever waits for the mount how it went (once): the parent of a
/// detached child (`--daemon`), and systemd (`READY=1`) when it asked.
pub fn report_to_parent(result: Result<(), String>) {
    if result.is_ok() {
        notify_systemd("READY=1");
    }
    let Some(mut f) = READY_PIPE.lock().unwrap_or_else(|p| p.into_inner()).take() else {
        return;
    };
    let _ = match result {
        Ok(()) => f.write_all(b"ready\n"),
        Err(e) => f.write_all(e.as_bytes()),
    };
}
