//! Read-only FUSE file system over eStargz layers.
//!
//! * [`layerfs`]: the file system logic over a verifying reader (inodes,
//!   attributes, listings, reads, xattrs), usable and tested without a mount.
//! * [`overlay`]: the overlayfs conventions (whiteouts, opaque directories).
//! * [`adapter`]: the fuser glue, including kernel passthrough.
//! * [`passthrough`]: copies of fully cached files for passthrough.
//! * [`source`]: local blob or lazily read registry layer.
//! * [`readahead`]: the kernel readahead window of a mount.
//! * [`store`]: the Additional Layer Store namespace (Podman / CRI-O);
//!   [`store_adapter`] is its fuser glue.
//! * [`warm`]: prefetch and background fetch of opened layers.

pub mod adapter;
pub mod daemon;
pub mod layerfs;
pub mod logger;
pub mod overlay;
pub mod passthrough;
pub mod readahead;
pub mod source;
pub mod store;
pub mod store_adapter;
pub mod warm;

pub use estargz_core as core;
