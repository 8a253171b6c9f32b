//! The command-line flags `estargz` and `estargz-fuse` share, as clap
//! `Args` structs to flatten into a subcommand, each turned into the core's
//! option types in one place so names, help and defaults cannot drift.

mod cache;
pub mod config;
mod layer;
mod registry;

pub use cache::CacheArgs;
pub use layer::LayerChoice;
pub use registry::RegistryArgs;
