//! The file system logic, checked without a mount over blobs built in memory.

use std::io::Cursor;
use std::sync::Arc;

use estargz_core::testing::{entry_headers, HeaderSpec};
use estargz_core::{build, BuildInput, BuildOptions, OpenOptions, Reader};

use super::*;
use crate::rofs::{Errno, ErrnoOf, StatFs};

const MTIME: i64 = 1_600_000_000;

fn tar(entries: &[(HeaderSpec, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (spec, data) in entries {
        out.extend_from_slice(&entry_headers(spec));
        out.extend_from_slice(data);
        out.resize(out.len().next_multiple_of(512), 0);
    }
    out.extend_from_slice(&[0; 1024]);
    out
}

fn spec(name: &str, typeflag: u8, mode: u32) -> HeaderSpec {
    HeaderSpec {
        name: name.into(),
        typeflag,
        mode,
        mtime: MTIME,
        ..Default::default()
    }
}

fn file(name: &str, data: &[u8]) -> (HeaderSpec, Vec<u8>) {
    let mut s = spec(name, b'0', 0o644);
    s.size = data.len() as u64;
    (s, data.to_vec())
}

fn with(mut e: (HeaderSpec, Vec<u8>), f: impl FnOnce(&mut HeaderSpec)) -> (HeaderSpec, Vec<u8>) {
    f(&mut e.0);
    e
}

fn mount(entries: &[(HeaderSpec, Vec<u8>)], opts: BuildOptions) -> LayerFs {
    let mut blob = Vec::new();
    let result = build(
        BuildInput::Reader(Box::new(Cursor::new(tar(entries)))),
        &mut blob,
        &opts,
    )
    .unwrap();
    let open = OpenOptions::default().expected_toc_digest(Some(result.toc_digest));
    LayerFs::new(Arc::new(Reader::open(Arc::new(blob), &open).unwrap()))
}

/// Non-repeating bytes, so any 64-byte window occurs once.
fn big() -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..300_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn sample() -> LayerFs {
    let entries = vec![
        (spec("etc/", b'5', 0o755), vec![]),
        with(file("etc/passwd", b"root:x:0:0\n"), |s| {
            s.uid = 1000;
            s.gid = 2000;
            s.mode = 0o4755;
            s.xattrs
                .insert("user.note".into(), b"hello\0world".to_vec());
        }),
        with((spec("etc/link", b'1', 0o644), vec![]), |s| {
            s.link_name = "etc/passwd".into()
        }),
        with((spec("etc/sym", b'2', 0o777), vec![]), |s| {
            s.link_name = "../etc/passwd".into()
        }),
        with((spec("dev/null", b'3', 0o666), vec![]), |s| {
            s.dev_major = 1;
            s.dev_minor = 3;
        }),
        with((spec("dev/sda300", b'4', 0o660), vec![]), |s| {
            s.dev_major = 8;
            s.dev_minor = 300;
        }),
        (spec("dev/fifo", b'6', 0o600), vec![]),
        file("big", &big()),
        file("opq/.wh..wh..opq", b""),
        file("opq/kept", b"k"),
        file(".wh.gone", b""),
        file(".wh.shadowed", b""),
        file("shadowed", b"still here"),
    ];
    mount(
        &entries,
        BuildOptions::default()
            .chunk_size(64 << 10)
            .prioritized_files(vec!["etc/passwd".into()]),
    )
}

fn names(fs: &LayerFs, ino: u64) -> Vec<String> {
    fs.readdir(ino)
        .unwrap()
        .iter()
        .map(|e| e.name.clone())
        .collect()
}

#[test]
fn listing_follows_overlay_conventions_and_hides_landmarks() {
    let fs = sample();
    assert_eq!(
        names(&fs, ROOT_INO),
        ["big", "dev", "etc", "gone", "opq", "shadowed"]
    );
    let opq = fs.lookup(ROOT_INO, "opq").unwrap();
    assert_eq!(names(&fs, opq.ino), ["kept"]);
    let gone = fs.lookup(ROOT_INO, "gone").unwrap();
    assert_eq!((gone.kind, gone.rdev, gone.perm), (Kind::CharDevice, 0, 0));
    let listed = fs.readdir(ROOT_INO).unwrap();
    assert_eq!(
        listed.iter().find(|e| e.name == "gone").unwrap().ino,
        gone.ino
    );
    assert_eq!(fs.getattr(gone.ino).unwrap(), gone);
    for hidden in [".wh.gone", ".prefetch.landmark", ".wh..wh..opq"] {
        assert_eq!(
            fs.lookup(ROOT_INO, hidden).errno(),
            Err(Errno(libc::ENOENT))
        );
    }
    assert_eq!(
        fs.lookup(opq.ino, ".wh..wh..opq").errno(),
        Err(Errno(libc::ENOENT))
    );
    let shadowed = fs.lookup(ROOT_INO, "shadowed").unwrap();
    assert_eq!(shadowed.kind, Kind::RegularFile);
    assert_eq!(fs.read(shadowed.ino, 0, 100).unwrap(), b"still here");
}

#[test]
fn opaque_directories_carry_both_overlay_xattrs() {
    let fs = sample();
    let opq = fs.lookup(ROOT_INO, "opq").unwrap();
    assert_eq!(
        fs.listxattr(opq.ino).unwrap(),
        b"trusted.overlay.opaque\0user.overlay.opaque\0"
    );
    assert_eq!(
        fs.getxattr(opq.ino, "trusted.overlay.opaque").unwrap(),
        b"y"
    );
    let etc = fs.lookup(ROOT_INO, "etc").unwrap();
    assert_eq!(fs.listxattr(etc.ino).unwrap(), b"");
    assert_eq!(
        fs.getxattr(etc.ino, "trusted.overlay.opaque").errno(),
        Err(Errno(libc::ENODATA))
    );
}

#[test]
fn attributes_come_from_the_toc() {
    let fs = sample();
    let etc = fs.lookup(ROOT_INO, "etc").unwrap();
    let passwd = fs.lookup(etc.ino, "passwd").unwrap();
    assert_eq!(passwd.kind, Kind::RegularFile);
    assert_eq!((passwd.perm, passwd.uid, passwd.gid), (0o4755, 1000, 2000));
    assert_eq!((passwd.size, passwd.blocks, passwd.mtime), (11, 8, MTIME));
    assert_eq!(
        fs.getxattr(passwd.ino, "user.note").unwrap(),
        b"hello\0world"
    );
    // A hardlink is the same inode, with the link count of both names.
    let link = fs.lookup(etc.ino, "link").unwrap();
    assert_eq!(link, passwd);
    assert_eq!(link.nlink, 2);
    let sym = fs.lookup(etc.ino, "sym").unwrap();
    assert_eq!((sym.kind, sym.size), (Kind::Symlink, 13));
    assert_eq!(fs.readlink(sym.ino).unwrap(), b"../etc/passwd");
    assert_eq!(fs.readlink(passwd.ino).errno(), Err(Errno(libc::EINVAL)));

    let dev = fs.lookup(ROOT_INO, "dev").unwrap();
    let null = fs.lookup(dev.ino, "null").unwrap();
    assert_eq!(
        (null.kind, null.rdev, null.perm),
        (Kind::CharDevice, 0x103, 0o666)
    );
    // Minor numbers above 255 use the high bits, as stat(2) encodes them.
    let sda = fs.lookup(dev.ino, "sda300").unwrap();
    assert_eq!(sda.kind, Kind::BlockDevice);
    assert_eq!(sda.rdev, (300 & 0xff) | (8 << 8) | ((300 & !0xff) << 12));
    assert_eq!(fs.lookup(dev.ino, "fifo").unwrap().kind, Kind::NamedPipe);
    // Directories: 2 + subdirectories.
    let root = fs.getattr(ROOT_INO).unwrap();
    assert_eq!((root.kind, root.nlink), (Kind::Directory, 5));
    assert_eq!(fs.parent(etc.ino).unwrap(), ROOT_INO);
    assert_eq!(fs.parent(ROOT_INO).unwrap(), ROOT_INO);
}

#[test]
fn the_root_takes_the_layers_own_dot_slash_entry() {
    // As `tar -C dir -cf - .` writes it: the root first, mode 0555 (a
    // debootstrap root), owned by someone, with a time of its own; a
    // second `./` later (as `tar --append` leaves) wins, as with `tar -x`.
    let root = |mode, uid, mtime| {
        with((spec("./", b'5', mode), vec![]), |s| {
            s.uid = uid;
            s.gid = uid + 1;
            s.mtime = mtime;
        })
    };
    let fs = mount(
        &[
            root(0o700, 7, 1),
            (spec("./etc/", b'5', 0o755), vec![]),
            file("./etc/hostname", b"box\n"),
            root(0o555, 1234, MTIME - 99),
        ],
        BuildOptions::default(),
    );
    let attr = fs.getattr(ROOT_INO).unwrap();
    assert_eq!(attr.kind, Kind::Directory);
    assert_eq!(
        (attr.perm, attr.uid, attr.gid, attr.mtime),
        (0o555, 1234, 1235, MTIME - 99)
    );
    assert_eq!(names(&fs, ROOT_INO), ["etc"]);

    // Without a `./` entry the root is a plain 0755 root-owned directory.
    let fs = mount(&[file("a", b"x")], BuildOptions::default());
    let attr = fs.getattr(ROOT_INO).unwrap();
    assert_eq!((attr.perm, attr.uid, attr.gid), (0o755, 0, 0));
}

#[test]
fn reads_at_any_offset_return_the_content() {
    let fs = sample();
    let data = big();
    let f = fs.lookup(ROOT_INO, "big").unwrap();
    assert_eq!(f.size, data.len() as u64);
    for (off, len) in [(0, 4096), (65_530, 20), (131_072, 200_000), (299_990, 100)] {
        let got = fs.read(f.ino, off, len).unwrap();
        let end = (off as usize + len as usize).min(data.len());
        assert_eq!(got, &data[off as usize..end], "read at {off}");
    }
    assert_eq!(fs.read(f.ino, 400_000, 10).unwrap(), b"");
    assert_eq!(fs.read(ROOT_INO, 0, 10).errno(), Err(Errno(libc::EISDIR)));
}

#[test]
fn bad_inodes_and_wrong_types_are_errors_not_panics() {
    let fs = sample();
    for ino in [0, 10_000, u64::MAX] {
        assert_eq!(fs.getattr(ino).errno(), Err(Errno(libc::ENOENT)));
        assert_eq!(fs.read(ino, 0, 1).errno(), Err(Errno(libc::ENOENT)));
        assert!(fs.readdir(ino).is_err());
    }
    let big = fs.lookup(ROOT_INO, "big").unwrap();
    assert_eq!(fs.lookup(big.ino, "x").errno(), Err(Errno(libc::ENOTDIR)));
    assert!(fs.readdir(big.ino).is_err());
    assert_eq!(fs.read(big.ino, u64::MAX - 1, 4096).unwrap(), b"");
}

#[test]
fn corrupt_chunks_are_eio_never_wrong_bytes() {
    let entries = vec![file("f", &big())];
    let mut blob = Vec::new();
    let result = build(
        BuildInput::Reader(Box::new(Cursor::new(tar(&entries)))),
        &mut blob,
        &BuildOptions::default()
            .chunk_size(64 << 10)
            .compression_level(0),
    )
    .unwrap();
    // Level 0 stores bytes verbatim: flip one inside the second chunk.
    let data = big();
    let pos = blob
        .windows(64)
        .position(|w| w == &data[70_000..70_064])
        .unwrap();
    blob[pos] ^= 0xff;
    let open = OpenOptions::default().expected_toc_digest(Some(result.toc_digest));
    let fs = LayerFs::new(Arc::new(Reader::open(Arc::new(blob), &open).unwrap()));
    let f = fs.lookup(ROOT_INO, "f").unwrap();
    assert_eq!(fs.read(f.ino, 0, 1000).unwrap(), &data[..1000]);
    assert_eq!(fs.read(f.ino, 69_000, 4096).errno(), Err(Errno(libc::EIO)));
    // The failure is logged as an error naming the file, with its cause.
    let e = fs.read(f.ino, 69_000, 4096).unwrap_err();
    assert_eq!(e.level(), log::Level::Error);
    assert!(e.message().starts_with("read of \"f\" at 69000"), "{e}");
    assert!(std::error::Error::source(&e).is_some(), "{e}");
}

#[test]
fn statfs_reports_a_read_only_layer() {
    let fs = sample();
    assert_eq!(
        fs.statfs(),
        StatFs {
            block_size: 4096,
            name_max: 255
        }
    );
}

fn recorded(fs: &mut LayerFs, limit: usize) -> Arc<crate::record::AccessRecorder> {
    let rec = crate::record::AccessRecorder::new(limit);
    let key = crate::record::LayerKey {
        source: "sample".into(),
        index: Some(0),
        digest: None,
        toc_digest: fs.reader().toc_digest(),
    };
    fs.set_access(Some(rec.layer(key)));
    rec
}

#[test]
fn opens_and_reads_record_regular_files_once_in_first_access_order() {
    let mut fs = sample();
    let rec = recorded(&mut fs, 100);
    let files = || rec.record().layers[0].files.clone();
    // Lookups and stats read nothing: not recorded.
    let etc = fs.lookup(ROOT_INO, "etc").unwrap();
    let big = fs.lookup(ROOT_INO, "big").unwrap();
    let link = fs.lookup(etc.ino, "link").unwrap();
    let sym = fs.lookup(etc.ino, "sym").unwrap();
    fs.getattr(big.ino).unwrap();
    fs.readlink(sym.ino).unwrap();
    fs.opened(etc.ino);
    assert!(files().is_empty());
    // A read without a recorded open counts too; a hardlink counts as the
    // entry holding the data; repeats do not count.
    fs.read(big.ino, 0, 10).unwrap();
    fs.opened(link.ino);
    fs.opened(big.ino);
    let passwd = fs.lookup(etc.ino, "passwd").unwrap();
    fs.read(passwd.ino, 0, 4).unwrap();
    assert_eq!(files(), ["big", "etc/passwd"]);
}

#[test]
fn recording_is_bounded_and_written_atomically() {
    let mut fs = sample();
    let rec = recorded(&mut fs, 1);
    let etc = fs.lookup(ROOT_INO, "etc").unwrap();
    let passwd = fs.lookup(etc.ino, "passwd").unwrap().ino;
    let big = fs.lookup(ROOT_INO, "big").unwrap().ino;
    fs.opened(big);
    fs.opened(passwd);
    fs.opened(passwd);
    let record = rec.record();
    assert_eq!(record.layers[0].files, ["big"]);
    assert_eq!(record.layers[0].dropped, 1, "counted once per file");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rec.json");
    record.write(&path).unwrap();
    let back = crate::record::AccessRecord::read(&path).unwrap();
    assert_eq!(back, record);
    // Nothing but the record is left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("\"tocDigest\""), "{text}");
    std::fs::write(&path, text.replace("\"version\": 1", "\"version\": 7")).unwrap();
    let e = crate::record::AccessRecord::read(&path)
        .unwrap_err()
        .to_string();
    assert!(e.contains("version 7"), "{e}");
    std::fs::write(&path, "[]").unwrap();
    let e = crate::record::AccessRecord::read(&path)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not an access record"), "{e}");
}
