//! Connection slots per client source: how many connections a server holds at once, in all
//! and from one source, so that one source cannot take the slots of all others.
//!
//! A source is what [`source_key`] makes of the client's IP address: an IPv4 address, or the
//! /64 of an IPv6 address (a host's or site's usual allocation, so changing the low bits does
//! not make another source). A slot is taken when a connection is accepted, before its
//! handshake, and given back when the [`Slot`] is dropped, whatever ended the connection. A
//! refused connection is to be closed at once by the caller: nothing waits for a slot.
//!
//! The table keeps one entry per source that holds a slot now, so it never holds more than
//! the total number of slots.
//!
//! The setup endpoint ([`crate::setup`]) and the node's admin API use it.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Why [`Slots::try_acquire`] refused a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SlotRefused {
    /// Every slot is taken.
    #[error("every connection slot is taken")]
    Full,
    /// The source holds as many slots as one source may.
    #[error("this source holds as many connections as one source may")]
    SourceFull,
}

/// Connection slots: at most `total` at once, and at most `per_source` for one source.
#[derive(Debug)]
pub struct Slots {
    total: usize,
    per_source: usize,
    held: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    total: usize,
    by_source: HashMap<IpAddr, usize>,
}

/// One taken slot; dropping it gives the slot back.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
    source: IpAddr,
}

/// The source a client address counts under: its IPv4 address, or the /64 of its IPv6
/// address. An IPv4-mapped IPv6 address counts as the IPv4 address.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        v4 => v4,
    }
}

impl Slots {
    /// `total` slots, at most `per_source` of them for one source (both at least 1).
    pub fn new(total: usize, per_source: usize) -> Arc<Slots> {
        Arc::new(Slots {
            total: total.max(1),
            per_source: per_source.max(1),
            held: Mutex::new(Held::default()),
        })
    }

    /// Takes a slot for a connection from `ip`, or says why not.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, SlotRefused> {
        let source = source_key(ip);
        let mut held = self.lock();
        let of_source = held.by_source.get(&source).copied().unwrap_or(0);
        if of_source >= self.per_source {
            return Err(SlotRefused::SourceFull);
        }
        if held.total >= self.total {
            return Err(SlotRefused::Full);
        }
        held.total += 1;
        held.by_source.insert(source, of_source + 1);
        Ok(Slot {
            slots: self.clone(),
            source,
        })
    }

    /// Slots taken now.
    pub fn taken(&self) -> usize {
        self.lock().total
    }

    /// Sources holding a slot now.
    pub fn sources(&self) -> usize {
        self.lock().by_source.len()
    }

    /// Each step keeps the table consistent, so a panic while it was held leaves it usable.
    fn lock(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.slots.lock();
        held.total = held.total.saturating_sub(1);
        if let Some(n) = held.by_source.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                held.by_source.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    #[test]
    fn sources_are_ipv4_addresses_and_ipv6_slash_64s() {
        assert_eq!(source_key(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(source_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(source_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_ne!(source_key(ip("2001:db8:1:3::1")), ip("2001:db8:1:2::"));
    }

    #[test]
    fn one_source_holds_at_most_its_share_and_others_still_get_slots() {
        let slots = Slots::new(5, 2);
        let a1 = slots.try_acquire(ip("127.0.0.2")).unwrap();
        let _a2 = slots.try_acquire(ip("127.0.0.2")).unwrap();
        assert_eq!(
            slots.try_acquire(ip("127.0.0.2")).unwrap_err(),
            SlotRefused::SourceFull
        );
        // The same /64 is the same source.
        let _v6 = slots.try_acquire(ip("2001:db8::1")).unwrap();
        let _v6b = slots.try_acquire(ip("2001:db8::ffff")).unwrap();
        assert_eq!(
            slots.try_acquire(ip("2001:db8::2")).unwrap_err(),
            SlotRefused::SourceFull
        );
        let _b = slots.try_acquire(ip("127.0.0.1")).unwrap();
        assert_eq!(
            slots.try_acquire(ip("127.0.0.3")).unwrap_err(),
            SlotRefused::Full
        );
        assert_eq!((slots.taken(), slots.sources()), (5, 3));
        // A slot given back is free again, for its source or another.
        drop(a1);
        assert_eq!(slots.taken(), 4);
        let a3 = slots.try_acquire(ip("127.0.0.2")).unwrap();
        drop(a3);
        let _c = slots.try_acquire(ip("127.0.0.3")).unwrap();
    }

    #[test]
    fn the_table_forgets_sources_that_hold_nothing() {
        let slots = Slots::new(3, 1);
        for i in 0..1000u32 {
            let held = slots
                .try_acquire(IpAddr::from(std::net::Ipv4Addr::from(i)))
                .unwrap();
            assert!(slots.sources() <= 3);
            drop(held);
        }
        assert_eq!((slots.taken(), slots.sources()), (0, 0));
    }
}
