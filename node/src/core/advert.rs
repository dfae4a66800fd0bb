//! Adverts: a node's signed summary of what it holds.
//!
//! Every `sync_interval` (and when a push is too large for gossip) a node publishes an
//! [`Advert`]: the fingerprint of its digest of the members' rows, its change count, and its
//! mastered chain's last version and hash. Peers whose own differ sync with it, and an advert
//! from the leader tells followers it is alive, which holds off failovers.
//!
//! Gossip is relayed, and gossipsub runs anonymous here (the transport does not say who wrote
//! a message, only who forwarded it), so an advert carries its own proof of origin: the
//! origin's ed25519 signature over the cluster id and every field, with the origin's clock in
//! milliseconds (`at_ms`). A receiver
//! - ignores an advert whose origin is not a roster member it knows (it cannot check it, and
//!   a just-joined member's adverts come again),
//! - rejects and counts (`forged_gossip`) one whose signature does not verify: a member that
//!   forges adverts "from" the leader neither keeps it looking alive nor steers syncs,
//! - ignores and counts (`stale_adverts`) one older than the last it took from that origin, and
//!   ignores the last one again, so a recorded advert replayed later refreshes nothing. These
//!   cheap checks come before the signature's. The mark is forgotten when the origin connects
//!   again (it may have restarted with a clock set back).
//!
//! The leader's adverts carry a fresh, strictly increasing `at_ms` every interval, so each is
//! distinct (gossipsub drops republished identical bytes) and followers hear the leader every
//! `sync_interval`: O(N) messages and signature checks per second. A follower publishes when
//! its summary changed, and otherwise only a fresh re-signed advert every
//! [`FOLLOWER_REFRESH_MS`] (30 s), for neighbours that connected since: it never republishes
//! identical bytes, which gossipsub would drop with a warning in every daemon's log.
//!
//! **Scope.** Only the leader's adverts are relayed through the cluster (every follower must
//! hear it is alive). A follower's advert is taken by the peers it is published to (its
//! gossip mesh, or every connected peer with flood publishing) and then reported to gossip as
//! [`Verdict::Ignore`], so it goes no further: each peer that differs syncs with it, and what
//! it fetched shows in its own next advert to its own neighbours, so a difference still reaches
//! every node, hop by hop, within a sync interval per hop. Flooding every follower's advert to
//! every node cost O(N²) messages per change (7.5 M duplicate adverts for 1 104 in the
//! simulator's 1 000-node run); scoped, adverts cost O(N × mesh degree).

use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _};
use meshward_crdt::{ClusterId, WriterId};
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use super::{Core, Millis, Output, Verdict, sync::total_changes};

/// Domain-separation prefix of the bytes an advert's origin signs.
pub const ADVERT_DOMAIN: &[u8] = b"meshward/advert/v1\0";

/// How often a follower whose summary did not change re-signs and publishes its advert (ms):
/// often enough for neighbours that connected since to hear it, rarely enough to cost nothing.
pub const FOLLOWER_REFRESH_MS: u64 = 30_000;

/// A summary of what `origin` holds, signed by it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Advert {
    /// The advertising node.
    pub origin: WriterId,
    /// Its fingerprint of the digest of the rows of writers it accepts.
    pub fingerprint: [u8; 32],
    /// Changes it holds in all tables.
    pub changes: u64,
    /// Last mastered version it holds.
    pub mastered: u64,
    /// Hash of that record (zero when none), to notice a competing chain.
    pub mastered_hash: [u8; 32],
    /// The origin's clock when it advertised (ms), strictly increasing per origin.
    pub at_ms: u64,
    /// The origin's signature over [`ADVERT_DOMAIN`], the cluster id and the fields above.
    pub signature: Signature,
}

impl Advert {
    fn signing_bytes(&self, cluster: ClusterId) -> Vec<u8> {
        let signed = (
            cluster,
            self.origin,
            self.fingerprint,
            self.changes,
            self.mastered,
            self.mastered_hash,
            self.at_ms,
        );
        let mut out = ADVERT_DOMAIN.to_vec();
        // Encoding plain values into a Vec cannot fail.
        out.extend(postcard::to_allocvec(&signed).unwrap_or_default());
        out
    }

    /// What it says, without its time and signature.
    fn summary(&self) -> (&[u8; 32], u64, u64, &[u8; 32]) {
        (
            &self.fingerprint,
            self.changes,
            self.mastered,
            &self.mastered_hash,
        )
    }

    /// The advert signed with `key` for `cluster` (`key` must be the origin's).
    pub fn sign(mut self, key: &SigningKey, cluster: ClusterId) -> Advert {
        self.signature = key.sign(&self.signing_bytes(cluster));
        self
    }

    /// Whether the origin signed this advert for `cluster`.
    pub fn verify(&self, cluster: ClusterId) -> bool {
        self.origin.verifying_key().is_some_and(|key| {
            key.verify(&self.signing_bytes(cluster), &self.signature)
                .is_ok()
        })
    }
}

impl Core {
    /// Publishes a signed summary of what we hold; peers whose digest differs sync with us.
    /// The leader's adverts are fresh every time (they keep it alive at its followers); a
    /// follower whose summary did not change publishes nothing, but a fresh advert every
    /// [`FOLLOWER_REFRESH_MS`], so a quiet cluster's adverts cost O(N), not O(N²).
    pub(super) fn advertise(&mut self) {
        let digest = self.replica.accepted_digest();
        let advert = Advert {
            origin: self.me(),
            fingerprint: digest.fingerprint(),
            changes: total_changes(&digest),
            mastered: self.mastered_version(),
            mastered_hash: self
                .mastered
                .as_ref()
                .map_or([0; 32], |m| m.chain.last_hash().0),
            at_ms: 0,
            signature: Signature::from_bytes(&[0; 64]),
        };
        let leads = self
            .mastered
            .as_ref()
            .is_some_and(|m| m.chain.leader() == self.me().0);
        let advert = match self.last_advert.take() {
            Some(last) if !leads && last.summary() == advert.summary() => {
                if self.clock < last.at_ms.saturating_add(FOLLOWER_REFRESH_MS) {
                    // Unchanged and recent: nothing to say (gossip would drop a repeat).
                    self.last_advert = Some(last);
                    return;
                }
                Advert {
                    at_ms: self.clock.max(last.at_ms.saturating_add(1)),
                    ..advert
                }
                .sign(self.replica.signing_key(), self.replica.cluster())
            }
            last => {
                let after = last.map_or(0, |l| l.at_ms.saturating_add(1));
                Advert {
                    at_ms: self.clock.max(after),
                    ..advert
                }
                .sign(self.replica.signing_key(), self.replica.cluster())
            }
        };
        self.last_advert = Some(advert.clone());
        self.outbox
            .push(Output::Publish(super::Gossip::Advert(advert).encode()));
    }

    /// A received advert: checked (origin a member, signed by it, newer than its last), then
    /// taken as a sign of life of its origin and compared with what we hold.
    pub(super) fn advert(&mut self, now: Millis, source: WriterId, id: u64, advert: Advert) {
        let verdict = self.check_advert(source, &advert);
        // Only the leader's adverts travel on: a follower's is for its neighbours (see the
        // module docs), so gossip is told to ignore it once taken.
        let relay = match verdict {
            Verdict::Accept if !self.leads(advert.origin) => Verdict::Ignore,
            other => other,
        };
        self.outbox.push(Output::Validate { id, verdict: relay });
        if verdict != Verdict::Accept {
            return;
        }
        let origin = advert.origin;
        self.seen(now, origin);
        if let Some(p) = self.peers.get_mut(&origin) {
            p.status.changes = Some(advert.changes);
        }
        if self.head_conflicts(advert.mastered, advert.mastered_hash) {
            self.counters.mastered_forks += 1;
            self.fetch_chain(now, origin);
        }
        let differs = advert.fingerprint != self.replica.accepted_digest().fingerprint()
            || advert.mastered > self.mastered_version();
        if differs {
            let target = self.sync_target(origin, source);
            self.request_sync(now, target);
        }
    }

    /// Whether `node` leads our chain's epoch.
    fn leads(&self, node: WriterId) -> bool {
        self.mastered
            .as_ref()
            .is_some_and(|m| m.chain.leader() == node.0)
    }

    fn check_advert(&mut self, source: WriterId, advert: &Advert) -> Verdict {
        let origin = advert.origin;
        if origin == self.me() || !self.roster.contains(&origin) {
            debug!(peer = %source, origin = %origin, "advert of a node not in the roster here");
            return Verdict::Ignore;
        }
        let last = self.peers.get(&origin).and_then(|p| p.advert_at);
        match last {
            // Its last advert again (a quiet follower repeats it once gossip forgot it).
            Some(at) if advert.at_ms == at => return Verdict::Ignore,
            Some(at) if advert.at_ms < at => {
                self.counters.stale_adverts += 1;
                debug!(peer = %source, origin = %origin, at_ms = advert.at_ms, "stale advert ignored");
                return Verdict::Ignore;
            }
            _ => {}
        }
        if !advert.verify(self.replica.cluster()) {
            self.counters.forged_gossip += 1;
            warn!(peer = %source, origin = %origin, "advert not signed by its origin refused");
            return Verdict::Reject;
        }
        self.peers.entry(origin).or_default().advert_at = Some(advert.at_ms);
        Verdict::Accept
    }
}
