//! The shared tables: every node writes its own rows, reads everyone's. Events (an append-only
//! log), observed host-key fingerprints and user data exceptions.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Most events one append request may carry.
pub const MAX_EVENTS_PER_APPEND: usize = 10_000;

/// Most events one page of a listing holds (and the default).
pub const MAX_EVENT_PAGE: usize = 10_000;

/// An event to append. Its writer is the node that takes the request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NewEvent {
    /// login, logout, session-start, session-end, access-denied, password-change,
    /// config-change, task-run or cluster.
    pub kind: String,
    /// Who did it.
    pub user: String,
    /// What it was done to.
    pub target: String,
    /// Free text.
    #[serde(default)]
    pub detail: String,
    /// When it happened, unix ms; default: when the node takes the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_ms: Option<i64>,
}

/// `POST /v1/events`: one to [`MAX_EVENTS_PER_APPEND`] events, appended in one commit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AppendEvents {
    /// The events, in order.
    pub events: Vec<NewEvent>,
}

/// Where appended events landed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Appended {
    /// The writer (this node's id, 64 hex digits).
    pub writer: String,
    /// The segment of the writer's log.
    pub segment: u32,
    /// Index of the first event in the segment.
    pub index: u64,
    /// Index of the last event.
    pub last_index: u64,
    /// How many were appended.
    pub count: u64,
}

/// `GET /v1/events` query: filters and a page cursor.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    /// Only events of this writer (64 hex digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer: Option<String>,
    /// At or after this time, unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<i64>,
    /// Before this time, unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<i64>,
    /// Only this kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// At most this many (default and most [`MAX_EVENT_PAGE`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// The `next` cursor of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

/// An event as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EventRow {
    /// Its writer.
    pub writer: String,
    /// Segment of the writer's log.
    pub segment: u32,
    /// Index in the segment.
    pub index: u64,
    /// When it happened, unix ms.
    pub at_ms: i64,
    /// Its kind.
    pub kind: String,
    /// Who did it.
    pub user: String,
    /// What it was done to.
    pub target: String,
    /// Free text.
    pub detail: String,
}

/// A page of events, ordered by (writer, segment, index): each writer's log in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EventPage {
    /// The events.
    pub events: Vec<EventRow>,
    /// Cursor of the next page (`after=`), when there may be more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// A host key: the host, its key type and fingerprint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HostKey {
    /// The host that presents the key.
    pub host: String,
    /// ssh-ed25519, ssh-rsa, ecdsa-sha2-nistp256/384/521 or x509.
    pub key_type: String,
    /// The fingerprint, e.g. `SHA256:…`.
    pub fingerprint: String,
}

/// `POST /v1/fingerprints/check`: what this node does with a host key, by the leader's
/// approvals and this node's `fingerprint-enforcement`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FingerprintCheck {
    /// `approved`; `mismatch` (another key of that type is approved for the host: it may
    /// have been replaced, or be an impostor); or `unknown`.
    pub status: String,
    /// This node's `fingerprint-enforcement`: off, warn or enforce.
    pub enforcement: String,
    /// What this node does: `allow`, `warn` (allow, and say so) or `deny`.
    pub decision: String,
    /// On a mismatch, the fingerprints approved for the host and key type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approved: Vec<String>,
}

/// `POST /v1/fingerprints`: this node observed a host key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ObserveFingerprint {
    /// The key.
    #[serde(flatten)]
    pub key: HostKey,
    /// When it was seen, unix ms; default: now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_ms: Option<i64>,
}

/// An observed fingerprint, with the leader's approval.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FingerprintRow {
    /// The node that observed it.
    pub seen_by: String,
    /// The key.
    #[serde(flatten)]
    pub key: HostKey,
    /// When this node first saw it, unix ms.
    pub first_seen_ms: i64,
    /// When this node last saw it, unix ms.
    pub last_seen_ms: i64,
    /// Whether the leader approved this key for the host.
    pub approved: bool,
}

/// `PUT /v1/fingerprints/approvals`: approve a host key for the cluster, or withdraw the
/// approval (mastered: the leader writes it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Approve {
    /// The key.
    #[serde(flatten)]
    pub key: HostKey,
    /// True to approve, false to withdraw.
    pub approved: bool,
}

/// A user data exception as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ExceptionRow {
    /// The node that set it.
    pub writer: String,
    /// The user.
    pub user: String,
    /// The field.
    pub field: String,
    /// The value.
    pub value: String,
    /// When it was set, unix ms.
    pub at_ms: i64,
}

/// `PUT /v1/exceptions/{user}/{field}` body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SetException {
    /// The value.
    pub value: String,
}
