//! How to reach registries: `--plain-http`, `--insecure-registry`,
//! `--auth-file`, `--request-timeout`, `--retries`, `--registries-conf`,
//! `--certs-dir`, `--hosts-dir`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use crate::config::Key;
use estargz_core::remote::{HttpOptions, RegistriesConf, Registry};
use estargz_core::Error;

#[derive(Args, Debug, Clone)]
pub struct RegistryArgs {
    /// Talk plain HTTP to every registry.
    #[arg(long)]
    pub plain_http: bool,
    /// A registry (host[:port]) reached over plain HTTP; repeatable.
    #[arg(long, value_name = "HOST")]
    pub insecure_registry: Vec<String>,
    /// Auth file to use instead of the containers/docker defaults (its
    /// credHelpers / credsStore helpers are run as docker-credential-NAME).
    #[arg(long, value_name = "FILE")]
    pub auth_file: Option<PathBuf>,
    /// Per-request timeout in seconds.
    #[arg(long, alias = "timeout", default_value_t = 30)]
    pub request_timeout: u64,
    /// Retries per request on network errors, 429 and 5xx.
    #[arg(long, default_value_t = 5)]
    pub retries: u32,
    /// containers-registries.conf(5) file (mirrors, rewrites, insecure and
    /// blocked registries) instead of $CONTAINERS_REGISTRIES_CONF or
    /// /etc/containers/registries.conf and registries.conf.d/.
    #[arg(long, value_name = "FILE")]
    pub registries_conf: Option<PathBuf>,
    /// Directory of per-registry TLS files (DIR/HOST[:PORT]/{ca.crt,
    /// client.cert, client.key}) instead of /etc/containers/certs.d and
    /// /etc/docker/certs.d; repeatable, searched in order.
    #[arg(long, value_name = "DIR")]
    pub certs_dir: Vec<PathBuf>,
    /// containerd's registry host directory (its `config_path`, e.g.
    /// /etc/containerd/certs.d): a registry with a DIR/HOST[:PORT]/hosts.toml
    /// (or DIR/_default/hosts.toml) is pulled from its mirrors and `server`
    /// instead of what registries.conf says. Default: none.
    #[arg(long, value_name = "DIR")]
    pub hosts_dir: Option<PathBuf>,
}

impl RegistryArgs {
    /// Config-file keys of these flags (see [`crate::config`]). A process
    /// may apply them again while it runs: they only shape new requests.
    pub const CONFIG_KEYS: &'static [Key] = &[
        Key::new("plain_http", "plain_http"),
        Key::new("insecure_registries", "insecure_registry"),
        Key::new("auth_file", "auth_file"),
        Key::new("request_timeout_sec", "request_timeout"),
        Key::new("retries", "retries"),
        Key::new("registries_conf", "registries_conf"),
        Key::new("certs_dirs", "certs_dir"),
        Key::new("hosts_dir", "hosts_dir"),
    ];

    /// The per-request time limit (at least a second: 0 would fail every
    /// request at once).
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout.max(1))
    }

    /// The options, with registries.conf read (a bad file is an error
    /// here, at start-up, naming the file).
    pub fn http_options(&self) -> Result<HttpOptions, Error> {
        let conf = RegistriesConf::load(self.registries_conf.as_deref())?;
        let mut opts = HttpOptions::default()
            .plain_http(self.plain_http)
            .insecure_registries(self.insecure_registry.clone())
            .request_timeout(self.request_timeout())
            .retries(self.retries)
            .registries_conf(Arc::new(conf))
            .hosts_dir(self.hosts_dir.clone());
        if let Some(f) = &self.auth_file {
            opts.auth_files = vec![f.clone()];
        }
        if !self.certs_dir.is_empty() {
            opts.certs_dirs = self.certs_dir.clone();
        }
        Ok(opts)
    }

    pub fn registry(&self) -> Result<Registry, Error> {
        Ok(Registry::new(self.http_options()?))
    }
}
