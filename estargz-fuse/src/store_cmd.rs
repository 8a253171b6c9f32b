//! `estargz-fuse store MOUNTPOINT`: the Additional Layer Store process.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use estargz_args::{CacheArgs, RegistryArgs};
use estargz_fuse::daemon;
use estargz_fuse::store::resolve::{RegistrySource, Resolver, ResolverOptions};
use estargz_fuse::store::{Store, StoreOptions};
use estargz_fuse::store_adapter::FuseStore;
use fuser::{Config, MountOption, SessionACL};

use crate::{RecordArgs, ServeArgs, WarmArgs};

/// Layers fetched in the background at once, as stargz-store's default:
/// more would compete with on-demand reads for the link.
const MAX_BACKGROUND_FETCHES: usize = 2;

#[derive(Args)]
pub struct StoreArgs {
    /// Where to serve the store (created if missing; mount it before
    /// starting podman or CRI-O).
    mountpoint: PathBuf,
    #[command(flatten)]
    registry: RegistryArgs,
    // Chunk caches, shared by all layers.
    #[command(flatten)]
    cache: CacheArgs,
    #[command(flatten)]
    warm: WarmArgs,
    /// Seconds a fetched manifest + config is reused.
    #[arg(long, default_value_t = 120)]
    image_ttl: u64,
    /// Seconds before a layer that was looked up but never used is unloaded.
    #[arg(long, default_value_t = 120)]
    idle_unload: u64,
    /// Only the store's own user may use it (rootless setups inside
    /// `podman unshare`); by default everyone may, as overlay needs.
    #[arg(long)]
    no_allow_other: bool,
    #[command(flatten)]
    record: RecordArgs,
    #[command(flatten)]
    pub serve: ServeArgs,
}

pub fn run(args: &StoreArgs) -> Result<(), String> {
    let cache = args.cache.open().map_err(|e| e.to_string())?;
    let source = Arc::new(RegistrySource {
        registry: args.registry.registry().map_err(|e| e.to_string())?,
        cache,
        span_dir: args.cache.cache_dir.clone(),
    });
    let resolver = Resolver::new(
        source,
        ResolverOptions::default().image_ttl(Duration::from_secs(args.image_ttl)),
    );
    let recorder = args.record.recorder();
    let store = Arc::new(Store::new(
        resolver,
        StoreOptions::default()
            .idle_unload(Duration::from_secs(args.idle_unload))
            // A lookup waits no longer than one request may take: a stuck
            // registry is EIO then, while the resolution goes on.
            .resolve_timeout(args.registry.request_timeout())
            .warm(args.warm.options(&args.cache, MAX_BACKGROUND_FETCHES))
            .record(recorder.clone()),
    ));
    std::fs::create_dir_all(&args.mountpoint)
        .map_err(|e| format!("creating {}: {e}", args.mountpoint.display()))?;
    let mut config = Config::default();
    // Not read-only: `use` (create) and release (rmdir) must reach us.
    // suid as stargz-store (setuid programs of the layers keep their bits);
    // only the store's owner can reach a layer (namespace dirs are 0500).
    config.mount_options = vec![
        MountOption::FSName("estargz-store".into()),
        MountOption::Subtype("estargz-store".into()),
        MountOption::DefaultPermissions,
        MountOption::Suid,
    ];
    if !args.no_allow_other {
        config.acl = SessionACL::All;
    }
    config.n_threads = Some(args.serve.threads.max(1));
    config.clone_fd = true;
    let mut session = fuser::Session::new(FuseStore::new(store.clone()), &args.mountpoint, &config)
        .map_err(|e| format!("mounting the store at {}: {e}", args.mountpoint.display()))?;
    log::info!("layer store mounted at {}", args.mountpoint.display());

    daemon::unmount_on_stop_signals(session.unmount_callable(), args.mountpoint.clone());
    let reaper = Arc::downgrade(&store);
    std::thread::Builder::new()
        .name("reaper".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_secs(10));
            match reaper.upgrade() {
                Some(s) => s.reap(),
                None => return,
            }
        })
        .map_err(|e| format!("starting the reaper: {e}"))?;
    daemon::report_to_parent(Ok(()));

    let result = daemon::session_ended(session.run());
    let s = store.stats();
    log::info!(
        "store stopping: {} layer(s) known, {} loaded, {} use(s)",
        s.slots,
        s.loaded,
        s.uses
    );
    let recorded = args.record.write(recorder.as_ref());
    result.map_err(|e| format!("serving {}: {e}", args.mountpoint.display()))?;
    log::info!("unmounted {}", args.mountpoint.display());
    recorded
}
