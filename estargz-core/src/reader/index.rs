//! The in-memory file tree derived from a TOC (spec §3.6): cleaned names,
//! implicit parent directories, hardlinks, link counts, per-file chunk lists
//! and the blob range of every chunk. Inconsistent TOCs are rejected here so
//! the read path can trust the geometry.
//!
//! The tree is compact because a store holds one per layer and a hostile
//! TOC chooses its size: names live in one string arena, numbers are packed
//! into a fixed-size record per node, digests are 32 bytes, children are a
//! sorted slice of one shared id list, chunks a slice of one shared vector.
//! It is built from entries as they are decoded ([`TreeBuilder`]), so the
//! TOC never exists as a vector of entries next to it.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::tar::clean_name;
use crate::toc::{ChunkType, EntryType, Toc, TocEntry};

/// Longest path accepted in a TOC (Linux's PATH_MAX is 4096).
pub const MAX_PATH_LEN: usize = 16 << 10;

/// A node of the tree: a position in it, the root being 0. Valid only for
/// the tree (reader) that handed it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(u32);

impl NodeId {
    /// The root directory.
    pub const ROOT: NodeId = NodeId(0);

    /// The id as a number (0 for the root), e.g. to derive an inode number.
    pub fn get(self) -> u64 {
        u64::from(self.0)
    }

    fn index(self) -> usize {
        self.0 as usize
    }
}

/// The root directory is always node 0.
pub const ROOT: NodeId = NodeId::ROOT;

/// "None" in the packed `u32` fields.
const NONE: u32 = u32::MAX;
/// "No modification time" in the packed `mod_time`.
const NO_TIME: i64 = i64::MIN;

/// One data chunk of a regular file and where it lives in the blob.
#[derive(Debug, Clone)]
#[non_exhaustive]
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
    /// Digest to verify the chunk against (`None`: the TOC gave none, and
    /// the chunk cannot be read).
    pub digest: Option<Digest>,
    /// zstd:chunked `chunkType: "zeros"`: the bytes are zeros, produced
    /// (and checked against `digest`) without fetching.
    pub zeros: bool,
}

/// `len` bytes of the name arena from `start`, or `len` ids/chunks of a
/// shared list from `start`.
#[derive(Debug, Clone, Copy, Default)]
struct Span {
    start: u32,
    len: u32,
}

impl Span {
    fn range(self) -> std::ops::Range<usize> {
        self.start as usize..self.start as usize + self.len as usize
    }
}

/// Device numbers and extended attributes: rare, so kept aside.
#[derive(Debug, Default)]
struct Extra {
    dev_major: u64,
    dev_minor: u64,
    xattrs: BTreeMap<String, Vec<u8>>,
    /// zstd:chunked `accesstime` / `changetime` (`NO_TIME`: absent).
    access_time: i64,
    change_time: i64,
}

/// One node, packed. Nodes store only their own name: storing full paths
/// would let a small, highly compressible TOC of deep paths cost memory
/// quadratic in their depth. [`Index::path`] rebuilds a path when needed.
#[derive(Debug, Clone)]
struct NodeRec {
    name: Span,
    link_name: Span,
    user_name: Span,
    group_name: Span,
    children: Span,
    chunks: Span,
    size: u64,
    mod_time: i64,
    uid: u64,
    gid: u64,
    mode: u32,
    parent: u32,
    /// For hardlinks: the node holding the data (never itself a hardlink).
    link_target: u32,
    nlink: u32,
    /// Position in `Index::digests`.
    digest: u32,
    /// Position in `Index::extras`.
    extra: u32,
    kind: EntryType,
    implicit: bool,
}

impl NodeRec {
    fn implicit_dir(name: Span, parent: u32) -> NodeRec {
        NodeRec {
            name,
            link_name: Span::default(),
            user_name: Span::default(),
            group_name: Span::default(),
            children: Span::default(),
            chunks: Span::default(),
            size: 0,
            mod_time: NO_TIME,
            uid: 0,
            gid: 0,
            mode: 0o755,
            parent,
            link_target: NONE,
            nlink: 2,
            digest: NONE,
            extra: NONE,
            kind: EntryType::Dir,
            implicit: true,
        }
    }
}

/// The file tree of an open blob. Read it through [`Index::entry`].
#[derive(Debug)]
pub struct Index {
    nodes: Vec<NodeRec>,
    /// Every name, link name and owner name, each stored once.
    names: String,
    /// Children of every directory, each directory's run sorted by name.
    child_ids: Vec<u32>,
    /// Every file's chunks, each file's run sorted by file offset.
    chunks: Vec<Chunk>,
    /// Whole-file digests of regular files.
    digests: Vec<Digest>,
    extras: Vec<Extra>,
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

/// One node of a tree, with everything the TOC said about it.
#[derive(Clone, Copy)]
pub struct Entry<'a> {
    index: &'a Index,
    id: NodeId,
}

static NO_XATTRS: BTreeMap<String, Vec<u8>> = BTreeMap::new();

impl<'a> Entry<'a> {
    fn rec(&self) -> &'a NodeRec {
        &self.index.nodes[self.id.index()]
    }
    fn extra(&self) -> Option<&'a Extra> {
        self.index.extras.get(self.rec().extra as usize)
    }
    /// Which node this is.
    pub fn id(&self) -> NodeId {
        self.id
    }
    /// The base name within the parent directory (`""` for the root).
    pub fn name(&self) -> &'a str {
        self.index.name(self.rec().name)
    }
    /// The cleaned path from the root (`""` for the root), built from the
    /// node's ancestors.
    pub fn path(&self) -> String {
        self.index.path(self.id)
    }
    /// The directory holding this node (the root is its own parent).
    pub fn parent(&self) -> NodeId {
        NodeId(self.rec().parent)
    }
    /// What the TOC says the entry is (`Hardlink` for hard links).
    pub fn kind(&self) -> EntryType {
        self.rec().kind
    }
    /// True for a directory that has no TOC entry of its own.
    pub fn is_implicit(&self) -> bool {
        self.rec().implicit
    }
    /// For hard links: the node holding the data (never itself a hard link).
    pub fn hardlink_target(&self) -> Option<NodeId> {
        let t = self.rec().link_target;
        (t != NONE).then_some(NodeId(t))
    }
    /// File size (regular files).
    pub fn size(&self) -> u64 {
        self.rec().size
    }
    /// Tar header mode, verbatim.
    pub fn mode(&self) -> u32 {
        self.rec().mode
    }
    /// Owner user id.
    pub fn uid(&self) -> u64 {
        self.rec().uid
    }
    /// Owner group id.
    pub fn gid(&self) -> u64 {
        self.rec().gid
    }
    /// Owner user name (a name the writer omitted as a repeat is filled in).
    pub fn user_name(&self) -> &'a str {
        self.index.name(self.rec().user_name)
    }
    /// Owner group name (filled in like [`Entry::user_name`]).
    pub fn group_name(&self) -> &'a str {
        self.index.name(self.rec().group_name)
    }
    /// Modification time in whole Unix seconds, if the TOC has one.
    pub fn mod_time(&self) -> Option<i64> {
        let t = self.rec().mod_time;
        (t != NO_TIME).then_some(t)
    }
    /// Symlink target, or a hard link's target as the TOC wrote it.
    pub fn link_name(&self) -> &'a str {
        self.index.name(self.rec().link_name)
    }
    /// Link count as a file system would report it.
    pub fn nlink(&self) -> u32 {
        self.rec().nlink
    }
    /// Device major number.
    pub fn dev_major(&self) -> u64 {
        self.extra().map_or(0, |x| x.dev_major)
    }
    /// Device minor number.
    pub fn dev_minor(&self) -> u64 {
        self.extra().map_or(0, |x| x.dev_minor)
    }
    /// Access time in whole Unix seconds (zstd:chunked `accesstime`).
    pub fn access_time(&self) -> Option<i64> {
        self.extra()
            .map(|x| x.access_time)
            .filter(|&t| t != NO_TIME)
    }
    /// Status change time in whole Unix seconds (zstd:chunked `changetime`).
    pub fn change_time(&self) -> Option<i64> {
        self.extra()
            .map(|x| x.change_time)
            .filter(|&t| t != NO_TIME)
    }
    /// Extended attributes.
    pub fn xattrs(&self) -> &'a BTreeMap<String, Vec<u8>> {
        self.extra().map_or(&NO_XATTRS, |x| &x.xattrs)
    }
    /// Digest of the whole file content, if the TOC gives one.
    pub fn digest(&self) -> Option<&'a Digest> {
        self.index.digests.get(self.rec().digest as usize)
    }
    /// A regular file's chunks, by file offset (empty for other kinds and
    /// for hard links: their data is the target's).
    pub fn chunks(&self) -> &'a [Chunk] {
        &self.index.chunks[self.rec().chunks.range()]
    }
    /// Directory entries (name, id), in byte order of their names.
    pub fn children(
        &self,
    ) -> impl DoubleEndedIterator<Item = (&'a str, NodeId)> + ExactSizeIterator + 'a {
        let index = self.index;
        index.child_ids[self.rec().children.range()]
            .iter()
            .map(move |&c| (index.name(index.nodes[c as usize].name), NodeId(c)))
    }
    /// How many directory entries there are.
    pub fn child_count(&self) -> usize {
        self.rec().children.len as usize
    }
    /// The directory entry called `name`, if any.
    pub fn child(&self, name: &str) -> Option<NodeId> {
        self.index.child(self.id, name)
    }
}

impl std::fmt::Debug for Entry<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("id", &self.id)
            .field("name", &self.name())
            .field("kind", &self.kind())
            .finish_non_exhaustive()
    }
}

impl Index {
    /// Builds the tree. `payload_end` is where the data members end (TOC offset
    /// or the footer start); chunk ranges must lie before it.
    pub fn build(toc: &Toc, payload_end: u64) -> Result<Index> {
        let mut tree = TreeBuilder::new(&IndexLimits::UNLIMITED);
        for entry in &toc.entries {
            tree.add(entry)?;
        }
        tree.finish(payload_end)
    }

    /// Checks that `entries` form a tree a reader accepts with default
    /// options (no file used as a directory, hardlinks resolvable, sane
    /// names, default limits), ignoring chunk geometry. The builder uses it
    /// so that every blob it writes can be opened.
    pub fn check_tree(entries: &[TocEntry]) -> Result<()> {
        let mut tree = TreeBuilder::new(&IndexLimits::DEFAULT);
        for entry in entries {
            tree.add(entry)?;
        }
        tree.finish_tree().map(|_| ())
    }

    /// How many nodes the tree has (the root and implicit directories included).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always false: a tree has at least its root.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The node `id`. Panics if `id` is not of this tree.
    pub fn entry(&self, id: NodeId) -> Entry<'_> {
        assert!(id.index() < self.nodes.len(), "{id:?} is not of this tree");
        Entry { index: self, id }
    }

    /// Every node, the root first.
    pub fn entries(&self) -> impl ExactSizeIterator<Item = Entry<'_>> + '_ {
        (0..self.nodes.len() as u32).map(move |i| Entry {
            index: self,
            id: NodeId(i),
        })
    }

    /// The id numbered `n` ([`NodeId::get`]), if this tree has it.
    pub fn node_id(&self, n: u64) -> Option<NodeId> {
        (n < self.nodes.len() as u64).then_some(NodeId(n as u32))
    }

    fn name(&self, span: Span) -> &str {
        &self.names[span.range()]
    }

    /// The cleaned path of a node (`""` for the root), built from its ancestors.
    pub fn path(&self, id: NodeId) -> String {
        let mut names = Vec::new();
        let mut cur = id;
        while cur != ROOT {
            let rec = &self.nodes[cur.index()];
            names.push(self.name(rec.name));
            cur = NodeId(rec.parent);
        }
        names.reverse();
        names.join("/")
    }

    /// The child of `dir` called `name` (a binary search of its sorted run).
    fn child(&self, dir: NodeId, name: &str) -> Option<NodeId> {
        let run = &self.child_ids[self.nodes[dir.index()].children.range()];
        run.binary_search_by(|&c| {
            self.name(self.nodes[c as usize].name)
                .as_bytes()
                .cmp(name.as_bytes())
        })
        .ok()
        .map(|i| NodeId(run[i]))
    }

    /// Looks up a path (any spelling: it is cleaned first).
    pub fn lookup(&self, path: &str) -> Option<NodeId> {
        let mut id = ROOT;
        for part in clean_name(path).split('/').filter(|p| !p.is_empty()) {
            id = self.child(id, part)?;
        }
        Some(id)
    }

    /// Follows a hard link to the node holding the data.
    pub fn resolve(&self, id: NodeId) -> NodeId {
        self.entry(id).hardlink_target().unwrap_or(id)
    }

    /// How many decompressed bytes of the member at blob `offset` its chunks
    /// need (`u64::MAX` when unknown).
    pub fn member_span(&self, offset: u64) -> u64 {
        self.member_spans.get(&offset).copied().unwrap_or(u64::MAX)
    }

    /// Every chunk of every file holding data (hard links excluded), with
    /// its file.
    pub fn all_chunks(&self) -> impl Iterator<Item = (NodeId, &Chunk)> + '_ {
        self.entries()
            .filter(|e| e.hardlink_target().is_none())
            .flat_map(|e| e.chunks().iter().map(move |c| (e.id, c)))
    }

    fn kind_error(&self, id: u32) -> Error {
        Error::InvalidToc(format!(
            "{:?} is used as a directory but is a {}",
            self.path(NodeId(id)),
            self.nodes[id as usize].kind.as_str()
        ))
    }
}

/// Builds an [`Index`] from TOC entries fed one at a time, in TOC order.
pub(crate) struct TreeBuilder {
    idx: Index,
    /// hash(parent, name) → the newest node with that hash; `same_hash`
    /// chains older ones. Names are compared in the arena, so no key
    /// strings are held; the hasher is seeded per tree, so a TOC cannot
    /// choose colliding names.
    by_name: HashMap<u64, u32>,
    same_hash: Vec<u32>,
    hasher: RandomState,
    /// Owner names stored once each (most layers have a handful).
    owners: HashMap<String, Span>,
    /// The last user / group name given for an id, to re-fill repeats the
    /// writer omitted.
    user_names: HashMap<u64, Span>,
    group_names: HashMap<u64, Span>,
    /// The regular file that chunk entries continue.
    current_file: Option<u32>,
    /// Entries seen, for error messages.
    seen: usize,
    /// Where a data entry without chunks (an empty file) starts a member:
    /// (chunks added before it, offset); see [`TreeBuilder::set_next_offsets`].
    marks: Vec<(usize, u64)>,
    /// Per chunk added: its file's zstd:chunked `endOffset` (0: none).
    end_offsets: Vec<u64>,
    /// The current file's `endOffset`, for its chunk entries.
    current_end: u64,
}

impl TreeBuilder {
    pub(crate) fn new(limits: &IndexLimits) -> TreeBuilder {
        TreeBuilder {
            idx: Index {
                nodes: vec![NodeRec::implicit_dir(Span::default(), 0)],
                names: String::new(),
                child_ids: Vec::new(),
                chunks: Vec::new(),
                digests: Vec::new(),
                extras: Vec::new(),
                limits: *limits,
                member_spans: HashMap::new(),
            },
            by_name: HashMap::new(),
            same_hash: vec![NONE],
            hasher: RandomState::new(),
            owners: HashMap::new(),
            user_names: HashMap::new(),
            group_names: HashMap::new(),
            current_file: None,
            seen: 0,
            marks: Vec::new(),
            end_offsets: Vec::new(),
            current_end: 0,
        }
    }

    /// Adds the next TOC entry.
    pub(crate) fn add(&mut self, entry: &TocEntry) -> Result<()> {
        let i = self.seen;
        self.seen += 1;
        if entry.kind == EntryType::Chunk {
            let file = self.current_file.ok_or_else(|| {
                Error::InvalidToc(format!(
                    "chunk entry #{i} ({:?}) follows no regular file",
                    entry.name
                ))
            })?;
            return self.add_chunk(file, entry, false);
        }
        let path = clean_name(&entry.name);
        if path.len() > MAX_PATH_LEN {
            return Err(Error::LimitExceeded(format!(
                "entry #{i} has a {}-byte path (limit {MAX_PATH_LEN})",
                path.len()
            )));
        }
        let depth = path.split('/').filter(|p| !p.is_empty()).count() as u64;
        if depth > self.idx.limits.max_path_depth {
            return Err(Error::LimitExceeded(format!(
                "entry #{i} has a path {depth} directories deep (max_path_depth {})",
                self.idx.limits.max_path_depth
            )));
        }
        let id = self.upsert(&path, entry)?;
        self.fill(id, entry)?;
        self.current_file = None;
        if entry.kind == EntryType::Reg && entry.size > 0 {
            // The first chunk's fields live in the file's entry.
            self.add_chunk(id, entry, true)?;
            self.current_file = Some(id);
        } else if entry.kind.is_data() && entry.offset != 0 && entry.inner_offset == 0 {
            self.marks.push((self.idx.chunks.len(), entry.offset));
        }
        Ok(())
    }

    /// Stores `s` in the arena.
    fn store(&mut self, s: &str) -> Result<Span> {
        let start = self.idx.names.len();
        if start + s.len() > u32::MAX as usize {
            return Err(Error::LimitExceeded(
                "the TOC's names exceed 4 GiB".to_string(),
            ));
        }
        self.idx.names.push_str(s);
        Ok(Span {
            start: start as u32,
            len: s.len() as u32,
        })
    }

    /// An owner name, stored once however many entries use it; an empty
    /// name takes the last one given for the same id.
    fn owner(&mut self, name: &str, id: u64, user: bool) -> Result<Span> {
        let last = if user {
            &self.user_names
        } else {
            &self.group_names
        };
        if name.is_empty() {
            return Ok(last.get(&id).copied().unwrap_or_default());
        }
        let span = match self.owners.get(name) {
            Some(&span) => span,
            None => {
                let span = self.store(name)?;
                self.owners.insert(name.to_string(), span);
                span
            }
        };
        if user {
            self.user_names.insert(id, span);
        } else {
            self.group_names.insert(id, span);
        }
        Ok(span)
    }

    /// Copies what `entry` says into node `id` (a later duplicate replaces
    /// an earlier one; the node keeps its name, parent and children).
    fn fill(&mut self, id: u32, entry: &TocEntry) -> Result<()> {
        let link_name = self.store(&entry.link_name)?;
        let user_name = self.owner(&entry.user_name, entry.uid, true)?;
        let group_name = self.owner(&entry.group_name, entry.gid, false)?;
        let digest = if entry.kind == EntryType::Reg && !entry.digest.is_empty() {
            self.idx
                .digests
                .push(parse_digest(&entry.digest, &entry.name)?);
            (self.idx.digests.len() - 1) as u32
        } else {
            NONE
        };
        let extra = if entry.dev_major != 0
            || entry.dev_minor != 0
            || !entry.xattrs.is_empty()
            || entry.access_time.is_some()
            || entry.change_time.is_some()
        {
            self.idx.extras.push(Extra {
                dev_major: entry.dev_major,
                dev_minor: entry.dev_minor,
                xattrs: entry.xattrs.clone(),
                access_time: entry.access_time.unwrap_or(NO_TIME),
                change_time: entry.change_time.unwrap_or(NO_TIME),
            });
            (self.idx.extras.len() - 1) as u32
        } else {
            NONE
        };
        let chunks_start = self.idx.chunks.len() as u32;
        let rec = &mut self.idx.nodes[id as usize];
        rec.link_name = link_name;
        rec.user_name = user_name;
        rec.group_name = group_name;
        rec.chunks = Span {
            start: chunks_start,
            len: 0,
        };
        rec.size = entry.size;
        rec.mod_time = entry.mod_time.unwrap_or(NO_TIME);
        rec.uid = entry.uid;
        rec.gid = entry.gid;
        rec.mode = entry.mode;
        rec.link_target = NONE;
        rec.digest = digest;
        rec.extra = extra;
        rec.kind = entry.kind;
        rec.implicit = false;
        Ok(())
    }

    /// Inserts or finds the node at the cleaned `path`, creating implicit parents.
    fn upsert(&mut self, path: &str, entry: &TocEntry) -> Result<u32> {
        if path.is_empty() {
            // An explicit root entry describes the root itself.
            if entry.kind != EntryType::Dir {
                return Err(Error::InvalidToc(format!(
                    "entry {:?} names the root but is a {}",
                    entry.name,
                    entry.kind.as_str()
                )));
            }
            return Ok(0);
        }
        let (parent_path, base) = path.rsplit_once('/').unwrap_or(("", path));
        let parent = self.dir_for(parent_path)?;
        match self.find(parent, base) {
            Some(id) => Ok(id),
            None => self.new_node(parent, base),
        }
    }

    /// Returns the directory at cleaned `path`, creating missing ones (implicit).
    fn dir_for(&mut self, path: &str) -> Result<u32> {
        let mut id = 0;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            if self.idx.nodes[id as usize].kind != EntryType::Dir {
                return Err(self.idx.kind_error(id));
            }
            id = match self.find(id, part) {
                Some(child) => child,
                None => self.new_node(id, part)?,
            };
        }
        if self.idx.nodes[id as usize].kind != EntryType::Dir {
            return Err(self.idx.kind_error(id));
        }
        Ok(id)
    }

    fn key(&self, parent: u32, name: &str) -> u64 {
        self.hasher.hash_one((parent, name))
    }

    fn find(&self, parent: u32, name: &str) -> Option<u32> {
        let mut id = *self.by_name.get(&self.key(parent, name))?;
        while id != NONE {
            let rec = &self.idx.nodes[id as usize];
            if rec.parent == parent && self.idx.name(rec.name) == name {
                return Some(id);
            }
            id = self.same_hash[id as usize];
        }
        None
    }

    /// A new implicit directory `name` in `parent` (an entry then fills it).
    fn new_node(&mut self, parent: u32, name: &str) -> Result<u32> {
        let id = self.idx.nodes.len();
        if id as u64 >= self.idx.limits.max_nodes || id >= NONE as usize {
            return Err(Error::LimitExceeded(format!(
                "the TOC makes more than {} files and directories (max_entries)",
                self.idx.limits.max_nodes.min(u64::from(NONE))
            )));
        }
        let id = id as u32;
        let span = self.store(name)?;
        self.idx.nodes.push(NodeRec::implicit_dir(span, parent));
        let key = self.key(parent, name);
        let older = self.by_name.insert(key, id).unwrap_or(NONE);
        self.same_hash.push(older);
        Ok(id)
    }

    /// Appends the chunk `e` describes (a chunk entry, or the first chunk
    /// of a file when `first`) to `file`, whose chunks are the last ones added.
    /// Only a file's own entry may fall back to the whole-file digest.
    fn add_chunk(&mut self, file: u32, e: &TocEntry, first: bool) -> Result<()> {
        let size = self.idx.nodes[file as usize].size;
        let chunk_size = if e.chunk_size == 0 || e.chunk_offset.saturating_add(e.chunk_size) > size
        {
            // 0 (or an over-long value on the last chunk) means "to the end of the file".
            size.checked_sub(e.chunk_offset).ok_or_else(|| {
                Error::InvalidToc(format!(
                    "chunk of {:?} at file offset {} is beyond its size {size}",
                    self.idx.path(NodeId(file)),
                    e.chunk_offset
                ))
            })?
        } else {
            e.chunk_size
        };
        let digest = if !e.chunk_digest.is_empty() {
            Some(parse_digest(&e.chunk_digest, &e.name)?)
        } else if first && chunk_size == size && !e.digest.is_empty() {
            // Legacy stargz: unchunked files carry only the whole-file digest.
            Some(parse_digest(&e.digest, &e.name)?)
        } else {
            None
        };
        if self.idx.chunks.len() >= NONE as usize {
            return Err(Error::LimitExceeded(
                "the TOC has over 4 billion chunks".into(),
            ));
        }
        self.idx.chunks.push(Chunk {
            offset: e.offset,
            inner_offset: e.inner_offset,
            chunk_offset: e.chunk_offset,
            chunk_size,
            next_offset: 0,
            digest,
            zeros: e.chunk_type == ChunkType::Zeros,
        });
        if first {
            self.current_end = e.end_offset;
        }
        self.end_offsets.push(self.current_end);
        self.idx.nodes[file as usize].chunks.len += 1;
        Ok(())
    }

    /// Finishes the tree and checks the chunk geometry against a data area
    /// ending at `payload_end`.
    pub(crate) fn finish(mut self, payload_end: u64) -> Result<Index> {
        self.set_next_offsets(payload_end);
        let mut idx = self.finish_tree()?;
        idx.validate_chunks(payload_end)?;
        idx.check_members()?;
        idx.count_links();
        Ok(idx)
    }

    /// Where each chunk's compressed range surely ends: the next member that
    /// starts a data chunk, or the end of the data area (spec §3.6, pass 3).
    /// Chunks are in TOC order; `marks` are the empty files in between.
    fn set_next_offsets(&mut self, payload_end: u64) {
        let mut last = payload_end;
        let mut marks = self.marks.len();
        for j in (0..self.idx.chunks.len()).rev() {
            while marks > 0 && self.marks[marks - 1].0 > j {
                marks -= 1;
                last = self.marks[marks].1;
            }
            let c = &mut self.idx.chunks[j];
            c.next_offset = last;
            // zstd:chunked says where a file's frames end (the tar header
            // frames after it need not be fetched).
            let end = self.end_offsets[j];
            if end > c.offset && end < last {
                c.next_offset = end;
            }
            if c.offset != 0 && c.inner_offset == 0 {
                last = c.offset;
            }
        }
    }

    /// Sorts children and chunks, resolves hard links; the lookup tables
    /// of the build are dropped.
    fn finish_tree(self) -> Result<Index> {
        let TreeBuilder {
            mut idx,
            by_name,
            same_hash,
            owners,
            ..
        } = self;
        drop((by_name, same_hash, owners));
        idx.names.shrink_to_fit();
        idx.nodes.shrink_to_fit();
        idx.chunks.shrink_to_fit();
        idx.link_children();
        for rec in &idx.nodes {
            idx.chunks[rec.chunks.range()].sort_by_key(|c| c.chunk_offset);
        }
        idx.resolve_hardlinks()?;
        Ok(idx)
    }
}

fn parse_digest(d: &str, name: &str) -> Result<Digest> {
    d.parse()
        .map_err(|_| Error::InvalidToc(format!("entry {name:?}: {d:?} is not a sha256 digest")))
}

impl Index {
    /// Fills `child_ids`: each directory's children as one run sorted by name.
    fn link_children(&mut self) {
        let n = self.nodes.len();
        let mut counts = vec![0u32; n];
        for rec in &self.nodes[1..] {
            counts[rec.parent as usize] += 1;
        }
        let mut start = 0u32;
        for (rec, &count) in self.nodes.iter_mut().zip(&counts) {
            rec.children = Span { start, len: 0 };
            start += count;
        }
        drop(counts);
        self.child_ids = vec![0; start as usize];
        for id in 1..n {
            let parent = self.nodes[id].parent as usize;
            let run = &mut self.nodes[parent].children;
            self.child_ids[(run.start + run.len) as usize] = id as u32;
            run.len += 1;
        }
        let (nodes, names) = (&self.nodes, &self.names);
        for rec in nodes {
            self.child_ids[rec.children.range()].sort_unstable_by(|&a, &b| {
                names[nodes[a as usize].name.range()]
                    .as_bytes()
                    .cmp(names[nodes[b as usize].name.range()].as_bytes())
            });
        }
    }

    fn validate_chunks(&self, payload_end: u64) -> Result<()> {
        for (id, rec) in self.nodes.iter().enumerate() {
            if rec.kind != EntryType::Reg || rec.link_target != NONE {
                continue;
            }
            let mut expected = 0;
            let mut problem = None;
            for c in &self.chunks[rec.chunks.range()] {
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
            if problem.is_none() && expected != rec.size {
                problem = Some(format!(
                    "cover {expected} bytes but the file has {}",
                    rec.size
                ));
            }
            if let Some(problem) = problem {
                return Err(Error::InvalidToc(format!(
                    "chunks of {:?} {problem}",
                    self.path(NodeId(id as u32))
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
        let mut spans: Vec<(u64, u64, u64, NodeId)> = self
            .all_chunks()
            .map(|(id, c)| (c.offset, c.inner_offset, c.chunk_size, id))
            .collect();
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
        for start in 0..self.nodes.len() as u32 {
            let rec = &self.nodes[start as usize];
            if rec.kind != EntryType::Hardlink || rec.link_target != NONE {
                continue;
            }
            let mut chain = vec![start];
            let mut on_chain = std::collections::HashSet::from([start]);
            let target = loop {
                let last = *chain.last().expect("non-empty");
                let link = clean_name(self.name(self.nodes[last as usize].link_name));
                let next = self.lookup(&link).ok_or_else(|| {
                    Error::InvalidToc(format!(
                        "{:?} is a hardlink but its target {link:?} is not in the TOC",
                        self.path(NodeId(last))
                    ))
                })?;
                let next_rec = &self.nodes[next.index()];
                if next_rec.link_target != NONE {
                    break next_rec.link_target;
                }
                if next_rec.kind != EntryType::Hardlink {
                    break next.0;
                }
                if !on_chain.insert(next.0) {
                    return Err(Error::InvalidToc(format!(
                        "hardlink {:?} is part of a cycle",
                        self.path(NodeId(start))
                    )));
                }
                chain.push(next.0);
            };
            if self.nodes[target as usize].kind == EntryType::Dir {
                return Err(Error::InvalidToc(format!(
                    "hardlink {:?} points to a directory",
                    self.path(NodeId(start))
                )));
            }
            for id in chain {
                self.nodes[id as usize].link_target = target;
            }
        }
        Ok(())
    }

    fn count_links(&mut self) {
        for rec in &mut self.nodes {
            // A directory has "." and its entry in the parent; files start at one.
            rec.nlink = if rec.kind == EntryType::Dir { 2 } else { 1 };
        }
        for id in 1..self.nodes.len() {
            let rec = &self.nodes[id];
            if rec.link_target != NONE {
                let target = rec.link_target as usize;
                self.nodes[target].nlink += 1;
            } else if rec.kind == EntryType::Dir {
                let parent = rec.parent as usize;
                self.nodes[parent].nlink += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, size: u64, offset: u64, digest_byte: u8) -> TocEntry {
        let mut e = TocEntry::new(name, EntryType::Reg);
        e.size = size;
        e.offset = offset;
        e.chunk_digest = Digest::from_bytes([digest_byte; 32]).to_string();
        e
    }

    fn build(entries: Vec<TocEntry>, payload_end: u64) -> Result<Index> {
        Index::build(
            &Toc {
                version: 1,
                entries,
                tar_split_digest: String::new(),
            },
            payload_end,
        )
    }

    #[test]
    fn an_empty_file_with_an_offset_ends_the_chunk_before_it() {
        let mut empty = TocEntry::new("e", EntryType::Reg);
        empty.offset = 200;
        let idx = build(
            vec![file("a", 10, 100, 1), empty, file("b", 5, 300, 2)],
            400,
        )
        .unwrap();
        let next = |p: &str| idx.entry(idx.lookup(p).unwrap()).chunks()[0].next_offset;
        assert_eq!((next("a"), next("b")), (200, 400));
    }

    #[test]
    fn later_duplicates_replace_earlier_ones_without_their_chunks() {
        let mut dir = TocEntry::new("d/", EntryType::Dir);
        dir.mode = 0o700;
        let idx = build(
            vec![
                file("d/x", 10, 100, 1),
                file("f", 10, 200, 2),
                dir,
                TocEntry::new("f", EntryType::Symlink),
            ],
            400,
        )
        .unwrap();
        let d = idx.entry(idx.lookup("d").unwrap());
        assert_eq!(
            (d.kind(), d.mode(), d.is_implicit()),
            (EntryType::Dir, 0o700, false)
        );
        assert_eq!(d.children().map(|(n, _)| n).collect::<Vec<_>>(), ["x"]);
        let f = idx.entry(idx.lookup("./f").unwrap());
        assert_eq!((f.kind(), f.chunks().len()), (EntryType::Symlink, 0));
        assert_eq!(idx.all_chunks().count(), 1);
    }

    #[test]
    fn children_are_found_and_listed_in_byte_order() {
        // Many names in one directory and the same names elsewhere: every
        // lookup must compare names, not only their hashes.
        let mut entries = Vec::new();
        for dir in ["p", "q"] {
            for i in (0..500).rev() {
                entries.push(TocEntry::new(format!("{dir}/n{i}"), EntryType::Fifo));
            }
        }
        let idx = build(entries, 1).unwrap();
        for dir in ["p", "q"] {
            let d = idx.entry(idx.lookup(dir).unwrap());
            let names: Vec<&str> = d.children().map(|(n, _)| n).collect();
            let mut sorted = names.clone();
            sorted.sort_unstable();
            assert_eq!((names.len(), &names), (500, &sorted));
            for i in 0..500 {
                let id = idx.lookup(&format!("{dir}/n{i}")).unwrap();
                assert_eq!(idx.path(id), format!("{dir}/n{i}"));
            }
            assert_eq!(d.child("n500"), None);
        }
        assert_eq!(idx.len(), 1 + 2 + 1000);
    }
}
