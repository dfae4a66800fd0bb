//! Rows of roster members only, and gossip that speaks only for its author: made-up writers,
//! a member whose roster record is late, a removed member, forged pushes and adverts.

use meshward_crdt::mastered::{Member, Roster};
use meshward_crdt::{ReplicaConfig, Row};

use super::*;

/// A writer outside the net with its own replica.
fn outsider(n: u8) -> Replica {
    Replica::new(
        ClusterId([1; 16]),
        SigningKey::from_bytes(&[n; 32]),
        ReplicaConfig::default(),
    )
}

/// `from`'s commit of `n` events, as the push it announces.
fn push_of(from: &mut Replica, n: u64) -> Vec<u8> {
    let items = from.commit(0, events(n, 9)).expect("commit").push;
    Gossip::Push {
        origin: from.writer(),
        sent_us: 0,
        message: SyncMessage { items }.encode(),
    }
    .encode()
}

/// Feeds one gossip message to core `at` from `source`, returns its verdict and delivers the
/// rest of the outputs on the net.
fn gossip(net: &mut Net, at: usize, source: WriterId, data: Vec<u8>) -> Verdict {
    net.next_id += 1;
    let id = net.next_id;
    let now = net.now;
    net.cores[at].handle(now, Input::Gossip { source, id, data });
    let mut verdict = None;
    for out in net.cores[at].drain() {
        match out {
            Output::Validate { id: i, verdict: v } if i == id => verdict = Some(v),
            other => net.route(at, other),
        }
    }
    net.run();
    verdict.expect("a verdict")
}

fn segments_of(core: &Core, writer: WriterId) -> usize {
    core.replica()
        .digest()
        .segments
        .iter()
        .filter(|s| s.key.writer == writer)
        .count()
}

/// A writer outside the net, `n`, and the roster record (gossip) the leader wrote to admit it;
/// the record reached no other core.
fn admit_quietly(net: &mut Net, chain: &mut Chain, n: u8) -> (Replica, Vec<u8>) {
    let joiner = outsider(n);
    let mut members = chain.roster().members.clone();
    members.push(Member {
        key: joiner.writer().0,
        address: "127.0.0.1:4999".into(),
    });
    net.drop_gossip = true;
    let record = write_roster(net, chain, members);
    net.drop_gossip = false;
    (joiner, record)
}

/// The leader (core 0) writes a roster record; returns it encoded.
fn write_roster(net: &mut Net, chain: &mut Chain, members: Vec<Member>) -> Vec<u8> {
    let payload = Roster { members }.encode();
    let record = chain.sign_next(&leader_key(), RecordKind::Roster, payload.clone());
    chain.apply(chain.verify(&record).unwrap()).unwrap();
    net.input(
        0,
        Input::Master {
            token: 1,
            kind: RecordKind::Roster,
            payload,
        },
    );
    Gossip::Mastered {
        record: record.encode(),
    }
    .encode()
}

#[test]
fn rows_under_a_made_up_writer_are_refused_counted_and_not_stored_from_gossip_or_sync() {
    let mut net = Net::new(3);
    with_chain(&mut net);
    let mut phantom = outsider(50);
    let attacker = net.cores[2].me();
    let before = net.cores[1].replica().digest();

    // Pushed on gossip: ignored (not forwarded), counted, the sender not penalised.
    let data = push_of(&mut phantom, 2);
    assert_eq!(gossip(&mut net, 1, attacker, data), Verdict::Ignore);
    assert_eq!(net.cores[1].counters().unknown_writer, 1);
    assert_eq!(net.cores[1].counters().pushes_rejected, 0);
    assert_eq!(net.cores[1].replica().digest(), before, "nothing stored");

    // Slipped into a sync answer beside the attacker's own rows: those are taken, the
    // phantom's are not.
    net.input(
        2,
        Input::Commit {
            ops: events(1, 2),
            token: 1,
            at_us: 0,
        },
    );
    let (mut items, _) = phantom.missing_for(&Digest::default(), usize::MAX).unwrap();
    items.extend(
        net.cores[2]
            .replica()
            .missing_for(&Digest::default(), usize::MAX)
            .unwrap()
            .0,
    );
    let answer = Reply::Sync(SyncAnswer {
        more: false,
        message: SyncMessage { items }.encode(),
        records: Vec::new(),
    });
    net.input(
        1,
        Input::SyncResponse {
            peer: attacker,
            request: 999,
            data: answer.encode(),
        },
    );
    let counters = net.cores[1].counters();
    assert_eq!(counters.unknown_writer, 2);
    assert_eq!(counters.sync_rejected, 0);
    assert_eq!(segments_of(&net.cores[1], phantom.writer()), 0);
    assert_eq!(segments_of(&net.cores[1], attacker), 1);
    assert!(converged(&net));
}

#[test]
fn rows_of_a_member_whose_roster_record_is_late_are_taken_once_it_arrives() {
    let mut net = Net::new(3);
    let (mut chain, _) = with_chain(&mut net);
    // The leader admits the joiner; its record reaches core 1 but not yet core 2.
    let (mut joiner, record) = admit_quietly(&mut net, &mut chain, 60);
    let leader = net.cores[0].me();
    assert_eq!(gossip(&mut net, 1, leader, record.clone()), Verdict::Accept);

    // The joiner's first rows reach core 1 (which knows it) and, relayed by core 1, core 2,
    // whose sync with core 1 fails at once.
    let push = push_of(&mut joiner, 3);
    assert_eq!(
        gossip(&mut net, 1, joiner.writer(), push.clone()),
        Verdict::Accept
    );
    let relay = net.cores[1].me();
    net.cut.insert((1, 2));
    assert_eq!(gossip(&mut net, 2, relay, push), Verdict::Ignore);
    net.cut.remove(&(1, 2));
    assert_eq!(net.cores[2].counters().unknown_writer, 1);
    assert_eq!(net.cores[2].counters().pushes_rejected, 0, "not penalised");
    assert_eq!(segments_of(&net.cores[2], joiner.writer()), 0);

    // The roster record arrives from the leader: core 2 asks core 1 again at once (no
    // advert, no tick: `gossip` delivers only what the cores output), and takes the rows.
    assert_eq!(gossip(&mut net, 2, leader, record), Verdict::Accept);
    assert_eq!(segments_of(&net.cores[2], joiner.writer()), 1);
    assert_eq!(
        net.cores[2].replica().rows(TableId::Events).unwrap().len(),
        3
    );
}

#[test]
fn a_late_roster_record_comes_with_the_rows_in_one_sync_answer() {
    let mut net = Net::new(3);
    let (mut chain, _) = with_chain(&mut net);
    let (mut joiner, _) = admit_quietly(&mut net, &mut chain, 61);
    let push = push_of(&mut joiner, 2);
    assert_eq!(
        gossip(&mut net, 0, joiner.writer(), push.clone()),
        Verdict::Accept
    );
    // Relayed by the leader to core 2, which lacks the record: refused, then its sync with
    // the leader brings the record first and the rows after it.
    let leader = net.cores[0].me();
    assert_eq!(gossip(&mut net, 2, leader, push), Verdict::Ignore);
    assert_eq!(net.cores[2].counters().unknown_writer, 1);
    assert_eq!(net.cores[2].chain().unwrap().last_version(), 2);
    assert_eq!(segments_of(&net.cores[2], joiner.writer()), 1);
}

#[test]
fn a_removed_members_new_rows_are_refused_and_its_old_rows_stay_readable() {
    let mut net = Net::new(3);
    let (mut chain, _) = with_chain(&mut net);
    net.input(
        2,
        Input::Commit {
            ops: events(2, 2),
            token: 1,
            at_us: 0,
        },
    );
    assert!(converged(&net));
    let removed = net.cores[2].me();
    let members = chain
        .roster()
        .members
        .iter()
        .filter(|m| m.key != removed.0)
        .cloned()
        .collect();
    write_roster(&mut net, &mut chain, members);
    assert_eq!(versions(&net)[1], 2);

    // The removed node goes on writing; the members refuse its new rows.
    net.input(
        2,
        Input::Commit {
            ops: events(1, 3),
            token: 2,
            at_us: 0,
        },
    );
    assert_eq!(
        net.cores[2].replica().rows(TableId::Events).unwrap().len(),
        3
    );
    for member in 0..2 {
        let core = &net.cores[member];
        assert_eq!(core.counters().unknown_writer, 1);
        assert_eq!(core.counters().pushes_rejected, 0);
        let rows = core.replica().rows(TableId::Events).unwrap();
        assert_eq!(rows.len(), 2, "history kept, nothing new");
        assert!(
            rows.iter()
                .all(|(k, r)| k.writer == removed && matches!(r, Row::Event(_)))
        );
    }
}

#[test]
fn a_push_of_rows_not_its_origins_is_refused_and_counted() {
    let mut net = Net::new(3);
    net.drop_gossip = true;
    net.input(
        0,
        Input::Commit {
            ops: events(1, 0),
            token: 1,
            at_us: 0,
        },
    );
    let items = net.cores[0]
        .replica()
        .missing_for(&Digest::default(), usize::MAX)
        .unwrap()
        .0;
    let attacker = net.cores[2].me();
    let forged = Gossip::Push {
        origin: attacker,
        sent_us: 0,
        message: SyncMessage { items }.encode(),
    }
    .encode();
    assert_eq!(gossip(&mut net, 1, attacker, forged), Verdict::Reject);
    assert_eq!(net.cores[1].counters().forged_gossip, 1);
}

/// An advert of `origin`, signed with `key`.
fn advert(origin: WriterId, key: &SigningKey, at_ms: u64) -> Vec<u8> {
    Gossip::Advert(
        Advert {
            origin,
            fingerprint: [0; 32],
            changes: 0,
            mastered: 0,
            mastered_hash: [0; 32],
            at_ms,
            signature: ed25519_dalek::Signature::from_bytes(&[0; 64]),
        }
        .sign(key, ClusterId([1; 16])),
    )
    .encode()
}

#[test]
fn an_advert_forged_or_replayed_for_the_leader_does_not_keep_it_alive() {
    let mut net = Net::new(3);
    with_chain(&mut net);
    let leader = net.cores[0].me();
    let attacker = net.cores[2].me();
    let heard = |net: &Net| net.cores[1].leader_heard(net.now).and_then(|(_, h)| h);
    net.now = 10_000;
    assert_eq!(heard(&net), Some(10_000), "silent since the start");

    // Signed by the attacker: refused and counted, the leader still silent.
    let forged = advert(leader, &SigningKey::from_bytes(&[3; 32]), net.now);
    assert_eq!(gossip(&mut net, 1, attacker, forged), Verdict::Reject);
    assert_eq!(net.cores[1].counters().forged_gossip, 1);
    assert_eq!(heard(&net), Some(10_000));

    // The leader's own adverts, relayed by the attacker, count.
    let first = advert(leader, &leader_key(), net.now);
    assert_eq!(
        gossip(&mut net, 1, attacker, first.clone()),
        Verdict::Accept
    );
    assert_eq!(heard(&net), Some(0));
    net.now += 1_000;
    let second = advert(leader, &leader_key(), net.now);
    assert_eq!(
        gossip(&mut net, 1, attacker, second.clone()),
        Verdict::Accept
    );

    // Replayed later: ignored (the older one counted as stale); nothing refreshed.
    net.now += 5_000;
    assert_eq!(gossip(&mut net, 1, attacker, first), Verdict::Ignore);
    assert_eq!(gossip(&mut net, 1, attacker, second), Verdict::Ignore);
    assert_eq!(net.cores[1].counters().stale_adverts, 1);
    assert_eq!(heard(&net), Some(5_000));

    // The leader's next one counts again.
    let next = advert(leader, &leader_key(), net.now);
    assert_eq!(gossip(&mut net, 1, attacker, next), Verdict::Accept);
    assert_eq!(heard(&net), Some(0));
}

#[test]
fn a_quiet_leaders_adverts_are_each_new_and_a_quiet_follower_refreshes_rarely() {
    let mut net = Net::new(2);
    with_chain(&mut net);
    let mut published = [Vec::new(), Vec::new()];
    for _ in 0..3 {
        net.now += 1000;
        for (i, out) in published.iter_mut().enumerate() {
            net.cores[i].handle(net.now, Input::Tick);
            out.extend(net.cores[i].drain().into_iter().filter_map(|o| match o {
                Output::Publish(data) => Some(data),
                _ => None,
            }));
        }
    }
    let [leader, follower] = published;
    assert_eq!(leader.len(), 3);
    assert!(
        leader.windows(2).all(|w| w[0] != w[1]),
        "heard each interval"
    );
    // A quiet follower does not republish its advert every interval (gossipsub would drop the
    // identical bytes and warn "already published" each second) ...
    assert_eq!(follower.len(), 1, "an unchanged advert is not republished");
    // ... but refreshes it, re-signed, after FOLLOWER_REFRESH_MS for neighbours new since.
    net.now += FOLLOWER_REFRESH_MS;
    net.cores[1].handle(net.now, Input::Tick);
    let refreshed: Vec<_> = net.cores[1]
        .drain()
        .into_iter()
        .filter_map(|o| match o {
            Output::Publish(data) => Some(data),
            _ => None,
        })
        .collect();
    assert_eq!(refreshed.len(), 1, "refreshed once");
    assert_ne!(
        refreshed.first(),
        follower.last(),
        "a fresh advert, not a repeat"
    );
    let follower = refreshed;
    // A follower's advert changes with what it holds.
    net.input(
        1,
        Input::Commit {
            ops: events(1, 1),
            token: 1,
            at_us: 0,
        },
    );
    net.now += 1000;
    net.cores[1].handle(net.now, Input::Tick);
    let next = net.cores[1].drain().into_iter().find_map(|o| match o {
        Output::Publish(data) => Some(data),
        _ => None,
    });
    assert_ne!(next.as_ref(), follower.last());
}

#[test]
fn a_followers_advert_is_taken_but_not_relayed_and_the_leaders_is_relayed() {
    let mut net = Net::new(3);
    with_chain(&mut net);
    let follower = net.cores[2].me();
    let leader = net.cores[0].me();
    net.now = 5_000;
    let summary = |changes| Advert {
        origin: follower,
        fingerprint: [7; 32],
        changes,
        mastered: 0,
        mastered_hash: [0; 32],
        at_ms: net.now,
        signature: ed25519_dalek::Signature::from_bytes(&[0; 64]),
    };
    let data =
        Gossip::Advert(summary(77).sign(&SigningKey::from_bytes(&[3; 32]), ClusterId([1; 16])))
            .encode();
    net.cores[1].handle(
        net.now,
        Input::Gossip {
            source: follower,
            id: 1,
            data,
        },
    );
    let out = net.cores[1].drain();
    // Taken (its origin's figures noted, a sync asked for: its fingerprint differs) ...
    let changes = net.cores[1]
        .peers()
        .find(|(k, _)| **k == follower)
        .and_then(|(_, p)| p.changes);
    assert_eq!(changes, Some(77));
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Request { peer, .. } if *peer == follower)),
        "{out:?}"
    );
    // ... but not relayed: a follower's advert concerns its neighbours only.
    assert!(
        out.iter().any(|o| matches!(
            o,
            Output::Validate {
                id: 1,
                verdict: Verdict::Ignore
            }
        )),
        "{out:?}"
    );
    // The leader's adverts are relayed: they keep it alive at every follower.
    let from_leader = advert(leader, &leader_key(), net.now);
    assert_eq!(gossip(&mut net, 1, leader, from_leader), Verdict::Accept);
    assert_eq!(net.cores[1].counters().forged_gossip, 0);
}

#[test]
fn a_removed_members_rows_stop_at_the_frontier_its_removal_fixed_also_for_a_node_cut_off_then() {
    use meshward_crdt::mastered::RosterChange;
    let mut net = Net::new(4);
    with_chain(&mut net);
    let (leader, relay, behind, removed) = (0, 1, 2, 3);
    let removed_id = net.cores[removed].me();
    // `behind` is cut off; the removed node's rows reach the leader and the relay only.
    net.isolate(behind);
    net.input(
        removed,
        Input::Commit {
            ops: events(2, 3),
            token: 1,
            at_us: 0,
        },
    );
    net.input(
        leader,
        Input::Leave {
            token: 2,
            node: Some(removed_id),
        },
    );
    assert_eq!(net.last_done(leader), Ok(2));
    let record = &net.cores[leader].mastered.as_ref().unwrap().records[1];
    let change = RosterChange::decode(&record.record.payload).unwrap();
    assert_eq!(change.frontiers.len(), 1, "the removal fixes one frontier");
    assert_eq!(
        change.frontiers[0],
        net.cores[leader].replica().frontier_of(removed_id)
    );

    // The removed node goes on writing with its key: refused by the members, not stored.
    net.input(
        removed,
        Input::Commit {
            ops: events(1, 4),
            token: 3,
            at_us: 0,
        },
    );
    let beyond_push = {
        let items = net.cores[removed]
            .replica()
            .missing_for(&Digest::default(), usize::MAX)
            .unwrap()
            .0;
        Gossip::Push {
            origin: removed_id,
            sent_us: 0,
            message: SyncMessage { items }.encode(),
        }
        .encode()
    };
    for member in [leader, relay] {
        assert_eq!(net.cores[member].counters().beyond_frontier, 1);
        assert_eq!(net.cores[member].counters().pushes_rejected, 0);
        assert_eq!(
            net.cores[member]
                .replica()
                .rows(TableId::Events)
                .unwrap()
                .len(),
            2,
            "nothing beyond the frontier"
        );
    }

    // The node cut off during the removal comes back: the removal's record, then the removed
    // node's rows up to the frontier, reach it.
    net.rejoin(behind);
    net.isolate(removed);
    net.tick_all(60_000);
    let chain = net.cores[behind].chain().unwrap();
    assert_eq!(chain.last_version(), 2);
    assert_eq!(segments_of(&net.cores[behind], removed_id), 1);
    let held: Vec<_> = net.cores[behind]
        .replica()
        .digest()
        .segments
        .into_iter()
        .filter(|s| s.key.writer == removed_id)
        .collect();
    assert_eq!(held, change.frontiers[0].states().collect::<Vec<_>>());
    // Its rows beyond the frontier, relayed by a member, are refused too: ignored (not
    // forwarded), counted, the relay not penalised.
    let relay_id = net.cores[relay].me();
    let before = net.cores[behind].counters().beyond_frontier;
    assert_eq!(
        gossip(&mut net, behind, relay_id, beyond_push),
        Verdict::Ignore
    );
    assert_eq!(net.cores[behind].counters().beyond_frontier, before + 1);
    assert_eq!(
        net.cores[behind]
            .replica()
            .rows(TableId::Events)
            .unwrap()
            .len(),
        2
    );
}
