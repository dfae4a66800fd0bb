//! Operations: every [`Request`] of the API executed on a node by one function, [`execute`],
//! which returns its [`Reply`] or a [`Problem`]. The daemon runs it on its live store and core
//! for both doors of the API (the local socket and HTTPS); the CLI runs it on the store
//! directly when no daemon runs; tests call it too. Nothing is parsed twice: the request is
//! already typed, and every field is checked before anything is written.
//!
//! Where it runs is a [`Backend`]: the store, and how a commit or a mastered write is made
//! (the daemon announces them on the mesh). Operations that wait for other nodes (failover,
//! planned hand-over, leaving, a password change on a follower) are not executed here: the
//! daemon feeds them to its core ([`deferred`] says which), and offline they are refused.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meshward_api::{Problem, ProblemKind, Reply, Request};
use meshward_crdt::mastered::{Chain, RecordKind};
use meshward_crdt::{Op, ReplicaConfig, RowChange, WriterId};

use crate::store::{Store, StoreError};

pub mod access;
pub mod audit_mesh;
mod cluster;
pub mod credentials;
mod local;
pub mod managed;
mod offline;
pub mod setup;
mod shared;
mod status;
pub mod superseded;
pub mod watch;

pub use offline::LocalBackend;
pub use status::{ha_status, status};

/// Where operations run: on the store directly, or inside a running daemon.
pub trait Backend {
    /// The store (opened on first use by the local backend).
    fn store(&mut self) -> anyhow::Result<&Store>;
    /// Commits local writes durably (and in the daemon, announces them to the mesh).
    fn commit(&mut self, ops: Vec<Op>) -> anyhow::Result<Vec<RowChange>>;
    /// Live mesh state, when a daemon runs.
    fn mesh(&mut self) -> Option<serde_json::Value> {
        None
    }
    /// The verified roster changed (the daemon updates admission).
    fn roster_changed(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
    /// Writes a mastered record as the leader (and in the daemon, announces it); returns its
    /// version. On a follower the error names the leader.
    fn master(&mut self, kind: RecordKind, payload: Vec<u8>) -> anyhow::Result<u64> {
        let record = crate::roster::write(self.store()?, kind, payload)?;
        self.roster_changed()?;
        Ok(record.record.version)
    }
    /// The verified mastered chain (`None` before any import); the daemon keeps it cached
    /// per stored chain ([`crate::roster::ChainCache`]).
    fn chain(&mut self) -> anyhow::Result<Option<Chain>> {
        Ok(crate::roster::chain(self.store()?)?)
    }
    /// Who sends the request, for the audit and the rows it writes: `local operator`, or
    /// `user NAME` for a client certificate.
    fn caller(&mut self) -> String {
        "local operator".into()
    }
    /// The node's data directory.
    fn data_dir(&mut self) -> anyhow::Result<PathBuf>;
    /// The address the running setup endpoint listens on, when a daemon runs one.
    fn setup_addr(&mut self) -> Option<SocketAddr> {
        None
    }
    /// The replica's counts and digest.
    fn replica_state(&mut self) -> anyhow::Result<(meshward_crdt::Stats, meshward_crdt::Digest)> {
        let store = self.store()?;
        let replica = store.load_replica(&store.identity()?, ReplicaConfig::default())?;
        Ok((replica.stats(), replica.digest()))
    }
    /// Sends crafted bad data to every peer (fault hook); returns how many messages.
    fn misbehave(&mut self, _kind: &str) -> anyhow::Result<u64> {
        anyhow::bail!("fault hooks need a running daemon built with the `fault-injection` feature")
    }
    /// Cuts links to `peers` (empty: heal), when a daemon with fault hooks runs.
    fn set_blocked(&mut self, _peers: BTreeSet<WriterId>) -> anyhow::Result<()> {
        anyhow::bail!("fault hooks need a running daemon built with the `fault-injection` feature")
    }
    /// Delays what `peers` send by `min..=max`, when a daemon with fault hooks runs.
    fn set_delay(
        &mut self,
        _peers: BTreeSet<WriterId>,
        _min: Duration,
        _max: Duration,
    ) -> anyhow::Result<()> {
        anyhow::bail!("fault hooks need a running daemon built with the `fault-injection` feature")
    }
}

/// Executes `request` on `backend`: its reply, or why not (the state unchanged).
pub fn execute(backend: &mut dyn Backend, request: Request) -> Result<Reply, Problem> {
    if deferred(&request) {
        let detail = if matches!(request, Request::Demote(_) | Request::Failback) {
            "a hand-over needs endorsements from a majority of the members, the next leader \
             included: start the node with `meshward run` first"
        } else {
            "this operation talks to other nodes: start the node with `meshward run` first"
        };
        return Err(Problem::new(ProblemKind::Unavailable, detail));
    }
    match request {
        Request::AppendEvents(body) => shared::append_events(backend, body),
        Request::ListEvents(query) => shared::list_events(backend, query),
        Request::ObserveFingerprint(body) => shared::observe(backend, body),
        Request::ListFingerprints => shared::list_fingerprints(backend),
        Request::CheckFingerprint(key) => shared::check_fingerprint(backend, key),
        Request::Approve(body) => shared::approve(backend, body),
        Request::SetException { user, field, value } => {
            shared::set_exception(backend, user, field, value)
        }
        Request::DeleteException { user, field } => shared::delete_exception(backend, user, field),
        Request::ListExceptions => shared::list_exceptions(backend),
        Request::RecordAudit(body) => local::record_audit(backend, body),
        Request::ListAudit(query) => local::list_audit(backend, query),
        Request::VerifyAudit => local::verify_audit(backend),
        Request::ListLocal => local::list_settings(backend),
        Request::GetLocal { name } => local::get_setting(backend, name),
        Request::SetLocal { name, value } => local::set_setting(backend, name, value),
        Request::ListConfig => cluster::list_config(backend),
        Request::GetConfig { key } => cluster::get_config(backend, key),
        Request::SetConfig { key, value } => cluster::set_config(backend, key, Some(value)),
        Request::UnsetConfig { key } => cluster::set_config(backend, key, None),
        Request::ListTables { namespace } => managed::list_tables(backend, &namespace),
        Request::ListRows {
            namespace,
            table,
            query,
        } => managed::list_rows(backend, &namespace, &table, &query),
        Request::GetRow {
            namespace,
            table,
            key,
        } => managed::get_row(backend, &namespace, &table, &key),
        Request::PutRow {
            namespace,
            table,
            key,
            document,
        } => managed::write_row(backend, namespace, table, key, Some(document)),
        Request::DeleteRow {
            namespace,
            table,
            key,
        } => managed::write_row(backend, namespace, table, key, None),
        Request::SetCredential {
            namespace,
            device,
            account,
            body,
        } => credentials::set(
            backend,
            credentials::address(&namespace, &device, &account)?,
            body,
        ),
        Request::RotateCredential {
            namespace,
            device,
            account,
            body,
        } => credentials::rotate(
            backend,
            credentials::address(&namespace, &device, &account)?,
            body,
        ),
        Request::RevealCredential {
            namespace,
            device,
            account,
            body,
        } => credentials::reveal(
            backend,
            credentials::address(&namespace, &device, &account)?,
            body,
        ),
        Request::CredentialHistory {
            namespace,
            device,
            account,
        } => credentials::history(
            backend,
            credentials::address(&namespace, &device, &account)?,
        ),
        Request::CredentialConflicts(q) => credentials::conflicts(backend, q),
        Request::ListUsers => cluster::list_users(backend),
        Request::CreateUser { name } => cluster::change_user(backend, "name", name, None, true),
        Request::DeleteUser { name } => cluster::change_user(backend, "name", name, None, false),
        Request::Grant { name, grant } => {
            cluster::change_user(backend, "grant", name, Some(grant), true)
        }
        Request::RevokeGrant { name, grant } => {
            cluster::change_user(backend, "grant", name, Some(grant), false)
        }
        Request::IssueCertificate { name, body } => cluster::issue_certificate(backend, name, body),
        Request::RevokeCertificate(body) => cluster::revoke_certificate(backend, body),
        Request::ListRevoked => cluster::list_revoked(backend),
        Request::GetLicence => cluster::get_licence(backend),
        Request::InstallLicence(body) => cluster::install_licence(backend, body),
        Request::CreateBundle(body) => cluster::create_bundle(backend, body),
        Request::ListPasswords => cluster::list_passwords(backend),
        Request::VerifyPassword { user, body } => cluster::verify_password(backend, user, &body),
        Request::ImportMastered(body) => cluster::import_mastered(backend, body),
        Request::Ha => status::ha(backend).map(Reply::Ha),
        Request::Superseded => superseded::list(backend),
        Request::Adopt(body) => superseded::adopt(backend, body),
        Request::HaLog(query) => status::ha_log(backend, &query),
        Request::Status => status::status(backend).map(|s| Reply::Status(Box::new(s))),
        Request::Health(query) => status::health(backend, query),
        Request::Fault(fault) => status::fault(backend, fault),
        Request::Unseal(body) => status::unseal(backend, body),
        Request::ChangePassword { .. }
        | Request::VerifyAuditAgainstMesh
        | Request::Demote(_)
        | Request::Failback
        | Request::Failover(_)
        | Request::MakeStandalone(_) => unreachable!("deferred operations return above"),
    }
}

/// Whether `request` waits for other nodes: a running daemon's core answers it.
pub fn deferred(request: &Request) -> bool {
    matches!(
        request,
        Request::ChangePassword { .. }
            | Request::VerifyAuditAgainstMesh
            | Request::Demote(_)
            | Request::Failback
            | Request::Failover(_)
            | Request::MakeStandalone(_)
    )
}

/// Whether only the leader may execute `request` (a follower's daemon forwards it).
pub fn leader_only(request: &Request) -> bool {
    matches!(
        request,
        Request::Approve(_)
            | Request::SetConfig { .. }
            | Request::UnsetConfig { .. }
            | Request::PutRow { .. }
            | Request::DeleteRow { .. }
            | Request::CreateUser { .. }
            | Request::DeleteUser { .. }
            | Request::Grant { .. }
            | Request::RevokeGrant { .. }
            | Request::IssueCertificate { .. }
            | Request::RevokeCertificate(_)
            | Request::InstallLicence(_)
            | Request::CreateBundle(_)
            | Request::Demote(_)
            | Request::Failback
            | Request::Adopt(_)
    )
}

/// The wall clock, read only at the edges (here, the CLI and the daemon).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A problem from an internal failure: a full disk is 503 (the write was refused and nothing
/// changed), anything else 500 with the error's text.
pub fn failure(e: anyhow::Error) -> Problem {
    if let Some(StoreError::DiskFull(_)) = e.downcast_ref::<StoreError>() {
        return Problem::new(ProblemKind::Unavailable, format!("{e:#}"));
    }
    if let Some(problem) = e.downcast_ref::<Problem>() {
        return problem.clone();
    }
    Problem::new(ProblemKind::Internal, format!("{e:#}"))
}

/// The node's chain, or 503 outside a cluster.
fn chain(backend: &mut dyn Backend) -> Result<Chain, Problem> {
    backend.chain().map_err(failure)?.ok_or_else(|| {
        Problem::new(
            ProblemKind::Unavailable,
            "this node is not part of a cluster; run `meshward init` or `meshward join` first",
        )
    })
}

/// The chain, if this node leads it; else 503 naming the leader.
fn require_leader(backend: &mut dyn Backend) -> Result<Chain, Problem> {
    let chain = chain(backend)?;
    let me = backend
        .store()
        .and_then(|s| Ok(s.identity()?.writer()))
        .map_err(failure)?;
    if chain.leader() != me.0 {
        let leader = chain.leader_address();
        return Err(Problem::new(
            ProblemKind::Unavailable,
            format!(
                "only the leader writes mastered data; the leader is {leader} (epoch {}): send \
                 the request to it, or to a running node, which forwards it",
                chain.epoch()
            ),
        )
        .with_leader(leader));
    }
    Ok(chain)
}

/// Writes a mastered record as the leader; its version.
fn master(backend: &mut dyn Backend, kind: RecordKind, payload: Vec<u8>) -> Result<u64, Problem> {
    require_leader(backend)?;
    backend.master(kind, payload).map_err(failure)
}
