//! Read-only FUSE file system over eStargz layers.
//!
//! * [`rofs`]: the read-only file-system interface ([`rofs::ReadOnlyFs`])
//!   and its error type, served by the adapter, tested without a mount.
//! * [`layerfs`]: one layer over a verifying reader (inodes, attributes,
//!   listings, reads, xattrs).
//! * [`overlay`]: the overlayfs conventions (whiteouts, opaque directories).
//! * [`adapter`]: the one fuser glue over any `ReadOnlyFs`, with hooks;
//!   [`layer_adapter`] (kernel passthrough) and [`store_adapter`] (the
//!   store's protocol) are the mount's and the store's hooks.
//! * [`passthrough`]: copies of fully cached files for passthrough.
//! * [`source`]: local blob or lazily read registry layer.
//! * [`mount`]: one layer mounted (session, warm-up), in the foreground
//!   or from a thread of its own ([`mount::LayerMount`]).
//! * [`optimize`]: workload-optimized images (run once, record, reorder).
//! * [`readahead`]: the kernel readahead window of a mount.
//! * [`record`]: access recording (which files a workload opened).
//! * [`store`]: the Additional Layer Store namespace (Podman / CRI-O).
//! * [`warm`]: prefetch and background fetch of opened layers.
//! * [`heap`]: the allocator settings that keep the daemons' RSS down.

pub mod adapter;
pub mod ahead;
pub mod command_prefetch;
pub mod daemon;
pub mod elf;
pub mod heap;
pub mod image_mounts;
pub mod layer_adapter;
pub mod layerfs;
pub mod logger;
pub mod metrics_endpoint;
pub mod mount;
pub mod optimize;
pub mod overlay;
pub mod passthrough;
pub mod readahead;
pub mod record;
pub mod rofs;
pub mod source;
pub mod store;
pub mod store_adapter;
#[cfg(test)]
mod test_layers;
pub mod warm;

pub use estargz_core as core;
