//! Mounting a layer read-only with FUSE: a local blob or a registry layer,
//! served by estargz-fuse's file system from threads of the library until
//! unmounted.

use std::ffi::{c_char, CString};
use std::sync::{Arc, Mutex, MutexGuard};

use estargz_core::cache::ChunkCache;
use estargz_core::remote::{LayerOptions, LayerSelector, Reference, Registry};
use estargz_core::{Digest, Error};
use estargz_fuse::ahead::{open_mounts_ahead, RemoteParts};
use estargz_fuse::image_mounts::image_mounts;
use estargz_fuse::mount::{LayerMount, MountOptions};
use estargz_fuse::record::{AccessRecorder, LayerKey, DEFAULT_RECORD_LIMIT};
use estargz_fuse::source::{OpenedLayer, Source};
use estargz_fuse::warm::WarmOptions;

use crate::args::{copy_str_out, opt_out, optional, try_out, try_path, try_str, try_str_array};
use crate::error::{estargz_result, ErrorSlot, FfiResult};
use crate::export::{ffi_call, ffi_free, ffi_last_error, ffi_value, handle, into_raw, Handle};
use crate::remote::{estargz_remote_options, layer_selector, RemoteOptions};
use crate::versioned::{try_versioned_out, versioned_struct};

/// Bytes of passthrough copies kept under the cache directory by default.
const DEFAULT_PASSTHROUGH_SIZE: u64 = 1 << 30;

/// Options for estargz_mount_local and estargz_mount_remote. Created by
/// estargz_mount_options_new, released by estargz_mount_options_free; the
/// mount functions copy what they need.
pub struct estargz_mount_options {
    opts: Mutex<MountSettings>,
}

#[derive(Clone)]
struct MountSettings {
    threads: u32,
    allow_other: bool,
    background_fetch: bool,
    passthrough: bool,
    read_ahead_kb: u32,
    record_access: bool,
    record_limit: usize,
}

impl Default for MountSettings {
    fn default() -> Self {
        let d = MountOptions::default();
        MountSettings {
            threads: d.threads as u32,
            allow_other: false,
            // On, as in estargz-fuse: the rest of a registry layer arrives
            // while the container runs.
            background_fetch: true,
            passthrough: true,
            read_ahead_kb: d.read_ahead_kb,
            record_access: false,
            record_limit: DEFAULT_RECORD_LIMIT,
        }
    }
}

impl Handle for estargz_mount_options {}

impl estargz_mount_options {
    fn lock(&self) -> MutexGuard<'_, MountSettings> {
        // A poisoned lock only means a setter panicked; the options are whole.
        self.opts.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Creates mount options with defaults: 8 threads serving requests, the
/// mount usable by its owner (and root) only, registry layers fetched
/// whole in the background after the prioritized files, fully cached files
/// handed to the kernel (FUSE passthrough) when the remote options name a
/// cache directory, the estargz-fuse readahead window. `out_options`
/// receives the handle (release with estargz_mount_options_free).
#[no_mangle]
pub unsafe extern "C" fn estargz_mount_options_new(
    out_options: *mut *mut estargz_mount_options,
) -> estargz_result {
    ffi_call!(|| {
        try_out!(out_options).write(into_raw(estargz_mount_options {
            opts: Mutex::new(MountSettings::default()),
        }));
        Ok(())
    })
}

/// Releases mount options. NULL is accepted (no-op).
#[no_mangle]
pub unsafe extern "C" fn estargz_mount_options_free(options: *mut estargz_mount_options) {
    ffi_free!(options)
}

/// Threads serving FUSE requests (0 restores the default, 8).
#[no_mangle]
pub unsafe extern "C" fn estargz_mount_options_set_threads(
    options: *mut estargz_mount_options,
    threads: u32,
) -> estargz_result {
    ffi_call!(options => |o| {
        o.lock().threads = if threads == 0 { MountSettings::default().threads } else { threads };
        Ok(())
    })
}

/// Whether other users (and overlayfs mounts made by other users, such as
/// containers) may use the mount. Default false.
#[no_mangle]
pub unsafe extern "C" fn estargz_mount_options_set_allow_other(
    options: *mut estargz_mount_options,
    allow_other: bool,
) -> estargz_result {
    ffi_call!(options => |o| {
        o.lock().allow_other = allow_other;
        Ok(())
    })
}

/// Whether the rest of a registry layer is fetched in the background once
/// it is mounted (into the chunk cache; skipped for layers larger than the
/// cache). Default true. Local blobs are never copied into the cache.
#[no_mangle]
pub unsafe extern "C" fn estargz_mount_options_set_background_fetch(
    options: *mut estargz_mount_options,
    background_fetch: bool,
) -> estargz_result {
    ffi_call!(options => |o| {
        o.lock().background_fetch = background_fetch;
        Ok(())
    })
}

/// Whether fully cached files are handed to the kernel (FUSE passthrough,
/// copies kept under the cache directory of the remote options). Default
/// true; without a cache directory it is off.
#[no_mangle]
pub unsafe extern "C" fn estargz_mount_options_set_passthrough(
    options: *mut estargz_mount_options,
    passthrough: bool,
) -> estargz_result {
    ffi_call!(options => |o| {
        o.lock().passthrough = passthrough;
        Ok(())
    })
}

/// The mount's kernel readahead window in KiB (0: the kernel's default).
#[no_mangle]
pub unsafe extern "C" fn estargz_mount_options_set_read_ahead_kb(
    options: *mut estargz_mount_options,
    read_ahead_kb: u32,
) -> estargz_result {
    ffi_call!(options => |o| {
        o.lock().read_ahead_kb = read_ahead_kb;
        Ok(())
    })
}

/// Whether the mount records the regular files opened or read in it, in
/// first-access order (as `estargz-fuse mount --record-access`); the record
/// is read with estargz_mount_access_record, also after unmounting.
/// Default false.
#[no_mangle]
pub unsafe extern "C" fn estargz_mount_options_set_record_access(
    options: *mut estargz_mount_options,
    record_access: bool,
) -> estargz_result {
    ffi_call!(options => |o| {
        o.lock().record_access = record_access;
        Ok(())
    })
}

/// Most files recorded (later ones are counted as dropped, not listed);
/// 0 restores the default, 100000.
#[no_mangle]
pub unsafe extern "C" fn estargz_mount_options_set_record_limit(
    options: *mut estargz_mount_options,
    record_limit: usize,
) -> estargz_result {
    ffi_call!(options => |o| {
        o.lock().record_limit = if record_limit == 0 { DEFAULT_RECORD_LIMIT } else { record_limit };
        Ok(())
    })
}

/// A layer mounted read-only, served by threads of the library. Created by
/// estargz_mount_local or estargz_mount_remote; unmounted by
/// estargz_mount_unmount, released by estargz_mount_free.
pub struct estargz_mount {
    mount: Mutex<LayerMount>,
    toc_digest: CString,
    /// Kept past the unmount, so the record can be read then.
    recorder: Option<Arc<AccessRecorder>>,
    errors: ErrorSlot,
}

impl Handle for estargz_mount {
    fn errors(&self) -> Option<&ErrorSlot> {
        Some(&self.errors)
    }
}

impl estargz_mount {
    fn lock(&self) -> MutexGuard<'_, LayerMount> {
        // Unmount leaves the LayerMount whole whatever happens.
        self.mount.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The state of a mount (estargz_mount_status). Set `struct_size` to
/// `sizeof(estargz_mount_info)` before the call.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct estargz_mount_info {
    /// Set by the caller: sizeof(estargz_mount_info).
    pub struct_size: usize,
    /// Registry bytes received for the layer so far (0 for a local blob).
    pub fetched_bytes: u64,
    /// Registry requests sent for the layer so far (0 for a local blob).
    pub fetch_requests: u64,
    /// Whether the file system is mounted and served: false after
    /// estargz_mount_unmount, or once unmounted from outside (umount).
    pub mounted: bool,
}

versioned_struct!(estargz_mount_info);

fn mount_options(m: &MountSettings, remote: &RemoteOptions, is_remote: bool) -> MountOptions {
    let passthrough = match (&remote.cache.dir, m.passthrough) {
        (Some(dir), true) => Some((dir.clone(), DEFAULT_PASSTHROUGH_SIZE)),
        _ => None,
    };
    let capacity = match remote.cache.dir {
        Some(_) => remote.cache.disk_size,
        None => remote.cache.memory_size,
    };
    MountOptions::default()
        .threads(m.threads as usize)
        .allow_other(m.allow_other)
        .passthrough(passthrough)
        .read_ahead_kb(m.read_ahead_kb)
        .warm(
            // The process's mounts share one schedule (two at once, the
            // smaller moving on), as the store's layers do.
            WarmOptions::serving(
                remote.prefetch,
                m.background_fetch && is_remote,
                2,
                capacity,
            ),
        )
}

/// An optional digest argument where "" means none too: `Option<Digest>`
/// (a malformed one is ESTARGZ_INVALID_ARGUMENT).
/// The first byte is looked at before any `&str` exists, so no `None`
/// carries an unset length into the branches (valgrind flags LLVM's merged
/// "NULL or empty" test on it).
macro_rules! optional_nonempty {
    ($arg:ident) => {
        // SAFETY: an export's string is NULL or NUL-terminated (export.rs),
        // so a non-NULL one has a first byte.
        if $arg.is_null() || unsafe { *$arg } == 0 {
            None
        } else {
            Some(try_str!($arg).parse::<Digest>()?)
        }
    };
}

/// The registry client, chunk cache and layer options of `remote`.
fn remote_parts(remote: &RemoteOptions) -> FfiResult<RemoteParts> {
    Ok(RemoteParts {
        // One cache per cache directory in the process: the mounts of a
        // snapshotter share its limits and never clear each other's writes.
        cache: ChunkCache::open_shared(&remote.cache)?,
        layer_opts: LayerOptions::default()
            .allow_unverified_toc(remote.allow_unverified_toc)
            .span_dir(remote.cache.dir.clone()),
        registry: Registry::new(remote.http.clone()),
    })
}

/// Opens `source` and mounts it at `mountpoint`, checking its TOC digest.
fn mount(
    source: Source,
    expected_toc_digest: Option<Digest>,
    mountpoint: &str,
    remote: &RemoteOptions,
    settings: &MountSettings,
) -> FfiResult<*mut estargz_mount> {
    let is_remote = matches!(source, Source::Remote { .. });
    // A registry layer chosen by digest is one layer of an image whose
    // command is prefetched once all of them are mounted.
    let image_layer = match &source {
        Source::Remote {
            reference,
            layer: LayerSelector::Digest(digest),
            ..
        } => Some((reference.to_string(), digest.clone())),
        _ => None,
    };
    // A registry layer opened ahead (estargz_mount_open_ahead) is claimed.
    let layer: OpenedLayer = source.open_claiming(&remote_parts(remote)?, expected_toc_digest)?;
    let toc_digest = layer.reader.toc_digest();
    if let Some(expected) = expected_toc_digest {
        if expected != toc_digest {
            return Err(Error::DigestMismatch {
                what: format!("the TOC of {}", layer.description),
                expected: expected.to_string(),
                actual: toc_digest.to_string(),
            }
            .into());
        }
    }
    let recorder = settings
        .record_access
        .then(|| AccessRecorder::new(settings.record_limit));
    let access = recorder.as_ref().map(|r| {
        r.layer(LayerKey {
            source: layer.description.clone(),
            index: None,
            digest: layer.blob.as_ref().and_then(|b| b.digest().parse().ok()),
            toc_digest,
        })
    });
    let opts = mount_options(settings, remote, is_remote).record(access);
    let mount = LayerMount::start(layer, std::path::Path::new(mountpoint), &opts)?;
    if let Some((reference, digest)) = image_layer {
        image_mounts().layer_mounted(&reference, &digest, mount.reader(), &opts.warm);
    }
    Ok(into_raw(estargz_mount {
        mount: Mutex::new(mount),
        toc_digest: CString::new(toc_digest.to_string()).expect("a digest has no NUL"),
        recorder,
        errors: ErrorSlot::default(),
    }))
}

/// Mounts the eStargz blob in the file at `path` (copied; the file must
/// not change while mounted) read-only at the directory `mountpoint`
/// (copied). `expected_toc_digest` (copied; NULL or "" for none) refuses a
/// blob whose TOC has another digest. `options` may be NULL (defaults); the
/// prioritized files are read ahead, the blob is not copied into a cache.
/// Needs the right to mount FUSE file systems (root, or fusermount3).
///
/// When the call returns, the file system answers requests; it is served
/// by library threads until estargz_mount_unmount or estargz_mount_free.
/// `out_mount` receives the handle, owned by the caller.
///
/// Errors: ESTARGZ_INVALID_ARGUMENT, ESTARGZ_IO (the blob, the mountpoint,
/// no permission to mount), ESTARGZ_INVALID_FOOTER, ESTARGZ_INVALID_TOC,
/// ESTARGZ_DIGEST_MISMATCH (expected TOC digest), ESTARGZ_LIMIT_EXCEEDED.
#[no_mangle]
pub unsafe extern "C" fn estargz_mount_local(
    path: *const c_char,
    expected_toc_digest: *const c_char,
    mountpoint: *const c_char,
    options: *const estargz_mount_options,
    out_mount: *mut *mut estargz_mount,
) -> estargz_result {
    ffi_call!(|| {
        let out = try_out!(out_mount);
        let path = try_path!(path);
        let expected = optional_nonempty!(expected_toc_digest);
        let mountpoint = try_str!(mountpoint);
        let settings = handle!(options).map_or_else(MountSettings::default, |o| o.lock().clone());
        let source = Source::Local {
            path,
            external_toc_data: None,
            // Checked by the reader as it opens the blob.
            expected_toc_digest: expected,
        };
        out.write(mount(
            source,
            None,
            mountpoint,
            &RemoteOptions::default(),
            &settings,
        )?);
        Ok(())
    })
}

/// Mounts one layer of the image `reference` (copied; as for
/// estargz_reader_open_remote) read-only at `mountpoint` (copied), reading
/// it lazily from its registry. `layer` (copied; NULL or "" for an image
/// with one layer, a digest or a decimal index) selects the layer.
/// `expected_toc_digest` (copied; NULL or "" for none) must equal the
/// layer's TOC digest (checked besides the manifest's annotation, e.g. with
/// the one containerd forwards). `remote_options` (may be NULL: defaults)
/// give the registry access, the chunk caches (shared with other mounts
/// and processes through the cache directory), whether unannotated layers
/// are accepted and whether the prioritized files are prefetched (in the
/// background, after the call returns); `options` (may be NULL) the mount.
/// Both are only read during the call.
///
/// Errors: those of estargz_reader_open_remote, ESTARGZ_DIGEST_MISMATCH
/// (expected TOC digest), ESTARGZ_IO (the mountpoint, no permission to
/// mount).
#[no_mangle]
pub unsafe extern "C" fn estargz_mount_remote(
    reference: *const c_char,
    layer: *const c_char,
    expected_toc_digest: *const c_char,
    mountpoint: *const c_char,
    remote_options: *const estargz_remote_options,
    options: *const estargz_mount_options,
    out_mount: *mut *mut estargz_mount,
) -> estargz_result {
    ffi_call!(|| {
        let out = try_out!(out_mount);
        let reference = Reference::parse(try_str!(reference))?;
        let layer = layer_selector(optional!(try_str!(layer)))?;
        let expected = optional_nonempty!(expected_toc_digest);
        let mountpoint = try_str!(mountpoint);
        let remote =
            handle!(remote_options).map_or_else(RemoteOptions::default, |o| o.lock().clone());
        let settings = handle!(options).map_or_else(MountSettings::default, |o| o.lock().clone());
        let source = Source::Remote {
            reference,
            layer,
            platform: remote.platform.clone(),
        };
        out.write(mount(source, expected, mountpoint, &remote, &settings)?);
        Ok(())
    })
}

/// Starts opening the layers `digests` (an array of `n` layer digests,
/// copied) of the image `reference` (copied) in the background and returns
/// at once, so that an estargz_mount_remote of one of them, selected by that
/// digest, finds it opened: runtimes mount an image's layers one after the
/// other, and each would otherwise wait for its own manifest, footer and
/// TOC requests. The manifest is fetched once for all of them.
///
/// Only layers whose TOC digest the manifest annotates are opened (and
/// verified against it); a mount still checks its own expected TOC digest,
/// and one whose layer was opened with another TOC opens it again. Layers
/// already being opened are skipped. After a failed open the mount opens
/// the layer itself, except after a timeout, which it returns
/// (ESTARGZ_TIMEOUT) rather than wait for twice. At most 16 opens are held
/// in the process; one not claimed within 30 s is no longer used and is
/// dropped by the next call of either function.
///
/// `remote_options` (may be NULL: defaults) give the registry access and
/// the caches, as for the mount. `out_started` (may be NULL) receives how
/// many opens were started.
///
/// Errors: ESTARGZ_INVALID_ARGUMENT (a malformed reference or digest, more
/// than 1024 digests).
#[no_mangle]
pub unsafe extern "C" fn estargz_mount_open_ahead(
    remote_options: *const estargz_remote_options,
    reference: *const c_char,
    digests: *const *const c_char,
    n: usize,
    out_started: *mut usize,
) -> estargz_result {
    ffi_call!(|| {
        let out = opt_out!(out_started);
        let reference = Reference::parse(try_str!(reference))?;
        let digests = try_str_array!(digests, n, 1024);
        for d in &digests {
            // Checked here so a typo is an error, not a silent miss.
            d.parse::<Digest>()?;
        }
        let remote =
            handle!(remote_options).map_or_else(RemoteOptions::default, |o| o.lock().clone());
        let platform = remote.platform.clone();
        let started = open_mounts_ahead(remote_parts(&remote)?, reference, platform, &digests);
        if let Some(out) = out {
            out.write(started);
        }
        Ok(())
    })
}

/// Fills `*out_status` (its `struct_size` set by the caller).
#[no_mangle]
pub unsafe extern "C" fn estargz_mount_status(
    mount: *const estargz_mount,
    out_status: *mut estargz_mount_info,
) -> estargz_result {
    ffi_call!(mount => |m| {
        let out = try_versioned_out!(out_status);
        let mount = m.lock();
        let stats = mount.fetch_stats();
        out.write(estargz_mount_info {
            struct_size: 0,
            fetched_bytes: stats.as_ref().map_or(0, |s| s.bytes),
            fetch_requests: stats.as_ref().map_or(0, |s| s.requests),
            mounted: mount.is_mounted(),
        });
        Ok(())
    })
}

/// The TOC digest of the mounted layer ("sha256:..."), or NULL when `mount`
/// is NULL. Owned by the handle, valid until estargz_mount_free.
#[no_mangle]
pub unsafe extern "C" fn estargz_mount_toc_digest(mount: *const estargz_mount) -> *const c_char {
    ffi_value!(std::ptr::null(), mount => |m| m.toc_digest.as_ptr())
}

/// Copies the access record of the mount (JSON, as `estargz-fuse mount
/// --record-access FILE` writes it: `version`, `layers[]` with one layer
/// and its `files` in first-access order) into `buf` with snprintf
/// semantics. What was recorded so far while mounted; the final record
/// after estargz_mount_unmount. ESTARGZ_INVALID_ARGUMENT when the mount
/// was made without estargz_mount_options_set_record_access.
#[no_mangle]
pub unsafe extern "C" fn estargz_mount_access_record(
    mount: *const estargz_mount,
    buf: *mut c_char,
    len: usize,
    out_n: *mut usize,
) -> estargz_result {
    ffi_call!(mount => |m| {
        let Some(recorder) = &m.recorder else {
            return Err(Error::InvalidArgument(
                "the mount does not record accesses (estargz_mount_options_set_record_access)".into(),
            )
            .into());
        };
        copy_str_out!(&recorder.record().to_json() => buf, len, out_n);
        Ok(())
    })
}

/// Unmounts the file system and waits for its threads to stop. A mount in
/// use (open files, an overlay mounted over it) is refused with ESTARGZ_IO
/// ("Device or resource busy") and stays mounted and served, so the call
/// can be repeated; unmounting an unmounted mount succeeds. The handle
/// still needs estargz_mount_free.
#[no_mangle]
pub unsafe extern "C" fn estargz_mount_unmount(mount: *mut estargz_mount) -> estargz_result {
    ffi_call!(mount => |m| Ok(m.lock().unmount()?))
}

/// Copies the message of the last failed call on `mount` (from any
/// thread) into `buf` (snprintf semantics; see estargz_reader_last_error).
#[no_mangle]
pub unsafe extern "C" fn estargz_mount_last_error(
    mount: *const estargz_mount,
    buf: *mut c_char,
    len: usize,
    out_n: *mut usize,
) -> estargz_result {
    ffi_last_error!(mount, buf, len, out_n)
}

/// Releases a mount handle, unmounting first if needed; a busy mount is
/// then detached lazily (as `umount -l`: gone from the mount table now,
/// served until its last user lets go). NULL is accepted (no-op).
#[no_mangle]
pub unsafe extern "C" fn estargz_mount_free(mount: *mut estargz_mount) {
    ffi_free!(mount)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_map_to_the_fuse_crate() {
        let remote = RemoteOptions::default();
        let m = MountSettings::default();
        let o = mount_options(&m, &remote, true);
        assert!(o.warm.prefetch && o.warm.background);
        assert_eq!(o.passthrough, None, "no cache directory, no passthrough");
        assert!(!mount_options(&m, &remote, false).warm.background);
        let mut remote = remote;
        remote.cache.dir = Some("/c".into());
        let o = mount_options(&m, &remote, true);
        assert_eq!(o.passthrough.unwrap().0, std::path::Path::new("/c"));
        assert_eq!(o.warm.cache_budget, remote.cache.disk_size);
    }
}
