//! The store's unit tests.

use super::*;
use meshward_crdt::{Event, Row};

#[test]
fn blobs_swap_only_from_the_expected_value() {
    let store = Store::in_memory().unwrap();
    assert_eq!(store.blob("b").unwrap(), None);
    assert!(!store.swap_blob("b", b"x", b"y").unwrap());
    store.set_blobs(&[("b", b"x")]).unwrap();
    assert!(store.swap_blob("b", b"x", b"y").unwrap());
    assert!(!store.swap_blob("b", b"x", b"z").unwrap());
    assert_eq!(store.blob("b").unwrap().as_deref(), Some(&b"y"[..]));
}
use meshward_crdt::{EventKind, KeyType, Op};

fn event(i: i64) -> Op {
    Op::Append(Event {
        at_ms: i,
        kind: if i % 2 == 0 {
            EventKind::Login
        } else {
            EventKind::Logout
        },
        user: "alice".into(),
        target: "db".into(),
        detail: String::new(),
    })
}

#[test]
fn persisted_effects_reload_into_the_same_replica_and_views() {
    let store = Store::in_memory().unwrap();
    let id = store.identity().unwrap();
    let config = ReplicaConfig {
        seal_rows: std::num::NonZeroU64::new(5).unwrap(),
        compact_after: std::num::NonZeroU64::new(3).unwrap(),
    };
    let mut replica = store.load_replica(&id, config.clone()).unwrap();
    for t in 0..6 {
        let mut ops: Vec<Op> = (0..3).map(|i| event(t * 3 + i)).collect();
        ops.push(Op::ObserveFingerprint {
            host: format!("h{}", t % 2),
            key_type: KeyType::SshEd25519,
            fingerprint: "SHA256:x".into(),
            at_ms: t,
        });
        store.persist(&replica.commit(t, ops).unwrap()).unwrap();
    }
    let again = store
        .load_replica(&store.identity().unwrap(), config)
        .unwrap();
    assert_eq!(again.digest(), replica.digest());
    assert_eq!(again.stats(), replica.stats());
    let events = store.events(&EventFilter::default()).unwrap();
    assert_eq!(events.len(), 18);
    let rows = replica.rows(TableId::Events).unwrap();
    assert_eq!(
        events.iter().map(|e| &e.event).collect::<Vec<_>>(),
        rows.iter()
            .map(|(_, r)| match r {
                Row::Event(e) => e,
                _ => unreachable!(),
            })
            .collect::<Vec<_>>()
    );
    let filtered = store
        .events(&EventFilter {
            since_ms: Some(4),
            until_ms: Some(10),
            kind: Some(EventKind::Login),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        filtered.iter().map(|e| e.event.at_ms).collect::<Vec<_>>(),
        vec![4, 6, 8]
    );
    assert_eq!(store.map_rows(TableId::Fingerprints).unwrap().len(), 2);
}

#[test]
fn the_mastered_chain_is_stored_in_order_and_rebuilds() {
    use meshward_crdt::mastered::{Chain, Member, RecordKind, Roster, TrustAnchor};
    let store = Store::in_memory().unwrap();
    let leader = SigningKey::from_bytes(&[1; 32]);
    let anchor = TrustAnchor {
        cluster: ClusterId([5; 16]),
        genesis_leader: leader.verifying_key().to_bytes(),
    };
    let mut chain = Chain::new(anchor);
    let roster = Roster {
        members: vec![Member {
            key: leader.verifying_key().to_bytes(),
            address: "10.0.0.1".into(),
        }],
    };
    let genesis = chain.sign_next(&leader, RecordKind::Genesis, roster.encode());
    let v1 = chain.verify(&genesis).unwrap();
    store.append_mastered(&v1).unwrap();
    chain.apply(v1).unwrap();
    let config = chain.sign_next(&leader, RecordKind::Config, b"policy".to_vec());
    let v2 = chain.verify(&config).unwrap();
    // A record that does not extend the stored chain is refused (here: replayed genesis).
    let again = Chain::new(anchor).verify(&genesis).unwrap();
    assert!(matches!(
        store.append_mastered(&again),
        Err(StoreError::MasteredOrder { got: 1, last: 1 })
    ));
    store.append_mastered(&v2).unwrap();
    chain.apply(v2).unwrap();
    let hw = store.mastered_high_water().unwrap().unwrap();
    assert_eq!((hw.epoch, hw.version, hw.hash), (1, 2, chain.last_hash()));
    let rebuilt = Chain::rebuild(anchor, &store.mastered_records().unwrap()).unwrap();
    assert_eq!(rebuilt.last_version(), 2);
    assert_eq!(rebuilt.last_hash(), chain.last_hash());
    // Both applied records are in the change log, the refused one is not.
    let Page::Changes(log) = store.changes_after(0, 10).unwrap() else {
        panic!("compacted");
    };
    let versions: Vec<(u64, u64)> = log
        .iter()
        .map(|(c, change)| (*c, change.record().unwrap().unwrap().record.version))
        .collect();
    assert_eq!(versions, [(1, 1), (2, 2)]);
}

#[test]
fn identity_is_created_once_and_kept() {
    let store = Store::in_memory().unwrap();
    let a = store.identity().unwrap();
    let b = store.identity().unwrap();
    assert_eq!(a.key.to_bytes(), b.key.to_bytes());
    assert_eq!(a.cluster, b.cluster);
}

#[test]
fn settings_refuse_bad_names_and_values() {
    let store = Store::in_memory().unwrap();
    store
        .set_setting("fingerprint-enforcement", "warn")
        .unwrap();
    assert_eq!(
        store.setting("fingerprint-enforcement").unwrap().as_deref(),
        Some("warn")
    );
    assert!(store.set_setting("bad name", "x").is_err());
    assert!(store.set_setting("ok", "a\u{1}b").is_err());
    assert!(
        store
            .set_setting("ok", &"x".repeat(MAX_SETTING + 1))
            .is_err()
    );
    assert_eq!(store.setting("ok").unwrap(), None);
}

#[test]
fn a_file_that_is_not_a_store_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(STORE_FILE);
    fs::write(&path, b"this is not a redb file at all, just some text").unwrap();
    let before = fs::read(&path).unwrap();
    let err = Store::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert_eq!(fs::read(&path).unwrap(), before);
}

#[test]
fn the_store_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("data")).unwrap();
    drop(store);
    let mode = fs::metadata(dir.path().join("data").join(STORE_FILE))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn schemas_older_migrate_newer_and_zero_are_refused_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let set_schema = |version: u32| {
        let db = redb::Database::open(dir.path().join(STORE_FILE)).unwrap();
        let tx = db.begin_write().unwrap();
        tx.open_table(META)
            .unwrap()
            .insert("schema", version.to_be_bytes().as_slice())
            .unwrap();
        tx.commit().unwrap();
    };
    let schema = || {
        let db = redb::Database::open(dir.path().join(STORE_FILE)).unwrap();
        let read = redb::ReadableDatabase::begin_read(&db).unwrap();
        let meta = read.open_table(META).unwrap();
        schema_of(meta.get("schema").unwrap().unwrap().value()).unwrap()
    };
    drop(Store::open(dir.path()).unwrap());
    assert_eq!(schema(), SCHEMA_VERSION);
    // A later schema: refused read-write and read-only, naming both versions; unchanged.
    set_schema(SCHEMA_VERSION + 1);
    for opened in [
        Store::open(dir.path()).map(drop),
        Store::open_read_only(dir.path()).map(drop),
    ] {
        let err = opened.unwrap_err().to_string();
        assert!(
            err.contains(&format!("schema version {}", SCHEMA_VERSION + 1))
                && err.contains(&format!("up to {SCHEMA_VERSION}")),
            "{err}"
        );
    }
    assert_eq!(schema(), SCHEMA_VERSION + 1);
    set_schema(0);
    assert!(Store::open(dir.path()).is_err());
    // Schema 1 (no change log): read as it is, migrated at the next open for writing.
    set_schema(1);
    drop(Store::open_read_only(dir.path()).unwrap());
    assert_eq!(schema(), 1);
    drop(Store::open(dir.path()).unwrap());
    assert_eq!(schema(), SCHEMA_VERSION);
}
