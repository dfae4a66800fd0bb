//! Local data, never replicated: the node's session audit (append-only, hash-chained) and its
//! node-only settings.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Most records one audit request may carry.
pub const MAX_AUDIT_PER_RECORD: usize = 10_000;

/// Most audit records one listing returns (and the default).
pub const MAX_AUDIT_PAGE: usize = 10_000;

/// A session audit record to append.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NewAudit {
    /// Who acted.
    pub actor: String,
    /// What was done.
    pub action: String,
    /// What it was done to.
    pub target: String,
    /// Free text.
    #[serde(default)]
    pub detail: String,
}

/// `POST /v1/audit`: one to [`MAX_AUDIT_PER_RECORD`] records, durable when answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RecordAudit {
    /// The records, in order.
    pub records: Vec<NewAudit>,
}

/// Where recorded audit records landed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Recorded {
    /// Sequence number of the first.
    pub first_seq: u64,
    /// Sequence number of the last.
    pub last_seq: u64,
    /// Chain hash after the last (hex).
    pub hash: String,
}

/// `GET /v1/audit` query.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// First sequence number (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<u64>,
    /// At most this many (default and most [`MAX_AUDIT_PAGE`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// A stored audit record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditRow {
    /// Sequence number, from 1.
    pub seq: u64,
    /// When it was recorded, unix ms.
    pub at_ms: i64,
    /// Who acted.
    pub actor: String,
    /// What was done.
    pub action: String,
    /// What it was done to.
    pub target: String,
    /// Free text.
    pub detail: String,
    /// Chain hash after it (hex).
    pub hash: String,
}

/// The first record of the audit chain that fails verification.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditBreak {
    /// Its sequence number.
    pub seq: u64,
    /// altered, removed, reordered, unreadable or head-mismatch.
    pub problem: String,
}

/// `GET /v1/audit/verify`: the whole chain checked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditVerified {
    /// No record altered, removed or reordered.
    pub intact: bool,
    /// Records verified before the first break (all of them when intact).
    pub verified: u64,
    /// The first break, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_bad: Option<AuditBreak>,
}

/// `GET /v1/audit/verify-mesh`: the local audit compared with the head of it each peer holds
/// (signed by this node into the shared table `audit-heads`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditMeshVerified {
    /// The local chain alone: no record altered, removed or reordered.
    pub intact: bool,
    /// Records in the local chain (its head's seq; 0 when empty).
    pub count: u64,
    /// Hash of the local head (hex; empty when the chain is empty).
    pub hash: String,
    /// Whether every peer that holds a head agrees with the local chain. A peer that holds
    /// none, cannot answer or is unreachable neither agrees nor disagrees.
    pub agreed: bool,
    /// One entry per other member of the cluster.
    pub peers: Vec<AuditPeer>,
}

/// What one peer holds of this node's audit head, compared with the local chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditPeer {
    /// The peer's node key (hex).
    pub node: String,
    /// Its address in the roster, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// agrees, disagrees, no-row (it holds no head of this node yet), unreachable, or
    /// cannot-answer (an older version).
    pub state: String,
    /// The record count of the head the peer holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// The hash the peer holds for record `count` (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_hash: Option<String>,
    /// The local hash of record `count` (hex; absent when the local chain is shorter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_hash: Option<String>,
    /// When this node signed the head the peer holds, unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_ms: Option<i64>,
    /// Why the peer could not be asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A node-only setting.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Setting {
    /// Its name.
    pub name: String,
    /// Its value (none: unset).
    pub value: Option<String>,
    /// Whether `value` is the setting's default (it was never set on this node).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub default: bool,
}

/// `PUT /v1/local/{name}` body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SetValue {
    /// The value.
    pub value: String,
}
