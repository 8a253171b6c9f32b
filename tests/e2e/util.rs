//! Shared helpers: locating binaries, running commands, snapshotting trees.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// The `estargz` binary of the same profile (target/<profile>/estargz),
/// rebuilt if stale: cargo only builds it for tests of its own package.
pub fn estargz_bin() -> PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let bin = profile_dir.join("estargz");
    BUILT.call_once(|| {
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
            .args(["build", "-p", "estargz-cli"])
            .args(if profile_dir.ends_with("release") {
                &["--release"][..]
            } else {
                &[][..]
            })
            .status()
            .unwrap();
        assert!(status.success(), "building estargz failed");
    });
    bin
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
