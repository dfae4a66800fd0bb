//! Client certificates on the HTTPS door, end to end: revocation (open and new connections),
//! an external CA's certificates, and the per-user and per-address rates. Daemons are killed
//! by their own pid when each test ends.

use std::io::Read as _;
use std::time::{Duration, Instant};

use meshward_node::certs::Serial;
use meshward_tests::https::{
    Api, KeepAlive, TestCa, connect, header, json, leader_with_users, p, request,
    request_with_head, sample,
};
use meshward_tests::{ClientIdentity as Identity, cli, cli_fails};

const REVOKED: &str = "/v1/certificates/revoked";

fn revoke_body(serial: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "serial": serial })).expect("JSON")
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
    let (code, body) = api.call(&bob, "POST", REVOKED, br#"{"serial":"12:zz"}"#);
    assert_eq!(code, 400, "{body}");
    assert_eq!(json(&body)["field"], "serial", "{body}");
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
    let (code, body) = api.call(&bob, "POST", REVOKED, &revoke_body(&serials["alice"]));
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
    let pem = pem::encode(&pem::Pem::new("CERTIFICATE", external.der().to_vec()));
    std::fs::write(&bad_ca, pem).expect("file");
    let api = Api::start(&data);
    // An external certificate naming carol gets carol's grants: reads, no writes.
    let carol = external.issue("carol", &alice.ca);
    let (code, body) = api.call(&carol, "GET", "/v1/status", b"");
    assert_eq!(code, 200, "{body}");
    let set = br#"{"value":"14"}"#;
    let (code, body) = api.call(&carol, "PUT", "/v1/config/password.min-length", set);
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
    let revoke = revoke_body(&serial.to_string());
    assert_eq!(api.call(&alice, "POST", REVOKED, &revoke).0, 200);
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
    let error = json(&body)["detail"].as_str().unwrap_or("").to_string();
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

#[test]
fn init_makes_a_root_admin_whose_certificate_works_at_once() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("leader");
    let addr = format!("127.0.0.1:{}", meshward_tests::free_port_pair().unwrap());
    let out = meshward_tests::init_with_issuer(&data, &addr, meshward_tests::ISSUER_SEED).unwrap();
    assert!(out.contains("First admin user admin (root)"), "{out}");
    let certs = data.join("admin-certs");
    let mode = |f: &str| {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(certs.join(f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("admin.key"), 0o600);
    let users = cli(&data, &["user", "list"]).unwrap();
    assert!(users.contains("admin root"), "{users}");
    let api = Api::start(&data);
    let client = api.client(&certs, "admin");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let written = runtime
        .block_on(client.send(&meshward_api::Request::SetConfig {
            key: "managed.site".into(),
            value: "north".into(),
        }))
        .unwrap();
    assert!(
        matches!(written, meshward_api::Reply::Written(_)),
        "{written:?}"
    );
    // A name that is not a user name refuses the init; certificate files in the way too.
    let other = root.path().join("other");
    let err = cli_fails(
        &other,
        &["init", "--address", &addr, "--admin", "no spaces"],
    )
    .unwrap();
    assert!(err.contains("--admin"), "{err}");
    assert!(!other.join("mek").exists());
    let err = cli_fails(
        &other,
        &[
            "init",
            "--address",
            &addr,
            "--admin-certs",
            certs.to_str().unwrap(),
        ],
    )
    .unwrap();
    assert!(err.contains("admin.key exists"), "{err}");
    assert!(!other.join("mek").exists());
}
