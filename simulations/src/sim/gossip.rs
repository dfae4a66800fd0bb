//! The gossip model: gossipsub-like seen-cache, publish, validation-gated forwarding,
//! IDONTWANT (gossipsub v1.2) and mesh maintenance.
//!
//! A node forwards an accepted message to its mesh peers except those that sent it a copy
//! (before or while it validated) and those that told it IDONTWANT, as libp2p-gossipsub's
//! `forward_msg` does. It sends IDONTWANT to its other mesh peers on the first copy, before
//! validating, and to the peers it publishes to (`idontwant_on_publish`). The IDONTWANT
//! travels the link like any message, so it spares a copy only when it reaches the peer
//! before that peer forwards: when validating takes longer than the link (`validation` in
//! the scenario's `[gossip]`).

use std::sync::Arc;

use meshward_node::core::Input;
use rand::Rng as _;
use sha2::{Digest as _, Sha256};

use super::{Envelope, Ev, IDONTWANT_BYTES, IDONTWANT_TTL, Micros, Sim, Via, pair};

impl Sim {
    pub(super) fn remember(&mut self, node: u32, id: [u8; 32]) -> bool {
        let ttl = self.sc.gossip.seen_ttl.as_micros() as u64;
        let now = self.now;
        let n = &mut self.nodes[node as usize];
        while let Some(&(old, at)) = n.seen_order.front() {
            if at + ttl > now {
                break;
            }
            n.seen_order.pop_front();
            if n.seen.get(&old) == Some(&at) {
                n.seen.remove(&old);
            }
        }
        if n.seen.contains_key(&id) {
            return false;
        }
        n.seen.insert(id, now);
        n.seen_order.push_back((id, now));
        true
    }

    pub(super) fn publish(&mut self, node: u32, data: Vec<u8>) {
        let id: [u8; 32] = Sha256::digest(&data).into();
        let n = &self.nodes[node as usize];
        let targets: Vec<u32> = if self.sc.gossip.flood_publish {
            n.links.iter().copied().collect()
        } else if n.mesh.is_empty() {
            // Fanout: no mesh yet, send to up to D connected peers.
            n.links
                .iter()
                .copied()
                .take(self.sc.gossip.mesh_n)
                .collect()
        } else {
            n.mesh.iter().copied().collect()
        };
        // As gossipsub: a duplicate is refused first; a message with no peer to go to is
        // refused without entering the seen-cache.
        if n.seen.contains_key(&id) {
            self.metrics.publish_duplicates += 1;
            return;
        }
        if targets.is_empty() {
            self.metrics.publish_no_peers += 1;
            return;
        }
        self.remember(node, id);
        let targets: Vec<u32> = targets
            .into_iter()
            .filter(|&p| !self.spared(node, p, &id))
            .collect();
        let idontwant = self.wants_idontwant(data.len());
        let push = matches!(
            meshward_node::core::Gossip::decode(&data),
            Some(meshward_node::core::Gossip::Push { .. })
        );
        if push {
            self.metrics.pushes += 1;
        } else {
            self.metrics.adverts += 1;
        }
        let env = Arc::new(Envelope {
            id,
            data,
            push,
            hops: 1,
        });
        for to in targets {
            // Before the message, so a peer that forwards it faster does not send it back.
            if idontwant {
                self.send_dont_want(node, to, id);
            }
            self.send_gossip(node, to, &env);
        }
    }

    /// Whether a message of `len` bytes gets IDONTWANTs.
    fn wants_idontwant(&self, len: usize) -> bool {
        self.sc.gossip.idontwant && len > self.sc.gossip.idontwant_threshold
    }

    fn send_dont_want(&mut self, from: u32, to: u32, id: [u8; 32]) {
        let Some(c) = self.conns.get(&pair(from, to)) else {
            return;
        };
        let cgen = c.cgen;
        self.metrics.idontwant_sent += 1;
        self.send(
            from,
            to,
            IDONTWANT_BYTES,
            true,
            Ev::DontWant { to, from, cgen, id },
        );
    }

    /// Node `node` heard IDONTWANT `id` from `peer`.
    pub(super) fn dont_want(&mut self, node: u32, peer: u32, id: [u8; 32]) {
        let now = self.now;
        let n = &mut self.nodes[node as usize];
        // Kept only while the node may still send the message: not yet received, or waiting
        // on validation. Once it has forwarded (or published) a message it never sends it
        // again, so an IDONTWANT for it changes nothing (and keeping every one would cost
        // a run of thousands of nodes tens of MB).
        if n.core.is_none() || (n.seen.contains_key(&id) && !n.validating.contains_key(&id)) {
            return;
        }
        while let Some(&(p, old, at)) = n.dont_want_order.front() {
            if at + IDONTWANT_TTL > now {
                break;
            }
            n.dont_want_order.pop_front();
            if n.dont_want.get(&(p, old)) == Some(&at) {
                n.dont_want.remove(&(p, old));
            }
        }
        n.dont_want.insert((peer, id), now);
        n.dont_want_order.push_back((peer, id, now));
    }

    /// Whether `peer` told `node` it does not want `id` (a copy spared, counted).
    fn spared(&mut self, node: u32, peer: u32, id: &[u8; 32]) -> bool {
        let now: Micros = self.now;
        let spared = self.nodes[node as usize]
            .dont_want
            .get(&(peer, *id))
            .is_some_and(|&at| at + IDONTWANT_TTL > now);
        if spared {
            self.metrics.idontwant_spared += 1;
        }
        spared
    }

    pub(super) fn forward(&mut self, node: u32, source: u32, env: &Arc<Envelope>) {
        let next = Arc::new(Envelope {
            id: env.id,
            data: env.data.clone(),
            push: env.push,
            hops: env.hops + 1,
        });
        let sent_us = self.nodes[node as usize]
            .validating
            .remove(&env.id)
            .unwrap_or_default();
        let targets: Vec<u32> = self.nodes[node as usize]
            .mesh
            .iter()
            .copied()
            .filter(|&p| p != source && !sent_us.contains(&p))
            .collect();
        for to in targets {
            if !self.spared(node, to, &env.id) {
                self.send_gossip(node, to, &next);
            }
        }
    }

    pub(super) fn send_gossip(&mut self, from: u32, to: u32, env: &Arc<Envelope>) {
        let key = pair(from, to);
        let Some(c) = self.conns.get(&key) else {
            return;
        };
        let cgen = c.cgen;
        let copies = if self.sc.network.duplicate > 0.0
            && self.rng.r#gen::<f64>() < self.sc.network.duplicate
        {
            self.metrics.network_duplicated += 1;
            2
        } else {
            1
        };
        let ttl = self.sc.gossip.seen_ttl.as_micros() as u64;
        let receiver = &self.nodes[to as usize];
        let known = receiver.core.is_some()
            && receiver
                .seen
                .get(&env.id)
                .is_some_and(|&t| t + ttl > self.now + 1_000_000);
        if known && !self.cut(from, to) {
            // The receiver already holds this id and will drop every copy as a duplicate:
            // count the copies now instead of scheduling them (the nodes see no difference;
            // this halves the events of a large run).
            for _ in 0..copies {
                self.shortcut_duplicate(from, to, env);
            }
            return;
        }
        for _ in 0..copies {
            self.send(
                from,
                to,
                env.data.len(),
                true,
                Ev::Gossip {
                    to,
                    from,
                    cgen,
                    env: env.clone(),
                },
            );
        }
    }

    pub(super) fn shortcut_duplicate(&mut self, from: u32, to: u32, env: &Envelope) {
        let len = env.data.len() as u64;
        self.metrics.bytes_sent[from as usize] += len;
        if let Some(bw) = self.sc.network.bandwidth {
            let start = self.tx_free[from as usize].max(self.now);
            self.tx_free[from as usize] = start + (len * 1_000_000).div_ceil(bw);
        }
        let loss = self.sc.network.loss;
        if loss > 0.0 && self.rng.r#gen::<f64>() < loss {
            self.metrics.lost += 1;
            return;
        }
        self.metrics.bytes_received[to as usize] += len;
        if env.push {
            self.metrics.push_duplicates += 1;
        } else {
            self.metrics.advert_duplicates += 1;
        }
    }

    pub(super) fn receive_gossip(
        &mut self,
        to: u32,
        from: u32,
        env: Arc<Envelope>,
    ) -> anyhow::Result<()> {
        if self.nodes[to as usize].core.is_none() {
            return Ok(());
        }
        if !self.remember(to, env.id) {
            if env.push {
                self.metrics.push_duplicates += 1;
            } else {
                self.metrics.advert_duplicates += 1;
            }
            if let Some(sent_us) = self.nodes[to as usize].validating.get_mut(&env.id) {
                sent_us.push(from);
            }
            return Ok(());
        }
        // IDONTWANT to the other mesh peers at once, before validating.
        if self.wants_idontwant(env.data.len()) {
            let peers: Vec<u32> = self.nodes[to as usize]
                .mesh
                .iter()
                .copied()
                .filter(|&p| p != from)
                .collect();
            for p in peers {
                self.send_dont_want(to, p, env.id);
            }
        }
        if !self.sc.gossip.validation.is_zero() {
            self.nodes[to as usize]
                .validating
                .insert(env.id, Vec::new());
        }
        let n = &mut self.nodes[to as usize];
        n.next_local += 1;
        let id = n.next_local;
        let data = env.data.clone();
        let hops = env.hops;
        n.pending_gossip.insert(id, (env, from));
        let source = self.ids[from as usize];
        self.feed(to, Input::Gossip { source, id, data }, Via::Gossip(hops))
    }

    /// Mesh maintenance (the gossipsub heartbeat, as libp2p-gossipsub's): graft up to
    /// `mesh-n` when below `mesh-n-low`, prune down to `mesh-n` at `mesh-n-high` or more.
    pub(super) fn heartbeat(&mut self, node: u32) {
        let g = self.sc.gossip.clone();
        let n = &mut self.nodes[node as usize];
        if self.now < n.next_heartbeat {
            return;
        }
        n.next_heartbeat = self.now + g.heartbeat.as_micros() as u64;
        if n.mesh.len() < g.mesh_n_low {
            // `mesh-n` less its size of random other peers; those that refuse are retried at
            // the next heartbeat.
            let mut candidates: Vec<u32> = n.links.difference(&n.mesh).copied().collect();
            for _ in n.mesh.len()..g.mesh_n {
                if candidates.is_empty() {
                    break;
                }
                let c = candidates.swap_remove(self.rng.gen_range(0..candidates.len()));
                self.graft(node, c);
            }
        } else if n.mesh.len() >= g.mesh_n_high {
            let mut mesh: Vec<u32> = n.mesh.iter().copied().collect();
            while mesh.len() > g.mesh_n {
                let c = mesh.swap_remove(self.rng.gen_range(0..mesh.len()));
                self.nodes[node as usize].mesh.remove(&c);
                self.nodes[c as usize].mesh.remove(&node);
            }
        }
    }

    /// Node `a` grafts `b`: both add the other, unless `b`'s mesh is full (`mesh-n-high`),
    /// which refuses it (libp2p-gossipsub answers such a GRAFT with a PRUNE).
    pub(super) fn graft(&mut self, a: u32, b: u32) {
        if self.nodes[b as usize].mesh.len() >= self.sc.gossip.mesh_n_high {
            return;
        }
        self.nodes[a as usize].mesh.insert(b);
        self.nodes[b as usize].mesh.insert(a);
    }

    /// Mean mesh size over the live nodes.
    pub(super) fn mean_mesh(&self) -> f64 {
        let live: Vec<usize> = self
            .nodes
            .iter()
            .filter(|n| n.core.is_some())
            .map(|n| n.mesh.len())
            .collect();
        live.iter().sum::<usize>() as f64 / live.len().max(1) as f64
    }
}
