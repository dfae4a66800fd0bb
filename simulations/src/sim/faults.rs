//! Scheduled faults: partitions, heals, flaps, crashes, restarts, skew and failovers.

use anyhow::Context as _;
use meshward_crdt::WriterId;
use meshward_crdt::mastered::{Chain, RecordKind};
use meshward_node::backup::{read_snapshot, write_snapshot};
use meshward_node::certs::Serial;
use meshward_node::cluster_config::ConfigChange;
use meshward_node::core::{Core, Input};

use super::disk::Disk;
use super::storage::{self, Acked};
use super::{Ev, Sim, Via};
use crate::report::{Failover, LeaderOp};
use crate::scenario::FaultKind;

impl Sim {
    pub(super) fn fired(&mut self, name: &str) {
        *self
            .metrics
            .faults_fired
            .entry(name.to_string())
            .or_default() += 1;
    }

    pub(super) fn fault(&mut self, f: usize) -> anyhow::Result<()> {
        let n = self.sc.nodes;
        let kind = self.sc.faults[f].kind.clone();
        match kind {
            FaultKind::Partition { groups } => {
                let mut label = vec![groups.len() as u32 + 1; n];
                for (g, nodes) in groups.iter().enumerate() {
                    for i in nodes.resolve(n)? {
                        label[i] = g as u32 + 1;
                    }
                }
                self.partition = label;
                self.fired("partition");
                self.metrics.converged_at = None;
                self.links_changed();
            }
            FaultKind::Heal {} => {
                self.partition = vec![0; n];
                self.flaps.clear();
                self.fired("heal");
                self.metrics.heals.push(self.now);
                self.await_convergence();
                self.metrics.converged_at = None;
                self.links_changed();
            }
            FaultKind::Flap { count, .. } => {
                self.pending_faults += 2 * count;
                self.push(
                    self.now,
                    Ev::Flap {
                        fault: f,
                        cut: true,
                        left: count,
                    },
                );
            }
            FaultKind::Crash { nodes } => {
                for i in nodes.resolve(n)? {
                    self.crash(i as u32);
                }
            }
            FaultKind::Restart { nodes } => {
                for i in nodes.resolve(n)? {
                    self.restart(i as u32)?;
                }
            }
            FaultKind::RollingRestart {
                nodes, down, every, ..
            } => {
                self.fired("rolling-restart");
                let nodes = nodes.resolve(n)?;
                for (k, i) in nodes.into_iter().enumerate() {
                    let at = self.now + every.as_micros() as u64 * k as u64;
                    self.pending_faults += 2;
                    self.push(at, Ev::CrashOne(i as u32));
                    self.push(at + down.as_micros() as u64, Ev::RestartOne(i as u32));
                }
            }
            FaultKind::Failover { node, retry } => {
                let from_epoch = self.epoch(node as u32);
                let leader_down_at = self.nodes[node].core.as_ref().and_then(|core| {
                    let leader = self.index.get(&WriterId(core.chain()?.leader()))?;
                    let l = &self.nodes[*leader as usize];
                    l.core.is_none().then_some(l.crashed_at).flatten()
                });
                self.metrics.failovers.push(Failover {
                    node: node as u32,
                    asked_at: self.now,
                    retry: retry.as_micros() as u64,
                    from_epoch,
                    leader_down_at,
                    ..Failover::default()
                });
                let record = self.metrics.failovers.len() - 1;
                self.pending_faults += 1;
                self.push(self.now, Ev::Failover(record));
            }
            FaultKind::Snapshot { nodes } => {
                for i in nodes.resolve(n)? {
                    // A stopped node's disk that fails: the backup tool would open its own
                    // handle and fail; tried on the node's kept handle, the failed read would
                    // poison it (redb: "Previous I/O error occurred") for the node's next
                    // start, which opens its store afresh. No backup this time.
                    if self.nodes[i].core.is_none() && self.nodes[i].disk.failing() {
                        continue;
                    }
                    let mut copy = Vec::new();
                    let taken = write_snapshot(self.nodes[i].store.db()?, &mut copy, &mut |_| {});
                    match taken {
                        Ok(_) => {
                            self.nodes[i].snapshot = Some(copy);
                            self.fired("snapshot");
                        }
                        // A disk that fails reads, or a stopped node's: no backup this time.
                        Err(_) if self.nodes[i].core.is_none() || self.nodes[i].disk.failing() => {}
                        Err(e) => return Err(e).context("taking a snapshot of a store"),
                    }
                }
            }
            FaultKind::Restore { nodes } => {
                for i in nodes.resolve(n)? {
                    self.restore(i as u32)?;
                }
            }
            FaultKind::Master { node, revoke } => {
                let (kind, payload) = if revoke {
                    // A certificate serial of its own per write.
                    let serial = format!("sim-{node}-{}", self.now);
                    Serial::from_der_integer(serial.as_bytes()).revocation()
                } else {
                    let change = ConfigChange::Set {
                        key: "managed.sim".into(),
                        value: format!("node-{node}-at-{}us", self.now),
                    };
                    (RecordKind::Config, change.encode())
                };
                let op = self.metrics.leader_ops.len();
                self.leader_op(node as u32, "master", |token| Input::Master {
                    token,
                    kind,
                    payload,
                })?;
                if revoke {
                    self.metrics.leader_ops[op].kind = "revoke".into();
                }
            }
            FaultKind::Rotate { node, ref account } => self.rotate(node as u32, account)?,
            FaultKind::Demote { node, to } => {
                let next = self.ids[to];
                self.leader_op(node as u32, "demote", |token| Input::Handover {
                    token,
                    next,
                })?;
            }
            FaultKind::Remove { node, target } => {
                let target = self.ids[target];
                self.leader_op(node as u32, "remove", |token| Input::Leave {
                    token,
                    node: Some(target),
                })?;
            }
            FaultKind::PowerLoss { nodes, down } => {
                for i in nodes.resolve(n)? {
                    self.arm_power_loss(i as u32, down.as_micros() as u64);
                }
            }
            FaultKind::DiskFull { ref nodes, lasts }
            | FaultKind::DiskError { ref nodes, lasts } => {
                let full = matches!(kind, FaultKind::DiskFull { .. });
                let nodes: Vec<u32> = nodes.resolve(n)?.into_iter().map(|i| i as u32).collect();
                for &i in &nodes {
                    let disk = &self.nodes[i as usize].disk;
                    if full {
                        disk.set_full(true);
                    } else {
                        disk.set_failing(true);
                    }
                }
                self.fired(kind.name());
                self.pending_faults += 1;
                self.push(
                    self.now + lasts.as_micros() as u64,
                    Ev::DiskHeal { nodes, full },
                );
            }
            FaultKind::Skew { nodes, offset_ms } => {
                for i in nodes.resolve(n)? {
                    self.nodes[i].skew_ms = offset_ms;
                    self.fired("skew");
                }
            }
        }
        Ok(())
    }

    /// Crashes a node and starts it again from its snapshot (the old copy of its data).
    fn restore(&mut self, node: u32) -> anyhow::Result<()> {
        // No copy (its snapshot did not fire: its disk failed, or it had stopped): nothing to
        // restore from; the fault does not fire, which the fault oracle reports.
        let Some(copy) = self.nodes[node as usize].snapshot.clone() else {
            return Ok(());
        };
        self.crash(node);
        self.forget_rotations_of(node);
        let durable = self.nodes[node as usize].disk.tracks_durable();
        let disk = Disk::new(durable);
        let store = storage::open(&disk, node).context("creating a store")?;
        read_snapshot(store.db()?, &mut copy.as_slice()).context("restoring a snapshot")?;
        let n = &mut self.nodes[node as usize];
        // What the restored store holds is what it acknowledges from now on.
        n.acked = Acked {
            mastered: store.mastered_records()?.len(),
            vote: store.vote()?,
        };
        n.store = store;
        n.disk = disk;
        n.stopped = None;
        self.fired("restore");
        self.restart(node)
    }

    /// Feeds a `master` or `demote` input; the answer goes to `metrics.leader_ops`.
    fn leader_op(
        &mut self,
        node: u32,
        kind: &str,
        input: impl FnOnce(u64) -> Input,
    ) -> anyhow::Result<()> {
        self.metrics.leader_ops.push(LeaderOp {
            kind: kind.to_string(),
            node,
            at: self.now,
            result: None,
        });
        let op = self.metrics.leader_ops.len() - 1;
        let n = &mut self.nodes[node as usize];
        if n.core.is_none() {
            self.metrics.leader_ops[op].result = Some(Err("the node is down".into()));
            return Ok(());
        }
        n.next_token += 1;
        let token = n.next_token;
        n.leader_ops.insert(token, op);
        self.fired(kind);
        self.feed(node, input(token), Via::Local)
    }

    /// The answer to a `master` or `demote` input.
    pub(super) fn leader_op_done(&mut self, op: usize, result: Result<u64, String>) {
        self.metrics.leader_ops[op].result = Some(result);
    }

    /// The epoch of the node's chain (0 while it is down).
    pub(super) fn epoch(&self, node: u32) -> u64 {
        self.nodes[node as usize]
            .core
            .as_ref()
            .and_then(Core::chain)
            .map_or(0, Chain::epoch)
    }

    /// One attempt of a failover: `ha failover` on its node, unless the node is down or
    /// already follows a leader of a later epoch elected elsewhere.
    pub(super) fn failover(&mut self, record: usize) -> anyhow::Result<()> {
        let node = self.metrics.failovers[record].node;
        let epoch = self.epoch(node);
        let stop = if self.nodes[node as usize].core.is_none() {
            Some("the candidate is down".to_string())
        } else if epoch > self.metrics.failovers[record].from_epoch {
            Some(format!(
                "the candidate follows epoch {epoch}, elected elsewhere"
            ))
        } else {
            None
        };
        if let Some(why) = stop {
            self.metrics.failovers[record].gave_up = Some(why);
            self.pending_faults -= 1;
            return Ok(());
        }
        let n = &mut self.nodes[node as usize];
        n.next_token += 1;
        let token = n.next_token;
        n.failover = Some((token, record));
        self.metrics.failovers[record].attempts += 1;
        self.feed(
            node,
            Input::Failover {
                token,
                force: false,
            },
            Via::Local,
        )
    }

    /// The answer to a failover attempt: elected, or refused and retried after `retry`.
    pub(super) fn failover_done(&mut self, node: u32, token: u64, result: Result<u64, String>) {
        let n = &mut self.nodes[node as usize];
        let Some((_, record)) = n.failover.take_if(|(t, _)| *t == token) else {
            return;
        };
        match result {
            Ok(_) => {
                let epoch = self.epoch(node);
                let fo = &mut self.metrics.failovers[record];
                fo.elected_at = Some(self.now);
                fo.epoch = Some(epoch);
                self.pending_faults -= 1;
                self.fired("failover");
                self.check_followed();
            }
            Err(why) => {
                let fo = &mut self.metrics.failovers[record];
                fo.refuse(self.now, why);
                let at = self.now + fo.retry;
                self.push(at, Ev::Failover(record));
            }
        }
    }

    /// Records when every live node first follows the leader a failover elected.
    pub(super) fn check_followed(&mut self) {
        if self
            .metrics
            .failovers
            .iter()
            .all(|fo| fo.epoch.is_none() || fo.all_follow_at.is_some())
        {
            return;
        }
        let live: Vec<u64> = (0..self.nodes.len() as u32)
            .filter(|&i| self.nodes[i as usize].core.is_some())
            .map(|i| self.epoch(i))
            .collect();
        let now = self.now;
        for fo in &mut self.metrics.failovers {
            if let (Some(epoch), None) = (fo.epoch, fo.all_follow_at)
                && live.iter().all(|&e| e >= epoch)
            {
                fo.all_follow_at = Some(now);
            }
        }
    }

    pub(super) fn flap(&mut self, f: usize, cut: bool, left: u64) -> anyhow::Result<()> {
        let n = self.sc.nodes;
        self.pending_faults -= 1;
        let FaultKind::Flap { a, b, down, up, .. } = self.sc.faults[f].kind.clone() else {
            return Ok(());
        };
        if cut {
            let mut side = vec![0u8; n];
            for i in a.resolve(n)? {
                side[i] = 1;
            }
            for i in b.resolve(n)? {
                side[i] = 2;
            }
            self.flaps.insert(f, side);
            self.fired("flap-cut");
            self.metrics.converged_at = None;
            self.push(
                self.now + down.as_micros() as u64,
                Ev::Flap {
                    fault: f,
                    cut: false,
                    left,
                },
            );
        } else {
            self.flaps.remove(&f);
            self.fired("flap-heal");
            self.metrics.heals.push(self.now);
            self.await_convergence();
            if left > 1 {
                self.push(
                    self.now + up.as_micros() as u64,
                    Ev::Flap {
                        fault: f,
                        cut: true,
                        left: left - 1,
                    },
                );
            }
        }
        self.links_changed();
        if left <= 1 && !cut {
            self.fired("flap");
        }
        Ok(())
    }
}
