//! The removal oracle: a removed node's writes stop at its removal. The roster record that
//! removes a node carries the frontier of its segments as the leader held them; no node may
//! take a row of it beyond that frontier once its chain holds the record, whoever relays it.
//!
//! The frontiers are folded here from a node's stored chain, independently of the node core:
//! the latest frontier of each writer a roster record removed, none for a writer the last
//! roster lists, and an empty one (nothing counts) for a writer a roster record dropped
//! without naming a frontier (the leader held nothing of it: the core refuses all its rows). The simulator checks every row a node takes from a peer against the frontiers
//! of that node's chain at that moment ([`Frontiers::beyond`]), and counts only commits
//! within a frontier as ones every node must come to hold ([`Frontiers::counts`]): a removed
//! node's later rows are refused by design.

use std::collections::{BTreeMap, BTreeSet};

use meshward_crdt::mastered::{Genesis, RecordKind, RosterChange, SignedRecord};
use meshward_crdt::{SegmentKey, WriterId};

/// Where removed writers' rows stop, as one chain says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frontiers {
    limited: BTreeSet<WriterId>,
    at: BTreeMap<SegmentKey, (u64, [u8; 32])>,
}

impl Frontiers {
    /// The frontiers of a chain's records (in version order). A writer a roster record drops
    /// without naming a frontier for it (one that had written nothing the leader held, or a
    /// record from before frontiers) is limited to nothing: the core refuses all its new rows
    /// and advertises none it held, so none of them must reach every node.
    pub fn of(records: &[SignedRecord]) -> Frontiers {
        let mut f = Frontiers::default();
        let mut members: BTreeSet<WriterId> = BTreeSet::new();
        for record in records
            .iter()
            .filter(|r| matches!(r.record.kind, RecordKind::Genesis | RecordKind::Roster))
        {
            let change = match record.record.kind {
                RecordKind::Genesis => {
                    Genesis::decode(&record.record.payload).map(|g| RosterChange {
                        roster: g.roster,
                        frontiers: Vec::new(),
                    })
                }
                _ => RosterChange::decode(&record.record.payload),
            };
            let Ok(change) = change else {
                continue;
            };
            let now: BTreeSet<WriterId> = change
                .roster
                .members
                .iter()
                .map(|m| WriterId(m.key))
                .collect();
            f.limited.retain(|w| !now.contains(w));
            f.at.retain(|k, _| !now.contains(&k.writer));
            for dropped in members.difference(&now) {
                f.limited.insert(*dropped);
                f.at.retain(|k, _| k.writer != *dropped);
            }
            for frontier in &change.frontiers {
                let writer = WriterId(frontier.writer);
                f.limited.insert(writer);
                f.at.retain(|k, _| k.writer != writer);
                f.at.extend(frontier.states().map(|s| (s.key, (s.seq, s.hash))));
            }
            members = now;
        }
        f
    }

    /// Whether a head of `key` at `seq` with last change `hash` lies beyond its writer's
    /// frontier (false for a writer not removed with one).
    pub fn beyond(&self, key: &SegmentKey, seq: u64, hash: &[u8; 32]) -> bool {
        if !self.limited.contains(&key.writer) {
            return false;
        }
        match self.at.get(key) {
            None => true,
            Some((at, h)) => seq > *at || (seq == *at && hash != h),
        }
    }

    /// Whether change `seq` of `key` is one every node must come to hold: its writer was not
    /// removed, or the change is within the frontier.
    pub fn counts(&self, key: &SegmentKey, seq: u64) -> bool {
        !self.limited.contains(&key.writer) || self.at.get(key).is_some_and(|(at, _)| seq <= *at)
    }

    /// Whether no writer is limited.
    pub fn is_empty(&self) -> bool {
        self.limited.is_empty()
    }

    /// Changes of `key` held, `seq`, as they count: at most the frontier's for a segment of a
    /// removed writer (what lies beyond is history the node does not advertise).
    /// A segment the frontier does not name counts as nothing (0).
    pub fn clamp(&self, key: &SegmentKey, seq: u64) -> u64 {
        if !self.limited.contains(&key.writer) {
            return seq;
        }
        self.at.get(key).map_or(0, |(at, _)| seq.min(*at))
    }
}
