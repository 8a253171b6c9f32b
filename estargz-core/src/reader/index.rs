//! The in-memory file tree derived from a TOC (spec §3.6): cleaned names,
//! implicit parent directories, hardlinks, link counts, per-file chunk lists
//! and the blob range of every chunk. Inconsistent TOCs are rejected here so
//! the read path can trust the geometry.

use std::collections::{BTreeMap, HashMap};

use crate::error::{Error, Result};
use crate::tar::clean_name;
use crate::toc::{EntryType, Toc, TocEntry};

/// Longest path accepted in a TOC (Linux's PATH_MAX is 4096).
pub const MAX_PATH_LEN: usize = 16 << 10;

/// Index of a node in [`Index::nodes`].
pub type NodeId = usize;
/// The root directory is always node 0.
pub const ROOT: NodeId = 0;

/// One data chunk of a regular file and where it lives in the blob.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// Blob offset of the gzip member holding the chunk's first byte.
    pub offset: u64,
    /// Uncompressed bytes to skip inside that member (min-chunk mode).
    pub inner_offset: u64,
    /// Offset of the chunk within the file.
    pub chunk_offset: u64,
    /// Length of the chunk.
    pub chunk_size: u64,
    /// Where compressed data for this chunk surely ends.
    pub next_offset: u64,
    /// Digest to verify the chunk against.
    pub digest: String,
}

/// A file, directory, link or device in the tree. Nodes store only their
/// own name: storing full paths would let a small, highly compressible TOC
/// of deep paths cost memory quadratic in their depth. [`Index::path`]
/// rebuilds a path when one is needed.
#[derive(Debug, Clone)]
pub struct Node {
    /// Name within the parent directory (`""` for the root).
    pub name: String,
    /// The TOC entry (raw name kept); synthesised for implicit directories.
    pub entry: TocEntry,
    /// True for directories that have no TOC entry of their own.
    pub implicit: bool,
    /// The directory holding this node (the root is its own parent).
    pub parent: NodeId,
    /// Directory entries by name, in byte order.
    pub children: BTreeMap<String, NodeId>,
    /// Link count as a file system would report it.
    pub nlink: u32,
    /// For hardlinks: the node they point to (never itself a hardlink).
    pub link_target: Option<NodeId>,
    /// For regular files: chunks sorted by `chunk_offset`.
    pub chunks: Vec<Chunk>,
}

#[derive(Debug)]
/// The file tree of an open blob.
pub struct Index {
    /// Every node; a [`NodeId`] is a position here, the root first.
    pub nodes: Vec<Node>,
    /// Bounds checked while building.
    limits: IndexLimits,
    /// For gzip members holding several chunks: how far they must be
    /// inflated (end of their last chunk), by member offset.
    member_spans: HashMap<u64, u64>,
}

/// Bounds on the tree built from an untrusted TOC (see `OpenOptions`).
#[derive(Debug, Clone, Copy)]
pub struct IndexLimits {
    /// Most nodes, implicit directories included.
    pub max_nodes: u64,
    /// Most components in one path.
    pub max_path_depth: u64,
    /// How many times the chunk bytes a gzip member holds it may inflate to
    /// (up to the end of its last chunk), beyond a fixed 16 MiB allowance.
    pub max_member_inflation: u64,
}

impl IndexLimits {
    /// What `OpenOptions::default()` allows.
    pub const DEFAULT: IndexLimits = IndexLimits {
        max_nodes: super::DEFAULT_MAX_ENTRIES,
        max_path_depth: super::DEFAULT_MAX_PATH_DEPTH,
        max_member_inflation: super::DEFAULT_MAX_MEMBER_INFLATION,
    };
    /// Only the checks every tree gets (e.g. for TOCs we built ourselves).
    pub const UNLIMITED: IndexLimits = IndexLimits {
        max_nodes: u64::MAX,
        max_path_depth: u64::MAX,
        max_member_inflation: u64::MAX,
    };
}

/// Decompressed bytes a member may always span, whatever chunks it holds:
/// room for tar headers of many small or empty files in min-chunk-size blobs.
pub const MEMBER_INFLATION_ALLOWANCE: u64 = 16 << 20;

fn implicit_dir(name: &str, parent: NodeId) -> Node {
    let mut entry = TocEntry::new(String::new(), EntryType::Dir);
    entry.mode = 0o755;
    Node {
        name: name.to_string(),
        entry,
        implicit: true,
        parent,
        children: BTreeMap::new(),
        nlink: 2,
        link_target: None,
        chunks: Vec::new(),
    }
}

impl Index {
    /// Builds the tree. `payload_end` is where the data members end (TOC offset
    /// or the footer start); chunk ranges must lie before it.
    pub fn build(toc: Toc, payload_end: u64) -> Result<Index> {
        Self::build_limited(toc, payload_end, &IndexLimits::UNLIMITED)
    }

    /// [`Index::build`] within `limits`. The TOC's entries move into the
    /// tree (the reader keeps no second copy of them).
    pub fn build_limited(toc: Toc, payload_end: u64, limits: &IndexLimits) -> Result<Index> {
        let next_offsets = next_offsets(&toc.entries, payload_end);
        let mut idx = Self::tree(toc.entries.into_iter(), &next_offsets, limits)?;
        idx.validate_chunks(payload_end)?;
        idx.check_members()?;
        idx.count_links();
        Ok(idx)
    }

    /// Checks that `entries` form a tree a reader accepts with default
    /// options (no file used as a directory, hardlinks resolvable, sane
    /// names, default limits), ignoring chunk geometry. The builder uses it
    /// so that every blob it writes can be opened.
    pub fn check_tree(entries: &[TocEntry]) -> Result<()> {
        // Entries are cloned one at a time into the tree, not all up front.
        let next_offsets = next_offsets(entries, u64::MAX);
        Self::tree(
            entries.iter().cloned(),
            &next_offsets,
            &IndexLimits::DEFAULT,
        )
        .map(|_| ())
    }

    /// Builds the tree from `entries`; `next_offsets[i]` is where entry
    /// `i`'s compressed range surely ends (see [`next_offsets`]).
    fn tree(
        entries: impl Iterator<Item = TocEntry>,
        next_offsets: &[u64],
        limits: &IndexLimits,
    ) -> Result<Index> {
        let mut idx = Index {
            nodes: vec![implicit_dir("", ROOT)],
            limits: *limits,
            member_spans: HashMap::new(),
        };
        let mut unames: HashMap<u64, String> = HashMap::new();
        let mut gnames: HashMap<u64, String> = HashMap::new();
        let mut current_file: Option<NodeId> = None;
        for (i, mut entry) in entries.enumerate() {
            if entry.kind == EntryType::Chunk {
                let file = current_file.ok_or_else(|| {
                    Error::InvalidToc(format!(
                        "chunk entry #{i} ({:?}) follows no regular file",
                        entry.name
                    ))
                })?;
                idx.add_chunk(file, &mut entry, next_offsets[i])?;
                continue;
            }
            let path = clean_name(&entry.name);
            if path.len() > MAX_PATH_LEN {
                return Err(Error::LimitExceeded(format!(
                    "entry #{i} has a {}-byte path (limit {MAX_PATH_LEN})",
                    path.len()
                )));
            }
            let depth = path.split('/').filter(|p| !p.is_empty()).count() as u64;
            if depth > limits.max_path_depth {
                return Err(Error::LimitExceeded(format!(
                    "entry #{i} has a path {depth} directories deep (max_path_depth {})",
                    limits.max_path_depth
                )));
            }
            // Re-fill user/group names the writer omitted as repeats.
            for (name, id, map) in [
                (&mut entry.user_name, entry.uid, &mut unames),
                (&mut entry.group_name, entry.gid, &mut gnames),
            ] {
                if name.is_empty() {
                    if let Some(n) = map.get(&id) {
                        name.clone_from(n);
                    }
                } else if map.get(&id) != Some(name) {
                    map.insert(id, name.clone());
                }
            }
            let is_file = entry.kind == EntryType::Reg && entry.size > 0;
            // The first chunk's fields live in the file's entry: take them
            // before the entry moves into the tree.
            let mut first_chunk = is_file.then(|| {
                let mut first = TocEntry::new(String::new(), EntryType::Reg);
                first.chunk_digest = std::mem::take(&mut entry.chunk_digest);
                if first.chunk_digest.is_empty() {
                    first.digest.clone_from(&entry.digest);
                }
                first
            });
            let id = idx.upsert(&path, entry)?;
            current_file = None;
            if idx.nodes[id].entry.kind == EntryType::Reg {
                idx.nodes[id].chunks.clear();
            }
            if let Some(first) = first_chunk.as_mut() {
                let e = &idx.nodes[id].entry;
                first.size = e.size;
                first.offset = e.offset;
                first.inner_offset = e.inner_offset;
                first.chunk_offset = e.chunk_offset;
                first.chunk_size = e.chunk_size;
                idx.add_chunk(id, first, next_offsets[i])?;
                current_file = Some(id);
            }
        }
        idx.resolve_hardlinks()?;
        Ok(idx)
    }

    fn kind_error(&self, id: NodeId) -> Error {
        Error::InvalidToc(format!(
            "{:?} is used as a directory but is a {}",
            self.path(id),
            self.nodes[id].entry.kind.as_str()
        ))
    }

    /// Inserts or replaces the node at the cleaned `path`, creating implicit parents.
    fn upsert(&mut self, path: &str, entry: TocEntry) -> Result<NodeId> {
        if path.is_empty() {
            // An explicit root entry describes the root itself.
            if entry.kind != EntryType::Dir {
                return Err(Error::InvalidToc(format!(
                    "entry {:?} names the root but is a {}",
                    entry.name,
                    entry.kind.as_str()
                )));
            }
            self.nodes[ROOT].entry = entry;
            self.nodes[ROOT].implicit = false;
            return Ok(ROOT);
        }
        let (parent_path, base) = path.rsplit_once('/').unwrap_or(("", path));
        let parent = self.dir_for(parent_path)?;
        if let Some(&id) = self.nodes[parent].children.get(base) {
            // Later duplicates replace earlier ones (children stay attached).
            let node = &mut self.nodes[id];
            node.entry = entry;
            node.implicit = false;
            node.link_target = None;
            return Ok(id);
        }
        let id = self.new_node_id()?;
        let mut node = implicit_dir(base, parent);
        node.entry = entry;
        node.implicit = false;
        self.nodes.push(node);
        self.nodes[parent].children.insert(base.to_string(), id);
        Ok(id)
    }

    /// The id the next node gets, if the node limit allows one more.
    fn new_node_id(&self) -> Result<NodeId> {
        if self.nodes.len() as u64 >= self.limits.max_nodes {
            return Err(Error::LimitExceeded(format!(
                "the TOC makes more than {} files and directories (max_entries)",
                self.limits.max_nodes
            )));
        }
        Ok(self.nodes.len())
    }

    /// Returns the directory at cleaned `path`, creating missing ones (implicit).
    fn dir_for(&mut self, path: &str) -> Result<NodeId> {
        let mut id = ROOT;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            if self.nodes[id].entry.kind != EntryType::Dir {
                return Err(self.kind_error(id));
            }
            id = match self.nodes[id].children.get(part) {
                Some(&child) => child,
                None => {
                    let child = self.new_node_id()?;
                    self.nodes.push(implicit_dir(part, id));
                    self.nodes[id].children.insert(part.to_string(), child);
                    child
                }
            };
        }
        if self.nodes[id].entry.kind != EntryType::Dir {
            return Err(self.kind_error(id));
        }
        Ok(id)
    }

    /// The cleaned path of a node (`""` for the root), built from its ancestors.
    pub fn path(&self, id: NodeId) -> String {
        let mut names = Vec::new();
        let mut cur = id;
        while cur != ROOT {
            names.push(self.nodes[cur].name.as_str());
            cur = self.nodes[cur].parent;
        }
        names.reverse();
        names.join("/")
    }

    /// Appends the chunk `e` describes (a chunk entry, or the first chunk
    /// of a file), taking its digest.
    fn add_chunk(&mut self, file: NodeId, e: &mut TocEntry, next_offset: u64) -> Result<()> {
        let size = self.nodes[file].entry.size;
        let chunk_size = if e.chunk_size == 0 || e.chunk_offset.saturating_add(e.chunk_size) > size
        {
            // 0 (or an over-long value on the last chunk) means "to the end of the file".
            size.checked_sub(e.chunk_offset).ok_or_else(|| {
                Error::InvalidToc(format!(
                    "chunk of {:?} at file offset {} is beyond its size {size}",
                    self.path(file),
                    e.chunk_offset
                ))
            })?
        } else {
            e.chunk_size
        };
        let digest = if !e.chunk_digest.is_empty() {
            std::mem::take(&mut e.chunk_digest)
        } else if e.kind == EntryType::Reg && chunk_size == size {
            // Legacy stargz: unchunked files carry only the whole-file digest.
            std::mem::take(&mut e.digest)
        } else {
            String::new()
        };
        let chunks = &mut self.nodes[file].chunks;
        if chunks.is_empty() {
            // Most files have one chunk: growing from empty would reserve four.
            chunks.reserve_exact(1);
        }
        chunks.push(Chunk {
            offset: e.offset,
            inner_offset: e.inner_offset,
            chunk_offset: e.chunk_offset,
            chunk_size,
            next_offset,
            digest,
        });
        Ok(())
    }

    fn validate_chunks(&mut self, payload_end: u64) -> Result<()> {
        for id in 0..self.nodes.len() {
            let node = &mut self.nodes[id];
            if node.entry.kind != EntryType::Reg || node.link_target.is_some() {
                continue;
            }
            node.chunks.sort_by_key(|c| c.chunk_offset);
            let mut expected = 0;
            let mut problem = None;
            for c in &node.chunks {
                if c.chunk_offset != expected || c.chunk_size == 0 {
                    problem = Some(format!(
                        "do not tile the file (chunk at {} of size {}, expected offset {expected})",
                        c.chunk_offset, c.chunk_size
                    ));
                    break;
                }
                if c.offset >= payload_end || c.next_offset <= c.offset {
                    problem = Some(format!(
                        "include one at file offset {} with blob offset {} outside the data area (0..{payload_end})",
                        c.chunk_offset, c.offset
                    ));
                    break;
                }
                expected += c.chunk_size;
            }
            if problem.is_none() && expected != node.entry.size {
                problem = Some(format!(
                    "cover {expected} bytes but the file has {}",
                    node.entry.size
                ));
            }
            if let Some(problem) = problem {
                return Err(Error::InvalidToc(format!(
                    "chunks of {:?} {problem}",
                    self.path(id)
                )));
            }
        }
        Ok(())
    }

    /// Chunks stored in the same gzip member must not overlap: readers then
    /// verify a member in one pass, and a hostile TOC cannot make them
    /// decompress the same bytes over and over. A member must also not
    /// inflate far beyond the chunk bytes it holds (`max_member_inflation`).
    fn check_members(&mut self) -> Result<()> {
        let mut spans: Vec<(u64, u64, u64, NodeId)> = Vec::new();
        for (id, node) in self.nodes.iter().enumerate() {
            if node.link_target.is_none() {
                spans.extend(
                    node.chunks
                        .iter()
                        .map(|c| (c.offset, c.inner_offset, c.chunk_size, id)),
                );
            }
        }
        spans.sort_unstable();
        for pair in spans.windows(2) {
            let ((off_a, inner_a, size_a, _), (off_b, inner_b, _, id)) = (pair[0], pair[1]);
            if off_a == off_b && inner_a.saturating_add(size_a) > inner_b {
                return Err(Error::InvalidToc(format!(
                    "data of {:?} overlaps another chunk in the gzip member at offset {off_b}",
                    self.path(id)
                )));
            }
        }
        for member in spans.chunk_by(|a, b| a.0 == b.0) {
            let held: u64 = member.iter().map(|s| s.2).sum();
            let &(offset, inner, size, id) = member.last().expect("chunk_by yields non-empty");
            let span = inner.saturating_add(size);
            let allowed = held
                .saturating_mul(self.limits.max_member_inflation)
                .saturating_add(MEMBER_INFLATION_ALLOWANCE);
            if member.len() > 1 || inner > 0 {
                self.member_spans.insert(offset, span);
            }
            if span > allowed {
                return Err(Error::LimitExceeded(format!(
                    "the gzip member at offset {offset} must inflate {span} bytes to reach \
                     {:?}, but holds only {held} bytes of chunks (max_member_inflation {})",
                    self.path(id),
                    self.limits.max_member_inflation
                )));
            }
        }
        Ok(())
    }

    /// Points every hardlink at the node holding the data, following chains.
    /// Each chain is walked once (results are shared), so hostile TOCs with
    /// long chains or cycles cost linear time.
    fn resolve_hardlinks(&mut self) -> Result<()> {
        for start in 0..self.nodes.len() {
            if self.nodes[start].entry.kind != EntryType::Hardlink
                || self.nodes[start].link_target.is_some()
            {
                continue;
            }
            let mut chain = vec![start];
            let mut on_chain = std::collections::HashSet::from([start]);
            let target = loop {
                let last = *chain.last().expect("non-empty");
                let link = clean_name(&self.nodes[last].entry.link_name);
                let next = self.lookup(&link).ok_or_else(|| {
                    Error::InvalidToc(format!(
                        "{:?} is a hardlink but its target {link:?} is not in the TOC",
                        self.path(last)
                    ))
                })?;
                if let Some(resolved) = self.nodes[next].link_target {
                    break resolved;
                }
                if self.nodes[next].entry.kind != EntryType::Hardlink {
                    break next;
                }
                if !on_chain.insert(next) {
                    return Err(Error::InvalidToc(format!(
                        "hardlink {:?} is part of a cycle",
                        self.path(start)
                    )));
                }
                chain.push(next);
            };
            if self.nodes[target].entry.kind == EntryType::Dir {
                return Err(Error::InvalidToc(format!(
                    "hardlink {:?} points to a directory",
                    self.path(start)
                )));
            }
            for id in chain {
                self.nodes[id].link_target = Some(target);
            }
        }
        Ok(())
    }

    fn count_links(&mut self) {
        for node in &mut self.nodes {
            // A directory has "." and its entry in the parent; files start at one.
            node.nlink = if node.entry.kind == EntryType::Dir {
                2
            } else {
                1
            };
        }
        for id in 1..self.nodes.len() {
            if let Some(target) = self.nodes[id].link_target {
                self.nodes[target].nlink += 1;
            } else if self.nodes[id].entry.kind == EntryType::Dir {
                let parent = self.nodes[id].parent;
                self.nodes[parent].nlink += 1;
            }
        }
    }

    /// How many decompressed bytes of the member at blob `offset` its chunks
    /// need (`u64::MAX` when unknown).
    pub fn member_span(&self, offset: u64) -> u64 {
        self.member_spans.get(&offset).copied().unwrap_or(u64::MAX)
    }

    /// Looks up a path (any spelling: it is cleaned first).
    pub fn lookup(&self, path: &str) -> Option<NodeId> {
        let mut id = ROOT;
        for part in clean_name(path).split('/').filter(|p| !p.is_empty()) {
            id = *self.nodes[id].children.get(part)?;
        }
        Some(id)
    }
}

/// Where each data entry's compressed range surely ends: the next member that
/// starts a data chunk, or the end of the data area (spec §3.6, pass 3).
fn next_offsets(entries: &[TocEntry], payload_end: u64) -> Vec<u64> {
    let mut out = vec![0; entries.len()];
    let mut last = payload_end;
    for (i, e) in entries.iter().enumerate().rev() {
        if e.kind.is_data() {
            out[i] = last;
            if e.offset != 0 && e.inner_offset == 0 {
                last = e.offset;
            }
        }
    }
    out
}
