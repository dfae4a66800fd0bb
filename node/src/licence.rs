//! The cluster licence: who may run how many nodes until when, signed by the issuer.
//!
//! A licence file is JSON of at most [`MAX_LICENCE_FILE`] bytes:
//! `{"customer": "...", "cluster": "<32 hex digits>", "max_nodes": 3,
//! "expires_at_ms": 1893456000000, "signature": "<hex>"}` where the signature is ed25519 by
//! the issuer over `meshward/licence/v2\0` followed by the postcard encoding of
//! ([`LicenceTerms`]). A licence is for one cluster: another cluster refuses it.
//!
//! The issuer's public key is fixed when the cluster is created (`meshward init
//! --licence-issuer KEY`, recorded in the genesis record,
//! [`meshward_crdt::mastered::Genesis`]), so no later leader, follower or config file can swap
//! the trust root. `meshward licence install` (leader only) verifies the file before it stores
//! it as a mastered `Licence` record, whose payload is the postcard encoding of the
//! [`Licence`]; every node checks the stored licence against the genesis issuer again before it
//! relies on it ([`crate::authority::current_licence`]).
//!
//! The vendor's side: `meshward licence keygen` makes an issuer key pair, `meshward licence
//! issue` signs a licence for a cluster id ([`IssuerKey`]).
//!
//! Without a licence a one-node cluster runs standalone: bundles and joins are refused.

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use meshward_crdt::ClusterId;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Largest licence file accepted.
pub const MAX_LICENCE_FILE: usize = 16 * 1024;
/// Longest customer name.
pub const MAX_CUSTOMER: usize = 256;
/// Domain separation of licence signatures (v2: the terms name the cluster).
const DOMAIN: &[u8] = b"meshward/licence/v2\0";
/// Largest issuer key file accepted.
pub const MAX_ISSUER_KEY_FILE: usize = 4096;

/// What a licence grants.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LicenceTerms {
    /// Who it is for.
    pub customer: String,
    /// The cluster it is for: its id, 32 hex digits (`meshward status` shows it).
    pub cluster: String,
    /// The most nodes the cluster may have (the leader included).
    pub max_nodes: u32,
    /// When it ends, unix ms.
    pub expires_at_ms: u64,
}

/// Signed terms, as in the file and the mastered record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Licence {
    /// The terms.
    #[serde(flatten)]
    pub terms: LicenceTerms,
    /// ed25519 signature by the issuer, hex in the file.
    #[serde(with = "hex_sig")]
    pub signature: [u8; 64],
}

/// Why a licence was refused. Nothing was stored.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LicenceError {
    /// The file is too large, not JSON, or lacks a field.
    #[error("not a meshward licence file: {0}")]
    Malformed(String),
    /// The signature is not the cluster's issuer's.
    #[error(
        "the licence is not signed by this cluster's licence issuer (named by `meshward init --licence-issuer`)"
    )]
    BadSignature,
    /// It is another cluster's.
    #[error(
        "the licence is for cluster {licence}, not this cluster ({this}); ask for a licence for {this}"
    )]
    OtherCluster {
        /// The cluster it names.
        licence: String,
        /// This cluster.
        this: String,
    },
    /// The terms cannot be right.
    #[error("the licence is invalid: {0}")]
    Invalid(&'static str),
    /// It ended.
    #[error("the licence expired at {at_ms} (unix ms); ask for a renewed licence")]
    Expired {
        /// When, unix ms.
        at_ms: u64,
    },
}

impl LicenceTerms {
    fn signing_bytes(&self) -> Vec<u8> {
        let mut out = DOMAIN.to_vec();
        out.extend(postcard::to_allocvec(self).unwrap_or_default());
        out
    }

    /// Signs the terms as `issuer` (for the issuer's tooling, tests and `meshward demo`).
    pub fn sign(self, issuer: &SigningKey) -> Licence {
        let signature = issuer.sign(&self.signing_bytes()).to_bytes();
        Licence {
            terms: self,
            signature,
        }
    }
}

impl Licence {
    /// Parses a licence file and verifies it against `issuer`, for `cluster`, at `now_ms`.
    pub fn from_file(
        bytes: &[u8],
        issuer: &[u8; 32],
        cluster: &ClusterId,
        now_ms: u64,
    ) -> Result<Licence, LicenceError> {
        if bytes.len() > MAX_LICENCE_FILE {
            return Err(LicenceError::Malformed(format!(
                "{} bytes; the limit is {MAX_LICENCE_FILE}",
                bytes.len()
            )));
        }
        let licence: Licence =
            serde_json::from_slice(bytes).map_err(|e| LicenceError::Malformed(e.to_string()))?;
        licence.verify(issuer, cluster, now_ms)?;
        Ok(licence)
    }

    /// Checks the signature, then the terms: the cluster, the bounds, the time.
    pub fn verify(
        &self,
        issuer: &[u8; 32],
        cluster: &ClusterId,
        now_ms: u64,
    ) -> Result<(), LicenceError> {
        self.verify_for(issuer, cluster)?;
        self.check_time(now_ms)
    }

    /// Checks the signature, the cluster and the bounds, not the time.
    pub fn verify_for(&self, issuer: &[u8; 32], cluster: &ClusterId) -> Result<(), LicenceError> {
        let key = VerifyingKey::from_bytes(issuer).map_err(|_| LicenceError::BadSignature)?;
        key.verify_strict(
            &self.terms.signing_bytes(),
            &Signature::from_bytes(&self.signature),
        )
        .map_err(|_| LicenceError::BadSignature)?;
        if self.terms.max_nodes == 0 {
            return Err(LicenceError::Invalid("it allows no node"));
        }
        if self.terms.customer.len() > MAX_CUSTOMER {
            return Err(LicenceError::Invalid("the customer name is too long"));
        }
        if !self.terms.cluster.eq_ignore_ascii_case(&cluster.to_hex()) {
            return Err(LicenceError::OtherCluster {
                licence: self.terms.cluster.clone(),
                this: cluster.to_hex(),
            });
        }
        Ok(())
    }

    /// Whether it is still valid at `now_ms`.
    pub fn check_time(&self, now_ms: u64) -> Result<(), LicenceError> {
        if now_ms >= self.terms.expires_at_ms {
            return Err(LicenceError::Expired {
                at_ms: self.terms.expires_at_ms,
            });
        }
        Ok(())
    }

    /// The licence file's text.
    pub fn to_file(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Payload of the mastered `Licence` record.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(&(&self.terms, self.signature.as_slice())).unwrap_or_default()
    }

    /// Decodes a mastered `Licence` payload (verified by the leader that stored it).
    pub fn decode(bytes: &[u8]) -> Option<Licence> {
        let (terms, signature): (LicenceTerms, Vec<u8>) = postcard::from_bytes(bytes).ok()?;
        Some(Licence {
            terms,
            signature: signature.try_into().ok()?,
        })
    }
}

/// The licence issuer's signing key, as `meshward licence keygen` writes it: a file of one
/// line, `meshward-licence-issuer-v1 <64 hex digits of the ed25519 seed>`, mode 0600.
pub struct IssuerKey(SigningKey);

/// The first word of an issuer key file.
const ISSUER_KEY_TAG: &str = "meshward-licence-issuer-v1";

impl IssuerKey {
    /// A new random key.
    pub fn generate() -> IssuerKey {
        IssuerKey(SigningKey::generate(&mut rand::rngs::OsRng))
    }

    /// The public key `init --licence-issuer` takes, 64 hex digits.
    pub fn public_hex(&self) -> String {
        hex::encode(self.0.verifying_key().to_bytes())
    }

    /// The key file's text (a secret).
    pub fn to_file(&self) -> Zeroizing<String> {
        Zeroizing::new(format!(
            "{ISSUER_KEY_TAG} {}\n",
            hex::encode(self.0.to_bytes())
        ))
    }

    /// Parses a key file.
    pub fn from_file(bytes: &[u8]) -> Result<IssuerKey, LicenceError> {
        let bad = || {
            LicenceError::Malformed(format!(
                "not a licence issuer key file (one line: `{ISSUER_KEY_TAG} <64 hex digits>`)"
            ))
        };
        let text = std::str::from_utf8(bytes).map_err(|_| bad())?;
        let hex_seed = text
            .trim()
            .strip_prefix(ISSUER_KEY_TAG)
            .map(str::trim)
            .ok_or_else(bad)?;
        let mut seed = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(hex_seed, seed.as_mut_slice()).map_err(|_| bad())?;
        Ok(IssuerKey(SigningKey::from_bytes(&seed)))
    }

    /// Signs `terms`.
    pub fn sign(&self, terms: LicenceTerms) -> Licence {
        terms.sign(&self.0)
    }
}

impl std::fmt::Debug for IssuerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IssuerKey({})", self.public_hex())
    }
}

/// Parses an issuer public key: 64 hex digits of a usable ed25519 key.
pub fn parse_issuer(text: &str) -> Result<[u8; 32], String> {
    let mut key = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut key).map_err(|_| {
        format!("{text:?} is not 64 hex digits (`meshward licence keygen` prints the key)")
    })?;
    VerifyingKey::from_bytes(&key)
        .ok()
        .filter(|k| !k.is_weak())
        .ok_or_else(|| format!("{text:?} is not a usable ed25519 public key"))?;
    Ok(key)
}

mod hex_sig {
    use serde::{Deserialize as _, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(sig: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(sig))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        let text = String::deserialize(d)?;
        let mut out = [0u8; 64];
        hex::decode_to_slice(text.trim(), &mut out)
            .map_err(|_| serde::de::Error::custom("signature is not 128 hex digits"))?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTER: ClusterId = ClusterId([5; 16]);

    fn terms(max: u32) -> LicenceTerms {
        LicenceTerms {
            customer: "acme".into(),
            cluster: CLUSTER.to_hex(),
            max_nodes: max,
            expires_at_ms: 2_000,
        }
    }

    #[test]
    fn a_signed_licence_round_trips_and_verifies_only_for_its_issuer() {
        let issuer = SigningKey::from_bytes(&[1; 32]);
        let pk = issuer.verifying_key().to_bytes();
        let licence = terms(3).sign(&issuer);
        let file = licence.to_file();
        assert_eq!(
            Licence::from_file(file.as_bytes(), &pk, &CLUSTER, 1_000),
            Ok(licence.clone())
        );
        assert_eq!(Licence::decode(&licence.encode()), Some(licence.clone()));
        let other = SigningKey::from_bytes(&[2; 32]).verifying_key().to_bytes();
        assert_eq!(
            Licence::from_file(file.as_bytes(), &other, &CLUSTER, 1_000),
            Err(LicenceError::BadSignature)
        );
        let tampered = file.replace("\"max_nodes\": 3", "\"max_nodes\": 30");
        assert_ne!(tampered, file);
        assert_eq!(
            Licence::from_file(tampered.as_bytes(), &pk, &CLUSTER, 1_000),
            Err(LicenceError::BadSignature)
        );
        assert_eq!(
            Licence::from_file(file.as_bytes(), &pk, &CLUSTER, 2_000),
            Err(LicenceError::Expired { at_ms: 2_000 })
        );
        let none = terms(0).sign(&issuer).to_file();
        assert!(matches!(
            Licence::from_file(none.as_bytes(), &pk, &CLUSTER, 1_000),
            Err(LicenceError::Invalid(_))
        ));
    }

    #[test]
    fn garbage_licence_files_are_refused() {
        let pk = SigningKey::from_bytes(&[1; 32]).verifying_key().to_bytes();
        let big = vec![b' '; MAX_LICENCE_FILE + 1];
        let cases: [&[u8]; 5] = [b"", b"{}", b"\xff\xfe", b"{\"customer\":1}", &big];
        for bad in cases {
            assert!(matches!(
                Licence::from_file(bad, &pk, &CLUSTER, 0),
                Err(LicenceError::Malformed(_))
            ));
        }
        assert_eq!(Licence::decode(b"garbage"), None);
    }

    #[test]
    fn a_licence_is_for_one_cluster() {
        let issuer = IssuerKey::generate();
        let pk = parse_issuer(&issuer.public_hex()).unwrap();
        let file = issuer.sign(terms(3)).to_file();
        let other = ClusterId([6; 16]);
        assert_eq!(
            Licence::from_file(file.as_bytes(), &pk, &other, 1_000),
            Err(LicenceError::OtherCluster {
                licence: CLUSTER.to_hex(),
                this: other.to_hex()
            })
        );
        // Naming another cluster after signing breaks the signature.
        let moved = file.replace(&CLUSTER.to_hex(), &other.to_hex());
        assert_eq!(
            Licence::from_file(moved.as_bytes(), &pk, &other, 1_000),
            Err(LicenceError::BadSignature)
        );
        assert!(Licence::from_file(file.as_bytes(), &pk, &CLUSTER, 1_000).is_ok());
    }

    #[test]
    fn issuer_key_files_round_trip_and_garbage_is_refused() {
        let key = IssuerKey::generate();
        let again = IssuerKey::from_file(key.to_file().as_bytes()).unwrap();
        assert_eq!(again.public_hex(), key.public_hex());
        assert!(!format!("{key:?}").contains(&key.to_file()[30..]));
        for bad in [
            &b""[..],
            b"meshward-licence-issuer-v1",
            b"meshward-licence-issuer-v1 zz",
            b"other 0000000000000000000000000000000000000000000000000000000000000000",
            b"\xff\xfe",
        ] {
            assert!(IssuerKey::from_file(bad).is_err(), "{bad:?}");
        }
        assert!(parse_issuer(&key.public_hex()).is_ok());
        assert!(parse_issuer("00").is_err());
        assert!(parse_issuer(&"00".repeat(32)).is_err(), "a weak key");
    }
}
