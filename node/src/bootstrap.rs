//! Bootstrap addresses dialled again until every roster member is reached.
//!
//! The core redials a roster peer at the address it last connected from. A peer it never
//! reached has no such address: the only ways to it are the `--peer` addresses and the roster
//! addresses that resolved at start. A single dial of those at start is not enough (the peer
//! may be down, or the network not up yet, or the link cut before the first connection was
//! set up), so, as Consul's `retry_join` does, they are dialled again with a backoff (1 s,
//! doubling to 30 s) for as long as some roster member is neither connected nor has a known
//! address. Pure: the daemon asks [`Bootstrap::due`] every tick and dials what it returns.

use std::net::SocketAddr;
use std::time::Duration;

use crate::core::Millis;

/// The first retry's delay.
pub const RETRY_MIN: Duration = Duration::from_secs(1);
/// The longest delay between two retries.
pub const RETRY_MAX: Duration = Duration::from_secs(30);

/// The bootstrap addresses and when to dial them next.
#[derive(Debug)]
pub struct Bootstrap {
    addrs: Vec<SocketAddr>,
    next_at: Millis,
    backoff: Duration,
}

impl Bootstrap {
    /// `addrs` were dialled at `now`; the first retry comes [`RETRY_MIN`] later.
    pub fn new(mut addrs: Vec<SocketAddr>, now: Millis) -> Self {
        addrs.sort_unstable();
        addrs.dedup();
        Self {
            addrs,
            next_at: now + RETRY_MIN.as_millis() as u64,
            backoff: RETRY_MIN,
        }
    }

    /// The addresses to dial at `now`: all of them when a retry is due and some member is
    /// `unreached`, else none. Once every member is reached the backoff starts over, so a
    /// later loss is retried after [`RETRY_MIN`] again.
    pub fn due(&mut self, now: Millis, unreached: bool) -> &[SocketAddr] {
        if !unreached {
            self.backoff = RETRY_MIN;
            self.next_at = now + RETRY_MIN.as_millis() as u64;
            return &[];
        }
        if now < self.next_at {
            return &[];
        }
        self.backoff = (self.backoff * 2).min(RETRY_MAX);
        self.next_at = now + self.backoff.as_millis() as u64;
        &self.addrs
    }

    /// Dials at the next tick, forgetting the backoff (links are known to be back).
    pub fn now(&mut self, now: Millis) {
        self.backoff = RETRY_MIN;
        self.next_at = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// The times in 0..until (stepping 100 ms) at which `due` returns the addresses.
    fn dials(b: &mut Bootstrap, from: Millis, until: Millis, unreached: bool) -> Vec<Millis> {
        (from..until)
            .step_by(100)
            .filter(|&t| !b.due(t, unreached).is_empty())
            .collect()
    }

    #[test]
    fn an_unreached_member_makes_it_retry_with_a_doubling_backoff_up_to_30_s() {
        let mut b = Bootstrap::new(vec![addr(2), addr(1), addr(2)], 0);
        assert_eq!(
            b.due(1_000, true),
            &[addr(1), addr(2)],
            "sorted, deduplicated"
        );
        let later = dials(&mut b, 1_100, 200_000, true);
        assert_eq!(
            later,
            vec![
                3_000, 7_000, 15_000, 31_000, 61_000, 91_000, 121_000, 151_000, 181_000
            ]
        );
    }

    #[test]
    fn nothing_is_dialled_while_every_member_is_reached_and_a_new_loss_starts_over() {
        let mut b = Bootstrap::new(vec![addr(1)], 0);
        assert!(dials(&mut b, 0, 60_000, true).len() > 3);
        assert!(dials(&mut b, 60_000, 120_000, false).is_empty());
        // Last seen reached at 119.9 s: dialled 1 s later, then 2 s after that.
        assert_eq!(
            dials(&mut b, 120_000, 124_000, true),
            vec![120_900, 122_900]
        );
    }

    #[test]
    fn now_dials_at_once_and_forgets_the_backoff() {
        let mut b = Bootstrap::new(vec![addr(1)], 0);
        dials(&mut b, 0, 100_000, true);
        b.now(100_000);
        assert_eq!(
            dials(&mut b, 100_000, 104_000, true),
            vec![100_000, 102_000]
        );
    }

    #[test]
    fn with_no_address_nothing_is_dialled() {
        let mut b = Bootstrap::new(Vec::new(), 0);
        assert!(dials(&mut b, 0, 100_000, true).is_empty());
    }
}
