//! Docker credential helpers: `docker-credential-<name> get` with the
//! server URL on stdin and `{"Username":…,"Secret":…}` on stdout, as
//! named by `credHelpers` / `credsStore` in an auth file.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::auth::Credentials;
use crate::error::{Error, Result};

/// How long a helper may run (it may prompt a keychain or call a cloud API).
pub const HELPER_TIMEOUT: Duration = Duration::from_secs(30);
/// Most bytes read from a helper's stdout or stderr.
const HELPER_OUTPUT_LIMIT: u64 = 64 << 10;

#[derive(Deserialize)]
struct HelperAnswer {
    #[serde(default, rename = "Username")]
    username: String,
    #[serde(default, rename = "Secret")]
    secret: String,
}

/// The executable a helper name stands for.
pub fn helper_program(name: &str) -> String {
    format!("docker-credential-{name}")
}

/// The server URL docker passes for a registry host.
fn server_url(host: &str) -> &str {
    match host {
        "docker.io" => "https://index.docker.io/v1/",
        h => h,
    }
}

/// Runs helper `name` for `host`. `Ok(None)` when the helper has no
/// credentials for it; an error naming the helper when it fails, runs
/// longer than `timeout` or answers something that is not its protocol.
pub fn get(name: &str, host: &str, timeout: Duration) -> Result<Option<Credentials>> {
    if name.is_empty()
        || name
            .bytes()
            .any(|b| b == b'/' || b == 0 || b.is_ascii_whitespace())
    {
        return Err(Error::InvalidArgument(format!(
            "credential helper name {name:?} (for {host}) is not a program name"
        )));
    }
    run(Path::new(&helper_program(name)), host, timeout)
}

/// Runs the helper at `program` (a name looked up in `PATH`, or a path).
fn run(program: &Path, host: &str, timeout: Duration) -> Result<Option<Credentials>> {
    let label = program.file_name().unwrap_or_default().to_string_lossy();
    let fail = |detail: String| {
        Error::Unauthorized(format!("credential helper {label} for {host}: {detail}"))
    };
    let spawn = || {
        Command::new(program)
            .arg("get")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
    };
    let mut child = spawn();
    // A helper written just now may still be open for writing in a child
    // forked meanwhile (ETXTBSY) until that child execs.
    for _ in 0..20 {
        match &child {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                std::thread::sleep(Duration::from_millis(10));
                child = spawn();
            }
            _ => break,
        }
    }
    let mut child = child.map_err(|e| fail(format!("cannot run it: {e}")))?;
    // Stdin is small (a host name): written before reading, then closed.
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(server_url(host).as_bytes());
    }
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut out = Vec::new();
            if let Some(p) = pipe {
                let _ = p.take(HELPER_OUTPUT_LIMIT + 1).read_to_end(&mut out);
            }
            out
        })
    };
    let stdout = reader(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = reader(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() >= deadline => {
                // Killing closes its pipes, which ends the reader threads.
                let _ = child.kill();
                let _ = child.wait();
                return Err(fail(format!("no answer within {timeout:?}")));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(fail(format!("waiting for it: {e}"))),
        }
    };
    // A helper's own children may keep the pipes open: the threads are not
    // joined past the exit, their output is read only if already there.
    let out = join_within(stdout, Duration::from_secs(1));
    let err = join_within(stderr, Duration::from_millis(100));
    let out = out.ok_or_else(|| fail("its output did not end after it exited".into()))?;
    if out.len() as u64 > HELPER_OUTPUT_LIMIT {
        return Err(fail(format!("output over {HELPER_OUTPUT_LIMIT} bytes")));
    }
    let text = String::from_utf8_lossy(&out);
    if !status.success() {
        // The protocol's answer for an unknown server.
        if text.contains("credentials not found") {
            return Ok(None);
        }
        let err = err.unwrap_or_default();
        let detail = [text.trim(), String::from_utf8_lossy(&err).trim()]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        let detail: String = detail.chars().take(300).collect();
        return Err(fail(format!("{status}: {detail}")));
    }
    let answer: HelperAnswer = serde_json::from_slice(&out)
        .map_err(|e| fail(format!("its answer is not the helper JSON: {e}")))?;
    if answer.secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(Credentials {
        // `<token>` marks an identity token, as in auth files.
        username: answer.username,
        password: answer.secret,
    }))
}

fn join_within(h: std::thread::JoinHandle<Vec<u8>>, wait: Duration) -> Option<Vec<u8>> {
    let deadline = Instant::now() + wait;
    while !h.is_finished() {
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    h.join().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    // By path, not through PATH: the environment is shared by all tests.
    fn with_helper<T>(name: &str, script: &str, f: impl FnOnce(PathBuf) -> T) -> T {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(helper_program(name));
        std::fs::write(&p, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        f(p)
    }

    #[test]
    fn protocol() {
        let script = r#"[ "$1" = get ] || exit 3
read host
case "$host" in
  reg.example:5000) echo '{"ServerURL":"reg.example:5000","Username":"u","Secret":"p"}';;
  https://index.docker.io/v1/) echo '{"Username":"<token>","Secret":"idt"}';;
  *) echo "credentials not found in native keychain"; exit 1;;
esac"#;
        with_helper("t1", script, |p| {
            let c = run(&p, "reg.example:5000", HELPER_TIMEOUT)
                .unwrap()
                .unwrap();
            assert_eq!((c.username.as_str(), c.password.as_str()), ("u", "p"));
            let c = run(&p, "docker.io", HELPER_TIMEOUT).unwrap().unwrap();
            assert_eq!(c.username, "<token>");
            assert!(run(&p, "other", HELPER_TIMEOUT).unwrap().is_none());
        });
    }

    #[test]
    fn failures_name_the_helper() {
        with_helper("t2", "echo boom >&2; exit 2", |p| {
            let e = run(&p, "h", HELPER_TIMEOUT).unwrap_err().to_string();
            assert!(
                e.contains("docker-credential-t2") && e.contains("boom"),
                "{e}"
            );
        });
        with_helper("t3", "echo not json", |p| {
            let e = run(&p, "h", HELPER_TIMEOUT).unwrap_err().to_string();
            assert!(
                e.contains("docker-credential-t3") && e.contains("JSON"),
                "{e}"
            );
        });
        with_helper("t4", "exec sleep 30", |p| {
            let t = Instant::now();
            let e = run(&p, "h", Duration::from_millis(300))
                .unwrap_err()
                .to_string();
            assert!(e.contains("no answer"), "{e}");
            assert!(t.elapsed() < Duration::from_secs(5));
        });
        with_helper("t5", "head -c 200000 /dev/zero", |p| {
            let e = run(&p, "h", HELPER_TIMEOUT).unwrap_err().to_string();
            assert!(e.contains("output over"), "{e}");
        });
        let e = get("absent-helper-xyz", "h", HELPER_TIMEOUT)
            .unwrap_err()
            .to_string();
        assert!(e.contains("docker-credential-absent-helper-xyz"), "{e}");
        assert!(get("../x", "h", HELPER_TIMEOUT).is_err());
    }
}
