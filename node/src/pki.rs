//! The cluster CA and the certificates it issues (rcgen, ECDSA P-256 keys).
//!
//! `init` creates the CA; its private key never sits in the clear at rest: it travels inside
//! a mastered `SealedSecret` record sealed with the MEK, so any later leader holding the MEK
//! can issue certificates too. The CA issues node certificates (server and client use; the
//! subject alternative name is the node's address) and the one-time client certificate of a
//! joining bundle. The setup endpoint trusts this CA only.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meshward_crdt::ClusterId;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData, SignatureAlgorithm,
};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::mek::Mek;

/// Name of the sealed secret holding the cluster CA.
pub const CA_SECRET: &str = "cluster-ca";
/// MEK seal purpose of the CA key.
const CA_PURPOSE: &[u8] = b"cluster-ca-key";
/// How long the CA is valid.
const CA_VALIDITY: Duration = Duration::from_secs(20 * 365 * 24 * 3600);
/// How long a node certificate is valid.
pub const NODE_CERT_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Clock skew tolerated at the start of a certificate's validity.
const SKEW: Duration = Duration::from_secs(300);
/// Length of an uncompressed P-256 point.
const P256_POINT: usize = 65;

/// Why a certificate could not be made or the CA not opened.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// rcgen refused (bad name, key or parameters).
    #[error("certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// A public key is not an uncompressed P-256 point.
    #[error("the node's TLS public key is not an uncompressed P-256 point")]
    BadPublicKey,
    /// The sealed CA key does not open with this MEK.
    #[error("the cluster CA key does not open with this MEK; is it the cluster's MEK?")]
    WrongMek,
    /// The mastered CA record is missing or malformed.
    #[error("the mastered chain holds no valid cluster CA record")]
    NoCa,
}

/// Payload of a `SealedSecret` mastered record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedSecret {
    /// What it is ([`CA_SECRET`] for the cluster CA).
    pub name: String,
    /// Its public part (for the CA: the certificate, DER).
    pub public: Vec<u8>,
    /// The secret part sealed with `Mek::seal` under a purpose key, bound to the cluster id.
    pub sealed: Vec<u8>,
}

/// The cluster CA, opened: its certificate and private key.
pub struct Ca {
    cluster: ClusterId,
    /// The CA's certificate (DER).
    pub cert: Vec<u8>,
    key: KeyPair,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("cluster", &self.cluster.to_hex())
            .finish_non_exhaustive()
    }
}

/// A freshly made key pair and its certificate.
pub struct Issued {
    /// The certificate (DER).
    pub cert: Vec<u8>,
    /// Its private key (PKCS#8 DER).
    pub key: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Issued(..)")
    }
}

/// A raw P-256 public key given by a joiner.
struct RawP256<'a>(&'a [u8]);

impl PublicKeyData for RawP256<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.0
    }

    fn algorithm(&self) -> &SignatureAlgorithm {
        &PKCS_ECDSA_P256_SHA256
    }
}

impl SealedSecret {
    /// Encodes the payload.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decodes a payload (already bounded by the mastered record's size limit).
    pub fn decode(bytes: &[u8]) -> Option<SealedSecret> {
        postcard::from_bytes(bytes).ok()
    }
}

impl Ca {
    /// A new CA for `cluster`.
    pub fn create(cluster: ClusterId, now: SystemTime) -> Result<Ca, PkiError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = ca_params(cluster);
        params.not_before = at(now - SKEW);
        params.not_after = at(now + CA_VALIDITY);
        let cert = params.self_signed(&key)?.der().to_vec();
        Ok(Ca { cluster, cert, key })
    }

    /// The CA as a sealed secret, its key sealed with `mek` and bound to the cluster id.
    pub fn seal(&self, mek: &Mek) -> SealedSecret {
        let key = Zeroizing::new(self.key.serialize_der());
        SealedSecret {
            name: CA_SECRET.to_string(),
            public: self.cert.clone(),
            sealed: mek.seal(CA_PURPOSE, &self.cluster.0, &key),
        }
    }

    /// Opens the CA from its sealed secret with `mek`.
    pub fn open(cluster: ClusterId, secret: &SealedSecret, mek: &Mek) -> Result<Ca, PkiError> {
        if secret.name != CA_SECRET {
            return Err(PkiError::NoCa);
        }
        let der = mek
            .open(CA_PURPOSE, &cluster.0, &secret.sealed)
            .map_err(|_| PkiError::WrongMek)?;
        let key = KeyPair::try_from(der.as_slice())?;
        Ok(Ca {
            cluster,
            cert: secret.public.clone(),
            key,
        })
    }

    /// A node certificate for the raw P-256 `public_key`, naming `host` (the node's address
    /// without port), for both TLS server and client use.
    pub fn issue_node(
        &self,
        public_key: &[u8],
        host: &str,
        now: SystemTime,
    ) -> Result<Vec<u8>, PkiError> {
        if public_key.len() != P256_POINT || public_key[0] != 4 {
            return Err(PkiError::BadPublicKey);
        }
        let mut params = CertificateParams::new(vec![host.to_string()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, format!("meshward node {host}"));
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = at(now - SKEW);
        params.not_after = at(now + NODE_CERT_VALIDITY);
        self.sign(params, &RawP256(public_key))
    }

    /// A fresh key pair and a client-only certificate for it, valid until `not_after`.
    pub fn issue_client(
        &self,
        name: &str,
        now: SystemTime,
        not_after: SystemTime,
    ) -> Result<Issued, PkiError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = at(now - SKEW);
        params.not_after = at(not_after);
        let cert = self.sign(params, &key)?;
        Ok(Issued {
            cert,
            key: Zeroizing::new(key.serialize_der()),
        })
    }

    fn sign(
        &self,
        params: CertificateParams,
        public_key: &impl PublicKeyData,
    ) -> Result<Vec<u8>, PkiError> {
        // rcgen signs with the issuer's name, key identifier and key: rebuilding the CA's
        // parameters (they depend on the cluster id only) gives the same issuer.
        let issuer = ca_params(self.cluster).self_signed(&self.key)?;
        Ok(params
            .signed_by(public_key, &issuer, &self.key)?
            .der()
            .to_vec())
    }
}

/// A fresh P-256 key pair for a node's TLS identity, and its raw public key.
pub fn node_key() -> Result<(Zeroizing<Vec<u8>>, Vec<u8>), PkiError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    Ok((
        Zeroizing::new(key.serialize_der()),
        key.public_key_raw().to_vec(),
    ))
}

fn ca_params(cluster: ClusterId) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(
        DnType::CommonName,
        format!("meshward cluster CA {}", cluster.to_hex()),
    );
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn at(t: SystemTime) -> time::OffsetDateTime {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn the_sealed_ca_opens_only_with_the_mek_and_issues_certificates() {
        let mek = Mek::generate(&mut rand_chacha::ChaCha8Rng::seed_from_u64(1));
        let cluster = ClusterId([5; 16]);
        let now = SystemTime::now();
        let ca = Ca::create(cluster, now).unwrap();
        let sealed = ca.seal(&mek);
        assert!(
            !sealed
                .sealed
                .windows(16)
                .any(|w| ca.key.serialize_der().windows(16).any(|k| k == w))
        );
        let other = Mek::generate(&mut rand_chacha::ChaCha8Rng::seed_from_u64(2));
        assert!(matches!(
            Ca::open(cluster, &sealed, &other),
            Err(PkiError::WrongMek)
        ));
        assert!(matches!(
            Ca::open(ClusterId([6; 16]), &sealed, &mek),
            Err(PkiError::WrongMek)
        ));
        let opened = Ca::open(
            cluster,
            &SealedSecret::decode(&sealed.encode()).unwrap(),
            &mek,
        )
        .unwrap();
        let (_, public) = node_key().unwrap();
        assert!(
            !opened
                .issue_node(&public, "127.0.0.1", now)
                .unwrap()
                .is_empty()
        );
        assert!(opened.issue_node(&[4; 10], "127.0.0.1", now).is_err());
        assert!(
            opened
                .issue_client("bundle", now, now + Duration::from_secs(60))
                .is_ok()
        );
    }
}
