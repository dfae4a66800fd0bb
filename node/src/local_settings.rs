//! The schema of node-only settings (`meshward local set|get|list`, `/v1/local`): each known
//! setting with its values and default, plus free `label.NAME` values an operator keeps on a
//! node (as Consul's node meta). Anything else is refused, naming what is known, so a typo
//! never becomes a setting nobody reads.
//!
//! Seed 000: approving a host key is the leader's (mastered), enforcing it is each node's:
//! `fingerprint-enforcement` says what this node does with a key that is not approved.

use std::fmt;
use std::str::FromStr;

/// `fingerprint-enforcement`: what this node does with a host key that is not approved.
pub const FINGERPRINT_ENFORCEMENT: &str = "fingerprint-enforcement";
/// Free labels: `label.NAME`.
pub const LABEL_PREFIX: &str = "label.";
/// Longest label value.
pub const MAX_LABEL: usize = 256;

/// A known node-only setting.
#[derive(Clone, Copy, Debug)]
pub struct Known {
    /// Its name.
    pub name: &'static str,
    /// Its value when unset (`None`: unset means nothing).
    pub default: Option<&'static str>,
    /// What it holds, for errors and listings.
    pub values: &'static str,
}

/// Every known setting, by name.
pub const KNOWN: [Known; 2] = [
    Known {
        name: FINGERPRINT_ENFORCEMENT,
        default: Some("warn"),
        values: "off, warn or enforce",
    },
    Known {
        name: crate::authority::LISTEN_SETTING,
        default: None,
        values: "the mesh's UDP IP:PORT (127.0.0.1:7400 when unset)",
    },
];

/// What this node does with a host key that is not approved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Enforcement {
    /// Allow it.
    Off,
    /// Allow it, with a warning (the default).
    #[default]
    Warn,
    /// Refuse it.
    Enforce,
}

impl FromStr for Enforcement {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" => Ok(Enforcement::Off),
            "warn" => Ok(Enforcement::Warn),
            "enforce" => Ok(Enforcement::Enforce),
            other => Err(format!("{other:?} is not off, warn or enforce")),
        }
    }
}

impl fmt::Display for Enforcement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Enforcement::Off => "off",
            Enforcement::Warn => "warn",
            Enforcement::Enforce => "enforce",
        })
    }
}

/// Why a setting was refused: the field (`name` or `value`) and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct SettingError {
    /// `name` or `value`.
    pub field: &'static str,
    /// What is wrong and what is allowed.
    pub reason: String,
}

/// Checks a setting before it is stored.
pub fn validate(name: &str, value: &str) -> Result<(), SettingError> {
    let bad = |field, reason: String| Err(SettingError { field, reason });
    if let Some(label) = name.strip_prefix(LABEL_PREFIX) {
        if label.is_empty()
            || label.len() > 64
            || !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return bad(
                "name",
                format!("label {label:?}: 1–64 letters, digits, '-', '_' or '.'"),
            );
        }
        if value.len() > MAX_LABEL || value.chars().any(char::is_control) {
            return bad(
                "value",
                format!("a label value is at most {MAX_LABEL} bytes, no control characters"),
            );
        }
        return Ok(());
    }
    match name {
        FINGERPRINT_ENFORCEMENT => value
            .parse::<Enforcement>()
            .map(|_| ())
            .or_else(|e| bad("value", format!("{FINGERPRINT_ENFORCEMENT}: {e}"))),
        crate::authority::LISTEN_SETTING => value
            .parse::<std::net::SocketAddr>()
            .map(|_| ())
            .or_else(|_| bad("value", format!("listen: {value:?} is not an IP:PORT"))),
        _ => bad(
            "name",
            format!(
                "no node-only setting {name:?}; known: {}, and label.NAME",
                KNOWN.map(|k| k.name).join(", ")
            ),
        ),
    }
}

/// The enforcement a stored value means (unset or unreadable: the default).
pub fn enforcement(stored: Option<&str>) -> Enforcement {
    stored.and_then(|v| v.parse().ok()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_settings_and_labels_are_checked_and_the_rest_refused_by_name() {
        validate(FINGERPRINT_ENFORCEMENT, "enforce").unwrap();
        validate("listen", "127.0.0.1:7400").unwrap();
        validate("label.site", "north").unwrap();
        let e = validate(FINGERPRINT_ENFORCEMENT, "strict").unwrap_err();
        assert_eq!(e.field, "value");
        assert!(e.reason.contains("off, warn or enforce"), "{e}");
        let e = validate("fingerprint-enforcment", "warn").unwrap_err();
        assert_eq!(e.field, "name");
        assert!(e.reason.contains("known: fingerprint-enforcement"), "{e}");
        assert_eq!(validate("listen", "nowhere").unwrap_err().field, "value");
        assert_eq!(validate("label.", "x").unwrap_err().field, "name");
        assert_eq!(validate("label.a b", "x").unwrap_err().field, "name");
        assert_eq!(validate("label.x", "a\nb").unwrap_err().field, "value");
        assert_eq!(enforcement(None), Enforcement::Warn);
        assert_eq!(enforcement(Some("off")), Enforcement::Off);
    }
}
