use meshward_api::Request;
use meshward_api::credentials::{ConflictQuery, RevealCredential, RotateCredential, SetCredential};
use meshward_crdt::rotation::RETAIN_PER_WRITER;
use rand::SeedableRng as _;

use super::*;
use crate::ops::{LocalBackend, execute};

/// A node's data directory with a store and a MEK, and a backend on it.
fn node() -> (tempfile::TempDir, LocalBackend) {
    let dir = tempfile::tempdir().unwrap();
    Store::open(dir.path()).unwrap().identity().unwrap();
    Mek::generate(&mut rand_chacha::ChaCha8Rng::seed_from_u64(7))
        .write_new(&dir.path().join(MEK_FILE))
        .unwrap();
    let backend = LocalBackend::new(dir.path().to_path_buf());
    (dir, backend)
}

fn set(secret: &str) -> Request {
    with_reason(secret, "first")
}

fn with_reason(secret: &str, reason: &str) -> Request {
    Request::SetCredential {
        namespace: "ns1".into(),
        device: "db-01".into(),
        account: "root".into(),
        body: SetCredential {
            secret: secret.into(),
            reason: reason.into(),
        },
    }
}

fn rotate(body: RotateCredential) -> Request {
    Request::RotateCredential {
        namespace: "ns1".into(),
        device: "db-01".into(),
        account: "root".into(),
        body,
    }
}

fn reveal(version: Option<&str>) -> Request {
    Request::RevealCredential {
        namespace: "ns1".into(),
        device: "db-01".into(),
        account: "root".into(),
        body: RevealCredential {
            version: version.map(String::from),
        },
    }
}

fn history(b: &mut LocalBackend) -> meshward_api::credentials::CredentialHistory {
    let request = Request::CredentialHistory {
        namespace: "ns1".into(),
        device: "db-01".into(),
        account: "root".into(),
    };
    match execute(b, request).unwrap() {
        Reply::CredentialHistory(h) => h,
        other => panic!("{other:?}"),
    }
}

fn secret_of(reply: Reply) -> (String, String) {
    match reply {
        Reply::Secret(s) => (s.version, s.secret),
        other => panic!("{other:?}"),
    }
}

/// The rotation rows and the audit records held: what a refused request must leave alone.
fn state(b: &mut LocalBackend) -> (Vec<(WriterId, Row)>, usize) {
    let store = b.store().unwrap();
    let rows = store.map_rows(TableId::Rotations).unwrap();
    let audit = AuditLog::list(store.reader(), 1, 1000).unwrap().len();
    (rows, audit)
}

#[test]
fn a_set_secret_is_sealed_at_rest_and_revealed_with_an_audit_record() {
    let (_dir, mut b) = node();
    let Reply::Rotated(info) = execute(&mut b, set("correct horse")).unwrap() else {
        panic!("not a rotation");
    };
    assert!(info.current && info.head && info.how == "set");
    // Never plain in the row, nor in the history's JSON.
    let (rows, _) = state(&mut b);
    let [(_, Row::Rotation(r))] = &rows[..] else {
        panic!("one rotation row expected: {rows:?}");
    };
    assert!(!r.sealed.windows(5).any(|w| w == b"horse"));
    let h = serde_json::to_string(&history(&mut b)).unwrap();
    assert!(!h.contains("horse"), "{h}");
    let (version, secret) = secret_of(execute(&mut b, reveal(None)).unwrap());
    assert_eq!(secret, "correct horse");
    assert_eq!(version, info.version);
    let store = b.store().unwrap();
    let audit = AuditLog::list(store.reader(), 1, 100).unwrap();
    let last = audit.last().unwrap();
    assert_eq!(last.action, "credential-reveal");
    assert_eq!(last.actor, "local operator");
    assert_eq!(last.target, "ns1/db-01/root");
    assert!(last.detail.contains(&version));
    assert!(audit.iter().all(|a| !a.detail.contains("horse")));
}

#[test]
fn rotations_are_ordered_and_every_kept_version_is_revealable() {
    let (_dir, mut b) = node();
    execute(&mut b, set("one")).unwrap();
    let first = history(&mut b).current;
    let generated = RotateCredential {
        length: Some(20),
        alphabet: Some("hex".into()),
        ..Default::default()
    };
    execute(&mut b, rotate(generated)).unwrap();
    let h = history(&mut b);
    assert_eq!(h.rotations.len(), 2);
    assert!(!h.conflict, "one writer's rotations never conflict");
    assert_ne!(h.current, first);
    assert!(
        h.rotations[1].seen.is_empty(),
        "a node's own are not in seen"
    );
    let (_, now) = secret_of(execute(&mut b, reveal(None)).unwrap());
    assert_eq!(now.len(), 20);
    assert!(now.chars().all(|c| c.is_ascii_hexdigit()));
    let (_, old) = secret_of(execute(&mut b, reveal(Some(&first))).unwrap());
    assert_eq!(old, "one");
}

#[test]
fn retention_keeps_the_newest_rotations_of_each_writer() {
    let (_dir, mut b) = node();
    for i in 0..RETAIN_PER_WRITER + 3 {
        execute(&mut b, set(&format!("s{i}"))).unwrap();
    }
    let h = history(&mut b);
    assert_eq!(h.rotations.len(), RETAIN_PER_WRITER);
    let (_, secret) = secret_of(execute(&mut b, reveal(None)).unwrap());
    assert_eq!(secret, format!("s{}", RETAIN_PER_WRITER + 2));
    let oldest = &h.rotations[0].version;
    let (_, secret) = secret_of(execute(&mut b, reveal(Some(oldest))).unwrap());
    assert_eq!(secret, "s3");
}

#[test]
fn garbage_is_refused_naming_the_field_and_nothing_changes() {
    let (_dir, mut b) = node();
    execute(&mut b, set("kept")).unwrap();
    let before = state(&mut b);
    let path = |ns: &str, device: &str, account: &str| Request::SetCredential {
        namespace: ns.into(),
        device: device.into(),
        account: account.into(),
        body: SetCredential {
            secret: "x".into(),
            reason: String::new(),
        },
    };
    let cases: Vec<(Request, &str)> = vec![
        (path("NS", "db", "root"), "namespace"),
        (path("ns1", "db/01", "root"), "device"),
        (path("ns1", "db", ""), "account"),
        (set(""), "secret"),
        (set(&"x".repeat(MAX_SECRET + 1)), "secret"),
        (with_reason("x", "two\nlines"), "reason"),
        (with_reason("x", &"r".repeat(MAX_REASON + 1)), "reason"),
        (
            rotate(RotateCredential {
                length: Some(4),
                ..Default::default()
            }),
            "length",
        ),
        (
            rotate(RotateCredential {
                alphabet: Some("emoji".into()),
                ..Default::default()
            }),
            "alphabet",
        ),
        (
            rotate(RotateCredential {
                secret: Some("x".into()),
                length: Some(10),
                ..Default::default()
            }),
            "secret",
        ),
        (reveal(Some("garbage")), "version"),
        (reveal(Some("1.0@zz")), "version"),
        (
            Request::CredentialConflicts(ConflictQuery {
                namespace: Some("A B".into()),
            }),
            "namespace",
        ),
    ];
    for (request, field) in cases {
        let p = execute(&mut b, request.clone()).unwrap_err();
        assert_eq!(p.field.as_deref(), Some(field), "{request:?}: {p:?}");
        assert_eq!(state(&mut b), before, "{request:?} changed the state");
    }
    let p = execute(&mut b, reveal(Some("1.0@abcdef01"))).unwrap_err();
    assert_eq!(p.status, 404);
    let missing = Request::CredentialHistory {
        namespace: "ns1".into(),
        device: "db-02".into(),
        account: "root".into(),
    };
    assert_eq!(execute(&mut b, missing).unwrap_err().status, 404);
    assert_eq!(state(&mut b), before);
}

#[test]
fn without_the_mek_nothing_is_rotated_or_revealed() {
    let (dir, mut b) = node();
    execute(&mut b, set("x")).unwrap();
    let before = state(&mut b);
    std::fs::remove_file(dir.path().join(MEK_FILE)).unwrap();
    for request in [set("y"), reveal(None)] {
        let p = execute(&mut b, request).unwrap_err();
        assert_eq!(p.status, 503, "{p:?}");
        assert!(p.detail.contains("unseal"), "{}", p.detail);
    }
    assert_eq!(state(&mut b), before);
}

#[test]
fn the_api_and_the_crdt_agree_on_the_secret_bound() {
    assert_eq!(MAX_SECRET, meshward_api::credentials::MAX_SECRET);
}
