//! The application API under load, over real `meshward run` processes on 127.0.0.1 (release
//! build), beside etcd on the same machine in the same run when it is installed.
//!
//! - **append**: events appended through the local socket with the client crate, one event
//!   per request, then 1 000 per request; events/s and per-request p50/p99.
//! - **etcd**: a 3-member etcd cluster; put on member A through its JSON gateway → the watch
//!   event on member C, p50/p99 (skipped, saying why, without `etcd`).
//!
//! `cargo bench -p meshward-tests --bench api` (`MESHWARD_BENCH_SECS` seconds per phase,
//! default 10; `MESHWARD_BENCH_ONLY=append|etcd` runs one phase)

#![allow(clippy::unwrap_used)] // a benchmark run aborts loudly on any failure

#[path = "common/etcd.rs"]
mod etcd;

use std::time::{Duration, Instant};

use meshward_api::Request;
use meshward_api::shared::{AppendEvents, NewEvent};
use meshward_client::Client;
use meshward_tests::{Daemon, cluster};

fn secs(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// p50 and p99 of `samples`, ms.
fn percentiles(samples: &mut [Duration]) -> (f64, f64) {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[i].as_secs_f64() * 1000.0
    };
    (at(0.50), at(0.99))
}

fn events(n: usize, seq: u64) -> AppendEvents {
    AppendEvents {
        events: (0..n)
            .map(|i| NewEvent {
                kind: "session-start".into(),
                user: format!("user{}", (seq + i as u64) % 200),
                target: format!("host-{}", (seq * 7 + i as u64) % 1500),
                detail: format!("from 10.0.{}.{}", seq % 250, i % 250),
                at_ms: None,
            })
            .collect(),
    }
}

/// Appends through the local socket for `seconds`, `per_request` events each.
fn append(seconds: u64, per_request: usize) {
    let root = tempfile::tempdir().unwrap();
    let nodes = cluster(root.path(), 1).unwrap();
    let daemon = Daemon::start(&nodes[0].0, &[]).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = Client::local(&daemon.data);
    let mut latencies = Vec::new();
    let start = Instant::now();
    let mut seq = 0u64;
    while start.elapsed() < Duration::from_secs(seconds) {
        let request = Request::AppendEvents(events(per_request, seq));
        let sent = Instant::now();
        runtime.block_on(client.send(&request)).unwrap();
        latencies.push(sent.elapsed());
        seq += 1;
    }
    let took = start.elapsed().as_secs_f64();
    let total = seq as f64 * per_request as f64;
    let (p50, p99) = percentiles(&mut latencies);
    println!(
        "append, {per_request} per request: {:.0} events/s ({seq} requests in {took:.1} s), request p50 {p50:.2} ms p99 {p99:.2} ms",
        total / took
    );
}

/// etcd's put on A → watch event on C, `rate` puts a second for `seconds`.
fn etcd_latency(rate: u64, seconds: u64) {
    let dir = tempfile::tempdir().unwrap();
    let cluster = match etcd::start(dir.path()) {
        Ok(cluster) => cluster,
        Err(why) => {
            println!("etcd: SKIPPED: {why}");
            return;
        }
    };
    let (a, c) = (cluster.clients[0], cluster.clients[2]);
    let mut watch = etcd::Watch::open(c, "bench").unwrap();
    let mut latencies = Vec::new();
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(seconds) {
        let value = format!("v{n}");
        let sent = Instant::now();
        etcd::put(a, "bench", &value).unwrap();
        watch.wait_for(&value).unwrap();
        latencies.push(sent.elapsed());
        n += 1;
        let next = start + interval * n as u32;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let (p50, p99) = percentiles(&mut latencies);
    println!(
        "etcd put on A → watch event on C, {rate}/s: p50 {p50:.2} ms p99 {p99:.2} ms ({n} puts)"
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let load = secs("MESHWARD_BENCH_SECS", 10);
    let only = std::env::var("MESHWARD_BENCH_ONLY").ok();
    let run = |phase: &str| only.as_deref().is_none_or(|o| o == phase);
    if run("append") {
        append(load, 1);
        append(load, 1000);
    }
    if run("etcd") {
        etcd_latency(100, load);
    }
}
