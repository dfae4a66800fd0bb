//! What the core takes and gives: its tunables, its inputs, its outputs, and the verdicts it
//! gives gossip.

use super::*;

/// Tunables of the core.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    /// How often to advertise our digest and sync with one random peer. 1 s: with 2–7 nodes
    /// an advert is 40 bytes per node per second, and a missed push is repaired within it.
    pub sync_interval: Duration,
    /// Largest gossip payload; larger pushes become adverts. Matches the transport's gossip
    /// bound (gossipsub's 64 KiB cap, less headroom).
    pub max_gossip_bytes: usize,
    /// Payload bytes per sync answer before the answer says "more". 8 MiB keeps an answer
    /// well under the 32 MiB wire bound while carrying a few sealed segments.
    pub sync_budget: usize,
    /// A sync request with no answer after this long is forgotten and may be retried.
    pub sync_timeout: Duration,
    /// First redial delay after a peer is lost (250 ms); doubles up to `redial_max`.
    pub redial_min: Duration,
    /// Longest redial delay. 2 s: a partition that heals is noticed within 2 s, and a
    /// redial to each of at most a few dozen peers every 2 s costs a QUIC handshake.
    pub redial_max: Duration,
    /// Encoded mastered-record bytes per sync answer before it says "more" (at least one
    /// record always goes). 4 MiB: four records of the largest payload.
    pub mastered_budget: usize,
    /// A leader silent for this long counts as gone: followers then endorse a failover
    /// candidate. 3 s: three missed adverts (one per `sync_interval`).
    pub leader_timeout: Duration,
    /// How long a failover collects endorsements, and a delegated request waits for the
    /// leader, before the caller gets an error. 5 s: "a clear error within a few seconds".
    pub ask_timeout: Duration,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            sync_interval: Duration::from_secs(1),
            max_gossip_bytes: 60 * 1024,
            sync_budget: 8 * 1024 * 1024,
            sync_timeout: Duration::from_secs(30),
            redial_min: Duration::from_millis(250),
            redial_max: Duration::from_secs(2),
            mastered_budget: 4 * 1024 * 1024,
            leader_timeout: Duration::from_secs(3),
            ask_timeout: Duration::from_secs(5),
        }
    }
}

/// What reaches the core.
#[derive(Debug)]
pub enum Input {
    /// Time passed; due timers fire.
    Tick,
    /// Local writes, committed as one batch; `token` comes back in [`Output::Committed`].
    Commit {
        /// The writes.
        ops: Vec<Op>,
        /// Caller's token.
        token: u64,
        /// Wall-clock time of the commit in microseconds, carried in the push so receivers can
        /// measure replication lag (advisory: clocks of different hosts differ).
        at_us: u64,
    },
    /// A connection to an admitted peer is up.
    Connected {
        /// The peer.
        peer: WriterId,
        /// Its address.
        addr: SocketAddr,
    },
    /// The last connection to a peer is gone.
    Disconnected {
        /// The peer.
        peer: WriterId,
    },
    /// A gossip message; `id` comes back in [`Output::Validate`].
    Gossip {
        /// The peer it came from (not necessarily its origin).
        source: WriterId,
        /// Opaque message id.
        id: u64,
        /// The message.
        data: Vec<u8>,
    },
    /// A peer asks what it lacks; `channel` comes back in [`Output::Respond`].
    SyncRequest {
        /// The peer.
        peer: WriterId,
        /// Opaque response channel.
        channel: u64,
        /// Its encoded digest.
        data: Vec<u8>,
    },
    /// The answer to our [`Output::Request`] with `request`.
    SyncResponse {
        /// The peer.
        peer: WriterId,
        /// Our request token.
        request: u64,
        /// The encoded answer.
        data: Vec<u8>,
    },
    /// Our request `request` failed (timeout, disconnect, oversize answer).
    SyncFailed {
        /// The peer.
        peer: WriterId,
        /// Our request token.
        request: u64,
    },
    /// Write a mastered record as the leader; answered by [`Output::Done`].
    Master {
        /// Caller's token.
        token: u64,
        /// What the record is about.
        kind: RecordKind,
        /// Its payload.
        payload: Vec<u8>,
    },
    /// `ha failover [--force]`: become leader of the next epoch; answered by
    /// [`Output::Done`].
    Failover {
        /// Caller's token.
        token: u64,
        /// Break-glass for a two-node pair: take over without the other node.
        force: bool,
    },
    /// `ha demote --to`, `ha failback`: as the leader, hand leadership to `next` once a
    /// majority of the roster, `next` included, endorsed it. Answered by [`Output::Done`].
    Handover {
        /// Caller's token.
        token: u64,
        /// The next leader.
        next: WriterId,
    },
    /// `ha make-standalone`: on a follower, ask the leader to remove this node; on the leader
    /// with `node`, remove that node. Answered by [`Output::Done`].
    Leave {
        /// Caller's token.
        token: u64,
        /// The node to remove (leader only); `None`: this node.
        node: Option<WriterId>,
    },
    /// `password change`: set a local user's password under the leader's policy (delegated
    /// to the leader from a follower). Answered by [`Output::Done`].
    Password {
        /// Caller's token.
        token: u64,
        /// The user.
        user: String,
        /// The new password.
        password: Secret,
    },
    /// A write only the leader makes, on a follower: send `envelope` (opaque to the core) to
    /// the leader. Answered by [`Output::Forwarded`] (see [`forward`]).
    Forward {
        /// Caller's token.
        token: u64,
        /// What to forward.
        envelope: Opaque,
    },
    /// The driver's answer to an [`Output::Serve`] (opaque to the core).
    Served {
        /// The channel of the [`Output::Serve`].
        channel: u64,
        /// The asker's last mastered version, from the [`Output::Serve`].
        have: u64,
        /// The answer.
        answer: Opaque,
    },
    /// `audit verify --against-mesh`: ask every other member what it holds of this node's
    /// audit head. Answered by [`Output::AuditHeads`] (see [`audit_heads`]).
    AuditHeads {
        /// Caller's token.
        token: u64,
    },
}

/// What the core asks its driver to do, in order.
#[derive(Debug)]
pub enum Output {
    /// Make these effects durable before executing any later output.
    Persist(Effects),
    /// Store this verified mastered record durably before executing any later output.
    PersistMastered(Box<Verified<SignedRecord>>),
    /// The verified roster changed: admit exactly these peers.
    Roster(BTreeSet<WriterId>),
    /// Store durably, before any later output, that this node endorsed `candidate` for
    /// `epoch` (it must never endorse another for the same epoch, even after a restart).
    PersistVote {
        /// The epoch.
        epoch: u64,
        /// The endorsed candidate.
        candidate: WriterId,
    },
    /// Our chain lost to a competing one (higher epoch and leader): durably replace our
    /// records from version `from` on by `records`, and keep ours from there as superseded.
    AdoptChain {
        /// First replaced version.
        from: u64,
        /// The winning chain's records from `from` on.
        records: Vec<SignedRecord>,
        /// Our records from `from` on, now superseded.
        superseded: Vec<SignedRecord>,
    },
    /// Records of a competing chain that lost to ours: keep them for review.
    Superseded(Vec<SignedRecord>),
    /// The result of an [`Input::Master`], [`Input::Failover`], [`Input::Handover`],
    /// [`Input::Leave`] or
    /// [`Input::Password`]: the mastered version written, or why not.
    Done {
        /// The caller's token.
        token: u64,
        /// The version, or a message for the operator.
        result: Result<u64, String>,
    },
    /// The result of an [`Input::Forward`]: the leader's answer, or why there is none.
    Forwarded {
        /// The caller's token.
        token: u64,
        /// The leader's answer (opaque), or a message for the operator.
        result: Result<Opaque, String>,
    },
    /// As the leader: run this forwarded `envelope` and answer with [`Input::Served`].
    Serve {
        /// Give it back in [`Input::Served`].
        channel: u64,
        /// Give it back in [`Input::Served`].
        have: u64,
        /// What a follower forwarded (opaque to the core).
        envelope: Opaque,
    },
    /// The result of an [`Input::AuditHeads`]: each other member's answer.
    AuditHeads {
        /// The caller's token.
        token: u64,
        /// Per member, what it holds of this node's audit head.
        answers: Vec<(WriterId, PeerHead)>,
    },
    /// Publish on gossip.
    Publish(Vec<u8>),
    /// Publish on gossip the push of a local commit. Like [`Output::Publish`], except that
    /// a driver that pipelines ([`crate::drive::Driver::pipeline`]) has the executor send it
    /// before the pass's rows are durable ([`crate::tail`] says why that is safe).
    Announce(Vec<u8>),
    /// Verdict on a received gossip message.
    Validate {
        /// The message id given in [`Input::Gossip`].
        id: u64,
        /// What to tell gossip.
        verdict: Verdict,
    },
    /// Send a sync request; the answer comes back as [`Input::SyncResponse`] with `request`.
    Request {
        /// The peer.
        peer: WriterId,
        /// Our token for it.
        request: u64,
        /// The encoded request.
        data: Vec<u8>,
    },
    /// Answer a sync request.
    Respond {
        /// The channel given in [`Input::SyncRequest`].
        channel: u64,
        /// The encoded answer.
        data: Vec<u8>,
    },
    /// Dial a peer.
    Dial {
        /// The peer.
        peer: WriterId,
        /// Where.
        addr: SocketAddr,
    },
    /// A push from `origin`, committed there at `sent_us`, is now durable here (after its
    /// [`Output::Persist`]); the driver records the replication lag.
    Applied {
        /// The node that committed it.
        origin: WriterId,
        /// Its commit time on the origin's clock, microseconds.
        sent_us: u64,
    },
    /// Result of an [`Input::Commit`].
    Committed {
        /// The caller's token.
        token: u64,
        /// Rows written, or why nothing was.
        result: Result<Vec<RowChange>, CommitError>,
    },
}

/// A gossip verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Valid and applied: forward it.
    Accept,
    /// Not wrong, but not applicable here (a gap): do not forward, do not penalise.
    Ignore,
    /// Invalid: do not forward; the sender misbehaved.
    Reject,
}

/// A secret string (a password): never shown by `Debug`, zeroed when dropped.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl Input {
    /// A copy of this input if it is a sync request (a digest: small), for the edge to have
    /// it answered again from durable state should the write of its batch be refused.
    pub fn sync_request_copy(&self) -> Option<Input> {
        match self {
            Input::SyncRequest {
                peer,
                channel,
                data,
            } => Some(Input::SyncRequest {
                peer: *peer,
                channel: *channel,
                data: data.clone(),
            }),
            _ => None,
        }
    }
}
