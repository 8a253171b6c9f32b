//! eStargz: build, read and verify lazily pullable container layers,
//! interoperable with containerd's stargz-snapshotter.
//!
//! * [`build()`] turns a tar (plain, gzip or a directory) into an eStargz blob.
//! * [`Reader`] opens a blob from any [`ReadAt`] source, verifies the TOC and
//!   every chunk before handing out bytes.

#![warn(missing_docs)]

pub mod build;
pub mod cache;
pub mod digest;
mod dirtar;
pub mod error;
pub mod extract;
// Shared with the workspace's FUSE store: not part of the format API.
#[doc(hidden)]
pub mod flight;
pub mod footer;
#[cfg(feature = "remote")]
pub mod image;
pub mod metrics;
mod options;
pub mod reader;
#[cfg(feature = "remote")]
pub mod remote;
pub mod source;
pub mod span_cache;
// Internal, but reachable through `testing`: documented for us, not the API.
#[allow(missing_docs)]
mod tar;
#[allow(missing_docs)]
mod tarwrite;
pub(crate) mod timefmt;
pub mod toc;

pub use build::{build, BuildInput, BuildOptions, BuildResult};
pub use digest::Digest;
pub use error::{Error, ErrorCode, Result};
pub use footer::{Footer, Format, FramePosition, ZstdChunkedFooter, ZstdGeneration};
pub use reader::{NodeId, OpenOptions, Reader};
pub use source::{FileSource, ReadAt};
pub use toc::{ChunkType, EntryType, Toc, TocEntry};

/// Tar parsing and header writing, for this project's tests and fuzz
/// targets only: not part of the API, may change in any release.
#[doc(hidden)]
pub mod testing {
    pub use crate::tar::{clean_name, index, TarEntry, TarIndex, TarKind};
    pub use crate::tarwrite::{entry_headers, simple_file_header, HeaderSpec};
}
