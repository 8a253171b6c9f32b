//! `estargz convert` of real tars (made by GNU tar) followed by
//! `estargz extract` must give the same tree as `tar -x` of the input:
//! contents, modes, owners, mtimes, symlinks, hardlinks, devices, xattrs.

mod util;

use std::fs;
use std::path::Path;
use std::process::Command;

use util::*;

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
        .arg("--external-toc-data")
        .arg(&toc)
        .arg(&blob));
}

#[test]
fn real_system_tree() {
    // A real Debian tree: documentation, binaries, zoneinfo (many links).
    let work = tempfile::tempdir().unwrap();
    let tar = work.path().join("system.tar");
    system_tar(&tar);
    convert_extract_compare(&tar, work.path(), &[]);
}
