//! Asking peers what they hold of this node's audit chain head (tamper evidence of the local
//! audit, see [`crate::audit::mesh`]).
//!
//! Every node signs its audit head (count, hash, when) into its one row of the shared table
//! `audit-heads`; peers replicate it like every shared row. A node's own copy of that row
//! lives on its own disk, so an attacker who rewrites the audit can rewrite it too; what peers
//! hold they cannot. [`Input::AuditHeads`] sends [`Ask::AuditHead`] (wire 1.2) to every other
//! roster member that is connected and answers with [`Output::AuditHeads`] once each answered,
//! or at `ask_timeout`: per peer the row it holds for this node ([`PeerHead::Holds`]), that
//! it holds none ([`PeerHead::Nothing`]), that it is not reachable, or that it runs an older
//! version that cannot answer (it refuses the request as malformed).
//!
//! A node of wire minor 1 or older does not know the table `audit-heads`: digests and pushes
//! that carry it do not decode there, so it would stop taking anything from nodes holding it.
//! [`Core::members_read_audit_heads`] says when every other member has been heard speaking
//! [`AUDIT_HEADS_MINOR`] or later since this core started; the driver publishes only then.

use std::collections::BTreeMap;

use meshward_crdt::{AuditHead, Row, TableId, WriterId};

use super::ha::Pending;
use super::{Ask, Core, Millis, Output, Reply};

/// The wire minor version that knows the table `audit-heads`.
pub const AUDIT_HEADS_MINOR: u8 = 2;

/// Most questions in flight; a new one beyond answers the oldest with what came so far.
pub const MAX_QUERIES: usize = 32;

/// What one peer said about this node's audit head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerHead {
    /// The row it holds for this node.
    Holds(AuditHead),
    /// It holds no row for this node yet.
    Nothing,
    /// It could not be asked, or did not answer: why.
    Unreachable {
        /// For the operator.
        why: String,
    },
    /// It answered, but not this question: an older version.
    CannotAnswer,
}

/// One [`Input::AuditHeads`] in flight.
#[derive(Debug)]
pub(super) struct Query {
    deadline: Millis,
    answers: BTreeMap<WriterId, Option<PeerHead>>,
}

impl Core {
    /// Notes the wire minor version of a request or answer `peer` sent us directly.
    pub(super) fn note_minor(&mut self, peer: WriterId, data: &[u8]) {
        if let ([major, minor, ..], Some(p)) = (data, self.peers.get_mut(&peer))
            && *major == super::wire::MAJOR
        {
            p.status.wire_minor = Some(*minor);
        }
    }

    /// Whether every other roster member was heard speaking [`AUDIT_HEADS_MINOR`] or later
    /// (so none would be cut off by rows of `audit-heads`).
    pub fn members_read_audit_heads(&self) -> bool {
        let me = self.me();
        self.roster.iter().filter(|w| **w != me).all(|w| {
            self.peers
                .get(w)
                .and_then(|p| p.status.wire_minor)
                .is_some_and(|m| m >= AUDIT_HEADS_MINOR)
        })
    }

    /// The audit head row this node holds for `writer`, if any.
    pub fn audit_head_of(&self, writer: WriterId) -> Option<AuditHead> {
        let rows = self.replica.rows(TableId::AuditHeads).ok()?;
        rows.into_iter().find_map(|(key, row)| match row {
            Row::AuditHead(h) if key.writer == writer => Some(h),
            _ => None,
        })
    }

    /// [`Input::AuditHeads`]: asks every other roster member for our row.
    pub(super) fn audit_heads(&mut self, now: Millis, token: u64) {
        if self.audit_queries.len() >= MAX_QUERIES
            && let Some(oldest) = self.audit_queries.keys().next().copied()
        {
            self.give_up(oldest, "too many comparisons in flight; ask again");
        }
        let me = self.me();
        let members: Vec<WriterId> = self.roster.iter().copied().filter(|w| *w != me).collect();
        let mut answers = BTreeMap::new();
        for peer in members {
            if self.peers.get(&peer).is_some_and(|p| p.status.connected) {
                answers.insert(peer, None);
                self.ask(
                    peer,
                    Ask::AuditHead { writer: me },
                    Pending::AuditHead { token },
                );
            } else {
                let why = "not connected to this node".to_string();
                answers.insert(peer, Some(PeerHead::Unreachable { why }));
            }
        }
        let deadline = now + self.config.ask_timeout.as_millis() as u64;
        self.audit_queries
            .insert(token, Query { deadline, answers });
        self.audit_heads_done(token);
    }

    /// [`Ask::AuditHead`] from a peer.
    pub(super) fn serve_audit_head(&self, writer: WriterId) -> Reply {
        Reply::AuditHead(self.audit_head_of(writer))
    }

    /// A peer's answer to our [`Ask::AuditHead`] (`None`: the request failed).
    pub(super) fn audit_head_reply(&mut self, peer: WriterId, token: u64, reply: Option<Reply>) {
        let answer = match reply {
            Some(Reply::AuditHead(Some(head))) => PeerHead::Holds(head),
            Some(Reply::AuditHead(None)) => PeerHead::Nothing,
            Some(_) => PeerHead::CannotAnswer,
            None => PeerHead::Unreachable {
                why: "the request failed".into(),
            },
        };
        if let Some(query) = self.audit_queries.get_mut(&token)
            && let Some(slot) = query.answers.get_mut(&peer)
        {
            *slot = Some(answer);
        }
        self.audit_heads_done(token);
    }

    /// Timer: queries past their deadline are answered with what came.
    pub(super) fn audit_heads_tick(&mut self, now: Millis) {
        let secs = self.config.ask_timeout.as_secs();
        let due: Vec<u64> = self
            .audit_queries
            .iter()
            .filter(|(_, q)| q.deadline <= now)
            .map(|(t, _)| *t)
            .collect();
        for token in due {
            self.give_up(token, &format!("no answer within {secs} s"));
        }
    }

    /// Answers `token` with what came; the peers that did not answer are unreachable (`why`).
    fn give_up(&mut self, token: u64, why: &str) {
        if let Some(query) = self.audit_queries.get_mut(&token) {
            for slot in query.answers.values_mut().filter(|s| s.is_none()) {
                *slot = Some(PeerHead::Unreachable { why: why.into() });
            }
        }
        self.asks
            .retain(|_, p| !matches!(p, Pending::AuditHead { token: t } if *t == token));
        self.audit_heads_done(token);
    }

    /// Outputs the answers of `token` once every peer answered.
    fn audit_heads_done(&mut self, token: u64) {
        let complete = self
            .audit_queries
            .get(&token)
            .is_some_and(|q| q.answers.values().all(Option::is_some));
        if !complete {
            return;
        }
        if let Some(query) = self.audit_queries.remove(&token) {
            let answers = query
                .answers
                .into_iter()
                .filter_map(|(peer, a)| a.map(|a| (peer, a)))
                .collect();
            self.outbox.push(Output::AuditHeads { token, answers });
        }
    }
}
