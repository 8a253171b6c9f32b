//! Whole images: OCI layout directories, a source/target interface over
//! layouts and registries, and the OCI/Docker → eStargz image converter
//! (the equivalent of `ctr-remote image convert --estargz`).

pub mod convert;
pub mod layout;
pub mod store;

pub use convert::{convert_image, ConvertOptions, ConvertReport, Progress};
pub use layout::OciLayout;
pub use store::{Location, Source, Target};
