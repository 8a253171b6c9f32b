//! The seed corpus: small tars built with `tarwrite::entry_headers`, and
//! valid blobs built from them with `estargz_core::build` in several modes,
//! so every target starts from inputs that reach deep into the code.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::Path;

use estargz_core::testing::{entry_headers, HeaderSpec};
use estargz_core::{build, BuildInput, BuildOptions, Footer};

/// Trailer marking an `open_read` input that carries an external TOC:
/// `blob ++ toc_member ++ u32le(toc_member.len()) ++ b"XTOC"`.
pub const EXTERNAL_TOC_TRAILER: &[u8; 4] = b"XTOC";

/// Splits an `open_read` input into the blob and an optional external TOC.
pub fn split_external(data: &[u8]) -> (&[u8], Option<&[u8]>) {
    if data.len() >= 8 && data.ends_with(EXTERNAL_TOC_TRAILER) {
        let n = u32::from_le_bytes(data[data.len() - 8..data.len() - 4].try_into().unwrap());
        let rest = data.len() - 8;
        if (n as usize) <= rest {
            let split = rest - n as usize;
            return (&data[..split], Some(&data[split..rest]));
        }
    }
    (data, None)
}

/// Inverse of [`split_external`].
pub fn frame_external(blob: &[u8], toc_member: &[u8]) -> Vec<u8> {
    let mut out = blob.to_vec();
    out.extend_from_slice(toc_member);
    out.extend_from_slice(&(toc_member.len() as u32).to_le_bytes());
    out.extend_from_slice(EXTERNAL_TOC_TRAILER);
    out
}

/// A tiny tar writer on top of `entry_headers` (as in the core's tests).
#[derive(Default)]
struct TarBuilder {
    bytes: Vec<u8>,
}

impl TarBuilder {
    fn push(&mut self, spec: HeaderSpec, data: &[u8]) -> &mut Self {
        self.bytes.extend_from_slice(&entry_headers(&spec));
        self.bytes.extend_from_slice(data);
        self.bytes.resize(self.bytes.len().next_multiple_of(512), 0);
        self
    }
    fn spec(name: &str, typeflag: u8, mode: u32) -> HeaderSpec {
        HeaderSpec {
            name: name.into(),
            typeflag,
            mode,
            mtime: 1_577_934_246,
            uname: "user".into(),
            gname: "group".into(),
            uid: 1000,
            gid: 1000,
            ..Default::default()
        }
    }
    fn dir(&mut self, name: &str) -> &mut Self {
        self.push(Self::spec(name, b'5', 0o755), &[])
    }
    fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.file_with(name, data, |_| {})
    }
    fn file_with(&mut self, name: &str, data: &[u8], f: impl FnOnce(&mut HeaderSpec)) -> &mut Self {
        let mut s = Self::spec(name, b'0', 0o644);
        s.size = data.len() as u64;
        f(&mut s);
        self.push(s, data)
    }
    fn link(&mut self, name: &str, typeflag: u8, target: &str) -> &mut Self {
        let mut s = Self::spec(name, typeflag, 0o777);
        s.link_name = target.into();
        self.push(s, &[])
    }
    fn device(&mut self, name: &str, typeflag: u8, major: u64, minor: u64) -> &mut Self {
        let mut s = Self::spec(name, typeflag, 0o600);
        s.dev_major = major;
        s.dev_minor = minor;
        self.push(s, &[])
    }
    fn finish(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.bytes);
        out.extend_from_slice(&[0u8; 1024]);
        out
    }
}

/// Deterministic filler, text-like so it compresses.
fn text(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b"abcdefgh ijklmnop\n"[(x % 18) as usize]
        })
        .collect()
}

/// Small tars covering every entry type and the PAX / long-name paths.
pub fn tars() -> Vec<(&'static str, Vec<u8>)> {
    let mut out = Vec::new();
    out.push((
        "all-types",
        TarBuilder::default()
            .dir("d/")
            .file("d/a", &text(3000, 7))
            .file("b", b"hello world")
            .link("s", b'2', "d/a")
            .link("h", b'1', "b")
            .device("dev/null", b'3', 1, 3)
            .device("dev/sda", b'4', 8, 0)
            .push(TarBuilder::spec("p", b'6', 0o600), &[])
            .finish(),
    ));
    out.push((
        "tiny",
        TarBuilder::default()
            .file("empty", b"")
            .file("one", b"x")
            .finish(),
    ));
    let long = format!("{}/{}", "d".repeat(120), "f".repeat(110));
    out.push((
        "pax",
        TarBuilder::default()
            .file_with(&long, b"long name", |s| {
                s.uid = 1 << 30;
                s.xattrs = BTreeMap::from([
                    ("user.k".to_string(), vec![0xff, 0, 1]),
                    ("security.capability".to_string(), vec![1, 2]),
                ]);
            })
            .file_with("caf\u{e9}/\u{1f600}", b"utf8", |s| s.mtime = -1)
            .link("l", b'2', &"t".repeat(150))
            .finish(),
    ));
    out.push((
        "dups-and-dots",
        TarBuilder::default()
            .dir("./")
            .dir("./x/")
            .file("./x/f", b"first")
            .file("x/f", b"second copy wins")
            .file("./x/../y", &text(700, 3))
            .link("./x/hl", b'1', "./y")
            .finish(),
    ));
    out.push((
        "landmark-and-toc",
        TarBuilder::default()
            .file(".prefetch.landmark", &[0x0f])
            .file("stargz.index.json", b"{}")
            .file("z", &text(1500, 11))
            .finish(),
    ));
    out
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

fn build_blob(tar: &[u8], opts: &BuildOptions) -> (Vec<u8>, estargz_core::BuildResult) {
    let mut out = Vec::new();
    let result = build(
        BuildInput::Reader(Box::new(io::Cursor::new(tar.to_vec()))),
        &mut out,
        opts,
    )
    .expect("seed build succeeds");
    (out, result)
}

/// Valid blobs (`open_read` inputs, external TOCs framed) in several modes.
pub fn blobs() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (name, tar) in tars() {
        let normal = BuildOptions::default()
            .chunk_size(1024)
            .compression_level(Some(6))
            .threads(1);
        let (blob, result) = build_blob(&tar, &normal);
        // The same TOC and data as a framed-TOC input (see `assemble_framed`).
        let reader = estargz_core::Reader::open(crate::source(&blob), &Default::default())
            .expect("seed opens");
        let toc_offset = result.toc_offset.unwrap();
        out.push((
            format!("{name}-framed"),
            crate::frame_toc(&reader.toc().expect("a blob just built").to_json(), &blob[..toc_offset as usize]),
        ));
        // The same blob with the legacy 47-byte stargz footer.
        let mut legacy = blob[..blob.len() - Footer::Estargz { toc_offset }.size()].to_vec();
        legacy.extend_from_slice(&Footer::Legacy { toc_offset }.to_bytes());
        out.push((format!("{name}-legacy"), legacy));
        out.push((format!("{name}-normal"), blob));

        let min_chunk = BuildOptions::default()
            .chunk_size(512)
            .min_chunk_size(2048)
            .compression_level(Some(1))
            .threads(1)
            .prioritized_files(vec!["b".into(), "z".into()])
            .allow_missing_prioritized(true);
        out.push((format!("{name}-minchunk"), build_blob(&tar, &min_chunk).0));

        if name != "landmark-and-toc" {
            let lossless = BuildOptions::default()
                .chunk_size(700)
                .compression_level(Some(1))
                .threads(1)
                .external_toc(true)
                .keep_diff_id(true);
            let (blob, result) = build_blob(&tar, &lossless);
            let toc = result.external_toc_data.expect("external TOC");
            out.push((format!("{name}-external"), frame_external(&blob, &toc)));
        }
    }
    out
}

/// TOC JSON followed by a footer (`footer_toc` inputs).
pub fn toc_jsons() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (name, blob) in blobs() {
        if blob.starts_with(crate::FRAMED_TOC_PREFIX) {
            continue;
        }
        let (blob, ext) = split_external(&blob);
        let opts = estargz_core::OpenOptions::default().external_toc_data(ext.map(<[u8]>::to_vec));
        let reader = estargz_core::Reader::open(crate::source(blob), &opts).expect("seed opens");
        let mut json = reader.toc().expect("a blob just built").to_json();
        let footer = reader.footer();
        json.extend_from_slice(&footer.to_bytes());
        out.push((name, json));
    }
    out
}

/// Writes every target's seeds under `root/<target>/`; returns the count.
pub fn write_all(root: &Path) -> io::Result<usize> {
    let mut tars: Vec<(String, Vec<u8>)> = tars()
        .into_iter()
        .map(|(n, t)| (n.to_string(), t))
        .collect();
    tars.push(("tiny-gzip".into(), gzip(&tars[1].1)));
    tars.push((
        "spec-all-types".into(),
        crate::tar_spec(&[
            (b'5', "d/", "", b""),
            (b'0', "d/a", "", &text(300, 5)),
            (b'0', "b", "", b"hello world"),
            (b'2', "s", "d/a", b""),
            (b'1', "h", "b", b""),
            (b'1', "d/h2", "d/a", b""),
            (b'3', "c", "", b""),
            (b'6', "p", "", b""),
            (b'0', "b", "", b"a later duplicate"),
        ]),
    ));
    let mut n = 0;
    for (target, files) in [
        ("tar_build", tars),
        ("open_read", blobs()),
        ("footer_toc", toc_jsons()),
    ] {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        for (name, bytes) in files {
            std::fs::write(dir.join(format!("seed-{name}")), bytes)?;
            n += 1;
        }
    }
    Ok(n)
}
