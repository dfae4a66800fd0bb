//! Identifiers: writers (node keys), clusters, tables and segments.

use std::fmt;
use std::str::FromStr;

use automerge::ActorId;
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

/// A node's identity as a writer of shared rows: its ed25519 public key.
///
/// The automerge actor id of every change the node authors is exactly these 32 bytes, so the
/// author of any change can be compared with the owner of the rows it touches.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WriterId(pub [u8; 32]);

impl WriterId {
    /// The writer id of a verifying (public) key.
    pub fn from_key(key: &VerifyingKey) -> Self {
        Self(key.to_bytes())
    }

    /// The automerge actor id this writer's changes are authored under.
    pub fn actor(&self) -> ActorId {
        ActorId::from(&self.0[..])
    }

    /// Whether `actor` is this writer's actor id.
    pub fn is_actor(&self, actor: &ActorId) -> bool {
        actor.to_bytes() == self.0
    }

    /// The ed25519 public key, or `None` if the bytes are not a valid point.
    pub fn verifying_key(&self) -> Option<VerifyingKey> {
        VerifyingKey::from_bytes(&self.0).ok()
    }

    /// Full lowercase hex form (64 characters).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for WriterId {
    /// Short form for logs: the first 8 hex digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0[..4]))
    }
}

impl fmt::Debug for WriterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WriterId({self})")
    }
}

impl FromStr for WriterId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = hex::decode(s).map_err(|e| format!("writer id is not hex: {e}"))?;
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| "writer id must be 64 hex digits (an ed25519 public key)".to_string())?;
        Ok(Self(arr))
    }
}

/// The cluster a replica belongs to. Signed heads carry it, so data from another cluster is
/// refused even when the writer's key is the same.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClusterId(pub [u8; 16]);

impl ClusterId {
    /// All 32 hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for ClusterId {
    /// Short form for logs: the first 8 hex digits; [`ClusterId::to_hex`] gives all of them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0[..4]))
    }
}

impl fmt::Debug for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterId({})", self.to_hex())
    }
}

/// The shared tables.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub enum TableId {
    /// The event log: append-only, sealed into segments.
    Events,
    /// Observed host key fingerprints, keyed by (host, key type, fingerprint).
    Fingerprints,
    /// User data exceptions, keyed by (user, field).
    Exceptions,
    /// Credential rotations, keyed by (account address, HLC) ([`crate::rotation`]).
    Rotations,
    /// Each node's audit chain head (count, hash, when), one row per writer, overwritten
    /// (tamper evidence of the local audit across nodes).
    AuditHeads,
}

/// How a table's rows live in its automerge documents.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum TableShape {
    /// A list under the root key `rows`, only ever appended to. Segments seal at a row bound.
    Log,
    /// A map under the root key `rows`; the owner may put and delete its own keys. One segment.
    Map,
}

impl TableId {
    /// Every table, in a fixed order.
    pub const ALL: [TableId; 5] = [
        TableId::Events,
        TableId::Fingerprints,
        TableId::Exceptions,
        TableId::Rotations,
        TableId::AuditHeads,
    ];

    /// The table's name as used on the command line and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            TableId::Events => "events",
            TableId::Fingerprints => "fingerprints",
            TableId::Exceptions => "exceptions",
            TableId::Rotations => "rotations",
            TableId::AuditHeads => "audit-heads",
        }
    }

    /// How the table's rows are stored.
    pub fn shape(self) -> TableShape {
        match self {
            TableId::Events => TableShape::Log,
            TableId::Fingerprints
            | TableId::Exceptions
            | TableId::Rotations
            | TableId::AuditHeads => TableShape::Map,
        }
    }
}

impl fmt::Display for TableId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One automerge document: a writer's rows of one table, segment number `segment`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct SegmentKey {
    /// The table.
    pub table: TableId,
    /// The only node allowed to author changes in this document.
    pub writer: WriterId,
    /// Segment number, from 0. Only log tables ever have more than one.
    pub segment: u32,
}

impl fmt::Display for SegmentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.table, self.writer, self.segment)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_id_round_trips_through_hex() {
        let w = WriterId([7; 32]);
        assert_eq!(w.to_hex().parse::<WriterId>(), Ok(w));
        assert_eq!(w.to_string(), "07070707");
        assert!("abc".parse::<WriterId>().is_err());
        assert!("zz".repeat(32).parse::<WriterId>().is_err());
    }

    #[test]
    fn actor_id_is_the_public_key() {
        let w = WriterId([9; 32]);
        assert!(w.is_actor(&w.actor()));
        assert!(!WriterId([8; 32]).is_actor(&w.actor()));
    }
}
