//! The store's hooks on the generic adapter: its kernel settings, the
//! `use` / release protocol (create and rmdir), kernel forgets, and which
//! requests may wait for a layer to be resolved (those are answered from a
//! thread of their own, so a slow registry never ties up the FUSE workers
//! that every other request needs).

use std::sync::Arc;

use fuser::{InitFlags, KernelConfig};

use crate::adapter::{FuseAdapter, Hooks};
use crate::rofs::FsError;
use crate::store::Store;

/// The layer store mounted: [`Store`] through the generic adapter.
pub type FuseStore = FuseAdapter<Store, StoreHooks>;

impl FuseAdapter<Store, StoreHooks> {
    /// Shared so a reaper thread can unload idle layers.
    pub fn new(store: Arc<Store>) -> FuseStore {
        FuseAdapter::with_hooks(store, StoreHooks)
    }
}

pub struct StoreHooks;

impl Hooks<Store> for StoreHooks {
    fn init(&self, config: &mut KernelConfig) {
        if let Err(max) = config.set_max_readahead(u32::MAX) {
            let _ = config.set_max_readahead(max);
        }
        // No FUSE_DO_READDIRPLUS: its entries would count as lookups the
        // store does not track.
        let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
    }

    fn may_wait(&self, store: &Store, ino: u64) -> bool {
        store.needs_resolution(ino)
    }

    fn create(&self, store: &Store, parent: u64, name: &str) -> FsError {
        store.create(parent, name)
    }

    fn rmdir(&self, store: &Store, parent: u64, name: &str) -> FsError {
        store.rmdir(parent, name)
    }

    fn forget(&self, store: &Store, ino: u64, nlookup: u64) {
        store.forget(ino, nlookup);
    }
}
