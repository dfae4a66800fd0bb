//! A mastered record: its kinds, its fields, its signature, and its one wire encoding.

use super::*;

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
    /// A row of a managed table written or deleted; payload is a [`ManagedChange`]. Nodes of
    /// versions before managed tables do not know this kind: upgrade every node before the
    /// first managed write.
    Managed,
    /// A checkpoint of the folded state at the version before it; payload is a
    /// [`Checkpoint`]. Like `Managed`, older nodes do not know it: upgrade every node first.
    Checkpoint,
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
    pub const ALL: [RecordKind; 14] = [
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
        RecordKind::Managed,
        RecordKind::Checkpoint,
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
            RecordKind::Managed => "managed",
            RecordKind::Checkpoint => "checkpoint",
        }
    }

    /// Stable wire byte: the position in [`RecordKind::ALL`] (`Genesis` = 0 … `Password` = 10,
    /// `SealedSecret` = 11, `Managed` = 12, `Checkpoint` = 13).
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
            RecordKind::Managed => 12,
            RecordKind::Checkpoint => 13,
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

    /// The kind of an encoded record ([`SignedRecord::encode`]) without decoding the rest:
    /// the kind code after the format byte and the cluster, epoch, version and prev fields.
    /// `None` when too short or of an unknown kind. Decode before trusting anything else.
    pub fn peek_kind(bytes: &[u8]) -> Option<RecordKind> {
        let code = *bytes.get(1 + 16 + 8 + 8 + 32)?;
        RecordKind::from_code(code)
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
