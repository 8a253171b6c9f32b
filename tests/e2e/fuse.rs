//! Real FUSE mounts of `estargz-fuse` (root and /dev/fuse needed; the tests
//! say so and pass without them elsewhere): the mounted tree equals `tar -x`
//! of the input, the mount works as an overlayfs lower directory, many
//! concurrent readers get the right bytes, a broken remote chunk is EIO
//! until the fault clears, passthrough serves cached files, and unmounting
//! leaves no process or mount behind.

mod util;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use estargz_tests::faultproxy::FaultProxy;
use estargz_tests::registry::TestRegistry;
use util::*;

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let me = std::process::id();
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .collect()
}

/// A running `estargz-fuse mount`, stopped (and checked) on drop.
struct Mounted {
    child: Option<Child>,
    mountpoint: PathBuf,
    log: PathBuf,
}

impl Mounted {
    fn start(source: &str, mountpoint: &Path, extra: &[&str]) -> Mounted {
        fs::create_dir_all(mountpoint).unwrap();
        let log = mountpoint.with_extension("log");
        let mut args: Vec<&OsStr> = vec!["mount".as_ref(), source.as_ref(), mountpoint.as_ref()];
        args.extend(extra.iter().map(OsStr::new));
        Mounted {
            child: Some(start_fuse_process(&args, mountpoint, &log)),
            mountpoint: mountpoint.to_path_buf(),
            log,
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM; the process must unmount and exit promptly and cleanly.
    fn stop(&mut self) {
        let Some(child) = self.child.take() else {
            return;
        };
        let status = stop_fuse_process(child, &self.mountpoint, &self.log);
        assert!(status.success(), "exit status {status}:\n{}", self.log());
        assert!(!is_mounted(&self.mountpoint), "still mounted after exit");
        assert!(self.log().contains("unmounted"), "{}", self.log());
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(mut c) = self.child.take() {
                let _ = c.kill();
                let _ = c.wait();
                let _ = Command::new("umount")
                    .arg("-l")
                    .arg(&self.mountpoint)
                    .status();
            }
        } else {
            self.stop();
        }
    }
}

fn convert(input: &Path, blob: &Path, args: &[&str]) {
    run(Command::new(estargz_bin())
        .arg("convert")
        .args(args)
        .arg(input)
        .arg(blob));
}

/// What the mount must show for a `tar -x` tree: whiteout files become
/// whiteout devices, opaque markers become the directory's xattr, and
/// directories the tar lacks (made "now" by tar) keep the mount's time.
fn as_overlay_lower(
    mut want: BTreeMap<String, Snapshot>,
    got: &BTreeMap<String, Snapshot>,
) -> BTreeMap<String, Snapshot> {
    let paths: Vec<String> = want.keys().cloned().collect();
    for path in paths {
        let (dir, name) = match path.rsplit_once('/') {
            Some((d, n)) => (Some(d.to_string()), n.to_string()),
            None => (None, path.clone()),
        };
        let join = |n: &str| match &dir {
            Some(d) => format!("{d}/{n}"),
            None => n.to_string(),
        };
        if name == ".wh..wh..opq" {
            want.remove(&path);
            if let Some(d) = dir.as_ref().and_then(|d| want.get_mut(d)) {
                d.xattrs.insert("user.overlay.opaque".into(), b"y".to_vec());
            }
        } else if let Some(target) = name.strip_prefix(".wh.") {
            let w = want.remove(&path).unwrap();
            want.entry(join(target)).or_insert_with(|| Snapshot {
                kind: "char",
                mode: 0,
                uid: 0,
                gid: 0,
                content: String::new(),
                rdev: 0,
                xattrs: BTreeMap::new(),
                link_group: join(target),
                ..w
            });
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    for (path, w) in want.iter_mut() {
        if w.kind == "dir" && w.mtime > now - 3600 {
            if let Some(g) = got.get(path) {
                w.mtime = g.mtime;
            }
        }
    }
    want
}

/// Converts `tar`, mounts the blob and compares the mount with `tar -x`.
fn mount_and_compare(tar: &Path, work: &Path, convert_args: &[&str]) {
    let blob = work.join("layer.esgz");
    convert(tar, &blob, convert_args);
    let theirs = work.join("theirs");
    let _ = fs::remove_dir_all(&theirs);
    fs::create_dir(&theirs).unwrap();
    run(Command::new("tar")
        .args(["--xattrs", "--xattrs-include=user.*", "-xpf"])
        .arg(tar)
        .arg("-C")
        .arg(&theirs));
    let mnt = work.join("mnt");
    let mut m = Mounted::start(blob.to_str().unwrap(), &mnt, &[]);
    let got = snapshot(&mnt, true);
    let want = as_overlay_lower(snapshot(&theirs, true), &got);
    assert_same_tree(
        &want,
        &got,
        &format!("mount of {} {convert_args:?}", tar.display()),
    );
    m.stop();
}

#[test]
fn mounted_tree_equals_tar_x() {
    if !fuse_available() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    make_tree(&src);
    let tar = work.path().join("in.tar");
    run(Command::new("tar")
        .args(["--xattrs", "--format=posix", "--sort=name", "-cf"])
        .arg(&tar)
        .arg("-C")
        .arg(&src)
        .arg("."));
    mount_and_compare(&tar, work.path(), &[]);
    // Small chunks and packed small files (innerOffset).
    mount_and_compare(
        &tar,
        work.path(),
        &["--chunk-size", "65536", "--min-chunk-size", "16384"],
    );
    // Both zstd:chunked generations.
    mount_and_compare(&tar, work.path(), &["--format", "zstd:chunked"]);
    mount_and_compare(
        &tar,
        work.path(),
        &["--format", "zstd:chunked-v1", "--chunk-size", "65536"],
    );
}

#[test]
fn mounted_debian_tree_equals_tar_x() {
    if !fuse_available() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let tar = work.path().join("system.tar");
    system_tar(&tar);
    mount_and_compare(&tar, work.path(), &[]);
}

fn write_tree(root: &Path, files: &[(&str, &[u8])]) {
    for (name, data) in files {
        let p = root.join(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn mounts_are_overlayfs_lower_dirs() {
    if !fuse_available() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    write_tree(
        &w.join("lower"),
        &[
            ("a/x", b"x"),
            ("a/y", b"y"),
            ("b/z", b"z"),
            ("f", b"lower f"),
            ("keep", b"kept"),
        ],
    );
    write_tree(
        &w.join("upper"),
        &[
            ("a/.wh..wh..opq", b""),
            ("a/new", b"new"),
            (".wh.b", b""),
            (".wh.f", b""),
            ("top", b"top"),
        ],
    );
    for layer in ["lower", "upper"] {
        convert(&w.join(layer), &w.join(format!("{layer}.esgz")), &[]);
    }
    let mut lower = Mounted::start(w.join("lower.esgz").to_str().unwrap(), &w.join("l"), &[]);
    let mut upper = Mounted::start(w.join("upper.esgz").to_str().unwrap(), &w.join("u"), &[]);
    let merged = w.join("merged");
    fs::create_dir(&merged).unwrap();
    run(Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!(
            "lowerdir={}:{}",
            w.join("u").display(),
            w.join("l").display()
        ))
        .arg(&merged));
    let checks = std::panic::catch_unwind(|| {
        assert_eq!(names(&merged), ["a", "keep", "top"]);
        assert_eq!(
            names(&merged.join("a")),
            ["new"],
            "opaque dir hides lower entries"
        );
        assert_eq!(fs::read(merged.join("keep")).unwrap(), b"kept");
        assert_eq!(fs::read(merged.join("a/new")).unwrap(), b"new");
        assert!(!merged.join("f").exists(), "whiteout hides the lower file");
        assert!(!merged.join("b").exists(), "whiteout hides the lower dir");
    });
    run(Command::new("umount").arg(&merged));
    if let Err(e) = checks {
        std::panic::resume_unwind(e);
    }
    upper.stop();
    lower.stop();
}

/// Drops the page cache of a file, so the next read reaches the daemon.
fn drop_page_cache(f: &fs::File) {
    unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
}

#[test]
fn concurrent_random_reads_get_the_right_bytes() {
    if !fuse_available() {
        return;
    }
    let seconds: u64 = std::env::var("ESTARGZ_STRESS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let mut files: Vec<(String, Vec<u8>)> = vec![
        ("big1".into(), noise(5 << 20, 1)),
        ("dir/big2".into(), noise(3 << 20, 2)),
    ];
    for i in 0..40 {
        files.push((format!("small/{i}"), noise(1000 + i * 997, 10 + i as u64)));
    }
    let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, d)| (n.as_str(), &d[..])).collect();
    write_tree(&w.join("src"), &refs);
    let blob = w.join("layer.esgz");
    convert(
        &w.join("src"),
        &blob,
        &["--chunk-size", "65536", "--min-chunk-size", "8192"],
    );
    let mnt = w.join("mnt");
    // A small memory cache, so reads keep going through decompression.
    let mut m = Mounted::start(
        blob.to_str().unwrap(),
        &mnt,
        &["--memory-cache-size", "1048576", "--threads", "8"],
    );
    let files = Arc::new(files);
    let ops = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let workers: Vec<_> = (0..16u64)
        .map(|t| {
            let (files, ops, mnt) = (files.clone(), ops.clone(), mnt.clone());
            std::thread::spawn(move || {
                let mut x = 0x2545_f491_4f6c_dd1du64 ^ (t + 1);
                let mut rnd = move |n: u64| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x % n.max(1)
                };
                while Instant::now() < deadline {
                    let (name, data) = &files[rnd(files.len() as u64) as usize];
                    let f = fs::File::open(mnt.join(name)).unwrap();
                    for _ in 0..8 {
                        let off = rnd(data.len() as u64 + 100);
                        let mut buf = vec![0; 1 + rnd(300 << 10) as usize];
                        let n = f.read_at(&mut buf, off).unwrap();
                        let start = (off as usize).min(data.len());
                        let end = (start + buf.len()).min(data.len());
                        assert_eq!(n, end - start, "{name} at {off}");
                        assert!(buf[..n] == data[start..end], "{name} at {off}: wrong bytes");
                        ops.fetch_add(1, Ordering::Relaxed);
                    }
                    drop_page_cache(&f);
                }
            })
        })
        .collect();
    // A reader stuck past the deadline is a deadlock: fail instead of hanging.
    let watchdog = deadline + Duration::from_secs(60);
    for h in workers {
        while !h.is_finished() {
            assert!(Instant::now() < watchdog, "a reader is stuck:\n{}", m.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Err(e) = h.join() {
            std::panic::resume_unwind(e);
        }
    }
    let done = ops.load(Ordering::Relaxed);
    eprintln!("{done} random reads by 16 threads in {seconds}s");
    assert!(done > 16 * 8, "too few reads: {done}");
    m.stop();
}

#[test]
fn remote_mount_is_eio_on_a_broken_chunk_and_recovers() {
    if !fuse_available() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let data = noise(3 << 20, 5);
    write_tree(
        &w.join("src"),
        &[("data.bin", &data), ("hello", b"hello\n")],
    );
    let blob = w.join("layer.esgz");
    convert(&w.join("src"), &blob, &["--chunk-size", "262144"]);
    let registry = TestRegistry::start(None);
    let reference = format!("{}/fuse/layer:v1", registry.host());
    run(Command::new(estargz_bin())
        .args(["push", "--plain-http", &reference])
        .arg(&blob));
    let proxy = FaultProxy::start(registry.addr(), None).unwrap();
    let via_proxy = format!("docker://{}/fuse/layer:v1", proxy.addr());
    let mnt = w.join("mnt");
    let mut m = Mounted::start(
        &via_proxy,
        &mnt,
        &[
            "--plain-http",
            "--retries",
            "1",
            "--request-timeout",
            "5",
            "--no-prefetch",
            // Only the reads below may fetch (and meet the faults).
            "--no-background-fetch",
        ],
    );
    assert_eq!(fs::read(mnt.join("hello")).unwrap(), b"hello\n");

    proxy.set(|f| f.corrupt_next = 1000);
    let started = Instant::now();
    let err = fs::read(mnt.join("data.bin")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(
        m.log().contains("failed"),
        "no log line for the failed read"
    );

    proxy.clear();
    let mut got = Vec::new();
    fs::File::open(mnt.join("data.bin"))
        .unwrap()
        .read_to_end(&mut got)
        .unwrap();
    assert!(got == data, "wrong bytes after the fault cleared");
    m.stop();

    // The reference as `estargz pull` takes it (no docker://), the layer by digest.
    let digest = estargz_core::digest::sha256_digest(&fs::read(&blob).unwrap());
    let mut m = Mounted::start(
        &reference,
        &mnt,
        &["--plain-http", "--layer", &digest, "--no-background-fetch"],
    );
    assert_eq!(fs::read(mnt.join("hello")).unwrap(), b"hello\n");
    assert!(
        m.log().contains(&format!("mounted layer 0 ({digest})")),
        "{}",
        m.log()
    );
    m.stop();
}

#[test]
fn fully_cached_files_are_served_by_kernel_passthrough() {
    if !fuse_available() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let data = noise(2 << 20, 9);
    write_tree(&w.join("src"), &[("file.bin", &data)]);
    let blob = w.join("layer.esgz");
    convert(&w.join("src"), &blob, &["--chunk-size", "524288"]);
    let mnt = w.join("mnt");
    let cache = w.join("cache");
    let mut m = Mounted::start(
        blob.to_str().unwrap(),
        &mnt,
        &["--cache-dir", cache.to_str().unwrap()],
    );
    // Cold: through the daemon, filling the cache.
    assert!(fs::read(mnt.join("file.bin")).unwrap() == data);
    // Warm: the reopened file is handed to the kernel.
    let f = fs::File::open(mnt.join("file.bin")).unwrap();
    drop_page_cache(&f);
    let marker = m.log().len();
    let mut got = Vec::new();
    (&f).read_to_end(&mut got).unwrap();
    assert!(got == data, "wrong bytes through passthrough");
    let log = m.log();
    assert!(log.contains("passthrough"), "no passthrough open:\n{log}");
    let after = &log[marker..];
    assert!(
        !after.contains(" READ "),
        "reads reached the daemon after the passthrough open:\n{after}"
    );
    // The copy is an unlinked file: nothing but the chunk store is in the
    // cache dir, even while it is in use (so a crash leaves nothing behind).
    let check = || {
        for e in fs::read_dir(&cache).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            assert!(
                ["chunks", "tmp"].contains(&name.as_str()),
                "{name} in the cache dir"
            );
        }
        let tmp = cache.join("tmp");
        assert!(!tmp.exists() || fs::read_dir(&tmp).unwrap().next().is_none());
    };
    check();
    drop(f);
    m.stop();
    check();
}

#[test]
fn daemon_mode_detaches_and_exits_on_unmount() {
    if !fuse_available() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    write_tree(&w.join("src"), &[("hello", b"hello\n")]);
    let blob = w.join("layer.esgz");
    convert(&w.join("src"), &blob, &[]);
    let mnt = w.join("mnt");
    fs::create_dir(&mnt).unwrap();
    let log = w.join("daemon.log");
    // Returns once the mount is up.
    run(Command::new(fuse_bin())
        .args(["mount", "--daemon", "--log-file"])
        .arg(&log)
        .arg(&blob)
        .arg(&mnt));
    assert!(is_mounted(&mnt));
    assert_eq!(fs::read(mnt.join("hello")).unwrap(), b"hello\n");
    let needle = mnt.to_str().unwrap().to_string();
    assert_eq!(processes_mentioning(&needle).len(), 1);
    // An unmount from outside ends the daemon.
    run(Command::new("umount").arg(&mnt));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !processes_mentioning(&needle).is_empty() {
        assert!(
            Instant::now() < deadline,
            "daemon still running after umount"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(fs::read_to_string(&log).unwrap().contains("unmounted"));

    // A source that cannot be mounted: the parent reports why.
    fs::write(w.join("bad.esgz"), b"not a blob").unwrap();
    let out = Command::new(fuse_bin())
        .args(["mount", "--daemon"])
        .arg(w.join("bad.esgz"))
        .arg(&mnt)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.esgz"), "{stderr}");
    assert!(!is_mounted(&mnt));
}

#[test]
fn a_busy_mount_is_detached_on_the_second_signal() {
    if !fuse_available() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    write_tree(&w.join("src"), &[("hello", b"hello\n")]);
    let blob = w.join("layer.esgz");
    convert(&w.join("src"), &blob, &[]);
    let mnt = w.join("mnt");
    let mut m = Mounted::start(blob.to_str().unwrap(), &mnt, &[]);
    let mut child = m.child.take().unwrap();
    // An open file makes the plain unmount fail with EBUSY.
    let open = fs::File::open(mnt.join("hello")).unwrap();
    let term = || unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    term();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !m.log().contains("send the signal again") {
        assert!(Instant::now() < deadline, "no refusal logged:\n{}", m.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(is_mounted(&mnt), "unmounted despite an open file");
    let mut buf = String::new();
    (&open).read_to_string(&mut buf).unwrap();
    assert_eq!(buf, "hello\n", "the busy mount still serves reads");
    term();
    let deadline = Instant::now() + Duration::from_secs(10);
    while is_mounted(&mnt) {
        assert!(Instant::now() < deadline, "not detached:\n{}", m.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    // Detached: the process ends once the last user lets go.
    drop(open);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "estargz-fuse did not exit after the lazy detach:\n{}",
                m.log()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status}:\n{}", m.log());
}
