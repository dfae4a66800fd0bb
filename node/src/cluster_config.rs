//! Mastered cluster configuration: settings only the leader writes and every node applies
//! (local-password policy, fingerprint approval policy, managed settings), and the leader's
//! fingerprint approvals.
//!
//! Each `meshward config set`/`unset` is one `Config` mastered record and each
//! `meshward fingerprint approve` one `FingerprintApproval` record; a node's view is the fold
//! of its verified chain ([`ClusterConfig::from_records`]), so every node that holds the same
//! version sees the same configuration. How a node *enforces* fingerprints stays a local
//! setting (`meshward local set fingerprint.enforcement …`), as in the cluster guide.
//!
//! # Keys
//! | key | values | default |
//! |---|---|---|
//! | `password.min-length` | 8–256 | 12 |
//! | `password.min-classes` | 1–4 (of lower case, upper case, digits, symbols) | 3 |
//! | `password.max-age-days` | 0–3650 (0: never expires) | 0 |
//! | `fingerprint.approval-required` | `true`, `false` | `false` |
//! | `managed.NAME` | any text up to 1 024 bytes | — |

use std::collections::BTreeMap;

use meshward_crdt::KeyType;
use meshward_crdt::mastered::{RecordKind, SignedRecord};
use serde::{Deserialize, Serialize};
use tracing::warn;

/// Longest setting name.
pub const MAX_KEY: usize = 128;

/// Longest setting value.
pub const MAX_VALUE: usize = 1024;

/// Payload of a `Config` record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfigChange {
    /// Sets `key` to `value`.
    Set {
        /// The setting.
        key: String,
        /// Its new value.
        value: String,
    },
    /// Returns `key` to its default.
    Unset {
        /// The setting.
        key: String,
    },
}

/// Payload of a `FingerprintApproval` record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// The host that presents the key.
    pub host: String,
    /// The key's type.
    pub key_type: KeyType,
    /// The fingerprint, e.g. `SHA256:…`.
    pub fingerprint: String,
    /// Approved (`true`) or approval withdrawn (`false`).
    pub approved: bool,
}

/// Payload of a `Password` record: a local user's new password, as an Argon2id PHC string.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordSet {
    /// The user.
    pub user: String,
    /// `$argon2id$…` (salted hash; the password itself never leaves the leader).
    pub hash: String,
    /// When the leader set it, unix ms (0 in records of earlier versions: unknown, so it
    /// never counts as expired).
    pub set_at_ms: u64,
}

impl PasswordSet {
    /// Encodes the payload.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decodes a payload, also one of earlier versions (user and hash only).
    pub fn decode(bytes: &[u8]) -> Option<PasswordSet> {
        if let Ok((set, [])) = postcard::take_from_bytes::<PasswordSet>(bytes) {
            return Some(set);
        }
        let ((user, hash), rest) = postcard::take_from_bytes::<(String, String)>(bytes).ok()?;
        rest.is_empty().then_some(PasswordSet {
            user,
            hash,
            set_at_ms: 0,
        })
    }

    /// Whether it expired at `now_ms` under a maximum age of `max_age_days` (0: never).
    pub fn expired(&self, max_age_days: u32, now_ms: u64) -> bool {
        let max_age_ms = u64::from(max_age_days) * 86_400_000;
        max_age_days > 0 && self.set_at_ms > 0 && now_ms >= self.set_at_ms + max_age_ms
    }
}

/// Why a setting was refused. Nothing was written.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// Not a known key, nor `managed.NAME`.
    #[error(
        "unknown setting {0:?}; known: password.min-length, password.min-classes, \
         password.max-age-days, fingerprint.approval-required, managed.NAME"
    )]
    UnknownKey(String),
    /// The value is out of range or of the wrong type.
    #[error("bad value for {key}: {reason}")]
    BadValue {
        /// The setting.
        key: String,
        /// What is expected.
        reason: String,
    },
}

/// The local-password policy the leader applies to password changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PasswordPolicy {
    /// Fewest characters.
    pub min_length: usize,
    /// Fewest character classes (lower case, upper case, digits, symbols).
    pub min_classes: usize,
    /// Days until a password expires (0: never).
    pub max_age_days: u32,
}

/// Why a password does not meet the policy.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    /// Too short.
    #[error("the password has {got} characters; the cluster's policy asks for at least {min}")]
    TooShort {
        /// Its length.
        got: usize,
        /// The minimum.
        min: usize,
    },
    /// Too few character classes.
    #[error(
        "the password mixes {got} of lower case, upper case, digits and symbols; \
         the cluster's policy asks for at least {min}"
    )]
    TooFewClasses {
        /// Classes used.
        got: usize,
        /// The minimum.
        min: usize,
    },
}

/// A node's view of the mastered configuration at some chain version.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Explicitly set values (defaults are not stored).
    pub settings: BTreeMap<String, String>,
    /// Fingerprint approvals by (host, key type, fingerprint).
    pub approvals: BTreeMap<(String, KeyType, String), bool>,
    /// Local users whose password the leader set: the mastered version of the last change.
    pub passwords: BTreeMap<String, u64>,
    /// Each user's last password record.
    pub password_sets: BTreeMap<String, PasswordSet>,
}

impl ConfigChange {
    /// Encodes the payload.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }
}

impl Approval {
    /// Encodes the payload.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }
}

/// Checks a setting before the leader signs it.
pub fn validate(key: &str, value: &str) -> Result<(), ConfigError> {
    let bad = |reason: &str| ConfigError::BadValue {
        key: key.to_string(),
        reason: reason.to_string(),
    };
    let int = |lo: u64, hi: u64| match value.parse::<u64>() {
        Ok(n) if (lo..=hi).contains(&n) => Ok(()),
        _ => Err(bad(&format!("a whole number from {lo} to {hi}"))),
    };
    match key {
        "password.min-length" => int(8, 256),
        "password.min-classes" => int(1, 4),
        "password.max-age-days" => int(0, 3650),
        "fingerprint.approval-required" => match value {
            "true" | "false" => Ok(()),
            _ => Err(bad("true or false")),
        },
        _ => {
            let name = key
                .strip_prefix("managed.")
                .ok_or_else(|| ConfigError::UnknownKey(key.to_string()))?;
            let good_name = !name.is_empty()
                && key.len() <= MAX_KEY
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            if !good_name {
                return Err(ConfigError::UnknownKey(key.to_string()));
            }
            if value.len() > MAX_VALUE {
                return Err(bad(&format!("at most {MAX_VALUE} bytes")));
            }
            Ok(())
        }
    }
}

/// Checks a key for `unset`/`get`.
pub fn validate_key(key: &str) -> Result<(), ConfigError> {
    match validate(key, "0") {
        Err(ConfigError::UnknownKey(k)) => Err(ConfigError::UnknownKey(k)),
        _ => Ok(()),
    }
}

impl ClusterConfig {
    /// Folds the verified chain's `Config` and `FingerprintApproval` records, in order. A
    /// payload that does not decode (the leader signed it, so it came from a newer or buggy
    /// leader) is skipped with a warning rather than stopping the node.
    pub fn from_records(records: &[SignedRecord]) -> ClusterConfig {
        let mut config = ClusterConfig::default();
        for r in records {
            let payload = &r.record.payload;
            match r.record.kind {
                RecordKind::Config => match postcard::from_bytes::<ConfigChange>(payload) {
                    Ok(ConfigChange::Set { key, value }) if validate(&key, &value).is_ok() => {
                        config.settings.insert(key, value);
                    }
                    Ok(ConfigChange::Unset { key }) => {
                        config.settings.remove(&key);
                    }
                    _ => warn!(version = r.record.version, "config record not understood"),
                },
                RecordKind::FingerprintApproval => {
                    match postcard::from_bytes::<Approval>(payload) {
                        Ok(a) => {
                            config
                                .approvals
                                .insert((a.host, a.key_type, a.fingerprint), a.approved);
                        }
                        Err(_) => warn!(version = r.record.version, "approval not understood"),
                    }
                }
                RecordKind::Password => match PasswordSet::decode(payload) {
                    Some(p) => {
                        config.passwords.insert(p.user.clone(), r.record.version);
                        config.password_sets.insert(p.user.clone(), p);
                    }
                    None => warn!(version = r.record.version, "password record not understood"),
                },
                _ => {}
            }
        }
        config
    }

    /// A setting's value, or its default (`None` for an unset `managed.` key).
    pub fn get(&self, key: &str) -> Option<String> {
        if let Some(v) = self.settings.get(key) {
            return Some(v.clone());
        }
        let default = match key {
            "password.min-length" => "12",
            "password.min-classes" => "3",
            "password.max-age-days" => "0",
            "fingerprint.approval-required" => "false",
            _ => return None,
        };
        Some(default.to_string())
    }

    /// Every known setting with its value (defaults included) and every managed one.
    pub fn list(&self) -> BTreeMap<String, String> {
        let mut all: BTreeMap<String, String> = [
            "password.min-length",
            "password.min-classes",
            "password.max-age-days",
            "fingerprint.approval-required",
        ]
        .into_iter()
        .filter_map(|k| Some((k.to_string(), self.get(k)?)))
        .collect();
        all.extend(self.settings.clone());
        all
    }

    /// Whether the leader approved this host key.
    pub fn approved(&self, host: &str, key_type: KeyType, fingerprint: &str) -> bool {
        self.approvals
            .get(&(host.to_string(), key_type, fingerprint.to_string()))
            .copied()
            .unwrap_or(false)
    }

    /// The password policy in force.
    pub fn password_policy(&self) -> PasswordPolicy {
        let num = |k: &str, d: u64| self.get(k).and_then(|v| v.parse().ok()).unwrap_or(d);
        PasswordPolicy {
            min_length: num("password.min-length", 12) as usize,
            min_classes: num("password.min-classes", 3) as usize,
            max_age_days: num("password.max-age-days", 0) as u32,
        }
    }
}

impl PasswordPolicy {
    /// Checks a new password against the policy.
    pub fn check(&self, password: &str) -> Result<(), PolicyError> {
        let len = password.chars().count();
        if len < self.min_length {
            return Err(PolicyError::TooShort {
                got: len,
                min: self.min_length,
            });
        }
        let classes = [
            password.chars().any(|c| c.is_lowercase()),
            password.chars().any(|c| c.is_uppercase()),
            password.chars().any(|c| c.is_ascii_digit()),
            password.chars().any(|c| !c.is_alphanumeric()),
        ]
        .into_iter()
        .filter(|&b| b)
        .count();
        if classes < self.min_classes {
            return Err(PolicyError::TooFewClasses {
                got: classes,
                min: self.min_classes,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;
    use meshward_crdt::ClusterId;
    use meshward_crdt::mastered::{Chain, TrustAnchor};

    use super::*;

    #[test]
    fn password_records_of_both_versions_decode_and_expire_by_the_leaders_max_age() {
        let set = PasswordSet {
            user: "alice".into(),
            hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
            set_at_ms: 1_000,
        };
        assert_eq!(PasswordSet::decode(&set.encode()), Some(set.clone()));
        let old = postcard::to_allocvec(&(&set.user, &set.hash)).unwrap();
        let legacy = PasswordSet::decode(&old).unwrap();
        assert_eq!((legacy.user.as_str(), legacy.set_at_ms), ("alice", 0));
        for garbage in [&b""[..], b"\x01", &[0xff; 12]] {
            assert_eq!(PasswordSet::decode(garbage), None, "{garbage:?}");
        }
        let day = 86_400_000;
        assert!(!set.expired(0, u64::MAX), "0 days: never");
        assert!(!set.expired(1, 1_000 + day - 1));
        assert!(set.expired(1, 1_000 + day));
        assert!(!legacy.expired(1, u64::MAX), "unknown age: not expired");
    }

    fn chain_of(changes: &[(RecordKind, Vec<u8>)]) -> Vec<SignedRecord> {
        let key = SigningKey::from_bytes(&[1; 32]);
        let mut chain = Chain::new(TrustAnchor {
            cluster: ClusterId([1; 16]),
            genesis_leader: key.verifying_key().to_bytes(),
        });
        let roster = meshward_crdt::mastered::Roster {
            members: vec![meshward_crdt::mastered::Member {
                key: key.verifying_key().to_bytes(),
                address: "a".into(),
            }],
        };
        let mut records = Vec::new();
        for (kind, payload) in
            std::iter::once((RecordKind::Genesis, roster.encode())).chain(changes.iter().cloned())
        {
            let r = chain.sign_next(&key, kind, payload);
            chain.apply(chain.verify(&r).unwrap()).unwrap();
            records.push(r);
        }
        records
    }

    fn set(key: &str, value: &str) -> (RecordKind, Vec<u8>) {
        let change = ConfigChange::Set {
            key: key.into(),
            value: value.into(),
        };
        (RecordKind::Config, change.encode())
    }

    #[test]
    fn the_view_folds_sets_unsets_and_approvals_in_chain_order() {
        let approval = Approval {
            host: "db1".into(),
            key_type: KeyType::SshEd25519,
            fingerprint: "SHA256:x".into(),
            approved: true,
        };
        let records = chain_of(&[
            set("password.min-length", "16"),
            set("managed.banner", "hello world"),
            (
                RecordKind::Config,
                ConfigChange::Unset {
                    key: "managed.banner".into(),
                }
                .encode(),
            ),
            (RecordKind::FingerprintApproval, approval.encode()),
            (RecordKind::Config, b"garbage".to_vec()),
        ]);
        let config = ClusterConfig::from_records(&records);
        assert_eq!(config.get("password.min-length").as_deref(), Some("16"));
        assert_eq!(config.get("password.min-classes").as_deref(), Some("3"));
        assert_eq!(config.get("managed.banner"), None);
        assert!(config.approved("db1", KeyType::SshEd25519, "SHA256:x"));
        assert!(!config.approved("db2", KeyType::SshEd25519, "SHA256:x"));
        assert_eq!(config.password_policy().min_length, 16);
        assert_eq!(config.list().len(), 4);
    }

    #[test]
    fn bad_settings_are_refused_with_what_is_expected() {
        assert!(validate("password.min-length", "8").is_ok());
        assert!(validate("managed.motd-text", "hi").is_ok());
        for (k, v) in [
            ("password.min-length", "7"),
            ("password.min-length", "x"),
            ("password.min-classes", "5"),
            ("fingerprint.approval-required", "yes"),
            ("managed.x", &"v".repeat(MAX_VALUE + 1)),
        ] {
            let err = validate(k, v).unwrap_err();
            assert!(
                matches!(err, ConfigError::BadValue { .. }),
                "{k}={v}: {err}"
            );
        }
        for k in ["password", "nope", "managed.", "managed.a b", "managed.é"] {
            assert!(
                matches!(validate(k, "1"), Err(ConfigError::UnknownKey(_))),
                "{k}"
            );
        }
        assert!(validate_key("password.min-length").is_ok());
        assert!(validate_key("nope").is_err());
    }

    #[test]
    fn the_password_policy_counts_length_and_classes() {
        let policy = ClusterConfig::default().password_policy();
        assert_eq!(
            policy.check("short1A!"),
            Err(PolicyError::TooShort { got: 8, min: 12 })
        );
        assert_eq!(
            policy.check("alllowercaseletters"),
            Err(PolicyError::TooFewClasses { got: 1, min: 3 })
        );
        assert!(policy.check("Correct-horse-battery-9").is_ok());
    }
}
