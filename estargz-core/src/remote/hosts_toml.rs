//! containerd's registry host configuration,
//! `<config_path>/<host[:port]>/hosts.toml` (or `_default/hosts.toml`):
//! `server` (the upstream) and `[host."URL"]` mirrors in file order, each
//! with `capabilities`, `ca`, `client`, `skip_verify`, `override_path` and
//! `[header]`; the same keys at the top level apply to `server`.
//!
//! [`HostsConfig::pull_sources`] turns a file into the same pull sources
//! registries.conf gives, so mirror selection, fallback and TLS are one
//! implementation (the transport reads the file when
//! [`HttpOptions::hosts_dir`](super::HttpOptions::hosts_dir) is set).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::http::Endpoint;
use super::reference::Reference;
use super::registries_conf::PullSource;
use crate::error::{Error, Result};

/// What a host may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Fetch content by digest.
    pub pull: bool,
    /// Resolve a tag to a digest.
    pub resolve: bool,
    /// Push content.
    pub push: bool,
}

impl Capabilities {
    /// containerd's default for a listed host and for `server`.
    pub const ALL: Capabilities = Capabilities {
        pull: true,
        resolve: true,
        push: true,
    };
}

/// One endpoint: a `[host."…"]` table or the `server`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEndpoint {
    /// `http` or `https`.
    pub scheme: String,
    /// `host[:port]`.
    pub host: String,
    /// The API path: `/v2` unless `override_path` gives the whole path.
    pub path: String,
    /// What it may be used for.
    pub capabilities: Capabilities,
    /// CA files (relative paths are relative to the hosts.toml directory).
    pub ca: Vec<PathBuf>,
    /// Client certificates with their keys (`None`: the key is in the
    /// certificate file).
    pub client: Vec<(PathBuf, Option<PathBuf>)>,
    /// Skip TLS verification (unset: verify).
    pub skip_verify: bool,
    /// Extra request headers.
    pub headers: BTreeMap<String, Vec<String>>,
}

/// One parsed hosts.toml.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostsConfig {
    /// The mirrors, in file order.
    pub mirrors: Vec<HostEndpoint>,
    /// The upstream (`server`, default `https://<host>`), tried last.
    pub server: HostEndpoint,
    /// Whether `server` was written (else the registry itself, reached as
    /// without the file: plain HTTP if configured so, Docker Hub's API host).
    pub server_explicit: bool,
    /// The file, for messages.
    pub file: PathBuf,
    /// Keys this parser does not know (newer containerd versions add
    /// some): logged and ignored, listed for callers that want to refuse.
    pub unknown_keys: Vec<String>,
}

/// Largest hosts.toml read.
const MAX_HOSTS_FILE: u64 = 1 << 20;

/// Keys of a host table (and of the top level, with `server`).
const HOST_KEYS: &[&str] = &[
    "capabilities",
    "ca",
    "client",
    "skip_verify",
    "override_path",
    "header",
];

/// Reads `<config_path>/<host>/hosts.toml`, else
/// `<config_path>/_default/hosts.toml`; `None` if neither exists.
pub fn load(config_path: &Path, host: &str) -> Result<Option<HostsConfig>> {
    if host.is_empty() || host.contains('/') || host.starts_with('.') {
        return Err(Error::InvalidArgument(format!(
            "registry host {host:?} cannot name a hosts.toml directory"
        )));
    }
    for dir in [config_path.join(host), config_path.join("_default")] {
        let file = dir.join("hosts.toml");
        let text = match read_limited(&file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(format!("reading {}", file.display()), e)),
        };
        return parse(&text, host, &dir)
            .map(|c| {
                Some(HostsConfig {
                    file: file.clone(),
                    ..c
                })
            })
            .map_err(|e| Error::InvalidArgument(format!("{}: {e}", file.display())));
    }
    Ok(None)
}

fn read_limited(file: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(file)?
        .take(MAX_HOSTS_FILE + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > MAX_HOSTS_FILE {
        return Err(std::io::Error::other(format!(
            "over {MAX_HOSTS_FILE} bytes"
        )));
    }
    Ok(text)
}

/// Parses hosts.toml text for registry `host`; relative file names are
/// resolved against `dir`. Known keys with wrong values are errors naming
/// them; unknown keys are collected in [`HostsConfig::unknown_keys`].
pub fn parse(text: &str, host: &str, dir: &Path) -> std::result::Result<HostsConfig, String> {
    let table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    let mut unknown_keys = Vec::new();
    for key in table.keys() {
        if key != "server" && key != "host" && !HOST_KEYS.contains(&key.as_str()) {
            log::warn!("hosts.toml of {host}: ignoring unknown key {key:?}");
            unknown_keys.push(key.clone());
        }
    }
    let server_url = match table.get("server") {
        None => format!("https://{host}"),
        Some(toml::Value::String(s)) => s.clone(),
        Some(_) => return Err("server must be a URL string".into()),
    };
    let server = endpoint(&server_url, &table, dir, "server")?;
    let mut mirrors = Vec::new();
    match table.get("host") {
        None => {}
        Some(toml::Value::Table(hosts)) => {
            // File order (the toml table keeps it): containerd tries them so.
            for (url, t) in hosts {
                let toml::Value::Table(t) = t else {
                    return Err(format!("host.{url:?} must be a table"));
                };
                for key in t.keys() {
                    if !HOST_KEYS.contains(&key.as_str()) {
                        log::warn!(
                            "hosts.toml of {host}: host.{url:?}: ignoring unknown key {key:?}"
                        );
                        unknown_keys.push(format!("host.{url:?}.{key}"));
                    }
                }
                mirrors.push(endpoint(url, t, dir, &format!("host.{url:?}"))?);
            }
        }
        Some(_) => return Err("host must be a table of [host.\"URL\"] tables".into()),
    }
    Ok(HostsConfig {
        mirrors,
        server,
        server_explicit: table.contains_key("server"),
        file: dir.join("hosts.toml"),
        unknown_keys,
    })
}

impl HostsConfig {
    /// Where a pull of `r` fetches from, in file order: the mirrors, then
    /// `server`, each only if its `capabilities` allow the request (`resolve`
    /// for a manifest by tag, `pull` for a manifest by digest and for
    /// blobs; `manifest_by_digest` as in
    /// [`RegistriesConf::pull_sources`](super::RegistriesConf::pull_sources)).
    /// `origin_scheme` is the registry's own scheme, used when `server` is
    /// not written.
    pub fn pull_sources(
        &self,
        r: &Reference,
        manifest_by_digest: Option<bool>,
        origin_scheme: &str,
    ) -> Result<Vec<PullSource>> {
        let allowed = |c: Capabilities| match manifest_by_digest {
            Some(false) => c.resolve,
            _ => c.pull,
        };
        let mut out = Vec::new();
        for m in self.mirrors.iter().filter(|m| allowed(m.capabilities)) {
            out.push(self.source(r, m, true, None));
        }
        if allowed(self.server.capabilities) {
            let origin =
                (!self.server_explicit).then(|| format!("{origin_scheme}://{}/v2", r.api_host()));
            out.push(self.source(r, &self.server, false, origin));
        }
        if out.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "{r}: no host in {} may {} it",
                self.file.display(),
                if manifest_by_digest == Some(false) {
                    "resolve"
                } else {
                    "pull"
                }
            )));
        }
        Ok(out)
    }

    fn source(
        &self,
        r: &Reference,
        e: &HostEndpoint,
        mirror: bool,
        base: Option<String>,
    ) -> PullSource {
        let (reference, base) = match base {
            // The registry itself: the reference as written.
            Some(base) => (r.clone(), base),
            None => (
                Reference {
                    host: e.host.clone(),
                    ..r.clone()
                },
                format!("{}://{}{}", e.scheme, e.host, e.path),
            ),
        };
        let endpoint = Endpoint {
            host: base
                .split_once("://")
                .map_or("", |(_, rest)| rest.split('/').next().unwrap_or(""))
                .to_string(),
            base,
            ca: e.ca.clone(),
            client: e.client.clone(),
            skip_verify: e.skip_verify,
            headers: e
                .headers
                .iter()
                .flat_map(|(k, vs)| vs.iter().map(move |v| (k.clone(), v.clone())))
                .collect(),
            origin: self.file.clone(),
        };
        PullSource {
            reference,
            mirror,
            endpoint: Some(Arc::new(endpoint)),
        }
    }
}

fn endpoint(
    url: &str,
    t: &toml::Table,
    dir: &Path,
    what: &str,
) -> std::result::Result<HostEndpoint, String> {
    let (scheme, rest) = match url.split_once("://") {
        Some((s @ ("http" | "https"), rest)) => (s.to_string(), rest),
        Some((s, _)) => return Err(format!("{what}: scheme {s:?} is not http or https")),
        None => ("https".to_string(), url),
    };
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if host.is_empty() || host.contains(['?', '#', '@', ' ']) {
        return Err(format!("{what}: {url:?} has no valid host"));
    }
    let override_path = match t.get("override_path") {
        None => false,
        Some(toml::Value::Boolean(b)) => *b,
        Some(_) => return Err(format!("{what}: override_path must be true or false")),
    };
    // Without override_path the path is a prefix before /v2.
    let path = if override_path {
        path.to_string()
    } else {
        format!("{path}/v2")
    };
    let capabilities = match t.get("capabilities") {
        None => Capabilities::ALL,
        Some(toml::Value::Array(a)) => {
            let mut c = Capabilities {
                pull: false,
                resolve: false,
                push: false,
            };
            for v in a {
                match v.as_str() {
                    Some("pull") => c.pull = true,
                    Some("resolve") => c.resolve = true,
                    Some("push") => c.push = true,
                    _ => {
                        return Err(format!(
                            "{what}: capability {v:?} is not pull, resolve or push"
                        ))
                    }
                }
            }
            c
        }
        Some(_) => return Err(format!("{what}: capabilities must be an array")),
    };
    let file = |v: &toml::Value| -> std::result::Result<PathBuf, String> {
        let s = v
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| format!("{what}: {v:?} is not a file name"))?;
        Ok(dir.join(s))
    };
    let ca = match t.get("ca") {
        None => Vec::new(),
        Some(v @ toml::Value::String(_)) => vec![file(v)?],
        Some(toml::Value::Array(a)) => {
            a.iter().map(&file).collect::<std::result::Result<_, _>>()?
        }
        Some(_) => {
            return Err(format!(
                "{what}: ca must be a file name or an array of them"
            ))
        }
    };
    // "cert" (key inside), or a list of "cert" and ["cert", "key"], as
    // containerd reads it.
    let pair = |v: &toml::Value| -> std::result::Result<(PathBuf, Option<PathBuf>), String> {
        match v {
            toml::Value::String(_) => Ok((file(v)?, None)),
            toml::Value::Array(p) if p.len() == 1 => Ok((file(&p[0])?, None)),
            toml::Value::Array(p) if p.len() == 2 => Ok((file(&p[0])?, Some(file(&p[1])?))),
            _ => Err(format!("{what}: client {v:?} is not a file or [cert, key]")),
        }
    };
    let client = match t.get("client") {
        None => Vec::new(),
        Some(v @ toml::Value::String(_)) => vec![pair(v)?],
        Some(toml::Value::Array(a)) => a.iter().map(pair).collect::<std::result::Result<_, _>>()?,
        Some(_) => return Err(format!("{what}: client must be a file, a pair or a list")),
    };
    let skip_verify = match t.get("skip_verify") {
        None => false,
        Some(toml::Value::Boolean(b)) => *b,
        Some(_) => return Err(format!("{what}: skip_verify must be true or false")),
    };
    let mut headers = BTreeMap::new();
    match t.get("header") {
        None => {}
        Some(toml::Value::Table(h)) => {
            for (k, v) in h {
                let values = match v {
                    toml::Value::String(s) => vec![s.clone()],
                    toml::Value::Array(a) => a
                        .iter()
                        .map(|x| x.as_str().map(str::to_string))
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| format!("{what}: header {k:?} must be strings"))?,
                    _ => return Err(format!("{what}: header {k:?} must be strings")),
                };
                headers.insert(k.clone(), values);
            }
        }
        Some(_) => return Err(format!("{what}: header must be a table")),
    }
    Ok(HostEndpoint {
        scheme,
        host: host.to_string(),
        path,
        capabilities,
        ca,
        client,
        skip_verify,
        headers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_in_file_order_and_the_server() {
        let dir = Path::new("/etc/containerd/certs.d/docker.io");
        let c = parse(
            r#"
server = "https://registry-1.docker.io"
ca = "server-ca.pem"

[host."https://z-mirror.example:5000"]
  capabilities = ["pull", "resolve"]
  ca = ["/abs/ca.pem", "rel.pem"]
  client = [["client.cert", "client.key"], "both.pem"]
  [host."https://z-mirror.example:5000".header]
    x-one = "1"
    x-many = ["a", "b"]

[host."http://a-mirror.example/prefix"]
  capabilities = ["pull"]
  skip_verify = true

[host."b-mirror.example/custom/v2/path"]
  override_path = true
  client = ["c.cert", "c.key"]
"#,
            "docker.io",
            dir,
        )
        .unwrap();
        let hosts: Vec<_> = c.mirrors.iter().map(|m| m.host.as_str()).collect();
        assert_eq!(
            hosts,
            [
                "z-mirror.example:5000",
                "a-mirror.example",
                "b-mirror.example"
            ]
        );
        let z = &c.mirrors[0];
        assert_eq!(
            z.capabilities,
            Capabilities {
                pull: true,
                resolve: true,
                push: false
            }
        );
        assert_eq!(z.ca, [PathBuf::from("/abs/ca.pem"), dir.join("rel.pem")]);
        assert_eq!(
            z.client,
            [
                (dir.join("client.cert"), Some(dir.join("client.key"))),
                (dir.join("both.pem"), None)
            ]
        );
        assert_eq!(z.headers["x-many"], ["a", "b"]);
        assert_eq!(z.path, "/v2");
        let a = &c.mirrors[1];
        assert_eq!((a.scheme.as_str(), a.path.as_str()), ("http", "/prefix/v2"));
        assert!(a.skip_verify && !a.capabilities.resolve);
        let b = &c.mirrors[2];
        assert_eq!(
            (b.scheme.as_str(), b.path.as_str()),
            ("https", "/custom/v2/path")
        );
        // A flat list is certificates with their keys inside (containerd).
        assert_eq!(
            b.client,
            [(dir.join("c.cert"), None), (dir.join("c.key"), None)]
        );
        assert!(c.unknown_keys.is_empty());
        assert_eq!(c.server.host, "registry-1.docker.io");
        assert_eq!(c.server.ca, [dir.join("server-ca.pem")]);
        assert_eq!(c.server.capabilities, Capabilities::ALL);
    }

    #[test]
    fn defaults_files_and_errors() {
        let c = parse("", "127.0.0.1:5000", Path::new("/x")).unwrap();
        assert!(c.mirrors.is_empty());
        assert_eq!(
            (c.server.scheme.as_str(), c.server.host.as_str()),
            ("https", "127.0.0.1:5000")
        );
        let c = parse(
            "srever = \"x\"\n[host.\"h\"]\nskip-verify = true\n",
            "h",
            Path::new("/x"),
        )
        .unwrap();
        assert_eq!(c.unknown_keys, ["srever", "host.\"h\".skip-verify"]);
        for (text, needle) in [
            ("[host.\"h\"]\ncapabilities = [\"fetch\"]", "fetch"),
            ("[host.\"h\"]\nskip_verify = \"yes\"", "skip_verify"),
            ("[host.\"ftp://h\"]", "ftp"),
            ("server = 5", "server"),
            ("[host.\"h\"]\nclient = [1]", "client"),
            ("[host", "expected"),
        ] {
            let e = parse(text, "h", Path::new("/x")).unwrap_err();
            assert!(e.contains(needle), "{text}: {e}");
        }
        let root = tempfile::tempdir().unwrap();
        assert!(load(root.path(), "reg:5000").unwrap().is_none());
        std::fs::create_dir(root.path().join("_default")).unwrap();
        std::fs::write(
            root.path().join("_default/hosts.toml"),
            "[host.\"https://m.example\"]\n",
        )
        .unwrap();
        assert_eq!(
            load(root.path(), "reg:5000").unwrap().unwrap().mirrors[0].host,
            "m.example"
        );
        std::fs::create_dir(root.path().join("reg:5000")).unwrap();
        std::fs::write(root.path().join("reg:5000/hosts.toml"), "server = 1\n").unwrap();
        let e = load(root.path(), "reg:5000").unwrap_err().to_string();
        assert!(
            e.contains("reg:5000/hosts.toml") && e.contains("server"),
            "{e}"
        );
        assert!(load(root.path(), "../etc").is_err());
    }

    #[test]
    fn pull_sources_follow_capabilities_and_server() {
        let dir = Path::new("/etc/containerd/certs.d/docker.io");
        let c = parse(
            r#"
[host."http://127.0.0.1:5001"]
  capabilities = ["pull"]
  [host."http://127.0.0.1:5001".header]
    x-a = ["1", "2"]
[host."https://resolver.example/prefix"]
  capabilities = ["resolve"]
  skip_verify = true
"#,
            "docker.io",
            dir,
        )
        .unwrap();
        let r = Reference::parse("docker.io/library/alpine:3").unwrap();
        let hosts = |s: &[PullSource]| -> Vec<(String, bool, String)> {
            s.iter()
                .map(|s| {
                    let e = s.endpoint.as_ref().unwrap();
                    (s.reference.host.clone(), s.mirror, e.base.clone())
                })
                .collect()
        };
        // A tag is resolved by resolve-capable hosts; the server (not
        // written) is Docker Hub's API host.
        let by_tag = c.pull_sources(&r, Some(false), "https").unwrap();
        assert_eq!(
            hosts(&by_tag),
            [
                (
                    "resolver.example".into(),
                    true,
                    "https://resolver.example/prefix/v2".into()
                ),
                (
                    "docker.io".into(),
                    false,
                    "https://registry-1.docker.io/v2".into()
                ),
            ]
        );
        assert!(by_tag[0].endpoint.as_ref().unwrap().skip_verify);
        // Blobs and pinned manifests come from pull-capable hosts.
        for which in [None, Some(true)] {
            let s = c.pull_sources(&r, which, "https").unwrap();
            assert_eq!(
                hosts(&s),
                [
                    (
                        "127.0.0.1:5001".into(),
                        true,
                        "http://127.0.0.1:5001/v2".into()
                    ),
                    (
                        "docker.io".into(),
                        false,
                        "https://registry-1.docker.io/v2".into()
                    ),
                ]
            );
            let e = s[0].endpoint.as_ref().unwrap();
            assert_eq!(
                e.headers,
                [("x-a".into(), "1".into()), ("x-a".into(), "2".into())]
            );
            assert_eq!(e.host, "127.0.0.1:5001");
            assert_eq!(s[0].reference.repository, "library/alpine");
        }
        // An explicit server replaces the origin; without the capability
        // nothing is left.
        let c = parse(
            "server = \"http://origin:5000\"\ncapabilities = [\"resolve\"]\n",
            "reg",
            dir,
        )
        .unwrap();
        let r = Reference::parse("reg:1/a/b:t").unwrap();
        let s = c.pull_sources(&r, Some(false), "https").unwrap();
        assert_eq!(
            hosts(&s),
            [("origin:5000".into(), false, "http://origin:5000/v2".into())]
        );
        let e = c.pull_sources(&r, None, "https").unwrap_err().to_string();
        assert!(e.contains("may pull"), "{e}");
    }
}
