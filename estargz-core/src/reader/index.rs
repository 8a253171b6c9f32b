//! The in-memory file tree derived from a TOC (spec §3.6): cleaned names,
//! implicit parent directories, hardlinks, link counts, per-file chunk lists
//! and the blob range of every chunk. Inconsistent TOCs are rejected here so
//! the read path can trust the geometry.

use std::collections::{BTreeMap, HashMap};

use crate::error::{Error, Result};
use crate::tar::clean_name;
use crate::toc::{EntryType, Toc, TocEntry};

/// Longest path accepted in a TOC. Each node keeps its full path, so absurdly
/// deep names would cost memory quadratic in their length; Linux's PATH_MAX
/// is 4096, so this leaves ample room for real layers.
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

/// A file, directory, link or device in the tree.
#[derive(Debug, Clone)]
pub struct Node {
    /// Cleaned path (`""` for the root).
    pub path: String,
    /// The TOC entry (raw name kept); synthesised for implicit directories.
    pub entry: TocEntry,
    /// True for directories that have no TOC entry of their own.
    pub implicit: bool,
    pub parent: NodeId,
    pub children: BTreeMap<String, NodeId>,
    /// Link count as a file system would report it.
    pub nlink: u32,
    /// For hardlinks: the node they point to (never itself a hardlink).
    pub link_target: Option<NodeId>,
    /// For regular files: chunks sorted by `chunk_offset`.
    pub chunks: Vec<Chunk>,
}

impl Node {
    /// File name within its parent directory.
    pub fn base_name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or("")
    }
}

#[derive(Debug)]
pub struct Index {
    pub nodes: Vec<Node>,
    pub by_path: HashMap<String, NodeId>,
}

fn implicit_dir(path: String, parent: NodeId) -> Node {
    let mut entry = TocEntry::new(format!("{path}/"), EntryType::Dir);
    entry.mode = 0o755;
    Node {
        path,
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
    pub fn build(toc: &Toc, payload_end: u64) -> Result<Index> {
        let mut idx = Self::tree(&toc.entries, payload_end)?;
        idx.validate_chunks(payload_end)?;
        idx.count_links();
        Ok(idx)
    }

    /// Checks that `entries` form a tree a reader accepts (no file used as a
    /// directory, hardlinks resolvable, sane names), ignoring chunk geometry.
    /// The builder uses it so that every blob it writes can be opened.
    pub fn check_tree(entries: &[TocEntry]) -> Result<()> {
        Self::tree(entries, u64::MAX).map(|_| ())
    }

    fn tree(entries: &[TocEntry], payload_end: u64) -> Result<Index> {
        let mut idx = Index {
            nodes: vec![implicit_dir(String::new(), ROOT)],
            by_path: HashMap::from([(String::new(), ROOT)]),
        };
        let next_offsets = next_offsets(entries, payload_end);
        let mut unames: HashMap<u64, String> = HashMap::new();
        let mut gnames: HashMap<u64, String> = HashMap::new();
        let mut current_file: Option<NodeId> = None;
        for (i, e) in entries.iter().enumerate() {
            if e.kind == EntryType::Chunk {
                let file = current_file.ok_or_else(|| {
                    Error::InvalidToc(format!(
                        "chunk entry #{i} ({:?}) follows no regular file",
                        e.name
                    ))
                })?;
                idx.add_chunk(file, e, next_offsets[i])?;
                continue;
            }
            let path = clean_name(&e.name);
            if path.len() > MAX_PATH_LEN {
                return Err(Error::LimitExceeded(format!(
                    "entry #{i} has a {}-byte path (limit {MAX_PATH_LEN})",
                    path.len()
                )));
            }
            let mut entry = e.clone();
            // Re-fill user/group names the writer omitted as repeats.
            for (name, id, map) in [
                (&mut entry.user_name, e.uid, &mut unames),
                (&mut entry.group_name, e.gid, &mut gnames),
            ] {
                if name.is_empty() {
                    if let Some(n) = map.get(&id) {
                        name.clone_from(n);
                    }
                } else {
                    map.insert(id, name.clone());
                }
            }
            let id = idx.upsert(path, entry)?;
            current_file = None;
            if e.kind == EntryType::Reg {
                idx.nodes[id].chunks.clear();
                if e.size > 0 {
                    idx.add_chunk(id, e, next_offsets[i])?;
                    current_file = Some(id);
                }
            }
        }
        idx.resolve_hardlinks()?;
        Ok(idx)
    }

    /// Inserts or replaces the node at `path`, creating implicit parents.
    fn upsert(&mut self, path: String, entry: TocEntry) -> Result<NodeId> {
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
        if let Some(&id) = self.by_path.get(&path) {
            // Later duplicates replace earlier ones (children stay attached).
            let node = &mut self.nodes[id];
            node.entry = entry;
            node.implicit = false;
            node.link_target = None;
            return Ok(id);
        }
        let (parent_path, base) = match path.rsplit_once('/') {
            Some((p, b)) => (p.to_string(), b.to_string()),
            None => (String::new(), path.clone()),
        };
        let parent = self.dir_for(parent_path)?;
        let id = self.nodes.len();
        let mut node = implicit_dir(path.clone(), parent);
        node.entry = entry;
        node.implicit = false;
        self.nodes.push(node);
        self.nodes[parent].children.insert(base, id);
        self.by_path.insert(path, id);
        Ok(id)
    }

    /// Returns the directory at `path`, creating missing ones (implicit).
    /// Iterative: hostile names can be tens of thousands of components deep.
    fn dir_for(&mut self, path: String) -> Result<NodeId> {
        // Find the deepest ancestor (or the path itself) that already exists.
        let mut existing_len = path.len();
        let mut id = loop {
            if let Some(&id) = self.by_path.get(&path[..existing_len]) {
                break id;
            }
            existing_len = path[..existing_len].rfind('/').unwrap_or(0);
        };
        loop {
            if self.nodes[id].entry.kind != EntryType::Dir {
                return Err(Error::InvalidToc(format!(
                    "{:?} is used as a directory but is a {}",
                    self.nodes[id].path,
                    self.nodes[id].entry.kind.as_str()
                )));
            }
            if existing_len == path.len() {
                return Ok(id);
            }
            let start = if existing_len == 0 {
                0
            } else {
                existing_len + 1
            };
            let end = path[start..].find('/').map_or(path.len(), |i| start + i);
            let child_path = path[..end].to_string();
            let child = self.nodes.len();
            self.nodes.push(implicit_dir(child_path.clone(), id));
            self.nodes[id]
                .children
                .insert(path[start..end].to_string(), child);
            self.by_path.insert(child_path, child);
            id = child;
            existing_len = end;
        }
    }

    fn add_chunk(&mut self, file: NodeId, e: &TocEntry, next_offset: u64) -> Result<()> {
        let node = &mut self.nodes[file];
        let size = node.entry.size;
        let chunk_size = if e.chunk_size == 0 || e.chunk_offset.saturating_add(e.chunk_size) > size
        {
            // 0 (or an over-long value on the last chunk) means "to the end of the file".
            size.checked_sub(e.chunk_offset).ok_or_else(|| {
                Error::InvalidToc(format!(
                    "chunk of {:?} at file offset {} is beyond its size {size}",
                    node.path, e.chunk_offset
                ))
            })?
        } else {
            e.chunk_size
        };
        let digest = if !e.chunk_digest.is_empty() {
            e.chunk_digest.clone()
        } else if e.kind == EntryType::Reg && chunk_size == size {
            // Legacy stargz: unchunked files carry only the whole-file digest.
            e.digest.clone()
        } else {
            String::new()
        };
        node.chunks.push(Chunk {
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
        for node in &mut self.nodes {
            if node.entry.kind != EntryType::Reg || node.link_target.is_some() {
                continue;
            }
            node.chunks.sort_by_key(|c| c.chunk_offset);
            let mut expected = 0;
            for c in &node.chunks {
                if c.chunk_offset != expected || c.chunk_size == 0 {
                    return Err(Error::InvalidToc(format!(
                        "chunks of {:?} do not tile the file (chunk at {} of size {}, expected offset {expected})",
                        node.path, c.chunk_offset, c.chunk_size
                    )));
                }
                if c.offset >= payload_end || c.next_offset <= c.offset {
                    return Err(Error::InvalidToc(format!(
                        "chunk of {:?} at file offset {} has blob offset {} outside the data area (0..{payload_end})",
                        node.path, c.chunk_offset, c.offset
                    )));
                }
                expected += c.chunk_size;
            }
            if expected != node.entry.size {
                return Err(Error::InvalidToc(format!(
                    "chunks of {:?} cover {expected} bytes but the file has {}",
                    node.path, node.entry.size
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
                let next = *self.by_path.get(&link).ok_or_else(|| {
                    Error::InvalidToc(format!(
                        "{:?} is a hardlink but its target {link:?} is not in the TOC",
                        self.nodes[last].path
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
                        self.nodes[start].path
                    )));
                }
                chain.push(next);
            };
            if self.nodes[target].entry.kind == EntryType::Dir {
                return Err(Error::InvalidToc(format!(
                    "hardlink {:?} points to a directory",
                    self.nodes[start].path
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

    /// Looks up a path (any spelling; cleaned first).
    pub fn lookup(&self, path: &str) -> Option<NodeId> {
        self.by_path.get(&clean_name(path)).copied()
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
