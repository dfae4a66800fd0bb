//! Rate limiting by GCRA (the generic cell rate algorithm), as pure code: no clock, time is an
//! argument in milliseconds (any origin, as long as one limiter is always given the same one).
//!
//! A [`Gcra`] remembers one instant, the *theoretical arrival time* (TAT): when the next event
//! would be due if events had come exactly at the steady rate. An event at `now` passes while
//! `TAT <= now + (burst - 1) * interval`, and moves the TAT to `max(TAT, now) + interval`. So
//! `burst` events pass back to back, then one per `interval`, and quiet time refills the burst.
//! A refused event changes nothing and says how long until one would pass ([`Limited`]).
//!
//! A [`RateTable`] keeps one [`Gcra`] per key (a user, a client address) under one [`Rate`],
//! in at most a fixed number of entries: an entry whose TAT has passed is the same as no entry
//! (a full burst), so it is dropped; when the table is full anyway, the entry closest to
//! having a full burst is forgotten, and counted.
//!
//! Used by the join protocol ([`crate::join`], one limiter for the setup endpoint) and the
//! admin API ([`crate::admin`], per user and per client address).

use std::collections::{BTreeMap, BTreeSet};
use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

/// How many events a limiter lets through: `burst` at once, then one per `interval`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Events that pass back to back after a quiet spell.
    pub burst: NonZeroU32,
    /// Time between events at the steady rate, once the burst is spent (counted in whole
    /// milliseconds, at least one).
    pub interval: Duration,
}

/// An event refused by a limiter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limited {
    /// How long until the same event would pass (no other event coming meanwhile).
    pub retry_after: Duration,
}

/// One limiter's state: the theoretical arrival time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gcra {
    tat_ms: u64,
}

/// [`Gcra`] limiters by key, under one [`Rate`], bounded in entries.
#[derive(Debug)]
pub struct RateTable<K> {
    rate: Rate,
    capacity: NonZeroUsize,
    by_key: BTreeMap<K, Gcra>,
    by_due: BTreeSet<(u64, K)>,
    counters: RateCounters,
}

/// What a [`RateTable`] refused and forgot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateCounters {
    /// Events refused.
    pub limited: u64,
    /// Keys forgotten before their burst was full again, because the table was full.
    pub forgotten: u64,
}

impl Rate {
    /// `burst` at once, then one per `interval`.
    pub const fn new(burst: NonZeroU32, interval: Duration) -> Rate {
        Rate { burst, interval }
    }

    /// The interval in whole milliseconds, at least one.
    fn interval_ms(&self) -> u64 {
        u64::try_from(self.interval.as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }
}

impl Limited {
    /// [`Limited::retry_after`] in whole seconds, rounded up and at least one (for an HTTP
    /// `Retry-After` header).
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after
            .as_millis()
            .div_ceil(1000)
            .max(1)
            .try_into()
            .unwrap_or(u64::MAX)
    }
}

impl Gcra {
    /// A limiter with its whole burst available.
    pub const fn new() -> Gcra {
        Gcra { tat_ms: 0 }
    }

    /// Lets one event at `now_ms` through under `rate`, or refuses it (the state is then
    /// unchanged).
    pub fn check(&mut self, rate: Rate, now_ms: u64) -> Result<(), Limited> {
        let interval = rate.interval_ms();
        let tolerance = u64::from(rate.burst.get() - 1).saturating_mul(interval);
        let due = self.tat_ms.max(now_ms);
        let latest = now_ms.saturating_add(tolerance);
        if due > latest {
            return Err(Limited {
                retry_after: Duration::from_millis(due - latest),
            });
        }
        self.tat_ms = due.saturating_add(interval);
        Ok(())
    }

    /// Whether at `now_ms` the whole burst is available again (the limiter is as new).
    pub fn is_idle(&self, now_ms: u64) -> bool {
        self.tat_ms <= now_ms
    }
}

impl<K: Ord + Clone> RateTable<K> {
    /// An empty table limiting each key to `rate`, tracking at most `capacity` keys.
    pub fn new(rate: Rate, capacity: NonZeroUsize) -> RateTable<K> {
        RateTable {
            rate,
            capacity,
            by_key: BTreeMap::new(),
            by_due: BTreeSet::new(),
            counters: RateCounters::default(),
        }
    }

    /// The rate each key is limited to.
    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Lets one event of `key` at `now_ms` through, or refuses it (counted).
    pub fn check(&mut self, key: &K, now_ms: u64) -> Result<(), Limited> {
        self.forget_idle(now_ms);
        let known = self.by_key.get(key).copied();
        let mut gcra = known.unwrap_or_default();
        if let Err(limited) = gcra.check(self.rate, now_ms) {
            self.counters.limited += 1;
            return Err(limited);
        }
        match known {
            Some(old) => {
                self.by_due.remove(&(old.tat_ms, key.clone()));
            }
            None => {
                if self.by_key.len() >= self.capacity.get()
                    && let Some((_, oldest)) = self.by_due.pop_first()
                {
                    self.by_key.remove(&oldest);
                    self.counters.forgotten += 1;
                }
            }
        }
        self.by_key.insert(key.clone(), gcra);
        self.by_due.insert((gcra.tat_ms, key.clone()));
        Ok(())
    }

    /// Keys tracked now (each still short of a full burst, as of the last check).
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// What was refused and forgotten so far.
    pub fn counters(&self) -> RateCounters {
        self.counters
    }

    /// Drops the entries whose burst is full again at `now_ms`: they are the same as none.
    fn forget_idle(&mut self, now_ms: u64) {
        while let Some((due, _)) = self.by_due.first()
            && *due <= now_ms
        {
            if let Some((_, key)) = self.by_due.pop_first() {
                self.by_key.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const T0: u64 = 1_000_000;

    fn rate(burst: u32, interval_ms: u64) -> Rate {
        Rate::new(
            NonZeroU32::new(burst).expect("a test burst is not zero"),
            Duration::from_millis(interval_ms),
        )
    }

    fn table(burst: u32, interval_ms: u64, capacity: usize) -> RateTable<String> {
        RateTable::new(
            rate(burst, interval_ms),
            NonZeroUsize::new(capacity).expect("a test capacity is not zero"),
        )
    }

    #[test]
    fn the_burst_passes_at_once_then_one_per_interval() {
        let r = rate(3, 1_000);
        let mut gcra = Gcra::new();
        for _ in 0..3 {
            gcra.check(r, T0).unwrap();
        }
        let before = gcra;
        assert_eq!(
            gcra.check(r, T0),
            Err(Limited {
                retry_after: Duration::from_millis(1_000)
            })
        );
        assert_eq!(gcra, before, "a refusal changes nothing");
        assert_eq!(
            gcra.check(r, T0 + 999),
            Err(Limited {
                retry_after: Duration::from_millis(1)
            })
        );
        gcra.check(r, T0 + 1_000).unwrap();
        assert!(gcra.check(r, T0 + 1_000).is_err());
        // A quiet spell refills the whole burst, and no more.
        let later = T0 + 10_000;
        assert!(gcra.is_idle(later));
        for _ in 0..3 {
            gcra.check(r, later).unwrap();
        }
        assert!(gcra.check(r, later).is_err());
    }

    #[test]
    fn retry_after_is_rounded_up_to_whole_seconds() {
        let secs = |ms| {
            Limited {
                retry_after: Duration::from_millis(ms),
            }
            .retry_after_secs()
        };
        assert_eq!(secs(0), 1);
        assert_eq!(secs(1), 1);
        assert_eq!(secs(1_000), 1);
        assert_eq!(secs(1_001), 2);
        assert_eq!(secs(9_999), 10);
    }

    #[test]
    fn a_burst_of_one_and_extreme_rates_do_not_overflow() {
        let mut gcra = Gcra::new();
        gcra.check(rate(1, 50), 0).unwrap();
        assert_eq!(
            gcra.check(rate(1, 50), 10).unwrap_err().retry_after,
            Duration::from_millis(40)
        );
        let huge = Rate::new(NonZeroU32::MAX, Duration::MAX);
        let mut gcra = Gcra::new();
        gcra.check(huge, u64::MAX - 1).unwrap();
        assert!(gcra.check(huge, u64::MAX).is_ok());
        // A sub-millisecond interval counts as one millisecond.
        let mut gcra = Gcra::new();
        gcra.check(Rate::new(NonZeroU32::MIN, Duration::ZERO), 5)
            .unwrap();
        assert!(
            gcra.check(Rate::new(NonZeroU32::MIN, Duration::ZERO), 5)
                .is_err()
        );
    }

    #[test]
    fn keys_are_limited_independently_and_refusals_are_counted() {
        let mut t = table(2, 10_000, 16);
        let (alice, bob) = ("alice".to_string(), "bob".to_string());
        t.check(&alice, T0).unwrap();
        t.check(&alice, T0).unwrap();
        let limited = t.check(&alice, T0).unwrap_err();
        assert_eq!(limited.retry_after, Duration::from_secs(10));
        assert_eq!(limited.retry_after_secs(), 10);
        t.check(&bob, T0).unwrap();
        t.check(&bob, T0).unwrap();
        assert!(t.check(&alice, T0 + 9_999).is_err());
        t.check(&alice, T0 + 10_000).unwrap();
        assert_eq!(
            t.counters(),
            RateCounters {
                limited: 2,
                forgotten: 0
            }
        );
    }

    #[test]
    fn idle_keys_are_dropped_and_the_table_stays_within_its_capacity() {
        let mut t = table(2, 1_000, 4);
        for i in 0..4 {
            t.check(&format!("user{i}"), T0).unwrap();
        }
        assert_eq!(t.len(), 4);
        // Once their bursts are full again, entries go without being counted as forgotten.
        t.check(&"late".to_string(), T0 + 1_000).unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t.counters().forgotten, 0);
        // A table full of active keys forgets the one closest to a full burst.
        let mut t = table(2, 1_000, 4);
        t.check(&"early".to_string(), T0).unwrap();
        for i in 0..3 {
            let key = format!("busy{i}");
            t.check(&key, T0 + 10).unwrap();
            t.check(&key, T0 + 10).unwrap();
        }
        t.check(&"new".to_string(), T0 + 20).unwrap();
        assert_eq!(t.len(), 4);
        assert_eq!(t.counters().forgotten, 1);
        // "early" was forgotten (a fresh burst); the busy keys are still limited.
        t.check(&"early".to_string(), T0 + 20).unwrap();
        t.check(&"early".to_string(), T0 + 20).unwrap();
        assert!(t.check(&"busy2".to_string(), T0 + 20).is_err());
        assert!(t.len() <= 4);
    }

    proptest! {
        /// Whatever the arrival times, no window lets more through than the burst plus what
        /// the window's length refills; a refusal's retry-after is exact.
        #[test]
        fn a_limiter_never_lets_more_through_than_the_rate_allows(
            burst in 1u32..6,
            interval in 1u64..2_000,
            gaps in proptest::collection::vec(0u64..1_500, 1..80),
        ) {
            let r = rate(burst, interval);
            let mut gcra = Gcra::new();
            let mut now = T0;
            let mut passed = Vec::new();
            for gap in gaps {
                now += gap;
                let before = gcra;
                match gcra.check(r, now) {
                    Ok(()) => passed.push(now),
                    Err(limited) => {
                        prop_assert_eq!(gcra, before);
                        let wait = limited.retry_after.as_millis() as u64;
                        prop_assert!(wait >= 1);
                        let (mut early, mut on_time) = (before, before);
                        prop_assert!(early.check(r, now + wait - 1).is_err());
                        prop_assert!(on_time.check(r, now + wait).is_ok());
                    }
                }
            }
            for (i, first) in passed.iter().enumerate() {
                for (j, last) in passed.iter().enumerate().skip(i) {
                    let allowed = u64::from(burst) + (last - first) / interval;
                    prop_assert!((j - i + 1) as u64 <= allowed, "{} events in {} ms", j - i + 1, last - first);
                }
            }
        }

        /// A table never tracks more keys than its capacity, and while it has room it decides
        /// each key as that key's own limiter would.
        #[test]
        fn a_table_is_bounded_and_agrees_with_one_limiter_per_key(
            capacity in 1usize..6,
            events in proptest::collection::vec((0u8..10, 0u64..400), 1..120),
        ) {
            let r = rate(2, 300);
            let mut bounded = RateTable::<u8>::new(r, NonZeroUsize::new(capacity).expect("not zero"));
            let mut roomy = RateTable::<u8>::new(r, NonZeroUsize::new(64).expect("not zero"));
            let mut own = BTreeMap::<u8, Gcra>::new();
            let mut now = T0;
            for (key, gap) in events {
                now += gap;
                let _ = bounded.check(&key, now);
                prop_assert!(bounded.len() <= capacity);
                let want = own.entry(key).or_default().check(r, now);
                prop_assert_eq!(roomy.check(&key, now), want);
            }
            prop_assert_eq!(roomy.counters().forgotten, 0);
        }
    }
}
