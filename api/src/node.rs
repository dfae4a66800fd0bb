//! The node itself: its status, its health for load balancers, HA operations, and the change
//! feed's events.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// A member of the cluster as `GET /v1/ha` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Member {
    /// Its writer id (64 hex digits).
    pub id: String,
    /// Its address.
    pub address: String,
    /// active, standby, demoted, failed or inactive (as in the HA guide).
    pub state: String,
    /// Whether it leads the current epoch.
    pub leader: bool,
    /// Whether it created the cluster.
    pub primary: bool,
    /// Whether this node is connected to it (none: this node itself, or no daemon runs).
    pub connected: Option<bool>,
    /// When this node last heard from it, on the node's clock (ms).
    pub last_seen_ms: Option<u64>,
    /// Changes this node holds that it lacks, from its last digest.
    pub behind: Option<u64>,
}

/// `GET /v1/ha`: leadership as this node sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HaStatus {
    /// This node's state: active, standby, demoted, failed or inactive.
    pub state: String,
    /// leader, follower or standalone.
    pub role: String,
    /// The current epoch (absent outside a cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// The leader's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// The primary's address (the node that created the cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<String>,
    /// The members.
    #[serde(default)]
    pub members: Vec<Member>,
}

/// `POST /v1/ha/demote`: hand leadership to another member (on the leader).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Demote {
    /// The next leader: its address as in the roster, or its id (at least 8 hex digits).
    pub to: String,
}

/// `POST /v1/ha/failover`: become the leader of the next epoch (on a follower whose leader
/// is gone).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Failover {
    /// Break-glass for a two-node pair whose other node is gone.
    #[serde(default)]
    pub force: bool,
}

/// `POST /v1/ha/make-standalone`: leave the cluster, or (on the leader) remove `node`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MakeStandalone {
    /// The member to remove (leader only): address or id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// What an HA operation did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HaDone {
    /// The mastered version it wrote.
    pub version: u64,
    /// The epoch after it.
    pub epoch: u64,
    /// The leader after it.
    pub leader: String,
}

/// `GET /v1/ha/log`: how many entries, newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema, IntoParams)]
pub struct HaLogQuery {
    /// At most this many (default 50, most [`MAX_HA_LOG_PAGE`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// Most HA log entries one page holds.
pub const MAX_HA_LOG_PAGE: usize = 1000;

/// One line of the HA command log: who ran what, when, on which node, with what result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HaLogEntry {
    /// When (RFC 3339, UTC).
    pub at: String,
    /// The node it ran on (its address).
    pub node: String,
    /// Who asked: `local operator`, or `user NAME`.
    pub who: String,
    /// The command, as the CLI names it (`ha failover --force`, ...).
    pub command: String,
    /// Whether it succeeded.
    pub ok: bool,
    /// What it did, or why it failed.
    pub message: String,
}

/// A superseded mastered record, kept for review.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SupersededRecord {
    /// Its version.
    pub version: u64,
    /// Its epoch.
    pub epoch: u64,
    /// Its kind.
    pub kind: String,
    /// Who signed it (hex).
    pub signer: String,
    /// Its hash (hex).
    pub hash: String,
    /// Payload bytes.
    pub payload_bytes: u64,
    /// What it is about, e.g. `user alice`, `config managed.site`, `certificate 0a0b0c`.
    pub subject: String,
    /// What it would change, from the current chain's value to the record's, e.g.
    /// `"new-leader" → "old-primary"` or `exists → deleted`.
    pub change: String,
    /// Whether it takes access away (a revocation or a member's removal): such records are
    /// signed again into the winning chain by its leader.
    pub restrictive: bool,
    /// Whether the current chain already holds what it would do (e.g. re-applied).
    pub in_force: bool,
}

/// `POST /v1/ha/superseded/adopt`: sign a superseded record's change again into the current
/// chain (leader; a follower forwards it with the record it holds).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AdoptRecord {
    /// The superseded record's hash (hex), as `GET /v1/ha/superseded` lists it.
    pub hash: String,
    /// The record itself (base64), filled in by the node that holds it when it forwards the
    /// request to the leader; leave it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_base64: Option<String>,
}

/// One shared table as `GET /v1/status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TableStatus {
    /// Rows held.
    pub rows: u64,
    /// Changes held, over every writer.
    pub changes: u64,
    /// Writers holding rows in it.
    pub writers: u64,
}

/// The mastered chain as `GET /v1/status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MasteredStatus {
    /// The current epoch.
    pub epoch: u64,
    /// The last version held.
    pub version: u64,
    /// The leader's key (hex).
    pub leader: String,
    /// The leader's address.
    pub leader_address: String,
    /// Members in the roster.
    pub members: u64,
}

/// `GET /v1/status`: the node's identity, what its store holds and, with a running daemon,
/// its mesh.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Status {
    /// This node's writer id.
    pub writer: String,
    /// Its cluster id.
    pub cluster: String,
    /// Rows per shared table.
    pub rows: BTreeMap<String, u64>,
    /// Segments held.
    pub segments: u64,
    /// Segments live in memory.
    pub live_segments: u64,
    /// Bytes of sealed segments.
    pub sealed_bytes: u64,
    /// The replica's digest fingerprint (equal on converged nodes).
    pub digest: String,
    /// Changes held, over every table and writer.
    pub changes: u64,
    /// Per shared table.
    pub tables: BTreeMap<String, TableStatus>,
    /// Session audit records.
    pub audit_records: u64,
    /// Credential accounts whose concurrent rotations no later rotation has settled
    /// (`GET /v1/credentials/conflicts` lists them).
    #[serde(default)]
    pub credential_conflicts: u64,
    /// A member whose MEK file is missing: it serves only status and unseal.
    #[serde(default)]
    pub sealed: bool,
    /// leader, follower or standalone.
    pub role: String,
    /// Leadership.
    pub ha: HaStatus,
    /// The mastered chain (absent outside a cluster).
    pub mastered: Option<MasteredStatus>,
    /// The running node's mesh: peers, counters, lag, limits (absent without a daemon).
    #[schema(value_type = Object)]
    pub mesh: Option<serde_json::Value>,
}

/// `GET /v1/health` query.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HealthQuery {
    /// Unhealthy when the replication lag's p99 is over this (default 5000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_lag_ms: Option<u64>,
}

/// `GET /v1/health`: 200 when healthy, 503 with the reasons when not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// Whether the node should take traffic.
    pub healthy: bool,
    /// Why not: `sealed`, `not in a cluster`, `store held (disk full)`, `no peer connected`,
    /// `mesh lag N ms over M`, `N peers behind`.
    pub reasons: Vec<String>,
}

/// `GET /v1/watch` query.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WatchQuery {
    /// Comma-separated tables: events, fingerprints, exceptions, mastered (default: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tables: Option<String>,
    /// Resume after this cursor (as `Last-Event-ID`), or `now`; absent: the current state
    /// first, then the stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

/// One change, as a watch stream's `data:` (its cursor is the SSE `id:`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Change {
    /// The change's cursor: this node's apply order.
    pub cursor: String,
    /// events, fingerprints, exceptions, mastered, managed or rotations.
    pub table: String,
    /// `append` (events), `put` or `delete` (fingerprints, exceptions, managed rows,
    /// rotations), `record`
    /// (a mastered record applied), or `snapshot` (a row of the current state, before the
    /// stream).
    pub op: String,
    /// The row (shared tables), the record (mastered) or the managed row (`namespace`,
    /// `table`, `key`, `document`, `version`; `document` null on delete), as the listings show
    /// them.
    #[schema(value_type = Object)]
    pub row: serde_json::Value,
}

/// `POST /v1/unseal`: install the MEK of a sealed node (one whose MEK file is missing). The
/// key travels in the body only; `Debug` never shows it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Unseal {
    /// The MEK file's contents (64 hex digits).
    pub mek: String,
}

impl std::fmt::Debug for Unseal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Unseal(..)")
    }
}
