//! The application API end to end over a real daemon: every resource through both doors (the
//! local socket, whose caller is root, and HTTPS with a client certificate), the grants
//! matrix over HTTPS, and bad input answered as problem documents. Daemons are killed by their
//! own pid when each test ends.

use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;

use meshward_api::cluster::{
    ChangePassword, CreateBundle, ImportMastered, InstallLicence, IssueCertificate,
    RevokeCertificate,
};
use meshward_api::local::{AuditQuery, NewAudit, RecordAudit};
use meshward_api::node::{Failover, HealthQuery, Unseal};
use meshward_api::shared::{
    AppendEvents, Approve, EventQuery, HostKey, NewEvent, ObserveFingerprint,
};
use meshward_api::{Method, Reply, Request};
use meshward_client::{Client, ClientError};
use meshward_node::admin_limits::ADDRESS_CONNECTIONS;
use meshward_tests::https::{
    Api, TestCa, json, leader_with_users, p, parse_reply, raw_request_typed, request,
};
use meshward_tests::{ClientIdentity as Identity, cli_fails, wait_for};

fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(future)
}

/// What a door answered, comparable between doors: the reply's kind, or the problem's status
/// and type.
fn outcome(answer: &Result<Reply, ClientError>) -> String {
    match answer {
        Ok(reply) => {
            let debug = format!("{reply:?}");
            let kind = debug.split(['(', ' ', '{']).next().unwrap_or("");
            format!("ok {kind}")
        }
        Err(ClientError::Problem(problem)) => {
            format!("problem {} {}", problem.status, problem.kind_uri)
        }
        Err(other) => format!("failed: {other}"),
    }
}

fn key(host: &str) -> HostKey {
    HostKey {
        host: host.into(),
        key_type: "ssh-ed25519".into(),
        fingerprint: "SHA256:q5e/+x".into(),
    }
}

/// Every request of the API, as the door tagged `tag` sends it (names differ per door, so
/// each door's writes are its own). `None` in the second place: it must succeed; otherwise
/// the problem status both doors must answer.
fn every_request(tag: &str) -> Vec<(Request, Option<u16>)> {
    let user = format!("user-{tag}");
    let host = format!("{tag}.example");
    let event = NewEvent {
        kind: "login".into(),
        user: user.clone(),
        target: "db".into(),
        detail: String::new(),
        at_ms: None,
    };
    let audit = NewAudit {
        actor: user.clone(),
        action: "session-start".into(),
        target: "db".into(),
        detail: String::new(),
    };
    let ok = |r: Request| (r, None);
    vec![
        ok(Request::AppendEvents(AppendEvents {
            events: vec![event.clone(), event],
        })),
        ok(Request::ListEvents(EventQuery::default())),
        ok(Request::ObserveFingerprint(ObserveFingerprint {
            key: key(&host),
            at_ms: None,
        })),
        ok(Request::ListFingerprints),
        ok(Request::CheckFingerprint(meshward_api::shared::HostKey {
            host: format!("h-{tag}"),
            key_type: "ssh-ed25519".into(),
            fingerprint: "SHA256:x".into(),
        })),
        ok(Request::Approve(Approve {
            key: key(&host),
            approved: true,
        })),
        ok(Request::SetException {
            user: user.clone(),
            field: "mfa".into(),
            value: "off".into(),
        }),
        ok(Request::ListExceptions),
        ok(Request::DeleteException {
            user: user.clone(),
            field: "mfa".into(),
        }),
        ok(Request::RecordAudit(RecordAudit {
            records: vec![audit],
        })),
        ok(Request::ListAudit(AuditQuery::default())),
        ok(Request::VerifyAudit),
        ok(Request::SetLocal {
            name: format!("label.site-{tag}"),
            value: "north".into(),
        }),
        ok(Request::GetLocal {
            name: format!("label.site-{tag}"),
        }),
        ok(Request::ListLocal),
        ok(Request::SetConfig {
            key: format!("managed.{tag}"),
            value: "1".into(),
        }),
        ok(Request::GetConfig {
            key: format!("managed.{tag}"),
        }),
        ok(Request::ListConfig),
        ok(Request::UnsetConfig {
            key: format!("managed.{tag}"),
        }),
        ok(Request::CreateUser { name: user.clone() }),
        ok(Request::Grant {
            name: user.clone(),
            grant: "guest:*".into(),
        }),
        ok(Request::ListUsers),
        ok(Request::IssueCertificate {
            name: user.clone(),
            body: IssueCertificate {
                valid_days: Some(1),
            },
        }),
        ok(Request::ListRevoked),
        ok(Request::ChangePassword {
            user: user.clone(),
            body: ChangePassword {
                password: "Correct-horse-battery-9".into(),
            },
        }),
        ok(Request::VerifyPassword {
            user: user.clone(),
            body: ChangePassword {
                password: "Correct-horse-battery-9".into(),
            },
        }),
        ok(Request::ListPasswords),
        ok(Request::RevokeGrant {
            name: user.clone(),
            grant: "guest:*".into(),
        }),
        ok(Request::DeleteUser { name: user.clone() }),
        ok(Request::GetLicence),
        ok(Request::CreateBundle(CreateBundle { ttl_s: Some(60) })),
        ok(Request::Ha),
        ok(Request::Superseded),
        (
            Request::Adopt(meshward_api::node::AdoptRecord {
                hash: "0123456789abcdef".into(),
                record_base64: None,
            }),
            Some(404),
        ),
        ok(Request::HaLog(meshward_api::node::HaLogQuery::default())),
        ok(Request::Status),
        ok(Request::Health(HealthQuery::default())),
        // Refusals are the same problem through both doors.
        (
            Request::InstallLicence(InstallLicence {
                licence: "not a licence".into(),
            }),
            Some(400),
        ),
        (
            Request::ImportMastered(ImportMastered {
                bundle_base64: "not base64!".into(),
            }),
            Some(400),
        ),
        (Request::Failover(Failover { force: false }), Some(409)),
        (
            Request::Unseal(Unseal {
                mek: "00".repeat(32),
            }),
            Some(409),
        ),
    ]
}

#[test]
fn every_resource_gives_the_same_answer_through_the_local_socket_and_https() {
    let root = tempfile::tempdir().expect("tempdir");
    let (data, certs, _) = leader_with_users(root.path(), &[("alice", Some("root"))]);
    meshward_tests::install_licence(&data, [0x11; 32], 3).expect("licence");
    let api = Api::start(&data);
    let local = Client::local(&data);
    let remote = api.client(&certs, "alice");
    for (door, client) in [("local", &local), ("https", &remote)] {
        for (request, refused) in every_request(door) {
            let answer = block_on(client.send(&request));
            let got = outcome(&answer);
            match refused {
                None => assert!(got.starts_with("ok "), "{door}: {request:?} → {got}"),
                Some(status) => assert!(
                    got.starts_with(&format!("problem {status} ")),
                    "{door}: {request:?} → {got}"
                ),
            }
            if let (Request::IssueCertificate { .. }, Ok(Reply::Certificate(c))) =
                (&request, &answer)
            {
                // The issued certificate is revoked through the same door.
                let revoke = Request::RevokeCertificate(RevokeCertificate {
                    serial: c.serial.clone(),
                });
                let revoked = block_on(client.send(&revoke));
                assert_eq!(outcome(&revoked), "ok Written", "{door}");
            }
        }
        // The streamed and plain routes.
        for (path, kind) in [
            ("/v1/backup", "application/octet-stream"),
            ("/metrics", "text/plain"),
            ("/openapi.json", "application/json"),
            ("/", "text/html"),
        ] {
            let answer = block_on(client.call(Method::Get, path, None)).expect(path);
            assert_eq!(answer.status, 200, "{door} {path}");
            assert!(answer.content_type.starts_with(kind), "{door} {path}");
            assert!(!answer.body.is_empty(), "{door} {path}");
        }
    }
    // What each door wrote is there, under its own names, once.
    let Reply::Events(page) =
        block_on(local.send(&Request::ListEvents(EventQuery::default()))).expect("events")
    else {
        panic!("not events")
    };
    for door in ["local", "https"] {
        let user = format!("user-{door}");
        assert_eq!(
            page.events.iter().filter(|e| e.user == user).count(),
            2,
            "{page:?}"
        );
    }
    // Fault hooks only through the local socket, whose caller is root.
    let heal = |client: &Client| {
        let body = br#"{"fault":"heal"}"#.to_vec();
        block_on(client.call(Method::Post, "/v1/fault/heal", Some(body)))
    };
    assert_eq!(heal(&local).expect("local").status, 200);
    assert_eq!(heal(&remote).expect("https").status, 403);
    // The socket is the operator's only.
    let mode = std::fs::metadata(data.join("meshward.sock"))
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    api.daemon.kill(libc::SIGTERM);
}

/// A probe of the grants matrix: a request and the grant class it needs.
struct Probe {
    method: &'static str,
    path: &'static str,
    body: &'static [u8],
    needs: Needs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Needs {
    /// Reading namespace `default` (the shared and local data).
    ReadData,
    /// Writing in namespace `default`.
    WriteData,
    /// Reading the cluster's state.
    ReadCluster,
    /// root: cluster, users, HA, backup.
    Root,
    /// Any known user (metrics).
    Known,
    /// Nobody over HTTPS (fault hooks).
    Nobody,
}

const PROBES: &[Probe] = &[
    Probe {
        method: "GET",
        path: "/v1/events",
        body: b"",
        needs: Needs::ReadData,
    },
    Probe {
        method: "GET",
        path: "/v1/audit",
        body: b"",
        needs: Needs::ReadData,
    },
    Probe {
        method: "POST",
        path: "/v1/events",
        body: br#"{"events":[{"kind":"login","user":"u","target":"t"}]}"#,
        needs: Needs::WriteData,
    },
    Probe {
        method: "PUT",
        path: "/v1/exceptions/u/mfa",
        body: br#"{"value":"off"}"#,
        needs: Needs::WriteData,
    },
    Probe {
        method: "GET",
        path: "/v1/status",
        body: b"",
        needs: Needs::ReadCluster,
    },
    Probe {
        method: "GET",
        path: "/v1/users",
        body: b"",
        needs: Needs::ReadCluster,
    },
    Probe {
        method: "PUT",
        path: "/v1/config/managed.grants",
        body: br#"{"value":"1"}"#,
        needs: Needs::Root,
    },
    Probe {
        method: "PUT",
        path: "/v1/users/someone",
        body: b"",
        needs: Needs::Root,
    },
    Probe {
        method: "POST",
        path: "/v1/ha/failback",
        body: b"",
        needs: Needs::Root,
    },
    Probe {
        method: "GET",
        path: "/v1/backup",
        body: b"",
        needs: Needs::Root,
    },
    Probe {
        method: "GET",
        path: "/metrics",
        body: b"",
        needs: Needs::Known,
    },
    Probe {
        method: "POST",
        path: "/v1/fault/heal",
        body: br#"{"fault":"heal"}"#,
        needs: Needs::Nobody,
    },
];

#[test]
fn the_grants_matrix_holds_over_https() {
    let root = tempfile::tempdir().expect("tempdir");
    let users = [
        ("alice", Some("root")),
        ("ada", Some("admin:default")),
        ("gina", Some("guest:default")),
        ("otto", Some("guest:other")),
        ("gus", Some("guest:*")),
        ("nemo", None),
        ("ghost", Some("root")),
        ("rex", Some("root")),
    ];
    let (data, certs, serials) = leader_with_users(root.path(), &users);
    let api = Api::start(&data);
    let local = Client::local(&data);
    // ghost's user is deleted after its certificate was issued; rex's certificate is revoked.
    let ghost = Request::DeleteUser {
        name: "ghost".into(),
    };
    block_on(local.send(&ghost)).expect("delete ghost");
    let revoke = Request::RevokeCertificate(RevokeCertificate {
        serial: serials["rex"].clone(),
    });
    block_on(local.send(&revoke)).expect("revoke rex");

    for &(user, grant) in &users {
        let id = Identity::load(&certs, user);
        for probe in PROBES {
            let allowed = match (user, probe.needs) {
                ("rex", _) | (_, Needs::Nobody) => false,
                ("alice", _) => true,
                ("ghost", _) => false,
                (_, Needs::Known) => true,
                ("ada", Needs::ReadData | Needs::WriteData) => true,
                ("gina", Needs::ReadData) => true,
                ("gus", Needs::ReadData | Needs::ReadCluster) => true,
                _ => false,
            };
            let (code, body) = api.call(&id, probe.method, probe.path, probe.body);
            let what = format!(
                "{user} ({grant:?}) {} {}: {code} {body}",
                probe.method, probe.path
            );
            if user == "rex" {
                assert_eq!(code, 401, "{what}");
                assert!(body.contains("was revoked"), "{what}");
            } else if allowed {
                assert!(code != 401 && code != 403, "{what}");
            } else {
                assert_eq!(code, 403, "{what}");
                let problem = json(&body);
                assert_eq!(problem["type"], "urn:meshward:problem:forbidden", "{what}");
                let reason = problem["detail"].as_str().unwrap_or("");
                if user == "ghost" {
                    assert!(reason.contains("not a user"), "{what}");
                } else if probe.needs == Needs::Nobody {
                    assert!(reason.contains("local socket only"), "{what}");
                } else {
                    assert!(reason.contains("need"), "{what}");
                }
            }
        }
    }
    // A certificate of another CA, with the CN of a root user, is refused at the handshake.
    let alice = Identity::load(&certs, "alice");
    let foreign = TestCa::new("foreign").issue("alice", &alice.ca);
    let refused = request(api.addr, &foreign, "GET", "/v1/status", b"");
    assert!(
        refused.is_err(),
        "a foreign certificate was served: {refused:?}"
    );
    assert_eq!(api.call(&alice, "GET", "/v1/status", b"").0, 200);
    api.daemon.kill(libc::SIGTERM);
}

/// Method, path, content type, body, the status wanted and the field it must name.
type BadCase = (
    &'static str,
    &'static str,
    &'static str,
    &'static [u8],
    u16,
    Option<&'static str>,
);

#[test]
fn bad_input_is_a_problem_naming_the_field_and_changes_nothing() {
    let root = tempfile::tempdir().expect("tempdir");
    let (data, certs, _) = leader_with_users(root.path(), &[("alice", Some("root"))]);
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
    let alice = Identity::load(&certs, "alice");
    let before = api.call(&alice, "GET", "/v1/config", b"").1;
    let call = |method: &str, path: &str, content_type: &str, body: &[u8]| {
        let reply = raw_request_typed(api.addr, &alice, method, path, content_type, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e:#}\n{}", api.daemon.log_tail(20)));
        let (code, head, body) = parse_reply(reply).expect("a reply");
        (code, head, body)
    };
    let json_ = "application/json";
    let cases: &[BadCase] = &[
        ("POST", "/v1/events", json_, b"{not json", 400, None),
        (
            "POST",
            "/v1/events",
            json_,
            br#"{"events":[{"kind":"nope","user":"u","target":"t"}]}"#,
            400,
            Some("kind"),
        ),
        (
            "POST",
            "/v1/events",
            json_,
            br#"{"events":[]}"#,
            400,
            Some("events"),
        ),
        (
            "PUT",
            "/v1/config/password.min-length",
            json_,
            br#"{"value":"abc"}"#,
            400,
            Some("value"),
        ),
        (
            "PUT",
            "/v1/config/no.such.key",
            json_,
            br#"{"value":"1"}"#,
            400,
            Some("key"),
        ),
        (
            "GET",
            "/v1/events?limit=abc",
            json_,
            b"",
            400,
            Some("limit"),
        ),
        (
            "PUT",
            "/v1/config/password.min-length",
            "text/plain",
            b"14",
            415,
            None,
        ),
        ("DELETE", "/v1/users/nobody", json_, b"", 404, None),
        ("PUT", "/v1/users/alice", json_, b"", 409, None),
        ("POST", "/v1/bundles", json_, b"{}", 409, None),
        ("GET", "/nowhere", json_, b"", 404, None),
    ];
    for &(method, path, content_type, body, status, field) in cases {
        let (code, head, reply) = call(method, path, content_type, body);
        let what = format!("{method} {path}: {code} {reply}");
        assert_eq!(code, status, "{what}");
        if path == "/nowhere" {
            continue;
        }
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/problem+json"),
            "{what}\n{head}"
        );
        let problem = json(&reply);
        assert_eq!(problem["status"], status, "{what}");
        assert!(
            problem["type"]
                .as_str()
                .unwrap_or("")
                .starts_with("urn:meshward:problem:")
        );
        assert!(
            !problem["detail"].as_str().unwrap_or("").is_empty(),
            "{what}"
        );
        if let Some(field) = field {
            let named = problem["field"].as_str().unwrap_or("");
            assert!(
                named.contains(field),
                "{what}: field {named:?}, want {field}"
            );
        }
    }
    // A body over the bound: 413, counted.
    let big = vec![b' '; meshward_api::MAX_BODY + 1];
    let (code, _, reply) = call("POST", "/v1/events", json_, &big);
    assert_eq!(code, 413, "{reply}");
    // Nothing changed, and the node keeps serving.
    assert_eq!(api.call(&alice, "GET", "/v1/config", b"").1, before);
    let (code, body) = api.call(&alice, "GET", "/v1/events", b"");
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        json(&body)["events"].as_array().map(Vec::len),
        Some(0),
        "{body}"
    );

    // The served OpenAPI document is the one in the repository.
    let served = block_on(
        api.client(&certs, "alice")
            .call(Method::Get, "/openapi.json", None),
    );
    let served = served.expect("the OpenAPI document");
    assert_eq!(served.status, 200);
    let doc = String::from_utf8(served.body.to_vec()).expect("UTF-8");
    let file =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json"))
            .expect("docs/openapi.json");
    // (the file ends with the newline `meshward openapi` prints)
    assert!(
        file.strip_suffix('\n') == Some(doc.as_str()),
        "docs/openapi.json is not what the node serves: `cargo run -q -p meshward -- openapi > docs/openapi.json`"
    );
    assert!(
        json(&doc)["openapi"]
            .as_str()
            .unwrap_or("")
            .starts_with("3.1")
    );

    // Limits are counted: the body above, and a connection over what one address may hold,
    // which is closed at once.
    // (first, every earlier connection is closed on the server's side too, so exactly one is
    // over the share)
    wait_for(Duration::from_secs(30), || {
        Ok(api.daemon.status()?["mesh"]["admin_metrics"]["open"] == 0)
    })
    .expect("the earlier connections are closed");
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
    let (code, metrics) = api.call(&alice, "GET", "/metrics", b"");
    assert_eq!(code, 200, "{metrics}");
    assert!(metrics.contains("\nmeshward_epoch 1\n"), "{metrics}");
    for line in metrics.lines().filter(|l| !l.starts_with('#')) {
        let (name, value) = line.split_once(' ').expect("NAME VALUE");
        assert!(name.starts_with("meshward_"), "{line}");
        value.parse::<f64>().expect("a number");
    }
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
    api.daemon.kill(libc::SIGTERM);
}

/// One plain HTTP/1.1 GET to `addr`; the status and body.
fn plain_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read as _, Write as _};
    let mut tcp = TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut reply = Vec::new();
    tcp.read_to_end(&mut reply).expect("reply");
    let (code, _, body) = parse_reply(reply).expect("an HTTP reply");
    (code, body)
}

#[test]
fn the_health_door_answers_load_balancers_without_a_certificate_and_serves_nothing_else() {
    let root = tempfile::tempdir().expect("tempdir");
    let health = ["--health-listen".to_string(), "127.0.0.1:0".to_string()];
    let door = |daemon: &meshward_tests::Daemon| -> std::net::SocketAddr {
        let status = daemon.status().expect("status");
        status["mesh"]["health"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no health address in status: {status}"))
    };
    // A node in no cluster should take no traffic: 503 with the reason.
    let alone_data = root.path().join("alone");
    std::fs::create_dir_all(&alone_data).expect("data directory");
    let alone = meshward_tests::Daemon::start_with(&alone_data, &health).expect("daemon");
    let (code, body) = plain_get(door(&alone), "/v1/health");
    assert_eq!(code, 503, "{body}");
    assert_eq!(json(&body)["healthy"], false, "{body}");
    assert!(body.contains("not in a cluster"), "{body}");
    alone.kill(libc::SIGTERM);

    // A leader is healthy; nothing but health is served, and bad input is a problem.
    let (data, _, _) = leader_with_users(root.path(), &[]);
    let leader = meshward_tests::Daemon::start_with(&data, &health).expect("daemon");
    let addr = door(&leader);
    let (code, body) = plain_get(addr, "/v1/health?max_lag_ms=60000");
    assert_eq!(code, 200, "{body}");
    assert_eq!(json(&body)["healthy"], true, "{body}");
    for path in ["/v1/status", "/metrics", "/", "/v1/users", "/v1/backup"] {
        assert_eq!(plain_get(addr, path).0, 404, "{path}");
    }
    let (code, body) = plain_get(addr, "/v1/health?max_lag_ms=soon");
    assert_eq!(code, 400, "{body}");
    assert_eq!(json(&body)["field"], "max_lag_ms", "{body}");
    leader.kill(libc::SIGTERM);
}
