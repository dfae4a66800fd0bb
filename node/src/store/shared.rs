//! Shared rows: persisting a replica's effects and reading the query views.

use std::ops::Bound;

use meshward_crdt::{Effects, Event, Persist, Row, RowChange, TableId, WriterId};

use super::changes::{self, Change};
use super::{
    CHANGES, EVENTS_VIEW, HEADS, MAP_VIEW, SNAPSHOTS, Store, StoreError, encode, map_key,
    segment_key, table_byte,
};

/// An event as held in the query view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRecord {
    /// The node that wrote it.
    pub writer: WriterId,
    /// Its segment.
    pub segment: u32,
    /// Its position in the segment.
    pub index: u64,
    /// The event.
    pub event: Event,
}

/// Which events to list.
#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    /// Only this writer's.
    pub writer: Option<WriterId>,
    /// At or after this time (unix ms).
    pub since_ms: Option<i64>,
    /// Before this time (unix ms).
    pub until_ms: Option<i64>,
    /// Only this kind.
    pub kind: Option<meshward_crdt::EventKind>,
    /// At most this many.
    pub limit: Option<usize>,
    /// Only events after this one (writer, segment, index): the cursor of the previous page.
    pub after: Option<(WriterId, u32, u64)>,
}

impl Store {
    /// Makes a replica's effects durable in one transaction: segment data, then the views.
    pub fn persist(&self, effects: &Effects) -> Result<(), StoreError> {
        self.persist_all(std::slice::from_ref(effects))
    }

    /// Makes several effects durable, in order, in one transaction (group commit).
    pub fn persist_all(&self, all: &[Effects]) -> Result<(), StoreError> {
        let tx = self.begin_write()?;
        for effects in all {
            let mut heads = tx.open_table(HEADS)?;
            let mut snapshots = tx.open_table(SNAPSHOTS)?;
            let mut changes = tx.open_table(CHANGES)?;
            for p in &effects.persist {
                match p {
                    Persist::Snapshot { head, doc } => {
                        let k = segment_key(&head.head.key);
                        heads.insert(k.as_slice(), encode(head).as_slice())?;
                        snapshots.insert(k.as_slice(), doc.as_slice())?;
                        let mut end = k.clone();
                        end.extend([0xff; 9]);
                        changes
                            .retain_in::<&[u8], _>(k.as_slice()..end.as_slice(), |_, _| false)?;
                    }
                    Persist::Append {
                        head,
                        changes: list,
                    } => {
                        let k = segment_key(&head.head.key);
                        heads.insert(k.as_slice(), encode(head).as_slice())?;
                        let first = head.head.seq + 1 - list.len() as u64;
                        for (i, c) in list.iter().enumerate() {
                            let mut ck = k.clone();
                            ck.extend((first + i as u64).to_be_bytes());
                            changes.insert(ck.as_slice(), c.as_slice())?;
                        }
                    }
                }
            }
            let mut events = tx.open_table(EVENTS_VIEW)?;
            let mut maps = tx.open_table(MAP_VIEW)?;
            for change in &effects.rows {
                match change {
                    RowChange::Appended { key, index, row } => {
                        let mut k = key.writer.0.to_vec();
                        k.extend(key.segment.to_be_bytes());
                        k.extend(index.to_be_bytes());
                        events.insert(k.as_slice(), row.encode().as_slice())?;
                    }
                    RowChange::Put { key, row_key, row } => {
                        let k = map_key(key.table, &key.writer, row_key);
                        maps.insert(k.as_slice(), row.encode().as_slice())?;
                    }
                    RowChange::Deleted { key, row_key } => {
                        maps.remove(map_key(key.table, &key.writer, row_key).as_slice())?;
                    }
                }
            }
            let logged = effects.rows.iter().map(Change::of_row);
            changes::log_changes(&tx, logged, self.keep_changes)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Events from the query view, in (writer, segment, index) order.
    pub fn events(&self, filter: &EventFilter) -> Result<Vec<EventRecord>, StoreError> {
        let tx = self.begin_read()?;
        let table = tx.open_table(EVENTS_VIEW)?;
        let prefix = filter.writer.map(|w| w.0.to_vec()).unwrap_or_default();
        let after = filter.after.map(|(w, segment, index)| {
            let mut key = w.0.to_vec();
            key.extend_from_slice(&segment.to_be_bytes());
            key.extend_from_slice(&index.to_be_bytes());
            key
        });
        let start = match &after {
            Some(key) if key.as_slice() >= prefix.as_slice() => Bound::Excluded(key.as_slice()),
            _ => Bound::Included(prefix.as_slice()),
        };
        let mut out = Vec::new();
        for entry in table.range::<&[u8]>((start, Bound::Unbounded))? {
            if filter.limit.is_some_and(|l| out.len() >= l) {
                break;
            }
            let (k, v) = entry?;
            let k = k.value();
            if !k.starts_with(&prefix) {
                break;
            }
            let Ok(Row::Event(event)) = Row::decode(TableId::Events, v.value()) else {
                return Err(StoreError::Decode { what: "event row" });
            };
            let keep = filter.since_ms.is_none_or(|s| event.at_ms >= s)
                && filter.until_ms.is_none_or(|u| event.at_ms < u)
                && filter.kind.is_none_or(|kind| event.kind == kind);
            if keep && k.len() == 44 {
                let writer = WriterId(k[..32].try_into().unwrap_or([0; 32]));
                let segment = u32::from_be_bytes(k[32..36].try_into().unwrap_or([0; 4]));
                let index = u64::from_be_bytes(k[36..44].try_into().unwrap_or([0; 8]));
                out.push(EventRecord {
                    writer,
                    segment,
                    index,
                    event,
                });
            }
        }
        Ok(out)
    }

    /// Rows of a map table (fingerprints, exceptions) from the query view, by writer then key.
    pub fn map_rows(&self, table: TableId) -> Result<Vec<(WriterId, Row)>, StoreError> {
        let tx = self.begin_read()?;
        let view = tx.open_table(MAP_VIEW)?;
        let prefix = [table_byte(table)];
        let mut out = Vec::new();
        for entry in view.range::<&[u8]>((Bound::Included(prefix.as_slice()), Bound::Unbounded))? {
            let (k, v) = entry?;
            let k = k.value();
            if k.first() != Some(&prefix[0]) || k.len() < 33 {
                break;
            }
            let row = Row::decode(table, v.value())
                .map_err(|_| StoreError::Decode { what: "map row" })?;
            out.push((WriterId(k[1..33].try_into().unwrap_or([0; 32])), row));
        }
        Ok(out)
    }
}
