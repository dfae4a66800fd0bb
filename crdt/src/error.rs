//! Errors of the replica's operations. Every refusal leaves the replica unchanged.

use crate::id::SegmentKey;
use crate::row::RowError;
use crate::sync::HeadError;

/// A local write was refused. Nothing was committed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    /// A row failed validation.
    #[error("invalid row: {0}")]
    Row(#[from] RowError),
    /// A delete named a row this node does not have.
    #[error("no {table} row with key {row_key:?} written by this node")]
    NoSuchRow {
        /// The table.
        table: crate::id::TableId,
        /// The key.
        row_key: String,
    },
    /// More operations than one commit may carry.
    #[error("{got} operations in one commit; the limit is {max}, split the batch")]
    TooMany {
        /// Operations given.
        got: usize,
        /// The limit.
        max: usize,
    },
    /// This node's event log holds [`crate::MAX_SEGMENTS_PER_WRITER`] segments, the most one
    /// writer may have: nothing was committed.
    #[error(
        "this node's event log is full ({max} sealed segments, the most one writer may hold); \
         no more events can be written by it"
    )]
    LogFull {
        /// The bound.
        max: u32,
    },
    /// The segment's document could not be brought up to date to commit on (a change that
    /// had passed its checks failed to apply): nothing was committed to that segment.
    #[error("cannot commit: {0}")]
    Document(#[from] ApplyError),
}

/// Received data was refused. The replica is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// The signed head is for another cluster or its signature does not verify.
    #[error(transparent)]
    Head(#[from] HeadError),
    /// The segment's writer is not one this replica accepts (see [`crate::Replica::set_writers`]):
    /// a made-up identity, a removed member, or a member whose roster record has not arrived
    /// yet. Not the sender's fault by itself: do not penalise it.
    #[error(
        "rows of {key}: its writer is not in the roster known here (yet); they are not stored, \
         and anti-entropy brings them again once the roster admits the writer"
    )]
    UnknownWriter {
        /// The segment.
        key: SegmentKey,
    },
    /// The segment's writer was removed from the roster, and the roster record that removed it
    /// fixed where its rows stop ([`crate::mastered::Frontier`]): this head is not that
    /// frontier (beyond it, beside it, or short of it: only the frontier's own head is taken).
    /// Refused whoever relays it; not the relay's fault by itself (it may have taken the rows
    /// before it learnt of the removal).
    #[error(
        "rows of {key} up to change {seq}: its writer was removed from the roster, and only \
         its rows up to change {frontier} of this segment are taken, whole; they are not \
         stored or forwarded"
    )]
    BeyondFrontier {
        /// The segment.
        key: SegmentKey,
        /// Changes the refused head names.
        seq: u64,
        /// Changes of the segment at the frontier (0: the frontier does not name it).
        frontier: u64,
    },
    /// The segment number is past the bound for its table (a map table has one segment, a
    /// log [`crate::MAX_SEGMENTS_PER_WRITER`]); an honest writer never signs such a head.
    #[error("segment {key} is numbered past the bound of {max} segments of its table per writer")]
    SegmentOutOfRange {
        /// The segment.
        key: SegmentKey,
        /// The bound.
        max: u32,
    },
    /// The replica holds segments of [`crate::MAX_WRITERS`] other writers; a new one is
    /// refused.
    #[error("cannot hold {key}: this replica already holds rows of {max} other writers")]
    TooManyWriters {
        /// The segment.
        key: SegmentKey,
        /// The bound.
        max: usize,
    },
    /// The replica holds [`crate::MAX_SEGMENTS`] segments of other writers; a new one is
    /// refused.
    #[error("cannot hold {key}: this replica already holds {max} segments of other writers")]
    TooManySegments {
        /// The segment.
        key: SegmentKey,
        /// The bound.
        max: usize,
    },
    /// A change is authored by someone other than the segment's writer.
    #[error("change by actor {actor} touches rows of {key}, which only its writer may change")]
    NotOwner {
        /// The segment.
        key: SegmentKey,
        /// Hex actor id of the change's author.
        actor: String,
    },
    /// The changes start after the end of what we hold: some are missing.
    #[error("changes for {key} start at seq {from} but we hold only {have}; run anti-entropy")]
    Gap {
        /// The segment.
        key: SegmentKey,
        /// Changes held.
        have: u64,
        /// First change offered.
        from: u64,
    },
    /// The changes do not continue our chain (a writer that lost its store and rewrote).
    #[error("changes for {key} do not continue our chain at seq {seq}")]
    Fork {
        /// The segment.
        key: SegmentKey,
        /// The seq where they diverge.
        seq: u64,
    },
    /// A change holds an operation the segment schema does not allow.
    #[error("change {seq} of {key} is malformed: {what}")]
    Schema {
        /// The segment.
        key: SegmentKey,
        /// The change's seq (0 when found while reading a snapshot).
        seq: u64,
        /// What was wrong.
        what: &'static str,
    },
    /// A row in the data is invalid.
    #[error("invalid row in {key}: {source}")]
    Row {
        /// The segment.
        key: SegmentKey,
        /// The row error.
        source: RowError,
    },
    /// The data does not match its signed head.
    #[error("data for {key} does not match its signed head: {what}")]
    Mismatch {
        /// The segment.
        key: SegmentKey,
        /// What differed.
        what: &'static str,
    },
    /// automerge could not parse or apply the data.
    #[error("automerge refused data for {key}: {reason}")]
    Automerge {
        /// The segment.
        key: SegmentKey,
        /// automerge's message.
        reason: String,
    },
}

impl ApplyError {
    pub(crate) fn mismatch(key: &SegmentKey, what: &'static str) -> Self {
        ApplyError::Mismatch { key: *key, what }
    }

    pub(crate) fn schema(key: &SegmentKey, seq: u64, what: &'static str) -> Self {
        ApplyError::Schema {
            key: *key,
            seq,
            what,
        }
    }
}
