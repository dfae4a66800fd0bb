//! Signed, versioned mastered records with epoch fencing.
//!
//! Mastered data (the roster of nodes and their keys, revocations, the licence, policies,
//! fingerprint approvals, users and grants, managed config) is written by the leader only and
//! replicated read-only to every node. This module decides, without I/O, whether a record
//! received from anywhere may be applied.
//!
//! # The chain
//!
//! Every mastered write is a [`MasteredRecord`] `(cluster, epoch, version, prev, kind,
//! payload)` signed with ed25519 by the leader of its epoch, giving a [`SignedRecord`].
//! Versions count up by exactly one from 1, across epochs, and `prev` is the [`RecordHash`]
//! of the record before ([`RecordHash::ZERO`] for version 1). So the records of a cluster
//! form one hash chain: a receiver that holds version `v` accepts only version `v + 1` whose
//! `prev` is the hash of its own record `v`. Replays and older versions are refused
//! ([`VerifyError::Rollback`]), gaps are refused ([`VerifyError::VersionGap`]) so the caller
//! fetches what is missing first, and a record that does not extend our chain is refused
//! ([`VerifyError::BrokenChain`]). Version 1 is always a `Genesis` record carrying the first
//! [`Roster`]; no other record may be `Genesis`.
//!
//! # Epochs and fencing
//!
//! Exactly one leader signs per epoch. A [`Chain`] starts from a [`TrustAnchor`] (cluster id
//! and the key of the epoch-1 leader, as carried by a joining bundle) and knows at every point
//! the current epoch and its leader. The current epoch is the high-water mark: a record of a
//! lower epoch comes from a fenced-off leader and is refused ([`VerifyError::StaleEpoch`]); a
//! record of a higher epoch, or one of the current epoch signed by anyone but its leader, is
//! refused ([`VerifyError::UnknownSigner`]). Because the chain is rebuilt by replaying the
//! stored records, persisting the records persists the high-water mark.
//!
//! # Hand-over
//!
//! Leadership moves only through a `Handover` record with a [`Handover`] payload naming
//! `next_epoch = epoch + 1` and a `next_leader` that is in the current roster. The hand-over
//! record itself belongs to the *current* epoch (it is the last record of that epoch) and is
//! accepted when either
//!
//! - it is signed by the current leader (planned hand-over, `ha demote --to`), or
//! - it is signed by `next_leader` and carries [`Endorsement`]s from a strict majority of the
//!   current roster (unplanned failover). Each endorsement signs the [`Candidacy`] tuple
//!   `(cluster, next_epoch, next_leader, prev version, prev hash)`, so it endorses one
//!   candidate at one point of the chain and cannot be reused later. A candidate that wants to
//!   count itself includes its own endorsement.
//!
//! Once the hand-over is applied, the epoch is `next_epoch` and only `next_leader` may sign;
//! records of the old epoch are stale. A minority side of a partition cannot gather a
//! majority, so it cannot start a second leader. A `Roster` record replaces the roster, which
//! is what majorities are counted against.
//!
//! This module does not choose between two forks when partitions heal (DESIGN §6: the higher
//! `(epoch, leader key)` wins and the loser's writes are kept for review); it only refuses the
//! record that does not extend its own chain, and the caller decides.
//!
//! # Encoding
//!
//! A record's *signed bytes* are `b"meshward/mastered/v1\0"` followed by the record encoding,
//! all integers big-endian:
//!
//! | bytes | field |
//! |---|---|
//! | 16 | cluster id |
//! | 8 | epoch |
//! | 8 | version |
//! | 32 | prev (hash of the previous record) |
//! | 1 | kind code (see [`RecordKind::code`]) |
//! | 4 | payload length `n` (at most [`MAX_PAYLOAD_BYTES`]) |
//! | n | payload |
//!
//! The [`RecordHash`] of a signed record is SHA-256 over the signed bytes followed by the 32
//! signer bytes and the 64 signature bytes. `verify_strict` rejects malleable signatures, so a
//! record has exactly one hash. On the wire ([`SignedRecord::encode`]) a record is one format
//! byte ([`WIRE_FORMAT`]), the record encoding, the signer and the signature; decoding
//! requires the exact length, so every accepted byte string decodes to one record and back.
//! Endorsements sign `b"meshward/endorsement/v1\0"` followed by the candidacy tuple (see
//! [`Candidacy::signing_bytes`]). The `Roster` and `Handover` payloads are postcard-encoded
//! and bounded ([`MAX_ROSTER_MEMBERS`], [`MAX_ADDRESS_BYTES`]); other kinds' payloads are
//! opaque here.
//!
//! # Use
//!
//! ```
//! use ed25519_dalek::SigningKey;
//! use meshward_crdt::mastered::{Chain, ClusterId, Member, RecordKind, Roster, TrustAnchor};
//!
//! let leader = SigningKey::from_bytes(&[1; 32]);
//! let cluster = ClusterId([7; 16]);
//! let mut chain = Chain::new(TrustAnchor {
//!     cluster,
//!     genesis_leader: leader.verifying_key().to_bytes(),
//! });
//! let roster = Roster {
//!     members: vec![Member {
//!         key: leader.verifying_key().to_bytes(),
//!         address: "pam1.example".into(),
//!     }],
//! };
//! // Leader side: build the next record. Receiver side: verify, persist, apply.
//! let genesis = chain.sign_next(&leader, RecordKind::Genesis, roster.encode());
//! let verified = chain.verify(&genesis).expect("the leader signed the next version");
//! chain.apply(verified).expect("verified against this very state");
//! assert_eq!(chain.last_version(), 1);
//! ```
//!
//! [`Chain::verify`] is pure and returns a [`Verified`] record, which only this module can
//! build; [`Chain::apply`] takes only that type, so nothing unverified can advance a chain.

use std::collections::BTreeSet;
use std::fmt;
use std::ops::Deref;
use std::str::FromStr;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

pub use crate::id::ClusterId;

/// Domain-separation prefix of the bytes a leader signs for a record.
pub const RECORD_DOMAIN: &[u8] = b"meshward/mastered/v1\0";

/// Domain-separation prefix of the bytes a follower signs when endorsing a failover candidate.
pub const ENDORSEMENT_DOMAIN: &[u8] = b"meshward/endorsement/v1\0";

/// Largest payload a record may carry: 1 MiB. Bigger mastered data (e.g. a large user table)
/// must be split into several records. Checked before any signature or payload work.
pub const MAX_PAYLOAD_BYTES: usize = 1 << 20;

/// Format byte that starts every encoded [`SignedRecord`].
pub const WIRE_FORMAT: u8 = 1;

/// Largest encoded [`SignedRecord`]: format byte, header, largest payload, signer, signature.
pub const MAX_ENCODED_BYTES: usize = 1 + HEADER_BYTES + MAX_PAYLOAD_BYTES + 32 + 64;

/// Most members a [`Roster`] may list (and so most endorsements a [`Handover`] may carry).
pub const MAX_ROSTER_MEMBERS: usize = 1024;

/// Longest member address in bytes: the longest DNS name (253) with room for a short suffix.
pub const MAX_ADDRESS_BYTES: usize = 255;

/// Bytes of the fixed record header: cluster, epoch, version, prev, kind, payload length.
const HEADER_BYTES: usize = 16 + 8 + 8 + 32 + 1 + 4;

/// Smallest encoded [`SignedRecord`]: an empty payload.
const MIN_ENCODED_BYTES: usize = 1 + HEADER_BYTES + 32 + 64;

/// SHA-256 of a signed record (see the module docs for exactly which bytes).
///
/// Displays as the first 8 hex digits; `Debug` and [`RecordHash::to_hex`] show all 64.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RecordHash(pub [u8; 32]);

/// What a mastered record is about.
///
/// The serde names and [`RecordKind::as_str`] are the same stable kebab-case strings, and
/// [`RecordKind::code`] is the stable wire byte; none of them may change once shipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecordKind {
    /// First record of a cluster (version 1); payload is the first [`Roster`].
    Genesis,
    /// Replaces the roster; payload is a [`Roster`].
    Roster,
    /// Revoked keys or certificates (opaque payload here).
    Revocation,
    /// The cluster licence (opaque payload here).
    Licence,
    /// Local-password policy (opaque payload here).
    PasswordPolicy,
    /// Approved host fingerprints (opaque payload here).
    FingerprintApproval,
    /// An admin user (opaque payload here).
    User,
    /// A grant given to a user (opaque payload here).
    Grant,
    /// Managed configuration (opaque payload here).
    Config,
    /// Moves leadership to the next epoch; payload is a [`Handover`].
    Handover,
    /// A local user's new password hash, set by the leader under its password policy
    /// (opaque payload here).
    Password,
    /// A named cluster secret sealed under a key derived from the MEK, with its public part
    /// (e.g. the cluster CA's certificate and sealed private key); opaque payload here.
    SealedSecret,
}

/// A mastered record before signing.
#[derive(Clone, PartialEq, Eq)]
pub struct MasteredRecord {
    /// Cluster the record belongs to.
    pub cluster: ClusterId,
    /// Leader epoch the record was written in.
    pub epoch: u64,
    /// Position in the chain, counting from 1 without gaps across epochs.
    pub version: u64,
    /// Hash of the record at `version - 1`, or [`RecordHash::ZERO`] for version 1.
    pub prev: RecordHash,
    /// What the record is about.
    pub kind: RecordKind,
    /// Kind-specific bytes, at most [`MAX_PAYLOAD_BYTES`].
    pub payload: Vec<u8>,
}

/// A mastered record with the signer's ed25519 public key and signature.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedRecord {
    /// The signed record.
    pub record: MasteredRecord,
    /// ed25519 public key of the signer.
    pub signer: [u8; 32],
    /// ed25519 signature over [`MasteredRecord::signing_bytes`].
    pub signature: [u8; 64],
}

/// A value that passed verification; only this module can build one.
///
/// Derefs to the value. [`Chain::apply`] accepts nothing else, so an unverified record can
/// never advance a chain.
#[derive(Debug)]
pub struct Verified<T> {
    value: T,
    proof: Proof,
}

/// A member of the cluster: its node key and address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// ed25519 public key of the node.
    pub key: [u8; 32],
    /// Address of the node (FQDN or IP, optionally with a port), at most
    /// [`MAX_ADDRESS_BYTES`] bytes.
    pub address: String,
}

/// Payload of `Genesis` and `Roster` records: every member of the cluster.
///
/// Valid rosters are non-empty, list at most [`MAX_ROSTER_MEMBERS`] members with distinct
/// keys that are canonically encoded ed25519 points of large order, and have addresses of at
/// most [`MAX_ADDRESS_BYTES`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Roster {
    /// The members, in the order the leader wrote them.
    pub members: Vec<Member>,
}

/// Payload of a `Handover` record: who leads the next epoch, and on whose word.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handover {
    /// The epoch that starts with this hand-over; must be the current epoch + 1.
    pub next_epoch: u64,
    /// ed25519 public key of the next leader; must be a roster member.
    pub next_leader: [u8; 32],
    /// Endorsements of the candidacy; empty for a planned hand-over, a strict majority of the
    /// roster for a failover.
    pub endorsements: Vec<Endorsement>,
    /// A forced failover (`ha failover --force`): the break-glass for a two-node pair whose
    /// other node is gone, accepted only when the roster has exactly two members and carrying
    /// only the candidate's own endorsement. When the pair meets again, this higher epoch
    /// wins and the other side's later records become superseded.
    pub forced: bool,
}

/// A roster member's signature supporting a [`Candidacy`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endorsement {
    /// ed25519 public key of the endorsing member.
    pub endorser: [u8; 32],
    /// ed25519 signature over [`Candidacy::signing_bytes`].
    #[serde(with = "sig_bytes")]
    pub signature: [u8; 64],
}

/// What an endorsement supports: one candidate, for one epoch, at one point of the chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidacy {
    /// Cluster of the chain.
    pub cluster: ClusterId,
    /// Epoch the candidate would lead.
    pub next_epoch: u64,
    /// ed25519 public key of the candidate.
    pub next_leader: [u8; 32],
    /// Version of the last record the endorser holds (the hand-over's version - 1).
    pub prev_version: u64,
    /// Hash of that record (the hand-over's `prev`).
    pub prev_hash: RecordHash,
}

/// Where verification starts: what a joining node trusts before it has any record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrustAnchor {
    /// The cluster being joined.
    pub cluster: ClusterId,
    /// ed25519 public key of the epoch-1 leader, which signs the genesis record.
    pub genesis_leader: [u8; 32],
}

/// Verification state of one cluster's mastered chain.
///
/// Holds the cluster id, the current epoch (the high-water mark) and its leader, the last
/// applied version and hash, and the current roster. Pure: no I/O, clock or randomness.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    cluster: ClusterId,
    epoch: u64,
    leader: [u8; 32],
    last_version: u64,
    last_hash: RecordHash,
    roster: Roster,
}

/// Why [`Chain::verify`] refused a record. Verification never changes the chain.
///
/// Checks run in the order of the variants below, with two exceptions: a hand-over signed by
/// someone other than the leader is refused as `UnknownSigner` only after its payload parsed
/// (it may be signed by its candidate), and endorsement membership is checked before the
/// majority count, endorsement signatures after.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum VerifyError {
    /// The payload is longer than [`MAX_PAYLOAD_BYTES`]; checked before anything else, so no
    /// signature or parsing work is spent on it. Chain state is unchanged.
    #[error(
        "mastered record payload is {len} bytes, over the {max}-byte limit; \
         drop it, and split the change into smaller records on the leader"
    )]
    Oversize {
        /// Payload length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The record names another cluster. Chain state is unchanged.
    #[error(
        "mastered record is for cluster {got} but this chain is cluster {expected}; \
         drop it and check which cluster the sending peer belongs to"
    )]
    WrongCluster {
        /// Our cluster.
        expected: ClusterId,
        /// The record's cluster.
        got: ClusterId,
    },
    /// The signature does not verify (`verify_strict`) under the record's signer key, or the
    /// signer bytes are not a valid key. Chain state is unchanged.
    #[error(
        "mastered record signature does not verify; drop the record and check the peer that \
         sent it"
    )]
    BadSignature,
    /// The record's epoch is below the high-water epoch: its leader has been fenced off by a
    /// hand-over. Chain state is unchanged.
    #[error(
        "mastered record is from epoch {got}, below the current epoch {high_water}; its leader \
         was replaced, so drop it (the sender must catch up with the new leader)"
    )]
    StaleEpoch {
        /// The record's epoch.
        got: u64,
        /// Our current (highest) epoch.
        high_water: u64,
    },
    /// The signature is valid but the signer is not the leader of the record's epoch: either
    /// the record is of a later epoch whose hand-over we have not applied, or it is signed by
    /// someone other than the current leader. Chain state is unchanged.
    #[error(
        "mastered record for epoch {epoch} is signed by {}, which is not that epoch's leader; \
         fetch and apply the epoch's hand-over record first, or drop the record",
        hex_prefix(.signer)
    )]
    UnknownSigner {
        /// The record's epoch.
        epoch: u64,
        /// The record's signer.
        signer: [u8; 32],
    },
    /// The version is not above our last applied version. This includes exact replays of
    /// records already applied (gossip delivers those routinely); comparing with the stored
    /// record at that version tells a replay from a fork. Chain state is unchanged.
    #[error(
        "mastered record version {got} is not newer than the applied version {have}; drop it \
         (compare with the stored record at that version to tell a replay from a fork)"
    )]
    Rollback {
        /// The record's version.
        got: u64,
        /// Our last applied version.
        have: u64,
    },
    /// The version skips ahead: records in between are missing. Chain state is unchanged.
    #[error(
        "mastered record version {got} skips ahead of the expected version {expected}; fetch \
         the missing records from a peer first"
    )]
    VersionGap {
        /// The version we can accept next.
        expected: u64,
        /// The record's version.
        got: u64,
    },
    /// The record's `prev` is not the hash of our last record: it extends another history
    /// (a fork). Chain state is unchanged.
    #[error(
        "mastered record version {version} does not extend this chain (prev {got}, ours \
         {expected}); it belongs to a fork: fetch the chain from the leader and review"
    )]
    BrokenChain {
        /// The record's version.
        version: u64,
        /// Hash of our last record.
        expected: RecordHash,
        /// The record's `prev`.
        got: RecordHash,
    },
    /// Version 1 is not a `Genesis` record, or a later record is. Chain state is unchanged.
    #[error(
        "mastered record version {version} of kind {kind} is out of place: a chain starts with \
         exactly one genesis record; drop it, or rebuild from the cluster's genesis record"
    )]
    MisplacedGenesis {
        /// The record's version.
        version: u64,
        /// The record's kind.
        kind: RecordKind,
    },
    /// The payload of a `Genesis`, `Roster` or `Handover` record does not parse or breaks a
    /// bound. Chain state is unchanged.
    #[error(
        "payload of a {kind} mastered record is invalid; drop the record and check the \
         leader's software version"
    )]
    BadPayload {
        /// The record's kind.
        kind: RecordKind,
        /// What is wrong with it.
        #[source]
        source: PayloadError,
    },
    /// A hand-over names an epoch other than the current epoch + 1. Chain state is unchanged.
    #[error(
        "hand-over names epoch {got}, but only epoch {current} + 1 may follow the current \
         epoch {current}; drop it"
    )]
    WrongNextEpoch {
        /// The epoch the hand-over names.
        got: u64,
        /// Our current epoch.
        current: u64,
    },
    /// A hand-over names a next leader that is not in the current roster. Chain state is
    /// unchanged.
    #[error(
        "hand-over names leader {}, which is not in the roster; add the node to the roster \
         before handing over to it",
        hex_prefix(.next_leader)
    )]
    NextLeaderNotMember {
        /// The named next leader.
        next_leader: [u8; 32],
    },
    /// A failover hand-over (signed by the candidate, not the current leader) carries
    /// endorsements from fewer than a strict majority of the roster. Chain state is
    /// unchanged.
    #[error(
        "failover hand-over is endorsed by {got} roster members but needs {need}, a strict \
         majority; collect more endorsements, or hand over from the current leader"
    )]
    NoMajority {
        /// Distinct roster members endorsing.
        got: usize,
        /// Strict majority of the roster.
        need: usize,
    },
    /// An endorsement in a hand-over is from a non-member, repeats a member, or its signature
    /// does not verify over this chain's candidacy tuple. Chain state is unchanged.
    #[error(
        "hand-over endorsement by {} is invalid ({reason}); drop the hand-over and collect the \
         endorsements again at the current chain position",
        hex_prefix(.endorser)
    )]
    BadEndorsement {
        /// The endorsement's endorser key.
        endorser: [u8; 32],
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Why a `Roster` or `Handover` payload is invalid.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PayloadError {
    /// The bytes are not a postcard encoding of the payload type.
    #[error("payload does not decode; it was written by incompatible software")]
    Malformed(#[source] postcard::Error),
    /// Bytes follow the encoded payload.
    #[error("{extra} bytes follow the payload; it was written by incompatible software")]
    TrailingBytes {
        /// How many bytes follow.
        extra: usize,
    },
    /// The roster lists no member.
    #[error("roster is empty; a cluster has at least one member")]
    EmptyRoster,
    /// The roster lists more than [`MAX_ROSTER_MEMBERS`] members.
    #[error("roster lists {got} members, over the limit of {max}; remove members")]
    TooManyMembers {
        /// Members listed.
        got: usize,
        /// The limit.
        max: usize,
    },
    /// A member address is longer than [`MAX_ADDRESS_BYTES`].
    #[error("address of roster member {index} is {len} bytes, over the limit of {max}")]
    AddressTooLong {
        /// Position of the member.
        index: usize,
        /// Address length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Two members have the same key.
    #[error("roster lists key {} twice; each node appears once", hex_prefix(.key))]
    DuplicateMember {
        /// The repeated key.
        key: [u8; 32],
    },
    /// A member key is not a canonically encoded ed25519 public key of large order.
    #[error("roster member {index} has an invalid ed25519 key; re-add the node")]
    InvalidMemberKey {
        /// Position of the member.
        index: usize,
    },
    /// A hand-over carries more than [`MAX_ROSTER_MEMBERS`] endorsements.
    #[error("hand-over carries {got} endorsements, over the limit of {max}")]
    TooManyEndorsements {
        /// Endorsements carried.
        got: usize,
        /// The limit.
        max: usize,
    },
}

/// Why [`SignedRecord::decode`] refused bytes.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// More bytes than [`MAX_ENCODED_BYTES`]; checked before reading anything.
    #[error("encoded mastered record is {len} bytes, over the {max}-byte limit; drop it")]
    TooLarge {
        /// Bytes given.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes end before the record does.
    #[error("encoded mastered record is truncated; fetch it again")]
    Truncated,
    /// The first byte is not [`WIRE_FORMAT`].
    #[error(
        "encoded mastered record has format {got}, this node reads format 1; upgrade the node \
         or drop the record"
    )]
    UnknownFormat {
        /// The format byte.
        got: u8,
    },
    /// The kind byte names no [`RecordKind`].
    #[error(
        "encoded mastered record has unknown kind code {code}; upgrade the node or drop the \
         record"
    )]
    UnknownKind {
        /// The kind byte.
        code: u8,
    },
    /// The payload length is over [`MAX_PAYLOAD_BYTES`].
    #[error("encoded mastered record claims a {len}-byte payload, over the {max}-byte limit")]
    PayloadTooLarge {
        /// Claimed payload length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The byte count does not match the payload length the header claims.
    #[error("encoded mastered record is {got} bytes but its header says {expected}; drop it")]
    LengthMismatch {
        /// Length implied by the header.
        expected: usize,
        /// Bytes given.
        got: usize,
    },
}

/// [`Chain::apply`] was given a record verified against another chain state (another record
/// was applied since, or it was verified by another chain). Chain state is unchanged; the
/// record is handed back to be verified again.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error(
    "mastered record version {} was verified against another chain state; verify it again \
     against the current chain",
    .record.record.version
)]
pub struct ApplyError {
    /// The record, no longer marked verified.
    pub record: Box<SignedRecord>,
}

/// [`Chain::rebuild`] met a stored record that does not verify. Nothing is returned.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error(
    "stored mastered record at position {index} does not verify; the store is damaged or was \
     altered: restore it from a backup or join the cluster again"
)]
pub struct RebuildError {
    /// Position of the record in the list given to [`Chain::rebuild`].
    pub index: usize,
    /// Why it was refused.
    #[source]
    pub source: VerifyError,
}

/// A [`RecordKind`] name that [`RecordKind::from_str`] does not know.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error(
    "unknown mastered record kind {0:?}; expected one of genesis, roster, revocation, licence, \
     password-policy, fingerprint-approval, user, grant, config, handover"
)]
pub struct UnknownRecordKind(pub String);

impl RecordHash {
    /// The `prev` of the first record (version 1).
    pub const ZERO: RecordHash = RecordHash([0; 32]);

    /// All 64 hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for RecordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0[..4]))
    }
}

impl fmt::Debug for RecordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecordHash({})", self.to_hex())
    }
}

impl RecordKind {
    /// Every kind, in wire-code order.
    pub const ALL: [RecordKind; 12] = [
        RecordKind::Genesis,
        RecordKind::Roster,
        RecordKind::Revocation,
        RecordKind::Licence,
        RecordKind::PasswordPolicy,
        RecordKind::FingerprintApproval,
        RecordKind::User,
        RecordKind::Grant,
        RecordKind::Config,
        RecordKind::Handover,
        RecordKind::Password,
        RecordKind::SealedSecret,
    ];

    /// Stable name, as in serde and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Genesis => "genesis",
            RecordKind::Roster => "roster",
            RecordKind::Revocation => "revocation",
            RecordKind::Licence => "licence",
            RecordKind::PasswordPolicy => "password-policy",
            RecordKind::FingerprintApproval => "fingerprint-approval",
            RecordKind::User => "user",
            RecordKind::Grant => "grant",
            RecordKind::Config => "config",
            RecordKind::Handover => "handover",
            RecordKind::Password => "password",
            RecordKind::SealedSecret => "sealed-secret",
        }
    }

    /// Stable wire byte: the position in [`RecordKind::ALL`] (`Genesis` = 0 … `Password` = 10,
    /// `SealedSecret` = 11).
    pub fn code(self) -> u8 {
        match self {
            RecordKind::Genesis => 0,
            RecordKind::Roster => 1,
            RecordKind::Revocation => 2,
            RecordKind::Licence => 3,
            RecordKind::PasswordPolicy => 4,
            RecordKind::FingerprintApproval => 5,
            RecordKind::User => 6,
            RecordKind::Grant => 7,
            RecordKind::Config => 8,
            RecordKind::Handover => 9,
            RecordKind::Password => 10,
            RecordKind::SealedSecret => 11,
        }
    }

    /// The kind with this wire byte, if any.
    pub fn from_code(code: u8) -> Option<RecordKind> {
        RecordKind::ALL.get(usize::from(code)).copied()
    }
}

impl fmt::Display for RecordKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RecordKind {
    type Err = UnknownRecordKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RecordKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| UnknownRecordKind(s.to_owned()))
    }
}

impl MasteredRecord {
    /// The bytes the signer signs: [`RECORD_DOMAIN`] then the record encoding (module docs).
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(RECORD_DOMAIN.len() + HEADER_BYTES + self.payload.len());
        out.extend_from_slice(RECORD_DOMAIN);
        out.extend_from_slice(&self.header());
        out.extend_from_slice(&self.payload);
        out
    }

    /// Signs the record with `key`. Does not check that `key` may sign it; verify the result
    /// with [`Chain::verify`] before announcing it.
    pub fn sign(self, key: &SigningKey) -> SignedRecord {
        let signature = key.sign(&self.signing_bytes()).to_bytes();
        SignedRecord {
            record: self,
            signer: key.verifying_key().to_bytes(),
            signature,
        }
    }

    /// Fixed-size header: cluster, epoch, version, prev, kind code, payload length.
    ///
    /// A payload longer than `u32::MAX` is written as `u32::MAX`; such a record is refused as
    /// oversize before its signature is checked.
    fn header(&self) -> [u8; HEADER_BYTES] {
        let mut out = [0; HEADER_BYTES];
        let len = u32::try_from(self.payload.len()).unwrap_or(u32::MAX);
        let mut at = 0;
        for part in [
            &self.cluster.0[..],
            &self.epoch.to_be_bytes(),
            &self.version.to_be_bytes(),
            &self.prev.0,
            &[self.kind.code()],
            &len.to_be_bytes(),
        ] {
            out[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        out
    }
}

impl fmt::Debug for MasteredRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasteredRecord")
            .field("cluster", &self.cluster)
            .field("epoch", &self.epoch)
            .field("version", &self.version)
            .field("prev", &self.prev)
            .field("kind", &self.kind)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

impl SignedRecord {
    /// The record's [`RecordHash`]: SHA-256 of the signed bytes, signer and signature.
    pub fn hash(&self) -> RecordHash {
        let mut hasher = Sha256::new();
        hasher.update(RECORD_DOMAIN);
        hasher.update(self.record.header());
        hasher.update(&self.record.payload);
        hasher.update(self.signer);
        hasher.update(self.signature);
        RecordHash(hasher.finalize().into())
    }

    /// Wire encoding: [`WIRE_FORMAT`], the record encoding, the signer and the signature.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MIN_ENCODED_BYTES + self.record.payload.len());
        out.push(WIRE_FORMAT);
        out.extend_from_slice(&self.record.header());
        out.extend_from_slice(&self.record.payload);
        out.extend_from_slice(&self.signer);
        out.extend_from_slice(&self.signature);
        out
    }

    /// Decodes [`SignedRecord::encode`] output. Bounded by [`MAX_ENCODED_BYTES`]; any other
    /// input is an error, never a panic. Only decodes: verify with [`Chain::verify`].
    pub fn decode(bytes: &[u8]) -> Result<SignedRecord, DecodeError> {
        if bytes.len() > MAX_ENCODED_BYTES {
            return Err(DecodeError::TooLarge {
                len: bytes.len(),
                max: MAX_ENCODED_BYTES,
            });
        }
        let mut reader = Reader(bytes);
        let [format] = reader.array()?;
        if format != WIRE_FORMAT {
            return Err(DecodeError::UnknownFormat { got: format });
        }
        let cluster = ClusterId(reader.array()?);
        let epoch = u64::from_be_bytes(reader.array()?);
        let version = u64::from_be_bytes(reader.array()?);
        let prev = RecordHash(reader.array()?);
        let [code] = reader.array()?;
        let kind = RecordKind::from_code(code).ok_or(DecodeError::UnknownKind { code })?;
        let len = usize::try_from(u32::from_be_bytes(reader.array()?)).unwrap_or(usize::MAX);
        if len > MAX_PAYLOAD_BYTES {
            return Err(DecodeError::PayloadTooLarge {
                len,
                max: MAX_PAYLOAD_BYTES,
            });
        }
        let expected = MIN_ENCODED_BYTES + len;
        if bytes.len() != expected {
            return Err(DecodeError::LengthMismatch {
                expected,
                got: bytes.len(),
            });
        }
        let payload = reader.take(len)?.to_vec();
        let signer = reader.array()?;
        let signature = reader.array()?;
        Ok(SignedRecord {
            record: MasteredRecord {
                cluster,
                epoch,
                version,
                prev,
                kind,
                payload,
            },
            signer,
            signature,
        })
    }
}

impl fmt::Debug for SignedRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedRecord")
            .field("record", &self.record)
            .field("signer", &hex_prefix(&self.signer))
            .finish_non_exhaustive()
    }
}

impl<T> Verified<T> {
    /// Gives up the verified mark and returns the value.
    pub fn into_inner(self) -> T {
        self.value
    }
}

impl Verified<SignedRecord> {
    /// Hash of the verified record (what the next record's `prev` must be).
    pub fn hash(&self) -> RecordHash {
        self.proof.hash
    }
}

impl<T> Deref for Verified<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

impl Roster {
    /// Postcard encoding, for a `Genesis` or `Roster` payload.
    pub fn encode(&self) -> Vec<u8> {
        // Invariant: postcard serialising strings, byte arrays and vectors into a Vec cannot
        // fail (it fails only for unsized sequences or a full fixed buffer).
        postcard::to_stdvec(self).expect("postcard encodes a roster into a Vec")
    }

    /// Decodes and checks a roster payload (bounds in the type docs).
    pub fn decode(bytes: &[u8]) -> Result<Roster, PayloadError> {
        let roster: Roster = decode_exact(bytes)?;
        if roster.members.is_empty() {
            return Err(PayloadError::EmptyRoster);
        }
        if roster.members.len() > MAX_ROSTER_MEMBERS {
            return Err(PayloadError::TooManyMembers {
                got: roster.members.len(),
                max: MAX_ROSTER_MEMBERS,
            });
        }
        let mut keys = BTreeSet::new();
        for (index, member) in roster.members.iter().enumerate() {
            if member.address.len() > MAX_ADDRESS_BYTES {
                return Err(PayloadError::AddressTooLong {
                    index,
                    len: member.address.len(),
                    max: MAX_ADDRESS_BYTES,
                });
            }
            if !keys.insert(member.key) {
                return Err(PayloadError::DuplicateMember { key: member.key });
            }
            if !is_usable_key(&member.key) {
                return Err(PayloadError::InvalidMemberKey { index });
            }
        }
        Ok(roster)
    }

    /// Whether `key` is a member.
    pub fn contains(&self, key: &[u8; 32]) -> bool {
        self.members.iter().any(|member| &member.key == key)
    }

    /// Endorsements a failover needs: a strict majority, `members / 2 + 1`.
    pub fn majority(&self) -> usize {
        self.members.len() / 2 + 1
    }
}

impl Handover {
    /// Postcard encoding, for a `Handover` payload.
    pub fn encode(&self) -> Vec<u8> {
        // Invariant: as for `Roster::encode`, serialising into a Vec cannot fail.
        postcard::to_stdvec(self).expect("postcard encodes a hand-over into a Vec")
    }

    /// Decodes a hand-over payload and checks the endorsement bound.
    pub fn decode(bytes: &[u8]) -> Result<Handover, PayloadError> {
        let handover: Handover = decode_exact(bytes)?;
        if handover.endorsements.len() > MAX_ROSTER_MEMBERS {
            return Err(PayloadError::TooManyEndorsements {
                got: handover.endorsements.len(),
                max: MAX_ROSTER_MEMBERS,
            });
        }
        Ok(handover)
    }
}

impl Endorsement {
    /// Endorses `candidacy` with a member's key.
    pub fn sign(key: &SigningKey, candidacy: &Candidacy) -> Endorsement {
        Endorsement {
            endorser: key.verifying_key().to_bytes(),
            signature: key.sign(&candidacy.signing_bytes()).to_bytes(),
        }
    }

    /// Whether the signature verifies (`verify_strict`) over `candidacy` under the endorser.
    pub fn verify(&self, candidacy: &Candidacy) -> bool {
        VerifyingKey::from_bytes(&self.endorser).is_ok_and(|key| {
            key.verify_strict(
                &candidacy.signing_bytes(),
                &Signature::from_bytes(&self.signature),
            )
            .is_ok()
        })
    }
}

impl fmt::Debug for Endorsement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endorsement")
            .field("endorser", &hex_prefix(&self.endorser))
            .finish_non_exhaustive()
    }
}

impl Candidacy {
    /// [`ENDORSEMENT_DOMAIN`], cluster (16), next epoch (8, big-endian), next leader (32),
    /// prev version (8, big-endian), prev hash (32).
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(ENDORSEMENT_DOMAIN.len() + 16 + 8 + 32 + 8 + 32);
        out.extend_from_slice(ENDORSEMENT_DOMAIN);
        out.extend_from_slice(&self.cluster.0);
        out.extend_from_slice(&self.next_epoch.to_be_bytes());
        out.extend_from_slice(&self.next_leader);
        out.extend_from_slice(&self.prev_version.to_be_bytes());
        out.extend_from_slice(&self.prev_hash.0);
        out
    }
}

impl Chain {
    /// An empty chain that trusts `anchor`: epoch 1, led by the genesis leader, no record yet.
    /// The first record it accepts is the genesis record signed by that leader.
    pub fn new(anchor: TrustAnchor) -> Chain {
        Chain {
            cluster: anchor.cluster,
            epoch: 1,
            leader: anchor.genesis_leader,
            last_version: 0,
            last_hash: RecordHash::ZERO,
            roster: Roster::default(),
        }
    }

    /// Replays stored records, in version order from genesis, onto a chain that trusts
    /// `anchor`. Fails at the first record that does not verify.
    pub fn rebuild<'a>(
        anchor: TrustAnchor,
        records: impl IntoIterator<Item = &'a SignedRecord>,
    ) -> Result<Chain, RebuildError> {
        Ok(Chain::replay(anchor, records)?.0)
    }

    /// [`Chain::rebuild`] that also returns every record verified, in order, for the views
    /// folded from them (users, revocations).
    pub fn replay<'a>(
        anchor: TrustAnchor,
        records: impl IntoIterator<Item = &'a SignedRecord>,
    ) -> Result<(Chain, Vec<Verified<SignedRecord>>), RebuildError> {
        let mut chain = Chain::new(anchor);
        let mut verified = Vec::new();
        for (index, record) in records.into_iter().enumerate() {
            let record = chain
                .verify(record)
                .map_err(|source| RebuildError { index, source })?;
            chain.advance(&record.proof);
            verified.push(record);
        }
        Ok((chain, verified))
    }

    /// The cluster this chain belongs to.
    pub fn cluster(&self) -> ClusterId {
        self.cluster
    }

    /// The current epoch: the high-water mark below which records are stale. The epoch the
    /// next record must carry.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// ed25519 public key of the current epoch's leader.
    pub fn leader(&self) -> [u8; 32] {
        self.leader
    }

    /// Version of the last applied record; 0 before genesis.
    pub fn last_version(&self) -> u64 {
        self.last_version
    }

    /// Hash of the last applied record; [`RecordHash::ZERO`] before genesis.
    pub fn last_hash(&self) -> RecordHash {
        self.last_hash
    }

    /// The current roster; empty before genesis.
    pub fn roster(&self) -> &Roster {
        &self.roster
    }

    /// Checks whether `signed` may be applied next; see the module docs for the rules and
    /// [`VerifyError`] for the order of checks. Pure: the chain does not change.
    pub fn verify(&self, signed: &SignedRecord) -> Result<Verified<SignedRecord>, VerifyError> {
        let record = &signed.record;
        if record.payload.len() > MAX_PAYLOAD_BYTES {
            return Err(VerifyError::Oversize {
                len: record.payload.len(),
                max: MAX_PAYLOAD_BYTES,
            });
        }
        if record.cluster != self.cluster {
            return Err(VerifyError::WrongCluster {
                expected: self.cluster,
                got: record.cluster,
            });
        }
        let key =
            VerifyingKey::from_bytes(&signed.signer).map_err(|_| VerifyError::BadSignature)?;
        key.verify_strict(
            &record.signing_bytes(),
            &Signature::from_bytes(&signed.signature),
        )
        .map_err(|_| VerifyError::BadSignature)?;
        if record.epoch < self.epoch {
            return Err(VerifyError::StaleEpoch {
                got: record.epoch,
                high_water: self.epoch,
            });
        }
        // A hand-over may be signed by its candidate instead; `check_handover` decides.
        if record.epoch > self.epoch
            || (signed.signer != self.leader && record.kind != RecordKind::Handover)
        {
            return Err(VerifyError::UnknownSigner {
                epoch: record.epoch,
                signer: signed.signer,
            });
        }
        if record.version <= self.last_version {
            return Err(VerifyError::Rollback {
                got: record.version,
                have: self.last_version,
            });
        }
        // Cannot overflow: `last_version < record.version <= u64::MAX`.
        let expected = self.last_version + 1;
        if record.version > expected {
            return Err(VerifyError::VersionGap {
                expected,
                got: record.version,
            });
        }
        if record.prev != self.last_hash {
            return Err(VerifyError::BrokenChain {
                version: record.version,
                expected: self.last_hash,
                got: record.prev,
            });
        }
        if (record.version == 1) != (record.kind == RecordKind::Genesis) {
            return Err(VerifyError::MisplacedGenesis {
                version: record.version,
                kind: record.kind,
            });
        }
        let bad_payload = |source| VerifyError::BadPayload {
            kind: record.kind,
            source,
        };
        let effect = match record.kind {
            RecordKind::Genesis | RecordKind::Roster => {
                Effect::Roster(Roster::decode(&record.payload).map_err(bad_payload)?)
            }
            RecordKind::Handover => {
                let handover = Handover::decode(&record.payload).map_err(bad_payload)?;
                self.check_handover(signed.signer, &handover)?;
                Effect::Handover {
                    epoch: handover.next_epoch,
                    leader: handover.next_leader,
                }
            }
            _ => Effect::None,
        };
        Ok(Verified {
            value: signed.clone(),
            proof: Proof {
                base: self.base(),
                hash: signed.hash(),
                effect,
            },
        })
    }

    /// Advances the chain by a record verified against its current state: the record becomes
    /// the last one, a roster replaces the roster, a hand-over starts the next epoch.
    ///
    /// Persist the record before calling this if it must survive a restart ([`Chain::rebuild`]
    /// replays the stored records). Fails, changing nothing, if the chain moved since the
    /// record was verified or the record was verified by another chain.
    pub fn apply(&mut self, verified: Verified<SignedRecord>) -> Result<(), ApplyError> {
        if verified.proof.base != self.base() {
            return Err(ApplyError {
                record: Box::new(verified.value),
            });
        }
        self.advance(&verified.proof);
        Ok(())
    }

    /// Leader side: signs `payload` as the next record (current epoch, next version, `prev`
    /// = our last hash). Does not check that `key` may sign or that the payload is valid;
    /// verify the result with [`Chain::verify`] before announcing it. A failover candidate
    /// uses this too, to sign its `Handover` record.
    pub fn sign_next(&self, key: &SigningKey, kind: RecordKind, payload: Vec<u8>) -> SignedRecord {
        MasteredRecord {
            cluster: self.cluster,
            epoch: self.epoch,
            version: self.last_version.saturating_add(1),
            prev: self.last_hash,
            kind,
            payload,
        }
        .sign(key)
    }

    /// The candidacy a member endorses, at this chain position, to make `next_leader` the
    /// leader of the next epoch: sign it with [`Endorsement::sign`].
    pub fn candidacy(&self, next_leader: [u8; 32]) -> Candidacy {
        Candidacy {
            cluster: self.cluster,
            next_epoch: self.epoch.saturating_add(1),
            next_leader,
            prev_version: self.last_version,
            prev_hash: self.last_hash,
        }
    }

    fn base(&self) -> Base {
        Base {
            cluster: self.cluster,
            epoch: self.epoch,
            leader: self.leader,
            last_version: self.last_version,
            last_hash: self.last_hash,
        }
    }

    fn advance(&mut self, proof: &Proof) {
        self.last_version += 1;
        self.last_hash = proof.hash;
        match &proof.effect {
            Effect::None => {}
            Effect::Roster(roster) => self.roster = roster.clone(),
            Effect::Handover { epoch, leader } => {
                self.epoch = *epoch;
                self.leader = *leader;
            }
        }
    }

    /// Hand-over rules, after the chain checks passed for a record signed by `signer`.
    fn check_handover(&self, signer: [u8; 32], handover: &Handover) -> Result<(), VerifyError> {
        if self.epoch.checked_add(1) != Some(handover.next_epoch) {
            return Err(VerifyError::WrongNextEpoch {
                got: handover.next_epoch,
                current: self.epoch,
            });
        }
        if !self.roster.contains(&handover.next_leader) {
            return Err(VerifyError::NextLeaderNotMember {
                next_leader: handover.next_leader,
            });
        }
        let planned = signer == self.leader;
        if !planned && signer != handover.next_leader {
            return Err(VerifyError::UnknownSigner {
                epoch: self.epoch,
                signer,
            });
        }
        // Cheap checks on every endorsement before any signature work.
        let mut endorsers = BTreeSet::new();
        for endorsement in &handover.endorsements {
            let bad = |reason| VerifyError::BadEndorsement {
                endorser: endorsement.endorser,
                reason,
            };
            if !self.roster.contains(&endorsement.endorser) {
                return Err(bad("endorser is not a roster member"));
            }
            if !endorsers.insert(endorsement.endorser) {
                return Err(bad("endorser appears twice"));
            }
        }
        let forced_pair = handover.forced
            && self.roster.members.len() == 2
            && endorsers.len() == 1
            && endorsers.contains(&signer);
        if !planned && !forced_pair && endorsers.len() < self.roster.majority() {
            return Err(VerifyError::NoMajority {
                got: endorsers.len(),
                need: self.roster.majority(),
            });
        }
        let candidacy = self.candidacy(handover.next_leader);
        for endorsement in &handover.endorsements {
            if !endorsement.verify(&candidacy) {
                return Err(VerifyError::BadEndorsement {
                    endorser: endorsement.endorser,
                    reason: "signature does not verify for this candidacy and chain position",
                });
            }
        }
        Ok(())
    }
}

/// Chain state a record was verified against; [`Chain::apply`] requires it unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Base {
    cluster: ClusterId,
    epoch: u64,
    leader: [u8; 32],
    last_version: u64,
    last_hash: RecordHash,
}

/// What verification established, so applying needs no second parse.
#[derive(Debug)]
struct Proof {
    base: Base,
    hash: RecordHash,
    effect: Effect,
}

/// How a verified record changes the chain besides its version and hash.
#[derive(Debug)]
enum Effect {
    None,
    Roster(Roster),
    Handover { epoch: u64, leader: [u8; 32] },
}

/// Bounds-checked reader over a byte slice; running out is [`DecodeError::Truncated`].
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let (head, rest) = self
            .0
            .split_first_chunk::<N>()
            .ok_or(DecodeError::Truncated)?;
        self.0 = rest;
        Ok(*head)
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        if len > self.0.len() {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(head)
    }
}

/// Postcard-decodes `bytes` and refuses trailing bytes, so each payload has one encoding.
fn decode_exact<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, PayloadError> {
    let (value, rest) = postcard::take_from_bytes(bytes).map_err(PayloadError::Malformed)?;
    if !rest.is_empty() {
        return Err(PayloadError::TrailingBytes { extra: rest.len() });
    }
    Ok(value)
}

/// Whether `key` is a canonically encoded ed25519 point of large order: a key some node can
/// actually hold. One point has one roster encoding, so member keys compare as bytes.
fn is_usable_key(key: &[u8; 32]) -> bool {
    VerifyingKey::from_bytes(key)
        .is_ok_and(|point| !point.is_weak() && point.to_edwards().compress().to_bytes() == *key)
}

/// First 8 hex digits of a key, for logs and messages.
fn hex_prefix(key: &[u8; 32]) -> String {
    hex::encode(&key[..4])
}

/// Serde for 64-byte signatures (serde derives arrays only up to 32): a tuple of 64 bytes,
/// which postcard writes as 64 raw bytes.
mod sig_bytes {
    use std::fmt;

    use serde::de::{self, SeqAccess, Visitor};
    use serde::ser::SerializeTuple;
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        let mut tuple = s.serialize_tuple(64)?;
        for byte in bytes {
            tuple.serialize_element(byte)?;
        }
        tuple.end()
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        struct SigVisitor;

        impl<'de> Visitor<'de> for SigVisitor {
            type Value = [u8; 64];

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("64 signature bytes")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<[u8; 64], A::Error> {
                let mut out = [0; 64];
                for (i, byte) in out.iter_mut().enumerate() {
                    *byte = seq
                        .next_element()?
                        .ok_or_else(|| de::Error::invalid_length(i, &self))?;
                }
                Ok(out)
            }
        }

        d.deserialize_tuple(64, SigVisitor)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use proptest::sample::Index;

    use super::*;

    const CLUSTER: ClusterId = ClusterId([7; 16]);

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    fn pk(n: u8) -> [u8; 32] {
        key(n).verifying_key().to_bytes()
    }

    fn anchor() -> TrustAnchor {
        TrustAnchor {
            cluster: CLUSTER,
            genesis_leader: pk(1),
        }
    }

    /// Roster of the nodes with key seeds `seeds`.
    fn roster(seeds: impl IntoIterator<Item = u8>) -> Roster {
        Roster {
            members: seeds
                .into_iter()
                .map(|n| Member {
                    key: pk(n),
                    address: format!("pam{n}.example"),
                })
                .collect(),
        }
    }

    fn accept(chain: &mut Chain, record: &SignedRecord) {
        let verified = chain.verify(record).expect("record verifies");
        chain
            .apply(verified)
            .expect("verified against the current state");
    }

    /// Verifies a record that must be refused and checks the chain did not change.
    fn refuse(chain: &Chain, record: &SignedRecord) -> VerifyError {
        let before = chain.clone();
        let err = chain.verify(record).expect_err("record is refused");
        assert_eq!(chain, &before, "a refusal leaves the chain unchanged");
        err
    }

    /// Chain after genesis (leader 1, roster 1..=5) and one config record.
    fn started() -> (Chain, Vec<SignedRecord>) {
        let mut chain = Chain::new(anchor());
        let genesis = chain.sign_next(&key(1), RecordKind::Genesis, roster(1..=5).encode());
        accept(&mut chain, &genesis);
        let config = chain.sign_next(&key(1), RecordKind::Config, b"retention=30d".to_vec());
        accept(&mut chain, &config);
        (chain, vec![genesis, config])
    }

    fn handover_payload(
        next_epoch: u64,
        next_leader: u8,
        endorsements: Vec<Endorsement>,
    ) -> Vec<u8> {
        Handover {
            next_epoch,
            next_leader: pk(next_leader),
            endorsements,
            forced: false,
        }
        .encode()
    }

    fn endorse(
        chain: &Chain,
        candidate: u8,
        endorsers: impl IntoIterator<Item = u8>,
    ) -> Vec<Endorsement> {
        let candidacy = chain.candidacy(pk(candidate));
        endorsers
            .into_iter()
            .map(|n| Endorsement::sign(&key(n), &candidacy))
            .collect()
    }

    /// Re-signs `record` with `signer` after `change` edited it.
    fn resigned(
        record: &SignedRecord,
        signer: u8,
        change: impl FnOnce(&mut MasteredRecord),
    ) -> SignedRecord {
        let mut inner = record.record.clone();
        change(&mut inner);
        inner.sign(&key(signer))
    }

    #[test]
    fn genesis_and_later_records_advance_the_chain() {
        let (chain, records) = started();
        assert_eq!(chain.cluster(), CLUSTER);
        assert_eq!(chain.epoch(), 1);
        assert_eq!(chain.leader(), pk(1));
        assert_eq!(chain.last_version(), 2);
        assert_eq!(chain.last_hash(), records[1].hash());
        assert_eq!(chain.roster(), &roster(1..=5));
        assert_eq!(records[1].record.prev, records[0].hash());
    }

    #[test]
    fn rebuild_from_stored_records_reaches_the_same_state() {
        let (mut chain, mut records) = started();
        let handover = chain.sign_next(
            &key(1),
            RecordKind::Handover,
            handover_payload(2, 2, vec![]),
        );
        accept(&mut chain, &handover);
        records.push(handover);
        let user = chain.sign_next(&key(2), RecordKind::User, b"alice".to_vec());
        accept(&mut chain, &user);
        records.push(user);
        let rebuilt = Chain::rebuild(anchor(), &records).expect("stored records verify");
        assert_eq!(rebuilt, chain);
        let (replayed, verified) =
            Chain::replay(anchor(), &records).expect("stored records verify");
        assert_eq!(replayed, chain);
        let verified: Vec<SignedRecord> = verified.into_iter().map(Verified::into_inner).collect();
        assert_eq!(verified, records);
    }

    #[test]
    fn rebuild_names_the_first_record_that_does_not_verify() {
        let (_, mut records) = started();
        records[1].signature[0] ^= 1;
        let err = Chain::rebuild(anchor(), &records).expect_err("tampered store");
        assert_eq!(err.index, 1);
        assert_eq!(err.source, VerifyError::BadSignature);
    }

    #[test]
    fn refuses_oversize_payload_before_any_other_check() {
        let (chain, _) = started();
        let mut record =
            chain.sign_next(&key(1), RecordKind::Config, vec![0; MAX_PAYLOAD_BYTES + 1]);
        record.record.cluster = ClusterId([9; 16]);
        record.signature = [0; 64];
        assert_eq!(
            refuse(&chain, &record),
            VerifyError::Oversize {
                len: MAX_PAYLOAD_BYTES + 1,
                max: MAX_PAYLOAD_BYTES
            }
        );
        let at_limit = chain.sign_next(&key(1), RecordKind::Config, vec![0; MAX_PAYLOAD_BYTES]);
        assert!(
            chain.verify(&at_limit).is_ok(),
            "the limit itself is allowed"
        );
    }

    #[test]
    fn refuses_record_for_another_cluster() {
        let (chain, _) = started();
        let good = chain.sign_next(&key(1), RecordKind::Config, b"x".to_vec());
        let other = resigned(&good, 1, |r| r.cluster = ClusterId([8; 16]));
        assert_eq!(
            refuse(&chain, &other),
            VerifyError::WrongCluster {
                expected: CLUSTER,
                got: ClusterId([8; 16])
            }
        );
    }

    #[test]
    fn refuses_record_with_bad_signature() {
        let (chain, _) = started();
        let mut record = chain.sign_next(&key(1), RecordKind::Config, b"x".to_vec());
        record.record.payload = b"y".to_vec();
        assert_eq!(refuse(&chain, &record), VerifyError::BadSignature);
        let mut not_a_key = chain.sign_next(&key(1), RecordKind::Config, b"x".to_vec());
        not_a_key.signer = [0xff; 32];
        assert_eq!(refuse(&chain, &not_a_key), VerifyError::BadSignature);
    }

    #[test]
    fn refuses_record_signed_by_someone_other_than_the_leader() {
        let (chain, _) = started();
        let record = chain.sign_next(&key(2), RecordKind::Config, b"x".to_vec());
        assert_eq!(
            refuse(&chain, &record),
            VerifyError::UnknownSigner {
                epoch: 1,
                signer: pk(2)
            }
        );
    }

    #[test]
    fn refuses_record_of_the_next_epoch_before_its_handover() {
        let (chain, _) = started();
        let good = chain.sign_next(&key(2), RecordKind::Config, b"x".to_vec());
        let early = resigned(&good, 2, |r| r.epoch = 2);
        assert_eq!(
            refuse(&chain, &early),
            VerifyError::UnknownSigner {
                epoch: 2,
                signer: pk(2)
            }
        );
        // Even the current leader cannot jump epochs without a hand-over.
        let jump = resigned(&good, 1, |r| r.epoch = 2);
        assert_eq!(
            refuse(&chain, &jump),
            VerifyError::UnknownSigner {
                epoch: 2,
                signer: pk(1)
            }
        );
    }

    #[test]
    fn refuses_replay_of_an_applied_record_as_rollback() {
        let (chain, records) = started();
        for (record, got) in records.iter().zip([1, 2]) {
            assert_eq!(
                refuse(&chain, record),
                VerifyError::Rollback { got, have: 2 }
            );
        }
    }

    #[test]
    fn refuses_lower_version_as_rollback() {
        let (chain, _) = started();
        let good = chain.sign_next(&key(1), RecordKind::Config, b"x".to_vec());
        let old = resigned(&good, 1, |r| r.version = 2);
        assert_eq!(
            refuse(&chain, &old),
            VerifyError::Rollback { got: 2, have: 2 }
        );
        let zero = resigned(&good, 1, |r| r.version = 0);
        assert_eq!(
            refuse(&chain, &zero),
            VerifyError::Rollback { got: 0, have: 2 }
        );
    }

    #[test]
    fn refuses_version_gap() {
        let (chain, _) = started();
        let good = chain.sign_next(&key(1), RecordKind::Config, b"x".to_vec());
        let ahead = resigned(&good, 1, |r| r.version = 5);
        assert_eq!(
            refuse(&chain, &ahead),
            VerifyError::VersionGap {
                expected: 3,
                got: 5
            }
        );
        let max = resigned(&good, 1, |r| r.version = u64::MAX);
        assert!(matches!(
            refuse(&chain, &max),
            VerifyError::VersionGap { .. }
        ));
    }

    #[test]
    fn refuses_record_that_does_not_extend_our_last_record() {
        let (chain, records) = started();
        let good = chain.sign_next(&key(1), RecordKind::Config, b"x".to_vec());
        let fork = resigned(&good, 1, |r| r.prev = records[0].hash());
        assert_eq!(
            refuse(&chain, &fork),
            VerifyError::BrokenChain {
                version: 3,
                expected: records[1].hash(),
                got: records[0].hash()
            }
        );
    }

    #[test]
    fn refuses_first_record_that_is_not_genesis_and_a_second_genesis() {
        let empty = Chain::new(anchor());
        let config = empty.sign_next(&key(1), RecordKind::Config, b"x".to_vec());
        assert_eq!(
            refuse(&empty, &config),
            VerifyError::MisplacedGenesis {
                version: 1,
                kind: RecordKind::Config
            }
        );
        let (chain, _) = started();
        let again = chain.sign_next(&key(1), RecordKind::Genesis, roster(1..=3).encode());
        assert_eq!(
            refuse(&chain, &again),
            VerifyError::MisplacedGenesis {
                version: 3,
                kind: RecordKind::Genesis
            }
        );
    }

    #[test]
    fn refuses_genesis_signed_by_a_key_other_than_the_anchor() {
        let empty = Chain::new(anchor());
        let genesis = empty.sign_next(&key(2), RecordKind::Genesis, roster(1..=3).encode());
        assert!(matches!(
            refuse(&empty, &genesis),
            VerifyError::UnknownSigner { epoch: 1, .. }
        ));
    }

    #[test]
    fn refuses_malformed_roster_payloads() {
        let (chain, _) = started();
        let garbage = chain.sign_next(&key(1), RecordKind::Roster, vec![0xff; 7]);
        assert!(matches!(
            refuse(&chain, &garbage),
            VerifyError::BadPayload {
                kind: RecordKind::Roster,
                source: PayloadError::Malformed(_)
            }
        ));
        let mut trailing = roster(1..=3).encode();
        trailing.push(0);
        let mut twice = roster(1..=3);
        twice.members.push(twice.members[0].clone());
        let mut long = roster(1..=3);
        long.members[1].address = "a".repeat(MAX_ADDRESS_BYTES + 1);
        let mut bad_key = roster(1..=3);
        bad_key.members[2].key = [0xff; 32];
        let cases = [
            (trailing, PayloadError::TrailingBytes { extra: 1 }),
            (Roster::default().encode(), PayloadError::EmptyRoster),
            (twice.encode(), PayloadError::DuplicateMember { key: pk(1) }),
            (
                long.encode(),
                PayloadError::AddressTooLong {
                    index: 1,
                    len: MAX_ADDRESS_BYTES + 1,
                    max: MAX_ADDRESS_BYTES,
                },
            ),
            (
                bad_key.encode(),
                PayloadError::InvalidMemberKey { index: 2 },
            ),
        ];
        for (payload, source) in cases {
            let record = chain.sign_next(&key(1), RecordKind::Roster, payload);
            assert_eq!(
                refuse(&chain, &record),
                VerifyError::BadPayload {
                    kind: RecordKind::Roster,
                    source
                }
            );
        }
        let big = Roster {
            members: (0..=MAX_ROSTER_MEMBERS)
                .map(|i| Member {
                    key: [0; 32],
                    address: i.to_string(),
                })
                .collect(),
        };
        assert_eq!(
            Roster::decode(&big.encode()),
            Err(PayloadError::TooManyMembers {
                got: MAX_ROSTER_MEMBERS + 1,
                max: MAX_ROSTER_MEMBERS
            })
        );
    }

    #[test]
    fn refuses_malformed_handover_payloads() {
        let (chain, _) = started();
        let garbage = chain.sign_next(&key(1), RecordKind::Handover, vec![1, 2, 3]);
        assert!(matches!(
            refuse(&chain, &garbage),
            VerifyError::BadPayload {
                kind: RecordKind::Handover,
                source: PayloadError::Malformed(_)
            }
        ));
        let many = Handover {
            next_epoch: 2,
            next_leader: pk(2),
            endorsements: vec![
                Endorsement::sign(&key(1), &chain.candidacy(pk(2)));
                MAX_ROSTER_MEMBERS + 1
            ],
            forced: false,
        };
        let record = chain.sign_next(&key(1), RecordKind::Handover, many.encode());
        assert_eq!(
            refuse(&chain, &record),
            VerifyError::BadPayload {
                kind: RecordKind::Handover,
                source: PayloadError::TooManyEndorsements {
                    got: MAX_ROSTER_MEMBERS + 1,
                    max: MAX_ROSTER_MEMBERS
                }
            }
        );
    }

    #[test]
    fn refuses_handover_that_does_not_name_the_next_epoch() {
        let (chain, _) = started();
        for next_epoch in [0, 1, 3, u64::MAX] {
            let record = chain.sign_next(
                &key(1),
                RecordKind::Handover,
                handover_payload(next_epoch, 2, vec![]),
            );
            assert_eq!(
                refuse(&chain, &record),
                VerifyError::WrongNextEpoch {
                    got: next_epoch,
                    current: 1
                }
            );
        }
    }

    #[test]
    fn refuses_handover_to_a_node_outside_the_roster() {
        let (chain, _) = started();
        let record = chain.sign_next(
            &key(1),
            RecordKind::Handover,
            handover_payload(2, 9, vec![]),
        );
        assert_eq!(
            refuse(&chain, &record),
            VerifyError::NextLeaderNotMember { next_leader: pk(9) }
        );
    }

    #[test]
    fn planned_handover_moves_leadership_to_the_named_node() {
        let (mut chain, _) = started();
        let handover = chain.sign_next(
            &key(1),
            RecordKind::Handover,
            handover_payload(2, 3, vec![]),
        );
        accept(&mut chain, &handover);
        assert_eq!(
            (chain.epoch(), chain.leader(), chain.last_version()),
            (2, pk(3), 3)
        );
        let next = chain.sign_next(&key(3), RecordKind::Licence, b"nodes=5".to_vec());
        assert_eq!(next.record.epoch, 2);
        accept(&mut chain, &next);
    }

    #[test]
    fn refuses_older_epoch_record_after_a_handover() {
        let (mut chain, _) = started();
        let handover = chain.sign_next(
            &key(1),
            RecordKind::Handover,
            handover_payload(2, 3, vec![]),
        );
        accept(&mut chain, &handover);
        // The old leader keeps writing in its epoch, correctly chained.
        let stale = MasteredRecord {
            cluster: CLUSTER,
            epoch: 1,
            version: 4,
            prev: handover.hash(),
            kind: RecordKind::Config,
            payload: b"x".to_vec(),
        }
        .sign(&key(1));
        assert_eq!(
            refuse(&chain, &stale),
            VerifyError::StaleEpoch {
                got: 1,
                high_water: 2
            }
        );
        // The old leader claiming the new epoch is not its leader.
        let usurper = chain.sign_next(&key(1), RecordKind::Config, b"x".to_vec());
        assert_eq!(
            refuse(&chain, &usurper),
            VerifyError::UnknownSigner {
                epoch: 2,
                signer: pk(1)
            }
        );
    }

    #[test]
    fn majority_failover_moves_leadership_to_the_endorsed_candidate() {
        let (mut chain, _) = started();
        let endorsements = endorse(&chain, 3, [2, 3, 4]);
        let handover = chain.sign_next(
            &key(3),
            RecordKind::Handover,
            handover_payload(2, 3, endorsements),
        );
        accept(&mut chain, &handover);
        assert_eq!((chain.epoch(), chain.leader()), (2, pk(3)));
        let next = chain.sign_next(&key(3), RecordKind::Revocation, pk(1).to_vec());
        accept(&mut chain, &next);
        let old = chain.sign_next(&key(1), RecordKind::Config, b"x".to_vec());
        assert!(matches!(
            refuse(&chain, &old),
            VerifyError::UnknownSigner { .. }
        ));
    }

    #[test]
    fn minority_failover_is_refused() {
        let (chain, _) = started();
        let endorsements = endorse(&chain, 3, [3, 4]);
        let handover = chain.sign_next(
            &key(3),
            RecordKind::Handover,
            handover_payload(2, 3, endorsements),
        );
        assert_eq!(
            refuse(&chain, &handover),
            VerifyError::NoMajority { got: 2, need: 3 }
        );
        // Signing the record does not count as an endorsement by itself.
        let bare = chain.sign_next(
            &key(3),
            RecordKind::Handover,
            handover_payload(2, 3, vec![]),
        );
        assert_eq!(
            refuse(&chain, &bare),
            VerifyError::NoMajority { got: 0, need: 3 }
        );
    }

    #[test]
    fn a_forced_failover_is_accepted_only_in_a_two_node_pair() {
        let forced = |chain: &Chain, candidate: u8| {
            let payload = Handover {
                next_epoch: chain.epoch() + 1,
                next_leader: pk(candidate),
                endorsements: endorse(chain, candidate, [candidate]),
                forced: true,
            }
            .encode();
            chain.sign_next(&key(candidate), RecordKind::Handover, payload)
        };
        // Five members: forcing is no way around the majority.
        let (five, _) = started();
        assert_eq!(
            refuse(&five, &forced(&five, 3)),
            VerifyError::NoMajority { got: 1, need: 3 }
        );
        // A pair whose leader is gone: the other node may take over alone.
        let mut pair = Chain::new(anchor());
        let genesis = pair.sign_next(&key(1), RecordKind::Genesis, roster(1..=2).encode());
        accept(&mut pair, &genesis);
        let takeover = forced(&pair, 2);
        accept(&mut pair, &takeover);
        assert_eq!((pair.epoch(), pair.leader()), (2, pk(2)));
    }

    #[test]
    fn refuses_handover_signed_by_neither_the_leader_nor_the_candidate() {
        let (chain, _) = started();
        let endorsements = endorse(&chain, 3, [2, 3, 4]);
        let handover = chain.sign_next(
            &key(4),
            RecordKind::Handover,
            handover_payload(2, 3, endorsements),
        );
        assert_eq!(
            refuse(&chain, &handover),
            VerifyError::UnknownSigner {
                epoch: 1,
                signer: pk(4)
            }
        );
    }

    #[test]
    fn refuses_failover_with_a_forged_or_misplaced_endorsement() {
        let (chain, records) = started();
        let mut forged = endorse(&chain, 3, [2, 3, 4]);
        forged[2].signature[5] ^= 0x10;
        let outsider = endorse(&chain, 3, [2, 3, 9]);
        let repeated = endorse(&chain, 3, [2, 3, 3, 4]);
        let mut wrong_candidate = endorse(&chain, 3, [2, 3]);
        wrong_candidate.extend(endorse(&chain, 5, [4]));
        // Endorsements collected at an earlier chain position cannot be reused.
        let earlier = Chain::rebuild(anchor(), &records[..1]).expect("genesis verifies");
        let mut stale = endorse(&chain, 3, [2, 3]);
        stale.extend(endorse(&earlier, 3, [4]));
        for (endorsements, bad) in [
            (forged, pk(4)),
            (outsider, pk(9)),
            (repeated, pk(3)),
            (wrong_candidate, pk(4)),
            (stale, pk(4)),
        ] {
            let handover = chain.sign_next(
                &key(3),
                RecordKind::Handover,
                handover_payload(2, 3, endorsements),
            );
            let err = refuse(&chain, &handover);
            assert!(
                matches!(err, VerifyError::BadEndorsement { endorser, .. } if endorser == bad),
                "{err:?}"
            );
        }
    }

    #[test]
    fn roster_record_replaces_the_roster_used_for_majority() {
        let (mut chain, _) = started();
        let shrink = chain.sign_next(&key(1), RecordKind::Roster, roster([1, 2, 3]).encode());
        accept(&mut chain, &shrink);
        assert_eq!(chain.roster(), &roster([1, 2, 3]));
        // Two of three is now a majority, and node 4 is no longer a member.
        let endorsements = endorse(&chain, 2, [2, 4]);
        let outsider = chain.sign_next(
            &key(2),
            RecordKind::Handover,
            handover_payload(2, 2, endorsements),
        );
        assert!(matches!(
            refuse(&chain, &outsider),
            VerifyError::BadEndorsement { .. }
        ));
        let endorsements = endorse(&chain, 2, [2, 3]);
        let handover = chain.sign_next(
            &key(2),
            RecordKind::Handover,
            handover_payload(2, 2, endorsements),
        );
        accept(&mut chain, &handover);
        assert_eq!(chain.leader(), pk(2));
    }

    #[test]
    fn verified_record_cannot_be_applied_after_the_chain_moved() {
        let (mut chain, _) = started();
        let a = chain.sign_next(&key(1), RecordKind::Config, b"a".to_vec());
        let b = chain.sign_next(&key(1), RecordKind::Config, b"b".to_vec());
        let verified_a = chain.verify(&a).expect("a verifies");
        let verified_b = chain.verify(&b).expect("b verifies");
        assert_eq!(verified_a.hash(), a.hash());
        chain.apply(verified_a).expect("a applies");
        let before = chain.clone();
        let err = chain
            .apply(verified_b)
            .expect_err("b was verified against the old state");
        assert_eq!(*err.record, b);
        assert_eq!(chain, before);
        // A record verified by another chain cannot advance this one either.
        let other = Chain::new(TrustAnchor {
            cluster: CLUSTER,
            genesis_leader: pk(2),
        });
        let genesis = other.sign_next(&key(2), RecordKind::Genesis, roster([2]).encode());
        let verified = other.verify(&genesis).expect("other genesis verifies");
        let mut fresh = Chain::new(anchor());
        assert!(fresh.apply(verified).is_err());
        assert_eq!(fresh, Chain::new(anchor()));
    }

    #[test]
    fn encoding_round_trips_and_refuses_malformed_bytes() {
        let (chain, _) = started();
        let record = chain.sign_next(&key(1), RecordKind::Grant, b"alice:admin:prod".to_vec());
        let bytes = record.encode();
        assert_eq!(bytes.len(), MIN_ENCODED_BYTES + 16);
        assert_eq!(SignedRecord::decode(&bytes), Ok(record.clone()));

        let mut format = bytes.clone();
        format[0] = 2;
        assert_eq!(
            SignedRecord::decode(&format),
            Err(DecodeError::UnknownFormat { got: 2 })
        );
        let mut kind = bytes.clone();
        let unknown = RecordKind::ALL.len() as u8;
        kind[1 + 64] = unknown;
        assert_eq!(
            SignedRecord::decode(&kind),
            Err(DecodeError::UnknownKind { code: unknown })
        );
        let mut long = bytes.clone();
        long[1 + 65..1 + 69].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            SignedRecord::decode(&long),
            Err(DecodeError::PayloadTooLarge { .. })
        ));
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(
            SignedRecord::decode(&trailing),
            Err(DecodeError::LengthMismatch { .. })
        ));
        assert_eq!(
            SignedRecord::decode(&bytes[..10]),
            Err(DecodeError::Truncated)
        );
        assert_eq!(SignedRecord::decode(&[]), Err(DecodeError::Truncated));
        assert!(matches!(
            SignedRecord::decode(&vec![1; MAX_ENCODED_BYTES + 1]),
            Err(DecodeError::TooLarge { .. })
        ));
    }

    #[test]
    fn record_hash_covers_signed_bytes_signer_and_signature() {
        let (chain, _) = started();
        let record = chain.sign_next(&key(1), RecordKind::Config, b"x".to_vec());
        let signed = record.record.signing_bytes();
        assert!(signed.starts_with(b"meshward/mastered/v1\0"));
        assert_eq!(signed.len(), RECORD_DOMAIN.len() + HEADER_BYTES + 1);
        assert_eq!(
            &signed[RECORD_DOMAIN.len() + 16..][..8],
            &1u64.to_be_bytes()
        );
        assert_eq!(
            &signed[RECORD_DOMAIN.len() + 24..][..8],
            &3u64.to_be_bytes()
        );
        let mut hasher = Sha256::new();
        hasher.update(&signed);
        hasher.update(record.signer);
        hasher.update(record.signature);
        assert_eq!(record.hash(), RecordHash(hasher.finalize().into()));
        // The wire encoding is the format byte, the signed bytes minus the domain, the signer
        // and the signature.
        let wire = record.encode();
        assert_eq!(wire[0], WIRE_FORMAT);
        assert_eq!(&wire[1..wire.len() - 96], &signed[RECORD_DOMAIN.len()..]);
        assert_eq!(&wire[wire.len() - 96..][..32], &record.signer);
    }

    #[test]
    fn record_kind_names_and_codes_are_stable() {
        for (code, kind) in RecordKind::ALL.into_iter().enumerate() {
            assert_eq!(kind.code() as usize, code);
            assert_eq!(RecordKind::from_code(kind.code()), Some(kind));
            assert_eq!(kind.as_str().parse::<RecordKind>(), Ok(kind));
            assert_eq!(kind.to_string(), kind.as_str());
        }
        assert_eq!(RecordKind::from_code(RecordKind::ALL.len() as u8), None);
        assert_eq!(RecordKind::SealedSecret.code(), 11);
        assert!("Genesis".parse::<RecordKind>().is_err());
        assert_eq!(RecordKind::PasswordPolicy.as_str(), "password-policy");
    }

    #[test]
    fn ids_display_as_short_hex() {
        let id = ClusterId([0xab; 16]);
        assert_eq!(id.to_string(), "abababab");
        assert_eq!(id.to_hex().len(), 32);
        assert_eq!(RecordHash([1; 32]).to_string(), "01010101");
        assert_eq!(RecordHash::ZERO.to_hex(), "0".repeat(64));
    }

    #[test]
    fn error_messages_are_lowercase_and_say_what_to_do() {
        let err = VerifyError::StaleEpoch {
            got: 1,
            high_water: 2,
        };
        let text = err.to_string();
        assert!(
            text.starts_with("mastered record is from epoch 1"),
            "{text}"
        );
        assert!(text.contains("drop it"));
    }

    /// A valid next record for the chain from `started()`, chosen by `(shape, pick, payload)`.
    fn candidate(chain: &Chain, shape: u8, pick: u8, payload: Vec<u8>) -> SignedRecord {
        let member = 1 + pick % 5;
        match shape % 4 {
            0 => {
                let opaque = &RecordKind::ALL[2..9];
                let kind = opaque[usize::from(pick) % opaque.len()];
                chain.sign_next(&key(1), kind, payload)
            }
            1 => chain.sign_next(&key(1), RecordKind::Roster, roster(1..=member).encode()),
            2 => chain.sign_next(
                &key(1),
                RecordKind::Handover,
                handover_payload(2, member, vec![]),
            ),
            _ => {
                let endorsers = (0..3u8).map(|i| 1 + (pick % 5 + i) % 5);
                let endorsements = endorse(chain, member, endorsers);
                chain.sign_next(
                    &key(member),
                    RecordKind::Handover,
                    handover_payload(2, member, endorsements),
                )
            }
        }
    }

    fn candidate_parts() -> impl Strategy<Value = (u8, u8, Vec<u8>)> {
        (
            any::<u8>(),
            any::<u8>(),
            prop::collection::vec(any::<u8>(), 0..48),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn verification_never_accepts_a_bit_flipped_record(
            (shape, pick, payload) in candidate_parts(),
            flips in prop::collection::vec((any::<Index>(), 0u8..8), 1..=8),
        ) {
            let (chain, _) = started();
            let record = candidate(&chain, shape, pick, payload);
            prop_assert!(chain.verify(&record).is_ok(), "the unmutated record is accepted");
            let original = record.encode();
            // Distinct (byte, bit) pairs, so the flips never cancel out.
            let flips: BTreeSet<(usize, u8)> =
                flips.iter().map(|(at, bit)| (at.index(original.len()), *bit)).collect();
            let mut bytes = original.clone();
            for (at, bit) in flips {
                bytes[at] ^= 1 << bit;
            }
            prop_assert_ne!(&bytes, &original);
            if let Ok(mutated) = SignedRecord::decode(&bytes) {
                prop_assert_ne!(&mutated, &record);
                prop_assert!(
                    chain.verify(&mutated).is_err(),
                    "mutated record accepted: {:?}",
                    mutated
                );
            }
        }

        #[test]
        fn verification_never_accepts_a_record_with_swapped_fields(
            (shape, pick, payload) in candidate_parts(),
            other_payload in prop::collection::vec(any::<u8>(), 0..48),
            other_signer in 2u8..=9,
            kind_shift in 1usize..10,
        ) {
            let (chain, _) = started();
            let record = candidate(&chain, shape, pick, payload);
            prop_assert!(chain.verify(&record).is_ok(), "the unmutated record is accepted");

            let mut swapped = record.clone();
            std::mem::swap(&mut swapped.record.epoch, &mut swapped.record.version);
            prop_assert!(chain.verify(&swapped).is_err(), "epoch/version swap accepted");

            let mut signer = record.clone();
            signer.signer = pk(other_signer);
            if signer.signer != record.signer {
                prop_assert!(chain.verify(&signer).is_err(), "signer swap accepted");
            }
            let resigned_by_other = resigned(&record, other_signer, |_| {});
            if resigned_by_other.signer != record.signer {
                prop_assert!(
                    chain.verify(&resigned_by_other).is_err(),
                    "re-signed by a non-leader accepted"
                );
            }

            let other = chain.sign_next(&key(1), RecordKind::Config, other_payload);
            if other.record.payload != record.record.payload {
                let mut a = record.clone();
                let mut b = other.clone();
                std::mem::swap(&mut a.record.payload, &mut b.record.payload);
                prop_assert!(chain.verify(&a).is_err(), "payload swap accepted");
                prop_assert!(chain.verify(&b).is_err(), "payload swap accepted");
            }

            let mut kind = record.clone();
            let code =
                (usize::from(record.record.kind.code()) + kind_shift) % RecordKind::ALL.len();
            kind.record.kind = RecordKind::ALL[code];
            prop_assert!(chain.verify(&kind).is_err(), "kind swap accepted");
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
            let (chain, _) = started();
            if let Ok(record) = SignedRecord::decode(&bytes) {
                let _ = chain.verify(&record);
            }
            let _ = Roster::decode(&bytes);
            let _ = Handover::decode(&bytes);
        }

        #[test]
        fn decoding_a_cut_or_extended_record_fails(
            (shape, pick, payload) in candidate_parts(),
            cut in any::<Index>(),
            extra in prop::collection::vec(any::<u8>(), 1..16),
        ) {
            let (chain, _) = started();
            let bytes = candidate(&chain, shape, pick, payload).encode();
            prop_assert!(SignedRecord::decode(&bytes[..cut.index(bytes.len())]).is_err());
            let mut longer = bytes.clone();
            longer.extend_from_slice(&extra);
            prop_assert!(SignedRecord::decode(&longer).is_err());
        }
    }
}
