//! Credentials: managed accounts' secrets, addressed `NS/DEVICE/ACCOUNT`, rotated on any node
//! (also on both sides of a partition) and replicated as rows of the shared `rotations` table,
//! sealed under a key derived from the cluster's MEK.
//!
//! - `PUT /v1/credentials/{ns}/{device}/{account}`: set the secret an operator gives.
//! - `POST /v1/credentials/{ns}/{device}/{account}/rotate`: a new secret, given or generated.
//! - `POST /v1/credentials/{ns}/{device}/{account}/reveal`: the current secret, or one
//!   version's; recorded in this node's audit (who, which account, which version; never the
//!   secret).
//! - `GET /v1/credentials/{ns}/{device}/{account}`: the history, metadata only.
//! - `GET /v1/credentials/conflicts`: accounts rotated concurrently and not settled yet.
//!
//! `admin:NS` (or `root`) sets, rotates and reveals in `NS`; `guest:NS` reads history and
//! conflicts. Secrets travel in bodies only, and their `Debug` never shows them.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Largest secret, in bytes.
pub const MAX_SECRET: usize = 4096;
/// Shortest generated secret.
pub const MIN_GENERATED: usize = 8;
/// Longest generated secret.
pub const MAX_GENERATED: usize = 256;
/// Length of a generated secret when none is asked for.
pub const DEFAULT_GENERATED: usize = 32;

/// `PUT /v1/credentials/{ns}/{device}/{account}`: the secret an operator gives.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SetCredential {
    /// The secret (1 to 4096 bytes).
    pub secret: String,
    /// Why (at most 1024 bytes, one line).
    #[serde(default)]
    pub reason: String,
}

impl std::fmt::Debug for SetCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SetCredential {{ secret: .., reason: {:?} }}",
            self.reason
        )
    }
}

/// `POST /v1/credentials/{ns}/{device}/{account}/rotate`: a new secret, given (`secret`) or
/// generated (`length` characters of `alphabet`).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RotateCredential {
    /// The new secret; absent: the node generates one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Length of a generated secret ([`MIN_GENERATED`] to [`MAX_GENERATED`], default
    /// [`DEFAULT_GENERATED`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<usize>,
    /// Characters of a generated secret: `alnum` (letters and digits, the default), `hex`
    /// (lowercase), or `printable` (ASCII `!` to `~`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alphabet: Option<String>,
    /// Why (at most 1024 bytes, one line).
    #[serde(default)]
    pub reason: String,
}

impl std::fmt::Debug for RotateCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RotateCredential")
            .field("secret", &self.secret.as_ref().map(|_| ".."))
            .field("length", &self.length)
            .field("alphabet", &self.alphabet)
            .field("reason", &self.reason)
            .finish()
    }
}

/// `POST /v1/credentials/{ns}/{device}/{account}/reveal`: which version (absent: the
/// current one).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RevealCredential {
    /// A version as the history shows it (`MS.COUNTER@WRITER`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// `GET /v1/credentials/conflicts` query.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConflictQuery {
    /// Only this namespace (absent: every namespace, which needs `guest:*` or `root`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// One rotation, without its secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RotationInfo {
    /// The account, `NS/DEVICE/ACCOUNT`.
    pub address: String,
    /// Its version, `MS.COUNTER@WRITER` (the HLC and the first 8 hex digits of the writer).
    pub version: String,
    /// The node that rotated it (64 hex digits).
    pub writer: String,
    /// When, unix ms (the writer's clock).
    pub at_ms: i64,
    /// Why.
    pub reason: String,
    /// Who asked.
    pub user: String,
    /// `set` or `generated`.
    pub how: String,
    /// The versions it had seen (per writer, the newest): the rotations it settles.
    pub seen: Vec<String>,
    /// No later rotation has seen it (two heads or more: a conflict).
    pub head: bool,
    /// It is the account's current secret.
    pub current: bool,
}

/// An account's history, oldest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CredentialHistory {
    /// The account.
    pub address: String,
    /// The current version.
    pub current: String,
    /// Whether concurrent rotations wait for a later one to settle them.
    pub conflict: bool,
    /// Its rotations held on this node (a bounded number per writer), oldest first.
    pub rotations: Vec<RotationInfo>,
}

/// An account in conflict: its heads, every one revealable by version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CredentialConflict {
    /// The account.
    pub address: String,
    /// The current version (the greatest head).
    pub current: String,
    /// The concurrent rotations, oldest first.
    pub heads: Vec<RotationInfo>,
}

/// A revealed secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RevealedSecret {
    /// The account.
    pub address: String,
    /// The version revealed.
    pub version: String,
    /// Whether the account is in conflict (other heads hold other secrets).
    pub conflict: bool,
    /// The secret.
    pub secret: String,
}

impl std::fmt::Debug for RevealedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RevealedSecret {{ address: {:?}, version: {:?}, secret: .. }}",
            self.address, self.version
        )
    }
}
