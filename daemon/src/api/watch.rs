//! `GET /v1/watch`: the node's change log as Server-Sent Events, on both doors.
//!
//! A stream runs in its own task and talks to the actor in steps ([`Step`]): `Begin`
//! authorizes the caller for the tables asked (the grants of [`meshward_node::ops::access`]:
//! shared tables need read on `default`, `mastered` needs read on the cluster) and hands out a
//! consistent view of the store (one read transaction) to send the current state from
//! (`snapshot` events without an `id:`, then `ready` with the `id:` of the cursor the view was
//! read at: see [`meshward_node::ops::watch`]); `Follow` then
//! answers the changes after the stream's cursor a page at a time, until the stream is close
//! enough to the head to be registered as a live subscriber: the actor reads the last
//! changes and registers in one step, and every write goes through the actor, so nothing is
//! missed or sent twice at the switch ([`crate::actor`]'s watchers).
//!
//! Each live subscriber has a bounded buffer (`watch-buffer`); when the actor finds it full,
//! the subscriber is dropped (the actor never waits) and the stream sends `overflow` with
//! the last cursor it sent, then closes. Streams are bounded too (`watch-subscribers`; over
//! it: 503). A cursor older than the node keeps answers 410 `compacted` (a problem, before
//! the stream starts), or a `compacted` event when the log moves past a stream still
//! catching up. A stream also ends with a `closed` event when the caller's grants no longer
//! allow it.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, body::Bytes};
use meshward_api::node::WatchQuery;
use meshward_api::{Problem, ProblemKind};
use meshward_crdt::TableId;
use meshward_node::ops::watch::{self, Start, Tables};
use meshward_node::store::{ChangeReader, Marks};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::{ApiState, Caller, Job, ask, problem_response};

/// A rendered change: its cursor and its SSE frame.
pub type Frame = (u64, Arc<str>);

/// Why the actor dropped a live subscriber.
pub const CLOSED_OVERFLOW: u8 = 1;
/// The caller's grants no longer allow the stream.
pub const CLOSED_REFUSED: u8 = 2;

/// Changes per `Follow` page.
pub const PAGE: usize = 256;
/// Time between keep-alive comments on an idle stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Frames between the stream task and the HTTP body.
const BODY_QUEUE: usize = 16;

/// The watch door's limits, shared by the doors' routers.
#[derive(Clone, Debug)]
pub struct WatchDoor {
    /// One permit per open stream.
    pub slots: Arc<Semaphore>,
    /// Each live subscriber's buffer.
    pub buffer: usize,
}

impl WatchDoor {
    /// A door with these limits.
    pub fn new(limits: meshward_node::config::WatchLimits) -> WatchDoor {
        WatchDoor {
            slots: Arc::new(Semaphore::new(limits.subscribers)),
            buffer: limits.buffer.max(1),
        }
    }
}

impl Default for WatchDoor {
    fn default() -> Self {
        WatchDoor::new(meshward_node::config::NodeConfig::default().watch_limits())
    }
}

/// A step of a stream, for the actor.
#[derive(Debug)]
pub enum Step {
    /// Authorize, and hand out a consistent view of the store.
    Begin,
    /// The changes after this cursor: a page, or registration as a live subscriber.
    Follow {
        /// The stream's cursor.
        after: u64,
        /// The subscriber's buffer.
        buffer: usize,
    },
}

/// A consistent view of the store lent to a stream for its snapshot. The actor takes it back
/// (leaving `None`) before it reopens the store after a full disk: a view holds the old file
/// open.
pub type Lent = Arc<std::sync::Mutex<Option<ChangeReader>>>;

/// The actor's answer to a [`Step`].
pub enum Answer {
    /// A consistent view, the approvals to show fingerprints with, and the log's marks in it.
    View(Lent, Box<watch::RowView>, Marks),
    /// The wanted changes of a page, and the cursor the page ends at.
    Page(Vec<Frame>, u64),
    /// Registered: the live changes come here (the changes up to the head already in it).
    Live(mpsc::Receiver<Frame>, Arc<AtomicU8>),
    /// The cursor is older than what the node keeps.
    Compacted(u64),
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Answer::View(_, _, m) => write!(f, "View({m:?})"),
            Answer::Page(frames, end) => write!(f, "Page({}, {end})", frames.len()),
            Answer::Live(..) => f.write_str("Live"),
            Answer::Compacted(first) => write!(f, "Compacted({first})"),
        }
    }
}

/// A stream's request to the actor.
#[derive(Debug)]
pub struct WatchJob {
    /// The tables watched.
    pub tables: Tables,
    /// What to do.
    pub step: Step,
    /// Where the actor answers (a problem goes to the job's own reply).
    pub answer: oneshot::Sender<Answer>,
}

async fn step(s: &ApiState, c: &Caller, tables: Tables, step: Step) -> Result<Answer, Problem> {
    let (tx, rx) = oneshot::channel();
    let job = WatchJob {
        tables,
        step,
        answer: tx,
    };
    ask(s, c.clone(), Job::Watch(job)).await?;
    rx.await
        .map_err(|_| Problem::new(ProblemKind::Unavailable, "the node is stopping"))
}

/// Stream changes as Server-Sent Events: every row appended, written or deleted in a shared
/// table and every mastered record applied, each with `id:` its cursor (this node's apply
/// order). `from=CURSOR` (or the `Last-Event-ID` header) resumes after it, `from=now` starts
/// at the present; without either the current state comes first (`snapshot` events), then
/// the stream. A slow reader gets `overflow` (with the cursor to resume from) and the stream
/// closes; a cursor older than the node keeps is 410 `compacted`.
#[utoipa::path(get, path = "/v1/watch", tag = "watch", params(WatchQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this cursor (as `from`)")),
    responses((status = 200, description = "text/event-stream: `snapshot`, `change`, `overflow`, `compacted` and `closed` events; `data:` of `snapshot` and `change` is a Change", body = meshward_api::node::Change, content_type = "text/event-stream"),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 410, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json")))]
pub async fn watch_stream(
    State(s): State<ApiState>,
    Extension(c): Extension<Caller>,
    Query(q): Query<WatchQuery>,
    headers: HeaderMap,
) -> Response {
    match open(s, c, q, &headers).await {
        Ok(response) => response,
        Err(problem) => problem_response(problem),
    }
}

async fn open(
    s: ApiState,
    c: Caller,
    q: WatchQuery,
    headers: &HeaderMap,
) -> Result<Response, Problem> {
    let tables = watch::parse_tables(q.tables.as_deref())?;
    let last_id = match headers.get("last-event-id") {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| Problem::bad_input("Last-Event-ID", "not text"))?,
        ),
        None => None,
    };
    let start = watch::parse_start(q.from.as_deref(), last_id)?;
    let permit = s.watch.slots.clone().try_acquire_owned().map_err(|_| {
        Problem::new(
            ProblemKind::Unavailable,
            "too many watch streams are open on this node (watch-subscribers); retry later",
        )
    })?;
    let Answer::View(reader, config, marks) = step(&s, &c, tables, Step::Begin).await? else {
        return Err(Problem::new(
            ProblemKind::Internal,
            "unexpected watch answer",
        ));
    };
    let field = if q.from.is_some() {
        "from"
    } else {
        "Last-Event-ID"
    };
    let (snapshot, cursor) = match start {
        Start::Snapshot => (Some((reader, config)), marks.last),
        Start::Now => (None, marks.last),
        Start::After(after) if after > marks.last => {
            return Err(watch::ahead(field, after, marks.last));
        }
        Start::After(after) if after.saturating_add(1) < marks.first => {
            return Err(watch::compacted(field, after, marks.first));
        }
        Start::After(after) => (None, after),
    };
    let (tx, rx) = mpsc::channel::<Bytes>(BODY_QUEUE);
    tokio::spawn(async move {
        let _permit = permit;
        let out = Out(tx);
        if let Some((reader, config)) = snapshot
            && send_snapshot(&out, &reader, &config, tables, cursor)
                .await
                .is_err()
        {
            return;
        }
        let _ = follow(&out, &s, &c, tables, cursor).await;
    });
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    let mut response = axum::body::Body::from_stream(body).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

/// The HTTP body's side; an error: the client is gone.
struct Out(mpsc::Sender<Bytes>);

impl Out {
    async fn send(&self, text: &str) -> Result<(), ()> {
        self.0
            .send(Bytes::copy_from_slice(text.as_bytes()))
            .await
            .map_err(|_| ())
    }
}

/// The current state of the watched tables, read from one view, each row a `snapshot` event
/// with the view's cursor.
async fn send_snapshot(
    out: &Out,
    reader: &Lent,
    config: &watch::RowView,
    tables: Tables,
    at: u64,
) -> Result<(), ()> {
    for table in TableId::ALL {
        if !tables.has(Some(table)) {
            continue;
        }
        let mut after: Option<Vec<u8>> = None;
        loop {
            let rows = match read(reader, |r| r.rows_after(table, after.as_deref(), PAGE)) {
                Some(rows) => rows,
                None => return taken(out).await,
            };
            let Some((last, _, _)) = rows.last() else {
                break;
            };
            after = Some(last.clone());
            for (key, writer, row) in &rows {
                let place = (table == TableId::Events && key.len() == 44).then(|| {
                    let segment = u32::from_be_bytes(key[32..36].try_into().unwrap_or_default());
                    let index = u64::from_be_bytes(key[36..44].try_into().unwrap_or_default());
                    (segment, index)
                });
                let json = watch::row_json(writer, row, place, config);
                out.send(&watch::snapshot_frame(at, Some(table), json))
                    .await?;
            }
        }
    }
    if tables.has(None) {
        let mut version = 0;
        loop {
            let records = match read(reader, |r| r.mastered_after(version, PAGE)) {
                Some(records) => records,
                None => return taken(out).await,
            };
            let Some(last) = records.last() else {
                break;
            };
            version = last.record.version;
            for r in records.iter().filter(|r| watch::in_mastered(r)) {
                out.send(&watch::snapshot_frame(at, None, watch::record_json(r)))
                    .await?;
            }
        }
    }
    if tables.has_managed() {
        let mut after: Option<Vec<u8>> = None;
        loop {
            let rows = match read(reader, |r| r.managed_after(after.as_deref(), PAGE)) {
                Some(rows) => rows,
                None => return taken(out).await,
            };
            let Some((last, _)) = rows.last() else {
                break;
            };
            after = Some(last.clone());
            for (_, row) in &rows {
                out.send(&watch::managed_snapshot_frame(at, row)).await?;
            }
        }
    }
    out.send(&watch::ready_frame(at)).await
}

/// One page from a lent view; `None`: the actor took it back, or it failed.
fn read<T>(
    lent: &Lent,
    page: impl FnOnce(&ChangeReader) -> Result<T, meshward_node::store::StoreError>,
) -> Option<T> {
    let guard = lent.lock().ok()?;
    page(guard.as_ref()?).ok()
}

/// The snapshot cannot go on: the stream ends with `closed`, to be started again.
async fn taken(out: &Out) -> Result<(), ()> {
    let data = serde_json::json!({
        "detail": "the node reopened its store during the snapshot; start the stream again"
    });
    out.send(&watch::frame("closed", None, &data)).await?;
    Err(())
}

/// Catches up from `cursor` a page at a time, then follows the live changes.
async fn follow(
    out: &Out,
    s: &ApiState,
    c: &Caller,
    tables: Tables,
    mut cursor: u64,
) -> Result<(), ()> {
    let buffer = s.watch.buffer;
    let (mut live, closed) = loop {
        let answer = step(
            s,
            c,
            tables,
            Step::Follow {
                after: cursor,
                buffer,
            },
        )
        .await;
        match answer {
            Ok(Answer::Page(frames, end)) => {
                for (_, text) in &frames {
                    out.send(text).await?;
                }
                cursor = end;
            }
            Ok(Answer::Live(rx, closed)) => break (rx, closed),
            Ok(Answer::Compacted(first)) => {
                let p = watch::compacted("from", cursor, first);
                let data = serde_json::json!({"first_kept": first, "detail": p.detail});
                return out.send(&watch::frame("compacted", None, &data)).await;
            }
            Ok(Answer::View(..)) => return Err(()),
            Err(p) => {
                let data = serde_json::to_value(&p).unwrap_or_default();
                return out.send(&watch::frame("closed", None, &data)).await;
            }
        }
    };
    let mut ping = tokio::time::interval(KEEP_ALIVE);
    ping.tick().await;
    loop {
        tokio::select! {
            frame = live.recv() => match frame {
                Some((at, text)) => {
                    out.send(&text).await?;
                    cursor = at;
                }
                None => {
                    return match closed.load(Ordering::Acquire) {
                        CLOSED_OVERFLOW => {
                            let data = serde_json::json!({ "resume_from": cursor });
                            out.send(&watch::frame("overflow", Some(cursor), &data)).await
                        }
                        CLOSED_REFUSED => {
                            let data = serde_json::json!({
                                "detail": "the caller's grants no longer allow this stream"
                            });
                            out.send(&watch::frame("closed", None, &data)).await
                        }
                        _ => Ok(()),
                    };
                }
            },
            _ = ping.tick() => out.send(": keep-alive\n\n").await?,
        }
    }
}
