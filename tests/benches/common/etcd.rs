//! A 3-member etcd cluster on 127.0.0.1 beside the benchmarks, for the same machine and run:
//! put on member A through its JSON gateway, the watch event on member C. Started when
//! `etcd` is on PATH (Debian `etcd-server`), each member killed by its pid when dropped.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;

/// A running etcd cluster.
#[derive(Debug)]
pub struct Etcd {
    members: Vec<Child>,
    /// The client address of each member.
    pub clients: Vec<SocketAddr>,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for m in &mut self.members {
            let _ = m.kill();
            let _ = m.wait();
        }
    }
}

/// Starts 3 members in `dir` on free ports of 127.0.0.1, or says why not.
pub fn start(dir: &Path) -> Result<Etcd, String> {
    let version = Command::new("etcd").arg("--version").output();
    match version {
        Ok(out) if out.status.success() => {}
        _ => return Err("etcd is not installed (apt-get install -y etcd-server)".into()),
    }
    let ports: Vec<(u16, u16)> = (0..3)
        .map(|_| {
            let free = || {
                std::net::TcpListener::bind("127.0.0.1:0")
                    .and_then(|l| l.local_addr())
                    .map(|a| a.port())
                    .expect("a free port")
            };
            (free(), free())
        })
        .collect();
    let initial: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
        .collect();
    let mut members = Vec::new();
    for (i, (client, peer)) in ports.iter().enumerate() {
        let log = std::fs::File::create(dir.join(format!("etcd-{i}.log"))).expect("log");
        let child = Command::new("etcd")
            .args(["--name", &format!("m{i}")])
            .args([
                "--data-dir",
                &dir.join(format!("etcd-{i}")).to_string_lossy(),
            ])
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
            .map_err(|e| format!("starting etcd: {e}"))?;
        members.push(child);
    }
    let etcd = Etcd {
        members,
        clients: ports
            .iter()
            .map(|(c, _)| SocketAddr::from(([127, 0, 0, 1], *c)))
            .collect(),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !etcd.clients.iter().all(|c| put(*c, "ready", "1").is_ok()) {
        if Instant::now() > deadline {
            return Err("the etcd cluster did not come up within 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(etcd)
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// One JSON POST to the gateway of `addr`; the body of the answer.
fn post(addr: SocketAddr, path: &str, body: &str) -> std::io::Result<String> {
    let mut tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        tcp,
        "POST {path} HTTP/1.1\r\nHost: etcd\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut out = String::new();
    tcp.read_to_string(&mut out)?;
    if !out.starts_with("HTTP/1.1 200") {
        return Err(std::io::Error::other(out));
    }
    Ok(out)
}

/// A put through the gateway of `addr`.
pub fn put(addr: SocketAddr, key: &str, value: &str) -> std::io::Result<()> {
    let body = format!(r#"{{"key":"{}","value":"{}"}}"#, b64(key), b64(value));
    post(addr, "/v3/kv/put", &body).map(drop)
}

/// A watch on `key` at `addr`: its stream of JSON lines.
#[derive(Debug)]
pub struct Watch(BufReader<TcpStream>);

impl Watch {
    /// Opens the watch and reads past the creation answer.
    pub fn open(addr: SocketAddr, key: &str) -> std::io::Result<Watch> {
        let body = format!(r#"{{"create_request":{{"key":"{}"}}}}"#, b64(key));
        let mut tcp = TcpStream::connect(addr)?;
        tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
        write!(
            tcp,
            "POST /v3/watch HTTP/1.1\r\nHost: etcd\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
        let mut watch = Watch(BufReader::new(tcp));
        // Headers, then the `created` message.
        let mut line = String::new();
        loop {
            line.clear();
            watch.0.read_line(&mut line)?;
            if line.contains("\"created\":true") {
                return Ok(watch);
            }
            if line.is_empty() {
                return Err(std::io::Error::other("the watch closed"));
            }
        }
    }

    /// Waits for the next event carrying `value` (base64 in the JSON line).
    pub fn wait_for(&mut self, value: &str) -> std::io::Result<()> {
        let want = b64(value);
        let mut line = String::new();
        loop {
            line.clear();
            if self.0.read_line(&mut line)? == 0 {
                return Err(std::io::Error::other("the watch closed"));
            }
            if line.contains(&want) {
                return Ok(());
            }
        }
    }
}
