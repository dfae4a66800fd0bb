//! Mode 1: many real node [`Core`]s on a virtual clock over a model network.
//!
//! # What is real and what is modelled
//! - **Real:** every node runs the daemon's [`Core`] over a real redb [`Store`] (redb's
//!   in-memory backend), driven as `meshward run` drives it: one input at a time, every
//!   [`Output::Persist`] made durable before the outputs after it run, the peer book written
//!   on each connection, the core rebuilt from the store on restart. Pushes, adverts, sync
//!   requests and answers are the core's own bytes, checked by the real crdt code. Every
//!   store starts with a genesis roster of all nodes signed by node 0 (as `init` makes it),
//!   so leadership is real too: a `failover` fault feeds the core's [`Input::Failover`], and
//!   endorsements, votes and hand-over records travel and persist as in the daemon.
//! - **Modelled:** the transport. Connections are set up by dials that take one round trip.
//!   Gossip is gossipsub-like: message id = SHA-256 of the bytes (as the transport's
//!   `message_id_fn`), a seen-cache drops duplicates before they reach the core, an accepted
//!   message is forwarded to the node's mesh peers except those that sent it a copy or said
//!   IDONTWANT (gossipsub v1.2), meshes are grafted and pruned by libp2p-gossipsub's rules
//!   on connect and on each heartbeat; there is no IHAVE/IWANT lazy gossip (the
//!   anti-entropy sync covers what it would repair). Messages on a connection
//!   whose link is cut wait (QUIC retransmits) and arrive after the heal, unless the
//!   connection idles out first (`idle-timeout`), which both ends see as a disconnect and
//!   which fails the sync requests in flight on it.
//!
//! # Determinism
//! One seeded RNG draws every network decision, in event order; events run in (time, order
//! scheduled) order; every map whose order reaches an event is a `BTreeMap` (the seen-cache
//! `HashMap` is only looked up); no wall clock reaches the simulation (only the progress line
//! and `wall_ms` in the summary read one). So a seed and a scenario give the same trace and
//! report, bit for bit, apart from `wall_ms`.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use ed25519_dalek::SigningKey;
use meshward_crdt::mastered::{Chain, MAX_ROSTER_MEMBERS, Member, RecordKind, Roster, TrustAnchor};
use meshward_crdt::{ClusterId, SegmentKey, WriterId};
use meshward_node::core::{Core, Input};
use meshward_node::store::{Identity, Store};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest as _, Sha256};

use crate::report::Metrics;
use crate::scenario::{FaultKind, Latency, Scenario};

mod checks;
mod credentials;
pub mod disk;
mod drive;
mod faults;
mod gossip;
mod network;
mod node;
mod storage;

/// A stored chain: cluster, genesis leader, last record's hash, length.
type ChainKey = ([u8; 16], [u8; 32], Option<[u8; 32]>, usize);

pub use crate::time::Micros;

/// Unix time (ms) the virtual clock starts at, so node clocks look like real ones and a
/// negative skew does not underflow.
const EPOCH_MS: i64 = 1_700_000_000_000;
/// The port every simulated node listens on (addresses are 10.77.x.y).
const PORT: u16 = 7946;
/// Bytes of an IDONTWANT control message on the wire (a 32-byte id and its framing).
const IDONTWANT_BYTES: usize = 40;
/// How long gossipsub remembers an IDONTWANT (libp2p-gossipsub's `IDONTWANT_TIMEOUT`).
const IDONTWANT_TTL: Micros = 3_000_000;
/// Interval of the convergence sample.
const SAMPLE_US: Micros = 100_000;

/// A simulation run.
#[derive(Debug)]
pub struct Sim {
    sc: Scenario,
    seed: u64,
    now: Micros,
    /// Pending events by time; within one time, in the order they were scheduled (the
    /// (time, sequence) order of a heap, with far fewer cache misses at a million events).
    queue: BTreeMap<Micros, VecDeque<Ev>>,
    rng: ChaCha8Rng,
    nodes: Vec<SimNode>,
    ids: Vec<WriterId>,
    index: BTreeMap<WriterId, u32>,
    roster: BTreeSet<WriterId>,
    /// Nodes that write (every node's core admits them).
    writers: BTreeSet<u32>,
    /// Verified chains by (cluster, genesis leader, last record hash, length): a stored chain
    /// many nodes hold is verified once.
    chains: HashMap<ChainKey, Chain>,
    site: Vec<usize>,
    /// One-way latency range (µs) per site pair, `sites × sites`.
    latencies: Vec<(Micros, Micros)>,
    /// The topology: who dials whom at first start (the daemon's `--peer` list).
    edges: Vec<BTreeSet<u32>>,
    conns: BTreeMap<(u32, u32), Conn>,
    next_gen: u64,
    /// Partition label per node: links between different labels are cut.
    partition: Vec<u32>,
    /// Active flapping cuts by fault index: per node 0 (not involved), 1 (side a), 2 (side b).
    flaps: BTreeMap<usize, Vec<u8>>,
    channels: BTreeMap<u64, Channel>,
    next_channel: u64,
    tx_free: Vec<Micros>,
    /// Last time a write, fault or pending fault step is scheduled.
    last_scheduled: Micros,
    /// Messages (commits) by segment head: (key, seq) → index into `metrics.messages`.
    by_head: BTreeMap<(SegmentKey, u64), usize>,
    /// Payloads of revocations some node gave up with a losing branch: each must be in force
    /// on every live node at the end (the winner signs them again).
    superseded_revocations: std::collections::BTreeSet<Vec<u8>>,
    /// Per node, the removed writers' frontiers its chain held when last looked at, and that
    /// chain's last record hash (see [`crate::frontier`]).
    frontiers: BTreeMap<u32, ([u8; 32], crate::frontier::Frontiers)>,
    /// Credential rotations acknowledged (durable on their node) ([`credentials`]).
    rotations: Vec<credentials::Acked>,
    /// Fault steps still to fire (flap steps, rolling restart steps).
    pending_faults: u64,
    /// Heals (partition heal, flap end, restart) whose convergence is not yet seen: when,
    /// and what the live nodes held then (every live node must come to hold it).
    awaiting_convergence: Vec<(Micros, BTreeMap<SegmentKey, u64>)>,
    /// Collected measurements.
    pub metrics: Metrics,
    quiet: bool,
    /// A fault asked for that never fired fails the run (the farm counts them instead).
    require_fired: bool,
    /// A deliberate bug injected into every core (tests only).
    #[cfg(feature = "bugs")]
    bug: Option<meshward_node::core::Bug>,
}

#[derive(Debug)]
struct SimNode {
    store: Store,
    identity: Identity,
    core: Option<Core>,
    incarnation: u32,
    skew_ms: i64,
    mesh: BTreeSet<u32>,
    links: BTreeSet<u32>,
    /// The seen-cache (looked up only, never iterated: its order reaches nothing).
    seen: HashMap<[u8; 32], Micros>,
    seen_order: VecDeque<([u8; 32], Micros)>,
    pending_gossip: BTreeMap<u64, (Arc<Envelope>, u32)>,
    /// Messages received but not yet forwarded (a validation delay), with the peers that sent
    /// a copy meanwhile: gossipsub forwards to none of them.
    validating: HashMap<[u8; 32], Vec<u32>>,
    /// IDONTWANTs heard: (peer, message id) → when (gossipsub forgets them after 3 s).
    dont_want: HashMap<(u32, [u8; 32]), Micros>,
    dont_want_order: VecDeque<(u32, [u8; 32], Micros)>,
    next_local: u64,
    next_token: u64,
    next_heartbeat: Micros,
    /// Highest seq held per segment, kept from the persisted heads.
    held: BTreeMap<SegmentKey, u64>,
    /// When it last crashed.
    crashed_at: Option<Micros>,
    /// The failover input in flight on it: its token and its failover (index into
    /// `metrics.failovers`).
    failover: Option<(u64, usize)>,
    /// `master` and `demote` inputs in flight: token → index into `metrics.leader_ops`.
    leader_ops: BTreeMap<u64, usize>,
    /// The copy of its store a `snapshot` fault took (a backup snapshot's bytes).
    snapshot: Option<Vec<u8>>,
    /// The disk under its store.
    disk: disk::Disk,
    /// What its store acknowledged as durable beyond `held`: mastered records and the vote.
    acked: storage::Acked,
    /// A full disk: the hold on replication, as the daemon's.
    full: storage::FullDisk,
    /// A power loss armed by a fault: how long the node then stays down.
    power_down: Option<Micros>,
    /// Why it stopped, when its store failed (it cannot trust it).
    stopped: Option<String>,
}

#[derive(Debug)]
struct Envelope {
    id: [u8; 32],
    data: Vec<u8>,
    push: bool,
    hops: u32,
}

#[derive(Debug)]
struct Conn {
    cgen: u64,
    /// Incarnations of the two ends when it was set up.
    inc: [u32; 2],
    cut_since: Option<Micros>,
    stuck: Vec<Ev>,
}

#[derive(Debug)]
struct Channel {
    server: u32,
    client: u32,
    request: u64,
    cgen: u64,
}

#[derive(Debug)]
enum Ev {
    Tick {
        node: u32,
        inc: u32,
    },
    Gossip {
        to: u32,
        from: u32,
        cgen: u64,
        env: Arc<Envelope>,
    },
    /// A gossipsub IDONTWANT: `from` holds message `id`.
    DontWant {
        to: u32,
        from: u32,
        cgen: u64,
        id: [u8; 32],
    },
    /// A validated message leaves `node` for its mesh (after the validation delay).
    Forward {
        node: u32,
        inc: u32,
        source: u32,
        env: Arc<Envelope>,
    },
    Request {
        to: u32,
        from: u32,
        cgen: u64,
        channel: u64,
        data: Vec<u8>,
    },
    Response {
        to: u32,
        from: u32,
        cgen: u64,
        request: u64,
        data: Vec<u8>,
    },
    Connect {
        from: u32,
        to: u32,
        inc: u32,
    },
    IdleCheck {
        key: (u32, u32),
        cgen: u64,
    },
    Fault(usize),
    Flap {
        fault: usize,
        cut: bool,
        left: u64,
    },
    Start(u32),
    CrashOne(u32),
    RestartOne(u32),
    Write {
        series: usize,
        k: u64,
    },
    /// An attempt of the failover `metrics.failovers[record]`.
    Failover(usize),
    /// A power loss armed on the node that its writes have not set off yet: now.
    PowerOff(u32),
    /// A disk fault ends on these nodes (`full`: a full disk, else I/O errors).
    DiskHeal {
        nodes: Vec<u32>,
        full: bool,
    },
    Sample,
}

/// The context of an input, for attributing the data it brings.
#[derive(Clone, Copy, Debug)]
enum Via {
    Local,
    Gossip(u32),
    Sync,
}

impl Sim {
    /// Sets up the nodes and schedules the scenario's writes and faults.
    pub fn new(sc: Scenario, seed: u64, quiet: bool) -> anyhow::Result<Sim> {
        let n = sc.nodes;
        let site = sc.site_of()?;
        let sites = sc.network.sites.len().max(1);
        let latencies = (0..sites * sites)
            .map(|k| match sc.latency_between(k / sites, k % sites) {
                Latency::Fixed(d) => (d.as_micros() as u64, d.as_micros() as u64),
                Latency::Uniform(lo, hi) => (lo.as_micros() as u64, hi.as_micros() as u64),
            })
            .collect();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let cluster = ClusterId(derive(seed, b"cluster", 0)[..16].try_into()?);
        let keys: Vec<SigningKey> = (0..n)
            .map(|i| SigningKey::from_bytes(&derive(seed, b"node key", i as u64)))
            .collect();
        let ids: Vec<WriterId> = keys
            .iter()
            .map(|k| WriterId::from_key(&k.verifying_key()))
            .collect();
        let index = ids
            .iter()
            .enumerate()
            .map(|(i, w)| (*w, i as u32))
            .collect();
        let roster: BTreeSet<WriterId> = ids.iter().copied().collect();
        // The cluster's mastered chain as `init` starts it: a genesis roster of every node,
        // signed by node 0, the leader of epoch 1. Roster addresses are names, not socket
        // addresses, so cores do not dial every member: the topology decides who dials whom.
        // A roster holds at most MAX_ROSTER_MEMBERS: a larger run has no chain (see
        // `Sim::admitted`).
        let anchor = TrustAnchor {
            cluster,
            genesis_leader: keys[0].verifying_key().to_bytes(),
        };
        let genesis = if n <= MAX_ROSTER_MEMBERS {
            let members = (0..n)
                .map(|i| Member {
                    key: ids[i].0,
                    address: format!("node-{i}.sim"),
                })
                .collect();
            let genesis = Chain::new(anchor).sign_next(
                &keys[0],
                RecordKind::Genesis,
                Roster { members }.encode(),
            );
            // Verified once (checking a roster of 1 000 keys takes milliseconds) and stored in
            // every store, which all start from the same empty chain of this anchor.
            Some(
                Chain::new(anchor)
                    .verify(&genesis)
                    .context("verifying the genesis record")?,
            )
        } else {
            None
        };
        let mut nodes = Vec::with_capacity(n);
        let durable = sc
            .faults
            .iter()
            .any(|f| matches!(f.kind, FaultKind::PowerLoss { .. }));
        // Every store starts the same (the schema, the anchor, the genesis record): one is
        // made, and each node's disk is a copy sharing its pages until the node writes them.
        let template = disk::Disk::new(durable);
        {
            let store = storage::open(&template, 0).context("creating a store")?;
            if let Some(genesis) = &genesis {
                store.adopt_anchor(&anchor)?;
                store
                    .append_mastered(genesis)
                    .context("storing the genesis record")?;
            }
        }
        for (i, key) in keys.into_iter().enumerate() {
            let disk = template.fork();
            let store = storage::open(&disk, i as u32).context("opening a store")?;
            nodes.push(SimNode {
                store,
                identity: Identity { key, cluster },
                core: None,
                incarnation: 0,
                skew_ms: 0,
                mesh: BTreeSet::new(),
                links: BTreeSet::new(),
                seen: HashMap::new(),
                seen_order: VecDeque::new(),
                pending_gossip: BTreeMap::new(),
                validating: HashMap::new(),
                dont_want: HashMap::new(),
                dont_want_order: VecDeque::new(),
                next_local: 0,
                next_token: 0,
                next_heartbeat: 0,
                held: BTreeMap::new(),
                crashed_at: None,
                failover: None,
                leader_ops: BTreeMap::new(),
                snapshot: None,
                disk,
                acked: storage::Acked {
                    mastered: usize::from(genesis.is_some()),
                    vote: None,
                },
                full: storage::FullDisk::default(),
                power_down: None,
                stopped: None,
            });
        }
        let mut sim = Sim {
            metrics: Metrics::new(n),
            seed,
            now: 0,
            queue: BTreeMap::new(),
            nodes,
            ids,
            index,
            roster,
            writers: BTreeSet::new(),
            chains: HashMap::new(),
            site,
            latencies,
            edges: Vec::new(),
            conns: BTreeMap::new(),
            next_gen: 0,
            partition: vec![0; n],
            flaps: BTreeMap::new(),
            channels: BTreeMap::new(),
            next_channel: 0,
            tx_free: vec![0; n],
            last_scheduled: 0,
            by_head: BTreeMap::new(),
            superseded_revocations: Default::default(),
            frontiers: BTreeMap::new(),
            rotations: Vec::new(),
            pending_faults: 0,
            awaiting_convergence: Vec::new(),
            quiet,
            require_fired: true,
            #[cfg(feature = "bugs")]
            bug: None,
            rng: ChaCha8Rng::seed_from_u64(rng.r#gen()),
            sc,
        };
        // Who dials whom at first start (the daemon's `--peer` list).
        let mut dials: Vec<Vec<u32>> = vec![Vec::new(); n];
        let degree = sim.sc.topology.degree;
        for (a, list) in dials.iter_mut().enumerate() {
            if degree == 0 || degree + 1 >= n {
                list.extend((0..n as u32).filter(|&b| b != a as u32));
            } else {
                let mut chosen = BTreeSet::new();
                while chosen.len() < degree {
                    let b = rng.gen_range(0..n as u32);
                    if b != a as u32 {
                        chosen.insert(b);
                    }
                }
                list.extend(chosen);
            }
        }
        // Each topology edge is dialled by the later of its two nodes to start.
        let mut edges: Vec<BTreeSet<u32>> = vec![BTreeSet::new(); n];
        for (a, targets) in dials.into_iter().enumerate() {
            for b in targets {
                edges[a].insert(b);
                edges[b as usize].insert(a as u32);
            }
        }
        sim.edges = edges;
        for w in &sim.sc.writes {
            sim.writers
                .extend(w.nodes.resolve(n)?.into_iter().map(|i| i as u32));
        }
        let spread = sim.sc.start_spread.as_micros() as u64;
        for i in 0..n as u32 {
            let at = if spread == 0 {
                0
            } else {
                rng.gen_range(0..spread)
            };
            sim.push(at, Ev::Start(i));
        }
        for w in &sim.sc.writes {
            let at = w.at.as_micros() as u64;
            sim.last_scheduled = sim
                .last_scheduled
                .max(at + w.every.as_micros() as u64 * w.count.saturating_sub(1));
        }
        for s in 0..sim.sc.writes.len() {
            let at = sim.sc.writes[s].at.as_micros() as u64;
            sim.push(at, Ev::Write { series: s, k: 0 });
        }
        for f in 0..sim.sc.faults.len() {
            let fault = &sim.sc.faults[f];
            let at = fault.at.as_micros() as u64;
            let end = match &fault.kind {
                FaultKind::Flap {
                    down, up, count, ..
                } => at + (*down + *up).as_micros() as u64 * count,
                FaultKind::RollingRestart {
                    nodes, down, every, ..
                } => {
                    at + every.as_micros() as u64 * nodes.resolve(n)?.len() as u64
                        + down.as_micros() as u64
                }
                _ => at,
            };
            sim.last_scheduled = sim.last_scheduled.max(end);
            *sim.metrics
                .faults_requested
                .entry(fault.kind.name().to_string())
                .or_default() += 1;
            sim.push(at, Ev::Fault(f));
        }
        sim.push(SAMPLE_US, Ev::Sample);
        Ok(sim)
    }

    /// Counts faults that did not fire instead of failing the run for them (a generated
    /// scenario asks for faults that may rightly not happen: a failover the others refuse, a
    /// crash of a node already down).
    pub fn count_unfired_faults(&mut self) {
        self.require_fired = false;
    }

    /// Injects `bug` into every core this run starts (tests of the oracles).
    #[cfg(feature = "bugs")]
    pub fn inject(&mut self, bug: meshward_node::core::Bug) {
        self.bug = Some(bug);
    }

    /// The peers node `node`'s core admits: every node, as the genesis roster says; beyond
    /// a roster's bound (no chain), its topology neighbours and every node that writes, which
    /// is all it needs to relay and keep their rows (a real cluster stops at the bound).
    fn admitted(&self, node: u32) -> BTreeSet<WriterId> {
        if self.sc.nodes <= MAX_ROSTER_MEMBERS {
            return self.roster.clone();
        }
        let mut admitted: BTreeSet<WriterId> = self.edges[node as usize]
            .iter()
            .map(|&b| self.ids[b as usize])
            .collect();
        admitted.insert(self.ids[node as usize]);
        admitted.extend(self.writers.iter().map(|&w| self.ids[w as usize]));
        admitted
    }

    /// Runs to the end: past the scenario's duration and every scheduled write and fault,
    /// until the live nodes converge (their rows and their mastered chains) or `settle` runs
    /// out.
    pub fn run(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        let mut last_progress = Instant::now();
        let duration = (self.sc.duration.as_micros() as u64).max(self.last_scheduled);
        let deadline = duration + self.sc.settle.as_micros() as u64;
        while let Some(mut bucket) = self.queue.first_entry() {
            let at = *bucket.key();
            if at > deadline {
                break;
            }
            let Some(ev) = bucket.get_mut().pop_front() else {
                bucket.remove();
                continue;
            };
            if bucket.get().is_empty() {
                bucket.remove();
            }
            self.now = at;
            self.metrics.events += 1;
            let sample = matches!(ev, Ev::Sample);
            self.handle(ev)?;
            if sample {
                if !self.quiet && last_progress.elapsed().as_millis() >= 500 {
                    last_progress = Instant::now();
                    self.progress(duration, started);
                }
                if self.now >= duration
                    && self.pending_faults == 0
                    && self.metrics.converged_at.is_some()
                    && self.chains_agree()
                {
                    break;
                }
            }
        }
        self.metrics.wall_ms = started.elapsed().as_millis() as u64;
        self.metrics.end_us = self.now;
        self.metrics.mesh_mean = self.mean_mesh();
        if !self.quiet {
            self.progress(duration, started);
            eprintln!();
        }
        self.final_checks()
    }

    fn progress(&self, duration: Micros, started: Instant) {
        let live = self.nodes.iter().filter(|n| n.core.is_some()).count();
        eprint!(
            "\r[meshward-sim] {}: t={:.1}s/{:.1}s events={} live={}/{} messages={} converged={:.1}% wall={:.1}s   ",
            self.sc.name,
            self.now as f64 / 1e6,
            duration as f64 / 1e6,
            self.metrics.events,
            live,
            self.nodes.len(),
            self.metrics.messages.len(),
            self.metrics
                .convergence
                .last()
                .map_or(0.0, |(_, f)| f * 100.0),
            started.elapsed().as_secs_f64()
        );
    }

    fn push(&mut self, at: Micros, ev: Ev) {
        self.queue.entry(at).or_default().push_back(ev);
    }

    fn handle(&mut self, ev: Ev) -> anyhow::Result<()> {
        match ev {
            Ev::Tick { node, inc } => {
                if self.alive(node, inc) {
                    self.heartbeat(node);
                    self.release_hold(node)?;
                    self.feed(node, Input::Tick, Via::Local)?;
                    let tick = self.sc.tick.as_micros() as u64;
                    self.push(self.now + tick, Ev::Tick { node, inc });
                }
            }
            Ev::Gossip {
                to,
                from,
                cgen,
                env,
            } => {
                if !self.arrive(from, to, cgen, env.data.len()) {
                    return Ok(());
                }
                self.receive_gossip(to, from, env)?;
            }
            Ev::DontWant { to, from, cgen, id } => {
                if self.arrive(from, to, cgen, IDONTWANT_BYTES) {
                    self.dont_want(to, from, id);
                }
            }
            Ev::Forward {
                node,
                inc,
                source,
                env,
            } => {
                if self.alive(node, inc) {
                    self.forward(node, source, &env);
                }
            }
            Ev::Request {
                to,
                from,
                cgen,
                channel,
                data,
            } => {
                if !self.arrive(from, to, cgen, data.len()) {
                    return Ok(());
                }
                let peer = self.ids[from as usize];
                self.feed(
                    to,
                    Input::SyncRequest {
                        peer,
                        channel,
                        data,
                    },
                    Via::Sync,
                )?;
            }
            Ev::Response {
                to,
                from,
                cgen,
                request,
                data,
            } => {
                if !self.arrive(from, to, cgen, data.len()) {
                    return Ok(());
                }
                let peer = self.ids[from as usize];
                self.feed(
                    to,
                    Input::SyncResponse {
                        peer,
                        request,
                        data,
                    },
                    Via::Sync,
                )?;
            }
            Ev::Connect { from, to, inc } => self.connect(from, to, inc)?,
            Ev::IdleCheck { key, cgen } => self.idle_check(key, cgen)?,
            Ev::Fault(f) => self.fault(f)?,
            Ev::Flap { fault, cut, left } => self.flap(fault, cut, left)?,
            Ev::Start(node) => {
                self.start_node(node)?;
                self.push(self.now, Ev::Tick { node, inc: 0 });
            }
            Ev::CrashOne(n) => {
                self.pending_faults -= 1;
                self.crash(n);
            }
            Ev::RestartOne(n) => {
                self.pending_faults -= 1;
                self.restart(n)?;
            }
            Ev::Write { series, k } => self.write(series, k)?,
            Ev::Failover(record) => self.failover(record)?,
            Ev::PowerOff(node) => self.power_off(node)?,
            Ev::DiskHeal { nodes, full } => self.disk_heal(&nodes, full)?,
            Ev::Sample => {
                self.sample();
                self.push(self.now + SAMPLE_US, Ev::Sample);
            }
        }
        Ok(())
    }
}

fn humantime_fmt(d: std::time::Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

fn pair(a: u32, b: u32) -> (u32, u32) {
    (a.min(b), a.max(b))
}

/// The simulated address of node `i`.
fn addr(i: u32) -> SocketAddr {
    SocketAddr::from(([10, 77, (i / 250) as u8, (i % 250 + 1) as u8], PORT))
}

/// 32 deterministic bytes for (seed, purpose, index).
fn derive(seed: u64, purpose: &[u8], i: u64) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"meshward-sim\0");
    h.update(seed.to_le_bytes());
    h.update(purpose);
    h.update(i.to_le_bytes());
    h.finalize().into()
}
