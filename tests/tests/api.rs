//! The HTTPS admin API end to end: a leader made by `init`, users and client certificates from
//! `user cert`, a daemon with `--admin-listen 127.0.0.1:0`, and a minimal rustls client. The
//! daemon is killed by its own pid when the test ends.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use meshward_tests::{Daemon, cli, cli_fails, free_port_pair};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// A client identity: the CA the server must chain to, our certificate and key (DER).
struct Identity {
    ca: Vec<u8>,
    cert: Vec<u8>,
    key: Vec<u8>,
}

impl Identity {
    fn load(dir: &Path, user: &str) -> Identity {
        let der = |name: String| {
            CertificateDer::from_pem_file(dir.join(name))
                .expect("PEM certificate")
                .to_vec()
        };
        let key = PrivateKeyDer::from_pem_file(dir.join(format!("{user}.key"))).expect("PEM key");
        Identity {
            ca: der("ca.crt".into()),
            cert: der(format!("{user}.crt")),
            key: key.secret_der().to_vec(),
        }
    }
}

/// One HTTP/1.1 request over TLS 1.3; returns the status code and the body.
fn request(
    addr: SocketAddr,
    id: &Identity,
    method: &str,
    path: &str,
    body: &[u8],
) -> anyhow::Result<(u16, String)> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(id.ca.clone()))?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from(id.cert.clone())],
            PrivateKeyDer::try_from(id.key.clone()).map_err(anyhow::Error::msg)?,
        )?;
    let conn = rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("127.0.0.1")?)?;
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
    tcp.set_write_timeout(Some(Duration::from_secs(30)))?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes())?;
    // The server may answer (413) before reading a large body; keep what it said.
    let wrote = tls.write_all(body).and_then(|()| tls.flush());
    let mut reply = Vec::new();
    let read = tls.read_to_end(&mut reply);
    if reply.is_empty() {
        read.context("reading the reply")?;
        wrote.context("sending the body")?;
    }
    let text = String::from_utf8(reply)?;
    let (head, body) = text.split_once("\r\n\r\n").context("no end of headers")?;
    let code = head
        .split_whitespace()
        .nth(1)
        .context("no status")?
        .parse()?;
    Ok((code, body.to_string()))
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn cli_body(args: &[&str]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "args": args })).expect("JSON")
}

#[test]
fn the_admin_api_authenticates_by_certificate_and_authorizes_by_grant() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("leader");
    let addr = format!("127.0.0.1:{}", free_port_pair().expect("free ports"));
    cli(&data, &["init", "--address", &addr, "--listen", &addr]).expect("init");
    for (user, grant) in [
        ("alice", Some("root")),
        ("gus", Some("guest:*")),
        ("nemo", None),
        ("eve", Some("root")),
    ] {
        cli(&data, &["user", "create", user]).expect("user create");
        if let Some(grant) = grant {
            cli(&data, &["user", "grant", user, grant]).expect("user grant");
        }
    }
    let certs = root.path().join("certs");
    let certs_s = certs.to_str().expect("utf-8");
    for user in ["alice", "gus", "nemo", "eve"] {
        cli(&data, &["user", "cert", user, "--out", certs_s]).expect("user cert");
    }
    let mode = std::fs::metadata(certs.join("alice.key"))
        .expect("key file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the private key is private");
    let refused = cli_fails(&data, &["user", "cert", "ghost", "--out", certs_s]).expect("refused");
    assert!(refused.contains("no user ghost"), "{refused}");
    assert!(!certs.join("ghost.key").exists());

    let daemon = Daemon::start_with(
        &data,
        &["--admin-listen".to_string(), "127.0.0.1:0".to_string()],
    )
    .expect("daemon");
    let status = daemon.status().expect("status");
    let api: SocketAddr = status["mesh"]["admin"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no admin address in status: {status}"));
    let [alice, gus, nemo, eve] =
        ["alice", "gus", "nemo", "eve"].map(|user| Identity::load(&certs, user));
    let call = |id: &Identity, method: &str, path: &str, body: &[u8]| {
        request(api, id, method, path, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e:#}\n{}", daemon.log_tail(20)))
    };

    // root writes the cluster config through the CLI endpoint.
    let set = cli_body(&["config", "set", "password.min-length", "14", "--json"]);
    let (code, body) = call(&alice, "POST", "/v1/cli", &set);
    assert_eq!(code, 200, "{body}");
    assert_eq!(json(&body)["error"], serde_json::Value::Null);
    let get = cli_body(&["config", "get", "password.min-length"]);
    let (code, body) = call(&gus, "POST", "/v1/cli", &get);
    assert_eq!(code, 200, "{body}");
    assert!(
        json(&body)["stdout"].as_str().unwrap_or("").contains("14"),
        "{body}"
    );

    // guest:* reads the status but may not write.
    let (code, body) = call(&gus, "GET", "/v1/status", b"");
    assert_eq!(code, 200, "{body}");
    assert_eq!(json(&body)["writer"], status["writer"]);
    let (code, body) = call(&gus, "POST", "/v1/cli", &set);
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
    assert_eq!(call(&gus, "POST", "/v1/cli", &append).0, 403);
    assert_eq!(call(&alice, "POST", "/v1/cli", &append).0, 200);

    // A user without grants is authenticated (metrics) but may not read the cluster.
    assert_eq!(call(&nemo, "GET", "/v1/status", b"").0, 403);
    let (code, metrics) = call(&nemo, "GET", "/metrics", b"");
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
    let (code, doc) = call(&nemo, "GET", "/openapi.json", b"");
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
    let (code, page) = call(&gus, "GET", "/", b"");
    assert_eq!(code, 200);
    assert!(
        page.contains("<h1>meshward node</h1>") && page.contains("leader"),
        "{page}"
    );

    // Bad input: a 400, a 413, a 404, refused commands; the node keeps serving.
    assert_eq!(call(&alice, "POST", "/v1/cli", b"{not json").0, 400);
    assert_eq!(
        call(&alice, "POST", "/v1/cli", &cli_body(&["no-such"])).0,
        400
    );
    assert_eq!(
        call(
            &alice,
            "POST",
            "/v1/cli",
            &cli_body(&["status", "--data", "/"])
        )
        .0,
        400
    );
    assert_eq!(
        call(&alice, "POST", "/v1/cli", &cli_body(&["fault", "heal"])).0,
        403
    );
    let big = vec![b' '; meshward_node::admin::MAX_BODY + 1];
    assert_eq!(call(&alice, "POST", "/v1/cli", &big).0, 413);
    assert_eq!(call(&alice, "GET", "/nowhere", b"").0, 404);

    // A user deleted after its certificate was issued is refused on the next request.
    assert_eq!(call(&eve, "GET", "/v1/status", b"").0, 200);
    let revoke = cli_body(&["user", "revoke", "eve"]);
    assert_eq!(call(&alice, "POST", "/v1/cli", &revoke).0, 200);
    let (code, body) = call(&eve, "GET", "/v1/status", b"");
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("not a user"), "{body}");

    // A certificate of another CA, with the CN of a root user, is refused at the handshake.
    let foreign_ca = rcgen::KeyPair::generate().expect("key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&foreign_ca).expect("foreign CA");
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "alice");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params
        .signed_by(&key, &ca_cert, &foreign_ca)
        .expect("foreign cert");
    let foreign = Identity {
        ca: alice.ca.clone(),
        cert: cert.der().to_vec(),
        key: key.serialize_der(),
    };
    let refused = request(api, &foreign, "GET", "/v1/status", b"");
    assert!(
        refused.is_err(),
        "a foreign certificate was accepted: {refused:?}"
    );
    // ...and the node still serves its users.
    assert_eq!(call(&alice, "GET", "/v1/status", b"").0, 200);
    daemon.kill(libc::SIGTERM);
}
