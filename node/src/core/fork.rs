//! Forks in the node core: noticing that a peer holds a competing mastered chain, fetching it,
//! and keeping the one [`meshward_crdt::fork::choose`] picks.
//!
//! A record or advert that conflicts with our chain makes the node fetch the peer's whole
//! chain ([`Ask::Chain`]), verify it from the trust anchor, and compare the two by how each
//! left the epoch at the fork point (a majority-endorsed hand-over beats a forced failover,
//! which beats staying in the epoch; never the epoch number alone). If theirs wins, ours from
//! the fork on is kept as superseded ([`Output::AdoptChain`]); if ours wins, theirs is
//! ([`Output::Superseded`]); nothing is silently dropped. Double signatures the two chains
//! prove (a leader that signed two records at one version, a member that endorsed two
//! candidates for one epoch) are counted (`equivocations`) and logged.
//!
//! The records of a losing branch are remembered (at most [`MAX_LOSERS`] hashes), so a peer
//! that keeps sending them, or advertising their head, costs one hash lookup instead of a
//! fetch and a verification of its whole chain each time.

use std::collections::VecDeque;

use meshward_crdt::WriterId;
use meshward_crdt::fork::{self, Equivocation, ForkError, Keep};
use meshward_crdt::mastered::{Chain, RecordHash, SignedRecord, VerifyError};
use tracing::{error, warn};

use super::ha::Pending;
use super::{Ask, Core, Mastered, Millis, Output};

/// Hashes of losing-branch records remembered; the oldest are forgotten first.
pub const MAX_LOSERS: usize = 4096;

/// Records known to be on a losing branch, oldest first.
#[derive(Debug, Default)]
pub(super) struct Losers(VecDeque<RecordHash>);

impl Losers {
    pub(super) fn contains(&self, hash: &RecordHash) -> bool {
        self.0.contains(hash)
    }

    fn remember(&mut self, records: &[SignedRecord]) {
        for record in records {
            let hash = record.hash();
            if !self.contains(&hash) {
                if self.0.len() == MAX_LOSERS {
                    self.0.pop_front();
                }
                self.0.push_back(hash);
            }
        }
    }
}

impl Core {
    /// A record that conflicts with our chain: whether it signals a competing chain.
    pub(super) fn is_fork_signal(&self, error: &VerifyError) -> bool {
        let epoch = self.chain().map_or(0, Chain::epoch);
        match error {
            VerifyError::BrokenChain { .. } | VerifyError::StaleEpoch { .. } => true,
            VerifyError::UnknownSigner { epoch: e, .. } => *e > epoch,
            _ => false,
        }
    }

    /// Whether `record` belongs to a branch that already lost to ours.
    pub(super) fn known_loser(&self, record: &SignedRecord) -> bool {
        self.losers.contains(&record.hash())
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

    /// Whether an advertised chain head conflicts with ours (and is not one already known to
    /// have lost). Every advert asks, so a head at our last version is compared with the
    /// chain's kept hash instead of hashing the record again (a 1 000-member roster record is
    /// 50 KB).
    pub(super) fn head_conflicts(&self, version: u64, hash: [u8; 32]) -> bool {
        if self.losers.contains(&RecordHash(hash)) {
            return false;
        }
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

    /// Keeps the chain [`fork::choose`] picks between ours and `peer`'s.
    pub(super) fn resolve_fork(&mut self, now: Millis, peer: WriterId, raw: Vec<Vec<u8>>) {
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
        let choice = match fork::choose(m.anchor, &m.records, &theirs) {
            Ok(choice) => choice,
            Err(ForkError::Theirs(e)) => {
                self.counters.mastered_rejected += 1;
                warn!(peer = %peer, error = %e, "a peer's mastered chain does not verify");
                return;
            }
            Err(e @ ForkError::Ours(_)) => {
                error!(error = %e, "cannot compare mastered chains");
                return;
            }
        };
        for evidence in &choice.equivocations {
            self.counters.equivocations += 1;
            match evidence {
                Equivocation::Leader {
                    signer,
                    epoch,
                    version,
                    hashes,
                } => warn!(
                    signer = %WriterId(*signer),
                    epoch,
                    version,
                    ours = %hashes[0],
                    theirs = %hashes[1],
                    "EQUIVOCATION: the leader of this epoch signed two different records at one \
                     version (restarted from an old copy of its data, or its key is in other \
                     hands); the branch a majority followed is kept"
                ),
                Equivocation::Endorser { endorser, epoch } => warn!(
                    endorser = %WriterId(*endorser),
                    epoch,
                    "EQUIVOCATION: a member endorsed two different candidates for one epoch; \
                     its endorsements count for neither"
                ),
            }
        }
        let common = choice.common;
        if common == theirs.len() {
            return;
        }
        if common == m.records.len() {
            for record in theirs.into_iter().skip(common) {
                self.take_mastered(now, record, peer);
            }
            return;
        }
        match choice.keep {
            Keep::Theirs => {
                warn!(
                    peer = %peer,
                    from = common + 1,
                    epoch = choice.chain.epoch(),
                    ours = ?choice.ours,
                    theirs = ?choice.theirs,
                    superseded = m.records.len() - common,
                    "our mastered chain lost to a competing one; our later records are kept as \
                     superseded"
                );
                let superseded = m.records[common..].to_vec();
                let anchor = m.anchor;
                self.losers.remember(&superseded);
                self.hand_off(now, common as u64, &superseded);
                self.outbox.push(Output::AdoptChain {
                    from: common as u64 + 1,
                    records: theirs[common..].to_vec(),
                    superseded,
                });
                self.mastered = Some(Mastered {
                    anchor,
                    chain: choice.chain,
                    records: theirs,
                });
                self.counters.chain_switches += 1;
                self.roster_from_chain(now);
            }
            Keep::Ours => {
                warn!(
                    peer = %peer,
                    from = common + 1,
                    ours = ?choice.ours,
                    theirs = ?choice.theirs,
                    "a competing chain's mastered records lost to ours; kept as superseded"
                );
                let superseded = theirs[common..].to_vec();
                self.losers.remember(&superseded);
                if let Err(e) = self.reapply(now, common as u64, &superseded)
                    && self.chain().is_some_and(|c| c.leader() == self.me().0)
                {
                    warn!(error = %e, "cannot re-apply the losing branch's restrictive records");
                }
                self.outbox.push(Output::Superseded(superseded));
            }
        }
    }
}
