//! The change log: the node's own persisted apply order, what the watch stream
//! (`GET /v1/watch`) reads.
//!
//! Every write that changes what a watcher sees appends to `change_log` (key: a u64 cursor,
//! 1, 2, 3, …) in the same write transaction as the change itself: rows persisted from a
//! local commit or from a peer ([`Store::persist_all`]), mastered records applied (config,
//! users, grants, revocations, approvals, roster, hand-overs: [`Store::append_mastered`], and
//! the winning chain's records when a fork is resolved, [`Store::replace_mastered`]). The
//! cursor is durable together with what it describes, so a restart resumes exactly.
//!
//! Retention is by count ([`Store::set_keep_changes`]; `watch-keep-changes` in
//! `DATA/meshward.toml`, default [`DEFAULT_KEEP_CHANGES`]): a write that takes the log over
//! it drops the oldest entries in the same transaction and moves the "first kept" mark
//! ([`Marks::first`]). Reading after a cursor older than that answers [`Page::Compacted`],
//! never a silent gap.

use std::num::NonZeroU64;

use meshward_crdt::mastered::SignedRecord;
use meshward_crdt::{Row, RowChange, TableId, WriterId};
use redb::{ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::{EVENTS_VIEW, MAP_VIEW, MASTERED, META, Store, StoreError, encode, table_byte};

/// The change log: cursor → encoded [`Change`].
pub(super) const CHANGE_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("change_log");
const FIRST: &str = "changes_first";
const LAST: &str = "changes_last";

/// Changes kept by default (about 20–50 MB of log for typical rows).
pub const DEFAULT_KEEP_CHANGES: NonZeroU64 = NonZeroU64::new(100_000).unwrap();
/// Most entries one page read returns.
pub const MAX_CHANGE_PAGE: usize = 1024;

/// One change as the log holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// A row appended to a log table (events).
    Appended {
        /// The table.
        table: TableId,
        /// Its writer.
        writer: WriterId,
        /// The writer's segment.
        segment: u32,
        /// The row's index in it.
        index: u64,
        /// The encoded row ([`Row::encode`]).
        row: Vec<u8>,
    },
    /// A map row written (fingerprints, exceptions).
    Put {
        /// The table.
        table: TableId,
        /// Its writer.
        writer: WriterId,
        /// The row key.
        key: String,
        /// The encoded row.
        row: Vec<u8>,
    },
    /// A map row deleted.
    Deleted {
        /// The table.
        table: TableId,
        /// Its writer.
        writer: WriterId,
        /// The row key.
        key: String,
    },
    /// A mastered record applied.
    Mastered {
        /// The encoded signed record ([`SignedRecord::encode`]).
        #[serde(with = "meshward_crdt::bytes")]
        record: Vec<u8>,
    },
}

impl Change {
    /// The change of a persisted row change.
    pub fn of_row(change: &RowChange) -> Change {
        match change {
            RowChange::Appended { key, index, row } => Change::Appended {
                table: key.table,
                writer: key.writer,
                segment: key.segment,
                index: *index,
                row: row.encode(),
            },
            RowChange::Put { key, row_key, row } => Change::Put {
                table: key.table,
                writer: key.writer,
                key: row_key.clone(),
                row: row.encode(),
            },
            RowChange::Deleted { key, row_key } => Change::Deleted {
                table: key.table,
                writer: key.writer,
                key: row_key.clone(),
            },
        }
    }

    /// Its shared table; `None` for a mastered record.
    pub fn table(&self) -> Option<TableId> {
        match self {
            Change::Appended { table, .. }
            | Change::Put { table, .. }
            | Change::Deleted { table, .. } => Some(*table),
            Change::Mastered { .. } => None,
        }
    }

    /// The row it writes, if any.
    pub fn row(&self) -> Result<Option<Row>, StoreError> {
        match self {
            Change::Appended { table, row, .. } | Change::Put { table, row, .. } => {
                Row::decode(*table, row)
                    .map(Some)
                    .map_err(|_| StoreError::Decode {
                        what: "change log row",
                    })
            }
            _ => Ok(None),
        }
    }

    /// The mastered record it applies, if any.
    pub fn record(&self) -> Result<Option<SignedRecord>, StoreError> {
        match self {
            Change::Mastered { record } => {
                SignedRecord::decode(record)
                    .map(Some)
                    .map_err(|_| StoreError::Decode {
                        what: "change log record",
                    })
            }
            _ => Ok(None),
        }
    }
}

/// Where the log stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Marks {
    /// The oldest cursor kept (`last + 1` when nothing is kept).
    pub first: u64,
    /// The newest cursor written (0: none yet).
    pub last: u64,
}

/// The answer of a page read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Page {
    /// The changes after the cursor, in order (empty: none yet).
    Changes(Vec<(u64, Change)>),
    /// Changes after the cursor were dropped by retention: restart from a snapshot.
    Compacted {
        /// The oldest cursor kept.
        first: u64,
    },
}

/// A consistent view of the store (one read transaction) for the watch stream: the log and
/// the current rows as of the same moment.
pub struct ChangeReader {
    pub(super) tx: ReadTransaction,
}

impl std::fmt::Debug for ChangeReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChangeReader(..)")
    }
}

impl ChangeReader {
    /// Where the log stands in this view.
    pub fn marks(&self) -> Result<Marks, StoreError> {
        let meta = self.tx.open_table(META)?;
        read_marks(&meta)
    }

    /// Up to `limit` (at most [`MAX_CHANGE_PAGE`]) changes after cursor `after`.
    pub fn changes_after(&self, after: u64, limit: usize) -> Result<Page, StoreError> {
        let marks = self.marks()?;
        if after.saturating_add(1) < marks.first {
            return Ok(Page::Compacted { first: marks.first });
        }
        let log = match self.tx.open_table(CHANGE_LOG) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Page::Changes(Vec::new())),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for entry in log.range(after.saturating_add(1)..)? {
            if out.len() >= limit.min(MAX_CHANGE_PAGE) {
                break;
            }
            let (k, v) = entry?;
            let change: Change = postcard::from_bytes(v.value())
                .map_err(|_| StoreError::Decode { what: "change log" })?;
            out.push((k.value(), change));
        }
        Ok(Page::Changes(out))
    }

    /// The current rows of `table` after the view key `after` (`None`: from the start), up
    /// to `limit`: (key for the next page, writer, row).
    pub fn rows_after(
        &self,
        table: TableId,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, WriterId, Row)>, StoreError> {
        let (view, prefix, writer_at) = match table {
            TableId::Events => (self.tx.open_table(EVENTS_VIEW)?, Vec::new(), 0),
            _ => (self.tx.open_table(MAP_VIEW)?, vec![table_byte(table)], 1),
        };
        let start = match after {
            Some(key) => std::ops::Bound::Excluded(key),
            None => std::ops::Bound::Included(prefix.as_slice()),
        };
        let mut out = Vec::new();
        for entry in view.range::<&[u8]>((start, std::ops::Bound::Unbounded))? {
            if out.len() >= limit.min(MAX_CHANGE_PAGE) {
                break;
            }
            let (k, v) = entry?;
            let k = k.value();
            if !k.starts_with(&prefix) {
                break;
            }
            let writer = k
                .get(writer_at..writer_at + 32)
                .and_then(|w| w.try_into().ok())
                .map(WriterId)
                .ok_or(StoreError::Decode { what: "view key" })?;
            let row = Row::decode(table, v.value())
                .map_err(|_| StoreError::Decode { what: "view row" })?;
            out.push((k.to_vec(), writer, row));
        }
        Ok(out)
    }

    /// The stored mastered records after version `after`, up to `limit`.
    pub fn mastered_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<SignedRecord>, StoreError> {
        let table = self.tx.open_table(MASTERED)?;
        let mut out = Vec::new();
        for entry in table.range(after.saturating_add(1)..)? {
            if out.len() >= limit.min(MAX_CHANGE_PAGE) {
                break;
            }
            out.push(super::mastered::decode_record(entry?.1.value())?);
        }
        Ok(out)
    }
}

impl Store {
    /// How many changes the log keeps (see the module docs).
    pub fn set_keep_changes(&mut self, keep: NonZeroU64) {
        self.keep_changes = keep;
    }

    /// A consistent view of the log and the current rows.
    pub fn change_reader(&self) -> Result<ChangeReader, StoreError> {
        Ok(ChangeReader {
            tx: self.begin_read()?,
        })
    }

    /// Where the log stands.
    pub fn change_marks(&self) -> Result<Marks, StoreError> {
        self.change_reader()?.marks()
    }

    /// Up to `limit` changes after cursor `after`.
    pub fn changes_after(&self, after: u64, limit: usize) -> Result<Page, StoreError> {
        self.change_reader()?.changes_after(after, limit)
    }
}

fn read_marks(meta: &impl ReadableTable<&'static str, &'static [u8]>) -> Result<Marks, StoreError> {
    let read = |name: &str| -> Result<Option<u64>, StoreError> {
        match meta.get(name)? {
            None => Ok(None),
            Some(v) => v
                .value()
                .try_into()
                .map(|b| Some(u64::from_be_bytes(b)))
                .map_err(|_| StoreError::Decode {
                    what: "change log mark",
                }),
        }
    };
    let last = read(LAST)?.unwrap_or(0);
    let first = read(FIRST)?.unwrap_or(1);
    Ok(Marks { first, last })
}

/// Appends `changes` to the log inside `tx` and drops what is over `keep`.
pub(super) fn log_changes(
    tx: &WriteTransaction,
    changes: impl IntoIterator<Item = Change>,
    keep: NonZeroU64,
) -> Result<(), StoreError> {
    let mut meta = tx.open_table(META)?;
    let mut marks = read_marks(&meta)?;
    let mut log = tx.open_table(CHANGE_LOG)?;
    let before = marks.last;
    for change in changes {
        marks.last += 1;
        log.insert(marks.last, encode(&change).as_slice())?;
    }
    if marks.last == before {
        return Ok(());
    }
    let first = marks.last.saturating_sub(keep.get() - 1).max(1);
    if first > marks.first {
        log.retain_in(marks.first..first, |_, _| false)?;
        marks.first = first;
    }
    meta.insert(FIRST, marks.first.to_be_bytes().as_slice())?;
    meta.insert(LAST, marks.last.to_be_bytes().as_slice())?;
    Ok(())
}

/// Drops every entry of the log inside `tx`, keeping its cursor: the next change gets the next
/// cursor, and a watcher resuming from an older one is told to start from a snapshot.
pub(super) fn drop_all(tx: &WriteTransaction) -> Result<(), StoreError> {
    let mut meta = tx.open_table(META)?;
    let mut marks = read_marks(&meta)?;
    tx.open_table(CHANGE_LOG)?.retain(|_, _| false)?;
    marks.first = marks.last + 1;
    meta.insert(FIRST, marks.first.to_be_bytes().as_slice())?;
    meta.insert(LAST, marks.last.to_be_bytes().as_slice())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use meshward_crdt::{Event, EventKind, Op, ReplicaConfig};

    use super::*;

    fn event(i: i64) -> Op {
        Op::Append(Event {
            at_ms: i,
            kind: EventKind::Login,
            user: "alice".into(),
            target: "db".into(),
            detail: String::new(),
        })
    }

    fn logged(store: &Store, after: u64) -> Vec<(u64, Change)> {
        match store.changes_after(after, MAX_CHANGE_PAGE).unwrap() {
            Page::Changes(c) => c,
            Page::Compacted { first } => panic!("compacted at {first}"),
        }
    }

    #[test]
    fn persisted_rows_are_logged_in_order_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let id = store.identity().unwrap();
        let mut replica = store.load_replica(&id, ReplicaConfig::default()).unwrap();
        for t in 0..3 {
            let effects = replica
                .commit(t, vec![event(2 * t), event(2 * t + 1)])
                .unwrap();
            store.persist(&effects).unwrap();
        }
        let log = logged(&store, 0);
        assert_eq!(
            log.iter().map(|(c, _)| *c).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5, 6]
        );
        let times: Vec<i64> = log
            .iter()
            .map(|(_, c)| match c.row().unwrap() {
                Some(Row::Event(e)) => e.at_ms,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(times, [0, 1, 2, 3, 4, 5]);
        drop(store);
        let again = Store::open(dir.path()).unwrap();
        assert_eq!(again.change_marks().unwrap(), Marks { first: 1, last: 6 });
        assert_eq!(logged(&again, 4), log[4..].to_vec());
        assert_eq!(logged(&again, 6), vec![]);
    }

    #[test]
    fn retention_drops_the_oldest_and_answers_compacted() {
        let mut store = Store::in_memory().unwrap();
        store.set_keep_changes(NonZeroU64::new(4).unwrap());
        let id = store.identity().unwrap();
        let mut replica = store.load_replica(&id, ReplicaConfig::default()).unwrap();
        for t in 0..10 {
            store
                .persist(&replica.commit(t, vec![event(t)]).unwrap())
                .unwrap();
        }
        assert_eq!(store.change_marks().unwrap(), Marks { first: 7, last: 10 });
        assert_eq!(logged(&store, 6).len(), 4);
        assert_eq!(
            store.changes_after(5, 10).unwrap(),
            Page::Compacted { first: 7 }
        );
        assert_eq!(
            store.changes_after(0, 10).unwrap(),
            Page::Compacted { first: 7 }
        );
    }
}
