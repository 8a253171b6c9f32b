//! Lazy reading from OCI registries: references, auth, manifests, and a
//! blob source that fetches byte ranges on demand.

pub mod auth;
pub mod backoff;
pub mod blob;
pub mod certs;
pub mod credhelper;
pub mod hosts_toml;
pub mod http;
pub mod layer;
pub mod manifest;
pub mod reference;
pub mod registries_conf;
pub mod registry;
pub mod selector;
pub mod toc_image;
pub mod upload;

pub use blob::{BlobOptions, FetchStats, RemoteBlob};
pub use http::{Endpoint, HttpOptions};
pub use layer::{open_layer, LayerOptions, RemoteLayer};
pub use manifest::{Descriptor, Manifest, Platform};
pub use reference::{names_registry, Reference, DOCKER_TRANSPORT};
pub use registries_conf::RegistriesConf;
pub use registry::{Image, Registry};
pub use selector::LayerSelector;
pub use upload::Uploaded;
