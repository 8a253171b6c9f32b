//! Helpers shared by the integration tests: tiny tar builder and blob helpers.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;

use estargz_core::testing::{entry_headers, HeaderSpec};
use estargz_core::{build, BuildInput, BuildOptions, BuildResult, OpenOptions, Reader};

#[derive(Default)]
pub struct TarBuilder {
    pub bytes: Vec<u8>,
}

impl TarBuilder {
    pub fn new() -> Self {
        TarBuilder { bytes: Vec::new() }
    }
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
            ..Default::default()
        }
    }
    pub fn dir(&mut self, name: &str) -> &mut Self {
        self.push(Self::spec(name, b'5', 0o755), &[])
    }
    pub fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        let mut s = Self::spec(name, b'0', 0o644);
        s.size = data.len() as u64;
        self.push(s, data)
    }
    pub fn file_with(
        &mut self,
        name: &str,
        data: &[u8],
        f: impl FnOnce(&mut HeaderSpec),
    ) -> &mut Self {
        let mut s = Self::spec(name, b'0', 0o644);
        s.size = data.len() as u64;
        f(&mut s);
        self.push(s, data)
    }
    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        let mut s = Self::spec(name, b'2', 0o777);
        s.link_name = target.into();
        self.push(s, &[])
    }
    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        let mut s = Self::spec(name, b'1', 0o644);
        s.link_name = target.into();
        self.push(s, &[])
    }
    pub fn device(&mut self, name: &str, typeflag: u8, major: u64, minor: u64) -> &mut Self {
        let mut s = Self::spec(name, typeflag, 0o600);
        s.dev_major = major;
        s.dev_minor = minor;
        self.push(s, &[])
    }
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = self.bytes.clone();
        out.extend_from_slice(&[0u8; 1024]);
        out
    }
}

/// Deterministic pseudo-random bytes (xorshift), compressible-ish when `text`.
pub fn pseudo_random(len: usize, seed: u64, text: bool) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if text {
                b"abcdefgh ijklmnop\n"[(x % 18) as usize]
            } else {
                x as u8
            }
        })
        .collect()
}

pub fn build_blob(tar: &[u8], opts: &BuildOptions) -> (Vec<u8>, BuildResult) {
    let mut out = Vec::new();
    let result = build(
        BuildInput::Reader(Box::new(std::io::Cursor::new(tar.to_vec()))),
        &mut out,
        opts,
    )
    .expect("build succeeds");
    (out, result)
}

pub fn open(blob: &[u8], result: &BuildResult) -> Reader {
    let opts = OpenOptions::default()
        .external_toc_data(result.external_toc_data.clone())
        .expected_toc_digest(Some(result.toc_digest));
    Reader::open(Arc::new(blob.to_vec()), &opts).expect("open succeeds")
}

/// Whole decompressed stream (multi-member gunzip).
pub fn gunzip(blob: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(blob)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// path → (type, content or link target) of every entry a reader exposes.
pub fn reader_tree(reader: &Reader) -> BTreeMap<String, (String, Vec<u8>)> {
    let mut out = BTreeMap::new();
    for node in reader.index().entries().skip(1) {
        let (id, path) = (node.id(), node.path());
        if path == ".no.prefetch.landmark" || path == ".prefetch.landmark" {
            continue;
        }
        let value = if let Some(t) = node.hardlink_target() {
            ("hardlink".to_string(), reader.path(t).into_bytes())
        } else {
            let kind = node.kind().as_str().to_string();
            let content = match node.kind() {
                estargz_core::EntryType::Reg => {
                    let mut buf = vec![0u8; node.size() as usize];
                    assert_eq!(reader.read_at(id, 0, &mut buf).unwrap(), buf.len());
                    buf
                }
                _ => node.link_name().as_bytes().to_vec(),
            };
            (kind, content)
        };
        out.insert(path, value);
    }
    out
}

/// The same view computed from a tar with the core's own tar indexer
/// (cleaned names, later duplicates win).
pub fn tar_tree(tar: &[u8]) -> BTreeMap<String, (String, Vec<u8>)> {
    use estargz_core::testing::{clean_name, index, TarKind};
    let idx = index(&tar.to_vec()).unwrap();
    let mut out = BTreeMap::new();
    for e in &idx.entries {
        let name = clean_name(&e.name);
        if name.is_empty() || name == "stargz.index.json" {
            continue;
        }
        let value = match e.kind {
            TarKind::Reg => (
                "reg".to_string(),
                tar[e.data_start as usize..(e.data_start + e.size) as usize].to_vec(),
            ),
            TarKind::Hardlink => (
                "hardlink".to_string(),
                clean_name(&e.link_name).into_bytes(),
            ),
            TarKind::Symlink => ("symlink".to_string(), e.link_name.clone().into_bytes()),
            TarKind::Dir => ("dir".to_string(), Vec::new()),
            TarKind::Char => ("char".to_string(), Vec::new()),
            TarKind::Block => ("block".to_string(), Vec::new()),
            TarKind::Fifo => ("fifo".to_string(), Vec::new()),
        };
        out.insert(name, value);
    }
    out
}
