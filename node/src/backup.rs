//! Backups: the node's whole store, as one consistent snapshot, sealed under a key derived from
//! the MEK.
//!
//! # Archive format
//! A plaintext header ([`HEADER_LEN`] bytes): the magic `MWBACKUP`, a format byte
//! ([`FORMAT`]), a random 16-byte archive id, the 16-byte cluster id and the chunk size (u32,
//! big-endian). Then chunks, each `last` (1 byte, 0 or 1), the length of the sealed chunk (u32,
//! big-endian) and the chunk sealed with [`Mek::seal`] under the purpose `backup`. A chunk's
//! associated data is the header followed by its index (u64, big-endian) and its `last` byte,
//! so a chunk moved to another position or archive, a truncated archive (no `last` chunk), a
//! chunk claiming to be last too early, and any altered byte are all refused. Bytes after the
//! last chunk are refused too. Every chunk is authenticated before its plaintext is used.
//!
//! # Snapshot format (the sealed plaintext)
//! The magic `MWSTORE1`, then for each redb table a table entry (tag 1, name length u16 and
//! name, key type and value type bytes) followed by its rows (tag 2, key length u32 and key,
//! value length u32 and value), and an end entry (tag 0, tables u32, rows u64). It is written
//! from one redb read transaction, so it is consistent even while a daemon writes. Tables are
//! copied generically (every table the file holds, whoever defined it) as long as their key
//! and value types are among [`ColumnType`]; a table of another type stops the backup with an
//! error rather than being left out.

use std::io::{self, Read, Write};

use rand::RngCore;
use redb::{Database, Key, ReadableDatabase, ReadableTable, TableDefinition, TableHandle, Value};
use zeroize::Zeroizing;

use crate::mek::{Mek, SEAL_OVERHEAD};
use crate::store::StoreError;

/// First bytes of an archive.
pub const MAGIC: &[u8; 8] = b"MWBACKUP";
/// Archive format version.
pub const FORMAT: u8 = 1;
/// Plaintext bytes per sealed chunk.
pub const CHUNK: usize = 1 << 20;
/// Largest chunk size an archive may declare.
pub const MAX_CHUNK: usize = 16 << 20;
/// Bytes of the plaintext header.
pub const HEADER_LEN: usize = 8 + 1 + 16 + 16 + 4;
/// Largest key or value a snapshot may hold.
pub const MAX_ITEM: usize = 256 << 20;
/// Longest table name.
pub const MAX_TABLE_NAME: usize = 1024;

/// HKDF purpose of the backup key.
const PURPOSE: &[u8] = b"backup";
const SNAPSHOT_MAGIC: &[u8; 8] = b"MWSTORE1";
const TAG_END: u8 = 0;
const TAG_TABLE: u8 = 1;
const TAG_ROW: u8 = 2;

/// Why a backup could not be written or opened. A restore that fails leaves its target as it
/// was.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Reading or writing failed (including a full disk).
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The file is not a meshward backup of a known format.
    #[error("not a meshward backup: {0}")]
    NotAnArchive(String),
    /// A chunk did not open: the wrong MEK, or the archive was altered or reordered.
    #[error(
        "backup chunk {index} could not be opened: wrong MEK, or the archive was altered; nothing was restored"
    )]
    Sealed {
        /// The chunk's index.
        index: u64,
    },
    /// The archive ends before its last chunk.
    #[error("the backup is truncated (it ends after chunk {chunks}); nothing was restored")]
    Truncated {
        /// Chunks read.
        chunks: u64,
    },
    /// Bytes follow the last chunk.
    #[error("the backup has data after its last chunk; nothing was restored")]
    Trailing,
    /// The authenticated snapshot is not valid (a bug in the writer, never an attack).
    #[error("the backup's snapshot is malformed: {0}")]
    Snapshot(String),
    /// redb refused, or the disk is full ([`StoreError::DiskFull`]).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The types a table's keys and values may have to be backed up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnType {
    /// `&str`
    Str = 1,
    /// `&[u8]`
    Bytes = 2,
    /// `u64`
    U64 = 3,
}

/// What a snapshot held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotStats {
    /// Tables copied.
    pub tables: u32,
    /// Rows copied.
    pub rows: u64,
    /// Plaintext bytes.
    pub bytes: u64,
}

/// The plaintext header of an archive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Random, fresh for each archive.
    pub archive_id: [u8; 16],
    /// The cluster of the node backed up.
    pub cluster: [u8; 16],
    /// Plaintext bytes per chunk.
    pub chunk_size: u32,
}

/// Writes an archive: plaintext in, sealed chunks out. Call [`ArchiveWriter::finish`] at the
/// end, or the archive has no last chunk and will be refused as truncated.
pub struct ArchiveWriter<'k, W: Write> {
    inner: W,
    mek: &'k Mek,
    header: [u8; HEADER_LEN],
    buf: Vec<u8>,
    index: u64,
}

/// Reads an archive: every chunk is opened (authenticated) before its bytes are returned;
/// reading past the end checks that the last chunk was seen and nothing follows it.
pub struct ArchiveReader<'k, R: Read> {
    inner: R,
    mek: &'k Mek,
    header: Header,
    header_bytes: [u8; HEADER_LEN],
    sealed: Vec<u8>,
    plain: Zeroizing<Vec<u8>>,
    pos: usize,
    index: u64,
    done: bool,
}

impl<W: Write> std::fmt::Debug for ArchiveWriter<'_, W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveWriter")
            .field("chunks", &self.index)
            .finish_non_exhaustive()
    }
}

impl<R: Read> std::fmt::Debug for ArchiveReader<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveReader")
            .field("header", &self.header)
            .field("chunks", &self.index)
            .finish_non_exhaustive()
    }
}

impl Header {
    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[..8].copy_from_slice(MAGIC);
        out[8] = FORMAT;
        out[9..25].copy_from_slice(&self.archive_id);
        out[25..41].copy_from_slice(&self.cluster);
        out[41..45].copy_from_slice(&self.chunk_size.to_be_bytes());
        out
    }

    /// Decodes a header, refusing an unknown magic, format or chunk size.
    pub fn decode(bytes: &[u8; HEADER_LEN]) -> Result<Header, BackupError> {
        if &bytes[..8] != MAGIC {
            return Err(BackupError::NotAnArchive("wrong magic bytes".into()));
        }
        if bytes[8] != FORMAT {
            return Err(BackupError::NotAnArchive(format!(
                "format {} (this build reads format {FORMAT})",
                bytes[8]
            )));
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&bytes[9..25]);
        let mut cluster = [0u8; 16];
        cluster.copy_from_slice(&bytes[25..41]);
        let chunk_size = u32::from_be_bytes([bytes[41], bytes[42], bytes[43], bytes[44]]);
        if chunk_size == 0 || chunk_size as usize > MAX_CHUNK {
            return Err(BackupError::NotAnArchive(format!(
                "chunk size {chunk_size} out of range"
            )));
        }
        Ok(Header {
            archive_id: id,
            cluster,
            chunk_size,
        })
    }
}

fn chunk_aad(header: &[u8; HEADER_LEN], index: u64, last: bool) -> Vec<u8> {
    let mut aad = Vec::with_capacity(HEADER_LEN + 9);
    aad.extend_from_slice(header);
    aad.extend_from_slice(&index.to_be_bytes());
    aad.push(u8::from(last));
    aad
}

impl<'k, W: Write> ArchiveWriter<'k, W> {
    /// Starts an archive of the given cluster's store: writes the header.
    pub fn new(mut inner: W, mek: &'k Mek, cluster: [u8; 16]) -> io::Result<Self> {
        let mut archive_id = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut archive_id);
        let header = Header {
            archive_id,
            cluster,
            chunk_size: CHUNK as u32,
        }
        .encode();
        inner.write_all(&header)?;
        Ok(ArchiveWriter {
            inner,
            mek,
            header,
            buf: Vec::with_capacity(CHUNK),
            index: 0,
        })
    }

    fn seal_chunk(&mut self, last: bool) -> io::Result<()> {
        let aad = chunk_aad(&self.header, self.index, last);
        let sealed = self.mek.seal(PURPOSE, &aad, &self.buf);
        self.inner.write_all(&[u8::from(last)])?;
        self.inner.write_all(&(sealed.len() as u32).to_be_bytes())?;
        self.inner.write_all(&sealed)?;
        self.buf.clear();
        self.index += 1;
        Ok(())
    }

    /// Seals what is left as the last chunk, flushes, and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.seal_chunk(true)?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for ArchiveWriter<'_, W> {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let n = data.len();
        while !data.is_empty() {
            // A full buffer is sealed only once more data comes, so that the last chunk is
            // sealed as last by `finish`.
            if self.buf.len() == CHUNK {
                self.seal_chunk(false)?;
            }
            let take = (CHUNK - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<'k, R: Read> ArchiveReader<'k, R> {
    /// Reads and checks the header. The MEK is checked with the first chunk.
    pub fn new(mut inner: R, mek: &'k Mek) -> Result<Self, BackupError> {
        let mut header_bytes = [0u8; HEADER_LEN];
        read_full(&mut inner, &mut header_bytes).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => {
                BackupError::NotAnArchive("shorter than a backup header".into())
            }
            _ => BackupError::Io(e),
        })?;
        let header = Header::decode(&header_bytes)?;
        Ok(ArchiveReader {
            inner,
            mek,
            header,
            header_bytes,
            sealed: Vec::new(),
            plain: Zeroizing::new(Vec::new()),
            pos: 0,
            index: 0,
            done: false,
        })
    }

    /// Reads and opens the next chunk; `false` at the end of a complete archive.
    fn next_chunk(&mut self) -> Result<bool, BackupError> {
        if self.done {
            return Ok(false);
        }
        let truncated = BackupError::Truncated { chunks: self.index };
        let mut frame = [0u8; 5];
        match read_full(&mut self.inner, &mut frame) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(truncated),
            Err(e) => return Err(e.into()),
        }
        let last = match frame[0] {
            0 => false,
            1 => true,
            _ => return Err(BackupError::Sealed { index: self.index }),
        };
        let len = u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]) as usize;
        if len < SEAL_OVERHEAD || len > self.header.chunk_size as usize + SEAL_OVERHEAD {
            return Err(BackupError::Sealed { index: self.index });
        }
        self.sealed.resize(len, 0);
        match read_full(&mut self.inner, &mut self.sealed) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(truncated),
            Err(e) => return Err(e.into()),
        }
        let aad = chunk_aad(&self.header_bytes, self.index, last);
        self.plain = self
            .mek
            .open(PURPOSE, &aad, &self.sealed)
            .map_err(|_| BackupError::Sealed { index: self.index })?;
        self.pos = 0;
        self.index += 1;
        if last {
            self.done = true;
            let mut probe = [0u8; 1];
            if self.inner.read(&mut probe)? != 0 {
                return Err(BackupError::Trailing);
            }
        }
        Ok(true)
    }
}

impl<R: Read> Read for ArchiveReader<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.plain.len() {
            if !self.next_chunk().map_err(io::Error::other)? {
                return Ok(0);
            }
        }
        let n = (self.plain.len() - self.pos).min(out.len());
        out[..n].copy_from_slice(&self.plain[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Unwraps the [`BackupError`] an [`ArchiveReader`] returned through `io::Error`.
pub fn archive_error(e: io::Error) -> BackupError {
    if e.get_ref().is_some_and(|inner| inner.is::<BackupError>()) {
        // Checked just above.
        match e.into_inner().map(|inner| inner.downcast::<BackupError>()) {
            Some(Ok(b)) => *b,
            Some(Err(other)) => BackupError::Io(io::Error::other(other)),
            None => BackupError::Snapshot("lost error".into()),
        }
    } else if e.kind() == io::ErrorKind::UnexpectedEof {
        BackupError::Snapshot("it ends early".into())
    } else {
        BackupError::Io(e)
    }
}

/// Writes a consistent snapshot of every table of `db` (one read transaction) to `out`.
/// `progress` is called with the plaintext bytes written so far, after each row.
pub fn write_snapshot(
    db: &(impl ReadableDatabase + ?Sized),
    out: &mut dyn Write,
    progress: &mut dyn FnMut(u64),
) -> Result<SnapshotStats, BackupError> {
    let txn = db.begin_read().map_err(db_err)?;
    if txn.list_multimap_tables().map_err(db_err)?.next().is_some() {
        return Err(BackupError::Snapshot(
            "the store holds a multimap table, which the backup does not know".into(),
        ));
    }
    let mut w = Counting {
        inner: out,
        bytes: 0,
    };
    w.write_all(SNAPSHOT_MAGIC)?;
    let mut stats = SnapshotStats::default();
    let names: Vec<String> = txn
        .list_tables()
        .map_err(db_err)?
        .map(|t| t.name().to_string())
        .collect();
    for name in names {
        let mut copied = None;
        for (k, v) in COMBOS {
            copied = match (k, v) {
                (ColumnType::Str, ColumnType::Bytes) => {
                    dump::<&str, &[u8]>(&txn, &name, (k, v), &mut w, &mut stats, progress)?
                }
                (ColumnType::Bytes, ColumnType::Bytes) => {
                    dump::<&[u8], &[u8]>(&txn, &name, (k, v), &mut w, &mut stats, progress)?
                }
                (ColumnType::U64, ColumnType::Bytes) => {
                    dump::<u64, &[u8]>(&txn, &name, (k, v), &mut w, &mut stats, progress)?
                }
                (ColumnType::Str, ColumnType::Str) => {
                    dump::<&str, &str>(&txn, &name, (k, v), &mut w, &mut stats, progress)?
                }
                _ => None,
            };
            if copied.is_some() {
                break;
            }
        }
        if copied.is_none() {
            return Err(BackupError::Snapshot(format!(
                "table {name} has key or value types the backup does not know"
            )));
        }
        stats.tables += 1;
    }
    w.write_all(&[TAG_END])?;
    w.write_all(&stats.tables.to_be_bytes())?;
    w.write_all(&stats.rows.to_be_bytes())?;
    stats.bytes = w.bytes;
    Ok(stats)
}

/// Writes a backup of `store` (sealed under `mek`, for the store's cluster) to the new file
/// `file` (created 0600, refused if it exists), fsynced; `progress` as for [`write_snapshot`].
/// A failure leaves `file` partly written: the caller removes it.
pub fn seal_to_file(
    store: &crate::store::Store,
    mek: &Mek,
    file: &std::path::Path,
    progress: &mut dyn FnMut(u64),
) -> Result<SnapshotStats, BackupError> {
    let cluster = store.identity()?.cluster;
    let out = crate::disk::create_new(file, 0o600)?;
    let mut archive = ArchiveWriter::new(io::BufWriter::new(out), mek, cluster.0)?;
    let stats = write_snapshot(store.reader(), &mut archive, progress)?;
    let out = archive.finish()?.into_inner().map_err(|e| e.into_error())?;
    out.sync_all()?;
    Ok(stats)
}

/// Reads a snapshot from `input` into the empty database `db`, in one write transaction
/// committed only if the whole snapshot was read and matches its end entry.
pub fn read_snapshot(db: &Database, input: &mut dyn Read) -> Result<SnapshotStats, BackupError> {
    let mut magic = [0u8; 8];
    read_full(input, &mut magic).map_err(archive_error)?;
    if &magic != SNAPSHOT_MAGIC {
        return Err(BackupError::Snapshot("wrong magic bytes".into()));
    }
    let txn = db.begin_write().map_err(db_err)?;
    let mut stats = SnapshotStats::default();
    let mut tag = read_u8(input)?;
    loop {
        match tag {
            TAG_END => {
                let tables = u32::from_be_bytes(read_array(input)?);
                let rows = u64::from_be_bytes(read_array(input)?);
                if (tables, rows) != (stats.tables, stats.rows) {
                    return Err(BackupError::Snapshot(format!(
                        "end entry says {tables} tables and {rows} rows; read {} and {}",
                        stats.tables, stats.rows
                    )));
                }
                // The end entry must be the end (the archive reader checks the last chunk).
                let mut probe = [0u8; 1];
                if input.read(&mut probe).map_err(archive_error)? != 0 {
                    return Err(BackupError::Snapshot("data after the end entry".into()));
                }
                break;
            }
            TAG_TABLE => {
                let len = u16::from_be_bytes(read_array(input)?) as usize;
                if len == 0 || len > MAX_TABLE_NAME {
                    return Err(BackupError::Snapshot(format!("table name of {len} bytes")));
                }
                let mut name = Vec::new();
                read_into(input, len, &mut name)?;
                let name = String::from_utf8(name)
                    .map_err(|_| BackupError::Snapshot("table name is not UTF-8".into()))?;
                let (k, v) = (column(read_u8(input)?)?, column(read_u8(input)?)?);
                stats.tables += 1;
                // Opening creates the table, so an empty table is restored too. Its rows
                // follow until the next entry that is not a row.
                let mut next = TAG_END;
                let (mut key, mut value) = (Vec::new(), Vec::new());
                open_and(&txn, &name, k, v, |insert| {
                    loop {
                        let t = read_u8(input)?;
                        if t != TAG_ROW {
                            next = t;
                            return Ok(());
                        }
                        read_item(input, &mut key)?;
                        read_item(input, &mut value)?;
                        check_column(k, &key)?;
                        check_column(v, &value)?;
                        insert(&key, &value)?;
                        stats.rows += 1;
                        stats.bytes += (key.len() + value.len()) as u64;
                    }
                })?;
                tag = next;
            }
            TAG_ROW => return Err(BackupError::Snapshot("a row before any table".into())),
            other => return Err(BackupError::Snapshot(format!("unknown entry tag {other}"))),
        }
    }
    txn.commit().map_err(db_err)?;
    Ok(stats)
}

const COMBOS: [(ColumnType, ColumnType); 4] = [
    (ColumnType::Str, ColumnType::Bytes),
    (ColumnType::Bytes, ColumnType::Bytes),
    (ColumnType::U64, ColumnType::Bytes),
    (ColumnType::Str, ColumnType::Str),
];

type Insert<'a> = &'a mut dyn FnMut(&[u8], &[u8]) -> Result<(), BackupError>;

/// Opens table `name` with the given column types in `txn` and calls `f` with an inserter.
fn open_and(
    txn: &redb::WriteTransaction,
    name: &str,
    k: ColumnType,
    v: ColumnType,
    f: impl FnOnce(Insert<'_>) -> Result<(), BackupError>,
) -> Result<(), BackupError> {
    fn with<K: Key + 'static, V: Value + 'static>(
        txn: &redb::WriteTransaction,
        name: &str,
        f: impl FnOnce(Insert<'_>) -> Result<(), BackupError>,
    ) -> Result<(), BackupError> {
        let mut table = txn
            .open_table(TableDefinition::<K, V>::new(name))
            .map_err(db_err)?;
        let mut insert = |key: &[u8], value: &[u8]| -> Result<(), BackupError> {
            table
                .insert(K::from_bytes(key), V::from_bytes(value))
                .map_err(db_err)?;
            Ok(())
        };
        f(&mut insert)
    }
    match (k, v) {
        (ColumnType::Str, ColumnType::Bytes) => with::<&str, &[u8]>(txn, name, f),
        (ColumnType::Bytes, ColumnType::Bytes) => with::<&[u8], &[u8]>(txn, name, f),
        (ColumnType::U64, ColumnType::Bytes) => with::<u64, &[u8]>(txn, name, f),
        (ColumnType::Str, ColumnType::Str) => with::<&str, &str>(txn, name, f),
        _ => Err(BackupError::Snapshot(format!(
            "table {name}: unknown types"
        ))),
    }
}

/// Copies table `name` if it has key type `K` and value type `V`; `None` if its types differ.
fn dump<K: Key + 'static, V: Value + 'static>(
    txn: &redb::ReadTransaction,
    name: &str,
    (k, v): (ColumnType, ColumnType),
    w: &mut Counting<'_>,
    stats: &mut SnapshotStats,
    progress: &mut dyn FnMut(u64),
) -> Result<Option<()>, BackupError> {
    let table = match txn.open_table(TableDefinition::<K, V>::new(name)) {
        Ok(t) => t,
        Err(redb::TableError::TableTypeMismatch { .. }) => return Ok(None),
        Err(e) => return Err(db_err(e)),
    };
    w.write_all(&[TAG_TABLE])?;
    w.write_all(&(name.len() as u16).to_be_bytes())?;
    w.write_all(name.as_bytes())?;
    w.write_all(&[k as u8, v as u8])?;
    for row in table.iter().map_err(db_err)? {
        let (key, value) = row.map_err(db_err)?;
        let key = key.value();
        let value = value.value();
        let (key, value) = (K::as_bytes(&key), V::as_bytes(&value));
        w.write_all(&[TAG_ROW])?;
        for item in [key.as_ref(), value.as_ref()] {
            w.write_all(&(item.len() as u32).to_be_bytes())?;
            w.write_all(item)?;
        }
        stats.rows += 1;
        progress(w.bytes);
    }
    Ok(Some(()))
}

struct Counting<'a> {
    inner: &'a mut dyn Write,
    bytes: u64,
}

impl Write for Counting<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(data)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn column(code: u8) -> Result<ColumnType, BackupError> {
    match code {
        1 => Ok(ColumnType::Str),
        2 => Ok(ColumnType::Bytes),
        3 => Ok(ColumnType::U64),
        _ => Err(BackupError::Snapshot(format!("unknown column type {code}"))),
    }
}

/// redb's `from_bytes` assumes valid bytes (it panics on bad UTF-8 or a short integer): check
/// first.
fn check_column(t: ColumnType, bytes: &[u8]) -> Result<(), BackupError> {
    let ok = match t {
        ColumnType::Str => std::str::from_utf8(bytes).is_ok(),
        ColumnType::Bytes => true,
        ColumnType::U64 => bytes.len() == 8,
    };
    if ok {
        Ok(())
    } else {
        Err(BackupError::Snapshot(format!(
            "a {t:?} column holds invalid bytes"
        )))
    }
}

fn read_full(r: &mut (impl Read + ?Sized), buf: &mut [u8]) -> io::Result<()> {
    r.read_exact(buf)
}

fn read_u8(r: &mut dyn Read) -> Result<u8, BackupError> {
    Ok(read_array::<1>(r)?[0])
}

fn read_array<const N: usize>(r: &mut dyn Read) -> Result<[u8; N], BackupError> {
    let mut out = [0u8; N];
    read_full(r, &mut out).map_err(archive_error)?;
    Ok(out)
}

/// Reads `len` bytes into `out` (cleared first). The buffer grows as bytes arrive, so a length
/// that lies costs no more memory than the bytes that are really there.
fn read_into(r: &mut dyn Read, len: usize, out: &mut Vec<u8>) -> Result<(), BackupError> {
    out.clear();
    let got = r.take(len as u64).read_to_end(out).map_err(archive_error)?;
    if got != len {
        return Err(BackupError::Snapshot("it ends early".into()));
    }
    Ok(())
}

/// Reads a length-prefixed key or value into `out`, reused from row to row.
fn read_item(r: &mut dyn Read, out: &mut Vec<u8>) -> Result<(), BackupError> {
    let len = u32::from_be_bytes(read_array(r)?) as usize;
    if len > MAX_ITEM {
        return Err(BackupError::Snapshot(format!("an item of {len} bytes")));
    }
    read_into(r, len, out)
}

fn db_err(e: impl Into<StoreError>) -> BackupError {
    BackupError::Store(e.into())
}

#[cfg(test)]
mod tests;
