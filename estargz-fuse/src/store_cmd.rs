//! `estargz-fuse store MOUNTPOINT`: the Additional Layer Store process.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use estargz_args::config::{ConfigFile, Key};
use estargz_args::{CacheArgs, RegistryArgs};
use estargz_fuse::daemon::{self, Hangup};
use estargz_fuse::store::resolve::{RegistrySource, Resolver, ResolverOptions};
use estargz_fuse::store::{Store, StoreOptions};
use estargz_fuse::store_adapter::FuseStore;
use fuser::{Config, MountOption, SessionACL};

use crate::{RecordArgs, ServeArgs, WarmArgs};

/// Layers fetched in the background at once, as stargz-store's default:
/// more would compete with on-demand reads for the link.
const MAX_BACKGROUND_FETCHES: usize = 2;

/// Read when `--config` is not given (like the snapshotter's
/// `/etc/estargz-snapshotter/config.toml`); a missing file means none.
pub const DEFAULT_CONFIG: &str = "/etc/estargz-store/config.toml";

#[derive(Args)]
pub struct StoreArgs {
    /// Where to serve the store (created if missing; mount it before
    /// starting podman or CRI-O).
    mountpoint: PathBuf,
    // The help names the default path.
    #[arg(long, value_name = "FILE", help = format!("TOML file of these options (keys in README; default {DEFAULT_CONFIG} if present); flags win over it; SIGHUP re-reads its registry settings"))]
    config: Option<PathBuf>,
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

impl StoreArgs {
    /// The store's own config-file keys, and which flag each sets.
    const CONFIG_KEYS: &'static [Key] = &[
        Key::new("image_ttl_sec", "image_ttl"),
        Key::new("idle_unload_sec", "idle_unload"),
        Key::negated("allow_other", "no_allow_other"),
    ];
}

/// Every key of the store's config file.
pub fn config_keys() -> Vec<Key> {
    [
        RegistryArgs::CONFIG_KEYS,
        CacheArgs::CONFIG_KEYS,
        WarmArgs::CONFIG_KEYS,
        StoreArgs::CONFIG_KEYS,
        ServeArgs::CONFIG_KEYS,
        RecordArgs::CONFIG_KEYS,
    ]
    .concat()
}

/// The keys a running store applies on SIGHUP: registry settings (for
/// images and layers fetched afterwards) and the log level.
fn reloadable(key: &str) -> bool {
    key == "log_level" || RegistryArgs::CONFIG_KEYS.iter().any(|k| k.name == key)
}

/// The store's options again, from the command line and the config file as
/// they are now (for SIGHUP).
pub type Reparse = Box<dyn Fn() -> Result<(StoreArgs, Option<ConfigFile>), String> + Send>;

pub fn run(args: &StoreArgs, file: Option<ConfigFile>, reparse: Reparse) -> Result<(), String> {
    if let Some(c) = &file {
        log::info!("settings from {}", c.path().display());
    }
    let _metrics = args.serve.start_metrics()?;
    let cache = args.cache.open().map_err(|e| e.to_string())?;
    let source = Arc::new(RegistrySource::new(
        args.registry.registry().map_err(|e| e.to_string())?,
        cache,
        args.cache.cache_dir.clone(),
    ));
    let resolver = Resolver::new(
        source.clone(),
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

    let reloaded = source.clone();
    let mut current = file;
    let reload = move || match reparse() {
        Err(e) => log::error!("SIGHUP: settings not reloaded, keeping the old ones: {e}"),
        Ok((new, file)) => match new.registry.registry() {
            Err(e) => log::error!("SIGHUP: settings not reloaded, keeping the old ones: {e}"),
            Ok(registry) => {
                reloaded.set_registry(registry);
                log::set_max_level(new.serve.log_level);
                let empty = ConfigFile::default();
                let keys = config_keys();
                let fixed: Vec<_> = file
                    .as_ref()
                    .unwrap_or(&empty)
                    .changed(current.as_ref().unwrap_or(&empty), &keys)
                    .into_iter()
                    .filter(|k| !reloadable(k))
                    .collect();
                if !fixed.is_empty() {
                    log::warn!(
                        "SIGHUP: {} changed; restart the store to apply {}",
                        fixed.join(", "),
                        if fixed.len() == 1 { "it" } else { "them" }
                    );
                }
                log::info!(
                    "SIGHUP: registry settings reloaded{}; they apply to images and layers fetched from now on",
                    file.as_ref()
                        .map(|f| format!(" from {}", f.path().display()))
                        .unwrap_or_default()
                );
                current = file;
            }
        },
    };
    daemon::unmount_on_stop_signals(
        session.unmount_callable(),
        args.mountpoint.clone(),
        Hangup::Reload(Box::new(reload)),
    );
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cli, Cmd};
    use std::ffi::OsString;
    use std::path::Path;

    fn store_args(file: &str, flags: &[&str]) -> Result<StoreArgs, String> {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("store.toml");
        std::fs::write(&cfg, file).unwrap();
        let mut argv: Vec<OsString> = vec!["estargz-fuse".into(), "store".into(), "/mnt".into()];
        argv.extend(["--config".into(), cfg.into()]);
        argv.extend(flags.iter().map(OsString::from));
        match crate::parse(&argv)? {
            (
                Cli {
                    command: Cmd::Store(a),
                },
                Some(_),
            ) => Ok(a),
            _ => panic!("not a store with a file"),
        }
    }

    #[test]
    fn every_config_key_sets_its_option() {
        let a = store_args(
            r#"
plain_http = true
insecure_registries = ["a:5000", "b"]
auth_file = "/etc/auth.json"
request_timeout_sec = 7
retries = 2
registries_conf = "/etc/r.conf"
certs_dirs = ["/c1", "/c2"]
hosts_dir = "/etc/containerd/certs.d"
cache_dir = "/var/cache/x"
disk_cache_size = 1000
memory_cache_size = 2000
prefetch = false
background_fetch = false
background_quiet_ms = 30
image_ttl_sec = 60
idle_unload_sec = 90
allow_other = false
threads = 3
log_file = "/var/log/s.log"
log_level = "debug"
metrics_address = "127.0.0.1:9100"
record_access = "/var/lib/r.json"
record_limit = 7
"#,
            &[],
        )
        .unwrap();
        let r = &a.registry;
        assert!(r.plain_http);
        assert_eq!(r.insecure_registry, ["a:5000", "b"]);
        assert_eq!(r.auth_file.as_deref(), Some(Path::new("/etc/auth.json")));
        assert_eq!((r.request_timeout, r.retries), (7, 2));
        assert_eq!(r.registries_conf.as_deref(), Some(Path::new("/etc/r.conf")));
        assert_eq!(r.certs_dir, [PathBuf::from("/c1"), PathBuf::from("/c2")]);
        assert_eq!(
            r.hosts_dir.as_deref(),
            Some(Path::new("/etc/containerd/certs.d"))
        );
        let c = &a.cache;
        assert_eq!(c.cache_dir.as_deref(), Some(Path::new("/var/cache/x")));
        assert_eq!((c.disk_cache_size, c.memory_cache_size), (1000, 2000));
        let w = a.warm.options(&a.cache, 1);
        assert!(!w.prefetch && !w.background);
        assert_eq!(w.silence, Duration::from_millis(30));
        assert_eq!((a.image_ttl, a.idle_unload), (60, 90));
        assert!(a.no_allow_other);
        assert_eq!(a.serve.threads, 3);
        assert_eq!(
            a.serve.log_file.as_deref(),
            Some(Path::new("/var/log/s.log"))
        );
        assert_eq!(a.serve.log_level, log::LevelFilter::Debug);
        // Every key of the store is in that file.
        assert_eq!(
            a.serve.metrics_address,
            Some("127.0.0.1:9100".parse().unwrap())
        );
        assert_eq!(
            a.record.record_access.as_deref(),
            Some(Path::new("/var/lib/r.json"))
        );
        assert_eq!(a.record.record_limit, 7);
        assert_eq!(config_keys().len(), 23);
    }

    #[test]
    fn flags_win_and_defaults_stay() {
        let a = store_args(
            "request_timeout_sec = 7\ninsecure_registries = [\"a\"]\nprefetch = true\n",
            &["--request-timeout", "9", "--insecure-registry", "c"],
        )
        .unwrap();
        assert_eq!(a.registry.request_timeout, 9);
        assert_eq!(a.registry.insecure_registry, ["c"]);
        assert!(!a.warm.no_prefetch);
        assert_eq!(a.image_ttl, 120);
        let e = store_args("threads = \"many\"\n", &[]).err().unwrap();
        assert!(e.contains("key `threads`"), "{e}");
    }
}
