//! The routes: each parses its path, query and body into one [`Request`] and runs it.

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::{Extension, Router};
use meshward_api::cluster::{
    Bundle, ChangePassword, ConfigEntry, CreateBundle, ImportMastered, Imported, InstallLicence,
    IssueCertificate, IssuedCertificate, LicenceInfo, PasswordChecked, PasswordEntry,
    RevokeCertificate, RevokedEntry, UserEntry, Written,
};
use meshward_api::local::{
    AuditMeshVerified, AuditQuery, AuditRow, AuditVerified, RecordAudit, Recorded, SetValue,
    Setting,
};
use meshward_api::node::{
    AdoptRecord, Demote, Failover, HaDone, HaLogEntry, HaLogQuery, HaStatus, Health, HealthQuery,
    MakeStandalone, Status, SupersededRecord,
};
use meshward_api::shared::{
    AppendEvents, Appended, Approve, EventPage, EventQuery, ExceptionRow, FingerprintCheck,
    FingerprintRow, HostKey, ObserveFingerprint, SetException,
};
use meshward_api::{FaultDone, FaultRequest, Problem, Reply, Request};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiState, Body, Caller, Job, Params, answer, ask, problem_response, run};

type S = State<ApiState>;
type C = Extension<Caller>;

/// The OpenAPI document's header; the paths come from the handlers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "meshward API",
        description = "The API of a meshward node, on its local socket (DATA/meshward.sock; the \
                       caller is root) and over HTTPS with a required client certificate (its \
                       CN is the user; grants decide). JSON in and out; errors are RFC 9457 \
                       problem documents (application/problem+json) with a stable `type` and \
                       the `field` that was wrong."
    ),
    components(schemas(Problem))
)]
struct ApiDoc;

/// The router and its OpenAPI document.
fn routes(state: ApiState) -> (Router, utoipa::openapi::OpenApi) {
    let (router, api) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(append_events, list_events))
        .routes(routes!(observe_fingerprint, list_fingerprints))
        .routes(routes!(check_fingerprint))
        .routes(routes!(approve))
        .routes(routes!(set_exception, delete_exception))
        .routes(routes!(list_exceptions))
        .routes(routes!(record_audit, list_audit))
        .routes(routes!(verify_audit))
        .routes(routes!(verify_audit_mesh))
        .routes(routes!(list_local))
        .routes(routes!(get_local, set_local))
        .routes(routes!(list_config))
        .routes(routes!(get_config, set_config, unset_config))
        .routes(routes!(super::tables::list_tables))
        .routes(routes!(super::tables::list_rows))
        .routes(routes!(
            super::tables::get_row,
            super::tables::put_row,
            super::tables::delete_row
        ))
        .routes(routes!(super::credentials::credential_conflicts))
        .routes(routes!(
            super::credentials::set_credential,
            super::credentials::credential_history
        ))
        .routes(routes!(super::credentials::rotate_credential))
        .routes(routes!(super::credentials::reveal_credential))
        .routes(routes!(list_users))
        .routes(routes!(create_user, delete_user))
        .routes(routes!(grant, revoke_grant))
        .routes(routes!(issue_certificate))
        .routes(routes!(revoke_certificate, list_revoked))
        .routes(routes!(get_licence, install_licence))
        .routes(routes!(create_bundle))
        .routes(routes!(change_password))
        .routes(routes!(verify_password))
        .routes(routes!(list_passwords))
        .routes(routes!(import_mastered))
        .routes(routes!(ha))
        .routes(routes!(demote))
        .routes(routes!(failback))
        .routes(routes!(failover))
        .routes(routes!(make_standalone))
        .routes(routes!(superseded))
        .routes(routes!(adopt))
        .routes(routes!(ha_log))
        .routes(routes!(status))
        .routes(routes!(health))
        .routes(routes!(fault))
        .routes(routes!(unseal))
        .routes(routes!(super::backup::backup))
        .routes(routes!(super::watch::watch_stream))
        .split_for_parts();
    let router = router
        .route("/metrics", axum::routing::get(metrics))
        .route("/", axum::routing::get(page))
        .route("/openapi.json", axum::routing::get(openapi_json))
        .fallback(|| async {
            problem_response(Problem::new(
                meshward_api::ProblemKind::NotFound,
                "no such endpoint; see /openapi.json",
            ))
        })
        .with_state(state);
    (router, api)
}

/// The API's router over the actor's queue in `state`. The door adds the [`Caller`].
pub fn router(state: ApiState) -> Router {
    routes(state).0
}

/// The OpenAPI document generated from the handlers (kept in `docs/openapi.json`).
pub fn openapi() -> String {
    let (tx, _rx) = tokio::sync::mpsc::channel(1);
    let (_, api) = routes(ApiState {
        jobs: tx,
        watch: Default::default(),
    });
    api.to_pretty_json().unwrap_or_default()
}

/// Append 1 to 10 000 events written by this node, in one commit.
#[utoipa::path(post, path = "/v1/events", tag = "events", request_body = AppendEvents,
    responses((status = 200, body = Appended), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 413, body = Problem, content_type = "application/problem+json"), (status = 415, body = Problem, content_type = "application/problem+json"), (status = 503, body = Problem, content_type = "application/problem+json")))]
async fn append_events(State(s): S, Extension(c): C, Body(b): Body<AppendEvents>) -> Response {
    run(&s, c, Request::AppendEvents(b)).await
}

/// List events of every writer, filtered, a page at a time (`next` → `after=`).
#[utoipa::path(get, path = "/v1/events", tag = "events", params(EventQuery),
    responses((status = 200, body = EventPage), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json")))]
async fn list_events(State(s): S, Extension(c): C, Params(q): Params<EventQuery>) -> Response {
    run(&s, c, Request::ListEvents(q)).await
}

/// Record that this node observed a host key.
#[utoipa::path(post, path = "/v1/fingerprints", tag = "fingerprints", request_body = ObserveFingerprint,
    responses((status = 200, body = FingerprintRow), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json")))]
async fn observe_fingerprint(
    State(s): S,
    Extension(c): C,
    Body(b): Body<ObserveFingerprint>,
) -> Response {
    run(&s, c, Request::ObserveFingerprint(b)).await
}

/// Fingerprints observed by every node, with the leader's approval.
#[utoipa::path(get, path = "/v1/fingerprints", tag = "fingerprints",
    responses((status = 200, body = [FingerprintRow]), (status = 403, body = Problem, content_type = "application/problem+json")))]
async fn list_fingerprints(State(s): S, Extension(c): C) -> Response {
    run(&s, c, Request::ListFingerprints).await
}

/// What this node does with a host key: `approved`, `unknown` or `mismatch` by the leader's
/// approvals, and allow, warn or deny by this node's `fingerprint-enforcement`.
#[utoipa::path(post, path = "/v1/fingerprints/check", tag = "fingerprints", request_body = HostKey,
    responses((status = 200, body = FingerprintCheck), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json")))]
async fn check_fingerprint(State(s): S, Extension(c): C, Body(b): Body<HostKey>) -> Response {
    run(&s, c, Request::CheckFingerprint(b)).await
}

/// Approve a host key for the cluster, or withdraw the approval (mastered).
#[utoipa::path(put, path = "/v1/fingerprints/approvals", tag = "fingerprints", request_body = Approve,
    responses((status = 200, body = Written), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 503, body = Problem, content_type = "application/problem+json")))]
async fn approve(State(s): S, Extension(c): C, Body(b): Body<Approve>) -> Response {
    run(&s, c, Request::Approve(b)).await
}

/// Set one of this node's user data exceptions.
#[utoipa::path(put, path = "/v1/exceptions/{user}/{field}", tag = "exceptions", request_body = SetException,
    params(("user" = String, Path), ("field" = String, Path)),
    responses((status = 200, body = ExceptionRow), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json")))]
async fn set_exception(
    State(s): S,
    Extension(c): C,
    Path((user, field)): Path<(String, String)>,
    Body(b): Body<SetException>,
) -> Response {
    let value = b.value;
    run(&s, c, Request::SetException { user, field, value }).await
}

/// Remove one of this node's user data exceptions.
#[utoipa::path(delete, path = "/v1/exceptions/{user}/{field}", tag = "exceptions",
    params(("user" = String, Path), ("field" = String, Path)),
    responses((status = 204), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json")))]
async fn delete_exception(
    State(s): S,
    Extension(c): C,
    Path((user, field)): Path<(String, String)>,
) -> Response {
    run(&s, c, Request::DeleteException { user, field }).await
}

/// User data exceptions of every node.
#[utoipa::path(get, path = "/v1/exceptions", tag = "exceptions",
    responses((status = 200, body = [ExceptionRow]), (status = 403, body = Problem, content_type = "application/problem+json")))]
async fn list_exceptions(State(s): S, Extension(c): C) -> Response {
    run(&s, c, Request::ListExceptions).await
}

/// Append 1 to 10 000 records to this node's session audit; durable when answered.
#[utoipa::path(post, path = "/v1/audit", tag = "audit", request_body = RecordAudit,
    responses((status = 200, body = Recorded), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 503, body = Problem, content_type = "application/problem+json")))]
async fn record_audit(State(s): S, Extension(c): C, Body(b): Body<RecordAudit>) -> Response {
    run(&s, c, Request::RecordAudit(b)).await
}

/// This node's session audit records.
#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = [AuditRow]), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json")))]
async fn list_audit(State(s): S, Extension(c): C, Params(q): Params<AuditQuery>) -> Response {
    run(&s, c, Request::ListAudit(q)).await
}

/// Check the whole audit chain; names the first altered, removed or reordered record.
#[utoipa::path(get, path = "/v1/audit/verify", tag = "audit",
    responses((status = 200, body = AuditVerified), (status = 403, body = Problem, content_type = "application/problem+json")))]
async fn verify_audit(State(s): S, Extension(c): C) -> Response {
    run(&s, c, Request::VerifyAudit).await
}

/// Compare this node's audit chain with the head of it each peer holds (signed by this node
/// into the shared table `audit-heads`): per peer agrees, disagrees (both hashes), no-row,
/// unreachable or cannot-answer. A rewritten audit, even with its chain recomputed,
/// disagrees.
#[utoipa::path(get, path = "/v1/audit/verify-mesh", tag = "audit",
    responses((status = 200, body = AuditMeshVerified), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 503, body = Problem, content_type = "application/problem+json")))]
async fn verify_audit_mesh(State(s): S, Extension(c): C) -> Response {
    run(&s, c, Request::VerifyAuditAgainstMesh).await
}

/// This node's node-only settings.
#[utoipa::path(get, path = "/v1/local", tag = "local",
    responses((status = 200, body = [Setting]), (status = 403, body = Problem, content_type = "application/problem+json")))]
async fn list_local(State(s): S, Extension(c): C) -> Response {
    run(&s, c, Request::ListLocal).await
}

/// One node-only setting.
#[utoipa::path(get, path = "/v1/local/{name}", tag = "local", params(("name" = String, Path)),
    responses((status = 200, body = Setting), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn get_local(State(s): S, Extension(c): C, Path(name): Path<String>) -> Response {
    run(&s, c, Request::GetLocal { name }).await
}

/// Set a node-only setting.
#[utoipa::path(put, path = "/v1/local/{name}", tag = "local", params(("name" = String, Path)),
    request_body = SetValue, responses((status = 200, body = Setting), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json")))]
async fn set_local(
    State(s): S,
    Extension(c): C,
    Path(name): Path<String>,
    Body(b): Body<SetValue>,
) -> Response {
    let value = b.value;
    run(&s, c, Request::SetLocal { name, value }).await
}

/// Every cluster setting that is set, as this node holds it.
#[utoipa::path(get, path = "/v1/config", tag = "config",
    responses((status = 200, body = [ConfigEntry]), (status = 403, body = Problem, content_type = "application/problem+json")))]
async fn list_config(State(s): S, Extension(c): C) -> Response {
    run(&s, c, Request::ListConfig).await
}

/// One cluster setting (`value` null while it has its default).
#[utoipa::path(get, path = "/v1/config/{key}", tag = "config", params(("key" = String, Path)),
    responses((status = 200, body = ConfigEntry), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn get_config(State(s): S, Extension(c): C, Path(key): Path<String>) -> Response {
    run(&s, c, Request::GetConfig { key }).await
}

/// Set a cluster setting (mastered).
#[utoipa::path(put, path = "/v1/config/{key}", tag = "config", params(("key" = String, Path)),
    request_body = SetValue, responses((status = 200, body = Written), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 503, body = Problem, content_type = "application/problem+json")))]
async fn set_config(
    State(s): S,
    Extension(c): C,
    Path(key): Path<String>,
    Body(b): Body<SetValue>,
) -> Response {
    let value = b.value;
    run(&s, c, Request::SetConfig { key, value }).await
}

/// Return a cluster setting to its default (mastered).
#[utoipa::path(delete, path = "/v1/config/{key}", tag = "config", params(("key" = String, Path)),
    responses((status = 200, body = Written), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 503, body = Problem, content_type = "application/problem+json")))]
async fn unset_config(State(s): S, Extension(c): C, Path(key): Path<String>) -> Response {
    run(&s, c, Request::UnsetConfig { key }).await
}

/// Admin users and their grants.
#[utoipa::path(get, path = "/v1/users", tag = "users",
    responses((status = 200, body = [UserEntry]), (status = 403, body = Problem, content_type = "application/problem+json")))]
async fn list_users(State(s): S, Extension(c): C) -> Response {
    run(&s, c, Request::ListUsers).await
}

/// Create an admin user with no grant (mastered).
#[utoipa::path(put, path = "/v1/users/{name}", tag = "users", params(("name" = String, Path)),
    responses((status = 200, body = Written), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json"), (status = 503, body = Problem, content_type = "application/problem+json")))]
async fn create_user(State(s): S, Extension(c): C, Path(name): Path<String>) -> Response {
    run(&s, c, Request::CreateUser { name }).await
}

/// Delete a user and all its grants (mastered).
#[utoipa::path(delete, path = "/v1/users/{name}", tag = "users", params(("name" = String, Path)),
    responses((status = 200, body = Written), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 503, body = Problem, content_type = "application/problem+json")))]
async fn delete_user(State(s): S, Extension(c): C, Path(name): Path<String>) -> Response {
    run(&s, c, Request::DeleteUser { name }).await
}

/// Give a user a grant: root, admin:NS, guest:NS or guest:* (mastered).
#[utoipa::path(put, path = "/v1/users/{name}/grants/{grant}", tag = "users",
    params(("name" = String, Path), ("grant" = String, Path)),
    responses((status = 200, body = Written), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json"), (status = 503, body = Problem, content_type = "application/problem+json")))]
async fn grant(
    State(s): S,
    Extension(c): C,
    Path((name, grant)): Path<(String, String)>,
) -> Response {
    run(&s, c, Request::Grant { name, grant }).await
}

/// Take a grant back (mastered).
#[utoipa::path(delete, path = "/v1/users/{name}/grants/{grant}", tag = "users",
    params(("name" = String, Path), ("grant" = String, Path)),
    responses((status = 200, body = Written), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 503, body = Problem, content_type = "application/problem+json")))]
async fn revoke_grant(
    State(s): S,
    Extension(c): C,
    Path((name, grant)): Path<(String, String)>,
) -> Response {
    run(&s, c, Request::RevokeGrant { name, grant }).await
}

/// Issue a client certificate for a user (the leader's CA signs it; the key is in the answer).
#[utoipa::path(post, path = "/v1/users/{name}/certificates", tag = "users",
    params(("name" = String, Path)), request_body = IssueCertificate,
    responses((status = 200, body = IssuedCertificate), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 503, body = Problem, content_type = "application/problem+json")))]
async fn issue_certificate(
    State(s): S,
    Extension(c): C,
    Path(name): Path<String>,
    Body(body): Body<IssueCertificate>,
) -> Response {
    run(&s, c, Request::IssueCertificate { name, body }).await
}

/// Revoke a client certificate by serial, whichever CA issued it (mastered).
#[utoipa::path(post, path = "/v1/certificates/revoked", tag = "users", request_body = RevokeCertificate,
    responses((status = 200, body = Written), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json"), (status = 503, body = Problem, content_type = "application/problem+json")))]
async fn revoke_certificate(
    State(s): S,
    Extension(c): C,
    Body(b): Body<RevokeCertificate>,
) -> Response {
    run(&s, c, Request::RevokeCertificate(b)).await
}

/// The revoked serials.
#[utoipa::path(get, path = "/v1/certificates/revoked", tag = "users",
    responses((status = 200, body = [RevokedEntry]), (status = 403, body = Problem, content_type = "application/problem+json")))]
async fn list_revoked(State(s): S, Extension(c): C) -> Response {
    run(&s, c, Request::ListRevoked).await
}

/// The installed licence (null: none).
#[utoipa::path(get, path = "/v1/licence", tag = "cluster",
    responses((status = 200, body = Option<LicenceInfo>), (status = 403, body = Problem, content_type = "application/problem+json")))]
async fn get_licence(State(s): S, Extension(c): C) -> Response {
    run(&s, c, Request::GetLicence).await
}

/// Install a licence file signed by the cluster's licence issuer (mastered).
#[utoipa::path(put, path = "/v1/licence", tag = "cluster", request_body = InstallLicence,
    responses((status = 200, body = Written), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 413, body = Problem, content_type = "application/problem+json"), (status = 503, body = Problem, content_type = "application/problem+json")))]
async fn install_licence(State(s): S, Extension(c): C, Body(b): Body<InstallLicence>) -> Response {
    run(&s, c, Request::InstallLicence(b)).await
}

/// Make a one-time joining bundle (it supersedes any earlier one); the file is in the answer.
/// 409 without a valid licence.
#[utoipa::path(post, path = "/v1/bundles", tag = "cluster", request_body = CreateBundle,
    responses((status = 200, body = Bundle), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json"), (status = 503, body = Problem, content_type = "application/problem+json")))]
async fn create_bundle(State(s): S, Extension(c): C, Body(b): Body<CreateBundle>) -> Response {
    run(&s, c, Request::CreateBundle(b)).await
}

/// Set a local user's password under the leader's policy; the password is in the body only.
#[utoipa::path(post, path = "/v1/passwords/{user}", tag = "cluster",
    params(("user" = String, Path)), request_body = ChangePassword,
    responses((status = 200, body = Written), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 503, body = Problem, content_type = "application/problem+json")))]
async fn change_password(
    State(s): S,
    Extension(c): C,
    Path(user): Path<String>,
    Body(body): Body<ChangePassword>,
) -> Response {
    run(&s, c, Request::ChangePassword { user, body }).await
}

/// Check a password against the hash the leader set for the user, on this node (also during
/// a partition); whether it is valid and whether it expired. Root only: it answers guesses.
#[utoipa::path(post, path = "/v1/passwords/{user}/verify", tag = "cluster",
    params(("user" = String, Path)), request_body = ChangePassword,
    responses((status = 200, body = PasswordChecked), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn verify_password(
    State(s): S,
    Extension(c): C,
    Path(user): Path<String>,
    Body(body): Body<ChangePassword>,
) -> Response {
    run(&s, c, Request::VerifyPassword { user, body }).await
}

/// Users whose password the leader set.
#[utoipa::path(get, path = "/v1/passwords", tag = "cluster",
    responses((status = 200, body = [PasswordEntry]), (status = 403, body = Problem, content_type = "application/problem+json")))]
async fn list_passwords(State(s): S, Extension(c): C) -> Response {
    run(&s, c, Request::ListPasswords).await
}

/// Verify and store the records of a signed mastered bundle.
#[utoipa::path(post, path = "/v1/mastered/import", tag = "cluster", request_body = ImportMastered,
    responses((status = 200, body = Imported), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 413, body = Problem, content_type = "application/problem+json")))]
async fn import_mastered(State(s): S, Extension(c): C, Body(b): Body<ImportMastered>) -> Response {
    run(&s, c, Request::ImportMastered(b)).await
}

/// Leadership as this node sees it: roles and states of every member.
#[utoipa::path(get, path = "/v1/ha", tag = "ha",
    responses((status = 200, body = HaStatus), (status = 403, body = Problem, content_type = "application/problem+json")))]
async fn ha(State(s): S, Extension(c): C) -> Response {
    run(&s, c, Request::Ha).await
}

/// Hand leadership to another member (a majority, that member included, must endorse it).
#[utoipa::path(post, path = "/v1/ha/demote", tag = "ha", request_body = Demote,
    responses((status = 200, body = HaDone), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 503, body = Problem, content_type = "application/problem+json")))]
async fn demote(State(s): S, Extension(c): C, Body(b): Body<Demote>) -> Response {
    run(&s, c, Request::Demote(b)).await
}

/// Hand leadership back to the primary.
#[utoipa::path(post, path = "/v1/ha/failback", tag = "ha",
    responses((status = 200, body = HaDone), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 503, body = Problem, content_type = "application/problem+json")))]
async fn failback(State(s): S, Extension(c): C) -> Response {
    run(&s, c, Request::Failback).await
}

/// Become the leader of the next epoch with a majority's endorsement (the leader is gone).
#[utoipa::path(post, path = "/v1/ha/failover", tag = "ha", request_body = Failover,
    responses((status = 200, body = HaDone), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 503, body = Problem, content_type = "application/problem+json")))]
async fn failover(State(s): S, Extension(c): C, Body(b): Body<Failover>) -> Response {
    run(&s, c, Request::Failover(b)).await
}

/// Leave the cluster, or (on the leader) remove a member.
#[utoipa::path(post, path = "/v1/ha/make-standalone", tag = "ha", request_body = MakeStandalone,
    responses((status = 200, body = HaDone), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 503, body = Problem, content_type = "application/problem+json")))]
async fn make_standalone(State(s): S, Extension(c): C, Body(b): Body<MakeStandalone>) -> Response {
    run(&s, c, Request::MakeStandalone(b)).await
}

/// Mastered records that lost when two chains met, kept for review.
#[utoipa::path(get, path = "/v1/ha/superseded", tag = "ha",
    responses((status = 200, body = [SupersededRecord]), (status = 403, body = Problem, content_type = "application/problem+json")))]
async fn superseded(State(s): S, Extension(c): C) -> Response {
    run(&s, c, Request::Superseded).await
}

/// Sign a superseded record's change again into the current chain (root; a follower forwards
/// it to the leader with the record it holds). 404 when no node on the way holds the record;
/// 409 for roster history or a change the chain already holds.
#[utoipa::path(post, path = "/v1/ha/superseded/adopt", tag = "ha", request_body = AdoptRecord,
    responses((status = 200, body = Written), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json"), (status = 503, body = Problem, content_type = "application/problem+json")))]
async fn adopt(State(s): S, Extension(c): C, Body(b): Body<AdoptRecord>) -> Response {
    run(&s, c, Request::Adopt(b)).await
}

/// This node's HA command log, newest first: who ran what, when, on which node, with what
/// result (local to the node, never replicated).
#[utoipa::path(get, path = "/v1/ha/log", tag = "ha", params(HaLogQuery),
    responses((status = 200, body = [HaLogEntry]), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json")))]
async fn ha_log(State(s): S, Extension(c): C, Params(q): Params<HaLogQuery>) -> Response {
    run(&s, c, Request::HaLog(q)).await
}

/// The node's identity, what its store holds, leadership and its mesh.
#[utoipa::path(get, path = "/v1/status", tag = "node",
    responses((status = 200, body = Status), (status = 403, body = Problem, content_type = "application/problem+json")))]
async fn status(State(s): S, Extension(c): C) -> Response {
    run(&s, c, Request::Status).await
}

/// 200 when the node should take traffic behind a load balancer, else 503 with the reasons.
#[utoipa::path(get, path = "/v1/health", tag = "node", params(HealthQuery),
    responses((status = 200, body = Health), (status = 503, body = Health), (status = 403, body = Problem, content_type = "application/problem+json")))]
pub(super) async fn health(
    State(s): S,
    Extension(c): C,
    Params(q): Params<HealthQuery>,
) -> Response {
    health_answer(ask(&s, c, Job::Run(Request::Health(q))).await)
}

/// A health answer: 503 when unhealthy.
pub(super) fn health_answer(result: Result<Reply, Problem>) -> Response {
    match result {
        Ok(Reply::Health(h)) if !h.healthy => {
            (axum::http::StatusCode::SERVICE_UNAVAILABLE, axum::Json(h)).into_response()
        }
        other => answer(other),
    }
}

/// Fault hooks (builds with `fault-injection` only; the local socket only).
#[utoipa::path(post, path = "/v1/fault/{kind}", tag = "node", params(("kind" = String, Path)),
    request_body = FaultRequest, responses((status = 200, body = FaultDone), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn fault(
    State(s): S,
    Extension(c): C,
    Path(kind): Path<String>,
    Body(b): Body<FaultRequest>,
) -> Response {
    if b.name() != kind {
        return problem_response(Problem::bad_input(
            "fault",
            format!("the body is a {} fault but the path says {kind}", b.name()),
        ));
    }
    run(&s, c, Request::Fault(b)).await
}

/// Install the MEK of a sealed node (409 on a node that runs unsealed).
#[utoipa::path(post, path = "/v1/unseal", tag = "node", request_body = meshward_api::node::Unseal,
    responses((status = 204), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json")))]
async fn unseal(
    State(s): S,
    Extension(c): C,
    Body(b): Body<meshward_api::node::Unseal>,
) -> Response {
    run(&s, c, Request::Unseal(b)).await
}

/// Prometheus text (any user).
async fn metrics(State(s): S, Extension(c): C) -> Response {
    if let Err(p) = ask(&s, c.clone(), Job::CheckUser).await {
        return problem_response(p);
    }
    match ask(&s, Caller::Local, Job::Run(Request::Status)).await {
        Ok(Reply::Status(status)) => {
            let value = serde_json::to_value(&status).unwrap_or_default();
            (
                [(
                    header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                super::prometheus(&value),
            )
                .into_response()
        }
        other => answer(other),
    }
}

/// The HTML status page (guest:* or root).
async fn page(State(s): S, Extension(c): C) -> Response {
    match ask(&s, c, Job::Run(Request::Status)).await {
        Ok(Reply::Status(status)) => {
            let value = serde_json::to_value(&status).unwrap_or_default();
            Html(super::status_page(&value)).into_response()
        }
        other => answer(other),
    }
}

/// The OpenAPI document (any user).
async fn openapi_json(State(s): S, Extension(c): C) -> Response {
    match ask(&s, c, Job::CheckUser).await {
        Ok(_) => ([(header::CONTENT_TYPE, "application/json")], openapi()).into_response(),
        Err(p) => problem_response(p),
    }
}
