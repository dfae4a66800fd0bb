//! Superseded records (`ha superseded`, `ha adopt`): the records of a chain that lost a fork,
//! kept for review, each shown decoded against the current chain, and adopted one by one.
//!
//! Restrictive ones (revocations, removals) the winning leader signs again by itself
//! ([`crate::core`]'s re-application); the others stay for an operator to read and, where
//! still wanted, to adopt: the leader signs the record's change again into the current chain.
//! Roster, hand-over, genesis and sealed-secret records are history of the losing chain, not
//! changes to adopt.

use base64::Engine as _;
use meshward_api::node::{AdoptRecord, SupersededRecord};
use meshward_api::{Problem, ProblemKind, Reply};
use meshward_crdt::mastered::{ManagedChange, RecordKind, Roster, SignedRecord};

use super::{Backend, failure, master};
use crate::certs::Serial;
use crate::cluster_config::{Approval, ClusterConfig, ConfigChange, PasswordSet};
use crate::grants::{UserChange, Users};

/// The superseded records this node holds, decoded against its current chain.
pub(super) fn list(backend: &mut dyn Backend) -> Result<Reply, Problem> {
    let store = backend.store().map_err(failure)?;
    let records = store.superseded().map_err(|e| failure(e.into()))?;
    let current = store.mastered_records().map_err(|e| failure(e.into()))?;
    Ok(Reply::Superseded(
        records.iter().map(|r| describe(r, &current)).collect(),
    ))
}

/// `record` as `ha superseded` shows it, against the `current` chain's records.
pub fn describe(record: &SignedRecord, current: &[SignedRecord]) -> SupersededRecord {
    let kind = record.record.kind;
    let payload = &record.record.payload;
    let (subject, change, in_force) = match kind {
        RecordKind::Revocation | RecordKind::User | RecordKind::Grant => {
            describe_access(kind, payload, current)
        }
        RecordKind::Config => match postcard::from_bytes::<ConfigChange>(payload) {
            Ok(change) => {
                let (key, value) = match change {
                    ConfigChange::Set { key, value } => (key, Some(value)),
                    ConfigChange::Unset { key } => (key, None),
                };
                let now = ClusterConfig::from_records(current).get(&key);
                let show =
                    |v: &Option<String>| v.as_ref().map_or("unset".into(), |v| format!("{v:?}"));
                (
                    format!("config {key}"),
                    format!("{} → {}", show(&now), show(&value)),
                    now == value,
                )
            }
            Err(_) => unknown(kind),
        },
        RecordKind::Managed => match ManagedChange::decode(payload) {
            Ok(m) => {
                let now = managed_value(current, &m.namespace, &m.table, &m.key);
                let show = |v: &Option<String>| v.as_ref().map_or("absent".into(), |v| v.clone());
                (
                    format!("managed {}/{}/{}", m.namespace, m.table, m.key),
                    format!("{} → {}", show(&now), show(&m.document)),
                    now == m.document,
                )
            }
            Err(_) => unknown(kind),
        },
        RecordKind::FingerprintApproval => match postcard::from_bytes::<Approval>(payload) {
            Ok(a) => (
                format!("fingerprint {} {:?} {}", a.host, a.key_type, a.fingerprint),
                if a.approved { "approve" } else { "unapprove" }.into(),
                false,
            ),
            Err(_) => unknown(kind),
        },
        RecordKind::Password => match PasswordSet::decode(payload) {
            Some(p) => (
                format!("password of {}", p.user),
                "set a new hash".into(),
                false,
            ),
            None => unknown(kind),
        },
        RecordKind::Roster => match Roster::decode(payload) {
            Ok(roster) => (
                "roster".into(),
                format!(
                    "members: {}",
                    roster
                        .members
                        .iter()
                        .map(|m| m.address.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                false,
            ),
            Err(_) => unknown(kind),
        },
        _ => (kind.as_str().to_string(), String::new(), false),
    };
    SupersededRecord {
        version: record.record.version,
        epoch: record.record.epoch,
        kind: kind.as_str().to_string(),
        signer: hex::encode(record.signer),
        hash: record.hash().to_hex(),
        payload_bytes: payload.len() as u64,
        subject,
        change,
        restrictive: matches!(kind, RecordKind::Revocation | RecordKind::Roster),
        in_force,
    }
}

/// Users, grants and certificate revocations: what the record does and whether the current
/// chain already has it so.
fn describe_access(
    kind: RecordKind,
    payload: &[u8],
    current: &[SignedRecord],
) -> (String, String, bool) {
    if let Ok(Some(serial)) = Serial::decode_revocation(kind, payload) {
        let revoked = current.iter().any(|r| {
            Serial::decode_revocation(r.record.kind, &r.record.payload)
                .is_ok_and(|s| s.as_ref() == Some(&serial))
        });
        let change = if revoked {
            "revoked"
        } else {
            "valid → revoked"
        };
        return (format!("certificate {serial}"), change.into(), revoked);
    }
    let Ok(Some(change)) = UserChange::decode(kind, payload) else {
        return unknown(kind);
    };
    let fits = Users::fold_held(current).is_ok_and(|u| u.check(&change).is_ok());
    let (subject, what) = match &change {
        UserChange::Create(u) => (format!("user {u}"), "absent → exists"),
        UserChange::Delete(u) => (format!("user {u}"), "exists → deleted"),
        UserChange::AddGrant(u, g) => (format!("grant {g} of {u}"), "not held → held"),
        UserChange::RevokeGrant(u, g) => (format!("grant {g} of {u}"), "held → revoked"),
    };
    (subject, what.into(), !fits)
}

/// A managed row's document as the `current` chain leaves it.
fn managed_value(current: &[SignedRecord], ns: &str, table: &str, key: &str) -> Option<String> {
    current
        .iter()
        .rev()
        .filter(|r| r.record.kind == RecordKind::Managed)
        .filter_map(|r| ManagedChange::decode(&r.record.payload).ok())
        .find(|m| m.namespace == ns && m.table == table && m.key == key)
        .and_then(|m| m.document)
}

fn unknown(kind: RecordKind) -> (String, String, bool) {
    (
        kind.as_str().to_string(),
        "not understood by this version".into(),
        false,
    )
}

/// The leader signs the change of a superseded record again into the current chain.
pub(super) fn adopt(backend: &mut dyn Backend, body: AdoptRecord) -> Result<Reply, Problem> {
    let record = match &body.record_base64 {
        Some(b64) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| Problem::bad_input("record_base64", "not base64"))?;
            SignedRecord::decode(&bytes)
                .map_err(|e| Problem::bad_input("record_base64", e.to_string()))?
        }
        None => held(backend, &body.hash)?,
    };
    if !names(&body.hash, &record) {
        return Err(Problem::bad_input(
            "hash",
            "the record given is not the one this hash names",
        ));
    }
    let store = backend.store().map_err(failure)?;
    let cluster = store.identity().map_err(|e| failure(e.into()))?.cluster;
    if record.record.cluster != cluster {
        return Err(Problem::bad_input(
            "hash",
            "the record is of another cluster",
        ));
    }
    let kind = record.record.kind;
    if matches!(
        kind,
        RecordKind::Genesis | RecordKind::Roster | RecordKind::Handover | RecordKind::SealedSecret
    ) {
        return Err(Problem::new(
            ProblemKind::Conflict,
            format!(
                "a {} record is history of the chain that lost, not a change to adopt; change \
                 the roster with `bundle create`/`join` and `ha make-standalone --node`",
                kind.as_str()
            ),
        ));
    }
    let current = store.mastered_records().map_err(|e| failure(e.into()))?;
    if describe(&record, &current).in_force {
        return Err(Problem::new(
            ProblemKind::Conflict,
            "the current chain already holds what this record does; nothing was written",
        ));
    }
    let version = master(backend, kind, record.record.payload.clone())?;
    Ok(Reply::Written(meshward_api::cluster::Written { version }))
}

/// Shortest hash prefix accepted.
const MIN_PREFIX: usize = 8;

/// Whether `hash` (hex, or a prefix of at least [`MIN_PREFIX`] digits) names `record`.
fn names(hash: &str, record: &SignedRecord) -> bool {
    hash.len() >= MIN_PREFIX
        && record
            .hash()
            .to_hex()
            .starts_with(&hash.to_ascii_lowercase())
}

/// The superseded record this node holds under `hash` (hex, or a unique prefix of at least
/// [`MIN_PREFIX`] digits, as `ha superseded` shows it).
pub fn held(backend: &mut dyn Backend, hash: &str) -> Result<SignedRecord, Problem> {
    if hash.len() < MIN_PREFIX || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Problem::bad_input(
            "hash",
            format!("give the record's hash in hex, at least {MIN_PREFIX} digits"),
        ));
    }
    let store = backend.store().map_err(failure)?;
    let mut found: Vec<SignedRecord> = store
        .superseded()
        .map_err(|e| failure(e.into()))?
        .into_iter()
        .filter(|r| names(hash, r))
        .collect();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(Problem::new(
            ProblemKind::NotFound,
            format!("this node holds no superseded record {hash}; see `ha superseded`"),
        )),
        n => Err(Problem::bad_input(
            "hash",
            format!("{n} superseded records start with {hash}; give more digits"),
        )),
    }
}

#[cfg(test)]
mod tests;
