//! The node's API: one axum router ([`router`]) over the operations of [`meshward_node::ops`], served
//! through two doors.
//!
//! - **The local socket** `DATA/meshward.sock` (mode 0600: only the node's own user can
//!   connect). Its caller is the node's local operator, with `root` rights. The CLI uses it.
//! - **HTTPS** with a required client certificate (`meshward run --admin-listen ADDR`, see
//!   [`crate::admin`]): the certificate's CN is the user, whose grants decide (per request,
//!   also on open connections) what it may do ([`meshward_node::ops::access`]).
//!
//! Every handler is thin: it parses the path, query and JSON body into one
//! [`meshward_api::Request`], sends it with the caller to the daemon actor (a bounded channel,
//! [`JOB_QUEUE`]), and answers the actor's [`meshward_api::Reply`] as JSON (`204` when there is
//! nothing to show) or its [`Problem`] as `application/problem+json` with the status its kind
//! means: 400 (the `field` names what was wrong), 401, 403, 404, 409, 413, 415, 429 (with
//! `Retry-After`) and 503 (the leader unreachable, a full disk, a sealed node, not in a
//! cluster).
//!
//! The OpenAPI 3.1 document is generated from the handlers ([`openapi`]), served at
//! `/openapi.json`, and kept in `docs/openapi.json` (a test checks both are equal).

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use meshward_api::{PROBLEM_JSON, Problem, ProblemKind, Reply, Request};
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot};

mod backup;
mod credentials;
mod health;
mod local;
mod pages;
mod routes;
mod tables;
pub mod watch;

pub use backup::BackupSource;
pub use health::{HEALTH_CONNECTIONS, HealthServer, serve_health};
pub use local::serve_local;
pub use pages::{prometheus, status_page};
pub use routes::{openapi, router};

/// Requests waiting for the actor.
pub const JOB_QUEUE: usize = 64;
pub use meshward_api::MAX_BODY;

/// What the API knows of a connection's verified client certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCert {
    /// Its subject CN, the user name (`None`: it has none).
    pub cn: Option<String>,
    /// Its serial, for the revocation list.
    pub serial: meshward_node::certs::Serial,
}

/// Who sends a request.
#[derive(Clone, Debug)]
pub enum Caller {
    /// The node's local operator, through the local socket: `root`.
    Local,
    /// An HTTPS client with this verified certificate (`None`: it did not parse).
    Cert(Option<ClientCert>),
}

impl Caller {
    /// Who it is, for the HA command log: `local operator`, or the certificate's user.
    pub fn who(&self) -> String {
        match self {
            Caller::Local => "local operator".into(),
            Caller::Cert(Some(ClientCert { cn: Some(cn), .. })) => format!("user {cn}"),
            Caller::Cert(_) => "a certificate without a user".into(),
        }
    }
}

/// What a request needs checked and done by the actor.
#[derive(Debug)]
pub enum Job {
    /// Run this request.
    Run(Request),
    /// Only check that the caller is a user (`/metrics`, `/openapi.json`).
    CheckUser,
    /// Hand out what a backup is written from (root only).
    Backup(oneshot::Sender<backup::BackupSource>),
    /// A step of a watch stream ([`watch`]).
    Watch(watch::WatchJob),
}

/// A request for the daemon actor.
#[derive(Debug)]
pub struct ApiJob {
    /// Who asks.
    pub caller: Caller,
    /// What to do.
    pub job: Job,
    /// Where the actor answers.
    pub reply: oneshot::Sender<Result<Reply, Problem>>,
}

/// The router's state.
#[derive(Clone, Debug)]
pub struct ApiState {
    /// The actor's queue.
    pub jobs: mpsc::Sender<ApiJob>,
    /// The watch streams' limits.
    pub watch: watch::WatchDoor,
}

/// Sends a job to the actor and waits for its answer.
pub async fn ask(state: &ApiState, caller: Caller, job: Job) -> Result<Reply, Problem> {
    let stopped = || Problem::new(ProblemKind::Unavailable, "the node is stopping");
    let (tx, rx) = oneshot::channel();
    let job = ApiJob {
        caller,
        job,
        reply: tx,
    };
    state.jobs.send(job).await.map_err(|_| stopped())?;
    rx.await.map_err(|_| stopped())?
}

/// Runs `request` for `caller` and answers it.
pub async fn run(state: &ApiState, caller: Caller, request: Request) -> Response {
    answer(ask(state, caller, Job::Run(request)).await)
}

/// The HTTP answer of a reply or a problem.
pub fn answer(result: Result<Reply, Problem>) -> Response {
    match result {
        Ok(Reply::Empty) => StatusCode::NO_CONTENT.into_response(),
        Ok(reply) => Json(reply).into_response(),
        Err(problem) => problem_response(problem),
    }
}

/// A problem as `application/problem+json`, with `Retry-After` when it says.
pub fn problem_response(problem: Problem) -> Response {
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let retry = problem.retry_after_s;
    let body = serde_json::to_vec(&problem).unwrap_or_default();
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    if let Some(secs) = retry
        && let Ok(value) = HeaderValue::from_str(&secs.to_string())
    {
        headers.insert(header::RETRY_AFTER, value);
    }
    response
}

/// A JSON body: 415 unless `Content-Type` is JSON, 413 over [`MAX_BODY`], 400 naming the
/// field that does not parse.
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<S, T> FromRequest<S> for Body<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = Response;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                let v = v.split(';').next().unwrap_or_default().trim();
                v == "application/json" || v.ends_with("+json")
            });
        if !json {
            return Err(problem_response(Problem::new(
                ProblemKind::UnsupportedMediaType,
                "send the body as JSON with `Content-Type: application/json`",
            )));
        }
        let bytes =
            axum::body::Bytes::from_request(req, state)
                .await
                .map_err(|e: BytesRejection| {
                    let kind = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                        ProblemKind::TooLarge
                    } else {
                        ProblemKind::BadInput
                    };
                    problem_response(Problem::new(kind, e.body_text()))
                })?;
        parse_body(&bytes).map(Body).map_err(problem_response)
    }
}

/// A query string: 400 naming the parameter that does not parse.
#[derive(Debug)]
pub struct Params<T>(pub T);

impl<S, T> FromRequestParts<S> for Params<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parse_query(parts.uri.query().unwrap_or_default())
            .map(Params)
            .map_err(problem_response)
    }
}

/// Parses a query string, naming the parameter that is wrong.
pub fn parse_query<T: DeserializeOwned>(query: &str) -> Result<T, Problem> {
    let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
    serde_path_to_error::deserialize(de).map_err(|e| named(&e, "query"))
}

/// A parse error as a 400 naming the field at its path (`whole`: the input had none).
fn named<E: std::fmt::Display>(e: &serde_path_to_error::Error<E>, whole: &str) -> Problem {
    let path = e.path().to_string();
    let field = if path == "." || path == "?" {
        whole.to_string()
    } else {
        path
    };
    Problem::bad_input(field, e.inner().to_string())
}

/// Parses a JSON body, naming the path of the field that is wrong.
pub fn parse_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| named(&e, "body"))?;
    de.end()
        .map_err(|e| Problem::bad_input("body", e.to_string()))?;
    Ok(value)
}

#[cfg(test)]
mod tests;
