//! The network model: connections, dials, idle timeouts, cuts, latency, loss, reordering and
//! the bandwidth cap.

use meshward_node::core::Input;
use meshward_node::store::PeerEntry;
use rand::Rng as _;

use super::{Conn, Ev, Micros, Sim, Via, addr, pair};

impl Sim {
    pub(super) fn cut(&self, a: u32, b: u32) -> bool {
        if self.partition[a as usize] != self.partition[b as usize] {
            return true;
        }
        self.flaps.values().any(|side| {
            let (x, y) = (side[a as usize], side[b as usize]);
            x != 0 && y != 0 && x != y
        })
    }

    pub(super) fn conn_fresh(&self, key: (u32, u32)) -> bool {
        self.conns.get(&key).is_some_and(|c| {
            c.inc[0] == self.nodes[key.0 as usize].incarnation
                && c.inc[1] == self.nodes[key.1 as usize].incarnation
        })
    }

    /// A message of `len` bytes reaches `to` over connection generation `cgen`: counted as
    /// received if that connection still stands, as dropped (and `false`) if it closed since.
    pub(super) fn arrive(&mut self, from: u32, to: u32, cgen: u64, len: usize) -> bool {
        if !self.conn_current(from, to, cgen) {
            self.metrics.dropped_closed += 1;
            return false;
        }
        self.metrics.bytes_received[to as usize] += len as u64;
        true
    }

    fn conn_current(&self, from: u32, to: u32, cgen: u64) -> bool {
        let key = pair(from, to);
        self.conns.get(&key).is_some_and(|c| {
            c.cgen == cgen
                && c.inc[0] == self.nodes[key.0 as usize].incarnation
                && c.inc[1] == self.nodes[key.1 as usize].incarnation
        })
    }

    pub(super) fn latency(&mut self, a: u32, b: u32) -> Micros {
        let sites = self.sc.network.sites.len().max(1);
        let (lo, hi) = self.latencies[self.site[a as usize] * sites + self.site[b as usize]];
        if lo == hi {
            lo
        } else {
            self.rng.gen_range(lo..=hi)
        }
    }

    pub(super) fn dial(&mut self, from: u32, to: u32) {
        if self.cut(from, to) || self.nodes[to as usize].core.is_none() {
            self.metrics.dials_failed += 1;
            return;
        }
        let rtt = 2 * self.latency(from, to);
        let inc = self.nodes[from as usize].incarnation;
        self.push(self.now + rtt, Ev::Connect { from, to, inc });
    }

    pub(super) fn connect(&mut self, from: u32, to: u32, inc: u32) -> anyhow::Result<()> {
        if !self.alive(from, inc) || self.nodes[to as usize].core.is_none() || self.cut(from, to) {
            self.metrics.dials_failed += 1;
            return Ok(());
        }
        let key = pair(from, to);
        if self.conn_fresh(key) {
            return Ok(());
        }
        if let Some(old) = self.conns.remove(&key) {
            self.fail_channels(old.cgen);
        }
        self.next_gen += 1;
        self.conns.insert(
            key,
            Conn {
                cgen: self.next_gen,
                inc: [
                    self.nodes[key.0 as usize].incarnation,
                    self.nodes[key.1 as usize].incarnation,
                ],
                cut_since: None,
                stuck: Vec::new(),
            },
        );
        self.metrics.connections += 1;
        for (a, b) in [(from, to), (to, from)] {
            self.nodes[a as usize].links.insert(b);
            // As libp2p-gossipsub on a new subscribed peer: into the mesh while below
            // `mesh-n-low` (the heartbeat fills it up to `mesh-n`); the peer refuses the
            // graft at `mesh-n-high`.
            if self.nodes[a as usize].mesh.len() < self.sc.gossip.mesh_n_low {
                self.graft(a, b);
            }
            let peer = self.ids[b as usize];
            let addr = addr(b);
            let entry = PeerEntry {
                addresses: vec![addr.to_string()],
                last_seen_ms: self.clock_ms(a) as i64,
            };
            if let Err(e) = self.nodes[a as usize]
                .store
                .remember_peer(&peer.to_hex(), &entry)
            {
                // A disk fault: the daemon recovers or stops the same way.
                self.store_failed(a, e.into(), None)?;
            }
            self.feed(a, Input::Connected { peer, addr }, Via::Sync)?;
        }
        Ok(())
    }

    pub(super) fn idle_check(&mut self, key: (u32, u32), cgen: u64) -> anyhow::Result<()> {
        let idle = self.sc.network.idle_timeout.as_micros() as u64;
        let Some(c) = self.conns.get(&key) else {
            return Ok(());
        };
        if c.cgen != cgen {
            return Ok(());
        }
        let cut_long = c.cut_since.is_some_and(|t| t + idle <= self.now);
        if !cut_long && self.conn_fresh(key) {
            return Ok(());
        }
        let inc = c.inc;
        self.conns.remove(&key);
        self.fail_channels(cgen);
        self.metrics.disconnects += 1;
        for (i, (a, b)) in [(key.0, key.1), (key.1, key.0)].into_iter().enumerate() {
            if self.nodes[a as usize].incarnation != inc[i] {
                continue;
            }
            let n = &mut self.nodes[a as usize];
            n.links.remove(&b);
            n.mesh.remove(&b);
            let peer = self.ids[b as usize];
            self.feed(a, Input::Disconnected { peer }, Via::Sync)?;
        }
        Ok(())
    }

    /// Fails the sync requests in flight on a closed connection.
    pub(super) fn fail_channels(&mut self, cgen: u64) {
        let failed: Vec<u64> = self
            .channels
            .iter()
            .filter(|(_, c)| c.cgen == cgen)
            .map(|(k, _)| *k)
            .collect();
        for k in failed {
            if let Some(c) = self.channels.remove(&k) {
                let peer = self.ids[c.server as usize];
                let client = c.client;
                let request = c.request;
                // Fed at once: the transport reports the failure when the connection closes.
                if let Err(e) = self.feed(client, Input::SyncFailed { peer, request }, Via::Sync) {
                    self.metrics.errors.push(format!("{e:#}"));
                }
            }
        }
    }

    /// Sends `ev` (carrying `len` bytes) from `from` to `to` on their connection.
    pub(super) fn send(&mut self, from: u32, to: u32, len: usize, lossy: bool, ev: Ev) {
        self.metrics.bytes_sent[from as usize] += len as u64;
        let key = pair(from, to);
        let cut = self.cut(from, to);
        if let Some(c) = self.conns.get_mut(&key)
            && cut
        {
            c.stuck.push(ev);
            self.metrics.held_by_cut += 1;
            return;
        }
        let net = &self.sc.network;
        let (loss, reorder, reorder_delay, bandwidth) =
            (net.loss, net.reorder, net.reorder_delay, net.bandwidth);
        let mut delay = self.latency(from, to);
        if loss > 0.0 && self.rng.r#gen::<f64>() < loss {
            if lossy {
                self.metrics.lost += 1;
                return;
            }
            // A lost packet on a reliable stream costs one retransmission timeout.
            self.metrics.retransmitted += 1;
            delay += 3 * delay + 25_000;
        }
        if reorder > 0.0 && self.rng.r#gen::<f64>() < reorder {
            self.metrics.reordered += 1;
            delay += self.rng.gen_range(0..=reorder_delay.as_micros() as u64);
        }
        let mut at = self.now;
        if let Some(bw) = bandwidth {
            let start = self.tx_free[from as usize].max(self.now);
            let done = start + (len as u64 * 1_000_000).div_ceil(bw);
            self.tx_free[from as usize] = done;
            at = done;
        }
        self.push(at + delay, ev);
    }

    /// Recomputes which connections are cut: newly cut ones start idling, healed ones deliver
    /// what waited.
    pub(super) fn links_changed(&mut self) {
        let idle = self.sc.network.idle_timeout.as_micros() as u64;
        let keys: Vec<(u32, u32)> = self.conns.keys().copied().collect();
        for key in keys {
            let cut = self.cut(key.0, key.1);
            let Some(c) = self.conns.get_mut(&key) else {
                continue;
            };
            match (cut, c.cut_since) {
                (true, None) => {
                    c.cut_since = Some(self.now);
                    let cgen = c.cgen;
                    self.push(self.now + idle, Ev::IdleCheck { key, cgen });
                }
                (false, Some(_)) => {
                    c.cut_since = None;
                    let stuck = std::mem::take(&mut c.stuck);
                    for ev in stuck {
                        let delay = self.latency(key.0, key.1);
                        self.push(self.now + delay, ev);
                    }
                }
                _ => {}
            }
        }
    }
}
