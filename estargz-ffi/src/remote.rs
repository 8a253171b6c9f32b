//! Opening a layer of an image in an OCI registry lazily: the reader fetches
//! byte ranges on demand, verified against the TOC digest annotation of the
//! layer's descriptor.

use std::ffi::c_char;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use estargz_core::cache::{CacheOptions, ChunkCache, DEFAULT_DISK_SIZE, DEFAULT_MEMORY_SIZE};
use estargz_core::remote::auth::default_auth_files;
use estargz_core::remote::certs::default_certs_dirs;
use estargz_core::remote::{
    open_layer, HttpOptions, LayerOptions, LayerSelector, Platform, Reference, RegistriesConf,
    Registry,
};

use crate::args::{optional, try_out, try_str};
use crate::error::{estargz_result, Failure, FfiResult};
use crate::export::{ffi_call, ffi_free, handle, into_raw, Handle};
use crate::reader::{estargz_reader, new_handle};

/// Options for estargz_reader_open_remote. Created by
/// estargz_remote_options_new, released by estargz_remote_options_free.
/// estargz_reader_open_remote copies what it needs, so options may be freed
/// or reused right after.
pub struct estargz_remote_options {
    opts: Mutex<RemoteOptions>,
}

#[derive(Clone)]
pub(crate) struct RemoteOptions {
    pub(crate) http: HttpOptions,
    pub(crate) platform: Option<Platform>,
    pub(crate) cache: CacheOptions,
    pub(crate) allow_unverified_toc: bool,
    pub(crate) prefetch: bool,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        RemoteOptions {
            http: HttpOptions::default(),
            platform: None,
            cache: CacheOptions::default(),
            allow_unverified_toc: false,
            // On, as in the CLI and the FUSE mount: the landmark names the
            // files a container reads first.
            prefetch: true,
        }
    }
}

impl Handle for estargz_remote_options {}

impl estargz_remote_options {
    pub(crate) fn lock(&self) -> MutexGuard<'_, RemoteOptions> {
        // A poisoned lock only means a setter panicked; the options are whole.
        self.opts.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Creates remote options with defaults: HTTPS to every registry,
/// credentials from the containers/docker auth files (REGISTRY_AUTH_FILE,
/// $XDG_RUNTIME_DIR/containers/auth.json, ~/.config/containers/auth.json,
/// $DOCKER_CONFIG/config.json or ~/.docker/config.json), 30 s per request,
/// 5 retries, this host's platform, a 64 MiB memory cache of verified
/// chunks and no disk cache, layers without a TOC digest annotation refused,
/// the prioritized files prefetched at open. `out_options` receives the
/// handle (owned by the caller; release with estargz_remote_options_free).
#[no_mangle]
pub unsafe extern "C" fn estargz_remote_options_new(
    out_options: *mut *mut estargz_remote_options,
) -> estargz_result {
    ffi_call!(|| {
        try_out!(out_options).write(into_raw(estargz_remote_options {
            opts: Mutex::new(RemoteOptions::default()),
        }));
        Ok(())
    })
}

/// Releases remote options. NULL is accepted (no-op).
#[no_mangle]
pub unsafe extern "C" fn estargz_remote_options_free(options: *mut estargz_remote_options) {
    ffi_free!(options)
}

/// Whether to talk plain HTTP (no TLS) to every registry. Default false.
#[no_mangle]
pub unsafe extern "C" fn estargz_remote_options_set_plain_http(
    options: *mut estargz_remote_options,
    plain_http: bool,
) -> estargz_result {
    ffi_call!(options => |o| {
        o.lock().http.plain_http = plain_http;
        Ok(())
    })
}

/// Adds a registry (`host` or `host:port`, as in references; copied) to be
/// reached over plain HTTP; others keep HTTPS.
#[no_mangle]
pub unsafe extern "C" fn estargz_remote_options_add_insecure_registry(
    options: *mut estargz_remote_options,
    host: *const c_char,
) -> estargz_result {
    ffi_call!(options => |o| {
        let host = try_str!(host);
        if host.is_empty() || host.contains('/') {
            return Err(Failure::invalid(format!(
                "`host` {host:?} is not a registry host[:port]"
            )));
        }
        o.lock().http.insecure_registries.push(host.to_string());
        Ok(())
    })
}

/// Reads credentials from the auth file at `path` (containers auth.json or
/// docker config.json format; copied) instead of the default files. NULL
/// restores the defaults. A missing file means anonymous access.
#[no_mangle]
pub unsafe extern "C" fn estargz_remote_options_set_auth_file(
    options: *mut estargz_remote_options,
    path: *const c_char,
) -> estargz_result {
    ffi_call!(options => |o| {
        o.lock().http.auth_files = match optional!(try_path!(path)) {
            Some(path) => vec![path],
            None => default_auth_files(),
        };
        Ok(())
    })
}

/// Reads mirrors, location rewrites, insecure and blocked registries from
/// the containers-registries.conf(5) file at `path` (copied; read now, so a
/// missing or bad file fails here with its name). NULL restores the
/// default: no such file is read.
#[no_mangle]
pub unsafe extern "C" fn estargz_remote_options_set_registries_conf(
    options: *mut estargz_remote_options,
    path: *const c_char,
) -> estargz_result {
    ffi_call!(options => |o| {
        let conf = match optional!(try_path!(path)) {
            Some(path) => RegistriesConf::load(Some(&path))?,
            None => RegistriesConf::default(),
        };
        o.lock().http.registries_conf = Arc::new(conf);
        Ok(())
    })
}

/// Searches only `dir` (copied) for `certs.d`-style TLS files of a registry
/// host: in its `HOST[:PORT]` subdirectory, `.crt` files are CAs and a
/// `.cert` file with the `.key` of the same name a client certificate. NULL restores the defaults (/etc/containers/certs.d and
/// /etc/docker/certs.d, and ~/.config/containers/certs.d when not root).
#[no_mangle]
pub unsafe extern "C" fn estargz_remote_options_set_certs_dir(
    options: *mut estargz_remote_options,
    dir: *const c_char,
) -> estargz_result {
    ffi_call!(options => |o| {
        o.lock().http.certs_dirs = match optional!(try_path!(dir)) {
            Some(dir) => vec![dir],
            None => default_certs_dirs(),
        };
        Ok(())
    })
}

/// containerd's registry host directory (`config_path`, e.g.
/// /etc/containerd/certs.d; copied): a registry with a
/// `dir/HOST[:PORT]/hosts.toml` (or `dir/_default/hosts.toml`) is pulled
/// from that file's mirrors and `server`, as its `capabilities` allow, with
/// its `ca`, `client`, `skip_verify` and `header` settings; a host directory
/// without one is read as a certs.d directory. Files are read when a layer
/// is opened. NULL (the default) reads no such directory.
#[no_mangle]
pub unsafe extern "C" fn estargz_remote_options_set_hosts_dir(
    options: *mut estargz_remote_options,
    dir: *const c_char,
) -> estargz_result {
    ffi_call!(options => |o| {
        o.lock().http.hosts_dir = optional!(try_path!(dir));
        Ok(())
    })
}

/// Per-request time limit in milliseconds (connect, send, headers and body
/// of one attempt); 0 restores the default (30 s). A request that times out
/// is retried; the last failure is ESTARGZ_TIMEOUT.
#[no_mangle]
pub unsafe extern "C" fn estargz_remote_options_set_request_timeout_ms(
    options: *mut estargz_remote_options,
    timeout_ms: u64,
) -> estargz_result {
    ffi_call!(options => |o| {
        let mut o = o.lock();
        let d = HttpOptions::default();
        if timeout_ms == 0 {
            o.http.request_timeout = d.request_timeout;
            o.http.connect_timeout = d.connect_timeout;
        } else {
            o.http.request_timeout = Duration::from_millis(timeout_ms);
            // The connect phase is part of the attempt.
            o.http.connect_timeout = d.connect_timeout.min(o.http.request_timeout);
        }
        Ok(())
    })
}

/// Retries per request after the first attempt, on network errors,
/// timeouts, 429 and 5xx answers (default 5; 0 fails on the first error).
#[no_mangle]
pub unsafe extern "C" fn estargz_remote_options_set_retries(
    options: *mut estargz_remote_options,
    retries: u32,
) -> estargz_result {
    ffi_call!(options => |o| {
        o.lock().http.retries = retries;
        Ok(())
    })
}

/// The platform ("os/arch" or "os/arch/variant", e.g. "linux/arm64/v8";
/// copied) to pick from a multi-platform image index. NULL restores the
/// default, this host's platform.
#[no_mangle]
pub unsafe extern "C" fn estargz_remote_options_set_platform(
    options: *mut estargz_remote_options,
    platform: *const c_char,
) -> estargz_result {
    ffi_call!(options => |o| {
        let platform = optional!(try_str!(platform)).map(Platform::parse).transpose()?;
        o.lock().platform = platform;
        Ok(())
    })
}

/// Keeps verified chunks in a disk cache under directory `dir` (copied;
/// created if missing; may be shared by readers and processes), bounded to
/// `disk_size` bytes (0 = the default, 2 GiB) with LRU eviction. Entries are
/// re-checked against their digest when read. NULL `dir` turns the disk
/// cache off (the default). The readers and mounts of one process that name
/// the same `dir` share one cache, memory tier and limits included (those
/// of the first to open it, while it stays open).
#[no_mangle]
pub unsafe extern "C" fn estargz_remote_options_set_cache_dir(
    options: *mut estargz_remote_options,
    dir: *const c_char,
    disk_size: u64,
) -> estargz_result {
    ffi_call!(options => |o| {
        let dir = optional!(try_path!(dir));
        let mut o = o.lock();
        o.cache.dir = dir;
        o.cache.disk_size = if disk_size == 0 {
            DEFAULT_DISK_SIZE
        } else {
            disk_size
        };
        Ok(())
    })
}

/// Bound of the in-memory cache of verified chunks, in bytes (0 = the
/// default, 64 MiB): per cache directory in the process (see
/// estargz_remote_options_set_cache_dir), else per reader or mount.
#[no_mangle]
pub unsafe extern "C" fn estargz_remote_options_set_memory_cache_size(
    options: *mut estargz_remote_options,
    max_bytes: u64,
) -> estargz_result {
    ffi_call!(options => |o| {
        o.lock().cache.memory_size = if max_bytes == 0 {
            DEFAULT_MEMORY_SIZE
        } else {
            max_bytes
        };
        Ok(())
    })
}

/// Whether to open layers whose descriptor lacks the
/// "containerd.io/snapshot/stargz/toc.digest" annotation. Without it the
/// TOC, and so every chunk digest, is not anchored to the manifest; default
/// false (such layers fail with ESTARGZ_INVALID_ARGUMENT).
#[no_mangle]
pub unsafe extern "C" fn estargz_remote_options_set_allow_unverified_toc(
    options: *mut estargz_remote_options,
    allow: bool,
) -> estargz_result {
    ffi_call!(options => |o| {
        o.lock().allow_unverified_toc = allow;
        Ok(())
    })
}

/// Whether estargz_reader_open_remote also fetches the prioritized files
/// the layer marks with its prefetch landmark (one batched request) before
/// returning. Default true (as in the estargz and estargz-fuse commands).
#[no_mangle]
pub unsafe extern "C" fn estargz_remote_options_set_prefetch(
    options: *mut estargz_remote_options,
    prefetch: bool,
) -> estargz_result {
    ffi_call!(options => |o| {
        o.lock().prefetch = prefetch;
        Ok(())
    })
}

/// Which layer of the manifest `layer` selects: NULL or "" for the only
/// layer, else the core's syntax (a decimal index, 0 = bottom, or a digest).
fn select_layer(
    layers: &[estargz_core::remote::Descriptor],
    layer: Option<&str>,
    image: &str,
) -> FfiResult<usize> {
    Ok(layer_selector(layer)?.resolve(layers, image)?)
}

/// The selector an export's `layer` argument spells: NULL or "" for the
/// only layer, else a decimal index or a digest.
pub(crate) fn layer_selector(layer: Option<&str>) -> FfiResult<LayerSelector> {
    Ok(match layer.filter(|l| !l.is_empty()) {
        None => LayerSelector::Only,
        Some(l) => l.parse()?,
    })
}

/// Opens one layer of the image `reference` (copied; "host[:port]/repo:tag"
/// or "host[:port]/repo@sha256:...") for lazy reading from its registry:
/// opening fetches the manifest, the image config, and the layer's footer
/// and TOC (two range requests); reads then fetch only the gzip members
/// they need, verified against their chunk digests, and the TOC is checked
/// against the layer's "containerd.io/snapshot/stargz/toc.digest" annotation.
///
/// `layer` (copied; may be NULL) selects the layer: NULL or "" for an image
/// with one layer, its digest ("sha256:..."), or its decimal index in the
/// manifest (0 = bottom). `options` may be NULL (defaults, see
/// estargz_remote_options_new); it is only read during the call.
/// `out_reader` receives the handle, owned by the caller: release it with
/// estargz_reader_free. Every estargz_reader_* function works on it; reads
/// may fail with the network errors below, and are retried afresh on the
/// next call.
///
/// The call blocks for the requests (each bounded by the timeout, with
/// retries). Errors: ESTARGZ_INVALID_ARGUMENT (bad reference, platform or
/// layer selector, several layers and no selector, no TOC digest
/// annotation), ESTARGZ_NOT_FOUND (no such layer), ESTARGZ_UNSUPPORTED (not
/// a gzip layer), ESTARGZ_NETWORK, ESTARGZ_TIMEOUT, ESTARGZ_REGISTRY (error
/// status or malformed answer, unknown image), ESTARGZ_UNAUTHORIZED,
/// ESTARGZ_INVALID_FOOTER / ESTARGZ_INVALID_TOC (not eStargz),
/// ESTARGZ_DIGEST_MISMATCH (TOC does not match the annotation), ESTARGZ_IO
/// (disk cache directory).
#[no_mangle]
pub unsafe extern "C" fn estargz_reader_open_remote(
    reference: *const c_char,
    layer: *const c_char,
    options: *const estargz_remote_options,
    out_reader: *mut *mut estargz_reader,
) -> estargz_result {
    ffi_call!(|| {
        let out = try_out!(out_reader);
        let reference = try_str!(reference);
        let layer = optional!(try_str!(layer));
        let opts = handle!(options).map_or_else(RemoteOptions::default, |o| o.lock().clone());
        let reference = Reference::parse(reference)?;
        let cache = ChunkCache::open_shared(&opts.cache)?;
        let registry = Registry::new(opts.http);
        let image = registry.resolve_image(&reference, opts.platform.as_ref())?;
        let index = select_layer(&image.manifest.layers, layer, &image.reference.to_string())?;
        let layer_opts = LayerOptions::default()
            .cache(Some(cache))
            .allow_unverified_toc(opts.allow_unverified_toc);
        let remote = open_layer(&registry, &image, index, &layer_opts)?;
        if opts.prefetch {
            remote.reader.prefetch_landmarked()?;
        }
        out.write(new_handle(remote.reader));
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use estargz_core::remote::Descriptor;

    fn layers(n: usize) -> Vec<Descriptor> {
        (0..n)
            .map(|i| Descriptor {
                media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
                digest: format!("sha256:{i:064x}"),
                size: 1,
                annotations: Default::default(),
                platform: None,
            })
            .collect()
    }

    #[test]
    fn layer_selectors() {
        let one = layers(1);
        let three = layers(3);
        assert_eq!(select_layer(&one, None, "img").unwrap(), 0);
        assert_eq!(select_layer(&one, Some(""), "img").unwrap(), 0);
        let e = select_layer(&three, None, "img").unwrap_err();
        assert_eq!(e.code, estargz_result::ESTARGZ_INVALID_ARGUMENT);
        assert!(e.message.contains("3 layers"), "{}", e.message);
        assert_eq!(select_layer(&three, Some("2"), "img").unwrap(), 2);
        let digest = format!("sha256:{:064x}", 1);
        assert_eq!(select_layer(&three, Some(&digest), "img").unwrap(), 1);
        let e = select_layer(&three, Some("sha256:ff"), "img").unwrap_err();
        assert_eq!(e.code, estargz_result::ESTARGZ_NOT_FOUND);
        let e = select_layer(&three, Some("-1"), "img").unwrap_err();
        assert_eq!(e.code, estargz_result::ESTARGZ_INVALID_ARGUMENT);
    }
}
