//! Restrictive records of a losing branch are signed again into the winning chain, once.

use super::*;

const REVOKED: &[u8] = b"revocation written by a leader that lost";

fn revoke(token: u64) -> Input {
    Input::Master {
        token,
        kind: RecordKind::Revocation,
        payload: REVOKED.to_vec(),
    }
}

/// Node 0 leads epoch 1 and is cut off; nodes 1 and 2 fail over to node 1 (epoch 2); node 0
/// revokes something on its own side, which loses.
fn split(net: &mut Net) {
    with_chain(net);
    net.isolate(0);
    net.tick_all(4_000);
    net.input(
        1,
        Input::Failover {
            token: 1,
            force: false,
        },
    );
    assert_eq!(epochs(net)[1..], [2, 2]);
    net.input(0, revoke(2));
    assert!(net.last_done(0).is_ok());
}

/// The winning chain's copies of the revocation: (epoch, signer) of each.
fn reapplied(core: &Core) -> Vec<(u64, [u8; 32])> {
    core.mastered
        .as_ref()
        .unwrap()
        .records
        .iter()
        .filter(|r| r.record.kind == RecordKind::Revocation && r.record.payload == REVOKED)
        .map(|r| (r.record.epoch, r.signer))
        .collect()
}

#[test]
fn a_revocation_of_the_losing_side_is_signed_again_by_the_winner_once() {
    let mut net = Net::new(3);
    split(&mut net);
    net.rejoin(0);
    for _ in 0..6 {
        net.tick_all(1_000);
    }
    let winner = net.cores[1].me().0;
    for core in &net.cores {
        assert_eq!(core.chain(), net.cores[1].chain());
        assert_eq!(reapplied(core), [(2, winner)]);
    }
}

#[test]
fn a_node_whose_chain_lost_hands_its_revocation_to_a_leader_that_never_saw_it() {
    let mut net = Net::new(3);
    split(&mut net);
    // Node 0 meets node 2 only: it adopts the winning chain from it and cannot reach the
    // leader yet; node 2, a follower, keeps the branch as superseded and writes nothing.
    net.link(0, 2);
    net.run();
    for _ in 0..4 {
        net.tick_all(1_000);
    }
    assert_eq!(net.cores[0].chain(), net.cores[1].chain());
    assert!(reapplied(&net.cores[1]).is_empty());
    assert!(net.cores[0].handoff.is_some(), "waiting for the leader");
    // The leader's own chain never conflicts with node 0's now: only the hand-off tells it.
    let n1 = net.cores[1].me();
    net.link(0, 1);
    net.run();
    for _ in 0..4 {
        net.tick_all(1_000);
    }
    assert_eq!(net.cores[1].counters().chain_switches, 0);
    for core in &net.cores {
        assert_eq!(reapplied(core), [(2, n1.0)]);
    }
    assert!(net.cores[0].handoff.is_none());
}

#[test]
fn a_branch_that_does_not_verify_from_the_leaders_chain_is_refused() {
    let mut net = Net::new(3);
    let (mut chain, _) = with_chain(&mut net);
    // A "branch" signed by a key that never led: refused, nothing written.
    let forged = chain.sign_next(
        &SigningKey::from_bytes(&[9; 32]),
        RecordKind::Revocation,
        REVOKED.to_vec(),
    );
    let now = net.now;
    let err = net.cores[0].reapply(now, 1, &[forged]).unwrap_err();
    assert!(err.contains("does not verify"), "{err}");
    assert!(reapplied(&net.cores[0]).is_empty());
    // A fork point past the chain, or none, is refused too.
    let genuine = chain.sign_next(&leader_key(), RecordKind::Revocation, REVOKED.to_vec());
    chain.apply(chain.verify(&genuine).unwrap()).unwrap();
    for common in [0, 99] {
        assert!(
            net.cores[0]
                .reapply(now, common, std::slice::from_ref(&genuine))
                .is_err()
        );
    }
    // Only the leader re-applies.
    let err = net.cores[1].reapply(now, 1, &[genuine]).unwrap_err();
    assert!(err.contains("not the leader"), "{err}");
}

#[test]
fn a_hand_off_cut_short_by_a_restart_is_found_again_in_the_stored_superseded_records() {
    let mut net = Net::new(3);
    split(&mut net);
    // Node 0 adopts the winning chain from node 2 while the leader is out of its reach...
    net.link(0, 2);
    net.run();
    net.tick_all(1_000);
    assert!(net.cores[0].handoff.is_some());
    // ...and restarts: its store holds the winning chain and its own branch as superseded.
    let stored: Vec<SignedRecord> = net
        .superseded
        .iter()
        .filter(|(core, _)| *core == 0)
        .flat_map(|(_, records)| records.clone())
        .collect();
    let m = net.cores[0].mastered.as_ref().unwrap();
    let (anchor, records) = (m.anchor, m.records.clone());
    let key = SigningKey::from_bytes(&[1; 32]);
    let replica = Replica::new(ClusterId([1; 16]), key, ReplicaConfig::default());
    let roster = net.cores[0].roster.clone();
    let mut restarted = Core::new(replica, roster, CoreConfig::default(), 7, [], net.now);
    restarted.load_mastered(net.now, anchor, records).unwrap();
    restarted.resume_handoff(net.now, &stored);
    assert!(restarted.handoff.is_some(), "the hand-off is found again");
    restarted.drain();
    net.cores[0] = restarted;
    net.rejoin(0);
    for _ in 0..4 {
        net.tick_all(1_000);
    }
    let n1 = net.cores[1].me().0;
    for core in &net.cores {
        assert_eq!(reapplied(core), [(2, n1)]);
    }
    // Found again after that, it writes nothing more.
    let version = net.cores[1].chain().unwrap().last_version();
    let now = net.now;
    net.cores[0].resume_handoff(now, &stored);
    for _ in 0..4 {
        net.tick_all(1_000);
    }
    assert_eq!(net.cores[1].chain().unwrap().last_version(), version);
    assert!(net.cores[0].handoff.is_none());
}

#[test]
fn a_removal_re_applied_by_the_winner_keeps_the_frontier_the_losing_leader_fixed() {
    use meshward_crdt::mastered::RosterChange;
    let mut net = Net::new(4);
    with_chain(&mut net);
    let removed = net.cores[3].me();
    net.input(
        3,
        Input::Commit {
            ops: events(2, 3),
            token: 1,
            at_us: 0,
        },
    );
    // Node 0 leads and is cut off; 1, 2 and 3 fail over to node 1.
    net.isolate(0);
    net.tick_all(4_000);
    net.input(
        1,
        Input::Failover {
            token: 2,
            force: false,
        },
    );
    assert_eq!(epochs(&net)[1..], [2, 2, 2]);
    // Node 3 writes on the winning side; node 0 removes it on the losing side.
    net.input(
        3,
        Input::Commit {
            ops: events(1, 4),
            token: 3,
            at_us: 0,
        },
    );
    net.input(
        0,
        Input::Leave {
            token: 4,
            node: Some(removed),
        },
    );
    assert!(net.last_done(0).is_ok());
    let losing = net.cores[0].replica().frontier_of(removed);
    assert_eq!(
        losing.segments[0].seq, 1,
        "node 0 saw the first commit only"
    );

    net.rejoin(0);
    for _ in 0..6 {
        net.tick_all(1_000);
    }
    let chain = net.cores[1].mastered.as_ref().unwrap();
    let removal = chain
        .records
        .iter()
        .rev()
        .find(|r| r.record.kind == RecordKind::Roster)
        .expect("the removal re-applied");
    assert_eq!(removal.record.epoch, 2);
    let change = RosterChange::decode(&removal.record.payload).unwrap();
    assert!(!change.roster.contains(&removed.0));
    assert_eq!(change.frontiers, std::slice::from_ref(&losing));
    // Node 3's rows beyond that frontier are refused by node 0, which lacked them.
    let held = |core: &Core| {
        core.replica()
            .digest()
            .segments
            .into_iter()
            .filter(|s| s.key.writer == removed)
            .collect::<Vec<_>>()
    };
    assert_eq!(held(&net.cores[0]), losing.states().collect::<Vec<_>>());
    assert!(
        net.cores[1]
            .replica()
            .takes(&losing.states().next().unwrap())
    );
}
