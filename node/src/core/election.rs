//! Elections: every change of leader gathers endorsements from a strict majority of the
//! roster, the next leader's own among them ([`meshward_crdt::mastered`] refuses a hand-over
//! without them).
//!
//! - **Planned hand-over** ([`Input::Handover`](super::Input::Handover), `ha demote --to`,
//!   `ha failback`): the leader asks every connected member to endorse the named node for the
//!   next epoch at the leader's chain position ([`Ask::EndorseHandover`]), endorses it itself,
//!   and signs the `Handover` record once a majority, the named node included, did. Its own
//!   mastered writes wait meanwhile (they would move the chain position the endorsements
//!   name). So the leader cannot hand over alone, offline, to itself, or from a minority side.
//! - **Failover** ([`Input::Failover`](super::Input::Failover)): a follower that has not heard
//!   from the leader for `leader_timeout` asks every connected member to endorse it
//!   ([`Ask::Endorse`]) and signs the record itself with a majority.
//! - **Forced failover** (`--force`): only in a two-node roster, the candidate's own
//!   endorsement suffices; logged loudly.
//!
//! A member endorses only if it holds the same chain position, and has not endorsed another
//! candidate for that epoch; a failover also needs that it has not heard from the leader for
//! `leader_timeout`, while a planned hand-over must come from the leader itself. The vote is
//! made durable ([`Output::PersistVote`]) before the answer leaves. A side without a majority
//! gets an error after at most `ask_timeout`.
//!
//! The decisions themselves are pure functions of a node's chain, its durable vote and what it
//! heard from the leader ([`may_fail_over`], [`may_hand_over`], [`vote_allows`],
//! [`decide_endorsement`], [`elected`]): the core calls them, and the simulator's model
//! checker (`meshward_simulations::fencing`) explores every interleaving of them for 3 and 4
//! nodes.

use std::collections::BTreeMap;

use meshward_crdt::WriterId;
use meshward_crdt::mastered::{Candidacy, Chain, Endorsement, Handover, RecordKind};
use tracing::{info, warn};

use super::ha::{HELD, NO_CLUSTER, Pending};
use super::{Ask, Core, Millis, Output};

/// An election this node runs: a failover as candidate, or a planned hand-over as leader.
#[derive(Debug)]
pub(super) struct Election {
    token: u64,
    candidacy: Candidacy,
    /// The leader hands over (it signs the record); otherwise the candidate fails over.
    planned: bool,
    endorsements: BTreeMap<[u8; 32], Endorsement>,
    refusals: Vec<String>,
    asked: usize,
    need: usize,
    members: usize,
    deadline: Millis,
}

impl Election {
    /// Whether this is the leader's planned hand-over (its mastered writes wait for it).
    pub(super) fn planned(&self) -> bool {
        self.planned
    }
}

/// An endorsement request as a member receives it: who asks, for whom, and at which chain
/// position (a failover candidate asks for itself; a leader handing over asks for the next
/// leader).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndorseRequest {
    /// The node asking.
    pub asker: WriterId,
    /// The node that would lead.
    pub next_leader: WriterId,
    /// The epoch it would lead.
    pub next_epoch: u64,
    /// The asker's last mastered version.
    pub prev_version: u64,
    /// The hash of that record.
    pub prev_hash: [u8; 32],
}

/// Whether `me`, following `chain`, may stand for the next epoch itself: it is a roster member
/// and does not lead already. The candidacy it would ask endorsements for.
pub fn may_stand(me: WriterId, chain: &Chain) -> Result<Candidacy, String> {
    if chain.leader() == me.0 {
        return Err(format!("this node already leads epoch {}", chain.epoch()));
    }
    if !chain.roster().contains(&me.0) {
        return Err("this node is not in the roster; it cannot lead".into());
    }
    Ok(chain.candidacy(me.0))
}

/// Whether `me` may run a failover (`ha failover` without `--force`): it may stand
/// ([`may_stand`]) and the leader counts as gone (`leader_alive`: how long ago it was heard,
/// if within the leader timeout).
pub fn may_fail_over(
    me: WriterId,
    chain: &Chain,
    leader_alive: Option<Millis>,
) -> Result<Candidacy, String> {
    let candidacy = may_stand(me, chain)?;
    if let Some(ago) = leader_alive {
        return Err(format!(
            "the leader {} is alive (heard {ago} ms ago); a failover needs it gone: for a \
             planned hand-over run `meshward ha demote --to NODE` on the leader",
            chain.leader_address()
        ));
    }
    Ok(candidacy)
}

/// Whether `me` may hand leadership over to `next` (`ha demote --to`): it leads, `next` is
/// another member, and `next` is connected (it must endorse the hand-over itself).
pub fn may_hand_over(
    me: WriterId,
    chain: &Chain,
    next: WriterId,
    next_connected: bool,
) -> Result<Candidacy, String> {
    if chain.leader() != me.0 {
        return Err(format!(
            "only the leader hands over leadership; the leader is {} (epoch {}): run this on it",
            chain.leader_address(),
            chain.epoch()
        ));
    }
    if next == me {
        return Err(format!(
            "this node already leads epoch {}; name another member",
            chain.epoch()
        ));
    }
    if !chain.roster().contains(&next.0) {
        return Err(format!("{next} is not in the roster"));
    }
    if !next_connected {
        return Err(format!(
            "the next leader {next} is not connected to this node; it must endorse the \
             hand-over itself: try again when it is reachable"
        ));
    }
    Ok(chain.candidacy(next.0))
}

/// Whether a node whose durable vote is `vote` may endorse `next` for `next_epoch`: not if
/// it endorsed another node for that epoch or a later one. `Err` names that vote.
pub fn vote_allows(
    vote: Option<(u64, WriterId)>,
    next_epoch: u64,
    next: WriterId,
) -> Result<(), (u64, WriterId)> {
    match vote {
        Some((epoch, other)) if epoch >= next_epoch && other != next => Err((epoch, other)),
        _ => Ok(()),
    }
}

/// A member's answer to an endorsement request: the candidacy it signs, or why not. `me`
/// follows `chain`, last endorsed `vote` (durable), and heard the leader `leader_alive` ms
/// ago if within the leader timeout. The caller signs the candidacy and makes the new vote
/// (`(next_epoch, next_leader)`) durable before the answer leaves.
pub fn decide_endorsement(
    me: WriterId,
    chain: &Chain,
    vote: Option<(u64, WriterId)>,
    leader_alive: Option<Millis>,
    ask: &EndorseRequest,
) -> Result<Candidacy, String> {
    let candidacy = chain.candidacy(ask.next_leader.0);
    if !chain.roster().contains(&ask.next_leader.0) {
        return Err("the candidate is not in my roster".into());
    }
    if ask.next_leader.0 == chain.leader() {
        return Err("the candidate already leads; a hand-over names another member".into());
    }
    if (ask.next_epoch, ask.prev_version, ask.prev_hash)
        != (
            candidacy.next_epoch,
            candidacy.prev_version,
            candidacy.prev_hash.0,
        )
    {
        return Err(format!(
            "my chain is at version {} of epoch {}; sync first",
            chain.last_version(),
            chain.epoch()
        ));
    }
    if ask.asker.0 == chain.leader() {
        // A planned hand-over: the leader itself asks, so its liveness is no objection.
    } else if ask.asker == ask.next_leader {
        if chain.leader() == me.0 {
            return Err(format!("I lead epoch {} and am alive", chain.epoch()));
        }
        if let Some(ago) = leader_alive {
            return Err(format!("I heard from the leader {ago} ms ago"));
        }
    } else {
        return Err("only the leader or the candidate itself asks for endorsements".into());
    }
    vote_allows(vote, ask.next_epoch, ask.next_leader)
        .map_err(|(epoch, _)| format!("I already endorsed another node for epoch {epoch}"))?;
    Ok(candidacy)
}

/// Whether the members in `endorsers` elect the candidacy's next leader: at least `need` (a
/// strict majority of the roster), the next leader among them.
pub fn elected<'a>(
    need: usize,
    candidacy: &Candidacy,
    endorsers: impl IntoIterator<Item = &'a [u8; 32]>,
) -> bool {
    let mut count = 0;
    let mut next = false;
    for e in endorsers {
        count += 1;
        next |= *e == candidacy.next_leader;
    }
    count >= need && next
}

impl Core {
    pub(super) fn failover(&mut self, now: Millis, token: u64, force: bool) {
        if let Err(e) = self.start_failover(now, token, force) {
            self.outbox.push(Output::Done {
                token,
                result: Err(e),
            });
        }
    }

    pub(super) fn handover(&mut self, now: Millis, token: u64, next: WriterId) {
        if let Err(e) = self.start_handover(now, token, next) {
            self.outbox.push(Output::Done {
                token,
                result: Err(e),
            });
        }
    }

    fn start_failover(&mut self, now: Millis, token: u64, force: bool) -> Result<(), String> {
        let me = self.me();
        let m = self.mastered.as_ref().ok_or(NO_CLUSTER)?;
        let candidacy = may_stand(me, &m.chain)?;
        if self.election.is_some() {
            return Err("an election is already running on this node".into());
        }
        let key = self.replica.signing_key().clone();
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
                 if the other node still leads elsewhere, this forced epoch wins when they meet \
                 unless the pair handed over together, and the other side's later records \
                 become superseded"
            );
            let result = self.commit_own(now, record);
            self.outbox.push(Output::Done { token, result });
            return Ok(());
        }
        let candidacy = may_fail_over(me, &m.chain, self.leader_alive(now))?;
        let leader = m.chain.leader();
        let peers = self.voters(|k| k.0 != leader);
        let ask = Ask::Endorse {
            next_epoch: candidacy.next_epoch,
            prev_version: candidacy.prev_version,
            prev_hash: candidacy.prev_hash.0,
        };
        self.start_election(now, token, candidacy, own, peers, ask, false)
    }

    fn start_handover(&mut self, now: Millis, token: u64, next: WriterId) -> Result<(), String> {
        let me = self.me();
        let m = self.mastered.as_ref().ok_or(NO_CLUSTER)?;
        let connected = self.peers.get(&next).is_some_and(|p| p.status.connected);
        let candidacy = may_hand_over(me, &m.chain, next, connected)?;
        if self.election.is_some() {
            return Err("an election is already running on this node".into());
        }
        let own = Endorsement::sign(self.replica.signing_key(), &candidacy);
        let peers = self.voters(|_| true);
        let ask = Ask::EndorseHandover {
            next_leader: next.0,
            next_epoch: candidacy.next_epoch,
            prev_version: candidacy.prev_version,
            prev_hash: candidacy.prev_hash.0,
        };
        self.start_election(now, token, candidacy, own, peers, ask, true)
    }

    /// Connected roster members other than this node that `keep` accepts.
    fn voters(&self, keep: impl Fn(&WriterId) -> bool) -> Vec<WriterId> {
        let me = self.me();
        self.chain()
            .map(|chain| {
                chain
                    .roster()
                    .members
                    .iter()
                    .map(|member| WriterId(member.key))
                    .filter(|k| *k != me && keep(k))
                    .filter(|k| self.peers.get(k).is_some_and(|p| p.status.connected))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Records our own vote and asks `peers` for theirs.
    #[allow(clippy::too_many_arguments)]
    fn start_election(
        &mut self,
        now: Millis,
        token: u64,
        candidacy: Candidacy,
        own: Endorsement,
        peers: Vec<WriterId>,
        ask: Ask,
        planned: bool,
    ) -> Result<(), String> {
        let me = self.me();
        let next = WriterId(candidacy.next_leader);
        vote_allows(self.vote, candidacy.next_epoch, next).map_err(|(epoch, other)| {
            format!(
                "this node already endorsed {other} for epoch {epoch}; it cannot endorse {next}"
            )
        })?;
        let members = self.chain().map_or(0, |c| c.roster().members.len());
        let need = self.chain().map_or(1, |c| c.roster().majority());
        if peers.len() + 1 < need {
            return Err(format!(
                "{} refused: this node reaches {} of the {members} members and a majority needs \
                 {need}; this side of the cluster is a minority (the other side may still have a \
                 leader)",
                if planned { "hand-over" } else { "failover" },
                peers.len() + 1
            ));
        }
        self.vote = Some((candidacy.next_epoch, next));
        self.outbox.push(Output::PersistVote {
            epoch: candidacy.next_epoch,
            candidate: next,
        });
        info!(
            epoch = candidacy.next_epoch,
            next = %next,
            planned,
            asked = peers.len(),
            "election: asking for endorsements"
        );
        for peer in &peers {
            self.ask(*peer, ask.clone(), Pending::Endorse);
        }
        self.election = Some(Election {
            token,
            candidacy,
            planned,
            endorsements: BTreeMap::from([(me.0, own)]),
            refusals: Vec::new(),
            asked: peers.len(),
            need,
            members,
            deadline: now + self.config.ask_timeout.as_millis() as u64,
        });
        self.check_election(now);
        Ok(())
    }

    /// An answer (or failure: `None`) to one of our endorsement requests.
    pub(super) fn endorsement_reply(
        &mut self,
        now: Millis,
        peer: WriterId,
        reply: Option<Result<Endorsement, String>>,
    ) {
        let Some(e) = self.election.as_mut() else {
            return;
        };
        match reply {
            Some(Ok(endorsement))
                if endorsement.endorser == peer.0 && endorsement.verify(&e.candidacy) =>
            {
                e.endorsements.insert(endorsement.endorser, endorsement);
            }
            Some(Err(why)) => e.refusals.push(format!("{peer}: {why}")),
            _ => e.refusals.push(format!("{peer}: no valid answer")),
        }
        self.check_election(now);
    }

    /// Finishes the election once a majority (the next leader included) endorsed it, or once
    /// it cannot succeed.
    pub(super) fn check_election(&mut self, now: Millis) {
        let Some(e) = &self.election else { return };
        let answered = e.endorsements.len() + e.refusals.len();
        let won = elected(e.need, &e.candidacy, e.endorsements.keys());
        let lost = now >= e.deadline || answered == e.asked + 1;
        if !won && !lost {
            return;
        }
        let Some(e) = self.election.take() else {
            return;
        };
        let result = if won {
            let payload = Handover {
                next_epoch: e.candidacy.next_epoch,
                next_leader: e.candidacy.next_leader,
                endorsements: e.endorsements.into_values().collect(),
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
            let why = if e.refusals.is_empty() {
                String::new()
            } else {
                format!(" ({})", e.refusals.join("; "))
            };
            let next = WriterId(e.candidacy.next_leader);
            Err(if e.planned {
                format!(
                    "hand-over refused: {} of the {} members endorsed {next} and it needs a \
                     majority of {}, {next} included; nothing was changed{why}",
                    e.endorsements.len(),
                    e.members,
                    e.need
                )
            } else {
                format!(
                    "failover refused: {} of the {} members endorsed this node and a majority \
                     needs {}: this side of the cluster is a minority, or the others still hear \
                     a leader{why}",
                    e.endorsements.len(),
                    e.members,
                    e.need
                )
            })
        };
        self.outbox.push(Output::Done {
            token: e.token,
            result,
        });
    }

    /// Decides on an endorsement request from `asker` for `next_leader` to lead `next_epoch`
    /// at the chain position (`prev_version`, `prev_hash`): a failover asks for itself, a
    /// planned hand-over comes from the leader.
    pub(super) fn endorse(
        &mut self,
        now: Millis,
        asker: WriterId,
        next_leader: WriterId,
        next_epoch: u64,
        prev_version: u64,
        prev_hash: [u8; 32],
    ) -> Result<Endorsement, String> {
        if self.held {
            return Err(HELD.into());
        }
        let m = self.mastered.as_ref().ok_or(NO_CLUSTER)?;
        let ask = EndorseRequest {
            asker,
            next_leader,
            next_epoch,
            prev_version,
            prev_hash,
        };
        let candidacy =
            decide_endorsement(self.me(), &m.chain, self.vote, self.leader_alive(now), &ask)?;
        let endorsement = Endorsement::sign(self.replica.signing_key(), &candidacy);
        self.vote = Some((next_epoch, next_leader));
        self.outbox.push(Output::PersistVote {
            epoch: next_epoch,
            candidate: next_leader,
        });
        Ok(endorsement)
    }
}
