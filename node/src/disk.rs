//! Files on disk: redb's file backend, with a full disk named clearly, and bounded reads of
//! the small files a node is given (MEK, licence, bundles, CA chains, config).
//!
//! redb reports a full disk as its raw I/O error ("No space left on device"), wrapped in
//! whichever operation hit it. Every redb file the node writes (the store, a restore's new
//! store) is opened through [`open_database`], whose backend turns that error into one that
//! names the directory and says what happened: the write was refused and, as redb rolls the
//! transaction back, nothing was changed. [`crate::store::StoreError::DiskFull`] carries it.
//!
//! After a refused write redb refuses every later write on that [`Database`] (it cannot know
//! what reached the file) until it is opened again. A [`DiskWatch`] given to
//! [`open_database_watched`] remembers that a write was refused for a full disk, so a
//! long-lived owner (the daemon) knows to reopen the store, whichever code path wrote.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use redb::backends::FileBackend;
use redb::{BackendError, Database, DatabaseError, StorageBackend};

/// Whether a write of a database opened with [`open_database_watched`] was refused because
/// the disk was full. Clones share the flag.
#[derive(Clone, Debug, Default)]
pub struct DiskWatch(Arc<AtomicBool>);

impl DiskWatch {
    /// Whether a write was refused for a full disk since the database was opened.
    pub fn refused(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn saw(&self, e: &io::Error) {
        if e.kind() == io::ErrorKind::StorageFull {
            self.0.store(true, Ordering::Release);
        }
    }
}

/// Reads `path` if it holds at most `max` bytes; `Ok(None)` if it holds more. The read goes
/// through [`Read::take`], so a file that grows while read, a FIFO or a device (whose size
/// reads as 0) cannot make it read more than `max + 1` bytes. A regular file is read into one
/// allocation of its size, so reading a secret leaves no partial copy in freed memory.
pub fn read_at_most(path: &Path, max: u64) -> io::Result<Option<Vec<u8>>> {
    let file = File::open(path)?;
    let size = file.metadata()?.len().min(max);
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0).saturating_add(1));
    file.take(max.saturating_add(1)).read_to_end(&mut bytes)?;
    Ok((bytes.len() as u64 <= max).then_some(bytes))
}

/// A redb backend (the file backend for a file in `dir`, or a simulated disk); a full disk
/// becomes [`disk_full`]'s error.
#[derive(Debug)]
struct DataFile<B = FileBackend> {
    inner: B,
    dir: PathBuf,
    watch: DiskWatch,
}

/// Opens (creating if missing) the redb file at `path` with a backend that reports a full
/// disk clearly.
pub fn open_database(path: &Path) -> Result<Database, DatabaseError> {
    open_database_watched(path, DiskWatch::default())
}

/// Like [`open_database`]; `watch` learns when a write is refused for a full disk.
pub fn open_database_watched(path: &Path, watch: DiskWatch) -> Result<Database, DatabaseError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| disk_full(&dir, e))?;
    let inner = FileBackend::new(file)?;
    Database::builder().create_with_backend(DataFile { inner, dir, watch })
}

/// Opens (creating if empty) a database over any storage `backend` (the simulator's disk),
/// with the same handling of a full disk as a file in `dir`: the error names `dir`, and
/// `watch` learns of it.
pub fn open_backend_watched(
    backend: impl StorageBackend,
    dir: &Path,
    watch: DiskWatch,
) -> Result<Database, DatabaseError> {
    Database::builder().create_with_backend(DataFile {
        inner: backend,
        dir: dir.to_path_buf(),
        watch,
    })
}

/// The error of a write to the store in `dir` refused because its disk is full.
pub fn full_error(dir: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::StorageFull,
        format!(
            "disk full: {} has no space left; the write was refused and nothing was changed \
             (free some space and try again)",
            dir.display()
        ),
    )
}

/// `e` unchanged, unless it says the disk is full (ENOSPC): then [`full_error`].
fn disk_full(dir: &Path, e: io::Error) -> io::Error {
    if e.kind() != io::ErrorKind::StorageFull {
        return e;
    }
    full_error(dir)
}

impl<B> DataFile<B> {
    /// A failed write, renamed if the disk is full and noted in the watch.
    fn refused(&self, e: io::Error) -> io::Error {
        self.watch.saw(&e);
        disk_full(&self.dir, e)
    }
}

impl<B: StorageBackend> StorageBackend for DataFile<B> {
    fn len(&self) -> Result<u64, io::Error> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.inner.set_len(len).map_err(|e| self.refused(e))
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        self.inner.sync_data().map_err(|e| self.refused(e))
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.inner.write(offset, data).map_err(|e| self.refused(e))
    }

    fn close(&self) -> Result<(), io::Error> {
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bounded_read_stops_after_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, [7u8; 100]).unwrap();
        assert_eq!(read_at_most(&path, 100).unwrap(), Some(vec![7u8; 100]));
        assert_eq!(read_at_most(&path, 99).unwrap(), None);
        // A device whose size reads as 0 and that never ends.
        assert_eq!(read_at_most(Path::new("/dev/zero"), 4096).unwrap(), None);
        let missing = read_at_most(&dir.path().join("missing"), 10).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn only_a_full_disk_is_renamed() {
        let dir = Path::new("/data/node");
        let full = disk_full(dir, io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(full.kind(), io::ErrorKind::StorageFull);
        let text = full.to_string();
        assert!(
            text.starts_with("disk full: /data/node has no space left"),
            "{text}"
        );
        let other = disk_full(dir, io::Error::from_raw_os_error(libc::EIO));
        assert_eq!(other.raw_os_error(), Some(libc::EIO));
    }

    #[test]
    fn a_second_open_of_the_same_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.redb");
        let db = open_database(&path).unwrap();
        assert!(matches!(
            open_database(&path),
            Err(DatabaseError::DatabaseAlreadyOpen)
        ));
        drop(db);
        open_database(&path).unwrap();
    }
}
