//! Read-only FUSE file system over eStargz blobs. The file system logic and
//! the fuser adapter are tracked by the estargz-fuse issue; this crate only
//! reserves its place in the workspace for now.

pub use estargz_core as core;
