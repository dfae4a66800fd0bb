//! etcd beside a benchmark: a 3-member etcd cluster on 127.0.0.1 (Debian's `etcd-server`,
//! its JSON gateway over keep-alive HTTP/1.1 connections) and the latency of a put on member
//! 0 until the watch event on member 2, for the benchmarks to print meshward's figures
//! against. Every etcd process is killed by its pid when the cluster is dropped.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use base64::Engine as _;

use crate::wait_for;

/// Watch latency of etcd over one run.
#[derive(Clone, Copy, Debug)]
pub struct Latency {
    /// Events seen.
    pub count: usize,
    /// Median, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Largest, ms.
    pub max_ms: f64,
}

/// The `p` quantile (0..=1) of sorted durations, in ms.
pub fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e3)
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

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn start_etcd() -> anyhow::Result<Etcd> {
    let dir = tempfile::tempdir()?;
    let ports: Vec<(u16, u16)> = (0..3)
        .map(|_| Ok((free_port()?, free_port()?)))
        .collect::<anyhow::Result<_>>()?;
    let initial: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, (_, peer))| format!("e{i}=http://127.0.0.1:{peer}"))
        .collect();
    let mut etcd = Etcd {
        children: Vec::new(),
        clients: ports.iter().map(|p| p.0).collect(),
        _dir: dir,
    };
    for (i, (client, peer)) in ports.iter().enumerate() {
        let log = std::fs::File::create(etcd._dir.path().join(format!("e{i}.log")))?;
        etcd.children.push(
            Command::new("etcd")
                .args(["--name", &format!("e{i}")])
                .arg("--data-dir")
                .arg(etcd._dir.path().join(format!("e{i}")))
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
                .context("starting etcd")?,
        );
    }
    wait_for(Duration::from_secs(60), || {
        Ok(etcd.clients.iter().all(|p| {
            Http::connect(*p).is_ok_and(|mut conn| {
                conn.post("/v3/kv/range", r#"{"key":"aGVhbHRo"}"#)
                    .is_ok_and(|r| r.contains("header"))
            })
        }))
    })
    .context("the etcd cluster did not come up")?;
    Ok(etcd)
}

/// One keep-alive HTTP/1.1 connection to an etcd member's JSON gateway.
struct Http {
    stream: BufReader<TcpStream>,
}

impl Http {
    fn connect(port: u16) -> anyhow::Result<Http> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        Ok(Http {
            stream: BufReader::new(stream),
        })
    }

    fn send(&mut self, path: &str, body: &str) -> anyhow::Result<()> {
        write!(
            self.stream.get_mut(),
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
        Ok(())
    }

    /// A request and its whole (Content-Length) answer.
    fn post(&mut self, path: &str, body: &str) -> anyhow::Result<String> {
        self.send(path, body)?;
        let mut len = None;
        loop {
            let mut line = String::new();
            if self.stream.read_line(&mut line)? == 0 {
                anyhow::bail!("etcd closed the connection");
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse::<usize>().ok();
            }
        }
        let mut buf = vec![0; len.unwrap_or(0).min(1 << 20)];
        self.stream.read_exact(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }
}

/// Starts etcd, puts `rate` keys a second for `secs` seconds on member 0 while member 2
/// watches them, and stops it. `Err` says why it could not run (e.g. `etcd` is not on PATH).
pub fn latency(rate: u64, secs: u64) -> anyhow::Result<Latency> {
    Command::new("etcd")
        .arg("--version")
        .output()
        .context("`etcd` is not on PATH; install Debian's etcd-server to compare")?;
    let etcd = start_etcd()?;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let total = (rate * secs) as usize;
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let mut watch = Http::connect(etcd.clients[2])?;
    watch.send(
        "/v3/watch",
        &format!(
            r#"{{"create_request":{{"key":"{}","range_end":"{}"}}}}"#,
            b64("bench/"),
            b64("bench0")
        ),
    )?;
    let seen = sent.clone();
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || -> anyhow::Result<Vec<Duration>> {
        let mut lat = Vec::new();
        let mut line = String::new();
        while lat.len() < total {
            line.clear();
            if watch.stream.read_line(&mut line)? == 0 {
                anyhow::bail!("the etcd watch ended");
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
                let sent = seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
                if let Some(t) = sent.get(&*String::from_utf8_lossy(&key)) {
                    lat.push(now - *t);
                }
            }
        }
        Ok(lat)
    });
    ready
        .recv_timeout(Duration::from_secs(30))
        .context("the etcd watch was not created")?;
    let mut put = Http::connect(etcd.clients[0])?;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let start = Instant::now();
    for i in 0..total as u64 {
        crate::pace(start, interval, i);
        let key = format!("bench/{i}");
        let body = format!(
            r#"{{"key":"{}","value":"{}"}}"#,
            b64(&key),
            b64(&format!("session {i}"))
        );
        sent.lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .insert(key, Instant::now());
        anyhow::ensure!(
            put.post("/v3/kv/put", &body)?.contains("header"),
            "etcd refused a put"
        );
    }
    let mut lat = reader
        .join()
        .map_err(|_| anyhow::anyhow!("the watch reader panicked"))??;
    lat.sort_unstable();
    Ok(Latency {
        count: lat.len(),
        p50_ms: percentile(&lat, 0.5),
        p99_ms: percentile(&lat, 0.99),
        max_ms: percentile(&lat, 1.0),
    })
}
