//! The OCI distribution API: resolve manifests and configs, fetch small
//! blobs, and push blobs and manifests.

use std::path::Path;
use std::sync::Arc;

use ureq::http::Method;

use super::blob::{BlobEndpoint, BlobOptions, RemoteBlob};
use super::http::{self as h, Attempt, Body, HttpOptions, Request, Transport};
use super::manifest::{self, Descriptor, Document, Manifest, Platform, MANIFEST_ACCEPT};
use super::reference::Reference;
use super::registries_conf::PullSource;
use crate::digest::sha256_digest;
use crate::error::{Error, Result};

/// Manifests and configs larger than this are refused (the spec's 4 MiB).
const MAX_MANIFEST_SIZE: u64 = 4 << 20;

/// A resolved image: the platform manifest and its config.
#[derive(Debug, Clone)]
pub struct Image {
    /// Where the platform manifest is (pinned by digest when picked from an index).
    pub reference: Reference,
    /// The reference as resolved, with its tag (the TOC image is found by tag).
    pub requested: Reference,
    /// The platform manifest.
    pub manifest: Manifest,
    /// Its digest (of the bytes the registry sent).
    pub manifest_digest: String,
    /// The image configuration, digest-checked; `None` when resolved
    /// without it ([`Registry::resolve_manifest`]).
    pub config: Option<Vec<u8>>,
}

/// A client for one or more registries, sharing connections and tokens.
#[derive(Clone)]
pub struct Registry {
    transport: Arc<Transport>,
}

impl Registry {
    /// A client for the registries `opts` allows (one connection pool for all).
    pub fn new(opts: HttpOptions) -> Registry {
        Registry {
            transport: Arc::new(Transport::new(opts)),
        }
    }

    /// The HTTP transport, shared with blobs opened through this client.
    pub fn transport(&self) -> &Arc<Transport> {
        &self.transport
    }

    /// `<scheme>://<host>/v2/<repository>`.
    pub fn repo_url(&self, r: &Reference) -> String {
        format!(
            "{}://{}/v2/{}",
            self.transport.scheme(&r.host),
            r.api_host(),
            r.repository
        )
    }

    /// The repository's URL at a pull source (its configured base, if any).
    pub fn source_url(&self, s: &PullSource) -> String {
        match &s.endpoint {
            Some(e) => format!("{}/{}", e.base, s.reference.repository),
            None => self.repo_url(&s.reference),
        }
    }

    /// Pushes go to the reference as written (mirrors are for pulls), but
    /// never to a blocked registry.
    pub(crate) fn check_push(&self, r: &Reference) -> Result<()> {
        self.transport.options().registries_conf.check_blocked(r)
    }

    pub(crate) fn scope(r: &Reference, push: bool) -> String {
        let actions = if push { "pull,push" } else { "pull" };
        format!("repository:{}:{actions}", r.repository)
    }

    /// Where a pull of `r` may fetch from: the mirrors and `server` of
    /// the registry's hosts.toml when
    /// [`HttpOptions::hosts_dir`](super::HttpOptions::hosts_dir) has one,
    /// else registries.conf's mirrors, then the registry (a blocked
    /// registry is refused either way); `manifest_by_digest` as in
    /// [`RegistriesConf::pull_sources`](super::RegistriesConf::pull_sources).
    pub fn pull_sources(
        &self,
        r: &Reference,
        manifest_by_digest: Option<bool>,
    ) -> Result<Vec<PullSource>> {
        let conf = &self.transport.options().registries_conf;
        match self.transport.hosts_config(&r.host)? {
            Some(hosts) => {
                conf.check_blocked(r)?;
                hosts.pull_sources(r, manifest_by_digest, self.transport.scheme(&r.host))
            }
            None => conf.pull_sources(r, manifest_by_digest),
        }
    }

    /// Mirrors get one retry: the next source is their fallback.
    fn retries(&self, s: &PullSource) -> u32 {
        let retries = self.transport.options().retries;
        if s.mirror {
            retries.min(1)
        } else {
            retries
        }
    }

    /// Runs `op` on each source in order until one succeeds; the error of
    /// the last one otherwise, noting what the others said. Mirrors in
    /// back-off (see [`backoff`](super::backoff)) go last.
    fn first_source<T>(
        &self,
        sources: &[PullSource],
        what: &str,
        mut op: impl FnMut(&PullSource, u32) -> Result<T>,
    ) -> Result<T> {
        let backoff = super::backoff::global();
        let sources = backoff.order(sources.iter().collect(), |s| {
            s.mirror.then_some(s.reference.host.as_str())
        });
        let mut failed = Vec::new();
        for (i, s) in sources.iter().enumerate() {
            let result = op(s, self.retries(s));
            if s.mirror {
                backoff.record(&s.reference.host, &result);
            }
            match result {
                Ok(v) => return Ok(v),
                Err(e) if i + 1 < sources.len() => {
                    log::warn!(
                        "{what}: {} failed, trying the next source: {e}",
                        s.reference.host
                    );
                    failed.push(format!("{}: {e}", s.reference.host));
                }
                Err(e) if failed.is_empty() => return Err(e),
                Err(e) => {
                    return Err(e.with_context(&format!(
                        "after other sources failed ({})",
                        failed.join("; ")
                    )))
                }
            }
        }
        Err(Error::InvalidArgument(format!(
            "{what}: no source to fetch from"
        )))
    }

    /// Fetches a manifest or index by tag or digest; returns the body, its
    /// content type and its digest (checked when the reference pins one).
    /// Mirrors in registries.conf are tried first.
    pub fn fetch_manifest(&self, r: &Reference) -> Result<(Vec<u8>, Option<String>, String)> {
        let sources = self.pull_sources(r, Some(r.digest.is_some()))?;
        let what = format!("fetching manifest {r}");
        let (body, ctype, digest) = self.first_source(&sources, &what, |at, retries| {
            let (body, ctype) = self.fetch_manifest_at(at, retries)?;
            let at = &at.reference;
            let digest = sha256_digest(&body);
            if let Some(want) = &r.digest {
                if *want != digest {
                    return Err(Error::DigestMismatch {
                        what: format!("manifest {at}"),
                        expected: want.clone(),
                        actual: digest,
                    });
                }
            }
            Ok((body, ctype, digest))
        })?;
        Ok((body, ctype, digest))
    }

    fn fetch_manifest_at(&self, s: &PullSource, retries: u32) -> Result<(Vec<u8>, Option<String>)> {
        let r = &s.reference;
        let url = format!("{}/manifests/{}", self.source_url(s), r.manifest_ref());
        let what = format!("fetching manifest {r}");
        let scope = Self::scope(r, false);
        self.transport.retry_n(&what, retries, || {
            let req = Request::get(url.clone(), Some(&r.host), &scope)
                .header("accept", MANIFEST_ACCEPT)
                .endpoint(s.endpoint.clone());
            let mut resp = match self.transport.send(&req)? {
                Attempt::Done(r) => r,
                Attempt::Retry(e) => return Ok(Attempt::Retry(e)),
            };
            if resp.status() != 200 {
                return h::fail_or_retry(&what, &mut resp);
            }
            let ctype = h::header(&resp, "content-type");
            match read_limited(&mut resp, MAX_MANIFEST_SIZE, &what) {
                Ok(b) => Ok(Attempt::Done((b, ctype))),
                Err(e @ Error::LimitExceeded(_)) => Err(e),
                Err(e) => Ok(Attempt::Retry(e)),
            }
        })
    }

    /// Resolves `r` to a platform manifest (picking `platform` from an
    /// index, the host's by default) and fetches its config.
    pub fn resolve_image(&self, r: &Reference, platform: Option<&Platform>) -> Result<Image> {
        let mut image = self.resolve_manifest(r, platform)?;
        image.config = Some(self.fetch_config(&image)?);
        Ok(image)
    }

    /// Fetches the config of `image` ([`Registry::resolve_manifest`]
    /// leaves it out), digest-checked and bounded like a manifest.
    pub fn fetch_config(&self, image: &Image) -> Result<Vec<u8>> {
        let digest = &image.manifest.config.digest;
        self.fetch_blob(&image.reference, digest, MAX_MANIFEST_SIZE)
    }

    /// Like [`Registry::resolve_image`] without the config: opening a layer
    /// needs only the manifest, and a round trip less matters when layers
    /// are mounted one after the other.
    pub fn resolve_manifest(&self, r: &Reference, platform: Option<&Platform>) -> Result<Image> {
        let (body, ctype, digest) = self.fetch_manifest(r)?;
        let (manifest, manifest_digest, reference) =
            match manifest::decode(&body, ctype.as_deref())? {
                Document::Manifest(m) => (m, digest, r.clone()),
                Document::Index(index) => {
                    let want = platform.cloned().unwrap_or_else(Platform::host);
                    let d = manifest::select_platform(&index, &want)?;
                    let pinned = r.with_manifest_ref(&d.digest);
                    let (body, ctype, digest) = self.fetch_manifest(&pinned)?;
                    match manifest::decode(&body, ctype.as_deref())? {
                        Document::Manifest(m) => (m, digest, pinned),
                        Document::Index(_) => {
                            return Err(Error::Registry(format!(
                                "{pinned}: an index points to another index"
                            )))
                        }
                    }
                }
            };
        Ok(Image {
            reference,
            requested: r.clone(),
            manifest,
            manifest_digest,
            config: None,
        })
    }

    /// Fetches a small blob whole and checks its digest (from a mirror if
    /// registries.conf names one).
    pub fn fetch_blob(&self, r: &Reference, digest: &str, limit: u64) -> Result<Vec<u8>> {
        if !crate::digest::is_sha256_digest(digest) {
            return Err(Error::InvalidArgument(format!("blob digest {digest:?}")));
        }
        let sources = self.pull_sources(r, None)?;
        let what = format!("fetching blob {digest} of {r}");
        self.first_source(&sources, &what, |at, retries| {
            self.fetch_blob_at(at, digest, limit, retries)
        })
    }

    fn fetch_blob_at(
        &self,
        s: &PullSource,
        digest: &str,
        limit: u64,
        retries: u32,
    ) -> Result<Vec<u8>> {
        let r = &s.reference;
        let url = format!("{}/blobs/{digest}", self.source_url(s));
        let what = format!("fetching blob {digest} of {r}");
        let scope = Self::scope(r, false);
        let body = self.transport.retry_n(&what, retries, || {
            let mut target = url.clone();
            for _ in 0..4 {
                let same_host = target == url;
                let req =
                    Request::get(target.clone(), same_host.then_some(r.host.as_str()), &scope)
                        .endpoint(s.endpoint.clone().filter(|_| same_host));
                let mut resp = match self.transport.send(&req)? {
                    Attempt::Done(r) => r,
                    Attempt::Retry(e) => return Ok(Attempt::Retry(e)),
                };
                if resp.status().is_redirection() {
                    target = super::blob::redirect_target(&target, &resp)?;
                    continue;
                }
                if resp.status() != 200 {
                    return h::fail_or_retry(&what, &mut resp);
                }
                return match read_limited(&mut resp, limit, &what) {
                    Ok(b) => Ok(Attempt::Done(b)),
                    Err(e @ Error::LimitExceeded(_)) => Err(e),
                    Err(e) => Ok(Attempt::Retry(e)),
                };
            }
            Err(Error::Registry(format!("{what}: too many redirects")))
        })?;
        let actual = sha256_digest(&body);
        if actual != digest {
            return Err(Error::DigestMismatch {
                what: format!("blob of {r}"),
                expected: digest.into(),
                actual,
            });
        }
        Ok(body)
    }

    /// Opens a layer blob for random access by range requests.
    pub fn open_blob(
        &self,
        r: &Reference,
        layer: &Descriptor,
        opts: BlobOptions,
    ) -> Result<RemoteBlob> {
        if !crate::digest::is_sha256_digest(&layer.digest) {
            return Err(Error::InvalidArgument(format!(
                "layer digest {:?}",
                layer.digest
            )));
        }
        let endpoints = self
            .pull_sources(r, None)?
            .iter()
            .map(|s| BlobEndpoint {
                url: format!("{}/blobs/{}", self.source_url(s), layer.digest),
                host: s.reference.host.clone(),
                scope: Self::scope(&s.reference, false),
                retries: self.retries(s),
                mirror: s.mirror,
                endpoint: s.endpoint.clone(),
            })
            .collect();
        Ok(RemoteBlob::new(
            self.transport.clone(),
            endpoints,
            layer.digest.clone(),
            layer.size,
            opts,
        ))
    }

    /// Whether the repository already has the blob.
    pub fn blob_exists(&self, r: &Reference, digest: &str) -> Result<bool> {
        self.check_push(r)?;
        let url = format!("{}/blobs/{digest}", self.repo_url(r));
        let what = format!("checking blob {digest} in {r}");
        let scope = Self::scope(r, true);
        self.transport.retry(&what, || {
            let mut req = Request::get(url.clone(), Some(&r.host), &scope);
            req.method = Method::HEAD;
            let mut resp = match self.transport.send(&req)? {
                Attempt::Done(r) => r,
                Attempt::Retry(e) => return Ok(Attempt::Retry(e)),
            };
            match resp.status().as_u16() {
                200 | 307 | 302 => Ok(Attempt::Done(true)),
                404 => Ok(Attempt::Done(false)),
                _ => h::fail_or_retry(&what, &mut resp),
            }
        })
    }

    /// Uploads a blob (monolithic: POST then PUT), unless it is already there.
    pub fn push_blob(&self, r: &Reference, digest: &str, body: Body) -> Result<()> {
        if self.blob_exists(r, digest)? {
            return Ok(());
        }
        let what = format!("uploading blob {digest} to {r}");
        let scope = Self::scope(r, true);
        self.transport.retry(&what, || {
            let location = match self.start_upload(r, &what)? {
                Attempt::Done(l) => l,
                Attempt::Retry(e) => return Ok(Attempt::Retry(e)),
            };
            self.commit(r, &scope, &location, digest, body, &what)
        })
    }

    /// Starts an upload session (POST); returns its absolute Location.
    pub(crate) fn start_upload(&self, r: &Reference, what: &str) -> Result<Attempt<String>> {
        self.check_push(r)?;
        let start = format!("{}/blobs/uploads/", self.repo_url(r));
        let mut req = Request::get(start.clone(), Some(&r.host), &Self::scope(r, true));
        req.method = Method::POST;
        req.body = Body::Bytes(&[]);
        let mut resp = match self.transport.send(&req)? {
            Attempt::Done(r) => r,
            Attempt::Retry(e) => return Ok(Attempt::Retry(e)),
        };
        if resp.status() != 202 {
            return h::fail_or_retry(what, &mut resp);
        }
        let location = h::header(&resp, "location")
            .ok_or_else(|| Error::Registry(format!("{what}: upload has no Location")))?;
        Ok(Attempt::Done(absolute_url(&start, &location)))
    }

    /// Uploads a blob from memory.
    pub fn push_blob_bytes(&self, r: &Reference, data: &[u8]) -> Result<String> {
        let digest = sha256_digest(data);
        self.push_blob(r, &digest, Body::Bytes(data))?;
        Ok(digest)
    }

    /// Uploads a blob from a file whose digest the caller computed.
    pub fn push_blob_file(&self, r: &Reference, digest: &str, path: &Path) -> Result<()> {
        self.push_blob(r, digest, Body::File(path))
    }

    /// Stores a manifest under `r`'s tag (or digest); returns its digest.
    pub fn push_manifest(&self, r: &Reference, media_type: &str, body: &[u8]) -> Result<String> {
        self.check_push(r)?;
        let digest = sha256_digest(body);
        let url = format!("{}/manifests/{}", self.repo_url(r), r.manifest_ref());
        let what = format!("pushing manifest {r}");
        let scope = Self::scope(r, true);
        self.transport.retry(&what, || {
            let mut req =
                Request::get(url.clone(), Some(&r.host), &scope).header("content-type", media_type);
            req.method = Method::PUT;
            req.body = Body::Bytes(body);
            let mut resp = match self.transport.send(&req)? {
                Attempt::Done(r) => r,
                Attempt::Retry(e) => return Ok(Attempt::Retry(e)),
            };
            if resp.status() != 201 {
                return h::fail_or_retry(&what, &mut resp);
            }
            Ok(Attempt::Done(()))
        })?;
        Ok(digest)
    }
}

/// Reads a whole body, refusing more than `limit` bytes.
fn read_limited(resp: &mut h::Response, limit: u64, what: &str) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    resp.body_mut()
        .as_reader()
        .take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|e| h::io_error(e, what))?;
    if out.len() as u64 > limit {
        return Err(Error::LimitExceeded(format!(
            "{what}: body over {limit} bytes"
        )));
    }
    Ok(out)
}

/// Resolves a possibly relative `Location` against the request URL.
pub fn absolute_url(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.to_string();
    }
    // scheme://host is everything before the third '/'.
    let origin_end = base
        .match_indices('/')
        .nth(2)
        .map(|(i, _)| i)
        .unwrap_or(base.len());
    if location.starts_with('/') {
        format!("{}{location}", &base[..origin_end])
    } else {
        let dir_end = base.rfind('/').map(|i| i + 1).unwrap_or(base.len());
        format!("{}{location}", &base[..dir_end])
    }
}

#[cfg(test)]
mod tests {
    use super::absolute_url;

    #[test]
    fn locations() {
        let base = "http://127.0.0.1:5000/v2/a/blobs/uploads/";
        assert_eq!(
            absolute_url(base, "/v2/a/blobs/uploads/x?state=1"),
            "http://127.0.0.1:5000/v2/a/blobs/uploads/x?state=1"
        );
        assert_eq!(absolute_url(base, "https://s3/x"), "https://s3/x");
        assert_eq!(
            absolute_url(base, "y"),
            "http://127.0.0.1:5000/v2/a/blobs/uploads/y"
        );
    }
}
