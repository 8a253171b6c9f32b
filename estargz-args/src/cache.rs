//! The verified-chunk cache: `--cache-dir`, `--disk-cache-size`,
//! `--memory-cache-size`.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use crate::config::Key;
use estargz_core::cache::{CacheOptions, ChunkCache, DEFAULT_DISK_SIZE, DEFAULT_MEMORY_SIZE};
use estargz_core::Error;

#[derive(Args, Debug, Clone)]
pub struct CacheArgs {
    /// Directory for verified chunks, kept across runs (default: memory
    /// only); `estargz-fuse mount` keeps its passthrough copies there too.
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Disk cache limit in bytes.
    #[arg(long, alias = "cache-size", default_value_t = DEFAULT_DISK_SIZE)]
    pub disk_cache_size: u64,
    /// Memory cache limit in bytes.
    #[arg(long, alias = "memory-cache", default_value_t = DEFAULT_MEMORY_SIZE)]
    pub memory_cache_size: u64,
}

impl CacheArgs {
    /// Config-file keys of these flags (see [`crate::config`]).
    pub const CONFIG_KEYS: &'static [Key] = &[
        Key::new("cache_dir", "cache_dir"),
        Key::new("disk_cache_size", "disk_cache_size"),
        Key::new("memory_cache_size", "memory_cache_size"),
    ];

    pub fn options(&self) -> CacheOptions {
        CacheOptions::default()
            .memory_size(self.memory_cache_size)
            .dir(self.cache_dir.clone())
            .disk_size(self.disk_cache_size)
    }

    pub fn open(&self) -> Result<Arc<ChunkCache>, Error> {
        Ok(Arc::new(ChunkCache::open(&self.options())?))
    }

    /// Bytes the cache can keep: the disk limit with a directory, else the
    /// memory limit.
    pub fn capacity(&self) -> u64 {
        match self.cache_dir {
            Some(_) => self.disk_cache_size,
            None => self.memory_cache_size,
        }
    }
}
