//! Production registry set-ups against real docker-registry processes:
//! credential helpers (`docker-credential-*`) in front of an htpasswd
//! registry, TLS with a private CA and client certificates (`certs.d`),
//! and registries.conf mirrors with a pull-through cache.

mod util;

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use base64::Engine;
use estargz_core::remote::{HttpOptions, Reference, Registry};
use estargz_tests::faultproxy::FaultProxy;
use estargz_tests::registry::{RegistryConfig, TestRegistry};
use util::*;

/// A small layer: two files; returns (file name → content, blob path).
fn make_layer(work: &Path) -> (Vec<(String, Vec<u8>)>, PathBuf) {
    let tree = work.join("tree");
    let files = vec![
        (
            "hello.txt".to_string(),
            b"hello through the helper\n".to_vec(),
        ),
        ("data/big.bin".to_string(), noise(700 << 10, 3)),
    ];
    for (name, data) in &files {
        let p = tree.join(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
    }
    let blob = work.join("layer.esgz");
    run(Command::new(estargz_bin())
        .arg("convert")
        .arg(&tree)
        .arg(&blob));
    (files, blob)
}

/// `PATH` with `dir` first (where the test's helpers are).
fn path_with(dir: &Path) -> OsString {
    let mut p = OsString::from(dir);
    p.push(":");
    p.push(std::env::var_os("PATH").unwrap_or_default());
    p
}

fn estargz(args: &[&str], path: Option<&OsString>) -> Output {
    let mut cmd = Command::new(estargz_bin());
    cmd.args(args);
    if let Some(p) = path {
        cmd.env("PATH", p);
    }
    cmd.output().unwrap()
}

/// Stdout of a command that must succeed (file contents: bytes).
fn ok(out: Output) -> Vec<u8> {
    assert!(
        out.status.success(),
        "failed: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn failed(out: Output) -> String {
    assert!(
        !out.status.success(),
        "succeeded unexpectedly: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A `docker-credential-NAME` script in `dir` running `body` after reading
/// the server URL into `$host` (and logging it to `dir/NAME.calls`).
fn write_helper(dir: &Path, name: &str, body: &str) {
    fs::create_dir_all(dir).unwrap();
    let calls = dir.join(format!("{name}.calls"));
    let p = dir.join(format!("docker-credential-{name}"));
    fs::write(
        &p,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 3\nread host\necho \"$host\" >> {}\n{body}\n",
            calls.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
}

fn helper_calls(dir: &Path, name: &str) -> Vec<String> {
    fs::read_to_string(dir.join(format!("{name}.calls")))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn credential_helpers_authenticate_pull_push_and_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let (files, blob) = make_layer(work);
    let reg = TestRegistry::start(Some(("alice", "s3cret")));
    let host = reg.host();
    let bin = work.join("bin");
    write_helper(
        &bin,
        "esgztest",
        &format!(
            "if [ \"$host\" = {host} ]; then echo '{{\"ServerURL\":\"{host}\",\"Username\":\"alice\",\"Secret\":\"s3cret\"}}'; \
             else echo 'credentials not found in native keychain'; exit 1; fi"
        ),
    );
    write_helper(&bin, "esgzfail", "echo 'boom: keychain locked' >&2; exit 1");
    let path = path_with(&bin);
    let config = work.join("config.json");
    fs::write(
        &config,
        format!(r#"{{"auths":{{}},"credHelpers":{{"{host}":"esgztest"}}}}"#),
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let reference = format!("{host}/helped/app:v1");

    // Push and pull authenticate through the helper.
    ok(estargz(
        &[
            "push",
            "--plain-http",
            "--auth-file",
            cfg,
            &reference,
            blob.to_str().unwrap(),
        ],
        Some(&path),
    ));
    let out = ok(estargz(
        &[
            "pull",
            "--plain-http",
            "--auth-file",
            cfg,
            &reference,
            "--cat",
            "hello.txt",
        ],
        Some(&path),
    ));
    assert_eq!(out, files[0].1);
    let calls = helper_calls(&bin, "esgztest");
    assert!(
        !calls.is_empty() && calls.iter().all(|h| *h == host),
        "{calls:?}"
    );

    // credsStore serves every host the file has no entry for.
    let store_cfg = work.join("store.json");
    fs::write(&store_cfg, r#"{"credsStore":"esgztest"}"#).unwrap();
    let out = ok(estargz(
        &[
            "pull",
            "--plain-http",
            "--auth-file",
            store_cfg.to_str().unwrap(),
            &reference,
            "--cat",
            "hello.txt",
        ],
        Some(&path),
    ));
    assert_eq!(out, files[0].1);

    // No credentials: refused. A failing helper: an error naming it.
    let empty = work.join("empty.json");
    fs::write(&empty, "{}").unwrap();
    let err = failed(estargz(
        &[
            "pull",
            "--plain-http",
            "--auth-file",
            empty.to_str().unwrap(),
            &reference,
            "--ls",
        ],
        Some(&path),
    ));
    assert!(err.contains("no auth file has one"), "{err}");
    let bad = work.join("bad.json");
    fs::write(
        &bad,
        format!(r#"{{"credHelpers":{{"{host}":"esgzfail"}}}}"#),
    )
    .unwrap();
    let err = failed(estargz(
        &[
            "pull",
            "--plain-http",
            "--auth-file",
            bad.to_str().unwrap(),
            &reference,
            "--ls",
        ],
        Some(&path),
    ));
    assert!(
        err.contains("docker-credential-esgzfail") && err.contains("keychain locked"),
        "{err}"
    );
    let missing = work.join("missing.json");
    fs::write(
        &missing,
        format!(r#"{{"credHelpers":{{"{host}":"esgznone"}}}}"#),
    )
    .unwrap();
    let err = failed(estargz(
        &[
            "pull",
            "--plain-http",
            "--auth-file",
            missing.to_str().unwrap(),
            &reference,
            "--ls",
        ],
        Some(&path),
    ));
    assert!(err.contains("docker-credential-esgznone"), "{err}");

    // The store resolves and reads the layer through the helper too.
    if !fuse_available() {
        return;
    }
    let plain_auth = work.join("plain.json");
    fs::write(
        &plain_auth,
        format!(
            r#"{{"auths":{{"{host}":{{"auth":"{}"}}}}}}"#,
            base64::engine::general_purpose::STANDARD.encode("alice:s3cret")
        ),
    )
    .unwrap();
    let client = Registry::new(
        HttpOptions::default()
            .plain_http(true)
            .auth_files(vec![plain_auth]),
    );
    let image = client
        .resolve_image(&Reference::parse(&reference).unwrap(), None)
        .unwrap();
    let toc = image.manifest.layers[0].toc_digest().unwrap().to_string();
    let calls_before = helper_calls(&bin, "esgztest").len();
    let mnt = work.join("store");
    fs::create_dir_all(&mnt).unwrap();
    let log = work.join("store.log");
    let args: Vec<OsString> = [
        "store",
        mnt.to_str().unwrap(),
        "--plain-http",
        "--auth-file",
        cfg,
    ]
    .iter()
    .map(OsString::from)
    .collect();
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let child = start_fuse_process_with_env(&args, &[("PATH", &path)], &mnt, &log);
    let big = store_layer_diff(&mnt, &reference, &toc).join("data/big.bin");
    read_then_stop_store(child, &mnt, &log, &big, &files[1].1);
    assert!(helper_calls(&bin, "esgztest").len() > calls_before);
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running openssl (Debian package openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`ca.crt`), a server certificate for 127.0.0.1 (`server.crt`,
/// `server.key`) and a client certificate (`client.cert`, `client.key`),
/// both signed by the CA.
fn make_pki(dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509", "-days", "2", "-subj", "/CN=estargz test CA"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.crt"]);
    openssl(dir, &ca);
    fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for (name, cn, cert) in [
        ("server", "127.0.0.1", "server.crt"),
        ("client", "estargz client", "client.cert"),
    ] {
        let subj = format!("/CN={cn}");
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let mut req = vec!["req", "-subj", &subj];
        req.extend(ec);
        req.extend(["-keyout", &key, "-out", &csr]);
        openssl(dir, &req);
        let ext = format!("{name}.ext");
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &ext,
                "-out",
                cert,
            ],
        );
    }
}

/// A `certs.d` directory with `host/` holding the named files from `pki`.
fn certs_dir(root: &Path, host: &str, pki: &Path, names: &[&str]) -> PathBuf {
    let d = root.join(host);
    fs::create_dir_all(&d).unwrap();
    for n in names {
        fs::copy(pki.join(n), d.join(n)).unwrap();
    }
    root.to_path_buf()
}

#[test]
fn private_ca_and_client_certificates_from_certs_d() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let (files, blob) = make_layer(work);
    let pki = work.join("pki");
    make_pki(&pki);
    let reg = TestRegistry::start_with(&RegistryConfig {
        tls: Some((&pki.join("server.crt"), &pki.join("server.key"))),
        ..Default::default()
    });
    let host = reg.host();
    let trusted = certs_dir(&work.join("trusted"), &host, &pki, &["ca.crt"]);
    let trusted = trusted.to_str().unwrap();
    let reference = format!("{host}/tls/app:v1");
    let blob = blob.to_str().unwrap();
    ok(estargz(
        &["push", "--certs-dir", trusted, &reference, blob],
        None,
    ));
    let out = ok(estargz(
        &[
            "pull",
            "--certs-dir",
            trusted,
            &reference,
            "--cat",
            "hello.txt",
        ],
        None,
    ));
    assert_eq!(out, files[0].1);

    // Without the CA: refused at once (no retries), saying why and where
    // the CA would go.
    let empty = work.join("empty-certs");
    fs::create_dir_all(&empty).unwrap();
    let started = Instant::now();
    let err = failed(estargz(
        &[
            "pull",
            "--certs-dir",
            empty.to_str().unwrap(),
            &reference,
            "--ls",
        ],
        None,
    ));
    assert!(err.contains("is not trusted"), "{err}");
    assert!(err.contains(&format!("{host}/ca.crt")), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // A registry that requires a client certificate.
    let mtls = TestRegistry::start_with(&RegistryConfig {
        tls: Some((&pki.join("server.crt"), &pki.join("server.key"))),
        client_ca: Some(&pki.join("ca.crt")),
        ..Default::default()
    });
    let mhost = mtls.host();
    let with_client = certs_dir(
        &work.join("client"),
        &mhost,
        &pki,
        &["ca.crt", "client.cert", "client.key"],
    );
    let with_client = with_client.to_str().unwrap();
    let mref = format!("{mhost}/mtls/app:v1");
    ok(estargz(
        &["push", "--certs-dir", with_client, &mref, blob],
        None,
    ));
    let out = ok(estargz(
        &[
            "pull",
            "--certs-dir",
            with_client,
            &mref,
            "--cat",
            "data/big.bin",
        ],
        None,
    ));
    assert!(out == files[1].1, "big.bin differs");
    let ca_only = certs_dir(&work.join("ca-only"), &mhost, &pki, &["ca.crt"]);
    let err = failed(estargz(
        &[
            "pull",
            "--certs-dir",
            ca_only.to_str().unwrap(),
            &mref,
            "--ls",
        ],
        None,
    ));
    assert!(err.contains("client certificate"), "{err}");
}

/// Waits until the pull-through cache holds every blob of the image
/// (it stores blobs in the background while serving them).
fn wait_cached(mirror: &TestRegistry, digests: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    for d in digests {
        let hex = d.strip_prefix("sha256:").unwrap();
        let p = mirror
            .data_dir()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data");
        while !p.exists() {
            assert!(Instant::now() < deadline, "the mirror never cached {d}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn mirrors_from_registries_conf_serve_pulls_and_fall_back() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let (files, blob) = make_layer(work);
    let mut origin = TestRegistry::start(None);
    // Clients reach the origin through a proxy that counts their requests;
    // the mirror talks to the origin directly.
    let counted = FaultProxy::start(origin.addr(), None).unwrap();
    let mut mirror = TestRegistry::start_with(&RegistryConfig {
        proxy_remote: Some(format!("http://{}", origin.host())),
        ..Default::default()
    });
    let origin_host = counted.addr().to_string();
    let reference = format!("{origin_host}/mirrored/app:v1");
    ok(estargz(
        &["push", "--plain-http", &reference, blob.to_str().unwrap()],
        None,
    ));
    let conf = work.join("registries.conf");
    fs::write(
        &conf,
        format!(
            "unqualified-search-registries = []\n\
             [[registry]]\nlocation = \"{origin_host}\"\ninsecure = true\n\
             [[registry.mirror]]\nlocation = \"{}\"\ninsecure = true\n\
             [[registry]]\nprefix = \"127.0.0.1:9/blocked\"\nlocation = \"127.0.0.1:9/blocked\"\nblocked = true\n",
            mirror.host()
        ),
    )
    .unwrap();
    let conf = conf.to_str().unwrap();
    let pull = |path: &str| {
        estargz(
            &[
                "pull",
                "--registries-conf",
                conf,
                "--retries",
                "2",
                &reference,
                "--cat",
                path,
            ],
            None,
        )
    };
    let requests = || counted.stats().requests.load(Ordering::SeqCst);

    // Reads go to the mirror: not one request reaches the origin's address.
    let before = requests();
    assert!(ok(pull("data/big.bin")) == files[1].1, "big.bin differs");
    assert_eq!(requests(), before, "the origin was asked directly");
    let client = Registry::new(
        HttpOptions::default()
            .plain_http(true)
            .auth_files(Vec::new()),
    );
    let image = client
        .resolve_image(&Reference::parse(&reference).unwrap(), None)
        .unwrap();
    // `pull` reads the manifest and the layer, not the config.
    let digests: Vec<String> = image
        .manifest
        .layers
        .iter()
        .map(|l| l.digest.clone())
        .collect();
    wait_cached(&mirror, &digests);

    // Origin down: the mirror serves from its cache. (A pull-through
    // cache cannot start while its remote is down, so the mirror keeps
    // running here.)
    origin.stop();
    assert!(ok(pull("data/big.bin")) == files[1].1, "big.bin differs");

    // Origin back, mirror down: the origin serves.
    origin.restart();
    mirror.stop();
    let before = requests();
    assert_eq!(ok(pull("hello.txt")), files[0].1);
    assert!(requests() > before, "the origin was not asked");

    origin.stop();
    // Both down: an error that names both.
    mirror.stop();
    let err = failed(pull("hello.txt"));
    assert!(err.contains(&mirror.host()), "{err}");

    // A blocked registry is refused before any request.
    let err = failed(estargz(
        &[
            "pull",
            "--registries-conf",
            conf,
            "127.0.0.1:9/blocked/app:v1",
            "--ls",
        ],
        None,
    ));
    assert!(err.contains("blocked"), "{err}");

    // A broken file fails start-up naming the file.
    let broken = work.join("broken.conf");
    fs::write(&broken, "[[registry]]\nprefix = \"x.example\"\n").unwrap();
    let err = failed(estargz(
        &[
            "pull",
            "--registries-conf",
            broken.to_str().unwrap(),
            &reference,
            "--ls",
        ],
        None,
    ));
    assert!(
        err.contains("broken.conf") && err.contains("no location"),
        "{err}"
    );
}

/// What the token server below accepts: the current password, and tokens
/// it handed out since the last rotation.
#[derive(Default)]
struct TokenState {
    password: String,
    tokens: Vec<String>,
    issued: u32,
}

/// A registry speaking the token protocol (token lifetime 2 s) whose
/// password can be rotated, which revokes its tokens. Hand-written: the
/// Debian registry has no token server.
fn token_registry(state: std::sync::Arc<std::sync::Mutex<TokenState>>) -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let mut auth = String::new();
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    if k.eq_ignore_ascii_case("authorization") {
                        auth = v.trim().to_string();
                    }
                }
            }
            let path = line.split(' ').nth(1).unwrap_or("").to_string();
            let mut st = state.lock().unwrap();
            let basic = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("alice:{}", st.password))
            );
            let (status, headers, body) = if path.starts_with("/token?") {
                if auth == basic {
                    st.issued += 1;
                    let token = format!("T{}", st.issued);
                    st.tokens.push(token.clone());
                    (
                        "200 OK",
                        String::new(),
                        format!(r#"{{"token":"{token}","expires_in":2}}"#),
                    )
                } else {
                    ("401 Unauthorized", String::new(), String::new())
                }
            } else if auth
                .strip_prefix("Bearer ")
                .is_some_and(|t| st.tokens.iter().any(|v| v == t))
            {
                (
                    "200 OK",
                    "Content-Type: application/vnd.oci.image.manifest.v1+json\r\n".into(),
                    format!(
                        r#"{{"schemaVersion":2,"config":{{"mediaType":"x","digest":"sha256:{}","size":0}},"layers":[]}}"#,
                        "0".repeat(64)
                    ),
                )
            } else {
                (
                    "401 Unauthorized",
                    format!("WWW-Authenticate: Bearer realm=\"http://{addr}/token\",service=\"svc\",scope=\"repository:team/app:pull\"\r\n"),
                    String::new(),
                )
            };
            drop(st);
            let mut w = conn;
            let _ = write!(
                w,
                "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr.to_string()
}

#[test]
fn helper_credentials_are_fetched_again_when_a_token_expires_or_is_revoked() {
    use std::sync::{Arc, Mutex};
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    let pw = dir.path().join("password");
    fs::write(&pw, "one").unwrap();
    let state = Arc::new(Mutex::new(TokenState {
        password: "one".into(),
        ..Default::default()
    }));
    let host = token_registry(state.clone());
    write_helper(
        &bin,
        "esgzrotate",
        &format!(
            "printf '{{\"Username\":\"alice\",\"Secret\":\"%s\"}}' \"$(cat {})\"",
            pw.display()
        ),
    );
    // The library looks helpers up in PATH; this test's helper directory
    // joins it for the whole test process (the other tests pass PATH to
    // their children explicitly).
    std::env::set_var("PATH", path_with(&bin));
    let config = dir.path().join("config.json");
    fs::write(
        &config,
        format!(r#"{{"credHelpers":{{"{host}":"esgzrotate"}}}}"#),
    )
    .unwrap();
    let client = Registry::new(
        HttpOptions::default()
            .plain_http(true)
            .auth_files(vec![config])
            .retries(1),
    );
    let r = Reference::parse(&format!("{host}/team/app:v1")).unwrap();
    let calls = || helper_calls(&bin, "esgzrotate").len();
    client.fetch_manifest(&r).unwrap();
    assert_eq!(calls(), 1);
    // A valid cached token: no helper, no token request.
    client.fetch_manifest(&r).unwrap();
    assert_eq!((calls(), state.lock().unwrap().issued), (1, 1));
    // The token's lifetime has passed: the helper runs again.
    std::thread::sleep(Duration::from_millis(1300));
    client.fetch_manifest(&r).unwrap();
    assert_eq!((calls(), state.lock().unwrap().issued), (2, 2));
    // The secret rotates and the registry revokes its tokens: the 401 on
    // the cached token fetches the new secret from the helper.
    fs::write(&pw, "two").unwrap();
    {
        let mut st = state.lock().unwrap();
        st.password = "two".into();
        st.tokens.clear();
    }
    client.fetch_manifest(&r).unwrap();
    assert_eq!((calls(), state.lock().unwrap().issued), (3, 3));
}

#[test]
fn the_store_tells_systemd_when_it_is_mounted_and_when_it_stops() {
    if !fuse_available() {
        return;
    }
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mnt = dir.path().join("store");
    fs::create_dir_all(&mnt).unwrap();
    let log = dir.path().join("store.log");
    let mnt_s = mnt.to_str().unwrap();
    let words = ["store", mnt_s, "--plain-http"];
    let args: Vec<&std::ffi::OsStr> = words.iter().map(std::ffi::OsStr::new).collect();
    let child = start_fuse_process_with_env(
        &args,
        &[("NOTIFY_SOCKET", socket_path.as_os_str())],
        &mnt,
        &log,
    );
    let mut buf = [0u8; 64];
    let n = socket.recv(&mut buf);
    let status = stop_fuse_process(child, &mnt, &log);
    let log_text = fs::read_to_string(&log).unwrap_or_default();
    let n = n.unwrap_or_else(|e| panic!("no READY=1 ({e}):\n{log_text}"));
    assert_eq!(&buf[..n], b"READY=1");
    let n = socket.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"STOPPING=1");
    assert!(status.success(), "{status}:\n{log_text}");
}

/// Runs `estargz-fuse ARGS` to its end (at most 20 s: a start-up error
/// must come before any mount).
fn fuse_cmd(args: &[&std::ffi::OsStr]) -> Output {
    let mut child = Command::new(fuse_bin())
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("estargz-fuse {args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn a_bad_store_config_fails_start_up_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("store");
    let cases = [
        (
            "plain_http = true\nprefetchh = false\n",
            "unknown key `prefetchh`",
        ),
        (
            "disk_cache_size = \"lots\"\n",
            "key `disk_cache_size`: invalid value 'lots'",
        ),
        (
            "insecure_registries = \"a:5000\"\n",
            "key `insecure_registries`: expected an array",
        ),
        ("[registry]\nplain_http = true\n", "unknown key `registry`"),
    ];
    for (text, want) in cases {
        let cfg = dir.path().join("store.toml");
        fs::write(&cfg, text).unwrap();
        // In the foreground and with --daemon (the parent reads the file
        // before detaching), nothing is mounted and the exit is a failure.
        for daemon in [false, true] {
            let mut args = vec![
                std::ffi::OsStr::new("store"),
                std::ffi::OsStr::new("--config"),
                cfg.as_os_str(),
                mnt.as_os_str(),
            ];
            if daemon {
                args.push(std::ffi::OsStr::new("--daemon"));
            }
            let out = fuse_cmd(&args);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{text}: started");
            assert!(
                err.contains(want) && err.contains("store.toml"),
                "{text}: {err}"
            );
            assert!(!is_mounted(&mnt));
        }
    }
    // A named file that does not exist is an error too.
    let missing = dir.path().join("missing.toml");
    let out = fuse_cmd(&[
        std::ffi::OsStr::new("store"),
        std::ffi::OsStr::new("--config"),
        missing.as_os_str(),
        mnt.as_os_str(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml"));
}

/// Waits (20 s) until `log` has `count` lines containing `needle`.
fn wait_log(log: &Path, needle: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = fs::read_to_string(log).unwrap_or_default();
        if text.matches(needle).count() >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in the log:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_store_reloads_registry_settings_from_its_config_on_sighup() {
    if !fuse_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let (files, blob) = make_layer(work);
    let reg = TestRegistry::start(Some(("alice", "s3cret")));
    let host = reg.host();
    let auth = |name: &str, password: &str| {
        let p = work.join(name);
        fs::write(
            &p,
            format!(
                r#"{{"auths":{{"{host}":{{"auth":"{}"}}}}}}"#,
                base64::engine::general_purpose::STANDARD.encode(format!("alice:{password}"))
            ),
        )
        .unwrap();
        p
    };
    let good = auth("good.json", "s3cret");
    let wrong = auth("wrong.json", "guess");
    let reference = format!("{host}/reload/app:v1");
    ok(estargz(
        &[
            "push",
            "--plain-http",
            "--auth-file",
            good.to_str().unwrap(),
            &reference,
            blob.to_str().unwrap(),
        ],
        None,
    ));
    let client = Registry::new(
        HttpOptions::default()
            .plain_http(true)
            .auth_files(vec![good.clone()]),
    );
    let image = client
        .resolve_image(&Reference::parse(&reference).unwrap(), None)
        .unwrap();
    let toc = image.manifest.layers[0].toc_digest().unwrap().to_string();

    // Every key of the file at once; the auth file is the wrong one.
    let cfg = work.join("store.toml");
    let write_cfg = |auth_file: &Path, extra: &str| {
        fs::write(
            &cfg,
            format!(
                "plain_http = true\ninsecure_registries = [\"{host}\"]\n\
                 auth_file = \"{}\"\nrequest_timeout_sec = 10\nretries = 1\n\
                 registries_conf = \"{}\"\ncerts_dirs = [\"{}\"]\n\
                 cache_dir = \"{}\"\ndisk_cache_size = 100000000\n\
                 memory_cache_size = 10000000\nprefetch = true\n\
                 background_fetch = false\nbackground_quiet_ms = 0\n\
                 image_ttl_sec = 120\nidle_unload_sec = 120\nallow_other = true\n\
                 threads = 4\nlog_level = \"debug\"\n{extra}",
                auth_file.display(),
                work.join("registries.conf").display(),
                work.join("certs.d").display(),
                work.join("cache").display(),
            ),
        )
        .unwrap();
    };
    fs::write(work.join("registries.conf"), "").unwrap();
    write_cfg(&wrong, "");
    let mnt = work.join("store");
    fs::create_dir_all(&mnt).unwrap();
    let log = work.join("store.log");
    let words = [
        OsString::from("store"),
        "--config".into(),
        cfg.clone().into(),
        mnt.clone().into(),
    ];
    let args: Vec<&std::ffi::OsStr> = words.iter().map(|a| a.as_os_str()).collect();
    let child = start_fuse_process(&args, &mnt, &log);
    let pid = child.id() as i32;
    let diff = store_layer_diff(&mnt, &reference, &toc);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // The wrong password: refused.
        assert!(fs::read(diff.join("hello.txt")).is_err());
        wait_log(&log, "not served", 1);

        // A broken file on SIGHUP: logged, the old settings kept, still served.
        fs::write(&cfg, "auth_filee = \"x\"\n").unwrap();
        unsafe { libc::kill(pid, libc::SIGHUP) };
        wait_log(&log, "settings not reloaded", 1);
        assert!(is_mounted(&mnt));
        assert!(fs::read(diff.join("hello.txt")).is_err());

        // The right auth file (and a key only a restart applies): the next
        // lookup authenticates with it.
        write_cfg(&good, "");
        let text = fs::read_to_string(&cfg)
            .unwrap()
            .replace("threads = 4", "threads = 5");
        fs::write(&cfg, text).unwrap();
        unsafe { libc::kill(pid, libc::SIGHUP) };
        wait_log(&log, "registry settings reloaded", 1);
        wait_log(&log, "threads changed; restart the store", 1);
        assert_eq!(fs::read(diff.join("data/big.bin")).unwrap(), files[1].1);
        assert_eq!(fs::read(diff.join("hello.txt")).unwrap(), files[0].1);
        // The cache dir from the file is used.
        assert!(fs::read_dir(work.join("cache")).unwrap().next().is_some());
    }));
    let status = stop_fuse_process(child, &mnt, &log);
    let log_text = fs::read_to_string(&log).unwrap_or_default();
    if let Err(e) = result {
        panic!("{e:?}\n{log_text}");
    }
    assert!(status.success(), "{status}:\n{log_text}");
    assert!(log_text.contains(&format!("settings from {}", cfg.display())));
}

/// `--hosts-dir` (and the store's `hosts_dir` key): containerd's
/// hosts.toml sends the pulls of an image named after an address nobody
/// listens on to the `server` it names; without the flag they fail.
#[test]
fn hosts_toml_from_hosts_dir_serves_pull_and_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let (files, blob) = make_layer(work);
    let origin = TestRegistry::start(None);
    ok(estargz(
        &[
            "push",
            "--plain-http",
            &format!("{}/hosted/app:v1", origin.host()),
            blob.to_str().unwrap(),
        ],
        None,
    ));
    let nobody = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let reference = format!("{nobody}/hosted/app:v1");
    let hosts = work.join("certs.d");
    fs::create_dir_all(hosts.join(&nobody)).unwrap();
    fs::write(
        hosts.join(&nobody).join("hosts.toml"),
        format!("server = \"http://{}\"\n", origin.host()),
    )
    .unwrap();
    let hosts = hosts.to_str().unwrap();
    let pull = |extra: &[&str]| {
        let mut args = vec![
            "pull",
            "--retries",
            "0",
            &reference,
            "--cat",
            "data/big.bin",
        ];
        args.extend(extra);
        estargz(&args, None)
    };
    let err = failed(pull(&[]));
    assert!(err.contains(&nobody), "{err}");
    assert!(
        ok(pull(&["--hosts-dir", hosts])) == files[1].1,
        "big.bin differs"
    );

    // The store, from its config file.
    if !fuse_available() {
        return;
    }
    let client = Registry::new(
        HttpOptions::default()
            .plain_http(true)
            .auth_files(Vec::new()),
    );
    let image = client
        .resolve_image(
            &Reference::parse(&format!("{}/hosted/app:v1", origin.host())).unwrap(),
            None,
        )
        .unwrap();
    let toc = image.manifest.layers[0].toc_digest().unwrap().to_string();
    let config = work.join("store.toml");
    fs::write(&config, format!("hosts_dir = \"{hosts}\"\nretries = 0\n")).unwrap();
    let mnt = work.join("store");
    fs::create_dir_all(&mnt).unwrap();
    let log = work.join("store.log");
    let args: [&std::ffi::OsStr; 4] = [
        "store".as_ref(),
        mnt.as_os_str(),
        "--config".as_ref(),
        config.as_os_str(),
    ];
    let child = start_fuse_process(&args, &mnt, &log);
    let big = store_layer_diff(&mnt, &reference, &toc).join("data/big.bin");
    read_then_stop_store(child, &mnt, &log, &big, &files[1].1);
}

/// The store's `diff` directory of the layer with TOC digest `toc` of
/// `reference`.
fn store_layer_diff(mnt: &Path, reference: &str, toc: &str) -> PathBuf {
    mnt.join(base64::engine::general_purpose::STANDARD.encode(reference))
        .join(toc)
        .join("diff")
}

/// Reads `file` through the running store, stops it, and checks the bytes
/// and a clean exit (the store's log in every failure).
fn read_then_stop_store(
    child: std::process::Child,
    mnt: &Path,
    log: &Path,
    file: &Path,
    expected: &[u8],
) {
    let read = fs::read(file);
    let status = stop_fuse_process(child, mnt, log);
    let log_text = fs::read_to_string(log).unwrap_or_default();
    let read = read.unwrap_or_else(|e| panic!("{}: {e}:\n{log_text}", file.display()));
    assert!(
        read == expected,
        "{} differs through the store:\n{log_text}",
        file.display()
    );
    assert!(status.success(), "{status}:\n{log_text}");
}
