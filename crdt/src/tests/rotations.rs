//! Credential rotations through real replicas: concurrent rotations on two sides of a cut
//! replicate, are both kept and show as a conflict; a later rotation settles it; garbage rows
//! are refused.

use proptest::prelude::*;

use super::{replica, sync_pair};
use crate::rotation::{self, Account, Hlc, Rotation, RotationKind};
use crate::*;

const ADDRESS: &str = "ns1/db-01/root";

fn account(r: &Replica) -> Account {
    let rows = r
        .rows(TableId::Rotations)
        .expect("rows")
        .into_iter()
        .filter_map(|(k, row)| match row {
            Row::Rotation(x) => Some((k.writer, x)),
            _ => None,
        });
    rotation::accounts(rows).remove(ADDRESS).unwrap_or_default()
}

/// Rotates as a node does: the next HLC past what it holds, what it has seen, its old
/// rotations past the retention deleted in the same commit.
fn rotate(r: &mut Replica, now: i64) -> Hlc {
    let acc = account(r);
    let hlc = Hlc::next(now, acc.newest());
    let me = r.writer();
    let mut ops = vec![Op::PutRotation(Rotation {
        address: ADDRESS.into(),
        hlc,
        seen: acc.seen_by(&me),
        sealed: vec![7; 41],
        at_ms: now,
        reason: String::new(),
        user: "local operator".into(),
        how: RotationKind::Generated,
    })];
    ops.extend(acc.expired(&me).into_iter().map(|hlc| Op::DeleteRotation {
        address: ADDRESS.into(),
        hlc,
    }));
    r.commit(now, ops).expect("commit");
    hlc
}

#[test]
fn rotations_on_both_sides_of_a_cut_are_kept_as_a_conflict_until_one_settles_them() {
    let mut a = replica(1, 1000);
    let mut b = replica(2, 1000);
    let mut c = replica(3, 1000);
    rotate(&mut a, 10);
    sync_pair(&mut a, &mut b);
    sync_pair(&mut a, &mut c);
    // The cut: a alone, b and c together.
    rotate(&mut a, 20);
    rotate(&mut b, 20);
    sync_pair(&mut b, &mut c);
    rotate(&mut c, 30);
    assert!(!account(&c).in_conflict(), "c saw b's rotation");
    // The heal.
    sync_pair(&mut a, &mut b);
    sync_pair(&mut b, &mut c);
    sync_pair(&mut a, &mut b);
    for r in [&a, &b, &c] {
        let acc = account(r);
        assert_eq!(acc.rotations.len(), 4, "no rotation lost");
        assert_eq!(acc.heads().len(), 2, "a's and c's rotations are concurrent");
    }
    assert_eq!(account(&a).current(), account(&c).current());
    rotate(&mut a, 40);
    sync_pair(&mut a, &mut b);
    sync_pair(&mut b, &mut c);
    sync_pair(&mut a, &mut b);
    for r in [&a, &b, &c] {
        assert!(!account(r).in_conflict());
        assert_eq!(account(r).current().map(|(w, _)| *w), Some(a.writer()));
    }
}

#[test]
fn retention_deletes_only_the_writers_own_old_rotations_everywhere() {
    let mut a = replica(1, 1000);
    let mut b = replica(2, 1000);
    rotate(&mut b, 1);
    for i in 0..(rotation::RETAIN_PER_WRITER as i64 + 4) {
        rotate(&mut a, 10 + i);
    }
    sync_pair(&mut a, &mut b);
    for r in [&a, &b] {
        let acc = account(r);
        let own = acc
            .rotations
            .iter()
            .filter(|(w, _)| *w == a.writer())
            .count();
        assert_eq!(own, rotation::RETAIN_PER_WRITER);
        assert_eq!(acc.rotations.len(), rotation::RETAIN_PER_WRITER + 1);
    }
}

#[test]
fn a_rotation_row_round_trips_and_a_duplicate_version_is_refused() {
    let mut a = replica(1, 1000);
    let r = Rotation {
        address: ADDRESS.into(),
        hlc: Hlc { ms: 5, counter: 2 },
        seen: vec![(WriterId([9; 32]), Hlc { ms: 4, counter: 0 })],
        sealed: vec![1; 41],
        at_ms: 5,
        reason: "why".into(),
        user: "user ada".into(),
        how: RotationKind::Set,
    };
    let row = Row::Rotation(r.clone());
    assert_eq!(
        Row::decode(TableId::Rotations, &row.encode()),
        Ok(row.clone())
    );
    assert_eq!(row.key().as_deref(), Some("ns1/db-01/root 5.2"));
    a.commit(5, vec![Op::PutRotation(r.clone())])
        .expect("commit");
    let before = a.digest();
    assert!(a.commit(6, vec![Op::PutRotation(r)]).is_err());
    assert_eq!(a.digest(), before, "a refused commit changes nothing");
}

proptest! {
    #[test]
    fn garbage_rotation_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = Row::decode(TableId::Rotations, &bytes);
    }
}
