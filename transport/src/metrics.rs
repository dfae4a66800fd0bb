//! Counters and gauges of the transport, shared between the swarm task and the handles.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of the transport's counters (monotonic) and gauges (current values).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Metrics {
    /// Gauge: peers with at least one admitted connection.
    pub connected_peers: u64,
    /// Counter: connections closed by admission or the fault hook (denied at establishment, or
    /// dropped because the peer left the roster or was blocked).
    pub refused_connections: u64,
    /// Counter: of those, connections refused because the peer already held the most
    /// connections a peer may (two).
    pub refused_peer_limit: u64,
    /// Counter: connections closed because the peer speaks another major version of the
    /// protocol (its identify version), logged naming both.
    pub refused_version: u64,
    /// Counter: peers whose every connection was closed so both sides dial again and greet
    /// afresh: they connected again beside an old connection (a restart, or a connection lost
    /// on their side), or stayed connected without sending their subscriptions (see
    /// `greeting.rs`). Not counted as refused.
    pub reconnect_resets: u64,
    /// Counter: gossip messages received from the mesh (before validation).
    pub gossip_received: u64,
    /// Counter: received gossip payloads over [`Config::max_gossip_bytes`](crate::Config::max_gossip_bytes)
    /// (but within gossipsub's frame limit, twice that): rejected, not forwarded, never
    /// handed to the node.
    pub gossip_oversize: u64,
    /// Counter: received gossip dropped because the event queue was full (reported to
    /// gossipsub as ignored, so it is not forwarded).
    pub gossip_dropped: u64,
    /// Counter: gossip messages published to at least one peer.
    pub gossip_published: u64,
    /// Counter: publishes with no subscribed peer (nothing sent; anti-entropy repairs).
    pub publish_no_peers: u64,
    /// Counter: publishes of bytes already published or seen (same content-hash id).
    pub publish_duplicate: u64,
    /// Counter: publishes refused with [`CommandError::TooLarge`](crate::CommandError::TooLarge).
    pub publish_too_large: u64,
    /// Counter: publishes that found every peer's send queue full.
    pub publish_queue_full: u64,
    /// Counter: gossip messages gossipsub could not queue to a slow peer (its `SlowPeer`
    /// reports).
    pub gossip_send_dropped: u64,
    /// Counter: verdicts reported for messages no longer in the gossipsub cache.
    pub reports_expired: u64,
    /// Counter: sync requests sent.
    pub requests_sent: u64,
    /// Counter: sync requests received and handed to the node.
    pub requests_received: u64,
    /// Counter: inbound sync requests refused because their length prefix exceeds
    /// [`Config::max_request_bytes`](crate::Config::max_request_bytes); refused before the body is read.
    pub requests_oversize: u64,
    /// Counter: inbound requests dropped because the event queue was full.
    pub requests_dropped: u64,
    /// Counter: our outbound requests that failed (timeout, oversize, connection closed, ...).
    pub requests_failed: u64,
    /// Counter: responses received for our requests.
    pub responses_received: u64,
    /// Counter: responses to our requests refused because their length prefix exceeds
    /// [`Config::max_response_bytes`](crate::Config::max_response_bytes); the request fails.
    pub responses_oversize: u64,
    /// Counter: responses we sent successfully.
    pub responses_sent: u64,
    /// Counter: our responses that could not be delivered (requester gone, timeout, ...).
    pub responses_failed: u64,
    /// Counter: pending inbound requests evicted unanswered because the map was full.
    pub responses_evicted: u64,
    /// Gauge: inbound requests waiting for [`Handle::respond`](crate::Handle::respond).
    pub pending_responses: u64,
    /// Gauge: commands waiting in the node → transport queue.
    pub command_queue_len: u64,
    /// Gauge: events waiting in the transport → node queue.
    pub event_queue_len: u64,
    /// Counter: events of any kind dropped because the event queue was full.
    pub events_dropped: u64,
}

/// The live values behind [`Metrics`]; gauges of the queues are read from the channels.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) connected_peers: AtomicU64,
    pub(crate) refused_connections: AtomicU64,
    pub(crate) refused_peer_limit: AtomicU64,
    pub(crate) refused_version: AtomicU64,
    pub(crate) reconnect_resets: AtomicU64,
    pub(crate) gossip_received: AtomicU64,
    pub(crate) gossip_oversize: AtomicU64,
    pub(crate) gossip_dropped: AtomicU64,
    pub(crate) gossip_published: AtomicU64,
    pub(crate) publish_no_peers: AtomicU64,
    pub(crate) publish_duplicate: AtomicU64,
    pub(crate) publish_too_large: AtomicU64,
    pub(crate) publish_queue_full: AtomicU64,
    pub(crate) gossip_send_dropped: AtomicU64,
    pub(crate) reports_expired: AtomicU64,
    pub(crate) requests_sent: AtomicU64,
    pub(crate) requests_received: AtomicU64,
    pub(crate) requests_oversize: AtomicU64,
    pub(crate) requests_dropped: AtomicU64,
    pub(crate) requests_failed: AtomicU64,
    pub(crate) responses_received: AtomicU64,
    pub(crate) responses_oversize: AtomicU64,
    pub(crate) responses_sent: AtomicU64,
    pub(crate) responses_failed: AtomicU64,
    pub(crate) responses_evicted: AtomicU64,
    pub(crate) pending_responses: AtomicU64,
    pub(crate) events_dropped: AtomicU64,
}

/// Adds one to a counter.
pub(crate) fn inc(counter: &AtomicU64) {
    add(counter, 1);
}

/// Adds `n` to a counter.
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Sets a gauge.
pub(crate) fn set(gauge: &AtomicU64, value: u64) {
    gauge.store(value, Ordering::Relaxed);
}

impl Counters {
    /// A snapshot; the queue gauges are filled in by the caller.
    pub(crate) fn snapshot(&self) -> Metrics {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Metrics {
            connected_peers: get(&self.connected_peers),
            refused_connections: get(&self.refused_connections),
            refused_peer_limit: get(&self.refused_peer_limit),
            refused_version: get(&self.refused_version),
            reconnect_resets: get(&self.reconnect_resets),
            gossip_received: get(&self.gossip_received),
            gossip_oversize: get(&self.gossip_oversize),
            gossip_dropped: get(&self.gossip_dropped),
            gossip_published: get(&self.gossip_published),
            publish_no_peers: get(&self.publish_no_peers),
            publish_duplicate: get(&self.publish_duplicate),
            publish_too_large: get(&self.publish_too_large),
            publish_queue_full: get(&self.publish_queue_full),
            gossip_send_dropped: get(&self.gossip_send_dropped),
            reports_expired: get(&self.reports_expired),
            requests_sent: get(&self.requests_sent),
            requests_received: get(&self.requests_received),
            requests_oversize: get(&self.requests_oversize),
            requests_dropped: get(&self.requests_dropped),
            requests_failed: get(&self.requests_failed),
            responses_received: get(&self.responses_received),
            responses_oversize: get(&self.responses_oversize),
            responses_sent: get(&self.responses_sent),
            responses_failed: get(&self.responses_failed),
            responses_evicted: get(&self.responses_evicted),
            pending_responses: get(&self.pending_responses),
            command_queue_len: 0,
            event_queue_len: 0,
            events_dropped: get(&self.events_dropped),
        }
    }
}
