//! `--metrics-address`: the core's counters ([`estargz_core::metrics`]) for
//! Prometheus, over HTTP on a TCP address (`127.0.0.1:PORT`) or a unix
//! socket (an absolute path). Scrapes are rare and small, so one thread
//! answers them one at a time, each bounded by a timeout so a client that
//! sends nothing cannot hold it.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long a client may take to send its request and read the answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest request head read.
const MAX_HEAD: usize = 8 << 10;

/// Where the endpoint listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricsAddress {
    Tcp(SocketAddr),
    Unix(std::path::PathBuf),
}

impl std::str::FromStr for MetricsAddress {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.starts_with('/') {
            return Ok(MetricsAddress::Unix(s.into()));
        }
        s.parse().map(MetricsAddress::Tcp).map_err(|_| {
            format!("{s:?}: expected HOST:PORT (e.g. 127.0.0.1:9100) or an absolute socket path")
        })
    }
}

impl MetricsAddress {
    /// The address as `--metrics-address` takes it.
    pub fn to_arg(&self) -> String {
        match self {
            MetricsAddress::Tcp(a) => a.to_string(),
            MetricsAddress::Unix(p) => p.display().to_string(),
        }
    }
}

impl std::fmt::Display for MetricsAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetricsAddress::Tcp(a) => write!(f, "http://{a}/metrics"),
            MetricsAddress::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// A running endpoint. Dropping it stops the thread (after the scrape it
/// may be answering) and removes the socket file it made; the binaries
/// keep theirs for the life of the process, the C ABI's callers drop it
/// with `estargz_metrics_server_free`.
pub struct MetricsServer {
    /// The bound address (the real port when asked for port 0).
    address: MetricsAddress,
    listener: Arc<Listener>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The socket file made, by (device, inode), so only that one is removed.
    socket_file: Option<(u64, u64)>,
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    fn fd(&self) -> std::os::fd::RawFd {
        match self {
            Listener::Tcp(l) => l.as_raw_fd(),
            Listener::Unix(l) => l.as_raw_fd(),
        }
    }

    /// One connection, bounded by the client timeout; `None` once shut down
    /// (or on an error accepting, which the caller sees as the same).
    fn accept(&self) -> Option<Box<dyn ReadWrite>> {
        Some(match self {
            Listener::Tcp(l) => {
                let (c, _) = l.accept().ok()?;
                let _ = c.set_read_timeout(Some(CLIENT_TIMEOUT));
                let _ = c.set_write_timeout(Some(CLIENT_TIMEOUT));
                Box::new(c)
            }
            Listener::Unix(l) => {
                let (c, _) = l.accept().ok()?;
                let _ = c.set_read_timeout(Some(CLIENT_TIMEOUT));
                let _ = c.set_write_timeout(Some(CLIENT_TIMEOUT));
                Box::new(c)
            }
        })
    }
}

trait ReadWrite: Read + Write + Send {}
impl<T: Read + Write + Send> ReadWrite for T {}

/// Binds `address` (a stale socket file left by an earlier run is
/// replaced) and answers scrapes from a thread of its own until the
/// returned server is dropped.
pub fn serve(address: &MetricsAddress) -> io::Result<MetricsServer> {
    let context = |e: io::Error| io::Error::new(e.kind(), format!("metrics on {address}: {e}"));
    let (listener, bound, socket_file) = match address {
        MetricsAddress::Tcp(a) => {
            let l = TcpListener::bind(a).map_err(context)?;
            let bound = MetricsAddress::Tcp(l.local_addr().map_err(context)?);
            (Listener::Tcp(l), bound, None)
        }
        MetricsAddress::Unix(p) => {
            remove_stale_socket(p).map_err(context)?;
            let l = UnixListener::bind(p).map_err(context)?;
            let m = std::fs::symlink_metadata(p).map_err(context)?;
            (Listener::Unix(l), address.clone(), Some((m.dev(), m.ino())))
        }
    };
    let listener = Arc::new(listener);
    let stop = Arc::new(AtomicBool::new(false));
    let thread = std::thread::Builder::new().name("metrics".into()).spawn({
        let (listener, stop) = (listener.clone(), stop.clone());
        move || {
            while !stop.load(Ordering::Acquire) {
                match listener.accept() {
                    Some(conn) => answer(conn),
                    // Accept errors other than the shutdown (EMFILE, a
                    // client gone before it was accepted) pass; a short
                    // pause keeps a persistent one from spinning.
                    None if !stop.load(Ordering::Acquire) => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    None => {}
                }
            }
        }
    })?;
    Ok(MetricsServer {
        address: bound,
        listener,
        stop,
        thread: Some(thread),
        socket_file,
    })
}

impl std::fmt::Debug for MetricsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MetricsServer({})", self.address)
    }
}

impl MetricsServer {
    /// Where it listens (with the port the system chose for port 0).
    pub fn address(&self) -> &MetricsAddress {
        &self.address
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Linux wakes a thread blocked in accept() on a listening socket
        // that is shut down (EINVAL), TCP and unix alike.
        // SAFETY: the fd is the listener's, kept open by `self.listener`.
        unsafe { libc::shutdown(self.listener.fd(), libc::SHUT_RDWR) };
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let (MetricsAddress::Unix(p), Some(id)) = (&self.address, self.socket_file) {
            if std::fs::symlink_metadata(p).is_ok_and(|m| (m.dev(), m.ino()) == id) {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

/// A socket file is ours to replace; anything else at the path is not.
fn remove_stale_socket(p: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(p),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the path exists and is not a socket",
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// One request: `GET /metrics` gets the exposition, anything else a 404.
fn answer(mut conn: impl Read + Write) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let mut words = line.split(|b| *b == b' ');
    let (method, path) = (words.next(), words.next());
    let (status, body) = match (method, path) {
        (Some(b"GET"), Some(b"/metrics")) => ("200 OK", estargz_core::metrics::global().render()),
        _ => ("404 Not Found", "try GET /metrics\n".to_string()),
    };
    let _ = write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(stream: &mut (impl Read + Write), path: &str) -> String {
        write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        stream.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn addresses_parse() {
        assert_eq!(
            "127.0.0.1:9100".parse::<MetricsAddress>().unwrap(),
            MetricsAddress::Tcp("127.0.0.1:9100".parse().unwrap())
        );
        assert_eq!(
            "/run/m.sock".parse::<MetricsAddress>().unwrap(),
            MetricsAddress::Unix("/run/m.sock".into())
        );
        assert!("localhost".parse::<MetricsAddress>().is_err());
    }

    #[test]
    fn scrapes_over_tcp_and_a_unix_socket() {
        estargz_core::metrics::global().fuse_request("statfs");
        let tcp = serve(&"127.0.0.1:0".parse().unwrap()).unwrap();
        let MetricsAddress::Tcp(port) = *tcp.address() else {
            panic!("{}", tcp.address())
        };
        assert_ne!(port.port(), 0, "the bound port is reported");
        assert_eq!(
            tcp.address().to_arg().parse::<MetricsAddress>().unwrap(),
            *tcp.address()
        );
        let mut c = std::net::TcpStream::connect(port).unwrap();
        let text = get(&mut c, "/metrics");
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(
            text.contains("estargz_fuse_requests_total{op=\"statfs\"}"),
            "{text}"
        );
        let mut c = std::net::TcpStream::connect(port).unwrap();
        assert!(get(&mut c, "/other").starts_with("HTTP/1.1 404"));
        // Dropped: the thread ends and the port is closed.
        drop(tcp);
        assert!(std::net::TcpStream::connect(port).is_err());

        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("m.sock");
        // A stale socket from an earlier run is replaced; a file is not.
        drop(UnixListener::bind(&sock).unwrap());
        let unix = serve(&MetricsAddress::Unix(sock.clone())).unwrap();
        let mut c = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        assert!(get(&mut c, "/metrics").contains("# TYPE estargz_cache_hits_total counter"));
        let file = dir.path().join("file");
        std::fs::write(&file, "keep").unwrap();
        let e = serve(&MetricsAddress::Unix(file.clone())).unwrap_err();
        assert!(e.to_string().contains("not a socket"), "{e}");
        assert_eq!(std::fs::read(&file).unwrap(), b"keep");
        // Its socket file goes with it.
        drop(unix);
        assert!(!sock.exists());
    }

    #[test]
    fn a_silent_client_does_not_keep_the_server_from_stopping_for_long() {
        let server = serve(&"127.0.0.1:0".parse().unwrap()).unwrap();
        let MetricsAddress::Tcp(a) = *server.address() else {
            unreachable!()
        };
        let _silent = std::net::TcpStream::connect(a).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let t = std::time::Instant::now();
        drop(server);
        assert!(t.elapsed() <= CLIENT_TIMEOUT + Duration::from_secs(1));
    }
}
