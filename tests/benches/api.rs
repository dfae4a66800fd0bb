//! The application API under load: 7 real `meshward run` processes on 127.0.0.1 (release
//! build), and etcd beside it when `etcd` is on PATH.
//!
//! - **append**: `POST /v1/events` over node A's local socket (the client crate, one
//!   connection per request) for a while: one event per request, then 500 per request.
//! - **watch**: node C follows `GET /v1/watch?tables=events&from=now`; node A appends one event
//!   per request at a fixed rate; latency = the event's SSE frame read on C − the append sent
//!   to A (same process clock), p50/p99 over all events.
//! - **etcd**: the same with a 3-member etcd cluster on 127.0.0.1 (JSON gateway, keep-alive
//!   connections): put on member 0 → watch event on member 2. Skipped, with the reason
//!   printed, when `etcd` is not on PATH.
//!
//! `cargo bench -p meshward-tests --bench api`
//! (`MESHWARD_BENCH_SECS` seconds per phase, default 10; `MESHWARD_BENCH_RATE` watch events
//! per second, default 50)

#![allow(clippy::unwrap_used)] // a benchmark run aborts loudly on any failure

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meshward_api::Request;
use meshward_api::shared::{AppendEvents, NewEvent};
use meshward_client::{Client, WatchEvent};
use meshward_tests::etcd::{self, percentile};
use meshward_tests::{Daemon, cluster};

const NODES: usize = 7;

fn env(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn start(root: &Path) -> Vec<Daemon> {
    // Every node dials those before it, and all are connected to all before this returns.
    meshward_tests::start_all(&cluster(root, NODES).expect("cluster"))
}

fn events(count: usize, seq: u64) -> Request {
    Request::AppendEvents(AppendEvents {
        events: (0..count)
            .map(|i| NewEvent {
                kind: "session-start".into(),
                user: format!("user{}", (seq + i as u64) % 200),
                target: format!("{seq}-{i}"),
                detail: format!("session {seq}/{i} from 10.0.{}.{}", seq % 250, i % 250),
                at_ms: None,
            })
            .collect(),
    })
}

fn append_throughput(rt: &tokio::runtime::Runtime, a: &Client, batch: usize, secs: u64) {
    let start = Instant::now();
    let (mut requests, mut seq) = (0u64, 1_000_000u64);
    while start.elapsed() < Duration::from_secs(secs) {
        rt.block_on(a.send(&events(batch, seq))).unwrap();
        requests += 1;
        seq += batch as u64;
    }
    let took = start.elapsed().as_secs_f64();
    println!(
        "append over the local socket, {batch} event(s) per request: {:.0} requests/s, \
         {:.0} events/s ({requests} requests in {took:.1} s)",
        requests as f64 / took,
        (requests * batch as u64) as f64 / took
    );
}

/// p50 and p99, ms.
fn watch_latency(
    rt: &tokio::runtime::Runtime,
    a: &Client,
    c: &Client,
    rate: u64,
    secs: u64,
) -> (f64, f64) {
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let total = (rate * secs) as usize;
    let seen = sent.clone();
    let c = c.clone();
    let (ready_tx, ready) = std::sync::mpsc::channel();
    // The stream is opened and read on the reader's own runtime (its connection belongs to
    // the runtime that opened it); appends start once it is open.
    let reader = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut watch = rt.block_on(c.watch(Some("events"), Some("now"))).unwrap();
        ready_tx.send(()).unwrap();
        let mut lat = Vec::new();
        while lat.len() < total {
            let next = rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(60), watch.next()).await
            });
            match next.expect("the watch went silent").unwrap() {
                Some(WatchEvent::Change(ch)) => {
                    let now = Instant::now();
                    let target = ch.row["target"].as_str().unwrap_or_default().to_string();
                    if let Some(t) = seen.lock().unwrap().get(&target) {
                        lat.push(now - *t);
                    }
                }
                Some(_) => {}
                None => panic!("the watch ended"),
            }
        }
        lat
    });
    ready
        .recv_timeout(Duration::from_secs(60))
        .expect("the watch opens");
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let start = Instant::now();
    for i in 0..total as u64 {
        meshward_tests::pace(start, interval, i);
        sent.lock()
            .unwrap()
            .insert(format!("{i}-0"), Instant::now());
        rt.block_on(a.send(&events(1, i))).unwrap();
    }
    let mut lat = reader.join().unwrap();
    lat.sort_unstable();
    println!(
        "meshward watch latency, append on A -> SSE event on C ({NODES} nodes, {rate}/s, {} events): \
         p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        lat.len(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        percentile(&lat, 1.0)
    );
    (percentile(&lat, 0.5), percentile(&lat, 0.99))
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let secs = env("MESHWARD_BENCH_SECS", 10);
    let rate = env("MESHWARD_BENCH_RATE", 50);
    let root = tempfile::tempdir().unwrap();
    let daemons = start(root.path());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let a = Client::local(&daemons[0].data);
    let c = Client::local(&daemons[2].data);
    // The watch first, on a quiet cluster: the appends after it leave a backlog replicating.
    let (p50, p99) = watch_latency(&rt, &a, &c, rate, secs);
    append_throughput(&rt, &a, 1, secs);
    append_throughput(&rt, &a, 500, secs);
    drop(daemons);
    match etcd::latency(rate, secs) {
        Ok(l) => println!(
            "etcd watch latency, put on member 0 -> watch event on member 2 (3 members, \
             {rate}/s, {} puts): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; meshward's watch: \
             p50 {:.2}x etcd's (target <= 0.8), p99 {:.2}x etcd's (target <= 1)",
            l.count,
            l.p50_ms,
            l.p99_ms,
            l.max_ms,
            p50 / l.p50_ms,
            p99 / l.p99_ms
        ),
        Err(why) => println!("etcd: skipped, {why:#}"),
    }
}
