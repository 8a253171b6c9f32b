//! A fault-injecting HTTP/1.1 proxy for tests and benchmarks: it sits
//! between a client and a registry on loopback and can add latency, cap
//! bandwidth, reset or stall connections, truncate or corrupt response
//! bodies, and refuse or ignore multi-range requests. Connections are kept
//! alive as the client asks (each client connection has its own upstream
//! connection); faults apply per request, and a new connection costs one
//! round trip of latency, as a TCP handshake does.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The faults to inject; counters (`*_next`) apply to that many requests.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Delay before each request is forwarded.
    pub latency: Duration,
    /// Link capacity shared by all connections (bytes/s); 0 = unlimited.
    pub rate_bytes_per_sec: u64,
    /// Reset (RST) the next N connections without answering.
    pub reset_next: u32,
    /// Cut the next N responses after `truncate_after` body bytes.
    pub truncate_next: u32,
    pub truncate_after: usize,
    /// Never answer the next N requests (the client must time out).
    pub stall_next: u32,
    /// Flip one byte of the body of the next N responses.
    pub corrupt_next: u32,
    /// Answer 400 to requests with several ranges (like GCS).
    pub reject_multi_range: bool,
    /// Drop the Range header, so the registry sends the whole blob (like ECR
    /// for multi-range requests).
    pub ignore_range: bool,
}

#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Client connections accepted.
    pub connections: AtomicU64,
    pub requests: AtomicU64,
    /// Response bytes sent to clients, heads included.
    pub bytes_down: AtomicU64,
    /// Response body bytes sent to clients (what a client's body reads see).
    pub body_bytes_down: AtomicU64,
    pub multi_range_requests: AtomicU64,
}

pub struct FaultProxy {
    addr: SocketAddr,
    faults: Arc<Mutex<Faults>>,
    stats: Arc<ProxyStats>,
    stop: Arc<AtomicBool>,
    clients: Arc<Clients>,
}

/// Open client connections, so that stopping the proxy ends kept-alive
/// ones too (a registry that goes down drops its connections).
#[derive(Default)]
struct Clients {
    open: Mutex<std::collections::HashMap<u64, TcpStream>>,
    next: AtomicU64,
}

struct Shared {
    upstream: SocketAddr,
    faults: Arc<Mutex<Faults>>,
    stats: Arc<ProxyStats>,
    stop: Arc<AtomicBool>,
    /// When the shared link is next free (bandwidth cap).
    link_free_at: Mutex<Instant>,
    clients: Arc<Clients>,
}

impl FaultProxy {
    /// Listens on 127.0.0.1 (or `listen`) and forwards to `upstream`.
    pub fn start(upstream: SocketAddr, listen: Option<SocketAddr>) -> io::Result<FaultProxy> {
        let listener = TcpListener::bind(listen.unwrap_or_else(|| "127.0.0.1:0".parse().unwrap()))?;
        let addr = listener.local_addr()?;
        let faults = Arc::new(Mutex::new(Faults::default()));
        let stats = Arc::new(ProxyStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let clients = Arc::new(Clients::default());
        let shared = Arc::new(Shared {
            upstream,
            faults: faults.clone(),
            stats: stats.clone(),
            stop: stop.clone(),
            link_free_at: Mutex::new(Instant::now()),
            clients: clients.clone(),
        });
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if shared.stop.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let id = shared.clients.next.fetch_add(1, Ordering::Relaxed);
                if let Ok(clone) = conn.try_clone() {
                    shared.clients.open.lock().unwrap().insert(id, clone);
                }
                let shared = shared.clone();
                std::thread::spawn(move || {
                    let _ = handle(conn, &shared);
                    shared.clients.open.lock().unwrap().remove(&id);
                });
            }
        });
        Ok(FaultProxy {
            addr,
            faults,
            stats,
            stop,
            clients,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes the faults.
    pub fn set(&self, f: impl FnOnce(&mut Faults)) {
        f(&mut self.faults.lock().unwrap());
    }

    pub fn clear(&self) {
        *self.faults.lock().unwrap() = Faults::default();
    }

    pub fn stats(&self) -> &ProxyStats {
        &self.stats
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop.
        let _ = TcpStream::connect(self.addr);
        for (_, conn) in self.clients.open.lock().unwrap().drain() {
            let _ = conn.shutdown(Shutdown::Both);
        }
    }
}

/// The first byte of a TLS ClientHello record.
const TLS_HANDSHAKE: u8 = 0x16;
/// How long a kept-alive client connection may sit idle (or send half a
/// request head) before it is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// What this request gets, decided once (counters are consumed here).
struct Plan {
    latency: Duration,
    rate: u64,
    reset: bool,
    stall: bool,
    truncate: Option<usize>,
    corrupt: bool,
    reject: bool,
    ignore_range: bool,
}

fn plan(faults: &Mutex<Faults>, multi_range: bool) -> Plan {
    let mut f = faults.lock().unwrap();
    let take = |n: &mut u32| {
        if *n > 0 {
            *n -= 1;
            true
        } else {
            false
        }
    };
    let reset = take(&mut f.reset_next);
    let stall = !reset && take(&mut f.stall_next);
    let truncate = take(&mut f.truncate_next);
    let corrupt = take(&mut f.corrupt_next);
    Plan {
        latency: f.latency,
        rate: f.rate_bytes_per_sec,
        reset,
        stall,
        truncate: truncate.then_some(f.truncate_after),
        corrupt,
        reject: f.reject_multi_range && multi_range,
        ignore_range: f.ignore_range,
    }
}

fn handle(mut client: TcpStream, shared: &Shared) -> io::Result<()> {
    shared.stats.connections.fetch_add(1, Ordering::Relaxed);
    // Heads and bodies are written separately: without this, Nagle and
    // delayed ACKs add 40 ms to every kept-alive exchange.
    client.set_nodelay(true)?;
    // A TLS client (Podman tries https first) gets its connection closed at
    // once, as a plain-HTTP registry does, instead of waiting for a
    // request head that never comes.
    let mut first = [0u8; 1];
    client.set_read_timeout(Some(IDLE_TIMEOUT))?;
    if client.peek(&mut first)? == 1 && first[0] == TLS_HANDSHAKE {
        let _ = client.shutdown(Shutdown::Both);
        return Ok(());
    }
    // A new connection costs a round trip (the TCP handshake) on a real link.
    let latency = shared.faults.lock().unwrap().latency;
    std::thread::sleep(latency);
    let mut client_buf = Vec::new();
    let mut upstream: Option<BufReader<TcpStream>> = None;
    loop {
        let Some(head) = read_head(&mut client, &mut client_buf)? else {
            return Ok(()); // the client closed between requests
        };
        match forward_one(&mut client, &head, &mut client_buf, &mut upstream, shared)? {
            Next::KeepAlive => {}
            Next::Close => {
                let _ = client.shutdown(Shutdown::Write);
                return Ok(());
            }
        }
    }
}

/// What happens to a client connection after one exchange.
enum Next {
    KeepAlive,
    Close,
}

/// Forwards one request and its response, applying this request's faults.
fn forward_one(
    client: &mut TcpStream,
    head: &[u8],
    client_buf: &mut Vec<u8>,
    upstream: &mut Option<BufReader<TcpStream>>,
    shared: &Shared,
) -> io::Result<Next> {
    let text = String::from_utf8_lossy(head).to_string();
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_string();
    let mut headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let is_head = request_line.starts_with("HEAD ");
    let client_closes =
        header_value(&headers, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
    let range = header_value(&headers, "range").map(str::to_string);
    let multi = range.as_deref().is_some_and(|r| r.contains(','));
    shared.stats.requests.fetch_add(1, Ordering::Relaxed);
    if multi {
        shared
            .stats
            .multi_range_requests
            .fetch_add(1, Ordering::Relaxed);
    }
    let plan = plan(&shared.faults, multi);
    if plan.reset {
        reset(client);
        return Ok(Next::Close);
    }
    if plan.stall {
        // Hold the connection open without answering until the client
        // gives up (or a minute passes).
        let until = Instant::now() + Duration::from_secs(60);
        let mut buf = [0u8; 1];
        client.set_read_timeout(Some(Duration::from_millis(100)))?;
        while Instant::now() < until && !shared.stop.load(Ordering::Relaxed) {
            match client.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::TimedOut => {}
                Err(_) => break,
            }
        }
        return Ok(Next::Close);
    }
    // The rest of a request body, if any (uploads), is read before
    // answering so the connection stays in step.
    let content_length: u64 = header_value(&headers, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let buffered = client_buf.len().min(content_length as usize);
    let body: Vec<u8> = client_buf.drain(..buffered).collect();
    if plan.reject {
        io::copy(
            &mut (&*client).take(content_length.saturating_sub(body.len() as u64)),
            &mut io::sink(),
        )?;
        client.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")?;
        return Ok(if client_closes {
            Next::Close
        } else {
            Next::KeepAlive
        });
    }
    std::thread::sleep(plan.latency);
    if plan.ignore_range {
        headers.retain(|(k, _)| !k.eq_ignore_ascii_case("range"));
    }
    let mut out = format!("{request_line}\r\n");
    for (k, v) in &headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    if upstream.is_none() {
        let conn = TcpStream::connect(shared.upstream)?;
        conn.set_nodelay(true)?;
        *upstream = Some(BufReader::new(conn));
    }
    let up = upstream.as_mut().expect("connected above");
    up.get_mut().write_all(out.as_bytes())?;
    up.get_mut().write_all(&body)?;
    if content_length > body.len() as u64 {
        io::copy(
            &mut (&*client).take(content_length - body.len() as u64),
            up.get_mut(),
        )?;
    }
    let response = read_response_head(up)?;
    let framing = response.framing(is_head);
    let mut out = Relay {
        client,
        shared,
        plan: &plan,
        body_sent: 0,
    };
    out.send_head(&response.raw)?;
    let upstream_done = match framing {
        Framing::Length(n) => {
            out.relay(&mut up.take(n))?;
            true
        }
        Framing::Chunked => {
            relay_chunked(up, &mut out)?;
            true
        }
        Framing::UntilClose => {
            out.relay(up)?;
            false
        }
    };
    if out.truncated() {
        reset(client);
        return Ok(Next::Close);
    }
    if !upstream_done || response.closes {
        *upstream = None;
        return Ok(Next::Close);
    }
    Ok(if client_closes {
        Next::Close
    } else {
        Next::KeepAlive
    })
}

fn header_value<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// A response's status line and headers, as received.
struct ResponseHead {
    raw: Vec<u8>,
    status: u16,
    content_length: Option<u64>,
    chunked: bool,
    closes: bool,
}

/// How the end of a response body is found.
enum Framing {
    Length(u64),
    Chunked,
    UntilClose,
}

impl ResponseHead {
    fn framing(&self, is_head: bool) -> Framing {
        if is_head || self.status < 200 || self.status == 204 || self.status == 304 {
            Framing::Length(0)
        } else if self.chunked {
            Framing::Chunked
        } else if let Some(n) = self.content_length {
            Framing::Length(n)
        } else {
            Framing::UntilClose
        }
    }
}

fn read_response_head(up: &mut BufReader<TcpStream>) -> io::Result<ResponseHead> {
    let mut raw = Vec::new();
    loop {
        let before = raw.len();
        let n = up.read_until(b'\n', &mut raw)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "upstream closed before answering",
            ));
        }
        if raw.len() > 64 << 10 {
            return Err(io::Error::other("response head too large"));
        }
        if &raw[before..] == b"\r\n" {
            break;
        }
    }
    let text = String::from_utf8_lossy(&raw).to_string();
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(ResponseHead {
        status,
        content_length: header_value(&headers, "content-length").and_then(|v| v.parse().ok()),
        chunked: header_value(&headers, "transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked")),
        closes: header_value(&headers, "connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close")),
        raw,
    })
}

/// Copies a chunked body through as it is, finding its end.
fn relay_chunked(up: &mut BufReader<TcpStream>, out: &mut Relay) -> io::Result<()> {
    loop {
        let mut line = Vec::new();
        up.read_until(b'\n', &mut line)?;
        out.send_body(&line)?;
        let size_text = String::from_utf8_lossy(&line);
        let size_text = size_text.trim().split(';').next().unwrap_or("");
        let size = u64::from_str_radix(size_text, 16)
            .map_err(|_| io::Error::other(format!("bad chunk size {size_text:?}")))?;
        if size == 0 {
            // Trailers, then the empty line.
            loop {
                let mut t = Vec::new();
                if up.read_until(b'\n', &mut t)? == 0 {
                    return Ok(());
                }
                out.send_body(&t)?;
                if t == b"\r\n" {
                    return Ok(());
                }
            }
        }
        out.relay(&mut (&mut *up).take(size + 2))?;
        if out.truncated() {
            return Ok(());
        }
    }
}

/// Sends one response to the client through the shaped link, with this
/// request's body faults.
struct Relay<'a> {
    client: &'a mut TcpStream,
    shared: &'a Shared,
    plan: &'a Plan,
    body_sent: usize,
}

impl Relay<'_> {
    fn send_head(&mut self, head: &[u8]) -> io::Result<()> {
        throttle(self.shared, self.plan.rate, head.len());
        self.count(head.len());
        self.client.write_all(head)
    }

    /// Body bytes: flipped, cut or passed on as the plan says.
    fn send_body(&mut self, data: &[u8]) -> io::Result<()> {
        if self.truncated() {
            return Ok(());
        }
        let mut chunk = data.to_vec();
        if self.plan.corrupt && self.body_sent == 0 && !chunk.is_empty() {
            chunk[0] ^= 0xff;
        }
        if let Some(limit) = self.plan.truncate {
            let allowed = limit.saturating_sub(self.body_sent).min(chunk.len());
            chunk.truncate(allowed);
            // Mark the cut even when nothing more may be sent.
            self.body_sent += data.len() - allowed;
        }
        throttle(self.shared, self.plan.rate, chunk.len());
        // Counted before the write: once the client has the bytes, the
        // stats already show them (a test may read the stats right then).
        self.count(chunk.len());
        self.shared
            .stats
            .body_bytes_down
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        self.client.write_all(&chunk)?;
        self.body_sent += chunk.len();
        Ok(())
    }

    fn relay(&mut self, from: &mut impl Read) -> io::Result<()> {
        let mut buf = vec![0u8; 16 << 10];
        loop {
            let n = from.read(&mut buf)?;
            if n == 0 || self.truncated() {
                return Ok(());
            }
            self.send_body(&buf[..n])?;
        }
    }

    /// Whether the plan's truncation point was passed.
    fn truncated(&self) -> bool {
        self.plan
            .truncate
            .is_some_and(|limit| self.body_sent > limit)
    }

    fn count(&self, n: usize) {
        self.shared
            .stats
            .bytes_down
            .fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Reserves time on the shared link for `n` bytes and waits for it.
fn throttle(shared: &Shared, rate: u64, n: usize) {
    if rate == 0 {
        return;
    }
    let cost = Duration::from_secs_f64(n as f64 / rate as f64);
    let done_at = {
        let mut free = shared.link_free_at.lock().unwrap();
        let start = (*free).max(Instant::now());
        *free = start + cost;
        *free
    };
    let now = Instant::now();
    if done_at > now {
        std::thread::sleep(done_at - now);
    }
}

/// Closes with RST instead of FIN.
fn reset(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: valid fd owned by `stream`; the option struct lives across the call.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    let _ = stream.shutdown(Shutdown::Both);
}

/// Reads one request head (without its blank line) from `client`; bytes
/// after it stay in `buf`. `None` when the client closed between requests.
fn read_head(client: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<Option<Vec<u8>>> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            let head = buf[..i].to_vec();
            buf.drain(..i + 4);
            return Ok(Some(head));
        }
        if buf.len() > 64 << 10 {
            return Err(io::Error::other("request head too large"));
        }
        let n = client.read(&mut chunk)?;
        if n == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "client closed mid-request",
                ))
            };
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
