//! Managed tables: the cluster's "Manage section". Rows `NS/TABLE/KEY` → a JSON document,
//! written by the leader only (a follower forwards the write to it), signed into the
//! mastered chain, read and watched on every node. `admin:NS` writes namespace `NS`,
//! `guest:NS` reads it, `guest:*` reads every namespace, `root` does everything.
//!
//! Names: a namespace or table is 1 to 63 bytes of lowercase letters, digits, `_` and `-`; a
//! key 1 to 255 bytes of letters, digits, `.`, `_`, `-`, `:` and `@`; both start with a
//! letter or a digit. A document is any JSON value of at most 16 KiB (compact form).

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Most rows one page of `GET /v1/tables/{ns}/{table}` holds.
pub const MAX_ROW_PAGE: usize = 1000;

/// A managed row as a node holds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ManagedRow {
    /// Its namespace.
    pub namespace: String,
    /// Its table.
    pub table: String,
    /// Its key.
    pub key: String,
    /// The document.
    #[schema(value_type = Object)]
    pub document: serde_json::Value,
    /// The mastered version that wrote it.
    pub version: u64,
}

/// `GET /v1/tables/{ns}/{table}` query: a page cursor.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RowQuery {
    /// At most this many (default and most [`MAX_ROW_PAGE`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// The `next` cursor of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

/// A page of rows, in key order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RowPage {
    /// The rows.
    pub rows: Vec<ManagedRow>,
    /// Cursor of the next page (`after=`), when there may be more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// The tables of a namespace that hold rows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TableList {
    /// The namespace.
    pub namespace: String,
    /// Its tables, in name order.
    pub tables: Vec<String>,
}
