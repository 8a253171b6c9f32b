//! `estargz-snapshotter` (bindings/go/snapshotter) as a proxy snapshotter
//! of a real containerd 1.6 driven by Debian's `ctr-remote`: an image made
//! by `estargz convert-image` is pulled lazily (its layers become FUSE
//! mounts, committed with the remote label, only a small part of the blobs
//! downloaded), runs with every layer's files byte-exact, keeps a running
//! container's reads working across `kill -9` of the snapshotter (the FUSE
//! manager owns the mounts; the restarted snapshotter takes them back),
//! starts while the registry is down (the layers mounted again once it is
//! back); a plain gzip image goes through the fallback (an ordinary
//! pull and unpack); removing the images unmounts everything. The CRI path:
//! `crictl` through containerd's CRI plugin pulls the image lazily from the
//! CRI labels alone and runs a host-network pod on the FUSE layers.
//!
//! Run by scripts/containerd-test.sh, which builds the snapshotter against
//! this checkout's library and crictl (tests/crictl), passes them in
//! ESTARGZ_SNAPSHOTTER and ESTARGZ_CRICTL and runs the tests, which are
//! ignored otherwise (so `cargo test` reports it as not
//! run). Needs root, /dev/fuse, containerd, ctr-remote, runc and skopeo
//! (ESTARGZ_REQUIRE_FUSE makes them required).

mod util;

use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use estargz_core::digest::sha256_digest;
use estargz_core::image::layout::OciLayout;
use estargz_core::remote::manifest::{Manifest, OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST};
use estargz_tests::faultproxy::FaultProxy;
use estargz_tests::registry::TestRegistry;
use util::*;

const SNAPSHOTTER: &str = "estargz";
const REMOTE_LABEL: &str = "containerd.io/snapshot/remote";

fn on_path(bin: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
}

/// The snapshotter binary, or `None` (with the reason printed) when the
/// test cannot run here.
fn prerequisites() -> Option<PathBuf> {
    let bin = PathBuf::from(
        std::env::var_os("ESTARGZ_SNAPSHOTTER")
            .expect("ESTARGZ_SNAPSHOTTER: run by scripts/containerd-test.sh"),
    );
    let present = util::prerequisites(
        "the containerd tests",
        &[
            (on_path("containerd"), "containerd"),
            (on_path("ctr-remote"), "ctr-remote"),
            (on_path("runc"), "runc"),
            (on_path("skopeo"), "skopeo"),
            (bin.is_file(), "the ESTARGZ_SNAPSHOTTER binary"),
        ],
    );
    present.then_some(bin)
}

/// Runs `cmd` (no stdin) under `timeout`, killed after 120 s (+10):
/// (success, stdout, stderr).
fn bounded_output(cmd: &Command) -> (bool, String, String) {
    let out = Command::new("timeout")
        .args(["--kill-after=10", "120"])
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Mount points at or under `dir` (deepest last).
fn mounts_under(dir: &Path) -> Vec<(PathBuf, String)> {
    let dir = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let sep = f.iter().position(|x| *x == "-")?;
            Some((PathBuf::from(f[4]), f.get(sep + 1)?.to_string()))
        })
        .filter(|(m, _)| m.starts_with(&dir))
        .collect()
}

fn wait_for_socket(path: &Path, child: &mut Child, log: &Path, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !fs::metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "{what} exited ({status}):\n{}",
                fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not start:\n{}",
            fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGTERM, then at most 20 s; a process that does not exit is killed and
/// the test fails.
fn terminate(child: &mut Child, what: &str, log: &Path) {
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} did not exit on SIGTERM:\n{}",
                fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Snapshotter {
    bin: PathBuf,
    child: Option<Child>,
    root: PathBuf,
    socket: PathBuf,
    config: PathBuf,
    log: PathBuf,
    /// `metrics_address`: served by the FUSE manager, which mounts.
    metrics: PathBuf,
}

impl Snapshotter {
    fn new(bin: &Path, work: &Path, registry_host: &str) -> Snapshotter {
        let config = work.join("snapshotter.toml");
        // The registry is plain HTTP because containerd's hosts.toml says
        // so (`server`), as a containerd host would configure it: the
        // snapshotter reads the same directory through `hosts_dir`.
        let hosts = work.join("certs.d");
        fs::create_dir_all(hosts.join(registry_host)).unwrap();
        fs::write(
            hosts.join(registry_host).join("hosts.toml"),
            format!("server = \"http://{registry_host}\"\n"),
        )
        .unwrap();
        // No background fetch: what the pull downloads is measured.
        let metrics = work.join("metrics.sock");
        fs::write(
            &config,
            format!(
                "hosts_dir = \"{}\"\nbackground_fetch = false\n\
                 request_timeout_sec = 5\nretries = 0\nmetrics_address = \"{}\"\n",
                hosts.display(),
                metrics.display()
            ),
        )
        .unwrap();
        Snapshotter {
            bin: bin.to_path_buf(),
            child: None,
            root: work.join("snapshotter"),
            socket: work.join("snapshotter.sock"),
            config,
            log: work.join("snapshotter.log"),
            metrics,
        }
    }

    fn start(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut child = Command::new(&self.bin)
            .arg("--address")
            .arg(&self.socket)
            .arg("--root")
            .arg(&self.root)
            .arg("--config")
            .arg(&self.config)
            .args(["--log-level", "debug"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        wait_for_socket(&self.socket, &mut child, &self.log, "estargz-snapshotter");
        self.child = Some(child);
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, "estargz-snapshotter", &self.log);
        }
        let _ = fs::remove_file(&self.socket);
    }

    /// kill -9: no clean-up at all.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// The FUSE manager's pid, while it runs.
    fn manager_pid(&self) -> Option<i32> {
        let pid: i32 = fs::read_to_string(self.root.join("fuse-manager.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        (unsafe { libc::kill(pid, 0) } == 0).then_some(pid)
    }

    /// SIGTERM to the manager (it unmounts every layer), then at most 20 s.
    fn stop_manager(&self) {
        let Some(pid) = self.manager_pid() else {
            return;
        };
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while unsafe { libc::kill(pid, 0) } == 0 {
            assert!(
                Instant::now() < deadline,
                "the FUSE manager did not exit:\n{}",
                self.manager_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn manager_log(&self) -> String {
        fs::read_to_string(self.root.join("fuse-manager.log")).unwrap_or_default()
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default() + &self.manager_log()
    }

    fn fuse_mounts(&self) -> Vec<PathBuf> {
        mounts_under(&self.root)
            .into_iter()
            .filter(|(_, t)| t.starts_with("fuse"))
            .map(|(m, _)| m)
            .collect()
    }
}

impl Drop for Snapshotter {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(pid) = self.manager_pid() {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        for (m, _) in mounts_under(&self.root).into_iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
    }
}

struct Containerd {
    child: Option<Child>,
    socket: PathBuf,
    work: PathBuf,
    log: PathBuf,
}

/// The containerd config lines that turn its CRI plugin off (the ctr test
/// needs none of it).
const NO_CRI: &str = "disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n";

impl Containerd {
    /// A containerd with its own root, state and socket under `work`, our
    /// snapshotter as a proxy plugin, and `plugins` (top-level TOML lines:
    /// NO_CRI, or the CRI plugin's section).
    fn start(work: &Path, snapshotter_socket: &Path, plugins: &str) -> Containerd {
        let dir = work.join("containerd");
        fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("containerd.sock");
        let config = dir.join("config.toml");
        fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n{plugins}\
                 [grpc]\n  address = \"{sock}\"\n\
                 [proxy_plugins]\n  [proxy_plugins.{SNAPSHOTTER}]\n    type = \"snapshot\"\n    address = \"{snap}\"\n",
                root = dir.join("root").display(),
                state = dir.join("state").display(),
                sock = socket.display(),
                snap = snapshotter_socket.display(),
            ),
        )
        .unwrap();
        let log = dir.join("containerd.log");
        let mut child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        wait_for_socket(&socket, &mut child, &log, "containerd");
        Containerd {
            child: Some(child),
            socket,
            work: dir,
            log,
        }
    }

    /// `ctr-remote --address SOCKET ARGS`, bounded in time; returns
    /// (success, stdout, stderr).
    fn ctr_try(&self, args: &[&str]) -> (bool, String, String) {
        let mut cmd = Command::new("ctr-remote");
        cmd.arg("--address").arg(&self.socket).args(args);
        bounded_output(&cmd)
    }

    fn ctr(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.ctr_try(args);
        assert!(ok, "ctr-remote {args:?} failed:\n{out}\n{err}");
        out
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, "containerd", &self.log);
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.ctr_try(&["tasks", "kill", "-s", "SIGKILL", "long"]);
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for (m, _) in mounts_under(&self.work).into_iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
    }
}

/// A root file system with `cat`, `sleep` and the libraries they need (from ldd),
/// and 6 MiB of noise so laziness shows.
fn make_base(root: &Path) {
    copy_with_libraries(root, &["/usr/bin/cat", "/usr/bin/sleep"]);
    fs::create_dir_all(root.join("opt")).unwrap();
    fs::write(root.join("opt/big.bin"), noise(6 << 20, 11)).unwrap();
    fs::write(root.join("opt/base.txt"), "from the base layer\n").unwrap();
}

fn make_app(root: &Path) {
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(root.join("etc/greeting"), "hello from a lazy layer\n").unwrap();
}

fn gzip_file(tar: &Path) -> Vec<u8> {
    let out = Command::new("gzip").arg("-c").arg(tar).output().unwrap();
    assert!(out.status.success());
    out.stdout
}

/// An OCI layout tagged v1 with the two layers as plain gzip.
fn make_layout(work: &Path) -> PathBuf {
    let mut layers = Vec::new();
    for (name, fill) in [("base", make_base as fn(&Path)), ("app", make_app)] {
        let tree = work.join(name);
        fs::create_dir_all(&tree).unwrap();
        fill(&tree);
        let tar = work.join(format!("{name}.tar"));
        run(Command::new("tar")
            .args(["--numeric-owner", "--owner=0", "--group=0", "-C"])
            .arg(&tree)
            .arg("-cf")
            .arg(&tar)
            .arg("."));
        layers.push((gzip_file(&tar), fs::read(&tar).unwrap()));
    }
    let dir = work.join("layout");
    let layout = OciLayout::create(&dir).unwrap();
    let diff_ids: Vec<String> = layers.iter().map(|(_, t)| sha256_digest(t)).collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        // The command is the CRI test's pod sandbox (its "pause").
        "config": {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/usr/bin/sleep", "infinity"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    layout.write_blob(&config).unwrap();
    for (gz, _) in &layers {
        layout.write_blob(gz).unwrap();
    }
    let manifest = Manifest {
        schema_version: 2,
        media_type: OCI_MANIFEST.into(),
        config: descriptor(OCI_CONFIG, &config),
        layers: layers
            .iter()
            .map(|(gz, _)| descriptor(OCI_LAYER_GZIP, gz))
            .collect(),
        annotations: Default::default(),
    };
    let body = serde_json::to_vec(&manifest).unwrap();
    layout.write_blob(&body).unwrap();
    layout.tag("v1", &descriptor(OCI_MANIFEST, &body)).unwrap();
    dir
}

/// Runs the image's `cat` over the files in a container; returns stdout.
fn cat_in_container(ctrd: &Containerd, image: &str, id: &str, files: &[&str]) -> Vec<u8> {
    let mut args = vec![
        "run",
        "--rm",
        "--snapshotter",
        SNAPSHOTTER,
        image,
        id,
        "/usr/bin/cat",
    ];
    args.extend_from_slice(files);
    let out = Command::new("timeout")
        .args(["--kill-after=10", "120", "ctr-remote", "--address"])
        .arg(&ctrd.socket)
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ctr run {image} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The committed snapshots the snapshotter itself holds (asked on its own
/// socket): (key, labels).
fn snapshotter_snapshots(snap: &Snapshotter) -> Vec<(String, serde_json::Value)> {
    let ctr = |args: &[&str]| {
        run(Command::new("ctr-remote")
            .arg("--address")
            .arg(&snap.socket)
            .args(["snapshots", "--snapshotter", SNAPSHOTTER])
            .args(args))
    };
    ctr(&["ls"])
        .lines()
        .skip(1)
        .filter(|l| l.split_whitespace().last() == Some("Committed"))
        .map(|l| {
            let key = l.split_whitespace().next().unwrap().to_string();
            let info: serde_json::Value = serde_json::from_str(&ctr(&["info", &key])).unwrap();
            (key, info["Labels"].clone())
        })
        .collect()
}

#[test]
#[ignore = "needs the snapshotter binary: run by scripts/containerd-test.sh"]
fn containerd_pulls_lazily_runs_restarts_and_falls_back() {
    let Some(bin) = prerequisites() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let layout = make_layout(work);
    let base_noise = noise(6 << 20, 11);

    let reg = TestRegistry::start(None);
    let proxy = FaultProxy::start(reg.addr(), None).unwrap();
    let host = proxy.addr().to_string();
    let esgz = format!("{host}/test/esgz:v1");
    let plain = format!("{host}/test/plain:v1");
    run(Command::new(estargz_bin())
        .args(["convert-image", "-q", "--plain-http"])
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(&esgz));
    run(Command::new("skopeo")
        .args(["copy", "-q", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(format!("docker://{plain}")));

    let mut snap = Snapshotter::new(&bin, work, &host);
    snap.start();
    let mut ctrd = Containerd::start(work, &snap.socket, NO_CRI);

    // Lazy pull: each layer a FUSE mount, a small part of the blobs fetched.
    let before = proxy.stats().bytes_down.load(Ordering::SeqCst);
    ctrd.ctr(&[
        "images",
        "rpull",
        "--plain-http",
        "--snapshotter",
        SNAPSHOTTER,
        &esgz,
    ]);
    let pulled = proxy.stats().bytes_down.load(Ordering::SeqCst) - before;
    eprintln!("rpull of the eStargz image downloaded {pulled} bytes");
    assert!(
        pulled < (6 << 20) / 4,
        "rpull downloaded {pulled} bytes; the base layer holds 6 MiB of noise\n{}",
        snap.log()
    );
    assert_eq!(
        snap.fuse_mounts().len(),
        2,
        "one FUSE mount per layer:\n{}",
        snap.log()
    );
    let remote = snapshotter_snapshots(&snap);
    assert_eq!(remote.len(), 2, "{remote:?}");
    for (key, labels) in &remote {
        assert!(
            labels.get(REMOTE_LABEL).is_some(),
            "{key} lacks the remote label: {labels}"
        );
        assert!(
            labels
                .get("containerd.io/snapshot/stargz/toc.digest")
                .is_some(),
            "{key}: {labels}"
        );
    }

    // Run: files of both layers, byte-exact through overlayfs over FUSE.
    // The FUSE manager's metrics count what the container's lazy reads
    // fetched: the requests and body bytes the proxy saw (nothing else
    // talks to the registry meanwhile; the prefetch of the pull is let
    // finish first).
    let counts = |m: &std::collections::HashMap<String, f64>| {
        let host = format!("{{host=\"{host}\"}}");
        // A sample shows up once counted (no FUSE read before the run).
        let get = |k: &str| m.get(k).copied().unwrap_or(0.0) as u64;
        (
            get(&format!("estargz_registry_requests_total{host}")),
            get(&format!("estargz_registry_response_bytes_total{host}")),
            get("estargz_fuse_requests_total{op=\"read\"}"),
        )
    };
    let proxied = || {
        (
            proxy.stats().requests.load(Ordering::SeqCst),
            proxy.stats().body_bytes_down.load(Ordering::SeqCst),
        )
    };
    let still = || {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut last = (counts(&scrape(&snap.metrics)), proxied());
        loop {
            std::thread::sleep(Duration::from_millis(300));
            let now = (counts(&scrape(&snap.metrics)), proxied());
            if now == last || Instant::now() > deadline {
                return now;
            }
            last = now;
        }
    };
    let ((req0, bytes0, reads0), (preq0, pbytes0)) = still();
    let out = cat_in_container(
        &ctrd,
        &esgz,
        "run1",
        &["/etc/greeting", "/opt/base.txt", "/opt/big.bin"],
    );
    let mut want = b"hello from a lazy layer\nfrom the base layer\n".to_vec();
    want.extend_from_slice(&base_noise);
    assert!(
        out == want,
        "container output differs ({} bytes, want {})",
        out.len(),
        want.len()
    );
    let ((req1, bytes1, reads1), (preq1, pbytes1)) = still();
    let ours = (req1 - req0, bytes1 - bytes0);
    let proxy_saw = (preq1 - preq0, pbytes1 - pbytes0);
    eprintln!(
        "FUSE manager metrics for the run: {} requests, {} bytes, {} FUSE reads (the proxy: {proxy_saw:?})",
        ours.0,
        ours.1,
        reads1 - reads0
    );
    assert_eq!(ours, proxy_saw, "{}", snap.log());
    assert!(
        ours.1 >= 6 << 20 && reads1 > reads0,
        "the 6 MiB of noise were read lazily: {ours:?}, {} FUSE reads",
        reads1 - reads0
    );

    // kill -9 of the snapshotter while a container runs: its reads go on
    // (the FUSE manager serves the layers), and the restarted snapshotter
    // takes the mounts back.
    ctrd.ctr(&[
        "run",
        "-d",
        "--snapshotter",
        SNAPSHOTTER,
        &esgz,
        "long",
        "/usr/bin/sleep",
        "600",
    ]);
    let exec = |id: &str| {
        ctrd.ctr(&[
            "tasks",
            "exec",
            "--exec-id",
            id,
            "long",
            "/usr/bin/cat",
            "/etc/greeting",
            "/opt/base.txt",
        ])
    };
    assert_eq!(exec("e1"), "hello from a lazy layer\nfrom the base layer\n");
    snap.kill();
    assert_eq!(
        snap.fuse_mounts().len(),
        2,
        "the layers outlive the snapshotter"
    );
    assert_eq!(exec("e2"), "hello from a lazy layer\nfrom the base layer\n");
    snap.start();
    // The counters and their endpoint are the manager's: they survive.
    let (req2, _, _) = counts(&scrape(&snap.metrics));
    assert!(
        req2 >= req1,
        "metrics went back from {req1} to {req2} requests"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while snap.log().matches("still mounted, taken back").count() < 2 {
        assert!(
            Instant::now() < deadline,
            "mounts not taken back:\n{}",
            snap.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(snap.fuse_mounts().len(), 2);
    assert_eq!(exec("e3"), "hello from a lazy layer\nfrom the base layer\n");
    ctrd.ctr(&["tasks", "kill", "-s", "SIGKILL", "long"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ctrd.ctr_try(&["tasks", "delete", "long"]).0 {
        assert!(
            Instant::now() < deadline,
            "the long container does not stop"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    ctrd.ctr(&["containers", "delete", "long"]);

    // Restart with the registry down (snapshotter and manager stopped, the
    // layers unmounted): start-up succeeds; the layers come back once the
    // registry answers again.
    snap.stop();
    snap.stop_manager();
    assert!(
        snap.fuse_mounts().is_empty(),
        "the manager's SIGTERM unmounts every layer"
    );
    proxy.set(|f| f.reset_next = u32::MAX);
    snap.start();
    std::thread::sleep(Duration::from_secs(1));
    assert!(snap.fuse_mounts().is_empty());
    assert!(snap.log().contains("not mounted yet"), "{}", snap.log());
    proxy.clear();
    let deadline = Instant::now() + Duration::from_secs(30);
    while snap.fuse_mounts().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "layers not mounted again:\n{}",
            snap.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = cat_in_container(&ctrd, &esgz, "run2", &["/etc/greeting", "/opt/base.txt"]);
    assert_eq!(
        String::from_utf8_lossy(&out),
        "hello from a lazy layer\nfrom the base layer\n"
    );

    // A plain gzip image: not mounted, pulled and unpacked by containerd.
    ctrd.ctr(&[
        "images",
        "rpull",
        "--plain-http",
        "--snapshotter",
        SNAPSHOTTER,
        &plain,
    ]);
    assert!(
        snap.log()
            .contains("not mounted lazily, containerd pulls it"),
        "no fallback line:\n{}",
        snap.log()
    );
    assert_eq!(
        snap.fuse_mounts().len(),
        2,
        "the plain image added no FUSE mount"
    );
    let out = cat_in_container(&ctrd, &plain, "run3", &["/etc/greeting", "/opt/base.txt"]);
    assert_eq!(
        String::from_utf8_lossy(&out),
        "hello from a lazy layer\nfrom the base layer\n"
    );

    // Removal: every snapshot and mount goes.
    ctrd.ctr(&["images", "rm", "--sync", &esgz, &plain]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = snapshotter_snapshots(&snap);
        if left.is_empty() && snap.fuse_mounts().is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left after removing the images: {left:?}, mounts {:?}\n{}",
            snap.fuse_mounts(),
            snap.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    ctrd.stop();
    snap.stop();
    snap.stop_manager();
    assert!(snap.manager_pid().is_none());
    let left = mounts_under(work);
    assert!(left.is_empty(), "mounts left: {left:?}");
}

/// `crictl` (cri-tools, built from tests/crictl by
/// scripts/containerd-test.sh) against one containerd's CRI socket.
struct Crictl {
    bin: PathBuf,
    config: PathBuf,
}

impl Crictl {
    /// Its own config file (the host's /etc/crictl.yaml must not point it
    /// elsewhere) naming containerd's socket for both services.
    fn new(bin: PathBuf, socket: &Path, work: &Path) -> Crictl {
        let config = work.join("crictl.yaml");
        let endpoint = format!("unix://{}", socket.display());
        fs::write(
            &config,
            format!("runtime-endpoint: {endpoint}\nimage-endpoint: {endpoint}\ntimeout: 60\n"),
        )
        .unwrap();
        Crictl { bin, config }
    }

    fn try_run(&self, args: &[&str]) -> (bool, String, String) {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--config").arg(&self.config).args(args);
        bounded_output(&cmd)
    }

    fn run(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.try_run(args);
        assert!(ok, "crictl {args:?} failed:\n{out}\n{err}");
        out
    }
}

impl Drop for Crictl {
    /// Stops and removes every pod (their shims would outlive containerd).
    fn drop(&mut self) {
        let _ = self.try_run(&["rmp", "--all", "--force"]);
    }
}

/// The CRI path: containerd's CRI plugin with our snapshotter and
/// `disable_snapshot_annotations = false` pulls an eStargz image for
/// `crictl pull` lazily (the snapshotter gets only the CRI labels, no
/// `ctr-remote` ones), then runs a host-network pod (no CNI: the network
/// namespace is the node's) whose sandbox and container both run on the
/// FUSE-mounted layers; removing them and the image unmounts everything.
#[test]
#[ignore = "needs the snapshotter and crictl binaries: run by scripts/containerd-test.sh"]
fn cri_pulls_lazily_and_runs_a_pod() {
    let Some(bin) = prerequisites() else {
        return;
    };
    let crictl_bin = PathBuf::from(
        std::env::var_os("ESTARGZ_CRICTL")
            .expect("ESTARGZ_CRICTL: run by scripts/containerd-test.sh"),
    );
    assert!(
        crictl_bin.is_file(),
        "{} is not a file",
        crictl_bin.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let layout = make_layout(work);

    let reg = TestRegistry::start(None);
    let proxy = FaultProxy::start(reg.addr(), None).unwrap();
    let host = proxy.addr().to_string();
    let esgz = format!("{host}/test/esgz:v1");
    run(Command::new(estargz_bin())
        .args(["convert-image", "-q", "--plain-http"])
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(&esgz));

    let mut snap = Snapshotter::new(&bin, work, &host);
    snap.start();
    // The sandbox ("pause") image is the test image itself (its Cmd
    // sleeps); the registry is plain HTTP, named as a mirror of itself.
    // restrict_oom_score_adj: CRI gives sandboxes -998, which needs
    // CAP_SYS_RESOURCE (not granted in every CI container); it keeps the
    // score at containerd's own.
    let cri = format!(
        "[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"{esgz}\"\n  restrict_oom_score_adj = true\n\
         [plugins.\"io.containerd.grpc.v1.cri\".containerd]\n  snapshotter = \"{SNAPSHOTTER}\"\n\
           disable_snapshot_annotations = false\n\
         [plugins.\"io.containerd.grpc.v1.cri\".cni]\n  bin_dir = \"{cni}\"\n  conf_dir = \"{cni}\"\n\
         [plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"{host}\"]\n  endpoint = [\"http://{host}\"]\n",
        cni = work.join("cni").display(),
    );
    let mut ctrd = Containerd::start(work, &snap.socket, &cri);
    let crictl = Crictl::new(crictl_bin, &ctrd.socket, work);

    // Lazy pull through CRI: one FUSE mount per layer, each committed
    // snapshot with the remote label and the CRI labels it was mounted from.
    let before = proxy.stats().bytes_down.load(Ordering::SeqCst);
    crictl.run(&["pull", &esgz]);
    let pulled = proxy.stats().bytes_down.load(Ordering::SeqCst) - before;
    eprintln!("crictl pull of the eStargz image downloaded {pulled} bytes");
    assert!(
        pulled < (6 << 20) / 4,
        "crictl pull downloaded {pulled} bytes; the base layer holds 6 MiB of noise\n{}",
        snap.log()
    );
    assert_eq!(
        snap.fuse_mounts().len(),
        2,
        "one FUSE mount per layer:\n{}",
        snap.log()
    );
    let remote = snapshotter_snapshots(&snap);
    assert_eq!(remote.len(), 2, "{remote:?}");
    for (key, labels) in &remote {
        for label in [
            REMOTE_LABEL,
            "containerd.io/snapshot/cri.image-ref",
            "containerd.io/snapshot/cri.layer-digest",
        ] {
            assert!(labels.get(label).is_some(), "{key} lacks {label}: {labels}");
        }
        assert!(
            labels
                .get("containerd.io/snapshot/remote/stargz.reference")
                .is_none(),
            "{key}: rpull labels on a CRI pull: {labels}"
        );
    }

    // A host-network pod (NODE = 2) and a container printing a file of
    // each layer.
    let logs = work.join("pod-logs");
    let pod_config = work.join("pod.json");
    fs::write(
        &pod_config,
        serde_json::to_vec(&serde_json::json!({
            "metadata": {"name": "lazy", "namespace": "default", "uid": "lazy-pod", "attempt": 0},
            "log_directory": logs,
            "linux": {"security_context": {"namespace_options": {"network": 2}}},
        }))
        .unwrap(),
    )
    .unwrap();
    let container_config = work.join("container.json");
    fs::write(
        &container_config,
        serde_json::to_vec(&serde_json::json!({
            "metadata": {"name": "cat"},
            "image": {"image": esgz},
            "command": ["/usr/bin/cat", "/etc/greeting", "/opt/base.txt"],
            "log_path": "cat.log",
            "linux": {},
        }))
        .unwrap(),
    )
    .unwrap();
    let pod = crictl
        .run(&["runp", pod_config.to_str().unwrap()])
        .trim()
        .to_string();
    let id = crictl
        .run(&[
            "create",
            &pod,
            container_config.to_str().unwrap(),
            pod_config.to_str().unwrap(),
        ])
        .trim()
        .to_string();
    crictl.run(&["start", &id]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ps: serde_json::Value =
            serde_json::from_str(&crictl.run(&["ps", "--all", "--id", &id, "--output", "json"]))
                .unwrap();
        if ps["containers"][0]["state"] == "CONTAINER_EXITED" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the container did not exit: {ps}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        crictl.run(&["logs", &id]),
        "hello from a lazy layer\nfrom the base layer\n"
    );
    assert_eq!(
        snap.fuse_mounts().len(),
        2,
        "the pod reused the pulled layers"
    );

    // Removal: pod, container and image go, and with them every snapshot
    // and mount.
    crictl.run(&["rmp", "--force", &pod]);
    crictl.run(&["rmi", &esgz]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = snapshotter_snapshots(&snap);
        if left.is_empty() && snap.fuse_mounts().is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left after removing the pod and image: {left:?}, mounts {:?}\n{}",
            snap.fuse_mounts(),
            snap.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(crictl);
    ctrd.stop();
    snap.stop();
    snap.stop_manager();
    assert!(snap.manager_pid().is_none());
    let left = mounts_under(work);
    assert!(left.is_empty(), "mounts left: {left:?}");
}
