//! Credential rotations: rows of the shared `rotations` table, the hybrid logical clock that
//! orders them, and the fold that names each account's current secret and its conflicts.
//!
//! # Rows
//! A managed account is addressed `NS/DEVICE/ACCOUNT` ([`check_address`]). Every rotation of
//! it is one row, written by the node that rotated it (the CRDT lets only that node write its
//! rows), stored under the map key `ADDRESS HLC` ([`rotation_key`]). The row holds the secret
//! sealed by the node (this crate never sees a plain secret), when, why and for whom, and
//! `seen`: per writer, the newest rotation of this account the writer had seen when it rotated
//! (a version vector over the account's writers, at most [`MAX_SEEN`] entries).
//!
//! # Order, current secret, conflicts
//! Rotations are ordered by their [`Hlc`] (physical ms, then a logical counter), ties broken
//! by writer id: the greatest is the account's current secret on every node that holds the
//! same rows. A node's HLC moves past every HLC it holds ([`Hlc::next`]), so a rotation that
//! has seen another is always greater than it.
//!
//! A rotation R of writer W is *settled* by a rotation S when S is a later rotation of W or
//! S's `seen` covers R (`seen[W] >= R.hlc`). The *heads* of an account are its rotations that
//! nothing settles ([`Account::heads`]). One head: no conflict. Two or more: rotations made
//! concurrently (typically on both sides of a partition) that no later rotation has seen
//! together; all of them are kept, and a rotation that has seen them all settles them.
//!
//! # Retention
//! A writer keeps its [`RETAIN_PER_WRITER`] newest rotations of each account and deletes its
//! own older ones when it rotates ([`Account::expired`]). A head is never deleted (the
//! writer's newest rotation is always kept and its older ones are settled by it), so the
//! secrets of a conflict stay until a later rotation settles it. `seen` stays correct across
//! deletions because a writer's newest rotation carries the maximum of everything it had seen.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::id::WriterId;
use crate::mastered::{check_key, check_name};

/// Largest secret (plain bytes) a rotation may seal.
pub const MAX_SECRET: usize = 4096;
/// Largest sealed secret a row may hold: the secret plus the sealing overhead, with room.
pub const MAX_SEALED: usize = MAX_SECRET + 64;
/// Longest reason text, in bytes.
pub const MAX_REASON: usize = 1024;
/// Longest account address `NS/DEVICE/ACCOUNT`, in bytes.
pub const MAX_ADDRESS: usize = 63 + 1 + 255 + 1 + 255;
/// Most writers a rotation's `seen` names. An account rotated by more distinct nodes keeps
/// the newest [`MAX_SEEN`] of them; older rotations of the others may then show as conflicts
/// until they rotate again.
pub const MAX_SEEN: usize = 32;
/// Rotations of one account each writer keeps (the newest ones); older ones are deleted by
/// their writer when it rotates that account again.
pub const RETAIN_PER_WRITER: usize = 16;

/// Longest `user` (who asked), in bytes.
pub const MAX_USER: usize = 256;

/// A rotation row was refused: the field and why. Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} is not valid: {reason}")]
pub struct RotationError {
    /// The field.
    pub field: &'static str,
    /// What is wrong and what is allowed.
    pub reason: String,
}

impl RotationError {
    fn new(field: &'static str, reason: impl Into<String>) -> Self {
        RotationError {
            field,
            reason: reason.into(),
        }
    }
}

/// A hybrid logical clock value: physical unix ms, then a counter for rotations in the same
/// ms or behind a clock that is ahead of ours.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Serialize, Deserialize,
)]
pub struct Hlc {
    /// Physical time, unix milliseconds.
    pub ms: i64,
    /// Logical counter within `ms`.
    pub counter: u32,
}

impl Hlc {
    /// The next HLC of a node whose wall clock reads `now_ms` and which holds rotations up to
    /// `held` (the greatest HLC it holds, its own included): greater than `held`, and at least
    /// `now_ms`. Pure; a node derives `held` from its stored rows, so its clock never goes
    /// backwards across restarts and moves past every rotation it has received.
    pub fn next(now_ms: i64, held: Option<Hlc>) -> Hlc {
        match held {
            Some(h) if h.ms >= now_ms => match h.counter.checked_add(1) {
                Some(counter) => Hlc { ms: h.ms, counter },
                None => Hlc {
                    ms: h.ms.saturating_add(1),
                    counter: 0,
                },
            },
            _ => Hlc {
                ms: now_ms,
                counter: 0,
            },
        }
    }
}

impl fmt::Display for Hlc {
    /// `MS.COUNTER`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.ms, self.counter)
    }
}

impl FromStr for Hlc {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ms, counter) = s
            .split_once('.')
            .ok_or_else(|| format!("{s:?} is not MS.COUNTER"))?;
        Ok(Hlc {
            ms: ms.parse().map_err(|_| format!("{ms:?} is not a number"))?,
            counter: counter
                .parse()
                .map_err(|_| format!("{counter:?} is not a number"))?,
        })
    }
}

/// One rotation of an account's secret, as its writer stored it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Rotation {
    /// The account, `NS/DEVICE/ACCOUNT` ([`check_address`]).
    pub address: String,
    /// Its version: the writer's HLC when it rotated.
    pub hlc: Hlc,
    /// Per writer, the newest rotation of this account the writer had seen (sorted by writer,
    /// at most [`MAX_SEEN`]; the writer itself is not named).
    pub seen: Vec<(WriterId, Hlc)>,
    /// The secret, sealed by the writer under the cluster's MEK and bound to the address,
    /// the writer and the HLC (at most [`MAX_SEALED`] bytes). Never a plain secret.
    pub sealed: Vec<u8>,
    /// When it was rotated, unix ms (the writer's clock).
    pub at_ms: i64,
    /// Why (free text, at most [`MAX_REASON`] bytes).
    pub reason: String,
    /// Who asked for it (a user, or `local operator`).
    pub user: String,
    /// How the secret came: `set` (given by an operator) or `generated`.
    pub how: RotationKind,
}

/// How a rotation's secret came to be.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum RotationKind {
    /// An operator gave it.
    Set,
    /// The node generated it.
    Generated,
}

impl RotationKind {
    /// `set` or `generated`.
    pub fn as_str(self) -> &'static str {
        match self {
            RotationKind::Set => "set",
            RotationKind::Generated => "generated",
        }
    }
}

/// The rotations of one account, from every writer, ordered oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Account {
    /// `(writer, rotation)`, sorted by `(hlc, writer)`.
    pub rotations: Vec<(WriterId, Rotation)>,
}

impl Rotation {
    /// Checks every bound of the row.
    pub fn validate(&self) -> Result<(), RotationError> {
        check_address(&self.address)?;
        if self.hlc.ms < 0 {
            return Err(RotationError::new("hlc", "before 1970"));
        }
        if self.seen.len() > MAX_SEEN {
            return Err(too_long("seen", self.seen.len(), MAX_SEEN));
        }
        if self.seen.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(RotationError::new("seen", "writers not sorted or repeated"));
        }
        if self.sealed.is_empty() {
            return Err(RotationError::new("sealed", "it is empty"));
        }
        if self.sealed.len() > MAX_SEALED {
            return Err(too_long("sealed", self.sealed.len(), MAX_SEALED));
        }
        line("reason", &self.reason, MAX_REASON)?;
        if self.user.is_empty() {
            return Err(RotationError::new("user", "it is empty"));
        }
        line("user", &self.user, MAX_USER)
    }

    /// Whether `self` (written by `writer`) is settled by `other` (written by `by`).
    pub fn settled_by(&self, writer: &WriterId, other: &Rotation, by: &WriterId) -> bool {
        if other.address != self.address {
            return false;
        }
        if by == writer {
            return other.hlc > self.hlc;
        }
        other
            .seen
            .binary_search_by(|(w, _)| w.cmp(writer))
            .is_ok_and(|i| other.seen[i].1 >= self.hlc)
    }
}

/// The map key of a rotation row: `ADDRESS MS.COUNTER` (an address holds no space).
pub fn rotation_key(address: &str, hlc: Hlc) -> String {
    format!("{address} {hlc}")
}

/// Checks an account address `NS/DEVICE/ACCOUNT`: a namespace as managed tables name them,
/// then a device and an account as managed row keys are written.
pub fn check_address(address: &str) -> Result<(), RotationError> {
    let invalid = |reason: String| RotationError::new("address", reason);
    if address.len() > MAX_ADDRESS {
        return Err(too_long("address", address.len(), MAX_ADDRESS));
    }
    let parts: Vec<&str> = address.split('/').collect();
    let [ns, device, account] = parts[..] else {
        return Err(invalid(
            "write it NAMESPACE/DEVICE/ACCOUNT, e.g. ns1/db-01/root".into(),
        ));
    };
    check_name("namespace", ns).map_err(|e| invalid(e.to_string()))?;
    check_key(device).map_err(|e| invalid(format!("device: {e}")))?;
    check_key(account).map_err(|e| invalid(format!("account: {e}")))?;
    Ok(())
}

/// The namespace of a checked address (its first part).
pub fn address_namespace(address: &str) -> &str {
    address.split('/').next().unwrap_or_default()
}

/// Groups rotation rows by account.
pub fn accounts(rows: impl IntoIterator<Item = (WriterId, Rotation)>) -> BTreeMap<String, Account> {
    let mut out: BTreeMap<String, Account> = BTreeMap::new();
    for (writer, rotation) in rows {
        out.entry(rotation.address.clone())
            .or_default()
            .rotations
            .push((writer, rotation));
    }
    for account in out.values_mut() {
        account.rotations.sort_by(order);
    }
    out
}

impl Account {
    /// The current rotation: the greatest by `(hlc, writer)`.
    pub fn current(&self) -> Option<&(WriterId, Rotation)> {
        self.rotations.last()
    }

    /// The rotations nothing settles, oldest first. More than one is a conflict.
    pub fn heads(&self) -> Vec<&(WriterId, Rotation)> {
        self.rotations
            .iter()
            .filter(|(w, r)| {
                !self
                    .rotations
                    .iter()
                    .any(|(by, other)| r.settled_by(w, other, by))
            })
            .collect()
    }

    /// Whether concurrent rotations wait for a later one to settle them.
    pub fn in_conflict(&self) -> bool {
        self.heads().len() > 1
    }

    /// The greatest HLC held for this account.
    pub fn newest(&self) -> Option<Hlc> {
        self.rotations.iter().map(|(_, r)| r.hlc).max()
    }

    /// What a new rotation by `me` records as seen: per other writer, the greatest of its
    /// rotations held and of what every held rotation had seen; the newest [`MAX_SEEN`].
    pub fn seen_by(&self, me: &WriterId) -> Vec<(WriterId, Hlc)> {
        let mut seen: BTreeMap<WriterId, Hlc> = BTreeMap::new();
        let mut note = |w: WriterId, h: Hlc| {
            let e = seen.entry(w).or_insert(h);
            *e = (*e).max(h);
        };
        for (w, r) in &self.rotations {
            note(*w, r.hlc);
            for (sw, sh) in &r.seen {
                note(*sw, *sh);
            }
        }
        seen.remove(me);
        let mut out: Vec<(WriterId, Hlc)> = seen.into_iter().collect();
        if out.len() > MAX_SEEN {
            out.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            out.truncate(MAX_SEEN);
            out.sort_by_key(|a| a.0);
        }
        out
    }

    /// `writer`'s rotations to delete once it has added one more: all but its
    /// [`RETAIN_PER_WRITER`] - 1 newest held now. Their HLCs.
    pub fn expired(&self, writer: &WriterId) -> Vec<Hlc> {
        let own: Vec<Hlc> = self
            .rotations
            .iter()
            .filter(|(w, _)| w == writer)
            .map(|(_, r)| r.hlc)
            .collect();
        let keep = RETAIN_PER_WRITER.saturating_sub(1);
        own[..own.len().saturating_sub(keep)].to_vec()
    }
}

fn too_long(field: &'static str, len: usize, max: usize) -> RotationError {
    RotationError::new(field, format!("{len} long; the limit is {max}"))
}

/// One line of text: at most `max` bytes, no control characters.
fn line(field: &'static str, value: &str, max: usize) -> Result<(), RotationError> {
    if value.len() > max {
        return Err(too_long(field, value.len(), max));
    }
    if value.chars().any(char::is_control) {
        return Err(RotationError::new(field, "one line, no control characters"));
    }
    Ok(())
}

fn order(a: &(WriterId, Rotation), b: &(WriterId, Rotation)) -> Ordering {
    a.1.hlc.cmp(&b.1.hlc).then(a.0.cmp(&b.0))
}

#[cfg(test)]
mod tests;
