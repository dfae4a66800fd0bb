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
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use meshward_api::Request;
use meshward_api::shared::{AppendEvents, NewEvent};
use meshward_client::{Client, WatchEvent};
use meshward_tests::{Daemon, cluster, wait_for};

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

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
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

fn watch_latency(rt: &tokio::runtime::Runtime, a: &Client, c: &Client, rate: u64, secs: u64) {
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
        let due = start + interval * i as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
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
}

/// A 3-member etcd cluster on 127.0.0.1, killed (by pid) when dropped.
struct Etcd {
    children: Vec<Child>,
    clients: Vec<u16>,
    _dir: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_etcd() -> Etcd {
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let initial: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, (_, peer))| format!("e{i}=http://127.0.0.1:{peer}"))
        .collect();
    let mut children = Vec::new();
    for (i, (client, peer)) in ports.iter().enumerate() {
        let log = std::fs::File::create(dir.path().join(format!("e{i}.log"))).unwrap();
        children.push(
            Command::new("etcd")
                .args(["--name", &format!("e{i}")])
                .arg("--data-dir")
                .arg(dir.path().join(format!("e{i}")))
                .args([
                    "--listen-client-urls",
                    &format!("http://127.0.0.1:{client}"),
                ])
                .args([
                    "--advertise-client-urls",
                    &format!("http://127.0.0.1:{client}"),
                ])
                .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
                .args([
                    "--initial-advertise-peer-urls",
                    &format!("http://127.0.0.1:{peer}"),
                ])
                .args(["--initial-cluster", &initial.join(",")])
                .args(["--initial-cluster-state", "new"])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
    }
    let etcd = Etcd {
        children,
        clients: ports.iter().map(|p| p.0).collect(),
        _dir: dir,
    };
    wait_for(Duration::from_secs(60), || {
        Ok(etcd.clients.iter().all(|p| {
            // Not listening yet: not up (connect below would panic).
            if TcpStream::connect(("127.0.0.1", *p)).is_err() {
                return false;
            }
            let mut conn = Http::connect(*p);
            conn.post("/v3/kv/range", r#"{"key":"aGVhbHRo"}"#)
                .contains("header")
        }))
    })
    .expect("etcd cluster up");
    etcd
}

/// One keep-alive HTTP/1.1 connection to an etcd member's JSON gateway.
struct Http {
    stream: BufReader<TcpStream>,
}

impl Http {
    fn connect(port: u16) -> Http {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_nodelay(true).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        Http {
            stream: BufReader::new(stream),
        }
    }

    fn send(&mut self, path: &str, body: &str) {
        write!(
            self.stream.get_mut(),
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
    }

    /// A request and its whole (Content-Length) answer; "" when it cannot be read.
    fn post(&mut self, path: &str, body: &str) -> String {
        self.send(path, body);
        let mut len = None;
        loop {
            let mut line = String::new();
            if self.stream.read_line(&mut line).unwrap_or(0) == 0 {
                return String::new();
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse::<usize>().ok();
            }
        }
        let mut buf = vec![0; len.unwrap_or(0)];
        self.stream.read_exact(&mut buf).unwrap();
        String::from_utf8_lossy(&buf).into_owned()
    }
}

fn etcd_latency(rate: u64, secs: u64) {
    let etcd = start_etcd();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let total = (rate * secs) as usize;
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let mut watch = Http::connect(etcd.clients[2]);
    watch.send(
        "/v3/watch",
        &format!(
            r#"{{"create_request":{{"key":"{}","range_end":"{}"}}}}"#,
            b64("bench/"),
            b64("bench0")
        ),
    );
    let seen = sent.clone();
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut lat = Vec::new();
        let mut line = String::new();
        while lat.len() < total {
            line.clear();
            if watch.stream.read_line(&mut line).unwrap() == 0 {
                panic!("the etcd watch ended");
            }
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line.trim()) else {
                continue; // chunk sizes, headers
            };
            if v["result"]["created"] == true {
                let _ = ready_tx.send(());
            }
            let now = Instant::now();
            for e in v["result"]["events"].as_array().into_iter().flatten() {
                let key = e["kv"]["key"].as_str().unwrap_or_default();
                let key = base64::engine::general_purpose::STANDARD
                    .decode(key)
                    .unwrap_or_default();
                if let Some(t) = seen.lock().unwrap().get(&*String::from_utf8_lossy(&key)) {
                    lat.push(now - *t);
                }
            }
        }
        lat
    });
    ready
        .recv_timeout(Duration::from_secs(30))
        .expect("etcd watch created");
    let mut put = Http::connect(etcd.clients[0]);
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let start = Instant::now();
    for i in 0..total as u64 {
        let due = start + interval * i as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let key = format!("bench/{i}");
        let body = format!(
            r#"{{"key":"{}","value":"{}"}}"#,
            b64(&key),
            b64(&format!("session {i}"))
        );
        sent.lock().unwrap().insert(key, Instant::now());
        assert!(put.post("/v3/kv/put", &body).contains("header"));
    }
    let mut lat = reader.join().unwrap();
    lat.sort_unstable();
    println!(
        "etcd watch latency, put on member 0 -> watch event on member 2 (3 members, {rate}/s, {} puts): \
         p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        lat.len(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        percentile(&lat, 1.0)
    );
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
    watch_latency(&rt, &a, &c, rate, secs);
    append_throughput(&rt, &a, 1, secs);
    append_throughput(&rt, &a, 500, secs);
    drop(daemons);
    match Command::new("etcd").arg("--version").output() {
        Ok(_) => etcd_latency(rate, secs),
        Err(e) => println!(
            "etcd: skipped, `etcd` is not on PATH ({e}); install Debian's etcd-server to compare"
        ),
    }
}
