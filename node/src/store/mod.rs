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
//! | `managed_view` | namespace, table, key | version, JSON document (see `managed`) | mastered (view) |
//! | `settings` | name | value | local |
//! | `peers` | peer id | addresses, last seen | local |
//! | `change_log` | cursor | a row or record change, see [`changes`] | local |
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
use meshward_crdt::{
    ClusterId, Replica, ReplicaConfig, SegmentKey, SignedHead, StoredSegment, TableId, WriterId,
};
use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

mod changes;
mod managed;
mod mastered;
mod read_only;
mod reset;
mod shared;

pub use changes::{Change, ChangeReader, DEFAULT_KEEP_CHANGES, MAX_CHANGE_PAGE, Marks, Page};
pub use managed::ManagedRow;
pub use mastered::HighWater;
pub use reset::Next;
pub use shared::{EventFilter, EventRecord};

/// File name of the store inside the data directory.
pub const STORE_FILE: &str = "meshward.redb";
/// Version of the table layout. A store of an earlier version is migrated when it is first
/// opened for writing ([`MIGRATIONS`]); one of a later version is refused, naming both.
///
/// - 1: the first layout.
/// - 2: the change log of the watch stream (`change_log`).
pub const SCHEMA_VERSION: u32 = 2;

/// The migration steps, in order: `MIGRATIONS[i]` takes a store of schema `i + 1` to `i + 2`.
/// All steps from a store's version run in one write transaction with the new version
/// written last, so a crash leaves the store as it was or fully migrated.
const MIGRATIONS: [Migration; 1] = [migrate_1_to_2];

/// One migration step, in the opening write transaction.
type Migration = fn(&redb::WriteTransaction) -> Result<(), StoreError>;

/// Schema 2 adds the change log; earlier changes are not in it (a watcher of a migrated store
/// starts from a snapshot or from the cursor after the migration).
fn migrate_1_to_2(tx: &redb::WriteTransaction) -> Result<(), StoreError> {
    tx.open_table(changes::CHANGE_LOG)?;
    Ok(())
}

/// Why a store file or backend did not open: another process holds it, it cannot be read, or
/// it is not a meshward store.
fn open_error(path: &Path, e: redb::DatabaseError) -> StoreError {
    match e {
        redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Busy {
            path: path.to_path_buf(),
        },
        redb::DatabaseError::Storage(redb::StorageError::Io(e))
            if e.kind() != std::io::ErrorKind::InvalidData =>
        {
            StoreError::Open {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }
        }
        e => StoreError::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        },
    }
}

/// The schema version a store's `meta` table records (`None`: a new store).
fn schema_of(bytes: &[u8]) -> Result<u32, StoreError> {
    let bytes: [u8; 4] = bytes.try_into().map_err(|_| StoreError::Corrupt {
        path: PathBuf::new(),
        reason: "its schema version does not decode".into(),
    })?;
    Ok(u32::from_be_bytes(bytes))
}

/// Refuses a store of a later schema than this version reads (or of none at all: 0).
fn check_not_newer(version: u32) -> Result<(), StoreError> {
    if version == 0 {
        return Err(StoreError::Corrupt {
            path: PathBuf::new(),
            reason: "it records schema version 0: not a meshward store".into(),
        });
    }
    if version > SCHEMA_VERSION {
        return Err(StoreError::Corrupt {
            path: PathBuf::new(),
            reason: format!(
                "it is of schema version {version}, written by a newer meshward; this one reads \
                 schema versions up to {SCHEMA_VERSION}: run the newer version"
            ),
        });
    }
    Ok(())
}

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
    /// A mastered checkpoint whose digest is not the digest of this node's folded state at the
    /// version it covers: the leader folded the chain otherwise. Nothing was written.
    #[error(
        "mastered checkpoint at version {version} does not match this node's managed view; \
         the leader and this node fold the chain differently: upgrade both to the same version"
    )]
    CheckpointMismatch {
        /// The checkpoint record's version.
        version: u64,
    },
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
    /// How many entries the change log keeps ([`changes`]).
    keep_changes: std::num::NonZeroU64,
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
        let db = crate::disk::open_database_watched(&path, watch.clone())
            .map_err(|e| open_error(&path, e))?;
        Store::from_database(db, watch, &path)
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
        let db = crate::disk::open_backend_watched(backend, dir, watch.clone())
            .map_err(|e| open_error(&path, e))?;
        Store::from_database(db, watch, &path)
    }

    /// An opened database as a store: its schema made or migrated (an error names `path`).
    fn from_database(
        db: Database,
        watch: crate::disk::DiskWatch,
        path: &Path,
    ) -> Result<Self, StoreError> {
        let store = Store {
            db: read_only::Db::Write(std::sync::Arc::new(db)),
            watch,
            keep_changes: DEFAULT_KEEP_CHANGES,
        };
        store.init_schema().map_err(|e| match e {
            StoreError::Corrupt { reason, .. } => StoreError::Corrupt {
                path: path.to_path_buf(),
                reason,
            },
            other => other,
        })?;
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
            keep_changes: DEFAULT_KEEP_CHANGES,
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
            let version = meta
                .get("schema")?
                .map(|v| schema_of(v.value()))
                .transpose()?;
            if let Some(version) = version {
                check_not_newer(version)?;
                for step in version..SCHEMA_VERSION {
                    MIGRATIONS[step as usize - 1](&tx)?;
                }
                if version < SCHEMA_VERSION {
                    tracing::info!(from = version, to = SCHEMA_VERSION, "store migrated");
                }
            }
            meta.insert("schema", SCHEMA_VERSION.to_be_bytes().as_slice())?;
        }
        create_tables(&tx)?;
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

/// Creates the tables every reader expects (those missing; existing ones are untouched).
fn create_tables(tx: &redb::WriteTransaction) -> Result<(), StoreError> {
    for def in [HEADS, SNAPSHOTS, CHANGES, EVENTS_VIEW, MAP_VIEW, SUPERSEDED] {
        tx.open_table(def)?;
    }
    tx.open_table(MASTERED)?;
    tx.open_table(SETTINGS)?;
    tx.open_table(PEERS)?;
    tx.open_table(changes::CHANGE_LOG)?;
    Ok(())
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

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Plain data structs always encode into a Vec.
    postcard::to_allocvec(value).unwrap_or_default()
}

fn table_byte(table: TableId) -> u8 {
    match table {
        TableId::Events => 0,
        TableId::Fingerprints => 1,
        TableId::Exceptions => 2,
        TableId::Rotations => 3,
        TableId::AuditHeads => 4,
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
mod tests;
