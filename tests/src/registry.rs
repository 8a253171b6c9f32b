//! Starts Debian's `docker-registry` (distribution 2.8) on 127.0.0.1 with
//! a configuration of its own: anonymous or htpasswd (token-less basic
//! auth), plain HTTP or TLS (optionally requiring client certificates), or
//! a pull-through cache of another registry.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct TestRegistry {
    child: Option<Child>,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
    log: PathBuf,
    config: PathBuf,
}

/// What a registry is started with besides its defaults.
#[derive(Default, Clone)]
pub struct RegistryConfig<'a> {
    /// Basic auth for everything: (name, password).
    pub user: Option<(&'a str, &'a str)>,
    /// Serve HTTPS with this PEM certificate and key.
    pub tls: Option<(&'a Path, &'a Path)>,
    /// With `tls`: require client certificates signed by this CA.
    pub client_ca: Option<&'a Path>,
    /// Be a pull-through cache of this URL (`http://127.0.0.1:PORT`).
    pub proxy_remote: Option<String>,
}

/// The registry binary (Debian package `docker-registry`).
pub fn registry_bin() -> PathBuf {
    let bin = std::env::var_os("ESTARGZ_TEST_REGISTRY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/docker-registry"));
    assert!(
        bin.exists(),
        "{} not found: install Debian's docker-registry package (.ci/run does)",
        bin.display()
    );
    bin
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl TestRegistry {
    /// Starts a registry; with `user` = Some((name, password)) it requires
    /// basic auth for everything.
    pub fn start(user: Option<(&str, &str)>) -> TestRegistry {
        Self::start_with(&RegistryConfig {
            user,
            ..Default::default()
        })
    }

    /// Starts a registry configured by `cfg`.
    pub fn start_with(cfg: &RegistryConfig) -> TestRegistry {
        let user = cfg.user;
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut auth = String::new();
        if let Some((name, password)) = user {
            let hash = bcrypt::hash(password, 5).unwrap();
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, format!("{name}:{hash}\n")).unwrap();
            auth = format!(
                "auth:\n  htpasswd:\n    realm: estargz-test\n    path: {}\n",
                htpasswd.display()
            );
        }
        let mut tls = String::new();
        if let Some((cert, key)) = cfg.tls {
            tls = format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            );
            if let Some(ca) = cfg.client_ca {
                tls += &format!("    clientcas:\n      - {}\n", ca.display());
            }
        }
        let proxy = match &cfg.proxy_remote {
            Some(url) => format!("proxy:\n  remoteurl: {url}\n"),
            None => String::new(),
        };
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{tls}{auth}{proxy}",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let log = dir.path().join("registry.log");
        let mut reg = TestRegistry {
            child: None,
            addr,
            _dir: dir,
            log,
            config,
        };
        reg.restart();
        reg
    }

    /// Stops the registry process (its data stays for [`Self::restart`]).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the process again (after [`Self::stop`]) on the same address
    /// with the same data.
    pub fn restart(&mut self) {
        self.stop();
        let child = Command::new(registry_bin())
            .arg("serve")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&self.log).unwrap())
            .stderr(std::fs::File::create(self._dir.path().join("registry.err")).unwrap())
            .spawn()
            .expect("starting docker-registry");
        self.child = Some(child);
        self.wait_ready();
    }

    /// The registry's storage root (`docker/registry/v2/...` below it).
    pub fn data_dir(&self) -> PathBuf {
        self._dir.path().join("data")
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "docker-registry exited with {status}: {}",
                    std::fs::read_to_string(self._dir.path().join("registry.err"))
                        .unwrap_or_default()
                );
            }
            if TcpStream::connect(self.addr).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "docker-registry did not listen on {} within 20 s",
            self.addr
        );
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:PORT`, for image references.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}
