//! The mastered chain in the core: taking a record (verify, store, apply, relay), and the
//! roster it gives the transport.

use meshward_crdt::mastered::{Frontier, RosterChange};

use super::*;

impl Core {
    pub(super) fn mastered_version(&self) -> u64 {
        self.mastered.as_ref().map_or(0, |m| m.chain.last_version())
    }

    /// Verifies a mastered record against our chain; if it is the next one, persists and
    /// applies it (and admits a changed roster).
    pub(super) fn take_mastered(
        &mut self,
        now: Millis,
        record: SignedRecord,
        from: WriterId,
    ) -> Taken {
        if self.held && from != self.me() {
            self.counters.held_dropped += 1;
            return Taken::Held;
        }
        let Some(m) = self.mastered.as_ref() else {
            return Taken::Held;
        };
        let version = record.record.version;
        let last = m.chain.last_version();
        if version == 0 {
            self.counters.mastered_rejected += 1;
            return Taken::Refused;
        }
        if version <= last {
            if m.records.get(version as usize - 1) != Some(&record) {
                if self.known_loser(&record) {
                    self.counters.losers_dropped += 1;
                    return Taken::Held;
                }
                self.counters.mastered_forks += 1;
                warn!(peer = %from, version, "mastered record differs from ours (competing leader)");
                self.fetch_chain(now, from);
            }
            return Taken::Held;
        }
        if version > last + 1 {
            return Taken::Gap;
        }
        let verified = match m.chain.verify(&record) {
            Ok(v) => v,
            Err(e) if self.is_fork_signal(&e) => {
                self.counters.mastered_forks += 1;
                warn!(peer = %from, error = %e, "mastered record from a competing chain");
                self.fetch_chain(now, from);
                return Taken::Held;
            }
            Err(e) => {
                self.counters.mastered_rejected += 1;
                warn!(peer = %from, error = %e, "refused mastered record");
                return Taken::Refused;
            }
        };
        let roster_changed = matches!(
            verified.record.kind,
            RecordKind::Genesis | RecordKind::Roster
        );
        if from != self.me() {
            self.counters.mastered_applied += 1;
        }
        // One signature check: the store gets one copy of the proof, the chain the other.
        self.outbox
            .push(Output::PersistMastered(Box::new(verified.duplicate())));
        let Some(m) = self.mastered.as_mut() else {
            return Taken::Held;
        };
        if m.chain.apply(verified).is_err() {
            return Taken::Refused;
        }
        m.records.push(record);
        if roster_changed {
            self.roster_from_chain(now);
        }
        Taken::Applied
    }

    /// Takes the records of a sync answer up to their last checkpoint at once, when they are
    /// the next ones of our chain and verify as a checkpoint covers them
    /// ([`Chain::verify_covered`]: one signature for the lot instead of one each, what makes
    /// a join fast). Returns how many were taken from the front; the caller takes the rest
    /// (or all of them, when this returns 0) one by one with [`Core::take_mastered`], which
    /// tells a competing chain from garbage.
    pub(super) fn take_covered(
        &mut self,
        now: Millis,
        records: &[SignedRecord],
        from: WriterId,
    ) -> usize {
        if self.held && from != self.me() {
            return 0;
        }
        let Some(m) = self.mastered.as_mut() else {
            return 0;
        };
        let next = m.chain.last_version() + 1;
        if records.first().map(|r| r.record.version) != Some(next) {
            return 0;
        }
        let Ok(verified) = m.chain.verify_covered(records) else {
            return 0;
        };
        let taken = verified.len();
        let mut roster_changed = false;
        for record in verified {
            roster_changed |=
                matches!(record.record.kind, RecordKind::Genesis | RecordKind::Roster);
            self.outbox
                .push(Output::PersistMastered(Box::new(record.duplicate())));
            m.records.push(SignedRecord::clone(&record));
            // Verified in order against this very chain: applying cannot fail.
            if m.chain.apply(record).is_err() {
                m.records.pop();
                return 0;
            }
        }
        self.counters.mastered_applied += taken as u64;
        if roster_changed {
            self.roster_from_chain(now);
        }
        taken
    }

    pub(super) fn publish_mastered(&mut self, record: Vec<u8>) {
        let gossip = Gossip::Mastered { record }.encode();
        if gossip.len() <= self.config.max_gossip_bytes {
            self.outbox.push(Output::Publish(gossip));
        } else {
            self.advertise();
        }
    }

    /// Admits the chain's roster, dials members we know no address for if their roster
    /// address is a socket address, and tells the driver.
    pub(super) fn roster_from_chain(&mut self, now: Millis) {
        let Some(m) = &self.mastered else { return };
        let members: Vec<(WriterId, Option<SocketAddr>)> = m
            .chain
            .roster()
            .members
            .iter()
            .map(|member| (WriterId(member.key), member.address.parse().ok()))
            .collect();
        let me = self.me();
        // A node removed from the roster admits no one: it runs standalone.
        let roster: BTreeSet<WriterId> = if members.iter().any(|(k, _)| *k == me) {
            members.iter().map(|(k, _)| *k).collect()
        } else {
            BTreeSet::new()
        };
        let frontiers = removed_frontiers(&m.records, &members);
        self.set_roster(roster.clone());
        self.replica.set_frontiers(frontiers.values());
        #[cfg(feature = "bugs")]
        if self.bugged_frontiers() {
            self.replica
                .set_writers(roster.iter().chain(frontiers.keys()).copied());
        }
        // Rows refused as of an unknown writer may be of a member this roster admits.
        for peer in std::mem::take(&mut self.unknown_from) {
            self.request_sync(now, peer);
        }
        for (peer, addr) in members {
            // State is kept for a member once there is something to keep: an address to dial
            // here, or a connection (a 1 000-member roster would otherwise cost every node
            // 1 000 entries, and the simulator a million).
            if peer == me || !roster.contains(&peer) || addr.is_none() {
                continue;
            }
            let p = self.peers.entry(peer).or_default();
            if p.status.addr.is_none() && addr.is_some() {
                p.status.addr = addr;
                p.redial_at = Some(now);
            }
        }
        self.outbox.push(Output::Roster(roster));
    }
}

/// Where removed writers' rows stop: the frontier of each writer a roster record of `records`
/// removed, from the latest record that removed it, except writers that are `members` (again).
/// A writer removed by a record without frontiers (written before they existed) has none: its
/// new rows are refused whole.
fn removed_frontiers(
    records: &[SignedRecord],
    members: &[(WriterId, Option<SocketAddr>)],
) -> BTreeMap<WriterId, Frontier> {
    let mut out = BTreeMap::new();
    for record in records
        .iter()
        .filter(|r| r.record.kind == RecordKind::Roster)
    {
        // Verified records decode; one that does not is skipped, not trusted.
        let Ok(change) = RosterChange::decode(&record.record.payload) else {
            continue;
        };
        out.retain(|w: &WriterId, _| !change.roster.contains(&w.0));
        for frontier in change.frontiers {
            out.insert(WriterId(frontier.writer), frontier);
        }
    }
    out.retain(|w, _| !members.iter().any(|(k, _)| k == w));
    out
}
