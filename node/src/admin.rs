//! The HTTPS admin API (`meshward run --admin-listen ADDR`).
//!
//! TLS 1.3 (rustls) with a **required** client certificate that must chain to the cluster CA
//! or to one of the node's external CAs ([`crate::certs`]; rustls' `WebPkiClientVerifier`, as
//! the setup endpoint does): a certificate of any other CA is refused during the handshake.
//! The server presents the node's own certificate. After the handshake the certificate's CN is
//! the caller's user name; on **every request** the daemon actor checks the certificate's
//! serial against the mastered revocation list, looks the user up in the users view folded
//! from its verified mastered chain and decides with [`authorize`], so revoking a certificate,
//! deleting a user or taking a grant back cuts access on the next request, also on
//! connections already open.
//!
//! Requests reach the actor through a bounded channel, like the control socket's jobs, and
//! commands run with the same [`crate::cli::run`] on the live store and core.
//!
//! | endpoint | who |
//! |---|---|
//! | `GET /v1/status` | [`Action::ReadCluster`] (`guest:*`, `root`) |
//! | `POST /v1/cli` `{"args": [...]}` | what [`action_for`] maps the command to |
//! | `GET /metrics` | any user |
//! | `GET /` (HTML status page) | [`Action::ReadCluster`] |
//! | `GET /openapi.json` | any user |
//!
//! Shared data (events, fingerprints, exceptions, the audit) is not namespaced yet: it is
//! namespace [`DATA_NAMESPACE`] for the authorizer. Request bodies are limited to
//! [`MAX_BODY`] bytes (413 beyond).
//!
//! **Connections.** The accept loop never waits: each new connection is checked against its
//! address's rate, then takes a slot (`meshward_transport::slots`): at most
//! [`AdminLimits::connections_per_address`] held by one client address (IPv6: one /64) and
//! [`MAX_CONNECTIONS`] in all, from the accept until the connection ends. A connection over
//! either is closed at once, so one address holding idle connections cannot keep others from
//! being served. A held connection must finish its TLS handshake within [`HANDSHAKE_TIMEOUT`]
//! and send each request's headers within [`IDLE_TIMEOUT`] of the previous answer (or of the
//! handshake), else it is closed and its slot freed.
//!
//! New connections are rate-limited per client address, before the TLS handshake, and requests
//! per user certificate, before anything else (429 beyond): see [`crate::admin_limits`]. Every limit
//! counts when hit ([`AdminMetrics`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Extension, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Parser as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use meshward_transport::setup::TlsIdentity;
use meshward_transport::slots::{SlotRefused, Slots};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::admin_limits::{AdminLimits, Limiters};
use crate::certs::Serial;
use crate::cli::{AuditCmd, Cli, Command, ConfigCmd, EventCmd, ExceptionCmd, FingerprintCmd};
use crate::cli::{LocalCmd, MasteredCmd};
use crate::cli_admin::{Access, CertCmd, UserCmd};
use crate::control::ControlReply;
use crate::core::Secret;
use crate::grants::{Action, Decision, Namespace, UserName, authorize};

/// Largest request body, in bytes.
pub const MAX_BODY: usize = 1024 * 1024;
/// The namespace of the shared data until data is namespaced.
pub const DATA_NAMESPACE: &str = "default";
/// The OpenAPI document, kept in the repository at `docs/openapi.json`.
pub const OPENAPI: &str = include_str!("../../docs/openapi.json");
/// Admin requests waiting for the actor.
pub const JOB_QUEUE: usize = 64;
/// Connections held at once, from all addresses; more are closed at once and counted. Each
/// costs a task and its TLS and HTTP buffers (some tens of KiB).
pub const MAX_CONNECTIONS: usize = 256;
/// How long a new connection may take to finish its TLS handshake: a few round trips, with
/// room for a slow link; a silent connection frees its slot after this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a connection may wait before it sends a request's headers, after the handshake
/// or the previous answer (an idle keep-alive connection is closed after this).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a request needs besides a verified certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Need {
    /// Only that the CN names an existing user.
    User,
    /// What the command line in the job is mapped to by [`action_for`].
    Command,
}

/// What the API knows of a connection's verified client certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCert {
    /// Its subject CN, the user name (`None`: it has none).
    pub cn: Option<String>,
    /// Its serial, for the revocation list.
    pub serial: Serial,
}

/// An admin request for the daemon actor.
#[derive(Debug)]
pub struct AdminJob {
    /// The verified client certificate (`None`: it did not parse).
    pub cert: Option<ClientCert>,
    /// What must be checked.
    pub need: Need,
    /// The command line to run after the check (none: only check).
    pub args: Option<Vec<String>>,
    /// A secret the command reads from stdin (`password change`); `Debug` never shows it.
    pub secret: Option<Secret>,
    /// Where the actor answers.
    pub reply: oneshot::Sender<AdminAnswer>,
}

/// The actor's answer to an [`AdminJob`].
#[derive(Debug)]
pub enum AdminAnswer {
    /// Refused: HTTP status and a message.
    Refused(u16, String),
    /// Allowed, nothing to run.
    Allowed,
    /// Allowed and running: the command's reply comes on this channel.
    Running(oneshot::Receiver<ControlReply>),
}

/// Counters of the admin API (in `status --json` under `mesh.admin_metrics`, and `/metrics`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AdminMetrics {
    /// Connections accepted (given a slot).
    pub connections: u64,
    /// Connections closed at once because [`MAX_CONNECTIONS`] were held.
    pub refused_full: u64,
    /// Connections closed at once because their address held
    /// [`AdminLimits::connections_per_address`].
    pub refused_address_full: u64,
    /// Connections closed because their TLS handshake took longer than [`HANDSHAKE_TIMEOUT`].
    pub handshake_timeouts: u64,
    /// Connections closed because no request's headers came within [`IDLE_TIMEOUT`].
    pub idle_timeouts: u64,
    /// Connections held now (a gauge).
    pub open: u64,
    /// Requests refused with 413: a body over [`MAX_BODY`].
    pub body_too_large: u64,
    /// Requests refused with 429: over their user's rate ([`AdminLimits::per_user`]).
    pub rate_limited: u64,
    /// Connections closed before the TLS handshake: over their address's rate
    /// ([`AdminLimits::per_address`]).
    pub address_rate_limited: u64,
    /// Users forgotten by the per-user limit while short of a full burst, because it tracked
    /// [`crate::admin_limits::RATE_KEYS`] users.
    pub rate_forgotten: u64,
    /// Addresses forgotten likewise by the per-address limit.
    pub address_rate_forgotten: u64,
    /// Users the per-user limit tracks now (at most [`crate::admin_limits::RATE_KEYS`]).
    pub rate_tracked_users: u64,
    /// Addresses the per-address limit tracks now (at most [`crate::admin_limits::RATE_KEYS`]).
    pub rate_tracked_addresses: u64,
}

/// A running admin API.
#[derive(Debug)]
pub struct AdminServer {
    local: SocketAddr,
    counters: Arc<Counters>,
    limiters: Arc<Limiters>,
    slots: Arc<Slots>,
}

#[derive(Debug, Default)]
struct Counters {
    connections: AtomicU64,
    refused_full: AtomicU64,
    refused_address_full: AtomicU64,
    handshake_timeouts: AtomicU64,
    idle_timeouts: AtomicU64,
    body_too_large: AtomicU64,
}

/// The connection's client certificate.
#[derive(Clone, Debug)]
struct Caller(Option<ClientCert>);

#[derive(Clone, Debug)]
struct AppState {
    jobs: mpsc::Sender<AdminJob>,
    counters: Arc<Counters>,
    limiters: Arc<Limiters>,
}

/// The body of `POST /v1/cli`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CliBody {
    args: Vec<String>,
    #[serde(default)]
    secret: Option<Secret>,
}

/// Maps a parsed command to what the authorizer decides; `Err` names why the command is not
/// available over the API at all.
pub fn action_for(command: &Command) -> Result<Action, String> {
    let data = || Namespace::from_str_checked(DATA_NAMESPACE);
    Ok(match command {
        Command::Event(EventCmd::List { .. })
        | Command::Fingerprint(FingerprintCmd::List)
        | Command::Exception(ExceptionCmd::List)
        | Command::Audit(AuditCmd::List { .. } | AuditCmd::Verify) => Action::Read(data()),
        Command::Audit(AuditCmd::Record { stdin: true, .. }) => {
            return Err(
                "audit record --stdin reads the daemon's stdin; send one record per request".into(),
            );
        }
        Command::Event(EventCmd::Append { .. })
        | Command::Fingerprint(FingerprintCmd::Add { .. })
        | Command::Exception(ExceptionCmd::Set { .. } | ExceptionCmd::Delete { .. })
        | Command::Audit(AuditCmd::Record { .. }) => Action::Write(data()),
        Command::Status
        | Command::Config(ConfigCmd::Get { .. } | ConfigCmd::List)
        | Command::Local(LocalCmd::Get { .. })
        | Command::User(UserCmd::List)
        | Command::Cert(CertCmd::Revoked)
        | Command::Licence(crate::cluster::LicenceCmd::Show)
        | Command::Password(crate::ha::PasswordCmd::List) => Action::ReadCluster,
        Command::Fingerprint(FingerprintCmd::Approve { .. })
        | Command::Config(ConfigCmd::Set { .. } | ConfigCmd::Unset { .. })
        | Command::Local(LocalCmd::Set { .. })
        | Command::Licence(crate::cluster::LicenceCmd::Install { .. })
        | Command::Bundle(_)
        | Command::Mastered(MasteredCmd::Import { .. })
        | Command::Password(crate::ha::PasswordCmd::Change { .. }) => Action::ClusterAdmin,
        Command::User(_) | Command::Cert(_) => Action::UserAdmin,
        Command::Ha(_) => Action::HaOps,
        Command::Backup(_) => Action::Backup,
        Command::Run(_)
        | Command::Init(_)
        | Command::Join(_)
        | Command::Demo(_)
        | Command::Restore(_)
        | Command::Unseal(_) => {
            return Err(
                "node lifecycle commands are run on the node itself, not over the API".into(),
            );
        }
        Command::Fault(_) => return Err("fault hooks are not available over the API".into()),
    })
}

impl Namespace {
    /// A namespace known to be valid.
    fn from_str_checked(s: &str) -> Namespace {
        s.parse()
            .unwrap_or_else(|_| unreachable!("{s} is a valid namespace"))
    }
}

/// Decides an admin request against the revocation list and the users view: `Err((status,
/// message))` when refused (401: the certificate is revoked). Pure; bad input never panics.
pub fn check(
    access: &Access,
    cert: Option<&ClientCert>,
    need: &Need,
    args: Option<&[String]>,
) -> Result<(), (u16, String)> {
    let forbidden = |m: String| Err((403, m));
    let Some(cert) = cert else {
        return forbidden("the client certificate could not be read".into());
    };
    if let Some(version) = access.revoked.revoked_at(&cert.serial) {
        return Err((
            401,
            format!(
                "the client certificate (serial {}) was revoked at mastered version {version}; \
                 ask an administrator for a new one (`meshward user cert`)",
                cert.serial
            ),
        ));
    }
    let Some(cn) = cert.cn.as_deref() else {
        return forbidden("the client certificate has no CN naming a user".into());
    };
    let grants = match cn
        .parse::<UserName>()
        .ok()
        .and_then(|u| access.users.grants(&u).cloned())
    {
        Some(grants) => grants,
        None => {
            return forbidden(format!(
                "the client certificate names {:?}, which is not a user of this cluster (deleted?)",
                cn.chars().take(80).collect::<String>()
            ));
        }
    };
    if *need == Need::User {
        return Ok(());
    }
    let args = args.unwrap_or_default();
    if args
        .iter()
        .any(|a| a == "--data" || a.starts_with("--data="))
    {
        return Err((400, "--data cannot be given over the API".into()));
    }
    let cli =
        Cli::try_parse_from(std::iter::once("meshward").chain(args.iter().map(String::as_str)))
            .map_err(|e| (400, e.to_string()))?;
    let action = action_for(&cli.command).map_err(|e| (403, e))?;
    match authorize(&grants, &action) {
        Decision::Allow => Ok(()),
        Decision::Deny(why) => forbidden(format!("user {cn} may not do this: {why}")),
    }
}

/// The rustls server configuration: the node's certificate, TLS 1.3, client certificates
/// required and verified against the cluster CA and the `external` CA certificates (DER) only.
pub fn tls_config(
    identity: &TlsIdentity,
    external: &[Vec<u8>],
) -> anyhow::Result<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(identity.ca.clone()))
        .context("the cluster CA certificate")?;
    for (i, ca) in external.iter().enumerate() {
        roots
            .add(CertificateDer::from(ca.clone()))
            .with_context(|| format!("external CA certificate {}", i + 1))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .context("building the client certificate verifier")?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS versions")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from(identity.cert.clone())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.key.clone())),
        )
        .context("the node's TLS certificate")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Binds `bind` and serves the admin API in the background, trusting client certificates of
/// the cluster CA and of the `external` CAs (DER), under the rate limits `limits`. Must be
/// called inside a tokio runtime.
pub async fn spawn(
    bind: SocketAddr,
    identity: &TlsIdentity,
    external: &[Vec<u8>],
    limits: AdminLimits,
    jobs: mpsc::Sender<AdminJob>,
) -> anyhow::Result<AdminServer> {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls_config(identity, external)?));
    let listener = TcpListener::bind(bind)
        .await
        .with_context(|| format!("binding the admin API on {bind}; give another --admin-listen"))?;
    let local = listener.local_addr()?;
    let counters = Arc::new(Counters::default());
    let limiters = Arc::new(Limiters::new(limits));
    let slots = Slots::new(MAX_CONNECTIONS, limits.connections_per_address.get());
    let router = router(AppState {
        jobs,
        counters: counters.clone(),
        limiters: limiters.clone(),
    });
    info!(addr = %local, external_cas = external.len(), ?limits, "admin API listening");
    tokio::spawn(accept(
        listener,
        Serve {
            acceptor,
            router,
            counters: counters.clone(),
        },
        limiters.clone(),
        slots.clone(),
    ));
    Ok(AdminServer {
        local,
        counters,
        limiters,
        slots,
    })
}

impl AdminServer {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// A snapshot of its counters.
    pub fn metrics(&self) -> AdminMetrics {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut metrics = AdminMetrics {
            connections: get(&self.counters.connections),
            refused_full: get(&self.counters.refused_full),
            refused_address_full: get(&self.counters.refused_address_full),
            handshake_timeouts: get(&self.counters.handshake_timeouts),
            idle_timeouts: get(&self.counters.idle_timeouts),
            open: self.slots.taken() as u64,
            body_too_large: get(&self.counters.body_too_large),
            ..AdminMetrics::default()
        };
        self.limiters.fill(&mut metrics);
        metrics
    }
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/v1/status", get(status))
        .route("/v1/cli", post(cli))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint; see /openapi.json") })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(from_fn_with_state(state.clone(), limit_user))
        .with_state(state)
}

/// The per-user rate limit, before anything else looks at the request (the connection's
/// [`Caller`] is set outside the router).
async fn limit_user(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    request: Request,
    next: Next,
) -> Response {
    match state.limiters.user(caller.0.as_ref()) {
        None => next.run(request).await,
        Some(too_many) => too_many,
    }
}

/// What serving one connection needs.
#[derive(Clone)]
struct Serve {
    acceptor: tokio_rustls::TlsAcceptor,
    router: Router,
    counters: Arc<Counters>,
}

/// Accepts connections; never waits for anything but the listener, so no address can stall it.
async fn accept(listener: TcpListener, serve: Serve, limiters: Arc<Limiters>, slots: Arc<Slots>) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(error = %e, "admin API accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if let Err(limited) = limiters.address(peer.ip()) {
            debug!(%peer, retry_after_ms = limited.retry_after.as_millis(), "admin API connection over the address's rate; closed before the handshake");
            drop(tcp);
            continue;
        }
        let slot = match slots.try_acquire(peer.ip()) {
            Ok(slot) => slot,
            Err(refused) => {
                let counter = match refused {
                    SlotRefused::Full => &serve.counters.refused_full,
                    SlotRefused::SourceFull => &serve.counters.refused_address_full,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                debug!(%peer, %refused, "admin API connection closed before the handshake");
                drop(tcp);
                continue;
            }
        };
        serve.counters.connections.fetch_add(1, Ordering::Relaxed);
        let serve = serve.clone();
        tokio::spawn(async move {
            let _slot = slot;
            serve.connection(tcp, peer).await;
        });
    }
}

impl Serve {
    /// The TLS handshake (at most [`HANDSHAKE_TIMEOUT`]), then HTTP/1.1 requests until the
    /// client closes or is silent for [`IDLE_TIMEOUT`].
    async fn connection(self, tcp: tokio::net::TcpStream, peer: SocketAddr) {
        let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                debug!(%peer, error = %e, "admin API handshake refused");
                return;
            }
            Err(_) => {
                self.counters
                    .handshake_timeouts
                    .fetch_add(1, Ordering::Relaxed);
                debug!(%peer, "admin API handshake timed out");
                return;
            }
        };
        let cert = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|certs| certs.first())
            .and_then(|cert| client_cert(cert));
        let service = TowerToHyperService::new(self.router.layer(Extension(Caller(cert))));
        let served = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(IDLE_TIMEOUT)
            .serve_connection(TokioIo::new(tls), service)
            .await;
        if let Err(e) = served {
            if e.is_timeout() {
                self.counters.idle_timeouts.fetch_add(1, Ordering::Relaxed);
            }
            debug!(%peer, error = %e, "admin API connection ended");
        }
    }
}

/// The certificate's subject CN and serial; `None` if it does not parse.
fn client_cert(der: &CertificateDer<'_>) -> Option<ClientCert> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string);
    Some(ClientCert {
        cn,
        serial: Serial::from_der_integer(cert.raw_serial()),
    })
}

/// An error answer: `status` and a JSON `error`.
pub(crate) fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"error": message}))).into_response()
}

/// Sends a job to the actor and waits for the command's reply. `Ok(None)`: allowed, nothing
/// ran.
async fn ask(
    state: &AppState,
    caller: Caller,
    need: Need,
    args: Option<Vec<String>>,
    secret: Option<Secret>,
) -> Result<Option<ControlReply>, Response> {
    let stopped = || error(StatusCode::SERVICE_UNAVAILABLE, "the node is stopping");
    let (tx, rx) = oneshot::channel();
    let job = AdminJob {
        cert: caller.0,
        need,
        args,
        secret,
        reply: tx,
    };
    state.jobs.send(job).await.map_err(|_| stopped())?;
    match rx.await.map_err(|_| stopped())? {
        AdminAnswer::Refused(code, message) => Err(error(
            StatusCode::from_u16(code).unwrap_or(StatusCode::FORBIDDEN),
            &message,
        )),
        AdminAnswer::Allowed => Ok(None),
        AdminAnswer::Running(reply) => Ok(Some(reply.await.map_err(|_| stopped())?)),
    }
}

/// Runs `status --json` for `need` and returns its JSON.
async fn status_json(state: &AppState, caller: Caller, need: Need) -> Result<Value, Response> {
    let args = vec!["status".to_string(), "--json".to_string()];
    let reply = ask(state, caller, need, Some(args), None).await?;
    let reply = reply.ok_or_else(|| error(StatusCode::INTERNAL_SERVER_ERROR, "no status"))?;
    if let Some(e) = reply.error {
        return Err(error(StatusCode::INTERNAL_SERVER_ERROR, &e));
    }
    serde_json::from_str(&reply.stdout)
        .map_err(|_| error(StatusCode::INTERNAL_SERVER_ERROR, "status is not JSON"))
}

async fn status(State(state): State<AppState>, Extension(caller): Extension<Caller>) -> Response {
    match status_json(&state, caller, Need::Command).await {
        Ok(value) => Json(value).into_response(),
        Err(response) => response,
    }
}

async fn cli(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                state
                    .counters
                    .body_too_large
                    .fetch_add(1, Ordering::Relaxed);
            }
            return error(rejection.status(), &rejection.body_text());
        }
    };
    let body: CliBody = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("the body must be {{\"args\": [\"...\"]}}: {e}"),
            );
        }
    };
    match ask(&state, caller, Need::Command, Some(body.args), body.secret).await {
        Err(response) => response,
        Ok(None) => error(StatusCode::INTERNAL_SERVER_ERROR, "the command did not run"),
        Ok(Some(reply)) => {
            let code = if reply.error.is_some() {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::OK
            };
            (
                code,
                Json(json!({"stdout": reply.stdout, "error": reply.error})),
            )
                .into_response()
        }
    }
}

async fn metrics(State(state): State<AppState>, Extension(caller): Extension<Caller>) -> Response {
    match status_json(&state, caller, Need::User).await {
        Ok(value) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            prometheus(&value),
        )
            .into_response(),
        Err(response) => response,
    }
}

async fn openapi(State(state): State<AppState>, Extension(caller): Extension<Caller>) -> Response {
    match ask(&state, caller, Need::User, None, None).await {
        Ok(_) => ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response(),
        Err(response) => response,
    }
}

async fn page(State(state): State<AppState>, Extension(caller): Extension<Caller>) -> Response {
    match status_json(&state, caller, Need::Command).await {
        Ok(value) => Html(status_page(&value)).into_response(),
        Err(response) => response,
    }
}

/// Prometheus text from `status --json`: every number of the core's counters, the
/// transport's counters and gauges, the lag summary, the store's counts and its writes
/// refused for a full disk, plus the connected peers and the epoch as gauges.
pub fn prometheus(status: &Value) -> String {
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, value: f64| {
        out.push_str(&format!(
            "# HELP meshward_{name} {help}\n# TYPE meshward_{name} gauge\nmeshward_{name} {value}\n"
        ));
    };
    let mesh = &status["mesh"];
    let peers = mesh["peers"].as_object().map_or(0, serde_json::Map::len);
    gauge(
        "epoch",
        "Mastered epoch.",
        status["mastered"]["epoch"].as_f64().unwrap_or(0.0),
    );
    gauge(
        "mastered_version",
        "Last mastered version.",
        status["mastered"]["version"].as_f64().unwrap_or(0.0),
    );
    gauge("known_peers", "Peers the core knows.", peers as f64);
    let mut leaves = Vec::new();
    for (prefix, value) in [
        ("core", &mesh["core"]),
        ("transport", &mesh["transport"]),
        ("lag", &mesh["lag"]),
        ("setup", &mesh["setup_metrics"]),
        ("admin", &mesh["admin_metrics"]),
        ("join", &mesh["join"]),
        ("store", &mesh["store"]),
        ("store_rows", &status["rows"]),
    ] {
        flatten(prefix, value, &mut leaves);
    }
    for (name, key) in [
        ("segments", "segments"),
        ("live_segments", "live_segments"),
        ("sealed_bytes", "sealed_bytes"),
        ("audit_records", "audit_records"),
    ] {
        if let Some(v) = status[key].as_f64() {
            leaves.push((format!("store_{name}"), v));
        }
    }
    if let Some(v) = mesh["pending_evicted"].as_f64() {
        leaves.push(("pending_evicted".into(), v));
    }
    for (name, value) in leaves {
        out.push_str(&format!(
            "# TYPE meshward_{name} untyped\nmeshward_{name} {value}\n"
        ));
    }
    out
}

fn flatten(prefix: &str, value: &Value, out: &mut Vec<(String, f64)>) {
    match value {
        Value::Number(n) => {
            if let Some(v) = n.as_f64() {
                out.push((metric_name(prefix), v));
            }
        }
        Value::Bool(b) => out.push((metric_name(prefix), f64::from(u8::from(*b)))),
        Value::Object(map) => {
            for (k, v) in map {
                flatten(&format!("{prefix}_{k}"), v, out);
            }
        }
        _ => {}
    }
}

fn metric_name(raw: &str) -> String {
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// A small HTML page of the cluster's state, from `status --json`.
pub fn status_page(status: &Value) -> String {
    let text = |v: &Value| match v {
        Value::String(s) => escape(s),
        Value::Null => "-".into(),
        other => escape(&other.to_string()),
    };
    let mut rows = String::new();
    for member in status["ha"]["members"].as_array().into_iter().flatten() {
        let mut role = Vec::new();
        if member["leader"] == Value::Bool(true) {
            role.push("leader");
        }
        if member["primary"] == Value::Bool(true) {
            role.push("primary");
        }
        rows.push_str(&format!(
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            text(&member["address"]),
            text(&member["id"]),
            escape(&role.join(", ")),
            text(&member["state"]),
            text(&member["connected"]),
            text(&member["behind"]),
            text(&member["last_seen_ms"]),
        ));
    }
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>meshward status</title></head>\n<body>\n<h1>meshward node</h1>\n<table id=\"node\">\n<tr><th>writer</th><td id=\"writer\"><code>{writer}</code></td></tr>\n<tr><th>cluster</th><td><code>{cluster}</code></td></tr>\n<tr><th>role</th><td id=\"role\">{role}</td></tr>\n<tr><th>HA state</th><td id=\"ha-state\">{ha}</td></tr>\n<tr><th>epoch</th><td id=\"epoch\">{epoch}</td></tr>\n<tr><th>leader</th><td>{leader}</td></tr>\n<tr><th>members</th><td>{members}</td></tr>\n<tr><th>lag</th><td id=\"lag\">{lag}</td></tr>\n</table>\n<h2>nodes and links</h2>\n<table id=\"members\">\n<tr><th>address</th><th>id</th><th>role</th><th>HA state</th><th>connected</th><th>behind</th><th>last seen (ms)</th></tr>\n{rows}</table>\n<p><a href=\"/metrics\">metrics</a> · <a href=\"/openapi.json\">OpenAPI</a></p>\n</body></html>\n",
        writer = text(&status["writer"]),
        cluster = text(&status["cluster"]),
        role = text(&status["role"]),
        ha = text(&status["ha"]["state"]),
        epoch = text(&status["mastered"]["epoch"]),
        leader = text(&status["mastered"]["leader_address"]),
        members = text(&status["mastered"]["members"]),
        lag = text(&status["mesh"]["lag"]),
    )
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::certs::Revoked;
    use crate::grants::{Grant, UserChange, Users};

    #[test]
    fn debug_of_an_api_request_never_shows_its_secret() {
        let body: CliBody = serde_json::from_str(
            r#"{"args": ["password", "change", "alice"], "secret": "Tr0ub4dor-3"}"#,
        )
        .unwrap();
        assert!(!format!("{body:?}").contains("Tr0ub4dor-3"), "{body:?}");
        let (reply, _rx) = oneshot::channel();
        let job = AdminJob {
            cert: None,
            need: Need::Command,
            args: Some(body.args.clone()),
            secret: body.secret.clone(),
            reply,
        };
        assert!(!format!("{job:?}").contains("Tr0ub4dor-3"), "{job:?}");
    }

    fn users() -> Access {
        let mut users = Users::default();
        for (name, grant) in [
            ("boss", Some("root")),
            ("reader", Some("guest:*")),
            ("writer", Some("admin:default")),
            ("other", Some("admin:ns1")),
            ("nobody", None),
        ] {
            let name: UserName = name.parse().unwrap();
            users.apply(&UserChange::Create(name.clone())).unwrap();
            if let Some(grant) = grant {
                users
                    .apply(&UserChange::AddGrant(name, grant.parse::<Grant>().unwrap()))
                    .unwrap();
            }
        }
        Access {
            users,
            revoked: Revoked::default(),
        }
    }

    /// A certificate naming `cn`, with a serial derived from it.
    fn cert(cn: &str) -> ClientCert {
        ClientCert {
            cn: Some(cn.to_string()),
            serial: Serial::from_der_integer(cn.as_bytes()),
        }
    }

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(String::from).collect()
    }

    fn decide(user: &str, line: &str) -> Result<(), (u16, String)> {
        check(
            &users(),
            Some(&cert(user)),
            &Need::Command,
            Some(&args(line)),
        )
    }

    #[test]
    fn commands_map_to_the_grants_table() {
        let ns = || Namespace::from_str_checked(DATA_NAMESPACE);
        let cases = [
            ("event list", Ok(Action::Read(ns()))),
            ("fingerprint list", Ok(Action::Read(ns()))),
            ("exception list", Ok(Action::Read(ns()))),
            (
                "event append --kind login --user u --target t",
                Ok(Action::Write(ns())),
            ),
            (
                "exception set --user u --field f --value v",
                Ok(Action::Write(ns())),
            ),
            ("status", Ok(Action::ReadCluster)),
            ("config list", Ok(Action::ReadCluster)),
            (
                "config set password.min-length 12",
                Ok(Action::ClusterAdmin),
            ),
            ("bundle create --out /tmp/b", Ok(Action::ClusterAdmin)),
            ("licence install /tmp/l", Ok(Action::ClusterAdmin)),
            ("user create bob", Ok(Action::UserAdmin)),
            ("user list", Ok(Action::ReadCluster)),
            ("ha failback", Ok(Action::HaOps)),
            ("backup --out /tmp/x", Ok(Action::Backup)),
        ];
        for (line, want) in cases {
            let cli =
                Cli::try_parse_from(std::iter::once("meshward".to_string()).chain(args(line)))
                    .unwrap();
            assert_eq!(
                action_for(&cli.command).map_err(|_| ()),
                want.map_err(|_: ()| ()),
                "{line}"
            );
        }
        for line in [
            "fault heal",
            "run",
            "audit record --stdin",
            "restore /x --mek /y",
        ] {
            let cli =
                Cli::try_parse_from(std::iter::once("meshward".to_string()).chain(args(line)))
                    .unwrap();
            assert!(action_for(&cli.command).is_err(), "{line}");
        }
    }

    #[test]
    fn requests_are_decided_by_the_grants_of_the_certificate_user() {
        assert_eq!(decide("boss", "config set password.min-length 12"), Ok(()));
        assert_eq!(decide("reader", "status"), Ok(()));
        assert_eq!(decide("reader", "event list"), Ok(()));
        assert_eq!(
            decide("reader", "config set password.min-length 12")
                .unwrap_err()
                .0,
            403
        );
        assert_eq!(
            decide("reader", "event append --kind login --user u --target t")
                .unwrap_err()
                .0,
            403
        );
        assert_eq!(
            decide("writer", "event append --kind login --user u --target t"),
            Ok(())
        );
        assert_eq!(decide("writer", "status").unwrap_err().0, 403);
        assert_eq!(decide("other", "event list").unwrap_err().0, 403);
        assert_eq!(decide("nobody", "status").unwrap_err().0, 403);
        assert_eq!(decide("ghost", "status").unwrap_err().0, 403);
        assert_eq!(decide("boss", "fault heal").unwrap_err().0, 403);
        assert_eq!(decide("boss", "no-such-command").unwrap_err().0, 400);
        assert_eq!(decide("boss", "status --data /etc").unwrap_err().0, 400);
        assert_eq!(check(&users(), None, &Need::User, None).unwrap_err().0, 403);
        assert_eq!(
            check(&users(), Some(&cert("nobody")), &Need::User, None),
            Ok(())
        );
        assert_eq!(
            check(&users(), Some(&cert("Bad CN!")), &Need::User, None)
                .unwrap_err()
                .0,
            403
        );
        let no_cn = ClientCert {
            cn: None,
            ..cert("boss")
        };
        assert_eq!(
            check(&users(), Some(&no_cn), &Need::User, None)
                .unwrap_err()
                .0,
            403
        );
    }

    #[test]
    fn a_revoked_certificate_is_refused_whoever_it_names() {
        let mut access = users();
        let revoked = cert("boss");
        let records = crate::certs::tests::verified(vec![revoked.serial.revocation()]);
        access.revoked = Revoked::fold(&records).unwrap();
        let (code, message) = check(&access, Some(&revoked), &Need::User, None).unwrap_err();
        assert_eq!(code, 401);
        assert!(
            message.contains(&format!("(serial {}) was revoked", revoked.serial)),
            "{message}"
        );
        // Another certificate of the same user, and other users, still pass.
        let other = ClientCert {
            serial: "01".parse().unwrap(),
            ..cert("boss")
        };
        assert_eq!(check(&access, Some(&other), &Need::User, None), Ok(()));
        assert_eq!(
            check(&access, Some(&cert("reader")), &Need::User, None),
            Ok(())
        );
    }

    #[test]
    fn prometheus_text_has_one_sample_per_line() {
        let status = json!({"mastered": {"epoch": 3, "version": 9},
            "mesh": {"peers": {"ab": {}}, "core": {"sync_rounds": 4}, "transport": {"connected_peers": 1},
                "store": {"writes_refused": 2, "disk_full": true}}});
        let text = prometheus(&status);
        assert!(text.contains("meshward_epoch 3\n"));
        assert!(text.contains("meshward_store_writes_refused 2\n"));
        assert!(text.contains("meshward_store_disk_full 1\n"));
        assert!(text.contains("meshward_core_sync_rounds 4\n"));
        assert!(text.contains("meshward_transport_connected_peers 1\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.split_once(' ').unwrap();
            assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
            value.parse::<f64>().unwrap();
        }
    }

    #[test]
    fn the_status_page_lists_members_and_escapes_text() {
        let status = json!({"role": "leader", "ha": {"state": "active", "members": [
            {"address": "127.0.0.1:1", "id": "ab", "leader": true, "primary": true,
             "state": "active", "connected": null, "behind": 0, "last_seen_ms": null},
            {"address": "<script>", "id": "cd", "state": "standby"}]}});
        let page = status_page(&status);
        assert!(page.contains("<td>127.0.0.1:1</td>"), "{page}");
        assert!(page.contains("leader, primary"), "{page}");
        assert!(
            page.contains("&lt;script&gt;") && !page.contains("<script>"),
            "{page}"
        );
    }

    #[test]
    fn the_openapi_document_is_json_and_lists_every_endpoint() {
        let doc: Value = serde_json::from_str(OPENAPI).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        for path in ["/", "/v1/status", "/v1/cli", "/metrics", "/openapi.json"] {
            assert!(doc["paths"].get(path).is_some(), "{path}");
        }
        // Every operation may be rate-limited, and says so.
        for (path, operations) in doc["paths"].as_object().unwrap() {
            for (method, operation) in operations.as_object().unwrap() {
                assert!(
                    operation["responses"].get("429").is_some(),
                    "{method} {path} does not document 429"
                );
            }
        }
        assert!(
            doc["components"]["responses"]["TooManyRequests"]["headers"]
                .get("Retry-After")
                .is_some()
        );
    }

    proptest! {
        /// Whatever the command line, the decision agrees with the authorizer applied to the
        /// command's mapped action, and nothing panics.
        #[test]
        fn decisions_follow_the_authorizer(
            words in proptest::collection::vec(prop_oneof![
                Just("event"), Just("list"), Just("append"), Just("config"), Just("set"),
                Just("get"), Just("user"), Just("create"), Just("ha"), Just("failback"),
                Just("status"), Just("fault"), Just("heal"), Just("--kind"), Just("login"),
                Just("--user"), Just("--target"), Just("x"), Just("fingerprint"),
                Just("exception"), Just("backup"), Just("--out"), Just("/tmp/x"), Just("\u{0}"),
            ], 0..8),
            user in prop_oneof![Just("boss"), Just("reader"), Just("writer"), Just("other"),
                Just("nobody"), Just("ghost")],
        ) {
            let args: Vec<String> = words.iter().map(|w| w.to_string()).collect();
            let got = check(&users(), Some(&cert(user)), &Need::Command, Some(&args));
            let users = users().users;
            let grants = users.grants(&user.parse().unwrap());
            let parsed = Cli::try_parse_from(std::iter::once("meshward".to_string()).chain(args.clone()));
            match (grants, parsed) {
                (None, _) => prop_assert_eq!(got.unwrap_err().0, 403),
                (Some(_), Err(_)) => prop_assert_eq!(got.unwrap_err().0, 400),
                (Some(grants), Ok(cli)) => match action_for(&cli.command) {
                    Err(_) => prop_assert_eq!(got.unwrap_err().0, 403),
                    Ok(action) => prop_assert_eq!(
                        got.is_ok(),
                        authorize(grants, &action) == Decision::Allow
                    ),
                },
            }
        }
    }
}
