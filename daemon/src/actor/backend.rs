//! Operations run inside the daemon ([`meshward_node::ops::Backend`]): on the live store and core, so
//! commits and mastered writes are announced to the mesh at once.

#[cfg(feature = "fault-injection")]
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
#[cfg(feature = "fault-injection")]
use std::time::Duration;

use anyhow::bail;
#[cfg(feature = "fault-injection")]
use meshward_crdt::WriterId;
use meshward_crdt::mastered::RecordKind;
use meshward_crdt::{Op, RowChange};
use meshward_transport::setup::SetupServer;
use serde_json::json;

use super::{Node, now_us};
use meshward_node::core::Input;
use meshward_node::drive::Driver as _;
use meshward_node::ops::Backend;
#[cfg(feature = "fault-injection")]
use meshward_node::ops::now_ms;
use meshward_node::store::Store;
use meshward_node::tail::Tail;

/// Commands run inside the daemon.
pub(super) struct DaemonBackend<'a> {
    pub(super) node: &'a mut Node,
    /// Who sends the request ([`crate::api::Caller::who`]).
    pub(super) caller: String,
}

impl<'a> DaemonBackend<'a> {
    /// Operations the node runs for itself (its local operator).
    pub(super) fn local(node: &'a mut Node) -> Self {
        DaemonBackend {
            node,
            caller: "local operator".into(),
        }
    }
}

impl Backend for DaemonBackend<'_> {
    fn caller(&mut self) -> String {
        self.caller.clone()
    }

    fn store(&mut self) -> anyhow::Result<&Store> {
        Ok(&self.node.store)
    }

    fn data_dir(&mut self) -> anyhow::Result<PathBuf> {
        Ok(self.node.data.clone())
    }

    fn commit(&mut self, ops: Vec<Op>) -> anyhow::Result<Vec<RowChange>> {
        if self.node.tail == Tail::Recovering {
            let waiting: Vec<String> = self
                .node
                .core
                .tail_waiting()
                .iter()
                .map(|w| w.to_hex())
                .collect();
            bail!(
                "{} (waiting for: {})",
                meshward_node::tail::RECOVERING,
                waiting.join(", ")
            );
        }
        if self.node.tail == Tail::Closed {
            // Before the first pipelined announce ([`meshward_node::tail`]).
            meshward_node::tail::set_open(&self.node.data, true)?;
            self.node.tail = Tail::Open;
        }
        self.node.next_token += 1;
        let token = self.node.next_token;
        self.node.feed(Input::Commit {
            ops,
            token,
            at_us: now_us(),
        })?;
        match self.node.committed.take() {
            Some((t, result)) if t == token => Ok(result?),
            _ => bail!("the core did not answer the commit"),
        }
    }

    fn mesh(&mut self) -> Option<serde_json::Value> {
        let node = &self.node;
        let peers: serde_json::Map<String, serde_json::Value> = node
            .core
            .peers()
            .map(|(id, p)| (id.to_hex(), json!(p)))
            .collect();
        let m = node.handle.metrics();
        Some(json!({
            "listen": node.listen.map(|a| a.to_string()),
            "peers": peers,
            "core": node.core.counters(),
            "transport": m,
            "lag": node.lag.summary(),
            "pending_evicted": node.gossip.evicted + node.channels.evicted + node.requests.evicted,
            "setup": node.setup.as_ref().map(|s| s.local_addr().to_string()),
            "admin": node.admin.as_ref().map(|a| a.local_addr().to_string()),
            "health": node.health.as_ref().map(|h| h.local_addr().to_string()),
            "setup_metrics": node.setup.as_ref().map(SetupServer::metrics),
            "admin_metrics": node.admin.as_ref().map(crate::admin::AdminServer::metrics),
            "join": node.admission.counters(),
            "tail": match node.tail {
                Tail::Closed => json!({ "state": "closed" }),
                Tail::Open => json!({ "state": "open", "pipelined": node.pipeline() }),
                Tail::Recovering => json!({
                    "state": "recovering",
                    "waiting": node.core.tail_waiting().iter().map(|w| w.to_hex()).collect::<Vec<_>>(),
                }),
            },
            "store": {
                "writes_refused": node.disk.writes_refused,
                "disk_full": node.disk.full,
                "replication_held": node.core.held(),
            },
        }))
    }

    fn chain(&mut self) -> anyhow::Result<Option<meshward_crdt::mastered::Chain>> {
        Ok(self.node.chain_cache.get(&self.node.store)?)
    }

    fn setup_addr(&mut self) -> Option<SocketAddr> {
        self.node.setup.as_ref().map(SetupServer::local_addr)
    }

    fn replica_state(&mut self) -> anyhow::Result<(meshward_crdt::Stats, meshward_crdt::Digest)> {
        let replica = self.node.core.replica();
        Ok((replica.stats(), replica.digest()))
    }

    fn roster_changed(&mut self) -> anyhow::Result<()> {
        self.node.load_mastered()?;
        self.node.feed_batch(Vec::new())
    }

    fn master(&mut self, kind: RecordKind, payload: Vec<u8>) -> anyhow::Result<u64> {
        self.node.next_token += 1;
        let token = self.node.next_token;
        self.node.feed(Input::Master {
            token,
            kind,
            payload,
        })?;
        match self.node.done.take() {
            Some((t, result)) if t == token => result.map_err(anyhow::Error::msg),
            _ => bail!("the core did not answer the write"),
        }
    }

    #[cfg(feature = "fault-injection")]
    fn misbehave(&mut self, kind: &str) -> anyhow::Result<u64> {
        use anyhow::Context as _;
        use meshward_crdt::{Digest, Head, SegmentKey, SyncItem, SyncMessage, TableId};
        use meshward_transport::Misbehaviour;

        use meshward_node::core::Gossip;
        let node = &mut *self.node;
        let peers: Vec<WriterId> = node
            .core
            .peers()
            .filter(|(_, p)| p.connected)
            .map(|(id, _)| *id)
            .collect();
        let mut sent = 0;
        match kind {
            "garbage" => {
                node.handle.publish(vec![0xab; 1000])?;
                sent += 1;
                for &peer in &peers {
                    node.handle.request(peer, vec![0xcd; 500])?;
                    sent += 1;
                }
                // Answers to the next sync requests (not counted: not sent yet).
                node.handle
                    .misbehave(Misbehaviour::GarbageResponses(peers.len()))?;
            }
            "oversize" => {
                node.handle.misbehave(Misbehaviour::OversizeGossip)?;
                sent += 1;
                for &peer in &peers {
                    node.handle.misbehave(Misbehaviour::OversizeRequest(peer))?;
                    sent += 1;
                }
                node.handle
                    .misbehave(Misbehaviour::OversizeResponses(peers.len()))?;
            }
            "phantom" => {
                // Rows under a made-up identity: a fresh key, not in the roster, signs its own
                // segment. Signature and authorship are valid; the writer is nobody.
                let identity = node.store.identity()?;
                let phantom = ed25519_dalek::SigningKey::from_bytes(&rand::random());
                let mut replica = meshward_crdt::Replica::new(
                    identity.cluster,
                    phantom.clone(),
                    meshward_crdt::ReplicaConfig::default(),
                );
                publish_event(
                    node,
                    &mut replica,
                    "phantom",
                    "written by nobody in the roster",
                )?;
                sent += 1;
            }
            "stolen" => {
                // Rows signed with another node's key (a removed node's, stolen: 32 raw bytes
                // in DATA/stolen.key), continuing its event log as this node holds it.
                let identity = node.store.identity()?;
                let path = node.data.join("stolen.key");
                let bytes = std::fs::read(&path)
                    .with_context(|| format!("cannot read the stolen key {}", path.display()))?;
                let Ok(bytes) = <[u8; 32]>::try_from(bytes.as_slice()) else {
                    bail!("{} must hold 32 raw key bytes", path.display());
                };
                let stolen = ed25519_dalek::SigningKey::from_bytes(&bytes);
                let victim = WriterId::from_key(&stolen.verifying_key());
                let mut replica = meshward_crdt::Replica::new(
                    identity.cluster,
                    stolen,
                    meshward_crdt::ReplicaConfig::default(),
                );
                let (held, _) = node
                    .core
                    .replica()
                    .missing_for(&Digest::default(), usize::MAX)?;
                for item in held.into_iter().filter(|i| {
                    let k = i.head().head.key;
                    k.writer == victim && k.table == TableId::Events
                }) {
                    replica.apply(item)?;
                }
                publish_event(
                    node,
                    &mut replica,
                    "stolen",
                    "written with a removed node's key",
                )?;
                sent += 1;
            }
            "advert" => {
                // An advert "from" each peer, signed by us: it must not pass for theirs.
                let identity = node.store.identity()?;
                for &peer in &peers {
                    let advert = meshward_node::core::Advert {
                        origin: peer,
                        fingerprint: [0; 32],
                        changes: u64::MAX,
                        mastered: 0,
                        mastered_hash: [0; 32],
                        at_ms: u64::MAX,
                        signature: ed25519_dalek::Signature::from_bytes(&[0; 64]),
                    }
                    .sign(&identity.key, identity.cluster);
                    node.handle.publish(Gossip::Advert(advert).encode())?;
                    sent += 1;
                }
            }
            _ => {
                // Another writer's event segment, re-signed as if we had written it: the
                // signature is valid, the authorship is not.
                let identity = node.store.identity()?;
                let me = identity.writer();
                let (items, _) = node
                    .core
                    .replica()
                    .missing_for(&Digest::default(), usize::MAX)?;
                let Some(SyncItem::Snapshot { head, doc }) = items.into_iter().find(|i| {
                    let k = i.head().head.key;
                    k.writer != me && k.table == TableId::Events
                }) else {
                    bail!("no events of another writer to misuse yet");
                };
                let forged = Head {
                    key: SegmentKey {
                        writer: me,
                        segment: 999,
                        ..head.head.key
                    },
                    ..head.head
                }
                .sign(&identity.key);
                let message = SyncMessage {
                    items: vec![SyncItem::Snapshot { head: forged, doc }],
                }
                .encode();
                node.handle.publish(
                    Gossip::Push {
                        origin: me,
                        sent_us: 0,
                        message,
                    }
                    .encode(),
                )?;
                sent += 1;
            }
        }
        Ok(sent)
    }

    #[cfg(feature = "fault-injection")]
    fn set_delay(
        &mut self,
        peers: BTreeSet<WriterId>,
        min: Duration,
        max: Duration,
    ) -> anyhow::Result<()> {
        self.node.handle.set_delay(peers, min, max)?;
        Ok(())
    }

    #[cfg(feature = "fault-injection")]
    fn set_blocked(&mut self, peers: BTreeSet<WriterId>) -> anyhow::Result<()> {
        let heal = peers.is_empty();
        self.node.handle.set_blocked(peers)?;
        if heal {
            self.node.core.redial_now(now_ms() as u64);
            self.node.bootstrap.now(now_ms() as u64);
            self.node.feed(Input::Tick)?;
        }
        Ok(())
    }
}

/// Commits one event as `replica`'s writer and publishes it as that writer's push (the
/// `phantom` and `stolen` misbehaviours).
#[cfg(feature = "fault-injection")]
fn publish_event(
    node: &mut Node,
    replica: &mut meshward_crdt::Replica,
    user: &str,
    detail: &str,
) -> anyhow::Result<()> {
    use meshward_crdt::SyncMessage;
    use meshward_node::core::Gossip;
    let event = meshward_crdt::Event {
        at_ms: now_ms(),
        kind: meshward_crdt::EventKind::Login,
        user: user.into(),
        target: "nowhere".into(),
        detail: detail.into(),
    };
    let items = replica
        .commit(now_ms(), vec![meshward_crdt::Op::Append(event)])?
        .push;
    node.handle.publish(
        Gossip::Push {
            origin: replica.writer(),
            sent_us: 0,
            message: SyncMessage { items }.encode(),
        }
        .encode(),
    )?;
    Ok(())
}
