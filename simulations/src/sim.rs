//! Mode 1: many real node [`Core`]s on a virtual clock over a model network.
//!
//! # What is real and what is modelled
//! - **Real:** every node runs the daemon's [`Core`] over a real redb [`Store`] (redb's
//!   in-memory backend), driven as `meshward run` drives it: one input at a time, every
//!   [`Output::Persist`] made durable before the outputs after it run, the peer book written
//!   on each connection, the core rebuilt from the store on restart. Pushes, adverts, sync
//!   requests and answers are the core's own bytes, checked by the real crdt code.
//! - **Modelled:** the transport. Connections are set up by dials that take one round trip.
//!   Gossip is gossipsub-like: message id = SHA-256 of the bytes (as the transport's
//!   `message_id_fn`), a seen-cache drops duplicates before they reach the core, an accepted
//!   message is forwarded to the node's mesh peers except its source, meshes are grafted
//!   symmetrically on connect and repaired on each heartbeat; there is no IHAVE/IWANT lazy
//!   gossip (the anti-entropy sync covers what it would repair). Messages on a connection
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
use meshward_crdt::mastered::{Chain, Member};
use meshward_crdt::{
    ClusterId, Effects, Event, EventKind, Op, Persist, ReplicaConfig, SegmentKey, TableId, WriterId,
};
use meshward_node::core::{Core, CoreConfig, Input, Output, Verdict};
use meshward_node::roster::{self, MasteredBundle};
use meshward_node::store::{Identity, PeerEntry, Store};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest as _, Sha256};

use crate::oracle;
use crate::report::{Failover, Metrics, Reach};
use crate::scenario::{FaultKind, Latency, Scenario};

/// Virtual time in microseconds since the start of the run.
pub type Micros = u64;

/// Unix time (ms) the virtual clock starts at, so node clocks look like real ones and a
/// negative skew does not underflow.
const EPOCH_MS: i64 = 1_700_000_000_000;
/// The port every simulated node listens on (addresses are 10.77.x.y).
const PORT: u16 = 7946;
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
    /// Fault steps still to fire (flap steps, rolling restart steps).
    pending_faults: u64,
    /// Heals (partition heal, flap end, restart) whose convergence is not yet seen: when,
    /// and what the live nodes held then (every live node must come to hold it).
    awaiting_convergence: Vec<(Micros, BTreeMap<SegmentKey, u64>)>,
    /// Collected measurements.
    pub metrics: Metrics,
    quiet: bool,
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
        let members = (0..n)
            .map(|i| Member {
                key: ids[i].0,
                address: format!("node-{i}.sim"),
            })
            .collect();
        let genesis = MasteredBundle::genesis(&keys[0], cluster, members).encode();
        let mut nodes = Vec::with_capacity(n);
        for key in keys {
            let store = Store::in_memory().context("creating an in-memory store")?;
            roster::import(&store, &genesis).context("importing the genesis roster")?;
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
                next_local: 0,
                next_token: 0,
                next_heartbeat: 0,
                held: BTreeMap::new(),
                crashed_at: None,
                failover: None,
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
            pending_faults: 0,
            awaiting_convergence: Vec::new(),
            quiet,
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

    /// Runs to the end: past the scenario's duration and every scheduled write and fault,
    /// until the live nodes converge or `settle` runs out.
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
                {
                    break;
                }
            }
        }
        self.metrics.wall_ms = started.elapsed().as_millis() as u64;
        self.metrics.end_us = self.now;
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
                if !self.conn_current(from, to, cgen) {
                    self.metrics.dropped_closed += 1;
                    return Ok(());
                }
                self.metrics.bytes_received[to as usize] += env.data.len() as u64;
                self.receive_gossip(to, from, env)?;
            }
            Ev::Request {
                to,
                from,
                cgen,
                channel,
                data,
            } => {
                if !self.conn_current(from, to, cgen) {
                    self.metrics.dropped_closed += 1;
                    return Ok(());
                }
                self.metrics.bytes_received[to as usize] += data.len() as u64;
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
                if !self.conn_current(from, to, cgen) {
                    self.metrics.dropped_closed += 1;
                    return Ok(());
                }
                self.metrics.bytes_received[to as usize] += data.len() as u64;
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
                self.dial_edges(node);
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
            Ev::Sample => {
                self.sample();
                self.push(self.now + SAMPLE_US, Ev::Sample);
            }
        }
        Ok(())
    }

    // ---- nodes -------------------------------------------------------------------------

    fn alive(&self, node: u32, inc: u32) -> bool {
        let n = &self.nodes[node as usize];
        n.core.is_some() && n.incarnation == inc
    }

    /// The node's clock in ms: virtual time plus its skew.
    fn clock_ms(&self, node: u32) -> u64 {
        (EPOCH_MS + (self.now / 1000) as i64 + self.nodes[node as usize].skew_ms).max(0) as u64
    }

    /// Builds the node's core from its store, as `meshward run` does at start.
    fn start_node(&mut self, node: u32) -> anyhow::Result<()> {
        let now = self.clock_ms(node);
        let seed = u64::from_le_bytes(
            derive(
                self.seed,
                b"core seed",
                (node as u64) << 32 | self.nodes[node as usize].incarnation as u64,
            )[..8]
                .try_into()?,
        );
        let n = &mut self.nodes[node as usize];
        let replica = n
            .store
            .load_replica(&n.identity, ReplicaConfig::default())
            .context("loading the replica from the store")?;
        let known = n.store.known_peers()?;
        n.held = replica
            .digest()
            .segments
            .iter()
            .map(|s| (s.key, s.seq))
            .collect();
        let mut core = Core::new(
            replica,
            self.roster.clone(),
            CoreConfig::default(),
            seed,
            known,
            now,
        );
        roster::load_into(&n.store, &mut core, now)?;
        n.core = Some(core);
        n.next_heartbeat = self.now;
        Ok(())
    }

    /// Dials the node's topology peers that are up (its `--peer` list, given again at
    /// every start).
    fn dial_edges(&mut self, node: u32) {
        let peers: Vec<u32> = self.edges[node as usize]
            .iter()
            .copied()
            .filter(|&b| self.nodes[b as usize].core.is_some())
            .collect();
        for b in peers {
            self.dial(node, b);
        }
    }

    fn crash(&mut self, node: u32) {
        let n = &mut self.nodes[node as usize];
        if n.core.is_none() {
            return;
        }
        *self
            .metrics
            .faults_fired
            .entry("crash".to_string())
            .or_default() += 1;
        n.core = None;
        n.incarnation += 1;
        n.crashed_at = Some(self.now);
        if let Some((_, record)) = n.failover.take() {
            self.metrics.failovers[record].gave_up = Some("the candidate crashed".into());
            self.pending_faults -= 1;
        }
        n.mesh.clear();
        n.seen.clear();
        n.seen_order.clear();
        n.pending_gossip.clear();
        // Its peers notice when the connections idle out.
        let idle = self.sc.network.idle_timeout.as_micros() as u64;
        let links: Vec<u32> = std::mem::take(&mut n.links).into_iter().collect();
        for b in links {
            let key = pair(node, b);
            if let Some(c) = self.conns.get(&key) {
                let cgen = c.cgen;
                self.push(self.now + idle, Ev::IdleCheck { key, cgen });
            }
        }
    }

    fn restart(&mut self, node: u32) -> anyhow::Result<()> {
        if self.nodes[node as usize].core.is_some() {
            return Ok(());
        }
        *self
            .metrics
            .faults_fired
            .entry("restart".to_string())
            .or_default() += 1;
        self.start_node(node)?;
        self.dial_edges(node);
        let inc = self.nodes[node as usize].incarnation;
        self.push(self.now, Ev::Tick { node, inc });
        self.await_convergence();
        self.metrics.converged_at = None;
        Ok(())
    }

    /// Feeds one input, then executes the outputs as the daemon does: persists first (one
    /// transaction), then the rest in order; follow-up inputs are fed after.
    fn feed(&mut self, node: u32, input: Input, via: Via) -> anyhow::Result<()> {
        let mut inputs = VecDeque::from([input]);
        while let Some(input) = inputs.pop_front() {
            let now = self.clock_ms(node);
            let Some(core) = self.nodes[node as usize].core.as_mut() else {
                return Ok(());
            };
            core.handle(now, input);
            let mut persist = Vec::new();
            let mut rest = Vec::new();
            for out in core.drain() {
                match out {
                    Output::Persist(effects) => persist.push(effects),
                    other => rest.push(other),
                }
            }
            if !persist.is_empty() {
                self.nodes[node as usize]
                    .store
                    .persist_all(&persist)
                    .context("persisting replicated data")?;
                for effects in &persist {
                    self.track(node, effects, via);
                }
            }
            let chain_moved = rest
                .iter()
                .any(|o| matches!(o, Output::PersistMastered(_) | Output::AdoptChain { .. }));
            for out in rest {
                self.execute(node, out, &mut inputs)?;
            }
            if chain_moved {
                self.check_followed();
            }
        }
        Ok(())
    }

    fn execute(
        &mut self,
        node: u32,
        out: Output,
        inputs: &mut VecDeque<Input>,
    ) -> anyhow::Result<()> {
        match out {
            Output::Persist(_) => unreachable!("persists are taken out before"),
            Output::Publish(data) => self.publish(node, data),
            Output::Validate { id, verdict } => {
                if let Some((env, source)) = self.nodes[node as usize].pending_gossip.remove(&id) {
                    match verdict {
                        Verdict::Accept => self.forward(node, source, &env),
                        Verdict::Ignore => self.metrics.gossip_ignored += 1,
                        Verdict::Reject => self.metrics.gossip_rejected += 1,
                    }
                }
            }
            Output::Request {
                peer,
                request,
                data,
            } => {
                let to = self.index[&peer];
                match self.conns.get(&pair(node, to)) {
                    Some(c) if self.conn_fresh(pair(node, to)) => {
                        let cgen = c.cgen;
                        self.next_channel += 1;
                        let channel = self.next_channel;
                        self.channels.insert(
                            channel,
                            Channel {
                                server: to,
                                client: node,
                                request,
                                cgen,
                            },
                        );
                        self.metrics.sync_requests += 1;
                        let len = data.len();
                        self.send(
                            node,
                            to,
                            len,
                            false,
                            Ev::Request {
                                to,
                                from: node,
                                cgen,
                                channel,
                                data,
                            },
                        );
                    }
                    _ => inputs.push_back(Input::SyncFailed { peer, request }),
                }
            }
            Output::Respond { channel, data } => {
                if let Some(ch) = self.channels.remove(&channel) {
                    let len = data.len();
                    self.send(
                        ch.server,
                        ch.client,
                        len,
                        false,
                        Ev::Response {
                            to: ch.client,
                            from: ch.server,
                            cgen: ch.cgen,
                            request: ch.request,
                            data,
                        },
                    );
                }
            }
            Output::Dial { peer, .. } => {
                let to = self.index[&peer];
                self.dial(node, to);
            }
            Output::PersistMastered(record) => self.nodes[node as usize]
                .store
                .append_mastered(&record)
                .context("persisting a mastered record")?,
            Output::PersistVote { epoch, candidate } => self.nodes[node as usize]
                .store
                .set_vote(epoch, &candidate)
                .context("persisting a vote")?,
            Output::AdoptChain {
                from,
                records,
                superseded,
            } => self.nodes[node as usize]
                .store
                .replace_mastered(from, &records, &superseded)
                .context("replacing the mastered chain")?,
            Output::Superseded(records) => self.nodes[node as usize]
                .store
                .add_superseded(&records)
                .context("keeping superseded records")?,
            Output::Done { token, result } => self.failover_done(node, token, result),
            // The model network admits every simulated node.
            Output::Roster(_) => {}
            Output::Applied { .. } | Output::Committed { .. } => {}
        }
        Ok(())
    }

    /// Records what persisted effects made a node hold: the dissemination measurements.
    fn track(&mut self, node: u32, effects: &Effects, via: Via) {
        for p in &effects.persist {
            let head = match p {
                Persist::Snapshot { head, .. } | Persist::Append { head, .. } => &head.head,
            };
            let held = self.nodes[node as usize].held.entry(head.key).or_insert(0);
            let before = *held;
            if head.seq <= before {
                continue;
            }
            *held = head.seq;
            if matches!(via, Via::Local) {
                for seq in before + 1..=head.seq {
                    let m = self.metrics.new_message(node, self.now);
                    self.by_head.insert((head.key, seq), m);
                }
                continue;
            }
            let hops = match via {
                Via::Gossip(h) => Some(h),
                _ => None,
            };
            for (_, &m) in self
                .by_head
                .range((head.key, before + 1)..=(head.key, head.seq))
            {
                self.metrics.reached(
                    m,
                    Reach {
                        node,
                        at: self.now,
                        hops,
                    },
                );
            }
        }
    }

    fn write(&mut self, series: usize, k: u64) -> anyhow::Result<()> {
        let w = &self.sc.writes[series];
        let nodes = w.nodes.resolve(self.sc.nodes)?;
        let node = nodes[(k % nodes.len() as u64) as usize] as u32;
        let rows = w.rows;
        if k + 1 < w.count {
            let next = self.now + w.every.as_micros() as u64;
            self.push(next, Ev::Write { series, k: k + 1 });
        }
        if self.nodes[node as usize].core.is_none() {
            self.metrics.writes_skipped += 1;
            return Ok(());
        }
        let at_ms = self.clock_ms(node) as i64;
        let ops = (0..rows)
            .map(|r| {
                Op::Append(Event {
                    at_ms,
                    kind: EventKind::Login,
                    user: "sim".into(),
                    target: format!("n{node}-s{series}-w{k}-r{r}"),
                    detail: String::new(),
                })
            })
            .collect();
        let n = &mut self.nodes[node as usize];
        n.next_token += 1;
        let token = n.next_token;
        self.metrics.writes += 1;
        self.feed(
            node,
            Input::Commit {
                ops,
                token,
                at_us: at_ms as u64 * 1000,
            },
            Via::Local,
        )
    }

    // ---- gossip ------------------------------------------------------------------------

    fn remember(&mut self, node: u32, id: [u8; 32]) -> bool {
        let ttl = self.sc.gossip.seen_ttl.as_micros() as u64;
        let now = self.now;
        let n = &mut self.nodes[node as usize];
        while let Some(&(old, at)) = n.seen_order.front() {
            if at + ttl > now {
                break;
            }
            n.seen_order.pop_front();
            if n.seen.get(&old) == Some(&at) {
                n.seen.remove(&old);
            }
        }
        if n.seen.contains_key(&id) {
            return false;
        }
        n.seen.insert(id, now);
        n.seen_order.push_back((id, now));
        true
    }

    fn publish(&mut self, node: u32, data: Vec<u8>) {
        let id: [u8; 32] = Sha256::digest(&data).into();
        let n = &self.nodes[node as usize];
        let targets: Vec<u32> = if self.sc.gossip.flood_publish {
            n.links.iter().copied().collect()
        } else if n.mesh.is_empty() {
            // Fanout: no mesh yet, send to up to D connected peers.
            n.links
                .iter()
                .copied()
                .take(self.sc.gossip.mesh_n)
                .collect()
        } else {
            n.mesh.iter().copied().collect()
        };
        // As gossipsub: a duplicate is refused first; a message with no peer to go to is
        // refused without entering the seen-cache.
        if n.seen.contains_key(&id) {
            self.metrics.publish_duplicates += 1;
            return;
        }
        if targets.is_empty() {
            self.metrics.publish_no_peers += 1;
            return;
        }
        self.remember(node, id);
        let push = matches!(
            meshward_node::core::Gossip::decode(&data),
            Some(meshward_node::core::Gossip::Push { .. })
        );
        if push {
            self.metrics.pushes += 1;
        } else {
            self.metrics.adverts += 1;
        }
        let env = Arc::new(Envelope {
            id,
            data,
            push,
            hops: 1,
        });
        for to in targets {
            self.send_gossip(node, to, &env);
        }
    }

    fn forward(&mut self, node: u32, source: u32, env: &Arc<Envelope>) {
        let next = Arc::new(Envelope {
            id: env.id,
            data: env.data.clone(),
            push: env.push,
            hops: env.hops + 1,
        });
        let targets: Vec<u32> = self.nodes[node as usize]
            .mesh
            .iter()
            .copied()
            .filter(|&p| p != source)
            .collect();
        for to in targets {
            self.send_gossip(node, to, &next);
        }
    }

    fn send_gossip(&mut self, from: u32, to: u32, env: &Arc<Envelope>) {
        let key = pair(from, to);
        let Some(c) = self.conns.get(&key) else {
            return;
        };
        let cgen = c.cgen;
        let copies = if self.sc.network.duplicate > 0.0
            && self.rng.r#gen::<f64>() < self.sc.network.duplicate
        {
            self.metrics.network_duplicated += 1;
            2
        } else {
            1
        };
        let ttl = self.sc.gossip.seen_ttl.as_micros() as u64;
        let receiver = &self.nodes[to as usize];
        let known = receiver.core.is_some()
            && receiver
                .seen
                .get(&env.id)
                .is_some_and(|&t| t + ttl > self.now + 1_000_000);
        if known && !self.cut(from, to) {
            // The receiver already holds this id and will drop every copy as a duplicate:
            // count the copies now instead of scheduling them (the nodes see no difference;
            // this halves the events of a large run).
            for _ in 0..copies {
                self.shortcut_duplicate(from, to, env);
            }
            return;
        }
        for _ in 0..copies {
            self.send(
                from,
                to,
                env.data.len(),
                true,
                Ev::Gossip {
                    to,
                    from,
                    cgen,
                    env: env.clone(),
                },
            );
        }
    }

    fn shortcut_duplicate(&mut self, from: u32, to: u32, env: &Envelope) {
        let len = env.data.len() as u64;
        self.metrics.bytes_sent[from as usize] += len;
        if let Some(bw) = self.sc.network.bandwidth {
            let start = self.tx_free[from as usize].max(self.now);
            self.tx_free[from as usize] = start + (len * 1_000_000).div_ceil(bw);
        }
        let loss = self.sc.network.loss;
        if loss > 0.0 && self.rng.r#gen::<f64>() < loss {
            self.metrics.lost += 1;
            return;
        }
        self.metrics.bytes_received[to as usize] += len;
        if env.push {
            self.metrics.push_duplicates += 1;
        } else {
            self.metrics.advert_duplicates += 1;
        }
    }

    fn receive_gossip(&mut self, to: u32, from: u32, env: Arc<Envelope>) -> anyhow::Result<()> {
        if self.nodes[to as usize].core.is_none() {
            return Ok(());
        }
        if !self.remember(to, env.id) {
            if env.push {
                self.metrics.push_duplicates += 1;
            } else {
                self.metrics.advert_duplicates += 1;
            }
            return Ok(());
        }
        let n = &mut self.nodes[to as usize];
        n.next_local += 1;
        let id = n.next_local;
        let data = env.data.clone();
        let hops = env.hops;
        n.pending_gossip.insert(id, (env, from));
        let source = self.ids[from as usize];
        self.feed(to, Input::Gossip { source, id, data }, Via::Gossip(hops))
    }

    /// Mesh maintenance (the gossipsub heartbeat): graft up to `mesh-n` when below
    /// `mesh-n-low`, prune down to `mesh-n` when above `mesh-n-high`.
    fn heartbeat(&mut self, node: u32) {
        let g = self.sc.gossip.clone();
        let n = &mut self.nodes[node as usize];
        if self.now < n.next_heartbeat {
            return;
        }
        n.next_heartbeat = self.now + g.heartbeat.as_micros() as u64;
        if n.mesh.len() < g.mesh_n_low {
            let mut candidates: Vec<u32> = n.links.difference(&n.mesh).copied().collect();
            while self.nodes[node as usize].mesh.len() < g.mesh_n && !candidates.is_empty() {
                let c = candidates.swap_remove(self.rng.gen_range(0..candidates.len()));
                self.graft(node, c);
            }
        } else if n.mesh.len() > g.mesh_n_high {
            let mut mesh: Vec<u32> = n.mesh.iter().copied().collect();
            while mesh.len() > g.mesh_n {
                let c = mesh.swap_remove(self.rng.gen_range(0..mesh.len()));
                self.nodes[node as usize].mesh.remove(&c);
                self.nodes[c as usize].mesh.remove(&node);
            }
        }
    }

    fn graft(&mut self, a: u32, b: u32) {
        self.nodes[a as usize].mesh.insert(b);
        self.nodes[b as usize].mesh.insert(a);
    }

    // ---- connections and the network ---------------------------------------------------

    fn cut(&self, a: u32, b: u32) -> bool {
        if self.partition[a as usize] != self.partition[b as usize] {
            return true;
        }
        self.flaps.values().any(|side| {
            let (x, y) = (side[a as usize], side[b as usize]);
            x != 0 && y != 0 && x != y
        })
    }

    fn conn_fresh(&self, key: (u32, u32)) -> bool {
        self.conns.get(&key).is_some_and(|c| {
            c.inc[0] == self.nodes[key.0 as usize].incarnation
                && c.inc[1] == self.nodes[key.1 as usize].incarnation
        })
    }

    fn conn_current(&self, from: u32, to: u32, cgen: u64) -> bool {
        let key = pair(from, to);
        self.conns.get(&key).is_some_and(|c| {
            c.cgen == cgen
                && c.inc[0] == self.nodes[key.0 as usize].incarnation
                && c.inc[1] == self.nodes[key.1 as usize].incarnation
        })
    }

    fn latency(&mut self, a: u32, b: u32) -> Micros {
        let sites = self.sc.network.sites.len().max(1);
        let (lo, hi) = self.latencies[self.site[a as usize] * sites + self.site[b as usize]];
        if lo == hi {
            lo
        } else {
            self.rng.gen_range(lo..=hi)
        }
    }

    fn dial(&mut self, from: u32, to: u32) {
        if self.cut(from, to) || self.nodes[to as usize].core.is_none() {
            self.metrics.dials_failed += 1;
            return;
        }
        let rtt = 2 * self.latency(from, to);
        let inc = self.nodes[from as usize].incarnation;
        self.push(self.now + rtt, Ev::Connect { from, to, inc });
    }

    fn connect(&mut self, from: u32, to: u32, inc: u32) -> anyhow::Result<()> {
        if !self.alive(from, inc) || self.nodes[to as usize].core.is_none() || self.cut(from, to) {
            self.metrics.dials_failed += 1;
            return Ok(());
        }
        let key = pair(from, to);
        if self.conn_fresh(key) {
            return Ok(());
        }
        if let Some(old) = self.conns.remove(&key) {
            self.fail_channels(old.cgen);
        }
        self.next_gen += 1;
        self.conns.insert(
            key,
            Conn {
                cgen: self.next_gen,
                inc: [
                    self.nodes[key.0 as usize].incarnation,
                    self.nodes[key.1 as usize].incarnation,
                ],
                cut_since: None,
                stuck: Vec::new(),
            },
        );
        self.metrics.connections += 1;
        for (a, b) in [(from, to), (to, from)] {
            self.nodes[a as usize].links.insert(b);
            if self.nodes[a as usize].mesh.len() < self.sc.gossip.mesh_n
                && self.nodes[b as usize].mesh.len() < self.sc.gossip.mesh_n_high
            {
                self.graft(a, b);
            }
            let peer = self.ids[b as usize];
            let addr = addr(b);
            let entry = PeerEntry {
                addresses: vec![addr.to_string()],
                last_seen_ms: self.clock_ms(a) as i64,
            };
            self.nodes[a as usize]
                .store
                .remember_peer(&peer.to_hex(), &entry)?;
            self.feed(a, Input::Connected { peer, addr }, Via::Sync)?;
        }
        Ok(())
    }

    fn idle_check(&mut self, key: (u32, u32), cgen: u64) -> anyhow::Result<()> {
        let idle = self.sc.network.idle_timeout.as_micros() as u64;
        let Some(c) = self.conns.get(&key) else {
            return Ok(());
        };
        if c.cgen != cgen {
            return Ok(());
        }
        let cut_long = c.cut_since.is_some_and(|t| t + idle <= self.now);
        if !cut_long && self.conn_fresh(key) {
            return Ok(());
        }
        let inc = c.inc;
        self.conns.remove(&key);
        self.fail_channels(cgen);
        self.metrics.disconnects += 1;
        for (i, (a, b)) in [(key.0, key.1), (key.1, key.0)].into_iter().enumerate() {
            if self.nodes[a as usize].incarnation != inc[i] {
                continue;
            }
            let n = &mut self.nodes[a as usize];
            n.links.remove(&b);
            n.mesh.remove(&b);
            let peer = self.ids[b as usize];
            self.feed(a, Input::Disconnected { peer }, Via::Sync)?;
        }
        Ok(())
    }

    /// Fails the sync requests in flight on a closed connection.
    fn fail_channels(&mut self, cgen: u64) {
        let failed: Vec<u64> = self
            .channels
            .iter()
            .filter(|(_, c)| c.cgen == cgen)
            .map(|(k, _)| *k)
            .collect();
        for k in failed {
            if let Some(c) = self.channels.remove(&k) {
                let peer = self.ids[c.server as usize];
                let client = c.client;
                let request = c.request;
                // Fed at once: the transport reports the failure when the connection closes.
                if let Err(e) = self.feed(client, Input::SyncFailed { peer, request }, Via::Sync) {
                    self.metrics.errors.push(format!("{e:#}"));
                }
            }
        }
    }

    /// Sends `ev` (carrying `len` bytes) from `from` to `to` on their connection.
    fn send(&mut self, from: u32, to: u32, len: usize, lossy: bool, ev: Ev) {
        self.metrics.bytes_sent[from as usize] += len as u64;
        let key = pair(from, to);
        let cut = self.cut(from, to);
        if let Some(c) = self.conns.get_mut(&key)
            && cut
        {
            c.stuck.push(ev);
            self.metrics.held_by_cut += 1;
            return;
        }
        let net = &self.sc.network;
        let (loss, reorder, reorder_delay, bandwidth) =
            (net.loss, net.reorder, net.reorder_delay, net.bandwidth);
        let mut delay = self.latency(from, to);
        if loss > 0.0 && self.rng.r#gen::<f64>() < loss {
            if lossy {
                self.metrics.lost += 1;
                return;
            }
            // A lost packet on a reliable stream costs one retransmission timeout.
            self.metrics.retransmitted += 1;
            delay += 3 * delay + 25_000;
        }
        if reorder > 0.0 && self.rng.r#gen::<f64>() < reorder {
            self.metrics.reordered += 1;
            delay += self.rng.gen_range(0..=reorder_delay.as_micros() as u64);
        }
        let mut at = self.now;
        if let Some(bw) = bandwidth {
            let start = self.tx_free[from as usize].max(self.now);
            let done = start + (len as u64 * 1_000_000).div_ceil(bw);
            self.tx_free[from as usize] = done;
            at = done;
        }
        self.push(at + delay, ev);
    }

    /// Recomputes which connections are cut: newly cut ones start idling, healed ones deliver
    /// what waited.
    fn links_changed(&mut self) {
        let idle = self.sc.network.idle_timeout.as_micros() as u64;
        let keys: Vec<(u32, u32)> = self.conns.keys().copied().collect();
        for key in keys {
            let cut = self.cut(key.0, key.1);
            let Some(c) = self.conns.get_mut(&key) else {
                continue;
            };
            match (cut, c.cut_since) {
                (true, None) => {
                    c.cut_since = Some(self.now);
                    let cgen = c.cgen;
                    self.push(self.now + idle, Ev::IdleCheck { key, cgen });
                }
                (false, Some(_)) => {
                    c.cut_since = None;
                    let stuck = std::mem::take(&mut c.stuck);
                    for ev in stuck {
                        let delay = self.latency(key.0, key.1);
                        self.push(self.now + delay, ev);
                    }
                }
                _ => {}
            }
        }
    }

    // ---- faults ------------------------------------------------------------------------

    fn fired(&mut self, name: &str) {
        *self
            .metrics
            .faults_fired
            .entry(name.to_string())
            .or_default() += 1;
    }

    fn fault(&mut self, f: usize) -> anyhow::Result<()> {
        let n = self.sc.nodes;
        let kind = self.sc.faults[f].kind.clone();
        match kind {
            FaultKind::Partition { groups } => {
                let mut label = vec![groups.len() as u32 + 1; n];
                for (g, nodes) in groups.iter().enumerate() {
                    for i in nodes.resolve(n)? {
                        label[i] = g as u32 + 1;
                    }
                }
                self.partition = label;
                self.fired("partition");
                self.metrics.converged_at = None;
                self.links_changed();
            }
            FaultKind::Heal {} => {
                self.partition = vec![0; n];
                self.flaps.clear();
                self.fired("heal");
                self.metrics.heals.push(self.now);
                self.await_convergence();
                self.metrics.converged_at = None;
                self.links_changed();
            }
            FaultKind::Flap { count, .. } => {
                self.pending_faults += 2 * count;
                self.push(
                    self.now,
                    Ev::Flap {
                        fault: f,
                        cut: true,
                        left: count,
                    },
                );
            }
            FaultKind::Crash { nodes } => {
                for i in nodes.resolve(n)? {
                    self.crash(i as u32);
                }
            }
            FaultKind::Restart { nodes } => {
                for i in nodes.resolve(n)? {
                    self.restart(i as u32)?;
                }
            }
            FaultKind::RollingRestart {
                nodes, down, every, ..
            } => {
                self.fired("rolling-restart");
                let nodes = nodes.resolve(n)?;
                for (k, i) in nodes.into_iter().enumerate() {
                    let at = self.now + every.as_micros() as u64 * k as u64;
                    self.pending_faults += 2;
                    self.push(at, Ev::CrashOne(i as u32));
                    self.push(at + down.as_micros() as u64, Ev::RestartOne(i as u32));
                }
            }
            FaultKind::Failover { node, retry } => {
                let from_epoch = self.epoch(node as u32);
                let leader_down_at = self.nodes[node].core.as_ref().and_then(|core| {
                    let leader = self.index.get(&WriterId(core.chain()?.leader()))?;
                    let l = &self.nodes[*leader as usize];
                    l.core.is_none().then_some(l.crashed_at).flatten()
                });
                self.metrics.failovers.push(Failover {
                    node: node as u32,
                    asked_at: self.now,
                    retry: retry.as_micros() as u64,
                    from_epoch,
                    leader_down_at,
                    ..Failover::default()
                });
                let record = self.metrics.failovers.len() - 1;
                self.pending_faults += 1;
                self.push(self.now, Ev::Failover(record));
            }
            FaultKind::Skew { nodes, offset_ms } => {
                for i in nodes.resolve(n)? {
                    self.nodes[i].skew_ms = offset_ms;
                    self.fired("skew");
                }
            }
        }
        Ok(())
    }

    /// The epoch of the node's chain (0 while it is down).
    fn epoch(&self, node: u32) -> u64 {
        self.nodes[node as usize]
            .core
            .as_ref()
            .and_then(Core::chain)
            .map_or(0, Chain::epoch)
    }

    /// One attempt of a failover: `ha failover` on its node, unless the node is down or
    /// already follows a leader of a later epoch elected elsewhere.
    fn failover(&mut self, record: usize) -> anyhow::Result<()> {
        let node = self.metrics.failovers[record].node;
        let epoch = self.epoch(node);
        let stop = if self.nodes[node as usize].core.is_none() {
            Some("the candidate is down".to_string())
        } else if epoch > self.metrics.failovers[record].from_epoch {
            Some(format!(
                "the candidate follows epoch {epoch}, elected elsewhere"
            ))
        } else {
            None
        };
        if let Some(why) = stop {
            self.metrics.failovers[record].gave_up = Some(why);
            self.pending_faults -= 1;
            return Ok(());
        }
        let n = &mut self.nodes[node as usize];
        n.next_token += 1;
        let token = n.next_token;
        n.failover = Some((token, record));
        self.metrics.failovers[record].attempts += 1;
        self.feed(
            node,
            Input::Failover {
                token,
                force: false,
            },
            Via::Local,
        )
    }

    /// The answer to a failover attempt: elected, or refused and retried after `retry`.
    fn failover_done(&mut self, node: u32, token: u64, result: Result<u64, String>) {
        let n = &mut self.nodes[node as usize];
        let Some((_, record)) = n.failover.take_if(|(t, _)| *t == token) else {
            return;
        };
        match result {
            Ok(_) => {
                let epoch = self.epoch(node);
                let fo = &mut self.metrics.failovers[record];
                fo.elected_at = Some(self.now);
                fo.epoch = Some(epoch);
                self.pending_faults -= 1;
                self.fired("failover");
                self.check_followed();
            }
            Err(why) => {
                let fo = &mut self.metrics.failovers[record];
                fo.refuse(self.now, why);
                let at = self.now + fo.retry;
                self.push(at, Ev::Failover(record));
            }
        }
    }

    /// Records when every live node first follows the leader a failover elected.
    fn check_followed(&mut self) {
        if self
            .metrics
            .failovers
            .iter()
            .all(|fo| fo.epoch.is_none() || fo.all_follow_at.is_some())
        {
            return;
        }
        let live: Vec<u64> = (0..self.nodes.len() as u32)
            .filter(|&i| self.nodes[i as usize].core.is_some())
            .map(|i| self.epoch(i))
            .collect();
        let now = self.now;
        for fo in &mut self.metrics.failovers {
            if let (Some(epoch), None) = (fo.epoch, fo.all_follow_at)
                && live.iter().all(|&e| e >= epoch)
            {
                fo.all_follow_at = Some(now);
            }
        }
    }

    fn flap(&mut self, f: usize, cut: bool, left: u64) -> anyhow::Result<()> {
        let n = self.sc.nodes;
        self.pending_faults -= 1;
        let FaultKind::Flap { a, b, down, up, .. } = self.sc.faults[f].kind.clone() else {
            return Ok(());
        };
        if cut {
            let mut side = vec![0u8; n];
            for i in a.resolve(n)? {
                side[i] = 1;
            }
            for i in b.resolve(n)? {
                side[i] = 2;
            }
            self.flaps.insert(f, side);
            self.fired("flap-cut");
            self.metrics.converged_at = None;
            self.push(
                self.now + down.as_micros() as u64,
                Ev::Flap {
                    fault: f,
                    cut: false,
                    left,
                },
            );
        } else {
            self.flaps.remove(&f);
            self.fired("flap-heal");
            self.metrics.heals.push(self.now);
            self.await_convergence();
            if left > 1 {
                self.push(
                    self.now + up.as_micros() as u64,
                    Ev::Flap {
                        fault: f,
                        cut: true,
                        left: left - 1,
                    },
                );
            }
        }
        self.links_changed();
        if left <= 1 && !cut {
            self.fired("flap");
        }
        Ok(())
    }

    // ---- measurements and oracles ------------------------------------------------------

    /// What every live node holds between them.
    fn live_union(&self) -> BTreeMap<SegmentKey, u64> {
        let mut union: BTreeMap<SegmentKey, u64> = BTreeMap::new();
        for n in self.nodes.iter().filter(|n| n.core.is_some()) {
            for (k, &s) in &n.held {
                let e = union.entry(*k).or_insert(0);
                *e = (*e).max(s);
            }
        }
        union
    }

    /// Starts timing a heal: done when every live node holds what the live nodes held now
    /// (well defined while writes go on).
    fn await_convergence(&mut self) {
        let target = self.live_union();
        self.awaiting_convergence.push((self.now, target));
    }

    /// Share of live nodes holding everything any live node holds; heals that completed.
    fn sample(&mut self) {
        let union = self.live_union();
        let live = self.nodes.iter().filter(|n| n.core.is_some()).count();
        let converged = self
            .nodes
            .iter()
            .filter(|n| n.core.is_some() && n.held == union)
            .count();
        let frac = if live == 0 {
            1.0
        } else {
            converged as f64 / live as f64
        };
        self.metrics.convergence.push((self.now, frac));
        if converged == live {
            if self.metrics.converged_at.is_none() {
                self.metrics.converged_at = Some(self.now);
            }
        } else {
            self.metrics.converged_at = None;
        }
        let nodes = &self.nodes;
        let now = self.now;
        let done = &mut self.metrics.heal_convergence;
        self.awaiting_convergence.retain(|(since, target)| {
            let all = nodes.iter().filter(|n| n.core.is_some()).all(|n| {
                target
                    .iter()
                    .all(|(k, s)| n.held.get(k).is_some_and(|h| h >= s))
            });
            if all {
                done.push((*since, now - since));
            }
            !all
        });
    }

    /// The oracles: identical tables on every live node (real digests and rows), no
    /// committed event lost, at most one leader per epoch, every fault fired.
    fn final_checks(&mut self) -> anyhow::Result<()> {
        let live: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].core.is_some())
            .collect();
        let o = &mut self.metrics.oracles;
        let mut digests = BTreeMap::new();
        let mut rows = BTreeMap::new();
        for &i in &live {
            let core = self.nodes[i].core.as_ref().context("live node")?;
            let d = core.replica().digest();
            let tracked: BTreeMap<SegmentKey, u64> =
                d.segments.iter().map(|s| (s.key, s.seq)).collect();
            if tracked != self.nodes[i].held {
                o.failures.push(format!(
                    "node {i}: the tracked heads differ from the replica's digest (simulator bug)"
                ));
            }
            *digests.entry(d.fingerprint()).or_insert(0u64) += 1;
            let r = core.replica().rows(TableId::Events)?.len() as u64;
            *rows.entry(r).or_insert(0u64) += 1;
        }
        o.distinct_digests = digests.len() as u64;
        o.event_rows = rows.keys().next_back().copied().unwrap_or(0);
        if digests.len() > 1 {
            o.failures.push(format!(
                "live nodes did not converge: {} distinct digests, row counts {:?}",
                digests.len(),
                rows
            ));
        }
        // No event lost: every commit is held by every live node, unless its origin is down
        // (then it is in the origin's store and comes back with it).
        let mut lost = 0;
        let mut stranded = 0;
        for ((key, seq), &m) in &self.by_head {
            let origin = self.metrics.messages[m].origin as usize;
            let missing = live
                .iter()
                .filter(|&&i| self.nodes[i].held.get(key).is_none_or(|s| s < seq))
                .count();
            if missing > 0 {
                if self.nodes[origin].core.is_some() {
                    lost += 1;
                } else {
                    stranded += 1;
                }
            }
        }
        let o = &mut self.metrics.oracles;
        o.commits_missing_on_live_nodes = lost;
        o.commits_only_on_down_nodes = stranded;
        if lost > 0 {
            o.failures.push(format!(
                "{lost} commits of live nodes are missing on live nodes"
            ));
        }
        // Never two leaders in one epoch, over every node's stored chain (a down node's
        // store is kept, so it counts too), replayed with the real verification.
        let mut chains = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if let Some(anchor) = n.store.anchor()? {
                chains.push((i as u32, anchor, n.store.mastered_records()?));
            }
        }
        let (leaders, unverified) = oracle::leaders_per_epoch(
            chains
                .iter()
                .map(|(i, anchor, records)| (*i, *anchor, records.as_slice())),
        );
        let mut last_epoch = BTreeMap::new();
        for (epoch, l) in &leaders {
            for node in l.values().flatten() {
                last_epoch.insert(*node, *epoch);
            }
        }
        let o = &mut self.metrics.oracles;
        o.epochs_seen = leaders.len() as u64;
        for epoch in last_epoch.into_values() {
            *o.nodes_by_last_epoch.entry(epoch).or_default() += 1;
        }
        o.leaders_by_epoch = leaders
            .iter()
            .map(|(epoch, l)| {
                let nodes = l
                    .keys()
                    .map(|k| self.index.get(&WriterId(*k)).copied().unwrap_or(u32::MAX))
                    .collect();
                (*epoch, nodes)
            })
            .collect();
        o.failures.extend(unverified);
        o.failures.extend(oracle::two_leaders(&leaders));
        // Every fault asked for fired.
        for (kind, &asked) in &self.metrics.faults_requested.clone() {
            let fired = self.metrics.faults_fired.get(kind).copied().unwrap_or(0);
            if fired < asked {
                self.metrics
                    .oracles
                    .failures
                    .push(format!("fault {kind}: asked for {asked}, fired {fired}"));
            }
        }
        if self.metrics.converged_at.is_none() {
            self.metrics.oracles.failures.push(format!(
                "the live nodes had not converged {} after the scenario's end",
                humantime_fmt(self.sc.settle)
            ));
        }
        self.metrics
            .oracles
            .failures
            .append(&mut self.metrics.errors);
        self.metrics.live_nodes = live.len() as u64;
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
