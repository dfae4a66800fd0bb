//! The node's store: one redb file holding everything durable.
//!
//! | table | key | value | class |
//! |---|---|---|---|
//! | `meta` | name | node key, cluster id, schema version | local |
//! | `segment_heads` | segment key | signed head | shared |
//! | `segment_snapshots` | segment key | saved automerge document | shared |
//! | `segment_changes` | segment key, seq | raw automerge change | shared |
//! | `events_view` | writer, segment, index | event row | shared (query view) |
//! | `map_view` | table, writer, row key | row | shared (query view) |
//! | `mastered_records` | version | signed mastered record | mastered |
//! | `settings` | name | value | local |
//! | `peers` | peer id | addresses, last seen | local |
//! | `audit_*` | see [`crate::audit`] | | local |
//!
//! Shared data is written only through [`Store::persist`], which applies a replica's
//! [`Effects`] in one durable transaction: the segment data and the query views never disagree
//! after a crash. A live segment's changes are appended per commit; when the replica emits a
//! snapshot (sealing or compaction) the snapshot replaces them. Heads and snapshots are kept in
//! separate tables so that a commit rewrites a few hundred bytes, not a document.

use std::fs;
use std::ops::Bound;
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use meshward_crdt::mastered::{Chain, RecordHash, SignedRecord, TrustAnchor, Verified};
use meshward_crdt::{
    ClusterId, Effects, Event, Persist, Replica, ReplicaConfig, Row, RowChange, SegmentKey,
    SignedHead, StoredSegment, TableId, WriterId,
};
use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

mod read_only;

/// File name of the store inside the data directory.
pub const STORE_FILE: &str = "meshward.redb";
/// Version of the table layout; a store of another version is refused.
pub const SCHEMA_VERSION: u32 = 1;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const HEADS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("segment_heads");
const SNAPSHOTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("segment_snapshots");
const CHANGES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("segment_changes");
const EVENTS_VIEW: TableDefinition<&[u8], &[u8]> = TableDefinition::new("events_view");
const MAP_VIEW: TableDefinition<&[u8], &[u8]> = TableDefinition::new("map_view");
const MASTERED: TableDefinition<u64, &[u8]> = TableDefinition::new("mastered_records");
const SETTINGS: TableDefinition<&str, &str> = TableDefinition::new("settings");
const PEERS: TableDefinition<&str, &[u8]> = TableDefinition::new("peers");
/// Node-local durable values the node itself manages (TLS identity, current joining bundle),
/// unlike the operator's settings. Created on first write.
const BLOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("local_blobs");
/// Mastered records of a chain that lost to ours (or that ours lost to), by record hash.
const SUPERSEDED: TableDefinition<&[u8], &[u8]> = TableDefinition::new("superseded_records");

/// Longest local setting name and value.
pub const MAX_SETTING: usize = 4096;

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory or store file could not be created or opened.
    #[error("cannot open store {path}: {reason}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Another process holds the store.
    #[error("store {path} is in use by another meshward process")]
    Busy {
        /// The file.
        path: PathBuf,
    },
    /// The file is not a meshward store of this version, or is damaged.
    #[error("store {path} is corrupt or not a meshward store: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// A stored value did not decode. Nothing was changed.
    #[error("stored {what} is corrupt")]
    Decode {
        /// What was being read.
        what: &'static str,
    },
    /// Stored shared data failed the replica's checks.
    #[error("stored shared data is invalid: {0}")]
    Replica(#[from] meshward_crdt::ApplyError),
    /// A local setting was refused.
    #[error("setting {name:?}: {reason}")]
    Setting {
        /// The setting.
        name: String,
        /// Why.
        reason: String,
    },
    /// The node already belongs to another cluster, or holds shared data under its current
    /// cluster id. Nothing was written.
    #[error("{0}")]
    Cluster(String),
    /// A mastered record that does not extend the stored chain. Nothing was written.
    #[error("mastered record version {got} does not extend the stored chain (last version {last})")]
    MasteredOrder {
        /// The record's version.
        got: u64,
        /// The last stored version (0 if none).
        last: u64,
    },
    /// The disk holding the store is full (see [`crate::disk`]). The write was refused and
    /// its transaction rolled back: nothing was changed.
    #[error("{0}")]
    DiskFull(std::io::Error),
    /// A write to a store opened read-only ([`Store::open_read_only`]); nothing was changed.
    #[error("the store was opened read-only for a command that only reads, and cannot be written")]
    ReadOnly,
    /// redb failed.
    #[error("store failure: {0}")]
    Db(String),
}

macro_rules! db_err {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                match redb::Error::from(e) {
                    redb::Error::Io(e) if e.kind() == std::io::ErrorKind::StorageFull => {
                        StoreError::DiskFull(e)
                    }
                    e => StoreError::Db(e.to_string()),
                }
            }
        }
    )*};
}
db_err!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// The node's identity: its signing key (also its writer id) and its cluster.
#[derive(Clone, Debug)]
pub struct Identity {
    /// The node's ed25519 key.
    pub key: SigningKey,
    /// The cluster it belongs to.
    pub cluster: ClusterId,
}

impl Identity {
    /// The node's writer id.
    pub fn writer(&self) -> WriterId {
        WriterId::from_key(&self.key.verifying_key())
    }
}

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

/// The newest mastered record stored: a node never accepts anything older (fencing), and
/// the lifecycle code rebuilds the verified chain from the stored records at start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HighWater {
    /// Epoch of the newest record.
    pub epoch: u64,
    /// Its version.
    pub version: u64,
    /// Its hash.
    pub hash: RecordHash,
}

/// A peer book entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerEntry {
    /// Addresses the peer was reached at.
    pub addresses: Vec<String>,
    /// Last time it was seen, unix ms.
    pub last_seen_ms: i64,
}

/// The node's redb store, opened read-write ([`Store::open`]) or read-only
/// ([`Store::open_read_only`]).
#[derive(Debug)]
pub struct Store {
    db: read_only::Db,
    /// Learns when a write is refused for a full disk (file stores only).
    watch: crate::disk::DiskWatch,
}

impl Store {
    /// Opens the store in `dir`, creating the directory (0700; an existing one open to others
    /// is tightened, see [`crate::disk::private_data_dir`]) and the file (0600) on first use. A
    /// file that is not a meshward store is refused and left untouched.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(STORE_FILE);
        let open_err = |reason: String| StoreError::Open {
            path: path.clone(),
            reason,
        };
        crate::disk::private_data_dir(dir).map_err(|e| open_err(e.to_string()))?;
        if !path.exists() {
            crate::disk::create_new(&path, 0o600).map_err(|e| open_err(e.to_string()))?;
        }
        let watch = crate::disk::DiskWatch::default();
        let db = match crate::disk::open_database_watched(&path, watch.clone()) {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => return Err(StoreError::Busy { path }),
            Err(redb::DatabaseError::Storage(redb::StorageError::Io(e)))
                if e.kind() != std::io::ErrorKind::InvalidData =>
            {
                return Err(open_err(e.to_string()));
            }
            Err(e) => {
                return Err(StoreError::Corrupt {
                    path,
                    reason: e.to_string(),
                });
            }
        };
        let store = Store {
            db: read_only::Db::Write(std::sync::Arc::new(db)),
            watch,
        };
        store.init_schema().map_err(|e| match e {
            StoreError::Corrupt { reason, .. } => StoreError::Corrupt {
                path: path.clone(),
                reason,
            },
            other => other,
        })?;
        Ok(store)
    }

    /// A store over any redb storage backend (the simulator's faulty disk), opened as
    /// [`Store::open`] opens a file: a full disk is named after `dir` and noted
    /// ([`Store::write_refused`]), an unreadable or damaged store is refused.
    pub fn with_backend(
        backend: impl redb::StorageBackend,
        dir: &Path,
    ) -> Result<Self, StoreError> {
        let path = dir.join(STORE_FILE);
        let watch = crate::disk::DiskWatch::default();
        let db = match crate::disk::open_backend_watched(backend, dir, watch.clone()) {
            Ok(db) => db,
            Err(redb::DatabaseError::Storage(redb::StorageError::Io(e)))
                if e.kind() != std::io::ErrorKind::InvalidData =>
            {
                return Err(StoreError::Open {
                    path,
                    reason: e.to_string(),
                });
            }
            Err(e) => {
                return Err(StoreError::Corrupt {
                    path,
                    reason: e.to_string(),
                });
            }
        };
        let store = Store {
            db: read_only::Db::Write(std::sync::Arc::new(db)),
            watch,
        };
        store.init_schema()?;
        Ok(store)
    }

    /// A store in memory (redb's in-memory backend), for tests and simulations.
    pub fn in_memory() -> Result<Self, StoreError> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(|e| StoreError::Db(e.to_string()))?;
        let store = Store {
            db: read_only::Db::Write(std::sync::Arc::new(db)),
            watch: crate::disk::DiskWatch::default(),
        };
        store.init_schema()?;
        Ok(store)
    }

    /// Whether a write to this open store was refused because its disk was full, by any
    /// path (shared data, settings, audit, peer book). redb then refuses every later write
    /// on it: reopen the store ([`Store::open`]) before writing again.
    pub fn write_refused(&self) -> bool {
        self.watch.refused()
    }

    fn init_schema(&self) -> Result<(), StoreError> {
        // An existing store of this version is opened without writing anything.
        let read = self.begin_read()?;
        if let Ok(meta) = read.open_table(META)
            && meta
                .get("schema")?
                .is_some_and(|v| v.value() == SCHEMA_VERSION.to_be_bytes())
        {
            return Ok(());
        }
        drop(read);
        let tx = self.begin_write()?;
        {
            let mut meta = tx.open_table(META)?;
            let version = meta.get("schema")?.map(|v| v.value().to_vec());
            match version {
                None => {
                    meta.insert("schema", SCHEMA_VERSION.to_be_bytes().as_slice())?;
                }
                Some(v) if v == SCHEMA_VERSION.to_be_bytes() => {}
                Some(v) => {
                    return Err(StoreError::Corrupt {
                        path: PathBuf::new(),
                        reason: format!(
                            "schema version {v:?} is not {SCHEMA_VERSION}; use a matching meshward"
                        ),
                    });
                }
            }
            for def in [HEADS, SNAPSHOTS, CHANGES, EVENTS_VIEW, MAP_VIEW] {
                tx.open_table(def)?;
            }
            tx.open_table(MASTERED)?;
            tx.open_table(SETTINGS)?;
            tx.open_table(PEERS)?;
            tx.open_table(SUPERSEDED)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Whether the node's identity exists yet (see [`Store::identity`]); only reads.
    pub fn has_identity(&self) -> Result<bool, StoreError> {
        let read = self.begin_read()?;
        Ok(read_identity(&read.open_table(META)?)?.is_some())
    }

    /// The node's identity, created on first use: a fresh key from the OS's random source
    /// and, until the node is initialised or joins a cluster, a fresh standalone cluster id.
    pub fn identity(&self) -> Result<Identity, StoreError> {
        let read = self.begin_read()?;
        if let Some(identity) = read_identity(&read.open_table(META)?)? {
            return Ok(identity);
        }
        drop(read);
        let tx = self.begin_write()?;
        let identity = {
            let mut meta = tx.open_table(META)?;
            match read_identity(&meta)? {
                Some(identity) => identity,
                None => {
                    let mut rng = rand::rngs::OsRng;
                    let key = SigningKey::generate(&mut rng);
                    let mut cluster = [0u8; 16];
                    rand::RngCore::fill_bytes(&mut rng, &mut cluster);
                    meta.insert("node_key", key.to_bytes().as_slice())?;
                    meta.insert("cluster_id", cluster.as_slice())?;
                    Identity {
                        key,
                        cluster: ClusterId(cluster),
                    }
                }
            }
        };
        tx.commit()?;
        Ok(identity)
    }

    /// Rebuilds the replica from stored segments.
    pub fn load_replica(
        &self,
        identity: &Identity,
        config: ReplicaConfig,
    ) -> Result<Replica, StoreError> {
        let tx = self.begin_read()?;
        let heads = tx.open_table(HEADS)?;
        let snapshots = tx.open_table(SNAPSHOTS)?;
        let changes = tx.open_table(CHANGES)?;
        let mut stored = Vec::new();
        for entry in heads.iter()? {
            let (k, v) = entry?;
            let head: SignedHead =
                postcard::from_bytes(v.value()).map_err(|_| StoreError::Decode {
                    what: "segment head",
                })?;
            let snapshot = snapshots.get(k.value())?.map(|v| v.value().to_vec());
            let prefix = k.value().to_vec();
            let mut list = Vec::new();
            for c in
                changes.range::<&[u8]>((Bound::Included(prefix.as_slice()), Bound::Unbounded))?
            {
                let (ck, cv) = c?;
                if !ck.value().starts_with(&prefix) {
                    break;
                }
                list.push(cv.value().to_vec());
            }
            stored.push(StoredSegment {
                head,
                snapshot,
                changes: list,
            });
        }
        Ok(Replica::restore(
            identity.cluster,
            identity.key.clone(),
            config,
            stored,
        )?)
    }

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

    /// The trust anchor of the node's mastered chain (cluster and genesis leader), if set.
    pub fn anchor(&self) -> Result<Option<TrustAnchor>, StoreError> {
        let tx = self.begin_read()?;
        let meta = tx.open_table(META)?;
        let Some(leader) = meta.get("anchor_leader")? else {
            return Ok(None);
        };
        let genesis_leader = leader.value().try_into().map_err(|_| StoreError::Decode {
            what: "trust anchor",
        })?;
        let cluster = meta
            .get("cluster_id")?
            .and_then(|c| c.value().try_into().ok())
            .ok_or(StoreError::Decode { what: "cluster id" })?;
        Ok(Some(TrustAnchor {
            cluster: ClusterId(cluster),
            genesis_leader,
        }))
    }

    /// Makes the node a member of `anchor`'s cluster: its cluster id becomes the anchor's.
    /// Refused when another anchor is set, or when shared data was already written under a
    /// different cluster id (its signed heads name that cluster).
    pub fn adopt_anchor(&self, anchor: &TrustAnchor) -> Result<(), StoreError> {
        if let Some(current) = self.anchor()? {
            if current == *anchor {
                return Ok(());
            }
            return Err(StoreError::Cluster(format!(
                "this node already belongs to cluster {} (genesis leader {}); \
                 it cannot take records of cluster {}",
                current.cluster.to_hex(),
                hex::encode(current.genesis_leader),
                anchor.cluster.to_hex()
            )));
        }
        let identity = self.identity()?;
        let tx = self.begin_write()?;
        {
            let has_shared = tx.open_table(HEADS)?.first()?.is_some();
            if has_shared && identity.cluster != anchor.cluster {
                return Err(StoreError::Cluster(format!(
                    "this node holds shared data of standalone cluster {}; \
                     start from an empty data directory to join cluster {}",
                    identity.cluster.to_hex(),
                    anchor.cluster.to_hex()
                )));
            }
            let mut meta = tx.open_table(META)?;
            meta.insert("cluster_id", anchor.cluster.0.as_slice())?;
            meta.insert("anchor_leader", anchor.genesis_leader.as_slice())?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Appends a verified mastered record and advances the high-water mark, in one durable
    /// transaction. Only a record that extends the stored chain (next version, `prev` equal to
    /// the stored hash) is written; verification itself is [`meshward_crdt::mastered::Chain`]'s
    /// job, and only its [`Verified`] type reaches this call.
    pub fn append_mastered(&self, record: &Verified<SignedRecord>) -> Result<(), StoreError> {
        let tx = self.begin_write()?;
        {
            let mut meta = tx.open_table(META)?;
            let last = read_high_water(&meta)?;
            let r = &record.record;
            let (last_version, last_hash) =
                last.map_or((0, RecordHash::ZERO), |h| (h.version, h.hash));
            if r.version != last_version + 1 || r.prev != last_hash {
                return Err(StoreError::MasteredOrder {
                    got: r.version,
                    last: last_version,
                });
            }
            tx.open_table(MASTERED)?
                .insert(r.version, record.encode().as_slice())?;
            let mut hw = Vec::with_capacity(48);
            hw.extend(r.epoch.to_be_bytes());
            hw.extend(r.version.to_be_bytes());
            hw.extend(record.hash().0);
            meta.insert("mastered_high_water", hw.as_slice())?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The stored mastered records in version order, to rebuild the chain from.
    pub fn mastered_records(&self) -> Result<Vec<SignedRecord>, StoreError> {
        let tx = self.begin_read()?;
        let table = tx.open_table(MASTERED)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (_, v) = entry?;
            out.push(
                SignedRecord::decode(v.value()).map_err(|_| StoreError::Decode {
                    what: "mastered record",
                })?,
            );
        }
        Ok(out)
    }

    /// The high-water mark of the mastered chain, if any record is stored.
    pub fn mastered_high_water(&self) -> Result<Option<HighWater>, StoreError> {
        let tx = self.begin_read()?;
        read_high_water(&tx.open_table(META)?)
    }

    /// Replaces the stored mastered records from version `from` on by `records` (the winning
    /// chain after a fork) and keeps `superseded` (ours from there) for review, in one durable
    /// transaction. The resulting chain is verified from the stored trust anchor first; if it
    /// does not verify, nothing changes.
    pub fn replace_mastered(
        &self,
        from: u64,
        records: &[SignedRecord],
        superseded: &[SignedRecord],
    ) -> Result<(), StoreError> {
        let anchor = self
            .anchor()?
            .ok_or(StoreError::MasteredOrder { got: from, last: 0 })?;
        let mut chain: Vec<SignedRecord> = self
            .mastered_records()?
            .into_iter()
            .take(from.saturating_sub(1) as usize)
            .collect();
        if chain.len() as u64 + 1 != from {
            return Err(StoreError::MasteredOrder {
                got: from,
                last: chain.len() as u64,
            });
        }
        chain.extend(records.iter().cloned());
        let rebuilt = Chain::rebuild(anchor, &chain).map_err(|_| StoreError::Decode {
            what: "replacement mastered chain (it does not verify)",
        })?;
        let tx = self.begin_write()?;
        {
            let mut table = tx.open_table(MASTERED)?;
            let stale: Vec<u64> = table
                .range(from..)?
                .map(|e| e.map(|(k, _)| k.value()))
                .collect::<Result<_, _>>()?;
            for version in stale {
                table.remove(version)?;
            }
            for r in records {
                table.insert(r.record.version, r.encode().as_slice())?;
            }
            let mut hw = Vec::with_capacity(48);
            hw.extend(rebuilt.epoch().to_be_bytes());
            hw.extend(rebuilt.last_version().to_be_bytes());
            hw.extend(rebuilt.last_hash().0);
            tx.open_table(META)?
                .insert("mastered_high_water", hw.as_slice())?;
            let mut kept = tx.open_table(SUPERSEDED)?;
            for r in superseded {
                kept.insert(r.hash().0.as_slice(), r.encode().as_slice())?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Keeps records of a losing competing chain for review.
    pub fn add_superseded(&self, records: &[SignedRecord]) -> Result<(), StoreError> {
        let tx = self.begin_write()?;
        {
            let mut kept = tx.open_table(SUPERSEDED)?;
            for r in records {
                kept.insert(r.hash().0.as_slice(), r.encode().as_slice())?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Superseded mastered records, by version.
    pub fn superseded(&self) -> Result<Vec<SignedRecord>, StoreError> {
        let tx = self.begin_read()?;
        let table = match tx.open_table(SUPERSEDED) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (_, v) = entry?;
            out.push(
                SignedRecord::decode(v.value()).map_err(|_| StoreError::Decode {
                    what: "superseded record",
                })?,
            );
        }
        out.sort_by_key(|r| (r.record.version, r.record.epoch));
        Ok(out)
    }

    /// Records durably that this node endorsed `candidate` for `epoch`.
    pub fn set_vote(&self, epoch: u64, candidate: &WriterId) -> Result<(), StoreError> {
        let mut v = epoch.to_be_bytes().to_vec();
        v.extend(candidate.0);
        let tx = self.begin_write()?;
        tx.open_table(META)?.insert("ha_vote", v.as_slice())?;
        tx.commit()?;
        Ok(())
    }

    /// The last endorsement this node gave, if any.
    pub fn vote(&self) -> Result<Option<(u64, WriterId)>, StoreError> {
        let tx = self.begin_read()?;
        let meta = tx.open_table(META)?;
        let Some(v) = meta.get("ha_vote")? else {
            return Ok(None);
        };
        let v = v.value();
        let bad = || StoreError::Decode { what: "HA vote" };
        if v.len() != 40 {
            return Err(bad());
        }
        let epoch = u64::from_be_bytes(v[..8].try_into().map_err(|_| bad())?);
        let key: [u8; 32] = v[8..].try_into().map_err(|_| bad())?;
        Ok(Some((epoch, WriterId(key))))
    }

    /// Sets a node-only setting (never replicated).
    pub fn set_setting(&self, name: &str, value: &str) -> Result<(), StoreError> {
        let bad = |reason: &str| StoreError::Setting {
            name: name.to_string(),
            reason: reason.to_string(),
        };
        if name.is_empty()
            || name.len() > 128
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            return Err(bad(
                "names are 1–128 characters of letters, digits, '-' and '.'",
            ));
        }
        if value.len() > MAX_SETTING || value.chars().any(char::is_control) {
            return Err(bad(
                "values are at most 4096 bytes with no control characters",
            ));
        }
        let tx = self.begin_write()?;
        tx.open_table(SETTINGS)?.insert(name, value)?;
        tx.commit()?;
        Ok(())
    }

    /// A node-only setting.
    pub fn setting(&self, name: &str) -> Result<Option<String>, StoreError> {
        let tx = self.begin_read()?;
        Ok(tx
            .open_table(SETTINGS)?
            .get(name)?
            .map(|v| v.value().to_string()))
    }

    /// Every node-only setting, by name.
    pub fn settings(&self) -> Result<Vec<(String, String)>, StoreError> {
        let tx = self.begin_read()?;
        let table = tx.open_table(SETTINGS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            out.push((k.value().to_string(), v.value().to_string()));
        }
        Ok(out)
    }

    /// A node-managed local value (never replicated), if set.
    pub fn blob(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.begin_read()?;
        let table = match tx.open_table(BLOBS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Ok(table.get(name)?.map(|v| v.value().to_vec()))
    }

    /// Sets node-managed local values, all in one durable transaction.
    pub fn set_blobs(&self, values: &[(&str, &[u8])]) -> Result<(), StoreError> {
        let tx = self.begin_write()?;
        {
            let mut table = tx.open_table(BLOBS)?;
            for (name, value) in values {
                table.insert(*name, *value)?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Replaces a node-managed value with `new` only if it still equals `expected`, in one
    /// durable transaction (compare-and-set). Returns whether it was replaced.
    pub fn swap_blob(&self, name: &str, expected: &[u8], new: &[u8]) -> Result<bool, StoreError> {
        let tx = self.begin_write()?;
        let swapped = {
            let mut table = tx.open_table(BLOBS)?;
            let current = table.get(name)?.map(|v| v.value().to_vec());
            if current.as_deref() == Some(expected) {
                table.insert(name, new)?;
                true
            } else {
                false
            }
        };
        if swapped {
            tx.commit()?;
        } else {
            tx.abort()?;
        }
        Ok(swapped)
    }

    /// Records a peer's addresses and the time it was seen.
    pub fn remember_peer(&self, peer: &str, entry: &PeerEntry) -> Result<(), StoreError> {
        let tx = self.begin_write()?;
        tx.open_table(PEERS)?
            .insert(peer, encode(entry).as_slice())?;
        tx.commit()?;
        Ok(())
    }

    /// The peer book.
    pub fn peers(&self) -> Result<Vec<(String, PeerEntry)>, StoreError> {
        let tx = self.begin_read()?;
        let table = tx.open_table(PEERS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            let peer = postcard::from_bytes(v.value())
                .map_err(|_| StoreError::Decode { what: "peer entry" })?;
            out.push((k.value().to_string(), peer));
        }
        Ok(out)
    }

    /// The peer book as (peer, first address) pairs the node can dial; entries that do not
    /// parse are skipped.
    pub fn known_peers(&self) -> Result<Vec<(WriterId, std::net::SocketAddr)>, StoreError> {
        Ok(self
            .peers()?
            .into_iter()
            .filter_map(|(id, entry)| {
                let id = id.parse().ok()?;
                let addr = entry.addresses.first()?.parse().ok()?;
                Some((id, addr))
            })
            .collect())
    }
}

fn read_identity(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Option<Identity>, StoreError> {
    let key = meta.get("node_key")?.map(|v| v.value().to_vec());
    let cluster = meta.get("cluster_id")?.map(|v| v.value().to_vec());
    let (Some(k), Some(c)) = (key, cluster) else {
        return Ok(None);
    };
    Ok(Some(Identity {
        key: SigningKey::from_bytes(
            &k.try_into()
                .map_err(|_| StoreError::Decode { what: "node key" })?,
        ),
        cluster: ClusterId(
            c.try_into()
                .map_err(|_| StoreError::Decode { what: "cluster id" })?,
        ),
    }))
}

fn read_high_water(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Option<HighWater>, StoreError> {
    let Some(v) = meta.get("mastered_high_water")? else {
        return Ok(None);
    };
    let v = v.value();
    let bad = || StoreError::Decode {
        what: "mastered high-water mark",
    };
    if v.len() != 48 {
        return Err(bad());
    }
    Ok(Some(HighWater {
        epoch: u64::from_be_bytes(v[..8].try_into().map_err(|_| bad())?),
        version: u64::from_be_bytes(v[8..16].try_into().map_err(|_| bad())?),
        hash: RecordHash(v[16..].try_into().map_err(|_| bad())?),
    }))
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Plain data structs always encode into a Vec.
    postcard::to_allocvec(value).unwrap_or_default()
}

fn table_byte(table: TableId) -> u8 {
    match table {
        TableId::Events => 0,
        TableId::Fingerprints => 1,
        TableId::Exceptions => 2,
    }
}

/// 37 bytes that sort like the segment key: table, writer, segment (big-endian).
fn segment_key(key: &SegmentKey) -> Vec<u8> {
    let mut k = vec![table_byte(key.table)];
    k.extend(key.writer.0);
    k.extend(key.segment.to_be_bytes());
    k
}

fn map_key(table: TableId, writer: &WriterId, row_key: &str) -> Vec<u8> {
    let mut k = vec![table_byte(table)];
    k.extend(writer.0);
    k.extend(row_key.as_bytes());
    k
}

/// Creates `dir` (and parents) with mode 0700 if missing.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_swap_only_from_the_expected_value() {
        let store = Store::in_memory().unwrap();
        assert_eq!(store.blob("b").unwrap(), None);
        assert!(!store.swap_blob("b", b"x", b"y").unwrap());
        store.set_blobs(&[("b", b"x")]).unwrap();
        assert!(store.swap_blob("b", b"x", b"y").unwrap());
        assert!(!store.swap_blob("b", b"x", b"z").unwrap());
        assert_eq!(store.blob("b").unwrap().as_deref(), Some(&b"y"[..]));
    }
    use meshward_crdt::{EventKind, KeyType, Op};

    fn event(i: i64) -> Op {
        Op::Append(Event {
            at_ms: i,
            kind: if i % 2 == 0 {
                EventKind::Login
            } else {
                EventKind::Logout
            },
            user: "alice".into(),
            target: "db".into(),
            detail: String::new(),
        })
    }

    #[test]
    fn persisted_effects_reload_into_the_same_replica_and_views() {
        let store = Store::in_memory().unwrap();
        let id = store.identity().unwrap();
        let config = ReplicaConfig {
            seal_rows: std::num::NonZeroU64::new(5).unwrap(),
            compact_after: std::num::NonZeroU64::new(3).unwrap(),
        };
        let mut replica = store.load_replica(&id, config.clone()).unwrap();
        for t in 0..6 {
            let mut ops: Vec<Op> = (0..3).map(|i| event(t * 3 + i)).collect();
            ops.push(Op::ObserveFingerprint {
                host: format!("h{}", t % 2),
                key_type: KeyType::SshEd25519,
                fingerprint: "SHA256:x".into(),
                at_ms: t,
            });
            store.persist(&replica.commit(t, ops).unwrap()).unwrap();
        }
        let again = store
            .load_replica(&store.identity().unwrap(), config)
            .unwrap();
        assert_eq!(again.digest(), replica.digest());
        assert_eq!(again.stats(), replica.stats());
        let events = store.events(&EventFilter::default()).unwrap();
        assert_eq!(events.len(), 18);
        let rows = replica.rows(TableId::Events).unwrap();
        assert_eq!(
            events.iter().map(|e| &e.event).collect::<Vec<_>>(),
            rows.iter()
                .map(|(_, r)| match r {
                    Row::Event(e) => e,
                    _ => unreachable!(),
                })
                .collect::<Vec<_>>()
        );
        let filtered = store
            .events(&EventFilter {
                since_ms: Some(4),
                until_ms: Some(10),
                kind: Some(EventKind::Login),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            filtered.iter().map(|e| e.event.at_ms).collect::<Vec<_>>(),
            vec![4, 6, 8]
        );
        assert_eq!(store.map_rows(TableId::Fingerprints).unwrap().len(), 2);
    }

    #[test]
    fn the_mastered_chain_is_stored_in_order_and_rebuilds() {
        use meshward_crdt::mastered::{Chain, Member, RecordKind, Roster, TrustAnchor};
        let store = Store::in_memory().unwrap();
        let leader = SigningKey::from_bytes(&[1; 32]);
        let anchor = TrustAnchor {
            cluster: ClusterId([5; 16]),
            genesis_leader: leader.verifying_key().to_bytes(),
        };
        let mut chain = Chain::new(anchor);
        let roster = Roster {
            members: vec![Member {
                key: leader.verifying_key().to_bytes(),
                address: "10.0.0.1".into(),
            }],
        };
        let genesis = chain.sign_next(&leader, RecordKind::Genesis, roster.encode());
        let v1 = chain.verify(&genesis).unwrap();
        store.append_mastered(&v1).unwrap();
        chain.apply(v1).unwrap();
        let config = chain.sign_next(&leader, RecordKind::Config, b"policy".to_vec());
        let v2 = chain.verify(&config).unwrap();
        // A record that does not extend the stored chain is refused (here: replayed genesis).
        let again = Chain::new(anchor).verify(&genesis).unwrap();
        assert!(matches!(
            store.append_mastered(&again),
            Err(StoreError::MasteredOrder { got: 1, last: 1 })
        ));
        store.append_mastered(&v2).unwrap();
        chain.apply(v2).unwrap();
        let hw = store.mastered_high_water().unwrap().unwrap();
        assert_eq!((hw.epoch, hw.version, hw.hash), (1, 2, chain.last_hash()));
        let rebuilt = Chain::rebuild(anchor, &store.mastered_records().unwrap()).unwrap();
        assert_eq!(rebuilt.last_version(), 2);
        assert_eq!(rebuilt.last_hash(), chain.last_hash());
    }

    #[test]
    fn identity_is_created_once_and_kept() {
        let store = Store::in_memory().unwrap();
        let a = store.identity().unwrap();
        let b = store.identity().unwrap();
        assert_eq!(a.key.to_bytes(), b.key.to_bytes());
        assert_eq!(a.cluster, b.cluster);
    }

    #[test]
    fn settings_refuse_bad_names_and_values() {
        let store = Store::in_memory().unwrap();
        store
            .set_setting("fingerprint-enforcement", "warn")
            .unwrap();
        assert_eq!(
            store.setting("fingerprint-enforcement").unwrap().as_deref(),
            Some("warn")
        );
        assert!(store.set_setting("bad name", "x").is_err());
        assert!(store.set_setting("ok", "a\u{1}b").is_err());
        assert!(
            store
                .set_setting("ok", &"x".repeat(MAX_SETTING + 1))
                .is_err()
        );
        assert_eq!(store.setting("ok").unwrap(), None);
    }

    #[test]
    fn a_file_that_is_not_a_store_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STORE_FILE);
        fs::write(&path, b"this is not a redb file at all, just some text").unwrap();
        let before = fs::read(&path).unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert_eq!(fs::read(&path).unwrap(), before);
    }

    #[test]
    fn the_store_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("data")).unwrap();
        drop(store);
        let mode = fs::metadata(dir.path().join("data").join(STORE_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
