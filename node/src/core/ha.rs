//! Leadership in the node core: leader writes, leaving the cluster, and password changes
//! delegated to the leader; the request/reply plumbing of every HA exchange. Elections
//! (planned hand-over, failover) are in [`super::election`], forks in [`super::fork`].
//!
//! - **Leaving** ([`Input::Leave`]): a follower asks the leader to remove it from the roster
//!   ([`Ask::Leave`]); the leader may remove any other node. A removed node admits no peer.
//! - **Delegation** ([`Input::Password`]): on a follower, the request goes to the leader
//!   ([`Ask::Password`]), which alone applies its password policy and writes the record. If
//!   the leader is not connected, or does not answer within `ask_timeout`, the caller gets an
//!   error; nothing is queued.

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher as _, SaltString};
use meshward_crdt::mastered::{Chain, Frontier, RecordKind, Roster, RosterChange, SignedRecord};
use rand::RngCore as _;
use tracing::info;

use super::{Ask, Core, Millis, Output, Reply, Secret, Taken};
use crate::cluster_config::{ClusterConfig, PasswordSet};
use meshward_crdt::WriterId;

/// A request of ours in flight.
#[derive(Debug)]
pub(super) enum Pending {
    /// An endorsement for our election.
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
    /// A request forwarded to the leader for the caller's `token` ([`super::forward`]).
    Forwarded {
        /// The caller's token.
        token: u64,
        /// When the caller gets an error.
        deadline: Millis,
    },
    /// Our losing branch's restrictive records, handed to the leader ([`super::reapply`]).
    Reapply,
    /// Our audit head, asked for the caller's `token` ([`super::audit_heads`]).
    AuditHead {
        /// The caller's token.
        token: u64,
    },
}

pub(super) const NO_CLUSTER: &str =
    "this node is not part of a cluster; run `meshward init` or `meshward join` first";

/// Why a held node (its store refuses writes, see [`Core::set_held`]) refuses what it would
/// have to make durable for a peer.
pub(super) const HELD: &str = "this node's disk is full and its store refuses writes; try again once \
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
    pub(super) fn leader_alive(&self, now: Millis) -> Option<Millis> {
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
                m.chain.leader_address(),
                m.chain.epoch()
            ));
        }
        if self.election.as_ref().is_some_and(|e| e.planned()) {
            return Err(
                "a hand-over is collecting endorsements; mastered writes wait until it is \
                        done (within a few seconds): try again"
                    .into(),
            );
        }
        let record = m.chain.sign_next(self.replica.signing_key(), kind, payload);
        self.commit_own(now, record)
    }

    /// Persists, applies and publishes a record this node signed.
    pub(super) fn commit_own(&mut self, now: Millis, record: SignedRecord) -> Result<u64, String> {
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

    pub(super) fn leave(&mut self, now: Millis, token: u64, node: Option<WriterId>) {
        let me = self.me();
        let Some(m) = self.mastered.as_ref() else {
            let result = Err(NO_CLUSTER.to_string());
            self.outbox.push(Output::Done { token, result });
            return;
        };
        if m.chain.leader() == me.0 {
            let result = match node {
                Some(target) if target != me => self.remove_member(now, target, None),
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
                m.chain.leader_address()
            ));
            self.outbox.push(Output::Done { token, result });
        } else {
            let have = m.chain.last_version();
            self.delegate(now, token, Ask::Leave { have });
        }
    }

    /// Writes a roster without `target`, as the leader, with the frontier where `target`'s
    /// rows stop: `frontier` if given (a removal re-applied from a losing branch keeps the
    /// branch's), else its segments as this node holds them.
    pub(super) fn remove_member(
        &mut self,
        now: Millis,
        target: WriterId,
        frontier: Option<Frontier>,
    ) -> Result<u64, String> {
        let m = self.mastered.as_ref().ok_or(NO_CLUSTER)?;
        if !m.chain.roster().contains(&target.0) {
            return Err(format!("node {target} is not in the roster"));
        }
        let mut frontier = frontier.unwrap_or_else(|| self.replica.frontier_of(target));
        frontier.writer = target.0;
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
        info!(
            node = %target,
            segments = frontier.segments.len(),
            "removing a node from the roster; its rows stop at the frontier held here"
        );
        // A node that never wrote has an empty frontier: all its rows are refused.
        let frontiers = if frontier.segments.is_empty() {
            Vec::new()
        } else {
            vec![frontier]
        };
        let change = RosterChange { roster, frontiers };
        self.write_mastered(now, RecordKind::Roster, change.encode())
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
        let users = crate::grants::Users::fold_held(&m.records).map_err(|e| e.to_string())?;
        let known = user
            .parse::<crate::grants::UserName>()
            .ok()
            .is_some_and(|name| users.grants(&name).is_some());
        if !known {
            return Err(format!(
                "no user {user:?}: create it first (`meshward user create {user}`)"
            ));
        }
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
            set_at_ms: now,
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
                .map(Chain::leader_address)
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
    pub(super) fn ask(&mut self, peer: WriterId, ask: Ask, pending: Pending) {
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
            } => self.serve_endorse(now, peer, peer, next_epoch, prev_version, prev_hash),
            Ask::EndorseHandover {
                next_leader,
                next_epoch,
                prev_version,
                prev_hash,
            } => self.serve_endorse(
                now,
                peer,
                WriterId(next_leader),
                next_epoch,
                prev_version,
                prev_hash,
            ),
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
                    self.remove_member(now, peer, None)
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
            Ask::Forward { have, envelope } => {
                self.serve_forward(channel, have, envelope);
                return;
            }
            Ask::Reapply { common, records } => self.serve_reapply(now, common, &records),
            Ask::AuditHead { writer } => self.serve_audit_head(writer),
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

    /// Answers an endorsement request from `asker` for `next_leader`, counting and logging it.
    fn serve_endorse(
        &mut self,
        now: Millis,
        asker: WriterId,
        next_leader: WriterId,
        next_epoch: u64,
        prev_version: u64,
        prev_hash: [u8; 32],
    ) -> Reply {
        let result = self.endorse(now, asker, next_leader, next_epoch, prev_version, prev_hash);
        match &result {
            Ok(_) => {
                self.counters.endorsements_given += 1;
                info!(asker = %asker, candidate = %next_leader, epoch = next_epoch, "endorsed");
            }
            Err(why) => {
                self.counters.endorsements_refused += 1;
                info!(asker = %asker, candidate = %next_leader, reason = %why, "refused to endorse");
            }
        }
        Reply::Endorsed(result)
    }

    /// Takes the roster outputs queued so far.
    fn take_roster_output(&mut self) -> Vec<Output> {
        let (roster, rest): (Vec<Output>, Vec<Output>) = std::mem::take(&mut self.outbox)
            .into_iter()
            .partition(|o| matches!(o, Output::Roster(_)));
        self.outbox = rest;
        roster
    }

    pub(super) fn records_after(&self, have: u64) -> Vec<Vec<u8>> {
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
                let answer = match reply {
                    Some(Reply::Endorsed(answer)) => Some(answer),
                    _ => None,
                };
                self.endorsement_reply(now, peer, answer);
            }
            Pending::Chain => {
                self.chain_fetch = None;
                match reply {
                    Some(Reply::Chain(records)) => self.resolve_fork(now, peer, records),
                    _ => self.counters.malformed += u64::from(reply.is_some()),
                }
            }
            Pending::Forwarded { token, .. } => self.forward_reply(now, peer, token, reply),
            Pending::Reapply => self.handoff_reply(now, peer, reply),
            Pending::AuditHead { token } => self.audit_head_reply(peer, token, reply),
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

    /// Timers: election and delegation deadlines.
    pub(super) fn ha_tick(&mut self, now: Millis) {
        self.check_election(now);
        self.handoff_tick(now);
        if self.release_at.is_some_and(|at| now >= at) {
            self.release_at = None;
            self.outbox.push(Output::Roster(self.roster.clone()));
        }
        let expired: Vec<u64> = self
            .asks
            .iter()
            .filter(|(_, p)| {
                matches!(p, Pending::Delegated { deadline, .. } | Pending::Forwarded { deadline, .. }
                    if *deadline <= now)
            })
            .map(|(r, _)| *r)
            .collect();
        for request in expired {
            let why = format!(
                "the leader did not answer within {} s; the change may not have been made: \
                 check with `meshward status` and try again",
                self.config.ask_timeout.as_secs()
            );
            match self.asks.remove(&request) {
                Some(Pending::Delegated { token, .. }) => {
                    self.outbox.push(Output::Done {
                        token,
                        result: Err(why),
                    });
                }
                Some(Pending::Forwarded { token, .. }) => {
                    self.outbox.push(Output::Forwarded {
                        token,
                        result: Err(why),
                    });
                }
                _ => {}
            }
        }
        if self
            .chain_fetch
            .is_some_and(|at| now >= at + self.config.sync_timeout.as_millis() as u64)
        {
            self.chain_fetch = None;
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
