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
