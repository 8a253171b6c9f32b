//! `faultproxy UPSTREAM [--listen ADDR] [--latency-ms N] [--rate-mbit N]
//! [--stats-file FILE]`: the tests' fault proxy as a program, for benchmarks
//! (latency and bandwidth shaping). Prints the address it listens on, then
//! runs until killed. With `--stats-file`, FILE is rewritten every 200 ms
//! with the cumulative counters as one JSON object:
//! `{"connections":N,"requests":N,"bytes_down":N,"multi_range_requests":N}`.

use estargz_tests::faultproxy::FaultProxy;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

fn main() {
    let mut args = std::env::args().skip(1);
    let upstream = args.next().expect("usage: faultproxy UPSTREAM [options]");
    let mut listen = None;
    let mut latency = 0u64;
    let mut rate_mbit = 0f64;
    let mut stats_file: Option<PathBuf> = None;
    while let Some(a) = args.next() {
        let v = args.next().expect("option needs a value");
        match a.as_str() {
            "--listen" => listen = Some(v.parse().expect("--listen ADDR:PORT")),
            "--latency-ms" => latency = v.parse().expect("--latency-ms N"),
            "--rate-mbit" => rate_mbit = v.parse().expect("--rate-mbit N"),
            "--stats-file" => stats_file = Some(v.into()),
            other => panic!("unknown option {other}"),
        }
    }
    let proxy = FaultProxy::start(upstream.parse().expect("UPSTREAM as ADDR:PORT"), listen)
        .expect("starting the proxy");
    proxy.set(|f| {
        f.latency = Duration::from_millis(latency);
        f.rate_bytes_per_sec = (rate_mbit * 1e6 / 8.0) as u64;
    });
    println!("{}", proxy.addr());
    loop {
        std::thread::sleep(Duration::from_millis(200));
        if let Some(path) = &stats_file {
            let s = proxy.stats();
            let json = format!(
                "{{\"connections\":{},\"requests\":{},\"bytes_down\":{},\"multi_range_requests\":{}}}\n",
                s.connections.load(Ordering::Relaxed),
                s.requests.load(Ordering::Relaxed),
                s.bytes_down.load(Ordering::Relaxed),
                s.multi_range_requests.load(Ordering::Relaxed),
            );
            // Whole files only: readers never see a half-written object.
            let tmp = path.with_extension("tmp");
            if std::fs::write(&tmp, json).is_ok() {
                let _ = std::fs::rename(&tmp, path);
            }
        }
    }
}
