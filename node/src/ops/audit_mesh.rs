//! The local audit's head in the shared table `audit-heads`: publishing it, and comparing the
//! local chain with what peers hold (`audit verify --against-mesh`). The decisions are
//! [`crate::audit::mesh`]'s; the daemon's timer and its core's answers drive these.

use meshward_api::local::{AuditMeshVerified, AuditPeer};
use meshward_api::{Problem, Reply};
use meshward_crdt::{AuditHead, Op, Row, TableId, WriterId};

use super::{Backend, failure};
use crate::audit::AuditLog;
use crate::audit::mesh::{Publish, Verdict, hash_at, judge, to_publish};
use crate::core::PeerHead;

/// Publishes this node's audit head if it moved since the row this node holds of its own,
/// and only if the chain still holds that row's head. Returns what was decided.
pub fn publish_audit_head(backend: &mut dyn Backend, now_ms: i64) -> anyhow::Result<Publish> {
    let store = backend.store()?;
    let me = store.identity()?.writer();
    let local = AuditLog::head(store.reader())?;
    let published = own_row(&store.map_rows(TableId::AuditHeads)?, me);
    let local_at = match &published {
        Some(p) => hash_at(store.reader(), p.count)?,
        None => None,
    };
    let decision = to_publish(local, published.as_ref(), local_at, now_ms);
    if let Publish::Put(head) = &decision {
        backend.commit(vec![Op::PutAuditHead(head.clone())])?;
    }
    Ok(decision)
}

fn own_row(rows: &[(WriterId, Row)], me: WriterId) -> Option<AuditHead> {
    rows.iter().find_map(|(w, row)| match row {
        Row::AuditHead(h) if *w == me => Some(h.clone()),
        _ => None,
    })
}

/// The reply to `audit verify --against-mesh`, from each other member's answer.
pub fn verify_against_mesh(
    backend: &mut dyn Backend,
    answers: Vec<(WriterId, PeerHead)>,
) -> Result<Reply, Problem> {
    let chain = backend.chain().map_err(failure)?;
    let store = backend.store().map_err(failure)?;
    let report = AuditLog::verify(store.reader()).map_err(|e| failure(e.into()))?;
    let head = AuditLog::head(store.reader()).map_err(|e| failure(e.into()))?;
    let address = |node: &WriterId| {
        chain.as_ref().and_then(|c| {
            c.roster()
                .members
                .iter()
                .find(|m| m.key == node.0)
                .map(|m| m.address.clone())
        })
    };
    let mut peers = Vec::with_capacity(answers.len());
    for (node, answer) in answers {
        let mut failed = None;
        let verdict = judge(&answer, |count| {
            hash_at(store.reader(), count).unwrap_or_else(|e| {
                failed = Some(e);
                None
            })
        });
        if let Some(e) = failed {
            return Err(failure(e.into()));
        }
        let held = match &answer {
            PeerHead::Holds(h) => Some(h),
            _ => None,
        };
        peers.push(AuditPeer {
            node: node.to_hex(),
            address: address(&node),
            state: verdict.as_str().to_string(),
            count: held.map(|h| h.count),
            peer_hash: held.map(|h| hex::encode(h.hash)),
            local_hash: match &verdict {
                Verdict::Agrees { .. } => held.map(|h| hex::encode(h.hash)),
                Verdict::Disagrees { local_hash, .. } => local_hash.map(hex::encode),
                _ => None,
            },
            at_ms: held.map(|h| h.at_ms),
            detail: match verdict {
                Verdict::Unreachable { why } => Some(why),
                Verdict::CannotAnswer => Some(
                    "it runs an older version that cannot answer; upgrade it to compare".into(),
                ),
                _ => None,
            },
        });
    }
    Ok(Reply::AuditMeshVerified(AuditMeshVerified {
        intact: report.is_intact(),
        count: head.map_or(0, |h| h.seq),
        hash: head.map(|h| hex::encode(h.hash)).unwrap_or_default(),
        agreed: peers.iter().all(|p| p.state != "disagrees"),
        peers,
    }))
}
