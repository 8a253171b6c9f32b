//! containers-registries.conf(5), version 2: per-registry `location`
//! rewrites, `insecure`, `blocked` and `[[registry.mirror]]` lists with
//! `pull-from-mirror`, found where containers tools look. Decides, for one
//! reference, the hosts a pull tries in order: its mirrors, then the
//! registry itself. (Version 1's `[registries.insecure]` and
//! `[registries.block]` lists are read too.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::reference::Reference;
use crate::error::{Error, Result};

/// Which pulls may use a mirror.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullFromMirror {
    /// Every pull (the default).
    #[default]
    All,
    /// Only pulls of references pinned by digest.
    DigestOnly,
    /// Only pulls by tag.
    TagOnly,
}

/// One `[[registry.mirror]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    /// `host[:port][/path]` replacing the matched prefix.
    pub location: String,
    /// Plain HTTP to this mirror.
    pub insecure: bool,
    /// Which pulls may use it.
    pub pull_from_mirror: PullFromMirror,
}

/// One `[[registry]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryEntry {
    /// What references it applies to: `host[/path]` or `*.domain`.
    pub prefix: String,
    /// Where the registry really is (`host[:port][/path]`); empty for a
    /// wildcard prefix (no rewrite).
    pub location: String,
    /// Plain HTTP to `location`.
    pub insecure: bool,
    /// Refuse every pull and push of matching references.
    pub blocked: bool,
    /// Tried in order before `location`.
    pub mirrors: Vec<Mirror>,
}

/// Where a pull may fetch from: a rewritten reference on a mirror or on
/// the registry itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullSource {
    /// The reference on that host (host and repository rewritten).
    pub reference: Reference,
    /// Whether it is a mirror (tried with fewer retries: the next source
    /// is the fallback).
    pub mirror: bool,
    /// A host configured in a containerd hosts.toml: its URL, TLS files
    /// and headers (`None`: the reference's host, `certs.d` settings).
    pub endpoint: Option<std::sync::Arc<super::http::Endpoint>>,
}

/// The parsed configuration (empty: every reference is pulled as written).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistriesConf {
    /// The `[[registry]]` tables of every file read, later files replacing
    /// entries of the same prefix.
    pub registries: Vec<RegistryEntry>,
    /// The files read, for messages.
    pub files: Vec<PathBuf>,
}

/// Largest configuration file read.
const MAX_CONF_FILE: u64 = 1 << 20;

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct FileV2 {
    #[serde(default)]
    registry: Vec<RawRegistry>,
    #[serde(default)]
    registries: Option<V1Tables>,
    /// Keys other containers tools use (search lists, aliases, helpers).
    #[serde(flatten)]
    other: BTreeMap<String, toml::Value>,
}

#[derive(Deserialize, Default)]
struct V1Tables {
    #[serde(default)]
    insecure: V1List,
    #[serde(default)]
    block: V1List,
    #[serde(flatten)]
    _other: BTreeMap<String, toml::Value>,
}

#[derive(Deserialize, Default)]
struct V1List {
    #[serde(default)]
    registries: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawRegistry {
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    location: String,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    blocked: bool,
    #[serde(default)]
    mirror_by_digest_only: bool,
    #[serde(default)]
    mirror: Vec<RawMirror>,
    #[serde(flatten)]
    other: BTreeMap<String, toml::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawMirror {
    #[serde(default)]
    location: String,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    pull_from_mirror: String,
    #[serde(flatten)]
    other: BTreeMap<String, toml::Value>,
}

/// Top-level keys of registries.conf we have no use for but must accept.
const KNOWN_OTHER_KEYS: &[&str] = &[
    "unqualified-search-registries",
    "short-name-mode",
    "aliases",
    "credential-helpers",
    "additional-layer-store-auth-helper",
];

impl RegistriesConf {
    /// The files containers tools read: `path` alone when given (it must
    /// exist); else `$CONTAINERS_REGISTRIES_CONF`, or
    /// `~/.config/containers/registries.conf` when not root and present, or
    /// `/etc/containers/registries.conf` (absent is fine), followed by the
    /// `*.conf` drop-ins of `/etc/containers/registries.conf.d/` (and the
    /// user's `registries.conf.d/` when not root) in name order.
    pub fn load(path: Option<&Path>) -> Result<RegistriesConf> {
        let mut conf = RegistriesConf::default();
        if let Some(p) = path {
            conf.read_file(p, true)?;
            return Ok(conf);
        }
        let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        // SAFETY: geteuid has no preconditions.
        let home = (unsafe { libc::geteuid() } != 0)
            .then(|| env("HOME").map(|h| Path::new(&h).join(".config/containers")))
            .flatten();
        let main = match env("CONTAINERS_REGISTRIES_CONF") {
            Some(p) => (PathBuf::from(p), true),
            None => match home.as_ref().map(|h| h.join("registries.conf")) {
                Some(user) if user.exists() => (user, false),
                _ => ("/etc/containers/registries.conf".into(), false),
            },
        };
        conf.read_file(&main.0, main.1)?;
        let mut dirs = vec![PathBuf::from("/etc/containers/registries.conf.d")];
        dirs.extend(home.map(|h| h.join("registries.conf.d")));
        for dir in dirs {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut files: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "conf"))
                .collect();
            files.sort();
            for f in files {
                conf.read_file(&f, true)?;
            }
        }
        Ok(conf)
    }

    /// Parses one file's text (as if read from `origin`) on top of what
    /// is already loaded.
    pub fn merge_str(&mut self, text: &str, origin: &Path) -> Result<()> {
        let bad = |why: String| Error::InvalidArgument(format!("{}: {why}", origin.display()));
        let file: FileV2 = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        for key in file.other.keys() {
            if !KNOWN_OTHER_KEYS.contains(&key.as_str()) {
                log::warn!("{}: ignoring unknown key {key:?}", origin.display());
            }
        }
        let mut entries = Vec::new();
        if let Some(v1) = file.registries {
            if !file.registry.is_empty() {
                return Err(bad(
                    "mixes the version 1 [registries] tables with version 2 [[registry]]".into(),
                ));
            }
            for (hosts, insecure) in [(v1.insecure.registries, true), (v1.block.registries, false)]
            {
                for host in hosts {
                    entries.push(RegistryEntry {
                        prefix: host.clone(),
                        location: host,
                        insecure,
                        blocked: !insecure,
                        mirrors: Vec::new(),
                    });
                }
            }
        }
        for raw in file.registry {
            entries.push(entry(raw).map_err(&bad)?);
        }
        for e in entries {
            match self.registries.iter_mut().find(|r| r.prefix == e.prefix) {
                Some(old) => *old = e,
                None => self.registries.push(e),
            }
        }
        self.files.push(origin.to_path_buf());
        Ok(())
    }

    fn read_file(&mut self, path: &Path, must_exist: bool) -> Result<()> {
        use std::io::Read;
        let f = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => return Ok(()),
            Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
        };
        let mut text = String::new();
        f.take(MAX_CONF_FILE + 1)
            .read_to_string(&mut text)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        if text.len() as u64 > MAX_CONF_FILE {
            return Err(Error::LimitExceeded(format!(
                "{} is over {MAX_CONF_FILE} bytes",
                path.display()
            )));
        }
        self.merge_str(&text, path)
    }

    /// The entry for `r`: the longest matching prefix.
    pub fn find(&self, r: &Reference) -> Option<(&RegistryEntry, usize)> {
        let name = format!("{}/{}", r.host, r.repository);
        self.registries
            .iter()
            .filter_map(|e| matching_prefix(&name, &e.prefix).map(|n| (e, n)))
            .max_by_key(|(e, _)| e.prefix.len())
    }

    /// Refuses references of a `blocked` registry.
    pub fn check_blocked(&self, r: &Reference) -> Result<()> {
        match self.find(r) {
            Some((e, _)) if e.blocked => Err(Error::InvalidArgument(format!(
                "{r}: registry {:?} is blocked in {}",
                e.prefix,
                self.describe_files()
            ))),
            _ => Ok(()),
        }
    }

    fn describe_files(&self) -> String {
        match self.files.as_slice() {
            [] => "registries.conf".into(),
            files => files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    /// Where a pull of `r` fetches from, in order: the mirrors that allow
    /// this pull, then the registry's location. `manifest_by_digest` is
    /// `Some(pinned)` for a manifest request (decides `pull-from-mirror`)
    /// and `None` for blobs, which are addressed by digest and verified.
    pub fn pull_sources(
        &self,
        r: &Reference,
        manifest_by_digest: Option<bool>,
    ) -> Result<Vec<PullSource>> {
        self.check_blocked(r)?;
        let Some((entry, matched)) = self.find(r) else {
            return Ok(vec![PullSource {
                reference: r.clone(),
                mirror: false,
                endpoint: None,
            }]);
        };
        let name = format!("{}/{}", r.host, r.repository);
        let rest = &name[matched..];
        let mut out = Vec::new();
        for m in &entry.mirrors {
            let allowed = match (m.pull_from_mirror, manifest_by_digest) {
                (PullFromMirror::All, _) | (_, None) => true,
                (PullFromMirror::DigestOnly, Some(pinned)) => pinned,
                (PullFromMirror::TagOnly, Some(pinned)) => !pinned,
            };
            if allowed {
                out.push(PullSource {
                    reference: rewrite(r, &m.location, rest)?,
                    mirror: true,
                    endpoint: None,
                });
            }
        }
        let origin = if entry.location.is_empty() {
            r.clone()
        } else {
            rewrite(r, &entry.location, rest)?
        };
        out.push(PullSource {
            reference: origin,
            mirror: false,
            endpoint: None,
        });
        Ok(out)
    }

    /// Whether `host` is an `insecure` location or mirror (plain HTTP).
    pub fn is_insecure(&self, host: &str) -> bool {
        let host_of = |loc: &str| loc.split('/').next().unwrap_or("").to_string();
        self.registries.iter().any(|e| {
            (e.insecure && host_of(&e.location) == host)
                || e.mirrors
                    .iter()
                    .any(|m| m.insecure && host_of(&m.location) == host)
        })
    }
}

fn entry(raw: RawRegistry) -> std::result::Result<RegistryEntry, String> {
    for key in raw.other.keys() {
        log::warn!(
            "[[registry]] {:?}: ignoring unknown key {key:?}",
            raw.prefix
        );
    }
    let location = clean_location(&raw.location)?;
    let prefix = if raw.prefix.is_empty() {
        location.clone()
    } else {
        raw.prefix.trim_end_matches('/').to_string()
    };
    if prefix.is_empty() {
        return Err("a [[registry]] has neither prefix nor location".into());
    }
    if let Some(domain) = prefix.strip_prefix("*.") {
        if domain.is_empty() || domain.contains('/') || domain.contains('*') {
            return Err(format!("wildcard prefix {prefix:?} must be *.domain"));
        }
        if !location.is_empty() {
            return Err(format!(
                "[[registry]] {prefix:?}: a wildcard prefix takes no location"
            ));
        }
    } else if location.is_empty() {
        return Err(format!("[[registry]] {prefix:?} has no location"));
    } else if prefix.contains('*') {
        return Err(format!("prefix {prefix:?}: '*' only as a leading *."));
    }
    let mut mirrors = Vec::new();
    for m in raw.mirror {
        for key in m.other.keys() {
            log::warn!("[[registry.mirror]] of {prefix:?}: ignoring unknown key {key:?}");
        }
        let location = clean_location(&m.location)?;
        if location.is_empty() {
            return Err(format!("a mirror of {prefix:?} has no location"));
        }
        let mut pull_from_mirror = match m.pull_from_mirror.as_str() {
            "" | "all" => PullFromMirror::All,
            "digest-only" => PullFromMirror::DigestOnly,
            "tag-only" => PullFromMirror::TagOnly,
            other => {
                return Err(format!(
                    "mirror {location:?}: pull-from-mirror {other:?} is not all, digest-only or tag-only"
                ))
            }
        };
        if raw.mirror_by_digest_only {
            if !m.pull_from_mirror.is_empty() {
                return Err(format!(
                    "[[registry]] {prefix:?}: mirror-by-digest-only and a mirror's pull-from-mirror cannot both be set"
                ));
            }
            pull_from_mirror = PullFromMirror::DigestOnly;
        }
        mirrors.push(Mirror {
            location,
            insecure: m.insecure,
            pull_from_mirror,
        });
    }
    Ok(RegistryEntry {
        prefix,
        location,
        insecure: raw.insecure,
        blocked: raw.blocked,
        mirrors,
    })
}

/// `host[:port][/path]`, without a trailing `/`; a URL scheme is an error.
fn clean_location(loc: &str) -> std::result::Result<String, String> {
    if loc.contains("://") {
        return Err(format!(
            "location {loc:?}: write host[:port][/path] without a scheme (insecure = true for plain HTTP)"
        ));
    }
    Ok(loc.trim_end_matches('/').to_string())
}

/// How much of `name` (`host/repository`) the prefix matches: the prefix
/// itself (or, for `*.domain`, the host it matched), ending at a `/` or the
/// end of the name.
fn matching_prefix(name: &str, prefix: &str) -> Option<usize> {
    if let Some(domain) = prefix.strip_prefix('*') {
        // `.domain`: must end the host component.
        let host_end = name.find('/').unwrap_or(name.len());
        let host = &name[..host_end];
        let host_no_port = host.split(':').next().unwrap_or(host);
        return (host_no_port.ends_with(domain) && host_no_port.len() > domain.len())
            .then_some(host_end);
    }
    if name == prefix {
        return Some(prefix.len());
    }
    (name.starts_with(prefix) && name.as_bytes().get(prefix.len()) == Some(&b'/'))
        .then_some(prefix.len())
}

/// `r` with the matched part of its name replaced by `location`.
fn rewrite(r: &Reference, location: &str, rest: &str) -> Result<Reference> {
    let name = format!("{location}{rest}");
    let (host, repository) = name.split_once('/').ok_or_else(|| {
        Error::InvalidArgument(format!(
            "{r}: registries.conf rewrites it to {name:?}, which has no repository"
        ))
    })?;
    // Parse the result to validate it (a bare host gets no docker.io default).
    let check = Reference::parse(&format!("{host}/{repository}"))
        .ok()
        .filter(|c| c.host == host && c.repository == repository);
    if check.is_none() {
        return Err(Error::InvalidArgument(format!(
            "{r}: registries.conf rewrites it to {name:?}, which is not a valid reference"
        )));
    }
    Ok(Reference {
        host: host.to_string(),
        repository: repository.to_string(),
        tag: r.tag.clone(),
        digest: r.digest.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(text: &str) -> RegistriesConf {
        let mut c = RegistriesConf::default();
        c.merge_str(text, Path::new("test.conf")).unwrap();
        c
    }

    fn hosts(c: &RegistriesConf, r: &str, manifest_by_digest: Option<bool>) -> Vec<String> {
        c.pull_sources(&Reference::parse(r).unwrap(), manifest_by_digest)
            .unwrap()
            .iter()
            .map(|s| s.reference.to_string())
            .collect()
    }

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn mirrors_in_order_then_the_origin() {
        let c = conf(
            r#"
unqualified-search-registries = ["docker.io"]
short-name-mode = "enforcing"
[aliases]
"alpine" = "docker.io/library/alpine"

[[registry]]
location = "reg.example:5000"
insecure = true
[[registry.mirror]]
location = "m1.example"
[[registry.mirror]]
location = "m2.example:5001/cache"
insecure = true
pull-from-mirror = "digest-only"
[[registry.mirror]]
location = "m3.example"
pull-from-mirror = "tag-only"
"#,
        );
        assert_eq!(
            hosts(&c, "reg.example:5000/app/x:v1", Some(false)),
            [
                "m1.example/app/x:v1",
                "m3.example/app/x:v1",
                "reg.example:5000/app/x:v1"
            ]
        );
        let pinned = format!("reg.example:5000/app/x@{D}");
        assert_eq!(
            hosts(&c, &pinned, Some(true)),
            [
                format!("m1.example/app/x@{D}"),
                format!("m2.example:5001/cache/app/x@{D}"),
                format!("reg.example:5000/app/x@{D}")
            ]
        );
        // Blobs: every mirror.
        assert_eq!(hosts(&c, &pinned, None).len(), 4);
        assert!(c.is_insecure("reg.example:5000") && c.is_insecure("m2.example:5001"));
        assert!(!c.is_insecure("m1.example"));
        // Not configured: as written.
        assert_eq!(hosts(&c, "other.example/a:1", None), ["other.example/a:1"]);
        // A prefix matches whole components only.
        assert_eq!(
            hosts(&c, "reg.example:50000/a:1", None),
            ["reg.example:50000/a:1"]
        );
    }

    #[test]
    fn prefixes_rewrites_wildcards_and_blocks() {
        let c = conf(
            r#"
[[registry]]
prefix = "example.com/foo"
location = "internal.example/bar"
[[registry]]
prefix = "example.com"
location = "example.com"
blocked = true
[[registry]]
prefix = "*.corp.example"
[[registry.mirror]]
location = "cache.example"
[[registry]]
location = "digest.example"
mirror-by-digest-only = true
[[registry.mirror]]
location = "dm.example"
"#,
        );
        assert_eq!(
            hosts(&c, "example.com/foo/img:1", None),
            ["internal.example/bar/img:1"]
        );
        let e = c
            .pull_sources(&Reference::parse("example.com/other:1").unwrap(), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("blocked") && e.contains("test.conf"), "{e}");
        assert_eq!(
            hosts(&c, "a.corp.example/x/y:2", None),
            ["cache.example/x/y:2", "a.corp.example/x/y:2"]
        );
        assert_eq!(hosts(&c, "corp.example/x:2", None), ["corp.example/x:2"]);
        assert_eq!(
            hosts(&c, "digest.example/x:2", Some(false)),
            ["digest.example/x:2"]
        );
        assert_eq!(hosts(&c, "digest.example/x:2", None).len(), 2);
    }

    #[test]
    fn drop_ins_replace_by_prefix_and_v1_lists() {
        let mut c = conf("[[registry]]\nlocation = \"a.example\"\nblocked = true\n");
        c.merge_str(
            "[[registry]]\nlocation = \"a.example\"\n[[registry.mirror]]\nlocation = \"b.example\"\n",
            Path::new("drop.conf"),
        )
        .unwrap();
        assert_eq!(c.registries.len(), 1);
        assert_eq!(
            hosts(&c, "a.example/x:1", None),
            ["b.example/x:1", "a.example/x:1"]
        );
        let v1 = conf(
            "[registries.search]\nregistries = []\n[registries.insecure]\nregistries = [\"i.example:5000\"]\n[registries.block]\nregistries = [\"b.example\"]\n",
        );
        assert!(v1.is_insecure("i.example:5000"));
        assert!(v1
            .check_blocked(&Reference::parse("b.example/x").unwrap())
            .is_err());
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let bad = |text: &str| {
            let mut c = RegistriesConf::default();
            c.merge_str(text, Path::new("bad.conf"))
                .unwrap_err()
                .to_string()
        };
        for (text, needle) in [
            ("[[registry]]\nprefix = \"x.example\"\n", "no location"),
            ("[[registry]]\nlocation = \"https://x.example\"\n", "scheme"),
            ("[[registry]]\nprefix = \"*.x\"\nlocation = \"y\"\n", "wildcard"),
            (
                "[[registry]]\nlocation = \"x.example\"\n[[registry.mirror]]\nlocation = \"m\"\npull-from-mirror = \"sometimes\"\n",
                "sometimes",
            ),
            ("[[registry]]\nlocation = 5\n", "bad.conf"),
            ("[[registry]\n", "bad.conf"),
        ] {
            let e = bad(text);
            assert!(e.contains(needle), "{text}: {e}");
        }
        let e = RegistriesConf::load(Some(Path::new("/nonexistent/registries.conf")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/registries.conf"), "{e}");
    }
}
