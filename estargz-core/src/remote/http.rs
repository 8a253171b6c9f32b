//! One HTTP request to a registry, with authentication (anonymous, basic,
//! bearer token from `WWW-Authenticate`) and retries with backoff.

use std::collections::HashMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use ureq::http;

use super::auth::{self, Challenge, Credentials};
use super::certs;
use super::registries_conf::RegistriesConf;
use crate::error::{Error, Result};

/// Knobs of the HTTP layer; defaults follow stargz-snapshotter's.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HttpOptions {
    /// Use `http://` for every registry.
    pub plain_http: bool,
    /// Registries (`host[:port]`) reached over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// Bound on one attempt: connect, send, headers and body.
    pub request_timeout: Duration,
    /// Longest wait for a TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// Retries after the first attempt, on network errors, 429 and 5xx; an
    /// attempt that times out is retried once, so a registry that never
    /// answers fails an operation within two timeouts.
    pub retries: u32,
    /// First retry backoff (doubled per attempt, with jitter).
    pub min_backoff: Duration,
    /// Longest retry backoff.
    pub max_backoff: Duration,
    /// Auth files to search, in order (default: containers + docker files).
    pub auth_files: Vec<PathBuf>,
    /// Blob requests in flight at once to one registry host, whatever the
    /// number of layers read: also the number of kept-alive connections.
    pub max_connections_per_host: usize,
    /// `certs.d` directories searched for `<host>/` TLS files (CAs, client
    /// certificates), the first with that host's directory wins.
    pub certs_dirs: Vec<PathBuf>,
    /// Mirrors, location rewrites, insecure and blocked registries
    /// (default: none; front ends load the system's with
    /// [`RegistriesConf::load`]).
    pub registries_conf: Arc<RegistriesConf>,
    /// containerd's registry host directory (`config_path`, e.g.
    /// `/etc/containerd/certs.d`): a registry with a
    /// `<dir>/<host>/hosts.toml` (or `_default/hosts.toml`) is pulled from
    /// its mirrors and `server` instead of what registries.conf says, and
    /// a `<dir>/<host>/` without one is a `certs.d` directory searched
    /// before [`certs_dirs`](Self::certs_dirs). Default: none.
    pub hosts_dir: Option<PathBuf>,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            plain_http: false,
            insecure_registries: Vec::new(),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            retries: 5,
            min_backoff: Duration::from_millis(30),
            max_backoff: Duration::from_secs(5),
            auth_files: auth::default_auth_files(),
            max_connections_per_host: 4,
            certs_dirs: certs::default_certs_dirs(),
            registries_conf: Arc::new(RegistriesConf::default()),
            hosts_dir: None,
        }
    }
}

crate::options::option_setters!(HttpOptions {
    plain_http: bool,
    insecure_registries: Vec<String>,
    request_timeout: Duration,
    connect_timeout: Duration,
    retries: u32,
    min_backoff: Duration,
    max_backoff: Duration,
    auth_files: Vec<PathBuf>,
    max_connections_per_host: usize,
    certs_dirs: Vec<PathBuf>,
    registries_conf: Arc<RegistriesConf>,
    hosts_dir: Option<PathBuf>,
});

/// One configured host a pull may go to (a containerd hosts.toml mirror or
/// `server`): its API base URL, TLS files and extra headers. Requests that
/// carry it use these instead of the `certs.d` files of the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `scheme://host[:port]/path`; `/<repository>/...` follows.
    pub base: String,
    /// `host[:port]`.
    pub host: String,
    /// CA files trusted for it, on top of the system's.
    pub ca: Vec<PathBuf>,
    /// Its client certificate and key (`None`: the key is in the
    /// certificate file).
    pub client: Vec<(PathBuf, Option<PathBuf>)>,
    /// Do not verify its certificate.
    pub skip_verify: bool,
    /// Extra request headers.
    pub headers: Vec<(String, String)>,
    /// The file it came from, for messages.
    pub origin: PathBuf,
}

impl Endpoint {
    /// Whether it has TLS settings of its own (else the host's `certs.d`
    /// directory applies, as for any host).
    fn has_tls(&self) -> bool {
        !self.ca.is_empty() || !self.client.is_empty() || self.skip_verify
    }
}

/// A request body that can be replayed for retries.
#[derive(Clone, Copy)]
pub enum Body<'a> {
    /// No body.
    Empty,
    /// Bytes in memory.
    Bytes(&'a [u8]),
    /// A whole file.
    File(&'a Path),
    /// `len` bytes of a file from `offset` (one chunk of a chunked upload).
    FileRange {
        /// The file.
        path: &'a Path,
        /// Where the range starts.
        offset: u64,
        /// Its length.
        len: u64,
    },
}

/// What a request is, so it can be re-sent after a 401 or a failure.
pub struct Request<'a> {
    /// HTTP method.
    pub method: http::Method,
    /// Full URL.
    pub url: String,
    /// Headers besides `Authorization` (added per attempt).
    pub headers: Vec<(&'static str, String)>,
    /// The body, replayed on every attempt.
    pub body: Body<'a>,
    /// Host whose credentials apply; `None` for URLs outside the registry
    /// (redirect targets), which never get our `Authorization` header.
    pub auth_host: Option<String>,
    /// Token scope, e.g. `repository:library/alpine:pull`.
    pub scope: String,
    /// The configured host this request goes to (its TLS files and
    /// headers), if any.
    pub endpoint: Option<Arc<Endpoint>>,
}

impl<'a> Request<'a> {
    /// A GET of `url`.
    pub fn get(url: String, auth_host: Option<&str>, scope: &str) -> Request<'a> {
        Request {
            method: http::Method::GET,
            url,
            headers: Vec::new(),
            body: Body::Empty,
            auth_host: auth_host.map(str::to_string),
            scope: scope.to_string(),
            endpoint: None,
        }
    }
    /// Sends it with a configured host's settings.
    pub fn endpoint(mut self, endpoint: Option<Arc<Endpoint>>) -> Self {
        self.endpoint = endpoint;
        self
    }
    /// Adds a header.
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// The outcome of one attempt that a caller may want retried.
pub enum Attempt<T> {
    /// Finished, with this value.
    Done(T),
    /// Transient (network, timeout, 5xx): try again after a backoff.
    Retry(Error),
}

/// A response whose body is still to be read.
pub type Response = http::Response<ureq::Body>;

struct CachedAuth {
    header: String,
    expires: Option<Instant>,
}

/// Shared HTTP state: the agents, credentials and tokens.
pub struct Transport {
    /// For hosts without `certs.d` files.
    agent: ureq::Agent,
    /// Per host with `certs.d` files: an agent with its TLS settings, or
    /// why they could not be loaded (read once per process).
    host_agents: Mutex<HashMap<String, std::result::Result<ureq::Agent, Error>>>,
    /// Per configured endpoint with TLS settings (keyed by file and base).
    endpoint_agents: Mutex<HashMap<String, std::result::Result<ureq::Agent, Error>>>,
    /// Per registry host: its hosts.toml, read once (`None`: it has none).
    hosts: Mutex<HashMap<String, Option<Arc<super::hosts_toml::HostsConfig>>>>,
    opts: HttpOptions,
    auth_cache: Mutex<HashMap<(String, String), CachedAuth>>,
    /// Per registry host: the bound on blob requests in flight.
    host_slots: Mutex<HashMap<String, Arc<Slots>>>,
}

/// A counting semaphore (std has none).
pub struct Slots {
    free: Mutex<usize>,
    cv: Condvar,
}

/// One taken slot, given back when dropped.
pub struct SlotGuard(Arc<Slots>);

impl Slots {
    /// At most `n` holders at once.
    pub fn new(n: usize) -> Arc<Slots> {
        Arc::new(Slots {
            free: Mutex::new(n.max(1)),
            cv: Condvar::new(),
        })
    }

    /// Waits for a slot; it is given back when the guard drops.
    pub fn acquire(self: &Arc<Self>) -> SlotGuard {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        while *free == 0 {
            free = self.cv.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= 1;
        SlotGuard(self.clone())
    }

    /// Like `acquire`, giving up after `wait`.
    pub fn acquire_within(self: &Arc<Self>, wait: Duration) -> Option<SlotGuard> {
        let deadline = Instant::now() + wait;
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        while *free == 0 {
            let left = deadline.checked_duration_since(Instant::now())?;
            free = self
                .cv
                .wait_timeout(free, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        *free -= 1;
        Some(SlotGuard(self.clone()))
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.0.cv.notify_one();
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: String,
    #[serde(default)]
    access_token: String,
    #[serde(default)]
    expires_in: u64,
}

/// Attempts that may end in a timeout before an operation fails: a stuck
/// registry costs at most this many request timeouts.
const MAX_TIMEOUTS: u32 = 2;

/// Largest error or token body we read into memory.
const SMALL_BODY_LIMIT: u64 = 1 << 20;

impl Transport {
    /// A transport with its own connection pool.
    pub fn new(opts: HttpOptions) -> Transport {
        Transport {
            agent: agent(&opts, None),
            host_agents: Mutex::new(HashMap::new()),
            endpoint_agents: Mutex::new(HashMap::new()),
            hosts: Mutex::new(HashMap::new()),
            opts,
            auth_cache: Mutex::new(HashMap::new()),
            host_slots: Mutex::new(HashMap::new()),
        }
    }

    /// The hosts.toml of registry `host` in [`HttpOptions::hosts_dir`]
    /// (read once per transport; `None` without a directory or a file).
    pub fn hosts_config(&self, host: &str) -> Result<Option<Arc<super::hosts_toml::HostsConfig>>> {
        let Some(dir) = &self.opts.hosts_dir else {
            return Ok(None);
        };
        let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = hosts.get(host) {
            return Ok(c.clone());
        }
        // An error is not remembered: the file may be fixed.
        let c = super::hosts_toml::load(dir, host)?.map(Arc::new);
        hosts.insert(host.to_string(), c.clone());
        Ok(c)
    }

    /// The agent for `url`: the endpoint's TLS settings when it has some,
    /// else its host's `certs.d` TLS files if it has any.
    fn agent_for(&self, url: &str, endpoint: Option<&Endpoint>) -> Result<ureq::Agent> {
        let Some(rest) = url.strip_prefix("https://") else {
            return Ok(self.agent.clone());
        };
        let host = rest.split(['/', '?', '#']).next().unwrap_or("");
        if let Some(ep) = endpoint.filter(|e| e.has_tls() && e.host == host) {
            let key = format!("{}#{}", ep.origin.display(), ep.base);
            let mut agents = self
                .endpoint_agents
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(a) = agents.get(&key) {
                return a.clone();
            }
            let made = certs::tls_config_files(&ep.ca, &ep.client, ep.skip_verify)
                .map(|tls| agent(&self.opts, Some(tls)))
                .map_err(|e| {
                    Error::InvalidArgument(format!(
                        "TLS files for {} in {}: {e}",
                        ep.base,
                        ep.origin.display()
                    ))
                });
            agents.insert(key, made.clone());
            return made;
        }
        let mut agents = self.host_agents.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(a) = agents.get(host) {
            return a.clone();
        }
        let made = match certs::host_dir(&self.certs_dirs(), host) {
            None => Ok(self.agent.clone()),
            Some(dir) => certs::tls_config(&dir)
                .map(|tls| agent(&self.opts, Some(tls)))
                .map_err(|e| {
                    Error::InvalidArgument(format!(
                        "TLS files for {host} in {}: {e}",
                        dir.display()
                    ))
                }),
        };
        agents.insert(host.to_string(), made.clone());
        made
    }

    /// The `certs.d` directories searched: the hosts directory first.
    fn certs_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self.opts.hosts_dir.iter().cloned().collect();
        dirs.extend(self.opts.certs_dirs.iter().cloned());
        dirs
    }

    /// The `certs.d` directory a message about `host` should point to.
    fn certs_hint(&self, host: &str) -> String {
        let dirs = self.certs_dirs();
        match certs::host_dir(&dirs, host) {
            Some(d) => d.display().to_string(),
            None => match dirs.first() {
                Some(d) => d.join(host).display().to_string(),
                None => format!("certs.d/{host}"),
            },
        }
    }
}

/// An agent with our settings, and `tls` for a host with its own files.
fn agent(opts: &HttpOptions, tls: Option<ureq::tls::TlsConfig>) -> ureq::Agent {
    let mut config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .max_redirects_will_error(false)
        .timeout_global(Some(opts.request_timeout))
        .timeout_connect(Some(opts.connect_timeout))
        // Compressed layers must arrive byte for byte.
        .accept_encoding("identity")
        .user_agent(concat!("estargz-rs/", env!("CARGO_PKG_VERSION")))
        // Keep-alive: connections go back to the pool once a body is
        // read to its end, so a layer read file by file reuses a few
        // connections (and TLS sessions) instead of one per request.
        .max_idle_connections(64)
        .max_idle_connections_per_host(opts.max_connections_per_host.max(1))
        .max_idle_age(Duration::from_secs(60));
    if let Some(tls) = tls {
        config = config.tls_config(tls);
    }
    config.build().into()
}

impl Transport {
    /// Waits for a free request slot of `host` (see
    /// [`HttpOptions::max_connections_per_host`]), held while a response
    /// body is read. A registry whose slots are all stuck in requests that
    /// do not answer fails the waiter within the request timeout instead of
    /// queueing it behind them.
    pub fn host_slot(&self, host: &str) -> Result<SlotGuard> {
        let slots = self
            .host_slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(host.to_string())
            .or_insert_with(|| Slots::new(self.opts.max_connections_per_host))
            .clone();
        slots
            .acquire_within(self.opts.request_timeout)
            .ok_or_else(|| {
                Error::Timeout(format!(
                    "no connection to {host} became free within {:?}: the registry is not answering",
                    self.opts.request_timeout
                ))
            })
    }

    /// The options it was made with.
    pub fn options(&self) -> &HttpOptions {
        &self.opts
    }

    /// `https` unless the registry was named as plain-HTTP (by a flag or
    /// `insecure` in registries.conf).
    pub fn scheme(&self, host: &str) -> &'static str {
        if self.opts.plain_http
            || self.opts.insecure_registries.iter().any(|h| h == host)
            || self.opts.registries_conf.is_insecure(host)
        {
            "http"
        } else {
            "https"
        }
    }

    /// Runs `attempt` with exponential backoff and jitter until it is done,
    /// fails for good, or the retries run out.
    pub fn retry<T>(&self, what: &str, attempt: impl FnMut() -> Result<Attempt<T>>) -> Result<T> {
        self.retry_n(what, self.opts.retries, attempt)
    }

    /// [`Transport::retry`] with `retries` instead of the configured number
    /// (mirrors get fewer: the next source is their fallback).
    pub fn retry_n<T>(
        &self,
        what: &str,
        retries: u32,
        mut attempt: impl FnMut() -> Result<Attempt<T>>,
    ) -> Result<T> {
        let mut delay = self.opts.min_backoff;
        let mut timeouts = 0;
        for n in 0..=retries {
            match attempt()? {
                Attempt::Done(v) => return Ok(v),
                // A registry that let two attempts run into the timeout is
                // stuck, not flaky: fail now rather than after every retry
                // (callers, e.g. a FUSE lookup, are waiting).
                Attempt::Retry(e)
                    if n == retries
                        || (matches!(e, Error::Timeout(_)) && timeouts == MAX_TIMEOUTS - 1) =>
                {
                    return Err(with_context(
                        e,
                        &format!("{what} (after {} attempts)", n + 1),
                    ))
                }
                Attempt::Retry(e) => {
                    if matches!(e, Error::Timeout(_)) {
                        timeouts += 1;
                    }
                    std::thread::sleep(jitter(delay));
                    delay = (delay * 2).min(self.opts.max_backoff);
                }
            }
        }
        unreachable!("the loop returns on its last iteration")
    }

    /// Sends one request (re-sent once with fresh credentials after a 401).
    /// Transport failures come back as `Attempt::Retry`; HTTP statuses are
    /// left to the caller.
    pub fn send(&self, req: &Request) -> Result<Attempt<Response>> {
        let key = req
            .auth_host
            .as_ref()
            .map(|h| (h.clone(), req.scope.clone()));
        let cached = key.as_ref().and_then(|k| self.cached_auth(k));
        let resp = match self.send_once(req, cached.as_deref()) {
            Ok(r) => r,
            Err(e) => return self.retry_unless_tls(e, &req.url),
        };
        if resp.status() != 401 {
            return Ok(Attempt::Done(resp));
        }
        let (Some(key), Some(challenge)) = (key, header(&resp, "www-authenticate")) else {
            return Ok(Attempt::Done(resp));
        };
        let Some(challenge) = auth::parse_challenge(&challenge) else {
            return Ok(Attempt::Done(resp));
        };
        let header = match self.authorize(&key.0, &req.scope, &req.url, &challenge)? {
            Attempt::Done(h) => h,
            Attempt::Retry(e) => return Ok(Attempt::Retry(e)),
        };
        let resp = match self.send_once(req, Some(&header.header)) {
            Ok(r) => r,
            Err(e) => return self.retry_unless_tls(e, &req.url),
        };
        if resp.status() == 401 {
            return Err(Error::Unauthorized(format!(
                "{} {}: the registry rejected our credentials",
                req.method, req.url
            )));
        }
        self.auth_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, header);
        Ok(Attempt::Done(resp))
    }

    /// Transport errors are retried, except certificate problems: those
    /// stay until the configuration changes, and say what to change.
    fn retry_unless_tls<T>(&self, e: Error, url: &str) -> Result<Attempt<T>> {
        let Error::Network(msg) = &e else {
            return Ok(Attempt::Retry(e));
        };
        let host = url
            .split_once("://")
            .map_or(url, |(_, r)| r)
            .split(['/', '?', '#'])
            .next()
            .unwrap_or("");
        let hint = self.certs_hint(host);
        let lower = msg.to_ascii_lowercase();
        if lower.contains("invalid peer certificate") {
            let why = if lower.contains("unknownissuer") {
                "the certificate of {host} is not trusted: it is signed by an unknown CA"
            } else if lower.contains("notvalidforname") {
                "the certificate of {host} is not valid for that name"
            } else if lower.contains("expired") {
                "the certificate of {host} has expired"
            } else {
                "the certificate of {host} is not trusted"
            }
            .replace("{host}", host);
            return Err(Error::Network(format!(
                "{msg}: {why} (a private CA goes in {hint}/ca.crt)"
            )));
        }
        if lower.contains("received fatal alert") && lower.contains("certificate") {
            return Err(Error::Network(format!(
                "{msg}: {host} refused our TLS client certificate or wants one ({hint}/client.cert and client.key)"
            )));
        }
        Ok(Attempt::Retry(e))
    }

    fn cached_auth(&self, key: &(String, String)) -> Option<String> {
        let cache = self.auth_cache.lock().unwrap_or_else(|p| p.into_inner());
        let a = cache.get(key)?;
        match a.expires {
            Some(t) if t <= Instant::now() => None,
            _ => Some(a.header.clone()),
        }
    }

    fn send_once(&self, req: &Request, authorization: Option<&str>) -> Result<Response> {
        let mut builder = http::Request::builder()
            .method(req.method.clone())
            .uri(&req.url);
        for (name, value) in &req.headers {
            builder = builder.header(*name, value);
        }
        // A configured host's headers, never sent to redirect targets.
        let endpoint = req
            .endpoint
            .as_deref()
            .filter(|e| url_host(&req.url) == e.host);
        for (name, value) in endpoint.iter().flat_map(|e| &e.headers) {
            builder = builder.header(name.as_str(), value);
        }
        if let Some(a) = authorization {
            builder = builder.header("authorization", a);
        }
        let bad = |e: http::Error| Error::InvalidArgument(format!("request {}: {e}", req.url));
        let agent = self.agent_for(&req.url, endpoint)?;
        let result = match req.body {
            Body::Empty => agent.run(builder.body(()).map_err(bad)?),
            Body::Bytes(b) => agent.run(builder.body(b).map_err(bad)?),
            Body::File(path) => {
                let f = std::fs::File::open(path)
                    .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
                agent.run(builder.body(f).map_err(bad)?)
            }
            Body::FileRange { path, offset, len } => {
                use std::io::{Seek, SeekFrom};
                let mut f = std::fs::File::open(path)
                    .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
                f.seek(SeekFrom::Start(offset))
                    .map_err(|e| Error::io(format!("seeking in {}", path.display()), e))?;
                // An explicit length: ureq would otherwise send a reader chunked.
                let body = ureq::SendBody::from_owned_reader(f.take(len));
                builder = builder.header("content-length", len);
                agent.run(builder.body(body).map_err(bad)?)
            }
        };
        let counters = crate::metrics::global().request(url_host(&req.url));
        let resp = result.map_err(|e| ureq_error(e, &format!("{} {}", req.method, req.url)))?;
        // Every body byte read is counted for the host, whoever reads it.
        let (parts, body) = resp.into_parts();
        let counted = ureq::Body::builder().reader(CountedBody {
            inner: body.into_reader(),
            counters,
        });
        Ok(http::Response::from_parts(parts, counted))
    }

    /// Turns a challenge into an `Authorization` value (fetching a token
    /// for bearer challenges).
    fn authorize(
        &self,
        host: &str,
        scope: &str,
        url: &str,
        challenge: &Challenge,
    ) -> Result<Attempt<CachedAuth>> {
        let repository = scope
            .strip_prefix("repository:")
            .and_then(|s| s.rsplit_once(':'))
            .map(|(r, _)| r)
            .unwrap_or("");
        let creds = auth::find_credentials(&self.opts.auth_files, host, repository)?;
        match challenge {
            Challenge::Basic => {
                let creds = creds.ok_or_else(|| {
                    Error::Unauthorized(format!(
                        "{url}: the registry wants a password and no auth file has one for {host}"
                    ))
                })?;
                Ok(Attempt::Done(CachedAuth {
                    header: creds.basic_header(),
                    expires: None,
                }))
            }
            Challenge::Bearer {
                realm,
                service,
                scope: challenge_scope,
            } => {
                let scope = if scope.is_empty() {
                    challenge_scope.clone().unwrap_or_default()
                } else {
                    scope.to_string()
                };
                self.fetch_token(realm, service.as_deref(), &scope, creds.as_ref())
            }
        }
    }

    fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        creds: Option<&Credentials>,
    ) -> Result<Attempt<CachedAuth>> {
        if !(realm.starts_with("https://") || realm.starts_with("http://")) {
            return Err(Error::Registry(format!(
                "token realm {realm:?} is not an http(s) URL"
            )));
        }
        let mut query = Vec::new();
        if let Some(s) = service {
            query.push(format!("service={}", url_encode(s)));
        }
        if !scope.is_empty() {
            query.push(format!("scope={}", url_encode(scope)));
        }
        let sep = if realm.contains('?') { '&' } else { '?' };
        let url = format!("{realm}{sep}{}", query.join("&"));
        let refresh_token = creds.filter(|c| c.username == "<token>");
        let body;
        let mut req = Request::get(url.clone(), None, "");
        if let Some(c) = refresh_token {
            // Identity tokens go through the OAuth2 refresh-token grant.
            body = format!(
                "grant_type=refresh_token&client_id=estargz-rs&refresh_token={}&service={}&scope={}",
                url_encode(&c.password),
                url_encode(service.unwrap_or("")),
                url_encode(scope)
            );
            req.method = http::Method::POST;
            req.url = realm.to_string();
            req.body = Body::Bytes(body.as_bytes());
            req = req.header("content-type", "application/x-www-form-urlencoded");
        }
        let creds_header = creds
            .filter(|c| c.username != "<token>")
            .map(Credentials::basic_header);
        let mut resp = match self.send_once(&req, creds_header.as_deref()) {
            Ok(r) => r,
            Err(e) => return self.retry_unless_tls(e, &req.url),
        };
        let status = resp.status().as_u16();
        if status == 401 || status == 403 {
            return Err(Error::Unauthorized(format!(
                "token server {realm} refused {} for scope {scope:?} (HTTP {status})",
                if creds.is_some() {
                    "our credentials"
                } else {
                    "anonymous access"
                }
            )));
        }
        if status >= 500 || status == 429 {
            return Ok(Attempt::Retry(Error::Registry(format!(
                "token server {realm}: HTTP {status}"
            ))));
        }
        if status != 200 {
            return Err(Error::Registry(format!(
                "token server {realm}: HTTP {status}"
            )));
        }
        let bytes = match read_small_body(&mut resp) {
            Ok(b) => b,
            Err(e) => return Ok(Attempt::Retry(with_context(e, "reading a token"))),
        };
        let t: TokenResponse = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Registry(format!("token server {realm}: bad JSON: {e}")))?;
        let token = if t.token.is_empty() {
            t.access_token
        } else {
            t.token
        };
        if token.is_empty() {
            return Err(Error::Registry(format!(
                "token server {realm} returned no token"
            )));
        }
        // Renew a little early; 60 s is the spec's default lifetime.
        let lifetime = if t.expires_in == 0 { 60 } else { t.expires_in };
        Ok(Attempt::Done(CachedAuth {
            header: format!("Bearer {token}"),
            expires: Some(Instant::now() + Duration::from_secs(lifetime.saturating_sub(5).max(1))),
        }))
    }
}

/// A response header as text.
pub fn header(resp: &Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Reads what is left of a body (a multipart epilogue, a final empty read)
/// so the connection goes back to the pool; a body with more than a little
/// left is dropped instead, which closes its connection.
pub fn finish_body(body: &mut impl Read) {
    const MAX_DRAIN: u64 = 64 << 10;
    let _ = io::copy(&mut body.take(MAX_DRAIN), &mut io::sink());
}

/// `host[:port]` of a URL.
fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', '?', '#']).next().unwrap_or("")
}

/// A response body that adds what is read to its host's byte counter.
struct CountedBody {
    inner: ureq::BodyReader<'static>,
    counters: Arc<crate::metrics::HostCounters>,
}

impl Read for CountedBody {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.counters.add_bytes(n as u64);
        Ok(n)
    }
}

/// Reads a body we expect to be small (JSON, errors), bounded.
pub fn read_small_body(resp: &mut Response) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    resp.body_mut()
        .as_reader()
        .take(SMALL_BODY_LIMIT + 1)
        .read_to_end(&mut out)
        .map_err(|e| io_error(e, "reading a response body"))?;
    if out.len() as u64 > SMALL_BODY_LIMIT {
        return Err(Error::LimitExceeded(format!(
            "response body over {SMALL_BODY_LIMIT} bytes"
        )));
    }
    Ok(out)
}

/// Converts an error status into either a fatal error or a retry.
pub fn fail_or_retry<T>(what: &str, resp: &mut Response) -> Result<Attempt<T>> {
    let status = resp.status().as_u16();
    let body = read_small_body(resp).unwrap_or_default();
    let detail = String::from_utf8_lossy(&body[..body.len().min(300)])
        .trim()
        .to_string();
    let msg = if detail.is_empty() {
        format!("{what}: HTTP {status}")
    } else {
        format!("{what}: HTTP {status}: {detail}")
    };
    match status {
        401 | 403 => Err(Error::Unauthorized(msg)),
        404 => Err(Error::NotFound(msg)),
        429 | 500 | 502..=599 => Ok(Attempt::Retry(Error::Registry(msg))),
        _ => Err(Error::Registry(msg)),
    }
}

/// Maps a ureq error to ours: timeouts and network failures are distinct.
pub fn ureq_error(e: ureq::Error, what: &str) -> Error {
    match e {
        ureq::Error::Timeout(t) => Error::Timeout(format!("{what}: {t}")),
        ureq::Error::Io(io) => io_error(io, what),
        ureq::Error::BadUri(u) => Error::InvalidArgument(format!("{what}: bad URL {u}")),
        ureq::Error::Http(h) => Error::InvalidArgument(format!("{what}: {h}")),
        other => Error::Network(format!("{what}: {other}")),
    }
}

/// Maps a body-read error: ureq reports its timeouts as `TimedOut`.
pub fn io_error(e: io::Error, what: &str) -> Error {
    if e.kind() == io::ErrorKind::TimedOut || e.to_string().contains("timeout") {
        Error::Timeout(format!("{what}: {e}"))
    } else {
        Error::Network(format!("{what}: {e}"))
    }
}

/// Prefixes an error's message with what was being done.
pub fn with_context(e: Error, what: &str) -> Error {
    e.with_context(what)
}

/// Uniform jitter in [d, 2d) without a random-number dependency.
fn jitter(d: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    let frac = (h.finish() % 1000) as u32;
    d + d * frac / 1000
}

/// Percent-encoding for query values.
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
