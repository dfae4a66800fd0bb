//! Client certificates of the admin API: their serials, the mastered revocation list, and the
//! node-local file of external CAs. Pure, but for the bounded read of that file.
//!
//! # Revocation
//! `meshward cert revoke SERIAL` (leader only) writes a mastered `revocation` record with
//! subject byte [`SUBJECT_CERT`] (the users view skips it; see [`crate::grants`]): the format
//! byte, the subject byte, then the postcard-encoded serial. [`Revoked::fold`] replays them in
//! chain order. A serial is revoked **whichever CA issued it** (cluster or external): the
//! cluster CA's serials are 20 bytes derived from a fresh key, so they never meet another
//! CA's; an external CA that reuses another's serials loses both certificates, never neither.
//!
//! # External CAs
//! `admin-client-ca = "PATH"` in `DATA/meshward.toml` names a PEM file of CA certificates
//! (at most [`MAX_CA_FILE`] bytes, [`MAX_CA_CERTS`] certificates). Each one becomes a trust
//! anchor for admin API client certificates, beside the cluster CA. A file with anything else
//! (no certificate, a key, a certificate that is not a CA, bytes that are not PEM) is refused
//! and the node does not start.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use meshward_crdt::mastered::{RecordKind, SignedRecord, Verified};
use serde::{Deserialize, Serialize};

use crate::grants::{FoldError, PAYLOAD_FORMAT, ParseError, PayloadError};

/// Subject byte of a certificate revocation.
pub const SUBJECT_CERT: u8 = 3;
/// Longest serial, in bytes (RFC 5280, 4.1.2.2).
pub const MAX_SERIAL: usize = 20;
/// Most revoked serials a cluster may hold.
pub const MAX_REVOKED: usize = 10_000;
/// Largest external CA file, in bytes.
pub const MAX_CA_FILE: u64 = 256 * 1024;
/// Most certificates in the external CA file.
pub const MAX_CA_CERTS: usize = 32;

/// A certificate serial number: its big-endian value without leading zero bytes (the value 0
/// is one zero byte). Written as lowercase hex.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Serial(Vec<u8>);

/// The revoked serials held by the mastered chain, each with the version that revoked it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Revoked {
    serials: BTreeMap<Serial, u64>,
}

/// A revocation does not fit the current list. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevokeError {
    /// The serial is revoked already.
    #[error("certificate serial {0} is already revoked (mastered version {1})")]
    Already(Serial, u64),
    /// [`MAX_REVOKED`] serials are revoked.
    #[error("the cluster already holds {MAX_REVOKED} revoked serials, the limit")]
    Full,
}

/// The external CA file was refused. The node does not start.
#[derive(Debug, thiserror::Error)]
pub enum CaFileError {
    /// It could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// It is larger than [`MAX_CA_FILE`].
    #[error("{path} is larger than {MAX_CA_FILE} bytes")]
    TooLarge {
        /// The file.
        path: String,
    },
    /// Its content is not what it must be.
    #[error("{path}: {reason}; it must hold PEM CA certificates only")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

#[derive(Serialize, Deserialize)]
struct Body {
    serial: Vec<u8>,
}

impl Serial {
    /// The serial of a certificate, from its DER-encoded integer (x509-parser's
    /// `raw_serial`).
    pub fn from_der_integer(raw: &[u8]) -> Serial {
        let start = raw.iter().position(|&b| b != 0).unwrap_or(raw.len());
        match &raw[start..] {
            [] => Serial(vec![0]),
            value => Serial(value.to_vec()),
        }
    }

    /// The serial of a DER certificate; `None` if it does not parse.
    pub fn of_certificate(der: &[u8]) -> Option<Serial> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        Some(Serial::from_der_integer(cert.raw_serial()))
    }

    /// The record kind and payload that revoke this serial.
    pub fn revocation(&self) -> (RecordKind, Vec<u8>) {
        let mut payload = vec![PAYLOAD_FORMAT, SUBJECT_CERT];
        // Serializing a short byte string into a Vec cannot fail.
        payload.extend(
            postcard::to_allocvec(&Body {
                serial: self.0.clone(),
            })
            .unwrap_or_default(),
        );
        (RecordKind::Revocation, payload)
    }

    /// Decodes a record's payload. `Ok(None)`: not a certificate revocation. Never panics;
    /// bounded by [`crate::grants::MAX_PAYLOAD`].
    pub fn decode_revocation(
        kind: RecordKind,
        payload: &[u8],
    ) -> Result<Option<Serial>, PayloadError> {
        if kind != RecordKind::Revocation {
            return Ok(None);
        }
        if payload.len() > crate::grants::MAX_PAYLOAD {
            return Err(PayloadError::TooLarge { len: payload.len() });
        }
        match payload {
            [format, SUBJECT_CERT, body @ ..] if *format == PAYLOAD_FORMAT => {
                let body: Body = crate::grants::decode_body(body)?;
                let serial = Serial::from_der_integer(&body.serial);
                if body.serial.is_empty() || serial.0.len() > MAX_SERIAL {
                    return Err(PayloadError::Malformed(format!(
                        "a serial of {} bytes",
                        body.serial.len()
                    )));
                }
                Ok(Some(serial))
            }
            [format, SUBJECT_CERT, ..] => Err(PayloadError::Format(*format)),
            _ => Ok(None),
        }
    }
}

impl FromStr for Serial {
    type Err = ParseError;

    /// Hex digits, optionally in `:`-separated pairs as `openssl x509 -serial` or browsers
    /// show them; leading zeros are ignored.
    fn from_str(s: &str) -> Result<Serial, ParseError> {
        let invalid = |reason: String| ParseError::Invalid {
            what: "certificate serial",
            value: s.chars().take(80).collect(),
            reason,
        };
        let digits: String = s.chars().filter(|&c| c != ':').collect();
        if digits.is_empty() {
            return Err(invalid("it is empty; give the serial in hex".into()));
        }
        if digits.len() > 2 * (MAX_SERIAL + 1) {
            return Err(invalid(format!("longer than {MAX_SERIAL} bytes")));
        }
        if let Some(c) = digits.chars().find(|c| !c.is_ascii_hexdigit()) {
            return Err(invalid(format!("{c:?} is not a hex digit")));
        }
        let padded = if digits.len() % 2 == 1 {
            format!("0{digits}")
        } else {
            digits
        };
        let bytes = hex::decode(&padded).map_err(|e| invalid(e.to_string()))?;
        let serial = Serial::from_der_integer(&bytes);
        if serial.0.len() > MAX_SERIAL {
            return Err(invalid(format!("longer than {MAX_SERIAL} bytes")));
        }
        Ok(serial)
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0))
    }
}

impl Revoked {
    /// Folds verified mastered records, in chain order, into the list. A revocation that
    /// does not fit ([`Revoked::check`]) is skipped, as the leader would have refused it.
    pub fn fold<'a>(
        records: impl IntoIterator<Item = &'a Verified<SignedRecord>>,
    ) -> Result<Revoked, FoldError> {
        let mut revoked = Revoked::default();
        for record in records {
            let record = &record.record;
            let serial =
                Serial::decode_revocation(record.kind, &record.payload).map_err(|source| {
                    FoldError {
                        version: record.version,
                        source,
                    }
                })?;
            if let Some(serial) = serial
                && revoked.check(&serial).is_ok()
            {
                revoked.serials.insert(serial, record.version);
            }
        }
        Ok(revoked)
    }

    /// Whether revoking `serial` fits; the leader checks this before writing it.
    pub fn check(&self, serial: &Serial) -> Result<(), RevokeError> {
        if let Some(&version) = self.serials.get(serial) {
            return Err(RevokeError::Already(serial.clone(), version));
        }
        if self.serials.len() >= MAX_REVOKED {
            return Err(RevokeError::Full);
        }
        Ok(())
    }

    /// The mastered version that revoked `serial`, if it is revoked.
    pub fn revoked_at(&self, serial: &Serial) -> Option<u64> {
        self.serials.get(serial).copied()
    }

    /// Every revoked serial with the version that revoked it, in serial order.
    pub fn iter(&self) -> impl Iterator<Item = (&Serial, u64)> {
        self.serials.iter().map(|(s, v)| (s, *v))
    }

    /// A list of `serials`, as if version 1 revoked them (tests of what consults the list).
    #[cfg(test)]
    pub(crate) fn of(serials: impl IntoIterator<Item = Serial>) -> Revoked {
        Revoked {
            serials: serials.into_iter().map(|s| (s, 1)).collect(),
        }
    }
}

/// Reads the external CA file `path` (bounded by [`MAX_CA_FILE`]) and returns its CA
/// certificates (DER), checked by [`parse_ca_pem`].
pub fn load_ca_file(path: &Path) -> Result<Vec<Vec<u8>>, CaFileError> {
    let shown = path.display().to_string();
    let read = |source| CaFileError::Read {
        path: shown.clone(),
        source,
    };
    let Some(bytes) = crate::disk::read_at_most(path, MAX_CA_FILE).map_err(read)? else {
        return Err(CaFileError::TooLarge { path: shown });
    };
    parse_ca_pem(&bytes).map_err(|reason| CaFileError::Invalid {
        path: shown,
        reason,
    })
}

/// The CA certificates (DER) of PEM text: one to [`MAX_CA_CERTS`] `CERTIFICATE` blocks, each
/// an X.509 certificate whose basic constraints say it is a CA, and nothing else. `Err` says
/// what is wrong.
pub fn parse_ca_pem(bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let blocks = pem::parse_many(bytes).map_err(|e| format!("not PEM: {e}"))?;
    if blocks.is_empty() {
        return Err("no PEM block".into());
    }
    if blocks.len() > MAX_CA_CERTS {
        return Err(format!(
            "{} blocks; at most {MAX_CA_CERTS} certificates",
            blocks.len()
        ));
    }
    let text = String::from_utf8_lossy(bytes);
    if text.matches("-----BEGIN ").count() != blocks.len() {
        return Err("a PEM block does not parse".into());
    }
    blocks
        .into_iter()
        .enumerate()
        .map(|(i, block)| {
            let n = i + 1;
            if block.tag() != "CERTIFICATE" {
                return Err(format!("block {n} is a {}, not a CERTIFICATE", block.tag()));
            }
            let (rest, cert) = x509_parser::parse_x509_certificate(block.contents())
                .map_err(|e| format!("certificate {n} does not parse: {e}"))?;
            if !rest.is_empty() {
                return Err(format!("certificate {n} has trailing bytes"));
            }
            if !cert.is_ca() {
                return Err(format!(
                    "certificate {n} ({}) is not a CA certificate",
                    cert.subject()
                ));
            }
            Ok(block.into_contents())
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use ed25519_dalek::SigningKey;
    use meshward_crdt::ClusterId;
    use meshward_crdt::mastered::{Chain, Member, Roster, TrustAnchor};
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn serials_parse_from_hex_with_or_without_colons_and_leading_zeros() {
        let s: Serial = "0A:1b:ff".parse().unwrap();
        assert_eq!(s.to_string(), "0a1bff");
        assert_eq!("000a1bff".parse::<Serial>().unwrap(), s);
        assert_eq!("a1bff".parse::<Serial>().unwrap(), s);
        assert_eq!("0".parse::<Serial>().unwrap().to_string(), "00");
        assert_eq!(Serial::from_der_integer(&[0, 0x0a, 0x1b, 0xff]), s);
        assert!("ff".repeat(MAX_SERIAL).parse::<Serial>().is_ok());
        assert!(
            format!("00{}", "ff".repeat(MAX_SERIAL))
                .parse::<Serial>()
                .is_ok()
        );
    }

    #[test]
    fn bad_serials_are_refused_with_the_reason() {
        for (text, says) in [
            ("", "empty"),
            (":::", "empty"),
            ("12 34", "' ' is not a hex digit"),
            ("0x12", "'x' is not a hex digit"),
            ("zz", "'z' is not a hex digit"),
            ("é1", "'é' is not a hex digit"),
            (&"ff".repeat(MAX_SERIAL + 1), "longer than 20 bytes"),
            (&"1".repeat(10_000), "longer than 20 bytes"),
        ] {
            let err = text.parse::<Serial>().unwrap_err().to_string();
            assert!(err.contains(says), "{text:?}: {err}");
            assert!(err.contains("certificate serial"), "{err}");
        }
    }

    #[test]
    fn revocation_payloads_round_trip_and_bad_ones_are_refused() {
        let serial: Serial = "7f0102".parse().unwrap();
        let (kind, payload) = serial.revocation();
        assert_eq!(kind, RecordKind::Revocation);
        assert_eq!(
            Serial::decode_revocation(kind, &payload),
            Ok(Some(serial.clone()))
        );
        // Users' revocations and other kinds are not certificate revocations.
        let (kind, user) = crate::grants::UserChange::Delete("bob".parse().unwrap()).encode();
        assert_eq!(Serial::decode_revocation(kind, &user), Ok(None));
        assert_eq!(
            Serial::decode_revocation(RecordKind::User, &payload),
            Ok(None)
        );
        // ...and a certificate revocation is no user change.
        assert_eq!(crate::grants::UserChange::decode(kind, &payload), Ok(None));
        let mut trailing = payload.clone();
        trailing.push(0);
        assert!(Serial::decode_revocation(kind, &trailing).is_err());
        for len in 2..payload.len() {
            assert!(
                Serial::decode_revocation(kind, &payload[..len]).is_err(),
                "{len}"
            );
        }
        assert_eq!(
            Serial::decode_revocation(kind, &[9, SUBJECT_CERT, 1, 1]),
            Err(PayloadError::Format(9))
        );
        let mut empty = vec![PAYLOAD_FORMAT, SUBJECT_CERT];
        empty.extend(postcard::to_allocvec(&Body { serial: vec![] }).unwrap());
        assert!(Serial::decode_revocation(kind, &empty).is_err());
        let mut long = vec![PAYLOAD_FORMAT, SUBJECT_CERT];
        long.extend(
            postcard::to_allocvec(&Body {
                serial: vec![1; 21],
            })
            .unwrap(),
        );
        assert!(Serial::decode_revocation(kind, &long).is_err());
    }

    /// A verified chain: a genesis record, then one record per `(kind, payload)`.
    pub(crate) fn verified(records: Vec<(RecordKind, Vec<u8>)>) -> Vec<Verified<SignedRecord>> {
        let leader = SigningKey::from_bytes(&[1; 32]);
        let mut chain = Chain::new(TrustAnchor {
            cluster: ClusterId([2; 16]),
            genesis_leader: leader.verifying_key().to_bytes(),
        });
        let roster = Roster {
            members: vec![Member {
                key: leader.verifying_key().to_bytes(),
                address: "a".into(),
            }],
        };
        let genesis = (RecordKind::Genesis, roster.encode());
        let mut verified = Vec::new();
        for (kind, payload) in std::iter::once(genesis).chain(records) {
            let record = chain.sign_next(&leader, kind, payload);
            verified.push(chain.verify(&record).unwrap());
            chain.apply(chain.verify(&record).unwrap()).unwrap();
        }
        verified
    }

    #[test]
    fn the_list_is_folded_from_verified_records_and_refuses_a_second_revocation() {
        let (a, b): (Serial, Serial) = ("0a".parse().unwrap(), "0b".parse().unwrap());
        let mut records = vec![
            a.revocation(),
            crate::grants::UserChange::Create("bob".parse().unwrap()).encode(),
            a.revocation(), // skipped: already revoked
            b.revocation(),
        ];
        let revoked = Revoked::fold(&verified(records.clone())).unwrap();
        assert_eq!(revoked.revoked_at(&a), Some(2));
        assert_eq!(revoked.revoked_at(&b), Some(5));
        assert_eq!(revoked.iter().count(), 2);
        assert_eq!(revoked.check(&a), Err(RevokeError::Already(a.clone(), 2)));
        assert_eq!(revoked.check(&"0c".parse().unwrap()), Ok(()));
        // A certificate revocation that does not decode is an error naming its version.
        records.push((
            RecordKind::Revocation,
            vec![PAYLOAD_FORMAT, SUBJECT_CERT, 0xff],
        ));
        assert_eq!(Revoked::fold(&verified(records)).unwrap_err().version, 6);
    }

    fn pem_of(tag: &str, der: &[u8]) -> String {
        pem::encode(&pem::Pem::new(tag, der.to_vec()))
    }

    fn ca_and_leaf() -> (rcgen::Certificate, rcgen::Certificate) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .signed_by(&leaf_key, &ca, &key)
            .unwrap();
        (ca, leaf)
    }

    #[test]
    fn the_external_ca_file_holds_ca_certificates_only() {
        let (ca, leaf) = ca_and_leaf();
        let good = pem_of("CERTIFICATE", ca.der());
        assert_eq!(
            parse_ca_pem(format!("{good}{good}").as_bytes()).unwrap(),
            vec![ca.der().to_vec(), ca.der().to_vec()]
        );
        let cases = [
            (String::new(), "no PEM block"),
            ("garbage \u{0} text".into(), "no PEM block"),
            (
                pem_of("PRIVATE KEY", &[1, 2, 3]),
                "a PRIVATE KEY, not a CERTIFICATE",
            ),
            (
                pem_of("CERTIFICATE", &[0x30, 3, 1, 2, 3]),
                "certificate 1 does not parse",
            ),
            (pem_of("CERTIFICATE", leaf.der()), "not a CA certificate"),
            (
                format!("{good}-----BEGIN CERTIFICATE-----\nAAAA"),
                "does not parse",
            ),
            (good.repeat(MAX_CA_CERTS + 1), "at most 32 certificates"),
        ];
        for (text, says) in cases {
            let err = parse_ca_pem(text.as_bytes()).unwrap_err();
            assert!(err.contains(says), "{text:?}: {err}");
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ca.pem");
        std::fs::write(&file, &good).unwrap();
        assert_eq!(load_ca_file(&file).unwrap().len(), 1);
        std::fs::write(&file, vec![b'a'; MAX_CA_FILE as usize + 1]).unwrap();
        let err = load_ca_file(&file).unwrap_err().to_string();
        assert!(err.contains("larger than 262144 bytes"), "{err}");
        std::fs::write(&file, pem_of("CERTIFICATE", leaf.der())).unwrap();
        let err = load_ca_file(&file).unwrap_err().to_string();
        assert!(
            err.contains("ca.pem") && err.contains("must hold PEM CA certificates only"),
            "{err}"
        );
        let err = load_ca_file(&dir.path().join("missing.pem"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.pem"), "{err}");
    }

    proptest! {
        #[test]
        fn garbage_never_panics_the_parsers(
            text in ".{0,60}",
            payload in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            let _ = text.parse::<Serial>();
            let _ = Serial::decode_revocation(RecordKind::Revocation, &payload);
            let _ = parse_ca_pem(&payload);
            let _ = parse_ca_pem(text.as_bytes());
        }
    }
}
