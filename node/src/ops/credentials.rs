//! Credentials ([`meshward_api::credentials`]): set, rotate, reveal, history and conflicts of
//! managed accounts' secrets. A rotation is a row of this node's shared `rotations` table
//! ([`meshward_crdt::rotation`]), so any node rotates, also cut off from the others; the
//! secret is sealed under the MEK ([`crate::credentials`]) before it reaches the row.
//!
//! A rotation's version is the node's hybrid logical clock, derived from what it holds: the
//! next value past the greatest HLC of every rotation in its store (its own included, so it
//! never goes back across a restart; received ones included, so it moves past them) and at
//! least its wall clock. The rotation records what it had seen of the account, so concurrent
//! rotations show as a conflict until a later one settles them. When it rotates, the node
//! deletes its own rotations of the account beyond
//! [`meshward_crdt::rotation::RETAIN_PER_WRITER`], in the same commit.
//!
//! Every reveal is appended to this node's audit (who, which account, which version, never
//! the secret) before the secret is answered; a reveal that cannot be audited is refused.
//! Sets and rotations are audited too.

use meshward_api::credentials::{
    ConflictQuery, CredentialConflict, CredentialHistory, DEFAULT_GENERATED, MAX_GENERATED,
    MIN_GENERATED, RevealCredential, RevealedSecret, RotateCredential, RotationInfo, SetCredential,
};
use meshward_api::{Problem, ProblemKind, Reply};
use meshward_crdt::rotation::{
    self, Account, Hlc, MAX_REASON, MAX_SECRET, Rotation, RotationError, RotationKind,
    address_namespace,
};
use meshward_crdt::{Row, TableId, WriterId};
use zeroize::Zeroizing;

use super::{Backend, failure, now_ms};
use crate::audit::{AuditLog, NewAuditRecord};
use crate::credentials::{self, Alphabet};
use crate::mek::{MEK_FILE, Mek};
use crate::store::Store;

/// An account's path, checked: `NS/DEVICE/ACCOUNT`.
pub fn address(namespace: &str, device: &str, account: &str) -> Result<String, Problem> {
    use meshward_crdt::mastered::{ManagedError, check_key, check_name};
    let named = |field: &'static str, e: ManagedError| match e {
        ManagedError::Name { value, reason, .. } => {
            Problem::bad_input(field, format!("{field} {value:?} is not valid: {reason}"))
        }
        other => Problem::bad_input(field, other.to_string()),
    };
    check_name("namespace", namespace).map_err(|e| named("namespace", e))?;
    check_key(device).map_err(|e| named("device", e))?;
    check_key(account).map_err(|e| named("account", e))?;
    Ok(format!("{namespace}/{device}/{account}"))
}

pub(super) fn set(
    backend: &mut dyn Backend,
    address: String,
    body: SetCredential,
) -> Result<Reply, Problem> {
    let secret = Zeroizing::new(body.secret.into_bytes());
    write(backend, address, secret, RotationKind::Set, body.reason)
}

pub(super) fn rotate(
    backend: &mut dyn Backend,
    address: String,
    body: RotateCredential,
) -> Result<Reply, Problem> {
    if let Some(secret) = body.secret {
        if body.length.is_some() || body.alphabet.is_some() {
            return Err(Problem::bad_input(
                "secret",
                "give a secret, or a length and alphabet to generate one, not both",
            ));
        }
        let secret = Zeroizing::new(secret.into_bytes());
        return write(backend, address, secret, RotationKind::Set, body.reason);
    }
    let length = body.length.unwrap_or(DEFAULT_GENERATED);
    if !(MIN_GENERATED..=MAX_GENERATED).contains(&length) {
        return Err(Problem::bad_input(
            "length",
            format!("give {MIN_GENERATED} to {MAX_GENERATED} characters, not {length}"),
        ));
    }
    let alphabet = match body.alphabet.as_deref() {
        None => Alphabet::Alnum,
        Some(name) => Alphabet::parse(name).ok_or_else(|| {
            Problem::bad_input(
                "alphabet",
                format!("unknown alphabet {name:?}; use one of {}", Alphabet::NAMES),
            )
        })?,
    };
    let generated = credentials::generate(&mut rand::thread_rng(), length, alphabet);
    let secret = Zeroizing::new(generated.as_bytes().to_vec());
    write(
        backend,
        address,
        secret,
        RotationKind::Generated,
        body.reason,
    )
}

/// Seals `secret` into a new rotation of `address` by this node, deleting this node's
/// rotations of it beyond the retention, in one commit.
fn write(
    backend: &mut dyn Backend,
    address: String,
    secret: Zeroizing<Vec<u8>>,
    how: RotationKind,
    reason: String,
) -> Result<Reply, Problem> {
    if secret.is_empty() || secret.len() > MAX_SECRET {
        return Err(Problem::bad_input(
            "secret",
            format!("give 1 to {MAX_SECRET} bytes, not {}", secret.len()),
        ));
    }
    if reason.len() > MAX_REASON || reason.chars().any(char::is_control) {
        return Err(Problem::bad_input(
            "reason",
            format!("give one line of at most {MAX_REASON} bytes"),
        ));
    }
    let who = backend.caller();
    let mek = mek(backend)?;
    let store = backend.store().map_err(failure)?;
    let identity = store.identity().map_err(|e| failure(e.into()))?;
    let me = identity.writer();
    let draft = credentials::Draft::new(rotations(store)?, &address, &me, now_ms());
    let hlc = draft.hlc;
    let sealed = credentials::seal(&mek, identity.cluster, &address, &me, hlc, &secret);
    drop(secret);
    let row = Rotation {
        address: address.clone(),
        hlc,
        seen: draft.seen.clone(),
        sealed,
        at_ms: now_ms(),
        reason,
        user: who.clone(),
        how,
    };
    row.validate().map_err(row_problem)?;
    backend.commit(draft.ops(row)).map_err(failure)?;
    audit(
        backend,
        &who,
        &format!("credential-{}", how.as_str()),
        &address,
        format!("version {}", version(&me, hlc)),
    )?;
    let store = backend.store().map_err(failure)?;
    let account = rotation::accounts(rotations(store)?)
        .remove(&address)
        .unwrap_or_default();
    infos(&account)
        .into_iter()
        .find(|i| i.writer == me.to_hex() && i.version == version(&me, hlc))
        .map(Reply::Rotated)
        .ok_or_else(|| failure(anyhow::anyhow!("the rotation just written is not held")))
}

pub(super) fn reveal(
    backend: &mut dyn Backend,
    address: String,
    body: RevealCredential,
) -> Result<Reply, Problem> {
    let account = held(backend, &address)?;
    let (writer, rotation) = match &body.version {
        None => account
            .current()
            .cloned()
            .ok_or_else(|| not_found(&address))?,
        Some(v) => find(&account, v)?,
    };
    let who = backend.caller();
    let mek = mek(backend)?;
    let store = backend.store().map_err(failure)?;
    let cluster = store.identity().map_err(|e| failure(e.into()))?.cluster;
    let secret = credentials::open(
        &mek,
        cluster,
        &rotation.address,
        &writer,
        rotation.hlc,
        &rotation.sealed,
    )
    .map_err(|_| {
        Problem::new(
            ProblemKind::Internal,
            format!(
                "version {} of {address} does not open with this node's MEK: the node's MEK \
                 is not the cluster's, or the row was altered",
                version(&writer, rotation.hlc)
            ),
        )
    })?;
    let v = version(&writer, rotation.hlc);
    // Audited before it is answered: no reveal without its record.
    audit(
        backend,
        &who,
        "credential-reveal",
        &address,
        format!("version {v}"),
    )?;
    let secret = String::from_utf8(secret.to_vec()).map_err(|_| {
        failure(anyhow::anyhow!(
            "version {v} of {address} does not hold text"
        ))
    })?;
    Ok(Reply::Secret(RevealedSecret {
        address,
        version: v,
        conflict: account.in_conflict(),
        secret,
    }))
}

pub(super) fn history(backend: &mut dyn Backend, address: String) -> Result<Reply, Problem> {
    let account = held(backend, &address)?;
    let current = account
        .current()
        .map(|(w, r)| version(w, r.hlc))
        .unwrap_or_default();
    Ok(Reply::CredentialHistory(CredentialHistory {
        address,
        current,
        conflict: account.in_conflict(),
        rotations: infos(&account),
    }))
}

pub(super) fn conflicts(backend: &mut dyn Backend, q: ConflictQuery) -> Result<Reply, Problem> {
    if let Some(ns) = &q.namespace {
        meshward_crdt::mastered::check_name("namespace", ns)
            .map_err(|e| Problem::bad_input("namespace", e.to_string()))?;
    }
    let store = backend.store().map_err(failure)?;
    let out = in_conflict(store)?
        .into_iter()
        .filter(|(address, _)| {
            q.namespace
                .as_deref()
                .is_none_or(|ns| address_namespace(address) == ns)
        })
        .map(|(address, account)| CredentialConflict {
            current: account
                .current()
                .map(|(w, r)| version(w, r.hlc))
                .unwrap_or_default(),
            heads: infos(&account).into_iter().filter(|i| i.head).collect(),
            address,
        })
        .collect();
    Ok(Reply::CredentialConflicts(out))
}

/// The accounts in conflict on this node (for the listing and the metric).
pub fn in_conflict(store: &Store) -> Result<Vec<(String, Account)>, Problem> {
    Ok(rotation::accounts(rotations(store)?)
        .into_iter()
        .filter(|(_, a)| a.in_conflict())
        .collect())
}

/// A version as the API shows it: `MS.COUNTER@WRITER` (the first 8 hex digits).
pub fn version(writer: &WriterId, hlc: Hlc) -> String {
    format!("{hlc}@{writer}")
}

/// A rotation row as the watch stream shows it: its metadata and what it had seen, never
/// the sealed secret.
pub fn rotation_json(writer: &WriterId, r: &Rotation) -> serde_json::Value {
    serde_json::json!({
        "writer": writer.to_hex(),
        "address": r.address,
        "version": version(writer, r.hlc),
        "at_ms": r.at_ms,
        "reason": r.reason,
        "user": r.user,
        "how": r.how.as_str(),
        "seen": r.seen.iter().map(|(w, h)| version(w, *h)).collect::<Vec<_>>(),
    })
}

/// The rotations of `account` as the API shows them, oldest first.
fn infos(account: &Account) -> Vec<RotationInfo> {
    let heads: Vec<(WriterId, Hlc)> = account.heads().iter().map(|(w, r)| (*w, r.hlc)).collect();
    let current = account.current().map(|(w, r)| (*w, r.hlc));
    account
        .rotations
        .iter()
        .map(|(w, r)| RotationInfo {
            address: r.address.clone(),
            version: version(w, r.hlc),
            writer: w.to_hex(),
            at_ms: r.at_ms,
            reason: r.reason.clone(),
            user: r.user.clone(),
            how: r.how.as_str().into(),
            seen: r.seen.iter().map(|(sw, sh)| version(sw, *sh)).collect(),
            head: heads.contains(&(*w, r.hlc)),
            current: current == Some((*w, r.hlc)),
        })
        .collect()
}

/// The rotation a version names: `MS.COUNTER@WRITER`, the writer's hex digits or a prefix
/// of them that only one writer of the account has.
fn find(account: &Account, v: &str) -> Result<(WriterId, Rotation), Problem> {
    let bad = || {
        Problem::bad_input(
            "version",
            format!("{v:?} is not a version: give it as the history shows it, MS.COUNTER@WRITER"),
        )
    };
    let (hlc, writer) = v.split_once('@').ok_or_else(bad)?;
    let hlc: Hlc = hlc.parse().map_err(|_| bad())?;
    let writer = writer.to_ascii_lowercase();
    if writer.is_empty() || writer.len() > 64 || !writer.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let matches: Vec<&(WriterId, Rotation)> = account
        .rotations
        .iter()
        .filter(|(w, r)| r.hlc == hlc && w.to_hex().starts_with(&writer))
        .collect();
    match matches[..] {
        [one] => Ok(one.clone()),
        [] => {
            let mut p = Problem::new(
                ProblemKind::NotFound,
                format!("no version {v} of this account on this node; see its history"),
            );
            p.field = Some("version".into());
            Err(p)
        }
        _ => Err(Problem::bad_input(
            "version",
            format!("{v} names several writers; give more hex digits of the writer"),
        )),
    }
}

/// The rotations of `address` held, or 404.
fn held(backend: &mut dyn Backend, address: &str) -> Result<Account, Problem> {
    let store = backend.store().map_err(failure)?;
    rotation::accounts(rotations(store)?)
        .remove(address)
        .ok_or_else(|| not_found(address))
}

fn rotations(store: &Store) -> Result<Vec<(WriterId, Rotation)>, Problem> {
    Ok(store
        .map_rows(TableId::Rotations)
        .map_err(|e| failure(e.into()))?
        .into_iter()
        .filter_map(|(w, row)| match row {
            Row::Rotation(r) => Some((w, r)),
            _ => None,
        })
        .collect())
}

fn not_found(address: &str) -> Problem {
    Problem::new(
        ProblemKind::NotFound,
        format!(
            "no rotation of {address} on this node; set it first with `meshward credential set`"
        ),
    )
}

/// The node's MEK; 503 when it is missing (a sealed node).
fn mek(backend: &mut dyn Backend) -> Result<Mek, Problem> {
    let path = backend.data_dir().map_err(failure)?.join(MEK_FILE);
    Mek::load(&path).map_err(|e| {
        Problem::new(
            ProblemKind::Unavailable,
            format!(
                "credentials are sealed under the cluster MEK, which this node cannot read \
                 ({e}); restore it with `meshward unseal`"
            ),
        )
    })
}

fn audit(
    backend: &mut dyn Backend,
    who: &str,
    action: &str,
    address: &str,
    detail: String,
) -> Result<(), Problem> {
    let record = NewAuditRecord {
        at_ms: now_ms(),
        actor: who.to_string(),
        action: action.to_string(),
        target: address.to_string(),
        detail,
    };
    let store = backend.store().map_err(failure)?;
    let db = store.db().map_err(|e| failure(e.into()))?;
    AuditLog::append_batch(db, &[record]).map_err(|e| failure(e.into()))?;
    Ok(())
}

fn row_problem(e: RotationError) -> Problem {
    Problem::bad_input(e.field, e.to_string())
}

#[cfg(test)]
mod tests;
