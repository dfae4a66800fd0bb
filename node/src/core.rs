//! The node core: a sans-io state machine that decides what to replicate, when, and with whom.
//!
//! It owns the [`Replica`] and the peer table, and is driven by [`Core::handle`] with the time
//! and one [`Input`]; after each call the caller drains [`Core::drain`] and executes the
//! [`Output`]s in order. [`Output::Persist`] comes before anything that announces or forwards
//! the same data, and must be durable before the next output runs. The core owns no socket,
//! task or clock; randomness comes from a seeded RNG. The daemon and the simulator run this
//! same code.
//!
//! # Replication
//! - **Push.** A local commit is announced at once on gossip as a [`Gossip::Push`] of the
//!   changes. A push larger than the gossip size bound is replaced by an [`Gossip::Advert`],
//!   and receivers fetch from the origin with a sync request. A push is its origin's own
//!   rows (every item's signed head names the origin as writer); one carrying anyone else's is
//!   refused and counted (`forged_gossip`). Adverts are signed by their origin ([`advert`]).
//! - **Roster members only.** The replica accepts rows of the verified roster's members only
//!   ([`Replica::set_writers`], set with the roster). Rows of any other writer are refused and
//!   counted (`unknown_writer`), not stored and not forwarded, without penalising the sender:
//!   they may be a just-joined member's whose roster record has not arrived yet (mastered
//!   records and rows travel separately). The core then syncs with the sender, whose answer
//!   carries the mastered records before the rows, and again with every such sender once the
//!   roster changes, so those rows are taken as soon as the roster admits their writer. A
//!   removed member's rows already held stay readable.
//! - **A removed member's writes stop at its removal.** The leader's roster record that
//!   removes a node carries the frontier of that node's segments as the leader holds them
//!   ([`meshward_crdt::mastered::Frontier`]); every node takes the removed writer's rows up to
//!   it, whole (from any peer holding it: a node cut off during the removal still catches
//!   up) and refuses anything else, counted (`beyond_frontier`), not stored, not forwarded,
//!   whoever relays it.
//!   The frontiers come from every roster record of the chain (the latest per writer; none
//!   for a writer that is a member again). Refusals by the replica's writer and segment
//!   bounds are counted in `over_limit`.
//! - **Validation before forwarding.** A received push is applied only after the replica's full
//!   checks; the verdict ([`Output::Validate`]) lets gossip forward only what was accepted. A
//!   push that does not continue what we hold (a gap) is ignored, not forwarded, and triggers
//!   a sync with its origin.
//! - **Anti-entropy.** A sync request carries the requester's [`Digest`]; the answer is exactly
//!   what it lacks ([`Replica::missing_for`]), with a flag when more remains. It runs on every
//!   new connection, when a peer's advertised digest fingerprint differs from ours, when a
//!   request shows the requester holds something we lack, and every `sync_interval` with one
//!   random peer. This is what merges two sides of a partition and catches up a restarted
//!   node. One request is in flight at a time; the next carries the digest the previous answer
//!   updated, so a node that reconnects to several peers holding the same data fetches it once.
//! - **Redial.** A roster peer that disconnects is redialled with exponential backoff.
//!
//! # Mastered records
//! The core also replicates the leader-signed mastered chain ([`Chain`]). A record the leader
//! writes ([`Input::Master`]) is persisted, applied and published as a [`Gossip::Mastered`];
//! a received record is verified against our chain before it is persisted
//! ([`Output::PersistMastered`]), applied and forwarded. A record ahead of our chain is a gap:
//! we sync with the sender. Sync requests carry our chain's last version and answers carry
//! the records after it, so a node that missed records (or was down) catches up with the
//! shared tables. A record at a version we already hold that differs from ours comes from a
//! competing leader: it is not applied and is counted (`mastered_forks`); choosing between
//! forks is the HA layer's job. When a record changes the roster the core admits the new
//! roster and says so with [`Output::Roster`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use meshward_crdt::mastered::{
    Chain, Endorsement, RebuildError, RecordKind, SignedRecord, TrustAnchor, Verified,
};
use meshward_crdt::{
    ApplyError, CommitError, Digest, Effects, Op, Replica, RowChange, SyncItem, SyncMessage,
    WriterId,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

mod advert;
mod audit_heads;
pub use audit_heads::{AUDIT_HEADS_MINOR, PeerHead};
#[cfg(feature = "bugs")]
mod bugs;
pub mod election;
mod fork;
mod forward;

pub use forward::{MAX_FORWARD, Opaque};
mod ha;
mod reapply;
pub mod wire;

pub use advert::{ADVERT_DOMAIN, Advert, FOLLOWER_REFRESH_MS};
#[cfg(feature = "bugs")]
pub use bugs::Bug;
pub use fork::MAX_LOSERS;
pub use ha::{MAX_PASSWORD, MAX_USER};
mod io;
pub use io::{CoreConfig, Input, Output, Secret, Verdict};
mod chain;
mod counters;
pub use counters::CoreCounters;
mod sync;
pub use sync::{Ask, MAX_ASK, Reply, SyncAnswer, SyncAsk};

/// Time in milliseconds on the caller's clock (wall clock in the daemon, virtual in the
/// simulator).
pub type Millis = u64;

/// What travels on the gossip topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Gossip {
    /// Fresh changes of `origin`, as an encoded [`SyncMessage`].
    Push {
        /// The node that committed them.
        origin: WriterId,
        /// The origin's wall clock at commit, microseconds (for the lag metric only).
        sent_us: u64,
        /// `SyncMessage::encode` output.
        message: Vec<u8>,
    },
    /// A summary of what its origin holds, signed by it.
    Advert(Advert),
    /// A mastered record (`SignedRecord::encode` output), signed by the leader of its epoch.
    Mastered {
        /// The encoded record.
        record: Vec<u8>,
    },
}

/// Largest gossip message accepted for decoding.
pub const MAX_GOSSIP: usize = 64 * 1024;

impl Gossip {
    /// Encodes the envelope ([`wire`]: versioned).
    pub fn encode(&self) -> Vec<u8> {
        wire::encode(self)
    }

    /// Decodes an envelope, refusing oversize or malformed bytes and other major versions.
    pub fn decode(bytes: &[u8]) -> Option<Gossip> {
        if bytes.len() > MAX_GOSSIP {
            return None;
        }
        wire::decode(bytes).ok()
    }
}

/// A peer as the core sees it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PeerStatus {
    /// Connected now.
    pub connected: bool,
    /// Last address seen.
    pub addr: Option<SocketAddr>,
    /// Last time we heard from it (ms).
    pub last_seen_ms: Option<Millis>,
    /// Changes it holds, from its last advert or request.
    pub changes: Option<u64>,
    /// Changes we hold that it lacks, from its last digest (None until it sent one).
    pub behind: Option<u64>,
    /// The wire minor version of its last request or answer (None until one came).
    pub wire_minor: Option<u8>,
}

#[derive(Debug, Default)]
struct Peer {
    status: PeerStatus,
    backoff: Option<Duration>,
    redial_at: Option<Millis>,
    /// `at_ms` of the last advert taken from it (see [`advert`]).
    advert_at: Option<Millis>,
}

/// The verified mastered chain and its records (kept to serve peers that lack them).
#[derive(Debug)]
struct Mastered {
    anchor: TrustAnchor,
    chain: Chain,
    records: Vec<SignedRecord>,
}

/// What a received mastered record did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Taken {
    /// Verified and applied.
    Applied,
    /// Already held, or not applicable here (no chain, a fork): nothing changed.
    Held,
    /// Ahead of our chain: something is missing first.
    Gap,
    /// Refused.
    Refused,
}

/// The node core.
#[derive(Debug)]
pub struct Core {
    replica: Replica,
    config: CoreConfig,
    roster: BTreeSet<WriterId>,
    peers: BTreeMap<WriterId, Peer>,
    rng: ChaCha8Rng,
    next_request: u64,
    next_sync_at: Millis,
    /// The one sync request in flight: peer, token, when sent.
    syncing: Option<(WriterId, u64, Millis)>,
    /// Peers to sync with next, in order.
    wanted: BTreeSet<WriterId>,
    counters: CoreCounters,
    mastered: Option<Mastered>,
    /// Our HA requests in flight, by request token.
    asks: BTreeMap<u64, ha::Pending>,
    /// The endorsement this node gave last: (epoch, candidate), durable.
    vote: Option<(u64, WriterId)>,
    /// An election this node runs (a failover as candidate, a hand-over as leader).
    election: Option<election::Election>,
    /// Records of branches that lost to ours.
    losers: fork::Losers,
    /// Our losing branch's restrictive records, on their way to the winning leader.
    handoff: Option<reapply::Handoff>,
    /// Our audit head questions in flight, by caller token ([`audit_heads`]).
    audit_queries: BTreeMap<u64, audit_heads::Query>,
    /// Whether a chain fetch (fork resolution) is in flight.
    chain_fetch: Option<Millis>,
    /// When the transport stops admitting a node that just left (see [`ha`]).
    release_at: Option<Millis>,
    /// The driver's store refuses writes (see [`Core::set_held`]).
    held: bool,
    /// Peers that sent rows of a writer not in our roster; asked again when it changes. At
    /// most the admitted peers (only they send).
    unknown_from: BTreeSet<WriterId>,
    /// The latest `now` given to [`Core::handle`].
    clock: Millis,
    /// Our last advert (see [`advert`]).
    last_advert: Option<Advert>,
    /// Peers whose complete sync answer this core took (see [`Core::tail_recovered`]). At
    /// most the admitted peers.
    synced: BTreeSet<WriterId>,
    outbox: Vec<Output>,
    /// A deliberate bug for the simulator's tests.
    #[cfg(feature = "bugs")]
    bugs: bugs::Bugs,
}

impl Core {
    /// A core over `replica`, admitting `roster`, that will dial `known` peers at once.
    pub fn new(
        mut replica: Replica,
        roster: BTreeSet<WriterId>,
        config: CoreConfig,
        seed: u64,
        known: impl IntoIterator<Item = (WriterId, SocketAddr)>,
        now: Millis,
    ) -> Self {
        replica.set_writers(roster.iter().copied());
        let mut core = Core {
            replica,
            config,
            roster,
            peers: BTreeMap::new(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            next_request: 1,
            next_sync_at: now,
            syncing: None,
            wanted: BTreeSet::new(),
            counters: CoreCounters::default(),
            mastered: None,
            asks: BTreeMap::new(),
            vote: None,
            election: None,
            losers: fork::Losers::default(),
            handoff: None,
            audit_queries: BTreeMap::new(),
            chain_fetch: None,
            release_at: None,
            held: false,
            unknown_from: BTreeSet::new(),
            clock: now,
            last_advert: None,
            synced: BTreeSet::new(),
            outbox: Vec::new(),
            #[cfg(feature = "bugs")]
            bugs: bugs::Bugs::default(),
        };
        for (peer, addr) in known {
            if peer != core.me() && core.roster.contains(&peer) {
                let p = core.peers.entry(peer).or_default();
                p.status.addr = Some(addr);
                p.redial_at = Some(now);
            }
        }
        core
    }

    /// Whether this core took a complete sync answer (nothing more to come, everything in it
    /// accepted) from every other member of its roster since it was made: it then holds every
    /// change of its own that any member held when it answered ([`crate::tail`]).
    pub fn tail_recovered(&self) -> bool {
        let me = self.me();
        self.roster
            .iter()
            .all(|p| *p == me || self.synced.contains(p))
    }

    /// The members [`Core::tail_recovered`] still waits for.
    pub fn tail_waiting(&self) -> Vec<WriterId> {
        let me = self.me();
        self.roster
            .iter()
            .filter(|p| **p != me && !self.synced.contains(p))
            .copied()
            .collect()
    }

    /// This node's id.
    pub fn me(&self) -> WriterId {
        self.replica.writer()
    }

    /// The replica.
    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    /// Peers by id: every other roster member (one never heard from and with no address to
    /// dial has no state kept: it shows as not connected, nothing known), then any other peer
    /// known.
    pub fn peers(&self) -> impl Iterator<Item = (&WriterId, &PeerStatus)> {
        const UNKNOWN: PeerStatus = PeerStatus {
            connected: false,
            addr: None,
            last_seen_ms: None,
            changes: None,
            behind: None,
            wire_minor: None,
        };
        let me = self.me();
        let members = self
            .roster
            .iter()
            .filter(move |k| **k != me)
            .map(|k| (k, self.peers.get(k).map_or(&UNKNOWN, |p| &p.status)));
        let others = self
            .peers
            .iter()
            .filter(|(k, _)| !self.roster.contains(k))
            .map(|(k, p)| (k, &p.status));
        members.chain(others)
    }

    /// Counters.
    pub fn counters(&self) -> &CoreCounters {
        &self.counters
    }

    /// The verified mastered chain, once loaded.
    pub fn chain(&self) -> Option<&Chain> {
        self.mastered.as_ref().map(|m| &m.chain)
    }

    /// Loads the stored mastered chain (records in version order, as stored), re-verifying it
    /// from `anchor`, and admits its roster. Peers of the roster whose address is a socket
    /// address are dialled.
    pub fn load_mastered(
        &mut self,
        now: Millis,
        anchor: TrustAnchor,
        records: Vec<SignedRecord>,
    ) -> Result<(), RebuildError> {
        let chain = Chain::rebuild(anchor, &records)?;
        self.load_verified(now, anchor, chain, records);
        Ok(())
    }

    /// Loads a mastered chain verified already: `chain` is what [`Chain::rebuild`] (or
    /// [`Chain::resume`] and [`Chain::extended`] from the store's restart point) made of
    /// exactly these `records` from `anchor` (a [`Chain`] only comes from verification). The
    /// simulator verifies the chain its nodes share once instead of once per node; the daemon
    /// uses [`crate::roster::load_into`]. Admits the roster as [`Core::load_mastered`] does.
    pub fn load_verified(
        &mut self,
        now: Millis,
        anchor: TrustAnchor,
        chain: Chain,
        records: Vec<SignedRecord>,
    ) {
        self.mastered = Some(Mastered {
            anchor,
            chain,
            records,
        });
        self.roster_from_chain(now);
    }

    /// Replaces the admitted peers, whose rows the replica accepts too; peers no longer
    /// admitted are forgotten (the transport disconnects them).
    pub fn set_roster(&mut self, roster: BTreeSet<WriterId>) {
        self.peers.retain(|k, _| roster.contains(k));
        self.replica.set_writers(roster.iter().copied());
        self.roster = roster;
    }

    /// Dials every known, disconnected roster peer at the next tick, forgetting backoff
    /// (used when links are known to be back).
    pub fn redial_now(&mut self, now: Millis) {
        for p in self.peers.values_mut() {
            if !p.status.connected && p.status.addr.is_some() {
                p.backoff = None;
                p.redial_at = Some(now);
            }
        }
    }

    /// Whether some other roster member is neither connected nor has an address to redial it
    /// at (it was never reached): the driver then dials its bootstrap addresses again (see
    /// [`crate::bootstrap`]).
    pub fn unreached(&self) -> bool {
        let me = self.me();
        self.roster.iter().filter(|w| **w != me).any(|w| {
            self.peers
                .get(w)
                .is_none_or(|p| !p.status.connected && p.status.addr.is_none())
        })
    }

    /// Holds (or releases) replication while the driver's store refuses writes (its disk is
    /// full). Held, the core applies no changes or mastered records from peers (they are
    /// counted in `held_dropped` and answered [`Verdict::Ignore`]: not forwarded, no
    /// penalty), sends no sync requests, fetches no chain, and neither endorses a failover nor
    /// writes a mastered record a peer asked for; so nothing a peer sends makes it persist.
    /// Local writes ([`Input::Commit`], [`Input::Master`], ...) are still tried: the driver
    /// releases the hold once one is durable, or after a while to try again. Sync requests are
    /// answered as usual. Releasing asks every connected peer for what we lack, so what was
    /// dropped comes back by anti-entropy.
    pub fn set_held(&mut self, now: Millis, held: bool) {
        let released = self.held && !held;
        self.held = held;
        if released {
            for peer in self.connected() {
                self.request_sync(now, peer);
            }
        }
    }

    /// The peers connected now.
    fn connected(&self) -> Vec<WriterId> {
        self.peers
            .iter()
            .filter(|(_, p)| p.status.connected)
            .map(|(k, _)| *k)
            .collect()
    }

    /// Whether replication is held (see [`Core::set_held`]).
    pub fn held(&self) -> bool {
        self.held
    }

    /// Continues the counters of the core this one replaces (the driver rebuilt it from its
    /// store), so they never go backwards.
    pub fn carry_counters(&mut self, counters: CoreCounters) {
        self.counters = counters;
    }

    /// Takes the outputs produced so far.
    pub fn drain(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.outbox)
    }

    /// Feeds one input at time `now`.
    pub fn handle(&mut self, now: Millis, input: Input) {
        self.clock = self.clock.max(now);
        match input {
            Input::Tick => self.tick(now),
            Input::Commit { ops, token, at_us } => self.commit(now, ops, token, at_us),
            Input::Connected { peer, addr } => {
                let p = self.peers.entry(peer).or_default();
                p.status.connected = true;
                p.status.addr = Some(addr);
                p.status.last_seen_ms = Some(now);
                p.backoff = None;
                p.redial_at = None;
                // It may have restarted with its clock set back (see `advert`).
                p.advert_at = None;
                self.request_sync(now, peer);
            }
            Input::Disconnected { peer } => {
                let redial_min = self.config.redial_min;
                let redial_max = self.config.redial_max;
                let in_roster = self.roster.contains(&peer);
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.status.connected = false;
                    if in_roster && p.status.addr.is_some() {
                        let backoff = p.backoff.map_or(redial_min, |b| (b * 2).min(redial_max));
                        p.backoff = Some(backoff);
                        p.redial_at = Some(now + backoff.as_millis() as u64);
                    }
                }
                self.wanted.remove(&peer);
                if self.syncing.is_some_and(|(p, _, _)| p == peer) {
                    self.syncing = None;
                    self.next_sync(now);
                }
            }
            Input::Gossip { source, id, data } => self.gossip(now, source, id, data),
            Input::SyncRequest {
                peer,
                channel,
                data,
            } => self.request(now, peer, channel, &data),
            Input::SyncResponse {
                peer,
                request,
                data,
            } => self.reply(now, peer, request, &data),
            Input::Master {
                token,
                kind,
                payload,
            } => {
                let result = self.write_mastered(now, kind, payload);
                self.outbox.push(Output::Done { token, result });
            }
            Input::Failover { token, force } => self.failover(now, token, force),
            Input::Handover { token, next } => self.handover(now, token, next),
            Input::Leave { token, node } => self.leave(now, token, node),
            Input::Password {
                token,
                user,
                password,
            } => self.password(now, token, user, password),
            Input::Forward { token, envelope } => self.forward(now, token, envelope),
            Input::Served {
                channel,
                have,
                answer,
            } => self.served(channel, have, answer),
            Input::AuditHeads { token } => self.audit_heads(now, token),
            Input::SyncFailed { peer, request } => {
                if let Some(pending) = self.asks.remove(&request) {
                    self.ha_reply(now, peer, pending, None);
                }
                if self
                    .syncing
                    .is_some_and(|(p, r, _)| p == peer && r == request)
                {
                    self.syncing = None;
                    self.next_sync(now);
                }
            }
        }
    }

    fn tick(&mut self, now: Millis) {
        self.ha_tick(now);
        self.audit_heads_tick(now);
        // Redials that are due.
        for (peer, p) in &mut self.peers {
            if let (Some(at), Some(addr), false) = (p.redial_at, p.status.addr, p.status.connected)
                && at <= now
            {
                self.outbox.push(Output::Dial { peer: *peer, addr });
                let backoff = p.backoff.unwrap_or(self.config.redial_min);
                let next = (backoff * 2).min(self.config.redial_max);
                p.backoff = Some(next);
                p.redial_at = Some(now + next.as_millis() as u64);
            }
        }
        if self
            .syncing
            .is_some_and(|(_, _, at)| now >= at + self.config.sync_timeout.as_millis() as u64)
        {
            self.syncing = None;
            self.next_sync(now);
        }
        if now < self.next_sync_at {
            return;
        }
        self.next_sync_at = now + self.config.sync_interval.as_millis() as u64;
        self.advertise();
        let connected = self.connected();
        if !connected.is_empty() {
            let peer = connected[self.rng.gen_range(0..connected.len())];
            self.request_sync(now, peer);
        }
    }

    fn commit(&mut self, now: Millis, ops: Vec<Op>, token: u64, at_us: u64) {
        match self.replica.commit(now as i64, ops) {
            Err(e) => self.outbox.push(Output::Committed {
                token,
                result: Err(e),
            }),
            Ok(effects) => {
                let push = effects.push.clone();
                let rows = effects.rows.clone();
                #[cfg(feature = "bugs")]
                let effects = self.bugged_commit(effects);
                self.outbox.push(Output::Persist(Effects {
                    push: Vec::new(),
                    ..effects
                }));
                self.outbox.push(Output::Committed {
                    token,
                    result: Ok(rows),
                });
                self.announce(push, at_us);
            }
        }
    }

    /// Publishes fresh items as one push, or an advert when too large for gossip.
    fn announce(&mut self, items: Vec<SyncItem>, sent_us: u64) {
        if items.is_empty() {
            return;
        }
        let message = SyncMessage { items }.encode();
        let push = Gossip::Push {
            origin: self.me(),
            sent_us,
            message,
        }
        .encode();
        if push.len() <= self.config.max_gossip_bytes {
            self.outbox.push(Output::Announce(push));
        } else {
            self.advertise();
        }
    }

    fn gossip(&mut self, now: Millis, source: WriterId, id: u64, data: Vec<u8>) {
        self.seen(now, source);
        self.counters.bytes_received += data.len() as u64;
        let Some(gossip) = Gossip::decode(&data) else {
            self.counters.malformed += 1;
            debug!(peer = %source, "malformed gossip");
            self.outbox.push(Output::Validate {
                id,
                verdict: Verdict::Reject,
            });
            return;
        };
        match gossip {
            Gossip::Advert(advert) => self.advert(now, source, id, advert),
            Gossip::Push {
                origin,
                sent_us,
                message,
            } => {
                let verdict = match SyncMessage::decode(&message) {
                    Err(_) => {
                        self.counters.malformed += 1;
                        Verdict::Reject
                    }
                    Ok(msg) if msg.items.iter().any(|i| i.head().head.key.writer != origin) => {
                        self.counters.forged_gossip += 1;
                        warn!(peer = %source, origin = %origin, "push of rows not its origin's refused");
                        Verdict::Reject
                    }
                    Ok(msg) => self.apply_items(msg.items, origin, source),
                };
                if verdict == Verdict::Accept {
                    self.outbox.push(Output::Applied { origin, sent_us });
                }
                match verdict {
                    Verdict::Accept => self.counters.pushes_applied += 1,
                    Verdict::Ignore => self.counters.pushes_ignored += 1,
                    Verdict::Reject => self.counters.pushes_rejected += 1,
                }
                self.outbox.push(Output::Validate { id, verdict });
                if verdict == Verdict::Ignore && origin != self.me() {
                    let target = self.sync_target(origin, source);
                    self.request_sync(now, target);
                }
            }
            Gossip::Mastered { record } => {
                let verdict = match SignedRecord::decode(&record) {
                    Err(_) => {
                        self.counters.malformed += 1;
                        Verdict::Reject
                    }
                    Ok(r) => match self.take_mastered(now, r, source) {
                        Taken::Applied => Verdict::Accept,
                        Taken::Held => Verdict::Ignore,
                        Taken::Gap => {
                            self.request_sync(now, source);
                            Verdict::Ignore
                        }
                        Taken::Refused => Verdict::Reject,
                    },
                };
                self.outbox.push(Output::Validate { id, verdict });
            }
        }
    }

    /// Applies items from `source` (on behalf of `from`), persisting what changed. Accept if
    /// all applied (or already held); Ignore on a gap, or when items were skipped as of a
    /// writer not in our roster or over the replica's bounds (not the sender's fault); Reject
    /// on anything invalid.
    fn apply_items(&mut self, items: Vec<SyncItem>, from: WriterId, source: WriterId) -> Verdict {
        if self.held {
            self.counters.held_dropped += items.len() as u64;
            return Verdict::Ignore;
        }
        let mut effects = Effects::default();
        let mut verdict = Verdict::Accept;
        for item in items {
            match self.replica.apply(item) {
                Ok(e) => {
                    if !e.persist.is_empty() {
                        self.counters.items_applied += 1;
                    }
                    effects.rows.extend(e.rows);
                    effects.persist.extend(e.persist);
                }
                Err(ApplyError::Gap { .. }) => verdict = Verdict::Ignore,
                Err(ApplyError::UnknownWriter { key }) => {
                    self.counters.unknown_writer += 1;
                    // Bounded: only admitted peers send.
                    self.unknown_from.insert(source);
                    debug!(peer = %source, segment = %key, "rows of a writer not in the roster here refused");
                    verdict = Verdict::Ignore;
                }
                Err(ApplyError::BeyondFrontier { key, seq, frontier }) => {
                    self.counters.beyond_frontier += 1;
                    debug!(peer = %source, segment = %key, seq, frontier, "rows of a removed writer beyond its frontier refused");
                    verdict = Verdict::Ignore;
                }
                Err(
                    e @ (ApplyError::TooManyWriters { .. } | ApplyError::TooManySegments { .. }),
                ) => {
                    self.counters.over_limit += 1;
                    warn!(peer = %source, error = %e, "replicated rows refused: the replica is full");
                    verdict = Verdict::Ignore;
                }
                Err(e) => {
                    warn!(peer = %from, error = %e, "refused replicated data");
                    verdict = Verdict::Reject;
                    break;
                }
            }
        }
        if !effects.persist.is_empty() {
            self.outbox.push(Output::Persist(effects));
        }
        verdict
    }

    fn seen(&mut self, now: Millis, peer: WriterId) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.status.last_seen_ms = Some(now);
        }
    }
}

#[cfg(test)]
mod tests;
