//! Local data: the session audit and node-only settings (never replicated).

use meshward_api::local::{
    AuditBreak, AuditQuery, AuditRow, AuditVerified, MAX_AUDIT_PAGE, MAX_AUDIT_PER_RECORD,
    RecordAudit, Recorded, Setting,
};
use meshward_api::{Problem, ProblemKind, Reply};

use super::{Backend, failure, now_ms};
use crate::audit::{AuditLog, ChainBreak, NewAuditRecord};
use crate::local_settings::KNOWN;
use crate::store::StoreError;

pub(super) fn record_audit(backend: &mut dyn Backend, body: RecordAudit) -> Result<Reply, Problem> {
    let n = body.records.len();
    if n == 0 || n > MAX_AUDIT_PER_RECORD {
        return Err(Problem::bad_input(
            "records",
            format!("give 1 to {MAX_AUDIT_PER_RECORD} records, not {n}"),
        ));
    }
    let at_ms = now_ms();
    let mut records = Vec::with_capacity(n);
    for (i, r) in body.records.into_iter().enumerate() {
        let record = NewAuditRecord {
            at_ms,
            actor: r.actor,
            action: r.action,
            target: r.target,
            detail: r.detail,
        };
        record
            .validate()
            .map_err(|e| Problem::bad_input(format!("records[{i}]"), e.to_string()))?;
        records.push(record);
    }
    let store = backend.store().map_err(failure)?;
    let written = AuditLog::append_batch(store.db().map_err(|e| failure(e.into()))?, &records)
        .map_err(|e| failure(e.into()))?;
    let (Some(first), Some(last)) = (written.first(), written.last()) else {
        return Err(failure(anyhow::anyhow!("the audit log appended nothing")));
    };
    Ok(Reply::Recorded(Recorded {
        first_seq: first.seq,
        last_seq: last.seq,
        hash: hex::encode(last.hash),
    }))
}

pub(super) fn list_audit(backend: &mut dyn Backend, q: AuditQuery) -> Result<Reply, Problem> {
    let limit = q.limit.unwrap_or(MAX_AUDIT_PAGE);
    if limit == 0 || limit > MAX_AUDIT_PAGE {
        return Err(Problem::bad_input(
            "limit",
            format!("give 1 to {MAX_AUDIT_PAGE}, not {limit}"),
        ));
    }
    let store = backend.store().map_err(failure)?;
    let records = AuditLog::list(store.reader(), q.from.unwrap_or(1), limit)
        .map_err(|e| failure(e.into()))?;
    Ok(Reply::Audit(
        records
            .into_iter()
            .map(|r| AuditRow {
                seq: r.seq,
                at_ms: r.at_ms,
                actor: r.actor,
                action: r.action,
                target: r.target,
                detail: r.detail,
                hash: hex::encode(r.hash),
            })
            .collect(),
    ))
}

pub(super) fn verify_audit(backend: &mut dyn Backend) -> Result<Reply, Problem> {
    let store = backend.store().map_err(failure)?;
    let report = AuditLog::verify(store.reader()).map_err(|e| failure(e.into()))?;
    let first_bad = report.first_break.map(|b| AuditBreak {
        seq: b.seq(),
        problem: match b {
            ChainBreak::Altered { .. } => "altered",
            ChainBreak::Removed { .. } => "removed",
            ChainBreak::Reordered { .. } => "reordered",
            ChainBreak::Unreadable { .. } => "unreadable",
            ChainBreak::HeadMismatch { .. } => "head-mismatch",
        }
        .to_string(),
    });
    Ok(Reply::AuditVerified(AuditVerified {
        intact: report.is_intact(),
        verified: report.verified,
        first_bad,
    }))
}

pub(super) fn list_settings(backend: &mut dyn Backend) -> Result<Reply, Problem> {
    let stored = backend
        .store()
        .and_then(|s| Ok(s.settings()?))
        .map_err(failure)?;
    // Every known setting, set or not, then whatever else is stored (labels).
    let mut out: Vec<Setting> = KNOWN
        .iter()
        .map(|k| {
            shown(
                k.name,
                stored.iter().find(|(n, _)| n == k.name).map(|(_, v)| v),
            )
        })
        .collect();
    out.extend(
        stored
            .iter()
            .filter(|(n, _)| !KNOWN.iter().any(|k| k.name == n))
            .map(|(name, value)| shown(name, Some(value))),
    );
    Ok(Reply::Settings(out))
}

/// A setting as listed: its stored value, else its default.
fn shown(name: &str, stored: Option<&String>) -> Setting {
    let default = KNOWN
        .iter()
        .find(|k| k.name == name)
        .and_then(|k| k.default);
    Setting {
        name: name.to_string(),
        value: stored.cloned().or(default.map(str::to_string)),
        default: stored.is_none() && default.is_some(),
    }
}

pub(super) fn get_setting(backend: &mut dyn Backend, name: String) -> Result<Reply, Problem> {
    let value = backend
        .store()
        .and_then(|s| Ok(s.setting(&name)?))
        .map_err(failure)?;
    let setting = shown(&name, value.as_ref());
    if setting.value.is_none() {
        return Err(Problem::new(
            ProblemKind::NotFound,
            format!("no local setting {name:?}"),
        ));
    }
    Ok(Reply::Setting(setting))
}

pub(super) fn set_setting(
    backend: &mut dyn Backend,
    name: String,
    value: String,
) -> Result<Reply, Problem> {
    if let Err(e) = crate::local_settings::validate(&name, &value) {
        return Err(Problem::bad_input(e.field, e.reason));
    }
    let store = backend.store().map_err(failure)?;
    match store.set_setting(&name, &value) {
        Ok(()) => Ok(Reply::Setting(Setting {
            name,
            value: Some(value),
            default: false,
        })),
        Err(StoreError::Setting { reason, .. }) => {
            let field = if reason.starts_with("names") {
                "name"
            } else {
                "value"
            };
            Err(Problem::bad_input(field, reason))
        }
        Err(e) => Err(failure(e.into())),
    }
}
