//! Admin users and their grants: mastered data, and the authorizer that decides what a user may
//! do. Pure: no store, no clock.
//!
//! # Grants
//! A grant is written `root`, `admin:NS`, `guest:NS` or `guest:*`, where `NS` is a
//! [`Namespace`]. What each allows ([`authorize`]) is exactly this table, and nothing else is
//! implied (an admin of `ns1` cannot read `ns2`, no grant but `root` administers users):
//!
//! | action | `root` | `admin:NS` | `guest:NS` | `guest:*` |
//! |---|---|---|---|---|
//! | [`Action::Read`] of namespace `N` | yes | if `N` = `NS` | if `N` = `NS` | yes |
//! | [`Action::Write`] in namespace `N` | yes | if `N` = `NS` | no | no |
//! | [`Action::ReadCluster`] (status, roster, metrics) | yes | no | no | yes |
//! | [`Action::ClusterAdmin`] (roster, bundles, config, licence) | yes | no | no | no |
//! | [`Action::UserAdmin`] (users, grants, certificates) | yes | no | no | no |
//! | [`Action::HaOps`] (demote, failover, failback) | yes | no | no | no |
//! | [`Action::Backup`] (backup, restore, unseal) | yes | no | no | no |
//!
//! A user with several grants may do what any one of them allows; a user with none may do
//! nothing.
//!
//! # Mastered records
//! Users and grants live in the leader-signed mastered chain. Every payload starts with a
//! format byte ([`PAYLOAD_FORMAT`]) and a subject byte, then a postcard body; at most
//! [`MAX_PAYLOAD`] bytes:
//!
//! | record kind | subject | body | meaning |
//! |---|---|---|---|
//! | `user` | 1 | user name | create the user, with no grant |
//! | `grant` | 2 | user name, grant | give the user the grant |
//! | `revocation` | 1 | user name | delete the user and all its grants |
//! | `revocation` | 2 | user name, grant | take the grant back |
//! | `revocation` | 3 | certificate serial | revoke a client certificate ([`crate::certs`]) |
//!
//! Revocations with another subject byte are about something else (certificates, keys) and
//! are skipped by the users view. [`Users::fold`] replays the records in chain order; a change
//! that does not fit the state it meets ([`Users::check`]: creating a user that exists, a grant
//! for a user that does not, a bound exceeded) changes nothing, the same rule the leader applies
//! before writing, so every node folds the same chain into the same view.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use meshward_crdt::mastered::{RecordKind, SignedRecord, Verified};
use serde::{Deserialize, Serialize};

/// Longest user name, in bytes.
pub const MAX_USER_NAME: usize = 64;
/// Longest namespace name, in bytes.
pub const MAX_NAMESPACE: usize = 63;
/// Most grants one user may hold.
pub const MAX_GRANTS_PER_USER: usize = 64;
/// Most users a cluster may hold.
pub const MAX_USERS: usize = 10_000;
/// Largest user, grant or revocation payload, in bytes.
pub const MAX_PAYLOAD: usize = 512;
/// First byte of every payload this module writes.
pub const PAYLOAD_FORMAT: u8 = 1;

const SUBJECT_USER: u8 = 1;
const SUBJECT_GRANT: u8 = 2;

/// A user name: 1 to [`MAX_USER_NAME`] bytes of lowercase ASCII letters, digits, `.`, `_` and
/// `-`, starting with a letter or a digit. It is also the CN of the user's certificates.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct UserName(String);

/// A namespace name: 1 to [`MAX_NAMESPACE`] bytes of lowercase ASCII letters, digits, `_` and
/// `-`, starting with a letter or a digit.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Namespace(String);

/// What a user may do; see the module docs for the table.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Grant {
    /// Everything.
    Root,
    /// Read and write in one namespace.
    Admin(Namespace),
    /// Read in one namespace.
    Guest(Namespace),
    /// Read in every namespace, and the cluster's state.
    GuestAll,
}

/// Every class of operation the authorizer decides.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// Read data of a namespace.
    Read(Namespace),
    /// Write data in a namespace.
    Write(Namespace),
    /// Read the cluster's state: status, roster, metrics, the user list.
    ReadCluster,
    /// Change the cluster: roster, joining bundles, managed config, licence.
    ClusterAdmin,
    /// Create and delete users, give and take grants, issue certificates.
    UserAdmin,
    /// Leadership operations: demote, failover, failback.
    HaOps,
    /// Backup, restore and unseal (they handle the MEK).
    Backup,
}

/// The authorizer's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// One of the grants allows the action.
    Allow,
    /// No grant allows it; the text names what would.
    Deny(String),
}

/// A user, grant or revocation change, as carried by a mastered record's payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserChange {
    /// Create a user with no grant.
    Create(UserName),
    /// Give a grant.
    AddGrant(UserName, Grant),
    /// Take a grant back.
    RevokeGrant(UserName, Grant),
    /// Delete a user with its grants.
    Delete(UserName),
}

/// The users and grants held by the mastered chain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Users {
    users: BTreeMap<UserName, BTreeSet<Grant>>,
}

/// A user name, namespace or grant was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Empty, too long, or a character outside the allowed set.
    #[error("{what} {value:?} is not valid: {reason}")]
    Invalid {
        /// "user name", "namespace" or "grant".
        what: &'static str,
        /// The refused text (truncated to 80 characters).
        value: String,
        /// What is allowed.
        reason: String,
    },
}

/// A payload did not decode. Nothing was applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// More than [`MAX_PAYLOAD`] bytes.
    #[error("payload of {len} bytes; the limit is {MAX_PAYLOAD}")]
    TooLarge {
        /// Its length.
        len: usize,
    },
    /// An unknown format byte.
    #[error("unknown payload format {0}")]
    Format(u8),
    /// The record kind carries no user change, or the subject byte is unknown for it.
    #[error("a {kind} record with subject {subject} is not a user change")]
    Subject {
        /// The record kind.
        kind: &'static str,
        /// The subject byte.
        subject: u8,
    },
    /// The body is not valid.
    #[error("malformed payload: {0}")]
    Malformed(String),
}

/// A change does not fit the current users. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    /// Creating a user that exists.
    #[error("user {0} already exists")]
    Exists(UserName),
    /// Naming a user that does not exist.
    #[error("no user {0}; create it first with `meshward user create {0}`")]
    NoUser(UserName),
    /// Giving a grant the user holds.
    #[error("user {0} already holds {1}")]
    HasGrant(UserName, Grant),
    /// Taking back a grant the user does not hold.
    #[error("user {0} does not hold {1}")]
    NoGrant(UserName, Grant),
    /// [`MAX_USERS`] users exist.
    #[error("the cluster already holds {MAX_USERS} users, the limit")]
    TooManyUsers,
    /// The user holds [`MAX_GRANTS_PER_USER`] grants.
    #[error("user {0} already holds {MAX_GRANTS_PER_USER} grants, the limit")]
    TooManyGrants(UserName),
}

/// The stored chain holds a user record that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("mastered record version {version}: {source}")]
pub struct FoldError {
    /// The record's version.
    pub version: u64,
    /// Why it did not decode.
    pub source: PayloadError,
}

/// Decides whether a holder of `grants` may do `action`; see the module docs for the table.
pub fn authorize<'a>(grants: impl IntoIterator<Item = &'a Grant>, action: &Action) -> Decision {
    let allowed = grants.into_iter().any(|grant| match (grant, action) {
        (Grant::Root, _) => true,
        (Grant::Admin(ns), Action::Read(n) | Action::Write(n)) => ns == n,
        (Grant::Guest(ns), Action::Read(n)) => ns == n,
        (Grant::GuestAll, Action::Read(_) | Action::ReadCluster) => true,
        _ => false,
    });
    if allowed {
        return Decision::Allow;
    }
    Decision::Deny(match action {
        Action::Read(ns) => {
            format!("reading namespace {ns} needs admin:{ns}, guest:{ns}, guest:* or root")
        }
        Action::Write(ns) => format!("writing in namespace {ns} needs admin:{ns} or root"),
        Action::ReadCluster => "reading the cluster's state needs guest:* or root".into(),
        Action::ClusterAdmin => "changing the cluster needs root".into(),
        Action::UserAdmin => "administering users needs root".into(),
        Action::HaOps => "HA operations need root".into(),
        Action::Backup => "backup, restore and unseal need root".into(),
    })
}

impl UserName {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Namespace {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for UserName {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        check_name(
            "user name",
            s,
            MAX_USER_NAME,
            |c| matches!(c, '.' | '_' | '-'),
            "lowercase letters, digits, '.', '_' and '-'",
        )?;
        Ok(UserName(s.to_string()))
    }
}

impl FromStr for Namespace {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        check_name(
            "namespace",
            s,
            MAX_NAMESPACE,
            |c| matches!(c, '_' | '-'),
            "lowercase letters, digits, '_' and '-'",
        )?;
        Ok(Namespace(s.to_string()))
    }
}

impl FromStr for Grant {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        match s.split_once(':') {
            None if s == "root" => Ok(Grant::Root),
            Some(("guest", "*")) => Ok(Grant::GuestAll),
            Some(("admin", "*")) => Err(ParseError::Invalid {
                what: "grant",
                value: s.into(),
                reason: "admin is given for one namespace at a time (root administers all)".into(),
            }),
            Some(("admin", ns)) => Ok(Grant::Admin(ns.parse()?)),
            Some(("guest", ns)) => Ok(Grant::Guest(ns.parse()?)),
            _ => Err(ParseError::Invalid {
                what: "grant",
                value: shorten(s),
                reason: "write root, admin:NAMESPACE, guest:NAMESPACE or guest:*".into(),
            }),
        }
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Grant::Root => f.write_str("root"),
            Grant::Admin(ns) => write!(f, "admin:{ns}"),
            Grant::Guest(ns) => write!(f, "guest:{ns}"),
            Grant::GuestAll => f.write_str("guest:*"),
        }
    }
}

/// The wire body of a user change (after the format and subject bytes).
#[derive(Serialize, Deserialize)]
struct Body {
    user: String,
    grant: Option<String>,
}

impl UserChange {
    /// The record kind and payload that carry this change.
    pub fn encode(&self) -> (RecordKind, Vec<u8>) {
        let (kind, subject, user, grant) = match self {
            UserChange::Create(u) => (RecordKind::User, SUBJECT_USER, u, None),
            UserChange::AddGrant(u, g) => (RecordKind::Grant, SUBJECT_GRANT, u, Some(g)),
            UserChange::RevokeGrant(u, g) => (RecordKind::Revocation, SUBJECT_GRANT, u, Some(g)),
            UserChange::Delete(u) => (RecordKind::Revocation, SUBJECT_USER, u, None),
        };
        let body = Body {
            user: user.0.clone(),
            grant: grant.map(Grant::to_string),
        };
        let mut payload = vec![PAYLOAD_FORMAT, subject];
        // Serializing two short strings into a Vec cannot fail.
        payload.extend(postcard::to_allocvec(&body).unwrap_or_default());
        (kind, payload)
    }

    /// Decodes a record's payload. `Ok(None)`: a revocation about something else than users.
    /// Never panics; bounded by [`MAX_PAYLOAD`].
    pub fn decode(kind: RecordKind, payload: &[u8]) -> Result<Option<UserChange>, PayloadError> {
        if payload.len() > MAX_PAYLOAD {
            return Err(PayloadError::TooLarge { len: payload.len() });
        }
        let [format, subject, body @ ..] = payload else {
            return Err(PayloadError::Malformed("shorter than 2 bytes".into()));
        };
        if *format != PAYLOAD_FORMAT {
            return Err(PayloadError::Format(*format));
        }
        let subject = *subject;
        let wrong = || PayloadError::Subject {
            kind: kind.as_str(),
            subject,
        };
        let wants_grant = match (kind, subject) {
            (RecordKind::User | RecordKind::Revocation, SUBJECT_USER) => false,
            (RecordKind::Grant | RecordKind::Revocation, SUBJECT_GRANT) => true,
            (RecordKind::Revocation, _) => return Ok(None),
            _ => return Err(wrong()),
        };
        let body: Body = decode_body(body)?;
        let bad = |e: ParseError| PayloadError::Malformed(e.to_string());
        let user: UserName = body.user.parse().map_err(bad)?;
        let grant = match (wants_grant, body.grant) {
            (true, Some(g)) => Some(g.parse::<Grant>().map_err(bad)?),
            (false, None) => None,
            (true, None) => return Err(PayloadError::Malformed("no grant".into())),
            (false, Some(_)) => return Err(PayloadError::Malformed("unexpected grant".into())),
        };
        Ok(Some(match (kind, grant) {
            (RecordKind::User, None) => UserChange::Create(user),
            (RecordKind::Grant, Some(g)) => UserChange::AddGrant(user, g),
            (RecordKind::Revocation, Some(g)) => UserChange::RevokeGrant(user, g),
            (RecordKind::Revocation, None) => UserChange::Delete(user),
            _ => return Err(wrong()),
        }))
    }
}

impl Users {
    /// Folds verified mastered records, in chain order, into the users view. Records of other
    /// kinds are skipped; a user record that does not decode is an error (the leader never
    /// writes one); a change that does not fit is skipped (see the module docs).
    pub fn fold<'a>(
        records: impl IntoIterator<Item = &'a Verified<SignedRecord>>,
    ) -> Result<Users, FoldError> {
        let mut users = Users::default();
        for record in records {
            let record = &record.record;
            if !matches!(
                record.kind,
                RecordKind::User | RecordKind::Grant | RecordKind::Revocation
            ) {
                continue;
            }
            let change =
                UserChange::decode(record.kind, &record.payload).map_err(|source| FoldError {
                    version: record.version,
                    source,
                })?;
            if let Some(change) = change {
                // A change that does not fit is skipped, as the leader would have refused it.
                let _ = users.apply(&change);
            }
        }
        Ok(users)
    }

    /// Whether `change` fits the current users; the leader checks this before writing it.
    pub fn check(&self, change: &UserChange) -> Result<(), ChangeError> {
        match change {
            UserChange::Create(u) if self.users.contains_key(u) => {
                Err(ChangeError::Exists(u.clone()))
            }
            UserChange::Create(_) if self.users.len() >= MAX_USERS => {
                Err(ChangeError::TooManyUsers)
            }
            UserChange::Create(_) => Ok(()),
            UserChange::AddGrant(u, g) => match self.users.get(u) {
                None => Err(ChangeError::NoUser(u.clone())),
                Some(gs) if gs.contains(g) => Err(ChangeError::HasGrant(u.clone(), g.clone())),
                Some(gs) if gs.len() >= MAX_GRANTS_PER_USER => {
                    Err(ChangeError::TooManyGrants(u.clone()))
                }
                Some(_) => Ok(()),
            },
            UserChange::RevokeGrant(u, g) => match self.users.get(u) {
                None => Err(ChangeError::NoUser(u.clone())),
                Some(gs) if !gs.contains(g) => Err(ChangeError::NoGrant(u.clone(), g.clone())),
                Some(_) => Ok(()),
            },
            UserChange::Delete(u) if !self.users.contains_key(u) => {
                Err(ChangeError::NoUser(u.clone()))
            }
            UserChange::Delete(_) => Ok(()),
        }
    }

    /// Applies `change` if it fits ([`Users::check`]); otherwise changes nothing.
    pub fn apply(&mut self, change: &UserChange) -> Result<(), ChangeError> {
        self.check(change)?;
        match change {
            UserChange::Create(u) => {
                self.users.insert(u.clone(), BTreeSet::new());
            }
            UserChange::AddGrant(u, g) => {
                self.users.entry(u.clone()).or_default().insert(g.clone());
            }
            UserChange::RevokeGrant(u, g) => {
                if let Some(gs) = self.users.get_mut(u) {
                    gs.remove(g);
                }
            }
            UserChange::Delete(u) => {
                self.users.remove(u);
            }
        }
        Ok(())
    }

    /// A user's grants; `None` if there is no such user.
    pub fn grants(&self, user: &UserName) -> Option<&BTreeSet<Grant>> {
        self.users.get(user)
    }

    /// Every user with its grants, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&UserName, &BTreeSet<Grant>)> {
        self.users.iter()
    }

    /// How many users there are.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether there is no user.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

fn check_name(
    what: &'static str,
    s: &str,
    max: usize,
    extra: impl Fn(char) -> bool,
    allowed: &str,
) -> Result<(), ParseError> {
    let invalid = |reason: String| ParseError::Invalid {
        what,
        value: shorten(s),
        reason,
    };
    if s.is_empty() {
        return Err(invalid("it is empty".into()));
    }
    if s.len() > max {
        return Err(invalid(format!("longer than {max} bytes")));
    }
    let first_ok = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !first_ok {
        return Err(invalid(
            "it must start with a lowercase letter or a digit".into(),
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|&c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || extra(c)))
    {
        return Err(invalid(format!(
            "{c:?} is not allowed; use {allowed} (at most {max})"
        )));
    }
    Ok(())
}

fn shorten(s: &str) -> String {
    s.chars().take(80).collect()
}

/// A payload's postcard body, all of `bytes` (trailing bytes are refused).
pub(crate) fn decode_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, PayloadError> {
    match postcard::take_from_bytes(bytes) {
        Ok((body, [])) => Ok(body),
        Ok(_) => Err(PayloadError::Malformed("trailing bytes".into())),
        Err(e) => Err(PayloadError::Malformed(e.to_string())),
    }
}

#[cfg(test)]
mod tests;
