//! The routes of managed tables (`/v1/tables/...`, see [`meshward_api::managed`]). The names
//! in the path are checked before the caller is authorized, so a bad name is a 400 naming
//! the field for every caller, not a 403.

use axum::Extension;
use axum::extract::{Path, State};
use axum::response::Response;
use meshward_api::cluster::Written;
use meshward_api::managed::{ManagedRow, RowPage, RowQuery, TableList};
use meshward_api::{Problem, Request};
use meshward_node::ops::managed::{check_document, check_path};

use super::{ApiState, Body, Caller, Params, problem_response, run};

type S = State<ApiState>;
type C = Extension<Caller>;

/// Runs `request` once the names of its path are valid.
async fn checked(
    s: &ApiState,
    c: Caller,
    names: (&str, Option<&str>, Option<&str>),
    request: Request,
) -> Response {
    match check_path(names.0, names.1, names.2) {
        Ok(()) => run(s, c, request).await,
        Err(problem) => problem_response(problem),
    }
}

/// The tables of a namespace that hold rows (read on the namespace).
#[utoipa::path(get, path = "/v1/tables/{namespace}", tag = "tables",
    params(("namespace" = String, Path)),
    responses((status = 200, body = TableList), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json")))]
pub(super) async fn list_tables(
    State(s): S,
    Extension(c): C,
    Path(namespace): Path<String>,
) -> Response {
    let names = (namespace.as_str(), None, None);
    checked(
        &s,
        c,
        names,
        Request::ListTables {
            namespace: namespace.clone(),
        },
    )
    .await
}

/// A page of a table's rows in key order (`next` → `after=`), as this node holds them.
#[utoipa::path(get, path = "/v1/tables/{namespace}/{table}", tag = "tables",
    params(("namespace" = String, Path), ("table" = String, Path), RowQuery),
    responses((status = 200, body = RowPage), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json")))]
pub(super) async fn list_rows(
    State(s): S,
    Extension(c): C,
    Path((namespace, table)): Path<(String, String)>,
    Params(query): Params<RowQuery>,
) -> Response {
    let request = Request::ListRows {
        namespace: namespace.clone(),
        table: table.clone(),
        query,
    };
    checked(&s, c, (&namespace, Some(&table), None), request).await
}

/// One row, as this node holds it.
#[utoipa::path(get, path = "/v1/tables/{namespace}/{table}/{key}", tag = "tables",
    params(("namespace" = String, Path), ("table" = String, Path), ("key" = String, Path)),
    responses((status = 200, body = ManagedRow), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub(super) async fn get_row(
    State(s): S,
    Extension(c): C,
    Path((namespace, table, key)): Path<(String, String, String)>,
) -> Response {
    let request = Request::GetRow {
        namespace: namespace.clone(),
        table: table.clone(),
        key: key.clone(),
    };
    checked(&s, c, (&namespace, Some(&table), Some(&key)), request).await
}

/// Write a row: the body is its JSON document, at most 16 KiB (mastered; a follower forwards
/// it to the leader).
#[utoipa::path(put, path = "/v1/tables/{namespace}/{table}/{key}", tag = "tables",
    params(("namespace" = String, Path), ("table" = String, Path), ("key" = String, Path)),
    request_body(content = Object, description = "The document: any JSON value"),
    responses((status = 200, body = Written), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 413, body = Problem, content_type = "application/problem+json"), (status = 415, body = Problem, content_type = "application/problem+json"), (status = 503, body = Problem, content_type = "application/problem+json")))]
pub(super) async fn put_row(
    State(s): S,
    Extension(c): C,
    Path((namespace, table, key)): Path<(String, String, String)>,
    Body(document): Body<serde_json::Value>,
) -> Response {
    // Refused here, before a follower would forward it.
    if let Err(problem) = check_document(&document) {
        return problem_response(problem);
    }
    let request = Request::PutRow {
        namespace: namespace.clone(),
        table: table.clone(),
        key: key.clone(),
        document,
    };
    checked(&s, c, (&namespace, Some(&table), Some(&key)), request).await
}

/// Delete a row (mastered; a follower forwards it to the leader).
#[utoipa::path(delete, path = "/v1/tables/{namespace}/{table}/{key}", tag = "tables",
    params(("namespace" = String, Path), ("table" = String, Path), ("key" = String, Path)),
    responses((status = 200, body = Written), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 503, body = Problem, content_type = "application/problem+json")))]
pub(super) async fn delete_row(
    State(s): S,
    Extension(c): C,
    Path((namespace, table, key)): Path<(String, String, String)>,
) -> Response {
    let request = Request::DeleteRow {
        namespace: namespace.clone(),
        table: table.clone(),
        key: key.clone(),
    };
    checked(&s, c, (&namespace, Some(&table), Some(&key)), request).await
}
