//! Row types of the shared tables, their validation and their encoding.
//!
//! A row is stored in its automerge document as one bytes value (the row's postcard
//! encoding): rows are written whole by their owner and never edited field by field, so one
//! operation per row keeps documents small and fast to apply. Every row is validated when it
//! is written locally and again when it arrives from a peer, with the same bounds.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::id::TableId;
use crate::rotation::{Rotation, RotationError};

/// Longest user name, host name, target or field name, in bytes.
pub const MAX_NAME: usize = 256;
/// Longest event target, in bytes.
pub const MAX_TARGET: usize = 1024;
/// Longest free-text field (event detail, exception value), in bytes.
pub const MAX_TEXT: usize = 16 * 1024;
/// Longest encoded row, in bytes: a bound on what a peer may store in one row.
pub const MAX_ROW: usize = MAX_TEXT + 4 * MAX_NAME + MAX_TARGET + 64;

/// A row was refused. Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowError {
    /// A required field was empty.
    #[error("{field} must not be empty")]
    Empty {
        /// The field.
        field: &'static str,
    },
    /// A field was longer than its bound.
    #[error("{field} is {len} bytes; the limit is {max}")]
    TooLong {
        /// The field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A field held a character it may not hold.
    #[error("{field} contains {what}")]
    BadChar {
        /// The field.
        field: &'static str,
        /// What was wrong ("whitespace", "a control character").
        what: &'static str,
    },
    /// An event kind that does not exist.
    #[error("unknown event kind {0:?}; valid kinds: {kinds}", kinds = EventKind::names())]
    UnknownKind(String),
    /// A key type that does not exist.
    #[error("unknown key type {0:?}; valid types: {types}", types = KeyType::names())]
    UnknownKeyType(String),
    /// First seen after last seen.
    #[error("first seen ({first}) is after last seen ({last})")]
    SeenOrder {
        /// First seen, unix ms.
        first: i64,
        /// Last seen, unix ms.
        last: i64,
    },
    /// Stored or received bytes do not decode as a row of this table.
    #[error("row bytes do not decode as a {table} row")]
    Undecodable {
        /// The table.
        table: TableId,
    },
    /// A credential rotation row was refused.
    #[error(transparent)]
    Rotation(#[from] RotationError),
    /// An audit head that cannot be: no records, or a time before the epoch.
    #[error("{field} is {value}; it must be at least {min}")]
    TooSmall {
        /// The field.
        field: &'static str,
        /// Its value.
        value: i64,
        /// The least value allowed.
        min: i64,
    },
    /// A map row stored under a key that is not the row's own key.
    #[error("row stored under key {stored:?} but its key is {actual:?}")]
    KeyMismatch {
        /// The key it was stored under.
        stored: String,
        /// The key derived from the row.
        actual: String,
    },
}

macro_rules! named_enum {
    ($(#[$m:meta])* $name:ident, $err:ident { $($(#[$vm:meta])* $var:ident => $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
        pub enum $name { $($(#[$vm])* $var),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$var),+];

            /// The name used on the command line and in JSON.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$var => $s),+ }
            }

            fn names() -> String {
                Self::ALL.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = RowError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|k| k.as_str() == s)
                    .ok_or_else(|| RowError::$err(s.to_string()))
            }
        }
    };
}

named_enum!(
    /// What an event records.
    EventKind, UnknownKind {
        /// A user logged in.
        Login => "login",
        /// A user logged out.
        Logout => "logout",
        /// A privileged session started.
        SessionStart => "session-start",
        /// A privileged session ended.
        SessionEnd => "session-end",
        /// Access was refused.
        AccessDenied => "access-denied",
        /// A password was changed.
        PasswordChange => "password-change",
        /// Configuration was changed.
        ConfigChange => "config-change",
        /// A task was run on a device.
        TaskRun => "task-run",
        /// A node joined or left, or changed role.
        Cluster => "cluster",
    }
);

named_enum!(
    /// The type of an observed host key.
    KeyType, UnknownKeyType {
        /// ssh-ed25519
        SshEd25519 => "ssh-ed25519",
        /// ssh-rsa
        SshRsa => "ssh-rsa",
        /// ecdsa-sha2-nistp256
        EcdsaP256 => "ecdsa-sha2-nistp256",
        /// ecdsa-sha2-nistp384
        EcdsaP384 => "ecdsa-sha2-nistp384",
        /// ecdsa-sha2-nistp521
        EcdsaP521 => "ecdsa-sha2-nistp521",
        /// An x509 certificate (TLS, RDP).
        X509 => "x509",
    }
);

/// One entry of the event log.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Event {
    /// When it happened, unix milliseconds (the writer's clock).
    pub at_ms: i64,
    /// What happened.
    pub kind: EventKind,
    /// Who did it.
    pub user: String,
    /// What it was done to (device, account, setting).
    pub target: String,
    /// Free text.
    pub detail: String,
}

/// A host key fingerprint as observed by one node (the writer).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Fingerprint {
    /// The host that presented the key.
    pub host: String,
    /// The key's type.
    pub key_type: KeyType,
    /// The fingerprint, e.g. `SHA256:…`.
    pub fingerprint: String,
    /// First time this writer saw it, unix ms.
    pub first_seen_ms: i64,
    /// Last time this writer saw it, unix ms.
    pub last_seen_ms: i64,
}

/// A per-user exception to replicated user data (for example a local override of a field).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct UserDataException {
    /// The user.
    pub user: String,
    /// The field the exception applies to.
    pub field: String,
    /// The value in force on this writer.
    pub value: String,
    /// When it was set, unix ms.
    pub at_ms: i64,
}

/// The head of a node's local audit chain as that node (the writer) signed it: it has at
/// least `count` records and the hash of record `count` is `hash`. One row per writer, under
/// the key [`AUDIT_HEAD_KEY`], overwritten as the audit grows.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct AuditHead {
    /// Records in the writer's audit chain (its last seq), at least 1.
    pub count: u64,
    /// Hash of record `count`.
    pub hash: [u8; 32],
    /// When the writer wrote this row, unix ms (its clock).
    pub at_ms: i64,
}

/// The map key of the one [`AuditHead`] row of a writer (its segment names the writer).
pub const AUDIT_HEAD_KEY: &str = "head";

/// A row of any shared table.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Row {
    /// An event log entry.
    Event(Event),
    /// An observed fingerprint.
    Fingerprint(Fingerprint),
    /// A user data exception.
    Exception(UserDataException),
    /// A credential rotation.
    Rotation(Rotation),
    /// A node's audit chain head.
    AuditHead(AuditHead),
}

impl Row {
    /// The table this row belongs to.
    pub fn table(&self) -> TableId {
        match self {
            Row::Event(_) => TableId::Events,
            Row::Fingerprint(_) => TableId::Fingerprints,
            Row::Exception(_) => TableId::Exceptions,
            Row::Rotation(_) => TableId::Rotations,
            Row::AuditHead(_) => TableId::AuditHeads,
        }
    }

    /// The row's key in a map table (`None` for log rows).
    pub fn key(&self) -> Option<String> {
        match self {
            Row::Event(_) => None,
            Row::Fingerprint(f) => Some(fingerprint_key(&f.host, f.key_type, &f.fingerprint)),
            Row::Exception(x) => Some(exception_key(&x.user, &x.field)),
            Row::Rotation(r) => Some(crate::rotation::rotation_key(&r.address, r.hlc)),
            Row::AuditHead(_) => Some(AUDIT_HEAD_KEY.to_string()),
        }
    }

    /// Checks every bound of the row.
    pub fn validate(&self) -> Result<(), RowError> {
        match self {
            Row::Event(e) => {
                name("user", &e.user)?;
                text("target", &e.target, MAX_TARGET, false)?;
                if e.target.is_empty() {
                    return Err(RowError::Empty { field: "target" });
                }
                text("detail", &e.detail, MAX_TEXT, true)
            }
            Row::Fingerprint(f) => {
                name("host", &f.host)?;
                name("fingerprint", &f.fingerprint)?;
                if f.first_seen_ms > f.last_seen_ms {
                    return Err(RowError::SeenOrder {
                        first: f.first_seen_ms,
                        last: f.last_seen_ms,
                    });
                }
                Ok(())
            }
            Row::Exception(x) => {
                name("user", &x.user)?;
                name("field", &x.field)?;
                text("value", &x.value, MAX_TEXT, true)
            }
            Row::Rotation(r) => Ok(r.validate()?),
            Row::AuditHead(h) => {
                if h.count == 0 {
                    return Err(RowError::TooSmall {
                        field: "count",
                        value: 0,
                        min: 1,
                    });
                }
                if h.at_ms < 0 {
                    return Err(RowError::TooSmall {
                        field: "at_ms",
                        value: h.at_ms,
                        min: 0,
                    });
                }
                Ok(())
            }
        }
    }

    /// The bytes stored in the document: the inner row's postcard encoding.
    pub fn encode(&self) -> Vec<u8> {
        // Serializing plain structs of strings and integers into a Vec cannot fail.
        let out = match self {
            Row::Event(e) => postcard::to_allocvec(e),
            Row::Fingerprint(f) => postcard::to_allocvec(f),
            Row::Exception(x) => postcard::to_allocvec(x),
            Row::Rotation(r) => postcard::to_allocvec(r),
            Row::AuditHead(h) => postcard::to_allocvec(h),
        };
        out.unwrap_or_default()
    }

    /// Decodes and validates a row of `table` from stored or received bytes.
    pub fn decode(table: TableId, bytes: &[u8]) -> Result<Row, RowError> {
        if bytes.len() > MAX_ROW {
            return Err(RowError::TooLong {
                field: "row",
                len: bytes.len(),
                max: MAX_ROW,
            });
        }
        let bad = |_| RowError::Undecodable { table };
        let row = match table {
            TableId::Events => Row::Event(postcard::from_bytes(bytes).map_err(bad)?),
            TableId::Fingerprints => Row::Fingerprint(postcard::from_bytes(bytes).map_err(bad)?),
            TableId::Exceptions => Row::Exception(postcard::from_bytes(bytes).map_err(bad)?),
            TableId::Rotations => Row::Rotation(postcard::from_bytes(bytes).map_err(bad)?),
            TableId::AuditHeads => Row::AuditHead(postcard::from_bytes(bytes).map_err(bad)?),
        };
        row.validate()?;
        Ok(row)
    }
}

/// The map key of a fingerprint row. Its parts hold no whitespace, so the key is unambiguous.
pub fn fingerprint_key(host: &str, key_type: KeyType, fingerprint: &str) -> String {
    format!("{host} {key_type} {fingerprint}")
}

/// The map key of a user data exception row.
pub fn exception_key(user: &str, field: &str) -> String {
    format!("{user} {field}")
}

/// A short identifier-like field: non-empty, bounded, no whitespace or control characters.
fn name(field: &'static str, value: &str) -> Result<(), RowError> {
    if value.is_empty() {
        return Err(RowError::Empty { field });
    }
    if value.len() > MAX_NAME {
        return Err(RowError::TooLong {
            field,
            len: value.len(),
            max: MAX_NAME,
        });
    }
    if value.chars().any(char::is_whitespace) {
        return Err(RowError::BadChar {
            field,
            what: "whitespace",
        });
    }
    if value.chars().any(char::is_control) {
        return Err(RowError::BadChar {
            field,
            what: "a control character",
        });
    }
    Ok(())
}

/// Free text: bounded, no control characters except (when `multiline`) newline and tab.
pub(crate) fn text(
    field: &'static str,
    value: &str,
    max: usize,
    multiline: bool,
) -> Result<(), RowError> {
    if value.len() > max {
        return Err(RowError::TooLong {
            field,
            len: value.len(),
            max,
        });
    }
    let allowed = |c: char| multiline && (c == '\n' || c == '\t');
    if value.chars().any(|c| c.is_control() && !allowed(c)) {
        return Err(RowError::BadChar {
            field,
            what: "a control character",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Event {
        Event {
            at_ms: 1,
            kind: EventKind::Login,
            user: "alice".into(),
            target: "db-01".into(),
            detail: "ok\nfine".into(),
        }
    }

    #[test]
    fn rows_round_trip_through_their_encoding() {
        let row = Row::Event(event());
        assert_eq!(Row::decode(TableId::Events, &row.encode()), Ok(row));
    }

    #[test]
    fn refuses_empty_oversize_and_control_characters() {
        let mut e = event();
        e.user.clear();
        assert_eq!(
            Row::Event(e).validate(),
            Err(RowError::Empty { field: "user" })
        );
        let mut e = event();
        e.detail = "x".repeat(MAX_TEXT + 1);
        assert!(matches!(
            Row::Event(e).validate(),
            Err(RowError::TooLong {
                field: "detail",
                ..
            })
        ));
        let mut e = event();
        e.target = "a\u{7}b".into();
        assert!(matches!(
            Row::Event(e).validate(),
            Err(RowError::BadChar {
                field: "target",
                ..
            })
        ));
    }

    #[test]
    fn unknown_kinds_name_the_valid_ones() {
        let err = "logon".parse::<EventKind>().unwrap_err().to_string();
        assert!(err.contains("login, logout"), "{err}");
        assert_eq!("ssh-rsa".parse::<KeyType>(), Ok(KeyType::SshRsa));
    }

    #[test]
    fn garbage_bytes_are_an_error_for_every_table() {
        for table in TableId::ALL {
            assert!(Row::decode(table, &[0xff; 40]).is_err());
            assert!(Row::decode(table, &[]).is_err());
        }
    }

    #[test]
    fn audit_heads_round_trip_and_refuse_impossible_heads_and_garbage() {
        let head = AuditHead {
            count: 3,
            hash: [7; 32],
            at_ms: 1_000,
        };
        let row = Row::AuditHead(head.clone());
        assert_eq!(row.key().as_deref(), Some(AUDIT_HEAD_KEY));
        assert_eq!(Row::decode(TableId::AuditHeads, &row.encode()), Ok(row));
        let none = Row::AuditHead(AuditHead {
            count: 0,
            ..head.clone()
        });
        assert_eq!(
            none.validate(),
            Err(RowError::TooSmall {
                field: "count",
                value: 0,
                min: 1
            })
        );
        assert!(
            Row::decode(TableId::AuditHeads, &none.encode())
                .unwrap_err()
                .to_string()
                .contains("count")
        );
        let before = Row::AuditHead(AuditHead { at_ms: -1, ..head });
        assert!(matches!(
            before.validate(),
            Err(RowError::TooSmall { field: "at_ms", .. })
        ));
        // Truncated, oversize and foreign bytes.
        let bytes = Row::AuditHead(AuditHead {
            count: 1,
            hash: [1; 32],
            at_ms: 0,
        })
        .encode();
        assert!(Row::decode(TableId::AuditHeads, &bytes[..bytes.len() - 1]).is_err());
        assert!(matches!(
            Row::decode(TableId::AuditHeads, &vec![1; MAX_ROW + 1]),
            Err(RowError::TooLong { field: "row", .. })
        ));
        assert!(Row::decode(TableId::AuditHeads, &Row::Event(event()).encode()).is_err());
    }

    #[test]
    fn bytes_of_one_table_do_not_pass_as_another() {
        let f = Row::Fingerprint(Fingerprint {
            host: "h".into(),
            key_type: KeyType::SshRsa,
            fingerprint: "SHA256:x".into(),
            first_seen_ms: 5,
            last_seen_ms: 4,
        });
        assert!(matches!(f.validate(), Err(RowError::SeenOrder { .. })));
    }
}
