//! Restrictive changes are never lost: when two leaders' chains meet, the records of the
//! losing branch that take access away are signed again into the winning chain by its leader.
//!
//! Restrictive records are [`RecordKind::Revocation`] (a revoked certificate serial, a deleted
//! user, a revoked grant: the payload says which, and means the same in any chain) and
//! [`RecordKind::Roster`] records that remove members. Everything else of a losing branch stays
//! superseded for review (`ha superseded`, `ha adopt`).
//!
//! Who re-applies them:
//! - The winning leader, when it resolves the fork itself (its chain won: [`Core::reapply`] on
//!   the loser's branch at once).
//! - Any node whose own chain lost ([`Core::hand_off`]): it hands its branch to the winning
//!   chain's leader ([`Ask::Reapply`]), retrying every [`RETRY_MS`] until that leader
//!   answers it did. The leader may never have seen the losing branch itself: the nodes of the
//!   losing side may adopt the winning chain before it fetches theirs.
//!
//! The leader verifies the branch from its own chain at the fork point (every record signed by
//! that branch's leader of its epoch, as the chain rules say), so no member can make it revoke
//! anything a leader did not. It re-signs each revocation (the same payload) that its chain
//! has not signed since the fork point and that still takes something away (the user exists,
//! the grant is held, the serial is not revoked yet), and removes each member a branch roster
//! removed that its roster still lists and has not dropped since the fork point, except
//! itself. A member removed so keeps the frontier the branch's roster record fixed (its rows
//! stop where the losing leader saw them when it removed it), or, when that record carried
//! none, gets the frontier this leader holds. So a branch handed off twice, or again after a restart, writes nothing twice, and
//! a user created again or a node that joined again after the re-application stands.

use meshward_crdt::WriterId;
use meshward_crdt::mastered::{Chain, RecordKind, RosterChange, SignedRecord};
use tracing::{info, warn};

use super::ha::{HELD, NO_CLUSTER, Pending};
use super::{Ask, Core, Millis, Reply};
use crate::certs::Serial;
use crate::grants::{UserChange, Users};

/// How often a node retries handing off its restrictive records, ms.
pub const RETRY_MS: u64 = 5_000;
/// Largest branch handed off, in encoded bytes (the rest stays superseded for review).
const MAX_HANDOFF_BYTES: usize = 48 * 1024;

/// A losing branch waiting to reach the winning leader.
#[derive(Debug)]
pub(super) struct Handoff {
    /// Records in common with the winning chain before the branch.
    common: u64,
    /// The branch, from `common + 1` up to its last restrictive record.
    branch: Vec<SignedRecord>,
    /// When to try next.
    next_try: Millis,
    /// Whether a request is out.
    asked: bool,
}

impl Core {
    /// Whether signing the revocation `payload` into our chain would still take something
    /// away: a user that exists, a grant held, a serial not yet revoked. A payload of a kind
    /// this version does not know counts as taking away.
    fn still_takes_away(&self, payload: &[u8]) -> bool {
        let Some(m) = self.mastered.as_ref() else {
            return false;
        };
        if let Ok(Some(change)) = UserChange::decode(RecordKind::Revocation, payload) {
            return Users::fold_held(&m.records).map_or(true, |users| users.check(&change).is_ok());
        }
        if let Ok(Some(serial)) = Serial::decode_revocation(RecordKind::Revocation, payload) {
            return !m.records.iter().any(|r| {
                Serial::decode_revocation(r.record.kind, &r.record.payload)
                    .is_ok_and(|s| s.as_ref() == Some(&serial))
            });
        }
        true
    }
}

/// Whether `record` may take access away (a revocation, or a roster: compared with the one
/// before it when it is applied).
fn maybe_restrictive(record: &SignedRecord) -> bool {
    matches!(
        record.record.kind,
        RecordKind::Revocation | RecordKind::Roster
    )
}

impl Core {
    /// Our chain lost from `common` on: hand the restrictive records of our branch to the
    /// winning leader.
    pub(super) fn hand_off(&mut self, now: Millis, common: u64, superseded: &[SignedRecord]) {
        let Some(last) = superseded.iter().rposition(maybe_restrictive) else {
            return;
        };
        let mut branch = Vec::new();
        let mut bytes = 0;
        for record in &superseded[..=last] {
            bytes += record.encode().len();
            if bytes > MAX_HANDOFF_BYTES {
                warn!(
                    kept = branch.len(),
                    "a losing branch is too long to hand off whole; the rest stays superseded \
                     for review (`ha superseded`, `ha adopt`)"
                );
                break;
            }
            branch.push(record.clone());
        }
        info!(
            records = branch.len(),
            "handing the restrictive records of our losing branch to the winning leader"
        );
        self.handoff = Some(Handoff {
            common,
            branch,
            next_try: now,
            asked: false,
        });
    }

    /// At start: a hand-off that a restart cut short is found again in the stored
    /// `superseded` records (by version): the branch from our chain's fork point up to the
    /// last restrictive record our chain does not hold in force. A branch that cannot be
    /// rebuilt (a record of it missing) is left for `ha adopt`.
    pub fn resume_handoff(&mut self, now: Millis, superseded: &[SignedRecord]) {
        let Some(m) = self.mastered.as_ref() else {
            return;
        };
        let Some(tip) = superseded.iter().rev().find(|r| match r.record.kind {
            RecordKind::Revocation => self.still_takes_away(&r.record.payload),
            RecordKind::Roster => true,
            _ => false,
        }) else {
            return;
        };
        let mut branch = vec![tip.clone()];
        let common = loop {
            let first = &branch[branch.len() - 1].record;
            let before = (first.version as usize).checked_sub(2);
            if before
                .and_then(|i| m.records.get(i))
                .is_some_and(|r| r.hash() == first.prev)
            {
                break first.version - 1;
            }
            match superseded.iter().find(|r| r.hash() == first.prev) {
                Some(r) if branch.len() < superseded.len() => branch.push(r.clone()),
                _ => return,
            }
        };
        branch.reverse();
        self.hand_off(now, common, &branch);
    }

    /// Timer: asks the winning leader to re-apply a waiting hand-off (or does it, as leader).
    pub(super) fn handoff_tick(&mut self, now: Millis) {
        let Some(h) = self.handoff.as_ref() else {
            return;
        };
        if h.asked || now < h.next_try {
            return;
        }
        let Some(leader) = self.chain().map(Chain::leader) else {
            return;
        };
        if leader == self.me().0 {
            let Some(h) = self.handoff.take() else { return };
            if let Err(e) = self.reapply(now, h.common, &h.branch) {
                warn!(error = %e, "cannot re-apply our losing branch's restrictive records");
            }
            return;
        }
        let leader = WriterId(leader);
        if !self.peers.get(&leader).is_some_and(|p| p.status.connected) {
            return;
        }
        let ask = Ask::Reapply {
            common: h.common,
            records: h.branch.iter().map(SignedRecord::encode).collect(),
        };
        if let Some(h) = self.handoff.as_mut() {
            h.asked = true;
        }
        self.ask(leader, ask, Pending::Reapply);
    }

    /// The leader's answer to our hand-off (`None`: no answer).
    pub(super) fn handoff_reply(&mut self, now: Millis, peer: WriterId, reply: Option<Reply>) {
        match reply {
            Some(Reply::Done(Ok(records))) => {
                self.handoff = None;
                for raw in records {
                    if let Ok(record) = SignedRecord::decode(&raw) {
                        self.take_mastered(now, record, peer);
                    }
                }
                info!(leader = %peer, "the winning leader re-applied our restrictive records");
            }
            other => {
                if let Some(Reply::Done(Err(why))) = other {
                    warn!(leader = %peer, why, "the leader did not re-apply our restrictive records; retrying");
                }
                if let Some(h) = self.handoff.as_mut() {
                    h.asked = false;
                    h.next_try = now + RETRY_MS;
                }
            }
        }
    }

    /// Serves [`Ask::Reapply`]: re-applies, as the leader, the restrictive records of `raw`,
    /// a branch off our chain after its first `common` records. Answers with the records
    /// after the asker's `common`.
    pub(super) fn serve_reapply(&mut self, now: Millis, common: u64, raw: &[Vec<u8>]) -> Reply {
        let branch: Option<Vec<SignedRecord>> =
            raw.iter().map(|r| SignedRecord::decode(r).ok()).collect();
        let Some(branch) = branch else {
            self.counters.malformed += 1;
            return Reply::Done(Err("a record of the branch does not decode".into()));
        };
        let result = self
            .reapply(now, common, &branch)
            .map(|_| self.records_after(common));
        Reply::Done(result)
    }

    /// Re-signs the restrictive records of `branch` (off our chain after `common` records)
    /// that our chain does not hold since; how many records it wrote.
    pub(super) fn reapply(
        &mut self,
        now: Millis,
        common: u64,
        branch: &[SignedRecord],
    ) -> Result<usize, String> {
        if self.held {
            return Err(HELD.into());
        }
        let m = self.mastered.as_ref().ok_or(NO_CLUSTER)?;
        let me = self.me().0;
        if m.chain.leader() != me {
            return Err("I am not the leader".into());
        }
        let common = usize::try_from(common)
            .ok()
            .filter(|c| *c <= m.records.len() && *c >= 1)
            .ok_or("the fork point is not on my chain")?;
        // Verify the branch from our chain at the fork point, noting what it took away.
        let mut chain = Chain::rebuild(m.anchor, &m.records[..common])
            .map_err(|e| format!("my own chain does not verify: {e}"))?;
        let mut revocations = Vec::new();
        let mut removed = Vec::new();
        for (i, record) in branch.iter().enumerate() {
            let before = chain.roster().clone();
            chain = chain
                .extended([record], common + i)
                .map_err(|e| format!("the branch does not verify: {e}"))?;
            match record.record.kind {
                RecordKind::Revocation => revocations.push(record.record.payload.clone()),
                RecordKind::Roster => {
                    // The branch's frontier of each removed member comes with its removal.
                    let frontiers = RosterChange::decode(&record.record.payload)
                        .map(|c| c.frontiers)
                        .unwrap_or_default();
                    removed.extend(
                        before
                            .members
                            .iter()
                            .filter(|old| !chain.roster().contains(&old.key))
                            .map(|old| {
                                let frontier =
                                    frontiers.iter().find(|f| f.writer == old.key).cloned();
                                (old.key, frontier)
                            }),
                    );
                }
                _ => {}
            }
        }
        let mut signed: Vec<Vec<u8>> = m.records[common..]
            .iter()
            .filter(|r| r.record.kind == RecordKind::Revocation)
            .map(|r| r.record.payload.clone())
            .collect();
        let mut written = 0;
        for payload in revocations {
            if signed.contains(&payload) || !self.still_takes_away(&payload) {
                continue;
            }
            self.write_mastered(now, RecordKind::Revocation, payload.clone())?;
            signed.push(payload);
            written += 1;
        }
        // A member our chain dropped since the fork point was handled already (and may have
        // joined again since, which stands).
        let dropped_since = |m: &super::Mastered, key: &[u8; 32]| {
            m.records[common..].iter().any(|r| {
                r.record.kind == RecordKind::Roster
                    && meshward_crdt::mastered::Roster::decode(&r.record.payload)
                        .is_ok_and(|roster| !roster.contains(key))
            })
        };
        for (key, frontier) in removed {
            let Some(m) = self.mastered.as_ref() else {
                break;
            };
            if key != me && m.chain.roster().contains(&key) && !dropped_since(m, &key) {
                self.remove_member(now, WriterId(key), frontier)?;
                written += 1;
            }
        }
        if written > 0 {
            info!(
                written,
                "re-applied the restrictive records of a losing branch"
            );
        }
        Ok(written)
    }
}
