//! The version of the node's messages on the wire (gossip, sync requests and replies): two
//! bytes, major and minor, before the postcard body.
//!
//! - Another **major** version is refused, naming both versions (a warning, once per major
//!   version seen; the message counts as malformed). The transport already hangs up on a
//!   peer of another major version at identify (`meshward_transport::IDENTIFY_VERSION`), so
//!   this is the second fence.
//! - A newer **minor** version may append optional fields at the end of a message: an older
//!   node decodes the fields it knows and ignores the bytes after them. A message of this
//!   node's own minor (or an older one) must have no trailing bytes.
//!
//! So a rolling upgrade within a major version needs no flag day: new nodes write what old
//! ones read, and new fields are only ever appended.

use std::sync::atomic::{AtomicU16, Ordering};

use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::warn;

/// Major version of the node's messages: another one is refused.
pub const MAJOR: u8 = 1;
/// Minor version: a newer one may carry appended fields, ignored here.
///
/// - 1: [`super::Ask::Reapply`] (a node of minor 0 refuses it as malformed; the asker retries
///   until its leader runs minor 1 or later).
/// - 2: [`super::Ask::AuditHead`] (a node of minor 1 or 0 answers it with an empty sync
///   answer, which the asker reports as a peer that cannot answer).
pub const MINOR: u8 = 2;

/// Why a message was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Shorter than the version bytes.
    #[error("no version bytes")]
    Truncated,
    /// Another major version.
    #[error(
        "a message of wire version {theirs}.x, this node speaks {MAJOR}.{MINOR}: upgrade the older node"
    )]
    OtherMajor {
        /// The major version it carries.
        theirs: u8,
    },
    /// The body does not decode.
    #[error("the message does not decode")]
    Malformed,
}

/// The versioned bytes of `message`.
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    let mut out = vec![MAJOR, MINOR];
    // Serialising into a Vec fails only for unsized sequences, which no message holds.
    if let Ok(body) = postcard::to_allocvec(message) {
        out.extend(body);
    }
    out
}

/// Decodes versioned bytes (see the module docs).
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, WireError> {
    let [major, minor, body @ ..] = bytes else {
        return Err(WireError::Truncated);
    };
    if *major != MAJOR {
        warn_once(*major);
        return Err(WireError::OtherMajor { theirs: *major });
    }
    let (message, rest) = postcard::take_from_bytes(body).map_err(|_| WireError::Malformed)?;
    // (`minor > MINOR`, written so while MINOR is 0 too)
    if !rest.is_empty() && !minor.gt(&MINOR) {
        return Err(WireError::Malformed);
    }
    Ok(message)
}

/// Warns once per foreign major version (a peer of another version would otherwise log at
/// every message).
fn warn_once(theirs: u8) {
    static WARNED: AtomicU16 = AtomicU16::new(u16::MAX);
    if WARNED.swap(u16::from(theirs), Ordering::Relaxed) != u16::from(theirs) {
        warn!(
            theirs,
            ours = MAJOR,
            "a peer sends messages of wire version {theirs}.x, this node speaks {MAJOR}.{MINOR}: they are refused; upgrade the older node"
        );
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct V0 {
        a: u32,
        b: String,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct V1 {
        a: u32,
        b: String,
        appended: Option<u64>,
    }

    #[test]
    fn a_newer_minor_with_appended_fields_decodes_and_another_major_is_refused() {
        let old = V0 {
            a: 7,
            b: "x".into(),
        };
        assert_eq!(decode::<V0>(&encode(&old)), Ok(old));
        // A newer minor appended a field: this node reads what it knows.
        let mut newer = encode(&V1 {
            a: 7,
            b: "x".into(),
            appended: Some(9),
        });
        newer[1] = MINOR + 1;
        assert_eq!(
            decode::<V0>(&newer),
            Ok(V0 {
                a: 7,
                b: "x".into()
            })
        );
        // The same trailing bytes at this node's own minor: malformed.
        newer[1] = MINOR;
        assert_eq!(decode::<V0>(&newer), Err(WireError::Malformed));
        // Another major, named with both versions.
        let mut other = encode(&V0 {
            a: 1,
            b: String::new(),
        });
        other[0] = MAJOR + 1;
        let err = decode::<V0>(&other).unwrap_err();
        assert_eq!(err, WireError::OtherMajor { theirs: MAJOR + 1 });
        let text = err.to_string();
        assert!(
            text.contains(&format!("{}.x", MAJOR + 1))
                && text.contains(&format!("{MAJOR}.{MINOR}"))
        );
        for garbage in [&[][..], &[MAJOR], &[MAJOR, MINOR, 0xff, 0xff, 0xff]] {
            assert!(decode::<V0>(garbage).is_err(), "{garbage:?}");
        }
    }
}
