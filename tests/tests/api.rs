//! The HTTPS admin API end to end: a leader made by `init`, users and client certificates from
//! `user cert`, a daemon with `--admin-listen 127.0.0.1:0`, and a minimal rustls client. The
//! daemon is killed by its own pid when the test ends.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use meshward_node::admin_limits::ADDRESS_CONNECTIONS;
use meshward_node::certs::Serial;
use meshward_tests::{
    ClientIdentity as Identity, Daemon, cli, cli_fails, free_port_pair, wait_for,
};
use rustls::pki_types::ServerName;

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A TLS 1.3 connection to `addr` presenting `id`'s certificate.
fn connect(addr: SocketAddr, id: &Identity) -> anyhow::Result<Tls> {
    let config = id.rustls(None)?;
    let conn = rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("127.0.0.1")?)?;
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
    tcp.set_write_timeout(Some(Duration::from_secs(30)))?;
    Ok(rustls::StreamOwned::new(conn, tcp))
}

fn head(method: &str, path: &str, len: usize, close: bool) -> String {
    let connection = if close { "close" } else { "keep-alive" };
    format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: {connection}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
    )
}

/// One HTTP/1.1 request on a new connection, which it closes; returns the whole reply.
fn raw_request(
    addr: SocketAddr,
    id: &Identity,
    method: &str,
    path: &str,
    body: &[u8],
) -> anyhow::Result<Vec<u8>> {
    let mut tls = connect(addr, id)?;
    tls.write_all(head(method, path, body.len(), true).as_bytes())?;
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

/// One HTTP/1.1 request on a new connection; returns the status code and the body.
fn request(
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
fn request_with_head(
    addr: SocketAddr,
    id: &Identity,
    method: &str,
    path: &str,
    body: &[u8],
) -> anyhow::Result<(u16, String, String)> {
    let text = String::from_utf8(raw_request(addr, id, method, path, body)?)?;
    let (head, body) = text.split_once("\r\n\r\n").context("no end of headers")?;
    Ok((status_code(head)?, head.to_string(), body.to_string()))
}

/// The value of the header `name` in a reply's head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (n, value) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then_some(value.trim())
    })
}

/// The value of the sample `name` in Prometheus text.
fn sample(metrics: &str, name: &str) -> Option<f64> {
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
struct KeepAlive(Tls);

impl KeepAlive {
    /// Sends a request and reads its reply (headers, then Content-Length bytes).
    fn call(&mut self, method: &str, path: &str, body: &[u8]) -> anyhow::Result<(u16, String)> {
        self.0
            .write_all(head(method, path, body.len(), false).as_bytes())?;
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
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .context("no content-length")?;
        let mut body = vec![0; len];
        self.0.read_exact(&mut body)?;
        Ok((status_code(&head)?, String::from_utf8(body)?))
    }
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn cli_body(args: &[&str]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "args": args })).expect("JSON")
}

/// A leader made by `init` in ROOT/leader, with `users` and their grants and a certificate
/// each in ROOT/certs. Returns the data and certificate directories and each user's serial as
/// `user cert --json` printed it.
fn leader_with_users(
    root: &Path,
    users: &[(&str, Option<&str>)],
) -> (PathBuf, PathBuf, BTreeMap<String, String>) {
    let data = root.join("leader");
    let addr = format!("127.0.0.1:{}", free_port_pair().expect("free ports"));
    cli(&data, &["init", "--address", &addr, "--listen", &addr]).expect("init");
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
struct Api {
    daemon: Daemon,
    addr: SocketAddr,
}

impl Api {
    /// Starts the daemon of `data` with the admin API on a free port of 127.0.0.1.
    fn start(data: &Path) -> Api {
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
    fn call(&self, id: &Identity, method: &str, path: &str, body: &[u8]) -> (u16, String) {
        request(self.addr, id, method, path, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e:#}\n{}", self.daemon.log_tail(20)))
    }
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// A CA made in the test (not the cluster's), issuing client certificates.
struct TestCa {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl TestCa {
    fn new(name: &str) -> TestCa {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key).expect("CA certificate");
        TestCa { cert, key }
    }

    /// A client certificate with CN `cn`, for a client that trusts the server's CA `server_ca`.
    fn issue(&self, cn: &str, server_ca: &[u8]) -> Identity {
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

#[test]
fn the_admin_api_authenticates_by_certificate_and_authorizes_by_grant() {
    let root = tempfile::tempdir().expect("tempdir");
    let (data, certs, _) = leader_with_users(
        root.path(),
        &[
            ("alice", Some("root")),
            ("gus", Some("guest:*")),
            ("nemo", None),
            ("eve", Some("root")),
        ],
    );
    let certs_s = p(&certs);
    let mode = std::fs::metadata(certs.join("alice.key"))
        .expect("key file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the private key is private");
    let refused = cli_fails(&data, &["user", "cert", "ghost", "--out", certs_s]).expect("refused");
    assert!(refused.contains("no user ghost"), "{refused}");
    assert!(!certs.join("ghost.key").exists());

    let api = Api::start(&data);
    let status = api.daemon.status().expect("status");
    let [alice, gus, nemo, eve] =
        ["alice", "gus", "nemo", "eve"].map(|user| Identity::load(&certs, user));

    // root writes the cluster config through the CLI endpoint.
    let set = cli_body(&["config", "set", "password.min-length", "14", "--json"]);
    let (code, body) = api.call(&alice, "POST", "/v1/cli", &set);
    assert_eq!(code, 200, "{body}");
    assert_eq!(json(&body)["error"], serde_json::Value::Null);
    let get = cli_body(&["config", "get", "password.min-length"]);
    let (code, body) = api.call(&gus, "POST", "/v1/cli", &get);
    assert_eq!(code, 200, "{body}");
    assert!(
        json(&body)["stdout"].as_str().unwrap_or("").contains("14"),
        "{body}"
    );

    // guest:* reads the status but may not write.
    let (code, body) = api.call(&gus, "GET", "/v1/status", b"");
    assert_eq!(code, 200, "{body}");
    assert_eq!(json(&body)["writer"], status["writer"]);
    let (code, body) = api.call(&gus, "POST", "/v1/cli", &set);
    assert_eq!(code, 403, "{body}");
    assert!(
        json(&body)["error"]
            .as_str()
            .unwrap_or("")
            .contains("needs root"),
        "{body}"
    );
    let append = cli_body(&[
        "event", "append", "--kind", "login", "--user", "u", "--target", "t",
    ]);
    assert_eq!(api.call(&gus, "POST", "/v1/cli", &append).0, 403);
    assert_eq!(api.call(&alice, "POST", "/v1/cli", &append).0, 200);

    // A user without grants is authenticated (metrics) but may not read the cluster.
    assert_eq!(api.call(&nemo, "GET", "/v1/status", b"").0, 403);
    let (code, metrics) = api.call(&nemo, "GET", "/metrics", b"");
    assert_eq!(code, 200, "{metrics}");
    assert!(metrics.contains("\nmeshward_epoch 1\n"), "{metrics}");
    assert!(
        metrics.contains("meshward_transport_connected_peers"),
        "{metrics}"
    );
    for line in metrics.lines().filter(|l| !l.starts_with('#')) {
        let (name, value) = line.split_once(' ').expect("NAME VALUE");
        assert!(name.starts_with("meshward_"), "{line}");
        value.parse::<f64>().expect("a number");
    }

    // The served OpenAPI document is the one in the repository.
    let (code, doc) = api.call(&nemo, "GET", "/openapi.json", b"");
    assert_eq!(code, 200);
    let file =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json"))
            .expect("docs/openapi.json");
    assert_eq!(doc, file);
    assert!(
        json(&doc)["openapi"]
            .as_str()
            .unwrap_or("")
            .starts_with("3.")
    );

    // The status page.
    let (code, page) = api.call(&gus, "GET", "/", b"");
    assert_eq!(code, 200);
    assert!(
        page.contains("<h1>meshward node</h1>") && page.contains("leader"),
        "{page}"
    );

    // Bad input: a 400, a 413, a 404, refused commands; the node keeps serving.
    assert_eq!(api.call(&alice, "POST", "/v1/cli", b"{not json").0, 400);
    assert_eq!(
        api.call(&alice, "POST", "/v1/cli", &cli_body(&["no-such"]))
            .0,
        400
    );
    assert_eq!(
        api.call(
            &alice,
            "POST",
            "/v1/cli",
            &cli_body(&["status", "--data", "/"])
        )
        .0,
        400
    );
    assert_eq!(
        api.call(&alice, "POST", "/v1/cli", &cli_body(&["fault", "heal"]))
            .0,
        403
    );
    let big = vec![b' '; meshward_node::admin::MAX_BODY + 1];
    assert_eq!(api.call(&alice, "POST", "/v1/cli", &big).0, 413);
    assert_eq!(api.call(&alice, "GET", "/nowhere", b"").0, 404);

    // Limits are counted: the body above, and a connection over what one address may hold,
    // which is closed at once.
    let held: Vec<TcpStream> = (0..=ADDRESS_CONNECTIONS)
        .map(|_| TcpStream::connect(api.addr).expect("connect"))
        .collect();
    wait_for(Duration::from_secs(30), || {
        let admin = &api.daemon.status()?["mesh"]["admin_metrics"];
        Ok(admin["refused_address_full"] == 1)
    })
    .expect("the connection over the limit is counted");
    drop(held);
    wait_for(Duration::from_secs(30), || {
        Ok(api.daemon.status()?["mesh"]["admin_metrics"]["open"] == 0)
    })
    .expect("the closed connections give their slots back");
    let (code, metrics) = api.call(&nemo, "GET", "/metrics", b"");
    assert_eq!(code, 200, "{metrics}");
    for sample in [
        "meshward_admin_body_too_large 1",
        "meshward_admin_refused_address_full 1",
        "meshward_admin_refused_full 0",
        "meshward_setup_refused_full 0",
        "meshward_setup_refused_source 0",
        "meshward_join_pending_dropped 0",
        "meshward_join_seen_forgotten 0",
        "meshward_join_rate_limited 0",
    ] {
        assert!(
            metrics.contains(&format!("\n{sample}\n")),
            "{sample}: {metrics}"
        );
    }

    // A user deleted after its certificate was issued is refused on the next request.
    assert_eq!(api.call(&eve, "GET", "/v1/status", b"").0, 200);
    let revoke = cli_body(&["user", "revoke", "eve"]);
    assert_eq!(api.call(&alice, "POST", "/v1/cli", &revoke).0, 200);
    let (code, body) = api.call(&eve, "GET", "/v1/status", b"");
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("not a user"), "{body}");

    // A certificate of another CA, with the CN of a root user, is refused at the handshake.
    let foreign = TestCa::new("foreign").issue("alice", &alice.ca);
    let refused = request(api.addr, &foreign, "GET", "/v1/status", b"");
    assert!(
        refused.is_err(),
        "a foreign certificate was accepted: {refused:?}"
    );
    // ...and the node still serves its users.
    assert_eq!(api.call(&alice, "GET", "/v1/status", b"").0, 200);
    api.daemon.kill(libc::SIGTERM);
}

#[test]
fn a_revoked_certificate_is_refused_on_open_and_new_connections() {
    let root = tempfile::tempdir().expect("tempdir");
    let (data, certs, serials) = leader_with_users(
        root.path(),
        &[("alice", Some("root")), ("bob", Some("root"))],
    );
    let api = Api::start(&data);
    let [alice, bob] = ["alice", "bob"].map(|user| Identity::load(&certs, user));
    // The serial `user cert` printed is the certificate's.
    assert_eq!(
        Serial::of_certificate(&alice.cert).map(|s| s.to_string()),
        Some(serials["alice"].clone())
    );
    let mut open = KeepAlive(connect(api.addr, &alice).expect("connect"));
    for _ in 0..2 {
        let (code, body) = open.call("GET", "/v1/status", b"").expect("kept alive");
        assert_eq!(code, 200, "{body}");
    }

    // Bad serials are refused with the reason, over the API and the CLI; nothing is revoked.
    let (code, body) = api.call(
        &bob,
        "POST",
        "/v1/cli",
        &cli_body(&["cert", "revoke", "12:zz"]),
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("'z' is not a hex digit"), "{body}");
    let err = cli_fails(&data, &["cert", "revoke", ""]).expect("refused");
    assert!(
        err.contains("certificate serial \"\" is not valid"),
        "{err}"
    );
    let err = cli_fails(&data, &["cert", "revoke", &"ab".repeat(21)]).expect("refused");
    assert!(err.contains("longer than 20 bytes"), "{err}");
    assert_eq!(cli(&data, &["cert", "revoked"]).expect("list"), "");

    // bob revokes alice's certificate through the API.
    let revoke = cli_body(&["cert", "revoke", &serials["alice"], "--json"]);
    let (code, body) = api.call(&bob, "POST", "/v1/cli", &revoke);
    assert_eq!(code, 200, "{body}");
    // The next request on the open connection is refused...
    let (code, body) = open
        .call("GET", "/v1/status", b"")
        .expect("same connection");
    assert_eq!(code, 401, "{body}");
    assert!(
        body.contains(&format!("(serial {}) was revoked", serials["alice"])),
        "{body}"
    );
    // ...and so is a new connection.
    let (code, body) = api.call(&alice, "GET", "/metrics", b"");
    assert_eq!(code, 401, "{body}");
    // Another user's certificate still works; the list names the serial once.
    assert_eq!(api.call(&bob, "GET", "/v1/status", b"").0, 200);
    let list = json(&cli(&data, &["cert", "revoked", "--json"]).expect("list"));
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list[0]["serial"], serials["alice"].as_str());
    let upper = serials["alice"].to_uppercase();
    let err = cli_fails(&data, &["cert", "revoke", &upper]).expect("refused");
    assert!(err.contains("already revoked"), "{err}");
    api.daemon.kill(libc::SIGTERM);
}

#[test]
fn certificates_of_the_external_ca_are_accepted_with_their_users_grants() {
    let root = tempfile::tempdir().expect("tempdir");
    let (data, certs, _) = leader_with_users(
        root.path(),
        &[("alice", Some("root")), ("carol", Some("guest:*"))],
    );
    let alice = Identity::load(&certs, "alice");
    std::fs::write(
        data.join("meshward.toml"),
        "admin-client-ca = \"external-ca.pem\"\n",
    )
    .expect("config");

    // A file that is not PEM CA certificates stops the start, naming the file.
    let bad_ca = data.join("external-ca.pem");
    std::fs::write(
        &bad_ca,
        "-----BEGIN CERTIFICATE-----\ngarbage!\n-----END CERTIFICATE-----\n",
    )
    .expect("file");
    let mut run = std::process::Command::new(meshward_tests::meshward_bin())
        .args(["--data", p(&data), "run", "--admin-listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("meshward run");
    let status = meshward_tests::wait_or_kill(&mut run, Duration::from_secs(60)).expect("exits");
    assert!(!status.success());
    let mut err = String::new();
    run.stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("stderr");
    assert!(
        err.contains("admin-client-ca")
            && err.contains("external-ca.pem")
            && err.contains("not PEM"),
        "{err}"
    );

    let external = TestCa::new("external");
    let pem = pem::encode(&pem::Pem::new("CERTIFICATE", external.cert.der().to_vec()));
    std::fs::write(&bad_ca, pem).expect("file");
    let api = Api::start(&data);
    // An external certificate naming carol gets carol's grants: reads, no writes.
    let carol = external.issue("carol", &alice.ca);
    let (code, body) = api.call(&carol, "GET", "/v1/status", b"");
    assert_eq!(code, 200, "{body}");
    let set = cli_body(&["config", "set", "password.min-length", "14"]);
    let (code, body) = api.call(&carol, "POST", "/v1/cli", &set);
    assert_eq!(code, 403, "{body}");
    // An external certificate naming no user is refused.
    assert_eq!(
        api.call(
            &external.issue("mallory", &alice.ca),
            "GET",
            "/metrics",
            b""
        )
        .0,
        403
    );
    // A third, unconfigured CA is refused at the handshake even with a root user's name.
    let third = TestCa::new("third").issue("alice", &alice.ca);
    let refused = request(api.addr, &third, "GET", "/metrics", b"");
    assert!(
        refused.is_err(),
        "a third CA's certificate was served: {refused:?}"
    );
    // Revocation applies to external certificates (by serial).
    let serial = Serial::of_certificate(&carol.cert).expect("serial");
    let revoke = cli_body(&["cert", "revoke", &serial.to_string()]);
    assert_eq!(api.call(&alice, "POST", "/v1/cli", &revoke).0, 200);
    let (code, body) = api.call(&carol, "GET", "/v1/status", b"");
    assert_eq!(code, 401, "{body}");
    assert_eq!(api.call(&alice, "GET", "/v1/status", b"").0, 200);
    api.daemon.kill(libc::SIGTERM);
}

#[test]
fn requests_over_a_users_rate_get_429_and_connections_over_an_addresss_rate_are_closed() {
    let root = tempfile::tempdir().expect("tempdir");
    let (data, certs, _) = leader_with_users(
        root.path(),
        &[("alice", Some("root")), ("bob", Some("guest:*"))],
    );
    // A burst of 3 and one more per 10 s: slow enough that the burst is seen whatever the load.
    std::fs::write(
        data.join("meshward.toml"),
        "admin-rate-burst = 3\nadmin-rate-interval = \"10s\"\n",
    )
    .expect("config");
    let api = Api::start(&data);
    let [alice, bob] = ["alice", "bob"].map(|user| Identity::load(&certs, user));
    let call = |id: &Identity, path: &str| {
        request_with_head(api.addr, id, "GET", path, b"")
            .unwrap_or_else(|e| panic!("GET {path}: {e:#}\n{}", api.daemon.log_tail(20)))
    };

    // alice's burst passes, then she gets 429 (more may pass only if the test was slow enough
    // for the rate to refill).
    let start = Instant::now();
    let mut served = 0u64;
    let (head, body) = loop {
        let (code, head, body) = call(&alice, "/v1/status");
        match code {
            200 => served += 1,
            429 => break (head, body),
            _ => panic!("unexpected {code}: {body}"),
        }
        assert!(served <= 20, "still served after {served} requests");
    };
    let refilled = start.elapsed().as_secs() / 10 + 1;
    assert!(
        (3..=3 + refilled).contains(&served),
        "{served} requests served before the 429"
    );
    let retry_after: u64 = header(&head, "retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After in seconds: {head}"));
    assert!((1..=10).contains(&retry_after), "{head}");
    let error = json(&body)["error"].as_str().unwrap_or("").to_string();
    assert!(
        error.contains("too many requests from user alice") && error.contains("retry in"),
        "{body}"
    );

    // Another user is not affected, and sees the refusal counted.
    assert_eq!(call(&bob, "/v1/status").0, 200);
    let (code, _, metrics) = call(&bob, "/metrics");
    assert_eq!(code, 200, "{metrics}");
    let limited = sample(&metrics, "meshward_admin_rate_limited");
    assert!(limited.is_some_and(|n| n >= 1.0), "{metrics}");
    assert!(
        sample(&metrics, "meshward_admin_rate_tracked_users").is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
    let admin = &api.daemon.status().expect("status")["mesh"]["admin_metrics"];
    assert!(
        admin["rate_limited"].as_u64().is_some_and(|n| n >= 1),
        "{admin}"
    );
    assert_eq!(admin["address_rate_limited"], 0, "{admin}");

    // After the time Retry-After named, alice is served again.
    std::thread::sleep(Duration::from_secs(retry_after));
    let (code, _, body) = call(&alice, "/v1/status");
    assert_eq!(code, 200, "{body}");
    api.daemon.kill(libc::SIGTERM);

    // Two new connections per address, then none for an hour: the third is closed before
    // the handshake, and counted.
    std::fs::write(
        data.join("meshward.toml"),
        "admin-address-rate-burst = 2\nadmin-address-rate-interval = \"1h\"\n",
    )
    .expect("config");
    let api = Api::start(&data);
    assert_eq!(api.call(&bob, "GET", "/v1/status", b"").0, 200);
    assert_eq!(api.call(&alice, "GET", "/v1/status", b"").0, 200);
    let refused = request(api.addr, &bob, "GET", "/v1/status", b"");
    assert!(
        refused.is_err(),
        "a third connection was served: {refused:?}"
    );
    let admin = &api.daemon.status().expect("status")["mesh"]["admin_metrics"];
    assert_eq!(admin["address_rate_limited"], 1, "{admin}");
    assert_eq!(admin["rate_limited"], 0, "{admin}");
    api.daemon.kill(libc::SIGTERM);
}

const CHROMIUM: &str = "/usr/bin/chromium";

/// A 3-node cluster made as an operator makes one: `init` (a leader with users and
/// certificates, see [`leader_with_users`]), a licence from a test issuer, then `bundle
/// create` and `join` for two more nodes. Every daemon runs; the leader serves the admin API.
/// Returns the leader's API and the followers' daemons.
fn three_nodes(root: &Path, users: &[(&str, Option<&str>)]) -> (Api, Vec<Daemon>) {
    let (leader, _, _) = leader_with_users(root, users);
    meshward_tests::install_licence(&leader, [0x11; 32], 3).expect("licence install");
    let api = Api::start(&leader);
    let mut followers = Vec::new();
    for name in ["node2", "node3"] {
        let data = root.join(name);
        let bundle = root.join(format!("bundle-{name}"));
        cli(&leader, &["bundle", "create", "--out", p(&bundle)]).expect("bundle");
        let addr = format!("127.0.0.1:{}", free_port_pair().expect("free ports"));
        let mek = leader.join("mek");
        let join = [
            "join",
            "--bundle",
            p(&bundle),
            "--mek",
            p(&mek),
            "--address",
            &addr,
            "--listen",
            &addr,
        ];
        cli(&data, &join).expect("join");
        followers.push(Daemon::start_with(&data, &[]).expect("daemon"));
    }
    (api, followers)
}

/// Serves plain HTTP on 127.0.0.1 for a browser, which cannot present the client
/// certificate, and forwards each GET to the admin API over mutual TLS as `id` (one
/// connection each, closed after the reply). Accepts for `limit`, then stops.
fn forwarding_proxy(api: SocketAddr, id: Identity, limit: Duration) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("address");
    let id = Arc::new(id);
    std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            match listener.accept() {
                Ok((browser, _)) => {
                    let id = id.clone();
                    std::thread::spawn(move || forward(browser, api, &id));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(_) => return,
            }
        }
    });
    addr
}

/// Reads one request from the browser and answers with the admin API's reply to its GET.
fn forward(mut browser: TcpStream, api: SocketAddr, id: &Identity) -> anyhow::Result<()> {
    browser.set_nonblocking(false)?;
    browser.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        anyhow::ensure!(head.len() < 64 * 1024, "request head too long");
        browser.read_exact(&mut byte)?;
        head.push(byte[0]);
    }
    let head = String::from_utf8(head)?;
    let mut line = head.split_whitespace();
    let (method, path) = (line.next(), line.next().context("no path")?);
    anyhow::ensure!(method == Some("GET"), "only GET is forwarded");
    browser.write_all(&raw_request(api, id, "GET", path, b"")?)?;
    Ok(())
}

#[test]
fn the_status_page_renders_the_cluster_in_headless_chromium() {
    if !Path::new(CHROMIUM).exists() {
        eprintln!("skipped: {CHROMIUM} is not installed (apt-get install -y chromium)");
        return;
    }
    let root = tempfile::tempdir().expect("tempdir");
    let (api, followers) = three_nodes(root.path(), &[("gus", Some("guest:*"))]);
    let gus = Identity::load(&root.path().join("certs"), "gus");
    // Wait until the leader sees both followers as connected standbys.
    let leader = &api.daemon;
    wait_for(Duration::from_secs(90), || {
        let status = leader.status()?;
        let states: Vec<_> = status["ha"]["members"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| m["state"].as_str().unwrap_or("").to_string())
            .collect();
        Ok(states.iter().filter(|s| *s == "standby").count() == 2)
    })
    .unwrap_or_else(|e| panic!("followers not standby: {e:#}\n{}", leader.log_tail(20)));
    let members = leader.status().expect("status")["ha"]["members"].clone();

    let proxy = forwarding_proxy(api.addr, gus, Duration::from_secs(180));
    let profile = tempfile::tempdir().expect("profile dir");
    let dom_file = root.path().join("dom.html");
    let log_file = root.path().join("chromium.log");
    let mut browser = std::process::Command::new(CHROMIUM);
    browser
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=10000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("http://{proxy}/"))
        .stdout(std::fs::File::create(&dom_file).expect("dom file"))
        .stderr(std::fs::File::create(&log_file).expect("log file"));
    // Its own process group, so that its helper processes go with it.
    std::os::unix::process::CommandExt::process_group(&mut browser, 0);
    let mut child = browser.spawn().expect("chromium");
    let pid = child.id() as i32;
    let waited = meshward_tests::wait_or_kill(&mut child, Duration::from_secs(120));
    // The group is chromium's own (made above): this reaches its helpers, nothing else.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
    let log = std::fs::read_to_string(&log_file).unwrap_or_default();
    let status = waited.unwrap_or_else(|e| panic!("chromium: {e:#}\n{log}"));
    assert!(status.success(), "chromium failed ({status}):\n{log}");
    let dom = std::fs::read_to_string(&dom_file).expect("dom");

    // The DOM is the browser's (it adds <tbody>), with one row per member, leader first.
    assert!(dom.contains("<h1>meshward node</h1>"), "{dom}");
    let table = dom
        .split("<table id=\"members\">")
        .nth(1)
        .and_then(|t| t.split("</table>").next())
        .unwrap_or_else(|| panic!("no members table: {dom}"));
    assert!(table.contains("<tbody>"), "not a browser DOM: {dom}");
    let rows: Vec<&str> = table.split("<tr>").skip(2).collect();
    assert_eq!(rows.len(), 3, "{table}");
    for member in members.as_array().expect("members") {
        let address = member["address"].as_str().expect("address");
        let row = rows
            .iter()
            .find(|r| r.contains(&format!("<td>{address}</td>")))
            .unwrap_or_else(|| panic!("no row for {address}: {table}"));
        let want = if member["leader"] == true {
            "<td>leader, primary</td><td>active</td>"
        } else {
            "<td></td><td>standby</td>"
        };
        assert!(row.contains(want), "{address}: {row}");
    }
    assert!(dom.contains("<td id=\"role\">leader</td>"), "{dom}");
    assert!(dom.contains("<td id=\"ha-state\">active</td>"), "{dom}");
    for daemon in followers {
        daemon.kill(libc::SIGTERM);
    }
    api.daemon.kill(libc::SIGTERM);
}
