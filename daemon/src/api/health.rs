//! The plain health door (`meshward run --health-listen ADDR`): `GET /v1/health` over plain
//! HTTP with no client certificate, for load balancers in front of a floating IP or
//! round-robin DNS, and nothing else (every other path is 404). It tells only whether the node
//! should take traffic and why not; it reads and changes nothing else.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::{Extension, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use super::{ApiState, Caller};

/// Connections served at once; one over it is closed at once (a load balancer holds one or
/// two).
pub const HEALTH_CONNECTIONS: usize = 64;
/// How long a client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a connection may stay open at all.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// The running health door.
#[derive(Debug)]
pub struct HealthServer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl HealthServer {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for HealthServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `bind` and serves `GET /v1/health` on it in the background.
pub async fn serve_health(bind: SocketAddr, state: ApiState) -> anyhow::Result<HealthServer> {
    let listener = TcpListener::bind(bind).await.with_context(|| {
        format!("binding the health door on {bind}; give another --health-listen")
    })?;
    let addr = listener.local_addr()?;
    // The caller may only ask for the node's health: the route is the only one served.
    let router = Router::new()
        .route("/v1/health", axum::routing::get(super::routes::health))
        .with_state(state)
        .layer(Extension(Caller::Local));
    let slots = Arc::new(Semaphore::new(HEALTH_CONNECTIONS));
    let task = tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    warn!(error = %e, "health door accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                debug!("health door full: connection closed");
                continue;
            };
            let service = TowerToHyperService::new(router.clone());
            tokio::spawn(async move {
                let serve = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service);
                if let Ok(Err(e)) = tokio::time::timeout(CONNECTION_TIMEOUT, serve).await {
                    debug!(error = %e, "health connection ended");
                }
                drop(permit);
            });
        }
    });
    Ok(HealthServer { addr, task })
}
