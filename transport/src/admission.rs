//! Admission: only roster peers (and, with fault injection, not blocked ones) get a connection,
//! and at most [`MAX_CONNECTIONS_PER_PEER`] each.
//!
//! A peer that connects again while its old connection still looks alive has restarted (or
//! lost the connection on its side): the old connection is dead, and QUIC notices only at its
//! idle timeout. libp2p-gossipsub greets a peer (sends its subscriptions) only on the first
//! connection, so keeping the old one and admitting the new one would leave the restarted peer
//! never learning who subscribes: it would publish to no one. Such a connection is refused and
//! every connection of the peer closed ([`Denied::Stale`]), so both sides dial again from
//! nothing and greet each other. Both sides dialling at the same moment is told apart by age:
//! a connection younger than [`SIMULTANEOUS_DIAL`] is not stale.
//!
//! The check runs when a connection is established, before any protocol handler exists, so a
//! denied peer exchanges no gossip, requests or identify data. Every admitted connection gets
//! a handler that keeps it alive: a quiet cluster keeps its connections (see
//! [`Config::idle_timeout`](crate::Config::idle_timeout)).

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::fmt;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use libp2p::core::transport::PortUse;
use libp2p::core::upgrade::DeniedUpgrade;
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::swarm::handler::ConnectionEvent;
use libp2p::swarm::{
    CloseConnection, ConnectionDenied, ConnectionHandlerEvent, ConnectionId, FromSwarm,
    NetworkBehaviour, SubstreamProtocol, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
};

/// Connections one peer may hold at once: two, as both sides may dial at the same moment.
pub(crate) const MAX_CONNECTIONS_PER_PEER: usize = 2;

/// Two connections of one peer established within this time are the two sides dialling at
/// once; a new connection beside only older ones means the peer started afresh.
pub(crate) const SIMULTANEOUS_DIAL: Duration = Duration::from_secs(2);

/// Why a connection was denied; the cause inside [`ConnectionDenied`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Denied {
    /// The peer is not in the roster.
    NotInRoster(PeerId),
    /// The peer is blocked by the fault-injection hook.
    Blocked(PeerId),
    /// The peer already holds [`MAX_CONNECTIONS_PER_PEER`] connections.
    TooManyConnections(PeerId),
    /// The peer connected again beside connections older than [`SIMULTANEOUS_DIAL`]: all are
    /// closed, so both sides start afresh.
    Stale(PeerId),
}

impl Denied {
    pub(crate) fn peer(&self) -> PeerId {
        match self {
            Self::NotInRoster(peer)
            | Self::Blocked(peer)
            | Self::TooManyConnections(peer)
            | Self::Stale(peer) => *peer,
        }
    }

    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Self::NotInRoster(_) => "not in the roster",
            Self::Blocked(_) => "blocked by the fault-injection hook",
            Self::TooManyConnections(_) => "already holds the most connections a peer may",
            Self::Stale(_) => {
                "connected again beside an old connection: every connection closed, to start afresh"
            }
        }
    }
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "peer {} {}", self.peer(), self.reason())
    }
}

impl std::error::Error for Denied {}

/// The admission behaviour: an allow set (the roster), a deny set (fault hook), each peer's
/// established connections with the time each was established, and the peers whose every
/// connection is to be closed.
#[derive(Debug, Default)]
pub(crate) struct Admission {
    roster: HashSet<PeerId>,
    blocked: HashSet<PeerId>,
    connections: HashMap<PeerId, Vec<(ConnectionId, Instant)>>,
    close: Vec<PeerId>,
}

impl Admission {
    pub(crate) fn new(roster: HashSet<PeerId>) -> Self {
        Self {
            roster,
            blocked: HashSet::new(),
            connections: HashMap::new(),
            close: Vec::new(),
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

    fn admit(&mut self, peer: PeerId, now: Instant) -> Result<KeepAlive, ConnectionDenied> {
        self.check(peer).map_err(ConnectionDenied::new)?;
        let held = self
            .connections
            .get(&peer)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        if !held.is_empty()
            && held
                .iter()
                .all(|(_, at)| now.saturating_duration_since(*at) >= SIMULTANEOUS_DIAL)
        {
            self.close.push(peer);
            return Err(ConnectionDenied::new(Denied::Stale(peer)));
        }
        if held.len() >= MAX_CONNECTIONS_PER_PEER {
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
        self.admit(peer, Instant::now())
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.admit(peer, Instant::now())
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(e) => {
                self.connections
                    .entry(e.peer_id)
                    .or_default()
                    .push((e.connection_id, Instant::now()));
            }
            FromSwarm::ConnectionClosed(e) => {
                if let Some(held) = self.connections.get_mut(&e.peer_id) {
                    held.retain(|(id, _)| *id != e.connection_id);
                    if held.is_empty() {
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
        match self.close.pop() {
            Some(peer_id) => Poll::Ready(ToSwarm::CloseConnection {
                peer_id,
                connection: CloseConnection::All,
            }),
            None => Poll::Pending,
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn denied(result: Result<KeepAlive, ConnectionDenied>) -> Option<Denied> {
        result
            .err()
            .map(|e| e.downcast::<Denied>().expect("a Denied cause"))
    }

    #[test]
    fn a_new_connection_beside_only_old_ones_closes_them_all_and_a_simultaneous_one_passes() {
        let peer = PeerId::random();
        let mut admission = Admission::new([peer].into());
        let start = Instant::now();
        let hold = |a: &mut Admission, id: usize, at: Instant| {
            a.connections
                .entry(peer)
                .or_default()
                .push((ConnectionId::new_unchecked(id), at));
        };
        assert_eq!(denied(admission.admit(peer, start)), None, "the first one");
        hold(&mut admission, 1, start);
        let soon = start + SIMULTANEOUS_DIAL / 2;
        assert_eq!(
            denied(admission.admit(peer, soon)),
            None,
            "both sides dialled"
        );
        hold(&mut admission, 2, soon);
        assert_eq!(
            denied(admission.admit(peer, soon)),
            Some(Denied::TooManyConnections(peer))
        );
        assert!(admission.close.is_empty());
        let later = soon + SIMULTANEOUS_DIAL;
        assert_eq!(
            denied(admission.admit(peer, later)),
            Some(Denied::Stale(peer))
        );
        assert_eq!(admission.close, vec![peer], "every connection is closed");
        let stranger = PeerId::random();
        assert_eq!(
            denied(admission.admit(stranger, later)),
            Some(Denied::NotInRoster(stranger))
        );
    }
}
