//! The meshward mesh: libp2p over QUIC, gossip push, sync requests, admission.
//!
//! This is the only crate that names libp2p or quinn. It runs one swarm on one UDP port (QUIC) in a
//! tokio task and gives the node a libp2p-free [`Handle`] for commands and a bounded channel of
//! [`Event`]s. Peers are named by [`WriterId`], the node's ed25519 public key; the libp2p
//! `PeerId` of a node is derived from the same key, so the two map one-to-one without state.
//!
//! # Protocol
//!
//! - **Transport.** QUIC v1 (TLS 1.3 with the libp2p certificate extension carrying the
//!   node's ed25519 key), one UDP socket per node for listening and dialing. DNS names can be
//!   dialed by the swarm; the node dials by socket address ([`Handle::dial`]).
//! - **Admission.** When a connection is established, before any protocol handler exists, the
//!   remote key is checked against the roster ([`Handle::set_roster`]); a peer not in it (or
//!   blocked by the fault hook) is disconnected at once, so no protocol data flows. The node
//!   sees [`Event::Refused`] and [`Metrics::refused_connections`] counts it. Removing a
//!   connected peer from the roster closes its connections. Admitted connections are kept
//!   alive while quiet; dead peers are detected by QUIC's idle timeout and the node redials.
//! - **Gossip (push).** Gossipsub v1.1 on the single topic `meshward/shared/1`. Messages are
//!   unsigned and anonymous (no author, no sequence number): the payload carries its own
//!   signatures, checked by the node. The message id is the SHA-256 of the payload, so the
//!   same bytes from two sources are one message, and republishing identical bytes is a
//!   counted no-op. Every received message waits for the node's verdict ([`Handle::report`]):
//!   only accepted messages are forwarded; rejected and unreported ones die here. A payload
//!   over [`Config::max_gossip_bytes`] is rejected by the transport itself and counted
//!   ([`Metrics::gossip_oversize`]); gossipsub's frame limit is twice that, so a peer that
//!   oversteps the payload bound is seen and counted, not silently cut off by the frame codec.
//!   Gossip is best effort: when a queue is full it is dropped and counted, and anti-entropy
//!   repairs.
//! - **Sync (pull).** Request-response on `/meshward/sync/1`: one request and one response per
//!   stream, each a 4-byte big-endian length and that many bytes, bounded by
//!   [`Config::max_request_bytes`] and [`Config::max_response_bytes`]; an oversize frame is
//!   an error before anything is allocated, counted in [`Metrics::requests_oversize`] or
//!   [`Metrics::responses_oversize`].
//! - **Identify** (`/ipfs/id/1.0.0`, protocol version `/meshward/1`) tells each side the
//!   other's listen addresses and protocols.
//!
//! # Presets
//!
//! [`GossipConfig::small_cluster`] (default, 2–7 nodes): mesh 3 (2..=4), one outbound peer,
//! flood publishing, 250 ms heartbeat; measured with libp2p 0.57 on the project's machine, a
//! 7-node cluster delivers in p50 0.4–0.6 ms while the default mesh of 6 saturates near
//! 900 msg/s. [`GossipConfig::large_mesh`] (hundreds to thousands of nodes): mesh 5
//! (4..=8) with flood publishing, thinner than the gossipsub spec's 6 (5..=12) so that a push
//! costs each node 3.0 duplicate copies rather than 4.9. Both send gossipsub v1.2 IDONTWANTs for messages above
//! [`IDONTWANT_THRESHOLD`] bytes (pushes, not adverts), also for our own messages: a node
//! tells its mesh it holds a message as soon as it arrives, so a peer still validating its
//! own copy does not send it back. How many copies that spares depends on validation time
//! against link latency (`docs/simulation.md`, "Duplicates").
//!
//! # Queues
//!
//! Every queue is bounded and has a gauge; every drop has a counter ([`Metrics`]). Handle calls
//! never block: a full command queue is [`CommandError::QueueFull`]. Gossip, request and
//! response events are dropped when the node is slow; connection events wait for room.

//!
//! The [`setup`] module is the second endpoint: quinn with TLS from the cluster CA, where
//! strangers holding a joining bundle join (its own UDP port, by default the mesh port + 1).

#![deny(missing_docs)]

mod admission;
mod codec;
mod config;
#[cfg(any(test, feature = "fault-injection"))]
mod delay;
mod greeting;
mod metrics;
pub mod setup;
pub mod slots;
mod swarm;

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;

pub use config::{Config, GossipConfig, IDONTWANT_THRESHOLD, MAX_GOSSIP_BYTES};
pub use meshward_crdt::WriterId;
pub use metrics::Metrics;
pub use swarm::IDENTIFY_VERSION;

use crate::metrics::Counters;
use crate::swarm::{Command, PendingResponses};

/// The gossipsub topic all nodes publish and subscribe to.
pub const TOPIC: &str = "meshward/shared/1";

/// Id of a received gossip message: the SHA-256 of its payload and the peer it came from.
/// Hand it back to [`Handle::report`].
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageId {
    hash: [u8; 32],
    source: WriterId,
}

impl MessageId {
    /// SHA-256 of the payload; equal payloads have equal hashes.
    pub fn hash(&self) -> [u8; 32] {
        self.hash
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId(")?;
        for byte in &self.hash[..6] {
            write!(f, "{byte:02x}")?;
        }
        write!(f, " from {:?})", self.source)
    }
}

/// Id of one of our outbound sync requests, echoed by [`Event::Response`] and
/// [`Event::RequestFailed`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(u64);

/// Id of an inbound sync request waiting for [`Handle::respond`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResponseId(u64);

/// What the transport tells the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The transport listens on `addr` (once per local address).
    Listening {
        /// The local address.
        addr: SocketAddr,
    },
    /// The first admitted connection to `peer` is up.
    Connected {
        /// The peer.
        peer: WriterId,
        /// Its address on that connection.
        addr: SocketAddr,
    },
    /// The last connection to `peer` closed.
    Disconnected {
        /// The peer.
        peer: WriterId,
    },
    /// A gossip message arrived; report a verdict with [`Handle::report`].
    Gossip {
        /// The peer that forwarded it to us (not necessarily its author).
        source: WriterId,
        /// Its id, to hand back to [`Handle::report`].
        id: MessageId,
        /// The payload.
        data: Vec<u8>,
    },
    /// A peer sent a sync request; answer with [`Handle::respond`].
    Request {
        /// The requester.
        peer: WriterId,
        /// Where the response goes.
        channel: ResponseId,
        /// The request.
        data: Vec<u8>,
    },
    /// The response to our request.
    Response {
        /// The responder.
        peer: WriterId,
        /// Our request.
        request: RequestId,
        /// The response.
        data: Vec<u8>,
    },
    /// Our request failed: timeout, oversize response, connection closed, peer not connected.
    RequestFailed {
        /// The peer asked.
        peer: WriterId,
        /// Our request.
        request: RequestId,
        /// What happened, for logs.
        reason: String,
    },
    /// A connection was closed by admission or by the fault hook (also counted in
    /// [`Metrics::refused_connections`]).
    Refused {
        /// The peer, when its key was known.
        peer: Option<WriterId>,
        /// Why, for logs.
        reason: String,
    },
}

/// Why [`Transport::spawn`] failed. Nothing was started.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The secret key bytes are not a valid ed25519 secret key.
    #[error("invalid ed25519 secret key: {0}")]
    InvalidKey(String),
    /// The configuration is inconsistent (for example a size above its limit).
    #[error("invalid transport config: {0}")]
    InvalidConfig(String),
    /// Building the swarm failed (DNS resolver configuration, gossipsub setup).
    #[error("cannot build the libp2p swarm: {0}")]
    Build(String),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {reason}; is another process using the port?")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The underlying error.
        reason: String,
    },
    /// Not called inside a tokio runtime.
    #[error("the transport must be spawned inside a tokio runtime")]
    NoRuntime,
}

/// Why a [`Handle`] call failed. The command was not queued; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The command queue is full; the transport is behind. Retry later or drop the work.
    #[error("transport command queue is full; retry later")]
    QueueFull,
    /// The swarm task has ended; the transport must be spawned again.
    #[error("transport stopped; spawn it again")]
    Stopped,
    /// The payload exceeds its configured limit ([`Config::max_gossip_bytes`] for
    /// [`Handle::publish`], [`Config::max_response_bytes`] for [`Handle::respond`],
    /// [`Config::max_request_bytes`] for [`Handle::request`]).
    #[error("payload of {len} bytes exceeds the limit of {max} bytes; send a digest instead")]
    TooLarge {
        /// The payload size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The response id is unknown: already answered, evicted or expired.
    #[error("unknown or expired response id {0:?}")]
    UnknownResponse(ResponseId),
}

/// The transport: spawns the swarm task.
#[derive(Debug)]
pub struct Transport;

/// Longest one-way delay the delay fault hook ([`Handle::set_delay`], with the
/// `fault-injection` feature) holds a message for: gossipsub keeps a message awaiting the
/// node's verdict for a few heartbeats only (250 ms each in the small-cluster preset), and a
/// later verdict cannot forward it.
pub const MAX_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

/// Fault hook: ways a misbehaving peer breaks the protocol, so tests can show that its peers
/// refuse and count it. Sizes come from this node's [`Config`] (peers run the same limits).
#[cfg(feature = "fault-injection")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Misbehaviour {
    /// Publish one gossip payload of [`Config::max_gossip_bytes`] + 1 bytes, skipping our own
    /// check (gossipsub's frame limit is twice that, so it goes out).
    OversizeGossip,
    /// Send `peer` one sync request of [`Config::max_request_bytes`] + 1 bytes.
    OversizeRequest(WriterId),
    /// Answer the next `n` sync requests with [`Config::max_response_bytes`] + 1 bytes instead
    /// of the node's answer.
    OversizeResponses(usize),
    /// Answer the next `n` sync requests with garbage bytes (within the size bound) instead of
    /// the node's answer.
    GarbageResponses(usize),
}

/// The node's verdict on a received gossip message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Valid and applied: forward it.
    Accept,
    /// Not applicable here (for example it does not continue what we hold): drop it without
    /// blaming the sender.
    Ignore,
    /// Invalid: drop it; the sender misbehaved.
    Reject,
}

/// The node's handle on a running transport. Cheap to clone; every call is non-blocking.
/// The swarm task stops when every handle is dropped or the event receiver is dropped.
#[derive(Clone, Debug)]
pub struct Handle {
    local: WriterId,
    commands: mpsc::Sender<Command>,
    events: mpsc::WeakSender<Event>,
    counters: Arc<Counters>,
    next_request: Arc<AtomicU64>,
    pending: Arc<PendingResponses>,
    config: Arc<Config>,
}

impl Transport {
    /// Starts the transport: builds the swarm, binds [`Config::listen`] and spawns the swarm
    /// task on the current tokio runtime. `secret` is the node's ed25519 secret key; `roster`
    /// the peers admitted (see [`Handle::set_roster`]).
    pub fn spawn(
        secret: [u8; 32],
        roster: BTreeSet<WriterId>,
        config: Config,
    ) -> Result<(Handle, mpsc::Receiver<Event>), TransportError> {
        swarm::spawn(secret, roster, config)
    }
}

impl Handle {
    /// This node's id.
    pub fn local_id(&self) -> WriterId {
        self.local
    }

    /// Replaces the admitted set; connected peers no longer in it are disconnected at once.
    pub fn set_roster(&self, roster: BTreeSet<WriterId>) -> Result<(), CommandError> {
        self.send(Command::SetRoster(roster))
    }

    /// Dials `addr`; the handshake tells who it is. A peer not in the roster is refused.
    pub fn dial(&self, addr: SocketAddr) -> Result<(), CommandError> {
        self.send(Command::Dial(addr))
    }

    /// Gossips `data` to the mesh, best effort. No subscribed peer and duplicates are counted,
    /// not errors; a payload over [`Config::max_gossip_bytes`] is [`CommandError::TooLarge`].
    pub fn publish(&self, data: Vec<u8>) -> Result<(), CommandError> {
        let max = self.config.max_gossip_bytes;
        if data.len() > max {
            metrics::inc(&self.counters.publish_too_large);
            return Err(CommandError::TooLarge {
                len: data.len(),
                max,
            });
        }
        self.send(Command::Publish(data))
    }

    /// The node's verdict on a received gossip message: only accepted messages are forwarded.
    /// Report each message once; a late verdict is counted in [`Metrics::reports_expired`].
    pub fn report(&self, id: MessageId, verdict: Verdict) -> Result<(), CommandError> {
        self.send(Command::Report { id, verdict })
    }

    /// Sends a sync request to a connected `peer`. The answer is [`Event::Response`] or
    /// [`Event::RequestFailed`] with the returned id.
    pub fn request(&self, peer: WriterId, data: Vec<u8>) -> Result<RequestId, CommandError> {
        let max = self.config.max_request_bytes;
        if data.len() > max {
            return Err(CommandError::TooLarge {
                len: data.len(),
                max,
            });
        }
        let id = RequestId(self.next_request.fetch_add(1, Ordering::Relaxed));
        self.send(Command::Request { peer, id, data })?;
        Ok(id)
    }

    /// Answers an inbound request. An unknown, already answered or evicted `channel` is
    /// [`CommandError::UnknownResponse`]; an oversize response is [`CommandError::TooLarge`]
    /// and the request stays open (answer it again with something smaller).
    pub fn respond(&self, channel: ResponseId, data: Vec<u8>) -> Result<(), CommandError> {
        let max = self.config.max_response_bytes;
        if data.len() > max {
            return Err(CommandError::TooLarge {
                len: data.len(),
                max,
            });
        }
        let pending = self
            .pending
            .take(channel)
            .ok_or(CommandError::UnknownResponse(channel))?;
        self.commands
            .try_send(Command::Respond { pending, data })
            .map_err(|err| match err {
                mpsc::error::TrySendError::Full(Command::Respond { pending, .. }) => {
                    // Put it back so the node can retry.
                    self.pending.restore(channel, pending);
                    CommandError::QueueFull
                }
                mpsc::error::TrySendError::Full(_) => CommandError::QueueFull,
                mpsc::error::TrySendError::Closed(_) => CommandError::Stopped,
            })
    }

    /// A snapshot of counters and gauges.
    pub fn metrics(&self) -> Metrics {
        let mut metrics = self.counters.snapshot();
        metrics.command_queue_len =
            (self.commands.max_capacity() - self.commands.capacity()) as u64;
        if let Some(events) = self.events.upgrade() {
            metrics.event_queue_len = (events.max_capacity() - events.capacity()) as u64;
        }
        metrics
    }

    /// Fault hook: disconnects from and refuses these peers until unblocked; an empty set
    /// heals (the node redials).
    #[cfg(feature = "fault-injection")]
    pub fn set_blocked(&self, peers: BTreeSet<WriterId>) -> Result<(), CommandError> {
        self.send(Command::SetBlocked(peers))
    }

    /// Fault hook: from now on, hold every gossip message, sync request and sync answer from
    /// `peers` for a one-way delay drawn uniformly from `[min, max]` per message (cut to
    /// [`MAX_DELAY`]) before the node sees it; `max` zero removes their delay.
    #[cfg(feature = "fault-injection")]
    pub fn set_delay(
        &self,
        peers: BTreeSet<WriterId>,
        min: std::time::Duration,
        max: std::time::Duration,
    ) -> Result<(), CommandError> {
        self.send(Command::SetDelay { peers, min, max })
    }

    /// Fault hook: misbehave towards peers (see [`Misbehaviour`]).
    #[cfg(feature = "fault-injection")]
    pub fn misbehave(&self, how: Misbehaviour) -> Result<(), CommandError> {
        self.send(Command::Misbehave(how))
    }

    fn send(&self, command: Command) -> Result<(), CommandError> {
        self.commands.try_send(command).map_err(|err| match err {
            mpsc::error::TrySendError::Full(_) => CommandError::QueueFull,
            mpsc::error::TrySendError::Closed(_) => CommandError::Stopped,
        })
    }
}
