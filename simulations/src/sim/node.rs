//! Nodes: starting one from its store, crashing and restarting it, and driving its core
//! as the daemon does (persist first, then the other outputs in order).

use std::collections::VecDeque;

use anyhow::Context as _;
use meshward_crdt::mastered::Chain;
use meshward_crdt::{Effects, Event, EventKind, Op, Persist, ReplicaConfig};
use meshward_node::core::{Core, CoreConfig, Input, Output, Verdict};

use super::{Channel, EPOCH_MS, Ev, Sim, Via, addr, derive, pair};

/// Verified chains kept for nodes that start from the same stored chain.
const MAX_CACHED_CHAINS: usize = 64;
use super::drive::SimDriver;
use crate::report::Reach;

impl Sim {
    pub(super) fn alive(&self, node: u32, inc: u32) -> bool {
        let n = &self.nodes[node as usize];
        n.core.is_some() && n.incarnation == inc
    }

    /// The node's clock in ms: virtual time plus its skew.
    pub(super) fn clock_ms(&self, node: u32) -> u64 {
        (EPOCH_MS + (self.now / 1000) as i64 + self.nodes[node as usize].skew_ms).max(0) as u64
    }

    /// Builds the node's core from its store, as `meshward run` does at start.
    pub(super) fn start_node(&mut self, node: u32) -> anyhow::Result<()> {
        let now = self.clock_ms(node);
        let seed = u64::from_le_bytes(
            derive(
                self.seed,
                b"core seed",
                (node as u64) << 32 | self.nodes[node as usize].incarnation as u64,
            )[..8]
                .try_into()?,
        );
        let admitted = self.admitted(node);
        let n = &mut self.nodes[node as usize];
        let replica = n
            .store
            .load_replica(&n.identity, ReplicaConfig::default())
            .context("loading the replica from the store")?;
        // The peers it knows from its peer book, and its topology neighbours: the roster
        // addresses the daemon resolves at start, which its core dials and redials with
        // backoff until they answer (roster addresses here are names: see `Sim::new`).
        let mut known = n.store.known_peers()?;
        for &b in &self.edges[node as usize] {
            let id = self.ids[b as usize];
            if !known.iter().any(|(k, _)| *k == id) {
                known.push((id, addr(b)));
            }
        }
        n.held = replica
            .digest()
            .segments
            .iter()
            .map(|s| (s.key, s.seq))
            .collect();
        let mut core = Core::new(replica, admitted, CoreConfig::default(), seed, known, now);
        // As `roster::load_into` (the daemon's start), but a chain every node holds, such as
        // the genesis roster, is verified once for all of them.
        core.set_vote(n.store.vote()?);
        if let Some(anchor) = n.store.anchor()? {
            let records = n.store.mastered_records()?;
            let key = (
                anchor.cluster.0,
                anchor.genesis_leader,
                records.last().map(|r| r.hash().0),
                records.len(),
            );
            let chain = match self.chains.get(&key) {
                Some(chain) => chain.clone(),
                None => {
                    let chain = Chain::rebuild(anchor, &records)
                        .context("the stored mastered chain no longer verifies")?;
                    if self.chains.len() >= MAX_CACHED_CHAINS {
                        self.chains.clear();
                    }
                    self.chains.insert(key, chain.clone());
                    chain
                }
            };
            core.load_verified(now, anchor, chain, records);
        }
        #[cfg(feature = "bugs")]
        if let Some(bug) = self.bug {
            core.inject(bug);
        }
        n.core = Some(core);
        n.next_heartbeat = self.now;
        Ok(())
    }

    pub(super) fn crash(&mut self, node: u32) {
        if self.nodes[node as usize].core.is_none() {
            return;
        }
        self.fired("crash");
        self.stop_core(node);
    }

    /// Stops the node's core abruptly (its store is kept); its peers notice when their
    /// connections idle out.
    pub(super) fn stop_core(&mut self, node: u32) {
        let n = &mut self.nodes[node as usize];
        if n.core.is_none() {
            return;
        }
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
        n.validating.clear();
        n.dont_want.clear();
        n.dont_want_order.clear();
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

    pub(super) fn restart(&mut self, node: u32) -> anyhow::Result<()> {
        if self.nodes[node as usize].core.is_some() {
            return Ok(());
        }
        self.fired("restart");
        self.start_again(node)
    }

    /// Starts a stopped node from its store (reopened first if the store failed).
    pub(super) fn start_again(&mut self, node: u32) -> anyhow::Result<()> {
        if self.nodes[node as usize].stopped.is_some() && !self.reopen(node) {
            return Ok(());
        }
        if let Err(e) = self.start_node(node) {
            return self.store_failed(node, e, None);
        }
        let inc = self.nodes[node as usize].incarnation;
        self.push(self.now, Ev::Tick { node, inc });
        self.await_convergence();
        self.metrics.converged_at = None;
        Ok(())
    }

    /// Feeds one input, then executes the outputs as the daemon does: persists first (one
    /// transaction), then the rest in order; follow-up inputs are fed after. A store that
    /// fails (a disk fault) is handled as the daemon handles it ([`super::storage`]).
    pub(super) fn feed(&mut self, node: u32, input: Input, via: Via) -> anyhow::Result<()> {
        // A sync request is answered again by the rebuilt core if a full disk refuses the
        // write of its batch (the daemon keeps the batch's requests for that).
        let again = input.sync_request_copy();
        self.feed_call(node, via, again, |core, now| core.handle(now, input))
    }

    /// Runs `call` on the node's core, then executes its outputs and follow-up inputs as
    /// [`Sim::feed`] does.
    pub(super) fn feed_call(
        &mut self,
        node: u32,
        via: Via,
        again: Option<Input>,
        call: impl FnOnce(&mut Core, u64),
    ) -> anyhow::Result<()> {
        let _span = tracing::info_span!("node", n = node, t = self.now).entered();
        match self.run_outputs(node, via, call) {
            Ok(()) => Ok(()),
            Err(e) => self.store_failed(node, e, again),
        }
    }

    /// Runs `call` on the node's core, then its outputs and their follow-ups, through the
    /// executor the daemon uses ([`meshward_node::drive`]): rows first in one transaction,
    /// then the chain writes and the sends, in order.
    fn run_outputs(
        &mut self,
        node: u32,
        via: Via,
        call: impl FnOnce(&mut Core, u64),
    ) -> anyhow::Result<()> {
        let mut driver = SimDriver {
            sim: self,
            node,
            via,
            chain_moved: false,
        };
        let run = meshward_node::drive::run(&mut driver, call, VecDeque::new());
        if driver.chain_moved {
            self.check_followed();
        }
        run
    }

    pub(super) fn execute(
        &mut self,
        node: u32,
        out: Output,
        inputs: &mut VecDeque<Input>,
    ) -> anyhow::Result<()> {
        match out {
            // The executor writes these itself.
            Output::Persist(_)
            | Output::PersistMastered(_)
            | Output::PersistVote { .. }
            | Output::AdoptChain { .. }
            | Output::Superseded(_) => {}
            Output::Publish(data) | Output::Announce(data) => self.publish(node, data),
            Output::Validate { id, verdict } => {
                if let Some((env, source)) = self.nodes[node as usize].pending_gossip.remove(&id) {
                    let delay = self.sc.gossip.validation.as_micros() as u64;
                    if verdict != Verdict::Accept {
                        self.nodes[node as usize].validating.remove(&env.id);
                    }
                    match verdict {
                        Verdict::Accept if delay == 0 => self.forward(node, source, &env),
                        Verdict::Accept => {
                            let inc = self.nodes[node as usize].incarnation;
                            self.push(
                                self.now + delay,
                                Ev::Forward {
                                    node,
                                    inc,
                                    source,
                                    env,
                                },
                            );
                        }
                        // A follower's advert, taken but kept to its neighbours.
                        Verdict::Ignore if !env.push => self.metrics.not_relayed += 1,
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
            Output::Done { token, result } => {
                match self.nodes[node as usize].leader_ops.remove(&token) {
                    Some(op) => self.leader_op_done(op, result),
                    None => self.failover_done(node, token, result),
                }
            }
            // The model network admits every simulated node.
            Output::Roster(_) => {}
            Output::Applied { .. } | Output::Committed { .. } => {}
            // Simulated nodes have no API, so they forward nothing and serve nothing.
            Output::Forwarded { .. } | Output::Serve { .. } | Output::AuditHeads { .. } => {}
        }
        Ok(())
    }

    /// Records what persisted effects made a node hold: the dissemination measurements.
    pub(super) fn track(&mut self, node: u32, effects: &Effects, via: Via) {
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
            if !matches!(via, Via::Local) {
                let head = head.clone();
                self.check_frontier(node, &head);
            }
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

    pub(super) fn write(&mut self, series: usize, k: u64) -> anyhow::Result<()> {
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
        if self.commit_local(node, ops, at_ms)? {
            self.metrics.writes += 1;
        } else {
            self.metrics.writes_refused += 1;
        }
        Ok(())
    }

    /// Commits `ops` on `node` as a local write at `at_ms`; whether it was acknowledged
    /// (durable: a store that refused it, a disk fault, did not).
    pub(super) fn commit_local(
        &mut self,
        node: u32,
        ops: Vec<Op>,
        at_ms: i64,
    ) -> anyhow::Result<bool> {
        let n = &mut self.nodes[node as usize];
        n.next_token += 1;
        let token = n.next_token;
        let before = self.metrics.messages.len();
        self.feed(
            node,
            Input::Commit {
                ops,
                token,
                at_us: at_ms as u64 * 1000,
            },
            Via::Local,
        )?;
        Ok(self.metrics.messages.len() > before)
    }
}
