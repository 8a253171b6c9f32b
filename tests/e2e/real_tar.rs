//! `estargz convert` of real tars (made by GNU tar) followed by
//! `estargz extract` must give the same tree as `tar -x` of the input:
//! contents, modes, owners, mtimes, symlinks, hardlinks, devices, xattrs.

mod util;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use util::*;

/// A tree exercising every kind of entry and metadata a layer carries.
fn make_tree(root: &Path) {
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

fn convert_extract_compare(input_tar: &Path, work: &Path, extra_convert_args: &[&str]) {
    let estargz = estargz_bin();
    let blob = work.join("layer.esgz");
    run(Command::new(&estargz)
        .arg("convert")
        .args(extra_convert_args)
        .arg(input_tar)
        .arg(&blob));
    run(Command::new(&estargz).arg("verify").arg(&blob));
    let ours = work.join("ours");
    let theirs = work.join("theirs");
    let _ = fs::remove_dir_all(&ours);
    let _ = fs::remove_dir_all(&theirs);
    run(Command::new(&estargz).arg("extract").arg(&blob).arg(&ours));
    fs::create_dir(&theirs).unwrap();
    run(Command::new("tar")
        .args(["--xattrs", "--xattrs-include=user.*", "-xpf"])
        .arg(input_tar)
        .arg("-C")
        .arg(&theirs));
    let want = snapshot(&theirs, is_root());
    let got = snapshot(&ours, is_root());
    assert_same_tree(
        &want,
        &got,
        &format!("{} {extra_convert_args:?}", input_tar.display()),
    );
}

#[test]
fn synthetic_tree_in_every_tar_format() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir(&src).unwrap();
    make_tree(&src);
    for format in ["gnu", "posix", "ustar"] {
        let tar = work.path().join(format!("{format}.tar"));
        // GNU tar stores xattrs only in POSIX (PAX) archives.
        let xattr_args: &[&str] = if format == "posix" {
            &["--xattrs", "--xattrs-include=user.*"]
        } else {
            &[]
        };
        let out = Command::new("tar")
            .args(xattr_args)
            .args(["--sort=name", "--format", format, "-cf"])
            .arg(&tar)
            .arg("-C")
            .arg(&src)
            .arg(".")
            .output()
            .unwrap();
        if !out.status.success() {
            // ustar cannot hold the 260-byte name: that is tar's limit, not ours.
            assert_eq!(format, "ustar", "{}", String::from_utf8_lossy(&out.stderr));
            continue;
        }
        convert_extract_compare(&tar, work.path(), &[]);
        convert_extract_compare(
            &tar,
            work.path(),
            &["--chunk-size", "100000", "--min-chunk-size", "30000"],
        );
    }
}

#[test]
fn gzip_input_and_lossless_mode() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir(&src).unwrap();
    make_tree(&src);
    let tar = work.path().join("in.tar");
    run(Command::new("tar")
        .args(["--xattrs", "--xattrs-include=user.*", "-cf"])
        .arg(&tar)
        .arg("-C")
        .arg(&src)
        .arg("."));
    let gz = work.path().join("in.tar.gz");
    run(Command::new("sh")
        .arg("-c")
        .arg(format!("gzip -c {} > {}", tar.display(), gz.display())));
    convert_extract_compare(&gz, work.path(), &[]);
    // keep-diff-id: gunzip of the blob is the original tar, byte for byte.
    let toc = work.path().join("toc.gz");
    let blob = work.path().join("lossless.esgz");
    run(Command::new(estargz_bin())
        .args(["convert", "--keep-diff-id", "--external-toc"])
        .arg(&toc)
        .arg(&gz)
        .arg(&blob));
    let roundtrip = work.path().join("roundtrip.tar");
    run(Command::new("sh").arg("-c").arg(format!(
        "gzip -dc {} > {}",
        blob.display(),
        roundtrip.display()
    )));
    assert!(
        fs::read(&roundtrip).unwrap() == fs::read(&tar).unwrap(),
        "lossless stream differs"
    );
    run(Command::new(estargz_bin())
        .arg("verify")
        .arg("--external-toc")
        .arg(&toc)
        .arg(&blob));
}

#[test]
fn real_system_tree() {
    // A real Debian tree: documentation, binaries, zoneinfo (many links).
    let work = tempfile::tempdir().unwrap();
    let tar = work.path().join("system.tar");
    let candidates = [
        "usr/share/doc/dpkg",
        "usr/share/doc/tar",
        "usr/bin/tar",
        "usr/share/zoneinfo/Europe",
        "usr/lib/os-release",
        "usr/share/perl5/Getopt",
    ];
    let present: Vec<&str> = candidates
        .iter()
        .copied()
        .filter(|p| Path::new("/").join(p).exists())
        .collect();
    assert!(!present.is_empty(), "no system files to archive");
    run(Command::new("tar")
        .args(["--sort=name", "-cf"])
        .arg(&tar)
        .arg("-C")
        .arg("/")
        .args(&present));
    convert_extract_compare(&tar, work.path(), &[]);
}
