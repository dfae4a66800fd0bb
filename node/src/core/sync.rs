//! Anti-entropy sync: the requests and answers peers exchange (digests, items, mastered
//! records), and how the core asks, serves and applies them.

use super::*;

/// A sync request: what the requester holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncAsk {
    /// The last mastered version it holds (0: none).
    pub mastered: u64,
    /// Its encoded [`Digest`].
    pub digest: Vec<u8>,
}

/// What travels on the request protocol, from the asker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ask {
    /// What do I lack?
    Sync(SyncAsk),
    /// Endorse me as leader of `next_epoch`, at this chain position.
    Endorse {
        /// The epoch the asker would lead.
        next_epoch: u64,
        /// The asker's last mastered version.
        prev_version: u64,
        /// The hash of that record.
        prev_hash: [u8; 32],
    },
    /// Send me your whole mastered chain (our chains forked).
    Chain,
    /// (To the leader) remove me from the roster; I hold records up to `have`.
    Leave {
        /// The asker's last mastered version.
        have: u64,
    },
    /// (To the leader) set this local user's password under your policy.
    Password {
        /// The asker's last mastered version.
        have: u64,
        /// The user.
        user: String,
        /// The new password.
        password: Secret,
    },
    /// (To the leader) run this write only you make (see [`forward`]).
    Forward {
        /// The asker's last mastered version.
        have: u64,
        /// What to run, opaque to the core.
        envelope: Opaque,
    },
    /// (From the leader) endorse `next_leader` to lead `next_epoch`, at this chain position:
    /// a planned hand-over.
    EndorseHandover {
        /// The node the leader hands over to.
        next_leader: [u8; 32],
        /// The epoch it would lead.
        next_epoch: u64,
        /// The leader's last mastered version.
        prev_version: u64,
        /// The hash of that record.
        prev_hash: [u8; 32],
    },
    /// (To the leader, wire 1.1) re-apply the restrictive records of my losing branch, which
    /// leaves your chain after its first `common` records ([`super::reapply`]).
    Reapply {
        /// Records the branch shares with your chain.
        common: u64,
        /// The branch, encoded, in order.
        records: Vec<Vec<u8>>,
    },
    /// (Wire 1.2) what do you hold of `writer`'s audit head ([`super::audit_heads`])?
    AuditHead {
        /// The node whose row is asked for (the asker itself).
        writer: WriterId,
    },
}

/// What travels back on the request protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// The answer to [`Ask::Sync`].
    Sync(SyncAnswer),
    /// An endorsement, or why not.
    Endorsed(Result<Endorsement, String>),
    /// Every mastered record, encoded, in order.
    Chain(Vec<Vec<u8>>),
    /// The leader did it: the mastered records after the asker's `have`, encoded; or why not.
    Done(Result<Vec<Vec<u8>>, String>),
    /// The leader's answer to [`Ask::Forward`], after the records the asker lacks.
    Forwarded {
        /// The mastered records after the asker's `have`, encoded.
        records: Vec<Vec<u8>>,
        /// The answer, opaque to the core.
        answer: Opaque,
    },
    /// The answer to [`Ask::AuditHead`]: the row held, if any.
    AuditHead(Option<meshward_crdt::AuditHead>),
}

/// Largest request accepted for decoding.
pub const MAX_ASK: usize = meshward_crdt::MAX_DIGEST + 64 * 1024;

impl Ask {
    /// Encodes the request ([`wire`]: versioned).
    pub fn encode(&self) -> Vec<u8> {
        wire::encode(self)
    }

    /// Decodes a request, refusing oversize or malformed bytes and other major versions.
    pub fn decode(bytes: &[u8]) -> Option<Ask> {
        if bytes.len() > MAX_ASK {
            return None;
        }
        wire::decode(bytes).ok()
    }
}

impl Reply {
    /// Encodes the reply ([`wire`]: versioned).
    pub fn encode(&self) -> Vec<u8> {
        wire::encode(self)
    }

    /// Decodes a reply, refusing oversize or malformed bytes and other major versions.
    pub fn decode(bytes: &[u8]) -> Option<Reply> {
        if bytes.len() > meshward_crdt::MAX_WIRE {
            return None;
        }
        wire::decode(bytes).ok()
    }
}

/// A sync answer: items, mastered records, and whether more remains.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncAnswer {
    /// More remains after these items or records.
    pub more: bool,
    /// `SyncMessage::encode` output.
    #[serde(with = "meshward_crdt::bytes")]
    pub message: Vec<u8>,
    /// Mastered records after the requester's version, in order (`SignedRecord::encode`).
    #[serde(with = "meshward_crdt::bytes::list")]
    pub records: Vec<Vec<u8>>,
}

pub(super) fn total_changes(d: &Digest) -> u64 {
    d.segments.iter().map(|s| s.seq).sum()
}

/// Changes in `ours` that `theirs` lacks.
pub(super) fn behind(ours: &Digest, theirs: &Digest) -> u64 {
    ours.segments
        .iter()
        .map(|s| {
            s.seq
                .saturating_sub(theirs.get(&s.key).map_or(0, |t| t.seq))
        })
        .sum()
}

impl Core {
    /// A request from a peer: sync, or one of the HA requests ([`ha`]).
    pub(super) fn request(&mut self, now: Millis, peer: WriterId, channel: u64, data: &[u8]) {
        self.seen(now, peer);
        self.note_minor(peer, data);
        match Ask::decode(data) {
            Some(Ask::Sync(ask)) => self.serve(now, peer, channel, ask),
            Some(other) => self.serve_ha(now, peer, channel, other),
            None => {
                self.counters.malformed += 1;
                debug!(peer = %peer, "malformed request");
                self.respond(channel, Reply::Sync(SyncAnswer::default()));
            }
        }
    }

    pub(super) fn respond(&mut self, channel: u64, reply: Reply) {
        self.outbox.push(Output::Respond {
            channel,
            data: reply.encode(),
        });
    }

    pub(super) fn serve(&mut self, now: Millis, peer: WriterId, channel: u64, ask: SyncAsk) {
        let Ok(theirs) = Digest::decode(&ask.digest) else {
            self.counters.malformed += 1;
            debug!(peer = %peer, "malformed sync request");
            self.respond(channel, Reply::Sync(SyncAnswer::default()));
            return;
        };
        let their_mastered = ask.mastered;
        let mut answer = match self.replica.missing_for(&theirs, self.config.sync_budget) {
            Ok((items, more)) => SyncAnswer {
                more,
                message: SyncMessage { items }.encode(),
                records: Vec::new(),
            },
            Err(e) => {
                warn!(error = %e, "cannot read own segment for a sync answer");
                SyncAnswer::default()
            }
        };
        if let Some(m) = &self.mastered {
            let mut bytes = 0;
            for record in m.records.iter().skip(their_mastered as usize) {
                if bytes > 0 && bytes >= self.config.mastered_budget {
                    answer.more = true;
                    break;
                }
                let encoded = record.encode();
                bytes += encoded.len();
                answer.records.push(encoded);
            }
        }
        self.counters.sync_served += 1;
        self.respond(channel, Reply::Sync(answer));
        let ours = self.replica.digest();
        let they_have_more = theirs
            .segments
            .iter()
            .any(|s| self.replica.takes(s) && ours.get(&s.key).is_none_or(|o| o.seq < s.seq));
        if let Some(p) = self.peers.get_mut(&peer) {
            p.status.changes = Some(total_changes(&theirs));
            p.status.behind = Some(behind(&ours, &theirs));
        }
        if they_have_more || their_mastered > self.mastered_version() {
            self.request_sync(now, peer);
        }
    }

    /// A reply to one of our requests: a sync answer, or an HA reply ([`ha`]).
    pub(super) fn reply(&mut self, now: Millis, peer: WriterId, request: u64, data: &[u8]) {
        self.seen(now, peer);
        self.note_minor(peer, data);
        self.counters.bytes_received += data.len() as u64;
        if let Some(pending) = self.asks.remove(&request) {
            self.ha_reply(now, peer, pending, Reply::decode(data));
        } else {
            self.answer(now, peer, request, data);
        }
    }

    pub(super) fn answer(&mut self, now: Millis, peer: WriterId, request: u64, data: &[u8]) {
        let current = self
            .syncing
            .is_some_and(|(p, r, _)| p == peer && r == request);
        if current {
            self.syncing = None;
        }
        let decoded = Reply::decode(data).and_then(|r| {
            let Reply::Sync(a) = r else { return None };
            SyncMessage::decode(&a.message)
                .ok()
                .map(|m| (a.more, a.records, m))
        });
        match decoded {
            None => self.counters.malformed += 1,
            Some((more, records, msg)) => {
                let mut refused = false;
                let decoded: Vec<SignedRecord> = records
                    .iter()
                    .map_while(|raw| SignedRecord::decode(raw).ok())
                    .collect();
                let covered = self.take_covered(now, &decoded, peer);
                if decoded.len() < records.len() {
                    refused = true;
                }
                // While more is to come, the records after the answer's last checkpoint wait
                // for the next answer, which starts at the checkpoint and so covers them with
                // the next one (a signature check each saved, a few records sent twice).
                let rest = if covered > 0 && more && !refused {
                    0
                } else {
                    decoded.len()
                };
                for record in decoded.into_iter().skip(covered).take(rest) {
                    let taken = self.take_mastered(now, record, peer);
                    if matches!(taken, Taken::Refused | Taken::Gap) {
                        refused = true;
                        break;
                    }
                }
                let verdict = self.apply_items(msg.items, peer, peer);
                match verdict {
                    Verdict::Reject => self.counters.sync_rejected += 1,
                    _ if refused => self.counters.sync_rejected += 1,
                    _ => self.counters.sync_rounds += 1,
                }
                if verdict == Verdict::Accept && !refused && !more && self.roster.contains(&peer) {
                    self.synced.insert(peer);
                }
                if more {
                    self.wanted.insert(peer);
                }
            }
        }
        if current {
            self.next_sync(now);
        }
    }

    /// Asks `peer` for what we lack. One request is in flight at a time: others wait in
    /// `wanted` and go out one by one, each carrying the digest the previous answers updated,
    /// so peers holding the same data are not all asked for it at once (on a reconnection, or
    /// when several adverts differ).
    pub(super) fn request_sync(&mut self, now: Millis, peer: WriterId) {
        if self.held
            || peer == self.me()
            || !self.peers.get(&peer).is_some_and(|p| p.status.connected)
        {
            return;
        }
        self.wanted.insert(peer);
        if self.syncing.is_none() {
            self.next_sync(now);
        }
    }

    /// Sends the next wanted sync request, if none is in flight.
    pub(super) fn next_sync(&mut self, now: Millis) {
        while !self.held && self.syncing.is_none() {
            let Some(peer) = self.wanted.pop_first() else {
                return;
            };
            if !self.peers.get(&peer).is_some_and(|p| p.status.connected) {
                continue;
            }
            let request = self.next_request;
            self.next_request += 1;
            self.syncing = Some((peer, request, now));
            let ask = SyncAsk {
                mastered: self.mastered_version(),
                digest: self.replica.digest().encode(),
            };
            self.outbox.push(Output::Request {
                peer,
                request,
                data: Ask::Sync(ask).encode(),
            });
        }
    }

    pub(super) fn sync_target(&self, origin: WriterId, source: WriterId) -> WriterId {
        match self.peers.get(&origin) {
            Some(p) if p.status.connected => origin,
            _ => source,
        }
    }
}
