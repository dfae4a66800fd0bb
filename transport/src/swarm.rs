//! The swarm task: builds the libp2p swarm and turns commands and swarm events into each other.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use futures::StreamExt;
use libp2p::gossipsub::{self, MessageAcceptance, PublishError};
use libp2p::identity::Keypair;
use libp2p::request_response::{self, OutboundRequestId};
use libp2p::swarm::{DialError, ListenError, SwarmEvent};
use libp2p::{PeerId, Swarm, SwarmBuilder, identify};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

mod behaviour;
mod ids;
mod pending;
#[cfg(test)]
mod tests;

use behaviour::{Behaviour, BehaviourEvent, behaviour, check_config};
pub(crate) use ids::{peer_id, writer_id};
use ids::{peer_ids, to_multiaddr, to_socket_addr};
pub(crate) use pending::{Pending, PendingResponses};

use crate::admission::Denied;
use crate::codec::Codec;
use crate::greeting::{GREETING_TIMEOUT, Greetings};
use crate::metrics::{self, Counters};
use crate::{Config, Event, Handle, MessageId, RequestId, TOPIC, TransportError, WriterId};

/// Identify protocol version: `/meshward/MAJOR`. A peer of another major version is told
/// apart at identify and disconnected, with a warning naming both versions (minor versions
/// of the node's messages are handled by the node, see `meshward_node::core::wire`).
pub const IDENTIFY_VERSION: &str = "/meshward/1";

/// A command from a [`Handle`] to the swarm task.
#[derive(Debug)]
pub(crate) enum Command {
    SetRoster(BTreeSet<WriterId>),
    Dial(SocketAddr),
    Publish(Vec<u8>),
    Report {
        id: MessageId,
        verdict: crate::Verdict,
    },
    Request {
        peer: WriterId,
        id: RequestId,
        data: Vec<u8>,
    },
    Respond {
        pending: Pending,
        data: Vec<u8>,
    },
    #[cfg(feature = "fault-injection")]
    SetBlocked(BTreeSet<WriterId>),
    #[cfg(feature = "fault-injection")]
    Misbehave(crate::Misbehaviour),
    #[cfg(feature = "fault-injection")]
    SetDelay {
        peers: BTreeSet<WriterId>,
        min: std::time::Duration,
        max: std::time::Duration,
    },
}

/// Fault hook: what replaces the node's next sync answers.
#[cfg(feature = "fault-injection")]
#[derive(Clone, Copy, Debug)]
enum BadResponse {
    Oversize,
    Garbage,
}

/// Builds the swarm, binds the socket and spawns the task.
pub(crate) fn spawn(
    secret: [u8; 32],
    roster: BTreeSet<WriterId>,
    config: Config,
) -> Result<(Handle, mpsc::Receiver<Event>), TransportError> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| TransportError::NoRuntime)?;
    check_config(&config)?;
    let keypair = Keypair::ed25519_from_bytes(secret)
        .map_err(|err| TransportError::InvalidKey(err.to_string()))?;
    let local = writer_id(&keypair.public().to_peer_id())
        .ok_or_else(|| TransportError::InvalidKey("not an ed25519 key".into()))?;

    let counters = Arc::new(Counters::default());
    let codec = Codec::new(
        config.max_request_bytes,
        config.max_response_bytes,
        counters.clone(),
    );
    #[cfg(feature = "fault-injection")]
    let unbounded_writes = codec.unbounded_writes();
    let behaviour = behaviour(&keypair, &roster, &config, codec)?;
    let idle_timeout = config.idle_timeout;
    let mut swarm = SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_quic()
        .with_dns()
        .map_err(|err| TransportError::Build(format!("dns resolver: {err}")))?
        .with_behaviour(|_| behaviour)
        .unwrap_or_else(|never| match never {})
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle_timeout))
        .build();
    swarm
        .listen_on(to_multiaddr(config.listen))
        .map_err(|err| TransportError::Listen {
            addr: config.listen,
            reason: err.to_string(),
        })?;

    let pending = Arc::new(PendingResponses::new(
        config.max_pending_responses.get(),
        counters.clone(),
    ));
    let (command_tx, command_rx) = mpsc::channel(config.command_queue.get());
    let (event_tx, event_rx) = mpsc::channel(config.event_queue.get());
    let config = Arc::new(config);
    let handle = Handle {
        local,
        commands: command_tx,
        events: event_tx.downgrade(),
        counters: counters.clone(),
        next_request: Arc::new(AtomicU64::new(0)),
        pending: pending.clone(),
        config: config.clone(),
    };
    let task = Task {
        swarm,
        commands: command_rx,
        events: event_tx,
        counters,
        pending,
        topic: gossipsub::IdentTopic::new(TOPIC).hash(),
        requests: HashMap::new(),
        greetings: Greetings::default(),
        stopped: false,
        config,
        #[cfg(feature = "fault-injection")]
        unbounded_writes,
        #[cfg(feature = "fault-injection")]
        bad_responses: std::collections::VecDeque::new(),
        #[cfg(feature = "fault-injection")]
        delays: crate::delay::Delays::new(local.0),
    };
    runtime.spawn(task.run());
    debug!(local = %local, "transport started");
    Ok((handle, event_rx))
}

struct Task {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    counters: Arc<Counters>,
    pending: Arc<PendingResponses>,
    topic: gossipsub::TopicHash,
    /// Our outbound requests in flight; request-response ends each with a response or failure.
    requests: HashMap<OutboundRequestId, (RequestId, WriterId)>,
    /// Connected peers whose subscriptions are not known yet.
    greetings: Greetings,
    /// The node dropped its event receiver.
    stopped: bool,
    config: Arc<Config>,
    /// Fault hook: set once this node misbehaves with oversize sync frames.
    #[cfg(feature = "fault-injection")]
    unbounded_writes: Arc<std::sync::atomic::AtomicBool>,
    /// Fault hook: answers that replace the node's next ones.
    #[cfg(feature = "fault-injection")]
    bad_responses: std::collections::VecDeque<BadResponse>,
    /// Fault hook: inbound messages held back by a per-peer delay.
    #[cfg(feature = "fault-injection")]
    delays: crate::delay::Delays<Event>,
}

impl Task {
    async fn run(mut self) {
        let mut greeting_check = tokio::time::interval(GREETING_TIMEOUT / 5);
        greeting_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !self.stopped {
            let due = self.next_delayed();
            tokio::select! {
                biased;
                command = self.commands.recv() => match command {
                    Some(command) => self.on_command(command).await,
                    None => break,
                },
                () = async {
                    match due {
                        Some(due) => tokio::time::sleep_until(due).await,
                        None => std::future::pending().await,
                    }
                }, if due.is_some() => self.release_delayed(),
                event = self.swarm.select_next_some() => self.on_swarm_event(event).await,
                _ = greeting_check.tick() => self.disconnect_ungreeted(),
            }
        }
        debug!("transport stopped");
    }

    async fn on_command(&mut self, command: Command) {
        match command {
            Command::SetRoster(roster) => {
                self.swarm
                    .behaviour_mut()
                    .admission
                    .set_roster(peer_ids(&roster));
                self.enforce_admission().await;
            }
            #[cfg(feature = "fault-injection")]
            Command::SetBlocked(blocked) => {
                self.swarm
                    .behaviour_mut()
                    .admission
                    .set_blocked(peer_ids(&blocked));
                self.enforce_admission().await;
            }
            Command::Dial(addr) => {
                if let Err(err) = self.swarm.dial(to_multiaddr(addr)) {
                    warn!(addr = %addr, error = %err, "dial failed");
                }
            }
            Command::Publish(data) => self.publish(data),
            Command::Report { id, verdict } => {
                let Some(peer) = peer_id(&id.source) else {
                    return;
                };
                let verdict = match verdict {
                    crate::Verdict::Accept => MessageAcceptance::Accept,
                    crate::Verdict::Ignore => MessageAcceptance::Ignore,
                    crate::Verdict::Reject => MessageAcceptance::Reject,
                };
                let found = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(
                        &gossipsub::MessageId::new(&id.hash),
                        &peer,
                        verdict,
                    );
                if !found {
                    metrics::inc(&self.counters.reports_expired);
                    debug!(id = ?id, "verdict for a message no longer cached");
                }
            }
            Command::Request { peer, id, data } => {
                let target = peer_id(&peer).filter(|p| self.swarm.is_connected(p));
                let Some(target) = target else {
                    metrics::inc(&self.counters.requests_failed);
                    let _ = self.emit_lossy(Event::RequestFailed {
                        peer,
                        request: id,
                        reason: "peer not connected".into(),
                    });
                    return;
                };
                let outbound = self.swarm.behaviour_mut().sync.send_request(&target, data);
                self.requests.insert(outbound, (id, peer));
                metrics::inc(&self.counters.requests_sent);
            }
            #[cfg(feature = "fault-injection")]
            Command::Misbehave(how) => self.misbehave(how),
            #[cfg(feature = "fault-injection")]
            Command::SetDelay { peers, min, max } => self.delays.set(peers, min, max),
            Command::Respond { pending, data } => {
                #[cfg(feature = "fault-injection")]
                let data = match self.bad_responses.pop_front() {
                    None => data,
                    Some(BadResponse::Garbage) => vec![0xcd; 500],
                    Some(BadResponse::Oversize) => vec![0; self.config.max_response_bytes + 1],
                };
                let peer = pending.peer;
                if self
                    .swarm
                    .behaviour_mut()
                    .sync
                    .send_response(pending.channel, data)
                    .is_err()
                {
                    metrics::inc(&self.counters.responses_failed);
                    debug!(peer = %peer, "response channel closed before the response");
                }
            }
        }
    }

    /// Fault hook: breaks the protocol on purpose (see [`crate::Misbehaviour`]).
    #[cfg(feature = "fault-injection")]
    fn misbehave(&mut self, how: crate::Misbehaviour) {
        use crate::Misbehaviour as M;
        match how {
            M::OversizeGossip => self.publish(vec![0x5a; self.config.max_gossip_bytes + 1]),
            M::OversizeRequest(peer) => {
                let Some(target) = peer_id(&peer).filter(|p| self.swarm.is_connected(p)) else {
                    return;
                };
                self.unbounded_writes
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                let data = vec![0; self.config.max_request_bytes + 1];
                // Not tracked in `requests`: its failure is counted, and the node never asked.
                self.swarm.behaviour_mut().sync.send_request(&target, data);
                metrics::inc(&self.counters.requests_sent);
            }
            M::OversizeResponses(n) => {
                self.unbounded_writes
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                self.bad_responses
                    .extend(std::iter::repeat_n(BadResponse::Oversize, n));
            }
            M::GarbageResponses(n) => self
                .bad_responses
                .extend(std::iter::repeat_n(BadResponse::Garbage, n)),
        }
    }

    fn publish(&mut self, data: Vec<u8>) {
        let len = data.len();
        let topic = self.topic.clone();
        match self.swarm.behaviour_mut().gossipsub.publish(topic, data) {
            Ok(id) => {
                metrics::inc(&self.counters.gossip_published);
                debug!(id = %id, len, "gossip published");
            }
            Err(PublishError::NoPeersSubscribedToTopic) => {
                metrics::inc(&self.counters.publish_no_peers);
                debug!(len, "gossip not published: no subscribed peer");
            }
            Err(PublishError::Duplicate) => {
                metrics::inc(&self.counters.publish_duplicate);
                debug!(len, "gossip not published: duplicate");
            }
            Err(PublishError::MessageTooLarge) => {
                metrics::inc(&self.counters.publish_too_large);
                warn!(len, "gossip not published: too large");
            }
            Err(PublishError::AllQueuesFull(peers)) => {
                metrics::inc(&self.counters.publish_queue_full);
                debug!(len, peers, "gossip not published: every peer queue full");
            }
            Err(err) => warn!(len, error = %err, "gossip not published"),
        }
    }

    /// Disconnects the peers connected for [`GREETING_TIMEOUT`] without a known subscription,
    /// so both sides dial again and greet each other (see [`crate::greeting`]).
    fn disconnect_ungreeted(&mut self) {
        let gossipsub = &self.swarm.behaviour().gossipsub;
        let greeted: HashSet<PeerId> = gossipsub
            .all_peers()
            .filter(|(_, topics)| !topics.is_empty())
            .map(|(peer, _)| *peer)
            .collect();
        for peer in self
            .greetings
            .overdue(Instant::now(), |p| greeted.contains(p))
        {
            metrics::inc(&self.counters.reconnect_resets);
            info!(peer = ?writer_id(&peer), "connected peer never sent its subscriptions: disconnecting, to start afresh");
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }

    /// Closes the connections of peers that admission no longer accepts.
    async fn enforce_admission(&mut self) {
        let connected: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        for peer in connected {
            if let Err(denied) = self.swarm.behaviour().admission.check(peer) {
                let _ = self.swarm.disconnect_peer_id(peer);
                self.refused(&denied).await;
            }
        }
    }

    async fn refused(&mut self, denied: &Denied) {
        if let Denied::Stale(peer) = denied {
            metrics::inc(&self.counters.reconnect_resets);
            info!(peer = ?writer_id(peer), "{}", denied.reason());
            return;
        }
        metrics::inc(&self.counters.refused_connections);
        if matches!(denied, Denied::TooManyConnections(_)) {
            metrics::inc(&self.counters.refused_peer_limit);
        }
        let peer = writer_id(&denied.peer());
        warn!(peer = ?peer, reason = denied.reason(), "connection refused");
        self.emit(Event::Refused {
            peer,
            reason: denied.reason().into(),
        })
        .await;
    }

    async fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                if let Some(addr) = to_socket_addr(&address) {
                    debug!(addr = %addr, "listening");
                    self.emit(Event::Listening { addr }).await;
                }
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                endpoint,
                num_established,
                ..
            } => {
                self.update_connected();
                let (Some(peer), Some(addr)) = (
                    writer_id(&peer_id),
                    to_socket_addr(endpoint.get_remote_address()),
                ) else {
                    return;
                };
                if num_established.get() == 1 {
                    self.greetings.connected(peer_id, Instant::now());
                    debug!(peer = %peer, addr = %addr, "connected");
                    self.emit(Event::Connected { peer, addr }).await;
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                cause,
                ..
            } => {
                self.update_connected();
                if num_established == 0 {
                    self.greetings.disconnected(&peer_id);
                }
                if num_established == 0
                    && let Some(peer) = writer_id(&peer_id)
                {
                    debug!(peer = %peer, cause = ?cause, "disconnected");
                    self.emit(Event::Disconnected { peer }).await;
                }
            }
            SwarmEvent::IncomingConnectionError {
                error: ListenError::Denied { cause },
                ..
            }
            | SwarmEvent::OutgoingConnectionError {
                error: DialError::Denied { cause },
                ..
            } => {
                if let Some(denied) = cause.downcast_ref::<Denied>() {
                    let denied = *denied;
                    self.refused(&denied).await;
                }
            }
            SwarmEvent::IncomingConnectionError { error, .. } => {
                debug!(error = %error, "inbound connection failed");
            }
            SwarmEvent::OutgoingConnectionError { error, .. } => {
                debug!(error = %error, "outbound connection failed");
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(event)) => self.on_gossip(event),
            SwarmEvent::Behaviour(BehaviourEvent::Sync(event)) => self.on_sync(event),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                debug!(peer = %peer_id, version = %info.protocol_version, "identified");
                let ours = &self.config.protocol_version;
                if &info.protocol_version != ours {
                    metrics::inc(&self.counters.refused_version);
                    metrics::inc(&self.counters.refused_connections);
                    warn!(
                        peer = %peer_id,
                        "the peer speaks another major version of the meshward protocol ({}, this node {ours}); disconnected: upgrade the older node",
                        info.protocol_version
                    );
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Admission(never)) => match never {},
            _ => {}
        }
    }

    fn on_gossip(&mut self, event: gossipsub::Event) {
        match event {
            gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            } => {
                metrics::inc(&self.counters.gossip_received);
                let hash: Option<[u8; 32]> = message_id.0.as_slice().try_into().ok();
                let (Some(source), Some(hash)) = (writer_id(&propagation_source), hash) else {
                    self.ignore(&message_id, &propagation_source);
                    return;
                };
                if message.data.len() > self.config.max_gossip_bytes {
                    metrics::inc(&self.counters.gossip_oversize);
                    warn!(peer = %source, len = message.data.len(), "oversize gossip rejected");
                    self.swarm
                        .behaviour_mut()
                        .gossipsub
                        .report_message_validation_result(
                            &message_id,
                            &propagation_source,
                            MessageAcceptance::Reject,
                        );
                    return;
                }
                let event = Event::Gossip {
                    source,
                    id: MessageId { hash, source },
                    data: message.data,
                };
                self.deliver_from(source, event);
            }
            gossipsub::Event::SlowPeer {
                peer_id,
                failed_messages,
            } => {
                let failed = failed_messages.priority + failed_messages.non_priority;
                metrics::add(&self.counters.gossip_send_dropped, failed as u64);
                debug!(peer = %peer_id, failed, "slow peer: gossip dropped");
            }
            gossipsub::Event::Subscribed { peer_id, .. } => {
                debug!(peer = %peer_id, "peer subscribed");
            }
            gossipsub::Event::GossipsubNotSupported { peer_id } => {
                warn!(peer = %peer_id, "peer does not speak gossipsub");
            }
            _ => {}
        }
    }

    /// Drops a received message without forwarding it and without penalising the peer.
    fn ignore(&mut self, id: &gossipsub::MessageId, source: &PeerId) {
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(id, source, MessageAcceptance::Ignore);
    }

    fn on_sync(&mut self, event: request_response::Event<Vec<u8>, Vec<u8>>) {
        use request_response::{Event as E, Message as M};
        match event {
            E::Message {
                peer,
                message:
                    M::Request {
                        request_id,
                        request,
                        channel,
                    },
                ..
            } => {
                metrics::inc(&self.counters.requests_received);
                let Some(writer) = writer_id(&peer) else {
                    return;
                };
                let id = self.pending.insert(Pending {
                    request: request_id,
                    peer,
                    channel,
                });
                let event = Event::Request {
                    peer: writer,
                    channel: id,
                    data: request,
                };
                self.deliver_from(writer, event);
            }
            E::Message {
                message:
                    M::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                metrics::inc(&self.counters.responses_received);
                if let Some((request, peer)) = self.requests.remove(&request_id) {
                    let event = Event::Response {
                        peer,
                        request,
                        data: response,
                    };
                    self.deliver_from(peer, event);
                }
            }
            E::OutboundFailure {
                request_id, error, ..
            } => {
                metrics::inc(&self.counters.requests_failed);
                if let Some((request, peer)) = self.requests.remove(&request_id) {
                    debug!(peer = %peer, request = ?request, error = %error, "request failed");
                    let _ = self.emit_lossy(Event::RequestFailed {
                        peer,
                        request,
                        reason: error.to_string(),
                    });
                }
            }
            E::InboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                self.pending.forget(request_id);
                if !matches!(error, request_response::InboundFailure::ResponseOmission) {
                    metrics::inc(&self.counters.responses_failed);
                }
                debug!(peer = %peer, error = %error, "inbound request failed");
            }
            E::ResponseSent { .. } => metrics::inc(&self.counters.responses_sent),
        }
    }

    /// Hands a message event from `peer` to the node, unless a delay holds it (fault hook).
    fn deliver_from(&mut self, peer: WriterId, event: Event) {
        #[cfg(feature = "fault-injection")]
        let Some(event) = self.delays.hold(std::time::Instant::now(), peer, event) else {
            return;
        };
        #[cfg(not(feature = "fault-injection"))]
        let _ = peer;
        self.deliver(event);
    }

    /// Hands a message event to the node. If its queue is full the event is dropped and
    /// counted: gossip is ignored (not forwarded, sender not blamed), and a request's channel
    /// is dropped, which fails it at the requester at once.
    fn deliver(&mut self, event: Event) {
        let Err(event) = self.emit_lossy(event) else {
            return;
        };
        match event {
            Event::Gossip { id, .. } => {
                metrics::inc(&self.counters.gossip_dropped);
                if let Some(source) = peer_id(&id.source) {
                    self.ignore(&gossipsub::MessageId::new(&id.hash), &source);
                }
            }
            Event::Request { channel, .. } => {
                metrics::inc(&self.counters.requests_dropped);
                drop(self.pending.take(channel));
            }
            _ => {}
        }
    }

    /// When the next held message is due (fault hook).
    #[cfg(feature = "fault-injection")]
    fn next_delayed(&self) -> Option<tokio::time::Instant> {
        self.delays.next_due().map(tokio::time::Instant::from_std)
    }

    /// Without the fault hook nothing is ever held.
    #[cfg(not(feature = "fault-injection"))]
    fn next_delayed(&self) -> Option<tokio::time::Instant> {
        None
    }

    /// Hands the node the held messages that are due (fault hook).
    fn release_delayed(&mut self) {
        #[cfg(feature = "fault-injection")]
        while let Some(event) = self.delays.pop_due(std::time::Instant::now()) {
            self.deliver(event);
        }
    }

    fn update_connected(&self) {
        let n = self.swarm.connected_peers().count();
        metrics::set(&self.counters.connected_peers, n as u64);
    }

    /// Sends a connection event, waiting for room (rare events; back-pressure is fine).
    async fn emit(&mut self, event: Event) {
        if self.events.send(event).await.is_err() {
            self.stopped = true;
        }
    }

    /// Sends a data event if there is room; a full queue drops it (counted) and returns it.
    fn emit_lossy(&mut self, event: Event) -> Result<(), Event> {
        match self.events.try_send(event) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(event)) => {
                metrics::inc(&self.counters.events_dropped);
                debug!("event queue full: event dropped");
                Err(event)
            }
            Err(mpsc::error::TrySendError::Closed(event)) => {
                self.stopped = true;
                Err(event)
            }
        }
    }
}
