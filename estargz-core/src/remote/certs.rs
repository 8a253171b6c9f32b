//! Per-registry TLS files in the containers / docker `certs.d` layout:
//! `<dir>/<host[:port]>/*.crt` are CAs trusted for that host (on top of the
//! system bundle), `*.cert` + the `*.key` of the same name are a client
//! certificate and its key.

use std::path::{Path, PathBuf};

use ureq::tls::{parse_pem, Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig};

use crate::error::{Error, Result};

/// Where containers tools and docker look, in order (the user's own
/// directory first when not root, as containers/image does).
pub fn default_certs_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
            dirs.push(Path::new(&home).join(".config/containers/certs.d"));
        }
    }
    dirs.push("/etc/containers/certs.d".into());
    dirs.push("/etc/docker/certs.d".into());
    dirs
}

/// The system's CA bundle (Debian's path; others are tried too).
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// Largest PEM file read.
const MAX_PEM_FILE: u64 = 4 << 20;

/// The first `<dir>/<host>` directory that exists.
pub fn host_dir(dirs: &[PathBuf], host: &str) -> Option<PathBuf> {
    // A host is a DNS name or address with a port: never a path.
    if host.is_empty() || host.contains('/') || host.starts_with('.') {
        return None;
    }
    dirs.iter().map(|d| d.join(host)).find(|d| d.is_dir())
}

/// The TLS settings for a host with a `certs.d` directory.
pub fn tls_config(dir: &Path) -> Result<TlsConfig> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(format!("reading {}", dir.display()), e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    let ext = |p: &Path, want: &str| p.extension().is_some_and(|e| e == want);
    let mut roots = Vec::new();
    for p in entries.iter().filter(|p| ext(p, "crt")) {
        roots.extend(certificates(p)?);
    }
    let mut client = None;
    for cert in entries.iter().filter(|p| ext(p, "cert")) {
        let key = cert.with_extension("key");
        if !key.exists() {
            return Err(Error::InvalidArgument(format!(
                "client certificate {} has no key {}",
                cert.display(),
                key.display()
            )));
        }
        if client.is_some() {
            return Err(Error::InvalidArgument(format!(
                "{} has more than one client certificate",
                dir.display()
            )));
        }
        client = Some(ClientCert::new_with_certs(
            &certificates(cert)?,
            private_key(&key)?,
        ));
    }
    for key in entries.iter().filter(|p| ext(p, "key")) {
        if !key.with_extension("cert").exists() {
            return Err(Error::InvalidArgument(format!(
                "client key {} has no certificate {}",
                key.display(),
                key.with_extension("cert").display()
            )));
        }
    }
    build(roots, client, false)
}

/// The TLS settings of a containerd `hosts.toml` entry: its `ca` files,
/// its `client` certificate (with its key, or the key inside the
/// certificate file) and `skip_verify`; the same building as `certs.d`.
pub fn tls_config_files(
    ca: &[PathBuf],
    client: &[(PathBuf, Option<PathBuf>)],
    skip_verify: bool,
) -> Result<TlsConfig> {
    let mut roots = Vec::new();
    for p in ca {
        roots.extend(certificates(p)?);
    }
    // ureq presents one client certificate; containerd picks among several
    // by the server's request, which we cannot: refuse rather than guess.
    let client = match client {
        [] => None,
        [(cert, key)] => Some(ClientCert::new_with_certs(
            &certificates(cert)?,
            private_key(key.as_deref().unwrap_or(cert))?,
        )),
        [(first, _), ..] => {
            return Err(Error::InvalidArgument(format!(
                "more than one client certificate ({} and others): only one is supported",
                first.display()
            )))
        }
    };
    build(roots, client, skip_verify)
}

fn build(
    mut roots: Vec<Certificate<'static>>,
    client: Option<ClientCert>,
    skip_verify: bool,
) -> Result<TlsConfig> {
    let mut builder = TlsConfig::builder()
        .client_cert(client)
        .disable_verification(skip_verify);
    if !roots.is_empty() {
        // ureq takes one root list: the host's CAs join the system's.
        if let Some(bundle) = SYSTEM_BUNDLES.iter().map(Path::new).find(|p| p.is_file()) {
            // A system bundle may hold entries rustls cannot use; skip them.
            if let Ok(system) = certificates(bundle) {
                roots.extend(system);
            }
        }
        builder = builder.root_certs(RootCerts::new_with_certs(&roots));
    }
    Ok(builder.build())
}

fn read_pem(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(path)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let mut out = Vec::new();
    f.take(MAX_PEM_FILE + 1)
        .read_to_end(&mut out)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    if out.len() as u64 > MAX_PEM_FILE {
        return Err(Error::LimitExceeded(format!(
            "{} is over {MAX_PEM_FILE} bytes",
            path.display()
        )));
    }
    Ok(out)
}

fn certificates(path: &Path) -> Result<Vec<Certificate<'static>>> {
    let pem = read_pem(path)?;
    let mut out = Vec::new();
    for item in parse_pem(&pem) {
        match item {
            Ok(PemItem::Certificate(c)) => out.push(c),
            Ok(_) => {}
            Err(e) => {
                return Err(Error::InvalidArgument(format!(
                    "{}: not a PEM certificate file: {e}",
                    path.display()
                )))
            }
        }
    }
    if out.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "{} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(out)
}

fn private_key(path: &Path) -> Result<PrivateKey<'static>> {
    let pem = read_pem(path)?;
    for item in parse_pem(&pem) {
        match item {
            Ok(PemItem::PrivateKey(k)) => return Ok(k),
            Ok(_) => {}
            Err(e) => {
                return Err(Error::InvalidArgument(format!(
                    "{}: not a PEM key file: {e}",
                    path.display()
                )))
            }
        }
    }
    Err(Error::InvalidArgument(format!(
        "{} holds no PEM private key",
        path.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_dirs_and_bad_files() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        std::fs::create_dir(b.path().join("reg:5000")).unwrap();
        let dirs = vec![a.path().to_path_buf(), b.path().to_path_buf()];
        assert_eq!(host_dir(&dirs, "reg:5000"), Some(b.path().join("reg:5000")));
        assert_eq!(host_dir(&dirs, "other"), None);
        assert_eq!(host_dir(&dirs, "../x"), None);
        // An empty directory: system defaults.
        tls_config(&b.path().join("reg:5000")).unwrap();
        std::fs::write(b.path().join("reg:5000/ca.crt"), "garbage").unwrap();
        let e = tls_config(&b.path().join("reg:5000"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("ca.crt"), "{e}");
        std::fs::remove_file(b.path().join("reg:5000/ca.crt")).unwrap();
        std::fs::write(b.path().join("reg:5000/client.cert"), "x").unwrap();
        let e = tls_config(&b.path().join("reg:5000"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("client.key"), "{e}");
    }
}
