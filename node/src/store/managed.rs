//! Managed tables in the store: the fold of the chain's `Managed` records
//! ([`meshward_crdt::mastered::ManagedChange`]) into `managed_view`, kept in the same write
//! transaction as the records themselves, so the view never disagrees with the chain.
//!
//! | key | value |
//! |---|---|
//! | namespace `\0` table `\0` key | postcard `(version, document JSON text)` |
//!
//! Names hold no `\0` (their character sets exclude it), so keys sort by namespace, then
//! table, then row key. The table is created by the first managed write; a store without it
//! has no managed rows. A record whose payload does not decode, or whose document is not
//! JSON, changes nothing (the leader never signs one; a newer leader's major version would be
//! one): every node folds the same chain into the same view.

use meshward_crdt::mastered::{ManagedChange, RecordKind, SignedRecord, StateDigest, StateHasher};
use redb::{ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::{ChangeReader, Store, StoreError};

/// The managed rows: see the module docs.
const MANAGED_VIEW: TableDefinition<&[u8], &[u8]> = TableDefinition::new("managed_view");

/// A row of a managed table as the node holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManagedRow {
    /// Its namespace.
    pub namespace: String,
    /// Its table.
    pub table: String,
    /// Its key.
    pub key: String,
    /// The document, as JSON text.
    pub document: String,
    /// The mastered version that wrote it.
    pub version: u64,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    version: u64,
    document: String,
}

/// The view key of a row (module docs).
fn row_key(namespace: &str, table: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(namespace.len() + table.len() + key.len() + 2);
    k.extend(namespace.as_bytes());
    k.push(0);
    k.extend(table.as_bytes());
    k.push(0);
    k.extend(key.as_bytes());
    k
}

/// The row a view entry holds.
fn decode_row(k: &[u8], v: &[u8]) -> Result<ManagedRow, StoreError> {
    let bad = || StoreError::Decode {
        what: "managed row",
    };
    let mut parts = k.splitn(3, |b| *b == 0);
    let mut next = || {
        parts
            .next()
            .and_then(|p| std::str::from_utf8(p).ok())
            .map(str::to_string)
            .ok_or_else(bad)
    };
    let (namespace, table, key) = (next()?, next()?, next()?);
    let stored: Stored = postcard::from_bytes(v).map_err(|_| bad())?;
    Ok(ManagedRow {
        namespace,
        table,
        key,
        document: stored.document,
        version: stored.version,
    })
}

/// The change a record makes to the view, if it is a valid managed record.
pub(super) fn change_of(record: &SignedRecord) -> Option<ManagedChange> {
    if record.record.kind != RecordKind::Managed {
        return None;
    }
    let change = ManagedChange::decode(&record.record.payload).ok()?;
    if let Some(doc) = &change.document
        && serde_json::from_str::<serde_json::Value>(doc).is_err()
    {
        return None;
    }
    Some(change)
}

/// Folds one record into the view, inside `tx`.
pub(super) fn fold(tx: &WriteTransaction, record: &SignedRecord) -> Result<(), StoreError> {
    if record.record.kind != RecordKind::Managed {
        return Ok(());
    }
    let Some(change) = change_of(record) else {
        tracing::warn!(
            version = record.record.version,
            "managed record not understood; it changes nothing"
        );
        return Ok(());
    };
    let mut view = tx.open_table(MANAGED_VIEW)?;
    let k = row_key(&change.namespace, &change.table, &change.key);
    match change.document {
        Some(document) => {
            let stored = Stored {
                version: record.record.version,
                document,
            };
            view.insert(k.as_slice(), super::encode(&stored).as_slice())?;
        }
        None => {
            view.remove(k.as_slice())?;
        }
    }
    Ok(())
}

/// Rebuilds the view from a whole chain, inside `tx` (after a fork replaced records).
pub(super) fn rebuild(tx: &WriteTransaction, records: &[SignedRecord]) -> Result<(), StoreError> {
    tx.open_table(MANAGED_VIEW)?.retain(|_, _| false)?;
    for record in records {
        fold(tx, record)?;
    }
    Ok(())
}

/// The digest of the view ([`StateDigest::of_rows`]): every row in key order, its key, the
/// version that wrote it and its document.
fn digest_of(
    view: &impl ReadableTable<&'static [u8], &'static [u8]>,
) -> Result<StateDigest, StoreError> {
    // The stored value borrowed, not copied: a checkpoint hashes every row.
    #[derive(Deserialize)]
    struct StoredRef<'a> {
        version: u64,
        document: &'a str,
    }
    let mut hasher = StateHasher::new();
    for entry in view.iter()? {
        let (k, v) = entry?;
        let value = v.value();
        let stored: StoredRef<'_> =
            postcard::from_bytes(value).map_err(|_| StoreError::Decode {
                what: "managed row",
            })?;
        hasher.row(k.value(), stored.version, stored.document.as_bytes());
    }
    Ok(hasher.finish())
}

/// The digest of the view as `read` sees it.
pub(super) fn digest(read: &ReadTransaction) -> Result<StateDigest, StoreError> {
    match read.open_table(MANAGED_VIEW) {
        Ok(view) => digest_of(&view),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(StateHasher::new().finish()),
        Err(e) => Err(e.into()),
    }
}

/// The digest of the view inside the write transaction `tx`.
pub(super) fn digest_in(tx: &WriteTransaction) -> Result<StateDigest, StoreError> {
    digest_of(&tx.open_table(MANAGED_VIEW)?)
}

/// Rows of `read` whose view key starts with `prefix`, after view key `after`, up to `limit`.
fn rows_in(
    read: &ReadTransaction,
    prefix: &[u8],
    after: Option<&[u8]>,
    limit: usize,
) -> Result<Vec<(Vec<u8>, ManagedRow)>, StoreError> {
    let view = match read.open_table(MANAGED_VIEW) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let start = match after {
        Some(a) if a >= prefix => std::ops::Bound::Excluded(a),
        _ => std::ops::Bound::Included(prefix),
    };
    let mut out = Vec::new();
    for entry in view.range::<&[u8]>((start, std::ops::Bound::Unbounded))? {
        if out.len() >= limit {
            break;
        }
        let (k, v) = entry?;
        let k = k.value();
        if !k.starts_with(prefix) {
            break;
        }
        out.push((k.to_vec(), decode_row(k, v.value())?));
    }
    Ok(out)
}

impl Store {
    /// One managed row, if the node holds it.
    pub fn managed_row(
        &self,
        namespace: &str,
        table: &str,
        key: &str,
    ) -> Result<Option<ManagedRow>, StoreError> {
        let k = row_key(namespace, table, key);
        Ok(rows_in(&self.begin_read()?, &k, None, 1)?
            .into_iter()
            .map(|(_, row)| row)
            .find(|row| row.key == key))
    }

    /// Up to `limit` rows of a table in key order, after row key `after`.
    pub fn managed_rows(
        &self,
        namespace: &str,
        table: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ManagedRow>, StoreError> {
        let prefix = row_key(namespace, table, "");
        let after = after.map(|a| row_key(namespace, table, a));
        Ok(
            rows_in(&self.begin_read()?, &prefix, after.as_deref(), limit)?
                .into_iter()
                .map(|(_, row)| row)
                .collect(),
        )
    }

    /// The tables of a namespace that hold rows, in name order (at most `limit`); each table
    /// costs one lookup, whatever its row count.
    pub fn managed_tables(&self, namespace: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        let read = self.begin_read()?;
        let mut prefix = namespace.as_bytes().to_vec();
        prefix.push(0);
        let mut tables = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        while tables.len() < limit {
            let Some((_, row)) = rows_in(&read, &prefix, after.as_deref(), 1)?.pop() else {
                break;
            };
            // Past every key of this table: the table name followed by `\x01`.
            let mut skip = row_key(namespace, &row.table, "");
            skip.pop();
            skip.push(1);
            after = Some(skip);
            tables.push(row.table);
        }
        Ok(tables)
    }
}

impl ChangeReader {
    /// Every managed row after view key `after` (`None`: from the start), up to `limit`:
    /// (key for the next page, row).
    pub fn managed_after(
        &self,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, ManagedRow)>, StoreError> {
        rows_in(
            &self.tx,
            &[],
            after,
            limit.min(super::changes::MAX_CHANGE_PAGE),
        )
    }
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;
    use meshward_crdt::ClusterId;
    use meshward_crdt::mastered::{Chain, Member, Roster, TrustAnchor};

    use super::*;

    fn leader() -> SigningKey {
        SigningKey::from_bytes(&[1; 32])
    }

    fn anchor() -> TrustAnchor {
        TrustAnchor {
            cluster: ClusterId([5; 16]),
            genesis_leader: leader().verifying_key().to_bytes(),
        }
    }

    fn put(ns: &str, table: &str, key: &str, doc: Option<&str>) -> (RecordKind, Vec<u8>) {
        let change = ManagedChange {
            namespace: ns.into(),
            table: table.into(),
            key: key.into(),
            document: doc.map(str::to_string),
        };
        (RecordKind::Managed, change.encode())
    }

    /// A chain of genesis then `records`, every record stored in `store`.
    fn chain_into(store: &Store, records: &[(RecordKind, Vec<u8>)]) -> Vec<SignedRecord> {
        store.adopt_anchor(&anchor()).unwrap();
        let mut chain = Chain::new(anchor());
        let roster = Roster {
            members: vec![Member {
                key: leader().verifying_key().to_bytes(),
                address: "10.0.0.1".into(),
            }],
        };
        let mut out = Vec::new();
        let genesis = (RecordKind::Genesis, roster.encode());
        for (kind, payload) in std::iter::once(&genesis).chain(records) {
            let signed = chain.sign_next(&leader(), *kind, payload.clone());
            let verified = chain.verify(&signed).unwrap();
            store.append_mastered(&verified).unwrap();
            chain.apply(verified).unwrap();
            out.push(signed);
        }
        out
    }

    fn keys(rows: &[ManagedRow]) -> Vec<(&str, &str)> {
        rows.iter()
            .map(|r| (r.key.as_str(), r.document.as_str()))
            .collect()
    }

    #[test]
    fn puts_and_deletes_fold_in_chain_order_and_garbage_changes_nothing() {
        let store = Store::in_memory().unwrap();
        assert_eq!(store.managed_rows("ns1", "hosts", None, 10).unwrap(), []);
        chain_into(
            &store,
            &[
                put("ns1", "hosts", "b", Some(r#"{"v":1}"#)),
                put("ns1", "hosts", "a", Some("[1]")),
                put("ns1", "hosts", "b", Some(r#"{"v":2}"#)),
                put("ns1", "hosts", "c", Some("null")),
                put("ns1", "hosts", "c", None),
                put("ns1", "users", "u", Some("1")),
                put("ns2", "hosts", "z", Some("2")),
                // Not JSON, not a payload, a payload of another major: nothing changes.
                put("ns1", "hosts", "a", Some("{nope")),
                (RecordKind::Managed, vec![1, 0, 0xff, 0xff]),
                (RecordKind::Managed, vec![9, 0]),
            ],
        );
        let rows = store.managed_rows("ns1", "hosts", None, 10).unwrap();
        assert_eq!(keys(&rows), [("a", "[1]"), ("b", r#"{"v":2}"#)]);
        assert_eq!((rows[0].version, rows[1].version), (3, 4));
        let b = store.managed_row("ns1", "hosts", "b").unwrap().unwrap();
        assert_eq!(b.document, r#"{"v":2}"#);
        assert_eq!(store.managed_row("ns1", "hosts", "c").unwrap(), None);
        assert_eq!(store.managed_row("ns1", "host", "b").unwrap(), None);
        let page = store.managed_rows("ns1", "hosts", Some("a"), 10).unwrap();
        assert_eq!(keys(&page), [("b", r#"{"v":2}"#)]);
        assert_eq!(
            store.managed_rows("ns1", "hosts", None, 1).unwrap().len(),
            1
        );
        assert_eq!(store.managed_tables("ns1", 10).unwrap(), ["hosts", "users"]);
        assert_eq!(store.managed_tables("ns2", 10).unwrap(), ["hosts"]);
        assert_eq!(
            store.managed_tables("ns", 10).unwrap(),
            Vec::<String>::new()
        );
        let all = store
            .change_reader()
            .unwrap()
            .managed_after(None, 100)
            .unwrap();
        assert_eq!(all.len(), 4);
        let after_first = store
            .change_reader()
            .unwrap()
            .managed_after(Some(&all[0].0), 100)
            .unwrap();
        assert_eq!(after_first.len(), 3);
    }

    #[test]
    fn a_replaced_chain_rebuilds_the_view_from_the_winning_records() {
        let store = Store::in_memory().unwrap();
        let ours = chain_into(
            &store,
            &[
                put("ns1", "t", "keep", Some("1")),
                put("ns1", "t", "lost", Some("2")),
            ],
        );
        let winner_store = Store::in_memory().unwrap();
        let theirs = chain_into(
            &winner_store,
            &[
                put("ns1", "t", "keep", Some("1")),
                put("ns1", "t", "won", Some("3")),
            ],
        );
        store.replace_mastered(3, &theirs[2..], &ours[2..]).unwrap();
        let rows = store.managed_rows("ns1", "t", None, 10).unwrap();
        assert_eq!(keys(&rows), [("keep", "1"), ("won", "3")]);
    }
}
