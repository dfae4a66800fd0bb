//! The node itself: status, leadership as this node sees it, health for load balancers,
//! superseded records, fault hooks.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use meshward_api::node::{
    HaStatus, Health, HealthQuery, MasteredStatus, Member, Status, TableStatus,
};
use meshward_api::{FaultDone, FaultRequest, Problem, Reply};
use meshward_crdt::mastered::Chain;
use meshward_crdt::{TableId, WriterId};

use super::{Backend, failure};
use crate::audit::AuditLog;

/// Default `max_lag_ms` of `GET /v1/health`.
pub const DEFAULT_MAX_LAG_MS: u64 = 5_000;

/// Leadership as this node sees it: its state and every member's (HA guide states), with
/// liveness from the running node's `mesh` status when there is one.
pub fn ha_status(
    chain: Option<&Chain>,
    primary: Option<[u8; 32]>,
    me: WriterId,
    mesh: Option<&serde_json::Value>,
) -> HaStatus {
    let Some(chain) = chain else {
        return HaStatus {
            state: "inactive".into(),
            role: "standalone".into(),
            epoch: None,
            leader: None,
            primary: None,
            members: Vec::new(),
        };
    };
    let name = |key: &[u8; 32]| {
        chain
            .roster()
            .members
            .iter()
            .find(|m| &m.key == key)
            .map_or_else(|| hex::encode(key), |m| m.address.clone())
    };
    let role = |key: &[u8; 32]| {
        if !chain.roster().contains(key) {
            "inactive"
        } else if *key == chain.leader() {
            "active"
        } else if Some(*key) == primary {
            "demoted"
        } else {
            "standby"
        }
    };
    let members = chain
        .roster()
        .members
        .iter()
        .map(|m| {
            let id = hex::encode(m.key);
            let peer = mesh.and_then(|mesh| mesh["peers"].get(&id));
            let connected = peer.and_then(|p| p["connected"].as_bool());
            let state = match (m.key == me.0, connected) {
                (false, Some(false)) => "failed",
                _ => role(&m.key),
            };
            Member {
                id,
                address: m.address.clone(),
                state: state.into(),
                leader: m.key == chain.leader(),
                primary: Some(m.key) == primary,
                connected,
                last_seen_ms: peer.and_then(|p| p["last_seen_ms"].as_u64()),
                behind: peer.and_then(|p| p["behind"].as_u64()),
            }
        })
        .collect();
    let my_role = if chain.leader() == me.0 {
        "leader"
    } else if chain.roster().contains(&me.0) {
        "follower"
    } else {
        "standalone"
    };
    HaStatus {
        state: role(&me.0).into(),
        role: my_role.into(),
        epoch: Some(chain.epoch()),
        leader: Some(name(&chain.leader())),
        primary: primary.map(|p| name(&p)),
        members,
    }
}

pub(super) fn ha(backend: &mut dyn Backend) -> Result<HaStatus, Problem> {
    let mesh = backend.mesh();
    let store = backend.store().map_err(failure)?;
    let chain = crate::roster::chain(store).map_err(|e| failure(e.into()))?;
    let primary = store
        .anchor()
        .map_err(|e| failure(e.into()))?
        .map(|a| a.genesis_leader);
    let me = store.identity().map_err(|e| failure(e.into()))?.writer();
    Ok(ha_status(chain.as_ref(), primary, me, mesh.as_ref()))
}

/// The node's status: identity, what its store holds, leadership and the running mesh.
pub fn status(backend: &mut dyn Backend) -> Result<Status, Problem> {
    let (stats, digest) = backend.replica_state().map_err(failure)?;
    let ha = ha(backend)?;
    let mesh = backend.mesh();
    let data = backend.data_dir().map_err(failure)?;
    let store = backend.store().map_err(failure)?;
    let identity = store.identity().map_err(|e| failure(e.into()))?;
    let audit = AuditLog::head(store.reader()).map_err(|e| failure(e.into()))?;
    let chain = crate::roster::chain(store).map_err(|e| failure(e.into()))?;
    let rows: BTreeMap<String, u64> = TableId::ALL
        .iter()
        .map(|t| {
            (
                t.as_str().to_string(),
                stats.rows.get(t).copied().unwrap_or(0),
            )
        })
        .collect();
    let tables = TableId::ALL
        .iter()
        .map(|t| {
            let writers = digest
                .segments
                .iter()
                .filter(|s| s.key.table == *t)
                .map(|s| s.key.writer)
                .collect::<BTreeSet<_>>()
                .len();
            (
                t.as_str().to_string(),
                TableStatus {
                    rows: stats.rows.get(t).copied().unwrap_or(0),
                    changes: digest.changes(*t),
                    writers: writers as u64,
                },
            )
        })
        .collect();
    Ok(Status {
        writer: identity.writer().to_hex(),
        cluster: identity.cluster.to_hex(),
        rows,
        segments: stats.segments as u64,
        live_segments: stats.live as u64,
        sealed_bytes: stats.sealed_bytes as u64,
        digest: hex::encode(digest.fingerprint()),
        changes: digest.segments.iter().map(|s| s.seq).sum(),
        tables,
        audit_records: audit.map_or(0, |h| h.seq),
        credential_conflicts: super::credentials::in_conflict(store)?.len() as u64,
        sealed: crate::authority::is_sealed(&data, store).map_err(failure)?,
        role: ha.role.clone(),
        ha,
        mastered: chain.as_ref().map(|c| MasteredStatus {
            epoch: c.epoch(),
            version: c.last_version(),
            leader: hex::encode(c.leader()),
            leader_address: c.leader_address(),
            members: c.roster().members.len() as u64,
        }),
        mesh,
    })
}

/// Whether the node should take traffic behind a load balancer, and why not.
pub(super) fn health(backend: &mut dyn Backend, q: HealthQuery) -> Result<Reply, Problem> {
    let max_lag = q.max_lag_ms.unwrap_or(DEFAULT_MAX_LAG_MS);
    let status = status(backend)?;
    let mut reasons = Vec::new();
    if status.mastered.is_none() {
        reasons.push("not in a cluster".to_string());
    }
    match &status.mesh {
        None => reasons.push("no daemon runs on this node".to_string()),
        Some(mesh) => {
            if mesh["store"]["replication_held"] == true {
                reasons.push("store held: the disk is full".to_string());
            }
            let peers = mesh["peers"].as_object();
            let connected =
                peers.map_or(0, |p| p.values().filter(|p| p["connected"] == true).count());
            let members = status.mastered.as_ref().map_or(0, |m| m.members);
            if members > 1 && connected == 0 {
                reasons.push("no peer connected".to_string());
            }
            if let Some(p99) = mesh["lag"]["p99_ms"].as_f64()
                && p99 > max_lag as f64
            {
                reasons.push(format!("mesh lag p99 {p99:.0} ms over {max_lag} ms"));
            }
            let behind = peers.map_or(0, |p| {
                p.values()
                    .filter(|p| p["behind"].as_u64().is_some_and(|b| b > 0))
                    .count()
            });
            if behind > 0 {
                reasons.push(format!("{behind} peers behind this node"));
            }
        }
    }
    Ok(Reply::Health(Health {
        healthy: reasons.is_empty(),
        reasons,
    }))
}

pub(super) fn fault(backend: &mut dyn Backend, fault: FaultRequest) -> Result<Reply, Problem> {
    let peers = |peers: &[String]| -> Result<BTreeSet<WriterId>, Problem> {
        peers
            .iter()
            .map(|p| p.parse::<WriterId>())
            .collect::<Result<_, _>>()
            .map_err(|e| Problem::bad_input("peers", e))
    };
    let count = match fault {
        FaultRequest::Block { peers: p } => {
            let p = peers(&p)?;
            let n = p.len() as u64;
            backend.set_blocked(p).map_err(failure)?;
            n
        }
        FaultRequest::Heal => {
            backend.set_blocked(BTreeSet::new()).map_err(failure)?;
            0
        }
        FaultRequest::Delay {
            peers: p,
            min_ms,
            max_ms,
        } => {
            if min_ms > max_ms || max_ms > 1000 {
                return Err(Problem::bad_input(
                    "max_ms",
                    "the range must not be empty and at most 1000 ms",
                ));
            }
            let p = peers(&p)?;
            let n = p.len() as u64;
            backend
                .set_delay(
                    p,
                    Duration::from_millis(min_ms),
                    Duration::from_millis(max_ms),
                )
                .map_err(failure)?;
            n
        }
        FaultRequest::Misbehave { kind } => {
            let kinds = [
                "garbage", "oversize", "foreign", "phantom", "stolen", "advert",
            ];
            if !kinds.contains(&kind.as_str()) {
                return Err(Problem::bad_input(
                    "kind",
                    "give garbage, oversize, foreign, phantom, stolen or advert",
                ));
            }
            backend.misbehave(&kind).map_err(failure)?
        }
    };
    Ok(Reply::Fault(FaultDone { count }))
}

/// Installs the MEK of a sealed node; refused by a running node (it is not sealed).
pub(super) fn unseal(
    backend: &mut dyn Backend,
    body: meshward_api::node::Unseal,
) -> Result<Reply, Problem> {
    if backend.mesh().is_some() {
        return Err(Problem::new(
            meshward_api::ProblemKind::Conflict,
            "the node is not sealed: its daemon runs",
        ));
    }
    let mek = crate::mek::Mek::parse(&body.mek, "the MEK given")
        .map_err(|e| Problem::bad_input("mek", e.to_string()))?;
    let data = backend.data_dir().map_err(failure)?;
    let store = backend.store().map_err(failure)?;
    crate::authority::unseal(&data, store, &mek)
        .map_err(|e| Problem::new(meshward_api::ProblemKind::Conflict, format!("{e:#}")))?;
    Ok(Reply::Empty)
}

/// This node's HA command log, newest first.
pub(super) fn ha_log(
    backend: &mut dyn Backend,
    query: &meshward_api::node::HaLogQuery,
) -> Result<Reply, Problem> {
    use meshward_api::node::MAX_HA_LOG_PAGE;
    let limit = query.limit.unwrap_or(50);
    if limit == 0 || limit > MAX_HA_LOG_PAGE {
        return Err(Problem::bad_input(
            "limit",
            format!("give 1 to {MAX_HA_LOG_PAGE} entries"),
        ));
    }
    let data = backend.data_dir().map_err(failure)?;
    crate::ha::read_log(&data, limit)
        .map(Reply::HaLog)
        .map_err(failure)
}
