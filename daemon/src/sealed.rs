//! A sealed node: one that belongs to a cluster but whose MEK file (`DATA/mek`, see
//! [`meshward_node::mek::MEK_FILE`]) is missing, e.g. after the operator moved it to a vault.
//!
//! `meshward run` on a sealed node does not open the mesh. It serves the API on its local
//! socket with three requests only: `GET /v1/status` (which says `sealed`), `GET /v1/health`
//! (503, `sealed`) and `POST /v1/unseal`, which installs the MEK once it proved to be the
//! cluster's (it opens the sealed cluster CA; a wrong key writes nothing) and lets the daemon
//! go on starting. Every other request gets 503 saying how to unseal. A standalone node (no
//! cluster yet) has no MEK and is not sealed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use meshward_api::node::{Health, Unseal};
use meshward_api::{Problem, ProblemKind, Reply, Request};
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::api::{Body, answer, problem_response};
use meshward_node::mek::MEK_FILE;
use meshward_node::ops::LocalBackend;

#[derive(Clone)]
struct Sealed {
    data: PathBuf,
    backend: Arc<Mutex<LocalBackend>>,
    unsealed: Arc<Notify>,
}

fn sealed_problem(data: &Path) -> Problem {
    Problem::new(
        ProblemKind::Unavailable,
        format!(
            "the node is sealed: its MEK file {} is missing; run `meshward unseal --mek FILE`",
            data.join(MEK_FILE).display()
        ),
    )
}

/// Serves status, health and unseal on the local socket until the node is unsealed (`Ok`) or
/// a signal stops it (`Err`). The socket is removed on both paths.
pub async fn serve(data: &Path) -> anyhow::Result<()> {
    warn!(
        mek = %data.join(MEK_FILE).display(),
        "the node is sealed: its MEK file is missing; run `meshward unseal --mek FILE`"
    );
    let state = Sealed {
        data: data.to_path_buf(),
        backend: Arc::new(Mutex::new(LocalBackend::new(data.to_path_buf()))),
        unsealed: Arc::new(Notify::new()),
    };
    let unsealed = state.unsealed.clone();
    let router = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/health", get(health))
        .route("/v1/unseal", post(unseal))
        .fallback(
            |State(s): State<Sealed>| async move { problem_response(sealed_problem(&s.data)) },
        )
        .with_state(state.clone());
    let (socket, server) = crate::api::serve_local(data, router)?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let result = tokio::select! {
        _ = term.recv() => Err(anyhow::anyhow!("stopped while sealed")),
        _ = int.recv() => Err(anyhow::anyhow!("stopped while sealed")),
        () = unsealed.notified() => {
            info!("unsealed: the MEK file is installed");
            Ok(())
        }
    };
    server.abort();
    let _ = std::fs::remove_file(&socket);
    // The store the sealed stage read is closed before the daemon opens it.
    drop(state);
    result
}

fn run_local(s: &Sealed, request: Request) -> Result<Reply, Problem> {
    let mut backend = s.backend.lock().unwrap_or_else(PoisonError::into_inner);
    meshward_node::ops::execute(&mut *backend, request)
}

async fn status(State(s): State<Sealed>) -> Response {
    answer(run_local(&s, Request::Status))
}

async fn health() -> Response {
    let health = Health {
        healthy: false,
        reasons: vec!["sealed".into()],
    };
    (
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(health),
    )
        .into_response()
}

async fn unseal(State(s): State<Sealed>, Body(body): Body<Unseal>) -> Response {
    let result = run_local(&s, Request::Unseal(body));
    if result.is_ok() {
        *s.backend.lock().unwrap_or_else(PoisonError::into_inner) =
            LocalBackend::new(s.data.clone());
        s.unsealed.notify_one();
    }
    answer(result)
}
