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
//! [`Roster`] and the licence issuer the cluster trusts for its whole life ([`Genesis`]); no
//! other record may be `Genesis`.
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
//! `next_epoch = epoch + 1` and a `next_leader` that is another member of the current roster
//! (never the current leader itself: [`VerifyError::HandoverToSelf`]). The hand-over record
//! belongs to the *current* epoch (it is the last record of that epoch). Every hand-over
//! carries [`Endorsement`]s from a strict majority of the current roster, the next leader's
//! own among them, so nobody is made leader without its consent and no epoch starts without a
//! majority. Each endorsement signs the [`Candidacy`] tuple `(cluster, next_epoch,
//! next_leader, prev version, prev hash)`: it supports one candidate at one point of the
//! chain, cannot be reused later, and a member gives at most one per epoch (the node persists
//! its vote before answering). It is signed by
//!
//! - the current leader (planned hand-over, `ha demote --to`, `ha failback`), or
//! - `next_leader` itself (unplanned failover, `ha failover`).
//!
//! The one exception is the forced failover of a two-node pair (`ha failover --force`): signed
//! by the candidate, carrying only its own endorsement, marked `forced`.
//!
//! Once the hand-over is applied, the epoch is `next_epoch` and only `next_leader` may sign;
//! records of the old epoch are stale. A minority side of a partition cannot gather a
//! majority, so it cannot start a second leader; nor can a former leader that signs again
//! from an old copy of its data (it would need a majority that already endorsed someone else
//! for that epoch). A `Roster` record replaces the roster, which is what majorities are
//! counted against.
//!
//! # Checkpoints
//!
//! Every [`CHECKPOINT_EVERY`] records the leader signs a `Checkpoint` record ([`Checkpoint`]):
//! the version it covers (the one before it), the digest of the folded state there (the
//! managed view, [`StateDigest`]) and the digest of the chain's own state (epoch, leader,
//! roster, licence issuer). [`Chain::verify`] checks the shape and the chain digest; the store
//! checks the state digest against its own fold before keeping the record. A node that stored
//! a checkpoint keeps the [`ChainState`] after it as its restart point, and at start
//! [`Chain::resume`]s from it: the checkpoint's signature and place are checked, then only the
//! records after it are verified. A sync answer's records up to a checkpoint verify at once
//! ([`Chain::verify_covered`]): the checkpoint's signature vouches, by the hash chain, for the
//! records before it. Records are kept, not pruned (fork choice, superseded review and the
//! folds of users, licence and secrets read them). See the `checkpoint` module's docs.
//!
//! Choosing between two chains that both verify (two sides of a partition that meet, or a
//! leader that signed two continuations) is [`crate::fork`]'s job; this module only refuses
//! the record that does not extend its own chain.
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
use std::sync::Arc;

pub use crate::id::ClusterId;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
pub use error::{
    ApplyError, DecodeError, PayloadError, RebuildError, UnknownRecordKind, VerifyError,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

mod checkpoint;
mod error;
mod frontier;
mod managed;
mod payload;
mod record;

pub use checkpoint::{
    CHECKPOINT_EVERY, ChainState, Checkpoint, MAX_CHAIN_STATE_BYTES, ResumeError, STATE_DOMAIN,
    StateDigest, StateHasher,
};
pub use frontier::{
    FRONTIER_MINOR, Frontier, FrontierSegment, MAX_FRONTIER_SEGMENTS, RosterChange,
};
pub use managed::{
    MANAGED_MAJOR, MANAGED_MINOR, MAX_DOCUMENT, MAX_MANAGED_KEY, MAX_MANAGED_NAME, ManagedChange,
    ManagedError, check_key, check_name,
};
pub use payload::{Candidacy, Endorsement, Genesis, Handover, Member, Roster};
pub use record::{MasteredRecord, RecordHash, RecordKind, SignedRecord};

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

/// A value that passed verification; only this module can build one.
///
/// Derefs to the value. [`Chain::apply`] accepts nothing else, so an unverified record can
/// never advance a chain.
#[derive(Debug)]
pub struct Verified<T> {
    value: T,
    proof: Proof,
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
    /// Shared by clones: a node's copies of its chain (and a simulator's thousand nodes) hold
    /// one roster of up to 1 024 members, not one each.
    roster: Arc<Roster>,
    licence_issuer: Option<[u8; 32]>,
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

    /// A second copy of the verified record with the same proof, e.g. one for the store and
    /// one for the chain, without a second signature check. Applying either still requires
    /// the chain state it was verified against, so at most one copy advances a chain.
    pub fn duplicate(&self) -> Verified<SignedRecord> {
        Verified {
            value: self.value.clone(),
            proof: self.proof.clone(),
        }
    }
}

impl<T> Deref for Verified<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
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
            roster: Arc::new(Roster::default()),
            licence_issuer: None,
        }
    }

    /// Replays stored records, in version order from genesis, onto a chain that trusts
    /// `anchor`. Fails at the first record that does not verify.
    pub fn rebuild<'a>(
        anchor: TrustAnchor,
        records: impl IntoIterator<Item = &'a SignedRecord>,
    ) -> Result<Chain, RebuildError> {
        Chain::new(anchor).extended(records, 0)
    }

    /// This chain advanced by `records`, its next records in order; fails at the first that
    /// does not verify, naming its position as `offset` + its index among `records`.
    pub fn extended<'a>(
        mut self,
        records: impl IntoIterator<Item = &'a SignedRecord>,
        offset: usize,
    ) -> Result<Chain, RebuildError> {
        for (index, record) in records.into_iter().enumerate() {
            let record = self.verify(record).map_err(|source| RebuildError {
                index: offset + index,
                source,
            })?;
            self.advance(&record.proof);
        }
        Ok(self)
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

    /// The current leader's address as the roster names it (its key in hex if the roster
    /// does not list it), for messages to operators.
    pub fn leader_address(&self) -> String {
        self.roster()
            .members
            .iter()
            .find(|m| m.key == self.leader)
            .map(|m| m.address.clone())
            .unwrap_or_else(|| hex::encode(self.leader))
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

    /// The licence issuer named by the genesis record, fixed for the cluster's life; `None`
    /// before genesis or when the cluster was created without one.
    pub fn licence_issuer(&self) -> Option<[u8; 32]> {
        self.licence_issuer
    }

    /// Checks whether `signed` may be applied next; see the module docs for the rules and
    /// [`VerifyError`] for the order of checks. Pure: the chain does not change.
    pub fn verify(&self, signed: &SignedRecord) -> Result<Verified<SignedRecord>, VerifyError> {
        self.verify_with(signed, true)
    }

    /// [`Chain::verify`] of consecutive records (the next ones of this chain) up to the last
    /// `Checkpoint` among them, each signature checked only where it matters: the
    /// checkpoint's, and those of the records that decide who may sign (`Genesis`, `Roster`,
    /// `Handover`, endorsements included). Every other check runs on every record (cluster,
    /// epoch, signer is the epoch's leader, version, `prev` chain, payload). The checkpoint's
    /// signature then vouches for the records before it: its `prev` is the hash of the record
    /// before it, whose hash covers that record's signature and `prev`, and so on back, and a
    /// leader signs a checkpoint only over records it verified. Returns the verified records,
    /// to apply in order, or nothing when there is no checkpoint among them; fails, returning
    /// nothing, at the first record that does not verify (verify them one by one then, to
    /// tell a competing chain from garbage).
    pub fn verify_covered(
        &self,
        records: &[SignedRecord],
    ) -> Result<Vec<Verified<SignedRecord>>, RebuildError> {
        let Some(last) = records
            .iter()
            .rposition(|r| r.record.kind == RecordKind::Checkpoint)
        else {
            return Ok(Vec::new());
        };
        let mut chain = self.clone();
        let mut out = Vec::with_capacity(last + 1);
        for (index, record) in records[..=last].iter().enumerate() {
            let check = index == last
                || matches!(
                    record.record.kind,
                    RecordKind::Genesis | RecordKind::Roster | RecordKind::Handover
                );
            let verified = chain
                .verify_with(record, check)
                .map_err(|source| RebuildError { index, source })?;
            chain.advance(&verified.proof);
            out.push(verified);
        }
        Ok(out)
    }

    /// [`Chain::verify`], the ed25519 signature of the record itself checked only when
    /// `check_signature` (see [`Chain::verify_covered`] for when it may be skipped).
    fn verify_with(
        &self,
        signed: &SignedRecord,
        check_signature: bool,
    ) -> Result<Verified<SignedRecord>, VerifyError> {
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
        if check_signature {
            let key =
                VerifyingKey::from_bytes(&signed.signer).map_err(|_| VerifyError::BadSignature)?;
            key.verify_strict(
                &record.signing_bytes(),
                &Signature::from_bytes(&signed.signature),
            )
            .map_err(|_| VerifyError::BadSignature)?;
        }
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
            RecordKind::Genesis => {
                let genesis = Genesis::decode(&record.payload).map_err(bad_payload)?;
                Effect::Genesis(Arc::new(genesis.roster), genesis.licence_issuer)
            }
            RecordKind::Roster => Effect::Roster(Arc::new(
                Roster::decode(&record.payload).map_err(bad_payload)?,
            )),
            RecordKind::Handover => {
                let handover = Handover::decode(&record.payload).map_err(bad_payload)?;
                self.check_handover(signed.signer, &handover)?;
                Effect::Handover {
                    epoch: handover.next_epoch,
                    leader: handover.next_leader,
                }
            }
            RecordKind::Checkpoint => {
                let checkpoint = Checkpoint::decode(&record.payload).map_err(bad_payload)?;
                if checkpoint.covers != record.version - 1 {
                    return Err(bad_payload(PayloadError::Checkpoint(
                        "a checkpoint covers the version before its own",
                    )));
                }
                if checkpoint.chain != self.own_digest() {
                    return Err(bad_payload(PayloadError::Checkpoint(
                        "a checkpoint states the chain's own state (roster, leader, epoch)",
                    )));
                }
                Effect::Checkpoint(Arc::clone(&self.roster), self.licence_issuer)
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
            Effect::None | Effect::Checkpoint(..) => {}
            Effect::Genesis(roster, licence_issuer) => {
                self.roster = Arc::clone(roster);
                self.licence_issuer = *licence_issuer;
            }
            Effect::Roster(roster) => self.roster = Arc::clone(roster),
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
        if handover.next_leader == self.leader {
            return Err(VerifyError::HandoverToSelf {
                leader: self.leader,
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
            && !planned
            && self.roster.members.len() == 2
            && endorsers.len() == 1
            && endorsers.contains(&signer);
        if !forced_pair {
            if !endorsers.contains(&handover.next_leader) {
                return Err(VerifyError::NotAccepted {
                    next_leader: handover.next_leader,
                });
            }
            if endorsers.len() < self.roster.majority() {
                return Err(VerifyError::NoMajority {
                    got: endorsers.len(),
                    need: self.roster.majority(),
                });
            }
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
#[derive(Debug, Clone)]
struct Proof {
    base: Base,
    hash: RecordHash,
    effect: Effect,
}

/// How a verified record changes the chain besides its version and hash.
#[derive(Debug, Clone)]
enum Effect {
    None,
    Genesis(Arc<Roster>, Option<[u8; 32]>),
    Roster(Arc<Roster>),
    Handover {
        epoch: u64,
        leader: [u8; 32],
    },
    /// A checkpoint: the roster and licence issuer it keeps, for [`ChainState`].
    Checkpoint(Arc<Roster>, Option<[u8; 32]>),
}

/// First 8 hex digits of a key, for logs and messages.
fn hex_prefix(key: &[u8; 32]) -> String {
    hex::encode(&key[..4])
}

#[cfg(test)]
mod tests;
