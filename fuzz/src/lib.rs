//! Shared code of the estargz-core fuzz targets: the checks every target runs
//! on an opened blob, the tar ↔ reader comparison, and the seed corpus.
//!
//! Every check here is an invariant of the public API: a failing `assert!` is
//! a bug in estargz-core (or in this harness), never an expected outcome.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

use estargz_core::build::{NO_PREFETCH_LANDMARK, PREFETCH_LANDMARK};
use estargz_core::reader::{Index, NodeId, ROOT};
use estargz_core::testing::{clean_name, TarIndex, TarKind};
use estargz_core::toc::TOC_NAME;
use estargz_core::{EntryType, Error, Reader};

pub mod seeds;

/// Largest single allocation a target may make. libFuzzer's own
/// `-malloc_limit_mb` works only under a sanitizer (it needs malloc hooks), so
/// this guard makes a huge allocation a crash on stable too, even one that
/// would not show up in RSS because its pages are never touched.
pub const MAX_ALLOCATION: usize = 1 << 30;

struct GuardedAlloc;

/// Bytes allocated and not yet freed, and their high-water mark since
/// [`reset_peak_memory`] (the resource-bound check of the targets).
static LIVE_BYTES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static PEAK_BYTES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn count_alloc(size: usize) {
    use std::sync::atomic::Ordering::Relaxed;
    let live = LIVE_BYTES.fetch_add(size, Relaxed) + size;
    PEAK_BYTES.fetch_max(live, Relaxed);
}

fn count_free(size: usize) {
    LIVE_BYTES.fetch_sub(size, std::sync::atomic::Ordering::Relaxed);
}

/// Starts measuring: the peak becomes what is live now.
pub fn reset_peak_memory() -> usize {
    use std::sync::atomic::Ordering::Relaxed;
    let live = LIVE_BYTES.load(Relaxed);
    PEAK_BYTES.store(live, Relaxed);
    live
}

/// Most bytes live at once since [`reset_peak_memory`].
pub fn peak_memory() -> usize {
    PEAK_BYTES.load(std::sync::atomic::Ordering::Relaxed)
}

/// Per-input bounds of the resource check: an input opened and read with
/// small limits must stay within these (issue 15).
pub const INPUT_MEMORY_BOUND: usize = 256 << 20;
pub const INPUT_TIME_BOUND: std::time::Duration = std::time::Duration::from_secs(10);

impl GuardedAlloc {
    #[cold]
    fn too_big(size: usize) -> ! {
        // No formatting here: it could allocate. Print the size in hex by hand.
        let mut msg =
            *b"estargz-fuzz: single allocation of 0x0000000000000000 bytes (over MAX_ALLOCATION)\n";
        let start = msg.iter().position(|&b| b == b'x').unwrap() + 1;
        for i in 0..16 {
            msg[start + i] = b"0123456789abcdef"[(size >> (60 - 4 * i)) & 0xf];
        }
        let _ = std::io::Write::write_all(&mut std::io::stderr(), &msg);
        std::process::abort();
    }
}

unsafe impl std::alloc::GlobalAlloc for GuardedAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        if layout.size() > MAX_ALLOCATION {
            Self::too_big(layout.size());
        }
        let p = unsafe { std::alloc::System.alloc(layout) };
        if !p.is_null() {
            count_alloc(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        if layout.size() > MAX_ALLOCATION {
            Self::too_big(layout.size());
        }
        let p = unsafe { std::alloc::System.alloc_zeroed(layout) };
        if !p.is_null() {
            count_alloc(layout.size());
        }
        p
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        if new_size > MAX_ALLOCATION {
            Self::too_big(new_size);
        }
        let p = unsafe { std::alloc::System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            count_free(layout.size());
            count_alloc(new_size);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        count_free(layout.size());
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: GuardedAlloc = GuardedAlloc;

/// Bytes read from one file per read pattern (keeps decompression bombs cheap).
const READ_LIMIT: u64 = 1 << 20;

/// Called from every target's `init`: with `ESTARGZ_FUZZ_SEEDS=<corpus root>`
/// in the environment, writes the seed corpus of every target under
/// `<root>/<target>/` and exits instead of fuzzing. This reuses the fuzz build
/// (no second, uninstrumented build of the whole dependency tree just for the
/// seeds); `scripts/fuzz-smoke.sh` calls it.
pub fn init() {
    if let Some(root) = std::env::var_os("ESTARGZ_FUZZ_SEEDS") {
        let n = seeds::write_all(Path::new(&root)).expect("writing the seed corpus");
        eprintln!(
            "estargz-fuzz: wrote {n} seed files under {}",
            Path::new(&root).display()
        );
        std::process::exit(0);
    }
}

/// Touches the parts of an error that callers (CLI, C ABI, FUSE) use.
pub fn touch_error(e: &Error) {
    let _ = e.code();
    let _ = e.errno();
    let _ = e.to_string();
}

/// Checks the internal consistency of a tree built from a TOC.
pub fn check_index(idx: &Index) {
    assert!(!idx.is_empty(), "no root node");
    let root = idx.entry(ROOT);
    assert_eq!(idx.path(ROOT), "", "node 0 is not the root");
    assert_eq!(root.kind(), EntryType::Dir, "root is not a dir");
    for node in idx.entries() {
        let id = node.id();
        // Paths are rebuilt from ancestors: only for shallow trees, or this
        // check alone would be quadratic in the depth.
        if idx.len() <= 4096 {
            let path = idx.path(id);
            assert_eq!(
                idx.lookup(&path),
                Some(id),
                "lookup of node {id:?} path {path:?}"
            );
        }
        let mut previous: Option<&str> = None;
        for (name, child) in node.children() {
            assert!(previous < Some(name), "children of {id:?} not sorted");
            previous = Some(name);
            assert_eq!(idx.entry(child).parent(), id, "parent of {name:?}");
            assert_eq!(idx.entry(child).name(), name, "child name");
        }
        if id != ROOT {
            let parent = idx.entry(node.parent());
            assert_eq!(
                parent.child(node.name()),
                Some(id),
                "node {id:?} ({:?}) is not a child of its parent",
                node.name()
            );
        }
        if let Some(t) = node.hardlink_target() {
            let target = idx.entry(t);
            assert!(
                !matches!(target.kind(), EntryType::Hardlink | EntryType::Dir),
                "hardlink {id:?} resolves to a {}",
                target.kind().as_str()
            );
            assert!(target.hardlink_target().is_none(), "hardlink to a hardlink");
        }
        if node.kind() == EntryType::Reg && node.hardlink_target().is_none() {
            let mut expected = 0u64;
            for c in node.chunks() {
                assert_eq!(c.chunk_offset, expected, "chunks of node {id:?} tile");
                assert!(c.chunk_size > 0, "empty chunk in node {id:?}");
                expected += c.chunk_size;
            }
            assert_eq!(expected, node.size(), "chunks of node {id:?} cover");
        }
    }
}

/// Reads `[0, min(size, limit))` of `id` with reads of `block` bytes; `None`
/// when a read fails (the error is touched). Checks the `read_at` contract:
/// a successful read returns exactly `min(block, size - offset)` bytes.
fn read_file(reader: &Reader, id: NodeId, size: u64, block: usize, limit: u64) -> Option<Vec<u8>> {
    let want = size.min(limit);
    let mut out = Vec::with_capacity(want as usize);
    let mut buf = vec![0u8; block];
    while (out.len() as u64) < want {
        let offset = out.len() as u64;
        match reader.read_at(id, offset, &mut buf) {
            Ok(n) => {
                let expected = (block as u64).min(size - offset) as usize;
                assert_eq!(
                    n, expected,
                    "read_at({id:?}, {offset}, {block}) of a {size}-byte file"
                );
                out.extend_from_slice(&buf[..n]);
            }
            Err(e) => {
                touch_error(&e);
                return None;
            }
        }
    }
    out.truncate(want as usize);
    Some(out)
}

/// Content of a regular file (up to `limit` bytes) read several ways, which
/// must all agree; `None` when reading fails.
pub fn read_checked(reader: &Reader, id: NodeId, limit: u64, thorough: bool) -> Option<Vec<u8>> {
    let data_id = reader.resolve(id);
    let size = reader.entry(data_id).size();
    let first = read_file(reader, id, size, 4096, limit)?;
    if !thorough {
        return Some(first);
    }
    // Same bytes with odd block sizes (straddling chunk boundaries) ...
    for (block, lim) in [(1000, limit), (61, limit.min(64 << 10))] {
        if let Some(again) = read_file(reader, id, size, block, lim) {
            assert_eq!(
                again[..],
                first[..again.len()],
                "block size {block} reads differ"
            );
        }
    }
    // ... and through the hardlink target ...
    if data_id != id {
        if let Some(direct) = read_file(reader, data_id, size, 4096, 64 << 10) {
            assert_eq!(direct[..], first[..direct.len()], "hardlink reads differ");
        }
    }
    // ... and through FileReader, with a seek.
    match reader.open_file(id) {
        Ok(mut f) => {
            let mut seq = Vec::new();
            if (&mut f)
                .take(limit.min(64 << 10))
                .read_to_end(&mut seq)
                .is_ok()
            {
                assert_eq!(seq[..], first[..seq.len()], "FileReader differs");
            }
            if size > 3 {
                let back = f.seek(SeekFrom::End(-3)).expect("seek to end-3");
                assert_eq!(back, size - 3);
                let mut tail = Vec::new();
                if f.read_to_end(&mut tail).is_ok() {
                    assert_eq!(tail.len(), 3, "tail read length");
                    if size <= limit {
                        assert_eq!(tail[..], first[first.len() - 3..], "tail bytes");
                    }
                }
            }
            assert!(f.seek(SeekFrom::Current(-(1 << 62))).is_err() || size >= 1 << 62);
        }
        Err(e) => panic!("open_file of a readable file failed: {e}"),
    }
    // Reads at and past the end return 0.
    let mut one = [0u8; 1];
    for off in [size, size.saturating_add(1), u64::MAX - 1] {
        if off >= size {
            assert_eq!(
                reader.read_at(id, off, &mut one).ok(),
                Some(0),
                "read at {off}"
            );
        }
    }
    Some(first)
}

/// Exercises everything a reader exposes; returns file contents (path →
/// bytes, or `None` if unreadable) of every regular file and hardlink.
/// `thorough` also reads every file in odd block sizes, through hardlink
/// targets and `FileReader` (each read pattern decompresses every chunk again).
pub fn exercise_reader(reader: &Reader, thorough: bool) -> BTreeMap<String, Option<Vec<u8>>> {
    let _ = reader.footer().to_bytes();
    assert!(reader.verify_toc_digest(reader.toc_digest()).is_ok());
    let toc_json = reader.toc().expect("an open blob's TOC decodes again").to_json();
    assert!(
        estargz_core::Toc::from_json(&toc_json).is_ok(),
        "re-serialized TOC does not parse"
    );
    check_index(reader.index());
    let mut files = BTreeMap::new();
    let small = reader.index().len() <= 4096;
    for node in reader.index().entries() {
        let id = node.id();
        // Rebuilding every path costs O(nodes × depth): only for small trees.
        if small {
            let path = reader.path(id);
            assert_eq!(reader.lookup(&path).ok(), Some(id));
        }
        let data_id = reader.resolve(id);
        let data = reader.entry(data_id);
        match data.kind() {
            EntryType::Dir => match reader.read_dir(id) {
                Ok(children) => assert_eq!(children.len(), data.child_count()),
                Err(e) => panic!("read_dir of a dir failed: {e}"),
            },
            EntryType::Reg => {
                files.insert(
                    reader.path(id),
                    read_checked(reader, id, READ_LIMIT, thorough),
                );
            }
            _ => {
                let mut b = [0u8; 8];
                assert!(reader.read_at(id, 0, &mut b).is_err(), "read of a non-file");
                assert!(reader.read_dir(id).is_err() || node.kind() == EntryType::Dir);
            }
        }
    }
    match reader.verify() {
        Ok(_) => {
            // Everything verified, so every file must be readable.
            for (path, data) in &files {
                assert!(
                    data.is_some(),
                    "verify passed but {path:?} is unreadable"
                );
            }
        }
        Err(e) => touch_error(&e),
    }
    files
}

/// What a reader must show for a tar: cleaned name → (kind, payload or
/// cleaned hardlink target), later duplicates winning, TOC and landmarks
/// dropped (what the builder does in normal mode).
pub fn tar_expectation(tar: &[u8], idx: &TarIndex) -> BTreeMap<String, (EntryType, Vec<u8>)> {
    let mut out = BTreeMap::new();
    for e in &idx.entries {
        let name = clean_name(&e.name);
        if name.is_empty() || name == TOC_NAME {
            continue;
        }
        let value = match e.kind {
            TarKind::Reg => (
                EntryType::Reg,
                tar[e.data_start as usize..(e.data_start + e.size) as usize].to_vec(),
            ),
            TarKind::Hardlink => (EntryType::Hardlink, clean_name(&e.link_name).into_bytes()),
            TarKind::Symlink => (EntryType::Symlink, e.link_name.clone().into_bytes()),
            TarKind::Dir => (EntryType::Dir, Vec::new()),
            TarKind::Char => (EntryType::Char, Vec::new()),
            TarKind::Block => (EntryType::Block, Vec::new()),
            TarKind::Fifo => (EntryType::Fifo, Vec::new()),
        };
        out.insert(name, value);
    }
    out
}

/// Compares a reader of a freshly built blob with the input tar.
pub fn compare_with_tar(
    reader: &Reader,
    files: &BTreeMap<String, Option<Vec<u8>>>,
    expected: &BTreeMap<String, (EntryType, Vec<u8>)>,
    lossless: bool,
) {
    for (path, (kind, value)) in expected {
        if !lossless && (path == PREFETCH_LANDMARK || path == NO_PREFETCH_LANDMARK) {
            continue;
        }
        let id = match reader.lookup(path) {
            Ok(id) => id,
            Err(e) => panic!(
                "tar entry {path:?} ({}) missing from the blob: {e}",
                kind.as_str()
            ),
        };
        let node = reader.entry(id);
        assert_eq!(
            node.kind(),
            *kind,
            "kind of {path:?} (tar says {}, blob says {})",
            kind.as_str(),
            node.kind().as_str()
        );
        match kind {
            EntryType::Reg => {
                let got = files[path].as_ref().expect("file of a built blob reads");
                let n = got.len().min(value.len());
                assert_eq!(got.len() as u64, (value.len() as u64).min(READ_LIMIT));
                assert!(got[..n] == value[..n], "content of {path:?} differs");
            }
            EntryType::Hardlink => {
                assert_eq!(
                    reader.path(reader.resolve(id)).as_bytes(),
                    &value[..],
                    "hardlink {path:?} target"
                );
            }
            EntryType::Symlink => {
                assert_eq!(
                    node.link_name().as_bytes(),
                    &value[..],
                    "symlink {path:?}"
                )
            }
            _ => {}
        }
    }
    // Nothing that is not in the tar (besides implicit dirs and landmarks).
    for node in reader.index().entries().skip(1) {
        let path = node.path();
        if node.is_implicit() || path == PREFETCH_LANDMARK || path == NO_PREFETCH_LANDMARK {
            continue;
        }
        assert!(
            expected.contains_key(&path),
            "blob has {path:?} which the tar does not"
        );
    }
}

/// An in-memory blob as a `ReadAt` source.
pub fn source(blob: &[u8]) -> Arc<dyn estargz_core::ReadAt> {
    Arc::new(blob.to_vec())
}

/// Rewrites the checksum of every header block the tar indexer would visit,
/// so that mutated tars get past the checksum check (the `tar_build` custom
/// mutator applies this to most mutants). Gzip input is left alone.
pub fn fix_tar_checksums(data: &mut [u8]) {
    if data.starts_with(&[0x1f, 0x8b]) || data.starts_with(TAR_SPEC_PREFIX) {
        return;
    }
    let mut pos = 0usize;
    while pos + 512 <= data.len() {
        let block = &mut data[pos..pos + 512];
        if block.iter().all(|&b| b == 0) {
            break;
        }
        block[148..156].fill(b' ');
        let sum: u32 = block.iter().map(|&b| b as u32).sum();
        block[148..156].copy_from_slice(format!("{:06o}\0 ", sum & 0o777777).as_bytes());
        let size = match octal(&block[124..136]) {
            Some(s) => s,
            None => break,
        };
        let name_is_dir = {
            let end = block[..100].iter().position(|&b| b == 0).unwrap_or(100);
            end > 0 && block[end - 1] == b'/'
        };
        let has_data = match block[156] {
            b'0' | b'\0' => !name_is_dir,
            b'x' | b'L' | b'K' => true,
            _ => false,
        };
        let skip = if has_data {
            size.div_ceil(512).saturating_mul(512)
        } else {
            0
        };
        match usize::try_from(skip)
            .ok()
            .and_then(|s| (pos + 512).checked_add(s))
        {
            Some(next) => pos = next,
            None => break,
        }
    }
}

fn octal(field: &[u8]) -> Option<u64> {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    let text = std::str::from_utf8(&field[..end]).ok()?.trim_matches(' ');
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}

/// Prefix of an `open_read` input given as TOC JSON plus data area instead of
/// a finished blob: `PREFIX ++ u32le(json.len()) ++ json ++ data`. The target
/// assembles `data ++ gzip(TOC tar) ++ footer`, so mutations reach the TOC
/// fields directly instead of having to survive deflate.
pub const FRAMED_TOC_PREFIX: &[u8; 8] = b"ESGZTOC\n";

/// Builds the blob for a framed-TOC input; `None` if `data` is not one.
pub fn assemble_framed(data: &[u8]) -> Option<Vec<u8>> {
    let rest = data.strip_prefix(FRAMED_TOC_PREFIX)?;
    let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let json = rest.get(4..4usize.checked_add(len)?)?;
    let payload = &rest[4 + len..];
    let mut blob = payload.to_vec();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &estargz_core::build::toc_tar(json)).ok()?;
    blob.extend_from_slice(&gz.finish().ok()?);
    let footer = estargz_core::Footer::Estargz {
        toc_offset: payload.len() as u64,
    };
    blob.extend_from_slice(&footer.to_bytes());
    Some(blob)
}

/// Inverse of [`assemble_framed`] for an embedded-TOC blob.
pub fn frame_toc(json: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = FRAMED_TOC_PREFIX.to_vec();
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(json);
    out.extend_from_slice(payload);
    out
}

/// For exploring past a bug that is already known: with
/// `ESTARGZ_FUZZ_IGNORE="substring|substring"`, harness checks whose failure
/// message contains one of the substrings are skipped instead of crashing.
/// Never set by `scripts/fuzz-smoke.sh`.
pub fn ignored(message: &str) -> bool {
    static IGNORE: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    IGNORE
        .get_or_init(|| {
            std::env::var("ESTARGZ_FUZZ_IGNORE")
                .map(|v| {
                    v.split('|')
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default()
        })
        .iter()
        .any(|s| message.contains(s.as_str()))
}

/// Prefix of a `tar_build` input given as a compact list of entries instead
/// of tar bytes, so that mutations change names, types and link targets
/// directly (tar checksums and padding make that rare on raw tars). After the
/// prefix, records until the input ends: `typeflag, u8 name_len, name,
/// u8 link_len, link, u16le data_len, data`; a truncated record ends the list.
pub const TAR_SPEC_PREFIX: &[u8; 8] = b"TARSPEC\n";

/// The tar for a spec input (see [`TAR_SPEC_PREFIX`]); `None` if `data` is not one.
pub fn tar_from_spec(data: &[u8]) -> Option<Vec<u8>> {
    let mut rest = data.strip_prefix(TAR_SPEC_PREFIX)?;
    let mut tar = Vec::new();
    let take = |n: usize, rest: &mut &[u8]| -> Option<Vec<u8>> {
        let (head, tail) = (rest.get(..n)?, rest.get(n..)?);
        *rest = tail;
        Some(head.to_vec())
    };
    while let Some(typeflag) = take(1, &mut rest) {
        let Some(record) = (|| {
            let n = take(1, &mut rest)?[0] as usize;
            let name = take(n, &mut rest)?;
            let n = take(1, &mut rest)?[0] as usize;
            let link = take(n, &mut rest)?;
            let n = take(2, &mut rest)?;
            let data = take(u16::from_le_bytes([n[0], n[1]]) as usize, &mut rest)?;
            Some((name, link, data))
        })() else {
            break;
        };
        let (name, link, data) = record;
        let spec = estargz_core::testing::HeaderSpec {
            name: String::from_utf8_lossy(&name).into_owned(),
            link_name: String::from_utf8_lossy(&link).into_owned(),
            typeflag: typeflag[0],
            size: data.len() as u64,
            mode: 0o644,
            uid: 1000,
            gid: 1000,
            uname: "user".into(),
            gname: "group".into(),
            mtime: 1_577_934_246,
            dev_major: 1,
            dev_minor: 3,
            ..Default::default()
        };
        tar.extend_from_slice(&estargz_core::testing::entry_headers(&spec));
        tar.extend_from_slice(&data);
        tar.resize(tar.len().next_multiple_of(512), 0);
    }
    tar.extend_from_slice(&[0u8; 1024]);
    Some(tar)
}

/// Encodes entries `(typeflag, name, link, data)` as a spec input.
pub fn tar_spec(entries: &[(u8, &str, &str, &[u8])]) -> Vec<u8> {
    let mut out = TAR_SPEC_PREFIX.to_vec();
    for (typeflag, name, link, data) in entries {
        out.push(*typeflag);
        out.push(name.len() as u8);
        out.extend_from_slice(name.as_bytes());
        out.push(link.len() as u8);
        out.extend_from_slice(link.as_bytes());
        out.extend_from_slice(&(data.len() as u16).to_le_bytes());
        out.extend_from_slice(data);
    }
    out
}
