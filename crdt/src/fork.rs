//! Fork choice: which of two mastered chains that both verify a node keeps.
//!
//! Two verified chains of one cluster share a prefix and then differ: either two sides of a
//! partition each moved on (a minority side's leader kept writing while the majority elected
//! a new one; a two-node pair that forced a failover), or a leader signed two continuations of
//! one chain position (a leader restarted from an old copy of its data, or a stolen key).
//!
//! Every record after the fork point `f` is verified from the same state (epoch `e`, its
//! leader `L`, roster `R`). What separates the branches is how each **left epoch `e`**: the
//! first hand-over record of epoch `e` in a branch is its *exit*, and its [`Standing`] is
//!
//! - [`Standing::Majority`]: the exit's endorsers include a strict majority of `R` (the roster
//!   at the fork point, not one a branch wrote after it), none of them a double voter;
//! - [`Standing::Forced`]: a forced failover of a two-node pair;
//! - [`Standing::Unfenced`]: the branch never left epoch `e` (or left it on a roster of its own
//!   making).
//!
//! Members endorse at most one candidate per epoch and persist that vote, so two majorities
//! of `R` for epoch `e + 1` share a member that endorsed twice: two different exits never
//! both stand as majorities among honest members. An endorser found in both exits for
//! different candidacies is a double voter: it is reported and counts in neither.
//!
//! The branch with the better standing wins; between equal standings, the one whose exit more
//! members of `R` endorsed (double voters not counted). Still equal: two unfenced branches
//! mean the leader `L` signed two different records at version `f + 1` (equivocation,
//! reported) and nothing shows that more members followed one of them, so the node keeps its
//! own branch; two fenced branches (possible only through double voters or two forced
//! failovers) are ordered by their tips' `(epoch, leader key)`, so every node picks the same.
//!
//! So a former leader cannot undo what happened after it handed over: its hand-over carried a
//! majority, and whatever it signs from an old copy of its data stays in epoch `e` unfenced,
//! or needs a majority that already endorsed someone else. A higher epoch number alone never
//! wins.
//!
//! Pure: the caller fetches the other chain, calls [`choose`], and persists the outcome.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use thiserror::Error;

use crate::mastered::{
    Candidacy, Chain, Handover, RebuildError, RecordHash, RecordKind, SignedRecord, TrustAnchor,
};

/// How a branch left the fork point's epoch; ordered from weakest to strongest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Standing {
    /// The branch stayed in the fork point's epoch, or left it without a majority of the fork
    /// point's roster.
    Unfenced,
    /// The branch left it by a forced failover of a two-node pair.
    Forced,
    /// The branch left it by a hand-over endorsed by a strict majority of the fork point's
    /// roster.
    Majority,
}

/// How one branch left the fork point's epoch: its standing, then its support (the members
/// of the fork point's roster that endorsed its exit and endorsed nothing else for that
/// epoch). Ordered by standing first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Branch {
    /// How it left.
    pub standing: Standing,
    /// Endorsers of its exit that count.
    pub support: usize,
}

/// Which chain to keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    /// Ours: the other chain's records after the fork are superseded.
    Ours,
    /// Theirs: ours after the fork are superseded.
    Theirs,
}

/// Evidence that a key signed two things it may sign only once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Equivocation {
    /// The leader of `epoch` signed two different records at `version`.
    Leader {
        /// The leader's key.
        signer: [u8; 32],
        /// Its epoch.
        epoch: u64,
        /// The version both records claim.
        version: u64,
        /// Both records' hashes (ours first).
        hashes: [RecordHash; 2],
    },
    /// A member endorsed two different candidacies for `epoch`.
    Endorser {
        /// The member's key.
        endorser: [u8; 32],
        /// The epoch it endorsed twice.
        epoch: u64,
    },
}

/// The outcome of [`choose`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForkChoice {
    /// Records both chains share (the fork is after this many).
    pub common: usize,
    /// Which chain to keep.
    pub keep: Keep,
    /// How our branch left the fork point's epoch.
    pub ours: Branch,
    /// How theirs did.
    pub theirs: Branch,
    /// Double signatures the two branches prove.
    pub equivocations: Vec<Equivocation>,
    /// The verified state at the tip of the kept chain.
    pub chain: Chain,
}

/// Why [`choose`] could not compare two chains.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ForkError {
    /// Our own chain does not verify from the anchor.
    #[error("our own mastered chain does not verify: {0}")]
    Ours(#[source] RebuildError),
    /// The other chain does not verify from the anchor: drop it.
    #[error("the other mastered chain does not verify: {0}")]
    Theirs(#[source] RebuildError),
}

/// Chooses between two chains of one cluster (records in version order from genesis), both
/// verified here from `anchor`. When one chain is a prefix of the other there is no fork and
/// the longer one is kept.
pub fn choose(
    anchor: TrustAnchor,
    ours: &[SignedRecord],
    theirs: &[SignedRecord],
) -> Result<ForkChoice, ForkError> {
    let common = ours.iter().zip(theirs).take_while(|(a, b)| a == b).count();
    let base = Chain::rebuild(anchor, &ours[..common]).map_err(ForkError::Ours)?;
    let our_tip = (base.clone())
        .extended(&ours[common..], common)
        .map_err(ForkError::Ours)?;
    let their_tip = (base.clone())
        .extended(&theirs[common..], common)
        .map_err(ForkError::Theirs)?;
    if common == ours.len() || common == theirs.len() {
        let keep = if theirs.len() > ours.len() {
            Keep::Theirs
        } else {
            Keep::Ours
        };
        let chain = match keep {
            Keep::Ours => our_tip,
            Keep::Theirs => their_tip,
        };
        return Ok(ForkChoice {
            common,
            keep,
            ours: Branch::STAYED,
            theirs: Branch::STAYED,
            equivocations: Vec::new(),
            chain,
        });
    }
    let our_exit = exit(&base, &ours[common..]);
    let their_exit = exit(&base, &theirs[common..]);
    let mut equivocations = Vec::new();
    let (a, b) = (&ours[common], &theirs[common]);
    if a.signer == base.leader()
        && b.signer == base.leader()
        && a.record.epoch == base.epoch()
        && b.record.epoch == base.epoch()
    {
        equivocations.push(Equivocation::Leader {
            signer: base.leader(),
            epoch: base.epoch(),
            version: a.record.version,
            hashes: [a.hash(), b.hash()],
        });
    }
    let mut double = BTreeSet::new();
    if let (Some(x), Some(y)) = (&our_exit, &their_exit)
        && x.candidacy != y.candidacy
    {
        double = x.endorsers.intersection(&y.endorsers).copied().collect();
        equivocations.extend(double.iter().map(|endorser| Equivocation::Endorser {
            endorser: *endorser,
            epoch: x.candidacy.next_epoch,
        }));
    }
    let ours_branch = branch_of(&base, our_exit.as_ref(), &double);
    let theirs_branch = branch_of(&base, their_exit.as_ref(), &double);
    let keep = match ours_branch.cmp(&theirs_branch) {
        Ordering::Greater => Keep::Ours,
        Ordering::Less => Keep::Theirs,
        Ordering::Equal if ours_branch.standing == Standing::Unfenced => Keep::Ours,
        Ordering::Equal => {
            let rank = |c: &Chain| (c.epoch(), c.leader());
            if rank(&their_tip) > rank(&our_tip) {
                Keep::Theirs
            } else {
                Keep::Ours
            }
        }
    };
    let chain = match keep {
        Keep::Ours => our_tip,
        Keep::Theirs => their_tip,
    };
    Ok(ForkChoice {
        common,
        keep,
        ours: ours_branch,
        theirs: theirs_branch,
        equivocations,
        chain,
    })
}

/// How `branch` (records verified from `base`, in order) left `base`'s epoch, counting every
/// endorser of the fork point's roster (no other branch to find double voters in). An oracle
/// uses it: a branch of standing [`Standing::Majority`] must never be superseded.
pub fn standing(base: &Chain, branch: &[SignedRecord]) -> Standing {
    branch_of(base, exit(base, branch).as_ref(), &BTreeSet::new()).standing
}

/// The first hand-over out of the fork point's epoch in a branch.
#[derive(Debug)]
struct Exit {
    candidacy: Candidacy,
    endorsers: BTreeSet<[u8; 32]>,
    forced: bool,
}

/// The branch's exit from `base`'s epoch, if it has one. The branch verified from `base`, so
/// its payload parses and its endorsements verify.
fn exit(base: &Chain, branch: &[SignedRecord]) -> Option<Exit> {
    let record = branch
        .iter()
        .find(|r| r.record.kind == RecordKind::Handover && r.record.epoch == base.epoch())?;
    let handover = Handover::decode(&record.record.payload).ok()?;
    Some(Exit {
        candidacy: Candidacy {
            cluster: base.cluster(),
            next_epoch: handover.next_epoch,
            next_leader: handover.next_leader,
            prev_version: record.record.version - 1,
            prev_hash: record.record.prev,
        },
        endorsers: handover.endorsements.iter().map(|e| e.endorser).collect(),
        forced: handover.forced,
    })
}

impl Branch {
    /// A branch that never left the fork point's epoch.
    const STAYED: Branch = Branch {
        standing: Standing::Unfenced,
        support: 0,
    };
}

fn branch_of(base: &Chain, exit: Option<&Exit>, double: &BTreeSet<[u8; 32]>) -> Branch {
    let Some(exit) = exit else {
        return Branch::STAYED;
    };
    let roster = base.roster();
    let support = exit
        .endorsers
        .iter()
        .filter(|e| roster.contains(e) && !double.contains(*e))
        .count();
    let standing =
        if support >= roster.majority() && exit.endorsers.contains(&exit.candidacy.next_leader) {
            Standing::Majority
        } else if exit.forced {
            Standing::Forced
        } else {
            Standing::Unfenced
        };
    Branch { standing, support }
}

#[cfg(test)]
mod tests;
