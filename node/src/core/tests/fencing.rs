//! Planned hand-overs by majority endorsement, and a former leader that signs again from an
//! old copy of its data: the cluster keeps the chain the majority followed.

use super::*;

fn config(token: u64, value: &str) -> Input {
    Input::Master {
        token,
        kind: RecordKind::Config,
        payload: crate::cluster_config::ConfigChange::Set {
            key: "managed.site".into(),
            value: value.into(),
        }
        .encode(),
    }
}

fn handover(token: u64, next: WriterId) -> Input {
    Input::Handover { token, next }
}

#[test]
fn a_planned_hand_over_is_endorsed_by_a_majority_with_the_next_leader() {
    let mut net = Net::new(3);
    with_chain(&mut net);
    let next = net.cores[1].me();
    net.input(0, handover(1, next));
    assert_eq!(net.last_done(0), Ok(2));
    assert_eq!(epochs(&net), [2, 2, 2]);
    assert!(
        net.cores
            .iter()
            .all(|c| c.chain().unwrap().leader() == next.0)
    );
    // Every voter, the leader included, durably endorsed the next leader for epoch 2.
    assert!(net.cores.iter().all(|c| c.vote == Some((2, next))));
    // The new leader writes; the old one no longer may.
    net.input(1, config(2, "b"));
    assert_eq!(net.last_done(1), Ok(3));
    net.input(0, config(3, "a"));
    let err = net.last_done(0).unwrap_err();
    assert!(err.contains("only the leader"), "{err}");
}

#[test]
fn a_hand_over_is_refused_offline_to_itself_and_on_a_minority_side() {
    let mut net = Net::new(5);
    with_chain(&mut net);
    let me = net.cores[0].me();
    net.input(0, handover(1, me));
    let err = net.last_done(0).unwrap_err();
    assert!(err.contains("already leads"), "{err}");
    // Node 0 alone: the next leader cannot consent.
    net.isolate(0);
    let next = net.cores[1].me();
    net.input(0, handover(2, next));
    let err = net.last_done(0).unwrap_err();
    assert!(err.contains("not connected"), "{err}");
    // Node 0 with node 1 only: 2 of 5 is a minority.
    net.rejoin(0);
    for other in 2..5 {
        net.isolate(other);
    }
    net.input(0, handover(3, next));
    let err = net.last_done(0).unwrap_err();
    assert!(err.contains("minority"), "{err}");
    assert_eq!(epochs(&net), [1; 5]);
    // A follower is not the leader.
    net.input(1, handover(4, net.cores[2].me()));
    let err = net.last_done(1).unwrap_err();
    assert!(err.contains("only the leader"), "{err}");
}

#[test]
fn a_member_that_endorsed_one_next_leader_refuses_another_for_that_epoch() {
    let mut net = Net::new(3);
    with_chain(&mut net);
    let (n1, n2) = (net.cores[1].me(), net.cores[2].me());
    // Node 2 already voted for node 1 in epoch 2 (a failover that did not finish).
    net.cores[2].set_vote(Some((2, n1)));
    net.cores[1].set_vote(Some((2, n1)));
    net.input(0, handover(1, n2));
    let err = net.last_done(0).unwrap_err();
    assert!(err.contains("hand-over refused"), "{err}");
    assert_eq!(epochs(&net), [1, 1, 1]);
}

#[test]
fn a_former_leader_restored_from_an_old_copy_cannot_roll_the_chain_back() {
    let mut net = Net::new(3);
    with_chain(&mut net);
    net.input(0, config(1, "grant alice root"));
    assert_eq!(net.last_done(0), Ok(2));
    // An operator's copy of node 0's data, taken now.
    let old_records = net.cores[0].mastered.as_ref().unwrap().records.clone();
    let anchor = net.cores[0].mastered.as_ref().unwrap().anchor;
    let n1 = net.cores[1].me();
    net.input(0, handover(2, n1));
    assert_eq!(net.last_done(0), Ok(3));
    net.input(1, config(3, "revoke alice root"));
    assert_eq!(net.last_done(1), Ok(4));
    let real = net.cores[1].chain().unwrap().clone();

    // Node 0 restarts from the old copy, cut off, and writes in its old epoch.
    net.isolate(0);
    let key = SigningKey::from_bytes(&[1; 32]);
    let replica = Replica::new(ClusterId([1; 16]), key, ReplicaConfig::default());
    let roster = net.cores[0].roster.clone();
    let mut restored = Core::new(replica, roster, CoreConfig::default(), 9, [], net.now);
    restored
        .load_mastered(net.now, anchor, old_records)
        .unwrap();
    restored.drain();
    net.cores[0] = restored;
    net.input(0, config(4, "grant alice root again"));
    assert_eq!(net.last_done(0), Ok(3));
    // It cannot hand over to anyone: nobody can consent while it is cut off.
    let n2 = net.cores[2].me();
    net.input(0, handover(5, n2));
    assert!(net.last_done(0).is_err());

    net.rejoin(0);
    for _ in 0..4 {
        net.tick_all(1000);
    }
    // Nobody adopted the old leader's branch; it took the chain the majority followed.
    for core in &net.cores {
        assert_eq!(core.chain(), Some(&real));
    }
    assert_eq!(net.cores[0].counters().chain_switches, 1);
    assert!(
        net.cores[1..]
            .iter()
            .all(|c| c.counters().chain_switches == 0)
    );
    let reported: u64 = net.cores.iter().map(|c| c.counters().equivocations).sum();
    assert!(reported >= 1, "the double signature is reported");
    // Its record from the old copy is kept for review, not dropped.
    let kept: Vec<u64> = net
        .superseded
        .iter()
        .filter(|(core, _)| *core == 0)
        .flat_map(|(_, records)| records.iter().map(|r| r.record.version))
        .collect();
    assert_eq!(kept, [3]);
}

#[test]
fn records_of_a_branch_that_lost_are_dropped_without_fetching_a_chain_again() {
    let mut net = Net::new(3);
    let (mut chain, _) = with_chain(&mut net);
    // Node 0's second continuation of version 2, never seen by the others until now.
    let n1 = net.cores[1].me();
    net.input(0, handover(1, n1));
    assert_eq!(net.last_done(0), Ok(2));
    let stale = chain.sign_next(&leader_key(), RecordKind::Config, b"x".to_vec());
    chain.apply(chain.verify(&stale).unwrap()).unwrap();
    let gossip = Gossip::Mastered {
        record: stale.encode(),
    }
    .encode();
    let source = net.cores[0].me();
    let send = |net: &mut Net, id| {
        net.input(
            2,
            Input::Gossip {
                source,
                id,
                data: gossip.clone(),
            },
        )
    };
    send(&mut net, 1);
    assert_eq!(net.cores[2].counters().mastered_forks, 1);
    assert_eq!(net.cores[2].counters().losers_dropped, 0);
    // Node 0 holds no such branch, so nothing was resolved yet: resolve by hand with a peer
    // that holds it.
    let theirs: Vec<Vec<u8>> = [
        net.cores[2].mastered.as_ref().unwrap().records[0].encode(),
        stale.encode(),
    ]
    .into();
    let now = net.now;
    net.cores[2].resolve_fork(now, source, theirs);
    net.cores[2].drain();
    assert_eq!(net.cores[2].counters().equivocations, 1);
    send(&mut net, 2);
    assert_eq!(net.cores[2].counters().losers_dropped, 1);
    assert_eq!(net.cores[2].counters().mastered_forks, 1);
    assert_eq!(epochs(&net), [2, 2, 2]);
}
