//! The mastered chain and leadership: records reaching every node, forged ones refused,
//! roster changes, elections on a majority only, forced failovers, delegated password
//! changes, leaving.

use super::*;

#[test]
fn a_leaders_mastered_record_reaches_every_node_and_a_missed_one_is_synced() {
    let mut net = Net::new(3);
    let (mut chain, _) = with_chain(&mut net);
    let record = chain.sign_next(&leader_key(), RecordKind::Config, b"a=1".to_vec());
    chain.apply(chain.verify(&record).unwrap()).unwrap();
    net.input(
        0,
        Input::Master {
            token: 1,
            kind: record.record.kind,
            payload: record.record.payload.clone(),
        },
    );
    assert_eq!(versions(&net), [2, 2, 2]);
    assert_eq!(net.cores[1].counters().mastered_applied, 1);

    // Gossip lost: the adverts say a version is missing, and sync fetches it.
    net.drop_gossip = true;
    let record = chain.sign_next(&leader_key(), RecordKind::Config, b"a=2".to_vec());
    net.input(
        0,
        Input::Master {
            token: 1,
            kind: record.record.kind,
            payload: record.record.payload.clone(),
        },
    );
    assert_eq!(versions(&net), [3, 2, 2]);
    net.drop_gossip = false;
    for _ in 0..3 {
        net.tick_all(1000);
    }
    assert_eq!(versions(&net), [3, 3, 3]);
    assert_eq!(net.cores[2].chain(), net.cores[0].chain());
}

#[test]
fn forged_and_competing_mastered_records_are_refused_and_counted() {
    let mut net = Net::new(3);
    let (chain, _) = with_chain(&mut net);
    let follower = SigningKey::from_bytes(&[2; 32]);
    let gossip = |record: &SignedRecord| {
        Gossip::Mastered {
            record: record.encode(),
        }
        .encode()
    };
    // Signed by a follower: not the epoch's leader.
    let forged = chain.sign_next(&follower, RecordKind::Config, b"x".to_vec());
    let source = net.cores[1].me();
    net.input(
        2,
        Input::Gossip {
            source,
            id: 1,
            data: gossip(&forged),
        },
    );
    assert_eq!(net.cores[2].counters().mastered_rejected, 1);
    assert_eq!(versions(&net), [1, 1, 1]);
    // A different genesis at version 1: a competing chain, held back and counted.
    let other = Chain::new(TrustAnchor {
        cluster: chain.cluster(),
        genesis_leader: leader_key().verifying_key().to_bytes(),
    });
    let fork = other.sign_next(&leader_key(), RecordKind::Genesis, Vec::new());
    net.input(
        2,
        Input::Gossip {
            source,
            id: 2,
            data: gossip(&fork),
        },
    );
    assert_eq!(net.cores[2].counters().mastered_forks, 1);
    // Garbage.
    net.input(
        2,
        Input::Gossip {
            source,
            id: 3,
            data: Gossip::Mastered {
                record: vec![1, 2, 3],
            }
            .encode(),
        },
    );
    assert_eq!(net.cores[2].counters().malformed, 1);
    assert_eq!(versions(&net), [1, 1, 1]);
}

#[test]
fn a_roster_record_changes_who_is_admitted() {
    use meshward_crdt::mastered::Roster;
    let mut net = Net::new(3);
    let (mut chain, _) = with_chain(&mut net);
    let mut roster = chain.roster().clone();
    let removed = roster.members.pop().unwrap();
    let record = chain.sign_next(&leader_key(), RecordKind::Roster, Roster::encode(&roster));
    chain.apply(chain.verify(&record).unwrap()).unwrap();
    let source = net.cores[0].me();
    net.cores[1].handle(
        0,
        Input::Gossip {
            source,
            id: 1,
            data: Gossip::Mastered {
                record: record.encode(),
            }
            .encode(),
        },
    );
    let outputs = net.cores[1].drain();
    assert!(
        matches!(outputs[0], Output::PersistMastered(_)),
        "persist first: {outputs:?}"
    );
    let admitted = outputs.iter().find_map(|o| match o {
        Output::Roster(r) => Some(r.clone()),
        _ => None,
    });
    let admitted = admitted.expect("roster output");
    assert_eq!(admitted.len(), 2);
    assert!(!admitted.contains(&WriterId(removed.key)));
    assert!(
        net.cores[1]
            .peers()
            .all(|(k, _)| *k != WriterId(removed.key))
    );
}

#[test]
fn a_majority_elects_a_new_leader_when_the_old_one_is_gone() {
    let mut net = Net::new(3);
    with_chain(&mut net);
    // While the leader is heard, nobody may take over.
    net.tick_all(1000);
    net.input(
        1,
        Input::Failover {
            token: 1,
            force: false,
        },
    );
    let err = net.last_done(1).unwrap_err();
    assert!(err.contains("is alive"), "{err}");
    net.isolate(0);
    net.tick_all(4000);
    net.input(
        1,
        Input::Failover {
            token: 2,
            force: false,
        },
    );
    assert_eq!(net.last_done(1), Ok(2));
    assert_eq!(&epochs(&net)[1..], [2, 2]);
    let leader = net.cores[1].me().0;
    assert_eq!(net.cores[2].chain().unwrap().leader(), leader);
    assert_eq!(net.cores[2].counters().endorsements_given, 1);
    // Node 2 endorsed node 1 for epoch 2: it cannot stand for epoch 2 itself.
    assert_eq!(net.cores[2].vote, Some((2, net.cores[1].me())));
    // The old leader comes back: it follows the new epoch.
    net.rejoin(0);
    for _ in 0..3 {
        net.tick_all(1000);
    }
    assert_eq!(epochs(&net), [2, 2, 2]);
    assert_eq!(net.cores[0].chain(), net.cores[1].chain());
}

#[test]
fn a_minority_side_cannot_elect_a_leader() {
    let mut net = Net::new(3);
    with_chain(&mut net);
    net.isolate(2);
    net.tick_all(4000);
    net.input(
        2,
        Input::Failover {
            token: 1,
            force: false,
        },
    );
    let err = net.last_done(2).unwrap_err();
    assert!(err.contains("minority"), "{err}");
    net.input(
        2,
        Input::Failover {
            token: 2,
            force: true,
        },
    );
    let err = net.last_done(2).unwrap_err();
    assert!(err.contains("two-node pair"), "{err}");
    assert_eq!(epochs(&net), [1, 1, 1]);
}

#[test]
fn a_forced_failover_in_a_pair_wins_when_they_meet_and_the_loser_keeps_its_writes() {
    let mut net = Net::new(2);
    with_chain(&mut net);
    net.isolate(1);
    net.tick_all(4000);
    // Both sides write mastered config during the split.
    let config = |v: &str| crate::cluster_config::ConfigChange::Set {
        key: "managed.site".into(),
        value: v.into(),
    };
    let master = |token, v: &str| Input::Master {
        token,
        kind: RecordKind::Config,
        payload: config(v).encode(),
    };
    net.input(0, master(1, "old-leader"));
    assert_eq!(net.last_done(0), Ok(2));
    net.input(
        1,
        Input::Failover {
            token: 2,
            force: true,
        },
    );
    assert_eq!(net.last_done(1), Ok(2));
    net.input(1, master(3, "new-leader"));
    assert_eq!(net.last_done(1), Ok(3));
    assert_eq!(epochs(&net), [1, 2]);
    net.rejoin(1);
    for _ in 0..3 {
        net.tick_all(1000);
    }
    assert_eq!(epochs(&net), [2, 2]);
    assert_eq!(net.cores[0].chain(), net.cores[1].chain());
    assert_eq!(net.cores[0].counters().chain_switches, 1);
    // The old leader's write during the split is kept as superseded, not dropped.
    let kept: Vec<u64> = net
        .superseded
        .iter()
        .filter(|(core, _)| *core == 0)
        .flat_map(|(_, records)| records.iter().map(|r| r.record.epoch))
        .collect();
    assert_eq!(kept, [1]);
}

#[test]
fn a_password_change_on_a_follower_is_decided_by_the_leader() {
    let mut net = Net::new(3);
    with_chain(&mut net);
    let change = |token, password: &str| Input::Password {
        token,
        user: "alice".into(),
        password: Secret(password.into()),
    };
    // Only a user's password is set.
    net.input(2, change(1, "Correct-horse-battery-9"));
    let err = net.last_done(2).unwrap_err();
    assert!(err.contains("no user \"alice\""), "{err}");
    let (kind, payload) = crate::grants::UserChange::Create("alice".parse().unwrap()).encode();
    net.input(
        0,
        Input::Master {
            token: 1,
            kind,
            payload,
        },
    );
    assert_eq!(net.last_done(0), Ok(2));
    net.input(2, change(1, "short"));
    let err = net.last_done(2).unwrap_err();
    assert!(
        err.contains("leader refused") && err.contains("at least 12"),
        "{err}"
    );
    net.input(2, change(2, "Correct-horse-battery-9"));
    assert_eq!(net.last_done(2), Ok(3));
    assert_eq!(versions(&net), [3, 3, 3]);
    let record = &net.cores[1].mastered.as_ref().unwrap().records[2];
    assert_eq!(record.record.kind, RecordKind::Password);
    assert_eq!(record.signer, net.cores[0].me().0);
    // The leader unreachable: a clear error at once, nothing queued.
    net.isolate(0);
    net.input(2, change(3, "Correct-horse-battery-10"));
    let err = net.last_done(2).unwrap_err();
    assert!(err.contains("not connected"), "{err}");
    net.tick_all(10_000);
    assert_eq!(versions(&net), [3, 3, 3]);
}

#[test]
fn a_follower_that_leaves_is_removed_and_admits_no_one() {
    let mut net = Net::new(3);
    with_chain(&mut net);
    net.input(
        0,
        Input::Leave {
            token: 1,
            node: None,
        },
    );
    assert!(
        net.last_done(0)
            .unwrap_err()
            .contains("cannot leave while it leads")
    );
    net.input(
        2,
        Input::Leave {
            token: 2,
            node: None,
        },
    );
    assert_eq!(net.last_done(2), Ok(2));
    let me = net.cores[2].me();
    assert!(!net.cores[0].chain().unwrap().roster().contains(&me.0));
    assert!(!net.cores[2].chain().unwrap().roster().contains(&me.0));
    assert!(net.cores[2].roster.is_empty());
    assert!(!net.cores[0].roster.contains(&me));
}
