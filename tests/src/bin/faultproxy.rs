//! `faultproxy UPSTREAM [--listen ADDR] [--latency-ms N] [--rate-mbit N]`:
//! the tests' fault proxy as a program, for benchmarks (latency and
//! bandwidth shaping). Prints the address it listens on, then runs until killed.

use estargz_tests::faultproxy::FaultProxy;
use std::time::Duration;

fn main() {
    let mut args = std::env::args().skip(1);
    let upstream = args.next().expect("usage: faultproxy UPSTREAM [options]");
    let mut listen = None;
    let mut latency = 0u64;
    let mut rate_mbit = 0f64;
    while let Some(a) = args.next() {
        let v = args.next().expect("option needs a value");
        match a.as_str() {
            "--listen" => listen = Some(v.parse().expect("--listen ADDR:PORT")),
            "--latency-ms" => latency = v.parse().expect("--latency-ms N"),
            "--rate-mbit" => rate_mbit = v.parse().expect("--rate-mbit N"),
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
        std::thread::sleep(Duration::from_secs(3600));
    }
}
