//! Peers whose gossipsub greeting never came.
//!
//! libp2p-gossipsub sends its subscriptions to a peer only when its first connection to that
//! peer opens. A peer that still holds a connection to our previous process (we were killed and
//! started again; QUIC notices a dead peer only at its idle timeout) takes our new connection
//! as a second one and never greets us: we would never learn that it subscribes and never
//! publish to it. Admission closes such connections on the other side when they are old enough
//! ([`crate::admission::Denied::Stale`]); this watch covers the rest from our side: a peer
//! connected for [`GREETING_TIMEOUT`] whose subscriptions are still unknown is disconnected, so
//! both sides dial again and the new connection is a first one for both.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::PeerId;

/// How long a connected peer may stay without a known subscription. A greeting travels in the
/// connection's first round trip; five seconds leaves room for a loaded machine.
pub(crate) const GREETING_TIMEOUT: Duration = Duration::from_secs(5);

/// Connected peers not yet greeted, with the time their first connection opened.
#[derive(Debug, Default)]
pub(crate) struct Greetings {
    waiting: HashMap<PeerId, Instant>,
}

impl Greetings {
    /// `peer`'s first connection opened at `now`.
    pub(crate) fn connected(&mut self, peer: PeerId, now: Instant) {
        self.waiting.entry(peer).or_insert(now);
    }

    /// `peer`'s last connection closed.
    pub(crate) fn disconnected(&mut self, peer: &PeerId) {
        self.waiting.remove(peer);
    }

    /// The peers to disconnect at `now`: waiting for [`GREETING_TIMEOUT`] and still not
    /// `greeted`. Greeted peers are no longer watched; each peer is returned once per
    /// connection.
    pub(crate) fn overdue(
        &mut self,
        now: Instant,
        greeted: impl Fn(&PeerId) -> bool,
    ) -> Vec<PeerId> {
        let mut overdue = Vec::new();
        self.waiting.retain(|peer, since| {
            if greeted(peer) {
                return false;
            }
            if now.saturating_duration_since(*since) >= GREETING_TIMEOUT {
                overdue.push(*peer);
                return false;
            }
            true
        });
        overdue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_peers_silent_past_the_timeout_are_overdue_and_only_once() {
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        let start = Instant::now();
        let mut g = Greetings::default();
        g.connected(a, start);
        g.connected(b, start);
        g.connected(c, start + Duration::from_secs(3));
        g.connected(a, start + Duration::from_secs(4)); // a second connection: same clock
        assert!(
            g.overdue(start + Duration::from_secs(1), |_| false)
                .is_empty()
        );
        let at = start + GREETING_TIMEOUT;
        assert_eq!(
            g.overdue(at, |p| *p == b),
            vec![a],
            "b was greeted, c is young"
        );
        assert!(g.overdue(at, |_| false).is_empty(), "a is returned once");
        assert!(
            g.overdue(at + GREETING_TIMEOUT, |_| true).is_empty(),
            "c greeted late"
        );
        g.connected(a, at + GREETING_TIMEOUT);
        g.disconnected(&a);
        assert!(g.overdue(at + 3 * GREETING_TIMEOUT, |_| false).is_empty());
    }
}
