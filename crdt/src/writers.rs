//! Whose rows a replica accepts, and how many writers and segments it holds.
//!
//! A signed head proves who wrote a segment, not that the writer belongs to the cluster: any
//! key can sign. So a replica is told which writers it accepts ([`crate::Replica::set_writers`]:
//! the members of the verified roster, as the node core knows them) and refuses a head of any
//! other writer with [`ApplyError::UnknownWriter`] before looking at its data. Nothing of it is
//! stored, and the caller does not forward it.
//!
//! - **A made-up writer** (a member signing rows under a fresh key) is refused that way.
//! - **A removed member**: the rows already held stay (history: readable, persisted, restored),
//!   but new heads from it are refused, and its segments are neither advertised
//!   ([`crate::Replica::accepted_digest`]) nor offered to peers ([`crate::Replica::missing_for`]),
//!   which would refuse them too. A node that joins later does not receive them.
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
use crate::sync::MAX_DIGEST;

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
            held: BTreeMap::new(),
            others: 0,
        }
    }

    /// Replaces the accepted writers (`me` stays accepted).
    pub fn set(&mut self, writers: impl IntoIterator<Item = WriterId>) {
        self.accepted = writers.into_iter().filter(|w| *w != self.me).collect();
    }

    /// Whether new data of `writer` is accepted.
    pub fn accepts(&self, writer: &WriterId) -> bool {
        *writer == self.me || self.accepted.contains(writer)
    }

    /// Checks a received head's segment before its data is looked at: the writer is accepted,
    /// the segment number is in range, and when the segment is `new` here, there is room for
    /// it. Nothing changes.
    pub fn check(&self, key: &SegmentKey, new: bool) -> Result<(), ApplyError> {
        if !self.accepts(&key.writer) {
            return Err(ApplyError::UnknownWriter { key: *key });
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
        assert_eq!(w.check(&key(1, 0), true), Ok(()));
        assert_eq!(
            w.check(&key(2, 0), true),
            Err(ApplyError::UnknownWriter { key: key(2, 0) })
        );
        w.set([WriterId([2; 32])]);
        assert_eq!(w.check(&key(2, 0), true), Ok(()));
        w.set([]);
        assert!(w.accepts(&WriterId([1; 32])), "its own rows stay accepted");
        assert_eq!(
            w.check(&key(2, 0), false),
            Err(ApplyError::UnknownWriter { key: key(2, 0) }),
            "a removed writer's new heads are refused also for a segment held"
        );
    }

    #[test]
    fn segment_numbers_writers_and_segments_are_bounded() {
        let mut w = Writers::new(WriterId([1; 32]));
        w.set((2..=255).map(|n| WriterId([n; 32])));
        let past = key(2, MAX_SEGMENTS_PER_WRITER);
        assert!(matches!(
            w.check(&past, true),
            Err(ApplyError::SegmentOutOfRange { .. })
        ));
        let map = SegmentKey {
            table: TableId::Fingerprints,
            ..key(2, 1)
        };
        assert!(matches!(
            w.check(&map, true),
            Err(ApplyError::SegmentOutOfRange { max: 1, .. })
        ));

        // Fill the segment bound with four writers' full logs.
        for writer in 2..6 {
            for segment in 0..MAX_SEGMENTS_PER_WRITER {
                w.hold(&key(writer, segment));
            }
        }
        assert!(matches!(
            w.check(&key(7, 0), true),
            Err(ApplyError::TooManySegments { .. })
        ));
        assert_eq!(w.check(&key(1, 5), true), Ok(()), "its own are not counted");
        assert_eq!(w.check(&key(3, 0), false), Ok(()), "held ones go on");

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
            w.check(&one_more, true),
            Err(ApplyError::TooManyWriters { .. })
        ));
        let held = SegmentKey {
            writer: many[0],
            ..key(0, 1)
        };
        assert_eq!(w.check(&held, true), Ok(()), "a held writer's next segment");
    }
}
