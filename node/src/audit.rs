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
//! consistent chain from any point; detecting that needs the head anchored outside this file:
//! [`mesh`] publishes it, signed, to every member (`audit verify --against-mesh`).
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

use std::sync::Arc;

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Most bytes in `actor`, `action` or `target`.
pub const MAX_NAME_BYTES: usize = 256;
/// Most bytes in `detail` (16 KiB).
pub const MAX_DETAIL_BYTES: usize = 16 * 1024;
/// Domain separation prefix of a record hash.
pub const HASH_DOMAIN: &[u8] = b"meshward/audit/v1\0";

/// seq → postcard-encoded [`AuditRecord`].
pub(crate) const RECORDS: TableDefinition<u64, &[u8]> = TableDefinition::new("audit_records");
/// Small metadata; [`HEAD_KEY`] → postcard-encoded [`Head`].
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("audit_meta");
const HEAD_KEY: &str = "head";

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

mod group;
pub mod mesh;

pub use group::{
    GROUP_COMMIT_MAX_BATCH, GROUP_COMMIT_QUEUE_CAPACITY, GroupCommitConfig, GroupCommitter,
    PendingAppend, run_stdin_writer,
};

#[cfg(test)]
mod tests;
