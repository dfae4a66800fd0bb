use ed25519_dalek::SigningKey;

use super::*;
use crate::ClusterId;
use crate::mastered::{Endorsement, Member, Roster};

fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

fn pk(n: u8) -> [u8; 32] {
    key(n).verifying_key().to_bytes()
}

fn anchor() -> TrustAnchor {
    TrustAnchor {
        cluster: ClusterId([7; 16]),
        genesis_leader: pk(1),
    }
}

fn roster(seeds: impl IntoIterator<Item = u8>) -> Roster {
    Roster {
        members: seeds
            .into_iter()
            .map(|n| Member {
                key: pk(n),
                address: format!("pam{n}.example"),
            })
            .collect(),
    }
}

/// A chain being written: its verified state and its records.
#[derive(Clone)]
struct Writer {
    chain: Chain,
    records: Vec<SignedRecord>,
}

impl Writer {
    /// Genesis by node 1 with roster `members`.
    fn genesis(members: impl IntoIterator<Item = u8>) -> Writer {
        let mut w = Writer {
            chain: Chain::new(anchor()),
            records: Vec::new(),
        };
        w.sign(1, RecordKind::Genesis, roster(members).encode());
        w
    }

    fn sign(&mut self, signer: u8, kind: RecordKind, payload: Vec<u8>) {
        let record = self.chain.sign_next(&key(signer), kind, payload);
        let verified = self
            .chain
            .verify(&record)
            .expect("the test writes valid records");
        self.chain
            .apply(verified)
            .expect("verified against this state");
        self.records.push(record);
    }

    /// A record that does not verify, appended as is (a forged chain).
    fn push_unverified(&mut self, signer: u8, kind: RecordKind, payload: Vec<u8>) {
        let record = self.chain.sign_next(&key(signer), kind, payload);
        self.records.push(record);
    }

    fn config(&mut self, signer: u8, what: &str) {
        self.sign(signer, RecordKind::Config, what.as_bytes().to_vec());
    }

    /// A hand-over to `next`, signed by `signer`, endorsed by `endorsers`.
    fn handover(&mut self, signer: u8, next: u8, endorsers: &[u8], forced: bool) {
        let candidacy = self.chain.candidacy(pk(next));
        let payload = Handover {
            next_epoch: candidacy.next_epoch,
            next_leader: pk(next),
            endorsements: endorsers
                .iter()
                .map(|n| Endorsement::sign(&key(*n), &candidacy))
                .collect(),
            forced,
        }
        .encode();
        self.sign(signer, RecordKind::Handover, payload);
    }
}

#[test]
fn a_former_leader_restored_from_an_old_copy_cannot_undo_its_hand_over() {
    // The first attack: node 1 leads, hands over to node 2 with a majority; node 2
    // takes a grant back. Node 1, restarted from a copy of its data taken before the
    // hand-over, writes a config record in epoch 1 (the old grant back).
    let mut before = Writer::genesis(1..=3);
    before.config(1, "grant alice root");
    let mut real = before.clone();
    real.handover(1, 2, &[1, 2], false);
    real.config(2, "revoke alice root");
    let mut restored = before.clone();
    restored.config(1, "grant alice root again");

    let kept = choose(anchor(), &real.records, &restored.records).expect("both verify");
    assert_eq!(kept.keep, Keep::Ours);
    assert_eq!(
        (kept.ours.standing, kept.theirs.standing),
        (Standing::Majority, Standing::Unfenced)
    );
    assert_eq!(kept.common, 2);
    assert_eq!(
        kept.equivocations,
        vec![Equivocation::Leader {
            signer: pk(1),
            epoch: 1,
            version: 3,
            hashes: [real.records[2].hash(), restored.records[2].hash()],
        }]
    );
    // The restored node itself gives way to the chain the majority followed.
    let yields = choose(anchor(), &restored.records, &real.records).expect("both verify");
    assert_eq!(yields.keep, Keep::Theirs);
}

#[test]
fn an_offline_hand_over_or_a_chain_of_hand_overs_to_itself_does_not_verify() {
    let mut before = Writer::genesis(1..=3);
    before.config(1, "x");
    let mut real = before.clone();
    real.handover(1, 2, &[1, 2], false);
    // The old leader alone, offline: a hand-over to node 3 without node 3's consent.
    let mut offline = before.clone();
    offline.config(1, "y");
    offline.push_unverified(
        1,
        RecordKind::Handover,
        Handover {
            next_epoch: 2,
            next_leader: pk(3),
            endorsements: Vec::new(),
            forced: false,
        }
        .encode(),
    );
    let refused = choose(anchor(), &real.records, &offline.records).expect_err("forged");
    assert!(matches!(
        refused,
        ForkError::Theirs(RebuildError { index: 3, .. })
    ));
    // The second attack: hand-overs from node 1 to itself up to epoch 12.
    let mut selfish = before.clone();
    let candidacy = selfish.chain.candidacy(pk(1));
    selfish.push_unverified(
        1,
        RecordKind::Handover,
        Handover {
            next_epoch: 2,
            next_leader: pk(1),
            endorsements: vec![Endorsement::sign(&key(1), &candidacy)],
            forced: false,
        }
        .encode(),
    );
    let refused = choose(anchor(), &real.records, &selfish.records).expect_err("forged");
    assert!(matches!(
        refused,
        ForkError::Theirs(RebuildError { index: 2, .. })
    ));
}

#[test]
fn a_higher_epoch_reached_on_a_roster_of_its_own_making_never_wins() {
    let mut before = Writer::genesis(1..=3);
    let mut real = before.clone();
    real.handover(1, 2, &[1, 2], false);
    real.config(2, "revoke");
    // Node 1 from an old copy: a roster of itself and two keys it holds, then hand-overs
    // among them, each endorsed by a "majority" of that roster, up to epoch 4.
    before.sign(1, RecordKind::Roster, roster([1, 8, 9]).encode());
    before.handover(1, 8, &[1, 8], false);
    before.handover(8, 9, &[8, 9], false);
    assert_eq!(before.chain.epoch(), 3);
    let kept = choose(anchor(), &real.records, &before.records).expect("both verify");
    assert_eq!(kept.keep, Keep::Ours);
    // Node 1 endorsed node 2 and node 8 for epoch 2: it counts for neither. Node 2 still
    // supports the real hand-over; no member of the roster at the fork supports the other.
    assert_eq!((kept.ours.support, kept.theirs.support), (1, 0));
    assert!(kept.equivocations.contains(&Equivocation::Endorser {
        endorser: pk(1),
        epoch: 2
    }));
    let yields = choose(anchor(), &before.records, &real.records).expect("both verify");
    assert_eq!(yields.keep, Keep::Theirs);
}

#[test]
fn the_majority_sides_failover_wins_over_a_minority_leader_that_kept_writing() {
    let mut before = Writer::genesis(1..=5);
    before.config(1, "a");
    let mut minority = before.clone();
    minority.config(1, "written alone during the cut");
    minority.config(1, "and another");
    let mut majority = before.clone();
    majority.handover(3, 3, &[2, 3, 4], false);
    majority.config(3, "b");

    let from_minority = choose(anchor(), &minority.records, &majority.records).expect("verify");
    assert_eq!(from_minority.keep, Keep::Theirs);
    assert_eq!(from_minority.equivocations, Vec::new());
    let from_majority = choose(anchor(), &majority.records, &minority.records).expect("verify");
    assert_eq!(from_majority.keep, Keep::Ours);
}

#[test]
fn a_forced_failover_of_a_pair_wins_over_the_leader_that_kept_writing() {
    let mut before = Writer::genesis(1..=2);
    before.sign(1, RecordKind::Roster, roster(1..=2).encode());
    let mut leader = before.clone();
    leader.config(1, "alone");
    let mut forced = before.clone();
    forced.handover(2, 2, &[2], true);
    let kept = choose(anchor(), &leader.records, &forced.records).expect("verify");
    assert_eq!(kept.keep, Keep::Theirs);
    assert_eq!(
        (kept.ours.standing, kept.theirs.standing),
        (Standing::Unfenced, Standing::Forced)
    );
    // But a planned hand-over the pair made together beats a forced one from before it.
    let mut planned = before.clone();
    planned.handover(1, 2, &[1, 2], false);
    let mut restored = before.clone();
    restored.handover(2, 2, &[2], true);
    let kept = choose(anchor(), &planned.records, &restored.records).expect("verify");
    assert_eq!(kept.keep, Keep::Ours);
}

#[test]
fn a_member_that_endorsed_two_candidates_counts_for_neither_and_is_reported() {
    // Node 1 endorsed node 2 on one branch and node 3 on another, for epoch 2.
    let before = Writer::genesis(1..=3);
    let mut a = before.clone();
    a.handover(1, 2, &[1, 2], false);
    let mut b = before.clone();
    b.config(1, "x");
    b.handover(1, 3, &[1, 3], false);
    let kept = choose(anchor(), &a.records, &b.records).expect("verify");
    assert_eq!(
        (kept.ours, kept.theirs),
        (
            Branch {
                standing: Standing::Unfenced,
                support: 1
            },
            Branch {
                standing: Standing::Unfenced,
                support: 1
            }
        )
    );
    assert_eq!(kept.keep, Keep::Ours);
    assert!(kept.equivocations.contains(&Equivocation::Endorser {
        endorser: pk(1),
        epoch: 2
    }));
    assert_eq!(
        choose(anchor(), &b.records, &a.records)
            .expect("verify")
            .keep,
        Keep::Ours
    );
}

#[test]
fn a_chain_that_extends_ours_is_taken_and_a_shorter_one_is_not() {
    let mut short = Writer::genesis(1..=3);
    short.config(1, "a");
    let mut long = short.clone();
    long.config(1, "b");
    let ahead = choose(anchor(), &short.records, &long.records).expect("verify");
    assert_eq!((ahead.keep, ahead.common), (Keep::Theirs, 2));
    let behind = choose(anchor(), &long.records, &short.records).expect("verify");
    assert_eq!(behind.keep, Keep::Ours);
}

#[test]
fn a_chain_that_does_not_verify_is_refused_naming_the_record() {
    let mut ours = Writer::genesis(1..=3);
    ours.config(1, "a");
    let mut theirs = ours.clone();
    theirs.push_unverified(2, RecordKind::Config, b"not the leader".to_vec());
    let refused = choose(anchor(), &ours.records, &theirs.records).expect_err("forged");
    assert!(matches!(
        refused,
        ForkError::Theirs(RebuildError { index: 2, .. })
    ));
}
