//! The group committer: one thread appends the records of many writers, one durable
//! commit per drained batch ([`AuditLog::append_batch`]), and `meshward audit append`'s
//! stdin writer on top of it.

use std::io::{self, BufRead, Write};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::thread;

use anyhow::Context as _;
use redb::Database;

use super::{AuditError, AuditLog, NewAuditRecord};

/// Capacity of the [`GroupCommitter`] request queue; a writer blocks when it is full.
/// 4096 queued records is about 4 batches of [`GROUP_COMMIT_MAX_BATCH`]: enough to keep the
/// committer busy, small enough to bound memory (≤ ~70 MiB at maximal detail size).
pub const GROUP_COMMIT_QUEUE_CAPACITY: usize = 4096;
/// Most records the [`GroupCommitter`] puts in one commit. At 1024 records a commit takes a
/// few milliseconds, so the fsync stays the larger cost and latency stays low.
pub const GROUP_COMMIT_MAX_BATCH: usize = 1024;

/// Capacity of the queue between the input reader and the acker of [`run_stdin_writer`].
const STDIN_LINE_QUEUE_CAPACITY: usize = 4096;

/// Settings of a [`GroupCommitter`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupCommitConfig {
    /// Capacity of the bounded request queue; default [`GROUP_COMMIT_QUEUE_CAPACITY`].
    pub queue_capacity: NonZeroUsize,
    /// Most records in one commit; default [`GROUP_COMMIT_MAX_BATCH`].
    pub max_batch: NonZeroUsize,
}

/// A thread that appends records for many writers, one durable commit per drained batch.
///
/// Writers call [`GroupCommitter::submit`] (or [`GroupCommitter::append`]) from any thread.
///
/// Semantics:
/// - a `Ok(seq)` reply means the record is committed durably as `seq`;
/// - dropping a [`PendingAppend`] does not cancel the record: once submitted it is committed
///   with its batch, unanswered;
/// - if the process dies, records without a reply may or may not be in the store; records
///   with one are;
/// - dropping the committer (or [`GroupCommitter::shutdown`]) closes the queue, lets the
///   thread commit everything already queued and answer it, then joins the thread.
#[derive(Debug)]
pub struct GroupCommitter<'scope> {
    tx: Option<SyncSender<Request>>,
    worker: Option<Worker<'scope>>,
}

/// The answer to one [`GroupCommitter::submit`].
#[derive(Debug)]
pub struct PendingAppend {
    rx: Receiver<Result<u64, AuditError>>,
}

struct Request {
    record: NewAuditRecord,
    reply: SyncSender<Result<u64, AuditError>>,
}

#[derive(Debug)]
enum Worker<'scope> {
    Owned(thread::JoinHandle<()>),
    Scoped(thread::ScopedJoinHandle<'scope, ()>),
}

impl Default for GroupCommitConfig {
    fn default() -> Self {
        Self {
            // Both consts are non-zero; see their docs for where the numbers come from.
            queue_capacity: NonZeroUsize::new(GROUP_COMMIT_QUEUE_CAPACITY)
                .unwrap_or(NonZeroUsize::MIN),
            max_batch: NonZeroUsize::new(GROUP_COMMIT_MAX_BATCH).unwrap_or(NonZeroUsize::MIN),
        }
    }
}

impl GroupCommitter<'static> {
    /// Starts the committer thread on a shared database, for long-running use.
    pub fn spawn(db: Arc<Database>, config: GroupCommitConfig) -> io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel(config.queue_capacity.get());
        let handle = thread::Builder::new()
            .name("audit-commit".into())
            .spawn(move || commit_loop(&db, &rx, config.max_batch.get()))?;
        Ok(Self {
            tx: Some(tx),
            worker: Some(Worker::Owned(handle)),
        })
    }
}

impl<'scope> GroupCommitter<'scope> {
    /// Starts the committer thread inside `scope`, borrowing the database.
    pub fn spawn_scoped<'env>(
        scope: &'scope thread::Scope<'scope, 'env>,
        db: &'env Database,
        config: GroupCommitConfig,
    ) -> io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel(config.queue_capacity.get());
        let handle = thread::Builder::new()
            .name("audit-commit".into())
            .spawn_scoped(scope, move || commit_loop(db, &rx, config.max_batch.get()))?;
        Ok(Self {
            tx: Some(tx),
            worker: Some(Worker::Scoped(handle)),
        })
    }

    /// Checks `record` and queues it; blocks while the queue is full. The record is refused
    /// here, alone, if invalid, so it never fails a batch of others.
    pub fn submit(&self, record: NewAuditRecord) -> Result<PendingAppend, AuditError> {
        record
            .validate()
            .map_err(|source| AuditError::Invalid { index: 0, source })?;
        let (reply, rx) = mpsc::sync_channel(1);
        let tx = self.tx.as_ref().ok_or(AuditError::CommitterStopped)?;
        tx.send(Request { record, reply })
            .map_err(|_| AuditError::CommitterStopped)?;
        Ok(PendingAppend { rx })
    }

    /// [`GroupCommitter::submit`], then waits for the durable commit; returns the seq.
    pub fn append(&self, record: NewAuditRecord) -> Result<u64, AuditError> {
        self.submit(record)?.wait()
    }

    /// Closes the queue, lets the thread commit and answer what is queued, and joins it.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        drop(self.tx.take());
        // A panic in the committer has already failed its writers with `CommitterStopped`.
        let _ = match self.worker.take() {
            Some(Worker::Owned(handle)) => handle.join(),
            Some(Worker::Scoped(handle)) => handle.join(),
            None => Ok(()),
        };
    }
}

impl Drop for GroupCommitter<'_> {
    fn drop(&mut self) {
        self.stop();
    }
}

impl PendingAppend {
    /// Waits for the commit; `Ok(seq)` means the record is durable as `seq`.
    pub fn wait(self) -> Result<u64, AuditError> {
        self.recv()
    }

    fn recv(&self) -> Result<u64, AuditError> {
        self.rx.recv().unwrap_or(Err(AuditError::CommitterStopped))
    }

    /// The answer if it has come, without waiting.
    pub fn try_wait(&self) -> Option<Result<u64, AuditError>> {
        match self.rx.try_recv() {
            Ok(answer) => Some(answer),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => Some(Err(AuditError::CommitterStopped)),
        }
    }
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("record", &self.record)
            .finish()
    }
}

/// Reads records from `input`, one a line (`actor\taction\ttarget\tdetail`, the detail being
/// the rest of the line), appends them through a [`GroupCommitter`], and answers each line in
/// order on `out` (flushed): `ack <seq>` once the record is durable, or `err <line> <reason>`
/// if it was refused. `at_ms` is the system time when the line is read.
///
/// Returns at the end of `input`, after every record read has been answered, or at the first
/// storage or output error. `input` is read on a detached thread, so an error returns at once
/// even while a read blocks; that thread ends at the next line or the end of input.
pub fn run_stdin_writer(
    db: &Database,
    input: impl BufRead + Send + 'static,
    mut out: impl Write,
) -> anyhow::Result<()> {
    let (line_tx, line_rx) = mpsc::sync_channel(STDIN_LINE_QUEUE_CAPACITY);
    thread::Builder::new()
        .name("audit-stdin".into())
        .spawn(move || {
            let mut input = input;
            loop {
                let mut line = Vec::new();
                let read = input.read_until(b'\n', &mut line);
                let done = !matches!(read, Ok(n) if n > 0);
                if matches!(read, Ok(0)) || line_tx.send(read.map(|_| line)).is_err() || done {
                    break;
                }
            }
        })
        .context("starting the audit input reader")?;

    thread::scope(|scope| {
        let committer = GroupCommitter::spawn_scoped(scope, db, GroupCommitConfig::default())
            .context("starting the audit group committer")?;
        let mut pending = std::collections::VecDeque::new();
        let mut line_no: u64 = 0;
        let mut input_open = true;
        while input_open || !pending.is_empty() {
            // Queue whatever input has arrived, so it joins the same group commit; block for
            // input only when nothing awaits its commit.
            while input_open && pending.len() < GROUP_COMMIT_QUEUE_CAPACITY {
                let next = if pending.is_empty() {
                    line_rx.recv().map_err(|_| TryRecvError::Disconnected)
                } else {
                    line_rx.try_recv()
                };
                match next {
                    Ok(line) => {
                        line_no += 1;
                        pending.push_back(submit_line(
                            &committer,
                            line_no,
                            line.context("reading audit input")?,
                        )?);
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => input_open = false,
                }
            }
            // Answer in input order: wait for the oldest, then every one already answered.
            let mut block = true;
            while let Some(front) = pending.front() {
                let answer = match front {
                    LineOutcome::Refused(no, reason) => format!("err {no} {reason}"),
                    LineOutcome::Queued(p) => {
                        let seq = if block { Some(p.recv()) } else { p.try_wait() };
                        match seq {
                            Some(seq) => format!("ack {}", seq.context("appending audit record")?),
                            None => break,
                        }
                    }
                };
                pending.pop_front();
                writeln!(out, "{answer}").context("writing ack")?;
                block = false;
            }
            out.flush().context("flushing acks")?;
        }
        committer.shutdown();
        Ok(())
    })
}

enum LineOutcome {
    Queued(PendingAppend),
    Refused(u64, String),
}

/// Parses and submits one input line; only a storage-side failure is an error.
fn submit_line(
    committer: &GroupCommitter<'_>,
    line_no: u64,
    line: Vec<u8>,
) -> Result<LineOutcome, AuditError> {
    let refused = |reason: &str| Ok(LineOutcome::Refused(line_no, reason.into()));
    let line = line.strip_suffix(b"\n").unwrap_or(&line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Ok(line) = std::str::from_utf8(line) else {
        return refused("line is not UTF-8");
    };
    let mut fields = line.splitn(4, '\t');
    let (Some(actor), Some(action), Some(target), Some(detail)) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return refused("expected 4 tab-separated fields: actor, action, target, detail");
    };
    let record = NewAuditRecord {
        at_ms: now_ms(),
        actor: actor.into(),
        action: action.into(),
        target: target.into(),
        detail: detail.into(),
    };
    match committer.submit(record) {
        Ok(pending) => Ok(LineOutcome::Queued(pending)),
        Err(AuditError::Invalid { source, .. }) => refused(&source.to_string()),
        Err(e) => Err(e),
    }
}

/// Unix time in milliseconds: the edge's clock read.
fn now_ms() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    now.map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn commit_loop(db: &Database, rx: &Receiver<Request>, max_batch: usize) {
    let mut records = Vec::with_capacity(max_batch);
    let mut replies = Vec::with_capacity(max_batch);
    while let Ok(first) = rx.recv() {
        records.push(first.record);
        replies.push(first.reply);
        while records.len() < max_batch {
            match rx.try_recv() {
                Ok(req) => {
                    records.push(req.record);
                    replies.push(req.reply);
                }
                Err(_) => break,
            }
        }
        match AuditLog::append_batch(db, &records) {
            Ok(stored) => {
                tracing::trace!(records = stored.len(), "audit group committed");
                for (reply, record) in replies.drain(..).zip(&stored) {
                    // The writer may have dropped its `PendingAppend`; the record stays.
                    let _ = reply.send(Ok(record.seq));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, records = records.len(), "audit group commit failed");
                let e = Arc::new(e);
                for reply in replies.drain(..) {
                    let _ = reply.send(Err(AuditError::GroupCommit(Arc::clone(&e))));
                }
            }
        }
        records.clear();
    }
}
