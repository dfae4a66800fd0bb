//! The payload of a `Managed` record: one row of a managed table, `NS/TABLE/KEY` → a JSON
//! document, or its deletion. Managed tables are the cluster's "Manage section": mastered
//! data the leader writes and every node reads.
//!
//! # Encoding
//! Two version bytes, major then minor ([`MANAGED_MAJOR`], [`MANAGED_MINOR`]), then the
//! postcard body `(namespace, table, key, document)` (`document` `None`: the row is deleted).
//! The rules are those of the node's wire messages: another major is refused; a newer minor
//! may append optional fields after the body, which this version ignores; a payload of this
//! minor or an older one has no trailing bytes. So a later version can add fields without
//! making this one stop folding the chain.
//!
//! # Bounds
//! Names are checked here ([`check_name`], [`check_key`]), the document's size too
//! ([`MAX_DOCUMENT`]); that the document is JSON is the node's check (this crate parses no
//! JSON), made by the leader before signing and again when folding.

use serde::{Deserialize, Serialize};

/// Major version of the payload: another one is refused.
pub const MANAGED_MAJOR: u8 = 1;
/// Minor version: a newer one may append fields, ignored here.
pub const MANAGED_MINOR: u8 = 0;
/// Longest namespace or table name, in bytes.
pub const MAX_MANAGED_NAME: usize = 63;
/// Longest row key, in bytes.
pub const MAX_MANAGED_KEY: usize = 255;
/// Largest document (its JSON text), in bytes. Small enough that a follower can forward the
/// write to the leader in one message.
pub const MAX_DOCUMENT: usize = 16 * 1024;

/// A managed row written or deleted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagedChange {
    /// The namespace ([`check_name`]).
    pub namespace: String,
    /// The table in the namespace ([`check_name`]).
    pub table: String,
    /// The row key ([`check_key`]).
    pub key: String,
    /// The document's JSON text (at most [`MAX_DOCUMENT`] bytes); `None`: the row is deleted.
    pub document: Option<String>,
}

/// A managed payload or name was refused. Nothing was applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManagedError {
    /// Shorter than its version bytes.
    #[error("managed payload has no version bytes")]
    NoVersion,
    /// Another major version.
    #[error("managed payload of major version {got}; this node reads major {MANAGED_MAJOR}")]
    Major {
        /// The major version it carries.
        got: u8,
    },
    /// The body does not decode.
    #[error("malformed managed payload: {0}")]
    Malformed(String),
    /// Bytes after the body in a payload of a minor version this node knows.
    #[error("managed payload has {0} trailing bytes")]
    Trailing(usize),
    /// A name or key is empty, too long or holds a character outside its set.
    #[error("{field} {value:?} is not valid: {reason}")]
    Name {
        /// `namespace`, `table` or `key`.
        field: &'static str,
        /// The refused text (at most 80 characters of it).
        value: String,
        /// What is allowed.
        reason: String,
    },
    /// The document is larger than [`MAX_DOCUMENT`].
    #[error("the document is {len} bytes; the limit is {MAX_DOCUMENT}")]
    TooLarge {
        /// Its length.
        len: usize,
    },
}

impl ManagedChange {
    /// The payload: version bytes, then the postcard body.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![MANAGED_MAJOR, MANAGED_MINOR];
        // Invariant: postcard serialising strings into a Vec cannot fail.
        out.extend(postcard::to_stdvec(self).expect("postcard encodes strings into a Vec"));
        out
    }

    /// Decodes and checks a payload (module docs). Never panics.
    pub fn decode(bytes: &[u8]) -> Result<ManagedChange, ManagedError> {
        let [major, minor, body @ ..] = bytes else {
            return Err(ManagedError::NoVersion);
        };
        if *major != MANAGED_MAJOR {
            return Err(ManagedError::Major { got: *major });
        }
        let (change, rest) = postcard::take_from_bytes::<ManagedChange>(body)
            .map_err(|e| ManagedError::Malformed(e.to_string()))?;
        let newer = *minor > MANAGED_MINOR;
        if !newer && !rest.is_empty() {
            return Err(ManagedError::Trailing(rest.len()));
        }
        change.check()?;
        Ok(change)
    }

    /// Whether names, key and document size are within bounds.
    pub fn check(&self) -> Result<(), ManagedError> {
        check_name("namespace", &self.namespace)?;
        check_name("table", &self.table)?;
        check_key(&self.key)?;
        if let Some(doc) = &self.document
            && doc.len() > MAX_DOCUMENT
        {
            return Err(ManagedError::TooLarge { len: doc.len() });
        }
        Ok(())
    }
}

/// Checks a namespace or table name: 1 to [`MAX_MANAGED_NAME`] bytes of lowercase ASCII
/// letters, digits, `_` and `-`, starting with a letter or a digit (as grants name
/// namespaces).
pub fn check_name(field: &'static str, name: &str) -> Result<(), ManagedError> {
    check(
        field,
        name,
        MAX_MANAGED_NAME,
        |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-',
        "lowercase letters, digits, '_' and '-', starting with a letter or a digit",
    )
}

/// Checks a row key: 1 to [`MAX_MANAGED_KEY`] bytes of ASCII letters, digits, `.`, `_`, `-`,
/// `:` and `@`, starting with a letter or a digit.
pub fn check_key(key: &str) -> Result<(), ManagedError> {
    check(
        "key",
        key,
        MAX_MANAGED_KEY,
        |c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '@'),
        "letters, digits, '.', '_', '-', ':' and '@', starting with a letter or a digit",
    )
}

fn check(
    field: &'static str,
    s: &str,
    max: usize,
    allowed: impl Fn(char) -> bool,
    what: &str,
) -> Result<(), ManagedError> {
    let refuse = |reason: String| ManagedError::Name {
        field,
        value: s.chars().take(80).collect(),
        reason,
    };
    if s.is_empty() {
        return Err(refuse("it is empty".into()));
    }
    if s.len() > max {
        return Err(refuse(format!("longer than {max} bytes")));
    }
    if !s.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(refuse(format!("use {what}")));
    }
    if let Some(c) = s.chars().find(|&c| !allowed(c)) {
        return Err(refuse(format!("{c:?} is not allowed; use {what}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn row(doc: Option<&str>) -> ManagedChange {
        ManagedChange {
            namespace: "ns1".into(),
            table: "hosts".into(),
            key: "db-01.example:22".into(),
            document: doc.map(str::to_string),
        }
    }

    #[test]
    fn a_row_and_its_deletion_round_trip() {
        for change in [row(Some(r#"{"port":22}"#)), row(None)] {
            assert_eq!(ManagedChange::decode(&change.encode()), Ok(change));
        }
    }

    #[test]
    fn newer_minor_appends_are_ignored_other_majors_and_trailing_bytes_refused() {
        let mut newer = row(Some("1")).encode();
        newer[1] = MANAGED_MINOR + 1;
        newer.extend([7, 7, 7]);
        assert_eq!(ManagedChange::decode(&newer), Ok(row(Some("1"))));
        let mut trailing = row(Some("1")).encode();
        trailing.push(0);
        assert_eq!(
            ManagedChange::decode(&trailing),
            Err(ManagedError::Trailing(1))
        );
        let mut major = row(None).encode();
        major[0] = 2;
        assert_eq!(
            ManagedChange::decode(&major),
            Err(ManagedError::Major { got: 2 })
        );
        assert_eq!(ManagedChange::decode(&[1]), Err(ManagedError::NoVersion));
    }

    #[test]
    fn bad_names_keys_and_sizes_are_refused_naming_the_field() {
        let field_of = |c: ManagedChange| match ManagedChange::decode(&c.encode()) {
            Err(ManagedError::Name { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        let mut c = row(None);
        c.namespace = "NS".into();
        assert_eq!(field_of(c), "namespace");
        let mut c = row(None);
        c.table = "t".repeat(MAX_MANAGED_NAME + 1);
        assert_eq!(field_of(c), "table");
        let mut c = row(None);
        c.table = "-x".into();
        assert_eq!(field_of(c), "table");
        let mut c = row(None);
        c.key = "a/b".into();
        assert_eq!(field_of(c), "key");
        let mut c = row(None);
        c.key = String::new();
        assert_eq!(field_of(c), "key");
        let big = row(Some(&"1".repeat(MAX_DOCUMENT + 1)));
        assert_eq!(
            ManagedChange::decode(&big.encode()),
            Err(ManagedError::TooLarge {
                len: MAX_DOCUMENT + 1
            })
        );
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(c) = ManagedChange::decode(&bytes) {
                prop_assert!(c.check().is_ok());
            }
        }
    }
}
