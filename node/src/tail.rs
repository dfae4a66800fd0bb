//! Pipelined announces: a local commit's push goes out while its rows are being made durable,
//! and what keeps that safe across a crash.
//!
//! # Why
//! A write used to cross two durable commits in series before a receiver held it: the
//! origin's (before it announced), then the receiver's (before it applied and forwarded). The
//! origin's fsync is the first half of that floor. When the node's [`crate::drive::Driver`]
//! pipelines ([`crate::drive::Driver::pipeline`]), the executor sends a local commit's push
//! ([`crate::core::Output::Announce`]) before it writes the pass's rows, so the network hop
//! and the receivers' checks and writes overlap the origin's fsync.
//!
//! What does not change: nothing is acknowledged before it is durable (the caller's answer,
//! [`crate::core::Output::Committed`], still runs after the write), nothing is forwarded
//! before it is checked (receivers are untouched: they check, write durably, then let gossip
//! forward), and queues stay bounded (the push takes the transport's bounded command queue,
//! as before).
//!
//! # The danger
//! A node killed after the push left but before its rows were durable restarts without that
//! change: its store ends one (or a few) changes before what some peers hold. If it then
//! committed again it would sign a **different** change at a position its peers already hold
//! a change for: two signed changes at one position of its segment. Peers would refuse the new
//! one as a fork, and the node's writes would stop replicating.
//!
//! # The rule that prevents it
//! 1. Before the first pipelined announce, a file in the data directory durably says the tail is open
//!    ([`TAIL_FILE`], written once, on the daemon's first local write after it started,
//!    before that write is committed). A daemon that never writes locally never opens it.
//! 2. On a clean stop (SIGTERM, SIGINT), after its last write, the daemon closes it again.
//!    A write that fails (a full disk) leaves it open.
//! 3. A node that finds the tail open when it starts (it was killed, crashed, or lost power
//!    while pipelining) does not pipeline and **refuses local writes** until it has taken a
//!    complete sync answer from every other member of the roster
//!    ([`crate::core::Core::tail_recovered`]). Each answer carries everything that member holds
//!    and the node lacks, its own changes included, so afterwards the node holds every change
//!    of its own that any member held when it answered, and its next commit continues after
//!    them. The same holds after a write refused for a full disk (the core is rebuilt from
//!    the store, which may lack what was announced). An offline command
//!    ([`crate::ops::offline`]) refuses to commit while the tail is open: the daemon must
//!    recover first.
//!
//! Why every member: the push went to the node's gossip peers, and each may have written it
//! and forwarded it. Whoever holds it got it, first hand, from the node itself before the
//! crash; messages the dead process had sent arrive before the restarted one has reopened its
//! store, rebuilt its replica and completed a new QUIC handshake, and each member's actor
//! handles them in order, before the restarted node's later sync request. So once every member
//! answered, no member holds a change of the node that the node lacks. A member that cannot
//! be reached keeps the node's own writes refused (reads, and replication of everyone else's
//! writes, go on): the price of the shorter path, paid only after an unclean stop.
//!
//! The kill -9 test (`tests/tests/writer_crash.rs`) kills a writing node again and again and
//! compares, position by position, what every node holds of its segments.

use std::path::Path;

/// The file in the data directory that says announces may have gone out before their rows
/// were durable. A file, not a store table: a backup copies the store, and a store restored
/// from it is not the daemon that announced (restoring an old copy of a node has its own
/// rules); a restore into a node's own directory keeps the file, so that node still
/// recovers its tail before it writes.
pub const TAIL_FILE: &str = "tail-open";

/// Whether the tail of the node in `data` is open (see the module docs).
pub fn is_open(data: &Path) -> std::io::Result<bool> {
    data.join(TAIL_FILE).try_exists()
}

/// Opens (before pipelining) or closes (after the last write of a clean stop) the tail of the
/// node in `data`, durably (the file, then the directory entry, synced).
pub fn set_open(data: &Path, open: bool) -> std::io::Result<()> {
    let path = data.join(TAIL_FILE);
    if open {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options.open(&path)?.sync_all()?;
    } else {
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            other => other?,
        }
    }
    std::fs::File::open(data)?.sync_all()
}

/// Where a running node stands (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tail {
    /// No local write since the daemon started: the tail is closed on disk and is opened
    /// before the first one.
    Closed,
    /// The tail is open on disk and the node pipelines its announces.
    Open,
    /// The node found the tail open (or a write failed after an announce): it does not
    /// pipeline and refuses local writes until every other member answered a sync.
    Recovering,
}

/// The message a local write gets while the node recovers its tail.
pub const RECOVERING: &str = "this node stopped uncleanly while announcing its latest writes, \
     and is taking them back from its peers before it writes again: local writes resume once \
     every member of the cluster has answered it (check `meshward status`: every peer \
     connected); reads and replication go on meanwhile";
