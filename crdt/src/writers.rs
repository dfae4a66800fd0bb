//! Whose rows a replica accepts, and how many writers and segments it holds.
//!
//! A signed head proves who wrote a segment, not that the writer belongs to the cluster: any
//! key can sign. So a replica is told which writers it accepts ([`crate::Replica::set_writers`]:
//! the members of the verified roster, as the node core knows them) and refuses a head of any
//! other writer with [`ApplyError::UnknownWriter`] before looking at its data. Nothing of it is
//! stored, and the caller does not forward it.
//!
//! - **A made-up writer** (a member signing rows under a fresh key) is refused that way.
//! - **A removed member with a frontier** (the roster record that removed it carries where its
//!   writes stop, [`crate::mastered::Frontier`], told with [`crate::Replica::set_frontiers`]):
//!   a head exactly at the frontier (its changes and last change hash, which pins every change
//!   before it) is accepted, advertised and offered like a member's, so a node that was behind
//!   when it was removed still catches up, from any peer that holds the frontier; any other
//!   head (more changes than the frontier, another last change, a segment the frontier does
//!   not name, and also a shorter one, which could be another chain the removed key signed) is
//!   refused with [`ApplyError::BeyondFrontier`], whoever relays it. Rows beyond the frontier that a node took before it learnt of the removal stay held
//!   (history) and are not offered (a peer would refuse their head); the node advertises the
//!   frontier for that segment when its chain passes through it, so it agrees with the nodes
//!   that hold exactly the frontier instead of syncing with them for ever.
//! - **A removed member without a frontier** (removed by a record from before frontiers): the
//!   rows already held stay (history: readable, persisted, restored), but new heads from it
//!   are refused, and its segments are neither advertised ([`crate::Replica::accepted_digest`])
//!   nor offered to peers ([`crate::Replica::missing_for`]), which would refuse them too. A
//!   node that joins later does not receive them.
//! - **A member not known yet** (its rows overtook the roster record that admits it, which
//!   travels separately): the same refusal, which is not the sender's fault. The node core
//!   does not penalise the sender and syncs with it; the sync answer carries the mastered
//!   records first, so the roster arrives before the rows and they are taken then.
//!
//! The replica's own rows are always accepted (its own changes sent back to it, a restore).
//!
//! # Bounds
//! - [`MAX_WRITERS`] other writers held: a segment of one more is refused
//!   ([`ApplyError::TooManyWriters`]). Members are at most
//!   [`crate::mastered::MAX_ROSTER_MEMBERS`]; the rest is room for former members' history.
//! - [`MAX_SEGMENTS_PER_WRITER`] log segments per writer: a segment numbered at or past it is
//!   malformed ([`ApplyError::SegmentOutOfRange`]; an honest writer's own commit stops there
//!   with [`crate::CommitError::LogFull`]). With the default seal bound of 50 000 rows that is
//!   about 410 million events per writer.
//! - [`MAX_SEGMENTS`] segments of other writers held: one more is refused
//!   ([`ApplyError::TooManySegments`]); one writer alone cannot fill it.
//!
//! Together they keep a digest of everything held under [`crate::MAX_DIGEST`]. Old segments are
//! not archived or pruned yet: the bounds are the capacity of a cluster's shared tables.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::ApplyError;
use crate::id::{SegmentKey, TableShape, WriterId};
use crate::mastered::MAX_ROSTER_MEMBERS;
use crate::sync::{MAX_DIGEST, SegmentState};

/// Most writers other than the replica's own whose segments it holds: twice the largest
/// roster, so a full roster fits beside the history of as many former members.
pub const MAX_WRITERS: usize = 2 * MAX_ROSTER_MEMBERS;

/// Log segments per writer: segment numbers run from 0 to this bound, exclusive.
pub const MAX_SEGMENTS_PER_WRITER: u32 = 8192;

/// Most segments of other writers a replica holds: four writers' worth of full logs.
pub const MAX_SEGMENTS: usize = 4 * MAX_SEGMENTS_PER_WRITER as usize;

/// Largest encoded digest entry: table tag, writer, segment, seq and hash as postcard writes
/// them (1 + 32 + 5 + 10 + 32 bytes).
const MAX_DIGEST_ENTRY: usize = 80;

// Everything a replica may hold (the others' segments, and its own log and map segments)
// fits in one digest that peers accept.
const _: () = assert!(
    (MAX_SEGMENTS + MAX_SEGMENTS_PER_WRITER as usize + 2) * MAX_DIGEST_ENTRY + 8 <= MAX_DIGEST
);

/// The accepted writers and the segments held per writer.
#[derive(Clone, Debug)]
pub(crate) struct Writers {
    me: WriterId,
    accepted: BTreeSet<WriterId>,
    /// Removed writers whose rows are accepted up to a frontier.
    limited: BTreeSet<WriterId>,
    /// Their segments at the frontier: changes and the last change's hash.
    frontier: BTreeMap<SegmentKey, (u64, [u8; 32])>,
    held: BTreeMap<WriterId, usize>,
    /// Segments held of writers other than `me`.
    others: usize,
}

impl Writers {
    /// Accepts only `me` until told more.
    pub fn new(me: WriterId) -> Self {
        Writers {
            me,
            accepted: BTreeSet::new(),
            limited: BTreeSet::new(),
            frontier: BTreeMap::new(),
            held: BTreeMap::new(),
            others: 0,
        }
    }

    /// Replaces the accepted writers (`me` stays accepted).
    pub fn set(&mut self, writers: impl IntoIterator<Item = WriterId>) {
        self.accepted = writers.into_iter().filter(|w| *w != self.me).collect();
    }

    /// Replaces the frontiers of removed writers: `writers` are limited to their `segments`
    /// (a writer accepted as a member is not limited).
    pub fn set_frontiers(
        &mut self,
        writers: impl IntoIterator<Item = WriterId>,
        segments: impl IntoIterator<Item = SegmentState>,
    ) {
        self.limited = writers.into_iter().collect();
        self.frontier = segments
            .into_iter()
            .filter(|s| self.limited.contains(&s.key.writer))
            .map(|s| (s.key, (s.seq, s.hash)))
            .collect();
    }

    /// Whether new data of `writer` is accepted without a frontier.
    pub fn accepts(&self, writer: &WriterId) -> bool {
        *writer == self.me || self.accepted.contains(writer)
    }

    /// Whether a segment at `state` is one this replica takes, advertises and offers: of an
    /// accepted writer, or of a removed one within its frontier.
    pub fn takes(&self, state: &SegmentState) -> bool {
        self.accepts(&state.key.writer) || self.within_frontier(state) == Some(true)
    }

    /// The frontier of a segment of a removed writer limited by one (changes and the last
    /// change's hash); `None` for others, and for a segment the frontier does not name.
    pub fn frontier(&self, key: &SegmentKey) -> Option<(u64, [u8; 32])> {
        if self.accepts(&key.writer) {
            return None;
        }
        self.frontier.get(key).copied()
    }

    /// For a writer limited by a frontier, whether `state` is exactly the frontier of its
    /// segment: so many changes, ending in the frontier's last change. A shorter head is not
    /// taken either: its changes could be another chain the removed key signed (a stolen key
    /// forging history below the frontier), while the frontier's hash pins every change up
    /// to it. `None`: not limited.
    fn within_frontier(&self, state: &SegmentState) -> Option<bool> {
        if !self.limited.contains(&state.key.writer) {
            return None;
        }
        Some(
            self.frontier
                .get(&state.key)
                .is_some_and(|(seq, hash)| state.seq == *seq && state.hash == *hash),
        )
    }

    /// Checks a received head's segment before its data is looked at: the writer is accepted
    /// (or removed, and the head within its frontier), the segment number is in range, and
    /// when the segment is `new` here, there is room for it. Nothing changes.
    pub fn check(&self, state: &SegmentState, new: bool) -> Result<(), ApplyError> {
        let key = &state.key;
        if !self.accepts(&key.writer) {
            match self.within_frontier(state) {
                None => return Err(ApplyError::UnknownWriter { key: *key }),
                Some(false) => {
                    return Err(ApplyError::BeyondFrontier {
                        key: *key,
                        seq: state.seq,
                        frontier: self.frontier.get(key).map_or(0, |(seq, _)| *seq),
                    });
                }
                Some(true) => {}
            }
        }
        let max = match key.table.shape() {
            TableShape::Log => MAX_SEGMENTS_PER_WRITER,
            TableShape::Map => 1,
        };
        if key.segment >= max {
            return Err(ApplyError::SegmentOutOfRange { key: *key, max });
        }
        if !new || key.writer == self.me {
            return Ok(());
        }
        if !self.held.contains_key(&key.writer) && self.held_others() >= MAX_WRITERS {
            return Err(ApplyError::TooManyWriters {
                key: *key,
                max: MAX_WRITERS,
            });
        }
        if self.others >= MAX_SEGMENTS {
            return Err(ApplyError::TooManySegments {
                key: *key,
                max: MAX_SEGMENTS,
            });
        }
        Ok(())
    }

    /// Counts a segment the replica now holds for the first time.
    pub fn hold(&mut self, key: &SegmentKey) {
        *self.held.entry(key.writer).or_default() += 1;
        if key.writer != self.me {
            self.others += 1;
        }
    }

    /// Writers other than `me` with segments held.
    fn held_others(&self) -> usize {
        self.held.len() - usize::from(self.held.contains_key(&self.me))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::TableId;

    fn at(key: SegmentKey) -> SegmentState {
        SegmentState {
            key,
            seq: 1,
            hash: [0; 32],
        }
    }

    fn key(writer: u8, segment: u32) -> SegmentKey {
        SegmentKey {
            table: TableId::Events,
            writer: WriterId([writer; 32]),
            segment,
        }
    }

    #[test]
    fn only_accepted_writers_and_the_replicas_own_pass() {
        let mut w = Writers::new(WriterId([1; 32]));
        assert_eq!(w.check(&at(key(1, 0)), true), Ok(()));
        assert_eq!(
            w.check(&at(key(2, 0)), true),
            Err(ApplyError::UnknownWriter { key: key(2, 0) })
        );
        w.set([WriterId([2; 32])]);
        assert_eq!(w.check(&at(key(2, 0)), true), Ok(()));
        w.set([]);
        assert!(w.accepts(&WriterId([1; 32])), "its own rows stay accepted");
        assert_eq!(
            w.check(&at(key(2, 0)), false),
            Err(ApplyError::UnknownWriter { key: key(2, 0) }),
            "a removed writer's new heads are refused also for a segment held"
        );
    }

    #[test]
    fn a_removed_writer_is_taken_up_to_its_frontier_only() {
        let me = WriterId([1; 32]);
        let removed = WriterId([2; 32]);
        let mut w = Writers::new(me);
        w.set([WriterId([3; 32])]);
        let state = |segment, seq, hash| SegmentState {
            key: key(2, segment),
            seq,
            hash: [hash; 32],
        };
        // Removed by a record from before frontiers: every head refused.
        assert!(matches!(
            w.check(&state(0, 1, 1), true),
            Err(ApplyError::UnknownWriter { .. })
        ));
        w.set_frontiers([removed], [state(0, 5, 5), state(1, 2, 2)]);
        for within in [state(0, 5, 5), state(1, 2, 2)] {
            assert_eq!(w.check(&within, true), Ok(()), "{within:?} is within");
            assert!(w.takes(&within));
        }
        for (beyond, frontier) in [
            (state(0, 6, 6), 5),
            (state(0, 5, 4), 5),
            (state(0, 3, 9), 5),
            (state(1, 3, 3), 2),
            (state(2, 1, 1), 0),
        ] {
            assert_eq!(
                w.check(&beyond, false),
                Err(ApplyError::BeyondFrontier {
                    key: beyond.key,
                    seq: beyond.seq,
                    frontier
                }),
                "{beyond:?} is beyond"
            );
            assert!(!w.takes(&beyond));
        }
        assert!(!w.accepts(&removed), "limited, not a member");
        // A frontier of someone else does not let an unknown writer in.
        assert!(matches!(
            w.check(&at(key(4, 0)), true),
            Err(ApplyError::UnknownWriter { .. })
        ));
        // Admitted again: a member's rows, no frontier.
        w.set([removed]);
        w.set_frontiers([], []);
        assert_eq!(w.check(&state(0, 9, 9), false), Ok(()));
    }

    #[test]
    fn segment_numbers_writers_and_segments_are_bounded() {
        let mut w = Writers::new(WriterId([1; 32]));
        w.set((2..=255).map(|n| WriterId([n; 32])));
        let past = key(2, MAX_SEGMENTS_PER_WRITER);
        assert!(matches!(
            w.check(&at(past), true),
            Err(ApplyError::SegmentOutOfRange { .. })
        ));
        let map = SegmentKey {
            table: TableId::Fingerprints,
            ..key(2, 1)
        };
        assert!(matches!(
            w.check(&at(map), true),
            Err(ApplyError::SegmentOutOfRange { max: 1, .. })
        ));

        // Fill the segment bound with four writers' full logs.
        for writer in 2..6 {
            for segment in 0..MAX_SEGMENTS_PER_WRITER {
                w.hold(&key(writer, segment));
            }
        }
        assert!(matches!(
            w.check(&at(key(7, 0)), true),
            Err(ApplyError::TooManySegments { .. })
        ));
        assert_eq!(
            w.check(&at(key(1, 5)), true),
            Ok(()),
            "its own are not counted"
        );
        assert_eq!(w.check(&at(key(3, 0)), false), Ok(()), "held ones go on");

        // The writer bound counts distinct writers.
        let mut w = Writers::new(WriterId([1; 32]));
        let many = (0..=MAX_WRITERS as u32).map(|n| {
            let mut id = [9; 32];
            id[..4].copy_from_slice(&n.to_be_bytes());
            WriterId(id)
        });
        let many: Vec<WriterId> = many.collect();
        w.set(many.iter().copied());
        for writer in &many[..MAX_WRITERS] {
            w.hold(&SegmentKey {
                writer: *writer,
                ..key(0, 0)
            });
        }
        let one_more = SegmentKey {
            writer: many[MAX_WRITERS],
            ..key(0, 0)
        };
        assert!(matches!(
            w.check(&at(one_more), true),
            Err(ApplyError::TooManyWriters { .. })
        ));
        let held = SegmentKey {
            writer: many[0],
            ..key(0, 1)
        };
        assert_eq!(
            w.check(&at(held), true),
            Ok(()),
            "a held writer's next segment"
        );
    }
}
