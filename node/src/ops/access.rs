//! What each request needs of the caller's grants: a (resource, access, namespace) table
//! mapped onto the authorizer's [`Action`]s ([`crate::grants`]).
//!
//! | resource | read | write |
//! |---|---|---|
//! | events, fingerprints (observed), exceptions, audit, the watch stream | read namespace `default` | write in `default` |
//! | the watch stream (`GET /v1/watch`, see [`crate::ops::watch::Tables::required`]) | `events`, `fingerprints`, `exceptions`: read namespace `default`; `mastered`: read the cluster | – |
//! | status, health, HA state, config, users, revoked certificates, licence, passwords, superseded | read the cluster | – |
//! | fingerprint approvals, config, local settings, licence, bundles, mastered import, passwords (change and verify: a verify answers whether a guess is right) | – | cluster admin |
//! | users and grants, certificates (issue, revoke) | – | user admin |
//! | managed tables (`/v1/tables/NS/...`) | read namespace `NS` | write in namespace `NS` |
//! | credentials (`/v1/credentials/NS/...`): history, conflicts of `NS` / set, rotate, reveal | read namespace `NS` | write in namespace `NS` |
//! | credential conflicts of every namespace (no `namespace=`) | read the cluster | – |
//! | HA operations (demote, failback, failover, make-standalone) | – | HA ops |
//! | backup | read: backup | – |
//! | fault hooks | – | only the local socket (root) |
//!
//! Shared data is not namespaced yet: it is namespace [`DATA_NAMESPACE`] for the authorizer.

use meshward_api::Request;

use crate::grants::{Action, Namespace};

/// The namespace of the shared data until data is namespaced.
pub const DATA_NAMESPACE: &str = "default";

/// Which side of a resource a request touches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Reads it.
    Read,
    /// Changes it.
    Write,
}

/// The resource a request is about, as the table in the module docs names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    /// Shared and local data: events, fingerprints, exceptions, audit, watch.
    Data,
    /// The cluster's state and mastered settings.
    Cluster,
    /// Users, grants and certificates.
    Users,
    /// Leadership.
    Ha,
    /// Backups.
    Backup,
    /// Fault hooks (local socket only).
    Fault,
    /// Managed tables: the action names the request's namespace ([`required`]).
    Managed,
}

/// The (resource, access) of a request.
pub fn resource(request: &Request) -> (Resource, Access) {
    use Access::{Read, Write};
    use Resource::{Cluster, Data, Fault, Ha, Users};
    match request {
        Request::ListEvents(_)
        | Request::ListFingerprints
        | Request::CheckFingerprint(_)
        | Request::ListExceptions
        | Request::ListAudit(_)
        | Request::VerifyAudit
        | Request::VerifyAuditAgainstMesh => (Data, Read),
        Request::AppendEvents(_)
        | Request::ObserveFingerprint(_)
        | Request::SetException { .. }
        | Request::DeleteException { .. }
        | Request::RecordAudit(_) => (Data, Write),
        Request::Status
        | Request::Health(_)
        | Request::Ha
        | Request::Superseded
        | Request::HaLog(_)
        | Request::ListConfig
        | Request::GetConfig { .. }
        | Request::ListLocal
        | Request::GetLocal { .. }
        | Request::ListUsers
        | Request::ListRevoked
        | Request::GetLicence
        | Request::ListPasswords => (Cluster, Read),
        Request::Approve(_)
        | Request::SetConfig { .. }
        | Request::UnsetConfig { .. }
        | Request::SetLocal { .. }
        | Request::InstallLicence(_)
        | Request::CreateBundle(_)
        | Request::ImportMastered(_)
        | Request::ChangePassword { .. }
        | Request::VerifyPassword { .. } => (Cluster, Write),
        Request::CreateUser { .. }
        | Request::DeleteUser { .. }
        | Request::Grant { .. }
        | Request::RevokeGrant { .. }
        | Request::IssueCertificate { .. }
        | Request::RevokeCertificate(_) => (Users, Write),
        Request::Demote(_)
        | Request::Failback
        | Request::Failover(_)
        | Request::Adopt(_)
        | Request::MakeStandalone(_) => (Ha, Write),
        Request::ListTables { .. } | Request::ListRows { .. } | Request::GetRow { .. } => {
            (Resource::Managed, Read)
        }
        Request::PutRow { .. } | Request::DeleteRow { .. } => (Resource::Managed, Write),
        Request::CredentialHistory { .. } | Request::CredentialConflicts(_) => {
            (Resource::Managed, Read)
        }
        Request::SetCredential { .. }
        | Request::RotateCredential { .. }
        | Request::RevealCredential { .. } => (Resource::Managed, Write),
        Request::Fault(_) => (Fault, Write),
        Request::Unseal(_) => (Resource::Backup, Write),
    }
}

/// The action the authorizer decides for a (resource, access); `None`: not over HTTPS at all.
pub fn action(resource: Resource, access: Access) -> Option<Action> {
    let data = || Namespace::default_data();
    Some(match (resource, access) {
        (Resource::Data, Access::Read) => Action::Read(data()),
        (Resource::Data, Access::Write) => Action::Write(data()),
        (Resource::Cluster, Access::Read) => Action::ReadCluster,
        (Resource::Cluster, Access::Write) => Action::ClusterAdmin,
        (Resource::Users, Access::Read) => Action::ReadCluster,
        (Resource::Users, Access::Write) => Action::UserAdmin,
        (Resource::Ha, Access::Read) => Action::ReadCluster,
        (Resource::Ha, Access::Write) => Action::HaOps,
        (Resource::Backup, _) => Action::Backup,
        // Without a namespace at hand: reading every namespace, or root.
        (Resource::Managed, Access::Read) => Action::ReadCluster,
        (Resource::Managed, Access::Write) => Action::ClusterAdmin,
        (Resource::Fault, _) => return None,
    })
}

/// What `request` needs of a certificate's grants; `None`: it is not served over HTTPS.
pub fn required(request: &Request) -> Option<Action> {
    let (resource, access) = resource(request);
    if resource == Resource::Managed
        && let Some(ns) = managed_namespace(request)
    {
        return Some(match access {
            Access::Read => Action::Read(ns),
            Access::Write => Action::Write(ns),
        });
    }
    action(resource, access)
}

/// The namespace a managed-table request is about, if it is one with a valid namespace (an
/// invalid one is refused by the operation with a 400; until then it needs what reading or
/// writing every namespace needs).
fn managed_namespace(request: &Request) -> Option<Namespace> {
    match request {
        Request::ListTables { namespace }
        | Request::ListRows { namespace, .. }
        | Request::GetRow { namespace, .. }
        | Request::PutRow { namespace, .. }
        | Request::DeleteRow { namespace, .. }
        | Request::SetCredential { namespace, .. }
        | Request::RotateCredential { namespace, .. }
        | Request::RevealCredential { namespace, .. }
        | Request::CredentialHistory { namespace, .. } => namespace.parse().ok(),
        Request::CredentialConflicts(q) => q.namespace.as_ref()?.parse().ok(),
        _ => None,
    }
}

impl Namespace {
    /// The namespace of the shared data ([`DATA_NAMESPACE`]).
    pub fn default_data() -> Namespace {
        DATA_NAMESPACE
            .parse()
            .unwrap_or_else(|_| unreachable!("{DATA_NAMESPACE} is a valid namespace"))
    }
}
