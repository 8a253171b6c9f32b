//! `--metrics-address`: the core's counters ([`estargz_core::metrics`]) for
//! Prometheus, over HTTP on a TCP address (`127.0.0.1:PORT`) or a unix
//! socket (an absolute path). Scrapes are rare and small, so one thread
//! answers them one at a time, each bounded by a timeout so a client that
//! sends nothing cannot hold it.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixListener;
use std::path::Path;
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

impl std::fmt::Display for MetricsAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetricsAddress::Tcp(a) => write!(f, "http://{a}/metrics"),
            MetricsAddress::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// Binds `address` (a stale socket file left by an earlier run is
/// replaced) and answers scrapes from a thread of its own for the life of
/// the process.
pub fn serve(address: &MetricsAddress) -> io::Result<()> {
    let context = |e: io::Error| io::Error::new(e.kind(), format!("metrics on {address}: {e}"));
    match address {
        MetricsAddress::Tcp(a) => {
            let listener = TcpListener::bind(a).map_err(context)?;
            spawn(move || {
                for conn in listener.incoming().flatten() {
                    let _ = conn.set_read_timeout(Some(CLIENT_TIMEOUT));
                    let _ = conn.set_write_timeout(Some(CLIENT_TIMEOUT));
                    answer(conn);
                }
            })
        }
        MetricsAddress::Unix(p) => {
            remove_stale_socket(p).map_err(context)?;
            let listener = UnixListener::bind(p).map_err(context)?;
            spawn(move || {
                for conn in listener.incoming().flatten() {
                    let _ = conn.set_read_timeout(Some(CLIENT_TIMEOUT));
                    let _ = conn.set_write_timeout(Some(CLIENT_TIMEOUT));
                    answer(conn);
                }
            })
        }
    }
}

fn spawn(f: impl FnOnce() + Send + 'static) -> io::Result<()> {
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(f)
        .map(|_| ())
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
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        serve(&MetricsAddress::Tcp(port)).unwrap();
        let mut c = std::net::TcpStream::connect(port).unwrap();
        let text = get(&mut c, "/metrics");
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(
            text.contains("estargz_fuse_requests_total{op=\"statfs\"}"),
            "{text}"
        );
        let mut c = std::net::TcpStream::connect(port).unwrap();
        assert!(get(&mut c, "/other").starts_with("HTTP/1.1 404"));

        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("m.sock");
        // A stale socket from an earlier run is replaced; a file is not.
        drop(UnixListener::bind(&sock).unwrap());
        serve(&MetricsAddress::Unix(sock.clone())).unwrap();
        let mut c = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        assert!(get(&mut c, "/metrics").contains("# TYPE estargz_cache_hits_total counter"));
        let file = dir.path().join("file");
        std::fs::write(&file, "keep").unwrap();
        let e = serve(&MetricsAddress::Unix(file.clone())).unwrap_err();
        assert!(e.to_string().contains("not a socket"), "{e}");
        assert_eq!(std::fs::read(&file).unwrap(), b"keep");
    }
}
