//! The payloads the chain itself reads: rosters of members, hand-overs and the endorsements
//! of a candidacy. Postcard-encoded, bounded, one encoding per value.

use std::collections::BTreeSet;
use std::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use super::{
    ClusterId, ENDORSEMENT_DOMAIN, MAX_ADDRESS_BYTES, MAX_ROSTER_MEMBERS, PayloadError, RecordHash,
    hex_prefix,
};

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

/// Payload of the `Genesis` record: the first roster, and the licence issuer the cluster
/// trusts for as long as it lives. No later record changes the issuer, so no later leader can
/// swap the trust root of licences.
///
/// Encoded as the pair (roster, issuer). A genesis written before clusters named their issuer
/// is the roster alone; it decodes with no issuer. The two encodings never meet: the pair has
/// at least one byte after the roster, and a roster payload has none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Genesis {
    /// The first members.
    pub roster: Roster,
    /// ed25519 public key of the licence issuer (`None`: licences cannot be installed).
    pub licence_issuer: Option<[u8; 32]>,
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

impl Roster {
    /// Postcard encoding, for a `Genesis` or `Roster` payload.
    pub fn encode(&self) -> Vec<u8> {
        // Invariant: postcard serialising strings, byte arrays and vectors into a Vec cannot
        // fail (it fails only for unsized sequences or a full fixed buffer).
        postcard::to_stdvec(self).expect("postcard encodes a roster into a Vec")
    }

    /// Decodes and checks a roster payload (bounds in the type docs). A `Roster` record's
    /// payload may also carry the frontiers of the writers it removes, which this skips: see
    /// [`super::RosterChange`].
    pub fn decode(bytes: &[u8]) -> Result<Roster, PayloadError> {
        super::RosterChange::decode(bytes).map(|change| change.roster)
    }

    /// The roster, if within the bounds in the type docs.
    pub(super) fn checked(self) -> Result<Roster, PayloadError> {
        let roster = self;
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

impl Genesis {
    /// Postcard encoding, for a `Genesis` payload.
    pub fn encode(&self) -> Vec<u8> {
        // Invariant: as for `Roster::encode`, serialising into a Vec cannot fail.
        postcard::to_stdvec(&(&self.roster, &self.licence_issuer))
            .expect("postcard encodes a genesis into a Vec")
    }

    /// Decodes and checks a genesis payload: the roster's bounds, and an issuer key that is a
    /// usable ed25519 key.
    pub fn decode(bytes: &[u8]) -> Result<Genesis, PayloadError> {
        let (roster, licence_issuer) = match decode_exact::<(Roster, Option<[u8; 32]>)>(bytes) {
            Ok(pair) => pair,
            Err(_) => (decode_exact::<Roster>(bytes)?, None),
        };
        if licence_issuer.is_some_and(|key| !is_usable_key(&key)) {
            return Err(PayloadError::InvalidIssuerKey);
        }
        Ok(Genesis {
            roster: roster.checked()?,
            licence_issuer,
        })
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
