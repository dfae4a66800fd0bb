//! Where a removed node's writes stop: the frontier of its segments that a `Roster` record
//! removing it carries, and the `Roster` payload that carries it ([`RosterChange`]).
//!
//! When the leader signs a roster that removes a node, it puts in the record the frontier of
//! that node's segments as the leader holds them: per shared table and segment, the number of
//! changes held and the hash of the last one (what the segment's signed head names). Every
//! node then accepts the removed writer's rows up to that frontier, whole (a node that was
//! behind still catches up from any peer holding it) and refuses anything else, relayed or
//! not: a removed or stolen node key can no longer write (see [`crate::writers`]).
//!
//! # Encoding
//! A roster without frontiers is the postcard roster alone, as before frontiers existed, so
//! old records decode unchanged (and their removed writers keep the old rule: every new head
//! refused). A roster with frontiers is the postcard roster, then [`FRONTIER_MINOR`] as one
//! byte, then the postcard list of frontiers. A later minor may append fields after the list,
//! which this version ignores; a payload of this minor has no trailing bytes.
//!
//! # Bounds
//! Frontiers are sorted by writer, segments by (table, segment), each at most once, so a
//! frontier has one encoding; together at most [`MAX_FRONTIER_SEGMENTS`] segments, so the
//! largest roster with a full log's frontier fits in [`super::MAX_PAYLOAD_BYTES`]. A frontier
//! names only writers the roster does not list.

use serde::{Deserialize, Serialize};

use super::{PayloadError, Roster};
use crate::id::{SegmentKey, TableId, TableShape, WriterId};
use crate::sync::SegmentState;

/// Version of the frontier extension of a `Roster` payload; a newer one may append fields.
pub const FRONTIER_MINOR: u8 = 1;

/// Most segments all frontiers of one roster record name together: one writer's full log
/// and its map tables, with room to spare (48 bytes each at most: 12 288 are 590 KiB, beside
/// a full roster's 295 KiB).
pub const MAX_FRONTIER_SEGMENTS: usize = 12 * 1024;

/// One segment of a removed writer at its frontier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FrontierSegment {
    /// The table.
    pub table: TableId,
    /// Segment number.
    pub segment: u32,
    /// Changes of the segment the leader held.
    pub seq: u64,
    /// Hash of the last of them.
    pub hash: [u8; 32],
}

/// Where a removed writer's rows stop.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frontier {
    /// The removed node's key.
    pub writer: [u8; 32],
    /// Its segments as the leader held them, sorted by (table, segment). A segment not named
    /// here is refused whole.
    pub segments: Vec<FrontierSegment>,
}

/// The payload of a `Roster` record: the members, and the frontiers of the writers it removes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RosterChange {
    /// The members.
    pub roster: Roster,
    /// Frontiers of removed writers (none: an admission, or a record from before frontiers).
    pub frontiers: Vec<Frontier>,
}

impl Frontier {
    /// The frontier of `writer` from the segment states a replica holds (others are skipped),
    /// in the order the payload wants.
    pub fn of<'a>(writer: WriterId, held: impl IntoIterator<Item = &'a SegmentState>) -> Frontier {
        let mut segments: Vec<FrontierSegment> = held
            .into_iter()
            .filter(|s| s.key.writer == writer)
            .map(|s| FrontierSegment {
                table: s.key.table,
                segment: s.key.segment,
                seq: s.seq,
                hash: s.hash,
            })
            .collect();
        segments.sort();
        Frontier {
            writer: writer.0,
            segments,
        }
    }

    /// The segments as replica segment states.
    pub fn states(&self) -> impl Iterator<Item = SegmentState> + '_ {
        self.segments.iter().map(|s| SegmentState {
            key: SegmentKey {
                table: s.table,
                writer: WriterId(self.writer),
                segment: s.segment,
            },
            seq: s.seq,
            hash: s.hash,
        })
    }
}

impl RosterChange {
    /// The payload: the roster alone without frontiers (the encoding from before frontiers),
    /// else the roster, [`FRONTIER_MINOR`] and the frontiers.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.roster.encode();
        if !self.frontiers.is_empty() {
            out.push(FRONTIER_MINOR);
            // Invariant: as for `Roster::encode`, serialising into a Vec cannot fail.
            out.extend(postcard::to_stdvec(&self.frontiers).expect("postcard encodes frontiers"));
        }
        out
    }

    /// Decodes and checks a `Roster` payload of either form (bounds in the module docs).
    pub fn decode(bytes: &[u8]) -> Result<RosterChange, PayloadError> {
        let (roster, rest): (Roster, &[u8]) =
            postcard::take_from_bytes(bytes).map_err(PayloadError::Malformed)?;
        let roster = roster.checked()?;
        let Some((&minor, body)) = rest.split_first() else {
            return Ok(RosterChange {
                roster,
                frontiers: Vec::new(),
            });
        };
        if minor == 0 {
            return Err(PayloadError::TrailingBytes { extra: rest.len() });
        }
        let (frontiers, rest): (Vec<Frontier>, &[u8]) =
            postcard::take_from_bytes(body).map_err(PayloadError::Malformed)?;
        if minor <= FRONTIER_MINOR && !rest.is_empty() {
            return Err(PayloadError::TrailingBytes { extra: rest.len() });
        }
        check_frontiers(&roster, &frontiers)?;
        Ok(RosterChange { roster, frontiers })
    }
}

/// The bounds of the module docs.
fn check_frontiers(roster: &Roster, frontiers: &[Frontier]) -> Result<(), PayloadError> {
    if frontiers.is_empty() {
        return Err(PayloadError::BadFrontier {
            why: "an empty frontier list is written as none",
        });
    }
    let total: usize = frontiers.iter().map(|f| f.segments.len()).sum();
    if total > MAX_FRONTIER_SEGMENTS {
        return Err(PayloadError::TooManyFrontierSegments {
            got: total,
            max: MAX_FRONTIER_SEGMENTS,
        });
    }
    if frontiers.windows(2).any(|w| w[0].writer >= w[1].writer) {
        return Err(PayloadError::BadFrontier {
            why: "frontiers must be sorted by writer, each once",
        });
    }
    for f in frontiers {
        if roster.contains(&f.writer) {
            return Err(PayloadError::BadFrontier {
                why: "a frontier names a member the roster keeps",
            });
        }
        if f.segments
            .windows(2)
            .any(|w| (w[0].table, w[0].segment) >= (w[1].table, w[1].segment))
        {
            return Err(PayloadError::BadFrontier {
                why: "frontier segments must be sorted by table and segment, each once",
            });
        }
        if f.segments
            .iter()
            .any(|s| s.seq == 0 || (s.segment > 0 && !is_log(s)))
        {
            return Err(PayloadError::BadFrontier {
                why: "a frontier segment is empty, or a map table's segment is not 0",
            });
        }
    }
    Ok(())
}

fn is_log(s: &FrontierSegment) -> bool {
    s.table.shape() == TableShape::Log
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;

    use super::*;
    use crate::mastered::Member;

    fn member(n: u8) -> Member {
        Member {
            key: SigningKey::from_bytes(&[n; 32]).verifying_key().to_bytes(),
            address: format!("10.0.0.{n}:7000"),
        }
    }

    fn change() -> RosterChange {
        let seg = |table, segment, seq| FrontierSegment {
            table,
            segment,
            seq,
            hash: [seq as u8; 32],
        };
        RosterChange {
            roster: Roster {
                members: vec![member(1), member(2)],
            },
            frontiers: vec![Frontier {
                writer: member(3).key,
                segments: vec![
                    seg(TableId::Events, 0, 7),
                    seg(TableId::Events, 1, 2),
                    seg(TableId::Fingerprints, 0, 1),
                ],
            }],
        }
    }

    #[test]
    fn a_roster_with_frontiers_round_trips_and_one_without_is_the_old_encoding() {
        let c = change();
        assert_eq!(RosterChange::decode(&c.encode()), Ok(c.clone()));
        assert_eq!(Roster::decode(&c.encode()), Ok(c.roster.clone()));
        // An old record: the roster alone, no frontiers.
        let old = c.roster.encode();
        let plain = RosterChange {
            frontiers: Vec::new(),
            ..c.clone()
        };
        assert_eq!(plain.encode(), old);
        assert_eq!(RosterChange::decode(&old), Ok(plain));
        // A newer minor may append fields; this one refuses trailing bytes.
        let mut newer = c.encode();
        newer[c.roster.encode().len()] = FRONTIER_MINOR + 1;
        newer.push(9);
        assert_eq!(
            RosterChange::decode(&newer).map(|d| d.frontiers),
            Ok(c.frontiers.clone())
        );
        let mut trailing = c.encode();
        trailing.push(0);
        assert_eq!(
            RosterChange::decode(&trailing),
            Err(PayloadError::TrailingBytes { extra: 1 })
        );
    }

    #[test]
    fn frontiers_that_break_the_rules_are_refused_naming_the_rule() {
        let refused = |c: RosterChange| RosterChange::decode(&c.encode());
        let mut member_kept = change();
        member_kept.frontiers[0].writer = member(1).key;
        let mut unsorted = change();
        unsorted.frontiers[0].segments.swap(0, 1);
        let mut twice = change();
        twice.frontiers.push(twice.frontiers[0].clone());
        let mut empty = change();
        empty.frontiers[0].segments[0].seq = 0;
        let mut map_segment = change();
        map_segment.frontiers[0].segments[2].segment = 1;
        for bad in [member_kept, unsorted, twice, empty, map_segment] {
            assert!(
                matches!(refused(bad), Err(PayloadError::BadFrontier { .. })),
                "refused"
            );
        }
        let mut huge = change();
        huge.frontiers[0].segments = (0..=MAX_FRONTIER_SEGMENTS as u32)
            .map(|segment| FrontierSegment {
                table: TableId::Events,
                segment,
                seq: 1,
                hash: [0; 32],
            })
            .collect();
        assert!(matches!(
            refused(huge),
            Err(PayloadError::TooManyFrontierSegments { .. })
        ));
        // An explicit empty list is not the encoding of "no frontiers".
        let mut explicit = change().roster.encode();
        explicit.push(FRONTIER_MINOR);
        explicit.push(0);
        assert!(matches!(
            RosterChange::decode(&explicit),
            Err(PayloadError::BadFrontier { .. })
        ));
    }

    #[test]
    fn garbage_after_a_roster_is_refused_without_panicking() {
        let base = change().encode();
        for cut in 0..base.len() {
            let _ = RosterChange::decode(&base[..cut]);
        }
        let mut flipped = base.clone();
        for i in 0..flipped.len() {
            flipped[i] ^= 0xa5;
            let _ = RosterChange::decode(&flipped);
            flipped[i] ^= 0xa5;
        }
        assert!(RosterChange::decode(&base[..base.len() - 1]).is_err());
    }
}
