//! A node's replica of the shared tables: its own writable segments and read-only copies of
//! every other writer's.
//!
//! The replica is a sans-io state machine. Each call returns [`Effects`]: row changes for the
//! node's query view, what to persist (persist before announcing), and what to push to peers.

use std::collections::BTreeMap;
use std::num::NonZeroU64;
use std::sync::Arc;

use automerge::{Change, ChangeHash};
use ed25519_dalek::SigningKey;

use crate::error::{ApplyError, CommitError};
use crate::id::{ClusterId, SegmentKey, TableId, TableShape, WriterId};
use crate::mastered::Frontier;
use crate::rotation::{Hlc, Rotation, RotationError, rotation_key};
use crate::row::{
    AUDIT_HEAD_KEY, AuditHead, Event, Fingerprint, KeyType, Row, RowError, UserDataException,
    exception_key, fingerprint_key,
};
use crate::segment::{Body, Live, RowOp, Segment, as_map, check_snapshot};
use crate::sync::{Digest, Head, SegmentState, SignedHead, SyncItem};
use crate::writers::{MAX_SEGMENTS_PER_WRITER, Writers};

mod apply;

use apply::{parse_changes, row_changes};

/// Most operations one [`Replica::commit`] accepts. A node commits once per tick, so this only
/// bounds a single change's size (about 4 MiB of events at the row size limit of typical rows).
pub const MAX_OPS_PER_COMMIT: usize = 65_536;

/// Tunables of a replica.
#[derive(Clone, Debug)]
pub struct ReplicaConfig {
    /// Rows after which a log segment is sealed. 50 000: automerge holds a loaded document
    /// at roughly 460 B per event, so a live segment stays near 25 MB and a sealed one is about
    /// 2 MB on the wire; the measurements put the sweet spot at 50–100 k.
    pub seal_rows: NonZeroU64,
    /// Stored changes of a live segment after which the store is given a fresh snapshot
    /// instead, so a restart loads one document rather than thousands of changes.
    pub compact_after: NonZeroU64,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        ReplicaConfig {
            seal_rows: NonZeroU64::new(50_000).unwrap_or(NonZeroU64::MIN),
            compact_after: NonZeroU64::new(1024).unwrap_or(NonZeroU64::MIN),
        }
    }
}

/// A local write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Append an event to this node's event log.
    Append(Event),
    /// Record that this node saw a host key now: creates the row or widens its first/last seen.
    ObserveFingerprint {
        /// The host.
        host: String,
        /// The key type.
        key_type: KeyType,
        /// The fingerprint.
        fingerprint: String,
        /// When it was seen, unix ms.
        at_ms: i64,
    },
    /// Set a user data exception.
    PutException(UserDataException),
    /// Remove one of this node's user data exceptions.
    DeleteException {
        /// The user.
        user: String,
        /// The field.
        field: String,
    },
    /// Add a credential rotation; refused if this node already holds one under its key.
    PutRotation(Rotation),
    /// Remove one of this node's rotations (retention).
    DeleteRotation {
        /// The account.
        address: String,
        /// The rotation's HLC.
        hlc: Hlc,
    },
    /// Set this node's audit chain head (its one row of [`TableId::AuditHeads`]).
    PutAuditHead(AuditHead),
}

/// A change to the rows visible in a table, for the node's query view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RowChange {
    /// A log row was appended at `index` of the segment.
    Appended {
        /// The segment.
        key: SegmentKey,
        /// Position in the segment.
        index: u64,
        /// The row.
        row: Row,
    },
    /// A map row was created or replaced.
    Put {
        /// The segment.
        key: SegmentKey,
        /// The row key.
        row_key: String,
        /// The row.
        row: Row,
    },
    /// A map row was removed.
    Deleted {
        /// The segment.
        key: SegmentKey,
        /// The row key.
        row_key: String,
    },
}

/// What the store must do to keep a segment durable. Apply in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Persist {
    /// Replace everything stored for the segment with this snapshot (saved document).
    Snapshot {
        /// The segment's head.
        head: SignedHead,
        /// Saved document bytes.
        doc: Vec<u8>,
    },
    /// Append changes to what is stored for the segment; the first has seq
    /// `head.seq - changes.len() + 1`.
    Append {
        /// The segment's head after the changes.
        head: SignedHead,
        /// Raw change bytes in seq order.
        changes: Vec<Vec<u8>>,
    },
}

/// The outputs of one call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Effects {
    /// Row changes, in order.
    pub rows: Vec<RowChange>,
    /// Store updates, in order; persist them before pushing.
    pub persist: Vec<Persist>,
    /// Items to announce to peers (local commits only).
    pub push: Vec<SyncItem>,
}

impl Effects {
    fn extend(&mut self, other: Effects) {
        self.rows.extend(other.rows);
        self.persist.extend(other.persist);
        self.push.extend(other.push);
    }
}

/// A segment as loaded from the store by [`Replica::restore`].
#[derive(Clone, Debug)]
pub struct StoredSegment {
    /// Its last head.
    pub head: SignedHead,
    /// Saved document, if one was stored.
    pub snapshot: Option<Vec<u8>>,
    /// Changes stored after the snapshot, in seq order.
    pub changes: Vec<Vec<u8>>,
}

/// Counts for status output and benchmarks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Segment documents held.
    pub segments: usize,
    /// Of which loaded in memory.
    pub live: usize,
    /// Bytes of sealed segments held.
    pub sealed_bytes: usize,
    /// Rows per table (all writers).
    pub rows: BTreeMap<TableId, u64>,
}

/// A node's replica of the shared tables.
#[derive(Debug)]
pub struct Replica {
    cluster: ClusterId,
    key: SigningKey,
    me: WriterId,
    config: ReplicaConfig,
    segments: BTreeMap<SegmentKey, Segment>,
    writers: Writers,
}

impl Replica {
    /// An empty replica for the node with signing key `key`. It accepts only its own rows
    /// until told the roster with [`Replica::set_writers`].
    pub fn new(cluster: ClusterId, key: SigningKey, config: ReplicaConfig) -> Self {
        let me = WriterId::from_key(&key.verifying_key());
        Replica {
            cluster,
            key,
            me,
            config,
            segments: BTreeMap::new(),
            writers: Writers::new(me),
        }
    }

    /// Rebuilds a replica from what the store holds. Sealed segments stay as bytes (they are
    /// not parsed), so a restart costs one document load per live segment. Everything stored
    /// is loaded, also rows of writers no longer accepted (history); the replica accepts only
    /// its own new rows until told the roster with [`Replica::set_writers`].
    pub fn restore(
        cluster: ClusterId,
        key: SigningKey,
        config: ReplicaConfig,
        stored: impl IntoIterator<Item = StoredSegment>,
    ) -> Result<Self, ApplyError> {
        let mut replica = Replica::new(cluster, key, config);
        for s in stored {
            s.head.verify(cluster)?;
            let k = s.head.head.key;
            let body = match (s.head.head.sealed, s.snapshot, s.changes.is_empty()) {
                (true, Some(doc), true) => Body::Sealed(Arc::new(doc)),
                (_, snapshot, _) => {
                    let mut doc = match snapshot {
                        Some(bytes) => automerge::Automerge::load(&bytes).map_err(|e| {
                            ApplyError::Automerge {
                                key: k,
                                reason: e.to_string(),
                            }
                        })?,
                        None => automerge::Automerge::new(),
                    };
                    let changes = parse_changes(&k, s.changes)?;
                    let n = changes.len() as u64;
                    doc.apply_changes(changes)
                        .map_err(|e| ApplyError::Automerge {
                            key: k,
                            reason: e.to_string(),
                        })?;
                    let mut live = Live::from_doc(&k, doc)?;
                    if live.cursor.seq != s.head.head.seq
                        || live.cursor.hash != Some(ChangeHash(s.head.head.hash))
                    {
                        return Err(ApplyError::mismatch(
                            &k,
                            "stored data differs from its head",
                        ));
                    }
                    live.stored_changes = n;
                    Body::Live(Box::new(live))
                }
            };
            if replica
                .segments
                .insert(k, Segment { head: s.head, body })
                .is_none()
            {
                replica.writers.hold(&k);
            }
        }
        Ok(replica)
    }

    /// Sets the writers whose rows this replica accepts from now on: the members of the
    /// verified roster (its own are always accepted). Rows of other writers already held stay
    /// readable but are no longer advertised or offered, and new heads of them are refused
    /// with [`ApplyError::UnknownWriter`]. See [`crate::writers`] for why and for the bounds.
    pub fn set_writers(&mut self, writers: impl IntoIterator<Item = WriterId>) {
        self.writers.set(writers);
    }

    /// Limits removed writers to their frontiers (from the roster records that removed them):
    /// their heads up to the frontier are taken, beyond it refused with
    /// [`ApplyError::BeyondFrontier`]. A writer also set with [`Replica::set_writers`] is not
    /// limited. Replaces the frontiers set before. See [`crate::writers`].
    pub fn set_frontiers<'a>(&mut self, frontiers: impl IntoIterator<Item = &'a Frontier>) {
        let frontiers: Vec<&Frontier> = frontiers.into_iter().collect();
        self.writers.set_frontiers(
            frontiers.iter().map(|f| WriterId(f.writer)),
            frontiers.iter().flat_map(|f| f.states()),
        );
    }

    /// The frontier of `writer`'s segments as this replica holds them: what a leader puts in
    /// the roster record that removes it.
    pub fn frontier_of(&self, writer: WriterId) -> Frontier {
        let held: Vec<SegmentState> = self
            .segments
            .iter()
            .filter(|(k, _)| k.writer == writer)
            .map(|(_, s)| s.head.head.state())
            .collect();
        Frontier::of(writer, &held)
    }

    /// Whether a segment at `state` would be taken: of an accepted writer, or of a removed one
    /// within its frontier.
    pub fn takes(&self, state: &SegmentState) -> bool {
        self.writers.takes(state)
    }

    /// Whether new rows of `writer` are accepted.
    pub fn accepts(&self, writer: &WriterId) -> bool {
        self.writers.accepts(writer)
    }

    /// This node's writer id.
    pub fn writer(&self) -> WriterId {
        self.me
    }

    /// This node's signing key (it also signs the leader's mastered records and
    /// endorsements).
    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    /// The cluster.
    pub fn cluster(&self) -> ClusterId {
        self.cluster
    }

    /// Commits local writes, one automerge change per touched segment. Every op is validated
    /// first; on error nothing is committed.
    pub fn commit(&mut self, at_ms: i64, ops: Vec<Op>) -> Result<Effects, CommitError> {
        if ops.len() > MAX_OPS_PER_COMMIT {
            return Err(CommitError::TooMany {
                got: ops.len(),
                max: MAX_OPS_PER_COMMIT,
            });
        }
        let mut by_table: BTreeMap<TableId, Vec<RowOp>> = BTreeMap::new();
        let mut overlay: BTreeMap<(TableId, String), Option<Row>> = BTreeMap::new();
        for op in ops {
            let (table, row_op) = self.resolve(op, &overlay)?;
            if let RowOp::Put(k, row) = &row_op {
                overlay.insert((table, k.clone()), Some(row.clone()));
            } else if let RowOp::Delete(k) = &row_op {
                overlay.insert((table, k.clone()), None);
            }
            by_table.entry(table).or_default().push(row_op);
        }
        for (table, ops) in &by_table {
            if table.shape() == TableShape::Log && !self.log_fits(*table, ops.len() as u64) {
                return Err(CommitError::LogFull {
                    max: MAX_SEGMENTS_PER_WRITER,
                });
            }
        }
        let mut effects = Effects::default();
        for (table, ops) in by_table {
            match table.shape() {
                TableShape::Log => {
                    let mut rest = ops.as_slice();
                    while !rest.is_empty() {
                        let key = self.open_log_segment(table);
                        let rows = self.segments.get(&key).map_or(0, |s| s.head.head.rows);
                        let room = (self.config.seal_rows.get() - rows) as usize;
                        let (now, later) = rest.split_at(room.min(rest.len()));
                        effects.extend(self.commit_segment(key, at_ms, now)?);
                        rest = later;
                    }
                }
                TableShape::Map => {
                    let key = SegmentKey {
                        table,
                        writer: self.me,
                        segment: 0,
                    };
                    effects.extend(self.commit_segment(key, at_ms, &ops)?);
                }
            }
        }
        Ok(effects)
    }

    /// Applies received data after checking it completely: the writer's signature on the head,
    /// that the writer is accepted and the segment within the bounds ([`crate::writers`]),
    /// that every change is authored by the segment's writer and continues our chain, the
    /// schema, every row, and that the result is exactly the signed head. On error nothing
    /// changed. Data we already hold is accepted as a no-op.
    pub fn apply(&mut self, item: SyncItem) -> Result<Effects, ApplyError> {
        let head = item.head().clone();
        head.verify(self.cluster)?;
        let key = head.head.key;
        self.writers
            .check(&head.head.state(), !self.segments.contains_key(&key))?;
        let (have, have_hash, sealed) = match self.segments.get(&key) {
            None => (0, None, false),
            Some(s) => (
                s.head.head.seq,
                Some(s.head.head.hash),
                matches!(s.body, Body::Sealed(_)),
            ),
        };
        if head.head.seq <= have {
            if head.head.seq == have && have_hash != Some(head.head.hash) {
                return Err(ApplyError::Fork { key, seq: have });
            }
            return Ok(Effects::default());
        }
        if sealed {
            return Err(ApplyError::Fork { key, seq: have + 1 });
        }
        match item {
            SyncItem::Changes { changes, .. } => self.apply_changes(head, have, changes),
            SyncItem::Snapshot { doc, .. } => self.apply_snapshot(head, have, have_hash, doc),
        }
    }

    /// What this replica holds, including rows of writers no longer accepted (history).
    pub fn digest(&self) -> Digest {
        Digest {
            segments: self
                .segments
                .values()
                .map(|s| s.head.head.state())
                .collect(),
        }
    }

    /// What this replica holds of the writers it accepts: what it advertises, so that two
    /// replicas holding the same rows of the current members agree even when one of them
    /// also keeps a former member's history. A removed writer's segment held beyond its
    /// frontier is advertised at the frontier when its chain passes through it (see
    /// [`crate::writers`]).
    pub fn accepted_digest(&self) -> Digest {
        Digest {
            segments: self
                .segments
                .values()
                .filter_map(|s| {
                    let state = s.head.head.state();
                    if self.writers.takes(&state) {
                        return Some(state);
                    }
                    let (seq, hash) = self.writers.frontier(&state.key)?;
                    let passes = s
                        .with_live(|live| {
                            let doc = &live.doc()?.doc;
                            Ok(doc
                                .get_change_meta_by_hash(&ChangeHash(hash))
                                .is_some_and(|meta| meta.seq == seq))
                        })
                        .unwrap_or(false);
                    passes.then_some(SegmentState { seq, hash, ..state })
                })
                .collect(),
        }
    }

    /// Exactly what a peer with digest `peer` lacks, as items to send in order, stopping once
    /// `budget` payload bytes are reached (at least one item is always returned when anything
    /// is missing). The flag says whether more remains; the peer's next digest will show it.
    /// Segments on which the peer's chain differs from ours (a fork) are skipped, and so are
    /// segments of writers this replica no longer accepts (the peer would refuse them too).
    pub fn missing_for(
        &self,
        peer: &Digest,
        budget: usize,
    ) -> Result<(Vec<SyncItem>, bool), ApplyError> {
        let mut items = Vec::new();
        let mut size = 0;
        for (key, seg) in &self.segments {
            if !self.writers.takes(&seg.head.head.state()) {
                continue;
            }
            if size >= budget && !items.is_empty() {
                return Ok((items, true));
            }
            let item = match peer.get(key) {
                None => SyncItem::Snapshot {
                    head: seg.head.clone(),
                    doc: match &seg.body {
                        Body::Sealed(bytes) => bytes.as_ref().clone(),
                        Body::Live(live) => live.save()?,
                    },
                },
                Some(p) if p.seq < seg.head.head.seq => {
                    let changes = seg.with_live(|live| {
                        let theirs = ChangeHash(p.hash);
                        let doc = &live.doc()?.doc;
                        match doc.get_change_meta_by_hash(&theirs) {
                            Some(meta) if meta.seq == p.seq => {
                                let mut changes = doc.get_changes(&[theirs]);
                                changes.sort_by_key(Change::seq);
                                Ok(Some(
                                    changes.iter().map(|c| c.raw_bytes().to_vec()).collect(),
                                ))
                            }
                            _ => Ok(None),
                        }
                    })?;
                    match changes {
                        Some(changes) => SyncItem::Changes {
                            head: seg.head.clone(),
                            changes,
                        },
                        None => continue,
                    }
                }
                Some(_) => continue,
            };
            size += item.payload_len();
            items.push(item);
        }
        Ok((items, false))
    }

    /// Every row of `table` from every writer, in segment order then list or key order.
    /// Sealed segments are loaded temporarily; the node's query path uses its own row view.
    pub fn rows(&self, table: TableId) -> Result<Vec<(SegmentKey, Row)>, ApplyError> {
        let mut out = Vec::new();
        for (key, seg) in self.segments.iter().filter(|(k, _)| k.table == table) {
            let rows = seg.with_live(|live| live.all_rows())?;
            out.extend(rows.into_iter().map(|(_, r)| (*key, r)));
        }
        Ok(out)
    }

    /// Counts for status and benchmarks.
    pub fn stats(&self) -> Stats {
        let mut stats = Stats::default();
        for (key, seg) in &self.segments {
            stats.segments += 1;
            match &seg.body {
                Body::Live(_) => stats.live += 1,
                Body::Sealed(b) => stats.sealed_bytes += b.len(),
            }
            *stats.rows.entry(key.table).or_default() += seg.head.head.rows;
        }
        stats
    }

    /// Turns a local op into a validated row op of its table.
    fn resolve(
        &self,
        op: Op,
        overlay: &BTreeMap<(TableId, String), Option<Row>>,
    ) -> Result<(TableId, RowOp), CommitError> {
        let current = |table: TableId, row_key: &str| -> Option<Row> {
            if let Some(pending) = overlay.get(&(table, row_key.to_string())) {
                return pending.clone();
            }
            let key = SegmentKey {
                table,
                writer: self.me,
                segment: 0,
            };
            match &self.segments.get(&key)?.body {
                Body::Live(live) => live.get(row_key),
                Body::Sealed(_) => None,
            }
        };
        Ok(match op {
            Op::Append(event) => {
                let row = Row::Event(event);
                row.validate()?;
                (TableId::Events, RowOp::Insert(row))
            }
            Op::ObserveFingerprint {
                host,
                key_type,
                fingerprint,
                at_ms,
            } => {
                let k = fingerprint_key(&host, key_type, &fingerprint);
                let (first, last) = match current(TableId::Fingerprints, &k) {
                    Some(Row::Fingerprint(f)) => {
                        (f.first_seen_ms.min(at_ms), f.last_seen_ms.max(at_ms))
                    }
                    _ => (at_ms, at_ms),
                };
                let row = Row::Fingerprint(Fingerprint {
                    host,
                    key_type,
                    fingerprint,
                    first_seen_ms: first,
                    last_seen_ms: last,
                });
                row.validate()?;
                (TableId::Fingerprints, RowOp::Put(k, row))
            }
            Op::PutException(x) => {
                let row = Row::Exception(x);
                row.validate()?;
                let k = row.key().unwrap_or_default();
                (TableId::Exceptions, RowOp::Put(k, row))
            }
            Op::DeleteException { user, field } => {
                let k = exception_key(&user, &field);
                if current(TableId::Exceptions, &k).is_none() {
                    return Err(CommitError::NoSuchRow {
                        table: TableId::Exceptions,
                        row_key: k,
                    });
                }
                (TableId::Exceptions, RowOp::Delete(k))
            }
            Op::PutRotation(r) => {
                let row = Row::Rotation(r);
                row.validate()?;
                let k = row.key().unwrap_or_default();
                if current(TableId::Rotations, &k).is_some() {
                    return Err(CommitError::Row(RowError::Rotation(RotationError {
                        field: "hlc",
                        reason: format!("this node already holds rotation {k}"),
                    })));
                }
                (TableId::Rotations, RowOp::Put(k, row))
            }
            Op::DeleteRotation { address, hlc } => {
                let k = rotation_key(&address, hlc);
                if current(TableId::Rotations, &k).is_none() {
                    return Err(CommitError::NoSuchRow {
                        table: TableId::Rotations,
                        row_key: k,
                    });
                }
                (TableId::Rotations, RowOp::Delete(k))
            }
            Op::PutAuditHead(h) => {
                let row = Row::AuditHead(h);
                row.validate()?;
                (
                    TableId::AuditHeads,
                    RowOp::Put(AUDIT_HEAD_KEY.to_string(), row),
                )
            }
        })
    }

    /// The key of this node's log segment that still has room, creating the key of a new one
    /// after a sealed segment.
    fn open_log_segment(&self, table: TableId) -> SegmentKey {
        let first = SegmentKey {
            table,
            writer: self.me,
            segment: 0,
        };
        let last = SegmentKey {
            segment: u32::MAX,
            ..first
        };
        match self.segments.range(first..=last).next_back() {
            None => first,
            Some((k, s)) if s.head.head.sealed => SegmentKey {
                segment: k.segment + 1,
                ..*k
            },
            Some((k, _)) => *k,
        }
    }

    /// Whether `rows` more rows fit in this node's log of `table` without opening a segment
    /// numbered past [`MAX_SEGMENTS_PER_WRITER`].
    fn log_fits(&self, table: TableId, rows: u64) -> bool {
        let seal = self.config.seal_rows.get();
        let key = self.open_log_segment(table);
        let held = self.segments.get(&key).map_or(0, |s| s.head.head.rows);
        let beyond = rows.saturating_sub(seal.saturating_sub(held));
        let last = u64::from(key.segment) + beyond.div_ceil(seal);
        last < u64::from(MAX_SEGMENTS_PER_WRITER)
    }

    /// Commits row ops to one of our own segments and produces the effects.
    fn commit_segment(
        &mut self,
        key: SegmentKey,
        at_ms: i64,
        ops: &[RowOp],
    ) -> Result<Effects, CommitError> {
        if !self.segments.contains_key(&key) {
            self.writers.hold(&key);
        }
        let seg = self.segments.entry(key).or_insert_with(|| Segment {
            head: Head {
                cluster: self.cluster,
                key,
                seq: 0,
                rows: 0,
                sealed: false,
                hash: [0; 32],
            }
            .sign(&self.key),
            body: Body::Live(Box::new(Live::empty(&key))),
        });
        let Body::Live(live) = &mut seg.body else {
            // open_log_segment never returns a sealed segment, and map segments never seal.
            return Ok(Effects::default());
        };
        let rows_before = live.rows();
        let change = live.commit(at_ms, ops)?;
        let rows = live.rows();
        let sealed = key.table.shape() == TableShape::Log && rows >= self.config.seal_rows.get();
        let head = Head {
            cluster: self.cluster,
            key,
            seq: live.cursor.seq,
            rows,
            sealed,
            hash: live.cursor.hash.map_or([0; 32], |h| h.0),
        }
        .sign(&self.key);
        let mut effects = Effects {
            rows: row_changes(&key, rows_before, ops.iter().cloned()),
            ..Effects::default()
        };
        effects
            .persist
            .push(self.persisted(key, &head, vec![change.clone()]));
        effects.push.push(SyncItem::Changes {
            head: head.clone(),
            changes: vec![change],
        });
        self.finish(key, head);
        Ok(effects)
    }
}
