//! Leadership in the node core: leader writes, failover by majority endorsement, the forced
//! failover of a two-node pair, fork resolution when two chains meet, leaving the cluster, and
//! password changes delegated to the leader.
//!
//! - **Planned hand-over** (`ha demote --to`, `ha failback`) is a leader write of a `Handover`
//!   record ([`Input::Master`]).
//! - **Failover** ([`Input::Failover`]): a follower that has not heard from the leader for
//!   `leader_timeout` asks every connected member to endorse it for the next epoch at its chain
//!   position ([`Ask::Endorse`]). A member endorses only if it holds the same chain position,
//!   has not heard from the leader for `leader_timeout` either, and has not endorsed anyone else
//!   for that epoch; the vote is made durable ([`Output::PersistVote`]) before the answer
//!   leaves. With a strict majority (its own endorsement included) the candidate signs the
//!   `Handover` record, which every node verifies ([`Chain::verify`]). A minority side cannot
//!   gather a majority: the caller gets an error after at most `ask_timeout`.
//! - **Forced failover** (`--force`): only in a two-node roster, the candidate's own
//!   endorsement suffices; logged loudly.
//! - **Forks**: when two chains meet (a record or advert that conflicts with ours), the node
//!   fetches the peer's whole chain ([`Ask::Chain`]), verifies it from the trust anchor, and
//!   keeps the chain whose tip has the higher (epoch, leader key). The losing chain's records
//!   after the fork are kept as superseded ([`Output::AdoptChain`], [`Output::Superseded`]),
//!   never silently dropped.
//! - **Leaving** ([`Input::Leave`]): a follower asks the leader to remove it from the roster
//!   ([`Ask::Leave`]); the leader may remove any other node. A removed node admits no peer.
//! - **Delegation** ([`Input::Password`]): on a follower, the request goes to the leader
//!   ([`Ask::Password`]), which alone applies its password policy and writes the record. If
//!   the leader is not connected, or does not answer within `ask_timeout`, the caller gets an
//!   error; nothing is queued.

use std::collections::BTreeMap;

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher as _, SaltString};
use meshward_crdt::mastered::{
    Candidacy, Chain, Endorsement, Handover, RecordKind, Roster, SignedRecord, VerifyError,
};
use rand::RngCore as _;
use tracing::{info, warn};

use super::{Ask, Core, Mastered, Millis, Output, Reply, Secret, Taken};
use crate::cluster_config::{ClusterConfig, PasswordSet};
use crate::roster::leader_address;
use meshward_crdt::WriterId;

/// A request of ours in flight.
#[derive(Debug)]
pub(super) enum Pending {
    /// An endorsement for our failover.
    Endorse,
    /// A peer's whole chain, to resolve a fork.
    Chain,
    /// A request delegated to the leader for the caller's `token`.
    Delegated {
        /// The caller's token.
        token: u64,
        /// When the caller gets an error.
        deadline: Millis,
    },
}

/// A failover this node runs as candidate.
#[derive(Debug)]
pub(super) struct Failover {
    token: u64,
    candidacy: Candidacy,
    endorsements: BTreeMap<[u8; 32], Endorsement>,
    refusals: Vec<String>,
    asked: usize,
    need: usize,
    members: usize,
    deadline: Millis,
}

const NO_CLUSTER: &str =
    "this node is not part of a cluster; run `meshward init` or `meshward join` first";

/// Why a held node (its store refuses writes, see [`Core::set_held`]) refuses what it would
/// have to make durable for a peer.
const HELD: &str = "this node's disk is full and its store refuses writes; try again once \
                    space is freed there";

/// How long the leader keeps admitting a node that left, so its answer reaches it.
const LEAVE_GRACE_MS: Millis = 2_000;

/// Longest user name a password change accepts.
pub const MAX_USER: usize = 128;

/// Longest password accepted (the policy decides the shortest).
pub const MAX_PASSWORD: usize = 1024;

impl Core {
    /// Loads the durable vote (the last endorsement given) at start.
    pub fn set_vote(&mut self, vote: Option<(u64, WriterId)>) {
        self.vote = vote;
    }

    /// The leader's key and how long ago we heard from it, if it is another node.
    pub fn leader_heard(&self, now: Millis) -> Option<(WriterId, Option<Millis>)> {
        let chain = self.chain()?;
        let leader = WriterId(chain.leader());
        if leader == self.me() {
            return None;
        }
        let heard = self
            .peers
            .get(&leader)
            .filter(|p| p.status.connected)
            .and_then(|p| p.status.last_seen_ms)
            .map(|seen| now.saturating_sub(seen));
        Some((leader, heard))
    }

    /// How long ago we heard from the leader, if it counts as alive.
    fn leader_alive(&self, now: Millis) -> Option<Millis> {
        let timeout = self.config.leader_timeout.as_millis() as u64;
        self.leader_heard(now)
            .and_then(|(_, heard)| heard)
            .filter(|&ago| ago < timeout)
    }

    /// Signs, persists, applies and publishes the next mastered record, as the leader.
    pub(super) fn write_mastered(
        &mut self,
        now: Millis,
        kind: RecordKind,
        payload: Vec<u8>,
    ) -> Result<u64, String> {
        let me = self.me();
        let m = self.mastered.as_ref().ok_or(NO_CLUSTER)?;
        if m.chain.leader() != me.0 {
            return Err(format!(
                "only the leader writes mastered config; the leader is {} (epoch {}): run this on it",
                leader_address(&m.chain),
                m.chain.epoch()
            ));
        }
        let record = m.chain.sign_next(self.replica.signing_key(), kind, payload);
        self.commit_own(now, record)
    }

    /// Persists, applies and publishes a record this node signed.
    fn commit_own(&mut self, now: Millis, record: SignedRecord) -> Result<u64, String> {
        let m = self.mastered.as_ref().ok_or(NO_CLUSTER)?;
        m.chain.verify(&record).map_err(|e| e.to_string())?;
        let version = record.record.version;
        let encoded = record.encode();
        match self.take_mastered(now, record, self.me()) {
            Taken::Applied => {
                self.publish_mastered(encoded);
                Ok(version)
            }
            _ => Err("the chain moved while writing; try again".into()),
        }
    }

    pub(super) fn failover(&mut self, now: Millis, token: u64, force: bool) {
        let result = self.start_failover(now, token, force);
        if let Err(e) = result {
            self.outbox.push(Output::Done {
                token,
                result: Err(e),
            });
        }
    }

    fn start_failover(&mut self, now: Millis, token: u64, force: bool) -> Result<(), String> {
        let me = self.me();
        let m = self.mastered.as_ref().ok_or(NO_CLUSTER)?;
        if m.chain.leader() == me.0 {
            return Err(format!("this node already leads epoch {}", m.chain.epoch()));
        }
        if !m.chain.roster().contains(&me.0) {
            return Err("this node is not in the roster; it cannot lead".into());
        }
        if self.failover.is_some() {
            return Err("a failover is already running on this node".into());
        }
        let key = self.replica.signing_key().clone();
        let candidacy = m.chain.candidacy(me.0);
        let own = Endorsement::sign(&key, &candidacy);
        let members = m.chain.roster().members.len();
        if force {
            if members != 2 {
                return Err(format!(
                    "--force is the break-glass for a two-node pair whose other node is gone; \
                     this cluster has {members} members: use `meshward ha failover` (majority \
                     endorsement)"
                ));
            }
            let payload = Handover {
                next_epoch: candidacy.next_epoch,
                next_leader: me.0,
                endorsements: vec![own],
                forced: true,
            }
            .encode();
            let record = m.chain.sign_next(&key, RecordKind::Handover, payload);
            warn!(
                epoch = candidacy.next_epoch,
                "FORCED FAILOVER: this node takes over without the other node's endorsement; \
                 if the other node still leads elsewhere, the higher epoch wins when they meet \
                 and its later records become superseded"
            );
            let result = self.commit_own(now, record);
            self.outbox.push(Output::Done { token, result });
            return Ok(());
        }
        if let Some(ago) = self.leader_alive(now) {
            return Err(format!(
                "the leader {} is alive (heard {ago} ms ago); a failover needs it gone: for a \
                 planned hand-over run `meshward ha demote --to NODE` on the leader",
                leader_address(&m.chain)
            ));
        }
        if let Some((epoch, other)) = self.vote
            && epoch >= candidacy.next_epoch
            && other != me
        {
            return Err(format!(
                "this node already endorsed {other} for epoch {epoch}; it cannot stand itself"
            ));
        }
        let need = m.chain.roster().majority();
        let leader = m.chain.leader();
        let peers: Vec<WriterId> = m
            .chain
            .roster()
            .members
            .iter()
            .map(|member| WriterId(member.key))
            .filter(|k| *k != me && k.0 != leader)
            .filter(|k| self.peers.get(k).is_some_and(|p| p.status.connected))
            .collect();
        if peers.len() + 1 < need {
            return Err(format!(
                "failover refused: this node reaches {} of the {members} members and a majority \
                 needs {need}; this side of the cluster is a minority (the other side may still \
                 have a leader)",
                peers.len() + 1
            ));
        }
        self.vote = Some((candidacy.next_epoch, me));
        self.outbox.push(Output::PersistVote {
            epoch: candidacy.next_epoch,
            candidate: me,
        });
        info!(
            epoch = candidacy.next_epoch,
            asked = peers.len(),
            "failover: asking for endorsements"
        );
        for peer in &peers {
            self.ask(
                *peer,
                Ask::Endorse {
                    next_epoch: candidacy.next_epoch,
                    prev_version: candidacy.prev_version,
                    prev_hash: candidacy.prev_hash.0,
                },
                Pending::Endorse,
            );
        }
        self.failover = Some(Failover {
            token,
            candidacy,
            endorsements: BTreeMap::from([(me.0, own)]),
            refusals: Vec::new(),
            asked: peers.len(),
            need,
            members,
            deadline: now + self.config.ask_timeout.as_millis() as u64,
        });
        self.check_failover(now);
        Ok(())
    }

    /// Finishes the failover once a majority endorsed it, or once it cannot succeed.
    fn check_failover(&mut self, now: Millis) {
        let Some(f) = &self.failover else { return };
        let answered = f.endorsements.len() + f.refusals.len();
        let won = f.endorsements.len() >= f.need;
        let lost = now >= f.deadline || answered == f.asked + 1;
        if !won && !lost {
            return;
        }
        let Some(f) = self.failover.take() else {
            return;
        };
        let result = if won {
            let payload = Handover {
                next_epoch: f.candidacy.next_epoch,
                next_leader: f.candidacy.next_leader,
                endorsements: f.endorsements.into_values().collect(),
                forced: false,
            }
            .encode();
            match self.mastered.as_ref() {
                None => Err(NO_CLUSTER.to_string()),
                Some(m) => {
                    let record = m.chain.sign_next(
                        self.replica.signing_key(),
                        RecordKind::Handover,
                        payload,
                    );
                    self.commit_own(now, record)
                }
            }
        } else {
            let why = if f.refusals.is_empty() {
                String::new()
            } else {
                format!(" ({})", f.refusals.join("; "))
            };
            Err(format!(
                "failover refused: {} of the {} members endorsed this node and a majority needs \
                 {}: this side of the cluster is a minority, or the others still hear a \
                 leader{why}",
                f.endorsements.len(),
                f.members,
                f.need
            ))
        };
        self.outbox.push(Output::Done {
            token: f.token,
            result,
        });
    }

    /// Decides on an endorsement request from `candidate`.
    fn endorse(
        &mut self,
        now: Millis,
        candidate: WriterId,
        next_epoch: u64,
        prev_version: u64,
        prev_hash: [u8; 32],
    ) -> Result<Endorsement, String> {
        let me = self.me();
        if self.held {
            return Err(HELD.into());
        }
        let m = self.mastered.as_ref().ok_or(NO_CLUSTER)?;
        let candidacy = m.chain.candidacy(candidate.0);
        if !m.chain.roster().contains(&candidate.0) {
            return Err("the candidate is not in my roster".into());
        }
        if (next_epoch, prev_version, prev_hash)
            != (
                candidacy.next_epoch,
                candidacy.prev_version,
                candidacy.prev_hash.0,
            )
        {
            return Err(format!(
                "my chain is at version {} of epoch {}; sync first",
                m.chain.last_version(),
                m.chain.epoch()
            ));
        }
        if m.chain.leader() == me.0 {
            return Err(format!("I lead epoch {} and am alive", m.chain.epoch()));
        }
        if let Some(ago) = self.leader_alive(now) {
            return Err(format!("I heard from the leader {ago} ms ago"));
        }
        if let Some((epoch, other)) = self.vote
            && epoch >= next_epoch
            && other != candidate
        {
            return Err(format!("I already endorsed another node for epoch {epoch}"));
        }
        let endorsement = Endorsement::sign(self.replica.signing_key(), &candidacy);
        self.vote = Some((next_epoch, candidate));
        self.outbox.push(Output::PersistVote {
            epoch: next_epoch,
            candidate,
        });
        Ok(endorsement)
    }

    pub(super) fn leave(&mut self, now: Millis, token: u64, node: Option<WriterId>) {
        let me = self.me();
        let Some(m) = self.mastered.as_ref() else {
            let result = Err(NO_CLUSTER.to_string());
            self.outbox.push(Output::Done { token, result });
            return;
        };
        if m.chain.leader() == me.0 {
            let result = match node {
                Some(target) if target != me => self.remove_member(now, target),
                _ if m.chain.roster().members.len() == 1 => {
                    Err("this node is alone in its cluster: it already runs standalone".into())
                }
                _ => Err(
                    "the leader cannot leave while it leads: hand over first with \
                          `meshward ha demote --to NODE`, then run make-standalone on this node"
                        .into(),
                ),
            };
            self.outbox.push(Output::Done { token, result });
        } else if node.is_some_and(|n| n != me) {
            let result = Err(format!(
                "only the leader removes other nodes; the leader is {}",
                leader_address(&m.chain)
            ));
            self.outbox.push(Output::Done { token, result });
        } else {
            let have = m.chain.last_version();
            self.delegate(now, token, Ask::Leave { have });
        }
    }

    /// Writes a roster without `target`, as the leader.
    fn remove_member(&mut self, now: Millis, target: WriterId) -> Result<u64, String> {
        let m = self.mastered.as_ref().ok_or(NO_CLUSTER)?;
        if !m.chain.roster().contains(&target.0) {
            return Err(format!("node {target} is not in the roster"));
        }
        let roster = Roster {
            members: m
                .chain
                .roster()
                .members
                .iter()
                .filter(|member| member.key != target.0)
                .cloned()
                .collect(),
        };
        info!(node = %target, "removing a node from the roster");
        self.write_mastered(now, RecordKind::Roster, roster.encode())
    }

    pub(super) fn password(&mut self, now: Millis, token: u64, user: String, password: Secret) {
        if let Err(e) = check_user(&user, &password) {
            self.outbox.push(Output::Done {
                token,
                result: Err(e),
            });
            return;
        }
        let Some(m) = self.mastered.as_ref() else {
            let result = Err(NO_CLUSTER.to_string());
            self.outbox.push(Output::Done { token, result });
            return;
        };
        if m.chain.leader() == self.me().0 {
            let result = self.set_password(now, &user, &password);
            self.outbox.push(Output::Done { token, result });
        } else {
            let have = m.chain.last_version();
            self.delegate(
                now,
                token,
                Ask::Password {
                    have,
                    user,
                    password,
                },
            );
        }
    }

    /// Applies the leader's password policy and writes the new password hash, as the leader.
    fn set_password(&mut self, now: Millis, user: &str, password: &Secret) -> Result<u64, String> {
        let m = self.mastered.as_ref().ok_or(NO_CLUSTER)?;
        ClusterConfig::from_records(&m.records)
            .password_policy()
            .check(&password.0)
            .map_err(|e| e.to_string())?;
        let mut salt = [0u8; 16];
        self.rng.fill_bytes(&mut salt);
        let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
        let hash = Argon2::default()
            .hash_password(password.0.as_bytes(), &salt)
            .map_err(|e| e.to_string())?
            .to_string();
        let payload = PasswordSet {
            user: user.to_string(),
            hash,
        }
        .encode();
        self.write_mastered(now, RecordKind::Password, payload)
    }

    /// Sends `ask` to the leader for the caller's `token`, or answers at once that the leader
    /// is unreachable.
    fn delegate(&mut self, now: Millis, token: u64, ask: Ask) {
        let Some((leader, heard)) = self.leader_heard(now) else {
            let result = Err(NO_CLUSTER.to_string());
            self.outbox.push(Output::Done { token, result });
            return;
        };
        if heard.is_none() {
            let address = self
                .chain()
                .map(leader_address)
                .unwrap_or_else(|| leader.to_string());
            let result = Err(format!(
                "the leader {address} is not connected to this node; nothing was changed: try \
                 again when it is reachable, or run the command on the leader"
            ));
            self.outbox.push(Output::Done { token, result });
            return;
        }
        let deadline = now + self.config.ask_timeout.as_millis() as u64;
        self.ask(leader, ask, Pending::Delegated { token, deadline });
    }

    /// Sends a request and remembers what it was for.
    fn ask(&mut self, peer: WriterId, ask: Ask, pending: Pending) {
        let request = self.next_request;
        self.next_request += 1;
        self.asks.insert(request, pending);
        self.outbox.push(Output::Request {
            peer,
            request,
            data: ask.encode(),
        });
    }

    /// Serves an HA request from a peer.
    pub(super) fn serve_ha(&mut self, now: Millis, peer: WriterId, channel: u64, ask: Ask) {
        let me = self.me();
        let reply = match ask {
            Ask::Sync(_) => Reply::Done(Err("unexpected request".into())),
            Ask::Endorse {
                next_epoch,
                prev_version,
                prev_hash,
            } => {
                let result = self.endorse(now, peer, next_epoch, prev_version, prev_hash);
                match &result {
                    Ok(_) => {
                        self.counters.endorsements_given += 1;
                        info!(candidate = %peer, epoch = next_epoch, "endorsed a failover");
                    }
                    Err(why) => {
                        self.counters.endorsements_refused += 1;
                        info!(candidate = %peer, reason = %why, "refused to endorse a failover");
                    }
                }
                Reply::Endorsed(result)
            }
            Ask::Chain => Reply::Chain(
                self.mastered
                    .as_ref()
                    .map(|m| m.records.iter().map(SignedRecord::encode).collect())
                    .unwrap_or_default(),
            ),
            Ask::Leave { have } => {
                let result = if self.held {
                    Err(HELD.into())
                } else if self.chain().is_some_and(|c| c.leader() == me.0) {
                    self.remove_member(now, peer)
                        .map(|_| self.records_after(have))
                } else {
                    Err("I am not the leader".into())
                };
                // Keep admitting the node that left for a moment, so the answer reaches it.
                let mut admitted = self.take_roster_output();
                if result.is_ok() {
                    let mut grace = self.roster.clone();
                    grace.insert(peer);
                    admitted = vec![Output::Roster(grace)];
                    self.release_at = Some(now + LEAVE_GRACE_MS);
                }
                self.outbox.extend(admitted);
                self.respond(channel, Reply::Done(result));
                return;
            }
            Ask::Password {
                have,
                user,
                password,
            } => {
                let result = if self.held {
                    Err(HELD.into())
                } else if self.chain().is_some_and(|c| c.leader() == me.0) {
                    check_user(&user, &password)
                        .and_then(|()| self.set_password(now, &user, &password))
                        .map(|_| self.records_after(have))
                } else {
                    Err("I am not the leader".into())
                };
                Reply::Done(result)
            }
        };
        self.respond(channel, reply);
    }

    /// Takes the roster outputs queued so far.
    fn take_roster_output(&mut self) -> Vec<Output> {
        let (roster, rest): (Vec<Output>, Vec<Output>) = std::mem::take(&mut self.outbox)
            .into_iter()
            .partition(|o| matches!(o, Output::Roster(_)));
        self.outbox = rest;
        roster
    }

    fn records_after(&self, have: u64) -> Vec<Vec<u8>> {
        self.mastered
            .as_ref()
            .map(|m| {
                m.records
                    .iter()
                    .skip(have as usize)
                    .map(SignedRecord::encode)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A reply (or failure: `None`) to one of our HA requests.
    pub(super) fn ha_reply(
        &mut self,
        now: Millis,
        peer: WriterId,
        pending: Pending,
        reply: Option<Reply>,
    ) {
        match pending {
            Pending::Endorse => {
                if let Some(f) = self.failover.as_mut() {
                    match reply {
                        Some(Reply::Endorsed(Ok(e)))
                            if e.endorser == peer.0 && e.verify(&f.candidacy) =>
                        {
                            f.endorsements.insert(e.endorser, e);
                        }
                        Some(Reply::Endorsed(Err(why))) => {
                            f.refusals.push(format!("{peer}: {why}"));
                        }
                        _ => f.refusals.push(format!("{peer}: no valid answer")),
                    }
                    self.check_failover(now);
                }
            }
            Pending::Chain => {
                self.chain_fetch = None;
                match reply {
                    Some(Reply::Chain(records)) => self.resolve_fork(now, peer, records),
                    _ => self.counters.malformed += u64::from(reply.is_some()),
                }
            }
            Pending::Delegated { token, .. } => {
                let result = match reply {
                    Some(Reply::Done(Ok(records))) => {
                        for raw in records {
                            if let Ok(record) = SignedRecord::decode(&raw) {
                                self.take_mastered(now, record, peer);
                            }
                        }
                        Ok(self.chain().map_or(0, Chain::last_version))
                    }
                    Some(Reply::Done(Err(why))) => Err(format!("the leader refused: {why}")),
                    _ => Err(
                        "the leader did not answer; the change may not have been made: \
                              check with `meshward status` and try again"
                            .into(),
                    ),
                };
                self.outbox.push(Output::Done { token, result });
            }
        }
    }

    /// Timers: failover and delegation deadlines.
    pub(super) fn ha_tick(&mut self, now: Millis) {
        self.check_failover(now);
        if self.release_at.is_some_and(|at| now >= at) {
            self.release_at = None;
            self.outbox.push(Output::Roster(self.roster.clone()));
        }
        let expired: Vec<u64> = self
            .asks
            .iter()
            .filter(|(_, p)| matches!(p, Pending::Delegated { deadline, .. } if *deadline <= now))
            .map(|(r, _)| *r)
            .collect();
        for request in expired {
            if let Some(Pending::Delegated { token, .. }) = self.asks.remove(&request) {
                let result = Err(format!(
                    "the leader did not answer within {} s; the change may not have been made: \
                     check with `meshward status` and try again",
                    self.config.ask_timeout.as_secs()
                ));
                self.outbox.push(Output::Done { token, result });
            }
        }
        if self
            .chain_fetch
            .is_some_and(|at| now >= at + self.config.sync_timeout.as_millis() as u64)
        {
            self.chain_fetch = None;
        }
    }

    /// A record that conflicts with our chain: whether it signals a competing chain.
    pub(super) fn is_fork_signal(&self, error: &VerifyError) -> bool {
        let epoch = self.chain().map_or(0, Chain::epoch);
        match error {
            VerifyError::BrokenChain { .. } | VerifyError::StaleEpoch { .. } => true,
            VerifyError::UnknownSigner { epoch: e, .. } => *e > epoch,
            _ => false,
        }
    }

    /// Fetches `peer`'s whole chain to resolve a suspected fork (one fetch at a time).
    pub(super) fn fetch_chain(&mut self, now: Millis, peer: WriterId) {
        if self.held
            || peer == self.me()
            || self.chain_fetch.is_some()
            || !self.peers.get(&peer).is_some_and(|p| p.status.connected)
        {
            return;
        }
        self.chain_fetch = Some(now);
        self.ask(peer, Ask::Chain, Pending::Chain);
    }

    /// Whether an advertised chain head conflicts with ours. Every advert asks, so a head at
    /// our last version is compared with the chain's kept hash instead of hashing the record
    /// again (a 1 000-member roster record is 50 KB).
    pub(super) fn head_conflicts(&self, version: u64, hash: [u8; 32]) -> bool {
        self.mastered.as_ref().is_some_and(|m| {
            if version == m.chain.last_version() {
                return version >= 1 && m.chain.last_hash().0 != hash;
            }
            version >= 1
                && m.records
                    .get(version as usize - 1)
                    .is_some_and(|r| r.hash().0 != hash)
        })
    }

    /// Keeps the better of our chain and `peer`'s: the higher (epoch, leader key) of the tips.
    fn resolve_fork(&mut self, now: Millis, peer: WriterId, raw: Vec<Vec<u8>>) {
        let Some(m) = self.mastered.as_ref() else {
            return;
        };
        let Some(theirs) = raw
            .iter()
            .map(|r| SignedRecord::decode(r).ok())
            .collect::<Option<Vec<SignedRecord>>>()
        else {
            self.counters.malformed += 1;
            return;
        };
        let chain = match Chain::rebuild(m.anchor, &theirs) {
            Ok(chain) => chain,
            Err(e) => {
                self.counters.mastered_rejected += 1;
                warn!(peer = %peer, error = %e, "a peer's mastered chain does not verify");
                return;
            }
        };
        let fork = m
            .records
            .iter()
            .zip(&theirs)
            .take_while(|(a, b)| a == b)
            .count();
        if fork == theirs.len() {
            return;
        }
        if fork == m.records.len() {
            for record in theirs.into_iter().skip(fork) {
                self.take_mastered(now, record, peer);
            }
            return;
        }
        let ours_rank = (m.chain.epoch(), m.chain.leader());
        let theirs_rank = (chain.epoch(), chain.leader());
        if theirs_rank > ours_rank {
            warn!(
                peer = %peer,
                from = fork + 1,
                epoch = chain.epoch(),
                superseded = m.records.len() - fork,
                "our mastered chain lost to a competing leader's; our later records are kept as \
                 superseded"
            );
            let superseded = m.records[fork..].to_vec();
            let anchor = m.anchor;
            self.outbox.push(Output::AdoptChain {
                from: fork as u64 + 1,
                records: theirs[fork..].to_vec(),
                superseded,
            });
            self.mastered = Some(Mastered {
                anchor,
                chain,
                records: theirs,
            });
            self.counters.chain_switches += 1;
            self.roster_from_chain(now);
        } else {
            warn!(
                peer = %peer,
                from = fork + 1,
                "a competing leader's mastered records lost to ours; kept as superseded"
            );
            self.outbox
                .push(Output::Superseded(theirs[fork..].to_vec()));
        }
    }
}

fn check_user(user: &str, password: &Secret) -> Result<(), String> {
    if user.is_empty()
        || user.len() > MAX_USER
        || !user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b))
    {
        return Err(format!(
            "bad user name {user:?}: 1–{MAX_USER} letters, digits, '-', '_', '.' or '@'"
        ));
    }
    if password.0.len() > MAX_PASSWORD {
        return Err(format!("the password is longer than {MAX_PASSWORD} bytes"));
    }
    Ok(())
}
