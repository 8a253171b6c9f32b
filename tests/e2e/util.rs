//! Shared helpers: locating binaries, running commands, snapshotting trees.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// The `estargz` binary of the same profile (target/<profile>/estargz).
pub fn estargz_bin() -> PathBuf {
    workspace_bin("estargz-cli", "estargz")
}

/// The `estargz-fuse` binary of the same profile.
pub fn fuse_bin() -> PathBuf {
    workspace_bin("estargz-fuse", "estargz-fuse")
}

/// A binary of this workspace in the test's profile directory, rebuilt
/// (once per test process) if stale: cargo only builds binaries for tests
/// of their own package.
fn workspace_bin(package: &str, name: &str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if !built.iter().any(|p| p == package) {
        let mut cmd = Command::new(env!("CARGO"));
        // cargo gives the test the package variables of estargz-tests;
        // build scripts (ring's) that watch them would rerun and rebuild
        // the whole chain on every switch between test and binary builds.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if key.starts_with("CARGO_PKG_")
                || key.starts_with("CARGO_MANIFEST_")
                || ["OUT_DIR", "CARGO_CRATE_NAME", "CARGO_PRIMARY_PACKAGE"].contains(&&*key)
            {
                cmd.env_remove(&*key);
            }
        }
        let status = cmd
            .args(["build", "-p", package])
            .args(if profile_dir.ends_with("release") {
                &["--release"][..]
            } else {
                &[][..]
            })
            .status()
            .unwrap();
        assert!(status.success(), "building {package} failed");
        built.push(package.to_string());
    }
    profile_dir.join(name)
}

/// Runs a command, panicking with its output on failure; returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// Everything `tar -x` is expected to restore about one path.
#[derive(Debug, PartialEq, Eq, Clone)]
pub struct Snapshot {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub content: String,
    pub rdev: u64,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// First path (in sort order) sharing this inode; equal for hardlinked paths.
    pub link_group: String,
}

/// Snapshots a tree; `with_owners` false zeroes uid/gid.
pub fn snapshot(root: &Path, with_owners: bool) -> BTreeMap<String, Snapshot> {
    let mut paths = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if std::fs::symlink_metadata(&path).unwrap().is_dir() {
                stack.push(path.clone());
            }
            paths.push(path);
        }
    }
    paths.sort();
    let mut first_by_inode: BTreeMap<u64, String> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for path in paths {
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let ft = meta.file_type();
        let (kind, content) = if ft.is_dir() {
            ("dir", String::new())
        } else if ft.is_symlink() {
            (
                "symlink",
                std::fs::read_link(&path)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            )
        } else if ft.is_file() {
            (
                "file",
                hex::encode(Sha256::digest(std::fs::read(&path).unwrap())),
            )
        } else if ft.is_char_device() {
            ("char", String::new())
        } else if ft.is_block_device() {
            ("block", String::new())
        } else if ft.is_fifo() {
            ("fifo", String::new())
        } else {
            ("other", String::new())
        };
        let link_group = if kind != "dir" && meta.nlink() > 1 {
            first_by_inode
                .entry(meta.ino())
                .or_insert_with(|| rel.clone())
                .clone()
        } else {
            rel.clone()
        };
        let mut xattrs = BTreeMap::new();
        if kind != "symlink" {
            for name in xattr::list(&path).into_iter().flatten() {
                let key = name.to_string_lossy().into_owned();
                if key.starts_with("user.") {
                    xattrs.insert(key, xattr::get(&path, &name).unwrap().unwrap_or_default());
                }
            }
        }
        out.insert(
            rel,
            Snapshot {
                kind,
                mode: if kind == "symlink" {
                    0
                } else {
                    meta.mode() & 0o7777
                },
                uid: if with_owners { meta.uid() } else { 0 },
                gid: if with_owners { meta.gid() } else { 0 },
                mtime: meta.mtime(),
                content,
                rdev: meta.rdev(),
                xattrs,
                link_group,
            },
        );
    }
    out
}

/// Equal up to what a TOC can express: times are whole seconds (rounded to
/// nearest, like the reference, while `tar -x` truncates sub-second PAX
/// times), and directories that the tar does not contain are created "now"
/// by both extractors.
fn equivalent(want: &Snapshot, got: &Snapshot, now: i64) -> bool {
    let created_now = want.kind == "dir" && want.mtime > now - 3600 && got.mtime > now - 3600;
    let times_match = created_now || (want.mtime - got.mtime).abs() <= 1;
    times_match
        && Snapshot {
            mtime: got.mtime,
            ..want.clone()
        } == *got
}

/// Asserts two snapshots are equal, listing the first differences.
pub fn assert_same_tree(
    want: &BTreeMap<String, Snapshot>,
    got: &BTreeMap<String, Snapshot>,
    what: &str,
) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut diffs = Vec::new();
    for (path, w) in want {
        match got.get(path) {
            None => diffs.push(format!("missing: {path}")),
            Some(g) if !equivalent(w, g, now) => {
                diffs.push(format!("{path}:\n  want {w:?}\n  got  {g:?}"))
            }
            _ => {}
        }
    }
    for path in got.keys().filter(|p| !want.contains_key(*p)) {
        diffs.push(format!("unexpected: {path}"));
    }
    assert!(
        diffs.is_empty(),
        "{what}: {} differences, first ones:\n{}",
        diffs.len(),
        diffs
            .iter()
            .take(15)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// A tree exercising every kind of entry and metadata a layer carries.
pub fn make_tree(root: &Path) {
    let f = |p: &str, data: &[u8], mode: u32| {
        let path = root.join(p);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, data).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    };
    f("etc/os-release", b"NAME=test\n", 0o644);
    f("usr/bin/tool", &vec![0x7f; 9_000_000], 0o4755); // setuid, spans chunks
    f("usr/share/empty", b"", 0o600);
    f("opt/sticky/file", b"x", 0o640);
    fs::set_permissions(root.join("opt/sticky"), fs::Permissions::from_mode(0o1777)).unwrap();
    f(
        &format!("deep/{}/{}", "d".repeat(120), "n".repeat(140)),
        b"long name",
        0o644,
    );
    f("unicode/héllo wörld.txt", "ünïcödé".as_bytes(), 0o644);
    fs::hard_link(
        root.join("etc/os-release"),
        root.join("usr/os-release.hard"),
    )
    .unwrap();
    std::os::unix::fs::symlink("../etc/os-release", root.join("usr/os-release")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/absolute", root.join("usr/dangling")).unwrap();
    f("d/.wh..wh..opq", b"", 0o644);
    f(".wh.removed", b"", 0o644);
    let _ = xattr::set(root.join("etc/os-release"), "user.test", b"value\xff\x00");
    if is_root() {
        run(Command::new("chown")
            .args(["-h", "1234:5678"])
            .arg(root.join("usr/share/empty")));
        run(Command::new("chown")
            .args(["-h", "42:42"])
            .arg(root.join("usr/os-release")));
        run(Command::new("mknod")
            .arg(root.join("d/null"))
            .args(["c", "1", "3"]));
        run(Command::new("mknod")
            .arg(root.join("d/loop"))
            .args(["b", "7", "0"]));
    }
    run(Command::new("mkfifo").arg(root.join("d/fifo")));
    run(Command::new("touch")
        .args(["-h", "-d", "2001-02-03 04:05:06"])
        .arg(root.join("usr/os-release")));
    run(Command::new("touch")
        .args(["-d", "1999-12-31 23:59:59"])
        .arg(root.join("etc")));
}

/// Deterministic incompressible bytes.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Writes a tar of a real Debian tree to `tar`: documentation, binaries,
/// zoneinfo (many hard and symbolic links), Perl modules.
pub fn system_tar(tar: &Path) {
    let present: Vec<&str> = [
        "usr/share/doc/dpkg",
        "usr/share/doc/tar",
        "usr/bin/tar",
        "usr/share/zoneinfo/Europe",
        "usr/lib/os-release",
        "usr/share/perl5/Getopt",
    ]
    .into_iter()
    .filter(|p| Path::new("/").join(p).exists())
    .collect();
    assert!(!present.is_empty(), "no system files to archive");
    run(Command::new("tar")
        .args(["--sort=name", "-cf"])
        .arg(tar)
        .arg("-C")
        .arg("/")
        .args(&present));
}

/// Whether a file system is mounted exactly at `mountpoint`.
pub fn is_mounted(mountpoint: &Path) -> bool {
    let want = fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.to_path_buf());
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(want.to_str().unwrap()))
}

/// Starts `estargz-fuse ARGS... --log-level debug` with its log in `log`
/// and waits (30 s) until it has mounted at `mountpoint`.
pub fn start_fuse_process(args: &[&std::ffi::OsStr], mountpoint: &Path, log: &Path) -> Child {
    start_fuse_process_with_env(args, &[], mountpoint, log)
}

/// [`start_fuse_process`] with extra environment variables.
pub fn start_fuse_process_with_env(
    args: &[&std::ffi::OsStr],
    envs: &[(&str, &std::ffi::OsStr)],
    mountpoint: &Path,
    log: &Path,
) -> Child {
    let mut child = Command::new(fuse_bin())
        .args(args)
        .envs(envs.iter().copied())
        .args(["--log-level", "debug"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let log_text = || fs::read_to_string(log).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !is_mounted(mountpoint) {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "estargz-fuse exited ({status}) before mounting:\n{}",
                log_text()
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("mount timed out:\n{}", log_text());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// SIGTERM, then waits (20 s) for the process to exit; on timeout kills it,
/// detaches `mountpoint` and panics with the log.
pub fn stop_fuse_process(mut child: Child, mountpoint: &Path, log: &Path) -> ExitStatus {
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = Command::new("umount").arg("-l").arg(mountpoint).status();
            panic!(
                "estargz-fuse did not exit on SIGTERM:\n{}",
                fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The concatenated members of a gzip stream, decompressed.
pub fn gunzip(data: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(data)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// Whether FUSE mounts can run here (root and /dev/fuse). Otherwise the
/// caller skips, unless `ESTARGZ_REQUIRE_FUSE` is set (CI sets it so a
/// missing prerequisite cannot pass as a skip), which fails the test.
pub fn fuse_available() -> bool {
    prerequisites("FUSE mounts", &[])
}

/// Whether `what` (a test, in messages) can run here: root, `/dev/fuse`
/// and `needs`, pairs of (present, name). A missing one skips the test, or
/// fails it when ESTARGZ_REQUIRE_FUSE is set (CI), so that a missing
/// prerequisite cannot pass as a skip.
pub fn prerequisites(what: &str, needs: &[(bool, &str)]) -> bool {
    let fuse = [
        (is_root(), "root"),
        (Path::new("/dev/fuse").exists(), "/dev/fuse"),
    ];
    let missing: Vec<&str> = fuse
        .iter()
        .chain(needs)
        .filter_map(|&(present, name)| (!present).then_some(name))
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var_os("ESTARGZ_REQUIRE_FUSE").is_none(),
        "ESTARGZ_REQUIRE_FUSE is set but {what} lack: {}",
        missing.join(", ")
    );
    eprintln!("skipped: {what} need {}", missing.join(", "));
    false
}

/// Copies `programs` and the shared libraries they load (from ldd) into
/// `root` at the same paths: a minimal container root file system.
pub fn copy_with_libraries(root: &Path, programs: &[&str]) {
    let mut files = Vec::new();
    for program in programs {
        files.push(PathBuf::from(program));
        for line in run(Command::new("ldd").arg(program)).lines() {
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next(),
                None => line.split_whitespace().next(),
            };
            if let Some(p) = path.filter(|p| p.starts_with('/')) {
                files.push(PathBuf::from(p));
            }
        }
    }
    for f in files {
        let dest = root.join(f.strip_prefix("/").unwrap());
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        fs::copy(&f, &dest).unwrap();
    }
}

/// The descriptor of `data` as a blob of `media_type`, without annotations.
pub fn descriptor(media_type: &str, data: &[u8]) -> estargz_core::remote::manifest::Descriptor {
    estargz_core::remote::manifest::Descriptor {
        media_type: media_type.into(),
        digest: estargz_core::digest::sha256_digest(data),
        size: data.len() as u64,
        annotations: Default::default(),
        platform: None,
    }
}

/// Whether `bin` is on PATH.
pub fn on_path(bin: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
}

/// Mount points under `dir`.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let dir = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(PathBuf::from))
        .filter(|m| m.starts_with(&dir))
        .collect()
}

/// A running `estargz-fuse store`.
pub struct Store {
    child: Option<Child>,
    mountpoint: PathBuf,
    log: PathBuf,
}

impl Store {
    pub fn start(mountpoint: &Path) -> Store {
        Store::start_with(mountpoint, &[])
    }

    /// With `extra` arguments.
    pub fn start_with(mountpoint: &Path, extra: &[&std::ffi::OsStr]) -> Store {
        let log = mountpoint.with_extension("log");
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "store".as_ref(),
            mountpoint.as_ref(),
            // One retry and short timeouts: the outage check stays quick.
            "--plain-http".as_ref(),
            "--retries".as_ref(),
            "1".as_ref(),
            "--request-timeout".as_ref(),
            "5".as_ref(),
            // What the pull and the save download is measured below; the
            // background fetch has a test of its own (store_fetch.rs).
            "--no-background-fetch".as_ref(),
        ];
        args.extend(extra);
        Store {
            child: Some(start_fuse_process(&args, mountpoint, &log)),
            mountpoint: mountpoint.to_path_buf(),
            log,
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            stop_fuse_process(child, &self.mountpoint, &self.log);
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.stop();
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.mountpoint)
            .stderr(Stdio::null())
            .status();
    }
}

/// `podman run` for a one-off container without network. This VM has no
/// CAP_SYS_RESOURCE: rlimits stay below the current ones.
pub const PODMAN_RUN: [&str; 7] = [
    "run",
    "--rm",
    "--network=none",
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
];

/// Podman with storage and registries configuration of its own.
pub struct Podman {
    pub root: PathBuf,
}

impl Podman {
    /// `store`: an Additional Layer Store to use; `None` pulls in full.
    pub fn new(root: &Path, store: Option<&Path>, registries: &[&str]) -> Podman {
        fs::create_dir_all(root).unwrap();
        fs::write(
            root.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"overlay\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n{}",
                root.join("graph").display(),
                root.join("run").display(),
                match store {
                    Some(s) => format!(
                        "[storage.options]\nadditionallayerstores = [\"{}:ref\"]\n",
                        s.display()
                    ),
                    None => String::new(),
                }
            ),
        )
        .unwrap();
        let conf: String = registries
            .iter()
            .map(|r| format!("[[registry]]\nlocation = \"{r}\"\ninsecure = true\n"))
            .collect();
        fs::write(root.join("registries.conf"), conf).unwrap();
        Podman {
            root: root.to_path_buf(),
        }
    }

    pub fn cmd(&self) -> Command {
        // A stuck podman must fail the test, not hang it.
        let mut c = Command::new("timeout");
        c.args(["--kill-after=10", "300", "podman"])
            .env("CONTAINERS_STORAGE_CONF", self.root.join("storage.conf"))
            .env(
                "CONTAINERS_REGISTRIES_CONF",
                self.root.join("registries.conf"),
            )
            .args(["--runtime", "runc", "--cgroup-manager", "cgroupfs"])
            .args(["--events-backend", "file"])
            .stdin(Stdio::null());
        c
    }

    /// Runs podman; returns (stdout, stderr).
    pub fn run(&self, args: &[&str]) -> (String, String) {
        let out = self.cmd().args(args).output().unwrap();
        let (o, e) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert!(
            out.status.success(),
            "podman {args:?}: {}\n{o}\n{e}",
            out.status
        );
        (o, e)
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.cmd().args(["rm", "-a", "-f"]).output();
        let _ = self.cmd().args(["rmi", "-a", "-f"]).output();
        for m in mounts_under(&self.root).into_iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
    }
}

/// `GET /metrics` from a metrics unix socket (`--metrics-address`), as a
/// map of sample → value.
pub fn scrape(socket: &Path) -> std::collections::HashMap<String, f64> {
    use std::io::{Read, Write};
    let mut c = std::os::unix::net::UnixStream::connect(socket).unwrap();
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: metrics\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    c.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect()
}
