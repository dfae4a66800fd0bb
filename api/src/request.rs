//! Every operation as one [`Request`] value, its [`Reply`], and the HTTP [`Route`] it travels
//! on. The server parses routes into requests, the client turns requests into routes, the CLI
//! builds requests from its arguments, and the node executes them with one function: one
//! vocabulary for all of them, and a test that every request survives the round trip.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::{Deserialize, Serialize};

use crate::cluster::{
    Bundle, ChangePassword, ConfigEntry, CreateBundle, ImportMastered, Imported, InstallLicence,
    IssueCertificate, IssuedCertificate, LicenceInfo, PasswordChecked, PasswordEntry,
    RevokeCertificate, RevokedEntry, UserEntry, Written,
};
use crate::credentials::{
    ConflictQuery, CredentialConflict, CredentialHistory, RevealCredential, RevealedSecret,
    RotateCredential, RotationInfo, SetCredential,
};
use crate::local::{
    AuditMeshVerified, AuditQuery, AuditRow, AuditVerified, RecordAudit, Recorded, SetValue,
    Setting,
};
use crate::managed::{ManagedRow, RowPage, RowQuery, TableList};
use crate::node::{
    AdoptRecord, Demote, Failover, HaDone, HaLogEntry, HaLogQuery, HaStatus, Health, HealthQuery,
    MakeStandalone, Status, SupersededRecord, Unseal,
};
use crate::shared::{
    AppendEvents, Appended, Approve, EventPage, EventQuery, ExceptionRow, FingerprintCheck,
    FingerprintRow, HostKey, ObserveFingerprint, SetException,
};
use crate::{FaultDone, FaultRequest};

/// An operation on a node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    /// `POST /v1/events`
    AppendEvents(AppendEvents),
    /// `GET /v1/events`
    ListEvents(EventQuery),
    /// `POST /v1/fingerprints`
    ObserveFingerprint(ObserveFingerprint),
    /// `GET /v1/fingerprints`
    ListFingerprints,
    /// `POST /v1/fingerprints/check`
    CheckFingerprint(HostKey),
    /// `PUT /v1/fingerprints/approvals` (mastered)
    Approve(Approve),
    /// `PUT /v1/exceptions/{user}/{field}`
    SetException {
        /// The user.
        user: String,
        /// The field.
        field: String,
        /// The value.
        value: String,
    },
    /// `DELETE /v1/exceptions/{user}/{field}`
    DeleteException {
        /// The user.
        user: String,
        /// The field.
        field: String,
    },
    /// `GET /v1/exceptions`
    ListExceptions,
    /// `POST /v1/audit`
    RecordAudit(RecordAudit),
    /// `GET /v1/audit`
    ListAudit(AuditQuery),
    /// `GET /v1/audit/verify`
    VerifyAudit,
    /// `GET /v1/audit/verify-mesh`
    VerifyAuditAgainstMesh,
    /// `GET /v1/local`
    ListLocal,
    /// `GET /v1/local/{name}`
    GetLocal {
        /// The setting.
        name: String,
    },
    /// `PUT /v1/local/{name}`
    SetLocal {
        /// The setting.
        name: String,
        /// Its value.
        value: String,
    },
    /// `GET /v1/config`
    ListConfig,
    /// `GET /v1/config/{key}`
    GetConfig {
        /// The key.
        key: String,
    },
    /// `PUT /v1/config/{key}` (mastered)
    SetConfig {
        /// The key.
        key: String,
        /// Its value.
        value: String,
    },
    /// `DELETE /v1/config/{key}` (mastered): back to the default.
    UnsetConfig {
        /// The key.
        key: String,
    },
    /// `GET /v1/tables/{namespace}`: the tables of a namespace
    ListTables {
        /// The namespace.
        namespace: String,
    },
    /// `GET /v1/tables/{namespace}/{table}`: a page of rows
    ListRows {
        /// The namespace.
        namespace: String,
        /// The table.
        table: String,
        /// The page.
        #[serde(flatten)]
        query: RowQuery,
    },
    /// `GET /v1/tables/{namespace}/{table}/{key}`
    GetRow {
        /// The namespace.
        namespace: String,
        /// The table.
        table: String,
        /// The key.
        key: String,
    },
    /// `PUT /v1/tables/{namespace}/{table}/{key}` (mastered): the body is the document
    PutRow {
        /// The namespace.
        namespace: String,
        /// The table.
        table: String,
        /// The key.
        key: String,
        /// The document.
        document: serde_json::Value,
    },
    /// `DELETE /v1/tables/{namespace}/{table}/{key}` (mastered)
    DeleteRow {
        /// The namespace.
        namespace: String,
        /// The table.
        table: String,
        /// The key.
        key: String,
    },
    /// `PUT /v1/credentials/{namespace}/{device}/{account}`: set the secret given
    SetCredential {
        /// The namespace.
        namespace: String,
        /// The device.
        device: String,
        /// The account.
        account: String,
        /// The secret and why.
        #[serde(flatten)]
        body: SetCredential,
    },
    /// `POST /v1/credentials/{namespace}/{device}/{account}/rotate`: a new secret
    RotateCredential {
        /// The namespace.
        namespace: String,
        /// The device.
        device: String,
        /// The account.
        account: String,
        /// The secret or how to generate it, and why.
        #[serde(flatten)]
        body: RotateCredential,
    },
    /// `POST /v1/credentials/{namespace}/{device}/{account}/reveal` (audited on this node)
    RevealCredential {
        /// The namespace.
        namespace: String,
        /// The device.
        device: String,
        /// The account.
        account: String,
        /// Which version.
        #[serde(flatten)]
        body: RevealCredential,
    },
    /// `GET /v1/credentials/{namespace}/{device}/{account}`: the history, no secrets
    CredentialHistory {
        /// The namespace.
        namespace: String,
        /// The device.
        device: String,
        /// The account.
        account: String,
    },
    /// `GET /v1/credentials/conflicts`
    CredentialConflicts(ConflictQuery),
    /// `GET /v1/users`
    ListUsers,
    /// `PUT /v1/users/{name}` (mastered)
    CreateUser {
        /// The user.
        name: String,
    },
    /// `DELETE /v1/users/{name}` (mastered)
    DeleteUser {
        /// The user.
        name: String,
    },
    /// `PUT /v1/users/{name}/grants/{grant}` (mastered)
    Grant {
        /// The user.
        name: String,
        /// The grant.
        grant: String,
    },
    /// `DELETE /v1/users/{name}/grants/{grant}` (mastered)
    RevokeGrant {
        /// The user.
        name: String,
        /// The grant.
        grant: String,
    },
    /// `POST /v1/users/{name}/certificates` (the leader's CA signs it)
    IssueCertificate {
        /// The user.
        name: String,
        /// Validity.
        #[serde(flatten)]
        body: IssueCertificate,
    },
    /// `POST /v1/certificates/revoked` (mastered)
    RevokeCertificate(RevokeCertificate),
    /// `GET /v1/certificates/revoked`
    ListRevoked,
    /// `GET /v1/licence`
    GetLicence,
    /// `PUT /v1/licence` (mastered)
    InstallLicence(InstallLicence),
    /// `POST /v1/bundles` (leader)
    CreateBundle(CreateBundle),
    /// `POST /v1/passwords/{user}` (mastered; the leader applies its policy)
    ChangePassword {
        /// The user.
        user: String,
        /// The new password.
        #[serde(flatten)]
        body: ChangePassword,
    },
    /// `GET /v1/passwords`
    ListPasswords,
    /// `POST /v1/passwords/{user}/verify` (on this node, against the leader's hash)
    VerifyPassword {
        /// The user.
        user: String,
        /// The password to check.
        #[serde(flatten)]
        body: ChangePassword,
    },
    /// `POST /v1/mastered/import`
    ImportMastered(ImportMastered),
    /// `GET /v1/ha`
    Ha,
    /// `POST /v1/ha/demote` (leader)
    Demote(Demote),
    /// `POST /v1/ha/failback` (leader)
    Failback,
    /// `POST /v1/ha/failover` (follower)
    Failover(Failover),
    /// `POST /v1/ha/make-standalone`
    MakeStandalone(MakeStandalone),
    /// `GET /v1/ha/superseded`
    Superseded,
    /// `POST /v1/ha/superseded/adopt` (mastered)
    Adopt(AdoptRecord),
    /// `GET /v1/ha/log`: this node's HA command log, newest first
    HaLog(HaLogQuery),
    /// `GET /v1/status`
    Status,
    /// `GET /v1/health`
    Health(HealthQuery),
    /// `POST /v1/fault/...` (builds with fault hooks only)
    Fault(FaultRequest),
    /// `POST /v1/unseal` (a sealed node only)
    Unseal(Unseal),
}

/// What a [`Request`] answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Reply {
    /// Events appended.
    Appended(Appended),
    /// A page of events.
    Events(EventPage),
    /// A fingerprint row (observed).
    Fingerprint(FingerprintRow),
    /// Fingerprint rows.
    Fingerprints(Vec<FingerprintRow>),
    /// What this node does with a host key.
    FingerprintChecked(FingerprintCheck),
    /// A mastered record written.
    Written(Written),
    /// An exception row (set).
    Exception(ExceptionRow),
    /// Exception rows.
    Exceptions(Vec<ExceptionRow>),
    /// Audit records appended.
    Recorded(Recorded),
    /// Audit records.
    Audit(Vec<AuditRow>),
    /// The audit chain checked.
    AuditVerified(AuditVerified),
    /// The audit chain compared with what peers hold.
    AuditMeshVerified(AuditMeshVerified),
    /// A setting.
    Setting(Setting),
    /// Settings.
    Settings(Vec<Setting>),
    /// A cluster setting.
    Config(ConfigEntry),
    /// Cluster settings.
    ConfigList(Vec<ConfigEntry>),
    /// A managed row.
    Row(ManagedRow),
    /// A page of managed rows.
    Rows(RowPage),
    /// The tables of a namespace.
    Tables(TableList),
    /// A rotation made (set or rotate), without its secret.
    Rotated(RotationInfo),
    /// An account's history.
    CredentialHistory(CredentialHistory),
    /// Accounts in conflict.
    CredentialConflicts(Vec<CredentialConflict>),
    /// A revealed secret.
    Secret(RevealedSecret),
    /// Users.
    Users(Vec<UserEntry>),
    /// A certificate issued.
    Certificate(IssuedCertificate),
    /// Revoked certificates.
    Revoked(Vec<RevokedEntry>),
    /// The licence (none installed: null).
    Licence(Option<LicenceInfo>),
    /// A joining bundle.
    Bundle(Bundle),
    /// Users whose password the leader set.
    Passwords(Vec<PasswordEntry>),
    /// A password checked.
    PasswordChecked(PasswordChecked),
    /// What an import stored.
    Imported(Imported),
    /// Leadership.
    Ha(HaStatus),
    /// An HA operation's outcome.
    HaDone(HaDone),
    /// Superseded records.
    Superseded(Vec<SupersededRecord>),
    /// HA command log entries, newest first.
    HaLog(Vec<HaLogEntry>),
    /// The node's status.
    Status(Box<Status>),
    /// The node's health.
    Health(Health),
    /// A fault hook's effect.
    Fault(FaultDone),
    /// Done, nothing to show (`204 No Content`).
    Empty,
}

/// An HTTP method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// GET
    Get,
    /// POST
    Post,
    /// PUT
    Put,
    /// DELETE
    Delete,
}

/// Where a request travels: method, path (segments percent-encoded), query and JSON body.
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    /// The method.
    pub method: Method,
    /// The path, starting with `/v1/`.
    pub path: String,
    /// Query parameters, in order.
    pub query: Vec<(String, String)>,
    /// The JSON body, if any.
    pub body: Option<serde_json::Value>,
}

/// Characters escaped in a path segment: everything but `A-Z a-z 0-9 - . _ ~`.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A path segment, percent-encoded.
pub fn segment(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

impl Request {
    /// The route the request travels on.
    pub fn route(&self) -> Route {
        use Method::{Delete, Get, Post, Put};
        let r = |method, path: String| Route {
            method,
            path,
            query: Vec::new(),
            body: None,
        };
        let with_body = |method, path: String, body: serde_json::Value| Route {
            body: Some(body),
            ..r(method, path)
        };
        let json = |v: &dyn erased::Json| v.json();
        let s = segment;
        match self {
            Request::AppendEvents(b) => with_body(Post, "/v1/events".into(), json(b)),
            Request::ListEvents(q) => Route {
                query: query_of(q),
                ..r(Get, "/v1/events".into())
            },
            Request::ObserveFingerprint(b) => with_body(Post, "/v1/fingerprints".into(), json(b)),
            Request::ListFingerprints => r(Get, "/v1/fingerprints".into()),
            Request::CheckFingerprint(b) => {
                with_body(Post, "/v1/fingerprints/check".into(), json(b))
            }
            Request::Approve(b) => with_body(Put, "/v1/fingerprints/approvals".into(), json(b)),
            Request::SetException { user, field, value } => with_body(
                Put,
                format!("/v1/exceptions/{}/{}", s(user), s(field)),
                json(&SetException {
                    value: value.clone(),
                }),
            ),
            Request::DeleteException { user, field } => {
                r(Delete, format!("/v1/exceptions/{}/{}", s(user), s(field)))
            }
            Request::ListExceptions => r(Get, "/v1/exceptions".into()),
            Request::RecordAudit(b) => with_body(Post, "/v1/audit".into(), json(b)),
            Request::ListAudit(q) => Route {
                query: query_of(q),
                ..r(Get, "/v1/audit".into())
            },
            Request::VerifyAudit => r(Get, "/v1/audit/verify".into()),
            Request::VerifyAuditAgainstMesh => r(Get, "/v1/audit/verify-mesh".into()),
            Request::ListLocal => r(Get, "/v1/local".into()),
            Request::GetLocal { name } => r(Get, format!("/v1/local/{}", s(name))),
            Request::SetLocal { name, value } => with_body(
                Put,
                format!("/v1/local/{}", s(name)),
                json(&SetValue {
                    value: value.clone(),
                }),
            ),
            Request::ListConfig => r(Get, "/v1/config".into()),
            Request::GetConfig { key } => r(Get, format!("/v1/config/{}", s(key))),
            Request::SetConfig { key, value } => with_body(
                Put,
                format!("/v1/config/{}", s(key)),
                json(&SetValue {
                    value: value.clone(),
                }),
            ),
            Request::UnsetConfig { key } => r(Delete, format!("/v1/config/{}", s(key))),
            Request::ListTables { namespace } => r(Get, format!("/v1/tables/{}", s(namespace))),
            Request::ListRows {
                namespace,
                table,
                query,
            } => Route {
                query: query_of(query),
                ..r(Get, format!("/v1/tables/{}/{}", s(namespace), s(table)))
            },
            Request::GetRow {
                namespace,
                table,
                key,
            } => r(
                Get,
                format!("/v1/tables/{}/{}/{}", s(namespace), s(table), s(key)),
            ),
            Request::PutRow {
                namespace,
                table,
                key,
                document,
            } => with_body(
                Put,
                format!("/v1/tables/{}/{}/{}", s(namespace), s(table), s(key)),
                document.clone(),
            ),
            Request::DeleteRow {
                namespace,
                table,
                key,
            } => r(
                Delete,
                format!("/v1/tables/{}/{}/{}", s(namespace), s(table), s(key)),
            ),
            Request::SetCredential {
                namespace,
                device,
                account,
                body,
            } => with_body(
                Put,
                format!(
                    "/v1/credentials/{}/{}/{}",
                    s(namespace),
                    s(device),
                    s(account)
                ),
                json(body),
            ),
            Request::RotateCredential {
                namespace,
                device,
                account,
                body,
            } => with_body(
                Post,
                format!(
                    "/v1/credentials/{}/{}/{}/rotate",
                    s(namespace),
                    s(device),
                    s(account)
                ),
                json(body),
            ),
            Request::RevealCredential {
                namespace,
                device,
                account,
                body,
            } => with_body(
                Post,
                format!(
                    "/v1/credentials/{}/{}/{}/reveal",
                    s(namespace),
                    s(device),
                    s(account)
                ),
                json(body),
            ),
            Request::CredentialHistory {
                namespace,
                device,
                account,
            } => r(
                Get,
                format!(
                    "/v1/credentials/{}/{}/{}",
                    s(namespace),
                    s(device),
                    s(account)
                ),
            ),
            Request::CredentialConflicts(q) => Route {
                query: query_of(q),
                ..r(Get, "/v1/credentials/conflicts".into())
            },
            Request::ListUsers => r(Get, "/v1/users".into()),
            Request::CreateUser { name } => r(Put, format!("/v1/users/{}", s(name))),
            Request::DeleteUser { name } => r(Delete, format!("/v1/users/{}", s(name))),
            Request::Grant { name, grant } => {
                r(Put, format!("/v1/users/{}/grants/{}", s(name), s(grant)))
            }
            Request::RevokeGrant { name, grant } => {
                r(Delete, format!("/v1/users/{}/grants/{}", s(name), s(grant)))
            }
            Request::IssueCertificate { name, body } => with_body(
                Post,
                format!("/v1/users/{}/certificates", s(name)),
                json(body),
            ),
            Request::RevokeCertificate(b) => {
                with_body(Post, "/v1/certificates/revoked".into(), json(b))
            }
            Request::ListRevoked => r(Get, "/v1/certificates/revoked".into()),
            Request::GetLicence => r(Get, "/v1/licence".into()),
            Request::InstallLicence(b) => with_body(Put, "/v1/licence".into(), json(b)),
            Request::CreateBundle(b) => with_body(Post, "/v1/bundles".into(), json(b)),
            Request::ChangePassword { user, body } => {
                with_body(Post, format!("/v1/passwords/{}", s(user)), json(body))
            }
            Request::ListPasswords => r(Get, "/v1/passwords".into()),
            Request::VerifyPassword { user, body } => with_body(
                Post,
                format!("/v1/passwords/{}/verify", s(user)),
                json(body),
            ),
            Request::ImportMastered(b) => with_body(Post, "/v1/mastered/import".into(), json(b)),
            Request::Ha => r(Get, "/v1/ha".into()),
            Request::Demote(b) => with_body(Post, "/v1/ha/demote".into(), json(b)),
            Request::Failback => r(Post, "/v1/ha/failback".into()),
            Request::Failover(b) => with_body(Post, "/v1/ha/failover".into(), json(b)),
            Request::MakeStandalone(b) => with_body(Post, "/v1/ha/make-standalone".into(), json(b)),
            Request::Superseded => r(Get, "/v1/ha/superseded".into()),
            Request::Adopt(b) => with_body(Post, "/v1/ha/superseded/adopt".into(), json(b)),
            Request::HaLog(q) => Route {
                query: query_of(q),
                ..r(Get, "/v1/ha/log".into())
            },
            Request::Status => r(Get, "/v1/status".into()),
            Request::Health(q) => Route {
                query: query_of(q),
                ..r(Get, "/v1/health".into())
            },
            Request::Fault(f) => with_body(Post, format!("/v1/fault/{}", f.name()), json(f)),
            Request::Unseal(b) => with_body(Post, "/v1/unseal".into(), json(b)),
        }
    }

    /// Decodes the JSON answer body of this request into its reply (an empty body: `Empty`).
    pub fn reply_from(&self, body: &[u8]) -> Result<Reply, serde_json::Error> {
        if body.is_empty() {
            return Ok(Reply::Empty);
        }
        fn de<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, serde_json::Error> {
            serde_json::from_slice(b)
        }
        Ok(match self {
            Request::AppendEvents(_) => Reply::Appended(de(body)?),
            Request::ListEvents(_) => Reply::Events(de(body)?),
            Request::ObserveFingerprint(_) => Reply::Fingerprint(de(body)?),
            Request::ListFingerprints => Reply::Fingerprints(de(body)?),
            Request::CheckFingerprint(_) => Reply::FingerprintChecked(de(body)?),
            Request::SetException { .. } => Reply::Exception(de(body)?),
            Request::ListExceptions => Reply::Exceptions(de(body)?),
            Request::RecordAudit(_) => Reply::Recorded(de(body)?),
            Request::ListAudit(_) => Reply::Audit(de(body)?),
            Request::VerifyAudit => Reply::AuditVerified(de(body)?),
            Request::VerifyAuditAgainstMesh => Reply::AuditMeshVerified(de(body)?),
            Request::ListLocal => Reply::Settings(de(body)?),
            Request::GetLocal { .. } | Request::SetLocal { .. } => Reply::Setting(de(body)?),
            Request::ListConfig => Reply::ConfigList(de(body)?),
            Request::GetConfig { .. } => Reply::Config(de(body)?),
            Request::ListTables { .. } => Reply::Tables(de(body)?),
            Request::ListRows { .. } => Reply::Rows(de(body)?),
            Request::GetRow { .. } => Reply::Row(de(body)?),
            Request::SetCredential { .. } | Request::RotateCredential { .. } => {
                Reply::Rotated(de(body)?)
            }
            Request::RevealCredential { .. } => Reply::Secret(de(body)?),
            Request::CredentialHistory { .. } => Reply::CredentialHistory(de(body)?),
            Request::CredentialConflicts(_) => Reply::CredentialConflicts(de(body)?),
            Request::ListUsers => Reply::Users(de(body)?),
            Request::IssueCertificate { .. } => Reply::Certificate(de(body)?),
            Request::ListRevoked => Reply::Revoked(de(body)?),
            Request::GetLicence => Reply::Licence(de(body)?),
            Request::CreateBundle(_) => Reply::Bundle(de(body)?),
            Request::ListPasswords => Reply::Passwords(de(body)?),
            Request::VerifyPassword { .. } => Reply::PasswordChecked(de(body)?),
            Request::ImportMastered(_) => Reply::Imported(de(body)?),
            Request::Ha => Reply::Ha(de(body)?),
            Request::Demote(_)
            | Request::Failback
            | Request::Failover(_)
            | Request::MakeStandalone(_) => Reply::HaDone(de(body)?),
            Request::Superseded => Reply::Superseded(de(body)?),
            Request::HaLog(_) => Reply::HaLog(de(body)?),
            Request::Status => Reply::Status(Box::new(de(body)?)),
            Request::Health(_) => Reply::Health(de(body)?),
            Request::Fault(_) => Reply::Fault(de(body)?),
            Request::Approve(_)
            | Request::SetConfig { .. }
            | Request::UnsetConfig { .. }
            | Request::PutRow { .. }
            | Request::DeleteRow { .. }
            | Request::CreateUser { .. }
            | Request::DeleteUser { .. }
            | Request::Grant { .. }
            | Request::RevokeGrant { .. }
            | Request::RevokeCertificate(_)
            | Request::InstallLicence(_)
            | Request::Adopt(_)
            | Request::ChangePassword { .. } => Reply::Written(de(body)?),
            Request::DeleteException { .. } | Request::Unseal(_) => Reply::Empty,
        })
    }

    /// A one-line description for logs and the HA command log; never a secret.
    pub fn describe(&self) -> String {
        match self {
            Request::Failover(f) if f.force => "ha failover --force".into(),
            Request::Failover(_) => "ha failover".into(),
            Request::Demote(d) => format!("ha demote --to {}", d.to),
            Request::Failback => "ha failback".into(),
            Request::MakeStandalone(m) => match &m.node {
                Some(node) => format!("ha make-standalone --node {node}"),
                None => "ha make-standalone".into(),
            },
            Request::ChangePassword { user, .. } => format!("password change {user}"),
            Request::Adopt(a) => format!("ha adopt {}", a.hash),
            _ => {
                let Route { method, path, .. } = self.route();
                format!("{} {path}", format!("{method:?}").to_uppercase())
            }
        }
    }
}

/// Query parameters of a serializable query struct (fields that are set, in order).
fn query_of(q: &impl Serialize) -> Vec<(String, String)> {
    let Ok(serde_json::Value::Object(map)) = serde_json::to_value(q) else {
        return Vec::new();
    };
    map.into_iter()
        .filter_map(|(k, v)| match v {
            serde_json::Value::Null => None,
            serde_json::Value::String(s) => Some((k, s)),
            other => Some((k, other.to_string())),
        })
        .collect()
}

/// Serializing a body into JSON without naming its type at each call.
mod erased {
    pub trait Json {
        fn json(&self) -> serde_json::Value;
    }

    impl<T: serde::Serialize> Json for T {
        fn json(&self) -> serde_json::Value {
            // Invariant: the API's types are plain structs of strings, numbers, booleans,
            // options and vectors, which serde_json always serializes.
            serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
        }
    }
}
