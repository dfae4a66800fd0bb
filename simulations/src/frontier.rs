//! The removal oracle: a removed node's writes stop at its removal. The roster record that
//! removes a node carries the frontier of its segments as the leader held them; no node may
//! take a row of it beyond that frontier once its chain holds the record, whoever relays it.
//!
//! The frontiers are folded here from a node's stored chain, independently of the node core:
//! the latest frontier of each writer a roster record removed, none for a writer the last
//! roster lists. The simulator checks every row a node takes from a peer against the frontiers
//! of that node's chain at that moment ([`Frontiers::beyond`]), and counts only commits
//! within a frontier as ones every node must come to hold ([`Frontiers::counts`]): a removed
//! node's later rows are refused by design.

use std::collections::{BTreeMap, BTreeSet};

use meshward_crdt::mastered::{RecordKind, RosterChange, SignedRecord};
use meshward_crdt::{SegmentKey, WriterId};

/// Where removed writers' rows stop, as one chain says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frontiers {
    limited: BTreeSet<WriterId>,
    at: BTreeMap<SegmentKey, (u64, [u8; 32])>,
}

impl Frontiers {
    /// The frontiers of a chain's records (in version order).
    pub fn of(records: &[SignedRecord]) -> Frontiers {
        let mut f = Frontiers::default();
        for record in records
            .iter()
            .filter(|r| r.record.kind == RecordKind::Roster)
        {
            let Ok(change) = RosterChange::decode(&record.record.payload) else {
                continue;
            };
            let members: BTreeSet<WriterId> = change
                .roster
                .members
                .iter()
                .map(|m| WriterId(m.key))
                .collect();
            f.limited.retain(|w| !members.contains(w));
            f.at.retain(|k, _| !members.contains(&k.writer));
            for frontier in &change.frontiers {
                let writer = WriterId(frontier.writer);
                f.limited.insert(writer);
                f.at.retain(|k, _| k.writer != writer);
                f.at.extend(frontier.states().map(|s| (s.key, (s.seq, s.hash))));
            }
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
    pub fn clamp(&self, key: &SegmentKey, seq: u64) -> u64 {
        match self.at.get(key) {
            Some((at, _)) if self.limited.contains(&key.writer) => seq.min(*at),
            _ => seq,
        }
    }
}
