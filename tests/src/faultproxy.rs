//! A fault-injecting HTTP/1.1 proxy for tests and benchmarks: it sits
//! between a client and a registry on loopback and can add latency, cap
//! bandwidth, reset or stall connections, truncate or corrupt response
//! bodies, and refuse or ignore multi-range requests. Each connection
//! carries one request (`Connection: close` is forced), so faults apply per
//! request.

use std::io::{self, Read, Write};
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
    /// Cut the next N responses after `truncate_after` bytes.
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
    pub requests: AtomicU64,
    pub bytes_down: AtomicU64,
    pub multi_range_requests: AtomicU64,
}

pub struct FaultProxy {
    addr: SocketAddr,
    faults: Arc<Mutex<Faults>>,
    stats: Arc<ProxyStats>,
    stop: Arc<AtomicBool>,
}

struct Shared {
    upstream: SocketAddr,
    faults: Arc<Mutex<Faults>>,
    stats: Arc<ProxyStats>,
    stop: Arc<AtomicBool>,
    /// When the shared link is next free (bandwidth cap).
    link_free_at: Mutex<Instant>,
}

impl FaultProxy {
    /// Listens on 127.0.0.1 (or `listen`) and forwards to `upstream`.
    pub fn start(upstream: SocketAddr, listen: Option<SocketAddr>) -> io::Result<FaultProxy> {
        let listener = TcpListener::bind(listen.unwrap_or_else(|| "127.0.0.1:0".parse().unwrap()))?;
        let addr = listener.local_addr()?;
        let faults = Arc::new(Mutex::new(Faults::default()));
        let stats = Arc::new(ProxyStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            upstream,
            faults: faults.clone(),
            stats: stats.clone(),
            stop: stop.clone(),
            link_free_at: Mutex::new(Instant::now()),
        });
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if shared.stop.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let shared = shared.clone();
                std::thread::spawn(move || {
                    let _ = handle(conn, &shared);
                });
            }
        });
        Ok(FaultProxy {
            addr,
            faults,
            stats,
            stop,
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
    }
}

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
    let (head, body) = read_head(&mut client)?;
    let text = String::from_utf8_lossy(&head).to_string();
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_string();
    let mut headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let range = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("range"))
        .map(|(_, v)| v.clone());
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
        reset(&client);
        return Ok(());
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
        return Ok(());
    }
    if plan.reject {
        client.write_all(
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?;
        return Ok(());
    }
    std::thread::sleep(plan.latency);
    if plan.ignore_range {
        headers.retain(|(k, _)| !k.eq_ignore_ascii_case("range"));
    }
    headers.retain(|(k, _)| !k.eq_ignore_ascii_case("connection"));
    let mut out = format!("{request_line}\r\n");
    for (k, v) in &headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("Connection: close\r\n\r\n");
    let mut upstream = TcpStream::connect(shared.upstream)?;
    upstream.write_all(out.as_bytes())?;
    upstream.write_all(&body)?;
    // Forward the rest of a request body, if any (uploads).
    let content_length: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    if content_length > body.len() {
        io::copy(
            &mut (&client).take((content_length - body.len()) as u64),
            &mut upstream,
        )?;
    }
    let mut sent = 0usize;
    let mut header_end: Option<usize> = None;
    let mut seen = Vec::new();
    let mut corrupted = false;
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let n = upstream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let mut chunk = buf[..n].to_vec();
        if header_end.is_none() {
            seen.extend_from_slice(&chunk);
            if let Some(i) = find(&seen, b"\r\n\r\n") {
                header_end = Some(i + 4);
            }
        }
        if plan.corrupt && !corrupted {
            if let Some(h) = header_end {
                // Flip the first body byte that is in this chunk.
                let body_start = h.saturating_sub(sent);
                if body_start < chunk.len() {
                    chunk[body_start] ^= 0xff;
                    corrupted = true;
                }
            }
        }
        if let Some(limit) = plan.truncate {
            let allowed = limit.saturating_sub(sent);
            if allowed < chunk.len() {
                client.write_all(&chunk[..allowed])?;
                reset(&client);
                return Ok(());
            }
        }
        throttle(shared, plan.rate, chunk.len());
        client.write_all(&chunk)?;
        sent += chunk.len();
        shared
            .stats
            .bytes_down
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
    }
    let _ = client.shutdown(Shutdown::Write);
    Ok(())
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

fn read_head(client: &mut TcpStream) -> io::Result<(Vec<u8>, Vec<u8>)> {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(i) = find(&data, b"\r\n\r\n") {
            let body = data.split_off(i + 4);
            data.truncate(i);
            return Ok((data, body));
        }
        if data.len() > 64 << 10 {
            return Err(io::Error::other("request head too large"));
        }
        let n = client.read(&mut buf)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "client closed",
            ));
        }
        data.extend_from_slice(&buf[..n]);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
