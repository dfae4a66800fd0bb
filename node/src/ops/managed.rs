//! Managed tables ([`meshward_api::managed`]): rows `NS/TABLE/KEY` → a JSON document, mastered.
//! Reads answer from this node's fold of its chain ([`crate::store::ManagedRow`]); writes are
//! one `Managed` record each, signed by the leader ([`super::master`]; a follower's daemon
//! forwards them). Every name is checked before anything is read or written, and a problem
//! names the field.

use meshward_api::cluster::Written;
use meshward_api::managed::{MAX_ROW_PAGE, ManagedRow, RowPage, RowQuery, TableList};
use meshward_api::{Problem, ProblemKind, Reply};
use meshward_crdt::mastered::{self, MAX_DOCUMENT, ManagedChange, ManagedError, RecordKind};

use super::{Backend, failure, master};
use crate::store;

/// Checks the names of a row's path (the key when given), naming the field that is wrong.
pub fn check_path(namespace: &str, table: Option<&str>, key: Option<&str>) -> Result<(), Problem> {
    mastered::check_name("namespace", namespace).map_err(problem)?;
    if let Some(table) = table {
        mastered::check_name("table", table).map_err(problem)?;
    }
    if let Some(key) = key {
        mastered::check_key(key).map_err(problem)?;
    }
    Ok(())
}

/// Checks a document's size (its compact JSON text) before anything is forwarded or written;
/// its compact text.
pub fn check_document(document: &serde_json::Value) -> Result<String, Problem> {
    let text = serde_json::to_string(document)
        .map_err(|e| Problem::bad_input("document", e.to_string()))?;
    if text.len() > MAX_DOCUMENT {
        return Err(problem(ManagedError::TooLarge { len: text.len() }));
    }
    Ok(text)
}

fn problem(e: ManagedError) -> Problem {
    match &e {
        ManagedError::Name { field, .. } => Problem::bad_input(*field, e.to_string()),
        ManagedError::TooLarge { .. } => {
            let mut p = Problem::new(ProblemKind::TooLarge, e.to_string());
            p.field = Some("document".into());
            p
        }
        _ => Problem::bad_input("document", e.to_string()),
    }
}

fn wire_row(row: store::ManagedRow) -> Result<ManagedRow, Problem> {
    let document = serde_json::from_str(&row.document).map_err(|e| failure(e.into()))?;
    Ok(ManagedRow {
        namespace: row.namespace,
        table: row.table,
        key: row.key,
        document,
        version: row.version,
    })
}

pub(super) fn get_row(
    backend: &mut dyn Backend,
    namespace: &str,
    table: &str,
    key: &str,
) -> Result<Reply, Problem> {
    check_path(namespace, Some(table), Some(key))?;
    let row = backend
        .store()
        .and_then(|s| Ok(s.managed_row(namespace, table, key)?))
        .map_err(failure)?
        .ok_or_else(|| not_found(namespace, table, key))?;
    Ok(Reply::Row(wire_row(row)?))
}

fn not_found(namespace: &str, table: &str, key: &str) -> Problem {
    Problem::new(
        ProblemKind::NotFound,
        format!(
            "no row {namespace}/{table}/{key} on this node; write it with \
             `meshward table put {namespace} {table} {key} JSON`"
        ),
    )
}

pub(super) fn list_rows(
    backend: &mut dyn Backend,
    namespace: &str,
    table: &str,
    query: &RowQuery,
) -> Result<Reply, Problem> {
    check_path(namespace, Some(table), None)?;
    if let Some(after) = &query.after {
        mastered::check_key(after).map_err(|e| Problem::bad_input("after", e.to_string()))?;
    }
    let limit = match query.limit {
        None => MAX_ROW_PAGE,
        Some(n) if (1..=MAX_ROW_PAGE).contains(&n) => n,
        Some(n) => {
            return Err(Problem::bad_input(
                "limit",
                format!("give 1 to {MAX_ROW_PAGE}, not {n}"),
            ));
        }
    };
    let rows = backend
        .store()
        .and_then(|s| Ok(s.managed_rows(namespace, table, query.after.as_deref(), limit)?))
        .map_err(failure)?;
    let next = (rows.len() == limit)
        .then(|| rows.last().map(|r| r.key.clone()))
        .flatten();
    let rows = rows
        .into_iter()
        .map(wire_row)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Reply::Rows(RowPage { rows, next }))
}

pub(super) fn list_tables(backend: &mut dyn Backend, namespace: &str) -> Result<Reply, Problem> {
    check_path(namespace, None, None)?;
    let tables = backend
        .store()
        .and_then(|s| Ok(s.managed_tables(namespace, MAX_ROW_PAGE)?))
        .map_err(failure)?;
    Ok(Reply::Tables(TableList {
        namespace: namespace.to_string(),
        tables,
    }))
}

/// Writes (`document` given) or deletes a row as the leader.
pub(super) fn write_row(
    backend: &mut dyn Backend,
    namespace: String,
    table: String,
    key: String,
    document: Option<serde_json::Value>,
) -> Result<Reply, Problem> {
    check_path(&namespace, Some(&table), Some(&key))?;
    let document = document.as_ref().map(check_document).transpose()?;
    if document.is_none() {
        let held = backend
            .store()
            .and_then(|s| Ok(s.managed_row(&namespace, &table, &key)?))
            .map_err(failure)?;
        if held.is_none() {
            return Err(not_found(&namespace, &table, &key));
        }
    }
    let change = ManagedChange {
        namespace,
        table,
        key,
        document,
    };
    change.check().map_err(problem)?;
    let version = master(backend, RecordKind::Managed, change.encode())?;
    Ok(Reply::Written(Written { version }))
}
