//! One segment document: a single writer's rows of one table, as a live automerge document or
//! as sealed saved bytes, and the checks every received change passes before it is applied.
//!
//! Document schema: the root holds exactly one key, `rows`. In a log table it is a list whose
//! elements are row encodings (bytes), only ever appended at the end; in a map table it is a
//! map from the row key to the row encoding. The first change (seq 1) creates `rows`; every
//! later change only inserts at the tail (log) or puts and deletes keys (map). All changes are
//! authored by the segment's writer, so the history is a chain: seq 1, 2, … each depending on
//! the one before.

use std::cell::{Ref, RefCell};
use std::collections::BTreeMap;
use std::sync::Arc;

use automerge::legacy::{ElementId, Key, ObjectId, OpId, OpType};
use automerge::transaction::{CommitOptions, Transactable};
use automerge::{Automerge, Change, ChangeHash, ObjId, ObjType, ROOT, ReadDoc, ScalarValue, Value};

use crate::error::ApplyError;
use crate::id::{SegmentKey, TableShape};
use crate::row::Row;
use crate::sync::SignedHead;

/// The root key every segment document holds its rows under.
pub(crate) const ROWS: &str = "rows";

/// Rows read from a document: the map key (map tables) and the row.
pub(crate) type KeyedRows = Vec<(Option<String>, Row)>;

/// A row-level effect of a validated change, in the order the change made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RowOp {
    Insert(Row),
    Put(String, Row),
    Delete(String),
}

/// Where a live document's chain ends: enough to check the next change without reading the
/// document.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Cursor {
    /// Changes held.
    pub seq: u64,
    /// Hash of the last change, `None` before the first.
    pub hash: Option<ChangeHash>,
    /// Largest op counter used so far.
    pub max_op: u64,
    /// Log tables: op counter of the last list element.
    pub tail: Option<u64>,
}

/// A segment held in memory as an automerge document.
///
/// Received changes are checked at once (chain, owner, schema, rows: [`Live::check`]) but
/// applied to the document in batches, when it is next read or saved: automerge's apply
/// walks the whole list to place an insert, so applying one change at a time costs O(rows)
/// per change (6.6 ms per single-event change at 40 000 rows, measured), while one apply of a
/// batch walks it once. The cursor and row count are always current.
#[derive(Debug)]
pub(crate) struct Live {
    key: SegmentKey,
    doc: RefCell<Doc>,
    /// Checked changes not yet applied to `doc`, in chain order.
    pending: RefCell<Vec<Change>>,
    /// Why applying a batch of `pending` failed, if it did (see [`Live::doc`]).
    broken: RefCell<Option<ApplyError>>,
    pub cursor: Cursor,
    /// Rows (log) or live keys (map) after every checked change.
    rows: u64,
    /// Changes stored since the last snapshot (drives compaction of the stored form).
    pub stored_changes: u64,
}

/// The document of a live segment and its `rows` object, once created.
#[derive(Debug)]
pub(crate) struct Doc {
    pub doc: Automerge,
    pub rows_obj: Option<ObjId>,
}

/// How a segment is held.
#[derive(Debug)]
pub(crate) enum Body {
    Live(Box<Live>),
    /// Saved bytes of a sealed document; loaded only when a peer needs part of it.
    Sealed(Arc<Vec<u8>>),
}

/// A segment: its writer's latest signed head and its body.
#[derive(Debug)]
pub(crate) struct Segment {
    pub head: SignedHead,
    pub body: Body,
}

impl Live {
    /// An empty document for `key`, authored by its writer when it is ours.
    pub fn empty(key: &SegmentKey) -> Self {
        Live {
            key: *key,
            doc: RefCell::new(Doc {
                doc: Automerge::new().with_actor(key.writer.actor()),
                rows_obj: None,
            }),
            pending: RefCell::default(),
            broken: RefCell::default(),
            cursor: Cursor::default(),
            rows: 0,
            stored_changes: 0,
        }
    }

    /// Wraps a loaded document, reading its cursor.
    pub fn from_doc(key: &SegmentKey, mut doc: Automerge) -> Result<Self, ApplyError> {
        doc.set_actor(key.writer.actor());
        let rows_obj = rows_obj(&doc);
        let heads = doc.get_heads();
        let cursor = match heads.as_slice() {
            [] => Cursor::default(),
            [hash] => {
                let meta = doc
                    .get_change_meta_by_hash(hash)
                    .ok_or(ApplyError::mismatch(
                        key,
                        "head change missing from document",
                    ))?;
                let tail = match (key.table.shape(), &rows_obj) {
                    (TableShape::Log, Some(obj)) => {
                        let len = doc.length(obj);
                        match len {
                            0 => None,
                            _ => doc
                                .list_range(obj, len - 1..)
                                .next()
                                .and_then(|item| counter(&item.id())),
                        }
                    }
                    _ => None,
                };
                Cursor {
                    seq: meta.seq,
                    hash: Some(*hash),
                    max_op: meta.max_op,
                    tail,
                }
            }
            _ => return Err(ApplyError::mismatch(key, "document has more than one head")),
        };
        let rows = rows_obj.as_ref().map_or(0, |obj| doc.length(obj) as u64);
        Ok(Live {
            key: *key,
            doc: RefCell::new(Doc { doc, rows_obj }),
            pending: RefCell::default(),
            broken: RefCell::default(),
            cursor,
            rows,
            stored_changes: 0,
        })
    }

    /// Number of rows (log) or live keys (map).
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The document with every checked change applied. The heads are compared with the
    /// checked chain after each batch (the only way they change besides [`Live::commit`],
    /// which moves the cursor with them); a failed batch is kept as the error of every later
    /// read, so it is never forgotten.
    pub fn doc(&self) -> Result<Ref<'_, Doc>, ApplyError> {
        if let Some(e) = &*self.broken.borrow() {
            return Err(e.clone());
        }
        let pending = std::mem::take(&mut *self.pending.borrow_mut());
        if !pending.is_empty() {
            let mut doc = self.doc.borrow_mut();
            let applied = doc
                .doc
                .apply_changes(pending)
                .map_err(|e| ApplyError::Automerge {
                    key: self.key,
                    reason: e.to_string(),
                })
                .and_then(|()| {
                    if doc.doc.get_heads() == self.cursor.hash.into_iter().collect::<Vec<_>>() {
                        Ok(())
                    } else {
                        Err(ApplyError::mismatch(
                            &self.key,
                            "document heads differ from the checked chain",
                        ))
                    }
                });
            if let Err(e) = applied {
                *self.broken.borrow_mut() = Some(e.clone());
                return Err(e);
            }
            if doc.rows_obj.is_none() {
                doc.rows_obj = rows_obj(&doc.doc);
            }
        }
        Ok(self.doc.borrow())
    }

    /// The saved form of the document.
    pub fn save(&self) -> Result<Vec<u8>, ApplyError> {
        Ok(self.doc()?.doc.save())
    }

    /// The current value of a map row.
    pub fn get(&self, row_key: &str) -> Option<Row> {
        let doc = self.doc().ok()?;
        let obj = doc.rows_obj.as_ref()?;
        match doc.doc.get(obj, row_key).ok()?? {
            (Value::Scalar(v), _) => match v.as_ref() {
                ScalarValue::Bytes(b) => Row::decode(self.key.table, b).ok(),
                _ => None,
            },
            _ => None,
        }
    }

    /// Commits `ops` (already validated by the caller) as one change authored by the writer.
    /// Returns the raw change bytes; an error, with nothing committed, if the document cannot
    /// be brought up to date first.
    pub fn commit(&mut self, at_ms: i64, ops: &[RowOp]) -> Result<Vec<u8>, ApplyError> {
        let shape = self.key.table.shape();
        // Our own changes sent back to us may be pending; commit after them.
        self.doc()?;
        let Doc { doc, rows_obj } = self.doc.get_mut();
        let mut tx = doc.transaction();
        let obj = match rows_obj {
            Some(obj) => obj.clone(),
            None => {
                let kind = match shape {
                    TableShape::Log => ObjType::List,
                    TableShape::Map => ObjType::Map,
                };
                // Creating a key on the root of our own document cannot fail.
                tx.put_object(ROOT, ROWS, kind).unwrap_or(ROOT)
            }
        };
        // The list's length without walking it (log rows are only ever appended).
        let mut len = self.rows as usize;
        for op in ops {
            // Operations on an object of our own document that we just checked exists, with
            // in-range indices, cannot fail; a failure would leave the change short, which the
            // receivers' checks would then refuse.
            let _ = match op {
                RowOp::Insert(row) => {
                    let r = tx.insert(&obj, len, ScalarValue::Bytes(row.encode()));
                    len += 1;
                    r
                }
                RowOp::Put(k, row) => tx.put(&obj, k.as_str(), ScalarValue::Bytes(row.encode())),
                RowOp::Delete(k) => tx.delete(&obj, k.as_str()),
            };
        }
        let (hash, _) = tx.commit_with(CommitOptions::default().with_time(at_ms.div_euclid(1000)));
        self.rows = match shape {
            TableShape::Log => len as u64,
            TableShape::Map => doc.length(&obj) as u64,
        };
        let change = hash.and_then(|h| doc.get_change_by_hash(&h));
        *rows_obj = Some(obj);
        Ok(match change {
            Some(change) => {
                self.cursor.seq = change.seq();
                self.cursor.hash = Some(change.hash());
                self.cursor.max_op = change.max_op();
                if shape == TableShape::Log {
                    self.cursor.tail = Some(change.max_op());
                }
                self.stored_changes += 1;
                change.raw_bytes().to_vec()
            }
            None => Vec::new(),
        })
    }

    /// Checks a run of received changes that continues this document, and returns their row
    /// effects and the cursor after them. Nothing is applied.
    pub fn check(&self, changes: &[Change]) -> Result<(Vec<RowOp>, Cursor), ApplyError> {
        let mut cursor = self.cursor.clone();
        let mut out = Vec::new();
        for change in changes {
            check_change(&self.key, &mut cursor, change, &mut out)?;
        }
        Ok((out, cursor))
    }

    /// Takes changes that [`Live::check`] accepted, ending at `cursor` with `rows` rows; they
    /// reach the document when it is next read.
    pub fn apply_checked(&mut self, changes: Vec<Change>, cursor: Cursor, rows: u64) {
        self.stored_changes += changes.len() as u64;
        self.pending.get_mut().extend(changes);
        self.cursor = cursor;
        self.rows = rows;
    }

    /// All rows of the document, in list order (log) or key order (map).
    pub fn all_rows(&self) -> Result<KeyedRows, ApplyError> {
        let doc = self.doc()?;
        read_rows(&self.key, &doc.doc, doc.rows_obj.as_ref(), 0)
    }
}

impl Segment {
    /// Runs `f` on the segment's document, loading sealed bytes into a temporary document.
    pub fn with_live<R>(
        &self,
        f: impl FnOnce(&Live) -> Result<R, ApplyError>,
    ) -> Result<R, ApplyError> {
        match &self.body {
            Body::Live(live) => f(live),
            Body::Sealed(bytes) => {
                let doc = Automerge::load(bytes).map_err(|e| ApplyError::Automerge {
                    key: self.head.head.key,
                    reason: e.to_string(),
                })?;
                f(&Live::from_doc(&self.head.head.key, doc)?)
            }
        }
    }
}

/// Loads and fully checks a received snapshot against its signed head: one head equal to the
/// signed hash, every change by the writer, the schema, every row valid and, for logs, every
/// element appended after the one before. Returns the document and its rows.
pub(crate) fn check_snapshot(
    head: &SignedHead,
    bytes: &[u8],
) -> Result<(Live, KeyedRows), ApplyError> {
    let key = &head.head.key;
    let doc = Automerge::load(bytes).map_err(|e| ApplyError::Automerge {
        key: *key,
        reason: e.to_string(),
    })?;
    if doc.get_heads() != [ChangeHash(head.head.hash)] {
        return Err(ApplyError::mismatch(
            key,
            "snapshot heads differ from the signed head",
        ));
    }
    let metas = doc.get_changes_meta(&[]);
    if let Some(m) = metas.iter().find(|m| !key.writer.is_actor(&m.actor)) {
        return Err(ApplyError::NotOwner {
            key: *key,
            actor: hex::encode(m.actor.to_bytes()),
        });
    }
    if metas.len() as u64 != head.head.seq {
        return Err(ApplyError::mismatch(
            key,
            "snapshot change count differs from the signed seq",
        ));
    }
    let live = Live::from_doc(key, doc)?;
    let root_keys: Vec<String> = live.doc()?.doc.keys(ROOT).collect();
    if root_keys.len() != 1 || root_keys[0] != ROWS || live.doc()?.rows_obj.is_none() {
        return Err(ApplyError::schema(
            key,
            head.head.seq,
            "root must hold exactly `rows`",
        ));
    }
    let rows = live.all_rows()?;
    if rows.len() as u64 != head.head.rows {
        return Err(ApplyError::mismatch(
            key,
            "snapshot row count differs from the signed count",
        ));
    }
    Ok((live, rows))
}

/// Reads rows from `from` on. Log elements must carry strictly increasing op counters (each
/// appended after the one before); map rows must sit under their own key.
fn read_rows(
    key: &SegmentKey,
    doc: &Automerge,
    obj: Option<&ObjId>,
    from: usize,
) -> Result<KeyedRows, ApplyError> {
    let Some(obj) = obj else {
        return Ok(Vec::new());
    };
    let bytes_of = |v: &automerge::ValueRef<'_>| -> Result<Vec<u8>, ApplyError> {
        match v {
            automerge::ValueRef::Scalar(automerge::ScalarValueRef::Bytes(b)) => Ok(b.to_vec()),
            _ => Err(ApplyError::schema(key, 0, "rows must be bytes values")),
        }
    };
    let mut out = Vec::new();
    match (key.table.shape(), doc.object_type(obj)) {
        (TableShape::Log, Ok(ObjType::List)) => {
            let mut last = 0;
            for item in doc.list_range(obj, ..) {
                let c = counter(&item.id()).unwrap_or(0);
                if c <= last {
                    return Err(ApplyError::schema(
                        key,
                        0,
                        "log rows must be appended in order",
                    ));
                }
                last = c;
                if item.index >= from {
                    let row = Row::decode(key.table, &bytes_of(&item.value)?)
                        .map_err(|source| ApplyError::Row { key: *key, source })?;
                    out.push((None, row));
                }
            }
        }
        (TableShape::Map, Ok(ObjType::Map)) => {
            for item in doc.map_range(obj, ..) {
                if item.conflict {
                    return Err(ApplyError::schema(key, 0, "map rows must not conflict"));
                }
                let row = Row::decode(key.table, &bytes_of(&item.value)?)
                    .map_err(|source| ApplyError::Row { key: *key, source })?;
                let actual = row.key().unwrap_or_default();
                if actual != item.key.as_ref() {
                    return Err(ApplyError::Row {
                        key: *key,
                        source: crate::row::RowError::KeyMismatch {
                            stored: item.key.to_string(),
                            actual,
                        },
                    });
                }
                out.push((Some(item.key.to_string()), row));
            }
        }
        _ => {
            return Err(ApplyError::schema(
                key,
                0,
                "`rows` has the wrong object type",
            ));
        }
    }
    Ok(out)
}

fn rows_obj(doc: &Automerge) -> Option<ObjId> {
    match doc.get(ROOT, ROWS).ok()?? {
        (Value::Object(_), id) => Some(id),
        _ => None,
    }
}

fn counter(id: &ObjId) -> Option<u64> {
    match id {
        ObjId::Id(c, _, _) => Some(*c),
        ObjId::Root => None,
    }
}

/// Checks one change against the chain and the schema, advancing `cursor` and collecting its
/// row effects.
fn check_change(
    key: &SegmentKey,
    cursor: &mut Cursor,
    change: &Change,
    out: &mut Vec<RowOp>,
) -> Result<(), ApplyError> {
    let writer = key.writer;
    if !writer.is_actor(change.actor_id()) || !change.other_actor_ids().is_empty() {
        return Err(ApplyError::NotOwner {
            key: *key,
            actor: hex::encode(change.actor_id().to_bytes()),
        });
    }
    let seq = cursor.seq + 1;
    let expected_deps: Vec<ChangeHash> = cursor.hash.into_iter().collect();
    if change.seq() != seq || change.deps() != expected_deps.as_slice() {
        return Err(ApplyError::Fork { key: *key, seq });
    }
    if change.start_op().get() != cursor.max_op + 1 {
        return Err(ApplyError::schema(
            key,
            seq,
            "op counters must continue the chain",
        ));
    }
    let expanded = change.decode();
    let shape = key.table.shape();
    let rows_id = OpId(1, writer.actor());
    for (i, op) in expanded.operations.iter().enumerate() {
        let id = change.start_op().get() + i as u64;
        let on_rows = op.obj == ObjectId::Id(rows_id.clone());
        match (&op.action, &op.obj, &op.key) {
            (OpType::Make(kind), ObjectId::Root, Key::Map(k))
                if id == 1 && k.as_str() == ROWS && !op.insert =>
            {
                let want = match shape {
                    TableShape::Log => ObjType::List,
                    TableShape::Map => ObjType::Map,
                };
                if *kind != want {
                    return Err(ApplyError::schema(
                        key,
                        seq,
                        "`rows` has the wrong object type",
                    ));
                }
            }
            (OpType::Put(ScalarValue::Bytes(b)), _, Key::Seq(elem))
                if on_rows && op.insert && shape == TableShape::Log =>
            {
                let expected = match cursor.tail {
                    None => ElementId::Head,
                    Some(t) => ElementId::Id(OpId(t, writer.actor())),
                };
                if *elem != expected {
                    return Err(ApplyError::schema(
                        key,
                        seq,
                        "log rows may only be appended",
                    ));
                }
                let row = Row::decode(key.table, b)
                    .map_err(|source| ApplyError::Row { key: *key, source })?;
                cursor.tail = Some(id);
                out.push(RowOp::Insert(row));
            }
            (OpType::Put(ScalarValue::Bytes(b)), _, Key::Map(k))
                if on_rows && !op.insert && shape == TableShape::Map =>
            {
                let row = Row::decode(key.table, b)
                    .map_err(|source| ApplyError::Row { key: *key, source })?;
                let actual = row.key().unwrap_or_default();
                if actual != k.as_str() {
                    return Err(ApplyError::Row {
                        key: *key,
                        source: crate::row::RowError::KeyMismatch {
                            stored: k.to_string(),
                            actual,
                        },
                    });
                }
                out.push(RowOp::Put(k.to_string(), row));
            }
            (OpType::Delete, _, Key::Map(k)) if on_rows && shape == TableShape::Map => {
                out.push(RowOp::Delete(k.to_string()));
            }
            _ => {
                return Err(ApplyError::schema(
                    key,
                    seq,
                    "operation not allowed in a segment",
                ));
            }
        }
    }
    cursor.seq = seq;
    cursor.hash = Some(change.hash());
    cursor.max_op = change.max_op();
    Ok(())
}

/// Map rows as a key → row map, for computing what a snapshot changed.
pub(crate) fn as_map(rows: KeyedRows) -> BTreeMap<String, Row> {
    rows.into_iter()
        .filter_map(|(k, r)| k.map(|k| (k, r)))
        .collect()
}
