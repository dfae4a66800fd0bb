//! The local audit's head in the shared table `audit-heads` ([`meshward_node::audit::mesh`]):
//! published every [`PUBLISH_INTERVAL_MS`] when it moved and at a graceful stop, and compared
//! with what peers hold for `audit verify --against-mesh`. The node's ops decide; this is the
//! timer and the plumbing.

use meshward_api::{Problem, ProblemKind};
use meshward_crdt::WriterId;
use meshward_node::audit::mesh::{PUBLISH_INTERVAL_MS, Publish};
use meshward_node::core::PeerHead;
use meshward_node::ops::audit_mesh::{publish_audit_head, verify_against_mesh};
use meshward_node::ops::now_ms;
use tracing::{debug, info, warn};

use super::Node;
use super::backend::DaemonBackend;

/// Whether a publish is due, and when the next one is.
#[derive(Debug, Default)]
pub(super) struct AuditPublisher {
    next_at: u64,
    /// A refusal was logged (once until the chain holds the published head again).
    refused: bool,
}

impl Node {
    /// On the tick: publishes the audit head when the interval passed (`force`: now, at a
    /// graceful stop). Returns whether a row was written.
    pub(super) fn publish_audit_head(&mut self, force: bool) -> bool {
        let now = now_ms();
        if !force && (now.max(0) as u64) < self.audit.next_at {
            return false;
        }
        self.audit.next_at = now.max(0) as u64 + PUBLISH_INTERVAL_MS;
        if self.core.chain().is_none() {
            return false;
        }
        if !self.core.members_read_audit_heads() {
            debug!(
                "audit head not published yet: not every member was heard on a wire version \
                 that knows the audit-heads table"
            );
            return false;
        }
        match publish_audit_head(&mut DaemonBackend::local(self), now) {
            Ok(Publish::Put(head)) => {
                self.audit.refused = false;
                debug!(count = head.count, "audit head published");
                true
            }
            Ok(Publish::Nothing) => {
                self.audit.refused = false;
                false
            }
            Ok(Publish::Refuse { why }) => {
                if !std::mem::replace(&mut self.audit.refused, true) {
                    warn!("audit head not published: {why}");
                }
                false
            }
            Err(e) => {
                info!(error = %format!("{e:#}"), "audit head not published now; trying again later");
                false
            }
        }
    }

    /// The core's answers to `audit verify --against-mesh` for `token`.
    pub(super) fn audit_heads_answered(&mut self, token: u64, answers: Vec<(WriterId, PeerHead)>) {
        let Some(waiter) = self.waiters.remove(&token) else {
            return;
        };
        let result = verify_against_mesh(&mut DaemonBackend::local(self), answers);
        self.answer(waiter.sink, result);
    }
}

/// The answer to `audit verify --against-mesh` outside a cluster.
pub(super) fn no_cluster() -> Problem {
    Problem::new(
        ProblemKind::Unavailable,
        "this node is not part of a cluster, so no peer holds its audit head; run `meshward \
         init` or `meshward join` first",
    )
}
