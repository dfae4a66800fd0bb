//! The leadership oracles: never two leaders in one epoch, and never a rolled-back chain.
//!
//! Each node's stored mastered chain is replayed from its trust anchor with the real
//! [`Chain`] verification: epoch 1 is led by the anchor's genesis leader, and every hand-over
//! record names the leader of the next epoch. The leaders every node's chain names are merged
//! per epoch; an epoch with two is a split brain (two sides that each elected a leader, or a
//! node that endorsed two candidates). A stored chain that no longer verifies is a failure too.
//!
//! A chain is rolled back when a node gives up records that left an epoch by a hand-over a
//! majority endorsed: whatever a majority followed must stay. [`rolled_back`] checks each
//! chain a node replaces (the simulator calls it before it stores the adopted chain).

use std::collections::{BTreeMap, BTreeSet};

use meshward_crdt::fork::{self, Standing};
use meshward_crdt::mastered::{Chain, RecordKind, SignedRecord, TrustAnchor};

/// A public key: the leader of an epoch.
pub type Key = [u8; 32];

/// A trust anchor as a map key: cluster id and genesis leader.
type ChainKey = ([u8; 16], Key);

/// Epoch → leader → the nodes whose chain names it.
pub type Leaders = BTreeMap<u64, BTreeMap<Key, BTreeSet<u32>>>;

/// The leaders each epoch had, over every node's chain (records in version order, a slice or
/// a vector: each is read once, so a caller may load them one node at a time). Chains that do
/// not verify are reported in the second value.
pub fn leaders_per_epoch<R: AsRef<[SignedRecord]>>(
    chains: impl IntoIterator<Item = (u32, TrustAnchor, R)>,
) -> (Leaders, Vec<String>) {
    let mut leaders = Leaders::new();
    let mut failures = Vec::new();
    // Identical chains (the common case: 1 000 nodes holding one genesis) are replayed once.
    let mut replayed: BTreeMap<(ChainKey, Vec<Key>), Replay> = BTreeMap::new();
    for (node, anchor, records) in chains {
        let records = records.as_ref();
        let id = (anchor.cluster.0, anchor.genesis_leader);
        let key = (id, records.iter().map(|r| r.hash().0).collect());
        let replay = replayed
            .entry(key)
            .or_insert_with(|| replay(anchor, records));
        for (epoch, leader) in &replay.leaders {
            leaders
                .entry(*epoch)
                .or_default()
                .entry(*leader)
                .or_default()
                .insert(node);
        }
        if let Some(e) = &replay.failure {
            failures.push(format!("node {node}: {e}"));
        }
    }
    (leaders, failures)
}

/// The (epoch, leader) pairs a chain goes through, and where it stops verifying.
struct Replay {
    leaders: Vec<(u64, Key)>,
    failure: Option<String>,
}

fn replay(anchor: TrustAnchor, records: &[SignedRecord]) -> Replay {
    let mut chain = Chain::new(anchor);
    let mut leaders = vec![(chain.epoch(), chain.leader())];
    for record in records {
        let applied = chain
            .verify(record)
            .map_err(|e| e.to_string())
            .and_then(|v| chain.apply(v).map_err(|e| e.to_string()));
        if let Err(e) = applied {
            let failure = format!(
                "stored mastered record {} does not verify: {e}",
                record.record.version
            );
            return Replay {
                leaders,
                failure: Some(failure),
            };
        }
        leaders.push((chain.epoch(), chain.leader()));
    }
    Replay {
        leaders,
        failure: None,
    }
}

/// One failure per epoch that had more than one leader.
pub fn two_leaders(leaders: &Leaders) -> Vec<String> {
    leaders
        .iter()
        .filter(|(_, l)| l.len() > 1)
        .map(|(epoch, l)| {
            let who: Vec<String> = l
                .iter()
                .map(|(key, nodes)| format!("{} (per nodes {nodes:?})", hex8(key)))
                .collect();
            format!("epoch {epoch} has {} leaders: {}", l.len(), who.join(", "))
        })
        .collect()
}

/// A failure if `superseded` (the records a node gives up, after `kept` from genesis) left the
/// epoch at the fork point by a hand-over a majority of that point's roster endorsed.
pub fn rolled_back(
    anchor: TrustAnchor,
    kept: &[SignedRecord],
    superseded: &[SignedRecord],
) -> Option<String> {
    let base = match Chain::rebuild(anchor, kept) {
        Ok(base) => base,
        Err(e) => return Some(format!("the kept chain does not verify: {e}")),
    };
    let base_after = base.clone();
    if base_after.extended(superseded, kept.len()).is_err() {
        return None;
    }
    (fork::standing(&base, superseded) == Standing::Majority).then(|| {
        format!(
            "rolled back: versions {}..={} superseded, though they left epoch {} by a hand-over \
             a majority endorsed",
            kept.len() + 1,
            kept.len() + superseded.len(),
            base.epoch()
        )
    })
}

/// The payloads of the revocations among `records`.
pub fn revocations(records: &[SignedRecord]) -> impl Iterator<Item = Vec<u8>> + '_ {
    records
        .iter()
        .filter(|r| r.record.kind == RecordKind::Revocation)
        .map(|r| r.record.payload.clone())
}

/// How many of `given_up` (revocation payloads some node gave up with a losing branch) the
/// chain `held` does not carry: access a merge gave back. The winning leader signs them again
/// (the same payload), so after the heal every live node's chain must carry each.
pub fn revocations_missing(given_up: &BTreeSet<Vec<u8>>, held: &[SignedRecord]) -> u64 {
    given_up
        .iter()
        .filter(|p| {
            !held
                .iter()
                .any(|r| r.record.kind == RecordKind::Revocation && &r.record.payload == *p)
        })
        .count() as u64
}

fn hex8(key: &Key) -> String {
    key[..4].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;
    use meshward_crdt::ClusterId;
    use meshward_crdt::mastered::{Endorsement, Handover, Member, RecordKind, Roster};

    use super::*;

    fn key(i: u8) -> SigningKey {
        SigningKey::from_bytes(&[i + 1; 32])
    }

    fn anchor() -> TrustAnchor {
        TrustAnchor {
            cluster: ClusterId([7; 16]),
            genesis_leader: key(0).verifying_key().to_bytes(),
        }
    }

    /// Genesis (roster of 3, led by node 0), then a failover to `candidate` endorsed by
    /// `endorsers`: a chain that verifies.
    fn chain_electing(candidate: u8, endorsers: &[u8]) -> Vec<SignedRecord> {
        let roster = Roster {
            members: (0..3)
                .map(|i| Member {
                    key: key(i).verifying_key().to_bytes(),
                    address: format!("node-{i}.sim:7946"),
                })
                .collect(),
        };
        let mut chain = Chain::new(anchor());
        let genesis = chain.sign_next(&key(0), RecordKind::Genesis, roster.encode());
        chain.apply(chain.verify(&genesis).unwrap()).unwrap();
        let next = key(candidate).verifying_key().to_bytes();
        let candidacy = chain.candidacy(next);
        let handover = Handover {
            next_epoch: 2,
            next_leader: next,
            endorsements: endorsers
                .iter()
                .map(|&e| Endorsement::sign(&key(e), &candidacy))
                .collect(),
            forced: false,
        };
        let record = chain.sign_next(&key(candidate), RecordKind::Handover, handover.encode());
        chain.apply(chain.verify(&record).unwrap()).unwrap();
        vec![genesis, record]
    }

    #[test]
    fn nodes_that_agree_on_the_chain_give_one_leader_per_epoch() {
        let a = chain_electing(1, &[1, 2]);
        let (leaders, failures) = leaders_per_epoch([
            (0, anchor(), &a[..1]),
            (1, anchor(), &a[..]),
            (2, anchor(), &a[..]),
        ]);
        assert!(failures.is_empty(), "{failures:?}");
        assert!(two_leaders(&leaders).is_empty());
        assert_eq!(leaders.len(), 2);
        let epoch2: Vec<&Key> = leaders[&2].keys().collect();
        assert_eq!(epoch2, [&key(1).verifying_key().to_bytes()]);
        assert_eq!(leaders[&1].values().next().unwrap().len(), 3);
    }

    #[test]
    fn two_valid_chains_electing_different_leaders_for_one_epoch_fail() {
        // Node 2 endorsed both candidates (what its durable vote forbids): each chain
        // verifies on its own, and together they give epoch 2 two leaders.
        let a = chain_electing(1, &[1, 2]);
        let b = chain_electing(2, &[2, 0]);
        let (leaders, failures) = leaders_per_epoch([(1, anchor(), &a[..]), (2, anchor(), &b[..])]);
        assert!(failures.is_empty(), "{failures:?}");
        let split = two_leaders(&leaders);
        assert_eq!(split.len(), 1, "{split:?}");
        assert!(split[0].starts_with("epoch 2 has 2 leaders"), "{split:?}");
    }

    #[test]
    fn a_chain_of_hand_overs_from_a_node_to_itself_does_not_verify() {
        // Issue 12's second attack: node 0 hands over to itself, epoch after epoch.
        let mut a = chain_electing(1, &[1, 2]);
        a.truncate(1);
        let chain = Chain::rebuild(anchor(), &a).unwrap();
        let me = key(0).verifying_key().to_bytes();
        let candidacy = chain.candidacy(me);
        let handover = Handover {
            next_epoch: 2,
            next_leader: me,
            endorsements: vec![Endorsement::sign(&key(0), &candidacy)],
            forced: false,
        };
        a.push(chain.sign_next(&key(0), RecordKind::Handover, handover.encode()));
        let (_, failures) = leaders_per_epoch([(0, anchor(), &a[..])]);
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(
            failures[0].contains("another roster member"),
            "{failures:?}"
        );
    }

    #[test]
    fn giving_up_a_majority_hand_over_is_a_rollback_and_giving_up_a_minority_leaders_records_is_not()
     {
        let elected = chain_electing(1, &[1, 2]);
        // A node that held the election and replaces it by node 0's later records.
        let failure = rolled_back(anchor(), &elected[..1], &elected[1..]);
        assert!(
            failure
                .as_deref()
                .is_some_and(|f| f.starts_with("rolled back")),
            "{failure:?}"
        );
        // Node 0's own epoch-1 records, given up for the majority's election: not a rollback.
        let mut chain = Chain::rebuild(anchor(), &elected[..1]).unwrap();
        let stale = chain.sign_next(&key(0), RecordKind::Config, b"x".to_vec());
        chain.apply(chain.verify(&stale).unwrap()).unwrap();
        assert_eq!(rolled_back(anchor(), &elected[..1], &[stale]), None);
    }

    #[test]
    fn a_stored_chain_that_does_not_verify_is_a_failure() {
        let mut a = chain_electing(1, &[1, 2]);
        a[1].signature[0] ^= 1;
        let (leaders, failures) = leaders_per_epoch([(1, anchor(), &a[..])]);
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(
            failures[0].contains("record 2 does not verify"),
            "{failures:?}"
        );
        assert_eq!(leaders.len(), 1);
    }
}
