//! Admission: only roster peers (and, with fault injection, not blocked ones) get a connection,
//! and at most [`MAX_CONNECTIONS_PER_PEER`] each.
//!
//! The check runs when a connection is established, before any protocol handler exists, so a
//! denied peer exchanges no gossip, requests or identify data. Every admitted connection gets
//! a handler that keeps it alive: a quiet cluster keeps its connections (see
//! [`Config::idle_timeout`](crate::Config::idle_timeout)).

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::fmt;
use std::task::{Context, Poll};

use libp2p::PeerId;
use libp2p::core::transport::PortUse;
use libp2p::core::upgrade::DeniedUpgrade;
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::swarm::handler::ConnectionEvent;
use libp2p::swarm::{
    ConnectionDenied, ConnectionHandlerEvent, ConnectionId, FromSwarm, NetworkBehaviour,
    SubstreamProtocol, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
};

/// Connections one peer may hold at once: two, as both sides may dial at the same moment.
pub(crate) const MAX_CONNECTIONS_PER_PEER: usize = 2;

/// Why a connection was denied; the cause inside [`ConnectionDenied`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Denied {
    /// The peer is not in the roster.
    NotInRoster(PeerId),
    /// The peer is blocked by the fault-injection hook.
    Blocked(PeerId),
    /// The peer already holds [`MAX_CONNECTIONS_PER_PEER`] connections.
    TooManyConnections(PeerId),
}

impl Denied {
    pub(crate) fn peer(&self) -> PeerId {
        match self {
            Self::NotInRoster(peer) | Self::Blocked(peer) | Self::TooManyConnections(peer) => *peer,
        }
    }

    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Self::NotInRoster(_) => "not in the roster",
            Self::Blocked(_) => "blocked by the fault-injection hook",
            Self::TooManyConnections(_) => "already holds the most connections a peer may",
        }
    }
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "peer {} {}", self.peer(), self.reason())
    }
}

impl std::error::Error for Denied {}

/// The admission behaviour: an allow set (the roster), a deny set (fault hook) and the count
/// of each peer's established connections.
#[derive(Debug, Default)]
pub(crate) struct Admission {
    roster: HashSet<PeerId>,
    blocked: HashSet<PeerId>,
    connections: HashMap<PeerId, usize>,
}

impl Admission {
    pub(crate) fn new(roster: HashSet<PeerId>) -> Self {
        Self {
            roster,
            blocked: HashSet::new(),
            connections: HashMap::new(),
        }
    }

    /// Whether `peer` may hold a connection, and if not why.
    pub(crate) fn check(&self, peer: PeerId) -> Result<(), Denied> {
        if !self.roster.contains(&peer) {
            Err(Denied::NotInRoster(peer))
        } else if self.blocked.contains(&peer) {
            Err(Denied::Blocked(peer))
        } else {
            Ok(())
        }
    }

    pub(crate) fn set_roster(&mut self, roster: HashSet<PeerId>) {
        self.roster = roster;
    }

    #[cfg_attr(not(feature = "fault-injection"), allow(dead_code))]
    pub(crate) fn set_blocked(&mut self, blocked: HashSet<PeerId>) {
        self.blocked = blocked;
    }

    fn admit(&self, peer: PeerId) -> Result<KeepAlive, ConnectionDenied> {
        self.check(peer).map_err(ConnectionDenied::new)?;
        if self.connections.get(&peer).copied().unwrap_or(0) >= MAX_CONNECTIONS_PER_PEER {
            return Err(ConnectionDenied::new(Denied::TooManyConnections(peer)));
        }
        Ok(KeepAlive)
    }
}

impl NetworkBehaviour for Admission {
    type ConnectionHandler = KeepAlive;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.admit(peer)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.admit(peer)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(e) => {
                *self.connections.entry(e.peer_id).or_default() += 1;
            }
            FromSwarm::ConnectionClosed(e) => {
                if let Some(n) = self.connections.get_mut(&e.peer_id) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.connections.remove(&e.peer_id);
                    }
                }
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Infallible, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

/// A handler without protocols that keeps its (admitted) connection alive.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeepAlive;

impl libp2p::swarm::ConnectionHandler for KeepAlive {
    type FromBehaviour = Infallible;
    type ToBehaviour = Infallible;
    type InboundProtocol = DeniedUpgrade;
    type OutboundProtocol = DeniedUpgrade;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> SubstreamProtocol<DeniedUpgrade> {
        SubstreamProtocol::new(DeniedUpgrade, ())
    }

    fn connection_keep_alive(&self) -> bool {
        true
    }

    fn on_behaviour_event(&mut self, event: Infallible) {
        match event {}
    }

    fn poll(
        &mut self,
        _: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<DeniedUpgrade, (), Infallible>> {
        Poll::Pending
    }

    fn on_connection_event(&mut self, _: ConnectionEvent<DeniedUpgrade, DeniedUpgrade>) {}
}
