//! Disk faults under a node's store, handled as the daemon handles them, and the storage
//! oracles.
//!
//! - **Power loss** (`power-loss`): the disk dies in the middle of the node's writes
//!   ([`Disk::arm_power_loss`]); the node stops, and its disk keeps what was synced plus any
//!   subset of the unsynced writes, the last one torn. It is started again later from that.
//!   **Oracle:** every write its store acknowledged (changes whose persist returned, mastered
//!   records, its vote) is still there, and the store opens.
//! - **Full disk** (`disk-full`): a refused write is survived as `meshward run` survives it
//!   (README "A full disk", `node/src/daemon.rs`): nothing computed from the refused batch
//!   leaves the node, the store is reopened and the core rebuilt from it, told which peers are
//!   connected, answers the batch's sync requests again, and is held
//!   ([`meshward_node::core::Core::set_held`]) for 5 s, doubling up to 60 s, or until a write
//!   is durable again.
//! - **I/O errors** (`disk-error`): any other store failure stops the node, saying why (as the
//!   daemon stops); it is started again, its store reopened, once the disk works.
//!
//! **No node serves corrupt data:** after every restart from a faulty disk and at the end, the
//! event rows a live node's store serves must be exactly its replica's, which
//! [`meshward_node::store::Store::load_replica`] rebuilt and verified from the stored changes.

use std::path::PathBuf;

use anyhow::Context as _;
use meshward_crdt::{ReplicaConfig, TableId, WriterId};
use meshward_node::core::Input;
use meshward_node::store::{EventFilter, Store, StoreError};

use super::disk::Disk;
use super::{Ev, Micros, Sim, Via, addr};

/// First hold on replication after a write refused for a full disk (the daemon's
/// `FULL_RETRY_MIN`).
const FULL_RETRY_MIN: Micros = 5_000_000;
/// Longest hold (the daemon's `FULL_RETRY_MAX`).
const FULL_RETRY_MAX: Micros = 60_000_000;
/// A power loss armed on a node that writes nothing meanwhile happens after this long.
pub(super) const POWER_LOSS_WAIT: Micros = 1_000_000;

/// What a node's store acknowledged as durable, besides the change heads (`held`).
#[derive(Clone, Copy, Debug)]
pub(super) struct Acked {
    /// Mastered records stored.
    pub(super) mastered: usize,
    /// The vote stored.
    pub(super) vote: Option<(u64, WriterId)>,
}

/// The hold on replication after a write refused for a full disk.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct FullDisk {
    /// When the held core tries replicated writes again.
    retry_at: Option<Micros>,
    /// The next hold (0: the first).
    backoff: Micros,
    /// The last write was refused.
    refused: bool,
}

/// Opens node `node`'s store on `disk` (created on first use). redb 4.5 panics on some
/// damaged files (an allocator-state key it does not know: `unreachable!`), as a disk that
/// acknowledges syncs it did not keep can leave them; that panic is turned into the error it
/// should have been, so the node stops and says why (the daemon would abort instead).
pub(super) fn open(disk: &Disk, node: u32) -> Result<Store, StoreError> {
    let backend = disk.backend();
    let dir = dir(node);
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Store::with_backend(backend, &dir)
    }))
    .unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(StoreError::Corrupt {
            path: dir.join("meshward.redb"),
            reason: format!("redb panicked opening it: {why}"),
        })
    })
}

fn dir(node: u32) -> PathBuf {
    PathBuf::from(format!("/sim/node-{node}"))
}

impl Sim {
    /// A store operation of `node` failed with `e`: a power loss, a full disk or a failing
    /// disk is handled as the daemon would. Any other failure (a store whose data does not
    /// match its signed heads, say) also stops the node, saying why, as it stops the daemon;
    /// with no disk fault to explain it, it fails the run.
    pub(super) fn store_failed(
        &mut self,
        node: u32,
        e: anyhow::Error,
        again: Option<Input>,
    ) -> anyhow::Result<()> {
        let n = &self.nodes[node as usize];
        if n.disk.powered_off() {
            return self.power_lost(node);
        }
        if n.store.write_refused() {
            return self.full_disk(node, again);
        }
        let failing = n.disk.failing();
        if !failing {
            self.metrics.errors.push(format!(
                "node {node} at {} µs stopped: its store failed with no disk fault: {e:#}",
                self.now
            ));
        }
        self.stop(node, format!("{e:#}"));
        Ok(())
    }

    /// A write of `node` was durable: a hold for a full disk ends at its next tick.
    pub(super) fn wrote(&mut self, node: u32) -> anyhow::Result<()> {
        let now = self.now;
        let f = &mut self.nodes[node as usize].full;
        if f.refused {
            *f = FullDisk {
                retry_at: Some(now),
                ..FullDisk::default()
            };
        }
        Ok(())
    }

    /// Releases the hold on `node`'s replication once its time has come.
    pub(super) fn release_hold(&mut self, node: u32) -> anyhow::Result<()> {
        let f = &mut self.nodes[node as usize].full;
        if f.retry_at.is_none_or(|at| at > self.now) {
            return Ok(());
        }
        f.retry_at = None;
        self.metrics.disk.holds_released += 1;
        self.feed_call(node, Via::Sync, None, |core, now| core.set_held(now, false))
    }

    /// A write refused for a full disk: recover as the daemon's `Node::recover` does.
    fn full_disk(&mut self, node: u32, again: Option<Input>) -> anyhow::Result<()> {
        self.metrics.disk.full_refusals += 1;
        let now = self.now;
        let f = &mut self.nodes[node as usize].full;
        let hold = if f.backoff == 0 {
            FULL_RETRY_MIN
        } else {
            f.backoff
        };
        f.backoff = (hold * 2).min(FULL_RETRY_MAX);
        f.retry_at = Some(now + hold);
        f.refused = true;
        self.answer_in_flight(node, "disk full: the write was refused; try again");
        let counters = self.nodes[node as usize]
            .core
            .as_ref()
            .map(|c| c.counters().clone());
        if !self.reopen(node) {
            self.stop_core(node);
            return Ok(());
        }
        if let Err(e) = self.start_node(node) {
            self.stop_core(node);
            self.stop(
                node,
                format!("rebuilding the node after a full disk: {e:#}"),
            );
            return Ok(());
        }
        let clock = self.clock_ms(node);
        if let Some(core) = self.nodes[node as usize].core.as_mut() {
            if let Some(counters) = counters {
                core.carry_counters(counters);
            }
            core.set_held(clock, true);
        }
        let links: Vec<u32> = self.nodes[node as usize].links.iter().copied().collect();
        for b in links {
            let peer = self.ids[b as usize];
            self.feed(
                node,
                Input::Connected {
                    peer,
                    addr: addr(b),
                },
                Via::Sync,
            )?;
        }
        if let Some(input) = again {
            self.feed(node, input, Via::Sync)?;
        }
        Ok(())
    }

    /// The failover and leader operations in flight on `node` get `why`.
    fn answer_in_flight(&mut self, node: u32, why: &str) {
        if let Some((token, _)) = self.nodes[node as usize].failover {
            self.failover_done(node, token, Err(why.to_string()));
        }
        let ops = std::mem::take(&mut self.nodes[node as usize].leader_ops);
        for op in ops.into_values() {
            self.leader_op_done(op, Err(why.to_string()));
        }
    }

    /// Arms a power loss on `node`: during its next writes, or after [`POWER_LOSS_WAIT`].
    pub(super) fn arm_power_loss(&mut self, node: u32, down: Micros) {
        use rand::Rng as _;
        let ops = self.rng.gen_range(1..=24);
        let n = &mut self.nodes[node as usize];
        if n.core.is_none() {
            return;
        }
        n.power_down = Some(down);
        n.disk.arm_power_loss(ops);
        self.pending_faults += 1;
        self.push(self.now + POWER_LOSS_WAIT, Ev::PowerOff(node));
    }

    /// The fallback of an armed power loss: if the node's writes did not set it off, the
    /// power goes now (nothing unsynced to lose).
    pub(super) fn power_off(&mut self, node: u32) -> anyhow::Result<()> {
        self.pending_faults -= 1;
        let n = &self.nodes[node as usize];
        if n.core.is_none() || !n.disk.armed() {
            return Ok(());
        }
        n.disk.cut_power();
        self.power_lost(node)
    }

    /// The power went on `node`: it stops; its store is what the disk kept.
    fn power_lost(&mut self, node: u32) -> anyhow::Result<()> {
        self.fired("power-loss");
        self.metrics.disk.power_losses += 1;
        self.answer_in_flight(node, "the node lost power");
        self.stop_core(node);
        let (disk, damaged) = self.nodes[node as usize]
            .disk
            .after_power_loss(&mut self.rng);
        self.metrics.disk.writes_torn_or_lost += damaged;
        let n = &mut self.nodes[node as usize];
        // The dead process's database: its last writes fail on the dead disk.
        drop(std::mem::replace(
            &mut n.store,
            Store::in_memory().context("a placeholder store")?,
        ));
        n.disk = disk;
        let down = n.power_down.take().unwrap_or(POWER_LOSS_WAIT);
        match open(&n.disk, node) {
            Ok(store) => {
                n.store = store;
                self.check_store(node, "after a power loss");
            }
            Err(e) => {
                let failure = format!(
                    "node {node} at {} µs: its store does not open after a power loss: {e}",
                    self.now
                );
                self.metrics.errors.push(failure);
                self.stop(
                    node,
                    format!("its store does not open after a power loss: {e}"),
                );
            }
        }
        self.pending_faults += 1;
        self.push(self.now + down, Ev::RestartOne(node));
        Ok(())
    }

    /// `node` cannot trust its store: it stops and says why (the daemon exits).
    pub(super) fn stop(&mut self, node: u32, why: String) {
        self.stop_core(node);
        let at = self.now / 1000;
        self.metrics.disk.store_stops.push((at, node, why.clone()));
        self.nodes[node as usize].stopped = Some(why);
    }

    /// Opens `node`'s store again on its disk, closing the old one first (its last writes
    /// go to the disk as it is now). False, and the node stopped, if it does not open.
    pub(super) fn reopen(&mut self, node: u32) -> bool {
        let Ok(placeholder) = Store::in_memory() else {
            return false;
        };
        let n = &mut self.nodes[node as usize];
        drop(std::mem::replace(&mut n.store, placeholder));
        match open(&n.disk, node) {
            Ok(store) => {
                n.store = store;
                n.stopped = None;
                true
            }
            Err(e) => {
                self.stop(node, format!("reopening its store: {e}"));
                false
            }
        }
    }

    /// A disk fault ends on `nodes`; the nodes it stopped start again.
    pub(super) fn disk_heal(&mut self, nodes: &[u32], full: bool) -> anyhow::Result<()> {
        self.pending_faults -= 1;
        for &node in nodes {
            let n = &self.nodes[node as usize];
            if full {
                n.disk.set_full(false);
            } else {
                n.disk.set_failing(false);
            }
            if n.core.is_none() && n.stopped.is_some() {
                self.start_again(node)?;
                if self.nodes[node as usize].core.is_some() {
                    self.check_store(node, "after its disk failed");
                }
            }
        }
        Ok(())
    }

    /// The storage oracles on `node`'s store: nothing acknowledged lost, and the rows it
    /// serves are its replica's.
    pub(super) fn check_store(&mut self, node: u32, when: &str) {
        self.metrics.disk.stores_checked += 1;
        let n = &self.nodes[node as usize];
        let mut lost = Vec::new();
        match n.store.load_replica(&n.identity, ReplicaConfig::default()) {
            Err(e) => lost.push(format!("its replica does not load: {e}")),
            Ok(replica) => {
                let digest = replica.digest();
                for (key, &seq) in &n.held {
                    let have = digest.get(key).map_or(0, |s| s.seq);
                    if have < seq {
                        lost.push(format!(
                            "segment {} of {} holds {have} changes, {seq} were acknowledged",
                            key.segment, key.writer
                        ));
                    }
                }
            }
        }
        match n.store.mastered_records() {
            Ok(records) if records.len() < n.acked.mastered => lost.push(format!(
                "{} mastered records stored, {} were acknowledged",
                records.len(),
                n.acked.mastered
            )),
            Ok(_) => {}
            Err(e) => lost.push(format!("its mastered records do not read: {e}")),
        }
        if n.acked.vote.is_some() && n.store.vote().ok().flatten() != n.acked.vote {
            lost.push("its vote is not the one it acknowledged".into());
        }
        if !lost.is_empty() {
            self.metrics.oracles.acknowledged_lost += 1;
            self.metrics.errors.push(format!(
                "node {node} lost acknowledged writes {when}: {}",
                lost.join("; ")
            ));
        }
        if let Some(corrupt) = self.corrupt(node) {
            self.metrics.oracles.corrupt_stores += 1;
            self.metrics
                .errors
                .push(format!("node {node} {when}: {corrupt}"));
        }
    }

    /// Why the event rows `node`'s store serves are not its replica's, if they are not.
    pub(super) fn corrupt(&self, node: u32) -> Option<String> {
        let n = &self.nodes[node as usize];
        let served = match n.store.events(&EventFilter::default()) {
            Ok(rows) => rows,
            Err(e) => return Some(format!("its store does not serve its events: {e}")),
        };
        let replica = match n.store.load_replica(&n.identity, ReplicaConfig::default()) {
            Ok(r) => r,
            Err(e) => return Some(format!("its replica does not load: {e}")),
        };
        let rows = match replica.rows(TableId::Events) {
            Ok(rows) => rows,
            Err(e) => return Some(format!("its replica's rows do not read: {e}")),
        };
        let mut a: Vec<(WriterId, u32, i64, String)> = served
            .into_iter()
            .map(|r| (r.writer, r.segment, r.event.at_ms, r.event.target))
            .collect();
        let mut b: Vec<(WriterId, u32, i64, String)> = rows
            .into_iter()
            .filter_map(|(key, row)| match row {
                meshward_crdt::Row::Event(e) => Some((key.writer, key.segment, e.at_ms, e.target)),
                _ => None,
            })
            .collect();
        a.sort();
        b.sort();
        (a != b).then(|| {
            format!(
                "its store serves {} event rows that differ from its replica's {}",
                a.len(),
                b.len()
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use meshward_crdt::{Effects, Event, EventKind, Row, RowChange, SegmentKey};

    use super::*;
    use crate::Scenario;

    const WRITES_AND_A_POWER_LOSS: &str = r#"
        name = "power"
        nodes = 3
        duration = "6s"
        settle = "20s"
        [[write]]
        at = "500ms"
        every = "50ms"
        count = 100
        [[fault]]
        at = "3s"
        kind = "power-loss"
        nodes = [1]
        down = "1s"
    "#;

    fn run(sim: &mut Sim) -> Vec<String> {
        sim.run().expect("the simulator runs");
        sim.metrics.oracles.failures.clone()
    }

    #[test]
    fn a_power_loss_loses_nothing_acknowledged_on_a_disk_that_syncs() {
        let sc = Scenario::parse(WRITES_AND_A_POWER_LOSS).unwrap();
        let mut sim = Sim::new(sc, 5, true).unwrap();
        assert_eq!(run(&mut sim), Vec::<String>::new());
        assert_eq!(sim.metrics.disk.power_losses, 1);
        assert!(sim.metrics.disk.stores_checked >= 1);
    }

    #[test]
    fn a_disk_whose_syncs_keep_nothing_is_caught_losing_acknowledged_writes() {
        let sc = Scenario::parse(WRITES_AND_A_POWER_LOSS).unwrap();
        let mut sim = Sim::new(sc, 5, true).unwrap();
        sim.nodes[1].disk.lie_about_syncs();
        let failures = run(&mut sim);
        assert!(
            failures.iter().any(|f| f.contains("node 1")
                && (f.contains("lost acknowledged writes") || f.contains("does not open"))),
            "{failures:#?}"
        );
    }

    #[test]
    fn rows_a_store_serves_without_its_replica_are_corrupt_data() {
        let sc = Scenario::parse(WRITES_AND_A_POWER_LOSS).unwrap();
        let mut sim = Sim::new(sc, 5, true).unwrap();
        sim.run().unwrap();
        assert_eq!(sim.corrupt(2), None);
        let key = SegmentKey {
            table: TableId::Events,
            writer: sim.ids[2],
            segment: 0,
        };
        let forged = RowChange::Appended {
            key,
            index: 9_999,
            row: Row::Event(Event {
                at_ms: 1,
                kind: EventKind::Login,
                user: "mallory".into(),
                target: "forged".into(),
                detail: String::new(),
            }),
        };
        sim.nodes[2]
            .store
            .persist(&Effects {
                rows: vec![forged],
                ..Effects::default()
            })
            .unwrap();
        let corrupt = sim.corrupt(2).expect("caught");
        assert!(corrupt.contains("differ from its replica"), "{corrupt}");
    }
}
