//! Fault hooks for tests and simulations (`POST /v1/fault/...`): served only by nodes built
//! with the `fault-injection` feature; others answer 404.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A fault hook.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "fault", rename_all = "kebab-case")]
pub enum FaultRequest {
    /// Cut this node's links to these peers (writer ids) until `heal`.
    Block {
        /// The peers.
        peers: Vec<String>,
    },
    /// Restore every link.
    Heal,
    /// Hold what these peers send for a one-way delay drawn from `min_ms..=max_ms`.
    Delay {
        /// The peers.
        peers: Vec<String>,
        /// Shortest delay.
        min_ms: u64,
        /// Longest delay.
        max_ms: u64,
    },
    /// Misbehave towards every peer: `garbage`, `oversize`, `foreign`, `phantom`, `stolen`
    /// (rows signed with the key in DATA/stolen.key) or `advert`.
    Misbehave {
        /// What to send.
        kind: String,
    },
}

/// What a fault hook did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FaultDone {
    /// Peers blocked or delayed, or messages sent.
    pub count: u64,
}

impl FaultRequest {
    /// The last path segment of its route.
    pub fn name(&self) -> &'static str {
        match self {
            FaultRequest::Block { .. } => "block",
            FaultRequest::Heal => "heal",
            FaultRequest::Delay { .. } => "delay",
            FaultRequest::Misbehave { .. } => "misbehave",
        }
    }
}
