use ed25519_dalek::SigningKey;
use meshward_crdt::ClusterId;
use meshward_crdt::mastered::{Chain, Member, Roster, TrustAnchor};
use proptest::prelude::*;

use super::*;

fn user(s: &str) -> UserName {
    s.parse().unwrap()
}

fn ns(s: &str) -> Namespace {
    s.parse().unwrap()
}

#[test]
fn grants_parse_and_display_round_trip() {
    for text in ["root", "admin:ns1", "guest:ns-2", "guest:*", "admin:a_b"] {
        assert_eq!(text.parse::<Grant>().unwrap().to_string(), text);
    }
}

#[test]
fn bad_grants_and_names_are_refused_with_the_reason() {
    let cases = [
        ("", "write root"),
        ("ROOT", "write root"),
        ("admin", "write root"),
        ("admin:*", "one namespace at a time"),
        ("admin:", "empty"),
        ("guest:nS", "'S' is not allowed"),
        ("squatter", "write root"),
        ("root:x", "write root"),
        ("guest:-x", "must start"),
    ];
    for (text, reason) in cases {
        let err = text.parse::<Grant>().unwrap_err().to_string();
        assert!(err.contains(reason), "{text:?}: {err}");
    }
    let long = "a".repeat(MAX_NAMESPACE + 1);
    assert!(
        format!("admin:{long}")
            .parse::<Grant>()
            .unwrap_err()
            .to_string()
            .contains("longer than 63")
    );
    assert!("a".repeat(MAX_USER_NAME).parse::<UserName>().is_ok());
    assert!("a".repeat(MAX_USER_NAME + 1).parse::<UserName>().is_err());
    for bad in ["", "Alice", ".x", "a b", "a/b", "é", "a:b"] {
        assert!(bad.parse::<UserName>().is_err(), "{bad:?}");
    }
    assert!("first.last-2_x".parse::<UserName>().is_ok());
}

#[test]
fn the_policy_table_holds() {
    use Decision::Allow;
    let (a, b) = (ns("a"), ns("b"));
    let admin_a = [Grant::Admin(a.clone())];
    assert_eq!(authorize(&admin_a, &Action::Write(a.clone())), Allow);
    assert_eq!(authorize(&admin_a, &Action::Read(a.clone())), Allow);
    assert_ne!(authorize(&admin_a, &Action::Read(b.clone())), Allow);
    assert_ne!(authorize(&admin_a, &Action::ReadCluster), Allow);
    assert_ne!(authorize(&admin_a, &Action::UserAdmin), Allow);
    let guest_a = [Grant::Guest(a.clone())];
    assert_eq!(authorize(&guest_a, &Action::Read(a.clone())), Allow);
    assert_ne!(authorize(&guest_a, &Action::Write(a.clone())), Allow);
    let guest_all = [Grant::GuestAll];
    assert_eq!(authorize(&guest_all, &Action::Read(b.clone())), Allow);
    assert_eq!(authorize(&guest_all, &Action::ReadCluster), Allow);
    assert_ne!(authorize(&guest_all, &Action::Write(b.clone())), Allow);
    assert_ne!(authorize(&guest_all, &Action::HaOps), Allow);
    for action in [Action::ClusterAdmin, Action::Backup, Action::Write(b)] {
        assert_eq!(authorize(&[Grant::Root], &action), Allow);
        assert_ne!(authorize(&[], &action), Allow);
    }
    let Decision::Deny(why) = authorize(&guest_a, &Action::Write(a)) else {
        panic!("allowed");
    };
    assert_eq!(why, "writing in namespace a needs admin:a or root");
}

#[test]
fn payloads_round_trip_and_bad_ones_are_refused() {
    let changes = [
        UserChange::Create(user("alice")),
        UserChange::AddGrant(user("alice"), Grant::Admin(ns("ns1"))),
        UserChange::RevokeGrant(user("alice"), Grant::GuestAll),
        UserChange::Delete(user("alice")),
    ];
    for change in &changes {
        let (kind, payload) = change.encode();
        assert_eq!(
            UserChange::decode(kind, &payload).unwrap().as_ref(),
            Some(change)
        );
        let mut trailing = payload.clone();
        trailing.push(0);
        assert!(UserChange::decode(kind, &trailing).is_err());
        for len in 0..payload.len() {
            assert!(UserChange::decode(kind, &payload[..len]).is_err(), "{len}");
        }
    }
    let (_, payload) = changes[0].encode();
    assert!(matches!(
        UserChange::decode(RecordKind::Grant, &payload),
        Err(PayloadError::Subject { .. })
    ));
    assert!(matches!(
        UserChange::decode(RecordKind::Config, &payload),
        Err(PayloadError::Subject { .. })
    ));
    assert_eq!(
        UserChange::decode(RecordKind::Revocation, &[PAYLOAD_FORMAT, 9, 1, 2]),
        Ok(None),
        "another subject's revocation"
    );
    assert_eq!(
        UserChange::decode(RecordKind::User, &[2, 1]),
        Err(PayloadError::Format(2))
    );
    assert!(matches!(
        UserChange::decode(RecordKind::User, &vec![1; MAX_PAYLOAD + 1]),
        Err(PayloadError::TooLarge { .. })
    ));
    // A well-formed body naming an invalid user.
    let mut bad = vec![PAYLOAD_FORMAT, SUBJECT_USER];
    bad.extend(
        postcard::to_allocvec(&Body {
            user: "Bad Name".into(),
            grant: None,
        })
        .unwrap(),
    );
    assert!(matches!(
        UserChange::decode(RecordKind::User, &bad),
        Err(PayloadError::Malformed(_))
    ));
}

#[test]
fn changes_that_do_not_fit_change_nothing() {
    let mut users = Users::default();
    let alice = user("alice");
    assert_eq!(
        users.apply(&UserChange::AddGrant(alice.clone(), Grant::Root)),
        Err(ChangeError::NoUser(alice.clone()))
    );
    users.apply(&UserChange::Create(alice.clone())).unwrap();
    let before = users.clone();
    assert_eq!(
        users.apply(&UserChange::Create(alice.clone())),
        Err(ChangeError::Exists(alice.clone()))
    );
    assert_eq!(
        users.apply(&UserChange::RevokeGrant(alice.clone(), Grant::Root)),
        Err(ChangeError::NoGrant(alice.clone(), Grant::Root))
    );
    assert_eq!(users, before);
    for i in 0..MAX_GRANTS_PER_USER {
        let g = Grant::Guest(ns(&format!("n{i}")));
        users
            .apply(&UserChange::AddGrant(alice.clone(), g))
            .unwrap();
    }
    assert_eq!(
        users.apply(&UserChange::AddGrant(alice.clone(), Grant::Root)),
        Err(ChangeError::TooManyGrants(alice.clone()))
    );
    users.apply(&UserChange::Delete(alice.clone())).unwrap();
    users.apply(&UserChange::Create(alice.clone())).unwrap();
    assert_eq!(
        users.grants(&alice).map(BTreeSet::len),
        Some(0),
        "recreated bare"
    );
}

#[test]
fn the_view_is_folded_from_verified_records_in_chain_order() {
    let leader = SigningKey::from_bytes(&[1; 32]);
    let anchor = TrustAnchor {
        cluster: ClusterId([2; 16]),
        genesis_leader: leader.verifying_key().to_bytes(),
    };
    let mut chain = Chain::new(anchor);
    let roster = Roster {
        members: vec![Member {
            key: anchor.genesis_leader,
            address: "a".into(),
        }],
    };
    let mut records = Vec::new();
    let push = |chain: &mut Chain, records: &mut Vec<_>, kind, payload| {
        let record = chain.sign_next(&leader, kind, payload);
        let v = chain.verify(&record).unwrap();
        chain.apply(chain.verify(&record).unwrap()).unwrap();
        records.push(v);
    };
    push(
        &mut chain,
        &mut records,
        RecordKind::Genesis,
        roster.encode(),
    );
    for change in [
        UserChange::Create(user("bob")),
        UserChange::AddGrant(user("bob"), Grant::GuestAll),
        UserChange::AddGrant(user("bob"), Grant::Root),
        UserChange::Create(user("carol")),
        UserChange::AddGrant(user("nobody"), Grant::Root), // skipped: no such user
        UserChange::RevokeGrant(user("bob"), Grant::Root),
    ] {
        let (kind, payload) = change.encode();
        push(&mut chain, &mut records, kind, payload);
    }
    push(
        &mut chain,
        &mut records,
        RecordKind::Revocation,
        vec![PAYLOAD_FORMAT, 7],
    );
    let users = Users::fold(&records).unwrap();
    assert_eq!(users.len(), 2);
    assert_eq!(
        users.grants(&user("bob")).unwrap(),
        &BTreeSet::from([Grant::GuestAll])
    );
    assert!(users.grants(&user("nobody")).is_none());
    push(
        &mut chain,
        &mut records,
        RecordKind::User,
        vec![PAYLOAD_FORMAT],
    );
    let err = Users::fold(&records).unwrap_err();
    assert_eq!(err.version, 9);
}

/// The reference model: the set of capabilities each grant gives, as strings, and an
/// action allowed iff one of them names it.
fn reference(grants: &[Grant], action: &Action) -> bool {
    let mut caps = BTreeSet::new();
    for g in grants {
        match g {
            Grant::Root => {
                caps.insert("everything".to_string());
            }
            Grant::Admin(n) => {
                caps.insert(format!("read {n}"));
                caps.insert(format!("write {n}"));
            }
            Grant::Guest(n) => {
                caps.insert(format!("read {n}"));
            }
            Grant::GuestAll => {
                caps.insert("read any".to_string());
                caps.insert("read cluster".to_string());
            }
        }
    }
    let needed = match action {
        Action::Read(n) => vec![format!("read {n}"), "read any".into()],
        Action::Write(n) => vec![format!("write {n}")],
        Action::ReadCluster => vec!["read cluster".into()],
        Action::ClusterAdmin | Action::UserAdmin | Action::HaOps | Action::Backup => vec![],
    };
    caps.contains("everything") || needed.iter().any(|c| caps.contains(c))
}

fn any_ns() -> impl Strategy<Value = Namespace> {
    prop_oneof![Just("a"), Just("b"), Just("c-1")].prop_map(ns)
}

fn any_grant() -> impl Strategy<Value = Grant> {
    prop_oneof![
        1 => Just(Grant::Root),
        3 => any_ns().prop_map(Grant::Admin),
        3 => any_ns().prop_map(Grant::Guest),
        1 => Just(Grant::GuestAll),
    ]
}

fn any_action() -> impl Strategy<Value = Action> {
    prop_oneof![
        any_ns().prop_map(Action::Read),
        any_ns().prop_map(Action::Write),
        Just(Action::ReadCluster),
        Just(Action::ClusterAdmin),
        Just(Action::UserAdmin),
        Just(Action::HaOps),
        Just(Action::Backup),
    ]
}

proptest! {
    #[test]
    fn the_authorizer_agrees_with_the_reference_model(
        grants in proptest::collection::vec(any_grant(), 0..5),
        action in any_action(),
    ) {
        let allowed = authorize(&grants, &action) == Decision::Allow;
        prop_assert_eq!(allowed, reference(&grants, &action));
    }

    #[test]
    fn garbage_payloads_never_panic(
        kind in 0u8..14,
        payload in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        if let Some(kind) = RecordKind::from_code(kind) {
            let _ = UserChange::decode(kind, &payload);
        }
    }
}

/// The reference model for a managed-table request, from the request alone: reading
/// namespace `N` needs `read N` or `read any`, writing needs `write N`; root does everything.
fn reference_managed(grants: &[Grant], request: &meshward_api::Request) -> bool {
    use meshward_api::Request as R;
    let caps = |g: &Grant| -> Vec<String> {
        match g {
            Grant::Root => vec!["everything".into()],
            Grant::Admin(n) => vec![format!("read {n}"), format!("write {n}")],
            Grant::Guest(n) => vec![format!("read {n}")],
            Grant::GuestAll => vec!["read any".into()],
        }
    };
    let held: BTreeSet<String> = grants.iter().flat_map(caps).collect();
    let needed = match request {
        R::GetRow { namespace, .. }
        | R::ListRows { namespace, .. }
        | R::ListTables { namespace } => vec![format!("read {namespace}"), "read any".into()],
        R::PutRow { namespace, .. } | R::DeleteRow { namespace, .. } => {
            vec![format!("write {namespace}")]
        }
        // Credentials: guest:NS lists history and conflicts, admin:NS sets, rotates and
        // reveals; the conflicts of every namespace need read on every namespace.
        R::CredentialHistory { namespace, .. } => {
            vec![format!("read {namespace}"), "read any".into()]
        }
        R::CredentialConflicts(q) => match &q.namespace {
            Some(namespace) => vec![format!("read {namespace}"), "read any".into()],
            None => vec!["read any".into()],
        },
        R::SetCredential { namespace, .. }
        | R::RotateCredential { namespace, .. }
        | R::RevealCredential { namespace, .. } => vec![format!("write {namespace}")],
        other => panic!("not a managed request: {other:?}"),
    };
    held.contains("everything") || needed.iter().any(|c| held.contains(c))
}

fn any_managed_request() -> impl Strategy<Value = meshward_api::Request> {
    use meshward_api::Request as R;
    let names = prop_oneof![Just("a"), Just("b"), Just("c-1")].prop_map(String::from);
    (names, 0u8..11).prop_map(|(namespace, op)| {
        let (table, key) = ("hosts".to_string(), "k1".to_string());
        let (device, account) = ("db-01".to_string(), "root".to_string());
        match op {
            5 => R::SetCredential {
                namespace,
                device,
                account,
                body: meshward_api::credentials::SetCredential {
                    secret: "x".into(),
                    reason: String::new(),
                },
            },
            6 => R::RotateCredential {
                namespace,
                device,
                account,
                body: Default::default(),
            },
            7 => R::RevealCredential {
                namespace,
                device,
                account,
                body: Default::default(),
            },
            8 => R::CredentialHistory {
                namespace,
                device,
                account,
            },
            9 => R::CredentialConflicts(meshward_api::credentials::ConflictQuery {
                namespace: Some(namespace),
            }),
            10 => R::CredentialConflicts(Default::default()),
            0 => R::GetRow {
                namespace,
                table,
                key,
            },
            1 => R::ListRows {
                namespace,
                table,
                query: Default::default(),
            },
            2 => R::ListTables { namespace },
            3 => R::PutRow {
                namespace,
                table,
                key,
                document: serde_json::json!({"a": 1}),
            },
            _ => R::DeleteRow {
                namespace,
                table,
                key,
            },
        }
    })
}

proptest! {
    #[test]
    fn managed_table_requests_are_decided_per_namespace_as_the_reference_model_says(
        grants in proptest::collection::vec(any_grant(), 0..5),
        request in any_managed_request(),
    ) {
        let action = crate::ops::access::required(&request).expect("served over HTTPS");
        let allowed = authorize(&grants, &action) == Decision::Allow;
        prop_assert_eq!(allowed, reference_managed(&grants, &request), "{:?}", action);
    }
}

#[test]
fn a_managed_request_with_a_bad_namespace_needs_what_every_namespace_needs() {
    let request = meshward_api::Request::PutRow {
        namespace: "NS/x".into(),
        table: "t".into(),
        key: "k".into(),
        document: serde_json::Value::Null,
    };
    let action = crate::ops::access::required(&request).unwrap();
    assert_ne!(
        authorize(&[Grant::Admin(ns("a"))], &action),
        Decision::Allow
    );
    assert_eq!(authorize(&[Grant::Root], &action), Decision::Allow);
}
