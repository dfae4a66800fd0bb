//! Helpers of the HTTPS door's tests: a leader with users and certificates, a daemon serving
//! the API on 127.0.0.1, raw HTTP/1.1 over rustls (to see statuses and headers exactly as a
//! client would), the client crate's remote [`Client`], and a test CA for foreign
//! certificates.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use meshward_client::Client;
use rustls::pki_types::ServerName;

use crate::{ClientIdentity as Identity, Daemon, cli, free_port_pair};

/// A TLS stream to the admin port.
pub type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A TLS 1.3 connection to `addr` presenting `id`'s certificate.
pub fn connect(addr: SocketAddr, id: &Identity) -> anyhow::Result<Tls> {
    let config = id.rustls(None)?;
    let conn = rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("127.0.0.1")?)?;
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
    tcp.set_write_timeout(Some(Duration::from_secs(30)))?;
    Ok(rustls::StreamOwned::new(conn, tcp))
}

/// A request head with a JSON body of `len` bytes.
fn head(method: &str, path: &str, content_type: &str, len: usize, close: bool) -> String {
    let connection = if close { "close" } else { "keep-alive" };
    format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: {connection}\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\n\r\n"
    )
}

/// One HTTP/1.1 request with a body of `content_type` on a new connection, which it closes;
/// returns the whole reply.
pub fn raw_request_typed(
    addr: SocketAddr,
    id: &Identity,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> anyhow::Result<Vec<u8>> {
    let mut tls = connect(addr, id)?;
    tls.write_all(head(method, path, content_type, body.len(), true).as_bytes())?;
    // The server may answer (413) before reading a large body; keep what it said.
    let wrote = tls.write_all(body).and_then(|()| tls.flush());
    let mut reply = Vec::new();
    let read = tls.read_to_end(&mut reply);
    if reply.is_empty() {
        read.context("reading the reply")?;
        wrote.context("sending the body")?;
    }
    Ok(reply)
}

/// [`raw_request_typed`] with a JSON body.
pub fn raw_request(
    addr: SocketAddr,
    id: &Identity,
    method: &str,
    path: &str,
    body: &[u8],
) -> anyhow::Result<Vec<u8>> {
    raw_request_typed(addr, id, method, path, "application/json", body)
}

/// Splits a reply into its status, head (status line and headers) and body.
pub fn parse_reply(reply: Vec<u8>) -> anyhow::Result<(u16, String, String)> {
    let end = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers")?;
    let head = std::str::from_utf8(&reply[..end])?;
    // A binary body (a backup) is shown lossily: the tests read text bodies only.
    let body = String::from_utf8_lossy(&reply[end + 4..]);
    Ok((status_code(head)?, head.to_string(), body.into_owned()))
}

/// One HTTP/1.1 request on a new connection; returns the status code and the body.
pub fn request(
    addr: SocketAddr,
    id: &Identity,
    method: &str,
    path: &str,
    body: &[u8],
) -> anyhow::Result<(u16, String)> {
    let (code, _, body) = request_with_head(addr, id, method, path, body)?;
    Ok((code, body))
}

/// Like [`request`], also returning the reply's head (status line and headers).
pub fn request_with_head(
    addr: SocketAddr,
    id: &Identity,
    method: &str,
    path: &str,
    body: &[u8],
) -> anyhow::Result<(u16, String, String)> {
    parse_reply(raw_request(addr, id, method, path, body)?)
}

/// The value of the header `name` in a reply's head.
pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (n, value) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then_some(value.trim())
    })
}

/// The value of the sample `name` in Prometheus text.
pub fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

fn status_code(head: &str) -> anyhow::Result<u16> {
    Ok(head
        .split_whitespace()
        .nth(1)
        .context("no status")?
        .parse()?)
}

/// One kept-alive connection: requests go one after the other on the same TLS session.
#[derive(Debug)]
pub struct KeepAlive(pub Tls);

impl KeepAlive {
    /// Sends a request and reads its reply (headers, then Content-Length bytes).
    pub fn call(&mut self, method: &str, path: &str, body: &[u8]) -> anyhow::Result<(u16, String)> {
        let head = head(method, path, "application/json", body.len(), false);
        self.0.write_all(head.as_bytes())?;
        self.0.write_all(body)?;
        self.0.flush()?;
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            anyhow::ensure!(head.len() < 64 * 1024, "no end of headers");
            self.0.read_exact(&mut byte).context("reading the reply")?;
            head.push(byte[0]);
        }
        let head = String::from_utf8(head)?;
        let len: usize = header(&head, "content-length")
            .and_then(|v| v.parse().ok())
            .context("no content-length")?;
        let mut body = vec![0; len];
        self.0.read_exact(&mut body)?;
        Ok((status_code(&head)?, String::from_utf8(body)?))
    }
}

/// A reply body as JSON.
///
/// # Panics
/// If it is not JSON: the test fails with the body.
pub fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// A path as UTF-8.
///
/// # Panics
/// If it is not UTF-8 (test directories are).
pub fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// A leader made by `init` in ROOT/leader (naming the test licence issuer of
/// [`crate::ISSUER_SEED`]), with `users` and their grants and a certificate
/// each in ROOT/certs. Returns the data and certificate directories and each user's serial as
/// `user cert --json` printed it.
///
/// # Panics
/// If a command fails: the test cannot go on.
pub fn leader_with_users(
    root: &Path,
    users: &[(&str, Option<&str>)],
) -> (PathBuf, PathBuf, BTreeMap<String, String>) {
    let data = root.join("leader");
    let addr = format!("127.0.0.1:{}", free_port_pair().expect("free ports"));
    crate::init_with_issuer(&data, &addr, crate::ISSUER_SEED).expect("init");
    let certs = root.join("certs");
    let mut serials = BTreeMap::new();
    for &(user, grant) in users {
        cli(&data, &["user", "create", user]).expect("user create");
        if let Some(grant) = grant {
            cli(&data, &["user", "grant", user, grant]).expect("user grant");
        }
        let out =
            cli(&data, &["user", "cert", user, "--out", p(&certs), "--json"]).expect("user cert");
        let serial = json(&out)["serial"].as_str().expect("a serial").to_string();
        serials.insert(user.to_string(), serial);
    }
    (data, certs, serials)
}

/// A daemon serving the admin API, and the API's address.
#[derive(Debug)]
pub struct Api {
    /// The daemon.
    pub daemon: Daemon,
    /// Its admin API's address.
    pub addr: SocketAddr,
}

impl Api {
    /// Starts the daemon of `data` with the admin API on a free port of 127.0.0.1.
    ///
    /// # Panics
    /// If it does not start.
    pub fn start(data: &Path) -> Api {
        let daemon = Daemon::start_with(
            data,
            &["--admin-listen".to_string(), "127.0.0.1:0".to_string()],
        )
        .expect("daemon");
        let status = daemon.status().expect("status");
        let addr = status["mesh"]["admin"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no admin address in status: {status}"));
        Api { daemon, addr }
    }

    /// One request on a new connection, which must be answered (else the test fails with the
    /// daemon's log).
    ///
    /// # Panics
    /// If there is no answer.
    pub fn call(&self, id: &Identity, method: &str, path: &str, body: &[u8]) -> (u16, String) {
        request(self.addr, id, method, path, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e:#}\n{}", self.daemon.log_tail(20)))
    }

    /// The client crate's remote client for `user`, with the files `user cert` wrote in
    /// `certs`.
    ///
    /// # Panics
    /// If the files are missing.
    pub fn client(&self, certs: &Path, user: &str) -> Client {
        let read = |name: String| std::fs::read(certs.join(name)).expect("certificate file");
        Client::remote(
            &format!("https://{}", self.addr),
            &read(format!("{user}.crt")),
            &read(format!("{user}.key")),
            &read("ca.crt".into()),
        )
        .expect("remote client")
    }
}

/// A CA made in the test (not the cluster's), issuing client certificates.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

impl TestCa {
    /// A self-signed CA named `name`.
    ///
    /// # Panics
    /// If rcgen fails.
    pub fn new(name: &str) -> TestCa {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key).expect("CA certificate");
        TestCa { cert, key }
    }

    /// Its certificate (DER).
    pub fn der(&self) -> &[u8] {
        self.cert.der()
    }

    /// A client certificate with CN `cn`, for a client that trusts the server's CA `server_ca`.
    ///
    /// # Panics
    /// If rcgen fails.
    pub fn issue(&self, cn: &str, server_ca: &[u8]) -> Identity {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("client certificate");
        Identity {
            ca: server_ca.to_vec(),
            cert: cert.der().to_vec(),
            key: key.serialize_der(),
        }
    }
}
