//! The core's counters, for status and metrics.

use serde::Serialize;

/// Counters of the core, for status and metrics.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CoreCounters {
    /// Pushes applied.
    pub pushes_applied: u64,
    /// Pushes refused as invalid.
    pub pushes_rejected: u64,
    /// Pushes ignored (gap or duplicate of nothing new).
    pub pushes_ignored: u64,
    /// Sync rounds completed (answers applied).
    pub sync_rounds: u64,
    /// Sync answers refused.
    pub sync_rejected: u64,
    /// Sync requests answered.
    pub sync_served: u64,
    /// Malformed messages from peers.
    pub malformed: u64,
    /// Changes held that pushes or syncs brought.
    pub items_applied: u64,
    /// Payload bytes received: gossip messages and sync answers (without QUIC and gossipsub
    /// framing).
    pub bytes_received: u64,
    /// Mastered records verified and applied from peers.
    pub mastered_applied: u64,
    /// Mastered records refused (bad signature, stale epoch, unknown signer, ...).
    pub mastered_rejected: u64,
    /// Mastered records at a version we hold with different contents (a competing leader).
    pub mastered_forks: u64,
    /// Times our mastered chain was replaced by a winning competing chain.
    pub chain_switches: u64,
    /// Double signatures proven when two chains met: a leader that signed two records at one
    /// version, or a member that endorsed two candidates for one epoch.
    pub equivocations: u64,
    /// Records dropped because they belong to a branch that already lost to ours.
    pub losers_dropped: u64,
    /// Endorsements given to failover candidates.
    pub endorsements_given: u64,
    /// Endorsement requests refused.
    pub endorsements_refused: u64,
    /// Received changes and mastered records dropped unapplied while the store refused
    /// writes (a full disk, see [`Core::set_held`](super::Core::set_held)); anti-entropy brings them again later.
    pub held_dropped: u64,
    /// Received segments refused because their writer is not in the roster known here: a
    /// made-up identity, a removed member, or a member whose roster record has not arrived
    /// yet. Not stored, not forwarded, the sender not penalised.
    pub unknown_writer: u64,
    /// Received segments of a removed writer beyond the frontier the roster record that
    /// removed it fixed (a removed or stolen key still writing): not stored, not forwarded,
    /// the sender not penalised (it may have taken them before it learnt of the removal).
    pub beyond_frontier: u64,
    /// Received segments refused by the replica's bounds on the writers and segments it
    /// holds (`MAX_WRITERS`, `MAX_SEGMENTS`).
    pub over_limit: u64,
    /// Gossip whose origin is not its author (an advert not signed by its origin, a push of
    /// another writer's rows): rejected.
    pub forged_gossip: u64,
    /// Adverts not newer than the last one taken from their origin (a replay or a late
    /// copy): ignored.
    pub stale_adverts: u64,
}
