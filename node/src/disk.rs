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
//!
//! # Files a node is told to write
//!
//! Every file a node creates at a path it was given (`user cert --out`, `bundle create --out`,
//! `backup --out`, the MEK file of `init`, `join`, `restore` and `unseal`, a restore's new store,
//! the HA command log, the store file itself) is created through [`create_new`]:
//! `O_CREAT|O_EXCL|O_NOFOLLOW`, with its final mode at creation. So an existing file is never
//! overwritten or truncated, and a symbolic link at that path (dangling or not) is never
//! followed: either is refused with an error naming the file ([`exists_error`]); no command
//! has a `--force` that overrides this (`restore --force` replaces the store by renaming a new
//! file over it, which replaces a link rather than following it). A file written aside and
//! moved into place when complete (a backup) is moved with [`publish`], which never replaces
//! what appeared at the target meanwhile. Directories named by the operator are followed as
//! given: only the last component, the file, is never a link.
//!
//! A node's data directory holds its key and MEK: [`private_data_dir`] creates it 0700, and
//! tightens one that exists with wider permissions (saying so on stderr).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write as _};
use std::ops::Bound;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
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

/// Reads a file of at most `max` bytes; a larger one is refused, naming the file.
pub fn read_bounded(path: &Path, max: usize) -> anyhow::Result<Vec<u8>> {
    use anyhow::Context as _;
    match read_at_most(path, max as u64).with_context(|| format!("reading {}", path.display()))? {
        Some(bytes) => Ok(bytes),
        None => anyhow::bail!("{} is over the limit of {max} bytes", path.display()),
    }
}

/// Creates the file `path` for writing with `mode` (e.g. `0o600`), refusing an existing file
/// and a symbolic link, dangling or not (`O_CREAT|O_EXCL|O_NOFOLLOW`): see the module docs.
pub fn create_new(path: &Path, mode: u32) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(mode)
        .open(path)
        .map_err(|e| named(path, e))
}

/// Creates `path` as [`create_new`] does, writes `bytes` and syncs them. If the write fails the
/// new file is removed: either the whole file is there or none.
pub fn write_new(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let mut file = create_new(path, mode)?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    if let Err(e) = written {
        drop(file);
        let _ = std::fs::remove_file(path);
        return Err(io::Error::new(
            e.kind(),
            format!("writing {}: {e}", path.display()),
        ));
    }
    Ok(())
}

/// Whether the regular file at `path` holds exactly `bytes`; a link is not followed (an
/// error). Reads at most one byte more than `bytes`.
pub fn holds_exactly(path: &Path, bytes: &[u8]) -> io::Result<bool> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| named(path, e))?;
    if !file.metadata()?.is_file() {
        return Ok(false);
    }
    let mut held = Vec::with_capacity(bytes.len() + 1);
    file.take(bytes.len() as u64 + 1).read_to_end(&mut held)?;
    Ok(held == bytes)
}

/// Opens `path` to append to it, creating it with mode 0600; refuses a symbolic link, and
/// tightens an existing file readable by others to 0600.
pub fn open_append_private(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(path)
        .map_err(|e| named(path, e))?;
    let mode = file.metadata()?.permissions().mode();
    if mode & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(file)
}

/// Moves the complete file `tmp` to `target`, which must not exist (nor be a link): a hard link
/// then the removal of `tmp`, so a target that appeared meanwhile is refused, not replaced. On
/// a filesystem without hard links, a rename once the target is seen absent.
pub fn publish(tmp: &Path, target: &Path) -> io::Result<()> {
    match std::fs::hard_link(tmp, target) {
        Ok(()) => std::fs::remove_file(tmp),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(exists_error(target)),
        Err(_) if std::fs::symlink_metadata(target).is_ok() => Err(exists_error(target)),
        Err(_) => std::fs::rename(tmp, target),
    }
}

/// The error for a file a node was told to create that exists already (or is a link).
pub fn exists_error(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!(
            "{} exists (a file or a link): meshward never overwrites or follows one; remove it or \
             choose another name",
            path.display()
        ),
    )
}

/// `e`, with the file named; an existing file or a link becomes [`exists_error`].
fn named(path: &Path, e: io::Error) -> io::Error {
    // O_NOFOLLOW on a link that O_EXCL did not catch (appending) is ELOOP.
    if e.kind() == io::ErrorKind::AlreadyExists || e.raw_os_error() == Some(libc::ELOOP) {
        return exists_error(path);
    }
    io::Error::new(e.kind(), format!("creating {}: {e}", path.display()))
}

/// Creates the data directory `dir` (and its parents) with mode 0700, or tightens an existing
/// one whose mode lets others in to 0700, saying so on stderr. Returns the old mode when it
/// tightened one.
pub fn private_data_dir(dir: &Path) -> io::Result<Option<u32>> {
    use std::os::unix::fs::DirBuilderExt as _;
    let Ok(meta) = std::fs::metadata(dir) else {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        return Ok(None);
    };
    let mode = meta.permissions().mode() & 0o7777;
    if !meta.is_dir() || mode & 0o077 == 0 {
        return Ok(None);
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "{} has mode {mode:04o} and could not be made 0700: {e}; a data directory holds \
                 the node key and MEK: fix its mode",
                dir.display()
            ),
        )
    })?;
    eprintln!(
        "meshward: tightened the data directory {} from mode {mode:04o} to 0700 (it holds the \
         node key and MEK)",
        dir.display()
    );
    tracing::warn!(dir = %dir.display(), old_mode = %format!("{mode:04o}"), "data directory tightened to 0700");
    Ok(Some(mode))
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

/// redb's page cache over a backend that is memory already (the simulator's disks): small, or
/// a thousand simulated stores each cache what they hold a second time.
const MEMORY_BACKEND_CACHE: usize = 16 * 1024;

/// Opens (creating if empty) a database over a storage `backend` that is memory (the
/// simulator's disk), with the same handling of a full disk as a file in `dir`: the error
/// names `dir`, and `watch` learns of it. Its page cache is small ([`MEMORY_BACKEND_CACHE`]).
pub fn open_backend_watched(
    backend: impl StorageBackend,
    dir: &Path,
    watch: DiskWatch,
) -> Result<Database, DatabaseError> {
    Database::builder()
        .set_cache_size(MEMORY_BACKEND_CACHE)
        .create_with_backend(DataFile {
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
    fn new_files_never_replace_or_follow_what_is_there() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("elsewhere");
        std::fs::write(&elsewhere, b"precious").unwrap();
        let link = dir.path().join("link");
        symlink(&elsewhere, &link).unwrap();
        let dangling = dir.path().join("dangling");
        let target = dir.path().join("created-through-the-link");
        symlink(&target, &dangling).unwrap();
        for path in [&link, &dangling, &elsewhere] {
            let err = write_new(path, b"new", 0o600).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "{err}");
            assert!(
                err.to_string().contains(&path.display().to_string()),
                "{err}"
            );
        }
        for path in [&link, &dangling] {
            let err = open_append_private(path).map(|_| ()).unwrap_err();
            assert!(err.to_string().contains("link"), "{err}");
        }
        assert_eq!(std::fs::read(&elsewhere).unwrap(), b"precious");
        assert!(!target.exists(), "a dangling link was created through");
        let fresh = dir.path().join("fresh");
        write_new(&fresh, b"new", 0o600).unwrap();
        assert_eq!(std::fs::read(&fresh).unwrap(), b"new");
        let mode = std::fs::metadata(&fresh).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn publishing_never_replaces_the_target() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("tmp");
        std::fs::write(&tmp, b"archive").unwrap();
        let taken = dir.path().join("taken");
        std::fs::write(&taken, b"precious").unwrap();
        assert_eq!(
            publish(&tmp, &taken).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        let dangling = dir.path().join("dangling");
        symlink(dir.path().join("nowhere"), &dangling).unwrap();
        assert!(publish(&tmp, &dangling).is_err());
        assert!(!dir.path().join("nowhere").exists());
        assert_eq!(std::fs::read(&taken).unwrap(), b"precious");
        let out = dir.path().join("out");
        publish(&tmp, &out).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"archive");
        assert!(!tmp.exists());
    }

    #[test]
    fn an_appended_file_is_private_even_if_it_was_not() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        std::fs::write(&log, b"old\n").unwrap();
        std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o644)).unwrap();
        open_append_private(&log)
            .unwrap()
            .write_all(b"new\n")
            .unwrap();
        assert_eq!(std::fs::read(&log).unwrap(), b"old\nnew\n");
        let mode = std::fs::metadata(&log).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_data_directory_open_to_others_is_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("a/b");
        assert_eq!(private_data_dir(&data).unwrap(), None);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&data), 0o700);
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(private_data_dir(&data).unwrap(), Some(0o755));
        assert_eq!(mode(&data), 0o700);
        assert_eq!(private_data_dir(&data).unwrap(), None);
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
