//! Pure replication logic for meshward: the shared tables, their sync digests, and signed
//! mastered records. No sockets, tasks, clocks or thread-local randomness: time comes in as
//! arguments and every call returns what the caller must persist and send.
//!
//! # Shared tables
//! Three tables are shared by every node: the **event log**, **observed fingerprints** and
//! **user data exceptions**. Every node writes only its own rows and reads everyone's. The
//! rows of one writer in one table live in automerge documents authored solely under an actor
//! id equal to the writer's ed25519 public key:
//!
//! - one document per (table, writer, segment). Log tables (events) seal a segment at
//!   [`ReplicaConfig::seal_rows`] rows and open the next; a sealed segment is held only as
//!   saved bytes (about 35–40 B per event) and never loaded again unless a peer needs part of
//!   it. Map tables (fingerprints, exceptions) have one segment each.
//! - each commit (one per tick, many rows) is one automerge change; rows are single bytes
//!   values, one operation each.
//! - after every commit the writer signs the segment's head ([`SignedHead`]). The head hash
//!   commits to the whole chain of changes, so relayed data is authenticated by one
//!   signature check however many hops it took.
//! - only the roster's writers are accepted ([`Replica::set_writers`]; the node core tells the
//!   replica the verified roster): a head of any other writer is refused with
//!   [`ApplyError::UnknownWriter`] before its data is looked at, and the writers and segments
//!   a replica holds are bounded ([`MAX_WRITERS`], [`MAX_SEGMENTS_PER_WRITER`],
//!   [`MAX_SEGMENTS`]); see [`writers`].
//! - received data is checked completely before it is applied: signature, author of every
//!   change (a change by another actor is refused with [`ApplyError::NotOwner`]), chain
//!   continuity, schema (only appends to a log, only puts and deletes of well-keyed rows in a
//!   map), every row's bounds, and that the result is exactly the signed head.
//!
//! # Sync
//! A [`Digest`] lists (segment, seq, head hash) for every segment held. Because each segment
//! is a single-writer chain, this is an exact version vector, and [`Replica::missing_for`]
//! yields exactly what a peer lacks in one step: a [`SyncItem::Snapshot`] (saved document) for
//! a segment the peer does not have at all, or a [`SyncItem::Changes`] run after the peer's
//! head. We do not use automerge's bloom-filter sync protocol: it needs several round trips,
//! its messages are uncompressed, and it falls back to sending whole documents when more than
//! a third of the changes are missing — all of which the exact digest avoids. Messages are
//! compressed with zstd and decoded under size bounds, the decompressed size also bounded by
//! the input's ([`MAX_RATIO`]).
//!
//! # Mastered records
//! Written by the leader only; see [`mastered`]: signed, versioned, epoch-fenced records, and
//! [`fork`] for which of two chains that both verify a node keeps.

#![deny(missing_docs)]

pub mod bytes;
mod error;
pub mod fork;
mod id;
pub mod mastered;
mod replica;
pub mod rotation;
mod row;
mod segment;
mod sync;
pub mod writers;

pub use error::{ApplyError, CommitError};
pub use id::{ClusterId, SegmentKey, TableId, TableShape, WriterId};
pub use replica::{
    Effects, MAX_OPS_PER_COMMIT, Op, Persist, Replica, ReplicaConfig, RowChange, Stats,
    StoredSegment,
};
pub use row::{
    AUDIT_HEAD_KEY, AuditHead, Event, EventKind, Fingerprint, KeyType, MAX_NAME, MAX_ROW,
    MAX_TARGET, MAX_TEXT, Row, RowError, UserDataException, exception_key, fingerprint_key,
};
pub use sync::{
    Digest, Head, HeadError, MAX_DECODED, MAX_DIGEST, MAX_RATIO, MAX_WIRE, RATIO_FLOOR,
    SegmentState, SignedHead, SyncItem, SyncMessage, WireError, decoded_bound,
};
pub use writers::{MAX_SEGMENTS, MAX_SEGMENTS_PER_WRITER, MAX_WRITERS};

#[cfg(test)]
mod tests;
