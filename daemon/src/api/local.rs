//! The local door: the API over the Unix socket `DATA/meshward.sock` (mode 0600), whose caller
//! is the node's local operator with `root` rights.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use axum::{Extension, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::UnixListener;
use tracing::{debug, warn};

use super::Caller;

/// How long a local client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds `DATA/meshward.sock` (replacing a stale socket file), restricts it to the node's user,
/// and serves `router` on it in the background. Returns the socket's path and the serving
/// task (abort it to stop serving). Must be called inside a tokio runtime.
pub fn serve_local(
    data: &Path,
    router: Router,
) -> anyhow::Result<(PathBuf, tokio::task::JoinHandle<()>)> {
    let socket = data.join(meshward_client::SOCKET);
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket)
        .with_context(|| format!("binding the local socket {}", socket.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        // bind(2) creates the socket with the umask's mode; restrict it at once.
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("restricting {}", socket.display()))?;
    }
    let router = router.layer(Extension(Caller::Local));
    let task = tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors or similar: do not spin; try again shortly.
                    warn!(error = %e, "local socket accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let service = TowerToHyperService::new(router.clone());
            tokio::spawn(async move {
                let served = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                if let Err(e) = served {
                    debug!(error = %e, "local API connection ended");
                }
            });
        }
    });
    Ok((socket, task))
}
