//! How to reach registries: `--plain-http`, `--insecure-registry`,
//! `--auth-file`, `--request-timeout`, `--retries`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use estargz_core::remote::{HttpOptions, Registry};

#[derive(Args, Debug, Clone)]
pub struct RegistryArgs {
    /// Talk plain HTTP to every registry.
    #[arg(long)]
    pub plain_http: bool,
    /// A registry (host[:port]) reached over plain HTTP; repeatable.
    #[arg(long, value_name = "HOST")]
    pub insecure_registry: Vec<String>,
    /// Auth file to use instead of the containers/docker defaults.
    #[arg(long, value_name = "FILE")]
    pub auth_file: Option<PathBuf>,
    /// Per-request timeout in seconds.
    #[arg(long, alias = "timeout", default_value_t = 30)]
    pub request_timeout: u64,
    /// Retries per request on network errors, 429 and 5xx.
    #[arg(long, default_value_t = 5)]
    pub retries: u32,
}

impl RegistryArgs {
    /// The per-request time limit (at least a second: 0 would fail every
    /// request at once).
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout.max(1))
    }

    pub fn http_options(&self) -> HttpOptions {
        let mut opts = HttpOptions::default()
            .plain_http(self.plain_http)
            .insecure_registries(self.insecure_registry.clone())
            .request_timeout(self.request_timeout())
            .retries(self.retries);
        if let Some(f) = &self.auth_file {
            opts.auth_files = vec![f.clone()];
        }
        opts
    }

    pub fn registry(&self) -> Registry {
        Registry::new(self.http_options())
    }
}
