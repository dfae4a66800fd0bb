use proptest::prelude::*;

use super::*;

const A: WriterId = WriterId([1; 32]);
const B: WriterId = WriterId([2; 32]);
const C: WriterId = WriterId([3; 32]);

fn hlc(ms: i64, counter: u32) -> Hlc {
    Hlc { ms, counter }
}

pub(crate) fn rotation(hlc: Hlc, seen: Vec<(WriterId, Hlc)>) -> Rotation {
    Rotation {
        address: "ns1/db-01/root".into(),
        hlc,
        seen,
        sealed: vec![1; 41],
        at_ms: hlc.ms,
        reason: "scheduled".into(),
        user: "local operator".into(),
        how: RotationKind::Generated,
    }
}

/// Rotates `account` as `writer` at `now`, the way a node does: the next HLC past what it
/// holds, and what it has seen.
fn rotate(account: &mut Account, writer: WriterId, now: i64) -> Hlc {
    let h = Hlc::next(now, account.newest());
    let r = rotation(h, account.seen_by(&writer));
    account.rotations.push((writer, r));
    account.rotations.sort_by(order);
    h
}

#[test]
fn the_clock_moves_past_what_it_holds_and_never_back() {
    assert_eq!(Hlc::next(100, None), hlc(100, 0));
    assert_eq!(Hlc::next(100, Some(hlc(50, 7))), hlc(100, 0));
    // A clock behind a held rotation (ours before a restart with a clock set back, or a
    // peer's clock ahead) counts on from it.
    assert_eq!(Hlc::next(100, Some(hlc(100, 0))), hlc(100, 1));
    assert_eq!(Hlc::next(10, Some(hlc(100, 4))), hlc(100, 5));
    assert_eq!(Hlc::next(10, Some(hlc(100, u32::MAX))), hlc(101, 0));
    assert_eq!("100.5".parse::<Hlc>(), Ok(hlc(100, 5)));
    assert!("100".parse::<Hlc>().is_err() && "a.1".parse::<Hlc>().is_err());
}

#[test]
fn rotations_that_saw_each_other_are_no_conflict() {
    let mut acc = Account::default();
    rotate(&mut acc, A, 10);
    rotate(&mut acc, B, 20);
    rotate(&mut acc, A, 30);
    assert!(!acc.in_conflict());
    assert_eq!(acc.heads().len(), 1);
    assert_eq!(acc.current().map(|(w, _)| *w), Some(A));
}

#[test]
fn concurrent_rotations_are_a_conflict_until_one_sees_both() {
    let mut base = Account::default();
    rotate(&mut base, A, 10);
    // A cut: each side rotates without the other's rotation.
    let mut left = base.clone();
    let mut right = base.clone();
    let a = rotate(&mut left, A, 20);
    let b = rotate(&mut right, B, 20);
    let mut healed = left.clone();
    healed
        .rotations
        .extend(right.rotations[1..].iter().cloned());
    healed.rotations.sort_by(order);
    assert!(healed.in_conflict());
    let heads: Vec<(WriterId, Hlc)> = healed.heads().iter().map(|(w, r)| (*w, r.hlc)).collect();
    assert_eq!(heads, vec![(A, a), (B, b)]);
    // The current secret is the greatest (hlc, writer): the same on every node.
    assert_eq!(healed.current().map(|(w, _)| *w), Some(B));
    // A later rotation by a third node that holds both settles them.
    rotate(&mut healed, C, 15);
    assert!(!healed.in_conflict());
    assert_eq!(healed.current().map(|(w, _)| *w), Some(C));
}

#[test]
fn a_later_rotation_on_one_side_does_not_settle_what_it_has_not_seen() {
    let mut left = Account::default();
    let mut right = Account::default();
    rotate(&mut left, A, 10);
    rotate(&mut left, A, 30);
    rotate(&mut right, B, 20);
    let mut healed = left.clone();
    healed.rotations.extend(right.rotations.iter().cloned());
    healed.rotations.sort_by(order);
    assert!(healed.in_conflict(), "A's later rotation never saw B's");
}

#[test]
fn retention_keeps_the_newest_and_never_a_head() {
    let mut acc = Account::default();
    for i in 0..(RETAIN_PER_WRITER as i64 + 5) {
        rotate(&mut acc, A, i);
    }
    let mut other = Account::default();
    rotate(&mut other, B, 3);
    acc.rotations.extend(other.rotations);
    acc.rotations.sort_by(order);
    let expired = acc.expired(&A);
    assert_eq!(expired.len(), 6);
    let heads: Vec<(WriterId, Hlc)> = acc.heads().iter().map(|(w, r)| (*w, r.hlc)).collect();
    assert!(expired.iter().all(|h| !heads.contains(&(A, *h))));
    assert!(acc.expired(&B).is_empty());
    // Deleting them leaves the conflict exactly as it was.
    let before = acc.heads().len();
    acc.rotations
        .retain(|(w, r)| !(w == &A && expired.contains(&r.hlc)));
    assert_eq!(acc.heads().len(), before);
}

#[test]
fn what_was_seen_survives_the_deletion_of_old_rotations() {
    let mut acc = Account::default();
    rotate(&mut acc, A, 10);
    rotate(&mut acc, B, 20); // saw A's
    for i in 0..4 {
        rotate(&mut acc, B, 30 + i);
    }
    // B deletes all but its newest: A's rotation is still settled by it.
    let newest = acc.newest();
    acc.rotations
        .retain(|(w, r)| w == &A || Some(r.hlc) == newest);
    assert!(!acc.in_conflict());
}

#[test]
fn seen_is_bounded_to_the_newest_writers() {
    let mut acc = Account::default();
    for i in 0..(MAX_SEEN + 3) {
        let mut w = [0; 32];
        w[0] = i as u8 + 10;
        rotate(&mut acc, WriterId(w), i as i64);
    }
    let seen = acc.seen_by(&A);
    assert_eq!(seen.len(), MAX_SEEN);
    assert!(seen.windows(2).all(|p| p[0].0 < p[1].0));
    assert!(rotation(hlc(1, 0), seen).validate().is_ok());
}

#[test]
fn bad_rows_are_refused_naming_the_field() {
    let field = |r: Rotation| match r.validate() {
        Err(RotationError { field, .. }) => field,
        other => panic!("expected a refusal, got {other:?}"),
    };
    for address in [
        "ns1/db",
        "NS/db/root",
        "ns1/db/ro ot",
        "ns1/db/root/x",
        "",
        "ns1//root",
    ] {
        let mut r = rotation(hlc(1, 0), vec![]);
        r.address = address.into();
        assert_eq!(field(r), "address", "{address:?}");
    }
    let mut r = rotation(hlc(1, 0), vec![]);
    r.sealed = vec![0; MAX_SEALED + 1];
    assert_eq!(field(r), "sealed");
    let mut r = rotation(hlc(1, 0), vec![]);
    r.sealed.clear();
    assert_eq!(field(r), "sealed");
    let mut r = rotation(hlc(1, 0), vec![]);
    r.reason = "x".repeat(MAX_REASON + 1);
    assert_eq!(field(r), "reason");
    let mut r = rotation(hlc(1, 0), vec![]);
    r.reason = "a\nb".into();
    assert_eq!(field(r), "reason");
    let r = rotation(hlc(1, 0), vec![(B, hlc(1, 0)), (A, hlc(1, 0))]);
    assert_eq!(field(r), "seen");
    let r = rotation(hlc(-1, 0), vec![]);
    assert_eq!(field(r), "hlc");
    let mut r = rotation(hlc(1, 0), vec![]);
    r.user.clear();
    assert_eq!(field(r), "user");
}

proptest! {
    #[test]
    fn any_delivery_order_gives_the_same_current_and_conflicts(
        steps in proptest::collection::vec((0u8..3, 0i64..50, any::<bool>()), 1..20),
        shuffle in any::<u64>(),
    ) {
        // Three nodes rotate, sometimes syncing everything first.
        let writers = [A, B, C];
        let mut views = [Account::default(), Account::default(), Account::default()];
        let mut all: Vec<(WriterId, Rotation)> = Vec::new();
        for (who, now, sync) in steps {
            let i = usize::from(who);
            if sync {
                views[i] = accounts(all.clone()).remove("ns1/db-01/root").unwrap_or_default();
            }
            rotate(&mut views[i], writers[i], now);
            let mine = views[i].rotations.iter().filter(|(w, _)| *w == writers[i]).cloned();
            for r in mine {
                if !all.contains(&r) {
                    all.push(r);
                }
            }
        }
        let forward = accounts(all.clone());
        let mut reordered = all.clone();
        let n = reordered.len();
        reordered.rotate_left((shuffle as usize) % n);
        reordered.reverse();
        let backward = accounts(reordered);
        prop_assert_eq!(&forward, &backward);
        let acc = &forward["ns1/db-01/root"];
        // The current rotation is always a head.
        let current = acc.current().cloned();
        prop_assert!(acc.heads().iter().any(|h| Some((*h).clone()) == current));
    }
}
