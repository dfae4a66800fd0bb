//! Behaviour of the replica as a whole: replication, refusals, sealing, restore, and the CRDT
//! laws under any delivery order (proptest).

use std::num::NonZeroU64;

use automerge::transaction::Transactable;
use automerge::{Automerge, ObjType, ROOT, ScalarValue};
use ed25519_dalek::SigningKey;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::*;

const CLUSTER: ClusterId = ClusterId([42; 16]);

fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

fn writer(n: u8) -> WriterId {
    WriterId::from_key(&key(n).verifying_key())
}

/// The roster of these tests: keys 1 to 8.
fn roster() -> impl Iterator<Item = WriterId> {
    (1..=8).map(writer)
}

fn replica(n: u8, seal: u64) -> Replica {
    let config = ReplicaConfig {
        seal_rows: NonZeroU64::new(seal).unwrap_or(NonZeroU64::MIN),
        compact_after: NonZeroU64::new(4).unwrap_or(NonZeroU64::MIN),
    };
    let mut replica = Replica::new(CLUSTER, key(n), config);
    replica.set_writers(roster());
    replica
}

fn event(i: u64) -> Op {
    Op::Append(Event {
        at_ms: i as i64,
        kind: EventKind::Login,
        user: format!("user{}", i % 7),
        target: "db-01".into(),
        detail: format!("event {i}"),
    })
}

fn apply_all(to: &mut Replica, items: &[SyncItem]) -> Effects {
    let mut all = Effects::default();
    for item in items {
        let e = to.apply(item.clone()).expect("apply");
        all.rows.extend(e.rows);
        all.persist.extend(e.persist);
    }
    all
}

/// Anti-entropy both ways until neither lacks anything (bounded).
fn sync_pair(a: &mut Replica, b: &mut Replica) {
    for _ in 0..100 {
        let (to_b, more_b) = a.missing_for(&b.digest(), 1 << 20).expect("missing");
        apply_all(b, &to_b);
        let (to_a, more_a) = b.missing_for(&a.digest(), 1 << 20).expect("missing");
        apply_all(a, &to_a);
        if !more_a && !more_b && to_a.is_empty() && to_b.is_empty() {
            return;
        }
    }
    panic!("sync did not finish in 100 rounds");
}

#[test]
fn pushed_changes_replicate_rows_of_every_table() {
    let mut a = replica(1, 1000);
    let mut b = replica(2, 1000);
    let mut ops: Vec<Op> = (0..5).map(event).collect();
    ops.push(Op::ObserveFingerprint {
        host: "db-01".into(),
        key_type: KeyType::SshEd25519,
        fingerprint: "SHA256:abc".into(),
        at_ms: 10,
    });
    ops.push(Op::PutException(UserDataException {
        user: "alice".into(),
        field: "shell".into(),
        value: "/bin/zsh".into(),
        at_ms: 10,
    }));
    let effects = a.commit(1000, ops).expect("commit");
    assert_eq!(effects.push.len(), 3, "one change per touched table");
    assert_eq!(effects.rows.len(), 7);
    let applied = apply_all(&mut b, &effects.push);
    assert_eq!(
        applied.rows, effects.rows,
        "receivers see the same row changes"
    );
    assert_eq!(a.digest(), b.digest());
    for table in TableId::ALL {
        assert_eq!(a.rows(table).expect("rows"), b.rows(table).expect("rows"));
    }
}

#[test]
fn observing_a_fingerprint_again_widens_first_and_last_seen() {
    let mut a = replica(1, 1000);
    let seen = |at_ms| Op::ObserveFingerprint {
        host: "h".into(),
        key_type: KeyType::SshRsa,
        fingerprint: "SHA256:x".into(),
        at_ms,
    };
    a.commit(0, vec![seen(50)]).expect("commit");
    a.commit(0, vec![seen(70), seen(20)]).expect("commit");
    let rows = a.rows(TableId::Fingerprints).expect("rows");
    assert_eq!(rows.len(), 1);
    let Row::Fingerprint(f) = &rows[0].1 else {
        panic!("not a fingerprint")
    };
    assert_eq!((f.first_seen_ms, f.last_seen_ms), (20, 70));
}

#[test]
fn deleting_an_exception_replicates_and_a_missing_one_is_refused() {
    let mut a = replica(1, 1000);
    let mut b = replica(2, 1000);
    let put = Op::PutException(UserDataException {
        user: "bob".into(),
        field: "mfa".into(),
        value: "off".into(),
        at_ms: 1,
    });
    let del = Op::DeleteException {
        user: "bob".into(),
        field: "mfa".into(),
    };
    apply_all(&mut b, &a.commit(0, vec![put]).expect("commit").push);
    assert_eq!(b.rows(TableId::Exceptions).expect("rows").len(), 1);
    apply_all(
        &mut b,
        &a.commit(0, vec![del.clone()]).expect("commit").push,
    );
    assert!(b.rows(TableId::Exceptions).expect("rows").is_empty());
    let before = a.digest();
    assert!(matches!(
        a.commit(0, vec![del]),
        Err(CommitError::NoSuchRow { .. })
    ));
    assert_eq!(a.digest(), before, "a refused commit changes nothing");
}

#[test]
fn an_invalid_row_refuses_the_whole_commit() {
    let mut a = replica(1, 1000);
    let bad = Op::Append(Event {
        at_ms: 0,
        kind: EventKind::Login,
        user: String::new(),
        target: "t".into(),
        detail: String::new(),
    });
    assert!(matches!(
        a.commit(0, vec![event(1), bad]),
        Err(CommitError::Row(RowError::Empty { field: "user" }))
    ));
    assert_eq!(a.digest(), Digest::default());
}

#[test]
fn out_of_order_changes_are_refused_as_a_gap_then_accepted_in_order() {
    let mut a = replica(1, 1000);
    let mut b = replica(2, 1000);
    let first = a.commit(0, vec![event(1)]).expect("commit").push;
    let second = a.commit(0, vec![event(2)]).expect("commit").push;
    assert!(matches!(
        b.apply(second[0].clone()),
        Err(ApplyError::Gap {
            have: 0,
            from: 2,
            ..
        })
    ));
    assert_eq!(
        b.digest(),
        Digest::default(),
        "state unchanged after a refusal"
    );
    apply_all(&mut b, &first);
    apply_all(&mut b, &second);
    apply_all(&mut b, &second); // duplicate: a no-op
    assert_eq!(a.digest(), b.digest());
    assert_eq!(b.rows(TableId::Events).expect("rows").len(), 2);
}

#[test]
fn a_change_authored_by_another_actor_is_refused() {
    // Writer 3 builds a document whose change is authored under writer 1's actor id and signs
    // a head for its own segment: the signature is valid, the authorship is not.
    let owner = WriterId::from_key(&key(3).verifying_key());
    let mut doc = Automerge::new().with_actor(WriterId::from_key(&key(1).verifying_key()).actor());
    let mut tx = doc.transaction();
    let list = tx.put_object(ROOT, "rows", ObjType::List).expect("put");
    let row = Row::Event(Event {
        at_ms: 0,
        kind: EventKind::Login,
        user: "u".into(),
        target: "t".into(),
        detail: String::new(),
    });
    tx.insert(&list, 0, ScalarValue::Bytes(row.encode()))
        .expect("insert");
    tx.commit();
    let change = doc.get_changes(&[]).pop().expect("change");
    let head = Head {
        cluster: CLUSTER,
        key: SegmentKey {
            table: TableId::Events,
            writer: owner,
            segment: 0,
        },
        seq: 1,
        rows: 1,
        sealed: false,
        hash: change.hash().0,
    }
    .sign(&key(3));
    let mut b = replica(2, 1000);
    let err = b
        .apply(SyncItem::Changes {
            head: head.clone(),
            changes: vec![change.raw_bytes().to_vec()],
        })
        .unwrap_err();
    assert!(matches!(err, ApplyError::NotOwner { .. }), "{err}");
    let err = b
        .apply(SyncItem::Snapshot {
            head,
            doc: doc.save(),
        })
        .unwrap_err();
    assert!(matches!(err, ApplyError::NotOwner { .. }), "{err}");
    assert_eq!(b.digest(), Digest::default());
}

#[test]
fn a_head_signed_by_another_node_is_refused() {
    let mut a = replica(1, 1000);
    let mut b = replica(2, 1000);
    let push = a.commit(0, vec![event(1)]).expect("commit").push;
    let SyncItem::Changes { head, changes } = push[0].clone() else {
        panic!("not changes")
    };
    let forged = head.head.clone().sign(&key(9));
    assert!(matches!(
        b.apply(SyncItem::Changes {
            head: forged,
            changes
        }),
        Err(ApplyError::Head(HeadError::BadSignature { .. }))
    ));
    let other_cluster = Replica::new(ClusterId([7; 16]), key(2), ReplicaConfig::default());
    let mut other_cluster = other_cluster;
    assert!(matches!(
        other_cluster.apply(push[0].clone()),
        Err(ApplyError::Head(HeadError::WrongCluster { .. }))
    ));
}

#[test]
fn tampered_change_bytes_are_refused() {
    let mut a = replica(1, 1000);
    let push = a.commit(0, vec![event(1)]).expect("commit").push;
    let SyncItem::Changes { head, changes } = push[0].clone() else {
        panic!("not changes")
    };
    for i in 0..changes[0].len() {
        let mut bad = changes[0].clone();
        bad[i] ^= 0x40;
        let mut b = replica(2, 1000);
        assert!(
            b.apply(SyncItem::Changes {
                head: head.clone(),
                changes: vec![bad],
            })
            .is_err(),
            "flip at byte {i} accepted"
        );
        assert_eq!(b.digest(), Digest::default());
    }
}

#[test]
fn log_segments_seal_at_the_bound_and_peers_catch_up_from_the_digest() {
    let mut a = replica(1, 10);
    let mut b = replica(2, 10);
    // b sees the first few pushes, then is cut off while a seals two segments.
    apply_all(
        &mut b,
        &a.commit(0, (0..4).map(event).collect()).expect("c").push,
    );
    a.commit(0, (4..25).map(event).collect()).expect("c");
    let stats = a.stats();
    assert_eq!(stats.segments, 3);
    assert_eq!(stats.live, 1, "sealed segments are held as bytes");
    let (items, more) = a.missing_for(&b.digest(), usize::MAX).expect("missing");
    assert!(!more);
    // b holds part of segment 0: it gets only the changes after its head there.
    assert!(matches!(items[0], SyncItem::Changes { .. }));
    assert!(matches!(items[1], SyncItem::Snapshot { .. }));
    let effects = apply_all(&mut b, &items);
    assert_eq!(effects.rows.len(), 21, "exactly the missing rows arrive");
    assert_eq!(a.digest(), b.digest());
    assert_eq!(
        a.rows(TableId::Events).expect("rows"),
        b.rows(TableId::Events).expect("rows")
    );
    assert_eq!(b.stats().live, 1);
}

#[test]
fn changes_waiting_for_a_batched_apply_are_served_read_and_sealed() {
    // Compaction far away: b holds a's single-event changes checked but not yet applied.
    let config = ReplicaConfig {
        seal_rows: NonZeroU64::new(25).unwrap_or(NonZeroU64::MIN),
        compact_after: NonZeroU64::new(1000).unwrap_or(NonZeroU64::MIN),
    };
    let [mut a, mut b, mut c] = [1, 2, 3].map(|n| {
        let mut r = Replica::new(CLUSTER, key(n), config.clone());
        r.set_writers(roster());
        r
    });
    for i in 0..40 {
        let e = a.commit(0, vec![event(i)]).expect("commit");
        let applied = apply_all(&mut b, &e.push);
        assert_eq!(applied.rows.len(), 1);
        if i == 9 {
            // c learns the first ten from b, which serves them from its pending changes.
            sync_pair(&mut b, &mut c);
            assert_eq!(c.rows(TableId::Events).expect("rows").len(), 10);
        }
    }
    // b sealed segment 0 at 25 rows with every pending change in it.
    assert_eq!((b.stats().segments, b.stats().live), (2, 1));
    // c gets the rest of segment 0 as changes after its head, and segment 1.
    sync_pair(&mut b, &mut c);
    assert_eq!(a.digest(), c.digest());
    assert_eq!(
        a.rows(TableId::Events).expect("rows"),
        c.rows(TableId::Events).expect("rows")
    );
    assert_eq!(
        b.rows(TableId::Events).expect("rows"),
        c.rows(TableId::Events).expect("rows")
    );
}

#[test]
fn a_replica_restored_from_its_persist_effects_is_identical() {
    let mut a = replica(1, 10);
    let mut b = replica(2, 10);
    let mut stored: std::collections::BTreeMap<SegmentKey, StoredSegment> = Default::default();
    let mut record = |effects: &Effects| {
        for p in &effects.persist {
            match p {
                Persist::Snapshot { head, doc } => {
                    stored.insert(
                        head.head.key,
                        StoredSegment {
                            head: head.clone(),
                            snapshot: Some(doc.clone()),
                            changes: Vec::new(),
                        },
                    );
                }
                Persist::Append { head, changes } => {
                    let s = stored.entry(head.head.key).or_insert(StoredSegment {
                        head: head.clone(),
                        snapshot: None,
                        changes: Vec::new(),
                    });
                    s.head = head.clone();
                    s.changes.extend(changes.iter().cloned());
                }
            }
        }
    };
    for i in 0..12 {
        let e = a.commit(0, vec![event(i), event(i + 100)]).expect("commit");
        let applied = apply_all(&mut b, &e.push);
        record(&applied);
    }
    let restored = Replica::restore(
        CLUSTER,
        key(2),
        ReplicaConfig::default(),
        stored.into_values(),
    )
    .expect("restore");
    assert_eq!(restored.digest(), b.digest(), "history is restored unasked");
    assert_eq!(restored.accepted_digest().segments.len(), 0, "until told");
    assert_eq!(
        restored.rows(TableId::Events).expect("rows"),
        b.rows(TableId::Events).expect("rows")
    );
}

#[derive(Debug, Clone)]
struct Msg {
    to: usize,
    item: SyncItem,
}

/// Runs a random schedule: commits everywhere, pushes delivered late, twice, out of order or
/// not at all, partitions that restrict both push and anti-entropy, then a heal.
fn run_schedule(nodes: usize, seed: u64, steps: usize) -> Vec<Replica> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut replicas: Vec<Replica> = (0..nodes).map(|i| replica(i as u8 + 1, 6)).collect();
    let mut inflight: Vec<Msg> = Vec::new();
    let mut side: Vec<usize> = vec![0; nodes];
    for step in 0..steps {
        match rng.gen_range(0..10) {
            0..=3 => {
                let n = rng.gen_range(0..nodes);
                let mut ops: Vec<Op> = (0..rng.gen_range(1..4))
                    .map(|i| event(step as u64 * 10 + i))
                    .collect();
                if rng.gen_bool(0.3) {
                    ops.push(Op::ObserveFingerprint {
                        host: format!("h{}", rng.gen_range(0..3)),
                        key_type: KeyType::SshEd25519,
                        fingerprint: "SHA256:f".into(),
                        at_ms: step as i64,
                    });
                }
                if rng.gen_bool(0.2) {
                    ops.push(Op::PutException(UserDataException {
                        user: format!("u{}", rng.gen_range(0..3)),
                        field: "f".into(),
                        value: format!("{step}"),
                        at_ms: step as i64,
                    }));
                }
                let effects = replicas[n].commit(step as i64, ops).expect("commit");
                for item in effects.push {
                    for to in (0..nodes).filter(|&to| to != n && side[to] == side[n]) {
                        inflight.push(Msg {
                            to,
                            item: item.clone(),
                        });
                    }
                }
            }
            4..=6 if !inflight.is_empty() => {
                // Deliver a random in-flight message (reordering); sometimes keep a copy
                // (duplication); a gap or a duplicate is refused or ignored, never fatal.
                let i = rng.gen_range(0..inflight.len());
                let msg = if rng.gen_bool(0.2) {
                    inflight[i].clone()
                } else {
                    inflight.swap_remove(i)
                };
                match replicas[msg.to].apply(msg.item) {
                    Ok(_) | Err(ApplyError::Gap { .. }) => {}
                    Err(e) => panic!("unexpected refusal: {e}"),
                }
            }
            7 if !inflight.is_empty() => {
                let i = rng.gen_range(0..inflight.len());
                inflight.swap_remove(i); // loss
            }
            8 => {
                // Re-partition into up to three sides; in-flight messages across sides are lost.
                for s in side.iter_mut() {
                    *s = rng.gen_range(0..3);
                }
                inflight.retain(|_| rng.gen_bool(0.5));
            }
            _ => {
                let a = rng.gen_range(0..nodes);
                let b = rng.gen_range(0..nodes);
                if a != b && side[a] == side[b] {
                    let (x, y) = pair(&mut replicas, a, b);
                    sync_pair(x, y);
                }
            }
        }
    }
    // Heal: anti-entropy in a ring, twice around, reaches everyone.
    for _ in 0..2 {
        for a in 0..nodes {
            let b = (a + 1) % nodes;
            let (x, y) = pair(&mut replicas, a, b);
            sync_pair(x, y);
        }
    }
    replicas
}

fn pair(v: &mut [Replica], a: usize, b: usize) -> (&mut Replica, &mut Replica) {
    if a < b {
        let (l, r) = v.split_at_mut(b);
        (&mut l[a], &mut r[0])
    } else {
        let (l, r) = v.split_at_mut(a);
        (&mut r[0], &mut l[b])
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn any_delivery_order_converges_and_rows_stay_with_their_writer(
        nodes in 3usize..=7,
        seed in any::<u64>(),
        steps in 20usize..160,
    ) {
        let replicas = run_schedule(nodes, seed, steps);
        let digest = replicas[0].digest();
        for table in TableId::ALL {
            let rows = replicas[0].rows(table).expect("rows");
            for r in &replicas[1..] {
                prop_assert_eq!(&r.digest(), &digest);
                prop_assert_eq!(&r.rows(table).expect("rows"), &rows);
            }
            // Every row under writer X is one X itself holds in its own segments.
            for (key, row) in &rows {
                let owner = replicas
                    .iter()
                    .find(|r| r.writer() == key.writer)
                    .expect("writer is a replica");
                let own = owner.rows(table).expect("rows");
                prop_assert!(own.iter().any(|(k, r)| k == key && r == row));
            }
        }
    }
}

mod roster;
mod rotations;
