//! Registry credentials (docker / containers auth files) and the
//! `WWW-Authenticate` challenge that says how to use them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::Deserialize;

use super::credhelper;
use crate::error::{Error, Result};

/// A username/password pair, or an identity (refresh) token.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password or identity token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    // Never print secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({:?}, <redacted>)", self.username)
    }
}

impl Credentials {
    /// The `Authorization: Basic` value.
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

#[derive(Deserialize, Default)]
struct AuthFile {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
    /// Registry host → credential helper name.
    #[serde(default, rename = "credHelpers")]
    cred_helpers: HashMap<String, String>,
    /// The helper for every registry the file has no entry for.
    #[serde(default, rename = "credsStore")]
    creds_store: String,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default, rename = "identitytoken")]
    identity_token: String,
}

/// Auth files in the order containers/image and docker consult them.
pub fn default_auth_files() -> Vec<PathBuf> {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    let mut files = Vec::new();
    if let Some(f) = env("REGISTRY_AUTH_FILE") {
        files.push(PathBuf::from(f));
    }
    if let Some(d) = env("XDG_RUNTIME_DIR") {
        files.push(Path::new(&d).join("containers/auth.json"));
    }
    let home = env("HOME").map(PathBuf::from);
    if let Some(h) = &home {
        files.push(h.join(".config/containers/auth.json"));
    }
    match (env("DOCKER_CONFIG"), &home) {
        (Some(d), _) => files.push(Path::new(&d).join("config.json")),
        (None, Some(h)) => files.push(h.join(".docker/config.json")),
        _ => {}
    }
    files
}

/// Looks up credentials for `host` (and `host/repository` namespaces, the
/// most specific first) in `files`; the first file with a match wins.
/// Within a file: the host's `credHelpers` helper, then `auths`, then the
/// `credsStore` helper (helpers run each time: what they hand out may be
/// short-lived). Unreadable or malformed files and failing helpers are
/// errors, missing files are skipped.
pub fn find_credentials(
    files: &[PathBuf],
    host: &str,
    repository: &str,
) -> Result<Option<Credentials>> {
    for file in files {
        let text = match std::fs::read(file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(Error::io(
                    format!("reading auth file {}", file.display()),
                    e,
                ))
            }
        };
        let parsed: AuthFile = serde_json::from_slice(&text).map_err(|e| {
            Error::InvalidArgument(format!(
                "auth file {} is not valid JSON: {e}",
                file.display()
            ))
        })?;
        if let Some(c) = lookup(&parsed, host, repository, file)? {
            return Ok(Some(c));
        }
    }
    Ok(None)
}

/// Keys may carry a scheme and a `/v1/` or `/v2/` suffix (docker), or a
/// repository namespace (containers auth.json).
fn normalize(k: &str) -> String {
    let k = k
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let k = k.trim_end_matches('/');
    let k = k.strip_suffix("/v1").or(k.strip_suffix("/v2")).unwrap_or(k);
    match k {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        _ => k.to_string(),
    }
}

fn lookup(
    file: &AuthFile,
    host: &str,
    repository: &str,
    path: &Path,
) -> Result<Option<Credentials>> {
    if let Some((_, helper)) = file.cred_helpers.iter().find(|(k, _)| normalize(k) == host) {
        return with_file(
            credhelper::get(helper, host, credhelper::HELPER_TIMEOUT),
            path,
        );
    }
    if let Some(c) = lookup_auths(file, host, repository, path)? {
        return Ok(Some(c));
    }
    if !file.creds_store.is_empty() {
        return with_file(
            credhelper::get(&file.creds_store, host, credhelper::HELPER_TIMEOUT),
            path,
        );
    }
    Ok(None)
}

/// Says which auth file named the helper that failed.
fn with_file<T>(r: Result<T>, path: &Path) -> Result<T> {
    r.map_err(|e| e.with_context(&format!("auth file {}", path.display())))
}

fn lookup_auths(
    file: &AuthFile,
    host: &str,
    repository: &str,
    path: &Path,
) -> Result<Option<Credentials>> {
    let full = format!("{host}/{repository}");
    let mut best: Option<(usize, &AuthEntry)> = None;
    for (key, entry) in &file.auths {
        let key = normalize(key);
        let matches = key == host
            || (full.starts_with(&key) && full.as_bytes().get(key.len()) == Some(&b'/'));
        if matches && best.is_none_or(|(len, _)| key.len() > len) {
            best = Some((key.len(), entry));
        }
    }
    let Some((_, entry)) = best else {
        return Ok(None);
    };
    if !entry.identity_token.is_empty() {
        // Docker stores identity tokens with the placeholder user name.
        return Ok(Some(Credentials {
            username: "<token>".into(),
            password: entry.identity_token.clone(),
        }));
    }
    if !entry.auth.is_empty() {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(entry.auth.trim())
            .map_err(|e| {
                Error::InvalidArgument(format!(
                    "auth file {}: entry for {host} is not base64: {e}",
                    path.display()
                ))
            })?;
        let raw = String::from_utf8_lossy(&raw);
        let (u, p) = raw.split_once(':').ok_or_else(|| {
            Error::InvalidArgument(format!(
                "auth file {}: entry for {host} is not user:password",
                path.display()
            ))
        })?;
        return Ok(Some(Credentials {
            username: u.into(),
            password: p.into(),
        }));
    }
    if !entry.username.is_empty() {
        return Ok(Some(Credentials {
            username: entry.username.clone(),
            password: entry.password.clone(),
        }));
    }
    Ok(None)
}

/// A parsed `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// HTTP basic authentication.
    Basic,
    /// A token from `realm` (the registry token protocol).
    Bearer {
        /// The token service URL.
        realm: String,
        /// The `service` parameter to pass on.
        service: Option<String>,
        /// The scope the registry asked for.
        scope: Option<String>,
    },
}

/// Parses `Basic realm=...` / `Bearer realm="...",service="...",scope="..."`.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let params = parse_params(rest);
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => Some(Challenge::Bearer {
            realm: params.get("realm")?.clone(),
            service: params.get("service").cloned(),
            scope: params.get("scope").cloned(),
        }),
        _ => None,
    }
}

/// `k=v` / `k="v, with commas"` pairs separated by commas.
fn parse_params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            value.push(n);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &quoted[end.min(quoted.len())..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        out.insert(key, value);
        rest = next.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/alpine:pull,push".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Bearer service=x"), None);
        assert_eq!(parse_challenge("Negotiate"), None);
    }

    #[test]
    fn auth_files() {
        let dir = tempfile::tempdir().unwrap();
        let docker = dir.path().join("config.json");
        let b64 = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
        std::fs::write(
            &docker,
            format!(
                r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{b64}"}},
                "127.0.0.1:5000":{{"auth":"{b64}"}},
                "127.0.0.1:5000/team":{{"username":"bob","password":"pw"}}}}}}"#
            ),
        )
        .unwrap();
        let files = vec![dir.path().join("missing.json"), docker.clone()];
        let c = find_credentials(&files, "docker.io", "library/alpine")
            .unwrap()
            .unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("alice", "s3cret")
        );
        let c = find_credentials(&files, "127.0.0.1:5000", "team/app")
            .unwrap()
            .unwrap();
        assert_eq!(c.username, "bob");
        let c = find_credentials(&files, "127.0.0.1:5000", "teams/app")
            .unwrap()
            .unwrap();
        assert_eq!(c.username, "alice");
        assert!(find_credentials(&files, "other:1", "x").unwrap().is_none());
        std::fs::write(&docker, "{not json").unwrap();
        assert!(find_credentials(&files, "docker.io", "x").is_err());
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn helpers_come_before_auths_and_credsstore_after() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.json");
        let b64 = base64::engine::general_purpose::STANDARD.encode("alice:pw");
        std::fs::write(
            &file,
            format!(
                r#"{{"auths":{{"a.example":{{"auth":"{b64}"}},"b.example":{{"auth":"{b64}"}}}},
                "credHelpers":{{"https://b.example":"estargz-absent-1"}},
                "credsStore":"estargz-absent-2"}}"#
            ),
        )
        .unwrap();
        let files = vec![file];
        // An auths entry: the store helper is not run.
        let c = find_credentials(&files, "a.example", "x").unwrap().unwrap();
        assert_eq!(c.username, "alice");
        // The host's own helper wins over its auths entry; a helper that
        // cannot run is an error naming it and the file.
        let e = find_credentials(&files, "b.example", "x")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("docker-credential-estargz-absent-1") && e.contains("config.json"),
            "{e}"
        );
        // No entry: the credsStore helper.
        let e = find_credentials(&files, "c.example", "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("docker-credential-estargz-absent-2"), "{e}");
    }
}
