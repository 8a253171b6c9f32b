//! Pushing large or shared blobs: skip what the registry has (HEAD), mount
//! from another repository of the same registry, and upload big files in
//! PATCH chunks so no request carries more than one chunk.

use std::path::Path;

use ureq::http::Method;

use super::http::{self as h, Attempt, Body, Request};
use super::reference::Reference;
use super::registry::{absolute_url, Registry};
use crate::error::{Error, Result};

/// Default size of one PATCH request; files up to this size go in one PUT.
pub const DEFAULT_UPLOAD_CHUNK: u64 = 32 << 20;

/// How a blob reached the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uploaded {
    /// The repository already had it.
    Existed,
    /// Mounted from another repository of the same registry.
    Mounted,
    /// Sent in one PUT.
    Monolithic,
    /// Sent in this many PATCH requests, then committed.
    Chunked(u64),
}

impl Registry {
    /// Uploads `path` (whose digest and size the caller computed) unless the
    /// repository has it; tries a cross-repository mount from `mount_from`
    /// first when it is another repository on the same registry.
    pub fn upload_blob_file(
        &self,
        r: &Reference,
        digest: &str,
        size: u64,
        path: &Path,
        mount_from: Option<&Reference>,
        chunk_size: u64,
    ) -> Result<Uploaded> {
        if !crate::digest::is_sha256_digest(digest) {
            return Err(Error::InvalidArgument(format!("blob digest {digest:?}")));
        }
        if self.blob_exists(r, digest)? {
            return Ok(Uploaded::Existed);
        }
        let chunk_size = if chunk_size == 0 {
            DEFAULT_UPLOAD_CHUNK
        } else {
            chunk_size
        };
        let what = format!("uploading blob {digest} to {r}");
        // A refused mount answers 202 with a fresh upload session: use it.
        let mut session = None;
        if let Some(from) = mount_from.filter(|f| f.host == r.host && f.repository != r.repository)
        {
            match self.try_mount(r, digest, from, &what)? {
                Ok(()) => return Ok(Uploaded::Mounted),
                Err(location) => session = location,
            }
        }
        if size <= chunk_size {
            let scope = Registry::scope(r, true);
            self.transport().retry(&what, || {
                let location = match session.take() {
                    Some(l) => l,
                    None => match self.start_upload(r, &what)? {
                        Attempt::Done(l) => l,
                        Attempt::Retry(e) => return Ok(Attempt::Retry(e)),
                    },
                };
                self.commit(r, &scope, &location, digest, Body::File(path), &what)
            })?;
            return Ok(Uploaded::Monolithic);
        }
        let requests = self.transport().retry(&what, || {
            let location = match session.take() {
                Some(l) => l,
                None => match self.start_upload(r, &what)? {
                    Attempt::Done(l) => l,
                    Attempt::Retry(e) => return Ok(Attempt::Retry(e)),
                },
            };
            // A failure part-way restarts with a new session (retry loop):
            // resuming would need the registry's view of what it received.
            self.upload_chunks(r, location, digest, size, path, chunk_size, &what)
        })?;
        Ok(Uploaded::Chunked(requests))
    }

    /// `POST …/uploads/?mount=&from=`: Ok on 201; Err(session) on 202.
    fn try_mount(
        &self,
        r: &Reference,
        digest: &str,
        from: &Reference,
        what: &str,
    ) -> Result<std::result::Result<(), Option<String>>> {
        let start = format!("{}/blobs/uploads/", self.repo_url(r));
        let url = format!(
            "{start}?mount={}&from={}",
            h::url_encode(digest),
            h::url_encode(&from.repository)
        );
        let scope = Registry::scope(r, true);
        self.transport().retry(what, || {
            let mut req = Request::get(url.clone(), Some(&r.host), &scope);
            req.method = Method::POST;
            req.body = Body::Bytes(&[]);
            let mut resp = match self.transport().send(&req)? {
                Attempt::Done(r) => r,
                Attempt::Retry(e) => return Ok(Attempt::Retry(e)),
            };
            match resp.status().as_u16() {
                201 => Ok(Attempt::Done(Ok(()))),
                202 => Ok(Attempt::Done(Err(
                    h::header(&resp, "location").map(|l| absolute_url(&start, &l))
                ))),
                _ => h::fail_or_retry(what, &mut resp),
            }
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn upload_chunks(
        &self,
        r: &Reference,
        mut location: String,
        digest: &str,
        size: u64,
        path: &Path,
        chunk_size: u64,
        what: &str,
    ) -> Result<Attempt<u64>> {
        let scope = Registry::scope(r, true);
        let mut offset = 0;
        let mut requests = 0;
        while offset < size {
            let len = chunk_size.min(size - offset);
            let mut req = Request::get(location.clone(), Some(&r.host), &scope)
                .header("content-type", "application/octet-stream")
                .header("content-range", format!("{offset}-{}", offset + len - 1));
            req.method = Method::PATCH;
            req.body = Body::FileRange { path, offset, len };
            let mut resp = match self.transport().send(&req)? {
                Attempt::Done(r) => r,
                Attempt::Retry(e) => return Ok(Attempt::Retry(e)),
            };
            if resp.status() != 202 {
                return h::fail_or_retry(what, &mut resp);
            }
            let next = h::header(&resp, "location").ok_or_else(|| {
                Error::Registry(format!("{what}: chunk response has no Location"))
            })?;
            location = absolute_url(&location, &next);
            offset += len;
            requests += 1;
        }
        match self.commit(r, &scope, &location, digest, Body::Empty, what)? {
            Attempt::Done(()) => Ok(Attempt::Done(requests)),
            Attempt::Retry(e) => Ok(Attempt::Retry(e)),
        }
    }

    /// `PUT <session>?digest=`, with the last bytes (or none): expects 201.
    pub(crate) fn commit(
        &self,
        r: &Reference,
        scope: &str,
        location: &str,
        digest: &str,
        body: Body,
        what: &str,
    ) -> Result<Attempt<()>> {
        let sep = if location.contains('?') { '&' } else { '?' };
        let mut put = Request::get(
            format!("{location}{sep}digest={}", h::url_encode(digest)),
            Some(&r.host),
            scope,
        )
        .header("content-type", "application/octet-stream");
        put.method = Method::PUT;
        put.body = body;
        let mut resp = match self.transport().send(&put)? {
            Attempt::Done(r) => r,
            Attempt::Retry(e) => return Ok(Attempt::Retry(e)),
        };
        if resp.status() != 201 {
            return h::fail_or_retry(what, &mut resp);
        }
        Ok(Attempt::Done(()))
    }
}
