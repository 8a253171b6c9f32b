//! Layers built in memory for unit tests.

use std::io::Cursor;
use std::sync::Arc;

use estargz_core::cache::ChunkCache;
use estargz_core::testing::{entry_headers, HeaderSpec};
use estargz_core::{build, BuildInput, BuildOptions, OpenOptions, Reader};

/// One entry of a test layer.
pub enum E<'a> {
    /// A regular file: name, bytes, mode.
    File(&'a str, &'a [u8], u32),
    /// A symlink: name, target.
    Link(&'a str, &'a str),
}

/// An eStargz layer of `entries`, read from memory through a chunk cache
/// of its own.
pub fn layer(entries: &[E]) -> Arc<Reader> {
    let mut tar = Vec::new();
    for e in entries {
        let (spec, data) = match e {
            E::File(name, data, mode) => (
                HeaderSpec {
                    name: name.to_string(),
                    typeflag: b'0',
                    mode: *mode,
                    size: data.len() as u64,
                    ..Default::default()
                },
                *data,
            ),
            E::Link(name, target) => (
                HeaderSpec {
                    name: name.to_string(),
                    link_name: target.to_string(),
                    typeflag: b'2',
                    mode: 0o777,
                    ..Default::default()
                },
                &[][..],
            ),
        };
        tar.extend_from_slice(&entry_headers(&spec));
        tar.extend_from_slice(data);
        tar.resize(tar.len().next_multiple_of(512), 0);
    }
    tar.extend_from_slice(&[0; 1024]);
    let mut blob = Vec::new();
    build(
        BuildInput::Reader(Box::new(Cursor::new(tar))),
        &mut blob,
        &BuildOptions::default(),
    )
    .unwrap();
    let opts = OpenOptions::default().cache(Some(Arc::new(ChunkCache::in_memory(256 << 20))));
    Arc::new(Reader::open(Arc::new(blob), &opts).unwrap())
}

/// Whether every chunk of file `path` of `layer` is cached.
pub fn cached(layer: &Reader, path: &str) -> bool {
    let id = layer.lookup(path).unwrap();
    layer
        .entry(id)
        .chunks()
        .iter()
        .filter_map(|c| c.digest)
        .all(|d| layer.cache().contains(&d))
}
