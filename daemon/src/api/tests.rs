use std::collections::BTreeSet;

use axum::body::Body as HttpBody;
use axum::http::Request as HttpRequest;
use meshward_api::cluster::{
    ChangePassword, CreateBundle, ImportMastered, InstallLicence, IssueCertificate,
    RevokeCertificate,
};
use meshward_api::local::{AuditQuery, NewAudit, RecordAudit};
use meshward_api::node::{Demote, Failover, HealthQuery, MakeStandalone, Unseal};
use meshward_api::shared::{
    AppendEvents, Approve, EventQuery, HostKey, NewEvent, ObserveFingerprint,
};
use meshward_api::{FaultRequest, Method, Reply, Request};
use tokio::sync::mpsc;
use tower::ServiceExt as _;

use super::*;

/// Position of a request's variant; exhaustive, so a new variant must be added here and to
/// [`every_request`].
fn variant(r: &Request) -> usize {
    match r {
        Request::AppendEvents(_) => 0,
        Request::ListEvents(_) => 1,
        Request::ObserveFingerprint(_) => 2,
        Request::ListFingerprints => 3,
        Request::Approve(_) => 4,
        Request::SetException { .. } => 5,
        Request::DeleteException { .. } => 6,
        Request::ListExceptions => 7,
        Request::RecordAudit(_) => 8,
        Request::ListAudit(_) => 9,
        Request::VerifyAudit => 10,
        Request::ListLocal => 11,
        Request::GetLocal { .. } => 12,
        Request::SetLocal { .. } => 13,
        Request::ListConfig => 14,
        Request::GetConfig { .. } => 15,
        Request::SetConfig { .. } => 16,
        Request::UnsetConfig { .. } => 17,
        Request::ListUsers => 18,
        Request::CreateUser { .. } => 19,
        Request::DeleteUser { .. } => 20,
        Request::Grant { .. } => 21,
        Request::RevokeGrant { .. } => 22,
        Request::IssueCertificate { .. } => 23,
        Request::RevokeCertificate(_) => 24,
        Request::ListRevoked => 25,
        Request::GetLicence => 26,
        Request::InstallLicence(_) => 27,
        Request::CreateBundle(_) => 28,
        Request::ChangePassword { .. } => 29,
        Request::ListPasswords => 30,
        Request::ImportMastered(_) => 31,
        Request::Ha => 32,
        Request::Demote(_) => 33,
        Request::Failback => 34,
        Request::Failover(_) => 35,
        Request::MakeStandalone(_) => 36,
        Request::Superseded => 37,
        Request::Status => 38,
        Request::Health(_) => 39,
        Request::Fault(_) => 40,
        Request::Unseal(_) => 41,
        Request::HaLog(_) => 42,
        Request::VerifyPassword { .. } => 43,
        Request::ListTables { .. } => 44,
        Request::ListRows { .. } => 45,
        Request::GetRow { .. } => 46,
        Request::PutRow { .. } => 47,
        Request::DeleteRow { .. } => 48,
        Request::CheckFingerprint(_) => 49,
        Request::Adopt(_) => 50,
        Request::SetCredential { .. } => 51,
        Request::RotateCredential { .. } => 52,
        Request::RevealCredential { .. } => 53,
        Request::CredentialHistory { .. } => 54,
        Request::CredentialConflicts(_) => 55,
        Request::VerifyAuditAgainstMesh => 56,
    }
}

const VARIANTS: usize = 57;

/// One request of every variant, with awkward text where text goes into a path.
fn every_request() -> Vec<Request> {
    let key = || HostKey {
        host: "db-01".into(),
        key_type: "ssh-ed25519".into(),
        fingerprint: "SHA256:q5e/+x".into(),
    };
    vec![
        Request::AppendEvents(AppendEvents {
            events: vec![NewEvent {
                kind: "login".into(),
                user: "alice".into(),
                target: "db-01".into(),
                detail: "from 10.0.0.7".into(),
                at_ms: Some(5),
            }],
        }),
        Request::ListEvents(EventQuery {
            writer: Some("ab".repeat(32)),
            since: Some(-3),
            until: Some(9),
            kind: Some("login".into()),
            limit: Some(10),
            after: Some("x.1.2".into()),
        }),
        Request::ObserveFingerprint(ObserveFingerprint {
            key: key(),
            at_ms: None,
        }),
        Request::ListFingerprints,
        Request::Approve(Approve {
            key: key(),
            approved: false,
        }),
        Request::SetException {
            user: "a b/c".into(),
            field: "shell?x=1".into(),
            value: "/bin/zsh".into(),
        },
        Request::DeleteException {
            user: "é%".into(),
            field: "f".into(),
        },
        Request::ListExceptions,
        Request::RecordAudit(RecordAudit {
            records: vec![NewAudit {
                actor: "a".into(),
                action: "b".into(),
                target: "c".into(),
                detail: "d\te".into(),
            }],
        }),
        Request::ListAudit(AuditQuery {
            from: Some(3),
            limit: None,
        }),
        Request::VerifyAudit,
        Request::VerifyAuditAgainstMesh,
        Request::ListLocal,
        Request::GetLocal {
            name: "fingerprint-enforcement".into(),
        },
        Request::SetLocal {
            name: "x".into(),
            value: "y z".into(),
        },
        Request::ListConfig,
        Request::GetConfig {
            key: "managed.a".into(),
        },
        Request::SetConfig {
            key: "password.min-length".into(),
            value: "14".into(),
        },
        Request::UnsetConfig {
            key: "managed.a".into(),
        },
        Request::ListUsers,
        Request::CreateUser {
            name: "alice".into(),
        },
        Request::DeleteUser {
            name: "alice".into(),
        },
        Request::Grant {
            name: "alice".into(),
            grant: "guest:*".into(),
        },
        Request::RevokeGrant {
            name: "alice".into(),
            grant: "admin:ns1".into(),
        },
        Request::IssueCertificate {
            name: "alice".into(),
            body: IssueCertificate {
                valid_days: Some(9),
            },
        },
        Request::RevokeCertificate(RevokeCertificate {
            serial: "3f:a0".into(),
        }),
        Request::ListRevoked,
        Request::GetLicence,
        Request::InstallLicence(InstallLicence {
            licence: "{}".into(),
        }),
        Request::CreateBundle(CreateBundle { ttl_s: Some(600) }),
        Request::ChangePassword {
            user: "alice".into(),
            body: ChangePassword {
                password: "Correct-horse-battery-9".into(),
            },
        },
        Request::ListPasswords,
        Request::ImportMastered(ImportMastered {
            bundle_base64: "AAAA".into(),
        }),
        Request::Ha,
        Request::Demote(Demote {
            to: "node-b.example".into(),
        }),
        Request::Failback,
        Request::Failover(Failover { force: true }),
        Request::MakeStandalone(MakeStandalone {
            node: Some("node-c".into()),
        }),
        Request::Superseded,
        Request::HaLog(meshward_api::node::HaLogQuery { limit: Some(5) }),
        Request::VerifyPassword {
            user: "alice@corp".into(),
            body: ChangePassword {
                password: "x y/z".into(),
            },
        },
        Request::ListTables {
            namespace: "ns-1".into(),
        },
        Request::ListRows {
            namespace: "ns1".into(),
            table: "hosts".into(),
            query: meshward_api::managed::RowQuery {
                limit: Some(3),
                after: Some("db:1".into()),
            },
        },
        Request::GetRow {
            namespace: "ns1".into(),
            table: "hosts".into(),
            key: "db-01.example:22".into(),
        },
        Request::PutRow {
            namespace: "ns1".into(),
            table: "hosts".into(),
            key: "user@db".into(),
            document: serde_json::json!({"port": 22, "tags": ["a", "b"], "x": null}),
        },
        Request::DeleteRow {
            namespace: "ns1".into(),
            table: "hosts".into(),
            key: "user@db".into(),
        },
        Request::Status,
        Request::Health(HealthQuery {
            max_lag_ms: Some(100),
        }),
        Request::Fault(FaultRequest::Delay {
            peers: vec!["ab".into()],
            min_ms: 1,
            max_ms: 2,
        }),
        Request::Unseal(Unseal {
            mek: "00".repeat(32),
        }),
        Request::CheckFingerprint(key()),
        Request::Adopt(meshward_api::node::AdoptRecord {
            hash: "ab/cd".into(),
            record_base64: None,
        }),
        Request::SetCredential {
            namespace: "ns1".into(),
            device: "db-01.example:22".into(),
            account: "root@db".into(),
            body: meshward_api::credentials::SetCredential {
                secret: "s3cret with space/and?query".into(),
                reason: "handover".into(),
            },
        },
        Request::RotateCredential {
            namespace: "ns1".into(),
            device: "db-01".into(),
            account: "root".into(),
            body: meshward_api::credentials::RotateCredential {
                secret: None,
                length: Some(20),
                alphabet: Some("hex".into()),
                reason: String::new(),
            },
        },
        Request::RevealCredential {
            namespace: "ns1".into(),
            device: "db-01".into(),
            account: "root".into(),
            body: meshward_api::credentials::RevealCredential {
                version: Some("5.1@abcd0123".into()),
            },
        },
        Request::CredentialHistory {
            namespace: "ns1".into(),
            device: "db-01".into(),
            account: "root".into(),
        },
        Request::CredentialConflicts(meshward_api::credentials::ConflictQuery {
            namespace: Some("ns1".into()),
        }),
    ]
}

/// A router whose actor records each request it gets and answers `Empty`.
fn echo_router() -> (axum::Router, mpsc::Receiver<Request>) {
    let (jobs, mut rx) = mpsc::channel::<ApiJob>(8);
    let (seen_tx, seen) = mpsc::channel(VARIANTS);
    tokio::spawn(async move {
        while let Some(job) = rx.recv().await {
            if let Job::Run(request) = job.job {
                let _ = seen_tx.send(request).await;
            }
            let _ = job.reply.send(Ok(Reply::Empty));
        }
    });
    let router = router(ApiState {
        jobs,
        watch: Default::default(),
    })
    .layer(axum::Extension(Caller::Local));
    (router, seen)
}

fn http(request: &Request) -> HttpRequest<HttpBody> {
    let route = request.route();
    let mut uri = route.path.clone();
    if !route.query.is_empty() {
        let q: Vec<String> = route
            .query
            .iter()
            .map(|(k, v)| format!("{}={}", segment(k), segment(v)))
            .collect();
        uri = format!("{uri}?{}", q.join("&"));
    }
    let method = match route.method {
        Method::Get => "GET",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Delete => "DELETE",
    };
    let mut builder = HttpRequest::builder().method(method).uri(uri);
    let body = match route.body {
        Some(b) => {
            builder = builder.header("content-type", "application/json");
            HttpBody::from(serde_json::to_vec(&b).unwrap())
        }
        None => HttpBody::empty(),
    };
    builder.body(body).unwrap()
}

use meshward_api::segment;

#[tokio::test]
async fn every_request_survives_its_route_through_the_router() {
    let requests = every_request();
    let covered: BTreeSet<usize> = requests.iter().map(variant).collect();
    assert_eq!(covered.len(), VARIANTS, "every variant has a sample");
    let (router, mut seen) = echo_router();
    for request in requests {
        let response = router.clone().oneshot(http(&request)).await.unwrap();
        assert_eq!(response.status(), 204, "{request:?}");
        assert_eq!(seen.recv().await.as_ref(), Some(&request));
    }
}

#[tokio::test]
async fn bad_bodies_get_problems_naming_the_field_or_the_media_type() {
    let (router, _seen) = echo_router();
    let send = |body: &'static [u8], content_type: Option<&str>| {
        let mut b = HttpRequest::builder().method("POST").uri("/v1/events");
        if let Some(ct) = content_type {
            b = b.header("content-type", ct);
        }
        router
            .clone()
            .oneshot(b.body(HttpBody::from(body)).unwrap())
    };
    let problem = |response: axum::response::Response| async move {
        assert_eq!(
            response.headers()["content-type"],
            meshward_api::PROBLEM_JSON
        );
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, serde_json::from_slice::<Problem>(&bytes).unwrap())
    };
    let (status, p) = problem(send(b"{}", None).await.unwrap()).await;
    assert_eq!(
        (status, p.kind()),
        (415, Some(ProblemKind::UnsupportedMediaType))
    );
    let (status, p) = problem(
        send(
            br#"{"events": [{"kind": "login", "user": 7, "target": "t"}]}"#,
            Some("application/json"),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(p.field.as_deref(), Some("events[0].user"), "{p:?}");
    let (status, p) = problem(send(b"{", Some("application/json")).await.unwrap()).await;
    assert_eq!((status, p.field.as_deref()), (400, Some("body")));
    let (status, p) = problem(
        send(b"{\"events\": []} x", Some("application/json"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, p.field.as_deref()), (400, Some("body")));
    let response = router
        .clone()
        .oneshot(
            HttpRequest::builder()
                .uri("/v1/no-such-thing")
                .body(HttpBody::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let (status, p) = problem(response).await;
    assert_eq!((status, p.kind()), (404, Some(ProblemKind::NotFound)));
}

#[test]
fn the_openapi_document_lists_every_route_and_equals_the_copy_in_docs() {
    let generated = openapi();
    let doc: serde_json::Value = serde_json::from_str(&generated).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    for request in every_request() {
        let route = request.route();
        let path = route.path.split('/').collect::<Vec<_>>().join("/");
        let templated = doc["paths"].as_object().unwrap().iter().find(|(p, ops)| {
            let method = format!("{:?}", route.method).to_lowercase();
            ops.get(&method).is_some() && matches_template(p, &path)
        });
        assert!(
            templated.is_some(),
            "{:?} {path} is not in the document",
            route.method
        );
    }
    assert!(doc["paths"].get("/v1/backup").is_some());
    let copy = include_str!("../../../docs/openapi.json");
    assert!(
        copy.trim() == generated.trim(),
        "docs/openapi.json is stale: regenerate it with `cargo run -p meshward -- openapi > docs/openapi.json`"
    );
}

/// Whether `path` fits the template `template` (`{name}` matches one segment).
fn matches_template(template: &str, path: &str) -> bool {
    let t: Vec<&str> = template.split('/').collect();
    let p: Vec<&str> = path.split('/').collect();
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(t, p)| t == p || (t.starts_with('{') && t.ends_with('}')))
}

#[test]
fn a_query_that_does_not_parse_names_the_parameter() {
    let problem = parse_query::<EventQuery>("limit=abc").expect_err("not a number");
    assert_eq!(problem.status, 400);
    assert_eq!(problem.field.as_deref(), Some("limit"), "{problem:?}");
    let problem = parse_query::<AuditQuery>("from=-1&limit=2").expect_err("negative");
    assert_eq!(problem.field.as_deref(), Some("from"), "{problem:?}");
    // Garbage: never a panic, a problem or a query.
    for query in ["%ff%fe=%00", "&&&==", "limit", "limit=1&limit=2", "x=%"] {
        let _ = parse_query::<EventQuery>(query);
    }
    let query: EventQuery = parse_query("kind=login&limit=5").expect("a query");
    assert_eq!(
        (query.kind.as_deref(), query.limit),
        (Some("login"), Some(5))
    );
}
