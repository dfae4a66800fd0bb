//! The watch stream's pure parts: which tables a watcher asked for and what it may read,
//! where it starts, and how a logged change ([`crate::store::Change`]) looks on the wire (an
//! SSE frame whose `id:` is the change's cursor and whose `data:` is a
//! [`meshward_api::node::Change`]). The daemon serves the stream (`GET /v1/watch`).
//!
//! | SSE event | `id:` | `data:` |
//! |---|---|---|
//! | `snapshot` | none (its `cursor` field is the cursor the state was read at) | a row of the current state |
//! | `ready` | the cursor the state was read at | `{"cursor": CURSOR}`: the snapshot is complete, changes after it follow |
//! | `change` | its cursor | the change |
//! | `overflow` | the last cursor sent | `{"resume_from": CURSOR}`: reconnect from there |
//! | `compacted` | – | `{"first_kept": CURSOR, ...}`: the cursor is older than what the node keeps; restart with a snapshot (no `from`) |
//! | `closed` | – | `{"detail": ...}`: the grants no longer allow the stream, or the snapshot was cut |
//!
//! Managed-table rows ([`crate::ops::managed`]) are mastered records, but they are watched as
//! their own table, `managed`: a change has `table: "managed"`, `op` `put` or `delete`, and
//! the row `{namespace, table, key, document, version}` (`document` null on delete); the
//! snapshot sends every row held. The `mastered` table leaves them out. Watching `managed`
//! needs read on every namespace (`guest:*` or root); a reader of one namespace reads it with
//! `GET /v1/tables/NS/TABLE`.
//!
//! Credential rotations are watched as the table `rotations` (needs `guest:*` or root): a row
//! is a rotation's metadata and what it had seen, never its sealed secret, with `conflict`:
//! whether its account is in conflict on this node when the frame is sent (a rotation that
//! arrives after the heal of a cut and makes a conflict says `true`; the one that settles it
//! says `false`).
//!
//! Snapshot rows carry no `id:` on purpose: a client cut in the middle of the snapshot (an
//! `EventSource` reconnecting with `Last-Event-ID`) must not resume after rows it never got;
//! without an id it starts the snapshot again. The id comes with `ready`, once all rows are
//! out.

use meshward_api::node::Change as WireChange;
use meshward_api::{Problem, ProblemKind};
use meshward_crdt::mastered::{RecordKind, SignedRecord};
use meshward_crdt::{Row, TableId, WriterId};

use crate::cluster_config::{Approval, ClusterConfig, ConfigChange};
use crate::grants::{Action, Namespace};
use crate::store::{Change, StoreError};

/// What rendering a row needs besides the row: the approvals view (fingerprints show whether
/// they are approved) and the credential accounts in conflict on this node now (rotation rows
/// carry `conflict`).
#[derive(Clone, Debug, Default)]
pub struct RowView {
    /// The cluster config folded from the mastered chain.
    pub config: ClusterConfig,
    /// Addresses of the accounts in conflict.
    pub conflicts: std::collections::BTreeSet<String>,
}

/// The tables a watcher may name, in their wire spelling.
pub const TABLES: [&str; 7] = [
    "events",
    "fingerprints",
    "exceptions",
    "mastered",
    "managed",
    "rotations",
    "audit-heads",
];
/// Longest `tables` parameter accepted.
pub const MAX_TABLES_PARAM: usize = 256;

/// A set of watched tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tables(u8);

impl Tables {
    /// Every table.
    pub const ALL: Tables = Tables(0b111_1111);
    /// The bit of the managed tables.
    const MANAGED: u8 = 16;

    fn bit(table: Option<TableId>) -> u8 {
        match table {
            Some(TableId::Events) => 1,
            Some(TableId::Fingerprints) => 2,
            Some(TableId::Exceptions) => 4,
            None => 8,
            Some(TableId::Rotations) => 32,
            Some(TableId::AuditHeads) => 64,
        }
    }

    /// Whether it holds a shared table (`Some`) or the mastered records (`None`).
    pub fn has(self, table: Option<TableId>) -> bool {
        self.0 & Tables::bit(table) != 0
    }

    /// Whether it holds the managed tables.
    pub fn has_managed(self) -> bool {
        self.0 & Tables::MANAGED != 0
    }

    /// Whether a change is of a watched table.
    pub fn wants(self, change: &Change) -> bool {
        if is_managed(change) {
            return self.has_managed();
        }
        self.has(change.table())
    }

    /// What reading these tables needs of a certificate's grants ([`crate::ops::access`]):
    /// the shared tables are data (read `default`), the mastered records the cluster's state.
    pub fn required(self) -> Vec<Action> {
        let mut out = Vec::new();
        // Rotations are read with the cluster's state (their own grants decide reveals).
        let shared = TableId::ALL
            .iter()
            .any(|t| *t != TableId::Rotations && self.has(Some(*t)));
        if shared {
            out.push(Action::Read(Namespace::default_data()));
        }
        if self.has(None) || self.has_managed() || self.has(Some(TableId::Rotations)) {
            out.push(Action::ReadCluster);
        }
        out
    }
}

/// Parses `tables=` (comma-separated names; absent: all).
pub fn parse_tables(text: Option<&str>) -> Result<Tables, Problem> {
    let Some(text) = text else {
        return Ok(Tables::ALL);
    };
    if text.len() > MAX_TABLES_PARAM {
        return Err(Problem::bad_input(
            "tables",
            "too long: name at most the six tables",
        ));
    }
    let mut bits = 0;
    for name in text.split(',').map(str::trim) {
        bits |= match name {
            "events" => Tables::bit(Some(TableId::Events)),
            "fingerprints" => Tables::bit(Some(TableId::Fingerprints)),
            "exceptions" => Tables::bit(Some(TableId::Exceptions)),
            "audit-heads" => Tables::bit(Some(TableId::AuditHeads)),
            "mastered" => Tables::bit(None),
            "managed" => Tables::MANAGED,
            "rotations" => Tables::bit(Some(TableId::Rotations)),
            other => {
                return Err(Problem::bad_input(
                    "tables",
                    format!(
                        "unknown table {other:?}: name some of {}, comma-separated",
                        TABLES.join(", ")
                    ),
                ));
            }
        };
    }
    Ok(Tables(bits))
}

/// Where a stream starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// The current state first (`snapshot` events), then the changes after it.
    Snapshot,
    /// Only changes from now on.
    Now,
    /// The changes after this cursor.
    After(u64),
}

/// Parses where to start: `from=` (a cursor or `now`) or else the `Last-Event-ID` header
/// (a reconnecting browser sends it); neither: a snapshot first.
pub fn parse_start(from: Option<&str>, last_event_id: Option<&str>) -> Result<Start, Problem> {
    let (field, text) = match (from, last_event_id) {
        (Some(f), _) => ("from", f),
        (None, Some(l)) => ("Last-Event-ID", l),
        (None, None) => return Ok(Start::Snapshot),
    };
    let text = text.trim();
    if text == "now" {
        return Ok(Start::Now);
    }
    text.parse::<u64>().map(Start::After).map_err(|_| {
        Problem::bad_input(
            field,
            "not a cursor: give the `id:` of the last event received (a number), or `now`",
        )
    })
}

/// The answer to a cursor this node no longer keeps changes after.
pub fn compacted(field: &str, after: u64, first_kept: u64) -> Problem {
    let mut p = Problem::new(
        ProblemKind::Compacted,
        format!(
            "changes after cursor {after} were dropped (this node keeps changes from cursor \
             {first_kept}, see watch-keep-changes): restart without `from` to get the current \
             state, then the stream"
        ),
    );
    p.field = Some(field.into());
    p
}

/// The answer to a cursor this node has not reached (it came from another node).
pub fn ahead(field: &str, after: u64, last: u64) -> Problem {
    Problem::bad_input(
        field,
        format!(
            "cursor {after} is past this node's last change ({last}); cursors are per node: \
             on another node restart without `from`"
        ),
    )
}

/// One SSE frame.
pub fn frame(event: &str, id: Option<u64>, data: &serde_json::Value) -> String {
    let mut out = format!("event: {event}\n");
    if let Some(id) = id {
        out.push_str(&format!("id: {id}\n"));
    }
    out.push_str(&format!("data: {data}\n\n"));
    out
}

fn table_name(table: Option<TableId>) -> &'static str {
    match table {
        Some(TableId::Events) => "events",
        Some(TableId::Fingerprints) => "fingerprints",
        Some(TableId::Exceptions) => "exceptions",
        Some(TableId::Rotations) => "rotations",
        Some(TableId::AuditHeads) => "audit-heads",
        None => "mastered",
    }
}

/// A row as the listings show it (events, fingerprints, exceptions).
pub fn row_json(
    writer: &WriterId,
    row: &Row,
    segment_index: Option<(u32, u64)>,
    view: &RowView,
) -> serde_json::Value {
    let value = match row {
        Row::Event(e) => {
            let (segment, index) = segment_index.unwrap_or_default();
            serde_json::to_value(meshward_api::shared::EventRow {
                writer: writer.to_hex(),
                segment,
                index,
                at_ms: e.at_ms,
                kind: e.kind.as_str().to_string(),
                user: e.user.clone(),
                target: e.target.clone(),
                detail: e.detail.clone(),
            })
        }
        Row::Fingerprint(f) => {
            serde_json::to_value(super::shared::fingerprint_row(writer, f, &view.config))
        }
        Row::Exception(x) => serde_json::to_value(super::shared::exception_row(writer, x)),
        Row::Rotation(r) => {
            let mut json = super::credentials::rotation_json(writer, r);
            json["conflict"] = view.conflicts.contains(&r.address).into();
            Ok(json)
        }
        Row::AuditHead(h) => Ok(serde_json::json!({
            "writer": writer.to_hex(),
            "count": h.count,
            "hash": hex::encode(h.hash),
            "at_ms": h.at_ms,
        })),
    };
    value.unwrap_or_default()
}

/// A mastered record: version, epoch, kind, signer, hash, and for approvals and config
/// changes what they say (never a password hash).
pub fn record_json(r: &SignedRecord) -> serde_json::Value {
    let mut v = serde_json::json!({
        "version": r.record.version,
        "epoch": r.record.epoch,
        "kind": r.record.kind.as_str(),
        "signer": hex::encode(r.signer),
        "hash": r.hash().to_hex(),
    });
    match r.record.kind {
        RecordKind::FingerprintApproval => {
            if let Ok(a) = postcard::from_bytes::<Approval>(&r.record.payload) {
                v["approval"] = serde_json::json!({
                    "host": a.host,
                    "key_type": a.key_type.as_str(),
                    "fingerprint": a.fingerprint,
                    "approved": a.approved,
                });
            }
        }
        RecordKind::Config => match postcard::from_bytes::<ConfigChange>(&r.record.payload) {
            Ok(ConfigChange::Set { key, value }) => {
                v["config"] = serde_json::json!({ "key": key, "value": value });
            }
            Ok(ConfigChange::Unset { key }) => {
                v["config"] = serde_json::json!({ "key": key, "value": null });
            }
            Err(_) => {}
        },
        _ => {}
    }
    v
}

/// Whether a logged change applies a managed-table record.
fn is_managed(change: &Change) -> bool {
    matches!(change, Change::Mastered { record }
        if SignedRecord::peek_kind(record) == Some(RecordKind::Managed))
}

/// A managed row as the stream shows it (`document` null: deleted).
pub fn managed_json(
    namespace: &str,
    table: &str,
    key: &str,
    document: Option<&str>,
    version: u64,
) -> serde_json::Value {
    let document = document
        .and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .unwrap_or_default();
    serde_json::json!({
        "namespace": namespace,
        "table": table,
        "key": key,
        "document": document,
        "version": version,
    })
}

/// A managed row of the current state as a `snapshot` event, read at cursor `at`.
pub fn managed_snapshot_frame(at: u64, row: &crate::store::ManagedRow) -> String {
    let json = managed_json(
        &row.namespace,
        &row.table,
        &row.key,
        Some(&row.document),
        row.version,
    );
    let wire = WireChange {
        cursor: at.to_string(),
        table: "managed".into(),
        op: "snapshot".into(),
        row: json,
    };
    frame(
        "snapshot",
        None,
        &serde_json::to_value(wire).unwrap_or_default(),
    )
}

/// Whether a mastered record belongs to the `mastered` table (managed rows do not).
pub fn in_mastered(record: &SignedRecord) -> bool {
    record.record.kind != RecordKind::Managed
}

/// A logged change as the stream's `change` event.
pub fn change_frame(cursor: u64, change: &Change, view: &RowView) -> Result<String, StoreError> {
    if is_managed(change)
        && let Some(r) = change.record()?
    {
        let managed = meshward_crdt::mastered::ManagedChange::decode(&r.record.payload).ok();
        let (op, row) = match managed {
            Some(m) => (
                if m.document.is_some() {
                    "put"
                } else {
                    "delete"
                },
                managed_json(
                    &m.namespace,
                    &m.table,
                    &m.key,
                    m.document.as_deref(),
                    r.record.version,
                ),
            ),
            None => ("record", record_json(&r)),
        };
        let wire = WireChange {
            cursor: cursor.to_string(),
            table: "managed".into(),
            op: op.into(),
            row,
        };
        return Ok(frame(
            "change",
            Some(cursor),
            &serde_json::to_value(wire).unwrap_or_default(),
        ));
    }
    let (op, row) = match change {
        Change::Appended {
            writer,
            segment,
            index,
            ..
        } => {
            let row = change
                .row()?
                .map(|r| row_json(writer, &r, Some((*segment, *index)), view));
            ("append", row.unwrap_or_default())
        }
        Change::Put { writer, .. } => {
            let row = change.row()?.map(|r| row_json(writer, &r, None, view));
            ("put", row.unwrap_or_default())
        }
        Change::Deleted { writer, key, .. } => (
            "delete",
            serde_json::json!({ "writer": writer.to_hex(), "key": key }),
        ),
        Change::Mastered { .. } => (
            "record",
            change
                .record()?
                .map(|r| record_json(&r))
                .unwrap_or_default(),
        ),
    };
    let wire = WireChange {
        cursor: cursor.to_string(),
        table: table_name(change.table()).into(),
        op: op.into(),
        row,
    };
    Ok(frame(
        "change",
        Some(cursor),
        &serde_json::to_value(wire).unwrap_or_default(),
    ))
}

/// A row of the current state as a `snapshot` event, read at cursor `at`.
pub fn snapshot_frame(at: u64, table: Option<TableId>, row: serde_json::Value) -> String {
    let wire = WireChange {
        cursor: at.to_string(),
        table: table_name(table).into(),
        op: "snapshot".into(),
        row,
    };
    frame(
        "snapshot",
        None,
        &serde_json::to_value(wire).unwrap_or_default(),
    )
}

/// The end of a snapshot read at cursor `at`: its `id:` is where the changes go on.
pub fn ready_frame(at: u64) -> String {
    frame("ready", Some(at), &serde_json::json!({ "cursor": at }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_and_start_parse_or_name_the_field() {
        assert_eq!(parse_tables(None).unwrap(), Tables::ALL);
        let t = parse_tables(Some("events, mastered")).unwrap();
        assert!(t.has(Some(TableId::Events)) && t.has(None) && !t.has(Some(TableId::Exceptions)));
        assert_eq!(t.required().len(), 2);
        // Every shared table needs a read grant on `default`, audit-heads too.
        let heads = parse_tables(Some("audit-heads")).unwrap();
        assert!(heads.has(Some(TableId::AuditHeads)) && !heads.has(None));
        assert_eq!(
            heads.required(),
            vec![Action::Read(Namespace::default_data())]
        );
        let e = parse_tables(Some("events,users")).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("tables"));
        assert_eq!(
            parse_tables(Some(&"e".repeat(300))).unwrap_err().status,
            400
        );
        assert_eq!(parse_start(None, None).unwrap(), Start::Snapshot);
        assert_eq!(parse_start(Some("now"), Some("3")).unwrap(), Start::Now);
        assert_eq!(parse_start(None, Some("42")).unwrap(), Start::After(42));
        assert_eq!(
            parse_start(Some("x1"), None).unwrap_err().field.as_deref(),
            Some("from")
        );
        assert_eq!(
            parse_start(None, Some("-1")).unwrap_err().field.as_deref(),
            Some("Last-Event-ID")
        );
    }

    #[test]
    fn frames_carry_the_cursor_as_id() {
        let f = frame("change", Some(7), &serde_json::json!({"a": 1}));
        assert_eq!(f, "event: change\nid: 7\ndata: {\"a\":1}\n\n");
    }
}
