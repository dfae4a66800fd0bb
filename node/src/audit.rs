//! The node's session audit: append-only, hash-chained, group-committed, in redb.
//!
//! # The chain
//! Each node keeps its own audit (local data, never replicated) in its one redb file, in two
//! tables of its own: `audit_records` (seq → postcard-encoded [`AuditRecord`]) and `audit_meta`
//! (the head: last seq and last hash). Records are numbered densely from 1. Each record carries
//! the hash of the one before it (`prev`, all zeros for record 1) and its own hash:
//!
//! ```text
//! hash = SHA-256( "meshward/audit/v1\0"
//!               || seq (u64 big-endian) || at_ms (i64 big-endian)
//!               || for actor, action, target, detail: len (u64 big-endian) || UTF-8 bytes
//!               || prev )
//! ```
//!
//! [`AuditLog::verify`] walks the table in seq order and names the *first* bad record:
//! - [`ChainBreak::Altered`]: the content no longer hashes to the stored hash;
//! - [`ChainBreak::Removed`]: a seq is missing (a gap, or records missing after the last one
//!   present, up to the head kept in `audit_meta`);
//! - [`ChainBreak::Reordered`]: a record sits under another seq than its own, or its `prev` is
//!   not the hash of the record before it;
//! - [`ChainBreak::Unreadable`]: the stored bytes do not decode;
//! - [`ChainBreak::HeadMismatch`]: the head does not match the last record (records past the
//!   head, or the head rewritten).
//!
//! What the chain proves: nobody altered, removed or reordered records *without rewriting
//! everything after them and the head*. Someone who can write the file can still rebuild a
//! consistent chain from any point; detecting that needs the head anchored outside this file
//! (published to the replicated event log, or signed), which this module does not do.
//!
//! # Group commit
//! A durable redb commit costs an fsync (0.3–3 ms on our hosts), so one commit per record caps
//! the audit at a few hundred records per second. [`AuditLog::append_batch`] appends a whole
//! batch, and moves the head, in ONE durable write transaction. [`GroupCommitter`] does this
//! for concurrent writers: a thread takes requests from a bounded queue, drains whatever is
//! queued (up to a maximum batch), commits once, then replies to each writer with its seq.
//! A reply means the record is durable.
//!
//! Other modules share the same [`Database`]; this module only touches its `audit_` tables, and
//! [`AuditLog::append_in`] lets a caller put audit records in a write transaction of its own.

use std::io::{self, BufRead, Write};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::thread;

use anyhow::Context as _;
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Most bytes in `actor`, `action` or `target`.
pub const MAX_NAME_BYTES: usize = 256;
/// Most bytes in `detail` (16 KiB).
pub const MAX_DETAIL_BYTES: usize = 16 * 1024;
/// Capacity of the [`GroupCommitter`] request queue; a writer blocks when it is full.
/// 4096 queued records is about 4 batches of [`GROUP_COMMIT_MAX_BATCH`]: enough to keep the
/// committer busy, small enough to bound memory (≤ ~70 MiB at maximal detail size).
pub const GROUP_COMMIT_QUEUE_CAPACITY: usize = 4096;
/// Most records the [`GroupCommitter`] puts in one commit. At 1024 records a commit takes a
/// few milliseconds, so the fsync stays the larger cost and latency stays low.
pub const GROUP_COMMIT_MAX_BATCH: usize = 1024;
/// Domain separation prefix of a record hash.
pub const HASH_DOMAIN: &[u8] = b"meshward/audit/v1\0";

/// seq → postcard-encoded [`AuditRecord`].
pub(crate) const RECORDS: TableDefinition<u64, &[u8]> = TableDefinition::new("audit_records");
/// Small metadata; [`HEAD_KEY`] → postcard-encoded [`Head`].
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("audit_meta");
const HEAD_KEY: &str = "head";
/// Capacity of the queue between the input reader and the acker of [`run_stdin_writer`].
const STDIN_LINE_QUEUE_CAPACITY: usize = 4096;

/// A stored audit record: one entry of the chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Position in the chain, 1-based and dense.
    pub seq: u64,
    /// When it happened, unix milliseconds, as given by the caller.
    pub at_ms: i64,
    /// The user who acted.
    pub actor: String,
    /// What was done.
    pub action: String,
    /// What it was done to.
    pub target: String,
    /// Free text; may contain `\n` and `\t`.
    pub detail: String,
    /// Hash of the previous record; all zeros for seq 1.
    pub prev: [u8; 32],
    /// Hash of this record (see the module docs).
    pub hash: [u8; 32],
}

/// A record to append; the log assigns seq, prev and hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewAuditRecord {
    /// When it happened, unix milliseconds. The log reads no clock.
    pub at_ms: i64,
    /// The user who acted: non-empty, at most [`MAX_NAME_BYTES`], no control characters.
    pub actor: String,
    /// What was done: non-empty, at most [`MAX_NAME_BYTES`], no control characters.
    pub action: String,
    /// What it was done to: non-empty, at most [`MAX_NAME_BYTES`], no control characters.
    pub target: String,
    /// Free text: at most [`MAX_DETAIL_BYTES`], no control characters but `\n` and `\t`.
    pub detail: String,
}

/// The last record of the chain, kept in `audit_meta`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// Seq of the last record.
    pub seq: u64,
    /// Hash of the last record.
    pub hash: [u8; 32],
}

/// A field of [`NewAuditRecord`], for errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// [`NewAuditRecord::actor`].
    Actor,
    /// [`NewAuditRecord::action`].
    Action,
    /// [`NewAuditRecord::target`].
    Target,
    /// [`NewAuditRecord::detail`].
    Detail,
}

/// Why a [`NewAuditRecord`] was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// The field is empty but must not be.
    #[error("{field} is empty; give a non-empty {field}")]
    Empty {
        /// The offending field.
        field: Field,
    },
    /// The field is longer than its limit.
    #[error("{field} is {len} bytes, more than the limit of {max} bytes")]
    TooLong {
        /// The offending field.
        field: Field,
        /// Its length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// The field holds a control character it may not hold.
    #[error(
        "{field} holds control character U+{code:04X} at byte {at}; \
         only detail may hold control characters, and only \\n and \\t"
    )]
    ControlChar {
        /// The offending field.
        field: Field,
        /// The character's code point.
        code: u32,
        /// Its byte offset in the field.
        at: usize,
    },
}

/// Errors of the audit log. Every variant leaves the store as it was before the call, except
/// that a [`AuditError::GroupCommit`] or [`AuditError::CommitterStopped`] seen by a
/// [`GroupCommitter`] writer leaves the fate of that one record unknown.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A record of the batch was refused; nothing of the batch was written.
    #[error("audit record {index} of the batch refused: {source}")]
    Invalid {
        /// Index of the record in the batch.
        index: usize,
        /// What is wrong with it.
        #[source]
        source: InputError,
    },
    /// redb failed; nothing was written (a failed commit is rolled back).
    #[error("audit store: {0}")]
    Storage(#[from] redb::Error),
    /// A stored record does not decode. Reading stops there; nothing was written.
    #[error("audit record {seq} is unreadable ({reason}); run `meshward audit verify`")]
    CorruptRecord {
        /// Key of the unreadable record.
        seq: u64,
        /// The decoder's complaint.
        reason: String,
    },
    /// The stored head does not decode, or does not match the last record; appends are
    /// refused until an operator has looked. Nothing was written.
    #[error("audit head is inconsistent ({reason}); run `meshward audit verify`")]
    CorruptHead {
        /// What is wrong.
        reason: String,
    },
    /// The chain reached seq `u64::MAX`; nothing was written.
    #[error("audit seq space exhausted")]
    SeqExhausted,
    /// The group commit holding this record failed; the record is not durable.
    #[error("audit group commit failed: {0}")]
    GroupCommit(#[source] Arc<AuditError>),
    /// The [`GroupCommitter`] thread is gone (it panicked or was shut down); a record
    /// submitted but unanswered may or may not be durable.
    #[error("audit group committer stopped; the record may or may not be durable")]
    CommitterStopped,
}

/// The first fault [`AuditLog::verify`] found, with the seq it is at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainBreak {
    /// The record at `seq` does not hash to its stored hash: its content was changed.
    Altered {
        /// The altered record.
        seq: u64,
    },
    /// Record `seq` is missing: a gap, or the table ends before the head.
    Removed {
        /// The first missing seq.
        seq: u64,
    },
    /// The record stored at `seq` says another seq, or its `prev` is not the hash of the
    /// record before it (records moved, or an earlier record rewritten with a new hash).
    Reordered {
        /// The key the misplaced record is stored under.
        seq: u64,
    },
    /// The bytes at `seq` do not decode as a record.
    Unreadable {
        /// The unreadable record.
        seq: u64,
    },
    /// The head in `audit_meta` is missing, unreadable, or disagrees with the last record
    /// (`seq`): records were added past the head or the head was rewritten.
    HeadMismatch {
        /// Seq of the last record in the table (0 if none).
        seq: u64,
    },
}

/// What [`AuditLog::verify`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// Records checked good, in order from seq 1, before the first break (all if none).
    pub verified: u64,
    /// The head stored in `audit_meta`, if any and readable.
    pub head: Option<Head>,
    /// The first fault, or `None` if the whole chain is intact.
    pub first_break: Option<ChainBreak>,
}

/// The audit log operations. Stateless: all state lives in the `audit_` tables of the
/// [`Database`] given to each call.
#[derive(Clone, Copy, Debug, Default)]
pub struct AuditLog;

/// Settings of a [`GroupCommitter`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupCommitConfig {
    /// Capacity of the bounded request queue; default [`GROUP_COMMIT_QUEUE_CAPACITY`].
    pub queue_capacity: NonZeroUsize,
    /// Most records in one commit; default [`GROUP_COMMIT_MAX_BATCH`].
    pub max_batch: NonZeroUsize,
}

/// A thread that appends records for many writers, one durable commit per drained batch.
///
/// Writers call [`GroupCommitter::submit`] (or [`GroupCommitter::append`]) from any thread.
///
/// Semantics:
/// - a `Ok(seq)` reply means the record is committed durably as `seq`;
/// - dropping a [`PendingAppend`] does not cancel the record: once submitted it is committed
///   with its batch, unanswered;
/// - if the process dies, records without a reply may or may not be in the store; records
///   with one are;
/// - dropping the committer (or [`GroupCommitter::shutdown`]) closes the queue, lets the
///   thread commit everything already queued and answer it, then joins the thread.
#[derive(Debug)]
pub struct GroupCommitter<'scope> {
    tx: Option<SyncSender<Request>>,
    worker: Option<Worker<'scope>>,
}

/// The answer to one [`GroupCommitter::submit`].
#[derive(Debug)]
pub struct PendingAppend {
    rx: Receiver<Result<u64, AuditError>>,
}

struct Request {
    record: NewAuditRecord,
    reply: SyncSender<Result<u64, AuditError>>,
}

#[derive(Debug)]
enum Worker<'scope> {
    Owned(thread::JoinHandle<()>),
    Scoped(thread::ScopedJoinHandle<'scope, ()>),
}

impl AuditLog {
    /// Appends `records` in one durable write transaction and returns them as stored.
    ///
    /// All records are checked first; if one is refused nothing is written. An empty slice
    /// writes nothing and commits nothing.
    pub fn append_batch(
        db: &Database,
        records: &[NewAuditRecord],
    ) -> Result<Vec<AuditRecord>, AuditError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        validate_batch(records)?;
        let mut txn = db.begin_write().map_err(redb::Error::from)?;
        txn.set_durability(Durability::Immediate)
            .map_err(redb::Error::from)?;
        // Checked above, before taking the write lock.
        let stored = Self::append_checked(&txn, records)?;
        txn.commit().map_err(redb::Error::from)?;
        Ok(stored)
    }

    /// Appends `records` inside the caller's write transaction, moving the head with them.
    ///
    /// Nothing is durable until the caller commits, at the durability the caller chose. On
    /// an error the transaction may hold part of the batch: abort it.
    pub fn append_in(
        txn: &WriteTransaction,
        records: &[NewAuditRecord],
    ) -> Result<Vec<AuditRecord>, AuditError> {
        validate_batch(records)?;
        Self::append_checked(txn, records)
    }

    /// [`AuditLog::append_in`] for records already validated.
    fn append_checked(
        txn: &WriteTransaction,
        records: &[NewAuditRecord],
    ) -> Result<Vec<AuditRecord>, AuditError> {
        let mut meta = txn.open_table(META).map_err(redb::Error::from)?;
        let mut table = txn.open_table(RECORDS).map_err(redb::Error::from)?;
        let head = match meta.get(HEAD_KEY).map_err(redb::Error::from)? {
            Some(bytes) => Some(decode_head(bytes.value())?),
            None => None,
        };
        let last_key = table
            .last()
            .map_err(redb::Error::from)?
            .map(|(k, _)| k.value());
        if head.map(|h| h.seq) != last_key {
            return Err(AuditError::CorruptHead {
                reason: format!(
                    "head says seq {}, last record is {}",
                    head.map_or(0, |h| h.seq),
                    last_key.unwrap_or(0)
                ),
            });
        }
        let (mut seq, mut prev) = head.map_or((0, [0; 32]), |h| (h.seq, h.hash));
        let mut stored = Vec::with_capacity(records.len());
        for new in records {
            seq = seq.checked_add(1).ok_or(AuditError::SeqExhausted)?;
            let record = seal(seq, new.clone(), prev);
            let bytes = postcard::to_stdvec(&record).map_err(|e| AuditError::CorruptRecord {
                seq,
                reason: format!("encoding failed: {e}"),
            })?;
            table
                .insert(seq, bytes.as_slice())
                .map_err(redb::Error::from)?;
            prev = record.hash;
            stored.push(record);
        }
        let head = postcard::to_stdvec(&Head { seq, hash: prev }).map_err(|e| {
            AuditError::CorruptHead {
                reason: format!("encoding failed: {e}"),
            }
        })?;
        meta.insert(HEAD_KEY, head.as_slice())
            .map_err(redb::Error::from)?;
        Ok(stored)
    }

    /// Up to `limit` records from `from_seq` on, in seq order. Does not check the chain (see
    /// [`AuditLog::verify`]); a record that does not decode is an error.
    pub fn list(
        db: &(impl ReadableDatabase + ?Sized),
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, AuditError> {
        let txn = db.begin_read().map_err(redb::Error::from)?;
        let table = match txn.open_table(RECORDS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(redb::Error::from(e).into()),
        };
        let mut out = Vec::new();
        for entry in table.range(from_seq..).map_err(redb::Error::from)? {
            if out.len() >= limit {
                break;
            }
            let (key, value) = entry.map_err(redb::Error::from)?;
            let seq = key.value();
            let record =
                decode_record(value.value()).map_err(|reason| AuditError::CorruptRecord {
                    seq,
                    reason: reason.to_string(),
                })?;
            out.push(record);
        }
        Ok(out)
    }

    /// The stored head, if any record was ever appended.
    pub fn head(db: &(impl ReadableDatabase + ?Sized)) -> Result<Option<Head>, AuditError> {
        let txn = db.begin_read().map_err(redb::Error::from)?;
        let meta = match txn.open_table(META) {
            Ok(meta) => meta,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(redb::Error::from(e).into()),
        };
        let head = meta.get(HEAD_KEY).map_err(redb::Error::from)?;
        head.map(|bytes| decode_head(bytes.value())).transpose()
    }

    /// Walks the whole chain in one read snapshot and reports the first fault.
    ///
    /// Faults in the data are reported in [`VerifyReport::first_break`], not as errors; an
    /// error means the store could not be read at all.
    pub fn verify(db: &(impl ReadableDatabase + ?Sized)) -> Result<VerifyReport, AuditError> {
        let txn = db.begin_read().map_err(redb::Error::from)?;
        let head = match txn.open_table(META) {
            Ok(meta) => meta
                .get(HEAD_KEY)
                .map_err(redb::Error::from)?
                .map(|bytes| decode_head(bytes.value())),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(redb::Error::from(e).into()),
        };
        let table = match txn.open_table(RECORDS) {
            Ok(table) => Some(table),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(redb::Error::from(e).into()),
        };
        let mut checker = ChainChecker::default();
        if let Some(table) = &table {
            for entry in table.iter().map_err(redb::Error::from)? {
                let (key, value) = entry.map_err(redb::Error::from)?;
                if let Some(fault) = checker.check(key.value(), value.value()) {
                    return Ok(VerifyReport {
                        verified: checker.verified,
                        head: head.and_then(Result::ok),
                        first_break: Some(fault),
                    });
                }
            }
        }
        let first_break = match &head {
            None if checker.verified == 0 => None,
            None | Some(Err(_)) => Some(ChainBreak::HeadMismatch {
                seq: checker.verified,
            }),
            Some(Ok(h)) if h.seq > checker.verified => Some(ChainBreak::Removed {
                seq: checker.verified + 1,
            }),
            Some(Ok(h)) if h.seq < checker.verified || h.hash != checker.prev => {
                Some(ChainBreak::HeadMismatch {
                    seq: checker.verified,
                })
            }
            Some(Ok(_)) => None,
        };
        Ok(VerifyReport {
            verified: checker.verified,
            head: head.and_then(Result::ok),
            first_break,
        })
    }
}

impl AuditRecord {
    /// The hash this record's content and `prev` give; equals `hash` for a sound record.
    pub fn compute_hash(&self) -> [u8; 32] {
        record_hash(
            self.seq,
            self.at_ms,
            [&self.actor, &self.action, &self.target, &self.detail],
            &self.prev,
        )
    }
}

impl NewAuditRecord {
    /// Checks the input bounds: see the field docs.
    pub fn validate(&self) -> Result<(), InputError> {
        for (field, value) in [
            (Field::Actor, &self.actor),
            (Field::Action, &self.action),
            (Field::Target, &self.target),
        ] {
            if value.is_empty() {
                return Err(InputError::Empty { field });
            }
            check_text(field, value, MAX_NAME_BYTES, false)?;
        }
        check_text(Field::Detail, &self.detail, MAX_DETAIL_BYTES, true)
    }
}

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Field::Actor => "actor",
            Field::Action => "action",
            Field::Target => "target",
            Field::Detail => "detail",
        })
    }
}

impl ChainBreak {
    /// The seq the fault is at.
    pub fn seq(&self) -> u64 {
        match *self {
            ChainBreak::Altered { seq }
            | ChainBreak::Removed { seq }
            | ChainBreak::Reordered { seq }
            | ChainBreak::Unreadable { seq }
            | ChainBreak::HeadMismatch { seq } => seq,
        }
    }
}

impl VerifyReport {
    /// Whether the whole chain is intact.
    pub fn is_intact(&self) -> bool {
        self.first_break.is_none()
    }
}

impl Default for GroupCommitConfig {
    fn default() -> Self {
        Self {
            // Both consts are non-zero; see their docs for where the numbers come from.
            queue_capacity: NonZeroUsize::new(GROUP_COMMIT_QUEUE_CAPACITY)
                .unwrap_or(NonZeroUsize::MIN),
            max_batch: NonZeroUsize::new(GROUP_COMMIT_MAX_BATCH).unwrap_or(NonZeroUsize::MIN),
        }
    }
}

impl GroupCommitter<'static> {
    /// Starts the committer thread on a shared database, for long-running use.
    pub fn spawn(db: Arc<Database>, config: GroupCommitConfig) -> io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel(config.queue_capacity.get());
        let handle = thread::Builder::new()
            .name("audit-commit".into())
            .spawn(move || commit_loop(&db, &rx, config.max_batch.get()))?;
        Ok(Self {
            tx: Some(tx),
            worker: Some(Worker::Owned(handle)),
        })
    }
}

impl<'scope> GroupCommitter<'scope> {
    /// Starts the committer thread inside `scope`, borrowing the database.
    pub fn spawn_scoped<'env>(
        scope: &'scope thread::Scope<'scope, 'env>,
        db: &'env Database,
        config: GroupCommitConfig,
    ) -> io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel(config.queue_capacity.get());
        let handle = thread::Builder::new()
            .name("audit-commit".into())
            .spawn_scoped(scope, move || commit_loop(db, &rx, config.max_batch.get()))?;
        Ok(Self {
            tx: Some(tx),
            worker: Some(Worker::Scoped(handle)),
        })
    }

    /// Checks `record` and queues it; blocks while the queue is full. The record is refused
    /// here, alone, if invalid, so it never fails a batch of others.
    pub fn submit(&self, record: NewAuditRecord) -> Result<PendingAppend, AuditError> {
        record
            .validate()
            .map_err(|source| AuditError::Invalid { index: 0, source })?;
        let (reply, rx) = mpsc::sync_channel(1);
        let tx = self.tx.as_ref().ok_or(AuditError::CommitterStopped)?;
        tx.send(Request { record, reply })
            .map_err(|_| AuditError::CommitterStopped)?;
        Ok(PendingAppend { rx })
    }

    /// [`GroupCommitter::submit`], then waits for the durable commit; returns the seq.
    pub fn append(&self, record: NewAuditRecord) -> Result<u64, AuditError> {
        self.submit(record)?.wait()
    }

    /// Closes the queue, lets the thread commit and answer what is queued, and joins it.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        drop(self.tx.take());
        // A panic in the committer has already failed its writers with `CommitterStopped`.
        let _ = match self.worker.take() {
            Some(Worker::Owned(handle)) => handle.join(),
            Some(Worker::Scoped(handle)) => handle.join(),
            None => Ok(()),
        };
    }
}

impl Drop for GroupCommitter<'_> {
    fn drop(&mut self) {
        self.stop();
    }
}

impl PendingAppend {
    /// Waits for the commit; `Ok(seq)` means the record is durable as `seq`.
    pub fn wait(self) -> Result<u64, AuditError> {
        self.recv()
    }

    fn recv(&self) -> Result<u64, AuditError> {
        self.rx.recv().unwrap_or(Err(AuditError::CommitterStopped))
    }

    /// The answer if it has come, without waiting.
    pub fn try_wait(&self) -> Option<Result<u64, AuditError>> {
        match self.rx.try_recv() {
            Ok(answer) => Some(answer),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => Some(Err(AuditError::CommitterStopped)),
        }
    }
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("record", &self.record)
            .finish()
    }
}

/// Reads records from `input`, one a line (`actor\taction\ttarget\tdetail`, the detail being
/// the rest of the line), appends them through a [`GroupCommitter`], and answers each line in
/// order on `out` (flushed): `ack <seq>` once the record is durable, or `err <line> <reason>`
/// if it was refused. `at_ms` is the system time when the line is read.
///
/// Returns at the end of `input`, after every record read has been answered, or at the first
/// storage or output error. `input` is read on a detached thread, so an error returns at once
/// even while a read blocks; that thread ends at the next line or the end of input.
pub fn run_stdin_writer(
    db: &Database,
    input: impl BufRead + Send + 'static,
    mut out: impl Write,
) -> anyhow::Result<()> {
    let (line_tx, line_rx) = mpsc::sync_channel(STDIN_LINE_QUEUE_CAPACITY);
    thread::Builder::new()
        .name("audit-stdin".into())
        .spawn(move || {
            let mut input = input;
            loop {
                let mut line = Vec::new();
                let read = input.read_until(b'\n', &mut line);
                let done = !matches!(read, Ok(n) if n > 0);
                if matches!(read, Ok(0)) || line_tx.send(read.map(|_| line)).is_err() || done {
                    break;
                }
            }
        })
        .context("starting the audit input reader")?;

    thread::scope(|scope| {
        let committer = GroupCommitter::spawn_scoped(scope, db, GroupCommitConfig::default())
            .context("starting the audit group committer")?;
        let mut pending = std::collections::VecDeque::new();
        let mut line_no: u64 = 0;
        let mut input_open = true;
        while input_open || !pending.is_empty() {
            // Queue whatever input has arrived, so it joins the same group commit; block for
            // input only when nothing awaits its commit.
            while input_open && pending.len() < GROUP_COMMIT_QUEUE_CAPACITY {
                let next = if pending.is_empty() {
                    line_rx.recv().map_err(|_| TryRecvError::Disconnected)
                } else {
                    line_rx.try_recv()
                };
                match next {
                    Ok(line) => {
                        line_no += 1;
                        pending.push_back(submit_line(
                            &committer,
                            line_no,
                            line.context("reading audit input")?,
                        )?);
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => input_open = false,
                }
            }
            // Answer in input order: wait for the oldest, then every one already answered.
            let mut block = true;
            while let Some(front) = pending.front() {
                let answer = match front {
                    LineOutcome::Refused(no, reason) => format!("err {no} {reason}"),
                    LineOutcome::Queued(p) => {
                        let seq = if block { Some(p.recv()) } else { p.try_wait() };
                        match seq {
                            Some(seq) => format!("ack {}", seq.context("appending audit record")?),
                            None => break,
                        }
                    }
                };
                pending.pop_front();
                writeln!(out, "{answer}").context("writing ack")?;
                block = false;
            }
            out.flush().context("flushing acks")?;
        }
        committer.shutdown();
        Ok(())
    })
}

enum LineOutcome {
    Queued(PendingAppend),
    Refused(u64, String),
}

/// Parses and submits one input line; only a storage-side failure is an error.
fn submit_line(
    committer: &GroupCommitter<'_>,
    line_no: u64,
    line: Vec<u8>,
) -> Result<LineOutcome, AuditError> {
    let refused = |reason: &str| Ok(LineOutcome::Refused(line_no, reason.into()));
    let line = line.strip_suffix(b"\n").unwrap_or(&line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Ok(line) = std::str::from_utf8(line) else {
        return refused("line is not UTF-8");
    };
    let mut fields = line.splitn(4, '\t');
    let (Some(actor), Some(action), Some(target), Some(detail)) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return refused("expected 4 tab-separated fields: actor, action, target, detail");
    };
    let record = NewAuditRecord {
        at_ms: now_ms(),
        actor: actor.into(),
        action: action.into(),
        target: target.into(),
        detail: detail.into(),
    };
    match committer.submit(record) {
        Ok(pending) => Ok(LineOutcome::Queued(pending)),
        Err(AuditError::Invalid { source, .. }) => refused(&source.to_string()),
        Err(e) => Err(e),
    }
}

/// Unix time in milliseconds: the edge's clock read.
fn now_ms() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    now.map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn commit_loop(db: &Database, rx: &Receiver<Request>, max_batch: usize) {
    let mut records = Vec::with_capacity(max_batch);
    let mut replies = Vec::with_capacity(max_batch);
    while let Ok(first) = rx.recv() {
        records.push(first.record);
        replies.push(first.reply);
        while records.len() < max_batch {
            match rx.try_recv() {
                Ok(req) => {
                    records.push(req.record);
                    replies.push(req.reply);
                }
                Err(_) => break,
            }
        }
        match AuditLog::append_batch(db, &records) {
            Ok(stored) => {
                tracing::trace!(records = stored.len(), "audit group committed");
                for (reply, record) in replies.drain(..).zip(&stored) {
                    // The writer may have dropped its `PendingAppend`; the record stays.
                    let _ = reply.send(Ok(record.seq));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, records = records.len(), "audit group commit failed");
                let e = Arc::new(e);
                for reply in replies.drain(..) {
                    let _ = reply.send(Err(AuditError::GroupCommit(Arc::clone(&e))));
                }
            }
        }
        records.clear();
    }
}

fn validate_batch(records: &[NewAuditRecord]) -> Result<(), AuditError> {
    for (index, record) in records.iter().enumerate() {
        record
            .validate()
            .map_err(|source| AuditError::Invalid { index, source })?;
    }
    Ok(())
}

fn check_text(field: Field, value: &str, max: usize, is_detail: bool) -> Result<(), InputError> {
    if value.len() > max {
        return Err(InputError::TooLong {
            field,
            len: value.len(),
            max,
        });
    }
    match value
        .char_indices()
        .find(|&(_, c)| c.is_control() && !(is_detail && (c == '\n' || c == '\t')))
    {
        Some((at, c)) => Err(InputError::ControlChar {
            field,
            code: u32::from(c),
            at,
        }),
        None => Ok(()),
    }
}

fn seal(seq: u64, new: NewAuditRecord, prev: [u8; 32]) -> AuditRecord {
    let mut record = AuditRecord {
        seq,
        at_ms: new.at_ms,
        actor: new.actor,
        action: new.action,
        target: new.target,
        detail: new.detail,
        prev,
        hash: [0; 32],
    };
    record.hash = record.compute_hash();
    record
}

fn record_hash(seq: u64, at_ms: i64, fields: [&str; 4], prev: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(HASH_DOMAIN);
    h.update(seq.to_be_bytes());
    h.update(at_ms.to_be_bytes());
    for field in fields {
        h.update((field.len() as u64).to_be_bytes());
        h.update(field.as_bytes());
    }
    h.update(prev);
    h.finalize().into()
}

fn decode_record(bytes: &[u8]) -> Result<AuditRecord, postcard::Error> {
    let (record, rest) = postcard::take_from_bytes::<AuditRecord>(bytes)?;
    if rest.is_empty() {
        Ok(record)
    } else {
        Err(postcard::Error::DeserializeBadEncoding)
    }
}

fn decode_head(bytes: &[u8]) -> Result<Head, AuditError> {
    match postcard::take_from_bytes::<Head>(bytes) {
        Ok((head, [])) => Ok(head),
        Ok(_) => Err(AuditError::CorruptHead {
            reason: "trailing bytes".into(),
        }),
        Err(e) => Err(AuditError::CorruptHead {
            reason: e.to_string(),
        }),
    }
}

/// Walks records in key order; remembers the last good one.
#[derive(Default)]
struct ChainChecker {
    /// Seq of the last good record (0 before the first).
    verified: u64,
    /// Hash of the last good record (zeros before the first).
    prev: [u8; 32],
}

impl ChainChecker {
    fn check(&mut self, key: u64, bytes: &[u8]) -> Option<ChainBreak> {
        let expected = self.verified + 1;
        if key > expected {
            return Some(ChainBreak::Removed { seq: expected });
        }
        if key < expected {
            // Only key 0 can sort before the next expected seq.
            return Some(ChainBreak::Reordered { seq: key });
        }
        let Ok(record) = decode_record(bytes) else {
            return Some(ChainBreak::Unreadable { seq: key });
        };
        if record.seq != key {
            return Some(ChainBreak::Reordered { seq: key });
        }
        if record.compute_hash() != record.hash {
            return Some(ChainBreak::Altered { seq: key });
        }
        if record.prev != self.prev {
            return Some(ChainBreak::Reordered { seq: key });
        }
        self.verified = key;
        self.prev = record.hash;
        None
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use redb::backends::InMemoryBackend;

    fn mem_db() -> Database {
        Database::builder()
            .create_with_backend(InMemoryBackend::new())
            .unwrap()
    }

    fn rec(n: u32) -> NewAuditRecord {
        NewAuditRecord {
            at_ms: 1_700_000_000_000 + i64::from(n),
            actor: format!("user{n}"),
            action: "session.open".into(),
            target: "srv-db-01".into(),
            detail: format!("session {n}\nprotocol\tssh"),
        }
    }

    fn db_with(n: u32) -> Database {
        let db = mem_db();
        let batch: Vec<_> = (1..=n).map(rec).collect();
        AuditLog::append_batch(&db, &batch).unwrap();
        db
    }

    fn raw_get(db: &Database, seq: u64) -> Vec<u8> {
        let txn = db.begin_read().unwrap();
        let table = txn.open_table(RECORDS).unwrap();
        table.get(seq).unwrap().unwrap().value().to_vec()
    }

    fn raw_put(db: &Database, seq: u64, bytes: &[u8]) {
        let txn = db.begin_write().unwrap();
        txn.open_table(RECORDS).unwrap().insert(seq, bytes).unwrap();
        txn.commit().unwrap();
    }

    fn raw_remove(db: &Database, seq: u64) {
        let txn = db.begin_write().unwrap();
        txn.open_table(RECORDS).unwrap().remove(seq).unwrap();
        txn.commit().unwrap();
    }

    fn first_break(db: &Database) -> Option<ChainBreak> {
        AuditLog::verify(db).unwrap().first_break
    }

    #[test]
    fn appends_dense_chained_records_across_batches() {
        let db = mem_db();
        let a = AuditLog::append_batch(&db, &[rec(1), rec(2)]).unwrap();
        let b = AuditLog::append_batch(&db, &[rec(3)]).unwrap();
        assert_eq!(a[0].seq, 1);
        assert_eq!(a[0].prev, [0; 32]);
        assert_eq!(a[1].prev, a[0].hash);
        assert_eq!(b[0].seq, 3);
        assert_eq!(b[0].prev, a[1].hash);
        assert_eq!(
            AuditLog::head(&db).unwrap(),
            Some(Head {
                seq: 3,
                hash: b[0].hash
            })
        );
        let all = AuditLog::list(&db, 0, 100).unwrap();
        assert_eq!(all, [a, b].concat());
        let report = AuditLog::verify(&db).unwrap();
        assert!(report.is_intact(), "{report:?}");
        assert_eq!(report.verified, 3);
    }

    #[test]
    fn hash_encoding_is_pinned() {
        let record = seal(1, rec(1), [0; 32]);
        assert_eq!(
            hex::encode(record.hash),
            "85250671e0f6ec92ea8fcbc04787d1695c0f7fb61e45b13ffa99793bb64f69eb"
        );
    }

    #[test]
    fn lists_from_a_seq_with_a_limit() {
        let db = db_with(10);
        let page = AuditLog::list(&db, 4, 3).unwrap();
        let seqs: Vec<_> = page.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [4, 5, 6]);
        assert!(AuditLog::list(&db, 11, 3).unwrap().is_empty());
        assert!(AuditLog::list(&mem_db(), 1, 3).unwrap().is_empty());
    }

    #[test]
    fn empty_store_verifies_and_empty_batch_writes_nothing() {
        let db = mem_db();
        assert!(AuditLog::append_batch(&db, &[]).unwrap().is_empty());
        let report = AuditLog::verify(&db).unwrap();
        assert_eq!(report.verified, 0);
        assert!(report.is_intact());
        assert_eq!(AuditLog::head(&db).unwrap(), None);
    }

    #[test]
    fn detects_and_names_an_altered_record() {
        let db = db_with(5);
        let mut r: AuditRecord = postcard::from_bytes(&raw_get(&db, 3)).unwrap();
        r.detail = "nothing happened".into();
        raw_put(&db, 3, &postcard::to_stdvec(&r).unwrap());
        let report = AuditLog::verify(&db).unwrap();
        assert_eq!(report.first_break, Some(ChainBreak::Altered { seq: 3 }));
        assert_eq!(report.verified, 2);
    }

    #[test]
    fn detects_and_names_a_removed_record() {
        let db = db_with(5);
        raw_remove(&db, 3);
        assert_eq!(first_break(&db), Some(ChainBreak::Removed { seq: 3 }));
    }

    #[test]
    fn detects_removal_of_the_last_records_against_the_head() {
        let db = db_with(5);
        raw_remove(&db, 5);
        raw_remove(&db, 4);
        assert_eq!(first_break(&db), Some(ChainBreak::Removed { seq: 4 }));
    }

    #[test]
    fn detects_and_names_swapped_records() {
        let db = db_with(5);
        let (two, three) = (raw_get(&db, 2), raw_get(&db, 3));
        raw_put(&db, 2, &three);
        raw_put(&db, 3, &two);
        assert_eq!(first_break(&db), Some(ChainBreak::Reordered { seq: 2 }));
    }

    #[test]
    fn detects_a_rehashed_record_whose_prev_does_not_link() {
        let db = db_with(5);
        let mut r: AuditRecord = postcard::from_bytes(&raw_get(&db, 4)).unwrap();
        r.prev = [7; 32];
        r.hash = r.compute_hash();
        raw_put(&db, 4, &postcard::to_stdvec(&r).unwrap());
        assert_eq!(first_break(&db), Some(ChainBreak::Reordered { seq: 4 }));
    }

    #[test]
    fn detects_records_past_the_head() {
        let db = db_with(3);
        let extra = seal(4, rec(4), AuditLog::head(&db).unwrap().unwrap().hash);
        raw_put(&db, 4, &postcard::to_stdvec(&extra).unwrap());
        assert_eq!(first_break(&db), Some(ChainBreak::HeadMismatch { seq: 4 }));
        // And appends refuse to build on it.
        let err = AuditLog::append_batch(&db, &[rec(5)]).unwrap_err();
        assert!(matches!(err, AuditError::CorruptHead { .. }), "{err}");
    }

    #[test]
    fn garbage_record_bytes_are_an_error_not_a_panic() {
        let db = db_with(3);
        raw_put(
            &db,
            2,
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
        );
        assert_eq!(first_break(&db), Some(ChainBreak::Unreadable { seq: 2 }));
        let err = AuditLog::list(&db, 1, 10).unwrap_err();
        assert!(
            matches!(err, AuditError::CorruptRecord { seq: 2, .. }),
            "{err}"
        );
        raw_put(&db, 2, &[]);
        assert_eq!(first_break(&db), Some(ChainBreak::Unreadable { seq: 2 }));
    }

    #[test]
    fn garbage_head_bytes_are_an_error_not_a_panic() {
        let db = db_with(2);
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert(HEAD_KEY, [1u8, 2, 3].as_slice())
            .unwrap();
        txn.commit().unwrap();
        assert_eq!(first_break(&db), Some(ChainBreak::HeadMismatch { seq: 2 }));
        assert!(matches!(
            AuditLog::append_batch(&db, &[rec(3)]),
            Err(AuditError::CorruptHead { .. })
        ));
        assert!(matches!(
            AuditLog::head(&db),
            Err(AuditError::CorruptHead { .. })
        ));
    }

    #[test]
    fn refuses_bad_input_naming_field_and_limit_and_leaves_store_unchanged() {
        let db = db_with(2);
        let before = (
            AuditLog::head(&db).unwrap(),
            AuditLog::list(&db, 0, 10).unwrap(),
        );
        let long_name = "x".repeat(MAX_NAME_BYTES + 1);
        type Mutate = fn(&mut NewAuditRecord, &str);
        let cases: Vec<(Mutate, InputError)> = vec![
            (
                |r, _| r.actor.clear(),
                InputError::Empty {
                    field: Field::Actor,
                },
            ),
            (
                |r, _| r.action.clear(),
                InputError::Empty {
                    field: Field::Action,
                },
            ),
            (
                |r, s| r.target = s.into(),
                InputError::TooLong {
                    field: Field::Target,
                    len: MAX_NAME_BYTES + 1,
                    max: MAX_NAME_BYTES,
                },
            ),
            (
                |r, _| r.detail = "d".repeat(MAX_DETAIL_BYTES + 1),
                InputError::TooLong {
                    field: Field::Detail,
                    len: MAX_DETAIL_BYTES + 1,
                    max: MAX_DETAIL_BYTES,
                },
            ),
            (
                |r, _| r.actor = "al\nice".into(),
                InputError::ControlChar {
                    field: Field::Actor,
                    code: 0x0a,
                    at: 2,
                },
            ),
            (
                |r, _| r.detail = "ok\tok\nbad\u{1b}[31m".into(),
                InputError::ControlChar {
                    field: Field::Detail,
                    code: 0x1b,
                    at: 9,
                },
            ),
            (
                |r, _| r.action = "x\u{85}".into(),
                InputError::ControlChar {
                    field: Field::Action,
                    code: 0x85,
                    at: 1,
                },
            ),
        ];
        for (mutate, expected) in cases {
            let mut bad = rec(9);
            mutate(&mut bad, &long_name);
            // The bad record second in its batch: the good first one must not be written.
            let err = AuditLog::append_batch(&db, &[rec(3), bad]).unwrap_err();
            match &err {
                AuditError::Invalid { index: 1, source } => assert_eq!(source, &expected),
                other => panic!("unexpected error {other}"),
            }
            let message = err.to_string();
            let field = expected_field(&expected).to_string();
            assert!(message.contains(&field), "{message}");
            let after = (
                AuditLog::head(&db).unwrap(),
                AuditLog::list(&db, 0, 10).unwrap(),
            );
            assert_eq!(before, after);
        }
        // Exactly at the limits is fine.
        let mut edge = rec(3);
        edge.actor = "a".repeat(MAX_NAME_BYTES);
        edge.detail = "d".repeat(MAX_DETAIL_BYTES);
        AuditLog::append_batch(&db, &[edge]).unwrap();
    }

    fn expected_field(e: &InputError) -> Field {
        match *e {
            InputError::Empty { field }
            | InputError::TooLong { field, .. }
            | InputError::ControlChar { field, .. } => field,
        }
    }

    #[test]
    fn group_committer_serves_concurrent_writers_with_dense_seqs() {
        let db = Arc::new(mem_db());
        let committer =
            GroupCommitter::spawn(Arc::clone(&db), GroupCommitConfig::default()).unwrap();
        let mut seqs: Vec<u64> = thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|t| {
                    let committer = &committer;
                    s.spawn(move || {
                        let pending: Vec<_> = (0..250)
                            .map(|i| committer.submit(rec(t * 1000 + i)).unwrap())
                            .collect();
                        pending
                            .into_iter()
                            .map(|p| p.wait().unwrap())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        committer.shutdown();
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=1000).collect::<Vec<_>>());
        let report = AuditLog::verify(&*db).unwrap();
        assert!(report.is_intact());
        assert_eq!(report.verified, 1000);
    }

    #[test]
    fn group_committer_refuses_bad_input_alone() {
        let db = Arc::new(mem_db());
        let committer =
            GroupCommitter::spawn(Arc::clone(&db), GroupCommitConfig::default()).unwrap();
        let good = committer.submit(rec(1)).unwrap();
        let mut bad = rec(2);
        bad.target.clear();
        assert!(matches!(
            committer.submit(bad),
            Err(AuditError::Invalid { .. })
        ));
        assert_eq!(good.wait().unwrap(), 1);
        // Dropped without waiting: still committed, by shutdown at the latest.
        drop(committer.submit(rec(3)).unwrap());
        committer.shutdown();
        assert_eq!(AuditLog::head(&*db).unwrap().map(|h| h.seq), Some(2));
    }

    #[test]
    fn stdin_writer_answers_every_line_in_order() {
        let db = mem_db();
        let input = "alice\tlogin\tsrv1\tfrom 10.0.0.1\n\
                     bad line\n\
                     bob\tlogout\tsrv1\tdetail\twith\ttabs\r\n\
                     carol\t\tsrv2\tx\n\
                     dave\texec\tsrv3\t\n";
        let mut input = input.as_bytes().to_vec();
        input.extend_from_slice(b"eve\tlogin\tsrv\t\xff\xfe\nfrank\tlogin\tsrv\tlast, no newline");
        let mut out = Vec::new();
        run_stdin_writer(&db, io::Cursor::new(input), &mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        let lines: Vec<_> = out.lines().collect();
        assert_eq!(lines.len(), 7, "{out}");
        assert_eq!(lines[0], "ack 1");
        assert!(lines[1].starts_with("err 2 expected 4"), "{out}");
        assert_eq!(lines[2], "ack 2");
        assert!(lines[3].starts_with("err 4 action is empty"), "{out}");
        assert_eq!(lines[4], "ack 3");
        assert_eq!(lines[5], "err 6 line is not UTF-8");
        assert_eq!(lines[6], "ack 4");
        let records = AuditLog::list(&db, 1, 10).unwrap();
        assert_eq!(records[1].actor, "bob");
        assert_eq!(records[1].detail, "detail\twith\ttabs");
        assert_eq!(records[2].detail, "");
        assert_eq!(records[3].detail, "last, no newline");
        assert!(AuditLog::verify(&db).unwrap().is_intact());
    }
}
