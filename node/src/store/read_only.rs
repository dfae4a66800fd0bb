//! Opening the store read-only, for commands that only read.
//!
//! A read-only store is redb's [`ReadOnlyDatabase`]: it cannot change the file, and several
//! processes may hold one at once (a read-write [`Database`] still needs the file to itself,
//! so a daemon and a reading command do not meet: commands go to a running daemon). Every
//! write method of a read-only [`Store`] fails with [`StoreError::ReadOnly`] and changes
//! nothing.
//!
//! One exception: a store that was not shut down cleanly (its daemon was killed) needs redb's
//! repair before it can be read, which only a read-write open does; [`Store::open_read_only`]
//! then opens it read-write once, which repairs it (no data changes), and opens it again
//! read-only.

use std::path::Path;

use redb::{
    Database, DatabaseError, ReadOnlyDatabase, ReadTransaction, ReadableDatabase, WriteTransaction,
};

use super::{META, SCHEMA_VERSION, STORE_FILE, Store, StoreError};

/// The database behind a [`Store`]: writable, or opened read-only.
pub(super) enum Db {
    /// Opened read-write (also the in-memory store); shared with a backup's reader thread.
    Write(std::sync::Arc<Database>),
    /// Opened read-only.
    Read(ReadOnlyDatabase),
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Db::Write(db) => f.debug_tuple("Write").field(db).finish(),
            Db::Read(_) => f.write_str("Read(..)"),
        }
    }
}

impl Store {
    /// Opens the existing store in `dir` read-only (see the module docs). A missing store is
    /// an error ([`StoreError::Open`]), as is a store another process holds read-write
    /// ([`StoreError::Busy`]) or one of another schema ([`StoreError::Corrupt`]).
    pub fn open_read_only(dir: &Path) -> Result<Store, StoreError> {
        let path = dir.join(STORE_FILE);
        if !path.is_file() {
            return Err(StoreError::Open {
                path,
                reason: "there is no store here yet".into(),
            });
        }
        let db = match redb::Builder::new().open_read_only(&path) {
            Err(DatabaseError::RepairAborted) => {
                // Not shut down cleanly: a read-write open repairs it.
                drop(Store::open(dir)?);
                redb::Builder::new().open_read_only(&path)
            }
            other => other,
        };
        let db = match db {
            Ok(db) => db,
            Err(DatabaseError::DatabaseAlreadyOpen) => return Err(StoreError::Busy { path }),
            Err(e) => {
                return Err(StoreError::Corrupt {
                    path,
                    reason: e.to_string(),
                });
            }
        };
        let store = Store {
            db: Db::Read(db),
            watch: crate::disk::DiskWatch::default(),
        };
        let schema = store.begin_read()?.open_table(META).ok().and_then(|meta| {
            meta.get("schema")
                .ok()
                .flatten()
                .map(|v| v.value().to_vec())
        });
        if schema.as_deref() != Some(SCHEMA_VERSION.to_be_bytes().as_slice()) {
            return Err(StoreError::Corrupt {
                path,
                reason: format!("not a meshward store of schema version {SCHEMA_VERSION}"),
            });
        }
        Ok(store)
    }

    /// Whether the store was opened read-only.
    pub fn is_read_only(&self) -> bool {
        matches!(self.db, Db::Read(_))
    }

    /// The database, for modules that keep their own tables and write them (audit). A
    /// read-only store has none: [`StoreError::ReadOnly`].
    pub fn db(&self) -> Result<&Database, StoreError> {
        match &self.db {
            Db::Write(db) => Ok(db.as_ref()),
            Db::Read(_) => Err(StoreError::ReadOnly),
        }
    }

    /// The read-write database, shared: a reader (a backup streaming from one read
    /// transaction) can go on in another thread while the owner writes.
    pub fn shared_db(&self) -> Result<std::sync::Arc<Database>, StoreError> {
        match &self.db {
            Db::Write(db) => Ok(db.clone()),
            Db::Read(_) => Err(StoreError::ReadOnly),
        }
    }

    /// The database to read from, for modules that keep their own tables (audit, backup).
    pub fn reader(&self) -> &dyn ReadableDatabase {
        match &self.db {
            Db::Write(db) => db.as_ref(),
            Db::Read(db) => db,
        }
    }

    pub(super) fn begin_read(&self) -> Result<ReadTransaction, StoreError> {
        Ok(self.reader().begin_read()?)
    }

    pub(super) fn begin_write(&self) -> Result<WriteTransaction, StoreError> {
        Ok(self.db()?.begin_write()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_only_store_reads_and_refuses_every_write_leaving_the_file_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let identity = store.identity().unwrap();
        store.set_setting("colour", "blue").unwrap();
        drop(store);
        let file = dir.path().join(STORE_FILE);
        let before = std::fs::read(&file).unwrap();
        let store = Store::open_read_only(dir.path()).unwrap();
        assert!(store.is_read_only());
        assert_eq!(store.identity().unwrap().writer(), identity.writer());
        assert_eq!(store.setting("colour").unwrap().as_deref(), Some("blue"));
        assert!(matches!(
            store.set_setting("colour", "red"),
            Err(StoreError::ReadOnly)
        ));
        assert!(matches!(store.db(), Err(StoreError::ReadOnly)));
        assert!(crate::audit::AuditLog::verify(store.reader()).is_ok());
        // Two readers at once; no writer meanwhile.
        let other = Store::open_read_only(dir.path()).unwrap();
        assert!(matches!(
            Store::open(dir.path()),
            Err(StoreError::Busy { .. })
        ));
        drop((store, other));
        assert_eq!(std::fs::read(&file).unwrap(), before);
    }

    #[test]
    fn a_missing_store_or_another_file_is_refused_read_only() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            Store::open_read_only(dir.path()),
            Err(StoreError::Open { .. })
        ));
        assert!(!dir.path().join(STORE_FILE).exists());
        std::fs::write(dir.path().join(STORE_FILE), b"not a store").unwrap();
        assert!(matches!(
            Store::open_read_only(dir.path()),
            Err(StoreError::Corrupt { .. })
        ));
    }
}
