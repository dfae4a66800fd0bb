//! Forwarding: a write only the leader may make, sent to a follower, travels to the leader over
//! the mesh and is answered once the leader made it.
//!
//! The core does not read what it forwards: the driver gives it an opaque envelope (the
//! daemon's: the API request and who called it) and gets the leader's opaque answer back.
//!
//! - On a follower, [`Input::Forward`] sends [`Ask::Forward`] to the leader when it is
//!   connected, with the follower's last mastered version; otherwise, and when the leader does
//!   not answer within `ask_timeout`, [`Output::Forwarded`] says why (nothing is queued).
//! - On the leader, [`Ask::Forward`] becomes [`Output::Serve`]: the driver checks and runs the
//!   request as the leader (authorizing the caller against its own view of users and grants)
//!   and hands the answer back with [`Input::Served`]. The reply carries the mastered records
//!   the follower lacks, so once the follower answers its caller it already holds the write.
//! - A held leader (its disk is full) and a node that does not lead refuse at once.
//!
//! Trust: a member authorizes its own callers and the leader checks the named caller again
//! against its own chain, so a follower with a stale view cannot grant more than the leader's
//! view allows; a member that lies about its caller is a compromised member, which the mesh's
//! admission (roster keys) is what protects against.

use meshward_crdt::WriterId;
use meshward_crdt::mastered::SignedRecord;
use serde::{Deserialize, Serialize};

use super::ha::{HELD, NO_CLUSTER, Pending};
use super::{Ask, Core, Millis, Output, Reply};

/// Bytes the core carries without reading them (a forwarded request, its answer). They may
/// hold secrets (a new user's password, an issued key), so `Debug` shows only their length.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Opaque(pub Vec<u8>);

impl std::fmt::Debug for Opaque {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Opaque({} bytes)", self.0.len())
    }
}

/// Largest envelope forwarded (the request and its caller, as the driver encoded them).
pub const MAX_FORWARD: usize = 60 * 1024;

impl Core {
    /// [`Input::Forward`]: sends `envelope` to the leader for the caller's `token`.
    pub(super) fn forward(&mut self, now: Millis, token: u64, envelope: Opaque) {
        let fail = |core: &mut Core, why: String| {
            core.outbox.push(Output::Forwarded {
                token,
                result: Err(why),
            });
        };
        if envelope.0.len() > MAX_FORWARD {
            let why = format!(
                "the request is {} bytes; a request forwarded to the leader holds at most \
                 {MAX_FORWARD}: send it to the leader",
                envelope.0.len()
            );
            return fail(self, why);
        }
        let Some(chain) = self.chain() else {
            return fail(self, NO_CLUSTER.into());
        };
        let have = chain.last_version();
        let leader = WriterId(chain.leader());
        let address = chain.leader_address();
        if leader == self.me() {
            return fail(
                self,
                "this node leads now (leadership moved while the request was in flight); send \
                 it again"
                    .into(),
            );
        }
        let connected = self.peers.get(&leader).is_some_and(|p| p.status.connected);
        if !connected {
            let last = self
                .peers
                .get(&leader)
                .and_then(|p| p.status.last_seen_ms)
                .map_or("never heard from".to_string(), |seen| {
                    format!("last heard {} ms ago", now.saturating_sub(seen))
                });
            return fail(
                self,
                format!(
                    "the leader {address} is not connected to this node ({last}); nothing was \
                     changed: try again when it is reachable, or send the request to it"
                ),
            );
        }
        let deadline = now + self.config.ask_timeout.as_millis() as u64;
        self.ask(
            leader,
            Ask::Forward { have, envelope },
            Pending::Forwarded { token, deadline },
        );
    }

    /// [`Ask::Forward`] from `peer`: served by the driver if this node leads and can write.
    pub(super) fn serve_forward(&mut self, channel: u64, have: u64, envelope: Opaque) {
        let me = self.me();
        if self.held {
            self.respond(channel, Reply::Done(Err(HELD.into())));
        } else if self.chain().is_none_or(|c| c.leader() != me.0) {
            self.respond(channel, Reply::Done(Err("I am not the leader".into())));
        } else {
            self.outbox.push(Output::Serve {
                channel,
                have,
                envelope,
            });
        }
    }

    /// [`Input::Served`]: the driver's answer to an [`Output::Serve`], with the records the
    /// asker lacks.
    pub(super) fn served(&mut self, channel: u64, have: u64, answer: Opaque) {
        let records = self
            .mastered
            .as_ref()
            .map(|m| {
                m.records
                    .iter()
                    .skip(have as usize)
                    .map(SignedRecord::encode)
                    .collect()
            })
            .unwrap_or_default();
        self.respond(channel, Reply::Forwarded { records, answer });
    }

    /// The leader's reply to our [`Ask::Forward`] (`None`: it failed): the records it sent
    /// are taken first, then the caller gets the answer.
    pub(super) fn forward_reply(
        &mut self,
        now: Millis,
        peer: WriterId,
        token: u64,
        reply: Option<Reply>,
    ) {
        let result = match reply {
            Some(Reply::Forwarded { records, answer }) => {
                for raw in records {
                    if let Ok(record) = SignedRecord::decode(&raw) {
                        self.take_mastered(now, record, peer);
                    }
                }
                Ok(answer)
            }
            Some(Reply::Done(Err(why))) => Err(format!("the leader refused: {why}")),
            _ => Err(
                "the leader did not answer; the change may or may not have been made: \
                      check before trying again"
                    .into(),
            ),
        };
        self.outbox.push(Output::Forwarded { token, result });
    }
}
