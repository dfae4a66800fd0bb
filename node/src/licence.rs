//! The cluster licence: who may run how many nodes until when, signed by the issuer.
//!
//! A licence file is JSON of at most [`MAX_LICENCE_FILE`] bytes:
//! `{"customer": "...", "max_nodes": 3, "expires_at_ms": 1893456000000, "signature": "<hex>"}`
//! where the signature is ed25519 by the issuer over `meshward/licence/v1\0` followed by the
//! postcard encoding of ([`LicenceTerms`]). The issuer's public key comes from the node's
//! config (`licence-issuer` in `DATA/meshward.toml`, see [`crate::config`]). `meshward
//! licence install` (leader only) verifies the file before it stores it as a mastered
//! `Licence` record, whose payload is the postcard encoding of the [`Licence`].
//!
//! Without a licence a one-node cluster runs standalone: bundles and joins are refused.

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

/// Largest licence file accepted.
pub const MAX_LICENCE_FILE: usize = 16 * 1024;
/// Longest customer name.
pub const MAX_CUSTOMER: usize = 256;
/// Domain separation of licence signatures.
const DOMAIN: &[u8] = b"meshward/licence/v1\0";

/// What a licence grants.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LicenceTerms {
    /// Who it is for.
    pub customer: String,
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
    /// The signature is not the configured issuer's.
    #[error(
        "the licence is not signed by the configured issuer (`licence-issuer` in meshward.toml)"
    )]
    BadSignature,
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
    /// Parses a licence file and verifies it against `issuer` at `now_ms`.
    pub fn from_file(
        bytes: &[u8],
        issuer: &[u8; 32],
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
        licence.verify(issuer, now_ms)?;
        Ok(licence)
    }

    /// Checks the signature, then the terms.
    pub fn verify(&self, issuer: &[u8; 32], now_ms: u64) -> Result<(), LicenceError> {
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
        self.check_time(now_ms)
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

    fn terms(max: u32) -> LicenceTerms {
        LicenceTerms {
            customer: "acme".into(),
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
            Licence::from_file(file.as_bytes(), &pk, 1_000),
            Ok(licence.clone())
        );
        assert_eq!(Licence::decode(&licence.encode()), Some(licence.clone()));
        let other = SigningKey::from_bytes(&[2; 32]).verifying_key().to_bytes();
        assert_eq!(
            Licence::from_file(file.as_bytes(), &other, 1_000),
            Err(LicenceError::BadSignature)
        );
        let tampered = file.replace("\"max_nodes\": 3", "\"max_nodes\": 30");
        assert_ne!(tampered, file);
        assert_eq!(
            Licence::from_file(tampered.as_bytes(), &pk, 1_000),
            Err(LicenceError::BadSignature)
        );
        assert_eq!(
            Licence::from_file(file.as_bytes(), &pk, 2_000),
            Err(LicenceError::Expired { at_ms: 2_000 })
        );
        let none = terms(0).sign(&issuer).to_file();
        assert!(matches!(
            Licence::from_file(none.as_bytes(), &pk, 1_000),
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
                Licence::from_file(bad, &pk, 0),
                Err(LicenceError::Malformed(_))
            ));
        }
        assert_eq!(Licence::decode(b"garbage"), None);
    }
}
