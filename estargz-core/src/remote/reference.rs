//! Image references: `[host[:port]/]repo[:tag][@digest]`, with Docker Hub's
//! defaults (`docker.io`, `library/`, `latest`).

use std::fmt;

use crate::error::{Error, Result};

/// The registry hostname users write for Docker Hub.
pub const DOCKER_HUB: &str = "docker.io";
/// Where Docker Hub's API actually lives.
const DOCKER_HUB_API: &str = "registry-1.docker.io";
/// The transport prefix skopeo and podman write before registry references
/// (`docker://host/repo:tag`): optional wherever we read a reference.
pub const DOCKER_TRANSPORT: &str = "docker://";

/// Whether the first path component of a reference is a registry host:
/// it has a `.` or `:` or is `localhost`, as docker/containerd decide.
fn is_host_component(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first == "localhost"
}

/// `name[:port]` with DNS-style name components, or `[ipv6][:port]`.
fn is_valid_host(host: &str) -> bool {
    // (name, port): `None` name for a bracketed IPv6 address.
    let (name, port) = match host.strip_prefix('[') {
        Some(rest) => {
            let Some((ip, after)) = rest.split_once(']') else {
                return false;
            };
            if ip.is_empty() || !ip.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
                return false;
            }
            match after.strip_prefix(':') {
                Some(port) => (None, Some(port)),
                None if after.is_empty() => (None, None),
                None => return false,
            }
        }
        None => match host.split_once(':') {
            Some((name, port)) => (Some(name), Some(port)),
            None => (Some(host), None),
        },
    };
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    let name_ok = name.is_none_or(|n| {
        n.split('.').all(|c| {
            !c.is_empty()
                && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !c.starts_with('-')
                && !c.ends_with('-')
        })
    });
    port_ok && name_ok
}

/// Whether `s` is written as a registry image rather than, say, a file
/// name: it has the `docker://` prefix or starts with a registry host
/// (`docker.io/library/alpine`, `127.0.0.1:5000/app`). It need not parse.
pub fn names_registry(s: &str) -> bool {
    s.starts_with(DOCKER_TRANSPORT)
        || s.split_once('/')
            .is_some_and(|(first, _)| is_host_component(first) && is_valid_host(first))
}

/// Tags are 1-128 of `[A-Za-z0-9._-]`.
pub fn is_valid_tag(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 128
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Registry host with optional port, as written (`docker.io` for Hub).
    pub host: String,
    /// Repository path within the registry (`library/alpine`).
    pub repository: String,
    /// Tag (`latest` when the reference names neither a tag nor a digest).
    pub tag: Option<String>,
    /// Manifest digest, if given (`@sha256:...`).
    pub digest: Option<String>,
}

impl Reference {
    /// Parses a reference the way docker/containerd tooling does: the first
    /// component is a host only if it has a `.` or `:` or is `localhost`.
    /// A leading `docker://` (skopeo's and podman's spelling) is dropped.
    pub fn parse(written: &str) -> Result<Reference> {
        let bad = |why: &str| Error::InvalidArgument(format!("image reference {written:?}: {why}"));
        let s = written.strip_prefix(DOCKER_TRANSPORT).unwrap_or(written);
        if s.is_empty() || s.len() > 4096 {
            return Err(bad("empty or too long"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                if !crate::digest::is_sha256_digest(d) {
                    return Err(bad("digest is not sha256:<64 hex>"));
                }
                (r, Some(d.to_string()))
            }
            None => (s, None),
        };
        let (host, path) = match rest.split_once('/') {
            Some((first, path)) if is_host_component(first) => (first.to_string(), path),
            _ => (DOCKER_HUB.to_string(), rest),
        };
        // A tag is after the last ':' that follows the last '/'.
        let (repo, tag) = match path.rfind(':') {
            Some(i) if !path[i..].contains('/') => (&path[..i], Some(path[i + 1..].to_string())),
            _ => (path, None),
        };
        if repo.is_empty() {
            return Err(bad("missing repository"));
        }
        let component_ok = |c: &str| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && c.as_bytes()[0].is_ascii_alphanumeric()
        };
        if !repo.split('/').all(component_ok) {
            return Err(bad("repository must be lowercase [a-z0-9._-] components"));
        }
        if tag.as_deref().is_some_and(|t| !is_valid_tag(t)) {
            return Err(bad("invalid tag"));
        }
        if !is_valid_host(&host) {
            return Err(bad("invalid registry host"));
        }
        let mut repository = repo.to_string();
        if host == DOCKER_HUB && !repository.contains('/') {
            repository = format!("library/{repository}");
        }
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".to_string())
        } else {
            tag
        };
        Ok(Reference {
            host,
            repository,
            tag,
            digest,
        })
    }

    /// The host to talk HTTP to (Docker Hub's API host for `docker.io`).
    pub fn api_host(&self) -> &str {
        if self.host == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.host
        }
    }

    /// Digest if pinned, else the tag: what goes after `/manifests/`.
    pub fn manifest_ref(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// The same repository at another tag or digest.
    pub fn with_manifest_ref(&self, tag_or_digest: &str) -> Reference {
        let mut r = self.clone();
        if tag_or_digest.starts_with("sha256:") {
            r.tag = None;
            r.digest = Some(tag_or_digest.to_string());
        } else {
            r.tag = Some(tag_or_digest.to_string());
            r.digest = None;
        }
        r
    }

    /// Whether the host is this machine (plain HTTP is then the default,
    /// as in containerd).
    pub fn is_loopback(&self) -> bool {
        let host = match self.host.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => &self.host,
        };
        host == "localhost" || host == "[::1]" || host.starts_with("127.")
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.host, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_defaults() {
        let r = Reference::parse("alpine").unwrap();
        assert_eq!(r.host, "docker.io");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(r.repository, "library/alpine");
        assert_eq!(r.tag.as_deref(), Some("latest"));
        assert_eq!(r.to_string(), "docker.io/library/alpine:latest");
        let r = Reference::parse("user/app:1.2").unwrap();
        assert_eq!(r.repository, "user/app");
        assert_eq!(r.tag.as_deref(), Some("1.2"));
    }

    #[test]
    fn hosts_ports_digests() {
        let d = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("127.0.0.1:5000/a/b:t@{d}")).unwrap();
        assert_eq!(r.host, "127.0.0.1:5000");
        assert_eq!(r.repository, "a/b");
        assert_eq!(r.tag.as_deref(), Some("t"));
        assert_eq!(r.manifest_ref(), d);
        assert!(r.is_loopback());
        let r = Reference::parse("localhost/x").unwrap();
        assert_eq!(r.host, "localhost");
        assert!(r.is_loopback());
        let r = Reference::parse("ghcr.io/o/r").unwrap();
        assert!(!r.is_loopback());
        assert_eq!(r.manifest_ref(), "latest");
    }

    #[test]
    fn rejects_bad_references() {
        for bad in [
            "",
            "UPPER/case",
            "host:5000/",
            "a@sha256:zz",
            "a:bad tag",
            "a//b",
            "-a",
            "docker://",
            "docker://docker://a",
            "./blob",
            "../dir/blob",
            "a..b/c",
            "-host.io/c",
            "host.io:/c",
            "host.io:123456/c",
            "host_x.io/c",
            "[zz]:5000/c",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn docker_transport_prefix_is_optional() {
        let pinned = format!("[::1]:5000/x@sha256:{}", "c".repeat(64));
        for plain in ["127.0.0.1:5000/a/b:t", "alpine", pinned.as_str()] {
            let with = format!("docker://{plain}");
            assert_eq!(
                Reference::parse(&with).unwrap(),
                Reference::parse(plain).unwrap()
            );
        }
        let e = Reference::parse("docker://UPPER").unwrap_err().to_string();
        assert!(e.contains("\"docker://UPPER\""), "{e}");
    }

    #[test]
    fn tells_references_from_file_names() {
        for r in [
            "docker://alpine",
            "docker.io/library/alpine",
            "127.0.0.1:5000/a",
            "localhost/x",
            "[::1]:5000/x",
        ] {
            assert!(names_registry(r), "{r:?}");
        }
        for f in [
            "blob.esgz",
            "alpine",
            "./blob",
            "../x/blob",
            "/abs/blob",
            "out/blob",
            "a..b/c",
        ] {
            assert!(!names_registry(f), "{f:?}");
        }
    }
}
