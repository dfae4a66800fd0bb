//! Shared tables: events, observed fingerprints and their approval, user data exceptions.

use meshward_api::shared::{
    AppendEvents, Appended, Approve, EventPage, EventQuery, EventRow, ExceptionRow,
    FingerprintCheck, FingerprintRow, HostKey, MAX_EVENT_PAGE, MAX_EVENTS_PER_APPEND,
    ObserveFingerprint,
};
use meshward_api::{Problem, Reply};
use meshward_crdt::mastered::RecordKind;
use meshward_crdt::{
    Event, EventKind, Fingerprint, KeyType, Op, Row, RowChange, TableId, UserDataException,
    WriterId,
};

use super::{Backend, failure, master, now_ms};
use crate::cluster_config::{Approval, ClusterConfig};
use crate::store::EventFilter;

pub(super) fn append_events(
    backend: &mut dyn Backend,
    body: AppendEvents,
) -> Result<Reply, Problem> {
    let n = body.events.len();
    if n == 0 || n > MAX_EVENTS_PER_APPEND {
        return Err(Problem::bad_input(
            "events",
            format!("give 1 to {MAX_EVENTS_PER_APPEND} events, not {n}"),
        ));
    }
    let now = now_ms();
    let mut ops = Vec::with_capacity(n);
    for (i, e) in body.events.into_iter().enumerate() {
        let kind: EventKind = e
            .kind
            .parse()
            .map_err(|err| Problem::bad_input(format!("events[{i}].kind"), format!("{err}")))?;
        let event = Event {
            at_ms: e.at_ms.unwrap_or(now),
            kind,
            user: e.user,
            target: e.target,
            detail: e.detail,
        };
        Row::Event(event.clone())
            .validate()
            .map_err(|err| Problem::bad_input(format!("events[{i}]"), err.to_string()))?;
        ops.push(Op::Append(event));
    }
    let rows = backend.commit(ops).map_err(failure)?;
    let appended: Vec<_> = rows
        .iter()
        .filter_map(|c| match c {
            RowChange::Appended { key, index, .. } => Some((key, *index)),
            _ => None,
        })
        .collect();
    let (Some((key, first)), Some((_, last))) = (appended.first(), appended.last()) else {
        return Err(failure(anyhow::anyhow!("the commit appended no event")));
    };
    Ok(Reply::Appended(Appended {
        writer: key.writer.to_hex(),
        segment: key.segment,
        index: *first,
        last_index: *last,
        count: appended.len() as u64,
    }))
}

pub(super) fn list_events(backend: &mut dyn Backend, q: EventQuery) -> Result<Reply, Problem> {
    let writer = q
        .writer
        .as_deref()
        .map(str::parse::<WriterId>)
        .transpose()
        .map_err(|e| Problem::bad_input("writer", e))?;
    let kind = q
        .kind
        .as_deref()
        .map(str::parse::<EventKind>)
        .transpose()
        .map_err(|e| Problem::bad_input("kind", e.to_string()))?;
    let limit = q.limit.unwrap_or(MAX_EVENT_PAGE);
    if limit == 0 || limit > MAX_EVENT_PAGE {
        return Err(Problem::bad_input(
            "limit",
            format!("give 1 to {MAX_EVENT_PAGE}, not {limit}"),
        ));
    }
    let after = q.after.as_deref().map(parse_cursor).transpose()?;
    let filter = EventFilter {
        writer,
        since_ms: q.since,
        until_ms: q.until,
        kind,
        limit: Some(limit),
        after,
    };
    let events = backend
        .store()
        .map_err(failure)?
        .events(&filter)
        .map_err(|e| failure(e.into()))?;
    let next = (events.len() == limit)
        .then(|| events.last().map(|e| cursor(e.writer, e.segment, e.index)))
        .flatten();
    Ok(Reply::Events(EventPage {
        events: events
            .into_iter()
            .map(|e| EventRow {
                writer: e.writer.to_hex(),
                segment: e.segment,
                index: e.index,
                at_ms: e.event.at_ms,
                kind: e.event.kind.as_str().to_string(),
                user: e.event.user,
                target: e.event.target,
                detail: e.event.detail,
            })
            .collect(),
        next,
    }))
}

/// A page cursor: `WRITER.SEGMENT.INDEX` of the last event of the page.
fn cursor(writer: WriterId, segment: u32, index: u64) -> String {
    format!("{}.{segment}.{index}", writer.to_hex())
}

fn parse_cursor(text: &str) -> Result<(WriterId, u32, u64), Problem> {
    let bad = || Problem::bad_input("after", "not a cursor of this listing: give a `next` value");
    let mut parts = text.split('.');
    let (Some(w), Some(s), Some(i), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    Ok((
        w.parse().map_err(|_| bad())?,
        s.parse().map_err(|_| bad())?,
        i.parse().map_err(|_| bad())?,
    ))
}

fn key_type(field: &str, text: &str) -> Result<KeyType, Problem> {
    text.parse()
        .map_err(|e: meshward_crdt::RowError| Problem::bad_input(field, e.to_string()))
}

pub(super) fn observe(
    backend: &mut dyn Backend,
    body: ObserveFingerprint,
) -> Result<Reply, Problem> {
    let key_type = key_type("key_type", &body.key.key_type)?;
    let at_ms = body.at_ms.unwrap_or_else(now_ms);
    let HostKey {
        host, fingerprint, ..
    } = body.key;
    Row::Fingerprint(Fingerprint {
        host: host.clone(),
        key_type,
        fingerprint: fingerprint.clone(),
        first_seen_ms: at_ms,
        last_seen_ms: at_ms,
    })
    .validate()
    .map_err(|e| Problem::bad_input("fingerprint", e.to_string()))?;
    let op = Op::ObserveFingerprint {
        host,
        key_type,
        fingerprint,
        at_ms,
    };
    let writer = backend
        .store()
        .and_then(|s| Ok(s.identity()?.writer()))
        .map_err(failure)?;
    let approved = approvals(backend)?;
    for change in backend.commit(vec![op]).map_err(failure)? {
        if let RowChange::Put {
            row: Row::Fingerprint(f),
            ..
        } = change
        {
            return Ok(Reply::Fingerprint(fingerprint_row(&writer, &f, &approved)));
        }
    }
    Err(failure(anyhow::anyhow!(
        "the commit recorded no fingerprint"
    )))
}

fn approvals(backend: &mut dyn Backend) -> Result<ClusterConfig, Problem> {
    let records = backend
        .store()
        .and_then(|s| Ok(s.mastered_records()?))
        .map_err(failure)?;
    Ok(ClusterConfig::from_records(&records))
}

pub(super) fn fingerprint_row(
    writer: &WriterId,
    f: &Fingerprint,
    config: &ClusterConfig,
) -> FingerprintRow {
    FingerprintRow {
        seen_by: writer.to_hex(),
        key: HostKey {
            host: f.host.clone(),
            key_type: f.key_type.as_str().to_string(),
            fingerprint: f.fingerprint.clone(),
        },
        first_seen_ms: f.first_seen_ms,
        last_seen_ms: f.last_seen_ms,
        approved: config.approved(&f.host, f.key_type, &f.fingerprint),
    }
}

pub(super) fn list_fingerprints(backend: &mut dyn Backend) -> Result<Reply, Problem> {
    let config = approvals(backend)?;
    let rows = map_rows(backend, TableId::Fingerprints)?;
    Ok(Reply::Fingerprints(
        rows.iter()
            .filter_map(|(w, row)| match row {
                Row::Fingerprint(f) => Some(fingerprint_row(w, f, &config)),
                _ => None,
            })
            .collect(),
    ))
}

fn map_rows(backend: &mut dyn Backend, table: TableId) -> Result<Vec<(WriterId, Row)>, Problem> {
    backend
        .store()
        .and_then(|s| Ok(s.map_rows(table)?))
        .map_err(failure)
}

/// What this node does with `key`: the leader's approvals, this node's enforcement.
pub(super) fn check_fingerprint(backend: &mut dyn Backend, key: HostKey) -> Result<Reply, Problem> {
    use crate::local_settings::{Enforcement, FINGERPRINT_ENFORCEMENT, enforcement};
    let key_type = key_type("key_type", &key.key_type)?;
    Row::Fingerprint(Fingerprint {
        host: key.host.clone(),
        key_type,
        fingerprint: key.fingerprint.clone(),
        first_seen_ms: 0,
        last_seen_ms: 0,
    })
    .validate()
    .map_err(|e| Problem::bad_input("fingerprint", e.to_string()))?;
    let config = approvals(backend)?;
    let stored = backend
        .store()
        .and_then(|s| Ok(s.setting(FINGERPRINT_ENFORCEMENT)?))
        .map_err(failure)?;
    let enforcement = enforcement(stored.as_deref());
    let approved: Vec<String> = config
        .approvals
        .iter()
        .filter(|((host, kt, _), ok)| **ok && *host == key.host && *kt == key_type)
        .map(|((_, _, fingerprint), _)| fingerprint.clone())
        .collect();
    let status = if approved.contains(&key.fingerprint) {
        "approved"
    } else if approved.is_empty() {
        "unknown"
    } else {
        "mismatch"
    };
    let decision = match (status, enforcement) {
        ("approved", _) | (_, Enforcement::Off) => "allow",
        (_, Enforcement::Warn) => "warn",
        (_, Enforcement::Enforce) => "deny",
    };
    Ok(Reply::FingerprintChecked(FingerprintCheck {
        status: status.into(),
        enforcement: enforcement.to_string(),
        decision: decision.into(),
        approved: if status == "mismatch" {
            approved
        } else {
            Vec::new()
        },
    }))
}

pub(super) fn approve(backend: &mut dyn Backend, body: Approve) -> Result<Reply, Problem> {
    let key_type = key_type("key_type", &body.key.key_type)?;
    Row::Fingerprint(Fingerprint {
        host: body.key.host.clone(),
        key_type,
        fingerprint: body.key.fingerprint.clone(),
        first_seen_ms: 0,
        last_seen_ms: 0,
    })
    .validate()
    .map_err(|e| Problem::bad_input("fingerprint", e.to_string()))?;
    let approval = Approval {
        host: body.key.host,
        key_type,
        fingerprint: body.key.fingerprint,
        approved: body.approved,
    };
    let version = master(backend, RecordKind::FingerprintApproval, approval.encode())?;
    Ok(Reply::Written(meshward_api::cluster::Written { version }))
}

pub(super) fn set_exception(
    backend: &mut dyn Backend,
    user: String,
    field: String,
    value: String,
) -> Result<Reply, Problem> {
    let x = UserDataException {
        user,
        field,
        value,
        at_ms: now_ms(),
    };
    Row::Exception(x.clone())
        .validate()
        .map_err(|e| Problem::bad_input("exception", e.to_string()))?;
    backend
        .commit(vec![Op::PutException(x.clone())])
        .map_err(failure)?;
    let writer = backend
        .store()
        .and_then(|s| Ok(s.identity()?.writer()))
        .map_err(failure)?;
    Ok(Reply::Exception(exception_row(&writer, &x)))
}

pub(super) fn delete_exception(
    backend: &mut dyn Backend,
    user: String,
    field: String,
) -> Result<Reply, Problem> {
    backend
        .commit(vec![Op::DeleteException { user, field }])
        .map_err(failure)?;
    Ok(Reply::Empty)
}

pub(super) fn list_exceptions(backend: &mut dyn Backend) -> Result<Reply, Problem> {
    let rows = map_rows(backend, TableId::Exceptions)?;
    Ok(Reply::Exceptions(
        rows.iter()
            .filter_map(|(w, row)| match row {
                Row::Exception(x) => Some(exception_row(w, x)),
                _ => None,
            })
            .collect(),
    ))
}

pub(super) fn exception_row(writer: &WriterId, x: &UserDataException) -> ExceptionRow {
    ExceptionRow {
        writer: writer.to_hex(),
        user: x.user.clone(),
        field: x.field.clone(),
        value: x.value.clone(),
        at_ms: x.at_ms,
    }
}
