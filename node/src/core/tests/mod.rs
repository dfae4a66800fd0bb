//! Unit tests of the node core on a deterministic in-process network.

use std::collections::VecDeque;

use ed25519_dalek::SigningKey;
use meshward_crdt::{ClusterId, Event, EventKind, ReplicaConfig, TableId};

use super::*;

/// Each member's answer to an [`Input::AuditHeads`].
type PeerAnswers = Vec<(WriterId, PeerHead)>;

/// A tiny lossless-unless-told network of cores, delivering outputs in FIFO order.
struct Net {
    cores: Vec<Core>,
    now: Millis,
    /// Drop every gossip message while set (requests still flow).
    drop_gossip: bool,
    /// Pairs that cannot talk at all.
    cut: BTreeSet<(usize, usize)>,
    queue: VecDeque<(usize, Input)>,
    next_id: u64,
    channels: BTreeMap<u64, (usize, usize, u64)>,
    /// Every `Output::Done`: (core, token, result).
    done: Vec<(usize, u64, Result<u64, String>)>,
    /// Every `Output::Superseded` and `AdoptChain` superseded list, by core.
    superseded: Vec<(usize, Vec<SignedRecord>)>,
    /// The core of every write asked for (`Persist`, `PersistMastered`, `PersistVote`).
    persists: Vec<usize>,
    /// Every `Output::Forwarded`: (core, token, result).
    forwarded: Vec<(usize, u64, Result<Opaque, String>)>,
    /// Every `Output::Serve`: (core, channel, have, envelope); the test plays the driver.
    serves: Vec<(usize, u64, u64, Opaque)>,
    /// Every `Output::AuditHeads`: (core, token, answers).
    audit_heads: Vec<(usize, u64, PeerAnswers)>,
}

impl Net {
    fn new(n: usize) -> Net {
        let keys: Vec<SigningKey> = (0..n)
            .map(|i| SigningKey::from_bytes(&[i as u8 + 1; 32]))
            .collect();
        let roster: BTreeSet<WriterId> = keys
            .iter()
            .map(|k| WriterId::from_key(&k.verifying_key()))
            .collect();
        let cores = keys
            .into_iter()
            .enumerate()
            .map(|(i, k)| {
                let replica = Replica::new(ClusterId([1; 16]), k, ReplicaConfig::default());
                Core::new(
                    replica,
                    roster.clone(),
                    CoreConfig::default(),
                    i as u64,
                    [],
                    0,
                )
            })
            .collect();
        let mut net = Net {
            cores,
            now: 0,
            drop_gossip: false,
            cut: BTreeSet::new(),
            queue: VecDeque::new(),
            next_id: 1,
            channels: BTreeMap::new(),
            done: Vec::new(),
            superseded: Vec::new(),
            persists: Vec::new(),
            forwarded: Vec::new(),
            serves: Vec::new(),
            audit_heads: Vec::new(),
        };
        for a in 0..n {
            for b in 0..n {
                if a != b {
                    let peer = net.cores[b].me();
                    net.queue.push_back((
                        a,
                        Input::Connected {
                            peer,
                            addr: addr(b),
                        },
                    ));
                }
            }
        }
        net.run();
        net
    }

    fn index(&self, id: WriterId) -> usize {
        self.cores.iter().position(|c| c.me() == id).expect("known")
    }

    fn linked(&self, a: usize, b: usize) -> bool {
        !self.cut.contains(&(a.min(b), a.max(b)))
    }

    fn input(&mut self, at: usize, input: Input) {
        self.queue.push_back((at, input));
        self.run();
    }

    fn run(&mut self) {
        for _ in 0..100_000 {
            let Some((at, input)) = self.queue.pop_front() else {
                return;
            };
            self.cores[at].handle(self.now, input);
            for out in self.cores[at].drain() {
                self.route(at, out);
            }
        }
        panic!("network did not settle");
    }

    fn route(&mut self, from: usize, out: Output) {
        let me = self.cores[from].me();
        match out {
            Output::Publish(data) | Output::Announce(data) if !self.drop_gossip => {
                let targets: Vec<usize> = (0..self.cores.len())
                    .filter(|&t| t != from && self.linked(from, t))
                    .collect();
                for to in targets {
                    self.next_id += 1;
                    let id = self.next_id;
                    self.queue.push_back((
                        to,
                        Input::Gossip {
                            source: me,
                            id,
                            data: data.clone(),
                        },
                    ));
                }
            }
            Output::Request {
                peer,
                request,
                data,
            } => {
                let to = self.index(peer);
                if self.linked(from, to) {
                    self.next_id += 1;
                    self.channels.insert(self.next_id, (to, from, request));
                    self.queue.push_back((
                        to,
                        Input::SyncRequest {
                            peer: me,
                            channel: self.next_id,
                            data,
                        },
                    ));
                } else {
                    self.queue
                        .push_back((from, Input::SyncFailed { peer, request }));
                }
            }
            Output::Respond { channel, data } => {
                let (server, client, request) = self.channels.remove(&channel).expect("channel");
                let peer = self.cores[server].me();
                self.queue.push_back((
                    client,
                    Input::SyncResponse {
                        peer,
                        request,
                        data,
                    },
                ));
            }
            Output::Done { token, result } => self.done.push((from, token, result)),
            Output::Forwarded { token, result } => self.forwarded.push((from, token, result)),
            Output::Serve {
                channel,
                have,
                envelope,
            } => self.serves.push((from, channel, have, envelope)),
            Output::AuditHeads { token, answers } => self.audit_heads.push((from, token, answers)),
            Output::Superseded(records)
            | Output::AdoptChain {
                superseded: records,
                ..
            } => self.superseded.push((from, records)),
            Output::Persist(_) | Output::PersistMastered(_) | Output::PersistVote { .. } => {
                self.persists.push(from);
            }
            _ => {}
        }
    }

    /// Cuts every link of `i` (both sides see a disconnection).
    fn isolate(&mut self, i: usize) {
        for j in 0..self.cores.len() {
            if j != i {
                self.cut.insert((i.min(j), i.max(j)));
                let (pi, pj) = (self.cores[i].me(), self.cores[j].me());
                self.queue.push_back((i, Input::Disconnected { peer: pj }));
                self.queue.push_back((j, Input::Disconnected { peer: pi }));
            }
        }
        self.run();
    }

    /// Restores every link of `i`.
    fn rejoin(&mut self, i: usize) {
        for j in 0..self.cores.len() {
            if j != i {
                self.link(i, j);
            }
        }
        self.run();
    }

    /// Restores the link between `a` and `b` (both sides see a connection); [`Net::run`]
    /// delivers it.
    fn link(&mut self, a: usize, b: usize) {
        self.cut.remove(&(a.min(b), a.max(b)));
        let (pa, pb) = (self.cores[a].me(), self.cores[b].me());
        self.queue.push_back((
            a,
            Input::Connected {
                peer: pb,
                addr: addr(b),
            },
        ));
        self.queue.push_back((
            b,
            Input::Connected {
                peer: pa,
                addr: addr(a),
            },
        ));
    }

    fn last_done(&self, core: usize) -> Result<u64, String> {
        self.done
            .iter()
            .rev()
            .find(|(c, _, _)| *c == core)
            .map(|(_, _, r)| r.clone())
            .expect("an answer")
    }

    /// Holds or releases core `i` (see [`Core::set_held`]) and delivers what that says.
    fn hold(&mut self, i: usize, held: bool) {
        self.cores[i].set_held(self.now, held);
        for out in self.cores[i].drain() {
            self.route(i, out);
        }
        self.run();
    }

    fn tick_all(&mut self, ms: u64) {
        self.now += ms;
        for i in 0..self.cores.len() {
            self.queue.push_back((i, Input::Tick));
        }
        self.run();
    }
}

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 4000 + i as u16))
}

fn events(n: u64, tag: u64) -> Vec<Op> {
    (0..n)
        .map(|i| {
            Op::Append(Event {
                at_ms: (tag * 1000 + i) as i64,
                kind: EventKind::Login,
                user: "u".into(),
                target: format!("t{tag}"),
                detail: String::new(),
            })
        })
        .collect()
}

fn converged(net: &Net) -> bool {
    let d = net.cores[0].replica().digest();
    net.cores.iter().all(|c| c.replica().digest() == d)
}

fn leader_key() -> SigningKey {
    SigningKey::from_bytes(&[1; 32])
}

/// Gives every core of `net` the same genesis chain (roster: all cores; leader: core 0)
/// and returns the chain state and records, for signing more.
fn with_chain(net: &mut Net) -> (Chain, Vec<SignedRecord>) {
    use meshward_crdt::mastered::{Member, Roster};
    let anchor = TrustAnchor {
        cluster: ClusterId([1; 16]),
        genesis_leader: leader_key().verifying_key().to_bytes(),
    };
    let roster = Roster {
        members: (0..net.cores.len())
            .map(|i| Member {
                key: net.cores[i].me().0,
                address: addr(i).to_string(),
            })
            .collect(),
    };
    let mut chain = Chain::new(anchor);
    let genesis = chain.sign_next(&leader_key(), RecordKind::Genesis, roster.encode());
    chain.apply(chain.verify(&genesis).unwrap()).unwrap();
    for core in &mut net.cores {
        core.load_mastered(0, anchor, vec![genesis.clone()])
            .unwrap();
        core.drain();
    }
    (chain, vec![genesis])
}

fn versions(net: &Net) -> Vec<u64> {
    net.cores
        .iter()
        .map(|c| c.chain().unwrap().last_version())
        .collect()
}

fn epochs(net: &Net) -> Vec<u64> {
    net.cores
        .iter()
        .map(|c| c.chain().unwrap().epoch())
        .collect()
}

#[test]
fn a_commit_is_pushed_to_every_peer_at_once() {
    let mut net = Net::new(3);
    net.input(
        0,
        Input::Commit {
            at_us: 0,
            ops: events(5, 0),
            token: 7,
        },
    );
    assert!(converged(&net));
    assert_eq!(
        net.cores[2].replica().rows(TableId::Events).unwrap().len(),
        5
    );
    assert_eq!(net.cores[1].counters().pushes_applied, 1);
}

#[test]
fn lost_gossip_is_repaired_by_adverts_and_sync() {
    let mut net = Net::new(4);
    net.drop_gossip = true;
    for i in 0..4 {
        net.input(
            i,
            Input::Commit {
                at_us: 0,
                ops: events(3, i as u64),
                token: 0,
            },
        );
    }
    assert!(!converged(&net));
    net.drop_gossip = false;
    net.tick_all(1000);
    assert!(converged(&net), "one sync interval repairs every loss");
    assert_eq!(
        net.cores[3].replica().rows(TableId::Events).unwrap().len(),
        12
    );
}

#[test]
fn both_sides_of_a_partition_keep_writing_and_merge_after_it_heals() {
    let mut net = Net::new(5);
    for a in 0..3 {
        for b in 3..5 {
            net.cut.insert((a, b));
        }
    }
    for round in 0..5u64 {
        for i in 0..5 {
            net.input(
                i,
                Input::Commit {
                    ops: events(2, round * 10 + i as u64),
                    token: 0,
                    at_us: 0,
                },
            );
        }
    }
    assert!(!converged(&net));
    net.cut.clear();
    for _ in 0..3 {
        net.tick_all(1000);
    }
    assert!(converged(&net));
    assert_eq!(
        net.cores[0].replica().rows(TableId::Events).unwrap().len(),
        50
    );
}

#[test]
fn malformed_gossip_and_requests_are_refused_and_counted() {
    let mut net = Net::new(2);
    let peer = net.cores[1].me();
    net.cores[0].handle(
        0,
        Input::Gossip {
            source: peer,
            id: 9,
            data: vec![0xff; 100],
        },
    );
    let out = net.cores[0].drain();
    assert!(matches!(
        out.as_slice(),
        [Output::Validate {
            id: 9,
            verdict: Verdict::Reject
        }]
    ));
    net.cores[0].handle(
        0,
        Input::SyncRequest {
            peer,
            channel: 3,
            data: vec![1, 2, 3],
        },
    );
    let out = net.cores[0].drain();
    assert!(matches!(
        out.as_slice(),
        [Output::Respond { channel: 3, .. }]
    ));
    assert_eq!(net.cores[0].counters().malformed, 2);
    // The node keeps serving.
    net.input(
        1,
        Input::Commit {
            at_us: 0,
            ops: events(1, 1),
            token: 0,
        },
    );
    assert!(converged(&net));
}

#[test]
fn a_node_reconnecting_to_many_peers_fetches_what_they_share_once() {
    let mut net = Net::new(4);
    let lagging = net.cores[0].me();
    for i in 1..4 {
        net.input(i, Input::Disconnected { peer: lagging });
    }
    for i in 0..4 {
        let peer = net.cores[i].me();
        if i != 0 {
            net.input(0, Input::Disconnected { peer });
        }
    }
    for i in 1..4 {
        net.input(
            i,
            Input::Commit {
                ops: events(50, i as u64),
                token: 0,
                at_us: 0,
            },
        );
    }
    // Node 0 comes back to all three at once: one request goes out, not three.
    for i in 1..4 {
        let peer = net.cores[i].me();
        net.cores[0].handle(
            net.now,
            Input::Connected {
                peer,
                addr: addr(i),
            },
        );
    }
    let outs = net.cores[0].drain();
    let requests = outs
        .iter()
        .filter(|o| matches!(o, Output::Request { .. }))
        .count();
    assert_eq!(requests, 1);
    for out in outs {
        net.route(0, out);
    }
    for i in 1..4 {
        let peer = net.cores[0].me();
        net.queue.push_back((
            i,
            Input::Connected {
                peer,
                addr: addr(0),
            },
        ));
    }
    net.run();
    assert!(converged(&net));
    // What node 0 received is about one full answer (plus small empty ones), not three.
    let (items, _) = net.cores[1]
        .replica()
        .missing_for(&Digest::default(), usize::MAX)
        .unwrap();
    let full = Reply::Sync(SyncAnswer {
        more: false,
        message: SyncMessage { items }.encode(),
        records: Vec::new(),
    })
    .encode()
    .len();
    let received = net.cores[0].counters().bytes_received;
    assert!(
        received < full as u64 * 3 / 2,
        "received {received} B; one full answer is {full} B"
    );
}

#[test]
fn a_lost_roster_peer_is_redialled_with_backoff() {
    let mut net = Net::new(2);
    let peer = net.cores[1].me();
    net.cores[0].handle(0, Input::Disconnected { peer });
    let mut dials = Vec::new();
    for t in (0..6000).step_by(50) {
        net.cores[0].handle(t, Input::Tick);
        for out in net.cores[0].drain() {
            if let Output::Dial { .. } = out {
                dials.push(t);
            }
        }
    }
    assert_eq!(
        dials,
        vec![250, 750, 1750, 3750, 5750],
        "250 ms, then doubling up to 2 s"
    );
}

#[test]
fn a_held_core_writes_nothing_peers_send_and_catches_up_once_released() {
    let mut net = Net::new(3);
    let (chain, _) = with_chain(&mut net);
    net.hold(2, true);
    net.input(
        0,
        Input::Commit {
            at_us: 0,
            ops: events(4, 0),
            token: 1,
        },
    );
    let record = chain.sign_next(&leader_key(), RecordKind::Config, b"a=1".to_vec());
    net.input(
        0,
        Input::Master {
            token: 2,
            kind: record.record.kind,
            payload: record.record.payload.clone(),
        },
    );
    for _ in 0..3 {
        net.tick_all(1000);
    }
    assert!(!net.persists.contains(&2), "a held core asked to write");
    assert!(net.cores[2].held());
    assert!(net.cores[2].counters().held_dropped >= 2);
    assert!(
        net.cores[2]
            .replica()
            .rows(TableId::Events)
            .unwrap()
            .is_empty()
    );
    assert_eq!(versions(&net), [2, 2, 1]);
    // Its own writes are still tried: they are how the driver learns the disk has room again.
    net.input(
        2,
        Input::Commit {
            at_us: 0,
            ops: events(1, 2),
            token: 3,
        },
    );
    assert!(net.persists.contains(&2));

    net.hold(2, false);
    net.tick_all(1000);
    assert!(converged(&net));
    assert_eq!(versions(&net), [2, 2, 2]);
    assert_eq!(
        net.cores[2].replica().rows(TableId::Events).unwrap().len(),
        5
    );
}

#[test]
fn a_held_core_refuses_to_endorse_a_failover() {
    let mut net = Net::new(3);
    with_chain(&mut net);
    net.hold(2, true);
    net.isolate(0);
    net.tick_all(5000);
    net.input(
        1,
        Input::Failover {
            token: 9,
            force: false,
        },
    );
    net.tick_all(6000);
    assert!(!net.persists.contains(&2), "a held core wrote a vote");
    assert_eq!(net.cores[2].counters().endorsements_given, 0);
    assert!(net.cores[2].counters().endorsements_refused >= 1);
    let refused = net.last_done(1).unwrap_err();
    assert!(refused.contains("disk is full"), "{refused}");
}

mod audit_heads;
mod checkpoints;
mod fencing;
mod forward;
mod leaders;
mod reapply;
mod rows;

#[test]
fn roster_members_with_no_address_to_dial_cost_no_state_and_still_show_in_peers() {
    use meshward_crdt::mastered::{Member, Roster};
    let mut net = Net::new(2);
    // 500 more members, named (not socket addresses), never heard from.
    let others: Vec<[u8; 32]> = (0..500u32)
        .map(|i| {
            let mut seed = [9u8; 32];
            seed[..4].copy_from_slice(&i.to_le_bytes());
            SigningKey::from_bytes(&seed).verifying_key().to_bytes()
        })
        .collect();
    let anchor = TrustAnchor {
        cluster: ClusterId([1; 16]),
        genesis_leader: leader_key().verifying_key().to_bytes(),
    };
    let mut members: Vec<Member> = (0..2)
        .map(|i| Member {
            key: net.cores[i].me().0,
            address: addr(i).to_string(),
        })
        .collect();
    members.extend(others.iter().enumerate().map(|(i, key)| Member {
        key: *key,
        address: format!("node-{i}.example"),
    }));
    let genesis = Chain::new(anchor).sign_next(
        &leader_key(),
        RecordKind::Genesis,
        Roster { members }.encode(),
    );
    let core = &mut net.cores[0];
    core.load_mastered(0, anchor, vec![genesis]).unwrap();
    core.drain();
    // State for the one member with an address to dial, none for the named ones ...
    assert_eq!(core.peers.len(), 1);
    // ... which status still lists, as not connected and nothing known.
    let listed: Vec<_> = core.peers().collect();
    assert_eq!(listed.len(), 501);
    let named = listed
        .iter()
        .find(|(k, _)| k.0 == others[7])
        .expect("a named member is listed");
    assert!(!named.1.connected && named.1.last_seen_ms.is_none());
}
