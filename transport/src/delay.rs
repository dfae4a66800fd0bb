//! Fault hook: an added one-way delay per peer, for emulating latency where the kernel has no
//! `netem` (the simulations' emulate mode).
//!
//! The swarm task holds every gossip message, sync request and sync answer that arrives from a
//! peer with a delay set, and hands it to the node once the delay has passed. Holding inbound
//! messages delays both directions of a link (each end holds what it receives), and delays
//! gossip forwarding too, since gossipsub forwards only after the node's verdict. Connection
//! set-up and gossipsub's own control messages are not delayed.
//!
//! Pure scheduling: time is an argument, and the delay of each message is drawn from the
//! peer's range by a hash of a seed and a counter, so the same calls give the same schedule.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

use crate::{MAX_DELAY, WriterId};

/// Most messages held at once; beyond it messages pass undelayed (and a warning is logged).
pub(crate) const MAX_HELD: usize = 65_536;

/// Messages held back per peer delay.
#[derive(Debug)]
pub(crate) struct Delays<T> {
    seed: [u8; 32],
    /// One-way delay range per peer.
    by_peer: HashMap<WriterId, (Duration, Duration)>,
    /// Held messages by (due, arrival order).
    held: BTreeMap<(Instant, u64), T>,
    next: u64,
}

impl<T> Delays<T> {
    pub(crate) fn new(seed: [u8; 32]) -> Self {
        Delays {
            seed,
            by_peer: HashMap::new(),
            held: BTreeMap::new(),
            next: 0,
        }
    }

    /// Sets the delay of messages from `peers` to a uniform draw in `[min, max]` per message
    /// (both cut to [`MAX_DELAY`], `min` to `max`); a zero `max` removes it (messages already
    /// held keep their time).
    pub(crate) fn set(
        &mut self,
        peers: impl IntoIterator<Item = WriterId>,
        min: Duration,
        max: Duration,
    ) {
        let max = max.min(MAX_DELAY);
        let min = min.min(max);
        for peer in peers {
            if max.is_zero() {
                self.by_peer.remove(&peer);
            } else {
                self.by_peer.insert(peer, (min, max));
            }
        }
    }

    /// Holds `message` from `peer` until its delay has passed; gives it back when `peer` has no
    /// delay, or when [`MAX_HELD`] messages are held already.
    pub(crate) fn hold(&mut self, now: Instant, peer: WriterId, message: T) -> Option<T> {
        let Some(&(min, max)) = self.by_peer.get(&peer) else {
            return Some(message);
        };
        if self.held.len() >= MAX_HELD {
            tracing::warn!(
                held = MAX_HELD,
                "delay fault hook full: message passes undelayed"
            );
            return Some(message);
        }
        self.next += 1;
        let span = (max - min).as_micros() as u64;
        let jitter = if span == 0 {
            0
        } else {
            let h = Sha256::new()
                .chain_update(self.seed)
                .chain_update(self.next.to_le_bytes())
                .finalize();
            let mut word = [0u8; 8];
            word.copy_from_slice(&h[..8]);
            u64::from_le_bytes(word) % (span + 1)
        };
        let due = now + min + Duration::from_micros(jitter);
        self.held.insert((due, self.next), message);
        None
    }

    /// When the next held message is due.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.held.first_key_value().map(|((due, _), _)| *due)
    }

    /// Takes the next message due by `now`, earliest first.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<T> {
        let entry = self.held.first_entry()?;
        if entry.key().0 > now {
            return None;
        }
        Some(entry.remove())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(i: u8) -> WriterId {
        WriterId([i; 32])
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_peer_without_a_delay_passes_at_once() {
        let mut d = Delays::new([0; 32]);
        d.set([peer(1)], ms(20), ms(20));
        assert_eq!(d.hold(Instant::now(), peer(2), "x"), Some("x"));
        assert_eq!(d.next_due(), None);
    }

    #[test]
    fn a_fixed_delay_holds_each_message_exactly_that_long_in_order() {
        let t0 = Instant::now();
        let mut d = Delays::new([0; 32]);
        d.set([peer(1)], ms(20), ms(20));
        assert_eq!(d.hold(t0, peer(1), 1), None);
        assert_eq!(d.hold(t0, peer(1), 2), None);
        assert_eq!(d.hold(t0 + ms(5), peer(1), 3), None);
        assert_eq!(d.next_due(), Some(t0 + ms(20)));
        assert_eq!(d.pop_due(t0 + ms(19)), None);
        assert_eq!(d.pop_due(t0 + ms(20)), Some(1));
        assert_eq!(d.pop_due(t0 + ms(20)), Some(2));
        assert_eq!(d.pop_due(t0 + ms(24)), None);
        assert_eq!(d.pop_due(t0 + ms(25)), Some(3));
        assert_eq!(d.next_due(), None);
    }

    #[test]
    fn a_range_draws_each_delay_within_it_and_the_same_seed_draws_the_same() {
        let t0 = Instant::now();
        let draws = |seed| {
            let mut d = Delays::new(seed);
            d.set([peer(1)], ms(10), ms(50));
            for i in 0..200 {
                assert_eq!(d.hold(t0, peer(1), i), None);
            }
            let mut dues = Vec::new();
            while let Some(due) = d.next_due() {
                d.pop_due(due);
                dues.push(due - t0);
            }
            dues
        };
        let a = draws([1; 32]);
        assert_eq!(a.len(), 200);
        assert!(a.iter().all(|&x| (ms(10)..=ms(50)).contains(&x)), "{a:?}");
        // Spread over the range, not one value.
        assert!(
            a[0] < ms(15) && a[199] > ms(45),
            "{:?} .. {:?}",
            a[0],
            a[199]
        );
        assert_eq!(a, draws([1; 32]));
        assert_ne!(a, draws([2; 32]));
    }

    #[test]
    fn a_zero_delay_removes_it_and_held_messages_keep_their_time() {
        let t0 = Instant::now();
        let mut d = Delays::new([0; 32]);
        d.set([peer(1), peer(2)], ms(30), ms(30));
        assert_eq!(d.hold(t0, peer(1), 1), None);
        d.set([peer(1)], Duration::ZERO, Duration::ZERO);
        assert_eq!(d.hold(t0, peer(1), 2), Some(2));
        assert_eq!(d.hold(t0, peer(2), 3), None);
        assert_eq!(d.pop_due(t0 + ms(30)), Some(1));
        assert_eq!(d.pop_due(t0 + ms(30)), Some(3));
    }

    #[test]
    fn beyond_the_bound_messages_pass_undelayed() {
        let t0 = Instant::now();
        let mut d = Delays::new([0; 32]);
        d.set([peer(1)], ms(10), ms(10));
        for i in 0..MAX_HELD {
            assert_eq!(d.hold(t0, peer(1), i), None);
        }
        assert_eq!(d.hold(t0, peer(1), MAX_HELD), Some(MAX_HELD));
    }
}
