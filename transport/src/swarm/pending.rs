//! Inbound requests waiting for the node's response: bounded, shared by the handles and
//! the swarm task.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use libp2p::PeerId;
use libp2p::request_response::{InboundRequestId, ResponseChannel};
use tracing::debug;

use crate::ResponseId;
use crate::metrics::{self, Counters};

/// An inbound request waiting for the node's response.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) request: InboundRequestId,
    pub(crate) peer: PeerId,
    pub(crate) channel: ResponseChannel<Vec<u8>>,
}

/// Inbound requests waiting for [`Handle::respond`], bounded; shared by the handles (which
/// take entries out synchronously) and the swarm task (which inserts and expires them).
#[derive(Debug)]
pub(crate) struct PendingResponses {
    capacity: usize,
    counters: Arc<Counters>,
    inner: Mutex<PendingInner>,
}

#[derive(Debug, Default)]
struct PendingInner {
    next: u64,
    by_id: BTreeMap<u64, Pending>,
    by_request: HashMap<InboundRequestId, u64>,
}

impl PendingResponses {
    /// An empty table of at most `capacity` entries.
    pub(crate) fn new(capacity: usize, counters: Arc<Counters>) -> PendingResponses {
        PendingResponses {
            capacity,
            counters,
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, PendingInner> {
        // The map stays consistent across a panic in another holder: each operation is a
        // single insert or remove.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn insert(&self, pending: Pending) -> ResponseId {
        let mut inner = self.lock();
        while inner.by_id.len() >= self.capacity {
            if let Some((_, oldest)) = inner.by_id.pop_first() {
                inner.by_request.remove(&oldest.request);
                metrics::inc(&self.counters.responses_evicted);
                debug!(peer = %oldest.peer, "pending response evicted unanswered");
            }
        }
        let id = inner.next;
        inner.next += 1;
        inner.by_request.insert(pending.request, id);
        inner.by_id.insert(id, pending);
        metrics::set(&self.counters.pending_responses, inner.by_id.len() as u64);
        ResponseId(id)
    }

    /// Takes the entry out, if still there.
    pub(crate) fn take(&self, id: ResponseId) -> Option<Pending> {
        let mut inner = self.lock();
        let pending = inner.by_id.remove(&id.0)?;
        inner.by_request.remove(&pending.request);
        metrics::set(&self.counters.pending_responses, inner.by_id.len() as u64);
        Some(pending)
    }

    /// Puts back an entry taken by [`Self::take`] (the command queue was full).
    pub(crate) fn restore(&self, id: ResponseId, pending: Pending) {
        let mut inner = self.lock();
        inner.by_request.insert(pending.request, id.0);
        inner.by_id.insert(id.0, pending);
        metrics::set(&self.counters.pending_responses, inner.by_id.len() as u64);
    }

    /// Drops the entry of a request libp2p gave up on (timeout, connection closed).
    pub(crate) fn forget(&self, request: InboundRequestId) {
        let mut inner = self.lock();
        if let Some(id) = inner.by_request.remove(&request) {
            inner.by_id.remove(&id);
        }
        metrics::set(&self.counters.pending_responses, inner.by_id.len() as u64);
    }
}
