//! Why a mastered record, payload, encoding or chain operation was refused.

use thiserror::Error;

use super::{ClusterId, RecordHash, RecordKind, SignedRecord, hex_prefix};

/// Why [`Chain::verify`] refused a record. Verification never changes the chain.
///
/// Checks run in the order of the variants below, with two exceptions: a hand-over signed by
/// someone other than the leader is refused as `UnknownSigner` only after its payload parsed
/// (it may be signed by its candidate), and endorsement membership is checked before the
/// consent and majority checks, endorsement signatures after.
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
    /// A hand-over names the current leader as the next leader: leadership can only move to
    /// another member. Chain state is unchanged.
    #[error(
        "hand-over names the current leader {} as the next leader; a hand-over names another \
         roster member: drop it",
        hex_prefix(.leader)
    )]
    HandoverToSelf {
        /// The current leader.
        leader: [u8; 32],
    },
    /// A hand-over (other than a forced failover of a pair) lacks the next leader's own
    /// endorsement: nobody is made leader without its consent. Chain state is unchanged.
    #[error(
        "hand-over to {} lacks that node's own endorsement; ask it to endorse the candidacy \
         (it must be connected and at the same chain position)",
        hex_prefix(.next_leader)
    )]
    NotAccepted {
        /// The named next leader.
        next_leader: [u8; 32],
    },
    /// A hand-over (planned or failover; only a forced failover of a pair is exempt) carries
    /// endorsements from fewer than a strict majority of the roster. Chain state is unchanged.
    #[error(
        "hand-over is endorsed by {got} roster members but needs {need}, a strict majority; \
         every hand-over needs a majority: reconnect more members and try again"
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
    /// A checkpoint payload or stored chain state is malformed (the reason says how).
    #[error("checkpoint: {0}")]
    Checkpoint(&'static str),
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
    /// The genesis names a licence issuer whose key is not a usable ed25519 public key.
    #[error(
        "the genesis names an invalid licence issuer key; create the cluster again with a key from `meshward licence keygen`"
    )]
    InvalidIssuerKey,
    /// The frontiers of a roster name more than [`super::MAX_FRONTIER_SEGMENTS`] segments.
    #[error("roster frontiers name {got} segments, over the limit of {max}")]
    TooManyFrontierSegments {
        /// Segments named.
        got: usize,
        /// The limit.
        max: usize,
    },
    /// The frontiers of a roster break a rule of their encoding.
    #[error("roster frontiers are malformed: {why}; it was written by incompatible software")]
    BadFrontier {
        /// Which rule.
        why: &'static str,
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
     password-policy, fingerprint-approval, user, grant, config, handover, password, \
     sealed-secret, managed, checkpoint"
)]
pub struct UnknownRecordKind(pub String);
