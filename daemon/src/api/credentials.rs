//! The routes of credentials (`/v1/credentials/...`, see [`meshward_api::credentials`]). The
//! account's path is checked before the caller is authorized, so a bad name is a 400 naming
//! the field for every caller, not a 403.

use axum::Extension;
use axum::extract::{Path, State};
use axum::response::Response;
use meshward_api::credentials::{
    ConflictQuery, CredentialConflict, CredentialHistory, RevealCredential, RevealedSecret,
    RotateCredential, RotationInfo, SetCredential,
};
use meshward_api::{Problem, Request};
use meshward_node::ops::credentials::address;

use super::{ApiState, Body, Caller, Params, problem_response, run};

type S = State<ApiState>;
type C = Extension<Caller>;
type Account = Path<(String, String, String)>;

/// Runs `request` once the account's path is valid.
async fn checked(
    s: &ApiState,
    c: Caller,
    path: &(String, String, String),
    request: Request,
) -> Response {
    match address(&path.0, &path.1, &path.2) {
        Ok(_) => run(s, c, request).await,
        Err(problem) => problem_response(problem),
    }
}

/// Set an account's secret to the one given (write on the namespace). A new rotation by
/// this node; the answer never holds the secret.
#[utoipa::path(put, path = "/v1/credentials/{namespace}/{device}/{account}", tag = "credentials",
    params(("namespace" = String, Path), ("device" = String, Path), ("account" = String, Path)),
    request_body = SetCredential,
    responses((status = 200, body = RotationInfo), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 503, body = Problem, content_type = "application/problem+json")))]
pub(super) async fn set_credential(
    State(s): S,
    Extension(c): C,
    Path(path): Account,
    Body(body): Body<SetCredential>,
) -> Response {
    let request = Request::SetCredential {
        namespace: path.0.clone(),
        device: path.1.clone(),
        account: path.2.clone(),
        body,
    };
    checked(&s, c, &path, request).await
}

/// The history of an account as this node holds it: metadata only, never a secret (read on
/// the namespace).
#[utoipa::path(get, path = "/v1/credentials/{namespace}/{device}/{account}", tag = "credentials",
    params(("namespace" = String, Path), ("device" = String, Path), ("account" = String, Path)),
    responses((status = 200, body = CredentialHistory), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub(super) async fn credential_history(
    State(s): S,
    Extension(c): C,
    Path(path): Account,
) -> Response {
    let request = Request::CredentialHistory {
        namespace: path.0.clone(),
        device: path.1.clone(),
        account: path.2.clone(),
    };
    checked(&s, c, &path, request).await
}

/// Rotate an account's secret: the one given, or a generated one (write on the namespace).
/// The answer never holds the secret: reveal it (audited).
#[utoipa::path(post, path = "/v1/credentials/{namespace}/{device}/{account}/rotate", tag = "credentials",
    params(("namespace" = String, Path), ("device" = String, Path), ("account" = String, Path)),
    request_body = RotateCredential,
    responses((status = 200, body = RotationInfo), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 503, body = Problem, content_type = "application/problem+json")))]
pub(super) async fn rotate_credential(
    State(s): S,
    Extension(c): C,
    Path(path): Account,
    Body(body): Body<RotateCredential>,
) -> Response {
    let request = Request::RotateCredential {
        namespace: path.0.clone(),
        device: path.1.clone(),
        account: path.2.clone(),
        body,
    };
    checked(&s, c, &path, request).await
}

/// Reveal an account's current secret, or one version's (write on the namespace: `admin:NS`
/// or `root`). Recorded in this node's audit before it is answered.
#[utoipa::path(post, path = "/v1/credentials/{namespace}/{device}/{account}/reveal", tag = "credentials",
    params(("namespace" = String, Path), ("device" = String, Path), ("account" = String, Path)),
    request_body = RevealCredential,
    responses((status = 200, body = RevealedSecret), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 503, body = Problem, content_type = "application/problem+json")))]
pub(super) async fn reveal_credential(
    State(s): S,
    Extension(c): C,
    Path(path): Account,
    Body(body): Body<RevealCredential>,
) -> Response {
    let request = Request::RevealCredential {
        namespace: path.0.clone(),
        device: path.1.clone(),
        account: path.2.clone(),
        body,
    };
    checked(&s, c, &path, request).await
}

/// Accounts rotated concurrently that no later rotation has settled, with their heads
/// (read on the namespace; without `namespace`, read on every namespace).
#[utoipa::path(get, path = "/v1/credentials/conflicts", tag = "credentials",
    params(ConflictQuery),
    responses((status = 200, body = Vec<CredentialConflict>), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json")))]
pub(super) async fn credential_conflicts(
    State(s): S,
    Extension(c): C,
    Params(query): Params<ConflictQuery>,
) -> Response {
    run(&s, c, Request::CredentialConflicts(query)).await
}
