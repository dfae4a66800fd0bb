//! Only the roster's writers: rows of any other writer are refused and not stored, a member
//! that joins later is taken once known, and a removed member's history stays readable.

use super::*;

/// Everything `from` holds, as a peer holding nothing would get it.
fn everything(from: &Replica) -> Vec<SyncItem> {
    from.missing_for(&Digest::default(), usize::MAX)
        .expect("missing")
        .0
}

#[test]
fn rows_under_a_made_up_writer_are_refused_and_not_stored() {
    // A member makes up a key and signs rows under it: the signature is valid, the writer is
    // nobody the roster knows.
    let mut phantom = replica(20, 1000);
    let pushed = phantom
        .commit(0, vec![event(1), event(2)])
        .expect("commit")
        .push;
    let mut b = replica(2, 1000);
    for item in pushed.iter().chain(&everything(&phantom)) {
        assert_eq!(
            b.apply(item.clone()),
            Err(ApplyError::UnknownWriter {
                key: item.head().head.key
            })
        );
    }
    assert_eq!(b.digest(), Digest::default(), "nothing stored");
    assert!(b.rows(TableId::Events).expect("rows").is_empty());
}

#[test]
fn rows_of_a_member_that_joins_later_are_taken_once_the_roster_admits_it() {
    let mut joiner = replica(9, 1000);
    let pushed = joiner.commit(0, vec![event(1)]).expect("commit").push;
    let mut b = replica(2, 1000);
    assert!(matches!(
        b.apply(pushed[0].clone()),
        Err(ApplyError::UnknownWriter { .. })
    ));
    // The roster record arrives; the same rows come again (anti-entropy) and are taken.
    b.set_writers(roster().chain([writer(9)]));
    let (items, _) = joiner
        .missing_for(&b.digest(), usize::MAX)
        .expect("missing");
    apply_all(&mut b, &items);
    assert_eq!(b.accepted_digest(), joiner.digest());
}

#[test]
fn a_removed_writers_rows_stay_readable_but_its_new_heads_are_refused_and_not_offered() {
    let mut a = replica(1, 1000);
    let mut b = replica(2, 1000);
    apply_all(&mut b, &a.commit(0, vec![event(1)]).expect("commit").push);
    b.commit(0, vec![event(2)]).expect("commit");
    let without_a = || roster().filter(|w| *w != writer(1));
    b.set_writers(without_a());

    let later = a.commit(0, vec![event(3)]).expect("commit").push;
    assert!(matches!(
        b.apply(later[0].clone()),
        Err(ApplyError::UnknownWriter { .. })
    ));
    // History: still held and readable, but neither advertised nor offered.
    assert_eq!(b.rows(TableId::Events).expect("rows").len(), 2);
    assert_eq!(b.digest().segments.len(), 2);
    assert_eq!(b.accepted_digest().segments.len(), 1);
    let mut c = replica(3, 1000);
    c.set_writers(without_a());
    sync_pair(&mut b, &mut c);
    assert_eq!(
        c.digest(),
        b.accepted_digest(),
        "only b's own rows reached c"
    );
    assert_eq!(c.accepted_digest(), b.accepted_digest());
}

#[test]
fn segments_past_the_bound_are_refused_and_a_full_log_refuses_the_whole_commit() {
    let mut a = replica(1, 1);
    let too_many = (0..u64::from(MAX_SEGMENTS_PER_WRITER) + 1)
        .map(event)
        .collect();
    assert_eq!(
        a.commit(0, too_many),
        Err(CommitError::LogFull {
            max: MAX_SEGMENTS_PER_WRITER
        })
    );
    assert_eq!(a.stats().segments, 0, "nothing committed");

    // A member signs heads for a log segment past the bound and for a second map segment.
    let pushed = a.commit(0, vec![event(1)]).expect("commit").push;
    let mut b = replica(2, 1);
    for (table, segment) in [
        (TableId::Events, MAX_SEGMENTS_PER_WRITER),
        (TableId::Exceptions, 1),
    ] {
        let SyncItem::Changes { head, changes } = pushed[0].clone() else {
            panic!("not changes")
        };
        let moved = SegmentKey {
            table,
            segment,
            ..head.head.key
        };
        let head = Head {
            key: moved,
            ..head.head
        }
        .sign(&key(1));
        assert!(matches!(
            b.apply(SyncItem::Changes { head, changes }),
            Err(ApplyError::SegmentOutOfRange { .. })
        ));
    }
    assert_eq!(b.digest(), Digest::default());
}

#[test]
fn a_removed_writers_rows_up_to_its_frontier_reach_a_node_that_was_behind_and_no_further() {
    let without_a = || roster().filter(|w| *w != writer(1));
    let mut a = replica(1, 1000);
    let mut leader = replica(2, 1000);
    let mut relay = replica(3, 1000);
    let mut behind = replica(4, 1000);
    // a writes; the leader and the relay get it, `behind` is cut off.
    let first = a.commit(0, vec![event(1), event(2)]).expect("commit").push;
    let fingerprint = a
        .commit(
            0,
            vec![Op::ObserveFingerprint {
                host: "db-01".into(),
                key_type: KeyType::SshEd25519,
                fingerprint: "SHA256:x".into(),
                at_ms: 0,
            }],
        )
        .expect("commit")
        .push;
    for r in [&mut leader, &mut relay] {
        apply_all(r, &first);
        apply_all(r, &fingerprint);
    }
    // The leader removes a: the roster record carries the frontier the leader holds.
    let frontier = leader.frontier_of(writer(1));
    assert_eq!(frontier.segments.len(), 2, "{frontier:?}");
    // a keeps writing with its key; the relay takes it before it learns of the removal.
    let beyond = a.commit(0, vec![event(3)]).expect("commit").push;
    apply_all(&mut relay, &beyond);
    for r in [&mut leader, &mut relay, &mut behind] {
        r.set_writers(without_a());
        r.set_frontiers([&frontier]);
    }
    // Beyond the frontier: refused by everyone, counted by its kind, not stored.
    for r in [&mut leader, &mut behind] {
        let before = r.digest();
        let a_log = everything(&a)
            .into_iter()
            .filter(|i| i.head().head.key.table == TableId::Events);
        for item in beyond.iter().cloned().chain(a_log) {
            let refused = r.apply(item);
            assert!(
                matches!(refused, Err(ApplyError::BeyondFrontier { .. })),
                "{refused:?}"
            );
        }
        assert_eq!(r.digest(), before, "nothing stored");
    }
    // The relay holds a's rows beyond the frontier (history) but does not offer them; it
    // advertises the frontier its chain passes through, so it agrees with the leader (and
    // does not sync with it for ever). `behind` gets a's rows up to the frontier from the
    // leader.
    assert_eq!(relay.accepted_digest(), leader.accepted_digest());
    assert_ne!(relay.digest(), leader.digest());
    sync_pair(&mut relay, &mut behind);
    assert!(
        !behind
            .digest()
            .segments
            .iter()
            .any(|s| s.key.writer == writer(1) && s.key.table == TableId::Events),
        "nothing of a's log from the relay, which holds it beyond the frontier"
    );
    sync_pair(&mut leader, &mut behind);
    let held: Vec<SegmentState> = behind
        .digest()
        .segments
        .into_iter()
        .filter(|s| s.key.writer == writer(1))
        .collect();
    assert_eq!(held, frontier.states().collect::<Vec<_>>());
    let a_rows = |r: &Replica| {
        r.rows(TableId::Events)
            .expect("rows")
            .into_iter()
            .filter(|(k, _)| k.writer == writer(1))
            .count()
    };
    assert_eq!(
        a_rows(&behind),
        2,
        "rows written before the removal arrived"
    );
    assert_eq!(a_rows(&relay), 3, "history held");
    assert_eq!(behind.accepted_digest(), leader.accepted_digest());
}
