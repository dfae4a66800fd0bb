//! `GET /v1/backup`: a sealed backup of the node's store, streamed as it is written.
//!
//! The snapshot is one redb read transaction (consistent while the node keeps writing), taken
//! on a blocking thread from the store's shared database; the archive is sealed under the
//! node's MEK ([`meshward_node::backup`]: XChaCha20-Poly1305 chunks bound to the archive id, their
//! index and a last-chunk flag). The body is sent as the chunks are sealed, through a bounded
//! channel. If writing fails midway the connection is cut: the client holds an archive without
//! its last chunk, which every restore refuses as truncated.

use std::io::Write;
use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use redb::Database;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use super::{ApiState, Caller, Job, ask, problem_response};
use meshward_node::backup::{ArchiveWriter, write_snapshot};
use meshward_node::mek::Mek;

/// Chunks of the archive in flight to the client.
const IN_FLIGHT: usize = 8;
/// Bytes per chunk sent.
const CHUNK: usize = 256 * 1024;

/// What a backup is written from, handed out by the actor.
#[derive(Debug)]
pub struct BackupSource {
    /// The store's database.
    pub db: Arc<Database>,
    /// The node's MEK.
    pub mek: Mek,
    /// The cluster id (bound into the archive header).
    pub cluster: [u8; 16],
}

/// A sealed backup of the node's store (root only), `application/octet-stream`; restore it
/// with `meshward restore FILE --mek MEK`.
#[utoipa::path(get, path = "/v1/backup", tag = "node",
    responses((status = 200, description = "the sealed archive", content_type = "application/octet-stream"),
        (status = 403, body = meshward_api::Problem, content_type = "application/problem+json"),
        (status = 503, body = meshward_api::Problem, content_type = "application/problem+json")))]
pub(super) async fn backup(State(s): State<ApiState>, Extension(c): Extension<Caller>) -> Response {
    let (tx, rx) = oneshot::channel();
    if let Err(p) = ask(&s, c, Job::Backup(tx)).await {
        return problem_response(p);
    }
    let Ok(source) = rx.await else {
        return problem_response(meshward_api::Problem::new(
            meshward_api::ProblemKind::Unavailable,
            "the node is stopping",
        ));
    };
    let (chunks, body) = mpsc::channel::<Result<Bytes, std::io::Error>>(IN_FLIGHT);
    tokio::task::spawn_blocking(move || {
        let mut out = Sink {
            chunks: chunks.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        let written = (|| -> anyhow::Result<()> {
            let mut archive = ArchiveWriter::new(&mut out, &source.mek, source.cluster)?;
            write_snapshot(&*source.db, &mut archive, &mut |_| {})?;
            archive.finish()?;
            out.flush()?;
            Ok(())
        })();
        if let Err(e) = written {
            warn!(error = %e, "a backup download failed; its connection is cut");
            let _ = chunks.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
    });
    let stream = futures::stream::unfold(body, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    (
        [(header::CONTENT_TYPE, "application/octet-stream")],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}

/// Writes into the body's channel in [`CHUNK`]-byte pieces (blocking when the client is slow).
struct Sink {
    chunks: mpsc::Sender<Result<Bytes, std::io::Error>>,
    buf: Vec<u8>,
}

impl Write for Sink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.chunks
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::other("the client went away"))
    }
}
