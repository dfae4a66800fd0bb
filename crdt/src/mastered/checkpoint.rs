//! Checkpoints of the chain: a leader-signed record stating the digest of the folded state at
//! the version before it, and the verified chain state a node keeps beside it so that a
//! restart verifies only the records after its last checkpoint.
//!
//! # The record
//!
//! A `Checkpoint` record ([`RecordKind::Checkpoint`]) is signed by the leader of its epoch like
//! any record and carries a [`Checkpoint`]: the version it covers (always the record's own
//! version − 1: [`Chain::verify`] refuses any other), the SHA-256 [`StateDigest`] of the
//! folded state at that version, in the canonical encoding of [`StateDigest::of_rows`], and the
//! SHA-256 of the chain's own state there (cluster, epoch, leader, roster, licence issuer),
//! which [`Chain::verify`] checks against its own. The chain does not hold the folded state,
//! so the store that folds the records checks that digest against its own view before it
//! keeps the record (a leader whose fold differs from ours is refused, state unchanged). The
//! leader writes one every [`CHECKPOINT_EVERY`] records ([`Chain::checkpoint`] makes the
//! payload).
//!
//! # Resuming a chain
//!
//! [`Chain::verify`] on a checkpoint record yields, besides the proof, the [`ChainState`] the
//! chain reaches by applying it ([`Verified::checkpoint_state`]): cluster, epoch, leader,
//! version, hash, roster and licence issuer. A node persists that state when its fold matched
//! the digest. At start, [`Chain::resume`] takes the state and the stored checkpoint record
//! back: the record must be the state's last record (same version and hash), of the state's
//! epoch, signed by the state's leader with a valid signature, and cover the version before
//! it; the chain then verifies only the records after it ([`Chain::extended`]). Records before
//! the checkpoint are committed to by its hash chain (every record's hash covers the previous
//! one's, the checkpoint's `prev` the last of them), so [`Chain::resume_replay`] hands them out
//! as verified after checking that chain of hashes, without one signature check each. A
//! damaged state is caught: its chain digest is the one the signed checkpoint states.
//!
//! # Catching up
//!
//! A node far behind receives records in pages; [`Chain::verify_covered`] verifies a page's
//! records up to its last checkpoint with every check but the ed25519 signature of each plain
//! record: the checkpoint's signature, by the same chain of hashes, vouches for them (a leader
//! signs a checkpoint only over records it verified), and the records that decide who signs
//! (genesis, roster, hand-over) keep their signature checks.

use std::sync::Arc;

use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{
    Base, Chain, ClusterId, Effect, PayloadError, Proof, RecordHash, RecordKind, Roster,
    SignedRecord, TrustAnchor, Verified,
};

/// The leader signs a checkpoint once this many records were written after the last one (or
/// after genesis). A restart verifies at most this many signatures; a leader hashes its folded
/// state once per this many writes.
pub const CHECKPOINT_EVERY: u64 = 1024;

/// Domain-separation prefix of [`StateDigest::of_rows`].
pub const STATE_DOMAIN: &[u8] = b"meshward/checkpoint-state/v1\0";

/// Format byte of an encoded [`Checkpoint`] payload.
const CHECKPOINT_FORMAT: u8 = 1;

/// Bytes of an encoded [`Checkpoint`]: format, covered version, two digests.
const CHECKPOINT_BYTES: usize = 1 + 8 + 32 + 32;

/// Domain-separation prefix of the chain digest a checkpoint carries.
const CHAIN_DOMAIN: &[u8] = b"meshward/checkpoint-chain/v1\0";

/// Format byte of an encoded [`ChainState`].
const STATE_FORMAT: u8 = 1;

/// Largest encoded [`ChainState`]: a full roster with the longest addresses, and room.
pub const MAX_CHAIN_STATE_BYTES: usize = 1 << 20;

/// SHA-256 of a folded state in the canonical encoding of [`StateDigest::of_rows`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StateDigest(pub [u8; 32]);

/// Payload of a `Checkpoint` record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The last version whose effects the digest includes: the record's version − 1.
    pub covers: u64,
    /// Digest of the folded state at `covers`.
    pub state: StateDigest,
    /// SHA-256 of the chain's own state at `covers` (cluster, epoch, leader, roster, licence
    /// issuer): what [`Chain::resume`] checks a stored [`ChainState`] against.
    pub chain: [u8; 32],
}

/// Why a stored checkpoint cannot be resumed from. Nothing is trusted; rebuild the chain from
/// the trust anchor instead.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("the stored checkpoint cannot be resumed from ({0}); the chain is verified from genesis")]
pub struct ResumeError(pub &'static str);

/// The verification state of a chain right after a checkpoint record: what [`Chain::resume`]
/// starts from. Only [`Verified::checkpoint_state`] makes one from a record; a node persists
/// it ([`ChainState::encode`]) and reads it back ([`ChainState::decode`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainState {
    cluster: [u8; 16],
    epoch: u64,
    leader: [u8; 32],
    last_version: u64,
    last_hash: [u8; 32],
    roster: Roster,
    licence_issuer: Option<[u8; 32]>,
}

/// A sink for the canonical encoding of a folded state (see [`StateDigest::of_rows`]).
#[derive(Clone)]
pub struct StateHasher(Sha256);

impl std::fmt::Debug for StateHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateHasher")
    }
}

impl StateDigest {
    /// The canonical digest of a folded state given as rows `(key, version, document)` in
    /// strictly increasing key order: SHA-256 of [`STATE_DOMAIN`], then per row the key length
    /// (4 bytes big-endian), the key, the version that wrote the row (8 bytes big-endian), the
    /// document length (4 bytes) and the document.
    pub fn of_rows<'a>(rows: impl IntoIterator<Item = (&'a [u8], u64, &'a [u8])>) -> StateDigest {
        let mut hasher = StateHasher::new();
        for (key, version, document) in rows {
            hasher.row(key, version, document);
        }
        hasher.finish()
    }

    /// All 64 hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl std::fmt::Debug for StateDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StateDigest({})", self.to_hex())
    }
}

impl StateHasher {
    /// An empty state.
    pub fn new() -> StateHasher {
        let mut hasher = Sha256::new();
        hasher.update(STATE_DOMAIN);
        StateHasher(hasher)
    }

    /// Adds the next row, in key order.
    pub fn row(&mut self, key: &[u8], version: u64, document: &[u8]) {
        let len = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes();
        self.0.update(len(key.len()));
        self.0.update(key);
        self.0.update(version.to_be_bytes());
        self.0.update(len(document.len()));
        self.0.update(document);
    }

    /// The digest of the rows added.
    pub fn finish(self) -> StateDigest {
        StateDigest(self.0.finalize().into())
    }
}

impl Default for StateHasher {
    fn default() -> Self {
        StateHasher::new()
    }
}

impl Checkpoint {
    /// Fixed 73 bytes: format byte, covered version (big-endian), state digest, chain digest.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(CHECKPOINT_BYTES);
        out.push(CHECKPOINT_FORMAT);
        out.extend(self.covers.to_be_bytes());
        out.extend(self.state.0);
        out.extend(self.chain);
        out
    }

    /// Decodes [`Checkpoint::encode`] output; anything else is an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Checkpoint, PayloadError> {
        if bytes.len() != CHECKPOINT_BYTES {
            return Err(PayloadError::Checkpoint("a checkpoint payload is 73 bytes"));
        }
        if bytes[0] != CHECKPOINT_FORMAT {
            return Err(PayloadError::Checkpoint("unknown checkpoint format"));
        }
        let mut covers = [0; 8];
        covers.copy_from_slice(&bytes[1..9]);
        let mut state = [0; 32];
        state.copy_from_slice(&bytes[9..41]);
        let mut chain = [0; 32];
        chain.copy_from_slice(&bytes[41..]);
        Ok(Checkpoint {
            covers: u64::from_be_bytes(covers),
            state: StateDigest(state),
            chain,
        })
    }
}

impl ChainState {
    /// The version of the checkpoint record this state follows.
    pub fn version(&self) -> u64 {
        self.last_version
    }

    /// The hash of that record.
    pub fn hash(&self) -> RecordHash {
        RecordHash(self.last_hash)
    }

    /// The chain digest a checkpoint at this state carries ([`Checkpoint::chain`]).
    fn digest(&self) -> [u8; 32] {
        chain_digest(
            self.cluster,
            self.epoch,
            self.leader,
            &self.roster,
            self.licence_issuer,
        )
    }

    /// Format byte, then postcard.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![STATE_FORMAT];
        // Invariant: postcard encodes arrays, integers and a roster into a Vec.
        out.extend(postcard::to_stdvec(self).expect("postcard encodes a chain state"));
        out
    }

    /// Decodes [`ChainState::encode`] output, bounded by [`MAX_CHAIN_STATE_BYTES`], its roster
    /// checked like a roster payload. Decoding trusts nothing: [`Chain::resume`] checks it
    /// against its checkpoint record.
    pub fn decode(bytes: &[u8]) -> Result<ChainState, PayloadError> {
        if bytes.len() > MAX_CHAIN_STATE_BYTES {
            return Err(PayloadError::Checkpoint("chain state over its size limit"));
        }
        let Some((&STATE_FORMAT, rest)) = bytes.split_first() else {
            return Err(PayloadError::Checkpoint("unknown chain state format"));
        };
        let (state, extra): (ChainState, _) =
            postcard::take_from_bytes(rest).map_err(PayloadError::Malformed)?;
        if !extra.is_empty() {
            return Err(PayloadError::TrailingBytes { extra: extra.len() });
        }
        Roster::decode(&state.roster.encode())?;
        Ok(state)
    }
}

impl Verified<SignedRecord> {
    /// For a verified `Checkpoint` record, the chain state right after it: what
    /// [`Chain::resume`] starts from once the folded state matched the record's digest.
    pub fn checkpoint_state(&self) -> Option<ChainState> {
        let Effect::Checkpoint(roster, licence_issuer) = &self.proof.effect else {
            return None;
        };
        let base = &self.proof.base;
        Some(ChainState {
            cluster: base.cluster.0,
            epoch: base.epoch,
            leader: base.leader,
            last_version: self.record.version,
            last_hash: self.proof.hash.0,
            roster: Roster::clone(roster),
            licence_issuer: *licence_issuer,
        })
    }
}

/// SHA-256 of [`CHAIN_DOMAIN`] and the postcard encoding of the chain's own state.
fn chain_digest(
    cluster: [u8; 16],
    epoch: u64,
    leader: [u8; 32],
    roster: &Roster,
    licence_issuer: Option<[u8; 32]>,
) -> [u8; 32] {
    // Invariant: postcard encodes arrays, integers and a roster into a Vec.
    let encoded = postcard::to_stdvec(&(cluster, epoch, leader, roster, licence_issuer))
        .expect("postcard encodes a chain state");
    let mut hasher = Sha256::new();
    hasher.update(CHAIN_DOMAIN);
    hasher.update(encoded);
    hasher.finalize().into()
}

impl Chain {
    /// The payload of a checkpoint as the next record: it covers the last version, states
    /// `state` (the digest of the folded state there) and this chain's own state.
    pub fn checkpoint(&self, state: StateDigest) -> Checkpoint {
        Checkpoint {
            covers: self.last_version,
            state,
            chain: self.own_digest(),
        }
    }

    /// The chain digest of this chain's state ([`Checkpoint::chain`]).
    pub(super) fn own_digest(&self) -> [u8; 32] {
        chain_digest(
            self.cluster.0,
            self.epoch,
            self.leader,
            &self.roster,
            self.licence_issuer,
        )
    }

    /// The chain as it stood right after the checkpoint record `checkpoint`, from the `state`
    /// a node persisted for it ([`Verified::checkpoint_state`]); see the module docs for the
    /// checks. Extend it with the records after the checkpoint ([`Chain::extended`]).
    ///
    /// The state is the node's own durable record of what it verified, trusted like its stored
    /// records and high-water mark (whoever can rewrite the data directory can rewrite those
    /// too); the checks catch a damaged or mismatched state, and an epoch-1 state must name
    /// the anchor's genesis leader.
    pub fn resume(
        anchor: TrustAnchor,
        state: ChainState,
        checkpoint: &SignedRecord,
    ) -> Result<Chain, ResumeError> {
        let record = &checkpoint.record;
        if state.cluster != anchor.cluster.0 || record.cluster != anchor.cluster {
            return Err(ResumeError("it belongs to another cluster"));
        }
        let payload = Checkpoint::decode(&record.payload)
            .ok()
            .filter(|_| record.kind == RecordKind::Checkpoint)
            .filter(|c| Some(c.covers) == record.version.checked_sub(1))
            .ok_or(ResumeError("the stored record is not a checkpoint"))?;
        if payload.chain != state.digest() {
            return Err(ResumeError(
                "the stored chain state is not the one the checkpoint states",
            ));
        }
        if record.version != state.last_version || checkpoint.hash().0 != state.last_hash {
            return Err(ResumeError(
                "the stored record is not the one the state follows",
            ));
        }
        if state.epoch == 1 && state.leader != anchor.genesis_leader {
            return Err(ResumeError("epoch 1 is led by the genesis leader"));
        }
        if record.epoch != state.epoch || checkpoint.signer != state.leader {
            return Err(ResumeError(
                "the checkpoint is not signed by its epoch's leader",
            ));
        }
        let key = VerifyingKey::from_bytes(&checkpoint.signer)
            .map_err(|_| ResumeError("the checkpoint's signer is not a key"))?;
        key.verify_strict(
            &record.signing_bytes(),
            &Signature::from_bytes(&checkpoint.signature),
        )
        .map_err(|_| ResumeError("the checkpoint's signature does not verify"))?;
        Ok(Chain {
            cluster: anchor.cluster,
            epoch: state.epoch,
            leader: state.leader,
            last_version: state.last_version,
            last_hash: RecordHash(state.last_hash),
            roster: Arc::new(state.roster),
            licence_issuer: state.licence_issuer,
        })
    }

    /// [`Chain::resume`] over a node's whole stored chain `records` (version order from
    /// genesis), returning every record as verified like [`Chain::replay`]: the records up to
    /// the checkpoint by their chain of hashes (each `prev` the hash of the one before, from
    /// [`RecordHash::ZERO`], the checkpoint's own `prev` included), the records after it by
    /// full verification. Fails, trusting nothing, if the hashes do not link or a later
    /// record does not verify.
    pub fn resume_replay(
        anchor: TrustAnchor,
        state: ChainState,
        records: &[SignedRecord],
    ) -> Result<(Chain, Vec<Verified<SignedRecord>>), ResumeError> {
        let at = usize::try_from(state.last_version).unwrap_or(usize::MAX);
        let Some(checkpoint) = at.checked_sub(1).and_then(|i| records.get(i)) else {
            return Err(ResumeError("the store holds no record at the checkpoint"));
        };
        let mut chain = Chain::resume(anchor, state, checkpoint)?;
        let mut verified = Vec::with_capacity(records.len());
        let mut prev = RecordHash::ZERO;
        for (index, record) in records[..at].iter().enumerate() {
            if record.record.prev != prev || record.record.version != index as u64 + 1 {
                return Err(ResumeError("the records before it do not link by hash"));
            }
            let hash = record.hash();
            verified.push(Verified {
                value: record.clone(),
                // Never applicable: `Chain::apply` needs the chain's own base.
                proof: Proof::covered(hash),
            });
            prev = hash;
        }
        if prev != chain.last_hash {
            return Err(ResumeError("the records before it do not link by hash"));
        }
        for record in &records[at..] {
            let record = chain
                .verify(record)
                .map_err(|_| ResumeError("a record after it does not verify"))?;
            chain.advance(&record.proof);
            verified.push(record);
        }
        Ok((chain, verified))
    }
}

impl Proof {
    /// The proof of a record covered by a checkpoint: its hash, no effect, and a base no chain
    /// has (version `u64::MAX`), so it never advances a chain.
    fn covered(hash: RecordHash) -> Proof {
        Proof {
            base: Base {
                cluster: ClusterId([0; 16]),
                epoch: 0,
                leader: [0; 32],
                last_version: u64::MAX,
                last_hash: RecordHash::ZERO,
            },
            hash,
            effect: Effect::None,
        }
    }
}
