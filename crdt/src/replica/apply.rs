//! How a replica takes what peers send: changes and snapshots of other writers' segments,
//! checked and applied, with the row changes and what to persist they cause.

use super::*;

impl Replica {
    pub(super) fn apply_changes(
        &mut self,
        head: SignedHead,
        have: u64,
        changes: Vec<Vec<u8>>,
    ) -> Result<Effects, ApplyError> {
        let key = head.head.key;
        let n = changes.len() as u64;
        if n == 0 || n > head.head.seq {
            return Err(ApplyError::mismatch(
                &key,
                "change count does not fit the signed seq",
            ));
        }
        let from = head.head.seq - n + 1;
        if from > have + 1 {
            return Err(ApplyError::Gap { key, have, from });
        }
        let skip = (have + 1 - from) as usize;
        let kept: Vec<Vec<u8>> = changes.into_iter().skip(skip).collect();
        let parsed = parse_changes(&key, kept.clone())?;
        let empty;
        let live = match self.segments.get(&key).map(|s| &s.body) {
            Some(Body::Live(live)) => live,
            _ => {
                empty = Live::empty(&key);
                &empty
            }
        };
        let (ops, cursor) = live.check(&parsed)?;
        if cursor.seq != head.head.seq || cursor.hash != Some(ChangeHash(head.head.hash)) {
            return Err(ApplyError::mismatch(
                &key,
                "changes do not end at the signed head",
            ));
        }
        let rows_before = live.rows();
        if map_rows_after(live, &ops, rows_before) != head.head.rows {
            return Err(ApplyError::mismatch(
                &key,
                "row count differs from the signed count",
            ));
        }
        // Checked: now apply.
        if !self.segments.contains_key(&key) {
            self.writers.hold(&key);
        }
        let seg = self.segments.entry(key).or_insert_with(|| Segment {
            head: head.clone(),
            body: Body::Live(Box::new(Live::empty(&key))),
        });
        let Body::Live(live) = &mut seg.body else {
            return Err(ApplyError::Fork { key, seq: have + 1 });
        };
        live.apply_checked(parsed, cursor, head.head.rows);
        let mut effects = Effects {
            rows: row_changes(&key, rows_before, ops),
            ..Effects::default()
        };
        effects.persist.push(self.persisted(key, &head, kept));
        self.finish(key, head);
        Ok(effects)
    }

    pub(super) fn apply_snapshot(
        &mut self,
        head: SignedHead,
        have: u64,
        have_hash: Option<[u8; 32]>,
        bytes: Vec<u8>,
    ) -> Result<Effects, ApplyError> {
        let key = head.head.key;
        let (live, rows) = check_snapshot(&head, &bytes)?;
        if let Some(h) = have_hash {
            match live.doc()?.doc.get_change_meta_by_hash(&ChangeHash(h)) {
                Some(meta) if meta.seq == have => {}
                _ => return Err(ApplyError::Fork { key, seq: have }),
            }
        }
        let old = match self.segments.get(&key) {
            Some(seg) => seg.with_live(|l| l.all_rows())?,
            None => Vec::new(),
        };
        let changes = match key.table.shape() {
            TableShape::Log => rows
                .into_iter()
                .enumerate()
                .skip(old.len())
                .map(|(i, (_, row))| RowChange::Appended {
                    key,
                    index: i as u64,
                    row,
                })
                .collect(),
            TableShape::Map => {
                let old = as_map(old);
                let new = as_map(rows);
                let mut out: Vec<RowChange> = old
                    .keys()
                    .filter(|k| !new.contains_key(*k))
                    .map(|k| RowChange::Deleted {
                        key,
                        row_key: k.clone(),
                    })
                    .collect();
                out.extend(
                    new.into_iter()
                        .filter(|(k, r)| old.get(k) != Some(r))
                        .map(|(row_key, row)| RowChange::Put { key, row_key, row }),
                );
                out
            }
        };
        let body = if head.head.sealed {
            Body::Sealed(Arc::new(bytes.clone()))
        } else {
            Body::Live(Box::new(live))
        };
        let replaced = self.segments.insert(
            key,
            Segment {
                head: head.clone(),
                body,
            },
        );
        if replaced.is_none() {
            self.writers.hold(&key);
        }
        Ok(Effects {
            rows: changes,
            persist: vec![Persist::Snapshot { head, doc: bytes }],
            push: Vec::new(),
        })
    }

    /// The store update for changes just added to a live segment: the changes themselves, or a
    /// snapshot when the segment is now sealed or its stored changes are due for compaction.
    pub(super) fn persisted(
        &mut self,
        key: SegmentKey,
        head: &SignedHead,
        changes: Vec<Vec<u8>>,
    ) -> Persist {
        let compact_after = self.config.compact_after.get();
        let Some(seg) = self.segments.get_mut(&key) else {
            return Persist::Append {
                head: head.clone(),
                changes,
            };
        };
        // A document that cannot be saved keeps its changes stored one by one; its next read
        // reports the error.
        let saved = match &seg.body {
            Body::Live(live) if head.head.sealed || live.stored_changes >= compact_after => {
                live.save().ok()
            }
            _ => None,
        };
        match (saved, &mut seg.body) {
            (Some(doc), Body::Live(live)) => {
                if head.head.sealed {
                    seg.body = Body::Sealed(Arc::new(doc.clone()));
                } else {
                    live.stored_changes = 0;
                }
                Persist::Snapshot {
                    head: head.clone(),
                    doc,
                }
            }
            _ => Persist::Append {
                head: head.clone(),
                changes,
            },
        }
    }

    /// Records the new head of a segment.
    pub(super) fn finish(&mut self, key: SegmentKey, head: SignedHead) {
        if let Some(seg) = self.segments.get_mut(&key) {
            seg.head = head;
        }
    }
}

/// Parses raw change chunks. automerge recomputes a change's hash from its content and does not
/// compare it with the checksum in the chunk header (bytes 4..8, the hash's first four bytes),
/// so that comparison is made here: altered bytes are refused, not stored and relayed.
pub(super) fn parse_changes(
    key: &SegmentKey,
    raw: Vec<Vec<u8>>,
) -> Result<Vec<Change>, ApplyError> {
    raw.into_iter()
        .map(|bytes| {
            let header = bytes.get(4..8).map(<[u8]>::to_vec);
            let change = Change::from_bytes(bytes).map_err(|e| ApplyError::Automerge {
                key: *key,
                reason: e.to_string(),
            })?;
            if header.as_deref() != Some(&change.hash().0[..4]) {
                return Err(ApplyError::mismatch(
                    key,
                    "change checksum does not match its content",
                ));
            }
            Ok(change)
        })
        .collect()
}

/// Row count after `ops` (log: appended; map: keys created minus keys removed).
fn map_rows_after(live: &Live, ops: &[RowOp], rows_before: u64) -> u64 {
    let mut present: BTreeMap<&str, bool> = BTreeMap::new();
    let mut rows = rows_before;
    for op in ops {
        match op {
            RowOp::Insert(_) => rows += 1,
            RowOp::Put(k, _) | RowOp::Delete(k) => {
                let was = *present
                    .entry(k.as_str())
                    .or_insert_with(|| live.get(k).is_some());
                let now = matches!(op, RowOp::Put(..));
                match (was, now) {
                    (false, true) => rows += 1,
                    (true, false) => rows -= 1,
                    _ => {}
                }
                present.insert(k.as_str(), now);
            }
        }
    }
    rows
}

pub(super) fn row_changes(
    key: &SegmentKey,
    rows_before: u64,
    ops: impl IntoIterator<Item = RowOp>,
) -> Vec<RowChange> {
    let mut index = rows_before;
    ops.into_iter()
        .map(|op| match op {
            RowOp::Insert(row) => {
                index += 1;
                RowChange::Appended {
                    key: *key,
                    index: index - 1,
                    row,
                }
            }
            RowOp::Put(row_key, row) => RowChange::Put {
                key: *key,
                row_key,
                row,
            },
            RowOp::Delete(row_key) => RowChange::Deleted { key: *key, row_key },
        })
        .collect()
}
