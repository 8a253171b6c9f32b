//! The Additional Layer Store namespace, as plain Rust (tested without a
//! mount, as [`ReadOnlyFs`]; `store_adapter` holds its fuser hooks):
//!
//! ```text
//! /<base64(image ref)>/<digest>/{diff/, info, blob}   (+ `use`, never there)
//! ```
//!
//! * [`names`]: parsing the two path components.
//! * [`resolve`]: image cache and layer resolution, both keying schemes.
//! * [`info`]: the `info` JSON.
//! * [`flight`]: one resolution shared by all who wait for it.
//!
//! No lock is held across network I/O: a layer is resolved on a thread of
//! its own and callers wait for it with a deadline (`resolve_timeout`), so
//! a stuck registry costs its own lookups an `EIO`, never anyone else's
//! answer; [`Store::needs_resolution`] tells the FUSE glue which requests
//! may wait, so they do not occupy its workers.
//!
//! Inode numbers: the root is 1, reference directories count up from 2
//! below 2^32; everything of one layer lives under its slot number in the
//! high 32 bits (low part 0 = the layer directory, `u32::MAX` = `info`,
//! `u32::MAX - 1` = `blob`, anything else = that inode of the layer's
//! [`LayerFs`], whose numbers come from the TOC). So a layer unloaded and
//! resolved again keeps every inode number.
//!
//! Lifetimes: a layer is loaded by the first lookup that needs its data,
//! counted up by `create(use)` and down by `rmdir(<digest>)`, unloaded when
//! its count is zero (at once on the last release, after an idle time if
//! it was never used), and forgotten entirely once the kernel has forgotten
//! all its inodes too.

pub mod info;
pub mod names;
pub mod resolve;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use estargz_core::remote::{Image, Reference};
use estargz_core::Reader;

use crate::layerfs;
use crate::record::{AccessRecorder, LayerKey};
use crate::rofs::{
    walk_listing, Attr, DirEntry, FsError, FsResult, Kind, ReadOnlyFs, WalkEntry, BLOCK_SIZE,
};
use crate::warm::{WarmOptions, WarmTicket, Warmer};
use estargz_core::flight::Flight;
use resolve::{ResolvedLayer, Resolver};

pub use crate::rofs::ROOT_INO;
const SLOT_SHIFT: u32 = 32;
const LOW_MASK: u64 = (1 << SLOT_SHIFT) - 1;
const LOW_LAYER_DIR: u64 = 0;
const LOW_INFO: u64 = LOW_MASK;
const LOW_BLOB: u64 = LOW_MASK - 1;

pub const USE_FILE: &str = "use";
pub const DIFF_DIR: &str = "diff";
pub const INFO_FILE: &str = "info";
pub const BLOB_FILE: &str = "blob";

/// What an inode number names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ino {
    Root,
    RefDir(u64),
    LayerDir(u64),
    Info(u64),
    Blob(u64),
    /// Slot and the layer's own inode number (1 = `diff`).
    Diff(u64, u64),
}

impl Ino {
    pub fn decode(ino: u64) -> Ino {
        let slot = ino >> SLOT_SHIFT;
        let low = ino & LOW_MASK;
        match (slot, low) {
            (0, ROOT_INO) => Ino::Root,
            (0, _) => Ino::RefDir(ino),
            (s, LOW_LAYER_DIR) => Ino::LayerDir(s),
            (s, LOW_INFO) => Ino::Info(s),
            (s, LOW_BLOB) => Ino::Blob(s),
            (s, l) => Ino::Diff(s, l),
        }
    }

    pub fn encode(self) -> u64 {
        let at = |slot: u64, low: u64| (slot << SLOT_SHIFT) | low;
        match self {
            Ino::Root => ROOT_INO,
            Ino::RefDir(i) => i,
            Ino::LayerDir(s) => at(s, LOW_LAYER_DIR),
            Ino::Info(s) => at(s, LOW_INFO),
            Ino::Blob(s) => at(s, LOW_BLOB),
            Ino::Diff(s, l) => at(s, l),
        }
    }

    /// Whether the answer can change (namespace) or never will (layer).
    pub fn is_layer_content(self) -> bool {
        matches!(self, Ino::Diff(..) | Ino::Info(_) | Ino::Blob(_))
    }
}

/// How the store serves and unloads layers.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StoreOptions {
    /// Unused layers (looked up, never `use`d) are unloaded after this.
    pub idle_unload: Duration,
    /// Longest a request waits for its layer to be resolved (EIO after).
    pub resolve_timeout: Duration,
    /// Prefetch and background fetch of resolved layers.
    pub warm: WarmOptions,
    /// Records the files opened in every layer served.
    pub record: Option<Arc<AccessRecorder>>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            idle_unload: Duration::from_secs(120),
            resolve_timeout: Duration::from_secs(30),
            warm: WarmOptions::default(),
            record: None,
        }
    }
}

estargz_core::option_setters!(StoreOptions {
    idle_unload: Duration,
    resolve_timeout: Duration,
    warm: WarmOptions,
    record: Option<Arc<AccessRecorder>>,
});

type LoadAnswer = FsResult<Arc<ResolvedLayer>>;

/// Where a slot's layer is.
enum Load {
    Unloaded,
    /// Being resolved; requests wait on the flight.
    Loading(Arc<Flight<LoadAnswer>>),
    /// Served; dropping the ticket stops its warm-up.
    Ready {
        layer: Arc<ResolvedLayer>,
        _warm: WarmTicket,
    },
}

struct RefNode {
    name: String,
    reference: Reference,
    nlookup: u64,
}

/// One (reference, digest) layer directory.
struct Slot {
    ref_name: String,
    reference: Reference,
    digest: String,
    /// Kernel references to any inode of this slot.
    nlookup: u64,
    /// containers/storage users (`use` minus releases).
    uses: u64,
    last_access: Instant,
    load: Load,
}

#[derive(Default)]
struct State {
    next_ref_ino: u64,
    refs: HashMap<u64, RefNode>,
    ref_by_name: HashMap<String, u64>,
    next_slot: u64,
    slots: HashMap<u64, Slot>,
    slot_by_key: HashMap<(String, String), u64>,
    /// Images (reference@manifest digest) whose command was prefetched,
    /// and when.
    commands_prefetched: HashMap<String, Instant>,
}

/// How long an image's command prefetch is not made again.
const COMMAND_PREFETCH_TTL: Duration = Duration::from_secs(600);

impl State {
    /// The readers of every layer of `image` when all of them are served
    /// (topmost first), and only the first time within
    /// [`COMMAND_PREFETCH_TTL`]: then its command can be prefetched.
    fn complete_image(&mut self, image: &Arc<Image>) -> Option<Vec<Arc<Reader>>> {
        let count = image.manifest.layers.len();
        let mut layers: Vec<Option<Arc<Reader>>> = vec![None; count];
        for slot in self.slots.values() {
            if let Load::Ready { layer, .. } = &slot.load {
                let same = Arc::ptr_eq(&layer.image, image)
                    || (layer.image.manifest_digest == image.manifest_digest
                        && layer.image.requested.to_string() == image.requested.to_string());
                if same && layer.index < count {
                    layers[layer.index] = Some(layer.fs.reader().clone());
                }
            }
        }
        let mut layers: Vec<Arc<Reader>> = layers.into_iter().collect::<Option<_>>()?;
        self.commands_prefetched
            .retain(|_, at| at.elapsed() < COMMAND_PREFETCH_TTL);
        if self
            .commands_prefetched
            .insert(
                format!("{}@{}", image.requested, image.manifest_digest),
                Instant::now(),
            )
            .is_some()
        {
            return None;
        }
        layers.reverse();
        Some(layers)
    }
}

/// Counters for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    pub refs: usize,
    pub slots: usize,
    pub loaded: usize,
    pub uses: u64,
}

pub struct Store {
    resolver: Arc<Resolver>,
    opts: StoreOptions,
    warmer: Arc<Warmer>,
    /// Never held across network I/O.
    state: Arc<Mutex<State>>,
    uid: u32,
    gid: u32,
    mtime: i64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn errno_of(e: &estargz_core::Error) -> i32 {
    match e {
        // A layer over a resource limit is an I/O error of that layer (the
        // log line names the limit); EFBIG would puzzle a lookup's caller.
        estargz_core::Error::LimitExceeded(_) => libc::EIO,
        _ => e.errno(),
    }
}

fn no_entry() -> FsError {
    FsError::new(libc::ENOENT, "no such entry")
}

fn no_layer() -> FsError {
    FsError::new(libc::ENOENT, "no such layer directory")
}

fn read_only() -> FsError {
    FsError::new(
        libc::EROFS,
        "only `use` and layer releases change the store",
    )
}

fn not_dir() -> FsError {
    FsError::new(libc::ENOTDIR, "not a directory")
}

/// Store directories come and go with the registry (as stargz-store: 1 s).
const NAMESPACE_TTL: Duration = Duration::from_secs(1);

impl Store {
    pub fn new(resolver: Resolver, opts: StoreOptions) -> Store {
        // SAFETY: plain getters.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        Store {
            resolver: Arc::new(resolver),
            warmer: Arc::new(Warmer::new(opts.warm.clone())),
            opts,
            state: Arc::new(Mutex::new(State {
                next_ref_ino: 2,
                next_slot: 1,
                ..Default::default()
            })),
            uid,
            gid,
            mtime: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64),
        }
    }

    pub fn resolver(&self) -> &Resolver {
        &self.resolver
    }

    pub fn stats(&self) -> StoreStats {
        let st = lock(&self.state);
        StoreStats {
            refs: st.refs.len(),
            slots: st.slots.len(),
            loaded: st
                .slots
                .values()
                .filter(|s| !matches!(s.load, Load::Unloaded))
                .count(),
            uses: st.slots.values().map(|s| s.uses).sum(),
        }
    }

    fn dir_attr(&self, ino: u64) -> Attr {
        Attr {
            ino,
            size: u64::from(BLOCK_SIZE),
            blocks: 8,
            mtime: self.mtime,
            atime: self.mtime,
            ctime: self.mtime,
            kind: Kind::Directory,
            // Owner only, as stargz-store: the mount is allow_other and
            // suid, and any lookup makes us fetch an image with our
            // credentials, so other users must not get in at all.
            perm: 0o500,
            nlink: 2,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
        }
    }

    fn file_attr(&self, ino: u64, size: u64) -> Attr {
        Attr {
            ino,
            size,
            blocks: size.div_ceil(512),
            kind: Kind::RegularFile,
            perm: 0o400,
            nlink: 1,
            ..self.dir_attr(ino)
        }
    }

    /// The loaded layer of `slot`, resolving it if needed: the resolution
    /// runs on a thread of its own, shared by every request for the slot,
    /// and requests wait for it until `resolve_timeout` after it started. Failures are logged
    /// with their reason and not remembered: the next access retries.
    fn layer(&self, slot: u64) -> FsResult<Arc<ResolvedLayer>> {
        let flight = {
            let mut st = lock(&self.state);
            let s = st.slots.get_mut(&slot).ok_or_else(no_layer)?;
            s.last_access = Instant::now();
            match &s.load {
                Load::Ready { layer, .. } => return Ok(layer.clone()),
                Load::Loading(f) => f.clone(),
                Load::Unloaded => {
                    let f = Arc::new(Flight::new());
                    s.load = Load::Loading(f.clone());
                    let job = Resolution {
                        slot,
                        reference: s.reference.clone(),
                        digest: s.digest.clone(),
                        flight: f.clone(),
                        resolver: self.resolver.clone(),
                        state: self.state.clone(),
                        warmer: self.warmer.clone(),
                        record: self.opts.record.clone(),
                    };
                    let spawned = std::thread::Builder::new()
                        .name("resolve".into())
                        .spawn(move || job.run());
                    if let Err(e) = spawned {
                        s.load = Load::Unloaded;
                        return Err(
                            FsError::new(libc::EAGAIN, "cannot start a resolution thread")
                                .caused_by(e)
                                .logged_at(log::Level::Warn),
                        );
                    }
                    f
                }
            }
        };
        // The deadline counts from the start of the resolution, not of this
        // request: the kernel retries a failed lookup that other callers
        // of the same name waited on, and those must not wait again.
        let left = self.opts.resolve_timeout.saturating_sub(flight.age());
        match flight.wait(left) {
            Some(answer) => answer,
            None => {
                let st = lock(&self.state);
                let what = match st.slots.get(&slot) {
                    Some(s) => format!("layer {} of {}", s.digest, s.reference),
                    None => format!("layer slot {slot}"),
                };
                let message = format!(
                    "{what}: not resolved within {:?}; EIO (still trying)",
                    self.opts.resolve_timeout
                );
                Err(FsError::new(libc::EIO, message).logged_at(log::Level::Warn))
            }
        }
    }

    /// Whether a request on `ino` (or a lookup in it) may have to wait for
    /// a layer to be resolved.
    pub fn needs_resolution(&self, ino: u64) -> bool {
        let slot = match Ino::decode(ino) {
            Ino::Root | Ino::RefDir(_) => return false,
            Ino::LayerDir(s) | Ino::Info(s) | Ino::Blob(s) | Ino::Diff(s, _) => s,
        };
        let st = lock(&self.state);
        st.slots
            .get(&slot)
            .is_some_and(|s| !matches!(s.load, Load::Ready { .. }))
    }

    fn count_lookup(&self, slot: u64) -> FsResult<()> {
        let mut st = lock(&self.state);
        let s = st.slots.get_mut(&slot).ok_or_else(no_layer)?;
        s.nlookup += 1;
        Ok(())
    }

    /// Entries of a directory (without `.` and `..`).
    pub fn readdir(&self, ino: u64) -> FsResult<Vec<DirEntry>> {
        let dir = |ino: u64, name: &str| DirEntry {
            ino,
            kind: Kind::Directory,
            name: name.to_string(),
        };
        match Ino::decode(ino) {
            Ino::Root => {
                let st = lock(&self.state);
                let mut out: Vec<DirEntry> =
                    st.refs.iter().map(|(&i, n)| dir(i, &n.name)).collect();
                out.sort_by(|a, b| a.name.cmp(&b.name));
                Ok(out)
            }
            Ino::RefDir(r) => {
                let st = lock(&self.state);
                let name = &st.refs.get(&r).ok_or_else(no_entry)?.name;
                let mut out: Vec<DirEntry> = st
                    .slots
                    .iter()
                    .filter(|(_, s)| &s.ref_name == name)
                    .map(|(&slot, s)| dir(Ino::LayerDir(slot).encode(), &s.digest))
                    .collect();
                out.sort_by(|a, b| a.name.cmp(&b.name));
                Ok(out)
            }
            Ino::LayerDir(slot) => {
                if !lock(&self.state).slots.contains_key(&slot) {
                    return Err(no_layer());
                }
                let file = |ino: Ino, name: &str| DirEntry {
                    ino: ino.encode(),
                    kind: Kind::RegularFile,
                    name: name.to_string(),
                };
                Ok(vec![
                    file(Ino::Blob(slot), BLOB_FILE),
                    dir(Ino::Diff(slot, layerfs::ROOT_INO).encode(), DIFF_DIR),
                    file(Ino::Info(slot), INFO_FILE),
                ])
            }
            Ino::Diff(slot, l) => Ok(self
                .layer(slot)?
                .fs
                .readdir(l)?
                .iter()
                .map(|e| DirEntry {
                    ino: Ino::Diff(slot, e.ino).encode(),
                    ..e.clone()
                })
                .collect()),
            Ino::Info(_) | Ino::Blob(_) => Err(not_dir()),
        }
    }

    /// The inode of `..`.
    pub fn parent(&self, ino: u64) -> FsResult<u64> {
        match Ino::decode(ino) {
            Ino::Root => Ok(ROOT_INO),
            Ino::RefDir(_) => Ok(ROOT_INO),
            Ino::LayerDir(slot) | Ino::Info(slot) | Ino::Blob(slot) => {
                let st = lock(&self.state);
                let s = st.slots.get(&slot).ok_or_else(no_layer)?;
                // The reference directory may have been forgotten.
                Ok(st.ref_by_name.get(&s.ref_name).copied().unwrap_or(ROOT_INO))
            }
            Ino::Diff(slot, layerfs::ROOT_INO) => Ok(Ino::LayerDir(slot).encode()),
            Ino::Diff(slot, l) => Ok(Ino::Diff(slot, self.layer(slot)?.fs.parent(l)?).encode()),
        }
    }

    /// `create(<layer dir>/use)`: one more user. Always fails with ENOENT,
    /// which is how containers/storage learns the store counts users.
    pub fn create(&self, parent: u64, name: &str) -> FsError {
        let Ino::LayerDir(slot) = Ino::decode(parent) else {
            return read_only();
        };
        if name != USE_FILE {
            return read_only();
        }
        let mut st = lock(&self.state);
        if let Some(s) = st.slots.get_mut(&slot) {
            s.uses += 1;
            s.last_access = Instant::now();
            log::debug!("use {} of {}: {} user(s)", s.digest, s.reference, s.uses);
        }
        FsError::new(libc::ENOENT, "user counted (the protocol's answer)")
    }

    /// `rmdir(<ref dir>/<digest>)`: one user less; the last one unloads the
    /// layer. Always fails with ENOENT, as the protocol expects.
    pub fn rmdir(&self, parent: u64, name: &str) -> FsError {
        let Ino::RefDir(r) = Ino::decode(parent) else {
            return read_only();
        };
        let mut st = lock(&self.state);
        let Some(ref_name) = st.refs.get(&r).map(|n| n.name.clone()) else {
            return no_entry();
        };
        let Some(&slot) = st.slot_by_key.get(&(ref_name, name.to_string())) else {
            return no_layer();
        };
        let s = st.slots.get_mut(&slot).expect("indexed");
        if s.uses > 0 {
            s.uses -= 1;
            log::debug!(
                "release {} of {}: {} user(s)",
                s.digest,
                s.reference,
                s.uses
            );
            if s.uses == 0 {
                log::info!("layer {} of {} released", s.digest, s.reference);
                // A load in progress finishes; the reaper unloads it later.
                if matches!(s.load, Load::Ready { .. }) {
                    s.load = Load::Unloaded;
                }
            }
        }
        Self::drop_if_unreferenced(&mut st, slot);
        FsError::new(libc::ENOENT, "user released (the protocol's answer)")
    }

    /// The kernel dropped `n` references to `ino`.
    pub fn forget(&self, ino: u64, n: u64) {
        let mut st = lock(&self.state);
        match Ino::decode(ino) {
            Ino::Root => {}
            Ino::RefDir(r) => {
                if let Some(node) = st.refs.get_mut(&r) {
                    node.nlookup = node.nlookup.saturating_sub(n);
                    if node.nlookup == 0 {
                        let name = node.name.clone();
                        st.refs.remove(&r);
                        st.ref_by_name.remove(&name);
                    }
                }
            }
            Ino::LayerDir(slot) | Ino::Info(slot) | Ino::Blob(slot) | Ino::Diff(slot, _) => {
                if let Some(s) = st.slots.get_mut(&slot) {
                    s.nlookup = s.nlookup.saturating_sub(n);
                }
                Self::drop_if_unreferenced(&mut st, slot);
            }
        }
    }

    fn drop_if_unreferenced(st: &mut State, slot: u64) {
        let Some(s) = st.slots.get(&slot) else { return };
        if s.nlookup == 0 && s.uses == 0 {
            let key = (s.ref_name.clone(), s.digest.clone());
            st.slots.remove(&slot);
            st.slot_by_key.remove(&key);
        }
    }

    /// Unloads layers nobody uses that have been idle long enough, and
    /// expired images. Called periodically.
    pub fn reap(&self) {
        self.resolver.expire();
        let mut st = lock(&self.state);
        for s in st.slots.values_mut() {
            if s.uses == 0
                && s.last_access.elapsed() >= self.opts.idle_unload
                && matches!(s.load, Load::Ready { .. })
            {
                s.load = Load::Unloaded;
                log::info!("layer {} of {} unloaded (unused)", s.digest, s.reference);
            }
        }
    }
}

impl ReadOnlyFs for Store {
    /// Looks up `name` in `parent`; a success is one kernel reference
    /// (released by [`Store::forget`]).
    fn lookup(&self, parent: u64, name: &str) -> FsResult<Attr> {
        match Ino::decode(parent) {
            Ino::Root => {
                let reference = names::parse_ref_dir(name).map_err(|e| {
                    FsError::new(errno_of(&e), "not an image reference directory")
                        .caused_by(e)
                        .logged_at(log::Level::Debug)
                })?;
                let mut st = lock(&self.state);
                let ino = match st.ref_by_name.get(name) {
                    Some(&i) => i,
                    None => {
                        let i = st.next_ref_ino;
                        if i >= LOW_BLOB {
                            return Err(FsError::new(libc::ENOSPC, "no image inodes left")
                                .logged_at(log::Level::Warn));
                        }
                        st.next_ref_ino += 1;
                        st.ref_by_name.insert(name.to_string(), i);
                        st.refs.insert(
                            i,
                            RefNode {
                                name: name.to_string(),
                                reference,
                                nlookup: 0,
                            },
                        );
                        i
                    }
                };
                st.refs.get_mut(&ino).expect("indexed").nlookup += 1;
                Ok(self.dir_attr(ino))
            }
            Ino::RefDir(r) => {
                let digest = names::parse_digest(name)
                    .map_err(|e| FsError::new(errno_of(&e), "not a layer digest").caused_by(e))?;
                let mut st = lock(&self.state);
                let (ref_name, reference) = match st.refs.get(&r) {
                    Some(n) => (n.name.clone(), n.reference.clone()),
                    None => return Err(no_entry()),
                };
                let key = (ref_name.clone(), digest.to_string());
                let slot = match st.slot_by_key.get(&key) {
                    Some(&s) => s,
                    None => {
                        let s = st.next_slot;
                        if s >= 1 << (64 - SLOT_SHIFT) {
                            return Err(FsError::new(libc::ENOSPC, "no layer slots left")
                                .logged_at(log::Level::Warn));
                        }
                        st.next_slot += 1;
                        st.slot_by_key.insert(key, s);
                        st.slots.insert(
                            s,
                            Slot {
                                ref_name,
                                reference,
                                digest: digest.to_string(),
                                nlookup: 0,
                                uses: 0,
                                last_access: Instant::now(),
                                load: Load::Unloaded,
                            },
                        );
                        s
                    }
                };
                st.slots.get_mut(&slot).expect("indexed").nlookup += 1;
                Ok(self.dir_attr(Ino::LayerDir(slot).encode()))
            }
            Ino::LayerDir(slot) => {
                let attr = match name {
                    DIFF_DIR => self.getattr(Ino::Diff(slot, layerfs::ROOT_INO).encode())?,
                    INFO_FILE => self.getattr(Ino::Info(slot).encode())?,
                    BLOB_FILE => self.getattr(Ino::Blob(slot).encode())?,
                    _ => return Err(no_entry()),
                };
                self.count_lookup(slot)?;
                Ok(attr)
            }
            Ino::Diff(slot, dir) => {
                let layer = self.layer(slot)?;
                let mut attr = layer.fs.lookup(dir, name)?;
                attr.ino = Ino::Diff(slot, attr.ino).encode();
                self.count_lookup(slot)?;
                Ok(attr)
            }
            Ino::Info(_) | Ino::Blob(_) => Err(not_dir()),
        }
    }

    fn getattr(&self, ino: u64) -> FsResult<Attr> {
        match Ino::decode(ino) {
            Ino::Root => Ok(self.dir_attr(ROOT_INO)),
            Ino::RefDir(r) => {
                if lock(&self.state).refs.contains_key(&r) {
                    Ok(self.dir_attr(ino))
                } else {
                    Err(no_entry())
                }
            }
            Ino::LayerDir(slot) => {
                if lock(&self.state).slots.contains_key(&slot) {
                    Ok(self.dir_attr(ino))
                } else {
                    Err(no_layer())
                }
            }
            Ino::Info(slot) => Ok(self.file_attr(ino, self.layer(slot)?.info.len() as u64)),
            Ino::Blob(slot) => Ok(self.file_attr(ino, self.layer(slot)?.blob.size())),
            Ino::Diff(slot, l) => {
                let mut attr = self.layer(slot)?.fs.getattr(l)?;
                attr.ino = ino;
                Ok(attr)
            }
        }
    }

    fn read(&self, ino: u64, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        match Ino::decode(ino) {
            Ino::Info(slot) => {
                let layer = self.layer(slot)?;
                let start = (offset as usize).min(layer.info.len());
                let end = start.saturating_add(size as usize).min(layer.info.len());
                Ok(layer.info[start..end].to_vec())
            }
            Ino::Blob(slot) => {
                let layer = self.layer(slot)?;
                let len = u64::from(size).min(layer.blob.size().saturating_sub(offset)) as usize;
                let mut buf = vec![0; len];
                let mut done = 0;
                while done < len {
                    match layer.blob.read_at(&mut buf[done..], offset + done as u64) {
                        Ok(0) => break,
                        Ok(n) => done += n,
                        Err(e) => {
                            let what = format!("reading the blob of slot {slot} at {offset}");
                            return Err(FsError::new(libc::EIO, what)
                                .caused_by(e)
                                .logged_at(log::Level::Error));
                        }
                    }
                }
                buf.truncate(done);
                Ok(buf)
            }
            Ino::Diff(slot, l) => self.layer(slot)?.fs.read(l, offset, size),
            Ino::Root | Ino::RefDir(_) | Ino::LayerDir(_) => {
                Err(FsError::new(libc::EISDIR, "a directory"))
            }
        }
    }

    fn opened(&self, ino: u64) {
        if let Ino::Diff(slot, l) = Ino::decode(ino) {
            if let Ok(layer) = self.layer(slot) {
                layer.fs.opened(l);
            }
        }
    }

    fn readlink(&self, ino: u64) -> FsResult<Vec<u8>> {
        match Ino::decode(ino) {
            Ino::Diff(slot, l) => self.layer(slot)?.fs.readlink(l),
            _ => Err(FsError::new(libc::EINVAL, "not a symlink")),
        }
    }

    /// Layer directories are walked on the layer's cached listing, so a
    /// large directory read in many requests is not copied for each of them.
    fn walk_dir(
        &self,
        ino: u64,
        offset: u64,
        mut add: impl FnMut(WalkEntry<'_>) -> FsResult<bool>,
    ) -> FsResult<()> {
        let parent = self.parent(ino)?;
        match Ino::decode(ino) {
            Ino::Diff(slot, l) => {
                let listing = self.layer(slot)?.fs.readdir(l)?;
                walk_listing(ino, parent, &listing, offset, |mut w| {
                    // Offsets 1 and 2 follow `.` and `..`, already store inodes.
                    if w.next > 2 {
                        w.ino = Ino::Diff(slot, w.ino).encode();
                    }
                    add(w)
                })
            }
            _ => walk_listing(ino, parent, &self.readdir(ino)?, offset, add),
        }
    }

    fn getxattr(&self, ino: u64, name: &str) -> FsResult<Vec<u8>> {
        match Ino::decode(ino) {
            Ino::Diff(slot, l) => self.layer(slot)?.fs.getxattr(l, name),
            _ => Err(FsError::new(libc::ENODATA, "no such attribute")),
        }
    }

    fn listxattr(&self, ino: u64) -> FsResult<Vec<u8>> {
        match Ino::decode(ino) {
            Ino::Diff(slot, l) => self.layer(slot)?.fs.listxattr(l),
            _ => Ok(Vec::new()),
        }
    }

    fn ttl(&self, ino: u64) -> Duration {
        if Ino::decode(ino).is_layer_content() {
            layerfs::TTL
        } else {
            NAMESPACE_TTL
        }
    }

    /// Namespace listings change. Layer listings would not, but the store
    /// has never had the kernel keep them (untried with unloading), so
    /// they are read again on each open.
    fn listing_is_stable(&self, _ino: u64) -> bool {
        false
    }
}

/// One slot's layer being resolved, off the request path.
struct Resolution {
    slot: u64,
    reference: Reference,
    digest: String,
    flight: Arc<Flight<LoadAnswer>>,
    resolver: Arc<Resolver>,
    state: Arc<Mutex<State>>,
    warmer: Arc<Warmer>,
    record: Option<Arc<AccessRecorder>>,
}

impl Resolution {
    /// Fetches what the image's command loads, once this layer completed
    /// its image (`layers`, topmost first: runtimes ask for them one by
    /// one, and the command's files may be in any of them).
    fn prefetch_command(&self, layers: Vec<Arc<Reader>>, layer: &ResolvedLayer) {
        if let Some(config) = &layer.image.config {
            self.warmer
                .prefetch_command(format!("image {}", self.reference), layers, config);
        }
    }

    fn run(self) {
        let (reference, digest) = (&self.reference, &self.digest);
        let started = Instant::now();
        let resolved = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.resolver.layer(reference, digest)
        }))
        .unwrap_or_else(|_| {
            Err(estargz_core::Error::InvalidArgument(
                "resolving the layer panicked".into(),
            ))
        });
        let answer: LoadAnswer = match resolved {
            // Layer inode numbers must stay below the info/blob ones.
            Ok(layer) if layer.fs.reader().index().len() as u64 >= LOW_BLOB - 1 => {
                log::warn!("layer {digest} of {reference}: too many entries to serve");
                Err(FsError::new(libc::EFBIG, "too many entries to serve"))
            }
            Ok(mut layer) => {
                if let Some(rec) = &self.record {
                    let reader = layer.fs.reader();
                    let key = LayerKey {
                        source: format!("layer {digest} of {reference}"),
                        index: None,
                        digest: match &layer.keying {
                            info::Keying::LayerDigest {
                                compressed_digest, ..
                            } => compressed_digest.parse().ok(),
                            info::Keying::TocDigest { .. } => None,
                        },
                        toc_digest: reader.toc_digest(),
                    };
                    layer.fs.set_access(Some(rec.layer(key)));
                }
                log::info!(
                    "layer {digest} of {reference} ready in {:.2?} ({})",
                    started.elapsed(),
                    match layer.keying {
                        info::Keying::LayerDigest { .. } => "keyed by layer digest",
                        info::Keying::TocDigest { .. } => "keyed by TOC digest",
                    }
                );
                Ok(Arc::new(layer))
            }
            Err(e) => {
                log::warn!("layer {digest} of {reference} not served: {e}");
                Err(FsError::new(errno_of(&e), "layer not served").caused_by(e))
            }
        };
        let complete = {
            let mut st = lock(&self.state);
            // The slot may have been forgotten meanwhile.
            if let Some(s) = st.slots.get_mut(&self.slot) {
                if matches!(&s.load, Load::Loading(f) if Arc::ptr_eq(f, &self.flight)) {
                    s.load = match &answer {
                        Ok(layer) => {
                            let what = format!("layer {digest} of {reference}");
                            let ticket = self.warmer.start(what, layer.fs.reader().clone());
                            Load::Ready {
                                layer: layer.clone(),
                                _warm: ticket,
                            }
                        }
                        Err(_) => Load::Unloaded,
                    };
                }
            }
            match &answer {
                Ok(layer) => st.complete_image(&layer.image),
                Err(_) => None,
            }
        };
        if let (Some(layers), Ok(layer)) = (complete, &answer) {
            self.prefetch_command(layers, layer);
        }
        self.flight.finish(answer);
    }
}

#[cfg(test)]
mod tests;
